"""IKE SAs held with liveness: spurious deaths, idle CPU and RSS (issue 18, "100,000 IKE SAs").

**Method.**  Every responder (pypluto, strongSwan 5.9.8, Libreswan 4.10) gets its
own lab (``tests/lab.py``: its own pair of namespaces) and its own generator (the
asynchronous vici charon of :mod:`bench.ike_setup`, which does no liveness of its
own: ``dpd_delay`` unset, so every check is the responder's and the generator only
answers).  The responders are set up one after the other, each with
``BENCH_HOLD_N`` childless IKE SAs (responder pinned to CPU 1, generator to CPU 0,
as in ``ike_setup``), configured with liveness (``dpddelay = BENCH_DPD``, 30 s;
``dpdtimeout`` three times that, ``dpdaction=clear``).  Then **all of them are held
together, in one common window** of ``BENCH_HOLD_SECONDS``, with every process
allowed on both cores; nothing is initiated in it.  Each responder answers for
itself: its count of established IKE SAs (``whack --briefstatus`` / vici
``stats``) at the start and at the end of the window gives the spurious deaths;
its own utime+stime (``/proc/PID/stat``) over the window its idle CPU; its VmRSS
the memory per IKE SA (growth from the empty daemon / count).

Why one common window: the issue's case is 100,000 SAs for 600 s; one after the
other that is 3 × (setup + 600 s), about 40 minutes, while together it is
3 setups + one 600-s window, about 15 minutes (the C daemons measured at the same
size and for the same time as pypluto, rather than a shorter or smaller run
beside it).  CPU time per process is what is compared, and it does not depend on
who else runs; a daemon that falls behind (the machine has 2 cores: responders
and generators together need less than one, see the generators' CPU in the JSON)
shows it as retransmits, and as deaths only after ``dpdtimeout`` without any answer.
The responder set up first holds (and probes) while the others are set up: its
setup rate is unaffected, the others' may be slightly lower (not a row here).

Then, for memory at scale with a Child SA, ``BENCH_CHILD_N`` (10,000) IKE+Child
pairs against pypluto and strongSwan (userspace planes), no hold.

Defaults in ``make bench``: ``BENCH_HOLD_N=10000``, ``BENCH_HOLD_SECONDS=60``
(predictable time).  The issue's case is ``BENCH_HOLD_N=100000
BENCH_HOLD_SECONDS=600 make bench BENCH=ike_hold`` (about 6 GiB of RSS for
Libreswan at 63 KiB per IKE SA, ~1 GiB per generator charon); it needs a quiet
machine: on a loaded one the generators' UDP receive buffers overflow during
setup and the setup slows to tens of SAs per second past ~20,000.

Run alone: ``.venv/bin/python -m bench.ike_hold [N] [SECONDS]``.  Filters for a
quick look: ``BENCH_KINDS=pypluto`` (comma-separated responders) and
``BENCH_PARTS=pairs`` (``hold``, ``pairs`` or both), e.g.
``BENCH_KINDS=pypluto BENCH_PARTS=pairs BENCH_CHILD_N=10000 .venv/bin/python -m bench.ike_hold``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from typing import Any

from bench.ike_setup import (
    Generator,
    Lab,
    Responder,
    _r,
    _try,
    env_int,
    goal,
    kinds_available,
    proc_cpu,
    proc_rss_kib,
    settle,
    start_responder,
)


def _unpin(pid: int) -> None:
    """Every thread of ``pid`` on every core again (for the common hold window)."""
    n = os.cpu_count() or 1
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        subprocess.run(["taskset", "-a", "-cp", f"0-{n - 1}", str(pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Held:
    """One responder, its generator and its lab, set up and holding."""

    def __init__(self, kind: str, stack: contextlib.ExitStack) -> None:
        self.kind = kind
        self.lab = stack.enter_context(Lab(prefix="bh"))
        self.resp: Responder | None = None
        self.gen: Generator | None = None
        self.out: dict[str, Any] = {}

    def setup(self, n: int, dpd: int, concurrency: int, child: bool = False,
              unpin: bool = False) -> dict[str, Any]:
        self.resp = resp = start_responder(self.lab, self.kind, child=child, dpddelay=dpd)
        rss_empty = proc_rss_kib(resp.pid)
        self.gen = gen = Generator(self.lab, child=child)
        gen.start()
        if unpin:  # set up side by side: each process where the scheduler finds room
            _unpin(resp.pid)
            _unpin(gen.proc.pid)
        counter = resp.counter()
        t0 = time.monotonic()
        up = gen.run(n, concurrency, timeout=max(300.0, n / 20), counter=counter,
                     pid=resp.pid)
        settle(counter, n)
        before = resp.count()
        rss = proc_rss_kib(resp.pid)
        self.out = {
            "established_generator": up["established_generator"],
            "established_logged": up.get("established_logged"),
            "setup_rate": up.get("rate"), "setup_failures": up["failures"],
            "setup_s": round(time.monotonic() - t0, 1),
            "before": before, "rss_kib": rss, "rss_kib_empty": rss_empty,
            "rss_kib_per_sa": (rss - rss_empty) / before if before else None,
        }
        return self.out

    def start_window(self) -> None:
        assert self.resp is not None and self.gen is not None
        for pid in (self.resp.pid, self.gen.proc.pid):
            _unpin(pid)
        self._cpu0 = proc_cpu(self.resp.pid)
        self._gcpu0 = proc_cpu(self.gen.proc.pid)
        self._t0 = time.monotonic()

    def end_window(self) -> dict[str, Any]:
        assert self.resp is not None and self.gen is not None
        cpu1, gcpu1, t1 = proc_cpu(self.resp.pid), proc_cpu(self.gen.proc.pid), \
            time.monotonic()
        after = self.resp.count()
        before = self.out.get("before")
        held = t1 - self._t0
        self.out.update(
            after=after,
            deaths=before - after if before is not None and after is not None else None,
            held_s=round(held, 1),
            idle_cpu_pct=(cpu1 - self._cpu0) * 100 / held if held > 0 else None,
            generator_cpu_pct=(gcpu1 - self._gcpu0) * 100 / held if held > 0 else None,
            rss_kib_end=proc_rss_kib(self.resp.pid),
            alive=all(p.alive() for p in self.lab.procs))
        return self.out


def hold_all(kinds: list[str], n: int, seconds: int, dpd: int, concurrency: int
             ) -> dict[str, dict[str, Any]]:
    """Set up every responder at once (one thread each, no core pinned), then hold
    them all in one window of ``seconds``."""
    res: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        held = [Held(k, stack) for k in kinds]

        def setup(h: Held) -> None:
            res[h.kind] = _try(f"hold {h.kind} setup", h.setup, n, dpd, concurrency,
                               unpin=True)

        # daemon threads: an interrupt here still tears the labs down (the ExitStack),
        # which ends a thread blocked on its generator
        threads = [threading.Thread(target=setup, args=(h,), daemon=True) for h in held]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(1.0)
        held = [h for h in held if "error" not in res[h.kind]]
        for h in held:
            h.start_window()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(min(10.0, max(0.0, seconds - (time.monotonic() - t0))))
        for h in held:
            res[h.kind] = _try(f"hold {h.kind}", h.end_window)
    return res


def pair_memory(kind: str, n: int, concurrency: int) -> dict[str, Any]:
    """``n`` IKE+Child pairs, no liveness, no hold: RSS per pair."""
    with contextlib.ExitStack() as stack:
        h = Held(kind, stack)
        return h.setup(n, 0, concurrency, child=True)


def run(n: int | None = None, seconds: int | None = None, kinds: list[str] | None = None,
        parts: set[str] | None = None) -> dict[str, Any]:
    """The module's rows; ``kinds`` and ``parts`` (default: ``BENCH_KINDS`` and
    ``BENCH_PARTS``) let :mod:`bench.scale_hold` run the hold alone at scale."""
    n = n or env_int("BENCH_HOLD_N", 10000)
    seconds = seconds or env_int("BENCH_HOLD_SECONDS", 60)
    dpd = env_int("BENCH_DPD", 30)
    c = env_int("BENCH_C", 32)
    if parts is None:
        parts = {p for p in os.environ.get("BENCH_PARTS", "hold,pairs").split(",") if p}
    if kinds is None:
        kinds = kinds_available()  # BENCH_KINDS filters it
    t_start = time.monotonic()
    res = hold_all(kinds, n, seconds, dpd, c) if "hold" in parts else {}
    t_hold = time.monotonic() - t_start
    # memory of IKE+Child pairs at scale (userspace planes; Libreswan cannot install them)
    cn = env_int("BENCH_CHILD_N", 10000)
    pairs = {k: _try(f"pairs {k}", pair_memory, k, cn, c)
             for k in ("strongswan", "pypluto") if k in kinds and "pairs" in parts}
    three = ("pypluto", "strongswan", "libreswan")

    def g(k: str, key: str) -> Any:
        return _r(res.get(k, {}).get(key))

    errs = "; ".join(f"{k}: {r['error']}" for k, r in res.items() if "error" in r)
    counts = {k: (g(k, "before"), g(k, "after")) for k in three if k in res}
    dead = [k for k in three if k in res and res[k].get("alive") is False]
    big = n >= 100000 and seconds >= 600
    pp_cpu = g("pypluto", "idle_cpu_pct")
    rows = [
        {"metric": f"{n} IKE SAs held {seconds} s, dpddelay={dpd}: spurious deaths",
         **{k: g(k, "deaths") for k in three}, "unit": "IKE SAs",
         "note": f"responder's own count (before, after): {counts}; all responders held "
                 f"in one common window; goal 0 at 100,000 for 600 s: "
                 + (("met" if g("pypluto", "deaths") == 0 else "NOT met") if big else
                    "not measured at this size here: the scale_hold rows (pypluto alone, "
                    "100,000 for 600 s) are")
                 + (f"; processes died: {dead}" if dead else "") + (f"; {errs}" if errs else "")},
        {"metric": f"idle responder CPU holding {n} IKE SAs, liveness on",
         **{k: g(k, "idle_cpu_pct") for k in three}, "unit": "% of a core",
         "note": "utime+stime of each responder over the common window / its length; the "
                 "generators (which only answer) used "
                 + str({k: g(k, "generator_cpu_pct") for k in three if k in res})
                 + "; goal < 25% at 100,000: "
                 + (("met" if isinstance(pp_cpu, float) and pp_cpu < 25 else "NOT met")
                    if big else "see the scale_hold rows")},
        {"metric": f"RSS per IKE SA holding {n}",
         **{k: g(k, "rss_kib_per_sa") for k in three}, "unit": "KiB",
         "note": "(VmRSS after setup - VmRSS of the empty daemon) / count; goal <= 5 KiB "
                 "at 10,000: " + (goal(g("pypluto", "rss_kib_per_sa"), 5) if n >= 10000
                                  else "not measured at that size")},
        {"metric": f"RSS holding {n} IKE SAs",
         **{k: _r(res[k]["rss_kib"] / 1024, 1) if "rss_kib" in res.get(k, {}) else None
            for k in three}, "unit": "MiB",
         "note": "VmRSS after setup; at the end of the hold: "
                 + str({k: g(k, "rss_kib_end") for k in three if k in res}) + " KiB"},
        {"metric": f"RSS per IKE+Child pair holding {cn}",
         "pypluto": _r(pairs.get("pypluto", {}).get("rss_kib_per_sa")),
         "strongswan": _r(pairs.get("strongswan", {}).get("rss_kib_per_sa")),
         "libreswan": None, "unit": "KiB",
         "note": "userspace planes (ours, kernel-libipsec), no liveness; (VmRSS after setup "
                 "- empty daemon) / the responder's count "
                 + str({k: r.get("before") for k, r in pairs.items()})
                 + "; goal <= 12 KiB at 10,000: "
                 + (goal(_r(pairs.get("pypluto", {}).get("rss_kib_per_sa")), 12)
                    if cn >= 10000 else "not measured at that size")
                 + "".join(f"; {k}: {r['error']}" for k, r in pairs.items() if "error" in r)},
    ]
    return {"name": "ike_hold", "command": "make bench BENCH=ike_hold",
            "sizes": {"n": n, "seconds": seconds, "dpddelay": dpd, "c": c, "child_n": cn},
            "hold_phase_s": round(t_hold, 1), "results": res, "pairs": pairs, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    for r in out["rows"]:
        print(r)
