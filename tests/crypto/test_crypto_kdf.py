"""Known-answer tests of prf, prf+, SKEYSEED and the IKE/Child SA key derivation.

NIST SP 800-135 IKEv2 KDF (CAVS 17.3), NSS's IKE PRF vectors (HMAC and
AES-XCBC), strongSwan's prf+ vectors, and the RFC 7296 §2.14 rule that the
AES-XCBC/CMAC PRFs key SKEYSEED with the first 64 bits of each nonce.
"""

from __future__ import annotations

import pytest
from crypto_kat import count, h, load_vectors
from testsupport import shared_path

from pypluto.crypto import keys
from pypluto.crypto.errors import CryptoError, UnsupportedAlgorithm
from pypluto.crypto.prf import PRF, get_prf
from pypluto.crypto.registry import Encr, Integ, Prf

_HASH_PRF = {"SHA-1": Prf.HMAC_SHA1, "SHA-256": Prf.HMAC_SHA2_256,
             "SHA-384": Prf.HMAC_SHA2_384, "SHA-512": Prf.HMAC_SHA2_512}


def _parse_fax(text: str) -> list[dict]:
    """The CAVS response file: ``[key = value]`` group headers, ``key = value`` test lines."""
    groups: list[dict] = []
    params: dict = {}
    test: dict | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if test is not None or not groups or groups[-1]["tests"]:
                groups.append({"params": {}, "tests": []})
                params = groups[-1]["params"]
                test = None
            inner = line.strip("[]")
            if "=" in inner:
                k, v = (x.strip() for x in inner.split("=", 1))
                params[k] = int(v)
            else:
                params["hash"] = inner
            continue
        k, v = (x.strip() for x in line.split("=", 1))
        if k == "COUNT":
            test = {"COUNT": int(v)}
            groups[-1]["tests"].append(test)
        else:
            assert test is not None
            test[k] = v
    return groups


def test_nist_sp800_135_ikev2_all_900(pytestconfig: pytest.Config) -> None:
    """Every case of the NIST CAVS 'IKE v2' response file (.fax), and its JSON transcription."""
    fax = _parse_fax(shared_path("vectors", "crypto", "nist_cavp_sp800-135_ikev2.fax").read_text())
    data = load_vectors("nist_cavp_sp800-135_ikev2.json")
    assert [g["tests"] for g in fax] == [
        [{k: (int(x) if k == "COUNT" else x) for k, x in t.items()} for t in g["tests"]]
        for g in data["groups"]]
    n = 0
    for group in fax:
        prf_id = _HASH_PRF[group["params"]["hash"]]
        prf = get_prf(prf_id)
        dkm_len = group["params"]["DKM length"] // 8
        child_len = group["params"]["Child SA DKM length"] // 8
        for t in group["tests"]:
            ni, nr, gir, gir_new = h(t["Ni"]), h(t["Nr"]), h(t["g^ir"]), h(t["g^ir (new)"])
            spi_i, spi_r = h(t["SPIi"]), h(t["SPIr"])
            seed = keys.skeyseed(prf, ni, nr, gir)
            assert seed.hex() == t["SKEYSEED"], t["COUNT"]
            dkm = prf.plus(seed, ni + nr + spi_i + spi_r, dkm_len)
            assert dkm.hex() == t["DKM"]
            # derive_ike_keys slices the same prf+ stream: SK_d first.
            ike = keys.derive_ike_keys(prf_id, Encr.AES_CBC, 128, Integ.HMAC_SHA1_96,
                                       seed, ni, nr, spi_i, spi_r)
            assert ike.sk_d == dkm[: prf.key_size]
            assert ike.sk_ai == dkm[prf.key_size : prf.key_size + 20]
            sk_d = ike.sk_d
            assert prf.plus(sk_d, ni + nr, child_len).hex() == t["DKM(Child SA)"]
            assert prf.plus(sk_d, gir_new + ni + nr, child_len).hex() == t["DKM(Child SA D-H)"]
            ck = keys.derive_child_keys(prf_id, sk_d, ni, nr, Encr.AES_CBC, 128,
                                        Integ.HMAC_SHA1_96)
            assert ck.encr_i + ck.integ_i + ck.encr_r + ck.integ_r == h(t["DKM(Child SA)"])[:72]
            ck = keys.derive_child_keys(prf_id, sk_d, ni, nr, Encr.AES_GCM_16, 256, None,
                                        shared=gir_new)
            assert ck.integ_i == ck.integ_r == b""
            assert ck.encr_i + ck.encr_r == h(t["DKM(Child SA D-H)"])[:72]
            rk = keys.rekey_skeyseed(prf, sk_d, gir_new, ni, nr)
            assert rk.hex() == t["SKEYSEED(Rekey)"]
            n += 1
    count(pytestconfig, n, "nist_sp800_135_ikev2", expected=900)


