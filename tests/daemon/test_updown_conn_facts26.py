"""What an updown run takes from the conn is the same for every verb (Libreswan 5.2's
updown.c builds one environment from the conn): the routing runs of an on-demand conn
(prepare, route, unroute) carry VTI_IFACE, VTI_ROUTING, VTI_SHARED, VTI_IP and NFLOG as
a Child SA's runs do.  5.2's _updown.xfrm creates the VTI device in ``prepare`` and
routes through it in ``route`` when VTI_ROUTING=yes; before, our routing runs left those
variables empty, so ``route`` went to the wrong device.  PLUTO_CFG_CLIENT is 1 for the
end with the address pool (5.2: that end is the mode-config client)."""

from __future__ import annotations

from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.daemon import updown as U
from pypluto.ike.actions import Updown


def _facts(acts: list) -> list:  # type: ignore[type-arg]
    return [a.child for a in acts if isinstance(a, Updown)]


def test_routing_runs_carry_the_conns_vti_and_nflog_as_the_sas_do() -> None:
    net = Net()
    conn = net.west.engine.connections["west-east"]
    conn.local.updown = "/bin/true"
    conn.vti_interface, conn.vti_routing, conn.nflog = "vti7", True, 9
    conn.local.vti_ip = "198.51.100.1/24"
    routed = _facts(net.west.engine.route("west-east", net.now))
    assert len(routed) == 1 and routed[0].sa_type == "none"
    env = U.updown_env(U.Verb.ROUTE, routed[0])
    assert (env["VTI_IFACE"], env["VTI_ROUTING"], env["VTI_IP"], env["NFLOG"]) == (
        "vti7", "yes", "198.51.100.1/24", "9"), env
    net.up()
    ups = _facts(net.west.actions)
    assert ups, net.west.actions
    up_env = U.updown_env(U.Verb.UP, ups[-1])
    shared = ("VTI_IFACE", "VTI_ROUTING", "VTI_SHARED", "VTI_IP", "NFLOG", "PLUTO_MTU",
              "PLUTO_METRIC", "PLUTO_NEXT_HOP", "PLUTO_CFG_CLIENT", "PLUTO_CFG_SERVER",
              "PLUTO_CONN_KIND", "PLUTO_XFRMI_FWMARK", "PLUTO_MARK_IN", "PLUTO_MARK_OUT")
    assert {k: env.get(k) for k in shared} == {k: up_env.get(k) for k in shared}
    unrouted = _facts(net.west.engine.unroute("west-east", net.now))
    assert all(f.vti_iface == "vti7" and f.nflog == 9 for f in unrouted)


def test_the_end_with_the_pool_is_the_mode_config_client() -> None:
    net = Net()
    conn = net.west.engine.connections["west-east"]
    conn.local.updown = "/bin/true"
    conn.local.addresspool = "192.0.2.200-192.0.2.210"
    routed = _facts(net.west.engine.route("west-east", net.now))
    env = U.updown_env(U.Verb.ROUTE, routed[0])
    assert (env["PLUTO_CFG_CLIENT"], env["PLUTO_CFG_SERVER"]) == ("1", "0"), env
