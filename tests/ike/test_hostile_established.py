"""A hostile but authenticated peer after IKE_AUTH (RFC 7296 §1.3-§1.4, §2.3, §3.3.1,
§3.11; RFC 4303 §2.1; RFC 4555 §3.6).

West holds the IKE SA's keys and lies: in CREATE_CHILD_SA and INFORMATIONAL requests
it sends east, and in the answers it gives to east's own rekeys.  East must answer
as the RFCs say (an error notify) or stay silent, never raise, and leave every other
SA and the data plane as they were.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from pypluto.crypto import dh
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import codec, proposals
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import AddSA, DelSA, Log, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.params import SAExpire
from pypluto.wire import payloads as wp

from .harness import Net, Side

Payloads = list[wp.Payload]


# ------------------------------------------------------------------ helpers
def _setup(**kw: object) -> tuple[Net, IKESA, IKESA]:
    net = Net(**kw)  # type: ignore[arg-type]
    net.up()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert w.established and e.established and len(e.children) == 1
    return net, w, e


def _request(net: Net, w: IKESA, exchange: int, payloads: Payloads,
             msgid: int | None = None, response: bool = False) -> list:
    """West's keys protect ``payloads``; east gets them (as a request by default)."""
    if msgid is None:
        msgid = w.next_out
        w.next_out += 1
    data = net.west.engine.encode(w, exchange, response, msgid, payloads)
    acts: list = []
    for d in data:
        a = net.east.engine.receive(d, w.remote, w.local, net.now)
        net.apply(net.east, a)
        acts += a
    return acts


def _answer(w: IKESA, acts: list) -> Payloads | None:
    """The decrypted payloads of east's (single) response among ``acts``, or None."""
    out = None
    for a in acts:
        if isinstance(a, SendPacket):
            m = codec.parse(a.data)
            if m.response:
                assert out is None and isinstance(m.sk, wp.SKPayload)
                out = codec.decrypt(m.sk, w.prot_in)
    return out


def _notify_types(payloads: Payloads | None) -> list[int]:
    assert payloads is not None, "no answer"
    return [int(p.notify_type) for p in payloads if isinstance(p, wp.NotifyPayload)]


def _no_internal_error(side: Side) -> None:
    assert not any("internal error" in m for m in side.logs())


def _added(acts: list) -> list:
    return [a for a in acts if isinstance(a, AddSA)]


def _child_request(w: IKESA, spi: bytes = b"\x12\x34\x56\x78", *, extra: Payloads = (),
                   tsi: list | None = None, tsr: list | None = None,
                   ke_group: int | None = None) -> Payloads:
    """A well-formed CREATE_CHILD_SA request for a new Child SA (PFS with the IKE
    SA's group, as the harness's conns have pfs=yes), then bent by the caller."""
    c = w.children[0]
    g = w.ke_group
    sa = codec.sa([(1, ProtocolID.ESP, spi, [(1, 20, 256), (4, g, None), (5, 0, None)])])
    ke = codec.ke(ke_group or g, dh.initiator_ke(ke_group or g).public)
    return [*extra, sa, codec.nonce(b"n" * 32), ke,
            codec.ts_payload(PT.TSi, tsi or c.local_ts), codec.ts_payload(PT.TSr, tsr or c.remote_ts)]


# ================================================================== CREATE_CHILD_SA requests
@pytest.mark.parametrize("spi", [0, 1, 255])
def test_new_child_with_a_reserved_esp_spi_is_refused(spi: int) -> None:
    """RFC 4303 §2.1: SPI 0 is never sent on the wire and 1..255 are reserved; an
    outbound SA with such an SPI is not installed."""
    net, w, e = _setup()
    acts = _request(net, w, 36, _child_request(w, spi.to_bytes(4, "big")))
    assert _notify_types(_answer(w, acts)) == [N.NO_PROPOSAL_CHOSEN]
    assert not _added(acts) and len(e.children) == 1
    assert not any(s.spi == spi for s in net.east.kernel_sas.values())
    _no_internal_error(net.east)


