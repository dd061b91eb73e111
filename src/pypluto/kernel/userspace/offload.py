"""TCP segmentation and checksum completion for a TUN device with IFF_VNET_HDR.

With TUNSETOFFLOAD (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) the kernel hands
the plane whole TCP super-packets of up to 64 KiB, each prefixed by a
``virtio_net_hdr``: one read instead of dozens.  ESP protects MTU-sized IP
packets, so the plane cuts each super-packet into the segments the kernel
would have sent (RFC 9293 §3.1 header fields, RFC 791/8200 IP headers) and
fills in the checksums the kernel left partial (RFC 1071).

The plane's own TUN device no longer asks for TSO (:func:`.tun.open_tun`:
cutting and summing in Python cost 5 us per segment, more than the kernel's
C path plus one read per packet); :func:`segment_tcp` serves any GSO packet
that still arrives.  :func:`coalesce` (receive side: TCP segments, and UDP
datagrams as GSO_UDP_L4 super-packets) is in use.
"""

from __future__ import annotations

import struct
import sys

VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size  # 10
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80

# header for packets written to the TUN: no GSO, checksums already verified by ESP's ICV
HDR_DATA_VALID = VNET_HDR.pack(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0)

_H = struct.Struct("!H")
_I = struct.Struct("!I")

SOL_UDP = 17
UDP_GRO = 104  # on a UDP socket: one read returns datagrams of one size merged (Linux 5.0)


