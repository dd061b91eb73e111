"""Road warriors, address pools and several selectors per end, checked against Libreswan
5.2's own tests (``testing/pluto/addresspool-*``, ``ikev2-selectors-*``,
``ikev2-allow-narrow-07``).

Each row names the Libreswan test dir; its configuration is restated as ipsec.conf keys
(parsed by our config parser), run through two of our engines back to back
(``harness.Net``, a fake clock) and compared with the test's ``*.console.txt``: which
Child SAs come up with which selectors, which addresses are leased, which notify refuses
what.  Addresses are documentation ones: hosts 192.0.2.1 / 192.0.2.2 (harness) or
2001:db8:1::1 / 2001:db8:1::2; Libreswan's pool 192.3.1.0/24 is ``POOL4`` here, its
192.0.2.0/24 (east's subnet) is ``SUB4``, and so on.

Found by this sweep (each row failed before its fix):

* a client asked the gateway for an address of one family only (its first remote
  subnet's), so a dual-stack road warrior (addresspool-46in4/46in6) got an IPv4 lease
  and a Child SA whose IPv4 address faced an IPv6 subnet; it now asks for every family
  of its remote subnets and of its own ``leftaddresspool=`` (``config_payload.families``),
  as Libreswan does;
* a Child SA with selectors of both families installed policies for every pair of
  them, an IPv4 source with an IPv6 destination among them (``Engine.policies``);
  only pairs of one family are installed now, as Libreswan does (its updown lines and
  kernel policies of ikev2-selectors-46in4-rw-ike).

Kept as ours, with the reason: a pool written as a CIDR block leases its first host
address (198.51.100.1 of 198.51.100.0/24, 2001:db8:3:1::1 of 2001:db8:3:1::/97) where
Libreswan leases the block's network address itself (192.3.1.0, 2001:db8:0:3:1::);
``config/addresspool.parse_pool`` leaves the network (and IPv4 broadcast) address out
on purpose, as no client should be given them.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

from .harness import EAST, PSK, WEST, Net, Side, Store, check_pair
from .test_libreswan_outcomes import (
    ENET,
    WNET,
    Want,
    _children,
    _ike,
    add_all,
    check,
    make_net,
)

IP = ipaddress.ip_address
W6, E6 = "2001:db8:1::1", "2001:db8:1::2"
POOL4, POOL6 = "198.51.100.0/24", "2001:db8:3:1::/97"
LEASE4, LEASE6 = "198.51.100.1/32", "2001:db8:3:1::1/128"  # Libreswan: .0 and ::0
SUB4, SUB6 = ENET, "2001:db8:2::/64"


def pair(v: int = 4, nat: bool = False) -> Net:
    """Two fresh engines (no conn yet) on IPv4 or IPv6 hosts; ``nat``: west behind a
    NAT (IPv4 only, as the NAT of Libreswan's ikev2-selectors-* tests)."""
    net = Net(nat=nat)
    hosts = (WEST, EAST) if v == 4 else (IP(W6), IP(E6))
    for side, addr, seed in ((net.west, hosts[0], 1), (net.east, hosts[1], 101)):
        side.engine = Engine(EngineSettings(), Store(PSK), rng=random.Random(seed).randbytes,
                             local_addrs=[addr])
        side.addr = addr
    return net


def load(side: Side, keys: dict[str, str | None], left: bool, name: str = "c") -> list[str]:
    """The parser's diagnostics of the conns ``add_all`` added."""
    return [str(x) for x in add_all(side, keys, left, name).diagnostics]


def up(net: Net, name: str) -> None:
    net.apply(net.west, net.west.engine.initiate(name, net.now))
    net.run()


def no_internal_error(net: Net) -> None:
    logs = net.west.logs() + net.east.logs()
    assert not [m for m in logs if "internal error" in m], logs


def one_family_policies(side: Side) -> set[tuple[str, str]]:
    """(source, destination) of the outbound policies; never of two families."""
    out = [p for p in side.policies if p.direction == "out"]
    assert all(p.src.network.version == p.dst.network.version for p in out), out
    return {(str(p.src.network), str(p.dst.network)) for p in out}


# ====================================================== addresspool-*: one client
# The road warrior (west: left=host, leftid=@west) and the gateway (east: left=%any,
# leftid=%any) share Libreswan's "conn rw": right=east, rightid=@east, rightsubnet=,
# leftaddresspool=, authby=secret, narrowing=yes, leftmodecfgclient=yes.
def rw(v: int, side: str, subnets: tuple[str, ...], pools: tuple[str, ...]) -> dict:
    host = {4: ("192.0.2.1", "192.0.2.2"), 6: (W6, E6)}[v]
    keys: dict[str, str | None] = {
        "right": host[1], "rightid": "@east", "leftsubnet": None,
        "rightsubnet": ",".join(subnets), "leftaddresspool": ",".join(pools),
        "narrowing": "yes", "leftmodecfgclient": "yes"}
    if side == "west":
        keys.update(left=host[0], leftid="@west")
    else:
        keys.update(left="%any", leftid="%any")
    return keys


BOTH_SUBNETS, BOTH_POOLS = (SUB4, SUB6), (POOL4, POOL6)

# (Libreswan test dir, IKE family, west's rightsubnet= and leftaddresspool=, east's,
#  west's Child SA (local selectors, remote selectors))
POOLS = [
    ("addresspool-4in4-ikev2", 4, (SUB4,), (POOL4,), (SUB4,), (POOL4,), [LEASE4], [SUB4]),
    ("addresspool-4in6-ikev2", 6, (SUB4,), (POOL4,), (SUB4,), (POOL4,), [LEASE4], [SUB4]),
    ("addresspool-6in4-ikev2", 4, (SUB6,), (POOL6,), (SUB6,), (POOL6,), [LEASE6], [SUB6]),
    ("addresspool-6in6-ikev2", 6, (SUB6,), (POOL6,), (SUB6,), (POOL6,), [LEASE6], [SUB6]),
    # one Child SA with a lease of each family, each facing the subnet of its family
    ("addresspool-46in4-ikev2", 4, BOTH_SUBNETS, BOTH_POOLS, BOTH_SUBNETS, BOTH_POOLS,
     [LEASE4, LEASE6], [SUB4, SUB6]),
    ("addresspool-46in6-ikev2", 6, BOTH_SUBNETS, BOTH_POOLS, BOTH_SUBNETS, BOTH_POOLS,
     [LEASE4, LEASE6], [SUB4, SUB6]),
    # west asks for both families; east has one: one lease, the selectors narrowed to it
    ("addresspool-46in4-4only-ikev2", 4, BOTH_SUBNETS, BOTH_POOLS, (SUB4,), (POOL4,),
     [LEASE4], [SUB4]),
    ("addresspool-46in4-6only-ikev2", 4, BOTH_SUBNETS, BOTH_POOLS, (SUB6,), (POOL6,),
     [LEASE6], [SUB6]),
    ("addresspool-46in6-4only-ikev2", 6, BOTH_SUBNETS, BOTH_POOLS, (SUB4,), (POOL4,),
     [LEASE4], [SUB4]),
    ("addresspool-46in6-6only-ikev2", 6, BOTH_SUBNETS, BOTH_POOLS, (SUB6,), (POOL6,),
     [LEASE6], [SUB6]),
]


def check_client(net: Net, local: list[str], remote: list[str]) -> None:
    """West established one Child SA [local===remote] on its leases; east mirrors it;
    the routes' source address is the lease of their family (the client's own)."""
    no_internal_error(net)
    logs = net.west.logs() + net.east.logs()
    assert len(_ike(net.west, net)) == 1 and len(_ike(net.east, net)) == 1, logs
    (w,), (e,) = _children(net.west, net), _children(net.east, net)
    assert (w.local_ts, w.remote_ts) == (local, remote), logs
    assert (e.local_ts, e.remote_ts) == (remote, local)
    leases = [IP(t.split("/")[0]) for t in local]
    (ike,) = [i for i in net.west.engine.by_serial.values() if i.established]
    assert list(ike.local_vips) == leases
    assert sorted(str(a) for _, a, _ in net.east.engine.leases.in_use()) == \
        sorted(str(a) for a in leases)
    pols = [p for p in net.west.policies if p.direction == "out"]
    assert pols and all(p.source_ip == next(a for a in leases if a.version ==
                                            p.src.network.version) for p in pols)
    assert one_family_policies(net.west) == {(a, b) for a in local for b in remote
                                             if IP(a.split("/")[0]).version ==
                                             ipaddress.ip_network(b).version}
    check_pair(net)


@pytest.mark.parametrize(("name", "v", "wsub", "wpool", "esub", "epool", "local", "remote"),
                         POOLS, ids=[r[0] for r in POOLS])
def test_addresspool_matches_libreswan(name: str, v: int, wsub: tuple, wpool: tuple,
                                       esub: tuple, epool: tuple, local: list[str],
                                       remote: list[str]) -> None:
    net = pair(v)
    load(net.west, rw(v, "west", wsub, wpool), True)
    load(net.east, rw(v, "east", esub, epool), False)
    up(net, "c")
    check_client(net, local, remote)
    got = [m for m in net.west.logs() if m.startswith("received INTERNAL_IP_ADDRESS")]
    assert got == ["received INTERNAL_IP_ADDRESS " + ", ".join(t.split("/")[0]
                                                               for t in local)]


def test_modecfgpull_yes_is_the_ikev2_client_request() -> None:
    """``modecfgpull=yes`` (in Libreswan's IKEv2 road-warrior tests, e.g. ikev2-cp-01,
    ikev2-redirect-06-roadwarriors): IKEv2's only way, the client asks for its address
    in IKE_AUTH (CFG_REQUEST, RFC 7296 §3.15) and the gateway answers (CFG_REPLY)."""
    net = pair(4)
    pull = {"modecfgpull": "yes"}
    assert load(net.west, {**rw(4, "west", (SUB4,), (POOL4,)), **pull}, True) == []
    assert load(net.east, {**rw(4, "east", (SUB4,), (POOL4,)), **pull}, False) == []
    up(net, "c")
    check_client(net, [LEASE4], [SUB4])
    (ike,) = [i for i in net.west.engine.by_serial.values() if i.established]
    assert ike.local_vips == [IP(LEASE4.split("/")[0])]


def test_addresspool_6in6_defaultroute_ikev2() -> None:
    """addresspool-6in6-defaultroute-ikev2: as 6in6, with ``hostaddrfamily=ipv6``
    and ``clientaddrfamily=ipv6`` on both ends (the road's ``left=%defaultroute`` is
    the daemon's to resolve; its address is written here)."""
    fam = {"hostaddrfamily": "ipv6", "clientaddrfamily": "ipv6"}
    net = pair(6)
    load(net.west, {**rw(6, "west", (SUB6,), (POOL6,)), **fam, "leftid": "@road"}, True)
    load(net.east, {**rw(6, "east", (SUB6,), (POOL6,)), **fam}, False)
    up(net, "c")
    check_client(net, [LEASE6], [SUB6])


def test_addresspool_6in6_defaultroute_src_selection_ikev2() -> None:
    """addresspool-6in6-defaultroute-src-selection-ikev2: the road has no pool of its
    own and sends everything (``rightsubnet=::/0``); east leases from its pool and
    narrows nothing of TSr.  The road's route to ::/0 takes the lease as its source
    address (Libreswan: the default route's prefsrc becomes 2001:db8:0:3:1::)."""
    fam = {"hostaddrfamily": "ipv6", "clientaddrfamily": "ipv6"}
    net = pair(6)
    west = {**rw(6, "west", ("::/0",), ()), **fam, "leftid": "@road", "leftaddresspool": None}
    load(net.west, west, True)
    load(net.east, {**rw(6, "east", ("::/0",), (POOL6,)), **fam}, False)
    up(net, "c")
    check_client(net, [LEASE6], ["::/0"])


def test_addresspool_6in6_strongswan_initiator_ikev2() -> None:
    """addresspool-6in6-strongswan-initiator-ikev2: the client (strongSwan there,
    ``leftsourceip=%config``, ``rightsubnet=::0/0``; our ``leftmodecfgclient=yes``
    here) asks for everything; east (``leftaddresspool=``, no ``leftmodecfgclient``
    key, ``rightsubnet=`` one subnet) narrows TSr to its subnet."""
    net = pair(6)
    west = {"left": W6, "leftid": "@west", "right": E6, "rightid": "@east",
            "leftsubnet": None, "rightsubnet": "::0/0", "leftmodecfgclient": "yes",
            "esp": "aes128-sha2_512", "ike": "aes-sha2_256-modp2048", "mobike": "no"}
    east = {"left": "%any", "leftid": "%any", "right": E6, "rightid": "@east",
            "leftsubnet": None, "rightsubnet": SUB6, "leftaddresspool": POOL6,
            "narrowing": "yes", "hostaddrfamily": "ipv6", "clientaddrfamily": "ipv6"}
    load(net.west, west, True)
    load(net.east, east, False)
    up(net, "c")
    check_client(net, [LEASE6], [SUB6])
    (w,) = _children(net.west, net)
    assert (w.encr, w.integ) == ("AES_CBC_128", "AUTH_HMAC_SHA2_512_256")


# ============================================ addresspool-4in4-*: two clients, one pool
# Libreswan's conns "any" (right=east, rightid=@east, rightsubnet=, authby=secret,
# leftmodecfgclient=yes, rightmodecfgserver=yes) and "east" (left=%any,
# leftaddresspool=, modecfgdns=) make north-any-east (leftid=@north) and road-any-east
# (leftid=@road) on the gateway, one pool for both; north-east and road-east on the
# clients.  Libreswan's north or road is an IKEv1 client in these tests: both are
# IKEv2 clients here (two conns of west), the IKEv1 half restated as IKEv2.
FIRST, LAST = "198.51.100.101", "198.51.100.200"
ANY = {"leftsubnet": None, "rightsubnet": SUB4, "leftmodecfgclient": "yes",
       "rightmodecfgserver": "yes"}


def two_clients(pool: str, road: dict | None = None, road_client: dict | None = None
                ) -> Net:
    """``road``: keys of Libreswan's "conn road" (both ends' road conns);
    ``road_client``: of its "conn road-east" (the client's only)."""
    net = pair(4)
    for who in ("north", "road"):
        mine = (road or {}) if who == "road" else {}
        gw = {**ANY, "left": "%any", "leftid": f"@{who}", "leftaddresspool": pool,
              "modecfgdns": '"192.0.2.53, 192.0.2.54"', **mine}
        load(net.east, gw, False, f"{who}-any-east")
        client = {**ANY, "leftid": f"@{who}", **mine,
                  **((road_client or {}) if who == "road" else {})}
        load(net.west, client, True, f"{who}-east")
    return net


def _child_of(net: Net, side: Side, conn: str) -> list:
    return [c for c in _children(side, net) if c.conn == conn]


def test_addresspool_4in4_shared_ikev1_ikev2() -> None:
    """addresspool-4in4-shared-ikev1-ikev2: two conns share one pool: north gets the
    first address (and the two DNS servers), road the next one."""
    net = two_clients(f"{FIRST}-{LAST}")
    up(net, "north-east")
    up(net, "road-east")
    no_internal_error(net)
    (n,), (r,) = _child_of(net, net.west, "north-east"), _child_of(net, net.west, "road-east")
    assert (n.local_ts, n.remote_ts) == ([f"{FIRST}/32"], [SUB4])
    assert (r.local_ts, r.remote_ts) == (["198.51.100.102/32"], [SUB4])
    north = next(i for i in net.west.engine.by_serial.values() if i.conn.name == "north-east")
    assert list(north.dns) == [IP("192.0.2.53"), IP("192.0.2.54")]
    assert sorted((str(a), who) for _, a, who in net.east.engine.leases.in_use()) == [
        (FIRST, "@north"), ("198.51.100.102", "@road")]


def test_addresspool_4in4_exhausted_ikev1_ikev2() -> None:
    """addresspool-4in4-exhausted-ikev1-ikev2: a pool of one address; north has it,
    road (IKEv2) is answered INTERNAL_ADDRESS_FAILURE: its IKE SA stands, no Child SA
    (Libreswan: "leasing IPv4 address failed: address pool exhausted" on east, "IKE_AUTH
    response rejected Child SA with INTERNAL_ADDRESS_FAILURE" on road)."""
    net = two_clients(f"{FIRST}-{FIRST}")
    up(net, "north-east")
    up(net, "road-east")
    no_internal_error(net)
    assert len(_ike(net.west, net)) == 2 and len(_ike(net.east, net)) == 2
    assert [c.conn for c in _children(net.west, net)] == ["north-east"]
    assert [c.conn for c in _children(net.east, net)] == ["north-any-east"]
    assert any(f"address pool {FIRST}-{FIRST} is exhausted" in m for m in net.east.logs())
    assert any("peer answered INTERNAL_ADDRESS_FAILURE" in m for m in net.west.logs())
    assert [(str(a), who) for _, a, who in net.east.engine.leases.in_use()] == [
        (FIRST, "@north")]
    assert len(net.west.kernel_sas) == len(net.east.kernel_sas) == 2


# in-use / reserved: Libreswan's IKEv1 road skips ModeConfig and names the first pool
# address as its own subnet (leftsubnet=192.0.2.101/32, rightmodecfgserver=no,
# leftmodecfgclient=no); here an IKEv2 road without a CP does the same.  The gateway
# never grants a pool address it did not lease to that client: as Libreswan 5.2's IKEv2
# (its addresspool= forces modecfgserver), a conn with a pool refuses a Child SA
# without a CFG_REQUEST: FAILED_CP_REQUIRED (RFC 7296 §3.10.1; test_hostile_cp26).
NO_CP = {"leftmodecfgclient": "no", "rightmodecfgserver": "no"}
CLAIMS = {"leftsubnet": f"{FIRST}/32"}


def test_addresspool_4in4_in_use_ikev2_ikev1() -> None:
    """addresspool-4in4-in-use-ikev2-ikev1: north holds the lease; road claims it."""
    net = two_clients(f"{FIRST}-198.51.100.102", road=NO_CP, road_client=CLAIMS)
    up(net, "north-east")
    up(net, "road-east")
    no_internal_error(net)
    assert [c.conn for c in _children(net.west, net)] == ["north-east"]
    assert any("peer answered FAILED_CP_REQUIRED" in m for m in net.west.logs())
    assert [(str(a), who) for _, a, who in net.east.engine.leases.in_use()] == [
        (FIRST, "@north")]


def test_addresspool_4in4_reserved_ikev2_ikev1() -> None:
    """addresspool-4in4-reserved-ikev2-ikev1: north came and went (``ipsec down``):
    its address lingers for it; road cannot claim it, and a CP client of another ID
    gets the next address, not north's."""
    net = two_clients(f"{FIRST}-198.51.100.102", road=NO_CP, road_client=CLAIMS)
    up(net, "north-east")
    net.apply(net.west, net.west.engine.terminate("north-east", net.now))
    net.run()
    assert not _ike(net.west, net) and net.east.engine.leases.in_use() == []
    up(net, "road-east")
    no_internal_error(net)
    assert not _children(net.west, net) and not _children(net.east, net)
    assert any("peer answered FAILED_CP_REQUIRED" in m for m in net.west.logs())
    # the same road as a CP client: the address north left is kept for north
    load(net.west, {**ANY, "leftid": "@road"}, True, "road-east")
    net.apply(net.west, net.west.engine.terminate("road-east", net.now))
    net.run()
    up(net, "road-east")
    (r,) = _children(net.west, net)
    assert r.local_ts == ["198.51.100.102/32"]


# ====================================================================== allow-narrow
def test_allow_narrow_07() -> None:
    """ikev2-allow-narrow-07: west offers all protocols and ports (``leftprotoport=0/0``,
    narrowing=yes); east (narrowing=yes) has TCP port 1234 only and narrows to it,
    which west accepts.  (East loads only that conn, as in Libreswan's console; the
    "bait" conns of its east.conf are never added.)"""
    net = make_net({"leftprotoport": "0/0", "rightprotoport": "0/0", "narrowing": "yes"},
                   {"leftprotoport": "6/1234", "rightprotoport": "6/1234", "narrowing": "yes"})
    net.up()
    check(net, Want(ts=(f"{WNET}/6/1234", f"{ENET}/6/1234")))


# ================================================== ikev2-selectors-*: several selectors
# road: left=host, leftid=@road, leftsourceip= (one per family), leftsubnet(s)=,
# rightsubnet(s)=; east: left=%any, the same selectors.  "ike": one Child SA for all
# of them; "alias": ``leftsubnets=``/``rightsubnets=`` make one conn (and Child SA) per
# pair of one family.  IPv4 hosts: road behind a NAT (ESP in UDP).  Each test then
# rekeys the IKE SA and then the Child SA(s): the selectors stay.
R4, R6 = WNET, "2001:db8:30::/64"  # Libreswan's 192.0.3.0/24, 2001:db8:0:30::/64
# its 192.0.2.0/24, 192.0.20.0/24 (clear of the harness NAT's 203.0.113.9)
S4A, S4B = "203.0.113.64/26", "203.0.113.128/26"
S6A, S6B = SUB6, "2001:db8:20::/64"  # its 2001:db8:0:2::/64, 2001:db8:0:20::/64
SOURCE = {R4: "198.51.100.254", R6: "2001:db8:30::254"}
SHAPES = {"44": ([R4], [S4A, S4B]), "46": ([R4, R6], [S4A, S6B]),
          "64": ([R6, R4], [S6B, S4A]), "66": ([R6], [S6A, S6B])}
SELECTORS = [f"ikev2-selectors-{s}in{v}-rw-{kind}" for s in SHAPES for v in (4, 6)
             for kind in ("ike", "alias")]


def _selector_keys(shape: str, v: int, kind: str) -> tuple[dict, dict]:
    road, east = SHAPES[shape]
    host = {4: ("192.0.2.1", "192.0.2.2"), 6: (W6, E6)}[v]
    mixed = len({ipaddress.ip_network(n).version for n in road + east}) > 1
    sel: dict[str, str | None] = {"leftsubnet": ",".join(road), "rightsubnet": ",".join(east)}
    if kind == "alias":
        sel = {"leftsubnet": None, "rightsubnet": None, "rightsubnets": ",".join(east),
               ("leftsubnets" if mixed else "leftsubnet"): ",".join(road)}
    common = {"right": host[1], "rightid": "@east", "leftid": "@road", **sel}
    return ({**common, "left": host[0], "leftsourceip": ",".join(SOURCE[n] for n in road)},
            {**common, "left": "%any"})


def _pairs(road: list[str], east: list[str]) -> set[tuple[str, str]]:
    return {(a, b) for a in road for b in east
            if ipaddress.ip_network(a).version == ipaddress.ip_network(b).version}


def _selector_state(net: Net, road: list[str], east: list[str], nat: bool) -> list[int]:
    """Both ends agree on Child SAs covering exactly the same-family pairs; the
    serials of west's Child SAs."""
    no_internal_error(net)
    assert len(_ike(net.west, net)) == 1 and len(_ike(net.east, net)) == 1
    wc, ec = _children(net.west, net), _children(net.east, net)
    assert len(wc) == len(ec)
    got = {(a, b) for c in wc for a in c.local_ts for b in c.remote_ts}
    assert {(a, b) for c in ec for b in c.local_ts for a in c.remote_ts} == got
    # every selector of each end is in a Child SA (a pair of two families may be in one
    # Child SA's lists, never in its policies)
    assert {a for a, _ in got} == set(road) and {b for _, b in got} == set(east)
    assert one_family_policies(net.west) == _pairs(road, east)
    assert one_family_policies(net.east) == {(b, a) for a, b in _pairs(road, east)}
    assert all(c.encapsulated is nat for c in wc + ec)
    if nat:  # the outer addresses differ by the NAT: the SAs mirror each other otherwise
        ws, es = net.west.kernel_sas.values(), net.east.kernel_sas.values()
        assert sorted((s.spi, s.encr_key) for s in ws) == sorted((s.spi, s.encr_key) for s in es)
        assert len(ws) == 2 * len(wc)
    else:
        check_pair(net)
    return sorted(c.serial for c in wc)


@pytest.mark.parametrize("name", SELECTORS)
def test_selectors_match_libreswan(name: str) -> None:
    shape, v, kind = name[16:18], int(name[20]), name.rsplit("-", 1)[1]
    road, east = SHAPES[shape]
    west_keys, east_keys = _selector_keys(shape, v, kind)
    net = pair(v, nat=v == 4)
    wdiag = load(net.west, west_keys, True, "road")
    load(net.east, east_keys, False, "east")
    names = sorted(n for n in net.west.engine.connections)
    if kind == "ike":
        assert names == ["road"]
    elif shape in ("46", "64"):
        # Libreswan: "road/1x1", "road/2x2" and "warning: skipping mismatched ..."
        assert names == ["road/1x1", "road/2x2"]
        assert len([d for d in wdiag if "skipping mismatched leftsubnets=" in d]) == 2
    else:
        assert names == ["road/0x1", "road/0x2"]
    for n in names:  # ipsec up road: the first in IKE_AUTH, the others in CREATE_CHILD_SA
        up(net, n)
    first = _selector_state(net, road, east, v == 4)
    assert len(first) == len(names)
    # Libreswan: the Child SA of IKE_AUTH has no KE, the others (and rekeys) DH19
    wc = sorted(_children(net.west, net), key=lambda c: c.serial)
    assert [c.ke for c in wc] == [""] + ["ECP_256"] * (len(wc) - 1)
    if kind == "ike":
        (c,) = wc
        assert (sorted(c.local_ts), sorted(c.remote_ts)) == (sorted(road), sorted(east))
    net.apply(net.west, net.west.engine.rekey_ike(names[0], net.now))
    net.run()
    assert _selector_state(net, road, east, v == 4) == first  # the Child SAs move along
    for n in names:
        net.apply(net.west, net.west.engine.rekey_child(n, net.now))
        net.run()
    rekeyed = _selector_state(net, road, east, v == 4)
    assert len(rekeyed) == len(first) and not set(rekeyed) & set(first)
    assert all(c.ke == "ECP_256" for c in _children(net.west, net))
