"""The fixed IKE header (RFC 7296 §3.1), in a module of its own.

``errors.py`` carries the parsed header in its exceptions and ``message.py``
raises those exceptions while parsing: with the header here, neither imports
the other (no import cycle, DESIGN.md "Import rules").
"""

from __future__ import annotations

from dataclasses import dataclass

from .constants import HeaderFlag

__all__ = ["IKEHeader"]


@dataclass(frozen=True)
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

    @property
    def initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)

    @property
    def response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    @property
    def higher_version(self) -> bool:
        return bool(self.flags & HeaderFlag.VERSION)
