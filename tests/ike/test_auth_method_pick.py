"""The responder's choice among conns of one peer ID takes the AUTH payload's method
into account, as Libreswan 5.2 does (the method is part of its IKE_AUTH conn choice): a
PSK peer is not held to an rsasig conn of the same ID listed before the PSK one, and
an rsasig-only choice still refuses a PSK AUTH."""

from __future__ import annotations

from pypluto.config.model import bump_generation

from .harness import Net
from .test_libreswan_outcomes import HOST, conn


def _net(east_first: str, east_second: str | None) -> Net:
    net = Net()
    # both east conns have west's IDi and the IDr west names: only AUTH tells them apart
    net.west.engine.add_connection(conn(HOST, True))
    net.east.engine.add_connection(conn({**HOST, "authby": east_first}, False, "first"))
    if east_second is not None:
        net.east.engine.add_connection(conn({**HOST, "authby": east_second}, False, "second"))
    bump_generation()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.run()
    return net


def test_psk_peer_gets_the_psk_conn_listed_after_an_rsasig_one() -> None:
    net = _net("rsasig", "secret")
    est = net.established(net.east)
    assert [i.conn for i in est] == ["second"], net.east.logs()
    assert len(net.established(net.west)) == 1


def test_psk_peer_and_only_an_rsasig_conn_is_refused() -> None:
    net = _net("rsasig", None)
    assert not net.established(net.east) and not net.established(net.west)
    assert any("the peer used AUTH method 2" in m for m in net.east.logs()), net.east.logs()
