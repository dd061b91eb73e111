"""--nhelpers: the daemon runs the engine's ``Compute`` jobs on its helper pool.

A scripted engine returns ``Compute`` actions for incoming datagrams; the
daemon must run each job on a helper thread, call ``Engine.resume`` on its
event loop with the result (or the job's exception) and carry out what resume
returns.  The real engine's offload is covered in tests/ike/test_offload.py and,
end to end, by the daemon pair tests (their default --nhelpers is -1).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from inproc import OffloadingEngine, make_env, recv
from inproc import start as _start

from pypluto.daemon.helpers import HelperPool, helper_count
from pypluto.daemon.server import Daemon


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=2)


async def start(env: dict[str, Any]) -> tuple[Daemon, OffloadingEngine, socket.socket]:
    return await _start(env, OffloadingEngine)




def test_jobs_run_on_helpers_and_resume_on_the_loop(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        assert eng.settings.offload_crypto is True
        peer.sendto(b"KE", ("127.0.0.1", env["opts"].ikeport))
        assert await recv(peer) == b"RESUMED 1"
        ((token, result, thread),) = eng.resumed
        assert token == 1 and str(result).startswith("pluto-helper")
        assert thread == threading.current_thread().name  # the event loop's thread
        snap = d.snapshot()["pluto"]
        assert (snap["helpers"], snap["helper_kind"]) == (2, "threads")
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_a_failing_job_is_logged_and_resumed_with_its_exception(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        peer.sendto(b"FAIL", ("127.0.0.1", env["opts"].ikeport))
        assert await recv(peer) == b"RESUMED 2"
        ((token, result, _),) = eng.resumed
        assert token == 2 and isinstance(result, RuntimeError)
        # the daemon carries on
        peer.sendto(b"KE", ("127.0.0.1", env["opts"].ikeport))
        assert await recv(peer) == b"RESUMED 1"
        await d.shutdown()
        peer.close()
        text = (env["tmp"] / "log").read_text()
        assert "crypto helper job failed: RuntimeError: helper job exploded" in text
        assert not any(p.name.startswith("pluto-crash-") for p in env["tmp"].iterdir())

    asyncio.run(body())


def test_no_helpers_means_inline(env: dict[str, Any]) -> None:
    env["opts"].nhelpers = 0

    async def body() -> None:
        d, eng, peer = await start(env)
        assert eng.settings.offload_crypto is False
        assert d.snapshot()["pluto"]["helper_kind"] == "inline"
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_pool_sizes() -> None:
    assert helper_count(0) == 0 and helper_count(3) == 3 and helper_count(-1) >= 1
    pool = HelperPool(1)
    try:
        assert pool.kind == "threads" and pool.submit(lambda x: x + 1, 1).result() == 2
    finally:
        pool.close()
    inline = HelperPool(0)
    fut = inline.submit(lambda: 1 / 0)
    assert inline.kind == "inline" and isinstance(fut.exception(), ZeroDivisionError)
