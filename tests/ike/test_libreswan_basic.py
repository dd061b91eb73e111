"""Libreswan 5.2's basic-pluto-*, ipv6-*, ikev2-ikeport-* and ikev2-ondemand-* tests.

Each row names the ``testing/pluto/<dir>`` of Libreswan v5.2 it restates; the expected
outcome is taken from that test's ``*.console.txt``.  The conns are written here as
ipsec.conf keys on the harness's addresses (west 192.0.2.1, east 192.0.2.2, or
2001:db8::1 / 2001:db8::2 for IPv6 hosts), parsed by our config parser and run
through two engines back to back (``test_libreswan_outcomes.make_net``).  Where the
Libreswan test authenticates with raw RSA keys we use a PSK: the outcomes checked
here (SAs, selectors, mode, algorithms, policies) do not depend on it.

Skipped from this family (not IKEv2, or not about the protocol): basic-pluto-01,
-01-failtest, -01-nokey, -01-nosecrets, -02, -03, -04, -06, -07-sourceip, -08-misc,
-09-orienting, -10-nm-configured, -12, -13-xfrm-ondemand (all keyexchange=ikev1);
basic-pluto-17-nssdir, -18-secrets, -19-seedbits (NSS database location, RSA key
sizes in NSS, NSS seeding); psk-pluto-01..06, x509-pluto-01..05, x509-pluto-frag-00..04,
ipv6-*-01-ikev1, ipv6-transport-mode-02/-04, ipv6-transport-ts-mode-04,
ipv6-tunnel-mode-02/-03/-04 (all keyexchange=ikev1).

Differences found: a responder with ``narrowing=yes`` answered an on-demand Child SA
(whose TSi/TSr start with the packet, RFC 7296 §2.9) with both the packet's /32 and
the conn's subnet, which an initiator with narrowing=no refused; it now leaves out an
intersection inside another one (``ike/ts.narrow``; Libreswan: the conn's selectors,
ikev2-ondemand-01-instance-*, -04-timeout-instance).  A local ``leftikeport=`` (the
port this host listens on) is refused when the conn is added
(``daemon/registry.local_ikeport_refusal``, a documented choice: pypluto listens on
its --ikeport and --natikeport only), where Libreswan opens that port and sends IKE
to the peer's 4500; the rows say so.  With ``leftikeport=4500``
(the port we do listen on, ikev2-ikeport-4500-initiator-*) the conn is
accepted: IKE then starts on 4500 both ways.
"""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

import pytest

from pypluto.config.commands import autoall_actions
from pypluto.config.model import bump_generation
from pypluto.config.parser import parse_config_text
from pypluto.control.protocol import RC_FATAL, RC_SUCCESS
from pypluto.ike.actions import AddPolicy, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.params import SAAcquire, TrafficSelector

from .harness import PSK, Net, Store, check_pair
from .test_libreswan_outcomes import ENET, HOST, WNET, Want, _children, _ike, check, conn
from .test_traps import kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "config"))
from test_libreswan_add_outcomes import _add  # noqa: E402  (the add-time helper)

W6, E6 = "2001:db8::1", "2001:db8::2"
V6HOSTS = {"left": W6, "right": E6}
DEFAULT_IKE = ("AES_GCM_16_256", "", "PRF_HMAC_SHA2_512", "ECP_256")
DEFAULT_ESP = ("AES_GCM_16_256", "")


def make_net(west: dict, east: dict | None, *, v6: bool = False) -> Net:
    """Two engines with west's and east's conn (``east=None``: east has none); IPv6
    host addresses when ``v6``."""
    net = Net()
    if v6:
        for side, addr, seed in ((net.west, W6, 1), (net.east, E6, 101)):
            a = ipaddress.ip_address(addr)
            side.engine = Engine(EngineSettings(), Store(PSK),
                                 rng=random.Random(seed).randbytes, local_addrs=[a])
            side.addr = a
    else:
        net.east.engine.delete_connection("west-east", net.now)
    net.west.engine.add_connection(conn(west, True))
    if east is not None:
        net.east.engine.add_connection(conn(east, False))
    bump_generation()
    return net


