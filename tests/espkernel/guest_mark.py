"""Guest side of the mark= test: runs INSIDE the User-Mode-Linux kernel (issue 12 / 16).

Two conns with the same selectors (198.51.100.0/24 <-> 203.0.113.0/24 between the
same two hosts) and different marks come up side by side: ``mark-a`` with
``mark=1`` on both ends, ``mark-b`` with ``mark-in=0x22``/``mark-out=0x21`` on
west and ``mark=2`` on east.  The kernel holds both Child SAs and both policy sets
(``ip xfrm state/policy`` print the marks); a ping that carries a firewall mark
(``ping -m``; inbound ESP marked per SPI with ``iptables -t mangle ... -j MARK``,
echo replies keep the mark with ``net.ipv4.fwmark_reflect``) goes through the SA of
its mark and no other (counters); unmarked traffic matches neither.  Taking one
conn down leaves the other working; a shutdown leaves no SA, policy or mark.

The peer is a second pypluto, or Libreswan 4.10 (``mark=`` is a Libreswan key).

Prints ``CHECK <name>: OK`` per check; exit status 0 only if every check passed.
Started by ``tests/espkernel/test_mark_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
import tempfile
import time

import guestlib as G  # the lab, the daemons, check(), the clean-up

from pypluto.kernel.xfrm import XfrmBackend
from pypluto.kernel.xfrm.backend import KernelSA

FULL = 0xFFFFFFFF
PSK_A = "pypluto-mark-a-psk-0123456789abcdef0123"
PSK_B = "pypluto-mark-b-psk-0123456789abcdef0123"
IPT = "iptables-legacy"  # the UML kernel has xtables, not nf_tables for IPv4


def conf(side: str, auto_a: str = "add") -> str:
    """west and east: both conns; west marks B's directions differently."""
    # (Libreswan 4.10's addconn wants the mask spelled out: "Invalid mark value" for a
    # bare 1; its documentation and pypluto default the mask to 0xffffffff)
    marks_b = ("\tmark-in=0x22\n\tmark-out=0x21\n" if side == "west"
               else "\tmark=2/0xffffffff\n")
    out = "config setup\n\tplutodebug=none\n\n"
    for name, tag, marks in (("mark-a", "a", "\tmark=1/0xffffffff\n"), ("mark-b", "b", marks_b)):
        out += (f"conn {name}\n\tauthby=secret\n\tleft={G.L4}\n\tleftid=@west-{tag}\n"
                f"\tleftsubnet={G.LNET4}\n\tright={G.R4}\n\trightid=@east-{tag}\n"
                f"\trightsubnet={G.RNET4}\n\tike=aes_gcm256-sha2_256-dh19\n"
                f"\tesp=aes_gcm256\n{marks}\tauto={auto_a if tag == 'a' else 'add'}\n\n")
    return out


def secrets() -> str:
    return (f'@west-a @east-a : PSK "{PSK_A}"\n'
            f'@west-b @east-b : PSK "{PSK_B}"\n')


def mark_esp(ns: str, spi: int, mark: tuple[int, int]) -> None:
    """Inbound ESP of one SA gets the SA's mark before the kernel looks the SA up."""
    G.sh(["ip", "netns", "exec", ns, IPT, "-t", "mangle", "-A", "PREROUTING", "-p", "esp",
          "-m", "esp", "--espspi", str(spi), "-j", "MARK", "--set-xmark",
          f"{mark[0]:#x}/{mark[1]:#x}"])


def ping_marked(ns: str, src: str, dst: str, mark: int | None, count: int = 3) -> bool:
    argv = ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2",
            "-I", src]
    if mark is not None:
        argv += ["-m", str(mark)]
    res = subprocess.run(argv + [dst], capture_output=True, text=True)
    m = re.search(r"(\d+) received", res.stdout)
    return res.returncode == 0 and m is not None and int(m.group(1)) == count


def packets(be: XfrmBackend, sa: KernelSA) -> int:
    """The SA's packet counter (GETSA naming the SA's mark, as the kernel needs)."""
    assert sa.dst is not None
    cur = be.get_sa(sa.dst, sa.spi, "esp", mark=sa.mark)
    return -1 if cur is None else cur.info.curlft.packets


