"""Per-payload encoding and strictness (RFC 7296 §3.3-§3.16, RFC 7383 §2.5)."""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.wire import (
    AuthMethod,
    AuthPayload,
    CertEncoding,
    CertPayload,
    CertReqPayload,
    CFGType,
    CPAttr,
    CPAttribute,
    CPPayload,
    DeletePayload,
    EAPPayload,
    EncodeError,
    IDPayload,
    IDType,
    InvalidSyntax,
    KEPayload,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    PayloadType,
    Proposal,
    ProtocolID,
    RawTrafficSelector,
    SAPayload,
    SKFPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TransformType,
    TSPayload,
    TSType,
    VendorIDPayload,
)

H = bytes.fromhex

# --------------------------------------------------------------------------- SA

# One IKE proposal: ENCR AES-CBC (12) key length 128, PRF SHA2-256 (5), INTEG
# SHA2-256-128 (12), KE 14 -- laid out by hand from RFC 7296 §3.3.1/§3.3.2/§3.3.5.
SA_BODY = H(
    "0000002c"  # last proposal, reserved, length 44
    "01010004"  # proposal 1, IKE, SPI size 0, 4 transforms
    "0300000c"
    "0100000c"
    "800e0080"  # ENCR 12, key length 128 (TV)
    "03000008"
    "02000005"  # PRF 5
    "03000008"
    "0300000c"  # INTEG 12
    "00000008"
    "0400000e"  # KE 14, last transform
)


def test_sa_parse_fields() -> None:
    sa = SAPayload.parse(SA_BODY)
    (prop,) = sa.proposals
    assert (prop.number, prop.protocol_id, prop.spi) == (1, ProtocolID.IKE, b"")
    assert [(t.type, t.id) for t in prop.transforms] == [(1, 12), (2, 5), (3, 12), (4, 14)]
    assert prop.transforms[0].key_length == 128
    assert prop.transforms[1].key_length is None
    assert prop.transforms_of(TransformType.KE)[0].id == 14
    assert sa.serialize() == SA_BODY


def test_sa_build_matches_hand_layout() -> None:
    sa = SAPayload(
        [
            Proposal(
                1,
                ProtocolID.IKE,
                b"",
                [
                    Transform.make(TransformType.ENCR, 12, key_length=128),
                    Transform(TransformType.PRF, 5),
                    Transform(TransformType.INTEG, 12),
                    Transform(TransformType.KE, 14),
                ],
            )
        ]
    )
    assert sa.serialize() == SA_BODY


def test_sa_two_proposals_and_esp_spi() -> None:
    sa = SAPayload(
        [
            Proposal(1, ProtocolID.ESP, b"\x12\x34\x56\x78", [Transform(1, 20, [])]),
            Proposal(2, ProtocolID.ESP, b"\x9a\xbc\xde\xf0", [Transform(1, 12, [])]),
        ]
    )
    raw = sa.serialize()
    assert raw[0] == 2 and raw[raw[3] + 0] == 0  # "more" then "last" (RFC 7296 §3.3.1)
    assert SAPayload.parse(raw) == sa


def test_transform_tlv_attribute_round_trip() -> None:
    t = Transform(1, 12, [TransformAttribute(14, 256), TransformAttribute(99, b"\x01\x02\x03")])
    raw = SAPayload([Proposal(1, 1, b"", [t])]).serialize()
    back = SAPayload.parse(raw).proposals[0].transforms[0]
    assert back.attributes == t.attributes
    assert back.attributes[1].tv is False and back.key_length == 256


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "no proposals"),
        (SA_BODY[:-1], "truncated"),
        (SA_BODY + b"\x00", "trailing byte"),
        (H("02") + SA_BODY[1:], "last proposal says more follow"),
        (SA_BODY[:2] + H("002d") + SA_BODY[4:], "proposal length beyond the payload"),
        (SA_BODY[:2] + H("0007") + SA_BODY[4:], "proposal length below 8"),
        (SA_BODY[:7] + H("05") + SA_BODY[8:], "transform count too high"),
        (SA_BODY[:7] + H("03") + SA_BODY[8:], "transform count too low"),
        (SA_BODY[:6] + H("04") + SA_BODY[7:], "IKE SPI of 4 bytes"),
        (SA_BODY[:8] + H("00") + SA_BODY[9:], "first transform marked last"),
        (SA_BODY[:10] + H("000d") + SA_BODY[12:], "transform length overruns"),
        (SA_BODY[:10] + H("0007") + SA_BODY[12:], "transform length below 8"),
        (SA_BODY[:16] + H("000e0080") + SA_BODY[20:], "key length as TLV"),
        (SA_BODY[:10] + H("000b") + SA_BODY[12:], "attribute cut by transform length"),
    ],
)
def test_sa_rejects(body: bytes, why: str) -> None:
    with pytest.raises(InvalidSyntax):
        SAPayload.parse(body)


