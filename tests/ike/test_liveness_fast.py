"""The liveness fast path (ike/tasks/liveness.py, issue 18): RFC 7296 §2.4, §3.14."""

from __future__ import annotations

import pytest

from pypluto.ike import codec, pacing
from pypluto.ike.actions import SendPacket
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import liveness

from .harness import Net

INFO = 37


def _ike(side):  # noqa: ANN001, ANN202
    (ike,) = side.engine.by_serial.values()
    return ike


def test_probe_bytes_read_by_the_codec() -> None:
    """What the fast path writes parses and decrypts with the generic codec: one SK
    payload with nothing inside, the header fields of an INFORMATIONAL request."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west = _ike(net.east), _ike(net.west)
    for response in (False, True):
        data = liveness.empty_informational(east, response, 7)
        msg = codec.parse(data)
        assert (msg.exchange, msg.message_id, msg.response, msg.initiator) == \
            (INFO, 7, response, False)
        assert msg.spi_i == east.spi_i and msg.spi_r == east.spi_r
        assert msg.payloads == [msg.sk]
        assert west.prot_in is not None and codec.decrypt(msg.sk, west.prot_in) == []


def test_probes_only_when_nothing_heard() -> None:
    """§2.4: a liveness check is only needed when nothing was received for dpddelay:
    west (dpddelay 12) hears east's probes every 10 s and never sends one itself."""
    net = Net(west_kw={"dpddelay": 12.0}, east_kw={"dpddelay": 10.0})
    net.up()
    net.advance(200)
    w, e = net.west.engine.stats.events, net.east.engine.stats.events
    assert w["dpd.sent"] == 0
    assert 19 <= e["dpd.sent"] <= 20
    assert e["dpd.recv"] == e["dpd.sent"] and w["dpd.replied"] == e["dpd.sent"]
    assert net.established(net.west) and net.established(net.east)