def flush_marks() -> None:
    """The inbound ESP marks (:func:`mark_esp`) gone from both namespaces."""
    for ns in (G.LEFT, G.RIGHT):
        G.sh(["ip", "netns", "exec", ns, IPT, "-t", "mangle", "-F"], check_rc=False)


def run(left: XfrmBackend, right: XfrmBackend, east_kind: str, tag: str) -> None:
    if east_kind == "libreswan" and not G.have_libreswan("mark-libreswan-present"):
        return
    work = tempfile.mkdtemp(prefix="ppxg-mark.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=conf("west"))
    east = G.Daemon(east_kind, G.RIGHT, work, "east", conf=conf("east"))
    theirs = east_kind != "pypluto"
    for d in (west, east):
        d.write_secrets(secrets())
    G.sh(["ip", "netns", "exec", G.RIGHT, "sysctl", "-qw", "net.ipv4.fwmark_reflect=1"])

    def east_sas() -> list:  # type: ignore[type-arg]
        return right.list_sas(own_only=not theirs)

    with G.cleaned_up((west, east), work, orderly=True, tail=40, then=[flush_marks]):
        for d in (west, east):
            d.start()
        out = west.whack("--name", "mark-a", "--initiate")
        out += west.whack("--name", "mark-b", "--initiate")
        ok = G.waited(lambda: len(left.list_sas()) >= 4 and len(east_sas()) >= 4, 60,
                      "two marked Child SAs in both kernels")
        wsas = left.list_sas()
        by_mark = {sa.mark: sa for sa in wsas}
        want = {(1, FULL), (0x21, FULL), (0x22, FULL)}
        G.check(f"{tag}-both-child-sas-installed",
                ok and len(wsas) == 4 and set(by_mark) == want,
                f"{[(hex(sa.spi), sa.dst, sa.mark) for sa in wsas]} {out.strip()[-300:]}")
        state = G.sh(["ip", "-n", G.LEFT, "xfrm", "state"])
        policy = G.sh(["ip", "-n", G.LEFT, "xfrm", "policy"])
        G.check(f"{tag}-ip-xfrm-state-shows-marks",
                state.count("mark 0x1/0xffffffff") == 2
                and state.count("mark 0x21/0xffffffff") == 1
                and state.count("mark 0x22/0xffffffff") == 1,
                f"{re.findall(r'mark [0-9a-fx/]+', state)}")  # (not the state: it has keys)
        sel = f"src {G.LNET4} dst {G.RNET4}"
        G.check(f"{tag}-ip-xfrm-policy-same-selectors-two-marks",
                policy.count(sel) == 2 and "mark 0x1/0xffffffff" in policy
                and "mark 0x21/0xffffffff" in policy and "mark 0x22/0xffffffff" in policy,
                f"{policy.count(sel)} x '{sel}'; {re.findall(r'mark [0-9a-fx/]+', policy)}")
        emarks = sorted(str(sa.mark) for sa in east_sas())
        epols = sorted(str(p.mark) for p in right.list_policies(own_only=not theirs)
                       if p.tmpls)
        G.log(f"{tag}: east's SA marks {emarks}, policy marks {epols}")
        # pypluto marks the peer's SAs too; Libreswan 4.10 marks its policies only (its
        # SAs are found through the marked policies' reqids)
        sa_ok = theirs or emarks == sorted([str((1, FULL))] * 2 + [str((2, FULL))] * 2)
        G.check(f"{tag}-peer-kernel-marks", sa_ok and epols == sorted(
            [str((1, FULL))] * 3 + [str((2, FULL))] * 3), f"{emarks} {epols}")

        # west's SAs of each conn: (out spi, in spi)
        a_out = next(sa for sa in wsas if sa.dst == G.R4 and sa.mark == (1, FULL))
        a_in = next(sa for sa in wsas if sa.dst == G.L4 and sa.mark == (1, FULL))
        b_out = next(sa for sa in wsas if sa.mark == (0x21, FULL))
        b_in = next(sa for sa in wsas if sa.mark == (0x22, FULL))
        # inbound ESP is looked up with the packet's mark: mark it per SPI
        mark_esp(G.LEFT, a_in.spi, (1, FULL))
        mark_esp(G.LEFT, b_in.spi, (0x22, FULL))
        mark_esp(G.RIGHT, a_out.spi, (1, FULL))
        mark_esp(G.RIGHT, b_out.spi, (2, FULL))

        def counts() -> dict[str, int]:
            return {"a_out": packets(left, a_out), "a_in": packets(left, a_in),
                    "b_out": packets(left, b_out), "b_in": packets(left, b_in)}

        c0 = counts()
        pa = ping_marked(G.LEFT, G.LIN4, G.RIN4, 1)
        c1 = counts()
        G.check(f"{tag}-mark-1-traffic-through-conn-a",
                pa and c1["a_out"] - c0["a_out"] >= 3 and c1["a_in"] - c0["a_in"] >= 3
                and c1["b_out"] == c0["b_out"] and c1["b_in"] == c0["b_in"], f"{c0} -> {c1}")
        pb = ping_marked(G.LEFT, G.LIN4, G.RIN4, 0x21)
        c2 = counts()
        G.check(f"{tag}-mark-0x21-traffic-through-conn-b",
                pb and c2["b_out"] - c1["b_out"] >= 3 and c2["b_in"] - c1["b_in"] >= 3
                and c2["a_out"] == c1["a_out"] and c2["a_in"] == c1["a_in"], f"{c1} -> {c2}")
        ping_marked(G.LEFT, G.LIN4, G.RIN4, None, count=2)  # no mark: no policy matches
        c3 = counts()
        G.check(f"{tag}-unmarked-traffic-takes-neither-sa", c3 == c2 and -1 not in c3.values(),
                f"{c2} -> {c3}")

        tr = west.whack("--trafficstatus")
        nums = {n: [int(x) for x in re.findall(r"(?:inBytes|outBytes)=(\d+)", line)]
                for line in tr.splitlines() for n in ("mark-a", "mark-b") if f'"{n}"' in line}
        G.check(f"{tag}-trafficstatus-counts-marked-sas",
                set(nums) == {"mark-a", "mark-b"} and all(v and min(v) > 0
                                                          for v in nums.values()),
                tr.strip()[:400])
        # rekey B: new SAs with B's marks, the old ones deleted (DELSA names the mark)
        old_b = {b_out.spi, b_in.spi}
        west.whack("--name", "mark-b", "--rekey-child")
        rekeyed = G.waited(lambda: len(left.list_sas()) == 4
                           and not {sa.spi for sa in left.list_sas()} & old_b, 30, "B rekeyed")
        now = left.list_sas()
        G.check(f"{tag}-rekey-keeps-marks-and-deletes-old-sas",
                rekeyed and {sa.mark for sa in now} == want,
                f"{[(hex(sa.spi), sa.mark) for sa in now]} (old B {sorted(map(hex, old_b))})")
        b_out = next(sa for sa in now if sa.mark == (0x21, FULL))
        b_in = next(sa for sa in now if sa.mark == (0x22, FULL))
        mark_esp(G.LEFT, b_in.spi, (0x22, FULL))
        mark_esp(G.RIGHT, b_out.spi, (2, FULL))
        c6 = counts()
        pb3 = ping_marked(G.LEFT, G.LIN4, G.RIN4, 0x21)
        c7 = counts()
        G.check(f"{tag}-mark-0x21-traffic-after-rekey",
                pb3 and c7["b_out"] - c6["b_out"] >= 3 and c7["b_in"] - c6["b_in"] >= 3
                and c7["a_out"] == c6["a_out"], f"{c6} -> {c7}")

        west.whack("--name", "mark-a", "--down")
        gone = G.waited(lambda: {sa.mark for sa in left.list_sas()} == {(0x21, FULL),
                                                                       (0x22, FULL)},
                        30, "conn A's SAs gone")
        pols = {(p.direction, p.mark) for p in left.list_policies()}
        G.check(f"{tag}-down-a-leaves-b", gone and pols == {
            ("out", (0x21, FULL)), ("in", (0x22, FULL)), ("fwd", (0x22, FULL))}, f"{pols}")
        c4 = counts()
        pb2 = ping_marked(G.LEFT, G.LIN4, G.RIN4, 0x21)
        c5 = counts()
        G.check(f"{tag}-conn-b-still-carries-its-traffic",
                pb2 and c5["b_out"] - c4["b_out"] >= 3, f"{c4} -> {c5}")
        stopped = west.stop()
        rest = G.leftovers(left, words=["mark"])
        G.check(f"{tag}-nothing-left-after-shutdown", stopped and not rest,
                f"stopped {stopped}; {'; '.join(rest)}")


def run_route(left: XfrmBackend, right: XfrmBackend) -> None:
    """auto=route with mark=1 (issue 16): the trap policy carries the mark, so only
    marked traffic raises the ACQUIRE; the Child SA it brings up is marked too."""
    tag = "mark-route"
    work = tempfile.mkdtemp(prefix="ppxg-mark-route.")
    west = G.Daemon("pypluto", G.LEFT, work, "west", conf=conf("west", auto_a="route"))
    east = G.Daemon("pypluto", G.RIGHT, work, "east", conf=conf("east"))
    for d in (west, east):
        d.write_secrets(secrets())
    G.sh(["ip", "netns", "exec", G.RIGHT, "sysctl", "-qw", "net.ipv4.fwmark_reflect=1"])
    with G.cleaned_up((west, east), work, orderly=True, tail=40, then=[flush_marks]):
        for d in (west, east):
            d.start()
        G.wait_for(lambda: len(left.list_policies()) >= 1, 30, "the trap policy")
        pols = [(p.direction, p.mark, bool(p.tmpls)) for p in left.list_policies()]
        G.check(f"{tag}-trap-policy-is-marked",
                pols == [("out", (1, FULL), True)] and not left.list_sas(), f"{pols}")
        ping_marked(G.LEFT, G.LIN4, G.RIN4, None, count=2)  # matches no (marked) trap
        time.sleep(1)
        G.check(f"{tag}-unmarked-traffic-raises-no-acquire",
                not left.list_sas() and "initiating on demand" not in west.log(),
                west.tail(5))
        ping_marked(G.LEFT, G.LIN4, G.RIN4, 1, count=1)  # the trap's ACQUIRE
        up = G.waited(lambda: len(left.list_sas()) >= 2, 30, "SAs after the marked ACQUIRE")
        sas = left.list_sas()
        G.check(f"{tag}-marked-traffic-acquires-a-marked-child",
                up and {sa.mark for sa in sas} == {(1, FULL)}
                and "initiating on demand" in west.log(), f"{[(hex(s.spi), s.mark) for s in sas]}")
        out_sa = next(sa for sa in sas if sa.dst == G.R4)
        in_sa = next(sa for sa in sas if sa.dst == G.L4)
        mark_esp(G.LEFT, in_sa.spi, (1, FULL))
        mark_esp(G.RIGHT, out_sa.spi, (1, FULL))
        before = packets(left, out_sa)
        ok = ping_marked(G.LEFT, G.LIN4, G.RIN4, 1)
        G.check(f"{tag}-ping-after-acquire", ok and packets(left, out_sa) - before >= 3,
                f"{before} -> {packets(left, out_sa)}")
        west.whack("--name", "mark-a", "--down")
        try:
            G.wait_for(lambda: not left.list_sas(), 30, "SAs gone after down")
        except TimeoutError:
            pass
        pols = [(p.direction, p.mark, bool(p.tmpls)) for p in left.list_policies()]
        G.check(f"{tag}-down-keeps-the-marked-trap",
                not left.list_sas() and pols == [("out", (1, FULL), True)], f"{pols}")
        stopped = west.stop()
        rest = G.leftovers(left)
        G.check(f"{tag}-nothing-left-after-shutdown", stopped and not rest,
                f"stopped {stopped}; {'; '.join(rest)}")


SCENARIOS = [
    ("pair", functools.partial(run, east_kind="pypluto", tag="mark-pair")),
    ("libreswan", functools.partial(run, east_kind="libreswan", tag="mark-libreswan")),
    ("route", run_route),
]


def main() -> int:
    only = set(sys.argv[1:])
    return G.run_guest("MARK", [(f"mark-{tag}", fn) for tag, fn in SCENARIOS
                                if not only or tag in only])


if __name__ == "__main__":
    sys.exit(main())
