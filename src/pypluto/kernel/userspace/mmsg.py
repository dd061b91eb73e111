"""Several datagrams per system call on one socket: Linux ``sendmmsg(2)`` / ``recvmmsg(2)``.

Python's socket module has neither, and no maintained binding exists, so the
C library is called through :mod:`ctypes` (which releases the GIL for the
call).  Plain ESP (IP protocol 50, RFC 4303) travels on a raw socket, which has
no UDP GSO/GRO: without these calls every packet costs one system call, one
Python call with its address parsing, and one release and re-acquisition of
the GIL, which another packet thread then takes.

Each thread uses its own :class:`Batch` (buffers are reused, never shared).
Packets are copied into fixed slots of one preallocated buffer; anything
larger than a slot is left to the caller's per-packet path on sending.  On
receiving, each slot has a second iovec into an overflow area of its own, so a
datagram of up to 64 KiB arrives whole (plain ESP in transport mode carries whole
datagrams, RFC 4303 §3.3.4; before, one over a slot was cut and failed its ICV
check).  The overflow areas are an anonymous mapping: a page takes memory only
once a large datagram has been written to it.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import functools
import itertools
import mmap
import os
import socket
import struct
import threading
from typing import Any

SLOTS = 64
SLOT = 9216  # bytes per packet slot: an ESP packet of a jumbo-frame link with its IP header
OVERFLOW = 65536 - SLOT  # receive: the rest of the largest IP datagram, per slot


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


def _libc() -> tuple[Any, Any]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        send, recv = libc.sendmmsg, libc.recvmmsg
    except (OSError, AttributeError):
        return None, None
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    send.restype = ctypes.c_int
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                     ctypes.c_void_p]
    recv.restype = ctypes.c_int
    return send, recv


_SENDMMSG, _RECVMMSG = _libc()
AVAILABLE = _SENDMMSG is not None and _RECVMMSG is not None
MSG_DONTWAIT = 0x40
_U32 = struct.Struct("=I")
# an iovec is two unsigned longs (pointer, size_t) here: filled from array("L") slices
_FAST_IOV = (ctypes.sizeof(_IOVec) == 2 * ctypes.sizeof(ctypes.c_ulong)
             and ctypes.sizeof(ctypes.c_void_p) == ctypes.sizeof(ctypes.c_ulong)
             and array.array("L").itemsize == ctypes.sizeof(ctypes.c_ulong))


@functools.lru_cache(maxsize=1024)
def sockaddr(addr: tuple[str, int]) -> bytes:
    """The C ``sockaddr_in`` / ``sockaddr_in6`` for (address, port)."""
    host, port = addr[0], addr[1]
    if ":" in host:
        return struct.pack("=H", socket.AF_INET6) + struct.pack(
            "!HI16sI", port, 0, socket.inet_pton(socket.AF_INET6, host), 0)
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
            + socket.inet_aton(host) + bytes(8))


class Batch:
    """The buffers of one thread for :meth:`send` and :meth:`recv`."""

    def __init__(self) -> None:
        self.buf = bytearray(SLOTS * SLOT)
        self.view = memoryview(self.buf)
        base = ctypes.addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
        self.iov = (_IOVec * SLOTS)()
        self.hdrs = (_MMsgHdr * SLOTS)()
        self._hdrs_addr = ctypes.addressof(self.hdrs)
        self.names = (ctypes.c_char * (SLOTS * 28))()  # recv: the senders' addresses
        for i in range(SLOTS):
            self.iov[i].base = base + i * SLOT
            self.iov[i].len = SLOT
            h = self.hdrs[i].hdr
            h.iov = ctypes.addressof(self.iov[i])
            h.iovlen = 1
        # the iov_len and msg_len fields as plain integer views (faster than ctypes fields)
        self._iov_len = memoryview(self.iov).cast("B").cast("N")[1::2]  # type: ignore[call-overload]
        # send: the packets go back to back into buf in one copy and the iovecs are set
        # from arrays, both in C (receiving uses riov, below)
        self._fast = _FAST_IOV
        if self._fast:
            words = memoryview(self.iov).cast("B").cast("L")  # type: ignore[call-overload]
            self._iov_base_w = words[0::2]
            self._iov_len_w = words[1::2]
            self._base = base
        self._msg_len = memoryview(self.hdrs).cast("B").cast("I")[
            _MMsgHdr.len.offset // 4::ctypes.sizeof(_MMsgHdr) // 4]
        self._name = ctypes.create_string_buffer(28)
        self._name_key = b""
        self._mode = ""
        # receive: two iovecs per slot, the slot and its overflow area
        self._over = mmap.mmap(-1, SLOTS * OVERFLOW)
        over = ctypes.addressof(ctypes.c_char.from_buffer(self._over))
        self.riov = (_IOVec * (2 * SLOTS))()
        for i in range(SLOTS):
            self.riov[2 * i].base = base + i * SLOT
            self.riov[2 * i].len = SLOT
            self.riov[2 * i + 1].base = over + i * OVERFLOW
            self.riov[2 * i + 1].len = OVERFLOW

    def send(self, fd: int, name: bytes, wires: list[bytes]) -> int:
        """Send ``wires`` (each at most SLOT bytes) to ``name`` (:func:`sockaddr`) in
        one call; returns how many the kernel took (raises OSError when none)."""
        n = min(len(wires), SLOTS)
        if self._mode != "send" or name != self._name_key:
            self._name.raw = name
            self._name_key = name
            self._mode = "send"
            addr = ctypes.addressof(self._name)
            for i in range(SLOTS):
                h = self.hdrs[i].hdr
                h.name = addr
                h.namelen = len(name)
                h.iov = ctypes.addressof(self.iov[i])
                h.iovlen = 1
        if self._fast:
            if n < len(wires):
                wires = wires[:n]
            sizes = array.array("L", map(len, wires))
            data = b"".join(wires)
            self.buf[:len(data)] = data
            self._iov_len_w[:n] = sizes
            self._iov_base_w[:n] = array.array(
                "L", itertools.accumulate(sizes[:-1], initial=self._base))
        else:
            buf = self.buf
            lens = self._iov_len
            off = 0
            for i in range(n):
                w = wires[i]
                ln = len(w)
                buf[off:off + ln] = w
                lens[i] = ln
                off += SLOT
        sent = _SENDMMSG(fd, self._hdrs_addr, n, MSG_DONTWAIT)
        if sent < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return int(sent)

    def recv(self, fd: int, count: int = SLOTS) -> list[memoryview]:
        """Up to ``count`` datagrams in one call (an empty list when none is waiting).

        The views point into this batch's buffer: use them before the next call."""
        got = self._recvmmsg(fd, count)
        view = self.view
        lens = self._msg_len
        out = [view[i * SLOT:i * SLOT + lens[i]] for i in range(got)]
        if got and max(lens[:got]) > SLOT:  # rare: one check in C per batch
            for i in range(got):
                if lens[i] > SLOT:
                    out[i] = self._whole(i, lens[i])
        return out

    def _whole(self, i: int, n: int) -> memoryview:
        """Datagram ``i`` of ``n`` bytes (more than a slot): its slot and its overflow."""
        o = i * OVERFLOW
        return memoryview(bytes(self.view[i * SLOT:(i + 1) * SLOT])
                          + self._over[o:o + min(n - SLOT, OVERFLOW)])

    def _recvmmsg(self, fd: int, count: int) -> int:
        """One recvmmsg of up to ``count`` datagrams into the slots: how many came."""
        if self._mode != "recv":
            self._to_recv()
        got = _RECVMMSG(fd, self._hdrs_addr, min(count, SLOTS), MSG_DONTWAIT, None)
        return got if got > 0 else 0

    def _to_recv(self) -> None:
        """Set the headers and iovecs up for recvmmsg (after sends or at first use)."""
        self._mode = "recv"
        for i in range(SLOTS):
            h = self.hdrs[i].hdr
            h.name = None
            h.namelen = 0
            h.iov = ctypes.addressof(self.riov[2 * i])
            h.iovlen = 2

    def recv_payloads(self, fd: int, count: int = SLOTS) -> list[memoryview]:
        """:meth:`recv` on an IPv4 raw socket, whose datagrams begin with the IP header:
        the views start after that header (its IHL field), so the caller slices no more.

        A datagram shorter than its header claims gives an empty view."""
        got = self._recvmmsg(fd, count)
        view = self.view
        buf = self.buf
        lens = self._msg_len
        out = [view[b + ((buf[b] & 0x0F) << 2):b + lens[i]]
               for i, b in enumerate(range(0, got * SLOT, SLOT))]
        if got and max(lens[:got]) > SLOT:
            for i in range(got):
                if lens[i] > SLOT:
                    whole = self._whole(i, lens[i])
                    out[i] = whole[(whole[0] & 0x0F) << 2:]
        return out


_local = threading.local()


def batch() -> Batch:
    """This thread's :class:`Batch`."""
    b: Batch | None = getattr(_local, "batch", None)
    if b is None:
        b = _local.batch = Batch()
    return b
