"""The codec's only exceptions (RFC 7296 §2.21.2, §3.2, §3.10.1).

Every failure to parse raises a :class:`WireError`; ``.notify`` names the notify
type a responder would send (or, for messages that are not answered, log).
"""

from __future__ import annotations

from .constants import NotifyType
from .header import IKEHeader


class WireError(Exception):
    """Base of every codec error.

    ``header`` is the parsed IKE header when the error happened after the header
    was read (so the engine can answer or log with SPIs and message ID).
    """

    notify: NotifyType = NotifyType.INVALID_SYNTAX

    def __init__(self, message: str, *, header: IKEHeader | None = None) -> None:
        super().__init__(message)
        self.header = header


class InvalidSyntax(WireError):
    """Malformed input: a length, count, or field value that cannot be right."""

    notify = NotifyType.INVALID_SYNTAX


class UnsupportedCriticalPayload(WireError):
    """An unknown payload with the critical bit set (RFC 7296 §2.5, §3.2)."""

    notify = NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD

    def __init__(self, payload_type: int, *, header: IKEHeader | None = None) -> None:
        super().__init__(f"unsupported critical payload type {payload_type}", header=header)
        self.payload_type = payload_type


class InvalidMajorVersion(WireError):
    """The header's major version is not 2 (RFC 7296 §2.5: answer INVALID_MAJOR_VERSION)."""

    notify = NotifyType.INVALID_MAJOR_VERSION

    def __init__(self, major: int, *, header: IKEHeader | None = None) -> None:
        super().__init__(f"IKE major version {major}, expected 2", header=header)
        self.major = major


class EncodeError(WireError):
    """A payload object cannot be serialized (a field out of range or inconsistent)."""

    notify = NotifyType.INVALID_SYNTAX
