"""MOBIKE races and NAT prohibition (RFC 4555 §3.5, §3.9).

- Someone on the path copies the client's real UPDATE_SA_ADDRESSES and delivers it
  first, from an address of its own.  The real one then arrives with the message ID
  just answered: it used to get only the cached answer (NAT-D for the attacker's
  address), no check of the real address, and the gateway went back to the old
  address when the attacker's check failed, while the client believed it had moved.
  Now the copy from another (local, remote) pair is answered as an update from there
  and checked too: the address that answers its COOKIE2 wins, an unchecked one never.
- NO_NATS_ALLOWED (§3.9) in an INFORMATIONAL with UPDATE_SA_ADDRESSES (or one that
  lists addresses) is checked against the addresses and ports the request came with;
  a mismatch, or a body that cannot match, is answered UNEXPECTED_NAT_DETECTED, and
  nothing in the request is acted on.
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.liveness import Liveness
from pypluto.ike.tasks.mobike import MAX_QUEUED_CHECKS, ReturnRoutability
from pypluto.wire import payloads as wp
from pypluto.wire.message import parse_message

from .harness import EAST, WEST, Net, Side
from .test_hostile_nat_mobike import (
    _deliver,
    _ike,
    _moves,
    _no_internal_error,
    _plane,
    _sends,
    _where,
)

INFO = int(ExchangeType.INFORMATIONAL)
SPOOFED = ipaddress.ip_address("198.51.100.66")  # the attacker's choice of source
NEW_WEST = ipaddress.ip_address("192.0.2.77")


# ------------------------------------------------------------------ helpers
def _mobike(nat: bool) -> tuple[Net, IKESA, IKESA]:
    net = Net(nat=nat, west_kw={"mobike": True}, east_kw={"mobike": True, "left": "%any"})
    net.up()
    w, e = _ike(net.west), _ike(net.east)
    assert w.mobike and e.mobike and len(w.children) == len(e.children) == 1
    # what goes to the attacker's address never reaches west (the attacker does not
    # answer the return routability check: it cannot read it)
    plain = net._translate

    def translate(frm: Side, pkt: SendPacket) -> tuple[Endpoint, Endpoint] | None:
        if pkt.remote.addr == SPOOFED:
            return None
        return plain(frm, pkt)

    net._translate = translate  # type: ignore[method-assign]
    return net, w, e


def _request(net: Net, w: IKESA, payloads: list[wp.Payload]) -> list[bytes]:
    """West's next request, protected with its keys (as west would send it)."""
    msgid = w.next_out
    w.next_out += 1
    return net.west.engine.encode(w, INFO, False, msgid, payloads)


def _answer(w: IKESA, pkt: SendPacket) -> list[int]:
    """The notify types of east's answer, decrypted with west's keys."""
    m = parse_message(pkt.data)
    assert m.response and isinstance(m.sk, wp.SKPayload)
    assert w.prot_in is not None
    return [p.notify_type for p in codec.decrypt(m.sk, w.prot_in)
            if isinstance(p, wp.NotifyPayload)]


def _checks(e: IKESA) -> list[ReturnRoutability]:
    o = e.outstanding
    out = [o.task] if o is not None and isinstance(o.task, ReturnRoutability) else []
    return out + [t for t in e.tasks if isinstance(t, ReturnRoutability)]


def _both_agree(net: Net, w: IKESA, e: IKESA) -> None:
    """West is on NEW_WEST and east on where west's packets come from (through the NAT
    when there is one); both Child SA halves, and the data plane, are there, and both
    ends agree on ESP in UDP."""
    real = net.nat_map[w.local] if net.nat else w.local
    assert w.local.addr == NEW_WEST and w.remote == e.local
    assert e.remote == real, (e.remote, real)
    (wc,), (ec,) = w.children, e.children
    assert (wc.local_addr, wc.remote_addr) == (NEW_WEST, e.local.addr)
    assert (ec.local_addr, ec.remote_addr) == (e.local.addr, real.addr)
    assert (wc.encap is None) == (ec.encap is None), (wc.encap, ec.encap)
    assert w.nat_local == e.nat_remote and w.nat_remote == e.nat_local
    esas, errors = _plane(net.east)
    assert errors == []
    assert {(sa.src, sa.dst) for sa in esas.values()} == {(e.local.addr, real.addr),
                                                          (real.addr, e.local.addr)}
    for sa in esas.values():
        if sa.direction == "out" and ec.encap is not None:
            assert sa.encap_dport == real.port
    wsas, errors = _plane(net.west)
    assert errors == []
    assert {(sa.src, sa.dst) for sa in wsas.values()} == {(NEW_WEST, e.local.addr),
                                                          (e.local.addr, NEW_WEST)}


