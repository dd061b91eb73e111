"""A rekeyed inbound SA of the userspace plane (retire_sa): gone from the table at once,
still decrypting for a grace period, then dropped (RFC 7296 §2.8, RFC 4303 §3.4.2)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import struct
import threading
import time

import pytest
from testsupport import udp_pair

from pypluto.iana import Encr
from pypluto.kernel import esp
from pypluto.kernel.userspace import backend as be
from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.params import SAParams

A = ipaddress.ip_address
PEER, US = A("192.0.2.1"), A("192.0.2.2")


def _sa(spi: int, direction: str, key: bytes) -> SAParams:
    src, dst = (PEER, US) if direction == "in" else (US, PEER)
    return SAParams(src=src, dst=dst, spi=spi, direction=direction, mode="tunnel",
                    encr_id=Encr.AES_GCM_16, encr_key=key, replay_window=64)


def _inner(ident: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, ident, 0, 64, 17, 0,
                       A("198.51.100.1").packed, A("203.0.113.1").packed) + bytes(8)


def test_the_table_serves_a_retired_sa_to_the_packet_paths_only_until_reaped() -> None:
    t = SATable()
    key = os.urandom(36)
    t.add(_sa(0x1001, "in", key), lambda e: None, None)
    t.add(_sa(0x2001, "out", key), None, None)
    state = t.get(US, 0x1001)
    assert state is not None
    assert t.retire(US, 0x1001, until=100.0) is state
    assert t.get(US, 0x1001) is None and t.stats(US, 0x1001) is None and len(t) == 1
    assert t.by_spi[0x1001] is state and state.on_expire is None
    assert t.reap(99.0) == 100.0 and t.by_spi.get(0x1001) is state
    assert t.reap(100.0) is None and 0x1001 not in t.by_spi and not t.retired
    # an outbound SA is simply removed
    assert t.retire(PEER, 0x2001, until=100.0) is not None and len(t) == 0 and not t.retired
    # a new SA under the same SPI is not dropped by the old one's deadline
    t.add(_sa(0x3001, "in", key), None, None)
    t.retire(US, 0x3001, until=5.0)
    fresh = t.add(_sa(0x3001, "in", os.urandom(36)), None, None)
    t.reap(10.0)
    assert t.by_spi[0x3001] is fresh and t.get(US, 0x3001) is fresh


@pytest.fixture
def plane(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Only what retire_sa, the raw drain and the TUN write touch; a datagram socket
    pair stands in for the TUN device."""
    monkeypatch.setattr(be, "RETIRE_GRACE", 0.3)
    tun_r, tun_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun_r.setblocking(False)
    p = object.__new__(UserspaceBackend)
    p._lock = threading.RLock()
    p._sas = SATable()
    p._xin = {}
    p._stop = False
    p._reaper = None
    p._flow, p._pflow = {}, {}
    p._xifs = be.IpsecInterfaces()
    p.counters = PlaneCounters()
    p._tunq = None
    p.offload = False
    p._tun_fd = p._tun_prio = tun_w.fileno()
    yield p, tun_r
    if p._reaper is not None:
        p._reaper.cancel()
    tun_r.close()
    tun_w.close()


def _drain(p: UserspaceBackend, tx: socket.socket, rx: socket.socket, wires: list[bytes]
           ) -> None:
    for w in wires:
        tx.sendto(w, rx.getsockname())
    time.sleep(0.05)
    # version 6: a raw IPv6 socket, like this UDP one, returns no IP header
    p._drain_raw(rx, 6, memoryview(bytearray(65536)), 64)  # type: ignore[arg-type]


def test_packets_on_a_rekeyed_sa_are_delivered_within_the_grace_only(plane) -> None:  # type: ignore[no-untyped-def]
    p, tun = plane
    key = os.urandom(36)
    p._sas.add(_sa(0x1001, "in", key), None, None)
    # the peer's half of the same SA: PEER -> US
    sender = esp.make_sa(dataclasses.replace(_sa(0x1001, "in", key), direction="out"))
    assert isinstance(sender, esp.OutboundSA)
    tx, rx = udp_pair()
    try:
        p.retire_sa(US, 0x1001)
        assert p.get_sa_stats(US, 0x1001) is None  # the status sees it gone at once
        assert p._reaper is not None
        _drain(p, tx, rx, [sender.encap(_inner(1)), sender.encap(_inner(2))])  # type: ignore[list-item]
        got = [tun.recv(100) for _ in range(2)]
        assert [struct.unpack_from("!H", g, 4)[0] for g in got] == [1, 2]
        assert p.counters.unknown_spi == 0
        time.sleep(0.5)  # the reaper ran: the SPI is unknown now
        assert 0x1001 not in p._sas.by_spi and p._reaper is None
        _drain(p, tx, rx, [sender.encap(_inner(3))])  # type: ignore[list-item]
        assert p.counters.unknown_spi == 1
        with pytest.raises(BlockingIOError):
            tun.recv(100)
    finally:
        tx.close()
        rx.close()


def test_a_plain_delete_drops_at_once(plane) -> None:  # type: ignore[no-untyped-def]
    p, _tun = plane
    p._sas.add(_sa(0x1001, "in", os.urandom(36)), None, None)
    p.del_sa(US, 0x1001)
    assert 0x1001 not in p._sas.by_spi and p._reaper is None
