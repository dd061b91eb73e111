"""leftupdown= as Libreswan 5.2 drives it: verbs, variables and their formats, exit status.

The facts come from Libreswan 5.2's ``updown.c`` (``fmt_common_shell_out``,
``do_updown_verb``), ``kernel_policy.c`` (``install_outbound_ipsec_kernel_policies``:
a failing prepare is only logged) and its test ``impair-install-ipsec-sa-outbound-
policy-responder-ikev1`` (a full ``executing prepare-client: ...`` dump).  An
operator's own script (often a copy of 5.2's ``_updown.xfrm``) must work unchanged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401  (fixture)
from test_updown import child

from pypluto.daemon import updown as U
from pypluto.ike.actions import Updown
from pypluto.ike.engine import _updown_policy

V6 = ipaddress.ip_address
N6 = ipaddress.ip_network


def _v6(**kw: object) -> U.UpdownChild:
    base: dict[str, object] = dict(me=V6("2001:db8::1"), peer=V6("2001:db8::2"),
                                   my_client=N6("2001:db8:1::/64"),
                                   peer_client=N6("2001:db8:2::/64"))
    base.update(kw)
    return child(**base)


# -- verbs ------------------------------------------------------------------------------


def test_ipv6_verbs_carry_the_v6_suffix() -> None:
    """5.2 (``do_updown_verb``): ``-host-v6`` / ``-client-v6`` when the address (ours for
    -host, the subnet's for -client) is IPv6; its own _updown.xfrm only knows
    ``up-client-v6`` etc. for IPv6, so ``up-client`` there would be the IPv4 branch."""
    assert U.verb_name(U.Verb.UP, _v6()) == "up-client-v6"
    assert U.verb_name(U.Verb.UNROUTE, _v6()) == "unroute-client-v6"
    host = _v6(my_client=N6("2001:db8::1/128"))
    assert U.verb_name(U.Verb.PREPARE, host) == "prepare-host-v6"
    assert U.updown_env(U.Verb.DOWN, host)["PLUTO_VERB"] == "down-host-v6"
    # IPv4 subnets over IPv6 hosts (and the reverse): the subnet's family decides
    four_in_six = _v6(my_client=N6("198.51.100.0/24"), peer_client=N6("203.0.113.0/24"))
    assert U.verb_name(U.Verb.UP, four_in_six) == "up-client"
    six_in_four = child(my_client=N6("2001:db8:1::/64"), peer_client=N6("2001:db8:2::/64"))
    assert U.verb_name(U.Verb.ROUTE, six_in_four) == "route-client-v6"
    # IPv4 unchanged
    assert U.verb_name(U.Verb.UP, child()) == "up-client"
    assert U.verb_name(U.Verb.UP, child(my_client=N6("192.0.2.1/32"))) == "up-host"


def test_a_failing_prepare_is_only_logged() -> None:
    """5.2: "prepare command returned an error" is a debug line and route runs; route and
    up failing undo the install."""
    assert U.Verb.PREPARE not in U.FATAL_VERBS
    assert {U.Verb.ROUTE, U.Verb.UP} <= U.FATAL_VERBS
    res = U.UpdownResult(False, "prepare-client", 1, [], "updown script exited with status 1")
    lines: list[tuple[str, str]] = []
    U.log_result(res, lambda m, lvl: lines.append((m, lvl)))
    assert lines == [("prepare-client failed: updown script exited with status 1", "warning")]


# -- the environment --------------------------------------------------------------------


def test_families_are_passed() -> None:
    """PLUTO_CLIENT_FAMILY (5.2's _updown.xfrm exits "unknown address family" without
    it) is the subnet's family; PLUTO_CONN_ADDRFAMILY the hosts'."""
    env = U.updown_env(U.Verb.UP, child())
    assert (env["PLUTO_CLIENT_FAMILY"], env["PLUTO_CONN_ADDRFAMILY"]) == ("ipv4", "ipv4")
    env = U.updown_env(U.Verb.UP, _v6(my_client=N6("198.51.100.0/24"),
                                      peer_client=N6("203.0.113.0/24")))
    assert (env["PLUTO_CLIENT_FAMILY"], env["PLUTO_CONN_ADDRFAMILY"]) == ("ipv4", "ipv6")


def test_variables_5_2_always_sets_are_set_when_they_do_not_apply() -> None:
    """A script with ``set -u`` reads them unconditionally: 5.2 always passes them
    (empty, 0, no, NULL), as its dump shows for a plain PSK conn."""
    env = U.updown_env(U.Verb.UP, child())
    want = {
        "PLUTO_VIRT_INTERFACE": "NULL", "PLUTO_INTERFACE": "NULL", "PLUTO_XFRMI_ROUTE": "",
        "PLUTO_PEER_CA": "", "PLUTO_CONN_KIND": "CK_PERMANENT", "XAUTH_FAILED": "0",
        "PLUTO_IS_PEER_CISCO": "0", "PLUTO_PEER_DNS_INFO": "", "PLUTO_PEER_DOMAIN_INFO": "",
        "PLUTO_PEER_BANNER": "", "PLUTO_CFG_SERVER": "0", "PLUTO_CFG_CLIENT": "0",
        "PLUTO_NM_CONFIGURED": "0", "VTI_IFACE": "", "VTI_ROUTING": "no", "VTI_SHARED": "no",
        "PLUTO_MY_PORT": "0", "PLUTO_MY_PROTOCOL": "0", "PLUTO_PEER_PORT": "0",
        "PLUTO_PEER_PROTOCOL": "0", "PLUTO_NEXT_HOP": "192.0.2.2",
    }
    assert {k: env.get(k) for k in want} == want
    # only with what they describe, as in 5.2
    for k in ("PLUTO_MY_SOURCEIP", "PLUTO_MOBIKE_EVENT", "PLUTO_MTU", "PLUTO_METRIC", "NFLOG",
              "VTI_IP", "INTERFACE_IP", "CONNMARK_IN", "CONNMARK_OUT", "PLUTO_XFRMI_FWMARK",
              "PLUTO_USERNAME", "CAT"):
        assert k not in env, k
    env = U.updown_env(U.Verb.UP, child(cfg_server=True, interface=""))
    assert env["PLUTO_CFG_SERVER"] == "1" and env["PLUTO_INTERFACE"] == "NULL"
    env = U.updown_env(U.Verb.UP, child(interface="eth1", conn_kind="CK_INSTANCE"))
    assert (env["PLUTO_INTERFACE"], env["PLUTO_CONN_KIND"]) == ("eth1", "CK_INSTANCE")


# the variables of 5.2's "executing prepare-client: ..." dump for a plain PSK conn
# (impair-install-ipsec-sa-outbound-policy-responder-ikev1/west.console.txt), in its order
DUMP_5_2 = """PLUTO_VERB PLUTO_CONNECTION PLUTO_CONNECTION_TYPE PLUTO_VIRT_INTERFACE
PLUTO_INTERFACE PLUTO_XFRMI_ROUTE PLUTO_NEXT_HOP PLUTO_ME PLUTO_MY_ID PLUTO_CLIENT_FAMILY
PLUTO_MY_CLIENT PLUTO_MY_CLIENT_NET PLUTO_MY_CLIENT_MASK PLUTO_MY_PORT PLUTO_MY_PROTOCOL
PLUTO_SA_REQID PLUTO_SA_TYPE PLUTO_PEER PLUTO_PEER_ID PLUTO_PEER_CLIENT PLUTO_PEER_CLIENT_NET
PLUTO_PEER_CLIENT_MASK PLUTO_PEER_PORT PLUTO_PEER_PROTOCOL PLUTO_PEER_CA PLUTO_STACK
PLUTO_ADDTIME PLUTO_CONN_POLICY PLUTO_CONN_KIND PLUTO_CONN_ADDRFAMILY XAUTH_FAILED
PLUTO_IS_PEER_CISCO PLUTO_PEER_DNS_INFO PLUTO_PEER_DOMAIN_INFO PLUTO_PEER_BANNER
PLUTO_CFG_SERVER PLUTO_CFG_CLIENT PLUTO_NM_CONFIGURED PLUTO_INBYTES PLUTO_OUTBYTES VTI_IFACE
VTI_ROUTING VTI_SHARED SPI_IN SPI_OUT""".split()


def test_every_variable_of_5_2s_dump_is_set() -> None:
    env = U.updown_env(U.Verb.PREPARE, child())
    assert [k for k in DUMP_5_2 if k not in env] == []
    # ours on top (older Libreswan's or pypluto's), never one 5.2 gives a different meaning
    assert set(env) - set(DUMP_5_2) == {"PLUTO_VERSION", "PLUTO_SERIAL", "PLUTO_REQID"}


def test_spis_are_printed_as_5_2_does() -> None:
    """``SPI_IN=0x%x``: no zero padding.  Which is which follows ipsec__updown(8) (IN =
    the SPI we chose, OUT = the peer's): 5.2 passes them swapped (its dump: our
    "allocated 665b5b22" shows up as SPI_OUT), a bug we do not copy."""
    env = U.updown_env(U.Verb.UP, child(spi_in=0x11, spi_out=0x0ABCDEF0))
    assert (env["SPI_IN"], env["SPI_OUT"]) == ("0x11", "0xabcdef0")


def test_sourceip_brings_the_mobike_event_variable() -> None:
    env = U.updown_env(U.Verb.UP, child(my_sourceip=V6("198.51.100.7")))
    assert env["PLUTO_MY_SOURCEIP"] == "198.51.100.7" and env["PLUTO_MOBIKE_EVENT"] == ""
    # routing an on-demand conn (no Child SA): 5.2 leaves it out
    env = U.updown_env(U.Verb.ROUTE, child(serial=0, my_sourceip=V6("198.51.100.7")))
    assert "PLUTO_MOBIKE_EVENT" not in env and env["PLUTO_MY_SOURCEIP"] == "198.51.100.7"


def test_marks_are_connmark_in_and_out() -> None:
    """mark=: CONNMARK_IN / CONNMARK_OUT as value/%#08x (5.2's names; the VTI part of its
    _updown.xfrm reads them), a zero value left out; with an XFRM interface the output
    mark is PLUTO_XFRMI_FWMARK instead of CONNMARK_OUT."""
    env = U.updown_env(U.Verb.UP, child(mark_in="5/0xffffffff", mark_out="6/0x0000ff00"))
    assert (env["CONNMARK_IN"], env["CONNMARK_OUT"]) == ("5/0xffffffff", "6/0x0000ff00")
    env = U.updown_env(U.Verb.UP, child(mark_in="0/0xffffffff", mark_out="0/0xffffffff"))
    assert "CONNMARK_IN" not in env and "CONNMARK_OUT" not in env
    xfrmi = dict(virt_interface="ipsec7", if_id=7)
    env = U.updown_env(U.Verb.UP, child(mark_out="6/0xffffffff", **xfrmi))
    assert "CONNMARK_OUT" not in env and env["PLUTO_XFRMI_FWMARK"] == "6/0xffffffff"
    assert (env["PLUTO_VIRT_INTERFACE"], env["PLUTO_XFRMI_ROUTE"]) == ("ipsec7", "yes")
    # no output mark: the if_id when the peer is inside its own subnet, else empty
    inside = child(peer_client=N6("192.0.2.0/24"), **xfrmi)
    assert U.updown_env(U.Verb.UP, inside)["PLUTO_XFRMI_FWMARK"] == "7/0xffffffff"
    assert U.updown_env(U.Verb.UP, child(**xfrmi))["PLUTO_XFRMI_FWMARK"] == ""
    env = U.updown_env(U.Verb.UP, child(interface_ip="10.7.0.1/24", **xfrmi))
    assert env["INTERFACE_IP"] == "10.7.0.1/24"


# -- the facts the engine gives ---------------------------------------------------------


def _facts(net: Net, side: str) -> U.UpdownChild:
    return next(a.child for a in getattr(net, side).actions if isinstance(a, Updown) and a.up)


def test_engine_policy_kind_and_modecfg_flags() -> None:
    """PLUTO_CONN_POLICY in 5.2's words (``IKEv2+PSK+ENCRYPT+TUNNEL+PFS+...``: it starts
    with the IKE version and names the conn's real auth method, not always PSK);
    PLUTO_CONN_KIND is CK_INSTANCE for a template's (right=%any) peer; PLUTO_CFG_*
    follow leftmodecfgserver= / leftmodecfgclient=.  (West is a CP client: a
    modecfgserver conn refuses a Child SA without a CFG_REQUEST, test_hostile_cp26.)"""
    net = Net(west_kw={"leftsubnet": None}, east_kw={"left": "%any", "leftsubnet": None})
    wc = net.west.engine.connections["west-east"]
    ec = net.east.engine.connections["west-east"]
    wc.local.updown = ec.local.updown = "/bin/true"
    ec.local.modecfgserver, ec.remote.addresspool = True, "198.51.100.10-198.51.100.11"
    wc.local.modecfgclient = True
    net.up()
    w, e = _facts(net, "west"), _facts(net, "east")
    assert w.policy.startswith("IKEv2+PSK+ENCRYPT+TUNNEL+PFS"), w.policy
    assert "IKEV2_ALLOW" not in w.policy  # Libreswan 4's word, gone in 5.2
    assert (w.conn_kind, e.conn_kind) == ("CK_PERMANENT", "CK_INSTANCE")
    env = U.updown_env(U.Verb.UP, e)
    assert (env["PLUTO_CFG_CLIENT"], env["PLUTO_CFG_SERVER"]) == ("0", "1")
    assert U.updown_env(U.Verb.UP, w)["PLUTO_CFG_SERVER"] == "0"
    assert env["PLUTO_MY_ID"] and env["PLUTO_PEER_ID"]


def test_transport_mode_peer_behind_a_nat_is_its_public_address() -> None:
    """5.2 (fmt_common_shell_out, "for transport mode, things are complicated"): in
    transport mode with the peer behind a NAT, PLUTO_PEER_CLIENT is the peer's address
    as we see it (the NAT's), /32, not the private address of its selector (already so:
    the engine substitutes the received address for a transport selector, RFC 7296
    §2.23.1)."""
    kw = {"type": "transport", "leftsubnet": None, "rightsubnet": None}
    net = Net(nat=True, west_kw=kw, east_kw=dict(kw, left="%any"))
    ec = net.east.engine.connections["west-east"]
    ec.local.updown = "/bin/true"
    net.up()
    e = _facts(net, "east")
    assert e.peer != net.west.addr  # the NAT's address
    env = U.updown_env(U.Verb.UP, e)
    assert env["PLUTO_PEER_CLIENT"] == f"{e.peer}/32"
    assert env["PLUTO_PEER_CLIENT_NET"] == str(e.peer)
    assert env["PLUTO_PEER_CLIENT_MASK"] == "255.255.255.255"


def test_engine_policy_names_a_signature_auth() -> None:
    """The auth bits in 5.2's order and words (lib/libswan/authby.c): authby=rsasig
    means RSASIG and RSASIG_v1_5; a conn of defaults gives exactly 5.2's string
    (addconn-06-whack-algos, "parser-defaults")."""
    net = Net()
    wc = net.west.engine.connections["west-east"]
    net.up()
    child_sa = next(iter(net.west.engine.by_serial.values())).children[0]
    wc.authby, wc.local.auth = "rsasig,ecdsa", None
    assert _updown_policy(wc, child_sa) == \
        "IKEv2+RSASIG+ECDSA+RSASIG_v1_5+ENCRYPT+TUNNEL+PFS+IKE_FRAG_ALLOW+ESN_NO+ESN_YES"
    wc.authby = "ecdsa-sha2_384,rsa-sha2_256"
    assert _updown_policy(wc, None).startswith("IKEv2+RSASIG+ECDSA+ENCRYPT+TUNNEL")
    wc.local.auth = "null"  # leftauth= wins
    assert _updown_policy(wc, None).startswith("IKEv2+AUTH_NULL+ENCRYPT")


def _runs(acts: list) -> list[tuple[tuple[str, ...], int, str]]:  # type: ignore[type-arg]
    return [(a.verbs, a.child.serial, a.child.sa_type) for a in acts if isinstance(a, Updown)]


def test_on_demand_lifecycle_runs_5_2s_verbs() -> None:
    """auto=route in 5.2 (routing.c / kernel.c): routing runs prepare, route with no SA
    (PLUTO_SA_TYPE=none, SPIs 0); the Child SA coming up runs prepare, up (the route is
    there); its going runs down only (the conn stays routed); unroute runs unroute.
    Before, the route ran nothing and each SA ran the full prepare/route/up and
    down/unroute around a route that stayed."""
    from ike.test_traps import _acq
    net = Net()
    net.west.engine.connections["west-east"].local.updown = "/bin/true"
    acts = net.west.engine.route("west-east", net.now)
    net.apply(net.west, acts)
    assert _runs(acts) == [(("prepare", "route"), 0, "none")]
    facts = next(a.child for a in acts if isinstance(a, Updown))
    env = U.updown_env(U.Verb.ROUTE, facts)
    assert (env["PLUTO_VERB"], env["PLUTO_MY_CLIENT"], env["PLUTO_PEER_CLIENT"]) == (
        "route-client", "198.51.100.0/24", "203.0.113.0/24")
    assert (env["SPI_IN"], env["SPI_OUT"], env["PLUTO_ADDTIME"]) == ("0x0", "0x0", "0")
    assert env["PLUTO_PEER"] == str(net.east.addr) and int(env["PLUTO_SA_REQID"]) > 0
    assert env["PLUTO_CONN_POLICY"].startswith("IKEv2+PSK+ENCRYPT+TUNNEL")
    # routing it again runs nothing
    assert _runs(net.west.engine.route("west-east", net.now)) == []
    reqid = next(a.policy.reqid for a in acts if hasattr(a, "policy"))
    net.west.actions.clear()
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    net.run()
    assert _runs(net.west.actions) == [(("prepare", "up"), net.children(net.west)[0].serial,
                                        "ESP")]
    net.west.actions.clear()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    assert [r[0] for r in _runs(net.west.actions)] == [("down",)]
    acts = net.west.engine.unroute("west-east", net.now)
    assert _runs(acts) == [(("unroute",), 0, "none")]
    # a route whose step failed is undone without its unroute step
    acts = net.west.engine.route("west-east", net.now)
    assert _runs(net.west.engine.unroute("west-east", net.now, updown=False)) == []


def test_routing_an_up_conn_or_unrouting_it_keeps_the_sas_verbs() -> None:
    """5.2: "policy ROUTE added to established connection" runs nothing; unroute while
    the tunnel is up leaves its route (the SA's down, unroute come when it goes)."""
    net = Net()
    net.west.engine.connections["west-east"].local.updown = "/bin/true"
    net.up()
    assert [r[0] for r in _runs(net.west.actions)] == [()]  # prepare, route, up
    assert _runs(net.west.engine.route("west-east", net.now)) == []
    assert _runs(net.west.engine.unroute("west-east", net.now)) == []
    net.west.actions.clear()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    ups = [a for a in net.west.actions if isinstance(a, Updown)]
    assert [(a.up, a.verbs) for a in ups] == [(False, ())]  # down, unroute


def test_no_route_runs_for_shunts_or_without_a_script() -> None:
    net = Net()
    assert _runs(net.west.engine.route("west-east", net.now)) == []
    assert _runs(net.west.engine.unroute("west-east", net.now)) == []
    net.west.engine.connections["west-east"].local.updown = "%disabled"
    assert _runs(net.west.engine.route("west-east", net.now)) == []


def test_driver_gives_the_kernels_reqid_and_the_interface(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """PLUTO_SA_REQID is what a script matches in the kernel (5.2's own _updown.xfrm:
    nftables ``ipsec in reqid ${PLUTO_SA_REQID}``): with XFRM our SAs carry the reqid
    mapped into the daemon's range, so that one, not the engine's number.
    PLUTO_INTERFACE is the device that holds our address (5.2: its IKE interface)."""
    from types import SimpleNamespace

    from pypluto.daemon.driver import EngineDriver
    from pypluto.daemon.helpers import CrashReports
    from pypluto.daemon.logger import PlutoLogger
    from pypluto.daemon.waiters import Waiters
    from pypluto.kernel.xfrm.backend import kernel_reqid

    log = PlutoLogger(logfile=str(tmp_path / "pluto.log"))
    me = ipaddress.ip_address("192.0.2.1")
    socks = SimpleNamespace(interfaces=[SimpleNamespace(ifname="lo", addr=V6("127.0.0.1")),
                                        SimpleNamespace(ifname="eth7", addr=me)])
    drv = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(), socks)  # type: ignore[arg-type]
    drv.backend = SimpleNamespace(name="xfrm", kernel_reqid=kernel_reqid)  # type: ignore[assignment]
    seen: list[tuple[U.UpdownChild, tuple[U.Verb, ...]]] = []

    async def record(script: str, up: bool, c: U.UpdownChild, verbs: tuple[U.Verb, ...],
                     mobike: bool = False) -> None:
        seen.append((c, verbs))

    async def go() -> None:
        drv.loop = asyncio.get_running_loop()
        drv._run_updown = record  # type: ignore[method-assign]
        drv._updown(Updown(True, "/bin/true", child(reqid=16388)), False)
        drv._updown(Updown(False, "/bin/true", child(serial=0), ("unroute",)), False)
        await asyncio.gather(*drv.updown_tasks)

    asyncio.run(go())
    (c, verbs), (c0, verbs0) = seen
    assert c.reqid == kernel_reqid(16388) != 16388 and c.stack == "xfrm"
    assert U.updown_env(U.Verb.UP, c)["PLUTO_INTERFACE"] == "eth7"
    assert verbs == U.UP_VERBS and verbs0 == (U.Verb.UNROUTE,)
    assert drv._updown_pending == {3: 1}  # the Child SA's up run only: 0 is no Child SA


def test_driver_mobike_and_route_runs_leave_vti_and_nflog_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A MOBIKE move's down / unroute (the SAs stay) and an on-demand conn's unroute (no
    Child SA) run the script only: the VTI device and the NFLOG rules stay."""
    from types import SimpleNamespace

    from pypluto.daemon.driver import EngineDriver
    from pypluto.daemon.helpers import CrashReports
    from pypluto.daemon.logger import PlutoLogger
    from pypluto.daemon.waiters import Waiters

    log = PlutoLogger(logfile=str(tmp_path / "pluto.log"))
    drv = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(),  # type: ignore[arg-type]
                       SimpleNamespace(interfaces=[]))
    calls: list[str] = []

    async def down(c: U.UpdownChild) -> None:
        calls.append("down")

    drv.vti = SimpleNamespace(down=down)  # type: ignore[assignment]
    drv.nflog = SimpleNamespace(down=down)  # type: ignore[assignment]
    c = child(vti_iface="vti9", nflog=5)
    asyncio.run(drv._run_updown("/bin/true", False, c, (U.Verb.DOWN,), True))
    asyncio.run(drv._run_updown("/bin/true", False, child(serial=0, vti_iface="vti9", nflog=5),
                                (U.Verb.UNROUTE,)))
    assert calls == []
    asyncio.run(drv._run_updown("/bin/true", False, c, U.DOWN_VERBS))  # the SA goes
    assert calls == ["down", "down"]


def test_libreswans_default_written_out_runs_nothing() -> None:
    """``leftupdown="ipsec _updown"`` is 5.2's default written out (addconn-39-updown shows
    it as the value of an unset leftupdown=).  Its work (routes, policies) is the
    daemon's own; run, it was our ``ipsec`` saying "pypluto runs the leftupdown= script
    itself" and failing: every Child SA of such a conn failed at its route step."""
    assert not U.script_enabled("ipsec _updown") and not U.script_enabled(" ipsec  _updown ")
    assert U.script_enabled("ipsec _updown-custom") and U.script_enabled("/bin/true")
    net = Net()
    net.west.engine.connections["west-east"].local.updown = "ipsec _updown"
    assert _runs(net.west.engine.route("west-east", net.now)) == []
    net.west.engine.unroute("west-east", net.now)
    net.up()
    assert net.children(net.west)
    assert not [a for a in net.west.actions if isinstance(a, Updown)]