# ================================================================== §3.5: spoofed-first race
@pytest.mark.parametrize("nat", [True, False])
def test_spoofed_copy_first_then_the_real_update_moves_to_the_real_address(nat: bool) -> None:
    """The attacker's copy of west's UPDATE_SA_ADDRESSES arrives first, from SPOOFED:
    east answers there and checks SPOOFED (which never answers).  The real update
    from west's new address comes next, with the same message ID.  It used to get the
    cached answer only (NAT-D for SPOOFED), so west moved and east, once the check of
    SPOOFED failed, stayed on the old address: ESP went nowhere.  Now the real
    address is answered with its own NAT-D, checked, and both ends meet there."""
    net, w, e = _mobike(nat)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue.pop(0)
    assert frm is net.west and not net.queue
    spoofed = Endpoint(SPOOFED, 4500)
    acts = _deliver(net, net.east, [upd.data], upd.remote, spoofed)
    assert {s.remote for s in _sends(acts)} == {spoofed} and not _moves(acts)
    net.queue.append((frm, upd))  # the real one, a moment later
    net.run()
    # west got an answer with NAT-D for the pair it really used
    assert not w.nat_local if not nat else w.nat_local
    net.advance(150)  # the check of SPOOFED times out; the real address's is answered
    assert any(f"{spoofed} failed the return routability check" in m
               for m in net.east.logs())
    assert e.outstanding is None and not _checks(e)
    _both_agree(net, w, e)
    # and the two ends still talk: east's DPD reaches west and is answered
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    net.run()
    assert e.outstanding is None and _ike(net.east) is e and _ike(net.west) is w
    _no_internal_error(net)


def test_real_update_first_then_a_spoofed_copy_is_checked_and_fails() -> None:
    """The other order: the real update is answered and checked first; a copy from
    SPOOFED then gets its answer there and a check of its own, which fails: the SAs
    stay on the real address (the IKE SA only points at SPOOFED while checking it)."""
    net, w, e = _mobike(True)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue[0]
    net.run()
    _both_agree(net, w, e)
    before = _where(e)
    n = len(net.east.actions)
    acts = _deliver(net, net.east, [upd.data], upd.remote, Endpoint(SPOOFED, 4500))
    assert _sends(acts) and all(s.remote.addr == SPOOFED for s in _sends(acts))
    assert not _moves(acts)
    net.advance(150)
    assert _where(e) == before and not _moves(net.east.actions[n:])
    assert any("failed the return routability check" in m for m in net.east.logs()[-5:])
    _both_agree(net, w, e)
    _no_internal_error(net)


def test_spoofed_copy_only_moves_nothing_and_checks_stay_bounded() -> None:
    """Only copies arrive, from many addresses of the attacker's, and again from each:
    every one gets an answer, at most one check per address and MAX_QUEUED_CHECKS
    waiting, and when none of them answers nothing has moved."""
    net, w, e = _mobike(True)
    before = _where(e)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue.pop(0)
    net.cut = True  # west never hears of anything: only the attacker's copies arrive
    for _rnd in range(2):
        for i in range(12):
            src = Endpoint(SPOOFED, 20000 + i)
            acts = _deliver(net, net.east, [upd.data], upd.remote, src)
            (answer,) = [s for s in _sends(acts) if parse_message(s.data).response]
            assert answer.remote == src and not _moves(acts)
            assert N.NAT_DETECTION_DESTINATION_IP in _answer(w, answer)
            checks = _checks(e)
            assert len({(c.local, c.remote) for c in checks}) == len(checks)
            assert len(e.tasks) <= MAX_QUEUED_CHECKS
    assert any("return routability checks are waiting" in m for m in net.east.logs())
    net.advance(600)
    assert _where(e) == before and not _moves(net.east.actions)
    assert not _checks(e) and _ike(net.east) is e
    _no_internal_error(net)


