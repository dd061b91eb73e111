"""Hostile traffic selectors and Child SA negotiation (RFC 7296 §1.3, §2.9, §2.9.2, §3.13).

An authenticated peer lies about selectors, as a responder answering us and as an
initiator asking us: answers wider than proposed, swapped or of another family, ranges
that are no CIDR block, unknown selector types, malformed ranges, ports without a
protocol, hundreds of selectors, rekeys that change the selectors, CREATE_CHILD_SA
for another conn whose authentication the peer never passed, and selectors that would
take the traffic of another conn's Child SA.  Each is refused (TS_UNACCEPTABLE or a
failed Child SA), nothing is widened, nothing another Child SA owns is touched.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from pypluto.config.model import bump_generation
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import codec
from pypluto.ike import ts as T
from pypluto.ike.actions import AddPolicy, AddSA, Log, SendPacket
from pypluto.ike.ts import TS
from pypluto.wire import payloads as wp

from .harness import Net, make_conn
from .test_hostile_established import (
    _added,
    _answer,
    _child_rekey_answer,
    _child_request,
    _east_request,
    _no_internal_error,
    _notify_types,
    _request,
    _respond,
    _setup,
)
from .test_hostile_establishment import _hostile_auth_reply, _replace, _ts, _west_failed_clean

WNET, ENET = "198.51.100.0/24", "203.0.113.0/24"  # west's and east's subnets (harness)


def _t(net: str, proto: int = 0, port: int = 0) -> TS:
    return T.from_network(ipaddress.ip_network(net), (proto, port))


def _rng(a: str, b: str, proto: int = 0, sport: int = 0, eport: int = 65535) -> TS:
    lo, hi = ipaddress.ip_address(a), ipaddress.ip_address(b)
    return TS(lo.version, proto, sport, eport, int(lo), int(hi))


def _logs(acts: list) -> list[str]:
    return [a.message for a in acts if isinstance(a, Log)]


def _v4_raw(ts_type: int, proto: int, sport: int, eport: int, addrs: bytes) -> wp.RawTrafficSelector:
    """A selector whose bytes we choose (the codec would refuse to write a lie)."""
    return wp.RawTrafficSelector(ts_type, sport.to_bytes(2, "big") + eport.to_bytes(2, "big")
                                 + addrs, proto)


# ================================================================== lying answers (initiator)
def _answer_ts(tsi: list[TS] | None = None, tsr: list[TS] | None = None,
               raw_tsr: list | None = None) -> Callable[[list], list]:
    def mut(pl: list) -> list:
        if tsi is not None:
            pl = _replace(pl, PT.TSi, codec.ts_payload(PT.TSi, tsi))
        if tsr is not None:
            pl = _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, tsr))
        if raw_tsr is not None:
            pl = _replace(pl, PT.TSr, wp.TSPayload(raw_tsr, payload_type=PT.TSr))
        return pl
    return mut


def _refused_answer(net: Net) -> None:
    assert net.established(net.west) and not net.children(net.west)
    _west_failed_clean(net)
    assert any("Child SA failed" in m for m in net.west.logs()), net.west.logs()
    # the responder's Child SA is deleted too (§1.3): nothing stays half-installed
    assert not net.children(net.east) and not net.east.kernel_sas


V4_16 = bytes(16) + bytes(15) + b"\x01"  # two 16-byte addresses under an IPv4 type


@pytest.mark.parametrize("what", [
    "swapped",  # TSi/TSr exchanged: each names the other side's subnet
    "tsr_range_wider",  # a range reaching one address past our subnet
    "tsr_fc_addr_range",  # TS_FC_ADDR_RANGE (13, RFC 4595): no type we proposed
    "tsr_type_0", "tsr_type_255",
    "tsr_start_after_end", "tsr_ports_reversed",
    "tsr_proto0_with_ports",  # §3.13.1: no protocol, the ports MUST be 0-65535
    "tsr_65_selectors",
])
def test_lying_child_sa_answer_is_refused(what: str) -> None:
    """Hostile answers to our IKE_AUTH Child SA (§2.9: the answer is a subset of what we
    proposed, of the types we proposed): refused, nothing installed on either end."""
    e = int(ipaddress.ip_address("203.0.113.0"))
    mut = {
        "swapped": _answer_ts([_t(ENET)], [_t(WNET)]),
        "tsr_range_wider": _answer_ts(tsr=[TS(4, 0, 0, 65535, e, e + 256)]),
        "tsr_fc_addr_range": _answer_ts(raw_tsr=[wp.RawTrafficSelector(13, bytes(40))]),
        "tsr_type_0": _answer_ts(raw_tsr=[wp.RawTrafficSelector(0, bytes(12))]),
        "tsr_type_255": _answer_ts(raw_tsr=[wp.RawTrafficSelector(255, bytes(12))]),
        "tsr_start_after_end": _answer_ts(raw_tsr=[_v4_raw(
            7, 0, 0, 65535, (e + 9).to_bytes(4, "big") + (e + 1).to_bytes(4, "big"))]),
        "tsr_ports_reversed": _answer_ts(raw_tsr=[_v4_raw(
            7, 6, 90, 80, e.to_bytes(4, "big") + (e + 255).to_bytes(4, "big"))]),
        "tsr_proto0_with_ports": _answer_ts(raw_tsr=[_v4_raw(
            7, 0, 500, 500, e.to_bytes(4, "big") + (e + 255).to_bytes(4, "big"))]),
        "tsr_65_selectors": _answer_ts(tsr=[TS(4, 0, 0, 65535, e + k, e + k)
                                            for k in range(65)]),
    }[what]
    net = Net(west_kw={"narrowing": True}, east_kw={"narrowing": True})
    _hostile_auth_reply(net, mut)
    _refused_answer(net)


def test_answer_with_a_16_octet_ipv4_selector_is_dropped() -> None:
    """TS_IPV4_ADDR_RANGE with two 16-octet addresses (selector length 40): the message
    cannot be parsed, so it is dropped like a corrupt one (nothing installed, no crash);
    the retransmitted request then gets the responder's real answer."""
    net = Net()
    _hostile_auth_reply(net, _answer_ts(raw_tsr=[_v4_raw(7, 0, 0, 65535, V4_16)]))
    assert not net.west.kernel_sas and not net.west.policies and not net.established(net.west)
    assert any("malformed encrypted payloads" in m for m in net.west.logs())
    net.advance(30)
    (w,) = net.children(net.west)
    assert (w.local_ts, w.remote_ts) == ([WNET], [ENET])


