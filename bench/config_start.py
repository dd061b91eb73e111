"""Config load through the daemons: 1,000 conns at start, and ``ipsec add`` one by one.

* start: pluto is spawned with an ``ipsec.conf`` of ``N`` conns (``%default``
  and ``also=``, ``auto=add``); the time is from the spawn until the log says
  the last conn was added (the same log line in pypluto and Libreswan).
* one by one: the same file with ``auto=ignore``; a running daemon gets
  ``ipsec add <conn>`` (our ``ipsec`` CLI; Libreswan's ``addconn``, which is
  what its ``ipsec add`` runs), one process per conn, as an operator's script
  would.  Each call parses the whole file, as Libreswan's does, so ``K`` adds
  are timed and the figure is scaled to ``N``; the bulk form ``ipsec add c1 ...
  cN`` (one call) is timed too.

* start at scale: the same start with ``BENCH_START_CONNS`` (10,000) conns
  (issue 18: under 5 s), pypluto and Libreswan.

* byte code: pypluto's modules are byte-compiled before the daemons are timed, as a
  ``pip install`` of the package does; with ``PYTHONDONTWRITEBYTECODE=1`` (set in the
  environments that run ``make bench``) an editable tree would otherwise be compiled
  again at every start (0.25-0.3 s of CPU for 10,000 conns on the bench machine, issue 18).

Run alone: ``.venv/bin/python -m bench.config_start [N] [K]``;
``BENCH_START_ONLY=1`` runs only the start at scale (``BENCH_START_CONNS`` conns),
``BENCH_START_KINDS=pypluto`` (or ``libreswan``, default both) picks the daemons,
``BENCH_START_RUNS`` (default 3) how many starts each, the row showing the median.
"""

from __future__ import annotations

import compileall
import functools
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.ike_setup import (
    EAST_OUTER,
    IPSEC_SECRETS,
    LIBRESWAN_DIR,
    Lab,
    Libreswan,
    _Pluto,
    _try,
    env_int,
    have_libreswan,
    proc_cpu,
    proc_rss_kib,
    pypluto_bin,
)

GOAL_S = 2.0


def make_config(n: int, auto: str = "add") -> str:
    """``n`` conns on this host (192.0.2.2), peers in 198.51.100.0/24 (RFC 5737)."""
    parts = [
        "config setup\n\tuniqueids=no\n",
        "conn %default\n\tikelifetime=8h\n\tipsec-lifetime=1h\n"
        "\tauthby=secret\n\tdpddelay=30\n\trekey=no\n",
        f"conn base\n\tleft={EAST_OUTER}\n\tleftid=@resp.example\n"
        "\tleftsubnet=203.0.113.0/24\n\tike=aes_gcm256-sha2_256;dh19,aes256-sha2_256;dh14\n"
        "\tesp=aes_gcm256\n",
    ]
    for site in range(10):
        parts.append(f"conn site{site}\n\talso=base\n\trightsubnet=198.51.100.{site * 16}/28\n")
    for i in range(n):
        parts.append(f"conn peer{i}\n\talso=site{i % 10}\n\tright=198.51.100.{i % 250 + 1}\n"
                     f"\trightid=@peer{i}.example\n\tauto={auto}\n")
    return "\n".join(parts)


@functools.cache
def byte_compile() -> bool:
    """Compile pypluto's modules once (``__pycache__``), as installing the package does
    (``BENCH_BYTE_COMPILE=0``: not, to time a tree as it is)."""
    import pypluto

    if os.environ.get("BENCH_BYTE_COMPILE") == "0":
        return False

    return bool(compileall.compile_dir(os.path.dirname(pypluto.__file__), quiet=1))


def _spawn_pypluto(lab: Lab, name: str, conf: str) -> _Pluto:
    """Start pypluto as ``_Pluto.start`` does, without waiting for ``whack --status``.

    ``_Pluto.start`` returns once a ``whack --status`` answers: with 10,000 conns that
    is a Python process competing with the daemon for the CPU plus a 220,000-line
    status, none of which Libreswan's start (which waits for a log line) pays.  The
    start is timed to the log line alone, for both daemons, as this module says.
    """
    pp = _Pluto(lab, lab.east, name, [])
    pp.conf_text, pp.secrets_text = conf, IPSEC_SECRETS
    pp.run_dir.mkdir(parents=True, exist_ok=True)
    (pp.dir / "ipsec.conf").write_text(conf)
    (pp.dir / "ipsec.secrets").write_text(IPSEC_SECRETS)
    (pp.dir / "ipsec.secrets").chmod(0o600)
    argv = [pypluto_bin("pluto"), "--nofork", "--stderrlog", "--rundir", pp.run_dir,
            "--config", pp.dir / "ipsec.conf", "--secretsfile", pp.dir / "ipsec.secrets",
            pp.backend]
    pp.proc = lab.spawn(lab.east, argv, pp.log, name=f"{name}-pluto")
    return pp


