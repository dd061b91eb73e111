"""Exceptions raised by :mod:`pypluto.crypto`.

Every error the crypto layer raises on bad input is a :class:`CryptoError`;
messages never contain key material.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base class of every crypto-layer error."""


class IntegrityError(CryptoError):
    """An ICV / AEAD tag did not verify, or a decrypted SK payload was malformed.

    RFC 7296 §2.21.2: such messages are dropped; the caller must not tell
    the peer which check failed, so the message is deliberately generic.
    """


class InvalidKeyExchange(CryptoError):
    """A peer's KE payload data is unacceptable (RFC 7296 §2.21; RFC 6989)."""


class UnsupportedAlgorithm(CryptoError):
    """The transform is unknown, or not available from the installed `cryptography`."""
