"""Road warriors (issue 15): ``N`` clients from ``ipsec loadtest --modecfg`` on one
address pool of a pypluto gateway, and the same ``N`` clients from the same generator
on one pool of a strongSwan 5.9.8 gateway, in the same run.

One lab per gateway: the gateway in the east namespace, pinned to CPU 1, the load
tester (pypluto's ``ipsec loadtest``, the same for both) in the west namespace on
CPU 0, one ID per client (``--local-id @rw-{n}.example``), each asking for an
address with its Child SA (RFC 7296 §3.15); the pool is an IPv6 range
(2001:db8:1::/116, 4094 addresses: the IPv4 test ranges are too small for 1,000
clients).

- pypluto: ``right=%any``, ``rightid=%any``, ``rightaddresspool=``, ``--use-none``
  (the figures are about IKE and the Configuration Payload), ``ddos-mode=unlimited``
  (no COOKIEs, as ``bench/ike_setup.py``'s responders);
- strongSwan 5.9.8: charon with ``pools`` (the same range), remote ``id = %any``,
  DoS thresholds raised as in ``bench/ike_setup.py``; it installs each Child SA in
  kernel-libipsec (in user space: charon fails a Child SA it cannot install, and
  this host's kernel has no XFRM ESP), which pypluto's ``--use-none`` does not do,
  so its memory and rate include a data plane that pypluto's do not.

Measured: the setup rate (IKE SA + Child SA + CP), the gateway's RSS growth per
client, that every lease is unique (the client side's addresses and the gateway's
own list: pypluto's ``whack --status --json`` leases, strongSwan's ``swanctl
--list-pools --leases``), and that none is in use after the clients delete their
IKE SAs (``--down``).

Run alone: ``.venv/bin/python -m bench.roadwarrior [N] [C]`` (or ``BENCH_RW_N``,
``BENCH_C``).
"""

from __future__ import annotations

import json
import pathlib
import re
import sys
import time
from typing import Any

