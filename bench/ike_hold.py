"""IKE SAs held with liveness: spurious deaths, idle CPU and RSS (issue 18, "100,000 IKE SAs").

For each responder (pypluto, strongSwan 5.9.8, Libreswan 4.10), in a fresh
lab: the asynchronous vici generator of :mod:`bench.ike_setup` establishes
``BENCH_HOLD_N`` childless IKE SAs against a responder configured with
liveness (``dpddelay = BENCH_DPD``, 30 s; ``dpdtimeout`` three times that,
``dpdaction=clear``), then nothing happens for ``BENCH_HOLD_SECONDS``.  The
responder answers for itself: its count of established IKE SAs (``whack
--briefstatus`` / vici ``stats``) before and after the hold gives the
spurious deaths; its utime+stime over the hold the idle CPU; its VmRSS the
memory per IKE SA (growth from the empty daemon / count).

Then, for memory at scale with a Child SA, ``BENCH_CHILD_N`` (10,000) IKE+Child
pairs against pypluto and strongSwan (userspace planes), no hold.

Defaults keep ``make bench`` short: ``BENCH_HOLD_N=10000``,
``BENCH_HOLD_SECONDS=60``.  The issue's run is
``BENCH_HOLD_N=100000 BENCH_HOLD_SECONDS=600 make bench BENCH=ike_hold``
(about 6 GiB of RSS for Libreswan at 63 KiB per IKE SA).

Run alone: ``.venv/bin/python -m bench.ike_hold [N] [SECONDS]``.  Filters for a
quick look: ``BENCH_KINDS=pypluto`` (comma-separated responders) and
``BENCH_PARTS=pairs`` (``hold``, ``pairs`` or both), e.g.
``BENCH_KINDS=pypluto BENCH_PARTS=pairs BENCH_CHILD_N=10000 .venv/bin/python -m bench.ike_hold``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.ike_setup import (
    Generator,
    Lab,
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


def one(kind: str, n: int, seconds: int, dpd: int, concurrency: int,
        child: bool = False) -> dict[str, Any]:
    with Lab(prefix="bh") as lab:
        resp = start_responder(lab, kind, child=child, dpddelay=dpd)
        rss_empty = proc_rss_kib(resp.pid)
        gen = Generator(lab, child=child)
        gen.start()
        counter = resp.counter()
        up = gen.run(n, concurrency, timeout=max(300.0, n / 20), counter=counter, pid=resp.pid)
        settle(counter, n)
        before = resp.count()
        rss = proc_rss_kib(resp.pid)
        cpu0, t0 = proc_cpu(resp.pid), time.monotonic()
        if seconds:
            time.sleep(seconds)
        cpu1, t1 = proc_cpu(resp.pid), time.monotonic()
        after = resp.count()
        rss_end = proc_rss_kib(resp.pid)
        return {
            "established_generator": up["established_generator"],
            "established_logged": up.get("established_logged"),
            "setup_rate": up.get("rate"), "setup_failures": up["failures"],
            "before": before, "after": after,
            "deaths": before - after if before is not None and after is not None else None,
            "held_s": round(t1 - t0, 1), "dpddelay": dpd,
            "idle_cpu_pct": (cpu1 - cpu0) * 100 / (t1 - t0) if seconds else None,
            "rss_kib": rss, "rss_kib_end": rss_end, "rss_kib_empty": rss_empty,
            "rss_kib_per_sa": (rss - rss_empty) / before if before else None,
            "alive": all(p.alive() for p in lab.procs),
        }


def run(n: int | None = None, seconds: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_HOLD_N", 10000)
    seconds = seconds or env_int("BENCH_HOLD_SECONDS", 60)
    dpd = env_int("BENCH_DPD", 30)
    c = env_int("BENCH_C", 32)
    want = {k for k in os.environ.get("BENCH_KINDS", "").split(",") if k}
    kinds = [k for k in kinds_available() if not want or k in want]
    parts = {p for p in os.environ.get("BENCH_PARTS", "hold,pairs").split(",") if p}
    res = {k: _try(f"hold {k}", one, k, n, seconds, dpd, c) for k in kinds} \
        if "hold" in parts else {}
    # memory of IKE+Child pairs at scale (userspace planes; Libreswan cannot install them)
    cn = env_int("BENCH_CHILD_N", 10000)
    pairs = {k: _try(f"pairs {k}", one, k, cn, 0, 0, c, child=True)
             for k in ("strongswan", "pypluto") if k in kinds and "pairs" in parts}
    three = ("pypluto", "strongswan", "libreswan")

    def g(k: str, key: str) -> Any:
        return _r(res.get(k, {}).get(key))

    errs = "; ".join(f"{k}: {r['error']}" for k, r in res.items() if "error" in r)
    counts = {k: (g(k, "before"), g(k, "after")) for k in three if k in res}
    dead = [k for k in three if k in res and res[k].get("alive") is False]
    rows = [
        {"metric": f"{n} IKE SAs held {seconds} s, dpddelay={dpd}: spurious deaths",
         **{k: g(k, "deaths") for k in three}, "unit": "IKE SAs",
         "note": f"responder's own count (before, after): {counts}; goal 0 at 100,000 for "
                 f"600 s: " + ("met" if n >= 100000 and seconds >= 600
                               and g("pypluto", "deaths") == 0 else
                               "not measured at that size (BENCH_HOLD_N=100000 "
                               "BENCH_HOLD_SECONDS=600)")
                 + (f"; processes died: {dead}" if dead else "") + (f"; {errs}" if errs else "")},
        {"metric": f"idle responder CPU holding {n} IKE SAs, liveness on",
         **{k: g(k, "idle_cpu_pct") for k in three}, "unit": "% of a core",
         "note": "utime+stime over the hold / its length; goal < 25% at 100,000: "
                 + ("met" if n >= 100000 and isinstance(g("pypluto", "idle_cpu_pct"), float)
                    and g("pypluto", "idle_cpu_pct") < 25 else "see size")},
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
            "results": res, "pairs": pairs, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    for r in out["rows"]:
        print(r)
