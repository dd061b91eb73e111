"""The fixed IKE header (RFC 7296 §3.1), in a module of its own.

``errors.py`` carries the parsed header in its exceptions and ``message.py``
raises those exceptions while parsing: with the header here, neither imports
the other (no import cycle, DESIGN.md "Import rules").
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import HeaderFlag

__all__ = ["IKEHeader"]

# the flag bits as plain ints: ``flags & HeaderFlag.X`` looks the member up on every call
_INITIATOR = int(HeaderFlag.INITIATOR)
_RESPONSE = int(HeaderFlag.RESPONSE)
_VERSION = int(HeaderFlag.VERSION)


@dataclass(frozen=True, init=False)
class IKEHeader:
    """The fixed IKE header (RFC 7296 §3.1)."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    major_version: int
    minor_version: int
    exchange: int
    flags: int
    message_id: int
    length: int

    def __init__(self, spi_i: bytes, spi_r: bytes, next_payload: int, major_version: int,
                 minor_version: int, exchange: int, flags: int, message_id: int,
                 length: int) -> None:
        # the dataclass's own frozen __init__ calls object.__setattr__ once per field;
        # one header is made per datagram received, so its fields go in directly (issue 18)
        d = self.__dict__
        d["spi_i"] = spi_i
        d["spi_r"] = spi_r
        d["next_payload"] = next_payload
        d["major_version"] = major_version
        d["minor_version"] = minor_version
        d["exchange"] = exchange
        d["flags"] = flags
        d["message_id"] = message_id
        d["length"] = length

    @property
    def initiator(self) -> bool:
        return bool(self.flags & _INITIATOR)

    @property
    def response(self) -> bool:
        return bool(self.flags & _RESPONSE)

    @property
    def higher_version(self) -> bool:
        return bool(self.flags & _VERSION)
