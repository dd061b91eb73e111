"""Property tests: bad input to the crypto layer raises only its own errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypluto.crypto import dh
from pypluto.crypto.errors import IntegrityError, InvalidKeyExchange
from pypluto.crypto.keys import encr_key_bytes, integ_key_bytes
from pypluto.crypto.registry import KE, Encr, Integ
from pypluto.crypto.sk import SKProtector

_SK = [
    SKProtector(e, b, i, bytes(encr_key_bytes(e, b)), bytes(integ_key_bytes(i)))
    for e, b, i in (
        (Encr.AES_GCM_16, 256, None), (Encr.AES_CCM_8, 128, None),
        (Encr.CHACHA20_POLY1305, None, None), (Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128),
        (Encr.AES_CTR, 128, Integ.AES_XCBC_96), (Encr.TRIPLE_DES, None, Integ.AES_CMAC_96),
    )
]


@settings(max_examples=300, deadline=None)
@given(idx=st.integers(0, len(_SK) - 1), aad=st.binary(max_size=40), body=st.binary(max_size=200))
def test_sk_decrypt_random_bodies(idx: int, aad: bytes, body: bytes) -> None:
    with pytest.raises(IntegrityError):
        _SK[idx].decrypt(aad, body)


@settings(max_examples=200, deadline=None)
@given(idx=st.integers(0, len(_SK) - 1), pt=st.binary(max_size=100), flip=st.integers(0, 10**6))
def test_sk_bit_flips_detected(idx: int, pt: bytes, flip: int) -> None:
    sk = _SK[idx]
    aad = b"\x00" * 28
    body = bytearray(sk.encrypt(aad, pt))
    assert sk.decrypt(aad, bytes(body)) == pt
    pos = flip % (len(body) * 8)
    body[pos // 8] ^= 1 << (pos % 8)
    with pytest.raises(IntegrityError):
        sk.decrypt(aad, bytes(body))


_KES = {g: dh.initiator_ke(g) for g in (KE.MODP2048, KE.MODP2048_S256, KE.ECP256, KE.ECP521,
                                         KE.CURVE25519, KE.CURVE448)}


@settings(max_examples=300, deadline=None)
@given(group=st.sampled_from(sorted(_KES)), data=st.binary(max_size=300))
def test_ke_random_peer_values(group: int, data: bytes) -> None:
    """Random peer data either works or raises InvalidKeyExchange — nothing else."""
    try:
        shared = _KES[group].finish(data)
    except InvalidKeyExchange:
        return
    assert isinstance(shared, bytes) and shared