def test_esp_proposal_needs_4_byte_spi() -> None:
    raw = SAPayload([Proposal(1, ProtocolID.ESP, b"\x01\x02\x03\x04", [])]).serialize()
    bad = raw[:6] + b"\x08" + raw[7:] + b"\x00" * 4
    bad = bad[:2] + (len(bad)).to_bytes(2, "big") + bad[4:]
    with pytest.raises(InvalidSyntax, match="SPI size 8"):
        SAPayload.parse(bad)


# --------------------------------------------------------------------------- KE / ID / AUTH / nonce


def test_ke_layout() -> None:
    ke = KEPayload(19, b"\xaa" * 64)
    raw = ke.serialize()
    assert raw[:4] == H("00130000") and raw[4:] == b"\xaa" * 64
    assert KEPayload.parse(raw) == ke


def test_ke_needs_data() -> None:
    with pytest.raises(InvalidSyntax):
        KEPayload.parse(H("000e0000"))
    with pytest.raises(InvalidSyntax):
        KEPayload.parse(H("000e00"))


def test_ke_keeps_reserved_bits() -> None:
    raw = H("000e8001") + b"\x01"
    ke = KEPayload.parse(raw)
    assert ke == KEPayload(14, b"\x01")  # reserved bits are not part of equality
    assert ke.serialize() == raw


