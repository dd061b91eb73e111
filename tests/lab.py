"""A two-namespace network lab for daemon and interop tests.

Topology (RFC 5737 documentation blocks only; see the interop README)::

    west namespace                                   east namespace
    198.51.100.1 inner (protects 198.51.100.0/24)    203.0.113.1 inner (203.0.113.0/24)
    veth "west" 192.0.2.1/24  <------------------->  veth "east" 192.0.2.2/24

The inner address goes on a dummy interface ``inner0`` (/24) when the kernel
has the dummy link type, else on ``lo`` as a /32.

Rules this module enforces for the shared build machines:

* namespace names are unique per process and per lab (PID plus a counter), and
  only the namespaces a lab created are ever deleted;
* every process is started by :meth:`Lab.spawn` (``start_new_session=True``, so
  the PID is the daemon's own) and teardown signals only those PIDs;
* waits poll real conditions (:meth:`Lab.wait_for`), never fixed sleeps;
* on failure, every registered log is attached to the pytest report (through
  the ``pytest_runtest_makereport`` hook below, re-exported by a conftest) or
  printed, and the scratch directory is kept.

Use it as a context manager::

    with Lab() as lab:
        lab.run(lab.west, ["ping", "-c1", "192.0.2.2"])

or as the ``lab`` pytest fixture: ``from lab import lab`` in a test module (or,
better, ``from lab import lab, pytest_runtest_makereport`` in a conftest.py,
which also attaches the logs to failing reports).  Pass your own ``prefix``
(``Lab(prefix="xf")``) so your namespaces and ``/tmp/lab-*`` workdirs are told
apart from other suites'; ``LAB_KEEP=1`` keeps every workdir, not only failed ones.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import itertools
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from testsupport import require, shared_path  # noqa: F401  (re-exported)

T = TypeVar("T")

WEST_OUTER = "192.0.2.1"
EAST_OUTER = "192.0.2.2"
WEST_INNER = "198.51.100.1"
EAST_INNER = "203.0.113.1"
WEST_SUBNET = "198.51.100.0/24"
EAST_SUBNET = "203.0.113.0/24"

_counter = itertools.count(1)
_live_labs: list[Lab] = []


class LabError(RuntimeError):
    """A lab command failed or a condition was not reached in time."""


def have_netns() -> bool:
    """True when we are root and `ip netns` works (the lab's prerequisites)."""
    return (
        os.geteuid() == 0
        and shutil.which("ip") is not None
        and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0
    )


@dataclass
class Spawned:
    """A process started by the lab."""

    name: str
    proc: subprocess.Popen[bytes]
    logfile: pathlib.Path
    ns: str | None
    expect_alive: bool = True

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Lab:
    """Two namespaces joined by a veth pair, plus the processes started in them."""

    prefix: str = "pp"
    keep_workdir: bool = field(default_factory=lambda: os.environ.get("LAB_KEEP") == "1")
    west: str = ""
    east: str = ""
    workdir: pathlib.Path = field(default_factory=lambda: pathlib.Path())
    dummy: bool = False
    procs: list[Spawned] = field(default_factory=list, repr=False)
    logs: dict[str, pathlib.Path] = field(default_factory=dict, repr=False)
    _namespaces: list[str] = field(default_factory=list)
    _failed: bool = False
    _up: bool = False

    # ----------------------------------------------------------------- setup
    def __post_init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.west = self.west or f"{self.prefix}w{pid}n{n}"
        self.east = self.east or f"{self.prefix}e{pid}n{n}"

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self._failed = True
            self.print_logs()
        self.down()

    def up(self) -> None:
        """Create the namespaces, the veth pair and the addresses (see module doc)."""
        if self._up:
            return
        self.workdir = pathlib.Path(tempfile.mkdtemp(prefix=f"lab-{self.west}-"))
        self.workdir.chmod(0o755)
        _live_labs.append(self)
        self._up = True
        existing = set(list_netns())
        for ns in (self.west, self.east):
            if ns in existing:
                raise LabError(f"namespace {ns} exists already; refusing to reuse it")
        try:
            for ns in (self.west, self.east):
                self.run(None, ["ip", "netns", "add", ns])
                self._namespaces.append(ns)
                self.run(ns, ["ip", "link", "set", "lo", "up"])
            # Both ends are created inside their namespaces: nothing is named
            # in the root namespace, so parallel labs cannot collide.
            self.run(None, ["ip", "link", "add", "west", "netns", self.west, "type", "veth",
                            "peer", "name", "east", "netns", self.east])
            self.run(self.west, ["ip", "addr", "add", f"{WEST_OUTER}/24", "dev", "west"])
            self.run(self.east, ["ip", "addr", "add", f"{EAST_OUTER}/24", "dev", "east"])
            self.run(self.west, ["ip", "link", "set", "west", "up"])
            self.run(self.east, ["ip", "link", "set", "east", "up"])
            self._inner(self.west, WEST_INNER)
            self._inner(self.east, EAST_INNER)
            self.wait_for(lambda: self._link_up(self.west, "west")
                          and self._link_up(self.east, "east"), 10, "veth pair up")
        except BaseException:
            self._failed = True
            self.down()
            raise

    def _inner(self, ns: str, addr: str) -> None:
        r = self.run(ns, ["ip", "link", "add", "inner0", "type", "dummy"], check=False)
        if r.returncode == 0:
            self.dummy = True
            self.run(ns, ["ip", "addr", "add", f"{addr}/24", "dev", "inner0"])
            self.run(ns, ["ip", "link", "set", "inner0", "up"])
        else:
            self.run(ns, ["ip", "addr", "add", f"{addr}/32", "dev", "lo"])

    def _link_up(self, ns: str, dev: str) -> bool:
        r = self.run(ns, ["ip", "-o", "link", "show", "dev", dev], check=False)
        return r.returncode == 0 and ("state UP" in r.stdout or "LOWER_UP" in r.stdout)

    # -------------------------------------------------------------- commands
    @staticmethod
    def _argv(ns: str | None, argv: Sequence[object]) -> list[str]:
        words = [str(a) for a in argv]
        return ["ip", "netns", "exec", ns, *words] if ns else words

    def run(self, ns: str | None, argv: Sequence[object], *, check: bool = True,
            timeout: float = 60, env: Mapping[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in namespace ``ns`` (None: the current one)."""
        full = self._argv(ns, argv)
        environ = {**os.environ, **env} if env else None
        try:
            r = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                               env=environ, input=input, stdin=None if input else
                               subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise LabError(f"timed out after {timeout}s: {' '.join(full)}") from e
        if check and r.returncode != 0:
            raise LabError(f"exit {r.returncode}: {' '.join(full)}\n"
                           f"stdout: {r.stdout.strip()}\nstderr: {r.stderr.strip()}")
        return r

    def spawn(self, ns: str | None, argv: Sequence[object], logfile: str | os.PathLike[str],
              env: Mapping[str, str] | None = None, *, name: str | None = None,
              expect_alive: bool = True) -> Spawned:
        """Start a long-running process in ``ns``, stdout+stderr to ``logfile``.

        ``ip netns exec`` execs the command, and ``start_new_session`` makes it
        a session leader without an extra fork, so the PID is the daemon's own
        and its process group is ours alone.  While ``expect_alive``,
        :meth:`wait_for` fails early if the process dies.
        """
        path = pathlib.Path(logfile)
        if not path.is_absolute():
            path = self.workdir / path
        path.parent.mkdir(parents=True, exist_ok=True)
        environ = {**os.environ, **env} if env else None
        with open(path, "ab") as log:
            proc = subprocess.Popen(self._argv(ns, argv), stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=environ,
                                    start_new_session=True)
        sp = Spawned(name or pathlib.Path(str(argv[0])).name, proc, path, ns, expect_alive)
        self.procs.append(sp)
        self.add_log(f"{sp.name}[{proc.pid}]", path)
        return sp

    def stop(self, sp: Spawned, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        """Signal one of our processes and wait for it; SIGKILL after ``timeout``."""
        sp.expect_alive = False
        if sp.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sp.pid, sig)
            try:
                sp.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if sp.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(sp.pid, signal.SIGKILL)
                sp.proc.wait(5)
        # reap anything left in the process group we created (e.g. updown scripts)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(sp.pid, signal.SIGKILL)
        return sp.proc.returncode

    def add_log(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register a file to show when the test fails."""
        self.logs[name] = pathlib.Path(path)

    # ----------------------------------------------------------------- waits
    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str = "condition",
                 interval: float = 0.05) -> T:
        """Poll ``predicate`` until it returns something truthy; return that value.

        Raises :class:`LabError` after ``timeout`` seconds, or at once when a
        process spawned with ``expect_alive`` has exited.
        """
        end = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            dead = [p for p in self.procs if p.expect_alive and not p.alive()]
            if dead:
                names = ", ".join(f"{p.name}[{p.pid}] exit {p.proc.returncode}" for p in dead)
                raise LabError(f"while waiting for {what}: {names} died")
            if time.monotonic() >= end:
                raise LabError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)

    # --------------------------------------------------------------- traffic
    def ping(self, ns: str, dst: str, count: int = 3, interval: float = 0.2,
             timeout: float = 2, src: str | None = None) -> tuple[int, int]:
        """Ping ``dst`` from ``ns``; return (transmitted, received)."""
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", str(timeout)]
        if src:
            argv += ["-I", src]
        r = self.run(ns, [*argv, dst], check=False,
                     timeout=count * (interval + 0.1) + timeout + 10)
        return parse_ping(r.stdout)

    def transfer(self, sender_ns: str, receiver_ns: str, receiver_addr: str,
                 nbytes: int = 1 << 20, port: int = 5001, timeout: float = 60,
                 src: str | None = None) -> tuple[str, str, int]:
        """Send ``nbytes`` of random data over TCP; return (sha256 sent, received, n received)."""
        out = self.workdir / f"recv-{port}-{next(_counter)}.sha"
        ready = out.with_suffix(".ready")
        server = self.spawn(receiver_ns, [sys.executable, "-c", _RECEIVER, receiver_addr,
                                          str(port), str(out), str(ready)],
                            self.workdir / f"receiver-{port}.log", name="receiver")
        try:
            self.wait_for(ready.exists, 10, "TCP receiver listening")
            data = os.urandom(nbytes)
            r = self.run(sender_ns, [sys.executable, "-c", _SENDER, receiver_addr, str(port),
                                     src or ""], input=data.hex(), timeout=timeout, check=False)
            if r.returncode != 0:
                raise LabError(f"TCP sender failed: {r.stderr.strip()}")
            server.expect_alive = False
            self.wait_for(out.exists, timeout, "TCP receiver done")
            got, n = out.read_text().split()
            return hashlib.sha256(data).hexdigest(), got, int(n)
        finally:
            self.stop(server)

    # ------------------------------------------------------------------ logs
    def collect_logs(self, tail: int = 150) -> str:
        """The last ``tail`` lines of every registered log, one section each."""
        parts = []
        for name, path in self.logs.items():
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError as e:
                lines = [f"<unreadable: {e}>"]
            parts.append(f"----- {name}: {path} (last {min(tail, len(lines))} of "
                         f"{len(lines)} lines)")
            parts.extend(lines[-tail:])
        if self._up:
            parts.append(f"----- namespaces {self.west} {self.east}")
            for ns in (self.west, self.east):
                for argv in (["ip", "-br", "addr"], ["ip", "route", "show", "table", "all"]):
                    r = self.run(ns, argv, check=False)
                    parts.append(f"[{ns}] $ {' '.join(argv)}")
                    parts.extend(ln for ln in r.stdout.splitlines()
                                 if not ln.startswith(("local", "broadcast", "multicast")))
        return "\n".join(parts)

    def print_logs(self) -> None:
        """Print the logs to the real stderr (bypassing pytest's capture)."""
        print(f"\n===== lab {self.west}/{self.east}: logs (workdir {self.workdir})\n"
              + self.collect_logs(), file=sys.__stderr__, flush=True)

    def mark_failed(self) -> None:
        self._failed = True

    # -------------------------------------------------------------- teardown
    def down(self) -> None:
        """Kill our processes, delete our namespaces, remove the workdir (kept on failure)."""
        if not self._up:
            return
        for sp in reversed(self.procs):
            try:
                self.stop(sp, timeout=5)
            except Exception as e:  # keep tearing down the rest
                print(f"lab: could not stop {sp.name}[{sp.pid}]: {e}", file=sys.__stderr__)
        for ns in self._namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self._namespaces.clear()
        self._up = False
        if self in _live_labs:
            _live_labs.remove(self)
        if self._failed or self.keep_workdir:
            print(f"lab: kept {self.workdir}", file=sys.__stderr__)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def list_netns() -> list[str]:
    r = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]


