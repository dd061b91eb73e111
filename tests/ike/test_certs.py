"""Certificate authentication between two engines (RFC 7296 §2.15/§3.6/§3.7, RFC 7427,
RFC 4754, RFC 8420): RSA, ECDSA, Ed25519 through an intermediate CA, CERTREQ,
and each bad certificate answered with AUTHENTICATION_FAILED and one log line."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from cryptography import x509 as cx
from pki import CODE_SIGNING, DAY, NOW, PKI, Issued, make_crl

from pypluto.config.certs import CertStore
from pypluto.config.ids import parse_id
from pypluto.iana import PayloadType as PT
from pypluto.wire import message as wm

from .harness import Net, Store, check_pair


class CertSecrets(Store):
    """The harness store plus a CertStore (what the daemon's secrets proxy carries)."""

    def __init__(self, certs: CertStore) -> None:
        super().__init__(None)
        self.certs = certs


def _store(tmp: Path, me: Issued, pki: PKI, stem: str) -> CertStore:
    me.write(tmp, stem)
    (tmp / f"{stem}.crt").write_bytes(me.cert_pem() + b"".join(
        c.public_bytes(__import__("cryptography.hazmat.primitives.serialization",
                                  fromlist=["Encoding"]).Encoding.PEM) for c in me.chain))
    st = CertStore(ipsecdir=str(tmp))
    st.extra_anchors.append(pki.root.cert)
    return st


def cert_net(tmp: Path, west: Issued, east: Issued, pki: PKI, *, authby: str = "rsasig,ecdsa",
             west_pki: PKI | None = None, east_kw: dict | None = None,
             west_kw: dict | None = None) -> Net:
    ws = _store(tmp, west, west_pki or pki, "west")
    es = _store(tmp, east, pki, "east")
    net = Net(west_psk=None, east_psk=None,
              west_kw={"authby": authby, **(west_kw or {})},
              east_kw={"authby": authby, **(east_kw or {})})
    for side, st, me_, peer, stem in ((net.west, ws, west, east, "west"),
                                      (net.east, es, east, west, "east")):
        side.engine.secrets = CertSecrets(st)  # type: ignore[assignment]
        conn = side.engine.connections["west-east"]
        conn.local.cert = str(tmp / f"{stem}.crt")
        conn.local.id = parse_id(me_.dn)
        conn.remote.id = parse_id(peer.dn)
    return net


@pytest.mark.parametrize(("key", "authby"), [
    ("rsa2048", "rsasig"), ("rsa2048", "rsa-sha1"), ("rsa2048", "rsa-sha2"),
    ("p256", "ecdsa"), ("p384", "ecdsa"), ("p256", "rsasig,ecdsa"), ("ed25519", "eddsa")])
def test_certificates_through_an_intermediate(tmp_path: Path, key: str, authby: str) -> None:
    pki = PKI.build(key)
    net = cert_net(tmp_path, pki.ee("west", key), pki.ee("east", key), pki, authby=authby)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs() + \
        net.east.logs()
    check_pair(net)


def test_certreq_is_in_the_ike_sa_init_response(tmp_path: Path) -> None:
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    net.up()
    resp = wm.parse_message(next(d for s, d in net.sent if s == "east"))
    creq = [p for p in resp.payloads if p.payload_type == PT.CERTREQ]
    assert len(creq) == 1 and len(creq[0].data) == 20  # one anchor: SHA-1 of its SPKI


def test_sendcert_never_without_rightcert_fails(tmp_path: Path) -> None:
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    net.west.engine.connections["west-east"].local.sendcert = "never"
    net.up()
    assert not net.established(net.east)
    assert any("peer sent no certificate" in m for m in net.east.logs())


BAD = {
    "expired": ({"not_before": NOW - 10 * DAY, "not_after": NOW - DAY}, "has expired"),
    "not-yet-valid": ({"not_before": NOW + DAY}, "not yet valid"),
    "wrong-eku": ({"eku": [CODE_SIGNING]}, "extendedKeyUsage allows no IKE use"),
    "wrong-ku": ({"digital_signature": False}, "keyUsage allows no digital signature"),
}


@pytest.mark.parametrize("case", sorted(BAD) + ["unknown-ca", "revoked", "wrong-id"])
@pytest.mark.parametrize("bad_side", ["west", "east"])
def test_bad_certificates_fail_authentication(tmp_path: Path, case: str, bad_side: str
                                              ) -> None:
    pki = PKI.build()
    good = {"west": pki.ee("west"), "east": pki.ee("east")}
    other = PKI.build() if case == "unknown-ca" else pki
    if case in BAD:
        good[bad_side] = pki.ee(bad_side, **BAD[case][0])  # type: ignore[arg-type]
        want = BAD[case][1]
    elif case == "unknown-ca":
        good[bad_side] = other.ee(bad_side)
        want = "no path to a trusted CA"
    elif case == "revoked":
        want = "is revoked"
    else:
        good[bad_side] = pki.ee("mallory")
        want = "neither the subject nor a subjectAltName"
    net = cert_net(tmp_path, good["west"], good["east"], pki)
    if case == "wrong-id":  # mallory's certificate, claiming the good ID
        side, peer = (net.west, net.east) if bad_side == "west" else (net.east, net.west)
        claimed = parse_id(f"C=CH, O=pypluto test, CN={bad_side}")
        side.engine.connections["west-east"].local.id = claimed
        peer.engine.connections["west-east"].remote.id = claimed
    if case == "revoked":
        crl = make_crl(pki.inter, [good[bad_side]])
        for s in (net.west, net.east):
            s.engine.secrets.certs.extra_crls.append(crl)  # type: ignore[attr-defined]
    net.up()
    checker = net.east if bad_side == "west" else net.west
    assert not net.established(checker) and not net.established(net.west)
    lines = [m for m in checker.logs() if want in m]
    assert len(lines) == 1, checker.logs()
    assert "AUTHENTICATION_FAILED" in lines[0] or bad_side == "east"


def test_crl_strict_without_a_crl_refuses(tmp_path: Path) -> None:
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    net.east.engine.secrets.certs.crl_strict = True  # type: ignore[attr-defined]
    net.up()
    assert not net.established(net.east)
    assert any("no current CRL" in m and "crl-strict" in m for m in net.east.logs())
    # with a current CRL that does not list west, it works
    net2 = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    st = net2.east.engine.secrets.certs  # type: ignore[attr-defined]
    st.crl_strict = True
    st.extra_crls += [make_crl(pki.inter, []), make_crl(pki.root, [])]
    net2.up()
    assert net2.established(net2.east)


def test_id_fromcert_and_san(tmp_path: Path) -> None:
    pki = PKI.build()
    west = pki.ee("west", san="west.example")
    net = cert_net(tmp_path, west, pki.ee("east"), pki)
    net.west.engine.connections["west-east"].local.id = parse_id("%fromcert")  # subject DN
    net.up()
    assert net.established(net.east)
    net2 = cert_net(tmp_path, west, pki.ee("east"), pki)
    net2.west.engine.connections["west-east"].local.id = parse_id("@west.example")
    net2.east.engine.connections["west-east"].remote.id = parse_id("@west.example")
    net2.up()
    assert net2.established(net2.east)
    assert isinstance(west.cert, cx.Certificate)


@pytest.mark.parametrize("east_expects", ["address", "dn"])
def test_unset_leftid_with_leftcert_is_the_address(tmp_path: Path, east_expects: str) -> None:
    """Libreswan 5.2: an unset leftid= is the host's address even with leftcert= (only
    %fromcert reads the certificate's DN), and an unset rightid= expects the address."""
    pki = PKI.build()
    san = cx.SubjectAlternativeName([cx.IPAddress(ipaddress.ip_address("192.0.2.1"))])
    west = pki.ee("west", extensions=[san])  # the ID must be in the certificate
    net = cert_net(tmp_path, west, pki.ee("east"), pki)
    net.west.engine.connections["west-east"].local.id = None
    if east_expects == "address":
        net.east.engine.connections["west-east"].remote.id = None
    net.up()
    assert bool(net.established(net.east)) == (east_expects == "address"), net.east.logs()
    if east_expects == "dn":  # west showed its address, not the DN east asked for
        assert any("192.0.2.1" in m for m in net.east.logs()), net.east.logs()


@pytest.mark.parametrize(("rightca", "up"), [
    ("C=CH, O=pypluto test, CN=pypluto test intermediate", True),
    ("%same", True),
    ("C=CH, O=pypluto test, CN=some other CA", False),
])
def test_rightca_restricts_the_issuer(tmp_path: Path, rightca: str, up: bool) -> None:
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    net.east.engine.connections["west-east"].remote.ca = rightca
    net.up()
    assert bool(net.established(net.east)) == up
    if not up:
        assert any("is not issued under rightca=" in m for m in net.east.logs())


def test_rightca_file_is_the_trust_anchor(tmp_path: Path) -> None:
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
    st = net.east.engine.secrets.certs  # type: ignore[attr-defined]
    st.extra_anchors.clear()  # no anchor in the store: only the file counts
    (tmp_path / "root.pem").write_bytes(pki.root.cert_pem())
    net.east.engine.connections["west-east"].remote.ca = str(tmp_path / "root.pem")
    net.up()
    assert net.established(net.east)


@pytest.mark.parametrize("cert_side", ["west", "east"])
def test_asymmetric_psk_one_way_cert_the_other(tmp_path: Path, cert_side: str) -> None:
    """leftauth=ecdsa / rightauth=secret: one end signs, the other uses the PSK."""
    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki, authby="")
    for side in (net.west, net.east):
        side.engine.secrets.psk = b"very secret shared key for tests"  # type: ignore[attr-defined]
        conn = side.engine.connections["west-east"]
        signer_is_local = side.name == cert_side
        conn.local.auth = "ecdsa" if signer_is_local else "secret"
        conn.remote.auth = "secret" if signer_is_local else "ecdsa"
    net.up()
    assert net.established(net.west) and net.established(net.east)
    check_pair(net)


