"""Red team 25: X.509 authentication against a peer that holds a certificate (or a key)
of the trusted PKI and lies with it.

* IDs: the ID a peer shows (IDi, and the responder's IDr) must be in its certificate
  (RFC 4945 §3.1, Libreswan 5.2 ``require-id-on-certificate=yes``): FQDN, IPv4/IPv6,
  RFC822, DN, KEY_ID, each against its own kind of subjectAltName only;
* chains: an end entity used as a CA (for ECDSA and EdDSA leaves, and for a leaf an
  Ed25519 CA signed, the path ``cryptography``'s verifier cannot take), a CA without
  basicConstraints or keyCertSign, pathLenConstraint, nameConstraints, unknown critical
  extensions, expired / not yet valid intermediates, chains too deep, same-named loops,
  duplicates and unrelated extra certificates, a CA certificate as the peer's own;
  CA certificates as Libreswan's own test PKI makes them (basicConstraints not
  critical, no keyUsage) are accepted, as RFC 5280 §6.1.4 and NSS accept them;
* CERT payloads of encodings we do not take (raw RSA key, hash and URL, PKCS #7);
* AUTH payloads whose method or AlgorithmIdentifier does not fit the certificate's key;
* RSA moduli below Libreswan's 512-bit minimum (certificates and ``rightpubkey=``);
* hostile CERTREQ payloads; ``rightca=`` naming a CA the peer's path does not pass;
  CRLs forged, stale, or of another issuer, with and without ``crl-strict``;
* no private key in any log line; a ``leftcert=`` file whose key is another's.

Each refusal is AUTHENTICATION_FAILED with a reason, nothing kept, no internal error.
"""

from __future__ import annotations

import datetime
import ipaddress
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from pki import DAY, NOW, PKI, Issued, make_ca, make_crl, make_ee, new_key

from pypluto.config.ids import parse_id
from pypluto.crypto import sigs
from pypluto.crypto import x509 as px
from pypluto.iana import PayloadType as PT
from pypluto.ike.actions import Log
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks import ike_auth
from pypluto.wire import payloads as wp

from .harness import Net
from .test_certs import cert_net
from .test_hostile_certs import _auth_with, _refused
from .test_hostile_ids24 import _forge, _id

WEST_IP = ipaddress.ip_address("192.0.2.1")
WEST_SANS = [x509.DNSName("west.example"), x509.RFC822Name("west@example.org"),
             x509.IPAddress(WEST_IP), x509.IPAddress(ipaddress.ip_address("2001:db8::1"))]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pypluto test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sign_hash(key: object) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _ca(cn: str, issuer: Issued, *, ca: bool | None = True, bc_critical: bool = True,
        path_length: int | None = None, ku: bool = True, key_cert_sign: bool = True,
        key: str = "p256", not_before: datetime.datetime = NOW - DAY,
        not_after: datetime.datetime = NOW + 90 * DAY) -> Issued:
    """A CA certificate under ``issuer`` with the basicConstraints / keyUsage asked for
    (``ca=None``: no basicConstraints at all)."""
    k = new_key(key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()), False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), False))  # type: ignore[arg-type]
    if ca is not None:
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length),
                            critical=bc_critical)
    if ku:
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, key_cert_sign,
                                          True, False, False), critical=False)
    cert = b.sign(issuer.key, _sign_hash(issuer.key))  # type: ignore[arg-type]
    chain = [issuer.cert] + issuer.chain if issuer.cert.issuer != issuer.cert.subject else []
    return Issued(cn, k, cert, chain)


def _east_refused(net: Net, want: str) -> list[str]:
    net.up()
    lines = net.east.logs()
    assert not net.established(net.east) and not net.established(net.west), lines
    assert not [m for m in lines + net.west.logs() if "internal error" in m]
    hits = [m for m in lines if want in m]
    assert len(hits) == 1, lines
    assert "AUTHENTICATION_FAILED" in hits[0], hits
    assert not net.east.engine.by_serial and not net.east.kernel_sas
    return lines


def _up(net: Net) -> None:
    net.up()
    assert net.established(net.east) and net.established(net.west), \
        net.east.logs() + net.west.logs()


# ================================================================ IDi vs the certificate
def _west_with_sans(tmp: Path, key: str = "p256") -> tuple[Net, PKI, Issued]:
    """West's certificate (subject CN=west) carries WEST_SANS; east takes any peer ID
    (a road warrior conn: ``right=%any``, here east's ``left``) so only the certificate
    can refuse it."""
    pki = PKI.build(key)
    west = pki.ee("west", key, extensions=[x509.SubjectAlternativeName(WEST_SANS)])
    net = cert_net(tmp, west, pki.ee("east", key), pki, east_kw={"left": "%any"})
    net.east.engine.connections["west-east"].remote.id = None
    return net, pki, west


def _signed(key: object, hash_id: int = sigs.HASH_SHA2_256, method: int = 14
            ) -> Callable[[IKESA, bytes, int], bytes]:
    """AUTH data: ``key``'s real signature over the octets of the (forged) IDi."""
    def auth(ike: IKESA, body: bytes, msgid: int) -> bytes:
        return sigs.sign(method, key, ike_auth._octets(ike, body, True, msgid),  # type: ignore[arg-type]
                         hash_id)
    return auth


def _dn(cn: str) -> bytes:
    return _name(cn).public_bytes()


