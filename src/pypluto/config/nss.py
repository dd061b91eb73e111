"""Libreswan's NSS database (``--nssdir``, default ``/var/lib/ipsec/nss``), read through
NSS's own tools from ``libnss3-tools``: ``certutil`` lists the certificates and their
trust flags and exports certificates; ``pk12util`` exports a certificate with its
private key to a PKCS#12 file in a private temporary directory, which ``cryptography``
then reads.  NSS's database format and key encryption are never re-implemented.

Passwords: the database is made by ``ipsec initnss`` without a password (``certutil -N
--empty-password``); a password-protected database takes ``password`` (``: PIN``).
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from pypluto.crypto import x509 as px


class NSSError(Exception):
    """The NSS database or its tools failed; the text says how."""


@dataclass(frozen=True)
class NSSEntry:
    nickname: str
    trust: str  # "CT,," / "u,u,u" as certutil shows them

    @property
    def is_ca(self) -> bool:
        """Trusted as a CA for some purpose (a ``C`` trust flag, as ``ipsec import`` sets)."""
        return "C" in self.trust

    @property
    def has_key(self) -> bool:
        return "u" in self.trust


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise NSSError(f"{name} not found (install libnss3-tools)")
    return path


class NSSDB:
    """One NSS database directory (``sql:`` format, cert9.db/key4.db)."""

    def __init__(self, directory: str, password: str = "") -> None:
        self.directory = directory
        self.password = password

    @property
    def spec(self) -> str:
        return "sql:" + self.directory

    def exists(self) -> bool:
        return os.path.exists(os.path.join(self.directory, "cert9.db"))

    def _run(self, *args: str, inp: bytes | None = None) -> bytes:
        try:
            out = subprocess.run(list(args), input=inp, capture_output=True, timeout=30,
                                 check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise NSSError(f"{args[0]}: {e}") from None
        if out.returncode != 0:
            msg = (out.stderr or out.stdout).decode("utf-8", "replace").strip().splitlines()
            raise NSSError(f"{os.path.basename(args[0])} failed: {msg[-1] if msg else out.returncode}")
        return out.stdout

    def entries(self) -> list[NSSEntry]:
        """Every certificate of the database with its trust flags (``certutil -L``)."""
        text = self._run(_tool("certutil"), "-L", "-d", self.spec).decode("utf-8", "replace")
        res: list[NSSEntry] = []
        for line in text.splitlines():
            parts = line.rstrip().rsplit(None, 1)
            if len(parts) != 2 or parts[1].count(",") != 2:
                continue
            res.append(NSSEntry(parts[0].strip(), parts[1]))
        return res

    def certificate(self, nickname: str) -> x509.Certificate:
        der = self._run(_tool("certutil"), "-L", "-d", self.spec, "-n", nickname, "-r")
        return px.load_certs(der)[0]  # ValueError if it cannot be loaded

    def ca_certificates(self) -> list[x509.Certificate]:
        """The trust anchors: certificates with a ``C`` trust flag."""
        return [self.certificate(e.nickname) for e in self.entries() if e.is_ca]

    def key_and_chain(self, nickname: str
                      ) -> tuple[PrivateKeyTypes, x509.Certificate, list[x509.Certificate]]:
        """The private key, certificate and the CA certificates NSS exports with it
        (``pk12util -o`` to a temporary PKCS#12, read by ``cryptography``)."""
        p12pw = secrets.token_hex(16)
        with tempfile.TemporaryDirectory(prefix="pypluto-nss-") as tmp:
            out = os.path.join(tmp, "export.p12")
            pwfile = os.path.join(tmp, "p12pw")
            dbpw = os.path.join(tmp, "dbpw")
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, p12pw.encode() + b"\n")
            os.close(fd)
            fd = os.open(dbpw, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, self.password.encode() + b"\n")
            os.close(fd)
            self._run(_tool("pk12util"), "-o", out, "-n", nickname, "-d", self.spec,
                      "-w", pwfile, "-k", dbpw)
            with open(out, "rb") as f:
                data = f.read()
        with warnings.catch_warnings():  # NSS writes BER lengths cryptography warns about
            warnings.simplefilter("ignore", UserWarning)
            key, cert, extra = pkcs12.load_key_and_certificates(data, p12pw.encode())
        if key is None or cert is None:
            raise NSSError(f"'{nickname}' has no private key in {self.directory}")
        return key, cert, list(extra)

    def crls(self) -> list[px.CheckedCRL]:
        """The CRLs ``crlutil -I`` imported (NSS verified their signatures then), read
        from ``crlutil -L`` listings: issuer, next update and the revoked serials."""
        try:
            text = self._run(_tool("crlutil"), "-L", "-d", self.spec).decode("utf-8", "replace")
        except NSSError:
            return []
        names = []
        for line in text.splitlines():
            m = re.match(r"^(.*\S)\s+CRL\s*$", line)
            if m and not line.startswith("CRL names"):
                names.append(m.group(1))
        res = []
        for name in names:
            try:
                out = self._run(_tool("crlutil"), "-L", "-d", self.spec, "-n", name)
                res.append(parse_crl_listing(out.decode("utf-8", "replace")))
            except (NSSError, ValueError):
                continue
        return res


def _nss_time(text: str) -> datetime.datetime:
    return datetime.datetime.strptime(text.strip(), "%a %b %d %H:%M:%S %Y").replace(
        tzinfo=datetime.UTC)


def parse_crl_listing(text: str) -> px.CheckedCRL:
    """One ``crlutil -L -n NAME`` listing as a :class:`CheckedCRL`."""
    m = re.search(r'^\s*Issuer: "(.*)"\s*$', text, re.MULTILINE)
    if m is None:
        raise ValueError("no Issuer in the crlutil listing")
    issuer = x509.Name.from_rfc4514_string(m.group(1))
    nxt = re.search(r"^\s*Next Update: (.*)$", text, re.MULTILINE)
    serials: dict[int, datetime.datetime] = {}
    for e in re.finditer(r"Serial Number:\s*\n((?:\s+[0-9a-fA-F:]+\n)+)\s*Revocation Date: (.*)",
                         text):
        hexs = re.sub(r"[^0-9a-fA-F]", "", e.group(1))
        serials[int(hexs, 16)] = _nss_time(e.group(2))
    return px.CheckedCRL(issuer, _nss_time(nxt.group(1)) if nxt else None, serials)
