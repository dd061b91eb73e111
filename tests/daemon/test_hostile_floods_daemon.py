"""Floods at the daemon's control socket: a request's size and the number of control
connections are bounded, extra ones are refused cleanly, and running out of file
descriptors does not stop pluto (``daemon/control.py``, ``daemon/server.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import resource
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from inproc import ScriptedEngine, make_env
from inproc import start as _start

from pypluto.config.model import Connection, End
from pypluto.control.client import ControlError, call
from pypluto.control.protocol import (
    MAX_FRAME,
    MAX_REQUEST,
    RC_BADWHACKMESSAGE,
    RC_SUCCESS,
    RC_WHACK_PROBLEM,
    Request,
    encode_frame,
)
from pypluto.daemon import control as control_mod
from pypluto.daemon.server import Daemon

LO = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=0)


async def _daemon(env: dict[str, Any]) -> tuple[Daemon, str]:
    d, _eng, peer = await _start(env, ScriptedEngine)
    peer.close()
    conn = Connection(name="c1", left=End(host="127.0.0.1", host_addr=LO),
                      right=End(host="192.0.2.9", host_addr=ipaddress.ip_address("192.0.2.9")),
                      authby="secret", auto="add")
    assert d.registry.add(conn) == RC_SUCCESS
    return d, str(env["tmp"] / "pluto.ctl")


async def _call(path: str, command: str = "ping", args: dict[str, Any] | None = None,
                timeout: float = 10):  # noqa: ANN202
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: call(path, command, args or {},
                                                         timeout=timeout))


def _crashes(env: dict[str, Any]) -> list[str]:
    return [p.name for p in env["tmp"].iterdir() if p.name.startswith("pluto-crash")]


async def _settle(d: Daemon, until: Any, limit: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while not until() and loop.time() < end:
        await asyncio.sleep(0.02)


def _largest_add_request() -> int:
    """``ipsec add`` with as many names as one Linux command line can hold (6 MiB at
    most, with any stack limit; each argument costs its bytes, a NUL and an 8-byte
    pointer)."""
    name = "x" * 31
    n = (6 * 1024 * 1024) // (len(name) + 1 + 8)
    frame = encode_frame(Request("add", {"names": [name] * n,
                                         "config": "/etc/ipsec.conf"}).to_obj())
    return len(frame) - 4


def test_request_size_cap_is_above_the_largest_real_request() -> None:
    biggest = _largest_add_request()
    assert biggest < MAX_REQUEST // 2 < MAX_REQUEST < MAX_FRAME
    # whack refuses a request pluto would refuse, before connecting
    with pytest.raises(ControlError, match="too large"):
        call("/nonexistent/pluto.ctl", "add", {"names": ["n" * 1000] * 20000})


def test_a_huge_declared_request_is_refused_unread(env: dict[str, Any]) -> None:
    """A length prefix of 60 MiB (under the 64 MiB frame limit): pluto answers rc 50 at
    once instead of waiting for, and buffering, the body; a request just under the cap
    is still read and answered."""
    async def body() -> None:
        d, path = await _daemon(env)
        r, w = await asyncio.open_unix_connection(path)
        w.write(struct.pack("!I", 60 * 1024 * 1024) + b"{" * 1000)
        await w.drain()
        data = await asyncio.wait_for(r.read(), 5)
        w.close()
        reply = json.loads(data[4:])
        assert reply["rc"] == RC_BADWHACKMESSAGE and "too large" in reply["error"]
        # the largest real request (with headroom) is served
        filler = "y" * (MAX_REQUEST - 4096)
        assert (await _call(path, "ping", {"pad": filler})).rc == RC_SUCCESS
        await _settle(d, lambda: d.control.clients == 0)
        assert d.control.clients == 0 and _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_idle_connections_give_way_to_new_ones(env: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections that never send a request: beyond MAX_PENDING the oldest one idle
    for PENDING_GRACE is closed when a new one comes; whack still gets answers."""
    monkeypatch.setattr(control_mod, "MAX_PENDING", 4)
    monkeypatch.setattr(control_mod, "PENDING_GRACE", 0.05)

    async def body() -> None:
        d, path = await _daemon(env)
        held = []
        for _ in range(10):
            held.append(await asyncio.open_unix_connection(path))
        await _settle(d, lambda: d.control.clients == 10)
        assert d.control.clients == 10  # within the grace nobody is closed
        await asyncio.sleep(0.1)
        assert (await _call(path)).rc == RC_SUCCESS
        # the ping's arrival closed the 6 oldest idle ones (10 + 1 > 4)
        assert d.control.evicted >= 6
        for r, _w in held[:6]:
            assert await asyncio.wait_for(r.read(), 2) == b""
        assert d.control.clients <= 4
        for _r, w in held:
            w.close()
        await _settle(d, lambda: d.control.clients == 0)
        assert d.control.clients == 0 and not d.control._pending
        assert _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_connection_cap_refuses_extra_clients_cleanly(env: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    monkeypatch.setattr(control_mod, "PENDING_GRACE", 3600.0)

    async def body() -> None:
        d, path = await _daemon(env)
        assert d.control.max_clients == min(control_mod.MAX_CLIENTS,
                                            resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)
        d.control.max_clients = 5
        held = [await asyncio.open_unix_connection(path) for _ in range(5)]
        await _settle(d, lambda: d.control.clients == 5)
        reply = await _call(path)
        assert reply.rc == RC_WHACK_PROBLEM and "busy" in (reply.error or "")
        assert d.control.refused == 1 and d.control.clients == 5
        for _r, w in held:
            w.close()
        await _settle(d, lambda: d.control.clients == 0)
        assert (await _call(path)).rc == RC_SUCCESS
        await _settle(d, lambda: d.control.clients == 0)
        assert d.control.clients == 0 and _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_running_out_of_file_descriptors_does_not_stop_pluto(env: dict[str, Any]) -> None:
    """asyncio reports EMFILE on accept() through the loop's exception handler (with the
    exception): it must not become a crash report and a shutdown of every tunnel."""
    async def body() -> None:
        d, path = await _daemon(env)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        n_open = len(os.listdir("/proc/self/fd"))
        clients: list[socket.socket] = []
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (n_open + 40, hard))
            for _ in range(200):
                try:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                except OSError as e:
                    assert e.errno == errno.EMFILE
                    break
                clients.append(s)
                s.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    s.connect(path)
                await asyncio.sleep(0.005)  # the daemon accepts, until it cannot
            await asyncio.sleep(0.3)
        finally:
            for s in clients:
                s.close()
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert not d.shutting_down and _crashes(env) == []
        await asyncio.sleep(1.2)  # asyncio accepts again after a second
        assert (await _call(path)).rc == RC_SUCCESS
        await _settle(d, lambda: d.control.clients == 0)
        assert d.control.clients == 0
        await d.shutdown()

    asyncio.run(body())
