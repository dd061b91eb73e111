"""IKEv2 payloads as dataclasses (RFC 7296 §3.3-§3.16, RFC 7383 §2.5).

Each payload class has ``parse(body)`` (the payload body, without the 4-byte
generic header) and ``serialize()`` (the body again).  The generic header
(next payload, critical bit, length) belongs to the message layer
(:mod:`pypluto.wire.message`).

Every payload carries ``payload_type`` (so IDi/IDr and TSi/TSr are told apart)
and ``critical``.  Reserved fields are kept (``compare=False``) so that a parsed
message serializes to identical bytes even when a peer set reserved bits, which
RFC 7296 §3 says receivers MUST ignore.

Parsing is strict: every length is checked against its container and every
violation raises :class:`~pypluto.wire.errors.InvalidSyntax`.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, cast

from pypluto.params import IPAddress

from .constants import (
    AuthMethod,
    CertEncoding,
    CFGType,
    CPAttr,
    IDType,
    NotifyType,
    PayloadType,
    ProtocolID,
    TransformAttr,
    TransformType,
    TSType,
    enum_or_int,
)
from .errors import EncodeError, InvalidSyntax

__all__ = [
    "IPAddress",
    "Payload",
    "TransformAttribute",
    "Transform",
    "Proposal",
    "SAPayload",
    "KEPayload",
    "IDPayload",
    "CertPayload",
    "CertReqPayload",
    "AuthPayload",
    "NoncePayload",
    "NotifyPayload",
    "DeletePayload",
    "VendorIDPayload",
    "TrafficSelector",
    "RawTrafficSelector",
    "TSPayload",
    "SKPayload",
    "SKFPayload",
    "CPAttribute",
    "CPPayload",
    "EAPPayload",
    "UnknownPayload",
    "SerializedRun",
    "PAYLOAD_CLASSES",
]

_U16 = struct.Struct("!H")
_GENERIC_HDR = struct.Struct("!BBH")  # RFC 7296 §3.2
_U32 = struct.Struct("!I")
_U16X2 = struct.Struct("!HH")
_TRANSFORM_HDR = struct.Struct("!BBHBBH")  # RFC 7296 §3.3.2
_PROPOSAL_HDR = struct.Struct("!BBHBBBB")  # RFC 7296 §3.3.1
_ATTR_HDR = struct.Struct("!HH")  # RFC 7296 §3.3.5
_TTYPES: dict[int, int] = {int(m): m for m in TransformType}
_PROTOCOLS: dict[int, int] = {int(m): m for m in ProtocolID}
_KEY_LENGTH = int(TransformAttr.KEY_LENGTH)
_NOTIFY_HDR = struct.Struct("!BBH")  # RFC 7296 §3.10
# members by value for the hot parsers (enum_or_int's answer without its call)
_NOTIFY_TYPES: dict[int, int] = {m.value: m for m in NotifyType}
_ID_TYPES: dict[int, int] = {m.value: m for m in IDType}
_AUTH_METHODS: dict[int, int] = {m.value: m for m in AuthMethod}

NONCE_MIN = 16  # RFC 7296 §3.9
NONCE_MAX = 256


class _Reader:
    """Bounds-checked reading from a byte string; overruns raise InvalidSyntax."""

    __slots__ = ("data", "pos", "end", "what")

    def __init__(self, data: bytes, what: str, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, field_name: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise InvalidSyntax(f"{self.what}: {field_name} needs {n} bytes, {self.remaining} left")

    def take(self, n: int, field_name: str) -> bytes:
        self.need(n, field_name)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, field_name: str) -> int:
        self.need(1, field_name)
        v = self.data[self.pos]
        self.pos += 1
        return v

    def u16(self, field_name: str) -> int:
        self.need(2, field_name)
        v: int = _U16.unpack_from(self.data, self.pos)[0]
        self.pos += 2
        return v

    def u24(self, field_name: str) -> int:
        self.need(3, field_name)
        v = int.from_bytes(self.data[self.pos : self.pos + 3], "big")
        self.pos += 3
        return v

    def u32(self, field_name: str) -> int:
        self.need(4, field_name)
        v: int = _U32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return v

    def rest(self) -> bytes:
        out = self.data[self.pos : self.end]
        self.pos = self.end
        return out

    def done(self) -> None:
        if self.pos != self.end:
            raise InvalidSyntax(f"{self.what}: {self.remaining} unexpected trailing bytes")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise InvalidSyntax(message)


def _u8(v: int, name: str) -> bytes:
    if not 0 <= v <= 0xFF:
        raise EncodeError(f"{name}={v} does not fit in 8 bits")
    return bytes((v,))


def _u16(v: int, name: str) -> bytes:
    if not 0 <= v <= 0xFFFF:
        raise EncodeError(f"{name}={v} does not fit in 16 bits")
    return _U16.pack(v)


def _u24(v: int, name: str) -> bytes:
    if not 0 <= v <= 0xFFFFFF:
        raise EncodeError(f"{name}={v} does not fit in 24 bits")
    return v.to_bytes(3, "big")


def _bytes(v: object, name: str) -> bytes:
    if type(v) is bytes:  # the common case: no copy, no further checks
        return v
    if not isinstance(v, bytes | bytearray | memoryview):
        raise EncodeError(f"{name} must be bytes, not {type(v).__name__}")
    return bytes(v)


def _hexrepr(b: bytes, limit: int = 16) -> str:
    return b[:limit].hex() + ("…" if len(b) > limit else "") + f" ({len(b)} bytes)"


# --------------------------------------------------------------------------- base


@dataclass
class Payload:
    """Common fields: ``critical`` (RFC 7296 §3.2) and the generic header's reserved bits."""

    if TYPE_CHECKING:
        # The payload type number (RFC 7296 §3.2): a class attribute of most payloads, an
        # instance field of IDPayload, TSPayload (IDi/IDr, TSi/TSr) and UnknownPayload.
        # Declared (read-only) for type checkers only: no dataclass field of the base.
        @property
        def payload_type(self) -> int: ...

    critical: bool = field(default=False, kw_only=True)
    header_reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> Payload:  # pragma: no cover - overridden
        raise NotImplementedError

    def serialize(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError


# --------------------------------------------------------------------------- SA


@dataclass
class TransformAttribute:
    """A transform attribute (RFC 7296 §3.3.5).

    An ``int`` value is encoded TV (AF=1, 16-bit value); a ``bytes`` value TLV.
    """

    type: int
    value: int | bytes

    @property
    def tv(self) -> bool:
        return isinstance(self.value, int)

    def serialize(self) -> bytes:
        if not 0 <= self.type <= 0x7FFF:
            raise EncodeError(f"attribute type {self.type} does not fit in 15 bits")
        if isinstance(self.value, int):
            if not 0 <= self.value <= 0xFFFF:
                raise EncodeError(f"attribute={self.value} does not fit in 16 bits")
            return _ATTR_HDR.pack(0x8000 | self.type, self.value)
        value = _bytes(self.value, "attribute value")
        return _u16(self.type, "attribute type") + _u16(len(value), "attribute length") + value


@dataclass
class Transform:
    """A transform substructure (RFC 7296 §3.3.2)."""

    type: int
    id: int
    attributes: list[TransformAttribute] = field(default_factory=list)
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def make(cls, type: int, id: int, key_length: int | None = None) -> Transform:
        """A transform with an optional Key Length attribute (in bits)."""
        attrs = (
            [] if key_length is None else [TransformAttribute(TransformAttr.KEY_LENGTH, key_length)]
        )
        return cls(type, id, attrs)

    @property
    def key_length(self) -> int | None:
        """The Key Length attribute (14) in bits, or None."""
        for a in self.attributes:
            if a.type == TransformAttr.KEY_LENGTH and isinstance(a.value, int):
                return a.value
        return None

    @classmethod
    def parse_from(cls, r: _Reader, is_last: bool) -> Transform:
        """Parse one transform at ``r.pos`` (RFC 7296 §3.3.2, attributes §3.3.5).

        One precompiled ``struct`` call reads the fixed 8-byte header; the common
        shapes (no attribute, one TV attribute) take no per-field reads.
        """
        data = r.data
        start = r.pos
        end = r.end
        if end - start < 8:
            return cls._parse_from_slow(r, is_last)
        last, res1, length, ttype, res2, tid = _TRANSFORM_HDR.unpack_from(data, start)
        if last != (0 if is_last else 3):
            raise InvalidSyntax(f"transform: last-substructure {last}")
        if length < 8:
            raise InvalidSyntax(f"transform: length {length} < 8")
        tend = start + length
        if tend > end:
            raise InvalidSyntax(
                f"transform: transform body needs {length - 4} bytes, {end - start - 4} left"
            )
        attrs: list[TransformAttribute] = []
        pos = start + 8
        while pos < tend:
            if tend - pos < 4:
                raise InvalidSyntax(f"transform: attribute needs 4 bytes, {tend - pos} left")
            a, v = _ATTR_HDR.unpack_from(data, pos)
            pos += 4
            if a & 0x8000:
                attrs.append(TransformAttribute(a & 0x7FFF, v))
            else:
                if v > tend - pos:
                    raise InvalidSyntax(
                        f"transform: attribute value needs {v} bytes, {tend - pos} left"
                    )
                if a == _KEY_LENGTH:
                    raise InvalidSyntax(
                        "transform: Key Length attribute must be TV (RFC 7296 §3.3.5)"
                    )
                attrs.append(TransformAttribute(a, data[pos : pos + v]))
                pos += v
        r.pos = tend
        return cls(_TTYPES.get(ttype, ttype), tid, attrs, reserved=(res1 << 8) | res2)

    @classmethod
    def _parse_from_slow(cls, r: _Reader, is_last: bool) -> Transform:
        """Field-by-field parse; used only near the end of the data for its errors."""
        last = r.u8("transform last")
        _check(last == (0 if is_last else 3), f"transform: last-substructure {last}")
        r.u8("transform reserved")
        length = r.u16("transform length")
        _check(length >= 8, f"transform: length {length} < 8")
        r.need(length - 4, "transform body")
        raise InvalidSyntax("transform: truncated")  # pragma: no cover - need() raised

    def serialize(self, is_last: bool) -> bytes:
        """The transform substructure (RFC 7296 §3.3.2): one struct call for its header."""
        attrs = b"".join([a.serialize() for a in self.attributes]) if self.attributes else b""
        length = 8 + len(attrs)
        try:
            head = _TRANSFORM_HDR.pack(
                0 if is_last else 3,
                self.reserved >> 8,
                length,
                self.type,
                self.reserved & 0xFF,
                self.id,
            )
        except struct.error as e:
            raise EncodeError(f"transform field out of range: {e}") from None
        return head + attrs if attrs else head


def _check_spi_size(protocol_id: int, spi_size: int, what: str, allow_ike_empty: bool) -> None:
    """RFC 7296 §3.3.1: IKE SPIs are 8 bytes (or absent), AH/ESP SPIs 4 bytes."""
    if protocol_id == ProtocolID.IKE:
        ok = spi_size == 8 or (allow_ike_empty and spi_size == 0)
    elif protocol_id in (ProtocolID.AH, ProtocolID.ESP):
        ok = spi_size == 4
    else:
        ok = True
    _check(ok, f"{what}: SPI size {spi_size} for protocol {protocol_id}")


@dataclass
class Proposal:
    """A proposal substructure (RFC 7296 §3.3.1)."""

    number: int = 1
    protocol_id: int = ProtocolID.IKE
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    def transforms_of(self, ttype: int) -> list[Transform]:
        return [t for t in self.transforms if t.type == ttype]

    @classmethod
    def parse_from(cls, r: _Reader, is_last: bool) -> Proposal:
        """Parse one proposal at ``r.pos`` (RFC 7296 §3.3.1); one struct call for its header."""
        data = r.data
        start = r.pos
        end = r.end
        if end - start < 8:
            last = r.u8("proposal last")
            _check(last == (0 if is_last else 2), f"proposal: last-substructure {last}")
            r.u8("proposal reserved")
            length = r.u16("proposal length")
            _check(length >= 8, f"proposal: length {length} < 8")
            r.need(length - 4, "proposal body")
        last, reserved, length, number, protocol, spi_size, count = _PROPOSAL_HDR.unpack_from(
            data, start
        )
        if last != (0 if is_last else 2):
            raise InvalidSyntax(f"proposal: last-substructure {last}")
        if length < 8:
            raise InvalidSyntax(f"proposal: length {length} < 8")
        pend = start + length
        if pend > end:
            raise InvalidSyntax(
                f"proposal: proposal body needs {length - 4} bytes, {end - start - 4} left"
            )
        _check_spi_size(protocol, spi_size, "proposal", allow_ike_empty=True)
        pos = start + 8
        if spi_size > pend - pos:
            raise InvalidSyntax(f"proposal: SPI needs {spi_size} bytes, {pend - pos} left")
        spi = data[pos : pos + spi_size]
        sub = _Reader(data, "proposal", pos + spi_size, pend)
        parse = Transform.parse_from
        transforms = [parse(sub, i == count - 1) for i in range(count)]
        if sub.pos != pend:
            raise InvalidSyntax(f"proposal: {pend - sub.pos} unexpected trailing bytes")
        r.pos = pend
        return cls(number, _PROTOCOLS.get(protocol, protocol), spi, transforms, reserved=reserved)

    def serialize(self, is_last: bool) -> bytes:
        """The proposal substructure (RFC 7296 §3.3.1): one struct call for its header."""
        spi = _bytes(self.spi, "proposal SPI")
        n = len(self.transforms)
        last = n - 1
        body = b"".join([t.serialize(i == last) for i, t in enumerate(self.transforms)])
        length = 8 + len(spi) + len(body)
        try:
            head = _PROPOSAL_HDR.pack(
                0 if is_last else 2, self.reserved, length, self.number, self.protocol_id,
                len(spi), n,
            )
        except struct.error as e:
            raise EncodeError(f"proposal field out of range: {e}") from None
        return b"".join((head, spi, body))


@dataclass
class SAPayload(Payload):
    """Security Association payload (RFC 7296 §3.3): one or more proposals."""

    payload_type: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes) -> SAPayload:
        """Parse the proposals (RFC 7296 §3.3).

        A peer sends the same SA payload for every SA it sets up, apart from the SPIs,
        so the decoded content of recently seen valid bodies, SPIs left out, is memoised
        (bounded, immutable values); a hit only builds fresh objects with this body's
        SPIs.  The SPI bytes are never validated beyond their size, which the memo key
        (the body without the SPI bytes, proposal headers included) holds.
        """
        key, spis = _sa_memo_key(body) if type(body) is bytes else (None, None)
        memo = _SA_MEMO.get(key) if key is not None else None
        if memo is not None and spis is not None:
            # the objects are built only if ``proposals`` is read (__getattr__); the
            # engine reads ``proposal_tuples()`` instead (issue 18)
            sa = cls.__new__(cls)
            sa.critical = False
            sa.header_reserved = 0
            sa.__dict__["_memo"] = (memo, spis)
            return sa
        if type(body) is bytes and len(body) > _SA_MEMO_BODY_MAX:
            # too large to memoise (Libreswan's default offer is ~530 bytes): read only
            # what the engine matches, and build the objects if ``proposals`` is read (a
            # hostile 64 KB SA payload of 5,000 transforms cost 14 ms as objects)
            plain = _plain_tuples(body)
            if plain is not None:
                sa = cls.__new__(cls)
                sa.critical = False
                sa.header_reserved = 0
                sa.__dict__["_plain"] = (body, plain)
                return sa
        proposals = cls.parse_objects(body)
        if key is not None and len(body) <= _SA_MEMO_BODY_MAX:
            if len(_SA_MEMO) >= _SA_MEMO_MAX:
                _SA_MEMO.pop(next(iter(_SA_MEMO)))  # oldest first: a bounded FIFO
            frozen = tuple(
                (
                    p.number,
                    p.protocol_id,
                    p.reserved,
                    tuple(
                        (t.type, t.id, t.reserved, tuple((a.type, a.value) for a in t.attributes))
                        for t in p.transforms
                    ),
                )
                for p in proposals
            )
            _SA_MEMO[key] = (frozen, _tuples_of(frozen))
        return cls(proposals)

    @staticmethod
    def parse_objects(body: bytes) -> list[Proposal]:
        """The proposals as objects, every field checked (RFC 7296 §3.3.1-§3.3.5)."""
        r = _Reader(body, "SA payload")
        proposals: list[Proposal] = []
        is_last = False
        while not is_last:
            # the "last substructure" byte tells whether more proposals follow
            r.need(1, "proposal last")
            is_last = body[r.pos] == 0
            proposals.append(Proposal.parse_from(r, is_last))
        r.done()
        return proposals

    def __getattr__(self, name: str) -> object:
        """``proposals`` of a payload parsed from the memo (or too large for it), built on
        first reading."""
        if name != "proposals":
            raise AttributeError(name)
        plain = self.__dict__.pop("_plain", None)
        if plain is not None:
            self.proposals = SAPayload.parse_objects(plain[0])
            return self.proposals
        memo = self.__dict__.get("_memo")
        if memo is None:
            raise AttributeError(name)
        (frozen, _), spis = memo
        proposals = [
            Proposal(
                n,
                pr,
                spi,
                [
                    Transform(tt, ti, [TransformAttribute(a, v) for a, v in at], reserved=tr)
                    for tt, ti, tr, at in ts
                ],
                reserved=res,
            )
            for (n, pr, res, ts), spi in zip(frozen, spis, strict=True)
        ]
        self.proposals = proposals
        del self.__dict__["_memo"]
        return proposals

    def proposal_tuples(self) -> list[tuple[int, int, bytes, list[tuple[int, int, int | None]]]]:
        """(number, protocol, SPI, [(type, ID, Key Length bits or None)]) per proposal:
        what the engine matches (``ike/codec.sa_tuples``), without payload objects when
        the body came from the memo."""
        plain = self.__dict__.get("_plain")
        if plain is not None:
            return [(n, pr, spi, list(ts)) for n, pr, spi, ts in plain[1]]
        memo = self.__dict__.get("_memo")
        if memo is not None:
            (_, tuples), spis = memo
            return [(n, pr, spi, list(ts)) for (n, pr, ts), spi in zip(tuples, spis, strict=True)]
        return [
            (pr.number, int(pr.protocol_id), bytes(pr.spi),
             [(int(t.type), int(t.id), _key_bits(t)) for t in pr.transforms])
            for pr in self.proposals
        ]

    def serialize(self) -> bytes:
        n = len(self.proposals)
        return b"".join(p.serialize(i == n - 1) for i, p in enumerate(self.proposals))


