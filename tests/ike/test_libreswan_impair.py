"""Libreswan 5.2's IMPAIR tests, replayed against our engine (RFC 7296 §2.3, §2.21, §3.2).

Each row names the ``testing/pluto/<dir>`` of Libreswan v5.2 whose ``ipsec whack
--impair ...`` makes one end misbehave.  Here the misbehaving end is reproduced by
mutating the honest engine's real messages on the wire (the harness's ``Net``: west
initiates, east responds), with our own code; the honest end must react as that
test's console shows or, where Libreswan and RFC 7296 part ways, as the RFC says
(the row says so).  Throughout: no internal error, no SA up on one end only, no
half-open state left behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import TransformType as TT
from pypluto.ike import codec
from pypluto.ike.actions import EventKind, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks.ike_auth import _auth_data
from pypluto.wire import payloads as wp
from pypluto.wire.message import Message, encode_sk_message, parse_message

from .harness import PSK, Net, Side, check_pair

Payloads = list[wp.Payload]
INIT, AUTH, CCSA, INFO = 34, 35, 36, 37
BOGUS = 255  # the unknown payload type Libreswan's add_unknown_v2_payload_to adds
# AES-CBC only, as impair-08-ikev2-key-length-attribute's "aes128" conn: every proposal
# has a key length attribute
AES = {"ike": "aes128-sha2_256-dh19", "esp": "aes128-sha2_256"}


# ------------------------------------------------------------------ helpers
def _ike_of(side: Side, spi_i: bytes) -> IKESA | None:
    return next((i for i in side.engine.by_serial.values() if i.spi_i == spi_i), None)


def _deliver(net: Net, to: Side, pkt: SendPacket, data: bytes) -> list:
    acts = to.engine.receive(data, pkt.remote, pkt.local, net.now)
    net.apply(to, acts)
    return acts


def _intercept(net: Net, sender: str, exchange: int, response: bool, *,
               plain: Callable[[Message], None] | None = None,
               sk: Callable[[Payloads], Payloads] | None = None,
               raw: Callable[[bytes], list[bytes]] | None = None,
               outer: Sequence[wp.Payload] = (), start: bool = True,
               resign: bool = True) -> list:
    """Carry messages until ``sender``'s first (exchange, response) message; mutate it
    (``plain``: the parsed outer message; ``sk``: the decrypted inner payloads,
    re-protected with the sender's keys, after the unencrypted ``outer`` ones; ``raw``:
    the bytes, into any number of datagrams), give it to the other end and return what
    that end did.  ``resign``: the impaired end's own copy of an IKE_SA_INIT message
    (which its AUTH signs) becomes the mutated one."""
    if start:
        net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    for _ in range(50):
        assert net.queue, "the message never went out"
        frm, pkt = net.queue[0]
        m = parse_message(pkt.data)
        if frm.name == sender and m.exchange == exchange and m.response == response:
            break
        net.step()
    else:  # pragma: no cover
        raise AssertionError("no such message")
    net.queue.pop(0)
    to = net.other(frm)
    datas = [bytes(pkt.data)]
    if plain is not None:
        plain(m)
        datas = [m.serialize()]
        si = _ike_of(frm, m.spi_i)
        if exchange == INIT and si is not None and resign:
            if response:
                si.init_response = datas[0]
            else:
                si.init_request = datas[0]
    if sk is not None or outer:
        ri, si = _ike_of(to, m.spi_i), _ike_of(frm, m.spi_i)
        assert ri is not None and si is not None and isinstance(m.sk, wp.SKPayload)
        inner = codec.decrypt(m.sk, ri.prot_in)
        inner = sk(inner) if sk is not None else inner
        datas = frm.engine.encode(si, exchange, response, m.message_id, inner)
        if outer:
            assert len(datas) == 1 and si.prot_out is not None
            datas = [encode_sk_message(m.spi_i, m.spi_r, exchange, initiator=m.initiator,
                                       response=response, message_id=m.message_id,
                                       inner=inner, protector=si.prot_out, outer=outer)]
    if raw is not None:
        datas = [d for x in datas for d in raw(x)]
    acts: list = []
    for d in datas:
        acts += _deliver(net, to, pkt, d)
    return acts


def _plain_notifies(acts: list) -> list[int]:
    out = []
    for a in acts:
        if isinstance(a, SendPacket):
            m = parse_message(a.data)
            out += [int(p.notify_type) for p in m.payloads if isinstance(p, wp.NotifyPayload)]
    return out


def _sk_notifies(net: Net, frm: Side, acts: list) -> list[int]:
    """Notify types in the encrypted messages ``frm`` sent among ``acts``."""
    out = []
    other = net.other(frm)
    for a in acts:
        if isinstance(a, SendPacket):
            m = parse_message(a.data)
            if isinstance(m.sk, wp.SKPayload):
                ike = _ike_of(other, m.spi_i)
                assert ike is not None
                out += [int(p.notify_type) for p in codec.decrypt(m.sk, ike.prot_in)
                        if isinstance(p, wp.NotifyPayload)]
    return out


def _no_internal_error(net: Net) -> None:
    bad = [m for m in net.west.logs() + net.east.logs()
           if "internal error" in m or "Traceback" in m]
    assert not bad, bad


def _both_up(net: Net, children: int = 1) -> None:
    assert len(net.established(net.west)) == 1 and len(net.established(net.east)) == 1
    assert len(net.children(net.west)) == children == len(net.children(net.east))
    assert len(net.west.kernel_sas) == len(net.east.kernel_sas) == 2 * children
    _no_internal_error(net)


def _nothing_up(net: Net, *, settle: float = 120.0) -> None:
    """After the retransmits and timeouts, nothing anywhere: no SA, no half-open."""
    net.advance(settle)
    for side in (net.west, net.east):
        assert not net.established(side) and not net.children(side), side.name
        assert not side.kernel_sas, side.name
    assert not net.east.engine.by_serial and net.east.engine.n_halfopen == 0
    assert any(e.kind is EventKind.FAILED for e in net.west.events)
    _no_internal_error(net)


def _unknown(critical: bool) -> wp.UnknownPayload:
    return wp.UnknownPayload(BOGUS, b"impair", critical=critical)


def _add_unknown_plain(critical: bool) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        at = len(m.payloads) - (1 if m.sk is not None else 0)
        m.payloads.insert(at, _unknown(critical))
    return mut


def _add_unknown_sk(critical: bool) -> Callable[[Payloads], Payloads]:
    return lambda ps: [*ps, _unknown(critical)]


def _drop(ptype: int) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        m.payloads = [p for p in m.payloads if p.payload_type != ptype]
    return mut


def _ke(edit: Callable[[wp.KEPayload], None]) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        ke = m.get(PT.KE)
        assert isinstance(ke, wp.KEPayload)
        edit(ke)
    return mut


def _header_flags(m: Message) -> None:
    m.reserved_flags = 0x07  # the three low flag bits RFC 7296 §3.1 reserves


def _payload_flags(m: Message) -> None:
    for p in m.payloads:
        p.header_reserved = 0x7F  # the seven reserved bits after the critical bit


def _minor(m: Message) -> None:
    m.minor_version = 1


def _major3(data: bytes) -> list[bytes]:
    return [data[:17] + bytes([0x30]) + data[18:]]


def _reserved_fields(m: Message) -> None:
    """ikev2-impair-08-ignore-reserved: every reserved octet of SA and KE set."""
    ke = m.get(PT.KE)
    assert isinstance(ke, wp.KEPayload)
    ke.reserved = 1
    for sa in m.payloads:
        if isinstance(sa, wp.SAPayload):
            for pr in sa.proposals:
                pr.reserved = 1
                for t in pr.transforms:
                    t.reserved = 0x0101


def _proposals(edit: Callable[[wp.Proposal], None]) -> Callable[[Payloads], Payloads]:
    """``edit`` applied to every proposal of every SA payload."""
    def run(ps: Payloads) -> Payloads:
        for p in ps:
            if isinstance(p, wp.SAPayload):
                for pr in p.proposals:
                    edit(pr)
        return ps
    return run


def _sa_plain(edit: Callable[[wp.Proposal], None]) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        _proposals(edit)(m.payloads)
    return mut


def _key_length(value: int | None) -> Callable[[wp.Proposal], None]:
    """impair-08-ikev2-key-length-attribute: the ENCR key length set to ``value``, or
    (None) the attribute sent twice."""
    def edit(pr: wp.Proposal) -> None:
        for t in pr.transforms:
            if t.type == TT.ENCR and t.attributes:  # (ChaCha20 has no key length)
                (attr,) = t.attributes
                t.attributes = [attr, wp.TransformAttribute(attr.type, attr.value)] \
                    if value is None else [wp.TransformAttribute(attr.type, value)]
    return edit


def _add_transform(ttype: int, tid: int) -> Callable[[wp.Proposal], None]:
    """impair-11-ikev2-transform (ikev2_add_{ike,child}_transform), impair-12-ikev2-
    transform-dh-none (v2_proposal_dh:allow-none)."""
    return lambda pr: pr.transforms.append(wp.Transform(ttype, tid, []))


def _zero_ke(ke: wp.KEPayload) -> None:
    ke.data = bytes(len(ke.data))


def _empty_ke(ke: wp.KEPayload) -> None:
    ke.data = b""


# ================================================================== IKE_SA_INIT request
@pytest.mark.parametrize("plain,raw,answer,up", [
    # ikev2-unknown-payload-01-sa-init: "non-critical payload ignored"
    (_add_unknown_plain(False), None, None, True),
    # ikev2-unknown-payload-01-sa-init-critical: §2.5 UNSUPPORTED_CRITICAL_PAYLOAD
    (_add_unknown_plain(True), None, N.UNSUPPORTED_CRITICAL_PAYLOAD, False),
    # ikev2-impair-05-send-zero-ike-ke: the DH computation fails; answered as an
    # unusable KE (RFC 6989 names no notify; the initiator gives up: same group)
    (_ke(_zero_ke), None, N.INVALID_KE_PAYLOAD, False),
    # ikev2-impair-06-send-no-ike-ke: "responding ... with INVALID_SYNTAX"
    (_drop(PT.KE), None, N.INVALID_SYNTAX, False),
    # ikev2-impair-07-send-empty-ike-ke: "responding ... with INVALID_SYNTAX"
    (_ke(_empty_ke), None, N.INVALID_SYNTAX, False),
    # ikev2-isakmp-reserved-flags-01: §3.1 reserved flags ignored on receipt
    (_header_flags, None, None, True),
    # ikev2-payload-reserved-flags-01: §3.2 RESERVED bits ignored on receipt
    (_payload_flags, None, None, True),
    # ikev2-minor-version-responder: §2.5 a higher minor version is accepted
    (_minor, None, None, True),
    # ikev2-impair-08-ignore-reserved: reserved octets of SA/KE ignored
    (_reserved_fields, None, None, True),
    # ikev2-major-version-initiator: §2.5 "SHOULD send ... INVALID_MAJOR_VERSION"
    (None, _major3, N.INVALID_MAJOR_VERSION, False),
    # impair-08-ikev2-key-length-attribute (ike_key_length_attribute:0): "ignoring
    # IKE_SA_INIT response containing NO_PROPOSAL_CHOSEN"
    (_sa_plain(_key_length(0)), None, N.NO_PROPOSAL_CHOSEN, False),
    # ... (ike_key_length_attribute:duplicate): established
    (_sa_plain(_key_length(None)), None, None, True),
    # impair-11-ikev2-transform (ikev2_add_ike_transform:0x60000): transform type 6 is
    # ADDKE1 now (RFC 9370), ID 0 = NONE: the proposal stays acceptable
    (_sa_plain(_add_transform(6, 0)), None, None, True),
    # ... (ikev2_add_ike_transform:0x3ffff): an unknown INTEG ID is just not chosen
    (_sa_plain(_add_transform(TT.INTEG, 0xFFFF)), None, None, True),
    # ... an unknown transform type: §3.3.6 the proposal is rejected
    (_sa_plain(_add_transform(200, 1)), None, N.NO_PROPOSAL_CHOSEN, False),
], ids=["unknown", "unknown_critical", "ke_zero", "ke_omitted", "ke_empty",
        "header_reserved_flags", "payload_reserved_flags", "minor_version_1",
        "reserved_fields", "major_version_3", "key_length_0", "key_length_twice",
        "addke1_none", "unknown_integ_id", "unknown_transform_type"])
def test_impaired_init_request(plain: Callable[[Message], None] | None,
                               raw: Callable[[bytes], list[bytes]] | None,
                               answer: int | None, up: bool) -> None:
    """East, the honest responder, gets west's impaired IKE_SA_INIT request."""
    net = Net(west_kw=AES, east_kw=AES)
    acts = _intercept(net, "west", INIT, False, plain=plain, raw=raw)
    got = _plain_notifies(acts)
    if answer is None:
        assert net.east.engine.n_halfopen == 1
        assert not [t for t in got if t < 16384]  # a normal answer, no error
    else:
        assert got == [answer]
        assert not net.east.engine.by_serial and net.east.engine.n_halfopen == 0
    net.run()
    if up:
        _both_up(net)
    else:
        _nothing_up(net)


