"""The receive-queue limit of the raw ESP sockets (kernel/userspace/rxqueue.py).

A UDP socket on the loopback stands in for the raw ESP socket: the queue limit
(SO_RCVBUF) and the memory counters (SO_MEMINFO) are the same for both.
"""

from __future__ import annotations

import socket

import pytest
from testsupport import udp_pair

from pypluto.kernel.userspace.rxqueue import RxQueue


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


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
    tx, rx = udp_pair()
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


def test_a_burst_shorter_than_the_interval_is_kept(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    clock = Clock()
    q = RxQueue(rx, clock)
    _fill(tx, rx, q, q.low)
    q.drained(False)  # above the default limit: the clock starts
    clock.t += RxQueue.INTERVAL / 2
    q.drained(False)
    assert not q.clamped and _limit(rx) == q.high
    _empty(rx)
    q.drained(True)  # emptied: the burst is over, whatever the clock says
    clock.t += RxQueue.INTERVAL * 10
    q.drained(False)  # nothing queued: not above the default limit
    assert not q.clamped and q.clamps == 0


def test_a_standing_queue_is_cut_back_then_the_room_returns(pair) -> None:  # type: ignore[no-untyped-def]
    tx, rx = pair
    clock = Clock()
    q = RxQueue(rx, clock)
    _fill(tx, rx, q, q.low)
    q.drained(False)
    clock.t += RxQueue.INTERVAL * 1.5
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
    clock.t += RxQueue.INTERVAL * 10
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
