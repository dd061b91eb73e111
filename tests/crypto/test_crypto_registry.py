"""Every transform in the registry is implemented, and names resolve as Libreswan's do."""

from __future__ import annotations

import pytest
from testsupport import shared_path

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


def _id(ttype: int, name: str) -> int | None:
    alg = registry.lookup(ttype, name)
    return None if alg is None else alg.id


def test_libreswan_names() -> None:
    assert _id(T.ENCR, "aes_gcm") == registry.Encr.AES_GCM_16
    assert _id(T.ENCR, "AES") == registry.Encr.AES_CBC
    assert _id(T.PRF, "sha2") == registry.Prf.HMAC_SHA2_256
    assert _id(T.INTEG, "sha1") == registry.Integ.HMAC_SHA1_96
    assert _id(T.KE, "dh19") == registry.KE.ECP256
    assert _id(T.KE, "curve25519") == registry.KE.CURVE25519
    assert _id(T.ADDKE1, "mlkem768") == registry.KE.ML_KEM_768
    assert registry.lookup(T.ENCR, "rot13") is None
    assert registry.transform_name(T.ENCR, 20, 256) == "AES_GCM_16_256"
    assert registry.transform_name(T.ENCR, 99) == "ENCR_99?"


_SECTIONS = {"Encryption algorithms:": T.ENCR, "PRF algorithms:": T.PRF,
             "Integrity algorithms:": T.INTEG, "DH algorithms:": T.KE}
# Libreswan 4.10 rows that pypluto does not offer (ESP-only Camellia-CTR, a
# Linux AH bug-compatibility mode).
_NOT_OFFERED = {"CAMELLIA_CTR", "HMAC_SHA2_256_TRUNCBUG"}


def test_libreswan_4_10_algorithm_list_aliases() -> None:
    """Every alias in pluto 4.10's algorithm list (algparse-01 transcript) resolves,
    and all aliases of one row to the same transform."""
    text = shared_path("vectors", "configs", "libreswan-v4.10-parser-tests",
                       "algparse-01__west.console.txt").read_text()
    section = None
    rows = 0
    for line in text.splitlines():
        if not line.startswith("  "):
            section = _SECTIONS.get(line.strip())
            continue
        if section is None:
            continue
        fqn = line.split()[0]
        aliases = line[92:].replace(",", " ").split()  # the alias column
        if fqn in _NOT_OFFERED:
            continue
        ids = {_id(section, a) for a in aliases}
        assert None not in ids and len(ids) <= 1, (fqn, aliases, ids)
        rows += 1
    assert rows == 38  # the rows of the transcript we offer, pinned
