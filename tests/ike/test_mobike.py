"""MOBIKE (RFC 4555) between two engines: the client (west, behind the harness's NAT)
moves to a new address; the gateway checks return routability (COOKIE2) before it moves
the IKE SA and the Child SAs (MoveSA, no new Child SA)."""

from __future__ import annotations

import dataclasses
import ipaddress

from pypluto.iana import NotifyType as N
from pypluto.ike.actions import AddSA, DelSA, Endpoint, MoveSA
from pypluto.ike.tasks import mobike as mobmod
from pypluto.ike.tasks.liveness import Liveness

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
    # no MOBIKE move (no COOKIE2 check); the client's new NAT mapping is followed as
    # RFC 7296 §2.23 says for a peer behind a NAT (IKE SA and Child SAs alike)
    logs = net.east.logs()
    assert not any("return routability" in m or "MOBIKE: IKE SA" in m for m in logs)
    assert all(m.new_dst == NAT_PUBLIC or m.new_src == NAT_PUBLIC for m in _moves(net.east))
    assert any("MOBIKE was not negotiated" in m for m in logs)


def test_cookie2_is_echoed() -> None:
    net = mobike_net()
    ei = _ike(net.east)
    ei.tasks.clear()
    net.apply(net.east, net.east.engine.queue(ei, mobmod.ReturnRoutability(
        ei.local, ei.remote, None), net.now))
    net.run()
    # a check of the addresses in use: nothing to move, the Child SA is there already
    assert any("MOBIKE: IKE SA and 0 Child SA(s) moved" in m and
               "(1 already on the new addresses)" in m for m in net.east.logs())
    assert not _moves(net.east)
    assert int(N.COOKIE2) == 16401


# --- issue 15: the peer rekeys its Child SA while the gateway moves (strongSwan's
# kernel-libipsec cannot update SA addresses, so it rekeys right after its update)

def _data_plane(side) -> tuple[dict, list[str]]:  # noqa: ANN001
    """``side``'s SA table as the daemon builds it from AddSA, DelSA and MoveSA, in
    order; a MoveSA for an SA that is not installed is what the backends refuse
    ("move_sa: no SA ...")."""
    sas: dict = {}
    errors: list[str] = []
    for a in side.actions:
        if isinstance(a, AddSA):
            sas[(str(a.sa.dst), a.sa.spi)] = a.sa
        elif isinstance(a, DelSA):
            sas.pop((str(a.dst), a.spi), None)
        elif isinstance(a, MoveSA):
            sa = sas.pop((str(a.dst), a.spi), None)
            if sa is None:
                errors.append(f"no SA {a.spi:08x}@{a.dst}")
                continue
            sas[(str(a.new_dst), a.spi)] = dataclasses.replace(
                sa, src=a.new_src, dst=a.new_dst, encap_sport=a.encap_sport,
                encap_dport=a.encap_dport)
    return sas, errors


def _check_gateway_plane(net: Net) -> None:
    """One Child SA left on the gateway; both its SAs installed on the client's new NAT
    mapping (address and port), nothing else in the table, no failed move."""
    ei = _ike(net.east)
    sas, errors = _data_plane(net.east)
    assert errors == []
    (c,) = ei.children
    assert ei.remote.addr == NAT_PUBLIC and (c.remote_addr, c.encap) == (
        NAT_PUBLIC, (ei.local.port, ei.remote.port))
    out = sas.pop((str(NAT_PUBLIC), c.spi_out))
    inb = sas.pop((str(ei.local.addr), c.spi_in))
    assert not sas
    assert (out.src, out.encap_sport, out.encap_dport) == (ei.local.addr, ei.local.port,
                                                           ei.remote.port)
    assert (inb.src, inb.encap_sport, inb.encap_dport) == (NAT_PUBLIC, ei.remote.port,
                                                           ei.local.port)


def test_peer_rekey_while_the_return_routability_check_is_in_flight() -> None:
    """The rekey reaches the gateway after its COOKIE2 check went out, before the echo:
    the new Child SA is installed on the addresses being checked with its outbound SA
    held back until the old one is deleted (RFC 7296 §2.8).  The move must not look
    for that outbound SA in the data plane (it used to: "MoveSA failed: no SA")."""
    net = mobike_net()
    ei = _ike(net.east)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    assert net.step()  # UPDATE_SA_ADDRESSES: the answer and the COOKIE2 check go out
    assert len(net.queue) == 2
    net.step()
    net.step()  # the client takes the answer (it moves) and echoes the COOKIE2
    (echo,) = net.queue
    net.queue.clear()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    assert net.step()  # CREATE_CHILD_SA reaches the gateway first
    assert len(ei.children) == 2
    fresh = ei.children[-1]
    assert fresh.pending_out is not None
    net.queue.insert(0, echo)
    net.run()
    assert any("Child SA(s) moved" in m for m in net.east.logs())
    _check_gateway_plane(net)
    assert not _data_plane(net.west)[1]