NOT_IN_CERT = {
    "fqdn_other": (2, b"mallory.example"),
    "fqdn_is_the_cn": (2, b"west"),  # the subject's CN is no subjectAltName
    "fqdn_subdomain": (2, b"a.west.example"),
    "ipv4_other": (1, ipaddress.ip_address("192.0.2.99").packed),
    "ipv6_other": (5, ipaddress.ip_address("2001:db8::2").packed),
    "ipv6_mapped_v4": (5, ipaddress.ip_address("::ffff:192.0.2.1").packed),
    "rfc822_other": (3, b"mallory@example.org"),
    "dn_other_cn": (9, _dn("mallory")),
    "dn_wildcard_cn": (9, _dn("*")),
    "dn_of_the_issuer": (9, _dn("pypluto test intermediate")),
    "key_id": (11, b"west"),
}


def _refused_as_not_in_the_certificate(tmp_path: Path, id_type: int, data: bytes) -> None:
    """West signs (RFC 7427, its real key) for IDi (``id_type``, ``data``): refused as
    not in its certificate."""
    net, _, west = _west_with_sans(tmp_path)
    lines = _refused(net, _forge(net, idi=_id(id_type, data), method=14,
                                 auth=_signed(west.key)))
    assert any("is neither the subject nor a subjectAltName" in m for m in lines), lines


@pytest.mark.parametrize("case", sorted(NOT_IN_CERT))
def test_idi_not_in_the_certificate_is_refused(tmp_path: Path, case: str) -> None:
    """West signs (RFC 7427, its real key, over the lying IDi) and shows a certificate
    the trusted CA issued, but the ID it claims is not the subject nor a subjectAltName:
    refused (RFC 4945 §3.1; Libreswan 5.2 ``require-id-on-certificate=yes``)."""
    _refused_as_not_in_the_certificate(tmp_path, *NOT_IN_CERT[case])


CROSS_TYPE = {
    "fqdn_is_the_email": (2, b"west@example.org"),
    "fqdn_is_the_address": (2, b"192.0.2.1"),
    "rfc822_is_the_fqdn": (3, b"west.example"),
}


@pytest.mark.parametrize("case", sorted(CROSS_TYPE))
def test_id_matches_only_its_own_kind_of_subjectaltname(tmp_path: Path, case: str) -> None:
    """Libreswan 5.2 (``cert_verify_subject_alt_name``) compares an FQDN or RFC822 ID
    with dNSName and rfc822Name entries alike, and an FQDN ID that reads as an address
    with iPAddress entries.  RFC 4945 §3.1.1-§3.1.3 pairs each ID type with its own
    kind of subjectAltName (ID_FQDN with dNSName, ID_RFC822_ADDR with rfc822Name, an
    address ID with iPAddress) and RFC 5280 §4.2.1.6 keeps mail addresses out of
    dNSName: we follow the RFCs and refuse the cross-type match."""
    _refused_as_not_in_the_certificate(tmp_path, *CROSS_TYPE[case])


IN_CERT = {
    "fqdn": (2, b"west.example"),
    "fqdn_case_and_dot": (2, b"WEST.Example."),
    "ipv4": (1, WEST_IP.packed),
    "ipv6": (5, ipaddress.ip_address("2001:db8::1").packed),
    "rfc822": (3, b"west@example.org"),
    "dn": (9, _dn("west")),
}


@pytest.mark.parametrize("case", sorted(IN_CERT))
def test_idi_in_the_certificate_is_accepted(tmp_path: Path, case: str) -> None:
    """The same forge with an ID the certificate does carry: accepted (so the refusals
    above are about the ID)."""
    net, _, west = _west_with_sans(tmp_path)
    id_type, data = IN_CERT[case]
    acts = _forge(net, idi=_id(id_type, data), method=14, auth=_signed(west.key))
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert len(net.established(net.east)) == 1, lines
    ike = next(iter(net.east.engine.by_serial.values()))
    assert ike.remote_id is not None and ike.remote_id.data == data


def test_idi_of_another_certificate_holder(tmp_path: Path) -> None:
    """Mallory holds a certificate of the same CA and claims west's DN (the ID east
    expects) while sending its own certificate and signing with its own key."""
    pki = PKI.build()
    west, mallory = pki.ee("west"), pki.ee("mallory")
    net = cert_net(tmp_path, mallory, pki.ee("east"), pki)
    net.west.engine.connections["west-east"].local.id = parse_id(west.dn)
    net.east.engine.connections["west-east"].remote.id = parse_id(west.dn)
    _east_refused(net, "is neither the subject nor a subjectAltName")


