"""Red team of the userspace ESP/AH data plane with hostile packets (round 24).

Only what tests/kernel/test_esp_hostile.py, test_esp.py and test_ah.py do not
cover already; their helpers (hand-keyed SAs, :func:`seal` with the real keys,
a backend object without its TUN device) are imported.  Engine-level: no
namespaces, no TUN device, no sockets.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import struct
import threading
import tracemalloc

import pytest
from test_esp_hostile import (
    ALG_IDS,
    ALGS,
    L_NET,
    PATH_IDS,
    PATHS,
    PEER,
    R_NET,
    SPI,
    Decap,
    framed,
    inbound,
    ipv4,
    outbound,
    plane_with,
    seal,
    ts,
)

from pypluto.crypto.registry import Integ
from pypluto.kernel import ah, esp
from pypluto.kernel.base import BackendError
from pypluto.kernel.userspace import offload
from pypluto.kernel.userspace.backend import (
    PlaneCounters,
    UserspaceBackend,
    check_protectable,
)
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.kernel.userspace.selectors import OutboundPolicies, inbound_check
from pypluto.kernel.userspace.traps import HoldQueue
from pypluto.kernel.userspace.xifaces import IpsecInterfaces
from pypluto.params import PolicyParams, SAParams

A = ipaddress.ip_address
ME = A("192.0.2.1")


# --- reserved SPIs (RFC 4303 §2.1, RFC 4302 §2.4) ---------------------------------------


def test_reserved_spis_are_never_installed_and_unknown_on_receive() -> None:
    """SPIs 1-255 are reserved by IANA and 0 is local use only (RFC 4303 §2.1): no SA is
    ever installed under one, so ESP carrying one is an unknown SPI (counted,
    §3.4.2) on every receive path; on the UDP socket SPI 0 is the non-ESP marker
    (RFC 3948 §2.2) and goes to IKE, never to an SA."""
    for spi in (0, 1, 255):
        with pytest.raises(BackendError):
            SATable().add(dataclasses.replace(inbound().params, spi=spi), None, None)
        with pytest.raises(BackendError):
            ah.make_sa(SAParams(PEER, ME, spi, "in", protocol="ah", mode="tunnel",
                                integ_id=Integ.HMAC_SHA2_256_128, integ_key=bytes(32)))
    plane = plane_with(inbound())
    ike: list[bytes] = []
    body = bytes(40)
    for spi in range(1, 256):
        d = struct.pack("!II", spi, 1) + body
        assert plane._udp_datagram(memoryview(d), ("192.0.2.2", 4500),
                                   lambda b, a: ike.append(b)) is None
        plane._esp_in(d)  # handle_esp: ESP the daemon read on its own socket
    assert plane.counters.unknown_spi == 2 * 255 and ike == []
    assert plane._udp_datagram(memoryview(bytes(4) + b"IKE!" + body), ("192.0.2.2", 4500),
                               lambda b, a: ike.append(b)) is None
    assert ike == [b"IKE!" + body]
    plane._esp_in(bytes(4) + b"IKE!" + body)  # no marker on this path: SPI 0 is unknown
    assert plane.counters.unknown_spi == 2 * 255 + 1


# --- anti-replay (RFC 4303 §3.4.3) ------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
def test_forged_packets_never_move_the_window(alg: tuple[int, int, int, int],
                                              path: Decap) -> None:
    """§3.4.3: the window is updated only after the ICV verified.  Forged packets
    (right SPI, any sequence number, garbage or a flipped bit) far ahead, at the top,
    at zero and at 2**32-1 leave top and bitmap as they were, so the genuine packets
    that follow are all accepted."""
    out, inb = outbound(alg, window=64), inbound(alg, window=64)
    p = framed(out, ipv4())
    for s in (1, 2, 4):
        assert path(inb, seal(out, s, p)) is not None
    top, bitmap = inb.top, inb.bitmap
    genuine = seal(out, 3, p)
    forged = []
    for s in (3, 5, 68, 1000, 0xFFFFFFFF):
        f = bytearray(seal(out, s, p))
        f[-1] ^= 1  # the last ICV byte
        forged.append(bytes(f))
        forged.append(struct.pack("!II", SPI, s) + os.urandom(len(genuine) - 8))
    for f in forged:
        assert path(inb, f) is None
    assert (inb.top, inb.bitmap) == (top, bitmap)
    assert inb.stats.integrity_failures == len(forged)
    assert path(inb, genuine) is not None  # 3 was never taken by a forgery
    assert path(inb, seal(out, 5, p)) is not None and inb.top == 5


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("window", [1, 31, 33, 100, 4096])
def test_window_edges_for_any_size(window: int, path: Decap) -> None:
    """§3.4.3: with top N and window W, N-W+1 is the oldest number accepted and N-W is
    rejected, for window sizes that are no multiple of a machine word too; the bitmap
    never holds more than W bits."""
    out, inb = outbound(window=window), inbound(window=window)
    p = framed(out, ipv4())
    top = window + 50
    assert path(inb, seal(out, top, p)) is not None
    assert path(inb, seal(out, top - window, p)) is None  # just left of the window
    if window > 1:  # (a window of one holds the top alone)
        assert path(inb, seal(out, top - window + 1, p)) is not None  # its left edge
        assert path(inb, seal(out, top - window + 1, p)) is None  # twice
    assert path(inb, seal(out, top, p)) is None
    assert inb.stats.replay_drops == (3 if window > 1 else 2)
    # a jump of exactly W slides the whole window: the old top falls out of it
    assert path(inb, seal(out, top + window, p)) is not None
    assert path(inb, seal(out, top, p)) is None
    assert inb.bitmap.bit_length() <= window


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_flood_of_old_and_duplicate_packets_costs_no_memory(path: Decap) -> None:
    """A flood of replays and out-of-window numbers (a peer or anyone replaying captured
    packets) is counted and dropped before any decryption, and leaves no state that
    grows with it."""
    out, inb = outbound(window=128), inbound(window=128)
    p = framed(out, ipv4())
    assert path(inb, seal(out, 100_000, p)) is not None
    old = [seal(out, s, p) for s in (1, 2, 99_000, 100_000 - 128)]
    dup = seal(out, 100_000, p)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(2000):
            for w in old:
                assert path(inb, w) is None
            assert path(inb, dup) is None
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert inb.stats.replay_drops == 2000 * 5 and inb.stats.integrity_failures == 0
    assert grown < 64 * 1024 and inb.bitmap.bit_length() <= 128


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", [ALGS[0], ALGS[2]], ids=["gcm", "cbc"])
def test_esn_across_the_wrap_with_replays_and_forgeries(alg: tuple[int, int, int, int],
                                                        path: Decap) -> None:
    """ESN (RFC 4303 §2.2.1, Appendix A2.2): across 2**32 the receiver infers the high
    bits (Case A ahead, Case B a late packet of the old subspace); a replay of a
    packet of the old subspace after the wrap is dropped; a low number sealed for the
    old subspace but arriving when the window is beyond it fails the ICV and moves
    nothing."""
    out, inb = outbound(alg, esn=True, window=32), inbound(alg, esn=True, window=32)
    p = framed(out, ipv4())
    wrap = 1 << 32
    assert path(inb, seal(out, wrap - 2, p)) is not None
    assert path(inb, seal(out, wrap + 3, p)) is not None and inb.top == wrap + 3  # Case A
    assert path(inb, seal(out, wrap - 1, p)) is not None  # Case B: the old subspace
    assert path(inb, seal(out, wrap - 1, p)) is None  # its replay
    assert path(inb, seal(out, wrap - 2, p)) is None
    assert inb.stats.replay_drops == 2
    # window well past the wrap: lo 5 now means 2**32+5 (above the window's bottom)...
    assert path(inb, seal(out, wrap + 100, p)) is not None
    top, bitmap = inb.top, inb.bitmap
    assert path(inb, seal(out, 5, p)) is None  # ... sealed for 5: the ICV fails
    assert (inb.top, inb.bitmap) == (top, bitmap) and inb.stats.integrity_failures == 1


# --- what the inner packet may be (RFC 4301 §5.2 step 4) ---------------------------------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_inner_protocol_and_ports_outside_the_selectors(mode: str, path: Decap) -> None:
    """An SA negotiated for UDP port 53 only: an authenticated TCP packet, UDP to
    another port, or an ESP-in-ESP packet between the right addresses is dropped and
    counted as a selector drop, not delivered (RFC 4301 §5.2 step 4)."""
    if mode == "tunnel":
        remote, local = ts(R_NET, 17), ts(L_NET, 17, 53, 53)
        src, dst = "198.51.100.7", "203.0.113.9"
    else:
        remote, local = ts(f"{PEER}/32", 17), ts(f"{ME}/32", 17, 53, 53)
        src, dst = str(PEER), str(ME)
    out, inb = outbound(mode=mode), inbound(mode=mode)
    inb.selector_check = inbound_check(dataclasses.replace(
        inb.params, remote_ts=[remote], local_ts=[local]))
    udp53 = struct.pack("!HHHH", 1234, 53, 10, 0) + b"hi"
    seq = iter(range(1, 100))

    def sealed(proto: int, l4: bytes) -> bytes:
        if mode == "tunnel":
            return seal(out, next(seq), framed(out, ipv4(src, dst, proto, l4)))
        return seal(out, next(seq), framed(out, l4, proto))

    got = path(inb, sealed(17, udp53))
    assert got is not None and got[9] == 17 and got[12:20] == A(src).packed + A(dst).packed
    bad = [(6, struct.pack("!HHIIBBHHH", 1234, 53, 1, 0, 0x50, 2, 512, 0, 0)),
           (17, struct.pack("!HHHH", 1234, 54, 10, 0) + b"hi"),
           (50, struct.pack("!II", 0x1234, 1) + bytes(20))]
    for proto, l4 in bad:
        assert path(inb, sealed(proto, l4)) is None
    assert inb.policy_drops == len(bad) and inb.stats.packets == 1
    # a dummy packet (next header 59, RFC 4303 §2.6) in either mode: dropped silently
    dummy = seal(out, next(seq), framed(out, os.urandom(21), 59))
    assert path(inb, dummy) is None
    assert (inb.policy_drops, inb.malformed, inb.stats.packets) == (len(bad), 0, 1)


# --- ESP-in-UDP (RFC 3948) --------------------------------------------------------------


def test_esp_in_udp_for_an_sa_negotiated_without_encapsulation() -> None:
    """ESP arriving in UDP for an SA negotiated without encapsulation (and plain ESP for
    an encapsulated one).  RFC 3948 (§3.3, §3.5: strip the UDP header, then ESP
    processing) does not make the encapsulation part of the SA lookup: the SPI names
    the SA (RFC 4303 §2.1, RFC 4301 §4.1) and the ICV and the window decide, which is
    what the plane does (as strongSwan's kernel-libipsec; Linux XFRM instead drops it
    as XfrmInStateMismatch).  What must hold: the packet changes nothing about where
    or how we send, and the same packet on the other path is a replay."""
    inb = inbound()  # no encap ports
    plane = plane_with(inb)
    isa = plane._sas.by_spi[SPI]
    out = outbound()
    inner = ipv4()
    w = seal(out, 1, framed(out, inner))
    assert plane._udp_datagram(memoryview(w), ("192.0.2.2", 4500), None) == inner
    plane._esp_in(w)  # the same on the plain path: a replay
    assert (isa.stats.packets, isa.stats.replay_drops) == (1, 1)
    assert isa.params.encap_dport is None and isa.params.encap_sport is None


# --- outbound: policies the plane must not send in cleartext ----------------------------


LA, RA = A("192.0.2.1"), A("192.0.2.2")


def _policy(src: str, dst: str, action: str = "ipsec", reqid: int = 7,
            **kw: object) -> PolicyParams:
    return PolicyParams(ts(src), ts(dst), "out", reqid=reqid, tmpl_src=LA, tmpl_dst=RA,
                        action=action, **kw)  # type: ignore[arg-type]


class _Sent:
    def __init__(self) -> None:
        self.wires: list[tuple[bytes, tuple[str, int]]] = []

    def __call__(self, wire: bytes, addr: tuple[str, int]) -> int:
        self.wires.append((wire, addr))
        return len(wire)

    def many(self, ent: tuple[object, ...], wires: list[bytes]) -> None:
        for w in wires:
            self(w, ent[2])  # type: ignore[arg-type]


def _out_plane(policies: list[PolicyParams], osa: esp.OutboundSA | None
               ) -> tuple[UserspaceBackend, _Sent, list[bytes]]:
    """A backend object without TUN device or sockets (routes not managed): the policies
    installed by ``add_policy`` (each also as "in" and "fwd", as the engine installs a
    Child SA's), the SA table (``osa`` under reqid 7) and a recording sender; what it
    would write to the TUN device (ICMP errors of reject shunts) is recorded too."""
    plane = object.__new__(UserspaceBackend)
    plane._lock = threading.RLock()
    plane.manage_routes = False
    plane._sas = SATable()
    plane.counters = PlaneCounters()
    plane._xin = {}
    plane._xifs = IpsecInterfaces()
    plane._flow, plane._pflow = {}, {}
    plane._policies = {}
    plane._out = OutboundPolicies()
    plane.holds = HoldQueue()
    for p in policies:
        plane.add_policy(p)
        for d in ("in", "fwd"):
            plane.add_policy(dataclasses.replace(p, src=p.dst, dst=p.src, direction=d))
    assert len(plane._out.policies) == len(policies)
    plane.on_acquire = None
    sent = _Sent()
    tun: list[bytes] = []
    plane._to_tun = tun.append  # type: ignore[method-assign]
    if osa is not None:
        plane._sas.add(osa.params, None, None)
        st = plane._sas.get(osa.params.dst, osa.params.spi)
        plane._sender_for = (  # type: ignore[method-assign]
            lambda o: (o, sent, (str(RA), 0), None, False) if o is st else None)
    plane._txq = None
    plane._send_many = sent.many  # type: ignore[method-assign]
    return plane, sent, tun


def _send_one(plane: UserspaceBackend, pkt: bytes, vnet: bool = False) -> bool:
    """One packet through the plane's own TUN drain (``_drain_tun``, plain reads or with a
    virtio_net_hdr): a datagram socket stands in for the TUN device (as in
    tests/kernel/test_userspace_tun_read.py).  True when an ESP packet left."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.setblocking(False)
    plane._tun_read = 16384
    plane._tun_fd = plane._tun_prio = b.fileno()
    plane.offload = vnet
    plane._sparse_until = 0.0
    sent = plane._send_many.__self__  # type: ignore[attr-defined]
    n = len(sent.wires)
    try:
        a.send((offload.HDR_DATA_VALID if vnet else b"") + pkt)
        plane._drain_tun(64)
    finally:
        a.close()
        b.close()
    assert len(sent.wires) - n <= 1
    return len(sent.wires) > n