def _wait_log(log: pathlib.Path, marker: str, timeout: float) -> float:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        try:
            if marker in log.read_text(errors="replace"):
                return time.monotonic()
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"no {marker!r} in {log} after {timeout}s")


def _log_span(log: pathlib.Path, first: str, last: str) -> float | None:
    """Seconds between the log lines containing ``first`` and ``last`` (their stamps)."""
    stamps: dict[str, float] = {}
    for line in log.read_text(errors="replace").splitlines():
        for key in (first, last):
            m = re.search(r"(\d\d):(\d\d):(\d\d\.\d+): ", line)
            if key in line and m and key not in stamps:
                stamps[key] = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    if first in stamps and last in stamps:
        return (stamps[last] - stamps[first]) % 86400
    return None


def _timed(argvs: list[list[str]], ns: str) -> tuple[float, int]:
    """Run each command in turn in ``ns``; (seconds, failures)."""
    bad = 0
    t0 = time.monotonic()
    for argv in argvs:
        r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                           text=True, timeout=120)
        bad += r.returncode != 0
    return time.monotonic() - t0, bad


def pypluto(n: int, k: int) -> dict[str, Any]:
    byte_compile()
    with Lab(prefix="bc") as lab:
        marker = f'"peer{n - 1}": added'
        t0 = time.monotonic()
        pp = _spawn_pypluto(lab, "cfg-pypluto", make_config(n))
        start_s = _wait_log(pp.log, marker, 120) - t0
        in_daemon = _log_span(pp.log, "Starting Pluto", marker)
        pp.stop()
        pp2 = _Pluto(lab, lab.east, "cfg-pypluto-add", [])
        pp2.start(make_config(n, "ignore"), IPSEC_SECRETS, timeout=120)
        ipsec = [pypluto_bin("ipsec"), "add", "--rundir", str(pp2.run_dir)]
        one_s, bad = _timed([[*ipsec, f"peer{i}"] for i in range(k)], lab.east)
        _wait_log(pp2.log, f'"peer{k - 1}": added', 30)
        # the same adds as whack requests over the control socket, one request per
        # conn: what an add costs the daemon without a Python process start each
        from pypluto.control.client import call

        ctl, conf = str(pp2.run_dir / "pluto.ctl"), str(pp2.dir / "ipsec.conf")
        t0 = time.monotonic()
        sock_bad = sum(call(ctl, "add", {"config": conf, "names": [f"peer{i}"]},
                            timeout=30).rc != 0 for i in range(k, n))
        sock_s = time.monotonic() - t0
        _wait_log(pp2.log, f'"peer{n - 1}": added', 30)
        bulk_s, bad2 = _timed([[*ipsec, *[f"peer{i}" for i in range(k, n)]]], lab.east)
        return {"start_s": start_s, "logged_start_to_last_add_s": in_daemon,
                "one_by_one_k": k, "one_by_one_k_s": one_s,
                "one_by_one_n_s": one_s * n / k, "one_by_one_failures": bad,
                "socket_adds": n - k, "socket_adds_s": sock_s,
                "socket_adds_n_s": sock_s * n / (n - k), "socket_failures": sock_bad,
                "bulk_s": bulk_s, "bulk_n": n - k, "bulk_failures": bad2}


def libreswan(n: int, k: int) -> dict[str, Any]:
    with Lab(prefix="bc") as lab:
        ls = Libreswan(lab, lab.east, name="cfg-libreswan")
        t0 = time.monotonic()
        ls.start(make_config(n), IPSEC_SECRETS, timeout=300)
        start_s = _wait_log(ls.log, f'"peer{n - 1}": added', 300) - t0
        ls.stop()
        ls2 = Libreswan(lab, lab.east, name="cfg-libreswan-add")
        ls2.start(make_config(n, "ignore"), IPSEC_SECRETS, timeout=300)
        addconn = [str(LIBRESWAN_DIR / "addconn"), "--config", str(ls2.dir / "ipsec.conf"),
                   "--ctlsocket", str(ls2.run_dir / "pluto.ctl")]
        one_s, bad = _timed([[*addconn, f"peer{i}"] for i in range(k)], lab.east)
        return {"start_s": start_s, "one_by_one_k": k, "one_by_one_k_s": one_s,
                "one_by_one_n_s": one_s * n / k, "one_by_one_failures": bad}


def startup(kind: str, n: int) -> dict[str, Any]:
    """Spawn to the log line of the last of ``n`` conns added; the daemon's CPU and RSS."""
    if kind == "pypluto":
        byte_compile()
    with Lab(prefix="bc") as lab:
        marker = f'"peer{n - 1}": added'
        t0 = time.monotonic()
        if kind == "pypluto":
            d: Any = _spawn_pypluto(lab, "big-pypluto", make_config(n))
        else:
            d = Libreswan(lab, lab.east, name="big-libreswan")
            d.start(make_config(n), IPSEC_SECRETS, timeout=600)
        start_s = _wait_log(d.log, marker, 600) - t0
        pid = d.proc.pid
        out = {"start_s": start_s, "cpu_s": proc_cpu(pid), "rss_mib": proc_rss_kib(pid) / 1024}
        d.stop()
        return out


