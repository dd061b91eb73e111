"""Policy lookup for the userspace plane: pure functions on packets and selectors.

Nothing here touches a device, a socket or a thread, so every rule is tested
on byte strings (tests/kernel/test_userspace_selectors.py).

* :func:`flow_of` reads the selector fields of an IP packet: addresses, the
  upper-layer protocol and its "ports".  For ICMP and ICMPv6 the ports are the
  message type (upper 8 bits) and code (lower 8 bits), as RFC 4301 §4.4.1.1
  and RFC 7296 §3.13.1 encode them in a traffic selector; a packet whose ports
  cannot be read (a non-first fragment, a truncated header) has OPAQUE ports
  (RFC 4301 §4.4.1.1) and matches only selectors that allow any port.
* :class:`OutboundPolicies` is the outbound SPD (RFC 4301 §5.1): the most
  specific policy whose selectors hold the packet.
* :func:`inbound_check` is the check of RFC 4301 §5.2 step 4: after
  decryption, the inner packet must lie inside the SA's selectors
  (addresses, protocol and ports), else it is dropped and counted.
* ICMP and ICMPv6 error messages (RFC 4301 §6.2) are checked by the packet
  they quote (:func:`icmp_error_quote`), reversed: one we sent, so its source
  lies in our selectors.  Inbound, a quote outside the SA's selectors, or too
  short to read, drops the error; outbound, an error goes through the SA that
  carries the return traffic of the packet it quotes.
"""

from __future__ import annotations

import ipaddress
import struct
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pypluto.params import IPAddress, PolicyParams, SAParams, TrafficSelector

__all__ = [
    "ICMP_OR_EXT",
    "Flow",
    "OutboundPolicies",
    "addr_key",
    "flow_of",
    "frag_key",
    "icmp_error_quote",
    "inbound_check",
    "is_any_ports",
    "is_any_proto_ports",
    "port_key",
    "shared_ts",
    "ts_match",
]

IPPROTO_ICMP = 1
IPPROTO_ICMPV6 = 58
_PORTED = (6, 17, 132, 136)  # TCP, UDP, SCTP, UDP-Lite: source and destination port first
_V6_EXT = (0, 43, 60)  # hop-by-hop, routing, destination options (RFC 8200 §4)
_V6_FRAG = 44
_HH = struct.Struct("!HH")
# ICMP types that quote the packet they report (RFC 792: unreachable, source quench,
# redirect, time exceeded, parameter problem); ICMPv6: every type below 128 (RFC 4443 §2.1)
_ICMP4_ERRORS = frozenset((3, 4, 5, 11, 12))
# what a packet's protocol / next header must be to be (or to hide) an ICMP error: the one
# extra test the inbound check and the TUN drains make on every packet
ICMP_OR_EXT = frozenset((IPPROTO_ICMP, IPPROTO_ICMPV6) + _V6_EXT + (_V6_FRAG,))


@dataclass(frozen=True)
class Flow:
    """The selector fields of one packet; ``sport``/``dport`` None = OPAQUE."""

    src: IPAddress
    dst: IPAddress
    proto: int
    sport: int | None
    dport: int | None


def addr_key(pkt: bytes) -> bytes:
    """Source ‖ destination address of an IP packet (the flow-cache key)."""
    return pkt[12:20] if pkt[0] >> 4 == 4 else pkt[8:40]


