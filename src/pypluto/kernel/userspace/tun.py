"""The TUN device of the userspace data plane (Linux ``/dev/net/tun``, IFF_TUN|IFF_NO_PI).

The device exists as long as its file descriptor is open (it is not made
persistent), so a crashed daemon leaves no device behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct

from pypluto.kernel.base import BackendError

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
IFF_MULTI_QUEUE = 0x0100
# what the device offers the kernel (see open_tun): nothing; TUN_F_CSUM | TUN_F_TSO4 |
# TUN_F_TSO6 would hand the plane 64 KiB TCP super-packets to cut up in Python
TUN_OFFLOAD = 0
IFNAMSIZ = 16

log = logging.getLogger("pypluto.kernel.userspace")


def open_tun(name: str, offload: bool = False, multi_queue: bool = False
             ) -> tuple[int, str, bool]:
    """Create the TUN device ``name``; return its (non-blocking) fd, the kernel's name, and
    whether the ``virtio_net_hdr`` is on (every read and write then carries one, see
    :mod:`.offload`).  ``multi_queue``: IFF_MULTI_QUEUE, so that :func:`attach_queue`
    can add queues (falls back to one queue where the kernel refuses).

    The device offers the kernel no TCP segmentation or checksum offload
    (TUNSETOFFLOAD 0): the kernel then cuts TCP super-packets and sums their
    checksums in C before the plane reads them, one MSS-sized packet per read,
    which costs less CPU per packet than doing the same in Python (measured:
    5 us per segment in :func:`.offload.segment_tcp`, most of it the
    checksum, against about 1 us for the extra read).  The header is still
    on, so the plane writes merged TCP super-packets (receive offload) into
    the device.
    """
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
        raise BackendError(f"invalid TUN device name {name!r}")
    try:
        fd, kname = _attach(name, offload, multi_queue)
    except OSError as e:
        if multi_queue:
            return open_tun(name, offload, False)
        raise BackendError(f"cannot create TUN device {name}: {e.strerror}") from None
    if offload:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_OFFLOAD)
        except OSError:
            os.close(fd)
            return open_tun(name, False, multi_queue)
    return fd, kname, offload


def attach_queue(name: str, offload: bool) -> int | None:
    """Another queue (fd) of the multi-queue TUN device ``name``, or None.

    The kernel picks the queue a packet leaves the host by through the flow
    table of the device: a flow goes to the queue whose fd last wrote a packet
    of that flow (either direction; the hash is symmetric).  The plane writes
    sparse traffic (ICMP, small UDP) through this queue, so their replies and
    requests wait here and not behind a bulk TCP flow's packets in the first.
    """
    try:
        return _attach(name, offload, True)[0]
    except OSError as e:
        log.info("TUN device %s: no second queue (%s)", name, e.strerror)
        return None


def _attach(name: str, vnet_hdr: bool, multi_queue: bool) -> tuple[int, str]:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        flags = (IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
                 | (IFF_MULTI_QUEUE if multi_queue else 0))
        res = fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    os.set_blocking(fd, False)
    return fd, res[:IFNAMSIZ].rstrip(b"\0").decode()


def is_sparse(pkt: bytes | memoryview) -> bool:
    """ICMP, ICMPv6, and UDP datagrams of up to 256 bytes: traffic that should not
    queue behind bulk flows (ping, DNS, the peer's keepalives)."""
    if len(pkt) < 20:
        return False
    if pkt[0] >> 4 == 4:
        proto = pkt[9]
    elif len(pkt) >= 40:
        proto = pkt[6]
    else:
        return False
    return proto == 1 or proto == 58 or (proto == 17 and len(pkt) <= 256)