# ================================================================== IKE_SA_INIT response
def _unsolicited(ntype: int) -> Callable[[Message], None]:
    def mut(m: Message) -> None:
        m.payloads.append(wp.NotifyPayload(0, b"", ntype, b""))
    return mut


@pytest.mark.parametrize("plain,raw,accepted,up", [
    # ikev2-unknown-payload-01-sa-init (east's part): non-critical ignored
    (_add_unknown_plain(False), None, True, True),
    # ikev2-unknown-payload-01-sa-init-critical: "message response contained an unknown
    # critical payload" -> rejected (§2.5); the retransmit gets the real answer
    (_add_unknown_plain(True), None, False, True),
    # ikev2-impair-05-send-zero-ike-ke: "shared key calculation ... failed", fatal
    (_ke(_zero_ke), None, False, False),
    # ikev2-impair-06-send-no-ike-ke: "ignoring IKE_SA_INIT response ... missing KE";
    # we fail at once (as for the lie-proof checks of test_hostile_establishment)
    (_drop(PT.KE), None, False, False),
    # ikev2-impair-07-send-empty-ike-ke: malformed, dropped; the retransmit succeeds
    (_ke(_empty_ke), None, False, True),
    # ikev2-isakmp-reserved-flags-02, ikev2-payload-reserved-flags-01: ignored
    (_header_flags, None, True, True),
    (_payload_flags, None, True, True),
    # ikev2-minor-version-initiator: accepted
    (_minor, None, True, True),
    # ikev2-major-version-responder: dropped (never answer a response, §2.5)
    (None, _major3, False, True),
    # ikev2-frag-06-unsolicited: "unsolicited IKEV2_FRAGMENTATION_SUPPORTED ... ignored"
    (_unsolicited(N.IKEV2_FRAGMENTATION_SUPPORTED), None, True, True),
    # ikev2-intermediate-03-unsolicited (github/1574): no IKE_INTERMEDIATE follows
    (_unsolicited(N.INTERMEDIATE_EXCHANGE_SUPPORTED), None, True, True),
], ids=["unknown", "unknown_critical", "ke_zero", "ke_omitted", "ke_empty",
        "header_reserved_flags", "payload_reserved_flags", "minor_version_1",
        "major_version_3", "unsolicited_fragmentation", "unsolicited_intermediate"])
