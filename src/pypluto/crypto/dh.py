"""Key exchange: MODP, ECP, Curve25519/448 and ML-KEM (RFC 7296 §2.14, RFC 9370).

KE payload data (RFC 7296 §3.4):

* MODP (RFC 2409 §6, RFC 3526, RFC 5114 §2.1-2.3): g^x as a big-endian
  integer left-padded to the length of p; the shared secret g^ir likewise.
* ECP (RFC 5903 §7): x ‖ y, each the field size; the shared secret is the
  x coordinate of the product.
* Curve25519 / Curve448 (RFC 8031 §3.1): the 32 / 56 byte u-coordinate.
* ML-KEM (FIPS 203; draft-ietf-ipsecme-ikev2-mlkem): the initiator sends
  its encapsulation key, the responder the ciphertext.

Peer values are validated (RFC 7296 §5, RFC 6989): wrong lengths, 0, 1,
p-1, values ≥ p, subgroup membership for the RFC 5114 groups, points off the
curve and the all-zero X25519/X448 result all raise
:class:`InvalidKeyExchange`.

MODP arithmetic uses OpenSSL (through ``cryptography``'s finite-field DH,
whose modular exponentiation is constant-time) while it exists; see
``docs/crypto.md`` for why, and for the pure-Python fallback.
"""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x448, x25519

from pypluto.iana import KE, TransformType

from . import registry
from .errors import InvalidKeyExchange, UnsupportedAlgorithm

if TYPE_CHECKING:  # the FFDH module warns when its attributes are read: types only here
    from cryptography.hazmat.primitives.asymmetric.dh import (
        DHParameterNumbers,
        DHPrivateKey,
        DHPrivateNumbers,
        DHPublicNumbers,
    )


def _load_mlkem() -> ModuleType | None:
    """cryptography's ML-KEM module (FIPS 203), or None before cryptography 47."""
    try:
        from cryptography.hazmat.primitives.asymmetric import mlkem
    except ImportError:  # pragma: no cover - cryptography < 47
        return None
    return mlkem


_mlkem = _load_mlkem()


def _load_openssl_dh() -> (
    tuple[type[DHParameterNumbers], type[DHPublicNumbers], type[DHPrivateNumbers]] | None
):
    """cryptography's FFDH classes, fetched once with the deprecation warning silenced.

    cryptography 50 deprecates FFDH (``CryptographyDeprecationWarning`` on
    attribute access).  IKEv2 peers still negotiate MODP groups, so we keep
    using it deliberately; the filter is scoped to this one message and
    this one import.  When the API disappears we fall back to Python ints.
    """
    try:
        from cryptography.utils import CryptographyDeprecationWarning

        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message="Diffie-Hellman over finite fields",
                category=CryptographyDeprecationWarning,
            )
            from cryptography.hazmat.primitives.asymmetric import dh as _dh

            return _dh.DHParameterNumbers, _dh.DHPublicNumbers, _dh.DHPrivateNumbers
    except (ImportError, AttributeError):  # pragma: no cover - future cryptography
        return None


_OPENSSL_DH = _load_openssl_dh()
MODP_BACKEND = "openssl" if _OPENSSL_DH is not None else "python"


# --------------------------------------------------------------------------- MODP groups