# ------------------------------------------------------------------ IPv6
# (Libreswan test dir, keys of both ends, v6 hosts, expected outcome); all four run
# with Libreswan's default proposals: AES_GCM_16_256, PRF SHA2_512, DH19, ESN
V6_CASES: list = [
    ("ipv6-6in6-02-ikev2",
     {**V6HOSTS, "leftsubnet": "2001:db8:0:1::/64", "rightsubnet": "2001:db8:0:2::/64"},
     True, Want(ts=("2001:db8:0:1::/64", "2001:db8:0:2::/64"))),
    ("ipv6-4in6-02-ikev2", V6HOSTS, True, Want()),
    ("ipv6-6in4-02-ikev2",
     {"leftsubnet": "2001:db8:0:1::/64", "rightsubnet": "2001:db8:0:2::/64"}, False,
     Want(ts=("2001:db8:0:1::/64", "2001:db8:0:2::/64"))),
    ("ikev2-ipv6-transport-mode-02-xfrm-xfrm", {**V6HOSTS, **HOST, "type": "transport"},
     True, Want(ts=(f"{W6}/128", f"{E6}/128"), mode="transport")),
]


@pytest.mark.parametrize(("name", "keys", "v6", "want"), V6_CASES,
                         ids=[c[0] for c in V6_CASES])
def test_ipv6_outcome_matches_libreswan(name: str, keys: dict, v6: bool,
                                        want: Want) -> None:
    net = make_net(keys, keys, v6=v6)
    net.up()
    net.advance(60)
    want.ike_algs, want.esp, want.esn = DEFAULT_IKE, DEFAULT_ESP, True
    check(net, want)
    outer = {ipaddress.ip_address(W6 if v6 else "192.0.2.1"),
             ipaddress.ip_address(E6 if v6 else "192.0.2.2")}
    assert {sa.src for sa in net.west.kernel_sas.values()} == outer
    sent = [a for a in net.west.actions if isinstance(a, SendPacket)]
    assert {a.remote.addr for a in sent} == outer - {net.west.addr}


# ------------------------------------------------------------------ ikeport
def test_ikeport_03_responder_peer_port() -> None:
    """ikev2-ikeport-03-responder: west has rightikeport=2500 (east's port); IKE goes
    from west's 4500 to east's 2500 with no NAT, so ESP is not encapsulated.  East's
    own conn (rightikeport= on its local end) is refused by us when added (below); a
    pypluto east takes the port from --natikeport=2500, i.e. a conn without it."""
    net = make_net({"rightikeport": "2500"}, {})
    net.up()
    net.advance(60)
    check(net, Want(ike_algs=DEFAULT_IKE, esp=DEFAULT_ESP, esn=True))
    sent = [a for a in net.west.actions if isinstance(a, SendPacket)]
    assert {(a.local.port, a.remote.port) for a in sent} == {(4500, 2500)}
    assert all(sa.encap_dport is None for s in (net.west, net.east)
               for sa in s.kernel_sas.values())


def test_ikeport_4500_initiator_starts_on_4500_both_ways() -> None:
    """ikev2-ikeport-4500-initiator-ipv4: west's leftikeport=4500 (its NAT-T port, which
    a pypluto west listens on as --natikeport): IKE goes from west's 4500 to east's 4500
    from the first message (RFC 7296 §2.23 allows an initiator to start on 4500)."""
    net = make_net({"leftikeport": "4500"}, {})
    net.up()
    check(net, Want(ike_algs=DEFAULT_IKE, esp=DEFAULT_ESP, esn=True))
    sent = [a for a in net.west.actions if isinstance(a, SendPacket)]
    assert sent and {(a.local.port, a.remote.port) for a in sent} == {(4500, 4500)}


V4 = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n\tleftid=@west\n" \
    "\trightid=@east\n"
V6 = "conn c\n\tleft=2001:db8::1\n\tright=2001:db8::2\n\tauthby=secret\n"
SUBNETS = f"\tleftsubnet={WNET}\n\trightsubnet={ENET}\n"
NOT_OURS = ("leftikeport={} is not supported by pypluto (a port of its own for the "
            "local end: pypluto listens on its --ikeport and --natikeport only)")

# (Libreswan test dir, conn text as the local end is left=, refused?)
# A local leftikeport= is refused at add (Libreswan listens on it); the peer's one loads.
IKEPORT_ADD: list = [
    ("ikev2-ikeport-02-initiator", V4 + SUBNETS + "\tleftikeport=2500\n", 2500),
    ("ikev2-ikeport-02-initiator", V4 + SUBNETS + "\trightikeport=2500\n", None),
    ("ikev2-ikeport-03-responder", V4 + SUBNETS + "\tleftikeport=2500\n", 2500),
    ("ikev2-ikeport-04-rw-nat-initiator",
     V4 + "\tleftsubnet=198.51.100.9/32\n\trightsubnet=203.0.113.0/24\n"
     "\tleftikeport=2500\n", 2500),
    ("ikev2-ikeport-05-rw-nat-responder",
     "conn c\n\tleft=192.0.2.1\n\tright=%any\n\tauthby=secret\n\tleftid=@east\n"
     "\trightid=@road\n\trightikeport=2500\n\trightsubnet=198.51.100.9/32\n"
     "\tleftsubnet=203.0.113.0/24\n", None),
    ("ikev2-ikeport-06-host-to-host", V4 + "\tleftikeport=2500\n", 2500),
    # leftikeport=4500: our own --natikeport, a port we listen on (engine row below)
    ("ikev2-ikeport-4500-initiator-ipv4", V4 + SUBNETS + "\tleftikeport=4500\n", 4500),
    ("ikev2-ikeport-4500-initiator-ipv6",
     V6 + "\tleftsubnet=2001:db8:0:1::/64\n\trightsubnet=2001:db8:0:2::/64\n"
     "\tleftikeport=4500\n", 4500),
]


