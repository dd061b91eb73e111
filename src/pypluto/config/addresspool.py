"""``leftaddresspool=`` / ``rightaddresspool=`` values (ranges of one or both families)."""

from __future__ import annotations

import ipaddress

from pypluto.params import IPAddress


def parse_pool(spec: str) -> list[tuple[IPAddress, IPAddress]]:
    """``192.0.2.10-192.0.2.99``, ``192.0.2.0/26`` or ``2001:db8::/120``, comma separated:
    the addresses leased from each range (a CIDR block leaves out its network address,
    and an IPv4 one its broadcast address too).

    Raises ValueError with a message for a bad range (start after end, mixed
    families, a range of a single family twice, one that starts at the zero address,
    an empty field between commas), as Libreswan refuses them.
    """
    out: list[tuple[IPAddress, IPAddress]] = []
    for lo, hi, net in _ranges(spec):
        if net is not None and net.num_addresses > 1:
            if net.version == 4 and net.prefixlen < 31:
                lo, hi = lo + 1, hi - 1
            elif net.version == 6:
                lo = lo + 1
        out.append((lo, hi))
    return out


def pool_blocks(spec: str) -> list[tuple[IPAddress, IPAddress]]:
    """The ranges as written (a CIDR block whole): what Libreswan compares two conns'
    pools by (one pool per range).  Raises ValueError as ``parse_pool``."""
    return [(lo, hi) for lo, hi, _net in _ranges(spec)]


def _ranges(spec: str) -> list[tuple[IPAddress, IPAddress, ipaddress.IPv4Network |
                                     ipaddress.IPv6Network | None]]:
    """Each range of ``spec`` as written, checked: (first, last, the CIDR block or None)."""
    out: list[tuple[IPAddress, IPAddress, ipaddress.IPv4Network |
                    ipaddress.IPv6Network | None]] = []
    parts = spec.replace(" ", "").split(",")
    for part in parts:
        if not part:
            if any(parts):
                raise ValueError("empty field")
            continue
        net: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
        if "-" in part:
            a, b = part.split("-", 1)
            lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
            if lo.version != hi.version:
                raise ValueError(f"address pool {part!r} mixes IPv4 and IPv6")
            if int(hi) < int(lo):
                raise ValueError(f"address pool {part!r}: start is after end")
        else:
            net = ipaddress.ip_network(part, strict=False)
            lo, hi = net.network_address, net.broadcast_address
        if not int(lo):  # the unspecified address is no client's
            raise ValueError(f"address pool {part} starts at address zero")
        if any(r[0].version == lo.version for r in out):
            raise ValueError(f"address pool {spec!r} has two IPv{lo.version} ranges")
        out.append((lo, hi, net))
    if not out:
        raise ValueError(f"address pool {spec!r} is empty")
    return out
