"""Wycheproof (C2SP) vectors run through pypluto's transforms.

x25519, ECDH with uncompressed points (P-256/384/521), AES-GCM (96-bit
nonces as salt‖IV), ChaCha20-Poly1305, HMAC-SHA1/256/384/512 (full and
truncated tags).  Vectors whose form IKEv2 cannot carry (compressed points,
non-96-bit nonces) are checked to be *rejected* or skipped, as noted.
"""

from __future__ import annotations

import pytest
from crypto_kat import count, h, load_vectors

from pypluto.crypto import ciphers, dh
from pypluto.crypto.errors import IntegrityError, InvalidKeyExchange
from pypluto.crypto.registry import KE, Encr


def _tests(name: str):  # type: ignore[no-untyped-def]
    data = load_vectors("wycheproof", name)
    for group in data["testGroups"]:
        for t in group["tests"]:
            yield group, t


def test_x25519(pytestconfig: pytest.Config) -> None:
    n = 0
    for _, t in _tests("x25519_test.json"):
        ke = dh.EcxKE(KE.CURVE25519, private=h(t["private"]))
        if "ZeroSharedSecret" in t["flags"]:  # RFC 8031 §2.1: must be refused
            with pytest.raises(InvalidKeyExchange):
                ke.finish(h(t["public"]))
        else:
            assert t["result"] in ("valid", "acceptable")
            assert ke.finish(h(t["public"])) == h(t["shared"]), t["tcId"]
        n += 1
    count(pytestconfig, n, "wycheproof_x25519", expected=518)


@pytest.mark.parametrize(("fname", "group", "vectors"), [
    ("ecdh_secp256r1_ecpoint_test.json", KE.ECP256, 355),
    ("ecdh_secp384r1_ecpoint_test.json", KE.ECP384, 790),
    ("ecdh_secp521r1_ecpoint_test.json", KE.ECP521, 661),
])
def test_ecdh_ecpoint(pytestconfig: pytest.Config, fname: str, group: int, vectors: int) -> None:
    """RFC 5903 KE data is x‖y: uncompressed points are stripped of 0x04; anything else
    (compressed, empty) must be refused by length."""
    n = 0
    size = dh.EcpKE(group).public.__len__()
    for _, t in _tests(fname):
        priv = int(t["private"], 16)
        ke = dh.EcpKE(group, private=priv)
        pub = h(t["public"])
        if len(pub) == size + 1 and pub[0] == 4:
            if t["result"] == "invalid":
                with pytest.raises(InvalidKeyExchange):
                    ke.finish(pub[1:])
            else:
                assert ke.finish(pub[1:]) == h(t["shared"]), t["tcId"]
        else:
            with pytest.raises(InvalidKeyExchange):
                ke.finish(pub)
        n += 1
    count(pytestconfig, n, "wycheproof_ecdh", expected=vectors)


def _aead_case(encr: int, key: bytes, t: dict) -> bool:
    iv = h(t["iv"])
    aead = ciphers.make_aead(encr, key + iv[:4])
    ct_tag = h(t["ct"]) + h(t["tag"])
    if t["result"] == "valid":
        assert aead.seal(iv[4:], h(t["msg"]), h(t["aad"])) == ct_tag, t["tcId"]
        assert aead.open(iv[4:], ct_tag, h(t["aad"])) == h(t["msg"])
    else:
        with pytest.raises(IntegrityError):
            aead.open(iv[4:], ct_tag, h(t["aad"]))
    return True


def test_aes_gcm(pytestconfig: pytest.Config) -> None:
    n = 0
    for g, t in _tests("aes_gcm_test.json"):
        if g["ivSize"] != 96 or g["tagSize"] != 128:
            continue  # RFC 4106: the nonce is always 4-byte salt + 8-byte IV
        n += _aead_case(Encr.AES_GCM_16, h(t["key"]), t)
    count(pytestconfig, n, "wycheproof_aes_gcm", expected=197)


def test_chacha20_poly1305(pytestconfig: pytest.Config) -> None:
    n = 0
    for g, t in _tests("chacha20_poly1305_test.json"):
        if g["ivSize"] != 96 or g["keySize"] != 256:
            continue
        n += _aead_case(Encr.CHACHA20_POLY1305, h(t["key"]), t)
    count(pytestconfig, n, "wycheproof_chacha20_poly1305", expected=316)


@pytest.mark.parametrize(("fname", "hash_name", "vectors"), [
    ("hmac_sha1_test.json", "sha1", 170), ("hmac_sha256_test.json", "sha256", 174),
    ("hmac_sha384_test.json", "sha384", 174), ("hmac_sha512_test.json", "sha512", 174),
])
def test_hmac(pytestconfig: pytest.Config, fname: str, hash_name: str, vectors: int) -> None:
    """Full tags through the PRF (any key length); truncated ones through HmacInteg.verify."""
    from pypluto.crypto.prf import get_prf
    from pypluto.crypto.registry import Prf

    prf = get_prf({"sha1": Prf.HMAC_SHA1, "sha256": Prf.HMAC_SHA2_256,
                   "sha384": Prf.HMAC_SHA2_384, "sha512": Prf.HMAC_SHA2_512}[hash_name])
    n = 0
    for g, t in _tests(fname):
        key, msg, tag = h(t["key"]), h(t["msg"]), h(t["tag"])
        valid = t["result"] == "valid"
        integ = ciphers.HmacInteg(0, key, hash_name, g["tagSize"] // 8)
        assert integ.verify(msg, tag) is valid, t["tcId"]
        if g["tagSize"] // 8 == prf.output_size:
            assert (prf.compute(key, msg) == tag) is valid
        n += 1
    count(pytestconfig, n, "wycheproof_hmac", expected=vectors)
