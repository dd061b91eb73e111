"""The XFRM backend against the host kernel, in a scratch network namespace.

This host has XFRM netlink but (usually) no kernel ESP: policies and ALLOCSPI
work for real, adding an ESP SA fails and must say clearly why.  iproute2
serves as an independent encoder/decoder to cross-check our bytes.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest
from testsupport import is_root, require

from pypluto.kernel.base import BackendError, PolicyParams, SAParams, TrafficSelector
from pypluto.kernel.probe import choose_backend, probe_kernel_esp
from pypluto.kernel.xfrm import REQID_BASE, XfrmBackend, XfrmError
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.netlink import run_in_netns

pytestmark = pytest.mark.netns

ip = ipaddress.ip_address
net = ipaddress.ip_network
A, B = ip("192.0.2.1"), ip("192.0.2.2")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@pytest.fixture
def netns() -> Iterator[str]:
    require(is_root() and shutil.which("ip") is not None, "root and iproute2")
    name = f"ppxt{os.getpid()}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def backend(netns: str) -> Iterator[XfrmBackend]:
    b = XfrmBackend(netns=netns)
    try:
        yield b
    finally:
        b.close()


def kernel_has_esp(ns: str) -> bool:
    """Independent of our code: can iproute2 add an ESP SA there?"""
    res = sh(
        "ip", "-n", ns, "xfrm", "state", "add", "src", "192.0.2.9", "dst", "192.0.2.10",
        "proto", "esp", "spi", "0x999", "mode", "tunnel", "aead", "rfc4106(gcm(aes))",
        "0x" + "00" * 20, "128", check=False,
    )  # fmt: skip
    sh("ip", "-n", ns, "xfrm", "state", "flush", check=False)
    return res.returncode == 0


def pol(direction: str = "out", reqid: int = 7) -> PolicyParams:
    return PolicyParams(
        TrafficSelector(net("198.51.100.0/24"), 17, 500, 500),
        TrafficSelector(net("203.0.113.0/24")),
        direction,  # type: ignore[arg-type]
        reqid,
        A,
        B,
    )


def test_policy_round_trip_checked_by_iproute2(netns: str, backend: XfrmBackend) -> None:
    for d in ("out", "in", "fwd"):
        backend.add_policy(pol(d))
    text = sh("ip", "-n", netns, "xfrm", "policy").stdout
    assert text.count(f"reqid {REQID_BASE + 7} mode tunnel") == 3
    assert "src 198.51.100.0/24 dst 203.0.113.0/24 proto udp sport 500" in text
    assert "tmpl src 192.0.2.1 dst 192.0.2.2" in text
    mine = backend.list_policies()
    assert sorted(p.direction for p in mine) == ["fwd", "in", "out"]
    backend.add_policy(pol("out"))  # again: an update, still three
    assert len(backend.list_policies()) == 3
    backend.del_policy(pol("in"))
    assert sorted(p.direction for p in backend.list_policies()) == ["fwd", "out"]
    backend.del_policy(pol("in"))  # unknown: ignored


def test_decodes_policies_made_by_iproute2(netns: str, backend: XfrmBackend) -> None:
    sh(
        "ip", "-n", netns, "xfrm", "policy", "add", "src", "2001:db8:1::/64", "dst",
        "2001:db8:2::/48", "proto", "tcp", "dport", "443", "dir", "in", "priority", "77",
        "tmpl", "src", "2001:db8::2", "dst", "2001:db8::1", "proto", "esp", "reqid", "16388",
        "mode", "tunnel",
    )  # fmt: skip
    assert backend.list_policies() == []  # not ours
    (p,) = backend.list_policies(own_only=False)
    sel = p.info.sel
    assert (str(sel.src_net), str(sel.dst_net), sel.proto, sel.dport, sel.dport_mask) == (
        "2001:db8:1::/64", "2001:db8:2::/48", 6, 443, 0xFFFF,
    )  # fmt: skip
    assert (p.direction, p.info.priority) == ("in", 77)
    t = p.tmpls[0]
    assert (t.reqid, str(t.saddr), str(t.daddr), t.family) == (
        16388, "2001:db8::2", "2001:db8::1", socket.AF_INET6,
    )  # fmt: skip


def test_foreign_policy_is_never_overwritten_or_flushed(netns: str, backend: XfrmBackend) -> None:
    sh(
        "ip", "-n", netns, "xfrm", "policy", "add", "src", "198.51.100.0/24", "dst",
        "203.0.113.0/24", "proto", "udp", "sport", "500", "dir", "out", "tmpl", "src",
        "192.0.2.1", "dst", "192.0.2.2", "proto", "esp", "reqid", "16388", "mode", "tunnel",
    )  # fmt: skip
    with pytest.raises(BackendError, match="someone else"):
        backend.add_policy(pol("out"))
    backend.del_policy(pol("out"))  # not ours: left alone
    backend.flush_own()
    assert "reqid 16388" in sh("ip", "-n", netns, "xfrm", "policy").stdout


def test_esp_sa_on_this_kernel(netns: str, backend: XfrmBackend) -> None:
    """Without kernel ESP the error names the cause; with it, the SA is there."""
    sa = SAParams(A, B, 0x1001, "out", reqid=1, encr_id=20, encr_key_bits=128,
                  encr_key=bytes(20))  # fmt: skip
    if kernel_has_esp(netns):
        backend.add_sa(sa)
        assert backend.get_sa_stats(B, 0x1001) is not None
        return
    with pytest.raises(XfrmError) as ei:
        backend.add_sa(sa)
    msg = str(ei.value)
    assert "NEWSA" in msg and "algorithm not found" in msg and "--use-userspace" in msg
    assert backend.list_sas(own_only=False) == []


def test_allocspi_and_flush_own(netns: str, backend: XfrmBackend) -> None:
    spi = backend.alloc_spi(B, A, reqid=3)
    assert 0x100 <= spi <= 0xFFFFFFFF
    text = sh("ip", "-n", netns, "xfrm", "state").stdout
    assert f"spi {spi:#010x} reqid {REQID_BASE + 3}" in text
    got = backend.get_sa(A, spi)
    assert got is not None and got.reqid == REQID_BASE + 3
    backend.add_policy(pol())
    backend.flush_own()
    assert backend.list_sas(own_only=False) == []
    assert backend.list_policies(own_only=False) == []
    assert backend.get_sa_stats(A, spi) is None


def test_crashed_run_leftovers_found_by_a_new_backend(netns: str) -> None:
    first = XfrmBackend(netns=netns)
    first.add_policy(pol("out", reqid=11))
    first.alloc_spi(B, A, reqid=11)
    first.close()  # "crash": nothing removed
    second = XfrmBackend(netns=netns)
    try:
        assert len(second.list_policies()) == 1 and len(second.list_sas()) == 1
        second.flush_own()
        assert second.list_policies(own_only=False) == [] and second.list_sas(own_only=False) == []
    finally:
        second.close()


def test_nat_socket_gets_udp_encap(netns: str, backend: XfrmBackend) -> None:
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 4500))
        return s

    sh("ip", "-n", netns, "link", "set", "lo", "up")
    s = run_in_netns(netns, make)
    try:
        assert backend.attach_nat_socket(s, ("127.0.0.1", 4500), lambda d, a: None) is False
        assert s.getsockopt(S.SOL_UDP, S.UDP_ENCAP) == S.UDP_ENCAP_ESPINUDP
    finally:
        s.close()


def test_unknown_netns_is_a_clear_error() -> None:
    with pytest.raises(BackendError, match="network namespace"):
        XfrmBackend(netns=f"ppx-missing-{os.getpid()}")


def test_probe_agrees_with_iproute2_and_choose_backend(netns: str) -> None:
    ok, why = probe_kernel_esp()
    assert ok == kernel_has_esp(netns), why
    if not ok:
        assert "algorithm not found" in why or "not" in why
    choice = choose_backend("xfrm")
    try:
        assert choice.backend.name == "xfrm" and "xfrm" in choice.message
    finally:
        choice.backend.close()
    with pytest.raises(BackendError, match="unknown kernel backend"):
        choose_backend("bogus")


def test_source_ip_route_added_marked_and_removed(netns: str) -> None:
    """An outbound tunnel policy with a source IP gets its route (like Libreswan's updown)."""
    for cmd in (
        ["link", "add", "pp0", "type", "veth", "peer", "name", "pp1"],
        ["addr", "add", "192.0.2.1/24", "dev", "pp0"],
        ["addr", "add", "198.51.100.1/32", "dev", "pp0"],
        ["link", "set", "pp0", "up"],
        ["route", "add", "198.51.100.128/25", "via", "192.0.2.2"],  # somebody else's
    ):
        if sh("ip", "-n", netns, *cmd, check=False).returncode != 0:
            require(False, f"building the namespace: ip {' '.join(cmd)}")
    b = XfrmBackend(netns=netns)
    p = PolicyParams(
        TrafficSelector(net("198.51.100.0/24")), TrafficSelector(net("203.0.113.0/24")), "out",
        5, A, B, source_ip=ip("198.51.100.1"),
    )  # fmt: skip
    foreign = PolicyParams(
        TrafficSelector(net("203.0.113.0/24")), TrafficSelector(net("198.51.100.128/25")), "out",
        6, A, B, source_ip=ip("203.0.113.1"),
    )  # fmt: skip
    try:
        b.add_policy(p)
        b.add_policy(p)  # an update: still one route
        b.add_policy(foreign)  # the route exists and is not ours: left as it is
        routes = sh("ip", "-n", netns, "route").stdout
        assert "203.0.113.0/24 dev pp0 proto 80 scope link src 198.51.100.1" in routes, routes
        assert "198.51.100.128/25 via 192.0.2.2 dev pp0" in routes
        b.del_policy(p)
        assert "203.0.113.0/24" not in sh("ip", "-n", netns, "route").stdout
        b.add_policy(p)
        b.close()  # crash: the route stays
        b = XfrmBackend(netns=netns)
        b.flush_own()
        routes = sh("ip", "-n", netns, "route").stdout
        assert "203.0.113.0/24" not in routes and "198.51.100.128/25 via 192.0.2.2" in routes
    finally:
        b.close()


def test_ike_socket_bypasses_policies(netns: str, backend: XfrmBackend) -> None:
    """prepare_ike_socket: IKE is sent in clear even where a policy demands ESP."""
    peer = f"ppxu{os.getpid()}"
    sh("ip", "netns", "add", peer)
    try:
        for ns, cmds in (
            (None, [["link", "add", "ppa", "netns", netns, "type", "veth", "peer", "name", "ppb",
                     "netns", peer]]),
            (netns, [["addr", "add", "192.0.2.1/24", "dev", "ppa"], ["link", "set", "ppa", "up"]]),
            (peer, [["addr", "add", "192.0.2.2/24", "dev", "ppb"], ["link", "set", "ppb", "up"]]),
        ):  # fmt: skip
            for cmd in cmds:
                if sh("ip", *(["-n", ns] if ns else []), *cmd, check=False).returncode != 0:
                    require(False, f"building the namespaces: ip {' '.join(cmd)}")
        host = TrafficSelector(net("192.0.2.0/24"))
        backend.add_policy(PolicyParams(host, host, "out", 1, A, B))

        def sock(addr: str) -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, 0))
            s.settimeout(1.0)
            return s

        rx = run_in_netns(peer, lambda: sock("192.0.2.2"))
        plain = run_in_netns(netns, lambda: sock("192.0.2.1"))
        ike = run_in_netns(netns, lambda: sock("192.0.2.1"))
        try:
            backend.prepare_ike_socket(ike)
            try:
                plain.sendto(b"clear?", rx.getsockname())
            except OSError:
                pass  # the kernel may refuse at once (no SA for the policy)
            with pytest.raises(TimeoutError):
                rx.recv(100)  # the policy holds back the plain socket's datagram
            ike.sendto(b"ike", rx.getsockname())
            assert rx.recv(100) == b"ike"
        finally:
            for s in (rx, plain, ike):
                s.close()
    finally:
        sh("ip", "netns", "del", peer, check=False)


