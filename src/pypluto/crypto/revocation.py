"""Certificate revocation data: CRL distribution points (RFC 5280 §4.2.1.13), OCSP
requests and responses (RFC 6960), without any I/O.

* :func:`cdp_urls` / :func:`ocsp_urls`: where a certificate's CRL and OCSP responder
  are (the cRLDistributionPoints and authorityInfoAccess extensions), HTTP only;
* :func:`ocsp_request`: the DER OCSPRequest for one certificate (RFC 6960 §4.1, the
  CertID hashed with SHA-1 as §4.3 requires every responder to accept), with an
  optional nonce (RFC 8954);
* :func:`ocsp_check`: an OCSPResponse parsed and checked (RFC 6960 §3.2): status
  successful, the CertID ours, signed by the issuing CA itself or by a delegated
  responder the CA certified with id-kp-OCSPSigning (§4.2.2.2), or by a responder
  trusted locally (``ocsp-trustname=``), inside its time window, the nonce echoed
  when the response carries one;
* :func:`crl_for` checks a fetched CRL against its issuer (signature, issuer name).

``cryptography.x509.ocsp`` builds and parses the messages; the signature checks are
``cryptography``'s too.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import urllib.parse
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from pypluto.crypto import x509 as px

# RFC 6960 §4.2.2.1: thisUpdate in the future / nextUpdate in the past, with some slack
CLOCK_SKEW = datetime.timedelta(minutes=5)
# RFC 6960 §3.2 item 4: thisUpdate "sufficiently recent".  A response without
# nextUpdate says nothing of how long it holds: older than this, it may be a replay
# of a "good" from before the certificate was revoked
MAX_AGE_WITHOUT_NEXT_UPDATE = datetime.timedelta(days=1)
# certificates of an OCSP response looked at for a delegated responder
MAX_RESPONSE_CERTS = 4


class OCSPError(Exception):
    """An OCSP response that cannot be used; the text says why."""


# a certificate may name any number of distribution points / responders; each one
# unreachable costs a whole fetch timeout while the exchange waits, so only the first
# few HTTP(S) ones are tried
MAX_URLS = 4


def _scheme(u: str) -> str:
    """The URL's scheme, or "" when it does not parse (``http://[::1/``, a bad port)."""
    try:
        parts = urllib.parse.urlsplit(u)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return ""
    return parts.scheme.lower() if parts.hostname else ""


def _http(urls: list[str]) -> list[str]:
    return [u for u in urls if _scheme(u) in ("http", "https")][:MAX_URLS]


def show_url(u: str) -> str:
    """``u`` as logged: without the password of a ``user:password@`` userinfo."""
    try:
        parts = urllib.parse.urlsplit(u)
    except ValueError:
        parts = None
    if parts is not None and parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        u = urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
    elif parts is None and "@" in u:
        u = "<URL with credentials>"
    return u


def cdp_urls(cert: x509.Certificate) -> list[str]:
    """The HTTP(S) URIs of the certificate's cRLDistributionPoints (RFC 5280 §4.2.1.13)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    urls = [n.value for dp in ext for n in (dp.full_name or [])
            if isinstance(n, x509.UniformResourceIdentifier)]
    return _http(urls)


def ocsp_urls(cert: x509.Certificate) -> list[str]:
    """The OCSP responders of the certificate's authorityInfoAccess (RFC 5280 §4.2.2.1)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    urls = [d.access_location.value for d in ext
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]
    return _http(urls)


def _spki_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING contents (what CertID's issuerKeyHash hashes)."""
    from pypluto.crypto.der import read_tlv
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    _, body, _ = read_tlv(spki, 0)
    _, _, off = read_tlv(body, 0)  # the AlgorithmIdentifier
    tag, bits, _ = read_tlv(body, off)
    if tag != 0x03 or not bits:
        raise ValueError("no subjectPublicKey BIT STRING")
    return bits[1:]  # drop the unused-bits octet


def cert_id(cert: x509.Certificate, issuer: x509.Certificate) -> tuple[bytes, bytes, int]:
    """The SHA-1 CertID (RFC 6960 §4.1.1) as a cache key: issuerNameHash,
    issuerKeyHash, serialNumber."""
    name = hashlib.sha1(issuer.subject.public_bytes()).digest()  # noqa: S324 - RFC 6960
    key = hashlib.sha1(_spki_bits(issuer)).digest()  # noqa: S324
    return name, key, cert.serial_number


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate,
                 nonce: bytes | None = None) -> bytes:
    """The DER OCSPRequest for ``cert`` (RFC 6960 §4.1), with a nonce (RFC 8954) if given."""
    b = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1())  # noqa: S303
    if nonce:
        b = b.add_extension(x509.OCSPNonce(nonce), critical=False)
    return b.build().public_bytes(serialization.Encoding.DER)


