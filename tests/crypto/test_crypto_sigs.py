"""Signature AUTH (RFC 7296 method 1, RFC 4754 methods 9-11, RFC 7427 method 14)."""

from __future__ import annotations

import pytest
from crypto_kat import count, h, load_vectors
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from pypluto.crypto import sigs
from pypluto.crypto.errors import CryptoError

_RSA = rsa.generate_private_key(65537, 2048)


def _tests(name: str):  # type: ignore[no-untyped-def]
    for g in load_vectors("wycheproof", name)["testGroups"]:
        for t in g["tests"]:
            yield g, t


@pytest.mark.parametrize(("fname", "method", "vectors"), [
    ("ecdsa_secp256r1_sha256_p1363_test.json", sigs.AUTH_ECDSA_256, 262),
    ("ecdsa_secp384r1_sha384_p1363_test.json", sigs.AUTH_ECDSA_384, 280),
    ("ecdsa_secp521r1_sha512_p1363_test.json", sigs.AUTH_ECDSA_521, 318),
])
def test_wycheproof_ecdsa_p1363_rfc4754(pytestconfig: pytest.Config, fname: str,
                                        method: int, vectors: int) -> None:
    n = 0
    for g, t in _tests(fname):
        key = load_der_public_key(h(g["publicKeyDer"]))
        ok = sigs.verify(method, key, h(t["msg"]), h(t["sig"]))
        assert ok is (t["result"] == "valid"), t["tcId"]
        n += 1
    count(pytestconfig, n, "wycheproof_ecdsa_p1363", expected=vectors)


def test_wycheproof_rsa_pkcs1_via_rfc7427(pytestconfig: pytest.Config) -> None:
    algid = h("300d06092a864886f70d01010b0500")  # sha256WithRSAEncryption, RFC 7427 A.1
    n = 0
    for g, t in _tests("rsa_signature_2048_sha256_test.json"):
        key = load_der_public_key(h(g["publicKeyDer"]))
        ok = sigs.verify(14, key, h(t["msg"]), bytes((len(algid),)) + algid + h(t["sig"]))
        if t["result"] != "acceptable":
            assert ok is (t["result"] == "valid"), t["tcId"]
        n += 1
    count(pytestconfig, n, "wycheproof_rsa_pkcs1", expected=259)


def test_wycheproof_rsa_pss_via_rfc7427(pytestconfig: pytest.Config) -> None:
    n = 0
    for g, t in _tests("rsa_pss_2048_sha256_mgf1_32_test.json"):
        key = load_der_public_key(h(g["publicKeyDer"]))
        algid = sigs.algorithm_identifier(key, sigs.HASH_SHA2_256, pss=True)
        ok = sigs.verify(14, key, h(t["msg"]), bytes((len(algid),)) + algid + h(t["sig"]))
        if t["result"] != "acceptable":
            assert ok is (t["result"] == "valid"), t["tcId"]
        n += 1
    count(pytestconfig, n, "wycheproof_rsa_pss", expected=108)


def test_rfc7427_algorithm_identifiers() -> None:
    """The DER blobs of RFC 7427 Appendix A (and RFC 4055 PSS params)."""
    pub = _RSA.public_key()
    assert sigs.algorithm_identifier(pub, 2).hex() == "300d06092a864886f70d01010b0500"
    assert sigs.algorithm_identifier(pub, 3).hex() == "300d06092a864886f70d01010c0500"
    assert sigs.algorithm_identifier(pub, 4).hex() == "300d06092a864886f70d01010d0500"
    assert sigs.algorithm_identifier(pub, 2, pss=True).hex() == (
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f7"
        "0d010108300d06096086480165030402010500a203020120")
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert sigs.algorithm_identifier(p256, 2).hex() == "300a06082a8648ce3d040302"
    assert sigs.algorithm_identifier(p256, 3).hex() == "300a06082a8648ce3d040303"
    assert sigs.algorithm_identifier(p256, 4).hex() == "300a06082a8648ce3d040304"
    assert sigs.algorithm_identifier(ed25519.Ed25519PrivateKey.generate(), 5).hex() == (
        "300506032b6570")
    assert sigs.algorithm_identifier(ed448.Ed448PrivateKey.generate(), 5).hex() == (
        "300506032b6571")


def test_pss_with_explicit_trailer_field_is_accepted() -> None:
    """Some peers include trailerField [3] 1 (a DEFAULT value) in the PSS params."""
    algid = h("304606092a864886f70d01010a3039a00f300d06096086480165030402010500a11c301a06092a86"
              "4886f70d010108300d06096086480165030402010500a203020120a303020101")
    body = sigs.sign(14, _RSA, b"octets", sigs.HASH_SHA2_256, pss=True)
    sig = body[1 + body[0]:]
    assert sigs.verify(14, _RSA.public_key(), b"octets", bytes((len(algid),)) + algid + sig)


KEYS = [
    (_RSA, [1, 14]),
    (ec.generate_private_key(ec.SECP256R1()), [9, 14]),
    (ec.generate_private_key(ec.SECP384R1()), [10, 14]),
    (ec.generate_private_key(ec.SECP521R1()), [11, 14]),
    (ed25519.Ed25519PrivateKey.generate(), [14]),
    (ed448.Ed448PrivateKey.generate(), [14]),
]


@pytest.mark.parametrize(("key", "methods"), KEYS, ids=lambda k: type(k).__name__)
def test_sign_verify_round_trips(key, methods) -> None:  # type: ignore[no-untyped-def]
    octets = b"real message | nonce | prf(SK_p, ID)"
    pub = key.public_key()
    for method in methods:
        for hash_id in sigs.hashes_for(key) if method == 14 else [2]:
            for pss in ((False, True) if isinstance(key, rsa.RSAPrivateKey) else (False,)):
                data = sigs.sign(method, key, octets, hash_id, pss=pss)
                assert sigs.verify(method, pub, octets, data)
                assert not sigs.verify(method, pub, octets + b"x", data)
                bad = bytearray(data)
                bad[-1] ^= 1
                assert not sigs.verify(method, pub, octets, bytes(bad))
                assert not sigs.verify(method, pub, octets, data[:-1])
                assert not sigs.verify(method, pub, octets, b"")
                other = KEYS[0][0] if key is not _RSA else KEYS[1][0]
                assert not sigs.verify(method, other.public_key(), octets, data)


def test_wrong_method_or_key() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CryptoError):
        sigs.sign(10, p256, b"x")
    with pytest.raises(CryptoError):
        sigs.sign(1, p256, b"x")
    with pytest.raises(CryptoError):
        sigs.sign(2, p256, b"x")  # method 2 is the shared key MIC
    with pytest.raises(CryptoError):
        sigs.sign(14, p256, b"x", 99)
    assert not sigs.verify(14, p256.public_key(), b"x", b"\x50" + b"\x30" * 10)
    assert not sigs.verify(7, p256.public_key(), b"x", b"anything")