@pytest.mark.parametrize("which", ["outbound", "inbound"])
def test_new_child_reusing_an_spi_of_ours_is_refused(which: str) -> None:
    """The peer names the SPI of east's existing outbound SA (a second SA with the same
    destination, SPI and protocol would replace it in the data plane, XFRM UPDSA, and be
    deleted with it, RFC 4301 §4.1), or one of east's inbound SPIs (visible on the
    wire: the engine's and the daemon's SPI indexes would mix the two SAs)."""
    net, w, e = _setup()
    old = e.children[0]
    kernel = dict(net.east.kernel_sas)
    spi = old.spi_out if which == "outbound" else old.spi_in
    acts = _request(net, w, 36, _child_request(w, spi.to_bytes(4, "big")))
    assert _notify_types(_answer(w, acts)) == [N.NO_PROPOSAL_CHOSEN]
    assert not _added(acts)
    assert e.children == [old] and net.east.kernel_sas == kernel
    assert net.east.engine.children_out[old.spi_out] is old
    assert net.east.engine.children_in[old.spi_in] is old
    assert any("already in use by another SA" in a.message for a in acts if isinstance(a, Log))


def _two_ike_sas() -> tuple[Net, list[IKESA], IKESA]:
    """Two IKE SAs from the same address (as two clients behind one NAT): east's two, in
    order, and west's IKE SA of the second."""
    net = Net(west_settings=EngineSettings(uniqueids=False),
              east_settings=EngineSettings(uniqueids=False))
    net.up()
    net.apply(net.west, net.west.engine.initiate_ike(net.west.engine.connections["west-east"],
                                                     net.now))
    net.run()
    ikes = sorted(net.east.engine.by_serial.values(), key=lambda i: i.serial)
    assert len(ikes) == 2 and all(i.established and i.children for i in ikes)
    w2 = next(i for i in net.west.engine.by_serial.values() if i.spi_r == ikes[1].spi_r)
    return net, ikes, w2


def test_child_of_another_ike_sa_cannot_take_its_outbound_spi() -> None:
    """Two IKE SAs from the same address (as two clients behind one NAT): the second
    may not pick the outbound SPI of the first one's Child SA."""
    net, ikes, w2 = _two_ike_sas()
    victim = ikes[0].children[0]
    acts = _request(net, w2, 36, _child_request(w2, victim.spi_out.to_bytes(4, "big")))
    assert _notify_types(_answer(w2, acts)) == [N.NO_PROPOSAL_CHOSEN]
    assert not _added(acts)
    assert victim.remote_addr == w2.local.addr  # the same peer address
    assert net.east.kernel_sas[(victim.remote_addr, victim.spi_out)].serial == victim.serial
    assert net.east.engine.children_out[victim.spi_out] is victim


def test_rekey_sa_naming_a_child_of_another_ike_sa() -> None:
    """REKEY_SA (and Delete) only ever name Child SAs of the IKE SA they arrive on."""
    net, ikes, w2 = _two_ike_sas()
    victim = ikes[0].children[0]
    theirs = victim.spi_out.to_bytes(4, "big")  # west's inbound SPI of the victim
    acts = _request(net, w2, 36, _child_request(
        w2, extra=[codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, theirs)]))
    assert _notify_types(_answer(w2, acts)) == [N.CHILD_SA_NOT_FOUND]
    assert not _added(acts)
    acts = _request(net, w2, 37, [codec.delete(ProtocolID.ESP, [theirs])])
    # nothing of this IKE SA was deleted: the answer's Delete names no SPI
    assert _answer(w2, acts) == [codec.delete(ProtocolID.ESP, [])]
    assert not [a for a in acts if isinstance(a, DelSA)]
    assert victim in ikes[0].children and not victim.peer_rekeys and not victim.replaced
    _no_internal_error(net.east)


@pytest.mark.parametrize("what", ["other-family", "start-after-end"])
def test_bad_traffic_selectors_are_refused(what: str) -> None:
    net, w, e = _setup()
    c = w.children[0]
    if what == "other-family":
        ts = [tsmod.from_network(ipaddress.ip_network("2001:db8::/64"))]
    else:
        ts = [c.local_ts[0]._replace(start=c.local_ts[0].end, end=c.local_ts[0].start)]
    acts = _request(net, w, 36, _child_request(w, tsi=ts, tsr=ts if what == "other-family"
                                               else None))
    assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
    assert not _added(acts) and len(e.children) == 1


def test_ke_of_another_group_than_the_proposal() -> None:
    net, w, e = _setup()
    acts = _request(net, w, 36, _child_request(w, ke_group=14))  # proposal says w.ke_group
    assert _notify_types(_answer(w, acts)) == [N.INVALID_KE_PAYLOAD]
    assert not _added(acts) and len(e.children) == 1


