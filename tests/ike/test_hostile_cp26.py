"""Configuration payloads and address pools under hostile input, round 26 (RFC 7296
§2.19, §3.10.1, §3.15; RFC 8598): what test_hostile_roadwarrior, test_roadwarrior and
test_libreswan_pools leave out.

Found and fixed here (each test named failed before its fix):

* a conn that hands out addresses (``rightaddresspool=`` / ``leftmodecfgserver=yes``)
  gave a client that sent no CFG_REQUEST (none, or a CP of another type, or one asking
  for no address) a Child SA for its outer address, past the pool: now
  FAILED_CP_REQUIRED (§3.10.1) or INTERNAL_ADDRESS_FAILURE, as Libreswan 5.2
  (``ikev2_child.c``: modecfg.server without CP, "no valid internal address request");
* ``leftaddresspool=`` on our own end did not make us ask for an address (Libreswan
  5.2 makes the end with the pool a mode-config client: one conn serves both ends, as
  in nss-cert-11-ca-expiring-responder-switch-ikev2-rw, where west gets 192.0.1.0);
* a gateway could give us its own IKE address as our inner address, which would then
  sit on our interface and take the gateway's packets, IKE's among them, or an
  IPv4-mapped IPv6 one (``::ffff:127.0.0.1`` passed the loopback test);
* with ``ignore-peer-dns=yes`` a DNS attribute of a wrong size was logged in hex
  without a bound (a 3,000-octet attribute: a 6,000-character line).
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.daemon.updown import Verb, updown_env
from pypluto.iana import CFGType, CPAttr, ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.ike import codec
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import SendPacket, Updown
from pypluto.ike.tasks import config_payload as cpmod
from pypluto.wire import payloads as wp

from .harness import Net
from .test_hostile_roadwarrior import (
    NET,
    POOL,
    V4,
    Payloads,
    _a4,
    _cps,
    _east_child_ts,
    _east_sas,
    _hostile_auth_request,
    _hostile_reply,
    _in_use,
    _no_internal_error,
    _nothing_half_done,
    _notifies,
    _req,
    _up,
    _west_of,
    _with_cp,
    rw_net,
)

IP = ipaddress.ip_address


def _tsi(tsi: str, keep_cp: bool = False) -> object:
    """The request's TSi replaced by ``tsi``; its CP dropped unless ``keep_cp``."""
    def mutate(payloads: Payloads) -> Payloads:
        ts = codec.ts_payload(PT.TSi, [tsmod.from_network(NET(tsi))])
        return [ts if p.payload_type == PT.TSi else p for p in payloads
                if keep_cp or not isinstance(p, wp.CPPayload)]
    return mutate


def _refused(net: Net, answer: Payloads | None, notify: int) -> None:
    """East answered ``notify`` for the Child SA: the IKE SA stands on both ends, no
    Child SA, no SA, no policy, no lease anywhere."""
    assert notify in _notifies(answer), _notifies(answer)
    assert not _cps(answer)
    (e,) = _east_sas(net)
    assert e.established and e.leases == () and e.remote_vips == ()
    assert _in_use(net) == {} and not net.children(net.east) and not net.east.kernel_sas
    assert not net.east.policies and not net.children(net.west)
    _nothing_half_done(net)
    _no_internal_error(net)


# ================================================================== gateway: no CFG_REQUEST
@pytest.mark.parametrize("server", ["pool", "modecfgserver"])
@pytest.mark.parametrize("tsi", ["192.0.2.1/32", "0.0.0.0/0"])
def test_a_child_sa_without_a_cp_is_refused_failed_cp_required(server: str, tsi: str) -> None:
    """§3.10.1 FAILED_CP_REQUIRED: "CP(CFG_REQUEST) was expected but not received".
    A client of a pool conn that skips the CP named its outer address (or everything)
    and got a Child SA for it, an address the pool never leased; Libreswan 5.2 answers
    FAILED_CP_REQUIRED (its addresspool= forces modecfgserver)."""
    net = rw_net()
    ec = net.east.engine.connections["west-east"]
    if server == "modecfgserver":
        ec.left.addresspool = None
    _w, _e, answer = _hostile_auth_request(net, _tsi(tsi))
    _refused(net, answer, N.FAILED_CP_REQUIRED)
    assert any("without a CFG_REQUEST" in m and "FAILED_CP_REQUIRED" in m
               for m in net.east.logs())
    assert any("Child SA is refused: no address for the client (FAILED_CP_REQUIRED)" in m
               for m in net.east.logs())


