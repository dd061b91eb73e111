"""Trap policies on the userspace plane: acquires and the negotiation hold queue.

A trap is an outbound policy without an SA (``auto=route``/``ondemand``): its
route already sends the traffic into the TUN.  The first packet that matches it
becomes an ``SAAcquire`` for the daemon (what XFRM_MSG_ACQUIRE is for the kernel
plane; RFC 7296 §2.9: the packet's addresses and ports are the first traffic
selectors the initiator may propose), and, as with Libreswan's
``negotiationshunt=hold``, the packets wait here (bounded per reqid and in total,
for at most ``HOLD_SECONDS``) until the outbound SA is installed, then leave in
order.  Acquires are rate-limited per reqid so that a flood of packets costs the
daemon one acquire per ``ACQUIRE_INTERVAL``.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import deque
from collections.abc import Callable

from pypluto.kernel.userspace.selectors import flow_of
from pypluto.params import PolicyParams, SAAcquire, TrafficSelector

HOLD_PER_REQID = 64  # packets held per trap while it negotiates
HOLD_TOTAL = 1024  # packets held over all traps
HOLD_SECONDS = 30.0  # held packets older than this are dropped
ACQUIRE_INTERVAL = 1.0  # at most one acquire per trap per this many seconds


def _host_ts(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, proto: int,
             port: int | None) -> TrafficSelector:
    net = ipaddress.ip_network(addr)
    if port is None or proto in (0, 1, 58):
        return TrafficSelector(net, proto)
    return TrafficSelector(net, proto, port, port)


def acquire_for(pkt: bytes, pol: PolicyParams) -> SAAcquire | None:
    """The acquire a packet raises on trap ``pol`` (the packet as the selectors)."""
    f = flow_of(pkt)
    if f is None:
        return None
    return SAAcquire(reqid=pol.reqid, src=_host_ts(f.src, f.proto, f.sport),
                     dst=_host_ts(f.dst, f.proto, f.dport), local=pol.tmpl_src,
                     remote=pol.tmpl_dst)


class HoldQueue:
    """Packets caught by trap policies, waiting for their SA (thread safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[int, deque[tuple[float, bytes]]] = {}
        self._total = 0
        self._last_acquire: dict[int, float] = {}
        self.held = 0  # packets ever held
        self.dropped = 0  # packets dropped because a queue was full or too old
        self.acquires = 0  # acquires raised

    def __len__(self) -> int:
        return self._total

    def trap(self, pkt: bytes, pol: PolicyParams, hold: bool = True) -> SAAcquire | None:
        """Hold ``pkt`` for ``pol``; the acquire to raise now, or None (rate limit)."""
        now = self._clock()
        with self._lock:
            q = self._held.setdefault(pol.reqid, deque())
            while q and now - q[0][0] > HOLD_SECONDS:
                q.popleft()
                self._total -= 1
                self.dropped += 1
            if not hold:
                self.dropped += 1
            elif len(q) >= HOLD_PER_REQID or self._total >= HOLD_TOTAL:
                self.dropped += 1
            else:
                q.append((now, pkt))
                self._total += 1
                self.held += 1
            last = self._last_acquire.get(pol.reqid)
            if last is not None and now - last < ACQUIRE_INTERVAL:
                return None
            self._last_acquire[pol.reqid] = now
        ev = acquire_for(pkt, pol)
        if ev is not None:
            self.acquires += 1
        return ev

    def release(self, reqid: int) -> list[bytes]:
        """The packets held for ``reqid`` (its SA is installed), oldest first."""
        now = self._clock()
        with self._lock:
            q = self._held.pop(reqid, None)
            self._last_acquire.pop(reqid, None)
            if not q:
                return []
            self._total -= len(q)
            fresh = [p for t, p in q if now - t <= HOLD_SECONDS]
            self.dropped += len(q) - len(fresh)
            return fresh

    def forget(self, reqid: int) -> None:
        """Drop what is held for a trap that is removed."""
        self.dropped += len(self.release(reqid))

    def clear(self) -> None:
        with self._lock:
            self.dropped += self._total
            self._held.clear()
            self._last_acquire.clear()
            self._total = 0
