"""The IKE header, payload chains, SK/SKF framing (RFC 7296 §3.1, §3.2, §3.14; RFC 7383)."""

from __future__ import annotations

import pytest

from pypluto.wire import (
    AuthPayload,
    DeletePayload,
    ExchangeType,
    IDPayload,
    InvalidMajorVersion,
    InvalidSyntax,
    Message,
    NotifyPayload,
    NotifyType,
    PayloadType,
    SKFPayload,
    SKPayload,
    TrafficSelector,
    TSPayload,
    UnknownPayload,
    UnsupportedCriticalPayload,
    VendorIDPayload,
    WireError,
    encode_sk_message,
    encode_skf_messages,
    open_sk,
    open_skf,
    parse_message,
    parse_payloads,
    peek_header,
    serialize_payloads,
)

from .helpers import ToyProtector, ike_sa_init_request

H = bytes.fromhex


def _header(next_payload: int, length: int, *, flags: int = 0x08, version: int = 0x20) -> bytes:
    return (
        H("0102030405060708")
        + bytes(8)
        + bytes((next_payload, version, 34, flags))
        + (0).to_bytes(4, "big")
        + length.to_bytes(4, "big")
    )


def test_header_layout() -> None:
    raw = Message(
        b"\x11" * 8, b"\x22" * 8, ExchangeType.INFORMATIONAL, True, True, 0x01020304
    ).serialize()
    assert raw == b"\x11" * 8 + b"\x22" * 8 + H("00202528") + H("01020304") + H("0000001c")
    h = peek_header(raw)
    assert (h.exchange, h.initiator, h.response, h.higher_version) == (37, True, True, False)
    assert (h.major_version, h.minor_version, h.message_id, h.length) == (2, 0, 0x01020304, 28)


def test_round_trip_sa_init() -> None:
    msg = ike_sa_init_request()
    raw = msg.serialize()
    back = parse_message(raw)
    assert back == msg and back.serialize() == raw
    assert back.header.next_payload == PayloadType.SA
    assert len(back.notifies()) == 3
    assert back.notify(NotifyType.NAT_DETECTION_SOURCE_IP).data == b"\x01" * 20  # type: ignore[union-attr]
    assert back.get(PayloadType.KE).group == 31  # type: ignore[union-attr]
    assert back.get(PayloadType.KE, NotifyPayload) is None
    assert len(back.get_all(PayloadType.NOTIFY)) == 3
    assert back.sk is None


def test_reserved_flags_minor_version_and_header_reserved_survive() -> None:
    # Openswan's lp81 capture sends flags 0x01 (a reserved bit, RFC 7296 §3.1: ignore)
    raw = bytearray(ike_sa_init_request().serialize())
    raw[17] = 0x2F  # minor version 15
    raw[19] = 0x09  # I + reserved bit 0
    raw[29] = 0x05  # reserved bits in the first payload's generic header
    msg = parse_message(bytes(raw))
    assert msg.initiator and msg.minor_version == 15
    assert msg.serialize() == bytes(raw)


def test_empty_message() -> None:
    raw = _header(0, 28)
    assert parse_message(raw).payloads == []
    assert parse_message(raw).serialize() == raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (_header(0, 28)[:27], "short header"),
        (_header(0, 29) + b"\x00", "trailing byte after the chain"),
        (_header(0, 30), "length larger than datagram"),
        (_header(0, 28) + b"\x00", "datagram longer than the header says"),
        (_header(43, 31) + H("000004"), "payload header cut"),
        (_header(43, 32) + H("00000003"), "payload length < 4"),
        (_header(43, 32) + H("00000005"), "payload length beyond the message"),
        (_header(43, 32) + H("2b000004"), "next payload announced, none follows"),
        (_header(41, 32) + H("00000004"), "empty notify body"),
    ],
)
def test_message_rejects(raw: bytes, why: str) -> None:
    with pytest.raises(InvalidSyntax):
        parse_message(raw)


def test_major_version() -> None:
    with pytest.raises(InvalidMajorVersion) as e:
        parse_message(_header(0, 28, version=0x10))
    assert e.value.notify == NotifyType.INVALID_MAJOR_VERSION
    assert e.value.header is not None and e.value.header.major_version == 1


