"""Raw-socket I/O of AH (IP protocol 51) for a userspace data plane.

:mod:`pypluto.kernel.ah` works on whole IP packets because the AH ICV covers
the IP header (RFC 4302 §3.3.3).  This module moves such packets on and off
the wire without the kernel's IPsec:

* sending: an ``IPPROTO_RAW`` socket, where the packet carries its own IP
  header (Linux: ``IP_HDRINCL`` / ``IPV6_HDRINCL`` are implied, ip(7), ipv6(7)),
  so the Identification, length and addresses the ICV covers are exactly
  those sent; the kernel fills in only the IPv4 checksum, a mutable field;
* receiving: an ``IPPROTO_AH`` raw socket.  IPv4 raw sockets deliver the IP
  header as received (after reassembly); IPv6 raw sockets deliver no IPv6
  header, so it is rebuilt from the source address and the destination of
  ``IPV6_PKTINFO`` (RFC 3542 §6.1) with :func:`pypluto.kernel.ah.ipv6_header`.
  Extension headers before AH are not seen there (their ICV then fails).

Both sockets may carry a firewall mark (``SO_MARK``) so that a plane whose
capture rules skip marked packets never captures its own AH packets.
"""

from __future__ import annotations

import ipaddress
import socket

from pypluto.kernel.ah import IPPROTO_AH, ipv6_header
from pypluto.kernel.base import BackendError

__all__ = ["AHSockets"]

IPPROTO_RAW = 255
SO_MARK = 36
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)


class AHSockets:
    """The send and receive sockets of AH for one address family (4 or 6)."""

    def __init__(self, version: int, mark: int | None = None) -> None:
        self.version = version
        fam = socket.AF_INET6 if version == 6 else socket.AF_INET
        opened: list[socket.socket] = []
        try:
            self.rx = socket.socket(fam, socket.SOCK_RAW, IPPROTO_AH)
            opened.append(self.rx)
            self.tx = socket.socket(fam, socket.SOCK_RAW, IPPROTO_RAW)
            opened.append(self.tx)
            if version == 6:
                self.rx.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
            if mark is not None:
                for s in opened:
                    s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
            for s in opened:
                s.setblocking(False)
        except OSError as e:
            for s in opened:
                s.close()
            raise BackendError(f"cannot open raw AH sockets (IPv{version}): "
                               f"{e.strerror or e}") from None

    def fileno(self) -> int:
        """The receive socket's descriptor (for poll)."""
        return self.rx.fileno()

    def send(self, packet: bytes, dst: str) -> int:
        """Send one whole IP packet (header included) to ``dst``."""
        return self.tx.sendto(packet, (dst, 0))

    def recv_into(self, buf: memoryview) -> memoryview | None:
        """One received AH packet as a whole IP packet in ``buf``, or None (nothing/error).

        ``buf`` needs 40 bytes more than the largest packet (the rebuilt IPv6 header).
        """
        try:
            if self.version == 4:
                n = self.rx.recv_into(buf)
                return buf[:n] if n else None
            n, anc, _flags, addr = self.rx.recvmsg_into([buf[40:]], 64)
        except OSError:
            return None
        dst = None
        for level, typ, data in anc:
            if level == socket.IPPROTO_IPV6 and typ == IPV6_PKTINFO and len(data) >= 16:
                dst = ipaddress.IPv6Address(bytes(data[:16]))
        if dst is None or not n:
            return None
        src = ipaddress.IPv6Address(str(addr[0]).split("%", 1)[0])
        buf[:40] = ipv6_header(src, dst, n)
        return buf[:40 + n]

    def close(self) -> None:
        self.rx.close()
        self.tx.close()
