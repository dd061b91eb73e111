"""Host names to addresses for the engine (RFC 5685 §10: a gateway named by FQDN).

The engine never resolves (sans-I/O): it hands ``resolve_host(name)`` out as a
``Compute(io=True)`` job, which the driver runs on the loop's thread pool, so a
slow DNS server never stalls the event loop.  ``getaddrinfo`` honours
``/etc/hosts`` (and, under ``ip netns exec``, ``/etc/netns/NAME/hosts``).
"""

from __future__ import annotations

import ipaddress
import socket

from pypluto.params import IPAddress


def resolve_host(name: str) -> list[IPAddress]:
    """Every address of ``name`` in the resolver's order, without duplicates (raises
    ``OSError`` (``socket.gaierror``) when it does not resolve)."""
    out: list[IPAddress] = []
    for family, _t, _p, _c, sockaddr in socket.getaddrinfo(name, None,
                                                           type=socket.SOCK_DGRAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    return out


__all__ = ["resolve_host"]
