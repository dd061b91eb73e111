"""The liveness fast path (ike/tasks/liveness.py, issue 18): RFC 7296 §2.4, §3.14."""

from __future__ import annotations

import pytest

from pypluto.ike import codec
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
        s = liveness.slot(t)
        assert t <= s < t + liveness.SLOT
