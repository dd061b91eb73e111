"""Local credential files that ``cryptography`` refuses with something other than a
ValueError (an encrypted key without its password: TypeError; a certificate or CRL
whose version field is out of range: InvalidVersion): each is a CredentialError naming
the file, or the file is skipped, never an exception out of the store."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pki import PKI, make_crl

from pypluto.config.certs import CertStore, CredentialError


def _bad_version(der: bytes) -> bytes:
    """``der`` (a certificate or a v2 CRL) with its version INTEGER set to 127."""
    for v in (b"\x02\x01\x02", b"\x02\x01\x01"):  # v3 certificate (in [0]), v2 CRL
        at = der.find(v, 0, 16)
        if at > 0:
            return der[:at + 2] + b"\x7f" + der[at + 3:]
    raise AssertionError("no version field")


def test_encrypted_private_key_without_password(tmp_path: Path) -> None:
    ee = PKI.build().ee("west")
    (tmp_path / "west.crt").write_bytes(ee.cert_pem())
    (tmp_path / "west.key").write_bytes(ee.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(CredentialError, match=r"cannot load certificate .*west\.crt"):
        CertStore(ipsecdir=str(tmp_path)).local(str(tmp_path / "west.crt"))


def test_certificate_with_an_invalid_version(tmp_path: Path) -> None:
    ee = PKI.build().ee("east")
    bad = _bad_version(ee.cert.public_bytes(serialization.Encoding.DER))
    (tmp_path / "east.der").write_bytes(bad)
    st = CertStore(ipsecdir=str(tmp_path))
    with pytest.raises(CredentialError, match="cannot load certificate"):
        st.peer_cert(str(tmp_path / "east.der"))
    with pytest.raises(CredentialError, match="cannot load CA file"):
        st.ca_file(str(tmp_path / "east.der"))


def test_ca_and_crl_directories_skip_invalid_versions(tmp_path: Path) -> None:
    pki = PKI.build()
    for sub in ("cacerts", "crls"):
        (tmp_path / sub).mkdir()
    (tmp_path / "cacerts" / "bad.der").write_bytes(
        _bad_version(pki.root.cert.public_bytes(serialization.Encoding.DER)))
    (tmp_path / "cacerts" / "good.pem").write_bytes(pki.root.cert_pem())
    crl = make_crl(pki.inter, []).public_bytes(serialization.Encoding.DER)
    (tmp_path / "crls" / "bad.crl").write_bytes(_bad_version(crl))
    (tmp_path / "crls" / "good.crl").write_bytes(crl)
    st = CertStore(ipsecdir=str(tmp_path))
    assert st.anchors() == [pki.root.cert]
    assert len(st.crls()) == 1
