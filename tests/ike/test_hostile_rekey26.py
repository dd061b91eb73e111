"""Rekeying under hostile and edge-case input (RFC 7296 §1.3.2, §1.3.3, §2.8, §2.17,
§2.18, §2.25).

West holds the IKE SA's keys and lies: in the requests it sends east on an IKE SA it
has just rekeyed, in CREATE_CHILD_SA requests for an IKE SA rekey, and in the answers
it gives to east's own Child SA and IKE SA rekeys.  RFC 9370 (ADDKE) and rekey
collisions / loss are covered elsewhere (test_hostile_addke25, test_loss_redteam25,
test_followup_collision); the REKEY_SA, Nonce-size, KE-value and SPI-size cases of
test_hostile_established / test_hostile_redteam24 are not repeated here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pypluto.crypto import dh
from pypluto.iana import NotifyType as N
from pypluto.iana import ProtocolID, TransformType
from pypluto.ike import codec
from pypluto.ike.actions import AddSA, Log, SendPacket
from pypluto.ike.sa import IKESA, IKEState
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.wire import payloads as wp

from .harness import Net, check_pair
from .test_hostile_established import _answer as _decrypt_answer
from .test_hostile_established import (
    _child_rekey_answer,
    _child_request,
    _east_request,
    _ike_rekey_request,
    _no_internal_error,
    _notify_types,
    _one_of_each,
    _respond,
    _setup,
)
from .test_hostile_established import _request as _send_request

CHILD, INFO = 36, 37
Payloads = list[wp.Payload]
Mut = Callable[[Payloads, Payloads], Payloads]


def _added(acts: list) -> list:
    return [a for a in acts if isinstance(a, AddSA)]


def _requests_of(w: IKESA, acts: list, exchange: int) -> list[Payloads]:
    """The decrypted payloads of east's requests of ``exchange`` among ``acts``."""
    out = []
    for a in acts:
        if isinstance(a, SendPacket):
            m = codec.parse(a.data)
            if not m.response and m.exchange == exchange and isinstance(m.sk, wp.SKPayload):
                out.append(codec.decrypt(m.sk, w.prot_in))
    return out


# ================================================================== the old IKE SA after the peer's rekey
def _peer_rekeyed(net: Net, w: IKESA) -> SendPacket:
    """West rekeys the IKE SA; east answers (and moves its Child SA to the new IKE SA),
    the answer is held back from west and returned."""
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    (_, pkt), = net.queue
    net.queue.clear()
    net.apply(net.east, net.east.engine.receive(bytes(pkt.data), pkt.remote, pkt.local,
                                                net.now))
    (_, ans), = net.queue
    net.queue.clear()
    return ans


@pytest.mark.parametrize("what", ["rekey-child", "new-child", "rekey-ike"])
def test_create_child_sa_on_an_ike_sa_the_peer_rekeyed(what: str) -> None:
    """§2.18: once the peer has rekeyed the IKE SA, its Child SAs live on the new IKE SA
    and the old one is only deleted.  A request on the old one (a peer with a window
    over 1 sends its Child SA rekey behind its IKE SA rekey) got CHILD_SA_NOT_FOUND for
    a REKEY_SA (the Child SA had moved), on which the peer drops a Child SA that is
    alive on both ends; a new Child SA was made on the IKE SA about to be deleted (and
    died with it); a second IKE SA rekey forked the session into two IKE SAs.  Each is
    answered TEMPORARY_FAILURE (as §2.25.2 answers requests racing an IKE SA rekey),
    and the rekey then completes with the Child SA intact on both ends.  Libreswan 5.2
    looks the REKEY_SA up among the old IKE SA's (migrated) children and answers
    CHILD_SA_NOT_FOUND; the RFC's §2.25 meaning of that notify (the peer no longer
    has the SA and drops its own) is what we follow here."""
    net, w, e = _setup()
    wc = w.children[0]
    held = _peer_rekeyed(net, w)
    (new,) = e.peer_rekeys
    assert new.children and not e.children
    req = {
        "rekey-child": lambda: _child_request(w, b"\x22\x33\x44\x55", extra=[
            codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, wc.spi_in.to_bytes(4, "big"))]),
        "new-child": lambda: _child_request(w, b"\x22\x33\x44\x55"),
        "rekey-ike": lambda: _ike_rekey_request(w, b"\x01" * 8),
    }[what]()
    kernel = dict(net.east.kernel_sas)
    acts = _send_request(net, w, CHILD, req)
    net.queue.clear()  # answers to requests west's engine never sent
    assert _notify_types(_decrypt_answer(w, acts)) == [N.TEMPORARY_FAILURE]
    assert not _added(acts) and net.east.kernel_sas == kernel
    assert set(net.east.engine.by_serial) == {e.serial, new.serial}
    assert not e.children and len(new.children) == 1 and not new.children[0].peer_rekeys
    assert any("peer has rekeyed" in a.message for a in acts if isinstance(a, Log))
    # west now gets the answer to its rekey and deletes the old IKE SA
    net.apply(net.west, net.west.engine.receive(bytes(held.data), held.remote, held.local,
                                                net.now))
    net.run()
    assert e.serial not in net.east.engine.by_serial
    assert len(net.established(net.west)) == len(net.established(net.east)) == 1
    assert len(net.children(net.west)) == len(net.children(net.east)) == 1
    check_pair(net)
    _no_internal_error(net.east)
    _no_internal_error(net.west)


