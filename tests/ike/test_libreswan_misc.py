"""Redirect, MOBIKE, liveness, NAT and fragmentation outcomes checked against Libreswan 5.2.

Each test names the ``testing/pluto/<dir>`` of Libreswan v5.2 it restates; the expected
outcome (where the client lands, which IKE SA carries which Child SA, what is refused)
is taken from that test's ``*.console.txt``.  Each end is built from ipsec.conf keys by
our config parser (``conn()`` of test_libreswan_outcomes) and the engines run back to
back with the harness's fake clock, on its addresses: west 192.0.2.1 (the client,
Libreswan's west/north/road), east 192.0.2.2, and for redirect a third gateway
192.0.2.3 (Libreswan's north, ``GW_B``).

Not restated here, and why:

- already rows elsewhere: ikev2-frag-03-retrans, ikev2-frag-06-unsolicited,
  ikev2-mobike-07-unsolicited-response and the six ikev2-unknown-payload-* tests
  (test_libreswan_impair.py), ikev2-frag-04-nofrag-east and ikev2-frag-05-nofrag-west
  (test_libreswan_outcomes.py), addconn-09-dpd-vs-liveness
  (tests/config/test_libreswan_add_outcomes.py);
- IKEv1 only (``keyexchange=ikev1``): dpd-02-reverse, dpd-03, dpd-04, dpd-05, dpd-07,
  dpd-11-silent, nat-pluto-01, -02, -03, -04, -08, -09, -10, -11, -12;
- not ``good`` in TESTLIST (wip): dpd-01, dpd-02, dpd-06, dpd-08, dpd-09-shared,
  dpd-10-alias, ikev2-liveness-01..08, -10, -12, ikev2-redirect-06-roadwarriors-reverse,
  ikev2-mobike-08-nat-expire-liveness-road-mobike-yes and -nat, nat-pluto-07.

Found by this sweep (each row failed before its fix): a client redirected to a gateway
that never answers retried that gateway for ever instead of going back to the one it
was configured for (``redirect.unreachable``); ``global-redirect-to=`` with several
gateways sent every client to the first one instead of each in turn
(``redirect.init_target``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pki import PKI

from pypluto.config.model import bump_generation
from pypluto.iana import PayloadType as PT
from pypluto.ike.actions import Endpoint, MoveSA, SendPacket
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import redirect as redmod
from pypluto.wire import message as wm

from .harness import EAST, NAT_PUBLIC, WEST, Net, Side, check_pair
from .test_certs import cert_net
from .test_libreswan_outcomes import ENET, WNET, conn
from .test_redirect import GW_B, Net3

INIT, AUTH = 34, 35
ACCEPT = {"accept-redirect": "yes"}


# ------------------------------------------------------------------ redirect (RFC 5685)
def tri(west: dict, east: dict, north: dict | None = None, *,
        east_settings: EngineSettings | None = None, names: tuple[str, ...] = ("west-east",)
        ) -> Net3:
    """West (the client), east (gateway A) and north (gateway B, GW_B), each from
    ipsec.conf keys; ``names``: west's conns (each with its own keys in ``west``)."""
    net = Net3(a_settings=east_settings)
    for side in (net.west, net.east, net.b):
        side.engine.delete_connection("west-east", net.now)
    for name in names:
        keys = west[name] if len(names) > 1 else west
        net.west.engine.add_connection(conn(keys, True, name))
    net.east.engine.add_connection(conn(east, False, "east"))
    for i, keys in enumerate((north or {}).get("conns", [north or {}])):
        net.b.engine.add_connection(conn({"right": str(GW_B), **keys}, False, f"north{i}"))
    bump_generation()
    return net


def up(net: Net3, name: str = "west-east") -> None:
    net.apply(net.west, net.west.engine.initiate(name, net.now))
    net.run()


def _where(net: Net3, name: str) -> list[tuple[object, list[str]]]:
    """West's established IKE SAs carrying ``name``'s Child SA: (peer, remote TS)."""
    out = []
    for ike in net.west.engine.by_serial.values():
        if not ike.established:
            continue
        for c in ike.children:
            if c.conn.name == name:
                out.append((ike.remote.addr, [str(t) for t in c.remote_ts]))
    return out


