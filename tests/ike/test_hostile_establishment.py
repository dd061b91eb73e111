"""A hostile peer during establishment (RFC 7296 §1.2, §2.7, §2.9, §3.3; RFC 7383 §2.6).

Lies in an IKE_SA_INIT request, in SKF fragments, and — as a hostile responder
answering our initiator — in the IKE_SA_INIT and IKE_AUTH responses.  The engine
answers as RFC 7296 says or stays silent; an initiator refuses a lie (no kernel SA,
no policy, a FAILED event), never raises, and keeps no unbounded state.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from pypluto.crypto.sk import SKProtector
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import TransformType as TT
from pypluto.ike import codec
from pypluto.ike.actions import Endpoint, EventKind, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.ts import TS
from pypluto.wire import payloads as wp
from pypluto.wire.message import Message, parse_message

from .harness import EAST, WEST, Net, Side

W500, E500 = Endpoint(WEST, 500), Endpoint(EAST, 500)
NPayloads = list[wp.Payload]


# ------------------------------------------------------------------ helpers
def _internal_errors(net: Net) -> list[str]:
    return [m for m in net.west.logs() + net.east.logs() if "internal error" in m]


def _sends(acts: list) -> list[SendPacket]:
    return [a for a in acts if isinstance(a, SendPacket)]


def _answers(acts: list) -> list[int]:
    """Notify types in the (unencrypted) answers among ``acts``."""
    out = []
    for a in _sends(acts):
        m = parse_message(a.data)
        out += [p.notify_type for p in m.payloads if p.payload_type == PT.NOTIFY]
    return out


def _no_state(net: Net) -> None:
    eng = net.east.engine
    assert not eng.by_serial and not eng.ike_sas and eng.n_halfopen == 0 and not eng.halfopen


def _west_failed_clean(net: Net) -> None:
    """West (the initiator) refused: nothing installed, a FAILED event, no crash."""
    assert not net.west.kernel_sas and not net.west.policies
    assert any(e.kind is EventKind.FAILED for e in net.west.events), net.west.logs()
    assert not _internal_errors(net)


def _init_request(net: Net, mutate: Callable[[Message], None] | None = None) -> bytes:
    """West's real IKE_SA_INIT request, optionally mutated."""
    data = _sends(net.west.engine.initiate("west-east", net.now))[0].data
    if mutate is None:
        return data
    m = parse_message(data)
    mutate(m)
    return m.serialize()


def _to_east(net: Net, data: bytes) -> list:
    acts = net.east.engine.receive(data, E500, W500, net.now)
    net.apply(net.east, acts)
    return acts


def _hostile_init_reply(net: Net, mutate: Callable[[Message], None]) -> list:
    """East's real IKE_SA_INIT answer, mutated, delivered to west."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # the request to east
    frm, pkt = net.queue.pop(0)
    assert frm is net.east
    m = parse_message(pkt.data)
    mutate(m)
    acts = net.west.engine.receive(m.serialize(), pkt.remote, pkt.local, net.now)
    net.apply(net.west, acts)
    return acts


def _west_ike(net: Net) -> IKESA:
    return next(iter(net.west.engine.by_serial.values()))


def _east_ike(net: Net) -> IKESA:
    return next(iter(net.east.engine.by_serial.values()))


def _hostile_auth_reply(net: Net, mutate: Callable[[NPayloads], NPayloads]) -> list:
    """Run IKE_SA_INIT and IKE_AUTH; east's IKE_AUTH answer is decrypted, its payloads
    rewritten by ``mutate`` and re-protected with east's keys, then given to west."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # INIT request
    net.step()  # INIT response: west sends IKE_AUTH
    net.step()  # IKE_AUTH request: east answers
    frm, pkt = net.queue.pop(0)
    assert frm is net.east and not net.queue
    wi, ei = _west_ike(net), _east_ike(net)
    msg = parse_message(pkt.data)
    assert isinstance(msg.sk, wp.SKPayload)
    payloads = codec.decrypt(msg.sk, wi.prot_in)
    data = net.east.engine.encode(ei, 35, True, msg.message_id, mutate(payloads))
    acts: list = []
    for d in data:
        a = net.west.engine.receive(d, pkt.remote, pkt.local, net.now)
        net.apply(net.west, a)
        acts += a
    net.run()  # whatever west says to east about it
    return acts


