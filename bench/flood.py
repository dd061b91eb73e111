"""Half-open flood (issue 13): legitimate peers connecting during 20,000 spoofed IKE_SA_INIT.

The scenario is ``tests/interop/flood.py`` (the same code the ``netns``/``slow``
test ``tests/interop/test_flood.py`` asserts on): a pypluto responder in the east
namespace, strongSwan 5.9.8 (childless ``probe``) and a pypluto initiator
(``north``, its own namespace) connecting while ``flood_sender.py`` sends
``BENCH_FLOOD_N`` (20,000) spoofed IKE_SA_INIT over a raw socket as fast as one
process can; ``BENCH_FLOOD_RUNS`` (5) runs in one lab, then the wait for every
half-open SA to expire (30 s, the engine's ``half_open_timeout``).  Only pypluto
is the responder here: the row is about its defence (RFC 7296 §2.6, RFC 8019),
not a comparison.

Run alone: ``.venv/bin/python -m bench.flood``.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "interop")]

from flood import FLOOD_N, run_flood  # noqa: E402
from lab import Lab  # noqa: E402
from peers import have_strongswan  # noqa: E402


def env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def run(n: int | None = None, runs: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_FLOOD_N", FLOOD_N)
    runs = runs or env_int("BENCH_FLOOD_RUNS", 5)
    res: dict[str, Any]
    if not have_strongswan():
        res = {"error": "strongSwan charon-systemd / swanctl not installed"}
    else:
        try:
            with Lab(prefix="bfl") as lab:
                res = run_flood(lab, runs=runs, n=n).as_dict()
        except Exception as e:  # noqa: BLE001 - a failed bench is a row with its error
            res = {"error": f"{type(e).__name__}: {e}"}
    err = res.get("error", "")

    def worst(key: str) -> Any:
        v = res.get(key)
        return max(v) if v else None

    def med(key: str) -> Any:
        v = res.get(key)
        return round(statistics.median(v), 3) if v else None

    note = (f"{n} spoofed IKE_SA_INIT per run, {runs} runs; worst of the runs "
            f"(median {med('strongswan_up')} s strongSwan, {med('pypluto_up')} s pypluto); "
            f"flood {med('flood_rate')} datagrams/s; half-open peak {worst('halfopen_peak')}; "
            f"cookies on in every run: {all(res.get('busy_seen') or [False])}")
    rows = [
        {"metric": "flood: strongSwan initiator up (worst of runs)", "pypluto": worst(
            "strongswan_up"), "strongswan": None, "libreswan": None, "unit": "s",
         "note": note + (f"; error: {err}" if err else "")},
        {"metric": "flood: pypluto initiator up (worst of runs)", "pypluto": worst("pypluto_up"),
         "strongswan": None, "libreswan": None, "unit": "s", "note": ""},
        {"metric": "flood: responder RSS growth during a flood (worst)",
         "pypluto": round(worst("rss_peak_growth_kib") / 1024, 1)
         if res.get("rss_peak_growth_kib") else None,
         "strongswan": None, "libreswan": None, "unit": "MiB", "note": ""},
        {"metric": "flood: responder RSS after the half-open SAs expired, vs before",
         "pypluto": round((res["rss_after_kib"] - res["rss_base_kib"]) / 1024, 1)
         if "rss_after_kib" in res else None, "strongswan": None, "libreswan": None,
         "unit": "MiB", "note": f"after {res.get('expiry_wait')} s"},
        {"metric": "flood: pings lost through an established tunnel",
         "pypluto": res.get("pings_lost"), "strongswan": None, "libreswan": None,
         "unit": f"of {res.get('pings_sent')}", "note": "every 50 ms during each flood"},
    ]
    return {"name": "flood", "command": "make bench BENCH=flood", "results": res, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    print(json.dumps(out["results"], indent=1))
    for r in out["rows"]:
        print(r)
