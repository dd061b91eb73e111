"""TCP segmentation / coalescing and checksums of the TUN offload path (userspace/offload.py)."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pypluto.kernel.base import SAParams, TrafficSelector
from pypluto.kernel.userspace import offload as o
from pypluto.kernel.userspace.selectors import inbound_check as _selector_check

A = ipaddress.ip_address


def ref_checksum(data: bytes) -> int:
    """RFC 1071 the slow way, as the reference."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_packet(payload: bytes, v6: bool = False, flags: int = 0x18, seq: int = 1000,
               ack: int = 77, options: bytes = b"\x01\x01\x08\x0a12345678") -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", 1234, 5001, seq, ack, (thl // 4) << 4, flags, 500, 0, 0)
    tcp += options
    if v6:
        src, dst = A("2001:db8:1::1").packed, A("2001:db8:2::1").packed
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + len(payload), 6, 64, src, dst)
    else:
        src, dst = A("198.51.100.1").packed, A("203.0.113.1").packed
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 7, 0x4000,
                         64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", ref_checksum(ip)) + ip[12:]
    return ip + o.fix_checksums(ip + tcp + payload)[len(ip):len(ip) + thl] + payload


def tcp_ok(p: bytes) -> bool:
    """Both checksums verify (RFC 791 §3.1, RFC 9293 §3.1 pseudo-header)."""
    if p[0] >> 4 == 4:
        ihl = (p[0] & 15) * 4
        if ref_checksum(p[:ihl]) != 0:
            return False
        pseudo = p[12:20] + struct.pack("!BBH", 0, 6, len(p) - ihl)
    else:
        ihl = 40
        pseudo = p[8:40] + struct.pack("!IxxxB", len(p) - 40, 6)
    return ref_checksum(pseudo + p[ihl:]) == 0


@given(st.binary(max_size=3000))
def test_csum_matches_rfc1071(data: bytes) -> None:
    ref = ref_checksum(data)
    assert o.csum_finish(o.csum_add(data)) == (ref or 0xFFFF)  # 0 is sent as 0xFFFF


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [1, 1347, 1348, 1349, 5000, 60000])
def test_segment_then_coalesce_round_trip(v6: bool, size: int) -> None:
    payload = os.urandom(size)
    sp = tcp_packet(payload, v6)
    segs = o.segment_tcp(sp, 1348)
    assert len(segs) == (size + 1347) // 1348
    assert all(tcp_ok(s) for s in segs)
    assert all(len(s) <= len(sp) - size + 1348 for s in segs)
    hl = len(sp) - size
    assert b"".join(s[hl:] for s in segs) == payload
    seqs = [struct.unpack_from("!I", s, (40 if v6 else 20) + 4)[0] for s in segs]
    assert seqs == [1000 + 1348 * i for i in range(len(segs))]
    flags = [s[(40 if v6 else 20) + 13] for s in segs]
    assert flags[-1] == 0x18 and all(f == 0x10 for f in flags[:-1])
    if not v6:
        assert [struct.unpack_from("!H", s, 4)[0] for s in segs] == list(
            range(7, 7 + len(segs)))
    merged = o.coalesce_tcp(segs)
    if len(segs) == 1:
        assert merged == [(o.HDR_DATA_VALID, segs[0])]
        return
    total = 0
    for vh, p in merged:
        fl, gso, hdr_len, gso_size, cstart, coff = o.VNET_HDR.unpack(vh)
        if gso:
            assert fl == o.F_NEEDS_CSUM and gso == (o.GSO_TCPV6 if v6 else o.GSO_TCPV4)
            assert gso_size == 1348 and hdr_len == hl and (cstart, coff) == (hl - 32, 16)
            if not v6:
                assert ref_checksum(p[:20]) == 0 and struct.unpack_from("!H", p, 2)[0] == len(p)
        total += len(p) - hl
    assert total == size
    assert b"".join(p[hl:] for _, p in merged) == payload


