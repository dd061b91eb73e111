"""SK payload protection (RFC 7296 §3.14; AEAD per RFC 5282 §3; RFC 7634 §4).

Layout of the SK payload body (after its 4-byte generic header)::

    IV ‖ Encrypt(inner payloads ‖ Padding ‖ Pad Length) ‖ ICV

* Encrypt-then-MAC transforms: the ICV is the truncated MAC over the whole
  message from the IKE header up to and including the ciphertext — i.e.
  ``aad ‖ IV ‖ ciphertext`` where ``aad`` is the IKE header through the SK
  generic header (§3.14).
* AEAD transforms: the associated data is ``aad``; the IV is 8 bytes and the
  ICV is the AEAD tag (RFC 5282 §5.1).

Padding (§3.14): the plaintext plus padding plus the Pad Length octet is a
multiple of the cipher's block size: 16 for AES/Camellia-CBC, 8 for 3DES, and
1 (no padding) for AEAD and counter modes (RFC 5282 §3, RFC 7634 Appendix B).
The registry's ``block_size`` of those (4) is ESP's trailer alignment
(RFC 4303 §2.4) and does not apply here.  We send zero octets and accept any
padding values.

Every failure on receipt (short body, bad ICV, bad padding) raises the same
:class:`IntegrityError`, so that no padding oracle exists.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from pypluto.iana import TransformType

from . import registry
from .ciphers import Aead, BlockCipher, fast_aead, make_integ
from .errors import CryptoError, IntegrityError, UnsupportedAlgorithm
from .keys import encr_key_bytes

_FAIL = "integrity check failed"
_Q = struct.Struct(">Q")


# What the checks of an AEAD protector derive from (ENCR ID, key bits, key length) alone,
# kept once they passed: two protectors per IKE SA skip the registry and the key-size
# lookups (issue 18).  A handful of entries; the cap guards a pathological caller.
_SPEC_CAP = 64
# (ENCR ID, IV size, block size, ICV size, fast_aead's class and key size or None)
_AEAD_SPECS: dict[tuple[int, int | None, int],
                  tuple[int, int, int, int,
                        tuple[type[AESGCM] | type[ChaCha20Poly1305], int] | None]
                  ] = {}


class SKProtector:
    """Protects and unprotects SK/SKF payload bodies in one direction.

    The engine makes one for each direction of an IKE SA from ``IKEKeys``
    (sk_ei/sk_ai for messages the initiator sends, sk_er/sk_ar otherwise).
    For AEAD transforms ``integ_id`` is None/0 and ``integ_key`` empty.

    Only the keys and the IV counter are kept: the cipher contexts (an OpenSSL
    context each, about 1 KiB with the Python wrappers) are made for each message
    and dropped after it, so that an idle IKE SA holds none (issue 18).  An IKE SA
    protects two messages while it is set up and one per liveness period after.
    """

    __slots__ = (
        "encr_id", "aead", "iv_size", "icv_size", "block_size",
        "_encr_key", "_integ_id", "_integ_key", "_counter", "_rng", "_fast",
    )

    def __init__(
        self,
        encr_id: int,
        encr_key_bits: int | None,
        integ_id: int | None,
        encr_key: bytes,
        integ_key: bytes = b"",
        *,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._rng = rng
        self._encr_key = encr_key
        self._integ_key = integ_key
        shape = (encr_id, encr_key_bits, len(encr_key))
        # an AEAD whose checks this very key shape passed skips them (issue 18)
        spec = None if integ_id else _AEAD_SPECS.get(shape)
        if spec is None:
            alg = registry.get(TransformType.ENCR, encr_id)
            if alg is None:
                raise UnsupportedAlgorithm(f"unknown ENCR transform {encr_id}")
            if len(encr_key) != encr_key_bytes(encr_id, encr_key_bits):
                raise CryptoError(f"{alg.iana_name}: wrong key length")
            block_size = alg.block_size if alg.iv_size == alg.block_size else 1
            if not alg.aead:
                if not integ_id:
                    raise CryptoError(f"{alg.iana_name} needs an INTEG transform")
                self.encr_id = int(encr_id)
                self.aead = False
                self.iv_size = alg.iv_size
                self.block_size = block_size
                self._fast = None
                self._integ_id = int(integ_id)
                self.icv_size = make_integ(integ_id, integ_key).icv_size
                self._counter = itertools.count()
                return
            if integ_id:
                raise CryptoError("an AEAD transform takes no INTEG transform (RFC 5282 §8)")
            # the cryptography class itself for the common AEADs: per message it is
            # built straight from the key, without Aead's lookups and checks (issue 18)
            spec = (int(encr_id), alg.iv_size, block_size, alg.icv_size,
                    fast_aead(int(encr_id), len(encr_key) - alg.salt_size))
            if len(_AEAD_SPECS) < _SPEC_CAP:
                _AEAD_SPECS[shape] = spec
        self.encr_id, self.iv_size, self.block_size, self.icv_size, self._fast = spec
        self.aead = True
        self._integ_id = 0
        # RFC 5282 §3.1: the IV must not repeat under one key; a counter
        # started at a random point guarantees that for 2^64 messages.
        # itertools.count's next() is atomic, so threads may share a protector.
        self._counter = itertools.count(int.from_bytes(rng(8), "big") + 1)

    def __repr__(self) -> str:
        return f"SKProtector({registry.transform_name(TransformType.ENCR, self.encr_id)})"

    def _padded(self, n: int) -> int:
        b = self.block_size
        return (n + 1 + b - 1) // b * b

    def body_length(self, plaintext_len: int) -> int:
        """Length of the SK payload body for ``plaintext_len`` bytes of inner payloads."""
        return self.iv_size + self._padded(plaintext_len) + self.icv_size

    def _next_iv(self) -> bytes:
        if self.aead:
            return _Q.pack(next(self._counter) & 0xFFFFFFFFFFFFFFFF)
        # RFC 7296 §3.14: CBC IVs must be unpredictable.
        return self._rng(self.iv_size)

    def encrypt(self, aad: bytes, plaintext: bytes, *, iv: bytes | None = None) -> bytes:
        """IV ‖ ciphertext ‖ ICV for ``plaintext`` (the inner payload chain).

        ``aad`` is the message from the IKE header through the SK (or SKF)
        generic header, already carrying the final lengths.  ``iv`` is for
        known-answer tests only.
        """
        if iv is None:
            iv = self._next_iv()
        elif len(iv) != self.iv_size:
            raise CryptoError("wrong IV length")
        if self.block_size == 1:  # AEAD and counter modes: only the Pad Length octet, 0
            data = plaintext + b"\x00"
        else:
            padlen = self._padded(len(plaintext)) - len(plaintext) - 1
            data = plaintext + bytes(padlen) + bytes((padlen,))
        fast = self._fast
        if fast is not None:
            ks = fast[1]
            key = self._encr_key
            return iv + fast[0](key[:ks]).encrypt(key[ks:] + iv, data, aad)
        if self.aead:
            return iv + Aead(self.encr_id, self._encr_key).seal(iv, data, aad)
        ct = iv + BlockCipher(self.encr_id, self._encr_key).encrypt(iv, data)
        return ct + make_integ(self._integ_id, self._integ_key).mac(aad + ct)

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        """The inner payload chain of an SK body; :class:`IntegrityError` on any failure."""
        ivs, icvs = self.iv_size, self.icv_size
        if len(body) < ivs + icvs + 1:
            raise IntegrityError(_FAIL)
        iv = body[:ivs]
        fast = self._fast
        if fast is not None:
            ks = fast[1]
            key = self._encr_key
            try:
                data = fast[0](key[:ks]).decrypt(key[ks:] + iv, body[ivs:], aad)
            except (InvalidTag, ValueError) as e:
                raise IntegrityError(_FAIL) from e
        elif self.aead:
            data = Aead(self.encr_id, self._encr_key).open(iv, body[ivs:], aad)
        else:
            ct = body[ivs : len(body) - icvs]
            integ = make_integ(self._integ_id, self._integ_key)
            if not integ.verify(aad + body[: len(body) - icvs], body[len(body) - icvs :]):
                raise IntegrityError(_FAIL)
            if not ct or len(ct) % self.block_size:
                raise IntegrityError(_FAIL)
            try:
                data = BlockCipher(self.encr_id, self._encr_key).decrypt(iv, ct)
            except (CryptoError, ValueError) as e:  # pragma: no cover - lengths checked
                raise IntegrityError(_FAIL) from e
        if not data:
            raise IntegrityError(_FAIL)
        padlen = data[-1]
        if padlen + 1 > len(data):
            raise IntegrityError(_FAIL)
        return data[: len(data) - padlen - 1]