# Distinct SA payload bodies remembered by SAPayload.parse, and the largest body memoised
# (Libreswan's default IKE proposal list is ~530 bytes).  Worst case, with bodies made of
# minimal transforms, the memo holds ~1.5 MB (measured with tracemalloc).
_SA_MEMO_MAX = 64
_SA_MEMO_BODY_MAX = 2048
# One memoised proposal: (number, protocol ID, reserved, transforms), each transform
# (type, ID, reserved, attributes), each attribute (type, value).
_FrozenTransform = tuple[int, int, int, tuple[tuple[int, int | bytes], ...]]
_FrozenProposal = tuple[int, int, int, tuple[_FrozenTransform, ...]]
# (number, protocol, ((type, ID, Key Length bits or None), ...)) per proposal
_TupleProposal = tuple[int, int, tuple[tuple[int, int, int | None], ...]]
_SA_MEMO: dict[bytes, tuple[tuple[_FrozenProposal, ...], tuple[_TupleProposal, ...]]] = {}


def _key_bits(t: Transform) -> int | None:
    """The first TV Key Length attribute (RFC 7296 §3.3.5) of a transform, or None."""
    for a in t.attributes:
        if a.type == _KEY_LENGTH and isinstance(a.value, int):
            return a.value
    return None


def _plain_tuples(body: bytes
                  ) -> list[tuple[int, int, bytes, tuple[tuple[int, int, int | None], ...]]] | None:
    """(number, protocol, SPI, ((type, ID, Key Length bits or None), ...)) per proposal of
    a well-formed SA payload body; None for anything ``Proposal.parse_from`` would refuse
    and for a TLV attribute (that parser then reads it or gives the error).  No object
    per transform."""
    n = len(body)
    pos = 0
    out = []
    hdr, thdr, ahdr = _PROPOSAL_HDR.unpack_from, _TRANSFORM_HDR.unpack_from, _ATTR_HDR.unpack_from
    last = 2
    while last:
        if n - pos < 8:
            return None
        last, _res, length, number, protocol, spi_size, count = hdr(body, pos)
        pend = pos + length
        if last not in (0, 2) or length < 8 + spi_size or pend > n:
            return None
        if protocol == ProtocolID.IKE:
            if spi_size not in (0, 8):
                return None
        elif protocol in (ProtocolID.AH, ProtocolID.ESP) and spi_size != 4:
            return None
        p = pos + 8 + spi_size
        spi = body[pos + 8 : p]
        ts: list[tuple[int, int, int | None]] = []
        final = count - 1
        for i in range(count):
            if pend - p < 8:
                return None
            tlast, _r1, tlen, ttype, _r2, tid = thdr(body, p)
            tend = p + tlen
            if tlast != (0 if i == final else 3) or tlen < 8 or tend > pend:
                return None
            bits = None
            q = p + 8
            while q < tend:
                if tend - q < 4:
                    return None
                a, v = ahdr(body, q)
                if not a & 0x8000:
                    return None
                if a == 0x8000 | _KEY_LENGTH and bits is None:
                    bits = v
                q += 4
            ts.append((ttype, tid, bits))
            p = tend
        if p != pend:
            return None
        out.append((number, protocol, spi, tuple(ts)))
        pos = pend
    if pos != n:
        return None
    return out


