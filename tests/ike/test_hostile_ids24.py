"""Red team 24: identities and authentication against a hostile peer that has the keys.

The peer completes IKE_SA_INIT honestly and knows the PSK (it recomputes AUTH over the
ID it lies with), so every lie reaches the identity and authentication logic, not just
the integrity check.  Responder: ID payloads that lie about their type (IPv4 of 3 or 5
octets, IPv6 of 15, NUL in an FQDN, unknown ID types), case and trailing dots, DNs
encoded otherwise, KEY_ID, an AUTH method the connection does not allow, an IDr naming
another connection, PSKs looked up by ID, AUTH payloads that are empty, short, long or
replayed from another IKE SA.  Initiator: a responder that answers with another IDr
(AUTH recomputed for it), another AUTH method, NULL authentication.

Each refusal is AUTHENTICATION_FAILED (RFC 7296 §2.21.2; a malformed ID or AUTH payload
gets INVALID_SYNTAX), no IKE SA, no Child SA, no internal error, and no secret in any
log line.  Where Libreswan 5.2's ``unpack_id`` refuses an ID payload (a NUL in an FQDN
or RFC822 name, an ID type it does not support), pypluto does too, for IDi and IDr,
even when the peer's ID is wildcarded (east's ``leftid=%any``: east is the right end).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pki import PKI

from pypluto.config.ids import parse_id
from pypluto.config.model import Secret
from pypluto.config.secrets import SecretStore
from pypluto.crypto import sigs
from pypluto.iana import AuthMethod
from pypluto.iana import PayloadType as PT
from pypluto.ike import auth_sig, codec
from pypluto.ike.actions import Log, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks import ike_auth
from pypluto.textsafe import LINE_LIMIT, escape, is_clean
from pypluto.wire import payloads as wp

from .harness import PSK, WEST, Net, make_conn
from .test_certs import cert_net
from .test_hostile import _half_open
from .test_hostile_certs import _refused
from .test_hostile_establishment import _hostile_auth_reply, _west_failed_clean, _west_ike

RW = {"left": "%any", "leftid": None}  # east (local right) accepts any peer ID (road warrior)
PSKM = int(AuthMethod.SHARED_KEY_MIC)


def _no_secret_logged(net: Net, *secrets: bytes) -> None:
    lines = net.west.logs() + net.east.logs()
    for s in (PSK, *secrets):
        for form in (s.decode("latin-1"), s.hex()):
            assert not [m for m in lines if form in m], form


def _forge(net: Net, *, idi: wp.IDPayload | None = None, idr: wp.IDPayload | None = None,
           method: int = PSKM, auth: bytes | Callable[[IKESA, bytes, int], bytes] | None = None,
           psk: bytes = PSK) -> list:
    """West's IKE_AUTH with IDi / IDr replaced and AUTH recomputed (with ``psk``) over the
    new IDi; ``auth`` replaces the AUTH data (or computes it).  East's actions."""
    ike = _half_open(net)
    task = ike.outstanding.task
    payloads = task.build(net.west.engine, ike, net.now, [])
    msgid = 1  # IKE_AUTH (no IKE_INTERMEDIATE here)
    if idi is not None:
        payloads = [wp.IDPayload(idi.id_type, idi.data, payload_type=PT.IDi)
                    if p.payload_type == PT.IDi else p for p in payloads]
    if idr is not None:
        payloads = [p for p in payloads if p.payload_type != PT.IDr]
        payloads.insert(1, wp.IDPayload(idr.id_type, idr.data, payload_type=PT.IDr))
    body = codec.id_body(next(p for p in payloads if p.payload_type == PT.IDi))
    if auth is None:
        data = ike_auth._auth_data(ike, psk, body, True, msgid)
    elif callable(auth):
        data = auth(ike, body, msgid)
    else:
        data = auth
    payloads = [codec.auth(method, data) if p.payload_type == PT.AUTH else p
                for p in payloads]
    acts: list = []
    for d in net.west.engine.encode(ike, 35, False, msgid, payloads):
        a = net.east.engine.receive(d, ike.remote, ike.local, net.now)
        net.apply(net.east, a)
        acts += a
    return acts


