"""Identities as ipsec.conf(5) writes them, RFC 7296 §3.5 ID types."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from pypluto.config.ids import IdError, id_matches, id_wildcards, parse_dn, parse_id


@pytest.mark.parametrize(("text", "id_type", "data"), [
    ("@east.example", 2, b"east.example"),
    ('"@east"', 2, b"east"),
    ("@user@example.org", 3, b"user@example.org"),
    ("user@example.org", 3, b"user@example.org"),
    ("192.0.2.1", 1, bytes([192, 0, 2, 1])),
    ("2001:db8::1", 5, bytes.fromhex("20010db8000000000000000000000001")),
    ("@#0a0B", 11, b"\x0a\x0b"),
    ("@[not.resolved]", 11, b"not.resolved"),  # ID_KEY_ID, as Libreswan 5.2 (addconn-40-id)
    ("host.example", 2, b"host.example"),
])
def test_parse_id(text: str, id_type: int, data: bytes) -> None:
    ident = parse_id(text)
    assert (ident.id_type, ident.data) == (id_type, data)


def test_keywords() -> None:
    assert parse_id("%any").any and parse_id("").any
    assert parse_id("%null").null and parse_id("%null").id_type == 13
    assert parse_id("%fromcert").fromcert


def test_dn_in_written_order_to_der() -> None:
    ident = parse_id("C=CA, ST=Ontario, O=Libreswan, CN=west.testing.libreswan.org, "
                     "E=user-west@testing.libreswan.org")
    assert ident.id_type == 9
    name = parse_dn("C=CA, ST=Ontario, O=Libreswan, CN=west.testing.libreswan.org, "
                    "E=user-west@testing.libreswan.org")
    assert ident.data == name.public_bytes()
    assert name.rdns[0].get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "CA"
    cert_name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CA"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Ontario"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Libreswan"),
        x509.NameAttribute(NameOID.COMMON_NAME, "west.testing.libreswan.org"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "user-west@testing.libreswan.org"),
    ])
    assert cert_name.public_bytes() == ident.data


@pytest.mark.parametrize("bad", ["%bogus", "@", "@#zz", "C=CAN, CN=x", "FOO=bar",
                                 "two words", "@[open"])
def test_bad_ids(bad: str) -> None:
    with pytest.raises(IdError):
        parse_id(bad)


def test_matching() -> None:
    assert id_matches(parse_id("%any"), parse_id("@x"))
    assert id_matches(parse_id("@East.Example."), parse_id("@east.example"))
    assert not id_matches(parse_id("@east"), parse_id("@west"))
    assert not id_matches(parse_id("@east"), parse_id("east@x"))
    assert id_matches(parse_id("192.0.2.1"), parse_id("192.0.2.1"))
    assert not id_matches(parse_id("192.0.2.1"), parse_id("192.0.2.2"))
    wild = parse_id("C=CH, O=Test, CN=*")
    assert id_matches(wild, parse_id("C=CH, O=Test, CN=alice"))
    assert not id_matches(wild, parse_id("C=CH, O=Other, CN=alice"))
    assert id_wildcards(wild) == 1 and id_wildcards(parse_id("@a")) == 0
    assert id_matches(parse_id("%fromcert"), parse_id("C=CH, CN=x"))
    assert id_matches(parse_id("%null"), parse_id("%null"))
    assert not id_matches(parse_id("%null"), parse_id("@a"))


def test_dn_matches_whatever_string_type_the_cert_uses() -> None:
    """A peer's DER DN (RFC 5280 Name) with PrintableString values matches the
    configured DN that we encode as UTF8String (compare attributes, not bytes)."""
    from cryptography.x509.name import _ASN1Type

    from pypluto.config.ids import dn_attributes
    from pypluto.config.model import Identity

    peer = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "CH"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test", _ASN1Type.PrintableString),
        x509.NameAttribute(NameOID.COMMON_NAME, "Alice", _ASN1Type.PrintableString),
    ]).public_bytes()
    ours = parse_id("C=CH, O=Test, CN=alice")
    assert ours.data != peer
    assert dn_attributes(peer) == [("2.5.4.6", "CH"), ("2.5.4.10", "Test"), ("2.5.4.3", "Alice")]
    sent = Identity(9, peer, "peer")
    assert id_matches(ours, sent)
    assert id_matches(parse_id("C=CH, O=Test, CN=*"), sent)
    assert not id_matches(parse_id("C=CH, O=Test"), sent)
    assert dn_attributes(b"\x30\x05garbage") is None and dn_attributes(b"") is None