def test_road_warrior_address_added_for_the_route_and_removed(netns: str) -> None:
    """A source IP on no interface (the gateway's CFG_REPLY, RFC 7296 §3.15) is put on the
    interface towards the peer while the route uses it, and removed with the route."""
    for cmd in (
        ["link", "add", "pp0", "type", "veth", "peer", "name", "pp1"],
        ["addr", "add", "192.0.2.1/24", "dev", "pp0"],
        ["link", "set", "pp0", "up"],
    ):
        if sh("ip", "-n", netns, *cmd, check=False).returncode != 0:
            require(False, f"building the namespace: ip {' '.join(cmd)}")
    b = XfrmBackend(netns=netns)
    p = PolicyParams(
        TrafficSelector(net("198.51.100.200/32")), TrafficSelector(net("203.0.113.0/24")),
        "out", 5, A, B, source_ip=ip("198.51.100.200"),
    )  # fmt: skip
    try:
        b.add_policy(p)
        addrs = sh("ip", "-n", netns, "-o", "addr", "show", "dev", "pp0").stdout
        assert "198.51.100.200/32" in addrs, addrs
        routes = sh("ip", "-n", netns, "route").stdout
        assert "203.0.113.0/24 dev pp0 proto 80 scope link src 198.51.100.200" in routes, routes
        b.del_policy(p)
        assert "198.51.100.200" not in sh("ip", "-n", netns, "-o", "addr").stdout
        assert "203.0.113.0/24" not in sh("ip", "-n", netns, "route").stdout
    finally:
        b.close()


