"""XFRM interfaces ``ipsecN`` for ``ipsec-interface=N`` conns on the XFRM plane.

Libreswan 4/5 give a route-based conn an XFRM interface (Linux ``xfrm_interface``,
``ip link add ipsecN type xfrm dev PHYS if_id N``): its SAs and policies carry
``XFRMA_IF_ID`` N, so a packet the operator routes onto ``ipsecN`` is looked up
in the SPD with if_id N (RFC 4301 §4.4.1: the SPD still decides, the if_id only
selects which entries may match) and decrypted traffic of those SAs comes out
of ``ipsecN``, where it can be routed and firewalled.

What this module does, as the userspace plane's ``xifaces`` does with TUN devices:

* the device exists while an SA or a policy of the number is installed; it is
  shared by every conn with that N (reference-counted by SA and policy keys) and
  removed when the last one goes (``down``/``delete``/SIGTERM);
* ``interface-ip=ADDR/PREFIX`` is put on it, and so is ``leftsourceip=`` (as a
  host address) unless the host has it already;
* a device we made carries the alias ``pypluto-xfrmi-<instance>``, so the start
  of the next run removes what a crashed run left (``flush_own``);
* ``ipsec-interface-managed=no``: the operator makes the device; we attach to it,
  refuse when it does not exist, and leave it (minus the addresses we added);
* no route: the operator routes onto the device (as on the userspace plane).

Whether the kernel has XFRM interfaces is probed once (``probe``: an ``ip link add
... type xfrm`` of a throw-away device); without them an ``ipsec-interface=`` conn
is refused with that reason.

The commands are argv lists for ``ip`` (iproute2), built by pure functions so the
unit tests can check them; ``XfrmInterfaces`` runs them.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from pypluto.params import IPAddress

from ..base import BackendError

__all__ = [
    "PREFIX",
    "XfrmInterfaces",
    "alias_for",
    "create_command",
    "device_name",
]

PREFIX = "ipsec"
IP = "ip"
Runner = Callable[[list[str]], tuple[int, str]]


def device_name(if_id: int) -> str:
    """``ipsec-interface=N`` -> ``ipsecN`` (Libreswan's naming)."""
    return f"{PREFIX}{if_id}"


def alias_for(instance: int) -> str:
    """The ``ifalias`` that marks a device as made by this daemon instance."""
    return f"pypluto-xfrmi-{instance}"


def ip_argv(netns: str | None, *args: str) -> list[str]:
    """``ip [-n NETNS] ARGS...``."""
    return [IP, *(["-n", netns] if netns else []), *args]


def create_command(name: str, if_id: int, phys: str | None,
                   netns: str | None = None) -> list[str]:
    """``ip link add NAME type xfrm [dev PHYS] if_id N``."""
    argv = ip_argv(netns, "link", "add", name, "type", "xfrm")
    if phys:
        argv += ["dev", phys]
    return argv + ["if_id", str(if_id)]


def run_ip(argv: list[str]) -> tuple[int, str]:
    """Run one command; (exit status, stderr+stdout)."""
    try:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return res.returncode, res.stdout.decode(errors="replace").strip()


@dataclass(eq=False)
class XfrmDevice:
    """One ``ipsecN`` device and who holds it."""

    if_id: int
    name: str
    created: bool  # we made it (and so remove it)
    users: set[object] = field(default_factory=set)  # SA / policy keys that hold it
    addrs: list[str] = field(default_factory=list)  # addresses we added


class XfrmInterfaces:
    """The ipsecN XFRM devices in use, reference-counted by the SAs and policies on them.

    Thread-safe (the expire listener releases from its own thread)."""

    def __init__(self, netns: str | None = None, instance: int = 0,
                 log: Callable[[str], None] | None = None, run: Runner = run_ip) -> None:
        self.netns = netns
        self.alias = alias_for(instance)
        self.managed = True
        self._log = log or (lambda _m: None)
        self._run = run
        self._lock = threading.RLock()
        self.by_id: dict[int, XfrmDevice] = {}
        self._probed: str | None = None  # "" = supported, else why not

    # --- probe -------------------------------------------------------------------
    def unsupported_reason(self) -> str:
        """"" when the kernel makes XFRM interfaces, else why it cannot (probed once)."""
        with self._lock:
            if self._probed is None:
                self._probed = self._probe()
            return self._probed

    def _probe(self) -> str:
        name = f"ppxfrmi{os.getpid() % 100000}"
        rc, out = self._run(create_command(name, 0xFFFFFFF0 - os.getpid() % 0xFFFF, None,
                                           self.netns))
        if rc != 0:
            return (f"the kernel has no XFRM interfaces (ip link add type xfrm: "
                    f"{out or 'exit status ' + str(rc)})")
        self._run(ip_argv(self.netns, "link", "del", name))
        return ""

    # --- devices -------------------------------------------------------------------
    def _exists(self, name: str) -> bool:
        rc, _ = self._run(ip_argv(self.netns, "link", "show", "dev", name))
        return rc == 0

    def _phys_of(self, local: IPAddress | None) -> str | None:
        """The device that holds our end's address (``dev PHYS`` of the xfrm link)."""
        if local is None:
            return None
        rc, out = self._run(ip_argv(self.netns, "-o", "addr", "show", "to", str(local)))
        if rc != 0 or not out:
            return None
        fields = out.splitlines()[0].split()
        return fields[1].split("@")[0] if len(fields) > 1 else None

    def acquire(self, if_id: int, user: object, *, local: IPAddress | None = None,
                if_ip: str | None = None, source_ip: IPAddress | None = None) -> XfrmDevice:
        """The device of ``if_id`` (made if new), held by ``user``; BackendError if it
        cannot be made.  ``if_ip`` (interface-ip=) and ``source_ip`` (leftsourceip=,
        as a host address, when the host has it not) are put on it."""
        with self._lock:
            dev = self.by_id.get(if_id)
            if dev is None:
                dev = self._open(if_id, local)
                self.by_id[if_id] = dev
            addrs = [a for a in (if_ip, self._host_addr(source_ip)) if a]
            for a in addrs:
                if a not in dev.addrs:
                    rc, out = self._run(ip_argv(self.netns, "addr", "add", a, "dev", dev.name))
                    if rc == 0:
                        dev.addrs.append(a)
                    elif "File exists" not in out and "exists" not in out:
                        self._log(f"xfrm: cannot add {a} to {dev.name}: {out}")
            dev.users.add(user)
            return dev

    def _host_addr(self, source_ip: IPAddress | None) -> str | None:
        if source_ip is None:
            return None
        rc, out = self._run(ip_argv(self.netns, "-o", "addr", "show", "to", str(source_ip)))
        if rc == 0 and out:
            return None  # the host has it already
        return f"{source_ip}/{source_ip.max_prefixlen}"

    def _open(self, if_id: int, local: IPAddress | None) -> XfrmDevice:
        name = device_name(if_id)
        exists = self._exists(name)
        if not self.managed:
            if not exists:
                raise BackendError(f"ipsec-interface-managed=no: the device {name} does not "
                                   f"exist (ip link add {name} type xfrm if_id {if_id})")
            self._log(f"xfrm: using the operator's device {name}")
            return XfrmDevice(if_id, name, created=False)
        if exists:
            raise BackendError(f"ipsec-interface={if_id}: a device {name} exists already and "
                               "pypluto did not make it (ipsec-interface-managed=no uses it)")
        reason = self.unsupported_reason()
        if reason:
            raise BackendError(f"ipsec-interface={if_id}: {reason}")
        cmd = create_command(name, if_id, self._phys_of(local), self.netns)
        rc, out = self._run(cmd)
        if rc != 0:
            raise BackendError(f"ipsec-interface={if_id}: {' '.join(cmd)} failed: {out}")
        for step in (("link", "set", "dev", name, "alias", self.alias),
                     ("link", "set", "dev", name, "up")):
            rc, out = self._run(ip_argv(self.netns, *step))
            if rc != 0:
                self._run(ip_argv(self.netns, "link", "del", name))
                raise BackendError(f"ipsec-interface={if_id}: ip {' '.join(step)} failed: {out}")
        self._log(f"xfrm: created XFRM interface {name} if_id {if_id}")
        return XfrmDevice(if_id, name, created=True)

    def release(self, user: object) -> XfrmDevice | None:
        """``user`` lets go; the device it leaves unused is removed (and returned)."""
        with self._lock:
            for if_id, dev in list(self.by_id.items()):
                if user not in dev.users:
                    continue
                dev.users.discard(user)
                if dev.users:
                    return None
                del self.by_id[if_id]
                self._close(dev)
                return dev
        return None

    def rename(self, old: object, new: object) -> None:
        """A holder got a new key (an SA moved by MOBIKE): it holds the same device."""
        with self._lock:
            for dev in self.by_id.values():
                if old in dev.users:
                    dev.users.discard(old)
                    dev.users.add(new)

    def _close(self, dev: XfrmDevice) -> None:
        if dev.created:
            rc, out = self._run(ip_argv(self.netns, "link", "del", dev.name))
            if rc != 0:
                self._log(f"xfrm: cannot remove {dev.name}: {out}")
            else:
                self._log(f"xfrm: removed XFRM interface {dev.name}")
            return
        for a in dev.addrs:  # the operator's device stays; only our addresses go
            self._run(ip_argv(self.netns, "addr", "del", a, "dev", dev.name))
        self._log(f"xfrm: released the operator's device {dev.name}")

    def close_all(self) -> int:
        """Every device we hold goes (shutdown); returns how many."""
        with self._lock:
            devs = list(self.by_id.values())
            self.by_id.clear()
        for dev in devs:
            self._close(dev)
        return len(devs)

    def flush_own(self) -> int:
        """Remove the xfrm devices carrying our alias (a crashed run's too)."""
        n = self.close_all()
        rc, out = self._run(ip_argv(self.netns, "-o", "link", "show", "type", "xfrm"))
        if rc != 0:
            return n
        for line in out.splitlines():
            fields = line.split()
            if len(fields) < 2 or not re.search(rf"alias {re.escape(self.alias)}(\s|$)", line):
                continue
            name = fields[1].rstrip(":").split("@")[0]
            if self._run(ip_argv(self.netns, "link", "del", name))[0] == 0:
                n += 1
        return n
