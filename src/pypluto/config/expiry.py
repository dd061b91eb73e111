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
