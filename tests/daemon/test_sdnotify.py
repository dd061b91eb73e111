"""daemon/sdnotify.py: WATCHDOG_USEC parsing and the WATCHDOG=1 pings, against a fake systemd."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from pypluto.daemon import sdnotify


@pytest.mark.parametrize("env, want", [
    ({"WATCHDOG_USEC": "200000000", "NOTIFY_SOCKET": "/x"}, 100.0),
    ({"WATCHDOG_USEC": "200000000", "WATCHDOG_PID": "OURPID", "NOTIFY_SOCKET": "@x"}, 100.0),
    ({"WATCHDOG_USEC": "200000000", "WATCHDOG_PID": "1", "NOTIFY_SOCKET": "/x"}, None),
    ({"WATCHDOG_USEC": "0", "NOTIFY_SOCKET": "/x"}, None),
    ({"WATCHDOG_USEC": "soon", "NOTIFY_SOCKET": "/x"}, None),
    ({"WATCHDOG_USEC": "200000000"}, None),
    ({"NOTIFY_SOCKET": "/x"}, None),
])
def test_watchdog_interval(env, want) -> None:
    env = {k: (str(os.getpid()) if v == "OURPID" else v) for k, v in env.items()}
    assert sdnotify.watchdog_interval(env) == want


def test_notify_without_socket_is_false() -> None:
    assert sdnotify.notify("WATCHDOG=1", {}) is False
    assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "relative"}) is False
    assert sdnotify.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "/nonexistent/sock"}) is False


@pytest.mark.parametrize("abstract", [False, True])
def test_watchdog_loop_pings_the_notify_socket(tmp_path, monkeypatch, abstract) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"pypluto-sdnotify-test-{os.getpid()}"
        srv.bind("\0" + name)
        env_path = "@" + name
    else:
        env_path = str(tmp_path / "notify")
        srv.bind(env_path)
    srv.settimeout(30)
    monkeypatch.setenv("NOTIFY_SOCKET", env_path)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")  # ping every 10 ms
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    async def main() -> list[bytes]:
        task = asyncio.create_task(sdnotify.watchdog_loop())
        loop = asyncio.get_running_loop()
        got = [await loop.run_in_executor(None, srv.recv, 64) for _ in range(3)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return got

    try:
        assert asyncio.run(main()) == [b"WATCHDOG=1"] * 3
    finally:
        srv.close()


def test_watchdog_loop_returns_without_watchdog(monkeypatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    sent: list[str] = []
    asyncio.run(sdnotify.watchdog_loop(send=lambda s: sent.append(s) or True))
    assert sent == []
