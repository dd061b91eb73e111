"""The daemon proper: where the engine, a kernel backend, sockets and the clock meet.

One asyncio loop carries everything (DESIGN.md, layer ``daemon/``):

* UDP sockets on the IKE port (500) and the NAT-T port (4500) of every local
  address, or only ``--listen``; on the NAT-T port the 4-byte non-ESP marker is
  stripped on receive and added on send (RFC 3948 §2.2), a lone 0xFF byte is a
  NAT keepalive (RFC 3948 §2.3) and anything else is ESP for the backend;
* the engine's timer (``Engine.next_timer``) as one ``loop.call_at`` handle;
* the actions the engine returns, carried out in order;
* the control socket (``control/``) that whack talks to.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import dataclasses
import glob
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pypluto import __version__
from pypluto.config.model import Connection, IPAddress
from pypluto.config.parser import ConfigFile, inputs_signature
from pypluto.control import format as fmt
from pypluto.control.protocol import (
    MAX_FRAME,
    RC_BADWHACKMESSAGE,
    RC_DEAF,
    RC_FATAL,
    RC_INITSHUNT,
    RC_INTERNAL_ERROR,
    RC_NOPEERIP,
    RC_NORETRANSMISSION,
    RC_ORIENT,
    RC_ROUTE,
    RC_SUCCESS,
    RC_UNKNOWN_NAME,
    RC_WHACK_PROBLEM,
    ProtocolError,
    Request,
    decode_body,
    encode_frame,
    output_frame,
    parse_request,
    result_frame,
)
from pypluto.daemon.helpers import HelperPool, leak_report, sd_notify, write_crash_report
from pypluto.daemon.interfaces import LocalAddress, local_addresses
from pypluto.daemon.logger import PlutoLogger, debug_help, parse_debug_specs
from pypluto.daemon.options import PlutoOptions
from pypluto.ike.actions import (
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
    SendKeepalive,
    SendPacket,
)
from pypluto.kernel.base import BackendError, KernelBackend, SAExpire

NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"


class StartupError(Exception):
    """Start-up failed; the message is logged and pluto exits 1."""


# --- secrets -------------------------------------------------------------------


class EmptySecrets:
    """No secrets loaded (yet)."""

    secrets: list[Any] = []

    def psk_for(self, local: Any, remote: Any, local_addr: Any, remote_addr: Any) -> bytes | None:
        return None


class SecretsProxy:
    """What the engine holds: forwards to the current store, swapped by --rereadsecrets."""

    def __init__(self) -> None:
        self.store: Any = EmptySecrets()
        self.files: list[str] = []

    def psk_for(self, local: Any, remote: Any, local_addr: Any, remote_addr: Any) -> bytes | None:
        return self.store.psk_for(local, remote, local_addr, remote_addr)

    def __getattr__(self, name: str) -> Any:  # other lookups the engine may add
        return getattr(self.store, name)

    def records(self) -> list[Any]:
        for attr in ("secrets", "records", "entries"):
            v = getattr(self.store, attr, None)
            if isinstance(v, list):
                return v
        return []


# --- sockets -------------------------------------------------------------------


@dataclass
class IKEInterface:
    ifname: str
    addr: IPAddress
    port: int
    sock: socket.socket
    natt: bool
    backend_reads: bool = False

    @property
    def local(self) -> Endpoint:
        return Endpoint(self.addr, self.port)


@dataclass
class Waiter:
    """A whack waiting for the outcome of --initiate (or --down)."""

    conn: str
    emit: Callable[[str], None]
    future: asyncio.Future[int]
    want: set[str] = field(default_factory=lambda: {"child-established"})
    seen: list[str] = field(default_factory=list)


class Daemon:
    """One running pluto."""

    def __init__(self, opts: PlutoOptions, logger: PlutoLogger,
                 engine_factory: Callable[..., Any] | None = None) -> None:
        self.opts = opts
        self._engine_factory = engine_factory
        self.log = logger
        self.loop: asyncio.AbstractEventLoop | None = None
        self.engine: Any = None
        self.backend: KernelBackend | None = None
        self.secrets = SecretsProxy()
        self.conns: dict[str, Connection] = {}
        self.unoriented: dict[str, Connection] = {}
        self.routed: set[str] = set()
        self.interfaces: list[IKEInterface] = []
        self._parked: dict[tuple[IPAddress, int], IKEInterface] = {}
        self.listening = False
        self.local_addrs: set[IPAddress] = set()
        self.helpers: HelperPool | None = None
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._waiters: list[Waiter] = []
        self._stop: asyncio.Future[int] | None = None
        self._ctl_server: asyncio.AbstractServer | None = None
        self._sa_index: dict[int, tuple[IPAddress, str, str]] = {}  # spi -> (dst, proto, dir)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._shutting_down = False
        self._rl_flush = False
        self.crash_reports = 0
        self._add_cache: dict[str, tuple[tuple[object, ...], ConfigFile]] = {}  # ipsec add
        self.exit_code = 0

    # ------------------------------------------------------------------ clock
    def now(self) -> float:
        return time.monotonic()

    # ---------------------------------------------------------------- startup
    async def start(self, ctl_sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = self.loop.create_future()
        self.loop.set_exception_handler(self._loop_exception)
        if self.opts.efence_protect:
            self.loop.set_debug(True)
        self.log.log(f"Starting Pluto (pypluto Version {__version__}) pid:{os.getpid()}")
        if self.opts.config:
            self.log.log(f'using config file "{self.opts.config}"')
        self.log.log(f"core dump dir: {self.opts.coredir}")
        self.log.log(f"secrets file: {self.opts.secretsfile}")
        self.log.log(f"ipsecdir: {self.opts.ipsecdir}; nssdir: {self.opts.nssdir}")
        if self.opts.leak_detective:
            self.log.log("leak-detective enabled")
        if self.opts.efence_protect:
            self.log.log("efence-protect enabled (fault handler and asyncio debug mode)")
        if self.opts.crl_strict or self.opts.crlcheckinterval:
            self.log.log(
                f"crl-strict={'yes' if self.opts.crl_strict else 'no'}, "
                f"crlcheckinterval={self.opts.crlcheckinterval:g}s: kept, enforced once "
                "certificate authentication exists"
            )
        if self.opts.seedbits:
            self._seed(self.opts.seedbits)
        self.helpers = HelperPool(self.opts.nhelpers)
        self.log.log(
            f"{self.helpers.count} crypto helpers ({self.helpers.kind})"
            if self.helpers.count
            else "no crypto helpers will be started; all cryptographic operations "
            "will be done inline"
        )
        self.backend = self._make_backend()
        with contextlib.suppress(Exception):
            self.backend.set_expire_callback(self._on_expire_threadsafe)
        with contextlib.suppress(Exception):
            self.backend.flush_own()  # leftovers of an earlier crashed run
        self.engine = self._make_engine()
        self._load_secrets()
        self._scan_interfaces(initial=True)
        self._load_conns()
        self._ctl_server = await asyncio.start_unix_server(self._handle_client, sock=ctl_sock)
        for sig, handler in (
            (signal.SIGTERM, self._on_sigterm),
            (signal.SIGINT, self._on_sigterm),
            (signal.SIGHUP, self._on_sighup),
        ):
            self.loop.add_signal_handler(sig, handler)
        self._schedule_timer()
        self._start_polling()
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=Pluto initialized")
        self.log.log("Pluto initialized")
        self._auto_start()

    def _seed(self, bits: int) -> None:
        """--seedbits: read bits from /dev/random and mix them into the kernel pool."""
        n = (bits + 7) // 8
        try:
            with open("/dev/random", "rb") as r:
                seed = r.read(n)
            with contextlib.suppress(OSError), open("/dev/random", "wb") as w:
                w.write(seed)
            self.log.log(f"seeded {len(seed)} bytes into the RNG")
        except OSError as e:
            raise StartupError(f"--seedbits: cannot read /dev/random: {e.strerror}") from None

    def _make_backend(self) -> KernelBackend:
        """The backend of --use-xfrm / --use-userspace / --use-none, or the probe's pick."""
        choice = self.opts.backend
        try:
            from pypluto.kernel.probe import choose_backend

            picked = choose_backend(choice)
        except ImportError as e:
            raise StartupError(f"kernel backend {choice or '(probe)'} unavailable: {e}") from None
        except (BackendError, OSError) as e:
            raise StartupError(f"kernel backend {choice or '(probe)'}: {e}") from None
        backend, message = picked
        self.log.log(message)
        self.log.log(f"using kernel interface: {backend.name}")
        return backend

    def _make_engine(self) -> Any:
        from pypluto.ike.engine import Engine
        from pypluto.ike.settings import EngineSettings

        setup = self.opts.setup
        overrides: dict[str, Any] = {
            "uniqueids": self.opts.uniqueids,
            "force_busy": self.opts.force_busy,
            "keep_alive": float(self.opts.keep_alive),
            "virtual_private": self.opts.virtual_private,
            "listen_port": self.opts.ikeport,
            "natt_port": self.opts.natikeport,
            # --nhelpers > 0: the engine hands key exchanges out as Compute actions
            "offload_crypto": self.helpers is not None and self.helpers.count > 0,
        }
        if setup is not None:
            settings = EngineSettings.from_setup(setup, **overrides)  # type: ignore[arg-type]
        else:
            settings = EngineSettings(**overrides)
        if self.opts.vendorid:
            vid = self.opts.vendorid.encode()
            if vid not in settings.vendorids:
                settings.vendorids.append(vid)
        for extra, value in (("helpers", self.helpers), ("secctx_attr_type",
                                                          self.opts.secctx_attr_type)):
            if hasattr(settings, extra):
                setattr(settings, extra, value)
        addrs = {a.addr for a in local_addresses()}
        factory = self._engine_factory or Engine
        return factory(settings, self.secrets, local_addrs=addrs)

    # ------------------------------------------------------------- secrets
    def _load_secrets(self) -> int:
        """(Re)load --secretsfile (a glob); returns the number of files read."""
        pattern = self.opts.secretsfile
        files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        files = [f for f in files if os.path.exists(f)]
        self.log.log("forgetting secrets")
        if not files:
            self.log.log(f'no secrets filename matched "{pattern}"', "warning")
            self.secrets.store, self.secrets.files = EmptySecrets(), []
            return 0
        try:
            from pypluto.config.secrets import load_secrets
        except ImportError:
            self.log.log("secrets parser unavailable in this build", "error")
            return 0
        for f in files:
            self.log.log(f'loading secrets from "{f}"')
        try:
            store = load_secrets(pattern)
        except Exception as e:  # noqa: BLE001 - the parser names file:line
            self.log.log(f"{e}", "error")
            return 0
        if hasattr(store, "files") and store.files:
            files = list(store.files)
        for d in getattr(store, "diagnostics", []) or []:
            self.log.log(str(d), "error" if getattr(d, "severity", "") == "error" else "warning")
        self.secrets.store, self.secrets.files = store, files
        for rec in self.secrets.records():
            kind = getattr(rec, "kind", "PSK")
            ids = " ".join(str(i) for i in getattr(rec, "indices", [])) or "%any"
            self.log.log(f"loaded {kind} secret for {ids}", "debug")
        return len(files)

    # ------------------------------------------------------------- connections
    def _config_conns(self) -> list[Connection]:
        result = self.opts.config_result
        if result is None:
            return []
        conns = getattr(result, "connections", None)
        if conns is None:
            conns = getattr(result, "conns", None)
        if isinstance(conns, dict):
            return list(conns.values())
        return list(conns or [])

    def _load_conns(self) -> None:
        for d in getattr(self.opts.config_result, "diagnostics", []) or []:
            self.log.log(str(d), "warning" if getattr(d, "severity", "") == "warning"
                         else "error")
        for conn in self._config_conns():
            if conn.auto in ("add", "start", "up", "route", "ondemand", "keep"):
                self.add_conn(conn)
                if conn.auto in ("route", "ondemand"):
                    self.log.log(
                        f"auto={conn.auto}: loaded; on-demand trapping is not implemented "
                        "yet, initiate it with whack --initiate",
                        conn=conn.name,
                    )

    def _auto_start(self) -> None:
        for conn in list(self.conns.values()):
            if conn.auto in ("start", "up"):
                self.initiate(conn.name)

    def add_conn(self, conn: Connection, emit: Callable[[str], None] | None = None) -> int:
        """Orient and load one connection; returns a whack rc.

        A connection neither of whose ends is a local address is kept *unoriented*
        (as pluto does) and loaded once ``--listen`` finds one of its addresses.
        """
        if conn.name in self.conns:
            self._delete_conn(conn.name)
        self.unoriented.pop(conn.name, None)
        if "uniqueids" not in conn.raw:  # a config setup value: the command line wins
            conn.uniqueids = self.opts.uniqueids
        if not conn.orient(self.local_addrs):
            self.unoriented[conn.name] = conn
            msg = ("neither end is a local address: connection kept unoriented until "
                   '"ipsec listen" finds one')
            self.log.log(msg, "warning", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {msg}')
            return RC_SUCCESS
        self.conns[conn.name] = conn
        self._run(lambda: self.engine.add_connection(conn), where=f"adding {conn.name}")
        version = "IKEv1" if conn.keyexchange == "ikev1" else "IKEv2"
        if emit:  # the engine logs the same line itself
            emit(f'"{conn.name}": added {version} connection')
        return RC_SUCCESS

    def _orient_pending(self) -> None:
        """After an interface rescan: load the unoriented conns that now orient."""
        for name, conn in list(self.unoriented.items()):
            if conn.orient(self.local_addrs):
                self.log.log("connection oriented after --listen", conn=name)
                self.add_conn(conn)
                if conn.auto in ("start", "up"):
                    self.initiate(name)

    def _delete_conn(self, name: str) -> None:
        if self.unoriented.pop(name, None) is not None:
            return
        self._run(lambda: self.engine.delete_connection(name, self.now()),
                  where=f"deleting {name}")
        self.conns.pop(name, None)
        self.routed.discard(name)

    def initiate(self, name: str) -> int:
        if name not in self.conns:
            return RC_UNKNOWN_NAME
        if not self.listening:
            return RC_DEAF
        self.log.log("initiating connection", conn=name, debug_class="base", level="debug")
        self._run(lambda: self.engine.initiate(name, self.now()), where=f"initiating {name}")
        return RC_SUCCESS

    # ------------------------------------------------------------- interfaces
    def _scan_interfaces(self, initial: bool = False) -> None:
        try:
            found = local_addresses()
        except OSError as e:
            self.log.log(f"cannot list local addresses: {e}", "error")
            found = []
        self.local_addrs = {a.addr for a in found}
        if self.engine is not None and hasattr(self.engine, "local_addrs"):
            with contextlib.suppress(Exception):
                self.engine.local_addrs = set(self.local_addrs)
        wanted: list[LocalAddress] = []
        if self.opts.listen:
            target = ipaddress.ip_address(self.opts.listen)
            wanted = [a for a in found if a.addr == target]
            if not wanted:
                self.log.log(f"--listen {target}: not a local address; not listening", "error")
        else:
            wanted = [a for a in found if not a.link_local]
        have = {(i.addr, i.port) for i in self.interfaces}
        want_keys = set()
        for la in wanted:
            for port, natt in ((self.opts.ikeport, False), (self.opts.natikeport, True)):
                want_keys.add((la.addr, port))
                if (la.addr, port) in have:
                    continue
                iface = self._open_socket(la, port, natt)
                if iface is not None:
                    self.interfaces.append(iface)
                    self.log.log(f"adding UDP interface {la.ifname} {Endpoint(la.addr, port)}")
        for iface in list(self.interfaces):
            if (iface.addr, iface.port) not in want_keys:
                self.log.log(f"shutting down interface {iface.ifname} {iface.local}")
                self._close_iface(iface)
        self.listening = bool(self.interfaces)
        if self.listening:
            self.log.log("listening for IKE messages")

    def _open_socket(self, la: LocalAddress, port: int, natt: bool) -> IKEInterface | None:
        parked = self._parked.pop((la.addr, port), None)
        if parked is not None:  # still read by the backend: take it back
            return parked
        fam = socket.AF_INET if la.addr.version == 4 else socket.AF_INET6
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setblocking(False)
            s.bind((str(la.addr), port))
        except OSError as e:
            self.log.log(f"cannot bind UDP interface {la.ifname} {Endpoint(la.addr, port)}: "
                         f"{e.strerror}", "error")
            s.close()
            return None
        iface = IKEInterface(la.ifname, la.addr, port, s, natt)
        assert self.loop is not None and self.backend is not None
        try:
            self.backend.prepare_ike_socket(s)
        except Exception as e:  # noqa: BLE001
            self.log.log(f"backend could not prepare {iface.local}: {e}", "warning")
        if natt:
            local = (str(la.addr), port)

            def deliver(data: bytes, remote: tuple[str, int]) -> None:
                self._deliver_ike_threadsafe(data, local, remote)

            try:
                iface.backend_reads = bool(self.backend.attach_nat_socket(s, local, deliver))
            except Exception as e:  # noqa: BLE001 - a backend failure must not kill us
                self.log.log(f"backend could not attach {local}: {e}", "error")
        if not iface.backend_reads:
            self.loop.add_reader(s.fileno(), self._readable, iface)
        return iface

    def _close_iface(self, iface: IKEInterface, final: bool = False) -> None:
        with contextlib.suppress(ValueError):
            self.interfaces.remove(iface)
        if iface.backend_reads and not final:
            # The backend reads (and sends ESP on) this socket; closing it under its
            # thread would break the data plane.  Park it: IKE from it is dropped.
            self._parked[(iface.addr, iface.port)] = iface
            return
        if self.loop is not None and not iface.backend_reads:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(iface.sock.fileno())
        iface.sock.close()

    def unlisten(self) -> None:
        for iface in list(self.interfaces):
            self.log.log(f"shutting down interface {iface.ifname} {iface.local}")
            self._close_iface(iface)
        self.listening = False

    # ------------------------------------------------------------- datagrams
    def _readable(self, iface: IKEInterface) -> None:
        for _ in range(64):  # bounded batch per wake-up
            try:
                data, addr = iface.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.log.log(f"recvfrom on {iface.local} failed: {e.strerror}", "debug")
                return
            self._datagram(iface, data, addr)

    def _datagram(self, iface: IKEInterface, data: bytes, addr: tuple[Any, ...]) -> None:
        remote = Endpoint(ipaddress.ip_address(addr[0].split("%")[0]), addr[1])
        if iface.natt:
            if data == KEEPALIVE:
                self.log.log(f"NAT-T keepalive from {remote}", "debug", debug_class="tmi")
                return
            if len(data) < 4:
                self.log.log(f"dropping {len(data)}-byte runt on {iface.local}", "debug",
                             remote=remote)
                return
            if data[:4] != NON_ESP_MARKER:
                assert self.backend is not None
                try:
                    self.backend.handle_esp(data, (str(iface.addr), iface.port),
                                            (str(remote.addr), remote.port))
                except Exception as e:  # noqa: BLE001
                    self.log.log(f"ESP packet dropped: {e}", "debug", remote=remote)
                return
            data = data[4:]
        self._ike_in(data, iface.local, remote)

    def _deliver_ike_threadsafe(self, data: bytes, local: tuple[str, int],
                                remote: tuple[str, int]) -> None:
        if self.loop is None or self.loop.is_closed():
            return
        loc = Endpoint(ipaddress.ip_address(local[0]), local[1])
        rem = Endpoint(ipaddress.ip_address(remote[0].split("%")[0]), remote[1])
        self.loop.call_soon_threadsafe(self._ike_in, bytes(data), loc, rem)

    def _ike_in(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        if self._shutting_down or (local.addr, local.port) in self._parked:
            return
        self._run(lambda: self.engine.receive(data, local, remote, self.now()),
                  rate_limited=True, where=f"packet from {remote}")

    def _send(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        natt = local.port != self.opts.ikeport
        iface = self._find_iface(local, natt)
        if iface is None:
            self.log.log(f"no interface for {local} to send {len(data)} bytes to {remote}",
                         "warning", remote=remote, rate_limited=True)
            return
        payload = (NON_ESP_MARKER + data) if natt and data != KEEPALIVE else data
        try:
            iface.sock.sendto(payload, (str(remote.addr), remote.port))
        except OSError as e:
            self.log.log(f"sendto {remote} failed: {e.strerror}", "warning",
                         remote=remote, rate_limited=True)

    def _find_iface(self, local: Endpoint, natt: bool) -> IKEInterface | None:
        same_fam = None
        for i in self.interfaces:
            if i.addr == local.addr and i.port == local.port:
                return i
            if i.natt == natt and i.addr.version == local.addr.version and same_fam is None:
                if not i.addr.is_loopback or local.addr.is_loopback:
                    same_fam = i
        return same_fam

    # ------------------------------------------------------------- engine calls
    def _run(self, call: Callable[[], list[Any]], *, rate_limited: bool = False,
             where: str = "") -> None:
        """Call the engine, execute its actions, reschedule its timer."""
        t0 = time.process_time()
        try:
            actions = call()
        except Exception as e:  # noqa: BLE001 - never let one packet kill the daemon
            self._internal_error(e, where or "engine call")
            actions = []
        if self.log.debugging("cpu-usage"):
            ms = (time.process_time() - t0) * 1000
            self.log.log(f"cpu-usage: {where or 'engine call'} took {ms:.3f} ms", "debug",
                         debug_class="cpu-usage")
        self._execute(actions or [], rate_limited=rate_limited)
        self._schedule_timer()
        if rate_limited and not self._rl_flush and self.loop is not None and \
                self.log.limiter.count > self.log.limiter.limit:
            self._rl_flush = True
            self.loop.call_later(self.log.limiter.window, self._flush_rate_limit)

    def _flush_rate_limit(self) -> None:
        """The summary line of a flood, even when the flood stopped."""
        self._rl_flush = False
        if self.log.flush_rate_limit() and self.loop is not None:
            self._rl_flush = True
            self.loop.call_later(self.log.limiter.window, self._flush_rate_limit)

    def _internal_error(self, e: BaseException, where: str) -> None:
        self.log.log(f"internal error in {where}: {type(e).__name__}: {e}", "error",
                     rate_limited=True)
        if self.crash_reports < 10:
            self.crash_reports += 1
            path = write_crash_report(self.opts.coredir, e, where)
            if path:
                self.log.log(f"crash report written to {path}", "error", rate_limited=True)

    def _execute(self, actions: list[Any], rate_limited: bool = False) -> None:
        assert self.backend is not None
        # a Child SA whose SA or policy the backend refused is not established: its
        # "established" log line and event become a failure, and the engine deletes it
        failed: dict[int, str] = {}  # serial -> the backend's reason
        serial_of_reqid: dict[int, int] = {}
        doomed: list[AddSA] = []
        for a in actions:
            if isinstance(a, AddSA):
                serial_of_reqid[a.sa.reqid] = a.sa.serial
            if isinstance(a, Log) and a.serial in failed \
                    and a.message.startswith("established Child SA"):
                continue
            if isinstance(a, ConnectionEvent) and a.serial in failed \
                    and a.kind == EventKind.CHILD_ESTABLISHED:
                a = ConnectionEvent(EventKind.FAILED, a.conn, a.serial,
                                    f"Child SA not installed: {failed[a.serial]}",
                                    FailReason.LOCAL)
            try:
                if isinstance(a, SendPacket):
                    self._send(a.data, a.local, a.remote)
                elif isinstance(a, SendKeepalive):
                    self._send(KEEPALIVE, a.local, a.remote)
                elif isinstance(a, Log):
                    self._on_log(a, rate_limited)
                elif isinstance(a, AddSA):
                    self._sa_index[a.sa.spi] = (a.sa.dst, a.sa.protocol, a.sa.direction)
                    self.log.log(f"add_sa {a.sa.direction} {a.sa.protocol}.{a.sa.spi:08x}"
                                 f"@{a.sa.dst}", "debug", conn=a.sa.conn_name or None,
                                 serial=a.sa.serial, debug_class="routing")
                    self.backend.add_sa(a.sa)
                elif isinstance(a, DelSA):
                    self._sa_index.pop(a.spi, None)
                    self.backend.del_sa(a.dst, a.spi, a.protocol)
                elif isinstance(a, AddPolicy):
                    self.backend.add_policy(a.policy)
                elif isinstance(a, DelPolicy):
                    self.backend.del_policy(a.policy)
                elif isinstance(a, ConnectionEvent):
                    self._on_event(a)
                elif isinstance(a, Compute):
                    self._compute(a)
            except BackendError as e:
                self.log.log(f"kernel: {type(a).__name__} failed: {e}", "error",
                             conn=getattr(getattr(a, "sa", None), "conn_name", None) or None)
                serial = a.sa.serial if isinstance(a, AddSA) else \
                    serial_of_reqid.get(a.policy.reqid, 0) if isinstance(a, AddPolicy) else 0
                if serial and serial not in failed:
                    failed[serial] = str(e)
                    doomed += [x for x in actions if isinstance(x, AddSA)
                               and x.sa.serial == serial and x.sa.direction == "in"]
            except Exception as e:  # noqa: BLE001
                self._internal_error(e, f"executing {type(a).__name__}")
        for d in doomed:  # the engine deletes the Child SA (and tells the peer)
            ev = SAExpire(d.sa.dst, d.sa.spi, d.sa.protocol, True,
                          "install-failed")  # type: ignore[arg-type]
            self._run(lambda ev=ev: self.engine.sa_expired(ev, self.now()),  # type: ignore[misc]
                      where="deleting a Child SA the backend refused")

    def _compute(self, a: Compute) -> None:
        """Run an offloaded key exchange on the helper pool; resume the engine on the loop."""
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

    def _resume(self, token: int, fut: concurrent.futures.Future[Any]) -> None:
        """A helper finished: feed its result (or its exception) to the engine."""
        if self._shutting_down or self.engine is None or fut.cancelled():
            return
        exc = fut.exception()
        result: object
        if exc is not None:
            self.log.log(f"crypto helper job failed: {type(exc).__name__}: {exc}", "warning",
                         rate_limited=True)
            result = exc
        else:
            result = fut.result()
        self._run(lambda: self.engine.resume(token, result, self.now()),
                  rate_limited=True, where="crypto helper result")

    def _on_log(self, a: Log, rate_limited: bool) -> None:
        self.log.log(a.message, a.level, conn=a.conn, serial=a.serial, remote=a.remote,
                     debug_class=a.debug_class, rate_limited=rate_limited)
        if a.conn is not None and a.level != "debug":
            line = PlutoLogger.prefix(a.conn, a.serial, None) + a.message
            for w in self._waiters:
                if w.conn == a.conn and not w.future.done():
                    w.seen.append(line)
                    w.emit(line)

    def _on_event(self, ev: ConnectionEvent) -> None:
        kind_rc = {
            "child-established": RC_SUCCESS,
            "ike-established": RC_SUCCESS,
            "failed": RC_FATAL,
            "peer-dead": RC_NORETRANSMISSION,
            "ike-deleted": RC_SUCCESS,
            "child-deleted": RC_SUCCESS,
        }
        for w in list(self._waiters):
            if w.conn != ev.conn or w.future.done():
                continue
            if ev.kind in w.want:
                w.future.set_result(RC_SUCCESS)
            elif ev.kind in ("failed", "peer-dead"):
                rc = kind_rc[ev.kind]
                if "retransmi" in ev.detail or "timeout" in ev.detail:
                    rc = RC_NORETRANSMISSION
                if ev.detail and not any(ev.detail in ln for ln in w.seen):
                    w.emit(f'"{ev.conn}" #{ev.serial}: {ev.detail}')
                w.future.set_result(rc)
        if ev.kind in ("ike-established", "child-established", "ike-deleted", "child-deleted"):
            op = "start" if ev.kind.endswith("established") else "destroy"
            sa = "IKE_SA" if ev.kind.startswith("ike") else "IPSEC_SA"
            self.log.audit_event(
                f"op={op} type={sa} conn=\"{ev.conn}\" serial={ev.serial} res=success"
            )
        elif ev.kind == "failed":
            self.log.audit_event(f"op=start conn=\"{ev.conn}\" serial={ev.serial} res=failed")
        if self.opts.statsbin:
            self._run_statsbin(ev)

    def _run_statsbin(self, ev: ConnectionEvent) -> None:
        env = dict(os.environ, PLUTO_EVENT=ev.kind, PLUTO_CONNECTION=ev.conn,
                   PLUTO_SERIAL=str(ev.serial))
        try:
            proc = subprocess.Popen([self.opts.statsbin or ""], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as e:
            self.log.log(f'statsbin "{self.opts.statsbin}" failed: {e.strerror}', "warning")
            return
        assert self.loop is not None
        self._spawn(self.loop.run_in_executor(None, proc.wait))

    def _spawn(self, aw: Any) -> None:
        t = asyncio.ensure_future(aw)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------- timers
    def _schedule_timer(self) -> None:
        if self.loop is None or self.engine is None or self._shutting_down:
            return
        try:
            when = self.engine.next_timer()
        except Exception as e:  # noqa: BLE001
            self._internal_error(e, "next_timer")
            when = None
        if self._timer is not None:
            if when is not None and abs(self._timer.when() - when) < 1e-6:
                return  # already scheduled for that deadline
            self._timer.cancel()
            self._timer = None
        if when is not None:
            # loop.time() is time.monotonic(), the engine's clock here; a deadline in
            # the past fires at once, but never in a tight loop
            self._timer = self.loop.call_at(max(when, self.loop.time() + 0.001),
                                            self._fire_timer)

    def _fire_timer(self) -> None:
        self._timer = None
        self._run(lambda: self.engine.handle_timer(self.now()), where="timer")

    def _start_polling(self) -> None:
        """Every 10 s: feed SA counters to the engine (ipsec-max-bytes/-packets)."""
        assert self.loop is not None

        def poll() -> None:
            if self._shutting_down:
                return
            for spi, (dst, proto, _d) in list(self._sa_index.items()):
                st = self._stats(dst, spi, proto)
                if st is not None and (st.bytes or st.packets):
                    self._feed_counters(spi, st.bytes, st.packets)
            assert self.loop is not None
            self.loop.call_later(10.0, poll)

        self.loop.call_later(10.0, poll)

    def _feed_counters(self, spi: int, nbytes: int, packets: int) -> None:
        self._run(lambda: self.engine.sa_counters(spi, nbytes, packets, self.now()))

    def _on_expire_threadsafe(self, ev: Any) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._on_expire, ev)

    def _on_expire(self, ev: Any) -> None:
        handler = getattr(self.engine, "sa_expired", None)
        if handler is not None:
            self._run(lambda: handler(ev, self.now()))
            return
        st = self._stats(ev.dst, ev.spi, ev.protocol)
        if st is not None:
            self._run(lambda: self.engine.sa_counters(ev.spi, st.bytes, st.packets, self.now()))

    def _stats(self, dst: Any, spi: int, proto: str) -> Any:
        assert self.backend is not None
        try:
            return self.backend.get_sa_stats(dst, spi, proto)
        except Exception:  # noqa: BLE001
            return None

    # ------------------------------------------------------------- signals
    def _on_sigterm(self) -> None:
        self.log.log("SIGTERM received: shutting down")
        self._spawn(self.shutdown())

    def _on_sighup(self) -> None:
        self.log.log('Pluto ignores SIGHUP -- perhaps you want "ipsec listen" '
                     '("whack --listen") to rescan the interfaces')

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        if exc is None:
            self.log.log(f"event loop: {ctx.get('message')}", "error")
            return
        path = write_crash_report(self.opts.coredir, exc, str(ctx.get("message", "")))
        self.log.log(f"unhandled error: {type(exc).__name__}: {exc}", "error")
        if path:
            self.log.log(f"crash report written to {path}", "error")
        self.exit_code = 1
        self._spawn(self.shutdown())

    # ------------------------------------------------------------- shutdown
    async def shutdown(self, finish: bool = True) -> None:
        if self._shutting_down:
            return
        self._shutting_down = True
        sd_notify("STOPPING=1")
        self.log.log("shutting down")
        if self._timer is not None:
            self._timer.cancel()
        if self.engine is not None:
            try:
                actions = self.engine.shutdown(self.now())
            except Exception as e:  # noqa: BLE001
                self._internal_error(e, "engine shutdown")
                actions = []
            self._execute(actions or [])
        for w in self._waiters:
            if not w.future.done():
                w.future.set_result(RC_FATAL)
        if self.backend is not None:
            for step in (self.backend.flush_own, self.backend.close):
                try:
                    step()
                except Exception as e:  # noqa: BLE001
                    self.log.log(f"kernel backend {step.__name__}: {e}", "error")
        for iface in list(self.interfaces) + list(self._parked.values()):
            self._close_iface(iface, final=True)
        self._parked.clear()
        if self.helpers is not None:
            self.helpers.close()
        if self._ctl_server is not None:
            self._ctl_server.close()
        if self.opts.leak_detective:
            for line in leak_report():
                self.log.log(line)
        if finish:
            self._finish()

    def _finish(self) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(self.exit_code)

    async def wait(self) -> int:
        assert self._stop is not None
        return await self._stop

    # ------------------------------------------------------------- control
    async def _handle_client(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        def send(obj: dict[str, Any]) -> None:
            if writer.is_closing():
                return
            try:
                frame = encode_frame(obj)
            except (ProtocolError, TypeError, ValueError) as e:  # too big / not JSON-able
                frame = encode_frame(result_frame(RC_INTERNAL_ERROR,
                                                  error=f"cannot send the answer: {e}"))
            writer.write(frame)

        try:
            try:
                hdr = await asyncio.wait_for(reader.readexactly(4), 30)
                (n,) = struct.unpack("!I", hdr)
                if n > MAX_FRAME:
                    raise ProtocolError(f"request of {n} bytes is too large")
                body = await asyncio.wait_for(reader.readexactly(n), 30)
                req = parse_request(decode_body(body))
            except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                return
            except ProtocolError as e:
                self.log.log(f"whack: bad request: {e}", "warning")
                send(result_frame(RC_BADWHACKMESSAGE, error=str(e)))
                return
            self.log.log(f"whack request {req.command} {req.args}", "debug",
                         debug_class="whackwatch")

            def emit(line: str) -> None:
                send(output_frame(line))

            try:
                rc, data, err = await self.dispatch(req, emit)
            except Exception as e:  # noqa: BLE001
                self._internal_error(e, f"whack {req.command}")
                rc, data, err = RC_INTERNAL_ERROR, None, f"internal error: {e}"
            send(result_frame(rc, data, err))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except Exception as e:  # noqa: BLE001 - one bad whack must not stop pluto
            self._internal_error(e, "control connection")
        finally:
            with contextlib.suppress(Exception):
                writer.close()
            if self._shutting_down:
                self._finish()

    async def dispatch(self, req: Request, emit: Callable[[str], None]
                       ) -> tuple[int, Any, str | None]:
        cmd, args = req.command, req.args
        name = args.get("name")
        if cmd == "ping":
            return RC_SUCCESS, {"version": __version__, "pid": os.getpid()}, None
        if cmd in fmt.STATUS_COMMANDS:
            snap = self.snapshot()
            if args.get("json"):
                return RC_SUCCESS, fmt.json_view(cmd, snap), None
            for line in fmt.render(cmd, snap):
                emit(line)
            return RC_SUCCESS, None, None
        if cmd == "shutdown":
            emit("shutting down")
            await self.shutdown(finish=False)
            return RC_SUCCESS, None, None
        if cmd in ("listen", "unlisten", "rereadsecrets"):
            self.log.capture = emit  # whack sees what these do, as in Libreswan
            try:
                if cmd == "listen":
                    self._scan_interfaces()
                    self._load_secrets()
                    self._orient_pending()
                elif cmd == "unlisten":
                    self.unlisten()
                else:
                    self._load_secrets()
            finally:
                self.log.capture = None
            return RC_SUCCESS, None, None
        if cmd == "listpsks":
            for line in fmt.render_psks(self.secrets.records(), self.secrets.files):
                emit(line)
            return RC_SUCCESS, None, None
        if cmd == "debug":
            specs = args.get("specs", [])
            if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
                return RC_BADWHACKMESSAGE, None, "debug specs must be strings"
            if any(s == "help" for s in specs):
                for line in debug_help().split("\n"):
                    emit(line)
                return RC_SUCCESS, None, None
            try:
                self.log.debug = parse_debug_specs(specs, self.log.debug)
            except ValueError as e:
                return RC_WHACK_PROBLEM, None, str(e)
            self.log.log(f"debugging: {','.join(sorted(self.log.debug)) or 'none'}")
            return RC_SUCCESS, None, None
        if cmd == "add":
            return self._cmd_add(args, emit)
        if not isinstance(name, str) or not name:
            return RC_WHACK_PROBLEM, None, f"--{cmd} requires --name"
        if name not in self.conns and name not in self.unoriented:
            return RC_UNKNOWN_NAME, None, f'no connection or alias named "{name}"'
        if name in self.unoriented:
            if cmd == "delete":
                self._delete_conn(name)
                return RC_SUCCESS, None, None
            return RC_ORIENT, None, (f'"{name}": cannot {cmd}: connection is not oriented '
                                     "(neither end is a local address)")
        if cmd == "initiate":
            return await self._cmd_initiate(name, bool(args.get("async")), emit,
                                            float(args.get("timeout") or 0))
        if cmd == "down":
            emit(f'"{name}": terminating SAs using this connection')
            self._run(lambda: self.engine.terminate(name, self.now()), where=f"down {name}")
            return RC_SUCCESS, None, None
        if cmd == "delete":
            emit(f'"{name}": terminating SAs using this connection')
            self._delete_conn(name)
            self.log.log("deleted connection", conn=name)
            return RC_SUCCESS, None, None
        if cmd == "rekey-ike":
            self._run(lambda: self.engine.rekey_ike(name, self.now()), where=f"rekey-ike {name}")
            return RC_SUCCESS, None, None
        if cmd == "rekey-child":
            self._run(lambda: self.engine.rekey_child(name, self.now()),
                      where=f"rekey-child {name}")
            return RC_SUCCESS, None, None
        if cmd == "route":
            return RC_ROUTE, None, (f'"{name}": cannot route: on-demand trapping is not '
                                    "implemented yet; use --initiate")
        if cmd == "unroute":
            self.routed.discard(name)
            return RC_SUCCESS, None, None
        return RC_BADWHACKMESSAGE, None, f"unknown command {cmd}"

    def _cmd_add(self, args: dict[str, Any], emit: Callable[[str], None]
                 ) -> tuple[int, Any, str | None]:
        """Load conns from a config file (ipsec add / addconn): ``config`` + ``names``."""
        from pypluto.daemon.options import OptionError, load_setup

        path = args.get("config") or self.opts.config or "/etc/ipsec.conf"
        names = args.get("names") or []
        if not isinstance(path, str) or not isinstance(names, list) or \
                not all(isinstance(n, str) for n in names):
            return RC_BADWHACKMESSAGE, None, "add: config must be a path, names a list of names"
        auto = bool(args.get("autoall"))
        # One parse serves every add until a file it read (or an include glob's
        # matches) changes: 1,000 "ipsec add NAME" calls must not parse 1,000 times.
        cached = self._add_cache.get(str(path))
        result: object
        if cached is not None and inputs_signature(cached[1]) == cached[0]:
            result = cached[1]
        else:
            try:
                _setup, result = load_setup(str(path))
            except OptionError as e:
                return RC_WHACK_PROBLEM, None, str(e)
            if isinstance(result, ConfigFile):
                self._add_cache = {str(path): (inputs_signature(result), result)}
        saved, self.opts.config_result = self.opts.config_result, result
        try:
            conns = {c.name: c for c in self._config_conns()}
        finally:
            self.opts.config_result = saved
        rc = RC_SUCCESS
        if auto:
            names = [n for n, c in conns.items() if c.auto in ("add", "start", "up", "route",
                                                               "ondemand", "keep")]
        for n in names:
            conn = conns.get(n)
            if conn is None:
                emit(f'conn "{n}" not found in "{path}"')
                rc = RC_UNKNOWN_NAME
                continue
            r = self.add_conn(copy.deepcopy(conn), emit)  # the cached parse stays pristine
            rc = rc or r
        return rc, None, None

    async def _cmd_initiate(self, name: str, asynchronous: bool, emit: Callable[[str], None],
                            timeout: float) -> tuple[int, Any, str | None]:
        if not self.listening:
            return RC_DEAF, None, "need --listen before --initiate"
        assert self.loop is not None
        conn = self.conns[name]
        if conn.type in ("passthrough", "drop", "reject") or conn.authby == "never":
            return RC_INITSHUNT, None, f'"{name}": cannot initiate a shunt-only connection'
        if conn.remote.host_addr is None:
            return RC_NOPEERIP, None, (f'"{name}": cannot initiate connection without knowing '
                                       "peer IP address")
        fut: asyncio.Future[int] = self.loop.create_future()
        want = {"child-established"}
        if getattr(conn, "childless", False):
            want = {"ike-established"}
        waiter = Waiter(name, emit, fut, want)
        if not asynchronous:
            self._waiters.append(waiter)
        try:
            rc = self.initiate(name)
            if rc or asynchronous:
                return rc, None, None
            limit = timeout or max(30.0, conn.retransmit_timeout + 5.0)
            try:
                rc = await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                return RC_NORETRANSMISSION, None, f'"{name}": no outcome after {limit:g}s'
            return rc, None, None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    # ------------------------------------------------------------- status
    def snapshot(self) -> dict[str, Any]:
        now = self.now()
        try:
            st = self.engine.status(now)
        except Exception as e:  # noqa: BLE001
            self._internal_error(e, "status")
            from pypluto.ike.status import EngineStatus

            st = EngineStatus()
        for ike in st.ike_sas:
            for ch in ike.children:
                self._merge_counters(ch)
        for c in st.connections:
            c.routed = c.routed or c.name in self.routed
        eng = dataclasses.asdict(st)
        for ike_d in eng.get("ike_sas", []):
            for ch_d in ike_d.get("children", []):
                self._drop_counters(ch_d)
        return {
            "pluto": {
                "version": __version__,
                "pid": os.getpid(),
                "uptime": round(now - self.started_mono, 3),
                "started": self.started_wall,
                "backend": self.backend.name if self.backend else "none",
                "listening": self.listening,
                "helpers": self.helpers.count if self.helpers else 0,
                "helper_kind": self.helpers.kind if self.helpers else "inline",
                "debug": sorted(self.log.debug),
                "uniqueids": self.opts.uniqueids,
                "force_busy": self.opts.force_busy,
                "keep_alive": self.opts.keep_alive,
                "virtual_private": self.opts.virtual_private,
                "crl_strict": self.opts.crl_strict,
                "crlcheckinterval": self.opts.crlcheckinterval,
                "secctx_attr_type": self.opts.secctx_attr_type,
                "vendorid": self.opts.vendorid,
                "ipsecdir": self.opts.ipsecdir,
                "nssdir": self.opts.nssdir,
                "secretsfile": self.opts.secretsfile,
                "interfaces": [
                    {"ifname": i.ifname, "addr": str(i.addr), "port": i.port, "natt": i.natt}
                    for i in self.interfaces
                ],
                "unoriented": sorted(self.unoriented),
            },
            "now": now,
            "wallclock": time.time(),
            "engine": eng,
        }

    def _drop_counters(self, ch: dict[str, Any]) -> None:
        """The inbound SA's drops (replay, integrity, selector: RFC 4303 §3.4, RFC 4301 §5.2)."""
        spi = ch.get("spi_in", 0)
        meta = self._sa_index.get(spi)
        stats = self._stats(meta[0], spi, meta[1]) if meta is not None else None
        for k in ("replay_drops", "integrity_failures", "selector_drops"):
            ch[k] = int(getattr(stats, k, 0) or 0)

    def _merge_counters(self, ch: Any) -> None:
        for spi, attr_b, attr_p in ((ch.spi_in, "in_bytes", "in_packets"),
                                    (ch.spi_out, "out_bytes", "out_packets")):
            meta = self._sa_index.get(spi)
            if meta is None:
                continue
            stats = self._stats(meta[0], spi, meta[1])
            if stats is not None:
                setattr(ch, attr_b, max(getattr(ch, attr_b), stats.bytes))
                setattr(ch, attr_p, max(getattr(ch, attr_p), stats.packets))


def main_loop(opts: PlutoOptions, logger: PlutoLogger, ctl_sock: socket.socket) -> int:
    """Run the daemon until shutdown; returns the exit status."""

    async def run() -> int:
        d = Daemon(opts, logger)
        try:
            await d.start(ctl_sock)
        except StartupError as e:
            logger.log(str(e), "error")
            await d.shutdown()
            return 1
        return await d.wait() or d.exit_code

    try:
        return asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - last resort: report and exit 1
        path = write_crash_report(opts.coredir, e, "main loop")
        logger.log(f"unhandled error: {type(e).__name__}: {e}", "error")
        if path:
            logger.log(f"crash report written to {path}", "error")
        return 1


__all__ = ["Daemon", "StartupError", "main_loop", "sys"]
