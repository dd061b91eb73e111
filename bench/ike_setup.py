"""IKE SA setup cost on the responder: pypluto vs strongSwan vs Libreswan, one generator.

The neutral load generator is a strongSwan charon (5.9.8) in the "west"
namespace, driven over its vici socket with the ``vici`` package: ``C``
worker threads, each with its own vici session, ask for new IKE SAs
(``initiate`` with only ``ike=``, i.e. childless, RFC 6023) until ``N`` are
established.  ``reuse_ikesa = no`` makes every request a new IKE SA.  The
responder under test runs in the "east" namespace; we read its CPU time
(utime+stime from /proc/PID/stat) and RSS before and after, so the figure
that matters, **responder CPU ms per IKE SA**, does not depend on how fast
the generator is.

Run alone: ``.venv/bin/python -m bench.ike_setup [N] [C]``.
"""

from __future__ import annotations

import os
import pathlib
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "interop")]

from lab import EAST_OUTER, WEST_OUTER, Lab  # noqa: E402
from peers import (  # noqa: E402
    CHARON,
    LIBRESWAN_DIR,
    Libreswan,
    Pypluto,
    have_libreswan,
    have_strongswan,
)

PSK = "bench-psk-0123456789abcdefghijklmnopqrstuv"
GEN_ID = "gen.example"
RESP_ID = "resp.example"
SS_PROPOSAL = "aes256gcm16-prfsha256-x25519"
LS_PROPOSAL = "aes_gcm256-sha2_256-dh31"
CLK = os.sysconf("SC_CLK_TCK")

_GEN_CONF = """\
charon {{
    load_modular = no
    load = random nonce openssl kdf hmac sha2 {ipsec_plugin} kernel-netlink socket-default vici
    reuse_ikesa = no
    threads = 24
    ikesa_table_size = 4096
    init_limit_half_open = 0
    # DoS protections off: the generator is one IP with many half-open SAs
    block_threshold = 100000
    cookie_threshold = 100000
    retransmit_tries = 3
    half_open_timeout = 60
    filelog {{
        log {{
            path = {log}
            default = 0
            append = no
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
}}
charon-systemd {{
    journal {{
        default = -1
    }}
}}
"""


def _swanctl_gen(child: bool) -> str:
    children = (
        """
        children {
            net {
                local_ts = 198.51.100.0/24
                remote_ts = 203.0.113.0/24
                esp_proposals = aes256gcm16
                start_action = none
            }
        }"""
        if child
        else ""
    )
    return f"""\
connections {{
    load {{
        version = 2
        local_addrs = {WEST_OUTER}
        remote_addrs = {EAST_OUTER}
        proposals = {SS_PROPOSAL}
        childless = {"allow" if child else "force"}
        mobike = no
        unique = never
        rekey_time = 0
        local {{
            auth = psk
            id = {GEN_ID}
        }}
        remote {{
            auth = psk
            id = {RESP_ID}
        }}{children}
    }}
}}
secrets {{
    ike-gen {{
        id-a = {GEN_ID}
        id-b = {RESP_ID}
        secret = "{PSK}"
    }}
}}
"""


def _swanctl_resp() -> str:
    return f"""\
connections {{
    resp {{
        version = 2
        local_addrs = {EAST_OUTER}
        proposals = {SS_PROPOSAL}
        childless = allow
        mobike = no
        unique = never
        rekey_time = 0
        local {{
            auth = psk
            id = {RESP_ID}
        }}
        remote {{
            auth = psk
            id = {GEN_ID}
        }}
        children {{
            net {{
                local_ts = 203.0.113.0/24
                remote_ts = 198.51.100.0/24
                esp_proposals = aes256gcm16
            }}
        }}
    }}
}}
secrets {{
    ike-resp {{
        id-a = {GEN_ID}
        id-b = {RESP_ID}
        secret = "{PSK}"
    }}
}}
"""


