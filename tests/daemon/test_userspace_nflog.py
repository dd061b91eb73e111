"""``nflog=`` (conn) and ``nflog-all=`` (config setup) between two daemons on the userspace plane.

West has ``nflog=5`` on its conn and ``nflog-all=7``: pings through the tunnel
show up in the clear on ``tcpdump -i nflog:5`` (the conn's group, prefix the conn's
name) and ``nflog:7`` (all IPsec traffic, prefix ``all-ipsec``) in west's
namespace, both ways.  The rules match the plane's TUN device (``-o``/``-i``;
Libreswan's XFRM rules match ``-m policy --pol ipsec``, which the userspace plane
never meets: ``tests/daemon/test_nflog_units.py``).  ``whack --down`` removes the
conn's rules, and the daemon's exit the global ones: west's iptables are as
before.  East has no ``nflog=``: nothing is added there.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from plutoproc import wait_for
from test_userspace_capture import BASE, SUBNETS, child_sas, pair  # noqa: F401
from testsupport import require

pytestmark = pytest.mark.netns


def _rules(ns: object) -> list[str]:
    out = ns.run("iptables", "-S").stdout  # type: ignore[attr-defined]
    return [ln for ln in out.splitlines() if "NFLOG" in ln]


def _dump(spawn: Any, ns: Any, group: int) -> subprocess.Popen[bytes]:
    """tcpdump on ``nflog:GROUP`` in ``ns`` until it has seen 6 packets (the fixture's
    ``spawn``: killed at the end of the test whatever happens)."""
    p = spawn(ns, "tcpdump", "-l", "-n", "-c", "6", "-i", f"nflog:{group}")
    lines = [p.stderr.readline().decode() for _ in range(2)]  # "verbose output ...", then
    assert "listening on" in lines[-1], lines
    return p


def _seen(p: subprocess.Popen[bytes]) -> str:
    """What tcpdump printed once it has its 6 packets (or after 10 s)."""
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
    return out.decode(errors="replace")


def test_nflog_copies_the_cleartext_to_the_group(pair, tmp_path: Path) -> None:  # noqa: F811
    require(shutil.which("tcpdump") is not None, "tcpdump")
    start, spawn, w_ns, e_ns, _vw = pair
    before = _rules(w_ns)
    east = start("east", e_ns, BASE + SUBNETS)
    west = start("west", w_ns, "config setup\n\tnflog-all=7\n" + BASE + SUBNETS + "\tnflog=5\n")
    assert "nflog-all=7: IPsec traffic is copied to NFLOG group 7" in west.log()
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1
    wait_for(lambda: len(_rules(w_ns)) == len(before) + 4, 10, "4 NFLOG rules on west")
    rules = _rules(w_ns)
    assert sum("--nflog-group 5" in r and '--nflog-prefix west-east' in r for r in rules) == 2
    assert sum("--nflog-group 7" in r and "all-ipsec" in r for r in rules) == 2
    conn_out = next(r for r in rules if "--nflog-group 5" in r and "-A OUTPUT" in r)
    assert "-s 198.51.100.0/24 -d 203.0.113.0/24" in conn_out, conn_out
    assert " -o " in conn_out and "policy" not in conn_out, conn_out  # the TUN device
    assert _rules(e_ns) == []
    dumps = {g: _dump(spawn, w_ns, g) for g in (5, 7)}
    ping = w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", "198.51.100.1",
                    "203.0.113.1", check=False)
    assert ping.returncode == 0, ping.stdout + west.log() + east.log()
    for g, p in dumps.items():
        text = _seen(p)
        assert text.count("ICMP echo") == 6, (g, text)
        assert "198.51.100.1 > 203.0.113.1: ICMP echo request" in text, (g, text)
        assert "203.0.113.1 > 198.51.100.1: ICMP echo reply" in text, (g, text)
    west.whack("--name", "west-east", "--down")
    wait_for(lambda: len(_rules(w_ns)) == len(before) + 2, 10, "the conn's rules gone")
    assert all("--nflog-group 7" in r for r in _rules(w_ns) if r not in before)
    west.stop()
    wait_for(lambda: _rules(w_ns) == before, 10, "the global rules gone at exit")
