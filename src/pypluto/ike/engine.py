"""The sans-I/O IKEv2 engine (DESIGN.md rule 1; RFC 7296).

``Engine`` owns every IKE SA and Child SA of the daemon (the SA tables), the timer
heap and the public API.  The daemon feeds it datagrams (``receive``), the clock
(``handle_timer``) and whack commands (``initiate``, ``terminate``...), and carries
out the actions it returns.

The exchanges are tasks (``ike/tasks/``, one class per concern, both roles); the
message window of each IKE SA is the task manager's (``ike/task_manager.py``).
Tasks see the engine only through ``IKEContext`` (``ike/context.py``), which the
engine implements.  An exception inside a task is caught in ``guarded``: the IKE
SA is torn down and an ``INTERNAL_ERROR`` event emitted.
"""

from __future__ import annotations

import heapq
import os
import random
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from pypluto.config import ids
from pypluto.config.model import Connection, Identity
from pypluto.config.values import UNIQUE_MARK
from pypluto.crypto.keys import ChildKeys
from pypluto.iana import ExchangeType, Integ, NotifyType
from pypluto.ike import codec, timers
from pypluto.ike import traps as trapmod
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import (
    Action,
    AddPolicy,
    AddSA,
    Compute,
    ConnectionEvent,
    DelPolicy,
    DelSA,
    Endpoint,
    EventKind,
    FailReason,
    Log,
    SendPacket,
    Updown,
)
from pypluto.ike.codec import Payload
from pypluto.ike.conn_index import ConnectionTable, ConnIndex
from pypluto.ike.context import HalfOpenKey, IKEContext, SecretStore
from pypluto.ike.cookies import DoSGuard, dos_status
from pypluto.ike.identity import local_identity, remote_pattern
from pypluto.ike.pacing import ProbePacer
from pypluto.ike.pool import LeaseTable
from pypluto.ike.sa import IKESA, ChildSA, ChildState, IKEState, QueuedTask
from pypluto.ike.settings import EngineSettings
from pypluto.ike.stats import EngineStats
from pypluto.ike.status import (
    ChildSAStatus,
    ConnectionStatus,
    EngineStatus,
    IKESAStatus,
    LeaseStatus,
    PoolStatus,
)
from pypluto.ike.task_manager import TaskManager
from pypluto.ike.tasks import child_rekey, ike_init, ike_rekey, liveness, mobike, redirect
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.ike.tasks.child_delete import delete_children, revive_children
from pypluto.ike.tasks.ike_delete import send_delete_now
from pypluto.ike.traps import Traps
from pypluto.params import (
    Direction,
    IPAddress,
    PolicyParams,
    SAAcquire,
    SAExpire,
    SAParams,
    TrafficSelector,
    UpdownChild,
)
from pypluto.wire.errors import WireError
from pypluto.wire.header import IKEHeader

__all__ = ["Engine", "SecretStore"]

# The "established Child SA" line's selector and transform parts, by value (bounded:
# a road-warrior gateway has a selector pair per peer)
_CHILD_TEXT_CAP = 1024
_CHILD_TS_TEXT: dict[tuple[tuple[tsmod.TS, ...], tuple[tsmod.TS, ...]], str] = {}
_CHILD_ALG_TEXT: dict[tuple[int, int | None, int, int, tuple[int, ...]], str] = {}

EXCH_INIT = ExchangeType.IKE_SA_INIT
# Engine.remember_closed: strongSwan 5.9.8 resends a request for 165 s, Libreswan for 60 s
CLOSED_KEEP_S = 180.0
CLOSED_RESENDS = 8
CLOSED_MAX = 4096


@dataclass(slots=True)
class ClosedAnswer:
    """Our answer to the peer's Delete of an IKE SA that is gone (``remember_closed``)."""

    spi_i: bytes
    spi_r: bytes
    msgid: int
    remote: Endpoint
    packets: list[bytes]
    until: float
    sends: int = 0

