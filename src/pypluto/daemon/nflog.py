"""NFLOG logging of IPsec traffic: ``nflog=`` (conn) and ``nflog-all=`` (config setup).

Libreswan leaves this to iptables: its updown script adds, for a conn with
``nflog=N``, one rule in OUTPUT and one in INPUT that copy the conn's cleartext
packets to netlink log group N (``-j NFLOG --nflog-group N --nflog-prefix
CONN``), and ``ipsec checknflog`` adds two for ``nflog-all=N`` that copy all
IPsec traffic (``--nflog-prefix all-ipsec``).  ``tcpdump -i nflog:N`` then shows
the traffic in the clear.  pypluto adds and removes the same rules itself:

- on the XFRM plane with Libreswan's matches: ``-m policy --dir out --pol ipsec``
  (the packet will be protected by a policy) and ``--dir in`` (it arrived
  protected);
- on the userspace plane the kernel sees no IPsec policy: the cleartext leaves
  and arrives on the plane's TUN device, so the rules match ``-o TUN`` / ``-i TUN``.

A conn's rules name its selectors (``-s``/``-d``, ``iptables`` or ``ip6tables``
by family) and come with its first Child SA for that traffic (the updown
``up``) and go with the last (``down``).  The global rules come at start and go
at exit.  A rule that cannot be added fails the Child SA (enforce or refuse: a
conn that asks for its traffic to be logged never runs unlogged).

The commands are argv lists built by pure functions; ``NflogManager`` runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from pypluto.daemon.vti import run_ip
from pypluto.params import UpdownChild

__all__ = ["ALL_PREFIX", "NflogManager", "conn_rules", "global_rules"]

ALL_PREFIX = "all-ipsec"  # Libreswan's prefix for nflog-all=
Runner = Callable[[list[str]], Awaitable[tuple[int, str]]]


def _tool(version: int) -> str:
    return "ip6tables" if version == 6 else "iptables"


def _matches(direction: str, tun: str | None) -> list[str]:
    """The match of protected traffic: an IPsec policy (XFRM), else the TUN device."""
    if tun:
        return ["-o", tun] if direction == "out" else ["-i", tun]
    return ["-m", "policy", "--dir", direction, "--pol", "ipsec"]


def conn_rules(child: UpdownChild, group: int, tun: str | None) -> list[list[str]]:
    """The two rules of one selector pair, without the action flag (``-I``/``-D``
    goes after the tool's name): OUTPUT for our client to the peer's, INPUT back."""
    tool, log = _tool(child.my_client.version), [
        "-j", "NFLOG", "--nflog-group", str(group), "--nflog-prefix", child.conn]
    return [[tool, "OUTPUT", *_matches("out", tun), "-s", str(child.my_client), "-d",
             str(child.peer_client), *log],
            [tool, "INPUT", *_matches("in", tun), "-s", str(child.peer_client), "-d",
             str(child.my_client), *log]]


def global_rules(group: int, tun: str | None) -> list[list[str]]:
    """``nflog-all=``: every protected packet each way, IPv4 and IPv6."""
    log = ["-j", "NFLOG", "--nflog-group", str(group), "--nflog-prefix", ALL_PREFIX]
    return [[tool, chain, *_matches(d, tun), *log]
            for tool in ("iptables", "ip6tables")
            for chain, d in (("OUTPUT", "out"), ("INPUT", "in"))]


def _with(action: str, rule: list[str]) -> list[str]:
    return [rule[0], "-w", action, *rule[1:]]


class NflogManager:
    """Adds and removes the rules; remembers what it added, to remove exactly that."""

    def __init__(self, log: Callable[[str, str], None] | None = None,
                 run: Runner = run_ip) -> None:
        self._log = log or (lambda m, lvl: None)
        self._run = run
        self.tun: str | None = None  # the userspace plane's device (set by the daemon)
        self._added: dict[tuple[str, ...], int] = {}  # rule -> how many ups added it
        self._global: list[list[str]] = []

    async def _add(self, rule: list[str]) -> str | None:
        rc, out = await self._run(_with("-I", rule))
        if rc:
            return f"{' '.join(rule[:2])} NFLOG rule not added: {out or f'exit {rc}'}"
        return None

    async def _delete(self, rule: list[str]) -> None:
        rc, out = await self._run(_with("-D", rule))
        if rc:
            self._log(f"nflog: {' '.join(rule[:2])} rule not removed: {out or rc}", "warning")

    def _device(self, child: UpdownChild) -> str | None:
        """The userspace plane's device of this traffic (``ipsecN`` for
        ``ipsec-interface=``); None on XFRM."""
        return (child.virt_interface or self.tun) if self.tun else None

    async def up(self, child: UpdownChild) -> str | None:
        """The conn's rules for this selector pair; why not, or None."""
        added: list[list[str]] = []
        for rule in conn_rules(child, child.nflog, self._device(child)):
            why = await self._add(rule)
            if why:
                for done in added:
                    await self._delete(done)
                return why
            added.append(rule)
        for rule in added:
            key = tuple(rule)
            self._added[key] = self._added.get(key, 0) + 1
        return None

    async def down(self, child: UpdownChild) -> None:
        """Take back what ``up`` added for this selector pair (one rule per ``-I``)."""
        for rule in conn_rules(child, child.nflog, self._device(child)):
            key = tuple(rule)
            n = self._added.get(key, 0)
            if not n:
                continue
            if n == 1:
                del self._added[key]
            else:
                self._added[key] = n - 1
            await self._delete(rule)

    async def start_all(self, group: int) -> str | None:
        """``nflog-all=``: the global rules; why not, or None."""
        for rule in global_rules(group, self.tun):
            why = await self._add(rule)
            if why:
                await self.close()
                return why
            self._global.append(rule)
        return None

    async def close(self) -> None:
        """Remove every rule still in place (at exit)."""
        for key, n in list(self._added.items()):
            for _ in range(n):
                await self._delete(list(key))
        self._added.clear()
        for rule in self._global:
            await self._delete(rule)
        self._global.clear()
