"""The half-open flood of issue 13, in a two-namespace lab: shared by the test and the bench.

Topology (a :class:`lab.Lab`; RFC 5737 addresses only)::

    west namespace                              east namespace
    192.0.2.1  strongSwan 5.9.8 (libipsec)      192.0.2.2  pypluto responder (userspace ESP)
    raw socket: the spoofed flood               198.51.100.128/26, 203.0.113.128/26
                                                (the spoofed sources) routed back via west
    north namespace (veth to east, /28)         rp_filter off
    198.51.100.226 pypluto initiator            198.51.100.225 (east's end of that link)

* ``net``: strongSwan's tunnel 198.51.100.0/25 <-> 203.0.113.0/25, up before the
  floods; a ping every 50 ms runs through it during each flood.
* each run: 20,000 spoofed IKE_SA_INIT (valid proposals, random SPIs and
  sources, the ``road`` %any conn matches them, so each would cost a key
  exchange) sent by ``flood_sender.py`` as fast as one process can.  The sender
  builds its datagrams first, says ``ready`` and waits for the go; strongSwan
  (``probe``, a childless IKE SA) and the pypluto initiator (``north``) are
  started once it says that 5 % of the flood has been sent, however slow the
  machine, so they always connect under it (``peers_started_after_flood_start`` says when; each one's
  log says whether it was asked for a COOKIE).  Up-times: strongSwan's is the
  wall time of ``swanctl --initiate`` (so it includes swanctl itself);
  pypluto's is taken from the initiator's log (from "initiating" to
  "established IKE SA").
* each run starts when the responder no longer demands cookies (the previous
  flood's busy mode has ended by itself, ~5 s after it), so every run shows
  cookies switching on; the COOKIEs it sent are read from ``whack
  --globalstatus`` (``total.ddos.cookies_sent``) before and after;
* the responder's RSS (``VmRSS``) is sampled every 20 ms during each flood; after
  the last run the scenario waits until no half-open SA is left (they expire
  after the engine's 30 s ``half_open_timeout``) and until 60 s have passed
  since the end of the last flood, and reads the RSS again.

The strongSwan initiator retransmits after 0.5 s (``retransmit_timeout``, as
Libreswan's ``retransmit-interval``) instead of its default 4 s: a datagram
lost at the responder's full socket buffer then costs 0.5 s, not 4.
"""

from __future__ import annotations

import ipaddress
import json
import pathlib
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from lab import EAST_INNER, EAST_OUTER, WEST_INNER, WEST_OUTER, Lab
from peers import SWANCTL, Pypluto, StrongSwan

HERE = pathlib.Path(__file__).resolve().parent
NORTH = "198.51.100.226"  # the pypluto initiator, in a third namespace
NORTH_PEER = "198.51.100.225"  # the responder's address on that link
PSK = "flood-lab-psk-0123456789abcdefghijklmnop"
FLOOD_N = 20000
AFTER_S = 60.0  # issue 13: the RSS "back within 5 MiB 60 s after" the flood

EAST_CONF = f"""\
config setup
\tplutodebug=none

conn ss-net
\tauthby=secret
\tleft={WEST_OUTER}
\tleftid=@west.example
\tleftsubnet=198.51.100.0/25
\tright={EAST_OUTER}
\trightid=@east.example
\trightsubnet=203.0.113.0/25
\tauto=add

conn ss-probe
\tauthby=secret
\tleft={WEST_OUTER}
\tleftid=@probe.example
\tright={EAST_OUTER}
\trightid=@east.example
\tauto=add

conn north
\tauthby=secret
\tleft={NORTH}
\tleftid=@north.example
\tleftsubnet=198.51.100.240/28
\tright={NORTH_PEER}
\trightid=@east.example
\trightsubnet=203.0.113.240/28
\tauto=add

conn road
\tauthby=secret
\tleft=%any
\tleftid=@road.example
\tright={EAST_OUTER}
\trightid=@east.example
\tauto=add
"""

NORTH_CONF = EAST_CONF.split("conn ss-net")[0] + "conn north" + \
    EAST_CONF.split("conn north")[1].split("conn road")[0]
