"""The userspace plane's policy lookup and inbound selector check, on byte strings only."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pypluto.kernel.base import BackendError, PolicyParams, SAParams, TrafficSelector
from pypluto.kernel.userspace.backend import check_protectable
from pypluto.kernel.userspace.routes import rule_selector
from pypluto.kernel.userspace.selectors import OutboundPolicies, flow_of, inbound_check, port_key

A = ipaddress.ip_address
N = ipaddress.ip_network


def ts(net: str, proto: int = 0, lo: int = 0, hi: int = 65535) -> TrafficSelector:
    return TrafficSelector(N(net), proto, lo, hi)


def v4(src: str, dst: str, proto: int, l4: bytes, frag: int = 0) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, frag, 64, proto, 0,
                       A(src).packed, A(dst).packed) + l4


def udp(sp: int, dp: int, data: bytes = b"x") -> bytes:
    return struct.pack("!HHHH", sp, dp, 8 + len(data), 0) + data


def tcp(sp: int, dp: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, 0x50, 2, 1024, 0, 0)


def icmp(t: int, c: int) -> bytes:
    return struct.pack("!BBHHH", t, c, 0, 1, 1)


def v6(src: str, dst: str, nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, A(src).packed,
                       A(dst).packed) + payload


PEER, ME = "192.0.2.2", "192.0.2.1"


def sa_in(local: list[TrafficSelector], remote: list[TrafficSelector]) -> SAParams:
    return SAParams(src=A(PEER), dst=A(ME), spi=0x1000, direction="in", local_ts=local,
                    remote_ts=remote)


def test_flow_of_reads_ports_icmp_type_code_and_opaque_fragments() -> None:
    f = flow_of(v4("198.51.100.7", "203.0.113.1", 17, udp(1234, 5353)))
    assert f is not None and (f.proto, f.sport, f.dport) == (17, 1234, 5353)
    f = flow_of(v4("198.51.100.7", "203.0.113.1", 1, icmp(8, 0)))
    assert f is not None and (f.sport, f.dport) == (8 << 8, 8 << 8)  # RFC 4301 §4.4.1.1
    f = flow_of(v4("198.51.100.7", "203.0.113.1", 17, b"\0" * 8, frag=0x0010))
    assert f is not None and f.sport is None and f.dport is None  # non-first fragment
    hop_by_hop = bytes((17, 0)) + b"\0" * 6  # next header UDP, 8 bytes long
    f = flow_of(v6("2001:db8::1", "2001:db8::2", 0, hop_by_hop + udp(53, 5353)))
    assert f is not None and (f.proto, f.sport, f.dport) == (17, 53, 5353)
    assert flow_of(b"\x45" + b"\0" * 5) is None


def test_inbound_check_enforces_protocol_and_ports() -> None:
    """The issue's SA: 198.51.100.0/24/udp/5353 (RFC 4301 §5.2 step 4)."""
    check = inbound_check(sa_in([ts("198.51.100.0/24", 17, 5353, 5353)],
                                [ts("203.0.113.0/24")]))
    assert check is not None
    ok = v4("203.0.113.9", "198.51.100.1", 17, udp(40000, 5353))
    assert check(ok) and check(ok)  # cached answer is the same
    assert not check(v4("203.0.113.9", "198.51.100.1", 17, udp(40000, 9999)))
    assert not check(v4("203.0.113.9", "198.51.100.1", 6, tcp(40000, 22)))
    assert not check(v4("203.0.113.9", "198.51.100.1", 1, icmp(8, 0)))
    assert not check(v4("203.0.113.9", "198.51.100.1", 17, b"\0" * 8, frag=0x0020))
    assert not check(v4("192.0.2.99", "198.51.100.1", 17, udp(40000, 5353)))  # address
    assert not check(v4("203.0.113.9", "198.51.100.1", 17, udp(5353, 9999)))  # wrong end


def test_inbound_check_icmp_type_and_code() -> None:
    echo_request = (8 << 8) | 0
    check = inbound_check(sa_in([ts(f"{ME}/32", 1, echo_request, echo_request)],
                                [ts(f"{PEER}/32", 1)]))
    assert check is not None
    assert check(v4(PEER, ME, 1, icmp(8, 0)))
    assert not check(v4(PEER, ME, 1, icmp(0, 0)))  # echo reply
    assert not check(v4(PEER, ME, 1, icmp(8, 1)))
    assert not check(v4(PEER, ME, 17, udp(1, 2)))


