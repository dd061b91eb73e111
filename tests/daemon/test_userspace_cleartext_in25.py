"""The userspace plane's inbound cleartext filter: forwarded IKE/ESP, ICMP type and code.

RFC 4301 §5.2 step 3 / §4.4.1: cleartext that matches an inbound PROTECT policy is
dropped.  :mod:`pypluto.kernel.userspace.inbound_filter` has netfilter do it for
``--use-userspace``; two of its gaps, closed here:

* the exemption for the tunnel's own transport (ESP, AH, UDP to the IKE ports) let
  through such packets for any destination: cleartext UDP to port 500/4500 (or ESP)
  from a protected source to a host *behind* us was forwarded, where XFRM bypasses
  only its own IKE sockets' traffic and its "fwd" check drops the rest;
* an ICMP selector (``leftprotoport=icmp/2048``, echo request) dropped all of ICMP
  from the protected source: the rule now matches type ‖ code exactly (RFC 4301
  §4.4.1.1, RFC 7296 §3.13.1: type in the upper, code in the lower byte).

Route-based conns (``ipsec-interface=``) keep getting no rule: why is in the module's
docstring (their selectors are the SPD of the ipsecN device).

The lab of test_userspace_cleartext_in.py (west 192.0.2.1 / 198.51.100.1 <-veth-> east
192.0.2.2 / 203.0.113.1), plus a namespace "inner" behind east (203.0.113.5); packets
are injected on west's veth with an ``AF_PACKET`` socket and seen by raw sockets.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import subprocess
import textwrap
from collections.abc import Iterator

import pytest
from plutoproc import PY, NetNS, wait_for
from test_userspace_capture import BASE, SUBNETS, pair  # noqa: F401
from test_userspace_cleartext_in import Lab, _up

from pypluto.kernel.userspace.inbound_filter import chain_rules, policy_rules
from pypluto.params import PolicyParams, TrafficSelector

_n = itertools.count(1)

# raw sockets for the given IP protocols; prints every marker (MK...) a packet holds
LISTEN = textwrap.dedent("""
    import re, select, socket, sys
    fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    socks = [socket.socket(fam, socket.SOCK_RAW, int(p)) for p in sys.argv[2:]]
    print("ready", flush=True)
    while True:
        r, _, _ = select.select(socks, [], [], 20)
        if not r:
            sys.exit("timeout")
        for s in r:
            for m in re.findall(rb"MK[A-Z0-9]+", s.recv(65535)):
                print(m.decode(), flush=True)
""")

# IP packets as Ethernet frames: argv ifname dst-mac JSON [[src, dst, proto, port, marker]]
# (proto 17: UDP to port; 1 / 58: ICMP type ‖ code = port; 50: ESP)
INJECT = textwrap.dedent("""
    import ipaddress, json, socket, struct, sys
    ifname, dmac, pkts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    def csum(b):
        if len(b) % 2: b += b"\\0"
        t = sum(struct.unpack(f"!{len(b)//2}H", b))
        while t >> 16: t = (t & 0xffff) + (t >> 16)
        return ~t & 0xffff
    smac = open(f"/sys/class/net/{ifname}/address").read().strip()
    p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    p.bind((ifname, 0))
    for src, dst, proto, port, marker in pkts:
        s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        data = marker.encode()
        if s.version == 4:
            pseudo = lambda n: s.packed + d.packed + struct.pack("!BBH", 0, proto, n)
        else:
            pseudo = lambda n: s.packed + d.packed + struct.pack("!I3xB", n, proto)
        if proto == 17:
            body = struct.pack("!HHHH", 40001, port, 8 + len(data), 0) + data
            c = csum(pseudo(len(body)) + body) or 0xffff
            body = body[:6] + struct.pack("!H", c) + body[8:]
        elif proto in (1, 58):
            body = struct.pack("!BBHHH", port >> 8, port & 0xff, 0, 7, 1) + data
            c = csum((pseudo(len(body)) if proto == 58 else b"") + body)
            body = body[:2] + struct.pack("!H", c) + body[4:]
        else:  # ESP: an SPI nobody has, a sequence number, the marker
            body = struct.pack("!II", 0x7e57, 1) + data
        if s.version == 4:
            h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, proto, 0,
                            s.packed, d.packed)
            h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
            etype = 0x0800
        else:
            h = struct.pack("!IHBB16s16s", 6 << 28, len(body), proto, 64, s.packed, d.packed)
            etype = 0x86DD
        p.send(bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", ""))
               + struct.pack("!H", etype) + h + body)
""")

# a UDP datagram sent the ordinary way (through the tunnel when a policy covers it)
SEND = textwrap.dedent("""
    import socket, sys
    src, dst, port, payload = sys.argv[1:5]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0))
    u.sendto(payload.encode(), (dst, int(port)))
