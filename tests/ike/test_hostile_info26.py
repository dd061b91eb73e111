"""Red team 26: INFORMATIONAL exchanges, Delete payloads, message IDs and the window
under hostile input (RFC 7296 §1.4, §1.5, §2.3, §2.21, §3.2, §3.10, §3.11).

What the other hostile files do not cover: the shape of the answer to a Child SA
Delete that deletes nothing (unknown SPIs, our own inbound SPI, our own Delete
crossing it: one Delete payload naming no SPI, which Libreswan 5.2 needs), more
malformed Delete headers, an unknown critical payload outside the SK payload and in
answers, unknown notify types and notifies lying about their SPI size,
SET_WINDOW_SIZE, forged packets against the retransmit cache, a Delete of the IKE SA
inside an answer, INFORMATIONAL requests before IKE_AUTH is done (to either end), a
Delete payload smuggled into CREATE_CHILD_SA to get past the window while an answer
is computed, and the cost of a Delete naming thousands of unknown SPIs.

The empty Delete payload: RFC 7296 §1.4.1 only forbids naming the SAs a crossing
Delete already removed, and §3.11 allows Num of SPIs 0; Libreswan 5.2 (ikev2_delete.c)
answers each Child SA Delete payload with one, empty or not, and fails the IKE SA
when the answer to its own has none.  strongSwan accepts either.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import codec
from pypluto.ike.actions import AddSA, DelSA, SendPacket
from pypluto.ike.sa import IKESA, ChildState
from pypluto.ike.tasks.child_delete import delete_children
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import Net
from .test_hostile_established import (
    _answer,
    _east_request,
    _no_internal_error,
    _notify_types,
    _request,
    _setup,
    _two_ike_sas,
)
from .test_hostile_redteam24 import _deliver, _respond_info, _sends, _still_works

INFO, CHILD = 37, 36


def _spi(v: int) -> bytes:
    return v.to_bytes(4, "big")


def _deletes(payloads: list[wp.Payload] | None) -> list[tuple[int, list[bytes]]]:
    assert payloads is not None, "no answer"
    return [(int(p.protocol_id), [bytes(s) for s in p.spis]) for p in payloads
            if isinstance(p, wp.DeletePayload)]


def _libreswan_accepts_child_delete_answer(payloads: list[wp.Payload] | None) -> bool:
    """Libreswan 5.2 (ikev2_delete.c, process_v2_INFORMATIONAL_v2DELETE_response): an
    answer to its Delete of a Child SA without a Delete payload is STF_FATAL, and its
    IKE SA goes; it never reads the SPIs of the ones there are."""
    return payloads is not None and any(isinstance(p, wp.DeletePayload) for p in payloads)


# ================================================================== the answer to a Delete
def test_delete_of_unknown_spis_is_answered_with_an_empty_delete_payload() -> None:
    """§1.4.1: SPIs of no SA of ours are ignored, the answer names none of ours.  It
    carried no Delete payload at all: a Libreswan 5.2 peer, whose Child SA this end
    no longer has (a Delete of ours lost, a local expiry), took that answer as fatal
    and dropped the whole IKE SA with every other Child SA.  Now one Delete payload,
    naming no SPI, answers each Child SA Delete payload, as Libreswan 5.2 answers."""
    net, w, e = _setup()
    c = e.children[0]
    ans = _answer(w, _request(net, w, INFO, [codec.delete(ProtocolID.ESP, [_spi(0x1000)]),
                                             codec.delete(ProtocolID.AH, [_spi(0x2000)])]))
    assert _deletes(ans) == [(ProtocolID.ESP, []), (ProtocolID.AH, [])]
    assert all(p.spi_size == 4 for p in ans or [] if isinstance(p, wp.DeletePayload))
    assert _libreswan_accepts_child_delete_answer(ans)
    assert e.children == [c]
    _still_works(net, w, e)


def test_delete_of_our_own_inbound_spi_deletes_nothing() -> None:
    """§3.11: a Delete names the SPI its sender expects inbound (our outbound SPI).
    Our own inbound SPI named instead is no SA of ours from the peer's side: nothing
    is deleted, the answer names no SPI."""
    net, w, e = _setup()
    c = e.children[0]
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.ESP, [_spi(c.spi_in)])])
    assert _deletes(_answer(w, acts)) == [(ProtocolID.ESP, [])]
    assert not [a for a in acts if isinstance(a, DelSA)] and e.children == [c]
    _still_works(net, w, e)


def test_delete_of_a_child_of_another_ike_sa_is_answered_and_ignored() -> None:
    """§1.4: Child SA control messages go under the IKE SA that made them.  A Delete
    on the second IKE SA naming the first one's Child SA (the same peer address)
    deletes nothing, and its answer still has the Delete payload Libreswan needs."""
    net, ikes, w2 = _two_ike_sas()
    victim = ikes[0].children[0]
    mine = ikes[1].children[0]
    acts = _request(net, w2, INFO, [codec.delete(ProtocolID.ESP, [_spi(victim.spi_out)]),
                                    codec.delete(ProtocolID.ESP, [_spi(mine.spi_out)])])
    assert _deletes(_answer(w2, acts)) == [(ProtocolID.ESP, []),
                                           (ProtocolID.ESP, [_spi(mine.spi_in)])]
    assert victim in ikes[0].children and victim.state is ChildState.ESTABLISHED
    assert {a.spi for a in acts if isinstance(a, DelSA)} == {mine.spi_in, mine.spi_out}
    assert net.east.engine.children_out[victim.spi_out] is victim
    _no_internal_error(net.east)


def test_crossing_delete_with_ours_lost_keeps_a_libreswan_peer_up() -> None:
    """§1.4.1: both ends delete the same Child SA and our Delete is lost.  The peer's
    Delete is answered without naming the SA ("MUST NOT include Delete payloads for
    the deleted SAs"), but with a Delete payload: Libreswan 5.2, which never got
    ours, still has the Child SA and would drop the IKE SA on an answer without one.
    Our own Delete's answer later completes ours; nothing is left."""
    net, w, e = _setup()
    c = e.children[0]
    msgid, req = _east_request(net, w, delete_children(net.east.engine, e, [c], net.now))
    assert _deletes(req) == [(ProtocolID.ESP, [_spi(c.spi_in)])]  # lost on its way
    assert c.state is ChildState.DELETING
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.ESP, [_spi(c.spi_out)])])
    ans = _answer(w, acts)
    assert _deletes(ans) == [(ProtocolID.ESP, [])]
    assert _libreswan_accepts_child_delete_answer(ans)
    assert not e.children and not net.east.kernel_sas
    assert e.outstanding is not None and e.outstanding.msgid == msgid
    _respond_info(net, w, msgid, [codec.delete(ProtocolID.ESP, [])])
    assert e.outstanding is None and net.east.engine.by_serial == {e.serial: e}
    assert not net.east.engine.children_in and not net.east.engine.children_out
    _no_internal_error(net.east)


