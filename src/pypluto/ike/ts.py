"""Traffic selectors (RFC 7296 §2.9, §3.13): ranges, narrowing, kernel selectors.

Inside the engine a selector is ``TS(version, proto, sport, eport, start, end)``
with integer addresses, so intersection is plain arithmetic.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple

from pypluto.params import IPAddress, TrafficSelector

_ADDR = (ipaddress.IPv4Address, ipaddress.IPv6Address)
TS_IPV4_ADDR_RANGE = 7
TS_IPV6_ADDR_RANGE = 8
_VERSIONS = {TS_IPV4_ADDR_RANGE: 4, TS_IPV6_ADDR_RANGE: 6}


class TS(NamedTuple):
    version: int  # 4 or 6
    proto: int  # 0 = any
    sport: int
    eport: int
    start: int
    end: int

    @property
    def ts_type(self) -> int:
        return TS_IPV4_ADDR_RANGE if self.version == 4 else TS_IPV6_ADDR_RANGE

    def start_addr(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.IPv4Address(self.start) if self.version == 4 else \
            ipaddress.IPv6Address(self.start)

    def end_addr(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.IPv4Address(self.end) if self.version == 4 else \
            ipaddress.IPv6Address(self.end)

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return list(_networks(self))

    def __str__(self) -> str:
        nets = self.networks()
        s = str(nets[0]) if len(nets) == 1 else f"{self.start_addr()}-{self.end_addr()}"
        if self.proto or (self.sport, self.eport) != (0, 65535):
            ports = str(self.sport) if self.sport == self.eport else f"{self.sport}-{self.eport}"
            s += f"/{self.proto}/{ports}"
        return s


# Selectors recur (every SA of a connection has the same ones): their networks and
# kernel selectors are made once each (issue 18).  The values are immutable; a few
# hundred distinct selectors are kept.
_MEMO_SIZE = 256


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _networks(ts: TS) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """The CIDR blocks that make up the range of ``ts``."""
    size = ts.end - ts.start + 1
    if size & (size - 1) == 0 and ts.start % size == 0:  # one CIDR block (common)
        bits = 32 if ts.version == 4 else 128
        plen = bits - (size.bit_length() - 1)
        cls = ipaddress.IPv4Network if ts.version == 4 else ipaddress.IPv6Network
        return (cls((ts.start, plen)),)
    return tuple(ipaddress.summarize_address_range(ts.start_addr(), ts.end_addr()))


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _kernel(ts: TS) -> tuple[TrafficSelector, ...]:
    return tuple(TrafficSelector(n, ts.proto, ts.sport, ts.eport) for n in _networks(ts))


def from_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
                 protoport: tuple[int, int] = (0, 0)) -> TS:
    proto, port = protoport
    sport, eport = (port, port) if port else (0, 65535)
    return TS(net.version, proto, sport, eport, int(net.network_address),
              int(net.broadcast_address))


def from_addr(addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
              protoport: tuple[int, int] = (0, 0)) -> TS:
    return from_network(ipaddress.ip_network(addr), protoport)


def from_range(ts_type: int, proto: int, sport: int, eport: int,
               start: IPAddress | str | int | bytes, end: IPAddress | str | int | bytes
               ) -> TS | None:
    """A selector from wire values; None when it is malformed (start > end, bad type,
    ports without a protocol)."""
    try:
        a = start if isinstance(start, _ADDR) else ipaddress.ip_address(start)
        b = end if isinstance(end, _ADDR) else ipaddress.ip_address(end)
    except ValueError:
        return None
    version = _VERSIONS.get(ts_type)
    if version is None or a.version != version or b.version != version:
        return None
    lo, hi = int(a), int(b)
    if lo > hi or sport > eport:
        return None
    if proto == 0 and (sport, eport) != (0, 65535):
        # §3.13.1: without a protocol the ports MUST be 0-65535; a kernel selector of
        # protocol 0 carries no ports, so installing it would widen it to every port
        return None
    return TS(version, proto, sport, eport, lo, hi)


def intersect(a: TS, b: TS) -> TS | None:
    if a.version != b.version:
        return None
    if a.proto and b.proto and a.proto != b.proto:
        return None
    s, e = max(a.start, b.start), min(a.end, b.end)
    ps, pe = max(a.sport, b.sport), min(a.eport, b.eport)
    if s > e or ps > pe:
        return None
    return TS(a.version, a.proto or b.proto, ps, pe, s, e)


def contains(outer: TS, inner: TS) -> bool:
    return (outer.version == inner.version and outer.start <= inner.start
            and inner.end <= outer.end and outer.sport <= inner.sport
            and inner.eport <= outer.eport and (outer.proto == 0 or outer.proto == inner.proto))


def narrow(proposed: list[TS], configured: list[TS], allow_narrowing: bool) -> list[TS] | None:
    """The responder's answer to one TS list (§2.9), or None for TS_UNACCEPTABLE.

    Without ``narrowing=yes`` the peer's selectors must cover our configured ones
    and we answer with exactly ours (what a leased address or a NAT'd transport peer
    gets; a new Child SA otherwise goes through ``fit``); with it, we answer the
    non-empty intersection.  The first selector may be the packet that
    triggered the exchange; it is only a hint and takes part like the others.
    """
    if not proposed:
        return None
    if not allow_narrowing:
        for c in configured:
            if not any(contains(p, c) for p in proposed):
                return None
        return list(configured)
    out: list[TS] = []
    for c in configured:
        for p in proposed:
            i = intersect(c, p)
            if i is not None and i not in out:
                out.append(i)
    # an intersection inside another one adds nothing (the §2.9 packet hint inside
    # the configured subnet): answering both would give the initiator a list its
    # own selectors do not equal (Libreswan's ikev2-ondemand-01-instance-*)
    out = [t for t in out if not any(o != t and contains(o, t) for o in out)]
    return out or None


def fit(proposed: list[TS], configured: list[TS], allow_narrowing: bool) -> list[TS] | None:
    """The responder's answer to one TS list of a new Child SA, or None (TS_UNACCEPTABLE).

    ``narrowing=no`` means no selector is narrowed (ipsec.conf(5)): we answer with
    those configured selectors that are among the proposed ones exactly (Libreswan
    5.2's END_EQUALS_TS; its tests ikev2-allow-narrow-01 and
    ikev2-selectors-44in4-rw-ike-mismatch-01), at least one; a configured selector
    the peer did not propose is left out of the answer (a subset, §2.9) and the
    engine blocks it (``left_out``).  With ``narrowing=yes`` as ``narrow``.  The §2.9
    packet hint may come first: it is simply not one of ours and takes no part.
    """
    if allow_narrowing:
        return narrow(proposed, configured, True)
    out = [c for c in configured if c in proposed]
    return out or None


def answer_ok(answer: list[TS], proposed: list[TS], configured: list[TS],
              allow_narrowing: bool) -> bool:
    """The initiator's check of the responder's selectors (§2.9).

    Each answered selector lies inside one we proposed; without narrowing it is one
    of our configured selectors exactly: the answer may leave some of them out (a
    subset of whole selectors, Libreswan's ikev2-selectors-44in4-rw-ike-mismatch-02;
    the engine blocks those, ``left_out``), never narrow or add one.
    """
    if not answer:
        return False
    for a in answer:
        if not any(contains(p, a) for p in proposed):
            return False
    if not allow_narrowing:
        return all(a in configured for a in answer)
    return True


def pairs(local: list[TS], remote: list[TS]) -> bool:
    """Do the two lists make at least one (local, remote) pair of one address family
    (a Child SA with none would carry nothing)?"""
    return any(lt.version == rt.version for lt in local for rt in remote)


def left_out(local: list[TS], remote: list[TS], conf_local: list[TS],
             conf_remote: list[TS]) -> tuple[tuple[TS, TS], ...]:
    """The configured (local, remote) pairs a Child SA of selectors ``local`` ===
    ``remote`` leaves out: one end is a configured selector no selector of the Child
    SA overlaps.  The engine installs block policies for them (Libreswan's
    "(block)" selectors), so that none of the conn's traffic goes out in cleartext
    because the peer did not take it."""
    def covered(c: TS, tss: list[TS]) -> bool:
        return any(intersect(c, t) is not None for t in tss)

    # each end's coverage once, not once per pair (the lists may be a peer's, ts_fit_grade)
    lcov = [covered(lt, local) for lt in conf_local]
    rcov = [covered(rt, remote) for rt in conf_remote]
    return tuple((lt, rt) for lt, lc in zip(conf_local, lcov, strict=True)
                 for rt, rc in zip(conf_remote, rcov, strict=True)
                 if lt.version == rt.version and not (lc and rc))


# A peer's selector lists are bounded (RFC 7296 sets no limit; Libreswan 5.2 refuses a
# payload of 16 or more): each list costs the responder a pass per configured selector,
# and with narrowing every answered pair becomes kernel policies.  A range that is no
# CIDR block is installed as the blocks that make it up exactly (never widened), so an
# IPv6 range can make 254 of them and a pair of lists their product: the Child SA may
# make no more kernel selector pairs than its conn's own selectors do, or MAX_KERNEL_PAIRS.
MAX_SELECTORS = 64
MAX_KERNEL_PAIRS = 256


def kernel_pairs(local: list[TS], remote: list[TS]) -> int:
    """The (local, remote) kernel selector pairs a Child SA of these selectors installs."""
    return sum(len(_networks(lt)) * len(_networks(rt)) for lt in local for rt in remote
               if lt.version == rt.version)


def too_many(local: list[TS], remote: list[TS], conf_local: list[TS],
             conf_remote: list[TS]) -> bool:
    """Would a Child SA of ``local`` === ``remote`` install more kernel policies than the
    conn's configured selectors, and more than MAX_KERNEL_PAIRS?"""
    return kernel_pairs(local, remote) > max(MAX_KERNEL_PAIRS,
                                             kernel_pairs(conf_local, conf_remote))


def to_kernel(ts: TS) -> list[TrafficSelector]:
    return list(_kernel(ts))


def fmt(tss: list[TS]) -> str:
    return " ".join(str(t) for t in tss)
