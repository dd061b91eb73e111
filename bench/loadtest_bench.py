"""pypluto as the initiator (``ipsec loadtest``, :mod:`pypluto.loadtest`) next to the
strongSwan vici generator, against a pypluto and a strongSwan responder.

For each responder, in one lab: the strongSwan generator (asynchronous vici
``initiate`` requests, ``timeout=-1``, ``C`` in flight: :mod:`bench.ike_setup`)
establishes ``N`` childless IKE SAs (RFC 6023), then is stopped, then ``ipsec loadtest`` (our
initiator, in the same west namespace on port 500) establishes ``N`` more.  The
figures are the initiator's own CPU per IKE SA (charon's utime+stime from
/proc; the load tester's process time) and the responder's CPU per IKE SA over
each batch, so the pair initiator pypluto/strongSwan is measured in one run.

Run alone: ``.venv/bin/python -m bench.loadtest_bench [N] [C]``.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

from bench.ike_setup import (
    EAST_OUTER,
    GEN_CPU,
    GEN_ID,
    LS_PROPOSAL,
    PSK,
    RESP_ID,
    WEST_OUTER,
    Generator,
    Lab,
    _try,
    env_int,
    proc_cpu,
    start_responder,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"


def loadtest_argv(psk_file: pathlib.Path, n: int, c: int) -> list[str]:
    """The command line of our initiator (``ipsec loadtest`` runs the same main())."""
    return ["taskset", "-c", str(GEN_CPU), str(PY if PY.exists() else sys.executable),
            "-m", "pypluto.loadtest",
            "--local", WEST_OUTER, "--remote", EAST_OUTER, "--psk-file", str(psk_file),
            "--local-id", f"@{GEN_ID}", "--remote-id", f"@{RESP_ID}", "--ike", LS_PROPOSAL,
            "-n", str(n), "-c", str(c), "--json"]


def one(kind: str, n: int, c: int) -> dict[str, Any]:
    with Lab(prefix="bl") as lab:
        resp = start_responder(lab, kind)
        gen = Generator(lab)
        gen.start()
        gen.run(min(20, n), 4)
        g0, r0 = proc_cpu(gen.proc.pid), proc_cpu(resp.pid)
        ss = gen.run(n, c, timeout=max(120.0, n / 10))
        time.sleep(0.5)
        g1, r1 = proc_cpu(gen.proc.pid), proc_cpu(resp.pid)
        est = max(ss["established"], 1)
        ss.update(initiator_cpu_ms_per_sa=(g1 - g0) * 1000 / est,
                  responder_cpu_ms_per_sa=(r1 - r0) * 1000 / est)
        lab.stop(gen.proc)
        psk = lab.workdir / "loadtest.psk"
        psk.write_text(PSK + "\n")
        psk.chmod(0o600)
        r0 = proc_cpu(resp.pid)
        # warm-up run (imports, caches), then the measured one
        lab.run(lab.west, loadtest_argv(psk, min(20, n), 4), check=False, timeout=120)
        r0 = proc_cpu(resp.pid)
        p = lab.run(lab.west, loadtest_argv(psk, n, c), check=False, timeout=max(300, n / 5))
        time.sleep(0.5)
        r1 = proc_cpu(resp.pid)
        try:
            ours = json.loads(p.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"loadtest exit {p.returncode}: {p.stderr[-500:]}") from None
        est = max(ours["established"], 1)
        ours.update(initiator_cpu_ms_per_sa=ours["cpu_ms_per_sa"],
                    responder_cpu_ms_per_sa=(r1 - r0) * 1000 / est)
        return {"strongswan_initiator": ss, "pypluto_initiator": ours}


def run(n: int | None = None, c: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_LOADTEST_N", 500)
    c = c or env_int("BENCH_C", 32)
    res = {k: _try(f"responder {k}", one, k, n, c) for k in ("pypluto", "strongswan")}

    def g(resp: str, init: str, key: str) -> Any:
        v = res.get(resp, {}).get(init, {}).get(key)
        return round(v, 2) if isinstance(v, float) else v

    rows = []
    for resp in ("pypluto", "strongswan"):
        e = res[resp].get("error", "")
        for metric, key, unit in (("rate", "rate", "IKE SA/s"),
                                  ("initiator CPU per IKE SA", "initiator_cpu_ms_per_sa", "ms"),
                                  ("responder CPU per IKE SA", "responder_cpu_ms_per_sa", "ms"),
                                  ("p50 / p99 latency", "p50_ms", "ms"),
                                  ("failures", "failures", f"of {n}")):
            pp, sw = g(resp, "pypluto_initiator", key), g(resp, "strongswan_initiator", key)
            if key == "p50_ms":  # the asynchronous generator has no per-SA latency
                pp = f"{pp} / {g(resp, 'pypluto_initiator', 'p99_ms')}"
                sw = None
            rows.append({"metric": f"initiator mode vs {resp} responder: {metric}",
                         "pypluto": pp, "strongswan": sw, "libreswan": None, "unit": unit,
                         "note": (f"columns = initiator (ipsec loadtest vs charon+vici); "
                                  f"childless, N={n} C={c}; charon driven by asynchronous vici "
                                  "initiate requests (its CPU includes serving them); "
                                  "both initiators on CPU 0, the responder on CPU 1" if metric == "rate" else "")
                         + (f"; error: {e}" if e else "")})
    return {"name": "loadtest", "command": "make bench BENCH=loadtest_bench",
            "results": res, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    print(json.dumps(out["results"], indent=1))
    for r in out["rows"]:
        print(r)
