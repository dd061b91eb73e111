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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
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


# ------------------------------------------------------------ encrypted requests
from pypluto.ike import codec  # noqa: E402
from pypluto.ike.ts import TS  # noqa: E402
from pypluto.wire import payloads as wp  # noqa: E402

_ts = st.builds(lambda v, p, a, b, s, e: TS(4, p, min(s, e), max(s, e), min(a, b), max(a, b)),
                st.just(4), st.sampled_from([0, 6, 17, 1]), st.integers(0, 2**32 - 1),
                st.integers(0, 2**32 - 1), st.integers(0, 65535), st.integers(0, 65535))
_transform = st.tuples(st.integers(1, 6), st.sampled_from([0, 1, 2, 3, 12, 14, 19, 20, 28, 31,
                                                          1025]),
                       st.sampled_from([None, 128, 256]))
_proposal = st.tuples(st.integers(1, 3), st.sampled_from([1, 2, 3, 0]),
                      st.sampled_from([b"", b"abcd", b"12345678"]),
                      st.lists(_transform, max_size=6))
_payload = st.one_of(
    st.builds(lambda ps: codec.sa(ps), st.lists(_proposal, min_size=1, max_size=3)),
    st.builds(lambda t, d, p, s: wp.NotifyPayload(protocol_id=p, spi=s, notify_type=t, data=d),
              st.sampled_from([7, 14, 17, 24, 38, 43, 44, 16384, 16391, 16393, 16388, 16390,
                               40000]),
              st.binary(max_size=8), st.sampled_from([0, 1, 3]),
              st.sampled_from([b"", b"abcd"])),
    st.builds(lambda g, d: codec.ke(g, d), st.sampled_from([19, 31, 14, 2, 1025]),
              st.binary(min_size=1, max_size=80)),
    st.builds(lambda d: codec.nonce(d), st.binary(min_size=16, max_size=40)),
    st.builds(lambda ts: codec.ts_payload(44, ts), st.lists(_ts, min_size=1, max_size=3)),
    st.builds(lambda ts: codec.ts_payload(45, ts), st.lists(_ts, min_size=1, max_size=3)),
    st.builds(lambda p, spis: wp.DeletePayload(protocol_id=p, spi_size=0 if p == 1 else 4,
                                               spis=[] if p == 1 else spis),
              st.sampled_from([1, 2, 3]), st.lists(st.binary(min_size=4, max_size=4),
                                                   max_size=3)),
    st.builds(lambda d: wp.IDPayload(id_type=2, data=d, payload_type=36),
              st.binary(min_size=1, max_size=10)),
    st.builds(lambda m, d: codec.auth(m, d), st.sampled_from([1, 2, 14]),
              st.binary(min_size=1, max_size=64)),
)


def _established() -> tuple[Net, object]:
    net = Net()
    net.up()
    return net, next(iter(net.west.engine.by_serial.values()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exchange=st.sampled_from([36, 37]), payloads=st.lists(_payload, max_size=7))
def test_random_encrypted_requests(exchange: int, payloads: list) -> None:
    net, ike = _established()
    msgid = ike.next_out
    ike.next_out += 1
    try:
        data = net.west.engine.encode(ike, exchange, False, msgid, payloads)[0]
    except Exception:  # the codec refuses to build it: nothing to test
        return
    acts = net.east.engine.receive(data, ike.remote, ike.local, net.now)
    _no_internal_error(acts)
    eike = next(iter(net.east.engine.by_serial.values()), None)
    if eike is not None and eike.established:
        # every acceptable request is answered (§2.2), exactly once per message ID
        assert [a for a in acts if isinstance(a, SendPacket)], [
            getattr(a, "message", a) for a in acts]
    net.advance(5)
    _no_internal_error(net.west.actions + net.east.actions)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drop=st.sets(st.integers(0, 9), max_size=4), extra=st.lists(_payload, max_size=3),
       shuffle=st.randoms(use_true_random=False))
def test_mangled_ike_auth(drop: set, extra: list, shuffle: object) -> None:
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    net.queue.clear()
    ike = next(iter(net.west.engine.by_serial.values()))
    payloads = ike.outstanding.task.build(net.west.engine, ike, net.now, [])
    payloads = [p for i, p in enumerate(payloads) if i not in drop] + extra
    shuffle.shuffle(payloads)  # type: ignore[attr-defined]
    try:
        data = net.west.engine.encode(ike, 35, False, 1, payloads)[0]
    except Exception:
        return
    acts = net.east.engine.receive(data, ike.remote, ike.local, net.now)
    _no_internal_error(acts)
    eng = net.east.engine
    for e in eng.by_serial.values():
        assert e.established or e.state == "STATE_V2_PARENT_R1"
    if not eng.by_serial:
        assert not eng.children_in and not eng.halfopen and eng.n_halfopen == 0
    net.advance(40)
    _no_internal_error(net.west.actions + net.east.actions)
