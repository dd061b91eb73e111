"""The TUN device of the userspace data plane (Linux ``/dev/net/tun``, IFF_TUN|IFF_NO_PI).

The device exists as long as its file descriptor is open (it is not made
persistent), so a crashed daemon leaves no device behind.
"""

from __future__ import annotations

import fcntl
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
IFNAMSIZ = 16


def open_tun(name: str, offload: bool = False) -> tuple[int, str, bool]:
    """Create the TUN device ``name``; return its (non-blocking) fd, the kernel's name, and
    whether TCP segmentation offload is on (every read and write then carries a
    ``virtio_net_hdr``, see :mod:`.offload`)."""
    if not name or len(name.encode()) >= IFNAMSIZ or "/" in name or " " in name:
        raise BackendError(f"invalid TUN device name {name!r}")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise BackendError(f"cannot open /dev/net/tun: {e.strerror}") from None
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
        ifr = struct.pack("16sH22x", name.encode(), flags)
        res = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        os.close(fd)
        raise BackendError(f"cannot create TUN device {name}: {e.strerror}") from None
    if offload:
        try:
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        except OSError:
            os.close(fd)
            return open_tun(name, False)
    os.set_blocking(fd, False)
    return fd, res[:IFNAMSIZ].rstrip(b"\0").decode(), offload