def test_answer_proto0_with_ports_is_malformed_not_widened() -> None:
    """Protocol 0 with a port range (§3.13.1 says 0-65535): a kernel selector of protocol
    0 has no ports, so taking it would install every port of the range; the selector is
    malformed (fails before the fix: the answer was accepted with narrowing=yes)."""
    net = Net(west_kw={"narrowing": True}, east_kw={"narrowing": True})
    _hostile_auth_reply(net, _answer_ts(tsr=[_t(ENET)._replace(sport=500, eport=500)]))
    _refused_answer(net)
    assert any("malformed traffic selectors in the answer" in m for m in net.west.logs())
    assert T.from_range(7, 0, 500, 500, "203.0.113.0", "203.0.113.255") is None
    assert T.from_range(7, 17, 500, 500, "203.0.113.0", "203.0.113.255") is not None


def test_non_cidr_range_answer_installs_exactly_its_blocks() -> None:
    """A narrowed answer 203.0.113.3-203.0.113.77 (narrowing=yes) is no CIDR block: the
    kernel gets the blocks that make it up, exactly; nothing outside it is covered."""
    net = Net(west_kw={"narrowing": True}, east_kw={"narrowing": True})
    r = _rng("203.0.113.3", "203.0.113.77")
    _hostile_auth_reply(net, _answer_ts(tsr=[r]))
    (w,) = net.children(net.west)
    assert w.remote_ts == ["203.0.113.3-203.0.113.77"]
    want = set(ipaddress.summarize_address_range(ipaddress.ip_address("203.0.113.3"),
                                                 ipaddress.ip_address("203.0.113.77")))
    outs = {p.dst.network for p in net.west.policies if p.direction == "out"}
    assert outs == want
    covered = {int(a) for n in outs for a in (n.network_address, n.broadcast_address)}
    assert min(covered) == r.start and max(covered) == r.end
    assert sum(n.num_addresses for n in outs) == r.end - r.start + 1
    sa_out = next(s for s in net.west.kernel_sas.values() if s.direction == "out")
    assert {k.network for k in sa_out.remote_ts} == want


