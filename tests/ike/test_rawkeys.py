"""Raw public keys between two engines (issue 14): each side's private key is a key-only
entry of its own NSS database (``certutil -G``, as ``ipsec newhostkey`` makes it), found
by CKAID (``leftckaid=``) or by the CKAID of ``leftrsasigkey=``/``leftpubkey=``; the
peer's key is ``rightrsasigkey=0s...`` (RFC 3110) or ``rightpubkey=`` (SPKI). AUTH is
RSA method 1 or RFC 7427; a wrong key gives AUTHENTICATION_FAILED with one line."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from testsupport import require

from pypluto.config.certs import CertStore
from pypluto.config.hostkeys import HostKeys
from pypluto.crypto import rawkey

from .harness import Net, check_pair
from .test_certs import CertSecrets

HAVE_CERTUTIL = subprocess.run(["sh", "-c", "command -v certutil"],
                               capture_output=True).returncode == 0


def new_db(d: Path, password: str | None = None, bits: int = 2048, kind: str = "rsa") -> str:
    """An NSS database with one RSA key (``certutil -N``, ``certutil -G``); its CKAID."""
    require(HAVE_CERTUTIL, "certutil (libnss3-tools)")
    d.mkdir(parents=True, exist_ok=True)
    noise = d / "noise"
    noise.write_bytes(os.urandom(64))
    pw: list[str] = ["--empty-password"]
    if password is not None:
        (d / "pwfile").write_text(password + "\n")
        pw = ["-f", str(d / "pwfile")]
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", *pw], check=True,
                   capture_output=True)
    gen = ["-k", "rsa", "-g", str(bits)] if kind == "rsa" else ["-k", "ec", "-q", "nistp256"]
    subprocess.run(["certutil", "-G", "-d", f"sql:{d}", *gen, "-z",
                    str(noise), *(pw if password is not None else [])], check=True,
                   capture_output=True)
    keys = HostKeys(str(d), password).public_keys()
    assert len(keys) == 1
    return keys[0].ckaid


def pubkey_of(d: Path, password: str | None = None) -> rawkey.RawPublicKey:
    pub = HostKeys(str(d), password).public_keys()[0].public
    assert pub is not None
    return pub  # type: ignore[return-value]


def rsasigkey(pub: rawkey.RawPublicKey) -> str:
    return "0s" + base64.b64encode(rawkey.rfc3110_encode(pub)).decode()  # type: ignore[arg-type]


def spki(pub: rawkey.RawPublicKey) -> str:
    return "0s" + base64.b64encode(rawkey.spki_der(pub)).decode()


def ecdsakey(pub: rawkey.RawPublicKey) -> str:
    return "0s" + base64.b64encode(rawkey.ecdsa_point(pub)).decode()  # type: ignore[arg-type]


def raw_net(tmp: Path, *, authby: str = "rsasig", form: str = "rsasigkey",
            wrong: str | None = None, kind: str = "rsa") -> Net:
    """west and east with their own NSS database; ``form``: how each names keys.
    ``wrong``: the side whose idea of the peer's key is someone else's key."""
    dbs = {s: tmp / s / "nss" for s in ("west", "east")}
    cks = {s: new_db(d, kind=kind) for s, d in dbs.items()}
    pubs = {s: pubkey_of(d) for s, d in dbs.items()}
    if wrong:
        cks["mallory"] = new_db(tmp / "mallory" / "nss")
        pubs["mallory"] = pubkey_of(tmp / "mallory" / "nss")
    net = Net(west_psk=None, east_psk=None, west_kw={"authby": authby},
              east_kw={"authby": authby})
    for side, peer in ((net.west, "east"), (net.east, "west")):
        me = side.name
        st = CertStore(nssdir=str(dbs[me]))
        side.engine.secrets = CertSecrets(st)  # type: ignore[assignment]
        conn = side.engine.connections["west-east"]
        their = pubs["mallory" if wrong == me else peer]
        if form == "rsasigkey":
            conn.local.raw["rsasigkey"] = rsasigkey(pubs[me])
            conn.remote.raw["rsasigkey"] = rsasigkey(their)
        elif form == "pubkey":
            conn.local.raw["pubkey"] = spki(pubs[me])
            conn.remote.raw["pubkey"] = spki(their)
        elif form == "ecdsakey":
            conn.local.raw["ecdsakey"] = ecdsakey(pubs[me])
            conn.remote.raw["ecdsakey"] = ecdsakey(their)
        else:  # leftckaid= for ours, rightrsasigkey= for theirs
            conn.local.raw["ckaid"] = cks[me]
            conn.remote.raw["rsasigkey"] = rsasigkey(their)
    return net


@pytest.mark.parametrize(("form", "authby"), [
    ("rsasigkey", "rsasig"), ("rsasigkey", "rsa-sha1"), ("pubkey", "rsasig"),
    ("ckaid", "rsa-sha2"), ("ckaid", "rsasig,ecdsa")])
def test_raw_rsa_keys_from_nss_both_roles(tmp_path: Path, form: str, authby: str) -> None:
    net = raw_net(tmp_path, authby=authby, form=form)
    net.up()
    assert net.established(net.west) and net.established(net.east), \
        net.west.logs() + net.east.logs()
    check_pair(net)
    want = "RSA PKCS#1 v1.5 SHA-1" if authby == "rsa-sha1" else "RSASSA-PSS"
    for s in (net.west, net.east):
        assert any(want in m for m in s.logs()), s.logs()
    # no CERT payload went either way
    from pypluto.iana import PayloadType as PT
    assert not any(PT.CERT in _types(d) for _s, d in net.sent if len(d) > 28)


def _types(data: bytes) -> set[int]:
    from pypluto.wire import message as wm
    try:
        m = wm.parse_message(data)
    except Exception:  # noqa: BLE001 - encrypted payloads are opaque here
        return set()
    return {int(p.payload_type) for p in m.payloads}


@pytest.mark.parametrize("authby", ["ecdsa", "rsasig,ecdsa"])
def test_raw_ecdsa_keys_as_pubkey(tmp_path: Path, authby: str) -> None:
    """``leftpubkey=``/``rightpubkey=`` with P-256 keys made by ``certutil -G -k ec``."""
    net = raw_net(tmp_path, authby=authby, form="pubkey", kind="ec")
    net.up()
    assert net.established(net.west) and net.established(net.east), \
        net.west.logs() + net.east.logs()
    for s in (net.west, net.east):
        assert any("ECDSA-SHA2_256" in m for m in s.logs()), s.logs()


def test_raw_ecdsa_keys_in_ecdsakey(tmp_path: Path) -> None:
    """``leftecdsakey=``/``rightecdsakey=`` as ``ipsec showhostkey`` prints them (the raw
    point X ‖ Y, RFC 8005's IPSECKEY form), P-256 keys made by ``certutil -G -k ec``:
    both ends sign with ECDSA; the key found by its CKAID.  The same point with the
    0x04 octet is the same key; a point of the wrong size or off the curve is refused
    with the reason."""
    net = raw_net(tmp_path, authby="ecdsa", form="ecdsakey", kind="ec")
    net.up()
    assert net.established(net.west) and net.established(net.east), \
        net.west.logs() + net.east.logs()
    for s in (net.west, net.east):
        assert any("ECDSA-SHA2_256" in m for m in s.logs()), s.logs()
    pub = pubkey_of(tmp_path / "west" / "nss")
    point = rawkey.ecdsa_point(pub)  # type: ignore[arg-type]
    assert len(point) == 64
    with_04 = "0s" + base64.b64encode(b"\x04" + point).decode()
    assert rawkey.spki_der(rawkey.parse_ecdsakey(with_04)) == rawkey.spki_der(pub)
    assert rawkey.end_public_key({"ecdsakey": ecdsakey(pub)}) == pub
    with pytest.raises(rawkey.RawKeyError, match="63 bytes"):
        rawkey.parse_ecdsakey("0s" + base64.b64encode(point[:63]).decode())
    with pytest.raises(rawkey.RawKeyError, match="not a point on secp256r1"):
        rawkey.parse_ecdsakey("0x" + "01" * 64)


def test_pubkey_of_an_unknown_algorithm_is_a_raw_key_error() -> None:
    """A SubjectPublicKeyInfo whose algorithm OID cryptography does not know raises
    UnsupportedAlgorithm, which is no ValueError: it is a RawKeyError too."""
    unknown = bytes.fromhex("301a300b06092b0601040182370a0a030b00300802010302030100ff")
    with pytest.raises(rawkey.RawKeyError, match="unsupported public key algorithm"):
        rawkey.parse_pubkey("0s" + base64.b64encode(unknown).decode())
    with pytest.raises(rawkey.RawKeyError, match="not a SubjectPublicKeyInfo"):
        rawkey.parse_pubkey("0s" + base64.b64encode(unknown[:-3]).decode())


@pytest.mark.parametrize("wrong", ["west", "east"])
def test_wrong_raw_key_fails_with_one_line(tmp_path: Path, wrong: str) -> None:
    net = raw_net(tmp_path, wrong=wrong)
    net.up()
    checker = net.west if wrong == "west" else net.east
    assert not net.established(checker) and not net.established(net.west)
    lines = [m for m in checker.logs() if "wrong raw key?" in m]
    assert len(lines) == 1, checker.logs()
    assert "AUTHENTICATION_FAILED" in lines[0] or wrong == "west"  # the responder's answer


def test_peer_id_must_be_the_id_of_its_raw_key(tmp_path: Path) -> None:
    net = raw_net(tmp_path)
    from pypluto.config.ids import parse_id
    conn = net.east.engine.connections["west-east"]
    conn.remote.id = parse_id("@someone-else.example")
    net.up()
    assert not net.established(net.east)
    # the key belongs to rightid=: another ID finds no conn, hence no key
    assert any("no connection matches peer FQDN '@west.example'" in m and
               "AUTHENTICATION_FAILED" in m for m in net.east.logs()), net.east.logs()


def test_missing_private_key_is_named(tmp_path: Path) -> None:
    net = raw_net(tmp_path, form="ckaid")
    net.west.engine.connections["west-east"].local.raw["ckaid"] = "00" * 20
    net.up()
    assert not net.established(net.west)
    assert any("no private key with CKAID 0000" in m for m in net.west.logs()), \
        net.west.logs()


def test_password_protected_database(tmp_path: Path) -> None:
    d = tmp_path / "pw" / "nss"
    ck = new_db(d, password="Secret.123")
    assert HostKeys(str(d), "Secret.123").private_key(ck).key_size == 2048  # type: ignore[union-attr]
    from pypluto.config.hostkeys import HostKeyError
    with pytest.raises(HostKeyError, match="wrong password"):
        HostKeys(str(d), "nope").private_key(ck)
    with pytest.raises(HostKeyError, match="needs a password and none is configured"):
        HostKeys(str(d), None).private_key(ck)


def test_rsasigkey_round_trip_and_ckaid(tmp_path: Path) -> None:
    d = tmp_path / "db"
    ck = new_db(d)
    pub = pubkey_of(d)
    assert rawkey.ckaid(pub) == ck  # NSS's CKA_ID: SHA-1 of the modulus
    back = rawkey.parse_rsasigkey(rsasigkey(pub))
    assert rawkey.spki_der(back) == rawkey.spki_der(pub)
    assert rawkey.spki_der(rawkey.parse_pubkey(spki(pub))) == rawkey.spki_der(pub)
    assert rawkey.keyid(pub).startswith("AwEAA")  # exponent 65537, as Libreswan shows
    with pytest.raises(rawkey.RawKeyError):
        rawkey.parse_rsasigkey("0sAwEAAQ==")