def _replace(payloads: NPayloads, ptype: int, new: wp.Payload) -> NPayloads:
    return [new if p.payload_type == ptype else p for p in payloads]


def _sa_tuples(payloads: NPayloads) -> list:
    return codec.sa_tuples(next(p for p in payloads if isinstance(p, wp.SAPayload)))


def _with_sa(payloads: NPayloads, edit: Callable[[list], list]) -> NPayloads:
    return _replace(payloads, PT.SA, codec.sa(edit(_sa_tuples(payloads))))


def _sa_of(m: Message) -> wp.SAPayload:
    return next(p for p in m.payloads if isinstance(p, wp.SAPayload))


def _ke_of(m: Message) -> wp.KEPayload:
    return next(p for p in m.payloads if isinstance(p, wp.KEPayload))


def _ts(payloads: NPayloads, ptype: int) -> list[TS]:
    p = next(p for p in payloads if p.payload_type == ptype)
    assert isinstance(p, wp.TSPayload)
    got = codec.ts_list(p)
    assert got
    return got


# ================================================================== IKE_SA_INIT request
def _answer_payloads(acts: list) -> list[wp.Payload]:
    return [p for a in _sends(acts) for p in parse_message(a.data).payloads]


@pytest.mark.parametrize("what,answer", [
    ("nonce_15_octets", N.INVALID_SYNTAX),  # §3.9: at least 128 bits
    ("two_ke_payloads", N.INVALID_SYNTAX),
    ("ke_of_another_group", N.INVALID_KE_PAYLOAD),  # §1.2: names the group we want
    ("aes_without_key_length", N.NO_PROPOSAL_CHOSEN),  # §3.3.5: AES needs it
    ("aes_key_length_7", N.NO_PROPOSAL_CHOSEN),
])
def test_init_request_lies_get_the_rfc_answer(what: str, answer: int) -> None:
    """The responder answers the RFC 7296 notify, statelessly, and keeps nothing."""
    ike = "aes256-sha2_256-dh19"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})

    def mut(m: Message) -> None:
        ke = _ke_of(m)
        if what == "nonce_15_octets":
            next(p for p in m.payloads if p.payload_type == PT.NONCE).data = b"n" * 15
        elif what == "two_ke_payloads":
            m.payloads.insert(m.payloads.index(ke), wp.KEPayload(ke.group, ke.data))
        elif what == "ke_of_another_group":
            ke.group = 14
        else:
            for t in _sa_of(m).proposals[0].transforms:
                if t.type == TT.ENCR:
                    t.attributes = [] if what == "aes_without_key_length" else \
                        [wp.TransformAttribute(14, 7)]
    acts = _to_east(net, _init_request(net, mut))
    assert _answers(acts) == [answer]
    if answer == N.INVALID_KE_PAYLOAD:
        n = next(p for p in _answer_payloads(acts) if isinstance(p, wp.NotifyPayload))
        assert n.data == (19).to_bytes(2, "big")
    _no_state(net)
    assert not _internal_errors(net)


@pytest.mark.parametrize("what", ["natd_7_octets", "sighash_odd_length",
                                  "proposal_numbers_5_8", "ike_spi_in_proposal"])
def test_init_request_oddities_are_tolerated(what: str) -> None:
    """Harmless deviations get a normal answer: a NAT_DETECTION hash of the wrong size
    just does not match, the odd byte of SIGNATURE_HASH_ALGORITHMS is ignored, and the
    answer echoes the number of the proposal it accepts (§3.3.1) with no SPI (§3.3.1:
    none in IKE_SA_INIT)."""
    net = Net()

    def mut(m: Message) -> None:
        for p in m.payloads:
            if isinstance(p, wp.NotifyPayload):
                if what == "natd_7_octets" and p.notify_type == N.NAT_DETECTION_SOURCE_IP:
                    p.data = b"\x01" * 7
                if what == "sighash_odd_length" and \
                        p.notify_type == N.SIGNATURE_HASH_ALGORITHMS:
                    p.data = b"\x00\x02\x00"
        for i, pr in enumerate(_sa_of(m).proposals):
            if what == "proposal_numbers_5_8":
                pr.number = 5 + 3 * i
            if what == "ike_spi_in_proposal":
                pr.spi = b"12345678"
    acts = _to_east(net, _init_request(net, mut))
    got = _answer_payloads(acts)
    sa = next(p for p in got if isinstance(p, wp.SAPayload))
    assert [pt for pt in (PT.SA, PT.KE, PT.NONCE) if not any(p.payload_type == pt for p in got)] \
        == []
    [(num, _proto, spi, _ts)] = codec.sa_tuples(sa)
    assert num == (5 if what == "proposal_numbers_5_8" else 1) and spi == b""
    assert net.east.engine.n_halfopen == 1 and not _internal_errors(net)