# ================================================================ chains
def _evil_chains() -> dict[str, tuple[Callable[[PKI], Issued], str]]:
    def ee_as_ca(key: str) -> Callable[[PKI], Issued]:
        return lambda pki: make_ee("west", pki.ee("mallory"), key)

    def under(make_issuer: Callable[[PKI], Issued]) -> Callable[[PKI], Issued]:
        return lambda pki: make_ee("west", make_issuer(pki))

    def deep(pki: PKI) -> Issued:
        ca = pki.inter
        for i in range(9):
            ca = make_ca(f"deep {i}", issuer=ca)
        return make_ee("west", ca)

    def pathlen(pki: PKI) -> Issued:
        zero = _ca("pathlen zero", pki.inter, path_length=0)
        return make_ee("west", _ca("below pathlen zero", zero))

    return {
        "ee_as_ca_p256": (ee_as_ca("p256"), "no path to a trusted CA"),
        "ee_as_ca_rsa": (ee_as_ca("rsa2048"), "no path to a trusted CA"),
        "ee_as_ca_ed25519": (ee_as_ca("ed25519"), "rejected"),
        "ca_without_basic_constraints": (under(lambda p: _ca("no bc", p.inter, ca=None)),
                                         "no path to a trusted CA"),
        "ca_false": (under(lambda p: _ca("ca false", p.inter, ca=False)),
                     "no path to a trusted CA"),
        "ca_without_keycertsign": (under(lambda p: _ca("no kcs", p.inter,
                                                       key_cert_sign=False)),
                                   "no path to a trusted CA"),
        "pathlen_violated": (pathlen, "no path to a trusted CA"),
        "expired_intermediate": (under(lambda p: _ca("old", p.inter,
                                                     not_before=NOW - 90 * DAY,
                                                     not_after=NOW - DAY)),
                                 "no path to a trusted CA"),
        "intermediate_not_yet_valid": (under(lambda p: _ca("young", p.inter,
                                                           not_before=NOW + DAY)),
                                       "no path to a trusted CA"),
        "chain_too_deep": (deep, "exceeds max depth"),
    }


EVIL = _evil_chains()


@pytest.mark.parametrize("case", sorted(EVIL))
def test_chain_that_must_not_validate(tmp_path: Path, case: str) -> None:
    """West's certificate comes (with its whole chain in CERT payloads) through a link
    RFC 5280 §6.1 refuses."""
    make, why = EVIL[case]
    pki = PKI.build()
    west = make(pki)
    net = cert_net(tmp_path, west, pki.ee("east"), pki,
                   authby="rsasig,ecdsa,eddsa")
    net.west.engine.connections["west-east"].local.sendcert = "always"
    lines = _east_refused(net, "certificate 'C=CH, O=pypluto test, CN=west' rejected")
    assert any(why in m for m in lines), lines


def _libreswan_style_ca(cn: str, issuer: Issued | None, key: str = "p256") -> Issued:
    """A CA as Libreswan's testing/x509/dist_certs.py makes them: basicConstraints
    CA:TRUE not critical; or as ``openssl req -x509`` with the stock v3_ca section does:
    no keyUsage."""
    k = new_key(key)
    sign_key = issuer.key if issuer else k
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(issuer.cert.subject if issuer else _name(cn))
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=False))
    cert = b.sign(sign_key, _sign_hash(sign_key))  # type: ignore[arg-type]
    chain = [issuer.cert] + issuer.chain if issuer and \
        issuer.cert.issuer != issuer.cert.subject else []
    return Issued(cn, k, cert, chain)


@pytest.mark.parametrize("key", ["p256", "ed25519"])
def test_ca_certificates_as_libreswan_test_pki_makes_them(tmp_path: Path, key: str) -> None:
    """RFC 5280 §6.1.4 (k)/(n): an issuing CA needs basicConstraints cA=TRUE (marked
    critical or not) and keyCertSign only when keyUsage is present; NSS (Libreswan)
    takes such CAs, Libreswan's own test PKI has them.  Accepted; an end entity's
    key still cannot sign certificates (test_chain_that_must_not_validate)."""
    root = _libreswan_style_ca("lsw root", None)
    inter = _libreswan_style_ca("lsw intermediate", root)
    pki = PKI(root, inter)
    west, east = make_ee("west", inter, key), make_ee("east", inter, key)
    net = cert_net(tmp_path, west, east, pki, authby="rsasig,ecdsa,eddsa")
    _up(net)


def test_eddsa_leaf_under_an_eddsa_ca(tmp_path: Path) -> None:
    """The path ``cryptography``'s verifier cannot take (an Ed25519 signature on the
    leaf, RFC 8410) still works, and still wants a CA above the leaf."""
    pki = PKI.build()
    ed_ca = make_ca("ed25519 intermediate", "ed25519", issuer=pki.inter)
    net = cert_net(tmp_path, make_ee("west", ed_ca, "ed25519"), pki.ee("east"), pki,
                   authby="rsasig,ecdsa,eddsa")
    _up(net)
    # an Ed25519 end entity whose key signs another certificate: no CA
    mallory = pki.ee("mallory", "ed25519")
    net2 = cert_net(tmp_path, make_ee("west", mallory, "ed25519"), pki.ee("east"), pki,
                    authby="rsasig,ecdsa,eddsa")
    _east_refused(net2, "rejected")
    # and an Ed25519 CA whose issuer allowed no CA below it (pathLenConstraint 0)
    zero = _ca("pathlen zero", pki.inter, path_length=0)
    ed_below = _ca("ed25519 below zero", zero, key="ed25519")
    net3 = cert_net(tmp_path, make_ee("west", ed_below, "ed25519"), pki.ee("east"), pki,
                    authby="rsasig,ecdsa,eddsa")
    _east_refused(net3, "path length")


