"""Red team 26: the XFRM backend's policies against the host kernel, in a scratch netns.

The kernel reads every policy back through iproute2 (an independent decoder).
Priorities are compared with Libreswan 5.2's ``spd_priority()`` (programs/pluto/
kernel.c): a static /24 <-> /24 tunnel gets 1757393 (ikev2-expire-02-packets
west.console.verbose.txt), fewer wildcard ports beat a protocol, which beats
prefixes, and the out/in/fwd policies of one selector pair rank alike.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest
from testsupport import is_root, require

from pypluto.kernel.base import BackendError
from pypluto.kernel.xfrm import XfrmBackend
from pypluto.kernel.xfrm.backend import default_priority, policy_selector
from pypluto.params import PolicyParams, SAParams, TrafficSelector

pytestmark = pytest.mark.netns

net = ipaddress.ip_network
A, B = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")
A6, B6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2")


def T(n: str, proto: int = 0, lo: int = 0, hi: int | None = None) -> TrafficSelector:
    if hi is None:
        hi = 65535 if lo == 0 else lo
    return TrafficSelector(net(n), proto, lo, hi)


def P(src: TrafficSelector, dst: TrafficSelector, d: str = "out", reqid: int = 7,
      **kw: object) -> PolicyParams:
    six = src.network.version == 6
    return PolicyParams(src, dst, d, reqid, A6 if six else A, B6 if six else B,  # type: ignore[arg-type]
                        **kw)  # type: ignore[arg-type]


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[str]:
    require(is_root() and shutil.which("ip") is not None, "root and iproute2")
    name = f"pprt26-{os.getpid()}-{abs(hash(request.node.name)) % 10**6}"
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


def policies(ns: str) -> str:
    return sh("ip", "-n", ns, "xfrm", "policy").stdout


def test_v4_v6_protocol_ports_and_icmp_as_iproute2_reads_them(netns: str,
                                                               backend: XfrmBackend) -> None:
    backend.add_policy(P(T("10.1.0.0/16", 17, 500), T("10.2.0.0/24", 17, 4500)))
    backend.add_policy(P(T("2001:db8:1::/64", 6), T("2001:db8:2::/48", 6, 443), "in"))
    backend.add_policy(P(T("10.1.0.0/16", 6, 1024, 2047), T("10.2.0.0/24", 6)))  # aligned
    backend.add_policy(P(T("10.3.0.0/16", 1, 0x0800), T("10.4.0.0/16", 1)))  # echo request
    backend.add_policy(P(T("2001:db8:1::/64", 58, 0x8700, 0x87FF), T("::/0", 58), "fwd"))
    text = policies(netns)
    assert "src 10.1.0.0/16 dst 10.2.0.0/24 proto udp sport 500 dport 4500" in text, text
    assert "src 2001:db8:1::/64 dst 2001:db8:2::/48 proto tcp dport 443" in text, text
    assert "src 10.3.0.0/16 dst 10.4.0.0/16 proto icmp type 8 code 0" in text, text
    assert "src 2001:db8:1::/64 dst ::/0 proto ipv6-icmp type 135 \n" in text, text
    k = [p for p in backend.list_policies() if p.info.sel.sport == 1024]
    assert len(k) == 1 and k[0].info.sel.sport_mask == 0xFC00


@pytest.mark.parametrize(("src", "dst", "why"), [
    (T("10.0.0.0/8", 6, 1000, 2000), T("10.1.0.0/16", 6), "cannot be expressed"),
    (T("10.0.0.0/8", 17), T("10.1.0.0/16", 17, 1, 65535), "cannot be expressed"),
    (T("0.0.0.0/0", 17, 0, 65534), T("0.0.0.0/0", 17), "cannot be expressed"),
    # protocol 0 with ports: the kernel would drop the ports (a wider policy)
    (T("10.0.0.0/8", 0, 500), T("10.1.0.0/16"), "has none"),
    # GRE: the kernel reads the ports as the GRE key ("proto gre key 32768000")
    (T("10.0.0.0/8", 47, 500), T("10.1.0.0/16", 47), "has none"),
    (T("10.0.0.0/8", 89), T("10.1.0.0/16", 89, 80), "has none"),
    # ICMP: one type/code for the pair; type 8 one way and type 0 the other is not type 8
    (T("10.0.0.0/8", 1, 0x0800), T("10.1.0.0/16", 1, 0, 0), "two types"),
    (T("10.0.0.0/8", 1, 0x0800, 0x09FF), T("10.1.0.0/16", 1), "several types"),
    (T("10.0.0.0/8", 1, 0x0300, 0x0303), T("10.1.0.0/16", 1), "several codes"),
])  # fmt: skip
def test_unexpressible_selectors_refused_and_nothing_installed(
        netns: str, backend: XfrmBackend, src: TrafficSelector, dst: TrafficSelector,
        why: str) -> None:
    """Never widened or narrowed silently: a clear refusal, the SPD left empty."""
    for d in ("out", "in"):
        for action in ("ipsec", "drop"):
            with pytest.raises(BackendError, match=why):
                backend.add_policy(P(src, dst, d, action=action))
    assert policies(netns) == ""


def test_icmp_same_type_both_ways_is_one_selector(netns: str, backend: XfrmBackend) -> None:
    backend.add_policy(P(T("10.0.0.0/8", 1, 0x0800), T("10.1.0.0/16", 1, 0x0800)))
    assert "proto icmp type 8 code 0" in policies(netns)


def test_priority_is_libreswans_and_more_specific_wins() -> None:
    def prio(src: TrafficSelector, dst: TrafficSelector, d: str = "out") -> int:
        return default_priority(policy_selector(src, dst), d)

    assert prio(T("192.0.2.0/24"), T("198.51.100.0/24")) == 1757393  # Libreswan 5.2
    # both ports beat one port (before: a tie, the kernel took the older policy)
    assert prio(T("10.0.0.0/8", 17, 500), T("10.1.0.0/16", 17, 500)) < prio(
        T("10.0.0.0/8", 17), T("10.1.0.0/16", 17, 500))
    # ICMP type and code beats type alone
    assert prio(T("10.0.0.0/8", 1, 0x0800), T("10.1.0.0/16", 1)) < prio(
        T("10.0.0.0/8", 1, 0x0800, 0x08FF), T("10.1.0.0/16", 1))
    # /24 -> /24 and /32 -> /16 tied before (sum of the prefixes): the local prefix first
    wide, host = (T("10.0.0.0/24"), T("10.1.0.0/24")), (T("10.0.0.5/32"), T("10.1.0.0/16"))
    assert prio(*host) < prio(*wide)
    # ... for every direction alike (in/fwd: the local selector is the destination)
    for d in ("in", "fwd"):
        assert prio(host[1], host[0], d) < prio(wide[1], wide[0], d)
        assert prio(host[1], host[0], d) == prio(*host)
    # ports and protocol before prefixes (Libreswan's order)
    assert prio(T("0.0.0.0/0", 6, 80), T("0.0.0.0/0", 6, 80)) < prio(T("10.0.0.1/32"),
                                                                     T("10.0.0.2/32"))


def test_kernel_picks_the_more_specific_whatever_the_order(netns: str,
                                                          backend: XfrmBackend) -> None:
    """Two overlapping policies: the narrower one is listed first (better priority)."""
    wide = P(T("10.0.0.0/8", 17), T("10.1.0.0/16", 17, 500))
    narrow = P(T("10.0.0.0/8", 17, 500), T("10.1.0.0/16", 17, 500), reqid=8)
    backend.add_policy(wide)
    backend.add_policy(narrow)
    got = {p.info.sel.sport_mask: p.info.priority for p in backend.list_policies()}
    assert got[0xFFFF] < got[0]


def test_shunts_pass_and_block_and_replacement(netns: str, backend: XfrmBackend) -> None:
    """A shunt and a tunnel of one selector are one kernel policy (priority is not part
    of its identity): the later replaces ours, never "installed by someone else"."""
    s, d = T("10.2.0.0/16", 6), T("10.3.0.0/16", 6, 80)
    backend.add_policy(P(s, d, action="pass"))
    text = policies(netns)
    assert re.search(r"dport 80 \n\tdir out priority (\d+) ptype main \n$", text), text
    backend.add_policy(P(s, d, action="drop"))  # same selector: replaced, not doubled
    text = policies(netns)
    assert text.count("src 10.2.0.0/16") == 1 and "action block" in text, text
    (shunt,) = backend.list_policies()
    tunnel = P(s, d)
    backend.add_policy(tunnel)  # e.g. failureshunt=drop, then the tunnel comes up
    (pol,) = backend.list_policies()
    assert pol.tmpls and pol.info.priority == shunt.info.priority + 1
    backend.del_policy(P(s, d, action="drop"))  # the tunnel's now: left alone
    assert len(backend.list_policies()) == 1
    backend.add_policy(P(s, d, action="drop"))  # and back: the shunt replaces the tunnel
    (again,) = backend.list_policies()
    assert not again.tmpls
    backend.del_policy(P(s, d, action="drop"))
    backend.del_policy(P(s, d, action="drop"))  # gone already: quiet
    backend.del_policy(tunnel)
    assert policies(netns) == ""


def test_update_replaces_the_template_and_delete_of_a_flushed_policy(
        netns: str, backend: XfrmBackend) -> None:
    p = P(T("10.0.0.0/24"), T("10.1.0.0/24"))
    backend.add_policy(p)
    p.tmpl_dst = ipaddress.ip_address("192.0.2.99")  # MOBIKE: the same policy, new peer
    backend.add_policy(p)
    text = policies(netns)
    assert text.count("src 10.0.0.0/24") == 1 and "dst 192.0.2.99" in text, text
    sh("ip", "-n", netns, "xfrm", "policy", "flush")
    backend.del_policy(p)  # gone under us: no error
    backend.flush_own()


def test_mark_is_part_of_the_policy_identity(netns: str, backend: XfrmBackend) -> None:
    s, d = T("10.0.0.0/24"), T("10.1.0.0/24")
    backend.add_policy(P(s, d, mark=(0x10, 0xFF)))
    backend.add_policy(P(s, d, mark=(0x20, 0xFF), reqid=8))
    text = policies(netns)
    assert "mark 0x10/0xff" in text and "mark 0x20/0xff" in text, text
    backend.del_policy(P(s, d, mark=(0x10, 0xFF)))
    text = policies(netns)
    assert "mark 0x10/0xff" not in text and "mark 0x20/0xff" in text, text
    with pytest.raises(BackendError, match="mark"):
        backend.add_policy(P(s, d, mark=(0x100, 0xFF)))


def test_hostile_zero_prefixes(netns: str, backend: XfrmBackend) -> None:
    """0.0.0.0/0 and ::/0 both ends, with and without ports: installed as asked, removed."""
    backend.add_policy(P(T("0.0.0.0/0", 17, 500), T("0.0.0.0/0", 17, 500), "in"))
    backend.add_policy(P(T("::/0"), T("::/0"), "fwd"))
    text = policies(netns)
    assert "src 0.0.0.0/0 dst 0.0.0.0/0 proto udp sport 500 dport 500" in text, text
    assert "src ::/0 dst ::/0 \n\tdir fwd" in text, text
    backend.flush_own()
    assert policies(netns) == ""


def test_thousands_of_policies_installed_and_all_removed(netns: str,
                                                        backend: XfrmBackend) -> None:
    n = 3000
    t0 = time.monotonic()
    for i in range(n):
        src = T(f"10.{i >> 8}.{i & 255}.0/24")
        backend.add_policy(P(src, T("172.16.0.0/12"), "out" if i & 1 else "in"))
    took = time.monotonic() - t0
    assert len(backend.list_policies()) == n
    print(f"{n} policies in {took:.2f}s")
    backend.flush_own()
    assert policies(netns) == ""


def test_failed_sa_on_an_interface_leaves_no_device(netns: str, backend: XfrmBackend) -> None:
    """No kernel ESP here: add_sa fails clearly and the ipsecN it made is gone again."""
    sa = SAParams(A, B, 0x1001, "out", reqid=1, encr_id=20, encr_key_bits=128,
                  encr_key=bytes(20), if_id=9)  # fmt: skip
    before = sh("ip", "-n", netns, "link").stdout
    try:
        backend.add_sa(sa)
    except BackendError as e:
        assert "NEWSA" in str(e) or "ipsec" in str(e), e
    else:
        pytest.skip("this kernel has ESP and XFRM interfaces")
    assert sh("ip", "-n", netns, "link").stdout == before
    assert backend.list_sas(own_only=False) == []


def test_failed_sa_after_allocspi_is_removed_by_del_sa(netns: str, backend: XfrmBackend) -> None:
    """The engine's answer to a refused SA is DelSA: the larval SA of ALLOCSPI goes too."""
    spi = backend.alloc_spi(B, A, reqid=3)
    sa = SAParams(B, A, spi, "in", reqid=3, encr_id=20, encr_key_bits=128, encr_key=bytes(20))
    try:
        backend.add_sa(sa)
    except BackendError:
        pass
    else:
        pytest.skip("this kernel has ESP")
    assert [s.spi for s in backend.list_sas()] == [spi]  # still the larval one
    backend.del_sa(A, spi)
    assert backend.list_sas(own_only=False) == []
    backend.del_sa(A, spi)  # gone already: quiet