def test_failed_check_leaves_the_message_ids_in_step() -> None:
    """An update from an address that never answers its check (the client's interface
    went away again, or a copy from someone else's address): the check's message ID
    never reached west, which still expects it (RFC 7296 §2.3).  East used to go on
    with the next message ID, which west drops, so east's next DPD failed and the
    IKE SA died.  Now the request after a check that got no answer takes its message
    ID, and west answers it."""
    net, w, e = _mobike(True)
    before = _where(e)
    upd = _request(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES)])
    _deliver(net, net.east, upd, e.local, Endpoint(SPOOFED, 4500))
    net.run()
    net.advance(120)  # the check of SPOOFED gets no answer
    assert _where(e) == before and not _checks(e)
    n = len(net.east.logs())
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    net.run()
    assert e.outstanding is None, "east's DPD was not answered"
    assert not any("peer" in m and "dead" in m for m in net.east.logs()[n:])
    # and the window goes on from there: another one, and one of west's
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    net.run()
    assert e.outstanding is None and w.outstanding is None
    assert _ike(net.east) is e and _ike(net.west) is w
    _no_internal_error(net)


def test_real_retransmission_from_the_same_address_gets_the_cached_answer() -> None:
    """West's update, retransmitted from where it came from: the very same answer
    (bytes) goes back, and no second check starts."""
    net, w, e = _mobike(True)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue.pop(0)
    src = net._translate(frm, upd)
    assert src is not None
    first = _deliver(net, net.east, [upd.data], *src)
    again = _deliver(net, net.east, [upd.data], *src)
    answer = [s.data for s in _sends(first) if parse_message(s.data).response]
    assert [s.data for s in _sends(again)] == answer
    assert len(_checks(e)) == 1
    _no_internal_error(net)


def test_other_retransmitted_requests_from_elsewhere_still_get_the_cached_answer() -> None:
    """A retransmitted DPD (no UPDATE_SA_ADDRESSES) from another address on a MOBIKE
    SA: the cached bytes, nothing checked, nothing moved, as before."""
    net, w, e = _mobike(True)
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    (frm, pkt) = net.queue[0]
    net.run()
    assert e.last_response is not None
    cached = list(e.last_response[1])
    before = _where(e)
    acts = _deliver(net, net.east, [pkt.data], e.local, Endpoint(SPOOFED, 4500))
    assert [s.data for s in _sends(acts)] == cached and not _moves(acts)
    assert _where(e) == before and not _checks(e)
    _no_internal_error(net)


def test_forged_copy_with_the_update_message_id_is_not_acted_on() -> None:
    """Same message ID as the update just answered, but not its bytes (a bad ICV),
    from another address: only the cached answer, as for any retransmission."""
    net, w, e = _mobike(True)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue[0]
    net.run()
    before = _where(e)
    assert e.last_response is not None
    cached = list(e.last_response[1])
    bad = upd.data[:-1] + bytes([upd.data[-1] ^ 1])
    acts = _deliver(net, net.east, [bad], upd.remote, Endpoint(SPOOFED, 4500))
    assert [s.data for s in _sends(acts)] == cached
    assert _where(e) == before and not _checks(e)
    _no_internal_error(net)


