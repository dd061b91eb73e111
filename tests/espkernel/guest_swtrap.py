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
left in either namespace.  charon is driven by the interop lab's own driver
(``tests/interop/peers.py``: its strongswan.conf and swanctl.conf writers), here
with kernel-netlink as the data plane.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_swtrap_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import signal
import sys
import tempfile
import time

import guestlib as G  # the lab, our daemon, check(), the clean-up

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path[:0] = [TESTS, os.path.join(TESTS, "interop")]

from lab import Lab  # noqa: E402  (tests/lab.py: the driver's process and command runner)
from peers import (  # noqa: E402  (tests/interop/peers.py)
    CHARON,
    EAST_ID,
    IPSEC_SECRETS,
    SWANCTL,
    WEST_ID,
    Proposal,
    StrongSwan,
    swanctl_conf,
)

# the one proposal both ends are configured with (pluto_conf below)
PROPOSAL = Proposal("swtrap", "aes_gcm256-sha2_256-dh19", "aes_gcm256",
                    "aes256gcm16-prfsha256-ecp256", "aes256gcm16")


class Charon(StrongSwan):
    """strongSwan 5.9.8's charon-systemd with kernel ESP (kernel-netlink, no
    kernel-libipsec) in the east namespace, as :func:`guestlib.cleaned_up` sees a daemon.
    Routes are the lab's own (no table 220)."""

    def __init__(self, workdir: str) -> None:
        super().__init__(Lab(west=G.LEFT, east=G.RIGHT, workdir=pathlib.Path(workdir)),
                         G.RIGHT, name="charon", dataplane="kernel",
                         charon_extra="install_routes = no\ninstall_virtual_ip = no")

    def start_trap(self, start_action: str) -> None:
        self.start(timeout=60)
        self.load(swanctl_conf(conn="trap", local=str(G.R4), remote=str(G.L4),
                               local_id=f"@{EAST_ID}", remote_id=f"@{WEST_ID}",
                               local_ts=str(G.RNET4), remote_ts=str(G.LNET4),
                               proposal=PROPOSAL, start_action=start_action))

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.text().splitlines()[-n:])

    def terminated(self) -> bool:
        """SIGTERM to charon's own PID (``ip netns exec`` execs it); True if it exited
        by itself (within 10 s)."""
        if self.proc is None:
            return False
        rc = self.lab.stop(self.proc)
        self.proc = None
        return rc is not None and rc != -signal.SIGKILL


def pluto_conf(auto: str) -> str:
    return (
        "config setup\n\tplutodebug=none\n\n"
        f"conn trap\n\tauthby=secret\n\tleft={G.L4}\n\tleftid=@west.example\n"
        f"\tleftsubnet={G.LNET4}\n\tright={G.R4}\n\trightid=@east.example\n"
        f"\trightsubnet={G.RNET4}\n\tike={PROPOSAL.ike}\n\tesp={PROPOSAL.esp}\n"
        f"\tauto={auto}\n\n"
    )


