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

import datetime
import os
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from pypluto.config import expiry
from pypluto.config.model import Connection
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
                            pub = tok.export_key(k.ckaid).public_key()
                        except PKCS11Error:
                            pub = None
                    res.append(PublicHostKey(k.ckaid, k.kind, pub))
                return res
        except PKCS11Error as e:
            raise HostKeyError(str(e)) from None


def check_database(nssdir: str | None, password: str | None) -> str | None:
    """Why the NSS database cannot be opened with ``password`` (a missing or wrong
    password), or None (it opens, or there is no database)."""
    if not nssdir or not os.path.exists(os.path.join(nssdir, "key4.db")):
        return None
    try:
        with Token(nssdir, password):
            return None
    except PKCS11Error as e:
        return str(e)


# ------------------------------------------------------------------ listpubkeys
_ID_NAMES = {1: "IPV4_ADDR", 2: "FQDN", 3: "USER_FQDN", 5: "IPV6_ADDR", 9: "DER_ASN1_DN",
             11: "KEY_ID", 13: "NULL"}


def _when(t: datetime.datetime | None) -> str:
    return t.strftime("%b %d %H:%M:%S %Y") if t is not None else "--- -- --:--:-- ----"


def pubkey_rows(conns: Iterable[Connection], keys: HostKeys, certs: object,
                now: float) -> list[dict[str, object]]:
    """``whack --listpubkeys``: the public keys the loaded conns use, ours and the peers':
    raw keys (``rsasigkey=``/``pubkey=``) and our certificates' (``leftcert=``), each with
    its ID, key ID, CKAID, whether the NSS database holds its private key, and its expiry
    (Libreswan's 14-day warning)."""
    try:
        dbkeys = {k.ckaid: k.public for k in keys.public_keys()} if keys.nssdir else {}
    except HostKeyError:
        dbkeys = {}
    held = set(dbkeys)
    rows: list[dict[str, object]] = []
    seen: set[tuple[str, str]] = set()
    for conn in conns:
        for end, side in ((conn.local, "local"), (conn.remote, "remote")):
            until: datetime.datetime | None = None
            issuer = ""
            from_cert = False
            try:
                pub: PublicKeyTypes | None = rawkey.end_public_key(end.raw)
            except rawkey.RawKeyError:
                continue
            ck_cfg = (end.raw.get("ckaid") or "").strip().lower()
            if pub is None and ck_cfg and not end.cert:  # leftckaid=: the key in the db
                pub = next((v for k, v in dbkeys.items() if k.startswith(ck_cfg)), None)
                if pub is None:
                    continue
            if pub is None and end.cert and side == "local" and hasattr(certs, "local"):
                try:
                    cred = certs.local(end.cert)
                except Exception:  # noqa: BLE001 - a bad cert is reported where it is used
                    continue
                pub, until = cred.cert.public_key(), cred.cert.not_valid_after_utc
                from_cert = True  # loaded with its private key
                issuer = cred.cert.issuer.rfc4514_string()
            if pub is None:
                continue
            ident = end.id
            if ident is not None:
                idtype, idtext = _ID_NAMES.get(ident.id_type, str(ident.id_type)), str(ident)
            else:
                addr = end.host_addr
                idtype = "IPV6_ADDR" if addr is not None and addr.version == 6 else "IPV4_ADDR"
                idtext = str(addr) if addr is not None else "%any"
            ck = rawkey.ckaid(pub) if isinstance(pub, (rsa.RSAPublicKey,
                                                      ec.EllipticCurvePublicKey)) else ""
            if (ck, idtext) in seen:
                continue
            seen.add((ck, idtext))
            kind = "RSA" if isinstance(pub, rsa.RSAPublicKey) else "ECDSA"
            bits = pub.key_size if isinstance(pub, rsa.RSAPublicKey) else \
                pub.curve.key_size if isinstance(pub, ec.EllipticCurvePublicKey) else 0
            rows.append({"conn": conn.name, "end": side, "id_type": idtype, "id": idtext,
                         "type": kind, "bits": bits, "keyid": rawkey.keyid(pub), "ckaid": ck,
                         "private_key": ck in held or from_cert,
                         "until": until.isoformat() if until else None,
                         "expiry": expiry.check_expiry(until, now), "issuer": issuer})
    return rows


def render_pubkeys(rows: list[dict[str, object]], now: float) -> list[str]:
    """Libreswan's ``List of Public Keys:`` lines for :func:`pubkey_rows`."""
    out = ["", "List of Public Keys:", ""]
    stamp = _when(datetime.datetime.fromtimestamp(now, datetime.UTC))
    for r in rows:
        until = r["until"]
        t = datetime.datetime.fromisoformat(until) if isinstance(until, str) else None
        out.append(f"{stamp}, {r['bits']:4d} {r['type']} Key {r['keyid']} "
                   f"({'has' if r['private_key'] else 'no'} private key), until {_when(t)} "
                   f"{r['expiry'] or 'ok'}")
        out.append(f"       {r['id_type']} '{r['id']}'")
        if r["issuer"]:
            out.append(f"       Issuer '{r['issuer']}'")
    return out
