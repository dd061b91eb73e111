"""Host names to addresses for the engine (RFC 5685 §10: a gateway named by FQDN).

The engine never resolves (sans-I/O): it hands ``resolve_host(name)`` out as a
``Compute(io=True)`` job, which the driver runs on the loop's thread pool, so a
slow DNS server never stalls the event loop.  ``getaddrinfo`` honours
``/etc/hosts`` (and, under ``ip netns exec``, ``/etc/netns/NAME/hosts``).

The names of a conn's ends (``right=vpn.example.org``) are looked up by
:func:`lookup_names` on the same pool when ``ipsec add`` or ``ipsec up`` needs
them, and applied by :func:`resolve_names` on the loop's thread: IKE traffic
and whack go on while a DNS server is slow.  Libreswan gets the same from its
separate ``addconn`` process.  At start-up the lookups block, as there.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

from pypluto.config.model import Connection
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


__all__ = ["lookup_names", "names_to_look_up", "resolve_host", "resolve_names"]


def names_to_look_up(conn: Connection) -> list[str]:
    """The host names of ``conn``'s ends that have no address yet (``resolve_names``)."""
    out: list[str] = []
    for end in (conn.left, conn.right):
        host = end.host
        if host and not host.startswith("%") and end.host_addr is None and host not in out:
            out.append(host)
    return out


def lookup_names(names: list[str], resolver: Callable[[str], list[IPAddress]] = resolve_host
                 ) -> Callable[[str], list[IPAddress]]:
    """Look up ``names`` now (this blocks: run it on a worker thread) and return a
    resolver that answers from these results alone, for :func:`resolve_names` on the
    loop's thread; a name that failed raises its error again."""
    found: dict[str, list[IPAddress] | OSError | UnicodeError] = {}
    for name in names:
        try:
            found[name] = resolver(name)
        except (OSError, UnicodeError) as e:
            found[name] = e

    def answer(name: str) -> list[IPAddress]:
        got = found.get(name)
        if got is None:
            raise OSError(f"{name} was not looked up")
        if isinstance(got, (OSError, UnicodeError)):
            raise got
        return got

    return answer


def resolve_names(conn: Connection,
                  resolver: Callable[[str], list[IPAddress]] = resolve_host
                  ) -> list[tuple[str, str]]:
    """Give each end of ``conn`` written as a host name (``right=vpn.example.org``) its
    address, as Libreswan's addconn does when it loads the conn; returns (log line,
    level) pairs.  An address of ``hostaddrfamily=``, else of the other end's family
    when its address is known, else the resolver's first.  A name that does not resolve stays without an
    address: such an end neither initiates nor matches a peer (it is never a wildcard),
    and ``ipsec up`` tries the name again."""
    notes: list[tuple[str, str]] = []
    for side, end, other in (("left", conn.left, conn.right), ("right", conn.right, conn.left)):
        host = end.host
        if host is None or host.startswith("%") or end.host_addr is not None:
            continue
        try:
            addrs = resolver(host)
        except (OSError, UnicodeError) as e:
            notes.append((f"{side}={host} does not resolve ({e}); the conn cannot be used "
                          "until it does", "error"))
            continue
        fam = conn.hostaddrfamily or \
            (other.host_addr.version if other.host_addr is not None else None)
        pick = next((a for a in addrs if fam is None or a.version == fam), None)
        if pick is None:
            notes.append((f"{side}={host} has no IPv{fam} address (it resolves to "
                          f"{', '.join(map(str, addrs)) or 'nothing'})", "error"))
            continue
        end.host_addr = pick
        notes.append((f"{side}={host} is {pick}", "info"))
    return notes
