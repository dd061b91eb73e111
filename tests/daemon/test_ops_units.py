"""Units of the operations work (issue 19): lock-file staleness, default-route resolution,
lifetime notes.  The behaviour through real daemons is in test_daemon_ops.py."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

import pytest

from pypluto.config.model import Connection
from pypluto.daemon import defaultroute, lockfile
from pypluto.daemon.registry import lifetime_notes


def test_lock_of_a_dead_pid_is_stale(tmp_path):
    p = subprocess.Popen(["true"])
    p.wait()
    f = tmp_path / "pluto.pid"
    f.write_text(f"{p.pid}\n")
    st = lockfile.examine(str(f))
    assert st.stale and st.pid == p.pid and st.reason == f"PID {p.pid} is not a running pluto"


def _sleeper(*extra: str) -> subprocess.Popen[str]:
    """A live Python process that says "ready" once running (its argv + ``extra``)."""
    code = "import sys, time; print('ready', flush=True); time.sleep(30)"
    p = subprocess.Popen([sys.executable, "-c", code, *extra], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    return p


def test_lock_of_a_live_process_that_is_not_pluto_is_stale(tmp_path):
    p = _sleeper()
    try:
        f = tmp_path / "pluto.pid"
        f.write_text(f"{p.pid}\n")
        st = lockfile.examine(str(f))
        assert st.stale and st.reason == f"PID {p.pid} is not a running pluto"
    finally:
        p.kill()
        p.wait()


def test_lock_of_a_live_pluto_is_kept(tmp_path):
    assert lockfile.is_pluto([sys.executable, "-m", "pypluto.cli.pluto", "--nofork"])
    assert lockfile.is_pluto(["/usr/libexec/ipsec/pluto", "--config", "x"])
    assert not lockfile.is_pluto(["/usr/bin/sleep", "30"])
    p = _sleeper("pypluto.cli.pluto")  # its command line names our pluto module
    try:
        f = tmp_path / "pluto.pid"
        f.write_text(f"{p.pid}\n")
        st = lockfile.examine(str(f))
        assert not st.stale and st.reason == f"pluto PID {p.pid} is running"
    finally:
        p.kill()
        p.wait()
    f.write_text(f"{os.getpid()}\n")
    st = lockfile.examine(str(f))
    assert not st.stale and st.reason == "it is our own"


def test_empty_lock_is_kept_while_fresh(tmp_path):
    f = tmp_path / "pluto.pid"
    f.write_text("")
    assert not lockfile.examine(str(f)).stale
    old = time.time() - lockfile.EMPTY_GRACE - 5
    os.utime(f, (old, old))
    assert lockfile.examine(str(f)).stale
    f.write_text("garbage\n")
    assert lockfile.examine(str(f)).stale


def test_remove_stale_removes_lock_and_socket(tmp_path):
    lock, ctl = tmp_path / "pluto.pid", tmp_path / "pluto.ctl"
    lock.write_text("0\n")
    ctl.write_text("")
    assert lockfile.remove_stale(str(lock), str(ctl)).stale
    assert not lock.exists() and not ctl.exists()


@pytest.fixture
def routes(monkeypatch):
    table: dict[tuple[str, ...], list[dict[str, object]]] = {}

    def fake(*args: str) -> list[dict[str, object]]:
        return table.get(args, [])

    monkeypatch.setattr(defaultroute, "_ip_json", fake)
    return table


def _conn(left: str, right: str, leftnexthop: str | None = None) -> Connection:
    c = Connection(name="c")
    for end, host in ((c.left, left), (c.right, right)):
        end.host = host
        if not host.startswith("%"):
            end.host_addr = ipaddress.ip_address(host)
    c.left.nexthop = leftnexthop or ("%defaultroute" if left.startswith("%defaultroute")
                                     else None)
    return c


def test_defaultroute_with_prefsrc_and_via_route_get(routes):
    routes[("-4", "route", "show", "default")] = [
        {"dst": "default", "gateway": "192.0.2.254", "dev": "eth0"}]
    routes[("-4", "route", "get", "192.0.2.254")] = [
        {"dst": "192.0.2.254", "dev": "eth0", "prefsrc": "192.0.2.1"}]
    routes[("-6", "route", "show", "default")] = [
        {"dst": "default", "gateway": "fe80::1", "dev": "eth0", "prefsrc": "2001:db8::1"}]
    c = _conn("%defaultroute", "198.51.100.7")
    assert defaultroute.needs_routes(c)
    notes = defaultroute.resolve(c)
    assert c.left.host_addr == ipaddress.ip_address("192.0.2.1")
    assert c.left.nexthop == "192.0.2.254"
    assert notes == ["%defaultroute is 192.0.2.1 (nexthop 192.0.2.254, dev eth0)"]
    assert c.orient({ipaddress.ip_address("192.0.2.1")}) and c.local_is_left
    c6 = _conn("%defaultroute6", "198.51.100.7")
    defaultroute.resolve(c6)
    assert c6.left.host_addr == ipaddress.ip_address("2001:db8::1")
    assert c6.left.nexthop == "fe80::1"


def test_any_with_nexthop_and_without_routes(routes):
    routes[("-4", "route", "get", "192.0.2.254")] = [
        {"dst": "192.0.2.254", "dev": "eth0", "prefsrc": "192.0.2.1"}]
    c = _conn("%any", "198.51.100.7", leftnexthop="192.0.2.254")
    assert defaultroute.needs_routes(c)
    defaultroute.resolve(c)
    assert c.left.host_addr == ipaddress.ip_address("192.0.2.1")
    # a %any remote (no nexthop) is never resolved; no default route: nothing happens
    c2 = _conn("%defaultroute", "%any")
    assert defaultroute.resolve(c2) == [] and c2.left.host_addr is None
    assert not defaultroute.needs_routes(_conn("192.0.2.1", "%any"))


def test_nexthop_defaultroute_on_an_end_with_an_address(routes):
    """leftnexthop=%defaultroute with left=ADDR: the default route's gateway (ipsec.conf(5));
    no default route: it stays %defaultroute (PLUTO_NEXT_HOP is then the peer)."""
    c = _conn("192.0.2.1", "198.51.100.7", leftnexthop="%defaultroute")
    assert defaultroute.resolve_nexthop(c.left) is None and c.left.nexthop_addr is None
    routes[("-4", "route", "show", "default")] = [
        {"dst": "default", "gateway": "192.0.2.254", "dev": "eth0", "prefsrc": "192.0.2.1"}]
    assert defaultroute.resolve_nexthop(c.left) == "nexthop=%defaultroute is 192.0.2.254"
    assert c.left.nexthop_addr == ipaddress.ip_address("192.0.2.254")
    assert defaultroute.resolve_nexthop(c.right) is None  # no nexthop= there


def test_lifetime_notes():
    c = Connection(name="c")
    assert lifetime_notes(c) == []  # 8h lifetimes, 9m margin, 100% fuzz
    c.salifetime = 300.0
    assert lifetime_notes(c) == [
        "ipsec-lifetime=300s must be greater than rekeymargin=540s + rekeyfuzz=100%; "
        "reducing rekeymargin to 150 seconds (rekeying at half the lifetime)"]
    c.rekey = False  # no rekeying: nothing is shortened
    assert lifetime_notes(c) == []
