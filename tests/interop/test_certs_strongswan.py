"""Certificate authentication against strongSwan 5.9.8 (issue 14), both roles, with
traffic: RSA PKCS#1 v1.5 and RSASSA-PSS (RFC 7427), ECDSA P-256 / P-384, Ed25519
(RFC 8420), each end certificate issued by an intermediate CA that the sender adds
as a second CERT payload.  Our certificates, keys and the root CA live in a
Libreswan-layout NSS database (``certutil -N``, ``pk12util -i``, ``certutil -A -t
CT,,``) given with ``--nssdir`` and ``leftcert=<nickname>``; Ed25519 comes from PEM
files (NSS 3.87 cannot import EdDSA keys).  strongSwan gets x509 / x509ca / pkcs8
files loaded by ``swanctl --load-all`` (``--load-creds``) and sends its certificate only
when asked (``send_cert = ifasked``, its default): the CERTREQ we send is honoured.
The 4096-bit RSA case makes IKE_AUTH exceed 1,500 bytes both ways: RFC 7383
fragments in both directions."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from lab import (
    EAST_INNER,
    EAST_OUTER,
    EAST_SUBNET,
    WEST_INNER,
    WEST_OUTER,
    WEST_SUBNET,
    Lab,
    require,
)
from peers import PROPOSALS, Pypluto, StrongSwan, have_strongswan
from pki import PKI, Issued
from trixie import STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
ROLES = ["initiator", "responder"]
PROPOSAL = PROPOSALS[0]  # defaults


@dataclass(frozen=True)
class CertCase:
    name: str
    key: str  # tests/pki.py key kind
    authby: str  # our authby=
    ours: str  # strongSwan's name of the signature scheme we use
    theirs: str  # ... and of the one it uses (which we verify)
    charon_extra: str = ""  # strongswan.conf charon { } lines
    fragments: bool = False


_PSS = "RSA_EMSA_PSS_SHA2_256_SALT_32"
CASES = [
    # authby=rsasig: RSASSA-PSS from us (as Libreswan), PKCS#1 v1.5 from strongSwan
    CertCase("rsa-pkcs1", "rsa2048", "rsasig", _PSS, "RSA_EMSA_PKCS1_SHA2_256"),
    # authby=rsa-sha1: AUTH method 1 (PKCS#1 v1.5 with SHA-1) from us, and (we send no
    # SIGNATURE_HASH_ALGORITHMS, as Libreswan 5.2) from strongSwan, the only kind the conn
    # accepts (red team 24: before, we took strongSwan's PKCS#1 v1.5 with SHA-256)
    CertCase("rsa-pkcs1-sha1", "rsa2048", "rsa-sha1", "RSA signature", "RSA signature"),
    CertCase("rsa-pss", "rsa2048", "rsa-sha2", _PSS, "RSA_EMSA_PSS", "rsa_pss = yes"),
    CertCase("ecdsa-p256", "p256", "ecdsa", "ECDSA_WITH_SHA256_DER", "ECDSA_WITH_SHA256_DER"),
    CertCase("ecdsa-p384", "p384", "ecdsa", "ECDSA_WITH_SHA384_DER", "ECDSA_WITH_SHA384_DER"),
    CertCase("ed25519", "ed25519", "eddsa", "ED25519", "ED25519"),
    CertCase("rsa4096-fragments", "rsa4096", "rsasig", _PSS, "RSA_EMSA_PKCS1_SHA2_384",
             fragments=True),
]


def _pem(c: object) -> bytes:
    return c.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]


def _nssdb(lab: Lab, d: Path, me: Issued, pki: PKI) -> None:
    def run(*argv: str) -> None:
        subprocess.run(list(argv), check=True, capture_output=True, timeout=60)
    d.mkdir(parents=True)
    run("certutil", "-N", "-d", f"sql:{d}", "--empty-password")
    p12 = d.parent / "west.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"west", me.key, me.cert, me.chain, BestAvailableEncryption(b"pw")))  # type: ignore[arg-type]
    if not me.key.__class__.__name__.startswith("Ed25519"):
        run("pk12util", "-i", str(p12), "-d", f"sql:{d}", "-W", "pw")
    (d.parent / "root.pem").write_bytes(pki.root.cert_pem())
    run("certutil", "-A", "-d", f"sql:{d}", "-n", "labroot", "-t", "CT,,", "-i",
        str(d.parent / "root.pem"))


def _swanctl(case: CertCase, east: Issued, west: Issued) -> str:
    frag = "yes"
    return f"""\
