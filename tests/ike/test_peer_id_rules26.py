"""Red team 26: how each end accepts the peer's ID in IKE_AUTH, against Libreswan 5.2.

Libreswan 5.2 picks the responder's conn with ``match_id`` (DN wildcards, RDNs in any
order), but then ``update_peer_id`` holds a peer that no verified certificate vouches
for (PSK, NULL, raw key) to ``same_id``: the exact ID (``%any`` / ``%fromcert`` aside),
a DN compared RDN by RDN in its order, a ``*`` matching only a ``*``.  The initiator
runs the same ``update_peer_id`` on the responder's IDr.  RFC 4945 §3.1 / RFC 7296
§2.15 leave it to policy; pypluto follows 5.2: a DN wildcard in ``rightid=`` is
honoured only for a certificate (tests/ike/test_hostile_certs25.py covers those).

The hostile peers below know the PSK and recompute AUTH over the ID they show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.x509.oid import NameOID

from pypluto.config.ids import id_matches, id_same, parse_id
from pypluto.config.parser import parse_config_text
from pypluto.daemon.registry import end_auth_refusal
from pypluto.iana import PayloadType as PT
from pypluto.wire import payloads as wp

from .harness import Net
from .test_hostile_ids24 import (
    _accepted,
    _dn,
    _east_conn,
    _forge,
    _id,
    _refused_clean,
    _reply,
    _west_refused,
)
from .test_rawkeys import raw_net

C, ORG, CN = NameOID.COUNTRY_NAME, NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME


def _idr_payload(id_type: int, data: bytes) -> wp.IDPayload:
    return wp.IDPayload(id_type, data, payload_type=PT.IDr)


EAST_DN = "C=US, O=Acme, CN=east"
WEST_DN = "C=US, O=Acme, CN=west"
EAST_WILD = {"rightid": "C=US, O=*, CN=east"}  # west's rightid= for east


# ================================================================ the initiator
def test_initiator_psk_responder_exact_dn_is_accepted() -> None:
    """Control: east shows exactly west's rightid= DN (PrintableString or UTF8String,
    another case in a PrintableString value): established."""
    for data in (_dn((C, "US"), (ORG, "Acme"), (CN, "east")),
                 _dn((C, "US"), (ORG, "ACME"), (CN, "East"), printable=True)):
        net = Net(west_kw={"rightid": EAST_DN}, east_kw={"rightid": EAST_DN})
        _reply(net, idr=_idr_payload(9, data))
        assert net.established(net.west), net.west.logs()


@pytest.mark.parametrize("org", ["Acme", "Evil", "*x", ""])
def test_initiator_psk_responder_through_a_dn_wildcard_is_refused(org: str) -> None:
    """rightid="C=US, O=*, CN=east" with authby=secret: Libreswan 5.2's initiator
    (``update_peer_id``: no certificate, so ``same_id``) refuses any IDr but that very
    text, whatever O= the responder claims; pypluto accepted it through the wildcard."""
    net = Net(west_kw=EAST_WILD, east_kw={"rightid": EAST_DN})
    attrs = [(C, "US"), (ORG, org), (CN, "east")] if org else [(C, "US"), (CN, "east")]
    _reply(net, idr=_idr_payload(9, _dn(*attrs)))
    lines = _west_refused(net)
    assert any("does not match the expected" in m for m in lines), lines


def test_initiator_psk_honest_responder_with_wildcard_rightid_does_not_come_up() -> None:
    """Not only a forger: an honest PSK responder under west's wildcard rightid= is
    refused too (as 5.2), before any Child SA is installed."""
    net = Net(west_kw=EAST_WILD, east_kw={"rightid": EAST_DN})
    net.up()
    assert not net.established(net.west) and not net.west.kernel_sas
    assert any("does not match the expected" in m for m in net.west.logs())


def test_initiator_psk_responder_dn_in_another_order_is_refused() -> None:
    """5.2's ``same_dn`` compares RDNs in their order (the any-order match is
    ``match_id``'s, for a certificate's subject)."""
    net = Net(west_kw={"rightid": EAST_DN}, east_kw={"rightid": EAST_DN})
    _reply(net, idr=_idr_payload(9, _dn((CN, "east"), (ORG, "Acme"), (C, "US"))))
    _west_refused(net)


def test_initiator_psk_responder_showing_the_wildcard_itself() -> None:
    """An IDr that is literally ``C=US, O=*, CN=east`` is the configured ID byte for byte
    (5.2's ``same_dn`` too): accepted, and it is what the SA records."""
    net = Net(west_kw=EAST_WILD, east_kw={"rightid": EAST_DN})
    _reply(net, idr=_idr_payload(9, _dn((C, "US"), (ORG, "*"), (CN, "east"), printable=True)))
    assert net.established(net.west), net.west.logs()


# ================================================================ the responder
WEST_WILD = {"leftid": "C=US, O=*, CN=west"}  # east's peer (left) may be any O=


@pytest.mark.parametrize("org", ["Acme", "Evil"])
def test_responder_psk_peer_through_a_dn_wildcard_is_refused(org: str) -> None:
    """East's conn has leftid="C=US, O=*, CN=west", authby=secret: an IDi that matches
    only through the wildcard is refused with AUTHENTICATION_FAILED (5.2: the conn is
    found by ``match_id``, then ``update_peer_id`` wants ``same_id`` without a
    certificate: "Peer ID ... mismatched on first found connection")."""
    net = Net(east_kw=WEST_WILD)
    lines = _refused_clean(net, _forge(net, idi=_id(9, _dn((C, "US"), (ORG, org),
                                                                (CN, "west")))))
    assert any("no connection matches peer" in m for m in lines), lines


def test_responder_psk_peer_dn_in_another_order_is_refused() -> None:
    net = Net(east_kw={"leftid": WEST_DN})
    _refused_clean(net, _forge(net, idi=_id(9, _dn((CN, "west"), (ORG, "Acme"), (C, "US")))))


def test_responder_psk_exact_dn_conn_wins_over_a_wildcard_one() -> None:
    """Two conns for the same peer address: one wildcard, one exact.  The exact IDi gets
    the exact conn; a forger with another O= is not let in by the wildcard conn."""
    for org, ok in (("Acme", True), ("Evil", False)):
        net = Net(east_kw={"leftid": WEST_DN})
        _east_conn(net, "wild", leftid="C=US, O=*, CN=west", leftsubnet="198.51.100.0/24",
                   rightsubnet="203.0.113.0/24")
        acts = _forge(net, idi=_id(9, _dn((C, "US"), (ORG, org), (CN, "west"))))
        if ok:
            assert _accepted(net, acts).conn.name == "west-east"
        else:
            _refused_clean(net, acts)


@pytest.mark.parametrize("leftid,id_type,data", [
    ("C=US, O=Acme, CN=west", 2, b"C=US, O=Acme, CN=west"),  # the DN's text as an FQDN
    ("C=US, O=Acme, CN=west", 11, b"C=US, O=Acme, CN=west"),
    ("@west.example", 9, b"west.example"),  # FQDN's bytes as a DN (not a Name)
    ("@#7765737400", 2, b"west\0"),
    ("@#77657374", 2, b"west"),  # KEY_ID's bytes as an FQDN
    ("@[west]", 2, b"west"),
    ("w@west.example", 2, b"w@west.example"),  # RFC822 as an FQDN
    ("192.0.2.1", 2, b"192.0.2.1"),  # an address as its text
    ("192.0.2.1", 11, bytes([192, 0, 2, 1])),
])
def test_responder_id_of_another_type_is_refused(leftid: str, id_type: int,
                                                 data: bytes) -> None:
    """5.2's ``id_eq``: the types must agree before anything is compared."""
    net = Net(east_kw={"leftid": leftid})
    _refused_clean(net, _forge(net, idi=_id(id_type, data)))


@pytest.mark.parametrize("leftid,data", [
    ("w@west.example", b"W@WEST.Example.."),  # RFC822: case and trailing dots, as FQDN
    ("@west.example.", b"west.example"),  # a trailing dot in the config
])
def test_responder_rfc822_and_configured_dot(leftid: str, data: bytes) -> None:
    net = Net(east_kw={"leftid": leftid})
    _accepted(net, _forge(net, idi=_id(3 if b"@" in data else 2, data)))


# ================================================================ "you Tarzan, me Jane"
@pytest.mark.parametrize("id_type,data", [
    (2, b"EAST.Example."),  # us, in another case with a dot
    (11, b"east.example"),  # our name's bytes as a KEY_ID
    (3, b"east.example"),
    (9, _dn((CN, "east.example"))),
])
def test_idr_naming_us_in_another_form_is_answered_with_our_id(id_type: int,
                                                                data: bytes) -> None:
    """The initiator's IDr names us in another form: we answer with our own configured
    ID, never the form it proposed (5.2: ``idr_wildmatch`` is ``same_id`` without a
    certificate; a conn it does not match is skipped, the IKE SA's conn kept)."""
    net = Net()
    ike = _accepted(net, _forge(net, idr=_idr_payload(id_type, data)))
    assert ike.local_id is not None
    assert (ike.local_id.id_type, ike.local_id.data) == (2, b"east.example")


# ================================================================ the rules themselves
@pytest.mark.parametrize("pattern,actual,same,match", [
    ("C=US, O=*, CN=x", "C=US, O=Evil, CN=x", False, True),
    ("C=US, O=A, CN=x", "CN=x, O=A, C=US", False, True),
    ("C=US, O=A, CN=x", "C=us, O=a, CN=X", True, True),
    ("%any", "C=US, O=Evil, CN=x", True, True),
    ("%fromcert", "@anything", True, True),
    ("@x.example", "@X.EXAMPLE.", True, True),
])
def test_same_is_match_without_wildcards(pattern: str, actual: str, same: bool,
                                         match: bool) -> None:
    p, a = parse_id(pattern), parse_id(actual)
    assert (id_same(p, a), id_matches(p, a)) == (same, match)


@pytest.mark.parametrize("authby", ["secret", "psk"])
def test_fromcert_with_psk_is_refused_at_add(authby: str) -> None:
    """``rightid=%fromcert`` with a PSK: no certificate to take the ID from, any ID would
    do.  Refused when the conn is added (5.2's words), for ``authby=psk`` too, the
    spelling pypluto accepts for secret."""
    cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
                            f"\tleftid=@w\n\trightid=%fromcert\n\tauthby={authby}\n", "f")
    conn = cfg.conns["c"]
    assert end_auth_refusal(conn) == \
        "f:5: ID cannot be specified as %fromcert if PSK or AUTH-NULL is used"