def _tuples_of(frozen: tuple[_FrozenProposal, ...]) -> tuple[_TupleProposal, ...]:
    out = []
    for n, pr, _res, ts in frozen:
        tl = []
        for tt, ti, _tr, at in ts:
            bits = next((v for a, v in at if a == _KEY_LENGTH and isinstance(v, int)), None)
            tl.append((int(tt), int(ti), bits))
        out.append((n, int(pr), tuple(tl)))
    return tuple(out)


def _sa_memo_key(body: bytes) -> tuple[bytes | None, list[bytes] | None]:
    """``body`` without its proposals' SPI bytes, and those SPIs; (None, None) when the
    proposal headers do not even frame the body (RFC 7296 §3.3.1)."""
    n = len(body)
    if n > _SA_MEMO_BODY_MAX:
        return None, None
    pos = 0
    parts: list[bytes] = []
    spis: list[bytes] = []
    last = 2
    while last:
        if n - pos < 8:
            return None, None
        last, _, length, _, _, spi_size, _ = _PROPOSAL_HDR.unpack_from(body, pos)
        if length < 8 + spi_size or pos + length > n or len(spis) >= 256:
            return None, None
        parts.append(body[pos : pos + 8])
        spis.append(body[pos + 8 : pos + 8 + spi_size])
        parts.append(body[pos + 8 + spi_size : pos + length])
        pos += length
    if pos != n:
        return None, None
    return b"".join(parts), spis