def gro_size(anc: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a ``UDP_GRO`` read from its control messages (every
    datagram of the read but the last has it); 0: not a merged read."""
    for level, typ, val in anc:
        if level == SOL_UDP and typ == UDP_GRO:
            return int.from_bytes(val[:4], sys.byteorder)
    return 0


def csum_add(data: bytes | bytearray | memoryview) -> int:
    """The one's complement sum of ``data`` as 16-bit words, not folded to 16 bits (RFC 1071).

    ``int.from_bytes(...) % 0xFFFF`` is that sum, because 2**16 = 1 (mod 0xFFFF).
    """
    if len(data) & 1:
        return int.from_bytes(bytes(data) + b"\0", "big") % 0xFFFF
    return int.from_bytes(data, "big") % 0xFFFF


def csum_finish(total: int) -> int:
    """The checksum field value for a sum of :func:`csum_add` results.

    A zero residue means the 16-bit sum was 0xFFFF; its complement 0 is sent
    as 0xFFFF, which verifies the same for TCP and is required for UDP (RFC 768).
    """
    total %= 0xFFFF
    return (~total) & 0xFFFF if total else 0xFFFF


def complete_csum(pkt: bytearray, start: int, offset: int) -> None:
    """Finish a partial checksum (VIRTIO_NET_HDR_F_NEEDS_CSUM): the field holds the
    pseudo-header sum; sum from ``start`` to the end and store the complement."""
    pos = start + offset
    if pos + 2 > len(pkt) or start >= len(pkt):
        return
    _H.pack_into(pkt, pos, csum_finish(csum_add(memoryview(pkt)[start:])))


def finish_partial(pkt: bytes, start: int, offset: int) -> bytes:
    """A packet whose checksum the kernel left to us (VIRTIO_NET_HDR_F_NEEDS_CSUM).

    An IPv4 UDP checksum is set to zero, "no checksum" (RFC 768): the packet is
    protected by ESP's ICV from here to the tunnel's end, and it saves summing
    every byte.  Everything else (TCP, IPv6 UDP, RFC 8200 §8.1) is summed.
    """
    if pkt[0] == 0x45 and pkt[9] == 17 and start == 20 and offset == 6 and len(pkt) >= 28:
        return pkt[:26] + b"\0\0" + pkt[28:]
    b = bytearray(pkt)
    complete_csum(b, start, offset)
    return bytes(b)


def segment_tcp(pkt: bytes, gso_size: int) -> list[bytes]:
    """Cut one TCP super-packet (IPv4 or IPv6, no IPv6 extension headers) into segments.

    Sequence numbers advance by the payload carried; FIN and PSH stay on the
    last segment only, CWR on the first only; IPv4 IDs count up; every IP and
    TCP checksum is computed afresh.
    """
    if len(pkt) < 40 or gso_size <= 0:
        return [pkt]
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 0x0F) * 4
        proto = pkt[9]
    elif v == 6:
        ihl = 40
        proto = pkt[6]
    else:
        return [pkt]
    if proto != 6 or ihl < 20 or len(pkt) < ihl + 20:
        return [pkt]
    thl = (pkt[ihl + 12] >> 4) * 4
    hl = ihl + thl
    if thl < 20 or len(pkt) < hl:
        return [pkt]
    payload = memoryview(pkt)[hl:]
    plen = len(payload)
    if plen <= gso_size:
        return [fix_checksums(pkt)]
    if ihl == 20 or v == 6:
        return _segment_common(pkt, v, thl, hl, payload, gso_size)
    # Checksums by sums of parts (RFC 1071 §2(B), RFC 1624): the constant parts once,
    # per segment only the fields that change and the payload.
    h = bytearray(pkt[:hl])
    seq0 = _I.unpack_from(h, ihl + 4)[0]
    flags0 = h[ihl + 13]
    h[ihl + 4:ihl + 8] = b"\0\0\0\0"
    h[ihl + 13] = 0
    h[ihl + 16:ihl + 18] = b"\0\0"
    if v == 4:
        ip_id = _H.unpack_from(h, 4)[0]
        h[2:6] = b"\0\0\0\0"
        h[10:12] = b"\0\0"
        ip_base = csum_add(h[:ihl])
        tcp_base = csum_add(h[12:20]) + 6 + csum_add(h[ihl:])
    else:
        ip_id = ip_base = 0
        h[4:6] = b"\0\0"
        tcp_base = csum_add(h[8:40]) + 6 + csum_add(h[ihl:])
    out = []
    nseg = (plen + gso_size - 1) // gso_size
    pack = _H.pack_into
    seq_pos, fl_pos, ck_pos = ihl + 4, ihl + 13, ihl + 16
    mod = 0xFFFF
    frombytes = int.from_bytes
    for i in range(nseg):
        off = i * gso_size
        chunk = payload[off:off + gso_size]
        n = len(chunk)
        flags = flags0
        if i != nseg - 1:
            flags &= ~0x09  # FIN, PSH on the last segment only
        if i:
            flags &= ~0x80  # CWR on the first only
        seq = (seq0 + off) & 0xFFFFFFFF
        tlen = thl + n
        csum = (frombytes(chunk, "big") if not n & 1 else frombytes(bytes(chunk) + b"\0", "big"))
        total = (tcp_base + tlen + (seq >> 16) + (seq & 0xFFFF) + flags + csum) % mod
        _I.pack_into(h, seq_pos, seq)
        h[fl_pos] = flags
        pack(h, ck_pos, (~total) & 0xFFFF if total else 0xFFFF)
        if v == 4:
            ident = (ip_id + i) & 0xFFFF
            pack(h, 2, ihl + tlen)
            pack(h, 4, ident)
            ipt = (ip_base + ihl + tlen + ident) % mod
            pack(h, 10, (~ipt) & 0xFFFF if ipt else 0xFFFF)
        else:
            pack(h, 4, tlen)
        out.append(bytes(h) + chunk)
    return out


_HDR4 = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")  # IPv4 without options + TCP (20 bytes)
_HDR6 = struct.Struct("!IHBB16s16sHHIIBBHHH")  # IPv6 + TCP


def _segment_common(pkt: bytes, v: int, thl: int, hl: int, payload: memoryview,
                    gso_size: int) -> list[bytes]:
    """:func:`segment_tcp` for IPv4 without options and IPv6: one ``pack`` per header."""
    if v == 4:
        (b0, tos, _tot, ip_id, frag, ttl, proto, _ck, src, dst, sport, dport, seq0, ack, doff,
         flags0, win, _tck, urg) = _HDR4.unpack_from(pkt)
        # IPv4 header sum without total length, ID and checksum
        ip_base = (((b0 << 8) | tos) + frag + ((ttl << 8) | proto) + csum_add(pkt[12:20]))
        addr_sum = csum_add(pkt[12:20])
    else:
        (vtf, _plen, nh, hlim, src, dst, sport, dport, seq0, ack, doff, flags0, win, _tck,
         urg) = _HDR6.unpack_from(pkt)
        ip_base = 0
        addr_sum = csum_add(pkt[8:40])
    opts = pkt[hl - thl + 20:hl]
    # TCP sum without sequence number, flags and checksum, plus the pseudo-header addresses
    tcp_base = (addr_sum + 6 + sport + dport + (ack >> 16) + (ack & 0xFFFF) + (doff << 8)
                + win + urg + csum_add(opts))
    plen = len(payload)
    nseg = (plen + gso_size - 1) // gso_size
    out = []
    mod = 0xFFFF
    frombytes = int.from_bytes
    last = nseg - 1
    for i in range(nseg):
        off = i * gso_size
        chunk = payload[off:off + gso_size]
        n = len(chunk)
        flags = flags0
        if i != last:
            flags &= ~0x09  # FIN, PSH on the last segment only
        if i:
            flags &= ~0x80  # CWR on the first only
        seq = (seq0 + off) & 0xFFFFFFFF
        tlen = thl + n
        data = frombytes(chunk, "big") if not n & 1 else frombytes(bytes(chunk) + b"\0", "big")
        t = (tcp_base + tlen + (seq >> 16) + (seq & 0xFFFF) + flags + data) % mod
        tck = (~t) & 0xFFFF if t else 0xFFFF
        if v == 4:
            ident = (ip_id + i) & 0xFFFF
            total = 20 + tlen
            ipt = (ip_base + total + ident) % mod
            hdr = _HDR4.pack(b0, tos, total, ident, frag, ttl, proto,
                             (~ipt) & 0xFFFF if ipt else 0xFFFF, src, dst, sport, dport, seq,
                             ack, doff, flags, win, tck, urg)
        else:
            hdr = _HDR6.pack(vtf, tlen, nh, hlim, src, dst, sport, dport, seq, ack, doff, flags,
                             win, tck, urg)
        out.append(hdr + opts + chunk)
    return out


def fix_checksums(pkt: bytes) -> bytes:
    """Recompute the TCP checksum of one (not super-) packet, IPv4 or IPv6."""
    b = bytearray(pkt)
    v = b[0] >> 4 if b else 0
    ihl = (b[0] & 0x0F) * 4 if v == 4 else 40
    if v not in (4, 6) or ihl < 20 or len(b) < ihl + 20:
        return pkt
    b[ihl + 16:ihl + 18] = b"\0\0"
    addrs = b[12:20] if v == 4 else b[8:40]
    tlen = len(b) - ihl
    c = csum_finish(csum_add(addrs) + 6 + tlen + csum_add(memoryview(b)[ihl:]))
    _H.pack_into(b, ihl + 16, c)
    return bytes(b)


_SEQ = struct.Struct("!I")
_MAX_MERGE = 64


def _tcp_info(p: bytes) -> tuple[int, bytes, int, int, int] | None:
    """(header length, flow key, sequence number, payload length, flags) of a TCP packet
    that may be merged with its neighbours, or None (RFC 9293 §3.1 header layout)."""
    n = len(p)
    if n < 40:
        return None
    b0 = p[0]
    if b0 == 0x45:
        if p[9] != 6 or p[6] & 0x3F or p[7]:  # not TCP, or a fragment
            return None
        ihl = 20
        head = p[1:2] + p[6:7] + p[8:9] + p[12:20]  # tos, DF, ttl, addresses
    elif b0 >> 4 == 6:
        if p[6] != 6 or n < 60:
            return None
        ihl = 40
        head = p[0:4] + p[7:8] + p[8:40]
    else:
        return None
    flags = p[ihl + 13]
    if (flags | 0x08) != 0x18:  # only ACK, optionally PSH
        return None
    thl = (p[ihl + 12] >> 4) * 4
    hl = ihl + thl
    plen = n - hl
    if thl < 20:
        return None
    if plen <= 0:
        return None
    key = head + p[ihl:ihl + 4] + p[ihl + 8:ihl + 12] + p[ihl + 20:hl]
    return hl, key, _SEQ.unpack_from(p, ihl + 4)[0], plen, flags


def _v4_run(pkts: list[bytes], j: int, n: int, p: bytes, hl: int, size: int, nxt: int,
            run: list[bytes]) -> tuple[int, int, int]:
    """Extend ``run`` (IPv4 segments of one flow, first ``p``: ``hl`` header bytes,
    ``size`` payload bytes, next sequence number ``nxt``) with the segments from
    ``pkts[j]`` on that :func:`_tcp_info` would give the same key, header length and
    next sequence number; returns (index after the run, payload bytes of the run,
    flags of its last segment).

    The same test as the generic loop of :func:`coalesce_tcp`, without building a
    key per segment (slices and a tuple: about half of the receiving daemon's
    Python per packet in that loop): TOS, DF, TTL, addresses, ports, acknowledgment
    number, data offset and options equal to ``p``'s, IPv4 without options, not a
    fragment, TCP, ACK with at most PSH, a payload of at most ``size`` bytes that
    starts at ``nxt``.  A shorter segment or PSH ends the run.
    """
    b1, b6, b8 = p[1], p[6], p[8]
    ends = p[12:24]  # addresses and ports
    ackoff = p[28:33]  # acknowledgment number, data offset
    opts = p[40:hl]
    seq_of = _SEQ.unpack_from
    total = size
    flags = 0x10
    limit = min(n, j - 1 + _MAX_MERGE)
    while j < limit and total + size <= 65000:
        q = pkts[j]
        m = len(q) - hl
        if (m <= 0 or m > size or q[0] != 0x45 or q[9] != 6 or q[7] or q[6] != b6
                or q[1] != b1 or q[8] != b8 or (q[33] | 0x08) != 0x18
                or q[12:24] != ends or q[28:33] != ackoff or q[40:hl] != opts
                or seq_of(q, 24)[0] != nxt):
            break
        run.append(q)
        total += m
        nxt = (nxt + m) & 0xFFFFFFFF
        flags = q[33]
        j += 1
        if m < size or flags != 0x10:
            break
    return j, total, flags


def coalesce_tcp(pkts: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Merge runs of in-order TCP segments of one flow into super-packets (receive offload).

    Returns (virtio_net_hdr, packet) pairs to write to the TUN device.  A run
    has identical addresses, ports, acknowledgment number and options, every
    segment but the last of one size, ACK-only flags (PSH may end the run), as
    Linux GRO demands.  Merged packets carry a partial TCP checksum and
    GSO_TCPV4/6 so the kernel treats them like its own GRO output.
    """
    out: list[tuple[bytes, bytes]] = []
    i, n = 0, len(pkts)
    while i < n:
        p = pkts[i]
        info = _tcp_info(p) if i + 1 < n else None
        if info is None or info[4] != 0x10:
            out.append((HDR_DATA_VALID, p))
            i += 1
            continue
        hl, key, seq, size, _fl = info
        run = [p]
        total = size
        nxt = (seq + size) & 0xFFFFFFFF
        last_flags = 0x10
        j = i + 1
        if p[0] == 0x45:  # IPv4: the fields of the key compared in place
            j, total, last_flags = _v4_run(pkts, j, n, p, hl, size, nxt, run)
        else:
            while j < n and len(run) < _MAX_MERGE and total + size <= 65000:
                q = _tcp_info(pkts[j])
                if q is None or q[1] != key or q[2] != nxt or q[3] > size or q[0] != hl:
                    break
                run.append(pkts[j])
                total += q[3]
                nxt = (nxt + q[3]) & 0xFFFFFFFF
                last_flags = q[4]
                j += 1
                if q[3] < size or q[4] != 0x10:
                    break
        if len(run) == 1:
            out.append((HDR_DATA_VALID, p))
            i += 1
            continue
        h = bytearray(p[:hl])
        v4 = h[0] == 0x45
        ihl = 20 if v4 else 40
        tlen = hl - ihl + total
        h[ihl + 13] = last_flags
        if v4:
            _H.pack_into(h, 2, hl + total)
            h[10:12] = b"\0\0"
            _H.pack_into(h, 10, csum_finish(csum_add(h[:20])))
            partial = csum_add(h[12:20]) + 6 + tlen
        else:
            _H.pack_into(h, 4, tlen)
            partial = csum_add(h[8:40]) + 6 + tlen
        partial %= 0xFFFF
        _H.pack_into(h, ihl + 16, partial or 0xFFFF)
        vh = VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4 if v4 else GSO_TCPV6, hl, size, ihl, 16)
        out.append((vh, b"".join([h] + [x[hl:] for x in run])))  # slices: cheaper than views here
        i = j
    return out


