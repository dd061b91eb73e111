"""Plain ESP (IP protocol 50, no UDP encapsulation) carrying datagrams larger than a
receive slot of the plane's ``recvmmsg`` batch (:mod:`pypluto.kernel.userspace.mmsg`).

In transport mode the plane encrypts whole datagrams (RFC 4303 §3.3.4), so an ESP
packet is as large as the datagram, up to 64 KiB; the kernel cuts it into fragments on
the wire and hands the reassembled packet to the raw socket.  Before: each recvmmsg
slot held 9,216 bytes, a larger packet was cut, its ICV check failed, and every ping
over about 9 KB was lost."""

from __future__ import annotations

import os
import re
import textwrap

import pytest
from plutoproc import PY
from test_userspace_capture import BASE, pair  # noqa: F401  (fixture)
from test_userspace_hostile25 import _clean, _row, _up

pytestmark = pytest.mark.netns


@pytest.mark.parametrize(("size", "encap"), [(12000, "no"), (40000, "no"), (65000, "no"),
                                             (1000, "yes"), (3000, "yes"), (9000, "yes"), (12000, "yes"), (40000, "yes")])
def test_transport_carries_datagrams_larger_than_a_slot(pair, size, encap) -> None:  # noqa: F811
    """Plain ESP (and, for comparison, ESP in UDP, whose socket never had slots)."""
    _start, _spawn, w_ns, e_ns, _vw = pair
    west, east = _up(pair, extra=f"\ttype=transport\n\tencapsulation={encap}\n", base=BASE)
    ping = w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "3", "-s", str(size), "-M", "dont",
                    "192.0.2.2", check=False)
    assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
    e, w = _row(east), _row(west)
    assert e["in_packets"] == w["out_packets"] == 3, (e, w)
    assert w["in_packets"] == e["out_packets"] == 3, (e, w)
    drops = east.whack("--globalstatus").stdout
    assert not re.search(r"total\.ipsec\.drops\.integrity=[1-9]", drops), drops
    _clean(west, east)


RECV = textwrap.dedent("""
    import select, socket, sys
    socks = []
    for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        for port in (4500, 9999):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.bind((host, port))
            socks.append(s)
    print("ready", flush=True)
    got = []
    while True:
        r, _, _ = select.select(socks, [], [], 3)
        if not r:
            break
        for s in r:
            data, addr = s.recvfrom(65535)
            got.append(f"{s.family == socket.AF_INET6 and 6 or 4}:{s.getsockname()[1]}:{len(data)}")
    print(" ".join(sorted(got)), flush=True)
""")
SEND = textwrap.dedent("""
    import socket, sys
    for fam, dst in ((socket.AF_INET, "192.0.2.2"), (socket.AF_INET6, "2001:db8::2")):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        for port in (4500, 9999):
            s.sendto(b"\\x00" * 5000, (dst, port))
""")


def test_the_cleartext_filter_lets_every_fragment_of_a_datagram_to_an_ike_port_in() -> None:
    """The inbound cleartext filter (kernel/userspace/inbound_filter.py) with a
    host-to-host policy (everything from the peer must arrive protected): a fragmented
    UDP datagram to port 4500 (ESP in UDP of a large transport-mode datagram) arrives
    whole, IPv4 and IPv6; one to another port is still dropped.  Before: the fragments
    after the first, which carry no ports, met the policy's DROP."""
    import subprocess

    from plutoproc import NetNS

    from pypluto.kernel.userspace.inbound_filter import chain_rules
    a, b = NetNS(), NetNS()
    try:
        veth = f"jv{os.getpid() % 100000}"
        subprocess.run(["ip", "link", "add", veth, "netns", a.name, "type", "veth", "peer",
                        "name", "p", "netns", b.name], check=True)
        for ns, dev, n in ((a, veth, 1), (b, "p", 2)):
            ns.run("ip", "addr", "add", f"192.0.2.{n}/24", "dev", dev)
            ns.run("ip", "addr", "add", f"2001:db8::{n}/64", "dev", dev, "nodad")
            ns.run("ip", "link", "set", dev, "up")
        pols = [_h2h("192.0.2.1/32", "192.0.2.2/32"), _h2h("2001:db8::1/128", "2001:db8::2/128")]
        for v, tool in ((4, "iptables"), (6, "ip6tables")):
            rules = chain_rules("JT", v, pols, ["pluto0"], [])
            text = "*raw\n:JT - [0:0]\n" + "".join(r + "\n" for r in rules) + "COMMIT\n"
            r = subprocess.run(["ip", "netns", "exec", b.name, f"{tool}-restore", "--noflush"],
                               input=text, text=True, capture_output=True)
            assert r.returncode == 0, r.stderr
            b.run(tool, "-t", "raw", "-I", "PREROUTING", "1", "-j", "JT")
        rcv = subprocess.Popen(["ip", "netns", "exec", b.name, PY, "-c", RECV],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert rcv.stdout is not None and rcv.stdout.readline().strip() == "ready"
            a.run(PY, "-c", SEND)
            out, _ = rcv.communicate(timeout=30)
        finally:
            rcv.kill()
        assert out.split() == ["4:4500:5000", "6:4500:5000"], out
    finally:
        a.delete()
        b.delete()


def _h2h(src: str, dst: str):  # noqa: ANN202
    import ipaddress

    from pypluto.params import PolicyParams, TrafficSelector
    s, d = ipaddress.ip_network(src), ipaddress.ip_network(dst)
    return PolicyParams(TrafficSelector(s, 0, 0, 65535), TrafficSelector(d, 0, 0, 65535),
                        "in", 7, d.network_address, s.network_address)