REQID_SWEEP = 256  # per-peer reqids kept before unused ones are looked for
FIRST_UNIQUE_MARK = 1001  # mark=-1: "Global marks start at 1001" (ipsec.conf(5))
PeerKey = tuple[str, int, bytes]  # (connection, ID type, ID data) for uniqueids
InstanceKey = tuple[str, str, str]  # (template, peer address, peer ID): "conn"[N]


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
        self._connections: dict[str, Connection] = ConnectionTable()
        self._conn_index = ConnIndex(self._connections)  # IKE_SA_INIT candidates
        self.ike_sas: dict[bytes, IKESA] = {}  # by our SPI (and SPIs reserved by a rekey)
        # our answers to the peer's Delete of an IKE SA, by our SPI, oldest first
        self.closed: OrderedDict[bytes, ClosedAnswer] = OrderedDict()
        self.by_serial: dict[int, IKESA] = {}
        self.halfopen: dict[HalfOpenKey, IKESA] = {}  # (SPIi, addr, port)
        self.children_in: dict[int, ChildSA] = {}  # by inbound SPI (and reserved SPIs)
        self.by_conn: dict[str, dict[int, IKESA]] = {}  # conn name -> serial -> IKE SA
        self.by_peer: dict[PeerKey, dict[int, IKESA]] = {}  # (conn, peer ID) -> IKE SAs
        self.children_out: dict[int, ChildSA] = {}  # by outbound SPI (for sa_counters)
        # installed Child SAs per reqid, in install order (a dict as an ordered set: a
        # template with fixed subnets shares one reqid among all its peers, and a list's
        # remove made tearing down n of them O(n^2))
        self.by_reqid: dict[int, dict[ChildSA, None]] = {}
        self.policy_owner: dict[int, ChildSA] = {}  # reqid -> the Child SA that owns policies
        # a conn's reqid -> the reqids with an owner of its Child SAs narrowed to other
        # selectors (``_policy_reqid``)
        self.narrowed: dict[int, dict[int, None]] = {}
        self._updown_suspended: set[int] = set()  # IKE SAs whose MOBIKE move ran "down"
        self._serial = 0
        # the N of a template's instances ``"conn"[N]`` (Libreswan: ``instance_serial``,
        # from the template's counter): (conn, peer address, peer ID) -> [N, IKE SAs],
        # the IKE SA serial -> its key, the next N per template
        self._instances: dict[InstanceKey, list[int]] = {}
        self._instance_of: dict[int, InstanceKey] = {}
        self._next_instance: dict[str, int] = {}
        self._reqids: dict[str | tuple[str, str], int] = {}  # conn, or (conn, peer instance)
        self._reqid_sweep_at = REQID_SWEEP  # _sweep_reqids when the table is this large
        self._next_reqid = 16388
        # the timer: distinct deadlines in a heap, the IKE SAs due at each in a bucket
        # (``schedule``); an SA whose ``heap_at`` differs from a bucket's time is stale there
        self._heap: list[float] = []
        self._due: dict[float, list[int]] = {}
        seed = int.from_bytes(rng(8), "big")
        self.fuzz = random.Random(seed)  # rekey fuzz (not security relevant)
        self.dos = DoSGuard(settings, rng)  # cookies and half-open limits (RFC 8019)
        self._n_halfopen = 0
        self.leases = LeaseTable()  # address pools of road-warrior gateways
        self.stats = EngineStats()  # total.* counters of --globalstatus (ike/stats.py)
        self.probes = ProbePacer()  # liveness probes per slot
        # auto=keep conns that a peer brought up: kept up from then on (ike/context.py
        # meant_up), until whack --down or the conn is deleted
        self.kept_up: set[str] = set()
        self.verified = False  # the message being processed passed its integrity check
        # offloaded key exchanges (settings.offload_crypto): token -> (IKE SA serial, then)
        self.computing: dict[int, tuple[int, Callable[[object, float], list[Action]]]] = {}
        self.computing_serials: dict[int, int] = {}  # IKE SA serial -> its token
        self._next_token = 0
        ctx: IKEContext = self  # mypy checks here that the engine is an IKEContext
        self.tm = TaskManager(ctx)
        self.traps = Traps()  # auto=route / ondemand (ike/traps.py)
        # mark=-1: one unique mark per instance (conn, peer), from 1001 as Libreswan
        self.unique_marks: dict[tuple[str, str], int] = {}
        self._next_mark = FIRST_UNIQUE_MARK
        self._mark_sweep_at = REQID_SWEEP  # _sweep_marks when the table is this large

    @property
    def connections(self) -> dict[str, Connection]:
        return self._connections

    def candidate_connections(self, local: IPAddress, remote: IPAddress) -> list[Connection]:
        """The conns that may answer an IKE_SA_INIT from ``remote`` to ``local``, exact
        remote address first (``ike/conn_index.py``; indexed, not a scan)."""
        return self._conn_index.candidates(local, remote)

    @property
    def n_halfopen(self) -> int:
        """Responder IKE SAs between IKE_SA_INIT and IKE_AUTH (RFC 7296 §2.6)."""
        return self._n_halfopen

    # ------------------------------------------------------------------ allocation
    def new_serial(self) -> int:
        self._serial += 1
        return self._serial

    def reqid_for(self, conn: Connection, instance: object = None) -> int:
        """One reqid per connection, or per peer instance of a %any template."""
        if conn.reqid:
            return conn.reqid
        key = conn.name if instance is None else (conn.name, str(instance))
        r = self._reqids.get(key)
        if r is None:
            if len(self._reqids) >= self._reqid_sweep_at:
                self._sweep_reqids()
            r = self._reqids[key] = self._next_reqid
            self._next_reqid += 4
        return r

    def _sweep_reqids(self) -> None:
        """Forget the reqids of peer instances no Child SA holds any more: a template's
        peers come and go (one new entry per peer ID), and the table must not grow
        with every peer ever seen.  Amortized: run when the table doubled."""
        used = {c.reqid for c in self.children_in.values()}
        used.update(c.reqid for c in self.children_out.values())
        used.update(self.by_reqid)
        used.update(self.policy_owner)
        for key in [k for k, r in self._reqids.items() if isinstance(k, tuple) and r not in used]:
            del self._reqids[key]
        self._reqid_sweep_at = max(REQID_SWEEP, 2 * len(self._reqids))

    def alloc_ike_spi(self) -> bytes:
        """A fresh local IKE SPI (RFC 7296 §2.6), in this worker's slice: its last
        octet is ``index`` modulo ``count`` of ``settings.spi_slice``, the octet by
        which the socket-steering program picks the worker (docs/multicore.md)."""
        index, count = self.settings.spi_slice
        while True:
            spi = self.rng(8)
            if count > 1:
                last = spi[7] - spi[7] % count + index
                if last > 255:
                    last -= count
                spi = spi[:7] + bytes((last,))
            if spi != bytes(8) and spi not in self.ike_sas:
                return spi

    def reserve_ike_spi(self, ike: IKESA) -> bytes:
        """A fresh SPI for the new IKE SA of a rekey, mapped to ``ike`` until then."""
        spi = self.alloc_ike_spi()
        self.ike_sas[spi] = ike
        return spi

    def release_ike_spi(self, spi: bytes, ike: IKESA) -> None:
        if self.ike_sas.get(spi) is ike and ike.local_spi != spi:
            del self.ike_sas[spi]

    def reserve_child_spi(self, child: ChildSA) -> None:
        """Allocate and reserve the inbound SPI of a Child SA being negotiated."""
        while True:
            spi = int.from_bytes(self.rng(4), "big")
            if spi >= 256 and spi not in self.children_in and spi not in self.children_out:
                break
        child.spi_in = spi
        self.children_in[spi] = child
        self.stats.events["child.started"] += 1

    def release_child(self, child: ChildSA) -> None:
        """Forget a Child SA that never got installed."""
        if self.children_in.get(child.spi_in) is child and \
                child.state is not ChildState.ESTABLISHED:
            del self.children_in[child.spi_in]
            self.stats.events["child.failed"] += 1

    @staticmethod
    def log(acts: list[Action], msg: str | Callable[[], str],
            obj: IKESA | ChildSA | None = None, level: str = "info",
            debug_class: str = "base") -> None:
        """Append a Log; ``msg`` may be a callable that formats the text when it is read."""
        conn = serial = remote = None
        if obj is not None:
            conn, serial = obj.conn.name, obj.serial
            ike = obj if isinstance(obj, IKESA) else obj.parent
            remote = ike.remote if ike is not None else None  # PLUTO_PEER (daemon/journal.py)
        if isinstance(msg, str):
            acts.append(Log(msg, level, conn, serial, remote, debug_class))
        else:
            acts.append(Log.lazy(msg, level, conn, serial, remote, debug_class))

    # ------------------------------------------------------------------ timer heap
    def schedule(self, ike: IKESA) -> None:
        """(Re)arm the timer of one IKE SA at its earliest deadline.

        SAs due at the same time share one bucket and one heap entry (issue 18: the
        liveness deadlines are rounded to ``pacing.SLOT``, and the retransmit
        deadlines of the probes of one timer call are equal), so a liveness exchange
        costs no heap operation of its own; within a bucket the order is the order
        of scheduling, as with one heap entry per SA.
        """
        t = self._deadline(ike)
        if t is not None and t != ike.heap_at:
            ike.heap_at = t
            b = self._due.get(t)
            if b is None:
                self._due[t] = [ike.serial]
                heapq.heappush(self._heap, t)
            else:
                b.append(ike.serial)
        elif t is None:
            ike.heap_at = None

    @staticmethod
    def _deadline(ike: IKESA) -> float | None:
        """The earliest deadline ``handle_timer`` acts on in the SA's current state."""
        # the minimum kept as it goes: no list per call (three calls per IKE_AUTH, issue 18)
        best: float | None = None
        o = ike.outstanding
        if o is not None:
            best = min(o.next_retransmit, o.deadline)
        t = ike.halfopen_deadline
        if t is not None and (best is None or t < best):
            best = t
        t = ike.next_keepalive
        if t is not None and (best is None or t < best):
            best = t
        if not ike.established:
            return best
        for t in (ike.rekey_at, ike.expire_at, ike.next_liveness):
            if t is not None and (best is None or t < best):
                best = t
        f = ike.followup
        if f is not None:
            t = f.expires  # RFC 9370 §2.2.3 (ike_followup.expire)
            if t is not None and (best is None or t < best):
                best = t
        for c in ike.children:
            if c.state is not ChildState.ESTABLISHED:
                continue
            t = c.rekey_at
            if t is not None and not c.rekeying and (best is None or t < best):
                best = t
            t = c.expire_at
            if t is not None and (best is None or t < best):
                best = t
        return best

    # ------------------------------------------------------------------ offloaded crypto
    def compute(self, ike: IKESA, job: Callable[[], object],
                then: Callable[[object, float], list[Action]], now: float,
                io: bool = False) -> list[Action]:
        """Run ``job`` then ``then(result, now)``: inline, or via a ``Compute`` action.

        With ``settings.offload_crypto`` the IKE SA waits "computing" until
        ``resume`` brings the result (an exception instance when the job raised);
        otherwise ``job`` runs here and now.  The only key-exchange code path.
        ``io``: a blocking fetch (revocation data), always handed out.
        """
        if not self.settings.offload_crypto and not io:
            try:
                result: object = job()
            except Exception as e:  # delivered to ``then`` like an offloaded failure
                result = e
            return self.guarded(ike, now, "after a key exchange", partial(then, result, now))
        self._next_token += 1
        token = self._next_token
        self.computing[token] = (ike.serial, then)
        self.computing_serials[ike.serial] = token
        return [Compute(job, token, io)]

    def is_computing(self, ike: IKESA) -> bool:
        """Is a key-exchange computation of this IKE SA out with the helpers?"""
        return ike.serial in self.computing_serials

    def resume(self, token: int, result: object, now: float) -> list[Action]:
        """The result of a ``Compute`` job (an exception instance if it raised).  Never raises.

        A result for an IKE SA that was deleted (or expired, or gave up) while the
        job ran is dropped.
        """
        entry = self.computing.pop(token, None)
        if entry is None:
            return [Log(f"dropping the result of unknown crypto job {token}", level="debug")]
        serial, then = entry
        if self.computing_serials.get(serial) == token:
            del self.computing_serials[serial]
        ike = self.by_serial.get(serial)
        if ike is None:
            return [Log(f"dropping a late crypto result for IKE SA #{serial} (deleted)",
                        level="debug", serial=serial)]
        acts = self.guarded(ike, now, "while resuming a crypto job", lambda: then(result, now))
        if ike.serial in self.by_serial:
            self.schedule(ike)
        return acts

    # ------------------------------------------------------------------ the task manager
    def queue(self, ike: IKESA, task: QueuedTask, now: float, front: bool = False) -> list[Action]:
        return self.tm.queue(ike, task, now, front)

    def kick(self, ike: IKESA, now: float) -> list[Action]:
        return self.tm.kick(ike, now)

    def encode(self, ike: IKESA, exchange: int, response: bool, msgid: int,
               payloads: list[Payload]) -> list[bytes]:
        return self.tm.encode(ike, exchange, response, msgid, payloads)

    def send_response(self, ike: IKESA, exchange: int, msgid: int, payloads: list[Payload],
                      local: Endpoint | None = None, remote: Endpoint | None = None
                      ) -> list[Action]:
        return self.tm.send_response(ike, exchange, msgid, payloads, local, remote)

    def send_now(self, ike: IKESA, exchange: int, payloads: list[Payload]) -> list[Action]:
        return self.tm.send_now(ike, exchange, payloads)

    def restart_window(self, ike: IKESA) -> None:
        self.tm.restart_window(ike)

    def initiate_ike(self, conn: Connection, now: float, tries: int = 1,
                     reauth_of: IKESA | None = None) -> list[Action]:
        """A new IKE SA for ``conn`` (IKE_SA_INIT), whatever else exists."""
        return ike_init.initiate(self, conn, now, tries, reauth_of)

    # ------------------------------------------------------------------ SA tables
    def register(self, ike: IKESA) -> None:
        self.ike_sas[ike.local_spi] = ike
        self.by_serial[ike.serial] = ike
        self.by_conn.setdefault(ike.conn.name, {})[ike.serial] = ike
        self.stats.events["ike.started"] += 1

    def _refresh_instances(self) -> None:
        """Number the instances of templates (``right=%any``) for ``"conn"[N]``: each peer
        (template, address, ID) keeps its N while any of its IKE SAs lives (a rekey or
        replacement keeps it); a new peer takes the template's next N, so numbers never
        go back (Libreswan 5.2: an instance takes ``instance_serial`` from its template's
        counter and keeps it until it is deleted).  A half-open SA (no peer ID yet)
        passes its N on to its peer's ID.  Done when the status is read, never per
        message: what lives between two reads and is gone by the next is not counted."""
        live: dict[InstanceKey, int] = {}  # key -> the lowest serial of its IKE SAs
        of: dict[int, InstanceKey] = {}
        for serial, ike in self.by_serial.items():
            # (the registered conn: a template's instance revived by ike_delete is a
            # copy bound to its peer's address, still "conn"[N] as in Libreswan)
            conn = self.connections.get(ike.conn.name, ike.conn)
            try:
                if conn.remote.host_addr is not None:
                    continue
            except ValueError:
                continue
            key = (ike.conn.name, str(ike.remote.addr), str(ike.remote_id or ""))
            of[serial] = key
            if key not in live or serial < live[key]:
                live[key] = serial
        old = self._instances
        kept: dict[InstanceKey, list[int]] = {k: v for k, v in old.items() if k in live}
        # a half-open SA's number goes to the ID its peer then showed
        idless = {(k[0], k[1]): v[0] for k, v in old.items() if not k[2] and k not in live}
        for key in sorted((k for k in live if k not in kept), key=live.__getitem__):
            n = idless.pop((key[0], key[1]), None) if key[2] else None
            if n is None:
                n = self._next_instance.get(key[0], 1)
                self._next_instance[key[0]] = n + 1
            kept[key] = [n, 0]
        for key in of.values():
            kept[key][1] += 1
        self._instances, self._instance_of = kept, of

    def instance_of(self, ike: IKESA) -> int | None:
        """The N of ``"conn"[N]`` of an IKE SA of a template (None: not one)."""
        key = self._instance_of.get(ike.serial)
        return self._instances[key][0] if key is not None else None

    def is_live(self, ike: IKESA) -> bool:
        return ike.serial in self.by_serial

    def rebind(self, ike: IKESA, conn: Connection) -> None:
        """The responder picked another connection for this IKE SA (by peer ID)."""
        d = self.by_conn.get(ike.conn.name)
        if d is not None:
            d.pop(ike.serial, None)
            if not d:
                del self.by_conn[ike.conn.name]
        ike.conn = conn
        self.by_conn.setdefault(conn.name, {})[ike.serial] = ike

    @staticmethod
    def peer_key(ike: IKESA) -> PeerKey:
        rid = ike.remote_id
        data = rid.data.lower() if rid is not None and rid.id_type in (2, 3) else \
            (rid.data if rid is not None else b"")
        return (ike.conn.name, rid.id_type if rid is not None else -1, data)

    def index_peer(self, ike: IKESA) -> None:
        self.by_peer.setdefault(self.peer_key(ike), {})[ike.serial] = ike

    def peers_of(self, ike: IKESA) -> list[IKESA]:
        """The IKE SAs of the same connection and peer ID (uniqueids, §2.4)."""
        return list(self.by_peer.get(self.peer_key(ike), {}).values())

    def find_halfopen(self, key: HalfOpenKey) -> IKESA | None:
        return self.halfopen.get(key)

    def add_halfopen(self, ike: IKESA, key: HalfOpenKey, now: float) -> None:
        """A responder IKE SA answered IKE_SA_INIT: half-open until IKE_AUTH (§2.6)."""
        self.halfopen[key] = ike
        ike.halfopen_key = key
        ike.halfopen_deadline = now + self.settings.half_open_timeout
        self._n_halfopen += 1
        self.dos.halfopen_added(key[1])

    def end_halfopen(self, ike: IKESA) -> None:
        """No longer half-open (established, or being removed)."""
        if ike.halfopen_deadline is not None:
            ike.halfopen_deadline = None
            self._n_halfopen -= 1
            if ike.halfopen_key is not None:
                self.dos.halfopen_ended(ike.halfopen_key[1])

    def halfopen_full(self) -> bool:
        return self._n_halfopen >= self.settings.max_halfopen_ike

    def forget_ike(self, ike: IKESA) -> None:
        if self.by_serial.get(ike.serial) is ike:  # once per IKE SA
            self.stats.events["ike.finished" if ike.established_at is not None
                              else "ike.failed"] += 1
        if ike.remote_id is not None:
            pk = self.peer_key(ike)
            d = self.by_peer.get(pk)
            if d is not None:
                d.pop(ike.serial, None)
                if not d:
                    del self.by_peer[pk]
        self.ike_sas.pop(ike.local_spi, None)
        self.by_serial.pop(ike.serial, None)
        d2 = self.by_conn.get(ike.conn.name)
        if d2 is not None:
            d2.pop(ike.serial, None)
            if not d2:
                del self.by_conn[ike.conn.name]
        key = ike.halfopen_key
        if key is not None and self.halfopen.get(key) is ike:
            del self.halfopen[key]
        self.end_halfopen(ike)
        self.tm.abandon(ike)  # the tasks release their reserved SPIs
        for lease in ike.leases:  # Delete, liveness failure, replacement
            self.leases.release(lease)
        ike.leases = ()
        token = self.computing_serials.pop(ike.serial, None)
        if token is not None:
            self.computing.pop(token, None)

    def drop_ike(self, ike: IKESA, now: float, reason: str = "",
                 event: EventKind | None = EventKind.IKE_DELETED,
                 why: FailReason = FailReason.NONE) -> list[Action]:
        """Remove an IKE SA and its Child SAs locally (no message is sent)."""
        acts: list[Action] = []
        if ike.serial not in self.by_serial:
            return acts
        for c in list(ike.children):
            acts += self.remove_child(c, now)
        self._updown_suspended.discard(ike.serial)
        if ike.followup is not None:  # RFC 9370: a Child SA held for IKE_FOLLOWUP_KE
            ike.followup.drop()
            ike.followup = None
        self.forget_ike(ike)
        ike.to(IKEState.DELETING)
        if ike.established_at is not None or reason:
            self.log(acts, f"deleting IKE SA{(' (' + reason + ')') if reason else ''}", ike)
        if event:
            acts.append(ConnectionEvent(event, ike.conn.name, ike.serial, reason, why))
        return acts

    def internal_error(self, ike: IKESA, exc: BaseException, now: float, where: str
                       ) -> list[Action]:
        """An unexpected exception while working on ``ike``: the one place that handles it.

        The traceback goes to an error ``Log`` (the daemon's crash-report path), the IKE
        SA is torn down locally with its Child SAs (their kernel SAs and policies are
        deleted by the returned actions) and an ``INTERNAL_ERROR`` event lets a waiting
        ``whack --initiate`` fail at once.
        """
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        acts: list[Action] = [Log(f"internal error {where}: {type(exc).__name__}: {exc}",
                                  level="error", conn=ike.conn.name, serial=ike.serial,
                                  traceback=tb)]
        if ike.serial in self.by_serial:
            try:
                for c in list(ike.children):
                    acts += self.remove_child(c, now)
                self.forget_ike(ike)
            except Exception as e:  # the state is too broken to tear down in order
                acts.append(Log(f"internal error while tearing down: {type(e).__name__}: {e}",
                                level="error", conn=ike.conn.name, serial=ike.serial))
                self.by_serial.pop(ike.serial, None)
            ike.to(IKEState.DELETING)  # from any state
            self.log(acts, "deleting IKE SA (internal error)", ike)
        # SPIs reserved by the task that failed (it is no longer on the queue): rare, so a sweep
        for spi in [s for s, c in self.children_in.items() if c.parent is ike]:
            del self.children_in[spi]
        for key in [k for k, i in self.ike_sas.items() if i is ike]:
            del self.ike_sas[key]
        acts.append(ConnectionEvent(EventKind.INTERNAL_ERROR, ike.conn.name, ike.serial,
                                    f"internal error: {type(exc).__name__}",
                                    FailReason.INTERNAL))
        return acts

    def _unverified_error(self, ike: IKESA, exc: BaseException, remote: Endpoint
                          ) -> list[Action]:
        """An exception on a message for the established ``ike`` before its integrity
        check passed: anyone who has seen the SPIs can send such a message, so it must
        not cost the IKE SA (a bug there would let them tear tunnels down).  The message
        is dropped and the traceback logged; the SA's state is untouched by then (the
        checks before decryption only read it)."""
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return [Log(f"internal error on a message from {remote} that was not yet "
                    f"authenticated: {type(exc).__name__}: {exc}; message dropped, "
                    "IKE SA kept", level="error", conn=ike.conn.name, serial=ike.serial,
                    traceback=tb)]

    def guarded(self, ike: IKESA, now: float, where: str,
                work: Callable[[], list[Action]]) -> list[Action]:
        """Run ``work`` for ``ike``; an exception in it becomes ``internal_error``."""
        try:
            acts = work()
        except Exception as e:
            acts = self.internal_error(ike, e, now, where)
        if self.traps.flows:
            acts += self._trap_outcomes(acts, now)
        return acts

    def _trap_outcomes(self, acts: list[Action], now: float) -> list[Action]:
        """A negotiation an acquire started ended without its Child SA (ike/traps.py): on
        a failure its failureshunt, else (its IKE SA deleted: whack --down) the trap.

        Its own FAILED event says so; a Child SA queued on another conn's IKE SA ends
        with that IKE SA (whose events name the other conn), so every ending event
        checks the on-demand negotiations still open (``_acquire_alive``)."""
        ends = [a for a in acts if isinstance(a, ConnectionEvent) and a.kind in
                (EventKind.FAILED, EventKind.INTERNAL_ERROR, EventKind.IKE_DELETED)]
        if not ends:
            return []
        failed = {a.conn for a in ends if a.kind is EventKind.FAILED}
        failure = any(a.kind is not EventKind.IKE_DELETED for a in ends)
        out: list[Action] = []
        for name, ev in list(self.traps.flows.items()):
            conn = self._connections.get(name)
            if conn is None or any(c.state is ChildState.ESTABLISHED
                                   for c in self.by_reqid.get(ev.reqid, ())):
                continue
            if name in failed:
                out += self.traps.failed(conn, now, self.settings.shunt_lifetime)
            elif not self._acquire_alive(name):
                out += self.traps.failed(conn, now, self.settings.shunt_lifetime) \
                    if failure else self.traps.ended(name)
        return out

    def _acquire_alive(self, name: str) -> bool:
        """Whether the negotiation of ``name`` an acquire started still runs: its IKE SA in
        IKE_SA_INIT / IKE_AUTH, or its new Child SA queued or in flight on an IKE SA (one
        of another conn it waits for is searched once, then remembered)."""
        def carries(ike: IKESA) -> bool:
            out = ike.outstanding
            return any(isinstance(t, ChildCreate) and t.old is None and t.conn.name == name
                       for t in (*ike.tasks, *((out.task,) if out is not None else ())))
        for ike in self._ikes_of(name):
            if ike.state in (IKEState.INIT_I, IKEState.AUTH_I) or carries(ike):
                return True
        known = self.by_serial.get(self.traps.carriers.get(name, -1))
        if known is not None and carries(known):
            return True
        for ike in self.by_serial.values():
            if carries(ike):
                self.traps.carriers[name] = ike.serial
                return True
        return False

    # ------------------------------------------------------------------ Child SAs
    def xfrm_marks(self, conn: Connection, remote: IPAddress | None
                   ) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(inbound, outbound) XFRM marks of ``conn`` with the peer ``remote``
        (``mark=``, ``mark-in=``, ``mark-out=`` of ipsec.conf(5)).

        A value of -1 becomes a unique mark for this instance (the conn and its
        peer), the same one for both directions and for every rekey.
        """
        mi, mo = conn.mark_in, conn.mark_out
        if (mi is not None and mi[0] == UNIQUE_MARK) or (mo is not None and mo[0] == UNIQUE_MARK):
            key = (conn.name, str(remote))
            n = self.unique_marks.get(key)
            if n is None:
                if len(self.unique_marks) >= self._mark_sweep_at:
                    self._sweep_marks()
                n = self.unique_marks[key] = self._next_mark
                self._next_mark += 1
            if mi is not None and mi[0] == UNIQUE_MARK:
                mi = (n, mi[1])
            if mo is not None and mo[0] == UNIQUE_MARK:
                mo = (n, mo[1])
        return mi, mo

    def _sweep_marks(self) -> None:
        """Forget the unique marks (mark=-1) of instances no Child SA and no trap uses:
        one is made per peer address, and peers come and go (``_sweep_reqids``)."""
        used = {(c.conn.name, str(c.remote_addr)) for c in self.children_in.values()}
        used.update((c.conn.name, str(c.remote_addr)) for c in self.children_out.values())
        for key in [k for k in self.unique_marks
                    if k not in used and k[0] not in self.traps.routed]:
            del self.unique_marks[key]
        self._mark_sweep_at = max(REQID_SWEEP, 2 * len(self.unique_marks))

    def mark_policy(self, policy: PolicyParams, conn: Connection,
                    remote: IPAddress | None) -> PolicyParams:
        """``policy`` with the conn's mark for its direction (out: mark-out, else mark-in)."""
        mi, mo = self.xfrm_marks(conn, remote)
        policy.mark = mo if policy.direction == "out" else mi
        policy.if_id, policy.if_ip = conn.ipsec_interface, conn.local.interface_ip
        return policy

    def child_sa_params(self, child: ChildSA, keys: ChildKeys) -> tuple[SAParams, SAParams]:
        """The two kernel SAs of a Child SA (RFC 7296 §2.17 key order)."""
        c = child.chosen
        assert c is not None
        conn = child.conn
        if child.initiator:
            ein, iin, eout, iout = keys.encr_r, keys.integ_r, keys.encr_i, keys.integ_i
        else:
            ein, iin, eout, iout = keys.encr_i, keys.integ_i, keys.encr_r, keys.integ_r
        lts = [k for t in child.local_ts for k in tsmod.to_kernel(t)]
        rts = [k for t in child.remote_ts for k in tsmod.to_kernel(t)]
        hb, hp = conn.ipsec_max_bytes, conn.ipsec_max_packets
        enc_in: tuple[int | None, int | None] = (None, None)
        enc_out: tuple[int | None, int | None] = (None, None)
        if child.encap is not None:
            lp, rp = child.encap
            enc_in, enc_out = (rp, lp), (lp, rp)
        mark_in, mark_out = self.xfrm_marks(conn, child.remote_addr)
        # tfc=: only ESP in tunnel mode hides the inner size (ipsec.conf(5) says AH and
        # transport mode ignore it); not after the peer's ESP_TFC_PADDING_NOT_SUPPORTED
        tfc = conn.tfc if (child.protocol == "esp" and child.mode == "tunnel"
                           and not child.peer_no_tfc) else 0
        # sha2-truncbug=yes: ESP with HMAC-SHA2-256 keeps 96 bits of the MAC (Libreswan
        # does the same for ESP only; AH and the other integrity transforms keep theirs)
        trunc = 96 if (conn.sha2_truncbug and child.protocol == "esp"
                       and c.integ == Integ.HMAC_SHA2_256_128) else 0

        def one(src: IPAddress, dst: IPAddress, spi: int, direction: Literal["in", "out"],
                encr_key: bytes, integ_key: bytes, encap: tuple[int | None, int | None]
                ) -> SAParams:
            return SAParams(src=src, dst=dst, spi=spi, direction=direction, encr_key=encr_key,
                            integ_key=integ_key, encap_sport=encap[0], encap_dport=encap[1],
                            local_ts=lts, remote_ts=rts, protocol=child.protocol,
                            mode=child.mode, reqid=child.reqid, encr_id=c.encr,
                            encr_key_bits=c.encr_bits, integ_id=c.integ, esn=c.esn,
                            replay_window=conn.replay_window, hard_bytes=hb,
                            soft_bytes=soft_limit(hb, child), hard_packets=hp,
                            soft_packets=soft_limit(hp, child), conn_name=conn.name,
                            serial=child.serial, mark=mark_in if direction == "in" else mark_out,
                            if_id=conn.ipsec_interface, if_ip=conn.local.interface_ip,
                            tfc_pad=tfc if direction == "out" else 0,
                            encap_dscp=conn.encap_dscp, decap_dscp=conn.decap_dscp,
                            nopmtudisc=conn.nopmtudisc, integ_trunc_bits=trunc)

        return (one(child.remote_addr, child.local_addr, child.spi_in, "in", ein, iin, enc_in),
                one(child.local_addr, child.remote_addr, child.spi_out, "out", eout, iout,
                    enc_out))

    def policies(self, child: ChildSA) -> list[PolicyParams]:
        out = []
        conn = child.conn
        la, ra = child.local_addr, child.remote_addr
        for lt in child.local_ts:
            for rt in child.remote_ts:
                if lt.version != rt.version:  # a dual-stack Child SA: pairs of one family
                    continue
                for lk in tsmod.to_kernel(lt):
                    for rk in tsmod.to_kernel(rt):
                        vip = _vip_in(child, lk)  # an address from the gateway's CP
                        # leftsourceip= holds one address per family: the policy's
                        src_ip = vip or next((a for a in conn.local.sourceip
                                              if a.version == lk.network.version), None)
                        out.append(PolicyParams(lk, rk, "out", tmpl_src=la, tmpl_dst=ra,
                                                source_ip=src_ip, reqid=child.reqid,
                                                mode=child.mode, protocol=child.protocol,
                                                mtu=conn.mtu, metric=conn.metric,
                                                nexthop=conn.local.nexthop_addr,
                                                priority=conn.priority, conn_name=conn.name))
                        out.append(PolicyParams(rk, lk, "in", tmpl_src=ra, tmpl_dst=la,
                                                reqid=child.reqid, mode=child.mode,
                                                protocol=child.protocol, conn_name=conn.name,
                                                priority=conn.priority))
                        if child.mode == "tunnel":
                            out.append(PolicyParams(rk, lk, "fwd", tmpl_src=ra, tmpl_dst=la,
                                                    reqid=child.reqid, mode=child.mode,
                                                    protocol=child.protocol,
                                                    conn_name=conn.name,
                                                    priority=conn.priority))
        for lt, rt in child.blocked:  # left out by the peer: blocked both ways (RFC 4301
            for lk in tsmod.to_kernel(lt):  # §4.4.1 DISCARD), never sent in cleartext
                for rk in tsmod.to_kernel(rt):
                    ways: tuple[tuple[TrafficSelector, TrafficSelector, Direction], ...] = (
                        (lk, rk, "out"), (rk, lk, "in"), (rk, lk, "fwd"))
                    for src, dst, d in ways:
                        if d == "fwd" and child.mode != "tunnel":
                            continue
                        out.append(PolicyParams(src, dst, d, reqid=child.reqid,
                                                tmpl_src=la if d == "out" else ra,
                                                tmpl_dst=ra if d == "out" else la,
                                                mode=child.mode, protocol=child.protocol,
                                                conn_name=conn.name, action="drop",
                                                priority=conn.priority))
        if out:  # mark_policy of each, the marks looked up once
            mi, mo = self.xfrm_marks(conn, ra)
            if_id, if_ip = conn.ipsec_interface, conn.local.interface_ip
            for p in out:
                p.mark = mo if p.direction == "out" else mi
                p.if_id, p.if_ip = if_id, if_ip
        return out

    def install_child(self, child: ChildSA, keys: ChildKeys | None, now: float,
                      replaces: ChildSA | None = None, defer_out: bool = False
                      ) -> list[Action]:
        """AddSA (inbound first), AddPolicy unless a predecessor already owns them.

        ``defer_out`` (the responder of a Child SA rekey): the outbound SA is held back
        until the old Child SA is deleted, so that nothing is sent on the new SA before
        the initiator has installed its inbound half (RFC 7296 §2.8).
        """
        acts: list[Action] = []
        ike = child.parent
        assert ike is not None and keys is not None
        child.reqid, child.narrowed_from = self._policy_reqid(child, replaces)
        sa_in, sa_out = self.child_sa_params(child, keys)
        acts.append(AddSA(sa_in))
        if defer_out and replaces is not None and replaces.state is ChildState.ESTABLISHED:
            child.pending_out = sa_out
        else:
            acts.append(AddSA(sa_out))
        self.children_in[child.spi_in] = child
        self.children_out[child.spi_out] = child
        self.by_reqid.setdefault(child.reqid, {})[child] = None
        owner = self.policy_owner.get(child.reqid)
        fresh = owner is None
        if owner is not None:
            owner.owns_policy = False
        else:
            acts += [AddPolicy(p) for p in self.policies(child)]
        if child.conn.name in self.traps.flows:  # an acquire's negotiation is done
            acts += self.traps.established(child.conn.name)
        acts += self._take_policies(child, owner)
        if child.narrowed_from:
            self.narrowed.setdefault(child.narrowed_from, {})[child.reqid] = None
        child.to(ChildState.ESTABLISHED)
        child.established_at = now
        conn = child.conn
        life = conn.salifetime
        child.expire_at = now + life
        if conn.rekey:
            margin = conn.rekeymargin
            if child.initiator:
                margin *= 1 + conn.rekeyfuzz / 100.0 * self.fuzz.random()
            else:
                margin /= 2  # the initiator of the SA normally rekeys first
            child.rekey_at = now + max(life - margin, life / 2)
        else:
            child.rekey_at = None
        ike.children.append(child)
        c = child.chosen
        assert c is not None
        self.stats.child_established(child.protocol, c.encr, c.integ, c.esn,
                                     child.encap is not None)
        mode = "tunnel" if child.mode == "tunnel" else "transport"
        encap = "ESPinUDP" if child.encap else child.protocol.upper()
        # the text is formatted when read (issue 18), from the values of now
        lts, rts, spi_out, spi_in = child.local_ts, child.remote_ts, child.spi_out, child.spi_in
        natd = ike.remote if child.encap else None
        dpd = "active" if conn.dpddelay else "passive"

        def text() -> str:
            # the selectors' and transforms' text recur for every Child SA of a conn:
            # made once each (issue 18)
            tkey = (tuple(lts), tuple(rts))
            sel = _CHILD_TS_TEXT.get(tkey)
            if sel is None:
                sel = f"{tsmod.fmt(lts)}==={tsmod.fmt(rts)}"
                if len(_CHILD_TS_TEXT) < _CHILD_TEXT_CAP:
                    _CHILD_TS_TEXT[tkey] = sel
            akey = (c.encr, c.encr_bits, c.integ, c.ke, tuple(c.addke))
            alg = _CHILD_ALG_TEXT.get(akey)
            if alg is None:
                alg = "-".join(n for n in (c.encr_name(), c.integ_name()) if n)
                if c.ke:
                    alg += "-" + c.ke_name()
                if len(_CHILD_ALG_TEXT) < _CHILD_TEXT_CAP:
                    _CHILD_ALG_TEXT[akey] = alg
            nat = f" NATOA=none NATD={natd}" if natd is not None else ""
            return ("established Child SA; IPsec "
                    f"{mode} [{sel}] "
                    f"{{{encap}=>0x{spi_out:08x} <0x{spi_in:08x} xfrm={alg}"
                    f"{nat} DPD={dpd}}}")

        self.log(acts, text, child)
        if child.blocked:  # Libreswan's "accepted selectors [...](block)"
            self.log(acts, "selectors left out of the Child SA are blocked: " + " ".join(
                f"{lt}==={rt}" for lt, rt in child.blocked), child)
        if conn.auto == "keep":  # ipsec.conf(5): kept up once the peer brought it up
            self.kept_up.add(conn.name)
        if fresh:
            acts += self._updown(child, up=True)
        acts.append(ConnectionEvent(EventKind.CHILD_ESTABLISHED, conn.name, child.serial))
        self.schedule(ike)
        return acts

    def _policy_reqid(self, child: ChildSA, replaces: ChildSA | None) -> tuple[int, int]:
        """The reqid of ``child``'s kernel SAs and policies (``child.reqid`` is the conn's),
        and the conn's reqid when that is one of its own (``narrowed_from``), else 0.

        Child SAs with the same selectors share one reqid and one set of policies (a
        rekey, a duplicate: the kernel holds one policy per selector).  A Child SA the
        peer narrowed to other selectors than those of the Child SA holding the conn's
        reqid (RFC 7296 §2.9, ``narrowing=yes``) gets a reqid of its own for them: its
        policies must name its own SA pair, and removing one Child SA's policies must
        leave the other's in place.  (Libreswan 5.2 instantiates a template for such a
        Child SA, its own spd; a permanent conn's one spd is overwritten instead.)
        """
        sel = (child.local_ts, child.remote_ts)
        if replaces is not None and replaces.reqid in self.by_reqid and \
                (replaces.local_ts, replaces.remote_ts) == sel:
            # a rekey keeps its predecessor's (§2.9.2: same selectors)
            return replaces.reqid, replaces.narrowed_from
        base = child.reqid
        key = (child.conn.name, f"narrowed {base} {tsmod.fmt(child.local_ts)}==="
               f"{tsmod.fmt(child.remote_ts)}")
        own = self._reqids.get(key)
        if own is not None and own in self.policy_owner:
            return own, base  # another Child SA with these selectors holds them
        owner = self.policy_owner.get(base)
        if owner is None or (owner.local_ts, owner.remote_ts) == sel:
            return base, 0
        if own is None:  # (a configured reqid= names the conn's; these get their own)
            if len(self._reqids) >= self._reqid_sweep_at:
                self._sweep_reqids()
            own = self._reqids[key] = self._next_reqid
            self._next_reqid += 4
        return own, base

    def spi_in_use(self, spi: int) -> bool:
        """Does a Child SA of ours already have this SPI, either way?

        The peer picks our outbound SPIs, and ESP SPIs are visible on the wire.  The
        data plane names an SA by (destination, SPI, protocol) (RFC 4301 §4.1): a second
        SA with the same triple would replace or be deleted with the first, possibly
        another peer's behind the same NAT.  The engine's and the daemon's indexes name
        an SA by its SPI alone, so a peer's SPI that any SA of ours has, outbound or
        inbound, to any address, is refused (``reserve_child_spi`` avoids the outbound
        ones in turn).  An honest peer meets this once in 2^32 and retries.
        """
        return spi in self.children_out or spi in self.children_in

    def remove_child(self, child: ChildSA, now: float) -> list[Action]:
        """DelSA both directions; DelPolicy unless a sibling takes them over."""
        acts: list[Action] = []
        for succ in child.peer_rekeys:  # the successor now sends on its own SA
            if succ.pending_out is not None:
                acts.append(AddSA(succ.pending_out))
                succ.pending_out = None
        ike = child.parent
        if ike is not None and child in ike.children:
            ike.children.remove(child)
        child.pending_out = None
        if child.state is not ChildState.ESTABLISHED and not child.owns_policy \
                and self.children_in.get(child.spi_in) is not child:
            return acts
        sibs = self.by_reqid.get(child.reqid)
        if sibs is not None and child in sibs:
            del sibs[child]
            if not sibs:
                del self.by_reqid[child.reqid]
        if child.owns_policy and not any(c.state is ChildState.ESTABLISHED and c is not child
                                         for c in self.by_reqid.get(child.reqid, ())) \
                and (ike is None or ike.serial not in self._updown_suspended):
            acts += self._updown(child, up=False)  # the last one: before its SAs go
        if self.children_out.get(child.spi_out) is child:
            del self.children_out[child.spi_out]
        if self.children_in.get(child.spi_in) is child:
            del self.children_in[child.spi_in]
            self.stats.events["child.finished" if child.state is ChildState.ESTABLISHED
                              else "child.failed"] += 1
            acts.append(DelSA(child.local_addr, child.spi_in, child.protocol, child.conn.name,
                              child.serial,
                              rekeyed=bool(child.replaced or child.peer_rekeys)))
            acts.append(DelSA(child.remote_addr, child.spi_out, child.protocol,
                              child.conn.name, child.serial))
        if child.owns_policy:
            child.owns_policy = False
            heir = next((c for c in self.by_reqid.get(child.reqid, ())
                         if c.state is ChildState.ESTABLISHED and c is not child), None)
            if heir is not None:
                acts += self._take_policies(heir, child)
            else:
                self.policy_owner.pop(child.reqid, None)
                acts += self._policies_gone(child)
        child.to(ChildState.DELETING)
        self.log(acts, f"deleting Child SA; {child.protocol.upper()} SPIs 0x{child.spi_in:08x} "
                 f"0x{child.spi_out:08x}", child)
        acts.append(ConnectionEvent(EventKind.CHILD_DELETED, child.conn.name, child.serial))
        return acts

    def _take_policies(self, child: ChildSA, prev: ChildSA | None) -> list[Action]:
        """``child`` owns its reqid's policies from now on, after ``prev``.  Their
        templates name the owner's outer addresses: when ``prev``'s differ (a
        reauthentication redirected to another gateway, RFC 5685; a peer that came back
        from another address), they are sent again with ``child``'s."""
        child.owns_policy = True
        self.policy_owner[child.reqid] = child
        if prev is None or (prev.local_addr, prev.remote_addr) == (child.local_addr,
                                                                   child.remote_addr):
            return []
        return [AddPolicy(p) for p in self.policies(child)]

    def _policies_gone(self, child: ChildSA) -> list[Action]:
        """The last Child SA of its reqid goes: its policies go.  The conn's reqid: a
        routed conn's traps come back (``Traps.on_child_gone``).  A narrowed Child SA's
        own reqid (``_policy_reqid``): its policies alone go, and a trap of the same
        selectors (which its policy replaced) comes back; the conn's other Child SAs'
        policies, the traps included, are theirs and stay."""
        dels = self.policies(child)
        if not child.narrowed_from:
            back = self.traps.on_child_gone(child.conn.name, dels)
            if child.reqid not in self.narrowed:
                return back
            # a trap the policy of a narrowed sibling replaced stays replaced
            held = {(str(p.src), str(p.dst), p.direction)
                    for r in self.narrowed[child.reqid] for p in self.policies(
                        self.policy_owner[r])}
            return [a for a in back if not isinstance(a, AddPolicy) or
                    (str(a.policy.src), str(a.policy.dst), a.policy.direction) not in held]
        sibs = self.narrowed.get(child.narrowed_from)
        if sibs is not None:
            sibs.pop(child.reqid, None)
            if not sibs:
                del self.narrowed[child.narrowed_from]
        traps = {(str(p.src), str(p.dst), p.direction): p
                 for p in self.traps.routed.get(child.conn.name, ())}
        acts: list[Action] = []
        for p in dels:
            t = traps.get((str(p.src), str(p.dst), p.direction))
            acts.append(DelPolicy(p) if t is None else AddPolicy(t))
        return acts

    def _updown(self, child: ChildSA, up: bool, only: tuple[str, ...] = (),
                mobike_event: bool = False) -> list[Action]:
        """One ``Updown`` per selector pair when the conn has a ``leftupdown=`` command,
        a ``vti-interface=`` (then the daemon makes the device; script may be "") or an
        ``nflog=`` group (the daemon adds the NFLOG rules).  ``only``: these verbs of a
        MOBIKE move (the script alone)."""
        conn = child.conn
        script = conn.local.updown
        if not script or _no_updown(script):
            if only or (not conn.vti_interface and not conn.nflog):
                return []
            script = ""
        ike = child.parent
        policy = _updown_policy(conn, child)
        # a routed (on-demand) conn keeps its route: Libreswan 5.2 runs prepare, up when
        # its Child SA comes up and only down when that goes (unroute with the route)
        verbs: tuple[str, ...] = ()
        if script and conn.name in self.traps.routed:
            verbs = ("prepare", "up") if up else ("down",)
        verbs = only or verbs
        out: list[Action] = []
        mi, mo = self.xfrm_marks(conn, child.remote_addr)
        conn_facts = _conn_updown_facts(conn, mi, mo)
        for lts in child.local_ts:
            for rts in child.remote_ts:
                if lts.version != rts.version:
                    continue
                facts = UpdownChild(
                    conn=conn.name, serial=child.serial,
                    me=child.local_addr, peer=child.remote_addr,
                    my_client=lts.networks()[0], peer_client=rts.networks()[0],
                    my_id=_updown_id(ike.local_id) if ike is not None else "",
                    peer_id=_updown_id(ike.remote_id) if ike is not None else "",
                    my_protocol=lts.proto, my_port=lts.sport if lts.sport == lts.eport else 0,
                    peer_protocol=rts.proto,
                    peer_port=rts.sport if rts.sport == rts.eport else 0,
                    reqid=child.reqid, sa_type="ESP" if child.protocol == "esp" else "AH",
                    mode=child.mode, spi_in=child.spi_in, spi_out=child.spi_out,
                    my_sourceip=next((a for a in ike.local_vips if a.version == lts.version),
                                     None) if ike is not None and ike.local_vips else
                    next((a for a in conn.local.sourceip if a.version == lts.version), None),
                    peer_dns=list(ike.dns) if ike is not None else [],
                    peer_domains=list(ike.domains) if ike is not None else [],
                    peer_ca=ike.peer_ca if ike is not None else "",  # its cert's issuer
                    policy=policy, mobike_event=mobike_event, **conn_facts,
                )
                out.append(Updown(up, script, facts, verbs, mobike=bool(only)))
        return out

    def _mobike_suspend(self, ike: IKESA) -> list[Action]:
        """Our address went away under a MOBIKE IKE SA: Libreswan 5.2's suspend runs
        ``down``, then ``unroute`` with PLUTO_MOBIKE_EVENT=yes, for its Child SAs (they
        stay installed); ``mobike_moved`` runs ``route``, ``up`` when the update is done."""
        if ike.serial in self._updown_suspended:
            return []
        acts: list[Action] = []
        for c in ike.children:
            if c.state is ChildState.ESTABLISHED and c.owns_policy:
                acts += self._updown(c, up=False, only=("down",))
                acts += self._updown(c, up=False, only=("unroute",), mobike_event=True)
        if acts:
            self._updown_suspended.add(ike.serial)
        return acts

    def mobike_moved(self, ike: IKESA) -> list[Action]:
        """The MOBIKE update of ``ike`` is answered (its SAs moved, or stayed where they
        were): Libreswan 5.2's resume runs ``route``, ``up`` with the addresses now."""
        if ike.serial not in self._updown_suspended:
            return []
        self._updown_suspended.discard(ike.serial)
        acts: list[Action] = []
        for c in ike.children:
            if c.state is ChildState.ESTABLISHED and c.owns_policy:
                acts += self._updown(c, up=False, only=("route", "up"))
        return acts

    def _route_updown(self, conn: Connection, verbs: tuple[str, ...]) -> list[Action]:
        """The updown runs of routing / unrouting an on-demand conn (Libreswan 5.2:
        ``prepare``, ``route`` / ``unroute`` with no Child SA: PLUTO_SA_TYPE=none, SPIs 0,
        the conn's own selectors); none for a shunt or without a script."""
        pols = self.traps.routed.get(conn.name, [])
        if not pols or conn.local_is_left is None:  # not routed (nor oriented): no run
            return []
        script = conn.local.updown
        if not script or _no_updown(script) or trapmod.is_shunt(conn):
            return []
        out: list[Action] = []
        mi, mo = self.xfrm_marks(conn, conn.remote.host_addr)
        for p in pols:
            if p.direction != "out":
                continue
            s, d = p.src, p.dst
            facts = UpdownChild(
                conn=conn.name, serial=0, me=p.tmpl_src, peer=p.tmpl_dst,
                my_client=s.network, peer_client=d.network,
                my_id=str(conn.local.id) if conn.local.id is not None else str(p.tmpl_src),
                peer_id=str(conn.remote.id) if conn.remote.id is not None else
                (conn.remote.host or str(p.tmpl_dst)),
                my_protocol=s.protocol,
                my_port=s.port_start if s.port_start == s.port_end else 0,
                peer_protocol=d.protocol,
                peer_port=d.port_start if d.port_start == d.port_end else 0,
                reqid=p.reqid, sa_type="none", mode=p.mode, add_time=0,
                my_sourceip=p.source_ip, policy=_updown_policy(conn, None),
                **_conn_updown_facts(conn, mi, mo),
            )
            out.append(Updown("route" in verbs, script, facts, verbs))
        return out

    def fail_child(self, serial: int, why: str, now: float) -> list[Action]:
        """A Child SA that the daemon could not finish (its updown script failed).

        As Libreswan undoes an install whose ``up`` step failed: the Child SA is
        deleted (with a Delete to the peer when the IKE SA is up) and a FAILED event
        with reason LOCAL answers a waiting ``whack --initiate``.
        """
        for ike in list(self.by_serial.values()):
            for child in list(ike.children):
                if child.serial != serial:
                    continue
                acts: list[Action] = []
                self.log(acts, f"Child SA failed: {why}", child, level="error")
                acts.append(ConnectionEvent(EventKind.FAILED, child.conn.name, serial, why,
                                            FailReason.LOCAL))
                return acts + self._on(ike, now, partial(delete_children, self, ike, [child],
                                                         now))
        return []

    def _ikes_of(self, name: str) -> list[IKESA]:
        return list(self.by_conn.get(name, {}).values())

    # ------------------------------------------------------------------ public API
    def add_connection(self, conn: Connection) -> list[Action]:
        """Load an oriented connection (whack --add)."""
        acts: list[Action] = []
        if conn.local_is_left is None and self.local_addrs:
            conn.orient(self.local_addrs)
        self._connections[conn.name] = conn
        if not self.by_conn.get(conn.name):  # Libreswan 5.2: an added template's
            self._next_instance.pop(conn.name, None)  # instances count from 1 again
        acts.append(Log('added IKEv2 connection', conn=conn.name))
        return acts

    def delete_connection(self, name: str, now: float) -> list[Action]:
        acts = self.unroute(name, now)
        acts += self.terminate(name, now, shared_too=True)
        if self._connections.pop(name, None) is not None:
            acts.append(Log("deleting connection", conn=name))
        return acts

    def initiate(self, name: str, now: float) -> list[Action]:
        """Start IKE_SA_INIT (or, with an IKE SA up, a new Child SA) (whack --up)."""
        conn = self._connections.get(name)
        if conn is None:
            return [Log(f'no connection named "{name}"', level="error")]
        try:
            conn.local  # noqa: B018
        except ValueError:
            return [Log("cannot initiate: connection is not oriented", level="error", conn=name)]
        if conn.remote.host_addr is None:
            host = conn.remote.host
            if host and not host.startswith("%"):  # daemon/resolver.py: a name, unresolved
                return [Log(f"cannot initiate: the peer's host name {host} does not resolve",
                            level="error", conn=name)]
            return [Log("cannot initiate connection without knowing peer IP address "
                        "(remote=%any)", level="error", conn=name)]
        up = self.child_up(name)
        if up is not None:
            return [Log("connection is already up", conn=name, serial=up)]
        for ike in self._ikes_of(name):
            # (not an IKE SA the peer rekeyed: it deletes it, with a Child SA made there)
            if ike.established and not ike.replaced and not ike.peer_rekeys:
                return self._on(ike, now, partial(self.queue, ike, ChildCreate(conn), now))
            if ike.state in (IKEState.INIT_I, IKEState.AUTH_I):
                return [Log("IKE SA negotiation already in progress",
                            conn=name, serial=ike.serial)]
        shared = self._shareable_ike(conn)
        if shared is not None:  # same peers and IDs: a Child SA on that IKE SA, as pluto
            return self._on(shared, now, partial(self.queue, shared, ChildCreate(conn), now))
        pending = self._negotiating_ike(conn)
        if pending is not None:  # sent once it is up (Libreswan: "queue Child SA")
            return [Log(f"queue Child SA; waiting on IKE SA #{pending.serial} negotiating",
                        conn=name, serial=pending.serial),
                    *self.queue(pending, ChildCreate(conn), now)]
        return self.initiate_ike(conn, now)

    def create_child(self, ike: IKESA, conn: Connection, now: float) -> list[Action]:
        """A new Child SA of ``conn`` asked for on ``ike`` (``IKEContext``: tasks that may
        not import ``child_create``, e.g. ``child_delete``'s revival)."""
        return self.queue(ike, ChildCreate(conn), now)

    def _negotiating_ike(self, conn: Connection) -> IKESA | None:
        """Our IKE SA still in IKE_SA_INIT / IKE_AUTH for another conn of the same
        hosts and configured IDs, which a Child SA of ``conn`` can wait for."""
        for ike in self.by_serial.values():
            other = ike.conn
            if ike.state not in (IKEState.INIT_I, IKEState.AUTH_I) or other is conn or \
                    ike.replaced or other.remote.host_addr != conn.remote.host_addr or \
                    other.local.host_addr != conn.local.host_addr:
                continue
            if other.local.id == conn.local.id and other.remote.id == conn.remote.id:
                return ike
        return None

    def child_up(self, name: str) -> int | None:
        """The serial of the IKE SA carrying an established Child SA of ``name``
        (not one being replaced), or None."""
        for ike in self.by_serial.values():
            for c in ike.children:
                if c.conn.name == name and c.state is ChildState.ESTABLISHED and not c.replaced:
                    return ike.serial
        return None

    # ------------------------------------------------------------------ on demand
    def route(self, name: str, now: float) -> list[Action]:
        """Install the conn's trap policies (``whack --route``, ``auto=route``)."""
        conn = self._connections.get(name)
        if conn is None:
            return [Log(f'no connection named "{name}"', level="error")]
        try:
            conn.local  # noqa: B018
        except ValueError:
            return [Log("cannot route: connection is not oriented", level="error", conn=name)]
        was = name in self.traps.routed
        acts, why = self.traps.route(conn, self.reqid_for(conn))
        if why is not None:
            return [Log(why, level="error", conn=name)]
        for a in acts:  # the trap holds the marks the Child SA's policies will have
            if isinstance(a, AddPolicy):
                self.mark_policy(a.policy, conn, conn.remote.host_addr)
        if not was and not self._conn_up(name):  # an up conn keeps the route it has
            acts += self._route_updown(conn, ("prepare", "route"))
        return acts

    def unroute(self, name: str, now: float, updown: bool = True) -> list[Action]:
        """Remove the conn's trap policies (``whack --unroute``); up SAs keep theirs.
        ``updown``: run the conn's ``unroute`` step (not when its ``route`` failed)."""
        owned = {trapmod.policy_key(p) for c in self.policy_owner.values()
                 for p in self.policies(c)}
        # a narrowed Child SA's policy on a trap's selectors replaced the trap: it stays
        owned.update((str(p.src), str(p.dst), p.direction, c.narrowed_from)
                     for c in self.policy_owner.values() if c.narrowed_from
                     for p in self.policies(c))
        conn = self._connections.get(name)
        acts: list[Action] = []
        # an up Child SA's route stays: its down, unroute come when it goes
        if updown and conn is not None and not self._conn_up(name):
            acts = self._route_updown(conn, ("unroute",))
        return acts + self.traps.unroute(name, owned)

    def _conn_up(self, name: str) -> bool:
        """A Child SA of the routed conn carries its traffic (it ran the updown's up):
        one owns the policies of the trap's reqid, or of one narrowed from it."""
        pols = self.traps.routed.get(name)
        return pols is not None and bool(pols) and (pols[0].reqid in self.policy_owner
                                                    or pols[0].reqid in self.narrowed)

    def routed(self, name: str) -> bool:
        return name in self.traps.routed

    def acquire(self, ev: SAAcquire, now: float) -> list[Action]:
        """Traffic hit a trap policy: negotiate its conn unless it is up or on its way.

        Bounded: one lookup per acquire while the conn is up or negotiating (an
        acquire storm costs no exchange); acquires no routed conn covers are
        counted and logged at most once a second.
        """
        name, acts = self.traps.lookup(ev, now)
        if name is None:
            return acts
        conn = self._connections.get(name)
        if conn is None:
            return acts
        if any(c.state is ChildState.ESTABLISHED and not c.replaced
               for c in self.by_reqid.get(ev.reqid, ())):
            return acts
        if conn.remote.host_addr is None:  # a %any template: the peer must connect
            return acts + self.traps.unknown_peer(name, ev, now)
        patience = conn.retransmit_timeout + 1.0
        if self.traps.busy(name, now, patience):
            return acts
        # on its way still: its IKE SA negotiates, or its Child SA waits on an IKE SA (of
        # another conn too: a second one asked for there would be a duplicate Child SA)
        if self._acquire_alive(name):
            return acts
        acts += self.traps.negotiating(conn, ev, now)
        acts.append(Log(f"initiating on demand: acquire for {ev.src}->{ev.dst}", conn=name))
        acts += self.initiate(name, now)
        packet = trapmod.packet_ts(ev, conn)
        for ike in self._ikes_of(name):
            if ike.state is IKEState.INIT_I and ike.acquired_ts is None:
                ike.acquired_ts = packet
        return acts + self._trap_outcomes(acts, now)

    def _on(self, ike: IKESA, now: float, work: Callable[[], list[Action]]) -> list[Action]:
        """A whack command's work on one IKE SA, with the internal-error guard."""
        return self.guarded(ike, now, "while handling a command", work)

    def _shareable_ike(self, conn: Connection) -> IKESA | None:
        for ike in self.by_serial.values():
            if not ike.established or ike.replaced or ike.rekeying or ike.peer_rekeys:
                continue
            if ike.remote.addr != conn.remote.host_addr or \
                    ike.local.addr != conn.local.host_addr:
                continue
            if not ids.id_matches(remote_pattern(conn), ike.remote_id):
                continue
            lid = local_identity(ike, conn)
            if ike.local_id is None or (lid.id_type, lid.data) != \
                    (ike.local_id.id_type, ike.local_id.data):
                continue
            return ike
        return None

    def terminate(self, name: str, now: float, shared_too: bool = False) -> list[Action]:
        """Delete the connection's IKE SAs, and with them their Child SAs (whack --down).

        An IKE SA that also carries another conn's Child SA stays (only this conn's
        Child SAs go), as Libreswan's down: "IKE SA is shared with" the other conn;
        ``shared_too`` (the conn is deleted) deletes it all the same."""
        acts: list[Action] = []
        self.kept_up.discard(name)  # auto=keep: down is down, until a peer brings it up
        for ike in self._ikes_of(name):
            if not shared_too and ike.established and \
                    any(c.conn.name != name for c in ike.children):
                continue  # the loop below deletes this conn's Child SAs on it
            # another conn's Child SA asked for on this IKE SA but not sent yet: asked
            # for again once it is gone (on an IKE SA of its own), as Libreswan's revival
            waiting = [t.conn.name for t in ike.tasks if isinstance(t, ChildCreate)
                       and t.old is None and t.conn.name != name]
            # as pluto: send the Delete, then remove the state without waiting (§1.4.1)
            if ike.established:
                self.log(acts, "sent INFORMATIONAL request to delete IKE SA", ike)
                acts += send_delete_now(self, ike)
            acts += self.drop_ike(ike, now, "terminated")
            for other in dict.fromkeys(waiting):
                acts += self.initiate(other, now)
        for ike in list(self.by_serial.values()):  # children on another conn's IKE SA
            # one asked for there and not sent yet (an acquire's, queued while that IKE SA
            # negotiates) goes too: it must not come up after a down or a delete
            if any(isinstance(t, ChildCreate) and t.old is None and t.conn.name == name
                   for t in ike.tasks):
                ike.tasks[:] = [t for t in ike.tasks if not (
                    isinstance(t, ChildCreate) and t.old is None and t.conn.name == name)]
            for c in list(ike.children):
                if c.conn.name == name:
                    acts += self._on(ike, now, partial(delete_children, self, ike, [c], now))
        if self.traps.flows:  # an on-demand negotiation cut short: the trap is back
            acts += self._trap_outcomes(acts, now)
            if name in self.traps.flows and not self._acquire_alive(name):
                acts += self.traps.ended(name)  # (queued on another conn's IKE SA)
        return acts

    def rekey_ike(self, name: str, now: float) -> list[Action]:
        acts: list[Action] = []
        for ike in self._ikes_of(name):
            if ike.established and not ike.rekeying and not ike.replaced:
                acts += self._on(ike, now, partial(ike_rekey.start_rekey, self, ike, now))
        return acts

    def rekey_child(self, name: str, now: float) -> list[Action]:
        acts: list[Action] = []
        for ike in list(self.by_serial.values()):
            for c in list(ike.children):
                if c.conn.name == name and c.state is ChildState.ESTABLISHED and \
                        not c.rekeying and not c.replaced and ike.established:
                    acts += self._on(ike, now, partial(child_rekey.start_rekey, self, ike, c,
                                                       now))
        return acts

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float
                ) -> list[Action]:
        """One IKE datagram (non-ESP marker already removed).  Never raises.

        Malformed or unexpected input is dropped (logged at debug level) unless RFC
        7296 §2.21 asks for an answer; an SK payload whose ICV fails is dropped silently.
        """
        try:
            try:
                hdr = codec.peek(data)
            except WireError as e:
                return _dbg(f"dropping malformed packet from {remote}: {e}", remote)
            if hdr.major_version != 2:
                if hdr.major_version == 1 and self.settings.ikev1_reject:
                    return _ikev1_reject(data, local, remote)
                if hdr.major_version > 2 and hdr.exchange == EXCH_INIT and \
                        not hdr.response and hdr.message_id == 0:
                    # RFC 7296 §2.5: drop it and SHOULD answer INVALID_MAJOR_VERSION,
                    # unauthenticated, with the version we speak in the header
                    answer = codec.encode(hdr.spi_i, bytes(8), EXCH_INIT, False, True, 0,
                                          [codec.notify(NotifyType.INVALID_MAJOR_VERSION)])[0]
                    return [Log(f"dropping IKEv{hdr.major_version} IKE_SA_INIT request from "
                                f"{remote}; answering INVALID_MAJOR_VERSION", remote=remote),
                            SendPacket(answer, local, remote)]
                return _dbg(f"dropping IKEv{hdr.major_version} packet from {remote}", remote)
            if hdr.length != len(data):
                return _dbg(f"dropping packet from {remote}: length {hdr.length} != "
                            f"{len(data)}", remote)
            if hdr.exchange == EXCH_INIT and not hdr.response:
                if hdr.spi_i == bytes(8):  # RFC 7296 §3.1: "MUST NOT be zero"
                    return _dbg("dropping IKE_SA_INIT request with a zero initiator SPI",
                                remote)
                if hdr.spi_r == bytes(8) and hdr.initiator:
                    return ike_init.respond_new(self, data, hdr, local, remote, now)
                return _dbg("dropping IKE_SA_INIT request with a responder SPI", remote)
            ike = self.ike_sas.get(hdr.spi_r if hdr.initiator else hdr.spi_i)
            if ike is None:
                if self.closed and not hdr.response:
                    again = self._answer_closed(hdr, local, remote, now)
                    if again is not None:
                        return again
                return _dbg(f"dropping {'response' if hdr.response else 'request'} for "
                            f"unknown IKE SA from {remote}", remote)
            if hdr.initiator == ike.initiator:
                return _dbg("dropping message with the wrong I flag", remote)
            # guarded(), inlined: the hot path formats no "where" text it does not need
            self.verified = False
            try:
                if hdr.exchange == ExchangeType.INFORMATIONAL:  # liveness fast path (issue 18)
                    fast = liveness.fast_receive(self, ike, data, hdr, local, remote, now)
                    if fast is not None:
                        return fast
                acts = self.tm.on_message(ike, data, hdr, local, remote, now)
            except Exception as e:
                if ike.established and not self.verified:
                    return self._unverified_error(ike, e, remote)
                acts = self.internal_error(ike, e, now,
                                           f"while processing a message from {remote}")
            if self.traps.flows:
                acts += self._trap_outcomes(acts, now)
            return acts
        except Exception as e:  # a bug outside any IKE SA must never kill the daemon
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            return [Log(f"internal error while processing packet from {remote}: "
                        f"{type(e).__name__}: {e}", level="error", traceback=tb)]

    def remember_closed(self, ike: IKESA, msgid: int, remote: Endpoint, now: float) -> None:
        """Keep our answer to the peer's Delete of ``ike`` after the SA is gone.

        RFC 7296 §2.1: a responder remembers its response until the next request,
        and after a Delete of the IKE SA none comes.  If that answer is lost, the
        peer resends the Delete; without the SA nobody could answer, and the peer
        would hold its side in a deleting state until its own retransmissions end
        (strongSwan: 165 s).  Kept ``CLOSED_KEEP_S``, answered at most
        ``CLOSED_RESENDS`` times, only to the same message ID from the same address,
        ``CLOSED_MAX`` SAs at most (the oldest go first).
        """
        last = ike.last_response
        if last is None or last[0] != msgid:
            return
        key = ike.local_spi
        self.closed[key] = ClosedAnswer(ike.spi_i, ike.spi_r, msgid, remote, last[1],
                                        now + CLOSED_KEEP_S)
        self.closed.move_to_end(key)
        while len(self.closed) > CLOSED_MAX:
            self.closed.popitem(last=False)

    def _answer_closed(self, hdr: IKEHeader, local: Endpoint, remote: Endpoint, now: float
                       ) -> list[Action] | None:
        """A resent Delete for an IKE SA we deleted on the peer's word: the same answer
        again (``remember_closed``); None: not one of those."""
        key = hdr.spi_r if hdr.initiator else hdr.spi_i
        c = self.closed.get(key)
        if c is None:
            return None
        if now >= c.until:
            del self.closed[key]
            return None
        if hdr.spi_i != c.spi_i or hdr.spi_r != c.spi_r or hdr.message_id != c.msgid or \
                hdr.exchange != ExchangeType.INFORMATIONAL or remote != c.remote or \
                c.sends >= CLOSED_RESENDS:
            return None
        c.sends += 1
        acts: list[Action] = [SendPacket(p, local, remote) for p in c.packets]
        acts.append(Log(f"answering a resent Delete for an IKE SA already deleted "
                        f"(from {remote})", level="debug"))
        return acts

    def _superseded(self, ike: IKESA, now: float) -> list[Action] | None:
        """Crossing streams: our IKE SA is still negotiating (it is time to resend)
        but the peer's, between the same ends and IDs, is up meanwhile: drop ours, and
        ask for the conn's Child SA on that one if none is up (Libreswan 5.2: "dropping
        negotiation as superseded", then its revival).  Only with uniqueids (one IKE
        SA per peer ID is wanted), never for a reauthentication."""
        conn = ike.conn
        uniq = conn.uniqueids if conn.uniqueids is not None else self.settings.uniqueids
        if not uniq or ike.reauth_of is not None or ike.remote_id is not None and \
                ike.remote_id.null:
            return None
        other = self._shareable_ike(conn)
        if other is None or other is ike:
            return None
        acts: list[Action] = [Log(f"dropping negotiation as superseded by established IKE "
                                  f"SA #{other.serial}", conn=conn.name, serial=ike.serial)]
        acts += self.drop_ike(ike, now, "superseded", None)
        if conn.name in self._connections and self.child_up(conn.name) is None:
            acts += self.initiate(conn.name, now)
        return acts

    def _service(self, ike: IKESA, now: float) -> list[Action]:
        o = ike.outstanding
        if o is not None and ike.state in (IKEState.INIT_I, IKEState.AUTH_I) and \
                now >= o.next_retransmit:
            dropped = self._superseded(ike, now)
            if dropped is not None:
                return dropped
        acts = self.tm.retransmit(ike, now)
        if ike.serial in self.by_serial:
            acts += timers.service(self, ike, now)
        return acts

    def handle_timer(self, now: float) -> list[Action]:
        """Run every deadline that has passed: retransmits, DPD, rekeys, expiry."""
        acts: list[Action] = []
        self.dos.rotate(now)
        if self.dos.check_at is not None and now >= self.dos.check_at:
            change = self.dos.update(self.n_halfopen, now)  # pressure may have ended
            if change is not None:
                acts.append(Log(change, level="warning"))
        shunts_due = self.traps.next_deadline()
        if shunts_due is not None and shunts_due <= now:
            acts += self.traps.expire(now)
        touched: list[IKESA] = []
        heap, due, by_serial = self._heap, self._due, self.by_serial
        while heap and heap[0] <= now:
            t = heapq.heappop(heap)
            # taken out before it runs: an SA scheduled at ``t`` meanwhile gets a new
            # bucket, run by this loop as a new heap entry was before
            for serial in due.pop(t):
                ike = by_serial.get(serial)
                if ike is None or ike.heap_at != t:
                    continue
                ike.heap_at = None
                # guarded(), inlined: one call less per SA due (issue 18)
                try:
                    done = self._service(ike, now)
                except Exception as e:
                    done = self.internal_error(ike, e, now, "in timer")
                if self.traps.flows:
                    done += self._trap_outcomes(done, now)
                acts += done
                touched.append(ike)
        for ike in touched:  # after the loop: a deadline left in the past cannot spin here
            if ike.serial in self.by_serial:
                ike.heap_at = None
                self.schedule(ike)
        return acts

    def next_timer(self) -> float | None:
        """The earliest deadline: the heap's live top, the DoS clocks, failure shunts.

        Called after every engine call (issue 18): no list is built for the minimum.
        """
        heap, due, by_serial = self._heap, self._due, self.by_serial
        best: float | None = None
        while heap:
            t = heap[0]
            b = due[t]
            stale = 0
            for serial in b:
                ike = by_serial.get(serial)
                if ike is not None and ike.heap_at == t:
                    break
                stale += 1
            if stale == len(b):  # nobody is due then any more
                heapq.heappop(heap)
                del due[t]
                continue
            if stale:
                del b[:stale]
            best = t
            break
        for d in (self.dos.rotate_at, self.dos.check_at, self.traps.next_deadline()):
            if d is not None and (best is None or d < best):
                best = d
        return best

    def sa_counters(self, reqid_or_spi: int, bytes: int, packets: int, now: float
                    ) -> list[Action]:
        """Traffic counters from the backend: rekey a Child SA near its byte/packet limit.

        Packets that came in on an inbound SA since the last feed are news from the
        peer (RFC 7296 §2.4: "receipt of a fresh cryptographically protected message
        on ... any of its Child SAs ensures liveness"; Libreswan 5.2 skips the probe
        after recent inbound IPsec traffic too): the IKE SA's liveness check waits
        ``dpddelay`` from now (the daemon feeds every 10 s: up to that much late).
        An SPI that is also an outbound SA's (the peer picks those) tells nothing."""
        child = self.children_in.get(reqid_or_spi)
        if child is not None and packets > child.in_packets:
            child.in_packets = packets
            p = child.parent
            if p is not None and p.established and now > p.last_recv and \
                    reqid_or_spi not in self.children_out:
                p.last_recv = now
        if child is None:  # the SPI of an outbound SA
            child = self.children_out.get(reqid_or_spi)
        cands = [child] if child is not None else list(self.by_reqid.get(reqid_or_spi, ()))
        acts: list[Action] = []
        for c in cands:
            conn = c.conn
            if not conn.rekey:  # rekey=no: we never ask for a new Child SA (ipsec.conf(5))
                continue
            sb, sp = soft_limit(conn.ipsec_max_bytes, c), soft_limit(conn.ipsec_max_packets, c)
            over = (sb is not None and bytes >= sb) or (sp is not None and packets >= sp) or \
                packets >= (2**64 if c.chosen and c.chosen.esn else 2**32) - 2**16
            ike = c.parent
            if over and ike is not None and ike.established and not c.rekeying \
                    and not c.replaced and c.state is ChildState.ESTABLISHED:
                self.log(acts, "Child SA reached its traffic limit; rekeying", c)
                acts += self._on(ike, now, partial(child_rekey.start_rekey, self, ike, c, now))
        return acts

    def sa_expired(self, ev: SAExpire, now: float) -> list[Action]:
        """A kernel limit event (``params.SAExpire``): rekey on soft, delete on hard."""
        spi = int(ev.spi)
        # the SA is (dst, SPI, protocol): the peer picks our outbound SPIs, so one may
        # equal an inbound SPI of ours (another peer's Child SA); match the address too
        c = self.children_in.get(spi)
        if c is None or c.local_addr != ev.dst:
            c = self.children_out.get(spi)
            if c is not None and c.remote_addr != ev.dst:
                c = None
        acts: list[Action] = []
        if c is None or c.parent is None or c.state is not ChildState.ESTABLISHED:
            return acts
        ike = c.parent
        if ev.hard:
            self.log(acts, f"Child SA reached its hard {ev.reason} limit; deleting it", c)
            if ike.established:  # (a conn meant to stay up gets a new one: revival)
                return acts + self._on(ike, now, lambda: delete_children(
                    self, ike, [c], now) + revive_children(self, ike, [c], now))
            return acts + self.remove_child(c, now)
        if ike.established and not c.rekeying and not c.replaced and c.conn.rekey:
            self.log(acts, f"Child SA reached its soft {ev.reason} limit; rekeying", c)
            acts += self._on(ike, now, partial(child_rekey.start_rekey, self, ike, c, now))
        return acts

    def local_address_changed(self, old: IPAddress, new: IPAddress, now: float
                              ) -> list[Action]:
        """MOBIKE (RFC 4555 §3.5): our address ``old`` is gone and ``new`` reaches the
        peers: every IKE SA that we initiated from ``old`` with MOBIKE moves there."""
        acts: list[Action] = []
        self.local_addrs.discard(old)
        self.local_addrs.add(new)
        for ike in list(self.by_serial.values()):
            if ike.local.addr == old and ike.mobike and ike.first_initiator and ike.established:
                acts += self._mobike_suspend(ike)
                acts += self._on(ike, now, partial(mobike.start_update, self, ike,
                                                   Endpoint(new, ike.local.port), now))
        return acts

    def redirect(self, to: IPAddress | str, now: float, name: str | None = None,
                 peer: IPAddress | None = None) -> list[Action]:
        """``ipsec redirect --name NAME | --peer-ip ADDR --to GW`` (RFC 5685 §6): send
        REDIRECT to the established clients of ``name`` (or at ``peer``) that support it."""
        acts: list[Action] = []
        n = 0
        for ike in list(self.by_serial.values()):
            if not ike.established or ike.first_initiator or not ike.redirect_ok:
                continue
            if name is not None and ike.conn.name != name:
                continue
            if peer is not None and ike.remote.addr != peer:
                continue
            n += 1
            acts += self._on(ike, now, partial(self.queue, ike, redirect.Redirected(to), now))
        if not n:
            acts.append(Log(f"redirect to {to}: no established IKE SA whose peer supports "
                            "redirect matches", level="warning", conn=name))
        return acts

    def shutdown(self, now: float) -> list[Action]:
        """Send Delete for every IKE SA and remove all state (daemon exit)."""
        acts: list[Action] = []
        for name in list(self.traps.routed):
            acts += self.unroute(name, now)
        for ike in list(self.by_serial.values()):
            if ike.established:
                acts += send_delete_now(self, ike)
            acts += self.drop_ike(ike, now, "shutdown" if ike.established else "", None)
        self._heap.clear()
        self._due.clear()
        return acts

    # ------------------------------------------------------------------ status
    def status(self, now: float) -> EngineStatus:
        self._refresh_instances()
        st = EngineStatus(half_open=self.n_halfopen, busy=self.busy(),
                          dos=dos_status(self.dos, self.n_halfopen, self.tm, now),
                          shunts=self.traps.shunt_status(now))
        for conn in self.connections.values():
            try:
                loc, rem = conn.local, conn.remote
            except ValueError:
                loc, rem = conn.left, conn.right
            ikes = self._ikes_of(conn.name)
            st.connections.append(ConnectionStatus(
                name=conn.name, local=str(loc.host_addr or loc.host or "%any"),
                remote=str(rem.host_addr or rem.host or "%any"),
                local_id=str(loc.id or loc.host_addr or ""),
                remote_id=str(rem.id or rem.host_addr or "%any"),
                local_subnets=[str(s) for s in loc.subnets],
                remote_subnets=[str(s) for s in rem.subnets], authby=conn.authby,
                type=conn.type, auto=conn.auto,
                routed=any(c.owns_policy for i in ikes for c in i.children),
                ike_serials=[i.serial for i in ikes],
                child_serials=[c.serial for i in self.by_serial.values() for c in i.children
                               if c.conn.name == conn.name],
                ike=conn.raw.get("ike", "default"), esp=conn.raw.get("esp", "default")))
        for ike in sorted(self.by_serial.values(), key=lambda i: i.serial):
            ch = ike.chosen
            s = IKESAStatus(
                serial=ike.serial, conn=ike.conn.name, state=ike.state,
                role="initiator" if ike.initiator else "responder",
                spi_i=int.from_bytes(ike.spi_i, "big"), spi_r=int.from_bytes(ike.spi_r, "big"),
                local=str(ike.local), remote=str(ike.remote),
                local_id=str(ike.local_id or ""), remote_id=str(ike.remote_id or ""),
                remote_id_type=ike.remote_id.id_type if ike.remote_id is not None else 0,
                encr=ch.encr_name() if ch else "", integ=ch.integ_name() if ch else "",
                prf=ch.prf_name() if ch else "", ke=ch.ke_name() if ch else "",
                nat_detected_local=ike.nat_local, nat_detected_remote=ike.nat_remote,
                established_at=ike.established_at, rekey_at=ike.rekey_at,
                expire_at=ike.expire_at, last_liveness=ike.last_recv or None,
                msgid_next_request=ike.next_out, msgid_last_received=ike.next_in - 1,
                local_vips=[str(a) for a in ike.local_vips], instance=self.instance_of(ike))
            for c in ike.children:
                cc = c.chosen
                s.children.append(ChildSAStatus(
                    serial=c.serial, conn=c.conn.name, state=c.state, parent_serial=ike.serial,
                    spi_in=c.spi_in, spi_out=c.spi_out, protocol=c.protocol, mode=c.mode,
                    encapsulated=c.encap is not None, encr=cc.encr_name() if cc else "",
                    integ=cc.integ_name() if cc else "", ke=cc.ke_name() if cc else "",
                    esn=bool(cc and cc.esn), local_ts=[str(t) for t in c.local_ts],
                    remote_ts=[str(t) for t in c.remote_ts], established_at=c.established_at,
                    rekey_at=c.rekey_at, expire_at=c.expire_at, reqid=c.reqid))
            st.ike_sas.append(s)
            st.leases += [LeaseStatus(pool=le.pool, address=str(le.addr), client_id=le.owner,
                                      conn=ike.conn.name, ike_serial=ike.serial)
                          for le in ike.leases]
        st.pools = [PoolStatus(*row) for row in self.leases.summary()]
        return st

    def busy(self) -> bool:
        """Demand cookies from every new peer (RFC 7296 §2.6; ``ike/cookies.py``)?"""
        return self.dos.busy_now()

    def ike_of(self, name: str) -> list[IKESA]:
        """The IKE SAs of a connection (tests and tasks)."""
        return self._ikes_of(name)


