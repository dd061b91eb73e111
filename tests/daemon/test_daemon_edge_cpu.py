"""The daemon edge's cheap paths (issue 18) keep pluto's behaviour.

* log lines written once per turn of the event loop: every line, in order, none
  held past the turn it was logged in, other threads and shutdown write at once;
* the lines a socket's batch of datagrams logs are written when the batch ends,
  with no turn of the loop scheduled for them;
* the engine's one timer kept while armed for an earlier deadline, and a fire
  before the (moved) deadline calls nothing in the engine;
* ``--nhelpers=-1`` on one CPU: key exchanges inline; an explicit count obeyed;
* ``send``'s cached socket lookup forgotten when an interface closes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import CrashReports, HelperPool
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.sockets import IKEInterface, UDPSockets
from pypluto.daemon.waiters import Waiters
from pypluto.ike.actions import Endpoint, Log


def test_log_lines_wait_for_the_end_of_the_loop_turn(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path), logtime=False)

    async def body() -> None:
        loop = asyncio.get_running_loop()
        log.defer_writes(loop.call_soon)
        log.log("one", conn="c", serial=1)
        log.log("established IKE SA; two", conn="c", serial=2)
        assert path.read_text() == ""  # still in this turn
        await asyncio.sleep(0)  # the turn ends: both lines, in order, one write
        assert path.read_text() == '"c" #1: one\n"c" #2: established IKE SA; two\n'
        log.log("three")
        t = threading.Thread(target=log.log, args=("from a thread",))
        t.start()
        t.join()
        # another thread writes at once, after what the loop had buffered
        assert path.read_text().endswith("three\nfrom a thread\n")
        log.log("four")
        log.defer_writes(None)  # shutdown: what waits is written now
        assert path.read_text().endswith("four\n")
        log.log("five")
        assert path.read_text().endswith("five\n")

    asyncio.run(body())
    log.log("after the loop")
    log.close()
    assert path.read_text().splitlines()[-1] == "after the loop"


def test_a_closed_loop_never_loses_a_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path), logtime=False)
    loop = asyncio.new_event_loop()
    log.defer_writes(loop.call_soon)
    loop.close()  # as after a crash of the main loop
    log.log("last words")
    assert path.read_text() == "last words\n"
    log.close()


def test_timestamps_are_per_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path))
    log.log("a")
    log.log("b")
    log.close()
    a, b = path.read_text().splitlines()
    # "Dec  5 04:29:48.433692: a": the second is formatted once, the microseconds per line
    assert a.endswith(": a") and b.endswith(": b") and a[15] == "." and a[22:24] == ": "


class _Engine:
    """Scripted: one deadline, moved at will; counts handle_timer calls."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired = 0

    def next_timer(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> list[Any]:
        self.fired += 1
        self.deadline = None
        return [Log("timer fired")]


def _driver(tmp_path: Path) -> tuple[EngineDriver, _Engine, PlutoLogger]:
    log = PlutoLogger(logfile=str(tmp_path / "log"), logtime=False)
    sockets = UDPSockets(log, 500, 4500, None)
    d = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(), sockets)
    eng = _Engine()
    d.engine = eng  # type: ignore[assignment]
    return d, eng, log


def test_timer_kept_for_a_later_deadline_and_no_early_engine_call(tmp_path: Path) -> None:
    d, eng, log = _driver(tmp_path)
    loop = asyncio.new_event_loop()  # never run: the fires are called by hand
    d.loop = loop
    try:
        now = loop.time()
        eng.deadline = now + 50
        d.schedule_timer()
        first = d._timer
        assert first is not None
        eng.deadline = now + 150  # the oldest SA finished: a later deadline
        d.schedule_timer()
        assert d._timer is first and not first.cancelled()  # kept: no new handle
        d._timer = None
        d._fire_timer()  # the kept handle fires at now + 50
        assert eng.fired == 0  # not due: the engine is not called
        assert d._timer is not None and d._timer is not first
        assert abs(d._timer.when() - (now + 150)) < 1e-6  # re-armed for the real deadline
        eng.deadline = now + 20  # an earlier deadline: re-armed for it at once
        later = d._timer
        d.schedule_timer()
        assert later.cancelled() and abs(d._timer.when() - (now + 20)) < 1e-6
        d._timer = None
        d._fire_timer()  # due: handle_timer runs
        assert eng.fired == 1 and eng.deadline is None and d._timer is None
        d.stop()
    finally:
        loop.close()
    log.close()
    assert (tmp_path / "log").read_text().count("timer fired") == 1