# --------------------------------------------------------------------------- KE / ID / CERT / AUTH


@dataclass
class KEPayload(Payload):
    """Key Exchange payload (RFC 7296 §3.4): group number and public value."""

    payload_type: ClassVar[int] = PayloadType.KE
    group: int = 0
    data: bytes = b""
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> KEPayload:
        if len(body) > 4:  # the common case: one struct call, no reader
            group, reserved = _U16X2.unpack_from(body, 0)
            return cls(group, body[4:], reserved=reserved)
        r = _Reader(body, "KE payload")
        group = r.u16("DH group")
        reserved = r.u16("reserved")
        data = r.rest()
        _check(len(data) > 0, "KE payload: empty key exchange data")
        return cls(group, data, reserved=reserved)

    def serialize(self) -> bytes:
        return (
            _u16(self.group, "group") + _u16(self.reserved, "reserved") + _bytes(self.data, "data")
        )

    def __repr__(self) -> str:
        return f"KEPayload(group={self.group}, data={_hexrepr(self.data)})"


_ID_SIZES: dict[int, int] = {IDType.ID_IPV4_ADDR: 4, IDType.ID_IPV6_ADDR: 16}


@dataclass
class IDPayload(Payload):
    """Identification payload, IDi or IDr (RFC 7296 §3.5).

    ``payload_type`` says which; it defaults to IDi.
    """

    id_type: int = IDType.ID_FQDN
    data: bytes = b""
    payload_type: int = field(default=PayloadType.IDi, kw_only=True)
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> IDPayload:
        if len(body) > 4:  # the common case: one struct call, no reader
            word = _U32.unpack_from(body, 0)[0]
            id_type = word >> 24
            data = body[4:]
            size = _ID_SIZES.get(id_type)
            if size is not None and len(data) != size:
                raise InvalidSyntax(f"ID payload: type {id_type} needs {size} bytes")
            return cls(_ID_TYPES.get(id_type, id_type), data, reserved=word & 0xFFFFFF)
        r = _Reader(body, "ID payload")
        id_type = r.u8("ID type")
        reserved = r.u24("reserved")
        data = r.rest()
        size = _ID_SIZES.get(id_type)
        if size is not None:
            _check(len(data) == size, f"ID payload: type {id_type} needs {size} bytes")
        elif id_type != IDType.ID_NULL:
            _check(len(data) > 0, f"ID payload: type {id_type} with empty data")
        return cls(_ID_TYPES.get(id_type, id_type), data, reserved=reserved)

    def serialize(self) -> bytes:
        return (
            _u8(self.id_type, "ID type")
            + _u24(self.reserved, "reserved")
            + _bytes(self.data, "data")
        )

    @property
    def address(self) -> IPAddress | None:
        """The address of an ID_IPV4_ADDR / ID_IPV6_ADDR identity."""
        if self.id_type == IDType.ID_IPV4_ADDR and len(self.data) == 4:
            return ipaddress.IPv4Address(self.data)
        if self.id_type == IDType.ID_IPV6_ADDR and len(self.data) == 16:
            return ipaddress.IPv6Address(self.data)
        return None