""")


class Lab25(Lab):
    def raw_listener(self, ns: NetNS, version: int, *protos: int) -> subprocess.Popen[bytes]:
        p = self.spawn(ns, PY, "-c", LISTEN, str(version), *map(str, protos))
        assert p.stdout is not None
        assert p.stdout.readline().decode().strip() == "ready", p.stderr
        return p

    def inject_all(self, pkts: list[tuple[str, str, int, int, str]]) -> None:
        self.w_ns.run(PY, "-c", INJECT, self.vw, self.east_mac, json.dumps(pkts))


def markers_until(p: subprocess.Popen[bytes], want: set[str]) -> set[str]:
    """Every marker ``p`` printed until all of ``want`` came."""
    assert p.stdout is not None
    got: set[str] = set()
    while not want <= got:
        line = p.stdout.readline().decode().strip()
        assert line, f"listener ended ({p.stderr.read().decode() if p.stderr else ''}); " \
                     f"received {sorted(got)}, waiting for {sorted(want - got)}"
        got.add(line)
    return got


@pytest.fixture
def inner(pair) -> Iterator[tuple[NetNS, str]]:  # noqa: F811
    """A host 203.0.113.5 behind east (east forwards to it); removed even on failure."""
    _start, _spawn, _w_ns, e_ns, vw = pair
    ns = NetNS()
    vi, ve = f"pci{os.getpid()}{next(_n)}"[:15], f"pcj{os.getpid()}{next(_n)}"[:15]
    try:
        e_ns.run("ip", "link", "add", ve, "type", "veth", "peer", "name", vi, "netns", ns.name)
        ns.run("ip", "addr", "add", "203.0.113.5/32", "dev", vi)
        ns.run("ip", "link", "set", vi, "up")
        ns.run("ip", "route", "add", "default", "dev", vi)
        e_ns.run("ip", "link", "set", ve, "up")
        mac = ns.run("cat", f"/sys/class/net/{vi}/address").stdout.strip()
        e_ns.run("ip", "route", "add", "203.0.113.5/32", "dev", ve)
        e_ns.run("ip", "neigh", "replace", "203.0.113.5", "lladdr", mac, "dev", ve,
                 "nud", "permanent")
        e_ns.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        for dev in ("all", "default", ve, "pce" + vw[3:]):
            e_ns.run("sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=0")
        yield ns, ve
    finally:
        ns.delete()  # takes the veth pair with it


@pytest.mark.netns
def test_forwarded_ike_ports_and_esp_from_protected_source_dropped(
        pair, inner: tuple[NetNS, str]) -> None:  # noqa: F811
    """UDP to 500 and 4500 and ESP, in the clear from inside west's subnet, addressed to
    a host behind east: not forwarded (XFRM's "fwd" check would drop them: only the
    daemon's own IKE sockets bypass).  UDP to 500 at east's own address still passes
    the chain (the exemption for our IKE), and the tunnel still reaches the inner host."""
    lab = Lab25(pair)
    inner_ns, _ = inner
    west, east = _up(lab, BASE + SUBNETS)
    wait_for(lambda: "-j DROP" in lab.chain(), 10, "east's drop rule")
    behind = lab.raw_listener(inner_ns, 4, 17, 50)
    local = lab.raw_listener(lab.e_ns, 4, 17)
    lab.inject_all([
        ("198.51.100.7", "203.0.113.5", 17, 500, "MKFWD500"),
        ("198.51.100.7", "203.0.113.5", 17, 4500, "MKFWD4500"),
        ("198.51.100.7", "203.0.113.5", 50, 0, "MKFWDESP"),
        ("198.51.100.7", "203.0.113.1", 17, 500, "MKLOCAL500"),
        # not from a protected source: forwarded, with or without the filter
        ("192.0.2.1", "203.0.113.5", 17, 500, "MKOPEN500"),
    ])
    lab.w_ns.run(PY, "-c", SEND, "198.51.100.1", "203.0.113.5", "500", "MKTUNNEL")
    got = markers_until(behind, {"MKOPEN500", "MKTUNNEL"})
    assert not got & {"MKFWD500", "MKFWD4500", "MKFWDESP"}, (got, lab.chain())
    assert "MKLOCAL500" in markers_until(local, {"MKLOCAL500"})
    wait_for(lambda: lab.drops() == 3, 10, f"3 drops in {lab.chain()}")
    r = west.whack("--name", "west-east", "--rekey-child")  # IKE to east still passes
    assert r.returncode == 0, r.stdout + west.log() + east.log()


ICMP_CONNS = {
    # name: (ipsec.conf, west's source, east's address, version, type ‖ code of the SA)
    "ipv4-subnets": (BASE + SUBNETS + "\tleftprotoport=icmp/2048\n"
                     "\trightprotoport=icmp/2048\n", "198.51.100.7", "203.0.113.1", 4, 0x0800),
    # type 255 (reserved): "any type" to iptables' icmp match, so the rule uses u32
    "ipv4-type-255": (BASE + SUBNETS + "\tleftprotoport=icmp/65281\n"
                      "\trightprotoport=icmp/65281\n", "198.51.100.7", "203.0.113.1", 4,
                      0xFF01),
    "ipv6-host": (BASE.replace("left=192.0.2.1", "left=2001:db8::1").replace(
        "right=192.0.2.2", "right=2001:db8::2") + "\tleftprotoport=ipv6-icmp/32768\n"
        "\trightprotoport=ipv6-icmp/32768\n", "2001:db8::1", "2001:db8::2", 6, 0x8000),
}


@pytest.mark.netns
@pytest.mark.parametrize("kind", list(ICMP_CONNS))
def test_icmp_selector_drops_only_its_type_and_code(pair, kind: str) -> None:  # noqa: F811
    """A Child SA for echo requests only (type 8 / 128, code 0): cleartext echo requests
    from the protected source are dropped; the same type with another code, echo replies
    and timestamp / other types from that source are delivered (no policy covers them,
    as with XFRM, whose selector holds the type in sport and the code in dport)."""
    lab = Lab25(pair)
    conf, src, dst, version, tc = ICMP_CONNS[kind]
    proto = 58 if version == 6 else 1
    _up(lab, conf)
    wait_for(lambda: "-j DROP" in lab.chain(version), 10, "east's drop rule")
    listener = lab.raw_listener(lab.e_ns, version, proto)
    reply = 0x8100 if version == 6 else 0x0000  # echo reply
    other = 0xC800 if version == 6 else 0x0D00  # private experimentation / timestamp
    lab.inject_all([
        (src, dst, proto, tc, "MKSA"),  # the SA's type and code: dropped
        (src, dst, proto, tc + 1, "MKCODE"),  # same type, another code
        (src, dst, proto, reply, "MKREPLY"),
        (src, dst, proto, other, "MKOTHER"),
    ])
    got = markers_until(listener, {"MKCODE", "MKREPLY", "MKOTHER"})
    assert "MKSA" not in got, lab.chain(version)
    wait_for(lambda: lab.drops(version) == 1, 10, f"1 drop in {lab.chain(version)}")


# --- the rules themselves (no namespace) ---------------------------------------------------

def _pol(src: str, dst: str, proto: int = 0, sports: tuple[int, int] = (0, 65535),
         dports: tuple[int, int] = (0, 65535), **kw: object) -> PolicyParams:
    return PolicyParams(  # type: ignore[arg-type]
        TrafficSelector(ipaddress.ip_network(src), proto, *sports),
        TrafficSelector(ipaddress.ip_network(dst), proto, *dports), "in", 7,
        ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("192.0.2.1"), **kw)


def test_icmp_rules_match_the_intersection_of_both_ends_exactly() -> None:
    """The type ‖ code must lie in both ends' ranges (selectors.flow_of checks the same
    16-bit value against the remote and the local selector)."""
    one = policy_rules(_pol("10.1.0.0/16", "10.2.0.0/16", 1, (0x0800, 0x0800),
                            (0x0800, 0x0800)), "C")
    assert one == ["-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -p 1 -m icmp --icmp-type 8/0 -j DROP"]
    # a whole type, then codes of a type only partly inside; any code on the other end
    rng = policy_rules(_pol("10.1.0.0/16", "10.2.0.0/16", 1, (0x0300, 0x0401)), "C")
    assert [r.split("-p 1 ")[1] for r in rng] == [
        "-m icmp --icmp-type 3 -j DROP", "-m icmp --icmp-type 4/0 -j DROP",
        "-m icmp --icmp-type 4/1 -j DROP"]
    # no ICMP message lies in both: no rule (the policy matches nothing)
    assert policy_rules(_pol("10.1.0.0/16", "10.2.0.0/16", 1, (0x0800, 0x0800),
                             (0x0000, 0x0000)), "C") == []
    # any type and code: the protocol
    assert policy_rules(_pol("10.1.0.0/16", "10.2.0.0/16", 1), "C") == [
        "-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -p 1 -j DROP"]
    # IPv4 type 255 is "any type" to the icmp match: u32 on the ICMP header instead
    top = policy_rules(_pol("10.1.0.0/16", "10.2.0.0/16", 1, (0xFEFF, 0xFF03),
                            action="pass"), "C")
    assert top == [
        "-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -p 1 -m icmp --icmp-type 254/255 -j RETURN",
        '-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -p 1 -m u32 --u32 '
        '4&0x1FFF=0&&0>>22&0x3C@0>>16=0xff00:0xff03 -j RETURN']
    v6 = policy_rules(_pol("2001:db8::1/128", "2001:db8::2/128", 58, (0x8000, 0x8000),
                           mark=(5, 0xff)), "C")
    assert v6 == ["-A C -s 2001:db8::1/128 -d 2001:db8::2/128 -p 58 -m icmp6 "
                  "--icmpv6-type 128/0 -m mark --mark 0x5/0xff -j DROP"]
    # route-based: nothing (module docstring)
    assert policy_rules(_pol("0.0.0.0/0", "0.0.0.0/0", if_id=3), "C") == []


def test_transport_exemptions_only_to_local_addresses() -> None:
    rules = chain_rules("C", 4, [_pol("10.1.0.0/16", "10.2.0.0/16")], ["pluto0"], [])
    exempt = [r for r in rules if "-p esp" in r or "-p ah" in r or "--dport" in r]
    assert len(exempt) == 4
    assert all("-m addrtype --dst-type LOCAL" in r for r in exempt), exempt

