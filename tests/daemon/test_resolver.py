"""``daemon/resolver.py``: the host-name lookup the engine hands out for a redirect to a
gateway named by FQDN (RFC 5685 §10)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from pypluto.daemon import resolver


def test_resolve_host_returns_addresses_without_duplicates(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.3", 0)),
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fe80::1%eth0", 0, 0, 2)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.3", 0)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    assert resolver.resolve_host("gw-b.example") == [
        ipaddress.ip_address("192.0.2.3"), ipaddress.ip_address("fe80::1")]


def test_a_name_that_does_not_resolve_raises() -> None:
    with pytest.raises(OSError):
        resolver.resolve_host("no-such-gateway.invalid")  # RFC 6761 §6.4: never resolves


def test_localhost_resolves() -> None:
    assert ipaddress.ip_address("127.0.0.1") in resolver.resolve_host("localhost")
