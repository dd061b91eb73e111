"""OCSP responses checked by ``crypto/revocation.py`` (RFC 6960 §3.2, §4.2.2.2): who may
sign, the CertID, the time window, the nonce (RFC 8954), unsuccessful answers; the GET
form (Appendix A.1); distribution points and AIA read from certificates."""

from __future__ import annotations

import base64
import datetime
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID
from pki import NOW, PKI, Issued, make_crl, make_ee
from testsupport import damaged

from pypluto.crypto import revocation as rv
from pypluto.daemon.fetch import http_fetch

HOUR = datetime.timedelta(hours=1)


def _resp(cert: Issued, issuer: Issued, signer: Issued, *, status: str = "good",
          this: datetime.datetime = NOW - HOUR, nxt: datetime.datetime | None = NOW + HOUR,
          nonce: bytes | None = None, include: bool = False, serial: int | None = None
          ) -> bytes:
    target = cert.cert
    if serial is not None:
        target = (x509.CertificateBuilder().subject_name(cert.cert.subject)
                  .issuer_name(issuer.cert.subject).public_key(cert.cert.public_key())
                  .serial_number(serial).not_valid_before(NOW - HOUR)
                  .not_valid_after(NOW + HOUR).sign(issuer.key, hashes.SHA256()))  # type: ignore[arg-type]
    cs = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
          "unknown": ocsp.OCSPCertStatus.UNKNOWN}[status]
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=target, issuer=issuer.cert, algorithm=hashes.SHA1(), cert_status=cs,  # noqa: S303
        this_update=this, next_update=nxt,
        revocation_time=NOW - HOUR if status == "revoked" else None,
        revocation_reason=None).responder_id(ocsp.OCSPResponderEncoding.NAME, signer.cert)
    if include:
        b = b.certificates([signer.cert])
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.sign(signer.key, hashes.SHA256()).public_bytes(  # type: ignore[arg-type]
        serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki() -> PKI:
    return PKI.build()


def test_signed_by_the_ca(pki: PKI) -> None:
    ee = pki.ee("west")
    for status in ("good", "revoked", "unknown"):
        a = rv.ocsp_check(_resp(ee, pki.inter, pki.inter, status=status), ee.cert,
                          pki.inter.cert, NOW)
        assert a.status == status


def test_delegated_responder_needs_ocsp_signing_and_the_ca(pki: PKI) -> None:
    ee = pki.ee("west")
    good = make_ee("responder", pki.inter, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    assert rv.ocsp_check(_resp(ee, pki.inter, good, include=True), ee.cert, pki.inter.cert,
                         NOW).status == "good"
    no_eku = make_ee("responder2", pki.inter)
    other = make_ee("responder3", PKI.build().inter, eku=[ExtendedKeyUsageOID.OCSP_SIGNING])
    for bad in (no_eku, other):
        with pytest.raises(rv.OCSPError, match="authorized responder"):
            rv.ocsp_check(_resp(ee, pki.inter, bad, include=True), ee.cert, pki.inter.cert, NOW)
    # a trusted (ocsp-trustname) signer needs no delegation
    assert rv.ocsp_check(_resp(ee, pki.inter, other), ee.cert, pki.inter.cert, NOW,
                         trusted=[other.cert]).status == "good"


def test_a_forged_signature_does_not_verify(pki: PKI) -> None:
    ee = pki.ee("west")
    der = bytearray(_resp(ee, pki.inter, pki.inter))
    der[-5] ^= 1  # inside the signature BIT STRING
    with pytest.raises(rv.OCSPError, match="signature does not verify|malformed"):
        rv.ocsp_check(bytes(der), ee.cert, pki.inter.cert, NOW)


def test_other_serial_time_window_and_nonce(pki: PKI) -> None:
    ee = pki.ee("west")
    with pytest.raises(rv.OCSPError, match="no status for this certificate"):
        rv.ocsp_check(_resp(ee, pki.inter, pki.inter, serial=ee.cert.serial_number + 1),
                      ee.cert, pki.inter.cert, NOW)
    with pytest.raises(rv.OCSPError, match="expired"):
        rv.ocsp_check(_resp(ee, pki.inter, pki.inter, this=NOW - 3 * HOUR, nxt=NOW - 2 * HOUR),
                      ee.cert, pki.inter.cert, NOW)
    with pytest.raises(rv.OCSPError, match="in the future"):
        rv.ocsp_check(_resp(ee, pki.inter, pki.inter, this=NOW + HOUR, nxt=NOW + 2 * HOUR),
                      ee.cert, pki.inter.cert, NOW)
    with pytest.raises(rv.OCSPError, match="nonce"):
        rv.ocsp_check(_resp(ee, pki.inter, pki.inter, nonce=b"b" * 16), ee.cert,
                      pki.inter.cert, NOW, nonce=b"a" * 16)
    assert rv.ocsp_check(_resp(ee, pki.inter, pki.inter, nonce=b"a" * 16), ee.cert,
                         pki.inter.cert, NOW, nonce=b"a" * 16).status == "good"


def test_unsuccessful_and_malformed(pki: PKI) -> None:
    ee = pki.ee("west")
    unauth = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.UNAUTHORIZED).public_bytes(serialization.Encoding.DER)
    with pytest.raises(rv.OCSPError, match="UNAUTHORIZED"):
        rv.ocsp_check(unauth, ee.cert, pki.inter.cert, NOW)
    with pytest.raises(rv.OCSPError, match="malformed"):
        rv.ocsp_check(b"\x30\x03\x0a\x01", ee.cert, pki.inter.cert, NOW)


def test_request_get_form_and_urls(pki: PKI) -> None:
    ee = pki.ee("west", extensions=[
        x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier("ldap://x/crl"),
             x509.UniformResourceIdentifier("http://192.0.2.9/a.crl")], None, None, None)]),
        x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier("http://192.0.2.9/ocsp"))])])
    assert rv.cdp_urls(ee.cert) == ["http://192.0.2.9/a.crl"]  # LDAP is not fetched
    assert rv.ocsp_urls(ee.cert) == ["http://192.0.2.9/ocsp"]
    req = rv.ocsp_request(ee.cert, pki.inter.cert, b"n" * 16)
    url = rv.get_url("http://192.0.2.9/ocsp/", req)
    back = ocsp.load_der_ocsp_request(base64.b64decode(urllib.parse.unquote(url.split("/")[-1])))
    assert back.serial_number == ee.cert.serial_number
    assert (back.issuer_name_hash, back.issuer_key_hash) == rv.cert_id(ee.cert,
                                                                       pki.inter.cert)[:2]
    assert back.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"n" * 16