@pytest.mark.parametrize("cfg", [CFGType.CFG_REPLY, CFGType.CFG_SET, CFGType.CFG_ACK, 0, 77])
def test_a_cp_of_another_type_is_refused_failed_cp_required(cfg: int) -> None:
    """A CFG_SET / CFG_ACK / CFG_REPLY (or a reserved type) from the client is no
    CFG_REQUEST: FAILED_CP_REQUIRED, as the RFC names it (Libreswan 5.2 answers
    INTERNAL_ADDRESS_FAILURE there; the RFC is followed).  Before, the client got a
    Child SA for its outer address."""
    net = rw_net()
    _w, _e, answer = _hostile_auth_request(net, _with_cp(_req(_a4(), cfg=cfg)))
    _refused(net, answer, N.FAILED_CP_REQUIRED)
    assert any("only CFG_REQUEST is answered" in m for m in net.east.logs())


@pytest.mark.parametrize("attrs", [
    [],
    [wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS)],
    [wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN), wp.CPAttribute(0x7FFF, b"x" * 40),
     wp.CPAttribute(CPAttr.INTERNAL_IP4_SUBNET)],
], ids=["empty", "dns-only", "garbage"])
def test_a_cfg_request_for_no_address_is_refused(attrs: list[wp.CPAttribute]) -> None:
    """A CFG_REQUEST that asks for no INTERNAL_IP4/IP6_ADDRESS leaves nothing to give
    the Child SA: INTERNAL_ADDRESS_FAILURE (Libreswan 5.2: "no valid internal address
    request"), not a Child SA for the client's outer address."""
    net = rw_net(modecfgdns="192.0.2.53")
    _w, _e, answer = _hostile_auth_request(net, _with_cp(_req(*attrs)))
    _refused(net, answer, N.INTERNAL_ADDRESS_FAILURE)
    assert any("asks for no INTERNAL_IP4/IP6_ADDRESS" in m for m in net.east.logs())


def _childless(keep_cp: bool) -> object:
    def mutate(payloads: Payloads) -> Payloads:
        return [p for p in payloads if p.payload_type not in (PT.SA, PT.TSi, PT.TSr)
                and (keep_cp or not isinstance(p, wp.CPPayload))]
    return mutate


@pytest.mark.parametrize("tsi", ["192.0.2.1/32", "0.0.0.0/0", "198.51.100.10/32"])
def test_a_childless_ike_auth_without_cp_gets_no_child_sa_later(tsi: str) -> None:
    """RFC 6023: no Child SA asked for, no CP needed: no error notify, no lease.  But a
    CREATE_CHILD_SA on that IKE SA then got a Child SA for the client's outer address,
    past FAILED_CP_REQUIRED and the pool: now TS_UNACCEPTABLE, nothing installed."""
    from .test_hostile_roadwarrior import _new_child_on
    net = rw_net()
    w, e, answer = _hostile_auth_request(net, _childless(False))
    assert e.established and _notifies(answer) == [] and not _cps(answer)
    assert _in_use(net) == {} and not net.east.kernel_sas
    out = _new_child_on(net, w, e, tsi)
    assert N.TS_UNACCEPTABLE in _notifies(out)
    assert not net.children(net.east) and not net.east.kernel_sas and not net.east.policies
    assert any("no address was leased to the peer" in m for m in net.east.logs())
    _no_internal_error(net)