from bench.ike_setup import (
    _CHARON_CONF,
    CHARON,
    EAST_OUTER,
    GEN_CPU,
    LS_PROPOSAL,
    PSK,
    RESP_CPU,
    RESP_ID,
    SS_PROPOSAL,
    UNLIMITED,
    WEST_OUTER,
    Lab,
    Pypluto,  # tests/interop/peers.py's driver (path set there)
    _load_swanctl,
    _try,
    env_int,
    have_strongswan,
    pin,
    proc_cpu,
    proc_rss_kib,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
PY = REPO / ".venv" / "bin" / "python"
POOL = "2001:db8:1::/116"
SUBNET = "2001:db8:2::/64"
SUBNET_ADDR = "2001:db8:2::1/128"  # the strongSwan gateway's address inside SUBNET

GATEWAY = f"""\
config setup
\tuniqueids=yes
{UNLIMITED}
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


SS_GATEWAY = f"""\
connections {{
    rw {{
        version = 2
        local_addrs = {EAST_OUTER}
        pools = rwpool
        proposals = {SS_PROPOSAL}
        mobike = no
        unique = no
        rekey_time = 0
        local {{
            auth = psk
            id = {RESP_ID}
        }}
        remote {{
            auth = psk
            id = %any
        }}
        children {{
            net {{
                local_ts = {SUBNET}
                esp_proposals = aes256gcm16
                rekey_time = 0
            }}
        }}
    }}
}}
pools {{
    rwpool {{
        addrs = {POOL}
    }}
}}
secrets {{
    ike-rw {{
        secret = "{PSK}"
    }}
}}
"""


class _PyplutoGateway:
    """pypluto as the gateway: leases from ``whack --status --json``."""

    kind = "pypluto"

    def __init__(self, lab: Lab) -> None:
        self.gw = Pypluto(lab, lab.east, "gw-pypluto", "--use-none")
        self.gw.start(GATEWAY, f': PSK "{PSK}"\n')
        assert self.gw.proc is not None
        self.pid = self.gw.proc.pid

    def _status(self) -> dict[str, Any]:
        r = self.gw.whack("--status", "--json", timeout=300)
        return dict(json.loads(r.stdout))

    def leases(self) -> list[str]:
        """The addresses in use (online)."""
        return [le["address"] for le in self._status().get("leases", [])]

    def in_use_and_lingering(self) -> tuple[int, int]:
        pools = self._status().get("pools", [])
        return sum(pl["in_use"] for pl in pools), sum(pl["lingering"] for pl in pools)


class _StrongSwanGateway:
    """strongSwan 5.9.8's charon with ``pools``: leases from ``swanctl --list-pools``."""

    kind = "strongswan"

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.workdir / "gw-strongswan"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vici = self.dir / "charon.vici"
        self.conf = self.dir / "strongswan.conf"
        # kernel-libipsec routes the clients' addresses through its TUN with a source
        # address of ours inside local_ts; without one it fails every Child SA
        lab.run(lab.east, ["ip", "addr", "add", SUBNET_ADDR, "dev", "lo"])
        self.conf.write_text(_CHARON_CONF.format(ipsec_plugin="kernel-libipsec",
                                                 log=self.dir / "charon.log", vici=self.vici,
                                                 level=0))
        sp = lab.spawn(lab.east, [CHARON], self.dir / "stdout.log",
                       {"STRONGSWAN_CONF": str(self.conf)}, name="gw-strongswan")
        lab.wait_for(self.vici.exists, 30, "the strongSwan gateway's vici socket")
        _load_swanctl(lab, self.dir, self.conf, SS_GATEWAY)
        self.pid = sp.pid

    def _pools(self) -> str:
        r = self.lab.run(None, ["swanctl", "--list-pools", "--leases", "--uri",
                                f"unix://{self.vici}"],
                         env={"STRONGSWAN_CONF": str(self.conf)}, check=False, timeout=300)
        return r.stdout

    def leases(self) -> list[str]:
        """The addresses in use: lease lines ``ADDRESS online 'ID'``."""
        return re.findall(r"^\s+(\S+)\s+online\s", self._pools(), re.M)

    def in_use_and_lingering(self) -> tuple[int, int]:
        """(online, offline) from the pool line ``rwpool BASE ONLINE / OFFLINE / SIZE``;
        strongSwan keeps a left client's address as an offline lease for its ID, as
        pypluto keeps it lingering."""
        m = re.search(r"^rwpool\s+\S+\s+(\d+)\s*/\s*(\d+)\s*/\s*(\d+)", self._pools(),
                      re.M)
        if m is None:
            raise RuntimeError(f"swanctl --list-pools: {self._pools()[-300:]}")
        return int(m.group(1)), int(m.group(2))


def one(n: int, c: int, kind: str = "pypluto") -> dict[str, Any]:
    with Lab(prefix="rw") as lab:
        gw = _StrongSwanGateway(lab) if kind == "strongswan" else _PyplutoGateway(lab)
        pin(gw.pid, RESP_CPU)
        psk = lab.workdir / "loadtest.psk"
        psk.write_text(PSK + "\n")
        psk.chmod(0o600)
        # warm-up (imports, caches): 20 clients that leave again
        lab.run(lab.west, loadtest_argv(psk, 20, 4, down=True), check=False, timeout=120)
        lab.wait_for(lambda: not gw.leases(), 60, "the warm-up clients gone")
        time.sleep(0.5)
        rss0, cpu0 = proc_rss_kib(gw.pid), proc_cpu(gw.pid)
        log = lab.workdir / "loadtest.json"
        hold = 30.0
        sp = lab.spawn(lab.west, loadtest_argv(psk, n, c, down=True) + ["--hold", str(hold)],
                       log, name="loadtest")
        sp.expect_alive = False
        # connected: every client holds an address
        lab.wait_for(lambda: len(gw.leases()) >= n or not sp.alive(),
                     max(300, n / 2), "every client connected")
        rss1, cpu1 = proc_rss_kib(gw.pid), proc_cpu(gw.pid)
        leases = gw.leases()
        sp.proc.wait(max(300, n / 2) + hold)
        try:
            res = json.loads(log.read_text().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise RuntimeError(f"loadtest: {log.read_text()[-500:]}") from None
        est = max(res["established"], 1)
        out = {
            "gateway": kind, "clients": n, "concurrency": c,
            "established": res["established"],
            "rate": res["rate"], "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"],
            "client_addresses": res["addresses"],
            "client_unique_addresses": res["unique_addresses"],
            "gateway_leases": len(leases), "gateway_unique_leases": len(set(leases)),
            "gateway_rss_kib_per_client": (rss1 - rss0) / est,
            "gateway_cpu_ms_per_client": (cpu1 - cpu0) * 1000 / est,
        }
        # the clients left (--down): no lease is in use any more.  A gateway that still
        # holds some after 60 s (a Delete lost under load, no liveness) is measured as it
        # is: the row shows how many, instead of the whole result being dropped.
        try:
            lab.wait_for(lambda: not gw.leases(), 60, "every lease freed")
        except RuntimeError:  # lab.LabError: timed out
            out["leases_still_online_after_60s"] = len(gw.leases())
        out["leases_after_down"], out["lingering_after_down"] = gw.in_use_and_lingering()
        return out


def run(n: int | None = None, c: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_RW_N", 1000)
    c = c or env_int("BENCH_C", 32)
    res: dict[str, dict[str, Any]] = {
        "pypluto": _try("road warriors on a pypluto gateway", one, n, c, "pypluto")}
    if have_strongswan():
        res["strongswan"] = _try("road warriors on a strongSwan gateway", one, n, c,
                                 "strongswan")
    else:
        res["strongswan"] = {"error": "strongSwan 5.9.8 (charon-systemd, swanctl) not found"}

    def v(kind: str, key: str) -> Any:
        x = res[kind].get(key)
        return round(x, 2) if isinstance(x, float) else x

    def both(key: str) -> dict[str, Any]:
        return {"pypluto": v("pypluto", key), "strongswan": v("strongswan", key)}

    def pair(kind: str) -> str | None:
        if "error" in res[kind]:
            return None
        return f"{v(kind, 'gateway_unique_leases')} / {v(kind, 'client_unique_addresses')}"

    errs = "; ".join(f"{k} error: {r['error']}" for k, r in res.items() if "error" in r)
    note = (f"ipsec loadtest --modecfg, N={n} C={c}, one ID each, IPv6 pool {POOL}; "
            "gateway on CPU 1; pypluto --use-none, strongSwan 5.9.8 with kernel-libipsec "
            "(installs every Child SA in user space)" + (f"; {errs}" if errs else ""))
    rows = [
        {"metric": "road warriors: setup rate (IKE+Child SA+CP)", **both("rate"),
         "libreswan": None, "unit": "clients/s", "note": note},
        {"metric": "road warriors: gateway memory per client",
         **both("gateway_rss_kib_per_client"), "libreswan": None, "unit": "KiB",
         "note": "RSS growth of the gateway process while N clients are up"},
        {"metric": "road warriors: gateway CPU per client",
         **both("gateway_cpu_ms_per_client"), "libreswan": None, "unit": "ms", "note": ""},
        {"metric": "road warriors: unique leases (gateway / clients)",
         "pypluto": pair("pypluto"), "strongswan": pair("strongswan"),
         "libreswan": None, "unit": f"of {n}", "note": ""},
        {"metric": "road warriors: leases in use after they disconnect",
         **both("leases_after_down"), "libreswan": None, "unit": "addresses",
         "note": "read 60 s after the clients sent their Deletes (or as soon as none is "
                 "left); pypluto keeps each address lingering for its ID, strongSwan as an "
                 "offline lease" + "".join(
                     f"; {k}: still online after 60 s: {res[k]['leases_still_online_after_60s']}"
                     for k in ("pypluto", "strongswan")
                     if "leases_still_online_after_60s" in res[k])},
    ]
    return {"name": "roadwarrior", "command": "python -m bench.roadwarrior",
            "results": res, "rows": rows}


if __name__ == "__main__":
    out = run(*[int(a) for a in sys.argv[1:3]])
    print(json.dumps(out["results"], indent=1))
    for r in out["rows"]:
        print(r)
