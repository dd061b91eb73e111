"""Start-up self-tests (crypto/selftest.py): pass as shipped, fail closed when anything is off."""

from __future__ import annotations

import copy

import pytest

from pypluto.crypto import dh, registry, selftest
from pypluto.crypto.registry import KE, Encr, Integ, Prf, TransformType


def test_every_offered_algorithm_passes() -> None:
    report = selftest.run_timed()
    assert report.failures == []
    assert report.ok and report.log_lines()[0].startswith("FIPS-style power-up self-tests passed")
    offered = {(a.type, a.id) for a in selftest.offered()}
    # every ENCR/PRF/INTEG of the registry, every KE the installed cryptography can do
    for t in (TransformType.ENCR, TransformType.PRF, TransformType.INTEG):
        for a in registry.algorithms(t):
            if a.id or t == TransformType.ENCR:
                assert (t, a.id) in offered, a.iana_name
    for a in registry.algorithms(TransformType.KE):
        if a.id:
            assert ((TransformType.KE, a.id) in offered) == dh.supported(a.id), a.iana_name
    assert report.checked == len(offered) >= 40


def test_every_registry_transform_has_a_vector() -> None:
    """Even a KE group this cryptography cannot do has one, ready for when it can."""
    kats = selftest.default_kats()
    for t in (TransformType.ENCR, TransformType.PRF, TransformType.INTEG, TransformType.KE):
        for a in registry.algorithms(t):
            if a.id == 0 and t in (TransformType.INTEG, TransformType.KE):
                continue
            if t == TransformType.KE and a.id == KE.ML_KEM_512 and not dh.supported(a.id):
                continue  # tested below when available
            assert a.id in kats[t], a.iana_name


def _corrupt(hexstr: str) -> str:
    b = bytearray(bytes.fromhex(hexstr))
    b[-1] ^= 0x01
    return b.hex()


@pytest.mark.parametrize("ttype, tid, field", [
    (TransformType.ENCR, Encr.AES_GCM_16, "cipher"),
    (TransformType.ENCR, Encr.AES_CBC, "cipher"),
    (TransformType.ENCR, Encr.AES_CCM_8, "plain"),
    (TransformType.ENCR, Encr.CHACHA20_POLY1305, "key"),
    (TransformType.ENCR, Encr.TRIPLE_DES, "cipher"),
    (TransformType.PRF, Prf.HMAC_SHA2_256, "out"),
    (TransformType.PRF, Prf.AES128_XCBC, "data"),
    (TransformType.INTEG, Integ.HMAC_SHA2_512_256, "icv"),
    (TransformType.INTEG, Integ.AES_CMAC_96, "icv"),
    (TransformType.KE, KE.MODP2048, "shared_sha256"),
    (TransformType.KE, KE.MODP2048, "prime_sha256"),
    (TransformType.KE, KE.ECP256, "pub_r"),
    (TransformType.KE, KE.CURVE25519, "shared"),
    (TransformType.KE, KE.ML_KEM_768, "ek_sha256"),
    (TransformType.KE, KE.ML_KEM_768, "shared"),
])
def test_a_corrupted_vector_fails(ttype, tid, field) -> None:
    if ttype == TransformType.KE and not dh.supported(tid):
        pytest.fail(f"KE {tid} is not supported by the installed cryptography")
    kats = copy.deepcopy(selftest.default_kats())
    kats[ttype][tid][field] = _corrupt(kats[ttype][tid][field])
    alg = registry.get(ttype, tid)
    failures = selftest.run(kats=kats, algorithms=[alg])
    assert [f.transform for f in failures] == [f"{ttype.name} {alg.iana_name}"], failures
    assert "known answer" in failures[0].reason or "RFC" in failures[0].reason


def test_one_corrupted_vector_fails_the_whole_run() -> None:
    kats = copy.deepcopy(selftest.default_kats())
    kats[TransformType.ENCR][Encr.AES_GCM_16]["cipher"] = _corrupt(
        kats[TransformType.ENCR][Encr.AES_GCM_16]["cipher"])
    report = selftest.run_timed(kats=kats)
    assert not report.ok and [str(f) for f in report.failures] == [
        "ENCR AES_GCM_16: encryption differs from the known answer "
        "(GCM spec test case 4, RFC 4106 layout)"]
    assert report.log_lines() == [
        "FATAL: algorithm self-test failed: ENCR AES_GCM_16: encryption differs from the "
        "known answer (GCM spec test case 4, RFC 4106 layout)"]


def test_missing_vector_and_broken_implementation_fail(monkeypatch) -> None:
    kats = copy.deepcopy(selftest.default_kats())
    del kats[TransformType.PRF][Prf.HMAC_SHA1]
    assert [str(f) for f in selftest.run(kats=kats)] == [
        "PRF PRF_HMAC_SHA1: no known-answer vector"]

    def broken(*_a, **_k):
        raise ValueError("backend gone")

    monkeypatch.setattr(selftest.ciphers, "make_aead", broken)
    encr = registry.algorithms(TransformType.ENCR)
    failures = selftest.run(algorithms=encr)
    aeads = {f"ENCR {a.iana_name}" for a in encr if a.aead}
    assert {f.transform for f in failures} == aeads
    assert all("ValueError: backend gone" in f.reason for f in failures)


def test_aead_that_accepts_a_forged_tag_fails(monkeypatch) -> None:
    real = selftest.ciphers.make_aead

    class Lax:
        def __init__(self, inner):
            self.inner, self.raw = inner, inner.raw

        def seal(self, iv, p, a):
            return self.inner.seal(iv, p, a)

        def open(self, iv, c, a):  # a forged tag is not reported
            try:
                return self.inner.open(iv, c, a)
            except Exception:  # noqa: BLE001
                return b""

    def lax(tid, key):
        a = real(tid, key)
        return Lax(a) if tid == Encr.AES_GCM_16 else a

    monkeypatch.setattr(selftest.ciphers, "make_aead", lax)
    failures = selftest.run(algorithms=[registry.get(TransformType.ENCR, Encr.AES_GCM_16)])
    assert len(failures) == 1
    assert "a modified ciphertext passed the integrity check" in failures[0].reason