def test_nss_ike_prf_vectors(pytestconfig: pytest.Config) -> None:
    """IKEv2 entries (SKEYSEED, rekey SKEYSEED, prf+) incl. AES-XCBC; IKEv1 ones are skipped."""
    prf_by_file = {"sha1": Prf.HMAC_SHA1, "sha256": Prf.HMAC_SHA2_256,
                   "sha384": Prf.HMAC_SHA2_384, "sha512": Prf.HMAC_SHA2_512,
                   "aesxcbc": Prf.AES128_XCBC}
    n = 0
    for v in load_vectors("nss_ike_prf_vectors.json")["vectors"]:
        kind = v["test_type"]
        if kind.startswith("ikeV1") or not v["valid"]:
            continue
        fname = v["source_file"].rsplit("ike-", 1)[1].split("-vectors")[0]
        prf = get_prf(prf_by_file[fname])
        ikm = h(v.get("ikm_effective", v["ikm"]))
        if kind == "ikeGxy":
            out = keys.skeyseed(prf, h(v["Ni"]), h(v["Nr"]), ikm)
        elif kind == "ikeV2Rekey":
            out = keys.rekey_skeyseed(prf, ikm, h(v["gxykm"]), h(v["Ni"]), h(v["Nr"]))
        elif kind == "ikePlus":
            out = prf.plus(ikm, h(v["seed_data"]), v["size"])
        else:  # pragma: no cover - new kinds must be looked at
            raise AssertionError(kind)
        assert out.hex() == v["okm"], v["id"]
        n += 1
    count(pytestconfig, n, "nss_ike_prf", expected=30)


def test_prf_plus_vectors(pytestconfig: pytest.Config) -> None:
    data = load_vectors("prf_plus.json")
    for v in data["vectors"]:
        prf = get_prf(Prf[v["prf"].removeprefix("PRF_")])
        out = h(v["out"])
        assert prf.plus(h(v["key"]), h(v["seed"]), len(out)) == out, v["name"]
    count(pytestconfig, len(data["vectors"]), "prf_plus", expected=7)


def test_prf_plus_limits() -> None:
    prf = get_prf(Prf.HMAC_SHA1)
    assert len(prf.plus(b"k", b"s", 255 * 20)) == 255 * 20
    with pytest.raises(CryptoError):
        prf.plus(b"k", b"s", 255 * 20 + 1)
    assert prf.plus(b"k", b"s", 0) == b""
    # prf+ is a prefix-stable stream
    assert prf.plus(b"k", b"s", 50)[:30] == prf.plus(b"k", b"s", 30)


@pytest.mark.parametrize("prf_id", [Prf.AES128_XCBC, Prf.AES128_CMAC])
def test_skeyseed_nonce_truncation_rule(prf_id: int) -> None:
    """RFC 7296 §2.14: AES-XCBC/CMAC PRFs use only the first 64 bits of Ni and Nr."""
    prf = get_prf(prf_id)
    ni = bytes(range(32))
    nr = bytes(range(100, 132))
    shared = b"\x55" * 256
    expected = prf.compute(ni[:8] + nr[:8], shared)
    assert keys.skeyseed(prf, ni, nr, shared) == expected
    assert keys.skeyseed(prf_id, ni, nr, shared) == expected
    # the rest of the nonces is ignored ...
    assert keys.skeyseed(prf, ni[:8] + b"x" * 40, nr[:8] + b"y", shared) == expected
    # ... but the first 64 bits of each matter
    assert keys.skeyseed(prf, b"\xff" + ni[1:], nr, shared) != expected
    assert keys.skeyseed(prf, ni, nr[:7] + b"\xff" + nr[8:], shared) != expected
    # without truncation the RFC 4434/4615 key rule would give another value
    assert prf.compute(ni + nr, shared) != expected


def test_skeyseed_hmac_uses_whole_nonces() -> None:
    prf = get_prf(Prf.HMAC_SHA2_256)
    ni, nr = bytes(range(32)), bytes(range(32, 64))
    assert keys.skeyseed(prf, ni, nr, b"g") == prf.compute(ni + nr, b"g")
    assert keys.skeyseed(prf, ni, nr[:8] + b"z" * 24, b"g") != keys.skeyseed(prf, ni, nr, b"g")


