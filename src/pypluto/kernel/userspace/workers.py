"""The packet threads of the userspace plane: pollers and ordered writers.

A :class:`Worker` blocks in ``poll`` on the descriptors its plane hands it
(:class:`PacketSource`) and drains each ready one in batches; a
:class:`Writer` runs one function on queued items in order (the kernel's
share of a big send or TUN write then runs without the GIL while the reading
thread encrypts the next batch).  Neither knows anything of ESP or of the
plane's tables.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger("pypluto.kernel.userspace")


class PacketSource(Protocol):
    """What a worker needs from its plane."""

    @property
    def stopping(self) -> bool:
        """True once the plane is closing: the worker returns."""
        ...

    def poll_handlers(self, tun: bool, net: bool, batch: int
                      ) -> dict[int, Callable[[], None]]:
        """Descriptor -> drain function for the TUN device and/or the network sockets."""
        ...


class Writer:
    """A thread that runs ``fn(item)`` for items put in order.

    The queue is short and ``put`` waits for room: the reading thread then
    stops reading, the packets wait in the kernel's queues (TUN device,
    socket), whose limits TCP sees, and not in ours.  A deep queue here held
    up to 512 batches (about 200 ms under TCP load: ping latency went from 8 to
    35 ms) while TCP saw no loss.  After ``WAIT`` seconds without room the
    consumer is hopelessly behind and the item is dropped.
    """

    LIMIT = 8  # batches queued or in progress (up to 64 packets each); ``limit`` overrides
    WAIT = 0.5  # seconds put waits for room before it drops the item

    def __init__(self, fn: Callable[[Any], None], name: str, limit: int = LIMIT) -> None:
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._fn = fn
        # weight (packets, >= 1 per item) put, written by the producing thread only, and
        # finished, by the writer only: equal when nothing is queued or in progress
        self._put_w = 0
        self._done_w = 0
        self._room = threading.Semaphore(limit)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        """The weight (packets) of the items queued or in progress; 0 when idle.

        Read by the producing thread: the count may fall while it looks, never rise."""
        return self._put_w - self._done_w

    def put(self, item: Any, weight: int = 1) -> bool:
        """Queue ``item``, waiting while ``limit`` are ahead of it; False: dropped.

        ``weight``: how many packets the item carries, at least 1 (see :attr:`backlog`)."""
        if not self._room.acquire(timeout=self.WAIT):
            return False
        self._put_w += weight
        self._q.put((item, weight))
        return True

    def run_or_put(self, item: Any, weight: int = 1) -> bool:
        """Run ``fn(item)`` in the caller's thread when the writer is idle, else queue it.

        For a small item the hand-off (a wake-up and a GIL switch per batch) costs
        more than the system call it would move; running it here while nothing is
        queued or in progress keeps the order.  One producing thread only.
        """
        if self._put_w != self._done_w:
            return self.put(item, weight)
        try:
            self._fn(item)
        except Exception:  # noqa: BLE001 - never let a packet kill the plane
            log.exception("userspace ESP writer")
        return True

    def stop(self) -> None:
        self._q.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def _run(self) -> None:
        set_thread_name(self._thread.name)
        get = self._q.get
        fn = self._fn
        while True:
            entry = get()
            if entry is None:
                return
            item, weight = entry
            try:
                fn(item)
            except Exception:  # noqa: BLE001 - never let a packet kill the plane
                log.exception("userspace ESP writer")
            self._done_w += weight
            self._room.release()


def set_thread_name(name: str) -> None:
    """Name the OS thread (prctl PR_SET_NAME) so ``top -H`` shows which path is busy."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Worker:
    """One packet thread: blocks in poll, then drains each ready descriptor in batches."""

    BATCH = 64  # packets per descriptor before looking at the others again

    def __init__(self, plane: PacketSource, *, tun: bool, net: bool) -> None:
        self.plane = plane
        self.tun = tun
        self.net = net
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(
            target=self._run, name="esp-" + ("tun+net" if tun and net else "tun" if tun
                                             else "net"), daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """Have the worker rebuild its poll set (descriptors changed, or the plane stops)."""
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def stop(self) -> None:
        self.kick()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout=2)
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _run(self) -> None:
        set_thread_name(self._thread.name)
        pl = self.plane
        wake = self._wake_r
        while not pl.stopping:
            handlers = pl.poll_handlers(self.tun, self.net, self.BATCH)
            poller = select.poll()
            for fd in handlers:
                poller.register(fd, select.POLLIN)
            poller.register(wake, select.POLLIN)
            rebuild = False
            while not pl.stopping and not rebuild:
                try:
                    events = poller.poll()
                except InterruptedError:
                    continue
                for fd, ev in events:
                    if ev & select.POLLNVAL:  # a descriptor closed under us
                        rebuild = True
                        fn = handlers.get(fd)
                        if fn is not None:
                            try:
                                fn()  # lets the drain notice and detach what was closed
                            except Exception:  # noqa: BLE001
                                log.exception("userspace ESP worker")
                        continue
                    if fd == wake:
                        try:
                            os.read(wake, 512)
                        except OSError:
                            pass
                        rebuild = True
                        continue
                    fn = handlers.get(fd)
                    if fn is not None:
                        try:
                            fn()
                        except Exception:  # noqa: BLE001 - never let a packet kill the plane
                            log.exception("userspace ESP worker")
