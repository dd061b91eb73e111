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

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import guest_xfrm as G  # noqa: E402  (the lab, the daemons, check())

from pypluto.kernel.xfrm import XfrmBackend  # noqa: E402
from pypluto.kernel.xfrm.backend import KernelSA  # noqa: E402

FULL = 0xFFFFFFFF
PSK = "pypluto-vti-psk-0123456789abcdef0123456789"


def conn(name: str, tag: str, side: str, extra: str, lnet: object = None,
         rnet: object = None) -> str:
    """One conn as ``side`` writes it (both ends write left=west: pypluto orients)."""
    del side
    lnet = lnet or G.LNET4
    rnet = rnet or G.RNET4
    return (f"conn {name}\n\tauthby=secret\n\tleft={G.L4}\n\tleftid=@west-{tag}\n"
            f"\tleftsubnet={lnet}\n\tright={G.R4}\n\trightid=@east-{tag}\n"
            f"\trightsubnet={rnet}\n\tike=aes_gcm256-sha2_256-dh19\n\tesp=aes_gcm256\n"
            f"{extra}\tauto=add\n\n")


def secrets(tags: list[str]) -> str:
    return "".join(f'@west-{t} @east-{t} : PSK "{PSK}"\n' for t in tags)


def dev_text(ns: str, name: str) -> str:
    return G.sh(["ip", "-n", ns, "-d", "addr", "show", "dev", name], check_rc=False)


def has_dev(ns: str, name: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", "dev", name],
                          capture_output=True).returncode == 0


def dev_counts(ns: str, name: str) -> tuple[int, int]:
    """(tx, rx) packets of a device in a namespace."""
    out = G.sh(["ip", "-n", ns, "-s", "link", "show", "dev", name], check_rc=False)
    nums = re.findall(r"^\s+(\d+)\s+(\d+)\s+\d+\s+\d+", out, re.MULTILINE)
    if len(nums) < 2:
        return -1, -1
    rx, tx = int(nums[0][1]), int(nums[1][1])
    return tx, rx


def routes(ns: str, dst: object, v6: bool = False) -> str:
    return G.sh(["ip", "-n", ns] + (["-6"] if v6 else []) + ["route", "show", str(dst)],
                check_rc=False).strip()


def packets(be: XfrmBackend, sa: KernelSA) -> int:
    assert sa.dst is not None
    cur = be.get_sa(sa.dst, sa.spi, "esp", mark=sa.mark)
    return -1 if cur is None else cur.info.curlft.packets


def lab_routes(add: bool) -> None:
    """The lab's plain routes to the other side's subnets (out while VTIs route)."""
    verb = "add" if add else "del"
    for ns, peer4, peer6, via4, via6, in4, in6 in (
            (G.LEFT, G.RNET4, G.RNET6, G.R4, G.R6, G.LIN4, G.LIN6),
            (G.RIGHT, G.LNET4, G.LNET6, G.L4, G.L6, G.RIN4, G.RIN6)):
        G.sh(["ip", "-n", ns, "route", verb, str(peer4), "via", str(via4), "src", in4],
             check_rc=False)
        G.sh(["ip", "-n", ns, "-6", "route", verb, str(peer6), "via", str(via6), "src", in6],
             check_rc=False)


def start_pair(work: str, wconf: str, econf: str, tags: list[str],
               east_kind: str = "pypluto") -> tuple[G.Daemon, G.Daemon]:
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=wconf)
    east = G.Daemon(east_kind, G.RIGHT, work, "east", conf=econf)
    for d in (west, east):
        with open(os.path.join(d.dir, "ipsec.secrets"), "w") as f:
            f.write(secrets(tags))
    for d in (west, east):
        d.start()
    return west, east


def cleanup(west: G.Daemon, east: G.Daemon, work: str, devs: list[str]) -> None:
    for d in (west, east):
        d.stop()
    for ns in (G.LEFT, G.RIGHT):
        for dev in devs:
            G.sh(["ip", "-n", ns, "link", "del", dev], check_rc=False)
        G.sh(["ip", "-n", ns, "xfrm", "state", "flush"], check_rc=False)
        G.sh(["ip", "-n", ns, "xfrm", "policy", "flush"], check_rc=False)
    subprocess.run(["rm", "-rf", work])