def _refused_clean(net: Net, acts: list) -> list[str]:
    lines = _refused(net, acts)
    assert not net.east.kernel_sas and not net.east.policies and not net.children(net.east)
    _no_secret_logged(net)
    return lines


def _accepted(net: Net, acts: list) -> IKESA:
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert not [m for m in lines if "internal error" in m], lines
    assert len(net.established(net.east)) == 1, lines
    _no_secret_logged(net)
    return next(iter(net.east.engine.by_serial.values()))


def _id(id_type: int, data: bytes) -> wp.IDPayload:
    return wp.IDPayload(id_type, data, payload_type=PT.IDi)


# ================================================================ ID payloads that lie
ADDRESS_LIES = {  # refused by the wire codec: INVALID_SYNTAX (RFC 7296 §2.21.2)
    "ipv4_3_octets": _id(1, WEST.packed[:3]),
    "ipv4_5_octets": _id(1, WEST.packed + b"\0"),
    "ipv4_empty": _id(1, b""),
    "ipv6_15_octets": _id(5, bytes(15)),
    "ipv6_17_octets": _id(5, bytes(17)),
    "fqdn_empty": _id(2, b""),  # and empty data for a name (§3.5)
    "rfc822_empty": _id(3, b""),
    "dn_empty": _id(9, b""),
    "key_id_empty": _id(11, b""),
}
LIES = {  # refused as Libreswan 5.2 does: AUTHENTICATION_FAILED
    "fqdn_nul": _id(2, b"west.example\0"),
    "fqdn_nul_inside": _id(2, b"west.example\0.evil"),
    "rfc822_nul": _id(3, b"w@west.example\0"),
    "type_0": _id(0, b"west.example"),
    "type_4_subnet": _id(4, WEST.packed + bytes(4)),
    "type_6_subnet": _id(6, bytes(32)),
    "type_7_range": _id(7, bytes(8)),
    "type_8_v6_range": _id(8, bytes(32)),
    "type_10_der_gn": _id(10, b"\x30\x00"),
    "type_12_fc_name": _id(12, b"x"),
    "type_255": _id(255, b"west.example"),
}


def _invalid_syntax(net: Net, acts: list) -> None:
    lines = [a.message for a in acts if isinstance(a, Log)]
    assert any("malformed encrypted payloads" in m for m in lines), lines
    sends = [a for a in acts if isinstance(a, SendPacket)]
    assert len(sends) == 1, lines
    eng = net.east.engine
    assert not eng.by_serial and not eng.ike_sas and not net.east.kernel_sas
    _no_secret_logged(net)


@pytest.mark.parametrize("what", sorted(ADDRESS_LIES))
@pytest.mark.parametrize("payload", [PT.IDi, PT.IDr])
@pytest.mark.parametrize("rw", [False, True], ids=["peer_id", "peer_any"])
def test_address_id_of_the_wrong_length(what: str, payload: int, rw: bool) -> None:
    """An ID_IPV4_ADDR / ID_IPV6_ADDR that is no address, or a name of no octets, is a
    malformed payload: the answer is INVALID_SYNTAX and the half-open IKE SA goes (RFC
    7296 §2.21.2), even under leftid=%any."""
    net = Net(east_kw=RW if rw else None)
    lie = ADDRESS_LIES[what]
    _invalid_syntax(net, _forge(net, idi=lie) if payload == PT.IDi else _forge(net, idr=lie))


@pytest.mark.parametrize("what", sorted(LIES))
@pytest.mark.parametrize("rw", [False, True], ids=["peer_id", "peer_any"])
def test_id_payload_that_lies_about_its_type(what: str, rw: bool) -> None:
    """An ID that cannot be what its type says (Libreswan 5.2 ``unpack_id``: a NUL in a
    name, a type it does not support) fails authentication even when the connection
    accepts any peer ID (``leftid=%any`` here: east is the right end) and the AUTH is
    right for it; no PSK is even looked up."""
    net = Net(east_kw=RW if rw else None)
    lines = _refused_clean(net, _forge(net, idi=LIES[what]))
    if rw:
        assert any("IDi payload invalid" in m for m in lines), lines
    assert not net.east.engine.secrets.asked


