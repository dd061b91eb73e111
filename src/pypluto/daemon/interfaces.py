"""The host's local IP addresses (rtnetlink RTM_GETADDR dump), for the IKE sockets.

pluto listens on every local address (or only ``--listen``); it needs the
interface name for its ``adding UDP interface`` log lines as well.

As Libreswan 5.2 (kernel_iface*.c, iface.c): an IPv4 address on a device that is
not up (or is a bond's slave) is no interface; an address two devices share is no
interface at all ("IP interfaces X and Y share address A!": one socket each on the
same address and port would split the peer's packets between them); tentative (DAD)
and DAD-failed IPv6 addresses are skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections import Counter
from dataclasses import dataclass

from pypluto.params import IPAddress

RTM_GETADDR = 22
RTM_NEWADDR = 20
NLMSG_DONE = 3
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
SIOCGIFFLAGS = 0x8913
IFF_UP = 0x1
IFF_SLAVE = 0x800


@dataclass(frozen=True)
class LocalAddress:
    ifname: str
    ifindex: int
    addr: IPAddress

    @property
    def link_local(self) -> bool:
        return self.addr.version == 6 and self.addr.is_link_local


def _ifname(index: int) -> str:
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


def local_addresses() -> list[LocalAddress]:
    """Every address configured on this host (network namespace), IPv4 then IPv6."""
    out: list[LocalAddress] = []
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    try:
        s.bind((0, 0))
        req = struct.pack("=IHHII", 16 + 8, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        req += struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0)
        s.sendto(req, (0, 0))
        done = False
        while not done:
            data = s.recv(65536)
            off = 0
            while off + 16 <= len(data):
                length, mtype, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, off)
                if length < 16:
                    done = True
                    break
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    done = True
                    break
                if mtype == RTM_NEWADDR:
                    out.extend(_parse_addr(data[off + 16 : off + length]))
                off += (length + 3) & ~3
    finally:
        s.close()
    usable = {a.ifname: _usable_v4_device(a.ifname) for a in out if a.addr.version == 4}
    out = [a for a in out if a.addr.version == 6 or usable[a.ifname]]
    # an address on two devices is neither's (link-local ones are per device)
    seen = Counter(a.addr for a in out if not a.link_local)
    out = [a for a in out if a.link_local or seen[a.addr] == 1]
    out.sort(key=lambda a: (a.addr.version, a.ifindex, int(a.addr)))
    return out


def _usable_v4_device(ifname: str) -> bool:
    """Whether the device is up and no bond's slave (SIOCGIFFLAGS; unknown: not)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        req = struct.pack("16sH14x", ifname.encode()[:15], 0)
        flags = struct.unpack_from("16sH", fcntl.ioctl(u.fileno(), SIOCGIFFLAGS, req))[1]
        return bool(flags & IFF_UP) and not flags & IFF_SLAVE
    return False


def _parse_addr(body: bytes) -> list[LocalAddress]:
    if len(body) < 8:
        return []
    family, _plen, flags, _scope, index = struct.unpack_from("=BBBBI", body, 0)
    if flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
        return []
    attrs: dict[int, bytes] = {}
    off = 8
    while off + 4 <= len(body):
        alen, atype = struct.unpack_from("=HH", body, off)
        if alen < 4 or off + alen > len(body):  # RTA_OK: a truncated attribute ends it
            break
        attrs[atype] = body[off + 4 : off + alen]
        off += (alen + 3) & ~3
    raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
    if raw is None:
        return []
    if family == socket.AF_INET and len(raw) == 4:
        addr: IPAddress = ipaddress.IPv4Address(raw)
    elif family == socket.AF_INET6 and len(raw) == 16:
        addr = ipaddress.IPv6Address(raw)
    else:
        return []
    return [LocalAddress(_ifname(index), index, addr)]