def parse_ping(text: str) -> tuple[int, int]:
    """(transmitted, received) from ping's summary line; (0, 0) if absent."""
    m = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@atexit.register
def _teardown_all() -> None:  # an interrupted run must not leave namespaces behind
    for lab_ in list(_live_labs):
        lab_.down()


_RECEIVER = r"""
import hashlib, socket, sys, pathlib
addr, port, out, ready = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]), sys.argv[4]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1); s.settimeout(120)
pathlib.Path(ready).touch()
c, _ = s.accept(); c.settimeout(120)
h = hashlib.sha256(); n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    h.update(b); n += len(b)
tmp = out.with_suffix(".tmp"); tmp.write_text(f"{h.hexdigest()} {n}\n"); tmp.rename(out)
"""

_SENDER = r"""
import socket, sys
data = bytes.fromhex(sys.stdin.read().strip())
s = socket.socket()
if sys.argv[3]:
    s.bind((sys.argv[3], 0))
s.settimeout(60); s.connect((sys.argv[1], int(sys.argv[2])))
s.sendall(data); s.shutdown(socket.SHUT_WR)
s.recv(1)
s.close()
"""


# ------------------------------------------------------------- pytest glue
@pytest.fixture
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A fresh :class:`Lab`; skipped (failed in CI) without root and `ip netns`."""
    require(have_netns(), "root and `ip netns` (network namespace lab)")
    before = request.session.testsfailed
    with Lab() as lab_:
        request.node._lab = lab_  # type: ignore[attr-defined]
        yield lab_
        rep = getattr(request.node, "_lab_rep_call", None)
        if (rep is not None and rep.failed) or request.session.testsfailed > before:
            lab_.mark_failed()
            if not getattr(request.node, "_lab_logs_attached", False):
                lab_.print_logs()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach every lab log to a failing report (re-export from a conftest.py to enable)."""
    rep = yield
    if rep.when == "call":
        item._lab_rep_call = rep  # type: ignore[attr-defined]
    lab_ = getattr(item, "_lab", None)
    if rep.failed and lab_ is not None and lab_._up:
        rep.sections.append((f"lab logs ({lab_.workdir})", lab_.collect_logs()))
        lab_.mark_failed()
        item._lab_logs_attached = True  # type: ignore[attr-defined]
    return rep
