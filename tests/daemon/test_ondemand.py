"""On-demand tunnels between two of our daemons on the userspace plane (issue 16).

west 192.0.2.1 (198.51.100.0/24, ``auto=route``) <-veth-> east 192.0.2.2 (203.0.113.0/24):
the first ping brings the tunnel up; with ``negotiationshunt=hold`` (the default)
no ping is lost while it negotiates.  ``ipsec down`` leaves the trap, the next
ping brings it up again; ``ipsec unroute``, ``ipsec delete`` and SIGTERM leave
nothing behind.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess

import pytest
from plutoproc import NetNS, Pluto, run_main, wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401 - the fixture

pytestmark = pytest.mark.netns

USERSPACE = CONF + "\tencapsulation=yes\n"
TABLE = "4500"  # the userspace plane's routing table (kernel/userspace/routes.py)


def _addrs(w_ns: NetNS, e_ns: NetNS) -> None:
    for ns, addr in ((w_ns, "198.51.100.1/32"), (e_ns, "203.0.113.1/32")):
        ns.run("ip", "addr", "add", addr, "dev", "lo")


def ping(ns: NetNS, count: int = 5) -> tuple[int, int, str]:
    """(transmitted, received, output) of ``count`` pings west -> east's subnet."""
    r = ns.run("ping", "-c", str(count), "-i", "0.3", "-W", "5", "-I", "198.51.100.1",
               "203.0.113.1", check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1)), int(m.group(2)), r.stdout


def routes_in_plane(ns: NetNS) -> str:
    """What the userspace plane installed: its table's routes and its rules."""
    table = ns.run("ip", "route", "show", "table", TABLE, check=False).stdout
    rules = "\n".join(line for line in ns.run("ip", "rule", "show").stdout.splitlines()
                      if f"lookup {TABLE}" in line)
    return table + rules


def ipsec(p: Pluto, cmd: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_main("pypluto.cli.ipsec", [cmd, "--rundir", str(p.rundir), *args])


def connection(p: Pluto) -> dict:
    data = json.loads(p.whack("--status", "--json").stdout)
    return next(c for c in data["connections"] if c["name"] == "west-east")


def test_route_first_ping_brings_it_up_without_loss(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    east = start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    west = start("west", w_ns, "route", "--use-userspace", conf_text=USERSPACE)
    assert not child_sas(west)
    assert "routed-ondemand" in west.whack("--status").stdout
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    sent, got, out = ping(w_ns)
    assert (sent, got) == (5, 5), out + west.log() + east.log()
    assert len(child_sas(west)) == 1 and len(child_sas(east)) == 1
    assert "initiating on demand: acquire for 198.51.100.1" in west.log()
    # down: the SAs go, the trap stays; the next ping brings it up again, again lossless
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert "routed-ondemand" in west.whack("--status").stdout
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    sent, got, out = ping(w_ns, 3)
    assert (sent, got) == (3, 3), out + west.log()
    wait_for(lambda: len(child_sas(west)) == 1, 10, "the second on-demand Child SA")
    # unroute: the trap goes, the SA stays up; down then leaves nothing
    r = ipsec(west, "unroute", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert routes_in_plane(w_ns) == ""
    assert "unrouted" in west.whack("--status").stdout
    sent, got, _out = ping(w_ns, 1)
    assert got == 0 and not child_sas(west)  # nothing captures it any more
    # ipsec route puts the trap back
    r = ipsec(west, "route", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    sent, got, out = ping(w_ns, 3)
    assert got == 3, out + west.log()
    # delete: SAs, trap, routes and rules all go
    r = ipsec(west, "delete", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routes_in_plane(w_ns) == ""
    assert not child_sas(west)


def test_sigterm_of_a_routed_conn_leaves_nothing(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    west = start("west", w_ns, "ondemand", "--use-userspace", conf_text=USERSPACE)
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    assert ping(w_ns, 2)[1] == 2
    assert west.proc is not None
    west.proc.send_signal(signal.SIGTERM)
    assert west.proc.wait(30) == 0
    assert routes_in_plane(w_ns) == ""
    assert "ipsec" not in w_ns.run("ip", "-o", "link").stdout


def test_ipsec_ondemand_adds_and_routes_and_bad_routes_refused(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    conf = USERSPACE.replace("auto={auto}", "auto=ignore") + (
        "\nconn anyone\n\tauthby=secret\n\tleft=192.0.2.1\n\tright=%any\n\tauto=add\n")
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    r = ipsec(west, "ondemand", "--config", str(west.dir.parent / "west.conf"), "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "routed-ondemand" in west.whack("--status").stdout
    assert ping(w_ns, 3)[1] == 3
    r = west.whack("--name", "anyone", "--route")
    assert r.returncode == 25 and "without a peer address" in r.stdout + r.stderr
