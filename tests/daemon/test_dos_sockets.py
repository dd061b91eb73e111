"""The receive path under an IKE_SA_INIT flood (issue 13; ``daemon/sockets.py``).

Messages for existing IKE SAs (and IKE_SA_INITs that return a COOKIE) are handed
to the engine before new IKE_SA_INITs; these wait newest first, at most
``MAX_PENDING_INIT``; the sockets get a large receive buffer.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

import pytest
from testsupport import NullLog

from pypluto.daemon import sockets as sk
from pypluto.ike.actions import Endpoint


def _msg(exchange: int, tag: int, response: bool = False, cookie: bool = False) -> bytes:
    first = 41 if cookie else 33
    body = struct.pack("!BBHBBH", 0, 0, 8 + 17, 0, 0, 16390) + bytes(17) if cookie else b""
    hdr = struct.pack("!8s8sBBBBII", tag.to_bytes(8, "big"), bytes(8), first, 0x20, exchange,
                      0x28 if response else 0x08, 0, 28 + len(body))
    return hdr + body


@pytest.fixture
def rig():  # noqa: ANN201
    loop = asyncio.new_event_loop()
    us = sk.UDPSockets(NullLog(), 500, 4500, None)  # type: ignore[arg-type]
    us.loop = loop
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us._grow_rcvbuf(rx)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    iface = sk.IKEInterface("lo", ipaddress.ip_address("127.0.0.1"), rx.getsockname()[1], rx,
                            False)
    got: list[bytes] = []
    us.on_ike = lambda data, local, remote: got.append(data)
    yield us, iface, tx, got, loop
    rx.close()
    tx.close()
    loop.close()


def _send(tx: socket.socket, iface: sk.IKEInterface, data: bytes) -> None:
    tx.sendto(data, ("127.0.0.1", iface.port))


def test_existing_sas_first_then_new_inits_newest_first(rig, monkeypatch) -> None:  # noqa: ANN001
    us, iface, tx, got, loop = rig
    monkeypatch.setattr(sk, "INIT_BUDGET", 0.0)  # one IKE_SA_INIT per turn
    for i in range(50):
        _send(tx, iface, _msg(34, i))
    _send(tx, iface, _msg(35, 1000))  # IKE_AUTH of an SA that exists
    _send(tx, iface, _msg(34, 2000, cookie=True))  # a peer returning our COOKIE
    _send(tx, iface, _msg(37, 3000, response=True))
    us._readable(iface)
    tags = [int.from_bytes(d[:8], "big") for d in got]
    assert tags[:4] == [1000, 2000, 3000, 49]  # then one new IKE_SA_INIT, the newest
    for _ in range(60):
        loop.run_until_complete(asyncio.sleep(0))
    tags = [int.from_bytes(d[:8], "big") for d in got]
    assert tags[3:] == list(range(49, -1, -1))


def test_pending_inits_are_bounded_oldest_dropped(rig, monkeypatch) -> None:  # noqa: ANN001
    us, iface, tx, got, loop = rig
    monkeypatch.setattr(sk, "MAX_PENDING_INIT", 10)
    us._reading = True  # as inside a batch read: queue only
    for i in range(25):
        us._ike_in(_msg(34, i), Endpoint(iface.addr, 500), Endpoint(iface.addr, 500))
    us._reading = False
    assert us.init_overflow == 15 and len(us._inits) == 10
    us.loop = None  # no loop: hand everything over now
    us._drain()
    assert [int.from_bytes(d[:8], "big") for d in got] == list(range(15, 25))


def test_receive_buffer_is_large(rig) -> None:  # noqa: ANN001
    us, iface, *_ = rig
    assert us.rcvbuf >= sk.RCVBUF  # Linux reports twice what was granted


def test_busy_prefilter_answers_cookies_at_the_socket(rig) -> None:  # noqa: ANN001
    """A busy engine's COOKIE answer goes out from the reader; nothing reaches the engine."""
    import random

    from pypluto.ike.cookies import DoSGuard, cookie_in
    from pypluto.ike.settings import EngineSettings

    us, iface, tx, got, loop = rig
    guard = DoSGuard(EngineSettings(force_busy=True), random.Random(1).randbytes)
    us.attach_guard(guard, lambda: 1.0)
    tx.bind(("127.0.0.1", 0))
    req = _msg(34, 7)
    _send(tx, iface, req)
    us._readable(iface)
    assert got == [] and us.prefiltered == 1 and guard.counters.cookies_sent == 1
    reply, _ = tx.recvfrom(2048)
    cookie = reply[36:]
    assert reply[:8] == req[:8] and reply[19] & 0x20 and len(cookie) == 17
    # the peer comes back with the cookie first: the engine gets it
    body = struct.pack("!BBHBBH", 33, 0, 8 + 17, 0, 0, 16390) + cookie
    again = req[:16] + bytes([41]) + req[17:24] + (28 + len(body)).to_bytes(4, "big") + body
    assert cookie_in(again) == cookie
    _send(tx, iface, again)
    us._readable(iface)
    assert got == [again] and us.prefiltered == 1 and guard.counters.cookies_sent == 1
    # not busy: everything goes to the engine
    guard.settings.force_busy = False
    _send(tx, iface, _msg(34, 8))
    us._readable(iface)
    assert len(got) == 2 and us.prefiltered == 1
