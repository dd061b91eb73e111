"""``http_fetch`` against a hostile or broken HTTP server (the CRL and OCSP fetches go
over plain HTTP, so anyone on the path can answer): a clear OSError, within the
timeout as a whole (Libreswan's crl-timeout= and ocsp-timeout= bound the fetch, not
each read), never another exception."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pypluto.daemon.fetch import http_fetch


def _serve(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    stop = threading.Event()

    def loop() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.settimeout(5)
                try:
                    c.recv(65536)  # the request
                    answer(c)
                except OSError:
                    pass
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/crl"
    finally:
        stop.set()
        t.join(2)
        srv.close()


def _trickle(c: socket.socket) -> None:
    c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(60):  # a byte every 0.1 s: no single read ever times out
        c.sendall(b"x")
        time.sleep(0.1)


def _trickle_headers(c: socket.socket) -> None:
    c.sendall(b"HTTP/1.0 200 OK\r\n")
    for _ in range(60):  # one header line a byte at a time, never finished
        c.sendall(b"X")
        time.sleep(0.1)


ANSWERS: dict[str, Callable[[socket.socket], None]] = {
    "garbage status line": lambda c: c.sendall(b"\x16\x03\x01 hello\r\n\r\n"),
    "empty answer": lambda c: None,
    "header line too long": lambda c: c.sendall(b"HTTP/1.0 200 OK\r\nX: " + b"a" * 70000
                                                + b"\r\n\r\n"),
    "too many headers": lambda c: c.sendall(b"HTTP/1.0 200 OK\r\n" + b"X: y\r\n" * 200
                                            + b"\r\n"),
    "short body": lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n"
                                      b"Connection: close\r\n\r\nabc"),
    "bad chunk": lambda c: c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                                     b"Connection: close\r\n\r\nzz\r\nabc\r\n"),
    "redirect": lambda c: c.sendall(b"HTTP/1.0 302 Found\r\nLocation: file:///etc/shadow\r\n"
                                    b"\r\n"),
    "trickle": _trickle,
    "trickled headers": _trickle_headers,
}


@pytest.mark.parametrize("case", sorted(ANSWERS))
def test_hostile_http_answers_are_os_errors_within_the_timeout(case: str) -> None:
    for url in _serve(ANSWERS[case]):
        t0 = time.monotonic()
        with pytest.raises(OSError) as info:
            http_fetch(url, None, None, 1.0)
        took = time.monotonic() - t0
        assert str(info.value), case
        # the whole fetch ends near its timeout (1 s), however the server paces itself
        # (the trickling servers would take 6 s; the margin is for a loaded machine)
        assert took < 4.0, (case, took)