def test_errors_carry_the_header() -> None:
    with pytest.raises(InvalidSyntax) as e:
        parse_message(_header(41, 32) + H("00000004"))
    assert e.value.notify == NotifyType.INVALID_SYNTAX
    assert e.value.header is not None and e.value.header.spi_i == H("0102030405060708")


def test_unknown_noncritical_payload_is_kept() -> None:
    raw = _header(200, 28 + 7 + 16) + H("2b000007") + b"abc" + H("00000010") + b"vendor-id..."
    msg = parse_message(raw)
    assert msg.payloads[0] == UnknownPayload(200, b"abc")
    assert isinstance(msg.payloads[1], VendorIDPayload)
    assert msg.serialize() == raw


@pytest.mark.parametrize("ptype", [200, 49, 54, 1])  # unknown, GSPM, PS (not implemented), IKEv1 SA
def test_unknown_critical_payload(ptype: int) -> None:
    raw = _header(ptype, 28 + 7) + H("00800007") + b"abc"
    with pytest.raises(UnsupportedCriticalPayload) as e:
        parse_message(raw)
    assert e.value.payload_type == ptype
    assert e.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD


def test_known_payload_with_critical_bit_is_parsed() -> None:
    # RFC 7296 §3.2: the critical bit applies only to payloads the receiver does not understand
    raw = _header(43, 28 + 8) + H("00800008") + b"vend"
    msg = parse_message(raw)
    assert msg.payloads == [VendorIDPayload(b"vend", critical=True)]
    assert msg.serialize() == raw


def test_sk_payload_must_be_last() -> None:
    sk = H("2b000008") + b"\x00" * 4  # SK, next = V (inner), body 4 bytes
    raw = _header(46, 28 + 8 + 8) + sk + H("00000008") + b"vend"
    with pytest.raises(InvalidSyntax, match="last"):
        parse_message(raw)


def test_sk_fields_and_aad() -> None:
    body = b"\x99" * 20
    raw = _header(43, 28 + 8 + 24) + H("2e000008") + b"vend" + H("27000018") + body
    msg = parse_message(raw)
    sk = msg.sk
    assert isinstance(sk, SKPayload)
    assert sk.first_inner == PayloadType.AUTH and sk.body == body
    assert sk.aad == raw[: 28 + 8 + 4]
    assert msg.serialize() == raw


def test_sk_inside_sk_is_rejected() -> None:
    with pytest.raises(InvalidSyntax):
        parse_payloads(PayloadType.SK, H("00000008") + b"abcd")
    with pytest.raises(InvalidSyntax):
        parse_payloads(PayloadType.SKF, H("0000000c00010001") + b"abcd")


def test_inner_chain_trailing_bytes() -> None:
    first, data = serialize_payloads([NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT)])
    assert parse_payloads(first, data)[0].notify_type == NotifyType.INITIAL_CONTACT  # type: ignore[attr-defined]
    with pytest.raises(InvalidSyntax):
        parse_payloads(first, data + b"\x00")
    with pytest.raises(InvalidSyntax):
        parse_payloads(PayloadType.NONE, b"\x00")


def _auth_inner() -> list:
    return [
        IDPayload(2, b"west.example.org", payload_type=PayloadType.IDi),
        AuthPayload(2, b"\x42" * 32),
        TSPayload([TrafficSelector.make("192.0.2.0", "192.0.2.255")], payload_type=PayloadType.TSi),
        TSPayload(
            [TrafficSelector.make("198.51.100.0", "198.51.100.255")], payload_type=PayloadType.TSr
        ),
    ]


def test_encode_sk_message_lengths_and_aad() -> None:
    prot = ToyProtector()
    inner = _auth_inner()
    raw = encode_sk_message(
        b"\x01" * 8,
        b"\x02" * 8,
        ExchangeType.IKE_AUTH,
        initiator=True,
        response=False,
        message_id=1,
        inner=inner,
        protector=prot,
    )
    assert int.from_bytes(raw[24:28], "big") == len(raw)
    msg = parse_message(raw)
    sk = msg.sk
    assert isinstance(sk, SKPayload) and sk.first_inner == PayloadType.IDi
    # RFC 5282 §5.1: associated data = IKE header ‖ SK generic header, with final lengths
    assert prot.seen_aad == [raw[:32]] == [sk.aad]
    assert open_sk(msg, prot) == inner
    assert msg.serialize() == raw