@pytest.mark.parametrize(
    ("id_type", "data"),
    [
        (IDType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
        (IDType.ID_IPV6_ADDR, ipaddress.IPv6Address("2001:db8::1").packed),
        (IDType.ID_FQDN, b"east.example.com"),
        (IDType.ID_RFC822_ADDR, b"user@example.com"),
        (IDType.ID_DER_ASN1_DN, H("3011310f300d06035504030c06706c75746f")),
        (IDType.ID_DER_ASN1_GN, H("8206706c75746f")),
        (IDType.ID_KEY_ID, b"\x01\x02"),
        (IDType.ID_FC_NAME, b"\x00" * 8),
        (IDType.ID_NULL, b""),
    ],
)
def test_id_types_round_trip(id_type: int, data: bytes) -> None:
    p = IDPayload(id_type, data, payload_type=PayloadType.IDr)
    raw = p.serialize()
    assert raw[0] == id_type and raw[1:4] == b"\x00\x00\x00" and raw[4:] == data
    back = IDPayload.parse(raw)
    assert (back.id_type, back.data) == (id_type, data)


def test_id_address_helper() -> None:
    assert IDPayload(1, bytes([192, 0, 2, 7])).address == ipaddress.ip_address("192.0.2.7")
    assert IDPayload(2, b"x").address is None


@pytest.mark.parametrize(
    "raw",
    [
        H("01000000c00002"),
        H("01000000c0000201ff"),
        H("05000000") + bytes(15),
        H("020000"),
        H("02000000"),
    ],
)
def test_id_rejects_bad_sizes(raw: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        IDPayload.parse(raw)


def test_cert_and_certreq() -> None:
    c = CertPayload(CertEncoding.X509_SIGNATURE, b"\x30\x82")
    assert c.serialize() == H("043082")
    assert CertPayload.parse(H("043082")) == c
    r = CertReqPayload(CertEncoding.X509_SIGNATURE, b"\x11" * 20 + b"\x22" * 20)
    assert CertReqPayload.parse(r.serialize()).ca_hashes == [b"\x11" * 20, b"\x22" * 20]
    with pytest.raises(InvalidSyntax):
        CertPayload.parse(b"")
    with pytest.raises(InvalidSyntax):
        CertReqPayload.parse(b"")


def test_auth_layout() -> None:
    a = AuthPayload(AuthMethod.DIGITAL_SIGNATURE, b"\x05sig")
    assert a.serialize() == H("0e000000") + b"\x05sig"
    assert AuthPayload.parse(a.serialize()) == a
    assert AuthPayload.parse(a.serialize()).method is AuthMethod.DIGITAL_SIGNATURE
    assert "sig" not in repr(a)  # AUTH data is not shown in reprs
    with pytest.raises(InvalidSyntax):
        AuthPayload.parse(H("02000000"))


@pytest.mark.parametrize("size", [15, 257, 0])
def test_nonce_size_limits(size: int) -> None:
    with pytest.raises(InvalidSyntax, match="3.9"):
        NoncePayload.parse(bytes(size))


@pytest.mark.parametrize("size", [16, 32, 256])
def test_nonce_sizes_ok(size: int) -> None:
    assert NoncePayload.parse(bytes(size)).data == bytes(size)


# --------------------------------------------------------------------------- N / D / V


def test_notify_defaults_and_layout() -> None:
    n = NotifyPayload(notify_type=NotifyType.INITIAL_CONTACT)
    assert n.serialize() == H("00004000")
    assert not n.is_error
    rekey = NotifyPayload(ProtocolID.ESP, b"\xde\xad\xbe\xef", NotifyType.REKEY_SA)
    assert rekey.serialize() == H("03044009deadbeef")
    back = NotifyPayload.parse(rekey.serialize())
    assert back == rekey and back.notify_type is NotifyType.REKEY_SA
    inv = NotifyPayload.parse(H("01000011000e"))  # INVALID_KE_PAYLOAD, group 14
    assert inv.is_error and inv.data == b"\x00\x0e"
    unknown = NotifyPayload.parse(H("0000ffff"))  # private-use status type
    assert unknown.notify_type == 0xFFFF


@pytest.mark.parametrize(
    "raw",
    [
        H("000140000a"),
        H("030840090102030405060708"),
        H("01044009deadbeef"),
        H("0304400901"),
        H("000040"),
        H("07044009deadbeef"),
    ],
)
def test_notify_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        NotifyPayload.parse(raw)


def test_delete() -> None:
    d = DeletePayload(ProtocolID.ESP, 4, [b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"])
    assert d.serialize() == H("030400020102030405060708")
    assert DeletePayload.parse(d.serialize()) == d
    ike = DeletePayload(ProtocolID.IKE, 0, [])
    assert ike.serialize() == H("01000000")
    assert DeletePayload.parse(H("01000000")) == ike
    with pytest.raises(EncodeError):
        DeletePayload(ProtocolID.ESP, 4, [b"\x01"]).serialize()


@pytest.mark.parametrize(
    "raw",
    [
        H("03040002010203040506"),
        H("0304000101020304ff"),
        H("01080001") + bytes(8),
        H("03080001") + bytes(8),
        H("090000"),
        H("09000000"),
    ],
)
def test_delete_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        DeletePayload.parse(raw)


def test_vendor_id() -> None:
    v = VendorIDPayload(b"OEplutounit0")
    assert VendorIDPayload.parse(v.serialize()) == v


# --------------------------------------------------------------------------- TS


def test_ts_ipv4_layout() -> None:
    ts = TrafficSelector.make("192.0.2.0", "192.0.2.255", ip_protocol=6, start_port=80, end_port=80)
    p = TSPayload([ts], payload_type=PayloadType.TSr)
    raw = p.serialize()
    assert raw == H("010000000706001000500050c0000200c00002ff")
    back = TSPayload.parse(raw)
    assert back.selectors == [ts]
    assert back.selectors[0].ts_type is TSType.IPV4_ADDR_RANGE


def test_ts_ipv6_and_mixed() -> None:
    a = TrafficSelector.make("2001:db8::", "2001:db8::ffff")
    b = TrafficSelector.make("198.51.100.1", "198.51.100.1")
    raw = TSPayload([a, b]).serialize()
    assert raw[4:8] == H("08000028")
    assert TSPayload.parse(raw).selectors == [a, b]


def test_ts_payload_without_selectors_parses_to_an_empty_list() -> None:
    """Zero selectors is well-formed (§3.13 sets no minimum; strongSwan 5.9.8 sends it
    when its selectors narrow to nothing): the engine answers TS_UNACCEPTABLE."""
    p = TSPayload.parse(H("00000000"))
    assert p.selectors == [] and p.serialize() == H("00000000")


def test_ts_seclabel_kept_raw() -> None:
    label = RawTrafficSelector(TSType.SECLABEL, b"system_u:object_r:ipsec_spd_t:s0\x00")
    raw = TSPayload([label]).serialize()
    back = TSPayload.parse(raw)
    assert back.selectors == [label] and back.serialize() == raw


@pytest.mark.parametrize(
    "raw",
    [
        H("02000000070000100000ffff00000000ffffffff"),  # count 2, one present
        H("01000000070000280000ffff00000000ffffffff"),  # IPv4 with v6 length
        H("01000000080000100000ffff00000000ffffffff"),  # IPv6 with v4 length
        H("01000000070000100000ffff00000000ffffff"),  # truncated
        H("01000000070000100000ffff00000000ffffffff00"),  # trailing byte
        H("010000000a000003"),  # raw selector length < 4
    ],
)
def test_ts_rejects(raw: bytes) -> None:
    with pytest.raises(InvalidSyntax):
        TSPayload.parse(raw)


def test_ts_wrong_family_does_not_encode() -> None:
    bad = TrafficSelector(
        TSType.IPV6_ADDR_RANGE,
        0,
        0,
        65535,
        ipaddress.ip_address("192.0.2.1"),
        ipaddress.ip_address("192.0.2.2"),
    )
    with pytest.raises(EncodeError):
        TSPayload([bad]).serialize()


# --------------------------------------------------------------------------- CP / EAP / SKF


def test_cp_layout() -> None:
    cp = CPPayload(
        CFGType.CFG_REQUEST,
        [CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS), CPAttribute(CPAttr.INTERNAL_IP4_DNS)],
    )
    assert cp.serialize() == H("010000000001000000030000")
    reply = CPPayload(
        CFGType.CFG_REPLY, [CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, bytes([192, 0, 2, 10]))]
    )
    assert CPPayload.parse(reply.serialize()) == reply
    with pytest.raises(InvalidSyntax):
        CPPayload.parse(H("0200000000010004c00002"))
    with pytest.raises(InvalidSyntax):
        CPPayload.parse(H("020000"))


def test_cp_reserved_bit_round_trip() -> None:
    raw = H("0100000080010000")
    cp = CPPayload.parse(raw)
    assert cp.attributes[0].attr_type == CPAttr.INTERNAL_IP4_ADDRESS
    assert cp.serialize() == raw


def test_eap_length_must_match() -> None:
    msg = H("0201000501")  # EAP Response, id 1, length 5, type Identity
    assert EAPPayload.parse(msg).data == msg
    with pytest.raises(InvalidSyntax):
        EAPPayload.parse(H("0201000601"))
    with pytest.raises(InvalidSyntax):
        EAPPayload.parse(H("0201"))


def test_skf_numbers() -> None:
    f = SKFPayload.parse(H("00020003") + b"body")
    assert (f.fragment_number, f.total_fragments, f.body) == (2, 3, b"body")
    assert f.serialize() == H("00020003") + b"body"
    for bad in (H("00000003"), H("00040003"), H("0001"), H("00010000")):
        with pytest.raises(InvalidSyntax):
            SKFPayload.parse(bad)


def test_encode_errors_are_wire_errors() -> None:
    with pytest.raises(EncodeError):
        KEPayload(70000, b"x").serialize()
    with pytest.raises(EncodeError):
        NotifyPayload(notify_type=-1).serialize()
    with pytest.raises(EncodeError):
        TransformAttribute(14, 1 << 16).serialize()


def test_ts_payload_one_ipv4_range_fast_path_equals_general_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A TS payload of one IPv4 range takes one struct call (issue 18): the same payload,
    or the same error, as the general parser for it and for every 1-2 byte mutation."""
    import random
    import struct

    from pypluto.wire import payloads as wp

    fast = wp._TS_ONE_V4

    def parsed(st: struct.Struct, body: bytes) -> object:
        monkeypatch.setattr(wp, "_TS_ONE_V4", st)
        try:
            p = wp.TSPayload.parse(body)
        except Exception as e:  # noqa: BLE001 - compared, not swallowed
            return (type(e).__name__, str(e))
        return (p, p.reserved, [tuple(map(type, vars(s).values())) for s in p.selectors])

    base = bytes.fromhex("01000000" "07000010" "0000ffff" "c6336400" "c63364ff")
    rnd = random.Random(18)
    bodies = [base]
    for _ in range(3000):
        b = bytearray(base)
        for _ in range(rnd.randint(1, 2)):
            b[rnd.randrange(len(b))] = rnd.choice([0, 1, 2, 6, 7, 8, 16, 255, rnd.randrange(256)])
        bodies.append(bytes(b))
    ok = 0
    for body in bodies:
        got = parsed(fast, body)
        assert got == parsed(struct.Struct("!Q"), body), body.hex()  # another size: general
        ok += not isinstance(got[0], str)
    assert ok > 1000  # most mutations still parse: the fast path was taken