@pytest.mark.parametrize("what", sorted(LIES))
def test_idr_that_lies_about_its_type(what: str) -> None:
    """The initiator's IDr ("you Tarzan") is decoded as strictly: Libreswan refuses the
    request when it cannot unpack IDr either."""
    net = Net()
    lines = _refused_clean(net, _forge(net, idr=LIES[what]))
    assert any("IDr payload invalid" in m for m in lines), lines


@pytest.mark.parametrize("text", [b"WEST.EXAMPLE", b"west.example.", b"West.Example..."])
def test_fqdn_compares_without_case_and_trailing_dots(text: bytes) -> None:
    """RFC 7296 §3.5 says nothing; Libreswan's ``id_eq`` ignores case and trailing dots."""
    net = Net()
    ike = _accepted(net, _forge(net, idi=_id(2, text)))
    assert ike.remote_id is not None and ike.remote_id.data == text


@pytest.mark.parametrize("data", [b"west.example\n", b"westXexample", b"west.exampl",
                                  b"west.example.org", b"xwest.example"])
def test_fqdn_that_is_not_rightid_is_refused(data: bytes) -> None:
    net = Net()
    _refused_clean(net, _forge(net, idi=_id(2, data)))


def test_fqdn_as_another_id_type_is_refused() -> None:
    """The bytes of rightid=@west.example under KEY_ID / RFC822 / DN type: no match."""
    for t in (3, 9, 11):
        net = Net()
        _refused_clean(net, _forge(net, idi=_id(t, b"west.example")))


def test_control_characters_in_a_peer_id_are_an_id() -> None:
    """Under leftid=%any a name with control characters is an ID (Libreswan 5.2 refuses
    only a NUL); the engine keeps it exact, and the daemon's log sink (``textsafe``,
    issue 13) makes each line of it one clean, bounded line."""
    net = Net(east_kw=RW)
    data = b"evil\n2026 pluto: established\x1b[2J\r\x7f\xe2\x80\xae" + b"B" * 60000
    ike = _accepted(net, _forge(net, idi=_id(2, data)))
    assert ike.remote_id is not None and ike.remote_id.data == data
    for m in net.east.logs():
        line = escape(m, LINE_LIMIT)  # what daemon/logger.py writes
        assert is_clean(line, 0) and len(line) < LINE_LIMIT + 32, line[:200]
        assert "\n" not in line and "\x1b" not in line and "\u202e" not in line


def test_a_64k_fqdn_is_handled() -> None:
    """A 64000-octet FQDN under leftid=%any: established, no crash, the ID kept exact."""
    net = Net(east_kw=RW)
    ike = _accepted(net, _forge(net, idi=_id(2, b"a" * 64000)))
    assert ike.remote_id is not None and len(ike.remote_id.data) == 64000
    assert net.east.engine.status(net.now).ike_sas


def test_a_long_id_that_matches_nothing_is_refused() -> None:
    net = Net()
    _refused_clean(net, _forge(net, idi=_id(2, b"\x01" * 20000)))


# ================================================================ DNs
def _dn(*attrs: tuple, printable: bool = False) -> bytes:
    from cryptography.x509.name import _ASN1Type
    kind = _ASN1Type.PrintableString if printable else _ASN1Type.UTF8String
    return x509.Name([x509.NameAttribute(o, v, kind if o != NameOID.COUNTRY_NAME else
                                         _ASN1Type.PrintableString) for o, v in attrs]
                     ).public_bytes()


DN_CONN = {"leftid": "C=CH, O=Test, CN=west"}  # east's peer is left
DN = ((NameOID.COUNTRY_NAME, "CH"), (NameOID.ORGANIZATION_NAME, "Test"),
      (NameOID.COMMON_NAME, "west"))


