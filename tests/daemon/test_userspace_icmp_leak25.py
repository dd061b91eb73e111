"""ICMP errors about tunnelled traffic on the userspace plane's port-limited SAs (round 25).

Found (fixed): on a conn limited to a protocol or ports (``leftprotoport=udp``,
``rightprotoport=udp/5353``) the plane captured only that protocol and those ports
into its TUN device (``ip rule ... ipproto 17 dport 5353``).  An ICMP error that
west's kernel sends about a datagram that came through the SA (a port unreachable)
was routed by its own header, so it left in the clear on the physical link, with a
quote of the decrypted datagram.  XFRM sends such an error through the SA whose
selectors match the quoted packet, reversed (RFC 4301 §6.2; Linux's
``icmp_route_lookup`` with ``xfrm_decode_session_reverse``).  Now every such policy
also captures the ICMP errors towards its remote selector (IPv4 types 3, 11, 12,
ICMPv6 types 1-4: the kernel's flow of an ICMP message carries type ‖ code where a
rule's destination port is); one whose quote matches a policy goes through its SA,
and one that no policy covers (neither by its quote nor by its own header) is sent
in the clear by the plane, as XFRM sends it by the host's routing.  Echo, neighbour
discovery and other ICMP to the peer are not captured.

Found (fixed): the ``ipsecN`` devices of ``ipsec-interface=`` conns had rp_filter 2.
On a device without an IPv4 address Linux's loose mode drops, as strict mode does,
any packet whose source is not routed through the device: decrypted traffic from a
source the operator routes elsewhere (or not at all) was lost.  Now 0, as the
plane's TUN device (see ``backend._rp_filter_off``).

The lab of test_userspace_capture.py: west 192.0.2.1 (198.51.100.1) <-veth-> east
192.0.2.2 (203.0.113.1); west's outgoing frames are read with an AF_PACKET socket.
"""

from __future__ import annotations

import ipaddress
import struct
import textwrap

import pytest
from plutoproc import PY, NetNS
from test_userspace_capture import BASE, SUBNETS, child_sas, pair  # noqa: F401
from test_userspace_hostile25 import _clean, _out_plane, _row, _ts, _up

from pypluto.kernel.userspace.routes import error_rules
from pypluto.kernel.userspace.selectors import OutboundPolicies, addr_key
from pypluto.params import PolicyParams

pytestmark = pytest.mark.netns

A = ipaddress.ip_address
MARK_IN = b"MKTUNNELLEDQUOTE25"  # in the datagram that comes through the SA
MARK_OUT = b"MKCLEARQUOTE25"  # in a datagram outside the SA's selectors
STOP = "5354f9a7"  # ping -p pattern: the sniffer's last packet

# West's outgoing frames on argv[1] (ETH_P_ALL, PACKET_OUTGOING): "esp" for ESP, "clear
# <proto> <marker>" for a frame holding argv[3..] in the clear; ends with "stop" at an
# echo request holding the pattern argv[2] (sent last, so every earlier frame is read)
SNIFF = textwrap.dedent("""
    import re, select, socket, sys
    p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    p.bind((sys.argv[1], 3))
    stop, marks = bytes.fromhex(sys.argv[2]) * 4, [m.encode() for m in sys.argv[3:]]
    print("ready", flush=True)
    while True:
        r, _, _ = select.select([p], [], [], 30)
        if not r:
            sys.exit("timeout")
        frame, addr = p.recvfrom(65535)
        if addr[2] != 4 or frame[12:14] not in (b"\\x08\\x00", b"\\x86\\xdd"):
            continue  # not PACKET_OUTGOING, not IP
        ip = frame[14:]
        v6 = ip[0] >> 4 == 6
        proto = ip[6] if v6 else ip[9]
        if proto == 50:
            print("esp", flush=True)
        for m in marks:
            if m in ip:
                print("clear", proto, m.decode(), flush=True)
        if stop in ip:
            print("stop", flush=True)
            break
""")

# east: a UDP socket bound to argv[2]:argv[3], connected to argv[4]:argv[5], sends argv[6]
# and waits for the ICMP error (ECONNREFUSED)
REFUSED = textwrap.dedent("""
    import socket, sys
    fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((sys.argv[2], int(sys.argv[3])))
    u.connect((sys.argv[4], int(sys.argv[5])))
    u.settimeout(20)
    u.send(sys.argv[6].encode() * 8)
    try:
        u.recv(100)
        print("answered")
    except ConnectionRefusedError:
        print("refused")
    except socket.timeout:
        print("timeout")
""")