@pytest.mark.parametrize("null_side", ["west", "east"])
def test_asymmetric_null_one_way_cert_the_other(tmp_path: Path, null_side: str) -> None:
    """RFC 7619 NULL authentication of one side (leftauth=null), the other signing: the
    anonymous side shows ID_NULL and an AUTH of method 13 keyed with its SK_p; a wrong
    NULL MIC, an ID other than ID_NULL or a PSK MIC in its place is refused."""
    import pypluto.ike.tasks.ike_auth as ia
    from pypluto.config.ids import parse_id
    from pypluto.ike.identity import NULL_ID

    pki = PKI.build()
    for tamper in ("", "mic", "id", "psk"):
        net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki, authby="")
        for side in (net.west, net.east):
            side.engine.secrets.psk = b"very secret shared key for tests"  # type: ignore[attr-defined]
            conn = side.engine.connections["west-east"]
            null_is_local = side.name == null_side
            (conn.local if null_is_local else conn.remote).auth = "null"
            (conn.remote if null_is_local else conn.local).auth = "ecdsa"
            if null_is_local:
                conn.local.id = None
                conn.local.cert = None
            else:
                conn.remote.id = None
        anon = net.west if null_side == "west" else net.east
        if tamper == "mic":
            real = ia._null_key
            try:
                ia._null_key = lambda ike, i, anon=anon, real=real: (  # type: ignore[assignment]
                    b"x" * 32 if any(ike is x for x in anon.engine.by_serial.values())
                    else real(ike, i))  # the anonymous side's own MIC goes wrong
                net.up()
            finally:
                ia._null_key = real
        elif tamper == "id":
            real_li = ia.local_identity
            try:  # the anonymous side claims a name instead of ID_NULL
                ia.local_identity = lambda ike, c, real_li=real_li: (  # type: ignore[assignment]
                    parse_id("@anon") if c.local.auth == "null" else real_li(ike, c))
                net.up()
            finally:
                ia.local_identity = real_li
        elif tamper == "psk":  # the anonymous side uses a PSK MIC instead of NULL
            anon.engine.connections["west-east"].local.auth = "secret"
            net.up()
        else:
            net.up()
        up = bool(net.established(net.west)) and bool(net.established(net.east))
        assert up == (tamper == ""), (tamper, net.west.logs() + net.east.logs())
        if not tamper:
            check_pair(net)
            signer = net.east if anon is net.west else net.west
            ike = next(iter(signer.engine.by_serial.values()))
            assert ike.remote_id == NULL_ID
            assert any("authenticated peer using authby=null and NULL '%null'" in m
                       for m in signer.logs()), signer.logs()