def _ids(rows: list) -> list[str]:
    out = []
    for i, r in enumerate(rows):
        values = r.values if hasattr(r, "values") else r
        out.append(f"{values[0]}-{i}")
    return out


@pytest.mark.parametrize(("name", "text", "port"), IKEPORT_ADD, ids=_ids(IKEPORT_ADD))
def test_ikeport_at_add(name: str, text: str, port: int | None) -> None:
    rc, out, added = _add(text)
    if port is None or port == 4500:
        # Libreswan adds these (4500: "added IKEv2 connection", then up to the peer's 4500)
        assert rc == RC_SUCCESS and added, out
        return
    line = text.count("\n")  # the key is the last line of the conn
    assert (rc, out, added) == (RC_FATAL, [f'"c": f:{line}: {NOT_OURS.format(port)}'], [])


# ------------------------------------------------------------------ on-demand
def _route(net: Net) -> int:
    acts = net.west.engine.route("west-east", net.now)
    net.apply(net.west, acts)
    pols = [a.policy for a in acts if isinstance(a, AddPolicy)]
    assert len(pols) == 1 and pols[0].direction == "out" and pols[0].action == "ipsec"
    return pols[0].reqid


def _acquire(net: Net, reqid: int, src: str, dst: str) -> None:
    ev = SAAcquire(reqid=reqid, src=TrafficSelector(ipaddress.ip_network(src)),
                   dst=TrafficSelector(ipaddress.ip_network(dst)),
                   local=net.west.addr, remote=net.east.addr)  # type: ignore[arg-type]
    acts = net.west.engine.acquire(ev, net.now)
    assert any(isinstance(a, SendPacket) for a in acts)
    net.apply(net.west, acts)
    net.run()


PERMANENT = {"leftsubnet": "192.0.2.1/32", "rightsubnet": "192.0.2.2/32"}
INSTANCE = {"leftsubnet": "198.51.100.254/32", "rightsubnet": ENET}

# (Libreswan test dir, keys of both ends, east's extra keys, the trigger packet, the
#  Child SA's selectors as west has them)
ONDEMAND: list = [
    ("ikev2-ondemand-01-instance-route", INSTANCE, {"narrowing": "yes"},
     ("198.51.100.254/32", "203.0.113.254/32"), ("198.51.100.254/32", ENET), "tunnel"),
    ("ikev2-ondemand-01-instance-auto", {**INSTANCE, "auto": "ondemand"},
     {"narrowing": "yes"}, ("198.51.100.254/32", "203.0.113.254/32"),
     ("198.51.100.254/32", ENET), "tunnel"),
    ("ikev2-ondemand-02-permanent-route-tunnel", PERMANENT, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "tunnel"),
    ("ikev2-ondemand-02-permanent-route-transport", {**PERMANENT, "type": "transport"}, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "transport"),
    ("ikev2-ondemand-02-permanent-auto-tunnel", {**PERMANENT, "auto": "ondemand"}, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "tunnel"),
    ("ikev2-ondemand-02-permanent-auto-transport",
     {**PERMANENT, "type": "transport", "auto": "ondemand"}, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "transport"),
]


@pytest.mark.parametrize(("name", "keys", "east_keys", "packet", "ts", "mode"), ONDEMAND,
                         ids=[c[0] for c in ONDEMAND])
