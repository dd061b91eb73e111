"""SerializedRun and encode_plain (issue 18) give the bytes the payload objects give."""

from __future__ import annotations

import pytest

from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp
from pypluto.wire.errors import EncodeError


def _notifies() -> list[wp.Payload]:
    return [wp.NotifyPayload(notify_type=N.IKEV2_FRAGMENTATION_SUPPORTED),
            wp.NotifyPayload(notify_type=N.SIGNATURE_HASH_ALGORITHMS,
                             data=bytes.fromhex("0002000300040005")),
            wp.VendorIDPayload(b"a vendor id"),
            wp.NotifyPayload(notify_type=N.CHILDLESS_IKEV2_SUPPORTED, critical=True)]


def _run(payloads: list[wp.Payload]) -> wp.SerializedRun:
    return wp.SerializedRun.of([(p.payload_type, p.serialize(), 0x80 if p.critical else 0)
                                for p in payloads])


@pytest.mark.parametrize("before", [[], [wp.KEPayload(31, bytes(32))]])
@pytest.mark.parametrize("after", [[], [wp.NoncePayload(bytes(32))],
                                   [wp.NotifyPayload(notify_type=N.COOKIE, data=b"c" * 8)]])
def test_a_run_serializes_as_its_payloads(before: list[wp.Payload],
                                          after: list[wp.Payload]) -> None:
    ns = _notifies()
    for k in range(1, len(ns) + 1):
        plain = [*before, *ns[:k], *after]
        run = [*before, _run(ns[:k]), *after]
        assert wm.serialize_payloads(run) == wm.serialize_payloads(plain)
        data = wm.encode_plain(b"i" * 8, b"r" * 8, 34, initiator=False, response=True,
                               message_id=0, payloads=run)
        assert data == wm.Message(b"i" * 8, b"r" * 8, 34, False, True, 0, plain).serialize()
        assert wm.parse_message(data).payloads == plain  # and parses back to them


def test_run_describes_itself_and_refuses_to_stand_alone() -> None:
    run = _run(_notifies())
    assert run.payload_type == PT.NOTIFY
    assert run.payload_types == [PT.NOTIFY, PT.NOTIFY, PT.VENDOR, PT.NOTIFY]
    assert repr(run) == f"SerializedRun(payload_types={run.payload_types!r}, chain=<{len(run.chain)} bytes>)"
    with pytest.raises(EncodeError):
        run.serialize()
    with pytest.raises(EncodeError):
        run.with_next(256)
    with pytest.raises(EncodeError):
        wp.SerializedRun.of([])
    with pytest.raises(EncodeError):
        wp.SerializedRun.of([(PT.VENDOR, bytes(0xFFFC))])
    with pytest.raises(EncodeError):
        wp.SerializedRun.of([(300, b"")])


def test_an_sk_payload_must_still_come_last() -> None:
    with pytest.raises(EncodeError):
        wm.serialize_payloads([wp.SKPayload(PT.IDi, b"x"), _run(_notifies())])
