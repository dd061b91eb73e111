"""``mtu=`` and ``metric=`` between two daemons on the userspace plane.

As Libreswan's updown does (``ip route ... mtu N metric M``), the route that
takes a conn's remote subnet into the TUN device carries the conn's MTU and
metric.  The effect is the host's: a ping of 1,300 bytes with DF set crosses the
tunnel, one byte more is refused on west itself ("message too long").  Without
``mtu=`` the route's MTU is the path's less the ESP SA's overhead, as XFRM
sizes it: the largest inner packet that leaves in one ESP packet.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import re

import pytest
from plutoproc import wait_for
from test_userspace_capture import BASE, child_sas, pair  # noqa: F401

pytestmark = pytest.mark.netns

SUBNETS = "\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"


def _ping(ns, size: int):  # noqa: ANN001, ANN202 - NetNS.run's result
    """One ping of ``size`` bytes of IP packet, DF set, west's subnet to east's."""
    return ns.run("ping", "-c", "1", "-W", "2", "-M", "do", "-s", str(size - 28),
                  "-I", "198.51.100.1", "203.0.113.1", check=False)


def _route(ns) -> str:  # noqa: ANN001
    """West's route for east's subnet in the plane's table."""
    out = ns.run("ip", "route", "show", "table", "4500").stdout
    return next((ln for ln in out.splitlines() if ln.startswith("203.0.113.0/24")), out)


# (extra conn lines, MTU of west's veth, the route's MTU).  Without mtu= the route
# gets what the path leaves after the SA's overhead (XFRM's sizing): outer IPv4
# header 20, [UDP 8,] SPI and sequence number 8, IV, ICV, and the payload with its
# 2 trailer bytes rounded up to the cipher's block.
CASES = {
    "mtu=": ("\tmtu=1300\n\tmetric=7\n", 1500, 1300),
    "gcm": ("\tesp=aes_gcm256\n", 1500, 1446),  # 1500-20-8-8-16 = 1448, less 2
    "gcm-udp": ("\tesp=aes_gcm256\n\tencapsulation=yes\n", 1500, 1438),
    "cbc-sha512": ("\tesp=aes256-sha2_512\n", 1500, 1422),  # (1500-20-8-16-32)//16*16 - 2
    "gcm-path-1400": ("\tesp=aes_gcm256\n", 1400, 1346),  # the path's MTU is read
}


@pytest.mark.parametrize("case", list(CASES))
def test_mtu_and_metric_ride_on_the_tunnel_route(pair, case: str) -> None:  # noqa: F811
    start, _spawn, w_ns, e_ns, vw = pair
    extra, path, limit = CASES[case]
    if path != 1500:
        w_ns.run("ip", "link", "set", vw, "mtu", str(path))
    conf = BASE + SUBNETS + extra
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1

    route = _route(w_ns)
    assert re.search(rf"\bmtu {limit}\b", route), route
    assert bool(re.search(r"\bmetric 7\b", route)) == (case == "mtu="), route
    ok = _ping(w_ns, limit)
    assert ok.returncode == 0, ok.stdout + ok.stderr + west.log() + east.log()
    big = _ping(w_ns, limit + 1)
    assert big.returncode != 0, big.stdout + big.stderr
    # iputils: "ping: local error: message too long, mtu=1300" (refused on west itself)
    assert re.search(rf"message too long, mtu={limit}\b", big.stdout + big.stderr, re.I), \
        big.stdout + big.stderr

    # the route goes with the conn
    r = west.whack("--name", "west-east", "--delete")
    assert r.returncode == 0, r.stdout
    assert "203.0.113.0/24" not in w_ns.run("ip", "route", "show", "table", "4500",
                                            check=False).stdout


def test_a_trap_route_gets_its_mtu_from_the_sa(pair) -> None:  # noqa: F811
    """auto=route: the route exists before any SA (the TUN device's 1,400 is its limit);
    the SA that the first packet brings up gives it the MTU of the path less the SA's
    overhead, and a packet of that size then crosses."""
    start, _spawn, w_ns, e_ns, _vw = pair
    conf = BASE + SUBNETS + "\tesp=aes_gcm256\n"
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf.replace("auto=add", "auto=route"))
    assert "mtu" not in _route(w_ns), _route(w_ns)
    _ping(w_ns, 100)  # the trap brings the Child SA up (this packet may be lost)
    wait_for(lambda: len(child_sas(west)) == 1, 10, "west's Child SA")
    assert re.search(r"\bmtu 1446\b", _route(w_ns)), _route(w_ns)
    ok = _ping(w_ns, 1446)
    assert ok.returncode == 0, ok.stdout + ok.stderr + west.log() + east.log()