def test_redirect_01_global() -> None:
    """ikev2-redirect-01-global: east has ``global-redirect=yes`` and
    ``global-redirect-to=`` north; west (``accept-redirect=yes``) is sent on in the
    IKE_SA_INIT answer and comes up at north; east keeps nothing."""
    net = tri(ACCEPT, {}, {}, east_settings=EngineSettings(global_redirect="yes",
                                                          global_redirect_to=[GW_B]))
    up(net)
    assert _where(net, "west-east") == [(GW_B, [ENET])]
    assert net.established(net.b) and net.children(net.b)
    assert not net.east.engine.by_serial and not net.east.kernel_sas
    assert any("redirected by 192.0.2.2 to new gateway 192.0.2.3" in m
               for m in net.west.logs())


def test_redirect_02_auth() -> None:
    """ikev2-redirect-02-auth: east's conn has ``send-redirect=yes``, ``redirect-to=``
    north: east authenticates west, answers IKE_AUTH with REDIRECT and no Child SA;
    west deletes that IKE SA and comes up at north."""
    net = tri(ACCEPT, {"send-redirect": "yes", "redirect-to": str(GW_B), "rekey": "no"}, {})
    up(net)
    assert _where(net, "west-east") == [(GW_B, [ENET])]
    assert len(net.established(net.west)) == 1
    assert not net.established(net.east) and not net.east.kernel_sas
    assert any("established IKE SA" in m for m in net.east.logs())


def _loop(east_settings: EngineSettings | None, east: dict, north: dict) -> Net3:
    net = tri(ACCEPT, east, north, east_settings=east_settings)
    up(net)
    net.advance(30)
    return net


AUTH_LOOP = ({"send-redirect": "yes", "redirect-to": str(GW_B)},
             {"send-redirect": "yes", "redirect-to": str(EAST)})


# (both dirs configure east and north the same way: send-redirect=yes in IKE_AUTH)
@pytest.mark.parametrize("name", ["ikev2-redirect-03-auth-loop",
                                  "ikev2-redirect-03-global-loop"])
def test_redirect_03_loop(name: str) -> None:
    """ikev2-redirect-03-auth-loop, -03-global-loop: east sends west to north in
    IKE_AUTH and north sends it back (``send-redirect=yes``, ``redirect-to=`` each
    other).  Libreswan follows 5 redirects ("redirect attempt 1..5"), then stops
    following (its next try is a revival, 300 s later); we follow the same 5
    (``MAX_REDIRECTS`` within ``LOOP_PERIOD``, RFC 5685 §7) and refuse the sixth.
    Difference kept (a deliberate choice, test_redirect_ikeauth): Libreswan deletes the
    last IKE SA and revives towards the configured east after 300 s; we keep the last
    IKE SA (authenticated, without a Child SA) and send nothing more."""
    net = _loop(None, *AUTH_LOOP)
    west = net.west.logs()
    assert len([m for m in west if "redirected by" in m]) == redmod.MAX_REDIRECTS == 5
    assert any("redirect loop (5 redirects within 300 s" in m for m in west)
    assert not net.children(net.west) and not net.west.kernel_sas
    assert len(net.established(net.west)) <= 1


def test_redirect_03_loop_global_variant() -> None:
    """The same loop with east redirecting in IKE_SA_INIT (``global-redirect=yes``), as
    the name ikev2-redirect-03-global-loop suggests: again 5 redirects, then no more."""
    net = _loop(EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]), {},
                AUTH_LOOP[1])
    west = net.west.logs()
    assert len([m for m in west if "redirected by" in m]) == 5
    assert any("redirect loop (5 redirects within 300 s" in m for m in west)
    assert not net.children(net.west) and not net.west.kernel_sas


def _peers_tried(net: Net3) -> list[object]:
    """The gateways west sent a first IKE_SA_INIT request to, in order."""
    out = []
    for a in net.west.actions:
        if isinstance(a, SendPacket):
            m = wm.parse_message(a.data)
            if m.exchange == INIT and not m.response and \
                    (not out or out[-1] != a.remote.addr):
                out.append(a.remote.addr)
    return out