def _osa(reqid: int = 7) -> esp.OutboundSA:
    p = dataclasses.replace(outbound().params, src=LA, dst=RA, reqid=reqid,
                            local_ts=[ts("10.0.1.0/24")], remote_ts=[ts("10.1.1.0/24")])
    o = esp.make_sa(p)
    assert isinstance(o, esp.OutboundSA)
    return o


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "virtio_net_hdr"])
def test_drop_policies_of_left_out_selectors_drop_and_never_leave_in_cleartext(
        vnet: bool) -> None:
    """A Child SA the peer narrowed to one of our selector pairs (10.0.1/24 <-> 10.1.1/24)
    gets drop policies for the pairs it left out (10.0.0.0/16 <-> 10.1.0.0/16 around
    it, RFC 4301 §4.4.1 DISCARD), with the Child SA's reqid: what they cover is dropped
    and counted as shunted, never encrypted, never held for an acquire, never sent; a
    flow cached for the accepted pair serves nothing of the dropped ones."""
    osa = _osa()
    pols = [_policy("10.0.1.0/24", "10.1.1.0/24"),
            _policy("10.0.0.0/16", "10.1.0.0/16", "drop"),
            _policy("10.0.1.0/24", "10.1.2.0/24", "drop")]
    plane, sent, tun = _out_plane(pols, osa)
    ok = ipv4("10.0.1.5", "10.1.1.5")
    assert _send_one(plane, ok, vnet) and len(sent.wires) == 1
    for src, dst in (("10.0.1.5", "10.1.2.5"), ("10.0.2.5", "10.1.1.5"),
                     ("10.0.9.9", "10.1.9.9")):
        for _ in range(3):  # not cached as an SA flow on the way
            assert not _send_one(plane, ipv4(src, dst), vnet)
    assert len(sent.wires) == 1 and tun == [] and len(plane.holds) == 0
    assert plane.counters.shunted == 9
    assert _send_one(plane, ok, vnet) and len(sent.wires) == 2  # the accepted pair still flows
    rx = esp.make_sa(dataclasses.replace(osa.params, direction="in"))
    assert [rx.decap(w) for w, _a in sent.wires] == [ok, ok]  # ESP, to the peer
    assert {a for _w, a in sent.wires} == {(str(RA), 0)}
    # an ICMP error quoting a packet of a dropped pair is dropped too (RFC 4301 §6.2)
    quoted = ipv4("10.1.2.5", "10.0.1.5")
    err = ipv4("10.0.1.5", "10.1.2.5", 1, struct.pack("!BBHI", 3, 3, 0, 0) + quoted[:28])
    assert not _send_one(plane, err, vnet) and len(sent.wires) == 2


