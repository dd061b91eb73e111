"""PSK AUTH and signed octets (RFC 7296 §2.15)."""

from __future__ import annotations

import hashlib
import hmac

from pypluto.crypto import auth
from pypluto.crypto.prf import get_prf
from pypluto.crypto.registry import Prf


def test_signed_octets_layout() -> None:
    msg, nonce, sk_p = b"IKE_SA_INIT bytes", b"N" * 32, b"p" * 32
    idb = b"\x01\0\0\0\xc0\x00\x02\x01"  # ID_IPV4_ADDR 192.0.2.1
    out = auth.signed_octets(Prf.HMAC_SHA2_256, sk_p, msg, nonce, idb)
    mac = hmac.new(sk_p, idb, hashlib.sha256).digest()
    assert out == msg + nonce + mac


def test_psk_auth_independent_hmac() -> None:
    psk, octets = b"secret shared", b"o" * 100
    inner = hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha512).digest()
    expected = hmac.new(inner, octets, hashlib.sha512).digest()
    assert auth.psk_auth(Prf.HMAC_SHA2_512, psk, octets) == expected
    assert auth.psk_verify(Prf.HMAC_SHA2_512, psk, octets, expected)
    assert not auth.psk_verify(Prf.HMAC_SHA2_512, psk, octets, expected[:-1] + b"\0")
    assert not auth.psk_verify(Prf.HMAC_SHA2_512, b"other", octets, expected)
    assert not auth.psk_verify(Prf.HMAC_SHA2_512, psk, octets, b"")


def test_psk_auth_with_aes_prf_uses_key_rule() -> None:
    """A PSK of any length works with AES-XCBC (RFC 4434 key rule applies)."""
    prf = get_prf(Prf.AES128_XCBC)
    psk = b"a pre-shared key longer than 16 bytes"
    out = auth.psk_auth(Prf.AES128_XCBC, psk, b"octets")
    assert out == prf.compute(prf.compute(psk, b"Key Pad for IKEv2"), b"octets")
    assert len(out) == 16


def test_null_auth_keys_with_sk_p() -> None:
    sk_pi, octets = b"\x42" * 32, b"signed octets"
    inner = hmac.new(sk_pi, b"Key Pad for IKEv2", hashlib.sha256).digest()
    assert auth.null_auth(Prf.HMAC_SHA2_256, sk_pi, octets) == hmac.new(
        inner, octets, hashlib.sha256).digest()
