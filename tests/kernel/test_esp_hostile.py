"""Hostile packets against the userspace data plane (red-team regressions).

Every packet here is one a peer or an on-path attacker can send: authenticated
packets whose plaintext lies (a peer holding the keys), and unauthenticated
datagrams on the ESP-in-UDP socket.  What must happen: drop and count (RFC 4303
§3.4, RFC 4301 §5.2, RFC 3948 §2.2-2.3), never raise, never hand an unchecked
inner packet to the TUN device, no state that grows per packet.

Pure unit tests on :class:`esp.InboundSA`, :class:`ah.InboundAH`, the selector
check and the backend's per-datagram paths (a backend object without its TUN
device, as tests/kernel/test_userspace_rxqueue.py builds one): no namespaces.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
from collections.abc import Callable

import pytest

from pypluto.crypto.registry import Encr, Integ
from pypluto.kernel import ah, esp
from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.kernel.userspace.selectors import inbound_check
from pypluto.params import SAParams, TrafficSelector

A = ipaddress.ip_address
N = ipaddress.ip_network
PEER, ME = A("192.0.2.2"), A("192.0.2.1")
R_NET, L_NET = "198.51.100.0/24", "203.0.113.0/24"  # remote and local protected subnets
SPI = 0x2000

# (encr, key bytes incl. salt, integ, integ key bytes): the AES-GCM fast path, ChaCha20
# (fast path too), AES-CBC + HMAC (generic, block 16), AES-CCM (shared AEAD), NULL + HMAC
ALGS = [
    (Encr.AES_GCM_16, 20, 0, 0),
    (Encr.CHACHA20_POLY1305, 36, 0, 0),
    (Encr.AES_CBC, 16, Integ.HMAC_SHA2_256_128, 32),
    (Encr.AES_CCM_16, 19, 0, 0),
    (Encr.NULL, 0, Integ.HMAC_SHA1_96, 20),
]
ALG_IDS = ["gcm", "chacha", "cbc", "ccm", "null"]


def ts(net: str, proto: int = 0, lo: int = 0, hi: int = 65535) -> TrafficSelector:
    return TrafficSelector(N(net), proto, lo, hi)


def ipv4(src: str = "198.51.100.7", dst: str = "203.0.113.9", proto: int = 17,
         l4: bytes = b"\x04\xd2\x00\x35\x00\x0a\x00\x00hi", *, b0: int = 0x45,
         tl: int | None = None, frag: int = 0) -> bytes:
    """An IPv4 packet; ``b0`` (version ‖ IHL) and ``tl`` (Total Length) may lie."""
    ihl = max(5, b0 & 0x0F) * 4
    opts = bytes(ihl - 20)
    n = 20 + len(opts) + len(l4) if tl is None else tl
    return struct.pack("!BBHHHBBH4s4s", b0, 0, n, 7, frag, 64, proto, 0, A(src).packed,
                       A(dst).packed) + opts + l4


def ipv6(src: str = "2001:db8:1::7", dst: str = "2001:db8:2::9", nh: int = 17,
         payload: bytes = b"\x04\xd2\x00\x35\x00\x0a\x00\x00hi") -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, A(src).packed,
                       A(dst).packed) + payload


def params(alg: tuple[int, int, int, int], direction: str, *, esn: bool = False,
           window: int = 64, mode: str = "tunnel", key: bytes = b"", ikey: bytes = b"",
           **kw: object) -> SAParams:
    encr, klen, integ, ilen = alg
    return SAParams(src=PEER, dst=ME, spi=SPI, direction=direction, mode=mode,  # type: ignore[arg-type]
                    encr_id=encr, encr_key=key or bytes(range(1, klen + 1)), integ_id=integ,
                    integ_key=ikey or bytes(range(50, 50 + ilen)), esn=esn,
                    replay_window=window, **kw)  # type: ignore[arg-type]


def inbound(alg: tuple[int, int, int, int] = ALGS[0], **kw: object) -> esp.InboundSA:
    sa = esp.make_sa(params(alg, "in", **kw))  # type: ignore[arg-type]
    assert isinstance(sa, esp.InboundSA)
    return sa


def outbound(alg: tuple[int, int, int, int] = ALGS[0], **kw: object) -> esp.OutboundSA:
    sa = esp.make_sa(params(alg, "out", **kw))  # type: ignore[arg-type]
    assert isinstance(sa, esp.OutboundSA)
    return sa


def seal(out: esp.OutboundSA, seq: int, plain: bytes) -> bytes:
    """An ESP packet carrying exactly ``plain`` (inner packet ‖ padding ‖ pad length ‖ next
    header, as a peer holding the keys may build it), sealed with the SA's real keys."""
    t = out.t
    lo = seq & 0xFFFFFFFF
    hdr = struct.pack("!II", out.spi, lo)
    if out.esn:
        hi = struct.pack("!I", seq >> 32)
        if isinstance(t, esp._EncThenMAC):
            return hdr + t.seal(seq, hdr, hi, plain)
        return hdr + t.seal(seq, hdr[:4] + hi + hdr[4:], b"", plain)
    return hdr + t.seal(seq, hdr, b"", plain)