@pytest.mark.parametrize("name", ["ikev2-redirect-04-auth-down",
                                  "ikev2-redirect-04-global-down"])
def test_redirect_04_target_down(name: str) -> None:
    """ikev2-redirect-04-auth-down, -04-global-down: east redirects west (in IKE_AUTH,
    resp. IKE_SA_INIT) to north, which is down.  Libreswan times the IKE_SA_INIT to north
    out ("10 second timeout exceeded") and revives the connection towards the
    configured east, which redirects it again: west flip-flops between east and north.
    We used to retry the dead north for ever (the conn kept north's address); fixed in
    ``redirect.unreachable`` (called from ``IKESAInit.on_timeout``).  Libreswan's west
    revives because ``ipsec auto --up`` made it +UP; here ``auto=start``."""
    east = {"send-redirect": "yes", "redirect-to": str(GW_B), "rekey": "no"} \
        if "auth" in name else {}
    es = None if "auth" in name else \
        EngineSettings(global_redirect="yes", global_redirect_to=[GW_B])
    net = tri({**ACCEPT, "retransmit-timeout": "10s"}, east, {}, east_settings=es)
    net.west.engine.connections["west-east"].auto = "start"
    del net.by_addr[GW_B]  # north is down
    up(net)
    net.advance(25)
    assert _peers_tried(net)[:4] == [EAST, GW_B, EAST, GW_B]
    assert any("redirect target 192.0.2.3 does not answer: back to gateway 192.0.2.2" in m
               for m in net.west.logs())
    assert not net.west.kernel_sas and not net.east.kernel_sas


def test_redirect_01_global_load_balancer() -> None:
    """ikev2-redirect-01-global-load-balancer: ``global-redirect-to=`` lists three
    gateways, the first and third down; clients that connect one after the other
    (deleting and re-adding the conn in between, so that each starts at east) are
    sent to the first, second, third, first, second gateway in turn; those sent to
    the second come up there.  We used to send every client to the first one;
    fixed in ``redirect.init_target``."""
    gw_c = ipaddress.ip_address("192.0.2.4")
    net = tri(ACCEPT, {}, {}, east_settings=EngineSettings(
        global_redirect="yes", global_redirect_to=[gw_c, GW_B, ipaddress.ip_address(
            "192.0.2.5")]))
    landed = []
    for _ in range(5):
        net.west.engine.delete_connection("west-east", net.now)
        net.west.engine.add_connection(conn({**ACCEPT, "retransmit-timeout": "10s"}, True))
        bump_generation()
        up(net)
        net.advance(15)
        landed.append((_peers_tried(net)[-1], bool(net.children(net.west))))
    assert landed == [(gw_c, False), (GW_B, True), (ipaddress.ip_address("192.0.2.5"), False),
                      (gw_c, False), (GW_B, True)]


def test_redirect_06_roadwarriors() -> None:
    """ikev2-redirect-06-roadwarriors: a road warrior (``leftmodecfgclient=yes``,
    ``rightsubnet=0.0.0.0/0``) gets a lease from east's ``leftaddresspool=``; east is
    told ``ipsec whack --name east-any --redirect-to`` west (here: north); the client
    deletes its IKE SA and comes up at north, with a lease from north's pool (the same
    address: the same pool, the first client).  (Certificates in Libreswan's test,
    PSK here; one client here, Libreswan's second one repeats the first;
    ``modecfgpull=yes`` left out: our config refuses it as IKEv1-only, while Libreswan
    loads it with IKEv2.)"""
    road = {**ACCEPT, "leftsubnet": None, "rightsubnet": "0.0.0.0/0",
            "leftmodecfgclient": "yes"}
    gw = {"left": "%any", "leftsubnet": None, "rightsubnet": "0.0.0.0/0",
          "leftaddresspool": "198.51.100.101-198.51.100.200", "leftmodecfgclient": "yes",
          "rightmodecfgserver": "yes"}
    net = tri(road, gw, gw)
    up(net)
    (c,) = net.children(net.west)
    assert c.local_ts == ["198.51.100.101/32"]
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="east"))
    net.run()
    net.advance(5)
    assert not net.established(net.east) and not net.east.kernel_sas
    assert [(ike.remote.addr) for ike in net.west.engine.by_serial.values()
            if ike.established] == [GW_B]
    (c,) = net.children(net.west)
    assert c.local_ts == ["198.51.100.101/32"] and c.remote_ts == ["0.0.0.0/0"]