def run(tag: str, ss_action: str, pp_auto: str) -> None:
    """One direction: who traps is ``ss_action``/``pp_auto``; the other responds."""
    work = tempfile.mkdtemp(prefix=f"ppxg-{tag}.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=pluto_conf(pp_auto))
    west.write_secrets(IPSEC_SECRETS)
    east = Charon(work)
    ss_traps = ss_action == "trap"
    pinger, src, dst = ((G.RIGHT, G.RIN4, G.LIN4) if ss_traps else (G.LEFT, G.LIN4, G.RIN4))
    trapper = G.RIGHT if ss_traps else G.LEFT
    lost = -1
    with G.cleaned_up((west, east), work, tail=40, then=[lambda: G.log(f"{tag}: LOST {lost}")]):
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.xfrm_larval_drop=1"])
        west.start()
        east.start_trap(ss_action)
        G.log(f"{tag}: " + next((ln for ln in east.text().splitlines() if "strongSwan" in ln),
                                "charon started"))
        if not ss_traps:
            G.wait_for(lambda: "routed-ondemand" in west.whack("--status"), 30, "our trap")
        sel = f"src {G.RNET4 if ss_traps else G.LNET4} dst {G.LNET4 if ss_traps else G.RNET4}"
        trap = [blk for blk in G.policy_blocks(trapper) if blk.startswith(sel)]
        G.check(f"{tag}-trap-policy-no-sa",
                len(trap) == 1 and "dir out" in trap[0] and "proto esp" in trap[0]
                and not G.esp_spis(G.LEFT) and not G.esp_spis(G.RIGHT), " | ".join(trap))
        G.log(f"{tag}: pinging {dst} from {pinger} at {time.strftime('%H:%M:%S')}")
        larval = G.larval_drop(trapper)
        got, seqs = G.first_pings(pinger, src, dst)
        lost = G.FIRST - got
        up = G.waited(lambda: len(G.esp_spis(G.LEFT)) >= 2 and len(G.esp_spis(G.RIGHT)) >= 2, 30,
                      "ESP SAs on both ends")
        if ss_traps:
            acq = "received a XFRM_MSG_ACQUIRE" in east.text()
            initiated = "initiating IKE_SA trap" in east.text()
        else:
            acq = "initiating on demand: acquire for" in west.log()
            initiated = acq
        G.check(f"{tag}-first-ping-acquire-brings-tunnel-up", up and acq and initiated,
                f"{got}/{G.FIRST} first pings answered; acquire {acq}, initiated {initiated}")
        G.log(f"{tag}: first trigger, {got}/{G.FIRST} pings answered, {lost} lost "
              f""
              f"(answered icmp_seq {seqs}; xfrm_larval_drop={larval} on the trapping side)")
        keys = ("XFRM_MSG_ACQUIRE", "initiating IKE_SA", "established", "CHILD_SA net{",
                "acquire", "Child SA")
        for who, text in (("charon", east.text()), ("pluto", west.log())):
            G.log(f"{tag}: {who}: " + "\n    ".join(
                ln for ln in text.splitlines() if any(k in ln for k in keys))[:1500])
        lspis, rspis = G.esp_spis(G.LEFT), G.esp_spis(G.RIGHT)
        G.log(f"{tag}: ip xfrm state SPIs west {lspis} east {rspis}")
        states = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"]) + G.sh(
            ["ip", "-n", G.RIGHT, "xfrm", "state"])
        G.check(f"{tag}-ip-xfrm-state-shows-the-sas",
                len(lspis) == 2 and lspis == rspis and states.count("mode tunnel") == 4
                and "encap" not in states, f"west {lspis} east {rspis}; plain ESP tunnel")
        sas = east.swanctl("--list-sas", check=False).stdout
        G.check(f"{tag}-strongswan-lists-installed-child",
                re.search(r"net: #\d+, reqid \d+, INSTALLED, TUNNEL", sas) is not None,
                sas.strip()[-500:])
        G.check(f"{tag}-later-pings-pass", G.ping(pinger, src, dst, count=5))
        G.check(f"{tag}-reverse-pings-pass",
                G.ping(G.LEFT if ss_traps else G.RIGHT, dst, src, count=3))
        stopped = [west.stop(), east.terminated()]
        left, right = G.xfrm_left(G.LEFT), G.xfrm_left(G.RIGHT)
        G.check(f"{tag}-nothing-left-after-shutdown",
                all(stopped) and left == (0, []) and right == (0, []),
                f"stopped {stopped}; (states, policies) west {left} east {right}")


SCENARIOS = [
    ("swtrap-ss", "trap", "add"),    # strongSwan traps, we respond
    ("swtrap-pp", "none", "route"),  # we trap, strongSwan responds
]


def main() -> int:
    if not (os.access(CHARON, os.X_OK) and os.access(SWANCTL, os.X_OK)):
        G.check("swtrap-strongswan-present", False, f"{CHARON} or {SWANCTL} missing")
        return 1
    return G.run_guest("SWTRAP", [(tag, functools.partial(run, tag, ss_action, pp_auto))
                                  for tag, ss_action, pp_auto in SCENARIOS],
                       backends=False, prepare=G.warm_crypto)


if __name__ == "__main__":
    sys.exit(main())
