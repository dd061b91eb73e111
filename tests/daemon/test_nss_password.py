"""A password-protected NSS database under a real pluto (issue 14): the password comes
from ``<ipsecdir>/nsspassword`` (``NSS Certificate DB:PASSWORD``, as Libreswan reads it),
only its length is logged, a wrong or missing one gives one clear error line; and
``whack --listpubkeys [--json]`` lists the conns' raw keys with the private key found."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest
from plutoproc import wait_for

from pypluto.config.hostkeys import HostKeys
from pypluto.crypto import rawkey

pytestmark = pytest.mark.netns

PW = "Secret.123-pw"


def _db(d: Path, password: str) -> str:
    d.mkdir(parents=True)
    (d / "pw").write_text(password + "\n")
    (d / "noise").write_bytes(os.urandom(64))
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", "-f", str(d / "pw")], check=True,
                   capture_output=True)
    subprocess.run(["certutil", "-G", "-d", f"sql:{d}", "-k", "rsa", "-g", "2048", "-f",
                    str(d / "pw"), "-z", str(d / "noise")], check=True, capture_output=True)
    (d / "pw").unlink()
    return HostKeys(str(d), password).public_keys()[0].ckaid


def _setup(tmp_path: Path, file_pw: str | None) -> tuple[list[str], str, str]:
    ck = _db(tmp_path / "nss", PW)
    ipsecdir = tmp_path / "ipsec.d"
    ipsecdir.mkdir()
    if file_pw is not None:
        (ipsecdir / "nsspassword").write_text(f"NSS Certificate DB:{file_pw}\n")
    peer = rawkey.rfc3110_encode(
        __import__("cryptography.hazmat.primitives.asymmetric.rsa",
                   fromlist=["x"]).generate_private_key(65537, 2048).public_key())
    peer_txt = "0s" + base64.b64encode(peer).decode()
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"""config setup
\tuniqueids=no

conn raw
\tauthby=rsasig
\tleft=127.0.0.1
\tleftid=@west
\tleftckaid={ck}
\tright=192.0.2.77
\trightid=@east
\trightrsasigkey={peer_txt}
\tauto=add
""")
    sec = tmp_path / "ipsec.secrets"
    sec.write_text("")
    sec.chmod(0o600)
    args = ["--nofork", "--use-none", "--logfile", str(tmp_path / "log"), "--config",
            str(conf), "--secretsfile", str(sec), "--nssdir", str(tmp_path / "nss"),
            "--ipsecdir", str(ipsecdir)]
    return args, ck, rawkey.keyid(rawkey.rfc3110_decode(peer))


def test_nsspassword_file_in_ipsecdir_opens_the_database(make_pluto, tmp_path):
    args, ck, peer_keyid = _setup(tmp_path, PW)
    p = make_pluto()
    p.start(*args)
    p.wait_ready()
    log = (tmp_path / "log").read_text()
    path = tmp_path / "ipsec.d" / "nsspassword"
    assert (f'NSS Password from file "{path}" for token "NSS Certificate DB" with length '
            f"{len(PW)} passed to NSS") in log
    assert "NSS: " not in log
    r = p.whack("--listpubkeys")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "List of Public Keys:" in out
    lines = out.splitlines()
    ours = next(i for i, ln in enumerate(lines) if "(has private key)" in ln)
    assert " 2048 RSA Key AwEAA" in lines[ours] and "ok (expires never)" in lines[ours]
    assert lines[ours + 1] == "       FQDN '@west'"
    theirs = next(i for i, ln in enumerate(lines) if f"Key {peer_keyid} (no private key)" in ln)
    assert lines[theirs + 1] == "       FQDN '@east'"
    r = p.whack("--listpubkeys", "--json")
    rows = json.loads(r.stdout)["pubkeys"]
    assert {(x["id"], x["ckaid"] == ck, x["private_key"]) for x in rows} == {
        ("@west", True, True), ("@east", False, False)}
    assert PW not in log + out + r.stdout  # the password never reaches a log


@pytest.mark.parametrize("file_pw", ["wrong-password", None])
def test_wrong_or_missing_password_is_one_clear_error(make_pluto, tmp_path, file_pw):
    args, _ck, _kid = _setup(tmp_path, file_pw)
    p = make_pluto()
    p.start(*args)
    p.wait_ready()
    wait_for(lambda: "NSS: " in (tmp_path / "log").read_text(), 10, "the NSS error line")
    log = (tmp_path / "log").read_text()
    errs = [ln for ln in log.splitlines() if "NSS: " in ln]
    want = "wrong password for the NSS database" if file_pw else \
        "needs a password and none is configured"
    assert len(errs) == 1 and want in errs[0], log
    assert "wrong-password" not in log
    r = p.whack("--listpubkeys", "--json")
    rows = json.loads(r.stdout)["pubkeys"]
    assert not any(x["private_key"] for x in rows)  # the key cannot be read


def test_expired_own_certificate_refuses_the_conn_at_load(make_pluto, tmp_path):
    """Libreswan's check when a conn loads: an expired leftcert= refuses it with one line;
    one expiring within 14 days loads with a warning."""
    import datetime

    from pki import DAY, NOW, PKI

    pki = PKI.build()
    pki.ee("west", not_before=NOW - 30 * DAY, not_after=NOW - DAY).write(tmp_path, "old")
    pki.ee("west", not_after=NOW + 4 * DAY + datetime.timedelta(hours=1)).write(tmp_path,
                                                                              "soon")
    conf = tmp_path / "ipsec.conf"
    conf.write_text("".join(f"""
