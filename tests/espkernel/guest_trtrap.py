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

import functools
import re
import sys
import tempfile
import time

import guestlib as G  # the lab, the daemons, check(), the clean-up


def trtrap_conf(auto: str) -> str:
    """Host to host transport mode (no subnets); ``auto`` differs per end."""
    return (
        "config setup\n\tplutodebug=none\n\n"
        f"conn tr\n\tauthby=secret\n\ttype=transport\n\tleft={G.L4}\n"
        f"\tleftid=@west.example\n\tright={G.R4}\n\trightid=@east.example\n"
        "\tike=aes_gcm256-sha2_256-dh19\n\tesp=aes_gcm256\n"
        f"\tauto={auto}\n\n"
    )


# Libreswan 4.10 installs bypass policies for IPv6 neighbour discovery (ICMPv6
# types 135/136, priority 1, no template) when it starts and leaves them behind when
# it exits: Libreswan's own, not of this conn, so not counted on its end.
LIBRESWAN_ND_BYPASS = re.compile(r"^src ::/0 dst ::/0 proto ipv6-icmp type 13[56] dir "
                                 r"(in|out|fwd) priority 1 ptype main$")


def run(tag: str, east_kind: str) -> None:
    """West (ours) traps, east (``east_kind``) responds; see the module docstring."""
    if east_kind == "libreswan" and not G.have_libreswan("trtrap-libreswan-present"):
        return
    work = tempfile.mkdtemp(prefix=f"ppxg-{tag}.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=trtrap_conf("route"))
    east = G.Daemon(east_kind, G.RIGHT, work, "east", conf=trtrap_conf("add"))
    src, dst = str(G.L4), str(G.R4)
    lost = -1
    with G.cleaned_up((west, east), work, tail=40, then=[lambda: G.log(f"{tag}: LOST {lost}")]):
        for ns in (G.LEFT, G.RIGHT):
            G.sh(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.xfrm_larval_drop=1"])
        west.start()
        east.start()
        G.wait_for(lambda: "routed-ondemand" in west.whack("--status"), 30, "our trap")
        sel = f"src {src}/32 dst {dst}/32"
        trap = [b for b in G.policy_blocks(G.LEFT) if b.startswith(sel)]
        G.check(f"{tag}-trap-policy-no-sa",
                len(trap) == 1 and "dir out" in trap[0] and "proto esp" in trap[0]
                and "mode transport" in trap[0] and not G.esp_spis(G.LEFT)
                and not G.esp_spis(G.RIGHT),
                " | ".join(b.strip().replace("\n", " ") for b in G.policy_blocks(G.LEFT)))
        G.log(f"{tag}: pinging {dst} from west at {time.strftime('%H:%M:%S')}")
        larval = G.larval_drop(G.LEFT)
        got, seqs = G.first_pings(G.LEFT, src, dst)
        lost = G.FIRST - got
        up = G.waited(lambda: len(G.esp_spis(G.LEFT)) >= 2 and len(G.esp_spis(G.RIGHT)) >= 2,
                      30, "ESP SAs on both ends")
        acq = "initiating on demand: acquire for" in west.log()
        G.check(f"{tag}-first-ping-acquire-brings-tunnel-up", up and acq,
                f"{got}/{G.FIRST} first pings answered; acquire {acq}")
        G.log(f"{tag}: first trigger, {got}/{G.FIRST} pings answered, {lost} lost "
              f"(answered icmp_seq {seqs}; xfrm_larval_drop={larval} on our side while "
              f"pinging, {G.larval_drop(G.LEFT)} now)")
        keys = ("acquire", "established", "initiating", "STATE_V2_ESTABLISHED",
                "IPsec SA established")
        for who, text in (("west", west.log()), ("east", east.log())):
            G.log(f"{tag}: {who}: " + "\n    ".join(
                ln for ln in text.splitlines() if any(k in ln for k in keys))[:1500])
        lspis, rspis = G.esp_spis(G.LEFT), G.esp_spis(G.RIGHT)
        states = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"]) + G.sh(
            ["ip", "-n", G.RIGHT, "xfrm", "state"])
        G.log(f"{tag}: ip xfrm state SPIs west {lspis} east {rspis}")
        G.check(f"{tag}-ip-xfrm-state-shows-transport-sas",
                len(lspis) == 2 and lspis == rspis and states.count("mode transport") == 4
                and "mode tunnel" not in states and "encap" not in states,
                f"west {lspis} east {rspis}; {states.count('mode transport')} x mode transport")
        # transport mode host to host: one out and one in policy on each end (no fwd),
        # each with a transport-mode ESP template
        lpols = [p for p in G.xfrm_left(G.LEFT, sockets=False)[1] if " tmpl " in p]
        rpols = [p for p in G.xfrm_left(G.RIGHT, sockets=False)[1] if " tmpl " in p]
        G.check(f"{tag}-policies-transport-templates",
                all(sorted(re.findall(r" dir (\w+) ", " ".join(ps))) == ["in", "out"]
                    for ps in (lpols, rpols))
                and all("proto esp" in p and "mode transport" in p for p in lpols + rpols),
                f"west {len(lpols)}, east {len(rpols)} policies with a template: "
                + " | ".join(lpols + rpols))
        later = G.ping(G.LEFT, src, dst, count=5)
        counts = {spi: G.ip_s_packets(G.LEFT, int(spi, 16)) for spi in G.esp_spis(G.LEFT)}
        G.check(f"{tag}-later-pings-pass",
                later and len(counts) == 2 and all(n >= 5 for n in counts.values()),
                f"5 later pings answered {later}; packets per SA on west {counts}")
        G.check(f"{tag}-reverse-pings-pass", G.ping(G.RIGHT, dst, src, count=3))
        # unroute + delete on our side: no policy or state of ours left, the peer
        # (told by the Delete) removes its SAs too
        west.whack("--name", "tr", "--unroute")
        west.whack("--name", "tr", "--delete")
        try:
            G.wait_for(lambda: G.xfrm_left(G.LEFT, sockets=False) == (0, []) and not G.esp_spis(G.RIGHT), 30,
                       "nothing left after unroute+delete")
        except TimeoutError:
            pass
        left, rspis = G.xfrm_left(G.LEFT, sockets=False), G.esp_spis(G.RIGHT)
        G.check(f"{tag}-unroute-delete-leaves-nothing", left == (0, []) and not rspis,
                f"(states, policies) west {left}; east ESP SPIs {rspis}")
        stopped = [west.sigterm(), east.sigterm()]
        G.log(f"{tag}: xfrm_larval_drop on our side after SIGTERM: {G.larval_drop(G.LEFT)}")
        left = G.xfrm_left(G.LEFT, sockets=False)
        right = G.xfrm_left(G.RIGHT, sockets=False,
                            theirs=LIBRESWAN_ND_BYPASS if east_kind == "libreswan" else None)
        G.log(f"{tag}: after SIGTERM, ip xfrm policy west {G.policy_blocks(G.LEFT)} "
              f"east {G.policy_blocks(G.RIGHT)}")
        G.check(f"{tag}-nothing-left-after-sigterm",
                all(stopped) and left == (0, []) and right == (0, []),
                f"stopped {stopped}; (states, policies) west {left} east {right}")


SCENARIOS = [
    ("trtrap-pp", "pypluto"),    # east is a second pypluto
    ("trtrap-ls", "libreswan"),  # east is Libreswan 4.10
]


def main() -> int:
    return G.run_guest("TRTRAP", [(tag, functools.partial(run, tag, east_kind))
                                  for tag, east_kind in SCENARIOS],
                       backends=False, prepare=G.warm_crypto)


if __name__ == "__main__":
    sys.exit(main())