@pytest.mark.parametrize("what,data", [
    ("garbage", b"\x30\x05\x31\x03garbage"),
    ("trailing_bytes", _dn(*DN) + b"\x00"),
    ("truncated", _dn(*DN)[:-1]),
    ("not_a_sequence", b"\x04\x02ab"),
    ("another_cn", _dn(DN[0], DN[1], (NameOID.COMMON_NAME, "mallory"))),
    ("one_attribute_more", _dn(*DN, (NameOID.COMMON_NAME, "x"))),
    ("one_attribute_less", _dn(*DN[:2])),
    ("wildcard_value", _dn(DN[0], DN[1], (NameOID.COMMON_NAME, "*"))),
])
def test_dn_that_is_not_rightid_is_refused(what: str, data: bytes) -> None:
    net = Net(east_kw=DN_CONN)
    _refused_clean(net, _forge(net, idi=_id(9, data)))


@pytest.mark.parametrize("what,data", [
    ("printable_string", _dn(*DN, printable=True)),
    ("other_case", _dn(DN[0], (NameOID.ORGANIZATION_NAME, "TEST"), (NameOID.COMMON_NAME,
                                                                      "West"))),
])
def test_dn_equal_after_normalisation_is_accepted(what: str, data: bytes) -> None:
    """String type and case of a DN value do not matter (Libreswan ``same_dn``)."""
    net = Net(east_kw=DN_CONN)
    _accepted(net, _forge(net, idi=_id(9, data)))


@pytest.mark.parametrize("data", [b"\x30\x05\x31\x03garbage", _dn(*DN) + b"\x00"])
def test_dn_that_does_not_parse_under_any_peer_id(data: bytes) -> None:
    """leftid=%any: Libreswan 5.2's ``unpack_id`` takes a DN's bytes as they are, so an
    ID_DER_ASN1_DN that is no Name is an opaque ID (shown in hex), not a crash."""
    net = Net(east_kw=RW)
    ike = _accepted(net, _forge(net, idi=_id(9, data)))
    assert ike.remote_id is not None and ike.remote_id.data == data


# ================================================================ KEY_ID
def test_key_id_compares_bytes() -> None:
    kid = bytes(range(256))[::7]
    ok = Net(east_kw={"leftid": "@#" + kid.hex()})
    _accepted(ok, _forge(ok, idi=_id(11, kid)))
    for other in (kid[:-1], kid + b"\0", b"\0" + kid, kid[::-1]):
        net = Net(east_kw={"leftid": "@#" + kid.hex()})
        _refused_clean(net, _forge(net, idi=_id(11, other)))


# ================================================================ AUTH method vs the conn
def _null_mic(ike: IKESA, body: bytes, msgid: int) -> bytes:
    """A correct RFC 7619 NULL AUTH (the MIC keyed with SK_pi)."""
    return ike_auth._auth_data(ike, ike.sk_pi, body, True, msgid)


@pytest.mark.parametrize("method,auth", [
    (int(AuthMethod.NULL_AUTH), _null_mic),  # RFC 7619 on a PSK conn
    (int(AuthMethod.RSA_SIG), None),  # a signature method with no certificate
    (int(AuthMethod.DIGITAL_SIGNATURE), None),
    (int(AuthMethod.ECDSA_SHA256_P256), None),
    (3, None),  # DSS: no longer used (RFC 7427)
    (0, None), (12, None), (255, None),  # no such method
])
def test_auth_method_the_psk_conn_does_not_allow(method: int, auth: object) -> None:
    """The AUTH data is the right PSK MIC (or NULL MIC), under another method number:
    refused (Libreswan: the AUTH method must be the one the conn's authby= allows)."""
    net = Net()
    _refused_clean(net, _forge(net, method=method, auth=auth))  # type: ignore[arg-type]


def test_null_auth_with_id_null_on_a_psk_conn_any_peer() -> None:
    """leftid=%any PSK conn: ID_NULL with a correct NULL MIC is not a PSK peer."""
    net = Net(east_kw=RW)
    _refused_clean(net, _forge(net, idi=_id(13, b""), method=int(AuthMethod.NULL_AUTH),
                               auth=_null_mic))


