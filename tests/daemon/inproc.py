"""An in-process Daemon on loopback and the stand-in engines (EngineAPI) that drive it."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from pathlib import Path
from typing import Any

from pypluto.config.model import Connection
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.server import Daemon
from pypluto.ike.actions import Compute, DelSA, Endpoint, Log, SendPacket
from pypluto.ike.stats import EngineStats
from pypluto.ike.status import EngineStatus
from pypluto.kernel.base import SAExpire

LO = ipaddress.ip_address("127.0.0.1")


class ScriptedEngine:
    """Records every call; ``replies`` maps an incoming payload to the actions to return.

    Implements ``daemon.engine_api.EngineAPI`` (test_engine_api.py checks it).
    """

    def __init__(self, settings: Any, secrets: Any, *, local_addrs: Any = ()) -> None:
        self.settings = settings
        self.secrets = secrets
        self.local_addrs: set[Any] = set(local_addrs)
        self.stats = EngineStats()
        self.raise_on_initiate: BaseException | None = None
        self.resumed: list[tuple[int, object]] = []
        self.expired: list[SAExpire] = []
        self.received: list[tuple[bytes, Endpoint, Endpoint]] = []
        self.replies: dict[bytes, list[Any]] = {}
        self.conns: dict[str, Connection] = {}
        self.timer: float | None = None
        self.timer_fired = 0
        self.initiated: list[str] = []
        self.on_initiate: list[Any] = []
        self.shutdown_called = False
        self.raise_on: bytes | None = None
        self.status_obj = EngineStatus()
        self.acquired: list[Any] = []

    def add_connection(self, conn: Connection) -> list[Any]:
        self.conns[conn.name] = conn
        return []

    def delete_connection(self, name: str, now: float) -> list[Any]:
        self.conns.pop(name, None)
        return []

    def initiate(self, name: str, now: float) -> list[Any]:
        self.initiated.append(name)
        if self.raise_on_initiate is not None:
            raise self.raise_on_initiate
        return list(self.on_initiate)

    def terminate(self, name: str, now: float) -> list[Any]:
        return []

    rekey_ike = rekey_child = terminate

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float) -> list[Any]:
        if self.raise_on is not None and data == self.raise_on:
            raise RuntimeError("scripted engine failure")
        self.received.append((data, local, remote))
        return list(self.replies.get(data, []))

    def handle_timer(self, now: float) -> list[Any]:
        self.timer_fired += 1
        self.timer = None
        return [Log("timer fired", conn="c1", serial=1)]

    def next_timer(self) -> float | None:
        return self.timer

    def sa_counters(self, reqid_or_spi: int, bytes: int, packets: int, now: float
                    ) -> list[Any]:
        return []

    def sa_expired(self, ev: SAExpire, now: float) -> list[Any]:
        self.expired.append(ev)
        return []

    def resume(self, token: int, result: object, now: float) -> list[Any]:
        self.resumed.append((token, result))
        return []

    def status(self, now: float) -> EngineStatus:
        return self.status_obj

    def fail_child(self, serial: int, why: str, now: float) -> list[Any]:
        return []

    def route(self, name: str, now: float) -> list[Any]:
        return []

    def unroute(self, name: str, now: float) -> list[Any]:
        return []

    def routed(self, name: str) -> bool:
        return False

    def child_up(self, name: str) -> int | None:
        return None

    def acquire(self, ev: Any, now: float) -> list[Any]:
        self.acquired.append(ev)
        return []

    def shutdown(self, now: float) -> list[Any]:
        self.shutdown_called = True
        return [DelSA(LO, 0x1234, conn_name="c1", serial=2)]


class OffloadingEngine:
    """Answers datagram ``X`` after a Compute job: ``job`` names the thread it ran on.

    Implements ``daemon.engine_api.EngineAPI`` (test_engine_api.py checks it).
    """

    def __init__(self, settings: Any, secrets: Any, *, local_addrs: Any = ()) -> None:
        self.settings = settings
        self.local_addrs: set[Any] = set(local_addrs)
        self.stats = EngineStats()
        self.resumed: list[tuple[int, object, str]] = []
        self.received: list[bytes] = []
        self.peer: Endpoint | None = None
        self.local: Endpoint | None = None

    def add_connection(self, conn: Any) -> list[Any]:
        return []

    def delete_connection(self, name: str, now: float) -> list[Any]:
        return []

    def initiate(self, name: str, now: float) -> list[Any]:
        return []

    terminate = rekey_ike = rekey_child = initiate

    def sa_counters(self, reqid_or_spi: int, bytes: int, packets: int, now: float
                    ) -> list[Any]:
        return []

    def sa_expired(self, ev: Any, now: float) -> list[Any]:
        return []

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float) -> list[Any]:
        self.received.append(data)
        self.peer, self.local = remote, local
        if data == b"FAIL":
            def job() -> object:
                raise RuntimeError("helper job exploded")
            return [Compute(job, 2)]
        if data == b"KE":
            return [Compute(lambda: threading.current_thread().name, 1)]
        return []

    def resume(self, token: int, result: object, now: float) -> list[Any]:
        self.resumed.append((token, result, threading.current_thread().name))
        assert self.peer is not None and self.local is not None
        return [SendPacket(f"RESUMED {token}".encode(), self.local, self.peer),
                Log(f"resumed job {token}")]

    def handle_timer(self, now: float) -> list[Any]:
        return []

    def next_timer(self) -> float | None:
        return None

    def status(self, now: float) -> EngineStatus:
        return EngineStatus()

    def fail_child(self, serial: int, why: str, now: float) -> list[Any]:
        return []

    def route(self, name: str, now: float) -> list[Any]:
        return []

    def unroute(self, name: str, now: float) -> list[Any]:
        return []

    def routed(self, name: str) -> bool:
        return False

    def child_up(self, name: str) -> int | None:
        return None

    def acquire(self, ev: Any, now: float) -> list[Any]:
        return []

    def shutdown(self, now: float) -> list[Any]:
        return []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_env(tmp_path: Path, nhelpers: int = 0) -> dict[str, Any]:
    """Options for a daemon on 127.0.0.1 with free IKE and NAT-T ports, logging to a file."""
    ike, natt = free_port(), free_port()
    while natt == ike:
        natt = free_port()
    opts = PlutoOptions(
        rundir=str(tmp_path), coredir=str(tmp_path), secretsfile=str(tmp_path / "none"),
        backend="none", listen="127.0.0.1", ikeport=ike, natikeport=natt, nhelpers=nhelpers,
    )
    log = PlutoLogger(logfile=str(tmp_path / "log"), logtime=False)
    return {"opts": opts, "log": log, "tmp": tmp_path}


async def start(env: dict[str, Any], engine_cls: Any) -> tuple[Daemon, Any, socket.socket]:
    """Start the daemon with ``engine_cls`` as its engine; return it, the engine, a peer socket."""
    engines: list[Any] = []

    def factory(*a: Any, **k: Any) -> Any:
        engines.append(engine_cls(*a, **k))
        return engines[-1]

    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ctl.bind(str(env["tmp"] / "pluto.ctl"))
    ctl.listen(8)
    ctl.setblocking(False)
    d = Daemon(env["opts"], env["log"], engine_factory=factory)
    await d.start(ctl)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    return d, engines[0], peer


async def recv(sock: socket.socket, timeout: float = 5.0) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)


async def until(pred: Any, timeout: float = 5.0) -> None:
    """Wait (on the running loop) until ``pred()`` is true; AssertionError after ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)
