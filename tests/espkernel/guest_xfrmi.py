"""Guest side of the XFRM-interface test: runs INSIDE the User-Mode-Linux kernel (issue 16).

Route-based VPNs with ``ipsec-interface=1`` on the XFRM plane: Debian's UML kernel
has no ``CONFIG_XFRM_INTERFACE``, so ``tools/build-uml-xfrmi.sh`` builds
``xfrm_interface.ko`` for it and this script loads it first (``insmod``, after the
modules it needs).  Then two daemons whose conns say ``ipsec-interface=1``: each
makes ``ipsec1`` (``type xfrm if_id 1``) with its ``interface-ip=``, its SAs and
policies carry ``if_id 1``, the daemon adds no route; the test routes the peer's
subnet onto ``ipsec1`` (as an operator does) and pings through it (the device's
counters and the SAs' rise).  A second conn with the same number shares the
device, which outlives the first conn's down and goes with the last conn's
delete; SIGTERM and a crash (SIGKILL, then a new start) leave no device, SA or
policy.  The same pair against Libreswan 4.10 (``ipsec-interface=1`` on both).

The lab's plain routes to the other side's subnets are taken out first (an
operator of a route-based VPN routes onto the device, not around it).

Argument: the path of ``xfrm_interface.ko``, then optionally scenario names.
Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_xfrmi_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import guestlib as G  # the lab, the daemons, check(), devices and routes, the clean-up
from guestlib import routes

from pypluto.kernel.xfrm import XfrmBackend

PSK = "pypluto-xfrmi-psk-0123456789abcdef0123456789"
DEV = "ipsec1"


def load_module(ko: str) -> None:
    """The modules xfrm_interface.ko needs (from the UML tree), then the .ko itself."""
    modprobe = open("/proc/sys/kernel/modprobe").read().strip()
    G.sh([modprobe, "-a", "ipv6", "tunnel4", "tunnel6", "xfrm6_tunnel"], check_rc=False)
    out = G.sh(["insmod", ko], check_rc=False)
    loaded = os.path.isdir("/sys/module/xfrm_interface")
    G.check("xfrmi-module-loads", loaded, out.strip())
    if not loaded:
        raise SystemExit(1)


def xfrm_text(ns: str, what: str) -> str:
    return G.sh(["ip", "-n", ns, "xfrm", what], check_rc=False)


def sa_packets(ns: str) -> list[int]:
    """Packets of every SA in ``ns`` (``ip -s xfrm state``)."""
    out = G.sh(["ip", "-n", ns, "-s", "xfrm", "state"], check_rc=False)
    return [int(n) for n in re.findall(r"\d+\(bytes\), (\d+)\(packets\)", out)]


def operator_routes(ns: str, peer4: object, peer6: object | None = None) -> None:
    """What an operator does for a route-based VPN: the peer's subnets onto ipsec1."""
    G.sh(["ip", "-n", ns, "route", "replace", str(peer4), "dev", DEV])
    if peer6 is not None:
        G.sh(["ip", "-n", ns, "-6", "route", "replace", str(peer6), "dev", DEV])


def up_again(tag: str, west: G.Daemon, left: XfrmBackend, peer_device: bool) -> None:
    """Conn xa (still loaded) up again, ipsec1 on our end (and the peer's if
    ``peer_device``), the operator's routes onto it: a ping passes."""
    west.whack("--name", "xa", "--initiate")
    again = G.waited(lambda: G.has_dev(G.LEFT, DEV) and len(left.list_sas()) >= 2
                     and (not peer_device or G.has_dev(G.RIGHT, DEV)), 60, "conn xa up again")
    if again:
        operator_routes(G.LEFT, G.RNET4)
        operator_routes(G.RIGHT, G.LNET4)
    G.check(f"{tag}-up-again-passes-traffic",
            again and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(5))