# ================================================================== IKE_SA_INIT response
def _edit_proposal(what: str) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        sa = _sa_of(m)
        pr = sa.proposals[0]
        if what == "encr_not_offered":
            for t in pr.transforms:
                if t.type == TT.ENCR:
                    t.id, t.attributes = 3, []  # 3DES
        elif what == "two_proposals":
            sa.proposals.append(wp.Proposal(pr.number + 1, pr.protocol_id, b"",
                                            list(pr.transforms)))
        elif what == "ke_payload_of_another_group":
            _ke_of(m).group = 31
        elif what == "no_prf":
            pr.transforms = [t for t in pr.transforms if t.type != TT.PRF]
        elif what == "prf_twice":
            pr.transforms.append(wp.Transform(TT.PRF, 7, []))
        elif what == "integ_with_aead":
            pr.transforms.append(wp.Transform(TT.INTEG, 12, []))
        elif what == "esn_in_ike":
            pr.transforms.append(wp.Transform(TT.ESN, 1, []))
        elif what == "other_proposal_number":
            pr.number = 2
        elif what == "responder_spi_zero":
            m.spi_r = bytes(8)
    return mut


@pytest.mark.parametrize("what", ["encr_not_offered", "two_proposals",
                                  "ke_payload_of_another_group", "no_prf", "prf_twice",
                                  "integ_with_aead", "esn_in_ike", "other_proposal_number",
                                  "responder_spi_zero"])
def test_hostile_init_response_is_refused(what: str) -> None:
    """§2.7, §3.3.6: the answer must be one of our proposals, reduced to one transform
    of each type, with a KE of the chosen group and a real responder SPI."""
    net = Net()
    _hostile_init_reply(net, _edit_proposal(what))
    assert not net.queue  # no IKE_AUTH went out
    assert not net.west.engine.by_serial
    _west_failed_clean(net)
    logs = "\n".join(net.west.logs())
    assert "IKE_SA_INIT response has an unacceptable proposal" in logs or \
        "IKE_SA_INIT response lacks SA, KE or Nonce" in logs


@pytest.mark.parametrize("what", ["message_id_1", "nonce_8_octets"])
def test_malformed_init_response_is_ignored(what: str) -> None:
    """A response with message ID 1 or a malformed payload is dropped: the request
    stays in flight and is retransmitted (§2.1, §2.21)."""
    net = Net()

    def mut(m: Message) -> None:
        if what == "message_id_1":
            m.message_id = 1
        else:
            next(p for p in m.payloads if p.payload_type == PT.NONCE).data = b"n" * 8
    _hostile_init_reply(net, mut)
    wi = _west_ike(net)
    assert wi.outstanding is not None and wi.outstanding.msgid == 0
    sent = len(net.sent)
    net.advance(wi.conn.retransmit_interval + 0.1)
    assert len(net.sent) > sent  # retransmitted, and now answered for real
    assert net.established(net.west) and not _internal_errors(net)


def _notify_reply(net: Net, notifies: Callable[[IKESA, int], list[wp.Payload]],
                  rounds: int = 4) -> None:
    """West initiates; each of its IKE_SA_INIT requests is answered with ``notifies``."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    for k in range(rounds):
        net.queue.clear()
        wi = next(iter(net.west.engine.by_serial.values()), None)
        if wi is None:
            return
        data = Message(wi.spi_i, bytes(8), 34, False, True, 0, notifies(wi, k)).serialize()
        net.apply(net.west, net.west.engine.receive(data, W500, E500, net.now))
    net.queue.clear()


def _gone_for_good(net: Net) -> None:
    """Nothing is left of west's attempt, not even after an hour."""
    net.cut = True
    net.advance(3600)
    assert not net.west.engine.by_serial and net.west.engine.next_timer() is None
    assert not net.west.kernel_sas and not _internal_errors(net)


