"""Revocation between two engines: CRLs fetched from the certificate's distribution
point and OCSP (RFC 6960), from a real HTTP server (tests/revocation_server.py) on
the loopback, the fetches run as ``Compute(io=True)`` jobs the way the daemon runs
them on a thread."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from pki import PKI, Issued, make_crl, make_ee
from revocation_server import requests, served

from pypluto.daemon.fetch import http_fetch
from pypluto.ike.actions import Action, Compute, Log

from .harness import Net, Side
from .test_certs import cert_net


class FetchNet(Net):
    """Runs each ``io`` Compute job at once (the daemon runs it on a thread)."""

    def apply(self, side: Side, acts: list[Action]) -> None:
        super().apply(side, [a for a in acts if not isinstance(a, Compute)])
        for a in acts:
            if isinstance(a, Compute):
                side.actions.append(a)
                try:
                    result: object = a.job()
                except Exception as e:  # noqa: BLE001 - handed back like the daemon does
                    result = e
                self.apply(side, side.engine.resume(a.token, result, self.now))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """The OCSP/CRL server's directory and port."""
    yield from served(tmp_path)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def exts(port: int, crl: bool = True, ocsp: bool = True) -> list[x509.ExtensionType]:
    out: list[x509.ExtensionType] = []
    base = f"http://127.0.0.1:{port}"
    if crl:
        out.append(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(f"{base}/crl/inter.crl")], None, None, None)]))
    if ocsp:
        out.append(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"{base}/ocsp"))]))
    return out


def _net(tmp: Path, pki: PKI, west: Issued, east: Issued | None = None) -> FetchNet:
    net = cert_net(tmp, west, east or pki.ee("east"), pki)
    net.__class__ = FetchNet  # same state, Compute jobs run
    for s in (net.west, net.east):
        s.engine.secrets.certs.revocation.fetcher = http_fetch  # type: ignore[attr-defined]
    return net  # type: ignore[return-value]


def said(side: Side) -> list[str]:
    """What the side logged outside debug (what an admin sees without plutodebug)."""
    return [a.message for a in side.actions if isinstance(a, Log) and a.level != "debug"]


def _rev(side: Side):  # noqa: ANN202
    return side.engine.secrets.certs.revocation  # type: ignore[attr-defined]


def _publish(d: Path, pki: PKI, revoked: list[Issued], status: dict[str, str] | None = None
             ) -> None:
    from cryptography.hazmat.primitives import serialization
    (d / "inter.crl").write_bytes(make_crl(pki.inter, revoked).public_bytes(
        serialization.Encoding.DER))
    pki.inter.write(d, "issuer")
    if status is not None:
        import json
        (d / "status.json").write_text(json.dumps(status))


# ------------------------------------------------------------------ CRL fetching
def test_revoked_by_a_fetched_crl(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(port, ocsp=False))
    _publish(d, pki, [west])
    net = _net(tmp_path, pki, west)
    _rev(net.east).policy.crlcheckinterval = 3600
    net.up()
    assert not net.established(net.east) and not net.established(net.west)
    assert requests(d, "crl") == 1
    lines = [m for m in said(net.east) if "is revoked" in m]
    assert len(lines) == 1, said(net.east)
    assert "AUTHENTICATION_FAILED" in lines[0] and "west" in lines[0]
    assert any(m.startswith("fetched CRL from http://127.0.0.1") for m in said(net.east))


def test_fetched_crl_not_listing_the_peer_lets_it_in_and_is_reused(
        tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(port, ocsp=False))
    _publish(d, pki, [pki.ee("someone else")])
    net = _net(tmp_path, pki, west)
    rev = _rev(net.east)
    rev.policy.crlcheckinterval = 3600
    store = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    store.crl_strict = True  # the fetched CRL is the intermediate's current CRL
    store.extra_crls.append(make_crl(pki.root, []))
    net.up()
    assert net.established(net.east), said(net.east)
    # a second IKE SA: the fetched CRL is current, nothing is fetched again
    net2 = _net(tmp_path, pki, west)
    net2.east.engine.secrets.certs = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    net2.up()
    assert net2.established(net2.east)
    assert requests(d, "crl") == 1
    assert [r["url"] for r in rev.listing()] == [f"http://127.0.0.1:{port}/crl/inter.crl"]


def test_crlcheckinterval_zero_fetches_nothing(tmp_path: Path, server: tuple[Path, int]
                                               ) -> None:
    d, port = server
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(port, ocsp=False))
    _publish(d, pki, [west])
    net = _net(tmp_path, pki, west)
    net.up()  # Libreswan: crlcheckinterval=0 disables fetching
    assert net.established(net.east)
    assert requests(d, "crl") == 0
    # ... but ipsec fetchcrls fetches the distribution points seen, and then it counts
    rev = _rev(net.east)
    assert len(rev.all_crl_jobs()) == 1
    rev.apply(rev.run(rev.all_crl_jobs()), 0.0 + net.east.engine.secrets.certs.clock())  # type: ignore[attr-defined]
    assert requests(d, "crl") == 1
    net2 = _net(tmp_path, pki, west)
    net2.east.engine.secrets.certs = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    net2.up()
    assert not net2.established(net2.east)
    assert any("is revoked" in m for m in said(net2.east))