def _ipsec_conf_resp(extra_setup: str = "") -> str:
    return f"""\
config setup
\tuniqueids=no
{extra_setup}
conn resp
\tauthby=secret
\tleft={EAST_OUTER}
\tleftid=@{RESP_ID}
\tleftsubnet=203.0.113.0/24
\tright=%any
\trightid=@{GEN_ID}
\trightsubnet=198.51.100.0/24
\tike={LS_PROPOSAL}
\tesp=aes_gcm256
\trekey=no
\tauto=add
"""


IPSEC_SECRETS = f'@{RESP_ID} @{GEN_ID} : PSK "{PSK}"\n'


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (and its reaped children), seconds."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")" field 3 is index 0: utime=14, stime=15, cutime=16, cstime=17
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK


def proc_threads_cpu(pid: int) -> float:
    return proc_cpu(pid)


def proc_rss_kib(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Generator:
    """The strongSwan charon that initiates the load."""

    lab: Lab
    child: bool = False
    dir: pathlib.Path = field(init=False)

    def __post_init__(self) -> None:
        self.dir = self.lab.workdir / ("gen-child" if self.child else "gen")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vici = self.dir / "charon.vici"

    def start(self) -> None:
        plugin = "kernel-libipsec" if self.child else ""
        conf = self.dir / "strongswan.conf"
        conf.write_text(_GEN_CONF.format(ipsec_plugin=plugin, log=self.dir / "charon.log",
                                         vici=self.vici))
        self.proc = self.lab.spawn(self.lab.west, [CHARON], self.dir / "stdout.log",
                                   {"STRONGSWAN_CONF": str(conf)}, name="generator")
        self.lab.wait_for(self.vici.exists, 30, "generator vici socket")
        _load_swanctl(self.lab, self.dir, conf, _swanctl_gen(self.child))

    def session(self) -> Any:
        import vici

        s = socket.socket(socket.AF_UNIX)
        s.connect(str(self.vici))
        return vici.Session(s)

    def run(self, n: int, concurrency: int, timeout: float = 300) -> dict[str, Any]:
        """Initiate ``n`` IKE SAs with ``concurrency`` in flight; latencies in ms."""
        lock = threading.Lock()
        todo = [n]
        lat: list[float] = []
        failures = [0]
        deadline = time.monotonic() + timeout

        def worker() -> None:
            sess = self.session()
            req: dict[str, Any] = {"ike": "load", "timeout": 20000}
            if self.child:
                req = {"child": "net", "ike": "load", "timeout": 20000}
            while time.monotonic() < deadline:
                with lock:
                    if todo[0] <= 0:
                        return
                    todo[0] -= 1
                t0 = time.monotonic()
                try:
                    for _ in sess.initiate(req):
                        pass
                    ok = True
                except Exception:
                    ok = False
                dt = (time.monotonic() - t0) * 1000
                with lock:
                    if ok:
                        lat.append(dt)
                    else:
                        failures[0] += 1

        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(1.0, deadline - time.monotonic()))
        wall = time.monotonic() - t0
        lat.sort()
        return {
            "established": len(lat),
            "failures": failures[0],
            "wall_s": wall,
            "rate": len(lat) / wall if wall else 0.0,
            "p50_ms": statistics.median(lat) if lat else None,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        }


def _load_swanctl(lab: Lab, d: pathlib.Path, conf: pathlib.Path, text: str) -> None:
    vici = d / "charon.vici"
    sdir = d / "swanctl"
    for sub in ("x509", "x509ca", "private"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "swanctl.conf").write_text(text)
    lab.run(None, ["swanctl", "--load-all", "--uri", f"unix://{vici}", "--file",
                   sdir / "swanctl.conf"],
            env={"STRONGSWAN_CONF": str(conf)})


