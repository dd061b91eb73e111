"""The receive-queue management of the raw ESP sockets (kernel/userspace/rxqueue.py).

A UDP socket on the loopback stands in for the raw ESP socket: the queue limit
(SO_RCVBUF) and the memory counters (SO_MEMINFO) are the same for both.  The
policy: burst room (four times the default limit); a queue that stays above
its target for an interval loses its head datagram, then more heads at the
RFC 8289 control law's rate, until it drains to the target; a queue that stays
above the default limit for longer gets the default limit back.
"""

from __future__ import annotations

import math
import socket

import pytest

from pypluto.kernel.userspace.rxqueue import RxQueue


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _pair() -> tuple[socket.socket, socket.socket]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tx, rx


def _limit(s: socket.socket) -> int:
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def _fill(tx: socket.socket, rx: socket.socket, q: RxQueue, above: int) -> None:
    """Queue datagrams on ``rx`` until more than ``above`` bytes wait there."""
    for _ in range(2000):
        tx.sendto(b"x" * 1400, rx.getsockname())
        got = q.queued()
        assert got is not None
        if got > above:
            return
    raise AssertionError("the queue never grew")


def _empty(rx: socket.socket) -> None:
    while True:
        try:
            rx.recv(65536)
        except BlockingIOError:
            return


@pytest.fixture
def pair():  # type: ignore[no-untyped-def]
    tx, rx = _pair()
    yield tx, rx
    tx.close()
    rx.close()


def test_the_limit_is_raised_for_bursts(pair) -> None:  # type: ignore[no-untyped-def]
    _tx, rx = pair
    default = _limit(rx)
    q = RxQueue(rx, Clock())
    assert q.active and q.low == default
    assert _limit(rx) == q.high > default  # the kernel may cap it at net.core.rmem_max
    assert q.queued() == 0