def test_the_peers_rekey_itself_is_still_answered_once_resent() -> None:
    """Control: the retransmit of the very IKE SA rekey request (its answer lost) gets
    the cached answer, not TEMPORARY_FAILURE (§2.1)."""
    net, w, e = _setup()
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    (_, pkt), = net.queue
    net.queue.clear()
    first = net.east.engine.receive(bytes(pkt.data), pkt.remote, pkt.local, net.now)
    again = net.east.engine.receive(bytes(pkt.data), pkt.remote, pkt.local, net.now)
    data = [a.data for a in first if isinstance(a, SendPacket)]
    assert data and data == [a.data for a in again if isinstance(a, SendPacket)]
    assert len(e.peer_rekeys) == 1


# ================================================================== lying answers to our Child SA rekey
def _sa_with(ans: Payloads, **change: object) -> Payloads:
    p = ans[0].proposals[0]  # type: ignore[attr-defined]
    fields: dict[str, object] = {"number": p.number, "protocol_id": p.protocol_id,
                                 "spi": p.spi, "transforms": p.transforms}
    fields.update(change)
    return [wp.SAPayload(proposals=[wp.Proposal(**fields)]), *ans[1:]]  # type: ignore[arg-type]


def _transforms(ans: Payloads, keep: Callable[[wp.Transform], wp.Transform | None]
                ) -> Payloads:
    ts = [keep(t) for t in ans[0].proposals[0].transforms]  # type: ignore[attr-defined]
    return _sa_with(ans, transforms=[t for t in ts if t is not None])


def _ke_of_group(group: int) -> Mut:
    def mut(req: Payloads, ans: Payloads) -> Payloads:
        return [codec.ke(group, dh.initiator_ke(group).public)
                if isinstance(p, wp.KEPayload) else p for p in ans]
    return mut


def _without(kind: type) -> Mut:
    return lambda req, ans: [p for p in ans if not isinstance(p, kind)]


SPI = b"\x11\x22\x33\x44"


def _offered_spi(req: Payloads) -> bytes:
    sa = codec.first(req, wp.SAPayload)
    assert sa is not None
    return bytes(sa.proposals[0].spi)

