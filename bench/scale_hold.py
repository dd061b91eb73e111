"""100,000 IKE SAs held 600 s with liveness, pypluto (issue 18): the issue's own size.

:mod:`bench.ike_hold` holds ``BENCH_HOLD_N`` (10,000) IKE SAs for 60 s with the three
responders side by side; this module runs the same method (its ``hold_all``: one lab,
one asynchronous vici generator that only answers, ``dpddelay=30``) at the issue's
size, **pypluto alone**: ``BENCH_SCALE_N`` (100,000) childless IKE SAs, then one
window of ``BENCH_SCALE_SECONDS`` (600 s) in which nothing is initiated.  Rows:
spurious deaths (the daemon's own count at the start and end of the window), idle
CPU (its utime+stime over the window), RSS per IKE SA.

Why pypluto alone: the three responders at 100,000 need three generators that
each answer ~3,333 liveness probes a second (strongSwan probes as pypluto does),
which with the three setups is more than this 2-core machine has; the generator
then drops datagrams and the setup stalls (bench/README.md, "Holding 100,000 IKE
SAs").  ``BENCH_SCALE_KINDS=pypluto,strongswan`` adds responders for a machine that
has the cores.  The three-daemon comparison is ``ike_hold``'s, at 10,000.

It runs last in ``make bench`` (about 25 minutes: setup, 600 s, teardown) and needs a
quiet machine.  Alone: ``make bench BENCH=scale_hold`` or
``.venv/bin/python -m bench.scale_hold [N] [SECONDS]``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from bench import ike_hold
from bench.ike_setup import env_int, kinds_available


def run(n: int | None = None, seconds: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_SCALE_N", 100000)
    seconds = seconds or env_int("BENCH_SCALE_SECONDS", 600)
    wanted = [k.strip() for k in os.environ.get("BENCH_SCALE_KINDS", "pypluto").split(",")
              if k.strip()]
    have = kinds_available()
    kinds = [k for k in wanted if k in have]
    out = ike_hold.run(n, seconds, kinds=kinds, parts={"hold"})
    # the pairs row of ike_hold is not run here (parts={"hold"}): drop it
    rows = [r for r in out["rows"] if "IKE+Child" not in r["metric"]]
    out.update(name="scale_hold", command="make bench BENCH=scale_hold", rows=rows)
    out["sizes"] = {k: v for k, v in out["sizes"].items() if k != "child_n"}
    out["sizes"]["kinds"] = kinds
    return out


if __name__ == "__main__":
    res = run(*[int(a) for a in sys.argv[1:3]])
    for r in res["rows"]:
        print(r)
