"""Red team 24: hand-built hostile messages on an established IKE SA, with its real keys.

What the other hostile files do not cover: RFC 7383 fragments after IKE_AUTH (message
IDs outside the window, Total Fragments changing, a huge total, authentic fragments
that reassemble to a malformed chain, fragments the SA never negotiated, response
fragments nobody asked for); CREATE_CHILD_SA lies (REKEY_SA naming no Child SA of
ours, nonces outside 16..256 octets, a KE group never proposed, IKE SPIs of the wrong
size, USE_TRANSPORT_MODE for a tunnel); INFORMATIONAL Deletes (AH for an ESP SPI, SPI
size 0, thousands of SPIs, an SPI named twice, an old message ID replayed); the I
flag and the exchange type lying; and the 32-bit message ID running out (RFC 7296
§2.2).  Each answer is the RFC's (a notify, or silence), and nothing else changes:
the SA still works after, nothing is installed, no internal error.
"""

from __future__ import annotations

import pytest

from pypluto.crypto import dh
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import codec, proposals
from pypluto.ike.actions import AddSA, Compute, DelSA, EventKind, FailReason, Log, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.child_delete import delete_children
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import Net
from .test_hostile_established import (
    _answer,
    _child_request,
    _east_request,
    _ike_rekey_request,
    _no_internal_error,
    _notify_types,
    _request,
    _respond,
    _setup,
)

INFO, CHILD = 37, 36


def _sends(acts: list) -> list[SendPacket]:
    return [a for a in acts if isinstance(a, SendPacket)]


def _still_works(net: Net, w: IKESA, e: IKESA) -> None:
    """The IKE SA answers the next request (an empty INFORMATIONAL), keeps its Child SA,
    holds no fragments, and the engine's index is just it."""
    assert _answer(w, _request(net, w, INFO, [])) == []
    assert net.east.engine.by_serial == {e.serial: e} and len(e.children) == 1
    assert net.east.engine.tm.frag_bytes == 0 and e.fragments is None
    assert e.next_in == w.next_out
    _no_internal_error(net.east)


# ================================================================== RFC 7383 fragments
def _payloads() -> list[wp.Payload]:
    """An INFORMATIONAL request body big enough to be cut in a few fragments."""
    return [codec.notify(N.COOKIE2, b"c" * 40), *(codec.vendor(bytes([i]) * 60)
                                                   for i in range(4))]


