"""Guest side of the strongSwan trap test: runs INSIDE the User-Mode-Linux kernel (issue 16).

strongSwan 5.9.8's charon (``charon-systemd`` with the kernel-netlink plugin, so
kernel ESP, not kernel-libipsec, which cannot raise an ACQUIRE) runs in the east
namespace, our ``pluto --use-xfrm`` in the west one, PSK, tunnel
198.51.100.0/24 <-> 203.0.113.0/24:

* ``swtrap-ss``: strongSwan's child has ``start_action = trap``, we are an
  ``auto=add`` responder.  The first ping from east hits charon's trap policy,
  the kernel's XFRM ACQUIRE makes charon initiate, the tunnel comes up, later
  pings pass; ``ip xfrm state`` on both ends shows the same two ESP SAs.
* ``swtrap-pp``: we are ``auto=route``, strongSwan a plain responder; the first
  ping from west raises our ACQUIRE, we initiate, later pings pass.

How many of the first 5 pings were lost is logged for each direction.  Each
scenario ends with both daemons stopped (by PID) and no XFRM state or policy
left in either namespace.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_swtrap_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import guest_xfrm as G  # noqa: E402  (the lab, our daemon, check())

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = "/usr/sbin/swanctl"
PSK = "pypluto-swtrap-psk-0123456789abcdef0123"
FIRST = 5  # pings sent on the first trigger

# One charon with an explicit plugin list (no /etc/strongswan.d); kernel-netlink is
# the kernel interface (kernel ESP); routes are the lab's own, not table 220.
STRONGSWAN_CONF = """\
charon {{
    load_modular = no
    load = random nonce openssl kdf hmac sha2 pem pkcs1 kernel-netlink socket-default vici
    install_routes = no
    install_virtual_ip = no
    filelog {{
        charonlog {{
            path = {log}
            time_format = %T
            flush_line = yes
            default = 1
            ike = 2
            knl = 2
            cfg = 2
        }}
    }}
    plugins {{
        vici {{
            socket = {uri}
        }}
    }}
}}
charon-systemd {{
    journal {{
        default = -1
    }}
}}
swanctl {{
    load = random nonce openssl pem pkcs1
    socket = {uri}
}}
"""


def swanctl_conf(start_action: str) -> str:
    """East's view: local 192.0.2.2/@east.example, remote 192.0.2.1/@west.example."""
    return f"""\
connections {{
    trap {{
        version = 2
        local_addrs = {G.R4}
        remote_addrs = {G.L4}
        proposals = aes256gcm16-prfsha256-ecp256
        local {{
            auth = psk
            id = @east.example
        }}
        remote {{
            auth = psk
            id = @west.example
        }}
        children {{
            net {{
                local_ts = {G.RNET4}
                remote_ts = {G.LNET4}
                esp_proposals = aes256gcm16
                start_action = {start_action}
            }}
        }}
    }}
}}
secrets {{
    ike-trap {{
        id-a = @east.example
        id-b = @west.example
        secret = "{PSK}"
    }}
}}
"""


def pluto_conf(auto: str) -> str:
    return (
        "config setup\n\tplutodebug=none\n\n"
        f"conn trap\n\tauthby=secret\n\tleft={G.L4}\n\tleftid=@west.example\n"
        f"\tleftsubnet={G.LNET4}\n\tright={G.R4}\n\trightid=@east.example\n"
        f"\trightsubnet={G.RNET4}\n\tike=aes_gcm256-sha2_256-dh19\n\tesp=aes_gcm256\n"
        f"\tauto={auto}\n\n"
    )