connections {{
    east-west {{
        version = 2
        local_addrs = {EAST_OUTER}
        remote_addrs = {WEST_OUTER}
        proposals = {PROPOSAL.ss_ike}
        fragmentation = {frag}
        local {{
            auth = pubkey
            certs = east.crt
            id = "{east.dn}"
        }}
        remote {{
            auth = pubkey
            id = "{west.dn}"
        }}
        children {{
            net {{
                local_ts = {EAST_SUBNET}
                remote_ts = {WEST_SUBNET}
                esp_proposals = {PROPOSAL.ss_esp}
                start_action = none
            }}
        }}
    }}
}}
"""


def _ipsec_conf(case: CertCase, west: Issued, east: Issued, leftcert: str) -> str:
    return f"""\
config setup
\tplutodebug=none

conn west-east
\tauthby={case.authby}
\tleft={WEST_OUTER}
\tleftid="{west.dn}"
\tleftcert={leftcert}
\tleftsubnet={WEST_SUBNET}
\tleftsourceip={WEST_INNER}
\tright={EAST_OUTER}
\trightid="{east.dn}"
\trightsubnet={EAST_SUBNET}
\trightsourceip={EAST_INNER}
\tfragmentation=yes
\tauto=add
"""


def _up(lab: Lab, case: CertCase, role: str, peer: PeerSpec
        ) -> tuple[Pypluto, StrongSwan, PKI]:
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)
    pki = PKI.build(case.key)
    west, east = pki.ee("west", case.key), pki.ee("east", case.key)
    them = peer.strongswan(lab, lab.east, "strongswan-east")
    them.charon_extra = case.charon_extra
    if peer.chroot and case.charon_extra:  # the chroot's template has no charon_extra
        render = them.render_conf  # type: ignore[attr-defined]
        them.render_conf = lambda: render().replace(  # type: ignore[attr-defined]
            "charon {", "charon {\n    " + case.charon_extra, 1)
    them.start()
    sdir = them.dir / "swanctl"
    for sub in ("x509", "x509ca", "pkcs8"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "x509" / "east.crt").write_bytes(east.cert_pem())
    (sdir / "x509" / "inter.crt").write_bytes(_pem(pki.inter.cert))  # an untrusted intermediate
    (sdir / "x509ca" / "root.crt").write_bytes(pki.root.cert_pem())
    (sdir / "pkcs8" / "east.key").write_bytes(east.key_pem())
    them.load(_swanctl(case, east, west))
    nss = lab.workdir / "pypluto-nss" / "nss"
    _nssdb(lab, nss, west, pki)
    if case.key == "ed25519":  # PEM files: leftcert=/path, the key next to it
        crt, _ = west.write(nss.parent, "west")
        crt.write_bytes(west.cert_pem() + _pem(pki.inter.cert))
        leftcert = str(crt)
    else:
        leftcert = "west"
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(nss)]
    us.start(_ipsec_conf(case, west, east, leftcert))
    if role == "initiator":
        out = us.initiate()
        assert us.child_established(), f"whack --initiate: {out}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established(), 20,
                 "IKE and Child SA on both ends")
    return us, them, pki


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in STRONGSWAN_PEERS])
def test_cert_auth_with_strongswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                   case: CertCase, role: str) -> None:
    cell(peer=peer.label, case="certificates", role=role, proposal=case.name)
    us, them, _ = _up(lab, case, role, peer)
    log = (them.dir / "charon.log").read_text(errors="replace")
    # strongSwan checked our chain through the intermediate we sent, and we got its
    # certificate only because we asked for it (send_cert = ifasked)
    assert re.search(r"received cert request for \"C=CH, O=pypluto test, CN=pypluto test "
                     r"root\"", log), log[-3000:]
    assert "sending end entity cert" in log and "sending issuer cert" in log, log[-3000:]
    assert 'reached self-signed root ca with a path length of 1' in log, log[-3000:]
    assert f"authentication of 'C=CH, O=pypluto test, CN=west' with {case.ours} " \
        "successful" in log, log[-3000:]
    assert f"authentication of 'C=CH, O=pypluto test, CN=east' (myself) with {case.theirs}" \
        in log, log[-3000:]
    if case.fragments:  # 4096-bit keys: IKE_AUTH well over 1,500 bytes each way
        sizes = [int(n) for n in re.findall(r"splitting IKE message \((\d+) bytes\)", log)]
        got = [int(n) for n in re.findall(r"reassembled fragmented IKE message \((\d+) bytes",
                                          log)]
        assert sizes and max(sizes) > 1500 and got and max(got) > 1500, log[-3000:]
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 10, "a first echo through the tunnel")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3), "west -> east"
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3), "east -> west"
    cell(note=f"we sign {case.ours}, strongSwan signs {case.theirs}")


@pytest.mark.parametrize("role", ROLES)
def test_cert_unknown_ca_is_refused_by_us(lab: Lab, cell: Callable[..., None], role: str
                                         ) -> None:
    """strongSwan's certificate from a CA we do not trust: AUTHENTICATION_FAILED, one line."""
    cell(peer="strongSwan 5.9.8", case="certificates", role=role, proposal="unknown-ca")
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    # ECDSA P-256 both ways (the PKI's default keys): the CA is the only fault
    case = next(c for c in CASES if c.name == "ecdsa-p256")
    pki, rogue = PKI.build(), PKI.build()
    west, east = pki.ee("west"), rogue.ee("east")
    them = StrongSwan(lab, lab.east, "strongswan-east").start()
    sdir = them.dir / "swanctl"
    for sub in ("x509", "x509ca", "pkcs8"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "x509" / "east.crt").write_bytes(east.cert_pem())
    (sdir / "x509" / "inter.crt").write_bytes(_pem(rogue.inter.cert))
    (sdir / "x509ca" / "root.crt").write_bytes(pki.root.cert_pem())
    (sdir / "x509ca" / "rogue.crt").write_bytes(rogue.root.cert_pem())
    (sdir / "pkcs8" / "east.key").write_bytes(east.key_pem())
    them.load(_swanctl(case, east, west))
    nss = lab.workdir / "pypluto-nss" / "nss"
    _nssdb(lab, nss, west, pki)
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(nss)]
    us.start(_ipsec_conf(case, west, east, "west"))
    if role == "initiator":
        us.initiate()
    else:
        them.initiate(check=False)
    lab.wait_for(lambda: "no path to a trusted CA" in us.log.read_text(errors="replace"), 20,
                 "our refusal")
    text = us.log.read_text(errors="replace")
    assert len(re.findall(r"no path to a trusted CA", text)) == 1, text[-3000:]
    assert not us.child_established()
    if role == "initiator":
        # strongSwan established its end before we judged its certificate; our
        # INFORMATIONAL with AUTHENTICATION_FAILED (RFC 7296 §2.21.2) makes it let go
        lab.wait_for(lambda: not them.list_sas(), 20,
                     "strongSwan deletes its IKE SA after our AUTHENTICATION_FAILED")