def _fragments(w: IKESA, msgid: int, *, total: int | None = None, plain: bytes | None = None,
               first: int | None = None, response: bool = False, count: int = 3,
               exchange: int = INFO) -> list[bytes]:
    """Authentic SKF fragments (west's keys) of INFORMATIONAL ``msgid``: the plaintext of
    ``_payloads()`` (or ``plain``) cut in ``count`` pieces, each claiming ``total``."""
    f, text = wm.serialize_payloads(_payloads())
    text = text if plain is None else plain
    first = f if first is None else first
    size = -(-len(text) // count)
    chunks = [text[i:i + size] for i in range(0, len(text), size)]
    assert w.prot_out is not None
    out = []
    for n, chunk in enumerate(chunks, 1):
        blen = w.prot_out.body_length(len(chunk))
        skf = wp.SKFPayload(first if n == 1 else 0, n, total or len(chunks), bytes(blen))
        raw = wm.Message(w.spi_i, w.spi_r, exchange, w.initiator, response, msgid,
                         [skf]).serialize()
        aad = raw[:len(raw) - blen]
        out.append(aad + w.prot_out.encrypt(aad, chunk))
    return out


def _deliver(net: Net, w: IKESA, datas: list[bytes]) -> list:
    acts: list = []
    for d in datas:
        a = net.east.engine.receive(d, w.remote, w.local, net.now)
        net.apply(net.east, a)
        acts += a
    return acts


def test_fragmented_request_after_ike_auth_is_answered() -> None:
    """Control: the fragments of the expected request are reassembled and answered."""
    net, w, e = _setup()
    assert w.frag_ok and e.frag_ok
    acts = _deliver(net, w, _fragments(w, w.next_out))
    w.next_out += 1
    assert _notify_types(_answer(w, acts)) == [N.COOKIE2]
    _still_works(net, w, e)


@pytest.mark.parametrize("ahead", [1, 3, 0x7FFFFFFF])
def test_fragments_ahead_of_the_window_are_not_held(ahead: int) -> None:
    """RFC 7296 §2.3 / RFC 7383 §2.6: only the message ID the window expects is
    collected; authentic fragments of a later one are dropped, never buffered."""
    net, w, e = _setup()
    acts = _deliver(net, w, _fragments(w, w.next_out + ahead))
    assert not _sends(acts)
    assert net.east.engine.tm.frag_bytes == 0 and e.fragments is None
    _still_works(net, w, e)


def test_authentic_fragments_changing_their_total() -> None:
    """RFC 7383 §2.6.2: a fragment with a smaller Total Fragments than those held is
    dropped; one with a larger total starts the reassembly again.  Here the peer
    resends the message cut in more pieces: it is answered once, from the new set."""
    net, w, e = _setup()
    mid = w.next_out
    w.next_out += 1
    three = _fragments(w, mid, count=3)
    _deliver(net, w, three[:1])
    held = net.east.engine.tm.frag_bytes
    assert held > 0
    assert not _sends(_deliver(net, w, _fragments(w, mid, count=3, total=2)[1:2]))
    assert net.east.engine.tm.frag_bytes == held  # the smaller total was not taken
    five = _fragments(w, mid, count=5)
    acts = _deliver(net, w, [five[1]])  # replaces fragment 1 of 3
    assert not _sends(acts) and e.fragments is not None and e.fragments.total == 5
    assert not _sends(_deliver(net, w, three[1:]))  # the old set's rest: total 3 < 5
    acts = _deliver(net, w, [five[0], *five[2:]])
    assert _notify_types(_answer(w, acts)) == [N.COOKIE2]
    _still_works(net, w, e)


def test_authentic_fragments_of_another_exchange_type_are_not_joined() -> None:
    """RFC 7383 §2.5: every fragment of a message carries that message's IKE header.
    Authentic fragments of the expected message ID but of another exchange type
    (CREATE_CHILD_SA in the middle of an INFORMATIONAL's) are not part of the set: the
    set is not completed with them, and the held fragments are not evicted."""
    net, w, e = _setup()
    mid = w.next_out
    w.next_out += 1
    info = _fragments(w, mid)
    child = _fragments(w, mid, exchange=CHILD)
    assert not _sends(_deliver(net, w, info[:1]))
    held = net.east.engine.tm.frag_bytes
    assert not _sends(_deliver(net, w, child[1:]))  # would complete a set of 3
    assert net.east.engine.tm.frag_bytes == held and e.fragments is not None
    assert sorted(e.fragments.parts) == [1]
    acts = _deliver(net, w, info[1:])
    assert _notify_types(_answer(w, acts)) == [N.COOKIE2]
    _still_works(net, w, e)


def test_authentic_fragment_claiming_65535_fragments_is_not_held() -> None:
    """Memory stays bounded: a total over the cap is dropped (and counted) before
    anything is kept, and the real set still completes."""
    net, w, e = _setup()
    mid = w.next_out
    w.next_out += 1
    tm = net.east.engine.tm
    dropped = tm.frag_dropped
    assert not _sends(_deliver(net, w, _fragments(w, mid, total=65535)[:2]))
    assert tm.frag_bytes == 0 and e.fragments is None and tm.frag_dropped == dropped + 2
    acts = _deliver(net, w, _fragments(w, mid))
    assert _notify_types(_answer(w, acts)) == [N.COOKIE2]
    _still_works(net, w, e)


@pytest.mark.parametrize("what", ["truncated", "first-none", "inner-sk"])
def test_authentic_fragments_of_a_malformed_chain(what: str) -> None:
    """Each fragment authenticates, the reassembled chain is malformed (cut short,
    fragment 1 naming no payload, an SK payload inside): INVALID_SYNTAX (RFC 7296
    §2.21.2), and the established IKE SA stays as it was."""
    net, w, e = _setup()
    first, text = wm.serialize_payloads(_payloads())
    kw: dict = {"truncated": {"plain": text[:-3]},
                "first-none": {"first": 0},
                "inner-sk": {"first": PT.SK}}[what]
    acts = _deliver(net, w, _fragments(w, w.next_out, **kw))
    w.next_out += 1
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    assert not [a for a in acts if isinstance(a, (AddSA, DelSA))]
    _still_works(net, w, e)


def test_response_fragments_nobody_asked_for_are_dropped() -> None:
    """Fragments flagged as a response for east's next message ID (no request of east
    is in flight): dropped before decryption, nothing held, nothing sent."""
    net, w, e = _setup()
    assert e.outstanding is None
    for mid in (e.next_out, e.next_out + 5):
        acts = _deliver(net, w, _fragments(w, mid, response=True))
        assert not _sends(acts)
        assert net.east.engine.tm.frag_bytes == 0 and e.fragments is None
    _still_works(net, w, e)


@pytest.mark.parametrize("west, east", [("no", "no"), ("yes", "no"), ("no", "yes")])
def test_fragments_when_fragmentation_was_not_negotiated(west: str, east: str) -> None:
    """RFC 7383 §2.3: without IKEV2_FRAGMENTATION_SUPPORTED from both ends (or with
    fragmentation=no) the peer must not fragment; its SKF messages are ignored, as
    Libreswan 5.2 does ("ignoring fragment as peer never proposed fragmentation").
    They used to be reassembled and acted on whatever east's fragmentation= said."""
    net = Net(west_kw={"fragmentation": west}, east_kw={"fragmentation": east})
    net.up()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert not w.frag_ok and not e.frag_ok and len(e.children) == 1
    mid = w.next_out
    acts = _deliver(net, w, _fragments(w, mid))
    assert not _sends(acts), "fragments were reassembled and answered"
    assert e.next_in == mid and net.east.engine.tm.frag_bytes == 0 and e.fragments is None
    # the same request unfragmented is answered
    assert _notify_types(_answer(w, _request(net, w, INFO, _payloads()))) == [N.COOKIE2]
    _still_works(net, w, e)


# ================================================================== CREATE_CHILD_SA
@pytest.mark.parametrize("which", ["unknown", "our-inbound", "as-ah"])
def test_rekey_sa_naming_no_child_sa_of_ours(which: str) -> None:
    """§2.25: CHILD_SA_NOT_FOUND, with the Protocol ID and SPI of the REKEY_SA copied
    into it; nothing is installed, the Child SA stays."""
    net, w, e = _setup()
    c = e.children[0]
    proto, spi = {"unknown": (ProtocolID.ESP, 0xDEADBEEF),
                  "our-inbound": (ProtocolID.ESP, c.spi_in),  # the SPI east picked
                  "as-ah": (ProtocolID.AH, c.spi_out)}[which]
    kernel = dict(net.east.kernel_sas)
    acts = _request(net, w, CHILD, _child_request(
        w, extra=[codec.notify(N.REKEY_SA, b"", proto, spi.to_bytes(4, "big"))]))
    ans = _answer(w, acts)
    assert _notify_types(ans) == [N.CHILD_SA_NOT_FOUND]
    assert ans is not None and (ans[0].protocol_id, bytes(ans[0].spi)) == \
        (proto, spi.to_bytes(4, "big"))
    assert not [a for a in acts if isinstance(a, AddSA)] and net.east.kernel_sas == kernel
    assert e.children == [c] and not c.peer_rekeys
    _still_works(net, w, e)


def test_rekey_of_a_child_sa_we_are_deleting_is_temporary_failure() -> None:
    """RFC 7296 §2.25.1: "If a peer receives a request to rekey a Child SA that it is
    currently trying to close, it SHOULD reply with TEMPORARY_FAILURE."  It was
    answered CHILD_SA_NOT_FOUND, on which a peer SHOULD create the Child SA again
    from scratch (§2.25): the Child SA being deleted would come back.  Nothing is
    installed, and the Delete in flight still completes."""
    net, w, e = _setup()
    c = e.children[0]
    msgid, _ = _east_request(net, w, delete_children(net.east.engine, e, [c], net.now))
    acts = _request(net, w, CHILD, _child_request(w, b"\x22\x33\x44\x55", extra=[
        codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, c.spi_out.to_bytes(4, "big"))]))
    assert _notify_types(_answer(w, acts)) == [N.TEMPORARY_FAILURE]
    assert not [a for a in acts if isinstance(a, AddSA)] and not c.peer_rekeys
    acts = _respond_info(net, w, msgid, [codec.delete(ProtocolID.ESP,
                                                      [c.spi_out.to_bytes(4, "big")])])
    assert len([a for a in acts if isinstance(a, DelSA)]) == 2
    assert not e.children and not net.east.kernel_sas
    assert net.east.engine.by_serial == {e.serial: e} and not net.east.engine.children_in
    _no_internal_error(net.east)


