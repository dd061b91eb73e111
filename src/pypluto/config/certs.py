"""The certificate store the engine authenticates with: trust anchors, our certificates
with their private keys, and CRLs.

Sources, in order: the NSS database (``--nssdir``; ``leftcert=<nickname>``; CAs are the
certificates with a ``C`` trust flag), then PEM/DER files (a pypluto addition):
``leftcert=/path/cert.pem`` with the key next to it (``.key``) or in
``<ipsecdir>/private/``, and CA / CRL files in ``<ipsecdir>/cacerts`` and
``<ipsecdir>/crls``.  Lookups are cached; ``reload`` drops the cache
(``rereadcerts``).  Errors name the certificate and the reason.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from pypluto.config.hostkeys import HostKeys, check_database
from pypluto.config.nss import NSSDB, NSSError
from pypluto.config.revocation import Revocation
from pypluto.crypto import x509 as px


class CredentialError(Exception):
    """A configured certificate or key cannot be used."""


@dataclass
class LocalCred:
    """Our certificate, its private key, and the intermediates to send."""

    name: str
    cert: x509.Certificate
    key: PrivateKeyTypes
    chain: list[x509.Certificate] = field(default_factory=list)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _is_self_signed(c: x509.Certificate) -> bool:
    return c.issuer == c.subject


class CertStore:
    """Trust anchors, local credentials and CRLs (see the module doc)."""

    def __init__(self, nssdir: str | None = None, ipsecdir: str | None = None,
                 password: str = "", crl_strict: bool = False) -> None:
        self.nss = NSSDB(nssdir, password) if nssdir else None
        self.hostkeys = HostKeys(nssdir, password or None)  # raw keys by CKAID
        self.ipsecdir = ipsecdir
        self.crl_strict = crl_strict
        # certificate validity is wall-clock time, which the engine's clock is not
        self.clock: Callable[[], float] = time.time
        self.extra_anchors: list[x509.Certificate] = []
        self.extra_crls: list[x509.CertificateRevocationList] = []
        self._local: dict[str, LocalCred] = {}
        self._peer: dict[str, x509.Certificate] = {}
        self._anchors: list[x509.Certificate] | None = None
        self._crls: list[x509.CertificateRevocationList | px.CheckedCRL] | None = None
        self._inter: list[x509.Certificate] | None = None
        self.revocation = Revocation()  # fetched CRLs, OCSP (config/revocation.py)

    def reload(self) -> None:
        self._local.clear()
        self._peer.clear()
        self.hostkeys.reload()
        self._anchors = None
        self._crls = None
        self._inter = None

    # ------------------------------------------------------------------ ours
    def local(self, name: str) -> LocalCred:
        """``leftcert=``: an NSS nickname, or a PEM/DER file path."""
        if name in self._local:
            return self._local[name]
        cred = self._load_local(name)
        self._local[name] = cred
        return cred

    def _load_local(self, name: str) -> LocalCred:
        if os.path.sep in name or os.path.exists(name):
            try:
                certs = px.load_certs(_read(name))
                stem = os.path.splitext(name)[0]
                cands = [stem + ".key", stem + ".pem.key"]
                if self.ipsecdir:
                    cands.append(os.path.join(self.ipsecdir, "private",
                                              os.path.basename(stem) + ".key"))
                keyfile = next((c for c in cands if os.path.exists(c)), None)
                if keyfile is None:
                    raise CredentialError(f"no private key for certificate file {name} "
                                          f"(looked for {', '.join(cands)})")
                key = px.load_key(_read(keyfile))
            except (OSError, ValueError) as e:
                raise CredentialError(f"cannot load certificate {name}: {e}") from None
            if not px.same_public_key(key, certs[0]):  # we would sign what none verifies
                raise CredentialError(f"private key {keyfile} does not belong to certificate "
                                      f"{name}")
            return LocalCred(name, certs[0], key,
                             [c for c in certs[1:] if not _is_self_signed(c)])
        if self.nss is None:
            raise CredentialError(f"certificate '{name}': no NSS database configured")
        try:
            key, cert, extra = self.nss.key_and_chain(name)
        except NSSError as e:
            # pk12util says "bad database" for a wrong password: name the real cause
            why = check_database(self.nss.directory, self.nss.password or None) or str(e)
            raise CredentialError(f"certificate '{name}' from NSS database "
                                  f"{self.nss.directory}: {why}") from None
        return LocalCred(name, cert, key, [c for c in extra if not _is_self_signed(c)])

    def peer_cert(self, name: str) -> x509.Certificate:
        """``rightcert=``: the peer's certificate, preloaded (nickname or file); cached."""
        if name not in self._peer:
            self._peer[name] = self._load_peer_cert(name)
        return self._peer[name]

    def _load_peer_cert(self, name: str) -> x509.Certificate:
        if os.path.sep in name or os.path.exists(name):
            try:
                return px.load_certs(_read(name))[0]
            except (OSError, ValueError) as e:
                raise CredentialError(f"cannot load certificate {name}: {e}") from None
        if self.nss is None:
            raise CredentialError(f"certificate '{name}': no NSS database configured")
        try:
            return self.nss.certificate(name)
        except (NSSError, ValueError) as e:
            raise CredentialError(f"certificate '{name}': {e}") from None

    # ------------------------------------------------------------------ trust
    def ca_file(self, path: str) -> list[x509.Certificate]:
        """The CA certificates of a PEM/DER file (``rightca=/path``, a pypluto addition)."""
        try:
            return px.load_certs(_read(path))
        except (OSError, ValueError) as e:
            raise CredentialError(f"cannot load CA file {path}: {e}") from None

    def anchors(self) -> list[x509.Certificate]:
        if self._anchors is None:
            res: list[x509.Certificate] = list(self.extra_anchors)
            if self.nss is not None and self.nss.exists():
                try:
                    res += self.nss.ca_certificates()
                except (NSSError, ValueError):
                    pass
            res += self._dir_certs("cacerts")
            self._anchors = res
        return self._anchors

    def intermediates(self) -> list[x509.Certificate]:
        """Untrusted CA certificates that may complete a peer's chain (NSS ``,,``)."""
        if self._inter is None:
            self._inter = self._load_intermediates()
        return self._inter

    def _load_intermediates(self) -> list[x509.Certificate]:
        res: list[x509.Certificate] = []
        if self.nss is not None and self.nss.exists():
            try:
                for e in self.nss.entries():
                    if not e.is_ca and not e.has_key:
                        c = self.nss.certificate(e.nickname)
                        bc = _basic_ca(c)
                        if bc:
                            res.append(c)
            except (NSSError, ValueError):
                pass
        return res

    def crls(self) -> list[x509.CertificateRevocationList | px.CheckedCRL]:
        """CRLs: the NSS database's (``crlutil -I``), then ``<ipsecdir>/crls`` files."""
        if self._crls is None:
            res: list[x509.CertificateRevocationList | px.CheckedCRL] = list(self.extra_crls)
            if self.nss is not None and self.nss.exists():
                res += self.nss.crls()
            if self.ipsecdir:
                d = os.path.join(self.ipsecdir, "crls")
                for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                    try:
                        res.append(px.load_crl(_read(os.path.join(d, f))))
                    except (OSError, ValueError):
                        continue
            self._crls = res
        return self._crls

    def has_current_crl(self, issuer: x509.Name, now: float) -> bool:
        """A CRL of ``issuer`` from the db or a file whose nextUpdate has not passed."""
        for c in self.crls():
            nxt = c.next_update if isinstance(c, px.CheckedCRL) else c.next_update_utc
            if c.issuer == issuer and (nxt is None or nxt.timestamp() >= now):
                return True
        return False

    def _dir_certs(self, sub: str) -> list[x509.Certificate]:
        if not self.ipsecdir:
            return []
        d = os.path.join(self.ipsecdir, sub)
        res: list[x509.Certificate] = []
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            try:
                res += px.load_certs(_read(os.path.join(d, f)))
            except (OSError, ValueError):
                continue
        return res


def _basic_ca(c: x509.Certificate) -> bool:
    try:
        return bool(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