def test_ondemand_matches_libreswan(name: str, keys: dict, east_keys: dict,
                                    packet: tuple[str, str], ts: tuple[str, str],
                                    mode: str) -> None:
    """route installs one outbound trap (the conn's selectors); unroute removes it;
    a packet on the trap brings up the Child SA with the conn's own selectors (east's
    narrowing=yes does not narrow it to the packet); down leaves just the trap, unroute
    then leaves nothing."""
    net = make_net({**keys, "auto": None}, {**keys, **east_keys, "auto": None})
    if "auto" in keys:  # auto=ondemand is auto=route: the trap comes with the add
        text = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauto=ondemand\n"
        assert autoall_actions(parse_config_text(text, "f")) == [("route", "c")]
    reqid = _route(net)
    trap = kernel(net.west)
    assert trap == {(ts[0], ts[1], "out", reqid)}
    if "auto" not in keys:  # the -route tests unroute and route again first
        net.apply(net.west, net.west.engine.unroute("west-east", net.now))
        assert kernel(net.west) == set()
        reqid = _route(net)
        assert kernel(net.west) == trap
    _acquire(net, reqid, *packet)
    net.advance(30)
    check(net, Want(ts=ts, mode=mode, ike_algs=DEFAULT_IKE, esp=DEFAULT_ESP, esn=True))
    dirs = sorted(k[2] for k in kernel(net.west))
    # transport mode has no forward policy (Libreswan: in, out; tunnel: fwd, in, out)
    assert dirs == (["fwd", "in", "out"] if mode == "tunnel" else ["in", "out"])
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert not _ike(net.west, net) and not net.west.kernel_sas
    assert kernel(net.west) == trap
    net.apply(net.west, net.west.engine.unroute("west-east", net.now))
    assert kernel(net.west) == set()


TIMEOUT: list = [
    ("ikev2-ondemand-04-timeout-instance", INSTANCE, {"narrowing": "yes"},
     ("198.51.100.254/32", "203.0.113.254/32"), ("198.51.100.254/32", ENET), "tunnel"),
    ("ikev2-ondemand-04-timeout-permanent-tunnel", PERMANENT, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "tunnel"),
    ("ikev2-ondemand-04-timeout-permanent-transport", {**PERMANENT, "type": "transport"}, {},
     ("192.0.2.1/32", "192.0.2.2/32"), ("192.0.2.1/32", "192.0.2.2/32"), "transport"),
]


@pytest.mark.parametrize(("name", "keys", "east_keys", "packet", "ts", "mode"), TIMEOUT,
                         ids=[c[0] for c in TIMEOUT])
def test_ondemand_timeout_then_up(name: str, keys: dict, east_keys: dict,
                                  packet: tuple[str, str], ts: tuple[str, str],
                                  mode: str) -> None:
    """retransmit-timeout=10s and east without the conn: the first acquire's
    IKE_SA_INIT goes unanswered (east knows no conn) and times out after 10 s; the trap
    stays; east adds the conn and the next packet brings the Child SA up."""
    keys = {**keys, "retransmit-timeout": "10s"}
    net = make_net(keys, None)
    reqid = _route(net)
    trap = kernel(net.west)
    _acquire(net, reqid, *packet)
    net.advance(9)
    assert not _ike(net.west, net)
    assert net.west.engine.ike_of("west-east")  # still trying
    net.advance(2)  # past 10 s
    assert not net.west.engine.ike_of("west-east"), net.west.logs()
    assert kernel(net.west) == trap and not net.west.kernel_sas
    net.east.engine.add_connection(conn({**keys, **east_keys}, False))
    bump_generation()
    _acquire(net, reqid, *packet)
    net.advance(30)
    check(net, Want(ts=ts, mode=mode))
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert kernel(net.west) == trap


# ------------------------------------------------------------------ basic-pluto
def test_basic_pluto_15_no_conn_on_east() -> None:
    """basic-pluto-15-no-retransmit (its IKEv2 conn): east has no conn loaded; no SA, no
    policy on either end, west gives up after its retransmits.  Libreswan's east answers
    NO_PROPOSAL_CHOSEN, which its west ignores (unprotected, RFC 7296 §2.21.1) until it
    times out; ours drops an IKE_SA_INIT no conn matches (no answer to unknown peers),
    and the outcome is the same."""
    net = make_net({}, None)
    net.up()
    net.advance(120)
    check(net, Want(ike=False))
    assert not net.west.engine.ike_of("west-east")
    assert not [a for a in net.east.actions if isinstance(a, SendPacket)]
    assert any("no response to IKE_SA_INIT" in m for m in net.west.logs()), net.west.logs()
    assert any("no connection found for IKE_SA_INIT" in m for m in net.east.logs())


def test_pair_is_consistent_after_ipv6_transport() -> None:
    """ikev2-ipv6-transport-mode-02-xfrm-xfrm: the transport-mode SAs carry the host
    addresses (no tunnel endpoints beyond them) and mirror each other."""
    keys = {**V6HOSTS, **HOST, "type": "transport"}
    net = make_net(keys, keys, v6=True)
    net.up()
    check_pair(net)
    assert {sa.mode for sa in net.west.kernel_sas.values()} == {"transport"}
    assert len(_children(net.west, net)) == 1
