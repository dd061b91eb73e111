"""Expiry warnings for certificates and public keys, with Libreswan's windows.

Libreswan (``programs/pluto/keys.c``, ``include/certs.h``) warns about a public key
(a raw key's or an end certificate's) that expires within 14 days
(``PUBKEY_WARNING_INTERVAL``) and defines 30 days for CA certificates
(``CA_CERT_WARNING_INTERVAL``); its message is ``warning (expires in N days)`` (hours,
minutes or seconds when fewer than two days are left), ``fatal (expired)`` after.
An expired own certificate refuses the conn (``left certificate 'X' has expired``).
"""

from __future__ import annotations

import datetime
from typing import Protocol

from cryptography import x509

from pypluto.config.model import Connection


class CertSource(Protocol):
    """What the checks read of ``config.certs.CertStore``."""

    def peer_cert(self, name: str) -> x509.Certificate: ...

    def anchors(self) -> list[x509.Certificate]: ...

DAY = 86400
PUBKEY_WARNING_INTERVAL = 14 * DAY
CA_CERT_WARNING_INTERVAL = 30 * DAY


def check_expiry(not_after: datetime.datetime | None, now: float,
                 window: int = PUBKEY_WARNING_INTERVAL) -> str | None:
    """None while more than ``window`` seconds are left; else Libreswan's message."""
    if not_after is None:
        return "ok (expires never)"
    left = int(not_after.timestamp() - now)
    if left < 0:
        return "fatal (expired)"
    if left > window:
        return None
    unit, n = "second", left
    for name, secs in (("day", DAY), ("hour", 3600), ("minute", 60)):
        if left > 2 * secs:
            unit, n = name, left // secs
            break
    return f"warning (expires in {n} {unit}{'' if n == 1 else 's'})"


def is_warning(msg: str | None) -> bool:
    return bool(msg) and msg is not None and not msg.startswith("ok")


def conn_cert_check(conn: Connection, store: CertSource, now: float
                    ) -> tuple[str | None, list[str]]:
    """(why the conn is refused, warnings) for its ``leftcert=``/``rightcert=``.

    As Libreswan when it loads a conn: an expired or not yet valid certificate refuses
    the conn (``left certificate 'X' has expired``); one that expires within 14 days is
    warned about.  A certificate that cannot be read is left to the first use, which
    names the reason.
    """
    warnings: list[str] = []
    for side, end in (("left", conn.left), ("right", conn.right)):
        if not end.cert:
            continue
        try:
            cert = store.peer_cert(end.cert)
        except Exception:  # noqa: BLE001 - reported where the certificate is used
            continue
        if cert.not_valid_before_utc.timestamp() > now:
            return f"{side} certificate '{end.cert}' is not yet valid", warnings
        msg = check_expiry(cert.not_valid_after_utc, now)
        if msg == "fatal (expired)":
            return f"{side} certificate '{end.cert}' has expired", warnings
        if msg:
            warnings.append(f"{side} certificate '{end.cert}' {msg}")
    return None, warnings


def anchor_warnings(store: CertSource, now: float) -> list[str]:
    """Warnings for trust anchors that expire within 30 days, or have expired."""
    out: list[str] = []
    try:
        anchors = store.anchors()
    except Exception:  # noqa: BLE001 - an unreadable database is reported elsewhere
        return out
    for ca in anchors:
        msg = check_expiry(ca.not_valid_after_utc, now, CA_CERT_WARNING_INTERVAL)
        if msg:
            out.append(f"CA certificate '{ca.subject.rfc4514_string()}' {msg}")
    return out
