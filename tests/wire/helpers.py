"""Test helpers for the wire codec: a toy SK protector and message builders."""

from __future__ import annotations

import hashlib
import hmac

from pypluto.wire import (
    ExchangeType,
    KEPayload,
    Message,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    Proposal,
    SAPayload,
    Transform,
    TransformType,
)


class ToyProtector:
    """Stand-in for crypto.sk.SKProtector with the same interface.

    Not a cipher: XOR with a fixed byte, an 8-byte "IV" counter, and a truncated
    HMAC over ``aad ‖ IV ‖ ciphertext`` as ICV.  Enough to check that the codec
    computes the lengths and the associated data the way RFC 7296 §3.14 says.
    """

    iv_size = 8
    icv_size = 12

    def __init__(self, key: bytes = b"k" * 16) -> None:
        self.key = key
        self.counter = 0
        self.seen_aad: list[bytes] = []

    def body_length(self, plaintext_len: int) -> int:
        return self.iv_size + plaintext_len + 1 + self.icv_size

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        self.counter += 1
        self.seen_aad.append(aad)
        iv = self.counter.to_bytes(8, "big")
        ct = bytes(b ^ 0x5A for b in plaintext + b"\x00")
        return iv + ct + hmac.new(self.key, aad + iv + ct, hashlib.sha256).digest()[:12]

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        if len(body) < self.iv_size + 1 + self.icv_size:
            raise ValueError("short")
        head, icv = body[: -self.icv_size], body[-self.icv_size :]
        want = hmac.new(self.key, aad + head, hashlib.sha256).digest()[:12]
        if not hmac.compare_digest(icv, want):
            raise ValueError("integrity check failed")
        pt = bytes(b ^ 0x5A for b in head[self.iv_size :])
        return pt[: len(pt) - 1 - pt[-1]]


def ike_sa_init_request() -> Message:
    """A plausible IKE_SA_INIT request (RFC 7296 §1.2)."""
    return Message(
        bytes.fromhex("0102030405060708"),
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        initiator=True,
        message_id=0,
        payloads=[
            SAPayload(
                [
                    Proposal(
                        1,
                        1,
                        b"",
                        [
                            Transform.make(TransformType.ENCR, 20, 256),
                            Transform(TransformType.PRF, 7),
                            Transform(TransformType.KE, 31),
                        ],
                    )
                ]
            ),
            KEPayload(31, bytes(range(32))),
            NoncePayload(bytes(range(100, 132))),
            NotifyPayload(notify_type=NotifyType.NAT_DETECTION_SOURCE_IP, data=b"\x01" * 20),
            NotifyPayload(notify_type=NotifyType.NAT_DETECTION_DESTINATION_IP, data=b"\x02" * 20),
            NotifyPayload(notify_type=NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        ],
    )


def seed_messages() -> list[Message]:
    """Valid messages covering every payload type, used as mutation seeds."""
    from pypluto.wire import (
        AuthPayload,
        CertPayload,
        CertReqPayload,
        CPAttribute,
        CPPayload,
        DeletePayload,
        EAPPayload,
        IDPayload,
        PayloadType,
        RawTrafficSelector,
        SKFPayload,
        SKPayload,
        TrafficSelector,
        TransformAttribute,
        TSPayload,
        UnknownPayload,
        VendorIDPayload,
    )

    spi_i, spi_r = bytes.fromhex("0102030405060708"), bytes.fromhex("1112131415161718")
    esp = Proposal(
        1,
        3,
        b"\xaa\xbb\xcc\xdd",
        [
            Transform.make(TransformType.ENCR, 12, 128),
            Transform(TransformType.INTEG, 12),
            Transform(TransformType.ESN, 0, [TransformAttribute(300, b"\x01\x02")]),
        ],
    )
    auth_payloads = [
        IDPayload(1, bytes([192, 0, 2, 1]), payload_type=PayloadType.IDi),
        CertPayload(4, bytes(range(40))),
        CertReqPayload(4, b"\x33" * 20),
        IDPayload(2, b"east.example", payload_type=PayloadType.IDr),
        AuthPayload(14, b"\x07" + bytes(20)),
        CPPayload(1, [CPAttribute(1), CPAttribute(8, bytes(17))]),
        SAPayload([esp]),
        TSPayload(
            [
                TrafficSelector.make("192.0.2.0", "192.0.2.255", 6, 0, 65535),
                TrafficSelector.make("2001:db8::", "2001:db8::ff"),
            ],
            payload_type=PayloadType.TSi,
        ),
        TSPayload([RawTrafficSelector(10, b"label\x00")], payload_type=PayloadType.TSr),
        NotifyPayload(3, b"\x01\x02\x03\x04", NotifyType.REKEY_SA),
    ]
    return [
        ike_sa_init_request(),
        Message(spi_i, spi_r, 35, True, False, 1, auth_payloads),
        Message(spi_i, spi_r, 35, False, True, 1, [EAPPayload(bytes.fromhex("0101000501"))]),
        Message(
            spi_i,
            spi_r,
            37,
            True,
            False,
            2,
            [
                DeletePayload(3, 4, [b"\x01\x02\x03\x04", b"\x05\x06\x07\x08"]),
                DeletePayload(1, 0, []),
                VendorIDPayload(b"pypluto"),
                UnknownPayload(200, b"opaque"),
            ],
        ),
        Message(spi_i, spi_r, 35, True, False, 1, [SKPayload(35, bytes(range(48)))]),
        Message(
            spi_i,
            spi_r,
            35,
            True,
            False,
            1,
            [VendorIDPayload(b"v"), SKFPayload(35, 1, 3, bytes(40))],
        ),
    ]
