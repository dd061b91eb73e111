"""IKEv2 wire-format constants (RFC 7296 §3) and the IANA numbers, re-exported.

The IANA numbers themselves (exchange, payload, notify, ID, auth, protocol, TS,
CP, certificate and transform types and IDs) live in the bottom-layer module
``pypluto.iana``; they are re-exported here so ``from pypluto.wire.constants
import PayloadType`` keeps working.  New code should import them from
``pypluto.iana``.  ``wire/`` imports nothing of ours but ``pypluto.iana`` and
``pypluto.params`` (DESIGN.md "Import rules").
"""

from __future__ import annotations

from enum import IntEnum

from pypluto.iana import (
    AuthMethod,
    CertEncoding,
    CFGType,
    CPAttr,
    ExchangeType,
    IDType,
    NotifyType,
    PayloadType,
    ProtocolID,
    TransformAttr,
    TransformType,
    TSType,
)

__all__ = [
    "IKE_HEADER_SIZE",
    "GENERIC_HEADER_SIZE",
    "IKE_MAJOR_VERSION",
    "NON_ESP_MARKER",
    "ExchangeType",
    "PayloadType",
    "NotifyType",
    "IDType",
    "AuthMethod",
    "ProtocolID",
    "TSType",
    "CFGType",
    "CPAttr",
    "CertEncoding",
    "TransformAttr",
    "HeaderFlag",
    "TransformType",
    "enum_or_int",
]

IKE_HEADER_SIZE = 28  # RFC 7296 §3.1
GENERIC_HEADER_SIZE = 4  # RFC 7296 §3.2
IKE_MAJOR_VERSION = 2
NON_ESP_MARKER = b"\x00\x00\x00\x00"  # RFC 3948 §2.2, before IKE on port 4500


class HeaderFlag(IntEnum):
    """IKE header flag bits (RFC 7296 §3.1)."""

    RESPONSE = 0x20
    VERSION = 0x10
    INITIATOR = 0x08


_ENUM_CACHE: dict[type[IntEnum], dict[int, IntEnum]] = {}


def enum_or_int(enum: type[IntEnum], value: int) -> int:
    """``enum(value)`` when the value is a known member, else the plain int."""
    members = _ENUM_CACHE.get(enum)
    if members is None:
        members = {m.value: m for m in enum}
        _ENUM_CACHE[enum] = members
    return members.get(value, value)
