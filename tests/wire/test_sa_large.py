"""SA payloads too large for the memo (> 2 KB) are read straight into tuples.

The engine matches ``proposal_tuples()``; objects are built only when ``proposals`` is
read.  A hostile 64 KB SA payload of 5,000 transforms cost 14 ms as objects (a
non-spoofed sender with valid COOKIEs could spend that per request); these tests hold
the fast reading to exactly what the object parser accepts and yields.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypluto.iana import NotifyType as N
from pypluto.wire.errors import InvalidSyntax
from pypluto.wire.payloads import Proposal, SAPayload, Transform, TransformAttribute

from .strategies import proposals

# 59 four-transform ESP proposals: 59 * 52 bytes, above the memo's 2 KB
FILLER = [Proposal(i, 3, b"\x00\x00\x10\x00",
                   [Transform.make(1, 12, 128), Transform.make(1, 12, 256),
                    Transform.make(3, 12), Transform.make(5, 0)])
          for i in range(1, 60)]


def _expected(props: list[Proposal]) -> list:
    def bits(t: Transform) -> int | None:
        return next((a.value for a in t.attributes if a.type == 14 and isinstance(a.value, int)),
                    None)
    return [(p.number, int(p.protocol_id), bytes(p.spi),
             [(int(t.type), int(t.id), bits(t)) for t in p.transforms]) for p in props]


def test_filler_is_large_and_read_without_objects() -> None:
    body = SAPayload(FILLER).serialize()
    assert len(body) > 2048
    sa = SAPayload.parse(body)
    assert "_plain" in sa.__dict__ and "proposals" not in sa.__dict__
    assert sa.proposal_tuples() == _expected(FILLER)
    assert sa.proposals == FILLER and sa.serialize() == body


@settings(max_examples=200, deadline=None)
@given(st.lists(proposals(), min_size=1, max_size=4), st.integers(0, 59))
def test_large_bodies_read_as_the_object_parser_reads_them(extra: list, at: int) -> None:
    props = FILLER[:at] + extra + FILLER[at:]
    body = SAPayload(props).serialize()
    objs = SAPayload.parse_objects(body)
    sa = SAPayload.parse(body)
    assert sa.proposal_tuples() == _expected(objs)
    assert sa == SAPayload(objs) and sa.serialize() == body


@settings(max_examples=300, deadline=None)
@given(st.lists(proposals(), min_size=0, max_size=3), st.data())
def test_corrupted_large_bodies_are_refused_as_before(extra: list, data: st.DataObject) -> None:
    body = bytearray(SAPayload(extra + FILLER).serialize())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([len(body), len(body) - 1, len(body) - 5, 2100]))
    raw = bytes(body[:cut])
    try:
        objs = SAPayload.parse_objects(raw)
    except InvalidSyntax as e:
        with pytest.raises(InvalidSyntax) as got:
            SAPayload.parse(raw)
        assert str(got.value) == str(e)
        return
    assert SAPayload.parse(raw).proposal_tuples() == _expected(objs)


def test_tlv_key_length_in_a_large_body_is_still_refused() -> None:
    bad = Proposal(40, 3, b"\x00\x00\x10\x01",
                   [Transform(1, 12, [TransformAttribute(14, b"\x00\x80")]), Transform(5, 0)])
    body = SAPayload([*FILLER, bad]).serialize()
    with pytest.raises(InvalidSyntax, match="must be TV"):
        SAPayload.parse(body)


def _hostile_init_sa(nprop: int, ntrans: int) -> bytes:
    out = b""
    for p in range(1, nprop + 1):
        ts = b"".join(struct.pack("!BBHBBHHH", 0 if t == ntrans - 1 else 3, 0, 12, 1, 0, 12,
                                  0x800E, 64) for t in range(ntrans))
        out += struct.pack("!BBHBBBB", 0 if p == nprop else 2, 0, 8 + len(ts), p, 1, 0,
                           ntrans) + ts
    return out


def test_engine_answers_a_64k_sa_payload_with_no_proposal_chosen() -> None:
    from tests.ike.harness import Net
    from tests.ike.test_hostile_establishment import _answers, _init_request, _no_state, _to_east

    body = _hostile_init_sa(255, 20)  # AES with a 64-bit key: never acceptable
    net = Net()

    def mutate(m) -> None:  # noqa: ANN001
        for i, p in enumerate(m.payloads):
            if isinstance(p, SAPayload):
                m.payloads[i] = SAPayload.parse(body)
    data = _init_request(net, mutate)
    assert len(data) > 60000
    acts = _to_east(net, data)
    assert _answers(acts) == [N.NO_PROPOSAL_CHOSEN]
    _no_state(net)
