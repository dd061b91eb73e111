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
import signal
import subprocess
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import guest_xfrm as G  # noqa: E402  (the lab, the daemons, check())

from pypluto.kernel.xfrm import XfrmBackend  # noqa: E402

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


def conn(name: str, tag: str, extra: str, lnet: object = None, rnet: object = None) -> str:
    """One conn (both ends write left=west: the daemons orient by address)."""
    lnet = lnet or G.LNET4
    rnet = rnet or G.RNET4
    return (f"conn {name}\n\tauthby=secret\n\tleft={G.L4}\n\tleftid=@west-{tag}\n"
            f"\tleftsubnet={lnet}\n\tright={G.R4}\n\trightid=@east-{tag}\n"
            f"\trightsubnet={rnet}\n\tike=aes_gcm256-sha2_256-dh19\n\tesp=aes_gcm256\n"
            f"{extra}\tauto=add\n\n")


def has_dev(ns: str, name: str = DEV) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", "dev", name],
                          capture_output=True).returncode == 0


def dev_text(ns: str, name: str = DEV) -> str:
    return G.sh(["ip", "-n", ns, "-d", "addr", "show", "dev", name], check_rc=False)


def dev_counts(ns: str, name: str = DEV) -> tuple[int, int]:
    """(tx, rx) packets of a device (``ip -s link show``)."""
    out = G.sh(["ip", "-n", ns, "-s", "link", "show", "dev", name], check_rc=False)
    nums = re.findall(r"^\s+(\d+)\s+(\d+)\s+\d+\s+\d+", out, re.MULTILINE)
    if len(nums) < 2:
        return -1, -1
    return int(nums[1][1]), int(nums[0][1])


def routes(ns: str, dst: object, v6: bool = False) -> str:
    return G.sh(["ip", "-n", ns] + (["-6"] if v6 else []) + ["route", "show", str(dst)],
                check_rc=False).strip()


def xfrm_text(ns: str, what: str) -> str:
    return G.sh(["ip", "-n", ns, "xfrm", what], check_rc=False)


def sa_packets(ns: str) -> list[int]:
    """Packets of every SA in ``ns`` (``ip -s xfrm state``)."""
    out = G.sh(["ip", "-n", ns, "-s", "xfrm", "state"], check_rc=False)
    return [int(n) for n in re.findall(r"\d+\(bytes\), (\d+)\(packets\)", out)]


def lab_routes(add: bool) -> None:
    """The lab's plain routes to the other side's subnets (out while ipsec1 routes)."""
    verb = "add" if add else "del"
    for ns, peer4, peer6, via4, via6, in4, in6 in (
            (G.LEFT, G.RNET4, G.RNET6, G.R4, G.R6, G.LIN4, G.LIN6),
            (G.RIGHT, G.LNET4, G.LNET6, G.L4, G.L6, G.RIN4, G.RIN6)):
        G.sh(["ip", "-n", ns, "route", verb, str(peer4), "via", str(via4), "src", in4],
             check_rc=False)
        G.sh(["ip", "-n", ns, "-6", "route", verb, str(peer6), "via", str(via6), "src", in6],
             check_rc=False)


def operator_routes(ns: str, peer4: object, peer6: object | None = None) -> None:
    """What an operator does for a route-based VPN: the peer's subnets onto ipsec1."""
    G.sh(["ip", "-n", ns, "route", "replace", str(peer4), "dev", DEV])
    if peer6 is not None:
        G.sh(["ip", "-n", ns, "-6", "route", "replace", str(peer6), "dev", DEV])


def start_pair(work: str, wconf: str, econf: str, tags: list[str],
               east_kind: str = "pypluto") -> tuple[G.Daemon, G.Daemon]:
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=wconf)
    east = G.Daemon(east_kind, G.RIGHT, work, "east", conf=econf)
    for d in (west, east):
        with open(os.path.join(d.dir, "ipsec.secrets"), "w") as f:
            f.write("".join(f'@west-{t} @east-{t} : PSK "{PSK}"\n' for t in tags))
    for d in (west, east):
        d.start()
    return west, east


def cleanup(west: G.Daemon, east: G.Daemon, work: str) -> None:
    for d in (west, east):
        d.stop()
    for ns in (G.LEFT, G.RIGHT):
        G.sh(["ip", "-n", ns, "link", "del", DEV], check_rc=False)
        G.sh(["ip", "-n", ns, "xfrm", "state", "flush"], check_rc=False)
        G.sh(["ip", "-n", ns, "xfrm", "policy", "flush"], check_rc=False)
    subprocess.run(["rm", "-rf", work])


def wait(pred: object, timeout: float, what: str) -> bool:
    try:
        G.wait_for(pred, timeout, what)  # type: ignore[arg-type]
        return True
    except TimeoutError:
        return False


def sigterm(d: G.Daemon) -> bool:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(30)
        return True
    except subprocess.TimeoutExpired:
        return False