def test_a_socket_batch_writes_its_lines_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path), logtime=False)
    scheduled: list[Any] = []
    log.defer_writes(scheduled.append)  # what would be a turn of the loop
    s = UDPSockets(log, 0, 0, None)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    iface = IKEInterface("lo", ipaddress.ip_address("127.0.0.1"), rx.getsockname()[1], rx,
                         False)
    seen: list[str] = []

    def on_ike(data: bytes, local: Endpoint, remote: Endpoint) -> None:
        log.log(f"established IKE SA; {data.decode()}", conn="c", serial=len(seen) + 1)
        seen.append(path.read_text())  # nothing written while the batch runs

    s.on_ike = on_ike
    try:
        for i in range(3):
            tx.sendto(b"m%d" % i + bytes(30), ("127.0.0.1", iface.port))
        s._readable(iface)
        assert seen == ["", "", ""]
        lines = path.read_text().splitlines()
        assert [ln.split(";")[0] for ln in lines] == \
            ['"c" #1: established IKE SA', '"c" #2: established IKE SA',
             '"c" #3: established IKE SA']
        assert scheduled == []  # written at the batch's end: no flush left for the loop
        log.log("outside a batch")  # the usual way again: at the end of the loop's turn
        assert len(scheduled) == 1 and path.read_text().count("\n") == 3
        scheduled.pop()()
        assert path.read_text().endswith("outside a batch\n")
    finally:
        rx.close()
        tx.close()
        log.close()


def test_auto_helpers_compute_inline_on_one_cpu() -> None:
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    auto, fixed = HelperPool(-1), HelperPool(2)
    old = os.sched_getaffinity(0)
    result: dict[str, bool] = {}

    def pinned() -> None:  # a thread's own affinity: the test process keeps its CPUs
        os.sched_setaffinity(0, {min(old)})
        result["auto"], result["fixed"] = auto.one_cpu(), fixed.one_cpu()

    try:
        t = threading.Thread(target=pinned)
        t.start()
        t.join()
        assert result == {"auto": True, "fixed": False}
        if len(old) > 1:
            assert not auto.one_cpu()  # several CPUs: the helpers take the jobs
    finally:
        auto.close()
        fixed.close()


def test_send_forgets_a_closed_interface(tmp_path: Path) -> None:
    log = PlutoLogger(logfile=str(tmp_path / "log"), logtime=False)
    s = UDPSockets(log, 0, 0, None)
    lo = ipaddress.ip_address("127.0.0.1")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(5)
    mine = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mine.bind(("127.0.0.1", 0))
    iface = IKEInterface("lo", lo, mine.getsockname()[1], mine, natt=False)
    s.ikeport = iface.port
    s.interfaces.append(iface)
    local, remote = iface.local, Endpoint(lo, peer.getsockname()[1])
    s.send(b"first", local, remote)
    assert peer.recv(100) == b"first"
    s.close(iface)
    s.send(b"second", local, remote)  # no interface any more: said, not sent
    log.close()
    assert "no interface for" in (tmp_path / "log").read_text()
    peer.close()


@pytest.mark.parametrize("debug", [False, True])
def test_a_debug_line_is_formatted_only_when_logged(tmp_path: Path, debug: bool) -> None:
    """Issue 18: a lazy debug line nobody logs is never formatted; the retransmission
    line (eager) still gives Libreswan's "will wait" message either way."""
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path), logtime=False, debug={"base"} if debug else None)
    d = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(),
                     UDPSockets(log, 500, 4500, None))
    d.retransmit_interval = lambda name: 0.5
    made: list[int] = []

    def make() -> str:
        made.append(1)
        return "IKE SA details"

    d.execute([Log.lazy(make, level="debug", conn="c", serial=1),
               Log("retransmitting request (message ID 1, try 2)", level="debug",
                   conn="c", serial=1),
               Log("established IKE SA", conn="c", serial=1)])
    log.close()
    text = path.read_text()
    assert made == ([1] if debug else [])
    assert ('| "c" #1: IKE SA details' in text) == debug
    assert '"c" #1: retransmission; will wait 1 seconds for response' in text
    assert '"c" #1: established IKE SA' in text


def test_tune_gc_freezes_startup_objects_and_raises_the_young_threshold() -> None:
    import gc

    from pypluto.daemon import server

    before = gc.get_threshold()
    try:
        kept = [object() for _ in range(10)]  # noqa: F841 (alive across the freeze)
        server.tune_gc()
        assert gc.get_threshold()[0] == server.GC_GEN0_THRESHOLD
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