def test_inbound_check_any_selectors_check_addresses_only() -> None:
    check = inbound_check(sa_in([ts("198.51.100.0/24")], [ts("203.0.113.0/24")]))
    assert check is not None
    assert check(v4("203.0.113.9", "198.51.100.1", 6, tcp(1, 22)))
    assert not check(v4("203.0.113.9", "192.0.2.1", 6, tcp(1, 22)))
    assert inbound_check(sa_in([], [])) is None


def test_outbound_lookup_most_specific_and_ports() -> None:
    def pol(src: TrafficSelector, dst: TrafficSelector, reqid: int) -> PolicyParams:
        return PolicyParams(src, dst, "out", reqid, tmpl_src=A(ME), tmpl_dst=A(PEER))

    table = OutboundPolicies([
        pol(ts("198.51.100.0/24"), ts("203.0.113.0/24"), 1),
        pol(ts("198.51.100.0/24"), ts("203.0.113.0/24", 17, 5353, 5353), 2),
        pol(ts(f"{ME}/32"), ts(f"{PEER}/32", 6, 22, 22), 3),
        PolicyParams(ts("203.0.113.0/24"), ts("198.51.100.0/24"), "in", 1, A(PEER), A(ME)),
    ])
    hit = table.lookup(v4("198.51.100.1", "203.0.113.1", 17, udp(1, 5353)))
    assert hit is not None and hit[0].reqid == 2 and hit[1] is False  # not cacheable
    hit = table.lookup(v4("198.51.100.1", "203.0.113.1", 6, tcp(1, 80)))
    assert hit is not None and hit[0].reqid == 1
    hit = table.lookup(v4(ME, PEER, 6, tcp(1, 22)))
    assert hit is not None and hit[0].reqid == 3
    assert table.lookup(v4(ME, PEER, 6, tcp(1, 80))) is None  # not covered: not captured
    lone = OutboundPolicies([pol(ts("198.51.100.0/24"), ts("203.0.113.0/24"), 1)])
    hit = lone.lookup(v4("198.51.100.1", "203.0.113.1", 6, tcp(1, 80)))
    assert hit is not None and hit[1] is True  # cacheable by addresses


def test_rule_selector_for_protocol_and_ports() -> None:
    p = PolicyParams(ts(f"{ME}/32", 17, 1000, 2000), ts(f"{PEER}/32", 17, 5353, 5353), "out",
                     1, A(ME), A(PEER))
    assert rule_selector(p) == ("ipproto", "17", "sport", "1000-2000", "dport", "5353")
    icmp_p = PolicyParams(ts(f"{ME}/32", 1, 0x0800, 0x0800), ts(f"{PEER}/32"), "out", 1,
                          A(ME), A(PEER))
    assert rule_selector(icmp_p) == ("ipproto", "1")  # type/code: checked by the plane
    with pytest.raises(BackendError, match="two protocols"):
        rule_selector(PolicyParams(ts(f"{ME}/32", 6), ts(f"{PEER}/32", 17), "out", 1,
                                   A(ME), A(PEER)))


def test_transport_mode_through_nat_is_refused() -> None:
    ok = SAParams(src=A(PEER), dst=A(ME), spi=0x1000, direction="in", mode="transport",
                  encap_sport=4500, encap_dport=4500, local_ts=[ts(f"{ME}/32")],
                  remote_ts=[ts(f"{PEER}/32")])
    check_protectable(ok)
    natted = SAParams(src=A(PEER), dst=A(ME), spi=0x1000, direction="in", mode="transport",
                      encap_sport=4500, encap_dport=4500, local_ts=[ts(f"{ME}/32")],
                      remote_ts=[ts("203.0.113.5/32")])
    with pytest.raises(BackendError, match="transport mode through a NAT"):
        check_protectable(natted)


