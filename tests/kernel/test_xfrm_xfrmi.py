"""ipsec-interface=N on the XFRM plane (issue 16): XFRMA_IF_ID and the ipsecN devices.

Encoding against ``<linux/xfrm.h>`` (XFRMA_IF_ID = 31, a u32) on SAs, policies and
policy lookups; ``XfrmInterfaces`` (kernel/xfrm/xfrmi.py) with a recorded ``ip``
runner: the device is made once per number (``type xfrm dev PHYS if_id N``, our
alias, up, interface-ip=), shared, removed with its last holder; the operator's
device (ipsec-interface-managed=no) is used and left; a kernel without XFRM
interfaces is refused with the probe's reason; ``flush_own`` removes only devices
with our instance's alias.  Traffic is proven in the ESP kernel
(tests/espkernel/test_xfrmi_uml.py).
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pypluto.kernel.base import BackendError
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import KernelPolicy, encode_policy, encode_sa
from pypluto.kernel.xfrm.xfrmi import XfrmInterfaces, alias_for, create_command, device_name
from pypluto.params import PolicyParams, SAParams, TrafficSelector

L, R = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


def sa(if_id: int | None) -> SAParams:
    return SAParams(src=L, dst=R, spi=0x1234, direction="out", reqid=1, mode="tunnel",
                    encr_id=20, encr_key=bytes(36), encr_key_bits=256, if_id=if_id)


def policy(if_id: int | None) -> PolicyParams:
    return PolicyParams(src=TrafficSelector(ipaddress.ip_network("198.51.100.0/24")),
                        dst=TrafficSelector(ipaddress.ip_network("203.0.113.0/24")),
                        direction="out", reqid=1, tmpl_src=L, tmpl_dst=R, if_id=if_id)


def if_ids(body: bytes, offset: int) -> list[int]:
    attrs = S.parse_attrs(body, offset)
    return [struct.unpack("=I", raw)[0] for raw in attrs.get(S.XFRMA_IF_ID, [])]


def test_sa_carries_if_id_only_with_ipsec_interface() -> None:
    assert S.XFRMA_IF_ID == 31
    assert if_ids(encode_sa(sa(7), 0x50500001), S.USERSA_INFO_SIZE) == [7]
    assert if_ids(encode_sa(sa(None), 0x50500001), S.USERSA_INFO_SIZE) == []


def test_policy_carries_if_id_and_decodes_it() -> None:
    body = encode_policy(policy(0xFFFFFFFF), 0x50500001)
    assert if_ids(body, S.USERPOLICY_INFO_SIZE) == [0xFFFFFFFF]
    pol = KernelPolicy.decode(body)
    assert pol.if_id == 0xFFFFFFFF and "if_id 0xffffffff" in str(pol)
    assert KernelPolicy.decode(encode_policy(policy(None), 0x50500001)).if_id is None


@pytest.mark.parametrize("bad", [0, 1 << 32])
def test_if_id_outside_u32_is_refused(bad: int) -> None:
    with pytest.raises(BackendError, match="ipsec-interface"):
        encode_policy(policy(bad), 0x50500001)


def test_names_and_command() -> None:
    assert device_name(1) == "ipsec1"
    assert alias_for(3) == "pypluto-xfrmi-3"
    assert create_command("ipsec1", 1, "eth0", "ns") == [
        "ip", "-n", "ns", "link", "add", "ipsec1", "type", "xfrm", "dev", "eth0", "if_id", "1"]
    assert create_command("ipsec9", 9, None) == [
        "ip", "link", "add", "ipsec9", "type", "xfrm", "if_id", "9"]


class FakeIp:
    """A recorded ``ip``: which links exist, which addresses the host has."""

    def __init__(self, xfrm: bool = True, links: set[str] | None = None,
                 host_addrs: set[str] | None = None, listing: str = "") -> None:
        self.xfrm = xfrm
        self.links = links if links is not None else set()
        self.host_addrs = host_addrs or set()
        self.listing = listing
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.calls.append(argv)
        a = argv[1:]
        if a[:2] == ["-n", "ns"]:
            a = a[2:]
        if a[:3] == ["-o", "addr", "show"]:
            if a[4] == str(L):
                return 0, f"2: veth0    inet {L}/24 brd 192.0.2.255 scope global veth0"
            return 0, (f"3: x inet {a[4]}/32" if a[4] in self.host_addrs else "")
        if a[:3] == ["-o", "link", "show"]:
            return 0, self.listing
        if a[:2] == ["link", "add"]:
            if not self.xfrm:
                return 2, "Error: Unknown device type."
            self.links.add(a[2])
            return 0, ""
        if a[:2] == ["link", "show"]:
            return (0, "") if a[3] in self.links else (1, "does not exist")
        if a[:2] == ["link", "del"]:
            self.links.discard(a[2])
            return 0, ""
        return 0, ""


def adds(fake: FakeIp) -> list[list[str]]:
    return [c for c in fake.calls if c[3:5] == ["link", "add"] and "ipsec1" in c]


def test_device_is_made_once_shared_and_removed_with_the_last_holder() -> None:
    fake = FakeIp()
    xs = XfrmInterfaces("ns", 0, run=fake)
    dev = xs.acquire(1, "sa-out", local=L, if_ip="10.9.9.1/30")
    assert adds(fake) == [["ip", "-n", "ns", "link", "add", "ipsec1", "type", "xfrm", "dev",
                           "veth0", "if_id", "1"]]
    assert ["ip", "-n", "ns", "link", "set", "dev", "ipsec1", "alias", "pypluto-xfrmi-0"] \
        in fake.calls
    assert ["ip", "-n", "ns", "link", "set", "dev", "ipsec1", "up"] in fake.calls
    assert ["ip", "-n", "ns", "addr", "add", "10.9.9.1/30", "dev", "ipsec1"] in fake.calls
    assert xs.acquire(1, "policy-out", local=L, if_ip="10.9.9.1/30") is dev
    assert len(adds(fake)) == 1 and dev.addrs == ["10.9.9.1/30"]
    assert xs.release("sa-out") is None and "ipsec1" in fake.links
    assert xs.release("policy-out") is dev and "ipsec1" not in fake.links
    assert xs.release("policy-out") is None  # idempotent


def test_sourceip_goes_on_the_device_unless_the_host_has_it() -> None:
    fake = FakeIp(host_addrs={"198.51.100.1"})
    xs = XfrmInterfaces(None, 0, run=fake)
    xs.acquire(1, "a", source_ip=ipaddress.ip_address("198.51.100.1"))
    xs.acquire(1, "b", source_ip=ipaddress.ip_address("198.51.100.2"))
    assert xs.by_id[1].addrs == ["198.51.100.2/32"]


def test_kernel_without_xfrm_interfaces_is_refused_with_the_reason() -> None:
    xs = XfrmInterfaces(None, 0, run=FakeIp(xfrm=False))
    assert "no XFRM interfaces" in xs.unsupported_reason()
    assert "Unknown device type" in xs.unsupported_reason()
    with pytest.raises(BackendError, match="ipsec-interface=1: the kernel has no XFRM"):
        xs.acquire(1, "a", local=L)
    assert xs.by_id == {}


def test_probe_removes_its_device() -> None:
    fake = FakeIp()
    assert XfrmInterfaces(None, 0, run=fake).unsupported_reason() == ""
    assert fake.links == set()


def test_someone_elses_device_is_not_taken_over() -> None:
    xs = XfrmInterfaces(None, 0, run=FakeIp(links={"ipsec1"}))
    with pytest.raises(BackendError, match="exists already and pypluto did not make it"):
        xs.acquire(1, "a", local=L)


def test_unmanaged_uses_the_operators_device_and_leaves_it() -> None:
    fake = FakeIp(links={"ipsec1"})
    xs = XfrmInterfaces(None, 0, run=fake)
    xs.managed = False
    xs.acquire(1, "a", if_ip="10.9.9.1/30")
    assert adds(fake) == []
    xs.release("a")
    assert "ipsec1" in fake.links
    assert ["ip", "addr", "del", "10.9.9.1/30", "dev", "ipsec1"] in fake.calls
    with pytest.raises(BackendError, match="ipsec-interface-managed=no: the device ipsec2"):
        xs.acquire(2, "b")


def test_flush_own_removes_only_devices_with_our_alias() -> None:
    listing = ("5: ipsec1@veth0: <NOARP,UP> mtu 1500 \\    link/none \\    alias pypluto-xfrmi-1\n"
               "6: ipsec2@veth0: <NOARP,UP> mtu 1500 \\    link/none \\    alias pypluto-xfrmi-10\n"
               "7: ipsec3: <NOARP> mtu 1500 \\    link/none\n")
    fake = FakeIp(links={"ipsec1", "ipsec2", "ipsec3"}, listing=listing)
    assert XfrmInterfaces(None, 1, run=fake).flush_own() == 1
    assert fake.links == {"ipsec2", "ipsec3"}


def test_a_moved_sa_keeps_holding_its_device() -> None:
    fake = FakeIp()
    xs = XfrmInterfaces(None, 0, run=fake)
    xs.acquire(1, ("sa", "old"), local=L)
    xs.rename(("sa", "old"), ("sa", "new"))
    assert xs.release(("sa", "old")) is None and "ipsec1" in fake.links
    assert xs.release(("sa", "new")) is not None and "ipsec1" not in fake.links