# ================================================================== §3.8: NAT-D in any INFORMATIONAL
@pytest.mark.parametrize("where", ["current", "elsewhere"])
def test_nat_detection_in_an_informational_is_answered_in_kind(where: str) -> None:
    """§3.8: "NAT_DETECTION_SOURCE_IP and NAT_DETECTION_DESTINATION_IP notifications
    MAY be included in any INFORMATIONAL request; if the request includes them, the
    responder MUST also include them in the response (but no other action is taken)".
    strongSwan's MOBIKE DPD does this to notice its NAT mapping changed (and then
    sends UPDATE_SA_ADDRESSES); east answered with nothing, so the client never saw
    the change, and east (MOBIKE: it does not follow §2.23) kept sending to the
    mapping the NAT had dropped.  Nothing moves, from wherever it comes."""
    net, w, e = _mobike(True)
    before = _where(e)
    frm = e.remote if where == "current" else Endpoint(e.remote.addr, e.remote.port + 5)
    cookie = b"\x42" * 8
    req = _request(net, w, [
        codec.notify(N.NAT_DETECTION_SOURCE_IP,
                     codec.natd_hash(w.spi_i, w.spi_r, w.local.addr, w.local.port)),
        codec.notify(N.NAT_DETECTION_DESTINATION_IP,
                     codec.natd_hash(w.spi_i, w.spi_r, w.remote.addr, w.remote.port)),
        codec.notify(N.COOKIE2, cookie)])
    acts = _deliver(net, net.east, req, e.local, frm)
    (answer,) = _sends(acts)
    assert answer.remote == frm
    m = parse_message(answer.data)
    assert isinstance(m.sk, wp.SKPayload) and w.prot_in is not None
    got = {p.notify_type: bytes(p.data) for p in codec.decrypt(m.sk, w.prot_in)
           if isinstance(p, wp.NotifyPayload)}
    assert got == {
        N.NAT_DETECTION_SOURCE_IP: codec.natd_hash(e.spi_i, e.spi_r, e.local.addr,
                                                   e.local.port),
        N.NAT_DETECTION_DESTINATION_IP: codec.natd_hash(e.spi_i, e.spi_r, frm.addr,
                                                        frm.port),
        N.COOKIE2: cookie}
    # west, reading it, sees that it is behind a NAT (its own address is not there)
    assert codec.natd_hash(w.spi_i, w.spi_r, w.local.addr, w.local.port) != \
        got[N.NAT_DETECTION_DESTINATION_IP]
    assert not _moves(acts) and not _checks(e) and _where(e) == before
    _no_internal_error(net)


def test_nat_detection_without_mobike_gets_the_plain_answer() -> None:
    """Without MOBIKE, NAT-D in an INFORMATIONAL means nothing: the empty answer, as
    before."""
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    w, e = _ike(net.west), _ike(net.east)
    assert not e.mobike
    req = _request(net, w, [
        codec.notify(N.NAT_DETECTION_SOURCE_IP, b"\x01" * 20),
        codec.notify(N.NAT_DETECTION_DESTINATION_IP, b"\x02" * 20)])
    acts = _deliver(net, net.east, req, e.local, e.remote)
    (answer,) = _sends(acts)
    assert _answer(w, answer) == []
    _no_internal_error(net)


# ================================================================== roles after an IKE SA rekey
def test_client_still_moves_after_the_gateway_rekeyed_the_ike_sa() -> None:
    """The gateway rekeys the IKE SA (RFC 7296 §2.18: the I flag is now the gateway's).
    The MOBIKE roles are the client's and the gateway's, not the I flag's: the client
    used to stop sending UPDATE_SA_ADDRESSES (mobike=yes silently off), and the
    gateway ignored one ("from the original responder") with an empty answer, so a
    client that did send it (strongSwan keeps the original roles) moved alone."""
    net, w, e = _mobike(True)
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.run()
    w2, e2 = _ike(net.west), _ike(net.east)
    assert w2 is not w and e2.initiator and not w2.initiator
    assert w2.mobike and e2.mobike
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    net.advance(10)
    assert not any("ignoring UPDATE_SA_ADDRESSES" in m for m in net.east.logs())
    _both_agree(net, w2, e2)
    _no_internal_error(net)


