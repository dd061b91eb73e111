"""VTI devices for route-based VPNs (``vti-interface=``, ``vti-routing=``,
``vti-shared=``, ``leftvti=`` of ipsec.conf(5)), XFRM data plane only.

A VTI device (Linux ``ip_vti`` / ``ip6_vti``) is a tunnel device with an input
key and an output key.  A packet routed onto it gets the output key as its
``skb->mark`` before the XFRM lookup, so it matches the conn's outbound policy
and SA that carry ``mark-out=`` (RFC 4301 §4.4.1: the SPD decides, the mark only
selects which SPD entries may match).  Inbound ESP between the device's outer
addresses is looked up with the input key as the mark, so it finds the SA and
policies that carry ``mark-in=``; the decrypted packet then arrives on the
device, where an operator can firewall or route it.

What this module does, as Libreswan's updown script does for VTI conns:

- when the first Child SA of a conn comes up (before the updown script's
  ``prepare``/``route``/``up``): create the device (``type vti`` for IPv4
  outer addresses, ``vti6`` for IPv6) with ``local`` our address, ``remote`` the
  peer's (none, i.e. any peer, when ``vti-shared=yes``), ``ikey``/``okey`` the
  mark values; turn off the policy check on it (``disable_policy``, the VTI
  already checked the policy with its key); put ``leftvti=`` on it; bring it up;
- with ``vti-routing=yes`` (the default), route the peer's subnet onto it
  (``ip route add PEER_CLIENT dev NAME [src SOURCEIP]``);
- when the last Child SA of that traffic goes (``down``/``delete``/SIGTERM):
  remove the route, and the device once no conn uses it any more.  A device that
  existed before (an operator's) is used and never removed; a route that existed
  before is never removed either.

A device we create carries the interface alias ``pypluto-vti`` (``ip link set NAME
alias``), which lives in the kernel, not in the daemon.  So a device left behind
by a daemon that crashed or was killed is recognised as ours when a conn asks for
it again: it is removed and made anew with this conn's keys and addresses, and it
goes with the conn as usual.  Without the marker it would pass for an
operator's device and stay for ever, with whatever keys the dead daemon gave it.

The commands are argv lists (``ip`` from iproute2), built by pure functions so
the unit tests can check them; ``VtiManager`` runs them.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pypluto.params import IPAddress, IPNetwork, UpdownChild

__all__ = [
    "VtiDevice",
    "VtiManager",
    "create_commands",
    "delete_command",
    "mark_value",
    "route_command",
    "spec_for",
]

IP = "ip"
OWNER_ALIAS = "pypluto-vti"  # ifalias of the devices we make (see the module docstring)
Runner = Callable[[list[str]], Awaitable[tuple[int, str]]]


@dataclass(frozen=True)
class VtiDevice:
    """One VTI device as a conn asks for it."""

    name: str
    local: IPAddress
    remote: IPAddress | None  # None: any peer (vti-shared=yes)
    ikey: int  # mark-in value: inbound SAs/policies are looked up with it
    okey: int  # mark-out value: put on packets routed onto the device
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None  # leftvti=

    @property
    def kind(self) -> str:
        return "vti6" if self.local.version == 6 else "vti"


def mark_value(text: str) -> int:
    """The value of a ``PLUTO_MARK_IN``/``PLUTO_MARK_OUT`` string ``VALUE/0xMASK``."""
    return int(text.partition("/")[0], 0)


def spec_for(child: UpdownChild) -> VtiDevice | None:
    """The VTI device a Child SA's updown facts ask for, or None (no ``vti-interface=``)."""
    if not child.vti_iface:
        return None
    if not child.mark_in or not child.mark_out:
        raise ValueError(f"vti-interface={child.vti_iface} without marks")
    addr = ipaddress.ip_interface(child.vti_ip) if child.vti_ip else None
    return VtiDevice(child.vti_iface, child.me, None if child.vti_shared else child.peer,
                     mark_value(child.mark_in), mark_value(child.mark_out), addr)


def create_commands(dev: VtiDevice) -> list[list[str]]:
    """``ip`` commands that make ``dev`` (link add, address, up), in order."""
    add = [IP, "link", "add", dev.name, "type", dev.kind, "local", str(dev.local)]
    if dev.remote is not None:
        add += ["remote", str(dev.remote)]
    add += ["ikey", str(dev.ikey), "okey", str(dev.okey)]
    cmds = [add, [IP, "link", "set", dev.name, "alias", OWNER_ALIAS]]
    if dev.address is not None:
        cmds.append([IP, "addr", "add", str(dev.address), "dev", dev.name])
    cmds.append([IP, "link", "set", dev.name, "up"])
    return cmds


def delete_command(name: str) -> list[str]:
    return [IP, "link", "del", name]


def route_command(add: bool, dst: IPNetwork, name: str,
                  source: IPAddress | None = None) -> list[str]:
    """``ip route add|del DST dev NAME [src SOURCE]`` (vti-routing=yes)."""
    cmd = [IP, "route", "add" if add else "del", str(dst), "dev", name]
    if source is not None and source.version == dst.version:
        cmd += ["src", str(source)]
    return cmd


def sysctl_settings(dev: VtiDevice) -> list[tuple[str, str]]:
    """The per-device switches, as Libreswan sets them for a VTI: no second policy
    check on the device (the VTI checked the packet against the marked policy
    already), no reverse-path filter (the peer's subnets arrive there, while the
    route back may differ), forwarding on (a gateway forwards what it decrypts)."""
    if dev.local.version == 6:
        base = f"/proc/sys/net/ipv6/conf/{dev.name}/"
        return [(base + "disable_policy", "1"), (base + "forwarding", "1")]
    base = f"/proc/sys/net/ipv4/conf/{dev.name}/"
    return [(base + "disable_policy", "1"), (base + "rp_filter", "0"),
            (base + "forwarding", "1")]


