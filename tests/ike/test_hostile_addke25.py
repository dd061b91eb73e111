"""A hostile peer against the multiple key exchanges: ADDKE negotiation (RFC 9370
§2.2.1), IKE_INTERMEDIATE (RFC 9242), IKE_FOLLOWUP_KE (RFC 9370 §2.2.3) and ML-KEM's
recipient tests (draft-ietf-ipsecme-ikev2-mlkem §2.2, FIPS 203 §7.2-7.3), both roles.

What tests/ike/test_intermediate.py and test_hostile_extensions.py already cover (wrong
group, no KE, two KEs, skipped/extra/replayed rounds, IKE_INTERMEDIATE without IKE_INT_SUP,
IntAuth tampering, a short ML-KEM key or ciphertext in IKE_INTERMEDIATE) is not repeated.
"""

from __future__ import annotations

import pytest

from pypluto.crypto import dh
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.iana import TransformType as TT
from pypluto.ike import addke, codec
from pypluto.ike.actions import SendPacket
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import Net, check_pair
from .test_hostile_extensions import (
    _deliver,
    _exchanges,
    _hostile_init_answer,
    _ike,
    _internal_errors,
    _no_east,
    _pop,
    _rewrite,
    _to_first_intermediate,
    _warned,
)

INT = ExchangeType.IKE_INTERMEDIATE
HYBRID = "aes_gcm256-sha2_384-dh31;addke1=mlkem768"
MLKEM = (35, 36, 37)


def _bad_modulus(key: bytes) -> bytes:
    """An ML-KEM encapsulation key of the right length whose first coefficient is 0xFFF,
    not below q = 3329: FIPS 203 §7.2's modulus check fails."""
    return bytes([0xFF, key[1] | 0x0F]) + key[2:]


# ================================================================== ADDKE negotiation
# Libreswan 5.4 testing/pluto/ikev2-intermediate-05-addke-duplicate: EAST proposes and
# accepts every group in every slot; the responder never picks a method twice.
EAST_ANY = "aes;dh19+dh20+dh21;addke1=dh19+dh20+dh21+none;addke2=dh19+dh20+dh21+none"


@pytest.mark.parametrize("west,want", [
    ("aes;dh19+dh20+dh21;addke1=dh19+dh20+dh21;addke2=dh19+dh20+dh21",
     "ECP_256-KE1_ECP_384-KE2_ECP_521"),
    ("aes;dh19+dh20+dh21;addke1=dh20+dh21+dh19;addke2=dh21+dh19+dh20",
     "ECP_256-KE1_ECP_384-KE2_ECP_521"),
    ("aes;dh19+dh20+dh21;addke1=none;addke2=dh21+dh19+dh20", "ECP_256-KE2_ECP_384"),
    # no backtracking: KE 19, ADDKE1 20, nothing left for ADDKE2 (as Libreswan 5.4)
    ("aes;dh19+dh20+dh21;addke1=dh19+dh20+dh21;addke2=dh19+dh20", None),
    ("aes;dh19;addke1=dh19;addke2=dh19", None),
])
def test_responder_never_chooses_a_method_twice(west: str, want: str | None) -> None:
    """RFC 9370 §2.2.1: the responder's choice contains no key exchange method twice (the
    KE transform included, NONE excepted); if it cannot avoid it, NO_PROPOSAL_CHOSEN."""
    net = Net(west_kw={"ike": west}, east_kw={"ike": EAST_ANY})
    net.up()
    if want is None:
        assert not net.established(net.west) and not net.established(net.east)
        assert _warned(net.east, "answering NO_PROPOSAL_CHOSEN"), net.east.logs()
        assert [e for e, _, _ in _exchanges(net, "west")] == [ExchangeType.IKE_SA_INIT]
        return
    for side in (net.west, net.east):
        est = net.established(side)
        assert len(est) == 1, side.logs()
        assert est[0].ke == want
    check_pair(net)
    assert not _internal_errors(net)


