"""Red-team pass on the whack control socket: hostile frames and clients get a clear
refusal (rc 50) or a close, never a crash report, a hang or a stuck connection; the
daemon keeps answering.  (Random garbage and wrong arg types are in
test_daemon_inprocess.py::test_control_socket_survives_garbage.)"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import socket
import struct
from pathlib import Path
from typing import Any

import pytest
from inproc import ScriptedEngine, make_env
from inproc import start as _start

from pypluto.cli import whack
from pypluto.config.model import Connection, End
from pypluto.control.client import ControlError, call
from pypluto.control.protocol import (
    PROTOCOL_NAME,
    RC_BADWHACKMESSAGE,
    RC_SUCCESS,
    RC_UNKNOWN_NAME,
    VERSION,
)
from pypluto.daemon import control as control_mod
from pypluto.daemon.server import Daemon
from pypluto.ike.status import ConnectionStatus, EngineStatus

LO = ipaddress.ip_address("127.0.0.1")
BASE = {"proto": PROTOCOL_NAME, "version": VERSION, "type": "request"}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=0)


def _conn(name: str = "c1") -> Connection:
    return Connection(name=name, left=End(host="127.0.0.1", host_addr=LO),
                      right=End(host="192.0.2.9", host_addr=ipaddress.ip_address("192.0.2.9")),
                      authby="secret", auto="add")


async def _start_daemon(env: dict[str, Any]) -> tuple[Daemon, ScriptedEngine, str]:
    d, eng, peer = await _start(env, ScriptedEngine)
    peer.close()
    assert d.registry.add(_conn()) == RC_SUCCESS
    return d, eng, str(env["tmp"] / "pluto.ctl")


async def _exchange(path: str, body: bytes, timeout: float = 10) -> list[dict[str, Any]]:
    """Send one framed ``body``; the frames of the answer, up to the server's close."""
    r, w = await asyncio.open_unix_connection(path)
    w.write(struct.pack("!I", len(body)) + body)
    await w.drain()
    data = await asyncio.wait_for(r.read(), timeout)
    w.close()
    frames = []
    while data:
        (n,) = struct.unpack("!I", data[:4])
        frames.append(json.loads(data[4:4 + n]))
        data = data[4 + n:]
    return frames


def _req(command: str, **args: Any) -> bytes:
    return json.dumps({**BASE, "command": command, "args": args}).encode()


def _crashes(env: dict[str, Any]) -> list[str]:
    return [p.name for p in env["tmp"].iterdir() if p.name.startswith("pluto-crash")]


async def _ping(path: str) -> int:
    loop = asyncio.get_running_loop()
    return (await loop.run_in_executor(None, lambda: call(path, "ping", {}, timeout=10))).rc


