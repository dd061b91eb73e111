"""vti-interface= / vti-routing= / vti-shared= / leftvti= (issue 16, route-based VPNs).

The config values, the ``ip`` commands that make and remove the VTI device and its
route (daemon/vti.py), the manager's bookkeeping (shared devices, devices and
routes that existed before), what the engine hands the daemon (an ``Updown`` with
the VTI facts even without an updown script) and the updown environment.  The
device carrying traffic is proven in the ESP kernel (tests/espkernel/test_vti_uml.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import replace

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.parser import ConnError, build_connection
from pypluto.daemon.updown import Verb, updown_env
from pypluto.daemon.vti import (
    VtiDevice,
    VtiManager,
    create_commands,
    route_command,
    spec_for,
    sysctl_settings,
)
from pypluto.ike.actions import Updown
from pypluto.params import UpdownChild

ip = ipaddress.ip_address
net = ipaddress.ip_network
FULL = 0xFFFFFFFF
BASE = {"left": "192.0.2.1", "right": "192.0.2.2", "authby": "secret",
        "leftsubnet": "198.51.100.0/24", "rightsubnet": "203.0.113.0/24"}


def _child(**kw: object) -> UpdownChild:
    c = UpdownChild(conn="c", serial=1, me=ip("192.0.2.1"), peer=ip("192.0.2.2"),
                    my_client=net("198.51.100.0/24"), peer_client=net("203.0.113.0/24"),
                    mark_in="5/0xffffffff", mark_out="6/0xffffffff", vti_iface="vti5",
                    vti_ip="10.9.9.1/30")
    return replace(c, **kw)  # type: ignore[arg-type]


# --- config ---------------------------------------------------------------------------
def test_vti_keys_parse_with_libreswan_defaults() -> None:
    c = build_connection("c", {**BASE, "mark": "5", "vti-interface": "vti5",
                               "leftvti": "10.9.9.1/30"})
    assert (c.vti_interface, c.vti_routing, c.vti_shared) == ("vti5", True, False)
    assert c.left.vti_ip == "10.9.9.1/30"
    c = build_connection("c", {**BASE, "mark-in": "7", "mark-out": "8",
                               "vti-interface": "ipsec0", "vti-routing": "no",
                               "vti-shared": "yes"})
    assert (c.vti_interface, c.vti_routing, c.vti_shared) == ("ipsec0", False, True)
    assert build_connection("c", BASE).vti_interface is None


@pytest.mark.parametrize(("keys", "key", "why"), [
    ({"vti-interface": "vti5"}, "vti-interface", "needs mark="),
    ({"vti-interface": "vti5", "mark-in": "5"}, "vti-interface", "mark-out is unset"),
    ({"vti-interface": "vti5", "mark": "-1"}, "vti-interface", "fixed mark"),
    ({"vti-interface": "a/b", "mark": "5"}, "vti-interface", "not a network device name"),
    ({"vti-interface": "x" * 16, "mark": "5"}, "vti-interface", "not a network device name"),
    ({"vti-interface": "vti5", "mark": "5", "leftvti": "10.9.9.300/30"}, "leftvti",
     "ADDRESS/PREFIX"),
    ({"leftvti": "10.9.9.1/30"}, "leftvti", "needs vti-interface="),
    ({"vti-interface": "vti5", "mark": "5", "vti-routing": "maybe"}, "vti-routing", ""),
])
def test_bad_vti_keys_are_refused(keys: dict[str, str], key: str, why: str) -> None:
    with pytest.raises(ConnError) as exc:
        build_connection("c", {**BASE, **keys})
    assert exc.value.key == key and why in str(exc.value)


# --- commands ----------------------------------------------------------------------------
def test_create_commands_v4_with_address() -> None:
    dev = spec_for(_child())
    assert dev == VtiDevice("vti5", ip("192.0.2.1"), ip("192.0.2.2"), 5, 6,
                            ipaddress.ip_interface("10.9.9.1/30"))
    assert create_commands(dev) == [
        ["ip", "link", "add", "vti5", "type", "vti", "local", "192.0.2.1",
         "remote", "192.0.2.2", "ikey", "5", "okey", "6"],
        ["ip", "link", "set", "vti5", "alias", "pypluto-vti"],
        ["ip", "addr", "add", "10.9.9.1/30", "dev", "vti5"],
        ["ip", "link", "set", "vti5", "up"],
    ]
    base = "/proc/sys/net/ipv4/conf/vti5/"
    assert sysctl_settings(dev) == [(base + "disable_policy", "1"), (base + "rp_filter", "0"),
                                    (base + "forwarding", "1")]


def test_create_commands_shared_v6_without_address() -> None:
    dev = spec_for(_child(me=ip("2001:db8::1"), peer=ip("2001:db8::2"), vti_shared=True,
                          vti_ip="", mark_in="33/0x0000ff", mark_out="33/0x0000ff"))
    assert dev is not None and dev.remote is None  # shared: any peer
    assert create_commands(dev) == [
        ["ip", "link", "add", "vti5", "type", "vti6", "local", "2001:db8::1",
         "ikey", "33", "okey", "33"],
        ["ip", "link", "set", "vti5", "alias", "pypluto-vti"],
        ["ip", "link", "set", "vti5", "up"],
    ]
    base = "/proc/sys/net/ipv6/conf/vti5/"
    assert sysctl_settings(dev) == [(base + "disable_policy", "1"), (base + "forwarding", "1")]


def test_route_command() -> None:
    assert route_command(True, net("203.0.113.0/24"), "vti5") == \
        ["ip", "route", "add", "203.0.113.0/24", "dev", "vti5"]
    assert route_command(False, net("203.0.113.0/24"), "vti5", ip("198.51.100.1")) == \
        ["ip", "route", "del", "203.0.113.0/24", "dev", "vti5", "src", "198.51.100.1"]
    # a source of the other family is not put on the route
    assert route_command(True, net("2001:db8:1::/48"), "v", ip("198.51.100.1"))[-1] == "v"


def test_no_vti_no_device() -> None:
    assert spec_for(_child(vti_iface="")) is None


# --- the manager ---------------------------------------------------------------------------
class FakeIp:
    """Records commands; ``ip -o link show`` fails unless the device 'exists'; a
    device in ``leftover`` exists with our alias (an earlier run's)."""

    def __init__(self, existing: set[str] | None = None, fail: str = "",
                 leftover: set[str] | None = None) -> None:
        self.cmds: list[list[str]] = []
        self.existing = existing or set()
        self.leftover = leftover or set()
        self.fail = fail
        self.sysctls: list[tuple[str, str]] = []

    async def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.cmds.append(argv)
        line = " ".join(argv)
        if argv[1:4] == ["-o", "link", "show"]:
            name = argv[-1]
            head = f"7: {name}@NONE: <POINTOPOINT,NOARP,UP> mtu 1480 state UNKNOWN"
            if name in self.leftover:
                return 0, head + "\\    link/ipip 192.0.2.1 peer 192.0.2.9\\    alias pypluto-vti"
            if name in self.existing:
                return 0, head + "\\    link/ipip 192.0.2.1 peer 192.0.2.2\\    alias uplink"
            return 1, f'Device "{name}" does not exist.'
        if self.fail and self.fail in line:
            return 2, "RTNETLINK answers: File exists" if "route" in line else "boom"
        return 0, ""


def _mgr(fake: FakeIp) -> VtiManager:
    return VtiManager(run=fake, sysctl=lambda p, v: fake.sysctls.append((p, v)))


def test_manager_creates_routes_and_removes_everything() -> None:
    fake = FakeIp()
    m = _mgr(fake)
    assert asyncio.run(m.up(_child())) is None
    made = [" ".join(c) for c in fake.cmds]
    assert made == ["ip -o link show dev vti5",
                    "ip link add vti5 type vti local 192.0.2.1 remote 192.0.2.2 ikey 5 okey 6",
                    "ip link set vti5 alias pypluto-vti",
                    "ip addr add 10.9.9.1/30 dev vti5", "ip link set vti5 up",
                    "ip route add 203.0.113.0/24 dev vti5"]
    assert ("/proc/sys/net/ipv4/conf/vti5/disable_policy", "1") in fake.sysctls
    fake.cmds.clear()
    asyncio.run(m.down(_child()))
    assert [" ".join(c) for c in fake.cmds] == ["ip route del 203.0.113.0/24 dev vti5",
                                                "ip link del vti5"]
    assert not m.devices and not m.routes


def test_manager_vti_routing_no_adds_no_route() -> None:
    fake = FakeIp()
    m = _mgr(fake)
    assert asyncio.run(m.up(_child(vti_routing=False))) is None
    assert not any(c[1] == "route" for c in fake.cmds) and not m.routes
    asyncio.run(m.down(_child(vti_routing=False)))
    assert fake.cmds[-1] == ["ip", "link", "del", "vti5"]


def test_manager_shared_device_outlives_one_conn() -> None:
    fake = FakeIp()
    m = _mgr(fake)
    a = _child(conn="a", vti_shared=True)
    b = _child(conn="b", vti_shared=True, peer=ip("192.0.2.3"),
               peer_client=net("203.0.113.128/25"))

    async def go() -> None:
        assert await m.up(a) is None
        assert await m.up(b) is None
        assert sum(c[1:3] == ["link", "add"] for c in fake.cmds) == 1  # one device
        await m.down(a)
        assert ["ip", "link", "del", "vti5"] not in fake.cmds  # b still uses it
        assert ["ip", "route", "del", "203.0.113.0/24", "dev", "vti5"] in fake.cmds
        await m.down(b)
        assert fake.cmds[-1] == ["ip", "link", "del", "vti5"]
    asyncio.run(go())


def test_manager_refuses_a_second_conn_with_other_keys() -> None:
    fake = FakeIp()
    m = _mgr(fake)
    assert asyncio.run(m.up(_child(conn="a"))) is None
    why = asyncio.run(m.up(_child(conn="b", mark_in="9/0xffffffff")))
    assert why is not None and "keys 5/6" in why


def test_manager_leaves_an_existing_device_and_route_alone() -> None:
    fake = FakeIp(existing={"vti5"}, fail="route add")
    m = _mgr(fake)
    assert asyncio.run(m.up(_child())) is None  # "File exists": used, not owned
    assert not any(c[1:3] == ["link", "add"] for c in fake.cmds)
    fake.cmds.clear()
    asyncio.run(m.down(_child()))
    asyncio.run(m.close())
    assert fake.cmds == []


def test_manager_replaces_the_device_a_dead_daemon_left() -> None:
    """A device with our alias was made by an earlier run that did not clean up (a
    crash, SIGKILL): it is removed and made anew with this conn's keys, and removed
    again with the conn, instead of passing for an operator's device for ever."""
    fake = FakeIp(leftover={"vti5"})
    m = _mgr(fake)
    assert asyncio.run(m.up(_child())) is None
    made = [" ".join(c) for c in fake.cmds]
    assert made[:3] == ["ip -o link show dev vti5", "ip link del vti5",
                        "ip link add vti5 type vti local 192.0.2.1 remote 192.0.2.2 ikey 5 okey 6"]
    assert m.devices["vti5"].created
    fake.cmds.clear()
    asyncio.run(m.down(_child()))
    assert fake.cmds[-1] == ["ip", "link", "del", "vti5"]


def test_manager_undoes_a_half_made_device() -> None:
    fake = FakeIp(fail="addr add")
    m = _mgr(fake)
    why = asyncio.run(m.up(_child()))
    assert why is not None and "ip addr add 10.9.9.1/30 dev vti5 failed: boom" in why
    assert fake.cmds[-1] == ["ip", "link", "del", "vti5"] and not m.devices


def test_manager_close_removes_what_is_left() -> None:
    fake = FakeIp()
    m = _mgr(fake)
    asyncio.run(m.up(_child()))
    fake.cmds.clear()
    asyncio.run(m.close())
    assert fake.cmds == [["ip", "route", "del", "203.0.113.0/24", "dev", "vti5"],
                         ["ip", "link", "del", "vti5"]]


# --- engine and updown -----------------------------------------------------------------------
def test_engine_hands_vti_facts_even_without_a_script() -> None:
    n = Net(west_kw={"mark_in": (5, FULL), "mark_out": (6, FULL)})
    conn = n.west.engine.connections["west-east"]
    conn.vti_interface, conn.vti_routing, conn.local.vti_ip = "vti5", False, "10.9.9.1/30"
    assert not conn.local.updown
    n.up()
    ups = [a for a in n.west.actions if isinstance(a, Updown) and a.up]
    assert ups and all(a.script == "" for a in ups)
    dev = spec_for(ups[0].child)
    assert dev is not None and (dev.name, dev.ikey, dev.okey) == ("vti5", 5, 6)
    assert ups[0].child.vti_routing is False
    # east has no vti-interface and no script: no Updown at all
    assert not [a for a in n.east.actions if isinstance(a, Updown)]


def test_updown_environment_has_libreswans_vti_variables() -> None:
    env = updown_env(Verb.UP, _child(vti_routing=False))
    assert (env["VTI_IFACE"], env["VTI_ROUTING"], env["VTI_SHARED"], env["VTI_IP"]) == \
        ("vti5", "no", "no", "10.9.9.1/30")
    # no VTI: set all the same, as Libreswan 5.2 passes them (VTI_IP only with one)
    env = updown_env(Verb.UP, _child(vti_iface=""))
    assert (env["VTI_IFACE"], env["VTI_ROUTING"], env["VTI_SHARED"]) == ("", "no", "no")
    assert "VTI_IP" not in env