def test_esp_delete_with_no_spis_deletes_nothing() -> None:
    """§3.11: an ESP Delete payload with Num of SPIs 0 (well-formed, empty): nothing
    deleted, an answer naming nothing."""
    net, w, e = _setup()
    acts = _request(net, w, INFO, [wp.UnknownPayload(PT.DELETE, bytes([3, 4, 0, 0]))])
    assert _deletes(_answer(w, acts)) == [(ProtocolID.ESP, [])]
    _still_works(net, w, e)


def test_two_deletes_of_the_ike_sa() -> None:
    """Two Delete payloads for the IKE SA: the IKE SA goes once, with an empty answer
    (Libreswan 5.2 answers INVALID_SYNTAX and drops its IKE SA as well; the RFC sets no
    rule, and either way the SA is gone)."""
    net, w, e = _setup()
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.IKE, []),
                                   codec.delete(ProtocolID.IKE, [])])
    assert _answer(w, acts) == []
    assert not net.east.engine.by_serial and not net.east.kernel_sas
    _no_internal_error(net.east)


@pytest.mark.parametrize("body", [
    lambda spi: bytes([1, 4, 0, 0]),  # the IKE SA, SPI size 4, no SPI
    lambda spi: bytes([1, 0, 0, 1]),  # the IKE SA, SPI size 0, one SPI claimed
    lambda spi: bytes([2, 8, 0, 1]) + spi + spi,  # AH with an 8-octet SPI
    lambda spi: bytes([3, 4, 0, 1]) + spi + b"\0\0",  # two stray octets
    lambda spi: bytes([3, 4, 0xFF, 0xFF]) + spi,  # 65535 SPIs claimed
    lambda spi: bytes([3, 4, 0]),  # header cut short
], ids=["ike-size4", "ike-count1", "ah-size8", "trailing", "count-65535", "short"])
def test_more_malformed_deletes_are_invalid_syntax(body: Callable[[bytes], bytes]) -> None:
    """§3.11 (beside test_hostile_established's cases): INVALID_SYNTAX, the Child SA
    named stays, and the IKE SA goes on."""
    net, w, e = _setup()
    c = e.children[0]
    acts = _request(net, w, INFO, [wp.UnknownPayload(PT.DELETE, body(_spi(c.spi_out)))])
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    assert e.children == [c] and not [a for a in acts if isinstance(a, DelSA)]
    _still_works(net, w, e)


