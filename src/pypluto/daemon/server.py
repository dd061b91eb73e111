"""The composition root: builds the daemon's parts, starts them, handles signals, shuts down.

One asyncio loop carries everything (DESIGN.md, layer ``daemon/``); the parts
are, each in its own module:

* ``sockets.UDPSockets``: the IKE (500) and NAT-T (4500) sockets and their
  framing (RFC 3948 §2.2, §2.3);
* ``driver.EngineDriver``: calls into the engine (``engine_api.EngineAPI``),
  carries out the actions it returns, its timer, offloaded key exchanges;
* ``registry.Registry``: the loaded connections;
* ``control.ControlServer``: the control socket whack talks to;
* ``waiters.Waiters``: whacks waiting for ``--initiate``'s outcome;
* ``status.snapshot``: what ``--status`` shows;
* ``secrets.SecretsProxy``: the secrets the engine holds.

This module wires them together, runs start-up (ipsec-pluto(8): backend,
engine, secrets, interfaces, connections, control socket), turns SIGTERM /
SIGINT into a clean shutdown and an unhandled error into a crash report and
exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import os
import signal
import socket
import time
import warnings
from collections.abc import Coroutine
from typing import Any, cast

from pypluto import __version__
from pypluto.config.certs import CertStore
from pypluto.config.expiry import anchor_warnings, conn_cert_check
from pypluto.config.hostkeys import check_database, nss_password
from pypluto.config.model import Connection
from pypluto.control.protocol import RC_DEAF, RC_FATAL, RC_SUCCESS, RC_UNKNOWN_NAME
from pypluto.daemon import sdnotify
from pypluto.daemon.control import ControlServer
from pypluto.daemon.crlfetch import CRLFetcher, policy_from
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.engine_api import EngineAPI, EngineFactory
from pypluto.daemon.helpers import (
    CrashReports,
    HelperPool,
    leak_report,
    sd_notify,
    write_crash_report,
)
from pypluto.daemon.interfaces import local_addresses
from pypluto.daemon.logger import PlutoLogger, capture_warnings, parse_debug_specs
from pypluto.daemon.metrics import MetricsServer
from pypluto.daemon.mobility import AddressWatcher, stranded
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.powerup import PowerUpSelfTest
from pypluto.daemon.registry import Registry, config_conns
from pypluto.daemon.resolver import lookup_names, resolve_host, resolve_names
from pypluto.daemon.secrets import SecretsProxy
from pypluto.daemon.sockets import IKEInterface, UDPSockets
from pypluto.daemon.status import snapshot
from pypluto.daemon.waiters import Waiters
from pypluto.ike.actions import Endpoint
from pypluto.kernel.base import BackendError, KernelBackend

# what asyncio's accept loop reports and then retries (selector_events._accept_connection)
_ACCEPT_RESOURCE = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


# how often the peers' host names that did not resolve are looked up again (Libreswan:
# EVENT_PENDING_DDNS, 60 s)
PENDING_DNS_INTERVAL = 60.0


class StartupError(Exception):
    """Start-up failed; the message is logged and pluto exits 1."""


class Daemon:
    """One running pluto."""

    def __init__(self, opts: PlutoOptions, logger: PlutoLogger,
                 engine_factory: EngineFactory | None = None) -> None:
        self.opts = opts
        self._engine_factory = engine_factory
        self.log = logger
        self.loop: asyncio.AbstractEventLoop | None = None
        self.backend: KernelBackend | None = None
        self.helpers: HelperPool | None = None
        self.secrets = SecretsProxy()
        # issue 14: a password-protected NSS database: <ipsecdir>/nsspassword, as Libreswan
        nsspw, self._nsspw_line = nss_password(opts.ipsecdir)
        self.secrets.certs = CertStore(opts.nssdir, opts.ipsecdir, password=nsspw or "",
                                       crl_strict=opts.crl_strict)
        self.crlfetch = CRLFetcher(self.secrets.certs,  # CRL fetching, OCSP (issue 14)
                                   policy_from(opts.crlcheckinterval, opts.revocation),
                                   logger.log)
        self.crash = CrashReports(opts.coredir, logger.log)
        self.waiters = Waiters()
        self.sockets = UDPSockets(logger, opts.ikeport, opts.natikeport, opts.listen)
        self.sockets.bufsize = opts.ike_socket_bufsize
        self.driver = EngineDriver(logger, self.crash, self.waiters, self.sockets,
                                   statsbin=opts.statsbin)
        self.registry = Registry(logger, self.driver, opts.uniqueids, self.initiate)
        self.registry.natikeport = opts.natikeport
        self.powerup = PowerUpSelfTest()
        self.metrics: MetricsServer | None = None
        self.registry.admit = self._admit
        self.registry.loaded = self._load_own_cert
        self.control = ControlServer(self, logger, self.registry, self.driver, self.waiters,
                                     self.secrets)
        self.sockets.on_ike = self._ike_in
        self.sockets.batch_begin = self.driver.batch_begin
        self.sockets.batch_end = self.driver.batch_end
        self.driver.spawn = self._spawn
        self.driver.peer_conns = self.registry.conns_with_peer
        self.driver.retransmit_interval = self.registry.retransmit_interval
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self._stop: asyncio.Future[int] | None = None
        self.mobility: AddressWatcher | None = None
        self._ctl_server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._shutting_down = False
        self._shut_down = False  # shutdown() has finished
        self._started = False  # start() has finished
        self._stop_requested = False  # a SIGTERM came before that
        self.exit_code = 0

    # ------------------------------------------------------------- views
    @property
    def engine(self) -> EngineAPI | None:
        return self.driver.engine

    @property
    def interfaces(self) -> list[IKEInterface]:
        return self.sockets.interfaces

    @property
    def listening(self) -> bool:
        return self.sockets.listening

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def config_path(self) -> str | None:
        return self.opts.config

    def now(self) -> float:
        return self.driver.now()

    # ---------------------------------------------------------------- startup
    async def start(self, ctl_sock: socket.socket) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = self.loop.create_future()
        self.loop.set_exception_handler(self._loop_exception)
        # the signals first: a SIGTERM (or SIGINT) during start-up waits for start-up to
        # finish and then shuts down cleanly (as Libreswan's event loop handles it once
        # it runs), instead of leaving the half-built daemon's kernel state (nflog-all
        # rules, the plane) behind with no lock file to trigger the leftovers pass; a
        # SIGHUP there no longer kills pluto (its default action)
        for sig, handler in (
            (signal.SIGTERM, self._on_sigterm),
            (signal.SIGINT, self._on_sigterm),
            (signal.SIGHUP, self._on_sighup),
        ):
            self.loop.add_signal_handler(sig, handler)
        # file/stderr log lines: one write per turn of the loop (daemon/logger.py)
        self.log.defer_writes(self.loop.call_soon)
        if self.opts.efence_protect:
            self.loop.set_debug(True)
        self._log_settings()
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
        if self.opts.setup is not None and hasattr(self.backend, "managed_interfaces"):
            # config setup ipsec-interface-managed=no: the operator makes the ipsecN devices
            self.backend.managed_interfaces = bool(
                getattr(self.opts.setup, "ipsec_interface_managed", True))
        with contextlib.suppress(Exception):
            self.backend.set_expire_callback(self.driver.on_expire_threadsafe)
        with contextlib.suppress(Exception):
            self.backend.set_acquire_callback(self.driver.on_acquire_threadsafe)
        with contextlib.suppress(Exception):
            self.backend.flush_own()  # leftovers of an earlier crashed run
        if self.backend.name == "userspace":  # NFLOG rules match its TUN device
            self.driver.nflog.tun = getattr(self.backend, "ifname", None)
        acq = getattr(self.opts.setup, "xfrmlifetime", None) if self.opts.setup else None
        if acq is not None:  # config setup xfrmlifetime=
            try:
                self.log.log(self.backend.set_acquire_lifetime(acq))
            except BackendError as e:
                raise StartupError(str(e)) from None
        nfl = getattr(self.opts.setup, "nflog_all", None) if self.opts.setup else None
        if nfl:  # config setup nflog-all= (daemon/nflog.py)
            if self.backend.name == "none":
                raise StartupError(f"nflog-all={nfl} needs a data plane (--use-xfrm or "
                                   "--use-userspace)")
            why = await self.driver.nflog.start_all(nfl)
            if why:
                raise StartupError(f"nflog-all={nfl}: {why}")
            self.log.log(f"nflog-all={nfl}: IPsec traffic is copied to NFLOG group {nfl}")
        self.sockets.loop = self.driver.loop = self.loop
        self.sockets.backend = self.driver.backend = self.backend
        self.driver.helpers = self.helpers
        self.driver.engine = self._make_engine()
        # issue 13: busy-mode COOKIE answers straight from the socket reader
        self.sockets.attach_guard(getattr(self.driver.engine, "dos", None), self.now)
        self.secrets.load(self.opts.secretsfile, self.log)
        report = self.powerup.check(config_conns(self.opts.config_result), defaults=True)
        for line in report.log_lines():
            self.log.log(line, "info" if report.ok else "error")
        if not report.ok:
            raise StartupError("algorithm self-tests failed")
        self._scan_interfaces()
        self.registry.load(self.opts.config_result)
        self._ctl_server = await asyncio.start_unix_server(self.control.handle_client,
                                                           sock=ctl_sock)
        if self.opts.metrics_listen is not None:
            host, port = self.opts.metrics_listen
            self.metrics = MetricsServer(lambda: (self.snapshot(), self.driver.counters),
                                         host, port)
            try:
                host, port = await self.metrics.start()
            except OSError as e:
                raise StartupError(f"metrics-listen={host}:{port}: {e.strerror}") from None
            self.driver.count_retransmits = True
            self.log.log(f"metrics: serving http://{host}:{port}/metrics")
        self.driver.schedule_timer()
        self.driver.start_polling()
        self.crlfetch.start(self.loop)
        # MOBIKE (RFC 4555): a vanished local address moves its IKE SAs
        self.mobility = AddressWatcher(self._scan_interfaces, self.driver, self.now)
        self.mobility.start(self.loop)
        tune_gc()
        sd_notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=Pluto initialized")
        self._spawn(sdnotify.watchdog_loop())
        self._spawn(self._pending_dns_loop())
        self.log.log("Pluto initialized")
        self._started = True
        if self._stop_requested:  # a SIGTERM came during start-up: nothing is initiated
            self._spawn(self.shutdown())
            return
        self.registry.auto_start()

    async def _pending_dns_loop(self, interval: float = PENDING_DNS_INTERVAL) -> None:
        """Once a minute, the peers' host names that did not resolve are looked up again
        on a worker thread (a slow DNS server stalls nothing), and an auto=start conn
        whose peer now has an address is initiated (Libreswan's pending-DDNS event)."""
        while not self._shutting_down:
            await asyncio.sleep(interval)
            names = self.registry.pending_dns()
            if not names or self._shutting_down:
                continue
            answer = await asyncio.get_running_loop().run_in_executor(
                None, lookup_names, names, self.registry.resolver)
            self.registry.retry_pending_dns(answer)

    def _admit(self, conn: Connection) -> str | None:
        """:meth:`_refusal`, and the conn's own debug classes (debug= / plutodebug=)
        in the logger once it is admitted; a refused conn leaves none behind."""
        try:
            classes = parse_debug_specs([conn.debug], set()) if conn.debug else set()
        except ValueError as e:
            self.log.set_conn_debug(conn.name, set())
            return f"debug={conn.debug}: {e}: connection refused"
        refused = self._refusal(conn)
        self.log.set_conn_debug(conn.name, set() if refused else classes)
        return refused

    def _refusal(self, conn: Connection) -> str | None:
        """A conn added after start: self-test the algorithms it brings (fail closed);
        a marked conn (mark= / mark-in= / mark-out=) needs a plane that marks; an expired
        certificate refuses it, one expiring soon is warned about (issue 14); a
        vti-interface= conn needs the XFRM plane (a VTI device keys XFRM lookups)."""
        if conn.nflog and self.backend is not None and self.backend.name == "none":
            return (f"nflog={conn.nflog} needs a data plane (--use-xfrm or --use-userspace); "
                    "with --use-none no traffic is protected or logged: connection refused")
        if conn.vti_interface and self.backend is not None and self.backend.name != "xfrm":
            return (f"vti-interface={conn.vti_interface} needs the XFRM data plane "
                    f"(--use-xfrm); the {self.backend.name} data plane has no VTI devices: "
                    "connection refused")
        if self.backend is not None and self.backend.name == "userspace":
            xfrm_only = [f"{k}={conn.raw[k]}" for k, on in (
                ("encap-dscp", conn.encap_dscp and conn.raw.get("encap-dscp") is not None),
                ("decap-dscp", conn.decap_dscp), ("nopmtudisc", conn.nopmtudisc)) if on]
            if xfrm_only:  # ipsec.conf(5): "only implemented for the Linux XFRM stack"
                return (f"{', '.join(xfrm_only)} needs the XFRM data plane (--use-xfrm); "
                        "the userspace data plane never copies DSCP bits between the "
                        "inner and outer headers and keeps PMTU discovery on: "
                        "connection refused")
        refused, warnings = conn_cert_check(conn, self.secrets.certs, time.time())
        for line in warnings:
            self.log.log(line, "warning", conn=conn.name)
        if refused:
            return refused
        if (conn.mark_in or conn.mark_out) and self.backend is not None \
                and not self.backend.supports_marks:
            return (f"mark= / mark-in= / mark-out= need the XFRM data plane (--use-xfrm); "
                    f"the {self.backend.name} data plane cannot mark SAs: connection refused")
        if conn.ipsec_interface is not None and self.backend is not None \
                and not self.backend.supports_ipsec_interface:
            why = getattr(self.backend, "ipsec_interface_refusal", "")
            if why:  # the XFRM plane on a kernel without xfrm_interface (probed)
                return (f"ipsec-interface={conn.ipsec_interface}: {why}; use the userspace "
                        "data plane (--use-userspace): connection refused")
            return (f"ipsec-interface= needs the userspace data plane (--use-userspace), "
                    f"which gives each ipsecN its own TUN device; the {self.backend.name} "
                    "data plane has no XFRM interface support in pypluto (the XFRM plane "
                    "makes ipsecN where the kernel has xfrm_interface): connection refused")
        report = self.powerup.check([conn])
        if report.ok:
            return None
        for line in report.log_lines():
            self.log.log(line, "error", conn=conn.name)
        return "algorithm self-test failed: connection refused"

    def _load_own_cert(self, conn: Connection) -> str | None:
        """Read our ``leftcert=`` and its key now, as Libreswan does when it adds the conn,
        not inside the first IKE_AUTH: an NSS export takes about a second, and the
        engine's retransmit timer would count it (the request was resent at once).

        A ``leftcert=``/``rightcert=`` that names no certificate refuses the conn, in
        Libreswan 5.2's words ("... certificate 'NAME' not found in the NSS database",
        its ikev2-x509-28-del-nssdb-cert); another failure (a key NSS will not export,
        a wrong password) is left to the first IKE_AUTH, which logs the reason."""
        if conn.local_is_left is None:
            return None
        certs = self.secrets.certs
        for end, side in ((conn.left, "left"), (conn.right, "right")):
            name = end.cert
            if not name:
                continue
            try:
                if end is conn.local:
                    certs.local(name)
                else:
                    certs.peer_cert(name)
            except Exception:  # noqa: BLE001 - told apart below
                if os.path.sep in name:
                    if not os.path.exists(name):
                        return f"{side}cert={name}: no such certificate file"
                    continue
                nss = certs.nss
                try:
                    known = nss is not None and any(e.nickname == name for e in nss.entries())
                except Exception:  # noqa: BLE001 - an unreadable database: IKE_AUTH says
                    continue
                if not known:
                    return f"{side} certificate '{name}' not found in the NSS database"
        return None

    def _log_settings(self) -> None:
        o = self.opts
        self.log.log(f"Starting Pluto (pypluto Version {__version__}) pid:{os.getpid()}")
        if o.config:
            self.log.log(f'using config file "{o.config}"')
        self.log.log(f"core dump dir: {o.coredir}")
        self.log.log(f"secrets file: {o.secretsfile}")
        self.log.log(f"ipsecdir: {o.ipsecdir}; nssdir: {o.nssdir}")
        if o.leak_detective:
            self.log.log("leak-detective enabled")
        if o.efence_protect:
            self.log.log("efence-protect enabled (fault handler and asyncio debug mode)")
        if o.crl_strict:
            self.log.log("crl-strict=yes: a peer certificate needs a current CRL")
        pw = self.secrets.certs.hostkeys.password
        if pw is not None or "does not contain" in self._nsspw_line:
            self.log.log(self._nsspw_line)  # the password's length only
        why = check_database(o.nssdir, pw)
        if why:
            self.log.log(f"NSS: {why}", "error")
        for line in anchor_warnings(self.secrets.certs, time.time()):
            self.log.log(line, "warning")

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

    def _make_engine(self) -> EngineAPI:
        from pypluto.config.model import SetupConfig
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
            "resolver": resolve_host,  # RFC 5685: a redirect to a gateway's name
        }
        if setup is not None:
            settings = EngineSettings.from_setup(cast(SetupConfig, setup), **overrides)
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
        factory: EngineFactory = self._engine_factory or Engine
        return factory(settings, self.secrets, local_addrs=addrs)

    # ------------------------------------------------------------- operations
    def _scan_interfaces(self) -> None:
        addrs = self.sockets.scan()
        # only an interface orients a conn (Libreswan 5.2): with --listen, just that one
        self.registry.local_addrs = {i.addr for i in self.sockets.interfaces} \
            if self.opts.listen else set(addrs)
        if self.driver.engine is not None:
            self.driver.engine.local_addrs = set(addrs)

    def listen(self) -> None:
        """whack --listen: rescan the interfaces, reload the secrets, orient what now can."""
        self._scan_interfaces()
        self.secrets.load(self.opts.secretsfile, self.log)
        self._disorient_stranded()
        self.registry.orient_pending(self.registry.local_addrs)

    def _disorient_stranded(self) -> None:
        """The conns whose local address went away: their SAs are terminated and they
        are kept unoriented until an ``ipsec listen`` finds the address again."""
        engine, reg = self.driver.engine, self.registry
        if not self.sockets.local_addrs:  # the address dump failed (scan logged it)
            return
        ike_sas = engine.status(self.now()).ike_sas if engine is not None else []
        for name in stranded(reg.conns, ike_sas, reg.local_addrs):
            conn = reg.conns[name]
            self.log.log(f"local address {conn.local.host_addr} is gone: terminating SAs; "
                         "connection unoriented", "warning", conn=name)
            reg.delete(name)
            conn.local_is_left = None
            reg.unoriented[name] = conn

    def unlisten(self) -> None:
        self.sockets.unlisten()

    def reread_secrets(self) -> None:
        self.secrets.load(self.opts.secretsfile, self.log)
        self.secrets.certs.reload()  # certificates and CRLs are read again on use
        pw, _line = nss_password(self.opts.ipsecdir)  # nsspassword may have changed
        self.secrets.certs.hostkeys.password = pw
        if self.secrets.certs.nss is not None:
            self.secrets.certs.nss.password = pw or ""

    def initiate(self, name: str) -> int:
        if name not in self.registry.conns:
            return RC_UNKNOWN_NAME
        if not self.sockets.listening:
            return RC_DEAF
        self.log.log("initiating connection", conn=name, debug_class="base", level="debug")
        # a peer written as a host name that did not resolve when the conn was added:
        # the name is tried again now (a resolver that is up again, a new /etc/hosts)
        for note, level in resolve_names(self.registry.conns[name], self.registry.resolver):
            self.log.log(note, level, conn=name)
        self.registry.up.add(name)  # Libreswan: the conn is "supposed to remain up" (+UP)
        now = self.now()
        self.driver.run(lambda e: e.initiate(name, now), where=f"initiating {name}", conn=name)
        return RC_SUCCESS

    def snapshot(self) -> dict[str, Any]:
        return snapshot(opts=self.opts, log=self.log, driver=self.driver, sockets=self.sockets,
                        registry=self.registry, helpers=self.helpers,
                        started_wall=self.started_wall, started_mono=self.started_mono)

    def _ike_in(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        driver = self.driver
        driver.counters.ike_bytes_in += len(data)
        driver.receive(data, local, remote, driver.now())

    def _spawn(self, aw: Coroutine[Any, Any, Any] | asyncio.Future[Any]) -> None:
        t = asyncio.ensure_future(aw)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------- signals
    def _on_sigterm(self) -> None:
        self.log.log("SIGTERM received: shutting down")
        if not self._started:  # start-up ends first (see start), then the shutdown
            self._stop_requested = True
            return
        self._spawn(self.shutdown())

    def _on_sighup(self) -> None:
        """SIGHUP: reopen ``--logfile`` (logrotate's postrotate), then the man page's hint."""
        self.reopen_logs()
        self.log.log('Pluto ignores SIGHUP -- perhaps you want "ipsec listen" '
                     '("whack --listen") to rescan the interfaces')

    def reopen_logs(self) -> str:
        """SIGHUP / ``whack --reopenlogs``: reopen the log file by name (for logrotate).

        A failure to reopen keeps the old file open and is logged there.
        """
        try:
            reopened = self.log.reopen()
        except OSError as e:
            msg = f'cannot reopen logfile "{self.log.destination}": {e.strerror}'
            self.log.log(msg, "error")
            return msg
        if not reopened:
            return f"logging to {self.log.destination}: nothing to reopen"
        msg = f'reopened logfile "{self.log.destination}"'
        self.log.log(msg)
        self.log.flush()  # the new file holds this line before whack hears of it
        return msg

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")
        if exc is None:
            self.log.log(f"event loop: {ctx.get('message')}", "error")
            return
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_RESOURCE and \
                "accept" in str(ctx.get("message", "")):
            # asyncio could not accept a control connection (out of file descriptors or
            # memory) and tries again in a second: not a crash, pluto keeps running
            self.log.log(f"control socket: cannot accept a connection: {exc.strerror}; "
                         "retrying in a second", "warning")
            return
        path = write_crash_report(self.opts.coredir, exc, str(ctx.get("message", "")))
        self.log.log(f"unhandled error: {type(exc).__name__}: {exc}", "error")
        if path:
            self.log.log(f"crash report written to {path}", "error")
        self.exit_code = 1
        self._spawn(self.shutdown())

    # ------------------------------------------------------------- shutdown
    async def shutdown(self, finish: bool = True) -> None:
        """Delete every SA (the engine's Deletes go out first), then close everything."""
        if self._shutting_down:
            return
        self._shutting_down = True
        try:
            await self._close_down()
        finally:
            self._shut_down = True  # from now on a whack's finish() may end the loop
            if finish:
                self.finish()

    async def _close_down(self) -> None:
        """The steps of :meth:`shutdown`."""
        if self.mobility is not None:
            self.mobility.stop()
        self.crlfetch.stop()
        self.sockets.closed = True
        sd_notify("STOPPING=1")
        self.log.log("shutting down")
        self.driver.stop()
        engine = self.driver.engine
        if engine is not None:
            try:
                actions = engine.shutdown(self.now())
            except Exception as e:  # noqa: BLE001
                self.driver.internal_error(e, "engine shutdown")
                actions = []
            self.driver.execute(actions or [])
        if self.driver.updown_tasks:  # down/unroute scripts run before we exit
            await asyncio.wait(set(self.driver.updown_tasks),
                               timeout=self.driver.updown_timeout + 5)
        await self.driver.vti.close()  # VTI devices and routes the down runs left
        await self.driver.nflog.close()  # NFLOG rules (nflog=, nflog-all=)
        if self.metrics is not None:
            await self.metrics.close()
        self.waiters.fail_all(RC_FATAL)
        if self.backend is not None:
            for step in (self.backend.flush_own, self.backend.close):
                try:
                    step()
                except Exception as e:  # noqa: BLE001
                    self.log.log(f"kernel backend {step.__name__}: {e}", "error")
        self.sockets.close_all()
        if self.helpers is not None:
            self.helpers.close()
        if self._ctl_server is not None:
            self._ctl_server.close()
        if self.opts.leak_detective:
            for line in leak_report():
                self.log.log(line)
        self.log.defer_writes(None)  # what remains is written at once

    def finish(self) -> None:
        """End the loop (exit); while a shutdown is still running, nothing: a whack that
        is answered meanwhile (``ipsec status``, a second ``ipsec stop``) must not cut
        it short, its end finishes (``shutdown``, or the ``whack --shutdown`` handler)."""
        if self._shutting_down and not self._shut_down:
            return
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(self.exit_code)

    async def wait(self) -> int:
        assert self._stop is not None
        return await self._stop


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
        try:
            return await d.wait() or d.exit_code
        finally:
            logger.defer_writes(None)

    profile = _profiler()
    shown = warnings.showwarning
    capture_warnings(logger)  # e.g. cryptography's, about a peer certificate's names
    try:
        return asyncio.run(run())
    except Exception as e:  # noqa: BLE001 - last resort: report and exit 1
        path = write_crash_report(opts.coredir, e, "main loop")
        logger.log(f"unhandled error: {type(e).__name__}: {e}", "error")
        if path:
            logger.log(f"crash report written to {path}", "error")
        return 1
    finally:
        warnings.showwarning = shown
        if profile is not None:
            profile.disable()
            with contextlib.suppress(OSError):
                profile.dump_stats(os.environ[PROFILE_ENV])


GC_GEN0_THRESHOLD = 5000
"""Allocations between two young-generation collections (CPython's default is 700).
An IKE SA's exchange allocates a few hundred tracked objects, so the default ran a
collection every couple of SAs: 5-8 % of the engine's CPU per IKE SA in
``bench/engine_setup.py`` (childless, 08:32 UTC: 0.45-0.53 ms at 700, 0.43-0.46 at
5,000).  Cyclic garbage still goes, a little later."""


def tune_gc() -> None:
    """Once start-up is done: what it built (configuration, connections, self-test
    results) lives as long as the daemon, so it leaves the collector's generations
    (``gc.freeze``) and later full collections do not walk it again; and the young
    generation is collected every ``GC_GEN0_THRESHOLD`` allocations."""
    gc.collect()
    gc.freeze()
    _, g1, g2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, g1, g2)


PROFILE_ENV = "PYPLUTO_PROFILE"
"""Benchmarks only (bench/README.md): a path; the event loop's thread runs under
``cProfile`` (thread CPU time) and its statistics are written there at exit."""


def _profiler() -> Any:
    if not os.environ.get(PROFILE_ENV):
        return None
    import cProfile

    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    return prof


__all__ = ["Daemon", "StartupError", "main_loop"]
