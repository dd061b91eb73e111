"""Red team, round 26: revocation fetching against hostile servers and hostile (but
CA-signed) certificates.

What a certificate names (distribution points, OCSP responders) and what comes back
over plain HTTP are both attacker-reachable: a malformed URL must be skipped (not an
internal error that kills the exchange), a certificate naming dozens of unreachable
distribution points must not hold the exchange for dozens of timeouts, credentials
in a URL must not reach the log (and go as HTTP Basic, as curl sends them), a
replayed older CRL must not replace the newer one, a replayed OCSP "good" without
nextUpdate must not be believed forever, a huge or compressed body must neither be
read whole nor inflated, redirects go nowhere, and the fetch runs off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ike.test_revocation import _net, _rev, said
from pki import DAY, NOW, PKI, _sign_hash, make_crl

from pypluto.config.certs import CertStore
from pypluto.config.revocation import CRLJob, Result, Revocation, RevocationPolicy
from pypluto.crypto import revocation as rv
from pypluto.daemon import fetch
from pypluto.daemon.crlfetch import CRLFetcher
from pypluto.daemon.fetch import http_fetch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "crypto"))
from test_ocsp_checks import _resp  # noqa: E402  (tests/crypto has no __init__)


def _der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def _cdps(*urls: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints([x509.DistributionPoint(
        [x509.UniformResourceIdentifier(u)], None, None, None) for u in urls])


class _Server:
    """A raw HTTP server on the loopback: ``answer(conn, request)`` per connection;
    what each connection asked is kept in ``seen``; ``sent`` counts body octets."""

    def __init__(self, answer: Callable[[socket.socket, bytes], None]) -> None:
        self.answer = answer
        self.seen: list[bytes] = []
        self.sent = 0
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.srv.accept()
            except OSError:
                continue
            with c:
                c.settimeout(10)
                try:
                    req = b""
                    while b"\r\n\r\n" not in req:
                        chunk = c.recv(65536)
                        if not chunk:
                            break
                        req += chunk
                    self.seen.append(req)
                    self.answer(c, req)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.srv.close()


@contextlib.contextmanager
def _serving(answer: Callable[[socket.socket, bytes], None]) -> Iterator[_Server]:
    s = _Server(answer)
    try:
        yield s
    finally:
        s.close()


def _ok(body: bytes, extra: bytes = b"") -> Callable[[socket.socket, bytes], None]:
    return lambda c, _r: c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n%s\r\n%s"
                                   % (len(body), extra, body))


# ------------------------------------------------------------------ URLs in certificates
@pytest.mark.parametrize("url", ["http://[::1/crl", "http://[zz]/crl", "http://h:port/crl",
                                 "http:///crl"])
def test_a_malformed_distribution_point_is_skipped_not_an_internal_error(
        tmp_path: Path, url: str) -> None:
    """Before: ``urlsplit`` raised ValueError out of ``cdp_urls`` while the exchange was
    judged: "internal error while processing a message", the IKE SA deleted, whatever
    crl-strict said.  Now the URL is skipped: not strict, the peer is in."""
    pki = PKI.build()
    west = pki.ee("west", extensions=[_cdps(url)])
    assert rv.cdp_urls(west.cert) == []
    net = _net(tmp_path, pki, west)
    _rev(net.east).policy.crlcheckinterval = 3600
    net.up()
    assert not any("internal error" in m for m in said(net.east)), said(net.east)
    assert net.established(net.east), said(net.east)


def test_a_malformed_ocsp_responder_url_is_skipped() -> None:
    pki = PKI.build()
    from cryptography.x509.oid import AuthorityInformationAccessOID
    aia = x509.AuthorityInformationAccess([x509.AccessDescription(
        AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(u))
        for u in ("http://[::1/ocsp", "ldap://h/x", "http://127.0.0.1:9/ocsp")])
    ee = pki.ee("west", extensions=[aia])
    assert rv.ocsp_urls(ee.cert) == ["http://127.0.0.1:9/ocsp"]


def test_a_certificate_naming_many_distribution_points_costs_a_few_fetches(
        tmp_path: Path) -> None:
    """Each unreachable distribution point costs a whole curl-timeout while the
    exchange waits: a certificate naming 60 of them held IKE_AUTH (and a worker thread)
    for 60 timeouts.  Only the first few HTTP(S) ones are tried; non-HTTP schemes
    (ldap, file) never are."""
    pki = PKI.build()
    urls = ["ldap://ldap.example/cn=crl", "file:///etc/shadow"] + \
        [f"http://127.0.0.1:9/crl{i}" for i in range(60)]
    west = pki.ee("west", extensions=[_cdps(*urls)])
    net = _net(tmp_path, pki, west)
    asked: list[str] = []

    def fetcher(url: str, body: bytes | None, ctype: str | None, timeout: float) -> bytes:
        asked.append(url)
        raise OSError("unreachable")
    rev = _rev(net.east)
    rev.fetcher = fetcher
    rev.policy.crlcheckinterval = 3600
    net.up()
    assert net.established(net.east), said(net.east)  # not strict
    assert 1 <= len(asked) <= rv.MAX_URLS, len(asked)
    assert all(u.startswith("http://127.0.0.1:9/") for u in asked)
    assert len(rev.fetched) <= rv.MAX_URLS


# ------------------------------------------------------------------ credentials in URLs
def test_credentials_in_a_url_go_as_basic_auth_and_never_to_the_log() -> None:
    """Before: ``user:s3cret@host`` reached http.client as the host ("nonnumeric port:
    's3cret@127.0.0.1'", the password in the log line) and every log line carried the
    URL with its password.  Now they go as HTTP Basic (curl's behaviour) and the log,
    ``ipsec listcrls`` and the OCSP cache show ``user:***@``."""
    with _serving(lambda c, _r: c.sendall(b"HTTP/1.0 500 Oops\r\n\r\n")) as srv:
        url = f"http://alice:s3cret@127.0.0.1:{srv.port}/crl"
        with pytest.raises(OSError) as info:
            http_fetch(url, None, None, 5.0)
        assert "500" in str(info.value) and "s3cret" not in str(info.value)
        req = srv.seen[0].lower()
        assert b"authorization: basic ywxpy2u6cznjcmv0" in req  # alice:s3cret
        assert b"s3cret" not in req and b"host: 127.0.0.1" in req
        pki = PKI.build()
        rev = Revocation(RevocationPolicy(crlcheckinterval=3600), http_fetch)
        job = CRLJob([url, f"http://bob:hunter2@127.0.0.1:{srv.port}:bad/crl"],
                     pki.inter.cert)
        logs = rev.apply(rev.run([job]), NOW.timestamp())
        text = repr(logs) + repr(rev.listing())
        assert logs and "s3cret" not in text and "hunter2" not in text, text
        assert "alice:***@127.0.0.1" in text


def test_ocsp_uri_credentials_stay_out_of_the_startup_line(tmp_path: Path) -> None:
    lines: list[str] = []
    store = CertStore()
    pol = RevocationPolicy(ocsp_enable=True, ocsp_uri="http://u:pw0rd@ocsp.example/")
    f = CRLFetcher(store, pol, lambda m, *a: lines.append(m))
    f.start(asyncio.new_event_loop())
    assert lines and all("pw0rd" not in m for m in lines), lines
    assert any("u:***@ocsp.example" in m for m in lines)


# ------------------------------------------------------------------ replays
def _older_crl(pki: PKI, days: int) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(pki.inter.cert.subject)
         .last_update(NOW - days * DAY).next_update(NOW + 7 * DAY))
    return b.sign(pki.inter.key, _sign_hash(pki.inter.key))  # type: ignore[arg-type]


def test_a_replayed_older_crl_does_not_replace_the_newer_one() -> None:
    """Anyone on the HTTP path can replay the CA's CRL of last month (validly signed,
    nextUpdate maybe still ahead, and without the peer revoked since).  Before, it
    replaced the held CRL and the revoked peer got in.  NSS refuses a CRL older than
    the one it holds; so does pypluto now."""
    pki = PKI.build()
    ee = pki.ee("west")
    rev = Revocation(RevocationPolicy(crlcheckinterval=3600))
    job = CRLJob(["http://crl.example/inter.crl"], pki.inter.cert)
    now = NOW.timestamp()
    rev.apply([Result(job, _der(make_crl(pki.inter, [ee])), job.urls[0])], now)
    logs = rev.apply([Result(job, _der(_older_crl(pki, 30)), job.urls[0])], now)
    assert [c.get_revoked_certificate_by_serial_number(ee.cert.serial_number) is not None
            for c in rev.crls()] == [True]
    assert any("older than the one held" in line for _, line in logs), logs
    # a newer one does replace it
    newer = (x509.CertificateRevocationListBuilder().issuer_name(pki.inter.cert.subject)
             .last_update(NOW).next_update(NOW + 7 * DAY)
             .sign(pki.inter.key, _sign_hash(pki.inter.key)))  # type: ignore[arg-type]
    rev.apply([Result(job, _der(newer), job.urls[0])], now)
    assert [len(list(c)) for c in rev.crls()] == [0]


def test_a_crl_from_the_future_is_refused() -> None:
    """A CRL whose thisUpdate lies ahead of our clock is not yet valid (and, held,
    would make every later CRL look older)."""
    pki = PKI.build()
    b = (x509.CertificateRevocationListBuilder().issuer_name(pki.inter.cert.subject)
         .last_update(NOW + 30 * DAY).next_update(NOW + 40 * DAY))
    future = b.sign(pki.inter.key, _sign_hash(pki.inter.key))  # type: ignore[arg-type]
    rev = Revocation(RevocationPolicy(crlcheckinterval=3600))
    job = CRLJob(["http://crl.example/inter.crl"], pki.inter.cert)
    logs = rev.apply([Result(job, _der(future), job.urls[0])], NOW.timestamp())
    assert rev.crls() == []
    assert any("in the future" in line for _, line in logs), logs
    assert "in the future" in rev.crl_error(pki.inter.cert.subject)


def test_a_replayed_ocsp_good_without_next_update_is_too_old() -> None:
    """RFC 6960 §3.2 item 4: thisUpdate must be "sufficiently recent".  A response
    without nextUpdate never expired by the nextUpdate check, so a "good" captured
    months ago (before the certificate was revoked) was believed forever."""
    pki = PKI.build()
    ee = pki.ee("west")
    old = _resp(ee, pki.inter, pki.inter, this=NOW - 90 * DAY, nxt=None)
    with pytest.raises(rv.OCSPError, match="too old"):
        rv.ocsp_check(old, ee.cert, pki.inter.cert, NOW)
    fresh = _resp(ee, pki.inter, pki.inter, this=NOW - datetime.timedelta(hours=1), nxt=None)
    assert rv.ocsp_check(fresh, ee.cert, pki.inter.cert, NOW).status == "good"


# ------------------------------------------------------------------ hostile servers
def test_a_huge_body_is_cut_at_the_cap_not_read_whole() -> None:
    """Content-Length of 500 MB and a server that keeps sending: refused once the cap
    (MAX_BODY) is passed; the server could not push much beyond it."""
    def flood(c: socket.socket, _r: bytes) -> None:
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 500000000\r\n\r\n")
        block = b"\0" * 65536
        while srv.sent < 500_000_000:
            c.sendall(block)
            srv.sent += len(block)
    with _serving(flood) as srv:
        with pytest.raises(OSError, match="over"):
            http_fetch(f"http://127.0.0.1:{srv.port}/crl", None, None, 30.0)
        srv.stop.set()
        srv.thread.join(10)
        assert srv.sent < 4 * fetch.MAX_BODY + 16 * 1024 * 1024, srv.sent


def test_content_encoding_is_not_inflated() -> None:
    """A gzip bomb is only a bomb to a client that inflates it: the body comes back as
    sent (and then is no CRL)."""
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024))
    with _serving(_ok(bomb, b"Content-Encoding: gzip\r\n")) as srv:
        got = http_fetch(f"http://127.0.0.1:{srv.port}/crl", None, None, 10.0)
        assert got == bomb
        assert b"gzip" not in srv.seen[0].lower()  # urllib asks for identity
        with pytest.raises(ValueError, match="malformed CRL"):
            rv.crl_for(got, PKI.build().inter.cert)


def test_redirects_to_other_hosts_and_loops_are_not_followed() -> None:
    with _serving(_ok(b"CRL")) as target:
        with _serving(lambda c, _r: c.sendall(
                b"HTTP/1.1 301 Moved\r\nLocation: http://127.0.0.1:%d/crl\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n" % target.port)) as srv:
            with pytest.raises(OSError, match="301"):
                http_fetch(f"http://127.0.0.1:{srv.port}/crl", None, None, 5.0)
            assert len(srv.seen) == 1
        assert target.seen == []
    port: list[int] = []
    with _serving(lambda c, _r: c.sendall(
            b"HTTP/1.0 302 Found\r\nLocation: http://127.0.0.1:%d/crl\r\n\r\n" % port[0])
            ) as loop:
        port.append(loop.port)
        with pytest.raises(OSError, match="302"):
            http_fetch(f"http://127.0.0.1:{loop.port}/crl", None, None, 5.0)
        assert len(loop.seen) == 1


@pytest.mark.parametrize("status", [b"404 Not Found", b"503 Busy", b"204 No Content",
                                    b"999 What"])
def test_status_codes_other_than_200_fail_the_fetch(status: bytes) -> None:
    with _serving(lambda c, _r: c.sendall(b"HTTP/1.0 " + status +
                                                b"\r\nContent-Length: 3\r\n\r\nCRL")) as srv:
        with pytest.raises(OSError) as info:
            http_fetch(f"http://127.0.0.1:{srv.port}/crl", None, None, 5.0)
        assert status.split()[0].decode() in str(info.value)


def test_garbage_and_wrong_issuer_crls_from_a_server_are_logged_and_not_held() -> None:
    pki, other = PKI.build(), PKI.build()
    for body in (b"<html>not a CRL</html>", b"\x30\x82\xff\xff" + b"\0" * 100,
                 _der(make_crl(other.inter, []))):
        with _serving(_ok(body, b"Content-Type: text/html\r\n")) as srv:
            rev = Revocation(RevocationPolicy(crlcheckinterval=3600), http_fetch)
            job = CRLJob([f"http://127.0.0.1:{srv.port}/crl"], pki.inter.cert)
            logs = rev.apply(rev.run([job]), NOW.timestamp())
            assert rev.crls() == [] and len(logs) == 1 and "rejected" in logs[0][1], logs
            assert rev.crl_error(pki.inter.cert.subject)


def test_a_hanging_fetch_does_not_block_the_event_loop(tmp_path: Path) -> None:
    """The server answers only once code on the event loop has run: were the fetch on
    the loop, that code could not run, and the fetch would fail by its (long) timeout
    instead of returning the CRL."""
    pki = PKI.build()
    crl = _der(make_crl(pki.inter, []))
    released = threading.Event()

    def held(c: socket.socket, _r: bytes) -> None:
        released.wait(60)
        _ok(crl)(c, _r)
    with _serving(held) as srv:
        store = CertStore()
        f = CRLFetcher(store, RevocationPolicy(crlcheckinterval=3600, crl_timeout=60),
                       lambda *a: None)
        job = CRLJob([f"http://127.0.0.1:{srv.port}/crl"], pki.inter.cert)

        async def go() -> list[str]:
            task = asyncio.ensure_future(f.fetch([job]))
            while not srv.seen:  # the request is in flight, the loop still turns
                await asyncio.sleep(0.01)
            released.set()
            return await task
        lines = asyncio.run(go())
        assert any(line.startswith("fetched CRL from") for line in lines), lines
        assert len(store.revocation.crls()) == 1


def test_ipv6_literal_urls_are_fetched() -> None:
    """``http://[::1]:port/`` (a distribution point may name an IPv6 literal)."""
    try:
        srv6 = socket.socket(socket.AF_INET6)
        srv6.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    srv6.listen(1)
    port = srv6.getsockname()[1]

    def serve() -> None:
        c, _ = srv6.accept()
        with c:
            c.recv(65536)
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nCRL")
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        url = f"http://[::1]:{port}/crl"
        assert rv._http([url]) == [url]
        assert http_fetch(url, None, None, 5.0) == b"CRL"
    finally:
        t.join(5)
        srv6.close()


def test_a_crl_with_a_huge_issuer_name_leaves_a_bounded_error() -> None:
    """The issuer check comes before the signature check, so the name quoted in the
    error is anyone's: it was kept whole in the fetch error (``ipsec listcrls``, the
    crl-strict refusal) and in the log line."""
    pki = PKI.build()
    from cryptography.x509.oid import NameOID
    from pki import new_key
    key = new_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "A" * 200)
                      for _ in range(500)])
    crl = (x509.CertificateRevocationListBuilder().issuer_name(name)
           .last_update(NOW - DAY).next_update(NOW + DAY).sign(key, _sign_hash(key)))  # type: ignore[arg-type]
    rev = Revocation(RevocationPolicy(crlcheckinterval=3600))
    job = CRLJob(["http://crl.example/inter.crl"], pki.inter.cert)
    logs = rev.apply([Result(job, _der(crl), job.urls[0])], NOW.timestamp())
    err = rev.crl_error(pki.inter.cert.subject)
    assert "is not" in err or "CRL issuer" in err
    assert len(err) < 300 and all(len(line) < 400 for _, line in logs), (len(err), logs)
    assert len(repr(rev.listing())) < 1000


