"""IKE to a NAT-T socket the userspace plane reads is steered to the event loop
(issue 18; ``daemon/steer.py``): by the non-ESP marker (RFC 3948 §2.2), in the
kernel, so that no IKE message waits for a hand-off from the plane's thread."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from typing import Any

import pytest
from testsupport import NullLog

from pypluto.daemon import sockets as sk
from pypluto.daemon import steer
from pypluto.daemon.interfaces import LocalAddress

UDP_SEGMENT = 103


class _Plane:
    """A backend that reads the NAT-T socket itself (as the userspace plane does)."""

    def __init__(self, gro: bool) -> None:
        self.gro = gro
        self.socks: list[socket.socket] = []

    def prepare_ike_socket(self, sock: socket.socket) -> None:
        pass

    def attach_nat_socket(self, sock: socket.socket, local: tuple[str, int], deliver: Any
                          ) -> bool:
        if self.gro:
            sock.setsockopt(steer.SOL_UDP, steer.UDP_GRO, 1)
        self.socks.append(sock)
        return True


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(65535))
        except BlockingIOError:
            return out


def _rig(gro: bool) -> tuple[sk.UDPSockets, sk.IKEInterface, _Plane, list[bytes],
                             asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    port = _free_port()
    us = sk.UDPSockets(NullLog(), 0, port, None)  # type: ignore[arg-type]
    us.loop = loop
    plane = _Plane(gro)
    us.backend = plane  # type: ignore[assignment]
    got: list[bytes] = []
    us.on_ike = lambda data, local, remote: got.append(data)
    iface = us._open(LocalAddress("lo", 1, ipaddress.ip_address("127.0.0.1")), port, True)
    assert iface is not None
    us.interfaces.append(iface)
    return us, iface, plane, got, loop


def _turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(asyncio.sleep(0.05))


IKE = b"\x00" * 4 + bytes(range(40))
ESP = struct.pack("!II", 0x1001, 1) + bytes(36)


@pytest.mark.parametrize("gro", [False, True], ids=["plain", "udp-gro"])
def test_ike_goes_to_the_loop_esp_and_keepalives_to_the_plane(gro: bool) -> None:
    us, iface, plane, got, loop = _rig(gro)
    try:
        assert iface.backend_reads and iface.ike_sock is not None
        assert iface.ike_gro is gro
        for _ in range(8):  # several peers (the group's hash must not matter)
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            tx.bind(("127.0.0.1", 0))
            for d in (IKE, ESP, b"\xff", b"\x00\x00"):
                tx.sendto(d, ("127.0.0.1", iface.port))
            tx.close()
        _turn(loop)
        assert got == [IKE[4:]] * 8  # the marker stripped, as the plane's hand-off did
        plane_got = _drain(plane.socks[0])
        assert sorted(plane_got) == sorted([ESP, b"\xff", b"\x00\x00"] * 8)
    finally:
        us.close_all()
        loop.close()
    assert iface.ike_sock is None and plane.socks[0].fileno() == -1


def test_gro_batch_behind_an_ike_message_keeps_the_ike_only() -> None:
    """A merged batch is steered by its first datagram: IKE ones of it reach the
    engine; ESP merged behind them is dropped and counted (its SA state belongs
    to the plane's thread)."""
    us, iface, plane, got, loop = _rig(True)
    try:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.bind(("127.0.0.1", 0))
        seg = len(IKE)
        assert len(ESP) == seg
        tx.sendmsg([IKE + ESP + IKE], [(steer.SOL_UDP, UDP_SEGMENT, struct.pack("=H", seg))],
                   0, ("127.0.0.1", iface.port))  # UDP GSO: Linux 4.18
        _turn(loop)
        merged = bool(got) and len(got) == 2 and us.steered_dropped == 1
        split = len(got) == 2 and _drain(plane.socks[0]) == [ESP]
        assert merged or split, (got, us.steered_dropped)
        tx.close()
    finally:
        us.close_all()
        loop.close()


def test_without_steering_ike_still_comes_through_the_plane(monkeypatch) -> None:  # noqa: ANN001
    def refuse(*a: object) -> socket.socket:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(steer, "open_ike_socket", refuse)
    us, iface, plane, got, loop = _rig(False)
    try:
        assert iface.backend_reads and iface.ike_sock is None
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.sendto(IKE, ("127.0.0.1", iface.port))
        tx.close()
        _turn(loop)
        assert got == [] and _drain(plane.socks[0]) == [IKE]  # the plane reads it all
    finally:
        us.close_all()
        loop.close()


def test_gro_segments() -> None:
    anc = [(steer.SOL_UDP, steer.UDP_GRO, (10).to_bytes(4, "little"))]
    assert steer.gro_segments(bytes(25), anc) == [bytes(10), bytes(10), bytes(5)]
    assert steer.gro_segments(bytes(10), anc) == [bytes(10)]
    assert steer.gro_segments(bytes(25), []) == [bytes(25)]
