"""Encryption and integrity transforms shared by the SK payload and ESP.

* AEAD (RFC 4106 AES-GCM, RFC 4309 AES-CCM, RFC 7634 ChaCha20-Poly1305,
  RFC 4543 AES-GMAC; IKEv2 use per RFC 5282): the keying material is
  key‖salt; the nonce is salt‖IV with the 8-byte explicit IV from the wire.
* CBC (RFC 3602 AES, RFC 2451 3DES, RFC 5529 Camellia): explicit IV of one block.
* AES-CTR (RFC 3686): key‖nonce(4); counter block nonce‖IV(8)‖0x00000001.
* NULL (RFC 2410): identity, ESP only.
* INTEG: HMAC-*-truncated (RFC 2404, RFC 4868), AES-XCBC-MAC-96 (RFC 3566),
  AES-CMAC-96 (RFC 4494).  ``verify`` compares in constant time.

Every primitive comes from ``cryptography``; key-bearing objects are built
once and hold no key in their ``repr``.
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherAlgorithm, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.cmac import CMAC

from pypluto.iana import Encr, TransformType
from pypluto.iana import Integ as IntegId

from . import registry
from .errors import CryptoError, IntegrityError, UnsupportedAlgorithm
from .prf import XCBCMac, hmac_new

_CipherFactory = Callable[[bytes], CipherAlgorithm]


def _legacy_ciphers() -> tuple[_CipherFactory, _CipherFactory]:
    """(Camellia, TripleDES): cryptography >= 43 moved the legacy ciphers to "decrepit"."""
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import Camellia, TripleDES
    except ImportError:  # pragma: no cover - older cryptography
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return algorithms.Camellia, algorithms.TripleDES
    return Camellia, TripleDES


_Camellia, _TripleDES = _legacy_ciphers()

# Data and AAD may be memoryviews (the userspace ESP path slices packets without copying).
BytesLike = bytes | bytearray | memoryview
# An AEAD operation: (full nonce, data, associated data) -> output (RFC 5116 §2).
AeadFn = Callable[[bytes, BytesLike, BytesLike | None], bytes]


# --------------------------------------------------------------------------- AEAD


class Aead:
    """An AEAD transform bound to one key (RFC 5282 §3, RFC 4106 §4, RFC 7634 §2).

    ``seal(iv8, plaintext, aad) -> ciphertext‖ICV``;
    ``open(iv8, ct_icv, aad) -> plaintext`` raises :class:`IntegrityError`.
    """

    __slots__ = ("encr_id", "icv_size", "iv_size", "_salt", "_seal", "_open")

    def __init__(self, encr_id: int, key_with_salt: bytes) -> None:
        alg = registry.get(TransformType.ENCR, encr_id)
        if alg is None or not alg.aead:
            raise UnsupportedAlgorithm(f"ENCR {encr_id} is not an AEAD transform")
        ks = len(key_with_salt) - alg.salt_size
        if alg.key_bits:
            if ks * 8 not in alg.key_bits:
                raise CryptoError(f"{alg.iana_name}: wrong key length")
        elif ks != alg.key_size:
            raise CryptoError(f"{alg.iana_name}: wrong key length")
        key = key_with_salt[:ks]
        self.encr_id = int(encr_id)
        self.icv_size = alg.icv_size
        self.iv_size = alg.iv_size
        self._salt = key_with_salt[ks:]
        self._seal: AeadFn
        self._open: AeadFn
        icv = alg.icv_size
        if encr_id == Encr.CHACHA20_POLY1305:
            c = ChaCha20Poly1305(key)
            self._seal = c.encrypt
            self._open = c.decrypt
        elif encr_id in (Encr.AES_CCM_8, Encr.AES_CCM_12, Encr.AES_CCM_16):
            c2 = AESCCM(key, tag_length=icv)
            self._seal = c2.encrypt
            self._open = c2.decrypt
        elif encr_id == Encr.AES_GCM_16:
            c3 = AESGCM(key)
            self._seal = c3.encrypt
            self._open = c3.decrypt
        elif encr_id in (Encr.AES_GCM_8, Encr.AES_GCM_12):
            aes = algorithms.AES(key)

            def seal(nonce: bytes, data: BytesLike, aad: BytesLike | None) -> bytes:
                enc = Cipher(aes, modes.GCM(nonce)).encryptor()
                if aad:
                    enc.authenticate_additional_data(aad)
                ct = enc.update(data) + enc.finalize()
                return ct + enc.tag[:icv]

            def open_(nonce: bytes, data: BytesLike, aad: BytesLike | None) -> bytes:
                if len(data) < icv:
                    raise InvalidTag
                tag = bytes(data[-icv:])
                dec = Cipher(aes, modes.GCM(nonce, tag, min_tag_length=icv)).decryptor()
                if aad:
                    dec.authenticate_additional_data(aad)
                return dec.update(data[:-icv]) + dec.finalize()

            self._seal = seal
            self._open = open_
        elif encr_id == Encr.NULL_AUTH_AES_GMAC:
            # RFC 4543 §3: the payload is authenticated, not encrypted.
            c4 = AESGCM(key)

            def gseal(nonce: bytes, data: BytesLike, aad: BytesLike | None) -> bytes:
                plain = bytes(data)
                return plain + c4.encrypt(nonce, b"", bytes(aad or b"") + plain)

            def gopen(nonce: bytes, data: BytesLike, aad: BytesLike | None) -> bytes:
                if len(data) < 16:
                    raise InvalidTag
                plain = bytes(data[:-16])
                c4.decrypt(nonce, bytes(data[-16:]), bytes(aad or b"") + plain)
                return plain

            self._seal = gseal
            self._open = gopen
        else:  # pragma: no cover
            raise UnsupportedAlgorithm(f"{alg.iana_name} is not implemented")

    def __repr__(self) -> str:
        return f"Aead({registry.transform_name(TransformType.ENCR, self.encr_id)})"

    @property
    def salt(self) -> bytes:
        """The implicit nonce part (RFC 4106 §4 salt / RFC 7634 §2 salt)."""
        return self._salt

    @property
    def raw(self) -> tuple[AeadFn, AeadFn]:
        """``(seal, open)`` taking the full nonce (salt‖IV): the ESP per-packet fast path.

        ``open`` raises cryptography's ``InvalidTag`` (not IntegrityError) so the
        ESP hot loop pays for no exception translation.
        """
        return self._seal, self._open

    def seal(self, iv8: bytes, plaintext: bytes, aad: bytes) -> bytes:
        if len(iv8) != self.iv_size:
            raise CryptoError("AEAD IV must be 8 bytes (RFC 5282 §3)")
        return self._seal(self._salt + iv8, plaintext, aad)

    def open(self, iv8: bytes, ct_icv: bytes, aad: bytes) -> bytes:
        if len(iv8) != self.iv_size or len(ct_icv) < self.icv_size:
            raise IntegrityError("integrity check failed")
        try:
            return self._open(self._salt + iv8, ct_icv, aad)
        except (InvalidTag, ValueError) as e:
            raise IntegrityError("integrity check failed") from e


# cryptography's AEAD classes that take the whole nonce (salt‖IV) and append the full
# ICV themselves: what ``Aead`` wraps for these transforms, with nothing in between.
_FAST_AEADS: dict[int, type[AESGCM] | type[ChaCha20Poly1305]] = {
    Encr.AES_GCM_16: AESGCM,
    Encr.CHACHA20_POLY1305: ChaCha20Poly1305,
}


def fast_aead(encr_id: int, key_size: int
              ) -> tuple[type[AESGCM] | type[ChaCha20Poly1305], int] | None:
    """(cryptography class, key bytes before the salt) of an AEAD ENCR transform that
    needs no wrapper (AES-GCM with a 16-octet ICV, ChaCha20-Poly1305), else None.

    ``cls(key).encrypt(salt + iv8, plaintext, aad)`` is then ``Aead.seal``;
    ``decrypt`` raises cryptography's ``InvalidTag`` for a bad ICV.
    """
    cls = _FAST_AEADS.get(encr_id)
    return None if cls is None else (cls, key_size)


def make_aead(encr_id: int, key_with_salt: bytes) -> Aead:
    """An :class:`Aead` for an AEAD ENCR transform; key material is key‖salt."""
    return Aead(encr_id, key_with_salt)


# --------------------------------------------------------------------------- plain ciphers


class BlockCipher:
    """A non-AEAD ENCR transform bound to one key.

    ``encrypt(iv, data)`` / ``decrypt(iv, data)``; ``data`` must already be
    padded to ``block_size`` for CBC.  ``iv_size`` is the explicit IV on the wire.
    """

    __slots__ = ("encr_id", "block_size", "iv_size", "_alg", "_mode", "_nonce")

    def __init__(self, encr_id: int, key_material: bytes) -> None:
        alg = registry.get(TransformType.ENCR, encr_id)
        if alg is None or alg.aead:
            raise UnsupportedAlgorithm(f"ENCR {encr_id} is not a plain cipher")
        self.encr_id = int(encr_id)
        self.block_size = alg.block_size
        self.iv_size = alg.iv_size
        self._nonce = b""
        ks = len(key_material) - alg.salt_size
        if alg.key_bits:
            if ks * 8 not in alg.key_bits:
                raise CryptoError(f"{alg.iana_name}: wrong key length")
        elif ks != alg.key_size:
            raise CryptoError(f"{alg.iana_name}: wrong key length")
        key = key_material[:ks]
        self._mode = "cbc"
        self._alg: CipherAlgorithm | None
        if encr_id == Encr.AES_CBC:
            self._alg = algorithms.AES(key)
        elif encr_id == Encr.CAMELLIA_CBC:
            self._alg = _Camellia(key)
        elif encr_id == Encr.TRIPLE_DES:
            self._alg = _TripleDES(key)
        elif encr_id == Encr.AES_CTR:
            self._alg = algorithms.AES(key)
            self._mode = "ctr"
            self._nonce = key_material[ks:]
        elif encr_id == Encr.NULL:
            self._alg = None
            self._mode = "null"
        else:
            raise UnsupportedAlgorithm(f"{alg.iana_name} is not implemented")

    def __repr__(self) -> str:
        return f"BlockCipher({registry.transform_name(TransformType.ENCR, self.encr_id)})"

    def _cipher(self, iv: bytes) -> Cipher[modes.CBC] | Cipher[modes.CTR]:
        if len(iv) != self.iv_size:
            raise CryptoError("wrong IV length")
        alg = self._alg
        if alg is None:  # pragma: no cover - NULL never gets here (encrypt/decrypt)
            raise CryptoError("NULL encryption has no cipher")
        if self._mode == "cbc":
            return Cipher(alg, modes.CBC(iv))
        # RFC 3686 §4: counter block = nonce ‖ IV ‖ block counter starting at 1.
        return Cipher(alg, modes.CTR(self._nonce + iv + b"\x00\x00\x00\x01"))

    def encrypt(self, iv: bytes, data: bytes) -> bytes:
        if self._mode == "null":
            return bytes(data)
        if self._mode == "cbc" and len(data) % self.block_size:
            raise CryptoError("CBC input is not a whole number of blocks")
        enc = self._cipher(iv).encryptor()
        return enc.update(data) + enc.finalize()

    def decrypt(self, iv: bytes, data: bytes) -> bytes:
        if self._mode == "null":
            return bytes(data)
        if self._mode == "cbc" and len(data) % self.block_size:
            raise CryptoError("CBC input is not a whole number of blocks")
        dec = self._cipher(iv).decryptor()
        return dec.update(data) + dec.finalize()


def make_cipher(encr_id: int, key_material: bytes) -> BlockCipher:
    """A :class:`BlockCipher` for CBC, CTR or NULL."""
    return BlockCipher(encr_id, key_material)


def make_cbc(encr_id: int, key: bytes) -> BlockCipher:
    """AES-CBC (RFC 3602), 3DES-CBC (RFC 2451) or Camellia-CBC (RFC 5529)."""
    if encr_id not in (Encr.AES_CBC, Encr.TRIPLE_DES, Encr.CAMELLIA_CBC):
        raise UnsupportedAlgorithm(f"ENCR {encr_id} is not a CBC transform")
    return BlockCipher(encr_id, key)


def make_ctr(key_with_nonce: bytes) -> BlockCipher:
    """AES-CTR (RFC 3686); keying material is key‖nonce(4)."""
    return BlockCipher(Encr.AES_CTR, key_with_nonce)


# --------------------------------------------------------------------------- integrity


class Integ(Protocol):
    icv_size: int

    def mac(self, data: bytes) -> bytes: ...

    def verify(self, data: bytes, icv: bytes) -> bool: ...


class _IntegBase:
    __slots__ = ("integ_id", "icv_size")

    integ_id: int
    icv_size: int

    def __repr__(self) -> str:
        return f"Integ({registry.transform_name(TransformType.INTEG, self.integ_id)})"

    def mac(self, data: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def verify(self, data: bytes, icv: bytes) -> bool:
        """True when ``icv`` is the truncated MAC of ``data``; constant-time compare."""
        return hmac.compare_digest(self.mac(data), icv)


class HmacInteg(_IntegBase):
    """HMAC-MD5-96, HMAC-SHA1-96 (RFC 2404), HMAC-SHA2-*-* (RFC 4868 §2.3).

    The keyed HMAC state (inner/outer pads) is computed once; each MAC copies it.
    """

    __slots__ = ("_h",)

    def __init__(self, integ_id: int, key: bytes, hash_name: str, icv: int) -> None:
        self.integ_id = int(integ_id)
        self.icv_size = icv
        self._h = hmac_new(key, b"", hash_name)

    def mac(self, data: bytes) -> bytes:
        h = self._h.copy()
        h.update(data)
        return h.digest()[: self.icv_size]


class XcbcInteg(_IntegBase):
    """AES-XCBC-MAC-96 (RFC 3566 §4.2)."""

    __slots__ = ("_m",)

    def __init__(self, key: bytes) -> None:
        self.integ_id = int(IntegId.AES_XCBC_96)
        self.icv_size = 12
        self._m = XCBCMac(key)

    def mac(self, data: bytes) -> bytes:
        return self._m.mac(data)[:12]


class CmacInteg(_IntegBase):
    """AES-CMAC-96 (RFC 4494)."""

    __slots__ = ("_c",)

    def __init__(self, key: bytes) -> None:
        self.integ_id = int(IntegId.AES_CMAC_96)
        self.icv_size = 12
        self._c = CMAC(algorithms.AES(key))

    def mac(self, data: bytes) -> bytes:
        c = self._c.copy()
        c.update(data)
        return c.finalize()[:12]


def make_integ(integ_id: int, key: bytes, trunc_bits: int = 0) -> Integ:
    """An integrity transform bound to ``key`` (RFC 7296 §3.3.2 type 3).

    ``trunc_bits``: an HMAC's ICV cut to that many bits instead of the transform's own
    (ESP with ``sha2-truncbug=yes``: 96 for HMAC-SHA2-256); 0 = the transform's."""
    alg = registry.get(TransformType.INTEG, integ_id)
    if alg is None or integ_id == IntegId.NONE:
        raise UnsupportedAlgorithm(f"unknown INTEG transform {integ_id}")
    if len(key) != alg.key_size:
        raise CryptoError(f"{alg.iana_name}: wrong key length")
    if trunc_bits and (not alg.hash_name or trunc_bits % 8 or
                       not 96 <= trunc_bits <= alg.icv_size * 8):
        raise CryptoError(f"{alg.iana_name}: no {trunc_bits}-bit truncation")
    if alg.hash_name:
        return HmacInteg(integ_id, key, alg.hash_name,
                         trunc_bits // 8 if trunc_bits else alg.icv_size)
    if integ_id == IntegId.AES_XCBC_96:
        return XcbcInteg(key)
    if integ_id == IntegId.AES_CMAC_96:
        return CmacInteg(key)
    raise UnsupportedAlgorithm(f"{alg.iana_name} is not implemented")  # pragma: no cover
