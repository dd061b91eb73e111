"""Hostile NAT detection and MOBIKE lies (RFC 7296 §2.23, RFC 4555, RFC 3948).

A peer (or someone on the path) lies about NATs, or about where it is: NAT_DETECTION
notifies in IKE_SA_INIT that are absent, half there, duplicated, empty, oversized or
forged; authenticated messages from a new address with and without MOBIKE; packets
with a bad ICV from elsewhere; stale UPDATE_SA_ADDRESSES; COOKIE2 games; bogus
ADDITIONAL_IP*_ADDRESS notifies; a peer changing address family.  The IKE SA and
its Child SAs (the data plane built from AddSA, DelSA and MoveSA) must follow only
what §2.23 and RFC 4555 allow, and both ends must agree on ESP-in-UDP.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable

import pytest

from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action, AddSA, DelSA, Endpoint, MoveSA, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.liveness import Liveness
from pypluto.wire import payloads as wp
from pypluto.wire.message import parse_message

from .harness import EAST, NAT_PUBLIC, WEST, Net, Side

INFO = int(ExchangeType.INFORMATIONAL)
ELSEWHERE = ipaddress.ip_address("198.51.100.66")  # an attacker's (or another) address
NEW_WEST = ipaddress.ip_address("192.0.2.77")
WEST6 = ipaddress.ip_address("2001:db8::1")
EAST6 = ipaddress.ip_address("2001:db8::2")


# ------------------------------------------------------------------ helpers
def _ike(side: Side) -> IKESA:
    (ike,) = [i for i in side.engine.by_serial.values() if i.established]
    return ike


def _up(**kw: object) -> tuple[Net, IKESA, IKESA]:
    net = Net(**kw)  # type: ignore[arg-type]
    net.up()
    w, e = _ike(net.west), _ike(net.east)
    assert len(w.children) == 1 and len(e.children) == 1
    return net, w, e


def _moves(acts: list[Action]) -> list[MoveSA]:
    return [a for a in acts if isinstance(a, MoveSA)]


def _sends(acts: list[Action]) -> list[SendPacket]:
    return [a for a in acts if isinstance(a, SendPacket)]


def _plane(side: Side) -> tuple[dict, list[str]]:
    """``side``'s SAs as the daemon holds them after every AddSA, DelSA and MoveSA."""
    sas: dict = {}
    errors: list[str] = []
    for a in side.actions:
        if isinstance(a, AddSA):
            sas[(a.sa.dst, a.sa.spi)] = a.sa
        elif isinstance(a, DelSA):
            sas.pop((a.dst, a.spi), None)
        elif isinstance(a, MoveSA):
            sa = sas.pop((a.dst, a.spi), None)
            if sa is None:
                errors.append(f"no SA {a.spi:08x}@{a.dst}")
                continue
            sas[(a.new_dst, a.spi)] = dataclasses.replace(
                sa, src=a.new_src, dst=a.new_dst, encap_sport=a.encap_sport,
                encap_dport=a.encap_dport)
    return sas, errors


def _no_internal_error(net: Net) -> None:
    assert not [m for m in net.west.logs() + net.east.logs() if "internal error" in m]


def _protected(net: Net, frm: Side, ike: IKESA, payloads: list[wp.Payload],
               msgid: int | None = None, response: bool = False) -> list[bytes]:
    """``payloads`` protected with ``frm``'s keys of ``ike`` (the next request by default)."""
    if msgid is None:
        msgid = ike.next_out
        ike.next_out += 1
    return frm.engine.encode(ike, INFO, response, msgid, payloads)


def _deliver(net: Net, to: Side, data: list[bytes], local: Endpoint, remote: Endpoint
             ) -> list[Action]:
    acts: list[Action] = []
    for d in data:
        a = to.engine.receive(d, local, remote, net.now)
        net.apply(to, a)
        acts += a
    return acts


def _where(e: IKESA) -> tuple:
    return (e.local, e.remote, e.nat_local, e.nat_remote,
            [(c.local_addr, c.remote_addr, c.encap) for c in e.children])