def test_mobike_move_suspends_and_resumes_the_script() -> None:
    """5.2 (ikev2_mobike.c, routing.c SUSPEND / RESUME): the client's address goes away:
    down, then unroute with PLUTO_MOBIKE_EVENT=yes, for the old addresses (the SAs stay);
    the update answered: route, up with the new ones.  Before, a move ran no script, and
    a script's routes and rules stayed on the address that was gone."""
    from ike.harness import WEST
    from ike.test_mobike import NEW_WEST, mobike_net

    net = mobike_net()
    wc = net.west.engine.connections["west-east"]
    wc.local.updown = "/bin/true"
    wc.local.sourceip = [V6("198.51.100.9")]
    net.west.actions.clear()
    acts = net.west.engine.local_address_changed(WEST, NEW_WEST, net.now)
    net.apply(net.west, acts)
    ups = [a for a in acts if isinstance(a, Updown)]
    assert [(a.verbs, a.up, a.mobike, a.child.me) for a in ups] == [
        (("down",), False, True, WEST), (("unroute",), False, True, WEST)]
    envs = [U.updown_env(U.Verb(a.verbs[0]), a.child) for a in ups]
    assert [e["PLUTO_MOBIKE_EVENT"] for e in envs] == ["", "yes"]
    assert [e["PLUTO_VERB"] for e in envs] == ["down-client", "unroute-client"]
    net.run()
    ups = [a for a in net.west.actions if isinstance(a, Updown)][2:]
    assert [(a.verbs, a.up, a.mobike, a.child.me) for a in ups] == [
        (("route", "up"), False, True, NEW_WEST)]
    assert U.updown_env(U.Verb.UP, ups[0].child)["PLUTO_MOBIKE_EVENT"] == ""
    # the tunnel goes later: down, unroute as ever
    net.west.actions.clear()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    ups = [a for a in net.west.actions if isinstance(a, Updown)]
    assert [(a.verbs, a.mobike) for a in ups] == [((), False)]


