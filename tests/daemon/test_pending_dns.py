"""The daemon's pending-DNS loop (Libreswan's pending-DDNS event): the peers' host names
that did not resolve are looked up again off the loop, and the registry initiates the
auto=start conns that now have an address (``Registry.retry_pending_dns``)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import types

from pypluto.daemon.server import Daemon


class _Registry:
    def __init__(self) -> None:
        self.dns: dict[str, list[ipaddress.IPv4Address]] = {}
        self.lookups: list[tuple[str, bool]] = []  # (name, on the loop's thread?)
        self.retried: list[list[ipaddress.IPv4Address]] = []
        self.loop_thread = threading.get_ident()

    def pending_dns(self) -> list[str]:
        return [] if self.retried and self.retried[-1] else ["peer.example.invalid"]

    def resolver(self, name: str) -> list[ipaddress.IPv4Address]:
        self.lookups.append((name, threading.get_ident() == self.loop_thread))
        if name not in self.dns:
            raise OSError("Name or service not known")
        return self.dns[name]

    def retry_pending_dns(self, answer) -> list[str]:  # noqa: ANN001
        try:
            got = answer("peer.example.invalid")
        except OSError:
            got = []
        self.retried.append(got)
        return ["c"] if got else []


def test_loop_looks_names_up_off_the_loop_and_retries_until_resolved() -> None:
    reg = _Registry()
    fake = types.SimpleNamespace(registry=reg, _shutting_down=False)

    async def main() -> None:
        task = asyncio.ensure_future(Daemon._pending_dns_loop(fake, 0.01))  # type: ignore[arg-type]
        while len(reg.retried) < 2:
            await asyncio.sleep(0.01)
        reg.dns["peer.example.invalid"] = [ipaddress.ip_address("192.0.2.2")]
        while not reg.retried[-1]:
            await asyncio.sleep(0.01)
        n = len(reg.lookups)
        await asyncio.sleep(0.05)  # nothing pending any more: no more lookups
        assert len(reg.lookups) == n
        fake._shutting_down = True
        await asyncio.wait_for(task, 1)

    asyncio.run(main())
    assert reg.retried[0] == [] and reg.retried[-1] == [ipaddress.ip_address("192.0.2.2")]
    assert reg.lookups and not any(on_loop for _name, on_loop in reg.lookups)
