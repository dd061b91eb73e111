"""Hostile peers (and paths) lying about addresses, part 25: what
test_hostile_nat_mobike, test_mobike(_races), test_hostile_roadwarrior and
test_roadwarrior leave out.

* the peer's address changing in the middle of establishment: IKE_AUTH from another
  address (RFC 7296 §2.23: answer where the request came from; only the end facing
  the peer's NAT may follow a new address, and the float to port 4500 changes ports,
  not addresses);
* a real NAT hidden by the initiator's forged NAT_DETECTION_SOURCE_IP (claims "no
  NAT"): east still follows the float to port 4500;
* NAT_DETECTION notifies in an IKE SA or Child SA rekey (CREATE_CHILD_SA) and in
  IKE_AUTH (with MOBIKE notifies) are not NAT detection and move nothing;
* a Configuration Payload in CREATE_CHILD_SA (a client's CFG_REQUEST, a gateway's
  CFG_REPLY) leases and changes nothing (§2.19: IKE_AUTH only);
* ESP in UDP on port 500: a request, or a MOBIKE UPDATE_SA_ADDRESSES, redirected to
  our port 500 after the float to 4500;
* clients asking for particular addresses of a huge pool (§3.15.1) and going.

Found by this sweep (each test failed before its fix):

* an IKE_AUTH request from another address moved the IKE SA (and its Child SA) there
  although the peer was not behind a NAT (no NAT at all, or only us behind one):
  ``TaskManager.receive`` now lets the float change only ports unless we face the
  peer's NAT;
* an authenticated request to our port 500 after the float (§2.23 NAT following) and
  a MOBIKE UPDATE_SA_ADDRESSES to our port 500 moved the IKE SA and its Child SAs to
  ESP in UDP on port 500 (``TaskManager.receive``, ``MobikeUpdate.respond``);
* the address a client asked for skipped the ``LINGERING_MAX`` bound of the pool's
  memory (``AddressPool.acquire``).
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.iana import CFGType, CPAttr, ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike import pool as poolmod
from pypluto.ike.actions import Action, Endpoint, MoveSA, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.liveness import Liveness
from pypluto.wire import payloads as wp
from pypluto.wire.message import parse_message

from .harness import EAST, NAT_PUBLIC, WEST, Net, Side
from .test_hostile_nat_mobike import (
    NEW_WEST,
    _encap_agrees,
    _mobike,
    _no_internal_error,
    _plane,
)
from .test_hostile_roadwarrior import _hostile_auth_request, _in_use, rw_net

ELSEWHERE = ipaddress.ip_address("198.51.100.66")
AUTH = int(ExchangeType.IKE_AUTH)
INIT = int(ExchangeType.IKE_SA_INIT)


def _ike(side: Side) -> IKESA:
    (ike,) = [i for i in side.engine.by_serial.values() if i.established]
    return ike


def _edit_init_request(net: Net, edit) -> None:  # noqa: ANN001
    """West's IKE_SA_INIT request goes out edited by ``edit(payloads, spi_i)``; west
    signs what it sent (its AUTH covers the edited message)."""
    plain = net.apply

    def apply(side: Side, acts: list[Action]) -> None:
        if side is net.west:
            out: list[Action] = []
            for a in acts:
                if isinstance(a, SendPacket):
                    m = parse_message(a.data)
                    if m.exchange == INIT and not m.response:
                        edit(m.payloads, m.spi_i)
                        data = m.serialize()
                        for i in side.engine.by_serial.values():
                            if i.spi_i == m.spi_i:
                                i.init_request = data
                        a = SendPacket(data, a.local, a.remote)
                out.append(a)
            acts = out
        plain(side, acts)

    net.apply = apply  # type: ignore[method-assign]


def _natd(pl: list[wp.Payload], t: int) -> wp.NotifyPayload:
    (n,) = [p for p in pl if isinstance(p, wp.NotifyPayload) and p.notify_type == t]
    return n


def _auth_from(net: Net, frm: Endpoint, to_port: int | None = None) -> list[Action]:
    """Establishment up to west's IKE_AUTH request, which reaches east from ``frm``
    (a path rewriting its source; ``to_port``: and its destination port)."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # INIT request
    net.step()  # INIT answer: west sends IKE_AUTH
    (sender, pkt) = net.queue.pop(0)
    assert sender is net.west and not net.queue
    assert parse_message(pkt.data).exchange == AUTH
    local = pkt.remote if to_port is None else Endpoint(pkt.remote.addr, to_port)
    acts = net.east.engine.receive(pkt.data, local, frm, net.now)
    net.apply(net.east, acts)
    net.queue.clear()
    return acts


