"""``daemon/nflog.py``: the iptables rules of ``nflog=`` / ``nflog-all=``, and their life.

The two planes (the userspace plane's pair test: test_userspace_nflog.py):

- XFRM: Libreswan's updown rules, ``-m policy --dir out|in --pol ipsec``;
- userspace: the plane's TUN device (``-o``/``-i``), or ``ipsecN`` for an
  ``ipsec-interface=`` conn; ``ip6tables`` for IPv6 selectors.

A rule that cannot be added fails the Child SA and takes back the rule added before
it; ``down`` removes what ``up`` added; ``close`` removes what is left.
"""

from __future__ import annotations

import asyncio
import ipaddress

from pypluto.daemon.nflog import NflogManager, conn_rules, global_rules
from pypluto.params import UpdownChild


def child(v6: bool = False, **kw: object) -> UpdownChild:
    a = ipaddress.ip_address
    n = ipaddress.ip_network
    if v6:
        return UpdownChild(conn="c", serial=2, me=a("2001:db8::1"), peer=a("2001:db8::2"),
                           my_client=n("2001:db8:1::/64"), peer_client=n("2001:db8:2::/64"),
                           nflog=9, **kw)  # type: ignore[arg-type]
    return UpdownChild(conn="c", serial=2, me=a("192.0.2.1"), peer=a("192.0.2.2"),
                       my_client=n("198.51.100.0/24"), peer_client=n("203.0.113.0/24"),
                       nflog=5, **kw)  # type: ignore[arg-type]


def test_xfrm_rules_are_libreswans() -> None:
    assert conn_rules(child(), 5, None) == [
        ["iptables", "OUTPUT", "-m", "policy", "--dir", "out", "--pol", "ipsec",
         "-s", "198.51.100.0/24", "-d", "203.0.113.0/24",
         "-j", "NFLOG", "--nflog-group", "5", "--nflog-prefix", "c"],
        ["iptables", "INPUT", "-m", "policy", "--dir", "in", "--pol", "ipsec",
         "-s", "203.0.113.0/24", "-d", "198.51.100.0/24",
         "-j", "NFLOG", "--nflog-group", "5", "--nflog-prefix", "c"]]
    assert conn_rules(child(True), 9, None)[0][0] == "ip6tables"
    rules = global_rules(7, None)
    assert len(rules) == 4 and {r[0] for r in rules} == {"iptables", "ip6tables"}
    assert all(r[-1] == "all-ipsec" and "--pol" in r for r in rules)


def test_userspace_rules_match_the_device() -> None:
    out, inb = conn_rules(child(), 5, "pluto0")
    assert out[:4] == ["iptables", "OUTPUT", "-o", "pluto0"] and "policy" not in out
    assert inb[:4] == ["iptables", "INPUT", "-i", "pluto0"]
    assert global_rules(7, "pluto0")[0][2:4] == ["-o", "pluto0"]


def test_manager_adds_removes_and_rolls_back() -> None:
    ran: list[list[str]] = []
    fail_on: set[str] = set()

    async def run(argv: list[str]) -> tuple[int, str]:
        ran.append(argv)
        return (1, "iptables: No chain/target/match by that name.") \
            if argv[3] in fail_on and argv[2] == "-I" else (0, "")

    async def body() -> None:
        m = NflogManager(run=run)
        m.tun = "pluto0"
        assert await m.up(child()) is None
        assert [r[2] for r in ran] == ["-I", "-I"] and ran[0][1] == "-w"
        await m.down(child())
        assert [r[2] for r in ran[2:]] == ["-D", "-D"]
        assert ran[2][3:] == ran[0][3:] and ran[3][3:] == ran[1][3:]
        ran.clear()
        # ipsec-interface=3 on the userspace plane: its own device
        assert await m.up(child(virt_interface="ipsec3")) is None
        assert ran[0][4:6] == ["-o", "ipsec3"]
        await m.close()  # what is left goes at exit
        assert [r[2] for r in ran[2:]] == ["-D", "-D"]
        ran.clear()
        fail_on.add("INPUT")  # the second rule fails: the first is taken back
        why = await m.up(child())
        assert why is not None and "INPUT NFLOG rule not added" in why
        assert [(r[2], r[3]) for r in ran] == [("-I", "OUTPUT"), ("-I", "INPUT"),
                                               ("-D", "OUTPUT")]
        ran.clear()
        await m.close()
        assert ran == []
        fail_on.clear()
        assert await m.start_all(7) is None and len(ran) == 4
        await m.close()
        assert [r[2] for r in ran[4:]] == ["-D"] * 4

    asyncio.run(body())