def _arctan_inv(x: int, one: int) -> int:
    total = term = one // x
    x2, n, sign = x * x, 1, -1
    while term:
        term //= x2
        total += sign * (term // (2 * n + 1))
        sign, n = -sign, n + 1
    return total


_PI_CACHE: list[int] = []


def _pi_bits(bits: int) -> int:
    """floor(2^bits · π), bits ≤ 8062 (Machin's formula, 64 guard bits)."""
    if not _PI_CACHE:
        top = 8192 - 130
        one = 1 << (top + 64)
        _PI_CACHE.append((4 * (4 * _arctan_inv(5, one) - _arctan_inv(239, one))) >> 64)
    return _PI_CACHE[0] >> (8192 - 130 - bits)


# RFC 2409 §6.1-6.2 and RFC 3526 §2-7: p = 2^n - 2^(n-64) - 1 + 2^64·(⌊2^(n-130)·π⌋ + k), g = 2.
_OAKLEY_K: dict[int, tuple[int, int]] = {
    KE.MODP768: (768, 149686),
    KE.MODP1024: (1024, 129093),
    KE.MODP1536: (1536, 741804),
    KE.MODP2048: (2048, 124476),
    KE.MODP3072: (3072, 1690314),
    KE.MODP4096: (4096, 240904),
    KE.MODP6144: (6144, 929484),
    KE.MODP8192: (8192, 4743158),
}

# RFC 5114 §2.1-2.3: (p, g, q) with a prime-order subgroup q.
_RFC5114: dict[int, tuple[int, int, int]] = {
    22: (
        int(
            "B10B8F96A080E01DDE92DE5EAE5D54EC52C99FBCFB06A3C69A6A9DCA52D23B61"
            "6073E28675A23D189838EF1E2EE652C013ECB4AEA906112324975C3CD49B83BF"
            "ACCBDD7D90C4BD7098488E9C219A73724EFFD6FAE5644738FAA31A4FF55BCCC0"
            "A151AF5F0DC8B4BD45BF37DF365C1A65E68CFDA76D4DA708DF1FB2BC2E4A4371"
            , 16),
        int(
            "A4D1CBD5C3FD34126765A442EFB99905F8104DD258AC507FD6406CFF14266D31"
            "266FEA1E5C41564B777E690F5504F213160217B4B01B886A5E91547F9E2749F4"
            "D7FBD7D3B9A92EE1909D0D2263F80A76A6A24C087A091F531DBF0A0169B6A28A"
            "D662A4D18E73AFA32D779D5918D08BC8858F4DCEF97C2A24855E6EEB22B3B2E5"
            , 16),
        int(
            "F518AA8781A8DF278ABA4E7D64B7CB9D49462353"
            , 16),
    ),
    23: (
        int(
            "AD107E1E9123A9D0D660FAA79559C51FA20D64E5683B9FD1B54B1597B61D0A75"
            "E6FA141DF95A56DBAF9A3C407BA1DF15EB3D688A309C180E1DE6B85A1274A0A6"
            "6D3F8152AD6AC2129037C9EDEFDA4DF8D91E8FEF55B7394B7AD5B7D0B6C12207"
            "C9F98D11ED34DBF6C6BA0B2C8BBC27BE6A00E0A0B9C49708B3BF8A3170918836"
            "81286130BC8985DB1602E714415D9330278273C7DE31EFDC7310F7121FD5A074"
            "15987D9ADC0A486DCDF93ACC44328387315D75E198C641A480CD86A1B9E587E8"
            "BE60E69CC928B2B9C52172E413042E9B23F10B0E16E79763C9B53DCF4BA80A29"
            "E3FB73C16B8E75B97EF363E2FFA31F71CF9DE5384E71B81C0AC4DFFE0C10E64F"
            , 16),
        int(
            "AC4032EF4F2D9AE39DF30B5C8FFDAC506CDEBE7B89998CAF74866A08CFE4FFE3"
            "A6824A4E10B9A6F0DD921F01A70C4AFAAB739D7700C29F52C57DB17C620A8652"
            "BE5E9001A8D66AD7C17669101999024AF4D027275AC1348BB8A762D0521BC98A"
            "E247150422EA1ED409939D54DA7460CDB5F6C6B250717CBEF180EB34118E98D1"
            "19529A45D6F834566E3025E316A330EFBB77A86F0C1AB15B051AE3D428C8F8AC"
            "B70A8137150B8EEB10E183EDD19963DDD9E263E4770589EF6AA21E7F5F2FF381"
            "B539CCE3409D13CD566AFBB48D6C019181E1BCFE94B30269EDFE72FE9B6AA4BD"
            "7B5A0F1C71CFFF4C19C418E1F6EC017981BC087F2A7065B384B890D3191F2BFA"
            , 16),
        int(
            "801C0D34C58D93FE997177101F80535A4738CEBCBF389A99B36371EB"
            , 16),
    ),
    24: (
        int(
            "87A8E61DB4B6663CFFBBD19C651959998CEEF608660DD0F25D2CEED4435E3B00"
            "E00DF8F1D61957D4FAF7DF4561B2AA3016C3D91134096FAA3BF4296D830E9A7C"
            "209E0C6497517ABD5A8A9D306BCF67ED91F9E6725B4758C022E0B1EF4275BF7B"
            "6C5BFC11D45F9088B941F54EB1E59BB8BC39A0BF12307F5C4FDB70C581B23F76"
            "B63ACAE1CAA6B7902D52526735488A0EF13C6D9A51BFA4AB3AD8347796524D8E"
            "F6A167B5A41825D967E144E5140564251CCACB83E6B486F6B3CA3F7971506026"
            "C0B857F689962856DED4010ABD0BE621C3A3960A54E710C375F26375D7014103"
            "A4B54330C198AF126116D2276E11715F693877FAD7EF09CADB094AE91E1A1597"
            , 16),
        int(
            "3FB32C9B73134D0B2E77506660EDBD484CA7B18F21EF205407F4793A1A0BA125"
            "10DBC15077BE463FFF4FED4AAC0BB555BE3A6C1B0C6B47B1BC3773BF7E8C6F62"
            "901228F8C28CBB18A55AE31341000A650196F931C77A57F2DDF463E5E9EC144B"
            "777DE62AAAB8A8628AC376D282D6ED3864E67982428EBC831D14348F6F2F9193"
            "B5045AF2767164E1DFC967C1FB3F2E55A4BD1BFFE83B9C80D052B985D182EA0A"
            "DB2A3B7313D3FE14C8484B1E052588B9B7D2BBD2DF016199ECD06E1557CD0915"
            "B3353BBB64E0EC377FD028370DF92B52C7891428CDC67EB6184B523D1DB246C3"
            "2F63078490F00EF8D647D148D47954515E2327CFEF98C582664B4C0F6CC41659"
            , 16),
        int(
            "8CF83642A709A097B447997640129DA299B1A47D1EB3750BA308B0FE64F5FBD3"
            , 16),
    ),
}


class _ModpGroup:
    __slots__ = ("group", "p", "g", "q", "size", "safe_prime", "exp_bits", "_pn")

    def __init__(self, group: int) -> None:
        self.group = group
        if group in _OAKLEY_K:
            n, k = _OAKLEY_K[group]
            self.p = 2**n - 2 ** (n - 64) - 1 + 2**64 * (_pi_bits(n - 130) + k)
            self.g = 2
            self.q = (self.p - 1) // 2
            self.safe_prime = True
            # RFC 3526 §8: exponents of twice the strength; matches OpenSSL's choice.
            self.exp_bits = {768: 160, 1024: 160, 1536: 200, 2048: 224, 3072: 276,
                             4096: 328, 6144: 378, 8192: 404}[n]
        else:
            self.p, self.g, self.q = _RFC5114[group]
            self.safe_prime = False
            self.exp_bits = self.q.bit_length()
        self.size = (self.p.bit_length() + 7) // 8
        self._pn: DHParameterNumbers | None = None

    def openssl_params(self) -> DHParameterNumbers:
        """Cached cryptography DHParameterNumbers (with q, so OpenSSL picks short exponents).

        OpenSSL 3+ refuses q for the 768/1024-bit Oakley groups, so those go without.
        """
        pn = self._pn
        if pn is None:
            assert _OPENSSL_DH is not None
            q = None if (self.safe_prime and self.size <= 128) else self.q
            pn = self._pn = _OPENSSL_DH[0](self.p, self.g, q)
        return pn

    def check_peer(self, data: bytes) -> int:
        """Validate a peer's g^y (RFC 7296 §3.4 length; RFC 6989 §2.1-2.2 range/subgroup)."""
        if len(data) != self.size:
            raise InvalidKeyExchange(
                f"KE data for group {self.group} is {len(data)} bytes, expected {self.size}"
            )
        y = int.from_bytes(data, "big")
        if y <= 1 or y >= self.p - 1:
            raise InvalidKeyExchange(f"KE value for group {self.group} is out of range")
        if not self.safe_prime and pow(y, self.q, self.p) != 1:
            raise InvalidKeyExchange(f"KE value for group {self.group} is not in the subgroup")
        return y


_MODP: dict[int, _ModpGroup] = {}


def modp_group(group: int) -> _ModpGroup:
    g = _MODP.get(group)
    if g is None:
        g = _ModpGroup(group)
        _MODP[group] = g
    return g


class KeyExchange(Protocol):
    """One side's ephemeral key: ``public`` is the KE payload data."""

    group: int
    public: bytes

    def finish(self, peer_data: bytes) -> bytes: ...


class ModpKE:
    """Ephemeral MODP Diffie-Hellman (RFC 7296 §2.14; RFC 2409/3526/5114)."""

    __slots__ = ("group", "public", "_grp", "_key", "_x", "backend")

    def __init__(self, group: int, *, private: int | None = None, backend: str | None = None):
        self.group = int(group)
        self._grp = grp = modp_group(group)
        self.backend = backend or MODP_BACKEND
        self._key: DHPrivateKey | None
        if self.backend == "openssl":
            if _OPENSSL_DH is None:
                raise UnsupportedAlgorithm("cryptography no longer provides finite-field DH")
            pn = grp.openssl_params()
            if private is None:
                self._key = pn.parameters().generate_private_key()
            else:
                # Known-answer tests only: a fixed exponent.
                pubn = _OPENSSL_DH[1](pow(grp.g, private, grp.p), pn)
                self._key = _OPENSSL_DH[2](private, pubn).private_key()
            y = self._key.public_key().public_numbers().y
            self._x = 0
        elif self.backend == "python":
            # Not constant-time (CPython's pow); used only when OpenSSL's DH is gone.
            self._key = None
            self._x = private if private is not None else (
                secrets.randbits(grp.exp_bits) | (1 << (grp.exp_bits - 1))
            )
            y = pow(grp.g, self._x, grp.p)
        else:
            raise UnsupportedAlgorithm(f"unknown MODP backend {self.backend!r}")
        self.public = y.to_bytes(grp.size, "big")

    def __repr__(self) -> str:
        return f"ModpKE(group={self.group})"

    def finish(self, peer_data: bytes) -> bytes:
        grp = self._grp
        y = grp.check_peer(peer_data)
        if self._key is not None:
            assert _OPENSSL_DH is not None
            peer = _OPENSSL_DH[1](y, grp.openssl_params()).public_key()
            try:
                shared = self._key.exchange(peer)
            except ValueError as e:
                raise InvalidKeyExchange(f"group {self.group}: peer value rejected") from e
        else:
            shared = pow(y, self._x, grp.p).to_bytes(grp.size, "big")
        if len(shared) < grp.size:  # §2.14: padded to the length of the modulus
            shared = bytes(grp.size - len(shared)) + shared
        return shared


# --------------------------------------------------------------------------- ECP (RFC 5903)

_CURVES: dict[int, ec.EllipticCurve] = {
    KE.ECP256: ec.SECP256R1(),
    KE.ECP384: ec.SECP384R1(),
    KE.ECP521: ec.SECP521R1(),
}
_ECDH = ec.ECDH()
_X962 = serialization.Encoding.X962
_UNCOMPRESSED = serialization.PublicFormat.UncompressedPoint


class EcpKE:
    """Ephemeral ECDH over a NIST prime curve (RFC 5903 §7: KE data x ‖ y, secret x)."""

    __slots__ = ("group", "public", "_key", "_curve", "_size")

    def __init__(self, group: int, *, private: int | None = None) -> None:
        self.group = int(group)
        self._curve = _CURVES[group]
        alg = registry.get(TransformType.KE, group)
        if alg is None:  # pragma: no cover - every _CURVES group is in the registry
            raise UnsupportedAlgorithm(f"unknown KE transform {group}")
        self._size = alg.ke_size // 2
        if private is None:
            self._key = ec.generate_private_key(self._curve)
        else:  # known-answer tests only
            self._key = ec.derive_private_key(private, self._curve)
        self.public = self._key.public_key().public_bytes(_X962, _UNCOMPRESSED)[1:]

    def __repr__(self) -> str:
        return f"EcpKE(group={self.group})"

    def finish(self, peer_data: bytes) -> bytes:
        if len(peer_data) != 2 * self._size:
            raise InvalidKeyExchange(
                f"KE data for group {self.group} is {len(peer_data)} bytes, "
                f"expected {2 * self._size}"
            )
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(self._curve, b"\x04" + peer_data)
            return self._key.exchange(_ECDH, peer)
        except ValueError as e:
            raise InvalidKeyExchange(f"KE point for group {self.group} is not on the curve") from e


# --------------------------------------------------------------------------- X25519 / X448


class EcxKE:
    """Curve25519 / Curve448 (RFC 7748 §6; IKEv2 per RFC 8031 §3)."""

    __slots__ = ("group", "public", "_exchange", "_size")

    def __init__(self, group: int, *, private: bytes | None = None) -> None:
        self.group = int(group)
        self._exchange: Callable[[bytes], bytes]
        if group == KE.CURVE25519:
            k25 = (x25519.X25519PrivateKey.generate() if private is None
                   else x25519.X25519PrivateKey.from_private_bytes(private))
            self._exchange = lambda peer: k25.exchange(
                x25519.X25519PublicKey.from_public_bytes(peer)
            )
            self.public = k25.public_key().public_bytes_raw()
            self._size = 32
        else:
            k448 = (x448.X448PrivateKey.generate() if private is None
                    else x448.X448PrivateKey.from_private_bytes(private))
            self._exchange = lambda peer: k448.exchange(x448.X448PublicKey.from_public_bytes(peer))
            self.public = k448.public_key().public_bytes_raw()
            self._size = 56

    def __repr__(self) -> str:
        return f"EcxKE(group={self.group})"

    def finish(self, peer_data: bytes) -> bytes:
        if len(peer_data) != self._size:
            raise InvalidKeyExchange(
                f"KE data for group {self.group} is {len(peer_data)} bytes, expected {self._size}"
            )
        try:
            shared = self._exchange(peer_data)
        except ValueError as e:
            # RFC 8031 §2.1 / RFC 7748 §6: an all-zero result must be rejected.
            raise InvalidKeyExchange(f"group {self.group}: low-order peer value") from e
        if not any(shared):  # pragma: no cover - cryptography already refuses it
            raise InvalidKeyExchange(f"group {self.group}: all-zero shared secret")
        return shared


# --------------------------------------------------------------------------- ML-KEM

# group: (class name, encapsulation key bytes, ciphertext bytes) per FIPS 203 Table 3.
_MLKEM: dict[int, tuple[str, int, int]] = {
    KE.ML_KEM_512: ("MLKEM512", 800, 768),
    KE.ML_KEM_768: ("MLKEM768", 1184, 1088),
    KE.ML_KEM_1024: ("MLKEM1024", 1568, 1568),
}


class _KemPublicKey(Protocol):
    def public_bytes_raw(self) -> bytes: ...

    def encapsulate(self) -> tuple[bytes, bytes]: ...


class _KemPrivateKey(Protocol):
    def public_key(self) -> _KemPublicKey: ...

    def decapsulate(self, ciphertext: bytes, /) -> bytes: ...


class _KemPrivateKeyClass(Protocol):
    """cryptography's ``MLKEM*PrivateKey`` class object (its class methods)."""

    def generate(self) -> _KemPrivateKey: ...

    def from_seed_bytes(self, data: bytes, /) -> _KemPrivateKey: ...


class _KemPublicKeyClass(Protocol):
    """cryptography's ``MLKEM*PublicKey`` class object (its class methods)."""

    def from_public_bytes(self, data: bytes, /) -> _KemPublicKey: ...


def _mlkem_classes(group: int) -> tuple[_KemPrivateKeyClass, _KemPublicKeyClass]:
    name = _MLKEM[group][0]
    priv = getattr(_mlkem, name + "PrivateKey", None) if _mlkem is not None else None
    pub = getattr(_mlkem, name + "PublicKey", None) if _mlkem is not None else None
    if priv is None or pub is None:
        raise UnsupportedAlgorithm(f"{name} is not provided by the installed cryptography")
    return priv, pub


class KemInitiator:
    """ML-KEM initiator side: ``public`` is the encapsulation key; ``finish`` decapsulates."""

    __slots__ = ("group", "public", "_key", "_ct_size")

    def __init__(self, group: int, *, seed: bytes | None = None) -> None:
        self.group = int(group)
        priv_cls, _ = _mlkem_classes(group)
        self._key = priv_cls.generate() if seed is None else priv_cls.from_seed_bytes(seed)
        self.public = self._key.public_key().public_bytes_raw()
        self._ct_size = _MLKEM[group][2]

    def __repr__(self) -> str:
        return f"KemInitiator(group={self.group})"

    def finish(self, peer_data: bytes) -> bytes:
        if len(peer_data) != self._ct_size:
            raise InvalidKeyExchange(
                f"ML-KEM ciphertext is {len(peer_data)} bytes, expected {self._ct_size}"
            )
        try:
            return bytes(self._key.decapsulate(peer_data))
        except ValueError as e:  # pragma: no cover - implicit rejection never raises
            raise InvalidKeyExchange("ML-KEM ciphertext rejected") from e


def _kem_respond(group: int, initiator_data: bytes) -> tuple[bytes, bytes]:
    _, pub_cls = _mlkem_classes(group)
    ek = _MLKEM[group][1]
    if len(initiator_data) != ek:
        raise InvalidKeyExchange(
            f"ML-KEM encapsulation key is {len(initiator_data)} bytes, expected {ek}"
        )
    try:
        shared, ct = pub_cls.from_public_bytes(initiator_data).encapsulate()
    except ValueError as e:  # FIPS 203 §7.2 modulus check
        raise InvalidKeyExchange("ML-KEM encapsulation key rejected") from e
    return bytes(ct), bytes(shared)


# --------------------------------------------------------------------------- API


def _kind(group: int) -> str:
    alg = registry.get(TransformType.KE, group)
    if alg is None or not alg.ke_kind:
        raise UnsupportedAlgorithm(f"unknown KE transform {group}")
    return alg.ke_kind


def initiator_ke(group: int) -> KeyExchange:
    """A fresh ephemeral key for ``group``; send ``.public``, then call ``.finish(peer)``.

    Also used by the responder of a Diffie-Hellman group (``responder_ke`` wraps it).
    """
    kind = _kind(group)
    if kind == "modp":
        return ModpKE(group)
    if kind == "ecp":
        return EcpKE(group)
    if kind == "ecx":
        return EcxKE(group)
    return KemInitiator(group)


def responder_ke(group: int, initiator_data: bytes) -> tuple[bytes, bytes]:
    """(responder KE data, shared secret) for the initiator's KE data.

    For ML-KEM the responder data is the ciphertext (encapsulation).
    Raises :class:`InvalidKeyExchange` for bad peer data.
    """
    if group == KE.CURVE25519:  # the usual group: no key object kept (issue 18)
        return _x25519_respond(initiator_data)
    if _kind(group) == "kem":
        return _kem_respond(group, initiator_data)
    ke = initiator_ke(group)
    return ke.public, ke.finish(initiator_data)


def _x25519_respond(peer_data: bytes) -> tuple[bytes, bytes]:
    """``EcxKE(CURVE25519)`` then ``finish``: the same checks and errors (RFC 8031 §2.1),
    the length checked before a key is made."""
    if len(peer_data) != 32:
        raise InvalidKeyExchange(
            f"KE data for group {int(KE.CURVE25519)} is {len(peer_data)} bytes, expected 32"
        )
    k = x25519.X25519PrivateKey.generate()
    public = k.public_key().public_bytes_raw()
    try:
        shared = k.exchange(x25519.X25519PublicKey.from_public_bytes(peer_data))
    except ValueError as e:
        # RFC 8031 §2.1 / RFC 7748 §6: an all-zero result must be rejected.
        raise InvalidKeyExchange(f"group {int(KE.CURVE25519)}: low-order peer value") from e
    if not any(shared):  # pragma: no cover - cryptography already refuses it
        raise InvalidKeyExchange(f"group {int(KE.CURVE25519)}: all-zero shared secret")
    return public, shared


def supported(group: int) -> bool:
    """True when ``group`` can be used with the installed ``cryptography``."""
    try:
        kind = _kind(group)
    except UnsupportedAlgorithm:
        return False
    if kind == "kem":
        try:
            _mlkem_classes(group)
        except UnsupportedAlgorithm:
            return False
    return True