def test_eddsa_leaf_and_name_constraints(tmp_path: Path) -> None:
    """An Ed25519 end entity under a CA whose nameConstraints do not permit its
    subjectAltName: refused as for any other key (RFC 5280 §4.2.1.10); one they permit
    is accepted."""
    pki = PKI.build()
    k = new_key("p256")
    nc = x509.NameConstraints(permitted_subtrees=[x509.DNSName("good.example")],
                              excluded_subtrees=None)
    cert = (x509.CertificateBuilder().subject_name(_name("constrained"))
            .issuer_name(pki.inter.cert.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), True)
            .add_extension(nc, True)
            .sign(pki.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    ca = Issued("constrained", k, cert, [pki.inter.cert])
    san = x509.SubjectAlternativeName([x509.DNSName("west.evil.example")])
    west = make_ee("west", ca, "ed25519", extensions=[san])
    net = cert_net(tmp_path, west, pki.ee("east"), pki, authby="rsasig,ecdsa,eddsa")
    _east_refused(net, "name constraint")
    # within the constraints: accepted (the verifier checked them, as for ECDSA)
    d = tmp_path / "permitted"
    d.mkdir()
    san = x509.SubjectAlternativeName([x509.DNSName("west.good.example")])
    west = make_ee("west", ca, "ed25519", extensions=[san])
    _up(cert_net(d, west, pki.ee("east"), pki, authby="rsasig,ecdsa,eddsa"))


def test_unknown_critical_extension_in_an_eddsa_leaf(tmp_path: Path) -> None:
    """RFC 5280 §4.2: a critical extension we do not know refuses the certificate, an
    Ed25519 one too."""
    pki = PKI.build()
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"),
                                     b"\x05\x00")
    for key, ca in (("ed25519", pki.inter),
                    ("ed25519", make_ca("ed25519 intermediate", "ed25519", issuer=pki.inter))):
        k = new_key(key)
        cert = (x509.CertificateBuilder().subject_name(_name("west"))
                .issuer_name(ca.cert.subject).public_key(k.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
                .add_extension(odd, critical=True)
                .sign(ca.key, _sign_hash(ca.key)))  # type: ignore[arg-type]
        chain = [ca.cert] + ca.chain if ca is not pki.inter else [pki.inter.cert]
        west = Issued("west", k, cert, chain)
        d = tmp_path / ca.cn.replace(" ", "_")
        d.mkdir()
        net = cert_net(d, west, pki.ee("east"), pki, authby="rsasig,ecdsa,eddsa")
        _east_refused(net, "critical")


def _loop_certs(n: int) -> tuple[Issued, list[bytes]]:
    """``n`` CA certificates named X issued by X, all with one key, and a leaf issued
    by X with that key: each is an issuer candidate of each (the path builder's worst
    case), none leads to a trusted CA."""
    k = new_key("p256")
    x = _name("loop")
    certs = []
    for _ in range(n):
        certs.append(x509.CertificateBuilder().subject_name(x).issuer_name(x)
                     .public_key(k.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(k, hashes.SHA256()))
    leaf_key = new_key("p256")
    leaf = (x509.CertificateBuilder().subject_name(_name("west")).issuer_name(x)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + DAY).sign(k, hashes.SHA256()))
    return Issued("west", leaf_key, leaf, certs), [px.der(c) for c in certs]


def test_same_named_loop_of_fifty_cas(tmp_path: Path) -> None:
    """Fifty CA certificates that each issue each other: refused quickly (the path
    builder's signature budget), no internal error."""
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    leaf, loop = _loop_certs(50)
    lines = _refused(net, _auth_with(net, _certs(px.der(leaf.cert), *loop)))
    assert any("no path to a trusted CA" in m for m in lines), lines


def _certs(*ders: bytes, enc: int = 4) -> Callable[[list], list]:
    """Rewrite west's IKE_AUTH: its CERT payloads replaced by ``ders`` (encoding ``enc``)."""
    def rewrite(payloads: list) -> list:
        out = [p for p in payloads if p.payload_type != PT.CERT]
        at = next(i for i, p in enumerate(out) if p.payload_type == PT.AUTH)
        return out[:at] + [wp.CertPayload(enc, d) for d in ders] + out[at:]
    return rewrite


def test_duplicate_and_unrelated_certificates_are_harmless(tmp_path: Path) -> None:
    """West's CERT payloads: its certificate, the intermediate three times, an unrelated
    CA and root of another PKI, another end entity: the path is still found (RFC 7296
    §3.6 leaves the order of the other certificates open)."""
    pki, other = PKI.build(), PKI.build()
    west = pki.ee("west")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)
    inter = px.der(pki.inter.cert)
    extra = [inter, px.der(other.inter.cert), inter, px.der(pki.ee("carol").cert),
             inter, px.der(other.root.cert)]
    acts = _auth_with(net, _certs(px.der(west.cert), *extra))
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert len(net.established(net.east)) == 1, lines


# ================================================================ CERT encodings
@pytest.mark.parametrize("enc,data", [
    (11, b"raw RSA key"),  # Raw RSA Key (§3.6): no certificate on a certificate conn
    (12, b"\x11" * 20 + b"http://127.0.0.1:9/west.der"),  # Hash and URL of X.509
    (13, b"\x11" * 20 + b"http://127.0.0.1:9/bundle"),  # Hash and URL of a bundle
    (1, b"\x30\x00"),  # PKCS #7 wrapped: garbage
    (4, b""),  # an empty X.509 certificate
    (255, b"\x30\x00"),  # an encoding no one defined
])
def test_cert_encodings_we_do_not_take(tmp_path: Path, enc: int, data: bytes) -> None:
    """RFC 7296 §3.6: we take X.509 Certificate - Signature (4) only, and never fetch a
    hash-and-URL (we send no HTTP_CERT_LOOKUP_SUPPORTED): east finds no certificate
    (or a bad one), refuses, and started no fetch."""
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    net.east.engine.secrets.certs.revocation.policy.crlcheckinterval = 3600  # type: ignore[attr-defined]
    acts = _auth_with(net, _certs(data, enc=enc))
    lines = _refused(net, acts)
    assert any("peer sent no certificate" in m or "bad certificate" in m for m in lines), \
        lines
    assert not [a for a in acts if type(a).__name__ == "Compute"]


