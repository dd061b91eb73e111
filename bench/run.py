"""`make bench`: run every benchmark, collect their JSON, generate one table.

Each benchmark module in this folder has ``run() -> dict`` returning
``{"name": ..., "rows": [{"metric": ..., "pypluto": ..., "strongswan": ...,
"libreswan": ..., "unit": ..., "note": ...}], "command": ...}``.  Results go to
``bench/results/<name>.json`` and ``bench/results/summary.md``.

Provenance (issue 18, "results that are produced, never edited"):

* the tree must be committed: a dirty tree is refused unless
  ``BENCH_ALLOW_DIRTY=1``, and then every file says ``<commit>-dirty`` and the
  summary says so in its first line;
* every JSON file records the commit, the command, the date, the load
  average at the start and end of the run, the sizes and the machine (CPU
  model and count, kernel, Python): the same commit measures differently on
  another machine, and the summary names the machine of its figures;
* a full run (no ``BENCH=``) empties ``bench/results/`` first, so every file
  there comes from that run; a partial run (``BENCH=name``) rewrites the
  files it ran and the summary shows only results of the current commit,
  naming the others as stale instead of showing their figures;
* nothing in ``bench/results/`` is written by hand: ``summary.md`` is
  generated from the JSON files (``python -m bench.run --summary`` rebuilds
  it).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import time
import traceback
from typing import Any

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"

# In the order they run; each finishes in a few minutes but the last, scale_hold (~25
# min: 100,000 IKE SAs held 600 s), so make bench takes ~40 min (the
# module timings are in bench/README.md, "Sizes (environment) and time").
BENCHMARKS = [
    "bench.config_load",
    "bench.config_start",
    "bench.engine_setup",
    "bench.conn_lookup",
    "bench.engine_workers",
    "bench.crypto_floor",
    "bench.crypto_helpers",
    "bench.ike_setup",
    "bench.pq_setup",
    "bench.cert_setup",
    "bench.ike_hold",
    "bench.loadtest_bench",
    "bench.esp_daemons",
    "bench.esp_throughput",
    "bench.flood",
    "bench.roadwarrior",
    "bench.scale_hold",  # the issue-18 size, ~15 min: last
]


class DirtyTree(RuntimeError):
    pass


def git_commit(repo: pathlib.Path = REPO) -> tuple[str, bool]:
    """(commit hash, dirty?) of the tree the benchmarks run from."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        head = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=normal", "--",
                         ".", ":!bench/results"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", True
    return head, dirty


def provenance(allow_dirty: bool) -> str:
    """The commit label every result carries; refuses a dirty tree unless allowed."""
    head, dirty = git_commit()
    if dirty and not allow_dirty:
        raise DirtyTree("the tree has uncommitted changes: commit them, or run with "
                        "BENCH_ALLOW_DIRTY=1 (results are then marked -dirty)")
    return head + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """What the figures were measured on: the same tree gives other figures elsewhere
    (the runs of 2026-12-06: an Intel Xeon VM measured about half the CPU per IKE SA
    of an AMD EPYC VM, for the C daemons as for pypluto), so every result says where."""
    model = ""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": model or platform.processor() or "?", "cpus": os.cpu_count(),
            "kernel": platform.release(), "python": platform.python_version()}


def machine_text(m: dict[str, Any] | None) -> str:
    """One line for the summary: ``AMD EPYC, 2 CPUs, kernel 6.1, Python 3.11.7``."""
    if not m:
        return "machine not recorded"
    return (f"{m.get('cpu', '?')}, {m.get('cpus', '?')} CPUs, kernel {m.get('kernel', '?')}, "
            f"Python {m.get('python', '?')}")


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def _row(name: str, row: dict[str, Any]) -> str:
    return "| {} | {} | {} | {} | {} | {} | {} |".format(
        name, row.get("metric", ""), _fmt(row.get("pypluto")), _fmt(row.get("strongswan")),
        _fmt(row.get("libreswan")), row.get("unit", ""), row.get("note", ""))


def load_results(results: pathlib.Path = RESULTS) -> dict[str, dict[str, Any]]:
    """module name -> saved result, for every JSON file in ``results``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and "module" in data:
            out[data["module"]] = data
    return out


def floor_ratio(saved: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The row comparing the daemon's CPU per IKE SA with the crypto floor (same commit)."""
    floor = saved.get("bench.crypto_floor")
    ike = saved.get("bench.ike_setup")
    if not floor or not ike or floor.get("commit") != ike.get("commit"):
        return None
    total_us = floor.get("results", {}).get("total")
    cpu = next((r for r in ike.get("rows", [])
                if r.get("metric") == "responder CPU per IKE SA, childless"), None)
    if not isinstance(total_us, int | float) or cpu is None:
        return None

    def ratio(v: Any) -> Any:
        return round(v * 1000 / total_us, 2) if isinstance(v, int | float) else None

    rate: dict[str, Any] = next((r for r in ike.get("rows", [])
                 if r.get("metric") == "setup rate, childless"), {})
    short = "SHORT COUNTS: pypluto " in rate.get("note", "")
    return {"metric": "responder CPU per IKE SA / crypto floor, childless",
            "pypluto": ratio(cpu.get("pypluto")), "strongswan": ratio(cpu.get("strongswan")),
            "libreswan": ratio(cpu.get("libreswan")), "unit": "x",
            "note": f"floor {total_us:.0f} us (crypto_floor, Python calls on cryptography); "
                    "C daemons call their crypto libraries directly"
                    + ("; pypluto's figure is over a SHORT log count (see setup rate)"
                       if short else "")}


