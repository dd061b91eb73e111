"""``left=%defaultroute`` / ``%defaultroute6`` and ``%any`` with ``leftnexthop=``.

ipsec.conf(5): ``%defaultroute`` means "this host's address on the interface
of the default route", with that route's gateway as the nexthop;
``%defaultroute6`` the same for IPv6.  An end written ``%any`` with an explicit
``nexthop=`` address is oriented the same way: its address is the source
address the kernel picks toward that nexthop.  Libreswan resolves these when
the conn is added; so do we (``Registry.add``), from ``ip -j route``.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from dataclasses import dataclass

from pypluto.config.model import Connection, End, IPAddress

IP = shutil.which("ip") or "/usr/sbin/ip"


@dataclass(frozen=True)
class DefaultRoute:
    """The host's default route of one family: source address, gateway, device."""

    src: IPAddress
    gateway: IPAddress | None
    dev: str | None


def _ip_json(*args: str) -> list[dict[str, object]]:
    try:
        r = subprocess.run([IP, "-j", *args], capture_output=True, text=True, timeout=10,
                           check=False)
        out = json.loads(r.stdout or "[]") if r.returncode == 0 else []
    except (OSError, ValueError, subprocess.SubprocessError):
        return []
    return [x for x in out if isinstance(x, dict)] if isinstance(out, list) else []


def route_source(dest: IPAddress) -> tuple[IPAddress, str | None] | None:
    """The source address (and device) the kernel picks toward ``dest``."""
    fam = "-4" if dest.version == 4 else "-6"
    for r in _ip_json(fam, "route", "get", str(dest)):
        src = r.get("prefsrc")
        if isinstance(src, str):
            dev = r.get("dev")
            return ipaddress.ip_address(src), dev if isinstance(dev, str) else None
    return None


def default_route(version: int = 4) -> DefaultRoute | None:
    """The default route of IPv4 (``version=4``) or IPv6, or None without one."""
    fam = "-4" if version == 4 else "-6"
    for r in _ip_json(fam, "route", "show", "default"):
        gw_s, dev = r.get("gateway"), r.get("dev")
        gw = ipaddress.ip_address(gw_s) if isinstance(gw_s, str) else None
        src_s = r.get("prefsrc")
        if isinstance(src_s, str):
            return DefaultRoute(ipaddress.ip_address(src_s), gw, dev if isinstance(dev, str)
                                else None)
        if gw is None and isinstance(dev, str):
            gw = _ptp_peer(dev, version)  # "default dev ppp0": no "via"
        if gw is not None:
            found = route_source(gw)
            if found is not None:
                return DefaultRoute(found[0], gw, found[1])
    return None


def _ptp_peer(dev: str, version: int) -> IPAddress | None:
    """The peer address of point-to-point device ``dev`` (``ip addr add A peer P``), which
    Libreswan 5.2 takes as the gateway of a default route written without ``via``."""
    for link in _ip_json("-4" if version == 4 else "-6", "addr", "show", "dev", dev):
        flags = link.get("flags")
        infos = link.get("addr_info")
        if not isinstance(flags, list) or "POINTOPOINT" not in flags or \
                not isinstance(infos, list):
            continue
        for info in infos:
            peer = info.get("address") if isinstance(info, dict) else None
            if isinstance(peer, str) and isinstance(info.get("local"), str) and \
                    info["local"] != peer:
                try:
                    return ipaddress.ip_address(peer)
                except ValueError:
                    continue
    return None


def _resolve_end(end: End, family: int = 4) -> str | None:
    """Give ``end`` an address from the routing table; returns what was done, or None.
    ``family``: of ``%defaultroute`` (``%defaultroute6`` is always IPv6)."""
    host = (end.host or "").lower()
    if host in ("%defaultroute", "%defaultroute6"):
        dr = default_route(6 if host == "%defaultroute6" else family)
        if dr is None:
            return None
        end.host_addr = dr.src
        if end.nexthop in (None, "%defaultroute") and dr.gateway is not None:
            end.nexthop = str(dr.gateway)
        return f"{host} is {dr.src} (nexthop {dr.gateway or 'none'}, dev {dr.dev or '?'})"
    if end.is_any and end.host_addr is None and end.nexthop and \
            not end.nexthop.startswith("%"):
        nh = ipaddress.ip_address(end.nexthop)
        found = route_source(nh)
        if found is None:
            return None
        end.host_addr = found[0]
        return f"{end.host or '%any'} with nexthop {nh} is {found[0]}"
    return None


def resolve_nexthop(end: End) -> str | None:
    """``leftnexthop=%defaultroute`` on an end with an address (ipsec.conf(5): "the
    next-hop gateway address of the default-route interface will be used"); returns
    what was done, or None (no default route with a gateway: the peer stays the
    nexthop, as for %direct)."""
    if end.nexthop != "%defaultroute" or end.host_addr is None:
        return None
    dr = default_route(end.host_addr.version)
    if dr is None or dr.gateway is None:
        return None
    end.nexthop = str(dr.gateway)
    return f"nexthop=%defaultroute is {dr.gateway}"


def needs_routes(conn: Connection) -> bool:
    """Whether an end of ``conn`` is written as %defaultroute or %any with a nexthop."""
    for end in (conn.left, conn.right):
        host = (end.host or "").lower()
        if host in ("%defaultroute", "%defaultroute6"):
            return True
        if end.is_any and end.nexthop and not end.nexthop.startswith("%"):
            return True
    return False


def resolve(conn: Connection) -> list[str]:
    """Resolve the ends of ``conn`` that stand for this host; returns log lines.

    ``%defaultroute`` ends always do; a ``%any`` end with a nexthop only when the
    other end has a fixed address (then this one must be the local end).  The family
    of ``%defaultroute`` is ``hostaddrfamily=``, else the peer's, else IPv4 (as
    Libreswan's addconn: ``left=%defaultroute right=2001:db8::23`` is IPv6).
    """
    notes: list[str] = []
    for end, other in ((conn.left, conn.right), (conn.right, conn.left)):
        host = (end.host or "").lower()
        if host.startswith("%defaultroute") or other.host_addr is not None:
            family = conn.hostaddrfamily or \
                (other.host_addr.version if other.host_addr is not None else 4)
            done = _resolve_end(end, family)
            if done:
                notes.append(done)
    return notes


__all__ = ["DefaultRoute", "default_route", "needs_routes", "resolve", "resolve_nexthop",
           "route_source"]