def trailer(n: int, block: int, nh: int) -> bytes:
    """RFC 4303 §2.4 default padding (1, 2, 3, ...) ‖ pad length ‖ next header."""
    p = (-(n + 2)) % block
    return bytes(range(1, p + 1)) + bytes((p, nh))


def framed(out: esp.OutboundSA, inner: bytes, nh: int = 4) -> bytes:
    return inner + trailer(len(inner), out.t.block, nh)


Decap = Callable[[esp.InboundSA, bytes], "bytes | None"]


def one(inb: esp.InboundSA, w: bytes) -> bytes | None:
    return inb.decap(w)


def batched(inb: esp.InboundSA, w: bytes) -> bytes | None:
    got = inb.decap_batch([memoryview(w)])
    assert len(got) <= 1
    return got[0] if got else None


PATHS = [one, batched]
PATH_IDS = ["decap", "decap_batch"]


# --- the inner packet lies about its own header (tunnel mode) ---------------------------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
@pytest.mark.parametrize("b0, tl", [
    (0x40, None),  # IHL 0
    (0x44, None),  # IHL 4: the header would end inside the addresses
    (0x4F, 30),  # IHL 15 (60 bytes) in a 30-byte packet
    (0x46, 22),  # IHL 6 (24 bytes): Total Length 22 ends inside the header (a "TFC" cut)
], ids=["ihl0", "ihl4", "ihl15-short", "tl-inside-header"])
def test_inner_ipv4_header_length_must_fit(alg: tuple[int, int, int, int], path: Decap,
                                           b0: int, tl: int | None) -> None:
    """An authenticated tunnel-mode packet whose inner IPv4 header has IHL < 5, or a
    header longer than its Total Length, is no IPv4 packet (RFC 791 §3.1): dropped and
    counted as malformed, not written to the TUN device (RFC 4303 §3.4.4.1: the inner
    packet is checked before it is delivered)."""
    out, inb = outbound(alg), inbound(alg)
    good = ipv4(l4=b"x" * 10)
    assert path(inb, seal(out, 1, framed(out, good))) == good
    bad = bytearray(ipv4(l4=b"x" * 10))
    bad[0] = b0
    if tl is not None:
        bad[2:4] = struct.pack("!H", tl)
    bad = bytes(bad)
    assert path(inb, seal(out, 2, framed(out, bad))) is None
    assert inb.malformed == 1 and inb.stats.packets == 1
    assert path(inb, seal(out, 3, framed(out, good))) == good  # the SA carries on


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("any_ports", [True, False], ids=["any-selectors", "port-selectors"])
def test_a_cached_selector_verdict_does_not_pass_a_broken_inner_header(
        path: Decap, any_ports: bool) -> None:
    """The inbound selector check (RFC 4301 §5.2 step 4) caches its verdict by addresses
    (and protocol and first L4 bytes): a packet with a broken IPv4 header from an address
    pair already seen must not ride on that verdict to the TUN device."""
    out, inb = outbound(), inbound()
    remote = ts(R_NET) if any_ports else ts(R_NET, 17, 1234, 1234)
    sa = dataclasses.replace(inb.params, remote_ts=[remote], local_ts=[ts(L_NET)])
    inb.selector_check = inbound_check(sa)
    good = ipv4()
    assert path(inb, seal(out, 1, framed(out, good))) == good
    bad = bytes([0x40 | 0]) + good[1:]  # IHL 0, everything else as before
    assert path(inb, seal(out, 2, framed(out, bad))) is None
    assert inb.stats.packets == 1