def test_hash_and_url_next_to_the_certificate_is_ignored(tmp_path: Path) -> None:
    """A hash-and-URL CERT next to the real X.509 one: the URL is not fetched, the
    certificate that is there authenticates west."""
    pki = PKI.build()
    west = pki.ee("west")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)

    def rewrite(payloads: list) -> list:
        out = _certs(px.der(west.cert), px.der(pki.inter.cert))(payloads)
        at = next(i for i, p in enumerate(out) if p.payload_type == PT.AUTH)
        return out[:at] + [wp.CertPayload(12, b"\x22" * 20 + b"http://127.0.0.1:9/x")] + \
            out[at:]
    acts = _auth_with(net, rewrite)
    assert len(net.established(net.east)) == 1, [a for a in acts if isinstance(a, Log)]
    assert not [a for a in acts if type(a).__name__ == "Compute"]


# ================================================================ AUTH vs the key
def _algid_auth(oid_der: bytes, sig: bytes) -> bytes:
    return bytes([len(oid_der)]) + oid_der + sig


ED25519_ALGID = bytes.fromhex("300506032b6570")
PSS_SHA256_ALGID = bytes.fromhex(
    "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a86"
    "4886f70d010108300d06096086480165030402010500a203020120")
ECDSA_SHA256_ALGID = bytes.fromhex("300a06082a8648ce3d040302")
RSA_SHA256_ALGID = bytes.fromhex("300d06092a864886f70d01010b0500")


def _mismatch_cases() -> dict[str, tuple[str, int, Callable[[object, bytes], bytes]]]:
    """name: (west's key type, AUTH method, AUTH data from (west's key, octets))."""
    def ecdsa_der(key: object, octets: bytes) -> bytes:
        return key.sign(octets, ec.ECDSA(hashes.SHA256()))  # type: ignore[attr-defined]

    def rsa_v15(key: object, octets: bytes) -> bytes:
        return key.sign(octets, _pkcs1(), hashes.SHA256())  # type: ignore[attr-defined]

    def raw_rs(key: object, octets: bytes) -> bytes:
        return sigs.sign(9, key, octets)  # type: ignore[arg-type]

    return {
        # the signature is right for the key, the AlgorithmIdentifier names another kind
        "ecdsa_key_ed25519_algid": ("p256", 14, lambda k, o: _algid_auth(
            ED25519_ALGID, ecdsa_der(k, o))),
        "ecdsa_key_rsa_pss_algid": ("p256", 14, lambda k, o: _algid_auth(
            PSS_SHA256_ALGID, ecdsa_der(k, o))),
        "ecdsa_key_rsa_algid": ("p256", 14, lambda k, o: _algid_auth(
            RSA_SHA256_ALGID, ecdsa_der(k, o))),
        "rsa_key_ed25519_algid": ("rsa2048", 14, lambda k, o: _algid_auth(
            ED25519_ALGID, rsa_v15(k, o))),
        "rsa_key_ecdsa_algid": ("rsa2048", 14, lambda k, o: _algid_auth(
            ECDSA_SHA256_ALGID, rsa_v15(k, o))),
        # the method is another key's
        "ecdsa_key_method_1": ("p256", 1, lambda k, o: ecdsa_der(k, o)),
        "rsa_key_method_9": ("rsa2048", 9, lambda k, o: rsa_v15(k, o)[:64]),
        "p256_key_method_10": ("p256", 10, lambda k, o: raw_rs(k, o) + bytes(32)),
        "p256_key_method_11": ("p256", 11, lambda k, o: raw_rs(k, o) + bytes(68)),
        "ed25519_key_ecdsa_algid": ("ed25519", 14, lambda k, o: _algid_auth(
            ECDSA_SHA256_ALGID, k.sign(o))),  # type: ignore[attr-defined]
        "ed25519_key_method_9": ("ed25519", 9, lambda k, o: k.sign(o)),  # type: ignore[attr-defined]
        # a signature over other octets / none at all
        "empty_signature": ("p256", 14, lambda k, o: _algid_auth(ECDSA_SHA256_ALGID, b"")),
        "algid_length_past_the_end": ("p256", 14, lambda k, o: b"\xff" + ECDSA_SHA256_ALGID),
    }


def _pkcs1() -> object:
    from cryptography.hazmat.primitives.asymmetric import padding
    return padding.PKCS1v15()


MISMATCH = _mismatch_cases()


@pytest.mark.parametrize("case", sorted(MISMATCH))
def test_auth_that_does_not_fit_the_certificate_key(tmp_path: Path, case: str) -> None:
    """West's real key signs the right octets, but the AUTH method or the RFC 7427
    AlgorithmIdentifier names another kind of key than the certificate's: refused."""
    key, method, make = MISMATCH[case]
    pki = PKI.build(key)
    west = pki.ee("west", key)
    net = cert_net(tmp_path, west, pki.ee("east", key), pki, authby="rsasig,ecdsa,eddsa")

    def auth(ike: IKESA, body: bytes, msgid: int) -> bytes:
        return make(west.key, ike_auth._octets(ike, body, True, msgid))
    _refused(net, _forge(net, method=method, auth=auth))