class Charon:
    """strongSwan 5.9.8's charon-systemd in a namespace, driven by swanctl over vici."""

    def __init__(self, ns: str, workdir: str) -> None:
        self.ns = ns
        self.dir = os.path.join(workdir, "charon")
        os.makedirs(self.dir, exist_ok=True)
        self.conf = os.path.join(self.dir, "strongswan.conf")
        self.logpath = os.path.join(self.dir, "charon.log")
        self.uri = f"unix://{self.dir}/charon.vici"
        self.env = {**os.environ, "STRONGSWAN_CONF": self.conf}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, start_action: str) -> None:
        with open(self.conf, "w") as f:
            f.write(STRONGSWAN_CONF.format(log=self.logpath, uri=self.uri))
        swconf = os.path.join(self.dir, "swanctl.conf")
        with open(swconf, "w") as f:
            f.write(swanctl_conf(start_action))
        with open(os.path.join(self.dir, "stdout.log"), "wb") as out:
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, CHARON],
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)
        G.CHILDREN.append(self.proc)
        proc = self.proc
        G.wait_for(lambda: os.path.exists(f"{self.dir}/charon.vici") or proc.poll() is not None,
                   60, "charon's vici socket")
        if proc.poll() is not None:
            raise RuntimeError(f"charon exited during start ({proc.returncode}): {self.tail()}")
        out = self.swanctl("--load-all", "--file", swconf)
        if "loaded connection 'trap'" not in out:
            raise RuntimeError(f"swanctl --load-all: {out}")

    def swanctl(self, *args: str, timeout: float = 60) -> str:
        res = subprocess.run([SWANCTL, args[0], "--uri", self.uri, *args[1:]],
                             capture_output=True, text=True, timeout=timeout, env=self.env)
        return res.stdout + res.stderr

    def log(self) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-n:])

    def stop(self) -> bool:
        """SIGTERM to charon's own PID (``ip netns exec`` execs it); True if it exited."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
            return True
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return False


def esp_spis(ns: str) -> list[str]:
    """The SPIs of ``ip xfrm state`` (proto esp) in a namespace, sorted."""
    out = G.sh(["ip", "-n", ns, "xfrm", "state"])
    return sorted(re.findall(r"proto esp spi (0x[0-9a-f]+)", out))


def xfrm_left(ns: str) -> tuple[int, int]:
    """(states, policies) of any owner left in a namespace."""
    st = G.sh(["ip", "-n", ns, "xfrm", "state"])
    po = G.sh(["ip", "-n", ns, "xfrm", "policy"])
    return st.count("proto "), len(re.findall(r"^src ", po, re.M))


def first_pings(ns: str, src: str, dst: str) -> tuple[int, list[int]]:
    """Answers to the first FIRST pings (one every 0.5 s, 3 s wait each) and the
    sequence numbers that were answered."""
    res = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(FIRST), "-i", "0.5",
                          "-W", "3", "-I", src, dst], capture_output=True, text=True)
    m = re.search(r"(\d+) received", res.stdout)
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+)", res.stdout))
    return (int(m.group(1)) if m else -1), seqs


def run(tag: str, ss_action: str, pp_auto: str) -> None:
    """One direction: who traps is ``ss_action``/``pp_auto``; the other responds."""
    work = tempfile.mkdtemp(prefix=f"ppxg-{tag}.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=pluto_conf(pp_auto))
    with open(os.path.join(west.dir, "ipsec.secrets"), "w") as f:
        f.write(f'@west.example @east.example : PSK "{PSK}"\n')
    east = Charon(G.RIGHT, work)
    ss_traps = ss_action == "trap"
    pinger, src, dst = ((G.RIGHT, G.RIN4, G.LIN4) if ss_traps else (G.LEFT, G.LIN4, G.RIN4))
    trapper = G.RIGHT if ss_traps else G.LEFT
    lost = -1
    try:
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.xfrm_larval_drop=1"])
        west.start()
        east.start(ss_action)
        G.log(f"{tag}: " + next((ln for ln in east.log().splitlines() if "strongSwan" in ln),
                                "charon started"))
        if not ss_traps:
            G.wait_for(lambda: "routed-ondemand" in west.whack("--status"), 30, "our trap")
        pol = G.sh(["ip", "-n", trapper, "xfrm", "policy"])
        sel = f"src {G.RNET4 if ss_traps else G.LNET4} dst {G.LNET4 if ss_traps else G.RNET4}"
        trap = [blk for blk in re.split(r"(?m)^(?=src )", pol) if blk.startswith(sel)]
        G.check(f"{tag}-trap-policy-no-sa",
                len(trap) == 1 and "dir out" in trap[0] and "proto esp" in trap[0]
                and not esp_spis(G.LEFT) and not esp_spis(G.RIGHT), " | ".join(trap))
        G.log(f"{tag}: pinging {dst} from {pinger} at {time.strftime('%H:%M:%S')}")
        larval = G.larval_drop(trapper)
        got, seqs = first_pings(pinger, src, dst)
        lost = FIRST - got
        up = True
        try:
            G.wait_for(lambda: len(esp_spis(G.LEFT)) >= 2 and len(esp_spis(G.RIGHT)) >= 2, 30,
                       "ESP SAs on both ends")
        except TimeoutError:
            up = False
        if ss_traps:
            acq = "received a XFRM_MSG_ACQUIRE" in east.log()
            initiated = "initiating IKE_SA trap" in east.log()
        else:
            acq = "initiating on demand: acquire for" in west.log()
            initiated = acq
        G.check(f"{tag}-first-ping-acquire-brings-tunnel-up", up and acq and initiated,
                f"{got}/{FIRST} first pings answered; acquire {acq}, initiated {initiated}")
        G.log(f"{tag}: first trigger, {got}/{FIRST} pings answered, {lost} lost "
              f""
              f"(answered icmp_seq {seqs}; xfrm_larval_drop={larval} on the trapping side)")
        keys = ("XFRM_MSG_ACQUIRE", "initiating IKE_SA", "established", "CHILD_SA net{",
                "acquire", "Child SA")
        for who, text in (("charon", east.log()), ("pluto", west.log())):
            G.log(f"{tag}: {who}: " + "\n    ".join(
                ln for ln in text.splitlines() if any(k in ln for k in keys))[:1500])
        lspis, rspis = esp_spis(G.LEFT), esp_spis(G.RIGHT)
        G.log(f"{tag}: ip xfrm state SPIs west {lspis} east {rspis}")
        states = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"]) + G.sh(
            ["ip", "-n", G.RIGHT, "xfrm", "state"])
        G.check(f"{tag}-ip-xfrm-state-shows-the-sas",
                len(lspis) == 2 and lspis == rspis and states.count("mode tunnel") == 4
                and "encap" not in states, f"west {lspis} east {rspis}; plain ESP tunnel")
        sas = east.swanctl("--list-sas")
        G.check(f"{tag}-strongswan-lists-installed-child",
                re.search(r"net: #\d+, reqid \d+, INSTALLED, TUNNEL", sas) is not None,
                sas.strip()[-500:])
        G.check(f"{tag}-later-pings-pass", G.ping(pinger, src, dst, count=5))
        G.check(f"{tag}-reverse-pings-pass",
                G.ping(G.LEFT if ss_traps else G.RIGHT, dst, src, count=3))
        stopped = [west.stop(), east.stop()]
        left, right = xfrm_left(G.LEFT), xfrm_left(G.RIGHT)
        G.check(f"{tag}-nothing-left-after-shutdown",
                all(stopped) and left == (0, 0) and right == (0, 0),
                f"stopped {stopped}; (states, policies) west {left} east {right}")
    except Exception:
        G.log(f"--- west log tail:\n{west.tail()}\n--- charon log tail:\n{east.tail(40)}")
        raise
    finally:
        if west.proc is not None and west.proc.poll() is None:
            west.proc.kill()
            west.proc.wait()
        if east.proc is not None and east.proc.poll() is None:
            east.proc.kill()
            east.proc.wait()
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "-n", ns, "xfrm", "state", "flush"], check_rc=False)
            G.sh(["ip", "-n", ns, "xfrm", "policy", "flush"], check_rc=False)
        subprocess.run(["rm", "-rf", work])
        G.log(f"{tag}: LOST {lost}")


def warm_crypto() -> None:
    """Instantiate the kernel's rfc4106(gcm(aes)) once before the scenarios.

    The first SA of an algorithm makes the kernel build the crypto instance (in UML
    with module requests that take about a second); without this, that second
    would fall into the first scenario's negotiation and count as pings lost."""
    spi = "0x0badcafe"
    key = "0x" + "11" * 36
    G.sh(["ip", "-n", G.LEFT, "xfrm", "state", "add", "src", str(G.L4), "dst", str(G.R4),
          "proto", "esp", "spi", spi, "mode", "tunnel", "aead", "rfc4106(gcm(aes))", key,
          "128"])
    G.sh(["ip", "-n", G.LEFT, "xfrm", "state", "delete", "src", str(G.L4), "dst", str(G.R4),
          "proto", "esp", "spi", spi])


SCENARIOS = [
    ("swtrap-ss", "trap", "add"),    # strongSwan traps, we respond
    ("swtrap-pp", "none", "route"),  # we trap, strongSwan responds
]


def main() -> int:
    G.log(f"kernel {os.uname().release}; python {sys.version.split()[0]}")
    if not (os.access(CHARON, os.X_OK) and os.access(SWANCTL, os.X_OK)):
        G.check("swtrap-strongswan-present", False, f"{CHARON} or {SWANCTL} missing")
        return 1
    G.setup_lab()
    try:
        warm_crypto()
        for tag, ss_action, pp_auto in SCENARIOS:
            t = time.monotonic()
            try:
                run(tag, ss_action, pp_auto)
            except Exception:
                G.FAILED.append(tag)
                G.log(f"CHECK {tag}: FAILED with an exception\n{traceback.format_exc()}")
            G.log(f"scenario {tag} took {time.monotonic() - t:.1f}s")
    finally:
        G.teardown_lab()
    if G.FAILED:
        G.log(f"FAILED: {', '.join(G.FAILED)}")
        return 1
    G.log("ALL SWTRAP GUEST CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