# --- engine level -----------------------------------------------------------------------


def test_error_rules_capture_icmp_errors_by_type_and_code() -> None:
    """type ‖ code in the rule's dport: IPv4 3 (768-1023), 11 and 12 (2816-3327), ICMPv6
    1 to 4 (256-1279); an ICMP policy's own rule takes all of ICMP already."""
    assert error_rules(4, ("ipproto", "17", "dport", "5353")) == (
        ("ipproto", "1", "dport", "768-1023"), ("ipproto", "1", "dport", "2816-3327"))
    assert error_rules(6, ("ipproto", "6")) == (("ipproto", "58", "dport", "256-1279"),)
    assert error_rules(4, ("ipproto", "1")) == () and error_rules(6, ("ipproto", "58")) == ()
    echo, unreach, ptb, ns = (8 << 8), (3 << 8) | 3, (2 << 8), (135 << 8)
    assert 768 <= unreach <= 1023 and not 768 <= echo <= 1023 and not 2816 <= echo <= 3327
    assert 256 <= ptb <= 1279 and not 256 <= ns <= 1279 and not 256 <= (128 << 8) <= 1279


def _err4(src: str, dst: str, quote: bytes) -> bytes:
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quote
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                       A(src).packed, A(dst).packed) + icmp


def _udp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4sHHHH", 0x45, 0, 36, 2, 0, 64, 17, 0, A(src).packed,
                       A(dst).packed, sport, dport, 16, 0) + MARK_IN[:8]


class _Sock:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append((data, addr))
        return len(data)


def test_an_error_no_policy_covers_is_sent_in_the_clear_not_dropped() -> None:
    """West's policy udp -> 192.0.2.2 udp/5353.  An error about east's datagram from
    port 5353 goes through the SA; one about a datagram from port 6000 (outside every
    selector) leaves by the marked raw socket (the host's routing), counted as sent in
    the clear, not as a drop.  With an all-protocol policy to east as well, that error
    goes through its SA, and one about another host's packet (sent to east) is covered
    by its own header but its quote names no SA: dropped, as before
    (test_userspace_icmp_check; XFRM's forward lookup would use the wide SA)."""
    plane, ent = _out_plane()
    sock = _Sock()
    plane._clear_out = {4: sock}  # type: ignore[attr-defined]
    inside = _err4("192.0.2.1", "192.0.2.2", _udp4("192.0.2.2", "192.0.2.1", 5353, 40000))
    outside = _err4("192.0.2.1", "192.0.2.2", _udp4("192.0.2.2", "192.0.2.1", 6000, 40001))
    assert plane._resolve(inside, addr_key(inside)) is ent and sock.sent == []
    got = plane._resolve(outside, addr_key(outside))
    plane.counters.no_policy += got is None  # as the TUN drains count
    assert sock.sent == [(outside, ("192.0.2.2", 0))]
    assert (plane.counters.clear_errors, plane.counters.no_policy) == (1, 0)
    wide = PolicyParams(_ts("192.0.2.1/32"), _ts("192.0.2.2/32"), "out", reqid=8,
                        tmpl_src=A("192.0.2.1"), tmpl_dst=A("192.0.2.2"))
    plane._out = OutboundPolicies([*plane._out.policies, wide])  # type: ignore[attr-defined]
    assert plane._resolve(outside, addr_key(outside)) is ent  # its quote is wide's now
    odd = _err4("192.0.2.1", "192.0.2.2", _udp4("192.0.2.9", "192.0.2.1", 5353, 40000))
    got = plane._resolve(odd, addr_key(odd))
    plane.counters.no_policy += got is None
    assert len(sock.sent) == 1 and (plane.counters.clear_errors, plane.counters.no_policy) \
        == (1, 1)


# --- daemons ----------------------------------------------------------------------------


PORTS = "\tleftprotoport=udp\n\trightprotoport=udp/5353\n"


def _sniffer(pair, vw: str):  # noqa: ANN001, ANN202, F811
    _start, spawn, w_ns, _e_ns, _vw = pair
    s = spawn(w_ns, PY, "-c", SNIFF, vw, STOP, MARK_IN.decode(), MARK_OUT.decode())
    assert s.stdout.readline().strip() == b"ready"
    return s


def _refused(ns: NetNS, v: str, src: str, sport: int, dst: str, dport: int,
             mark: bytes) -> str:
    return ns.run(PY, "-c", REFUSED, v, src, str(sport), dst, str(dport), mark.decode(),
                  check=False).stdout.strip()


