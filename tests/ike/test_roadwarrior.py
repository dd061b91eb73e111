"""Road warriors: the Configuration Payload in IKE_AUTH and address-pool leases
(RFC 7296 §2.19, §3.15), two engines back to back.

west is the client (``leftmodecfgclient=yes``, no subnet of its own); east the
gateway (``left=%any``, ``leftaddresspool=``, ``rightsubnet=203.0.113.0/24``).
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.iana import CFGType, CPAttr
from pypluto.iana import NotifyType as N
from pypluto.ike import pool as poolmod
from pypluto.ike import ts as tsmod
from pypluto.ike.tasks import config_payload as cpmod
from pypluto.wire import payloads as wp

from .harness import Net

POOL = "198.51.100.10-198.51.100.12"
V4 = ipaddress.ip_address


def rw_net(pool: str = POOL, **east_raw: str) -> Net:
    net = Net(west_kw={"leftsubnet": None}, east_kw={"leftsubnet": None, "left": "%any"})
    wc = net.west.engine.connections["west-east"]
    wc.left.modecfgclient = True
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool = pool
    ec.right.modecfgserver = True
    ec.raw.update(east_raw)
    return net


def sent_cp(net: Net, who: str, cfg_type: int) -> list[wp.CPPayload]:
    """CP payloads of one type the engine of ``who`` put into an IKE_AUTH (from its logs)."""
    return [p for p in getattr(net, f"_cp_{who}", []) if int(p.cfg_type) == cfg_type]


def test_client_gets_an_address_dns_and_the_selectors_follow() -> None:
    net = rw_net(modecfgdns="192.0.2.53, 2001:db8::53", modecfgdomains="corp.example")
    net.up()
    assert net.established(net.west) and net.established(net.east)
    wi = net.west.engine.status(net.now).ike_sas[0]
    ei = net.east.engine.status(net.now).ike_sas[0]
    wc, ec = wi.children[0], ei.children[0]
    # the gateway leased the first address of the pool; both ends' selectors use it
    assert wc.local_ts == ["198.51.100.10/32"] and wc.remote_ts == ["203.0.113.0/24"]
    assert ec.remote_ts == ["198.51.100.10/32"] and ec.local_ts == ["203.0.113.0/24"]
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10")]
    assert ike.dns == [V4("192.0.2.53")]  # only the family we asked for
    # the client's outbound policy prefers its new address as the route's source
    out = [p for p in net.west.policies if p.direction == "out"]
    assert out and all(p.source_ip == V4("198.51.100.10") for p in out)
    assert any("leased 198.51.100.10 from pool" in m for m in net.east.logs())
    assert net.east.engine.leases.in_use() == [(POOL, V4("198.51.100.10"), "@west.example")]


def test_lease_kept_for_the_id_across_reconnects_and_freed_on_delete() -> None:
    net = rw_net()
    net.up()
    leases = net.east.engine.leases
    assert [a for _, a, _ in leases.in_use()] == [V4("198.51.100.10")]
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert leases.in_use() == []  # freed on Delete
    # somebody else takes a fresh address meanwhile
    other = leases.acquire(POOL, 4, ("id", "x"), "@other")
    assert other is not None and other.addr == V4("198.51.100.11")
    net.up()
    ike = next(i for i in net.west.engine.by_serial.values() if i.established)
    assert ike.local_vips == [V4("198.51.100.10")]  # the same address as before


def test_lease_moves_with_an_ike_rekey() -> None:
    net = rw_net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    leases = net.east.engine.leases
    assert [a for _, a, _ in leases.in_use()] == [V4("198.51.100.10")]
    (ike,) = [i for i in net.east.engine.by_serial.values()]
    assert [lease.addr for lease in ike.leases] == [V4("198.51.100.10")]


def test_lease_freed_on_liveness_failure() -> None:
    net = rw_net()
    ec = net.east.engine.connections["west-east"]
    ec.dpddelay, ec.dpdtimeout = 5.0, 15.0
    net.up()
    assert net.east.engine.leases.in_use()
    net.cut = True
    net.advance(120)
    assert not net.established(net.east)
    assert net.east.engine.leases.in_use() == []


def test_pool_exhausted_gets_internal_address_failure_and_a_log_line() -> None:
    net = rw_net(pool="198.51.100.10/32")
    taken = net.east.engine.leases.acquire("198.51.100.10/32", 4, ("id", "x"), "@other")
    assert taken is not None
    net.up()
    # §3.15.4: the IKE SA stands, the Child SA is refused with INTERNAL_ADDRESS_FAILURE
    assert net.established(net.east) and not net.children(net.east)
    assert not net.children(net.west)
    assert any("address pool 198.51.100.10/32 is exhausted" in m for m in net.east.logs())
    assert any("INTERNAL_ADDRESS_FAILURE" in m for m in net.west.logs())
    assert not net.east.kernel_sas and not net.west.kernel_sas


def _client_sends(monkeypatch: pytest.MonkeyPatch, attrs: list[wp.CPAttribute]) -> None:
    monkeypatch.setattr(cpmod, "request",
                        lambda ike, conn: wp.CPPayload(CFGType.CFG_REQUEST, attrs))


def test_address_request_outside_the_pool_gets_one_inside(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _client_sends(monkeypatch, [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS,
                                               V4("192.0.2.200").packed)])
    net = rw_net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10")] and net.children(net.west)
    assert any("asked for 192.0.2.200, which is outside the pool; leasing 198.51.100.10"
               in m for m in net.east.logs())


def test_address_request_inside_the_pool_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    _client_sends(monkeypatch, [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS,
                                               V4("198.51.100.12").packed)])
    net = rw_net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.12")] and net.children(net.west)


def test_cfg_request_with_garbage_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    _client_sends(monkeypatch, [
        wp.CPAttribute(0x7FFF, b"\xff" * 300),  # unknown type
        wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, b"\x01\x02\x03"),  # bad length
        wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, b""),  # a duplicate request
        wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, b"\x00" * 5),  # no IPv6 range
        wp.CPAttribute(CPAttr.APPLICATION_VERSION, b"\x00garbage"),
        wp.CPAttribute(0, b""),
    ])
    net = rw_net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10")] and net.children(net.west)
    assert [a for _, a, _ in net.east.engine.leases.in_use()] == [V4("198.51.100.10")]


def test_cfg_request_with_only_garbage_gets_no_address_and_no_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _client_sends(monkeypatch, [wp.CPAttribute(0x1234, b"x" * 7)])
    net = rw_net()
    net.up()
    # no address asked for: the gateway leases nothing and refuses the Child SA with
    # INTERNAL_ADDRESS_FAILURE (as Libreswan 5.2, test_hostile_cp26; it granted the
    # client's outer address, which the client refused); nothing crashes or leaks
    assert net.established(net.east) and net.east.engine.leases.in_use() == []
    assert not net.children(net.west)
    assert any("peer answered INTERNAL_ADDRESS_FAILURE" in m for m in net.west.logs())


def test_conn_without_pool_ignores_cp_and_client_fails_cleanly() -> None:
    net = rw_net()
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool = None
    ec.right.modecfgserver = False
    net.up()
    assert not net.children(net.west)
    assert any("no CFG_REPLY" in m for m in net.west.logs())


def test_pool_parser_and_lingering_order() -> None:
    assert poolmod.parse_pool("192.0.2.0/30") == [(V4("192.0.2.1"), V4("192.0.2.2"))]
    assert poolmod.parse_pool("192.0.2.5-192.0.2.5, 2001:db8::/126")[1] == (
        ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::3"))
    for bad in ("192.0.2.9-192.0.2.1", "192.0.2.1-2001:db8::1", "bogus",
                "192.0.2.0/30,198.51.100.0/30", ""):
        with pytest.raises(ValueError):
            poolmod.parse_pool(bad)
    t = poolmod.LeaseTable()
    a = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "a"), "a")
    b = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "b"), "b")
    c = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "c"), "c")
    assert a and b and c
    assert t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "d"), "d") is None  # exhausted
    t.release(b)
    t.release(a)
    t.release(a)  # twice is harmless
    d = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "d"), "d")
    assert d is not None and d.addr == b.addr  # the one released longest ago
    a2 = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "a"), "a")
    assert a2 is not None and a2.addr == a.addr  # a's own address again
    # the same ID twice at once (uniqueids reconnect): one address, two holders
    a3 = t.acquire("192.0.2.1-192.0.2.3", 4, ("id", "a"), "a")
    assert a3 is not None and a3.addr == a.addr
    t.release(a2)
    assert a.addr in [x for _, x, _ in t.in_use()]
    assert t.summary() == [("192.0.2.1-192.0.2.3", 3, 3, 0)]


def test_notify_constant() -> None:
    assert int(N.INTERNAL_ADDRESS_FAILURE) == 36


def test_modecfgdomains_and_split_subnets_reach_the_cfg_reply(
        monkeypatch: pytest.MonkeyPatch) -> None:
    replies: list[wp.CPPayload] = []
    real = cpmod.respond

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        replies.extend(p for p in out if isinstance(p, wp.CPPayload))
        return out, ok

    monkeypatch.setattr(cpmod, "respond", spy)
    net = rw_net(modecfgdns="192.0.2.53", modecfgdomains="corp.example, lab.example")
    net.up()
    (reply,) = replies
    got = {(int(a.attr_type), bytes(a.value)) for a in reply.attributes}
    assert (CPAttr.INTERNAL_IP4_ADDRESS, V4("198.51.100.10").packed) in got
    assert (CPAttr.INTERNAL_IP4_DNS, V4("192.0.2.53").packed) in got
    assert (CPAttr.INTERNAL_DNS_DOMAIN, b"corp.example") in got
    assert (CPAttr.INTERNAL_DNS_DOMAIN, b"lab.example") in got
    # split tunnel: rightsubnet= as INTERNAL_IP4_SUBNET (address and netmask)
    assert (CPAttr.INTERNAL_IP4_SUBNET, V4("203.0.113.0").packed + V4("255.255.255.0").packed) \
        in got


def test_ipv4_and_ipv6_pools_answer_each_family(monkeypatch: pytest.MonkeyPatch) -> None:
    replies: list[wp.CPPayload] = []
    real = cpmod.respond

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        replies.extend(p for p in out if isinstance(p, wp.CPPayload))
        return out, ok

    monkeypatch.setattr(cpmod, "respond", spy)
    _client_sends(monkeypatch, [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS),
                                wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS),
                                wp.CPAttribute(CPAttr.INTERNAL_IP6_DNS)])
    # a dual-stack client offers both address spaces as TSi
    monkeypatch.setattr(cpmod, "any_ts", lambda ike, conn: [
        tsmod.from_network(ipaddress.ip_network("0.0.0.0/0")),
        tsmod.from_network(ipaddress.ip_network("::/0"))])
    net = rw_net(pool="198.51.100.10-198.51.100.12,2001:db8:0:1::/120",
                 modecfgdns="192.0.2.53, 2001:db8::53")
    net.up()
    (reply,) = replies
    got = {(int(a.attr_type), bytes(a.value)) for a in reply.attributes}
    v6 = ipaddress.ip_address("2001:db8:0:1::1")
    assert (CPAttr.INTERNAL_IP6_ADDRESS, v6.packed + bytes([128])) in got
    assert (CPAttr.INTERNAL_IP4_ADDRESS, V4("198.51.100.10").packed) in got
    assert (CPAttr.INTERNAL_IP6_DNS, ipaddress.ip_address("2001:db8::53").packed) in got
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10"), v6]
    assert {a for _, a, _ in net.east.engine.leases.in_use()} == {V4("198.51.100.10"), v6}
    # the gateway's Child SA covers both leased addresses
    (ec,) = net.children(net.east)
    assert ec.remote_ts == ["198.51.100.10/32", "2001:db8:0:1::1/128"]


def test_updown_sees_the_address_and_dns() -> None:
    from pypluto.ike.actions import Updown
    net = rw_net(modecfgdns="192.0.2.53")
    wc = net.west.engine.connections["west-east"]
    wc.left.updown = "/bin/true"
    net.up()
    ups = [a for a in net.west.actions if isinstance(a, Updown) and a.up]
    assert ups, "no updown action"
    facts = ups[0].child
    assert facts.my_sourceip == V4("198.51.100.10") and facts.peer_dns == [V4("192.0.2.53")]


def _gateway_adds(monkeypatch: pytest.MonkeyPatch, extra: list[wp.CPAttribute]) -> None:
    """The gateway's CFG_REPLY carries ``extra`` attributes after its own."""
    real = cpmod.respond

    def respond(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        for p in out:
            if isinstance(p, wp.CPPayload):
                p.attributes = [*p.attributes, *extra]
        return out, ok

    monkeypatch.setattr(cpmod, "respond", respond)


def test_updown_sees_the_gateways_dns_domains() -> None:
    """RFC 8598 INTERNAL_DNS_DOMAIN: the client keeps the gateway's search domains for
    the updown script (PLUTO_PEER_DOMAIN_INFO, as Libreswan), also across an IKE SA
    rekey."""
    from pypluto.daemon.updown import Verb, updown_env
    from pypluto.ike.actions import Updown
    net = rw_net(modecfgdns="192.0.2.53", modecfgdomains="corp.example, lab.example")
    net.west.engine.connections["west-east"].left.updown = "/bin/true"
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.domains == ["corp.example", "lab.example"]
    facts = next(a for a in net.west.actions if isinstance(a, Updown) and a.up).child
    env = updown_env(Verb.UP, facts)
    assert env["PLUTO_PEER_DNS_INFO"] == "192.0.2.53"
    assert env["PLUTO_PEER_DOMAIN_INFO"] == "corp.example lab.example"


def test_ignore_peer_dns_drops_the_gateways_dns_and_domains() -> None:
    """ignore-peer-dns=yes (Libreswan: "ignoring INTERNAL_IP4_DNS server address
    payload"): the address is taken, the DNS server and the domains are logged and
    dropped, and the updown script gets neither."""
    from pypluto.daemon.updown import Verb, updown_env
    from pypluto.ike.actions import Updown
    net = rw_net(modecfgdns="192.0.2.53", modecfgdomains="corp.example")
    wc = net.west.engine.connections["west-east"]
    wc.ignore_peer_dns = True
    wc.left.updown = "/bin/true"
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10")]
    assert ike.dns == () and ike.domains == ()
    logs = net.west.logs()
    assert any("ignoring INTERNAL_IP4_DNS 192.0.2.53 (ignore-peer-dns=yes)" in m for m in logs)
    assert any("ignoring INTERNAL_DNS_DOMAIN corp.example (ignore-peer-dns=yes)" in m
               for m in logs)
    facts = next(a for a in net.west.actions if isinstance(a, Updown) and a.up).child
    env = updown_env(Verb.UP, facts)
    # set and empty, as Libreswan 5.2 always passes them
    assert env["PLUTO_PEER_DNS_INFO"] == "" and env["PLUTO_PEER_DOMAIN_INFO"] == ""


def test_a_gateways_bad_dns_attributes_are_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway that lies in its CFG_REPLY: a domain with a newline and shell
    characters, one of 300 octets, the unspecified address as DNS server, a DNS
    attribute of the wrong size.  Each is dropped (the first three logged, escaped);
    the good ones and the address are kept, and the IKE SA comes up."""
    _gateway_adds(monkeypatch, [
        wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"evil.example\n$(reboot)"),
        wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"a" * 300),
        wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, bytes(4)),
        wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, b"\x01\x02\x03"),
        wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"good.example")])
    net = rw_net(modecfgdns="192.0.2.53")
    net.up()
    assert net.established(net.west)
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.dns == [V4("192.0.2.53")] and ike.domains == ["good.example"]
    logs = net.west.logs()
    bad = [m for m in logs if "ignoring INTERNAL_DNS_DOMAIN" in m]
    assert len(bad) == 2 and all("\n" not in m for m in bad), bad
    assert any("ignoring INTERNAL_IP4_DNS 0.0.0.0: unspecified" in m for m in logs)


def _gateway_gives(monkeypatch: pytest.MonkeyPatch, addrs: list[bytes]) -> None:
    """The gateway's CFG_REPLY carries ``addrs`` (IPv4, packed) instead of its lease."""
    real = cpmod.respond

    def respond(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        for p in out:
            if isinstance(p, wp.CPPayload):
                p.attributes = [x for x in p.attributes
                                if int(x.attr_type) != CPAttr.INTERNAL_IP4_ADDRESS] + [
                    wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, v) for v in addrs]
        return out, ok

    monkeypatch.setattr(cpmod, "respond", respond)


BAD_VIPS = {"0.0.0.0": "unspecified", "127.0.0.1": "loopback", "224.0.0.1": "multicast",
            "169.254.1.1": "link-local", "255.255.255.255": "reserved"}


def test_a_gateway_cannot_assign_addresses_no_host_may_take(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway that lies in its CFG_REPLY about our address: the unspecified address
    (Libreswan refuses it too), loopback, multicast, link-local or the broadcast address
    would land on our interface and in our selectors.  Each is ignored with a line; with
    nothing usable left the client gives up with a reason, and nothing is installed."""
    _gateway_gives(monkeypatch, [V4(a).packed for a in BAD_VIPS])
    net = rw_net()
    net.up()
    logs = net.west.logs()
    for addr, why in BAD_VIPS.items():
        assert any(f"ignoring INTERNAL_IP4_ADDRESS {addr}: {why}" in m for m in logs), logs
    assert not net.children(net.west) and not net.west.kernel_sas and not net.west.policies
    assert any("no usable address" in m for m in logs), logs


def test_a_good_address_beside_bad_ones_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    _gateway_gives(monkeypatch, [V4("127.0.0.1").packed, V4("198.51.100.10").packed])
    net = rw_net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.local_vips == [V4("198.51.100.10")] and net.children(net.west)
