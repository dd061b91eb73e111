"""Routes for ``leftsourceip``, ``mtu=`` and ``metric=`` with kernel IPsec (rtnetlink,
our own encoding).

With XFRM the policy decides what is encrypted, but the routing table still
decides whether a packet to the remote subnet is sent at all and with which
source address.  Like Libreswan's updown, we add ``REMOTE_TS via NEXTHOP dev
DEV src SOURCEIP`` for an outbound tunnel policy that names a source IP, so a
plain ``ping`` from this host uses an address inside the local selector
(RFC 4301 §4.4.1: the packet must match the policy to be protected).  A conn
with ``mtu=`` or ``metric=`` gets the route too (with or without a source), and
it carries them (``... mtu N metric M``, as the updown adds them); a remote
selector of everything (``0.0.0.0/0``, ``::/0``) is routed as its two halves, so
the host's default route stays as it is.

Our routes carry routing protocol number ``RTPROT_PYPLUTO`` so that
``flush_own`` (also after a crash) removes them and nothing else; a route
somebody else made is never replaced.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
from collections.abc import Callable

from pypluto.params import IPAddress, IPNetwork

from ..base import BackendError
from . import structs as S
from .netlink import XfrmError, XfrmSocket

NETLINK_ROUTE = 0
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

RTA_DST = 1
RTA_OIF = 4
RTA_GATEWAY = 5
RTA_PRIORITY = 6  # the route's metric
RTA_PREFSRC = 7
RTA_METRICS = 8  # nested RTAX_* attributes
RTA_TABLE = 15
RTAX_MTU = 2

RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255  # in a delete request: any scope
RTN_UNICAST = 1
RTPROT_PYPLUTO = 80  # our mark in the routing table (not one of the registered RTPROT_*)

RTM_NEWADDR = 20
RTM_DELADDR = 21
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFADDRMSG = struct.Struct("=BBBBi")  # family prefixlen flags scope index

RTMSG = struct.Struct("=BBBBBBBBI")  # family dst_len src_len tos table protocol scope type flags


def _rtmsg(
    family: int,
    dst_len: int,
    protocol: int = 0,
    table: int = RT_TABLE_MAIN,
    scope: int = RT_SCOPE_UNIVERSE,
) -> bytes:
    return RTMSG.pack(family, dst_len, 0, 0, table, protocol, scope, RTN_UNICAST, 0)


def encode_route(
    dst: IPNetwork, source: IPAddress | None, oif: int, gateway: IPAddress | None,
    delete: bool = False, mtu: int | None = None, metric: int | None = None,
) -> bytes:
    """The body of RTM_NEWROUTE (or RTM_DELROUTE) for one of our routes."""
    family = socket.AF_INET if dst.version == 4 else socket.AF_INET6
    if delete:
        scope = RT_SCOPE_NOWHERE
    else:
        scope = RT_SCOPE_LINK if gateway is None else RT_SCOPE_UNIVERSE
    body = _rtmsg(family, dst.prefixlen, RTPROT_PYPLUTO, scope=scope)
    body += S.nlattr(RTA_DST, dst.network_address.packed)
    if not delete:
        if source is not None:
            body += S.nlattr(RTA_PREFSRC, source.packed)
        if metric is not None:
            body += S.nlattr(RTA_PRIORITY, struct.pack("=I", metric))
        if mtu is not None:
            body += S.nlattr(RTA_METRICS, S.nlattr(RTAX_MTU, struct.pack("=I", mtu)))
        if oif:
            body += S.nlattr(RTA_OIF, struct.pack("=i", oif))
        if gateway is not None:
            body += S.nlattr(RTA_GATEWAY, gateway.packed)
    return body


def encode_addr(addr: IPAddress, index: int) -> bytes:
    """The body of RTM_NEWADDR / RTM_DELADDR for a host address (/32 or /128)."""
    family = socket.AF_INET if addr.version == 4 else socket.AF_INET6
    body = IFADDRMSG.pack(family, addr.max_prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    return body + S.nlattr(IFA_LOCAL, addr.packed) + S.nlattr(IFA_ADDRESS, addr.packed)


def _addr(raw: bytes) -> IPAddress:
    return ipaddress.ip_address(raw)


class RouteManager:
    """Adds and removes our source-IP routes in the main table of one network namespace."""

    def __init__(self, netns: str | None = None, log: Callable[[str], None] | None = None) -> None:
        self._nl = XfrmSocket(netns, protocol=NETLINK_ROUTE, label="route")
        self._log = log or (lambda _m: None)
        self._lock = threading.Lock()
        self._refs: dict[IPNetwork, int] = {}
        # a source address that was on no interface (a road warrior's address from the
        # gateway's CFG_REPLY): we put it on the peer's interface while routes use it
        self._route_src: dict[IPNetwork, IPAddress] = {}
        self._own_addrs: dict[IPAddress, tuple[int, int]] = {}  # addr -> (ifindex, routes)

    def close(self) -> None:
        self._nl.close()

    def lookup(self, peer: IPAddress) -> tuple[int, IPAddress | None]:
        """(output interface index, gateway or None) of the route to ``peer``."""
        family = socket.AF_INET if peer.version == 4 else socket.AF_INET6
        body = _rtmsg(family, peer.max_prefixlen, table=0) + S.nlattr(RTA_DST, peer.packed)
        for mtype, reply in self._nl.request(RTM_GETROUTE, body, what=f"lookup {peer}"):
            if mtype != RTM_NEWROUTE or len(reply) < RTMSG.size:
                continue
            attrs = S.parse_attrs(reply, RTMSG.size)
            oif = struct.unpack("=i", attrs[RTA_OIF][0][:4])[0] if RTA_OIF in attrs else 0
            gw = _addr(attrs[RTA_GATEWAY][0]) if RTA_GATEWAY in attrs else None
            return oif, gw
        raise BackendError(f"route: no route to the peer {peer}")

    def add(self, dst: IPNetwork, source: IPAddress | None, peer: IPAddress,
            mtu: int | None = None, metric: int | None = None, half: bool = False,
            nexthop: IPAddress | None = None) -> bool:
        """Route ``dst`` (with source ``source``, MTU and metric when given) the way
        ``peer`` is reached, or via ``nexthop`` (leftnexthop=) on the device that
        reaches it; False if skipped.  ``half``: one half of a remote selector of
        everything, routed even where it holds the peer (as Libreswan's updown)."""
        if (source is not None and dst.version != source.version) or dst.version != peer.version:
            self._log(f"| route: {dst} src {source} via {peer}: mixed families, no route added")
            return False
        if source is not None and peer in dst and mtu is None and metric is None \
                and not half:
            # A route for the peer's own range would capture the IKE/ESP packets (only a
            # source to set: skipped; with mtu=/metric=, or for everything, the route is
            # the point, and it takes the peer's own way, as Libreswan's updown adds it).
            self._log(f"| route: {dst} contains the peer {peer}, no route added")
            return False
        with self._lock:
            if self._refs.get(dst):
                self._refs[dst] += 1
                return True
        if nexthop is not None and nexthop != peer and nexthop.version == dst.version:
            # as the updown's ``via PLUTO_NEXT_HOP dev <the device toward it>``; the
            # gateway must be on a link of ours (the kernel would say only EINVAL)
            oif, beyond = self.lookup(nexthop)
            if beyond is not None:
                raise BackendError(f"route: the nexthop {nexthop} is not on a directly "
                                   f"connected network (the kernel reaches it via {beyond})")
            gw: IPAddress | None = nexthop
        else:
            oif, gw = self.lookup(peer)
        if source is not None:
            self._hold_address(source, oif)
        body = encode_route(dst, source, oif, gw, mtu=mtu, metric=metric)
        extra = (f"{f' mtu {mtu}' if mtu is not None else ''}"
                 f"{f' metric {metric}' if metric is not None else ''}")
        try:
            self._nl.request(
                RTM_NEWROUTE, body, flags=NLM_F_CREATE | NLM_F_EXCL,
                what=f"add {dst} src {source}{extra}",
            )
        except XfrmError as e:
            if source is not None:
                self._drop_address(source)
            if e.errno != errno.EEXIST:
                raise
            self._log(f"route: {dst} already has a route that is not ours; left as it is"
                      f"{f' (without{extra})' if extra else ''}")
            return False
        with self._lock:
            self._refs[dst] = self._refs.get(dst, 0) + 1
            if source is not None:
                self._route_src[dst] = source
        self._log(f"| route: added {dst} via {gw or 'link'} src {source}{extra}")
        return True

    def remove(self, dst: IPNetwork) -> None:
        """Drop one reference; the route goes with the last one."""
        with self._lock:
            n = self._refs.get(dst, 0)
            if n > 1:
                self._refs[dst] = n - 1
                return
            self._refs.pop(dst, None)
            if n == 0:
                return
            source = self._route_src.pop(dst, None)
        self._delete(dst)
        if source is not None:
            self._drop_address(source)

    def _hold_address(self, addr: IPAddress, oif: int) -> None:
        """Put ``addr`` on interface ``oif`` unless it is local already (then not ours)."""
        with self._lock:
            mine = self._own_addrs.get(addr)
            if mine is not None:
                self._own_addrs[addr] = (mine[0], mine[1] + 1)
                return
        try:
            self._nl.request(RTM_NEWADDR, encode_addr(addr, oif),
                             flags=NLM_F_CREATE | NLM_F_EXCL, what=f"add address {addr}")
        except XfrmError as e:
            if e.errno == errno.EEXIST:
                return  # somebody's address already: used, never removed by us
            raise BackendError(f"route: cannot add the address {addr}: {e}") from e
        with self._lock:
            self._own_addrs[addr] = (oif, 1)
        self._log(f"| route: added address {addr}/{addr.max_prefixlen} (ifindex {oif})")

    def _drop_address(self, addr: IPAddress) -> None:
        with self._lock:
            mine = self._own_addrs.get(addr)
            if mine is None:
                return
            if mine[1] > 1:
                self._own_addrs[addr] = (mine[0], mine[1] - 1)
                return
            del self._own_addrs[addr]
        try:
            self._nl.request(RTM_DELADDR, encode_addr(addr, mine[0]), what=f"del address {addr}")
        except XfrmError as e:
            if e.errno not in (errno.ESRCH, errno.ENOENT, errno.EADDRNOTAVAIL):
                raise
        self._log(f"| route: deleted address {addr}")

    def _delete(self, dst: IPNetwork) -> None:
        try:
            self._nl.request(
                RTM_DELROUTE,
                encode_route(dst, dst.network_address, 0, None, delete=True),
                what=f"delete {dst}",
            )
        except XfrmError as e:
            if e.errno not in (errno.ESRCH, errno.ENOENT):
                raise
        self._log(f"| route: deleted {dst}")

    def list_own(self) -> list[IPNetwork]:
        """Our routes in the main table (dumped, so also those of a crashed run)."""
        out: list[IPNetwork] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for mtype, reply in self._nl.dump(
                RTM_GETROUTE, _rtmsg(family, 0, table=0), what="route dump"
            ):
                if mtype != RTM_NEWROUTE or len(reply) < RTMSG.size:
                    continue
                fam, dst_len, _s, _t, table, proto, _sc, _ty, _f = RTMSG.unpack_from(reply)
                if proto != RTPROT_PYPLUTO or table != RT_TABLE_MAIN:
                    continue
                attrs = S.parse_attrs(reply, RTMSG.size)
                if RTA_DST not in attrs:
                    continue
                out.append(ipaddress.ip_network(f"{_addr(attrs[RTA_DST][0])}/{dst_len}"))
        return out

    def flush_own(self) -> int:
        nets = self.list_own()
        for dst in nets:
            self._delete(dst)
        with self._lock:
            self._refs.clear()
            addrs, self._own_addrs = self._own_addrs, {}
            self._route_src.clear()
        for addr, (oif, _n) in addrs.items():
            try:
                self._nl.request(RTM_DELADDR, encode_addr(addr, oif), what=f"del address {addr}")
            except XfrmError:
                pass
        return len(nets)