@dataclass
class CertPayload(Payload):
    """Certificate payload (RFC 7296 §3.6)."""

    payload_type: ClassVar[int] = PayloadType.CERT
    encoding: int = CertEncoding.X509_SIGNATURE
    data: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> CertPayload:
        r = _Reader(body, "CERT payload")
        enc = r.u8("encoding")
        return cls(enum_or_int(CertEncoding, enc), r.rest())

    def serialize(self) -> bytes:
        return _u8(self.encoding, "encoding") + _bytes(self.data, "data")

    def __repr__(self) -> str:
        return f"CertPayload(encoding={self.encoding!r}, data={_hexrepr(self.data)})"


@dataclass
class CertReqPayload(Payload):
    """Certificate Request payload (RFC 7296 §3.7); for X.509, ``data`` is SHA-1 CA key hashes."""

    payload_type: ClassVar[int] = PayloadType.CERTREQ
    encoding: int = CertEncoding.X509_SIGNATURE
    data: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> CertReqPayload:
        r = _Reader(body, "CERTREQ payload")
        enc = r.u8("encoding")
        return cls(enum_or_int(CertEncoding, enc), r.rest())

    def serialize(self) -> bytes:
        return _u8(self.encoding, "encoding") + _bytes(self.data, "data")

    @property
    def ca_hashes(self) -> list[bytes]:
        """The 20-byte SHA-1 hashes of CA public keys (X.509 encodings)."""
        return [self.data[i : i + 20] for i in range(0, len(self.data) - 19, 20)]


@dataclass
class AuthPayload(Payload):
    """Authentication payload (RFC 7296 §3.8; RFC 7427 for method 14)."""

    payload_type: ClassVar[int] = PayloadType.AUTH
    method: int = 0
    data: bytes = b""
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> AuthPayload:
        if len(body) > 4:  # the common case: one struct call, no reader
            word = _U32.unpack_from(body, 0)[0]
            method = word >> 24
            return cls(_AUTH_METHODS.get(method, method), body[4:], reserved=word & 0xFFFFFF)
        r = _Reader(body, "AUTH payload")
        method = r.u8("auth method")
        reserved = r.u24("reserved")
        data = r.rest()
        _check(len(data) > 0, "AUTH payload: empty authentication data")
        return cls(_AUTH_METHODS.get(method, method), data, reserved=reserved)

    def serialize(self) -> bytes:
        return (
            _u8(self.method, "method") + _u24(self.reserved, "reserved") + _bytes(self.data, "data")
        )

    def __repr__(self) -> str:
        return f"AuthPayload(method={self.method!r}, data=<{len(self.data)} bytes>)"


@dataclass
class NoncePayload(Payload):
    """Nonce payload (RFC 7296 §3.9): 16 to 256 bytes."""

    payload_type: ClassVar[int] = PayloadType.NONCE
    data: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> NoncePayload:
        _check(
            NONCE_MIN <= len(body) <= NONCE_MAX,
            f"Nonce payload: {len(body)} bytes, must be {NONCE_MIN}..{NONCE_MAX} (RFC 7296 §3.9)",
        )
        return cls(body)

    def serialize(self) -> bytes:
        return _bytes(self.data, "nonce")


# --------------------------------------------------------------------------- N / D / V


def _check_notify_spi(protocol_id: int, spi_size: int) -> None:
    """RFC 7296 §3.10: an empty SPI goes with any (ignored) protocol; otherwise sizes match."""
    if spi_size == 0:
        return
    if protocol_id == ProtocolID.IKE:
        _check(spi_size == 8, f"Notify: SPI size {spi_size} for IKE")
    elif protocol_id in (ProtocolID.AH, ProtocolID.ESP):
        _check(spi_size == 4, f"Notify: SPI size {spi_size} for protocol {protocol_id}")
    else:
        raise InvalidSyntax(f"Notify: SPI of {spi_size} bytes with protocol {protocol_id}")