def test_delete_of_the_ike_sa_inside_an_answer_is_ignored() -> None:
    """§1.4.1: a Delete is acted on in a request only.  West answers east's liveness
    probe with a Delete of the IKE SA and of the Child SA: the probe is answered,
    nothing goes."""
    net, w, e = _setup()
    c = e.children[0]
    msgid, _ = _east_request(net, w, net.east.engine.queue(e, _liveness(), net.now))
    acts = _respond_info(net, w, msgid, [codec.delete(ProtocolID.IKE, []),
                                         codec.delete(ProtocolID.ESP, [_spi(c.spi_out)])])
    assert not _sends(acts) and not [a for a in acts if isinstance(a, DelSA)]
    assert e.outstanding is None and e.children == [c]
    _still_works(net, w, e)


def _liveness():  # noqa: ANN202
    from pypluto.ike.tasks.liveness import Liveness
    return Liveness()


# ================================================================== critical bit (§2.5, §3.2)
def _outer_critical(w: IKESA, msgid: int, inner: list[wp.Payload], *, response: bool = False,
                    forge: bool = False) -> bytes:
    """West's INFORMATIONAL with an unknown critical payload (type 200) before the SK
    payload, protected with west's keys (the ICV covers it); ``forge``: one bit of
    the ICV flipped."""
    assert w.prot_out is not None
    data = bytearray(wm.encode_sk_message(
        spi_i=w.spi_i, spi_r=w.spi_r, exchange=INFO, initiator=w.initiator,
        response=response, message_id=msgid, inner=inner, protector=w.prot_out,
        outer=[wp.UnknownPayload(200, b"outer junk", critical=True)]))
    if forge:
        data[-1] ^= 1
    return bytes(data)


def test_unknown_critical_payload_outside_sk_is_answered_once_authentic() -> None:
    """§2.5: an unknown payload with the critical bit before the SK payload of an
    authentic request: UNSUPPORTED_CRITICAL_PAYLOAD naming its type, and the Delete
    inside is not acted on."""
    net, w, e = _setup()
    c = e.children[0]
    mid = w.next_out
    w.next_out += 1
    acts = _deliver(net, w, [_outer_critical(w, mid, [codec.delete(ProtocolID.IKE, [])])])
    ans = _answer(w, acts)
    assert _notify_types(ans) == [N.UNSUPPORTED_CRITICAL_PAYLOAD]
    assert ans is not None and bytes(ans[0].data) == bytes([200])
    assert net.east.engine.by_serial == {e.serial: e} and e.children == [c]
    _still_works(net, w, e)