def test_non_cidr_ranges_making_too_many_policies_are_refused() -> None:
    """narrowing=yes: 40 one-address-short ranges answered for our /24 would make 40 x 8
    kernel policy pairs (each range is 8 CIDR blocks): more than the conn's own selectors
    make and more than ts.MAX_KERNEL_PAIRS; refused (before the fix: installed)."""
    net = Net(west_kw={"narrowing": True, "rightsubnet": "10.0.0.0/8"},
              east_kw={"narrowing": True, "rightsubnet": "10.0.0.0/8"})
    b = int(ipaddress.ip_address("10.0.0.0"))
    rs = [TS(4, 0, 0, 65535, b + 256 * k + 1, b + 256 * k + 255) for k in range(40)]
    assert T.kernel_pairs([_t(WNET)], rs) == 320 > T.MAX_KERNEL_PAIRS
    _hostile_auth_reply(net, _answer_ts(tsr=rs))
    _refused_answer(net)


# ================================================================== hostile requests (responder)
@pytest.mark.parametrize("what", ["fc_addr_range", "type_0", "type_255", "v4_16_octets",
                                  "proto0_ports", "ports_reversed", "zero_selectors",
                                  "65_selectors", "swapped", "other_family"])
def test_hostile_create_child_sa_selectors(what: str) -> None:
    """CREATE_CHILD_SA requests with broken or hostile TSi: TS_UNACCEPTABLE (or, for an
    unparseable payload, INVALID_SYNTAX), no SA, the IKE SA and its Child SA stay."""
    net, w, e = _setup()
    c = w.children[0]
    a = int(ipaddress.ip_address("198.51.100.0")).to_bytes(4, "big")
    z = int(ipaddress.ip_address("198.51.100.255")).to_bytes(4, "big")
    raw = {"fc_addr_range": wp.RawTrafficSelector(13, bytes(40)),
           "type_0": wp.RawTrafficSelector(0, bytes(12)),
           "type_255": wp.RawTrafficSelector(255, bytes(12)),
           "v4_16_octets": _v4_raw(7, 0, 0, 65535, V4_16),
           "proto0_ports": _v4_raw(7, 0, 1, 1024, a + z),
           "ports_reversed": _v4_raw(7, 17, 9, 8, a + z)}.get(what)
    payloads = _child_request(w)
    if raw is not None:
        payloads = _replace(payloads, PT.TSi, wp.TSPayload([raw], payload_type=PT.TSi))
    elif what == "zero_selectors":
        payloads = _replace(payloads, PT.TSi, wp.TSPayload([], payload_type=PT.TSi))
    elif what == "65_selectors":
        payloads = _child_request(w, tsi=[*c.local_ts] * 65)
    elif what == "swapped":
        payloads = _child_request(w, tsi=c.remote_ts, tsr=c.local_ts)
    else:
        payloads = _child_request(w, tsi=[_t("2001:db8::/64")], tsr=[_t("2001:db8:1::/64")])
    acts = _request(net, w, 36, payloads)
    want = [N.INVALID_SYNTAX] if what == "v4_16_octets" else [N.TS_UNACCEPTABLE]
    assert _notify_types(_answer(w, acts)) == want
    assert not _added(acts) and len(e.children) == 1 and e.established
    _no_internal_error(net.east)


def _wide_setup() -> tuple:
    """narrowing=yes on both ends with wide subnets: a peer may pick its selectors."""
    kw = {"narrowing": True, "leftsubnet": "10.0.0.0/9", "rightsubnet": "10.128.0.0/9"}
    return _setup(west_kw=kw, east_kw=kw)