@pytest.mark.parametrize("vnet", [False, True], ids=["plain", "virtio_net_hdr"])
def test_drop_policy_without_the_sa_and_no_policy_at_all(vnet: bool) -> None:
    """Before the Child SA's outbound SA is in (or after it went) the drop policy still
    drops (no acquire, nothing held); a TUN packet that matches no policy at all is
    dropped and counted (the plane never routes anything back in cleartext)."""
    pols = [_policy("10.0.1.0/24", "10.1.1.0/24"),
            _policy("10.0.0.0/16", "10.1.0.0/16", "drop")]
    plane, sent, tun = _out_plane(pols, None)
    acquires: list[object] = []
    plane.on_acquire = acquires.append
    assert not _send_one(plane, ipv4("10.0.3.3", "10.1.3.3"), vnet)
    assert plane.counters.shunted == 1 and acquires == [] and len(plane.holds) == 0
    assert not _send_one(plane, ipv4("10.0.1.3", "10.1.1.3"), vnet)  # the trap: held, acquired
    assert len(acquires) == 1 and len(plane.holds) == 1
    assert not _send_one(plane, ipv4("172.16.0.1", "172.17.0.1"), vnet)
    assert plane.counters.no_policy == 3 and sent.wires == [] and tun == []


def test_inbound_packets_of_a_left_out_pair_are_dropped_by_the_sa() -> None:
    """The inbound half: the peer encrypting a pair it left out (10.1.2.0/24 -> 10.0.1.0/24
    on the SA negotiated for 10.1.1.0/24) has it dropped by the SA's selector check
    (RFC 4301 §5.2 step 4) and counted, whatever drop policy exists."""
    out, inb = outbound(), inbound()
    inb.selector_check = inbound_check(dataclasses.replace(
        inb.params, remote_ts=[ts("10.1.1.0/24")], local_ts=[ts("10.0.1.0/24")]))
    assert inb.decap(seal(out, 1, framed(out, ipv4("10.1.1.5", "10.0.1.5")))) is not None
    assert inb.decap(seal(out, 2, framed(out, ipv4("10.1.2.5", "10.0.1.5")))) is None
    assert inb.policy_drops == 1