def test_impaired_init_response(plain: Callable[[Message], None] | None,
                                raw: Callable[[bytes], list[bytes]] | None,
                                accepted: bool, up: bool) -> None:
    """West, the honest initiator (fragmentation=no, no IKE_INTERMEDIATE), gets east's
    impaired IKE_SA_INIT response."""
    net = Net(west_kw={"fragmentation": "no"})
    acts = _intercept(net, "east", INIT, True, plain=plain, raw=raw, resign=accepted)
    sent = [parse_message(a.data).exchange for a in acts if isinstance(a, SendPacket)]
    assert sent == ([AUTH] if accepted else [])
    net.run()
    assert all(parse_message(d).exchange != 43 for _, d in net.sent)  # no IKE_INTERMEDIATE
    if up:
        net.advance(30)  # a rejected answer: the retransmitted request gets the real one
        _both_up(net)
        (w,) = net.west.engine.by_serial.values()
        assert not w.frag_ok and w.intermediate is None
    else:
        _nothing_up(net)


# ================================================================== IKE_AUTH request
def _omit_child(ps: Payloads) -> Payloads:
    return [p for p in ps if p.payload_type not in (PT.SA, PT.TSi, PT.TSr)]


def _no_selectors(ptype: int) -> Callable[[Payloads], Payloads]:
    def edit(ps: Payloads) -> Payloads:
        return [wp.TSPayload([]) if p.payload_type == ptype else p for p in ps]
    return edit