# ================================================================ AUTH payload data
def _other_sa_auth() -> bytes:
    """West's real AUTH of another IKE SA (other nonces, other SPIs, same PSK and IDs)."""
    other = Net(seed=7)
    ike = _half_open(other)
    payloads = ike.outstanding.task.build(other.west.engine, ike, other.now, [])
    return bytes(next(p for p in payloads if isinstance(p, wp.AuthPayload)).data)


def _right(ike: IKESA, body: bytes, msgid: int) -> bytes:
    return ike_auth._auth_data(ike, PSK, body, True, msgid)


@pytest.mark.parametrize("what,auth", [
    ("one_octet", b"\0"),
    ("truncated", lambda ike, body, msgid: _right(ike, body, msgid)[:-1]),
    ("half", lambda ike, body, msgid: _right(ike, body, msgid)[:16]),
    ("one_octet_longer", lambda ike, body, msgid: _right(ike, body, msgid) + b"\0"),
    ("doubled", lambda ike, body, msgid: _right(ike, body, msgid) * 2),
    ("last_bit_flipped", lambda ike, body, msgid: _right(ike, body, msgid)[:-1] + bytes(
        [_right(ike, body, msgid)[-1] ^ 1])),
    ("responder_side_mic", lambda ike, body, msgid: ike_auth._auth_data(ike, PSK, body,
                                                                        False, msgid)),
    ("replayed_from_another_ike_sa", lambda ike, body, msgid: _other_sa_auth()),
    ("wrong_psk", lambda ike, body, msgid: ike_auth._auth_data(ike, PSK[::-1], body, True,
                                                               msgid)),
])
def test_auth_data_that_is_not_the_mic(what: str, auth: object) -> None:
    """RFC 7296 §2.15: the MIC covers this SA's IKE_SA_INIT request, the responder's
    nonce and prf(SK_pi, IDi'): a MIC of another length, of the other direction or of
    another IKE SA (a replay) fails."""
    net = Net()
    lines = _refused_clean(net, _forge(net, auth=auth))  # type: ignore[arg-type]
    assert any("PSK authentication of FQDN '@west.example' failed" in m for m in lines), lines


def test_empty_auth_data_is_invalid_syntax() -> None:
    """An AUTH payload with no data is malformed (§3.8): INVALID_SYNTAX, nothing kept."""
    net = Net()
    _invalid_syntax(net, _forge(net, auth=b""))


def test_the_forger_itself_is_right() -> None:
    """The harness's recomputed AUTH is accepted (so the refusals above are real)."""
    net = Net()
    ike = _accepted(net, _forge(net, auth=_right))
    assert len(net.children(net.east)) == 1 and ike.remote_id is not None


# ================================================================ IDr and conn switching
def _east_conn(net: Net, name: str, **kw: object) -> None:
    net.apply(net.east, net.east.engine.add_connection(make_conn(name, local_left=False,
                                                                 **kw)))  # type: ignore[arg-type]


def _fqdn(name: str, ptype: int = PT.IDr) -> wp.IDPayload:
    return wp.IDPayload(2, name.encode(), payload_type=ptype)


def test_idr_naming_a_null_conn_does_not_lower_the_auth() -> None:
    """East's own conn wants a PSK; a second conn of east is authby=null for anyone.  A
    peer that shows IDi @west.example, names the NULL conn's ID in IDr and sends a NULL
    MIC is refused: the NULL conn wants ID_NULL, the PSK conn a PSK."""
    net = Net()
    _east_conn(net, "open", authby="null", leftid=None, rightid=None, left="%any")
    _refused_clean(net, _forge(net, idr=_fqdn("east.example"), method=int(
        AuthMethod.NULL_AUTH), auth=_null_mic))