def _respond_info(net: Net, w: IKESA, msgid: int, payloads: list[wp.Payload]) -> list:
    return _deliver(net, w, net.west.engine.encode(w, INFO, True, msgid, payloads))


def test_ike_rekey_while_our_child_sa_exchange_is_in_flight() -> None:
    """§2.25.2: "If a peer receives a request to rekey the IKE SA, and it is currently
    creating, rekeying, or closing a Child SA of that IKE SA, it SHOULD reply with
    TEMPORARY_FAILURE": no new IKE SA, the Child SA stays where it is."""
    net, w, e = _setup()
    _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    acts = _request(net, w, CHILD, _ike_rekey_request(w, b"\x01" * 8))
    assert _notify_types(_answer(w, acts)) == [N.TEMPORARY_FAILURE]
    assert net.east.engine.by_serial == {e.serial: e} and not e.peer_rekeys
    assert e.outstanding is not None and len(e.children) == 1  # ours still in flight
    _no_internal_error(net.east)


def _with_nonce(payloads: list[wp.Payload], size: int) -> list[wp.Payload]:
    """The request with a Nonce of ``size`` octets (written raw: our encoder refuses)."""
    return [wp.UnknownPayload(PT.NONCE, b"n" * size) if isinstance(p, wp.NoncePayload) else p
            for p in payloads]