CUCKOLD = "203.0.113.128/25"  # west-cuckold's rightsubnet (Libreswan's 192.0.20.0/24)


def _pair(east: dict, es: EngineSettings | None, cuckold_accepts: str) -> Net3:
    west = {"west-cuckoo": {**ACCEPT, "rightsubnet": ENET},
            "west-cuckold": {"accept-redirect": cuckold_accepts, "rightsubnet": CUCKOLD}}
    net = tri(west, {"rightsubnet": None, **east},
              {"conns": [{"rightsubnet": ENET}, {"rightsubnet": CUCKOLD}]},
              east_settings=es, names=("west-cuckoo", "west-cuckold"))
    up(net, "west-cuckoo")
    net.advance(5)
    up(net, "west-cuckold")
    net.advance(30)
    return net


SEND = {"send-redirect": "yes", "redirect-to": str(GW_B)}


@pytest.mark.parametrize(("name", "east", "es"), [
    ("ikev2-redirect-07-global-pair", {},
     EngineSettings(global_redirect="yes", global_redirect_to=[GW_B])),
    ("ikev2-redirect-07-auth-pair", SEND, None)])
def test_redirect_07_pair(name: str, east: dict, es: EngineSettings | None) -> None:
    """ikev2-redirect-07-global-pair, -07-auth-pair: two conns of west to east (same
    IDs, different ``rightsubnet=``), both ``accept-redirect=yes``; each is redirected
    to north, whose conns (``rightsubnets=``) take both: both Child SAs end up at
    north, none at east.  Difference kept: Libreswan's second conn, once redirected,
    finds the first one's IKE SA to north and adds its Child SA there with
    CREATE_CHILD_SA; ours opens a second IKE SA to north (RFC 7296 does not ask
    either)."""
    net = _pair(east, es, "yes")
    assert _where(net, "west-cuckoo") == [(GW_B, [ENET])]
    assert _where(net, "west-cuckold") == [(GW_B, [CUCKOLD])]
    assert not net.established(net.east) and not net.east.kernel_sas


def test_redirect_07_auth_split() -> None:
    """ikev2-redirect-07-auth-split: as -07-auth-pair, but west-cuckold has
    ``accept-redirect=no``: it sends no REDIRECT_SUPPORTED, so east does not redirect
    it; east has no conn for its subnet and answers TS_UNACCEPTABLE; the IKE SA with
    east stays (Libreswan: "IKE_AUTH response rejected Child SA with TS_UNACCEPTABLE")."""
    net = _pair(SEND, None, "no")
    assert _where(net, "west-cuckoo") == [(GW_B, [ENET])]
    assert _where(net, "west-cuckold") == []
    assert any("peer answered TS_UNACCEPTABLE" in m for m in net.west.logs())
    assert len(net.established(net.east)) == 1 and not net.east.kernel_sas


# ------------------------------------------------------------------ MOBIKE (RFC 4555)
NEW_WEST = ipaddress.ip_address("192.0.2.77")
MOBIKE = {"authby": "secret", "mobike": "yes", "esp": "aes256-sha2"}


def two(west: dict, east: dict, *, nat: bool = False) -> Net:
    """West and east from ipsec.conf keys (east's conn named "west-east" too)."""
    net = Net(nat=nat)
    for side, keys, left in ((net.west, west, True), (net.east, east, False)):
        side.engine.delete_connection("west-east", net.now)
        side.engine.add_connection(conn(keys, left))
    bump_generation()
    return net


def _established(side: Side) -> list:
    return [i for i in side.engine.by_serial.values() if i.established]