@pytest.mark.parametrize("cookie", [b"", b"c" * 65])
def test_init_response_with_a_cookie_of_bad_length(cookie: bytes) -> None:
    """§2.6: a COOKIE is 1 to 64 octets.  The initiator fails the attempt with a log;
    before, it dropped the answer after the request had left the window, so the IKE SA
    sat in INIT_I for ever (no retransmit, no timeout: a leak per attempt)."""
    net = Net()
    _notify_reply(net, lambda _wi, _k: [codec.notify(N.COOKIE, cookie)], rounds=1)
    assert any(f"COOKIE of {len(cookie)} bytes" in m for m in net.west.logs())
    assert any(e.kind is EventKind.FAILED for e in net.west.events)
    _gone_for_good(net)


def test_cookie_after_cookie_is_not_followed() -> None:
    """A responder that asks for a new COOKIE every time gets one retry, then the
    attempt fails (no endless loop)."""
    net = Net()
    _notify_reply(net, lambda _wi, k: [codec.notify(N.COOKIE, b"c" * (8 + k))])
    assert sum("received COOKIE" in m for m in net.west.logs()) == 1
    _gone_for_good(net)


@pytest.mark.parametrize("what", ["our_own_group", "group_not_allowed", "ping_pong"])
def test_invalid_ke_payload_lies(what: str) -> None:
    """INVALID_KE_PAYLOAD naming the group we sent (a loop), a group ike= does not allow,
    or alternating between two allowed groups: at most two retries, then a failure."""
    net = Net(west_kw={"ike": "aes256-sha2_256-modp2048,aes256-sha2_256-dh19"})

    def n(wi: IKESA, _k: int) -> list[wp.Payload]:
        group = {"our_own_group": wi.ke_group, "group_not_allowed": 31,
                 "ping_pong": 19 if wi.ke_group == 14 else 14}[what]
        return [codec.notify(N.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))]
    _notify_reply(net, n, rounds=5)
    retries = sum("received INVALID_KE_PAYLOAD" in m for m in net.west.logs())
    assert retries == (2 if what == "ping_pong" else 0)
    assert any("INVALID_KE_PAYLOAD asks for unacceptable group" in m for m in net.west.logs())
    _gone_for_good(net)


# ================================================================== IKE_AUTH response
def _v6_ts() -> TS:
    return TS(6, 0, 0, 65535, 0x20010DB8 << 96, (0x20010DB8 << 96) | 0xFFFF)


def _child_lie(what: str) -> Callable[[NPayloads], NPayloads]:
    def mut(pl: NPayloads) -> NPayloads:
        if what == "tsr_wider":
            r = _ts(pl, PT.TSr)[0]
            return _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, [r._replace(start=0,
                                                                             end=2**32 - 1)]))
        if what == "tsi_wider":
            i = _ts(pl, PT.TSi)[0]
            return _replace(pl, PT.TSi, codec.ts_payload(PT.TSi, [i._replace(start=i.start - 256)]))
        if what == "tsr_other_family":
            return _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, [_v6_ts()]))
        if what == "encr_not_offered":
            return _with_sa(pl, lambda s: [(n, p, sp, [(TT.ENCR, 12, 128), (TT.INTEG, 12, None),
                                                       *[t for t in ts if t[0] == TT.ESN]])
                                           for n, p, sp, ts in s])
        if what == "integ_with_aead":
            return _with_sa(pl, lambda s: [(n, p, sp, [*ts, (TT.INTEG, 12, None)])
                                           for n, p, sp, ts in s])
        if what == "two_proposals":
            return _with_sa(pl, lambda s: [*s, (s[0][0] + 1, *s[0][1:])])
        if what in ("esp_spi_zero", "esp_spi_reserved"):
            spi = bytes(4) if what == "esp_spi_zero" else (255).to_bytes(4, "big")
            return _with_sa(pl, lambda s: [(n, p, spi, ts) for n, p, _sp, ts in s])
        if what == "transport_not_asked":
            return [codec.notify(N.USE_TRANSPORT_MODE), *pl]
        if what == "esn_left_out":
            return _with_sa(pl, lambda s: [(n, p, sp, [t for t in ts if t[0] != TT.ESN])
                                           for n, p, sp, ts in s])
        raise AssertionError(what)
    return mut


