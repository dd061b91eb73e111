"""Signature AUTH payloads (RFC 7296 §2.15/§3.8, RFC 4754, RFC 7427).

AUTH methods:

* 1 — RSA Digital Signature: PKCS#1 v1.5 with SHA-1 over the signed octets.
* 9, 10, 11 — ECDSA with SHA-256 on P-256, SHA-384 on P-384, SHA-512 on
  P-521 (RFC 4754 §3, §7): the signature is r‖s, each the size of the group order.
* 14 — Digital Signature (RFC 7427 §3): one length octet, the ASN.1
  AlgorithmIdentifier (DER) of the signature algorithm, then the signature;
  ECDSA signatures are DER ``Ecdsa-Sig-Value`` (RFC 3279 §2.2.3).  Supported:
  RSA PKCS#1 v1.5 and RSASSA-PSS with SHA-256/384/512 (and v1.5/SHA-1 when
  asked for), ECDSA with SHA-256/384/512, Ed25519 and Ed448.

The hash is chosen from the peer's SIGNATURE_HASH_ALGORITHMS notify
(RFC 7427 §4): :data:`HASH_SHA1` .. :data:`HASH_IDENTITY`.  ``verify`` never
raises on peer data: a malformed or wrong AUTH is simply ``False``.
Keys are ``cryptography`` key objects (from certificates or files).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from pypluto.iana import AuthMethod, HashAlgorithm

from .der import read_tlv
from .errors import CryptoError

# Plain ints of pypluto.iana's AuthMethod / HashAlgorithm, under the names this module uses.
AUTH_RSA = int(AuthMethod.RSA_SIG)
AUTH_ECDSA_256 = int(AuthMethod.ECDSA_SHA256_P256)
AUTH_ECDSA_384 = int(AuthMethod.ECDSA_SHA384_P384)
AUTH_ECDSA_521 = int(AuthMethod.ECDSA_SHA512_P521)
AUTH_DIGITAL_SIGNATURE = int(AuthMethod.DIGITAL_SIGNATURE)

# RFC 7427 §4 / IANA "IKEv2 Hash Algorithms"
HASH_SHA1 = int(HashAlgorithm.SHA1)
HASH_SHA2_256 = int(HashAlgorithm.SHA2_256)
HASH_SHA2_384 = int(HashAlgorithm.SHA2_384)
HASH_SHA2_512 = int(HashAlgorithm.SHA2_512)
HASH_IDENTITY = int(HashAlgorithm.IDENTITY)

_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    HASH_SHA1: hashes.SHA1,
    HASH_SHA2_256: hashes.SHA256,
    HASH_SHA2_384: hashes.SHA384,
    HASH_SHA2_512: hashes.SHA512,
}

# --------------------------------------------------------------------------- minimal DER


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        return bytes((tag, n)) + body
    ln = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(ln))) + ln + body


def _oid(dotted: str) -> bytes:
    parts = [int(x) for x in dotted.split(".")]
    out = bytearray((40 * parts[0] + parts[1],))
    for p in parts[2:]:
        chunk = [p & 0x7F]
        p >>= 7
        while p:
            chunk.append(0x80 | (p & 0x7F))
            p >>= 7
        out += bytes(reversed(chunk))
    return _der(0x06, bytes(out))


_NULL = b"\x05\x00"


def _algid(oid: str, params: bytes | None = None) -> bytes:
    return _der(0x30, _oid(oid) + (params or b""))




_OID_HASH = {
    "2.16.840.1.101.3.4.2.1": HASH_SHA2_256,
    "2.16.840.1.101.3.4.2.2": HASH_SHA2_384,
    "2.16.840.1.101.3.4.2.3": HASH_SHA2_512,
    "1.3.14.3.2.26": HASH_SHA1,
}
_HASH_OID = {v: k for k, v in _OID_HASH.items()}
_RSA_PKCS1 = {HASH_SHA1: "1.2.840.113549.1.1.5", HASH_SHA2_256: "1.2.840.113549.1.1.11",
              HASH_SHA2_384: "1.2.840.113549.1.1.12", HASH_SHA2_512: "1.2.840.113549.1.1.13"}
_ECDSA = {HASH_SHA1: "1.2.840.10045.4.1", HASH_SHA2_256: "1.2.840.10045.4.3.2",
          HASH_SHA2_384: "1.2.840.10045.4.3.3", HASH_SHA2_512: "1.2.840.10045.4.3.4"}
_PSS = "1.2.840.113549.1.1.10"
_MGF1 = "1.2.840.113549.1.1.8"
_ED25519 = "1.3.101.112"
_ED448 = "1.3.101.113"


def _pss_algid(hash_id: int) -> bytes:
    """RSASSA-PSS-params (RFC 4055 §3.1): hash, MGF1 with the same hash, salt = hash length."""
    h = _algid(_HASH_OID[hash_id], _NULL)
    salt = _HASHES[hash_id]().digest_size
    params = _der(0x30, _der(0xA0, h) + _der(0xA1, _algid(_MGF1, h))
                  + _der(0xA2, _der(0x02, bytes((salt,)))))
    return _algid(_PSS, params)


def _decode_oid(value: bytes) -> str:
    if not value:
        raise ValueError("empty OID")
    parts = [value[0] // 40, value[0] % 40] if value[0] < 80 else [2, value[0] - 80]
    acc = 0
    for b in value[1:]:
        acc = (acc << 7) | (b & 0x7F)
        if not b & 0x80:
            parts.append(acc)
            acc = 0
    return ".".join(map(str, parts))


def _parse_algid(blob: bytes) -> tuple[str, bytes]:
    tag, seq, end = read_tlv(blob, 0)
    if tag != 0x30 or end != len(blob):
        raise ValueError("AlgorithmIdentifier is not one SEQUENCE")
    tag, oid, off = read_tlv(seq, 0)
    if tag != 0x06:
        raise ValueError("no OID")
    return _decode_oid(oid), seq[off:]


def _parse_pss_params(params: bytes) -> tuple[int, int, int]:
    """(hash id, MGF1 hash id, salt length) from RSASSA-PSS-params (defaults per RFC 4055)."""
    tag, seq, end = read_tlv(params, 0)
    if tag != 0x30 or end != len(params):
        raise ValueError("bad PSS params")
    h, mgf_h, salt, off = HASH_SHA1, HASH_SHA1, 20, 0
    while off < len(seq):
        tag, val, off = read_tlv(seq, off)
        if tag == 0xA0:
            h = _OID_HASH[_parse_algid(val)[0]]
        elif tag == 0xA1:
            oid, rest = _parse_algid(val)
            if oid != _MGF1:
                raise ValueError("MGF is not MGF1")
            mgf_h = _OID_HASH[_parse_algid(rest)[0]]
        elif tag == 0xA2:
            t2, ival, _ = read_tlv(val, 0)
            if t2 != 0x02:
                raise ValueError("bad salt length")
            salt = int.from_bytes(ival, "big")
        elif tag == 0xA3:
            pass  # trailerField: only 1 (the default) exists
        else:
            raise ValueError("unknown PSS parameter")
    return h, mgf_h, salt


# --------------------------------------------------------------------------- helpers

_RFC4754 = {AUTH_ECDSA_256: (ec.SECP256R1, HASH_SHA2_256, 32),
            AUTH_ECDSA_384: (ec.SECP384R1, HASH_SHA2_384, 48),
            AUTH_ECDSA_521: (ec.SECP521R1, HASH_SHA2_512, 66)}


def algorithm_identifier(key: PrivateKeyTypes | PublicKeyTypes, hash_id: int, *, pss: bool = False) -> bytes:
    """The DER AlgorithmIdentifier RFC 7427 sends for ``key`` and ``hash_id``."""
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return _pss_algid(hash_id) if pss else _algid(_RSA_PKCS1[hash_id], _NULL)
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        return _algid(_ECDSA[hash_id])
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return _algid(_ED25519)
    if isinstance(key, (ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return _algid(_ED448)
    raise CryptoError(f"no RFC 7427 signature for {type(key).__name__}")


def hashes_for(key: PrivateKeyTypes | PublicKeyTypes) -> list[int]:
    """SIGNATURE_HASH_ALGORITHMS values usable with ``key`` (RFC 7427 §4, RFC 8420 §2)."""
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey,
                        ed448.Ed448PrivateKey, ed448.Ed448PublicKey)):
        return [HASH_IDENTITY]
    return [HASH_SHA2_256, HASH_SHA2_384, HASH_SHA2_512]


def sign(method: int, key: PrivateKeyTypes, octets: bytes, hash_id: int = HASH_SHA2_256, *,
         pss: bool = False) -> bytes:
    """AUTH payload data for ``octets`` (the signed octets of RFC 7296 §2.15)."""
    try:
        if method == AUTH_RSA:
            if not isinstance(key, rsa.RSAPrivateKey):
                raise CryptoError("AUTH method 1 needs an RSA key")
            return key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
        if method in _RFC4754:
            curve, h, size = _RFC4754[method]
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
                raise CryptoError(f"AUTH method {method} needs a {curve.name} key")
            r, s = decode_dss_signature(key.sign(octets, ec.ECDSA(_HASHES[h]())))
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if method != AUTH_DIGITAL_SIGNATURE:
            raise CryptoError(f"AUTH method {method} is not a signature method")
        algid = algorithm_identifier(key, hash_id, pss=pss)
        if isinstance(key, rsa.RSAPrivateKey):
            halg = _HASHES[hash_id]()
            pad = (padding.PSS(padding.MGF1(halg), halg.digest_size) if pss
                   else padding.PKCS1v15())
            sig = key.sign(octets, pad, halg)
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            sig = key.sign(octets, ec.ECDSA(_HASHES[hash_id]()))
        elif isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
            sig = key.sign(octets)
        else:
            raise CryptoError(f"cannot sign with {type(key).__name__}")
        return bytes((len(algid),)) + algid + sig
    except KeyError as e:
        raise CryptoError(f"hash {hash_id} is not usable for signatures") from e
    except UnsupportedAlgorithm as e:
        raise CryptoError(str(e)) from e


def _verify_rsa(key: rsa.RSAPublicKey, sig: bytes, octets: bytes, oid: str, params: bytes) -> None:
    if oid == _PSS:
        h, mgf_h, salt = _parse_pss_params(params)
        key.verify(sig, octets, padding.PSS(padding.MGF1(_HASHES[mgf_h]()), salt), _HASHES[h]())
        return
    for h, o in _RSA_PKCS1.items():
        if o == oid:
            key.verify(sig, octets, padding.PKCS1v15(), _HASHES[h]())
            return
    raise ValueError("not an RSA signature algorithm")


def scheme(method: int, auth_data: bytes) -> tuple[str, int] | None:
    """(key family "rsa" / "ecdsa" / "eddsa", RFC 7427 hash id) of a signature AUTH
    payload, from its method and (method 14) its AlgorithmIdentifier; None when it names
    no scheme we know (``verify`` refuses it then)."""
    if method == AUTH_RSA:
        return "rsa", HASH_SHA1
    if method in _RFC4754:
        return "ecdsa", _RFC4754[method][1]
    if method != AUTH_DIGITAL_SIGNATURE or not auth_data:
        return None
    try:
        oid, params = _parse_algid(auth_data[1 : 1 + auth_data[0]])
        if oid == _PSS:
            return "rsa", _parse_pss_params(params)[0]
    except (ValueError, KeyError, IndexError):
        return None
    for table, family in ((_RSA_PKCS1, "rsa"), (_ECDSA, "ecdsa")):
        for h, o in table.items():
            if o == oid:
                return family, h
    if oid in (_ED25519, _ED448):
        return "eddsa", HASH_IDENTITY
    return None


def verify(method: int, key: PublicKeyTypes, octets: bytes, auth_data: bytes) -> bool:
    """True when ``auth_data`` is a valid signature of ``octets`` by ``key``'s owner."""
    try:
        if method == AUTH_RSA:
            if not isinstance(key, rsa.RSAPublicKey):
                return False
            key.verify(auth_data, octets, padding.PKCS1v15(), hashes.SHA1())
            return True
        if method in _RFC4754:
            curve, h, size = _RFC4754[method]
            if (not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, curve)
                    or len(auth_data) != 2 * size):
                return False
            der = encode_dss_signature(int.from_bytes(auth_data[:size], "big"),
                                       int.from_bytes(auth_data[size:], "big"))
            key.verify(der, octets, ec.ECDSA(_HASHES[h]()))
            return True
        if method != AUTH_DIGITAL_SIGNATURE or not auth_data:
            return False
        n = auth_data[0]
        oid, params = _parse_algid(auth_data[1 : 1 + n])
        sig = auth_data[1 + n :]
        if isinstance(key, rsa.RSAPublicKey):
            _verify_rsa(key, sig, octets, oid, params)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            h = next(k for k, o in _ECDSA.items() if o == oid)
            key.verify(sig, octets, ec.ECDSA(_HASHES[h]()))
        elif isinstance(key, ed25519.Ed25519PublicKey) and oid == _ED25519:
            key.verify(sig, octets)
        elif isinstance(key, ed448.Ed448PublicKey) and oid == _ED448:
            key.verify(sig, octets)
        else:
            return False
        return True
    except (InvalidSignature, ValueError, KeyError, StopIteration, IndexError, TypeError,
            UnsupportedAlgorithm):
        return False