@pytest.mark.parametrize(("name", "west", "east"), [
    # north keeps a second address and loses the first: the SAs move there
    ("ikev2-mobike-01", MOBIKE, {**MOBIKE, "left": "%any"}),
    # north loses its only address, gets a new one later: the SAs move there (our
    # engine is told of the new address when it appears: local_address_changed)
    ("ikev2-mobike-02", MOBIKE, {**MOBIKE, "left": "%any"}),
    ("ikev2-mobike-05-gcm", {**MOBIKE, "esp": "aes_gcm"},
     {**MOBIKE, "esp": "aes_gcm", "left": "%any"}),
    # road's rightsubnet=0.0.0.0/0
    ("ikev2-mobike-06", {**MOBIKE, "rightsubnet": "0.0.0.0/0"},
     {**MOBIKE, "left": "%any", "rightsubnet": "0.0.0.0/0"}),
])
def test_mobike_client_moves(name: str, west: dict, east: dict) -> None:
    """ikev2-mobike-01, -02, -05-gcm, -06: ``mobike=yes`` on both ends, the initiator's
    address changes once the tunnel is up; it sends UPDATE_SA_ADDRESSES from the new
    one, the responder checks return routability and moves the IKE SA and the Child SA
    (same SPIs, no new Child SA); traffic then flows on the new path (Libreswan: the
    same Child SA #2 answers the second ping)."""
    net = two(west, east)
    net.up()
    (wi,), (ei,) = _established(net.west), _established(net.east)
    spis = {c.spi_in for c in ei.children}
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    assert wi.mobike and ei.mobike
    assert ei.remote.addr == NEW_WEST and wi.local.addr == NEW_WEST
    assert {c.spi_in for c in ei.children} == spis and len(net.children(net.east)) == 1
    (c,) = ei.children
    assert c.remote_addr == NEW_WEST
    assert [m for m in net.east.actions if isinstance(m, MoveSA)]
    # the moved tunnel still carries exchanges: a Child SA rekey on the new path
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.children(net.west)) == len(net.children(net.east)) == 1


def test_mobike_03_road_with_lease_moves() -> None:
    """ikev2-mobike-03: road (``leftmodecfgclient=yes``, ``narrowing=yes``) gets a lease
    from east's ``leftaddresspool=``, then changes address: the SAs move, the lease
    and the selectors stay (Libreswan: "lease=192.0.3.10/32" before and after)."""
    road = {**MOBIKE, "leftsubnet": None, "narrowing": "yes", "leftmodecfgclient": "yes"}
    gw = {**MOBIKE, "left": "%any", "leftsubnet": None,
          "leftaddresspool": "198.51.100.10-198.51.100.19"}
    net = two(road, gw)
    net.up()
    (c,) = net.children(net.west)
    assert (c.local_ts, c.remote_ts) == (["198.51.100.10/32"], [ENET])
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.run()
    (ei,) = _established(net.east)
    assert ei.remote.addr == NEW_WEST
    (c,) = net.children(net.west)
    assert (c.local_ts, c.remote_ts) == (["198.51.100.10/32"], [ENET])


def test_mobike_04_same_address_back() -> None:
    """ikev2-mobike-04: road loses its only address, then gets the same one back
    ("like closing and opening the lid"); Libreswan still runs the MOBIKE exchange and
    the tunnel stays.  So do we: UPDATE_SA_ADDRESSES goes out, nothing moves, the same
    IKE SA and Child SA keep working."""
    net = two(MOBIKE, {**MOBIKE, "left": "%any"})
    net.up()
    (ei,) = _established(net.east)
    spis = {c.spi_in for c in ei.children}
    net.apply(net.west, net.west.engine.local_address_changed(WEST, WEST, net.now))
    net.run()
    net.advance(30)
    assert any("sending UPDATE_SA_ADDRESSES" in m for m in net.west.logs())
    assert _established(net.east) == [ei] and ei.remote.addr == WEST
    assert {c.spi_in for c in ei.children} == spis
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.children(net.west)) == len(net.children(net.east)) == 1


# --------------------------------------------------- NAT expiry and liveness (RFC 7296 §2.4)
ROAD = {"leftsubnet": None, "leftmodecfgclient": "yes", "narrowing": "yes",
        "retransmit-timeout": "10s"}
GW = {"left": "%any", "leftsubnet": None, "leftaddresspool": "198.51.100.1-198.51.100.10",
      "narrowing": "yes", "retransmit-timeout": "10s"}


def _remap(net: Net) -> None:
    """The NAT in front of west forgets its mapping: west's next packets leave from a
    new public port, and the old one leads nowhere."""
    net.nat_map = {k: Endpoint(NAT_PUBLIC, v.port + 1000) for k, v in net.nat_map.items()}