def test_responder_refuses_selectors_that_make_too_many_policies() -> None:
    """narrowing=yes: 64 TSi and 64 TSr addresses would be answered as 64 x 64 pairs of
    kernel policies (before the fix the exchange also took seconds: ts.left_out ran
    per pair); TS_UNACCEPTABLE, quickly."""
    net, w, e = _wide_setup()
    bi, br = (int(ipaddress.ip_address(a)) for a in ("10.0.0.0", "10.128.0.0"))
    tsi = [TS(4, 0, 0, 65535, bi + 2 * k, bi + 2 * k) for k in range(64)]
    tsr = [TS(4, 0, 0, 65535, br + 2 * k, br + 2 * k) for k in range(64)]
    acts = _request(net, w, 36, _child_request(w, tsi=tsi, tsr=tsr))
    assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
    assert not _added(acts) and len(e.children) == 1
    # a few selectors (the §2.9 case) still narrow and are answered
    acts = _request(net, w, 36, _child_request(w, tsi=tsi[:3], tsr=tsr[:2]))
    assert _notify_types(_answer(w, acts)) == []
    new = e.children[-1]
    assert (len(new.remote_ts), len(new.local_ts)) == (3, 2)


def test_left_out_is_linear_in_each_list() -> None:
    """``ts.left_out`` looks at each end's selectors once (it was once per pair: with
    a peer's lists as ``conf_*`` in ts_fit_grade, cubic)."""
    loc = [_t(f"10.0.{k}.0/24") for k in range(40)]
    rem = [_t(f"10.1.{k}.0/24") for k in range(40)]
    assert T.left_out(loc[:1], rem[:1], loc, rem) == tuple(
        (lt, rt) for lt in loc for rt in rem if not (lt == loc[0] and rt == rem[0]))
    assert T.left_out(loc, rem, loc, rem) == ()


# ================================================================== rekeys (§2.9.2)
def _rekey_request(w, tsi: list[TS] | None = None, tsr: list[TS] | None = None) -> list:  # noqa: ANN001
    wc = w.children[0]
    return _child_request(w, extra=[codec.notify(N.REKEY_SA, b"", ProtocolID.ESP,
                                                 wc.spi_in.to_bytes(4, "big"))],
                          tsi=tsi, tsr=tsr)


@pytest.mark.parametrize("which", ["tsi", "tsr"])
def test_rekey_request_narrowing_the_child_sa_is_refused(which: str) -> None:
    """§2.9.2: a rekey keeps the Child SA's selectors.  A REKEY_SA request proposing a
    part of them is refused (TS_UNACCEPTABLE, as Libreswan's "rekey: received Traffic
    Selectors does not contain existing IPsec SA Traffic Selectors"); before the fix the
    responder narrowed to it and replaced the Child SA with a smaller one."""
    net, w, e = _setup()
    old = e.children[0]
    part = {"tsi": {"tsi": [_t("198.51.100.0/25")]},
            "tsr": {"tsr": [_t("203.0.113.128/25")]}}[which]
    acts = _request(net, w, 36, _rekey_request(w, **part))
    assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
    assert not _added(acts) and e.children == [old] and not old.peer_rekeys
    assert (old.local_ts, old.remote_ts) == ([_t(ENET)], [_t(WNET)])


def test_rekey_request_with_wider_selectors_gets_the_old_ones() -> None:
    """A peer rekeying with its original, wider selectors (Windows does, Libreswan takes
    it): the answer and the new Child SA carry exactly the old ones."""
    net, w, e = _setup()
    old = e.children[0]
    acts = _request(net, w, 36, _rekey_request(w, tsi=[_t("198.51.0.0/16")],
                                               tsr=[_t("203.0.0.0/16")]))
    got = _answer(w, acts)
    assert _notify_types(got) == []
    assert got is not None and _ts(got, PT.TSi) == [_t(WNET)] and _ts(got, PT.TSr) == [_t(ENET)]
    new = old.peer_rekeys[-1]
    assert (new.local_ts, new.remote_ts) == (old.local_ts, old.remote_ts)


