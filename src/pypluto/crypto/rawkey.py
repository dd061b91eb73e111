"""Raw public keys as Libreswan writes them in ``ipsec.conf``.

* ``leftrsasigkey=0s<base64>`` / ``0x<hex>``: an RSA key in RFC 3110 §2 form (exponent
  length, exponent, modulus); ``%cert`` means the key of ``leftcert=``.
* ``leftecdsakey=0s<base64>`` / ``0x<hex>``: an ECDSA key as its raw public point,
  X ‖ Y (the IPSECKEY form of RFC 8005 that ``ipsec showhostkey`` prints; a leading
  0x04, the uncompressed-point octet, is allowed); its length names the curve: 64
  bytes P-256, 96 P-384, 132 P-521.
* ``leftpubkey=0s<base64>`` (Libreswan 5; also bare base64 or ``0x<hex>``): a DER
  SubjectPublicKeyInfo (RFC 5280 §4.1.2.7), RSA or ECDSA.
* the CKAID (``leftckaid=``) that names the private key in the NSS database is NSS's
  ``CKA_ID`` for the key: SHA-1 of the RSA modulus, or of the EC public point.
* the key ID Libreswan prints (``# rsakey AwEAAbc12``) is the first nine base64
  characters of the RFC 3110 blob (RSA), or of the CKAID (ECDSA).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

RawPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


class RawKeyError(ValueError):
    """A raw key value that cannot be decoded; the text says why."""


def decode_value(value: str) -> bytes:
    """The bytes of ``0s<base64>``, ``0x<hex>`` or bare base64 (white space ignored)."""
    text = "".join(value.split())
    try:
        if text[:2].lower() == "0x":
            return bytes.fromhex(text[2:].replace("_", ""))
        if text[:2].lower() == "0s":
            text = text[2:]
        return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise RawKeyError(f"bad key encoding: {e}") from None


def rfc3110_encode(key: rsa.RSAPublicKey) -> bytes:
    """An RSA public key in RFC 3110 §2 form."""
    n = key.public_numbers()
    e = n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")
    head = bytes([len(e)]) if len(e) < 256 else b"\0" + len(e).to_bytes(2, "big")
    return head + e + n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")


def rfc3110_decode(blob: bytes) -> rsa.RSAPublicKey:
    """RFC 3110 §2: one octet of exponent length (or 0 and two octets), exponent, modulus."""
    if len(blob) < 3:
        raise RawKeyError("RSA key too short")
    if blob[0]:
        elen, off = blob[0], 1
    else:
        elen, off = int.from_bytes(blob[1:3], "big"), 3
    e = int.from_bytes(blob[off:off + elen], "big")
    modulus = blob[off + elen:]
    if elen == 0 or len(modulus) < 64 or not modulus[0] or e < 3:
        raise RawKeyError("not an RSA key in RFC 3110 form (exponent or modulus missing, "
                          "or a modulus under 512 bits)")
    try:
        return rsa.RSAPublicNumbers(e, int.from_bytes(modulus, "big")).public_key()
    except ValueError as err:
        raise RawKeyError(f"bad RSA key: {err}") from None


def parse_rsasigkey(value: str) -> rsa.RSAPublicKey:
    """``leftrsasigkey=0s...`` as an RSA public key."""
    return rfc3110_decode(decode_value(value))


_EC_CURVES: dict[int, ec.EllipticCurve] = {64: ec.SECP256R1(), 96: ec.SECP384R1(),
                                          132: ec.SECP521R1()}


def ecdsa_point(key: ec.EllipticCurvePublicKey) -> bytes:
    """The key's raw public point X ‖ Y (``leftecdsakey=``, without the 0x04 octet)."""
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint)[1:]


def parse_ecdsakey(value: str) -> ec.EllipticCurvePublicKey:
    """``leftecdsakey=0s...`` (X ‖ Y, optionally after 0x04) as an ECDSA public key."""
    raw = decode_value(value)
    if len(raw) - 1 in _EC_CURVES and raw[:1] == b"\x04":
        raw = raw[1:]
    curve = _EC_CURVES.get(len(raw))
    if curve is None:
        raise RawKeyError(f"an ECDSA public point of {len(raw)} bytes (P-256 has 64, "
                          "P-384 96, P-521 132)")
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + raw)
    except ValueError as e:
        raise RawKeyError(f"not a point on {curve.name}: {e}") from None


def parse_pubkey(value: str) -> RawPublicKey:
    """``leftpubkey=`` (a DER SubjectPublicKeyInfo) as an RSA or ECDSA public key."""
    der = decode_value(value)
    try:
        key = serialization.load_der_public_key(der)
    except ValueError as e:
        raise RawKeyError(f"not a SubjectPublicKeyInfo: {e}") from None
    except UnsupportedAlgorithm as e:  # an algorithm OID cryptography does not know
        raise RawKeyError(f"unsupported public key algorithm: {e}") from None
    if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        raise RawKeyError(f"{type(key).__name__} raw keys are not supported (RSA or ECDSA)")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 512:  # as rfc3110_decode
        raise RawKeyError(f"RSA modulus of {key.key_size} bits, under 512 bits")
    return key


def spki_der(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def ckaid(key: PublicKeyTypes) -> str:
    """NSS's CKA_ID of the key pair (hex): SHA-1 of the modulus or of the EC point."""
    if isinstance(key, rsa.RSAPublicKey):
        n = key.public_numbers().n
        return hashlib.sha1(n.to_bytes((n.bit_length() + 7) // 8, "big")).hexdigest()
    if isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_bytes(serialization.Encoding.X962,
                                 serialization.PublicFormat.UncompressedPoint)
        return hashlib.sha1(point).hexdigest()
    raise RawKeyError(f"no CKAID for {type(key).__name__}")


def keyid(key: PublicKeyTypes) -> str:
    """Libreswan's short key ID: nine base64 characters of the RFC 3110 blob / CKAID."""
    blob = rfc3110_encode(key) if isinstance(key, rsa.RSAPublicKey) else \
        bytes.fromhex(ckaid(key))
    return base64.b64encode(blob).decode()[:9]


def end_public_key(raw: dict[str, str]) -> RawPublicKey | None:
    """The raw public key an end names (``rsasigkey=``, ``ecdsakey=`` or ``pubkey=``),
    None for none or ``%cert`` (the certificate's key).  Raises RawKeyError for a bad
    value."""
    for name in ("rsasigkey", "ecdsakey", "pubkey"):
        v = (raw.get(name) or "").strip()
        if not v or v.startswith("%"):
            continue
        try:
            return parse_rsasigkey(v) if name == "rsasigkey" else \
                parse_ecdsakey(v) if name == "ecdsakey" else parse_pubkey(v)
        except RawKeyError as e:
            raise RawKeyError(f"{name}=: {e}") from None
    return None


def end_ckaid(raw: dict[str, str]) -> str | None:
    """The CKAID of the end's private key: ``ckaid=``, else that of its raw public key."""
    ck = (raw.get("ckaid") or "").strip().lower()
    if ck:
        return ck
    key = end_public_key(raw)
    return ckaid(key) if key is not None else None
