"""Shared test helpers (import as `from testsupport import ...`): where ../shared is, what CI demands."""

from __future__ import annotations

import os
import pathlib
import random
import socket

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared; skips the test when ../shared is absent outside CI.

    In CI (CI=true) a missing ../shared is a failure, not a skip.
    """
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} is absent (outside CI)")
    return path


def require(condition: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a prerequisite (root, a peer daemon) is missing."""
    if not condition:
        if IN_CI:
            pytest.fail(f"missing in CI: {what}")
        pytest.skip(f"missing: {what}")


def is_root() -> bool:
    return os.geteuid() == 0


def probe_in_netns(prefix: str, probe: str, timeout: float = 60) -> None:
    """Run the Python script ``probe`` in a fresh network namespace (named ``prefix``
    and our pid, removed afterwards even on failure); it must exit 0 and print "ok"
    last.  Needs root and /dev/net/tun, which the caller's test requires."""
    import subprocess
    import sys

    require(is_root(), "root (network namespaces)")
    require(os.path.exists("/dev/net/tun"), "/dev/net/tun")
    ns = f"{prefix}{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", probe],
                           capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def udp_pair() -> tuple[socket.socket, socket.socket]:
    """(sender, non-blocking receiver bound to 127.0.0.1): two UDP sockets for the
    plane's socket-level tests (mmsg, rxqueue)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return tx, rx


class NullLog:
    """A stand-in for the daemon's PlutoLogger where a test reads no log lines
    (``log``, and the ``hold``/``release`` pair that batches a read's lines)."""

    def log(self, *a: object, **k: object) -> None:
        pass

    def hold(self) -> None:
        pass

    def release(self) -> None:
        pass


class RecordingLog:
    """A stand-in for PlutoLogger that keeps each line as (level, message)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log(self, msg: str, level: str = "info", **_kw: object) -> None:
        self.lines.append((level, msg))


def damaged(data: bytes, n: int, seed: int) -> list[bytes]:
    """``n`` damaged copies of ``data`` (seeded): 1-4 places each with a bit flipped, a
    byte set to a value a DER length or tag trips over, or 1-8 bytes cut out."""
    r = random.Random(seed)
    out = []
    for _ in range(n):
        b = bytearray(data)
        for _ in range(r.randint(1, 4)):
            i = r.randrange(len(b))
            op = r.random()
            if op < 0.6:
                b[i] ^= 1 << r.randrange(8)
            elif op < 0.8:
                b[i] = r.choice((0x00, 0x7F, 0x80, 0x81, 0xFF))
            else:
                del b[i:i + r.randint(1, 8)]
        out.append(bytes(b))
    return out