@pytest.mark.parametrize("outer,sk,answer,ike_up,child_up", [
    # ikev2-unknown-payload-02-auth: unencrypted, non-critical: ignored
    ([_unknown(False)], None, None, True, True),
    # ikev2-unknown-payload-02-auth-critical (west's part): unencrypted but covered by
    # the ICV: §2.5 "MUST" answer UNSUPPORTED_CRITICAL_PAYLOAD (once the ICV checks)
    ([_unknown(True)], None, N.UNSUPPORTED_CRITICAL_PAYLOAD, False, False),
    # ikev2-unknown-payload-03-auth-sk: encrypted, non-critical: ignored
    ((), _add_unknown_sk(False), None, True, True),
    # ikev2-unknown-payload-03-auth-sk-critical: §2.5 UNSUPPORTED_CRITICAL_PAYLOAD
    ((), _add_unknown_sk(True), N.UNSUPPORTED_CRITICAL_PAYLOAD, False, False),
    # ikev2-impair-09-omit-first-child: the IKE SA, no Child SA (RFC 6023 style)
    ((), _omit_child, None, True, False),
    # ikev2-impair-10-nr-ts-selectors (TSi:0): Libreswan answers TS_UNACCEPTABLE and keeps
    # the IKE SA; so do we (a TS payload with no selector is well-formed, §3.13; real
    # strongSwan 5.9.8 sends one when its selectors narrow to nothing)
    ((), _no_selectors(PT.TSi), N.TS_UNACCEPTABLE, True, False),
    ((), _no_selectors(PT.TSr), N.TS_UNACCEPTABLE, True, False),
    # impair-08-ikev2-key-length-attribute (child_key_length_attribute:0): "IKE_AUTH
    # response rejected Child SA with NO_PROPOSAL_CHOSEN"; (:duplicate): established
    ((), _proposals(_key_length(0)), N.NO_PROPOSAL_CHOSEN, True, False),
    ((), _proposals(_key_length(None)), None, True, True),
    # impair-11-ikev2-transform (ikev2_add_child_transform): as for the IKE proposal
    ((), _proposals(_add_transform(6, 0)), None, True, True),
    ((), _proposals(_add_transform(TT.INTEG, 0xFFFF)), None, True, True),
    ((), _proposals(_add_transform(200, 1)), N.NO_PROPOSAL_CHOSEN, True, False),
    # impair-12-ikev2-transform-dh-none (v2_proposal_dh:allow-none): KE=NONE, or a
    # real group, in IKE_AUTH's Child SA proposal is accepted (no KE there, §1.2)
    ((), _proposals(_add_transform(TT.KE, 0)), None, True, True),
    ((), _proposals(_add_transform(TT.KE, 19)), None, True, True),
], ids=["unknown_unencrypted", "unknown_unencrypted_critical", "unknown_encrypted",
        "unknown_encrypted_critical", "omit_first_child", "zero_tsi_selectors",
        "zero_tsr_selectors", "key_length_0", "key_length_twice", "addke1_none",
        "unknown_integ_id", "unknown_transform_type", "ke_none", "ke_19"])