def soft_limit(hard: int | None, child: ChildSA) -> int | None:
    """The soft limit of ``ipsec-max-bytes=`` / ``ipsec-max-packets=`` (``hard``) on the
    SAs of ``child``, as Libreswan's ipsec.conf(5) says: the initiator of the Child SA
    rekeys at 25% of the hard limit (plus up to 1/16 of it as fuzz), the responder at
    50% (minus that fuzz), so that the initiator normally rekeys first; no fuzz below
    16384.  ``rekey=no``: no soft limit (the SA dies at the hard limit, not rekeyed).
    The fuzz is drawn from the Child SA's inbound SPI, so that the kernel's limit and the
    engine's counter check (``Engine.sa_counters``) agree."""
    if not hard or not child.conn.rekey:
        return None
    soft = hard * 50 // 100 if hard < 100_000 else hard // 100 * 50
    fuzz = 0 if hard < 16384 else (child.spi_in * 2654435761) % (soft // 8 + 1)
    return max(1, soft // 2 + fuzz if child.initiator else soft - fuzz)


def _ikev1_reject(data: bytes, local: Endpoint, remote: Endpoint) -> list[Action]:
    """``ikev1-policy=reject`` (ipsec.conf(5): "reply with an error"): an ISAKMP
    Informational with the INVALID_MAJOR_VERSION notification (RFC 2408 §3.1, §3.14.1:
    DOI 1, protocol ISAKMP, no SPI), under the request's cookies.  An Informational
    itself is not answered (two rejecting ends must not ping-pong), nor is anything
    shorter than an ISAKMP header."""
    if len(data) < 28 or data[18] == 5:
        return _dbg(f"dropping IKEv1 packet from {remote}", remote)
    payload = bytes([0, 0, 0, 12]) + (1).to_bytes(4, "big") + bytes([1, 0]) + \
        (5).to_bytes(2, "big")  # generic header, DOI IPsec, ISAKMP, INVALID_MAJOR_VERSION
    header = data[:16] + bytes([11, 0x10, 5, 0]) + bytes(4) + \
        (28 + len(payload)).to_bytes(4, "big")  # next N, v1.0, Informational, msgid 0
    return [Log(f"rejecting IKEv1 packet from {remote} as global policy is set to reject "
                "all IKEv1 packets", remote=remote),
            SendPacket(header + payload, local, remote)]


def _dbg(msg: str, remote: Endpoint) -> list[Action]:
    return [Log(msg, level="debug", remote=remote)]


def _no_updown(script: str | None) -> bool:
    """No script to run: unset, empty, ``%disabled``, or Libreswan's default ``ipsec
    _updown`` written out (what it does, routes and policies, the daemon does itself;
    run, it would be our ``ipsec`` saying so and failing every Child SA)."""
    words = (script or "").split()
    return not words or words[0].lower() == "%disabled" or words == ["ipsec", "_updown"]


# authby= / leftauth= words as Libreswan 5.2's authby bits (lib/libswan/authby.c), in
# the order it prints them; eaponly sets none
_UPDOWN_AUTH_ORDER = ("PSK", "RSASIG", "ECDSA", "AUTH_NEVER", "AUTH_NULL", "RSASIG_v1_5")


def _updown_auth(word: str) -> tuple[str, ...]:
    w = word.strip().lower()
    if w in ("secret", "psk"):
        return ("PSK",)
    if w in ("rsasig", "rsa"):
        return ("RSASIG", "RSASIG_v1_5")
    if w == "rsa-sha1":
        return ("RSASIG_v1_5",)
    if w.startswith("rsa"):
        return ("RSASIG",)
    if w.startswith("ecdsa"):
        return ("ECDSA",)
    return {"null": ("AUTH_NULL",), "never": ("AUTH_NEVER",)}.get(w, ())


def _conn_updown_facts(conn: Connection, mi: tuple[int, int] | None,
                       mo: tuple[int, int] | None) -> dict[str, Any]:
    """What an updown run takes from the conn alone, the same for every verb: a Child
    SA's (up, down, ...) and an on-demand conn's routing (prepare, route, unroute), as
    Libreswan 5.2 builds one environment from the conn for all of them (its
    ``prepare``/``route`` read VTI_IFACE and VTI_ROUTING too, and NFLOG)."""
    return dict(
        nexthop=conn.local.nexthop_addr,  # PLUTO_NEXT_HOP (unset: the peer)
        # PLUTO_MARK_IN / PLUTO_MARK_OUT: value/mask of the installed marks
        mark_in=f"{mi[0]}/{mi[1]:#08x}" if mi else "",
        mark_out=f"{mo[0]}/{mo[1]:#08x}" if mo else "",
        virt_interface=(f"ipsec{conn.ipsec_interface}"
                        if conn.ipsec_interface is not None else ""),
        vti_iface=conn.vti_interface or "", vti_routing=conn.vti_routing,
        # a template's instances (right=%any) share the device, as in Libreswan
        vti_shared=conn.vti_shared or conn.remote.is_any,
        vti_ip=(conn.local.vti_ip or "").strip(),
        mtu=conn.mtu, metric=conn.metric, nflog=conn.nflog,
        # Libreswan 5.2: a template's (right=%any) peer is an instance
        conn_kind="CK_INSTANCE" if conn.remote.is_any else "CK_PERMANENT",
        # 5.2: the end with the address pool is the mode-config client
        cfg_server=conn.local.modecfgserver,
        cfg_client=conn.local.modecfgclient or bool(conn.local.addresspool),
        if_id=conn.ipsec_interface or 0,
        interface_ip=(conn.local.interface_ip or "").strip(),
    )


def _updown_policy(conn: Connection, child: ChildSA | None) -> str:
    """PLUTO_CONN_POLICY as Libreswan 5.2 spells a conn's policy bits
    (``IKEv2+PSK+ENCRYPT+TUNNEL+PFS+UP+IKE_FRAG_ALLOW+ESN_NO+ESN_YES``)."""
    have = {b for w in (conn.local.auth or conn.authby or "").replace("|", ",").split(",")
            for b in _updown_auth(w)}
    auth = [b for b in _UPDOWN_AUTH_ORDER if b in have]
    ah = child.protocol == "ah" if child is not None else getattr(conn, "phase2", "") == "ah"
    mode = child.mode if child is not None else (
        "transport" if conn.type == "transport" else "tunnel")
    bits = ["IKEv2", *auth, "AUTHENTICATE" if ah else "ENCRYPT", mode.upper()]
    bits += [b for b, on in (
        ("COMPRESS", conn.compress), ("PFS", conn.pfs), ("DONT_REKEY", not conn.rekey),
        ("REAUTH", conn.reauth), ("ROUTE", conn.auto in ("route", "ondemand")),
        ("UP", conn.auto in ("start", "up")), ("KEEP", conn.auto == "keep"), ("IKE_FRAG_ALLOW", conn.fragmentation != "no"),
        ("IKE_FRAG_FORCE", conn.fragmentation == "force"), ("MOBIKE", conn.mobike),
        ("ESN_NO", conn.esn in ("no", "either")), ("ESN_YES", conn.esn in ("yes", "either")),
    ) if on]
    return "+".join(bits)


def _updown_id(i: Identity | None) -> str:
    """An ID as Libreswan 5.2 gives it to the updown script (``ID_NULL`` for RFC 7619's)."""
    if i is None:
        return ""
    return "ID_NULL" if i.null else str(i)


def _vip_in(child: ChildSA, sel: TrafficSelector) -> IPAddress | None:
    """The address the gateway gave us (RFC 7296 §3.15) inside our selector ``sel``."""
    ike = child.parent
    if ike is None or not ike.local_vips:
        return None
    return next((a for a in ike.local_vips if a.version == sel.network.version
                 and a in sel.network), None)
