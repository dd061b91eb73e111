"""X.509 for IKE (RFC 7296 §3.6/§3.7, RFC 4945 §5): loading, CERTREQ hashes, path
validation with ``cryptography.x509.verification`` and CRL checks.

Path validation uses ``cryptography``'s verifier (RFC 5280 path building, validity,
basic constraints, name constraints, signature checks).  Its default end-entity
policy is the Web PKI's (a subjectAltName and the serverAuth/clientAuth EKU are
required), which is not IKE's: RFC 4945 §5.1.3.12 accepts a certificate without
EKU, or one naming serverAuth, clientAuth, id-kp-ipsecIKE or anyExtendedKeyUsage,
and needs no subjectAltName when the ID is the subject DN.  So the verifier is
built with ``extension_policies`` of our own: everything the CA policy of the
Web PKI asks of CAs but for basicConstraints (cA asserted, critical or not) and
keyUsage (keyCertSign when present), which follow RFC 5280 §6.1.4 as NSS does
(:func:`_ca_policy`), and for the end entity an optional EKU checked by
:func:`_eku_ok`, an optional keyUsage that must allow digitalSignature or
nonRepudiation (RFC 4945 §5.1.3.2), any subjectAltName, no basicConstraints cA
(Libreswan 5.2 takes no CA certificate as the peer's own).

The verifier does not do revocation: :func:`revoked` checks each certificate of
the validated chain against the CRLs given (signature by the issuer, time window).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509 import verification as xv
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier, SignatureAlgorithmOID

IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")  # id-kp-ipsecIKE (RFC 4945 §5.1.3.12)
_IKE_EKUS = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH, IPSEC_IKE,
             ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
_EDDSA_SIGS = {SignatureAlgorithmOID.ED25519, SignatureAlgorithmOID.ED448}


class CertError(Exception):
    """A certificate that cannot be used; the text names the reason for the log."""


# What ``cryptography`` raises for a certificate, CRL or OCSP response it parsed but
# cannot use: a field decoded on access (names, extensions), a public key it refuses
# (an RSA exponent of 0, CVE-2026-14957), an algorithm it does not know.  Input from a
# peer that raises one of these is refused as malformed, never an internal error.
# (``InvalidVersion``, a version field out of range, is no ValueError.)
MALFORMED = (ValueError, TypeError, UnsupportedAlgorithm, x509.InvalidVersion)


def load_certs(data: bytes) -> list[x509.Certificate]:
    """Every certificate in PEM ``data`` (or the one DER certificate); ValueError if
    they cannot be loaded."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except x509.InvalidVersion as e:
        raise ValueError(str(e)) from None