def run_pair(left: XfrmBackend, right: XfrmBackend) -> None:
    """Two of our daemons: conn xa (IPv4 subnets) and xb (IPv6 subnets over IPv4),
    both ipsec-interface=1, interface-ip= on each end."""
    tag = "xfrmi-pair"
    work = tempfile.mkdtemp(prefix="ppxg-xfrmi.")
    extra = "\tipsec-interface=1\n\tleftinterface-ip=10.9.9.1/30\n" \
            "\trightinterface-ip=10.9.9.2/30\n"
    text = ("config setup\n\tplutodebug=none\n\n" + G.tagged_conn("xa", "a", extra)
            + G.tagged_conn("xb", "b", extra, G.LNET6, G.RNET6))
    west, east = G.start_pair(work, text, text, G.tagged_secrets(["a", "b"], PSK))
    with G.cleaned_up((west, east), work, orderly=True, devices=[DEV], tail=40):
        G.check(f"{tag}-no-device-before-up", not G.has_dev(G.LEFT, DEV) and not G.has_dev(G.RIGHT, DEV))
        out = west.whack("--name", "xa", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 2 and G.has_dev(G.LEFT, DEV) and G.has_dev(G.RIGHT, DEV),
                  90, "the ipsec-interface conn up")
        d = G.sh(["ip", "-n", G.LEFT, "-d", "link", "show", "dev", DEV], check_rc=False)
        a = G.dev_text(G.LEFT, DEV)
        G.check(f"{tag}-device-made-with-if-id-and-address",
                ok and "xfrm if_id 0x1" in d and "inet 10.9.9.1/30" in a and ",UP" in d
                and "alias pypluto-xfrmi-0" in d, f"{d.strip()[:400]} {out.strip()[-200:]}")
        e = G.dev_text(G.RIGHT, DEV)
        G.check(f"{tag}-peer-device-has-its-own-end-address",
                "inet 10.9.9.2/30" in e and "inet 10.9.9.1/30" not in e, e.strip()[-300:])
        st, po = xfrm_text(G.LEFT, "state"), xfrm_text(G.LEFT, "policy")
        pols = [p for p in left.list_policies() if p.tmpls]
        G.check(f"{tag}-sas-and-policies-carry-the-if-id",
                st.count("if_id 0x1") == 2 and len(pols) >= 3
                and {p.if_id for p in pols} == {1} and "if_id 0x1" in po,
                f"{st[-600:]} {[str(p) for p in pols]}")
        G.check(f"{tag}-no-route-from-the-daemon", not routes(G.LEFT, G.RNET4),
                routes(G.LEFT, G.RNET4))
        G.check(f"{tag}-unrouted-traffic-does-not-pass",
                not G.ping(G.LEFT, G.LIN4, G.RIN4, count=1, wait=1))
        operator_routes(G.LEFT, G.RNET4, G.RNET6)
        operator_routes(G.RIGHT, G.LNET4, G.LNET6)
        c0, s0 = G.dev_counts(G.LEFT, DEV), sum(sa_packets(G.LEFT))
        pinged = G.ping(G.LEFT, G.LIN4, G.RIN4, count=4)
        c1, s1 = G.dev_counts(G.LEFT, DEV), sum(sa_packets(G.LEFT))
        ec = G.dev_counts(G.RIGHT, DEV)
        G.check(f"{tag}-ping-routed-onto-ipsec1",
                pinged and c1[0] - c0[0] >= 4 and c1[1] - c0[1] >= 4 and s1 - s0 >= 8
                and ec[0] >= 4 and ec[1] >= 4, f"{c0} -> {c1}, SA packets {s0} -> {s1}, "
                f"east {ec}")
        G.log(G.sh(["ip", "-n", G.LEFT, "-s", "link", "show", "dev", DEV], check_rc=False))
        # a second conn with the same number shares the device
        index = G.sh(["ip", "-n", G.LEFT, "link", "show", "dev", DEV]).split(":")[0]
        west.whack("--name", "xb", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 4, 60, "conn xb up")
        c2 = G.dev_counts(G.LEFT, DEV)
        p6 = G.ping(G.LEFT, G.LIN6, G.RIN6, count=3)
        c3 = G.dev_counts(G.LEFT, DEV)
        G.check(f"{tag}-second-conn-shares-the-device",
                ok and p6 and c3[0] - c2[0] >= 3
                and G.sh(["ip", "-n", G.LEFT, "link", "show", "dev", DEV]).split(":")[0]
                == index, f"{c2} -> {c3}")
        # down of the first: the device stays for the second
        west.whack("--name", "xa", "--down")
        ok = G.waited(lambda: len(left.list_sas()) == 2, 30, "conn xa down")
        G.check(f"{tag}-device-outlives-the-first-conn",
                ok and G.has_dev(G.LEFT, DEV) and G.ping(G.LEFT, G.LIN6, G.RIN6, count=2)
                and not G.ping(G.LEFT, G.LIN4, G.RIN4, count=1, wait=1), west.tail(5))
        # delete of the last: the device goes, on both ends
        west.whack("--name", "xb", "--delete")
        gone = G.waited(lambda: not G.has_dev(G.LEFT, DEV) and not G.has_dev(G.RIGHT, DEV), 30,
                    "ipsec1 gone on both ends")
        G.check(f"{tag}-last-conn-delete-removes-the-device",
                gone and not left.list_sas() and not left.list_policies()
                and '"xb"' not in west.whack("--status"),
                f"west {G.has_dev(G.LEFT, DEV)} east {G.has_dev(G.RIGHT, DEV)}")
        # up again (xa is still loaded), then SIGTERM: nothing left
        up_again(tag, west, left, peer_device=True)
        stopped = west.sigterm()
        rest = G.leftovers(left, devices=[DEV], words=["if_id"])
        G.check(f"{tag}-nothing-left-after-sigterm", stopped and not rest,
                f"stopped {stopped}; {'; '.join(rest)}")
        # a crash leaves ipsec1 behind; the next start removes it (flush_own)
        ok = G.waited(lambda: not G.has_dev(G.RIGHT, DEV) and not right.list_sas(), 30,
                  "east clean after west's delete")
        G.check(f"{tag}-peer-clean-after-sigterm", ok, east.tail(5))
        west.start()
        west.whack("--name", "xa", "--initiate")
        up = G.waited(lambda: G.has_dev(G.LEFT, DEV) and len(left.list_sas()) >= 2, 60, "up for the crash")
        west.kill()
        left_behind = G.has_dev(G.LEFT, DEV)
        west.start()
        G.check(f"{tag}-restart-after-crash-removes-the-device",
                up and left_behind and not G.has_dev(G.LEFT, DEV)
                and (left.list_sas(), left.list_policies()) == ([], []),
                f"up {up} left behind {left_behind} now {G.has_dev(G.LEFT, DEV)}")