@dataclass
class NotifyPayload(Payload):
    """Notify payload (RFC 7296 §3.10).

    ``NotifyPayload(notify_type=NotifyType.COOKIE, data=cookie)``; ``protocol_id``
    and ``spi`` default to none.
    """

    payload_type: ClassVar[int] = PayloadType.NOTIFY
    protocol_id: int = ProtocolID.NONE
    spi: bytes = b""
    notify_type: int = 0
    data: bytes = b""

    @property
    def is_error(self) -> bool:
        """RFC 7296 §3.10.1: types below 16384 are errors."""
        return self.notify_type < 16384

    @classmethod
    def parse(cls, body: bytes) -> NotifyPayload:
        """Parse a Notify body (RFC 7296 §3.10); one struct call for the fixed part."""
        if len(body) >= 4:
            protocol, spi_size, ntype = _NOTIFY_HDR.unpack_from(body, 0)
            _check_notify_spi(protocol, spi_size)
            if 4 + spi_size > len(body):
                raise InvalidSyntax(
                    f"Notify payload: SPI needs {spi_size} bytes, {len(body) - 4} left"
                )
            return cls(
                _PROTOCOLS.get(protocol, protocol),
                body[4 : 4 + spi_size],
                _NOTIFY_TYPES.get(ntype, ntype),
                body[4 + spi_size :],
            )
        r = _Reader(body, "Notify payload")
        protocol = r.u8("protocol id")
        spi_size = r.u8("SPI size")
        ntype = r.u16("notify type")
        _check_notify_spi(protocol, spi_size)
        spi = r.take(spi_size, "SPI")
        return cls(enum_or_int(ProtocolID, protocol), spi, enum_or_int(NotifyType, ntype), r.rest())

    def serialize(self) -> bytes:
        spi = _bytes(self.spi, "SPI")
        try:
            head = _NOTIFY_HDR.pack(self.protocol_id, len(spi), self.notify_type)
        except struct.error as e:
            raise EncodeError(f"Notify field out of range: {e}") from None
        return b"".join((head, spi, _bytes(self.data, "data")))


@dataclass
class DeletePayload(Payload):
    """Delete payload (RFC 7296 §3.11): the IKE SA (no SPIs) or AH/ESP SPIs of 4 bytes."""

    payload_type: ClassVar[int] = PayloadType.DELETE
    protocol_id: int = ProtocolID.IKE
    spi_size: int = 0
    spis: list[bytes] = field(default_factory=list)

    @classmethod
    def parse(cls, body: bytes) -> DeletePayload:
        r = _Reader(body, "Delete payload")
        protocol = r.u8("protocol id")
        spi_size = r.u8("SPI size")
        count = r.u16("SPI count")
        if protocol == ProtocolID.IKE:
            _check(spi_size == 0 and count == 0, "Delete: IKE SA delete carries no SPI")
        elif protocol in (ProtocolID.AH, ProtocolID.ESP):
            _check(spi_size == 4, f"Delete: SPI size {spi_size} for protocol {protocol}")
        else:
            raise InvalidSyntax(f"Delete: protocol {protocol}")
        _check(r.remaining == spi_size * count, "Delete: SPI count does not match the length")
        spis = [r.take(spi_size, "SPI") for _ in range(count)]
        return cls(enum_or_int(ProtocolID, protocol), spi_size, spis)

    def serialize(self) -> bytes:
        spis = [_bytes(s, "SPI") for s in self.spis]
        if any(len(s) != self.spi_size for s in spis):
            raise EncodeError("Delete: SPI of the wrong size")
        return (
            _u8(self.protocol_id, "protocol id")
            + _u8(self.spi_size, "SPI size")
            + _u16(len(spis), "SPI count")
            + b"".join(spis)
        )


@dataclass
class VendorIDPayload(Payload):
    """Vendor ID payload (RFC 7296 §3.12)."""

    payload_type: ClassVar[int] = PayloadType.VENDOR
    data: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> VendorIDPayload:
        return cls(body)

    def serialize(self) -> bytes:
        return _bytes(self.data, "data")


# --------------------------------------------------------------------------- TS


_TS_ADDR_SIZE: dict[int, int] = {TSType.IPV4_ADDR_RANGE: 4, TSType.IPV6_ADDR_RANGE: 16}
_TSTYPES = {int(m): m for m in TSType}
_SELECTOR_HDR = struct.Struct("!BBHHH")  # RFC 7296 §3.13.1


@dataclass
class TrafficSelector:
    """An IPv4 or IPv6 address-range traffic selector (RFC 7296 §3.13.1)."""

    ts_type: int
    ip_protocol: int
    start_port: int
    end_port: int
    start_addr: IPAddress
    end_addr: IPAddress

    @classmethod
    def make(
        cls,
        start_addr: IPAddress | str,
        end_addr: IPAddress | str,
        ip_protocol: int = 0,
        start_port: int = 0,
        end_port: int = 65535,
    ) -> TrafficSelector:
        """A selector whose type follows the address family."""
        a = ipaddress.ip_address(start_addr)
        b = ipaddress.ip_address(end_addr)
        tstype = TSType.IPV4_ADDR_RANGE if a.version == 4 else TSType.IPV6_ADDR_RANGE
        return cls(tstype, ip_protocol, start_port, end_port, a, b)

    def serialize(self) -> bytes:
        size = _TS_ADDR_SIZE.get(self.ts_type)
        if size is None:
            raise EncodeError(f"TrafficSelector: type {self.ts_type} is not an address range")
        a, b = self.start_addr.packed, self.end_addr.packed
        if len(a) != size or len(b) != size:
            raise EncodeError("TrafficSelector: address family does not match the type")
        try:
            head = _SELECTOR_HDR.pack(
                self.ts_type, self.ip_protocol, 8 + 2 * size, self.start_port, self.end_port
            )
        except struct.error as e:
            raise EncodeError(f"TrafficSelector field out of range: {e}") from None
        return b"".join((head, a, b))


@dataclass
class RawTrafficSelector:
    """A selector of another type (e.g. RFC 9478 TS_SECLABEL), kept as bytes.

    ``byte1`` is the octet after the type (reserved for TS_SECLABEL); ``data``
    what follows the 4-byte selector header.
    """

    ts_type: int
    data: bytes
    byte1: int = 0

    def serialize(self) -> bytes:
        data = _bytes(self.data, "selector data")
        return (
            _u8(self.ts_type, "TS type")
            + _u8(self.byte1, "TS byte 1")
            + _u16(4 + len(data), "selector length")
            + data
        )


