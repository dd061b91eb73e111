"""IKE identities as written in ``ipsec.conf`` / ``ipsec.secrets`` (``leftid=``, indices).

RFC 7296 §3.5 defines the ID payload types; Libreswan's ipsec.conf(5) defines the
text forms:

- ``%any`` / ``%any6`` / ``%none`` / empty: a wildcard that matches every ID;
- ``%null``: ID_NULL (RFC 7619 §3);
- ``%fromcert``: take the ID from the certificate (a DN until the cert is known);
- ``@fqdn``: ID_FQDN; ``@user@fqdn`` and ``user@fqdn``: ID_RFC822_ADDR;
- ``@#0a1b..``: ID_KEY_ID (hex); ``@~3082..``: a DER-encoded DN in hex;
- ``@[name]``: ID_KEY_ID of the bytes of ``name`` (an opaque group name, as Libreswan);
- an IPv4 / IPv6 address: ID_IPV4_ADDR / ID_IPV6_ADDR;
- ``C=CH, O=Test, CN=x`` (anything with ``=``): ID_DER_ASN1_DN, in the written
  order (Libreswan writes DNs most-significant RDN first, as in the certificate).

A bare name (``east.example``) is an FQDN here, as parsed: the daemon resolves it to
an IP-address ID when the conn is added (``daemon/resolver.resolve_ids``), as
Libreswan does; the parser does no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import warnings

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from pypluto.config.model import Identity
from pypluto.crypto.der import read_tlv
from pypluto.iana import IDType

# Plain ints of pypluto.iana's IDType (RFC 7296 §3.5), under the names this module uses;
# 0 is no IANA type: "no ID given".
ID_NONE = 0
ID_IPV4_ADDR = int(IDType.ID_IPV4_ADDR)
ID_FQDN = int(IDType.ID_FQDN)
ID_RFC822_ADDR = int(IDType.ID_RFC822_ADDR)
ID_IPV6_ADDR = int(IDType.ID_IPV6_ADDR)
ID_DER_ASN1_DN = int(IDType.ID_DER_ASN1_DN)
ID_KEY_ID = int(IDType.ID_KEY_ID)
ID_NULL = int(IDType.ID_NULL)


class IdError(ValueError):
    """An identity that cannot be parsed."""


_DN_ATTRS: dict[str, ObjectIdentifier] = {
    "C": NameOID.COUNTRY_NAME,
    "ST": NameOID.STATE_OR_PROVINCE_NAME,
    "S": NameOID.STATE_OR_PROVINCE_NAME,
    "SP": NameOID.STATE_OR_PROVINCE_NAME,
    "L": NameOID.LOCALITY_NAME,
    "O": NameOID.ORGANIZATION_NAME,
    "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
    "CN": NameOID.COMMON_NAME,
    "E": NameOID.EMAIL_ADDRESS,
    "EMAIL": NameOID.EMAIL_ADDRESS,
    "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
    "SN": NameOID.SURNAME,
    "SERIALNUMBER": NameOID.SERIAL_NUMBER,
    "DC": NameOID.DOMAIN_COMPONENT,
    "UID": NameOID.USER_ID,
    "T": NameOID.TITLE,
    "TITLE": NameOID.TITLE,
    "GN": NameOID.GIVEN_NAME,
    "G": NameOID.GIVEN_NAME,
    "GIVENNAME": NameOID.GIVEN_NAME,
    "I": NameOID.INITIALS,
    "INITIALS": NameOID.INITIALS,
    "STREET": NameOID.STREET_ADDRESS,
    "POSTALCODE": NameOID.POSTAL_CODE,
    "PSEUDONYM": NameOID.PSEUDONYM,
    "GENERATIONQUALIFIER": NameOID.GENERATION_QUALIFIER,
    "DNQUALIFIER": NameOID.DN_QUALIFIER,
    "UNSTRUCTUREDNAME": ObjectIdentifier("1.2.840.113549.1.9.2"),
    "UN": ObjectIdentifier("1.2.840.113549.1.9.2"),
    "TCGID": ObjectIdentifier("1.3.6.1.4.1.2.2.3.1"),
}
_OID_RE = re.compile(r"^(?:OID\.)?([0-2](?:\.[0-9]+)+)$", re.IGNORECASE)


def _split_dn(text: str) -> list[tuple[str, str]]:
    """Split ``A=v, B=w`` into (attr, value) pairs; ``\\,`` and quotes protect commas."""
    parts: list[str] = []
    cur: list[str] = []
    quoted = False
    i = 0
    sep = "/" if text.startswith("/") else ","
    body = text[1:] if sep == "/" else text
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            cur.append(body[i + 1])
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif (ch == sep or (sep == "," and ch == ";")) and not quoted:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(ch)
        i += 1
    parts.append("".join(cur))
    out: list[tuple[str, str]] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise IdError(f"DN component {part!r} has no '='")
        attr, value = part.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out.append((attr.strip(), value))
    if not out:
        raise IdError("empty DN")
    return out


def parse_dn(text: str) -> x509.Name:
    """A Libreswan DN string (most significant RDN first) as a ``cryptography`` Name."""
    rdns: list[x509.RelativeDistinguishedName] = []
    for attr, value in _split_dn(text):
        oid = _DN_ATTRS.get(attr.upper())
        if oid is None:
            m = _OID_RE.match(attr)
            if not m:
                raise IdError(f"unknown DN attribute {attr!r}")
            oid = ObjectIdentifier(m.group(1))
        if oid == NameOID.COUNTRY_NAME and len(value) != 2 and value != "*":
            raise IdError(f"country code {value!r} must be two letters")
        try:
            if value == "*":  # a wildcard (id_matches), e.g. C=* (ikev2-x509-17-multicert-02)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    attr_ = x509.NameAttribute(oid, value, _validate=False)
            else:
                attr_ = x509.NameAttribute(oid, value)
            rdns.append(x509.RelativeDistinguishedName([attr_]))
        except (ValueError, TypeError) as exc:
            raise IdError(f"bad DN value for {attr}: {exc}") from None
    return x509.Name(rdns)


def dn_text(name: x509.Name) -> str:
    """A DN in Libreswan's order and style (``C=CH, O=Test, CN=x``)."""
    rev = {v: k for k, v in _DN_ATTRS.items() if len(k) <= 2 or k == "UN"}
    rev[NameOID.EMAIL_ADDRESS] = "E"
    rev[NameOID.STATE_OR_PROVINCE_NAME] = "ST"
    rev[NameOID.GIVEN_NAME] = "GN"
    out = []
    for rdn in name.rdns:
        for attr in rdn:
            key = rev.get(attr.oid, attr.oid.dotted_string)
            out.append(f"{key}={attr.value!s}")
    return ", ".join(out)


