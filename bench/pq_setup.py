"""Hybrid post-quantum IKE SA setup on the responder: pypluto vs strongSwan 6.0.1 (issue 17).

The same measurement as ``bench.ike_setup`` (its generator method, log counting,
CPU from ``/proc/PID/stat``, responder pinned to CPU 1, generator to CPU 0,
alternating runs in fresh labs; its ``measure`` does the work) with the proposal
``aes256gcm16-prfsha256-x25519-ke1_mlkem768``: X25519 in IKE_SA_INIT and ML-KEM-768
in one IKE_INTERMEDIATE exchange (RFC 9242, RFC 9370).  pypluto's conn says
``ike=aes_gcm256-sha2_256-dh31;addke1=mlkem768``.

The host's strongSwan 5.9.8 has no ML-KEM, so the generator is strongSwan 6.0.1's
charon from the Debian 13 chroot (``../shared/interop/trixie``, with the ``ml``
plugin its ``install.sh`` builds), started through ``tests/interop/trixie.py``'s
``ChrootStrongSwan`` with ``ike_setup``'s generator ``strongswan.conf`` (no per-SA
log) and driven over vici exactly as there (async ``initiate``, ``timeout = -1``,
32 in flight, childless).  The strongSwan column is a 6.0.1 responder from the
same chroot (``ike_setup``'s responder config, log level 0 so that each
"IKE_SA ... established between" line is written).  Libreswan 4.10 has no ML-KEM:
no column.

Run alone: ``.venv/bin/python -m bench.pq_setup [N] [C]``.
"""

from __future__ import annotations

import sys
from typing import Any

from bench import ike_setup as base
from bench.ike_setup import Lab, Responder

# isort: split
# tests/interop is on sys.path once bench.ike_setup is imported
from trixie import INSIDE, ML_PLUGIN, SW_ROOT, ChrootStrongSwan

SS_PQ = "aes256gcm16-prfsha256-x25519-ke1_mlkem768"
LS_PQ = "aes_gcm256-sha2_256-dh31;addke1=mlkem768"
KINDS = ("pypluto", "strongswan6")


class Charon6(ChrootStrongSwan):
    """strongSwan 6.0.1 from the trixie chroot with ``ike_setup``'s strongswan.conf
    (thresholds raised, 16 threads) plus the ``ml`` plugin; no kernel-libipsec
    (childless: no Child SA to install)."""

    def __init__(self, lab: Lab, ns: str, name: str, level: int) -> None:
        super().__init__(lab, ns, name)
        self.level = level

    def render_conf(self) -> str:
        return base._CHARON_CONF.format(ipsec_plugin="ml", log=f"{INSIDE}/charon.log",
                                        vici=f"{INSIDE}/charon.vici", level=self.level)


def available() -> str | None:
    """Why strongSwan 6.0.1 with ML-KEM cannot run here, or None."""
    if not (SW_ROOT / "usr/sbin/charon-systemd").exists():
        return f"no strongSwan 6.0.1 chroot at {SW_ROOT} (../shared/interop/trixie/install.sh)"
    if not ML_PLUGIN.exists():
        return f"strongSwan 6.0.1 has no ML-KEM: {ML_PLUGIN} missing (install.sh builds it)"
    return None


class Generator6(base.Generator):
    """``ike_setup.Generator`` with a 6.0.1 charon (``swanctl_text``: the hybrid proposal)."""

    def start(self) -> None:
        why = available()
        if why:
            raise RuntimeError(why)
        sw = Charon6(self.lab, self.lab.west, self.dir.name, level=-1)
        assert sw.vici == self.vici
        sw.start()
        assert self.swanctl_text is not None
        sw.load(self.swanctl_text)
        assert sw.proc is not None
        self.proc = sw.proc
        base.pin(sw.proc.pid, base.GEN_CPU)
        self.sess = base._vici(self.vici)


