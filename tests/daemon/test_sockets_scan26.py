"""UDPSockets.scan when the host refuses: out of file descriptors (hundreds of local
addresses, each two sockets), pluto logs the interface it cannot open and keeps
running (before: OSError EMFILE escaped socket.socket() and pluto exited 1); a failed
address listing keeps the interfaces that are open (before: taken as "no address",
it shut every socket down)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket

from pypluto.daemon import sockets as sk
from pypluto.daemon.interfaces import LocalAddress


class _Log:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log(self, msg: str, level: str = "info", **_kw: object) -> None:
        self.lines.append((level, msg))


def _rig(monkeypatch, addrs):  # noqa: ANN001, ANN202
    log = _Log()
    us = sk.UDPSockets(log, 0, 0, None)  # type: ignore[arg-type]
    us.loop = asyncio.new_event_loop()
    us.backend = type("B", (), {"prepare_ike_socket": lambda self, s: None,
                                "attach_nat_socket": lambda self, *a: False})()
    monkeypatch.setattr(sk, "local_addresses", lambda: list(addrs))
    return us, log


def test_out_of_descriptors_is_logged_and_the_scan_goes_on(monkeypatch) -> None:  # noqa: ANN001
    lo = LocalAddress("lo", 1, ipaddress.ip_address("127.0.0.1"))
    us, log = _rig(monkeypatch, [lo])
    real = socket.socket

    def refuse(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(sk.socket, "socket", refuse)
    try:
        assert us.scan() == {lo.addr}
    finally:
        monkeypatch.setattr(sk.socket, "socket", real)
    assert us.interfaces == []
    assert any(lvl == "error" and "cannot open UDP interface lo 127.0.0.1" in m
               and "Too many open files" in m for lvl, m in log.lines), log.lines
    us.loop.close()


def test_a_failed_address_listing_keeps_the_open_interfaces(monkeypatch) -> None:  # noqa: ANN001
    lo = LocalAddress("lo", 1, ipaddress.ip_address("127.0.0.1"))
    us, log = _rig(monkeypatch, [lo])
    assert us.scan() == {lo.addr} and len(us.interfaces) == 2  # ports 0 and 0: IKE, NAT-T

    def fail() -> list[LocalAddress]:
        raise OSError(errno.ENOBUFS, "No buffer space available")

    monkeypatch.setattr(sk, "local_addresses", fail)
    before = list(us.interfaces)
    assert us.scan() == {lo.addr}
    assert us.interfaces == before and all(i.sock.fileno() >= 0 for i in before)
    assert not any("shutting down" in m for _lvl, m in log.lines), log.lines
    for i in before:
        us.close(i)
    us.loop.close()
