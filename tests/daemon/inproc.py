"""An in-process Daemon on loopback with a stand-in engine (shared by the in-process tests)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.server import Daemon


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
