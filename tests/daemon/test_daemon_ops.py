"""Operations as a Libreswan operator meets them (issue 19): restart after kill -9,
log reopening for logrotate, ``ipsec add`` of a loaded conn, ``%defaultroute``."""

from __future__ import annotations

import json
import os
import signal

import pytest
from plutoproc import NetNS, wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401 - the fixture

from pypluto.control.client import call

pytestmark = pytest.mark.netns


def _rules(ns: NetNS) -> list[dict]:
    return json.loads(ns.run("ip", "-j", "rule", "show").stdout or "[]")


def _table(ns: NetNS, table: int = 4500) -> list[dict]:
    r = ns.run("ip", "-j", "route", "show", "table", str(table), check=False)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []


def test_restart_after_sigkill_removes_leftovers(pair):  # noqa: F811
    """kill -9 leaves the lock, the socket, the rule and the routes; the next start
    removes them (here with a different backend, so pluto itself must) and works."""
    start, w_ns, e_ns = pair
    conf = CONF + "\tencapsulation=yes\n"
    east = start("east", e_ns, "add", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert any(x.get("priority") == 4500 and str(x.get("table")) == "4500"
               for x in _rules(w_ns))
    routes = _table(w_ns)
    assert any(x.get("type") == "throw" for x in routes), routes
    assert w_ns.run("ip", "link", "show", "pluto0", check=False).returncode == 0
    assert west.proc is not None
    old_pid = west.proc.pid
    west.proc.send_signal(signal.SIGKILL)
    west.proc.wait(30)
    # what a SIGKILL leaves behind
    assert west.pidfile.read_text().strip() == str(old_pid)
    assert os.path.exists(west.ctl)
    assert any(x.get("priority") == 4500 for x in _rules(w_ns))
    assert _table(w_ns)
    # the TUN device is not persistent: gone with the process
    wait_for(lambda: w_ns.run("ip", "link", "show", "pluto0", check=False).returncode != 0,
             10, "the TUN device to go")
    # the next start (another backend: the userspace plane's own start-up clean-up
    # cannot be what removes them)
    west.start("--nofork", "--logfile", str(west.dir / "log2"), "--config",
               str(west.dir.parent / "west.conf"), "--secretsfile",
               str(west.dir.parent / "ipsec.secrets"), "--use-none")
    west.wait_ready()
    assert int(west.pidfile.read_text()) == west.proc.pid != old_pid
    log2 = (west.dir / "log2").read_text()
    assert f"removed stale lock file \"{west.pidfile}\" (PID {old_pid} is not a running " \
        "pluto)" in log2
    assert "removed leftover of a pluto that did not exit cleanly: IPv4 rule " \
        "'4500: lookup 4500'" in log2
    assert not any(x.get("priority") == 4500 for x in _rules(w_ns))
    assert not _table(w_ns)
    # and it works: a new IKE SA and Child SA with east
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1
    assert east.ready()


def test_reopenlogs_and_sighup_reopen_the_logfile(make_pluto):
    """logrotate: move the file away, then whack --reopenlogs (or SIGHUP) makes a new one."""
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    os.rename(log, p.dir / "log.1")
    out: list[str] = []
    reply = call(p.ctl, "reopenlogs", {}, timeout=10, on_output=out.append)
    assert reply.rc == 0
    assert out == [f'reopened logfile "{log}"']
    wait_for(log.exists, 10, "the new log file")
    assert f'reopened logfile "{log}"' in log.read_text()
    assert "Pluto initialized" in (p.dir / "log.1").read_text()
    assert "reopened" not in (p.dir / "log.1").read_text()
    p.whack("--status")  # later lines go to the new file
    os.rename(log, p.dir / "log.2")
    proc.send_signal(signal.SIGHUP)
    wait_for(log.exists, 10, "the log file reopened on SIGHUP")
    wait_for(lambda: "Pluto ignores SIGHUP" in log.read_text(), 10, "the SIGHUP line")
    assert f'reopened logfile "{log}"' in log.read_text()
    assert "Pluto ignores SIGHUP" not in (p.dir / "log.2").read_text()
    assert p.ready()


def test_reopenlogs_without_a_logfile_says_so(make_pluto):
    p = make_pluto()
    p.start("--nofork", "--use-none", "--stderrlog")
    p.wait_ready()
    out: list[str] = []
    reply = call(p.ctl, "reopenlogs", {}, timeout=10, on_output=out.append)
    assert reply.rc == 0 and out == ["logging to stderr: nothing to reopen"]