@pytest.mark.parametrize("what,why", [
    ("tsr_wider", "are not acceptable"),  # §2.9: the responder may only narrow
    ("tsi_wider", "are not acceptable"),
    ("tsr_other_family", "are not acceptable"),
    ("encr_not_offered", "not one of our ESP proposals"),  # §2.7
    ("integ_with_aead", "not one of our ESP proposals"),
    ("two_proposals", "not one of our ESP proposals"),  # §3.3.6: exactly one
    ("esp_spi_zero", "ESP SPI 0x0 is reserved"),  # RFC 4303 §2.1: 0 never on the wire
    ("esp_spi_reserved", "ESP SPI 0xff is reserved"),  # 1..255 reserved by IANA
    ("transport_not_asked", "USE_TRANSPORT_MODE to a tunnel-mode request"),  # §1.3.1
    ("esn_left_out", "not one of our ESP proposals"),  # §2.7: one of each type offered
])
def test_hostile_child_sa_answer_is_refused(what: str, why: str) -> None:
    """The IKE SA is authenticated, but a Child SA answer we did not ask for installs
    nothing: no kernel SA, no policy, a FAILED event, a log saying why."""
    kw = {"esn": "yes"} if what == "esn_left_out" else {}
    net = Net(west_kw=kw, east_kw=kw)
    _hostile_auth_reply(net, _child_lie(what))
    assert net.established(net.west)
    assert not net.children(net.west)
    _west_failed_clean(net)
    assert any("Child SA failed" in m and why in m for m in net.west.logs()), net.west.logs()


def test_unasked_transport_mode_answer_deletes_the_peers_child_sa() -> None:
    """§1.3, §2.9: the Child SA we refuse is deleted on the responder too."""
    net = Net()
    _hostile_auth_reply(net, _child_lie("transport_not_asked"))
    assert not net.east.kernel_sas and not net.east.policies and not net.children(net.east)
    assert net.established(net.east)


def test_idr_other_than_rightid_is_refused() -> None:
    """IDr must match rightid= (§2.15): the initiator tells the responder
    (AUTHENTICATION_FAILED, §2.21.2) and keeps nothing; neither does the responder."""
    from pypluto.config.ids import parse_id

    net = Net()
    _hostile_auth_reply(net, lambda pl: _replace(pl, PT.IDr, codec.ident(
        PT.IDr, parse_id("@mallory.example"))))
    assert any("does not match the expected" in m for m in net.west.logs())
    assert not net.established(net.west) and not net.west.engine.by_serial
    assert not net.east.kernel_sas and not net.established(net.east)
    _west_failed_clean(net)


@pytest.mark.parametrize("what", ["cp_reply", "ipcomp_supported"])
def test_unasked_extras_in_ike_auth_answer_are_ignored(what: str) -> None:
    """A CFG_REPLY we did not request gives us no address; IPCOMP_SUPPORTED we did not
    offer turns no compression on.  The Child SA is the one we asked for."""
    import ipaddress

    from pypluto.iana import CFGType, CPAttr

    def mut(pl: NPayloads) -> NPayloads:
        if what == "cp_reply":
            return [*pl, wp.CPPayload(CFGType.CFG_REPLY, [wp.CPAttribute(
                CPAttr.INTERNAL_IP4_ADDRESS, ipaddress.ip_address("10.9.9.9").packed)])]
        return [*pl, codec.notify(N.IPCOMP_SUPPORTED, b"\x12\x34\x02")]
    net = Net()
    _hostile_auth_reply(net, mut)
    assert not _west_ike(net).local_vips
    [child] = net.children(net.west)
    assert child.local_ts == ["198.51.100.0/24"] and child.remote_ts == ["203.0.113.0/24"]
    assert "10.9.9.9" not in repr(net.west.policies) + repr(net.west.kernel_sas)
    assert len(net.west.kernel_sas) == 2 and not _internal_errors(net)


