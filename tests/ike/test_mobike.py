"""MOBIKE (RFC 4555) between two engines: the client (west, behind the harness's NAT)
moves to a new address; the gateway checks return routability (COOKIE2) before it moves
the IKE SA and the Child SAs (MoveSA, no new Child SA)."""

from __future__ import annotations

import ipaddress

from pypluto.iana import NotifyType as N
from pypluto.ike.actions import Endpoint, MoveSA
from pypluto.ike.tasks import mobike as mobmod

from .harness import NAT_PUBLIC, WEST, Net

NEW_WEST = ipaddress.ip_address("192.0.2.77")


def mobike_net(*, west: bool = True, east: bool = True, nat: bool = True) -> Net:
    net = Net(nat=nat, west_kw={"mobike": west}, east_kw={"mobike": east, "left": "%any"})
    net.up()
    assert net.children(net.west) and net.children(net.east)
    return net


def _ike(side):  # noqa: ANN001, ANN202
    (ike,) = [i for i in side.engine.by_serial.values() if i.established]
    return ike


def _moves(side) -> list[MoveSA]:  # noqa: ANN001
    return [a for a in side.actions if isinstance(a, MoveSA)]


def test_mobike_negotiated_only_when_both_say_so() -> None:
    assert _ike(mobike_net().west).mobike
    for w, e in ((True, False), (False, True)):
        net = mobike_net(west=w, east=e)
        assert not _ike(net.west).mobike and not _ike(net.east).mobike


def test_client_moves_sas_follow_without_a_new_child_sa() -> None:
    net = mobike_net()
    wi, ei = _ike(net.west), _ike(net.east)
    old_remote = ei.remote
    spis = {c.spi_in for c in ei.children}
    n_children = len(net.children(net.east))
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    # the gateway saw the new NAT mapping, checked it (COOKIE2), then moved
    assert ei.remote != old_remote and ei.remote.addr == NAT_PUBLIC
    assert wi.local == Endpoint(NEW_WEST, 4500)
    assert {c.spi_in for c in ei.children} == spis and len(net.children(net.east)) == n_children
    (c,) = ei.children
    assert c.remote_addr == NAT_PUBLIC and c.encap == (ei.local.port, ei.remote.port)
    moves = _moves(net.east)
    assert len(moves) == 2 and {m.new_dst for m in moves} == {ei.local.addr, NAT_PUBLIC}
    out = next(m for m in moves if m.spi == c.spi_out)
    assert out.encap_dport == ei.remote.port
    wmoves = _moves(net.west)
    assert len(wmoves) == 2 and {m.new_src for m in wmoves} | {m.new_dst for m in wmoves} \
        >= {NEW_WEST}
    assert any("checking return routability" in m for m in net.east.logs())
    assert any("MOBIKE: IKE SA and 1 Child SA(s) moved" in m for m in net.east.logs())
    # the tunnel still works: a liveness exchange and a Child SA rekey on the new path
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1


def test_update_from_an_address_failing_return_routability_moves_nothing() -> None:
    net = mobike_net()
    ei = _ike(net.east)
    before = (ei.local, ei.remote)
    (child,) = ei.children
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    # deliver the UPDATE_SA_ADDRESSES; the gateway answers it and sends its COOKIE2 check
    assert net.step()
    pending = list(net.queue)
    net.queue.clear()
    answers = [(s, p) for s, p in pending if s is net.east]
    assert len(answers) == 2
    net.queue.append(answers[0])  # the answer to the update reaches the client ...
    net.run()
    net.cut = True  # ... but nothing from the new address comes back any more
    net.advance(120)
    assert (ei.local, ei.remote) == before
    assert child.remote_addr == before[1].addr
    assert not _moves(net.east)
    assert any("failed the return routability check (no answer)" in m
               for m in net.east.logs())
    assert ei in net.east.engine.by_serial.values()  # the IKE SA itself stays


def test_update_without_mobike_is_ignored() -> None:
    net = mobike_net(west=True, east=False)
    wi = _ike(net.west)
    wi.mobike = True  # a client that sends the update anyway
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    assert not _moves(net.east)
    assert any("MOBIKE was not negotiated" in m for m in net.east.logs())


def test_cookie2_is_echoed() -> None:
    net = mobike_net()
    ei = _ike(net.east)
    ei.tasks.clear()
    net.apply(net.east, net.east.engine.queue(ei, mobmod.ReturnRoutability(
        ei.local, ei.remote, None), net.now))
    net.run()
    assert any("MOBIKE: IKE SA and 1 Child SA(s) moved" in m for m in net.east.logs())
    assert int(N.COOKIE2) == 16401