def test_encode_sk_message_with_outer_payloads() -> None:
    prot = ToyProtector()
    inner = [DeletePayload(1, 0, [])]
    outer = [VendorIDPayload(b"outer-vid")]
    raw = encode_sk_message(
        bytes(8),
        bytes(8),
        37,
        initiator=False,
        response=True,
        message_id=7,
        inner=inner,
        protector=prot,
        outer=outer,
    )
    msg = parse_message(raw)
    assert msg.payloads[0] == outer[0] and msg.response and not msg.initiator
    assert msg.sk is not None and msg.sk.aad == raw[: 28 + 4 + 9 + 4]
    assert open_sk(msg, prot) == inner


def test_encode_sk_empty_informational() -> None:
    prot = ToyProtector()
    raw = encode_sk_message(
        bytes(8),
        bytes(8),
        37,
        initiator=True,
        response=False,
        message_id=2,
        inner=[],
        protector=prot,
    )
    msg = parse_message(raw)
    assert msg.sk is not None and msg.sk.first_inner == PayloadType.NONE
    assert open_sk(msg, prot) == []


@pytest.mark.parametrize("fragment_size", [80, 100, 333, 1280])
def test_encode_skf_messages(fragment_size: int) -> None:
    prot = ToyProtector()
    inner = [*_auth_inner(), NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT, data=b"x" * 300)]
    frags = encode_skf_messages(
        b"\x01" * 8,
        b"\x02" * 8,
        ExchangeType.IKE_AUTH,
        initiator=True,
        response=False,
        message_id=1,
        inner=inner,
        protector=prot,
        fragment_size=fragment_size,
    )
    assert all(len(f) <= fragment_size for f in frags)
    msgs = [parse_message(f) for f in frags]
    skfs = [m.sk for m in msgs]
    assert all(isinstance(s, SKFPayload) for s in skfs)
    assert [s.fragment_number for s in skfs] == list(range(1, len(frags) + 1))  # type: ignore[union-attr]
    assert {s.total_fragments for s in skfs} == {len(frags)}  # type: ignore[union-attr]
    assert skfs[0].first_inner == PayloadType.IDi  # type: ignore[union-attr]
    assert all(s.first_inner == 0 for s in skfs[1:])  # type: ignore[union-attr]
    # RFC 7383 §2.5: the AAD includes the fragment number and total
    assert all(s.aad == f[:36] for s, f in zip(skfs, frags, strict=True))  # type: ignore[union-attr]
    assert open_skf(list(reversed(msgs)), prot) == inner
    assert [m.serialize() for m in msgs] == frags


def test_open_skf_incomplete() -> None:
    prot = ToyProtector()
    frags = encode_skf_messages(
        bytes(8),
        bytes(8),
        35,
        initiator=True,
        response=False,
        message_id=1,
        inner=_auth_inner(),
        protector=prot,
        fragment_size=90,
    )
    assert len(frags) > 2
    with pytest.raises(InvalidSyntax):
        open_skf([parse_message(f) for f in frags[1:]], prot)


def test_fragment_size_too_small() -> None:
    with pytest.raises(WireError):
        encode_skf_messages(
            bytes(8),
            bytes(8),
            35,
            initiator=True,
            response=False,
            message_id=1,
            inner=_auth_inner(),
            protector=ToyProtector(),
            fragment_size=40,
        )


def test_real_sk_protector_round_trip() -> None:
    import pypluto.crypto.sk as sk_mod  # our own module: a failed import fails the test
    from pypluto.crypto.registry import Encr, Integ

    for encr, bits, integ, ekey, ikey in [
        (Encr.AES_GCM_16, 256, None, bytes(36), b""),
        (Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128, bytes(16), bytes(32)),
    ]:
        prot = sk_mod.SKProtector(encr, bits, integ, ekey, ikey)
        inner = _auth_inner()
        raw = encode_sk_message(
            b"\x01" * 8,
            b"\x02" * 8,
            35,
            initiator=True,
            response=False,
            message_id=1,
            inner=inner,
            protector=prot,
        )
        assert open_sk(parse_message(raw), prot) == inner
        frags = encode_skf_messages(
            b"\x01" * 8,
            b"\x02" * 8,
            35,
            initiator=True,
            response=False,
            message_id=1,
            inner=inner,
            protector=prot,
            fragment_size=128,
        )
        assert all(len(f) <= 128 for f in frags)
        assert open_skf([parse_message(f) for f in frags], prot) == inner