LIES: dict[str, tuple[Mut, bool]] = {
    # name: (the lie, whether the answer names one 4-octet SPI the peer installed)
    "proposal-as-ah": (lambda r, a: _transforms(
        _sa_with(a, protocol_id=ProtocolID.AH),
        lambda t: None if t.type == TransformType.ENCR else t), True),
    "proposal-as-ike": (lambda r, a: _sa_with(a, protocol_id=ProtocolID.IKE,
                                              spi=b"\x11" * 8), False),
    "proposal-number-never-sent": (lambda r, a: _sa_with(a, number=9), True),
    "encr-never-offered": (lambda r, a: _transforms(a, lambda t: wp.Transform(
        type=TransformType.ENCR, id=3) if t.type == TransformType.ENCR else t), True),
    "ke-transform-dropped": (lambda r, a: _transforms(
        a, lambda t: None if t.type == TransformType.KE else t), True),
    "two-proposals": (lambda r, a: [wp.SAPayload(proposals=[
        a[0].proposals[0], a[0].proposals[0]]), *a[1:]], False),  # type: ignore[attr-defined]
    "no-sa": (lambda r, a: a[1:], False),
    "no-nonce": (_without(wp.NoncePayload), True),
    "no-ke": (_without(wp.KEPayload), True),
    "ke-none-and-no-ke": (lambda r, a: [p for p in _transforms(a, lambda t: wp.Transform(
        type=TransformType.KE, id=0) if t.type == TransformType.KE else t)
        if not isinstance(p, wp.KEPayload)], True),
    "ke-of-another-group": (_ke_of_group(14), True),
    "use-transport-mode": (lambda r, a: [*a, codec.notify(N.USE_TRANSPORT_MODE)], True),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_lying_answer_to_our_child_sa_rekey(lie: str) -> None:
    """§1.3.3/§2.7: the answer to our rekey must be one of our proposals, reduced, with
    a Nonce and, as PFS was offered (pfs=yes), a KE of the group it chose, and keep the
    mode.  Otherwise nothing is installed and the old Child SA stays (it is then
    replaced by a fresh IKE SA, test_enforce).  When the answer named the SPI of a
    Child SA the peer installed, a Delete for it follows (§1.4.1): refused for its
    Nonce or KE (before the answer's SA payload was looked at) the peer's Child SA
    was left behind, an orphan on the peer until the IKE SA ended."""
    mut, installed = LIES[lie]
    net, w, e = _setup()
    old = e.children[0]
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    kernel = dict(net.east.kernel_sas)
    acts = _respond(net, w, msgid, mut(req, _child_rekey_answer(req, SPI)))
    assert not _added(acts) and net.east.kernel_sas == kernel
    assert e.children == [old] and not old.replaced
    assert any("CREATE_CHILD_SA failed" in a.message for a in acts if isinstance(a, Log))
    deletes = [p for body in _requests_of(w, acts, INFO) for p in body
               if isinstance(p, wp.DeletePayload)]
    if installed:  # a Delete names our inbound SPI (§3.11), the one we offered
        assert [(d.protocol_id, list(d.spis)) for d in deletes] == [
            (ProtocolID.ESP, [_offered_spi(req)])]
    else:
        assert not deletes
    assert old.spi_in.to_bytes(4, "big") not in [s for d in deletes for s in d.spis]
    _no_internal_error(net.east)


@pytest.mark.parametrize("lie", ["no-nonce", "no-ke", "ke-of-another-group"])
def test_lying_answer_to_a_new_child_sa_is_deleted_on_the_peer(lie: str) -> None:
    """The same for a new Child SA (no rekey, so no IKE SA replacement): the Child SA
    the peer installed is deleted, nothing is installed here."""
    net, w, e = _setup()
    eng = net.east.engine
    msgid, sent = _east_request(net, w, eng.guarded(e, net.now, "test", lambda: eng.queue(
        e, ChildCreate(e.conn), net.now)))
    acts = _respond(net, w, msgid, LIES[lie][0](sent, _child_rekey_answer(sent, SPI)))
    assert not _added(acts) and len(e.children) == 1
    deletes = [p for body in _requests_of(w, acts, INFO) for p in body
               if isinstance(p, wp.DeletePayload)]
    assert [(d.protocol_id, list(d.spis)) for d in deletes] == [
        (ProtocolID.ESP, [_offered_spi(sent)])]
    _no_internal_error(net.east)


def test_answer_with_ke_to_a_rekey_without_pfs() -> None:
    """pfs=no: we offered no KE; an answer carrying one (a PFS we did not negotiate,
    §1.3.3) is refused, never half-used."""
    net, w, e = _setup(west_kw={"pfs": False}, east_kw={"pfs": False})
    old = e.children[0]
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    assert codec.first(req, wp.KEPayload) is None
    sa = codec.first(req, wp.SAPayload)
    assert sa is not None
    tsi, tsr = req[-2], req[-1]
    ans = [_one_of_each(sa.proposals[0], SPI), codec.nonce(b"a" * 32),
           codec.ke(19, dh.initiator_ke(19).public), tsi, tsr]
    acts = _respond(net, w, msgid, ans)
    assert not _added(acts) and e.children == [old] and not old.replaced
    assert any("KE payload missing or unexpected" in a.message for a in acts
               if isinstance(a, Log))
    _no_internal_error(net.east)


# ================================================================== lying answers to our IKE SA rekey
def _ike_answer(req: Payloads, spi: bytes = b"\x0a" * 8) -> Payloads:
    sa = codec.first(req, wp.SAPayload)
    ke = codec.first(req, wp.KEPayload)
    assert sa is not None and ke is not None
    out_ke, _ = dh.responder_ke(ke.group, bytes(ke.data))
    return [_one_of_each(sa.proposals[0], spi), codec.nonce(b"a" * 32),
            codec.ke(ke.group, out_ke)]


IKE_LIES: dict[str, Mut] = {
    "control": lambda r, a: a,
    "no-ke": _without(wp.KEPayload),
    "no-nonce": _without(wp.NoncePayload),
    "no-sa": lambda r, a: a[1:],
    "ke-of-another-group": _ke_of_group(14),
    "prf-never-offered": lambda r, a: _transforms(a, lambda t: wp.Transform(
        type=TransformType.PRF, id=1) if t.type == TransformType.PRF else t),
    "ke-transform-dropped": lambda r, a: _transforms(
        a, lambda t: None if t.type == TransformType.KE else t),
    "proposal-as-esp": lambda r, a: _sa_with(a, protocol_id=ProtocolID.ESP,
                                             spi=b"\x11\x22\x33\x44"),
    "two-proposals": lambda r, a: [wp.SAPayload(proposals=[
        a[0].proposals[0], a[0].proposals[0]]), *a[1:]],  # type: ignore[attr-defined]
}


@pytest.mark.parametrize("lie", sorted(IKE_LIES))
def test_lying_answer_to_our_ike_sa_rekey(lie: str) -> None:
    """§1.3.2: the answer carries one of our IKE proposals (with its D-H group), a
    Nonce and a KE of that group; otherwise no new IKE SA, the Child SA stays on the
    old one and the rekey is tried again later."""
    net, w, e = _setup()
    msgid, req = _east_request(net, w, net.east.engine.rekey_ike("west-east", net.now))
    acts = _respond(net, w, msgid, IKE_LIES[lie](req, _ike_answer(req)))
    if lie == "control":
        (new,) = [i for i in net.east.engine.by_serial.values() if i is not e]
        assert new.spi_r == b"\x0a" * 8 and len(new.children) == 1
        assert e.state is IKEState.DELETING
        return
    assert list(net.east.engine.by_serial.values()) == [e] and len(e.children) == 1
    assert not e.rekeying and e.rekey_at is not None and e.state is IKEState.ESTABLISHED
    assert not _added(acts)
    _no_internal_error(net.east)


# ================================================================== the peer's IKE SA rekey request
def _no_dh(req: Payloads) -> Payloads:
    sa = req[0]
    return [wp.SAPayload(proposals=[wp.Proposal(
        number=p.number, protocol_id=p.protocol_id, spi=p.spi,
        transforms=[t for t in p.transforms if t.type != TransformType.KE])
        for p in sa.proposals]), *req[1:]]  # type: ignore[attr-defined]


@pytest.mark.parametrize("what, answer", [
    ("no-ke-payload", N.INVALID_SYNTAX),  # §1.3.2: KEi is not optional in an IKE SA rekey
    ("proposal-without-dh", N.NO_PROPOSAL_CHOSEN),
    ("proposal-without-dh-no-ke", N.NO_PROPOSAL_CHOSEN),
])
def test_ike_sa_rekey_request_without_dh(what: str, answer: int) -> None:
    """An IKE SA rekey always has a fresh D-H (§1.3.2, §2.18): no new IKE SA without."""
    net, w, e = _setup()
    req = _ike_rekey_request(w, b"\x01" * 8)
    req = {"no-ke-payload": req[:2], "proposal-without-dh": _no_dh(req),
           "proposal-without-dh-no-ke": _no_dh(req)[:2]}[what]
    acts = _send_request(net, w, CHILD, req)
    assert _notify_types(_decrypt_answer(w, acts)) == [answer]
    assert list(net.east.engine.by_serial.values()) == [e] and len(e.children) == 1
    assert not e.peer_rekeys
    _no_internal_error(net.east)


def test_child_rekey_naming_esp_with_an_ah_proposal() -> None:
    """REKEY_SA names the ESP Child SA but the request proposes AH: the protocol of
    a Child SA does not change in a rekey (§1.3.3), NO_PROPOSAL_CHOSEN."""
    net, w, e = _setup()
    old = e.children[0]
    req = _child_request(w, b"\x22\x33\x44\x55", extra=[
        codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, old.spi_out.to_bytes(4, "big"))])
    sa = req[1]
    p = sa.proposals[0]  # type: ignore[attr-defined]
    req[1] = wp.SAPayload(proposals=[wp.Proposal(
        number=1, protocol_id=ProtocolID.AH, spi=p.spi,
        transforms=[*(t for t in p.transforms if t.type != TransformType.ENCR),
                    wp.Transform(type=TransformType.INTEG, id=12)])])
    acts = _send_request(net, w, CHILD, req)
    assert _notify_types(_decrypt_answer(w, acts)) == [N.NO_PROPOSAL_CHOSEN]
    assert not _added(acts) and e.children == [old] and not old.peer_rekeys
    _no_internal_error(net.east)