def test_no_child_sa_later_after_internal_address_failure() -> None:
    """§3.15.4: the IKE SA of a client the exhausted pool refused stands without a
    Child SA; its CREATE_CHILD_SA for its outer address is refused too (it was granted),
    and c1 keeps the only address."""
    from .test_hostile_roadwarrior import _client, _new_child_on
    net = rw_net("198.51.100.10/32")
    _client(net, "c1")
    _up(net, "c1")
    _up(net, "west-east")
    w = next(i for i in net.west.engine.by_serial.values() if i.conn.name == "west-east")
    (e,) = [i for i in _east_sas(net) if str(i.remote_id) == "@west.example"]
    assert e.established and e.leases == () and not e.children
    out = _new_child_on(net, w, e, "192.0.2.1/32")
    assert N.TS_UNACCEPTABLE in _notifies(out)
    assert _east_child_ts(net) == [("@c1.example", ["198.51.100.10/32"])]
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    _no_internal_error(net)


def test_a_childless_ike_auth_with_cp_leases_and_later_child_sas_use_it() -> None:
    """A CFG_REQUEST in a childless IKE_AUTH is answered (the lease is the IKE SA's);
    a later CREATE_CHILD_SA, with a CP of its own (ignored, as Libreswan 5.2 does:
    "ignoring CREATE_CHILD_SA CP payload"), gets a Child SA for that address only and
    no second lease; the lease goes when the IKE SA goes."""
    from .test_hostile_roadwarrior import _new_child_on
    net = rw_net()
    w, e, answer = _hostile_auth_request(net, _childless(True))
    (reply,) = _cps(answer)
    assert [bytes(a.value) for a in reply.attributes
            if int(a.attr_type) == CPAttr.INTERNAL_IP4_ADDRESS] == [V4("198.51.100.10").packed]
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
    w.local_vips = [V4("198.51.100.10")]  # what west's take_reply would keep
    out = _new_child_on(net, w, e, "0.0.0.0/0", [_req(_a4(), _a4())])
    assert out is not None and not _cps(out) and not codec.errors(out)
    assert _east_child_ts(net) == [("@west.example", ["198.51.100.10/32"])]
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)]
    _no_internal_error(net)


# ================================================================== gateway: other paths
def test_cp_in_create_child_sa_takes_no_second_address() -> None:
    """After IKE_AUTH leased 198.51.100.10, a CREATE_CHILD_SA with a CFG_REQUEST asking
    for 198.51.100.11: no CFG_REPLY, no second lease; the new Child SA stays on the
    leased address."""
    from .test_hostile_roadwarrior import _new_child_on
    net = rw_net()
    _up(net, "west-east")
    w = _west_of(net, "west-east")
    (e,) = _east_sas(net)
    out = _new_child_on(net, w, e, "0.0.0.0/0", [_req(_a4(V4("198.51.100.11").packed))])
    assert out is not None and not _cps(out) and not codec.errors(out)
    assert _east_child_ts(net) == [("@west.example", ["198.51.100.10/32"])] * 2
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
    assert [str(le.addr) for le in e.leases] == ["198.51.100.10"]


def test_a_lease_whose_child_sa_was_refused_goes_with_its_ike_sa() -> None:
    """The CFG_REQUEST is answered but the Child SA refused (TSr outside the gateway's
    subnet: TS_UNACCEPTABLE): the lease is the IKE SA's, and the IKE SA's Delete
    releases it (once)."""
    def mutate(payloads: Payloads) -> Payloads:
        ts = codec.ts_payload(PT.TSr, [tsmod.from_network(NET("10.9.9.0/24"))])
        return [ts if p.payload_type == PT.TSr else p for p in payloads]

    net = rw_net()
    _w, e, answer = _hostile_auth_request(net, mutate)
    assert N.TS_UNACCEPTABLE in _notifies(answer) and _cps(answer)
    assert [str(le.addr) for le in e.leases] == ["198.51.100.10"]
    assert not net.children(net.east)
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)] and _in_use(net) == {}


