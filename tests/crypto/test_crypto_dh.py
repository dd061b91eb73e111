"""Key exchange: known answers (RFC 5903, RFC 7748/8031, RFC 5114, MODP) and validation."""

from __future__ import annotations

import pytest
from crypto_kat import count, h, load_vectors
from testsupport import require

from pypluto.crypto import dh
from pypluto.crypto.errors import InvalidKeyExchange, UnsupportedAlgorithm
from pypluto.crypto.registry import KE

ALL_GROUPS = [KE.MODP768, KE.MODP1024, KE.MODP1536, KE.MODP2048, KE.MODP3072, KE.MODP4096,
              KE.MODP1024_S160, KE.MODP2048_S224, KE.MODP2048_S256, KE.ECP256, KE.ECP384,
              KE.ECP521, KE.CURVE25519, KE.CURVE448, KE.ML_KEM_768, KE.ML_KEM_1024]


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_both_sides_agree(group: int) -> None:
    require(dh.supported(group), f"key exchange group {group} in the installed cryptography")
    i = dh.initiator_ke(group)
    r_data, r_shared = dh.responder_ke(group, i.public)
    assert i.finish(r_data) == r_shared
    assert len(r_shared) >= 32 and any(r_shared)


def test_modp_vectors(pytestconfig: pytest.Config) -> None:
    """MODP known answers, both through OpenSSL and the Python fallback; primes re-derived."""
    n = 0
    for v in load_vectors("modp_dh.json")["vectors"]:
        group = v["ike_group"]
        grp = dh.modp_group(group)
        assert grp.p == int(v["prime"], 16), v["name"]
        assert grp.g == int(v["generator"], 16)
        if "subgroup_q" in v:
            assert grp.q == int(v["subgroup_q"], 16)
        backends = ["python"] + (["openssl"] if dh.MODP_BACKEND == "openssl" else [])
        for backend in backends:
            i = dh.ModpKE(group, private=int(v["priv_i"], 16), backend=backend)
            r = dh.ModpKE(group, private=int(v["priv_r"], 16), backend=backend)
            assert i.public == h(v["pub_i"]).rjust(grp.size, b"\0")
            assert r.public == h(v["pub_r"]).rjust(grp.size, b"\0")
            shared = h(v["shared"]).rjust(grp.size, b"\0")
            assert i.finish(r.public) == shared
            assert r.finish(i.public) == shared
        n += 1
    count(pytestconfig, n, "modp", expected=11)


def test_ecp_rfc5903_with_ke_payloads(pytestconfig: pytest.Config) -> None:
    """RFC 5903 §8: g^i, g^r, the KEi/KEr payloads (generic header + group + data), g^ir."""
    vectors = load_vectors("ecp_rfc5903.json")["vectors"]
    for v in vectors:
        group = v["ike_group"]
        i = dh.EcpKE(group, private=int(v["i"], 16))
        r = dh.EcpKE(group, private=int(v["r"], 16))
        assert i.public == h(v["gi_xy"]) and r.public == h(v["gr_xy"])
        for ke, payload in ((i, v["KEi_payload"]), (r, v["KEr_payload"])):
            # RFC 7296 §3.4: next payload, flags, length, DH group, reserved, data
            hdr = bytes([0, 0]) + (8 + len(ke.public)).to_bytes(2, "big")
            assert hdr + group.to_bytes(2, "big") + b"\0\0" + ke.public == h(payload)
        assert i.finish(r.public) == h(v["gir_x_shared_secret"])
        assert r.finish(i.public) == h(v["gir_x_shared_secret"])
    count(pytestconfig, len(vectors), "rfc5903", expected=3)


def test_ecp_rfc5114(pytestconfig: pytest.Config) -> None:
    data = load_vectors("ecp_rfc5114.json")
    n = 0
    for v in data["vectors"]:
        group = v.get("ike_group")
        if group not in (19, 20, 21):  # 25/26 (P-192/P-224) are not offered
            continue
        i = dh.EcpKE(group, private=int(v["priv_i"], 16))
        r = dh.EcpKE(group, private=int(v["priv_r"], 16))
        assert i.public == h(v["pub_i_xy"]) and r.public == h(v["pub_r_xy"])
        assert i.finish(r.public) == h(v["shared_x"])
        assert r.finish(i.public) == h(v["shared_x"])
        n += 1
    count(pytestconfig, n, "rfc5114_ecp", expected=3)


def test_x25519_rfc7748_rfc8031(pytestconfig: pytest.Config) -> None:
    vectors = load_vectors("x25519_rfc7748_rfc8031.json")["vectors"]
    for v in vectors:
        i = dh.EcxKE(v["ike_group"], private=h(v["priv_i"]))
        r = dh.EcxKE(v["ike_group"], private=h(v["priv_r"]))
        assert i.public == h(v["pub_i"]) and r.public == h(v["pub_r"])
        assert i.finish(r.public) == h(v["shared"]) == r.finish(i.public)
    count(pytestconfig, len(vectors), "rfc7748_rfc8031", expected=2)


@pytest.mark.parametrize("group", [KE.MODP2048, KE.MODP1024_S160, KE.MODP2048_S256])
def test_modp_rejects_bad_values(group: int) -> None:
    """RFC 6989 §2.1/2.2 and RFC 7296 §3.4: 0, 1, p-1, ≥ p, wrong length, outside subgroup."""
    grp = dh.modp_group(group)
    ke = dh.initiator_ke(group)
    bad = [0, 1, grp.p - 1, grp.p, grp.p + 1, 2 ** (8 * grp.size) - 1]
    for y in bad:
        with pytest.raises(InvalidKeyExchange):
            ke.finish(y.to_bytes(grp.size, "big"))
        with pytest.raises(InvalidKeyExchange):
            dh.responder_ke(group, y.to_bytes(grp.size, "big"))
    good = dh.initiator_ke(group).public
    for data in (good[1:], b"\0" + good, b""):
        with pytest.raises(InvalidKeyExchange):
            ke.finish(data)
    if not grp.safe_prime:  # RFC 5114 groups: y^q must be 1
        with pytest.raises(InvalidKeyExchange):
            ke.finish((grp.p - 2).to_bytes(grp.size, "big"))
    ke.finish(good)  # still usable after rejections