@pytest.mark.parametrize("crls", ["none", "current", "revoked"])
def test_cert_crl_strict_with_strongswan(lab: Lab, cell: Callable[..., None], crls: str
                                         ) -> None:
    """``--crl-strict`` with CRLs imported by ``crlutil -I`` into the NSS db: no CRL
    refuses, current CRLs let strongSwan in, a CRL naming its certificate refuses."""
    from pki import make_crl

    cell(peer="strongSwan 5.9.8", case="certificates", role="initiator",
         proposal=f"crl-strict-{crls}")
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    case = CASES[3]
    pki = PKI.build(case.key)
    west, east = pki.ee("west", case.key), pki.ee("east", case.key)
    them = StrongSwan(lab, lab.east, "strongswan-east").start()
    sdir = them.dir / "swanctl"
    for sub in ("x509", "x509ca", "pkcs8"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "x509" / "east.crt").write_bytes(east.cert_pem())
    (sdir / "x509" / "inter.crt").write_bytes(_pem(pki.inter.cert))
    (sdir / "x509ca" / "root.crt").write_bytes(pki.root.cert_pem())
    (sdir / "pkcs8" / "east.key").write_bytes(east.key_pem())
    them.load(_swanctl(case, east, west))
    nss = lab.workdir / "pypluto-nss" / "nss"
    _nssdb(lab, nss, west, pki)
    if crls != "none":
        for n, crl in enumerate((make_crl(pki.inter, [east] if crls == "revoked" else []),
                                 make_crl(pki.root, []))):
            f = nss.parent / f"crl{n}.der"
            f.write_bytes(crl.public_bytes(serialization.Encoding.DER))
            subprocess.run(["crlutil", "-I", "-d", f"sql:{nss}", "-i", str(f)], check=True,
                           capture_output=True, timeout=60)
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(nss), "--crl-strict"]
    us.start(_ipsec_conf(case, west, east, "west"))
    out = us.initiate()
    if crls == "current":
        assert us.child_established(), out
        lab.wait_for(lambda: them.established(), 20, "strongSwan's IKE SA")
        return
    want = "no current CRL from" if crls == "none" else "is revoked"
    lab.wait_for(lambda: want in us.log.read_text(errors="replace"), 20, "our refusal")
    text = us.log.read_text(errors="replace")
    assert len([ln for ln in text.splitlines() if want in ln]) == 1, text[-3000:]
    assert not us.child_established()