def _start_responder(lab: Lab, kind: str, child: bool = False) -> int:
    """Start the responder under test in the east namespace; return its PID."""
    if kind == "strongswan":
        d = lab.workdir / "resp-strongswan"
        d.mkdir(parents=True, exist_ok=True)
        vici = d / "charon.vici"
        conf = d / "strongswan.conf"
        conf.write_text(_GEN_CONF.format(ipsec_plugin="kernel-libipsec" if child else "",
                                         log=d / "charon.log", vici=vici))
        sp = lab.spawn(lab.east, [CHARON], d / "stdout.log", {"STRONGSWAN_CONF": str(conf)},
                       name="resp-strongswan")
        lab.wait_for(vici.exists, 30, "responder vici socket")
        _load_swanctl(lab, d, conf, _swanctl_resp())
        return sp.pid
    if kind == "libreswan":
        ls = Libreswan(lab, lab.east, name="resp-libreswan")
        ls.start(_ipsec_conf_resp(), IPSEC_SECRETS)
        assert ls.proc is not None
        return ls.proc.pid
    if kind == "pypluto":
        pp = Pypluto(lab, lab.east, name="resp-pypluto")
        pp.start(_ipsec_conf_resp(), IPSEC_SECRETS)
        assert pp.proc is not None
        return pp.proc.pid
    raise ValueError(kind)


def measure(kind: str, n: int, concurrency: int, child: bool = False) -> dict[str, Any]:
    """One responder, one fresh lab: the generator establishes ``n`` IKE SAs."""
    with Lab(prefix="bk") as lab:
        pid = _start_responder(lab, kind, child)
        gen = Generator(lab, child=child)
        gen.start()
        # warm up (first SA pays for imports, caches), then measure
        gen.run(min(20, n), 4)
        cpu0, rss0 = proc_cpu(pid), proc_rss_kib(pid)
        res = gen.run(n, concurrency)
        time.sleep(0.5)  # let the responder finish its last exchange before reading
        cpu1, rss1 = proc_cpu(pid), proc_rss_kib(pid)
        est = max(res["established"], 1)
        res.update(
            responder=kind,
            child=child,
            cpu_ms_per_sa=(cpu1 - cpu0) * 1000 / est,
            rss_kib_per_sa=(rss1 - rss0) / est,
        )
        return res


def run(n: int = 1000, concurrency: int = 16) -> dict[str, Any]:
    kinds = []
    if have_strongswan():
        kinds.append("strongswan")
    if have_libreswan() and (LIBRESWAN_DIR / "pluto").exists():
        kinds.append("libreswan")
    kinds.append("pypluto")
    results: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        try:
            results[kind] = measure(kind, n, concurrency)
        except Exception as e:  # a responder that cannot take the load: say so
            results[kind] = {"error": f"{type(e).__name__}: {e}"}
        print(kind, results[kind], flush=True)
    for kind in ("strongswan", "pypluto"):
        try:
            results[kind + "+child"] = measure(kind, max(n // 4, 50), concurrency, child=True)
        except Exception as e:
            results[kind + "+child"] = {"error": f"{type(e).__name__}: {e}"}
        print(kind + "+child", results[kind + "+child"], flush=True)

    def g(k: str, m: str) -> Any:
        return results.get(k, {}).get(m)

    rows = []
    for metric, unit in (("rate", "IKE SA/s"), ("cpu_ms_per_sa", "ms CPU/IKE SA"),
                         ("p50_ms", "ms"), ("p99_ms", "ms"), ("failures", "count"),
                         ("rss_kib_per_sa", "KiB/IKE SA")):
        rows.append({"metric": f"childless {metric}", "pypluto": g("pypluto", metric),
                     "strongswan": g("strongswan", metric),
                     "libreswan": g("libreswan", metric), "unit": unit,
                     "note": f"N={n} C={concurrency}"})
    for metric, unit in (("rate", "IKE+Child/s"), ("cpu_ms_per_sa", "ms CPU/pair")):
        rows.append({"metric": f"ike+child {metric}", "pypluto": g("pypluto+child", metric),
                     "strongswan": g("strongswan+child", metric), "libreswan": None,
                     "unit": unit, "note": "Libreswan cannot install Child SAs here"})
    ratio = None
    if g("pypluto", "rate") and g("strongswan", "rate"):
        ratio = g("pypluto", "rate") / g("strongswan", "rate")
    rows.append({"metric": "rate ratio pypluto/strongSwan", "pypluto": ratio, "unit": "",
                 "note": "goal >= 1.0, same run"})
    return {"name": "ike_setup", "command": "make bench BENCH=ike_setup", "results": results,
            "rows": rows}


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    out = run(*args)
    for r in out["rows"]:
        print(r)
