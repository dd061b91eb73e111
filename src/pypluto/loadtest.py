"""``ipsec loadtest``: pypluto as a load-generating IKEv2 initiator.

Like strongSwan's load-tester plugin: one process initiates ``N`` new IKE SAs
(RFC 7296 §1.2: IKE_SA_INIT + IKE_AUTH with PSK, §2.15) against one peer, with
``C`` exchanges in flight, and reports the rate, latency percentiles, failures
and its own CPU time per IKE SA.  By default the IKE SAs are childless (RFC 6023
§3: ``CHILDLESS_IKEV2_SUPPORTED`` is sent in IKE_SA_INIT and IKE_AUTH carries
no SA/TS payloads); ``--child`` negotiates one Child SA per IKE SA (its keys are
never installed: the load tester has no kernel backend).

It drives the sans-I/O :class:`pypluto.ike.engine.Engine` directly with one
asyncio UDP socket on port 500 (IKE SAs are not floated to 4500: no NAT is
expected between load tester and peer, RFC 7296 §2.23).  Every initiation
creates a new IKE SA (never a Child SA on an existing one), as
``reuse_ikesa = no`` does for strongSwan.

Entry point for the CLI: :func:`main` with the arguments after ``loadtest``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import ipaddress
import json
import socket
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from pypluto.config.ids import parse_id
from pypluto.config.model import Connection, End
from pypluto.config.proposals import parse_proposals
from pypluto.ike.actions import ConnectionEvent, Endpoint, Log, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

USAGE_NOTE = """\
examples:
  ipsec loadtest --local 192.0.2.1 --remote 192.0.2.2 --psk-file psk.txt \\
      --local-id @gen.example --remote-id @resp.example -n 1000 -c 16
The PSK is read from --psk-file (first line) or the PLUTO_LOADTEST_PSK
environment variable; it is never printed."""


class LoadTestError(Exception):
    """Bad arguments or an unusable socket; reported as one line, exit status 2."""


class _Secrets:
    """The one PSK of the load test (``SecretStore`` protocol of the engine)."""

    def __init__(self, psk: bytes) -> None:
        self._psk = psk

    def psk_for(self, local: Any, remote: Any, local_addr: Any, remote_addr: Any
                ) -> bytes | None:
        return self._psk

    def __repr__(self) -> str:  # never the key
        return "_Secrets(<psk>)"


@dataclass
class Options:
    """What to initiate, against whom, and how hard."""

    local: str
    remote: str
    psk: bytes = field(repr=False)
    local_id: str = ""
    remote_id: str = ""
    count: int = 100
    concurrency: int = 8
    ike: str = "aes_gcm256-sha2_256-dh31"
    esp: str = "aes_gcm256"
    child: bool = False
    local_subnet: str = "198.51.100.0/24"
    remote_subnet: str = "203.0.113.0/24"
    port: int = 500
    timeout: float = 300.0
    retransmit_timeout: float = 20.0
    json: bool = False  # print the result as JSON
    # road warriors (RFC 7296 §3.15): ask for an address in IKE_AUTH (implies a Child
    # SA); ``{n}`` in local_id makes one ID (one conn) per IKE SA, as real clients have
    modecfg: bool = False
    down: bool = False  # delete every IKE SA at the end (the gateway frees the leases)
    hold: float = 0.0  # seconds to keep the SAs up before --down


def build_connection(o: Options) -> Connection:
    """The one connection every IKE SA of the load test is negotiated for."""
    try:
        local = ipaddress.ip_address(o.local)
        remote = ipaddress.ip_address(o.remote)
        lsub = ipaddress.ip_network(o.local_subnet, strict=False)
        rsub = ipaddress.ip_network(o.remote_subnet, strict=False)
    except ValueError as e:
        raise LoadTestError(str(e)) from None
    if local.version != remote.version:
        raise LoadTestError("--local and --remote must be of the same address family")
    try:
        lid = parse_id(o.local_id) if o.local_id else None
        rid = parse_id(o.remote_id) if o.remote_id else None
        ike = parse_proposals(o.ike, "IKE")
        esp = parse_proposals(o.esp, "ESP")
    except Exception as e:  # the config layer's own error types: one line for the user
        raise LoadTestError(f"{type(e).__name__}: {e}") from None
    conn = Connection(
        name="loadtest",
        left=End(host=str(local), host_addr=local, id=lid, subnets=[lsub]),
        right=End(host=str(remote), host_addr=remote, id=rid, subnets=[rsub],
                  ikeport=o.port if o.port != 500 else None),
        authby="secret", auto="add", local_is_left=True, ike=ike, esp=esp,
        rekey=False, keyingtries=1, retransmit_timeout=o.retransmit_timeout,
        initial_contact=False)  # §2.4: INITIAL_CONTACT would make the peer drop the others
    conn.raw["childless"] = "no" if o.child or o.modecfg else "yes"
    if o.modecfg:
        conn.left.modecfgclient = True
        conn.left.subnets = []
    return conn


def _conn_for(base: Connection, o: Options, n: int) -> Connection:
    """Road warrior ``n``'s own conn when ``--local-id`` has ``{n}``."""
    if "{n}" not in o.local_id:
        return base
    c = copy.deepcopy(base)
    c.name = f"loadtest-{n}"
    c.left.id = parse_id(o.local_id.replace("{n}", str(n)))
    return c


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, lt: LoadTest) -> None:
        self.lt = lt

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.lt.received(data, addr)

    def error_received(self, exc: Exception) -> None:  # ICMP unreachable and such
        self.lt.errors += 1