def _ike_rekey_request(w: IKESA, spi: bytes) -> Payloads:
    sent = proposals.build_proposals(proposals.ike_specs(w.conn.ike), ProtocolID.IKE, spi,
                                     ike=True)
    return [codec.sa(sent), codec.nonce(b"r" * 32),
            codec.ke(w.ke_group, dh.initiator_ke(w.ke_group).public)]


def test_ike_rekey_with_a_zero_spi_is_refused() -> None:
    """RFC 7296 §3.1/§3.3.1: the new IKE SA's SPI is 8 octets and never zero."""
    net, w, e = _setup()
    acts = _request(net, w, 36, _ike_rekey_request(w, bytes(8)))
    assert _notify_types(_answer(w, acts)) == [N.NO_PROPOSAL_CHOSEN]
    assert list(net.east.engine.by_serial.values()) == [e] and e.children
    _no_internal_error(net.east)


# ================================================================== INFORMATIONAL requests
def _spi8(spi: bytes) -> bytes:
    return bytes([3, 8, 0, 1]) + spi + spi  # ESP with an 8-octet SPI


@pytest.mark.parametrize("body", [
    _spi8,
    lambda spi: bytes([3, 4, 0, 3]) + spi,  # num_spi says 3, one SPI follows
    lambda spi: bytes([3, 4, 0, 0]) + spi,  # num_spi says 0, one SPI follows
    lambda spi: bytes([0, 4, 0, 1]) + spi,  # protocol 0
    lambda spi: bytes([4, 4, 0, 1]) + spi,  # protocol 4
    lambda spi: bytes([255, 4, 0, 1]) + spi,  # protocol 255
    lambda spi: bytes([1, 8, 0, 1]) + bytes(8),  # the IKE SA, with an SPI
], ids=["spi8", "count-over", "count-under", "proto0", "proto4", "proto255", "ike-spi"])
def test_malformed_delete_is_invalid_syntax(body: Callable[[bytes], bytes]) -> None:
    """§3.11 lies about the SPI size, the count or the protocol, naming the real
    Child SA: INVALID_SYNTAX (the codec's typed error), and nothing is deleted."""
    net, w, e = _setup()
    child = e.children[0]
    acts = _request(net, w, 37, [wp.UnknownPayload(PT.DELETE,
                                                   body(child.spi_out.to_bytes(4, "big")))])
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    assert e.children == [child] and net.east.engine.by_serial == {e.serial: e}
    assert e.next_in == w.next_out  # answered: the window moved on
    _no_internal_error(net.east)


def test_delete_of_the_ike_sa_with_child_spis() -> None:
    """§1.4.1: a Delete of the IKE SA takes its Child SAs with it; one empty answer."""
    net, w, e = _setup()
    spi = e.children[0].spi_out.to_bytes(4, "big")
    acts = _request(net, w, 37, [codec.delete(ProtocolID.ESP, [spi, spi]),
                                 codec.delete(ProtocolID.IKE, [])])
    assert _answer(w, acts) == []
    assert not net.east.engine.by_serial and not net.east.kernel_sas
    _no_internal_error(net.east)


def test_unknown_critical_payload_in_informational() -> None:
    """§2.5: UNSUPPORTED_CRITICAL_PAYLOAD naming the type; nothing else happens."""
    net, w, e = _setup()
    spi = e.children[0].spi_out.to_bytes(4, "big")
    acts = _request(net, w, 37, [codec.delete(ProtocolID.ESP, [spi]),
                                 wp.UnknownPayload(200, b"junk", critical=True)])
    ans = _answer(w, acts)
    assert _notify_types(ans) == [N.UNSUPPORTED_CRITICAL_PAYLOAD]
    assert ans is not None and bytes(ans[0].data) == bytes([200])
    assert len(e.children) == 1 and not [a for a in acts if isinstance(a, DelSA)]


def test_cookie2_out_of_range_is_not_echoed() -> None:
    """RFC 4555 §3.6: COOKIE2 is 8 to 64 octets; another one is ignored, not echoed."""
    net, w, e = _setup()
    for size, echoed in ((7, False), (8, True), (64, True), (65, False), (900, False)):
        acts = _request(net, w, 37, [codec.notify(N.COOKIE2, b"c" * size)])
        got = _answer(w, acts)
        assert got is not None
        assert (N.COOKIE2 in _notify_types(got)) is echoed, size


