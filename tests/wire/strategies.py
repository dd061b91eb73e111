"""Hypothesis strategies for valid IKEv2 payloads and messages (RFC 7296 §3)."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from pypluto.wire import (
    AuthPayload,
    CertPayload,
    CertReqPayload,
    CPAttribute,
    CPPayload,
    DeletePayload,
    EAPPayload,
    IDPayload,
    KEPayload,
    Message,
    NoncePayload,
    NotifyPayload,
    Payload,
    PayloadType,
    Proposal,
    ProtocolID,
    RawTrafficSelector,
    SAPayload,
    SKFPayload,
    SKPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TSPayload,
    TSType,
    UnknownPayload,
    VendorIDPayload,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
small_bytes = st.binary(max_size=40)
flags = st.fixed_dictionaries({"critical": st.booleans(), "header_reserved": st.integers(0, 0x7F)})


def _with_flags(p: Payload, f: dict) -> Payload:
    p.critical = f["critical"]
    p.header_reserved = f["header_reserved"]
    return p


attributes = st.lists(
    st.one_of(
        st.builds(TransformAttribute, st.integers(0, 0x7FFF), u16),
        st.builds(
            TransformAttribute, st.integers(0, 0x7FFF).filter(lambda t: t != 14), small_bytes
        ),
    ),
    max_size=3,
)
transforms = st.builds(Transform, st.integers(1, 12), u16, attributes, reserved=u16)


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    proto = draw(st.sampled_from([1, 2, 3, 4, 9]))
    if proto == 1:
        spi = draw(st.sampled_from([b"", b"\x01" * 8]))
    elif proto in (2, 3):
        spi = draw(st.binary(min_size=4, max_size=4))
    else:
        spi = draw(st.binary(max_size=9))
    return Proposal(draw(u8), proto, spi, draw(st.lists(transforms, max_size=5)), reserved=draw(u8))


sa = st.builds(SAPayload, st.lists(proposals(), min_size=1, max_size=3))
ke = st.builds(KEPayload, u16, st.binary(min_size=1, max_size=64), reserved=u16)


@st.composite
def ids(draw: st.DrawFn) -> IDPayload:
    t = draw(st.sampled_from([1, 2, 3, 5, 9, 10, 11, 12, 13, 77]))
    if t == 1:
        data = draw(st.binary(min_size=4, max_size=4))
    elif t == 5:
        data = draw(st.binary(min_size=16, max_size=16))
    elif t == 13:
        data = draw(st.binary(max_size=4))
    else:
        data = draw(st.binary(min_size=1, max_size=40))
    pt = draw(st.sampled_from([PayloadType.IDi, PayloadType.IDr]))
    return IDPayload(t, data, payload_type=pt, reserved=draw(st.integers(0, 0xFFFFFF)))


@st.composite
def notifies(draw: st.DrawFn) -> NotifyPayload:
    proto, spi = draw(
        st.one_of(
            st.tuples(u8, st.just(b"")),
            st.tuples(st.just(1), st.binary(min_size=8, max_size=8)),
            st.tuples(st.sampled_from([2, 3]), st.binary(min_size=4, max_size=4)),
        )
    )
    return NotifyPayload(proto, spi, draw(u16), draw(small_bytes))


@st.composite
def deletes(draw: st.DrawFn) -> DeletePayload:
    if draw(st.booleans()):
        return DeletePayload(ProtocolID.IKE, 0, [])
    proto = draw(st.sampled_from([2, 3]))
    return DeletePayload(proto, 4, draw(st.lists(st.binary(min_size=4, max_size=4), max_size=4)))


@st.composite
def selectors(draw: st.DrawFn) -> TrafficSelector | RawTrafficSelector:
    kind = draw(st.sampled_from([4, 6, 0]))
    if kind == 0:
        return RawTrafficSelector(draw(st.sampled_from([9, 10, 200])), draw(small_bytes), draw(u8))
    if kind == 4:
        a = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        b = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
        t = TSType.IPV4_ADDR_RANGE
    else:
        a = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        b = ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1)))
        t = TSType.IPV6_ADDR_RANGE
    return TrafficSelector(t, draw(u8), draw(u16), draw(u16), a, b)


ts = st.builds(
    TSPayload,
    st.lists(selectors(), min_size=1, max_size=3),
    payload_type=st.sampled_from([PayloadType.TSi, PayloadType.TSr]),
    reserved=st.integers(0, 0xFFFFFF),
)
cp = st.builds(
    CPPayload,
    u8,
    st.lists(
        st.builds(CPAttribute, st.integers(0, 0x7FFF), small_bytes, reserved_bit=st.integers(0, 1)),
        max_size=4,
    ),
    reserved=st.integers(0, 0xFFFFFF),
)


@st.composite
def eaps(draw: st.DrawFn) -> EAPPayload:
    rest = draw(small_bytes)
    return EAPPayload(bytes((draw(u8), draw(u8))) + (4 + len(rest)).to_bytes(2, "big") + rest)


unknown = st.builds(
    UnknownPayload,
    st.sampled_from([1, 2, 8, 49, 50, 54, 60, 128, 200, 255]),
    small_bytes,
)

plain_payloads = st.one_of(
    sa,
    ke,
    ids(),
    st.builds(CertPayload, u8, st.binary(max_size=60)),
    st.builds(CertReqPayload, u8, st.binary(max_size=60)),
    st.builds(
        AuthPayload, u8, st.binary(min_size=1, max_size=40), reserved=st.integers(0, 0xFFFFFF)
    ),
    st.builds(NoncePayload, st.binary(min_size=16, max_size=64)),
    notifies(),
    deletes(),
    st.builds(VendorIDPayload, small_bytes),
    ts,
    cp,
    eaps(),
    unknown,
)


@st.composite
def payload_with_flags(draw: st.DrawFn) -> Payload:
    p = draw(plain_payloads)
    f = draw(flags)
    if isinstance(p, UnknownPayload):
        f["critical"] = False  # a critical unknown payload is an error, tested separately
    return _with_flags(p, f)


inner_chains = st.lists(payload_with_flags(), max_size=6)


@st.composite
def encrypted_tail(draw: st.DrawFn) -> Payload | None:
    kind = draw(st.sampled_from(["none", "sk", "skf"]))
    if kind == "none":
        return None
    first = draw(st.sampled_from([0, 33, 35, 36, 41, 42]))
    body = draw(st.binary(max_size=48))
    if kind == "sk":
        return SKPayload(first, body)
    total = draw(st.integers(1, 5))
    return SKFPayload(first, draw(st.integers(1, total)), total, body)


@st.composite
def messages(draw: st.DrawFn) -> Message:
    payloads = draw(st.lists(payload_with_flags(), max_size=5))
    tail = draw(encrypted_tail())
    if tail is not None:
        payloads.append(tail)
    return Message(
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.binary(min_size=8, max_size=8)),
        draw(st.sampled_from([34, 35, 36, 37, 43, 44, 100])),
        draw(st.booleans()),
        draw(st.booleans()),
        draw(st.integers(0, 2**32 - 1)),
        payloads,
        higher_version=draw(st.booleans()),
        minor_version=draw(st.integers(0, 15)),
        reserved_flags=draw(st.sampled_from([0, 0x01, 0x80, 0xC7])),
    )