GSO_UDP_L4 = 5  # VIRTIO_NET_HDR_GSO_UDP_L4: UDP segmentation offload (Linux 4.18 / virtio 1.2)
_UDP_MERGE_BYTES = 65000  # payload bytes of one merged UDP super-packet (below 65,507)


def _udp_info(p: bytes) -> tuple[int, bytes, int] | None:
    """(header length, flow key, payload length) of a UDP datagram that may be merged
    with its neighbours, or None: IPv4 without options or fragments, IPv6 without
    extension headers (RFC 768 header after RFC 791 / RFC 8200 ones)."""
    n = len(p)
    b0 = p[0] if n else 0
    if b0 == 0x45:
        if n < 29 or p[9] != 17 or p[6] & 0x3F or p[7]:  # not UDP, or a fragment
            return None
        # tos, DF, ttl, addresses, ports: the IP ID and the lengths may differ
        return 28, p[1:2] + p[6:7] + p[8:9] + p[12:24], n - 28
    if b0 >> 4 == 6:
        if n < 49 or p[6] != 17:
            return None
        return 48, p[0:4] + p[7:44], n - 48
    return None


def _merge_udp(run: list[bytes], hl: int, size: int, total: int) -> tuple[bytes, bytes]:
    """One UDP super-packet (virtio_net_hdr GSO_UDP_L4, partial checksum) for ``run``:
    the kernel cuts it again into datagrams of ``size`` payload bytes (the last may be
    shorter) before any socket without UDP_GRO sees them, with fresh checksums."""
    p = run[0]
    h = bytearray(p[:hl])
    v4 = hl == 28
    ihl = hl - 8
    ulen = 8 + total
    if v4:
        _H.pack_into(h, 2, 20 + ulen)
        h[10:12] = b"\0\0"
        _H.pack_into(h, 10, csum_finish(csum_add(h[:20])))
        partial = csum_add(h[12:20]) + 17 + ulen
    else:
        _H.pack_into(h, 4, ulen)
        partial = csum_add(h[8:40]) + 17 + ulen
    _H.pack_into(h, ihl + 4, ulen)
    partial %= 0xFFFF
    _H.pack_into(h, ihl + 6, partial or 0xFFFF)
    vh = VNET_HDR.pack(F_NEEDS_CSUM, GSO_UDP_L4, hl, size, ihl, 6)
    return vh, b"".join([h] + [x[hl:] for x in run])