SECRETS = (f'@west.example @probe.example @north.example @road.example @east.example : '
           f'PSK "{PSK}"\n')

SWANCTL_CONF = f"""\
connections {{
    net {{
        version = 2
        local_addrs = {WEST_OUTER}
        remote_addrs = {EAST_OUTER}
        proposals = aes256gcm16-prfsha256-x25519
        dpd_delay = 30s
        local {{
            auth = psk
            id = west.example
        }}
        remote {{
            auth = psk
            id = east.example
        }}
        children {{
            net {{
                local_ts = 198.51.100.0/25
                remote_ts = 203.0.113.0/25
                esp_proposals = aes256gcm16
            }}
        }}
    }}
    probe {{
        version = 2
        local_addrs = {WEST_OUTER}
        remote_addrs = {EAST_OUTER}
        proposals = aes256gcm16-prfsha256-x25519
        childless = force
        local {{
            auth = psk
            id = probe.example
        }}
        remote {{
            auth = psk
            id = east.example
        }}
    }}
}}
secrets {{
    ike-a {{
        id-a = west.example
        id-b = east.example
        secret = "{PSK}"
    }}
    ike-b {{
        id-a = probe.example
        id-b = east.example
        secret = "{PSK}"
    }}
}}
"""


def init_template() -> bytes:
    """One valid IKE_SA_INIT for the ``road`` conn (pypluto's default proposals)."""
    from pypluto.config.parser import parse_config_text
    from pypluto.ike.actions import SendPacket
    from pypluto.ike.engine import Engine
    from pypluto.ike.settings import EngineSettings

    text = ("conn road\n\tauthby=secret\n\tleft=192.0.2.99\n\tleftid=@road.example\n"
            f"\tright={EAST_OUTER}\n\trightid=@east.example\n\tauto=add\n")
    cfg = parse_config_text(text)

    class _NoSecrets:
        def psk_for(self, *a: object) -> None:
            return None

    eng = Engine(EngineSettings(), _NoSecrets(),
                 local_addrs=[ipaddress.ip_address("192.0.2.99")])
    conn = next(iter(cfg.conns.values()))
    eng.add_connection(conn)
    acts = eng.initiate(conn.name, 0.0)
    return next(a.data for a in acts if isinstance(a, SendPacket))


def rss_kib(pid: int) -> int:
    text = pathlib.Path(f"/proc/{pid}/status").read_text()
    m = re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


