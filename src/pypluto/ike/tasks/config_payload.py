"""The Configuration Payload in IKE_AUTH (RFC 7296 §2.19, §3.15; RFC 8598).

Gateway (``rightaddresspool=``, ``leftmodecfgserver=yes``): ``respond`` reads the
client's CFG_REQUEST, leases one address per requested family from the pool
(``ike/pool.py``) and answers CFG_REPLY with INTERNAL_IP4/IP6_ADDRESS, the DNS
servers of ``modecfgdns=``, the domains of ``modecfgdomains=``
(INTERNAL_DNS_DOMAIN, RFC 8598) and the split-tunnel subnets of ``leftsubnet=``
(INTERNAL_IP4/IP6_SUBNET).  The leased address becomes the Child SA's remote
selector.  An exhausted pool gets INTERNAL_ADDRESS_FAILURE (§3.15.4): the IKE SA
stands, the Child SA does not.

Client (``leftmodecfgclient=yes``): ``request`` adds a CFG_REQUEST for an address of
each family it needs and offers their whole address space as TSi; ``take_reply``
reads the CFG_REPLY, whose addresses become our selectors and the source addresses
of the routes (``policies`` in the engine), which the kernel backend puts on the TUN
(userspace plane) or the interface (XFRM) and removes when the Child SA goes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from pypluto.config.addresspool import parse_pool
from pypluto.config.model import Connection
from pypluto.iana import CFGType, CPAttr
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.ike import codec
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import Action
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.ike.ts import TS
from pypluto.params import IPAddress
from pypluto.textsafe import escape
from pypluto.wire import payloads as wp

_ADDR = {4: CPAttr.INTERNAL_IP4_ADDRESS, 6: CPAttr.INTERNAL_IP6_ADDRESS}
_DNS = {4: CPAttr.INTERNAL_IP4_DNS, 6: CPAttr.INTERNAL_IP6_DNS}
_SUBNET = {4: CPAttr.INTERNAL_IP4_SUBNET, 6: CPAttr.INTERNAL_IP6_SUBNET}


# ------------------------------------------------------------------ helpers
def is_server(conn: Connection) -> bool:
    """Does this conn hand out addresses (a pool, or ``leftmodecfgserver=yes``)?"""
    return bool(conn.remote.addresspool) or conn.local.modecfgserver


def is_client(conn: Connection) -> bool:
    """Does this conn ask for an address (``leftmodecfgclient=yes``, or a
    ``leftaddresspool=`` of our own end: Libreswan 5.2 makes the end with the pool a
    client and the other a server, so one conn serves both ends)?"""
    return conn.local.modecfgclient or bool(conn.local.addresspool)


def _split(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


def dns_servers(conn: Connection) -> list[IPAddress]:
    """``modecfgdns=`` (addresses separated by commas or spaces); bad ones were refused."""
    out: list[IPAddress] = []
    for w in _split(conn.raw.get("modecfgdns", "")):
        try:
            out.append(ipaddress.ip_address(w))
        except ValueError:
            continue
    return out


def _addr_value(attr: wp.CPAttribute) -> IPAddress | None:
    """The address in an INTERNAL_IP4/IP6_ADDRESS value, or None (empty or malformed)."""
    v = bytes(attr.value)
    if int(attr.attr_type) == CPAttr.INTERNAL_IP4_ADDRESS and len(v) == 4:
        return ipaddress.IPv4Address(v)
    if int(attr.attr_type) == CPAttr.INTERNAL_IP6_ADDRESS and len(v) == 17:
        return ipaddress.IPv6Address(v[:16])
    return None


def _encode_addr(addr: IPAddress) -> bytes:
    return addr.packed + (b"\x80" if addr.version == 6 else b"")


def _encode_subnet(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bytes:
    if net.version == 4:
        return net.network_address.packed + net.netmask.packed
    return net.network_address.packed + bytes([net.prefixlen])


# ------------------------------------------------------------------ gateway
def respond(ctx: IKEContext, ike: IKESA, conn: Connection, payloads: Sequence[wp.Payload],
            acts: list[Action]) -> tuple[list[wp.Payload], bool]:
    """(payloads for the IKE_AUTH answer, ok): a CFG_REPLY, or INTERNAL_ADDRESS_FAILURE.

    ``ok`` is False when the client asked for an address that we could not give;
    the caller then refuses the Child SA with the notify returned here.  A Child SA of
    a conn that hands out addresses is for a leased address only: a request for one
    without a CFG_REQUEST gets FAILED_CP_REQUIRED (RFC 7296 §3.10.1; Libreswan 5.2
    too, which answers INTERNAL_ADDRESS_FAILURE to a CP of another type, where the RFC
    names FAILED_CP_REQUIRED: "CP(CFG_REQUEST) was expected but not received"), and a
    CFG_REQUEST that asks for no address INTERNAL_ADDRESS_FAILURE (Libreswan: "no
    valid internal address request"); both got a Child SA for the client's outer
    address before.
    """
    if not is_server(conn):
        return [], True
    cp = codec.first(payloads, wp.CPPayload)
    child = any(p.payload_type in (PT.SA, PT.TSi, PT.TSr) for p in payloads)
    if cp is None or int(cp.cfg_type) != CFGType.CFG_REQUEST:
        if cp is not None:
            ctx.log(acts, f"ignoring a Configuration Payload of type {int(cp.cfg_type)} "
                    "(only CFG_REQUEST is answered)", ike, level="warning")
        if not child:
            return [], True
        ctx.log(acts, "the IKE_AUTH request asks for a Child SA without a CFG_REQUEST, "
                "which this connection requires for its address; answering "
                "FAILED_CP_REQUIRED", ike, level="warning")
        return [codec.notify(N.FAILED_CP_REQUIRED)], False
    wanted: dict[int, IPAddress | None] = {}
    want_dns: set[int] = set()
    other = 0
    for a in cp.attributes:
        t = int(a.attr_type)
        if t in (CPAttr.INTERNAL_IP4_ADDRESS, CPAttr.INTERNAL_IP6_ADDRESS):
            v = 4 if t == CPAttr.INTERNAL_IP4_ADDRESS else 6
            if v not in wanted:
                wanted[v] = _addr_value(a)
        elif t in (CPAttr.INTERNAL_IP4_DNS, CPAttr.INTERNAL_IP6_DNS):
            want_dns.add(4 if t == CPAttr.INTERNAL_IP4_DNS else 6)
        else:
            other += 1  # unknown or not ours to answer: ignored (§3.15.1)
    if other:
        ctx.log(acts, f"ignoring {other} Configuration Payload attribute(s) we do not "
                "answer", ike, level="debug")
    spec = conn.remote.addresspool
    reply: list[wp.CPAttribute] = []
    assert ike.remote_id is not None
    owner = str(ike.remote_id)
    uniq = conn.uniqueids if conn.uniqueids is not None else ctx.settings.uniqueids
    key: tuple[object, ...] = (("id", conn.name, ike.remote_id.id_type, ike.remote_id.data)
                               if uniq and not ike.remote_id.any and not ike.remote_id.null
                               else ("sa", ike.serial))
    for v, hint in sorted(wanted.items()):
        if not spec or ctx.leases.pool(spec, v) is None:
            clash = ctx.leases.overlapping(spec, v) if spec else None
            if clash is not None:
                ctx.log(acts, f"address pool {spec} inexactly overlaps address pool {clash} "
                        f"of another connection: no IPv{v} address for {owner}", ike,
                        level="warning")
            continue  # no range of this family: the client gets none (§3.15.4)
        lease = ctx.leases.acquire(spec, v, key, owner, hint)
        if lease is None:
            ctx.log(acts, f"address pool {spec} is exhausted: no IPv{v} address for "
                    f"{owner}; answering INTERNAL_ADDRESS_FAILURE", ike, level="warning")
            continue
        if hint is not None and hint != lease.addr:
            ctx.log(acts, f"{owner} asked for {hint}, which is "
                    f"{'taken' if ctx.leases.pool(spec, v).contains(hint) else 'outside the pool'}"  # type: ignore[union-attr]
                    f"; leasing {lease.addr} instead", ike)
        ike.leases = [*ike.leases, lease]
        ike.remote_vips = [*ike.remote_vips, lease.addr]
        reply.append(wp.CPAttribute(_ADDR[v], _encode_addr(lease.addr)))
        ctx.log(acts, f"leased {lease.addr} from pool {spec} to {owner}", ike)
    if not wanted and child:
        ctx.log(acts, "the CFG_REQUEST asks for no INTERNAL_IP4/IP6_ADDRESS; answering "
                "INTERNAL_ADDRESS_FAILURE", ike, level="warning")
    if (wanted or child) and not ike.remote_vips:
        return [codec.notify(N.INTERNAL_ADDRESS_FAILURE)], False
    fams = {a.version for a in ike.remote_vips} | want_dns
    for d in dns_servers(conn):
        if d.version in fams:
            reply.append(wp.CPAttribute(_DNS[d.version], d.packed))
    for dom in _split(conn.raw.get("modecfgdomains", "")):
        reply.append(wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, dom.encode()))
    for net in conn.local.subnets:
        if net.prefixlen and net.version in fams:
            reply.append(wp.CPAttribute(_SUBNET[net.version], _encode_subnet(net)))
    return [wp.CPPayload(CFGType.CFG_REPLY, reply)], True


# ------------------------------------------------------------------ client
def families(ike: IKESA, conn: Connection) -> list[int]:
    """The address families we ask for, one address each (§3.15.1): those of the remote
    subnets and of our own ``leftaddresspool=`` (Libreswan asks the same way: its tests
    addresspool-46in4-ikev2 and -4only/-6only), else the IKE peer's."""
    fams = {n.version for n in conn.remote.subnets}
    if conn.local.addresspool:
        try:
            fams |= {lo.version for lo, _hi in parse_pool(conn.local.addresspool)}
        except ValueError:  # refused when the conn was added; be safe anyway
            pass
    return sorted(fams) or [ike.remote.addr.version]


def request(ike: IKESA, conn: Connection) -> wp.CPPayload:
    """CFG_REQUEST for an address and DNS servers of each of our families (§3.15.4)."""
    attrs: list[wp.CPAttribute] = []
    for v in families(ike, conn):
        attrs += [wp.CPAttribute(_ADDR[v]), wp.CPAttribute(_DNS[v])]
    return wp.CPPayload(CFGType.CFG_REQUEST, attrs)


def any_ts(ike: IKESA, conn: Connection) -> list[TS]:
    """Our offer as a client: the whole address space of each family we ask an address
    for; the gateway narrows it to what it leased (§2.19)."""
    return [tsmod.from_network(ipaddress.ip_network("0.0.0.0/0" if v == 4 else "::/0"),
                               conn.local.protoport) for v in families(ike, conn)]


def take_reply(ctx: IKEContext, ike: IKESA, payloads: Sequence[wp.Payload],
               acts: list[Action]) -> str | None:
    """Read the gateway's CFG_REPLY into ``ike.local_vips`` / ``ike.dns``; None if ok."""
    cp = codec.first(payloads, wp.CPPayload)
    if cp is None or int(cp.cfg_type) != CFGType.CFG_REPLY:
        if codec.has_notify(payloads, N.INTERNAL_ADDRESS_FAILURE):
            return "the gateway has no address for us (INTERNAL_ADDRESS_FAILURE)"
        return "the gateway sent no address (no CFG_REPLY)"
    extra = {"address": 0, "DNS": 0}
    seen = {False: 0, True: 0}  # DNS server and domain attributes looked at
    for a in cp.attributes:
        t = int(a.attr_type)
        v = bytes(a.value)
        if t in (CPAttr.INTERNAL_IP4_ADDRESS, CPAttr.INTERNAL_IP6_ADDRESS):
            addr = _addr_value(a)
            if addr is None:
                continue
            why = _not_assignable(addr)
            if why is None and addr == ike.remote.addr:  # on our interface, it would
                # take the gateway's packets, IKE's among them, off the wire
                why = "the gateway's own address"
            if why is not None:
                ctx.log(acts, f"ignoring INTERNAL_IP{addr.version}_ADDRESS {addr}: {why}",
                        ike, level="warning")
            elif any(x.version == addr.version for x in ike.local_vips):
                # §3.15.1: no more addresses than we asked for (one per family)
                extra["address"] += addr not in ike.local_vips
            else:
                ike.local_vips = [*ike.local_vips, addr]  # a list once it has one
        elif t in (CPAttr.INTERNAL_IP4_DNS, CPAttr.INTERNAL_IP6_DNS, CPAttr.INTERNAL_DNS_DOMAIN):
            dom = t == CPAttr.INTERNAL_DNS_DOMAIN
            if seen[dom] >= MAX_DNS:
                extra["DNS"] += 1  # a bound on what a gateway makes us keep, log, pass on
                continue
            seen[dom] += 1
            dns_attr(ctx, ike, t, v, acts)
    for what, n in extra.items():
        if n:
            ctx.log(acts, f"ignoring {n} more {what} attribute(s) of the CFG_REPLY (we keep "
                    f"{'one address per family' if what == 'address' else f'{MAX_DNS} of each'})",
                    ike, level="warning")
    if not ike.local_vips:
        return "the gateway's CFG_REPLY has no usable address"
    ctx.log(acts, "received INTERNAL_IP_ADDRESS " + ", ".join(str(a) for a in ike.local_vips)
            + (f" and DNS {', '.join(str(d) for d in ike.dns)}" if ike.dns else "")
            + (f", domains {', '.join(ike.domains)}" if ike.domains else ""), ike)
    return None


def _not_assignable(addr: IPAddress) -> str | None:
    """Why a gateway may not give us ``addr`` as our inner address, or None.  We would
    put it on an interface and into our selectors: the unspecified address (Libreswan
    refuses it too), loopback, multicast, link-local and reserved ones (the IPv4
    broadcast among them) are refused, so that a lying gateway cannot take over one of
    our own addresses that way; so is an IPv4-mapped IPv6 address (RFC 4291 §2.5.5.2:
    no interface's, and its IPv4 loopback or multicast passes the tests above)."""
    for test, what in ((addr.is_unspecified, "unspecified"), (addr.is_loopback, "loopback"),
                       (addr.is_multicast, "multicast"), (addr.is_link_local, "link-local"),
                       (addr.version == 4 and addr.is_reserved, "reserved"),
                       (addr.version == 6 and addr.ipv4_mapped is not None, "IPv4-mapped")):
        if test:
            return f"{what}, not an address a gateway may assign"
    return None


MAX_DNS = 16  # DNS servers, and search domains, kept from one CFG_REPLY

_DOMAIN = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?")


def dns_attr(ctx: IKEContext, ike: IKESA, t: int, v: bytes, acts: list[Action]) -> None:
    """One DNS server (INTERNAL_IP4_DNS / INTERNAL_IP6_DNS) or search domain
    (INTERNAL_DNS_DOMAIN, RFC 8598 §4) of a CFG_REPLY: kept for the updown script,
    unless ``ignore-peer-dns=yes`` (logged, as Libreswan does).  An address of the
    wrong size or the unspecified address, or a domain that is not a domain name
    (RFC 8598 §4: an FQDN; at most 255 octets), is logged and dropped."""
    names: dict[int, str] = {CPAttr.INTERNAL_IP4_DNS: "INTERNAL_IP4_DNS",
                             CPAttr.INTERNAL_IP6_DNS: "INTERNAL_IP6_DNS",
                             CPAttr.INTERNAL_DNS_DOMAIN: "INTERNAL_DNS_DOMAIN"}
    if ike.conn.ignore_peer_dns:
        what = escape(v) if t == CPAttr.INTERNAL_DNS_DOMAIN \
            else (str(ipaddress.ip_address(v)) if len(v) in (4, 16) else escape(v.hex()))
        ctx.log(acts, f"ignoring {names[t]} {what} (ignore-peer-dns=yes)", ike)
        return
    if t == CPAttr.INTERNAL_DNS_DOMAIN:
        dom = v.decode("ascii", "replace")
        if len(v) > 255 or not _DOMAIN.fullmatch(dom):
            ctx.log(acts, f"ignoring INTERNAL_DNS_DOMAIN '{escape(v)}': not a domain name",
                    ike)
        elif dom not in ike.domains:
            ike.domains = [*ike.domains, dom]
        return
    size = 4 if t == CPAttr.INTERNAL_IP4_DNS else 16
    if len(v) != size:
        return  # an empty one is a client's request; another size is no address
    addr = ipaddress.ip_address(v)
    if addr.is_unspecified:
        ctx.log(acts, f"ignoring {names[t]} {addr}: unspecified", ike)
    elif addr not in ike.dns:
        ike.dns = [*ike.dns, addr]