def test_uniqueids_no_gives_the_same_id_two_addresses_and_frees_both() -> None:
    """uniqueids=no: two IKE SAs of one ID are two clients (the lease is keyed by the
    IKE SA): two addresses, never one twice; each freed when its IKE SA goes."""
    from .test_hostile_roadwarrior import _reboot_west
    net = rw_net()
    net.east.engine.connections["west-east"].uniqueids = False
    net.up()
    _reboot_west(net, 61, initial_contact=False)  # another host with the same ID
    net.up()
    assert set(_in_use(net)) == {V4("198.51.100.10"), V4("198.51.100.11")}
    assert sorted(ts for _, (ts,) in _east_child_ts(net)) == ["198.51.100.10/32",
                                                               "198.51.100.11/32"]
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    net.advance(300)  # the first host is gone: its Delete goes unanswered
    assert _in_use(net) == {} and net.east.engine.leases.summary() == [(POOL, 2, 0, 2)]


def test_a_lease_goes_when_its_ike_sa_expires() -> None:
    """rekey=no: the IKE SA simply expires (ikelifetime=): the lease goes with it."""
    net = rw_net()
    for side in (net.east, net.west):
        c = side.engine.connections["west-east"]
        c.rekey, c.ikelifetime = False, 300.0
    net.up()
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
    net.advance(400)
    assert not net.east.engine.by_serial and _in_use(net) == {}
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)]


@pytest.mark.parametrize("hint,got", [
    ("2001:db8:1::3", "2001:db8:1::3"),  # free and inside: honoured
    ("2001:db8:1::", "2001:db8:1::1"),  # the block's network address: no client's
    ("2001:db8:1::4", "2001:db8:1::1"),  # just past the pool
])
def test_ipv6_address_hints(hint: str, got: str) -> None:
    net = rw_net("2001:db8:1::/126")
    v6 = wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, IP(hint).packed + b"\x40")
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(v6)))
    (reply,) = _cps(answer)
    assert [bytes(a.value) for a in reply.attributes
            if int(a.attr_type) == CPAttr.INTERNAL_IP6_ADDRESS] == [IP(got).packed + b"\x80"]
    assert [str(a) for a in e.remote_vips] == [got]


# ================================================================== client
def test_our_own_addresspool_end_makes_us_ask_for_an_address() -> None:
    """``leftaddresspool=`` on the client's own end, no ``leftmodecfgclient=``: as
    Libreswan 5.2 (the end with the pool is the client), we send a CFG_REQUEST and come
    up on the address leased (nss-cert-11-ca-expiring-responder-switch-ikev2-rw: "received
    INTERNAL_IP4_ADDRESS 192.0.1.0"); before, we asked for nothing."""
    net = rw_net()
    wc = net.west.engine.connections["west-east"]
    wc.left.modecfgclient = False
    wc.left.addresspool = POOL
    net.up()
    w = _west_of(net, "west-east")
    assert w.local_vips == [V4("198.51.100.10")]
    (wc_sa,) = net.children(net.west)
    assert wc_sa.local_ts == ["198.51.100.10/32"] and wc_sa.remote_ts == ["203.0.113.0/24"]
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}


@pytest.mark.parametrize("pool", ["192.0.2.2/32", "192.0.2.2-192.0.2.2"])
def test_the_gateway_cannot_give_us_its_own_address(pool: str) -> None:
    """A gateway (misconfigured or hostile) leases us its own IKE address 192.0.2.2:
    on our interface it would take every packet to the gateway off the wire, IKE's
    too.  Refused with a line; nothing is installed and the gateway, told, keeps no
    Child SA."""
    net = rw_net(pool)
    net.up()
    logs = net.west.logs()
    assert any("ignoring INTERNAL_IP4_ADDRESS 192.0.2.2: the gateway's own address" in m
               for m in logs), logs
    assert any("no usable address" in m for m in logs)
    assert not net.children(net.west) and not net.west.kernel_sas and not net.west.policies
    assert not net.children(net.east) and not net.east.kernel_sas
    _nothing_half_done(net)


@pytest.mark.parametrize("addr", ["::ffff:127.0.0.1", "::ffff:224.0.0.1",
                                  "::ffff:198.51.100.10"])
