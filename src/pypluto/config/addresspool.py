"""``leftaddresspool=`` / ``rightaddresspool=`` values (ranges of one or both families)."""

from __future__ import annotations

import ipaddress

from pypluto.params import IPAddress


def parse_pool(spec: str) -> list[tuple[IPAddress, IPAddress]]:
    """``192.0.2.10-192.0.2.99``, ``192.0.2.0/26`` or ``2001:db8::/120``, comma separated.

    Raises ValueError with a message for a bad range (start after end, mixed
    families, a range of a single family twice).
    """
    out: list[tuple[IPAddress, IPAddress]] = []
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
            if lo.version != hi.version:
                raise ValueError(f"address pool {part!r} mixes IPv4 and IPv6")
            if int(hi) < int(lo):
                raise ValueError(f"address pool {part!r}: start is after end")
        else:
            net = ipaddress.ip_network(part, strict=False)
            if net.num_addresses == 1:
                lo = hi = net.network_address
            elif net.version == 4 and net.prefixlen < 31:
                # leave out the network and broadcast addresses of an IPv4 subnet
                lo, hi = net.network_address + 1, net.broadcast_address - 1
            else:
                lo, hi = net.network_address + (1 if net.version == 6 else 0), \
                    net.broadcast_address
        if any(r[0].version == lo.version for r in out):
            raise ValueError(f"address pool {spec!r} has two IPv{lo.version} ranges")
        out.append((lo, hi))
    if not out:
        raise ValueError(f"address pool {spec!r} is empty")
    return out