def test_auth_forger_with_the_right_algid_is_accepted(tmp_path: Path) -> None:
    """The same forge with the AlgorithmIdentifier that fits: accepted."""
    pki = PKI.build()
    west = pki.ee("west")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)

    def auth(ike: IKESA, body: bytes, msgid: int) -> bytes:
        octets = ike_auth._octets(ike, body, True, msgid)
        return _algid_auth(ECDSA_SHA256_ALGID, west.key.sign(  # type: ignore[call-arg]
            octets, ec.ECDSA(hashes.SHA256())))  # type: ignore[union-attr]
    _forge(net, method=14, auth=auth)
    assert len(net.established(net.east)) == 1, net.east.logs()


# ================================================================ small RSA keys
def _prime(bits: int, rng: random.Random) -> int:
    def probable(n: int) -> bool:
        if any(n % p == 0 for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return False
        d, s = n - 1, 0
        while d % 2 == 0:
            d, s = d // 2, s + 1
        for _ in range(24):
            x = pow(rng.randrange(2, n - 1), d, n)
            if x in (1, n - 1):
                continue
            for _ in range(s - 1):
                x = pow(x, 2, n)
                if x == n - 1:
                    break
            else:
                return False
        return True
    while True:
        c = rng.getrandbits(bits) | (3 << (bits - 2)) | 1
        if probable(c):
            return c


def _small_rsa(bits: int) -> rsa.RSAPrivateKey:
    """An RSA key of ``bits`` (``cryptography`` makes none under 1024)."""
    rng = random.Random(bits)
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
        try:
            d = pow(65537, -1, (p - 1) * (q - 1))
        except ValueError:
            continue
        return rsa.RSAPrivateNumbers(
            p, q, d, rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q),
            rsa.RSAPublicNumbers(65537, p * q)).private_key(unsafe_skip_rsa_key_validation=True)


def _rsa_west(pki: PKI, key: rsa.RSAPrivateKey) -> Issued:
    cert = (x509.CertificateBuilder().subject_name(_name("west"))
            .issuer_name(pki.inter.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
            .sign(pki.inter.key, hashes.SHA256()))  # type: ignore[arg-type]
    return Issued("west", key, cert, [pki.inter.cert])


@pytest.mark.parametrize(("bits", "up"), [(496, False), (1024, True)])
def test_rsa_modulus_under_512_bits_is_refused(tmp_path: Path, bits: int, up: bool) -> None:
    """Libreswan 5.2 (RSA_MIN_OCTETS, ``RSA modulus too small for security: less than
    512 bits``) takes no certificate whose RSA key is under 512 bits; 1024 bits it
    takes (2048 only in FIPS mode, which pypluto does not have).  West signs with
    AUTH method 1 (PKCS#1 v1.5 SHA-1, the one a 496-bit key can make)."""
    pki = PKI.build()
    net = cert_net(tmp_path, _rsa_west(pki, _small_rsa(bits)), pki.ee("east"), pki,
                   authby="rsasig,ecdsa")
    conn = net.west.engine.connections["west-east"]
    conn.local.auth, conn.remote.auth = "rsa-sha1", "ecdsa"
    if up:
        _up(net)
    else:
        _east_refused(net, "less than 512 bits")


def test_raw_rsa_pubkey_under_512_bits_is_refused() -> None:
    """``rightpubkey=`` (a SubjectPublicKeyInfo) of an RSA key under 512 bits: refused
    as ``rightrsasigkey=`` (RFC 3110) already was (Libreswan 5.2: the same minimum)."""
    import base64

    from pypluto.crypto import rawkey
    from pypluto.ike import auth_sig

    from .harness import make_conn
    for bits, ok in ((496, False), (1024, True)):
        spki = _small_rsa(bits).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        conn = make_conn(local_left=False, authby="rsasig")
        conn.remote.raw["pubkey"] = "0s" + base64.b64encode(spki).decode()
        got = auth_sig.remote_raw(conn)
        if ok:
            assert isinstance(got, rsa.RSAPublicKey) and got.key_size == bits
        else:
            assert isinstance(got, str) and "under 512 bits" in got, got
            with pytest.raises(rawkey.RawKeyError):
                rawkey.end_public_key(conn.remote.raw)


# ================================================================ CERTREQ
@pytest.mark.parametrize("what,payloads", [
    ("600_hashes", [wp.CertReqPayload(4, bytes(range(20)) * 600)]),
    ("not_a_multiple_of_20", [wp.CertReqPayload(4, b"\x01" * 33)]),
    ("empty", [wp.CertReqPayload(4, b"")]),
    ("hash_and_url_encoding", [wp.CertReqPayload(12, b"\x02" * 20)]),
    ("fifty_payloads", [wp.CertReqPayload(4, bytes([i]) * 20) for i in range(50)]),
])
def test_hostile_certreq_in_ike_auth(tmp_path: Path, what: str, payloads: list) -> None:
    """CERTREQ payloads (RFC 7296 §3.7) naming hundreds of CAs, none we know, of a
    length no SHA-1 list has, or of another encoding: a hint, never an error; east
    still authenticates west and answers with its own certificate."""
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)

    def rewrite(ps: list) -> list:
        at = next(i for i, p in enumerate(ps) if p.payload_type == PT.AUTH)
        return ps[:at] + payloads + ps[at:]
    acts = _auth_with(net, rewrite)
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert len(net.established(net.east)) == 1, lines
    assert not [m for m in lines if "internal error" in m]