# an ID payload's Payload Length is 16 bits and counts its 4-byte generic header and
# 4-byte ID header (RFC 7296 §3.2, §3.5): longer identification data cannot be sent
MAX_ID_OCTETS = 0xFFFF - 8


def parse_id(text: str) -> Identity:
    """Parse an identity as ipsec.conf(5) ``leftid=`` describes it.  Raises IdError."""
    ident = _parse_id(text)
    if len(ident.data) > MAX_ID_OCTETS:
        raise IdError(f"identity of {len(ident.data)} octets is too long for an ID payload "
                      f"(at most {MAX_ID_OCTETS}, RFC 7296 §3.5)")
    return ident


def _parse_id(text: str) -> Identity:
    raw = text
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].strip()
    low = text.lower()
    if text in ("", "%any", "%any6", "%none", "*"):
        return Identity(ID_NONE, b"", raw.strip() or "%any", any=True)
    if low == "%null":
        return Identity(ID_NULL, b"", "%null", null=True)
    if low == "%fromcert":
        return Identity(ID_DER_ASN1_DN, b"", "%fromcert", fromcert=True)
    if text.startswith("%"):
        raise IdError(f"unknown identity keyword {text!r}")
    if text.startswith("@#"):
        hexpart = text[2:].replace(" ", "")
        if hexpart.lower().startswith("0x"):
            hexpart = hexpart[2:]
        try:
            data = bytes.fromhex(hexpart)
        except ValueError:
            raise IdError(f"bad hex in KEY_ID {text!r}") from None
        if not data:
            raise IdError("empty KEY_ID")
        return Identity(ID_KEY_ID, data, text)
    if text.startswith("@~"):
        try:
            data = bytes.fromhex(text[2:])
        except ValueError:
            raise IdError(f"bad hex in DER DN {text!r}") from None
        return Identity(ID_DER_ASN1_DN, data, text)
    if text.startswith("@["):
        if not text.endswith("]"):
            raise IdError(f"missing ']' in {text!r}")
        return Identity(ID_KEY_ID, text[2:-1].encode(), text)  # opaque: ipsec.conf(5)
    if text.startswith("@"):
        body = text[1:]
        if not body:
            raise IdError("empty name after '@'")
        if "@" in body:
            return Identity(ID_RFC822_ADDR, body.encode(), text)
        return Identity(ID_FQDN, body.encode(), text)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        addr = None
    if addr is not None:
        if addr.version == 4:
            return Identity(ID_IPV4_ADDR, addr.packed, text)
        return Identity(ID_IPV6_ADDR, addr.packed, text)
    if "=" in text:
        name = parse_dn(text)
        return Identity(ID_DER_ASN1_DN, name.public_bytes(), text)
    if "@" in text:
        return Identity(ID_RFC822_ADDR, text.encode(), text)
    if any(c.isspace() for c in text):
        raise IdError(f"identity {text!r} contains white space")
    return Identity(ID_FQDN, text.encode(), text)


def id_from_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Identity:
    """The default identity of an end: its IP address (RFC 7296 §3.5)."""
    if addr.version == 4:
        return Identity(ID_IPV4_ADDR, addr.packed, str(addr))
    return Identity(ID_IPV6_ADDR, addr.packed, str(addr))




