"""mtu= / metric= on the userspace plane: enforced, or refused, never ignored.

The userspace plane puts ``mtu N`` / ``metric M`` (ipsec.conf mtu=, metric=) on the
route that carries a conn's remote selector into its TUN device
(kernel/userspace/routes.py); two conns to the same remote subnet (say, one per
``rightprotoport=``) share that one route.  A second conn whose mtu= / metric= differ
from the route's would have its packets carried with the first conn's values: it
is refused (BackendError) instead, and the route's values go with the last conn
using it.  The ``ip`` commands are recorded, not run (no namespace needed).
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.kernel.base import BackendError
from pypluto.kernel.userspace import iproute, routes
from pypluto.params import PolicyParams, TrafficSelector

REMOTE = "203.0.113.0/24"


@pytest.fixture
def plane(monkeypatch: pytest.MonkeyPatch) -> tuple[routes.Routes, list[tuple[str, ...]]]:
    calls: list[tuple[str, ...]] = []

    def ip(*args: str, check: bool = True) -> bool:
        calls.append(args)
        return True

    monkeypatch.setattr(iproute, "ip", ip)
    monkeypatch.setattr(iproute, "rule_exists", lambda *a: True)
    monkeypatch.setattr(iproute, "local_addresses", lambda: [])
    monkeypatch.setattr(routes, "_mark_rule_exists", lambda *a: True)
    return routes.Routes("kw26tun", 4526, 32600), calls


def pol(name: str, proto: int, mtu: int | None = None, metric: int | None = None,
        reqid: int = 1) -> PolicyParams:
    return PolicyParams(
        src=TrafficSelector(ipaddress.ip_network("198.51.100.0/24"), proto),
        dst=TrafficSelector(ipaddress.ip_network(REMOTE), proto),
        direction="out", reqid=reqid,
        tmpl_src=ipaddress.ip_address("192.0.2.1"), tmpl_dst=ipaddress.ip_address("192.0.2.2"),
        mtu=mtu, metric=metric, conn_name=name)


def route_cmds(calls: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [c for c in calls if "route" in c and REMOTE in c]


def test_mtu_rides_on_the_route(plane) -> None:
    r, calls = plane
    r.add(pol("tcp", 6, mtu=1400, metric=7))
    (cmd,) = route_cmds(calls)
    assert cmd[-4:] == ("mtu", "1400", "metric", "7")


@pytest.mark.parametrize("second", [dict(mtu=1300), dict(mtu=1400, metric=9),
                                    dict(metric=7)])
def test_a_second_conn_with_other_route_values_is_refused(plane, second) -> None:
    """Before the fix the second add succeeded, and its mtu= / metric= were ignored
    (its packets took the first conn's route: mtu 1400 metric 7)."""
    r, calls = plane
    r.add(pol("tcp", 6, mtu=1400, metric=7, reqid=1))
    with pytest.raises(BackendError, match="conflict with mtu=1400 metric=7"):
        r.add(pol("udp", 17, reqid=2, **second))
    # nothing of the refused conn stays: deleting the first removes the route
    r.delete(pol("tcp", 6, mtu=1400, metric=7, reqid=1))
    assert ("-4", "route", "del", REMOTE, "table", str(r.sel_table)) in calls
    assert not r.installed


def test_same_values_and_no_values_share_the_route(plane) -> None:
    r, calls = plane
    r.add(pol("tcp", 6, mtu=1400, reqid=1))
    r.add(pol("udp", 17, mtu=1400, reqid=2))  # the same mtu=: one route serves both
    r.add(pol("icmp", 1, reqid=3))  # no mtu= of its own: nothing is ignored
    assert len(route_cmds(calls)) == 1


def test_the_route_values_go_with_the_last_conn(plane) -> None:
    """Once the conn that made the route is gone, another may make it anew."""
    r, calls = plane
    r.add(pol("tcp", 6, mtu=1400, reqid=1))
    r.delete(pol("tcp", 6, mtu=1400, reqid=1))
    r.add(pol("udp", 17, mtu=1300, reqid=2))
    assert route_cmds(calls)[-1][-2:] == ("mtu", "1300")
