"""Run one fuzz target under atheris (libFuzzer, coverage-guided) — ``make fuzz``.

    python -m fuzz.run TARGET [--seconds N] [--workdir DIR] [libFuzzer flags...]

The work directory (default ``/work/fuzz-runs/TARGET``, never inside the repo)
keeps the growing corpus (``corpus/``), the seed corpus written from
``TARGET.seeds()`` (``seeds/``) and crash reproducers (``crashes/``).  libFuzzer's
progress lines (executions, ``cov:`` edges, ``ft:`` features) go to stderr;
``make fuzz`` appends them to ``WORKDIR/log``.

Every pypluto module is imported inside ``atheris.instrument_imports`` so the
lazily imported exchange handlers are instrumented too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pkgutil
import sys
from pathlib import Path

import atheris  # type: ignore[import-not-found]

MAX_LEN = {"wire": 8192, "ike_sk": 4096, "ike_plain": 4096, "esp": 4096, "config": 32768}


def _import_everything() -> None:
    import pypluto
    for info in pkgutil.walk_packages(pypluto.__path__, "pypluto."):
        if info.name.startswith(("pypluto.cli", "pypluto.loadtest")):
            continue
        try:
            __import__(info.name)
        except Exception:  # noqa: BLE001 - optional backends (vici, ...) may be absent
            pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target")
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--workdir", default=None)
    args, libfuzzer = ap.parse_known_args()
    work = Path(args.workdir or f"/work/fuzz-runs/{args.target}")
    for sub in ("corpus", "seeds", "crashes"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    with atheris.instrument_imports(include=["pypluto", "fuzz"]):
        _import_everything()
        from fuzz.targets import load
        target = load(args.target)
    for seed in target.seeds():
        name = hashlib.sha1(seed).hexdigest()
        path = work / "seeds" / name
        if not path.exists():
            path.write_bytes(seed)
    if hasattr(target, "templates"):
        target.templates()  # build once, before the clock starts

    def one(data: bytes) -> None:
        target.one_input(data)

    argv = [sys.argv[0], *libfuzzer,
            f"-max_total_time={args.seconds}",
            f"-max_len={MAX_LEN.get(args.target, 4096)}",
            "-timeout=20", "-print_final_stats=1",
            f"-artifact_prefix={work / 'crashes'}{os.sep}",
            str(work / "corpus"), str(work / "seeds")]
    atheris.Setup(argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