# ================================================================ rightca=
def test_rightca_names_a_ca_the_peer_chain_does_not_pass(tmp_path: Path) -> None:
    """East trusts two PKIs of different names; rightca= names the first's root.  West's
    certificate from the second PKI validates, but not under that CA: refused."""
    a = PKI.build()
    root_b = make_ca("other root")
    b = PKI(root_b, make_ca("other intermediate", issuer=root_b))
    net = cert_net(tmp_path, b.ee("west"), a.ee("east"), a, west_pki=b)
    net.east.engine.secrets.certs.extra_anchors.append(root_b.cert)  # type: ignore[attr-defined]
    net.west.engine.secrets.certs.extra_anchors.append(a.root.cert)  # type: ignore[attr-defined]
    net.east.engine.connections["west-east"].remote.ca = "C=CH, O=pypluto test, " \
        "CN=pypluto test root"
    _east_refused(net, "is not issued under rightca=")


# ================================================================ CRLs
def _forged_crl(pki: PKI, revoked: list[Issued], next_update: datetime.datetime = NOW + DAY
                ) -> x509.CertificateRevocationList:
    """A CRL naming the intermediate as its issuer, signed by some other key."""
    liar = Issued(pki.inter.cn, new_key("p256"), pki.inter.cert, [])
    return make_crl(liar, revoked, next_update)


@pytest.mark.parametrize(("crl", "strict", "why"), [
    ("forged", False, None),  # not the issuer's signature: not a CRL at all
    ("forged", True, "no current CRL"),
    ("stale", False, "is revoked"),  # an old CRL's revocations still stand
    ("stale", True, "no current CRL"),  # crl-strict=yes wants a current one
    ("stale_not_listing", True, "no current CRL"),
])
def test_crl_forged_or_stale(tmp_path: Path, crl: str, strict: bool, why: str | None) -> None:
    """A CRL that lists west but whose signature is not the intermediate's counts for
    nothing; a CRL past its nextUpdate counts only without crl-strict (Libreswan 5.2:
    with crl-strict=yes an expired CRL is as good as none)."""
    pki = PKI.build()
    west = pki.ee("west")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)
    st = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    st.crl_strict = strict
    st.extra_crls.append(make_crl(pki.root, []))  # the root's own, current, empty
    if crl == "forged":
        st.extra_crls.append(_forged_crl(pki, [west]))
    else:
        listed = [west] if crl == "stale" else []
        st.extra_crls.append(make_crl(pki.inter, listed, next_update=NOW - DAY))
    if why is None:
        _up(net)
    else:
        _east_refused(net, why)


# ================================================================ secrets in logs
def _secret_forms(key: object) -> list[str]:
    """Text forms in which a private key could leak into a log line."""
    pem = key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    body = [ln for ln in pem.splitlines() if ln and not ln.startswith("-----")]
    der = key.private_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    out = body + [der.hex()[-64:], der.hex().upper()[-64:]]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        v = key.private_numbers().private_value
        out += [f"{v:x}", str(v)]
    if isinstance(key, rsa.RSAPrivateKey):
        n = key.private_numbers()
        out += [f"{n.d:x}"[:40], str(n.d)[:40], f"{n.p:x}"[:40], str(n.p)[:40]]
    return out