def frag_key(pkt: bytes | memoryview) -> tuple[bytes, bool] | None:
    """For an IPv4 or IPv6 fragment: a key naming the datagram it belongs to (addresses,
    protocol and identification, RFC 791 §3.2; addresses and identification, RFC 8200
    §4.5) and whether it is the first fragment (offset 0, the one with the ports).
    None for a packet that is not a fragment (or too short to say).

    A non-first fragment has OPAQUE ports (RFC 4301 §4.4.1.1): on a port-limited SA
    it goes with its datagram's first fragment (stateful fragment checking, RFC 4301
    §7.3): in the plane's outbound lookup and in :func:`inbound_check`.
    """
    n = len(pkt)
    if n < 20:
        return None
    v = pkt[0] >> 4
    if v == 4:
        if not (pkt[6] & 0x3F or pkt[7]):
            return None
        return (b"\xff\x04" + bytes(pkt[12:20]) + bytes(pkt[9:10]) + bytes(pkt[4:6]),
                not ((pkt[6] & 0x1F) or pkt[7]))
    if v != 6 or n < 40:
        return None
    nh, off = pkt[6], 40
    for _ in range(8):
        if nh in _V6_EXT:
            if n < off + 2:
                return None
            nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
        elif nh == _V6_FRAG:
            if n < off + 8:
                return None
            return (b"\xff\x06" + bytes(pkt[8:40]) + bytes(pkt[off + 4:off + 8]),
                    ((pkt[off + 2] << 8) | pkt[off + 3]) & 0xFFF8 == 0)
        else:
            return None
    return None


def port_key(pkt: bytes) -> bytes | None:
    """Addresses ‖ protocol ‖ ports (ICMP: type ‖ code) of a packet whose ports sit right
    after a 20-byte IPv4 or 40-byte IPv6 header: the flow-cache key for packets of
    port-limited policies (RFC 4301 §4.4.1.1 selector fields).  None when the ports
    are elsewhere or absent (IPv4 options, fragments, IPv6 extension headers): such
    a packet is looked up every time.
    """
    if len(pkt) < 20:
        return None
    b0 = pkt[0]
    if b0 == 0x45:
        if pkt[6] & 0x3F or pkt[7]:  # MF or a fragment offset
            return None
        proto = pkt[9]
        end = 22 if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) else 24
        return pkt[12:20] + pkt[9:10] + pkt[20:end]
    if b0 >> 4 == 6 and len(pkt) >= 40:
        nh = pkt[6]
        if nh in _V6_EXT or nh == _V6_FRAG:
            return None
        end = 42 if nh in (IPPROTO_ICMP, IPPROTO_ICMPV6) else 44
        return pkt[8:40] + pkt[6:7] + pkt[40:end]
    return None


def _ports_at(pkt: bytes | memoryview, proto: int, off: int) -> tuple[int | None, int | None]:
    if proto in _PORTED:
        if len(pkt) < off + 4:
            return None, None
        sp, dp = _HH.unpack_from(pkt, off)
        return sp, dp
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if len(pkt) < off + 2:
            return None, None
        v = (pkt[off] << 8) | pkt[off + 1]  # type ‖ code (RFC 4301 §4.4.1.1)
        return v, v
    return 0, 0  # no ports: a protocol-only selector still matches (ports must be "any")


def flow_of(pkt: bytes | memoryview) -> Flow | None:
    """Addresses, protocol and ports of an IPv4/IPv6 packet, or None if it is not one."""
    n = len(pkt)
    if n < 20:
        return None
    v = pkt[0] >> 4
    try:
        if v == 4:
            ihl = (pkt[0] & 0x0F) * 4
            if ihl < 20 or n < ihl:
                return None
            src: IPAddress = ipaddress.IPv4Address(bytes(pkt[12:16]))
            dst: IPAddress = ipaddress.IPv4Address(bytes(pkt[16:20]))
            proto = pkt[9]
            frag_off = ((pkt[6] << 8) | pkt[7]) & 0x1FFF
            if frag_off:  # a non-first fragment carries no upper-layer header
                return Flow(src, dst, proto, None, None)
            sp, dp = _ports_at(pkt, proto, ihl)
            return Flow(src, dst, proto, sp, dp)
        if v == 6 and n >= 40:
            src = ipaddress.IPv6Address(bytes(pkt[8:24]))
            dst = ipaddress.IPv6Address(bytes(pkt[24:40]))
            nh, off = pkt[6], 40
            for _ in range(8):  # walk the extension headers to the upper layer
                if nh in _V6_EXT:
                    if n < off + 2:
                        return Flow(src, dst, nh, None, None)
                    nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
                elif nh == _V6_FRAG:
                    if n < off + 8:
                        return Flow(src, dst, nh, None, None)
                    first = ((pkt[off + 2] << 8) | pkt[off + 3]) & 0xFFF8 == 0
                    nh, off = pkt[off], off + 8
                    if not first:
                        return Flow(src, dst, nh, None, None)
                else:
                    break
            sp, dp = _ports_at(pkt, nh, off)
            return Flow(src, dst, nh, sp, dp)
    except (ValueError, IndexError):
        return None
    return None


