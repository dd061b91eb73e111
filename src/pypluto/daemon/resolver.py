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

from pypluto.config.ids import ID_FQDN, ID_IPV4_ADDR, ID_IPV6_ADDR
from pypluto.config.model import Connection, End, Identity
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


__all__ = ["lookup_names", "names_to_look_up", "resolve_host", "resolve_ids", "resolve_names"]


def names_to_look_up(conn: Connection) -> list[str]:
    """The host names of ``conn``'s ends that have no address yet (``resolve_names``),
    and the bare names written as IDs (``resolve_ids``)."""
    out: list[str] = []
    for end in (conn.left, conn.right):
        host = end.host
        if host and not host.startswith("%") and end.host_addr is None and host not in out:
            out.append(host)
        name = _id_name(end)
        if name is not None and name not in out:
            out.append(name)
    return out


def _id_name(end: End) -> str | None:
    """``leftid=east.example`` (no ``@``): a host name, where ``@east.example`` is an
    FQDN ID taken as written (ipsec.conf(5))."""
    i = end.id
    if i is None or i.id_type != ID_FQDN or i.text.startswith("@"):
        return None
    return i.text


def resolve_ids(conn: Connection, resolver: Callable[[str], list[IPAddress]] = resolve_host
                ) -> str | None:
    """A bare host name as ``leftid=``/``rightid=`` is resolved when the conn is added,
    as Libreswan 5.2's pluto does (its test addconn-40-id): the ID is the IP address
    it resolves to (of the end's family when its host address is known).  None, or
    why the conn is refused (a name that does not resolve, in Libreswan's words)."""
    for side, end in (("left", conn.left), ("right", conn.right)):
        name = _id_name(end)
        if name is None:
            continue
        try:
            addrs = resolver(name)
        except (OSError, UnicodeError):
            addrs = []
        fam = end.host_addr.version if end.host_addr is not None else None
        pick = next((a for a in addrs if fam is None or a.version == fam), None)
        if pick is None and addrs:
            pick = addrs[0]
        if pick is None:
            return (f"{side}id={name} invalid: not a numeric IPv4 address and name lookup "
                    "failed (no validation performed)")
        end.id = Identity(ID_IPV4_ADDR if pick.version == 4 else ID_IPV6_ADDR, pick.packed,
                          str(pick))
    return None


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
