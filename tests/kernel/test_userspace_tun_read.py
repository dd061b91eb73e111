"""The TUN read buffer of the userspace plane: 16 KiB, grown to 64 KiB once a packet
filled it (the device truncates a packet to the buffer; that one is dropped and counted)."""

from __future__ import annotations

import socket
import struct

import pytest

from pypluto.kernel.userspace import offload
from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend


def ipv4(size: int, ident: int) -> bytes:
    """An IPv4 header (UDP, 192.0.2.1 -> 198.51.100.1) followed by filler up to ``size``."""
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size & 0xFFFF, ident, 0, 64, 17, 0,
                      bytes([192, 0, 2, 1]), bytes([198, 51, 100, 1]))
    return hdr + bytes(size - len(hdr))


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "virtio_net_hdr"])
def test_an_oversize_packet_is_counted_and_the_buffer_grows(vnet: bool) -> None:
    # a datagram socket stands in for the TUN device: a read shorter than the
    # datagram returns the buffer's worth and drops the rest, as tun_put_user does
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    b.setblocking(False)
    plane = object.__new__(UserspaceBackend)  # only what the TUN drains touch
    plane.counters = PlaneCounters()
    plane._tun_read = 16384
    plane._tun_fd = plane._tun_prio = b.fileno()
    plane._flow = {}
    plane.offload = vnet
    plane._sparse_until = 0.0
    seen: list[bytes] = []

    def resolve(pkt: bytes, key: bytes, x: object = None) -> None:
        seen.append(pkt)  # no policy: the drain counts it and goes on

    plane._resolve = resolve  # type: ignore[method-assign]
    head = offload.HDR_DATA_VALID if vnet else b""
    sizes = [20000, 1400, 20000, 65000]
    for i, n in enumerate(sizes):
        a.send(head + ipv4(n, i))
    try:
        plane._drain_tun(64)
    finally:
        a.close()
        b.close()
    # the first 20,000-byte packet filled the 16 KiB buffer: dropped, not passed on cut
    assert plane.counters.tun_oversize == 1
    assert plane._tun_read == 65536
    assert [len(p) for p in seen] == [1400, 20000, 65000]
    assert [struct.unpack_from("!H", p, 4)[0] for p in seen] == [1, 2, 3]
    assert plane.counters.no_policy == 3


def test_reads_of_mtu_sized_packets_keep_the_small_buffer() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    plane = object.__new__(UserspaceBackend)
    plane.counters = PlaneCounters()
    plane._tun_read = 16384
    plane._tun_fd = plane._tun_prio = b.fileno()
    plane._flow = {}
    plane.offload = False
    seen: list[bytes] = []
    plane._resolve = lambda pkt, key, x=None: seen.append(pkt)  # type: ignore[method-assign,func-returns-value]
    for n in (1400, 9000, 16383):
        a.send(ipv4(n, 0))
    plane._drain_tun(64)
    a.close()
    b.close()
    assert [len(p) for p in seen] == [1400, 9000, 16383]
    assert plane.counters.tun_oversize == 0 and plane._tun_read == 16384