def test_idr_naming_another_psk_conn_uses_that_conns_secret() -> None:
    """East's second conn (leftid=@alt.example on east's side) has its own PSK in a real
    SecretStore; naming it in IDr with the PSK of the first conn fails, and the other
    way round too: each conn is authenticated with the secret of the IDs it was picked
    by, never with the secret of another."""
    a, b = b"the PSK of the first conn ----", b"the PSK of the alternative ----"
    for idr, psk, ok in (("alt.example", a, False), ("east.example", b, False),
                         ("alt.example", b, True), ("east.example", a, True)):
        net = Net()
        net.east.engine.secrets = SecretStore(secrets=[
            Secret("PSK", [parse_id("@east.example"), parse_id("@west.example")], a),
            Secret("PSK", [parse_id("@alt.example"), parse_id("@west.example")], b)])
        _east_conn(net, "alt", rightid="@alt.example", leftsubnet="198.51.100.0/24",
                   rightsubnet="203.0.113.0/24")
        acts = _forge(net, idr=_fqdn(idr), psk=psk)
        if ok:
            ike = _accepted(net, acts)
            assert ike.local_id is not None and ike.local_id.data == idr.encode()
            assert ike.conn.name == ("alt" if idr == "alt.example" else "west-east")
        else:
            _refused_clean(net, acts)
        _no_secret_logged(net, a, b)


@pytest.mark.parametrize("claim,psk,ok", [
    ("@alice.example", "alice", True),
    ("@alice.example", "bob", False),  # Bob's PSK does not make one Alice
    ("@bob.example", "alice", False),
    ("@bob.example", "bob", True),
    ("@mallory.example", "any", True),  # the %any record: Libreswan's rule
    ("@mallory.example", "alice", False),
    ("@ALICE.example.", "alice", True),  # the index matches as the ID does
])
def test_psk_looked_up_by_the_peers_id(claim: str, psk: str, ok: bool) -> None:
    """A road-warrior PSK conn (leftid=%any on east's peer side) with per-peer secrets
    in a real SecretStore: the secret is the one of the ID the peer claims."""
    keys = {"alice": b"alice's PSK, long enough.....", "bob": b"bob's PSK, long enough.......",
            "any": b"the group PSK, long enough..."}
    net = Net(east_kw=RW)
    net.east.engine.secrets = SecretStore(secrets=[
        Secret("PSK", [parse_id("@east.example"), parse_id("@alice.example")], keys["alice"]),
        Secret("PSK", [parse_id("@east.example"), parse_id("@bob.example")], keys["bob"]),
        Secret("PSK", [parse_id("%any")], keys["any"])])
    acts = _forge(net, idi=_id(2, claim[1:].encode()), psk=keys[psk])
    if ok:
        ike = _accepted(net, acts)
        assert ike.remote_id is not None and ike.remote_id.data == claim[1:].encode()
    else:
        _refused_clean(net, acts)
    _no_secret_logged(net, *keys.values())


def test_same_psk_for_two_conns_does_not_cross_them() -> None:
    """Two conns share one PSK (``%any : PSK``): a peer is authenticated as the conn
    its ID picks, with that conn's selectors, and an ID no conn names is refused even
    though the PSK is right."""
    for claim, conn, ok in (("west.example", "west-east", True),
                            ("other.example", "other", True),
                            ("nobody.example", None, False)):
        net = Net()
        _east_conn(net, "other", leftid="@other.example", leftsubnet="192.0.2.128/25")
        acts = _forge(net, idi=_id(2, claim.encode()))
        if not ok:
            _refused_clean(net, acts)
            continue
        ike = _accepted(net, acts)
        assert ike.conn.name == conn
        if conn == "other":
            # other's selectors are not what west asked for: no Child SA, the IKE SA stands
            assert not net.children(net.east)
        else:
            assert len(net.children(net.east)) == 1


# ================================================================ certificates
def _west_key(net: Net) -> object:
    """West's private key, from the store west signs with."""
    cred = auth_sig.credential(net.west.engine, net.west.engine.connections["west-east"])
    assert not isinstance(cred, str), cred
    return cred.key