def test_ah_tunnel_inner_header_must_fit() -> None:
    """AH tunnel mode (RFC 4302 §3.1.2): the inner packet is what follows AH; one whose
    IPv4 header is shorter than 20 bytes, or whose Total Length is not what is there,
    is dropped and counted, not delivered."""
    common = dict(protocol="ah", mode="tunnel", integ_id=Integ.HMAC_SHA2_256_128,
                  integ_key=os.urandom(32), replay_window=32)
    out = ah.make_sa(SAParams(PEER, ME, 0x1001, "out", **common))  # type: ignore[arg-type]
    inb = ah.make_sa(SAParams(PEER, ME, 0x1001, "in", **common))  # type: ignore[arg-type]
    assert isinstance(out, ah.OutboundAH) and isinstance(inb, ah.InboundAH)
    good = ipv4()
    assert inb.decap(out.encap(good) or b"") == good
    ihl0 = bytes([0x40]) + good[1:]
    longer = good[:2] + struct.pack("!H", len(good) + 8) + good[4:]
    for bad in (ihl0, longer):
        w = out.encap(bad)
        assert w is not None
        assert inb.decap(w) is None
    assert inb.malformed == 2 and inb.stats.packets == 1
    assert inb.decap(out.encap(good) or b"") == good


# --- already correct: trailers, next header, lengths (RFC 4303 §2.4-2.7, §3.4.4.1) ------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
def test_lying_trailers_and_inner_packets_are_dropped(alg: tuple[int, int, int, int],
                                                      path: Decap) -> None:
    out, inb = outbound(alg), inbound(alg)
    blk = out.t.block
    p4, p6 = ipv4(l4=b"y" * 12), ipv6()
    cases = [
        bytes(blk - 2) + bytes((200, 4)),  # pad length beyond the payload
        p4 + bytes(range(2, 2 + ((-(len(p4) + 2)) % blk or blk))) + bytes(
            ((-(len(p4) + 2)) % blk or blk, 4)),  # padding not 1, 2, 3, ... (§2.4)
        framed(out, p4, 17),  # tunnel mode carries IPv4 (4) or IPv6 (41) only
        framed(out, p4, 50),
        framed(out, p6, 4),  # IPv6 inside, next header says IPv4
        framed(out, p4, 41),
        framed(out, b"", 4),  # nothing inside
        framed(out, p4[:19], 4),  # shorter than an IPv4 header
        framed(out, p4[:2] + struct.pack("!H", len(p4) + 1) + p4[4:], 4),  # Total Length > data
        framed(out, p4[:2] + struct.pack("!H", 19) + p4[4:], 4),  # Total Length < 20
        framed(out, p6[:4] + struct.pack("!H", len(p6)) + p6[6:], 41),  # payload length > data
    ]
    for seq, plain in enumerate(cases, 1):
        assert path(inb, seal(out, seq, plain)) is None, seq
    assert inb.malformed == len(cases) and inb.stats.packets == 0
    assert inb.stats.integrity_failures == 0
    # a dummy packet (next header 59, RFC 4303 §2.6) is discarded silently: not counted
    # as malformed, never delivered, but it did take its sequence number
    seq = len(cases) + 1
    dummy = seal(out, seq, framed(out, os.urandom(33), 59))
    assert path(inb, dummy) is None and inb.malformed == len(cases)
    assert path(inb, dummy) is None and inb.stats.replay_drops == 1
    # TFC padding after a correct inner packet (RFC 4303 §2.7) is cut off, not a lie
    assert path(inb, seal(out, seq + 1, framed(out, p4 + bytes(40), 4))) == p4


@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
def test_short_truncated_and_minimum_length_packets(alg: tuple[int, int, int, int]) -> None:
    """Shorter than SPI ‖ seq ‖ IV ‖ one block ‖ ICV, a cut ICV, exactly the minimum:
    never raise, never deliver, never move the window."""
    out, inb = outbound(alg), inbound(alg)
    w = seal(out, 5, framed(out, ipv4()))
    batch = [w[:n] for n in range(len(w))] + [os.urandom(inb._min_len)]
    for x in batch:
        assert inb.decap(x) is None
    assert inb.decap_batch([memoryview(x) for x in batch]) == []
    assert inb.top == 0 and inb.stats.packets == 0
    assert inb.decap(w) is not None and inb.top == 5


