"""Guest side of the VTI test: runs INSIDE the User-Mode-Linux kernel (issue 16).

Route-based VPNs with ``vti-interface=`` (ip_vti): two daemons whose conns name a
VTI device keyed by ``mark=``.  The daemon makes the device (local/remote = the
IKE addresses, ikey/okey = the marks), puts ``leftvti=`` on it, routes the peer's
subnet onto it (``vti-routing=yes``), and removes all of it at ``--down`` and at
shutdown.  Traffic routed onto the device is encrypted by the marked SA (the
device's counters and the SA's rise) without any firewall mark: the device marks
it.  ``vti-routing=no`` adds no route; ``vti-shared=yes`` makes one device (remote
any) for two conns, which outlives the first conn's down.

The lab's plain routes to the peer's subnets are taken out first (an operator of
a route-based VPN routes onto the device, not around it) and put back after.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_vti_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import sys
import tempfile

import guestlib as G  # the lab, the daemons, check(), devices and routes, the clean-up
from guestlib import dev_counts, dev_text, has_dev, routes

from pypluto.kernel.xfrm import XfrmBackend
from pypluto.kernel.xfrm.backend import KernelSA

FULL = 0xFFFFFFFF
PSK = "pypluto-vti-psk-0123456789abcdef0123456789"


def packets(be: XfrmBackend, sa: KernelSA) -> int:
    assert sa.dst is not None
    cur = be.get_sa(sa.dst, sa.spi, "esp", mark=sa.mark)
    return -1 if cur is None else cur.info.curlft.packets


def run_pair(left: XfrmBackend, right: XfrmBackend, east_kind: str = "pypluto") -> None:
    """vti-interface=vti5, mark=5, leftvti=/rightvti=, vti-routing=yes (the default);
    the same file on both ends (each puts its own end's address on its device).
    Against Libreswan 4.10 east's device is made by Libreswan's _updown."""
    theirs = east_kind != "pypluto"
    tag = "vti-libreswan" if theirs else "vti-pair"
    work = tempfile.mkdtemp(prefix="ppxg-vti.")
    # (Libreswan 4.10's addconn wants the mark's mask spelled out)
    text = "config setup\n\tplutodebug=none\n\n" + G.tagged_conn(
        "vti", "a", "\tmark=5/0xffffffff\n\tvti-interface=vti5\n"
        "\tleftvti=10.9.9.1/30\n\trightvti=10.9.9.2/30\n")
    # Libreswan 4.10's _updown makes the device in up-client, then checks it again in
    # prepare-client by comparing `ip tun show` with a string of its own whose
    # spacing this iproute2 no longer prints: "already exists with conflicting
    # setting", and its route-client adds no route.  So east (Libreswan) makes its
    # device but the test routes onto it (vti-routing=no), as an operator would.
    etext = text.replace("\tvti-interface=",
                         "\tvti-shared=yes\n\tvti-routing=no\n\tvti-interface=") \
        if theirs else text
    west, east = G.start_pair(work, text, etext, G.tagged_secrets(["a"], PSK), east_kind)
    with G.cleaned_up((west, east), work, orderly=True, devices=["vti5"], tail=40):
        G.check(f"{tag}-no-device-before-up", not has_dev(G.LEFT, "vti5"))
        out = west.whack("--name", "vti", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 2 and has_dev(G.LEFT, "vti5")
                      and has_dev(G.RIGHT, "vti5") and "vti5" in routes(G.LEFT, G.RNET4)
                      and (theirs or "vti5" in routes(G.RIGHT, G.LNET4)), 90,
                      "the VTI conn up")
        if theirs and ok:
            G.sh(["ip", "-n", G.RIGHT, "route", "add", str(G.LNET4), "dev", "vti5"])
        if not ok:
            G.log(f"east routes: {G.sh(['ip', '-n', G.RIGHT, 'route'], check_rc=False)}")
            G.log(f"east log tail:\n{east.tail(30)}")
        d = dev_text(G.LEFT, "vti5")
        G.check(f"{tag}-device-made-with-keys-and-address",
                ok and "vti remote 192.0.2.2 local 192.0.2.1" in d and "ikey 0.0.0.5" in d
                and "okey 0.0.0.5" in d and "inet 10.9.9.1/30" in d and ",UP" in d,
                f"{d.strip()[:400]} {out.strip()[-200:]}")
        r = routes(G.LEFT, G.RNET4)
        G.check(f"{tag}-peer-subnet-routed-onto-device", r == f"{G.RNET4} dev vti5 scope link",
                r)
        e = dev_text(G.RIGHT, "vti5")
        G.check(f"{tag}-peer-device-has-its-own-end-address",
                "inet 10.9.9.2/30" in e and "inet 10.9.9.1/30" not in e
                and "vti5" in routes(G.RIGHT, G.LNET4), e.strip()[-300:])
        sas = left.list_sas()
        pols = left.list_policies()
        G.check(f"{tag}-sas-and-policies-carry-the-mark",
                len(sas) == 2 and {sa.mark for sa in sas} == {(5, FULL)}
                and {p.mark for p in pols if p.tmpls} == {(5, FULL)},
                f"{[(hex(s.spi), s.mark) for s in sas]} {[str(p) for p in pols]}")
        out_sa = next(sa for sa in sas if sa.dst == G.R4)
        in_sa = next(sa for sa in sas if sa.dst == G.L4)
        c0 = (dev_counts(G.LEFT, "vti5"), packets(left, out_sa), packets(left, in_sa))
        pinged = G.ping(G.LEFT, G.LIN4, G.RIN4, count=4)
        c1 = (dev_counts(G.LEFT, "vti5"), packets(left, out_sa), packets(left, in_sa))
        G.check(f"{tag}-ping-through-the-device",
                pinged and c1[0][0] - c0[0][0] >= 4 and c1[0][1] - c0[0][1] >= 4
                and c1[1] - c0[1] >= 4 and c1[2] - c0[2] >= 4, f"{c0} -> {c1}")
        # a rekey keeps the device (no updown run) and its traffic
        old = {out_sa.spi, in_sa.spi}
        index = dev_text(G.LEFT, "vti5").split(":")[0]
        west.whack("--name", "vti", "--rekey-child")
        rekeyed = G.waited(lambda: len(left.list_sas()) == 2
                           and not {sa.spi for sa in left.list_sas()} & old, 30, "rekeyed")
        c2 = dev_counts(G.LEFT, "vti5")
        p2 = G.ping(G.LEFT, G.LIN4, G.RIN4, count=2)
        c3 = dev_counts(G.LEFT, "vti5")
        G.check(f"{tag}-rekey-keeps-the-device-and-traffic",
                rekeyed and p2 and dev_text(G.LEFT, "vti5").split(":")[0] == index
                and c3[0] - c2[0] >= 2 and {sa.mark for sa in left.list_sas()} == {(5, FULL)},
                f"{index} {c2} -> {c3}")
        # down: the route and the device go on both ends (east by the peer's delete;
        # Libreswan 4.10's _updown keeps its device: "we can't delete vti interface")
        west.whack("--name", "vti", "--down")
        gone = G.waited(lambda: not has_dev(G.LEFT, "vti5") and not left.list_sas()
                        and (theirs or not has_dev(G.RIGHT, "vti5")), 30,
                        "the VTI devices gone after down")
        G.check(f"{tag}-down-removes-device-and-route",
                gone and "vti5" not in routes(G.LEFT, G.RNET4), routes(G.LEFT, G.RNET4))
        # up again, then SIGTERM-like shutdown (whack --shutdown) removes everything
        west.whack("--name", "vti", "--initiate")
        again = G.waited(lambda: has_dev(G.LEFT, "vti5") and len(left.list_sas()) >= 2, 60,
                         "the VTI conn up again")
        if theirs and again and "vti5" not in routes(G.RIGHT, G.LNET4):
            G.sh(["ip", "-n", G.RIGHT, "route", "add", str(G.LNET4), "dev", "vti5"])
        G.check(f"{tag}-up-again-passes-traffic",
                again and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(5))
        if not theirs:
            # a crash (SIGKILL) cleans nothing up: the device stays, with our alias; the
            # next daemon recognises it as ours, makes it anew when the conn comes up,
            # and removes it at shutdown (an operator's device would stay)
            west.kill()
            d = dev_text(G.LEFT, "vti5")
            G.check(f"{tag}-crash-leaves-the-device-marked-ours",
                    "alias pypluto-vti" in d, d.strip()[-300:])
            G.flush_xfrm([G.LEFT])  # what `ipsec start` does before pluto runs
            west.start()
            west.whack("--name", "vti", "--initiate")
            back = G.waited(lambda: len(left.list_sas()) >= 2 and has_dev(G.LEFT, "vti5")
                            and "vti5" in routes(G.LEFT, G.RNET4), 60,
                            "the VTI conn up after the restart")
            G.check(f"{tag}-restart-replaces-the-leftover-device",
                    back and "removing device vti5 left by an earlier run" in west.log()
                    and "created vti device vti5" in west.log()
                    and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(8))
        stopped = west.stop() if theirs else west.sigterm()  # whack --shutdown, or SIGTERM
        rest = G.leftovers(left, devices=["vti5"], to=[G.RNET4])
        G.check(f"{tag}-nothing-left-after-shutdown", stopped and not rest,
                f"stopped {stopped}; {'; '.join(rest)}")


def run_shared(left: XfrmBackend, right: XfrmBackend) -> None:
    """vti-shared=yes, vti-routing=no on west: one device (remote any) for two conns
    (IPv4 and IPv6 subnets over IPv4), no route from the daemon; the operator routes."""
    tag = "vti-shared"
    work = tempfile.mkdtemp(prefix="ppxg-vti-shared.")
    wextra = "\tmark=7/0xffffffff\n\tvti-interface=vti7\n\tvti-shared=yes\n\tvti-routing=no\n"
    eextra = "\tmark=7/0xffffffff\n\tvti-interface=vti7\n\tvti-shared=yes\n"
    head = "config setup\n\tplutodebug=none\n\n"
    wconf = head + G.tagged_conn("vti-a", "a", wextra) + G.tagged_conn(
        "vti-b", "b", wextra, G.LNET6, G.RNET6)
    econf = head + G.tagged_conn("vti-a", "a", eextra) + G.tagged_conn(
        "vti-b", "b", eextra, G.LNET6, G.RNET6)
    west, east = G.start_pair(work, wconf, econf, G.tagged_secrets(["a", "b"], PSK))
    with G.cleaned_up((west, east), work, orderly=True, devices=["vti7"], tail=40):
        out = west.whack("--name", "vti-a", "--initiate")
        out += west.whack("--name", "vti-b", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 4 and has_dev(G.LEFT, "vti7"), 60,
                      "both shared-VTI conns up")
        d = dev_text(G.LEFT, "vti7")
        G.check(f"{tag}-one-device-remote-any",
                ok and "remote any local 192.0.2.1" in d and "ikey 0.0.0.7" in d,
                f"{d.strip()[:300]} {out.strip()[-200:]}")
        G.check(f"{tag}-vti-routing-no-adds-no-route",
                not routes(G.LEFT, G.RNET4) and not routes(G.LEFT, G.RNET6, v6=True),
                routes(G.LEFT, G.RNET4) + routes(G.LEFT, G.RNET6, v6=True))
        G.sh(["ip", "-n", G.LEFT, "route", "add", str(G.RNET4), "dev", "vti7"])
        G.sh(["ip", "-n", G.LEFT, "-6", "route", "add", str(G.RNET6), "dev", "vti7"])
        c0 = dev_counts(G.LEFT, "vti7")
        p4 = G.ping(G.LEFT, G.LIN4, G.RIN4)
        p6 = G.ping(G.LEFT, G.LIN6, G.RIN6)
        c1 = dev_counts(G.LEFT, "vti7")
        G.check(f"{tag}-both-conns-carry-traffic-on-one-device",
                p4 and p6 and c1[0] - c0[0] >= 6, f"v4 {p4} v6 {p6} {c0} -> {c1}")
        west.whack("--name", "vti-a", "--down")
        try:
            G.wait_for(lambda: len(left.list_sas()) == 2, 30, "conn A down")
        except TimeoutError:
            pass
        G.check(f"{tag}-device-outlives-the-first-conn",
                has_dev(G.LEFT, "vti7") and len(left.list_sas()) == 2
                and G.ping(G.LEFT, G.LIN6, G.RIN6), west.tail(5))
        west.whack("--name", "vti-b", "--delete")  # ipsec delete: as a down, and unloads
        gone = G.waited(lambda: not has_dev(G.LEFT, "vti7"), 30, "the shared device gone")
        G.check(f"{tag}-last-conn-delete-removes-the-device",
                gone and not left.list_sas() and '"vti-b"' not in west.whack("--status"))


def run_libreswan(left: XfrmBackend, right: XfrmBackend) -> None:
    if not G.have_libreswan("vti-libreswan-present"):
        return
    run_pair(left, right, "libreswan")


SCENARIOS = [("pair", run_pair), ("shared", run_shared), ("libreswan", run_libreswan)]


def main() -> int:
    only = set(sys.argv[1:])
    return G.run_guest("VTI", [(f"vti-{tag}", fn) for tag, fn in SCENARIOS
                               if not only or tag in only],
                       prepare=lambda: G.lab_routes(add=False))


if __name__ == "__main__":
    sys.exit(main())