def test_modp_python_fallback_rejects_too() -> None:
    ke = dh.ModpKE(KE.MODP2048, backend="python")
    with pytest.raises(InvalidKeyExchange):
        ke.finish((dh.modp_group(KE.MODP2048).p - 1).to_bytes(256, "big"))
    with pytest.raises(UnsupportedAlgorithm):
        dh.ModpKE(KE.MODP2048, backend="gmp")


@pytest.mark.parametrize("group", [KE.ECP256, KE.ECP384, KE.ECP521])
def test_ecp_rejects_off_curve_and_lengths(group: int) -> None:
    ke = dh.initiator_ke(group)
    good = dh.initiator_ke(group).public
    off = bytearray(good)
    off[-1] ^= 1  # y changed: not on the curve
    for data in (bytes(off), bytes(len(good)), good[:-1], good + b"\0", b"\x04" + good[1:]):
        with pytest.raises(InvalidKeyExchange):
            ke.finish(data)
    with pytest.raises(InvalidKeyExchange):
        dh.responder_ke(group, bytes(off))


@pytest.mark.parametrize("group", [KE.CURVE25519, KE.CURVE448])
def test_ecx_rejects_low_order_and_lengths(group: int) -> None:
    size = 32 if group == KE.CURVE25519 else 56
    ke = dh.initiator_ke(group)
    for data in (bytes(size), (1).to_bytes(size, "little"), b"\x01" * (size - 1), b""):
        with pytest.raises(InvalidKeyExchange):
            ke.finish(data)


@pytest.mark.parametrize("group", [KE.ML_KEM_768, KE.ML_KEM_1024])
def test_mlkem_rejects_bad_lengths_and_keys(group: int) -> None:
    require(dh.supported(group), f"ML-KEM group {group} in the installed cryptography")
    ke = dh.initiator_ke(group)
    with pytest.raises(InvalidKeyExchange):
        ke.finish(b"\0" * 10)
    with pytest.raises(InvalidKeyExchange):
        dh.responder_ke(group, ke.public[:-1])
    with pytest.raises(InvalidKeyExchange):  # FIPS 203 §7.2: coefficients must be < q
        dh.responder_ke(group, b"\xff" * len(ke.public))
    # a tampered ciphertext decapsulates to a different (implicit-rejection) secret
    ct, shared = dh.responder_ke(group, ke.public)
    assert ke.finish(bytes([ct[0] ^ 1]) + ct[1:]) != shared


def test_unknown_and_unsupported_groups() -> None:
    with pytest.raises(UnsupportedAlgorithm):
        dh.initiator_ke(99)
    with pytest.raises(UnsupportedAlgorithm):
        dh.responder_ke(KE.NONE, b"")
    assert not dh.supported(99)
    if not dh.supported(KE.ML_KEM_512):
        with pytest.raises(UnsupportedAlgorithm):
            dh.initiator_ke(KE.ML_KEM_512)


def test_no_deprecation_warning_escapes() -> None:
    """The FFDH deprecation is handled at import; using MODP, 3DES, Camellia warns nothing."""
    import subprocess
    import sys

    code = (
        "from pypluto.crypto import dh, ciphers\n"
        "k = dh.initiator_ke(14); r, s = dh.responder_ke(14, k.public); assert k.finish(r) == s\n"
        "ciphers.make_cbc(3, bytes(range(24))).encrypt(bytes(8), bytes(8))\n"
        "ciphers.make_cbc(23, bytes(16)).encrypt(bytes(16), bytes(16))\n"
        "print(dh.MODP_BACKEND)\n"
    )
    out = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("openssl", "python")


@pytest.mark.parametrize("group", ALL_GROUPS)
def test_registry_sizes_match_the_wire(group: int) -> None:
    """registry ke_size / ke_data_size(responder=True) equal what dh produces."""
    from pypluto.crypto import registry

    require(dh.supported(group), f"key exchange group {group} in the installed cryptography")
    alg = registry.get(registry.TransformType.KE, group)
    assert alg is not None
    i = dh.initiator_ke(group)
    r_data, _ = dh.responder_ke(group, i.public)
    assert len(i.public) == alg.ke_data_size(responder=False) == alg.ke_size
    assert len(r_data) == alg.ke_data_size(responder=True)


def test_x25519_responder_checks_as_the_key_object_does() -> None:
    """responder_ke's X25519 path (issue 18) raises what EcxKE.finish raises."""
    for data in (bytes(32), (1).to_bytes(32, "little"), b"\x01" * 31, b"", b"\x01" * 33):
        with pytest.raises(InvalidKeyExchange) as fast:
            dh.responder_ke(KE.CURVE25519, data)
        with pytest.raises(InvalidKeyExchange) as slow:
            dh.EcxKE(KE.CURVE25519).finish(data)
        assert str(fast.value) == str(slow.value)
    i = dh.initiator_ke(KE.CURVE25519)
    r_data, r_shared = dh.responder_ke(KE.CURVE25519, i.public)
    assert len(r_data) == 32 and i.finish(r_data) == r_shared
