"""Line and branch coverage of a fuzz corpus (``make fuzz`` prints it per target).

    python -m fuzz.cover TARGET [DIR ...]     (default: WORKDIR/corpus and WORKDIR/seeds)

Replays every input of the corpus through the target under ``coverage``
(pip package; installed by ``make fuzz``) and reports the statements and
branches reached in the code the target is aimed at.  The summary is also
written to ``WORKDIR/coverage.json``.  Inputs that raise are listed: each is a
finding to turn into a regression test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# the code each target is aimed at (paths under src/pypluto)
SCOPE = {
    "wire": ["wire/"],
    "ike_sk": ["ike/"],
    "ike_plain": ["ike/"],
    "esp": ["kernel/esp.py"],
    "config": ["config/"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("dirs", nargs="*")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    import coverage

    import pypluto
    src = Path(pypluto.__file__).resolve().parent
    work = Path(args.workdir or f"/work/fuzz-runs/{args.target}")
    dirs = [Path(d) for d in args.dirs] or [work / "corpus", work / "seeds"]
    include = [f"*/pypluto/{s}*" if s.endswith("/") else f"*/pypluto/{s}" for s in SCOPE[args.target]]
    cov = coverage.Coverage(branch=True, include=include, data_file=None)
    cov.start()
    from fuzz.targets import load
    target = load(args.target)
    n, raised = 0, []
    for d in dirs:
        for f in sorted(d.glob("*")) if d.is_dir() else []:
            if not f.is_file():
                continue
            n += 1
            try:
                target.one_input(f.read_bytes())
            except Exception as e:  # noqa: BLE001 - reported below
                raised.append(f"{f}: {type(e).__name__}: {str(e)[:200]}")
    cov.stop()
    data = cov.get_data()
    stmts = miss = br = br_hit = 0
    per_file = {}
    for fname in sorted(data.measured_files()):
        analysis = cov._analyze(fname)  # noqa: SLF001 - the public API has no per-file numbers
        nums = analysis.numbers
        stmts += nums.n_statements
        miss += nums.n_missing
        br += nums.n_branches
        br_hit += nums.n_branches - nums.n_missing_branches
        per_file[str(Path(fname).relative_to(src))] = {
            "statements": nums.n_statements, "covered": nums.n_statements - nums.n_missing,
            "branches": nums.n_branches,
            "branches_covered": nums.n_branches - nums.n_missing_branches}
    summary = {
        "target": args.target, "inputs": n, "scope": SCOPE[args.target],
        "statements": stmts, "statements_covered": stmts - miss,
        "branches": br, "branches_covered": br_hit, "raised": raised, "files": per_file,
    }
    if work.is_dir():
        (work / "coverage.json").write_text(json.dumps(summary, indent=1))
    pct = lambda a, b: f"{100 * a / b:.1f}%" if b else "-"  # noqa: E731
    print(f"{args.target}: {n} inputs; lines {stmts - miss}/{stmts} ({pct(stmts - miss, stmts)}), "
          f"branches {br_hit}/{br} ({pct(br_hit, br)}) in {', '.join(SCOPE[args.target])}; "
          f"{len(raised)} inputs raise")
    for r in raised[:20]:
        print("  raised:", r)
    return 1 if raised else 0


if __name__ == "__main__":
    sys.exit(main())