def get_url(base: str, request: bytes) -> str:
    """The GET form of a request (RFC 6960 Appendix A.1): base64, URL-encoded."""
    enc = urllib.parse.quote(base64.b64encode(request).decode("ascii"), safe="")
    return base.rstrip("/") + "/" + enc


@dataclass(frozen=True)
class OCSPAnswer:
    """A checked single response: ``good``, ``revoked`` or ``unknown``."""

    status: str
    this_update: datetime.datetime
    next_update: datetime.datetime | None
    revoked_at: datetime.datetime | None = None
    reason: str = ""


def _sig_ok(signer: x509.Certificate, resp: ocsp.OCSPResponse) -> bool:
    key = signer.public_key()
    data, sig, h = resp.tbs_response_bytes, resp.signature, resp.signature_hash_algorithm
    try:
        if isinstance(key, rsa.RSAPublicKey) and h is not None:
            key.verify(sig, data, padding.PKCS1v15(), h)
        elif isinstance(key, ec.EllipticCurvePublicKey) and h is not None:
            key.verify(sig, data, ec.ECDSA(h))
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            key.verify(sig, data)
        else:
            return False
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _is_signer(resp: ocsp.OCSPResponse, c: x509.Certificate) -> bool:
    """Does the ResponderID (RFC 6960 §4.2.2.3) name ``c``?"""
    if resp.responder_name is not None:
        return resp.responder_name == c.subject
    if resp.responder_key_hash is not None:
        return resp.responder_key_hash == hashlib.sha1(_spki_bits(c)).digest()  # noqa: S324
    return False


def _delegated_ok(c: x509.Certificate, issuer: x509.Certificate,
                  now: datetime.datetime) -> bool:
    """RFC 6960 §4.2.2.2: issued by the CA directly, with id-kp-OCSPSigning, valid now."""
    if c.issuer != issuer.subject or not (c.not_valid_before_utc <= now <= c.not_valid_after_utc):
        return False
    try:
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
        return False
    try:
        c.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _response_certs(der: bytes, limit: int) -> list[x509.Certificate]:
    """The first ``limit`` certificates of an OCSPResponse's BasicOCSPResponse (RFC
    6960 §4.2.1 ``certs``), read from the DER: ``cryptography``'s ``certificates``
    parses them all, and slower than linearly (seconds for a few thousand)."""
    from pypluto.crypto.der import read_tlv
    _, body, _ = read_tlv(der, 0)  # OCSPResponse
    _, _, off = read_tlv(body, 0)  # responseStatus
    _, rb, _ = read_tlv(body, off)  # [0] EXPLICIT ResponseBytes
    _, rbs, _ = read_tlv(rb, 0)
    _, _, off = read_tlv(rbs, 0)  # responseType
    _, octets, _ = read_tlv(rbs, off)  # response OCTET STRING
    _, basic, _ = read_tlv(octets, 0)  # BasicOCSPResponse
    off = 0
    for _ in range(3):  # tbsResponseData, signatureAlgorithm, signature
        _, _, off = read_tlv(basic, off)
    if off >= len(basic):
        return []
    _, certs, _ = read_tlv(basic, off)  # [0] EXPLICIT SEQUENCE OF Certificate
    _, seq, _ = read_tlv(certs, 0)
    out: list[x509.Certificate] = []
    off = 0
    while off < len(seq) and len(out) < limit:
        start = off
        _, _, off = read_tlv(seq, off)
        out.append(x509.load_der_x509_certificate(seq[start:off]))
    return out


