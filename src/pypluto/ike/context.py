"""``IKEContext``: the narrow view of the engine that a task gets (aioquic's habit).

A task (``ike/tasks/``) never sees ``Engine``: it is handed an ``IKEContext`` and
may use only what is declared here: the rng and settings, the secrets, SPI and
serial allocation, the narrow operations on the SA tables (each keeps its own
invariant, e.g. the half-open count moves only inside ``add_halfopen`` /
``end_halfopen`` / ``drop_ike``), the task manager's ``queue`` / ``send_response``,
and Child SA installation.  ``Engine`` implements it; mypy checks that it does.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from pypluto.config.model import Connection, Identity
from pypluto.ike.actions import Action, Endpoint, EventKind, FailReason
from pypluto.ike.cookies import DoSGuard
from pypluto.ike.pacing import ProbePacer
from pypluto.ike.settings import EngineSettings
from pypluto.ike.stats import EngineStats
from pypluto.params import IPAddress, PolicyParams
from pypluto.wire.payloads import Payload

if TYPE_CHECKING:
    from pypluto.crypto.keys import ChildKeys
    from pypluto.ike.pool import LeaseTable
    from pypluto.ike.sa import IKESA, ChildSA, QueuedTask


class SecretStore(Protocol):
    """What the engine needs of ``config.secrets.SecretStore``."""

    def psk_for(
        self,
        local: Identity | None,
        remote: Identity | None,
        local_addr: IPAddress | None,
        remote_addr: IPAddress | None,
    ) -> bytes | None: ...


# (SPIi, the peer address's packed octets, peer port) of IKE_SA_INIT: bytes, whose hash
# is computed once and kept, where an ipaddress object hashes in Python each time (issue 18)
HalfOpenKey = tuple[bytes, bytes, int]


class IKEContext(Protocol):
    """Everything a task may ask of the engine (RFC 7296 processing stays in the tasks)."""

    settings: EngineSettings
    secrets: SecretStore
    rng: Callable[[int], bytes]
    fuzz: random.Random  # rekey fuzz (not security relevant)
    leases: LeaseTable  # address pools (ike/pool.py)
    dos: DoSGuard  # cookies and half-open limits (RFC 7296 §2.6, RFC 8019)
    stats: EngineStats  # total.* counters (ike/stats.py)
    probes: ProbePacer  # liveness probes per slot (ike/pacing.py)
    kept_up: set[str]  # auto=keep conns a peer brought up (meant_up)
    policy_owner: dict[int, ChildSA]  # reqid -> the Child SA whose policies are installed
    # the message being processed has passed its integrity check (set by the code that
    # decrypts it; an exception before that never deletes an established IKE SA)
    verified: bool

    @property
    def connections(self) -> Mapping[str, Connection]: ...
    def candidate_connections(self, local: IPAddress, remote: IPAddress
                              ) -> list[Connection]: ...

    # --- allocation -------------------------------------------------------------
    def new_serial(self) -> int: ...
    def reqid_for(self, conn: Connection, instance: object = None) -> int: ...
    def alloc_ike_spi(self) -> bytes: ...
    def reserve_ike_spi(self, ike: IKESA) -> bytes: ...
    def release_ike_spi(self, spi: bytes, ike: IKESA) -> None: ...
    def reserve_child_spi(self, child: ChildSA) -> None: ...
    def release_child(self, child: ChildSA) -> None: ...

    # --- the SA tables ------------------------------------------------------------
    def register(self, ike: IKESA) -> None: ...
    def rebind(self, ike: IKESA, conn: Connection) -> None: ...
    def index_peer(self, ike: IKESA) -> None: ...
    def peers_of(self, ike: IKESA) -> list[IKESA]: ...
    def is_live(self, ike: IKESA) -> bool: ...
    def ike_of(self, name: str) -> list[IKESA]: ...
    def find_halfopen(self, key: HalfOpenKey) -> IKESA | None: ...
    def add_halfopen(self, ike: IKESA, key: HalfOpenKey, now: float) -> None: ...
    def end_halfopen(self, ike: IKESA) -> None: ...
    def halfopen_full(self) -> bool: ...
    @property
    def n_halfopen(self) -> int: ...
    def drop_ike(self, ike: IKESA, now: float, reason: str = "",
                 event: EventKind | None = EventKind.IKE_DELETED,
                 why: FailReason = FailReason.NONE) -> list[Action]: ...
    def install_child(self, child: ChildSA, keys: ChildKeys | None, now: float,
                      replaces: ChildSA | None = None, defer_out: bool = False
                      ) -> list[Action]: ...
    def remove_child(self, child: ChildSA, now: float) -> list[Action]: ...
    def mobike_moved(self, ike: IKESA) -> list[Action]: ...
    def spi_in_use(self, spi: int) -> bool: ...
    def policies(self, child: ChildSA) -> list[PolicyParams]: ...

    # --- time and work ----------------------------------------------------------------
    def schedule(self, ike: IKESA) -> None: ...
    def compute(self, ike: IKESA, job: Callable[[], object],
                then: Callable[[object, float], list[Action]], now: float,
                io: bool = False) -> list[Action]: ...
    def is_computing(self, ike: IKESA) -> bool: ...
    def initiate_ike(self, conn: Connection, now: float, tries: int = 1,
                     reauth_of: IKESA | None = None) -> list[Action]: ...
    def create_child(self, ike: IKESA, conn: Connection, now: float) -> list[Action]: ...

    # --- the task manager ---------------------------------------------------------------
    def queue(self, ike: IKESA, task: QueuedTask, now: float, front: bool = False) -> list[Action]: ...
    def kick(self, ike: IKESA, now: float) -> list[Action]: ...
    def send_response(self, ike: IKESA, exchange: int, msgid: int, payloads: list[Payload],
                      local: Endpoint | None = None, remote: Endpoint | None = None
                      ) -> list[Action]: ...
    def send_now(self, ike: IKESA, exchange: int, payloads: list[Payload]) -> list[Action]: ...
    def remember_closed(self, ike: IKESA, msgid: int, remote: Endpoint, now: float
                        ) -> None: ...
    def restart_window(self, ike: IKESA) -> None: ...

    def log(self, acts: list[Action], msg: str | Callable[[], str],
            obj: IKESA | ChildSA | None = None, level: str = "info",
            debug_class: str = "base") -> None: ...


def meant_up(ctx: IKEContext, conn: Connection) -> bool:
    """Whether ``conn`` is to be kept up (Libreswan's +UP): auto=start / up always;
    auto=keep "once the remote peer brought it up" (ipsec.conf(5)) until whack --down.
    Such a conn is initiated again when its IKE SA fails, its peer is declared dead or
    its IKE SA expires."""
    return conn.auto in ("start", "up") or conn.name in ctx.kept_up
