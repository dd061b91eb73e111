"""HTTP for revocation data: CRLs from distribution points and OCSP requests (RFC 6960
Appendix A.1), with ``urllib`` from the standard library.

Blocking by design: the daemon calls :func:`http_fetch` only on a worker thread
(``Compute(io=True)`` jobs and the ``crlcheckinterval`` refresh), never on the event
loop.  Bounded: ``timeout`` for the whole fetch (connection, headers and body:
:class:`_Deadline`), at most ``MAX_BODY`` octets read, http and https only, redirects
not followed; an answer that is not HTTP is an OSError like any other failure.

``config setup curl-iface=`` (Libreswan hands it to curl's ``CURLOPT_INTERFACE``)
makes the fetches leave from one interface or address: an interface name
(``SO_BINDTODEVICE``: only routes through that device are used, with its address as
the source), an IP address of ours (the source address), or curl's explicit forms
``if!NAME`` and ``host!ADDRESS``.  Libreswan uses it for its CRL fetches (its OCSP
goes through NSS, which has no such setting); pypluto makes both kinds of request
itself and sends both that way.
"""

from __future__ import annotations

import base64
import http.client
import ipaddress
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

from pypluto.config.values import parse_curl_iface

MAX_BODY = 16 * 1024 * 1024  # a large CRL still fits; anything bigger is refused


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a: object, **kw: object) -> None:  # type: ignore[override]
        return None


SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


def _bound_connect(value: str) -> Callable[..., socket.socket]:
    """``socket.create_connection`` for http.client, leaving through ``value``."""
    dev, addr = parse_curl_iface(value)

    def connect(address: tuple[str, int], timeout: float | None = None,
                source_address: object = None) -> socket.socket:
        host, port = address
        err: OSError | None = None
        for fam, kind, proto, _c, sa in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            if addr is not None and ipaddress.ip_address(addr).version != \
                    (6 if fam == socket.AF_INET6 else 4):
                continue
            s = socket.socket(fam, kind, proto)
            try:
                if dev is not None:
                    try:
                        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
                    except OSError as e:
                        raise OSError(f"curl-iface={value}: {e.strerror or e}") from None
                if addr is not None:
                    try:
                        s.bind((addr, 0))
                    except OSError as e:
                        raise OSError(f"curl-iface={value}: {e.strerror or e}") from None
                s.settimeout(timeout)
                s.connect(sa)
                return s
            except OSError as e:
                err = e
                s.close()
        raise err or OSError(f"curl-iface={value}: no address of {host} in that family")
    return connect


class _Deadline:
    """The fetch as a whole ends at its timeout (Libreswan 5.2 hands curl-timeout= to
    curl as CURLOPT_CONNECTTIMEOUT and twice it as CURLOPT_TIMEOUT, the whole
    transfer; pypluto holds the whole fetch to the one timeout, as ipsec.conf(5)
    words it): at the deadline the fetch's sockets are
    shut down, so a server that trickles its headers or body a byte at a time, each
    inside the per-read timeout, cannot hold the worker thread longer."""

    def __init__(self, timeout: float) -> None:
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.append(s)
            if self.expired:
                _shut(s)
        return s

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for s in self._socks:
                _shut(s)


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _opener(iface: str | None, deadline: _Deadline) -> urllib.request.OpenerDirector:
    """An opener whose connections leave through ``iface`` (``curl-iface=``, or the
    routing table's choice) and are shut down at ``deadline``."""
    base = _bound_connect(iface) if iface else socket.create_connection

    def connect(address: tuple[str, int], timeout: float | None = None,
                source_address: object = None) -> socket.socket:
        return deadline.track(base(address, timeout, source_address))  # type: ignore[arg-type]

    class _Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(_conn(http.client.HTTPConnection), req)

    class _Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
            return self.do_open(_conn(http.client.HTTPSConnection), req,
                                context=self._context)  # type: ignore[attr-defined]

    def _conn(cls: type[http.client.HTTPConnection]) -> Callable[..., http.client.HTTPConnection]:
        def make(host: str, **kw: object) -> http.client.HTTPConnection:
            c = cls(host, **kw)  # type: ignore[arg-type]
            c._create_connection = connect  # type: ignore[attr-defined]
            return c
        return make

    return urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}), _Http,
                                       _Https)


def http_fetch(url: str, body: bytes | None, content_type: str | None,
               timeout: float, iface: str | None = None) -> bytes:
    """GET ``url`` (or POST ``body``); the response body.  Raises OSError on failure,
    also for an answer that is not HTTP, and when the whole fetch takes longer than
    ``timeout``.

    ``iface``: ``curl-iface=`` (see the module doc)."""
    try:
        parts = urllib.parse.urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError as e:
        raise OSError(f"bad URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise OSError(f"unsupported URL scheme {scheme!r}")
    auth = None
    if "@" in parts.netloc:  # user:password@ goes as HTTP Basic (as curl does), not as host
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        cred = f"{urllib.parse.unquote(user or '')}:{urllib.parse.unquote(password or '')}"
        auth = "Basic " + base64.b64encode(cred.encode()).decode("ascii")
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if auth:
        req.add_header("Authorization", auth)
    if content_type:
        req.add_header("Content-Type", content_type)
    req.add_header("User-Agent", "pypluto")
    timeout = max(timeout, 0.1)
    with _Deadline(timeout) as deadline:
        try:
            with _opener(iface, deadline).open(req, timeout=timeout) as resp:  # noqa: S310
                if resp.status != 200:
                    raise OSError(f"HTTP {resp.status}")
                data = resp.read(MAX_BODY + 1)
                short = getattr(resp, "length", None)  # what Content-Length still owes
                if short and len(data) <= MAX_BODY:
                    raise OSError(f"answer cut short: {len(data)} octets, {short} missing")
        except urllib.error.HTTPError as e:
            raise OSError(f"HTTP {e.code} {e.reason}") from None
        except urllib.error.URLError as e:
            if deadline.expired:
                raise OSError(f"timed out after {timeout:g}s") from None
            raise OSError(str(e.reason)) from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            # not HTTP (a bad status line, chunk or header), cut short, or too slow
            if deadline.expired or isinstance(e, TimeoutError):
                raise OSError(f"timed out after {timeout:g}s") from None
            if isinstance(e, OSError):
                raise
            raise OSError(f"bad HTTP answer: {type(e).__name__}: {e}") from None
        if deadline.expired:  # the body ended where the deadline cut it
            raise OSError(f"timed out after {timeout:g}s")
    if len(data) > MAX_BODY:
        raise OSError(f"response over {MAX_BODY} octets")
    return data
