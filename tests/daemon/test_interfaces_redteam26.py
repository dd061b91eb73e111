"""Red team 26: the host's addresses changing under the daemon (``daemon/interfaces.py``).

Libreswan 5.2 facts (programs/pluto/kernel_iface*.c, iface.c):
- an IPv4 address on a device that is not UP is not an interface;
- two devices that carry the same address: neither is used ("IP interfaces X and Y
  share address A!"), and a conn on that address does not orient;
- IPv6 addresses still tentative (DAD) or whose DAD failed are skipped, as are
  link-local ones; a loopback address is an interface like any other.
"""

from __future__ import annotations

import ipaddress
import signal
import socket
import struct
from types import SimpleNamespace

import pytest
from plutoproc import PY, wait_for
from test_daemon_pair import pair  # noqa: F401 - the two-namespace fixture

from pypluto.daemon import interfaces
from pypluto.daemon.interfaces import IFA_ADDRESS, IFA_F_DADFAILED, IFA_F_TENTATIVE, IFA_LOCAL

# ---------------------------------------------------------------- hand-built RTM_NEWADDR


def _attr(atype: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), atype) + data
    return raw + bytes(-len(raw) % 4)


def _body(family: int, flags: int, index: int, *attrs: bytes) -> bytes:
    return struct.pack("=BBBBI", family, 24, flags, 0, index) + b"".join(attrs)


V4 = ipaddress.ip_address("192.0.2.9")
V6 = ipaddress.ip_address("2001:db8::9")


@pytest.mark.parametrize("flag", [IFA_F_TENTATIVE, IFA_F_DADFAILED])
def test_tentative_or_dad_failed_address_is_no_interface(flag: int) -> None:
    body = _body(socket.AF_INET6, flag, 1, _attr(IFA_ADDRESS, V6.packed))
    assert interfaces._parse_addr(body) == []
    assert [a.addr for a in interfaces._parse_addr(
        _body(socket.AF_INET6, 0, 1, _attr(IFA_ADDRESS, V6.packed)))] == [V6]


def test_point_to_point_takes_the_local_address_not_the_peer() -> None:
    peer = ipaddress.ip_address("198.51.100.1")
    body = _body(socket.AF_INET, 0, 1, _attr(IFA_ADDRESS, peer.packed),
                 _attr(IFA_LOCAL, V4.packed))
    assert [a.addr for a in interfaces._parse_addr(body)] == [V4]


@pytest.mark.parametrize("body", [
    b"",
    b"\x02\x18\x00",                                                      # short header
    _body(socket.AF_INET, 0, 1),                                          # no address
    _body(socket.AF_INET, 0, 1, struct.pack("=HH", 0, IFA_LOCAL)),        # alen 0
    _body(socket.AF_INET, 0, 1, struct.pack("=HH", 200, IFA_LOCAL) + V4.packed),  # overlong
    _body(socket.AF_INET, 0, 1, _attr(IFA_LOCAL, V6.packed)),             # wrong size
    _body(socket.AF_INET6, 0, 1, _attr(IFA_ADDRESS, V4.packed)),          # wrong size
    _body(99, 0, 1, _attr(IFA_LOCAL, V4.packed)),                         # unknown family
])
def test_malformed_netlink_address_is_skipped(body: bytes) -> None:
    assert interfaces._parse_addr(body) == []


# ---------------------------------------------------------------- real namespaces


def _ifaces(p) -> list[str]:  # noqa: ANN001
    st = p.whack("--status").stdout
    return [ln for ln in st.splitlines() if ln.startswith("interface ")]


def _veth(netns, a: str, b: str) -> None:  # noqa: ANN001
    netns.run("ip", "link", "add", a, "type", "veth", "peer", "name", b)


def _local(netns) -> list[tuple[str, str]]:  # noqa: ANN001
    out = netns.run(PY, "-c", "from pypluto.daemon.interfaces import local_addresses\n"
                    "for a in local_addresses(): print(a.ifname, a.addr)\n").stdout
    return [tuple(ln.split()) for ln in out.splitlines()]  # type: ignore[misc]