def test_forged_unknown_critical_payload_outside_sk_gets_no_answer() -> None:
    """The same request with a bad ICV: silence (§2.21.2: an unauthenticated request
    gets no answer), the window stays where it was, and the genuine request of that
    message ID is processed after it."""
    net, w, e = _setup()
    mid = w.next_out
    before = (e.next_in, e.last_response)
    acts = _deliver(net, w, [_outer_critical(w, mid, [], forge=True)])
    assert not _sends(acts) and (e.next_in, e.last_response) == before
    _still_works(net, w, e)


def test_unknown_critical_payload_in_an_answer_is_dropped() -> None:
    """§2.5: an answer with an unknown critical payload (inside SK, or outside it) is
    rejected: east's Child SA Delete stays outstanding and the Child SA is not
    removed; the genuine answer (a retransmit of it, at the peer) completes it."""
    net, w, e = _setup()
    c = e.children[0]
    msgid, _ = _east_request(net, w, delete_children(net.east.engine, e, [c], net.now))
    acts = _respond_info(net, w, msgid, [codec.delete(ProtocolID.ESP, [_spi(c.spi_out)]),
                                         wp.UnknownPayload(201, b"x", critical=True)])
    acts += _deliver(net, w, [_outer_critical(w, msgid, [], response=True)])
    assert not _sends(acts) and not [a for a in acts if isinstance(a, DelSA)]
    assert e.outstanding is not None and e.outstanding.msgid == msgid and e.children == [c]
    acts = _respond_info(net, w, msgid, [codec.delete(ProtocolID.ESP, [_spi(c.spi_out)])])
    assert len([a for a in acts if isinstance(a, DelSA)]) == 2
    assert e.outstanding is None and not e.children and not net.east.kernel_sas
    _no_internal_error(net.east)


def test_unknown_payload_without_the_critical_bit_is_skipped() -> None:
    """§3.2: an unknown payload without the critical bit is skipped; the Delete next
    to it is processed as if it were alone."""
    net, w, e = _setup()
    c = e.children[0]
    acts = _request(net, w, INFO, [wp.UnknownPayload(200, b"junk"),
                                   codec.delete(ProtocolID.ESP, [_spi(c.spi_out)]),
                                   wp.UnknownPayload(255, b"")])
    assert _deletes(_answer(w, acts)) == [(ProtocolID.ESP, [_spi(c.spi_in)])]
    assert not e.children and not net.east.kernel_sas
    assert net.east.engine.by_serial == {e.serial: e}
    _no_internal_error(net.east)



def test_critical_bit_on_a_known_payload_is_ignored() -> None:
    """§2.5: the critical bit only matters for payload types not understood; a Delete
    and a notify with it set are processed as usual."""
    net, w, e = _setup()
    c = e.children[0]
    d = codec.delete(ProtocolID.ESP, [_spi(c.spi_out)])
    d.critical = True
    n = codec.notify(40000)
    n.critical = True
    assert _deletes(_answer(w, _request(net, w, INFO, [n, d]))) == \
        [(ProtocolID.ESP, [_spi(c.spi_in)])]
    assert not e.children and net.east.engine.by_serial == {e.serial: e}
    _no_internal_error(net.east)


# ================================================================== notifies (§3.10)
@pytest.mark.parametrize("ntype", [8000, 16383, 40000, 65535, N.INVALID_MESSAGE_ID,
                                   N.INVALID_SPI, N.SET_WINDOW_SIZE])
def test_unknown_or_stray_notifies_in_a_request_are_ignored(ntype: int) -> None:
    """§3.10.1: an unrecognized error type in a request MUST be ignored, so must an
    unknown status type; INVALID_MESSAGE_ID / INVALID_SPI from the peer and
    SET_WINDOW_SIZE (which this end never acts on, §2.3) change nothing either."""
    net, w, e = _setup()
    data = (5).to_bytes(4, "big") if ntype != N.INVALID_SPI else b""
    spi = b"" if ntype != N.INVALID_SPI else _spi(e.children[0].spi_out)
    proto = 0 if not spi else ProtocolID.ESP
    acts = _request(net, w, INFO, [codec.notify(ntype, data, proto, spi)])
    assert _answer(w, acts) == []
    assert not [a for a in acts if isinstance(a, (DelSA, AddSA))]
    _still_works(net, w, e)


