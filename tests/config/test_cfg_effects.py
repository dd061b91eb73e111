"""Keywords that reach the engine: ipsec.conf text -> Connection -> what the engine does.

Each test reads the key from real ``ipsec.conf`` text (the parser's path), hands the
resulting Connection fields to the sans-I/O engine harness of ``tests/ike`` and checks
the effect that Libreswan's documentation describes.  ``config/keywords.py`` names
these tests as the proof for those keys (issue 12 item 7).
"""

from __future__ import annotations

from typing import Any

from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.parser import parse_config_text
from pypluto.ike.actions import SendPacket

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"


def _fields(body: str, *names: str) -> dict[str, Any]:
    cfg = parse_config_text(BASE + body, "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    conn = cfg.conns["c"]
    return {n: getattr(conn, n) for n in names}


def _out_sas(net: Net) -> list:
    return [sa for sa in net.west.kernel_sas.values() if sa.direction == "out"]


def test_reqid_is_the_child_sas_reqid() -> None:
    kw = _fields("\treqid=4242\n", "reqid")
    assert kw == {"reqid": 4242}
    net = Net(west_kw=kw)
    net.up()
    assert net.west.kernel_sas and {sa.reqid for sa in net.west.kernel_sas.values()} == {4242}


def test_replay_window_reaches_the_sas() -> None:
    for text, want in (("64", 64), ("0", 0)):
        kw = _fields(f"\treplay-window={text}\n", "replay_window")
        net = Net(west_kw=kw)
        net.up()
        assert {sa.replay_window for sa in net.west.kernel_sas.values()} == {want}


def test_ipsec_max_bytes_and_packets_are_the_hard_limits() -> None:
    kw = _fields("\tipsec-max-bytes=1000000\n\tipsec-max-packets=5000\n",
                 "ipsec_max_bytes", "ipsec_max_packets")
    net = Net(west_kw=kw)
    net.up()
    sas = _out_sas(net)
    assert sas and all(sa.hard_bytes == 1000000 and sa.hard_packets == 5000 for sa in sas)


def test_peer_ikeport_is_where_ike_goes() -> None:
    """rightikeport=: the initiator sends IKE_SA_INIT to that port (from 4500, as
    Libreswan does for a non-500 port)."""
    cfg = parse_config_text(BASE + "\trightikeport=5000\n", "f")
    right = cfg.conns["c"].right
    assert right.ikeport == 5000
    net = Net()
    net.cut = True
    net.west.engine.connections["west-east"].right.ikeport = right.ikeport
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    first = next(a for a in net.west.actions if isinstance(a, SendPacket))
    assert (first.remote.port, first.local.port) == (5000, 4500)


def test_retransmit_interval_and_timeout() -> None:
    """retransmit-interval= is the first retransmit delay (doubling); the initiator
    gives up after retransmit-timeout= (simulated clock)."""
    kw = _fields("\tretransmit-interval=2000\n\tretransmit-timeout=20s\n",
                 "retransmit_interval", "retransmit_timeout")
    assert kw == {"retransmit_interval": 2.0, "retransmit_timeout": 20.0}
    net = Net(west_kw=kw)
    net.cut = True
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.advance(1.9)
    assert len([a for a in net.west.actions if isinstance(a, SendPacket)]) == 1
    net.advance(0.2)  # 2.1 s: the first retransmit
    assert len([a for a in net.west.actions if isinstance(a, SendPacket)]) == 2
    net.advance(15)
    assert [e.kind for e in net.west.events] == []
    net.advance(5)  # past 20 s
    assert [e.kind for e in net.west.events] == ["failed"]


def test_nat_keepalive_yes_and_no() -> None:
    """nat-keepalive=no: the host behind the NAT sends no keepalives (RFC 3948 §2.3);
    the default sends them every keep-alive seconds."""
    counts = {}
    for text in ("yes", "no"):
        kw = _fields(f"\tnat-keepalive={text}\n", "nat_keepalive")
        net = Net(nat=True, west_kw=kw, east_kw={"left": "%any"})
        net.up()
        assert net.established(net.west)
        net.advance(65)
        counts[text] = net.west.keepalives
    assert counts["yes"] >= 2 and counts["no"] == 0


def test_mtu_and_metric_reach_the_outbound_policies_and_the_updown() -> None:
    """mtu= / metric=: the outbound policies carry them (their routes get them, proven on
    the hosts by tests/daemon/test_userspace_mtu.py and tests/kernel/test_xfrm_netns.py);
    the inbound ones do not; the updown sees PLUTO_MTU and PLUTO_METRIC."""
    from pypluto.daemon.updown import Verb, updown_env
    from pypluto.ike.actions import Updown

    kw = _fields("\tmtu=1300\n\tmetric=7\n", "mtu", "metric")
    assert kw == {"mtu": 1300, "metric": 7}
    net = Net(west_kw=kw)
    net.west.engine._connections["west-east"].local.updown = "/bin/true"
    net.up()
    pols = [p for p in net.west.policies if p.direction == "out"]
    assert pols and all((p.mtu, p.metric) == (1300, 7) for p in pols)
    assert all(p.mtu is None for p in net.west.policies if p.direction != "out")
    ups = [a for a in net.west.actions if isinstance(a, Updown) and a.up]
    assert ups
    env = updown_env(Verb.UP, ups[0].child)
    assert (env["PLUTO_MTU"], env["PLUTO_METRIC"]) == ("1300", "7")
    plain = Net()
    plain.up()
    assert all(p.mtu is None and p.metric is None for p in plain.west.policies)


def test_nexthop_reaches_the_outbound_policies_and_the_updown() -> None:
    """leftnexthop=: the outbound policies carry it as their route's gateway (on the
    host: tests/kernel/test_xfrm_netns.py::test_nexthop_is_the_gateway_of_the_route),
    the updown sees it as PLUTO_NEXT_HOP; unset, PLUTO_NEXT_HOP is the peer (%direct)."""
    import ipaddress

    from pypluto.daemon.updown import Verb, updown_env
    from pypluto.ike.actions import Updown

    cfg = parse_config_text(BASE + "\tleftnexthop=192.0.2.254\n\trightnexthop=%direct\n", "f")
    assert cfg.conns["c"].left.nexthop_addr == ipaddress.ip_address("192.0.2.254")
    assert cfg.conns["c"].right.nexthop_addr is None
    for nexthop, want in (("192.0.2.254", "192.0.2.254"), (None, "192.0.2.2")):
        net = Net()
        local = net.west.engine._connections["west-east"].local
        local.updown, local.nexthop = "/bin/true", nexthop
        net.up()
        out = [p for p in net.west.policies if p.direction == "out"]
        assert out and all(str(p.nexthop) == str(nexthop) for p in out)
        assert all(p.nexthop is None for p in net.west.policies if p.direction != "out")
        ups = [a for a in net.west.actions if isinstance(a, Updown) and a.up]
        assert ups and updown_env(Verb.UP, ups[0].child)["PLUTO_NEXT_HOP"] == want


def test_mtu_and_metric_bad_values_and_refusals() -> None:
    for body, want in (
            ("\tmtu=abc\n", "mtu=abc: expected a number"),
            ("\tmtu=40\n", "mtu=40: must be between 68 and 65535"),
            ("\tmetric=-1\n", "metric=-1"),
            ("\tmtu=1000\n\tleftsubnet=2001:db8:1::/64\n\trightsubnet=2001:db8:2::/64\n",
             "mtu=1000: an IPv6 link needs at least 1280"),
            ("\tmtu=1300\n\tipsec-interface=1\n",
             "mtu= with ipsec-interface= is not supported by pypluto"),
            ("\tmetric=5\n\ttype=passthrough\n",
             "metric= with type=passthrough is not supported by pypluto")):
        cfg = parse_config_text(BASE + body, "f")
        assert "c" not in cfg.conns, body
        msg = str(cfg.failed["c"][0])
        assert msg.startswith("f:") and want in msg, msg
    ok = parse_config_text(BASE + "\tmtu=1000\n\tleftsubnet=198.51.100.0/24\n"
                           "\trightsubnet=203.0.113.0/24\n", "f")
    assert ok.conns["c"].mtu == 1000


def test_tfc_reaches_the_outbound_sa_unless_the_peer_says_no() -> None:
    """tfc=N: our outbound tunnel-mode ESP SA pads to N (the inbound one never);
    the peer's ESP_TFC_PADDING_NOT_SUPPORTED (its send-no-esp-tfc=yes) turns it off,
    in IKE_AUTH and in a CREATE_CHILD_SA rekey; transport mode ignores tfc= (ipsec.conf(5))."""
    kw = _fields("\ttfc=900\n", "tfc", "send_no_esp_tfc")
    assert kw == {"tfc": 900, "send_no_esp_tfc": False}
    no = _fields("\tsend-no-esp-tfc=yes\n", "send_no_esp_tfc")
    assert no == {"send_no_esp_tfc": True}
    net = Net(west_kw=kw)
    net.up()
    assert sorted((sa.direction, sa.tfc_pad) for sa in net.west.kernel_sas.values()) == \
        [("in", 0), ("out", 900)]
    assert {sa.tfc_pad for sa in net.east.kernel_sas.values()} == {0}
    for west_kw, east_kw in ((kw, no), ({**kw, **no}, {"tfc": 900, **no})):
        net = Net(west_kw=west_kw, east_kw=east_kw)
        net.up()
        assert {sa.tfc_pad for sa in net.west.kernel_sas.values()} == {0}
        assert {sa.tfc_pad for sa in net.east.kernel_sas.values()} == {0}
        # a rekey (CREATE_CHILD_SA, initiated by either end) keeps it off
        for side in (net.west, net.east):
            net.apply(side, side.engine.rekey_child("west-east", net.now))
            net.run()
            assert {sa.tfc_pad for sa in net.west.kernel_sas.values()} == {0}
    # without the notify a rekey pads again
    net = Net(west_kw=kw)
    net.up()
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.run()
    outs = [sa for sa in net.west.kernel_sas.values() if sa.direction == "out"]
    assert outs and {sa.tfc_pad for sa in outs} == {900}
    tr = Net(west_kw={**kw, "type": "transport"}, east_kw={"type": "transport"})
    tr.up()
    assert {sa.tfc_pad for sa in tr.west.kernel_sas.values()} == {0}


def test_priority_orders_the_policies_on_both_planes() -> None:
    """priority= (ipsec.conf(5)): every policy of the conn carries it; XFRM gets it
    unmodified (the others keep the computed, most-specific-first priorities, all near
    65,536); the userspace plane's SPD puts such policies first, lower first."""
    import ipaddress
    import struct

    from ike.harness import Net as _Net

    from pypluto.kernel.userspace.selectors import OutboundPolicies
    from pypluto.kernel.xfrm import structs as S
    from pypluto.kernel.xfrm.backend import encode_policy
    from pypluto.params import PolicyParams, TrafficSelector

    kw = _fields("\tpriority=1500\n", "priority")
    assert kw == {"priority": 1500}
    net = _Net(west_kw=kw)
    net.up()
    assert net.west.policies and {p.priority for p in net.west.policies} == {1500}
    prio = S.UserPolicyInfo.unpack(encode_policy(net.west.policies[0], 0x50500001)).priority
    assert prio == 1500
    plain = _Net()
    plain.up()
    prio = S.UserPolicyInfo.unpack(encode_policy(plain.west.policies[0], 0x50500001)).priority
    assert 1 << 20 <= prio < 1 << 21  # computed from the selectors (Libreswan's order)

    def pol(src: str, dst: str, reqid: int, priority: int = 0) -> PolicyParams:
        a = ipaddress.ip_address
        return PolicyParams(TrafficSelector(ipaddress.ip_network(src)),
                            TrafficSelector(ipaddress.ip_network(dst)), "out", reqid,
                            a("192.0.2.1"), a("192.0.2.2"), priority=priority)

    pkt = bytearray(20)
    pkt[0], pkt[9] = 0x45, 17
    pkt[12:16] = ipaddress.ip_address("198.51.100.7").packed
    pkt[16:20] = ipaddress.ip_address("203.0.113.9").packed
    struct.pack_into("!H", pkt, 2, 20)
    narrow, wide = pol("198.51.100.0/24", "203.0.113.0/24", 1), pol("0.0.0.0/0", "0.0.0.0/0", 2)
    found = OutboundPolicies([narrow, wide]).lookup(bytes(pkt))
    assert found is not None and found[0].reqid == 1  # the most specific, by default
    wide.priority = 100
    found = OutboundPolicies([narrow, wide]).lookup(bytes(pkt))
    assert found is not None and found[0].reqid == 2  # priority= first
    narrow.priority = 50
    found = OutboundPolicies([narrow, wide]).lookup(bytes(pkt))
    assert found is not None and found[0].reqid == 1  # lower wins


def test_send_vendorid_sends_our_vendor_id() -> None:
    """send-vendorid=yes (ipsec.conf(5)): IKE_SA_INIT carries a Vendor ID payload, the
    myvendorid= / --vendorid string when set, else ours (Libreswan: OE-Libreswan-VERSION);
    without it (the default) no Vendor ID is sent, myvendorid= or not."""
    from pypluto import __version__
    from pypluto.iana import PayloadType as PT
    from pypluto.ike.settings import EngineSettings
    from pypluto.wire import message as wm

    def vids(west_kw: dict[str, Any], settings: EngineSettings | None = None) -> list[bytes]:
        net = Net(west_kw=west_kw, west_settings=settings)
        net.up()
        assert net.established(net.west)
        first = wm.parse_message(next(d for s, d in net.sent if s == "west"))
        return [p.data for p in first.payloads if p.payload_type == PT.VENDOR]

    kw = _fields("\tsend-vendorid=yes\n", "send_vendorid")
    assert kw == {"send_vendorid": True}
    assert vids(kw) == [f"OE-pypluto-{__version__}".encode()]
    assert vids(kw, EngineSettings(vendorids=[b"my-vid"])) == [b"my-vid"]
    assert vids({}) == []
    assert vids({}, EngineSettings(vendorids=[b"my-vid"])) == []


def test_fake_strongswan_sends_strongswans_vendor_id() -> None:
    """fake-strongswan=yes (ipsec.conf(5)): IKE_SA_INIT, request and response, carries
    strongSwan's unversioned Vendor ID (MD5 of "strongSwan", as Libreswan sends it);
    the default sends none; with send-vendorid=yes both go.  strongSwan 5.9.8 logs
    "received strongSwan vendor ID" for it: tests/interop/test_strongswan.py."""
    import hashlib

    from pypluto.iana import PayloadType as PT
    from pypluto.wire import message as wm

    def vids(west_kw: dict[str, Any], east_kw: dict[str, Any] | None = None
             ) -> tuple[list[bytes], list[bytes]]:
        net = Net(west_kw=west_kw, east_kw=east_kw)
        net.up()
        assert net.established(net.west)
        out = []
        for side in ("west", "east"):
            first = wm.parse_message(next(d for s, d in net.sent if s == side))
            out.append([p.data for p in first.payloads if p.payload_type == PT.VENDOR])
        return out[0], out[1]

    ss = hashlib.md5(b"strongSwan").digest()  # noqa: S324 - an identifier, not crypto
    kw = _fields("\tfake-strongswan=yes\n", "fake_strongswan")
    assert kw == {"fake_strongswan": True}
    assert vids(kw) == ([ss], [])
    assert vids({}, kw) == ([], [ss])  # the responder's answer carries it too
    assert vids({}) == ([], [])
    both = vids({**kw, "send_vendorid": True})[0]
    assert len(both) == 2 and both[1] == ss