# ================================================================== §2.23 without MOBIKE
def test_nat_rebinding_takes_the_child_sas_along() -> None:
    """West is behind a NAT that gives it a new mapping (port); its next authenticated
    request comes from there.  East, facing the NAT, follows it (§2.23) -- and so must
    its Child SA's ESP-in-UDP port (RFC 3948): the IKE SA used to move alone, leaving
    east's outbound ESP on the mapping the NAT had dropped."""
    net, w, e = _up(nat=True, east_kw={"left": "%any"})
    assert e.nat_remote and not e.nat_local
    (c,) = e.children
    old = e.remote
    net.nat_map = {k: Endpoint(NAT_PUBLIC, v.port + 7) for k, v in net.nat_map.items()}
    n = len(net.east.actions)
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    net.run()
    assert e.remote == Endpoint(NAT_PUBLIC, old.port + 7)
    assert c.encap == (e.local.port, e.remote.port) and c.remote_addr == NAT_PUBLIC
    moves = _moves(net.east.actions[n:])
    assert {m.spi for m in moves} == {c.spi_in, c.spi_out}
    sas, errors = _plane(net.east)
    assert errors == []
    out = sas[(NAT_PUBLIC, c.spi_out)]
    inb = sas[(e.local.addr, c.spi_in)]
    assert (out.encap_sport, out.encap_dport) == (4500, old.port + 7)
    assert (inb.encap_sport, inb.encap_dport) == (old.port + 7, 4500)
    assert any("NAT-T: the peer's address is now" in m for m in net.east.logs())
    # and east's own requests (its DPD) reach west through the new mapping
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    net.run()
    assert e.outstanding is None and _ike(net.west) is w
    _no_internal_error(net)


def _rewritten_request_to_west(net: Net, w: IKESA, e: IKESA) -> list[Action]:
    """East's real (authenticated) DPD request, its source rewritten on the path."""
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    (frm, pkt) = net.queue.pop(0)
    assert frm is net.east and not net.queue
    return _deliver(net, net.west, [pkt.data], w.local, Endpoint(ELSEWHERE, 4500))


def test_host_behind_a_nat_does_not_follow_a_rewritten_request() -> None:
    """§2.23: "A host behind a NAT SHOULD NOT do this type of dynamic address update
    ... (such as allowing an attacker to break the connection with a single
    packet)".  West (behind the NAT) got east's authenticated request with a source
    someone on the path rewrote: it answers there, and stays where it was."""
    net, w, e = _up(nat=True, east_kw={"left": "%any"})
    assert w.nat_local and not w.nat_remote
    before = _where(w)
    acts = _rewritten_request_to_west(net, w, e)
    (answer,) = _sends(acts)
    assert answer.remote == Endpoint(ELSEWHERE, 4500)  # answered where it came from
    assert _where(w) == before and not _moves(acts)
    # west's next request still goes to east, which answers it
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    assert _sends(net.west.actions[-1:])[0].remote == Endpoint(EAST, 4500)
    _no_internal_error(net)


def test_no_nat_no_dynamic_update_on_port_4500() -> None:
    """West has encapsulation=yes (so it floats to 4500 and east sees a faked NAT) but
    the NAT_DETECTION from east shows no NAT: west is not the end facing a NAT, and
    a request from another address must not move it (it used to, for any request
    arriving on a port other than 500)."""
    net, w, e = _up(west_kw={"encapsulation": "yes"})
    assert not w.nat_local and not w.nat_remote and w.local.port == 4500
    before = _where(w)
    acts = _rewritten_request_to_west(net, w, e)
    assert _where(w) == before and not _moves(acts)
    _no_internal_error(net)


@pytest.mark.parametrize("mobike", [False, True])
def test_bad_icv_from_a_new_address_moves_nothing(mobike: bool) -> None:
    net, w, e = _up(nat=True, west_kw={"mobike": mobike},
                    east_kw={"left": "%any", "mobike": mobike})
    assert e.mobike is mobike
    before = _where(e)
    for payloads in ([], [codec.notify(N.UPDATE_SA_ADDRESSES)]):
        (data,) = _protected(net, net.west, w, payloads, msgid=e.next_in)
        bad = data[:-1] + bytes([data[-1] ^ 1])
        acts = _deliver(net, net.east, [bad], e.local, Endpoint(ELSEWHERE, 4500))
        assert not _sends(acts) and not _moves(acts)
        assert _where(e) == before
    _no_internal_error(net)