def run_pair(left: XfrmBackend, right: XfrmBackend) -> None:
    """Two of our daemons: conn xa (IPv4 subnets) and xb (IPv6 subnets over IPv4),
    both ipsec-interface=1, interface-ip= on each end."""
    tag = "xfrmi-pair"
    work = tempfile.mkdtemp(prefix="ppxg-xfrmi.")
    extra = "\tipsec-interface=1\n\tleftinterface-ip=10.9.9.1/30\n" \
            "\trightinterface-ip=10.9.9.2/30\n"
    text = "config setup\n\tplutodebug=none\n\n" + conn("xa", "a", extra) + conn(
        "xb", "b", extra, G.LNET6, G.RNET6)
    west, east = start_pair(work, text, text, ["a", "b"])
    try:
        G.check(f"{tag}-no-device-before-up", not has_dev(G.LEFT) and not has_dev(G.RIGHT))
        out = west.whack("--name", "xa", "--initiate")
        ok = wait(lambda: len(left.list_sas()) >= 2 and has_dev(G.LEFT) and has_dev(G.RIGHT),
                  90, "the ipsec-interface conn up")
        d = G.sh(["ip", "-n", G.LEFT, "-d", "link", "show", "dev", DEV], check_rc=False)
        a = dev_text(G.LEFT)
        G.check(f"{tag}-device-made-with-if-id-and-address",
                ok and "xfrm if_id 0x1" in d and "inet 10.9.9.1/30" in a and ",UP" in d
                and "alias pypluto-xfrmi-0" in d, f"{d.strip()[:400]} {out.strip()[-200:]}")
        e = dev_text(G.RIGHT)
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
        c0, s0 = dev_counts(G.LEFT), sum(sa_packets(G.LEFT))
        pinged = G.ping(G.LEFT, G.LIN4, G.RIN4, count=4)
        c1, s1 = dev_counts(G.LEFT), sum(sa_packets(G.LEFT))
        ec = dev_counts(G.RIGHT)
        G.check(f"{tag}-ping-routed-onto-ipsec1",
                pinged and c1[0] - c0[0] >= 4 and c1[1] - c0[1] >= 4 and s1 - s0 >= 8
                and ec[0] >= 4 and ec[1] >= 4, f"{c0} -> {c1}, SA packets {s0} -> {s1}, "
                f"east {ec}")
        G.log(G.sh(["ip", "-n", G.LEFT, "-s", "link", "show", "dev", DEV], check_rc=False))
        # a second conn with the same number shares the device
        index = G.sh(["ip", "-n", G.LEFT, "link", "show", "dev", DEV]).split(":")[0]
        west.whack("--name", "xb", "--initiate")
        ok = wait(lambda: len(left.list_sas()) >= 4, 60, "conn xb up")
        c2 = dev_counts(G.LEFT)
        p6 = G.ping(G.LEFT, G.LIN6, G.RIN6, count=3)
        c3 = dev_counts(G.LEFT)
        G.check(f"{tag}-second-conn-shares-the-device",
                ok and p6 and c3[0] - c2[0] >= 3
                and G.sh(["ip", "-n", G.LEFT, "link", "show", "dev", DEV]).split(":")[0]
                == index, f"{c2} -> {c3}")
        # down of the first: the device stays for the second
        west.whack("--name", "xa", "--down")
        ok = wait(lambda: len(left.list_sas()) == 2, 30, "conn xa down")
        G.check(f"{tag}-device-outlives-the-first-conn",
                ok and has_dev(G.LEFT) and G.ping(G.LEFT, G.LIN6, G.RIN6, count=2)
                and not G.ping(G.LEFT, G.LIN4, G.RIN4, count=1, wait=1), west.tail(5))
        # delete of the last: the device goes, on both ends
        west.whack("--name", "xb", "--delete")
        gone = wait(lambda: not has_dev(G.LEFT) and not has_dev(G.RIGHT), 30,
                    "ipsec1 gone on both ends")
        G.check(f"{tag}-last-conn-delete-removes-the-device",
                gone and not left.list_sas() and not left.list_policies()
                and '"xb"' not in west.whack("--status"),
                f"west {has_dev(G.LEFT)} east {has_dev(G.RIGHT)}")
        # up again (xa is still loaded), then SIGTERM: nothing left
        west.whack("--name", "xa", "--initiate")
        again = wait(lambda: has_dev(G.LEFT) and has_dev(G.RIGHT)
                     and len(left.list_sas()) >= 2, 60, "conn xa up again")
        if again:
            operator_routes(G.LEFT, G.RNET4)
            operator_routes(G.RIGHT, G.LNET4)
        G.check(f"{tag}-up-again-passes-traffic",
                again and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(5))
        stopped = sigterm(west)
        G.check(f"{tag}-nothing-left-after-sigterm",
                stopped and not has_dev(G.LEFT)
                and (left.list_sas(), left.list_policies()) == ([], [])
                and "if_id" not in xfrm_text(G.LEFT, "state") + xfrm_text(G.LEFT, "policy"),
                f"{dev_text(G.LEFT)[:200]} {xfrm_text(G.LEFT, 'policy')[:300]}")
        # a crash leaves ipsec1 behind; the next start removes it (flush_own)
        ok = wait(lambda: not has_dev(G.RIGHT) and not right.list_sas(), 30,
                  "east clean after west's delete")
        G.check(f"{tag}-peer-clean-after-sigterm", ok, east.tail(5))
        west.start()
        west.whack("--name", "xa", "--initiate")
        up = wait(lambda: has_dev(G.LEFT) and len(left.list_sas()) >= 2, 60, "up for the crash")
        assert west.proc is not None
        west.proc.kill()
        west.proc.wait()
        left_behind = has_dev(G.LEFT)
        west.start()
        G.check(f"{tag}-restart-after-crash-removes-the-device",
                up and left_behind and not has_dev(G.LEFT)
                and (left.list_sas(), left.list_policies()) == ([], []),
                f"up {up} left behind {left_behind} now {has_dev(G.LEFT)}")
    except Exception:
        for dd in (west, east):
            G.log(f"--- {dd.name} log tail:\n{dd.tail(40)}")
        raise
    finally:
        cleanup(west, east, work)