def test_shared_address_is_no_interface(make_pluto, netns, tmp_path) -> None:  # noqa: ANN001
    """192.0.2.7 on two devices: Libreswan 5.2 listens on neither (one UDP socket each
    on the same address and port, SO_REUSEADDR, would split the peer's packets between
    them) and a conn on that address stays unoriented; the device's own address is
    listened on as usual."""
    _veth(netns, "rt26a", "rt26b")
    for dev in ("rt26a", "rt26b"):
        netns.run("ip", "link", "set", dev, "up")
        netns.run("ip", "addr", "add", "192.0.2.7/24", "dev", dev)
    netns.run("ip", "addr", "add", "192.0.2.8/24", "dev", "rt26a")
    assert [x for x in _local(netns) if x[1] == "192.0.2.7"] == []
    conf = tmp_path / "shared.conf"
    conf.write_text("conn shared\n\tauthby=secret\n\tleft=192.0.2.7\n\tright=203.0.113.7\n"
                    "\tauto=add\n")
    p = make_pluto()
    p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config", str(conf))
    p.wait_ready()
    ifaces = _ifaces(p)
    assert not [i for i in ifaces if "192.0.2.7:" in i], ifaces
    assert "interface rt26a 192.0.2.8:UDP/500" in ifaces
    st = p.whack("--status").stdout
    assert '"shared": unoriented' in st
    # one of the two goes: the other is an interface again, the conn orients
    netns.run("ip", "addr", "del", "192.0.2.7/24", "dev", "rt26b")
    assert p.whack("--listen").returncode == 0
    assert "interface rt26a 192.0.2.7:UDP/500" in _ifaces(p)
    assert '"shared": 192.0.2.7...203.0.113.7' in p.whack("--status").stdout


def test_ipv4_address_on_a_down_device_is_no_interface(make_pluto, netns) -> None:  # noqa: ANN001
    """An IPv4 address stays configured on a device that is set down; pluto (Libreswan
    5.2: SIOCGIFFLAGS, not IFF_UP) does not listen there; once the device is up again,
    ``ipsec listen`` adds it."""
    _veth(netns, "rt26c", "rt26d")
    netns.run("ip", "addr", "add", "198.51.100.20/24", "dev", "rt26c")  # never set up
    assert ("rt26c", "198.51.100.20") not in _local(netns)
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    assert not [i for i in _ifaces(p) if "198.51.100.20" in i]
    netns.run("ip", "link", "set", "rt26c", "up")
    netns.run("ip", "link", "set", "rt26d", "up")
    assert p.whack("--listen").returncode == 0
    assert "interface rt26c 198.51.100.20:UDP/500" in _ifaces(p)
    netns.run("ip", "link", "set", "rt26c", "down")
    assert p.whack("--listen").returncode == 0
    assert not [i for i in _ifaces(p) if "198.51.100.20" in i]
    assert "shutting down interface rt26c 198.51.100.20:500" in log.read_text()


def test_address_removed_and_re_added_under_the_daemon(make_pluto, netns) -> None:  # noqa: ANN001
    """The address watcher closes the sockets of an address that went away and opens
    them again when it comes back: no stale socket, no crash, the daemon answers."""
    netns.run("ip", "addr", "add", "203.0.113.30/32", "dev", "lo")
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    assert "interface lo 203.0.113.30:UDP/500" in _ifaces(p)
    netns.run("ip", "addr", "del", "203.0.113.30/32", "dev", "lo")
    wait_for(lambda: "shutting down interface lo 203.0.113.30:500" in log.read_text(), 20,
             "the watcher to close the socket")
    assert not [i for i in _ifaces(p) if "203.0.113.30" in i]
    netns.run("ip", "addr", "add", "203.0.113.30/32", "dev", "lo")
    wait_for(lambda: "interface lo 203.0.113.30:UDP/500" in _ifaces(p), 20,
             "the watcher to open it again")
    assert log.read_text().count("adding UDP interface lo 203.0.113.30:500") == 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