def test_child_rekey_never_repeats_the_pfs_group() -> None:
    """The same rule for CREATE_CHILD_SA (RFC 9370 §2.2.3): PFS group 19 chosen, ADDKE1
    takes 20, the next alternative, rather than 19 again."""
    kw = {"ike": "aes_gcm256-sha2_384-dh31", "esp": "aes_gcm256-dh19;addke1=dh19+dh20"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    for side in (net.west, net.east):
        assert [c.ke for c in net.children(side)] == ["ECP_256-KE1_ECP_384"], side.logs()
    check_pair(net)


@pytest.mark.parametrize("what", ["addke2_repeats_addke1", "addke1_repeats_ke"])
def test_initiator_refuses_an_answer_repeating_a_method(what: str) -> None:
    """RFC 9370 §2.2.1: a responder's choice with a duplicated method fails the exchange
    on the initiator: no IKE_INTERMEDIATE, nothing left."""
    ike = "aes256-sha2_256-dh19;addke1=dh20+dh19;addke2=dh21+dh20"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})

    def mut(m: wm.Message) -> None:
        sa = next(p for p in m.payloads if isinstance(p, wp.SAPayload))
        ts = sa.proposals[0].transforms
        if what == "addke2_repeats_addke1":  # ADDKE1 20, ADDKE2 20 (both offered there)
            next(t for t in ts if t.type == TT.ADDKE2).id = 20
        else:  # KE 19, ADDKE1 19
            next(t for t in ts if t.type == TT.ADDKE1).id = 19

    _hostile_init_answer(net, mut)
    assert _warned(net.west, "IKE_SA_INIT response has an unacceptable proposal")
    assert [e for e, _, _ in _exchanges(net, "west")] == [ExchangeType.IKE_SA_INIT]
    assert not net.west.engine.by_serial and not _internal_errors(net)


@pytest.mark.parametrize("answer,offered,want", [
    ([(4, 19, None), (6, 20, None), (7, 20, None)],
     [(6, 20, None), (7, 20, None), (7, 21, None)], None),
    ([(4, 19, None), (6, 19, None)], [(6, 19, None), (6, 20, None)], None),
    ([(4, 19, None), (6, 20, None), (7, 21, None)],
     [(6, 20, None), (7, 20, None), (7, 21, None)], (20, 21)),
    ([(4, 19, None), (6, 0, None), (7, 0, None)],  # NONE twice is no duplicate
     [(6, 0, None), (6, 20, None), (7, 0, None)], ()),
])
def test_addke_check_duplicates(answer: list, offered: list, want: tuple | None) -> None:
    assert addke.check(answer, offered) == want


# ================================================================== ML-KEM recipient tests
def test_mlkem_key_failing_the_modulus_check_in_ike_sa_init() -> None:
    """ML-KEM alone in IKE_SA_INIT (draft-ietf-ipsecme-ikev2-mlkem §2.1 allows it): an
    encapsulation key of the right length that fails FIPS 203 §7.2 gets INVALID_SYNTAX
    (§2.2: SHOULD), not an INVALID_KE_PAYLOAD naming the group the peer just used."""
    ike = "aes_gcm256-sha2_384-mlkem768"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    pkt = _pop(net, net.west)
    m = wm.parse_message(pkt.data)
    ke = next(p for p in m.payloads if isinstance(p, wp.KEPayload))
    assert ke.group == 36 and len(ke.data) == 1184
    ke.data = _bad_modulus(bytes(ke.data))
    acts = _deliver(net, net.east, pkt, [m.serialize()])
    sent = [a for a in acts if isinstance(a, SendPacket)]
    assert len(sent) == 1
    assert [p.notify_type for p in wm.parse_message(sent[0].data).payloads] == \
        [N.INVALID_SYNTAX]
    assert _warned(net.east, "ML-KEM encapsulation key rejected; answering INVALID_SYNTAX")
    _no_east(net)
    net.run()
    assert not net.established(net.west) and not _internal_errors(net)