def run_libreswan(left: XfrmBackend, right: XfrmBackend) -> None:
    """West (ours) against Libreswan 4.10 on east, both ipsec-interface=1; Libreswan
    makes its own ipsec1 (4.10 has no interface-ip=: only west puts an address on it)."""
    tag = "xfrmi-libreswan"
    if not os.access("/usr/libexec/ipsec/pluto", os.X_OK):
        G.check(f"{tag}-present", False, "/usr/libexec/ipsec/pluto missing")
        return
    work = tempfile.mkdtemp(prefix="ppxg-xfrmi-ls.")
    extra = "\tipsec-interface=1\n\tleftinterface-ip=10.9.9.1/30\n" \
            "\trightinterface-ip=10.9.9.2/30\n"
    text = "config setup\n\tplutodebug=none\n\n" + conn("xa", "a", extra)
    # Libreswan 4.10 has no interface-ip= ("syntax error [leftinterface-ip]"): its ipsec1
    # carries no address, which the routed traffic does not need
    etext = "config setup\n\tplutodebug=none\n\n" + conn("xa", "a", "\tipsec-interface=1\n")
    west, east = start_pair(work, text, etext, ["a"], "libreswan")
    try:
        out = west.whack("--name", "xa", "--initiate")
        ok = wait(lambda: len(left.list_sas()) >= 2 and has_dev(G.LEFT) and has_dev(G.RIGHT),
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
        c0, e0 = dev_counts(G.LEFT), dev_counts(G.RIGHT)
        pinged = G.ping(G.LEFT, G.LIN4, G.RIN4, count=4)
        c1, e1 = dev_counts(G.LEFT), dev_counts(G.RIGHT)
        G.check(f"{tag}-ping-routed-onto-ipsec1",
                pinged and c1[0] - c0[0] >= 4 and c1[1] - c0[1] >= 4
                and e1[1] - e0[1] >= 4, f"west {c0} -> {c1}, east {e0} -> {e1}")
        west.whack("--name", "xa", "--down")
        gone = wait(lambda: not has_dev(G.LEFT) and not left.list_sas(), 30, "down")
        G.check(f"{tag}-down-removes-our-device", gone, west.tail(5))
        west.whack("--name", "xa", "--initiate")
        again = wait(lambda: has_dev(G.LEFT) and len(left.list_sas()) >= 2, 60, "up again")
        if again:
            operator_routes(G.LEFT, G.RNET4)
            operator_routes(G.RIGHT, G.LNET4)
        G.check(f"{tag}-up-again-passes-traffic",
                again and G.ping(G.LEFT, G.LIN4, G.RIN4, count=2), west.tail(5))
        stopped = sigterm(west)
        G.check(f"{tag}-nothing-left-after-sigterm",
                stopped and not has_dev(G.LEFT)
                and (left.list_sas(), left.list_policies()) == ([], []), west.tail(5))
    except Exception:
        for dd in (west, east):
            G.log(f"--- {dd.name} log tail:\n{dd.tail(40)}")
        raise
    finally:
        cleanup(west, east, work)


SCENARIOS = [("pair", run_pair), ("libreswan", run_libreswan)]


def main() -> int:
    ko, only = sys.argv[1], set(sys.argv[2:])
    G.log(f"kernel {os.uname().release}; python {sys.version.split()[0]}")
    load_module(ko)
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
                G.FAILED.append(f"xfrmi-{tag}")
                G.log(f"CHECK xfrmi-{tag}: FAILED with an exception\n{traceback.format_exc()}")
            G.log(f"scenario xfrmi-{tag} took {time.monotonic() - t:.1f}s")
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
    G.log("ALL XFRMI GUEST CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
