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