@pytest.mark.parametrize("size, ok", [(0, False), (15, False), (16, True), (256, True),
                                      (257, False), (1000, False)])
@pytest.mark.parametrize("kind", ["child", "ike"])
def test_nonce_size_in_create_child_sa(kind: str, size: int, ok: bool) -> None:
    """RFC 7296 §3.9: Nonce Data is 16 to 256 octets; any other is INVALID_SYNTAX and
    makes neither a Child SA nor an IKE SA."""
    net, w, e = _setup()
    req = _child_request(w) if kind == "child" else _ike_rekey_request(w, b"\x01" * 8)
    acts = _request(net, w, CHILD, _with_nonce(req, size))
    ans = _answer(w, acts)
    if ok:
        assert ans is not None and isinstance(ans[0], wp.SAPayload)
        return
    assert _notify_types(ans) == [N.INVALID_SYNTAX]
    assert not [a for a in acts if isinstance(a, AddSA)]
    _still_works(net, w, e)


@pytest.mark.parametrize("group", [2, 5, 0, 9999])
def test_ike_rekey_with_a_ke_group_never_proposed(group: int) -> None:
    """§1.2/§1.3.2: INVALID_KE_PAYLOAD naming a group our proposals accept; no new IKE SA."""
    net, w, e = _setup()
    req = _ike_rekey_request(w, b"\x01" * 8)
    req[2] = wp.KEPayload(group=group, data=b"\x01" * 32)
    ans = _answer(w, _request(net, w, CHILD, req))
    assert _notify_types(ans) == [N.INVALID_KE_PAYLOAD]
    assert ans is not None
    ours = {int(g) for s in proposals.ike_specs(e.conn.ike) for g in s.ke}
    assert int.from_bytes(bytes(ans[0].data), "big") in ours
    _still_works(net, w, e)


@pytest.mark.parametrize("what", ["long", "short", "zero"])
@pytest.mark.parametrize("kind", ["child", "ike"])
def test_malformed_ke_value_of_the_proposed_group(kind: str, what: str) -> None:
    """A KE payload of the group the proposal names whose value is malformed (7
    octets too long, one short, all zero: not a point of the curve): INVALID_SYNTAX,
    as in IKE_SA_INIT.  The IKE SA rekey answered INVALID_KE_PAYLOAD naming the very
    group the peer had used, which asks it to retry with the same broken KE (§1.2:
    INVALID_KE_PAYLOAD names the group the responder wants instead)."""
    net, w, e = _setup()
    g = w.ke_group
    pub = dh.initiator_ke(g).public
    data = {"long": pub + bytes(7), "short": pub[:-1], "zero": bytes(len(pub))}[what]
    req = _child_request(w) if kind == "child" else _ike_rekey_request(w, b"\x01" * 8)
    req = [wp.KEPayload(group=g, data=data) if isinstance(p, wp.KEPayload) else p
           for p in req]
    acts = _request(net, w, CHILD, req)
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    assert not [a for a in acts if isinstance(a, AddSA)]
    _still_works(net, w, e)