def test_retransmitted_request_from_a_new_address_moves_nothing() -> None:
    """A copy of the request just answered, from elsewhere: the cached answer goes
    back (§2.1), nothing is decrypted or acted on, nothing moves."""
    net, w, e = _up(nat=True, east_kw={"left": "%any"})
    net.apply(net.west, net.west.engine.queue(w, Liveness(), net.now))
    (frm, pkt) = net.queue.pop(0)
    net.queue.append((frm, pkt))
    net.run()
    before = _where(e)
    acts = _deliver(net, net.east, [pkt.data], e.local, Endpoint(ELSEWHERE, 4500))
    assert len(_sends(acts)) == 1 and not _moves(acts)
    assert _where(e) == before


# ================================================================== IKE_SA_INIT NAT-D
_NATD = (N.NAT_DETECTION_SOURCE_IP, N.NAT_DETECTION_DESTINATION_IP)


def _natd_edit(what: str) -> Callable[[list[wp.Payload]], None]:
    def edit(pl: list[wp.Payload]) -> None:
        ns = [p for p in pl if isinstance(p, wp.NotifyPayload) and p.notify_type in _NATD]
        assert len(ns) == 2
        if what == "absent":
            for p in ns:
                pl.remove(p)
        elif what == "only_source":
            pl.remove(ns[1])
        elif what == "only_destination":
            pl.remove(ns[0])
        elif what == "duplicated":
            at = pl.index(ns[0])
            pl[at:at] = [wp.NotifyPayload(p.protocol_id, p.spi, p.notify_type, p.data)
                         for p in ns]
        elif what == "empty":
            for p in ns:
                p.data = b""
        elif what == "oversized":
            for p in ns:
                p.data = b"\xaa" * 3000
        elif what == "forged_source":
            ns[0].data = b"\x55" * 20
        elif what == "forged_destination":
            ns[1].data = b"\x55" * 20
        else:  # pragma: no cover
            raise AssertionError(what)
    return edit


def _lying_init(role: str, what: str, **kw: object) -> Net:
    """The initiator ("request") or the responder ("answer") sends an IKE_SA_INIT with
    edited NAT-D notifies -- as the liar itself would: it signs what it sent (its AUTH
    covers the edited message), so the lie is authenticated."""
    net = Net(**kw)  # type: ignore[arg-type]
    liar = net.west if role == "request" else net.east
    edit = _natd_edit(what)
    plain_apply = net.apply

    def apply(side: Side, acts: list[Action]) -> None:
        if side is liar:
            out: list[Action] = []
            for a in acts:
                if isinstance(a, SendPacket):
                    m = parse_message(a.data)
                    if m.exchange == ExchangeType.IKE_SA_INIT and m.response is (
                            role == "answer"):
                        edit(m.payloads)
                        data = m.serialize()
                        for i in side.engine.by_serial.values():
                            if i.spi_i == m.spi_i:
                                if role == "request":
                                    i.init_request = data
                                else:
                                    i.init_response = data
                        a = SendPacket(data, a.local, a.remote)
                out.append(a)
            acts = out
        plain_apply(side, acts)

    net.apply = apply  # type: ignore[method-assign]
    net.up()
    return net


def _encap_agrees(net: Net) -> None:
    """Both ends established one Child SA, and both send it the same way: plain ESP on
    both sides, or ESP in UDP between the ports the other end uses."""
    w, e = _ike(net.west), _ike(net.east)
    (wc,), (ec,) = w.children, e.children
    assert (wc.encap is None) == (ec.encap is None), (wc.encap, ec.encap)
    if wc.encap is not None and ec.encap is not None:
        assert wc.encap == (ec.encap[1], ec.encap[0])
        assert 500 not in (wc.encap + ec.encap)
    for side in (net.west, net.east):
        sas, errors = _plane(side)
        assert errors == [] and len(sas) == 2
        assert {sa.encap_sport is None for sa in sas.values()} == {wc.encap is None}
    _no_internal_error(net)


@pytest.mark.parametrize("what", ["empty", "oversized", "forged_source", "forged_destination"])
def test_initiator_claiming_a_nat_it_never_floats_for_gets_plain_esp(what: str) -> None:
    """The initiator's NAT-D tells east of a NAT, but the initiator itself (it saw
    none in east's honest NAT-D) stays on port 500 and sends plain ESP.  East used to
    install its Child SA as ESP in UDP on port 500 -- the IKE port, where no RFC 3948
    encapsulation exists -- so the two ends never understood each other."""
    net = _lying_init("request", what)
    w, e = _ike(net.west), _ike(net.east)
    assert (e.nat_local or e.nat_remote) and not (w.nat_local or w.nat_remote)
    assert e.local.port == e.remote.port == 500
    _encap_agrees(net)