def _oid_text(body: bytes) -> str:
    if not body:
        raise ValueError("empty OID")
    first = body[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in body[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)


def dn_attributes(der: bytes) -> list[tuple[str, str]] | None:
    """The (OID, value) pairs of a DER-encoded Name (RFC 5280 §4.1.2.4), in order.

    Used to compare DNs independently of the string types the encoder chose
    (PrintableString vs UTF8String).  None when ``der`` is not a Name.
    """
    try:
        tag, body, end = read_tlv(der, 0)
        if tag != 0x30 or end != len(der):
            return None
        out: list[tuple[str, str]] = []
        pos = 0
        while pos < len(body):
            stag, sbody, pos = read_tlv(body, pos)
            if stag != 0x31:
                return None
            spos = 0
            while spos < len(sbody):
                atag, abody, spos = read_tlv(sbody, spos)
                if atag != 0x30:
                    return None
                otag, obody, vpos = read_tlv(abody, 0)
                vtag, vbody, vend = read_tlv(abody, vpos)
                if otag != 0x06 or vend != len(abody):
                    return None
                if vtag == 0x1E:  # BMPString
                    text = vbody.decode("utf-16-be", errors="replace")
                else:
                    text = vbody.decode("utf-8", errors="replace")
                out.append((_oid_text(obody), text))
        return out
    except (ValueError, IndexError):
        return None


def id_matches(pattern: Identity | None, actual: Identity | None) -> bool:
    """Does ``actual`` (what a peer sent) satisfy ``pattern`` (what we configured)?

    ``%any`` matches everything; FQDN and RFC822 compare case-insensitively without
    a trailing dot; DNs compare attribute by attribute, a ``*`` value matching any
    value (Libreswan's wildcard DN rule); other types compare bytes.
    """
    if pattern is None or pattern.any:
        return True
    if actual is None:
        return False
    if pattern.fromcert:
        # Libreswan 5.2 takes the peer's ID from its certificate whatever ID type it
        # shows (ikev2-x509-16-multicert: an FQDN); the certificate must still carry it
        # (require-id-on-certificate=, RFC 4945 §3.1)
        return not actual.null
    if pattern.null or actual.null:
        return pattern.null and actual.null
    if pattern.id_type != actual.id_type:
        return False
    if pattern.id_type in (ID_FQDN, ID_RFC822_ADDR):
        return pattern.data.rstrip(b".").lower() == actual.data.rstrip(b".").lower()
    if pattern.id_type == ID_DER_ASN1_DN:
        if pattern.data == actual.data:
            return True
        pa, aa = dn_attributes(pattern.data), dn_attributes(actual.data)
        if pa is None or aa is None or len(pa) != len(aa):
            return False
        if all(po == ao and (pv == "*" or pv.lower() == av.lower())
               for (po, pv), (ao, av) in zip(pa, aa, strict=True)):
            return True
        return _dn_any_order(pa, aa)
    return pattern.data == actual.data


def id_same(pattern: Identity | None, actual: Identity | None) -> bool:
    """Is ``actual`` exactly the ``pattern`` ID?  For a peer that no certificate vouches
    for (PSK, NULL, raw key): Libreswan 5.2's ``update_peer_id`` then holds its ID to
    ``same_id``, which knows no DN wildcard (a ``*`` value matches only a ``*``) and
    compares a DN's attributes in their order; ``%any`` and ``%fromcert`` still match
    every ID, FQDNs still compare without case and trailing dot (``id_eq``)."""
    if pattern is not None and actual is not None and not pattern.any and \
            not pattern.fromcert and pattern.id_type == actual.id_type == ID_DER_ASN1_DN:
        if pattern.data == actual.data:
            return True
        pa, aa = dn_attributes(pattern.data), dn_attributes(actual.data)
        return pa is not None and aa is not None and len(pa) == len(aa) and all(
            po == ao and pv.lower() == av.lower()
            for (po, pv), (ao, av) in zip(pa, aa, strict=True))
    return id_matches(pattern, actual)


def _dn_any_order(pattern: list[tuple[str, str]], actual: list[tuple[str, str]]) -> bool:
    """The same attributes written in another order (Libreswan 5.2 matches DNs in any
    order: ``leftid="E=..., CN=..., C=CA"`` against a certificate's ``C=CA, ..., E=...``,
    ikev2-x509-ecdsa-01); the exact values first, then the ``*`` wildcards."""
    left = list(actual)
    for po, pv in sorted(pattern, key=lambda a: a[1] == "*"):
        hit = next((i for i, (ao, av) in enumerate(left)
                    if ao == po and (pv == "*" or pv.lower() == av.lower())), None)
        if hit is None:
            return False
        del left[hit]
    return True


def id_wildcards(ident: Identity | None) -> int:
    """How general an ID is (0 = exact); used to rank matches (Libreswan's wildcards)."""
    if ident is None or ident.any:
        return 15
    if ident.id_type == ID_DER_ASN1_DN and "*" in ident.text:
        return sum(1 for _a, v in _split_dn(ident.text.strip('"')) if v == "*")
    return 0