def test_deeply_nested_json_is_a_bad_request(env: dict[str, Any]) -> None:
    """10,000-deep JSON overflows the decoder's recursion: rc 50, not a crash report
    and a silent close."""
    async def body() -> None:
        d, _eng, path = await _start_daemon(env)
        for blob in (b"[" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            frames = await _exchange(path, blob)
            assert [f["type"] for f in frames] == ["result"]
            assert frames[0]["rc"] == RC_BADWHACKMESSAGE
            assert "nested too deep" in frames[0]["error"]
        assert _crashes(env) == []
        assert await _ping(path) == RC_SUCCESS
        await d.shutdown()

    asyncio.run(body())


@pytest.mark.parametrize("timeout", ["abc", [1], {"s": 1}, True, -1, "NaN", "Infinity"])
def test_initiate_with_a_bad_timeout_is_refused(env: dict[str, Any], timeout: Any) -> None:
    """A timeout that is not a finite number of seconds >= 0: rc 50 at once (it used to
    be an internal error with a crash report, or, for NaN, a wait without end)."""
    async def body() -> None:
        d, eng, path = await _start_daemon(env)
        raw = _req("initiate", name="c1", timeout=0)
        if timeout in ("NaN", "Infinity"):  # Python's json writes and reads these literals
            raw = raw.replace(b'"timeout": 0', b'"timeout": ' + timeout.encode())
        else:
            raw = _req("initiate", name="c1", timeout=timeout)
        frames = await _exchange(path, raw, timeout=5)
        assert frames[-1]["rc"] == RC_BADWHACKMESSAGE
        assert "timeout must be a number of seconds" in frames[-1]["error"]
        assert eng.initiated == [] and _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_redirect_and_debug_refuse_a_name_that_is_not_a_string(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, _eng, path = await _start_daemon(env)
        frames = await _exchange(path, _req("redirect", to="192.0.2.1", name=["c1"]))
        assert frames[-1]["rc"] == RC_BADWHACKMESSAGE and "name" in frames[-1]["error"]
        # a conn's debug request with a mangled name must not turn on debugging globally
        before = set(d.log.debug)
        frames = await _exchange(path, _req("debug", specs=["all"], name=["c1"]))
        assert frames[-1]["rc"] == RC_BADWHACKMESSAGE
        assert set(d.log.debug) == before
        assert _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_error_echoing_a_hostile_name_is_one_visible_bounded_line(env: dict[str, Any]) -> None:
    """``no connection or alias named "X"`` echoes X: escape sequences, newlines and NUL
    come back escaped, a 10 MB name bounded, so whack prints one safe line."""
    async def body() -> None:
        d, _eng, path = await _start_daemon(env)
        frames = await _exchange(path, _req("down", name="\x1b[2J\x1b]0;pwn\x07a\nb\x00\udcff"))
        err = frames[-1]["error"]
        assert frames[-1]["rc"] == RC_UNKNOWN_NAME
        assert err.isprintable() and "\\x1b[2J" in err and "\\n" in err and "\\x00" in err
        frames = await _exchange(path, _req("down", name="x" * 10_000_000), timeout=30)
        assert frames[-1]["rc"] == RC_UNKNOWN_NAME and len(frames[-1]["error"]) < 4096
        assert "chars]" in frames[-1]["error"]
        assert await _ping(path) == RC_SUCCESS
        await d.shutdown()

    asyncio.run(body())


def test_a_client_that_never_reads_its_answer_is_dropped(env: dict[str, Any],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A large status answer to a whack that never reads it: the connection is aborted
    after WRITE_TIMEOUT (it used to wait in drain() for ever, holding the answer), and
    the daemon answers others meanwhile."""
    monkeypatch.setattr(control_mod, "WRITE_TIMEOUT", 1.0)

    async def body() -> None:
        d, eng, path = await _start_daemon(env)
        eng.status_obj = EngineStatus(connections=[
            ConnectionStatus(f"conn-{i:05d}-" + "x" * 60, "127.0.0.1", "192.0.2.9",
                             "@west", "@east", [], [], "secret", "tunnel", "add")
            for i in range(20_000)])
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await loop.run_in_executor(None, s.connect, path)
        raw = _req("status", json=True)
        s.sendall(struct.pack("!I", len(raw)) + raw)
        await asyncio.sleep(0.5)
        # not blocked by the stuck client (which would hold it for WRITE_TIMEOUT, 30 s)
        assert await asyncio.wait_for(_ping(path), 10) == RC_SUCCESS
        # the server gives up on it: a read now ends (reset or EOF) instead of blocking
        s.setblocking(False)
        deadline = loop.time() + 10
        ended = False
        while loop.time() < deadline and not ended:
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        ended = True
                        break
            except BlockingIOError:
                await asyncio.sleep(0.1)
            except ConnectionResetError:
                ended = True
        s.close()
        assert ended, "the server kept the unread answer's connection open"
        assert _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_slow_and_many_clients_do_not_block_the_daemon(env: dict[str, Any]) -> None:
    """500 clients each holding a half-sent frame (slowloris), then 500 pings at once, then
    clients hanging up mid-answer: every ping is answered, nothing crashes."""
    async def body() -> None:
        d, eng, path = await _start_daemon(env)
        held = []
        for _ in range(500):
            _r, w = await asyncio.open_unix_connection(path)
            w.write(b"\x00\x00\x01")  # 3 of the 4 length bytes, then nothing
            held.append(w)
        # not blocked by them (each would hold a blocking reader for READ_TIMEOUT, 30 s)
        assert await asyncio.wait_for(_ping(path), 10) == RC_SUCCESS
        loop = asyncio.get_running_loop()
        replies = await asyncio.gather(*[
            loop.run_in_executor(None, lambda: call(path, "ping", {}, timeout=30))
            for _ in range(500)])
        assert all(r.rc == RC_SUCCESS for r in replies)
        for w in held:
            w.close()
        # clients that close right after asking for a (large) status
        eng.status_obj = EngineStatus(connections=[
            ConnectionStatus(f"c{i}", "127.0.0.1", "192.0.2.9", "@west", "@east", [], [],
                             "secret", "tunnel", "add") for i in range(3000)])
        for _ in range(20):
            _r, w = await asyncio.open_unix_connection(path)
            raw = _req("status")
            w.write(struct.pack("!I", len(raw)) + raw)
            await w.drain()
            w.close()
        await asyncio.sleep(0.5)
        assert await _ping(path) == RC_SUCCESS
        assert _crashes(env) == []
        await d.shutdown()

    asyncio.run(body())


def test_whack_cli_errors_are_one_line_and_non_zero(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Odd whack arguments: one line on stderr and rc 33, never a traceback; a socket
    path too long for AF_UNIX says why (it used to print "(None None)")."""
    long_path = str(tmp_path / ("s" * 200))
    for argv in (["--timeout", "abc", "--name", "x", "--initiate"], ["--name"],
                 ["--bogus"], ["stray"], ["--json", "--listpsks"],
                 ["--ctlsocket", long_path, "--status"],
                 ["--ctlsocket", str(tmp_path), "--status"]):
        rc = whack.main(argv)
        err = capsys.readouterr().err
        assert rc == 33, argv
        assert err.count("\n") == 1 and err.startswith("whack: "), (argv, err)
        assert "None None" not in err
    with pytest.raises(ControlError, match="too long"):
        call(long_path, "ping", {})