@pytest.mark.parametrize("key", ["p256", "rsa2048", "ed25519"])
def test_private_keys_never_reach_a_log(tmp_path: Path, key: str) -> None:
    """Every log line (debug ones too) of an establishment, a refused peer and a broken
    key file: no form of either side's private key."""
    pki = PKI.build(key)
    west, east = pki.ee("west", key), pki.ee("east", key)
    lines: list[str] = []
    net = cert_net(tmp_path, west, east, pki, authby="rsasig,ecdsa,eddsa")
    _up(net)
    lines += net.west.logs() + net.east.logs()
    bad = tmp_path / "bad"
    bad.mkdir()
    net2 = cert_net(bad, west, east, pki, authby="rsasig,ecdsa,eddsa")
    net2.east.engine.connections["west-east"].remote.id = parse_id("@nobody.example")
    net2.up()
    lines += net2.west.logs() + net2.east.logs()
    # a key file cut short, one of another key, one that is a certificate
    from pypluto.config.certs import CertStore, CredentialError
    pem = west.key_pem()
    for i, damaged in enumerate((pem[: len(pem) // 2], pem.replace(b"A", b"!", 3),
                                 west.cert_pem())):
        d = tmp_path / f"k{i}"
        d.mkdir()
        (d / "w.crt").write_bytes(west.cert_pem())
        (d / "w.key").write_bytes(damaged)
        with pytest.raises(CredentialError) as err:
            CertStore(ipsecdir=str(d)).local(str(d / "w.crt"))
        lines.append(str(err.value))
    text = "\n".join(lines)
    for k in (west.key, east.key):
        for form in _secret_forms(k):
            assert form not in text, form


def test_leftcert_whose_key_file_is_another_key(tmp_path: Path) -> None:
    """``leftcert=/path/west.crt`` with a west.key of another key pair (a pypluto
    addition: NSS pairs a certificate with its own key): refused when loaded, saying
    so, instead of signing with the wrong key and leaving the peer to guess."""
    from pypluto.config.certs import CertStore, CredentialError

    pki = PKI.build()
    west = pki.ee("west")
    (tmp_path / "west.crt").write_bytes(west.cert_pem())
    (tmp_path / "west.key").write_bytes(pki.ee("other").key_pem())
    with pytest.raises(CredentialError, match="does not belong to certificate"):
        CertStore(ipsecdir=str(tmp_path)).local(str(tmp_path / "west.crt"))
    d = tmp_path / "net"
    d.mkdir()
    net = cert_net(d, west, pki.ee("east"), pki)
    (d / "west.key").write_bytes(pki.ee("other").key_pem())
    net.west.engine.secrets.certs.reload()  # type: ignore[attr-defined]
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    assert any("does not belong to certificate" in m for m in net.west.logs()), \
        net.west.logs()


@pytest.mark.parametrize("key", ["p256", "ed25519"])
def test_ca_certificate_as_the_peers_own(tmp_path: Path, key: str) -> None:
    """West holds a CA certificate the trusted intermediate issued (cA=TRUE, keyUsage
    digitalSignature and keyCertSign) and authenticates with it as its own: refused, as
    Libreswan 5.2 does (``cannot use peer CA certificate``).  The Ed25519 one is signed
    by an Ed25519 CA (the path the verifier cannot take)."""
    pki = PKI.build()
    issuer = pki.inter if key == "p256" else \
        make_ca("ed25519 intermediate", "ed25519", issuer=pki.inter)
    k = new_key(key)
    cert = (x509.CertificateBuilder().subject_name(_name("west"))
            .issuer_name(issuer.cert.subject).public_key(k.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - DAY).not_valid_after(NOW + 90 * DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True,
                                         False, False), True)
            .sign(issuer.key, _sign_hash(issuer.key)))  # type: ignore[arg-type]
    chain = [issuer.cert] + ([pki.inter.cert] if issuer is not pki.inter else [])
    net = cert_net(tmp_path, Issued("west", k, cert, chain), pki.ee("east"), pki,
                   authby="rsasig,ecdsa,eddsa")
    _east_refused(net, "is no peer certificate")


# ================================================================ a lying responder
@pytest.mark.parametrize(("rightid", "idr", "up"), [
    ("%fromcert", (2, b"mallory.example"), False),
    ("%fromcert", (9, _dn("mallory")), False),
    ("%fromcert", (9, _dn("east")), True),
    ("@east.example", (9, _dn("mallory")), False),  # the certificate carries rightid=
    ("@east.example", (2, b"east.example"), True),
])
def test_responder_idr_not_in_its_certificate(tmp_path: Path, rightid: str,
                                              idr: tuple[int, bytes], up: bool) -> None:
    """The initiator holds the responder to the same rule: the IDr it answers with (and
    signs, with its real key) must be in the certificate it sends, whether west's
    rightid= is %fromcert or a name the certificate does carry (Libreswan 5.2 then takes
    the conn by the certificate)."""
    from pypluto.ike.identity import identity_from_wire

    pki = PKI.build()
    east = pki.ee("east", extensions=[x509.SubjectAlternativeName(
        [x509.DNSName("east.example")])])
    net = cert_net(tmp_path, pki.ee("west"), east, pki)
    net.west.engine.connections["west-east"].remote.id = parse_id(rightid)
    net.east.engine.connections["west-east"].local.id = identity_from_wire(*idr)
    net.up()
    lines = net.west.logs()
    assert bool(net.established(net.west)) is up, lines
    assert not [m for m in lines if "internal error" in m]
    if not up:
        hits = [m for m in lines if "is neither the subject nor a subjectAltName" in m]
        assert len(hits) == 1, lines
        assert not net.west.kernel_sas and not net.east.engine.by_serial
        assert any("could not authenticate us" in m for m in net.east.logs())


@pytest.mark.parametrize(("case", "why"), [
    ("intermediate_revoked_by_the_root", "is revoked"),
    ("west_serial_on_the_roots_crl", None),  # the root never issued west: no revocation
    ("west_serial_on_another_pkis_crl", None),
])
def test_crl_issuer_must_be_the_certificates_issuer(tmp_path: Path, case: str,
                                                    why: str | None) -> None:
    """A CRL speaks for the certificates its signer issued (RFC 5280 §6.3.3): the root's
    CRL revokes the intermediate and with it every certificate below; west's serial
    number on a CRL of another issuer revokes nothing, nor on the CRL of another PKI's
    intermediate that has the same DN as west's issuer (its signature is not the
    issuer's)."""
    pki = PKI.build()
    west = pki.ee("west")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)
    st = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    if case == "intermediate_revoked_by_the_root":
        st.extra_crls.append(make_crl(pki.root, [pki.inter]))
    elif case == "west_serial_on_the_roots_crl":
        st.extra_crls.append(make_crl(pki.root, [west]))
    else:
        other = PKI.build()
        st.extra_anchors.append(other.root.cert)
        st.extra_crls.append(make_crl(other.inter, [west]))
    if why is None:
        _up(net)
    else:
        _east_refused(net, why)
