"""The sans-I/O IKEv2 engine (DESIGN.md rule 1).

Skeleton with the public API of ``docs/internal-api.md``; exchanges follow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Protocol

from pypluto.config.model import Connection, Identity, IPAddress
from pypluto.ike.actions import Action, Endpoint
from pypluto.ike.settings import EngineSettings
from pypluto.ike.status import EngineStatus


class SecretStore(Protocol):
    """What the engine needs of ``config.secrets.SecretStore``."""

    def psk_for(
        self,
        local: Identity | None,
        remote: Identity | None,
        local_addr: IPAddress | None,
        remote_addr: IPAddress | None,
    ) -> bytes | None: ...


class Engine:
    """IKEv2 (RFC 7296) for every connection of one daemon, without I/O."""

    def __init__(
        self,
        settings: EngineSettings,
        secrets: SecretStore,
        *,
        rng: Callable[[int], bytes] = os.urandom,
        local_addrs: Iterable[IPAddress] = (),
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.rng = rng
        self.local_addrs = set(local_addrs)
        self.connections: dict[str, Connection] = {}

    def add_connection(self, conn: Connection) -> list[Action]:
        self.connections[conn.name] = conn
        return []

    def delete_connection(self, name: str, now: float) -> list[Action]:
        self.connections.pop(name, None)
        return []

    def initiate(self, name: str, now: float) -> list[Action]:
        return []

    def terminate(self, name: str, now: float) -> list[Action]:
        return []

    def rekey_ike(self, name: str, now: float) -> list[Action]:
        return []

    def rekey_child(self, name: str, now: float) -> list[Action]:
        return []

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float) -> list[Action]:
        return []

    def handle_timer(self, now: float) -> list[Action]:
        return []

    def next_timer(self) -> float | None:
        return None

    def sa_counters(self, reqid_or_spi: int, bytes: int, packets: int, now: float) -> list[Action]:
        return []

    def status(self, now: float) -> EngineStatus:
        return EngineStatus()

    def shutdown(self, now: float) -> list[Action]:
        return []