def run_libreswan(left: XfrmBackend, right: XfrmBackend) -> None:
    """West (ours) against Libreswan 4.10 on east, both ipsec-interface=1; Libreswan
    makes its own ipsec1 (4.10 has no interface-ip=: only west puts an address on it)."""
    tag = "xfrmi-libreswan"
    if not G.have_libreswan(f"{tag}-present"):
        return
    work = tempfile.mkdtemp(prefix="ppxg-xfrmi-ls.")
    extra = "\tipsec-interface=1\n\tleftinterface-ip=10.9.9.1/30\n" \
            "\trightinterface-ip=10.9.9.2/30\n"
    text = "config setup\n\tplutodebug=none\n\n" + G.tagged_conn("xa", "a", extra)
    # Libreswan 4.10 has no interface-ip= ("syntax error [leftinterface-ip]"): its ipsec1
    # carries no address, which the routed traffic does not need
    etext = ("config setup\n\tplutodebug=none\n\n"
             + G.tagged_conn("xa", "a", "\tipsec-interface=1\n"))
    west, east = G.start_pair(work, text, etext, G.tagged_secrets(["a"], PSK), "libreswan")
    with G.cleaned_up((west, east), work, orderly=True, devices=[DEV], tail=40):
        out = west.whack("--name", "xa", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 2 and G.has_dev(G.LEFT, DEV) and G.has_dev(G.RIGHT, DEV),
                  90, "the conn up against Libreswan")
        if not ok:
            G.log(f"east log tail:\n{east.tail(30)}")
        est = xfrm_text(G.RIGHT, "state")
        G.check(f"{tag}-both-ends-have-ipsec1",
                ok and "xfrm if_id 0x1" in G.sh(["ip", "-n", G.RIGHT, "-d", "link", "show",
                                                 "dev", DEV], check_rc=False)
                and est.count("if_id 0x1") == 2, f"{out.strip()[-200:]} {est[-400:]}")
        operator_routes(G.LEFT, G.RNET4)
        operator_routes(G.RIGHT, G.LNET4)
        c0, e0 = G.dev_counts(G.LEFT, DEV), G.dev_counts(G.RIGHT, DEV)
        pinged = G.ping(G.LEFT, G.LIN4, G.RIN4, count=4)
        c1, e1 = G.dev_counts(G.LEFT, DEV), G.dev_counts(G.RIGHT, DEV)
        G.check(f"{tag}-ping-routed-onto-ipsec1",
                pinged and c1[0] - c0[0] >= 4 and c1[1] - c0[1] >= 4
                and e1[1] - e0[1] >= 4, f"west {c0} -> {c1}, east {e0} -> {e1}")
        west.whack("--name", "xa", "--down")
        gone = G.waited(lambda: not G.has_dev(G.LEFT, DEV) and not left.list_sas(), 30, "down")
        G.check(f"{tag}-down-removes-our-device", gone, west.tail(5))
        up_again(tag, west, left, peer_device=False)
        stopped = west.sigterm()
        rest = G.leftovers(left, devices=[DEV])
        G.check(f"{tag}-nothing-left-after-sigterm", stopped and not rest,
                f"stopped {stopped}; {'; '.join(rest)}; {west.tail(5)}")


SCENARIOS = [("pair", run_pair), ("libreswan", run_libreswan)]


def main() -> int:
    ko, only = sys.argv[1], set(sys.argv[2:])
    load_module(ko)
    return G.run_guest("XFRMI", [(f"xfrmi-{tag}", fn) for tag, fn in SCENARIOS
                                 if not only or tag in only],
                       prepare=lambda: G.lab_routes(add=False))


if __name__ == "__main__":
    sys.exit(main())