def _cert_forge_net(tmp: Path, authby: str) -> tuple[Net, PKI]:
    pki = PKI.build("p256")
    return cert_net(tmp, pki.ee("west"), pki.ee("east"), pki, authby=authby), pki


def test_psk_auth_on_a_certificate_conn(tmp_path: Path) -> None:
    """AUTH method 2 with the right MIC of a PSK east does hold, on an authby=rsasig,ecdsa
    conn: refused (the PSK is not how this conn authenticates its peer)."""
    net, _ = _cert_forge_net(tmp_path, "rsasig,ecdsa")
    net.east.engine.secrets.psk = PSK  # type: ignore[attr-defined]
    _refused_clean(net, _forge(net, method=PSKM))


@pytest.mark.parametrize("authby,hash_id", [
    ("ecdsa", sigs.HASH_SHA1),  # RFC 8247 §3.2 / Libreswan: SHA-1 is no ECDSA hash here
    ("ecdsa-sha2_256", sigs.HASH_SHA2_512),  # a hash the conn does not allow
])
def test_digital_signature_with_a_hash_the_conn_does_not_allow(
        tmp_path: Path, authby: str, hash_id: int) -> None:
    """RFC 7427 AUTH (method 14) by the peer's real key over the right octets, with a
    hash outside what the conn allows (Libreswan 5.2: the conn's sighash policy)."""
    net, pki = _cert_forge_net(tmp_path, authby)
    west_key = _west_key(net)

    def sign(ike: IKESA, body: bytes, msgid: int) -> bytes:
        return sigs.sign(sigs.AUTH_DIGITAL_SIGNATURE, west_key,
                         ike_auth._octets(ike, body, True, msgid), hash_id)
    _refused_clean(net, _forge(net, method=sigs.AUTH_DIGITAL_SIGNATURE, auth=sign))


def test_digital_signature_forger_is_right(tmp_path: Path) -> None:
    """The same forge with SHA2-256 is accepted: the refusals above are about the hash."""
    net, _ = _cert_forge_net(tmp_path, "ecdsa")
    west_key = _west_key(net)

    def sign(ike: IKESA, body: bytes, msgid: int) -> bytes:
        return sigs.sign(sigs.AUTH_DIGITAL_SIGNATURE, west_key,
                         ike_auth._octets(ike, body, True, msgid), sigs.HASH_SHA2_256)
    _accepted(net, _forge(net, method=sigs.AUTH_DIGITAL_SIGNATURE, auth=sign))


# ================================================================ a hostile responder
def _reply(net: Net, *, idr: wp.IDPayload | None = None, method: int = PSKM,
           auth: Callable[[IKESA, bytes], bytes] | None = None) -> list:
    """East's real IKE_AUTH answer with IDr / the AUTH method replaced and AUTH
    recomputed over the new IDr (east knows the PSK and the keys), given to west."""
    def mutate(payloads: list) -> list:
        w = _west_ike(net)
        if idr is not None:
            payloads = [wp.IDPayload(idr.id_type, idr.data, payload_type=PT.IDr)
                        if p.payload_type == PT.IDr else p for p in payloads]
        body = codec.id_body(next(p for p in payloads if p.payload_type == PT.IDr))
        data = auth(w, body) if auth is not None else \
            ike_auth._auth_data(w, PSK, body, False, 1)
        return [codec.auth(method, data) if p.payload_type == PT.AUTH else p
                for p in payloads]
    return _hostile_auth_reply(net, mutate)


def _west_refused(net: Net) -> list[str]:
    """West refused the answer, told east (§2.21.2), and nobody keeps anything."""
    _west_failed_clean(net)
    assert not net.established(net.west) and not net.west.engine.by_serial
    assert not net.east.kernel_sas and not net.established(net.east), net.east.logs()
    _no_secret_logged(net)
    return net.west.logs()


def test_responder_forger_is_right() -> None:
    """The recomputed answer (same IDr) is accepted: the refusals below are real."""
    net = Net()
    _reply(net)
    assert net.established(net.west) and len(net.children(net.west)) == 1, net.west.logs()