def startups(kind: str, n: int, runs: int) -> dict[str, Any]:
    """``runs`` starts of ``n`` conns: the median of each figure, and every run."""
    each = [startup(kind, n) for _ in range(runs)]
    out: dict[str, Any] = {key: statistics.median(r[key] for r in each) for key in each[0]}
    out["runs"] = each
    return out


def run(n: int | None = None, k: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_CONNS", 1000)
    k = k or env_int("BENCH_ADDS", 20)
    only_big = bool(os.environ.get("BENCH_START_ONLY"))
    kinds = os.environ.get("BENCH_START_KINDS", "pypluto,libreswan").split(",")
    runs = env_int("BENCH_START_RUNS", 3)
    res: dict[str, Any] = {}
    if not only_big:
        res["pypluto"] = _try("pypluto", pypluto, n, k)
        if have_libreswan():
            res["libreswan"] = _try("libreswan", libreswan, n, k)
    big = env_int("BENCH_START_CONNS", 10000)
    if "pypluto" in kinds:
        res["pypluto_big"] = _try("pypluto start", startups, "pypluto", big, runs)
    if have_libreswan() and "libreswan" in kinds:
        res["libreswan_big"] = _try("libreswan start", startups, "libreswan", big, runs)

    def g(kind: str, key: str) -> Any:
        v = res.get(kind, {}).get(key)
        return round(v, 2) if isinstance(v, float) else v

    def met(kind: str, key: str) -> str:
        v = g(kind, key)
        return "not measured" if v is None else ("met" if v < GOAL_S else "missed")

    errs = "; ".join(f"{kd}: {r['error']}" for kd, r in res.items() if "error" in r)
    errs = f"; {errs}" if errs else ""
    rows = [
        {"metric": f"daemon start with {n} conns (%default, also=) until the last is added",
         "pypluto": g("pypluto", "start_s"), "strongswan": None,
         "libreswan": g("libreswan", "start_s"), "unit": "s",
         "note": f"goal < {GOAL_S:g} s: {met('pypluto', 'start_s')}; pypluto: "
                 f"{g('pypluto', 'logged_start_to_last_add_s')} s of it from the log's "
                 "'Starting Pluto' to the last conn added, the rest is interpreter start, "
                 "imports and the config parse before logging starts" + errs},
        {"metric": f"daemon start with {big} conns until the last is added "
                   f"(median of {runs})",
         "pypluto": g("pypluto_big", "start_s"), "strongswan": None,
         "libreswan": g("libreswan_big", "start_s"), "unit": "s",
         "note": "goal < 5 s with 10,000: "
                 + ("not measured" if g("pypluto_big", "start_s") is None or big < 10000 else
                    "met" if g("pypluto_big", "start_s") < 5 else "missed")
                 + f"; daemon CPU at that point {g('pypluto_big', 'cpu_s')} / "
                 f"{g('libreswan_big', 'cpu_s')} s, RSS {g('pypluto_big', 'rss_mib')} / "
                 f"{g('libreswan_big', 'rss_mib')} MiB (pypluto / Libreswan)"},
        {"metric": f"ipsec add one by one, {n} conns (one process each)",
         "pypluto": g("pypluto", "one_by_one_n_s"), "strongswan": None,
         "libreswan": g("libreswan", "one_by_one_n_s"), "unit": "s",
         "note": f"{k} adds timed, scaled to {n}; "
                 f"Libreswan = addconn per conn; "
                 f"goal < {GOAL_S:g} s: {met('pypluto', 'one_by_one_n_s')}; what is left "
                 "is the start of one Python process (interpreter, imports) per add: "
                 "the daemon side is the next row"},
        {"metric": f"add requests one by one over the control socket, {n} conns",
         "pypluto": g("pypluto", "socket_adds_n_s"), "strongswan": None, "libreswan": None,
         "unit": "s",
         "note": f"{n - k} whack 'add' requests (one per conn, one connection each) from "
                 f"one client process, scaled to {n}; goal < {GOAL_S:g} s: "
                 f"{met('pypluto', 'socket_adds_n_s')}; the daemon reuses its parse until "
                 "a file changes"},
        {"metric": f"ipsec add with {n - k} names in one call",
         "pypluto": g("pypluto", "bulk_s"), "strongswan": None, "libreswan": None,
         "unit": "s", "note": "one CLI process, one parse"},
    ]
    return {"name": "config_start", "command": "make bench BENCH=config_start",
            "results": res, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    print(out["results"])
    for r in out["rows"]:
        print(r)