def test_crl_strict_with_an_unreachable_cdp_fails_closed(tmp_path: Path) -> None:
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(_closed_port(), ocsp=False))
    net = _net(tmp_path, pki, west)
    _rev(net.east).policy.crlcheckinterval = 3600
    _rev(net.east).policy.crl_timeout = 2
    net.east.engine.secrets.certs.crl_strict = True  # type: ignore[attr-defined]
    net.up()
    assert not net.established(net.east)
    lines = [m for m in said(net.east) if "no current CRL" in m]
    assert len(lines) == 1 and "fetching the CRL failed" in lines[0], said(net.east)


# ------------------------------------------------------------------ OCSP
def _ocsp_net(tmp: Path, d: Path, port: int, status: str, *, strict: bool = False,
              reachable: bool = True) -> tuple[FetchNet, PKI, Issued]:
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(port if reachable else _closed_port(), crl=False))
    _publish(d, pki, [], {str(west.cert.serial_number): status})
    net = _net(tmp, pki, west)
    p = _rev(net.east).policy
    p.ocsp_enable, p.ocsp_strict = True, strict
    return net, pki, west


@pytest.mark.parametrize("method", ["get", "post"])
def test_ocsp_good_is_up(tmp_path: Path, server: tuple[Path, int], method: str) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "good", strict=True)
    _rev(net.east).policy.ocsp_method = method
    net.up()
    assert net.established(net.east), said(net.east)
    assert requests(d, "ocsp") == 1
    assert any("is good" in m for m in said(net.east))


def test_ocsp_revoked_is_refused(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "revoked")
    net.up()
    assert not net.established(net.east)
    lines = [m for m in said(net.east) if "is revoked (OCSP" in m]
    assert len(lines) == 1 and "AUTHENTICATION_FAILED" in lines[0], said(net.east)
    assert "key_compromise" in lines[0]


def test_ocsp_initiator_checks_the_responder(tmp_path: Path, server: tuple[Path, int]
                                             ) -> None:
    d, port = server
    pki = PKI.build()
    east = pki.ee("east", extensions=exts(port, crl=False))
    _publish(d, pki, [], {str(east.cert.serial_number): "revoked"})
    net = _net(tmp_path, pki, pki.ee("west"), east)
    _rev(net.west).policy.ocsp_enable = True
    net.up()
    assert not net.established(net.west)
    assert sum("is revoked (OCSP" in m for m in said(net.west)) == 1, said(net.west)


@pytest.mark.parametrize("strict", [True, False])
def test_ocsp_unreachable_responder(tmp_path: Path, server: tuple[Path, int], strict: bool
                                    ) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "good", strict=strict, reachable=False)
    net.up()
    assert bool(net.established(net.east)) is not strict, said(net.east)
    if strict:
        lines = [m for m in said(net.east) if "ocsp-strict=yes" in m]
        assert len(lines) == 1 and "OCSP request to" in lines[0]


def test_ocsp_unknown_fails_only_when_strict(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "unknown", strict=True)
    net.up()
    assert not net.established(net.east)
    assert any("does not know" in m for m in said(net.east))