def test_nat_detection_outside_update_sa_addresses_changes_nothing() -> None:
    net, w, e = _setup()
    before = (e.local, e.remote, e.nat_local, e.nat_remote)
    acts = _request(net, w, 37, [codec.notify(N.NAT_DETECTION_SOURCE_IP, b"x" * 20),
                                 codec.notify(N.NAT_DETECTION_DESTINATION_IP, b"y" * 20)])
    assert _answer(w, acts) == []
    assert (e.local, e.remote, e.nat_local, e.nat_remote) == before


# ================================================================== message IDs
@pytest.mark.parametrize("msgid", ["ahead", 0xFFFFFFFF])
def test_request_outside_the_window_is_dropped(msgid: object) -> None:
    net, w, e = _setup()
    mid = w.next_out + 5 if msgid == "ahead" else int(msgid)  # type: ignore[call-overload]
    acts = _request(net, w, 37, [codec.delete(ProtocolID.IKE, [])], msgid=mid)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert net.east.engine.by_serial == {e.serial: e} and e.next_in == w.next_out


def test_response_to_a_request_never_sent_is_dropped() -> None:
    net, w, e = _setup()
    assert e.outstanding is None
    acts = _request(net, w, 37, [codec.delete(ProtocolID.IKE, [])], msgid=e.next_out,
                    response=True)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert net.east.engine.by_serial == {e.serial: e} and len(e.children) == 1


def test_retransmit_with_other_content_gets_the_cached_answer() -> None:
    """§2.1: a request with the message ID just answered is a retransmission: the
    cached answer goes back and the (different) content is not acted on."""
    net, w, e = _setup()
    mid = w.next_out
    first = _answer(w, _request(net, w, 37, [], msgid=mid))
    w.next_out = mid + 1
    acts = _request(net, w, 37, [codec.delete(ProtocolID.IKE, [])], msgid=mid)
    assert first == [] and _answer(w, acts) == []
    assert net.east.engine.by_serial == {e.serial: e} and len(e.children) == 1


# ================================================================== lying answers to our rekeys
def _east_request(net: Net, w: IKESA, acts: list) -> tuple[int, Payloads]:
    net.apply(net.east, acts)
    (pkt,) = [a for a in acts if isinstance(a, SendPacket)]
    net.queue.clear()
    m = codec.parse(pkt.data)
    assert isinstance(m.sk, wp.SKPayload)
    return m.message_id, codec.decrypt(m.sk, w.prot_in)


def _respond(net: Net, w: IKESA, msgid: int, payloads: Payloads) -> list:
    acts: list = []
    for d in net.west.engine.encode(w, 36, True, msgid, payloads):
        a = net.east.engine.receive(d, w.remote, w.local, net.now)
        net.apply(net.east, a)
        acts += a
    return acts


def _one_of_each(pr: wp.Proposal, spi: bytes) -> wp.SAPayload:
    seen: set[int] = set()
    ts = []
    for t in pr.transforms:
        if t.type not in seen:
            seen.add(t.type)
            ts.append(t)
    return wp.SAPayload(proposals=[wp.Proposal(number=pr.number, protocol_id=pr.protocol_id,
                                               spi=spi, transforms=ts)])


def _child_rekey_answer(req: Payloads, spi: bytes) -> Payloads:
    sa = codec.first(req, wp.SAPayload)
    ke = codec.first(req, wp.KEPayload)
    assert sa is not None and ke is not None
    out_ke, _ = dh.responder_ke(ke.group, bytes(ke.data))
    tsi, tsr = codec.first(req, wp.TSPayload, PT.TSi), codec.first(req, wp.TSPayload, PT.TSr)
    assert tsi is not None and tsr is not None
    return [_one_of_each(sa.proposals[0], spi), codec.nonce(b"a" * 32),
            codec.ke(ke.group, out_ke), tsi, tsr]


@pytest.mark.parametrize("which", ["reserved", "in-use"])
def test_rekey_answer_with_an_unusable_spi_is_refused(which: str) -> None:
    """East rekeys its Child SA; the answer names a reserved SPI or the outbound SPI
    of the very SA being rekeyed: nothing is installed, the old SA stays."""
    net, w, e = _setup()
    old = e.children[0]
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    spi = (7).to_bytes(4, "big") if which == "reserved" else old.spi_out.to_bytes(4, "big")
    kernel = dict(net.east.kernel_sas)
    acts = _respond(net, w, msgid, _child_rekey_answer(req, spi))
    assert not _added(acts)
    assert net.east.kernel_sas == kernel and old in e.children and not old.replaced
    assert any("CREATE_CHILD_SA failed" in a.message for a in acts if isinstance(a, Log))
    _no_internal_error(net.east)


