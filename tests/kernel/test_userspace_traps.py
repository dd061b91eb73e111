"""The userspace plane's trap hold queue and reject-shunt ICMP (kernel/userspace/traps.py)."""

from __future__ import annotations

import ipaddress
import struct

from pypluto.kernel.userspace import traps
from pypluto.kernel.userspace.traps import HoldQueue, icmp_unreachable
from pypluto.params import PolicyParams, TrafficSelector

POL = PolicyParams(TrafficSelector(ipaddress.ip_network("198.51.100.0/24")),
                   TrafficSelector(ipaddress.ip_network("203.0.113.0/24")), "out", reqid=7,
                   tmpl_src=ipaddress.ip_address("192.0.2.1"),
                   tmpl_dst=ipaddress.ip_address("192.0.2.2"))


def _ones(data: bytes) -> int:
    """RFC 1071 sum; a correct checksum makes the sum over the covered bytes 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _pkt(i: int = 0) -> bytes:
    udp = struct.pack("!HHHH", 4000, 53, 8, 0)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, i, 0, 64, 17, 0,
                      bytes([198, 51, 100, 1]), bytes([203, 0, 113, 1]))
    return hdr + udp


def _id(pkt: bytes) -> int:
    return struct.unpack_from("!H", pkt, 4)[0]


def test_first_packet_raises_the_acquire_with_its_selectors_and_is_held() -> None:
    t = [100.0]
    q = HoldQueue(clock=lambda: t[0])
    ev = q.trap(_pkt(), POL)
    assert ev is not None and ev.reqid == 7
    assert str(ev.src) == "198.51.100.1/32/17/4000" and str(ev.dst) == "203.0.113.1/32/17/53"
    assert (ev.local, ev.remote) == (POL.tmpl_src, POL.tmpl_dst)
    # a flood: one acquire per interval, bounded queue, the oldest kept in order
    evs = [q.trap(_pkt(i), POL) for i in range(1, 10_000)]
    assert evs.count(None) == len(evs)
    assert len(q) == traps.HOLD_PER_REQID and q.dropped == 10_000 - traps.HOLD_PER_REQID
    t[0] += traps.ACQUIRE_INTERVAL
    assert q.trap(_pkt(), POL) is not None
    out = q.release(7)
    assert [_id(p) for p in out] == list(range(traps.HOLD_PER_REQID))
    assert len(q) == 0 and q.release(7) == []


def test_held_packets_expire_and_totals_are_bounded() -> None:
    t = [0.0]
    q = HoldQueue(clock=lambda: t[0])
    q.trap(_pkt(), POL)
    t[0] += traps.HOLD_SECONDS + 1
    assert q.release(7) == [] and q.dropped == 1
    for r in range(traps.HOLD_TOTAL // traps.HOLD_PER_REQID + 2):
        pol = PolicyParams(POL.src, POL.dst, "out", reqid=100 + r, tmpl_src=POL.tmpl_src,
                           tmpl_dst=POL.tmpl_dst)
        for i in range(traps.HOLD_PER_REQID):
            q.trap(_pkt(i), pol)
    assert len(q) == traps.HOLD_TOTAL


def test_reject_answers_admin_prohibited_v4_and_v6() -> None:
    pkt = _pkt()
    err = icmp_unreachable(pkt)
    assert err is not None
    assert err[12:16] == pkt[16:20] and err[16:20] == pkt[12:16]  # back to the sender
    assert err[9] == 1 and (err[20], err[21]) == (3, 13)  # RFC 1812 §5.2.7.1
    assert struct.unpack_from("!H", err, 2)[0] == len(err)
    assert _ones(err[:20]) == 0xFFFF and _ones(err[20:]) == 0xFFFF
    assert err[28:] == pkt[:28]  # the IP header and 8 bytes quoted (RFC 792)
    src6, dst6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
    p6 = struct.pack("!IHBB16s16s", 0x60000000, 8, 17, 64, src6, dst6) + \
        struct.pack("!HHHH", 1, 2, 8, 0)
    e6 = icmp_unreachable(p6)
    assert e6 is not None
    assert e6[8:24] == dst6 and e6[24:40] == src6 and e6[6] == 58
    assert (e6[40], e6[41]) == (1, 1)  # RFC 4443 §3.1: administratively prohibited
    body = e6[40:]
    pseudo = e6[8:40] + struct.pack("!I3xB", len(body), 58)
    assert _ones(pseudo + body) == 0xFFFF and body[8:] == p6
    # never an error about an error
    assert icmp_unreachable(err) is None and icmp_unreachable(e6) is None
    assert icmp_unreachable(b"\x00" * 10) is None


def test_hold_time_is_xfrmlifetime() -> None:
    """config setup xfrmlifetime= on the userspace plane: how long a trap's packets wait
    for their SA (the kernel's larval state lives as long on XFRM)."""
    t = [100.0]
    q = HoldQueue(clock=lambda: t[0])
    assert q.hold_seconds == traps.HOLD_SECONDS == 30.0
    q.hold_seconds = 5.0
    q.trap(_pkt(1), POL)
    t[0] += 4.0
    q.trap(_pkt(2), POL)
    t[0] += 2.0  # the first is 6 s old now, the second 2 s
    assert [_id(p) for p in q.release(POL.reqid)] == [2]
    assert q.dropped == 1
