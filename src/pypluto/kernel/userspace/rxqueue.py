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
took the ping round trip under a TCP flow from about 4 to 11-13 ms).

:class:`RxQueue` is the middle way, a small active queue management in the
spirit of CoDel (RFC 8289 §2: a queue above its target for longer than an
interval is a standing queue, not a burst): the socket's limit is raised to
``FACTOR`` times the default; after each drain the plane reports whether the
queue was emptied; when it was not and more than the default limit has stayed
queued for ``INTERVAL`` seconds, the limit drops back to the default (the kernel
then drops arrivals at the tail, as it does today, and TCP sees the loss) until
a drain finds the queue at or below it again.  Nothing queued is dropped by us,
and no ESP processing changes: packets that are dropped never reached the
plane, as with a default-sized queue.

Tried and not kept: a CoDel head drop on top of this (RFC 8289: when more
than a quarter of the default limit stayed queued after every drain for
10 ms, the next drain discarded the head datagram unread, then more at
interval/sqrt(count)).  Under one TCP flow the queue (2,304 bytes of true size
per full-sized packet) mostly empties within one to three drains, with
episodes of 10-30 ms up to 300-850 KB; the head drop fired about 150 times in
10 s of such a flow, but the ping's median under TCP load was 4.1 ms with it
and 4.2 ms without (15 and 12 alternating runs of bench/esp_daemons.py; the
default limit 3.0 ms, strongSwan's pair 8.5 ms).  A burst room of twice the
default instead of four times gave 3.5 ms at about a fifth less TCP
throughput (5 runs).

Where the ping under TCP load waits (bench/esp_daemons.py, the receive queues
of both namespaces sampled every ~0.3 s during the row): the TUN devices' qdiscs
(mq over pfifo_fast) never held a packet, the ESP-in-UDP sockets are idle, and
the receiving end's raw ESP socket held 0 bytes at the median, 376 KB at the
90th percentile and up to 852 KB (the four-times limit): about 160-370 full-sized
packets, 3-6 ms of the plane's decryption, which the echo request waits behind.
Timed per packet (tcpdump at both TUN devices and the veth) the echo request
spent 0.73 ms at the median (mean 1.58) between the wire and the receiving TUN
device, this queue included, against 2.55 ms (mean 4.34) in the sender's plane,
which is where the fix went (backend.UserspaceBackend._sparse_first).
Tried and not kept: three times the default and 5 ms (RFC 8289's target) above
the default before the cut, instead of four times and 20 ms.  Alone it took the
ping under TCP load from 6.59 to 5.07 ms (medians of 6 and 9 alternating runs,
spreads 5.83-7.42 and 4.71-6.88 ms, load average 3-7); once the sender's side
stopped holding the ping (backend.UserspaceBackend._sparse_first) it gave 2.37
against 2.86 ms (4 runs each, spreads 1.89-3.99 and 2.59-3.49) but lost more
pings (0.4-5.0% against 0.4-2.2%: the cut-back queue drops at its tail, pings
included) at no more TCP.  Twice the default at 5 ms, and three times at 2 ms,
were no better within that noise (3 runs each).
"""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Callable

log = logging.getLogger("pypluto.kernel.userspace")

SO_MEMINFO = 55  # Linux 3.18: the socket's memory counters (SK_MEMINFO_*)
_MEMINFO = struct.Struct("=9I")  # SK_MEMINFO_RMEM_ALLOC is the first


class RxQueue:
    """The receive-queue limit of one raw socket (see the module docstring)."""

    FACTOR = 4  # burst room: this many times the socket's default limit
    INTERVAL = 0.02  # seconds above the default limit before it is a standing queue

    def __init__(self, sock: socket.socket, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.sock = sock
        self._now = clock
        self.low = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.high = self.low
        self.clamped = False
        self.clamps = 0  # times a standing queue was cut back to the default limit
        self._above_since: float | None = None
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

    def drained(self, emptied: bool) -> None:
        """After a drain: ``emptied`` when the last receive call found the queue empty."""
        if not self.active:
            return
        if not emptied:
            q = self.queued()
            if q is None:
                self.active = False
                self._set(self.low)
                return
            emptied = q <= self.low
        if emptied:
            self._above_since = None
            if self.clamped:
                self.clamped = not self._set(self.high)
            return
        now = self._now()
        if self._above_since is None:
            self._above_since = now
        elif not self.clamped and now - self._above_since >= self.INTERVAL:
            self.clamped = self._set(self.low)
            self.clamps += self.clamped