@pytest.mark.parametrize("spi, answer", [(b"\x01\x02\x03\x04", N.INVALID_SYNTAX),
                                         (b"", N.NO_PROPOSAL_CHOSEN)])
def test_ike_rekey_with_an_spi_of_the_wrong_size(spi: bytes, answer: int) -> None:
    """§3.3.1: in a rekey the IKE SPI is 8 octets: 4 is malformed (the proposal
    parser's INVALID_SYNTAX), 0 (as in IKE_SA_INIT) gives no usable proposal."""
    net, w, e = _setup()
    sent = proposals.build_proposals(proposals.ike_specs(w.conn.ike), ProtocolID.IKE, spi,
                                     ike=True)
    req = [codec.sa(sent), codec.nonce(b"r" * 32),
           codec.ke(w.ke_group, dh.initiator_ke(w.ke_group).public)]
    assert _notify_types(_answer(w, _request(net, w, CHILD, req))) == [answer]
    _still_works(net, w, e)


@pytest.mark.parametrize("rekey", [False, True])
def test_use_transport_mode_for_a_tunnel_conn(rekey: bool) -> None:
    """§1.3.1: a responder that does not do transport mode answers without
    USE_TRANSPORT_MODE and makes a tunnel-mode SA; the mode never switches silently."""
    net, w, e = _setup()
    assert e.conn.type == "tunnel"
    old = e.children[0]
    extra: list[wp.Payload] = [codec.notify(N.USE_TRANSPORT_MODE)]
    if rekey:
        extra.append(codec.notify(N.REKEY_SA, b"", ProtocolID.ESP,
                                  old.spi_out.to_bytes(4, "big")))
    acts = _request(net, w, CHILD, _child_request(w, b"\x22\x33\x44\x55", extra=extra))
    ans = _answer(w, acts)
    assert ans is not None and isinstance(ans[0], wp.SAPayload)
    assert N.USE_TRANSPORT_MODE not in _notify_types(ans)
    added = [a.sa for a in acts if isinstance(a, AddSA)]
    assert added and all(s.mode == "tunnel" for s in added)
    assert all(c.mode == "tunnel" for c in e.children) and len(e.children) == 2
    _no_internal_error(net.east)


# ================================================================== INFORMATIONAL Deletes
def test_delete_of_our_esp_spi_as_ah_deletes_nothing() -> None:
    """§3.11: the Protocol ID is part of the name; an AH Delete of the ESP SA's SPI
    names no SA of ours: an answer naming no SPI, nothing deleted."""
    net, w, e = _setup()
    c = e.children[0]
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.AH, [c.spi_out.to_bytes(4, "big")])])
    assert _answer(w, acts) == [codec.delete(ProtocolID.AH, [])]
    assert not [a for a in acts if isinstance(a, DelSA)] and e.children == [c]
    _still_works(net, w, e)


@pytest.mark.parametrize("count", [0, 5])
def test_esp_delete_with_spi_size_zero(count: int) -> None:
    """§3.11: an ESP Delete has 4-octet SPIs; SPI size 0 is INVALID_SYNTAX."""
    net, w, e = _setup()
    acts = _request(net, w, INFO, [wp.UnknownPayload(PT.DELETE, bytes([3, 0, 0, count]))])
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    _still_works(net, w, e)