def test_ike_keys_layout_aead_and_xcbc() -> None:
    """Lengths per RFC 7296 §2.14 and RFC 5282 §7 (salt, no SK_a with AEAD)."""
    prf = get_prf(Prf.AES128_XCBC)
    seed = b"\x01" * 16
    ni, nr, si, sr = b"n" * 8, b"m" * 8, b"i" * 8, b"r" * 8
    k = keys.derive_ike_keys(Prf.AES128_XCBC, Encr.AES_GCM_16, 256, None, seed, ni, nr, si, sr)
    assert [len(x) for x in (k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, k.sk_pi, k.sk_pr)] == [
        16, 0, 0, 36, 36, 16, 16]
    stream = prf.plus(seed, ni + nr + si + sr, 16 + 72 + 32)
    assert k.sk_d + k.sk_ei + k.sk_er + k.sk_pi + k.sk_pr == stream
    k2 = keys.derive_ike_keys(Prf.HMAC_SHA2_512, Encr.CHACHA20_POLY1305, None, None,
                              seed, ni, nr, si, sr)
    assert len(k2.sk_ei) == 36 and len(k2.sk_d) == 64
    k3 = keys.derive_ike_keys(Prf.HMAC_SHA2_256, Encr.AES_CBC, 256, Integ.HMAC_SHA2_256_128,
                              seed, ni, nr, si, sr)
    assert [len(x) for x in (k3.sk_d, k3.sk_ai, k3.sk_ei, k3.sk_pi)] == [32, 32, 32, 32]
    assert "sk_d=<32 bytes>" in repr(k3) and k3.sk_d.hex() not in repr(k3)


def test_child_keys_order_and_repr() -> None:
    """§2.17: initiator→responder keys first; encryption before integrity."""
    prf = get_prf(Prf.HMAC_SHA2_256)
    sk_d, ni, nr = b"d" * 32, b"a" * 16, b"b" * 16
    ck = keys.derive_child_keys(Prf.HMAC_SHA2_256, sk_d, ni, nr, Encr.AES_CTR, 128,
                                Integ.AES_XCBC_96)
    stream = prf.plus(sk_d, ni + nr, 2 * (20 + 16))
    assert (ck.encr_i, ck.integ_i, ck.encr_r, ck.integ_r) == (
        stream[:20], stream[20:36], stream[36:56], stream[56:])
    assert stream[:4].hex() not in repr(ck)
    # an empty-but-present shared secret still changes the seed layout only by itself
    with_ke = keys.derive_child_keys(Prf.HMAC_SHA2_256, sk_d, ni, nr, Encr.AES_CTR, 128,
                                     Integ.AES_XCBC_96, shared=b"\x07" * 32)
    assert with_ke != ck


def test_bad_transforms_raise_clear_errors() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        PRF(99)
    with pytest.raises(UnsupportedAlgorithm):
        keys.derive_child_keys(Prf.HMAC_SHA1, b"k" * 20, b"n", b"n", 999, None, None)
    with pytest.raises(UnsupportedAlgorithm):
        keys.derive_child_keys(Prf.HMAC_SHA1, b"k" * 20, b"n", b"n", Encr.AES_CBC, 100,
                               Integ.HMAC_SHA1_96)
    with pytest.raises(UnsupportedAlgorithm):
        keys.derive_child_keys(Prf.HMAC_SHA1, b"k" * 20, b"n", b"n", Encr.AES_CBC, 128, 77)


def test_apply_ppk_rfc8784() -> None:
    import hashlib
    import hmac

    ike = keys.derive_ike_keys(Prf.HMAC_SHA2_256, Encr.AES_GCM_16, 256, None,
                               b"s" * 32, b"n" * 32, b"m" * 32, b"i" * 8, b"r" * 8)
    ppk = b"post-quantum preshared key"
    out = keys.apply_ppk(Prf.HMAC_SHA2_256, ppk, ike)

    def plus1(key: bytes) -> bytes:  # prf+ of one block: prf(PPK, K | 0x01)
        return hmac.new(ppk, key + b"\x01", hashlib.sha256).digest()

    assert out.sk_d == plus1(ike.sk_d)
    assert out.sk_pi == plus1(ike.sk_pi) and out.sk_pr == plus1(ike.sk_pr)
    assert (out.sk_ai, out.sk_ar, out.sk_ei, out.sk_er) == (ike.sk_ai, ike.sk_ar, ike.sk_ei,
                                                            ike.sk_er)