async def run_ip(argv: list[str]) -> tuple[int, str]:
    """Run one command; (exit status, stderr+stdout)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
    except OSError as e:
        return 127, str(e)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


def write_sysctl(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value + "\n")
    except OSError:
        pass  # an older kernel without this switch for vti6: the device still works


@dataclass
class _Owned:
    dev: VtiDevice
    created: bool  # we made it (and so remove it)
    users: set[tuple[str, str, str]] = field(default_factory=set)  # (conn, mine, peer's)


class VtiManager:
    """The VTI devices and routes the daemon made, with who uses them."""

    def __init__(self, log: Callable[[str, str], None] | None = None,
                 run: Runner = run_ip,
                 sysctl: Callable[[str, str], None] = write_sysctl) -> None:
        self._log = log or (lambda msg, level: None)
        self._run = run
        self._sysctl = sysctl
        self.devices: dict[str, _Owned] = {}
        self.routes: dict[tuple[str, str], set[tuple[str, str, str]]] = {}  # ours only
        self._lock = asyncio.Lock()

    async def _probe(self, name: str) -> str | None:
        """None: no such device; ``"ours"``: one we made (an earlier run's leftover);
        ``"theirs"``: an operator's."""
        rc, out = await self._run([IP, "-o", "link", "show", "dev", name])
        if rc != 0:
            return None
        # one line, its parts joined by "\"; the alias is "alias TEXT" at the end
        ours = any(part.strip() == f"alias {OWNER_ALIAS}" for part in out.split("\\"))
        return "ours" if ours else "theirs"

    async def up(self, child: UpdownChild) -> str | None:
        """Device (and route) for a Child SA that comes up; an error text, or None."""
        try:
            dev = spec_for(child)
        except ValueError as e:
            return str(e)
        if dev is None:
            return None
        user = (child.conn, str(child.my_client), str(child.peer_client))
        async with self._lock:
            own = self.devices.get(dev.name)
            if own is None:
                found = await self._probe(dev.name)
                if found == "ours":
                    self._log(f"vti: removing device {dev.name} left by an earlier run",
                              "info")
                    rc, out = await self._run(delete_command(dev.name))
                    if rc != 0:
                        return f"vti: cannot remove the stale device {dev.name}: {out}"
                if found == "theirs":
                    self._log(f"vti: using the existing device {dev.name} (not ours: it "
                              "stays after the conn)", "info")
                    own = _Owned(dev, created=False)
                else:
                    for cmd in create_commands(dev):
                        rc, out = await self._run(cmd)
                        if rc != 0:
                            if cmd[2] != "add" or cmd[1] != "link":
                                await self._run(delete_command(dev.name))
                            return f"vti: {' '.join(cmd)} failed: {out}"
                        if cmd[1] == "link" and cmd[2] == "add":
                            for path, value in sysctl_settings(dev):
                                self._sysctl(path, value)
                    self._log(f"vti: created {dev.kind} device {dev.name} local {dev.local} "
                              f"remote {dev.remote or 'any'} ikey {dev.ikey} okey {dev.okey}",
                              "info")
                    own = _Owned(dev, created=True)
                self.devices[dev.name] = own
            elif own.dev.ikey != dev.ikey or own.dev.okey != dev.okey:
                return (f"vti: device {dev.name} has keys {own.dev.ikey}/{own.dev.okey}, "
                        f"this conn's marks are {dev.ikey}/{dev.okey}")
            own.users.add(user)
            if child.vti_routing:
                rkey = (dev.name, str(child.peer_client))
                if rkey in self.routes:
                    self.routes[rkey].add(user)
                else:
                    cmd = route_command(True, child.peer_client, dev.name, child.my_sourceip)
                    rc, out = await self._run(cmd)
                    if rc == 0:
                        self.routes[rkey] = {user}
                    elif "File exists" in out:
                        self._log(f"vti: a route to {child.peer_client} exists already; "
                                  "left as it is", "info")
                    else:
                        await self._release(user, dev.name)
                        return f"vti: {' '.join(cmd)} failed: {out}"
        return None

    async def down(self, child: UpdownChild) -> None:
        """The last Child SA of this traffic went: its route, then the device if unused."""
        if not child.vti_iface:
            return
        user = (child.conn, str(child.my_client), str(child.peer_client))
        async with self._lock:
            await self._release(user, child.vti_iface)

    async def _release(self, user: tuple[str, str, str], name: str) -> None:
        for rkey in [k for k, users in self.routes.items() if k[0] == name and user in users]:
            users = self.routes[rkey]
            users.discard(user)
            if not users:
                del self.routes[rkey]
                rc, out = await self._run([IP, "route", "del", rkey[1], "dev", name])
                if rc != 0:
                    self._log(f"vti: cannot remove the route {rkey[1]} dev {name}: {out}",
                              "error")
        own = self.devices.get(name)
        if own is None:
            return
        own.users.discard(user)
        if own.users:
            return
        del self.devices[name]
        if own.created:
            rc, out = await self._run(delete_command(name))
            if rc != 0:
                self._log(f"vti: cannot remove the device {name}: {out}", "error")
            else:
                self._log(f"vti: removed device {name}", "info")

    async def close(self) -> None:
        """Shutdown: every route and device we made goes (the down runs did most)."""
        async with self._lock:
            for (name, dst) in list(self.routes):
                await self._run([IP, "route", "del", dst, "dev", name])
            self.routes.clear()
            for name, own in list(self.devices.items()):
                if own.created:
                    await self._run(delete_command(name))
            self.devices.clear()