# ================================================================ raw keys: no certificate
@pytest.mark.parametrize("wild_at", ["west", "east"])
def test_raw_key_peer_through_a_dn_wildcard_is_refused(tmp_path: Path, wild_at: str) -> None:
    """A raw key (rightrsasigkey=) is no certificate either: 5.2's ``update_peer_id``
    wants ``same_id``, so the peer's DN must be rightid= itself, at either end."""
    net = raw_net(tmp_path)
    for side, me, peer in ((net.west, WEST_DN, EAST_DN), (net.east, EAST_DN, WEST_DN)):
        conn = side.engine.connections["west-east"]
        conn.local.id = parse_id(me)
        conn.remote.id = parse_id(peer.replace("O=Acme", "O=*") if side.name == wild_at
                                  else peer)
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    logs = (net.west if wild_at == "west" else net.east).logs()
    assert any("does not match the expected" in m or "no connection matches peer" in m
               for m in logs), logs


def test_raw_key_peer_with_the_exact_dn_is_accepted(tmp_path: Path) -> None:
    net = raw_net(tmp_path)
    for side, me, peer in ((net.west, WEST_DN, EAST_DN), (net.east, EAST_DN, WEST_DN)):
        conn = side.engine.connections["west-east"]
        conn.local.id, conn.remote.id = parse_id(me), parse_id(peer)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs()