def test_impaired_auth_request(outer: Sequence[wp.Payload],
                               sk: Callable[[Payloads], Payloads] | None,
                               answer: int | None, ike_up: bool, child_up: bool) -> None:
    """East, the honest responder, gets west's impaired IKE_AUTH request."""
    net = Net(west_kw=AES, east_kw=AES)
    acts = _intercept(net, "west", AUTH, False, outer=outer, sk=sk)
    errors = [t for t in _sk_notifies(net, net.east, acts) if t < 16384]
    assert errors == ([answer] if answer else [])
    net.run()
    if child_up:
        _both_up(net)
    elif ike_up:
        _both_up(net, children=0)
    else:
        _nothing_up(net)


def test_ike_auth_sent_as_create_child_sa_is_dropped() -> None:
    """ikev2-07-invalid-xchg (bad_ike_auth_xchg): message ID 1 arrives, well protected,
    as CREATE_CHILD_SA before IKE_AUTH: dropped without an answer and without touching
    the half-open SA (CVE-2014-2338); the real IKE_AUTH still completes it."""
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    frm, pkt = net.queue.pop(0)
    m = parse_message(pkt.data)
    ei, wi = _ike_of(net.east, m.spi_i), _ike_of(net.west, m.spi_i)
    assert ei is not None and wi is not None and isinstance(m.sk, wp.SKPayload)
    inner = codec.decrypt(m.sk, ei.prot_in)
    acts: list = []
    for d in net.west.engine.encode(wi, CCSA, False, 1, inner):
        acts += _deliver(net, net.east, pkt, d)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert ei.next_in == 1 and not ei.established and not net.east.kernel_sas
    _deliver(net, net.east, pkt, bytes(pkt.data))
    net.run()
    _both_up(net)


def test_nonzero_reserved_id_octets_are_authenticated_as_sent() -> None:
    """ikev2-payload-reserved-id-flags-01: RFC 7296 §2.15 signs RestOfInitIDPayload as
    sent, reserved octets included, while §3.5 says to ignore them on receipt: east
    must verify AUTH over the received bytes (not a re-serialized ID)."""
    net = Net()

    def edit(ps: Payloads) -> Payloads:
        (wi,) = net.west.engine.by_serial.values()
        idi = next(p for p in ps if isinstance(p, wp.IDPayload) and p.payload_type == PT.IDi)
        idi.reserved = 0x000001
        auth = next(p for p in ps if isinstance(p, wp.AuthPayload))
        auth.data = _auth_data(wi, PSK, codec.id_body(idi), True, 1)
        return ps
    acts = _intercept(net, "west", AUTH, False, sk=edit)
    assert not [t for t in _sk_notifies(net, net.east, acts) if t < 16384]
    net.run()
    _both_up(net)


@pytest.mark.parametrize("how", ["corrupt", "duplicate", "replay_after"])
def test_replayed_and_corrupted_auth_request(how: str) -> None:
    """ikev2-impair-04-corrupt-auth-sk-payload (corrupt_encrypted, replay_encrypted),
    ikev2-impair-01-replay-duplicates (duplicate_inbound): a corrupted SK payload is
    dropped in silence (§2.21.2; the retransmit completes the exchange); a duplicate
    request gets the very same answer again (§2.1) and creates nothing new."""
    net = Net()
    first: list[bytes] = []

    def raw(d: bytes) -> list[bytes]:
        first.append(d)
        if how == "corrupt":
            return [d[:-1] + bytes([d[-1] ^ 1])]
        return [d, d] if how == "duplicate" else [d]
    acts = _intercept(net, "west", AUTH, False, raw=raw)
    answers = [a.data for a in acts if isinstance(a, SendPacket)]
    if how == "corrupt":
        assert not answers and not net.established(net.east)
        net.advance(30)
    elif how == "duplicate":
        assert len(answers) == 2 and answers[0] == answers[1]
    net.run()
    _both_up(net)
    if how == "replay_after":
        (ei,) = net.east.engine.by_serial.values()
        again = net.east.engine.receive(first[0], ei.local, ei.remote, net.now)
        net.apply(net.east, again)
        assert [a.data for a in again if isinstance(a, SendPacket)] == answers
        net.queue.clear()
        _both_up(net)


