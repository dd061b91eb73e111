"""Hybrid key exchange: IKE_INTERMEDIATE (RFC 9242) with additional key exchanges
(RFC 9370), back to back, and the bad inputs of issue 17."""

from __future__ import annotations

import pytest

from pypluto.iana import ExchangeType
from pypluto.ike import addke
from pypluto.wire import message as wm

from .harness import Net, check_pair

HYBRID = "aes_gcm256-sha2_384-dh31;addke1=mlkem768"


def _exchanges(net: Net, who: str) -> list[int]:
    return [wm.peek_header(d).exchange for w, d in net.sent if w == who]


@pytest.mark.parametrize("ike,kes", [
    (HYBRID, "CURVE25519-KE1_ML_KEM_768"),
    ("aes_gcm256-sha2_384-dh20;addke1=ml_kem_1024", "ECP_384-KE1_ML_KEM_1024"),
    ("aes256-sha2_256-dh19;addke1=mlkem768;addke2=mlkem1024",
     "ECP_256-KE1_ML_KEM_768-KE2_ML_KEM_1024"),
    ("aes_gcm256-sha2_512-dh31;addke1=dh20", "CURVE25519-KE1_ECP_384"),
])
def test_hybrid_ike_sa(ike: str, kes: str) -> None:
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})
    net.up()
    for side in (net.west, net.east):
        assert len(net.established(side)) == 1, side.logs()
        assert len(net.children(side)) == 1, side.logs()
    check_pair(net)
    w = net.established(net.west)[0]
    assert w.ke.replace("CURVE_25519", "CURVE25519") == kes, w.ke
    n = kes.count("KE")
    assert _exchanges(net, "west").count(ExchangeType.IKE_INTERMEDIATE) >= n - 1
    # IKE_INTERMEDIATE message IDs 1..n, IKE_AUTH after them
    ids = [(wm.peek_header(d).exchange, wm.peek_header(d).message_id)
           for who, d in net.sent if who == "west"]
    assert (ExchangeType.IKE_AUTH, ids[-1][1]) in ids
    assert ids[-1][1] == kes.count("-") + 1