def run_pair(left: XfrmBackend, right: XfrmBackend, east_kind: str = "pypluto") -> None:
    """vti-interface=vti5, mark=5, leftvti=/rightvti=, vti-routing=yes (the default);
    the same file on both ends (each puts its own end's address on its device).
    Against Libreswan 4.10 east's device is made by Libreswan's _updown."""
    theirs = east_kind != "pypluto"
    tag = "vti-libreswan" if theirs else "vti-pair"
    work = tempfile.mkdtemp(prefix="ppxg-vti.")
    # (Libreswan 4.10's addconn wants the mark's mask spelled out)
    text = "config setup\n\tplutodebug=none\n\n" + conn(
        "vti", "a", "west", "\tmark=5/0xffffffff\n\tvti-interface=vti5\n"
        "\tleftvti=10.9.9.1/30\n\trightvti=10.9.9.2/30\n")
    # Libreswan 4.10's _updown makes the device in up-client, then checks it again in
    # prepare-client by comparing `ip tun show` with a string of its own whose
    # spacing this iproute2 no longer prints: "already exists with conflicting
    # setting", and its route-client adds no route.  So east (Libreswan) makes its
    # device but the test routes onto it (vti-routing=no), as an operator would.
    etext = text.replace("\tvti-interface=",
                         "\tvti-shared=yes\n\tvti-routing=no\n\tvti-interface=") \
        if theirs else text
    west, east = start_pair(work, text, etext, ["a"], east_kind)
    try:
        G.check(f"{tag}-no-device-before-up", not has_dev(G.LEFT, "vti5"))
        out = west.whack("--name", "vti", "--initiate")
        ok = True
        try:
            G.wait_for(lambda: len(left.list_sas()) >= 2 and has_dev(G.LEFT, "vti5")
                       and has_dev(G.RIGHT, "vti5") and "vti5" in routes(G.LEFT, G.RNET4)
                       and (theirs or "vti5" in routes(G.RIGHT, G.LNET4)), 90,
                       "the VTI conn up")
        except TimeoutError:
            ok = False
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
        rekeyed = True
        try:
            G.wait_for(lambda: len(left.list_sas()) == 2
                       and not {sa.spi for sa in left.list_sas()} & old, 30, "rekeyed")
        except TimeoutError:
            rekeyed = False
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
        gone = True
        try:
            G.wait_for(lambda: not has_dev(G.LEFT, "vti5") and not left.list_sas()
                       and (theirs or not has_dev(G.RIGHT, "vti5")), 30,
                       "the VTI devices gone after down")
        except TimeoutError:
            gone = False
        G.check(f"{tag}-down-removes-device-and-route",
                gone and "vti5" not in routes(G.LEFT, G.RNET4), routes(G.LEFT, G.RNET4))
        # up again, then SIGTERM-like shutdown (whack --shutdown) removes everything
        west.whack("--name", "vti", "--initiate")
        again = True
        try:
            G.wait_for(lambda: has_dev(G.LEFT, "vti5") and len(left.list_sas()) >= 2, 60,
                       "the VTI conn up again")
        except TimeoutError:
            again = False
        if theirs and again and "vti5" not in routes(G.RIGHT, G.LNET4):
            G.sh(["ip", "-n", G.RIGHT, "route", "add", str(G.LNET4), "dev", "vti5"])
        G.check(f"{tag}-up-again-passes-traffic",
                again and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(5))
        if theirs:
            stopped = west.stop()  # whack --shutdown
        else:  # SIGTERM (pluto is the process: ip netns exec execs it)
            assert west.proc is not None
            west.proc.send_signal(signal.SIGTERM)
            try:
                west.proc.wait(30)
                stopped = True
            except subprocess.TimeoutExpired:
                stopped = False
        G.check(f"{tag}-nothing-left-after-shutdown",
                stopped and not has_dev(G.LEFT, "vti5") and not routes(G.LEFT, G.RNET4)
                and (left.list_sas(), left.list_policies()) == ([], []),
                f"{routes(G.LEFT, G.RNET4)!r} {dev_text(G.LEFT, 'vti5')[:200]}")
    except Exception:
        for dd in (west, east):
            G.log(f"--- {dd.name} log tail:\n{dd.tail(40)}")
        raise
    finally:
        cleanup(west, east, work, ["vti5"])