def icmp_error_quote(pkt: bytes | memoryview) -> tuple[bool, Flow | None]:
    """Whether ``pkt`` is an ICMP or ICMPv6 error message (the first fragment of one), and
    the flow of the packet it quotes (RFC 4301 §6.2).

    The quote is None when it is too short to hold its IP header, or is of another IP
    version: such an error cannot be matched to a flow (a quote without its ports has
    OPAQUE ports).  An ICMPv6 header behind more extension headers than the walk reads
    counts as an error without a quote, so no error hides behind a long chain.
    """
    n = len(pkt)
    if n < 20:
        return False, None
    v = pkt[0] >> 4
    if v == 4:
        off = (pkt[0] & 0x0F) * 4
        if pkt[9] != IPPROTO_ICMP or off < 20 or n <= off or ((pkt[6] << 8) | pkt[7]) & 0x1FFF:
            return False, None
        if pkt[off] not in _ICMP4_ERRORS:
            return False, None
    elif v == 6 and n >= 40:
        nh, off = pkt[6], 40
        for _ in range(8):
            if nh in _V6_EXT:
                if n < off + 2:
                    return False, None
                nh, off = pkt[off], off + (pkt[off + 1] + 1) * 8
            elif nh == _V6_FRAG:
                if n < off + 8 or ((pkt[off + 2] << 8) | pkt[off + 3]) & 0xFFF8:
                    return False, None  # cut, or not the first fragment: no ICMPv6 header
                nh, off = pkt[off], off + 8
            else:
                break
        if nh in _V6_EXT or nh == _V6_FRAG:
            return True, None
        if nh != IPPROTO_ICMPV6 or n <= off or pkt[off] >= 128:
            return False, None
    else:
        return False, None
    q = flow_of(pkt[off + 8:])
    if q is None or q.src.version != v:
        return True, None
    return True, q


def is_any_ports(ts: TrafficSelector) -> bool:
    return (ts.port_start, ts.port_end) == (0, 65535)


def is_any_proto_ports(ts: TrafficSelector) -> bool:
    return ts.protocol == 0 and is_any_ports(ts)


def ts_match(ts: TrafficSelector, addr: IPAddress, proto: int, port: int | None) -> bool:
    """One selector against one end of a packet (RFC 4301 §4.4.1.1).

    ``port`` is the packet's port on that end (type ‖ code for ICMP), None when OPAQUE.
    """
    if addr.version != ts.network.version or addr not in ts.network:
        return False
    if ts.protocol and ts.protocol != proto:
        return False
    if is_any_ports(ts):
        return True
    return port is not None and ts.port_start <= port <= ts.port_end


def _policy_match(pol: PolicyParams, f: Flow) -> bool:
    """Outbound: the packet's source in ``pol.src``, its destination in ``pol.dst``."""
    return (ts_match(pol.src, f.src, f.proto, f.sport)
            and ts_match(pol.dst, f.dst, f.proto, f.dport))