def test_gateway_update_after_its_rekey_is_not_followed_by_the_client() -> None:
    """... and the other way round: the gateway, holding the I flag after its rekey,
    sends UPDATE_SA_ADDRESSES from elsewhere; the client used to take it (and check
    and move), as if the gateway decided where the SAs go.  It answers, moves nothing."""
    net, w, e = _mobike(False)
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.run()
    w2, e2 = _ike(net.west), _ike(net.east)
    before = _where(w2)
    msgid = e2.next_out
    e2.next_out += 1
    upd = net.east.engine.encode(e2, INFO, False, msgid, [codec.notify(N.UPDATE_SA_ADDRESSES)])
    acts = _deliver(net, net.west, upd, w2.local, Endpoint(SPOOFED, 4500))
    assert [parse_message(s.data).response for s in _sends(acts)] == [True]
    assert not _checks(w2) and _where(w2) == before and not _moves(acts)
    assert any("ignoring UPDATE_SA_ADDRESSES" in m for m in net.west.logs())
    _no_internal_error(net)


# ================================================================== §3.9: NO_NATS_ALLOWED
def _no_nats(src: Endpoint, dst: Endpoint) -> bytes:
    """§4.2.6: source address, destination address, source port, destination port."""
    return src.addr.packed + dst.addr.packed + src.port.to_bytes(2, "big") + \
        dst.port.to_bytes(2, "big")


def test_no_nats_allowed_that_matches_is_a_normal_update() -> None:
    """NO_NATS_ALLOWED naming exactly the addresses and ports the update came with:
    the usual answer (NAT-D), and a move to the new address after its check."""
    net, w, e = _mobike(False)
    new = Endpoint(NEW_WEST, 4500)
    upd = _request(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES),
                            codec.notify(N.NO_NATS_ALLOWED, _no_nats(new, e.local))])
    acts = _deliver(net, net.east, upd, e.local, new)
    answer = next(s for s in _sends(acts) if parse_message(s.data).response)
    got = _answer(w, answer)
    assert N.UNEXPECTED_NAT_DETECTED not in got and N.NAT_DETECTION_SOURCE_IP in got
    assert [(c.local, c.remote) for c in _checks(e)] == [(e.local, new)]
    w.local = new  # west is there: it answers the check
    net.run()
    assert e.remote == new and e.children[0].remote_addr == NEW_WEST
    _no_internal_error(net)


@pytest.mark.parametrize("field", ["source", "destination", "source_port",
                                   "destination_port"])
def test_no_nats_allowed_mismatch_gets_unexpected_nat_detected(field: str) -> None:
    """One of the four differs from the IP and UDP headers (a NAT, or someone
    rewriting the packet): UNEXPECTED_NAT_DETECTED, sent where the request came from,
    and the update is not acted on: no check, no move, the IKE SA stays up."""
    net, w, e = _mobike(False)
    new = Endpoint(NEW_WEST, 4500)
    src, dst = new, e.local
    if field == "source":
        src = Endpoint(ipaddress.ip_address("10.0.0.5"), 4500)
    elif field == "destination":
        dst = Endpoint(ipaddress.ip_address("10.0.0.6"), e.local.port)
    elif field == "source_port":
        src = Endpoint(NEW_WEST, 1234)
    else:
        dst = Endpoint(e.local.addr, e.local.port + 1)
    before = _where(e)
    upd = _request(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES),
                            codec.notify(N.NO_NATS_ALLOWED, _no_nats(src, dst))])
    acts = _deliver(net, net.east, upd, e.local, new)
    (answer,) = _sends(acts)
    assert answer.remote == new and answer.local == e.local
    assert _answer(w, answer) == [N.UNEXPECTED_NAT_DETECTED]
    assert not _moves(acts) and not _checks(e) and _where(e) == before
    assert any("UNEXPECTED_NAT_DETECTED" in m for m in net.east.logs())
    # the IKE SA is still there and in step: the next request is answered
    net.queue.clear()
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    net.run()
    assert w.outstanding is None and _ike(net.east) is e
    _no_internal_error(net)


@pytest.mark.parametrize("body", [b"", b"\x01\x02\x03", b"\x00" * 11, b"\x00" * 13,
                                  b"\x00" * 35, b"\x00" * 36, b"\xff" * 200],
                         ids=lambda b: f"{len(b)}_octets")
