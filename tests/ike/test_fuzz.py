"""Property tests: mutated IKE_SA_INIT messages never break the engine (no internal
error, no half-open state from garbage, answers only with error notifies or a valid
IKE_SA_INIT response)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypluto.ike.actions import Endpoint, Log, SendPacket

from .harness import EAST, WEST, Net

W500, E500 = Endpoint(WEST, 500), Endpoint(EAST, 500)

_net = Net()
_acts = _net.west.engine.initiate("west-east", _net.now)
INIT_REQ = [a for a in _acts if isinstance(a, SendPacket)][0].data
_resp = _net.east.engine.receive(INIT_REQ, E500, W500, _net.now)
INIT_RESP = [a for a in _resp if isinstance(a, SendPacket)][0].data


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    b = bytearray(data)
    for pos, val in flips:
        b[pos % len(b)] = val
    if cut is not None:
        b = b[: cut % (len(b) + 1)]
    return bytes(b) + extra


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.integers(0, 4000)),
    st.binary(max_size=16),
)


def _no_internal_error(acts: list) -> None:
    for a in acts:
        if isinstance(a, Log):
            assert "internal error" not in a.message, a.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=mutations)
def test_mutated_init_request(m: tuple) -> None:
    net = Net()
    data = _mutate(INIT_REQ, *m)
    acts = net.east.engine.receive(data, E500, W500, net.now)
    _no_internal_error(acts)
    assert net.east.engine.n_halfopen <= 1
    # a retransmission of the same garbage changes nothing
    _no_internal_error(net.east.engine.receive(data, E500, W500, net.now))
    assert net.east.engine.n_halfopen <= 1


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=mutations)
def test_mutated_init_response(m: tuple) -> None:
    net = Net()
    acts = net.west.engine.initiate("west-east", net.now)
    req = [a for a in acts if isinstance(a, SendPacket)][0].data
    resp = net.east.engine.receive(req, E500, W500, net.now)
    good = [a for a in resp if isinstance(a, SendPacket)][0].data
    acts = net.west.engine.receive(_mutate(good, *m), W500, E500, net.now)
    _no_internal_error(acts)
    # whatever happened, the real response still completes or fails cleanly
    _no_internal_error(net.west.engine.receive(good, W500, E500, net.now))
    net.advance(70)
    _no_internal_error(net.west.actions + net.east.actions)