# ================================================================== IKE_AUTH from elsewhere
@pytest.mark.parametrize("case", ["no_nat_port_4500", "we_are_behind_a_nat"])
def test_ike_auth_from_another_address_is_answered_there_but_moves_nothing(
        case: str) -> None:
    """West's IKE_AUTH request reaches east from another address (a path rewriting the
    source).  East answers where the request came from (§2.23, §3.1), but the peer is
    not behind a NAT as far as east knows -- no NAT at all, the request merely arriving
    on port 4500, or east itself behind one (here: west's NAT_DETECTION_DESTINATION_IP
    says so) -- so the IKE SA may not follow it: "A host behind a NAT SHOULD NOT do
    this type of dynamic address update" (§2.23), and the float to port 4500 changes
    ports, not the peer's address.  East used to move the IKE SA and install its Child
    SA towards the rewritten source."""
    net = Net()
    if case == "we_are_behind_a_nat":
        def edit(pl: list[wp.Payload], spi_i: bytes) -> None:
            _natd(pl, N.NAT_DETECTION_DESTINATION_IP).data = b"\x55" * 20
        _edit_init_request(net, edit)
    acts = _auth_from(net, Endpoint(ELSEWHERE, 4500 if case == "no_nat_port_4500" else 500),
                      4500 if case == "no_nat_port_4500" else None)
    answers = [a for a in acts if isinstance(a, SendPacket)]
    assert answers and all(a.remote.addr == ELSEWHERE for a in answers)
    e = _ike(net.east)
    assert e.nat_local is (case == "we_are_behind_a_nat") and not e.nat_remote
    assert e.remote.addr == WEST
    (c,) = e.children
    assert c.remote_addr == WEST
    sas, errors = _plane(net.east)
    assert errors == [] and sas
    assert {(sa.src, sa.dst) for sa in sas.values()} == {(EAST, WEST), (WEST, EAST)}
    _no_internal_error(net)


def test_ike_auth_of_a_natted_peer_from_another_public_address_is_followed() -> None:
    """The peer is behind a NAT (east saw it in NAT-D) that maps its port-4500 flow to
    another public address than its port-500 one (a NAT with address pooling): east
    faces the NAT and follows the authenticated IKE_AUTH there (§2.23), Child SA too."""
    net = Net(nat=True, east_kw={"left": "%any"})
    other = Endpoint(ELSEWHERE, 40001)
    acts = _auth_from(net, other)
    assert all(a.remote == other for a in acts if isinstance(a, SendPacket))
    e = _ike(net.east)
    assert e.nat_remote and e.remote == other and e.local.port == 4500
    (c,) = e.children
    assert c.remote_addr == ELSEWHERE and c.encap == (4500, 40001)
    _no_internal_error(net)


def test_ike_auth_through_the_nat_on_a_new_mapping_is_followed() -> None:
    """The other side of the rule: west is behind a NAT (east saw it in NAT-D), and its
    IKE_AUTH comes from the NAT's public address on a new port (the float to 4500):
    east follows, and its Child SA is ESP in UDP to that mapping."""
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    e = _ike(net.east)
    assert e.nat_remote and e.remote.addr == NAT_PUBLIC and e.remote.port != 500
    (c,) = e.children
    assert c.remote_addr == NAT_PUBLIC and c.encap == (4500, e.remote.port)
    (wc,) = _ike(net.west).children
    assert wc.encap == (4500, 4500)
    _no_internal_error(net)


def test_initiator_hiding_a_real_nat_is_followed_to_port_4500() -> None:
    """West is behind a real NAT but its NAT_DETECTION_SOURCE_IP is the hash of the
    NAT's public mapping (it claims "no NAT", the reverse of the forged-NAT cases of
    test_hostile_nat_mobike).  West still sees the NAT in east's honest notifies and
    floats to 4500 (§2.23); east, which saw no NAT, follows the float (same address, a
    new port: its answers must get through the NAT) and establishes.  That east then
    sends plain ESP is what §2.23 allows ("When either side is using port 4500, sending
    ESP with UDP encapsulation is not required"); the liar only hurts its own tunnel."""
    net = Net(nat=True, east_kw={"left": "%any"})

    def edit(pl: list[wp.Payload], spi_i: bytes) -> None:
        _natd(pl, N.NAT_DETECTION_SOURCE_IP).data = codec.natd_hash(
            spi_i, b"\x00" * 8, NAT_PUBLIC, 40000)
    _edit_init_request(net, edit)
    net.up()
    w, e = _ike(net.west), _ike(net.east)
    assert w.nat_local and not (e.nat_local or e.nat_remote)
    assert w.local.port == e.local.port == 4500
    assert e.remote.addr == NAT_PUBLIC and e.remote.port != 40000
    assert net.children(net.west) and net.children(net.east)
    _no_internal_error(net)


