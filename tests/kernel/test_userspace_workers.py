"""The userspace plane's writer threads (kernel/userspace/workers.py): order and hand-off."""

from __future__ import annotations

import threading

from pypluto.kernel.userspace.workers import Writer


def test_run_or_put_runs_inline_when_idle_and_queues_behind_work_in_progress() -> None:
    done: list[tuple[str, int]] = []
    release = threading.Event()
    started = threading.Event()
    finished = threading.Event()

    def fn(item: int) -> None:
        if item == 1:  # the first queued item blocks the writer until released
            started.set()
            release.wait(10)
        done.append((threading.current_thread().name, item))
        if item == 3:
            finished.set()

    w = Writer(fn, "test-writer")
    try:
        assert w.run_or_put(0)  # idle: runs here, in this thread
        assert done == [(threading.current_thread().name, 0)]
        assert w.put(1)
        assert started.wait(10)
        assert w.run_or_put(2)  # item 1 is in progress: 2 and 3 must wait behind it
        assert w.run_or_put(3)
        assert [i for _, i in done] == [0]
        release.set()
        assert finished.wait(10)
        assert [i for _, i in done] == [0, 1, 2, 3]
        assert {n for n, i in done if i} == {"test-writer"}
    finally:
        release.set()
        w.stop()


def test_put_waits_for_room_and_drops_when_the_writer_is_hopelessly_behind() -> None:
    release = threading.Event()
    done: list[int] = []
    w = Writer(lambda item: (release.wait(10), done.append(item)), "test-writer-full")
    w.WAIT = 0.05
    try:
        accepted = [w.put(i) for i in range(Writer.LIMIT + 2)]
        assert accepted == [True] * Writer.LIMIT + [False, False]  # the queue stays short
        release.set()
        assert w.put(99)  # room again: waits for it rather than dropping
        w.stop()
        assert done == [*range(Writer.LIMIT), 99]
    finally:
        release.set()
        w.stop()
