"""Executions, time and coverage of every libFuzzer session in a fuzz log.

    python -m fuzz.stats [WORKDIR ...]      (default: every target under /work/fuzz-runs)

A session starts at libFuzzer's ``INFO: Seed:`` line; its executions are the
last ``#N`` status line, its time the ``Done ... in S second(s)`` line (or, for
a session that was stopped, N divided by the last ``exec/s``), its coverage the
last ``cov:`` (edges) and ``ft:`` (features) values.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_STATUS = re.compile(r"^#(\d+)\s+\S+\s+cov: (\d+) ft: (\d+) corp: (\d+)/\S+.*?exec/s: (\d+)")
_DONE = re.compile(r"^Done (\d+) runs in (\d+) second")


def sessions(log: Path) -> list[dict[str, int | bool]]:
    out: list[dict[str, int | bool]] = []
    cur: dict[str, int | bool] | None = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("INFO: Seed:"):
            cur = {"execs": 0, "seconds": 0, "cov": 0, "ft": 0, "corpus": 0, "rate": 0,
                   "done": False, "crash": False}
            out.append(cur)
        elif cur is None:
            continue
        elif m := _STATUS.match(line):
            cur.update(execs=int(m[1]), cov=int(m[2]), ft=int(m[3]), corpus=int(m[4]),
                       rate=int(m[5]))
        elif m := _DONE.match(line):
            cur.update(execs=int(m[1]), seconds=int(m[2]), done=True)
        elif "ERROR: libFuzzer" in line or "Uncaught Python exception" in line:
            cur["crash"] = True
    for s in out:
        if not s["done"] and s["rate"]:
            s["seconds"] = int(s["execs"]) // int(s["rate"])
    return out


def main() -> int:
    dirs = [Path(a) for a in sys.argv[1:]] or sorted(
        p for p in Path("/work/fuzz-runs").iterdir() if (p / "log").is_file())
    total_s = total_x = 0
    for d in dirs:
        ss = sessions(d / "log")
        x = sum(int(s["execs"]) for s in ss)
        t = sum(int(s["seconds"]) for s in ss)
        total_s, total_x = total_s + t, total_x + x
        crashes = len(list((d / "crashes").glob("*"))) if (d / "crashes").is_dir() else 0
        last = ss[-1] if ss else {}
        print(f"{d.name}: {len(ss)} sessions, {x} executions in {t} s "
              f"({t / 60:.1f} min); last session cov {last.get('cov')} edges, "
              f"ft {last.get('ft')}, corpus {last.get('corpus')}; crash files {crashes}")
        for i, s in enumerate(ss, 1):
            print(f"   session {i}: {s['execs']} execs, {s['seconds']} s, cov {s['cov']}, "
                  f"ft {s['ft']}{'' if s['done'] else ' (stopped)'}"
                  f"{' CRASH' if s['crash'] else ''}")
    print(f"total: {total_x} executions in {total_s} s ({total_s / 3600:.2f} h)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