def summary(commit: str, saved: dict[str, dict[str, Any]], head: str,
            order: list[str] = BENCHMARKS) -> str:
    """The generated table: only results of ``commit``; older ones named as stale."""
    current = [saved[m] for m in order if m in saved and saved[m].get("commit") == commit]
    stale = [f"{saved[m].get('name', m)} ({saved[m].get('commit', '?')[:12]}, "
             f"{saved[m].get('measured_at', '?')})"
             for m in order if m in saved and saved[m].get("commit") != commit]
    missing = [m.split(".")[-1] for m in order if m not in saved]
    lines = [
        "| benchmark | metric | pypluto | strongSwan | Libreswan | unit | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in current:
        lines += [_row(r.get("name", r["module"]), row) for row in r.get("rows", [])]
        if r["module"] == "bench.ike_setup":
            fr = floor_ratio(saved)
            if fr:
                lines.append(_row("ike_setup", fr))
    runs = sorted({(r.get("command", ""), r.get("run_started", ""), r.get("loadavg_at_start"),
                    r.get("run_loadavg_at_end")) for r in current}, key=str)
    head_lines = [
        "<!-- generated by bench/run.py from the JSON files beside it; do not edit -->",
        "",
    ]
    if commit.endswith("-dirty"):
        head_lines += [f"**DIRTY TREE: measured from uncommitted changes on top of "
                       f"{commit[:-6]}; not a result of any commit.**", ""]
    took = sum(r.get("seconds", 0) for r in current)
    machines = sorted({machine_text(r.get("machine")) for r in current})
    head_lines.append(f"Commit `{commit}`; measured on {' and '.join(machines) or '-'}; "
                      f"the modules shown took {took:.0f} s.")
    if len(machines) > 1:
        head_lines += ["", "**These results come from more than one machine: compare "
                       "rows of one machine only.**"]
    for cmd, started, l0, l1 in runs:
        head_lines.append(f"- `{cmd}` started {started}; load average {l0} at start, "
                          f"{l1} at end")
    head_lines.append("")
    head_lines.append("Other work on the machine lowers rates; CPU per SA and RSS per SA are "
                      "read per process from /proc and are less affected. Sizes: see each "
                      "`<name>.json`.")
    if stale:
        head_lines.append("")
        head_lines.append("Not shown (from another commit, stale): " + ", ".join(stale) + ".")
    if missing:
        head_lines.append("")
        head_lines.append("Not measured at this commit: " + ", ".join(missing) + ".")
    return "\n".join(head_lines) + "\n\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--summary"]:
        commit = provenance(True)
        (RESULTS / "summary.md").write_text(summary(commit, load_results(), commit))
        return 0
    try:
        commit = provenance(os.environ.get("BENCH_ALLOW_DIRTY") == "1")
    except DirtyTree as e:
        print(f"make bench: refused: {e}", file=sys.stderr)
        return 2
    if commit.endswith("-dirty"):
        print(f"\n*** WARNING: DIRTY TREE: results are marked {commit} ***\n", flush=True)
    wanted = [b for b in BENCHMARKS if not argv or any(a in b for a in argv)]
    RESULTS.mkdir(exist_ok=True)
    if not argv:  # a full run: every file of results/ comes from it
        for p in RESULTS.iterdir():
            if p.is_file():
                p.unlink()
    via_make = "MAKELEVEL" in os.environ
    cmd = ("make bench" + (f" BENCH='{' '.join(argv)}'" if argv else "")) if via_make else \
        " ".join([".venv/bin/python -m bench.run", *argv])
    env_sizes = {k: v for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")}
    if env_sizes:
        cmd = " ".join(f"{k}={v}" for k, v in env_sizes.items()) + " " + cmd
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = round(os.getloadavg()[0], 2)
    where = machine()
    failed = 0
    written: list[pathlib.Path] = []
    for modname in wanted:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            print(f"== {modname}: not available ({e})")
            failed += 1
            continue
        print(f"== {modname}", flush=True)
        t0 = time.monotonic()
        try:
            result = mod.run()
        except Exception:
            failed += 1
            traceback.print_exc()
            continue
        result.update(module=modname, commit=commit, command=cmd, run_started=started,
                      seconds=round(time.monotonic() - t0, 1),
                      measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      loadavg_at_start=load0, machine=where,
                      loadavg_at_end_of_module=round(os.getloadavg()[0], 2))
        name = result.get("name", modname.split(".")[-1])
        path = RESULTS / f"{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        written.append(path)
    load1 = round(os.getloadavg()[0], 2)
    for path in written:  # the run's end load, in every file of the run
        data = json.loads(path.read_text())
        data["run_loadavg_at_end"] = load1
        path.write_text(json.dumps(data, indent=2) + "\n")
    text = summary(commit, load_results(), commit)
    (RESULTS / "summary.md").write_text(text)
    print()
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