def test_mlkem_key_failing_the_modulus_check_in_intermediate() -> None:
    """The same key in IKE_INTERMEDIATE (the right length, so only FIPS 203 §7.2 catches
    it): INVALID_SYNTAX, and both half-open SAs go."""
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    pkt = _to_first_intermediate(net)

    def mut(p: list[wp.Payload]) -> list[wp.Payload]:
        return [codec.ke(36, _bad_modulus(bytes(x.data))) if isinstance(x, wp.KEPayload)
                else x for x in p]

    _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, mut))
    net.run()
    assert _warned(net.east, "ML-KEM encapsulation key rejected; answering INVALID_SYNTAX")
    assert _warned(net.west, "peer answered IKE_INTERMEDIATE with INVALID_SYNTAX")
    _no_east(net)
    assert not net.west.engine.by_serial and not _internal_errors(net)


@pytest.mark.parametrize("kw,what", [
    ({"ike": "aes_gcm256-sha2_384-dh31", "esp": "aes_gcm256-mlkem768"}, "child"),
    ({"ike": HYBRID, "esp": "aes_gcm256-dh31;addke1=mlkem768"}, "child"),
    ({"ike": HYBRID}, "ike"),
    ({"ike": "aes_gcm256-sha2_384-mlkem768"}, "ike"),
], ids=["child-pfs-mlkem", "child-followup", "ike-followup", "ike-mlkem"])
def test_malformed_mlkem_ciphertext_in_a_rekey_deletes_the_ike_sa(
        monkeypatch: pytest.MonkeyPatch, kw: dict, what: str) -> None:
    """A lying responder answers a CREATE_CHILD_SA or IKE_FOLLOWUP_KE with an ML-KEM
    ciphertext one byte short: the initiator fails the exchange and MUST delete the IKE
    SA, with a Delete for the responder (draft-ietf-ipsecme-ikev2-mlkem §2.2)."""
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    w_old, e_old = _ike(net.west).serial, _ike(net.east).serial
    real = dh.responder_ke

    def short(group: int, data: bytes) -> tuple[bytes, bytes]:
        ct, shared = real(group, data)
        return (ct[:-1] if group in MLKEM else ct), shared

    monkeypatch.setattr(dh, "responder_ke", short)
    eng = net.west.engine
    net.apply(net.west, eng.rekey_child("west-east", net.now) if what == "child" else
              eng.rekey_ike("west-east", net.now))
    net.run()
    assert _warned(net.west, "ciphertext is 1087 bytes, expected 1088")
    assert _warned(net.west, "malformed ML_KEM_768 ciphertext from the peer: deleting the IKE SA")
    assert w_old not in net.west.engine.by_serial
    assert e_old not in net.east.engine.by_serial, net.east.logs()
    assert not _internal_errors(net)


# ================================================================== message IDs, late exchanges
def test_intermediate_with_a_skipped_message_id_is_dropped() -> None:
    """IKE_INTERMEDIATE 2 where 1 is expected (RFC 7296 §2.3): dropped silently, no state
    changes; the real request 1 then completes the IKE SA."""
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    pkt = _to_first_intermediate(net)
    acts = _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, lambda p: p,
                                                  msgid=2))
    assert not [a for a in acts if isinstance(a, SendPacket)]
    st = _ike(net.east).intermediate
    assert st is not None and st.done == 0 and st.exchanges == 0
    net.queue.insert(0, (net.west, pkt))
    net.run()
    assert net.established(net.west) and net.established(net.east)
    assert not _internal_errors(net)


def test_intermediate_after_ike_auth_is_dropped() -> None:
    """IKE_INTERMEDIATE on an established IKE SA (after IKE_AUTH, RFC 9242 §3): dropped
    in both directions; the keys and the SAs stay."""
    net = Net(west_kw={"ike": HYBRID}, east_kw={"ike": HYBRID})
    net.up()
    wi, ei = _ike(net.west), _ike(net.east)
    keys = (ei.sk_d, wi.sk_d)
    ke = codec.ke(36, dh.initiator_ke(36).public)
    for frm, to, ike in ((net.west, net.east, wi), (net.east, net.west, ei)):
        pkt = SendPacket(b"", ike.local, ike.remote)
        acts = _deliver(net, to, pkt, frm.engine.encode(ike, INT, False, ike.next_out, [ke]))
        assert not [a for a in acts if isinstance(a, SendPacket)]
    assert (ei.sk_d, wi.sk_d) == keys
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert net.established(net.west) and net.established(net.east)
    check_pair(net)
    assert not _internal_errors(net)