def coalesce(pkts: list[bytes], udp: bool = True) -> list[tuple[bytes, bytes]]:
    """:func:`coalesce_tcp`, and with ``udp`` runs of UDP datagrams of one flow too.

    A UDP run has identical addresses, ports, TOS, TTL and DF (IPv4), or the same
    first word, hop limit, addresses and ports (IPv6), and every datagram but the
    last of one payload size (as Linux UDP GRO merges them); it is written as one
    GSO_UDP_L4 super-packet, which the kernel splits into the same datagrams for
    the receiving socket (IP IDs renumbered from the first), so one write carries
    up to 64 datagrams.
    """
    if not udp:
        return coalesce_tcp(pkts)
    pkts = reassemble(pkts)
    out: list[tuple[bytes, bytes]] = []
    tcp: list[bytes] = []
    i, n = 0, len(pkts)
    while i < n:
        p = pkts[i]
        info = _udp_info(p) if i + 1 < n else None
        if info is None or info[2] == 0:
            tcp.append(p)
            i += 1
            continue
        hl, key, size = info
        j = i + 1
        total = size
        limit = min(n, i + _MAX_MERGE, i + _UDP_MERGE_BYTES // size)
        if hl == 28:  # IPv4: the bytes of the key compared in place, no slices built
            b1, b6, b8, addrs = p[1], p[6], p[8], p[12:24]
            while j < limit:
                q = pkts[j]
                m = len(q) - 28
                if (m > size or m <= 0 or q[0] != 0x45 or q[9] != 17 or q[7]
                        or q[6] != b6 or q[8] != b8 or q[1] != b1 or q[12:24] != addrs):
                    break
                total += m
                j += 1
                if m < size:
                    break
        else:
            while j < limit:
                q = pkts[j]
                m = len(q) - hl
                if m > size or m <= 0 or _udp_key(q, hl) != key:
                    break
                total += m
                j += 1
                if m < size:
                    break
        if j - i < 2:
            tcp.append(p)
            i += 1
            continue
        if tcp:
            out += coalesce_tcp(tcp)
            tcp = []
        out.append(_merge_udp(pkts[i:j], hl, size, total))
        i = j
    if tcp:
        out += coalesce_tcp(tcp)
    return out


def _udp_key(q: bytes, hl: int) -> bytes | None:
    """The flow key of :func:`_udp_info` for ``q`` if it is UDP of the same header length."""
    info = _udp_info(q)
    if info is None or info[0] != hl:
        return None
    return info[1]


def split_udp(vh: bytes, pkt: bytes) -> list[bytes]:
    """The datagrams of a super-packet of :func:`_merge_udp` again (IP IDs renumbered
    as the kernel would, checksums summed), for a device that refused it."""
    size = VNET_HDR.unpack(vh)[3]
    hl = VNET_HDR.unpack(vh)[2]
    v4 = hl == 28
    ihl = hl - 8
    h0 = bytearray(pkt[:hl])
    ident = _H.unpack_from(h0, 4)[0] if v4 else 0
    out = []
    for k, off in enumerate(range(hl, len(pkt), size)):
        body = pkt[off:off + size]
        h = bytearray(h0)
        ulen = 8 + len(body)
        if v4:
            _H.pack_into(h, 2, 20 + ulen)
            _H.pack_into(h, 4, (ident + k) & 0xFFFF)
            h[10:12] = b"\0\0"
            _H.pack_into(h, 10, csum_finish(csum_add(h[:20])))
            addrs = h[12:20]
        else:
            _H.pack_into(h, 4, ulen)
            addrs = h[8:40]
        _H.pack_into(h, ihl + 4, ulen)
        h[ihl + 6:ihl + 8] = b"\0\0"
        s = csum_add(addrs) + 17 + ulen + csum_add(h[ihl:ihl + 8]) + csum_add(body)
        _H.pack_into(h, ihl + 6, csum_finish(s))
        out.append(bytes(h) + body)
    return out


def _frag_info(p: bytes) -> tuple[int, int, bool] | None:
    """(offset in bytes, payload length, more fragments) of an IPv4 fragment without
    options, or None (RFC 791 §3.1: flags and fragment offset in bytes 6-7)."""
    if len(p) < 21 or p[0] != 0x45:
        return None
    ff = (p[6] << 8) | p[7]
    if not ff & 0x3FFF:  # neither MF nor an offset: not a fragment
        return None
    tlen = (p[2] << 8) | p[3]
    if tlen != len(p):
        return None
    return (ff & 0x1FFF) * 8, tlen - 20, bool(ff & 0x2000)


def reassemble(pkts: list[bytes]) -> list[bytes]:
    """Join the IPv4 fragments of a datagram that lie next to each other in ``pkts``,
    complete and in order (first at offset 0, each next one starting where the
    previous ended, the last without MF; same source, destination, protocol and
    identification: the reassembly key of RFC 791 §3.2), into the datagram they
    carry.  Anything else (a gap, an overlap, a missing last fragment, another
    datagram between them) is left as it is, for the kernel's own reassembly.
    No state is kept across calls.
    """
    if not any(len(p) > 7 and (p[6] & 0x3F or p[7]) for p in pkts):
        return pkts
    out: list[bytes] = []
    i, n = 0, len(pkts)
    while i < n:
        p = pkts[i]
        f = _frag_info(p) if i + 1 < n else None
        if f is None or f[0] != 0 or not f[2]:
            out.append(p)
            i += 1
            continue
        key = p[4:6] + p[9:10] + p[12:20]  # identification, protocol, addresses
        end = f[1]
        j = i + 1
        done = False
        while j < n:
            q = pkts[j]
            g = _frag_info(q)
            if g is None or g[0] != end or q[4:6] + q[9:10] + q[12:20] != key:
                break
            end += g[1]
            j += 1
            if not g[2]:
                done = True
                break
        if not done or 20 + end > 65535:
            out.append(p)
            i += 1
            continue
        h = bytearray(p[:20])
        _H.pack_into(h, 2, 20 + end)
        h[6] = p[6] & 0x40  # DF as the first fragment had it (RFC 791: not on fragments)
        h[7] = 0
        h[10:12] = b"\0\0"
        _H.pack_into(h, 10, csum_finish(csum_add(h)))
        out.append(b"".join([h] + [x[20:] for x in pkts[i:j]]))
        i = j
    return out
