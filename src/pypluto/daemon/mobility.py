"""MOBIKE's edge (RFC 4555 §3.5): notice that this host's address changed and tell the engine.

A road warrior moves: an address goes away (another network, another interface).
``AddressWatcher`` polls the host's addresses (rtnetlink dump, every ``interval``
seconds); on a change it rescans the IKE sockets (so that one exists on the new
address) and, for every address that went away and still carries IKE SAs, asks
the kernel which source address now reaches their peers (a connected UDP
socket: no packet is sent) and calls ``Engine.local_address_changed``, which
sends UPDATE_SA_ADDRESSES for the IKE SAs that negotiated MOBIKE.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from pypluto.daemon.interfaces import local_addresses
from pypluto.params import IPAddress


def source_towards(peer: IPAddress) -> IPAddress | None:
    """The source address the routing table picks for ``peer`` (None: unreachable)."""
    fam = socket.AF_INET6 if peer.version == 6 else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.connect((str(peer), 4500))
            return ipaddress.ip_address(s.getsockname()[0])
        except OSError:
            return None


def _addr_of(endpoint: str) -> IPAddress | None:
    host = endpoint.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def stranded(conns: dict[str, Any], ike_sas: list[Any], local: set[IPAddress]) -> list[str]:
    """The loaded connections whose local address is no longer one of ``local`` and
    none of whose IKE SAs runs from one that still is (MOBIKE moved it): on
    ``ipsec listen`` Libreswan 5.2 (iface.c, release_dead_interfaces) terminates
    their SAs and disorients them, until the address is back."""
    alive = {ike.conn.split("[")[0] for ike in ike_sas if _addr_of(ike.local) in local}
    out = []
    for name, conn in conns.items():
        try:
            addr = conn.local.host_addr
        except ValueError:  # not oriented
            continue
        if addr is not None and addr not in local and name not in alive:
            out.append(name)
    return out


class AddressWatcher:
    """Polls the local addresses; a vanished one moves its MOBIKE IKE SAs (RFC 4555)."""

    def __init__(self, rescan: Callable[[], None], driver: object, now: Callable[[], float],
                 interval: float = 0.5) -> None:
        self.rescan = rescan
        self.driver = driver
        self.now = now
        self.interval = interval
        self.known: set[IPAddress] = {a.addr for a in local_addresses()}
        self._task: asyncio.Task[None] | None = None
        self._error = ""  # the last failed poll's error, logged once

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.check()
                self._error = ""
            except Exception as e:  # noqa: BLE001 - a failed poll must not stop the daemon
                self._report(f"{type(e).__name__}: {e}")

    def _report(self, error: str) -> None:
        """Log a failed poll once (the next polls try again, silently while it lasts)."""
        if error == self._error:
            return
        self._error = error
        log = getattr(self.driver, "log", None)
        with contextlib.suppress(Exception):
            if log is not None:
                log.log(f"MOBIKE: local address check failed ({error}); trying again",
                        "warning")

    def check(self) -> None:
        """One poll.  The new address set is remembered only once the rescan and the
        moves were handed on: a poll that fails half-way is done again whole by the
        next one, instead of forgetting the address that went away."""
        addrs = {a.addr for a in local_addresses()}
        if addrs == self.known:
            return
        gone = self.known - addrs
        self.rescan()
        self._move(gone)
        self.known = addrs

    def _move(self, gone: set[IPAddress]) -> None:
        engine = getattr(self.driver, "engine", None)
        if engine is None or not gone or not hasattr(engine, "local_address_changed"):
            return
        now = self.now()
        moves: dict[IPAddress, IPAddress] = {}
        for ike in engine.status(now).ike_sas:
            old, peer = _addr_of(ike.local), _addr_of(ike.remote)
            if old in gone and peer is not None and old not in moves:
                new = source_towards(peer)
                if new is not None and new != old:
                    moves[old] = new
        run = self.driver.run  # type: ignore[attr-defined]
        for old, new in moves.items():
            run(lambda e, o=old, n=new: e.local_address_changed(o, n, now),
                where=f"MOBIKE: local address {old} moved to {new}")