def test_mobike_08_nat_expire_liveness_road_mobike_no() -> None:
    """ikev2-mobike-08-nat-expire-liveness-road-mobike-no: road behind a NAT,
    ``mobike=no``, liveness on road only (``dpddelay=10``); the NAT mapping changes.
    Libreswan's east drops road's (correctly protected) probes from the new port, road
    times the probe out and makes a new IKE SA and Child SA (the same lease).  Kept
    different, per RFC 7296 §2.23 (a host not behind a NAT follows the address and port
    of the latest authenticated message; this is not MOBIKE): east answers the probe
    from the new port and moves the IKE SA and the Child SA there; road keeps its SAs."""
    net = two({**ROAD, "mobike": "no", "dpddelay": "10"},
              {**GW, "mobike": "no", "dpddelay": "0"}, nat=True)
    net.up()
    (ei,) = _established(net.east)
    old = ei.remote
    _remap(net)
    net.advance(40)
    assert _established(net.east) == [ei] and ei.remote != old and \
        ei.remote.addr == NAT_PUBLIC
    (c,) = ei.children
    assert c.encap is not None and c.encap[1] == ei.remote.port
    assert len(_established(net.west)) == 1 and len(net.children(net.west)) == 1


def test_mobike_08_nat_expire_liveness_east() -> None:
    """ikev2-mobike-08-nat-expire-liveness-east: liveness on east only (``dpddelay=10``),
    road sends no NAT keepalives (``nat-keepalive=no``); the NAT mapping changes and
    road stays silent.  East's probes go to the old mapping, are lost, and east times
    out ("10 second timeout exceeded") and deletes the SAs; so do we."""
    net = two({**ROAD, "dpddelay": "0", "nat-keepalive": "no"}, {**GW, "dpddelay": "10"},
              nat=True)
    net.up()
    _remap(net)
    net.advance(60)
    assert not _established(net.east) and not net.east.kernel_sas
    assert any("peer is not responding" in m for m in net.east.logs())


# ------------------------------------------------------------------ NAT-T, liveness
def test_ikev2_nat_pluto_03_encapsulation_yes_without_nat() -> None:
    """ikev2-nat-pluto-03: road has ``encapsulation=yes``, east the default (auto); no
    NAT between them.  IKE floats to port 4500 for IKE_AUTH and the Child SA is ESP in
    UDP on both ends (Libreswan: "ESPinUDP ... NATD=192.1.2.23:4500")."""
    net = two({"leftsubnet": None, "encapsulation": "yes"},
              {"left": "%any", "leftsubnet": None})
    net.up()
    (wi,), (ei,) = _established(net.west), _established(net.east)
    assert wi.remote.port == 4500 and ei.local.port == 4500
    (wc,), (ec,) = wi.children, ei.children
    assert wc.encap is not None and ec.encap is not None
    assert wc.encap == (ec.encap[1], ec.encap[0])
    assert all(sa.encap_dport == 4500 for sa in net.west.kernel_sas.values()
               if sa.direction == "out")


def test_ikev2_liveness_11_silent() -> None:
    """ikev2-liveness-11-silent: ``dpddelay=3`` on both ends, pings every second, then a
    second ``ipsec auto --up`` (a new Child SA with CREATE_CHILD_SA on the same IKE SA).
    Libreswan sends no probe while ESP traffic comes in (it asks the kernel).  Kept
    different: our sans-I/O engine sees IKE messages only, so each end probes every
    ``dpddelay`` of IKE silence (RFC 7296 §2.4 allows it: checks are needed "when
    nothing was received", and may be skipped on ESP traffic); the probes are
    answered, nothing is torn down, and the second Child SA comes up."""
    net = two({"leftsubnet": None, "rightsubnet": None, "dpddelay": "3"},
              {"leftsubnet": None, "rightsubnet": None, "dpddelay": "3"})
    net.up()
    net.advance(12)
    sent = len(net.sent)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(12)
    assert len(net.sent) > sent
    assert len(_established(net.west)) == len(_established(net.east)) == 1
    assert len(net.children(net.west)) == len(net.children(net.east)) == 1
    assert not [m for m in net.west.logs() + net.east.logs() if "not responding" in m]


