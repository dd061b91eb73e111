"""Host side of the ESP-kernel tests: one User-Mode-Linux boot that runs a guest script.

Every ``test_*_uml.py`` here boots the UML kernel once per module
(``tools/run-in-esp-kernel.sh``), runs one ``guest_*.py`` in it, and asserts the
``CHECK <name>: OK`` lines that the guest printed (:class:`GuestRun`).  The
prerequisites every boot has (root, user-mode-linux, kmod) go through
``require()``: they fail under ``CI=true`` and skip elsewhere.

Boots run ahead, several at once (:func:`uml_fixture`): a boot spends most of its
time waiting on the guest's own timers and on ptrace round trips, not on a CPU
(two boots side by side took 25 s where one after the other took 58), so when the
first fixture here is needed every boot that the selected tests need starts,
``PPESPK_PARALLEL`` (default 4) at a time, longest first, and each module's
fixture waits for its own.  ``conftest.py`` tells which boots are needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from testsupport import REPO, is_root, require

RUNNER = REPO / "tools" / "run-in-esp-kernel.sh"
HERE = REPO / "tests" / "espkernel"
UML_MODULES = "/usr/lib/uml/modules"


@dataclass
class GuestRun:
    """What one UML boot printed, its exit status (125: the guest never ran) and time."""

    rc: int
    output: str
    seconds: float

    def assert_checks(self, expected: Iterable[str], scenario: str,
                      also: Collection[str] = ()) -> None:
        """Every name in ``expected`` printed ``OK``; none of them, nor ``scenario``
        (a scenario that raised) nor a name in ``also`` (a guest-wide precondition),
        printed ``FAILED``."""
        want = list(expected)
        assert self.rc != 125, f"the ESP kernel did not run the guest:\n{self.output[-3000:]}"
        passed = set(re.findall(r"CHECK (\S+): OK", self.output))
        failed = [f for f in re.findall(r"CHECK (\S+): FAILED", self.output)
                  if f in want or f == scenario or f in also]
        assert not failed, f"failed in the ESP kernel: {failed}\n{self.output[-5000:]}"
        missing = [c for c in want if c not in passed]
        assert not missing, f"checks that did not run: {missing}\n{self.output[-5000:]}"


def tagged(tag: str, checks: Iterable[str]) -> list[str]:
    """The guest's check names: ``TAG-CHECK`` for each check."""
    return [f"{tag}-{c}" for c in checks]


def uml_available(module: str | None = None) -> bool:
    """The UML kernel, its module tree (holding ``module``.ko if named) and modprobe."""
    ok = (os.path.exists("/usr/bin/linux.uml") and os.path.isdir(UML_MODULES)
          and (shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe")))
    return ok and (module is None or any(f"{module}.ko" in files
                                         for _, _, files in os.walk(UML_MODULES)))


def require_uml(module: str | None = None) -> None:
    """Root, and UML with its modules (``module``.ko among them if named) and kmod."""
    require(is_root(), "root (the UML guest runs as root on the host's files)")
    require(uml_available(module), f"user-mode-linux{' with ' + module + '.ko' if module else ''}"
            " and kmod (apt-get install user-mode-linux kmod)")


def boot(guest: str, *args: str, timeout: int = 280, modules: str = "",
         env: Mapping[str, str] | None = None) -> GuestRun:
    """Boot the ESP kernel once and run ``python tests/espkernel/GUEST ARGS...`` in it.

    ``timeout`` is the runner's (``PPESPK_TIMEOUT``: it kills the guest and exits
    125); ``modules`` are loaded in the guest besides the runner's own
    (``PPESPK_MODULES``).  Requires root and UML (:func:`require_uml`), like every test here.
    """
    require_uml(modules.split()[0] if modules else None)
    extra = {"PPESPK_TIMEOUT": str(timeout), **({"PPESPK_MODULES": modules} if modules else {}),
             **(env or {})}
    started = time.monotonic()
    res = subprocess.run([str(RUNNER), sys.executable, str(HERE / guest), *args],
                         capture_output=True, text=True, timeout=timeout + 30, cwd=REPO,
                         env={**os.environ, **extra})
    return GuestRun(res.returncode, res.stdout + res.stderr, time.monotonic() - started)


def require_libreswan(*tools: str) -> None:
    """Libreswan 4.10's pluto, and the NSS tools named (``certutil``, ``pk12util``)."""
    require(os.access("/usr/libexec/ipsec/pluto", os.X_OK),
            "Libreswan 4.10 (tools/install-libreswan.sh)")
    for tool in tools:
        require(shutil.which(tool) is not None, f"{tool} (libnss3-tools)")


# --- boots run ahead ------------------------------------------------------------------

Key = tuple[str, str]  # (test module, fixture name)
_AHEAD: dict[Key, tuple[Callable[[], GuestRun], float]] = {}
_wanted: set[Key] | None = None  # None: not told (a fixture then starts only its own)
_futures: dict[Key, Future[GuestRun]] = {}
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def uml_fixture(name: str, expect: float) -> Callable[[Callable[[], GuestRun]], object]:
    """Decorate the function that boots a module's guest: it becomes the module-scoped
    fixture ``name``, whose boot starts ahead with the others (``expect``: its usual
    seconds, to start the longest first).  Exceptions (``require``'s skip or fail
    among them) reach the test as if the fixture had raised them itself."""
    def wrap(fn: Callable[[], GuestRun]) -> object:
        key = (fn.__module__, name)
        _AHEAD[key] = (fn, expect)

        @pytest.fixture(scope="module", name=name)
        def fixture() -> GuestRun:
            return _ahead(key)
        fixture.__doc__ = fn.__doc__
        return fixture
    return wrap


def want(keys: Iterable[Key]) -> None:
    """The boots that the selected tests use (``conftest.py``, after collection)."""
    global _wanted
    _wanted = {k for k in keys if k in _AHEAD}


def _ahead(key: Key) -> GuestRun:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max(1, int(os.environ.get("PPESPK_PARALLEL", "4"))),
                                       thread_name_prefix="uml-boot")
            for k in sorted(_wanted or (), key=lambda k: -_AHEAD[k][1]):
                _futures[k] = _pool.submit(_AHEAD[k][0])
        if key not in _futures:
            _futures[key] = _pool.submit(_AHEAD[key][0])
        future = _futures[key]
    return future.result()


def stop_ahead() -> None:
    """End of the session: boots not started are dropped; running ones end on their
    own timeouts (the runner kills its guest)."""
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True, cancel_futures=True)