def test_responder_refuses_esp_spi_zero_in_the_request() -> None:
    """RFC 4303 §2.1: an initiator's ESP proposal with SPI 0 gets NO_PROPOSAL_CHOSEN
    for the Child SA; the responder installs no SA with SPI 0."""
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    frm, pkt = net.queue.pop(0)  # west's IKE_AUTH request
    wi, ei = _west_ike(net), _east_ike(net)
    msg = parse_message(pkt.data)
    assert isinstance(msg.sk, wp.SKPayload)
    pl = _with_sa(codec.decrypt(msg.sk, ei.prot_in),
                  lambda s: [(n, p, bytes(4), ts) for n, p, _sp, ts in s])
    for d in net.west.engine.encode(wi, 35, False, msg.message_id, pl):
        net.apply(net.east, net.east.engine.receive(d, pkt.remote, pkt.local, net.now))
    assert net.established(net.east) and not net.children(net.east)
    assert not net.east.kernel_sas and not net.east.policies
    assert any("SPI 0" in m for m in net.east.logs())
    net.run()
    assert any("NO_PROPOSAL_CHOSEN" in m for m in net.west.logs())
    assert not net.west.kernel_sas and not _internal_errors(net)


# ================================================================== RFC 7383 fragments
def _frag_net() -> Net:
    small = EngineSettings(fragment_size=120)
    return Net(west_kw={"fragmentation": "yes"}, east_kw={"fragmentation": "yes"},
               west_settings=small, east_settings=EngineSettings(fragment_size=120))


def _skf(data: bytes, first_inner: int, number: int, total: int, body: bytes) -> bytes:
    """``data``'s IKE header (length fixed) and an SKF payload with these fields."""
    gen = struct.pack("!BBHHH", first_inner, 0, 8 + len(body), number, total)
    return data[:24] + struct.pack("!I", 28 + len(gen) + len(body)) + gen + body


def _reseal(data: bytes, recv: SKProtector, send: SKProtector, *, first_inner: int | None = None,
            plain: Callable[[bytes], bytes] = lambda b: b) -> bytes:
    """An authentic copy of fragment ``data`` (protected with the sender's keys) with
    another Next Payload or plaintext."""
    skf = parse_message(data).sk
    assert isinstance(skf, wp.SKFPayload)
    text = plain(recv.decrypt(skf.aad, skf.body))
    first = skf.first_inner if first_inner is None else first_inner
    aad = _skf(data, first, skf.fragment_number, skf.total_fragments,
               bytes(send.body_length(len(text))))
    aad = aad[:28 + 8]
    return aad + send.encrypt(aad, text)


def _fragments_of(net: Net, frm: Side) -> list[SendPacket]:
    pkts = [p for s, p in net.queue if s is frm]
    assert len(pkts) >= 3 and not [p for s, p in net.queue if s is not frm]
    net.queue.clear()
    return pkts


