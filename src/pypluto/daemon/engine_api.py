"""The daemon's typed view of the protocol engine (``ike.engine.Engine``).

The daemon talks to the sans-I/O engine (DESIGN.md rule 1) only through the
members listed here, so a test stand-in that implements this ``Protocol`` can
replace the engine, and a change of the engine's public surface shows up as a
type error here instead of an ``AttributeError`` at run time.  The assignment
under ``TYPE_CHECKING`` at the bottom makes mypy prove that the real ``Engine``
satisfies it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pypluto.config.model import Connection, IPAddress
from pypluto.ike.actions import Action, Endpoint
from pypluto.ike.settings import EngineSettings
from pypluto.ike.stats import EngineStats
from pypluto.ike.status import EngineStatus
from pypluto.kernel.base import SAAcquire, SAExpire


class SecretsLookup(Protocol):
    """What the engine asks of the secrets it is given (``daemon.secrets.SecretsProxy``)."""

    def psk_for(self, local: object, remote: object, local_addr: object,
                remote_addr: object) -> bytes | None: ...


@runtime_checkable
class EngineAPI(Protocol):
    """Exactly the engine members the daemon uses; each call returns the actions to carry out."""

    local_addrs: set[IPAddress]  # rewritten after every interface scan
    stats: EngineStats  # total.* counters (ike/stats.py), read by the status snapshot

    def add_connection(self, conn: Connection) -> list[Action]: ...

    def delete_connection(self, name: str, now: float) -> list[Action]: ...

    def initiate(self, name: str, now: float) -> list[Action]: ...

    def terminate(self, name: str, now: float) -> list[Action]: ...

    def rekey_ike(self, name: str, now: float) -> list[Action]: ...

    def rekey_child(self, name: str, now: float) -> list[Action]: ...

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float
                ) -> list[Action]: ...

    def handle_timer(self, now: float) -> list[Action]: ...

    def next_timer(self) -> float | None: ...

    def resume(self, token: int, result: object, now: float) -> list[Action]: ...

    def sa_counters(self, reqid_or_spi: int, bytes: int, packets: int, now: float
                    ) -> list[Action]: ...

    def sa_expired(self, ev: SAExpire, now: float) -> list[Action]: ...

    def shutdown(self, now: float) -> list[Action]: ...

    def fail_child(self, serial: int, why: str, now: float) -> list[Action]: ...

    def route(self, name: str, now: float) -> list[Action]: ...

    def unroute(self, name: str, now: float, updown: bool = True) -> list[Action]: ...

    def routed(self, name: str) -> bool: ...

    def child_up(self, name: str) -> int | None: ...

    def acquire(self, ev: SAAcquire, now: float) -> list[Action]: ...

    def status(self, now: float) -> EngineStatus: ...


class EngineFactory(Protocol):
    """How the composition root builds its engine (``Engine`` itself, or a test stand-in)."""

    def __call__(self, settings: EngineSettings, secrets: SecretsLookup, *,
                 local_addrs: Iterable[IPAddress] = ...) -> EngineAPI: ...


if TYPE_CHECKING:  # mypy proves the real engine implements the interface
    from pypluto.ike.engine import Engine

    def _engine_is_an_engine_api(e: Engine) -> EngineAPI:
        return e

    _engine_class_is_a_factory: EngineFactory = Engine