def start_responder(lab: Lab, kind: str) -> Responder:
    """The responder under test in the east namespace, pinned to ``RESP_CPU``."""
    if kind == "strongswan6":
        why = available()
        if why:
            raise RuntimeError(why)
        sw = Charon6(lab, lab.east, "resp-strongswan6", level=0)
        sw.start()
        sw.load(base._swanctl_resp().replace(base.SS_PROPOSAL, SS_PQ))
        assert sw.proc is not None
        base.pin(sw.proc.pid, base.RESP_CPU)
        return Responder(lab, "strongswan", sw.proc.pid, sw.vici, sw.log)
    if kind == "pypluto":
        conf = base._ipsec_conf_resp(base.UNLIMITED)
        assert f"ike={base.LS_PROPOSAL}\n" in conf
        pp = base._Pluto(lab, lab.east, "resp-pypluto", [])
        pp.start(conf.replace(f"ike={base.LS_PROPOSAL}\n", f"ike={LS_PQ}\n"),
                 base.IPSEC_SECRETS)
        assert pp.proc is not None
        base.pin(pp.proc.pid, base.RESP_CPU)
        return Responder(lab, kind, pp.proc.pid, pp, pp.log)
    raise ValueError(kind)


def one_run(kind: str, n: int, c: int) -> dict[str, Any]:
    """One responder, one fresh lab: ``ike_setup.measure`` (20 warm-up SAs, ``n`` measured)."""
    with Lab(prefix="bq") as lab:
        resp = start_responder(lab, kind)
        gen = Generator6(lab, swanctl_text=base._swanctl_gen(False).replace(base.SS_PROPOSAL,
                                                                           SS_PQ))
        gen.start()
        return base.measure(resp, gen, n, c)


def run(n: int | None = None, concurrency: int | None = None) -> dict[str, Any]:
    """``BENCH_PQ_N`` (IKE SAs per run; default ``BENCH_N``, 2000), ``BENCH_C`` (32),
    ``BENCH_RUNS`` (alternating runs per responder, 2)."""
    n = n or base.env_int("BENCH_PQ_N", base.env_int("BENCH_N", 2000))
    c = concurrency or base.env_int("BENCH_C", 32)
    nruns = base.env_int("BENCH_RUNS", 2)
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(nruns):
        for kind in ("strongswan6", "pypluto"):
            results.setdefault(kind, []).append(
                base._try(f"{kind} {SS_PQ} run {i + 1}", one_run, kind, n, c))
    return {"name": "pq_setup", "command": "make bench BENCH=pq_setup",
            "sizes": {"n": n, "c": c, "runs": nruns, "proposal": SS_PQ,
                      "pinning": {"generator": base.GEN_CPU, "responder": base.RESP_CPU}},
            "results": results, "rows": rows(results, n, c)}


def rows(results: dict[str, list[dict[str, Any]]], n: int, c: int) -> list[dict[str, Any]]:
    """Rate and responder CPU per IKE SA: medians of the runs, spreads, shortfalls, errors."""

    def med(kind: str, key: str) -> Any:
        return base._r(base.median_of(results.get(kind, []), key))

    def spreads(key: str, nd: int = 2) -> str:
        return ", ".join(f"{k}: {base.spread(results.get(k, []), key, nd)}" for k in KINDS)

    notes = []
    for k in KINDS:
        for r in results.get(k, []):
            if "error" in r:
                notes.append(f"{k}: ERROR {r['error']}")
            elif r.get("established_logged", n) < n:
                notes.append(f"{k}: SHORT COUNT, logged {r['established_logged']} of {n} "
                             f"(generator saw {r['established_generator']})")
    tail = ("; " + "; ".join(notes)) if notes else ""
    runs = len(next(iter(results.values()), []))
    method = (f"median of {runs} alternating runs; async vici generator strongSwan 6.0.1 "
              f"(trixie chroot, ml plugin) N={n} C={c}, {SS_PQ} PSK childless, responder on "
              f"CPU {base.RESP_CPU}, generator on CPU {base.GEN_CPU}; counted from the "
              "responder's log; the strongswan column is strongSwan 6.0.1 (5.9.8 has no "
              "ML-KEM), Libreswan 4.10 has no ML-KEM")
    return [
        {"metric": "setup rate, x25519-ke1_mlkem768, childless", "pypluto": med("pypluto", "rate"),
         "strongswan": med("strongswan6", "rate"), "libreswan": None, "unit": "IKE SA/s",
         "note": method + "; runs: " + spreads("rate", 0) + tail},
        {"metric": "responder CPU per IKE SA, x25519-ke1_mlkem768",
         "pypluto": med("pypluto", "cpu_ms_per_sa"),
         "strongswan": med("strongswan6", "cpu_ms_per_sa"), "libreswan": None, "unit": "ms",
         "note": "utime+stime over the window / logged count; runs: "
                 + spreads("cpu_ms_per_sa") + tail},
    ]


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    result = run(*args)
    for r in result["rows"]:
        print(r)