def _parse_selector(r: _Reader) -> TrafficSelector | RawTrafficSelector:
    """One traffic selector (RFC 7296 §3.13.1); address ranges take one struct call."""
    data = r.data
    pos = r.pos
    if r.end - pos >= 8:
        ts_type, byte1, length, start_port, end_port = _SELECTOR_HDR.unpack_from(data, pos)
        size = _TS_ADDR_SIZE.get(ts_type)
        if size is not None:
            _check(length == 8 + 2 * size, f"TS: length {length} for selector type {ts_type}")
            if pos + length > r.end:
                raise InvalidSyntax(f"TS payload: selector needs {length} bytes")
            a = data[pos + 8 : pos + 8 + size]
            b = data[pos + 8 + size : pos + length]
            r.pos = pos + length
            if size == 4:
                return TrafficSelector(
                    _TSTYPES[ts_type], byte1, start_port, end_port,
                    ipaddress.IPv4Address(a), ipaddress.IPv4Address(b),
                )
            return TrafficSelector(
                _TSTYPES[ts_type], byte1, start_port, end_port,
                ipaddress.IPv6Address(a), ipaddress.IPv6Address(b),
            )
    ts_type = r.u8("TS type")
    byte1 = r.u8("IP protocol")
    length = r.u16("selector length")
    size = _TS_ADDR_SIZE.get(ts_type)
    if size is None:
        _check(length >= 4, f"TS: selector length {length} < 4")
        return RawTrafficSelector(
            enum_or_int(TSType, ts_type), r.take(length - 4, "selector"), byte1
        )
    _check(length == 8 + 2 * size, f"TS: length {length} for selector type {ts_type}")
    start_port = r.u16("start port")
    end_port = r.u16("end port")
    a = r.take(size, "start address")
    b = r.take(size, "end address")
    if size == 4:
        sa: IPAddress = ipaddress.IPv4Address(a)
        ea: IPAddress = ipaddress.IPv4Address(b)
    else:
        sa = ipaddress.IPv6Address(a)
        ea = ipaddress.IPv6Address(b)
    return TrafficSelector(TSType(ts_type), byte1, start_port, end_port, sa, ea)


# selector count, reserved (3 bytes), then one IPv4 address-range selector (§3.13.1)
_TS_ONE_V4 = struct.Struct("!IBBHHH4s4s")


@dataclass
class TSPayload(Payload):
    """Traffic Selector payload, TSi or TSr (RFC 7296 §3.13); ``payload_type`` says which."""

    selectors: list[TrafficSelector | RawTrafficSelector] = field(default_factory=list)
    payload_type: int = field(default=PayloadType.TSi, kw_only=True)
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> TSPayload:
        if len(body) == _TS_ONE_V4.size:  # one IPv4 range, the usual payload: one struct call
            head, ts_type, byte1, length, start_port, end_port, a, b = _TS_ONE_V4.unpack(body)
            if head >> 24 == 1 and ts_type == 7 and length == 16:  # TS_IPV4_ADDR_RANGE
                return cls([TrafficSelector(_TSTYPES[7], byte1, start_port, end_port,
                                            ipaddress.IPv4Address(a),
                                            ipaddress.IPv4Address(b))],
                           reserved=head & 0xFFFFFF)
        r = _Reader(body, "TS payload")
        count = r.u8("selector count")
        reserved = r.u24("reserved")
        # no selectors: well-formed (RFC 7296 §3.13 gives the count no minimum; strongSwan
        # 5.9.8 sends it when its selectors narrow to nothing): the engine answers
        # TS_UNACCEPTABLE and keeps the IKE SA, as Libreswan 5.2 does
        selectors = [_parse_selector(r) for _ in range(count)]
        r.done()
        return cls(selectors, reserved=reserved)

    def serialize(self) -> bytes:
        return (
            _u8(len(self.selectors), "selector count")
            + _u24(self.reserved, "reserved")
            + b"".join(s.serialize() for s in self.selectors)
        )


# --------------------------------------------------------------------------- SK / SKF


@dataclass
class SKPayload(Payload):
    """Encrypted and Authenticated payload (RFC 7296 §3.14; RFC 5282 for AEAD).

    ``body`` is IV ‖ ciphertext ‖ ICV; ``first_inner`` is the generic header's
    Next Payload field (the type of the first inner payload).  ``aad`` is set by
    the parser (the message from the IKE header through this payload's generic
    header) and is not part of equality.
    """

    payload_type: ClassVar[int] = PayloadType.SK
    first_inner: int = PayloadType.NONE
    body: bytes = b""
    aad: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> SKPayload:
        return cls(PayloadType.NONE, body)

    def serialize(self) -> bytes:
        return _bytes(self.body, "SK body")

    def __repr__(self) -> str:
        return f"SKPayload(first_inner={self.first_inner!r}, body=<{len(self.body)} bytes>)"