def test_fast_path_taken_and_window_moves(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe and answer take the fast path (the codec is never called): message IDs
    advance on both sides, the answer is cached for a retransmitted probe (§2.1)."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west = _ike(net.east), _ike(net.west)
    out0, in0 = east.next_out, west.next_in

    def no_codec(*a: object, **k: object) -> None:
        raise AssertionError("the generic codec was used")

    for name in ("parse", "decrypt", "encode"):
        monkeypatch.setattr(codec, name, no_codec)
    net.advance(5.5)  # the timer fires, the probe is answered
    monkeypatch.undo()
    assert east.next_out == out0 + 1 and west.next_in == in0 + 1
    assert east.outstanding is None
    assert west.last_response is not None and west.last_response[0] == out0
    # a retransmitted probe gets the cached answer, byte for byte
    probe = [d for who, d in net.sent if who == "east"][-1]
    acts = net.west.engine.receive(probe, west.local, west.remote, net.now)
    assert [a.data for a in acts if hasattr(a, "data")] == west.last_response[1]
    assert net.east.engine.stats.events["dpd.recv"] == 1


def test_unanswered_probe_declares_peer_dead() -> None:
    net = Net(east_kw={"dpddelay": 5.0, "dpdtimeout": 15.0})
    net.up()
    net.cut = True
    net.advance(40)
    assert not net.east.engine.by_serial
    assert "peer-dead" in [e.kind for e in net.east.events]


def test_tampered_probe_goes_the_general_way() -> None:
    """A probe whose ICV fails is not answered (the task manager drops it)."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west = _ike(net.east), _ike(net.west)
    data = bytearray(liveness.empty_informational(east, False, east.next_out))
    data[-1] ^= 1
    acts = net.west.engine.receive(bytes(data), west.local, west.remote, net.now)
    assert not [a for a in acts if hasattr(a, "data")]
    assert west.next_in == east.next_out  # nothing consumed


def test_slot_rounds_up() -> None:
    for t in (0.0, 1000.01, 1234.5678):
        s = pacing.slot(t)
        assert t <= s < t + pacing.SLOT


# ---------------------------------------------------------------- hostile answers
# East probes (dpddelay 5) while the network is cut; each test then hands east an
# answer crafted with west's keys and checks that only the exact answer to the probe
# in flight is taken, by the fast path or the general one, and everything else is not.


def _probe_in_flight(net: Net):  # noqa: ANN202
    east, west = _ike(net.east), _ike(net.west)
    net.cut = True
    net.advance(5.5)  # the probe leaves into the void
    o = east.outstanding
    assert o is not None and o.task is liveness._PROBE
    assert net.east.engine.stats.events["dpd.sent"] == 1
    return east, west, o


def _feed(net: Net, data: bytes) -> list:
    east = _ike(net.east)
    return net.east.engine.receive(data, east.local, east.remote, net.now)


def _not_taken(net: Net, o: object) -> None:
    east = _ike(net.east)
    assert east.outstanding is o  # still waiting for the answer
    assert net.east.engine.stats.events["dpd.recv"] == 0
    assert east.heap_at is not None  # the retransmit / dpdtimeout still scheduled


def test_answer_with_the_probe_msgid_is_taken() -> None:
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west, o = _probe_in_flight(net)
    acts = _feed(net, liveness.empty_informational(west, True, o.msgid))
    assert acts == [] and east.outstanding is None
    assert net.east.engine.stats.events["dpd.recv"] == 1
    assert east.next_liveness == pacing.slot(net.now + 5.0)
    assert east.heap_at == east.next_liveness
    # replayed: nothing outstanding any more, the general path drops it
    assert not [a for a in _feed(net, liveness.empty_informational(west, True, o.msgid))
                if hasattr(a, "data")]
    assert net.east.engine.stats.events["dpd.recv"] == 1


@pytest.mark.parametrize("delta", [1, -1, 1000])
def test_answer_with_another_msgid_is_ignored(delta: int) -> None:
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west, o = _probe_in_flight(net)
    _feed(net, liveness.empty_informational(west, True, (o.msgid + delta) & 0xFFFFFFFF))
    _not_taken(net, o)


def test_answer_with_a_bad_icv_is_dropped() -> None:
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west, o = _probe_in_flight(net)
    for i in (-1, 40, 29):  # ICV, ciphertext, SK header (flags octet)
        data = bytearray(liveness.empty_informational(west, True, o.msgid))
        data[i] ^= 1
        _feed(net, bytes(data))
        _not_taken(net, o)
    # the genuine answer is still taken afterwards
    _feed(net, liveness.empty_informational(west, True, o.msgid))
    assert east.outstanding is None


def test_answer_without_the_response_flag_is_not_an_answer() -> None:
    """A "request" with the probe's message ID: not the answer; the peer's next
    request ID is another one, so nothing is answered either."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west, o = _probe_in_flight(net)
    assert east.next_in != o.msgid
    acts = _feed(net, liveness.empty_informational(west, False, o.msgid))
    assert not [a for a in acts if hasattr(a, "data")]
    _not_taken(net, o)


def test_answer_with_payloads_goes_the_general_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-empty SK (here a status notify) is no empty answer: the task manager
    reads it with the codec, and takes it as the probe's answer as before."""
    from pypluto.wire import payloads as wp

    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    east, west, o = _probe_in_flight(net)
    (data,) = codec.encode(west.spi_i, west.spi_r, INFO, west.initiator, True, o.msgid,
                           [wp.NotifyPayload(protocol_id=0, notify_type=16393, spi=b"",
                                             data=b"")], west.prot_out)
    parsed: list[bytes] = []
    real = codec.parse

    def spy(d: bytes, *a: object, **k: object):  # noqa: ANN202
        parsed.append(d)
        return real(d, *a, **k)

    monkeypatch.setattr(codec, "parse", spy)
    _feed(net, data)
    assert parsed == [data]
    assert east.outstanding is None
    assert net.east.engine.stats.events["dpd.recv"] == 1


def test_probes_of_one_slot_are_paced() -> None:
    """SAs whose liveness deadlines fall in the same slot (set up at the same moment,
    or piled up behind a late timer) do not all probe at once: at most
    PROBES_PER_SLOT leave per slot, the rest in the following slots; every SA is
    probed, answered and kept, and the next round stays spread."""
    n = 3 * pacing.PROBES_PER_SLOT + 7
    net = Net(east_kw={"dpddelay": 10.0}, east_settings=EngineSettings(uniqueids=False))
    wconn = net.west.engine.connections["west-east"]
    for _ in range(n):  # each a new IKE SA (whatever else exists), as a load generator
        net.apply(net.west, net.west.engine.initiate_ike(wconn, net.now))
        net.run(limit=100 * n)
    assert len(net.established(net.east)) == n
    engine = net.east.engine
    per_call: list[tuple[float, int]] = []
    handle = engine.handle_timer

    def counting(now: float) -> list:
        acts = handle(now)
        probes = sum(isinstance(a, SendPacket) for a in acts)
        if probes:
            per_call.append((now, probes))
        return acts

    engine.handle_timer = counting  # type: ignore[method-assign]
    net.advance(10.5)
    first = [p for _, p in per_call]
    assert sum(first) == n and max(first) <= pacing.PROBES_PER_SLOT
    assert len(first) == -(-n // pacing.PROBES_PER_SLOT)  # one full slot after another
    t0, t1 = per_call[0][0], per_call[-1][0]
    assert t1 - t0 < len(first) * pacing.SLOT + 1e-9
    per_call.clear()
    net.advance(10.5)  # the next round: re-armed from each answer, still spread
    assert sum(p for _, p in per_call) == n
    assert max(p for _, p in per_call) <= pacing.PROBES_PER_SLOT
    ev = engine.stats.events
    assert ev["dpd.sent"] == ev["dpd.recv"] == 2 * n
    assert len(net.established(net.east)) == n


def test_pacer_spreads_a_pile_visiting_each_sa_twice_at_most() -> None:
    """A pile of 10,000 SAs due at once (a timer that ran late at 100,000 SAs) leaves
    PROBES_PER_SLOT per slot, and each refused SA is booked once into a later slot:
    about 2 visits per SA in all, not one per slot it waits (the first version of the
    pacer moved the whole pile one slot on and walked it again every slot)."""
    n, cap = 10_000, pacing.PROBES_PER_SLOT
    pacer = pacing.ProbePacer()
    due: dict[float, list[int]] = {pacing.slot(5000.0): list(range(n))}
    visits, sent = 0, {}
    while due:
        t = min(due)
        for sa in due.pop(t):
            visits += 1
            if pacer.allow(t):
                sent[t] = sent.get(t, 0) + 1
            else:
                seat = pacer.later()
                assert seat > t
                due.setdefault(seat, []).append(sa)
    assert sum(sent.values()) == n and max(sent.values()) == cap
    assert len(sent) == -(-n // cap)  # back to back, every slot full but the last
    assert visits <= 2 * n


@pytest.mark.parametrize("cut", [28, 29, 31, 33])
@pytest.mark.parametrize("response", [False, True])
def test_truncated_sk_informational_is_dropped_and_the_sa_stays(cut: int, response: bool) -> None:
    """An INFORMATIONAL in the clear that names the SK payload but is cut short (a
    bare 28-byte header, or a few bytes of payload header), with the established
    SA's SPIs (seen on the path) and its Length field right: no key is needed to send
    it.  It is dropped; it must not raise in the fast path, which used to read the
    SK payload's first byte before it checked the length (an internal error that
    deleted the IKE SA: found by ``make fuzz``'s ike_plain target)."""
    net = Net()
    net.up()
    west, east = _ike(net.west), _ike(net.east)
    probe = bytearray(liveness.empty_informational(east, response, 3 if response else 0))
    data = bytearray(probe[:cut])
    data[24:28] = cut.to_bytes(4, "big")
    acts = net.west.engine.receive(bytes(data), west.local, west.remote, net.now)
    text = [getattr(a, "message", "") for a in acts]
    assert not any("internal error" in m for m in text), text
    assert not any(isinstance(a, SendPacket) for a in acts)
    assert net.established(net.west) and net.established(net.east)
    assert _ike(net.west) is west and west.established