def test_ikev2_liveness_09_revival() -> None:
    """ikev2-liveness-09-revival: west has ``dpddelay=3``, ``retransmit-timeout=10s``;
    east becomes unreachable.  West's probe times out, west declares east dead, deletes
    the SAs and (the conn is up: ``ipsec up``, here ``auto=start``) revives it: a new
    IKE_SA_INIT goes out; once east is back the tunnel comes up again."""
    net = two({"dpddelay": "3", "retransmit-timeout": "10s"}, {"rekey": "no"})
    net.west.engine.connections["west-east"].auto = "start"
    net.up()
    assert net.children(net.west)
    net.cut = True
    net.advance(20)
    assert not net.children(net.west)
    assert any("peer is not responding" in m for m in net.west.logs())
    assert any("restarting connection" in m for m in net.west.logs())
    net.cut = False
    net.advance(60)
    assert len(net.children(net.west)) == 1


# ------------------------------------------------------------------ IKE fragmentation
def _skf(side: Side) -> list[int]:
    """Sizes of the IKE_AUTH fragments (SKF, RFC 7383) ``side`` sent."""
    out = []
    for a in side.actions:
        if isinstance(a, SendPacket):
            m = wm.parse_message(a.data)
            if m.exchange == AUTH and m.payloads and m.payloads[-1].payload_type == PT.SKF:
                out.append(len(a.data))
    return out


def test_ikev2_frag_01(tmp_path: Path) -> None:
    """ikev2-frag-01: ikev2-04-basic-x509 (RSA certificates, ``leftid=%fromcert``) with
    ``fragmentation=yes`` on both ends: the IKE_AUTH exchange is sent in fragments and
    the tunnel comes up (Libreswan: Child SA AES_GCM_16_256, a ping through it)."""
    pki = PKI.build("rsa3072")
    net = cert_net(tmp_path, pki.ee("west", "rsa3072"), pki.ee("east", "rsa3072"), pki,
                   authby="rsasig", west_kw={"fragmentation": "yes"},
                   east_kw={"fragmentation": "yes"})
    net.up()
    assert len(net.children(net.west)) == len(net.children(net.east)) == 1
    (c,) = net.children(net.west)
    assert (c.local_ts, c.remote_ts) == ([WNET], [ENET]) and c.encr == "AES_GCM_16_256"
    assert len(_skf(net.west)) >= 2 and len(_skf(net.east)) >= 2
    check_pair(net)


def test_ikev2_frag_02_ipv6(tmp_path: Path) -> None:
    """ikev2-frag-02-ipv6: IPv6 hosts and subnets, ``ike=aes_gcm256-sha2_256;modp2048``,
    ``esp=aes_gcm256-null``, a 4096-bit RSA key on west, ``fragmentation=yes``: the
    IKE_AUTH messages are fragmented so that each fits the IPv6 minimum MTU and the
    tunnel comes up with those algorithms and selectors."""
    pki = PKI.build("rsa4096")
    v6 = {"left": "2001:db8::1", "right": "2001:db8::2", "leftsubnet": "2001:111:1111::/48",
          "rightsubnet": "2001:2222:222:2200::/56", "fragmentation": "yes",
          "ike": "aes_gcm256-sha2_256;modp2048", "esp": "aes_gcm256-null"}
    net = cert_net(tmp_path, pki.ee("west", "rsa4096"), pki.ee("east", "rsa4096"), pki,
                   authby="rsasig", west_kw=v6, east_kw=v6)
    net.up()
    (wi,) = net.established(net.west)
    assert (wi.encr, wi.prf, wi.ke) == ("AES_GCM_16_256", "PRF_HMAC_SHA2_256", "MODP2048")
    (c,) = net.children(net.west)
    assert (c.local_ts, c.remote_ts) == (["2001:111:1111::/48"], ["2001:2222:222:2200::/56"])
    assert c.encr == "AES_GCM_16_256"
    for side in (net.west, net.east):
        sizes = _skf(side)
        assert len(sizes) >= 2 and max(sizes) <= 1280 - 40 - 8
    check_pair(net)