def test_delete_with_thousands_of_spis() -> None:
    """15,000 SPIs of which one is ours: that one Child SA goes, the answer names its
    inbound SPI once, nothing else."""
    net, w, e = _setup()
    c = e.children[0]
    spis = [(0x1000 + i).to_bytes(4, "big") for i in range(15000)]
    spis.insert(7000, c.spi_out.to_bytes(4, "big"))
    ans = _answer(w, _request(net, w, INFO, [codec.delete(ProtocolID.ESP, spis)]))
    assert ans is not None and len(ans) == 1 and isinstance(ans[0], wp.DeletePayload)
    assert [bytes(s) for s in ans[0].spis] == [c.spi_in.to_bytes(4, "big")]
    assert not e.children and not net.east.kernel_sas
    assert net.east.engine.by_serial == {e.serial: e}
    _no_internal_error(net.east)


def test_delete_naming_an_spi_twice_is_answered_once() -> None:
    """The same SPI three times in one Delete and again in a second: the Child SA is
    deleted once and the answer names its inbound SPI once (§1.4.1: the response
    names the SAs deleted).  It used to name it four times and log four deletions."""
    net, w, e = _setup()
    c = e.children[0]
    spi = c.spi_out.to_bytes(4, "big")
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.ESP, [spi] * 3),
                                   codec.delete(ProtocolID.ESP, [spi])])
    ans = _answer(w, acts)
    assert ans is not None
    named = [bytes(s) for p in ans if isinstance(p, wp.DeletePayload) for s in p.spis]
    assert named == [c.spi_in.to_bytes(4, "big")]
    assert len([a for a in acts if isinstance(a, DelSA)]) == 2  # in and out, once
    assert len([a for a in acts if isinstance(a, Log) and
                a.message == "received Delete SA payload: deleting Child SA"]) == 1
    assert not e.children and not net.east.kernel_sas
    _no_internal_error(net.east)


def test_replayed_older_request_is_dropped() -> None:
    """§2.1/§2.3: a request older than the last one answered is neither answered nor
    acted on (only the last one's cached answer is ever resent)."""
    net, w, e = _setup()
    old = w.next_out
    assert _answer(w, _request(net, w, INFO, [])) == []
    assert _answer(w, _request(net, w, INFO, [])) == []
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.IKE, [])], msgid=old)
    assert not _sends(acts)
    _still_works(net, w, e)


# ================================================================== flags and message IDs
def test_request_with_the_wrong_initiator_flag_is_dropped() -> None:
    """§3.1: the I flag says who made the IKE SA; a message lying about it (here a
    Delete of the IKE SA) is dropped unanswered."""
    net, w, e = _setup()
    assert w.prot_out is not None
    data = wm.encode_sk_message(spi_i=w.spi_i, spi_r=w.spi_r, exchange=INFO,
                                initiator=not w.initiator, response=False,
                                message_id=w.next_out,
                                inner=[codec.delete(ProtocolID.IKE, [])],
                                protector=w.prot_out)
    assert not _sends(_deliver(net, w, [data]))
    _still_works(net, w, e)


def test_response_of_another_exchange_type_keeps_our_request() -> None:
    """An authentic INFORMATIONAL "response" with the message ID of east's
    CREATE_CHILD_SA in flight is dropped; the request stays outstanding and the real
    answer still completes it."""
    net, w, e = _setup()
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    o = e.outstanding
    assert o is not None and o.msgid == msgid
    data = net.west.engine.encode(w, INFO, True, msgid, [])
    acts = _deliver(net, w, data)
    assert e.outstanding is o and not [a for a in acts if isinstance(a, (AddSA, DelSA))]
    sa = codec.first(req, wp.SAPayload)
    ke = codec.first(req, wp.KEPayload)
    assert sa is not None and ke is not None
    out_ke, _ = dh.responder_ke(ke.group, bytes(ke.data))
    seen: set[int] = set()
    ts = [t for t in sa.proposals[0].transforms if not (t.type in seen or seen.add(t.type))]
    answer = [wp.SAPayload(proposals=[wp.Proposal(number=sa.proposals[0].number,
                                                  protocol_id=sa.proposals[0].protocol_id,
                                                  spi=b"\x11\x22\x33\x44", transforms=ts)]),
              codec.nonce(b"a" * 32), codec.ke(ke.group, out_ke),
              codec.first(req, wp.TSPayload, PT.TSi), codec.first(req, wp.TSPayload, PT.TSr)]
    acts = _respond(net, w, msgid, answer)  # type: ignore[arg-type]
    assert any(isinstance(a, AddSA) and a.sa.spi == 0x11223344 for a in acts)
    assert e.outstanding is None or e.outstanding.msgid != msgid
    _no_internal_error(net.east)