@dataclass
class Figures:
    """What the flood runs measured (the test asserts, the bench reports)."""

    strongswan_up: list[float] = field(default_factory=list)  # seconds
    pypluto_up: list[float] = field(default_factory=list)
    flood_seconds: list[float] = field(default_factory=list)  # sender's own time
    flood_rate: list[float] = field(default_factory=list)  # datagrams/s sent
    rss_base_kib: int = 0
    rss_peak_growth_kib: list[int] = field(default_factory=list)
    rss_after_kib: int = 0
    halfopen_peak: list[int] = field(default_factory=list)
    pings_sent: int = 0
    pings_lost: int = 0
    cookie_lines: int = 0
    expiry_wait: float = 0.0
    rss_samples: int = 0
    busy_seen: list[bool] = field(default_factory=list)  # cookies demanded during the flood
    cookies_sent: list[int] = field(default_factory=list)  # COOKIE answers, each run
    strongswan_cookied: list[bool] = field(default_factory=list)  # asked for a COOKIE
    pypluto_cookied: list[bool] = field(default_factory=list)
    peers_started_after_flood_start: list[float] = field(default_factory=list)  # s
    rss_expired_kib: int = 0  # once no half-open SA is left
    after_seconds: float = 0.0  # from the end of the last flood to rss_after_kib

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FloodLab:
    """The daemons of the flood scenario inside one ``Lab``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.east: Pypluto | None = None
        self.north: Pypluto | None = None
        self.ss: StrongSwan | None = None
        self.t_last_flood_end = time.monotonic()

    def start(self) -> None:
        lab = self.lab
        self._north_ns()  # before the responder starts: it listens on that link too
        for net in ("198.51.100.128/26", "203.0.113.128/26"):  # replies to spoofed sources
            lab.run(lab.east, ["ip", "route", "add", net, "via", WEST_OUTER])
        for key in ("all", "default", "east"):
            lab.run(lab.east, ["sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0"])
        self.east = Pypluto(lab, lab.east, "pypluto-east").start(EAST_CONF, SECRETS)
        self.ss = StrongSwan(lab, lab.west, "strongswan-west", charon_extra="""
            retransmit_timeout = 0.5
            retransmit_base = 1.4
            retransmit_tries = 5""").start()
        self.ss.load(SWANCTL_CONF)
        self.north = Pypluto(lab, self.north_ns, "pypluto-north", "--use-none")
        self._start_north()
        ss = self.ss

        def net_up() -> bool:  # charon may not know its addresses yet: try again
            r = ss.swanctl("--initiate", "--child", "net", "--timeout", "10", check=False)
            return r.returncode == 0

        lab.wait_for(net_up, 40, "strongSwan's tunnel 'net' up")
        lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                      src=WEST_INNER)[1] == 1, 20,
                     "a first echo through strongSwan's tunnel")

    def _north_ns(self) -> None:
        """A third namespace for the pypluto initiator, linked to east (charon holds
        the wildcard port 500 in west)."""
        lab = self.lab
        self.north_ns = lab.east + "n"
        lab.run(None, ["ip", "netns", "add", self.north_ns])
        lab._namespaces.append(self.north_ns)  # removed with the lab's own
        lab.run(self.north_ns, ["ip", "link", "set", "lo", "up"])
        lab.run(None, ["ip", "link", "add", "n0", "netns", self.north_ns, "type", "veth",
                       "peer", "name", "n1", "netns", lab.east])
        lab.run(self.north_ns, ["ip", "addr", "add", f"{NORTH}/28", "dev", "n0"])
        lab.run(lab.east, ["ip", "addr", "add", f"{NORTH_PEER}/28", "dev", "n1"])
        lab.run(self.north_ns, ["ip", "link", "set", "n0", "up"])
        lab.run(lab.east, ["ip", "link", "set", "n1", "up"])
        lab.wait_for(lambda: lab.run(self.north_ns, ["ping", "-c1", "-W1", NORTH_PEER],
                                     check=False).returncode == 0, 10, "north link up")

    def _start_north(self) -> None:
        """The pypluto initiator in its own namespace (IKE only: --use-none)."""
        assert self.north is not None
        n = self.north
        n.conf_text, n.secrets_text = NORTH_CONF, SECRETS
        n.run_dir.mkdir(parents=True, exist_ok=True)
        (n.dir / "ipsec.conf").write_text(n.conf_text)
        (n.dir / "ipsec.secrets").write_text(n.secrets_text)
        (n.dir / "ipsec.secrets").chmod(0o600)
        from peers import pypluto_bin
        argv = [pypluto_bin("pluto"), "--nofork", "--stderrlog", "--rundir", n.run_dir,
                "--config", n.dir / "ipsec.conf", "--secretsfile", n.dir / "ipsec.secrets",
                "--use-none"]
        n.proc = self.lab.spawn(self.north_ns, argv, n.log, name="pypluto-north-pluto")
        self.lab.wait_for(lambda: n.ctl.exists() and n.whack("--status").returncode == 0, 30,
                          "pypluto-north control socket")

    def halfopen(self) -> tuple[int, bool]:
        """(half-open IKE SAs, cookies demanded) from ``whack --briefstatus --json``."""
        assert self.east is not None
        r = self.east.whack("--briefstatus", "--json")
        try:
            s = json.loads(r.stdout)["summary"]
            return int(s["ike_sas"]["half_open"]), bool(s["ddos_cookies_required"])
        except (ValueError, KeyError):
            return -1, False

    def _north_up_time(self, since_line: int) -> float | None:
        assert self.north is not None
        lines = self.north.log.read_text(errors="replace").splitlines()[since_line:]
        t0 = t1 = None
        for ln in lines:
            m = re.match(r"\w+\s+\d+ (\d+):(\d+):(\d+)\.(\d+): ", ln)
            if not m:
                continue
            t = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3]) + int(m[4]) / 1e6
            if t0 is None and "initiating IKEv2 connection" in ln:
                t0 = t
            elif t0 is not None and "established IKE SA" in ln:
                t1 = t
                break
        return None if t0 is None or t1 is None else round(t1 - t0, 4)

    def globalstatus(self) -> dict[str, int]:
        """``whack --globalstatus`` as numbers (``total.ddos.cookies_sent`` etc.)."""
        assert self.east is not None
        out: dict[str, int] = {}
        for ln in self.east.whack("--globalstatus").stdout.splitlines():
            k, eq, v = ln.strip().partition("=")
            if eq and v.strip().lstrip("-").isdigit():
                out[k.strip()] = int(v)
        return out

    def _ss_log_lines(self) -> int:
        assert self.ss is not None
        return len(self._ss_log().splitlines())

    def _ss_log(self) -> str:
        assert self.ss is not None
        return (self.ss.dir / "charon.log").read_text(errors="replace")

    def one_run(self, fig: Figures, seed: int, n: int = FLOOD_N) -> None:
        """One flood and the two legitimate initiators; the processes it started are
        killed (by their Popen) if it fails half-way."""
        self._procs: list[subprocess.Popen[str]] = []
        try:
            self._one_run(fig, seed, n)
        finally:
            for pr in self._procs:
                if pr.poll() is None:
                    pr.kill()
                    pr.wait(10)

    def _one_run(self, fig: Figures, seed: int, n: int) -> None:
        lab = self.lab
        assert self.east is not None and self.east.proc is not None
        assert self.north is not None and self.ss is not None
        pid = self.east.proc.pid
        # every run starts cold: the previous flood's busy mode has ended (hysteresis)
        lab.wait_for(lambda: not self.halfopen()[1], 60, "cookies off again")
        cookies0 = self.globalstatus().get("total.ddos.cookies_sent", 0)
        base = rss_kib(pid)
        if not fig.rss_base_kib:
            fig.rss_base_kib = base
        template = init_template()
        north_lines = len(self.north.log.read_text(errors="replace").splitlines())
        ss_lines = self._ss_log_lines()
        peak = [base]
        samples: list[int] = []
        stop = threading.Event()

        def sample() -> None:  # /proc only: a whack per sample would steal a core
            while not stop.is_set():
                r = rss_kib(pid)
                peak[0] = max(peak[0], r)
                samples.append(r)
                time.sleep(0.02)

        sender = subprocess.Popen(["ip", "netns", "exec", lab.west, sys.executable,
                                   str(HERE / "flood_sender.py"), str(n), EAST_OUTER,
                                   template.hex(), str(seed)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self._procs.append(sender)
        assert sender.stdout is not None and sender.stdin is not None
        # the sender builds its datagrams (0.2 s idle, longer on a busy machine) first
        ready = sender.stdout.readline().strip()
        assert ready == "ready", f"flood_sender.py: {ready!r}"
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        count = int(3.0 / 0.05)  # 3 s of pings around the flood
        ping = subprocess.Popen(["ip", "netns", "exec", lab.west, "ping", "-n", "-q", "-c",
                                 str(count), "-i", "0.05", "-W", "1", "-I", WEST_INNER,
                                 EAST_INNER], stdout=subprocess.PIPE, text=True)
        self._procs.append(ping)
        time.sleep(0.2)  # a few echoes before the flood
        # go: the flood starts; the legitimate initiators once 5 % of it has been sent
        sender.stdin.write("go\n")
        sender.stdin.flush()
        flooding = sender.stdout.readline().strip()
        assert flooding == "flooding", f"flood_sender.py: {flooding!r}"
        t0 = time.monotonic()
        ss = subprocess.Popen(["ip", "netns", "exec", lab.west, SWANCTL, "--initiate",
                               "--ike", "probe", "--timeout", "10"],
                              env=self.ss.env | {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        north = subprocess.Popen(["ip", "netns", "exec", self.north_ns, *self._whack_argv(
            "--name", "north", "--initiate")], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self._procs += [ss, north]
        ss.communicate(timeout=60)
        ss_t = time.monotonic() - t0
        north.communicate(timeout=60)
        out, _ = sender.communicate(timeout=120)
        # half-open SAs live 30 s and busy mode holds 5 s: the peak shows after the flood
        half, _busy = self.halfopen()
        # the initiator's log line may follow whack's return: wait for it (or give up)
        try:
            lab.wait_for(lambda: self._north_up_time(north_lines) is not None, 30,
                         "the pypluto initiator's 'established IKE SA' line")
        except Exception:  # noqa: BLE001 - recorded as not up (inf) below
            pass
        ping_out, _ = ping.communicate(timeout=60)
        stop.set()
        sampler.join()
        res = json.loads(out.strip().splitlines()[-1])
        fig.flood_seconds.append(res["seconds"])
        fig.flood_rate.append(round(res["sent"] / max(res["seconds"], 1e-6)))
        # when the initiators were started, from the first flood datagram sent (s)
        fig.peers_started_after_flood_start.append(round(t0 - res["t_start"], 4))
        fig.strongswan_up.append(round(ss_t, 4) if ss.returncode == 0 else float("inf"))
        up = self._north_up_time(north_lines)
        fig.pypluto_up.append(up if up is not None else float("inf"))
        fig.rss_peak_growth_kib.append(peak[0] - base)
        fig.rss_samples = len(samples)
        fig.halfopen_peak.append(half)
        fig.cookies_sent.append(self.globalstatus().get("total.ddos.cookies_sent", 0)
                                - cookies0)
        fig.busy_seen.append(fig.cookies_sent[-1] > 0)
        # the legitimate peers were themselves asked for a COOKIE: they connected while
        # the responder was defending itself against this flood
        north_text = "\n".join(self.north.log.read_text(errors="replace")
                               .splitlines()[north_lines:])
        fig.pypluto_cookied.append("received COOKIE" in north_text)
        ss_text = "\n".join(self._ss_log().splitlines()[ss_lines:])
        fig.strongswan_cookied.append(bool(re.search(r"IKE_SA_INIT response 0 \[ N\(COOKIE\)",
                                                     ss_text)))
        m = re.search(r"(\d+) packets transmitted, (\d+) received", ping_out)
        if m:
            fig.pings_sent += int(m[1])
            fig.pings_lost += int(m[1]) - int(m[2])
        else:
            fig.pings_lost += count
        self.t_last_flood_end = res["t_end"]
        self.ss.swanctl("--terminate", "--ike", "probe", "--timeout", "10", check=False)
        self.north.whack("--name", "north", "--down")

    def _whack_argv(self, *args: str) -> list[str]:
        from peers import pypluto_bin
        assert self.north is not None
        return [pypluto_bin("whack"), "--rundir", str(self.north.run_dir), *args]

    def finish(self, fig: Figures, wait_max: float = 45.0, after: float = AFTER_S) -> None:
        """Wait for every half-open SA to expire and for ``after`` seconds from the end
        of the last flood, then the RSS against the first baseline."""
        assert self.east is not None and self.east.proc is not None
        t0 = time.monotonic()
        self.lab.wait_for(lambda: self.halfopen()[0] == 0, wait_max,
                          "half-open SAs expired")
        fig.expiry_wait = round(time.monotonic() - t0, 1)
        fig.rss_expired_kib = rss_kib(self.east.proc.pid)
        time.sleep(max(1.0, self.t_last_flood_end + after - time.monotonic()))
        fig.after_seconds = round(time.monotonic() - self.t_last_flood_end, 1)
        fig.rss_after_kib = rss_kib(self.east.proc.pid)
        # (the line may be held back by the log's rate limiter for packet-caused lines)
        fig.cookie_lines = self.east.log.read_text(errors="replace").count(
            "DDoS: demanding COOKIEs")


def run_flood(lab: Lab, runs: int = 5, n: int = FLOOD_N) -> Figures:
    fl = FloodLab(lab)
    fl.start()
    fig = Figures()
    for k in range(runs):
        fl.one_run(fig, seed=1000 + k, n=n)
    fl.finish(fig)
    return fig
