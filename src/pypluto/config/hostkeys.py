"""Raw host keys in the NSS database, and the database's password.

* :class:`HostKeys`: the private keys of the database by CKAID (``leftckaid=``, or the
  CKAID of ``leftrsasigkey=``/``leftpubkey=``), read through NSS's soft token
  (``config.pkcs11``) and cached until ``reload`` (``rereadcerts``/``rereadall``);
  :meth:`HostKeys.public_keys` lists them (``ipsec showhostkey --list``,
  ``listpubkeys``).
* :func:`nss_password`: Libreswan's password file ``<ipsecdir>/nsspassword``, lines of
  ``TOKEN:password`` (``NSS Certificate DB:secret``; ``NSS FIPS 140-2 Certificate DB``
  in FIPS mode), as Libreswan's ``lib/libswan/lswnss.c`` reads it; the password itself
  never reaches a log, only its length.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from pypluto.config.pkcs11 import PKCS11Error, Token, TokenKey, token_name
from pypluto.crypto import rawkey

PASSWORD_FILE = "nsspassword"


class HostKeyError(Exception):
    """A raw host key cannot be used; the text names the key and the reason."""


def nss_password(ipsecdir: str | None, token: str | None = None) -> tuple[str | None, str]:
    """(password, a line for the log) from ``<ipsecdir>/nsspassword``.

    The password is None when the file or the token's line is missing; the log line
    names the file and the token and gives the password's length only.
    """
    token = token or token_name()
    if not ipsecdir:
        return None, "no ipsecdir for an NSS password file"
    path = os.path.join(ipsecdir, PASSWORD_FILE)
    try:
        with open(path, "rb") as f:
            data = f.read(4096)
    except FileNotFoundError:
        return None, f"NSS Password file \"{path}\" does not exist"
    except OSError as e:
        return None, f"NSS Password file \"{path}\" could not be read: {e.strerror}"
    for raw in data.replace(b"\r", b"\n").split(b"\n"):
        line = raw.decode("utf-8", "replace")
        if line.startswith(token + ":"):
            pw = line[len(token) + 1:]
            return pw, (f"NSS Password from file \"{path}\" for token \"{token}\" with "
                        f"length {len(pw)} passed to NSS")
    return None, f"NSS Password file \"{path}\" does not contain token \"{token}\""


@dataclass(frozen=True)
class PublicHostKey:
    """One key of the database with its public half (None: not RSA/EC)."""

    ckaid: str
    kind: str
    public: PublicKeyTypes | None

    @property
    def keyid(self) -> str:
        return rawkey.keyid(self.public) if self.public is not None else ""

    @property
    def bits(self) -> int:
        if isinstance(self.public, rsa.RSAPublicKey):
            return self.public.key_size
        if isinstance(self.public, ec.EllipticCurvePublicKey):
            return self.public.curve.key_size
        return 0


def _public(k: TokenKey) -> PublicKeyTypes | None:
    if k.kind == "rsa" and k.modulus and k.exponent:
        return rsa.RSAPublicNumbers(int.from_bytes(k.exponent, "big"),
                                    int.from_bytes(k.modulus, "big")).public_key()
    return None


class HostKeys:
    """The NSS database's private keys by CKAID (see the module doc)."""

    def __init__(self, nssdir: str | None, password: str | None = None) -> None:
        self.nssdir = nssdir
        self.password = password
        self._keys: dict[str, PrivateKeyTypes] = {}

    def reload(self) -> None:
        self._keys.clear()

    def private_key(self, ckaid: str) -> PrivateKeyTypes:
        """The private key whose CKAID is ``ckaid`` (hex; a unique prefix is enough, as
        for Libreswan's ``showhostkey --ckaid``)."""
        ck = ckaid.lower()
        if ck in self._keys:
            return self._keys[ck]
        if not self.nssdir:
            raise HostKeyError(f"private key with CKAID {ckaid}: no NSS database configured")
        try:
            with Token(self.nssdir, self.password) as tok:
                ids = [k.ckaid for k in tok.private_keys()]
                match = [i for i in ids if i.startswith(ck)]
                if len(match) != 1:
                    raise HostKeyError(
                        f"no private key with CKAID {ckaid} in the NSS database {self.nssdir}"
                        if not match else f"CKAID {ckaid} names {len(match)} keys")
                key = tok.export_key(match[0])
        except PKCS11Error as e:
            raise HostKeyError(f"private key with CKAID {ckaid}: {e}") from None
        self._keys[ck] = key
        return key

    def public_keys(self) -> list[PublicHostKey]:
        """Every private key of the database with its public key (``certutil -K``)."""
        if not self.nssdir:
            raise HostKeyError("no NSS database configured")
        try:
            with Token(self.nssdir, self.password) as tok:
                keys = tok.private_keys()
                res = []
                for k in keys:
                    pub = _public(k)
                    if pub is None and k.kind == "ec":
                        try:
                            pub = tok.export_key(k.ckaid).public_key()  # type: ignore[union-attr]
                        except PKCS11Error:
                            pub = None
                    res.append(PublicHostKey(k.ckaid, k.kind, pub))
                return res
        except PKCS11Error as e:
            raise HostKeyError(str(e)) from None