def test_coalesce_keeps_flows_and_gaps_apart() -> None:
    a = o.segment_tcp(tcp_packet(os.urandom(4000)), 1000)
    b = o.segment_tcp(tcp_packet(os.urandom(4000), seq=50_000), 1000)
    merged = o.coalesce_tcp([a[0], a[1], b[0], b[1], a[3]])
    assert len(merged) == 3  # a0+a1, b0+b1, a3 (a2 missing: a gap)
    assert [len(p) for _, p in merged] == [52 + 2000, 52 + 2000, 52 + 1000]
    syn = tcp_packet(b"x" * 100, flags=0x02)
    assert o.coalesce_tcp([syn, syn]) == [(o.HDR_DATA_VALID, syn)] * 2


def _reference_runs(pkts: list[bytes]) -> list[int]:
    """The run lengths coalesce_tcp must produce, from _tcp_info's key for every segment
    (the generic rule, which the IPv4 fast path must match)."""
    runs, i, n = [], 0, len(pkts)
    while i < n:
        info = o._tcp_info(pkts[i]) if i + 1 < n else None
        if info is None or info[4] != 0x10:
            runs.append(1)
            i += 1
            continue
        hl, key, seq, size, _ = info
        total, nxt, j = size, (seq + size) & 0xFFFFFFFF, i + 1
        while j < n and j - i < 64 and total + size <= 65000:
            q = o._tcp_info(pkts[j])
            if q is None or q[1] != key or q[2] != nxt or q[3] > size or q[0] != hl:
                break
            total += q[3]
            nxt = (nxt + q[3]) & 0xFFFFFFFF
            j += 1
            if q[3] < size or q[4] != 0x10:
                break
        runs.append(j - i)
        i = j
    return runs


# one change to a segment of a bulk flow: each must end a run where _tcp_info's key does
_MUTATIONS = {
    "tos": lambda p: p[:1] + b"\x10" + p[2:],
    "df": lambda p: p[:6] + b"\x00" + p[7:],
    "mf": lambda p: p[:6] + b"\x60" + p[7:],
    "ttl": lambda p: p[:8] + b"\x3f" + p[9:],
    "udp": lambda p: p[:9] + b"\x11" + p[10:],
    "src": lambda p: p[:12] + b"\xc0" + p[13:],
    "port": lambda p: p[:20] + b"\x00\x01" + p[22:],
    "seq": lambda p: p[:24] + struct.pack("!I", 1) + p[28:],
    "ack": lambda p: p[:28] + struct.pack("!I", 78) + p[32:],
    "psh": lambda p: p[:33] + b"\x18" + p[34:],
    "syn": lambda p: p[:33] + b"\x12" + p[34:],
    "fin": lambda p: p[:33] + b"\x11" + p[34:],
    "window": lambda p: p[:34] + b"\x00\x01" + p[36:],
    "opt": lambda p: p[:44] + b"\xff" + p[45:],
    "short": lambda p: p[:-7],
    "long": lambda p: p + b"x",
    "empty": lambda p: p[:52],
    "v6": lambda p: b"\x60" + p[1:],
}


@settings(max_examples=400, deadline=None)
@given(st.integers(2, 70), st.lists(st.tuples(st.integers(0, 69),
                                             st.sampled_from(sorted(_MUTATIONS))),
                                   max_size=4), st.sampled_from([100, 1000, 1348]))
def test_ipv4_fast_path_runs_match_the_generic_rule(count: int, changes: list[tuple[int, str]],
                                                     mss: int) -> None:
    segs = [tcp_packet(os.urandom(mss), flags=0x10, seq=1000 + k * mss) for k in range(count)]
    for k, name in changes:
        if k < len(segs):
            segs[k] = _MUTATIONS[name](segs[k])
    merged = o.coalesce_tcp(segs)
    runs = _reference_runs(segs)
    assert len(merged) == len(runs)
    k = 0
    for (vh, p), r in zip(merged, runs, strict=True):
        part = segs[k:k + r]
        k += r
        if r == 1:
            assert (vh, p) == (o.HDR_DATA_VALID, part[0])
            continue
        hl = o._tcp_info(part[0])[0]  # type: ignore[index]
        assert p[hl:] == b"".join(x[hl:] for x in part)
        assert o.VNET_HDR.unpack(vh)[1] == o.GSO_TCPV4
        assert p[33] == part[-1][33]  # the last segment's flags (PSH)