conn {name}
\tauthby=rsasig
\tleft=127.0.0.1
\tleftcert={tmp_path / stem}.crt
\tright=192.0.2.{n}
\trightid=@east
\tauto=add
""" for name, stem, n in (("expired", "old", 77), ("expiring", "soon", 78))))
    sec = tmp_path / "ipsec.secrets"
    sec.write_text("")
    sec.chmod(0o600)
    p = make_pluto()
    p.start("--nofork", "--use-none", "--logfile", str(tmp_path / "log"), "--config",
            str(conf), "--secretsfile", str(sec), "--ipsecdir", str(tmp_path))
    p.wait_ready()
    status = p.whack("--status").stdout
    assert '"expiring":' in status and '"expired":' not in status
    log = (tmp_path / "log").read_text()
    lines = [ln for ln in log.splitlines() if '"expired"' in ln]
    assert len(lines) == 1 and f"left certificate '{tmp_path}/old.crt' has expired" in lines[0]
    assert any('"expiring"' in ln and "warning (expires in 4 days)" in ln
               for ln in log.splitlines()), log
    # whack --listpubkeys / --checkpubkeys show our certificate's key with the warning
    out = p.whack("--checkpubkeys").stdout
    assert "(has private key), until" in out and "warning (expires in 4 days)" in out, out
    rows = json.loads(p.whack("--checkpubkeys", "--json").stdout)["pubkeys"]
    assert [(r["conn"], r["expiry"]) for r in rows] == [("expiring",
                                                         "warning (expires in 4 days)")]


def test_certificate_key_from_a_password_database(tmp_path):
    """leftcert= from a database with a password: pk12util gets it (-k), a wrong one
    is one clear error naming the certificate."""
    import shutil

    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
    from pki import PKI
    from testsupport import require

    from pypluto.config.certs import CertStore, CredentialError

    require(shutil.which("pk12util") is not None, "libnss3-tools (pk12util)")
    d = tmp_path / "nss"
    d.mkdir()
    (tmp_path / "pw").write_text(PW + "\n")
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", "-f", str(tmp_path / "pw")],
                   check=True, capture_output=True)
    me = PKI.build().ee("west")
    (tmp_path / "w.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"west", me.key, me.cert, me.chain, BestAvailableEncryption(b"p12")))
    subprocess.run(["pk12util", "-i", str(tmp_path / "w.p12"), "-d", f"sql:{d}", "-W", "p12",
                    "-k", str(tmp_path / "pw")], check=True, capture_output=True)
    cred = CertStore(str(d), password=PW).local("west")
    assert cred.cert == me.cert
    with pytest.raises(CredentialError) as e:
        CertStore(str(d), password="not-it").local("west")
    msg = str(e.value)
    assert "certificate 'west' from NSS database" in msg and "not-it" not in msg
    assert "wrong password for the NSS database" in msg, msg