def test_set_window_size_does_not_open_the_window() -> None:
    """§2.3: this end never sends SET_WINDOW_SIZE, so the peer's window towards it is
    1 whatever the peer announces: after its SET_WINDOW_SIZE of 100, a request two
    ahead is still dropped unanswered, the next one in order is answered."""
    net, w, e = _setup()
    assert _answer(w, _request(net, w, INFO, [codec.notify(N.SET_WINDOW_SIZE,
                                                           (100).to_bytes(4, "big"))])) == []
    ahead = w.next_out + 1
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.IKE, [])], msgid=ahead)
    assert not _sends(acts) and e.next_in == w.next_out
    _still_works(net, w, e)


@pytest.mark.parametrize("head", [
    bytes([3, 8]),  # ESP with an 8-octet SPI
    bytes([2, 2]),  # AH with a 2-octet SPI
    bytes([1, 4]),  # the IKE SA with a 4-octet SPI
    bytes([0, 4]),  # no protocol, yet an SPI
    bytes([9, 4]),  # an unknown protocol with an SPI
    bytes([3, 200]),  # an SPI longer than the payload
    b"",  # too short for the notify header
], ids=["esp8", "ah2", "ike4", "none4", "proto9", "overlong", "short"])
def test_notify_lying_about_its_spi_size_is_invalid_syntax(head: bytes) -> None:
    """§3.10: the SPI size goes with the protocol (4 for AH/ESP, 8 or nothing for the
    IKE SA, nothing without a protocol): a lie is INVALID_SYNTAX, nothing else."""
    net, w, e = _setup()
    body = head + int(N.REKEY_SA).to_bytes(2, "big") + bytes(8) if head else b"\0\0\0"
    acts = _request(net, w, INFO, [wp.UnknownPayload(PT.NOTIFY, body)])
    assert _notify_types(_answer(w, acts)) == [N.INVALID_SYNTAX]
    _still_works(net, w, e)


# ================================================================== message IDs and the window
def test_forged_packets_never_poison_the_retransmit_cache() -> None:
    """§2.1: a forged request (bad ICV) with the message ID the window expects is
    dropped before anything is kept; the genuine request then gets its own answer,
    and a forged retransmit of it gets exactly that cached answer (no more, and
    nothing acted on).  A forged answer to east's request in flight leaves it in
    flight."""
    net, w, e = _setup()
    mid = w.next_out
    forged = bytearray(net.west.engine.encode(w, INFO, False, mid,
                                              [codec.delete(ProtocolID.IKE, [])])[0])
    forged[-1] ^= 1
    assert not _sends(_deliver(net, w, [bytes(forged)]))
    assert e.next_in == mid and net.east.engine.by_serial == {e.serial: e}
    w.next_out += 1
    acts = _request(net, w, INFO, [], msgid=mid)
    (real,) = _sends(acts)
    assert e.last_response is not None and e.last_response[0] == mid
    again = _deliver(net, w, [bytes(forged)])  # the same message ID: a "retransmit"
    assert [a.data for a in _sends(again)] == [real.data]
    assert net.east.engine.by_serial == {e.serial: e} and len(e.children) == 1
    msgid, _ = _east_request(net, w, net.east.engine.queue(e, _liveness(), net.now))
    o = e.outstanding
    bad = bytearray(net.west.engine.encode(w, INFO, True, msgid,
                                           [codec.delete(ProtocolID.IKE, [])])[0])
    bad[-1] ^= 1
    assert not _sends(_deliver(net, w, [bytes(bad)])) and e.outstanding is o
    _respond_info(net, w, msgid, [])
    assert e.outstanding is None
    _still_works(net, w, e)


def test_answer_with_the_wrong_initiator_flag_is_dropped() -> None:
    """§3.1: the I flag of an answer to east's request lying (set as if east had not
    made the IKE SA... or had): dropped, east's request stays in flight."""
    net, w, e = _setup()
    msgid, _ = _east_request(net, w, net.east.engine.queue(e, _liveness(), net.now))
    o = e.outstanding
    assert w.prot_out is not None
    data = wm.encode_sk_message(spi_i=w.spi_i, spi_r=w.spi_r, exchange=INFO,
                                initiator=not w.initiator, response=True, message_id=msgid,
                                inner=[], protector=w.prot_out)
    assert not _sends(_deliver(net, w, [data])) and e.outstanding is o
    _respond_info(net, w, msgid, [])
    assert e.outstanding is None
    _still_works(net, w, e)


