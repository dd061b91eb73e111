"""Trap policies on the userspace plane: acquires and the negotiation hold queue.

A trap is an outbound policy without an SA (``auto=route``/``ondemand``): its
route already sends the traffic into the TUN.  The first packet that matches it
becomes an ``SAAcquire`` for the daemon (what XFRM_MSG_ACQUIRE is for the kernel
plane; RFC 7296 §2.9: the packet's addresses and ports are the first traffic
selectors the initiator may propose), and, as with Libreswan's
``negotiationshunt=hold``, the packets wait here (bounded per reqid and in total,
in packets and in bytes, for at most ``HOLD_SECONDS``) until the outbound SA is
installed, then leave in order.  Acquires are rate-limited per reqid so that a flood of packets costs the
daemon one acquire per ``ACQUIRE_INTERVAL``.

Shunts (``type=drop|reject`` conns) route their traffic into the TUN too and are
discarded there; a reject shunt answers with ICMP "administratively prohibited".
(A passthrough shunt never reaches the TUN: :mod:`.routes` gives it a ``throw``
route, so the host routes it as if the plane were not there.)
"""

from __future__ import annotations

import ipaddress
import struct
import threading
import time
from collections import deque
from collections.abc import Callable

from pypluto.kernel.userspace.selectors import flow_of
from pypluto.params import PolicyParams, SAAcquire, TrafficSelector

HOLD_PER_REQID = 64  # packets held per trap while it negotiates
HOLD_TOTAL = 1024  # packets held over all traps
HOLD_BYTES = 4 << 20  # bytes held over all traps (a TUN read may be a 64 KiB GSO packet)
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
        # how long a held packet waits (config setup xfrmlifetime=: what the kernel's
        # larval state lives, net.core.xfrm_acq_expires, on XFRM)
        self.hold_seconds = HOLD_SECONDS
        self._lock = threading.Lock()
        self._held: dict[int, deque[tuple[float, bytes]]] = {}
        self._total = 0
        self._bytes = 0
        self._stale_at = 0.0  # no held packet is older than hold_seconds before this
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
            full = self._total >= HOLD_TOTAL or self._bytes + len(pkt) > HOLD_BYTES
            if full and now >= self._stale_at:
                self._sweep(now)
            q = self._held.setdefault(pol.reqid, deque())
            self._expire(q, now)
            if not hold:
                self.dropped += 1
            elif len(q) >= HOLD_PER_REQID or self._total >= HOLD_TOTAL or \
                    self._bytes + len(pkt) > HOLD_BYTES:
                self.dropped += 1
            else:
                q.append((now, pkt))
                self._total += 1
                self._bytes += len(pkt)
                self.held += 1
            last = self._last_acquire.get(pol.reqid)
            if last is not None and now - last < ACQUIRE_INTERVAL:
                return None
            self._last_acquire[pol.reqid] = now
        ev = acquire_for(pkt, pol)
        if ev is not None:
            self.acquires += 1
        return ev

    def _sweep(self, now: float) -> None:
        """Drop what waited too long on every trap (the lock held): packets of a trap no
        later packet hits (its negotiation failed, its flow now has a failure shunt) must
        not keep the total full for the others.  Each queue is oldest first; until the
        oldest packet left is due, no sweep finds anything (so a flood that keeps the
        total full costs one sweep per expiry, not one per packet)."""
        oldest = None
        for reqid, q in list(self._held.items()):
            self._expire(q, now)
            if not q:
                del self._held[reqid]
            elif oldest is None or q[0][0] < oldest:
                oldest = q[0][0]
        self._stale_at = now if oldest is None else oldest + self.hold_seconds

    def _expire(self, q: deque[tuple[float, bytes]], now: float) -> None:
        """Drop the packets of one queue older than the hold time (the lock held)."""
        while q and now - q[0][0] > self.hold_seconds:
            self._bytes -= len(q.popleft()[1])
            self._total -= 1
            self.dropped += 1

    def release(self, reqid: int) -> list[bytes]:
        """The packets held for ``reqid`` (its SA is installed), oldest first."""
        now = self._clock()
        with self._lock:
            q = self._held.pop(reqid, None)
            self._last_acquire.pop(reqid, None)
            if not q:
                return []
            self._total -= len(q)
            self._bytes -= sum(len(p) for _t, p in q)
            fresh = [p for t, p in q if now - t <= self.hold_seconds]
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
            self._bytes = 0


# --- shunts (type=drop|reject conns) --------------------------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def icmp_unreachable(pkt: bytes) -> bytes | None:
    """The ICMP "administratively prohibited" error a reject shunt answers ``pkt`` with.

    RFC 792 / RFC 1812 §5.2.7.1 (type 3 code 13) for IPv4, RFC 4443 §3.1 (type 1 code 1)
    for IPv6: from the packet's destination back to its source, quoting as much of
    the packet as RFC 1812 §4.3.2.3 / RFC 4443 §2.4 (c) allow.  None for packets that
    must not get one (ICMP errors, fragments after the first, non-IP).
    """
    if len(pkt) < 20:
        return None
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 0xF) * 4
        if len(pkt) < ihl or struct.unpack_from("!H", pkt, 6)[0] & 0x1FFF:
            return None
        if pkt[9] == 1 and len(pkt) > ihl and pkt[ihl] not in (0, 8, 13, 15, 17):
            return None  # never answer an ICMP error
        quote = pkt[:ihl + 8]
        icmp = bytearray(struct.pack("!BBHI", 3, 13, 0, 0) + quote)
        struct.pack_into("!H", icmp, 2, _csum(bytes(icmp)))
        hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1,
                                    0, pkt[16:20], pkt[12:16]))
        struct.pack_into("!H", hdr, 10, _csum(bytes(hdr)))
        return bytes(hdr) + bytes(icmp)
    if v == 6 and len(pkt) >= 40:
        if pkt[6] == 58 and len(pkt) > 40 and pkt[40] < 128:
            return None
        quote6 = bytes(pkt[:1232 - 48])
        src, dst = pkt[24:40], pkt[8:24]
        body = bytearray(struct.pack("!BBHI", 1, 1, 0, 0) + quote6)
        pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
        struct.pack_into("!H", body, 2, _csum(pseudo + bytes(body)))
        hdr6 = struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 64, src, dst)
        return hdr6 + bytes(body)
    return None
