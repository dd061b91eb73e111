"""Property tests: only WireError escapes the codec, and what it accepts round-trips.

RFC 7296 §3 / issue 2 §2: "No other exception type may escape the codec".  The
example counts below add up to more than 10,000 in the default run.
"""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypluto.wire import (
    Message,
    PayloadType,
    WireError,
    parse_message,
    parse_payloads,
    serialize_payloads,
)

from .helpers import seed_messages
from .strategies import inner_chains, messages

SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

#: example counts, summed in test_example_budget so the total stays visible
BUDGET = {
    "random_bytes": 3000,
    "random_after_header": 3000,
    "random_inner": 2000,
    "valid_round_trip": 600,
    "valid_inner_round_trip": 300,
    "mutations": 3000,
}


def _accepts_or_wire_error(data: bytes) -> Message | None:
    """Parse; a WireError is fine, anything else fails the test. Accepted input must round-trip."""
    try:
        msg = parse_message(data)
    except WireError:
        return None
    assert msg.serialize() == data
    again = parse_message(msg.serialize())
    assert again == msg
    return msg


@settings(max_examples=BUDGET["random_bytes"], **SETTINGS)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _accepts_or_wire_error(data)


KNOWN_TYPES = [int(t) for t in PayloadType] + [1, 99, 200, 255]


@settings(max_examples=BUDGET["random_after_header"], **SETTINGS)
@given(
    st.sampled_from(KNOWN_TYPES),
    st.binary(max_size=300),
    st.integers(0, 0xFF),
    st.booleans(),
)
def test_random_chain_after_valid_header(
    first: int, body: bytes, flags: int, fix_len: bool
) -> None:
    """A correct header so that the payload parsers, not the header check, meet the noise."""
    length = 28 + len(body) if fix_len else len(body) ^ 0x55
    header = bytes(16) + bytes((first, 0x20, 35, flags)) + struct.pack("!II", 1, length)
    _accepts_or_wire_error(header + body)


@settings(max_examples=BUDGET["random_inner"], **SETTINGS)
@given(st.sampled_from(KNOWN_TYPES), st.binary(max_size=300))
def test_random_inner_chain(first: int, data: bytes) -> None:
    try:
        payloads = parse_payloads(first, data)
    except WireError:
        return
    assert serialize_payloads(payloads) == (first if payloads else 0, data) or (
        not payloads and data == b""
    )


@settings(max_examples=BUDGET["valid_round_trip"], **SETTINGS)
@given(messages())
def test_valid_messages_round_trip(msg: Message) -> None:
    raw = msg.serialize()
    back = parse_message(raw)
    assert back == msg
    assert back.serialize() == raw
    assert [p.critical for p in back.payloads] == [p.critical for p in msg.payloads]


@settings(max_examples=BUDGET["valid_inner_round_trip"], **SETTINGS)
@given(inner_chains)
def test_valid_inner_chains_round_trip(chain: list) -> None:
    first, data = serialize_payloads(chain)
    back = parse_payloads(first, data)
    assert back == chain
    assert [p.payload_type for p in back] == [p.payload_type for p in chain]
    assert serialize_payloads(back) == (first, data)


def _length_offsets(raw: bytes) -> list[int]:
    """Offsets of the IKE length and every generic payload length field in ``raw``."""
    if len(raw) < 28:
        return []
    offsets = [24]
    pos, nxt = 28, raw[16]
    while nxt and pos + 4 <= len(raw):
        offsets.append(pos + 2)
        length = int.from_bytes(raw[pos + 2 : pos + 4], "big")
        if nxt in (46, 53) or length < 4:
            break
        nxt = raw[pos]
        pos += length
    return offsets


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10**6), st.booleans()),
    st.tuples(st.just("length"), st.integers(0, 10**6), st.integers(0, 0xFFFF)),
    st.tuples(st.just("length_delta"), st.integers(0, 10**6), st.integers(-8, 8)),
    st.tuples(st.just("u16"), st.integers(0, 10**6), st.integers(0, 0xFFFF)),
    st.tuples(st.just("insert"), st.integers(0, 10**6), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("delete"), st.integers(0, 10**6), st.integers(1, 8)),
    st.tuples(st.just("splice"), st.integers(0, 10**6), st.integers(0, 10**6)),
)