def test_ocsp_cache_hit_and_purge(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    net, pki, west = _ocsp_net(tmp_path, d, port, "good", strict=True)
    net.up()
    assert net.established(net.east) and requests(d, "ocsp") == 1
    store = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    rev = store.revocation
    net2 = _net(tmp_path, pki, west)
    net2.east.engine.secrets.certs = store  # type: ignore[attr-defined]
    net2.up()
    assert net2.established(net2.east)
    assert requests(d, "ocsp") == 1  # answered from the cache by CertID
    assert rev.cache_hits == 1
    assert rev.purge_ocsp() == 1
    net3 = _net(tmp_path, pki, west)
    net3.east.engine.secrets.certs = store  # type: ignore[attr-defined]
    net3.up()
    assert net3.established(net3.east) and requests(d, "ocsp") == 2


def test_ocsp_uri_overrides_the_aia_and_a_delegated_responder_signs(
        tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    pki = PKI.build()
    west = pki.ee("west")  # no AIA at all
    responder = make_ee("ocsp responder", pki.inter,
                        eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    responder.write(d, "responder")
    _publish(d, pki, [], {str(west.cert.serial_number): "revoked"})
    net = _net(tmp_path, pki, west)
    p = _rev(net.east).policy
    p.ocsp_enable, p.ocsp_uri = True, f"http://127.0.0.1:{port}/ocsp"
    net.up()
    assert not net.established(net.east)
    assert any("is revoked (OCSP" in m for m in said(net.east)), said(net.east)


def test_ocsp_responder_without_ocspsigning_is_not_believed(
        tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(port, crl=False))
    pki.ee("not a responder").write(d, "responder")  # no id-kp-OCSPSigning
    _publish(d, pki, [], {str(west.cert.serial_number): "good"})
    net = _net(tmp_path, pki, west)
    p = _rev(net.east).policy
    p.ocsp_enable = p.ocsp_strict = True
    net.up()
    assert not net.established(net.east)
    assert any("signed neither by the issuing CA nor by an authorized responder" in m
               for m in said(net.east)), said(net.east)


def test_ocsp_trustname_signs_for_the_default_responder(
        tmp_path: Path, server: tuple[Path, int]) -> None:
    """A responder outside the CA's hierarchy (NSS's default responder) is believed
    only when ocsp-trustname= names its certificate (the daemon loads it by path or
    NSS nickname)."""
    from pypluto.daemon.crlfetch import CRLFetcher

    d, port = server
    pki, other = PKI.build(), PKI.build()
    west = pki.ee("west")
    responder = other.ee("default responder")
    responder.write(d, "responder")
    _publish(d, pki, [], {str(west.cert.serial_number): "revoked"})
    for trusted in (False, True):
        net = _net(tmp_path, pki, west)
        store = net.east.engine.secrets.certs  # type: ignore[attr-defined]
        p = store.revocation.policy
        p.ocsp_enable = p.ocsp_strict = True
        p.ocsp_uri = f"http://127.0.0.1:{port}/ocsp"
        if trusted:
            p.ocsp_trustname = str(d / "responder.crt")
            CRLFetcher(store, p, lambda *a, **k: None)
            store.revocation.fetcher = http_fetch
        net.up()
        assert not net.established(net.east)
        want = "is revoked (OCSP" if trusted else "nor by an authorized responder"
        assert sum(want in m for m in said(net.east)) == 1, said(net.east)


def test_ocsp_cache_size_and_ages(tmp_path: Path, server: tuple[Path, int]) -> None:
    """ocsp-cache-size bounds the cache (least recently used out first); an answer is
    kept for its nextUpdate (1 h here) clamped to [min-age, max-age]."""
    from pypluto.config.revocation import Revocation, RevocationPolicy

    d, port = server
    pki = PKI.build()
    certs = [pki.ee(f"peer{i}", extensions=exts(port, crl=False)) for i in range(3)]
    _publish(d, pki, [], {})
    now = time.time()  # the answers' times are real
    for min_age, max_age, want in ((60, 86400, 3600), (7200, 86400, 7200), (60, 600, 600)):
        rev = Revocation(RevocationPolicy(ocsp_enable=True, ocsp_cache_size=2,
                                          ocsp_cache_min_age=min_age,
                                          ocsp_cache_max_age=max_age), http_fetch)
        for c in certs:
            chain = [c.cert, pki.inter.cert, pki.root.cert]
            rev.apply(rev.run(rev.plan(chain, lambda _n: True, now)), now)
        assert len(rev.ocsp_cache) == 2  # peer0 evicted
        assert rev.plan([certs[0].cert, pki.inter.cert], lambda _n: True, now)  # refetch
        assert not rev.plan([certs[2].cert, pki.inter.cert], lambda _n: True, now)
        e = next(reversed(rev.ocsp_cache.values()))
        assert abs(e.expires - now - want) < 90, (min_age, max_age, e.expires - now)


def test_config_setup_reaches_the_policy(tmp_path: Path) -> None:
    """The config setup keys (parsed by config/parser.py) become the daemon's policy."""
    from pypluto.config.parser import load_config
    from pypluto.daemon.crlfetch import policy_from
    from pypluto.daemon.options import PlutoOptions, _apply_setup

    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tcrlcheckinterval=1h\n\tcurl-timeout=7\n"
                    "\tocsp-enable=yes\n\tocsp-strict=yes\n\tocsp-uri=http://192.0.2.9/ocsp\n"
                    "\tocsp-timeout=4\n\tocsp-cache-size=10\n\tocsp-cache-min-age=1m\n"
                    "\tocsp-cache-max-age=2h\n\tocsp-method=post\n")
    cfg = load_config(str(conf))
    assert not cfg.diagnostics, cfg.diagnostics
    o = PlutoOptions()
    _apply_setup(o, cfg.setup)
    p = policy_from(o.crlcheckinterval, o.revocation)
    assert (p.crlcheckinterval, p.crl_timeout, p.ocsp_enable, p.ocsp_strict, p.ocsp_uri,
            p.ocsp_timeout, p.ocsp_cache_size, p.ocsp_cache_min_age, p.ocsp_cache_max_age,
            p.ocsp_method) == (3600, 7, True, True, "http://192.0.2.9/ocsp", 4, 10, 60, 7200,
                               "post")