def test_mobike_move_that_kills_the_sas_runs_no_second_down() -> None:
    """Suspended (down, unroute ran) and then the peer never answers: the SAs go without
    running down, unroute again."""
    from ike.harness import WEST
    from ike.test_mobike import NEW_WEST, mobike_net

    net = mobike_net()
    net.west.engine.connections["west-east"].local.updown = "/bin/true"
    net.cut = True
    net.west.actions.clear()
    net.apply(net.west, net.west.engine.local_address_changed(WEST, NEW_WEST, net.now))
    net.advance(300)
    assert not net.children(net.west)
    ups = [a for a in net.west.actions if isinstance(a, Updown)]
    assert [a.verbs for a in ups] == [("down",), ("unroute",)]
    assert not net.west.engine._updown_suspended


# -- the command line -------------------------------------------------------------------


def test_quoted_path_with_spaces_and_arguments_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """5.2 hands the updown string to the shell (popen): a quoted path holding a space,
    with arguments, runs; our "does it exist" check read the first blank-separated word
    and refused it."""
    d = tmp_path / "my scripts"
    d.mkdir()
    s = d / "up down.sh"
    s.write_text('#!/bin/sh\necho "$1|$2|$PLUTO_VERB"\n')
    s.chmod(0o755)
    res = asyncio.run(U.run_updown(f"'{s}' one 'two words'", U.Verb.UP, child()))
    assert res.ok, res.error
    assert res.output == ["one|two words|up-client"]
    res = asyncio.run(U.run_updown(f"'{tmp_path}/no such.sh' x", U.Verb.UP, child()))
    assert not res.ok and "does not exist" in res.error