def test_liveness_probe_while_our_request_is_in_flight_is_answered() -> None:
    """§2.3: the two directions have windows of their own: the peer's liveness probe
    is answered while east's CREATE_CHILD_SA is in flight, which stays in flight."""
    net, w, e = _setup()
    msgid, _ = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    o = e.outstanding
    assert o is not None and o.msgid == msgid
    assert _answer(w, _request(net, w, INFO, [])) == []
    assert e.outstanding is o and e.next_in == w.next_out
    _no_internal_error(net.east)


def test_informational_to_the_initiator_before_ike_auth_is_dropped() -> None:
    """§1.4: INFORMATIONAL exchanges only after the initial exchanges.  East (keys
    made, IKE_AUTH not yet received) sends west a Delete of the IKE SA with message
    ID 0 before west's IKE_AUTH gets there: west drops it unanswered, and IKE_AUTH
    then completes."""
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT request -> east
    net.step()  # its answer -> west, whose IKE_AUTH request is now queued
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert not w.established and e.prot_out is not None
    for payloads in ([codec.delete(ProtocolID.IKE, [])], [], [codec.notify(
            N.AUTHENTICATION_FAILED)]):
        data = net.east.engine.encode(e, INFO, False, 0, payloads)
        acts = net.west.engine.receive(data[0], w.local, w.remote, net.now)
        assert not [a for a in acts if isinstance(a, SendPacket)]
        assert net.west.engine.by_serial == {w.serial: w} and w.next_in == 0
    net.run()
    assert w.established and e.established and len(net.children(net.west)) == 1
    assert not any("internal error" in m for m in net.west.logs())


def test_answer_to_our_delete_naming_another_child_sa_removes_only_ours() -> None:
    """§1.4.1: the answer to our Delete names the peer's halves of the pairs deleted;
    an answer that (also) names another Child SA of ours removes only the Child SA
    we asked to delete."""
    net, w, e = _setup()
    net.apply(net.east, net.east.engine.create_child(e, e.conn, net.now))
    net.run()
    assert len(e.children) == 2
    gone, kept = e.children
    msgid, _ = _east_request(net, w, delete_children(net.east.engine, e, [gone], net.now))
    acts = _respond_info(net, w, msgid, [codec.delete(ProtocolID.ESP, [_spi(kept.spi_out),
                                                                       _spi(gone.spi_out)]),
                                         codec.delete(ProtocolID.IKE, [])])
    assert {a.spi for a in acts if isinstance(a, DelSA)} == {gone.spi_in, gone.spi_out}
    assert e.children == [kept] and kept.state is ChildState.ESTABLISHED
    assert net.east.engine.by_serial == {e.serial: e}
    assert _answer(w, _request(net, w, INFO, [])) == []
    _no_internal_error(net.east)


def test_delete_payload_does_not_open_the_window_for_another_exchange() -> None:
    """§2.3: while the answer to the peer's CREATE_CHILD_SA waits for its offloaded
    DH, only an INFORMATIONAL Delete of the IKE SA is taken (a peer shutting down).
    A CREATE_CHILD_SA carrying a Delete payload for the IKE SA (no such thing in
    that exchange, §1.3) was taken too: answered before the first, whose late
    answer then set ``next_in`` back, so the retransmit of the second was processed
    again and got another answer (§2.1).  It is dropped now, and deletes nothing."""
    from pypluto.ike.actions import Compute

    from .test_hostile_established import _child_request
    net, w, e = _setup()
    eng = net.east.engine
    eng.settings.offload_crypto = True
    m1 = w.next_out
    first = _request(net, w, CHILD, _child_request(w, b"\x21\x00\x00\x01"))
    (job,) = [a for a in first if isinstance(a, Compute)]
    second = _child_request(w, b"\x21\x00\x00\x02",
                            extra=[codec.delete(ProtocolID.IKE, [])])
    early = _request(net, w, CHILD, second, msgid=m1 + 1)
    assert not _sends(early) and not [a for a in early if isinstance(a, Compute)]
    assert e.next_in == m1 + 1 and net.east.engine.by_serial == {e.serial: e}
    acts = eng.resume(job.token, job.job(), net.now)
    net.apply(net.east, acts)
    assert isinstance((_answer(w, acts) or [None])[0], wp.SAPayload)
    assert e.next_in == m1 + 1 and len(e.children) == 2
    _no_internal_error(net.east)


