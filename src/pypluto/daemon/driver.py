"""The engine driver: calls into the sans-I/O engine and carries out the actions it returns.

The engine (DESIGN.md rule 1) never touches a socket, a clock or the kernel;
every call returns a list of actions (``ike.actions``).  This module is the
other half, in the role of aioquic's ``asyncio/protocol.py``:

* ``run`` makes one engine call with the current monotonic time, executes the
  actions in order and reschedules the engine's one timer (``next_timer``) as a
  ``loop.call_at`` handle;
* ``HANDLERS`` is the table from action type to the method that carries it out
  (send a datagram or a NAT-T keepalive, install or remove an SA or a policy
  in the kernel backend, log, report a connection event, run an offloaded key
  exchange on the helper pool and ``resume`` the engine with its result, run
  a conn's ``leftupdown=`` script);
* SA traffic counters and kernel expire events are fed back to the engine
  (``ipsec-max-bytes`` / ``-packets``, RFC 7296 §2.8 rekeying).

An exception out of an engine call or out of a handler is an internal error:
logged with its traceback in a crash report (``--coredir``), and a whack waiting
on the connection concerned is answered at once with ``RC_INTERNAL_ERROR``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from functools import partial
from typing import Any

from pypluto.config.model import IPAddress
from pypluto.control.protocol import RC_INTERNAL_ERROR
from pypluto.daemon.engine_api import EngineAPI
from pypluto.daemon.helpers import CrashReports, HelperPool
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.metrics import DROP_KEYS, Counters
from pypluto.daemon.nflog import NflogManager
from pypluto.daemon.sockets import UDPSockets
from pypluto.daemon.updown import (
    DOWN_VERBS,
    FATAL_VERBS,
    UP_VERBS,
    Verb,
    log_result,
    run_updown,
)
from pypluto.daemon.vti import VtiManager
from pypluto.daemon.waiters import Waiters
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
    Log,
    MoveSA,
    SendKeepalive,
    SendPacket,
    Updown,
)
from pypluto.ike.status import ChildSAStatus
from pypluto.kernel.base import (
    BackendError,
    KernelBackend,
    SAAcquire,
    SAExpire,
    SAStats,
    refuse_marks,
)
from pypluto.params import UpdownChild
from pypluto.textsafe import LINE_LIMIT, escape

Handler = Callable[["EngineDriver", Any, bool], None]
"""``(driver, action, rate_limited)``: carries out one action."""

_RETRANSMIT_RE = re.compile(r"retransmitting request \(message ID \d+, try (\d+)\)$")
"""The engine's (debug) line for a retransmitted request (ike/exchanges/timers.py)."""

V2_STATE_NAMES = {
    "STATE_V2_PARENT_I1": "IKE_SA_INIT_I",
    "STATE_V2_PARENT_I2": "IKE_AUTH_I",
    "STATE_V2_REKEY_IKE_I1": "REKEY_IKE_I",
    "STATE_V2_NEW_CHILD_I1": "NEW_CHILD_I",
    "STATE_V2_REKEY_CHILD_I1": "REKEY_CHILD_I",
    "STATE_V2_ESTABLISHED_IKE_SA": "ESTABLISHED_IKE_SA",
}
"""Libreswan 5.2's short state names in its retransmission lines."""

POLL_INTERVAL = 10.0  # seconds between SA counter polls
ACQUIRE_QUEUE = 256  # acquires waiting for the loop; more are dropped (and counted)
CPU_CHECK_INTERVAL = 1.0  # seconds between looks at the CPUs we may run on (helpers)
FETCH_WORKERS = 4  # threads for CRL / OCSP fetches (Compute io jobs), created at first use