def test_fetch_refuses_other_schemes() -> None:
    for url in ("file:///etc/passwd", "ldap://192.0.2.9/x", "ftp://192.0.2.9/x"):
        with pytest.raises(OSError, match="unsupported URL scheme"):
            http_fetch(url, None, None, 1)


@pytest.mark.parametrize("encoding", ["name", "hash"])
def test_damaged_responses_are_ocsp_errors(pki: PKI, encoding: str) -> None:
    """A response damaged on the (plain HTTP) way: an answer or an OCSPError, never
    another exception (issue 12: bad input gets a clear error).  The responder's
    certificate rides along, so its parsing is exercised too."""
    ee = pki.ee("west")
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=ee.cert, issuer=pki.inter.cert, algorithm=hashes.SHA1(),  # noqa: S303
        cert_status=ocsp.OCSPCertStatus.GOOD, this_update=NOW - HOUR,
        next_update=NOW + HOUR, revocation_time=None, revocation_reason=None
    ).responder_id(ocsp.OCSPResponderEncoding.NAME if encoding == "name" else
                   ocsp.OCSPResponderEncoding.HASH, pki.inter.cert
                   ).certificates([pki.inter.cert]).add_extension(
        x509.OCSPNonce(b"n" * 16), critical=False)
    good = b.sign(pki.inter.key, hashes.SHA256()).public_bytes(  # type: ignore[arg-type]
        serialization.Encoding.DER)
    assert rv.ocsp_check(good, ee.cert, pki.inter.cert, NOW, [pki.root.cert],
                         b"n" * 16).status == "good"
    errors = 0
    for data in damaged(good, 3000, 7 if encoding == "name" else 8):
        try:
            rv.ocsp_check(data, ee.cert, pki.inter.cert, NOW, [pki.root.cert], b"n" * 16)
        except rv.OCSPError:
            errors += 1
    assert errors > 2500  # nearly every damage is caught (the signature covers most)


def test_damaged_crls_are_value_errors(pki: PKI) -> None:
    """The same for a fetched CRL: ``crl_for`` raises ValueError (what its caller turns
    into 'CRL ... rejected'), nothing else."""
    good = make_crl(pki.inter, [pki.ee("gone")]).public_bytes(serialization.Encoding.DER)
    assert rv.crl_for(good, pki.inter.cert) is not None
    for data in damaged(good, 3000, 9):
        try:
            crl = rv.crl_for(data, pki.inter.cert)
        except ValueError:
            continue
        list(crl)  # what the fetcher counts: decodes every entry