def test_cbc_ciphertext_not_whole_blocks_with_a_valid_icv() -> None:
    """AES-CBC (RFC 3602 §3): a ciphertext that is not whole blocks cannot be decrypted,
    even with a valid ICV: dropped, nothing raised, the window stays."""
    alg = ALGS[2]
    out, inb = outbound(alg), inbound(alg)
    t = out.t
    assert isinstance(t, esp._EncThenMAC)
    for extra in range(1, 16):
        hdr = struct.pack("!II", SPI, extra)
        body = os.urandom(16 + 16 + extra)  # IV, one block and a piece
        w = hdr + body + t._integ.mac(hdr + body)
        assert inb.decap(w) is None
        assert inb.decap_batch([memoryview(w)]) == []
    assert inb.top == 0 and inb.stats.integrity_failures == 30


# --- already correct: anti-replay (RFC 4303 §3.4.3, Appendix A) -------------------------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", [ALGS[0], ALGS[2]], ids=["gcm", "cbc"])
def test_sequence_zero_and_far_ahead_then_old(alg: tuple[int, int, int, int],
                                              path: Decap) -> None:
    out, inb = outbound(alg, window=32), inbound(alg, window=32)
    p = framed(out, ipv4())
    assert path(inb, seal(out, 0, p)) is None  # never sent: the first number is 1 (§2.2)
    assert path(inb, seal(out, 1000, p)) is not None
    assert path(inb, seal(out, 1000 - 32, p)) is None  # left of the window
    assert path(inb, seal(out, 1000 - 31, p)) is not None  # inside it, unseen
    assert path(inb, seal(out, 1000 - 31, p)) is None
    assert inb.stats.replay_drops == 3 and inb.top == 1000


@pytest.mark.parametrize("alg", [ALGS[0], ALGS[2]], ids=["gcm", "cbc"])
def test_esn_packet_sealed_for_other_high_bits_does_not_move_the_window(
        alg: tuple[int, int, int, int]) -> None:
    """ESN (RFC 4303 §2.2.1, Appendix A2.2): a packet whose ICV only verifies with high
    bits the receiver would not infer fails, and neither it nor a batch holding it and
    a replay moves the window."""
    out, inb = outbound(alg, esn=True), inbound(alg, esn=True)
    p = framed(out, ipv4())
    assert inb.decap(seal(out, 10, p)) is not None
    ahead = seal(out, (5 << 32) | 11, p)  # a peer jumping 5 * 2**32 ahead
    w12 = seal(out, 12, p)
    got = inb.decap_batch([memoryview(ahead), memoryview(w12), memoryview(w12)])
    assert len(got) == 1 and inb.top == 12
    assert inb.stats.integrity_failures == 1 and inb.stats.replay_drops == 1


# --- already correct: selectors on the inner packet (RFC 4301 §5.2 step 4, §7) ----------


def test_selector_check_on_family_fragments_and_extension_chains() -> None:
    out, inb = outbound(), inbound()
    port_sa = dataclasses.replace(inb.params, remote_ts=[ts(R_NET, 17, 1234, 1234)],
                                  local_ts=[ts(L_NET, 17)])
    inb.selector_check = inbound_check(port_sa)
    seq = iter(range(1, 100))

    def passes(inner: bytes) -> bool:
        nh = 4 if inner[0] >> 4 == 4 else 41
        return inb.decap(seal(out, next(seq), framed(out, inner, nh))) is not None

    assert passes(ipv4())
    assert not passes(ipv4(src="192.0.2.77"))  # source outside the remote selector
    assert not passes(ipv6())  # IPv6 inside an SA of IPv4 selectors
    # RFC 4301 §7: a non-first fragment has no ports (OPAQUE): not for port selectors
    assert not passes(ipv4(l4=b"z" * 16, frag=0x0003))
    # a first fragment too short to hold both ports: OPAQUE too (RFC 1858 tiny fragments)
    assert not passes(ipv4(l4=b"\x04\xd2", frag=0x2000))
    # ports behind a long IPv6 extension header chain: bounded walk, dropped, no raise
    v6_sa = dataclasses.replace(inb.params, remote_ts=[ts("2001:db8:1::/48", 17, 1234, 1234)],
                                local_ts=[ts("2001:db8:2::/48", 17)])
    inb.selector_check = inbound_check(v6_sa)
    assert passes(ipv6())
    chain = b"".join(bytes((0 if i < 39 else 17, 0)) + bytes(6) for i in range(40))
    assert not passes(ipv6(nh=0, payload=chain + ipv6()[40:]))
    assert inb.policy_drops == 5
    # any-port selectors: the same non-first fragment is fine (addresses checked)
    inb.selector_check = inbound_check(dataclasses.replace(
        inb.params, remote_ts=[ts(R_NET)], local_ts=[ts(L_NET)]))
    assert passes(ipv4(l4=b"z" * 16, frag=0x0003))
    assert not passes(ipv4(src="192.0.2.77", frag=0x0003))


