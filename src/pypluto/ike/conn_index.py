"""The responder's connection lookup for IKE_SA_INIT, indexed (issue 18, scale).

A new IKE SA's candidate connections (RFC 7296 §2.6: the responder picks a conn
before it knows the peer's ID) are the oriented IKEv2 conns that can negotiate,
whose local address is the one the request arrived on (or unset), and whose remote
address is the request's source (exact) or unset with a ``%any`` remote (wild):
the exact ones first, then the wild ones, each in load order.

Scanning every conn costs O(conns) of Python per request (8.7 ms at 10,000 conns);
``ConnIndex`` keeps the exact conns by remote address and the wild ones in a list,
so a request costs a dict look-up and a check of the local address of the few
candidates.  The index is rebuilt lazily whenever ``config.model.generation()``
has moved: that counter changes on every assignment of a field the filter reads
(``Connection.left/right/local_is_left/keyexchange/authby/type``,
``End.host/host_addr``) and on every change of a ``ConnectionTable`` (the engine's
conns by name), so no mutation can leave the index stale.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pypluto.config.model import Connection, IPAddress, bump_generation, generation

_NO_NEGOTIATION = ("passthrough", "drop", "reject")


class ConnectionTable(dict[str, Connection]):
    """The engine's connections by name, in load order; every change of the table
    invalidates the connection indexes (``config.model.generation``)."""

    def __setitem__(self, key: str, value: Connection) -> None:
        bump_generation()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        bump_generation()
        super().__delitem__(key)

    def pop(self, key: str, *default: object) -> object:  # type: ignore[override]
        bump_generation()
        return super().pop(key, *default)

    def popitem(self) -> tuple[str, Connection]:
        bump_generation()
        return super().popitem()

    def clear(self) -> None:
        bump_generation()
        super().clear()

    def update(self, *args: Any, **kwargs: Connection) -> None:
        bump_generation()
        super().update(*args, **kwargs)

    def setdefault(self, key: str, default: Connection) -> Connection:
        bump_generation()
        return super().setdefault(key, default)

    def __ior__(self, other: Any) -> ConnectionTable:  # type: ignore[override,misc]
        bump_generation()
        super().__ior__(other)
        return self


def negotiable(conn: Connection) -> bool:
    """An oriented IKEv2 conn that may answer an IKE_SA_INIT (not a shunt, not never)."""
    if conn.local_is_left is None or conn.keyexchange not in ("ikev2", "ike"):
        return False
    return conn.authby != "never" and conn.type not in _NO_NEGOTIATION


class ConnIndex:
    """Candidate conns of a new IKE SA by remote address (see the module docstring)."""

    __slots__ = ("_conns", "_gen", "_exact", "_wild", "builds")

    def __init__(self, conns: Mapping[str, Connection]) -> None:
        self._conns = conns
        self._gen = -1
        self._exact: dict[IPAddress, list[Connection]] = {}
        self._wild: list[Connection] = []
        self.builds = 0  # how many times the index was (re)built

    def _build(self, conns: Iterable[Connection]) -> None:
        exact: dict[IPAddress, list[Connection]] = {}
        wild: list[Connection] = []
        for conn in conns:
            if not negotiable(conn):
                continue
            remote = conn.remote
            ra = remote.host_addr
            if ra is not None:
                bucket = exact.get(ra)
                if bucket is None:
                    exact[ra] = [conn]
                else:
                    bucket.append(conn)
            elif remote.is_any:
                wild.append(conn)
        self._exact, self._wild = exact, wild
        self.builds += 1

    def candidates(self, local: IPAddress, remote: IPAddress) -> list[Connection]:
        """The exact conns of ``remote`` then the wild ones, each in load order, whose
        local address is ``local`` or unset."""
        gen = generation()
        if gen != self._gen:
            self._gen = gen  # nothing below assigns a watched field
            self._build(self._conns.values())
        out = [c for c in self._exact.get(remote, ())
               if c.local.host_addr is None or c.local.host_addr == local]
        out += [c for c in self._wild if c.local.host_addr is None or c.local.host_addr == local]
        return out