def test_peer_rekey_before_the_return_routability_check_is_sent() -> None:
    """The gateway has a request of its own outstanding, so its COOKIE2 check waits;
    the peer's rekey is answered first, on the old NAT mapping, its outbound SA held
    back.  The move rewrites the held SA: it is installed on the new mapping when the
    old Child SA is deleted, not on the old port (the tunnel would be one-way)."""
    net = mobike_net()
    ei = _ike(net.east)
    net.apply(net.east, net.east.engine.queue(ei, Liveness(), net.now))
    (dpd,) = net.queue  # the gateway's DPD is in flight
    net.queue.clear()
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.step()  # UPDATE_SA_ADDRESSES: answered; the check waits for the DPD
    net.step()  # the client moves
    assert not net.queue
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.step()  # CREATE_CHILD_SA: the gateway installs the new Child SA on the old mapping
    fresh = ei.children[-1]
    old_port = ei.remote.port
    assert fresh.pending_out is not None and fresh.pending_out.encap_dport == old_port
    (answer,) = net.queue  # the client has not seen the rekey's answer yet ...
    net.queue[:] = [dpd]
    net.run()  # ... when the DPD, the COOKIE2 check and the move are done
    assert ei.remote.port != old_port and fresh.pending_out is not None
    net.queue.append(answer)
    net.run()  # the client deletes the old Child SA: the held outbound SA goes in
    assert fresh.pending_out is None
    assert any("checking return routability" in m for m in net.east.logs())
    _check_gateway_plane(net)


def test_failed_check_takes_a_child_sa_made_meanwhile_back() -> None:
    """A Child SA created while the check was in flight (on the addresses being checked)
    goes back with the IKE SA when the check fails."""
    net = mobike_net()
    ei = _ike(net.east)
    before = ei.remote
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.step()
    net.step()
    net.step()
    net.queue.clear()  # the echo is lost
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.step()  # the rekey arrives from the address being checked
    net.queue.clear()
    net.cut = True
    net.advance(120)
    assert any("failed the return routability check (no answer)" in m
               for m in net.east.logs())
    assert ei.remote == before
    sas, errors = _data_plane(net.east)
    assert errors == []
    for c in ei.children:
        assert (c.remote_addr, c.encap) == (before.addr, (ei.local.port, before.port))
    outs = [sa for sa in sas.values() if sa.direction == "out"]
    assert outs and all(sa.encap_dport == before.port for sa in outs)


def test_encapsulation_yes_keeps_esp_in_udp_after_the_move() -> None:
    """No NAT, but the client has encapsulation=yes: its NAT_DETECTION in the update is
    made not to match (as in IKE_SA_INIT), so the gateway keeps ESP in UDP (found in the
    ESP kernel: the gateway went back to plain ESP, the client kept UDP)."""
    net = Net(nat=False, west_kw={"mobike": True, "encapsulation": "yes"},
              east_kw={"mobike": True, "left": "%any"})
    net.up()
    ei = _ike(net.east)
    (c,) = ei.children
    assert c.encap is not None
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    (c,) = ei.children
    assert ei.remote.addr == NEW_WEST and c.remote_addr == NEW_WEST
    assert ei.nat_remote and c.encap == (ei.local.port, ei.remote.port)
    (wc,) = _ike(net.west).children
    assert wc.encap == (c.encap[1], c.encap[0])
    sas, errors = _data_plane(net.east)
    assert errors == [] and all(sa.encap_dport is not None for sa in sas.values())


def test_client_counts_only_the_child_sas_it_moved() -> None:
    """Issue 15, the interop flake: strongSwan as the gateway sends its CREATE_CHILD_SA
    rekey before its answer to our UPDATE_SA_ADDRESSES (kernel-libipsec cannot update
    SA addresses).  The client installs that Child SA on its new address at once; when
    the answer comes only the old Child SA moves, and the log says so.  It used to
    count every established Child SA ("2 Child SA(s) moved"), which the interop test,
    reading "1 Child SA(s) moved", took for a client that never moved."""
    net = mobike_net()
    wi, ei = _ike(net.west), _ike(net.east)
    (old,) = wi.children
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    assert net.step()  # UPDATE_SA_ADDRESSES: the gateway answers and checks (COOKIE2)
    (answer, check) = net.queue
    net.queue[:] = [check]
    net.run()  # the client echoes the COOKIE2 (its update still in flight); the gateway moves
    assert ei.remote.addr == NAT_PUBLIC
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    assert net.step()  # the gateway's rekey reaches the client before the answer
    fresh = [c for c in wi.children if c is not old]
    assert len(fresh) == 1 and fresh[0].local_addr == NEW_WEST
    net.queue.insert(0, answer)
    net.run()
    logs = net.west.logs()
    assert any("MOBIKE: IKE SA and 1 Child SA(s) moved" in m and
               "(1 already on the new addresses)" in m for m in logs), logs
    assert not any("2 Child SA(s) moved" in m for m in logs)
    wmoves = _moves(net.west)
    assert {m.spi for m in wmoves} == {old.spi_in, old.spi_out}
    sas, errors = _data_plane(net.west)
    assert errors == []
    (c,) = wi.children  # the rekey finished: the old Child SA is gone
    assert c is fresh[0] and c.local_addr == NEW_WEST
    assert {sa.spi for sa in sas.values()} == {c.spi_in, c.spi_out}