def test_large_messages_are_fragmented() -> None:
    kw = {"ike": "aes_gcm256-sha2_384-dh20;addke1=mlkem1024", "fragmentation": "yes"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs()
    ints = [d for w, d in net.sent if wm.peek_header(d).exchange ==
            ExchangeType.IKE_INTERMEDIATE]
    assert len(ints) > 2 and all(len(d) <= 1280 - 28 for d in ints)


def test_without_addke_no_intermediate() -> None:
    net = Net()
    net.up()
    assert net.established(net.east)
    assert ExchangeType.IKE_INTERMEDIATE not in _exchanges(net, "west")


def test_addke_mismatch_is_no_proposal_chosen() -> None:
    net = Net(west_kw={"ike": HYBRID},
              east_kw={"ike": "aes_gcm256-sha2_384-dh31;addke1=mlkem1024"})
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    assert any("NO_PROPOSAL_CHOSEN" in m for m in net.west.logs())


def test_int_auth_chunk_lengths() -> None:
    """RFC 9242 §3.3.2: lengths as if the message were neither encrypted nor fragmented."""
    from pypluto.ike import codec
    pl = [codec.ke(36, b"x" * 1184)]
    c = addke.int_auth_chunk(b"i" * 8, b"r" * 8, 43, True, False, 1, pl)
    assert len(c) == 28 + 4 + 8 + 1184
    assert int.from_bytes(c[24:28], "big") == len(c)
    assert c[16] == 46 and c[18] == 43 and c[19] == 0x08
    assert c[28] == 34 and int.from_bytes(c[30:32], "big") == 4 + 8 + 1184
    empty = addke.int_auth_chunk(b"i" * 8, b"r" * 8, 43, False, True, 2, [])
    assert len(empty) == 32 and empty[19] == 0x20 and empty[28:32] == bytes([0, 0, 0, 4])


# ------------------------------------------------------------------ bad input
def _warnings(side) -> list[str]:  # noqa: ANN001
    from pypluto.ike.actions import Log
    return [a.message for a in side.actions if isinstance(a, Log) and a.level == "warning"]


def _gone(net: Net) -> None:
    for side in (net.west, net.east):
        assert not net.established(side)
        assert not side.engine.status(net.now).ike_sas, side.logs()
        assert not side.kernel_sas


def test_bad_mlkem_ciphertext_fails_initiator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The responder's ciphertext has the wrong length: the initiator gives up (one line)."""
    from pypluto.ike.tasks import ike_intermediate as ii
    real = ii.dh.responder_ke

    def short(group: int, data: bytes) -> tuple[bytes, bytes]:
        ct, shared = real(group, data)
        return (ct[:-1] if group == 36 else ct), shared  # only ML-KEM-768

    monkeypatch.setattr(ii.dh, "responder_ke", short)
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    assert not net.established(net.west)
    w = _warnings(net.west)
    assert len(w) == 1 and "bad ML_KEM_768 value in IKE_INTERMEDIATE response" in w[0], w
    assert net.west.events[-1].reason == "proposal"
    net.advance(60)  # the responder's half-open SA times out
    _gone(net)


def test_bad_mlkem_key_answers_invalid_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    """The initiator's encapsulation key is malformed: INVALID_SYNTAX, both SAs go."""
    from pypluto.ike.tasks import ike_intermediate as ii
    real = ii.dh.initiator_ke

    class Bad:
        def __init__(self, group: int) -> None:
            self.inner = real(group)
            self.public = self.inner.public[:100]

        def finish(self, data: bytes) -> bytes:
            return self.inner.finish(data)

    monkeypatch.setattr(ii.dh, "initiator_ke", Bad)
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    e = _warnings(net.east)
    assert len(e) == 1 and "answering INVALID_SYNTAX" in e[0] and "ML_KEM_768" in e[0], e
    w = _warnings(net.west)
    assert len(w) == 1 and "INVALID_SYNTAX" in w[0], w
    _gone(net)


def test_peer_skipping_intermediate_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """IKE_AUTH before the negotiated additional key exchange: INVALID_SYNTAX."""
    from pypluto.ike.tasks import ike_intermediate as ii
    monkeypatch.setattr(ii, "queue_next",
                        lambda ctx, ike, now: ctx.queue(ike, ii.IKEAuth(), now, front=True))
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    e = _warnings(net.east)
    assert len(e) == 1 and "were skipped; answering INVALID_SYNTAX" in e[0], e
    assert any("peer answered INVALID_SYNTAX" in m for m in _warnings(net.west))
    assert ExchangeType.IKE_INTERMEDIATE not in _exchanges(net, "west")
    _gone(net)


def test_missing_intermediate_answer_times_out() -> None:
    """No answer to IKE_INTERMEDIATE: retransmits, then the IKE SA fails (one line)."""
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()  # IKE_SA_INIT there and back
    net.cut = True
    net.advance(300)
    w = _warnings(net.west)
    assert len(w) == 1 and "no response to IKE_INTERMEDIATE" in w[0], w
    sent = [wm.peek_header(d) for who, d in net.sent if who == "west"]
    assert sum(h.exchange == ExchangeType.IKE_INTERMEDIATE for h in sent) > 1  # retransmitted
    _gone(net)


def test_intermediate_answer_without_ke(monkeypatch: pytest.MonkeyPatch) -> None:
    """The responder answers IKE_INTERMEDIATE without its KE payload."""
    from pypluto.ike.tasks import ike_intermediate as ii
    real = ii.codec.ke

    def ke(group: int, data: bytes):  # noqa: ANN202 - the ML-KEM-768 ciphertext goes
        return ii.codec.notify(16384 + 1) if len(data) == 1088 else real(group, data)

    monkeypatch.setattr(ii.codec, "ke", ke)
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    w = _warnings(net.west)
    assert len(w) == 1 and "IKE_INTERMEDIATE response lacks the ML_KEM_768 KE payload" in w[0], w


def test_int_auth_mismatch_fails_authentication(monkeypatch: pytest.MonkeyPatch) -> None:
    """The responder's IntAuth chain differs (RFC 9242 §3.3.2): AUTHENTICATION_FAILED."""
    from pypluto.ike.tasks import ike_intermediate as ii
    real = ii.IKEIntermediate.respond.__func__  # type: ignore[attr-defined]

    def respond(cls, ctx, ike, req, now):  # noqa: ANN001, ANN202
        acts = real(cls, ctx, ike, req, now)
        st = ike.intermediate
        st.int_auth_i = bytes(len(st.int_auth_i))
        return acts

    monkeypatch.setattr(ii.IKEIntermediate, "respond", classmethod(respond))
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    e = _warnings(net.east)
    assert len(e) == 1 and "answering AUTHENTICATION_FAILED" in e[0], e
    assert any("AUTHENTICATION_FAILED" in m for m in _warnings(net.west))
    _gone(net)


# ------------------------------------------------------------------ rekeys (RFC 9370 §2.2.3)
@pytest.mark.parametrize("ike", [HYBRID,
                                 "aes256-sha2_256-dh19;addke1=mlkem768;addke2=mlkem1024"])
@pytest.mark.parametrize("by", ["west", "east"])
def test_ike_rekey_with_followup_ke(ike: str, by: str) -> None:
    kw = {"ike": ike, "fragmentation": "yes"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    side = getattr(net, by)
    before = {i.serial for i in net.established(net.west)}
    net.sent.clear()
    net.apply(side, side.engine.rekey_ike("west-east", net.now))
    net.run()
    for s in (net.west, net.east):
        est = net.established(s)
        assert len(est) == 1, s.logs()
        assert len(net.children(s)) == 1
    assert not {i.serial for i in net.established(net.west)} & before
    n = ike.count("addke")
    sender = by
    exch = [wm.peek_header(d).exchange for w, d in net.sent if w == sender]
    assert exch.count(ExchangeType.IKE_FOLLOWUP_KE) >= n
    # the new IKE SA works: a Child rekey and a liveness probe go through it
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    check_pair(net)


def test_followup_without_pending_is_state_not_found() -> None:
    from pypluto.ike.tasks.ike_followup import FollowupKE

    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    w = net.west.engine
    ike = next(iter(w.by_serial.values()))
    seen: list[str] = []
    task = FollowupKE([36], b"12345678", [b"x"], lambda *a: [],
                      lambda ctx, ike, why, now: seen.append(why) or [])
    net.apply(net.west, w.tm.queue(ike, task, net.now) if hasattr(w, "tm") else
              w.queue(ike, task, net.now))
    net.run()
    assert seen == ["peer answered IKE_FOLLOWUP_KE with STATE_NOT_FOUND"], seen
    assert any("answering STATE_NOT_FOUND" in m for m in net.east.logs())
    assert net.established(net.west) and net.established(net.east)


@pytest.mark.parametrize("esp", ["aes_gcm256-dh31;addke1=mlkem768",
                                 "aes_gcm256-dh19;addke1=mlkem1024;addke2=dh31"])
@pytest.mark.parametrize("by", ["west", "east"])
def test_child_rekey_with_pfs_and_followup_ke(esp: str, by: str) -> None:
    kw = {"ike": HYBRID, "esp": esp, "fragmentation": "yes"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    before = {(s.dst, s.spi) for s in net.west.kernel_sas.values()}
    net.sent.clear()
    side = getattr(net, by)
    net.apply(side, side.engine.rekey_child("west-east", net.now))
    net.run()
    for s in (net.west, net.east):
        assert len(net.children(s)) == 1, s.logs()
        assert len(s.kernel_sas) == 2, s.logs()
    assert not {(s.dst, s.spi) for s in net.west.kernel_sas.values()} & before
    check_pair(net)
    hdrs = [wm.peek_header(d) for w, d in net.sent if w == by]
    ids = {h.message_id for h in hdrs if h.exchange == ExchangeType.IKE_FOLLOWUP_KE}
    assert len(ids) == esp.count("addke")
    # both ends derived the same KEYMAT from SK(0) | Ni | Nr | SK(1).. (check_pair), and
    # it differs from what SK(0) alone would give (the additional exchanges count)


def test_child_rekey_followup_refused_releases_child(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad key in IKE_FOLLOWUP_KE: INVALID_SYNTAX, the old Child SA stays."""
    from pypluto.ike.tasks import ike_followup as fu
    real = fu.dh.initiator_ke

    class Bad:
        def __init__(self, group: int) -> None:
            self.inner = real(group)
            self.public = self.inner.public[:10] if group == 36 else self.inner.public

        def finish(self, data: bytes) -> bytes:
            return self.inner.finish(data)

    kw = {"ike": HYBRID, "esp": "aes_gcm256-dh31;addke1=mlkem768"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    before = set(net.west.kernel_sas)
    monkeypatch.setattr(fu.dh, "initiator_ke", Bad)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert set(net.west.kernel_sas) == before and len(net.east.kernel_sas) == 2
    e = _warnings(net.east)
    assert len(e) == 1 and "IKE_FOLLOWUP_KE rejected" in e[0], e
    w = _warnings(net.west)
    assert len(w) == 1 and "INVALID_SYNTAX" in w[0], w
    assert net.established(net.west) and net.established(net.east)


def test_intermediate_yes_runs_one_empty_exchange() -> None:
    """intermediate=yes (Libreswan): IKE_INT_SUP and one empty IKE_INTERMEDIATE, whose
    IntAuth still enters both AUTH payloads (RFC 9242 §3.3.2)."""
    net = Net(west_kw={"raw": {"intermediate": "yes"}})
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs()
    hdrs = [wm.peek_header(d) for w, d in net.sent if w == "west"]
    assert [h.exchange for h in hdrs] == [ExchangeType.IKE_SA_INIT,
                                          ExchangeType.IKE_INTERMEDIATE, ExchangeType.IKE_AUTH]
    assert hdrs[-1].message_id == 2


def test_intermediate_yes_without_peer_support_goes_straight_to_auth() -> None:
    """The responder does not answer IKE_INT_SUP: no IKE_INTERMEDIATE (RFC 9242 §3.1)."""
    from pypluto.ike.tasks import ike_intermediate as ii
    net = Net(west_kw={"raw": {"intermediate": "yes"}})
    orig = ii.answer_notify
    ii.answer_notify = lambda ike, ns: []  # type: ignore[assignment]
    try:
        net.up()
    finally:
        ii.answer_notify = orig
    assert net.established(net.west) and net.established(net.east)
    assert ExchangeType.IKE_INTERMEDIATE not in _exchanges(net, "west")


def test_pending_followup_child_released_with_its_ike_sa() -> None:
    """The responder holds the new Child SA's SPI until IKE_FOLLOWUP_KE; if the IKE SA
    goes away first, the reservation goes with it."""
    kw = {"ike": HYBRID, "esp": "aes_gcm256-dh31;addke1=mlkem768"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    e = net.east.engine
    reserved = set(e.children_in)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.step()  # the CREATE_CHILD_SA request reaches east, which answers and waits
    ike = next(iter(e.by_serial.values()))
    assert ike.followup is not None and len(e.children_in) == len(reserved) + 1
    net.apply(net.east, e.drop_ike(ike, net.now, "test"))
    assert ike.followup is None and set(e.children_in) <= reserved


# ------------------------------------------------------------------ offloaded (--nhelpers)
def test_offloaded_responder_jobs_with_retransmits() -> None:
    """The responder's ML-KEM encapsulations go through ``IKEContext.compute``: a
    retransmit while the job is out is dropped, the answer comes once it returns."""
    from .test_offload import OffloadNet

    kw = {"ike": HYBRID, "esp": "aes_gcm256-dh31;addke1=mlkem768"}
    net = OffloadNet(immediate=False, west_kw=kw, east_kw=kw)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    for _ in range(40):  # run every job late, after delivering what is queued
        net.run()
        if not net.jobs:
            break
        side, job = net.jobs.pop(0)
        if side is net.east and net.west.engine.next_timer() is not None:
            net.advance(0.6)  # west retransmits while east's job is out
        net.finish(side, job)
    net.run()
    assert net.established(net.west) and net.established(net.east), net.east.logs()
    ints = {wm.peek_header(d).message_id for w, d in net.sent
            if w == "east" and wm.peek_header(d).exchange == ExchangeType.IKE_INTERMEDIATE}
    assert ints == {1}
    # a Child rekey with PFS + ADDKE, jobs run at once
    net.immediate = True
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    check_pair(net)
    assert net.computes > 4


# ------------------------------------------------------------------ proposal rules
def _spec(*addke_alts: tuple[int, ...]):  # noqa: ANN202
    from pypluto.config.model import ProposalSpec
    return ProposalSpec(addke=tuple(addke_alts))


@pytest.mark.parametrize("peer,ours,want", [
    ({6: [36]}, [(36,)], (36,)),              # both require ML-KEM-768
    ({6: [36, 0]}, [], ()),                   # peer's optional ADDKE1, we have none: NONE
    ({6: [36]}, [], None),                    # peer requires what we do not do
    ({}, [(36,)], None),                      # we require what the peer does not offer
    ({}, [(36, 0)], ()),                      # ours optional, peer offers none
    ({6: [37, 36]}, [(36, 37)], (36,)),       # our order decides, as for every type
    ({6: [36], 7: [0, 31]}, [(36,), (31,)], (36, 31)),  # we require ADDKE2: not NONE
    ({7: [36]}, [(0,), (36,)], (0, 36)),      # a gap: ADDKE1 NONE, ADDKE2 ML-KEM
    ({6: [99]}, [(99,)], None),               # unknown method never matches
])
def test_addke_match(peer: dict, ours: list, want: tuple | None) -> None:
    by_type = {t: [(i, None) for i in ids] for t, ids in peer.items()}
    assert addke.match(by_type, _spec(*ours)) == want


@pytest.mark.parametrize("answer,offered,want", [
    ([(6, 36, None)], [(6, 36, None)], (36,)),
    ([], [(6, 36, None)], None),                          # required, not answered
    ([], [(6, 36, None), (6, 0, None)], ()),              # optional: absent is NONE
    ([(6, 37, None)], [(6, 36, None)], None),             # not one we offered
    ([(7, 36, None)], [(6, 36, None)], None),             # a type we never offered
    ([(6, 36, None), (6, 36, None)], [(6, 36, None)], None),  # repeated type
])
def test_addke_check(answer: list, offered: list, want: tuple | None) -> None:
    assert addke.check(answer, offered) == want


def test_rekey_material_order() -> None:
    """RFC 9370 §2.2.4: SK(0) | Ni | Nr | SK(1) | ... (checked against strongSwan 6.0.1 in
    tests/interop/test_pq.py)."""
    assert addke.rekey_material([b"A", b"B", b"C"], b"i", b"r") == b"AirBC"
