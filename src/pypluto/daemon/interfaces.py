"""The host's local IP addresses (rtnetlink RTM_GETADDR dump), for the IKE sockets.

pluto listens on every local address (or only ``--listen``); it needs the
interface name for its ``adding UDP interface`` log lines as well.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
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
    out.sort(key=lambda a: (a.addr.version, a.ifindex, int(a.addr)))
    return out


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
        if alen < 4:
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
