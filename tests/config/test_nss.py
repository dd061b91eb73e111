"""The NSS database as the certificate store (issue 14): a Libreswan-layout db made
with NSS's own tools (``certutil -N``, ``pk12util -i``, ``certutil -A -t CT,,``) is
read through them: nicknames, trust flags, our key and chain, the CAs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from pki import NOW, PKI, Issued
from testsupport import require

from pypluto.config.certs import CertStore, CredentialError
from pypluto.config.nss import NSSDB
from pypluto.crypto import x509 as px


def make_nssdb(d: Path, me: Issued, nickname: str, pki: PKI) -> None:
    """What ``ipsec initnss`` + ``ipsec import me.p12`` + ``certutil -A -t CT,,`` do."""
    require(shutil.which("certutil") is not None and shutil.which("pk12util") is not None,
            "libnss3-tools (certutil, pk12util)")
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", "--empty-password"], check=True)
    p12 = d.parent / f"{nickname}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        nickname.encode(), me.key, me.cert, me.chain, BestAvailableEncryption(b"pw")))  # type: ignore[arg-type]
    subprocess.run(["pk12util", "-i", str(p12), "-d", f"sql:{d}", "-W", "pw"], check=True,
                   capture_output=True)
    ca = d.parent / "ca.pem"
    ca.write_bytes(pki.root.cert_pem())
    subprocess.run(["certutil", "-A", "-d", f"sql:{d}", "-n", "testroot", "-t", "CT,,",
                    "-i", str(ca)], check=True)


# Ed25519 keys: NSS 3.87 (Debian 12, Libreswan 4.10) cannot import them (pk12util:
# SEC_ERROR_PKCS12_UNABLE_TO_IMPORT_KEY); they work from PEM files (tests/ike/test_certs.py)
@pytest.mark.parametrize("key", ["rsa2048", "p256", "p384"])
def test_nss_database_credentials_and_trust(tmp_path: Path, key: str) -> None:
    pki = PKI.build(key)
    me = pki.ee("west", key)
    db = tmp_path / "nss"
    make_nssdb(db, me, "westcert", pki)
    nss = NSSDB(str(db))
    flags = {e.nickname: e.trust for e in nss.entries()}
    assert flags["westcert"] == "u,u,u" and flags["testroot"] == "CT,,"
    st = CertStore(str(db))
    cred = st.local("westcert")
    assert cred.cert == me.cert
    assert cred.key.public_key() == me.key.public_key()  # type: ignore[union-attr]
    assert cred.chain == [pki.inter.cert]  # the root is an anchor, not sent
    assert st.anchors() == [pki.root.cert]
    assert st.intermediates() == [pki.inter.cert]
    # the chain validates against what the db trusts
    assert px.verify_chain(me.cert, cred.chain, st.anchors(), NOW).chain[-1] == pki.root.cert
    with pytest.raises(CredentialError, match="'nosuch'"):
        st.local("nosuch")


def test_pem_files_as_an_addition(tmp_path: Path) -> None:
    pki = PKI.build()
    me = pki.ee("west")
    crt, _ = me.write(tmp_path, "west")
    st = CertStore(None, str(tmp_path))
    assert st.local(str(crt)).cert == me.cert
    (tmp_path / "cacerts").mkdir()
    (tmp_path / "cacerts" / "root.pem").write_bytes(pki.root.cert_pem())
    assert st.anchors() == [pki.root.cert]
    (tmp_path / "lonely.crt").write_bytes(me.cert_pem())
    with pytest.raises(CredentialError, match="no private key"):
        st.local(str(tmp_path / "lonely.crt"))
    with pytest.raises(CredentialError, match="no NSS database"):
        st.local("nickname")


def test_crls_imported_with_crlutil_revoke(tmp_path: Path) -> None:
    """A CRL put into the db with ``crlutil -I`` (NSS checks its signature) revokes;
    under crl-strict a chain needs a current CRL from every issuer."""
    from cryptography.hazmat.primitives import serialization
    from pki import make_crl

    pki = PKI.build()
    me, bad = pki.ee("west"), pki.ee("mallory")
    db = tmp_path / "nss"
    make_nssdb(db, me, "westcert", pki)
    inter = tmp_path / "inter.pem"
    inter.write_bytes(pki.inter.cert_pem())
    subprocess.run(["certutil", "-A", "-d", f"sql:{db}", "-n", "inter", "-t", ",,", "-i",
                    str(inter)], check=True)
    st = CertStore(str(db), crl_strict=True)
    chain = px.verify_chain(bad.cert, [pki.inter.cert], st.anchors(), NOW).chain
    assert "no current CRL" in (px.revoked(chain, st.crls(), NOW, True) or "")
    for n, crl in enumerate((make_crl(pki.inter, [bad]), make_crl(pki.root, []))):
        f = tmp_path / f"crl{n}.der"
        f.write_bytes(crl.public_bytes(serialization.Encoding.DER))
        subprocess.run(["crlutil", "-I", "-d", f"sql:{db}", "-i", str(f)], check=True)
    st.reload()
    assert len(st.crls()) == 2
    why = px.revoked(chain, st.crls(), NOW, True)
    assert why is not None and "'CN=mallory,O=pypluto test,C=CH' is revoked" in why
    good = px.verify_chain(me.cert, [pki.inter.cert], st.anchors(), NOW).chain
    assert px.revoked(good, st.crls(), NOW, True) is None