def test_port_key_is_a_sound_cache_key_for_port_limited_policies() -> None:
    """Packets of one flow share a key; any selector field that differs gives another
    key; packets whose ports are not right after the header get none (looked up each time)."""
    a, b = "198.51.100.1", "203.0.113.1"
    table = OutboundPolicies([
        PolicyParams(ts("198.51.100.0/24"), ts("203.0.113.0/24", 17, 53, 53), "out", 2,
                     tmpl_src=A(ME), tmpl_dst=A(PEER)),
        PolicyParams(ts("198.51.100.0/24"), ts("203.0.113.0/24"), "out", 1,
                     tmpl_src=A(ME), tmpl_dst=A(PEER))])
    dns1, dns2 = v4(a, b, 17, udp(4000, 53, b"one")), v4(a, b, 17, udp(4000, 53, b"other"))
    other = v4(a, b, 17, udp(4000, 54))
    assert port_key(dns1) == port_key(dns2) is not None
    keys = {port_key(p) for p in (dns1, other, v4(a, b, 6, tcp(4000, 53)),
                                  v4(b, a, 17, udp(4000, 53)), v4(a, b, 17, udp(4001, 53)))}
    assert len(keys) == 5
    # whenever two packets share a key, the SPD gives them the same policy
    for p, q in ((dns1, dns2),):
        assert table.lookup(p) == table.lookup(q)
    assert table.lookup(dns1)[0].reqid == 2 and table.lookup(other)[0].reqid == 1  # type: ignore[index]
    # ICMP: type and code only (the checksum varies per packet)
    echo = v4(a, b, 1, icmp(8, 0))
    assert port_key(echo) == port_key(echo[:22] + b"\xff\xff" + echo[24:])
    assert port_key(echo) != port_key(v4(a, b, 1, icmp(0, 0)))
    assert port_key(v4(a, b, 17, udp(1, 53), frag=0x2000)) is None  # more fragments
    assert port_key(v4(a, b, 17, udp(1, 53), frag=5)) is None  # not the first fragment
    assert port_key(b"\x46" + dns1[1:]) is None  # IPv4 options
    assert port_key(v6("2001:db8::1", "2001:db8::2", 44, bytes(8) + udp(1, 53))) is None
    k6 = port_key(v6("2001:db8::1", "2001:db8::2", 17, udp(1, 53)))
    assert k6 is not None and k6 != port_key(v6("2001:db8::1", "2001:db8::2", 17, udp(1, 54)))


def test_equal_selectors_share_one_check_and_one_list() -> None:
    """10,000 Child SAs of one conn hold one selector list and one check (issue 18)."""
    from pypluto.kernel.userspace.sa_table import SATable

    def fresh(spi: int, local: str = "203.0.113.0/24") -> SAParams:
        sa = sa_in([ts(local, 17, 5353, 5353)], [ts("198.51.100.0/24")])
        sa.spi, sa.encr_id, sa.encr_key = spi, 20, bytes(20)  # AES-GCM-16 128
        return sa

    a, b, c = fresh(0x1000), fresh(0x1001), fresh(0x1002, "203.0.113.0/25")
    assert a.local_ts is not b.local_ts
    assert inbound_check(a) is inbound_check(b) is not inbound_check(c)
    table = SATable()
    for sa in (a, b, c):
        table.add(sa, None, inbound_check(sa))
    assert a.local_ts is b.local_ts and a.remote_ts is b.remote_ts is c.remote_ts
    assert a.local_ts is not c.local_ts and a.local_ts == [ts("203.0.113.0/24", 17, 5353, 5353)]
    # the shared check still enforces each SA's own selectors
    good = v4("198.51.100.7", "203.0.113.1", 17, udp(1234, 5353))
    far = v4("198.51.100.7", "203.0.113.200", 17, udp(1234, 5353))
    sb, sc = table.get(A(ME), 0x1001), table.get(A(ME), 0x1002)
    assert sb is not None and sc is not None
    assert sb.selector_check is not None and sc.selector_check is not None
    assert sb.selector_check(good) and sb.selector_check(far)
    assert sc.selector_check(good) and not sc.selector_check(far)


def test_shared_lists_and_checks_by_selector_identity() -> None:
    """The engine hands the same (memoised) selector objects to every Child SA of a conn:
    the shared list and check are found by their identity (issue 18), and selectors that
    are only equal, or different, still get what their content says."""
    from pypluto.kernel.userspace.selectors import shared_ts

    local, remote = ts("203.0.113.0/24"), ts("198.51.100.0/24")
    first = sa_in([local], [remote])
    again = sa_in([local], [remote])  # new lists, the same selector objects
    equal = sa_in([ts("203.0.113.0/24")], [ts("198.51.100.0/24")])  # equal, other objects
    other = sa_in([ts("203.0.113.0/25")], [remote])
    assert shared_ts(first.local_ts) is shared_ts(again.local_ts) is shared_ts(equal.local_ts)
    assert shared_ts(other.local_ts) is not shared_ts(first.local_ts)
    assert shared_ts(other.local_ts) == [ts("203.0.113.0/25")]
    assert inbound_check(first) is inbound_check(again) is inbound_check(equal)
    check, narrow = inbound_check(first), inbound_check(other)
    assert check is not None and narrow is not None and check is not narrow
    far = v4("198.51.100.7", "203.0.113.200", 6, tcp(1, 2))
    assert check(far) and not narrow(far)
