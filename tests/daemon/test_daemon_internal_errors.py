"""Internal errors: a crash report with the traceback, and whack --initiate answered at once.

Three sources: an exception out of an engine call made by the daemon
(``initiate``, ``receive``), and an ``EventKind.INTERNAL_ERROR`` event the
engine emits after catching one itself (its traceback travels on the error
``Log`` just before).  In each case the waiting whack gets ``RC_INTERNAL_ERROR``
(52) instead of waiting for its timeout (the request's timeout here is an hour:
a whack that waited for it would hit the test's hang guard).  Also the exit
codes chosen from ``EventKind`` / ``FailReason`` (``daemon/waiters.py``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from inproc import LO, ScriptedEngine, make_env
from inproc import start as _start

from pypluto.config.model import Connection, End
from pypluto.control.client import call
from pypluto.control.protocol import (
    RC_FATAL,
    RC_INTERNAL_ERROR,
    RC_NORETRANSMISSION,
    RC_SUCCESS,
)
from pypluto.daemon.server import Daemon
from pypluto.daemon.waiters import failure_rc
from pypluto.ike.actions import AddSA, ConnectionEvent, EventKind, FailReason, Log
from pypluto.kernel.base import SAParams

PEER = ipaddress.ip_address("127.0.0.2")  # on lo, but not a local address of ours
HANG_GUARD = 60.0  # seconds; only against a hang, the answer comes at once


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=0)


def conn(name: str = "c1") -> Connection:
    return Connection(name=name, left=End(host="127.0.0.1", host_addr=LO),
                      right=End(host=str(PEER), host_addr=PEER), authby="secret", auto="add")


def crash_reports(env: dict[str, Any]) -> list[str]:
    return [p.read_text() for p in sorted(env["tmp"].iterdir())
            if p.name.startswith("pluto-crash-")]


async def whack(env: dict[str, Any], cmd: str, **args: Any) -> tuple[Any, list[str]]:
    out: list[str] = []
    path = str(env["tmp"] / "pluto.ctl")
    loop = asyncio.get_running_loop()
    r = await asyncio.wait_for(
        loop.run_in_executor(None, lambda: call(path, cmd, args, on_output=out.append)),
        HANG_GUARD)
    return r, out


async def start(env: dict[str, Any]) -> tuple[Daemon, ScriptedEngine, Any]:
    d, eng, peer = await _start(env, ScriptedEngine)
    assert d.registry.add(conn()) == RC_SUCCESS
    return d, eng, peer


def test_engine_raising_in_initiate_fails_whack_at_once(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        eng.raise_on_initiate = RuntimeError("initiate exploded")
        r, out = await whack(env, "initiate", name="c1", timeout=3600)
        assert r.rc == RC_INTERNAL_ERROR
        assert any("internal error in initiating c1: RuntimeError: initiate exploded" in x
                   for x in out)
        (report,) = crash_reports(env)
        assert "Traceback" in report and "initiate exploded" in report
        assert "where: initiating c1" in report
        # the daemon carries on: the next initiate works
        eng.raise_on_initiate = None
        eng.on_initiate = [ConnectionEvent(EventKind.CHILD_ESTABLISHED, "c1", 2)]
        r, _ = await whack(env, "initiate", name="c1", timeout=3600)
        assert r.rc == RC_SUCCESS
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_engine_raising_in_receive_fails_whacks_of_that_peer(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        peer.close()
        other = Connection(name="c2", left=End(host="127.0.0.1", host_addr=LO),
                           right=End(host="192.0.2.9",
                                     host_addr=ipaddress.ip_address("192.0.2.9")),
                           authby="secret", auto="add")
        assert d.registry.add(other) == RC_SUCCESS
        eng.raise_on = b"BOOM"
        waiting = asyncio.ensure_future(whack(env, "initiate", name="c2", timeout=3600))
        answer = asyncio.ensure_future(whack(env, "initiate", name="c1", timeout=3600))
        while eng.initiated != ["c2", "c1"] and eng.initiated != ["c1", "c2"]:
            await asyncio.sleep(0.01)  # both whacks are waiting now
        src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        src.bind((str(PEER), 0))
        src.sendto(b"BOOM", ("127.0.0.1", env["opts"].ikeport))  # the engine raises on it
        src.close()
        r, out = await answer
        assert r.rc == RC_INTERNAL_ERROR
        assert any("scripted engine failure" in x for x in out)
        (report,) = crash_reports(env)
        assert "scripted engine failure" in report and "Traceback" in report
        # the whack on c2 (another peer) is still waiting
        assert not waiting.done()
        d.driver.execute([ConnectionEvent(EventKind.CHILD_ESTABLISHED, "c2", 5)])
        r2, _ = await waiting
        assert r2.rc == RC_SUCCESS
        await d.shutdown()

    asyncio.run(body())


def test_daemon_handler_raising_fails_whack_at_once(env: dict[str, Any]) -> None:
    """A bug in the daemon's own action handler (here: the backend's add_sa)."""
    async def body() -> None:
        d, eng, peer = await start(env)
        backend: Any = d.backend

        def add_sa(sa: Any) -> None:
            raise KeyError("handler bug")

        backend.add_sa = add_sa
        sa = SAParams(src=PEER, dst=LO, spi=0x1234, direction="in", conn_name="c1", serial=2)
        eng.on_initiate = [AddSA(sa)]
        r, out = await whack(env, "initiate", name="c1", timeout=3600)
        assert r.rc == RC_INTERNAL_ERROR
        assert any("internal error in executing AddSA: KeyError" in x for x in out)
        (report,) = crash_reports(env)
        assert "handler bug" in report and "Traceback" in report
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_internal_error_event_fails_whack_and_writes_engine_traceback(
        env: dict[str, Any]) -> None:
    tb = ('Traceback (most recent call last):\n  File "ike/tasks/ike_auth.py", line 1\n'
          "KeyError: 'boom'\n")
    err = Log("internal error while processing packet: KeyError: 'boom'", level="error",
              conn="c1", serial=1)
    err.traceback = tb  # type: ignore[attr-defined]  # the field the engine's side adds

    async def body() -> None:
        d, eng, peer = await start(env)
        eng.on_initiate = [err, ConnectionEvent(EventKind.INTERNAL_ERROR, "c1", 1,
                                                "internal error", FailReason.INTERNAL)]
        r, out = await whack(env, "initiate", name="c1", timeout=3600)
        assert r.rc == RC_INTERNAL_ERROR
        assert out[0].startswith('"c1" #1: internal error while processing packet')
        (report,) = crash_reports(env)
        assert tb in report and 'where: engine: "c1" #1' in report
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_internal_error_event_without_traceback_reports_the_error_line(
        env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        eng.on_initiate = [Log("internal error in timer: ValueError: x", level="error",
                               conn="c1", serial=1),
                           ConnectionEvent(EventKind.INTERNAL_ERROR, "c1", 1)]
        r, _ = await whack(env, "initiate", name="c1", timeout=3600)
        assert r.rc == RC_INTERNAL_ERROR
        (report,) = crash_reports(env)
        assert "internal error in timer: ValueError: x" in report
        await d.shutdown()
        peer.close()

    asyncio.run(body())


@pytest.mark.parametrize(("kind", "reason", "detail", "rc"), [
    (EventKind.FAILED, FailReason.TIMEOUT, "", RC_NORETRANSMISSION),
    (EventKind.FAILED, FailReason.AUTHENTICATION, "AUTHENTICATION_FAILED", RC_FATAL),
    # the reason wins over the text
    (EventKind.FAILED, FailReason.PROPOSAL, "timeout in the proposal", RC_FATAL),
    (EventKind.PEER_DEAD, FailReason.NONE, "", RC_NORETRANSMISSION),
    (EventKind.INTERNAL_ERROR, FailReason.NONE, "", RC_INTERNAL_ERROR),
    (EventKind.FAILED, FailReason.INTERNAL, "", RC_INTERNAL_ERROR),
    # no fallback on the text any more (every failure has a reason): a FAILED
    # without one is a fatal negotiation failure whatever its text says
    (EventKind.FAILED, FailReason.NONE, "retransmission limit reached", RC_FATAL),
    (EventKind.FAILED, FailReason.NONE, "NO_PROPOSAL_CHOSEN", RC_FATAL),
])
def test_failure_rc_from_kind_and_reason(kind: EventKind, reason: FailReason, detail: str,
                                         rc: int) -> None:
    assert failure_rc(ConnectionEvent(kind, "c", 1, detail, reason)) == rc
