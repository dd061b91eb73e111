"""Every transform in the registry is implemented, and names resolve as Libreswan's do."""

from __future__ import annotations

import pytest

from pypluto.crypto import ciphers, dh, registry
from pypluto.crypto.keys import encr_key_bytes
from pypluto.crypto.prf import PRF
from pypluto.crypto.registry import TransformType as T


@pytest.mark.parametrize("alg", registry.algorithms(T.ENCR), ids=lambda a: a.name)
def test_every_encr_is_implemented(alg: registry.Algorithm) -> None:
    for bits in alg.key_bits or (None,):
        key = bytes(encr_key_bytes(alg.id, bits))
        if alg.aead:
            a = ciphers.make_aead(alg.id, key)
            ct = a.seal(bytes(8), b"data", b"aad")
            assert len(ct) == 4 + alg.icv_size
            assert a.open(bytes(8), ct, b"aad") == b"data"
        else:
            c = ciphers.make_cipher(alg.id, key)
            pt = bytes(max(alg.block_size, 1) * 2)
            assert c.decrypt(bytes(alg.iv_size), c.encrypt(bytes(alg.iv_size), pt)) == pt


@pytest.mark.parametrize("alg", registry.algorithms(T.PRF), ids=lambda a: a.name)
def test_every_prf_is_implemented(alg: registry.Algorithm) -> None:
    p = PRF(alg.id)
    assert len(p.compute(bytes(p.key_size), b"x")) == alg.output_size
    assert len(p.plus(bytes(p.key_size), b"x", 3 * alg.output_size + 1)) == 3 * alg.output_size + 1


@pytest.mark.parametrize("alg", [a for a in registry.algorithms(T.INTEG) if a.id],
                         ids=lambda a: a.name)
def test_every_integ_is_implemented(alg: registry.Algorithm) -> None:
    i = ciphers.make_integ(alg.id, bytes(alg.key_size))
    icv = i.mac(b"x")
    assert len(icv) == alg.icv_size and i.verify(b"x", icv)


@pytest.mark.parametrize("alg", [a for a in registry.algorithms(T.KE) if a.id],
                         ids=lambda a: a.name)
def test_every_ke_is_known_to_dh(alg: registry.Algorithm) -> None:
    assert alg.ke_kind in ("modp", "ecp", "ecx", "kem")
    if alg.ke_kind != "kem":
        assert dh.supported(alg.id)


def test_libreswan_names() -> None:
    assert registry.lookup(T.ENCR, "aes_gcm").id == registry.Encr.AES_GCM_16  # type: ignore[union-attr]
    assert registry.lookup(T.ENCR, "AES").id == registry.Encr.AES_CBC  # type: ignore[union-attr]
    assert registry.lookup(T.PRF, "sha2").id == registry.Prf.HMAC_SHA2_256  # type: ignore[union-attr]
    assert registry.lookup(T.INTEG, "sha1").id == registry.Integ.HMAC_SHA1_96  # type: ignore[union-attr]
    assert registry.lookup(T.KE, "dh19").id == registry.KE.ECP256  # type: ignore[union-attr]
    assert registry.lookup(T.KE, "curve25519").id == registry.KE.CURVE25519  # type: ignore[union-attr]
    assert registry.lookup(T.ADDKE1, "mlkem768").id == registry.KE.ML_KEM_768  # type: ignore[union-attr]
    assert registry.lookup(T.ENCR, "rot13") is None
    assert registry.transform_name(T.ENCR, 20, 256) == "AES_GCM_16_256"
    assert registry.transform_name(T.ENCR, 99) == "ENCR_99?"
