"""The half-open count and the per-source DoS count (RFC 8019 §4) go back to zero
whatever ends a responder's half-open IKE SA: established, authentication failure,
half-open timeout, a NAT moving the peer's port, an IPv6 peer."""

from __future__ import annotations

import ipaddress

from .harness import NAT_PUBLIC, Net

W6 = ipaddress.ip_address("2001:db8:1::1")
E6 = ipaddress.ip_address("2001:db8:2::2")


def _clear(net: Net) -> None:
    eng = net.east.engine
    assert eng.n_halfopen == 0
    assert eng.dos.per_addr == {}


def test_established_clears_the_counts() -> None:
    net = Net()
    net.up()
    assert net.established(net.east)
    _clear(net)


def test_behind_a_nat_the_port_moves_and_the_counts_clear() -> None:
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    assert net.established(net.east)
    ike = next(iter(net.east.engine.by_serial.values()))
    assert ike.halfopen_key is not None
    assert ike.halfopen_key[1] == NAT_PUBLIC.packed
    assert ike.remote.port != ike.halfopen_key[2]  # IKE_AUTH came from the NAT's 4500 port
    _clear(net)


def test_authentication_failure_clears_the_counts() -> None:
    net = Net(east_psk=b"another key entirely, not west's")
    net.up()
    net.advance(120)
    assert not net.established(net.east)
    _clear(net)


def test_half_open_timeout_clears_the_counts() -> None:
    net = Net()
    net.drop_next = 0
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT request to east
    net.cut = True  # east's answer and everything after are lost
    net.run()
    assert net.east.engine.n_halfopen == 1 and net.east.engine.dos.per_addr
    net.advance(net.east.engine.settings.half_open_timeout + 60)
    _clear(net)


def test_ipv6_peer_counts_by_slash_64_and_clears() -> None:
    kw = {"left": W6, "right": E6, "leftsubnet": "2001:db8:a::/64",
          "rightsubnet": "2001:db8:b::/64"}
    net = Net(west_kw=kw, east_kw=kw)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    eng = net.east.engine
    assert eng.n_halfopen == 1
    assert eng.dos.per_addr == {W6.packed[:8]: 1}
    assert eng.dos.addr_count(ipaddress.ip_address("2001:db8:1::99").packed) == 1
    net.run()
    assert net.established(net.east)
    _clear(net)
