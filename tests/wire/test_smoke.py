"""First checks of the codec: build, serialize, parse back (RFC 7296 §3)."""

from __future__ import annotations

import ipaddress

from pypluto.wire import (
    ExchangeType,
    IDPayload,
    KEPayload,
    Message,
    NoncePayload,
    NotifyPayload,
    NotifyType,
    PayloadType,
    Proposal,
    SAPayload,
    TrafficSelector,
    Transform,
    TransformType,
    TSPayload,
    parse_message,
    parse_payloads,
    serialize_payloads,
)


def test_ike_sa_init_request_round_trip() -> None:
    sa = SAPayload(
        [Proposal(1, 1, b"", [Transform.make(TransformType.ENCR, 20, 256), Transform(4, 19)])]
    )
    msg = Message(
        b"\x01" * 8,
        bytes(8),
        ExchangeType.IKE_SA_INIT,
        initiator=True,
        payloads=[
            sa,
            KEPayload(19, b"\x04" * 64),
            NoncePayload(b"n" * 32),
            NotifyPayload(notify_type=NotifyType.IKEV2_FRAGMENTATION_SUPPORTED),
        ],
    )
    raw = msg.serialize()
    assert len(raw) == int.from_bytes(raw[24:28], "big")
    back = parse_message(raw)
    assert back == msg
    assert back.serialize() == raw
    assert back.get(PayloadType.SA, SAPayload) is not None
    transforms = back.get(PayloadType.SA, SAPayload).proposals[0].transforms  # type: ignore[union-attr]
    assert transforms[0].key_length == 256
    assert back.notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
    assert back.notify(NotifyType.COOKIE) is None


def test_inner_chain_keeps_idr_and_tsr_apart() -> None:
    ts = TrafficSelector.make("192.0.2.0", "192.0.2.255")
    inner = [
        IDPayload(2, b"west.example", payload_type=PayloadType.IDi),
        IDPayload(2, b"east.example", payload_type=PayloadType.IDr),
        TSPayload([ts], payload_type=PayloadType.TSi),
        TSPayload([ts], payload_type=PayloadType.TSr),
    ]
    first, data = serialize_payloads(inner)
    assert first == PayloadType.IDi
    back = parse_payloads(first, data)
    assert [p.payload_type for p in back] == [35, 36, 44, 45]
    assert back == inner
    assert back[2].selectors[0].end_addr == ipaddress.ip_address("192.0.2.255")  # type: ignore[attr-defined]