def test_replayed_init_request_after_establishment() -> None:
    """ikev2-impair-02-replay-forward (replay_inbound): every earlier message again;
    the IKE_SA_INIT request of an established SA makes no second SA (§2.1)."""
    net = Net()
    net.up()
    _both_up(net)
    (w,) = net.west.engine.by_serial.values()
    for _, data in [x for x in net.sent if x[0] == "west"]:
        net.apply(net.east, net.east.engine.receive(data, w.remote, w.local, net.now))
    net.run()
    _both_up(net)
    assert len(net.east.engine.by_serial) == 1 and net.east.engine.n_halfopen == 0


# ================================================================== IKE_AUTH response
def _unsolicited_sk(ntype: int) -> Callable[[Payloads], Payloads]:
    return lambda ps: [*ps, wp.NotifyPayload(0, b"", ntype, b"")]


@pytest.mark.parametrize("outer,sk,accepted", [
    # ikev2-unknown-payload-02-auth: unencrypted, non-critical: ignored
    ([_unknown(False)], None, True),
    # ikev2-unknown-payload-02-auth-critical: "message response contained an unknown
    # critical payload" -> rejected (§2.5); east's cached answer completes it later
    ([_unknown(True)], None, False),
    # ikev2-unknown-payload-03-auth-sk: encrypted, non-critical: ignored
    ((), _add_unknown_sk(False), True),
    # ikev2-unknown-payload-03-auth-sk-critical: rejected
    ((), _add_unknown_sk(True), False),
    # ikev2-mobike-07-unsolicited-response: MOBIKE_SUPPORTED we did not offer: ignored
    ((), _unsolicited_sk(N.MOBIKE_SUPPORTED), True),
    # ikev2-14-compress-unsolicited: IPCOMP_SUPPORTED we did not ask for.  Libreswan
    # refuses the Child SA; we ignore the notify (RFC 7296 §3.10.1: only an answer to
    # our IPCOMP_SUPPORTED means compression) and install plain ESP, as east did
    ((), _unsolicited_sk(N.IPCOMP_SUPPORTED), True),
], ids=["unknown_unencrypted", "unknown_unencrypted_critical", "unknown_encrypted",
        "unknown_encrypted_critical", "unsolicited_mobike", "unsolicited_ipcomp"])
def test_impaired_auth_response(outer: Sequence[wp.Payload],
                                sk: Callable[[Payloads], Payloads] | None,
                                accepted: bool) -> None:
    """West, the honest initiator, gets east's impaired IKE_AUTH response."""
    net = Net()
    _intercept(net, "east", AUTH, True, outer=outer, sk=sk)
    assert bool(net.established(net.west)) == accepted
    assert bool(net.west.kernel_sas) == accepted
    net.run()
    net.advance(30)
    _both_up(net)
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert not w.mobike and not e.mobike
    check_pair(net)  # the same plain ESP SAs on both ends


# ================================================================== Child SA rekey
def _half(kind: str) -> Callable[[Payloads], Payloads]:
    """Every selector of TSi/TSr replaced by its first half ("subnet") or by the
    network twice its size ("supernet")."""
    def edit(ps: Payloads) -> Payloads:
        out: Payloads = []
        for p in ps:
            if isinstance(p, wp.TSPayload):
                new = []
                for t in codec.ts_list(p) or []:
                    n = t.networks()[0]
                    n = next(n.subnets(1)) if kind == "subnet" else n.supernet(1)
                    new.append(t._replace(start=int(n.network_address),
                                          end=int(n.broadcast_address)))
                p = codec.ts_payload(p.payload_type, new)
            out.append(p)
        return out
    return edit