class EngineDriver:
    """Drives one engine: calls, actions, its timer, offloaded jobs, SA counters."""

    def __init__(self, log: PlutoLogger, crash: CrashReports, waiters: Waiters,
                 sockets: UDPSockets, statsbin: str | None = None) -> None:
        self.log = log
        self.crash = crash
        self.waiters = waiters
        self.sockets = sockets
        self.statsbin = statsbin
        self.engine: EngineAPI | None = None
        self.backend: KernelBackend | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.helpers: HelperPool | None = None
        self.spawn: Callable[[Coroutine[Any, Any, Any] | asyncio.Future[Any]], None] = \
            lambda aw: None
        # the connections whose peer is at an address (whacks to fail on a receive error)
        self.peer_conns: Callable[[IPAddress], list[str]] = lambda addr: []
        # a loaded connection's retransmit-interval (None: not loaded)
        self.retransmit_interval: Callable[[str], float | None] = lambda name: None
        self.sa_index: dict[int, tuple[IPAddress, str, str]] = {}  # spi -> (dst, proto, dir)
        self.stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._fetch_pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._timer_for = 0.0  # the engine deadline ``_timer`` was armed for
        # inside a socket's batch of datagrams (``batch_begin``): the engine's timer is
        # looked at once when the batch ends, not after every datagram (issue 18)
        self._batch = 0
        self._timer_stale = False
        self._rl_flush = False
        self._last_error: Log | None = None  # the engine's latest error line in this batch
        # updown: runs not yet finished per Child SA serial, the CHILD_ESTABLISHED
        # events held back until they succeed, one lock per conn (runs in order)
        self._updown_pending: dict[int, int] = {}
        self._held_events: dict[int, ConnectionEvent] = {}
        self._updown_locks: dict[str, asyncio.Lock] = {}
        self._updown_failed: set[int] = set()  # never came up: no down/unroute for them
        self.updown_timeout = 30.0
        # an on-demand conn whose updown route step failed: unroute it (registry.py)
        self.route_failed: Callable[[str], None] = lambda name: None
        self._acq: deque[SAAcquire] = deque()
        self._acq_lock = threading.Lock()
        self._acq_scheduled = False
        self.acquires_dropped = 0
        self.updown_tasks: set[asyncio.Task[None]] = set()
        # vti-interface= devices and their routes (route-based VPNs, XFRM only)
        self.vti = VtiManager(lambda m, lvl: self.log.log(m, lvl))
        # nflog= / nflog-all= rules (daemon/nflog.py)
        self.nflog = NflogManager(lambda m, lvl: self.log.log(m, lvl))
        # event counters (whack --status --json "counters", the metrics endpoint)
        self.counters = Counters(sa_stats=self._stats_by_spi)
        self.count_retransmits = False  # hashing every datagram: only for the endpoint

    # ------------------------------------------------------------- clock
    @staticmethod
    def now() -> float:
        return time.monotonic()

    # ------------------------------------------------------------- engine calls
    def run(self, call: Callable[[EngineAPI], list[Action]], *, rate_limited: bool = False,
            where: str = "", conn: str | None = None, remote: Endpoint | None = None) -> None:
        """Call the engine, execute its actions, reschedule its timer.

        ``conn`` / ``remote`` name whom the call concerns: if it raises, the whacks
        waiting on that connection (or on the connections with that peer) fail at once.
        """
        engine = self.engine
        if engine is None:
            return
        timed = bool(self.log.debug) and self.log.debugging("cpu-usage")
        t0 = time.process_time() if timed else 0.0
        actions: list[Action]
        try:
            actions = call(engine)
        except Exception as e:  # noqa: BLE001 - never let one packet kill the daemon
            self.internal_error(e, _where(where, remote), conn=conn, remote=remote)
            actions = []
        if timed:
            ms = (time.process_time() - t0) * 1000
            self.log.log(f"cpu-usage: {_where(where, remote)} took {ms:.3f} ms", "debug",
                         debug_class="cpu-usage")
        if actions:
            self.execute(actions, rate_limited=rate_limited)
        self.schedule_timer()
        if rate_limited and not self._rl_flush and self.loop is not None and \
                self.log.limiter.count > self.log.limiter.limit:
            self._rl_flush = True
            self.loop.call_later(self.log.limiter.window, self._flush_rate_limit)

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float) -> None:
        """One IKE datagram: ``run(lambda e: e.receive(...), rate_limited=True,
        remote=remote)`` without the closure and its extra calls (issue 18: the path of
        every datagram)."""
        engine = self.engine
        if engine is None:
            return
        if self.log.debug and self.log.debugging("cpu-usage"):
            self.run(lambda e: e.receive(data, local, remote, now), rate_limited=True,
                     remote=remote)
            return
        try:
            actions = engine.receive(data, local, remote, now)
        except Exception as e:  # noqa: BLE001 - never let one packet kill the daemon
            self.internal_error(e, _where("", remote), remote=remote)
            actions = []
        if actions:
            self.execute(actions, rate_limited=True)
        if self._batch:
            self._timer_stale = True  # ``batch_end`` re-arms it
        else:
            self.schedule_timer()
        limiter = self.log.limiter
        if limiter.count > limiter.limit and not self._rl_flush and self.loop is not None:
            self._rl_flush = True
            self.loop.call_later(limiter.window, self._flush_rate_limit)

    def batch_begin(self) -> None:
        """A socket's batch of datagrams begins (``UDPSockets``): no timer callback can
        run before it ends, so the engine's next deadline is asked for once, at its end."""
        self._batch += 1

    def batch_end(self) -> None:
        """The batch ends: the timer is re-armed for the engine's next deadline."""
        self._batch -= 1
        if not self._batch and self._timer_stale:
            self._timer_stale = False
            self.schedule_timer()

    def internal_error(self, e: BaseException, where: str, *, conn: str | None = None,
                       remote: Endpoint | None = None) -> None:
        """Log ``e`` with a crash report; answer the whacks it concerns with a failure."""
        self.crash.exception(e, where)
        names = [conn] if conn else (self.peer_conns(remote.addr) if remote else [])
        if names:
            self.waiters.fail(names, RC_INTERNAL_ERROR,
                              f"internal error in {where}: {type(e).__name__}: {e}")

    def _flush_rate_limit(self) -> None:
        """The summary line of a flood, even when the flood stopped."""
        self._rl_flush = False
        if self.log.flush_rate_limit() and self.loop is not None:
            self._rl_flush = True
            self.loop.call_later(self.log.limiter.window, self._flush_rate_limit)

    # ------------------------------------------------------------- actions
    def execute(self, actions: list[Action], rate_limited: bool = False) -> None:
        """Carry out ``actions`` in order; one failing action does not stop the rest."""
        self._last_error = None
        # A Child SA whose SA or policy the backend refused is not established (issue 12:
        # never report success for what is not protected): its "established" line, its
        # updown "up" and its event are dropped, and Engine.fail_child deletes it and
        # answers a waiting whack with the backend's reason.
        failed: dict[int, str] = {}  # serial -> the backend's reason
        serial_of_reqid: dict[int, int] = {}
        for a in actions:
            kind = type(a)
            if kind is AddSA:  # type() is, not isinstance: mypy does not narrow it
                serial_of_reqid[a.sa.reqid] = a.sa.serial  # type: ignore[union-attr]
            if failed and _belongs_to_failed(a, failed):
                continue
            handler = HANDLERS.get(kind)
            if handler is None:
                self.log.log(f"unknown engine action {type(a).__name__} ignored", "debug")
                continue
            try:
                handler(self, a, rate_limited)
            except BackendError as e:
                sa = a.sa if isinstance(a, AddSA) else None
                self.log.log(f"kernel: {type(a).__name__} failed: {e}", "error",
                             conn=(sa.conn_name if sa is not None else None) or None)
                serial = a.sa.serial if isinstance(a, AddSA) else \
                    serial_of_reqid.get(a.policy.reqid, 0) if isinstance(a, AddPolicy) else 0
                if serial:
                    failed.setdefault(serial, str(e))
            except Exception as e:  # noqa: BLE001
                self.internal_error(e, f"executing {type(a).__name__}",
                                    conn=_conn_of(a))
        for serial, why in failed.items():
            self.run(partial(_fail_child, serial=serial, why=f"Child SA not installed: {why}",
                             now=self.now()),
                     where="a Child SA the backend refused")

    def _backend(self) -> KernelBackend:
        assert self.backend is not None
        return self.backend

    def _send_packet(self, a: SendPacket, rate_limited: bool) -> None:
        self.sockets.send(a.data, a.local, a.remote)
        self.counters.ike_bytes_out += len(a.data)
        if self.count_retransmits:
            self.counters.record_send(a.data)

    def _send_keepalive(self, a: SendKeepalive, rate_limited: bool) -> None:
        self.sockets.send_keepalive(a.local, a.remote)

    def _add_sa(self, a: AddSA, rate_limited: bool) -> None:
        backend = self._backend()
        self.sa_index[a.sa.spi] = (a.sa.dst, a.sa.protocol, a.sa.direction)
        if self.log.any_debug:  # formatted only for a debug log that may want it
            self.log.log(f"add_sa {a.sa.direction} {a.sa.protocol}.{a.sa.spi:08x}"
                         f"@{a.sa.dst}", "debug", conn=a.sa.conn_name or None,
                         serial=a.sa.serial, debug_class="routing")
        refuse_marks(backend, a.sa.mark, "the SA")  # enforce or refuse (issue 12)
        backend.add_sa(a.sa)

    def _del_sa(self, a: DelSA, rate_limited: bool) -> None:
        backend = self._backend()
        meta = self.sa_index.pop(a.spi, None)
        if meta is not None:  # its bytes stay in total.ipsec.*.traffic.*
            st = self.stats(a.dst, a.spi, a.protocol)
            if st is not None:
                self.counters.ipsec_bytes_gone[f"{a.protocol}.{meta[2]}"] += st.bytes
                for k in DROP_KEYS:  # and its drops in total.ipsec.drops.*
                    v = getattr(st, k, None)
                    if isinstance(v, int) and v:
                        self.counters.ipsec_drops_gone[k] += v
        if a.rekeyed:
            backend.retire_sa(a.dst, a.spi, a.protocol)
        else:
            backend.del_sa(a.dst, a.spi, a.protocol)

    def _move_sa(self, a: MoveSA, rate_limited: bool) -> None:
        """MOBIKE (RFC 4555): the data plane moves one SA to new addresses."""
        backend = self._backend()
        old = self.sa_index.get(a.spi)
        if old is not None:
            self.sa_index[a.spi] = (a.new_dst, old[1], old[2])
        backend.move_sa(a.dst, a.spi, a.new_src, a.new_dst, a.encap_sport, a.encap_dport,
                        a.protocol)

    def _add_policy(self, a: AddPolicy, rate_limited: bool) -> None:
        refuse_marks(self._backend(), a.policy.mark, "the policy")
        self._backend().add_policy(a.policy)

    def _del_policy(self, a: DelPolicy, rate_limited: bool) -> None:
        self._backend().del_policy(a.policy)

    def _log(self, a: Log, rate_limited: bool) -> None:
        if a.level == "debug":
            # a debug line nobody logs is never formatted (issue 18: Log.lazy);
            # no debugging at all: not even asked which class (``debugging``)
            if self.log.any_debug and self.log.debugging(a.debug_class, a.conn):
                self.log.log(a.message, "debug", conn=a.conn, serial=a.serial,
                             remote=a.remote, debug_class=a.debug_class,
                             rate_limited=rate_limited)
            if a.conn is not None:
                # the retransmission line is built eagerly (task_manager): made() has it
                text = a.made()
                m = _RETRANSMIT_RE.match(text) if text is not None else None
                if m is not None:
                    self._retransmission(a.conn, a.serial, int(m.group(1)))
            return
        level = a.level
        self.log.log(a.message, level, conn=a.conn, serial=a.serial, remote=a.remote,
                     debug_class=a.debug_class, rate_limited=rate_limited)
        if level == "error":
            self._last_error = a
            if a.traceback and a.conn is None:  # outside any IKE SA: no event follows
                self.crash.text(a.traceback, "engine: packet processing")
        if a.conn is not None and self.waiters.waiting:
            self.waiters.on_log(a.conn, escape(PlutoLogger.prefix(a.conn, a.serial, None)
                                               + a.message, LINE_LIMIT))

    def _retransmission(self, conn: str, serial: int | None, tries: int) -> None:
        """A request was sent again: say so, as Libreswan does, in the log and to ``ipsec up``.

        The engine doubles the wait after each send (RFC 7296 §2.1); ``tries``
        counts the sends, the first included: the next wait is
        ``retransmit-interval * 2**(tries - 1)``.
        """
        base = self.retransmit_interval(conn)
        if base is None:
            return
        state = "retransmission"
        if self.engine is not None and serial is not None:
            with contextlib.suppress(Exception):
                # the one SA, not status() of every SA: O(1) per retransmit (issue 18)
                ike = getattr(self.engine, "by_serial", {}).get(serial)
                if ike is not None:
                    state = f"{V2_STATE_NAMES.get(ike.state, ike.state)}: retransmission"
        msg = f"{state}; will wait {base * 2 ** max(tries - 1, 0):g} seconds for response"
        self.log.log(msg, conn=conn, serial=serial)
        self.waiters.on_log(conn, PlutoLogger.prefix(conn, serial, None) + msg)

    def _event(self, ev: ConnectionEvent, rate_limited: bool) -> None:
        if ev.kind == EventKind.CHILD_ESTABLISHED and ev.serial in self._updown_pending:
            self._held_events[ev.serial] = ev  # reported once its updown script succeeded
            return
        self._report(ev)

    def _report(self, ev: ConnectionEvent) -> None:
        self.counters.record_event(ev)
        if self.waiters.waiting:
            self.waiters.on_event(ev)
        if ev.kind == EventKind.INTERNAL_ERROR:
            self._engine_crash(ev)
        head = _AUDIT_HEAD.get(ev.kind)
        if head is not None:
            self.log.audit_event(f'{head}conn="{ev.conn}" serial={ev.serial} res=success')
        elif ev.kind in (EventKind.FAILED, EventKind.INTERNAL_ERROR):
            self.log.audit_event(f"op=start conn=\"{ev.conn}\" serial={ev.serial} res=failed")
        if self.statsbin:
            self._run_statsbin(ev)

    def _updown(self, a: Updown, rate_limited: bool) -> None:
        """Start the conn's updown script; the byte counts are read now, before DelSA."""
        child = a.child
        if not a.up and child.serial in self._updown_failed:
            self._updown_failed.discard(child.serial)
            return
        stack = self.backend.name if self.backend is not None else ""
        inb = outb = 0
        if not a.up and self.backend is not None:
            s_in = self.stats(child.me, child.spi_in, child.sa_type.lower())
            s_out = self.stats(child.peer, child.spi_out, child.sa_type.lower())
            inb = s_in.bytes if s_in is not None else 0
            outb = s_out.bytes if s_out is not None else 0
        # PLUTO_INTERFACE: the device of our address (Libreswan: its IKE interface's);
        # PLUTO_SA_REQID: the reqid the data plane gave the SA (XFRM: in our own range),
        # as a script matches it (nftables "ipsec in reqid N")
        ifname = next((i.ifname for i in self.sockets.interfaces if i.addr == child.me), "")
        kreqid = getattr(self.backend, "kernel_reqid", None)
        reqid = child.reqid
        if callable(kreqid):
            try:
                reqid = int(kreqid(child.reqid))
            except (BackendError, TypeError, ValueError):  # keep the engine's number
                reqid = child.reqid
        child = replace(child, stack=stack, inbytes=inb, outbytes=outb,
                        interface=ifname or child.interface, reqid=reqid)
        if a.up and child.serial:  # serial 0: routing an on-demand conn, no Child SA
            self._updown_pending[child.serial] = self._updown_pending.get(child.serial, 0) + 1
        if self.loop is None:
            return
        verbs = tuple(Verb(v) for v in a.verbs) or (UP_VERBS if a.up else DOWN_VERBS)
        task = self.loop.create_task(self._run_updown(a.script, a.up, child, verbs,
                                                      a.mobike))
        self.updown_tasks.add(task)
        task.add_done_callback(self.updown_tasks.discard)

    async def _run_updown(self, script: str, up: bool, child: UpdownChild,
                          verbs: tuple[Verb, ...], mobike: bool = False) -> None:
        lock = self._updown_locks.setdefault(child.conn, asyncio.Lock())
        failed = ""
        # else routing / unrouting an on-demand conn or a MOBIKE move: the script only
        sa = child.serial != 0 and not mobike
        async with lock:
            if up and sa and child.vti_iface:  # the VTI device first (daemon/vti.py)
                failed = await self.vti.up(child) or ""
            nflog_added = False
            if up and sa and child.nflog and not failed:  # the NFLOG rules (daemon/nflog.py)
                failed = await self.nflog.up(child) or ""
                nflog_added = not failed
            for verb in verbs if script and not failed else ():
                res = await run_updown(script, verb, child, timeout=self.updown_timeout)
                log_result(res, lambda m, lvl: self.log.log(
                    m, lvl, conn=child.conn, serial=child.serial or None), sa=sa)
                if not res.ok and verb in FATAL_VERBS:
                    failed = f"{res.verb} failed: {res.error}"
                    break
            if sa and child.nflog and (not up or (failed and nflog_added)):
                await self.nflog.down(child)
            if sa and child.vti_iface and (not up or failed):
                await self.vti.down(child)
        if not up:
            return
        if not sa:
            if failed:  # Libreswan 5.2: a failing route leaves the conn unrouted
                self.route_failed(child.conn)
            return
        left = self._updown_pending.get(child.serial, 1) - 1
        if failed:
            self._updown_failed.add(child.serial)
            self._updown_pending.pop(child.serial, None)
            self._held_events.pop(child.serial, None)
            now = self.now()
            self.run(lambda e: e.fail_child(child.serial, failed, now), conn=child.conn,
                     where="updown")
            return
        if child.serial not in self._updown_pending:
            return  # another pair of this Child SA failed already
        if left > 0:
            self._updown_pending[child.serial] = left
            return
        del self._updown_pending[child.serial]
        ev = self._held_events.pop(child.serial, None)
        if ev is not None:
            self._report(ev)

    def _engine_crash(self, ev: ConnectionEvent) -> None:
        """The engine caught an exception of its own: a crash report with its traceback.

        The traceback travels on the engine's error ``Log`` just before the event
        (its ``traceback`` field); without
        one the report holds the error line and the event's detail.
        """
        last = self._last_error
        tb = last.traceback if last is not None else ""
        if not tb:
            lines = [last.message] if last is not None else []
            if ev.detail:
                lines.append(ev.detail)
            tb = "\n".join(lines) or "internal error (the engine gave no traceback)"
        self.crash.text(tb, f'engine: "{ev.conn}" #{ev.serial}')

    def _run_statsbin(self, ev: ConnectionEvent) -> None:
        env = dict(os.environ, PLUTO_EVENT=str(ev.kind), PLUTO_CONNECTION=ev.conn,
                   PLUTO_SERIAL=str(ev.serial))
        try:
            proc = subprocess.Popen([self.statsbin or ""], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self.log.log(f'statsbin "{self.statsbin}" failed: {e.strerror}', "warning")
            return
        assert self.loop is not None
        self.spawn(self.loop.run_in_executor(None, proc.wait))

    # ------------------------------------------------------------- offloaded jobs
    def _compute(self, a: Compute, rate_limited: bool) -> None:
        """Run an offloaded key exchange on the helper pool; resume the engine on the loop.

        An ``io`` job (a CRL / OCSP fetch) runs on a small thread pool of its own, even
        without helpers: it blocks on the network and must never run on the loop, and
        peers whose fetches hang must not take the loop's default pool, where updown
        scripts are waited for (more fetches than ``FETCH_WORKERS`` wait their turn)."""
        if a.io and self.loop is not None:
            loop = self.loop
            if self._fetch_pool is None:
                self._fetch_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=FETCH_WORKERS, thread_name_prefix="pluto-fetch")
            fio = loop.run_in_executor(self._fetch_pool, a.job)
            fio.add_done_callback(lambda f: self._resume_io(a.token, f))
            return
        if self.helpers is None or self.loop is None:
            fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
            try:
                fut.set_result(a.job())
            except Exception as e:  # noqa: BLE001 - handed to the engine as the result
                fut.set_exception(e)
            self._resume(a.token, fut)
            return
        loop = self.loop
        fut = self.helpers.submit(a.job)

        def done(f: concurrent.futures.Future[Any]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: daemon exiting
                loop.call_soon_threadsafe(self._resume, a.token, f)

        fut.add_done_callback(done)

    def _resume_io(self, token: int, fut: asyncio.Future[Any]) -> None:
        """A fetch job finished (on the loop: an asyncio future's callback)."""
        if self.stopped or self.engine is None or fut.cancelled():
            return
        exc = fut.exception()
        result: object = exc if exc is not None else fut.result()
        now = self.now()
        self.run(lambda e: e.resume(token, result, now), rate_limited=True,
                 where="fetch result")

    def _resume(self, token: int, fut: concurrent.futures.Future[Any]) -> None:
        """A helper finished: feed its result (or its exception) to the engine."""
        if self.stopped or self.engine is None or fut.cancelled():
            return
        exc = fut.exception()
        result: object
        if exc is not None:
            self.log.log(f"crypto helper job failed: {type(exc).__name__}: {exc}", "warning",
                         rate_limited=True)
            result = exc
        else:
            result = fut.result()
        now = self.now()
        self.run(lambda e: e.resume(token, result, now), rate_limited=True,
                 where="crypto helper result")

    # ------------------------------------------------------------- timer
    def schedule_timer(self) -> None:
        """One ``call_at`` handle for the engine's next deadline."""
        if self.loop is None or self.engine is None or self.stopped:
            return
        try:
            when = self.engine.next_timer()
        except Exception as e:  # noqa: BLE001
            self.internal_error(e, "next_timer")
            when = None
        if self._timer is not None:
            if when is not None and self._timer_for <= when + 1e-6 and \
                    self._timer.when() <= when + 1e-6:
                # armed for this deadline or an earlier one (the oldest half-open SA
                # finished): kept, and ``_fire_timer`` re-arms if the deadline moved on;
                # no cancel and new handle per engine call
                return
            self._timer.cancel()
            self._timer = None
        if when is not None:
            # loop.time() is time.monotonic(), the engine's clock here; a deadline in
            # the past fires at once, but never in a tight loop
            self._timer_for = when
            self._timer = self.loop.call_at(max(when, self.loop.time() + 0.001),
                                            self._fire_timer)

    def _fire_timer(self) -> None:
        self._timer = None
        engine = self.engine
        if engine is not None and not self.stopped:
            try:
                when = engine.next_timer()
            except Exception:  # noqa: BLE001 - handle_timer below reports the engine's state
                when = self._timer_for
            if when is None or when > self._timer_for + 1e-6:
                self.schedule_timer()  # the deadline went away or moved later: not due
                return
        now = self.now()
        self.run(lambda e: e.handle_timer(now), where="timer")

    def stop(self) -> None:
        """Shutdown begins: no more timers, helper results or polls."""
        self.stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fetch_pool is not None:  # a hanging fetch's result is dropped anyway
            self._fetch_pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------- CPUs
    def _watch_cpus(self) -> None:
        """Every second, with ``--nhelpers=-1``: offload key exchanges to the helper
        threads only while the daemon may run on more than one CPU
        (``HelperPool.one_cpu``); the engine reads the setting at each exchange."""
        if self.stopped or self.loop is None or self.helpers is None:
            return
        settings = getattr(self.engine, "settings", None)
        if settings is not None and hasattr(settings, "offload_crypto"):
            with contextlib.suppress(Exception):  # a scripted engine's frozen settings
                settings.offload_crypto = not self.helpers.one_cpu()
        self.loop.call_later(CPU_CHECK_INTERVAL, self._watch_cpus)

    # ------------------------------------------------------------- SA counters
    def start_polling(self) -> None:
        """Every 10 s: feed SA counters to the engine (ipsec-max-bytes/-packets); every
        second, with ``--nhelpers=-1`` and helpers, the CPUs the daemon may run on."""
        assert self.loop is not None
        if self.helpers is not None and self.helpers.auto and self.helpers.count > 0:
            self._watch_cpus()

        def poll() -> None:
            if self.stopped:
                return
            self.poll_counters()
            assert self.loop is not None
            self.loop.call_later(POLL_INTERVAL, poll)

        self.loop.call_later(POLL_INTERVAL, poll)

    def poll_counters(self) -> None:
        """Feed the counters of every SA that carried traffic to the engine; the SAs
        that carried nothing cost the backend no lookup (``sa_traffic``; issue 18)."""
        index = self.sa_index
        if not index or self.backend is None:
            return
        try:
            for spi, nbytes, packets in self.backend.sa_traffic(index):
                if spi in index:  # not deleted by an earlier SA's feed
                    self._feed_counters(spi, nbytes, packets)
        except Exception as e:  # noqa: BLE001 - the poll goes on
            self.internal_error(e, "SA counter poll")

    def _feed_counters(self, spi: int, nbytes: int, packets: int) -> None:
        now = self.now()
        self.run(lambda e: e.sa_counters(spi, nbytes, packets, now))

    def on_expire_threadsafe(self, ev: SAExpire) -> None:
        """The backend's expire callback (may run on another thread)."""
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._on_expire, ev)

    def on_acquire_threadsafe(self, ev: SAAcquire) -> None:
        """The backend's acquire callback (any thread): bounded hand-off to the loop.

        At most ``ACQUIRE_QUEUE`` acquires wait for the loop; more are dropped and
        counted (an ACQUIRE storm costs bounded work, the daemon stays responsive).
        One drain is scheduled at a time.
        """
        with self._acq_lock:
            if len(self._acq) >= ACQUIRE_QUEUE:
                self.acquires_dropped += 1
                return
            self._acq.append(ev)
            if self._acq_scheduled:
                return
            self._acq_scheduled = True
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._drain_acquires)

    def _drain_acquires(self) -> None:
        with self._acq_lock:
            evs = list(self._acq)
            self._acq.clear()
            self._acq_scheduled = False
        now = self.now()
        for ev in evs:
            self.run(lambda e, ev=ev: e.acquire(ev, now), where="acquire",  # type: ignore[misc]
                     rate_limited=True)

    def _on_expire(self, ev: SAExpire) -> None:
        now = self.now()
        self.run(lambda e: e.sa_expired(ev, now))

    def _stats_by_spi(self, spi: int) -> SAStats | None:
        meta = self.sa_index.get(spi)
        return self.stats(meta[0], spi, meta[1]) if meta is not None else None

    def stats(self, dst: IPAddress, spi: int, proto: str) -> SAStats | None:
        assert self.backend is not None
        try:
            return self.backend.get_sa_stats(dst, spi, proto)
        except Exception:  # noqa: BLE001
            return None

    def merge_counters(self, ch: ChildSAStatus) -> None:
        """The backend's byte/packet counters into a Child SA's status (the larger wins)."""
        for spi, attr_b, attr_p in ((ch.spi_in, "in_bytes", "in_packets"),
                                    (ch.spi_out, "out_bytes", "out_packets")):
            meta = self.sa_index.get(spi)
            if meta is None:
                continue
            stats = self.stats(meta[0], spi, meta[1])
            if stats is not None:
                setattr(ch, attr_b, max(getattr(ch, attr_b), stats.bytes))
                setattr(ch, attr_p, max(getattr(ch, attr_p), stats.packets))

    def drop_counters(self, ch: dict[str, Any]) -> None:
        """The inbound SA's drops (replay, integrity, selector: RFC 4303 §3.4, RFC 4301 §5.2;
        malformed) into a Child SA's status dict."""
        spi = int(ch.get("spi_in", 0))
        meta = self.sa_index.get(spi)
        stats = self.stats(meta[0], spi, meta[1]) if meta is not None else None
        for k in DROP_KEYS:
            v = getattr(stats, k, None) if stats is not None else 0
            ch[k] = int(v) if isinstance(v, int) else None  # None: not counted per SA