def load_key(data: bytes, password: bytes | None = None) -> PrivateKeyTypes:
    """A private key from PEM or DER (PKCS#8 / traditional); ValueError if it cannot be
    loaded (an encrypted key without its password, a key type cryptography lacks)."""
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password)
        return serialization.load_der_private_key(data, password)
    except (TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(str(e)) from None


def load_crl(data: bytes) -> x509.CertificateRevocationList:
    """A CRL from PEM or DER; ValueError if it cannot be loaded."""
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except x509.InvalidVersion as e:
        raise ValueError(str(e)) from None


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def same_public_key(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``key`` is the private half of ``cert``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    try:
        return key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
            cert.public_key().public_bytes(serialization.Encoding.DER, spki)
    except MALFORMED:
        return False


def spki_sha1(cert: x509.Certificate) -> bytes:
    """The CERTREQ entry for a CA: SHA-1 of its SubjectPublicKeyInfo (RFC 7296 §3.7)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(spki).digest()  # noqa: S324 - the hash RFC 7296 §3.7 prescribes


def subject_dn_der(cert: x509.Certificate) -> bytes:
    """The subject DN as an ID_DER_ASN1_DN payload carries it (RFC 7296 §3.5)."""
    return cert.subject.public_bytes()


def _eku_ok(policy: object, cert: object, eku: x509.ExtendedKeyUsage | None) -> None:
    """RFC 4945 §5.1.3.12: no EKU, or one IKE may use."""
    if eku is not None and not set(eku) & _IKE_EKUS:
        raise ValueError("extendedKeyUsage allows no IKE use")


def _ku_ok(policy: object, cert: object, ku: x509.KeyUsage | None) -> None:
    """RFC 4945 §5.1.3.2: digitalSignature or nonRepudiation when keyUsage is present."""
    if ku is not None and not (ku.digital_signature or ku.content_commitment):
        raise ValueError("keyUsage allows no digital signature")


def _ee_bc_ok(policy: object, cert: object, bc: x509.BasicConstraints | None) -> None:
    """Libreswan 5.2 (``match_peer_id_cert``): no CA certificate as the peer's own."""
    if bc is not None and bc.ca:
        raise ValueError("a CA certificate (basicConstraints cA) is no peer certificate")


def _ee_policy() -> xv.ExtensionPolicy:
    agn = xv.Criticality.AGNOSTIC
    return (xv.ExtensionPolicy.permit_all()
            .may_be_present(x509.ExtendedKeyUsage, agn, _eku_ok)
            .may_be_present(x509.KeyUsage, agn, _ku_ok)
            .may_be_present(x509.BasicConstraints, agn, _ee_bc_ok))


def _ca_bc_ok(policy: object, cert: object, bc: x509.BasicConstraints) -> None:
    """RFC 5280 §6.1.4 (k): an issuing CA asserts cA, its basicConstraints critical or not
    (NSS takes both; Libreswan's test CAs have it non-critical)."""
    if not bc.ca:
        raise ValueError("basicConstraints.cA must be asserted in a CA certificate")


def _ca_ku_ok(policy: object, cert: object, ku: x509.KeyUsage | None) -> None:
    """RFC 5280 §6.1.4 (n): keyCertSign, when keyUsage is present."""
    if ku is not None and not ku.key_cert_sign:
        raise ValueError("keyUsage.keyCertSign must be asserted in a CA certificate")


def _ca_policy(base: xv.ExtensionPolicy) -> xv.ExtensionPolicy:
    """``base`` with RFC 5280's CA rules for basicConstraints and keyUsage in place of
    the Web PKI's (which want both, and basicConstraints critical)."""
    agn = xv.Criticality.AGNOSTIC
    return (base.require_present(x509.BasicConstraints, agn, _ca_bc_ok)
            .may_be_present(x509.KeyUsage, agn, _ca_ku_ok))


@dataclass
class Verified:
    """A validated chain, leaf first, trust anchor last."""

    chain: list[x509.Certificate]


def _reason(err: Exception, leaf: x509.Certificate, now: datetime.datetime) -> str:
    """A short reason for the log line: the common failures named plainly."""
    if now < leaf.not_valid_before_utc:
        return f"certificate is not yet valid (valid from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)"
    if now > leaf.not_valid_after_utc:
        return f"certificate has expired ({leaf.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"
    text = str(err)
    m = re.search(r"validator failed: \w+: (.*?) \(encountered", text)
    if m:
        return f"certificate cannot be used for IKE: {m.group(1)}"
    if "candidates exhausted" in text or "no valid chain" in text.lower():
        if "expired" in text or "not yet valid" in text or "validity" in text.lower():
            return f"an issuing CA certificate is outside its validity ({text})"
        return f"no path to a trusted CA ({text})"
    return text


def verify_chain(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                 anchors: Sequence[x509.Certificate], now: datetime.datetime) -> Verified:
    """Validate ``leaf`` up to one of ``anchors`` at ``now``; raise CertError saying why."""
    if not anchors:
        raise CertError("no trusted CA certificates loaded")
    builder = (xv.PolicyBuilder().store(xv.Store(list(anchors))).time(now)
               .max_chain_depth(8)
               .extension_policies(
                   ca_policy=_ca_policy(xv.ExtensionPolicy.webpki_defaults_ca()),
                   ee_policy=_ee_policy()))
    try:
        leaf.public_key()
    except MALFORMED as e:
        raise CertError(f"certificate has an unusable public key ({e})") from None
    if leaf.signature_algorithm_oid in _EDDSA_SIGS:
        return _verify_eddsa_leaf(leaf, intermediates, anchors, now)
    try:
        verifier = builder.build_client_verifier()
        got = verifier.verify(leaf, list(intermediates))
    except xv.VerificationError as e:
        raise CertError(_reason(e, leaf, now)) from None
    except MALFORMED as e:  # e.g. an unsupported key in the chain
        raise CertError(str(e)) from None
    return Verified(list(got.chain))


def _verify_eddsa_leaf(leaf: x509.Certificate, intermediates: Sequence[x509.Certificate],
                       anchors: Sequence[x509.Certificate], now: datetime.datetime) -> Verified:
    """An end entity its CA signed with EdDSA (RFC 8410 / RFC 8420).

    ``cryptography``'s verifier follows the Web PKI's algorithm list, which has no
    EdDSA issuer ("Forbidden public key algorithm"; an EdDSA leaf under an RSA/ECDSA CA
    it takes), so the one link it cannot take is checked here: the leaf's validity,
    its critical extensions, its issuer's signature on it, its keyUsage and EKU by the
    same IKE rules; the issuer's own path goes through the verifier, the issuer held to
    what a CA must be (RFC 5280 §6.1.4: basicConstraints cA, keyCertSign, the
    pathLenConstraints above it counting it).  nameConstraints above such a leaf are
    not checked here: refused.
    """
    if now < leaf.not_valid_before_utc or now > leaf.not_valid_after_utc:
        raise CertError(_reason(ValueError("validity"), leaf, now))
    try:
        odd = [e.oid.dotted_string for e in leaf.extensions
               if e.critical and isinstance(e.value, x509.UnrecognizedExtension)]
        if odd:  # RFC 5280 §4.2
            raise ValueError(f"unknown critical extension {odd[0]}")
        try:
            _eku_ok(None, leaf,
                    leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        except x509.ExtensionNotFound:
            pass
        try:
            _ku_ok(None, leaf, leaf.extensions.get_extension_for_class(x509.KeyUsage).value)
        except x509.ExtensionNotFound:
            pass
        try:
            _ee_bc_ok(None, leaf,
                      leaf.extensions.get_extension_for_class(x509.BasicConstraints).value)
        except x509.ExtensionNotFound:
            pass
    except ValueError as e:
        raise CertError(f"certificate cannot be used for IKE: {e}") from None
    pool = list(intermediates) + list(anchors)
    for issuer in pool:
        if issuer.subject != leaf.issuer:
            continue
        try:
            leaf.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            continue
        if any(issuer == a for a in anchors):
            return Verified([leaf, issuer])
        rest = [c for c in intermediates if c != issuer]
        up = _verify_ca(issuer, rest, anchors, now)
        _issuer_constraints(up)
        return Verified([leaf] + up)
    raise CertError("no path to a trusted CA (no issuer certificate signed it)")


def _issuer_constraints(up: list[x509.Certificate]) -> None:
    """``up`` (issuer first, anchor last) validated with the issuer as its end: the
    verifier did not count the issuer as an intermediate CA of the pathLenConstraints
    above it, nor apply their nameConstraints to the leaf below."""
    for i, ca in enumerate(up):
        exts = ca.extensions
        if any(isinstance(e.value, x509.NameConstraints) for e in exts):
            raise CertError(f"no path to a trusted CA ('{ca.subject.rfc4514_string()}' "
                            "has name constraints, not checked for an EdDSA-signed "
                            "certificate)")
        try:
            limit = exts.get_extension_for_class(x509.BasicConstraints).value.path_length
        except x509.ExtensionNotFound:
            continue
        below = sum(1 for c in up[:i] if c.issuer != c.subject)
        if limit is not None and below > limit:
            raise CertError("no path to a trusted CA (path length constraint violated)")


def _verify_ca(ca: x509.Certificate, intermediates: Sequence[x509.Certificate],
               anchors: Sequence[x509.Certificate], now: datetime.datetime
               ) -> list[x509.Certificate]:
    """The verifier's path for an issuing CA taken as the end of the path (held to
    what a CA must be, as the CAs above it)."""
    builder = (xv.PolicyBuilder().store(xv.Store(list(anchors))).time(now).max_chain_depth(8)
               .extension_policies(
                   ca_policy=_ca_policy(xv.ExtensionPolicy.webpki_defaults_ca()),
                   ee_policy=_ca_policy(xv.ExtensionPolicy.permit_all())))
    try:
        return list(builder.build_client_verifier().verify(ca, list(intermediates)).chain)
    except xv.VerificationError as e:
        raise CertError(_reason(e, ca, now)) from None
    except MALFORMED as e:
        raise CertError(str(e)) from None


@dataclass
class CheckedCRL:
    """A CRL whose signature its store has already verified (NSS checks a CRL's
    signature when ``crlutil -I`` imports it): issuer, next update, revoked serials."""

    issuer: x509.Name
    next_update: datetime.datetime | None
    serials: dict[int, datetime.datetime]


def revoked(chain: Sequence[x509.Certificate],
            crls: Iterable[x509.CertificateRevocationList | CheckedCRL],
            now: datetime.datetime, strict: bool) -> str | None:
    """Why the validated ``chain`` is revoked (or, when ``strict``, lacks a current CRL).

    Each non-anchor certificate is looked up in the CRLs its issuer signed.
    """
    crl_list = list(crls)
    for cert, issuer in zip(chain, chain[1:], strict=False):
        found = False
        for checked in crl_list:
            if not isinstance(checked, CheckedCRL):
                continue
            if checked.issuer != issuer.subject or (
                    strict and checked.next_update is not None and checked.next_update < now):
                continue
            found = True
            when = checked.serials.get(cert.serial_number)
            if when is not None:
                return (f"certificate serial {cert.serial_number:#x} "
                        f"'{cert.subject.rfc4514_string()}' is revoked "
                        f"(since {when:%Y-%m-%d %H:%M:%S} UTC)")
        for crl in crl_list:
            if isinstance(crl, CheckedCRL):
                continue
            if crl.issuer != issuer.subject:
                continue
            try:
                if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                    continue
            except (TypeError, ValueError):
                continue
            nxt = crl.next_update_utc
            if nxt is not None and nxt < now:
                if strict:
                    continue  # an expired CRL does not count under crl-strict
            found = True
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is not None:
                return (f"certificate serial {cert.serial_number:#x} "
                        f"'{cert.subject.rfc4514_string()}' is revoked "
                        f"(since {entry.revocation_date_utc:%Y-%m-%d %H:%M:%S} UTC)")
        if strict and not found:
            return (f"no current CRL from '{issuer.subject.rfc4514_string()}' "
                    "(crl-strict=yes)")
    return None


def san_has(cert: x509.Certificate, id_type: int, data: bytes) -> bool:
    """Whether an FQDN / RFC822 / IP ID (RFC 7296 §3.5) is one of the subjectAltNames."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_type == 2:  # ID_FQDN
        want = data.decode("ascii", "replace").lower().rstrip(".")
        return any(n.lower().rstrip(".") == want for n in san.get_values_for_type(x509.DNSName))
    if id_type == 3:  # ID_RFC822_ADDR
        want = data.decode("ascii", "replace").lower()
        return any(n.lower() == want for n in san.get_values_for_type(x509.RFC822Name))
    if id_type in (1, 5) and len(data) in (4, 16):
        return ipaddress.ip_address(data) in san.get_values_for_type(x509.IPAddress)
    return False