# --- control plane limits the packet paths rely on --------------------------------------


def test_replay_window_larger_than_the_plane_keeps_is_refused() -> None:
    """replay-window= is accepted up to 2**32-1 by the parser (as Libreswan), and the
    XFRM backend refuses what the kernel cannot keep (4096 packets).  The userspace
    plane kept a bitmap of ``window`` bits: 2**32-1 made a 512 MiB integer at install
    and every packet that moved the window shifted it.  Refused the same way now;
    4096 is installed."""
    sa = dataclasses.replace(inbound().params, replay_window=4096)
    check_protectable(sa)
    assert inbound(window=4096).window == 4096
    for w in (4097, 1 << 20, (1 << 32) - 1):
        with pytest.raises(BackendError, match="replay window"):
            check_protectable(dataclasses.replace(sa, replay_window=w))
    ah_sa = SAParams(PEER, ME, 0x1001, "in", protocol="ah", mode="tunnel",
                     integ_id=Integ.HMAC_SHA2_256_128, integ_key=bytes(32),
                     replay_window=(1 << 32) - 1)
    with pytest.raises(BackendError, match="replay window"):
        check_protectable(ah_sa)


# --- AH (RFC 4302) ----------------------------------------------------------------------


def test_ah_payload_length_and_icv_size_lies() -> None:
    """RFC 4302 §2.2: the Payload Length says where the ICV ends; any other length than
    the SA's ICV gives (12 + ICV, or its 64-bit padded form on IPv4) is dropped and
    counted before or at the ICV check, never raises, never moves the window.  An AH
    sealed by a peer holding the key with a 96-bit ICV on a 128-bit SA is malformed,
    not verified against a cut ICV.  Mutable fields changed in transit (TTL, checksum,
    DSCP) still verify (RFC 4302 §3.3.3.1.1.1)."""
    from test_ah import INNER4, mac, pair

    integ = Integ.HMAC_SHA2_256_128
    key = os.urandom(32)
    out, inb = pair(integ, key=key)
    good = out.encap(INNER4)
    assert good is not None and good[21] == 5  # (12 + 16) / 4 - 2
    for plen in range(256):
        if plen == 5:
            continue
        bad = bytearray(good)
        bad[21] = plen
        assert inb.decap(bytes(bad)) is None, plen
    assert inb.top == 0 and inb.stats.packets == 0
    assert inb.malformed + inb.stats.integrity_failures == 255
    # a 96-bit ICV, the payload length saying so, a MAC the key really made
    ahh = struct.pack("!BBHII", 4, 4, 0, 0x1001, 7) + bytes(12)
    hdr = bytearray(good[:20])
    struct.pack_into("!H", hdr, 2, 20 + len(ahh) + len(INNER4))
    pkt = bytearray(bytes(hdr) + ahh + INNER4)
    zeroed = bytearray(pkt)
    zeroed[1] = 0
    zeroed[6:9] = b"\0\0\0"
    zeroed[10:12] = b"\0\0"
    pkt[32:44] = mac(integ, key, bytes(zeroed))
    assert inb.decap(bytes(pkt)) is None and inb.top == 0
    # the genuine packet after a few hops: TTL, checksum, DSCP/ECN changed
    hops = bytearray(good)
    hops[8] -= 3
    hops[10:12] = b"\x12\x34"
    hops[1] = 0x2E
    assert inb.decap(bytes(hops)) == INNER4 and inb.top == 1
