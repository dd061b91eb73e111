"""The connection registry: which conns are loaded, oriented, routed.

A connection is *oriented* when one of its ends is a local address
(ipsec.conf(5) ``left`` / ``right``); one that is not yet is kept unoriented, as
pluto does, and loaded into the engine once ``whack --listen`` finds one of its
addresses.  ``auto=add`` / ``start`` / ``up`` / ``route`` / ``ondemand`` /
``keep`` conns are loaded at start-up; ``start`` and ``up`` are initiated once
the daemon listens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from pypluto.config.model import Connection, IPAddress
from pypluto.control.protocol import RC_FATAL, RC_SUCCESS
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.logger import PlutoLogger

LOADED_AUTO = ("add", "start", "up", "route", "ondemand", "keep")
"""``auto=`` values that load the conn at start-up (or on ``ipsec add --autoall``)."""

STARTED_AUTO = ("start", "up")
"""``auto=`` values that also initiate it."""


def config_conns(result: object) -> list[Connection]:
    """The connections of a parsed configuration (``ConfigFile`` or a stand-in)."""
    if result is None:
        return []
    conns = getattr(result, "connections", None)
    if conns is None:
        conns = getattr(result, "conns", None)
    if isinstance(conns, dict):
        return list(conns.values())
    return list(conns or [])


class Registry:
    """The daemon's connections, kept in step with the engine through the driver."""

    def __init__(self, log: PlutoLogger, driver: EngineDriver, uniqueids: bool,
                 initiate: Callable[[str], int]) -> None:
        self.log = log
        self.driver = driver
        self.uniqueids = uniqueids
        self.initiate = initiate
        self.conns: dict[str, Connection] = {}
        self.unoriented: dict[str, Connection] = {}
        self.routed: set[str] = set()
        self.local_addrs: set[IPAddress] = set()
        # a check every added conn must pass (the algorithm self-test): None, or why not
        self.admit: Callable[[Connection], str | None] = lambda conn: None

    def __contains__(self, name: object) -> bool:
        return name in self.conns or name in self.unoriented

    def load(self, result: object) -> None:
        """Start-up: the diagnostics of the parsed config, then its loadable conns."""
        for d in getattr(result, "diagnostics", []) or []:
            self.log.log(str(d), "warning" if getattr(d, "severity", "") == "warning"
                         else "error")
        for conn in config_conns(result):
            if conn.auto in LOADED_AUTO:
                self.add(conn)
                if conn.auto in ("route", "ondemand"):
                    self.log.log(
                        f"auto={conn.auto}: loaded; on-demand trapping is not implemented "
                        "yet, initiate it with whack --initiate",
                        conn=conn.name,
                    )

    def auto_start(self) -> None:
        for conn in list(self.conns.values()):
            if conn.auto in STARTED_AUTO:
                self.initiate(conn.name)

    def add(self, conn: Connection, emit: Callable[[str], None] | None = None) -> int:
        """Orient and load one connection (replacing one of that name); returns a whack rc.

        A connection neither of whose ends is a local address is kept *unoriented*
        (as pluto does) and loaded once ``--listen`` finds one of its addresses.
        """
        refused = self.admit(conn)
        if refused:
            self.log.log(refused, "error", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {refused}')
            return RC_FATAL
        if conn.name in self.conns:
            self.delete(conn.name)
        self.unoriented.pop(conn.name, None)
        if "uniqueids" not in conn.raw:  # a config setup value: the command line wins
            conn.uniqueids = self.uniqueids
        if not conn.orient(self.local_addrs):
            self.unoriented[conn.name] = conn
            msg = ("neither end is a local address: connection kept unoriented until "
                   '"ipsec listen" finds one')
            self.log.log(msg, "warning", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {msg}')
            return RC_SUCCESS
        self.conns[conn.name] = conn
        self.driver.run(lambda e: e.add_connection(conn), where=f"adding {conn.name}")
        version = "IKEv1" if conn.keyexchange == "ikev1" else "IKEv2"
        if emit:  # the engine logs the same line itself
            emit(f'"{conn.name}": added {version} connection')
        return RC_SUCCESS

    def orient_pending(self, local_addrs: Iterable[IPAddress]) -> None:
        """After an interface rescan: load the unoriented conns that now orient."""
        self.local_addrs = set(local_addrs)
        for name, conn in list(self.unoriented.items()):
            if conn.orient(self.local_addrs):
                self.log.log("connection oriented after --listen", conn=name)
                self.add(conn)
                if conn.auto in STARTED_AUTO:
                    self.initiate(name)

    def delete(self, name: str) -> None:
        if self.unoriented.pop(name, None) is not None:
            return
        now = self.driver.now()
        self.driver.run(lambda e: e.delete_connection(name, now), where=f"deleting {name}")
        self.conns.pop(name, None)
        self.routed.discard(name)

    def conns_with_peer(self, addr: IPAddress) -> list[str]:
        """The loaded connections whose remote end is at ``addr``."""
        out = []
        for name, conn in self.conns.items():
            try:
                if conn.remote.host_addr == addr:
                    out.append(name)
            except ValueError:  # not oriented after all
                continue
        return out