@pytest.mark.parametrize(("west_ppk", "east_ppk", "used"), [
    ("propose", "permit", True), ("propose", "no", False)])
def test_certificates_with_ppk(tmp_path: Path, west_ppk: str, east_ppk: str, used: bool
                               ) -> None:
    """RFC 8784 with signatures: the PPK mixes in, or the responder without one uses
    NO_PPK_AUTH, a signature with the unmixed SK_pi."""
    from pypluto.config.secrets import parse_secrets_text

    pki = PKI.build()
    net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki,
                   west_kw={"ppk": west_ppk}, east_kw={"ppk": east_ppk})
    ppks = parse_secrets_text('%any %any : PPKS "A" "narodnifrontlimannovisadsrbija-0123"\n')
    for side in (net.west, net.east):
        st = side.engine.secrets
        st.ppk_for = ppks.ppk_for  # type: ignore[attr-defined]
        st.ppk_for_ids = ppks.ppk_for_ids  # type: ignore[attr-defined]
    net.up()
    assert net.established(net.west) and net.established(net.east), \
        net.west.logs() + net.east.logs()
    check_pair(net)
    for side in (net.west, net.east):
        assert any("IKE SA keys mixed with PPK 'A'" in m for m in side.logs()) == used


@pytest.mark.parametrize(("sendca", "sent", "up"), [
    (None, 3, True), ("all", 3, True), ("issuer", 2, False), ("none", 1, False)])