class LoadTest:
    """One run: ``count`` IKE SAs with ``concurrency`` in flight."""

    def __init__(self, o: Options) -> None:
        self.o = o
        self.conn = build_connection(o)
        assert self.conn.local.host_addr is not None
        self.local_ep = Endpoint(self.conn.local.host_addr, 500)
        settings = EngineSettings(uniqueids=False)
        self.engine = Engine(settings, _Secrets(o.psk), local_addrs=[self.conn.local.host_addr])
        self.engine.add_connection(self.conn)
        self.started: dict[int, float] = {}
        self.latencies: list[float] = []
        self.failures = 0
        self.errors = 0
        self.todo = o.count
        self.reasons: dict[str, int] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.done: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.want = "child-established" if o.child or o.modecfg else "ike-established"
        self.addresses: list[str] = []  # from the gateway's CFG_REPLY (--modecfg)
        self.n = 0

    # ------------------------------------------------------------------ engine glue
    def now(self) -> float:
        assert self.loop is not None
        return self.loop.time()

    def execute(self, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, SendPacket):
                if self.transport is not None:
                    self.transport.sendto(a.data, (str(a.remote.addr), a.remote.port))
            elif isinstance(a, ConnectionEvent):
                self.event(a)
            elif isinstance(a, Log) and a.level == "error":
                self.reasons[a.message[:80]] = self.reasons.get(a.message[:80], 0) + 1
        self.arm_timer()

    def event(self, ev: ConnectionEvent) -> None:
        serial = ev.serial
        if ev.kind == "child-established":  # the event names the Child SA: find its IKE SA
            serial = next((s for s in self.started
                           if any(c.serial == ev.serial for c in
                                  getattr(self.engine.by_serial.get(s), "children", ()))),
                          ev.serial)
        t0 = self.started.pop(serial, None)
        if t0 is None:
            return
        if ev.kind == self.want:
            self.latencies.append((self.now() - t0) * 1000)
            ike = self.engine.by_serial.get(serial)
            if ike is not None:
                self.addresses += [str(a) for a in ike.local_vips]
        elif ev.kind in ("failed", "ike-deleted", "peer-dead"):
            self.failures += 1
            key = ev.detail[:80] or ev.kind
            self.reasons[key] = self.reasons.get(key, 0) + 1
        else:  # e.g. ike-established while waiting for the Child SA
            self.started[serial] = t0
            return
        self.next()

    def arm_timer(self) -> None:
        assert self.loop is not None
        t = self.engine.next_timer()
        if self.timer is not None:
            if t is not None and abs(self.timer.when() - t) < 1e-3:
                return
            self.timer.cancel()
            self.timer = None
        if t is not None:
            self.timer = self.loop.call_at(t, self.fire)

    def fire(self) -> None:
        self.timer = None
        self.execute(self.engine.handle_timer(self.now()))

    def received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            remote = Endpoint(ipaddress.ip_address(addr[0].split("%")[0]), addr[1])
        except ValueError:
            return
        self.execute(self.engine.receive(data, self.local_ep, remote, self.now()))

    def next(self) -> None:
        """Start one more IKE SA, or finish when all have an outcome."""
        if self.todo > 0:
            self.todo -= 1
            # a new IKE SA every time (Engine.initiate would add a Child SA to an
            # established IKE SA of the same connection)
            self.n += 1
            conn = _conn_for(self.conn, self.o, self.n)
            if conn is not self.conn:
                self.engine.add_connection(conn)
            acts = self.engine.initiate_ike(conn, self.now())
            serial = next((a.serial for a in acts if isinstance(a, Log)
                           and a.serial is not None), None)
            if serial is not None:
                self.started[serial] = self.now()
            else:
                self.failures += 1
            self.execute(acts)
            if serial is None:
                self.next()
        elif not self.started and self.done is not None and not self.done.done():
            self.done.set_result(None)

    # ------------------------------------------------------------------ run
    async def run(self) -> dict[str, Any]:
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if self.local_ep.addr.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.bind((str(self.local_ep.addr), 500))
        except OSError as e:
            sock.close()
            raise LoadTestError(f"cannot bind {self.local_ep.addr}:500: {e.strerror}") from None
        sock.setblocking(False)
        self.transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _Proto(self), sock=sock)
        self.done = self.loop.create_future()
        cpu0, t0 = time.process_time(), time.monotonic()
        try:
            for _ in range(min(self.o.concurrency, self.o.count)):
                self.next()
            if self.o.count == 0:
                self.done.set_result(None)
            try:
                await asyncio.wait_for(self.done, self.o.timeout)
            except TimeoutError:
                pass
            wall = time.monotonic() - t0
            cpu = time.process_time() - cpu0
            if self.o.hold > 0:
                await asyncio.sleep(self.o.hold)
            if self.o.down:  # Delete every IKE SA (RFC 7296 §1.4.1) and wait for answers
                self.execute(self.engine.shutdown(self.now()))
                await asyncio.sleep(min(2.0, 0.2 + self.o.count / 1000))
        finally:
            if self.timer is not None:
                self.timer.cancel()
            self.transport.close()
        lat = sorted(self.latencies)
        n = len(lat)
        return {
            "requested": self.o.count,
            "established": n,
            "failures": self.failures,
            "unfinished": len(self.started) + self.todo,
            "wall_s": round(wall, 3),
            "rate": n / wall if wall > 0 else 0.0,
            "cpu_ms_per_sa": cpu * 1000 / n if n else None,
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": lat[min(n - 1, int(n * 0.99))] if lat else None,
            "child": self.o.child,
            "reasons": self.reasons,
            "socket_errors": self.errors,
            "addresses": len(self.addresses),
            "unique_addresses": len(set(self.addresses)),
        }


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(
        prog="ipsec loadtest", epilog=USAGE_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Initiate N new IKEv2 SAs (PSK) with C in flight; print rate, "
                    "latency and CPU per IKE SA.")
    p.add_argument("--local", required=True, help="our address (bound on port 500)")
    p.add_argument("--remote", required=True, help="the responder's address")
    p.add_argument("--port", type=int, default=500, help="the responder's IKE port")
    p.add_argument("--psk-file", help="file whose first line is the PSK")
    p.add_argument("--local-id", default="", help="our ID, e.g. @gen.example")
    p.add_argument("--remote-id", default="", help="the responder's ID")
    p.add_argument("-n", "--count", type=int, default=100)
    p.add_argument("-c", "--concurrency", type=int, default=8)
    p.add_argument("--ike", default=Options.ike, help="ike= proposal (Libreswan syntax)")
    p.add_argument("--esp", default=Options.esp, help="esp= proposal (with --child)")
    p.add_argument("--child", action="store_true", help="one Child SA per IKE SA")
    p.add_argument("--local-subnet", default=Options.local_subnet)
    p.add_argument("--remote-subnet", default=Options.remote_subnet)
    p.add_argument("--timeout", type=float, default=300.0, help="give up after (s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--modecfg", action="store_true",
                   help="road warriors: ask for an address (CP) with the Child SA; "
                        "use --local-id @rw-{n}.example for one ID each")
    p.add_argument("--down", action="store_true", help="delete every IKE SA at the end")
    p.add_argument("--hold", type=float, default=0.0,
                   help="keep the SAs up this many seconds before --down")
    ns = p.parse_args(argv)
    import os

    psk_text = os.environ.get("PLUTO_LOADTEST_PSK", "")
    if ns.psk_file:
        try:
            with open(ns.psk_file, encoding="utf-8") as f:
                psk_text = f.readline().strip()
        except OSError as e:
            raise LoadTestError(f"cannot read --psk-file: {e.strerror}") from None
    if psk_text.startswith('"') and psk_text.endswith('"') and len(psk_text) >= 2:
        psk_text = psk_text[1:-1]
    if not psk_text:
        raise LoadTestError("no PSK: give --psk-file or set PLUTO_LOADTEST_PSK")
    if ns.count < 0 or ns.concurrency < 1:
        raise LoadTestError("-n must be >= 0 and -c >= 1")
    o = Options(local=ns.local, remote=ns.remote, psk=psk_text.encode(), local_id=ns.local_id,
                remote_id=ns.remote_id, count=ns.count, concurrency=ns.concurrency,
                ike=ns.ike, esp=ns.esp, child=ns.child, local_subnet=ns.local_subnet,
                remote_subnet=ns.remote_subnet, port=ns.port, timeout=ns.timeout,
                json=ns.json, modecfg=ns.modecfg, down=ns.down,
                hold=ns.hold)
    return o


def main(argv: list[str] | None = None) -> int:
    """``ipsec loadtest ARGS``: 0 when every IKE SA was established, 1 if not, 2 on error."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        o = parse_args(argv)
        result = asyncio.run(LoadTest(o).run())
    except LoadTestError as e:
        print(f"ipsec loadtest: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if o.json:
        print(json.dumps(result))
    else:
        def f(v: Any) -> str:
            return "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
        print(f"established {result['established']}/{result['requested']} IKE SAs"
              f"{' with a Child SA' if o.child else ''} in {f(result['wall_s'])} s: "
              f"{f(result['rate'])}/s, CPU {f(result['cpu_ms_per_sa'])} ms/IKE SA, "
              f"p50 {f(result['p50_ms'])} ms, p99 {f(result['p99_ms'])} ms, "
              f"failures {result['failures']}, unfinished {result['unfinished']}")
        if o.modecfg:
            print(f"  addresses received {result['addresses']}, unique "
                  f"{result['unique_addresses']}")
        for why, k in sorted(result["reasons"].items(), key=lambda x: -x[1])[:5]:
            print(f"  {k} x {why}")
    return 0 if result["established"] == o.count else 1


if __name__ == "__main__":
    sys.exit(main())
