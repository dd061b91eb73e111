"""At most 64 payloads per chain (wire/message.MAX_PAYLOADS), as Libreswan's 30.

RFC 7296 sets no limit; Libreswan 5.2 answers a message of more than 30 payloads with
INVALID_SYNTAX.  Unbounded, a 64 KB IKE_SA_INIT of 16,000 empty payloads cost 19 ms to
read and was answered (with a half-open SA keeping the 64 KB request).
"""

from __future__ import annotations

import struct

import pytest

from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.wire.errors import InvalidSyntax
from pypluto.wire.message import MAX_PAYLOADS, parse_message

from .harness import Net
from .test_hostile_establishment import _answers, _init_request, _no_state, _to_east
from .test_hostile_nat_mobike import _deliver, _protected, _sends, _up


def _with_extra(data: bytes, n: int, ptype: int = 200, item: bytes = b"") -> bytes:
    """``data`` with ``n`` more payloads of ``ptype`` (non-critical) at the chain's end."""
    hdr, body = bytearray(data[:28]), bytearray(data[28:])
    pos, nxt, last = 0, hdr[16], None
    while nxt:
        last = pos
        nxt = body[pos]
        pos += struct.unpack_from("!H", body, pos + 2)[0]
    assert last is not None
    body[last] = ptype
    for i in range(n):
        body += struct.pack("!BBH", ptype if i < n - 1 else 0, 0, 4 + len(item)) + item
    hdr[24:28] = struct.pack("!I", 28 + len(body))
    return bytes(hdr + body)


def test_parser_takes_64_payloads_and_refuses_65() -> None:
    data = _init_request(Net())
    base = len(parse_message(data).payloads)
    assert len(parse_message(_with_extra(data, MAX_PAYLOADS - base)).payloads) == MAX_PAYLOADS
    with pytest.raises(InvalidSyntax, match="more than 64 payloads"):
        parse_message(_with_extra(data, MAX_PAYLOADS - base + 1))


@pytest.mark.parametrize("ptype,item,n", [
    (200, b"", 16000),                                            # unknown, empty
    (41, struct.pack("!BBH", 0, 0, 40000), 8000),                 # unknown status notifies
    (43, b"abcd", 8000),                                          # Vendor IDs
    (41, struct.pack("!BBH", 0, 0, int(N.NAT_DETECTION_DESTINATION_IP)) + bytes(20), 100),
])
def test_init_with_too_many_payloads_gets_invalid_syntax_and_no_state(
        ptype: int, item: bytes, n: int) -> None:
    net = Net()
    acts = _to_east(net, _with_extra(_init_request(net), n, ptype, item))
    assert _answers(acts) == [N.INVALID_SYNTAX]
    _no_state(net)


def test_init_with_many_but_allowed_payloads_is_answered() -> None:
    net = Net()
    data = _init_request(net)
    extra = MAX_PAYLOADS - len(parse_message(data).payloads)
    acts = _to_east(net, _with_extra(data, extra, 43, b"abcd"))
    assert N.INVALID_SYNTAX not in _answers(acts) and _sends(acts)
    assert net.east.engine.n_halfopen == 1


def test_encrypted_request_with_too_many_payloads_gets_invalid_syntax() -> None:
    net, w, e = _up()
    many = [codec.notify(N.ADDITIONAL_IP4_ADDRESS, bytes([10, 0, i // 256, i % 256]))
            for i in range(MAX_PAYLOADS + 1)]
    (answer,) = _sends(_deliver(net, net.east, _protected(net, net.west, w, many),
                                e.local, e.remote))
    m = parse_message(answer.data)
    assert m.response and m.sk is not None
    inner = codec.decrypt(m.sk, w.prot_in)
    assert [p.notify_type for p in inner] == [N.INVALID_SYNTAX]
    assert e.state.name == "ESTABLISHED"
