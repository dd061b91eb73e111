"""ike=/esp=/ah= in Libreswan's grammar; Libreswan 5.x defaults (RFC 7296 §3.3)."""

from __future__ import annotations

import pytest

from pypluto.config.defaults import DEFAULT_ESP, DEFAULT_IKE, proposals_for
from pypluto.config.model import AlgSpec, Connection
from pypluto.config.proposals import ProposalError, format_proposal, parse_proposals
from pypluto.crypto.registry import KE, Encr, Integ, Prf


def test_default_ike_is_libreswan_5() -> None:
    names = [format_proposal(p).split("-")[0] for p in DEFAULT_IKE]
    assert names == ["AES_GCM_16_256", "AES_GCM_16_128", "CHACHA20_POLY1305", "AES_CBC_256",
                     "AES_CBC_128"]
    for p in DEFAULT_IKE:
        assert p.prf == (Prf.HMAC_SHA2_512, Prf.HMAC_SHA2_256)
        assert p.ke == (KE.ECP256, KE.ECP384, KE.ECP521, KE.CURVE25519, KE.MODP4096,
                        KE.MODP3072, KE.MODP2048, KE.MODP8192)
    assert DEFAULT_IKE[0].integ == ()  # AEAD
    assert DEFAULT_IKE[3].integ == (Integ.HMAC_SHA2_512_256, Integ.HMAC_SHA2_256_128)


def test_default_esp_is_libreswan_5() -> None:
    assert [p.encr for p in DEFAULT_ESP] == [
        (AlgSpec(Encr.AES_GCM_16, 256),), (AlgSpec(Encr.AES_GCM_16, 128),),
        (AlgSpec(Encr.CHACHA20_POLY1305, None),), (AlgSpec(Encr.AES_CBC, 256),),
        (AlgSpec(Encr.AES_CBC, 128),)]
    assert all(p.ke == () and p.prf == () for p in DEFAULT_ESP)
    assert DEFAULT_ESP[4].integ == (Integ.HMAC_SHA2_512_256, Integ.HMAC_SHA2_256_128)


def test_proposals_for_uses_conn_or_defaults() -> None:
    conn = Connection("c")
    assert proposals_for(conn, "ike") == DEFAULT_IKE
    conn.esp = parse_proposals("aes_gcm256", "ESP")
    assert proposals_for(conn, "esp") == conn.esp


@pytest.mark.parametrize(("proto", "text", "shown"), [
    ("IKE", "aes-sha1;dh19", "AES_CBC_256+AES_CBC_128-PRF_HMAC_SHA1-AUTH_HMAC_SHA1_96-ECP_256"),
    ("IKE", "aes256-sha1-modp2048", "AES_CBC_256-PRF_HMAC_SHA1-AUTH_HMAC_SHA1_96-MODP2048"),
    ("IKE", "aes_gcm-sha2_256-dh14", "AES_GCM_16_256+AES_GCM_16_128-PRF_HMAC_SHA2_256-MODP2048"),
    ("IKE", "aes_gcm_c_256-sha2_512+sha2_256;dh31",
     "AES_GCM_16_256-PRF_HMAC_SHA2_512+PRF_HMAC_SHA2_256-CURVE25519"),
    ("IKE", "aes128-sha2_512_256-sha2_256-dh19",
     "AES_CBC_128-PRF_HMAC_SHA2_256-AUTH_HMAC_SHA2_512_256-ECP_256"),
    ("IKE", "3des-sha1;modp1536", "3DES-PRF_HMAC_SHA1-AUTH_HMAC_SHA1_96-MODP1536"),
    ("IKE", "chacha20_poly1305-sha512;x25519",
     "CHACHA20_POLY1305-PRF_HMAC_SHA2_512-CURVE25519"),
    ("ESP", "aes128-sha1", "AES_CBC_128-AUTH_HMAC_SHA1_96"),
    ("ESP", "aes-128-sha1", "AES_CBC_128-AUTH_HMAC_SHA1_96"),
    ("ESP", "aes_gcm192-null", "AES_GCM_16_192"),
    ("ESP", "aes_gcm_a_128", "AES_GCM_8_128"),
    ("ESP", "null-md5", "NULL-AUTH_HMAC_MD5_96"),
    ("ESP", "aes128-sha2;modp2048", "AES_CBC_128-AUTH_HMAC_SHA2_256_128-MODP2048"),
    ("ESP", "aes_ctr256-aes_xcbc", "AES_CTR_256-AUTH_AES_XCBC_96"),
    # ESP: the smaller key first, as Libreswan 5.2 proposes it (IKE: the larger first)
    ("ESP", "camellia-sha2_512", "CAMELLIA_CBC_128+CAMELLIA_CBC_256-AUTH_HMAC_SHA2_512_256"),
    ("IKE", "camellia-sha2_512;modp2048",
     "CAMELLIA_CBC_256+CAMELLIA_CBC_128-PRF_HMAC_SHA2_512-AUTH_HMAC_SHA2_512_256-MODP2048"),
    ("AH", "sha1", "AUTH_HMAC_SHA1_96"),
    ("AH", "sha2_256;dh14", "AUTH_HMAC_SHA2_256_128-MODP2048"),
])
def test_parse(proto: str, text: str, shown: str) -> None:
    assert format_proposal(parse_proposals(text, proto)[0]) == shown


def test_lists_and_addke() -> None:
    props = parse_proposals("aes256-sha2;modp2048,aes256-sha2;modp8192", "IKE")
    assert [p.ke for p in props] == [(14,), (18,)]
    props = parse_proposals("aes;dh20;addke1=modp8192+none;addke2=ml_kem_768+none", "IKE")
    assert props[0].ke == (20,) and props[0].addke == ((18, 0), (36, 0))


@pytest.mark.parametrize(("proto", "text"), [
    ("IKE", ""), ("IKE", "foo"), ("IKE", "aes-foo"), ("IKE", "aes_gcm-sha1-sha1"),
    ("IKE", "aes_999"), ("IKE", "aes-sha1;none"), ("IKE", "aes-sha1-sha1-sha1-dh14"),
    ("IKE", "null-sha1"), ("ESP", "aes-sha1-sha2-x"), ("ESP", "aes,,aes"),
    ("ESP", "aes_gcm-sha1"), ("ESP", "aes+aes_gcm"), ("AH", "none"), ("IKE", "aes;dh19;dh20"),
    ("IKE", "aes;addke9=dh19"), ("ESP", "aes-sha1;"), ("ESP", "aes-none"),
])
def test_errors(proto: str, text: str) -> None:
    with pytest.raises(ProposalError):
        parse_proposals(text, proto)


def test_libreswan_alias_names() -> None:
    # names from Libreswan's algorithm table (algparse): aliases resolve
    for text in ("aes_ccm_c", "aes_gcm_c", "aes_ccm_a", "aes_gcm_b", "aesctr", "aes_cbc"):
        assert parse_proposals(text, "ESP")
    for text in ("aes-sha2_256_128", "aes-hmac_sha2_256", "aes-sha1_96", "aes-aes128_xcbc_96",
                 "aes-sha256;ecp_256", "aes-sha384;dh0"):
        parse_proposals(text, "ESP")