@pytest.mark.parametrize("change", ["narrower", "wider", "swapped"])
def test_rekey_answer_changing_the_selectors_is_refused(change: str) -> None:
    """East (initiator of the rekey) gets an answer with other selectors than the Child
    SA has: nothing installed, the old Child SA stays."""
    net, w, e = _setup()
    old = e.children[0]
    msgid, req = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    ans = _child_rekey_answer(req, b"\x11\x22\x33\x44")
    tsi, tsr = {"narrower": ([_t("203.0.113.0/25")], [_t(WNET)]),
                "wider": ([_t("203.0.0.0/16")], [_t(WNET)]),
                "swapped": ([_t(WNET)], [_t(ENET)])}[change]
    ans = _replace(_replace(ans, PT.TSi, codec.ts_payload(PT.TSi, tsi)),
                   PT.TSr, codec.ts_payload(PT.TSr, tsr))
    kernel = dict(net.east.kernel_sas)
    acts = _respond(net, w, msgid, ans)
    assert not _added(acts) and net.east.kernel_sas == kernel
    assert old in e.children and not old.replaced
    assert any("CREATE_CHILD_SA failed" in m for m in _logs(acts)), _logs(acts)
    _no_internal_error(net.east)


# ================================================================== conn switching (§2.9)
STAFF = "10.9.0.0/16"  # west's side of east's second conn


@pytest.mark.parametrize("kw,ok", [
    ({}, True),  # the same authentication: the second conn takes the Child SA
    ({"authby": "rsasig"}, False),  # asks for a signature; the peer showed a PSK
    ({"rightid": "@other-east.example"}, False),  # we are someone else there
])
def test_create_child_sa_for_another_conn_keeps_its_auth(kw: dict, ok: bool) -> None:
    """West authenticated with a PSK for conn west-east; its CREATE_CHILD_SA names the
    selectors of east's conn "staff".  East switches to "staff" only when "staff" would
    have accepted that IKE_AUTH: our ID and what the peer must authenticate with are
    the same (Libreswan's compare_connection_id compares the IDs and CA).  Before the
    fix any conn whose rightid matched took it, a certificate-only conn included."""
    net, w, e = _setup()
    net.apply(net.east, net.east.engine.add_connection(
        make_conn("staff", local_left=False, leftsubnet=STAFF, **kw)))
    bump_generation()
    acts = _request(net, w, 36, _child_request(w, tsi=[_t(STAFF)]))
    names = sorted(c.conn.name for c in e.children)
    if ok:
        assert _notify_types(_answer(w, acts)) == [] and names == ["staff", "west-east"]
    else:
        assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
        assert names == ["west-east"] and not _added(acts)
        assert not any(isinstance(a, AddPolicy) and STAFF in str(a.policy.src.network)
                       for a in acts)


@pytest.mark.parametrize("kw", [{"type": "passthrough"}, {"type": "drop"},
                                {"type": "reject"}, {"authby": "never"}])
def test_create_child_sa_never_negotiates_a_shunt_conn(kw: dict) -> None:
    """East's shunt conn (its traffic passes in clear, or is dropped) for the same peer
    and selectors 10.9.0.0/16: a CREATE_CHILD_SA naming them would turn the shunt into
    an IPsec SA to this peer (the dropped or local traffic sent to it); TS_UNACCEPTABLE.
    Before the fix east made a Child SA of the shunt conn."""
    net, w, e = _setup()
    net.apply(net.east, net.east.engine.add_connection(
        make_conn("shunt", local_left=False, leftsubnet=STAFF, **kw)))
    bump_generation()
    acts = _request(net, w, 36, _child_request(w, tsi=[_t(STAFF)]))
    assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
    assert [c.conn.name for c in e.children] == ["west-east"] and not _added(acts)