@dataclass
class SKFPayload(Payload):
    """Encrypted Fragment payload (RFC 7383 §2.5).

    ``aad`` covers the IKE header, this payload's generic header and the four
    fragment number/total bytes.  ``first_inner`` is meaningful in fragment 1 only.
    """

    payload_type: ClassVar[int] = PayloadType.SKF
    first_inner: int = PayloadType.NONE
    fragment_number: int = 1
    total_fragments: int = 1
    body: bytes = b""
    aad: bytes = field(default=b"", compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> SKFPayload:
        r = _Reader(body, "SKF payload")
        number = r.u16("fragment number")
        total = r.u16("total fragments")
        _check(
            1 <= number <= total,
            f"SKF: fragment {number} of {total} (RFC 7383 §2.5)",
        )
        return cls(PayloadType.NONE, number, total, r.rest())

    def serialize(self) -> bytes:
        return (
            _u16(self.fragment_number, "fragment number")
            + _u16(self.total_fragments, "total fragments")
            + _bytes(self.body, "SKF body")
        )

    def __repr__(self) -> str:
        return (
            f"SKFPayload(first_inner={self.first_inner!r}, fragment={self.fragment_number}/"
            f"{self.total_fragments}, body=<{len(self.body)} bytes>)"
        )


# --------------------------------------------------------------------------- CP / EAP / unknown


@dataclass
class CPAttribute:
    """A configuration attribute (RFC 7296 §3.15.1); ``value`` may be empty (a request)."""

    attr_type: int
    value: bytes = b""
    reserved_bit: int = field(default=0, kw_only=True, compare=False, repr=False)

    def serialize(self) -> bytes:
        if not 0 <= self.attr_type <= 0x7FFF:
            raise EncodeError(f"CP attribute type {self.attr_type} does not fit in 15 bits")
        value = _bytes(self.value, "CP attribute value")
        return (
            _u16((self.reserved_bit & 1) << 15 | self.attr_type, "attribute type")
            + _u16(len(value), "attribute length")
            + value
        )


@dataclass
class CPPayload(Payload):
    """Configuration payload (RFC 7296 §3.15)."""

    payload_type: ClassVar[int] = PayloadType.CP
    cfg_type: int = CFGType.CFG_REQUEST
    attributes: list[CPAttribute] = field(default_factory=list)
    reserved: int = field(default=0, kw_only=True, compare=False, repr=False)

    @classmethod
    def parse(cls, body: bytes) -> CPPayload:
        r = _Reader(body, "CP payload")
        cfg_type = r.u8("CFG type")
        reserved = r.u24("reserved")
        attrs: list[CPAttribute] = []
        while r.remaining:
            t = r.u16("attribute type")
            length = r.u16("attribute length")
            value = r.take(length, "attribute value")
            attrs.append(CPAttribute(enum_or_int(CPAttr, t & 0x7FFF), value, reserved_bit=t >> 15))
        return cls(enum_or_int(CFGType, cfg_type), attrs, reserved=reserved)

    def serialize(self) -> bytes:
        return (
            _u8(self.cfg_type, "CFG type")
            + _u24(self.reserved, "reserved")
            + b"".join(a.serialize() for a in self.attributes)
        )


@dataclass
class EAPPayload(Payload):
    """EAP payload (RFC 7296 §3.16): one EAP message whose own length must match."""

    payload_type: ClassVar[int] = PayloadType.EAP
    data: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> EAPPayload:
        r = _Reader(body, "EAP payload")
        r.u8("EAP code")
        r.u8("EAP identifier")
        length = r.u16("EAP length")
        _check(length == len(body), f"EAP: message length {length} != payload {len(body)}")
        return cls(body)

    def serialize(self) -> bytes:
        return _bytes(self.data, "EAP message")


@dataclass
class UnknownPayload(Payload):
    """A payload type this codec does not implement, kept so it round-trips (RFC 7296 §3.2)."""

    payload_type: int
    body: bytes = b""

    @classmethod
    def parse(cls, body: bytes) -> UnknownPayload:  # pragma: no cover - message layer builds it
        return cls(0, body)

    def serialize(self) -> bytes:
        return _bytes(self.body, "body")


@dataclass
class SerializedRun(Payload):
    """Consecutive payloads already serialized with their generic headers (RFC 7296 §3.2).

    For the parts of our own messages that do not change between SAs (issue 18: the
    IKE_SA_INIT answer's SA payload and capability notifies are made once per chosen
    transforms or capability set).  ``payload_type`` is the first payload's type, which
    the payload before the run names as its Next Payload; the message layer writes the
    Next Payload of the run's last generic header (at offset ``last``) when it
    serializes the chain.  Made with :meth:`of`; never produced by parsing.
    """

    payload_type: int
    chain: bytes = b""
    last: int = 0
    #: the Notify types of the run's Notify payloads, in order, for the engine's
    #: sent-notify counters (``ike/stats.py``); the bytes are not read again for them
    notifies: tuple[int, ...] = ()

    @classmethod
    def of(cls, parts: Sequence[tuple[int, bytes]] | Sequence[tuple[int, bytes, int]]
           ) -> SerializedRun:
        """A run of (payload type, body[, generic header flags]) in order; the bodies are
        what each payload's ``serialize()`` returns."""
        if not parts:
            raise EncodeError("an empty run of payloads")
        out: list[bytes] = []
        pos = 0
        last = 0
        n = len(parts)
        types = [part[0] for part in parts]
        for i, part in enumerate(parts):
            ptype = types[i]
            body = _bytes(part[1], "payload body")
            flags = cast(int, part[2]) if len(part) > 2 else 0
            length = 4 + len(body)
            if length > 0xFFFF:
                raise EncodeError(f"payload {ptype} of {length} bytes is too long")
            nxt = types[i + 1] if i + 1 < n else 0
            if not 0 <= nxt <= 0xFF or not 0 <= ptype <= 0xFF:
                raise EncodeError(f"payload type {nxt if i + 1 < n else ptype} out of range")
            if not 0 <= flags <= 0xFF:
                raise EncodeError(f"generic header flags {flags} out of range")
            last = pos
            out.append(_GENERIC_HDR.pack(nxt, flags, length))
            out.append(body)
            pos += length
        return cls(types[0], b"".join(out), last)

    def with_next(self, nxt: int) -> bytes:
        """The run's bytes with ``nxt`` as the Next Payload of its last generic header."""
        if not 0 <= nxt <= 0xFF:
            raise EncodeError(f"payload type {nxt} out of range")
        chain = self.chain
        last = self.last
        return b"".join((chain[:last], bytes((nxt,)), chain[last + 1 :]))

    @property
    def payload_types(self) -> list[int]:
        """The type of every payload in the run, in order."""
        types = [self.payload_type]
        chain = self.chain
        pos = 0
        while pos < self.last:
            nxt, _, length = _GENERIC_HDR.unpack_from(chain, pos)
            types.append(nxt)
            pos += length
        return types

    def serialize(self) -> bytes:
        raise EncodeError("a SerializedRun is written by the message layer, not alone")

    def __repr__(self) -> str:
        return f"SerializedRun(payload_types={self.payload_types!r}, chain=<{len(self.chain)} bytes>)"


#: Payload classes by type; IDi/IDr and TSi/TSr share a class.
PAYLOAD_CLASSES: dict[int, Callable[[bytes], Payload]] = {
    PayloadType.SA: SAPayload.parse,
    PayloadType.KE: KEPayload.parse,
    PayloadType.IDi: IDPayload.parse,
    PayloadType.IDr: IDPayload.parse,
    PayloadType.CERT: CertPayload.parse,
    PayloadType.CERTREQ: CertReqPayload.parse,
    PayloadType.AUTH: AuthPayload.parse,
    PayloadType.NONCE: NoncePayload.parse,
    PayloadType.NOTIFY: NotifyPayload.parse,
    PayloadType.DELETE: DeletePayload.parse,
    PayloadType.VENDOR: VendorIDPayload.parse,
    PayloadType.TSi: TSPayload.parse,
    PayloadType.TSr: TSPayload.parse,
    PayloadType.SK: SKPayload.parse,
    PayloadType.CP: CPPayload.parse,
    PayloadType.EAP: EAPPayload.parse,
    PayloadType.SKF: SKFPayload.parse,
}