# ---------------------------------------------------------------- a local address goes away


def _conn(local: str | None) -> SimpleNamespace:
    addr = ipaddress.ip_address(local) if local else None
    return SimpleNamespace(local=SimpleNamespace(host_addr=addr))


def test_stranded_conns_are_those_whose_address_went_and_no_ike_sa_moved() -> None:
    from pypluto.daemon.mobility import stranded

    here = {ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("198.51.100.9")}
    conns = {"kept": _conn("192.0.2.1"), "gone": _conn("192.0.2.77"),
             "moved": _conn("192.0.2.78"), "any": _conn(None)}
    ike = [SimpleNamespace(conn="moved[2]", local="198.51.100.9:4500"),  # MOBIKE moved it
           SimpleNamespace(conn="gone", local="192.0.2.77:500")]
    assert stranded(conns, ike, here) == ["gone"]


def test_unoriented_conn_is_never_stranded() -> None:
    from pypluto.daemon.mobility import stranded

    class Unoriented:
        @property
        def local(self) -> object:
            raise ValueError("not oriented")

    assert stranded({"u": Unoriented()}, [], set()) == []


def test_listen_after_the_local_address_vanished_terminates_and_disorients(pair) -> None:  # noqa: ANN001, F811
    """West's IKE and Child SAs are up (no MOBIKE) when its 192.0.2.1 is removed.  The
    address watcher closes the sockets at once; ``ipsec listen`` then does what
    Libreswan 5.2 does for a dead interface (iface.c, release_dead_interfaces): the
    conn's SAs are terminated and the conn is disoriented.  When the address comes
    back, ``ipsec listen`` orients it again and auto=start brings the tunnel up."""
    start, w_ns, e_ns = pair
    start("east", e_ns, "add", "--use-none")
    west = start("west", w_ns, "start", "--use-none")
    log = west.dir / "log"
    wait_for(lambda: "ESTABLISHED_CHILD_SA" in west.whack("--status").stdout, 20,
             "west's tunnel")
    assert west.whack("--listen").returncode == 0  # nothing changed: nothing dropped
    assert "ESTABLISHED_CHILD_SA" in west.whack("--status").stdout
    dev = next(ln.split()[1].split("@")[0] for ln in
               w_ns.run("ip", "-o", "-4", "addr", "show").stdout.splitlines()
               if "192.0.2.1/" in ln)
    w_ns.run("ip", "addr", "del", "192.0.2.1/24", "dev", dev)
    wait_for(lambda: f"shutting down interface {dev} 192.0.2.1:500" in log.read_text(), 20,
             "the watcher to close the socket")
    # until ipsec listen, the SAs are kept (a blip of the address must not kill them)
    assert "ESTABLISHED_IKE_SA" in west.whack("--status").stdout
    assert west.whack("--listen").returncode == 0
    st = west.whack("--status").stdout
    assert '"west-east": unoriented' in st
    assert "ESTABLISHED" not in st and "IKE SAs: total(0)" in st
    assert '"west-east": local address 192.0.2.1 is gone: terminating SAs; ' \
           "connection unoriented" in log.read_text()
    assert west.whack("--name", "west-east", "--initiate").returncode != 0
    w_ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", dev)
    assert west.whack("--listen").returncode == 0
    wait_for(lambda: "ESTABLISHED_CHILD_SA" in west.whack("--status").stdout, 20,
             "the tunnel again")
    assert '"west-east": 198.51.100.0/24===192.0.2.1' in west.whack("--status").stdout


# ---------------------------------------------------------------- %defaultroute


def _default_route(netns) -> str:  # noqa: ANN001
    return netns.run(PY, "-c", "from pypluto.daemon.defaultroute import default_route\n"
                     "print(default_route(4))\n").stdout.strip()


