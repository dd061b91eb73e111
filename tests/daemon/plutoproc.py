"""Helpers to run real pluto processes in private network namespaces for the tests.

Namespaces are named ``ppd<PID>x<N>`` (unique per test process) and deleted
again, with every process the test started, even when the test fails.  Only
PIDs that the test started are ever signalled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pypluto.control.client import ControlError, call

_seq = itertools.count(1)


def root_conftest():  # type: ignore[no-untyped-def]
    """tests/conftest.py (shared_path, require, is_root), loaded by path once."""
    import importlib.util

    mod = sys.modules.get("_pypluto_tests_conftest")
    if mod is None:
        path = Path(__file__).resolve().parents[1] / "conftest.py"
        spec = importlib.util.spec_from_file_location("_pypluto_tests_conftest", path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
    return mod
PY = sys.executable


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


class NetNS:
    def __init__(self) -> None:
        self.name = f"ppd{os.getpid()}x{next(_seq)}"
        sh("ip", "netns", "add", self.name)
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *args, check=check)

    def delete(self) -> None:
        sh("ip", "netns", "del", self.name, check=False)


def run_main(module: str, argv: list[str], check: bool = False
             ) -> subprocess.CompletedProcess[str]:
    """Run a CLI's ``main(argv)`` in-process, capturing stdout/stderr like a process."""
    import importlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = importlib.import_module(module).main(list(argv))
    res = subprocess.CompletedProcess([module, *argv], rc, out.getvalue(), err.getvalue())
    if check and rc != 0:
        raise AssertionError(f"{module} {argv} exited {rc}: {res.stdout}{res.stderr}")
    return res


def wait_for(pred: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child of ours counts as dead
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().split(") ", 1)[1].startswith("Z"):
                return False
    return True


class Pluto:
    """One pluto in ``ns`` with its own rundir under ``tmp``."""

    def __init__(self, ns: NetNS, tmp: Path, name: str = "pluto") -> None:
        self.ns = ns
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rundir = self.dir / "run"
        self.out = self.dir / "stdout"
        self.err = self.dir / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pids: set[int] = set()

    @property
    def ctl(self) -> str:
        return str(self.rundir / "pluto.ctl")

    @property
    def pidfile(self) -> Path:
        return self.rundir / "pluto.pid"

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns.name, PY, "-m", "pypluto.cli.pluto",
                "--rundir", str(self.rundir), *args]

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.out, "wb") as o, open(self.err, "wb") as e:
            self.proc = subprocess.Popen(self.argv(*args), stdout=o, stderr=e,
                                         stdin=subprocess.DEVNULL, env=env)
        self.pids.add(self.proc.pid)
        return self.proc

    def ready(self) -> bool:
        try:
            return call(self.ctl, "ping", {}, timeout=2).rc == 0
        except ControlError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        def check() -> bool:
            if self.proc is not None and self.proc.poll() is not None and \
                    "--nofork" in (self.proc.args or []):  # type: ignore[operator]
                raise AssertionError(f"pluto exited {self.proc.returncode}: "
                                     f"{self.err.read_text()}")
            return self.ready()

        wait_for(check, timeout, "pluto to answer on its control socket")
        with contextlib.suppress(OSError, ValueError):
            self.pids.add(int(self.pidfile.read_text().strip()))

    def whack(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """whack's main() in this process (same code as the console script, no start-up
        cost); the exit status and output come back as from a process."""
        return run_main("pypluto.cli.whack", ["--rundir", str(self.rundir), *args], check)

    def whack_process(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(PY, "-m", "pypluto.cli.whack", "--rundir", str(self.rundir), *args,
                  check=False)

    def stop(self) -> None:
        for pid in list(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in list(self.pids):
            end = time.monotonic() + 10
            while alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def log(self) -> str:
        parts = []
        for p in (self.out, self.err, self.dir / "log"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "\n".join(parts)