def _mutate(raw: bytes, other: bytes, op: tuple) -> bytes:
    kind, where, arg = op
    b = bytearray(raw)
    i = where % max(1, len(b))
    if kind == "flip" and b:
        b[i] ^= 1 << arg
    elif kind == "truncate":
        # keep the header length consistent half of the time, so the chain check runs
        del b[i:]
        if arg and len(b) >= 28:
            b[24:28] = len(b).to_bytes(4, "big")
    elif kind in ("length", "length_delta"):
        offs = _length_offsets(bytes(b))
        off = offs[where % len(offs)] if offs else len(b)
        if off + 2 <= len(b):
            if kind == "length":
                b[off : off + 2] = arg.to_bytes(2, "big")
            else:
                width = 4 if off == 24 else 2
                v = (int.from_bytes(b[off : off + width], "big") + arg) % (1 << (8 * width))
                b[off : off + width] = v.to_bytes(width, "big")
    elif kind == "u16" and len(b) >= 2:
        i = min(i, len(b) - 2)
        b[i : i + 2] = arg.to_bytes(2, "big")
    elif kind == "insert":
        b[i:i] = arg
        if len(b) >= 28:
            b[24:28] = len(b).to_bytes(4, "big")
    elif kind == "delete":
        del b[i : i + arg]
        if len(b) >= 28:
            b[24:28] = len(b).to_bytes(4, "big")
    elif kind == "splice":
        j = arg % max(1, len(other))
        b = b[:i] + bytearray(other[j:])
        if len(b) >= 28:
            b[24:28] = len(b).to_bytes(4, "big")
    return bytes(b)


SEEDS = [m.serialize() for m in seed_messages()]


def test_seeds_are_valid() -> None:
    for raw in SEEDS:
        assert parse_message(raw).serialize() == raw


@settings(max_examples=BUDGET["mutations"], **SETTINGS)
@given(st.sampled_from(SEEDS), st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=3))
def test_mutated_valid_messages(raw: bytes, other: bytes, ops: list) -> None:
    """Bit flips, truncation, length-field edits, inserts/deletes and splices of valid messages."""
    for op in ops:
        raw = _mutate(raw, other, op)
    _accepts_or_wire_error(raw)


def test_example_budget() -> None:
    assert sum(BUDGET.values()) >= 10_000


_CAPTURED: list[tuple[int | None, bytes]] = []


def _captured_seeds() -> list[tuple[int | None, bytes]]:
    """Real messages from ../shared captures: (None, message) and (first, decrypted inner)."""
    if not _CAPTURED:
        import json

        from testsupport import shared_path

        root = shared_path("vectors", "pcaps")
        for exp in sorted(root.glob("**/*expected.json")):
            for frame in json.loads(exp.read_text())["frames"]:
                if "ike_hex" in frame:
                    _CAPTURED.append((None, bytes.fromhex(frame["ike_hex"])))
                skd = frame.get("sk_decryption")
                if isinstance(skd, dict) and "inner_payloads_hex" in skd:
                    _CAPTURED.append(
                        (skd["inner_first_payload"], bytes.fromhex(skd["inner_payloads_hex"]))
                    )
    return _CAPTURED


@settings(max_examples=1000, **SETTINGS)
@given(st.data(), st.lists(mutation, min_size=1, max_size=3))
def test_mutated_captured_messages(data: st.DataObject, ops: list) -> None:
    """Extra (not counted in BUDGET): mutations of real Openswan/scapy/Wireshark messages."""
    seeds = _captured_seeds()
    first, raw = data.draw(st.sampled_from(seeds))
    _, other = data.draw(st.sampled_from(seeds))
    for op in ops:
        raw = _mutate(raw, other, op)
    if first is None:
        _accepts_or_wire_error(raw)
        return
    try:
        payloads = parse_payloads(first, raw)
    except WireError:
        return
    assert serialize_payloads(payloads)[1] == raw
