"""The ``ipsecN`` devices of route-based conns (``ipsec-interface=N``) on the userspace plane.

Libreswan gives a conn with ``ipsec-interface=N`` an XFRM interface ``ipsecN``
(if_id N): traffic the operator routes onto it is encrypted with the SA whose
selectors match, and decrypted traffic of those SAs comes out of it, so the
operator routes and firewalls on the device.  The userspace plane does the
same with one TUN device per N, shared by every conn with that N:

* the device exists while an SA or a policy of the number is installed (it is
  opened when the first comes, at route time for a trap, and closed when the
  last goes); a TUN device that is not persistent vanishes with its descriptor,
  so a crashed daemon leaves none behind;
* ``interface-ip=ADDR/PREFIX`` (the local end's) is put on it, and so is
  ``leftsourceip=`` (as a host address) unless the host already has it: with no
  route of ours to carry it as a preferred source, the device holds it;
* with ``ipsec-interface-managed=no`` the operator creates the device (a
  persistent TUN device, ``ip tuntap add dev ipsecN mode tun``): the plane
  attaches to it, refuses when it does not exist, and leaves it (minus any
  address it added) when the last SA goes;
* the plane installs no route for these conns: the operator routes.

Control-plane only: the packet paths are in :mod:`.backend`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from pypluto.kernel.base import BackendError
from pypluto.kernel.userspace import iproute
from pypluto.kernel.userspace.selectors import OutboundPolicies
from pypluto.kernel.userspace.tun import open_tun

log = logging.getLogger("pypluto.kernel.userspace")

PREFIX = "ipsec"
DEFAULT_MTU = 1400


def device_name(if_id: int) -> str:
    """``ipsec-interface=N`` -> ``ipsecN`` (Libreswan's naming)."""
    return f"{PREFIX}{if_id}"


@dataclass(eq=False)
class IpsecInterface:
    """One ``ipsecN`` TUN device and what the packet threads need of it."""

    if_id: int
    name: str
    fd: int
    managed: bool  # we created it (it goes with the descriptor)
    users: set[object] = field(default_factory=set)  # SA / policy keys that hold it
    addrs: list[str] = field(default_factory=list)  # interface-ip= addresses we added
    out: OutboundPolicies = field(default_factory=OutboundPolicies)
    flow: dict[bytes, object] = field(default_factory=dict)  # outbound flow cache
    pflow: dict[bytes, object] = field(default_factory=dict)  # by ports
    closed: bool = False


def _exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


class IpsecInterfaces:
    """The ipsecN devices in use, reference-counted by the SAs and policies on them."""

    def __init__(self, managed: bool = True, mtu: int = DEFAULT_MTU) -> None:
        self.managed = managed
        self.mtu = mtu
        self.by_id: dict[int, IpsecInterface] = {}

    def acquire(self, if_id: int, addrs: list[str], user: object
                ) -> tuple[IpsecInterface, bool]:
        """The device of ``if_id`` (opened if new) with ``addrs`` (ADDR/PREFIX: the
        interface-ip=, a leftsourceip= as a host address), held by ``user``;
        returns (device, created).  The addresses stay until the device goes."""
        x = self.by_id.get(if_id)
        created = x is None
        if x is None:
            x = self._open(if_id)
            self.by_id[if_id] = x
        for a in addrs:
            if a in x.addrs:
                continue
            try:
                self._add_addr(x, a)
            except BackendError:
                if created and not x.users:
                    self._close(x)
                raise
        x.users.add(user)
        return x, created

    def release(self, user: object) -> IpsecInterface | None:
        """``user`` no longer holds its device; returns the device if it was closed."""
        for x in list(self.by_id.values()):
            if user in x.users:
                x.users.discard(user)
                if not x.users:
                    self._close(x)
                    return x
                return None
        return None

    def close_all(self) -> list[IpsecInterface]:
        gone = list(self.by_id.values())
        for x in gone:
            x.users.clear()
            self._close(x)
        return gone

    def _open(self, if_id: int) -> IpsecInterface:
        name = device_name(if_id)
        if not self.managed and not _exists(name):
            raise BackendError(f"ipsec-interface-managed=no: the device {name} does not exist "
                               f"(create it first, e.g. ip tuntap add dev {name} mode tun)")
        if self.managed and _exists(name):
            raise BackendError(f"ipsec-interface={if_id}: a device {name} already exists "
                               "and pypluto did not make it (ipsec-interface-managed=no "
                               "attaches to an existing TUN device)")
        fd, kname, _off = open_tun(name, offload=False)
        x = IpsecInterface(if_id, kname, fd, self.managed)
        try:
            if self.managed:
                iproute.ip("link", "set", "dev", kname, "mtu", str(self.mtu), "up")
        except BackendError:
            os.close(fd)
            raise
        _rp_filter_off(kname)
        log.info("ipsec-interface=%d: TUN device %s (%s)", if_id, kname,
                 "created" if self.managed else "the operator's")
        return x

    def _add_addr(self, x: IpsecInterface, if_ip: str) -> None:
        fam = "-6" if ":" in if_ip else "-4"
        # an address the operator already put there is theirs: neither added nor removed
        if iproute.ip(fam, "addr", "add", if_ip, "dev", x.name, check=False):
            x.addrs.append(if_ip)
        elif not _has_addr(x.name, if_ip):
            raise BackendError(f"cannot add interface-ip={if_ip} to {x.name}")

    def _close(self, x: IpsecInterface) -> None:
        if x.closed:
            return
        x.closed = True
        self.by_id.pop(x.if_id, None)
        if not x.managed:  # the operator's device stays; only our addresses go
            for a in x.addrs:
                iproute.ip("-6" if ":" in a else "-4", "addr", "del", a, "dev", x.name,
                           check=False)
        try:
            os.close(x.fd)  # a non-persistent TUN device vanishes with it
        except OSError:
            pass
        log.info("ipsec-interface=%d: %s %s", x.if_id, x.name,
                 "deleted" if x.managed else "released")


def _has_addr(name: str, if_ip: str) -> bool:
    import subprocess

    try:
        r = subprocess.run([iproute.IP, "-o", "addr", "show", "dev", name],
                           capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return f" {if_ip} " in r.stdout


def _rp_filter_off(ifname: str) -> None:
    """Decrypted packets come out of ipsecN from addresses the operator may route
    elsewhere (a host-to-host SA whose peer is routed by the physical link).  On a
    device without an IPv4 address (no interface-ip=, or an IPv6 one) Linux's loose
    mode (RFC 3704 §2.2, value 2) drops those as strict mode does (the "no address"
    last resort of its source validation), so the device gets 0, as the plane's TUN
    device (``backend._rp_filter_off``) and Libreswan's VTI devices: the SA's selector
    check (RFC 4301 §5.2 step 4) rejects spoofed inner sources.  The kernel applies
    the larger of this and net.ipv4.conf.all.rp_filter."""
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter", "w") as f:
            f.write("0")
    except OSError:
        log.warning("cannot set rp_filter on %s; decrypted packets from sources routed "
                    "elsewhere may be dropped by reverse-path filtering", ifname)
