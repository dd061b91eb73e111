"""Revocation between two engines: CRLs fetched from the certificate's distribution
point and OCSP (RFC 6960), from a real HTTP server (tests/revocation_server.py) on
the loopback, the fetches run as ``Compute(io=True)`` jobs the way the daemon runs
them on a thread."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from pki import PKI, Issued, make_crl, make_ee
from revocation_server import requests, serve

from pypluto.daemon.fetch import http_fetch
from pypluto.ike.actions import Action, Compute

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
    d = tmp_path / "www"
    d.mkdir()
    srv, port = serve(d)
    yield d, port
    srv.shutdown()
    srv.server_close()


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
    lines = [m for m in net.east.logs() if "is revoked" in m]
    assert len(lines) == 1, net.east.logs()
    assert "AUTHENTICATION_FAILED" in lines[0] and "west" in lines[0]
    assert any(m.startswith("fetched CRL from http://127.0.0.1") for m in net.east.logs())


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
    assert net.established(net.east), net.east.logs()
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
    assert any("is revoked" in m for m in net2.east.logs())


def test_crl_strict_with_an_unreachable_cdp_fails_closed(tmp_path: Path) -> None:
    pki = PKI.build()
    west = pki.ee("west", extensions=exts(_closed_port(), ocsp=False))
    net = _net(tmp_path, pki, west)
    _rev(net.east).policy.crlcheckinterval = 3600
    _rev(net.east).policy.crl_timeout = 2
    net.east.engine.secrets.certs.crl_strict = True  # type: ignore[attr-defined]
    net.up()
    assert not net.established(net.east)
    lines = [m for m in net.east.logs() if "no current CRL" in m]
    assert len(lines) == 1 and "fetching the CRL failed" in lines[0], net.east.logs()


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
    assert net.established(net.east), net.east.logs()
    assert requests(d, "ocsp") == 1
    assert any("is good" in m for m in net.east.logs())


def test_ocsp_revoked_is_refused(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "revoked")
    net.up()
    assert not net.established(net.east)
    lines = [m for m in net.east.logs() if "is revoked (OCSP" in m]
    assert len(lines) == 1 and "AUTHENTICATION_FAILED" in lines[0], net.east.logs()
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
    assert sum("is revoked (OCSP" in m for m in net.west.logs()) == 1, net.west.logs()


@pytest.mark.parametrize("strict", [True, False])
def test_ocsp_unreachable_responder(tmp_path: Path, server: tuple[Path, int], strict: bool
                                    ) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "good", strict=strict, reachable=False)
    net.up()
    assert bool(net.established(net.east)) is not strict, net.east.logs()
    if strict:
        lines = [m for m in net.east.logs() if "ocsp-strict=yes" in m]
        assert len(lines) == 1 and "OCSP request to" in lines[0]


def test_ocsp_unknown_fails_only_when_strict(tmp_path: Path, server: tuple[Path, int]) -> None:
    d, port = server
    net, _, _ = _ocsp_net(tmp_path, d, port, "unknown", strict=True)
    net.up()
    assert not net.established(net.east)
    assert any("does not know" in m for m in net.east.logs())


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
    assert any("is revoked (OCSP" in m for m in net.east.logs()), net.east.logs()


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
               for m in net.east.logs()), net.east.logs()
