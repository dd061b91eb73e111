"""``leftaddresspool=`` / ``rightaddresspool=`` values (ranges of one or both families)."""

from __future__ import annotations

import ipaddress

from pypluto.params import IPAddress


def parse_pool(spec: str) -> list[tuple[IPAddress, IPAddress]]:
    """``192.0.2.10-192.0.2.99``, ``192.0.2.0/26`` or ``2001:db8::/120``, comma separated.

    Raises ValueError with a message for a bad range (start after end, mixed
    families, a range of a single family twice, one that starts at the zero address,
    an empty field between commas), as Libreswan refuses them.
    """
    out: list[tuple[IPAddress, IPAddress]] = []
    parts = spec.replace(" ", "").split(",")
    for part in parts:
        if not part:
            if any(parts):
                raise ValueError("empty field")
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
            if lo.version != hi.version:
                raise ValueError(f"address pool {part!r} mixes IPv4 and IPv6")
            if int(hi) < int(lo):
                raise ValueError(f"address pool {part!r}: start is after end")
            start = lo
        else:
            net = ipaddress.ip_network(part, strict=False)
            start = net.network_address
            if net.num_addresses == 1:
                lo = hi = net.network_address
            elif net.version == 4 and net.prefixlen < 31:
                # leave out the network and broadcast addresses of an IPv4 subnet
                lo, hi = net.network_address + 1, net.broadcast_address - 1
            else:
                lo, hi = net.network_address + (1 if net.version == 6 else 0), \
                    net.broadcast_address
        if not int(start):  # the unspecified address is no client's
            raise ValueError(f"address pool {part} starts at address zero")
        if any(r[0].version == lo.version for r in out):
            raise ValueError(f"address pool {spec!r} has two IPv{lo.version} ranges")
        out.append((lo, hi))
    if not out:
        raise ValueError(f"address pool {spec!r} is empty")
    return out