@pytest.mark.parametrize("role", ["request", "answer"])
def test_nat_claim_against_encapsulation_no_keeps_plain_esp(role: str) -> None:
    """The peer's NAT-D claims a NAT; our conn says encapsulation=no: plain ESP all
    the same (ipsec.conf(5)), whatever the peer does with its own."""
    side = "east_kw" if role == "request" else "west_kw"
    net = _lying_init(role, "forged_source", **{side: {"encapsulation": "no"}})
    victim = _ike(net.east if role == "request" else net.west)
    assert victim.nat_remote and victim.children[0].encap is None
    _no_internal_error(net)


@pytest.mark.parametrize("role", ["request", "answer"])
@pytest.mark.parametrize("what", ["absent", "only_source", "only_destination", "duplicated"])
def test_missing_or_repeated_natd_establishes_without_encapsulation(role: str,
                                                                    what: str) -> None:
    """No pair (or the same pair twice) and no NAT: §2.23 detection needs both
    notifies; both ends agree on plain ESP on port 500."""
    net = _lying_init(role, what)
    w, e = _ike(net.west), _ike(net.east)
    for i in (w, e):
        assert not i.nat_local and not i.nat_remote and i.local.port == 500
    _encap_agrees(net)


@pytest.mark.parametrize("what", ["empty", "oversized", "forged_source", "forged_destination"])
def test_responder_claiming_a_nat_gets_a_float_and_no_crash(what: str) -> None:
    """A responder's NAT-D that does not match: the initiator floats to 4500 (§2.23)
    and establishes; nothing raises (the liar's own tunnel is what it damages)."""
    net = _lying_init("answer", what)
    w, e = _ike(net.west), _ike(net.east)
    assert w.local.port == 4500 and e.local.port == 4500
    assert net.children(net.west) and net.children(net.east)
    _no_internal_error(net)


@pytest.mark.parametrize("encapsulation", ["no", "yes"])
def test_nat_claim_never_overrides_encapsulation_setting(encapsulation: str) -> None:
    """A real NAT: encapsulation=no keeps plain ESP (ipsec.conf(5)) on both ends when
    both say so; encapsulation=yes without a NAT makes both use ESP in UDP."""
    net, w, e = _up(nat=encapsulation == "no",
                    west_kw={"encapsulation": encapsulation},
                    east_kw={"encapsulation": encapsulation, "left": "%any"})
    for i in (w, e):
        (c,) = i.children
        assert (c.encap is None) is (encapsulation == "no")
    _no_internal_error(net)


# ================================================================== MOBIKE
def _mobike(nat: bool = True) -> tuple[Net, IKESA, IKESA]:
    net, w, e = _up(nat=nat, west_kw={"mobike": True}, east_kw={"mobike": True, "left": "%any"})
    assert w.mobike and e.mobike
    return net, w, e


def test_stale_update_sa_addresses_after_a_newer_one_moves_nothing() -> None:
    """West moves twice; a copy of its first UPDATE_SA_ADDRESSES (an older message ID)
    arrives afterwards from the first new address: dropped, the SAs stay on the
    second."""
    net, w, e = _mobike()
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, first) = net.queue[0]
    net.run()
    first_from = e.remote
    newer = ipaddress.ip_address("192.0.2.78")
    net.apply(net.west, net.west.engine.local_address_changed(NEW_WEST, newer, net.now))
    net.run()
    assert e.remote != first_from
    before = _where(e)
    n = len(net.east.actions)
    acts = _deliver(net, net.east, [first.data], e.local, first_from)
    assert not _moves(acts) and not any(isinstance(a, SendPacket) and
                                        parse_message(a.data).response is False for a in acts)
    net.run()
    assert _where(e) == before and not _moves(net.east.actions[n:])
    assert not [m for m in net.east.logs() if "checking return routability" in m][2:]
    _no_internal_error(net)


