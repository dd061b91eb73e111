"""Address pools and their leases (``rightaddresspool=``; RFC 7296 §3.15.4).

A gateway hands each road warrior an inner address from the pool of its
connection in the Configuration Payload.  As Libreswan does, an address stays
bound to the client's ID after the client goes: when the same ID comes back it
gets the same address, as long as nobody else needed it in between.  New
clients get a never-used address first and, only when those run out (or
``LINGERING_MAX`` released addresses wait already), the address that was
released longest ago ("lingering" leases).

Nothing here knows about time or I/O: the engine acquires a ``Lease`` for an IKE
SA and releases it when the IKE SA is forgotten (Delete, liveness failure,
replacement); an IKE SA rekey hands the lease to the new IKE SA.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from pypluto.config.addresspool import parse_pool
from pypluto.params import IPAddress

__all__ = ["Lease", "LeaseTable", "parse_pool"]

LINGERING_MAX = 4096  # released addresses remembered per pool (for their client's return)

LeaseKey = tuple[object, ...]  # ("id", type, data) with uniqueids, else ("sa", serial)


@dataclass(eq=False)
class Lease:
    """One address held by one IKE SA."""

    pool: str  # the pool's spec
    addr: IPAddress
    key: LeaseKey
    owner: str = ""  # the client's ID, for status
    released: bool = False


@dataclass
class _Range:
    lo: int
    hi: int
    version: int
    cursor: int = 0  # next never-used offset

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1


@dataclass
class AddressPool:
    """One range of one family; leases by key, lingering addresses in release order."""

    spec: str
    rng: _Range
    holders: dict[IPAddress, int] = field(default_factory=dict)  # address -> live leases
    owner_of: dict[IPAddress, LeaseKey] = field(default_factory=dict)
    by_key: dict[LeaseKey, IPAddress] = field(default_factory=dict)
    owner_text: dict[IPAddress, str] = field(default_factory=dict)
    lingering: OrderedDict[IPAddress, None] = field(default_factory=OrderedDict)

    def _addr(self, off: int) -> IPAddress:
        return ipaddress.ip_address(self.rng.lo + off)

    def contains(self, addr: IPAddress) -> bool:
        return addr.version == self.rng.version and self.rng.lo <= int(addr) <= self.rng.hi

    def free(self) -> int:
        return self.rng.size - len(self.holders)

    def _bind(self, addr: IPAddress, key: LeaseKey, owner: str) -> Lease:
        old = self.owner_of.get(addr)
        if old is not None and old != key:
            self.by_key.pop(old, None)
        self.owner_of[addr] = key
        self.by_key[key] = addr
        self.owner_text[addr] = owner
        self.lingering.pop(addr, None)
        self.holders[addr] = self.holders.get(addr, 0) + 1
        return Lease(self.spec, addr, key, owner)

    def acquire(self, key: LeaseKey, owner: str, hint: IPAddress | None = None) -> Lease | None:
        """An address for ``key``: its own again, else ``hint`` if free, else a new one."""
        mine = self.by_key.get(key)
        if mine is not None:
            return self._bind(mine, key, owner)
        # (the address asked for is a new one too: within the same bound, or clients
        # asking for ever other addresses of a /64 would grow that memory for ever)
        if hint is not None and self.contains(hint) and hint not in self.holders and \
                self.owner_of.get(hint) is None and len(self.lingering) < LINGERING_MAX:
            return self._bind(hint, key, owner)
        # a never-used address first, unless LINGERING_MAX released ones wait already:
        # each remembers its client, and in a pool too large to run out (an IPv6 /64)
        # clients coming and going (new IDs, ID_NULL) would grow that memory for ever
        while self.rng.cursor < self.rng.size and len(self.lingering) < LINGERING_MAX:
            a = self._addr(self.rng.cursor)
            self.rng.cursor += 1
            if a not in self.holders and a not in self.owner_of:
                return self._bind(a, key, owner)
        for a in self.lingering:  # the one released longest ago
            return self._bind(a, key, owner)
        return None

    def release(self, lease: Lease) -> None:
        n = self.holders.get(lease.addr, 0) - 1
        if n > 0:
            self.holders[lease.addr] = n
            return
        self.holders.pop(lease.addr, None)
        self.lingering[lease.addr] = None


class LeaseTable:
    """Every pool of the daemon.  Conns naming the same range share its pool, however
    they spell it (``192.0.2.0/30`` is ``192.0.2.1-192.0.2.2``); a range that overlaps
    another without being the same gives no address while that other one has leases
    (Libreswan refuses such a conn: "range inexactly overlaps existing address pool"):
    never is one address leased twice."""

    def __init__(self) -> None:
        self.pools: dict[tuple[str, int], AddressPool] = {}  # by spec and family
        self.ranges: dict[tuple[int, int, int], AddressPool] = {}  # by (family, lo, hi)

    def pool(self, spec: str, version: int) -> AddressPool | None:
        """The pool of ``spec`` for one address family, or None if it has no such range
        (or its range overlaps the different range of a pool with leases)."""
        p = self.pools.get((spec, version))
        if p is None:
            for lo, hi in parse_pool(spec):
                if lo.version != version:
                    continue
                rkey = (version, int(lo), int(hi))
                p = self.ranges.get(rkey)
                if p is None:
                    if self.overlapping(spec, version) is not None:
                        return None
                    p = self.ranges[rkey] = AddressPool(spec, _Range(int(lo), int(hi), version))
                self.pools[(spec, version)] = p
        return p

    def overlapping(self, spec: str, version: int) -> str | None:
        """The spec of a pool with live leases whose range overlaps, without being,
        ``spec``'s range of this family; None if there is none.  An overlapping pool
        without live leases (the old range of a reloaded conn) is forgotten."""
        for lo, hi in parse_pool(spec):
            if lo.version != version:
                continue
            for rkey, other in list(self.ranges.items()):
                v, a, b = rkey
                if v == version and (a, b) != (int(lo), int(hi)) and a <= int(hi) and \
                        int(lo) <= b:
                    if other.holders:
                        return other.spec
                    del self.ranges[rkey]
                    for k in [k for k, q in self.pools.items() if q is other]:
                        del self.pools[k]
        return None

    def acquire(self, spec: str, version: int, key: LeaseKey, owner: str,
                hint: IPAddress | None = None) -> Lease | None:
        p = self.pool(spec, version)
        return p.acquire(key, owner, hint) if p is not None else None

    def release(self, lease: Lease) -> None:
        if lease.released:
            return
        lease.released = True
        p = self.pools.get((lease.pool, lease.addr.version))
        if p is not None:
            p.release(lease)

    def in_use(self) -> list[tuple[str, IPAddress, str]]:
        """(pool, address, client ID) of every address held by a live IKE SA."""
        out = []
        for p in sorted(self.ranges.values(), key=lambda p: (p.spec, p.rng.version)):
            for a in sorted(p.holders, key=int):
                out.append((p.spec, a, p.owner_text.get(a, "")))
        return out

    def summary(self) -> list[tuple[str, int, int, int]]:
        """(pool, size, in use, lingering) per pool range."""
        return [(p.spec, p.rng.size, len(p.holders), len(p.lingering))
                for p in sorted(self.ranges.values(), key=lambda p: (p.spec, p.rng.version))]