def _link_with_default_route(netns: str) -> None:
    """pp0 with 192.0.2.1/24 and 198.51.100.1, the default route via 192.0.2.2."""
    for cmd in (
        ["link", "add", "pp0", "type", "veth", "peer", "name", "pp1"],
        ["addr", "add", "192.0.2.1/24", "dev", "pp0"],
        ["addr", "add", "198.51.100.1/32", "dev", "pp0"],
        ["link", "set", "pp0", "up"],
        ["route", "add", "default", "via", "192.0.2.2"],
    ):
        if sh("ip", "-n", netns, *cmd, check=False).returncode != 0:
            require(False, f"building the namespace: ip {' '.join(cmd)}")


def test_mtu_and_metric_routes_with_and_without_source(netns: str) -> None:
    """mtu= / metric= (as Libreswan's updown: ``ip route ... mtu N metric M``): an
    outbound policy gets a route carrying them even without a source IP; a remote
    selector of everything is routed as its two halves, next to the default route."""
    _link_with_default_route(netns)
    b = XfrmBackend(netns=netns)
    sub = PolicyParams(
        TrafficSelector(net("198.51.100.0/24")), TrafficSelector(net("203.0.113.0/24")), "out",
        5, A, B, mtu=1300, metric=7,
    )  # fmt: skip
    every = PolicyParams(
        TrafficSelector(net("198.51.100.1/32")), TrafficSelector(net("0.0.0.0/0")), "out",
        6, A, B, source_ip=ip("198.51.100.1"), mtu=1280,
    )  # fmt: skip
    inbound = PolicyParams(
        TrafficSelector(net("203.0.113.0/24")), TrafficSelector(net("198.51.100.0/24")), "in",
        5, B, A, mtu=1300, metric=7,
    )  # fmt: skip
    try:
        b.add_policy(sub)
        b.add_policy(every)
        b.add_policy(inbound)  # routes are for outbound policies only
        routes = sh("ip", "-n", netns, "route").stdout
        lines = {ln.split()[0]: ln for ln in routes.splitlines()}
        assert "203.0.113.0/24" in lines, routes
        r = lines["203.0.113.0/24"]
        # the peer (192.0.2.2) is on the link: the routes take its device, no gateway
        for part in ("dev pp0", "proto 80", "metric 7", "mtu 1300"):
            assert part in r, r
        assert " src " not in r, r
        for half in ("0.0.0.0/1", "128.0.0.0/1"):
            r = lines.get(half, "")
            for part in ("dev pp0", "proto 80", "src 198.51.100.1", "mtu 1280"):
                assert part in r, routes
        assert "default via 192.0.2.2" in routes  # the host's own route stays
        assert "198.51.100.0/24" not in routes
        # the kernel uses them: a lookup says the MTU
        got = sh("ip", "-n", netns, "route", "get", "203.0.113.9").stdout
        assert "mtu 1300" in got, got
        b.del_policy(every)
        b.del_policy(sub)
        routes = sh("ip", "-n", netns, "route").stdout
        assert "proto 80" not in routes and "default via 192.0.2.2" in routes, routes
        # a road warrior's address for everything (no mtu=): both halves, the one that
        # holds the peer too, so every packet leaves from the address the policy covers
        every.mtu = None
        b.add_policy(every)
        routes = sh("ip", "-n", netns, "route").stdout
        for half in ("0.0.0.0/1", "128.0.0.0/1"):
            assert f"{half} dev pp0 proto 80 scope link src 198.51.100.1" in routes, routes
        assert "mtu" not in routes
        b.del_policy(every)
        assert "proto 80" not in sh("ip", "-n", netns, "route").stdout
    finally:
        b.close()