@pytest.mark.parametrize("mapping", ["same", "new"])
def test_request_to_our_port_500_after_the_float_moves_nothing(mapping: str) -> None:
    """After the float, "all future IKE and ESP packets associated with this IKE SA"
    go over port 4500 (§2.23).  West's authenticated request reaches east on port 500
    (a path rewriting the destination port; from west's mapping, or a new one): east
    answers it there (§2.11) but does not follow: the dynamic update of §2.23 follows
    the peer's NAT mapping, not another port of ours.  East used to move the IKE SA
    and its Child SA to ESP in UDP on port 500, where RFC 3948 encapsulation does not
    exist (no non-ESP marker: the kernel takes it for IKE), cutting the tunnel off."""
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    w, e = _ike(net.west), _ike(net.east)
    (c,) = e.children
    before = (e.local, e.remote, c.local_addr, c.remote_addr, c.encap)
    assert e.local.port == 4500 and c.encap == (4500, e.remote.port)
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    (frm, pkt) = net.queue.pop(0)
    assert frm is net.west and not net.queue
    src = e.remote if mapping == "same" else Endpoint(NAT_PUBLIC, e.remote.port + 7)
    acts = net.east.engine.receive(pkt.data, Endpoint(EAST, 500), src, net.now)
    net.apply(net.east, acts)
    (answer,) = [a for a in acts if isinstance(a, SendPacket)]
    assert (answer.local, answer.remote) == (Endpoint(EAST, 500), src)
    assert not [a for a in acts if isinstance(a, MoveSA)]
    assert (e.local, e.remote, c.local_addr, c.remote_addr, c.encap) == before
    sas, errors = _plane(net.east)
    assert errors == [] and {sa.encap_sport for sa in sas.values()} == {4500, e.remote.port}
    _no_internal_error(net)


def test_mobike_update_to_our_port_500_moves_nothing() -> None:
    """MOBIKE: after IKE_AUTH both ends stay on port 4500 (RFC 4555 §3.3; RFC 7296
    §2.23).  West's authenticated UPDATE_SA_ADDRESSES, its destination port rewritten
    to 500 on the path (from a new mapping): east answers it there but checks and
    moves nothing -- it used to check the new address from port 500 and, the check
    answered, move the IKE SA and its Child SA to ESP in UDP on port 500.  West's own
    update, on port 4500, still moves everything afterwards."""
    net, w, e = _mobike()
    (c,) = e.children
    before = (e.local, e.remote, c.local_addr, c.remote_addr, c.encap)
    new = Endpoint(NAT_PUBLIC, e.remote.port + 1000)
    upd = w_protected(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES)])
    acts = net.east.engine.receive(upd, Endpoint(EAST, 500), new, net.now)
    net.apply(net.east, acts)
    sends = [a for a in acts if isinstance(a, SendPacket)]
    assert len(sends) == 1 and parse_message(sends[0].data).response
    assert (sends[0].local, sends[0].remote) == (Endpoint(EAST, 500), new)
    assert not [a for a in acts if isinstance(a, MoveSA)]
    net.queue.clear()
    net.advance(60)
    assert (e.local, e.remote, c.local_addr, c.remote_addr, c.encap) == before
    assert not [a for a in net.east.actions if isinstance(a, MoveSA)]
    # the real move, to port 4500
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    assert e.local == Endpoint(EAST, 4500) and e.remote != before[1]
    assert c.encap == (4500, e.remote.port)
    assert _plane(net.east)[1] == []
    _no_internal_error(net)


def w_protected(net: Net, w: IKESA, payloads: list[wp.Payload]) -> bytes:
    """``payloads`` in west's next INFORMATIONAL request on ``w`` (one datagram)."""
    msgid = w.next_out
    w.next_out += 1
    (data,) = net.west.engine.encode(w, int(ExchangeType.INFORMATIONAL), False, msgid,
                                     payloads)
    return data


