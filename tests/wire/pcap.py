"""A small pcap / pcapng reader for the capture cross-checks: UDP datagrams only.

Formats: libpcap (both byte orders, micro/nanosecond magic) and pcapng (SHB, IDB,
EPB, SPB blocks).  Link types: BSD loopback (0), Ethernet (1, with 802.1Q tags),
raw IP (12, 14, 101, 228, 229), Linux cooked (113).  IPv4 (unfragmented) and IPv6
(without extension headers) carrying UDP.
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class UDPDatagram:
    frame: int  # 1-based, as Wireshark counts
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


def _ip_to_udp(frame: int, pkt: bytes) -> UDPDatagram | None:
    if not pkt:
        return None
    version = pkt[0] >> 4
    if version == 4:
        ihl = (pkt[0] & 0x0F) * 4
        total = struct.unpack_from("!H", pkt, 2)[0]
        frag = struct.unpack_from("!H", pkt, 6)[0]
        if pkt[9] != 17 or frag & 0x3FFF:
            return None
        src = ".".join(str(b) for b in pkt[12:16])
        dst = ".".join(str(b) for b in pkt[16:20])
        udp = pkt[ihl:total]
    elif version == 6:
        if pkt[6] != 17:
            return None
        plen = struct.unpack_from("!H", pkt, 4)[0]
        src = pkt[8:24].hex()
        dst = pkt[24:40].hex()
        udp = pkt[40 : 40 + plen]
    else:
        return None
    sport, dport, ulen = struct.unpack_from("!HHH", udp, 0)
    return UDPDatagram(frame, src, sport, dst, dport, udp[8:ulen])


def _link_to_ip(linktype: int, data: bytes, little: bool) -> bytes | None:
    if linktype == 0:  # BSD loopback: 4-byte address family in host order
        return data[4:]
    if linktype == 1:  # Ethernet
        etype = struct.unpack_from("!H", data, 12)[0]
        off = 14
        while etype in (0x8100, 0x88A8):
            etype = struct.unpack_from("!H", data, off + 2)[0]
            off += 4
        return data[off:] if etype in (0x0800, 0x86DD) else None
    if linktype in (12, 14, 101, 228, 229):
        return data
    if linktype == 113:  # Linux cooked capture v1
        return data[16:]
    raise ValueError(f"link type {linktype} not handled")


def _pcap(raw: bytes) -> Iterator[tuple[int, bytes, bool]]:
    magic = raw[:4]
    little = magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    e = "<" if little else ">"
    linktype = struct.unpack_from(e + "I", raw, 20)[0]
    pos = 24
    while pos + 16 <= len(raw):
        incl = struct.unpack_from(e + "I", raw, pos + 8)[0]
        yield linktype, raw[pos + 16 : pos + 16 + incl], little
        pos += 16 + incl


def _pcapng(raw: bytes) -> Iterator[tuple[int, bytes, bool]]:
    pos = 0
    e = "<"
    linktypes: list[int] = []
    while pos + 12 <= len(raw):
        btype = struct.unpack_from(e + "I", raw, pos)[0]
        if btype == 0x0A0D0D0A:  # section header: byte-order magic decides
            e = "<" if raw[pos + 8 : pos + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            linktypes = []
        blen = struct.unpack_from(e + "I", raw, pos + 4)[0]
        body = raw[pos + 8 : pos + blen - 4]
        if btype == 1:  # interface description
            linktypes.append(struct.unpack_from(e + "H", body, 0)[0])
        elif btype == 6:  # enhanced packet
            iface, _, _, cap = struct.unpack_from(e + "IIII", body, 0)
            yield linktypes[iface], body[20 : 20 + cap], e == "<"
        elif btype == 3:  # simple packet
            yield linktypes[0], body[4:], e == "<"
        pos += blen


def read_udp(path: pathlib.Path) -> list[UDPDatagram]:
    """Every UDP datagram of a capture, with its 1-based frame number."""
    raw = path.read_bytes()
    frames = _pcapng(raw) if raw[:4] == b"\x0a\x0d\x0d\x0a" else _pcap(raw)
    out: list[UDPDatagram] = []
    for n, (linktype, data, little) in enumerate(frames, 1):
        ip = _link_to_ip(linktype, data, little)
        if ip is None:
            continue
        d = _ip_to_udp(n, ip)
        if d is not None:
            out.append(d)
    return out
