"""RFC 5685 gateway identities as configured: an IP address or a host name.

``redirect-to=``, ``global-redirect-to=`` and ``ipsec redirect --redirect-to`` name
the gateway a client is sent to.  RFC 5685 §10 gives the REDIRECT notify's GW Ident
Type 1 (IPv4), 2 (IPv6) and 3 (FQDN); a name is sent as written, as Libreswan does,
and the client resolves it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TypeAlias

from pypluto.params import IPAddress

Gateway: TypeAlias = IPAddress | str

_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z", re.IGNORECASE)


def parse_gateway(word: str) -> Gateway:
    """An IP address, or a host name (RFC 1123 §2.1 labels, at most 253 octets, a last
    label that is not all digits; a trailing dot is dropped); ValueError otherwise."""
    try:
        return ipaddress.ip_address(word)
    except ValueError:
        pass
    name = word[:-1] if word.endswith(".") else word
    labels = name.split(".")
    if not name or len(name) > 253 or not all(_LABEL.match(x) for x in labels) or \
            labels[-1].isdigit():
        raise ValueError(f"{word!r} is neither an IP address nor a host name")
    return name


def parse_gateways(value: str) -> list[Gateway]:
    """Gateways separated by commas or spaces (ValueError naming the bad one)."""
    return [parse_gateway(w) for w in value.replace(",", " ").split()]


__all__ = ["Gateway", "parse_gateway", "parse_gateways"]
