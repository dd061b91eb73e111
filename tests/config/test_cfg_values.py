"""Typed values of ipsec.conf(5)."""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.config import values as v


def test_durations() -> None:
    assert v.parse_duration("90") == 90.0
    assert v.parse_duration("5m") == 300.0
    assert v.parse_duration("8h") == 28800.0
    assert v.parse_duration("1d") == 86400.0
    assert v.parse_duration("500ms") == 0.5
    assert v.parse_duration("500", bare_unit=0.001) == 0.5
    for bad in ("", "x", "10seconds", "-1", "1e3", "0xA"):
        with pytest.raises(ValueError):
            v.parse_duration(bad, "k")


def test_bool_percent_int() -> None:
    assert v.parse_bool("yes") and not v.parse_bool("No")
    with pytest.raises(ValueError):
        v.parse_bool("maybe")
    assert v.parse_percent("100%") == 100.0 and v.parse_percent("50") == 50.0
    assert v.parse_bignum("2KiB") == 2048 and v.parse_bignum("0x10") == 16
    with pytest.raises(ValueError):
        v.parse_bignum(str(2**64))
    with pytest.raises(ValueError):
        v.parse_int("7", "k", 8, 9)


def test_hosts_and_subnets() -> None:
    assert v.parse_host("192.0.2.1")[1] == ipaddress.ip_address("192.0.2.1")
    assert v.parse_host("%DefaultRoute") == ("%defaultroute", None)
    assert v.parse_host("vpn.example.org") == ("vpn.example.org", None)
    with pytest.raises(ValueError):
        v.parse_host("bad host")
    assert v.parse_subnet("192.0.2.7/24") == ipaddress.ip_network("192.0.2.0/24")
    assert v.parse_subnet("0.0.0/0") == ipaddress.ip_network("0.0.0.0/0")
    assert v.parse_subnet("%any6") == ipaddress.ip_network("::/0")
    assert len(v.parse_subnets("{10.0.0.0/8, 192.0.2.0/24}")) == 2
    with pytest.raises(ValueError):
        v.parse_subnet("300.1.1.1/8")


def test_protoport() -> None:
    assert v.parse_protoport("17/1701") == (17, 1701)
    assert v.parse_protoport("udp/%any") == (17, 0)
    assert v.parse_protoport("tcp") == (6, 0)
    for bad in ("udp/99999", "nosuchproto/1", "%any/80"):
        with pytest.raises(ValueError):
            v.parse_protoport(bad)