# ================================================================== CREATE_CHILD_SA extras
def _add_to_create_child_sa(side: Side, extra: list[wp.Payload], seen: list[list[wp.Payload]]
                            ) -> None:
    """Every CREATE_CHILD_SA message ``side`` sends carries ``extra`` too (protected with
    its keys: the peer's own message); what it sent is recorded in ``seen``."""
    tm = side.engine.tm
    real = tm.encode

    def encode(ike, exchange, response, msgid, payloads):  # noqa: ANN001, ANN202
        if exchange == ExchangeType.CREATE_CHILD_SA:
            payloads = [*payloads, *extra]
            seen.append(payloads)
        return real(ike, exchange, response, msgid, payloads)

    tm.encode = encode  # type: ignore[method-assign]


@pytest.mark.parametrize("what", ["ike", "child"])
def test_nat_detection_in_a_rekey_is_not_nat_detection(what: str) -> None:
    """NAT_DETECTION_*_IP belong in IKE_SA_INIT (§2.23) and MOBIKE's INFORMATIONALs
    (RFC 4555 §3.5); in the CREATE_CHILD_SA that rekeys the IKE SA or the Child SA
    (both the request and the answer carry forged ones claiming a NAT) they mean
    nothing: the (new) IKE SA keeps its NAT state and ports, the Child SA stays plain
    ESP."""
    net = Net()
    net.up()
    forged = [codec.notify(N.NAT_DETECTION_SOURCE_IP, b"\x55" * 20),
              codec.notify(N.NAT_DETECTION_DESTINATION_IP, b"\xaa" * 20)]
    seen: list[list[wp.Payload]] = []
    for side in (net.west, net.east):
        _add_to_create_child_sa(side, forged, seen)
    w, e = _ike(net.west), _ike(net.east)
    (old,) = e.children
    if what == "ike":
        net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    else:
        net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(seen) == 2  # the request and its answer
    w2, e2 = _ike(net.west), _ike(net.east)
    assert (w2 is not w and e2 is not e) is (what == "ike")
    assert (e2.children[0] is not old) is (what == "child")  # (an IKE rekey moves it)
    for i in (w2, e2):
        assert not i.nat_local and not i.nat_remote
        assert i.local.port == i.remote.port == 500
        (c,) = i.children
        assert c.encap is None
    _encap_agrees(net)


def test_cp_in_create_child_sa_leases_nothing() -> None:
    """§3.15 / §2.19: the Configuration Payload asks for an address in IKE_AUTH.  A
    client that puts a CFG_REQUEST (asking for the pool's other address) into the
    CREATE_CHILD_SA rekeying its Child SA gets no CFG_REPLY and no second lease; the
    rekey itself goes through on the address it has."""
    net = rw_net()
    net.up()
    (lease,) = _in_use(net)
    other = ipaddress.ip_address("198.51.100.11" if str(lease) == "198.51.100.10"
                                 else "198.51.100.10")
    cp = wp.CPPayload(CFGType.CFG_REQUEST,
                      [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, other.packed),
                       wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS)])
    seen: list[list[wp.Payload]] = []
    _add_to_create_child_sa(net.west, [cp], seen)
    e = _ike(net.east)
    (old,) = e.children
    n = len(net.east.actions)
    answers: list[list[wp.Payload]] = []
    real = net.east.engine.tm.encode

    def encode(ike, exchange, response, msgid, payloads):  # noqa: ANN001, ANN202
        if exchange == ExchangeType.CREATE_CHILD_SA:
            answers.append(payloads)
        return real(ike, exchange, response, msgid, payloads)

    net.east.engine.tm.encode = encode  # type: ignore[method-assign]
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert seen and answers
    assert not [p for a in answers for p in a if isinstance(p, wp.CPPayload)]
    assert _in_use(net) == {lease: "@west.example"}
    assert [str(x) for x in e.remote_vips] == [str(lease)]
    (new,) = e.children
    assert new is not old and new.remote_ts == old.remote_ts
    assert net.east.actions[n:] and net.children(net.west) and net.children(net.east)
    _no_internal_error(net)


