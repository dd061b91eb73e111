"""The responder's choice among the peer's proposals: our order, the KE group kept.

Libreswan 5.2 (ikev2_process_proposals) and strongSwan pick by their own preference:
our earliest proposal that one of the peer's accepts, and in it our earliest
transform of each type (RFC 7296 §2.7 leaves the order to the responder).  A choice
that keeps the group of the peer's KE payload wins over our order, so an acceptable
KE never costs an INVALID_KE_PAYLOAD round trip; without one, the group we prefer
is the one INVALID_KE_PAYLOAD asks for.
"""

from __future__ import annotations

from pypluto.config.proposals import parse_proposals
from pypluto.crypto.registry import Encr, Integ, Prf
from pypluto.ike import proposals as P

from .test_libreswan_outcomes import _ike, make_net

KE = P.KE
IKE, ESP = 1, 3


def _peer(spec: str, proto: str, pfs_group: int | None = None) -> list:
    specs = tuple(parse_proposals(spec, proto))
    return P.build_proposals(specs, IKE if proto == "IKE" else ESP,
                             b"" if proto == "IKE" else b"\x00\x00\x10\x00",
                             ike=proto == "IKE", pfs_group=pfs_group)


def _mine(spec: str, proto: str) -> tuple:
    return tuple(parse_proposals(spec, proto))


def test_our_first_proposal_wins_over_the_peers_first() -> None:
    peer = _peer("aes128-sha1-modp2048,aes256-sha2_256-modp2048", "IKE")
    c = P.choose(peer, _mine("aes256-sha2_256-modp2048,aes128-sha1-modp2048", "IKE"), IKE,
                 ike=True, prefer_ke=KE.MODP2048)
    assert c is not None and c.number == 2
    assert (c.encr, c.encr_bits, c.prf) == (Encr.AES_CBC, 256, Prf.HMAC_SHA2_256)
    # the same offer to a responder that lists them the other way round
    c = P.choose(peer, _mine("aes128-sha1-modp2048,aes256-sha2_256-modp2048", "IKE"), IKE,
                 ike=True, prefer_ke=KE.MODP2048)
    assert c is not None and c.number == 1


def test_of_two_peer_proposals_for_our_first_the_peers_earliest_wins() -> None:
    peer = _peer("aes128-sha2_256-modp2048,aes128-sha2_256-modp3072", "IKE")
    c = P.choose(peer, _mine("aes128-sha2_256-modp2048+modp3072", "IKE"), IKE, ike=True,
                 prefer_ke=KE.MODP2048)
    assert c is not None and c.number == 1 and c.ke == KE.MODP2048


def test_transforms_are_picked_in_our_order() -> None:
    peer = _peer("aes128+aes256-sha1+sha2_256-modp2048", "IKE")
    c = P.choose(peer, _mine("aes256+aes128-sha2_256+sha1-modp2048", "IKE"), IKE, ike=True,
                 prefer_ke=KE.MODP2048)
    assert c is not None
    assert (c.encr_bits, c.prf, c.integ) == (256, Prf.HMAC_SHA2_256, Integ.HMAC_SHA2_256_128)
    c = P.choose(peer, _mine("aes128+aes256-sha1+sha2_256-modp2048", "IKE"), IKE, ike=True,
                 prefer_ke=KE.MODP2048)
    assert c is not None and (c.encr_bits, c.prf) == (128, Prf.HMAC_SHA1)


def test_the_peers_ke_group_is_kept_when_we_accept_it() -> None:
    peer = _peer("aes_gcm256-sha2_256-dh19+dh31", "IKE")
    mine = _mine("aes_gcm256-sha2_256-dh31+dh19", "IKE")
    # KE payload for 19: kept, no INVALID_KE_PAYLOAD
    c = P.choose(peer, mine, IKE, ike=True, prefer_ke=KE.ECP256)
    assert c is not None and c.ke == KE.ECP256
    # without a KE to keep, our order: 31
    c = P.choose(peer, mine, IKE, ike=True)
    assert c is not None and c.ke == KE.CURVE25519
    # a KE payload for a group we do not accept: our preferred group is asked for
    c = P.choose(_peer("aes_gcm256-sha2_256-dh20+dh31+dh19", "IKE"), mine, IKE, ike=True,
                 prefer_ke=KE.ECP384)
    assert c is not None and c.ke == KE.CURVE25519


