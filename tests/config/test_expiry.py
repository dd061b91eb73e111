"""Expiry warnings (issue 14) with Libreswan's windows: 14 days for our certificates and
public keys, 30 days for CAs; an expired own certificate refuses the conn; ``ipsec
listcerts``/``listcacerts`` show the warning, also in ``--json``."""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from pki import DAY, NOW, PKI, make_ca
from testsupport import require

from pypluto.cli import ipsec
from pypluto.config import expiry
from pypluto.config.certs import CertStore
from pypluto.config.model import Connection, End

T = NOW.timestamp()


@pytest.mark.parametrize(("left", "window", "want"), [
    (20 * DAY, expiry.PUBKEY_WARNING_INTERVAL, None),
    (10 * DAY, expiry.PUBKEY_WARNING_INTERVAL, "warning (expires in 10 days)"),
    (20 * DAY, expiry.CA_CERT_WARNING_INTERVAL, "warning (expires in 20 days)"),
    (datetime.timedelta(hours=30), expiry.PUBKEY_WARNING_INTERVAL,
     "warning (expires in 30 hours)"),
    (datetime.timedelta(minutes=3), expiry.PUBKEY_WARNING_INTERVAL,
     "warning (expires in 3 minutes)"),
    (datetime.timedelta(seconds=1), expiry.PUBKEY_WARNING_INTERVAL,
     "warning (expires in 1 second)"),
    (-DAY, expiry.PUBKEY_WARNING_INTERVAL, "fatal (expired)"),
])
def test_check_expiry_messages_as_libreswan(left: datetime.timedelta, window: int,
                                            want: str | None) -> None:
    assert expiry.check_expiry(NOW + left, T, window) == want
    assert expiry.check_expiry(None, T) == "ok (expires never)"


def _conn(cert: Path) -> Connection:
    return Connection(name="c", left=End(cert=str(cert)), right=End())


def test_expired_own_certificate_refuses_the_conn_soon_expiring_warns(tmp_path: Path
                                                                      ) -> None:
    pki = PKI.build()
    st = CertStore(ipsecdir=str(tmp_path))
    old = pki.ee("west", not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    soon = pki.ee("east", not_after=NOW + 5 * DAY + datetime.timedelta(hours=1))
    fine = pki.ee("north")
    for stem, c in (("old", old), ("soon", soon), ("fine", fine)):
        c.write(tmp_path, stem)
    refused, warns = expiry.conn_cert_check(_conn(tmp_path / "old.crt"), st, T)
    assert refused == f"left certificate '{tmp_path / 'old.crt'}' has expired"
    refused, warns = expiry.conn_cert_check(_conn(tmp_path / "soon.crt"), st, T)
    assert refused is None
    assert warns == [f"left certificate '{tmp_path / 'soon.crt'}' warning (expires in 5 days)"]
    assert expiry.conn_cert_check(_conn(tmp_path / "fine.crt"), st, T) == (None, [])
    future = pki.ee("south", not_before=NOW + DAY)
    future.write(tmp_path, "future")
    refused, _ = expiry.conn_cert_check(_conn(tmp_path / "future.crt"), st, T)
    assert refused is not None and "is not yet valid" in refused


def test_ca_expiring_within_30_days_is_warned_about(tmp_path: Path) -> None:
    st = CertStore(ipsecdir=str(tmp_path))
    st.extra_anchors.append(make_ca("short-lived root", not_after=NOW + 20 * DAY).cert)
    st.extra_anchors.append(make_ca("long-lived root").cert)
    assert expiry.anchor_warnings(st, T) == [
        "CA certificate 'CN=short-lived root,O=pypluto test,C=CH' warning (expires in 20 days)"]


def test_listcerts_and_listcacerts_show_the_warning(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    require(shutil.which("certutil") is not None and shutil.which("pk12util") is not None,
            "libnss3-tools (certutil, pk12util)")
    nss = tmp_path / "nss"
    assert ipsec.main(["initnss", "--nssdir", str(nss)]) == 0
    pki = PKI.build()
    root = make_ca("short-lived root", not_after=NOW + 20 * DAY)
    me = pki.ee("west", not_after=NOW + 3 * DAY + datetime.timedelta(hours=1))
    p12 = tmp_path / "west.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"west", me.key, me.cert, me.chain, BestAvailableEncryption(b"pw")))  # type: ignore[arg-type]
    subprocess.run(["pk12util", "-i", str(p12), "-d", f"sql:{nss}", "-W", "pw"],
                   capture_output=True, check=True)
    (tmp_path / "root.pem").write_bytes(root.cert_pem())
    assert ipsec.main(["certutil", "--nssdir", str(nss), "-A", "-n", "root", "-t", "CT,,",
                       "-i", str(tmp_path / "root.pem")]) == 0
    capsys.readouterr()
    assert ipsec.main(["listcerts", "--nssdir", str(nss)]) == 0
    out = capsys.readouterr().out
    assert "       warning (expires in 3 days)" in out, out
    assert ipsec.main(["listcerts", "--nssdir", str(nss), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["nickname"] == "west" and rows[0]["expiry"] == "warning (expires in 3 days)"
    assert ipsec.main(["listcacerts", "--nssdir", str(nss), "--json"]) == 0
    rows = {r["nickname"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["root"]["expiry"] == "warning (expires in 19 days)" or \
        rows["root"]["expiry"] == "warning (expires in 20 days)"