def _leftover_rules(ns: NetNS) -> str:
    return "\n".join(ln for v in ("-4", "-6") for ln in ns.run("ip", v, "rule").stdout
                     .splitlines() if "lookup 70036" in ln or "lookup 4500" in ln)


@pytest.mark.parametrize("v", ["4", "6"])
def test_an_error_about_tunnelled_traffic_goes_through_the_sa(pair, v: str) -> None:  # noqa: F811
    """East sends a datagram from udp/5353 through the SA to a closed port of west: west's
    Port Unreachable (quoting it) goes through the SA, never in the clear (before: in
    the clear, with the marker of the decrypted datagram on the wire); east's socket
    gets ECONNREFUSED from the decrypted error.  A datagram from port 6000 (in the
    clear: outside the selectors) gets its Port Unreachable in the clear, as with XFRM.
    West's ping to east's address stays cleartext and answered (and IPv6 neighbour
    discovery works: no ESP, no loss)."""
    start, spawn, w_ns, e_ns, vw = pair
    west_a, east_a = ("192.0.2.1", "192.0.2.2") if v == "4" else ("2001:db8::1", "2001:db8::2")
    conf = BASE + PORTS
    if v == "6":
        conf = conf.replace("=192.0.2.1\n", "=2001:db8::1\n").replace("=192.0.2.2\n",
                                                                    "=2001:db8::2\n")
    west, east = _up(pair, extra="", base=conf)
    rules = w_ns.run("ip", f"-{v}", "rule").stdout
    assert "dport 768-1023" in rules if v == "4" else "dport 256-1279" in rules, rules
    sniff = _sniffer(pair, vw)
    assert _refused(e_ns, v, east_a, 5353, west_a, 40000, MARK_IN) == "refused"
    assert _refused(e_ns, v, east_a, 6000, west_a, 40001, MARK_OUT) == "refused"
    ping = w_ns.run("ping", f"-{v}", "-c", "1", "-W", "5", "-p", STOP, east_a, check=False)
    assert ping.returncode == 0, ping.stdout + west.log()
    out, err = sniff.communicate(timeout=30)
    seen = out.decode().split("\n")
    proto = "1" if v == "4" else "58"
    assert seen == ["esp", f"clear {proto} {MARK_OUT.decode()}", "stop", ""], (seen, err)
    w, e = _row(west), _row(east)
    assert w["out_packets"] == 1 and e["in_packets"] == 1, (w, e)  # the one error
    assert e["selector_drops"] == 0 and w["selector_drops"] == 0, (w, e)
    _clean(west, east)
    r = west.whack("--name", "west-east", "--delete")  # its rules go with its policies
    assert r.returncode == 0 and _leftover_rules(w_ns) == "", r.stdout


def test_ipsec_interface_without_ipv4_address_has_rp_filter_off(pair) -> None:  # noqa: F811
    """``ipsec-interface=7`` without interface-ip=: east routes west's subnet onto its
    ipsec7, west routes nothing back onto its own (the operator's choice: a one-way
    feed).  East's datagram from 203.0.113.1 comes out of west's ipsec7, which has no
    IPv4 address: with rp_filter 2 west's kernel dropped it (no route back through the
    device, and no address: the strict "last resort"), with 0 it is delivered."""
    start, spawn, w_ns, e_ns, vw = pair
    west, east = _up(pair, extra="\tipsec-interface=7\n")
    assert w_ns.run("cat", "/proc/sys/net/ipv4/conf/ipsec7/rp_filter").stdout.strip() == "0"
    e_ns.run("ip", "route", "add", "198.51.100.0/24", "dev", "ipsec7", "src", "203.0.113.1")
    rcv = spawn(w_ns, PY, "-c", RECV, "198.51.100.1", "5300")
    assert rcv.stdout.readline().strip() == b"ready"
    e_ns.run(PY, "-c", SEND1, "203.0.113.1", "198.51.100.1", "5300", MARK_IN.decode())
    out, _err = rcv.communicate(timeout=30)
    assert out.decode().strip() == MARK_IN.decode(), (out, _row(west), west.log())
    assert _row(west)["in_packets"] == 1
    _clean(west, east)


RECV = textwrap.dedent("""
    import socket, sys
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((sys.argv[1], int(sys.argv[2])))
    u.settimeout(20)
    print("ready", flush=True)
    try:
        print(u.recv(100).decode())
    except socket.timeout:
        print("timeout")
""")

SEND1 = textwrap.dedent("""
    import socket, sys
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((sys.argv[1], 0))
    u.sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
""")