# -- one real daemon lifecycle ----------------------------------------------------------

RECORD = """#!/bin/sh
echo "$PLUTO_VERB $PLUTO_CLIENT_FAMILY $PLUTO_INTERFACE ${{PLUTO_CONN_POLICY%%+*}} \
$PLUTO_CONN_KIND ${{VTI_ROUTING-unset}} ${{PLUTO_PEER_BANNER-unset}}x ${{XAUTH_FAILED-unset}}" >> {log}
case "$PLUTO_VERB" in prepare-*) exit 3 ;; esac
exit 0
"""


@pytest.mark.netns
def test_daemon_lifecycle_with_a_failing_prepare(pair, tmp_path):  # noqa: F811
    """Real daemons: a prepare that exits 3 is logged and the tunnel comes up all the
    same (route and up run); the script sees 5.2's variables; down and unroute at the
    end."""
    start, _w, _e = pair
    log = tmp_path / "parity25.calls"
    script = tmp_path / "parity25 updown.sh"
    script.write_text(RECORD.format(log=log))
    script.chmod(0o755)
    conf = CONF.replace("\tauto={auto}\n", f"\tleftupdown=\"'{script}'\"\n\tauto={{auto}}\n")
    east = start("east", _e, "add", "--use-none")
    west = start("west", _w, "add", "--use-none", conf_text=conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()

    up = _lines(log, 3)
    assert [c[0] for c in up] == ["prepare-client", "route-client", "up-client"]
    assert "prepare-client failed: updown script exited with status 3" in west.log()
    assert len(child_sas(west)) == 1 and len(child_sas(east)) == 1
    verb, fam, iface, ike, kind, vti_routing, banner, xauth = up[2]
    assert (fam, ike, kind, vti_routing, banner, xauth) == (
        "ipv4", "IKEv2", "CK_PERMANENT", "no", "x", "0")
    assert iface.startswith("ppw"), iface  # the veth holding 192.0.2.1
    assert west.whack("--name", "west-east", "--terminate").returncode == 0
    assert [c[0] for c in _lines(log, 5)[3:]] == ["down-client", "unroute-client"]


ROUTE_RECORD = """#!/bin/sh
echo "$PLUTO_VERB $PLUTO_SA_TYPE $SPI_IN" >> {log}
case "$PLUTO_VERB" in route-*) exit {route_rc} ;; esac
exit 0
"""


def _route_script(tmp_path, rc: int) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    log = tmp_path / f"route{rc}.calls"
    script = tmp_path / f"route{rc}.sh"
    script.write_text(ROUTE_RECORD.format(log=log, route_rc=rc))
    script.chmod(0o755)
    conf = CONF.replace("\tauto={auto}\n", f"\tleftupdown={script}\n\tauto={{auto}}\n")
    return conf, log


def _lines(log, n: int) -> list[list[str]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 10
    lines: list[list[str]] = []
    while time.monotonic() < deadline:
        lines = [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= n:
            break
        time.sleep(0.05)
    return lines


@pytest.mark.netns
def test_daemon_on_demand_route_up_down_unroute(pair, tmp_path):  # noqa: F811
    """auto=route in a real daemon: prepare, route at load (no SA); prepare, up when the
    tunnel comes; down when it goes; unroute with ``whack --unroute``."""
    start, _w, _e = pair
    conf, log = _route_script(tmp_path, 0)
    start("east", _e, "add", "--use-userspace")
    west = start("west", _w, "route", "--use-userspace", conf_text=conf)
    assert _lines(log, 2) == [["prepare-client", "none", "0x0"], ["route-client", "none", "0x0"]]
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    calls = _lines(log, 4)
    assert [c[:2] for c in calls[2:]] == [["prepare-client", "ESP"], ["up-client", "ESP"]]
    assert calls[3][2] != "0x0"
    assert west.whack("--name", "west-east", "--terminate").returncode == 0
    assert [c[0] for c in _lines(log, 5)[4:]] == ["down-client"]
    assert west.whack("--name", "west-east", "--unroute").returncode == 0
    assert [c[:2] for c in _lines(log, 6)[5:]] == [["unroute-client", "none"]]


@pytest.mark.netns
def test_daemon_failing_route_step_unroutes(pair, tmp_path):  # noqa: F811
    """5.2: a route step that fails undoes the route (no unroute step is run)."""
    start, _w, _e = pair
    conf, log = _route_script(tmp_path, 1)
    west = start("west", _w, "route", "--use-userspace", conf_text=conf)
    assert [c[0] for c in _lines(log, 2)] == ["prepare-client", "route-client"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "the connection is unrouted" not in west.log():
        time.sleep(0.05)
    assert "route-client failed: updown script exited with status 1; the connection is " \
           "unrouted" in west.log()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "routed-ondemand" in west.whack("--status").stdout:
        time.sleep(0.05)
    status = west.whack("--status").stdout
    assert "routed-ondemand" not in status and "unrouted" in status, status
    time.sleep(0.3)
    assert len(_lines(log, 2)) == 2  # no unroute step