@pytest.mark.parametrize("transport", [False, True])
def test_rekey_of_a_transport_mode_child_sa_keeps_the_mode(transport: bool) -> None:
    """§1.3.1/§1.3.3: the rekey of a transport-mode Child SA (type=transport) without
    USE_TRANSPORT_MODE would make it a tunnel: NO_PROPOSAL_CHOSEN, the old one stays;
    with it, the new Child SA is in transport mode too."""
    kw = {"type": "transport", "leftsubnet": None, "rightsubnet": None}
    net, w, e = _setup(west_kw=kw, east_kw=kw)
    old = e.children[0]
    assert old.mode == "transport"
    extra: Payloads = [codec.notify(N.REKEY_SA, b"", ProtocolID.ESP,
                                    old.spi_out.to_bytes(4, "big"))]
    if transport:
        extra.append(codec.notify(N.USE_TRANSPORT_MODE))
    acts = _send_request(net, w, CHILD, _child_request(w, b"\x22\x33\x44\x55", extra=extra))
    ans = _decrypt_answer(w, acts)
    if transport:
        assert ans is not None and isinstance(ans[0], wp.SAPayload)
        assert N.USE_TRANSPORT_MODE in _notify_types(ans)
        added = [a.sa for a in _added(acts)]
        assert added and all(s.mode == "transport" for s in added)
        assert old.peer_rekeys and all(c.mode == "transport" for c in e.children)
    else:
        assert _notify_types(ans) == [N.NO_PROPOSAL_CHOSEN]
        assert not _added(acts) and e.children == [old] and not old.peer_rekeys
    _no_internal_error(net.east)


@pytest.mark.parametrize("spi", [b"", b"\x11" * 8])
def test_rekey_answer_with_an_esp_spi_not_of_4_octets(spi: bytes) -> None:
    """§3.3.1: an ESP SPI is 4 octets; an answer naming one of 0 or 8 is malformed (the
    proposal parser refuses it, §2.21.2): dropped, nothing installed, the old Child SA
    stays and the request is still ours to retransmit (the exchange then fails as
    with a silent peer)."""
    net, w, e = _setup()
    old = e.children[0]
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    kernel = dict(net.east.kernel_sas)
    acts = _respond(net, w, msgid, _sa_with(_child_rekey_answer(req, SPI), spi=spi))
    assert not _added(acts) and net.east.kernel_sas == kernel
    assert e.children == [old] and not old.replaced
    assert e.outstanding is not None and e.outstanding.msgid == msgid
    assert any("malformed encrypted payloads" in a.message for a in acts
               if isinstance(a, Log))
    _no_internal_error(net.east)