def test_an_ipv4_mapped_inner_address_is_refused(addr: str) -> None:
    """A gateway leasing an IPv4-mapped IPv6 address (its pool written so): no host's
    interface address (RFC 4291 §2.5.5.2), and IPv4 loopback or multicast in disguise,
    which the loopback and multicast tests do not see.  Refused; nothing installed."""
    net = rw_net(f"{addr}/128")
    sub = NET("2001:db8:9::/64")
    net.west.engine.connections["west-east"].right.subnets = [sub]
    net.east.engine.connections["west-east"].right.subnets = [sub]
    net.up()
    logs = net.west.logs()
    assert any(f"ignoring INTERNAL_IP6_ADDRESS {IP(addr)}: IPv4-mapped" in m
               for m in logs), logs
    assert not net.children(net.west) and not net.west.policies and not net.west.kernel_sas
    assert not net.children(net.east)
    _nothing_half_done(net)


@pytest.mark.parametrize("prefix", [0, 1, 64, 127, 200, 255])
def test_a_lying_ipv6_prefix_length_does_not_widen_our_selector(
        monkeypatch: pytest.MonkeyPatch, prefix: int) -> None:
    """INTERNAL_IP6_ADDRESS carries a prefix length (§3.15.1); a gateway that says /0
    (or 200) does not make our selector or policies wider than the one address."""
    _hostile_reply(lambda attrs: [
        wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, bytes(a.value)[:16] + bytes([prefix]))
        if int(a.attr_type) == CPAttr.INTERNAL_IP6_ADDRESS else a for a in attrs],
        monkeypatch)
    net = rw_net("2001:db8:1::/126")
    sub = NET("2001:db8:9::/64")
    net.west.engine.connections["west-east"].right.subnets = [sub]
    net.east.engine.connections["west-east"].right.subnets = [sub]
    net.up()
    assert _west_of(net, "west-east").local_vips == [IP("2001:db8:1::1")]
    (wc,) = net.children(net.west)
    assert wc.local_ts == ["2001:db8:1::1/128"] and wc.remote_ts == ["2001:db8:9::/64"]
    assert {str(p.src) for p in net.west.policies if p.direction == "out"} == \
        {"2001:db8:1::1/128"}


def test_an_unasked_cfg_reply_is_ignored_by_a_plain_initiator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host-to-host conn (no CP asked for) gets a CFG_REPLY anyway: no inner
    address, no DNS, nothing changes in its selectors or routes."""
    real = cpmod.respond

    def respond(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        return [*out, wp.CPPayload(CFGType.CFG_REPLY, [
            wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, V4("10.66.0.1").packed),
            wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, V4("10.66.0.53").packed),
            wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"evil.example")])], ok

    monkeypatch.setattr(cpmod, "respond", respond)
    net = Net()
    net.up()
    (w,) = net.west.engine.by_serial.values()
    assert w.local_vips == () and w.dns == () and w.domains == ()
    assert all(p.source_ip is None for p in net.west.policies)
    assert net.children(net.west)


# hostile INTERNAL_DNS_DOMAIN values: each dropped, none reaches the updown environment
BAD_DOMAINS = [
    b"a.example\x00b.example", b"a.example\n", b"\na.example", b"a.example\r\nx",
    b"a.example; reboot", b"a.example'", b"`id`.example", b"$(id).example",
    b"a example", b"a.example\t", b"..example", b".example", b"-a.example",
    b"a" * 64 + b".example", b"\xc3\xa9.example", b"a" * 256, b"", b"a|b", b"a&b",
    b"a>b", b"a\\b", b"a/b",
]


def test_hostile_dns_domains_never_reach_the_updown_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8598 §4: INTERNAL_DNS_DOMAIN is an FQDN.  Domains carrying a NUL, a newline,
    shell metacharacters, spaces, non-ASCII octets, a 64-octet label or 256 octets are
    dropped with one escaped log line each; PLUTO_PEER_DOMAIN_INFO holds the good ones
    only (Libreswan 5.2 passes them on, ``'`` made ``?``, vertical space a space, other
    unprintable octets escaped in octal, cut at a NUL)."""
    _hostile_reply(lambda attrs: [*attrs, *(wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, d)
                                            for d in BAD_DOMAINS[:14]),
                                  wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"good.example."),
                                  wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, b"a_b.example")],
                   monkeypatch)
    net = rw_net(modecfgdns="192.0.2.53")
    net.west.engine.connections["west-east"].left.updown = "/bin/true"
    net.up()
    w = _west_of(net, "west-east")
    assert w.domains == ["good.example.", "a_b.example"]
    facts = next(a for a in net.west.actions if isinstance(a, Updown) and a.up).child
    env = updown_env(Verb.UP, facts)
    assert env["PLUTO_PEER_DOMAIN_INFO"] == "good.example. a_b.example"
    assert env["PLUTO_PEER_DNS_INFO"] == "192.0.2.53"
    bad = [m for m in net.west.logs() if "ignoring INTERNAL_DNS_DOMAIN" in m]
    assert len(bad) == 14
    assert all("\n" not in m and "\r" not in m and "\x00" not in m and len(m) < 600
               for m in bad), bad


