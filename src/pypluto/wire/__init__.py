"""The IKEv2 message codec: bytes <-> dataclasses, strict (RFC 7296 §3, RFC 7383).

No state and no crypto: SK payloads are framed here and protected by ``crypto.sk``.
"""

from . import constants, errors, message, payloads
from .constants import *  # noqa: F403
from .errors import (
    EncodeError,
    InvalidMajorVersion,
    InvalidSyntax,
    UnsupportedCriticalPayload,
    WireError,
)
from .message import (
    IKEHeader,
    Message,
    Protector,
    encode_plain,
    encode_sk_message,
    encode_skf_messages,
    open_sk,
    open_skf,
    parse_message,
    parse_payloads,
    peek_header,
    serialize_payloads,
)
from .payloads import *  # noqa: F403

__all__ = [
    *constants.__all__,
    *payloads.__all__,
    *message.__all__,
    "errors",
    "EncodeError",
    "InvalidMajorVersion",
    "InvalidSyntax",
    "UnsupportedCriticalPayload",
    "WireError",
    "IKEHeader",
    "Message",
    "Protector",
    "encode_plain",
    "encode_sk_message",
    "encode_skf_messages",
    "open_sk",
    "open_skf",
    "parse_message",
    "parse_payloads",
    "peek_header",
    "serialize_payloads",
]