def test_sendca_chooses_the_ca_certificates(tmp_path: Path, sendca: str | None, sent: int,
                                            up: bool) -> None:
    """sendca= (ipsec.conf(5)): west's certificate is issued by a second intermediate
    under the first (root -> inter -> sub -> west); east trusts the root only.  none
    sends west's certificate alone, issuer adds sub, all (and unset, RFC 7296 §3.6)
    adds sub and inter; only the whole chain lets east build the path."""
    from pki import make_ca, make_ee

    from pypluto.ike import auth_sig
    from pypluto.wire import payloads as wp

    pki = PKI.build()
    sub = make_ca("pypluto test sub-intermediate", "p256", issuer=pki.inter)
    west = make_ee("west", sub, "p256")
    assert [c.subject for c in west.chain] == [sub.cert.subject, pki.inter.cert.subject]
    kw = {} if sendca is None else {"sendca": sendca}
    net = cert_net(tmp_path, west, pki.ee("east"), pki, west_kw=kw)
    net.west.engine.connections["west-east"].local.sendcert = "always"
    net.up()
    assert bool(net.established(net.east)) is up, net.east.logs()
    if not up:
        assert any("no path to a trusted CA" in m for m in net.east.logs()), net.east.logs()
    conn = net.west.engine.connections["west-east"]
    assert 1 + len(auth_sig.ca_certs(conn, west.cert, west.chain)) == sent
    if up:  # the IKE_AUTH payloads themselves (the IKE SA is there to sign for)
        ike = next(iter(net.west.engine.by_serial.values()))
        out = auth_sig.sign(net.west.engine, ike, conn, b"octets", [])
        assert not isinstance(out, str), out
        assert len([p for p in out if isinstance(p, wp.CertPayload)]) == sent
    if sendca == "issuer":
        assert auth_sig.ca_certs(conn, west.cert, west.chain) == [sub.cert]


def test_require_id_on_certificate_no_accepts_an_id_the_cert_lacks(tmp_path: Path) -> None:
    """require-id-on-certificate= (ipsec.conf(5), RFC 4945 §3.1): west claims
    @west.example, which its certificate (subject CN=west, no SAN) does not carry: east
    refuses by default and accepts with require-id-on-certificate=no."""
    pki = PKI.build()
    for require, up in ((True, False), (False, True)):
        net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki,
                       east_kw={"require_id_on_certificate": require})
        for side, end in ((net.west, "local"), (net.east, "remote")):
            getattr(side.engine.connections["west-east"], end).id = parse_id("@west.example")
        net.up()
        assert bool(net.established(net.east)) is up, net.east.logs()
        if not up:
            assert any("neither the subject nor a subjectAltName" in m
                       for m in net.east.logs())
