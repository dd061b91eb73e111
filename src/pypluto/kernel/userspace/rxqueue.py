"""Room for bursts on a raw ESP socket's receive queue, without a standing queue.

Plain ESP (IP protocol 50) reaches the plane through one raw socket per IP
version, whose receive queue is one FIFO limited by ``SO_RCVBUF`` (the system
default, 208 KiB here: about 90 full-sized packets).  The peer's plane sends
in bursts of up to 64 packets (``sendmmsg``), and on a busy host the packet
thread may wait some milliseconds for a CPU: a default-sized queue then
overflows although the thread keeps up on average (bench/esp_daemons.py, UDP
1,400 bytes: about half of what the sender encrypted was dropped there, with
the receiving thread idle most of the time).  A fixed larger buffer absorbs
those bursts but also lets TCP keep a standing queue in it (a 1 MiB buffer
took the ping round trip under a TCP flow from about 4 to 11-13 ms; four
times the default, with only the limit below, from about 4 to 6-7 ms).

:class:`RxQueue` is a small active queue management after CoDel (RFC 8289):
a queue that drains is a burst and is kept; a queue that stays above a small
target for a whole interval is a standing queue, which only delays every
packet (a ping behind a TCP flow), and is cut.

* Burst room: the socket's limit is raised to ``FACTOR`` times the default.
* Head drop (RFC 8289 §3-§4, with queued bytes standing in for the sojourn
  time, which a raw socket does not report without per-packet timestamps):
  after each drain that did not empty the queue the plane reads the bytes
  still queued (``SO_MEMINFO``).  When more than ``low // TARGET_DIV`` bytes
  (about 20 full-sized packets, under a millisecond of the plane's work) have
  stayed queued after every drain for ``INTERVAL`` seconds, the queue enters
  the dropping state: the next drain discards the datagram at the head of the
  queue, and further heads follow at ``INTERVAL / sqrt(count)`` (the control
  law of RFC 8289 §4.3, which signals a TCP sender once per round trip and
  faster while the queue persists), until a drain finds the queue at or below
  the target.  A dropped head is loss, no more: the plane discards it before
  it reads even its SPI, so it touches no SA, no replay window and no counter
  of an SA, and every packet that is processed gets every RFC 4303 §3.4.3
  check, in order.  Dropping at the head rather than the tail tells TCP of the
  congestion a queue's length sooner (RFC 8289 §5.1; RFC 7567 §4.2.1).
* Backstop: when more than the default limit stays queued for ``CLAMP_AFTER``
  seconds (a sender that does not slow down), the limit drops back to the
  default (the kernel drops arrivals at the tail, as with a default-sized
  queue) until a drain finds the queue at or below it again.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger("pypluto.kernel.userspace")

SO_MEMINFO = 55  # Linux 3.18: the socket's memory counters (SK_MEMINFO_*)
_MEMINFO = struct.Struct("=9I")  # SK_MEMINFO_RMEM_ALLOC is the first


class RxQueue:
    """The receive-queue management of one raw socket (see the module docstring)."""

    FACTOR = 4  # burst room: this many times the socket's default limit
    TARGET_DIV = 4  # standing-queue target: the default limit / this, in queued bytes
    INTERVAL = 0.01  # seconds above the target before the head is dropped (RFC 8289 §4.2)
    CLAMP_AFTER = 0.02  # seconds above the default limit before the limit returns to it

    def __init__(self, sock: socket.socket, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.sock = sock
        self._now = clock
        self.low = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.high = self.low
        self.target = self.low // self.TARGET_DIV
        self.clamped = False
        self.clamps = 0  # times a standing queue was cut back to the default limit
        self._above_since: float | None = None  # above the default limit since
        # CoDel's state (RFC 8289 §5): the end of the first interval above the
        # target, whether dropping, the drops of this dropping state, the next drop
        self._first_above: float | None = None
        self.dropping = False
        self._count = 0
        self._last_count = 0
        self._drop_next = 0.0
        self.due = 0  # heads the next drain discards (take_drops)
        self.dropped = 0  # heads discarded, all told
        self.active = self._set(self.low * self.FACTOR)
        if self.active:
            self.high = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self.active = self.high > self.low
        if not self.active:
            log.info("raw ESP socket: receive queue stays at %d bytes (no burst room)",
                     self.low)

    def _set(self, limit: int) -> bool:
        """Set the queue limit to about ``limit`` bytes (Linux doubles the value given)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, limit // 2)
        except OSError:
            return False
        return True

    def queued(self) -> int | None:
        """Bytes (true sizes) waiting in the queue, or None when the kernel does not say."""
        try:
            raw = self.sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
        except OSError:
            return None
        if len(raw) < 4:
            return None
        return int(_MEMINFO.unpack_from(raw.ljust(_MEMINFO.size, b"\0"))[0])

    def take_drops(self) -> int:
        """Before a drain: how many datagrams at the head of the queue to discard
        unread (counted in ``dropped`` by :meth:`discarded`)."""
        n, self.due = self.due, 0
        return n

    def discarded(self, n: int) -> None:
        """The drain discarded ``n`` head datagrams."""
        self.dropped += n

    def drained(self, emptied: bool) -> None:
        """After a drain: ``emptied`` when the last receive call found the queue empty."""
        if not self.active:
            return
        q = 0
        if not emptied:
            got = self.queued()
            if got is None:
                self.active = False
                self.due = 0
                self._set(self.low)
                return
            q = got
        now = self._now()
        self._limit(q, now)
        self._codel(q, now)

    def _limit(self, q: int, now: float) -> None:
        """The backstop: the default limit while more than it stays queued."""
        if q <= self.low:
            self._above_since = None
            if self.clamped:
                self.clamped = not self._set(self.high)
            return
        if self._above_since is None:
            self._above_since = now
        elif not self.clamped and now - self._above_since >= self.CLAMP_AFTER:
            self.clamped = self._set(self.low)
            self.clamps += self.clamped

    def _codel(self, q: int, now: float) -> None:
        """RFC 8289 §5.4-§5.5 with ``q`` (bytes queued after a drain) for the sojourn."""
        if q <= self.target:  # the queue drained to its target: a burst, or over
            self._first_above = None
            self.dropping = False
            return
        if self._first_above is None:
            self._first_above = now + self.INTERVAL
            return
        if self.dropping:
            if now >= self._drop_next:
                self._count += 1
                self.due += 1
                self._drop_next = self._next(self._drop_next)
            return
        if now >= self._first_above:
            self.dropping = True
            self.due += 1
            # RFC 8289 §5.5: a queue that was dropping recently resumes near its
            # last drop rate instead of starting over from one drop per interval
            delta = self._count - self._last_count
            recent = now - self._drop_next < 16 * self.INTERVAL
            self._count = delta if recent and delta > 1 else 1
            self._last_count = self._count
            self._drop_next = self._next(now)

    def _next(self, t: float) -> float:
        """The control law (RFC 8289 §4.3): drops closer together as they go on."""
        return t + self.INTERVAL / math.sqrt(self._count)