def _fragmented_auth(net: Net, direction: str) -> tuple[list[SendPacket], Side, SKProtector,
                                                          SKProtector]:
    """The SKF fragments of west's IKE_AUTH request ("request") or east's answer
    ("response"), held back; (fragments, receiver, its SK_e in, the sender's out)."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    wi, ei = _west_ike(net), _east_ike(net)
    frags = _fragments_of(net, net.west)
    if direction == "request":
        assert ei.prot_in is not None and wi.prot_out is not None
        return frags, net.east, ei.prot_in, wi.prot_out
    for p in frags:
        net.apply(net.east, net.east.engine.receive(p.data, p.remote, p.local, net.now))
    frags = _fragments_of(net, net.east)
    assert wi.prot_in is not None and ei.prot_out is not None
    return frags, net.west, wi.prot_in, ei.prot_out


def _deliver(net: Net, to: Side, template: SendPacket, data: bytes) -> list:
    acts = to.engine.receive(data, template.remote, template.local, net.now)
    net.apply(to, acts)
    return acts


FORGED = ["more_total", "oversized", "total_65535", "number_0", "number_over_total",
          "fewer_total", "authentic_duplicate_other_content"]


@pytest.mark.parametrize("direction", ["request", "response"])
@pytest.mark.parametrize("what", FORGED)
def test_forged_fragment_never_spoils_reassembly(what: str, direction: str) -> None:
    """RFC 7383 §2.6: a fragment is checked (numbers, replay, then ICV) before it may
    change the reassembly queue.  A forged fragment (bad ICV) claiming more fragments
    or carrying a huge body used to discard the authentic fragments already held, so
    the exchange stalled until a retransmit (and an attacker could repeat it); an
    authentic duplicate with other content is a replay and is dropped.  Here the rest
    of the real fragments complete the message at once, with no time passing."""
    net = _frag_net()
    frags, to, recv, send = _fragmented_auth(net, direction)
    total = len(frags)
    first = frags[0]
    _deliver(net, to, first, first.data)
    junk = bytes(range(256)) * 4
    forged = {
        "more_total": _skf(first.data, 0, 2, total + 1, junk),
        "oversized": _skf(first.data, 0, 2, total, bytes(65520)),
        "total_65535": _skf(first.data, 0, 2, 65535, junk),
        "number_0": _skf(first.data, 0, 0, total, junk),
        "number_over_total": _skf(first.data, 0, total + 1, total, junk),
        "fewer_total": _skf(first.data, 0, 2, total - 1, junk),
    }.get(what)
    if forged is None:
        forged = _reseal(first.data, recv, send, plain=lambda b: b"X" * len(b))
    assert not _sends(_deliver(net, to, first, forged))
    assert to.engine.tm.frag_bytes > 0  # fragment 1 is still held
    for p in frags[1:]:
        _deliver(net, to, p, p.data)
    net.run()
    assert net.established(net.west) and net.established(net.east), to.logs()
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    assert net.west.engine.tm.frag_bytes == 0 and net.east.engine.tm.frag_bytes == 0
    assert not _internal_errors(net)


def test_authentic_later_fragment_with_next_payload_is_fine() -> None:
    """§2.5: only fragment 1's Next Payload counts; a later fragment's is ignored."""
    net = _frag_net()
    frags, to, recv, send = _fragmented_auth(net, "request")
    for i, p in enumerate(frags):
        data = p.data if i == 0 else _reseal(p.data, recv, send, first_inner=PT.NOTIFY)
        _deliver(net, to, p, data)
    net.run()
    assert net.established(net.east) and net.children(net.west)


def test_first_fragment_with_next_payload_zero() -> None:
    """An authentic fragment 1 naming no first inner payload: the reassembled chain is
    malformed, answered INVALID_SYNTAX (§2.21.2), and the half-open SA goes."""
    net = _frag_net()
    frags, to, recv, send = _fragmented_auth(net, "request")
    acts: list = []
    for i, p in enumerate(frags):
        data = _reseal(p.data, recv, send, first_inner=0) if i == 0 else p.data
        acts += _deliver(net, to, p, data)
    assert _sends(acts) and not net.east.engine.by_serial and not net.east.kernel_sas
    assert any("malformed encrypted payloads" in m for m in net.east.logs())
    net.run()
    assert not net.west.kernel_sas and not _internal_errors(net)


def test_fragments_in_ike_sa_init_request() -> None:
    """RFC 7383 §2.5: IKE_SA_INIT is never fragmented; an SKF in it is a request
    without SA, KE or Ni: INVALID_SYNTAX, no state."""
    net = Net()
    spi_i = b"\x11" * 8
    head = struct.pack("!8s8sBBBBII", spi_i, bytes(8), PT.SKF, 0x20, 34, 0x08, 0, 0)
    data = _skf(head, PT.SA, 1, 2, b"\x00" * 64)
    acts = _to_east(net, data)
    assert _answers(acts) == [N.INVALID_SYNTAX]
    _no_state(net)
    assert not _internal_errors(net)


def test_our_own_message_too_large_fails_cleanly() -> None:
    """An ID too long for its payload (RFC 7296 §3.5; ``parse_id`` refuses it, so only a
    Connection built another way has one): the attempt fails as a local error with
    the reason, not as an internal error."""
    from pypluto.config.model import Identity
    from pypluto.iana import IDType

    net = Net()
    c = net.west.engine.connections["west-east"]
    end = c.left if c.local_is_left else c.right
    end.id = Identity(IDType.ID_FQDN, b"a" * 70000, "@" + "a" * 70000)
    net.up()
    assert not _internal_errors(net)
    assert any("cannot send IKE_AUTH" in m and "too long" in m for m in net.west.logs()), \
        net.west.logs()
    assert any(e.kind is EventKind.FAILED for e in net.west.events)
    assert not net.west.engine.by_serial and not net.west.kernel_sas