def test_defaultroute_over_a_point_to_point_device_without_via(make_pluto, netns,  # noqa: ANN001
                                                              tmp_path) -> None:
    """``default dev t0`` (ppp-like: no gateway address): Libreswan 5.2
    (resolve_default_route_linux.c) takes the device's point-to-point peer as the
    gateway and the source toward it as %defaultroute; the conn used to stay
    unoriented ("neither end is a local address")."""
    netns.run("ip", "tuntap", "add", "rt26t", "mode", "tun")
    netns.run("ip", "addr", "add", "192.0.2.5", "peer", "192.0.2.1", "dev", "rt26t")
    netns.run("ip", "link", "set", "rt26t", "up")
    netns.run("ip", "route", "add", "default", "dev", "rt26t")
    assert "src=IPv4Address('192.0.2.5'), gateway=IPv4Address('192.0.2.1')" \
        in _default_route(netns)
    conf = tmp_path / "dr.conf"
    conf.write_text("conn dr\n\tauthby=secret\n\tleft=%defaultroute\n\tright=203.0.113.9\n"
                    "\tauto=add\n")
    p = make_pluto()
    p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config", str(conf))
    p.wait_ready()
    st = p.whack("--status").stdout
    assert '"dr": 192.0.2.5---192.0.2.1...203.0.113.9' in st, st


def test_defaultroute_without_a_gateway_is_not_guessed(netns) -> None:  # noqa: ANN001
    """A device-only default route on a device that is not point-to-point, and an
    ECMP default route (RTA_MULTIPATH): Libreswan 5.2 finds no gateway either."""
    netns.run("ip", "link", "add", "rt26e", "type", "veth", "peer", "name", "rt26f")
    for dev, addr in (("rt26e", "192.0.2.5/24"), ("rt26f", "198.51.100.5/24")):
        netns.run("ip", "link", "set", dev, "up")
        netns.run("ip", "addr", "add", addr, "dev", dev)
    netns.run("ip", "route", "add", "default", "dev", "rt26e")
    assert _default_route(netns) == "None"
    netns.run("ip", "route", "del", "default")
    netns.run("ip", "route", "add", "default", "nexthop", "via", "192.0.2.1", "dev", "rt26e",
              "nexthop", "via", "198.51.100.1", "dev", "rt26f")
    assert _default_route(netns) == "None"


# ---------------------------------------------------------------- --listen


def test_listen_address_not_yet_local_and_conns_on_other_addresses(make_pluto, netns,  # noqa: ANN001
                                                                   tmp_path) -> None:
    """``--listen 192.0.2.40`` before 192.0.2.40 exists: no interface, and a conn on
    another local address (192.0.2.41) stays unoriented, as in Libreswan 5.2 where only
    an interface orients a conn and --listen makes just the one (it used to orient and
    then had no socket to send from).  Once the address is there, ``ipsec listen``
    opens it and orients the conn written for it."""
    netns.run("ip", "addr", "add", "192.0.2.41/32", "dev", "lo")
    conf = tmp_path / "l.conf"
    conf.write_text("conn other\n\tauthby=secret\n\tleft=192.0.2.41\n\tright=203.0.113.41\n"
                    "\tauto=add\n"
                    "conn mine\n\tauthby=secret\n\tleft=192.0.2.40\n\tright=203.0.113.40\n"
                    "\tauto=add\n")
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", "--use-none", "--logfile", str(log), "--config", str(conf),
            "--listen", "192.0.2.40")
    p.wait_ready()
    assert _ifaces(p) == []
    assert "--listen 192.0.2.40: not a local address; not listening" in log.read_text()
    st = p.whack("--status").stdout
    assert '"other": unoriented' in st and '"mine": unoriented' in st
    netns.run("ip", "addr", "add", "192.0.2.40/32", "dev", "lo")
    assert p.whack("--listen").returncode == 0
    assert _ifaces(p) == ["interface lo 192.0.2.40:UDP/4500 (NAT)",
                          "interface lo 192.0.2.40:UDP/500"]
    st = p.whack("--status").stdout
    assert '"other": unoriented' in st and '"mine": 192.0.2.40...203.0.113.40' in st