# ================================================================== NAT-D and MOBIKE in IKE_AUTH
def test_nat_detection_and_mobike_notifies_in_ike_auth_change_nothing() -> None:
    """IKE_AUTH is not where NAT is detected (§2.23: IKE_SA_INIT) nor where MOBIKE moves
    anything (RFC 4555 §3.5: INFORMATIONAL, once MOBIKE is negotiated): forged NAT-D
    notifies (claiming a NAT), UPDATE_SA_ADDRESSES, ADDITIONAL_IP4_ADDRESS and COOKIE2
    in west's IKE_AUTH request leave east's IKE SA where and as it was, and east's
    Child SA is plain ESP between the two real addresses."""
    net = Net(west_kw={"mobike": True}, east_kw={"mobike": True, "left": "%any"})
    extra = [codec.notify(N.NAT_DETECTION_SOURCE_IP, b"\x55" * 20),
             codec.notify(N.NAT_DETECTION_DESTINATION_IP, b"\xaa" * 20),
             codec.notify(N.UPDATE_SA_ADDRESSES),
             codec.notify(N.ADDITIONAL_IP4_ADDRESS, ELSEWHERE.packed),
             codec.notify(N.COOKIE2, b"\x01" * 16)]
    _w, e, answer = _hostile_auth_request(net, lambda pl: [*pl[:-1], *extra, pl[-1]])
    assert answer is not None and e.established and e.mobike
    assert not e.nat_local and not e.nat_remote
    assert (e.local, e.remote) == (Endpoint(EAST, 500), Endpoint(WEST, 500))
    assert not [p for p in answer if isinstance(p, wp.NotifyPayload)
                and p.notify_type in (N.NAT_DETECTION_SOURCE_IP, N.COOKIE2)]
    (c,) = e.children
    assert (c.local_addr, c.remote_addr, c.encap) == (EAST, WEST, None)
    assert net.children(net.west) and net.children(net.east)
    _no_internal_error(net)


# ================================================================== pool memory, with requests
def test_clients_asking_for_addresses_do_not_grow_the_pool_for_ever() -> None:
    """§3.15.1 lets a client ask for a particular address, and a free one is granted.
    Clients that each ask for another address of an IPv6 /64 (new IDs, or ID_NULL whose
    lease is the IKE SA's) and go used to grow the pool's tables by one entry each, for
    ever: the address asked for skipped the ``LINGERING_MAX`` bound that never-used
    addresses obey (test_hostile_roadwarrior checks it without requests)."""
    t = poolmod.LeaseTable()
    spec = "2001:db8::/64"
    base = int(ipaddress.ip_address("2001:db8::"))
    for i in range(poolmod.LINGERING_MAX + 3000):
        want = ipaddress.ip_address(base + 0x1000_0000 + i * 7919)
        lease = t.acquire(spec, 6, ("sa", i), f"client {i}", want)
        assert lease is not None
        if i < 10:
            assert lease.addr == want  # granted while below the bound
        t.release(lease)
    p = t.pool(spec, 6)
    assert p is not None
    sizes = [len(p.lingering), len(p.by_key), len(p.owner_of), len(p.owner_text)]
    assert max(sizes) <= poolmod.LINGERING_MAX, sizes
    # a client that stays gets what it asked for while below the bound, and nothing
    # is ever leased twice
    live = [t.acquire(spec, 6, ("sa", -i), "x") for i in range(1, 50)]
    assert len({le.addr for le in live if le is not None}) == 49


def test_cfg_reply_in_create_child_sa_changes_nothing() -> None:
    """A gateway's CFG_REPLY in its CREATE_CHILD_SA answer (another address, other DNS
    servers): the client's address and DNS come from IKE_AUTH only (§2.19); the rekey
    goes through and nothing the client holds changes."""
    net = rw_net(modecfgdns="192.0.2.53")
    net.up()
    w = _ike(net.west)
    vips, dns = list(w.local_vips), list(w.dns)
    assert vips and dns
    lie = wp.CPPayload(CFGType.CFG_REPLY, [
        wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, ipaddress.ip_address("198.51.100.11").packed),
        wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, ipaddress.ip_address("192.0.2.66").packed)])
    seen: list[list[wp.Payload]] = []
    _add_to_create_child_sa(net.east, [lie], seen)
    (old,) = w.children
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert seen
    (new,) = w.children
    assert new is not old and new.local_ts == old.local_ts
    assert (list(w.local_vips), list(w.dns)) == (vips, dns)
    _no_internal_error(net)