@pytest.mark.parametrize("value", BAD_DOMAINS)
def test_each_hostile_dns_domain_is_refused(value: bytes) -> None:
    """The same, one by one, at ``dns_attr`` (the rest of the list above, too)."""
    net = rw_net()
    net.up()
    w = _west_of(net, "west-east")
    acts: list = []
    cpmod.dns_attr(net.west.engine, w, CPAttr.INTERNAL_DNS_DOMAIN, value, acts)
    assert w.domains == ()


def test_ignore_peer_dns_logs_a_bounded_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """ignore-peer-dns=yes logs each DNS attribute it drops; one of 3,000 octets was
    written out in hex (6,000 characters on one line)."""
    _hostile_reply(lambda attrs: [*attrs,
                                  wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, b"\x07" * 3000)],
                   monkeypatch)
    net = rw_net()
    net.west.engine.connections["west-east"].ignore_peer_dns = True
    net.up()
    lines = [m for m in net.west.logs() if "(ignore-peer-dns=yes)" in m]
    assert lines and max(len(m) for m in lines) < 600, [len(m) for m in lines]
    assert net.children(net.west)


def test_a_gateways_cp_with_huge_attributes_brings_nothing_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Attributes of 0 and 8,000 octets of every known type and one unknown type in
    the CFG_REPLY (the message is fragmented or not, either way it is read): the
    client keeps its address and nothing else; no line is longer than a log line."""
    junk = [wp.CPAttribute(t, v) for t in (CPAttr.INTERNAL_IP4_ADDRESS,
                                           CPAttr.INTERNAL_IP6_ADDRESS, CPAttr.INTERNAL_IP4_DNS,
                                           CPAttr.INTERNAL_IP6_DNS, CPAttr.INTERNAL_DNS_DOMAIN,
                                           CPAttr.INTERNAL_IP4_SUBNET, 0x7ABC)
            for v in (b"", b"\xff" * 8000)]
    _hostile_reply(lambda attrs: [*attrs, *junk], monkeypatch)
    net = rw_net()
    net.up()
    w = _west_of(net, "west-east")
    assert w.local_vips == [V4("198.51.100.10")] and w.dns == () and w.domains == ()
    assert net.children(net.west)
    assert max(len(m) for m in net.west.logs()) < 1000
    _no_internal_error(net)


def test_ike_init_carrying_a_cp_leases_nothing() -> None:
    """A CFG_REQUEST in IKE_SA_INIT (a CP belongs in IKE_AUTH or CREATE_CHILD_SA,
    §2.19) is no request for an address: east answers the IKE_SA_INIT as usual and
    leases nothing."""
    net = rw_net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    _frm, pkt = net.queue.pop(0)
    msg = codec.parse(pkt.data)
    cp = wp.CPPayload(CFGType.CFG_REQUEST, [_a4(V4("198.51.100.11").packed)])
    (data,) = codec.encode(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, True, False, 0,
                           [*msg.payloads, cp])
    acts = net.east.engine.receive(data, pkt.remote, pkt.local, net.now)
    net.apply(net.east, acts)
    answers = [codec.parse(a.data) for a in acts if isinstance(a, SendPacket)]
    assert answers and answers[0].response and any(
        isinstance(p, wp.KEPayload) for p in answers[0].payloads)
    assert _in_use(net) == {} and net.east.engine.leases.summary() == []
    _no_internal_error(net)