def test_complete_partial_checksum() -> None:
    p = bytearray(tcp_packet(os.urandom(999)))
    pseudo = o.csum_add(p[12:20]) + 6 + (len(p) - 20)
    struct.pack_into("!H", p, 36, pseudo % 0xFFFF)  # as the kernel leaves it (NEEDS_CSUM)
    o.complete_csum(p, 20, 16)
    assert tcp_ok(bytes(p))
    o.complete_csum(bytearray(b"\x45" * 10), 20, 16)  # out of range: ignored


def test_finish_partial_udp4_zero_and_tcp_summed() -> None:
    udp = bytearray(tcp_packet(b"u" * 100))
    udp[9] = 17
    udp[26:28] = b"\x12\x34"
    out = o.finish_partial(bytes(udp), 20, 6)
    assert out[26:28] == b"\0\0" and out[:26] == bytes(udp[:26]) and out[28:] == udp[28:]
    p = bytearray(tcp_packet(os.urandom(300)))
    pseudo = o.csum_add(p[12:20]) + 6 + (len(p) - 20)
    struct.pack_into("!H", p, 36, pseudo % 0xFFFF)
    assert tcp_ok(o.finish_partial(bytes(p), 20, 16))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda h, t: h + t, st.sampled_from([b"\x45\x00\x00\x60" + bytes(5)
                                                                + b"\x06", b"\x60" + bytes(5)
                                                                + b"\x06"]),
                           st.binary(min_size=30, max_size=120))),
       st.integers(1, 2000))
def test_garbage_never_raises(data: bytes, gso: int) -> None:
    o.coalesce_tcp([data, data])
    if len(data) >= 1:
        try:
            o.segment_tcp(data, gso)
        except (IndexError, struct.error):
            pytest.fail("segment_tcp raised on garbage")


def test_inbound_selector_check() -> None:
    sa = SAParams(src=A("192.0.2.2"), dst=A("192.0.2.1"), spi=0x1000, direction="in",
                  local_ts=[TrafficSelector(ipaddress.ip_network("198.51.100.0/24"))],
                  remote_ts=[TrafficSelector(ipaddress.ip_network("203.0.113.0/24"))])
    check = _selector_check(sa)
    assert check is not None
    inbound = bytearray(tcp_packet(b"x"))
    inbound[12:20] = A("203.0.113.1").packed + A("198.51.100.1").packed
    assert check(bytes(inbound))
    assert not check(tcp_packet(b"x"))  # source 198.51.100.1 is not in the remote selector
    assert _selector_check(SAParams(src=A("192.0.2.2"), dst=A("192.0.2.1"), spi=0x1000,
                                    direction="in")) is None


def udp_packet(payload: bytes, v6: bool = False, sport: int = 4000, ident: int = 7,
               frag: int = 0x4000, ttl: int = 64) -> bytes:
    ulen = 8 + len(payload)
    if v6:
        src, dst = A("2001:db8:1::1").packed, A("2001:db8:2::1").packed
        ip = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, ttl, src, dst)
        pseudo = src + dst + struct.pack("!IxxxB", ulen, 17)
    else:
        src, dst = A("198.51.100.1").packed, A("203.0.113.1").packed
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, ident, frag, ttl, 17, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", ref_checksum(ip)) + ip[12:]
        pseudo = src + dst + struct.pack("!BBH", 0, 17, ulen)
    u = struct.pack("!HHHH", sport, 5201, ulen, 0)
    c = ref_checksum(pseudo + u + payload) or 0xFFFF
    return ip + u[:6] + struct.pack("!H", c) + payload


