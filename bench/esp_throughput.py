"""ESP throughput: our userspace plane vs strongSwan 5.9.8 kernel-libipsec, same machine, same run.

    .venv/bin/python -m bench.esp_throughput [--seconds 5] [--trials 3]

Two labs of two network namespaces each (bench/esp_lab.py).  In one, our
plane runs on both ends (``python -m pypluto.kernel.userspace.handkey``) with
hand-keyed AES-GCM-256 SAs (ESP-in-UDP on 4500, tunnel mode); in the other,
two charon-systemd instances with swanctl, PSK, ``aes256gcm16`` and the
kernel-libipsec plugin bring up the same tunnel.  iperf3 (Debian package,
installed with apt) measures TCP bulk throughput and 1400-byte UDP datagrams
per second received.  Trials alternate between the two planes so that the
load other work puts on the machine hits both alike; the best trial of each
counts, and the CPU time the plane processes used is reported per packet.
Results: a table on stdout; under ``make bench``, ``bench/results/esp_plane.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.esp_lab import (  # noqa: E402
    EAST_HOST,
    EAST_NET,
    EAST_OUTER,
    WEST_HOST,
    WEST_NET,
    WEST_OUTER,
    Lab,
    handkeyed,
    wait_for,
)

HERE = pathlib.Path(__file__).resolve().parent
CHARON = "/usr/sbin/charon-systemd"
TICK = os.sysconf("SC_CLK_TCK")

STRONGSWAN_CONF = """\
# charon-systemd for the ESP benchmark: ESP in user space (kernel-libipsec, TUN ipsec0)
charon {
    load_modular = no
    # kernel-libipsec before kernel-netlink, so it provides kernel-ipsec
    load = random nonce openssl kdf hmac sha2 pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici
    filelog {
        bench {
            path = @DIR@/charon.log
            default = 1
        }
    }
    plugins {
        vici {
            socket = unix://@DIR@/charon.vici
        }
    }
}
charon-systemd {
    journal {
        default = -1
    }
}
swanctl {
    socket = unix://@DIR@/charon.vici
}
"""

SWANCTL_CONF = """\
connections {
    bench {
        version = 2
        local_addrs = @LOCAL@
        remote_addrs = @REMOTE@
        proposals = aes256gcm16-prfsha256-x25519
        local {
            auth = psk
            id = @ME@.bench
        }
        remote {
            auth = psk
            id = @PEER@.bench
        }
        children {
            net {
                local_ts = @LTS@
                remote_ts = @RTS@
                esp_proposals = aes256gcm16
                start_action = none
            }
        }
    }
}
secrets {
    ike-bench {
        id-1 = west.bench
        id-2 = east.bench
        secret = "@PSK@"
    }
}
"""


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes (all threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / TICK


class StrongSwan:
    """Two charon-systemd instances with kernel-libipsec, one per namespace of ``lab``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.pids: list[int] = []
        self.dirs: dict[str, pathlib.Path] = {}

    def start(self) -> None:
        psk = os.urandom(24).hex()
        for ns, me, peer, local, remote, lts, rts in (
                (self.lab.west, "west", "east", WEST_OUTER, EAST_OUTER, WEST_NET, EAST_NET),
                (self.lab.east, "east", "west", EAST_OUTER, WEST_OUTER, EAST_NET, WEST_NET)):
            d = self.lab.tmp / f"sw-{me}"
            (d / "swanctl").mkdir(parents=True)
            self.dirs[me] = d
            (d / "strongswan.conf").write_text(STRONGSWAN_CONF.replace("@DIR@", str(d)))
            conf = SWANCTL_CONF
            for k, v in (("@LOCAL@", local), ("@REMOTE@", remote), ("@ME@", me),
                         ("@PEER@", peer), ("@LTS@", lts), ("@RTS@", rts), ("@PSK@", psk)):
                conf = conf.replace(k, v)
            (d / "swanctl" / "swanctl.conf").write_text(conf)
            os.chmod(d / "swanctl" / "swanctl.conf", 0o600)
            env = dict(os.environ, STRONGSWAN_CONF=str(d / "strongswan.conf"))
            p = self.lab.spawn(ns, CHARON, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
            self.pids.append(p.pid)
            if not wait_for(lambda d=d: (d / "charon.vici").exists(), 30):
                raise RuntimeError(f"charon in {ns} did not start")
            self.swanctl(me, "--load-all", "--file", str(d / "swanctl" / "swanctl.conf"))
        self.swanctl("west", "--initiate", "--child", "net", "--timeout", "20")

    def swanctl(self, who: str, *args: str) -> str:
        d = self.dirs[who]
        env = dict(os.environ, STRONGSWAN_CONF=str(d / "strongswan.conf"))
        r = subprocess.run(["swanctl", *args], capture_output=True, text=True, env=env,
                           timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"swanctl {' '.join(args)}: {r.stdout[-500:]} {r.stderr}")
        return r.stdout

    def stop(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for pid in self.pids:
            end = time.monotonic() + 10
            while time.monotonic() < end and pathlib.Path(f"/proc/{pid}").exists():
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    pass
                time.sleep(0.1)


def _iperf(lab: Lab, seconds: float, udp: bool) -> dict[str, float]:
    srv = lab.spawn(lab.east, "iperf3", "-s", "-B", EAST_HOST, "-1",
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    args = ["iperf3", "-c", EAST_HOST, "-B", WEST_HOST, "-t", str(seconds), "-J"]
    if udp:
        args += ["-u", "-b", "0", "-l", "1400"]
    r = lab.exec(lab.west, *args, check=False)
    try:
        srv.wait(timeout=10)
    except subprocess.TimeoutExpired:
        srv.kill()
    try:
        end = json.loads(r.stdout)["end"]
    except (ValueError, KeyError):
        raise RuntimeError(f"iperf3 failed: {r.stdout[-300:]} {r.stderr[-300:]}") from None
    if udp:
        s = end["sum"]
        got = s["packets"] - s["lost_packets"]
        return {"pps": got / s["seconds"], "sent_pps": s["packets"] / s["seconds"],
                "packets": got, "mbps": s["bits_per_second"] / 1e6 * got / max(1, s["packets"])}
    return {"mbps": end["sum_received"]["bits_per_second"] / 1e6,
            "packets": end["sum_received"]["bytes"] / 1448}


def _trial(lab: Lab, pids: list[int], seconds: float, udp: bool) -> dict[str, float]:
    c0 = _cpu_seconds(pids)
    res = _iperf(lab, seconds, udp)
    res["cpu_us_per_packet"] = (_cpu_seconds(pids) - c0) / max(1.0, res["packets"]) * 1e6
    return res


def measure(seconds: float = 5, trials: int = 3, threads: str = "split") -> dict[str, Any]:
    if os.geteuid() != 0:
        raise RuntimeError("needs root (network namespaces)")
    for tool in ("iperf3", "swanctl", CHARON):
        if not shutil.which(tool) and not os.path.exists(tool):
            raise RuntimeError(f"{tool} is missing (apt-get install iperf3 charon-systemd "
                               "strongswan-swanctl)")
    raw: dict[str, list[dict[str, float]]] = {"ours_tcp": [], "sw_tcp": [], "ours_udp": [],
                                              "sw_udp": []}
    with Lab("o") as ours, Lab("s") as theirs:
        w, e = handkeyed()
        w["threads"] = e["threads"] = threads
        pw, pe = ours.plane(ours.west, w), ours.plane(ours.east, e)
        our_pids = [pw.proc.pid, pe.proc.pid]
        sw = StrongSwan(theirs)
        try:
            sw.start()
            for ns_lab in (ours, theirs):  # both tunnels carry a ping before measuring
                ns_lab.exec(ns_lab.west, "ping", "-c", "2", "-i", "0.2", "-W", "2", EAST_HOST)
            for i in range(trials):
                first = [("ours", ours, our_pids), ("sw", theirs, sw.pids)]
                for name, lb, pids in first if i % 2 == 0 else first[::-1]:
                    raw[f"{name}_tcp"].append(_trial(lb, pids, seconds, False))
                    print(f"  trial {i + 1} {name} tcp {raw[f'{name}_tcp'][-1]['mbps']:.0f}"
                          " Mbit/s", flush=True)
            for i in range(max(1, trials - 1)):
                first = [("ours", ours, our_pids), ("sw", theirs, sw.pids)]
                for name, lb, pids in first if i % 2 == 0 else first[::-1]:
                    raw[f"{name}_udp"].append(_trial(lb, pids, seconds, True))
                    print(f"  trial {i + 1} {name} udp {raw[f'{name}_udp'][-1]['pps']:.0f}"
                          " packets/s", flush=True)
            stats = pw.stats()
        finally:
            sw.stop()
            pw.close()
            pe.close()
    return {"raw": raw, "our_stats": stats}


def run(seconds: float = 5, trials: int = 3, threads: str = "split") -> dict[str, Any]:
    """The benchmark in bench/run.py's format (run.py writes ``results/esp_plane.json``)."""
    load0 = os.getloadavg()
    m = measure(seconds, trials, threads)
    raw = m["raw"]

    def best(k: str, f: str) -> float:
        return max(x[f] for x in raw[k])

    def cpu(k: str) -> float:
        return min(x["cpu_us_per_packet"] for x in raw[k])

    def median(k: str, f: str) -> float:
        return float(statistics.median(x[f] for x in raw[k]))

    tcp_o, tcp_s = best("ours_tcp", "mbps"), best("sw_tcp", "mbps")
    tcp_om, tcp_sm = median("ours_tcp", "mbps"), median("sw_tcp", "mbps")
    udp_o, udp_s = best("ours_udp", "pps"), best("sw_udp", "pps")
    rows = [
        {"metric": "TCP bulk throughput (best trial)", "pypluto": round(tcp_o),
         "strongswan": round(tcp_s), "unit": "Mbit/s",
         "note": f"ratio {tcp_o / tcp_s:.2f}x; the plane alone: our plane hand-keyed "
                 "(no daemon) vs a strongSwan kernel-libipsec pair; AES-GCM-256, ESP-in-UDP, "
                 "iperf3; daemon to daemon: esp_daemons"},
        {"metric": "TCP bulk throughput (median trial)", "pypluto": round(tcp_om),
         "strongswan": round(tcp_sm), "unit": "Mbit/s",
         "note": f"ratio {tcp_om / tcp_sm:.2f}x; {len(raw['ours_tcp'])} trials each"},
        {"metric": "UDP 1400-byte datagrams received (best)", "pypluto": round(udp_o),
         "strongswan": round(udp_s), "unit": "packets/s",
         "note": f"ratio {udp_o / udp_s:.2f}x; sender unlimited (iperf3 -b 0)"},
        {"metric": "plane CPU per TCP packet (both ends)", "pypluto": round(cpu("ours_tcp"), 1),
         "strongswan": round(cpu("sw_tcp"), 1), "unit": "us",
         "note": "utime+stime of the plane processes / MSS-sized packets"},
    ]
    result = {
        "name": "esp_plane",
        "rows": rows,
        "ratio_tcp": tcp_o / tcp_s,
        "ratio_tcp_median": tcp_om / tcp_sm,
        "ratio_udp": udp_o / udp_s,
        "trials": raw,
        "threads": threads,
        "our_plane_counters": m["our_stats"]["plane"],
        "command": ".venv/bin/python -m bench.esp_throughput "
                   f"--seconds {seconds} --trials {trials} --threads {threads}",
        "machine": {"cpus": os.cpu_count(), "loadavg_start": load0,
                    "loadavg_end": os.getloadavg(),
                    "note": "2 cores shared with other work; trials alternate planes"},
    }
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--threads", choices=("single", "split"), default="split")
    a = ap.parse_args()
    res = run(a.seconds, a.trials, a.threads)
    print(f"{'metric':44} {'pypluto':>10} {'strongSwan':>11}  unit      note")
    for r in res["rows"]:
        print(f"{r['metric']:44} {r['pypluto']:>10} {r['strongswan']:>11}  {r['unit']:9} "
              f"{r['note']}")
    print(f"TCP ratio {res['ratio_tcp']:.2f}x (median {res['ratio_tcp_median']:.2f}x), UDP ratio {res['ratio_udp']:.2f}x "
          "(pypluto / strongSwan kernel-libipsec)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