def test_a_burst_shorter_than_the_clamp_interval_keeps_the_room(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    clock = Clock()
    q = RxQueue(rx, clock)
    _fill(tx, rx, q, q.low)
    q.drained(False)  # above the default limit: the clock starts
    clock.t += RxQueue.CLAMP_AFTER / 2
    q.drained(False)
    assert not q.clamped and _limit(rx) == q.high
    _empty(rx)
    q.drained(True)  # emptied: the burst is over, whatever the clock says
    clock.t += RxQueue.CLAMP_AFTER * 10
    q.drained(False)  # nothing queued: not above the default limit
    assert not q.clamped and q.clamps == 0


def test_a_queue_above_the_default_limit_is_cut_back_then_the_room_returns(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    clock = Clock()
    q = RxQueue(rx, clock)
    _fill(tx, rx, q, q.low)
    q.drained(False)
    clock.t += RxQueue.CLAMP_AFTER * 1.5
    q.drained(False)
    assert q.clamped and q.clamps == 1 and _limit(rx) == q.low
    # clamped: the kernel takes no more while the queue is above the default limit
    before = q.queued()
    assert before is not None and before > q.low
    for _ in range(20):
        tx.sendto(b"y" * 1400, rx.getsockname())
    assert q.queued() == before
    # a drain that takes the queue to the default limit or below restores the room
    _empty(rx)
    q.drained(False)
    assert not q.clamped and _limit(rx) == q.high
    clock.t += RxQueue.CLAMP_AFTER * 10
    q.drained(True)
    assert not q.clamped and q.clamps == 1  # the old start time was forgotten


class _Refusing:
    """A socket whose limit cannot be changed (as under a tight net.core.rmem_max)."""

    def __init__(self) -> None:
        self.sets = 0

    def getsockopt(self, level: int, opt: int, size: int = 0) -> int:
        return 212992

    def setsockopt(self, level: int, opt: int, value: int) -> None:
        self.sets += 1
        raise OSError(1, "Operation not permitted")


def test_a_socket_that_refuses_keeps_its_limit_and_is_left_alone() -> None:
    s = _Refusing()
    q = RxQueue(s)  # type: ignore[arg-type]
    assert not q.active
    q.drained(False)
    q.drained(True)
    assert s.sets == 1 and not q.clamped


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[bool] = []

    def take_drops(self) -> int:
        return 0

    def drained(self, emptied: bool) -> None:
        self.calls.append(emptied)


def test_a_raw_drain_tells_the_queue_whether_it_emptied_it(pair) -> None:  # type: ignore[no-untyped-def]
    from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend
    from pypluto.kernel.userspace.sa_table import SATable

    tx, rx = pair
    plane = object.__new__(UserspaceBackend)  # only what _drain_raw touches
    plane._sas = SATable()
    plane.counters = PlaneCounters()
    plane._xin = {}
    for i in range(70):  # ESP for SPIs the plane does not have
        tx.sendto((0x1000 + i).to_bytes(4, "big") + bytes(12), rx.getsockname())
    rec = _Recorder()
    mv = memoryview(bytearray(65536))
    # version 6: a raw IPv6 socket, like this UDP one, returns no IP header
    plane._drain_raw(rx, 6, mv, 64, rec)  # type: ignore[arg-type]
    assert rec.calls == [False] and plane.counters.unknown_spi == 64
    plane._drain_raw(rx, 6, mv, 64, rec)  # type: ignore[arg-type]
    assert rec.calls == [False, True] and plane.counters.unknown_spi == 70


class _Queued(RxQueue):
    """An RxQueue whose queued bytes the test sets (the control law, without a flood)."""

    q = 0

    def queued(self) -> int | None:
        return self.q


def test_a_burst_above_the_target_that_drains_is_not_dropped(pair) -> None:  # type: ignore[no-untyped-def]
    _tx, rx = pair
    clock = Clock()
    q = _Queued(rx, clock)
    q.q = q.target + 1
    q.drained(False)  # above the target: the interval starts
    clock.t += RxQueue.INTERVAL * 0.9
    q.drained(False)
    q.q = q.target  # drained to the target before the interval ended
    q.drained(False)
    q.q = q.target + 1
    clock.t += RxQueue.INTERVAL * 0.9
    q.drained(False)  # above again: a new interval, not the old one
    assert not q.dropping and q.take_drops() == 0


def test_a_standing_queue_loses_heads_at_the_control_law_rate(pair) -> None:  # type: ignore[no-untyped-def]
    _tx, rx = pair
    clock = Clock()
    q = _Queued(rx, clock)
    q.q = q.target + 1  # above the target but below the default limit: no clamp
    q.drained(False)
    clock.t += RxQueue.INTERVAL
    q.drained(False)
    assert q.dropping and q.take_drops() == 1 and q.take_drops() == 0
    drops = [clock.t]
    for _ in range(4000):  # drains every 50 us while the queue stands
        clock.t += 0.00005
        q.drained(False)
        if q.take_drops():
            drops.append(clock.t)
    gaps = [b - a for a, b in zip(drops, drops[1:], strict=False)]
    for n, gap in enumerate(gaps, start=1):  # RFC 8289 §4.3: interval / sqrt(count)
        assert gap == pytest.approx(RxQueue.INTERVAL / math.sqrt(n), abs=0.0001)
    assert len(drops) > 5 and not q.clamped
    q.q = q.target  # the queue drained to its target: the dropping state ends
    q.drained(False)
    clock.t += RxQueue.INTERVAL * 10
    q.drained(True)
    assert not q.dropping and q.take_drops() == 0


def test_a_head_drop_discards_the_oldest_datagram_unread(pair) -> None:  # type: ignore[no-untyped-def]
    from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend
    from pypluto.kernel.userspace.sa_table import SATable

    tx, rx = pair
    plane = object.__new__(UserspaceBackend)
    plane._sas = SATable()
    plane.counters = PlaneCounters()
    plane._xin = {}
    q = RxQueue(rx, Clock())
    # the head is too short for an ESP header: had the plane read it, it would
    # count as malformed; the rest are ESP for an SPI the plane does not have
    tx.sendto(b"\x01", rx.getsockname())
    for i in range(9):
        tx.sendto((0x2000 + i).to_bytes(4, "big") + bytes(12), rx.getsockname())
    q.due = 1  # as after an interval above the target
    mv = memoryview(bytearray(65536))
    plane._drain_raw(rx, 6, mv, 64, q)
    assert q.dropped == 1 and q.due == 0
    assert plane.counters.malformed == 0 and plane.counters.unknown_spi == 9
    # nothing else is dropped without a new decision
    for i in range(3):
        tx.sendto((0x3000 + i).to_bytes(4, "big") + bytes(12), rx.getsockname())
    plane._drain_raw(rx, 6, mv, 64, q)
    assert q.dropped == 1 and plane.counters.unknown_spi == 12