def test_an_ocsp_response_stuffed_with_certificates_is_judged_cheaply(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer is judged on the event loop.  Anyone on the plain-HTTP path could
    send a response carrying thousands of certificates that each name the responder,
    the CA as issuer and id-kp-OCSPSigning (forged: signed by another key): every one
    cost a parse and a signature check (seconds for 2000; a 16 MB answer holds 40000).
    Only the first few are looked at now, and the rest are not even parsed."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509 import ocsp
    from cryptography.x509.oid import ExtendedKeyUsageOID
    from pki import new_key
    pki = PKI.build()
    ee = pki.ee("west")
    key = new_key("p256")
    forged = (x509.CertificateBuilder().subject_name(pki.ee("responder").cert.subject)
              .issuer_name(pki.inter.cert.subject).public_key(key.public_key())
              .serial_number(5).not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]),
                             critical=False)
              .sign(key, hashes.SHA256()))  # type: ignore[arg-type]
    der = (ocsp.OCSPResponseBuilder().add_response(
        cert=ee.cert, issuer=pki.inter.cert, algorithm=hashes.SHA1(),  # noqa: S303
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW, next_update=NOW + DAY,
        revocation_time=None, revocation_reason=None)
        .responder_id(ocsp.OCSPResponderEncoding.NAME, forged)
        .certificates([forged] * 2000)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
        .public_bytes(serialization.Encoding.DER))
    checked: list[x509.Certificate] = []
    real = rv._delegated_ok

    def counting(c: x509.Certificate, issuer: x509.Certificate,
                 now: datetime.datetime) -> bool:
        checked.append(c)
        return real(c, issuer, now)
    monkeypatch.setattr(rv, "_delegated_ok", counting)
    with pytest.raises(rv.OCSPError, match="neither by the issuing CA"):
        rv.ocsp_check(der, ee.cert, pki.inter.cert, NOW)
    assert 1 <= len(checked) <= rv.MAX_RESPONSE_CERTS, len(checked)