@pytest.mark.parametrize("cookie", ["wrong", "missing"])
def test_return_routability_answer_with_a_wrong_cookie2_moves_nothing(cookie: str) -> None:
    """RFC 4555 §3.5/§3.6: the COOKIE2 check from the new address is answered
    (authenticated) with another COOKIE2, or none: the SAs stay where they were, and
    the IKE SA is closed (§3.7: "If the values do not match, the IKE_SA MUST be
    closed"; strongSwan closes it too)."""
    net, w, e = _mobike()
    before = _where(e)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    assert net.step()  # UPDATE_SA_ADDRESSES: east answers it and sends its check
    net.step()  # west gets the answer
    (frm, check) = net.queue.pop(0)
    assert frm is net.east and not net.queue
    # west answers the check by hand, lying about the COOKIE2
    m = parse_message(check.data)
    assert isinstance(m.sk, wp.SKPayload)
    got = codec.decrypt(m.sk, w.prot_in)
    assert [p.notify_type for p in got if isinstance(p, wp.NotifyPayload)] == [N.COOKIE2]
    lie = [codec.notify(N.COOKIE2, b"\x00" * 16)] if cookie == "wrong" else []
    data = _protected(net, net.west, w, lie, msgid=m.message_id, response=True)
    acts = _deliver(net, net.east, data, check.remote, check.local)
    assert not _moves(acts) and _where(e) == before
    assert any("failed the return routability check (COOKIE2 not echoed); closing the "
               "IKE SA" in x for x in net.east.logs())
    # its Delete goes on the settled path (the moved client learns by liveness)
    deletes = [a for a in acts if isinstance(a, SendPacket)]
    assert deletes and all(a.remote == before[1] for a in deletes), deletes
    net.run()
    assert not net.established(net.east)
    sas, errors = _plane(net.east)
    assert errors == [] and all(sa.encap_dport in (None, before[1].port)
                                for sa in sas.values() if sa.direction == "out")
    _no_internal_error(net)


@pytest.mark.parametrize("kind", ["bogus_lengths", "reserved_addresses", "hundreds",
                                  "no_nats_allowed"])