def test_anonymous_peer_cannot_take_a_child_sa_of_a_psk_conn() -> None:
    """An IKE SA authenticated with NULL (RFC 7619: anyone) asks for the selectors of a
    PSK conn for %any peers: its ID (ID_NULL) matches rightid=%any, but it never showed
    the PSK; refused (before the fix east made the Child SA of that conn)."""
    net, w, e = _setup(west_kw={"authby": "null"}, east_kw={"authby": "null"})
    net.apply(net.east, net.east.engine.add_connection(make_conn(
        "staff", local_left=False, left="%any", leftid="%any", leftsubnet=STAFF)))
    bump_generation()
    acts = _request(net, w, 36, _child_request(w, tsi=[_t(STAFF)]))
    assert _notify_types(_answer(w, acts)) == [N.TS_UNACCEPTABLE]
    assert [c.conn.name for c in e.children] == ["west-east"] and not _added(acts)


# ================================================================== another conn's traffic
VICTIM = "10.1.0.0/24"


def _hijack_net(west_rw_subnet: str) -> Net:
    """East: west-east (west's side VICTIM, established first) and "rw" (right=%any,
    @rw.example, narrowing=yes, west's side 10.0.0.0/8).  West then brings up "rw"
    proposing ``west_rw_subnet``."""
    net = Net(west_kw={"leftsubnet": VICTIM}, east_kw={"leftsubnet": VICTIM})
    net.apply(net.east, net.east.engine.add_connection(make_conn(
        "rw", local_left=False, left="%any", leftid="@rw.example", leftsubnet="10.0.0.0/8",
        narrowing=True)))
    net.apply(net.west, net.west.engine.add_connection(make_conn(
        "rw", local_left=True, leftid="@rw.example", leftsubnet=west_rw_subnet)))
    bump_generation()
    net.up()
    net.apply(net.west, net.west.engine.initiate("rw", net.now))
    net.run()
    return net


@pytest.mark.parametrize("sub,stolen", [(VICTIM, True), ("10.1.0.0/25", True),
                                        ("10.0.0.0/16", False), ("10.2.0.0/16", False)])
def test_narrowed_selectors_never_take_another_child_sas_traffic(sub: str,
                                                                 stolen: bool) -> None:
    """A peer of the narrowing template "rw" asks for VICTIM, the selectors of the
    established west-east Child SA (the kernel keeps one policy per selector: the new
    one would replace it, Libreswan refuses it: "cannot install kernel policy ...; in
    use by"), or a part of it (the narrower policy would win); refused.  Before the fix
    east installed both.  A disjoint subnet is fine."""
    net = _hijack_net(sub)
    names = sorted(c.conn for c in net.children(net.east))
    owners = {(str(p.src.network), str(p.dst.network), p.direction): p.conn_name
              for p in net.east.policies}
    assert owners[(ENET, VICTIM, "out")] == "west-east"
    if stolen:
        assert names == ["west-east"], names
        assert not any(p.conn_name == "rw" for p in net.east.policies)
        assert any("lie inside" in m and "west-east" in m for m in net.east.logs())
    else:
        # wider than VICTIM (10.0.0.0/16 contains it): the narrower west-east policy
        # keeps its traffic; a disjoint one takes nothing from it
        assert names == ["rw", "west-east"], net.east.logs()
    assert net.established(net.east) and len(net.established(net.east)) == 2


