"""The crypto helper pool (``--nhelpers``), sd_notify, crash reports, leak detective.

Helper pool: as Libreswan's pluto off-loads DH to helper threads, the engine
(with ``EngineSettings.offload_crypto``, set when ``--nhelpers`` > 0) hands its
key-exchange computations out as ``Compute`` actions (IKE_SA_INIT: the
responder's keygen+derive, the initiator's keygen and derive; the responder's
CREATE_CHILD_SA PFS and IKE-rekey key exchange); the daemon runs each job
here and feeds the result back through ``Engine.resume`` on its event loop.
``-1`` is Libreswan's rule (CPUs - 1, at least 1), ``0`` runs every job inline
(and the engine does not offload at all).

Threads or processes?  A ``ThreadPoolExecutor``, chosen by the numbers of
``measure()`` and ``bench/crypto_helpers.py`` (2-CPU box shared with other
work, so wall-clock figures are noisy; key exchanges per second, 2 workers)::

                      inline   threads  processes
    ECP-256 (19)       1,889     2,987      1,116
    Curve25519 (31)    1,851     2,661      1,256
    MODP-2048 (14)       357       412        358
    ML-KEM-768 (36)    3,668     2,969      2,195

and daemon CPU per job (bench/results/summary.md): X25519 113 us inline,
156-173 us threads, 155-169 us processes; ECP-256 163 / 171-197 / 143-146 us;
MODP-2048 837 / 941-1055 / 148-175 us.  ``cryptography`` releases the GIL in
EC (keygen, ECDH) and RSA calls, not in X25519, FFDH or ML-KEM.  So: threads
give real parallelism for ECP groups and cost ~50 us of handoff for X25519;
processes lose throughput everywhere (pickling and a pipe round trip per job,
0.4-0.5 ms latency) and win daemon CPU only for MODP groups, which are not in
the default proposals; and a process cannot take the initiator's job at all
(its private key object does not pickle).  End to end the responder's crypto
is ~15% of its CPU per IKE SA (the codec dominates), which bounds any gain.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from pypluto import __version__


def helper_count(nhelpers: int) -> int:
    """Libreswan's rule: -1 means (number of CPUs - 1), but at least one helper."""
    if nhelpers >= 0:
        return nhelpers
    return max(1, (os.cpu_count() or 1) - 1)


class HelperPool:
    """Runs expensive crypto jobs; ``submit`` returns a Future either way."""

    def __init__(self, nhelpers: int) -> None:
        self.count = helper_count(nhelpers)
        self.auto = nhelpers < 0  # Libreswan's -1: sized by the CPUs (see one_cpu)
        self.jobs = 0
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        if self.count > 0:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.count, thread_name_prefix="pluto-helper"
            )

    @property
    def kind(self) -> str:
        return "threads" if self._pool else "inline"

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        self.jobs += 1
        if self._pool is not None:
            return self._pool.submit(fn, *args)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - delivered through the future
            fut.set_exception(e)
        return fut

    def one_cpu(self) -> bool:
        """``-1`` (CPUs - 1) while this process may run on one CPU only (``taskset``,
        a cpuset): a helper thread then gives no parallelism, only a hand-off per job
        (~50 us for X25519, above), so the daemon has the engine compute inline.  An
        explicit ``--nhelpers N`` is obeyed as given."""
        if not self.auto or self._pool is None:
            return False
        try:
            return len(os.sched_getaffinity(0)) <= 1
        except (AttributeError, OSError):
            return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _ke_job(group: int) -> bytes:
    """One whole key exchange of ``group`` (both ends' work), as the engine does it."""
    from pypluto.crypto.dh import initiator_ke, responder_ke

    ke = initiator_ke(group)
    resp, shared = responder_ke(group, ke.public)
    ke.finish(resp)
    return shared


MEASURE_GROUPS = {"ecp256 (19)": 19, "curve25519 (31)": 31, "modp2048 (14)": 14,
                  "mlkem768 (36)": 36}


