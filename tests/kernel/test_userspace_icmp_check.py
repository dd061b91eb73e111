"""ICMP error messages through the userspace plane's SAs (RFC 4301 §6.2, red-team round).

An ICMP or ICMPv6 error quotes the packet that caused it.  A peer allowed only its
own subnet must not use its SA to deliver errors about other flows (a Packet Too
Big or an Unreachable "from" a host it may not speak for, about a connection that
does not cross this SA): after decryption the quoted packet, reversed (it is one we
sent, so its source is on our side), must lie inside the SA's selectors, else the
error is dropped and counted (``selector_drops``).  An error whose quote is too
short to read is dropped the same way.  The other way, RFC 4301 §6.2: an error read
from the TUN device goes through the SA that carries the return traffic of the
packet it quotes, and an error whose own header is outside the SA's selectors (a
router's address, ICMP on a port-limited SA) is admitted by its quote alone.

Pure unit tests on byte strings, real ESP SAs (both decap paths) and a backend
object without its TUN device (socket pairs stand in for the device's queues).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

import pytest

from pypluto.crypto.registry import Encr
from pypluto.kernel import esp
from pypluto.kernel.userspace import offload, selectors
from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.kernel.userspace.selectors import OutboundPolicies, inbound_check
from pypluto.kernel.userspace.traps import HoldQueue
from pypluto.params import PolicyParams, SAParams, TrafficSelector

A = ipaddress.ip_address
N = ipaddress.ip_network
PEER, ME = A("192.0.2.2"), A("192.0.2.1")
L_NET, R_NET = "203.0.113.0/24", "198.51.100.0/24"  # our protected subnet, the peer's
L6_NET, R6_NET = "2001:db8:2::/48", "2001:db8:1::/48"
HOST, FAR = "203.0.113.9", "198.51.100.7"  # a host of ours, one behind the peer
ROUTER = "198.51.100.1"  # a router behind the peer
OTHER = "192.0.2.77"  # a host behind no selector of this SA
HOST6, FAR6, ROUTER6 = "2001:db8:2::9", "2001:db8:1::7", "2001:db8:1::1"
KEY = bytes(range(1, 21))  # AES-GCM-16 key (16) and salt (4)


def ts(net: str, proto: int = 0, lo: int = 0, hi: int = 65535) -> TrafficSelector:
    return TrafficSelector(N(net), proto, lo, hi)


def ipv4(src: str, dst: str, proto: int, l4: bytes, *, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 7, frag, 64, proto, 0,
                       A(src).packed, A(dst).packed) + l4


def ipv6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, A(src).packed,
                       A(dst).packed) + payload


def udp(sp: int, dp: int) -> bytes:
    return struct.pack("!HHHH", sp, dp, 12, 0) + b"data"


def tcp(sp: int, dp: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 0x50, 0x10, 1024, 0, 0)


def icmp_err(t: int, c: int, quote: bytes, rest: int = 0) -> bytes:
    """An ICMP / ICMPv6 error: type, code, checksum 0, the 4-byte field, the quote."""
    return struct.pack("!BBHI", t, c, 0, rest) + quote


def err4(src: str, dst: str, quote: bytes, t: int = 3, c: int = 3, frag: int = 0) -> bytes:
    return ipv4(src, dst, 1, icmp_err(t, c, quote), frag=frag)


def ptb6(src: str, dst: str, quote: bytes, nh: int = 58, ext: bytes = b"") -> bytes:
    """ICMPv6 Packet Too Big (RFC 4443 §3.2, MTU 1280), behind ``ext`` if given."""
    return ipv6(src, dst, nh, ext + icmp_err(2, 0, quote, 1280))


# --- real ESP SAs: the check sits in both decap paths ------------------------------------


def sa_pair(local: list[TrafficSelector], remote: list[TrafficSelector]
            ) -> tuple[esp.OutboundSA, esp.InboundSA]:
    common: dict[str, Any] = dict(encr_id=Encr.AES_GCM_16, encr_key=KEY, replay_window=64)
    out = esp.make_sa(SAParams(src=PEER, dst=ME, spi=0x3000, direction="out", **common))
    p = SAParams(src=PEER, dst=ME, spi=0x3000, direction="in", local_ts=local,
                 remote_ts=remote, **common)
    inb = esp.make_sa(p)
    assert isinstance(out, esp.OutboundSA) and isinstance(inb, esp.InboundSA)
    inb.selector_check = inbound_check(p)
    return out, inb


def wire(out: esp.OutboundSA, inner: bytes) -> bytes:
    w = out.encap(inner)
    assert w is not None
    return w


def one(inb: esp.InboundSA, w: bytes) -> bytes | None:
    return inb.decap(w)


def batched(inb: esp.InboundSA, w: bytes) -> bytes | None:
    got = inb.decap_batch([memoryview(w)])
    return got[0] if got else None


Decap = Callable[[esp.InboundSA, bytes], "bytes | None"]
PATHS = pytest.mark.parametrize("path", [one, batched], ids=["decap", "decap_batch"])


def delivered(out: esp.OutboundSA, inb: esp.InboundSA, path: Decap, inner: bytes) -> bool:
    got = path(inb, wire(out, inner))
    assert got is None or got == inner
    return got is not None


@PATHS
def test_an_error_quoting_a_flow_of_another_subnet_is_dropped_and_counted(path: Decap) -> None:
    """The peer may speak for 198.51.100.0/24 only.  An Unreachable about our packet to
    a host there is delivered; the same error (same addresses, type, code and checksum,
    so the same key in the check's cache) about our packet to 192.0.2.77, or about a
    packet "from" a host outside our subnet, is not, however the first was cached."""
    out, inb = sa_pair([ts(L_NET)], [ts(R_NET)])
    good = err4(ROUTER, HOST, ipv4(HOST, FAR, 17, udp(40000, 53)))
    assert delivered(out, inb, path, good)
    assert delivered(out, inb, path, good)  # the cached verdict stays right
    for quote in (ipv4(HOST, OTHER, 17, udp(40000, 53)),  # to another subnet
                  ipv4("10.9.9.9", FAR, 17, udp(40000, 53)),  # from outside ours
                  ipv4(FAR, HOST, 17, udp(53, 40000))):  # not reversed: the peer's packet
        assert not delivered(out, inb, path, err4(ROUTER, HOST, quote))
    assert inb.stats.selector_drops == 3 and inb.stats.packets == 2
    # other ICMP, and the traffic itself, as before
    assert delivered(out, inb, path, ipv4(FAR, HOST, 1, icmp_err(0, 0, b"pong")))
    assert delivered(out, inb, path, ipv4(FAR, HOST, 17, udp(53, 40000)))
    assert not delivered(out, inb, path, ipv4(OTHER, HOST, 17, udp(53, 40000)))


@PATHS
def test_a_port_limited_sa_checks_the_quoted_ports(path: Decap) -> None:
    """Selectors 198.51.100.0/24 TCP port 80 plus ICMP (two remote selectors, RFC 7296
    §2.9): an error about our connection to port 80 is delivered, one about a connection
    to port 22 (not this SA's traffic) is dropped; so is one whose quote has no ports."""
    out, inb = sa_pair([ts(L_NET)], [ts(R_NET, 6, 80, 80), ts(R_NET, 1)])
    assert delivered(out, inb, path, err4(ROUTER, HOST, ipv4(HOST, FAR, 6, tcp(40000, 80))))
    assert not delivered(out, inb, path, err4(ROUTER, HOST, ipv4(HOST, FAR, 6, tcp(40000, 22))))
    assert not delivered(out, inb, path, err4(ROUTER, HOST, ipv4(HOST, FAR, 17, udp(40000, 80))))
    no_ports = ipv4(HOST, FAR, 6, b"")  # the quote ends after its IP header: OPAQUE ports
    assert not delivered(out, inb, path, err4(ROUTER, HOST, no_ports))
    assert inb.stats.selector_drops == 3


@PATHS
def test_an_error_outside_the_selectors_is_admitted_by_its_quote(path: Decap) -> None:
    """RFC 4301 §6.2: TCP port 80 only, no ICMP in the selectors.  A Fragmentation
    Needed from a router behind the peer about our port-80 segment is the SA's traffic
    (PMTU discovery needs it); dropped before.  Not so an error about port 22, nor one
    addressed to another host than the quoted packet's source."""
    out, inb = sa_pair([ts(L_NET)], [ts(R_NET, 6, 80, 80)])
    ours = ipv4(HOST, FAR, 6, tcp(40000, 80))
    assert delivered(out, inb, path, err4(ROUTER, HOST, ours, c=4))
    assert delivered(out, inb, path, err4("192.0.2.200", HOST, ours, t=11, c=0))
    assert not delivered(out, inb, path, err4(ROUTER, HOST, ipv4(HOST, FAR, 6, tcp(40000, 22))))
    assert not delivered(out, inb, path, err4(ROUTER, "203.0.113.10", ours))
    assert not delivered(out, inb, path, err4(ROUTER, HOST, ours, t=8, c=0))  # not an error
    assert inb.stats.selector_drops == 3 and inb.stats.packets == 2


@PATHS
def test_errors_with_truncated_quotes_are_dropped_without_raising(path: Decap) -> None:
    """A quote too short to hold its IP header, with a header length that lies, of the
    other IP version, or an ICMP header alone in a first fragment (the quote would
    follow in the next one, RFC 1858 style): none can be matched, all are dropped.
    An any-port SA still takes a quote that ends after its IP header."""
    out, inb = sa_pair([ts(L_NET)], [ts(R_NET)])
    full = ipv4(HOST, FAR, 17, udp(40000, 53))
    bad = [err4(ROUTER, HOST, full[:n]) for n in (0, 1, 10, 19)]
    bad.append(ipv4(ROUTER, HOST, 1, bytes((3, 3, 0, 0))))  # the ICMP header cut
    bad.append(err4(ROUTER, HOST, bytes([0x4F]) + full[1:20]))  # IHL 60 in 20 bytes
    bad.append(err4(ROUTER, HOST, bytes([0x40]) + full[1:]))  # IHL 0
    bad.append(err4(ROUTER, HOST, ipv6(HOST6, FAR6, 17, udp(1, 2))))  # IPv6 in ICMPv4
    bad.append(err4(ROUTER, HOST, b"", frag=0x2000))  # first fragment, no quote in it
    for pkt in bad:
        assert not delivered(out, inb, path, pkt)
    assert inb.stats.selector_drops == len(bad) and inb.stats.packets == 0
    assert delivered(out, inb, path, err4(ROUTER, HOST, full[:20]))
    # a later fragment carries no ICMP header: its addresses are checked, as any fragment's
    assert delivered(out, inb, path, err4(ROUTER, HOST, b"", frag=0x0003))


@PATHS
def test_icmpv6_packet_too_big_is_checked_by_its_quote(path: Decap) -> None:
    """IPv6: a Packet Too Big about our packet to the peer's subnet is delivered; about
    one to another network, with a cut quote, or hidden behind a destination options
    header or a long chain of them (the host's stack walks those too), it is not."""
    out, inb = sa_pair([ts(L6_NET)], [ts(R6_NET)])
    ours = ipv6(HOST6, FAR6, 17, udp(40000, 53))
    assert delivered(out, inb, path, ptb6(ROUTER6, HOST6, ours))
    dst_opts = bytes((58, 0, 1, 4, 0, 0, 0, 0))  # next header ICMPv6, PadN
    assert delivered(out, inb, path, ptb6(ROUTER6, HOST6, ours, nh=60, ext=dst_opts))
    theirs = ipv6(HOST6, "2001:db8:99::7", 17, udp(40000, 53))
    chain = b"".join(bytes((60 if i < 8 else 58, 0)) + bytes(6) for i in range(9))
    bad = [ptb6(ROUTER6, HOST6, theirs),
           ptb6(ROUTER6, HOST6, theirs, nh=60, ext=dst_opts),
           ptb6(ROUTER6, HOST6, ours[:39]),
           ptb6(ROUTER6, HOST6, ipv4(HOST, FAR, 17, udp(1, 2))),
           ptb6(ROUTER6, HOST6, theirs, nh=60, ext=chain)]
    for pkt in bad:
        assert not delivered(out, inb, path, pkt)
    assert inb.stats.selector_drops == len(bad) and inb.stats.packets == 2
    # port-limited (UDP 53 only): the quote's ports decide, the outer header is ICMPv6
    out, inb = sa_pair([ts(L6_NET)], [ts(R6_NET, 17, 53, 53)])
    assert delivered(out, inb, path, ptb6(ROUTER6, HOST6, ours))
    assert not delivered(out, inb, path,
                         ptb6(ROUTER6, HOST6, ipv6(HOST6, FAR6, 17, udp(40000, 5353))))


def test_icmp_error_quote_parses_only_errors() -> None:
    icmp_error_quote = selectors.icmp_error_quote
    q = ipv4(HOST, FAR, 6, tcp(40000, 80))
    err, f = icmp_error_quote(err4(ROUTER, HOST, q))
    assert err and f is not None and (str(f.src), str(f.dst), f.sport, f.dport) == (
        HOST, FAR, 40000, 80)
    assert icmp_error_quote(ipv4(FAR, HOST, 1, icmp_err(8, 0, q))) == (False, None)  # echo
    assert icmp_error_quote(ipv4(FAR, HOST, 6, tcp(1, 2))) == (False, None)
    assert icmp_error_quote(err4(ROUTER, HOST, q[:12])) == (True, None)
    assert icmp_error_quote(b"\x45" * 19) == (False, None)
    err, f = icmp_error_quote(ptb6(ROUTER6, HOST6, ipv6(HOST6, FAR6, 58, icmp_err(128, 0, b""))))
    assert err and f is not None and f.proto == 58 and f.sport == 128 << 8
    assert icmp_error_quote(ipv6(FAR6, HOST6, 58, icmp_err(129, 0, b"pong"))) == (False, None)


# --- outbound: the SA of the quoted packet's return traffic (RFC 4301 §6.2) -------------


def pol(src: TrafficSelector, dst: TrafficSelector, reqid: int) -> PolicyParams:
    return PolicyParams(src=src, dst=dst, direction="out", reqid=reqid, tmpl_src=ME,
                        tmpl_dst=PEER)


P1 = pol(ts(L_NET), ts(R_NET), 1)  # our subnet <-> the peer's
P2 = pol(ts(L_NET), ts("10.2.0.0/16"), 2)  # our subnet <-> another peer's
P3 = pol(ts("203.0.114.0/24", 6, 80, 80), ts(R_NET, 6), 3)  # a web server, TCP only
P6 = pol(ts(L6_NET), ts(R6_NET), 6)


def test_outbound_lookup_maps_an_error_to_the_sa_of_the_quoted_flow() -> None:
    spd = OutboundPolicies([P1, P2, P3, P6])

    def reqid(pkt: bytes) -> int | None:
        found = spd.lookup(pkt)
        return None if found is None else found[0].reqid

    back = ipv4(FAR, HOST, 17, udp(53, 40000))  # a packet that came in on P1's SA
    assert reqid(err4(HOST, FAR, back)) == 1
    found = spd.lookup(err4(HOST, FAR, back))
    assert found is not None and found[1] is False  # never cached by addresses
    # the same error "about" a packet of P2's flow, sent towards P1's peer: no SA carries it
    assert reqid(err4(HOST, FAR, ipv4("10.2.0.5", HOST, 17, udp(53, 40000)))) is None
    assert reqid(err4(HOST, "10.2.0.5", back)) is None  # not sent to the quote's source
    assert reqid(err4(HOST, FAR, back[:19])) is None  # no readable quote
    # a router of ours (outside every selector) about P1's traffic: P1's SA, as §6.2 says
    assert reqid(err4("192.168.1.1", FAR, back, t=11, c=0)) == 1
    # the web server's Port Unreachable for a TCP segment: ICMP is not in P3, its quote is
    web = ipv4(FAR, "203.0.114.5", 6, tcp(40000, 80))
    assert reqid(err4("203.0.114.5", FAR, web)) == 3
    assert reqid(err4("203.0.114.5", FAR, ipv4(FAR, "203.0.114.5", 6, tcp(40000, 22)))) is None
    assert reqid(ptb6(HOST6, FAR6, ipv6(FAR6, HOST6, 17, udp(53, 40000)))) == 6
    assert reqid(ptb6(HOST6, FAR6, ipv6("2001:db8:99::7", HOST6, 17, udp(53, 40000)))) is None
    # anything else as before
    assert reqid(ipv4(HOST, FAR, 1, icmp_err(8, 0, b"ping"))) == 1
    assert reqid(ipv4(HOST, "10.2.0.5", 17, udp(1, 2))) == 2


class _Raw:
    """Stands in for the raw ESP socket: records (SPI, wire) of each send."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> int:
        self.sent.append(struct.unpack_from("!I", data)[0])
        return len(data)


def tun_plane(vnet: bool, fd: int) -> tuple[Any, _Raw]:
    """A backend object with the outbound SPD and two outbound SAs (P1: SPI 0x101,
    P2: SPI 0x102), reading ``fd`` as its TUN device; sends go to a fake raw socket."""
    plane: Any = object.__new__(UserspaceBackend)
    plane.counters = PlaneCounters()
    plane._tun_read = 16384
    plane._tun_fd = plane._tun_prio = fd
    plane._flow, plane._pflow = {}, {}
    plane._out = OutboundPolicies([P1, P2])
    plane._sas = SATable()
    for p, spi in ((P1, 0x101), (P2, 0x102)):
        plane._sas.add(SAParams(src=ME, dst=PEER, spi=spi, direction="out", reqid=p.reqid,
                                encr_id=Encr.AES_GCM_16, encr_key=KEY), None, None)
    raw = _Raw()
    plane._raw = {4: raw}
    plane._send_many = lambda ent, wires: [raw.sendto(w, ent[2]) for w in wires]
    plane.offload = vnet
    plane._sparse_until = 0.0
    plane._txq = None
    return plane, raw


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "virtio_net_hdr"])
def test_a_tun_error_does_not_ride_on_the_cached_flow_of_its_addresses(vnet: bool) -> None:
    """Our UDP packet to the peer's host caches the flow 203.0.113.9 -> 198.51.100.7 (P1's
    SA).  An ICMP error between the same addresses quoting a packet of P2's flow must not
    leave on P1's SA by that cache: it is dropped (counted as no policy); a proper error
    about P1's traffic still leaves on P1's SA, and P2's traffic on P2's."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    plane, raw = tun_plane(vnet, b.fileno())
    head = offload.HDR_DATA_VALID if vnet else b""
    pkts = [ipv4(HOST, FAR, 17, udp(40000, 53)),
            err4(HOST, FAR, ipv4("10.2.0.5", HOST, 17, udp(53, 40000))),
            err4(HOST, FAR, ipv4(FAR, HOST, 17, udp(53, 40000))),
            err4(HOST, FAR, ipv4(FAR, HOST, 17, udp(53, 40000))[:12]),
            ipv4(HOST, "10.2.0.5", 17, udp(40000, 53))]
    try:
        for p in pkts:
            a.send(head + p)
        plane._drain_tun(64)
    finally:
        a.close()
        b.close()
    assert raw.sent == [0x101, 0x101, 0x102]
    assert plane.counters.no_policy == 2
    assert list(plane._pflow) == []  # no error was cached by its ports either


def test_an_error_for_a_trapped_flow_raises_no_acquire() -> None:
    """RFC 4301 §6.2: "If no such SA exists, no SA will be created": an ICMP error whose
    quoted flow has only a trap (auto=route, no SA yet) is dropped and counted, neither
    held nor negotiated; the flow's own first packet still raises the acquire."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    plane, raw = tun_plane(False, b.fileno())
    plane._sas = SATable()  # the policies stay, their SAs are not there yet
    plane.holds = HoldQueue()
    acquires: list[object] = []
    plane.on_acquire = acquires.append
    try:
        a.send(err4(HOST, FAR, ipv4(FAR, HOST, 17, udp(53, 40000))))
        plane._drain_tun(64)
        assert (acquires, len(plane.holds), plane.counters.no_policy) == ([], 0, 1)
        a.send(ipv4(HOST, FAR, 17, udp(40000, 53)))
        plane._drain_tun(64)
    finally:
        a.close()
        b.close()
    assert len(acquires) == 1 and len(plane.holds) == 1 and raw.sent == []
