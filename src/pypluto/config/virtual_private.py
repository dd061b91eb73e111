"""Libreswan's ``virtual-private=`` list: which subnets a NATed peer may claim.

Syntax (ipsec.conf(5)): a comma-separated list of ``%v4:NET`` / ``%v6:NET``
entries; ``%v4:!NET`` excludes ``NET`` (typically the local LAN).  A peer's
claimed subnet is acceptable when it lies inside an included network and
overlaps no excluded one (RFC 3947 NAT traversal leaves the choice to policy).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from pypluto.params import IPNetwork


@dataclass
class VirtualPrivate:
    include: list[IPNetwork] = field(default_factory=list)
    exclude: list[IPNetwork] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> VirtualPrivate:
        """Parse the list; ValueError names the first bad entry."""
        vp = cls()
        items = [t.strip() for t in text.replace(" ", ",").split(",") if t.strip()]
        if not items:
            raise ValueError("empty list")
        for item in items:
            low = item.lower()
            if low.startswith("%v4:"):
                version, rest = 4, item[4:]
            elif low.startswith("%v6:"):
                version, rest = 6, item[4:]
            else:
                raise ValueError(f'"{item}" must start with %v4: or %v6:')
            neg = rest.startswith("!")
            if neg:
                rest = rest[1:]
            try:
                net = ipaddress.ip_network(rest, strict=False)
            except ValueError:
                raise ValueError(f'"{item}": "{rest}" is not a subnet') from None
            if net.version != version:
                raise ValueError(f'"{item}": an IPv{net.version} subnet after %v{version}:')
            (vp.exclude if neg else vp.include).append(net)
        return vp

    def allows(self, net: IPNetwork | str) -> bool:
        """Whether a peer behind NAT may use ``net`` as its subnet."""
        n = ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
        if any(n.version == x.version and n.overlaps(x) for x in self.exclude):
            return False
        if isinstance(n, ipaddress.IPv4Network):
            return any(isinstance(i, ipaddress.IPv4Network) and n.subnet_of(i) for i in self.include)
        return any(isinstance(i, ipaddress.IPv6Network) and n.subnet_of(i) for i in self.include)