@pytest.mark.parametrize("what,idr", [
    ("another_name", _fqdn("mallory.example")),
    ("same_bytes_key_id", wp.IDPayload(11, b"east.example", payload_type=PT.IDr)),
    ("same_bytes_rfc822", wp.IDPayload(3, b"east.example", payload_type=PT.IDr)),
    ("suffix", _fqdn("east.example.evil")),
    ("address", wp.IDPayload(1, bytes([192, 0, 2, 2]), payload_type=PT.IDr)),
    ("id_null", wp.IDPayload(13, b"", payload_type=PT.IDr)),
])
def test_responder_idr_not_rightid_with_a_right_auth(what: str, idr: wp.IDPayload) -> None:
    """The responder authenticates (its AUTH is right for the IDr it sends) but as
    someone else than rightid=: refused (RFC 7296 §2.15: the ID is who it is)."""
    net = Net()
    _reply(net, idr=idr)
    lines = _west_refused(net)
    assert any("does not match the expected" in m for m in lines), lines


@pytest.mark.parametrize("what", sorted(LIES))
def test_responder_idr_that_lies_about_its_type(what: str) -> None:
    """Decoded as strictly as the initiator's IDi: refused for what it is."""
    net = Net()
    _reply(net, idr=wp.IDPayload(LIES[what].id_type, LIES[what].data, payload_type=PT.IDr))
    lines = _west_refused(net)
    assert any("IDr payload invalid" in m for m in lines), lines


def test_responder_idr_case_and_trailing_dot() -> None:
    """What east's responder ID may differ in (case, trailing dot): accepted."""
    net = Net()
    _reply(net, idr=_fqdn("EAST.example."))
    assert net.established(net.west), net.west.logs()


@pytest.mark.parametrize("method,null_key", [
    (int(AuthMethod.NULL_AUTH), True),  # RFC 7619 when west requires a PSK
    (int(AuthMethod.NULL_AUTH), False),
    (int(AuthMethod.DIGITAL_SIGNATURE), False),
    (int(AuthMethod.RSA_SIG), False),
    (0, False),
])
def test_responder_auth_of_another_method(method: int, null_key: bool) -> None:
    """AUTH of another method than authby=secret (the MIC right for its key): refused."""
    net = Net()
    _reply(net, method=method, auth=(lambda w, body: ike_auth._auth_data(
        w, w.sk_pr, body, False, 1)) if null_key else None)
    _west_refused(net)


def test_responder_null_auth_with_id_null() -> None:
    """A responder that goes anonymous (ID_NULL, NULL AUTH keyed with SK_pr) when west
    requires authentication: refused."""
    net = Net()
    _reply(net, idr=wp.IDPayload(13, b"", payload_type=PT.IDr),
           method=int(AuthMethod.NULL_AUTH),
           auth=lambda w, body: ike_auth._auth_data(w, w.sk_pr, body, False, 1))
    _west_refused(net)


@pytest.mark.parametrize("what,auth", [
    ("initiator_side_mic", lambda w, body: ike_auth._auth_data(w, PSK, body, True, 1)),
    ("truncated", lambda w, body: ike_auth._auth_data(w, PSK, body, False, 1)[:-1]),
    ("longer", lambda w, body: ike_auth._auth_data(w, PSK, body, False, 1) + b"\0"),
    ("another_sa", lambda w, body: _other_sa_auth()),
])
def test_responder_auth_data_that_is_not_its_mic(what: str, auth: Callable) -> None:
    net = Net()
    _reply(net, auth=auth)
    lines = _west_refused(net)
    assert any("PSK mismatch" in m for m in lines), lines


def test_idr_naming_nobody_is_answered_with_our_own_id() -> None:
    """RFC 7296 §3.5: IDr names whom the initiator wants; a responder that is not that
    one answers with its own ID (as Libreswan), which the initiator then judges."""
    net = Net()
    ike = _accepted(net, _forge(net, idr=_fqdn("nobody.example")))
    assert ike.local_id is not None and ike.local_id.data == b"east.example"