class _Scans(list):
    """A Child SA list that counts how often it is walked."""

    walks = 0

    def __iter__(self):  # noqa: ANN204
        type(self).walks += 1
        return super().__iter__()


def test_delete_of_many_unknown_spis_does_not_walk_the_child_sas_for_each() -> None:
    """A Delete of 16,000 SPIs (about all one message holds) against an IKE SA with
    many Child SAs: each SPI named was looked for by walking every Child SA of the
    IKE SA (with 60 Child SAs the walks took 35 of the message's 50 ms of CPU; with
    1,000, about half a second per message: an authenticated peer's cheap way to
    stall the daemon).  The Child SAs are now indexed once per request."""
    net, w, e = _setup()
    c = e.children[0]
    e.children = _Scans(e.children)
    _Scans.walks = 0
    spis = [_spi(0x1000 + i) for i in range(16000)]
    spis.insert(8000, _spi(c.spi_out))
    ans = _answer(w, _request(net, w, INFO, [codec.delete(ProtocolID.ESP, spis)]))
    assert _deletes(ans) == [(ProtocolID.ESP, [_spi(c.spi_in)])]
    assert not e.children and _Scans.walks < 50, _Scans.walks
    _no_internal_error(net.east)


def test_informational_to_the_responder_before_ike_auth_leaves_ike_auth_working() -> None:
    """§1.4 (CVE-2019-12312's kind): a Delete of the IKE SA, an empty INFORMATIONAL
    and an AUTHENTICATION_FAILED notice with IKE_AUTH's message ID, sent to the
    responder before IKE_AUTH: dropped unanswered, nothing consumed of the window,
    and the IKE_AUTH queued behind them then completes."""
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    for payloads in ([codec.delete(ProtocolID.IKE, [])], [], [codec.notify(
            N.AUTHENTICATION_FAILED)]):
        data = net.west.engine.encode(w, INFO, False, 1, payloads)
        acts = net.east.engine.receive(data[0], e.local, e.remote, net.now)
        assert not [a for a in acts if isinstance(a, SendPacket)]
        assert net.east.engine.by_serial == {e.serial: e} and e.next_in == 1
    net.run()
    assert w.established and e.established and len(net.children(net.east)) == 1
    assert not any("internal error" in m for m in net.east.logs())


def test_delete_of_the_ike_sa_while_our_answer_is_computed() -> None:
    """The INFORMATIONAL Delete of the IKE SA that is still taken while the answer to
    the previous CREATE_CHILD_SA waits for its offloaded DH: answered, the IKE SA
    goes, and the late DH result installs nothing and sends nothing."""
    from pypluto.ike.actions import Compute

    from .test_hostile_established import _child_request
    net, w, e = _setup()
    eng = net.east.engine
    eng.settings.offload_crypto = True
    m1 = w.next_out
    first = _request(net, w, CHILD, _child_request(w, b"\x21\x00\x00\x01"))
    (job,) = [a for a in first if isinstance(a, Compute)]
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.IKE, [])], msgid=m1 + 1)
    assert _answer(w, acts) == []
    assert not eng.by_serial and not net.east.kernel_sas
    late = eng.resume(job.token, job.job(), net.now)
    net.apply(net.east, late)
    assert not _sends(late) and not [a for a in late if isinstance(a, AddSA)]
    assert not net.east.kernel_sas and not eng.children_in and not eng.children_out
    _no_internal_error(net.east)
