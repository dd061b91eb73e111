"""The work-saving paths of issue 18 give what the long paths give.

Lazy log text, the SA payload memo without objects, the memo of ``proposals.choose``,
the directly packed SK message, the TS list kept on its payload, and the AEAD built
straight from cryptography in ``SKProtector``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os

import pytest

from pypluto.crypto.errors import IntegrityError
from pypluto.crypto.sk import SKProtector
from pypluto.iana import Encr, Integ, ProtocolID
from pypluto.ike import codec, proposals
from pypluto.ike.actions import Endpoint, Log
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp


class ToyProtector:
    """Not a cipher: XOR and an HMAC ICV, enough to check framing (as tests/wire does)."""

    def body_length(self, plaintext_len: int) -> int:
        return 8 + plaintext_len + 1 + 12

    def encrypt(self, aad: bytes, plaintext: bytes) -> bytes:
        ct = bytes(b ^ 0x5A for b in plaintext + b"\x00")
        return bytes(8) + ct + hmac.new(b"k", aad + bytes(8) + ct, hashlib.sha256).digest()[:12]

    def decrypt(self, aad: bytes, body: bytes) -> bytes:
        head, icv = body[:-12], body[-12:]
        assert hmac.compare_digest(icv, hmac.new(b"k", aad + head, hashlib.sha256).digest()[:12])
        pt = bytes(b ^ 0x5A for b in head[8:])
        return pt[: len(pt) - 1 - pt[-1]]


def test_lazy_log_formats_once_when_read_and_equals_the_eager_line() -> None:
    calls: list[int] = []

    def text() -> str:
        calls.append(1)
        return "established IKE SA"

    remote = Endpoint(ipaddress.ip_address("192.0.2.1"), 500)
    lazy = Log.lazy(text, "info", "c", 3, remote)
    assert calls == []
    eager = Log("established IKE SA", level="info", conn="c", serial=3, remote=remote)
    assert lazy == eager and repr(lazy) == repr(eager)
    assert lazy.message == "established IKE SA" and calls == [1]
    assert lazy.message.startswith("established") and calls == [1]
    assert lazy != Log("established IKE SA", level="debug", conn="c", serial=3, remote=remote)
    lazy.message = "other"
    assert lazy.message == "other"


def _sa_body(spis: tuple[bytes, bytes]) -> bytes:
    sa = codec.sa([(1, ProtocolID.IKE, spis[0], [(1, Encr.AES_GCM_16, 256), (2, 5, None),
                                                   (4, 31, None)]),
                   (2, ProtocolID.IKE, spis[1], [(1, Encr.AES_CBC, 128), (2, 5, None),
                                                   (3, Integ.HMAC_SHA2_256_128, None),
                                                   (4, 19, None)])])
    return sa.serialize()


def test_sa_payload_from_the_memo_equals_a_full_parse() -> None:
    first = _sa_body((os.urandom(8), os.urandom(8)))
    wp.SAPayload.parse(first)  # fills the memo
    body = _sa_body((os.urandom(8), os.urandom(8)))
    memo = wp.SAPayload.parse(body)
    wp._SA_MEMO.clear()
    full = wp.SAPayload.parse(body)
    assert memo.proposal_tuples() == full.proposal_tuples()
    assert [p[2] for p in memo.proposal_tuples()] == [body[8:16], body[52:60]]
    assert memo == full and memo.serialize() == body
    assert memo.proposals == full.proposals


def test_choose_memo_answers_with_this_requests_spi_and_number() -> None:
    specs = proposals.esp_specs(None)
    peer = [(1, ProtocolID.ESP, b"\x01\x02\x03\x04",
             [(1, Encr.AES_GCM_16, 256), (5, 0, None)])]
    a = proposals.choose(peer, specs, ProtocolID.ESP, ike=False)
    peer2 = [(7, ProtocolID.ESP, b"\x0a\x0b\x0c\x0d", list(peer[0][3]))]
    b = proposals.choose(peer2, specs, ProtocolID.ESP, ike=False)
    assert a is not None and b is not None and a is not b
    assert (a.spi, a.number, b.spi, b.number) == (b"\x01\x02\x03\x04", 1, b"\x0a\x0b\x0c\x0d", 7)
    a.encr = 0  # a caller's change does not reach the next answer
    c = proposals.choose(peer, specs, ProtocolID.ESP, ike=False)
    assert c is not None and c.encr == Encr.AES_GCM_16
    bad = [(1, ProtocolID.ESP, b"\x01\x02\x03\x04", [(1, 9999, None), (5, 0, None)])]
    assert proposals.choose(bad, specs, ProtocolID.ESP, ike=False) is None
    assert proposals.choose(bad, specs, ProtocolID.ESP, ike=False) is None


@pytest.mark.parametrize("response", [False, True])
def test_sk_message_packed_directly_equals_the_message_serialization(response: bool) -> None:
    inner = [wp.IDPayload(2, b"east", payload_type=35), wp.AuthPayload(2, b"x" * 32)]
    spi_i, spi_r = os.urandom(8), os.urandom(8)
    got = wm.encode_sk_message(spi_i, spi_r, 35, initiator=not response, response=response,
                               message_id=1, inner=inner, protector=ToyProtector())
    # the long way: the same message with an (empty) outer payload list, serialized
    first, plain = wm.serialize_payloads(inner)
    prot = ToyProtector()
    n = prot.body_length(len(plain))
    msg = wm.Message(spi_i, spi_r, 35, not response, response, 1, [wp.SKPayload(first, bytes(n))])
    raw = msg.serialize()
    want = raw[: len(raw) - n] + prot.encrypt(raw[: len(raw) - n], plain)
    assert got == want
    parsed = wm.parse_message(got)
    assert wm.open_sk(parsed, ToyProtector()) == inner


def test_ts_list_kept_on_the_payload_is_a_fresh_equal_list() -> None:
    p = codec.ts_payload(44, [codec.ts_list(wp.TSPayload([wp.TrafficSelector.make(
        "198.51.100.0", "198.51.100.255")]))[0]])  # type: ignore[index]
    one, two = codec.ts_list(p), codec.ts_list(p)
    assert one == two and one is not two
    p.selectors.append(wp.TrafficSelector.make("203.0.113.0", "203.0.113.255"))
    three = codec.ts_list(p)
    assert three is not None and len(three) == 2


@pytest.mark.parametrize("encr", [Encr.AES_GCM_16, Encr.CHACHA20_POLY1305])
def test_sk_protector_fast_aead_round_trip_and_integrity(encr: int) -> None:
    bits = 256 if encr == Encr.AES_GCM_16 else None
    key = os.urandom(36)
    out, back = SKProtector(encr, bits, None, key), SKProtector(encr, bits, None, key)
    aad = os.urandom(32)
    body = out.encrypt(aad, b"inner payloads")
    assert len(body) == out.body_length(len(b"inner payloads"))
    assert back.decrypt(aad, body) == b"inner payloads"
    with pytest.raises(IntegrityError):
        back.decrypt(aad, body[:-1] + bytes((body[-1] ^ 1,)))
    with pytest.raises(IntegrityError):
        back.decrypt(aad[:-1], body)