def test_shunt_of_an_ipsec_interface_conn_carries_if_id_and_is_deleted(
        netns: str, backend: XfrmBackend) -> None:
    """The blocked pairs of a Child SA on ipsec-interface=N are drop shunts with if_id N
    (engine.policies): installed without it, GETPOLICY (which asks with if_id N) never
    found the shunt again and del_policy left it blocking traffic until shutdown."""
    p = P(T("10.0.0.0/24"), T("10.1.0.0/24"), action="drop", if_id=5)
    backend.add_policy(p)
    assert "if_id 0x5" in policies(netns)
    backend.add_policy(p)  # again: replaced (found by GETPOLICY), not an error
    backend.del_policy(p)
    assert policies(netns) == ""


def test_deleting_a_replaced_tunnel_policy_leaves_the_new_owner(netns: str,
                                                                backend: XfrmBackend) -> None:
    """One kernel policy per selector: a drop shunt (or another Child SA's tunnel) that
    replaced a tunnel's policy stays when the old tunnel goes down; before, the drop
    shunt was deleted with it and the traffic went out in cleartext."""
    s, d = T("10.0.0.0/24"), T("10.1.0.0/24")
    tunnel, shunt, other = P(s, d), P(s, d, action="drop"), P(s, d, reqid=9)
    backend.add_policy(tunnel)
    backend.add_policy(shunt)
    (ours,) = backend.list_policies()  # still ours (our index), so flush_own finds it
    assert not ours.tmpls
    backend.del_policy(tunnel)
    assert "action block" in policies(netns)
    backend.add_policy(other)  # the shunt's selectors to reqid 9
    backend.del_policy(tunnel)  # reqid 7: not its policy any more
    (left,) = backend.list_policies()
    assert [t.reqid for t in left.tmpls] == [backend.kernel_reqid(9)]
    backend.del_policy(other)
    assert policies(netns) == ""