@pytest.mark.parametrize("sender,kind", [
    # ikev2-child-rekey-10-impair-rekey-respond-subnet: "road fail to rekey" (the
    # initiator refuses; RFC 7296 §2.9.2: a rekey keeps the selectors)
    ("east", "subnet"),
    # ikev2-child-rekey-10-impair-rekey-respond-supernet
    ("east", "supernet"),
    # ikev2-child-rekey-10-impair-rekey-initiate-subnet: the rekey request asks less
    ("west", "subnet"),
    # ikev2-child-rekey-09-windows (rekey_initiate_supernet): the request asks more;
    # the responder narrows it back to its own conn
    ("west", "supernet"),
])
def test_rekey_with_other_selectors(sender: str, kind: str) -> None:
    """Whatever the lie, both ends end with one Child SA with the same, original
    selectors (the first half of a /24 never replaces the /24)."""
    net = Net()
    net.up()
    (w,) = net.west.engine.by_serial.values()
    old_local, old_remote = list(w.children[0].local_ts), list(w.children[0].remote_ts)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    _intercept(net, sender, CCSA, sender == "east", sk=_half(kind), start=False)
    net.run()
    net.advance(60)
    _both_up(net)  # the refused rekey may have been replaced by a reauthentication
    (wc,), (ec,) = ([c for i in side.engine.by_serial.values() for c in i.children]
                    for side in (net.west, net.east))
    assert (wc.local_ts, wc.remote_ts) == (old_local, old_remote)
    assert (ec.local_ts, ec.remote_ts) == (old_remote, old_local)
    check_pair(net)


@pytest.mark.parametrize("icv_ok", [True, False])
def test_unknown_critical_unencrypted_payload_in_informational(icv_ok: bool) -> None:
    """ikev2-unknown-payload-02-auth-critical, after IKE_AUTH: an INFORMATIONAL request
    with an unknown critical payload before SK is answered UNSUPPORTED_CRITICAL_PAYLOAD
    (§2.5) with the IKE SA kept; with a bad ICV it is dropped in silence (§2.21.2)."""
    net = Net()
    net.up()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert w.prot_out is not None
    msgid, next_in = w.next_out, e.next_in
    data = encode_sk_message(w.spi_i, w.spi_r, INFO, initiator=True, response=False,
                             message_id=msgid, inner=[], protector=w.prot_out,
                             outer=[_unknown(True)])
    if not icv_ok:
        data = data[:-1] + bytes([data[-1] ^ 1])
    acts = net.east.engine.receive(data, e.local, e.remote, net.now)
    net.apply(net.east, acts)
    if icv_ok:
        assert _sk_notifies(net, net.east, acts) == [N.UNSUPPORTED_CRITICAL_PAYLOAD]
        assert e.next_in == next_in + 1
    else:
        assert not [a for a in acts if isinstance(a, SendPacket)] and e.next_in == next_in
    net.queue.clear()
    w.next_out = msgid + (1 if icv_ok else 0)
    _both_up(net)


# ================================================================== more of IKE_SA_INIT
def test_zero_initiator_spi_is_dropped() -> None:
    """impair-10-ikev2-ike-initiator-spi-0: "IKE_SA_INIT request has zero IKE SA
    Initiator SPI; dropping packet" (RFC 7296 §3.1: it "MUST NOT be zero"): no answer,
    no half-open SA; the honest retransmit (with a real SPI) still succeeds."""
    net = Net()

    def zero(m: Message) -> None:
        m.spi_i = bytes(8)
    acts = _intercept(net, "west", INIT, False, plain=zero, resign=False)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert not net.east.engine.by_serial and net.east.engine.n_halfopen == 0
    net.advance(30)
    _both_up(net)


def _bogus_cookie(m: Message) -> None:
    for p in m.payloads:
        if isinstance(p, wp.NotifyPayload) and p.notify_type == N.COOKIE:
            p.data = bytes(x ^ 0xFF for x in p.data)


def test_bogus_cookie_gets_a_fresh_cookie_and_no_state() -> None:
    """ikev2-dcookie-02 (send_bogus_dcookie, east busy): the mangled COOKIE is not
    accepted; east answers a fresh COOKIE (§2.6) and keeps nothing; west, which
    retries once only, gives up (Libreswan: "No response (or no acceptable response)")."""
    net = Net(east_settings=EngineSettings(force_busy=True))
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # the request: COOKIE demanded
    net.step()  # west resends with the cookie
    acts = _intercept(net, "west", INIT, False, plain=_bogus_cookie, start=False,
                      resign=False)
    assert _plain_notifies(acts) == [N.COOKIE]
    assert not net.east.engine.by_serial and net.east.engine.n_halfopen == 0
    net.run()
    _nothing_up(net)


def test_unexpected_cookie_is_ignored() -> None:
    """ikev2-dcookie-03: east is not busy and gets an (invalid) COOKIE it never asked
    for.  Libreswan validates it and fails "contrary to the RFC"; RFC 7296 §2.6 only
    has the responder check cookies it demands, so we go on and establish."""
    net = Net()

    def add(m: Message) -> None:
        m.payloads.insert(0, wp.NotifyPayload(0, b"", N.COOKIE, b"\x01" * 32))
    acts = _intercept(net, "west", INIT, False, plain=add)
    assert net.east.engine.n_halfopen == 1 and not [t for t in _plain_notifies(acts)
                                                    if t < 16384]
    net.run()
    _both_up(net)


