"""Road warriors (issue 15): ``N`` clients from ``ipsec loadtest --modecfg`` on one
address pool of a pypluto gateway.

One lab: the gateway (pypluto, ``--use-none``: the figures are about IKE and the
Configuration Payload, RFC 7296 §3.15) in the east namespace, pinned to CPU 1,
with ``right=%any``, ``rightid=%any`` and ``rightaddresspool=`` an IPv6 range
(2001:db8:1::/116, 4094 addresses: the IPv4 test ranges are too small for 1,000
clients); the load tester in the west namespace on CPU 0, one ID per client
(``--local-id @rw-{n}.example``), each asking for an address with its Child SA.

Measured: the setup rate (IKE SA + Child SA + CP), the gateway's RSS growth per
client, that every lease is unique (the client side's addresses and the
gateway's ``whack --status --json`` leases), and that all are freed after the
clients delete their IKE SAs (``--down``).

Run alone: ``.venv/bin/python -m bench.roadwarrior [N] [C]``.
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
    LS_PROPOSAL,
    PSK,
    RESP_CPU,
    RESP_ID,
    WEST_OUTER,
    Lab,
    Pypluto,  # tests/interop/peers.py's driver (path set there)
    _try,
    env_int,
    pin,
    proc_cpu,
    proc_rss_kib,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
POOL = "2001:db8:1::/116"
SUBNET = "2001:db8:2::/64"

GATEWAY = f"""\
config setup
\tuniqueids=yes

conn rw
\tauthby=secret
\tleft={EAST_OUTER}
\tleftid=@{RESP_ID}
\tleftsubnet={SUBNET}
\tleftmodecfgserver=yes
\tright=%any
\trightid=%any
\trightaddresspool={POOL}
\trightmodecfgclient=yes
\tike={LS_PROPOSAL}
\tesp=aes_gcm256
\tauto=add
"""


def loadtest_argv(psk_file: pathlib.Path, n: int, c: int, *, down: bool) -> list[str]:
    return ["taskset", "-c", str(GEN_CPU), str(PY if PY.exists() else sys.executable),
            "-m", "pypluto.loadtest", "--local", WEST_OUTER, "--remote", EAST_OUTER,
            "--psk-file", str(psk_file), "--local-id", "@rw-{n}.example",
            "--remote-id", f"@{RESP_ID}", "--ike", LS_PROPOSAL, "--esp", "aes_gcm256",
            "--remote-subnet", SUBNET, "--modecfg", "-n", str(n), "-c", str(c), "--json"] + \
        (["--down"] if down else [])


def _status(gw: Pypluto) -> dict[str, Any]:
    r = gw.whack("--status", "--json")
    return dict(json.loads(r.stdout))


def one(n: int, c: int) -> dict[str, Any]:
    with Lab(prefix="rw") as lab:
        gw = Pypluto(lab, lab.east, "gw-pypluto", "--use-none")
        gw.start(GATEWAY, f': PSK "{PSK}"\n')
        assert gw.proc is not None
        pin(gw.proc.pid, RESP_CPU)
        psk = lab.workdir / "loadtest.psk"
        psk.write_text(PSK + "\n")
        psk.chmod(0o600)
        # warm-up (imports, caches): 20 clients that leave again
        lab.run(lab.west, loadtest_argv(psk, 20, 4, down=True), check=False, timeout=120)
        time.sleep(0.5)
        rss0, cpu0 = proc_rss_kib(gw.proc.pid), proc_cpu(gw.proc.pid)
        log = lab.workdir / "loadtest.json"
        hold = 30.0
        sp = lab.spawn(lab.west, loadtest_argv(psk, n, c, down=True) + ["--hold", str(hold)],
                       log, name="loadtest")
        sp.expect_alive = False
        # connected: every client holds an address
        lab.wait_for(lambda: len(_status(gw).get("leases", [])) >= n or not sp.alive(),
                     max(300, n / 2), "every client connected")
        rss1, cpu1 = proc_rss_kib(gw.proc.pid), proc_cpu(gw.proc.pid)
        leases = [le["address"] for le in _status(gw).get("leases", [])]
        sp.proc.wait(max(300, n / 2) + hold)
        try:
            res = json.loads(log.read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"loadtest: {log.read_text()[-500:]}") from None
        est = max(res["established"], 1)
        out = {
            "clients": n, "concurrency": c, "established": res["established"],
            "rate": res["rate"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "client_addresses": res["addresses"],
            "client_unique_addresses": res["unique_addresses"],
            "gateway_leases": len(leases), "gateway_unique_leases": len(set(leases)),
            "gateway_rss_kib_per_client": (rss1 - rss0) / est,
            "gateway_cpu_ms_per_client": (cpu1 - cpu0) * 1000 / est,
        }
        # the clients left (--down): every lease is freed
        lab.wait_for(lambda: not _status(gw).get("leases"), 60, "every lease freed")
        pools = _status(gw).get("pools", [])
        out["leases_after_down"] = sum(pl["in_use"] for pl in pools)
        out["lingering_after_down"] = sum(pl["lingering"] for pl in pools)
        return out


def run(n: int | None = None, c: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_RW_N", 1000)
    c = c or env_int("BENCH_C", 32)
    res = _try("road warriors on a pypluto gateway", one, n, c)
    e = res.get("error", "")

    def v(key: str) -> Any:
        x = res.get(key)
        return round(x, 2) if isinstance(x, float) else x

    note = (f"ipsec loadtest --modecfg, N={n} C={c}, one ID each, IPv6 pool {POOL}; "
            "gateway --use-none on CPU 1; strongSwan as the gateway: not run (see issue 15)"
            + (f"; error: {e}" if e else ""))
    rows = [
        {"metric": "road warriors: setup rate (IKE+Child SA+CP)", "pypluto": v("rate"),
         "strongswan": None, "libreswan": None, "unit": "clients/s", "note": note},
        {"metric": "road warriors: gateway memory per client",
         "pypluto": v("gateway_rss_kib_per_client"), "strongswan": None, "libreswan": None,
         "unit": "KiB", "note": ""},
        {"metric": "road warriors: unique leases (gateway / clients)",
         "pypluto": f"{v('gateway_unique_leases')} / {v('client_unique_addresses')}",
         "strongswan": None, "libreswan": None, "unit": f"of {n}", "note": ""},
        {"metric": "road warriors: leases in use after they disconnect",
         "pypluto": v("leases_after_down"), "strongswan": None, "libreswan": None,
         "unit": "addresses", "note": ""},
    ]
    return {"name": "roadwarrior", "command": "python -m bench.roadwarrior",
            "results": res, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    print(json.dumps(out["results"], indent=1))
    for r in out["rows"]:
        print(r)
