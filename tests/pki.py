"""Test PKIs built with ``cryptography``: a root CA, an intermediate CA, end entities
with RSA / ECDSA / Ed25519 keys, and the bad ones (expired, not yet valid, wrong
usage, unknown CA, revoked with a CRL)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
DAY = datetime.timedelta(days=1)


def new_key(kind: str) -> PrivateKeyTypes:
    if kind.startswith("rsa"):
        bits = int(kind[3:] or 2048)
        return rsa.generate_private_key(65537, bits)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pypluto test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _sign_hash(key: PrivateKeyTypes) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass
class Issued:
    cn: str
    key: PrivateKeyTypes
    cert: x509.Certificate
    chain: list[x509.Certificate] = field(default_factory=list)  # intermediates

    @property
    def dn(self) -> str:
        return f"C=CH, O=pypluto test, CN={self.cn}"

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def write(self, d: Path, stem: str) -> tuple[Path, Path]:
        c, k = d / f"{stem}.crt", d / f"{stem}.key"
        c.write_bytes(self.cert_pem())
        k.write_bytes(self.key_pem())
        return c, k


def make_ca(cn: str, key: str = "p256", issuer: Issued | None = None,
            not_before: datetime.datetime = NOW - DAY,
            not_after: datetime.datetime = NOW + 365 * DAY) -> Issued:
    k = new_key(key)
    sign_key = issuer.key if issuer else k
    b = (x509.CertificateBuilder().subject_name(_name(cn))
         .issuer_name(issuer.cert.subject if issuer else _name(cn))
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                      False), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(k.public_key()),
                        critical=False))
    if issuer:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            issuer.key.public_key()), critical=False)  # type: ignore[arg-type]
    cert = b.sign(sign_key, _sign_hash(sign_key))  # type: ignore[arg-type]
    chain = ([issuer.cert] + issuer.chain) if issuer else []
    return Issued(cn, k, cert, [c for c in chain if c.issuer != c.subject])


def make_ee(cn: str, issuer: Issued, key: str = "p256", *, san: str | None = None,
            not_before: datetime.datetime = NOW - DAY,
            not_after: datetime.datetime = NOW + 90 * DAY,
            eku: list[x509.ObjectIdentifier] | None = None,
            digital_signature: bool = True,
            extensions: list[x509.ExtensionType] | None = None) -> Issued:
    k = new_key(key)
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer.cert.subject)
         .public_key(k.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature, False, not digital_signature,
                                      False, False, False, False, False, False),
                        critical=True)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
             issuer.key.public_key()), critical=False))  # type: ignore[arg-type]
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    for ext in extensions or []:  # e.g. CRL distribution points, OCSP AIA (revocation)
        b = b.add_extension(ext, critical=False)
    cert = b.sign(issuer.key, _sign_hash(issuer.key))  # type: ignore[arg-type]
    chain = [issuer.cert] + issuer.chain if issuer.cert.issuer != issuer.cert.subject else []
    return Issued(cn, k, cert, chain)


def make_crl(issuer: Issued, revoked: list[Issued],
             next_update: datetime.datetime = NOW + 7 * DAY) -> x509.CertificateRevocationList:
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject)
         .last_update(NOW - DAY).next_update(next_update))
    for r in revoked:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
                                      .serial_number(r.cert.serial_number)
                                      .revocation_date(NOW - DAY).build())
    return b.sign(issuer.key, _sign_hash(issuer.key))  # type: ignore[arg-type]


SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING


@dataclass
class PKI:
    """root -> intermediate -> end entities."""

    root: Issued
    inter: Issued

    @classmethod
    def build(cls, key: str = "p256") -> PKI:
        root = make_ca("pypluto test root", "rsa2048" if key.startswith("rsa") else
                       "p256" if key == "ed25519" else key)
        return cls(root, make_ca("pypluto test intermediate", key if key != "ed25519" else
                                 "p256", issuer=root))

    def ee(self, cn: str, key: str = "p256", **kw: object) -> Issued:
        return make_ee(cn, self.inter, key, **kw)  # type: ignore[arg-type]