def test_malformed_no_nats_allowed_is_answered_without_exception(body: bytes) -> None:
    """A body of the wrong length (or an IPv6-sized one on IPv4): it cannot match the
    headers, so UNEXPECTED_NAT_DETECTED; no exception, nothing moves."""
    net, w, e = _mobike(False)
    before = _where(e)
    upd = _request(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES),
                            codec.notify(N.NO_NATS_ALLOWED, body)])
    acts = _deliver(net, net.east, upd, e.local, Endpoint(NEW_WEST, 4500))
    (answer,) = _sends(acts)
    assert _answer(w, answer) == [N.UNEXPECTED_NAT_DETECTED]
    assert not _moves(acts) and not _checks(e) and _where(e) == before
    _no_internal_error(net)


@pytest.mark.parametrize("match", [True, False])
def test_no_nats_allowed_with_additional_addresses(match: bool) -> None:
    """§3.9 names INFORMATIONALs with ADDITIONAL_IP4_ADDRESS too: checked the same way
    (the addresses themselves are not used)."""
    net, w, e = _mobike(False)
    body = _no_nats(e.remote, e.local) if match else _no_nats(e.local, e.remote)
    req = _request(net, w, [codec.notify(N.ADDITIONAL_IP4_ADDRESS, NEW_WEST.packed),
                            codec.notify(N.NO_NATS_ALLOWED, body)])
    before = _where(e)
    acts = _deliver(net, net.east, req, e.local, e.remote)
    (answer,) = _sends(acts)
    assert _answer(w, answer) == ([] if match else [N.UNEXPECTED_NAT_DETECTED])
    assert _where(e) == before and not _checks(e)
    _no_internal_error(net)


def test_replayed_update_with_no_nats_allowed_from_elsewhere_is_refused() -> None:
    """West's update carries NO_NATS_ALLOWED; a copy from SPOOFED does not match its
    own headers: UNEXPECTED_NAT_DETECTED there, no check of SPOOFED, nothing moves."""
    net, w, e = _mobike(False)
    new = Endpoint(NEW_WEST, 4500)
    upd = _request(net, w, [codec.notify(N.UPDATE_SA_ADDRESSES),
                            codec.notify(N.NO_NATS_ALLOWED, _no_nats(new, e.local))])
    _deliver(net, net.east, upd, e.local, new)
    net.queue.clear()
    n = len(_checks(e))
    acts = _deliver(net, net.east, upd, e.local, Endpoint(SPOOFED, 4500))
    (answer,) = _sends(acts)
    assert answer.remote.addr == SPOOFED
    assert _answer(w, answer) == [N.UNEXPECTED_NAT_DETECTED]
    assert len(_checks(e)) == n and not _moves(acts)
    _no_internal_error(net)



@pytest.mark.parametrize("match", [True, False])
def test_no_nats_allowed_in_ike_auth(match: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """§3.9 names the first IKE_AUTH request too: a NO_NATS_ALLOWED there that does
    not match (a NAT, or a rewritten packet) gets UNEXPECTED_NAT_DETECTED and no IKE
    SA; one that matches establishes as usual."""
    from pypluto.ike.tasks import mobike

    plain = mobike.supported_notify
    body = _no_nats(Endpoint(WEST, 500), Endpoint(EAST, 500 if match else 4500))
    monkeypatch.setattr(mobike, "supported_notify", lambda on: plain(on) + [
        codec.notify(N.NO_NATS_ALLOWED, body)])
    # east's peer is %any: a responder does MOBIKE only for such a conn (Libreswan 5.2)
    net = Net(west_kw={"mobike": True}, east_kw={"mobike": True, "left": "%any"})
    net.up()
    if match:
        w, e = _ike(net.west), _ike(net.east)
        assert w.mobike and e.mobike and w.local.port == 500
        assert not any("UNEXPECTED_NAT_DETECTED" in m for m in net.east.logs())
    else:
        assert not net.established(net.east) and not net.established(net.west)
        assert not net.east.engine.by_serial and not net.east.kernel_sas
        assert any("answering UNEXPECTED_NAT_DETECTED" in m for m in net.east.logs())
        assert any("UNEXPECTED_NAT_DETECTED" in m for m in net.west.logs())
    _no_internal_error(net)