class OutboundPolicies:
    """The outbound policies, most specific first (RFC 4301 §4.4.1: ordered SPD)."""

    def __init__(self, policies: Iterable[PolicyParams] = ()) -> None:
        pols = [p for p in policies if p.direction == "out"]
        # a conn's priority= first (lower wins; as with XFRM, where the computed
        # priorities of the others are all higher numbers), then: longer destination,
        # then source prefixes; protocol/port-specific before "any"; a shunt before a
        # tunnel with the same selectors (as Libreswan's priorities)
        pols.sort(key=lambda p: (not p.priority, p.priority,
                                 -p.dst.network.prefixlen, -p.src.network.prefixlen,
                                 is_any_proto_ports(p.src) and is_any_proto_ports(p.dst),
                                 p.action == "ipsec"))
        self.policies = pols

    def lookup(self, pkt: bytes) -> tuple[PolicyParams, bool] | None:
        """The policy for an outbound packet, and whether every packet between the same
        two addresses gets it (so the flow may be cached by addresses); None = no policy."""
        f = flow_of(pkt)
        if f is None:
            return None
        if f.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
            err, q = icmp_error_quote(pkt)
            if err:
                # RFC 4301 §6.2: the SA that would carry the return traffic of the
                # packet the error quotes (reversed), whatever the error's own header
                # matches; an error that is not addressed to that packet's source, or
                # whose quote cannot be read, matches no policy.  Never cached.
                if q is None or q.src != f.dst:
                    return None
                back = Flow(q.dst, q.src, q.proto, q.dport, q.sport)
                for pol in self.policies:
                    if _policy_match(pol, back):
                        return pol, False
                return None
        for pol in self.policies:
            if _policy_match(pol, f):
                return pol, self._address_only(f)
        return None

    def covers(self, pkt: bytes) -> bool:
        """Whether some policy matches ``pkt`` by its own header, an ICMP error too (the
        forward lookup of XFRM's ``icmp_route_lookup``): an error that :meth:`lookup`
        gives no policy and no policy covers either is not the tunnels' to carry."""
        f = flow_of(pkt)
        return f is None or any(_policy_match(p, f) for p in self.policies)

    def _address_only(self, f: Flow) -> bool:
        """No policy that could also hold these addresses depends on protocol or ports."""
        for p in self.policies:
            if is_any_proto_ports(p.src) and is_any_proto_ports(p.dst):
                continue
            if (f.src.version == p.src.network.version and f.src in p.src.network
                    and f.dst in p.dst.network):
                return False
        return True


class _TSList(list[TrafficSelector]):
    """A selector list that every SA with the same selectors shares (see :func:`shared_ts`)."""

    __slots__ = ("__weakref__",)


_TS_LISTS: weakref.WeakValueDictionary[tuple[TrafficSelector, ...], _TSList] = \
    weakref.WeakValueDictionary()
_CHECKS: weakref.WeakValueDictionary[
    tuple[tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]], Callable[[bytes], bool]
] = weakref.WeakValueDictionary()


_RECENT_MAX = 64
_RECENT_TS: dict[tuple[int, ...], tuple[tuple[TrafficSelector, ...], _TSList]] = {}
_RECENT_CHECKS: dict[tuple[tuple[int, ...], tuple[int, ...]],
                     tuple[tuple[TrafficSelector, ...], Callable[[bytes], bool]]] = {}


