"""The control socket's server side: framing, and a table from whack command to handler.

The protocol itself (frames, requests, result codes) is ``control/protocol.py``
(docs/control-protocol.md): a 4-byte length and a JSON body per frame; the
server answers with zero or more ``output`` frames and exactly one ``result``.
Commands that do not name a connection are in ``GLOBAL_COMMANDS``; those that
do (``--name``) in ``CONN_COMMANDS``, reached only once the name is known and
its connection oriented.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import math
import os
import resource
import stat
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pypluto import __version__
from pypluto.config.gateways import parse_gateway
from pypluto.config.model import Connection, IPAddress
from pypluto.config.parser import ConfigFile, inputs_signature
from pypluto.control import format as fmt
from pypluto.control.protocol import (
    MAX_REQUEST,
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
from pypluto.daemon.crlfetch import CRLFetcher, render_crls
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.logger import PlutoLogger, debug_help, parse_debug_specs
from pypluto.daemon.registry import LOADED_AUTO, Registry, config_conns
from pypluto.daemon.resolver import lookup_names, names_to_look_up, resolve_names
from pypluto.daemon.secrets import SecretsProxy
from pypluto.daemon.waiters import Waiter, Waiters

Emit = Callable[[str], None]
Result = tuple[int, Any, str | None]
"""(rc, data for the result frame, error text)."""

READ_TIMEOUT = 30.0  # seconds for a whack to send its request
WRITE_TIMEOUT = 30.0  # seconds for a whack to take in the rest of its answer
# Control connections open at once (reading a request, or running one: an ``initiate``
# waits up to 30 s for its outcome): at most this many, and at most half the file
# descriptors the process may open, so that whack never exhausts them (sockets, updown
# scripts, CRL fetches need theirs); one more is answered "busy" and closed at once
MAX_CLIENTS = 512
# Of those, at most this many may still be sending their request after PENDING_GRACE
# seconds (a real whack sends it at once): a new connection closes the oldest such, so
# idle clients (that hold a slot for READ_TIMEOUT) cannot lock whack out
MAX_PENDING = 32
PENDING_GRACE = 1.0
# JSON values a request may hold (counted as the bytes ``[ { , :`` in its body, an upper
# bound): the largest real request, ``ipsec add`` with as many one-letter names as a
# command line holds, has ~630,000.  Without a bound, a 16 MiB body of ``[[],[],...]``
# (3 bytes a value, ~60 once parsed) made pluto allocate ~400 MB and stall for a second
MAX_REQUEST_VALUES = 1_000_000


def _check_values(body: bytes) -> None:
    n = body.count(b"[") + body.count(b"{") + body.count(b",") + body.count(b":")
    if n > MAX_REQUEST_VALUES:
        raise ProtocolError(f"malformed control message: too many JSON values "
                            f"(more than {MAX_REQUEST_VALUES})")


def _client_cap() -> int:
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (OSError, ValueError):  # pragma: no cover - no such limit
        return MAX_CLIENTS
    if soft == resource.RLIM_INFINITY:
        return MAX_CLIENTS
    return max(8, min(MAX_CLIENTS, soft // 2))


class DaemonOps(Protocol):
    """What the command handlers ask of the composition root."""

    @property
    def listening(self) -> bool: ...

    @property
    def config_path(self) -> str | None: ...

    @property
    def shutting_down(self) -> bool: ...

    def snapshot(self) -> dict[str, Any]: ...

    async def shutdown(self, finish: bool = True) -> None: ...

    def finish(self) -> None: ...

    def listen(self) -> None: ...

    def unlisten(self) -> None: ...

    def reread_secrets(self) -> None: ...

    def reopen_logs(self) -> str: ...

    def initiate(self, name: str) -> int: ...

    @property
    def crlfetch(self) -> CRLFetcher: ...


GlobalHandler = Callable[["ControlServer", dict[str, Any], Emit], Awaitable[Result]]
ConnHandler = Callable[["ControlServer", str, dict[str, Any], Emit], Awaitable[Result]]


class ControlServer:
    """Answers whack on the control socket."""

    def __init__(self, daemon: DaemonOps, log: PlutoLogger, registry: Registry,
                 driver: EngineDriver, waiters: Waiters, secrets: SecretsProxy) -> None:
        self.daemon = daemon
        self.log = log
        self.registry = registry
        self.driver = driver
        self.waiters = waiters
        self.secrets = secrets
        self._add_cache: dict[str, tuple[tuple[object, ...], ConfigFile]] = {}  # ipsec add
        self.max_clients = _client_cap()
        self.clients = 0  # control connections open now
        # those still sending their request, oldest first (MAX_PENDING)
        self._pending: OrderedDict[asyncio.StreamWriter, float] = OrderedDict()
        self.refused = 0  # connections answered "busy" (MAX_CLIENTS)
        self.evicted = 0  # idle connections closed for a newer one (MAX_PENDING)
        self._warned_at = -math.inf

    # ------------------------------------------------------------- framing
    async def handle_client(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
        """One whack connection: read one request, stream the output, send the result."""
        def send(obj: dict[str, Any]) -> None:
            if writer.is_closing():
                return
            try:
                frame = encode_frame(obj)
            except (ProtocolError, TypeError, ValueError) as e:  # too big / not JSON-able
                frame = encode_frame(result_frame(RC_INTERNAL_ERROR,
                                                  error=f"cannot send the answer: {e}"))
            writer.write(frame)

        if self.clients >= self.max_clients:
            self.refused += 1
            self._warn(f"whack: {self.clients} control connections are open; refusing more")
            send(result_frame(RC_WHACK_PROBLEM, error=(
                f"pluto is busy: {self.clients} control connections are open; try again")))
            with contextlib.suppress(Exception):
                writer.close()
            return
        self.clients += 1
        now = time.monotonic()
        self._pending[writer] = now
        try:
            while len(self._pending) > MAX_PENDING and \
                    next(iter(self._pending.values())) <= now - PENDING_GRACE:
                idle, _ = self._pending.popitem(last=False)
                self.evicted += 1
                self._warn(f"whack: more than {MAX_PENDING} control connections have not "
                           "sent a request; closing the oldest")
                idle.transport.abort()  # its readexactly ends: IncompleteReadError
            try:
                hdr = await asyncio.wait_for(reader.readexactly(4), READ_TIMEOUT)
                (n,) = struct.unpack("!I", hdr)
                if n > MAX_REQUEST:
                    raise ProtocolError(f"request of {n} bytes is too large "
                                        f"(at most {MAX_REQUEST})")
                body = await asyncio.wait_for(reader.readexactly(n), READ_TIMEOUT)
                self._pending.pop(writer, None)
                _check_values(body)
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
                self.driver.internal_error(e, f"whack {req.command}")
                rc, data, err = RC_INTERNAL_ERROR, None, f"internal error: {e}"
            if hasattr(self.log, "flush"):
                self.log.flush()  # what the command logged is in the file before its answer
            send(result_frame(rc, data, err))
            try:
                await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
            except TimeoutError:  # a whack that never reads must not hold its answer forever
                writer.transport.abort()
            except ConnectionError:
                pass
        except Exception as e:  # noqa: BLE001 - one bad whack must not stop pluto
            self.driver.internal_error(e, "control connection")
        finally:
            self.clients -= 1
            self._pending.pop(writer, None)
            with contextlib.suppress(Exception):
                writer.close()
            if self.daemon.shutting_down:
                self.daemon.finish()

    def _warn(self, text: str) -> None:
        """A warning about control-socket overload, at most one every 10 s."""
        now = time.monotonic()
        if now - self._warned_at >= 10.0:
            self._warned_at = now
            self.log.log(text, "warning")

    async def dispatch(self, req: Request, emit: Emit) -> Result:
        """Find the command's handler; conn commands first check ``--name``."""
        cmd, args = req.command, req.args
        if cmd in fmt.STATUS_COMMANDS:
            return await self._status(cmd, args, emit)
        handler = GLOBAL_COMMANDS.get(cmd)
        if handler is not None:
            return await handler(self, args, emit)
        name = args.get("name")
        if not isinstance(name, str) or not name:
            return RC_WHACK_PROBLEM, None, f"--{cmd} requires --name"
        if name not in self.registry:
            # Libreswan: NAME also names its alias, the NAME/LxR pairs of subnets=
            pairs = sorted(n for n, c in self.registry.conns.items() if c.answers_to(name))
            pair_handler = CONN_COMMANDS.get(cmd)
            if not pairs or pair_handler is None:
                return RC_UNKNOWN_NAME, None, f'no connection or alias named "{name}"'
            rc = RC_SUCCESS
            for n in pairs:
                r, _data, err = await pair_handler(self, n, args, emit)
                if err:
                    emit(err)
                rc = rc or r
            return rc, None, None
        if name in self.registry.unoriented:
            if cmd == "delete":
                self.registry.delete(name)
                return RC_SUCCESS, None, None
            return RC_ORIENT, None, (f'"{name}": cannot {cmd}: connection is not oriented '
                                     "(neither end is a local address)")
        conn_handler = CONN_COMMANDS.get(cmd)
        if conn_handler is None:
            return RC_BADWHACKMESSAGE, None, f"unknown command {cmd}"
        return await conn_handler(self, name, args, emit)

    # ------------------------------------------------------------- global commands
    async def _status(self, cmd: str, args: dict[str, Any], emit: Emit) -> Result:
        snap = self.daemon.snapshot()
        name = args.get("name")
        if name is not None:  # whack --name N --trafficstatus: that conn (and its pairs) only
            if not isinstance(name, str) or not name or cmd not in fmt.NAMED_STATUS:
                return RC_BADWHACKMESSAGE, None, f"--{cmd} does not take --name"
            names = {name} if name in self.registry else {
                n for n, c in self.registry.conns.items() if c.answers_to(name)}
            if not names:
                return RC_UNKNOWN_NAME, None, f'no connection or alias named "{name}"'
            snap = fmt.only_conns(snap, names)
        if args.get("json"):
            return RC_SUCCESS, fmt.json_view(cmd, snap), None
        for line in fmt.render(cmd, snap):
            emit(line)
        return RC_SUCCESS, None, None

    async def _ping(self, args: dict[str, Any], emit: Emit) -> Result:
        return RC_SUCCESS, {"version": __version__, "pid": os.getpid()}, None

    async def _shutdown(self, args: dict[str, Any], emit: Emit) -> Result:
        emit("Pluto is shutting down")  # Libreswan 5.2 whack_shutdown.c
        await self.daemon.shutdown(finish=False)
        return RC_SUCCESS, None, None

    def _captured(self, emit: Emit, step: Callable[[], None]) -> Result:
        self.log.capture = emit  # whack sees what these do, as in Libreswan
        try:
            step()
        finally:
            self.log.capture = None
        return RC_SUCCESS, None, None

    async def _listen(self, args: dict[str, Any], emit: Emit) -> Result:
        return self._captured(emit, self.daemon.listen)

    async def _unlisten(self, args: dict[str, Any], emit: Emit) -> Result:
        return self._captured(emit, self.daemon.unlisten)

    async def _redirect(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --redirect-to GW --name N | --peer-ip A`` (RFC 5685 §6)."""
        try:
            to = parse_gateway(str(args.get("to", "")))  # an address or a name (§10)
            peer = ipaddress.ip_address(str(args["peer"])) if args.get("peer") else None
        except ValueError as e:
            return RC_WHACK_PROBLEM, None, f"redirect: {e}"
        name = args.get("name") or None
        if name is not None and not isinstance(name, str):
            return RC_BADWHACKMESSAGE, None, "redirect: name must be a connection name"
        if name is not None and name not in self.registry.conns:
            return RC_UNKNOWN_NAME, None, f'redirect: no connection named "{name}"'
        engine = self.driver.engine
        if engine is None or not hasattr(engine, "redirect"):
            return RC_WHACK_PROBLEM, None, "redirect: the engine cannot redirect"
        now = self.driver.now()
        self.driver.run(lambda e: e.redirect(to, now, name=name, peer=peer),  # type: ignore[attr-defined]
                        where=f"redirect to {to}", conn=name)
        emit(f"redirecting to {to}")
        return RC_SUCCESS, None, None

    async def _rereadsecrets(self, args: dict[str, Any], emit: Emit) -> Result:
        return self._captured(emit, self.daemon.reread_secrets)

    async def _reopenlogs(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --reopenlogs``: reopen ``--logfile`` by name (logrotate's postrotate)."""
        emit(self.daemon.reopen_logs())
        return RC_SUCCESS, None, None

    async def _listpsks(self, args: dict[str, Any], emit: Emit) -> Result:
        for line in fmt.render_psks(self.secrets.records(), self.secrets.files):
            emit(line)
        return RC_SUCCESS, None, None

    async def _listpubkeys(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --listpubkeys [--json]``: the loaded conns' public keys (issue 14);
        ``expiring`` (``--checkpubkeys``): only those with an expiry warning."""
        from pypluto.config.hostkeys import pubkey_rows, render_pubkeys
        store = self.secrets.certs
        now = time.time()
        rows = pubkey_rows(self.registry.conns.values(), store.hostkeys, store, now)
        if args.get("expiring"):  # --checkpubkeys: Libreswan's SHOW_EXPIRED_KEYS
            rows = [r for r in rows if r["expiry"] and not str(r["expiry"]).startswith("ok")]
        if args.get("json"):
            return RC_SUCCESS, {"schema": fmt.JSON_SCHEMA, "command": "listpubkeys",
                                "pubkeys": rows}, None
        for line in render_pubkeys(rows, now):
            emit(line)
        return RC_SUCCESS, None, None

    # ------------------------------------------------------------- revocation (issue 14)
    async def _fetchcrls(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --fetchcrls``: fetch every known CRL distribution point now."""
        for line in await self.daemon.crlfetch.fetch_all():
            emit(line)
        return RC_SUCCESS, None, None

    async def _listcrls(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --listcrls`` (``--json``): CRLs of the db, files and fetched."""
        rows = self.daemon.crlfetch.listing()
        if args.get("json"):
            return RC_SUCCESS, {"crls": rows}, None
        for line in render_crls(rows):
            emit(line)
        return RC_SUCCESS, None, None

    async def _purgeocsp(self, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --purgeocsp``: empty the OCSP cache."""
        n = self.daemon.crlfetch.store.revocation.purge_ocsp()
        emit(f"purged {n} OCSP cache entr{'y' if n == 1 else 'ies'}")
        return RC_SUCCESS, None, None

    async def _debug(self, args: dict[str, Any], emit: Emit) -> Result:
        specs = args.get("specs", [])
        if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs):
            return RC_BADWHACKMESSAGE, None, "debug specs must be strings"
        if any(s == "help" for s in specs):
            for line in debug_help().split("\n"):
                emit(line)
            return RC_SUCCESS, None, None
        name = args.get("name")
        if name is not None and not isinstance(name, str):  # not a silent global change
            return RC_BADWHACKMESSAGE, None, "debug: name must be a connection name"
        if isinstance(name, str) and name:  # whack --name NAME --debug ...: that conn only
            if name not in self.registry.conns:
                return RC_UNKNOWN_NAME, None, f'no connection named "{name}"'
            try:
                got = parse_debug_specs(specs, self.log.conn_debug.get(name, set()))
            except ValueError as e:
                return RC_WHACK_PROBLEM, None, str(e)
            self.log.set_conn_debug(name, got)
            self.log.log(f"debugging: {','.join(sorted(got)) or 'none'}", conn=name)
            return RC_SUCCESS, None, None
        try:
            self.log.debug = parse_debug_specs(specs, self.log.debug)
        except ValueError as e:
            return RC_WHACK_PROBLEM, None, str(e)
        self.log.log(f"debugging: {','.join(sorted(self.log.debug)) or 'none'}")
        return RC_SUCCESS, None, None

    async def _look_up(self, conn: Connection) -> Callable[[str], list[IPAddress]] | None:
        """The addresses of ``conn``'s host names, looked up on a worker thread so that
        a slow DNS server stalls neither IKE nor whack (``resolver.lookup_names``);
        None when it names no host."""
        names = names_to_look_up(conn)
        if not names:
            return None
        return await asyncio.get_running_loop().run_in_executor(
            None, lookup_names, names, self.registry.resolver)

    async def _add(self, args: dict[str, Any], emit: Emit) -> Result:
        """Load conns from a config file (ipsec add / addconn): ``config`` + ``names``."""
        from pypluto.daemon.options import OptionError, load_setup

        path = args.get("config") or self.daemon.config_path or "/etc/ipsec.conf"
        names = args.get("names") or []
        if not isinstance(path, str) or not isinstance(names, list) or \
                not all(isinstance(n, str) for n in names):
            return RC_BADWHACKMESSAGE, None, "add: config must be a path, names a list of names"
        with contextlib.suppress(OSError):  # missing: load_setup says so
            if not stat.S_ISREG(os.stat(path).st_mode):
                # pluto reads the file itself, in its event loop (Libreswan's addconn
                # reads it in the client): a FIFO or /dev/zero would freeze pluto
                return RC_WHACK_PROBLEM, None, f'add: "{path}" is not a regular file'
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
        conns = {c.name: c for c in config_conns(result)}
        rc = RC_SUCCESS
        if auto:
            names = [n for n, c in conns.items() if c.auto in LOADED_AUTO]
        for n in names:
            # NAME, or the NAME/LxR pairs leftsubnets=/rightsubnets= expanded it into
            found = [conns[n]] if n in conns else \
                [c for c in conns.values() if c.answers_to(n)]
            if not found:
                refused = getattr(result, "failed", {}).get(n)
                if refused:
                    for d in refused:
                        emit(str(d))
                    rc = rc or RC_FATAL
                else:
                    emit(f'conn "{n}" not found in "{path}"')
                    rc = RC_UNKNOWN_NAME
                continue
            for conn in found:  # the cached parse stays pristine: add a copy
                conn = copy.deepcopy(conn)
                replaced = conn.name in self.registry.conns
                r = self.registry.add(conn, emit, await self._look_up(conn))
                if replaced:
                    self._abandon(conn.name, "replaced (ipsec add)")
                rc = rc or r
        return rc, None, None

    # ------------------------------------------------------------- conn commands
    async def _initiate(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        """--initiate: start it; unless --asynchronous, wait for the outcome (waiters.py)."""
        if not self.daemon.listening:
            return RC_DEAF, None, "need --listen before --initiate"
        asynchronous = bool(args.get("async"))
        timeout = args.get("timeout") or 0
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or \
                not math.isfinite(timeout) or timeout < 0:
            return RC_BADWHACKMESSAGE, None, "initiate: timeout must be a number of seconds >= 0"
        conn = self.registry.conns[name]
        if conn.type in ("passthrough", "drop", "reject") or conn.authby == "never":
            return RC_INITSHUNT, None, f'"{name}": cannot initiate a shunt-only connection'
        host = conn.remote.host
        if conn.remote.host_addr is None and host and not host.startswith("%"):
            # a peer's host name that did not resolve at load: tried again now
            answer = await self._look_up(conn)
            if self.registry.conns.get(name) is not conn:  # deleted or replaced meanwhile
                return RC_UNKNOWN_NAME, None, f'"{name}": the connection was replaced'
            for note, level in resolve_names(conn, answer or self.registry.resolver):
                self.log.log(note, level, conn=name)
            if conn.remote.host_addr is None:
                return RC_NOPEERIP, None, (f'"{name}": cannot initiate: the peer\'s host name '
                                           f"{host} does not resolve")
        if conn.remote.host_addr is None:
            return RC_NOPEERIP, None, (f'"{name}": cannot initiate connection without knowing '
                                       "peer IP address")
        engine = self.driver.engine
        up = engine.child_up(name) if engine is not None else None
        if up is not None:  # nothing to wait for: no event will come
            self.registry.up.add(name)
            emit(f'"{name}" #{up}: connection is already up')
            return RC_SUCCESS, None, None
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        waiter = Waiter(name, emit, fut)
        # --asynchronous too: the lines initiating logs at once ("initiating IKEv2
        # connection", Libreswan 5.2's ipsec up --asynchronous output), none after
        self.waiters.add(waiter)
        try:
            rc = self.daemon.initiate(name)
            if rc or asynchronous:
                return rc, None, None
            limit = timeout or max(30.0, conn.retransmit_timeout + 5.0)
            try:
                rc = await asyncio.wait_for(asyncio.shield(fut), limit)
            except TimeoutError:
                return RC_NORETRANSMISSION, None, f'"{name}": no outcome after {limit:g}s'
            return rc, None, None
        finally:
            self.waiters.remove(waiter)

    async def _down(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        emit(f'"{name}": terminating SAs using this connection')
        self.registry.up.discard(name)
        now = self.driver.now()
        self.driver.run(lambda e: e.terminate(name, now), where=f"down {name}", conn=name)
        self._abandon(name, "taken down (whack --down)")
        return RC_SUCCESS, None, None

    async def _delete(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        emit(f'"{name}": terminating SAs using this connection')
        self.registry.delete(name)
        self.log.set_conn_debug(name, set())
        self.log.log("deleted connection", conn=name)
        self._abandon(name, "deleted (whack --delete)")
        return RC_SUCCESS, None, None

    def _abandon(self, name: str, why: str) -> None:
        """A whack still waiting on ``--initiate`` of ``name`` (its exchange was just
        terminated by another whack) is answered now, 56, instead of waiting for its
        time limit (65 s by default) to say "no outcome".  Libreswan's whack gets EOF
        when the state goes and exits 0; pypluto never reports success for a
        connection that did not come up."""
        self.waiters.fail([name], RC_FATAL, f"initiate abandoned: the connection was {why}")

    async def _rekey_ike(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        ike_sas = self.daemon.snapshot()["engine"]["ike_sas"]
        if not any(s["conn"] == name and "ESTABLISHED" in s["state"] for s in ike_sas):
            # never a silent success with nothing rekeyed; the exit status stays 0 as
            # Libreswan's (its "connection does not have IKE SA" is an RC_LOG line)
            emit(f'"{name}": connection does not have an established IKE SA to rekey')
            return RC_SUCCESS, None, None
        now = self.driver.now()
        self.driver.run(lambda e: e.rekey_ike(name, now), where=f"rekey-ike {name}", conn=name)
        return RC_SUCCESS, None, None

    async def _rekey_child(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        ike_sas = self.daemon.snapshot()["engine"]["ike_sas"]
        if not any(ch["conn"] == name and "ESTABLISHED" in ch["state"]
                   for s in ike_sas for ch in s["children"]):
            emit(f'"{name}": connection does not have an established Child SA to rekey')
            return RC_SUCCESS, None, None
        now = self.driver.now()
        self.driver.run(lambda e: e.rekey_child(name, now), where=f"rekey-child {name}",
                        conn=name)
        return RC_SUCCESS, None, None

    async def _route(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --route``: trap policies; the first matching packet negotiates."""
        conn = self.registry.conns[name]
        if conn.remote.host_addr is None and not conn.remote.subnets:
            return RC_ROUTE, None, (f'"{name}": cannot route a connection without a peer '
                                    "address")
        if not self.registry.route(name):
            return RC_ROUTE, None, f'"{name}": could not install the trap policies'
        return RC_SUCCESS, None, None

    async def _unroute(self, name: str, args: dict[str, Any], emit: Emit) -> Result:
        """``whack --unroute``: remove the trap policies (established SAs stay up)."""
        self.registry.unroute(name)
        return RC_SUCCESS, None, None


GLOBAL_COMMANDS: dict[str, GlobalHandler] = {
    "ping": ControlServer._ping,
    "shutdown": ControlServer._shutdown,
    "listen": ControlServer._listen,
    "unlisten": ControlServer._unlisten,
    "rereadsecrets": ControlServer._rereadsecrets,
    "redirect": ControlServer._redirect,
    "listpsks": ControlServer._listpsks,
    "listpubkeys": ControlServer._listpubkeys,
    "reopenlogs": ControlServer._reopenlogs,
    "debug": ControlServer._debug,
    "add": ControlServer._add,
    "fetchcrls": ControlServer._fetchcrls,
    "listcrls": ControlServer._listcrls,
    "purgeocsp": ControlServer._purgeocsp,
}
"""Commands without ``--name`` (the ``--status`` family is ``fmt.STATUS_COMMANDS``)."""

CONN_COMMANDS: dict[str, ConnHandler] = {
    "initiate": ControlServer._initiate,
    "down": ControlServer._down,
    "delete": ControlServer._delete,
    "rekey-ike": ControlServer._rekey_ike,
    "rekey-child": ControlServer._rekey_child,
    "route": ControlServer._route,
    "unroute": ControlServer._unroute,
}
"""Commands on one connection, by name."""
