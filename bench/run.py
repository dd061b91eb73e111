"""`make bench`: run every benchmark, collect their JSON, print one table.

Each benchmark module in this folder has ``run() -> dict`` returning
``{"name": ..., "rows": [{"metric": ..., "pypluto": ..., "strongswan": ...,
"libreswan": ..., "unit": ..., "note": ...}], "command": ...}``.  Results go to
``bench/results/<name>.json`` and ``bench/results/summary.md``.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"

# In the order they run; each must finish in a few minutes (make bench < 15 min).
BENCHMARKS = [
    "bench.config_load",
    "bench.config_start",
    "bench.engine_setup",
    "bench.crypto_helpers",
    "bench.ike_setup",
    "bench.loadtest_bench",
    "bench.esp_throughput",
]


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _earlier(modname: str) -> dict | None:
    """The last saved result of a benchmark not run this time (to keep the table whole)."""
    for path in sorted(RESULTS.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("module") == modname:
            return data
    return None


def _row(name: str, row: dict) -> str:
    return "| {} | {} | {} | {} | {} | {} | {} |".format(
        name, row.get("metric", ""), _fmt(row.get("pypluto")), _fmt(row.get("strongswan")),
        _fmt(row.get("libreswan")), row.get("unit", ""), row.get("note", ""))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    wanted = [b for b in BENCHMARKS if not argv or any(a in b for a in argv)]
    RESULTS.mkdir(exist_ok=True)
    load0, t_all = os.getloadavg(), time.monotonic()
    lines = [
        "| benchmark | metric | pypluto | strongSwan | Libreswan | unit | note |",
        "|---|---|---|---|---|---|---|",
    ]
    failed = 0
    kept: list[str] = []
    for modname in BENCHMARKS:
        result: dict | None = None
        if modname in wanted:
            try:
                mod = importlib.import_module(modname)
            except ModuleNotFoundError as e:
                print(f"== {modname}: not available ({e})")
                continue
            print(f"== {modname}", flush=True)
            t0 = time.monotonic()
            try:
                result = mod.run()
            except Exception:
                failed += 1
                traceback.print_exc()
                continue
            result["seconds"] = round(time.monotonic() - t0, 1)
            result["module"] = modname
            result["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            result["loadavg_at_end"] = os.getloadavg()[0]
            name = result.get("name", modname.split(".")[-1])
            (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        else:
            result = _earlier(modname)
            if result is None:
                continue
            kept.append(f"{result.get('name')} ({result.get('measured_at', '?')})")
        name = result.get("name", modname.split(".")[-1])
        lines += [_row(name, row) for row in result.get("rows", [])]
    table = "\n".join(lines)
    load1 = os.getloadavg()
    cmd = "make bench" + (f" BENCH='{' '.join(argv)}'" if argv else "")
    head = (f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{cmd}` on "
            f"{os.cpu_count()} CPUs in {time.monotonic() - t_all:.0f} s; load average "
            f"{load0[0]:.1f} at start, {load1[0]:.1f} at end (other work on the machine makes "
            "rates pessimistic; CPU per SA and RSS per SA are per-process and less "
            "affected). Sizes: see each `bench/results/<name>.json`.")
    if kept:
        head += " Rows kept from earlier runs: " + ", ".join(kept) + "."
    (RESULTS / "summary.md").write_text(head + "\n\n" + table + "\n")
    print()
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
