"""``ipsec newhostkey`` / ``showhostkey`` (issue 14) on a database with a password, in
Libreswan's output format, read through NSS's soft token; ``--pubkey`` and ECDSA keys."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from testsupport import require

from pypluto.cli import ipsec
from pypluto.config.hostkeys import HostKeys
from pypluto.crypto import rawkey

PW = "host-key-db-pw"


@pytest.fixture
def db(tmp_path: Path) -> str:
    require(shutil.which("certutil") is not None, "libnss3-tools (certutil)")
    d = tmp_path / "nss"
    d.mkdir()
    (tmp_path / "pw").write_text(PW + "\n")
    import subprocess
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", "-f", str(tmp_path / "pw")],
                   check=True, capture_output=True)
    return str(d)


def test_newhostkey_and_showhostkey_with_a_password(db: str, capsys, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("IPSEC_CONFDDIR", "/nonexistent")
    assert ipsec.main(["newhostkey", "--nssdir", db, "--bits", "2048", "--nsspw", PW]) == 0
    capsys.readouterr()
    assert ipsec.main(["showhostkey", "--nssdir", db, "--list", "--nsspw", PW]) == 0
    listing = capsys.readouterr().out
    m = re.fullmatch(r"< 1> RSA keyid: (AwEAA\S{4}) ckaid: ([0-9a-f]{40})\n", listing)
    assert m, listing
    ck = m.group(2)
    assert ipsec.main(["showhostkey", "--nssdir", db, "--left", "--ckaid", ck[:8],
                       "--nsspw", PW]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"\t# rsakey {m.group(1)}" and lines[1].startswith("\tleftrsasigkey=0s")
    pub = rawkey.parse_rsasigkey(lines[1].split("=", 1)[1])
    assert rawkey.ckaid(pub) == ck and rawkey.keyid(pub) == m.group(1)
    assert HostKeys(db, PW).private_key(ck).public_key().public_numbers() == \
        pub.public_numbers()  # type: ignore[union-attr]
    assert ipsec.main(["showhostkey", "--nssdir", db, "--right", "--pubkey", "--nsspw",
                       PW]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("\trightpubkey=0s")
    assert rawkey.spki_der(rawkey.parse_pubkey(line.split("=", 1)[1])) == rawkey.spki_der(pub)


def test_wrong_or_missing_password_is_one_clear_error(db: str, capsys, monkeypatch,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("IPSEC_CONFDDIR", str(tmp_path))
    assert ipsec.main(["newhostkey", "--nssdir", db, "--bits", "2048", "--nsspw", PW]) == 0
    capsys.readouterr()
    assert ipsec.main(["showhostkey", "--nssdir", db, "--list", "--nsspw", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "wrong password for the NSS database" in err
    assert "nope" not in err
    assert ipsec.main(["showhostkey", "--nssdir", db, "--list"]) == 1
    assert "needs a password and none is configured" in capsys.readouterr().err
    # Libreswan's password file in $IPSEC_CONFDDIR
    (tmp_path / "nsspassword").write_text(f"NSS Certificate DB:{PW}\n")
    assert ipsec.main(["showhostkey", "--nssdir", db, "--list"]) == 0
    assert "< 1> RSA keyid:" in capsys.readouterr().out


def test_ecdsa_host_key_is_shown_as_ecdsakey(db: str, capsys) -> None:  # noqa: ANN001
    """As Libreswan's showhostkey: ``leftecdsakey=0s`` and the raw point (RFC 8005's
    IPSECKEY form); with ``--pubkey``, ``leftpubkey=`` and the SubjectPublicKeyInfo."""
    assert ipsec.main(["newhostkey", "--nssdir", db, "--keytype", "ecdsa", "--bits", "256",
                       "--nsspw", PW]) == 0
    capsys.readouterr()
    assert ipsec.main(["showhostkey", "--nssdir", db, "--left", "--nsspw", PW]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("\tleftecdsakey=0s")
    pub = rawkey.parse_ecdsakey(line.split("=", 1)[1])
    assert pub.curve.name == "secp256r1"
    assert [k.ckaid for k in HostKeys(db, PW).public_keys()] == [rawkey.ckaid(pub)]
    assert ipsec.main(["showhostkey", "--nssdir", db, "--left", "--pubkey", "--nsspw",
                       PW]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert line.startswith("\tleftpubkey=0s")
    assert rawkey.spki_der(rawkey.parse_pubkey(line.split("=", 1)[1])) == rawkey.spki_der(pub)
