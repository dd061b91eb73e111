"""Target (a): the wire codec (``pypluto.wire``), RFC 7296 §3.

Each input is tried two ways: as a whole IKE message (``parse_message``) and,
first byte = Next Payload, as a decrypted inner payload chain
(``parse_payloads``, RFC 7296 §3.14).  Properties:

* parsing raises nothing but :class:`WireError`;
* what parses re-serializes (or raises :class:`WireError`), and the result
  parses again to the very same bytes (serialize∘parse is a fixpoint after one
  round: no value is silently changed twice).
"""

from __future__ import annotations

from collections.abc import Iterator

from pypluto.wire.errors import WireError
from pypluto.wire.message import parse_message, parse_payloads, serialize_payloads

from . import Finding
from .vectors import fuzz_packets, openswan_frames


def _message(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except WireError:
        return
    try:
        out = msg.serialize()
    except WireError:
        return
    try:
        again = parse_message(out).serialize()
    except WireError as e:
        raise Finding(f"re-serialized message does not parse: {e}; {out.hex()}") from None
    if again != out:
        raise Finding(f"serialize(parse(x)) is not a fixpoint: {out.hex()} -> {again.hex()}")


def _chain(data: bytes) -> None:
    if not data:
        return
    try:
        payloads = parse_payloads(data[0], data[1:])
    except WireError:
        return
    try:
        first, out = serialize_payloads(payloads)
    except WireError:
        return
    try:
        first2, again = serialize_payloads(parse_payloads(first, out))
    except WireError as e:
        raise Finding(f"re-serialized chain does not parse: {e}; {first} {out.hex()}") from None
    if (first2, again) != (first, out):
        raise Finding(f"chain round trip is not a fixpoint: {out.hex()} -> {again.hex()}")


def one_input(data: bytes) -> None:
    """One fuzz input: a datagram (as is, and with its header length made right so
    mutations get past the length check of RFC 7296 §3.1) and an inner chain."""
    _message(data)
    if len(data) >= 28 and int.from_bytes(data[24:28], "big") != len(data):
        _message(data[:24] + len(data).to_bytes(4, "big") + data[28:])
    _chain(data)


def seeds() -> Iterator[bytes]:
    """Openswan captures (messages and decrypted inner chains), Libreswan fuzzer packets,
    and the messages of a back-to-back pypluto exchange."""
    for fr in openswan_frames():
        if fr.get("ike_hex"):
            yield bytes.fromhex(fr["ike_hex"])
        sk = fr.get("sk_decryption")
        sk = sk if isinstance(sk, dict) else {}
        if sk.get("inner_payloads_hex") is not None and sk.get("inner_first_payload") is not None:
            yield bytes([sk["inner_first_payload"]]) + bytes.fromhex(sk["inner_payloads_hex"])
    yield from fuzz_packets()
    from .ike_sk import harness_messages
    for _name, data in harness_messages():
        yield data