def _recent_put(memo: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
    if len(memo) >= _RECENT_MAX:
        memo.pop(next(iter(memo)))  # oldest first: a bounded FIFO
    memo[key] = value


def shared_ts(ts: list[TrafficSelector]) -> list[TrafficSelector]:
    """One list object for equal selector lists (10,000 Child SAs of one conn have the
    same selectors: one list, not 10,000).  It lives as long as an SA holds it; it must
    not be changed in place (nothing here does).

    The engine hands over the same (frozen) selector objects for every Child SA of a
    conn (:func:`pypluto.ike.ts.to_kernel` is memoised), so the lists seen last are
    found by the identity of their selectors first, without hashing and comparing
    networks (issue 18); the memo holds those selectors, so their ids stay theirs.
    """
    if isinstance(ts, _TSList):
        return ts
    ids = tuple(map(id, ts))
    hit = _RECENT_TS.get(ids)
    if hit is not None:
        return hit[1]
    key = tuple(ts)
    got = _TS_LISTS.get(key)
    if got is None:
        got = _TSList(key)
        _TS_LISTS[key] = got
    _recent_put(_RECENT_TS, ids, (key, got))
    return got


def inbound_check(sa: SAParams) -> Callable[[bytes], bool] | None:
    """The check of RFC 4301 §5.2 step 4 for an inbound SA (None: the SA has no selectors).

    The inner source must match one of the SA's remote selectors and the inner
    destination one of its local selectors, each with its protocol and ports
    (source port against the remote selector, destination port against the
    local one; ICMP type and code in both).  Results are cached per address
    pair, protocol and ports.  SAs with the same selectors share one check
    (and its cache) while any of them holds it.
    """
    if not sa.remote_ts or not sa.local_ts:
        return None
    ids = (tuple(map(id, sa.remote_ts)), tuple(map(id, sa.local_ts)))
    hit = _RECENT_CHECKS.get(ids)  # the same selector objects as lately (see shared_ts)
    if hit is not None:
        return hit[1]
    key = (tuple(sa.remote_ts), tuple(sa.local_ts))
    got = _CHECKS.get(key)
    if got is None:
        got = _make_check(list(key[0]), list(key[1]))
        _CHECKS[key] = got
    _recent_put(_RECENT_CHECKS, ids, (key[0] + key[1], got))
    return got


def _make_check(remote: list[TrafficSelector], local: list[TrafficSelector]
                ) -> Callable[[bytes], bool]:
    any_pp = all(is_any_proto_ports(t) for t in remote + local)
    cache: dict[bytes, bool] = {}
    # datagrams whose first fragment passed (frag_key): their other fragments, without
    # ports, pass too (RFC 4301 §7.3); only kept where ports are checked
    frags: dict[bytes, bool] = {}

    def _check(pkt: bytes) -> bool:
        f = flow_of(pkt)
        return f is not None and (
            any(ts_match(t, f.src, f.proto, f.sport) for t in remote)
            and any(ts_match(t, f.dst, f.proto, f.dport) for t in local))

    def _check_error(pkt: bytes) -> bool | None:
        """An ICMP error (RFC 4301 §6.2): the packet it quotes is one we sent through this
        SA's peer, so its source must match a local selector and its destination a
        remote one (source port against the local selector); an error whose quote is too
        short to read is dropped.  If the error's own header is outside the selectors
        (a router's address, ICMP on a port-limited SA) the quote alone admits it, when
        it is addressed to the quote's source.  None: not an ICMP error."""
        err, q = icmp_error_quote(pkt)
        if not err:
            return None
        if q is None or not (any(ts_match(t, q.src, q.proto, q.sport) for t in local)
                             and any(ts_match(t, q.dst, q.proto, q.dport) for t in remote)):
            return False
        if _check(pkt):
            return True
        f = flow_of(pkt)
        return f is not None and f.dst == q.src

    def check(pkt: bytes) -> bool:
        if len(pkt) < 20:
            return False
        if (pkt[9] if pkt[0] < 0x60 else pkt[6]) in ICMP_OR_EXT:  # never cached
            verdict = _check_error(pkt)
            if verdict is not None:
                return verdict
        if not any_pp and ((pkt[6] & 0x3F or pkt[7]) if pkt[0] >> 4 == 4
                           else pkt[6] in _V6_EXT or pkt[6] == _V6_FRAG):
            fk = frag_key(pkt)
            if fk is not None:  # never cached by the bytes after the header: data there
                if not fk[1] and fk[0] in frags:
                    return True
                passed = _check(pkt)
                if passed and fk[1]:
                    if len(frags) > 4096:
                        frags.clear()
                    frags[fk[0]] = True
                return passed
        key = addr_key(pkt)
        if not any_pp:  # protocol and the first bytes after a 20/40-byte header
            v4 = pkt[0] >> 4 == 4
            nh = pkt[9] if v4 else pkt[6]
            if not v4 and nh in _V6_EXT + (_V6_FRAG,):  # ports further on: no caching
                return _check(pkt)
            off = (pkt[0] & 0x0F) * 4 if v4 else 40
            key += bytes((nh,)) + bytes(pkt[off:off + 4]) + (bytes(pkt[6:8]) if v4 else b"")
        ok = cache.get(key)
        if ok is None:
            ok = _check(pkt)
            if len(cache) > 4096:
                cache.clear()
            cache[key] = ok
        return ok

    return check