def test_rekey_answer_control_is_installed() -> None:
    """The same forged answer with a fresh SPI is accepted (the tests above refuse
    only for the SPI)."""
    net, w, e = _setup()
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    acts = _respond(net, w, msgid, _child_rekey_answer(req, b"\x11\x22\x33\x44"))
    assert any(a.sa.spi == 0x11223344 for a in _added(acts))


def test_ike_rekey_answer_with_a_zero_spi_is_refused() -> None:
    net, w, e = _setup()
    msgid, req = _east_request(net, w, net.east.engine.rekey_ike("west-east", net.now))
    sa = codec.first(req, wp.SAPayload)
    ke = codec.first(req, wp.KEPayload)
    assert sa is not None and ke is not None
    out_ke, _ = dh.responder_ke(ke.group, bytes(ke.data))
    acts = _respond(net, w, msgid, [_one_of_each(sa.proposals[0], bytes(8)),
                                    codec.nonce(b"a" * 32), codec.ke(ke.group, out_ke)])
    assert list(net.east.engine.by_serial.values()) == [e] and e.children
    assert not any(i.spi_r == bytes(8) for i in net.east.engine.by_serial.values())
    assert any("rekey answer is not acceptable" in a.message for a in acts
               if isinstance(a, Log))


@pytest.mark.parametrize("group", [1, 2])
def test_invalid_ke_for_a_group_we_never_offered_is_not_followed_child(group: int) -> None:
    """§1.3/§2.7: INVALID_KE_PAYLOAD may only pick one of our groups; modp768/modp1024
    is not offered in a retry (a downgrade of the Child SA's PFS)."""
    net, w, e = _setup()
    msgid, _ = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    acts = _respond(net, w, msgid, [codec.notify(N.INVALID_KE_PAYLOAD,
                                                 group.to_bytes(2, "big"))])
    for a in acts:
        if isinstance(a, SendPacket):
            m = codec.parse(a.data)
            if m.exchange == 36:
                assert isinstance(m.sk, wp.SKPayload)
                ke = codec.first(codec.decrypt(m.sk, w.prot_in), wp.KEPayload)
                assert ke is None or ke.group != group
    assert not any("peer asks for KE group" in a.message for a in acts if isinstance(a, Log))
    _no_internal_error(net.east)


def test_invalid_ke_for_a_group_we_never_offered_is_not_followed_ike() -> None:
    net, w, e = _setup()
    msgid, _ = _east_request(net, w, net.east.engine.rekey_ike("west-east", net.now))
    acts = _respond(net, w, msgid, [codec.notify(N.INVALID_KE_PAYLOAD, (2).to_bytes(2, "big"))])
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert not e.rekeying and e.rekey_at is not None  # tried again later, as configured


def test_invalid_ke_for_an_offered_group_is_followed() -> None:
    """Control: a group of ours (the IKE proposals offer 14) is retried with."""
    net, w, e = _setup()
    assert 14 in {int(g) for s in proposals.ike_specs(e.conn.ike) for g in s.ke}
    msgid, _ = _east_request(net, w, net.east.engine.rekey_ike("west-east", net.now))
    acts = _respond(net, w, msgid, [codec.notify(N.INVALID_KE_PAYLOAD, (14).to_bytes(2, "big"))])
    (pkt,) = [a for a in acts if isinstance(a, SendPacket)]
    m = codec.parse(pkt.data)
    assert isinstance(m.sk, wp.SKPayload)
    ke = codec.first(codec.decrypt(m.sk, w.prot_in), wp.KEPayload)
    assert ke is not None and ke.group == 14


# ================================================================== kernel events
def test_expire_of_an_outbound_sa_is_matched_by_address() -> None:
    """The peer picks our outbound SPIs, so one may equal an inbound SPI of ours: an
    expire for (peer address, SPI) must not delete the inbound-SPI owner."""
    net = Net()
    net.up()
    (w,) = net.west.engine.by_serial.values()
    c = w.children[0]
    ev = SAExpire(dst=c.remote_addr, spi=c.spi_in, protocol="esp", hard=True, reason="bytes")
    acts = net.west.engine.sa_expired(ev, net.now)
    assert not acts and c in w.children
    ev = SAExpire(dst=c.local_addr, spi=c.spi_in, protocol="esp", hard=True, reason="bytes")
    assert net.west.engine.sa_expired(ev, net.now)  # the real one is acted on