def test_nexthop_is_the_gateway_of_the_route(netns: str) -> None:
    """leftnexthop= as Libreswan's updown uses it: the route for the remote selectors
    goes ``via NEXTHOP`` on the device that reaches it, not the way the kernel reaches
    the peer; a nexthop that is not on a link of ours adds no route and says why."""
    _link_with_default_route(netns)
    said: list[str] = []
    b = XfrmBackend(netns=netns, log=said.append)
    peer = ip("203.0.113.200")  # reached through the default route's gateway 192.0.2.2
    out = PolicyParams(
        TrafficSelector(net("198.51.100.1/32")), TrafficSelector(net("203.0.113.0/25")), "out",
        5, A, peer, source_ip=ip("198.51.100.1"), nexthop=ip("192.0.2.3"),
    )  # fmt: skip
    try:
        b.add_policy(out)
        routes = sh("ip", "-n", netns, "route").stdout
        assert "203.0.113.0/25 via 192.0.2.3 dev pp0 proto 80 src 198.51.100.1" in routes, routes
        got = sh("ip", "-n", netns, "route", "get", "203.0.113.7").stdout
        assert "via 192.0.2.3" in got, got
        b.del_policy(out)
        assert "proto 80" not in sh("ip", "-n", netns, "route").stdout
        # without leftnexthop=: the peer's way, through 192.0.2.2
        out.nexthop = None
        b.add_policy(out)
        routes = sh("ip", "-n", netns, "route").stdout
        assert "203.0.113.0/25 via 192.0.2.2 dev pp0 proto 80 src 198.51.100.1" in routes, routes
        b.del_policy(out)
        # a nexthop beyond a gateway cannot be one: no route, and the log says why
        out.nexthop = ip("203.0.113.1")
        b.add_policy(out)
        assert "proto 80" not in sh("ip", "-n", netns, "route").stdout
        assert any("the nexthop 203.0.113.1 is not on a directly connected network" in m
                   for m in said), said
        b.del_policy(out)
    finally:
        b.close()