def run_shared(left: XfrmBackend, right: XfrmBackend) -> None:
    """vti-shared=yes, vti-routing=no on west: one device (remote any) for two conns
    (IPv4 and IPv6 subnets over IPv4), no route from the daemon; the operator routes."""
    tag = "vti-shared"
    work = tempfile.mkdtemp(prefix="ppxg-vti-shared.")
    wextra = "\tmark=7/0xffffffff\n\tvti-interface=vti7\n\tvti-shared=yes\n\tvti-routing=no\n"
    eextra = "\tmark=7/0xffffffff\n\tvti-interface=vti7\n\tvti-shared=yes\n"
    head = "config setup\n\tplutodebug=none\n\n"
    wconf = head + conn("vti-a", "a", "west", wextra) + conn(
        "vti-b", "b", "west", wextra, G.LNET6, G.RNET6)
    econf = head + conn("vti-a", "a", "east", eextra) + conn(
        "vti-b", "b", "east", eextra, G.LNET6, G.RNET6)
    west, east = start_pair(work, wconf, econf, ["a", "b"])
    try:
        out = west.whack("--name", "vti-a", "--initiate")
        out += west.whack("--name", "vti-b", "--initiate")
        ok = True
        try:
            G.wait_for(lambda: len(left.list_sas()) >= 4 and has_dev(G.LEFT, "vti7"), 60,
                       "both shared-VTI conns up")
        except TimeoutError:
            ok = False
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
        gone = True
        try:
            G.wait_for(lambda: not has_dev(G.LEFT, "vti7"), 30, "the shared device gone")
        except TimeoutError:
            gone = False
        G.check(f"{tag}-last-conn-delete-removes-the-device",
                gone and not left.list_sas() and '"vti-b"' not in west.whack("--status"))
    except Exception:
        for dd in (west, east):
            G.log(f"--- {dd.name} log tail:\n{dd.tail(40)}")
        raise
    finally:
        cleanup(west, east, work, ["vti7"])


def run_libreswan(left: XfrmBackend, right: XfrmBackend) -> None:
    if not os.access("/usr/libexec/ipsec/pluto", os.X_OK):
        G.check("vti-libreswan-present", False, "/usr/libexec/ipsec/pluto missing")
        return
    run_pair(left, right, "libreswan")


SCENARIOS = [("pair", run_pair), ("shared", run_shared), ("libreswan", run_libreswan)]


def main() -> int:
    only = set(sys.argv[1:])
    G.log(f"kernel {os.uname().release}; python {sys.version.split()[0]}")
    G.setup_lab()
    left = right = None
    try:
        left = XfrmBackend(netns=G.LEFT, log=lambda m: None)
        right = XfrmBackend(netns=G.RIGHT, log=lambda m: None)
        lab_routes(add=False)
        for tag, fn in SCENARIOS:
            if only and tag not in only:
                continue
            t = time.monotonic()
            try:
                fn(left, right)
            except Exception:
                G.FAILED.append(f"vti-{tag}")
                G.log(f"CHECK vti-{tag}: FAILED with an exception\n{traceback.format_exc()}")
            G.log(f"scenario vti-{tag} took {time.monotonic() - t:.1f}s")
            left.flush_own()
            right.flush_own()
    finally:
        for b in (left, right):
            if b is not None:
                b.close()
        G.teardown_lab()
    if G.FAILED:
        G.log(f"FAILED: {', '.join(G.FAILED)}")
        return 1
    G.log("ALL VTI GUEST CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