def test_kept_ke_group_may_come_from_our_later_proposal() -> None:
    peer = _peer("aes256-sha2-dh19,aes256-sha2-modp3072", "IKE")
    mine = _mine("aes256-sha2-modp3072,aes256-sha2-dh19", "IKE")
    c = P.choose(peer, mine, IKE, ike=True, prefer_ke=KE.ECP256)
    assert c is not None and c.number == 1 and c.ke == KE.ECP256
    c = P.choose(peer, mine, IKE, ike=True, prefer_ke=KE.MODP2048)  # unacceptable KE
    assert c is not None and c.number == 2 and c.ke == KE.MODP3072


def test_child_sa_order_and_pfs_group() -> None:
    peer = _peer("aes128-sha1,aes_gcm256", "ESP")
    c = P.choose(peer, _mine("aes_gcm256,aes128-sha1", "ESP"), ESP, ike=False)
    assert c is not None and c.number == 2 and c.encr == Encr.AES_GCM_16
    # CREATE_CHILD_SA with KE: the KE payload's group is kept when ours allows it
    peer = _peer("aes_gcm256-dh19+dh20", "ESP", pfs_group=19)
    c = P.choose(peer, _mine("aes_gcm256-dh20+dh19", "ESP"), ESP, ike=False, pfs_group=19,
                 prefer_ke=KE.ECP256)
    assert c is not None and c.ke == KE.ECP256
    c = P.choose(peer, _mine("aes_gcm256-dh20+dh19", "ESP"), ESP, ike=False, pfs_group=19)
    assert c is not None and c.ke == KE.ECP384


def _init_requests(net) -> int:  # noqa: ANN001
    """IKE_SA_INIT requests west sent (byte 18: exchange type, 19: flags)."""
    return sum(1 for who, d in net.sent if who == "west" and d[18] == 34 and d[19] & 0x20 == 0)


def test_engine_pair_takes_the_responders_order_without_invalid_ke() -> None:
    net = make_net({"ike": "aes128-sha2_256-dh19,aes256-sha2_256-dh19"},
                   {"ike": "aes256-sha2_256-dh19,aes128-sha2_256-dh19"})
    net.up()
    west, east = _ike(net.west, net), _ike(net.east, net)
    assert len(west) == 1 and len(east) == 1
    assert "AES_CBC_256" in str(west[0]) and "AES_CBC_256" in str(east[0])
    assert _init_requests(net) == 1


def test_engine_pair_keeps_an_acceptable_ke_and_asks_for_ours_otherwise() -> None:
    net = make_net({"ike": "aes256-sha2-dh19,aes256-sha2-modp3072"},
                   {"ike": "aes256-sha2-modp3072,aes256-sha2-dh19"})
    net.up()
    assert _ike(net.west, net) and _init_requests(net) == 1  # dh19 kept: one request
    net = make_net({"ike": "aes256-sha2-dh20,aes256-sha2-modp3072"},
                   {"ike": "aes256-sha2-modp3072,aes256-sha2-dh20+dh19"})
    net.up()
    ike = _ike(net.west, net)
    assert ike and _init_requests(net) == 1 and "ECP_384" in str(ike[0])
    net = make_net({"ike": "aes256-sha2-dh19,aes256-sha2-modp3072"},
                   {"ike": "aes256-sha2-modp3072"})
    net.up()
    ike = _ike(net.west, net)
    assert ike and _init_requests(net) == 2 and "MODP3072" in str(ike[0])
