"""Typed value parsers for ipsec.conf: booleans, durations, percentages, addresses,
subnets, protoports.  Each raises ``ValueError`` with a message fit for
``file:line: message``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket

from pypluto.params import IPAddress, IPNetwork

_TRUE = {"yes", "y", "true", "on", "1"}
_FALSE = {"no", "n", "false", "off", "0"}


def parse_bool(text: str, key: str = "") -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{key}={text}: expected yes or no")


# Libreswan 5.2's time scales (timescale.c), matched without regard to case; other
# words ("sec", "min", "days") are "an unrecognized multiplier" there
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
          "ms": 0.001, "us": 0.000001}
# [DECIMAL][.FRACTION] as Libreswan's shunk_to_decimal: "1.5", "1." and ".5", never "."
_DURATION = re.compile(r"^\s*(\d+\.?\d*|\.\d+)([a-z]*)\s*$", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def parse_duration(text: str, key: str = "", bare_unit: float = 1.0) -> float:
    """A duration in seconds: ``90``, ``90s``, ``5m``, ``8h``, ``1d``, ``1w``, ``500ms``,
    ``1.5h``, ``.5h`` (Libreswan 5.2's ttodeltatime: no space before the unit).

    A bare number is seconds, or milliseconds where ``bare_unit`` is 0.001
    (``retransmit-interval=``).
    """
    m = _DURATION.match(text)
    if not m:
        raise ValueError(f"{key}={text}: invalid duration (use a number with s, m, h, d or w)")
    number, unit = m.group(1), m.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"{key}={text}: unknown duration unit '{unit}' (use s, m, h, d or w)")
    scale = bare_unit if unit == "" else _UNITS[unit]
    value = float(number) * scale
    if value > 10 * 365 * 86400:
        raise ValueError(f"{key}={text}: duration is too large")
    return value


def parse_percent(text: str, key: str = "") -> float:
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$", text)
    if not m:
        raise ValueError(f"{key}={text}: invalid percentage (expected N%)")
    return float(m.group(1))


def check_unsigned(text: str, key: str = "") -> int:
    """A keyword Libreswan 5.2 reads as an unsigned decimal (its ``kt_unsigned``: base 10,
    no ``0x``, no sign, no suffix; anything else is not used there).  The range is checked
    where the value is used."""
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise ValueError(f"{key}={text}: expected a number (non-decimal digit in number: "
                         "decimal digits only)")
    value = int(t)
    if value > 2**64 - 1:
        raise ValueError(f"{key}={text}: larger than 2^64-1")
    return value


def check_percent(text: str, key: str = "") -> None:
    """``rekeyfuzz=``: an integer followed by ``%`` (ipsec.conf(5); Libreswan 5.2's
    ``kt_percent`` does not use ``50`` or ``1.5%``)."""
    m = re.match(r"^\s*(\d*)(.*?)\s*$", text)
    assert m is not None
    if not m.group(1):
        raise ValueError(f"{key}={text}: invalid percentage (expected N%)")
    if m.group(2) != "%":
        raise ValueError(f'{key}={text}: invalid percentage, bad percentage multiplier '
                         f'"{m.group(2)}" (expected an integer followed by %, as 100%)')


def parse_int(text: str, key: str = "", lo: int = 0, hi: int = 2**31 - 1) -> int:
    t = text.strip()
    try:
        value = int(t, 16) if t.lower().startswith("0x") else int(t, 10)
    except ValueError:
        raise ValueError(f"{key}={text}: expected a number") from None
    if not lo <= value <= hi:
        raise ValueError(f"{key}={text}: must be between {lo} and {hi}")
    return value


_BINARY = {"": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
           "eib": 2**60}


#: mark=-1 (Libreswan): a unique mark per instance, taken from a global counter
UNIQUE_MARK = -1


def parse_mark(text: str, key: str = "mark") -> tuple[int, int] | None:
    """``mark=VALUE[/MASK]`` (ipsec.conf(5)): the XFRM mark of an SA and its policies.

    VALUE and MASK are decimal or 0x numbers of 32 bits; the mask defaults to
    0xffffffff.  VALUE ``-1`` asks for a unique mark per instance
    (``UNIQUE_MARK``, resolved when the Child SA is installed).  A mark of 0 marks
    nothing (as Libreswan: no XFRMA_MARK is installed), so it is returned as None.
    """
    t = text.strip()
    value_text, _, mask_text = t.partition("/")
    if value_text.strip() == "-1":
        value = UNIQUE_MARK
    else:
        value = parse_int(value_text, key, 0, 0xFFFFFFFF)
    mask = 0xFFFFFFFF if not mask_text.strip() else parse_int(mask_text, key, 0, 0xFFFFFFFF)
    if "/" in t and not mask_text.strip():
        raise ValueError(f"{key}={text}: missing mask after '/'")
    if value != UNIQUE_MARK and value & ~mask:
        raise ValueError(f"{key}={text}: the value has bits outside the mask, "
                         "so no packet could ever match it")
    if value == 0 or mask == 0:
        return None
    return value, mask


def parse_ipsec_interface(text: str | None) -> int | None:
    """``ipsec-interface=`` (Libreswan): ``no`` = none, ``yes`` = 1, else a number N >= 1;
    the device is ``ipsecN`` (the number is also the XFRM if_id, 32 bits).  ``0`` is
    refused: pypluto numbers its devices from 1 (ipsec0 would read as "no")."""
    if text is None:
        return None
    low = text.strip().lower()
    if low in _FALSE and not low.isdigit():
        return None
    if low in _TRUE and not low.isdigit():
        return 1
    if not low.isdigit():
        raise ValueError(f"ipsec-interface={text}: expected yes, no or a number from 1")
    n = int(low)
    if not 1 <= n <= 0xFFFFFFFF:
        raise ValueError(f"ipsec-interface={text}: the number must be from 1 to 4294967295")
    return n


def parse_interface_ip(text: str, key: str = "interface-ip") -> str:
    """``interface-ip=ADDR/PREFIX``: the address (with its prefix) put on the ipsecN device."""
    t = text.strip()
    if "/" not in t:
        raise ValueError(f"{key}={text}: expected ADDRESS/PREFIX")
    try:
        return str(ipaddress.ip_interface(t))
    except ValueError:
        raise ValueError(f"{key}={text}: expected ADDRESS/PREFIX") from None


def parse_ocsp_uri(value: str) -> str:
    """``ocsp-uri=``: the OCSP responder every request goes to (NSS's default
    responder).  pypluto fetches over HTTP(S) only (daemon/fetch.py), so another scheme
    (``ldap://``), a URL without a host or one that does not parse would fail every
    request: ValueError, refused at load."""
    import urllib.parse

    v = value.strip()
    try:
        u = urllib.parse.urlsplit(v)
        _ = u.port  # a port that is no number raises here
    except ValueError as e:
        raise ValueError(f"ocsp-uri={value}: not a URL ({e})") from None
    if u.scheme.lower() not in ("http", "https"):
        raise ValueError(f"ocsp-uri={value}: a responder URL other than http:// or "
                         "https:// is not supported by pypluto")
    if not u.hostname:
        raise ValueError(f"ocsp-uri={value}: the URL names no host")
    return v


def parse_curl_iface(value: str) -> tuple[str | None, str | None]:
    """``curl-iface=`` (curl's CURLOPT_INTERFACE forms: NAME, ADDRESS, ``if!NAME``,
    ``host!ADDRESS``) as (device, source address); ValueError for what it cannot be
    (daemon/fetch.py applies it)."""
    v = value.strip()
    if v.startswith("if!"):
        dev, addr = v[3:], None
    elif v.startswith("host!"):
        dev, addr = None, v[5:]
    elif v.startswith("ifhost!"):
        raise ValueError(f"curl-iface={value}: the ifhost! form is not supported")
    else:
        try:
            ipaddress.ip_address(v)
            dev, addr = None, v
        except ValueError:
            dev, addr = v, None
    if addr is not None:
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise ValueError(f"curl-iface={value}: {addr!r} is not an IP address") from None
    if dev is not None and not (0 < len(dev) < 16 and dev not in (".", "..")
                                and not any(c in dev for c in "/: \t")):
        raise ValueError(f"curl-iface={value}: {dev!r} is not an interface name or an "
                         "IP address")
    return dev, addr


def parse_bignum(text: str, key: str = "") -> int:
    """A 64-bit count, optionally with a binary suffix: ``2KiB``, ``1MiB``, ``0x10``."""
    m = re.match(r"^\s*(0x[0-9a-f]+|\d+)\s*([a-z]*)\s*$", text, re.IGNORECASE)
    if not m or m.group(2).lower() not in _BINARY:
        raise ValueError(f"{key}={text}: expected a number (optionally with KiB, MiB, ...)")
    value = int(m.group(1), 0) * _BINARY[m.group(2).lower()]
    if value > 2**64 - 1:
        raise ValueError(f"{key}={text}: larger than 2^64-1")
    return value


_BINARY_BYTES = {"": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "pib": 2**50,
                 "eib": 2**60}
_BINARY_COUNT = {"": 1, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50,
                 "ei": 2**60}
_BINARY_RE = re.compile(r"^\s*(\d*)(?:\.(\d*))?([a-z]*)\s*$", re.IGNORECASE)


def parse_binary(text: str, key: str = "", byte_suffix: bool = False) -> int:
    """``ipsec-max-bytes=`` (``byte_suffix``: ``KiB`` ... ``EiB``) and
    ``ipsec-max-packets=`` (``Ki`` ... ``Ei``, "a prefix without B"), as Libreswan
    5.2's ttobinary reads them: a decimal number, a fraction allowed with a multiplier
    (``1.5MiB``; computed in integers as there), no ``0x``.  ipsec.conf(5) lists EiB
    for bytes (5.2's table lacks it)."""
    m = _BINARY_RE.match(text)
    scales = _BINARY_BYTES if byte_suffix else _BINARY_COUNT
    what = "binary Bytes" if byte_suffix else "binary"
    if not m or not (m.group(1) or m.group(2)):  # "", "." and "x" are no number
        raise ValueError(f"{key}={text}: bad {what} value (expected a decimal number, "
                         f"optionally with {'KiB, MiB' if byte_suffix else 'Ki, Mi'}, ...)")
    suffix = m.group(3).lower()
    if suffix not in scales:
        raise ValueError(f'{key}={text}: unrecognized {what} multiplier "{m.group(3)}"')
    mult = scales[suffix]
    value = int(m.group(1) or "0") * mult
    frac = m.group(2) or ""
    if frac and int(frac):
        if 10 ** len(frac) > mult:
            raise ValueError(f"{key}={text}: invalid {what}, underflow")
        value += int(frac) * (mult // 10 ** len(frac))
    if value > 2**64 - 1:
        raise ValueError(f"{key}={text}: larger than 2^64-1")
    return value


def parse_address(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address") from None


_HOST_KEYWORDS = {
    "%any", "%any4", "%any6", "%defaultroute", "%defaultroute6", "%opportunistic",
    "%opportunisticgroup", "%group", "%direct", "%none", "%myid", "%oppo", "%oe",
}


@functools.lru_cache(maxsize=4096)
def parse_host(text: str) -> tuple[str, IPAddress | None]:
    """``left=``: an address, a DNS name, or one of the ``%`` keywords."""
    t = text.strip()
    low = t.lower()
    if low.startswith("%"):
        if not re.match(r"^%[a-z0-9_.\-]+$", low):
            raise ValueError(f"invalid host keyword '{t}'")
        return low, None  # unknown %words (old %ethN) are kept; the parser warns
    try:
        return t, ipaddress.ip_address(t)
    except ValueError:
        pass
    if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9.])?$", t):
        raise ValueError(f"'{t}' is neither an IP address nor a host name")
    return t, None


def is_host_keyword(text: str) -> bool:
    return text.lower() in _HOST_KEYWORDS


def _inet_aton_net(t: str) -> IPNetwork | None:
    """Libreswan (like inet_aton) accepts short IPv4 forms: ``0.0.0/0``, ``10/8``."""
    addr, _, plen = t.partition("/")
    if ":" in addr or not re.match(r"^\d+(\.\d+){0,2}$", addr):
        return None
    try:
        packed = socket.inet_aton(addr)
        return ipaddress.ip_network(f"{socket.inet_ntoa(packed)}/{plen or 32}", strict=False)
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=4096)
def parse_subnet(text: str) -> IPNetwork:
    """``192.0.2.0/24``, ``2001:db8::/64``, a bare address (/32, /128), ``%any``."""
    t = text.strip()
    low = t.lower()
    if low in ("%any", "%any4", "0.0.0.0/0"):
        return ipaddress.ip_network("0.0.0.0/0")
    if low in ("%any6", "::/0"):
        return ipaddress.ip_network("::/0")
    try:
        return ipaddress.ip_network(t, strict=False)
    except ValueError:
        short = _inet_aton_net(t)
        if short is not None:
            return short
        raise ValueError(f"'{t}' is not a subnet") from None


def parse_subnets(text: str) -> list[IPNetwork]:
    """A subnet list: comma and/or space separated, optionally in ``{...}``."""
    t = text.strip()
    if t.startswith("{") and t.endswith("}"):
        t = t[1:-1]
    items = [x for x in re.split(r"[\s,]+", t) if x]
    if not items:
        raise ValueError("empty subnet list")
    return [parse_subnet(x) for x in items]


def parse_addresses(text: str) -> list[IPAddress]:
    out: list[IPAddress] = []
    for item in (x for x in re.split(r"[\s,]+", text.strip()) if x):
        if "/" in item:  # sourceip= may carry a prefix length in some configs
            item = item.split("/", 1)[0]
        out.append(parse_address(item))
    if not out:
        raise ValueError("empty address list")
    return out


def _c_number(text: str) -> int | None:
    """``text`` as C's strtoul with base 0 reads it whole (Libreswan's shunk_to_uintmax):
    ``0x`` hex, ``0b`` binary, a leading ``0`` octal, else decimal; None if it is not
    such a number."""
    for prefix, base in (("0x", 16), ("0b", 2)):
        if text.startswith(prefix) and len(text) > 2:
            digits, b = text[2:], base
            break
    else:
        digits, b = text, (8 if text.startswith("0") and len(text) > 1 else 10)
    if not digits.isascii() or not digits.isalnum():
        return None
    try:
        return int(digits, b)
    except ValueError:
        return None


def parse_protoport(text: str) -> tuple[int, int]:
    """``PROTO/PORT``, ``PROTO`` or ``PROTO/%any``: (IP protocol number, port).

    Numbers are read as Libreswan 5.2's ttoprotoport reads them (C's strtoul with base
    0: ``0x11`` is 17, ``017`` is 15); ``%any`` as the port needs a protocol."""
    t = text.strip().lower()
    if t in ("", "%any"):
        return (0, 0)
    proto_s, _, port_s = t.partition("/")
    number = _c_number(proto_s)
    if proto_s in ("%any", ""):
        proto = 0
    elif number is not None:
        proto = number
        if proto > 255:
            raise ValueError(f"protocol {proto_s} is out of range (numeric protocol must "
                             "be <= 255)")
    else:
        try:
            proto = socket.getprotobyname(proto_s)
        except OSError:
            proto = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58,
                     "sctp": 132, "gre": 47, "esp": 50, "ah": 51}.get(proto_s, -1)
            if proto < 0:
                raise ValueError(f"unknown protocol '{proto_s}'") from None
    number = _c_number(port_s)
    if port_s == "%any" and proto == 0:
        raise ValueError("port wildcard (%any) requires a valid protocol")
    if port_s in ("", "%any"):
        port = 0
    elif number is not None:
        port = number
        if port > 65535:
            raise ValueError(f"port {port_s} is out of range (must be between 0 and 65535)")
    else:
        try:
            port = socket.getservbyname(port_s)
        except OSError:
            raise ValueError(f"unknown port '{port_s}'") from None
    if port and proto == 0:
        raise ValueError("a port needs a protocol")
    return (proto, port)