_AUDIT_HEAD: dict[str, str] = {
    EventKind.IKE_ESTABLISHED: "op=start type=IKE_SA ",
    EventKind.CHILD_ESTABLISHED: "op=start type=IPSEC_SA ",
    EventKind.IKE_DELETED: "op=destroy type=IKE_SA ",
    EventKind.CHILD_DELETED: "op=destroy type=IPSEC_SA ",
}
"""The audit record's start for the events of a successful start or end of an SA."""


def _where(where: str, remote: Endpoint | None) -> str:
    """What an engine call was about, for its error and cpu-usage lines (formatted only
    when one is written: a datagram's call names its sender)."""
    if where:
        return where
    return f"packet from {remote}" if remote is not None else "engine call"


def _fail_child(engine: EngineAPI, *, serial: int, why: str, now: float) -> list[Action]:
    return engine.fail_child(serial, why, now)


def _belongs_to_failed(a: Action, failed: dict[int, str]) -> bool:
    """An action reporting or continuing a Child SA whose kernel install failed."""
    if isinstance(a, Log):
        return a.serial in failed and a.message.startswith("established Child SA")
    if isinstance(a, ConnectionEvent):
        return a.serial in failed and a.kind == EventKind.CHILD_ESTABLISHED
    if isinstance(a, Updown):
        return a.up and a.child.serial in failed
    return False


def _conn_of(a: Action) -> str | None:
    """The connection an action belongs to, when it says."""
    if isinstance(a, AddSA):
        return a.sa.conn_name or None
    if isinstance(a, DelSA):
        return a.conn_name or None
    if isinstance(a, (Log, ConnectionEvent)):
        return a.conn
    return None


HANDLERS: dict[type[Any], Handler] = {
    SendPacket: EngineDriver._send_packet,
    SendKeepalive: EngineDriver._send_keepalive,
    AddSA: EngineDriver._add_sa,
    DelSA: EngineDriver._del_sa,
    MoveSA: EngineDriver._move_sa,
    AddPolicy: EngineDriver._add_policy,
    DelPolicy: EngineDriver._del_policy,
    Log: EngineDriver._log,
    ConnectionEvent: EngineDriver._event,
    Compute: EngineDriver._compute,
    Updown: EngineDriver._updown,
}
"""Action type -> the driver method that carries it out."""
