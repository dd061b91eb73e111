"""``mtu=`` and ``metric=`` between two daemons on the userspace plane.

As Libreswan's updown does (``ip route ... mtu N metric M``), the route that
takes a conn's remote subnet into the TUN device carries the conn's MTU and
metric.  The effect is the host's: a ping of 1,300 bytes with DF set crosses the
tunnel, one byte more is refused on west itself ("message too long"), where the
same ping crosses a tunnel without ``mtu=`` (the device's MTU is 1,400).

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import re

import pytest
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


@pytest.mark.parametrize("mtu", [1300, None])
def test_mtu_and_metric_ride_on_the_tunnel_route(pair, mtu: int | None) -> None:  # noqa: F811
    start, _spawn, w_ns, e_ns, _vw = pair
    conf = BASE + SUBNETS + (f"\tmtu={mtu}\n\tmetric=7\n" if mtu else "")
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1

    route = _route(w_ns)
    if mtu:
        assert re.search(rf"\bmtu {mtu}\b", route) and re.search(r"\bmetric 7\b", route), route
    else:
        assert "mtu" not in route and "metric" not in route, route
    limit = mtu or 1400  # without mtu= the TUN device's MTU is the limit
    ok = _ping(w_ns, limit)
    assert ok.returncode == 0, ok.stdout + ok.stderr + west.log() + east.log()
    big = _ping(w_ns, limit + 1)
    assert big.returncode != 0, big.stdout + big.stderr
    # iputils: "ping: local error: message too long, mtu=1300" (refused on west itself)
    assert re.search(rf"message too long, mtu={limit}\b", big.stdout + big.stderr, re.I), \
        big.stdout + big.stderr
    # (the [None] case: 1,301 bytes cross a tunnel without mtu=, so 1,300 is the conn's)

    # the route goes with the conn
    r = west.whack("--name", "west-east", "--delete")
    assert r.returncode == 0, r.stdout
    assert "203.0.113.0/24" not in w_ns.run("ip", "route", "show", "table", "4500",
                                            check=False).stdout
