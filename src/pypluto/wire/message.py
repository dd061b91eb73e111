"""IKEv2 messages: the IKE header and the payload chain (RFC 7296 §3.1-§3.2, §3.14; RFC 7383).

- :func:`parse_message` reads the header and the unencrypted payload chain; an
  SK/SKF payload stays encrypted, with its ``aad`` filled in.
- :meth:`Message.serialize` writes it back; a parsed message serializes to the
  identical bytes.
- :func:`parse_payloads` / :func:`serialize_payloads` handle a decrypted inner chain.
- :func:`encode_sk_message` / :func:`encode_skf_messages` build protected messages
  given a *protector* (``body_length(n)`` and ``encrypt(aad, plaintext)``, see
  ``pypluto.crypto.sk.SKProtector``).

Only :class:`~pypluto.wire.errors.WireError` subclasses leave this module.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, overload

from .constants import (
    GENERIC_HEADER_SIZE,
    IKE_HEADER_SIZE,
    IKE_MAJOR_VERSION,
    ExchangeType,
    HeaderFlag,
    NotifyType,
    PayloadType,
    enum_or_int,
)
from .errors import (
    EncodeError,
    InvalidMajorVersion,
    InvalidSyntax,
    UnsupportedCriticalPayload,
    WireError,
)
from .header import IKEHeader
from .payloads import (
    PAYLOAD_CLASSES,
    IDPayload,
    NotifyPayload,
    Payload,
    SerializedRun,
    SKFPayload,
    SKPayload,
    TSPayload,
    UnknownPayload,
)

__all__ = [
    "IKEHeader",
    "Message",
    "Protector",
    "peek_header",
    "parse_message",
    "parse_payloads",
    "serialize_payloads",
    "encode_plain",
    "encode_sk_message",
    "encode_skf_messages",
    "open_sk",
    "open_skf",
]

_HEADER = struct.Struct("!8s8sBBBBII")
_GENERIC = struct.Struct("!BBH")
_FLAG_BITS = HeaderFlag.RESPONSE | HeaderFlag.VERSION | HeaderFlag.INITIATOR
# the members by value, for the hot paths (what enum_or_int returns, without its call)
_PAYLOAD_TYPES: dict[int, int] = {m.value: m for m in PayloadType}
_EXCHANGES: dict[int, int] = {m.value: m for m in ExchangeType}

# Errors of the standard library that malformed input could provoke; the codec
# is written not to rely on them, and turns any that slip through into InvalidSyntax.
_INTERNAL_ERRORS = (struct.error, ValueError, IndexError, KeyError, TypeError, OverflowError)


class Protector(Protocol):
    """What the SK framing needs from ``crypto.sk.SKProtector``."""

    def body_length(self, plaintext_len: int) -> int: ...

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes: ...


class _Opener(Protocol):
    def decrypt(self, aad: bytes, body: bytes) -> bytes: ...


def peek_header(data: bytes) -> IKEHeader:
    """Read the IKE header only (fast path); checks only that 28 bytes are there."""
    if len(data) < IKE_HEADER_SIZE:
        raise InvalidSyntax(f"IKE message of {len(data)} bytes is shorter than the header")
    spi_i, spi_r, nxt, ver, exch, flags, msgid, length = _HEADER.unpack_from(data, 0)
    return IKEHeader(
        spi_i,
        spi_r,
        _PAYLOAD_TYPES.get(nxt, nxt),
        ver >> 4,
        ver & 0x0F,
        _EXCHANGES.get(exch, exch),
        flags,
        msgid,
        length,
    )


P = TypeVar("P", bound=Payload)


@dataclass
class Message:
    """An IKEv2 message: header fields and the payload list (RFC 7296 §3.1).

    ``payloads`` is the outer chain in order; an encrypted message ends with an
    :class:`SKPayload` (or :class:`SKFPayload`).  ``higher_version`` is the V flag;
    ``minor_version`` and ``reserved_flags`` are kept for byte-exact round trips.
    """

    spi_i: bytes = bytes(8)
    spi_r: bytes = bytes(8)
    exchange: int = ExchangeType.IKE_SA_INIT
    initiator: bool = False
    response: bool = False
    message_id: int = 0
    payloads: list[Payload] = field(default_factory=list)
    higher_version: bool = field(default=False, kw_only=True)
    minor_version: int = field(default=0, kw_only=True, compare=False)
    reserved_flags: int = field(default=0, kw_only=True, compare=False, repr=False)

    # ---- helpers for the engine

    @overload
    def get(self, payload_type: int) -> Payload | None: ...
    @overload
    def get(self, payload_type: int, cls: type[P]) -> P | None: ...

    def get(self, payload_type: int, cls: type[Payload] | None = None) -> Payload | None:
        """The first payload of ``payload_type`` (e.g. ``PayloadType.IDr``), or None."""
        for p in self.payloads:
            if p.payload_type == payload_type:
                if cls is not None and not isinstance(p, cls):
                    return None
                return p
        return None

    def get_all(self, payload_type: int) -> list[Payload]:
        """Every payload of ``payload_type``, in order."""
        return [p for p in self.payloads if p.payload_type == payload_type]

    def notifies(self, notify_type: int | None = None) -> list[NotifyPayload]:
        """The Notify payloads, optionally only those of one type."""
        return [
            p
            for p in self.payloads
            if isinstance(p, NotifyPayload)
            and (notify_type is None or p.notify_type == notify_type)
        ]

    def notify(self, notify_type: int) -> NotifyPayload | None:
        """The first Notify payload of ``notify_type``, or None."""
        found = self.notifies(notify_type)
        return found[0] if found else None

    @property
    def sk(self) -> SKPayload | SKFPayload | None:
        """The trailing SK or SKF payload, if the message is protected."""
        if self.payloads and isinstance(self.payloads[-1], SKPayload | SKFPayload):
            return self.payloads[-1]
        return None

    @property
    def flags(self) -> int:
        f = self.reserved_flags & ~_FLAG_BITS & 0xFF
        if self.response:
            f |= HeaderFlag.RESPONSE
        if self.higher_version:
            f |= HeaderFlag.VERSION
        if self.initiator:
            f |= HeaderFlag.INITIATOR
        return f

    @property
    def header(self) -> IKEHeader:
        """The header this message serializes with (length included)."""
        first, chain = serialize_payloads(self.payloads)
        return self._header(first, IKE_HEADER_SIZE + len(chain))

    def _header(self, first: int, length: int) -> IKEHeader:
        return IKEHeader(
            self.spi_i,
            self.spi_r,
            first,
            IKE_MAJOR_VERSION,
            self.minor_version,
            self.exchange,
            self.flags,
            self.message_id,
            length,
        )

    def serialize(self) -> bytes:
        """The message bytes (RFC 7296 §3.1); the length field is computed."""
        first, chain = serialize_payloads(self.payloads)
        return _pack_fields(self.spi_i, self.spi_r, first, self.minor_version, self.exchange,
                            self.flags, self.message_id, IKE_HEADER_SIZE + len(chain)) + chain


def _pack_header(h: IKEHeader) -> bytes:
    if h.major_version != IKE_MAJOR_VERSION:
        try:
            return _HEADER.pack(h.spi_i, h.spi_r, h.next_payload,
                                (h.major_version << 4) | h.minor_version, h.exchange, h.flags,
                                h.message_id, h.length)
        except struct.error as e:
            raise EncodeError(f"IKE header field out of range: {e}") from None
    return _pack_fields(h.spi_i, h.spi_r, h.next_payload, h.minor_version, h.exchange, h.flags,
                        h.message_id, h.length)


def _pack_fields(spi_i: bytes, spi_r: bytes, next_payload: int, minor_version: int,
                 exchange: int, flags: int, message_id: int, length: int) -> bytes:
    """An IKEv2 header (RFC 7296 §3.1) from its fields, without an IKEHeader object."""
    if len(spi_i) != 8 or len(spi_r) != 8:
        raise EncodeError("IKE SPIs must be 8 bytes")
    try:
        return _HEADER.pack(spi_i, spi_r, next_payload, (IKE_MAJOR_VERSION << 4) | minor_version,
                            exchange, flags, message_id, length)
    except struct.error as e:
        raise EncodeError(f"IKE header field out of range: {e}") from None


def _flags(initiator: bool, response: bool, higher_version: bool) -> int:
    """The header flags of a message we build (RFC 7296 §3.1), as ``Message.flags``."""
    return ((HeaderFlag.RESPONSE if response else 0) | (HeaderFlag.VERSION if higher_version
            else 0) | (HeaderFlag.INITIATOR if initiator else 0))


# --------------------------------------------------------------------------- chains


_SK_CLASSES = (SKPayload, SKFPayload)
_SK_TYPES = frozenset((int(PayloadType.SK), int(PayloadType.SKF)))
# payload classes shared by two types: the generic header says which (RFC 7296 §3.5, §3.13)
_TYPED_BY_HEADER = frozenset(
    int(t) for t in (PayloadType.IDi, PayloadType.IDr, PayloadType.TSi, PayloadType.TSr)
)
# the types _parse_chain looks at twice (SK/SKF framing, the payload type of ID/TS)
_SPECIAL_TYPES = _SK_TYPES | _TYPED_BY_HEADER
# The most payloads one chain (the outer one, or the one inside SK/SKF) may hold.  RFC
# 7296 sets no limit; Libreswan 5.2 refuses a message of more than 30 payloads as
# INVALID_SYNTAX (demux.h PAYLIMIT), so no peer that works with it sends more.  Without a
# bound a 64 KB IKE_SA_INIT of 16,000 empty payloads cost 19 ms to read (issue 13).
MAX_PAYLOADS = 64


def _parse_chain(
    data: bytes, pos: int, first: int, *, outer: bool, header: IKEHeader | None,
    keep_critical: bool = False,
) -> list[Payload]:
    """Walk a payload chain from ``pos`` to the end of ``data`` (RFC 7296 §3.2).

    Every datagram goes through here (issue 18): the usual payload (a known type whose
    class has one payload type, flags 0) costs one header unpack, one slice and its
    parser; the SK/SKF, ID/TS and unknown types take the branch that handles them.
    """
    end = len(data)
    payloads: list[Payload] = []
    append = payloads.append
    unpack = _GENERIC.unpack_from
    nxt = first
    classes = PAYLOAD_CLASSES
    special = _SPECIAL_TYPES
    room = MAX_PAYLOADS
    while nxt:  # PayloadType.NONE == 0 ends the chain
        ptype = nxt
        if not room:
            raise InvalidSyntax(f"more than {MAX_PAYLOADS} payloads in one chain", header=header)
        room -= 1
        left = end - pos
        if left < GENERIC_HEADER_SIZE:
            raise InvalidSyntax(
                f"payload {ptype}: {left} bytes left, no room for its header", header=header
            )
        nxt, flags, length = unpack(data, pos)
        if length < GENERIC_HEADER_SIZE or length > left:
            raise InvalidSyntax(
                f"payload {ptype}: length {length} with {left} bytes left", header=header
            )
        parse = classes.get(ptype)
        if parse is None:
            if flags & 0x80 and not keep_critical:
                raise UnsupportedCriticalPayload(ptype, header=header)
            payload: Payload = UnknownPayload(ptype, data[pos + GENERIC_HEADER_SIZE : pos + length])
        else:
            if ptype in special and ptype in _SK_TYPES:
                if not outer:
                    raise InvalidSyntax("an SK/SKF payload inside an SK payload", header=header)
                if length != left:
                    raise InvalidSyntax(
                        "the SK/SKF payload must be the last payload (RFC 7296 §3.14)",
                        header=header,
                    )
            try:
                payload = parse(data[pos + GENERIC_HEADER_SIZE : pos + length])
            except InvalidSyntax as e:
                if e.header is None:
                    e.header = header
                raise
            if ptype in special:
                if ptype in _TYPED_BY_HEADER and isinstance(payload, IDPayload | TSPayload):
                    payload.payload_type = _PAYLOAD_TYPES.get(ptype, ptype)
                elif isinstance(payload, SKPayload | SKFPayload):
                    payload.first_inner = _PAYLOAD_TYPES.get(nxt, nxt)
                    aad_end = pos + GENERIC_HEADER_SIZE + (4 if ptype == PayloadType.SKF else 0)
                    payload.aad = data[:aad_end]
                    nxt = PayloadType.NONE
        if flags:  # a fresh payload has critical=False and header_reserved=0 already
            payload.critical = bool(flags & 0x80)
            payload.header_reserved = flags & 0x7F
        append(payload)
        pos += length
    if pos != end:
        raise InvalidSyntax(f"{end - pos} bytes after the last payload", header=header)
    return payloads


def serialize_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """The chain's first payload type and its bytes, generic headers included (RFC 7296 §3.2).

    A trailing SK/SKF payload writes its ``first_inner`` as its Next Payload.
    """
    try:
        return _serialize_payloads(payloads)
    except WireError:
        raise
    except _INTERNAL_ERRORS as e:
        raise EncodeError(f"cannot serialize payloads: {e}") from None


def _serialize_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    n = len(payloads)
    if not n:
        return PayloadType.NONE, b""
    parts: list[bytes] = []
    append = parts.append
    pack = _GENERIC.pack
    last = n - 1
    for i, p in enumerate(payloads):
        if i < last:
            if isinstance(p, _SK_CLASSES):
                raise EncodeError("an SK/SKF payload must be the last payload")
            nxt = payloads[i + 1].payload_type
        elif isinstance(p, _SK_CLASSES):
            nxt = p.first_inner
        else:
            nxt = PayloadType.NONE
        if type(p) is SerializedRun:  # generic headers included (issue 18)
            append(p.with_next(nxt))
            continue
        body = p.serialize()
        length = GENERIC_HEADER_SIZE + len(body)
        if length > 0xFFFF:
            raise EncodeError(f"payload {p.payload_type} of {length} bytes is too long")
        if not 0 <= nxt <= 0xFF:
            raise EncodeError(f"payload type {nxt} out of range")
        append(pack(nxt, (0x80 if p.critical else 0) | (p.header_reserved & 0x7F), length))
        append(body)
    return payloads[0].payload_type, b"".join(parts)


def encode_plain(spi_i: bytes, spi_r: bytes, exchange: int, *, initiator: bool,
                 response: bool, message_id: int, payloads: Sequence[Payload]) -> bytes:
    """An unprotected message we build (RFC 7296 §3.1): ``Message(...).serialize()``
    for minor version 0, no V flag and no reserved flags, without the Message object."""
    first, chain = serialize_payloads(payloads)
    return _pack_fields(spi_i, spi_r, first, 0, exchange, _flags(initiator, response, False),
                        message_id, IKE_HEADER_SIZE + len(chain)) + chain


def parse_payloads(first: int, data: bytes) -> list[Payload]:
    """Parse a decrypted inner payload chain starting with type ``first`` (RFC 7296 §3.14)."""
    try:
        return _parse_chain(bytes(data), 0, first, outer=False, header=None)
    except WireError:
        raise
    except _INTERNAL_ERRORS as e:
        raise InvalidSyntax(f"malformed payload chain: {e}") from None


def parse_message(data: bytes, header: IKEHeader | None = None, *,
                  keep_critical: bool = False) -> Message:
    """Parse an IKE message: header plus unencrypted chain (RFC 7296 §3.1, §3.2).

    ``header``: what :func:`peek_header` returned for these very bytes, when the
    caller has it (the header is then not read twice).  ``keep_critical``: an unknown
    critical payload of the outer chain is kept (as :class:`UnknownPayload`) instead of
    raising, for a caller that must first check the message's ICV.
    Raises :class:`InvalidMajorVersion`, :class:`UnsupportedCriticalPayload` or
    :class:`InvalidSyntax`; nothing else.
    """
    try:
        if type(data) is not bytes:
            data = bytes(data)
            header = None
        if header is None:
            header = peek_header(data)
        if header.major_version != IKE_MAJOR_VERSION:
            raise InvalidMajorVersion(header.major_version, header=header)
        if header.length != len(data):
            raise InvalidSyntax(
                f"header length {header.length} != datagram length {len(data)}", header=header
            )
        payloads = _parse_chain(
            data, IKE_HEADER_SIZE, header.next_payload, outer=True, header=header,
            keep_critical=keep_critical,
        )
        return Message(
            header.spi_i,
            header.spi_r,
            header.exchange,
            header.initiator,
            header.response,
            header.message_id,
            payloads,
            higher_version=header.higher_version,
            minor_version=header.minor_version,
            reserved_flags=header.flags & ~_FLAG_BITS & 0xFF,
        )
    except WireError:
        raise
    except _INTERNAL_ERRORS as e:
        raise InvalidSyntax(f"malformed IKE message: {e}", header=header) from None


# --------------------------------------------------------------------------- SK / SKF


def encode_sk_message(
    spi_i: bytes,
    spi_r: bytes,
    exchange: int,
    *,
    initiator: bool,
    response: bool,
    message_id: int,
    inner: Sequence[Payload],
    protector: Protector,
    outer: Iterable[Payload] = (),
    higher_version: bool = False,
) -> bytes:
    """Build a message whose payloads are protected in an SK payload (RFC 7296 §3.14).

    The header's length is computed from ``protector.body_length`` before
    encryption; the associated data (RFC 5282 §5.1) / integrity-checked prefix is
    the IKE header, any ``outer`` unencrypted payloads and the SK generic header.
    """
    first, plaintext = serialize_payloads(inner)
    body_len = protector.body_length(len(plaintext))
    outer_list = list(outer)
    if not outer_list:
        # the usual message: header and SK generic header packed here, nothing serialized
        # twice (what Message.serialize of [SKPayload(first, <body_len bytes>)] gives)
        sk_len = GENERIC_HEADER_SIZE + body_len
        if sk_len > 0xFFFF:
            raise EncodeError(f"payload {PayloadType.SK} of {sk_len} bytes is too long")
        if not 0 <= first <= 0xFF:
            raise EncodeError(f"payload type {first} out of range")
        aad = _pack_fields(
            spi_i, spi_r, PayloadType.SK, 0, exchange,
            _flags(initiator, response, higher_version), message_id, IKE_HEADER_SIZE + sk_len,
        ) + _GENERIC.pack(first, 0, sk_len)
        body = protector.encrypt(aad, plaintext)
        if len(body) != body_len:
            raise EncodeError(f"protector returned {len(body)} bytes, announced {body_len}")
        return aad + body
    msg = Message(
        spi_i,
        spi_r,
        exchange,
        initiator,
        response,
        message_id,
        [*outer_list, SKPayload(first, bytes(body_len))],
        higher_version=higher_version,
    )
    raw = msg.serialize()
    aad = raw[: len(raw) - body_len]
    body = protector.encrypt(aad, plaintext)
    if len(body) != body_len:
        raise EncodeError(f"protector returned {len(body)} bytes, announced {body_len}")
    return aad + body


def encode_skf_messages(
    spi_i: bytes,
    spi_r: bytes,
    exchange: int,
    *,
    initiator: bool,
    response: bool,
    message_id: int,
    inner: Sequence[Payload],
    protector: Protector,
    fragment_size: int,
    higher_version: bool = False,
) -> list[bytes]:
    """Build the SKF fragments of a protected message (RFC 7383 §2.5).

    ``fragment_size`` bounds each resulting IKE message (header included, IP/UDP
    headers and the non-ESP marker excluded).  The plaintext chain is split into
    equal pieces (the last may be shorter); fragment 1 carries the first inner
    payload type, the others carry 0 (RFC 7383 §2.5).
    """
    first, plaintext = serialize_payloads(inner)
    room = fragment_size - IKE_HEADER_SIZE - GENERIC_HEADER_SIZE - 4
    if room <= 0:
        raise EncodeError(f"fragment size {fragment_size} leaves no room for data")
    # the largest plaintext piece whose protected body fits (body_length is monotonic)
    piece = room
    while piece > 0 and protector.body_length(piece) > room:
        piece -= 1
    if piece <= 0:
        raise EncodeError(f"fragment size {fragment_size} too small for the cipher")
    chunks = [plaintext[i : i + piece] for i in range(0, len(plaintext), piece)] or [b""]
    total = len(chunks)
    if total > 0xFFFF:
        raise EncodeError(f"{total} fragments exceed the 16-bit total")
    out: list[bytes] = []
    for number, chunk in enumerate(chunks, 1):
        body_len = protector.body_length(len(chunk))
        skf = SKFPayload(first if number == 1 else PayloadType.NONE, number, total, bytes(body_len))
        msg = Message(
            spi_i,
            spi_r,
            exchange,
            initiator,
            response,
            message_id,
            [skf],
            higher_version=higher_version,
        )
        raw = msg.serialize()
        aad = raw[: len(raw) - body_len]
        body = protector.encrypt(aad, chunk)
        if len(body) != body_len:
            raise EncodeError(f"protector returned {len(body)} bytes, announced {body_len}")
        out.append(aad + body)
    return out


def open_sk(message: Message, protector: _Opener) -> list[Payload]:
    """Decrypt the message's SK payload and parse the inner chain.

    Errors of ``protector.decrypt`` (``crypto.errors.IntegrityError``) pass
    through; a malformed inner chain raises :class:`InvalidSyntax`.
    """
    sk = message.sk
    if not isinstance(sk, SKPayload):
        raise InvalidSyntax("message has no SK payload")
    plaintext = protector.decrypt(sk.aad, sk.body)
    return parse_payloads(sk.first_inner, plaintext)


def open_skf(fragments: Sequence[Message], protector: _Opener) -> list[Payload]:
    """Decrypt and reassemble a complete set of SKF fragments (RFC 7383 §2.6).

    ``fragments`` may be in any order but must be exactly fragments 1..total.
    """
    skfs: dict[int, SKFPayload] = {}
    for m in fragments:
        skf = m.sk
        if not isinstance(skf, SKFPayload):
            raise InvalidSyntax("message has no SKF payload")
        skfs[skf.fragment_number] = skf
    if not skfs:
        raise InvalidSyntax("no fragments")
    total = skfs[min(skfs)].total_fragments
    if sorted(skfs) != list(range(1, total + 1)) or any(
        s.total_fragments != total for s in skfs.values()
    ):
        raise InvalidSyntax("incomplete or inconsistent fragment set")
    plaintext = b"".join(protector.decrypt(skfs[i].aad, skfs[i].body) for i in range(1, total + 1))
    return parse_payloads(skfs[1].first_inner, plaintext)


def notify_name(value: int) -> str:
    """The IANA name of a notify type, or its number."""
    v = enum_or_int(NotifyType, value)
    return v.name if isinstance(v, NotifyType) else str(value)