def test_priority_reaches_the_kernel(netns: str, backend: XfrmBackend) -> None:
    """priority= as iproute2 reads it back from the kernel; unset: the computed one."""
    p = pol("out")
    p.priority = 1500
    backend.add_policy(p)
    q = pol("in", reqid=8)
    backend.add_policy(q)
    text = sh("ip", "-n", netns, "xfrm", "policy").stdout
    assert "dir out priority 1500" in text, text
    m = re.search(r"dir in priority (\d+)", text)
    assert m is not None and int(m.group(1)) > 60000, text


def test_xfrmlifetime_sets_the_acquire_lifetime(netns: str) -> None:
    """config setup xfrmlifetime=N: net.core.xfrm_acq_expires of the daemon's namespace
    (how long a trap's larval state lives before the next packet may ACQUIRE again),
    as Libreswan sets it; the old value is put back when the backend closes."""
    def now() -> str:
        return sh("ip", "netns", "exec", netns, "cat",
                  "/proc/sys/net/core/xfrm_acq_expires").stdout.strip()

    before = now()
    b = XfrmBackend(netns=netns)
    try:
        said = b.set_acquire_lifetime(7)
        assert now() == "7"
        assert said == f"xfrmlifetime=7: net.core.xfrm_acq_expires was {before}, now 7"
        b.set_acquire_lifetime(9)  # a second value: the first old one is what goes back
        assert now() == "9"
    finally:
        b.close()
    assert now() == before