def test_peer_request_with_the_last_message_id() -> None:
    """The peer's request with message ID 0xFFFFFFFF (the last one, §2.2) is answered;
    a request with a wrapped ID 0 afterwards is outside the window and dropped."""
    net, w, e = _setup()
    e.next_in = w.next_out = 0xFFFFFFFF
    assert _answer(w, _request(net, w, INFO, [])) == []
    assert e.next_in == 0x100000000
    assert not _sends(_request(net, w, INFO, [codec.delete(ProtocolID.IKE, [])], msgid=0))
    assert net.east.engine.by_serial == {e.serial: e} and len(e.children) == 1
    _no_internal_error(net.east)


def test_our_message_ids_running_out_close_the_sa_cleanly() -> None:
    """RFC 7296 §2.2: the IKE SA must not wrap its message IDs.  East's last ID
    (0xFFFFFFFF) goes to a liveness probe; the next probe has no ID left.  That probe,
    sent by the fast path, used to raise struct.error ("internal error in timer");
    now it takes the general path, which closes the IKE SA as a local failure."""
    net = Net(west_kw={"dpddelay": 10, "dpdtimeout": 30},
              east_kw={"dpddelay": 10, "dpdtimeout": 30})
    net.up()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    e.next_out = w.next_in = 0xFFFFFFFF
    for _ in range(4):
        net.advance(11)
    assert not net.east.engine.by_serial and not net.east.kernel_sas
    assert not any("internal error" in m for m in net.east.logs()), net.east.logs()
    assert any("cannot send INFORMATIONAL" in m for m in net.east.logs())
    assert any(ev.kind is EventKind.FAILED and ev.reason is FailReason.LOCAL
               for ev in net.east.events)
    assert not net.east.engine.children_in and not net.east.engine.children_out


@pytest.mark.parametrize("second", ["create-child", "empty-informational"])
def test_next_request_before_our_offloaded_answer_is_dropped(second: str) -> None:
    """§2.3: the window is 1.  With offloaded crypto (the daemon's helpers) the answer
    to a CREATE_CHILD_SA waits for its DH while ``next_in`` has moved on; a peer
    sending its next request before that answer got it answered first, then the
    late answer sent ``next_in`` back, so a retransmit of the second request was
    processed again (a second Child SA, another answer than the first, §2.1).  The
    early request (also an empty INFORMATIONAL, which the liveness fast path took)
    is now dropped; sent again after the answer it is processed once."""
    net, w, e = _setup()
    eng = net.east.engine
    eng.settings.offload_crypto = True
    m1 = w.next_out
    first = _request(net, w, CHILD, _child_request(w, b"\x21\x00\x00\x01"))
    (job,) = [a for a in first if isinstance(a, Compute)]
    assert e.next_in == m1 + 1

    def again() -> list:
        if second == "create-child":
            return _request(net, w, CHILD, _child_request(w, b"\x21\x00\x00\x02"), msgid=m1 + 1)
        return _request(net, w, INFO, [], msgid=m1 + 1)

    early = again()
    assert not _sends(early) and not [a for a in early if isinstance(a, Compute)]
    assert e.next_in == m1 + 1 and (e.last_response is None or e.last_response[0] < m1)
    acts = eng.resume(job.token, job.job(), net.now)
    net.apply(net.east, acts)
    assert isinstance((_answer(w, acts) or [None])[0], wp.SAPayload)
    assert e.next_in == m1 + 1 and len(e.children) == 2
    acts = again()  # now in order
    for c in [a for a in acts if isinstance(a, Compute)]:
        more = eng.resume(c.token, c.job(), net.now)
        net.apply(net.east, more)
        acts += more
    answer = [a.data for a in _sends(acts)]
    assert answer and e.next_in == m1 + 2
    retransmit = again()
    assert [a.data for a in _sends(retransmit)] == answer  # the cached answer, §2.1
    assert not [a for a in retransmit if isinstance(a, (Compute, AddSA))]
    assert len(e.children) == (3 if second == "create-child" else 2)
    assert net.east.engine.by_serial == {e.serial: e}
    _no_internal_error(net.east)