def ocsp_check(der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
               now: datetime.datetime, trusted: list[x509.Certificate] | None = None,
               nonce: bytes | None = None) -> OCSPAnswer:
    """Parse and check an OCSP response for ``cert`` (see the module doc); raise
    :class:`OCSPError` naming what is wrong.

    The response comes over plain HTTP: whatever in it ``cryptography`` cannot decode
    or use (a field parsed on access, an embedded certificate's key, an unknown hash)
    is an OCSPError too."""
    try:
        return _ocsp_check(der, cert, issuer, now, trusted, nonce)
    except px.MALFORMED as e:
        raise OCSPError(f"malformed OCSP response ({e})") from None


def _ocsp_check(der: bytes, cert: x509.Certificate, issuer: x509.Certificate,
                now: datetime.datetime, trusted: list[x509.Certificate] | None,
                nonce: bytes | None) -> OCSPAnswer:
    resp = ocsp.load_der_ocsp_response(der)
    if resp.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise OCSPError(f"OCSP responder answered {resp.response_status.name}")
    # the signer: the CA, a delegated responder it certified, or a locally trusted one
    signer = None
    if _is_signer(resp, issuer):
        signer = issuer
    else:
        for c in trusted or []:
            if _is_signer(resp, c):
                signer = c
                break
        else:
            # the responder's certificate (RFC 6960 §4.2.2.2), maybe with its chain: a
            # few at most.  Each one naming the signer costs a signature check, and the
            # answer is judged on the event loop: thousands would stall the daemon
            for c in _response_certs(der, MAX_RESPONSE_CERTS):
                if _is_signer(resp, c) and _delegated_ok(c, issuer, now):
                    signer = c
                    break
    if signer is None:
        raise OCSPError("OCSP response is signed neither by the issuing CA nor by an "
                        "authorized responder (id-kp-OCSPSigning)")
    if not _sig_ok(signer, resp):
        raise OCSPError("OCSP response signature does not verify")
    want = cert_id(cert, issuer)
    for single in resp.responses:
        if not isinstance(single.hash_algorithm, hashes.SHA1):
            name_h = hashlib.new(single.hash_algorithm.name,
                                 issuer.subject.public_bytes()).digest()
            key_h = hashlib.new(single.hash_algorithm.name, _spki_bits(issuer)).digest()
        else:
            name_h, key_h = want[0], want[1]
        if (single.issuer_name_hash, single.issuer_key_hash, single.serial_number) != \
                (name_h, key_h, want[2]):
            continue
        this = single.this_update_utc
        nxt = single.next_update_utc
        if this > now + CLOCK_SKEW:
            raise OCSPError(f"OCSP response thisUpdate {this:%Y-%m-%d %H:%M:%S} UTC is in "
                            "the future")
        if nxt is not None and nxt < now - CLOCK_SKEW:
            raise OCSPError(f"OCSP response expired (nextUpdate {nxt:%Y-%m-%d %H:%M:%S} UTC)")
        if nxt is None and this < now - MAX_AGE_WITHOUT_NEXT_UPDATE:
            raise OCSPError(f"OCSP response without nextUpdate is too old (thisUpdate "
                            f"{this:%Y-%m-%d %H:%M:%S} UTC)")
        if nonce:
            try:
                got = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
            except x509.ExtensionNotFound:
                got = None
            if got is not None and got != nonce:
                raise OCSPError("OCSP response nonce does not match the request's")
        st = single.certificate_status
        if st == ocsp.OCSPCertStatus.GOOD:
            return OCSPAnswer("good", this, nxt)
        if st == ocsp.OCSPCertStatus.REVOKED:
            why = single.revocation_reason
            return OCSPAnswer("revoked", this, nxt, single.revocation_time_utc,
                              why.name if why is not None else "")
        return OCSPAnswer("unknown", this, nxt)
    raise OCSPError("OCSP response has no status for this certificate")


def crl_for(der: bytes, issuer: x509.Certificate) -> x509.CertificateRevocationList:
    """A fetched CRL (DER, or PEM as some servers send), checked against its issuer."""
    try:
        crl = px.load_crl(der)
    except ValueError as e:
        raise ValueError(f"malformed CRL ({e})") from None
    if crl.issuer != issuer.subject:
        raise ValueError(f"CRL issuer '{crl.issuer.rfc4514_string()}' is not "
                         f"'{issuer.subject.rfc4514_string()}'")
    try:
        ok = crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError("CRL signature does not verify with the issuer's key")
    return crl