@pytest.mark.parametrize("v6", [False, True], ids=["v4", "v6"])
@pytest.mark.parametrize("size", [1, 36, 1372])
def test_udp_runs_merge_and_split_back(v6: bool, size: int) -> None:
    """A run of one UDP flow becomes one GSO_UDP_L4 super-packet (partial checksum over
    the pseudo-header, RFC 768) that the kernel's cutting (split_udp) turns back into
    the same datagrams, IPv4 IDs numbered from the first."""
    n = min(64, 65000 // size)
    pkts = [udp_packet(os.urandom(size), v6, ident=100 + i) for i in range(n)]
    pkts.append(udp_packet(b"z", v6, ident=100 + n))  # a shorter last one ends the run
    out = o.coalesce(pkts)
    merged = [x for x in out if x[0][1] == o.GSO_UDP_L4]
    assert len(merged) == 1
    flags, gso, hl, gso_size, cstart, coff = o.VNET_HDR.unpack(merged[0][0])
    assert (flags, hl, gso_size, cstart, coff) == (o.F_NEEDS_CSUM, 48 if v6 else 28, size,
                                                   40 if v6 else 20, 6)
    rest = [p for vh, p in out if vh == o.HDR_DATA_VALID]
    assert o.split_udp(*merged[0]) + rest == pkts


def test_udp_merge_keeps_flows_fragments_and_sizes_apart() -> None:
    a = [udp_packet(b"a" * 50, ident=i) for i in range(3)]
    other_port = udp_packet(b"b" * 50, sport=4001)
    bigger = udp_packet(b"c" * 60)
    fragment = udp_packet(b"d" * 50, frag=0x2000)  # MF set: never merged
    empty = udp_packet(b"")
    ttl = udp_packet(b"e" * 50, ttl=63)
    pkts = [*a, other_port, *a, bigger, fragment, fragment, empty, empty, *a[:2], ttl]
    out = o.coalesce(pkts)
    sizes = [(vh[1], len(p)) for vh, p in out]
    assert sizes == [(o.GSO_UDP_L4, 28 + 150), (0, 78), (o.GSO_UDP_L4, 28 + 150), (0, 88),
                     (0, 78), (0, 78), (0, 28), (0, 28), (o.GSO_UDP_L4, 28 + 100), (0, 78)]
    flat: list[bytes] = []
    for vh, p in out:
        flat += o.split_udp(vh, p) if vh[1] == o.GSO_UDP_L4 else [p]
    assert [p[20:] for p in flat] == [p[20:] for p in pkts]  # IP IDs renumbered only
    assert o.coalesce(pkts, udp=False) == o.coalesce_tcp(pkts)


@given(st.lists(st.binary(max_size=80), max_size=6))
@settings(max_examples=200)
def test_udp_coalesce_garbage_never_raises(pkts: list[bytes]) -> None:
    out = o.coalesce(pkts)
    assert all(len(vh) == o.VNET_HDR_LEN for vh, _ in out) and len(out) <= len(pkts)


def fragments(payload: bytes, cut: int, ident: int = 9, df_first: bool = False) -> list[bytes]:
    """``payload`` (a UDP header and data) as two IPv4 fragments, the first ``cut`` bytes."""
    out = []
    for off, part, mf in ((0, payload[:cut], True), (cut, payload[cut:], False)):
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), ident,
                         (0x2000 if mf else 0) | off // 8, 64, 17, 0,
                         A("198.51.100.1").packed, A("203.0.113.1").packed)
        out.append(ip[:10] + struct.pack("!H", ref_checksum(ip)) + ip[12:] + part)
    return out


def test_adjacent_complete_fragments_are_joined_and_merged() -> None:
    """Two fragments of each datagram (1400-byte UDP over a 1400-byte MTU) are joined
    (RFC 791 §3.2 key: ID, protocol, addresses), then the datagrams merged as UDP."""
    dgrams = [udp_packet(os.urandom(1400), ident=50 + i) for i in range(5)]
    pkts = [f for i, d in enumerate(dgrams) for f in fragments(d[20:], 1376, ident=50 + i)]
    joined = o.reassemble(pkts)
    assert [p[20:] for p in joined] == [d[20:] for d in dgrams]
    assert all(ref_checksum(p[:20]) == 0 and p[6:8] == b"\0\0" for p in joined)
    out = o.coalesce(pkts)
    assert len(out) == 1 and out[0][0][1] == o.GSO_UDP_L4
    assert [p[20:] for p in o.split_udp(*out[0])] == [d[20:] for d in dgrams]


def test_fragments_out_of_order_gapped_or_mixed_are_left_alone() -> None:
    body = udp_packet(os.urandom(1400))[20:]
    a, b = fragments(body, 1376)
    other = fragments(body, 1376, ident=10)
    gap = fragments(body, 1368)[1]  # starts 8 bytes early: an overlap
    for pkts in ([b, a], [a], [a, other[1]], [a, gap], [a, udp_packet(b"x"), b]):
        assert o.reassemble(pkts) == pkts
    plain = [udp_packet(b"y" * 10)] * 3
    assert o.reassemble(plain) is plain  # no fragment: nothing looked at further
