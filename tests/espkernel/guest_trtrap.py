"""Guest side of the transport-mode trap test: runs INSIDE the User-Mode-Linux kernel (issue 16).

Our ``pluto --use-xfrm`` in the west namespace, ``auto=route`` (a trap),
``type=transport``, host to host (no subnets: 192.0.2.1 <-> 192.0.2.2), PSK; the
east end is ``auto=add``:

* ``trtrap-pp``: east is a second pypluto.
* ``trtrap-ls``: east is Libreswan 4.10.

Each scenario checks: before traffic only the trap policy (``ip xfrm policy``
shows a ``mode transport`` template) and no SA; the first ping from west to
east raises the kernel's XFRM ACQUIRE, we initiate ("initiating on demand:
acquire for" in our log), ``ip xfrm state`` shows the same two transport-mode
ESP SAs on both ends, later pings pass both ways (through the SAs: their packet
counters rise); ``--unroute`` + ``--delete`` leave no policy or state of ours
(the per-socket IKE bypass policies aside), and SIGTERM to both daemons leaves
nothing in either namespace (Libreswan's own IPv6 neighbour-discovery bypass
policies aside).  How many of the first 5 pings were lost is logged
(negotiationshunt=hold: 0 expected, not asserted).

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_trtrap_uml.py`` through ``tools/run-in-esp-kernel.sh``.
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

import guest_swtrap as SW  # noqa: E402  (esp_spis, xfrm_left, first_pings, warm_crypto)
import guest_xfrm as G  # noqa: E402  (the lab, the daemons, check())

LIBRESWAN = "/usr/libexec/ipsec/pluto"
FIRST = SW.FIRST  # pings sent on the first trigger


def trtrap_conf(auto: str) -> str:
    """Host to host transport mode (no subnets); ``auto`` differs per end."""
    return (
        "config setup\n\tplutodebug=none\n\n"
        f"conn tr\n\tauthby=secret\n\ttype=transport\n\tleft={G.L4}\n"
        f"\tleftid=@west.example\n\tright={G.R4}\n\trightid=@east.example\n"
        "\tike=aes_gcm256-sha2_256-dh19\n\tesp=aes_gcm256\n"
        f"\tauto={auto}\n\n"
    )


def policy_blocks(ns: str) -> list[str]:
    """``ip xfrm policy`` of a namespace, one block per policy."""
    pol = G.sh(["ip", "-n", ns, "xfrm", "policy"])
    return [b for b in re.split(r"(?m)^(?=src )", pol) if b.startswith("src ")]


def spd_policies(ns: str) -> list[str]:
    """The SPD policies of a namespace, one line each, without the per-socket bypass
    policies (``socket in|out``) that live and die with a daemon's IKE sockets."""
    return [" ".join(b.split()) for b in policy_blocks(ns) if "\tsocket " not in b]


def rest(ns: str) -> tuple[int, list[str]]:
    """(XFRM states, SPD policies) left in a namespace."""
    return G.sh(["ip", "-n", ns, "xfrm", "state"]).count("proto "), spd_policies(ns)


# Libreswan 4.10 installs bypass policies for IPv6 neighbour discovery (ICMPv6
# types 135/136, priority 1, no template) when it starts and leaves them behind when
# it exits: Libreswan's own, not of this conn, so not counted on its end.
LIBRESWAN_ND_BYPASS = re.compile(r"^src ::/0 dst ::/0 proto ipv6-icmp type 13[56] dir "
                                 r"(in|out|fwd) priority 1 ptype main$")


def sigterm(d: G.Daemon) -> bool:
    """SIGTERM to the daemon's own PID (``ip netns exec`` execs it); True if it exited."""
    if d.proc is None or d.proc.poll() is not None:
        return d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(30)
        return True
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
        return False