# ================================================================ ID_NULL as IDr
def _request_idr(net: Net) -> list[tuple[int, bytes]]:
    """The IDr payloads of west's IKE_AUTH request (decrypted with west's keys)."""
    from .test_hostile import _half_open
    ike = _half_open(net)
    payloads = ike.outstanding.task.build(net.west.engine, ike, net.now, [])
    return [(int(p.id_type), bytes(p.data)) for p in payloads
            if isinstance(p, wp.IDPayload) and p.payload_type == PT.IDr]


def test_rightid_null_is_sent_as_an_id_null_idr() -> None:
    """rightid=%null: Libreswan 5.2's initiator sends an ID_NULL IDr ("me Tarzan, you
    Jane"), which its responder needs to take an ID_NULL peer on an AUTH_NULL conn whose
    rightid= is not %null (``update_peer_id``: "Peer ID expects us to have ID_NULL");
    pypluto sent none.  Both pypluto ends still come up."""
    null = {"authby": "null", "leftid": "%null", "rightid": "%null"}
    net = Net(west_kw=null, east_kw=null, west_psk=None, east_psk=None)
    assert _request_idr(net) == [(13, b"")]
    net = Net(west_kw=null, east_kw=null, west_psk=None, east_psk=None)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.east.logs()
    assert not _request_idr(Net(west_kw=dict(null, rightid=None), east_kw=null,
                                west_psk=None, east_psk=None))