def test_initiator_refuses_an_answer_narrowed_into_another_child_sa() -> None:
    """Our conn "vpn" offers 10.0.0.0/8 (narrowing=yes); its gateway answers VICTIM, the
    remote selectors of our established west-east Child SA (to another peer in real
    life): taking it would send west-east's traffic to this gateway; refused."""
    net = Net(west_kw={"rightsubnet": VICTIM}, east_kw={"rightsubnet": VICTIM})
    net.up()
    assert len(net.children(net.west)) == 1
    net.apply(net.west, net.west.engine.add_connection(make_conn(
        "vpn", local_left=True, rightsubnet="10.0.0.0/8", narrowing=True)))
    net.apply(net.east, net.east.engine.add_connection(make_conn(
        "vpn", local_left=False, rightsubnet="10.0.0.0/8", narrowing=True)))
    bump_generation()
    w_ike = next(iter(net.west.engine.by_serial.values()))
    net.apply(net.west, net.west.engine.create_child(
        w_ike, net.west.engine.connections["vpn"], net.now))
    # east answers honestly (10.0.0.0/8); make its answer VICTIM
    frm, pkt = net.queue.pop(0)
    assert frm is net.west
    e_ike = next(iter(net.east.engine.by_serial.values()))
    acts = net.east.engine.receive(pkt.data, pkt.remote, pkt.local, net.now)
    net.apply(net.east, acts)
    (resp,) = [a for a in acts if isinstance(a, SendPacket)]
    net.queue.clear()
    m = codec.parse(resp.data)
    assert isinstance(m.sk, wp.SKPayload)
    pl = codec.decrypt(m.sk, w_ike.prot_in)
    pl = _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, [_t(VICTIM)]))
    acts = []
    for d in net.east.engine.encode(e_ike, 36, True, m.message_id, pl):
        a = net.west.engine.receive(d, resp.remote, resp.local, net.now)
        net.apply(net.west, a)
        acts += a
    assert not [a for a in acts if isinstance(a, AddSA)]
    assert any("lie inside" in x for x in _logs(acts)), _logs(acts)
    assert [c.conn for c in net.children(net.west)] == ["west-east"]
    assert {p.conn_name for p in net.west.policies} == {"west-east"}


# ================================================================== transport mode
@pytest.mark.parametrize("narrowing", [False, True])
@pytest.mark.parametrize("tsi,ok", [("192.0.2.200/32", False), ("192.0.2.0/24", None),
                                    ("192.0.2.1/32", True)])
def test_transport_mode_selectors_are_the_peers_own_address(narrowing: bool, tsi: str,
                                                           ok: bool | None) -> None:
    """Transport mode protects the two hosts' own traffic (RFC 4301 §4.1): a TSi naming
    another address is refused; one naming the peer's subnet is refused without
    narrowing and narrowed to the peer's address with it (never installed wider)."""
    kw = {"type": "transport", "leftsubnet": None, "rightsubnet": None,
          "narrowing": narrowing}
    net, w, e = _setup(west_kw=kw, east_kw=kw)
    acts = _request(net, w, 36, _child_request(
        w, extra=[codec.notify(N.USE_TRANSPORT_MODE)], tsi=[_t(tsi)]))
    got = _answer(w, acts)
    if ok is False or (ok is None and not narrowing):
        assert _notify_types(got) == [N.TS_UNACCEPTABLE]
        assert not _added(acts) and len(e.children) == 1
    else:
        assert _notify_types(got) == [N.USE_TRANSPORT_MODE]
        new = e.children[-1]
        assert new.mode == "transport" and new.remote_ts == [_t("192.0.2.1/32")]
        assert got is not None and _ts(got, PT.TSi) == [_t("192.0.2.1/32")]


def test_rekey_of_a_nat_transport_child_sa() -> None:
    """Transport mode with the initiator behind a NAT (§2.23.1): its TSi names its inner
    address, the SA is installed for its outer one.  Its rekey names the inner address
    again and must be taken (§2.9.2, the Child SA keeps its selectors); before the fix
    the responder compared it with the outer address, answered TS_UNACCEPTABLE, and
    every rekey became a re-authentication (L2TP/IPsec clients behind NAT)."""
    kw = {"type": "transport", "leftsubnet": None, "rightsubnet": None}
    net = Net(west_kw=kw, east_kw={**kw, "left": "%any"}, nat=True)
    net.up()
    (e_old,) = net.children(net.east)
    assert e_old.remote_ts == ["203.0.113.9/32"] and e_old.mode == "transport"
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(5)
    (e_new,) = net.children(net.east)
    (w_new,) = net.children(net.west)
    assert e_new.serial != e_old.serial and e_new.remote_ts == ["203.0.113.9/32"]
    assert (w_new.local_ts, w_new.remote_ts) == (["192.0.2.1/32"], ["192.0.2.2/32"])
    assert len(net.established(net.west)) == 1  # no re-authentication
    assert not any("TS_UNACCEPTABLE" in m for m in net.west.logs() + net.east.logs())
