"""``daemon/mobility.py``: the address watcher that starts MOBIKE (RFC 4555 §3.5)."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace
from typing import Any

import pytest

from pypluto.daemon import mobility
from pypluto.daemon.interfaces import LocalAddress

OLD = ipaddress.ip_address("198.51.100.2")
NEW = ipaddress.ip_address("198.51.100.130")
PEER = ipaddress.ip_address("192.0.2.2")


class FakeDriver:
    """The engine's status (one IKE SA from OLD) and ``run``, which records the calls."""

    def __init__(self) -> None:
        ike = SimpleNamespace(local=f"{OLD}:4500", remote=f"{PEER}:4500")
        self.engine = SimpleNamespace(
            status=lambda now: SimpleNamespace(ike_sas=[ike]),
            local_address_changed=lambda old, new, now: [("moved", old, new)])
        self.calls: list[Any] = []
        self.lines: list[str] = []
        self.log = SimpleNamespace(log=lambda msg, level="info": self.lines.append(msg))

    def run(self, call: Any, where: str = "") -> None:
        self.calls.append(call(self.engine))


def _host(monkeypatch: pytest.MonkeyPatch, addrs: list[ipaddress.IPv4Address]) -> None:
    monkeypatch.setattr(mobility, "local_addresses",
                        lambda: [LocalAddress("lan", 2, a) for a in addrs])


def test_a_vanished_address_moves_its_ike_sas(monkeypatch: pytest.MonkeyPatch) -> None:
    _host(monkeypatch, [OLD, NEW])
    monkeypatch.setattr(mobility, "source_towards", lambda peer: NEW)
    driver = FakeDriver()
    w = mobility.AddressWatcher(lambda: None, driver, lambda: 1.0)
    w.check()
    assert driver.calls == []  # nothing changed
    _host(monkeypatch, [NEW])
    w.check()
    assert driver.calls == [[("moved", OLD, NEW)]]
    w.check()
    assert len(driver.calls) == 1  # once


def test_a_poll_that_fails_half_way_is_done_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rescan of the IKE sockets raised (once): the next poll must still see OLD as
    gone and move the IKE SA; it used to have remembered the new address set already,
    and the move was lost for good."""
    _host(monkeypatch, [OLD, NEW])
    monkeypatch.setattr(mobility, "source_towards", lambda peer: NEW)
    driver = FakeDriver()
    fails = [OSError(99, "Cannot assign requested address")]

    def rescan() -> None:
        if fails:
            raise fails.pop()

    w = mobility.AddressWatcher(rescan, driver, lambda: 1.0)
    _host(monkeypatch, [NEW])
    with pytest.raises(OSError):
        w.check()
    assert driver.calls == []
    w.check()
    assert driver.calls == [[("moved", OLD, NEW)]]


def test_a_failed_poll_is_logged_once(monkeypatch: pytest.MonkeyPatch) -> None:
    driver = FakeDriver()
    _host(monkeypatch, [OLD])
    w = mobility.AddressWatcher(lambda: None, driver, lambda: 1.0)
    w._report("OSError: boom")
    w._report("OSError: boom")
    assert driver.lines == ["MOBIKE: local address check failed (OSError: boom); trying again"]