def test_additional_addresses_are_ignored(kind: str) -> None:
    """ADDITIONAL_IP4/6_ADDRESS (RFC 4555 §3.4) of the wrong length, multicast,
    loopback or unspecified, or hundreds of them, alone and with UPDATE_SA_ADDRESSES
    from the current address: an answer, no move, no state kept.  NO_NATS_ALLOWED
    (§3.9, not implemented) with a malformed body is ignored the same way."""
    net, w, e = _mobike()
    four, six = N.ADDITIONAL_IP4_ADDRESS, N.ADDITIONAL_IP6_ADDRESS
    if kind == "bogus_lengths":
        extra = [codec.notify(four, b""), codec.notify(four, b"\x01\x02\x03"),
                 codec.notify(four, b"\x01" * 16), codec.notify(six, b"\x01" * 4),
                 codec.notify(six, b"\x01" * 17)]
    elif kind == "reserved_addresses":
        extra = [codec.notify(four, ipaddress.ip_address(a).packed)
                 for a in ("0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255")]
        extra += [codec.notify(six, ipaddress.ip_address(a).packed)
                  for a in ("::", "::1", "ff02::1")]
    elif kind == "hundreds":
        # (50: more than 64 payloads in one chain is INVALID_SYNTAX, test_payload_limit)
        extra = [codec.notify(four, bytes([10, i // 256, i % 256, 1])) for i in range(50)]
    else:
        extra = [codec.notify(N.NO_NATS_ALLOWED, b"\x01\x02\x03"),
                 codec.notify(N.NO_NATS_ALLOWED, b"")]
    before = _where(e)
    for payloads in (extra, [codec.notify(N.UPDATE_SA_ADDRESSES), *extra]):
        acts = _deliver(net, net.east, _protected(net, net.west, w, payloads), e.local,
                        e.remote)
        (answer,) = _sends(acts)
        assert parse_message(answer.data).response
        assert not _moves(acts) and _where(e) == before
    _no_internal_error(net)


def test_peer_switching_address_family_moves_everything_consistently() -> None:
    """The MOBIKE client comes back over IPv6 (UPDATE_SA_ADDRESSES from an IPv6 address):
    after the COOKIE2 check there, the IKE SA and both Child SA halves are on IPv6,
    each SA moved once from where it was installed."""
    net, w, e = _mobike(nat=False)
    (c,) = e.children
    lo, re_ = Endpoint(EAST6, 4500), Endpoint(WEST6, 4500)
    upd = _protected(net, net.west, w, [codec.notify(N.UPDATE_SA_ADDRESSES)])
    acts = _deliver(net, net.east, upd, lo, re_)
    sends = _sends(acts)
    assert len(sends) == 2 and all((s.local, s.remote) == (lo, re_) for s in sends)
    check = next(s for s in sends if not parse_message(s.data).response)
    # west answers the check (it really is there now)
    w.local, w.remote = re_, lo
    wacts = _deliver(net, net.west, [check.data], re_, lo)
    (echo,) = _sends(wacts)
    acts = _deliver(net, net.east, [echo.data], lo, re_)
    assert (e.local, e.remote) == (lo, re_)
    assert (c.local_addr, c.remote_addr) == (EAST6, WEST6)
    sas, errors = _plane(net.east)
    assert errors == []
    assert {(sa.src, sa.dst) for sa in sas.values()} == {(EAST6, WEST6), (WEST6, EAST6)}
    _no_internal_error(net)


def test_update_with_nat_detection_lies_from_the_current_address_moves_nothing() -> None:
    """UPDATE_SA_ADDRESSES from where the SA already is, with NAT-D notifies that
    claim no NAT although west is behind one: nothing moves."""
    net, w, e = _mobike()
    before = (e.local, e.remote, [(c.local_addr, c.remote_addr) for c in e.children])
    lies = [codec.notify(N.UPDATE_SA_ADDRESSES),
            codec.notify(N.NAT_DETECTION_SOURCE_IP,
                         codec.natd_hash(e.spi_i, e.spi_r, e.remote.addr, e.remote.port)),
            codec.notify(N.NAT_DETECTION_DESTINATION_IP,
                         codec.natd_hash(e.spi_i, e.spi_r, e.local.addr, e.local.port))]
    acts = _deliver(net, net.east, _protected(net, net.west, w, lies), e.local, e.remote)
    assert not _moves(acts)
    assert (e.local, e.remote, [(c.local_addr, c.remote_addr) for c in e.children]) == before
    _no_internal_error(net)


def test_update_from_a_spoofed_source_of_a_real_update_is_only_checked() -> None:
    """Someone on the path replays west's authenticated UPDATE_SA_ADDRESSES first,
    from an address of its choice: east checks that address (COOKIE2) before it
    moves anything, and nothing moves while the check is unanswered."""
    net, w, e = _mobike()
    before = _where(e)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue.pop(0)
    spoofed = Endpoint(ELSEWHERE, 4500)
    acts = _deliver(net, net.east, [upd.data], upd.remote, spoofed)
    assert {s.remote for s in _sends(acts)} == {spoofed}
    assert not _moves(acts)
    assert [(c.local_addr, c.remote_addr, c.encap) for c in e.children] == before[4]
    net.queue.clear()
    net.cut = True
    net.advance(120)
    assert _where(e) == before and not _moves(net.east.actions)
    _no_internal_error(net)



def test_two_updates_from_two_unchecked_addresses_both_fail_cleanly() -> None:
    """A second UPDATE_SA_ADDRESSES (from yet another address) while the first one's
    COOKIE2 check is in flight: two checks, one after the other; neither address
    answers, and the SAs end where they were before either update."""
    net, w, e = _mobike()
    before = _where(e)
    one, two = Endpoint(NAT_PUBLIC, 41000), Endpoint(ELSEWHERE, 4500)
    for frm in (one, two):
        upd = _protected(net, net.west, w, [codec.notify(N.UPDATE_SA_ADDRESSES)])
        acts = _deliver(net, net.east, upd, e.local, frm)
        assert _sends(acts) and all(s.remote == frm for s in _sends(acts))
        assert not _moves(acts)
    net.queue.clear()
    net.cut = True
    net.advance(300)
    assert _where(e) == before and not _moves(net.east.actions)
    assert sum("failed the return routability check (no answer)" in m
               for m in net.east.logs()) == 2
    assert _plane(net.east)[1] == [] and _ike(net.east) is e
    _no_internal_error(net)


# ================================================================== MOBIKE across an IKE SA rekey
def _rekey_ike(net: Net) -> tuple[IKESA, IKESA]:
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    return _ike(net.west), _ike(net.east)


def test_mobike_survives_an_ike_sa_rekey() -> None:
    """MOBIKE is negotiated once, in IKE_AUTH (RFC 4555 §3.1); the IKE SA that
    replaces it (RFC 7296 §2.18) used to forget it, so a client could not move any
    more after its first IKE SA rekey (and the gateway fell back to §2.23)."""
    net, w, e = _mobike()
    w2, e2 = _rekey_ike(net)
    assert w2 is not w and e2 is not e
    assert w2.mobike and e2.mobike
    (c,) = e2.children
    n = len(net.east.actions)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    assert w2.local.addr == NEW_WEST and e2.remote != e.remote
    assert {m.spi for m in _moves(net.east.actions[n:])} == {c.spi_in, c.spi_out}
    assert c.encap == (e2.local.port, e2.remote.port)
    assert _plane(net.east)[1] == []
    _no_internal_error(net)


def test_ike_rekey_during_a_check_of_a_spoofed_address_stays_put() -> None:
    """Someone on the path replays west's UPDATE_SA_ADDRESSES first, from an address of
    its own; east's COOKIE2 check of it is in flight (the IKE SA points there until it
    is done) when west rekeys the IKE SA.  The new IKE SA used to take the unchecked
    address as its own -- no check at all, and its Child SA left behind -- now it
    keeps the old one, and checks the new address again (which fails)."""
    net, w, e = _mobike()
    before = (e.local, e.remote)
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    (frm, upd) = net.queue.pop(0)
    spoofed = Endpoint(ELSEWHERE, 4500)
    _deliver(net, net.east, [upd.data], upd.remote, spoofed)
    net.queue[:] = [(frm, upd)]  # the real update comes late: a retransmission
    net.run()
    w2, e2 = _rekey_ike(net)
    assert e2 is not e
    net.cut = True
    net.advance(120)
    assert (e2.local, e2.remote) == before
    (c,) = e2.children
    assert (c.remote_addr, c.encap) == (before[1].addr, (before[0].port, before[1].port))
    assert any("failed the return routability check" in m for m in net.east.logs())
    assert _plane(net.east)[1] == [] and not _moves(net.east.actions)
    _no_internal_error(net)


def test_ike_rekey_during_a_check_of_a_real_move_still_moves() -> None:
    """The client really moved; east's check of its new address is answered only
    after the client rekeyed the IKE SA: the new IKE SA checks the address again and
    moves, its Child SA with it (before: IKE SA moved unchecked, Child SA stayed)."""
    net, w, e = _mobike()
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    assert net.step()  # UPDATE_SA_ADDRESSES: east answers and sends its check
    answer = next(x for x in net.queue if parse_message(x[1].data).response)
    check = next(x for x in net.queue if not parse_message(x[1].data).response)
    net.queue[:] = [answer]
    net.run()  # west moved
    new_mapping = e.remote  # (where east's check is going)
    w2, e2 = _rekey_ike(net)
    net.queue.append(check)
    net.run()
    net.advance(60)
    assert e2.remote == new_mapping and w2.local.addr == NEW_WEST
    (c,) = e2.children
    assert (c.remote_addr, c.encap) == (NAT_PUBLIC, (e2.local.port, new_mapping.port))
    sas, errors = _plane(net.east)
    assert errors == []
    assert {sa.encap_dport for sa in sas.values() if sa.direction == "out"} == \
        {new_mapping.port}
    _no_internal_error(net)


def test_ike_rekey_with_a_check_still_queued_moves_after_it() -> None:
    """East's check of the client's new address waits behind east's own DPD when the
    client rekeys the IKE SA: the queued check is made on the new IKE SA (it used to
    be dropped with the old one, leaving east on the mapping the client had left)."""
    net, w, e = _mobike()
    net.apply(net.east, net.east.engine.queue(e, Liveness(), net.now))
    (dpd,) = net.queue
    net.queue.clear()  # east's DPD is lost
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    assert net.step()  # UPDATE_SA_ADDRESSES: answered; the check waits for the DPD
    net.run()
    assert w.local.addr == NEW_WEST and e.remote.port == 40001
    w2, e2 = _rekey_ike(net)
    assert e2 is not e
    net.advance(60)
    assert e2.remote.addr == NAT_PUBLIC and e2.remote.port != 40001
    (c,) = e2.children
    assert c.encap == (e2.local.port, e2.remote.port)
    assert _plane(net.east)[1] == []
    _no_internal_error(net)