# ================================================================== REKEY_SA
@pytest.mark.parametrize("proto", [0, 1, 4])
def test_rekey_sa_with_a_bogus_protocol_id(proto: int) -> None:
    """impair-20-ikev2-rekey-sa-protoid (CVE-2023-38710): REKEY_SA with protocol ID
    0, IKE or an unknown one, and the Child SA's 4-byte SPI: "CREATE_CHILD_SA failed
    with error notification INVALID_SYNTAX"; east's Child SA and kernel SAs stay."""
    net = Net()
    net.up()
    kernel = dict(net.east.kernel_sas)

    def edit(ps: Payloads) -> Payloads:
        for p in ps:
            if isinstance(p, wp.NotifyPayload) and p.notify_type == N.REKEY_SA:
                p.protocol_id = proto
        return ps
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    acts = _intercept(net, "west", CCSA, False, sk=edit, start=False)
    assert _sk_notifies(net, net.east, acts) == [N.INVALID_SYNTAX]
    assert net.east.kernel_sas == kernel
    net.run()
    _both_up(net)


# ================================================================== whole-exchange replays
def _replay_forward(net: Net) -> None:
    """Libreswan's replay_inbound: before each new message, every earlier message
    that side received is delivered again, in order."""
    seen: dict[str, list[tuple[SendPacket, bytes]]] = {"west": [], "east": []}
    for _ in range(100):
        if not net.queue:
            return
        frm, pkt = net.queue.pop(0)
        to = net.other(frm)
        for old, data in seen[to.name]:
            _deliver(net, to, old, data)
        seen[to.name].append((pkt, bytes(pkt.data)))
        _deliver(net, to, pkt, bytes(pkt.data))
    raise AssertionError("message storm")


@pytest.mark.parametrize("how,frag", [
    # ikev2-impair-01-replay-duplicates (duplicate_inbound): every message twice
    ("duplicate", False),
    # ikev2-impair-02-replay-forward (replay_inbound): all earlier messages again
    ("replay", False),
    # ikev2-frag-03-retrans (replay_inbound with fragmented IKE_AUTH, RFC 7383 §2.6.1)
    ("replay", True),
    ("duplicate", True),
])
def test_duplicated_and_replayed_exchanges(how: str, frag: bool) -> None:
    """One IKE SA and one Child SA on each end, whatever is repeated (§2.1)."""
    kw = {"fragmentation": "force"} if frag else {}
    settings = (lambda: EngineSettings(fragment_size=300)) if frag else EngineSettings
    net = Net(west_kw=kw, east_kw=kw, west_settings=settings(), east_settings=settings())
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    if how == "duplicate":
        net.dup = True
        net.run(400)
    else:
        _replay_forward(net)
    if frag:
        assert any(parse_message(d).payloads[-1].payload_type == PT.SKF for _, d in net.sent)
    _both_up(net)
    assert len(net.west.engine.by_serial) == len(net.east.engine.by_serial) == 1
    assert net.east.engine.n_halfopen == 0
    check_pair(net)


def _ke_groups_without_ke(ps: Payloads) -> Payloads:
    """A CREATE_CHILD_SA request whose proposals name only a group, without its KE."""
    out: Payloads = []
    for p in ps:
        if isinstance(p, wp.KEPayload):
            continue
        if isinstance(p, wp.SAPayload):
            for prop in p.proposals:
                assert any(t.type == TT.KE and t.id for t in prop.transforms)
                prop.transforms = [t for t in prop.transforms
                                   if not (t.type == TT.KE and t.id == 0)]
        out.append(p)
    return out


def test_child_proposal_with_only_a_group_but_no_ke_is_not_chosen() -> None:
    """A CREATE_CHILD_SA without KE whose every proposal names only a DH group (RFC 7296
    §1.3.1: that group needs the KE payload), to a responder that takes requests without
    KE (ms-dh-downgrade=yes): NO_PROPOSAL_CHOSEN.  Before: it picked the group's
    proposal, answered without KE and made a Child SA the proposal did not describe."""
    net = Net(east_kw={"ms_dh_downgrade": True})
    net.up()
    before = sorted(c.spi_in for i in net.east.engine.by_serial.values() for c in i.children)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    acts = _intercept(net, "west", CCSA, False, sk=_ke_groups_without_ke, start=False)
    assert int(N.NO_PROPOSAL_CHOSEN) in _sk_notifies(net, net.east, acts)
    after = sorted(c.spi_in for i in net.east.engine.by_serial.values() for c in i.children)
    assert after == before
    _no_internal_error(net)