def measure(jobs: int = 200, workers: int = 2) -> dict[str, dict[str, float]]:
    """Key exchanges per second: inline, a thread pool and a process pool (helper choice)."""
    results: dict[str, dict[str, float]] = {}
    for name, group in MEASURE_GROUPS.items():
        n = jobs if group != 14 else max(10, jobs // 10)
        row: dict[str, float] = {}
        t = time.perf_counter()
        for _ in range(n):
            _ke_job(group)
        row["inline"] = n / (time.perf_counter() - t)
        makers: dict[str, Callable[[], concurrent.futures.Executor]] = {
            "threads": lambda: concurrent.futures.ThreadPoolExecutor(max_workers=workers),
            "processes": lambda: concurrent.futures.ProcessPoolExecutor(max_workers=workers),
        }
        for kind, make in makers.items():
            with make() as ex:
                list(ex.map(_ke_job, [group] * workers))  # warm up
                t = time.perf_counter()
                list(ex.map(_ke_job, [group] * n))
                row[kind] = n / (time.perf_counter() - t)
        results[name] = row
    return results


def sd_notify(state: str) -> bool:
    """Tell systemd (Type=notify) about ``state`` when NOTIFY_SOCKET is set."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.sendto(state.encode(), addr)
        return True
    except OSError:
        return False


def write_crash_report(coredir: str, exc: BaseException, where: str = "") -> str | None:
    """Write a report of an unhandled error to ``coredir``; return its path."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return write_crash_text(coredir, text, where)


def write_crash_text(coredir: str, text: str, where: str = "") -> str | None:
    """Write a crash report whose body (a formatted traceback) is ``text``; return its path.

    The file is created mode 0600 (it may name addresses and connection names).
    """
    try:
        os.makedirs(coredir, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = os.path.join(coredir, f"pluto-crash-{os.getpid()}-{stamp}.txt")
        n = 1
        while os.path.exists(path):  # two reports within one second: keep both
            n += 1
            path = os.path.join(coredir, f"pluto-crash-{os.getpid()}-{stamp}-{n}.txt")
        with open(path, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(f"pypluto {__version__} crash report\n")
            f.write(f"time: {stamp}\npid: {os.getpid()}\nargv: {sys.argv!r}\n")
            f.write(f"python: {sys.version.split()[0]}\n")
            if where:
                f.write(f"where: {where}\n")
            f.write("\n")
            f.write(text if text.endswith("\n") else text + "\n")
        return path
    except OSError:
        return None


class CrashReports:
    """Internal errors: one error line each, and a crash report for the first ``limit``.

    ``log`` is the daemon's ``PlutoLogger.log``; the limit keeps a bug that fires
    on every packet from filling ``--coredir``.
    """

    def __init__(self, coredir: str, log: Callable[..., None], limit: int = 10) -> None:
        self.coredir = coredir
        self._log = log
        self.limit = limit
        self.written = 0

    def exception(self, e: BaseException, where: str) -> None:
        """An exception caught in the daemon (or raised out of an engine call)."""
        self._log(f"internal error in {where}: {type(e).__name__}: {e}", "error",
                  rate_limited=True)
        if self.written < self.limit:
            self.written += 1
            self._wrote(write_crash_report(self.coredir, e, where))

    def text(self, text: str, where: str) -> None:
        """An error the engine caught and reported with its traceback as text."""
        if self.written < self.limit:
            self.written += 1
            self._wrote(write_crash_text(self.coredir, text, where))

    def _wrote(self, path: str | None) -> None:
        if path:
            self._log(f"crash report written to {path}", "error", rate_limited=True)


def leak_report(limit: int = 10) -> list[str]:
    """A tracemalloc summary of what is still allocated (``--leak-detective``)."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        return ["leak detective: tracemalloc was not running"]
    snap = tracemalloc.take_snapshot()
    stats = snap.statistics("lineno")
    total = sum(s.size for s in stats)
    blocks = sum(s.count for s in stats)
    lines = [f"leak detective: {blocks} blocks, {total} bytes still allocated at shutdown"]
    for s in stats[:limit]:
        frame = s.traceback[0]
        lines.append(f"leak detective: {s.size} bytes in {s.count} blocks at "
                     f"{frame.filename}:{frame.lineno}")
    return lines