# --- already correct: the ESP-in-UDP socket (RFC 3948) ---------------------------------


def plane_with(*sas: esp.InboundSA) -> UserspaceBackend:
    """A backend object without its TUN device: only what the receive paths touch."""
    plane = object.__new__(UserspaceBackend)
    plane._sas = SATable()
    plane.counters = PlaneCounters()
    plane._xin = {}
    for s in sas:
        plane._sas.add(s.params, None, None)
    return plane


def test_udp_runts_markers_keepalives_and_unknown_spis() -> None:
    """RFC 3948 §2.2-2.3: a 1-byte 0xFF is a keepalive, a zero marker is IKE, anything
    else shorter than SPI ‖ seq is junk; an unknown SPI is counted (RFC 4303 §3.4.2)
    and leaves no state behind, however many arrive."""
    plane = plane_with(inbound(encap_sport=4500, encap_dport=4500))
    ike: list[bytes] = []
    addr = ("203.0.113.200", 4500)

    def deliver(data: bytes, a: tuple[str, int]) -> None:
        ike.append(data)

    for n in range(1, 8):
        for fill in (0x00, 0xFF, 0x41):
            d = memoryview(bytes([fill]) * n)
            assert plane._udp_datagram(d, addr, deliver) is None
    c = plane.counters
    assert c.keepalives == 1
    assert ike == [bytes(n - 4) for n in range(5, 8)]  # marker ‖ 1-3 bytes: the daemon's
    assert c.malformed == 21 - 1 - 3
    sas_before = dict(plane._sas.by_spi)
    for spi in range(0x10000, 0x10000 + 5000):
        d = memoryview(struct.pack("!II", spi, 1) + bytes(40))
        assert plane._udp_datagram(d, addr, deliver) is None
    assert c.unknown_spi == 5000 and plane._sas.by_spi == sas_before
    assert len(plane._sas) == 1


def test_esp_from_another_address_is_the_sas_and_moves_nothing() -> None:
    """The SPI alone names the inbound SA (RFC 4303 §2.1, RFC 4301 §4.1): ESP from an
    address or port that is not the peer's is decrypted like any other (the ICV and the
    window decide), and the receive path changes nothing about where we send."""
    inb = inbound(encap_sport=4500, encap_dport=4500)
    plane = plane_with(inb)
    isa = plane._sas.by_spi[SPI]
    out = outbound(encap_sport=4500, encap_dport=4500)
    inner = ipv4()
    w = seal(out, 1, framed(out, inner))
    assert plane._udp_datagram(memoryview(w), ("203.0.113.66", 31337), None) == inner
    assert plane._udp_datagram(memoryview(w), ("192.0.2.2", 4500), None) is None  # replay
    assert isa.params.src == PEER and isa.params.encap_dport == 4500
    assert (isa.stats.packets, isa.stats.replay_drops) == (1, 1)


def test_gro_read_with_a_short_last_segment() -> None:
    """A UDP GRO read (RFC 3948 datagrams of one size, the last shorter): every segment
    is checked on its own; a short, a keepalive or a forged last one changes nothing for
    the others and raises nothing."""
    out = outbound(encap_sport=4500, encap_dport=4500)
    inner = ipv4()
    segs = [seal(out, s, framed(out, inner)) for s in (1, 2, 3)]
    size = len(segs[0])
    for last, counter in ((b"\xff", "keepalives"), (b"\x00\x00\x00", "malformed"),
                          (struct.pack("!II", SPI, 9) + bytes(9), None),
                          (segs[2][:-1], None), (segs[2][:size - 2], None)):
        plane = plane_with(inbound(encap_sport=4500, encap_dport=4500))
        isa = plane._sas.by_spi[SPI]
        buf = b"".join(segs[:2]) + last
        got: list[bytes] = []
        plane._gro_batch(memoryview(bytearray(buf)), len(buf), size, ("192.0.2.2", 4500),
                         None, got)
        assert got == [inner, inner]
        if counter is not None:  # not ESP: the plane's counter
            assert getattr(plane.counters, counter) == 1
        else:  # ESP for the SA: too short or a bad ICV, counted there
            assert isa.stats.integrity_failures + isa.malformed == 1
        assert isa.top == 2 and isa.stats.packets == 2