# ------------------------------------------------------------------ Libreswan's options
def _ocsp_stub(pki: PKI, ee_cert: x509.Certificate, get_fails: bool
               ) -> tuple[Callable[..., bytes], list[str]]:
    asked: list[str] = []

    def fetcher(url: str, body: bytes | None, ctype: str | None, timeout: float) -> bytes:
        asked.append("POST" if body is not None else "GET")
        if body is None and get_fails:
            raise OSError("HTTP 405 Method Not Allowed")
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509 import ocsp
        return (ocsp.OCSPResponseBuilder().add_response(
            cert=ee_cert, issuer=pki.inter.cert, algorithm=hashes.SHA1(),  # noqa: S303
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=1),
            next_update=datetime.datetime.now(datetime.UTC) + DAY,
            revocation_time=None, revocation_reason=None)
            .responder_id(ocsp.OCSPResponderEncoding.HASH, pki.inter.cert)
            .sign(pki.inter.key, hashes.SHA256())  # type: ignore[arg-type]
            .public_bytes(serialization.Encoding.DER))
    return fetcher, asked


def test_ocsp_method_get_falls_back_to_post() -> None:
    """ipsec.conf(5) ocsp-method: "When set to the get method, post is attempted only
    as fallback in case of failure."  Before, a responder refusing GET was a failure
    (fatal under ocsp-strict)."""
    import time
    pki = PKI.build()
    ee = pki.ee("west")
    chain = [ee.cert, pki.inter.cert, pki.root.cert]
    for method, get_fails, want in (("get", True, ["GET", "POST"]), ("get", False, ["GET"]),
                                    ("post", False, ["POST"])):
        fetcher, asked = _ocsp_stub(pki, ee.cert, get_fails)
        rev = Revocation(RevocationPolicy(ocsp_enable=True, ocsp_strict=True,
                                          ocsp_uri="http://ocsp.example/",
                                          ocsp_method=method), fetcher)
        now = time.time()
        rev.apply(rev.run(rev.plan(chain, lambda _n: True, now)), now)
        assert asked == want, (method, asked)
        assert rev.ocsp_status(chain, now) is None  # good


def test_ocsp_cache_size_zero_disables_the_cache() -> None:
    """ipsec.conf(5): "Setting this value to 0 means the cache is disabled."  Before, one
    answer was kept and reused (the size was taken as at least 1)."""
    import time
    pki = PKI.build()
    ee = pki.ee("west")
    chain = [ee.cert, pki.inter.cert, pki.root.cert]
    fetcher, asked = _ocsp_stub(pki, ee.cert, False)
    rev = Revocation(RevocationPolicy(ocsp_enable=True, ocsp_strict=True, ocsp_cache_size=0,
                                      ocsp_uri="http://ocsp.example/"), fetcher)
    now = time.time()
    for _ in range(3):
        jobs = rev.plan(chain, lambda _n: True, now)
        assert jobs and not rev.hit(chain, now)
        rev.apply(rev.run(jobs), now)
        assert rev.ocsp_status(chain, now) is None  # the fresh answer is judged
    assert asked == ["GET"] * 3 and rev.cache_hits == 0
    rev.policy.ocsp_cache_size = 10  # with a cache, the answer held is reused
    rev.apply(rev.run(rev.plan(chain, lambda _n: True, now)), now)
    assert rev.plan(chain, lambda _n: True, now) == [] and len(asked) == 3