def run(tag: str, east_kind: str) -> None:
    """West (ours) traps, east (``east_kind``) responds; see the module docstring."""
    work = tempfile.mkdtemp(prefix=f"ppxg-{tag}.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=trtrap_conf("route"))
    east = G.Daemon(east_kind, G.RIGHT, work, "east", conf=trtrap_conf("add"))
    src, dst = str(G.L4), str(G.R4)
    lost = -1
    try:
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.xfrm_larval_drop=1"])
        west.start()
        east.start()
        G.wait_for(lambda: "routed-ondemand" in west.whack("--status"), 30, "our trap")
        sel = f"src {src}/32 dst {dst}/32"
        trap = [b for b in policy_blocks(G.LEFT) if b.startswith(sel)]
        G.check(f"{tag}-trap-policy-no-sa",
                len(trap) == 1 and "dir out" in trap[0] and "proto esp" in trap[0]
                and "mode transport" in trap[0] and not SW.esp_spis(G.LEFT)
                and not SW.esp_spis(G.RIGHT),
                " | ".join(b.strip().replace("\n", " ") for b in policy_blocks(G.LEFT)))
        G.log(f"{tag}: pinging {dst} from west at {time.strftime('%H:%M:%S')}")
        larval = G.larval_drop(G.LEFT)
        got, seqs = SW.first_pings(G.LEFT, src, dst)
        lost = FIRST - got
        up = True
        try:
            G.wait_for(lambda: len(SW.esp_spis(G.LEFT)) >= 2 and len(SW.esp_spis(G.RIGHT)) >= 2,
                       30, "ESP SAs on both ends")
        except TimeoutError:
            up = False
        acq = "initiating on demand: acquire for" in west.log()
        G.check(f"{tag}-first-ping-acquire-brings-tunnel-up", up and acq,
                f"{got}/{FIRST} first pings answered; acquire {acq}")
        G.log(f"{tag}: first trigger, {got}/{FIRST} pings answered, {lost} lost "
              f"(answered icmp_seq {seqs}; xfrm_larval_drop={larval} on our side while "
              f"pinging, {G.larval_drop(G.LEFT)} now)")
        keys = ("acquire", "established", "initiating", "STATE_V2_ESTABLISHED",
                "IPsec SA established")
        for who, text in (("west", west.log()), ("east", east.log())):
            G.log(f"{tag}: {who}: " + "\n    ".join(
                ln for ln in text.splitlines() if any(k in ln for k in keys))[:1500])
        lspis, rspis = SW.esp_spis(G.LEFT), SW.esp_spis(G.RIGHT)
        states = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"]) + G.sh(
            ["ip", "-n", G.RIGHT, "xfrm", "state"])
        G.log(f"{tag}: ip xfrm state SPIs west {lspis} east {rspis}")
        G.check(f"{tag}-ip-xfrm-state-shows-transport-sas",
                len(lspis) == 2 and lspis == rspis and states.count("mode transport") == 4
                and "mode tunnel" not in states and "encap" not in states,
                f"west {lspis} east {rspis}; {states.count('mode transport')} x mode transport")
        # transport mode host to host: one out and one in policy on each end (no fwd),
        # each with a transport-mode ESP template
        lpols = [p for p in spd_policies(G.LEFT) if " tmpl " in p]
        rpols = [p for p in spd_policies(G.RIGHT) if " tmpl " in p]
        G.check(f"{tag}-policies-transport-templates",
                all(sorted(re.findall(r" dir (\w+) ", " ".join(ps))) == ["in", "out"]
                    for ps in (lpols, rpols))
                and all("proto esp" in p and "mode transport" in p for p in lpols + rpols),
                f"west {len(lpols)}, east {len(rpols)} policies with a template: "
                + " | ".join(lpols + rpols))
        later = G.ping(G.LEFT, src, dst, count=5)
        counts = {spi: G.ip_s_packets(G.LEFT, int(spi, 16)) for spi in SW.esp_spis(G.LEFT)}
        G.check(f"{tag}-later-pings-pass",
                later and len(counts) == 2 and all(n >= 5 for n in counts.values()),
                f"5 later pings answered {later}; packets per SA on west {counts}")
        G.check(f"{tag}-reverse-pings-pass", G.ping(G.RIGHT, dst, src, count=3))
        # unroute + delete on our side: no policy or state of ours left, the peer
        # (told by the Delete) removes its SAs too
        west.whack("--name", "tr", "--unroute")
        west.whack("--name", "tr", "--delete")
        try:
            G.wait_for(lambda: rest(G.LEFT) == (0, []) and not SW.esp_spis(G.RIGHT), 30,
                       "nothing left after unroute+delete")
        except TimeoutError:
            pass
        left, rspis = rest(G.LEFT), SW.esp_spis(G.RIGHT)
        G.check(f"{tag}-unroute-delete-leaves-nothing", left == (0, []) and not rspis,
                f"(states, policies) west {left}; east ESP SPIs {rspis}")
        stopped = [sigterm(west), sigterm(east)]
        G.log(f"{tag}: xfrm_larval_drop on our side after SIGTERM: {G.larval_drop(G.LEFT)}")
        left, right = rest(G.LEFT), rest(G.RIGHT)
        if east_kind == "libreswan":
            nd = [p for p in right[1] if LIBRESWAN_ND_BYPASS.match(p)]
            G.log(f"{tag}: Libreswan's IPv6 ND bypass policies left on east: {len(nd)}")
            right = (right[0], [p for p in right[1] if p not in nd])
        G.log(f"{tag}: after SIGTERM, ip xfrm policy west {policy_blocks(G.LEFT)} "
              f"east {policy_blocks(G.RIGHT)}")
        G.check(f"{tag}-nothing-left-after-sigterm",
                all(stopped) and left == (0, []) and right == (0, []),
                f"stopped {stopped}; (states, policies) west {left} east {right}")
    except Exception:
        for d in (west, east):
            G.log(f"--- {d.name} log tail:\n{d.tail(40)}")
        raise
    finally:
        for d in (west, east):
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "-n", ns, "xfrm", "state", "flush"], check_rc=False)
            G.sh(["ip", "-n", ns, "xfrm", "policy", "flush"], check_rc=False)
        subprocess.run(["rm", "-rf", work])
        G.log(f"{tag}: LOST {lost}")


SCENARIOS = [
    ("trtrap-pp", "pypluto"),    # east is a second pypluto
    ("trtrap-ls", "libreswan"),  # east is Libreswan 4.10
]


def main() -> int:
    G.log(f"kernel {os.uname().release}; python {sys.version.split()[0]}")
    G.setup_lab()
    try:
        SW.warm_crypto()
        for tag, east_kind in SCENARIOS:
            if east_kind == "libreswan" and not os.access(LIBRESWAN, os.X_OK):
                G.check("trtrap-libreswan-present", False, f"{LIBRESWAN} missing")
                continue
            t = time.monotonic()
            try:
                run(tag, east_kind)
            except Exception:
                G.FAILED.append(tag)
                G.log(f"CHECK {tag}: FAILED with an exception\n{traceback.format_exc()}")
            G.log(f"scenario {tag} took {time.monotonic() - t:.1f}s")
    finally:
        G.teardown_lab()
    if G.FAILED:
        G.log(f"FAILED: {', '.join(G.FAILED)}")
        return 1
    G.log("ALL TRTRAP GUEST CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
