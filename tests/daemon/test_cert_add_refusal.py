"""A conn whose ``leftcert=``/``rightcert=`` names no certificate is refused when it is
added, in Libreswan 5.2's words (its ikev2-x509-28-del-nssdb-cert: "failed to add
connection: right certificate 'east' not found in the NSS database"); it was added and
failed only at its first IKE_AUTH."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns


def _db(d: Path) -> None:
    """An NSS database (no password) holding one self-signed certificate with its key,
    nicknamed "present"."""
    d.mkdir(parents=True)
    (d / "noise").write_bytes(os.urandom(64))
    subprocess.run(["certutil", "-N", "-d", f"sql:{d}", "--empty-password"], check=True,
                   capture_output=True)
    subprocess.run(["certutil", "-S", "-d", f"sql:{d}", "-n", "present", "-s", "CN=west",
                    "-x", "-t", "u,u,u", "-k", "ec", "-q", "nistp256", "-z", str(d / "noise"),
                    "--empty-password"], check=True, capture_output=True)


def _conn(name: str, cert_keys: str) -> str:
    return (f"conn {name}\n\tauthby=ecdsa\n\tleft=127.0.0.1\n\tleftid=%fromcert\n"
            f"\tright=192.0.2.77\n\trightid=@east\n{cert_keys}\tauto=add\n\n")


def test_missing_certificate_refuses_the_conn_and_a_present_one_loads(make_pluto, tmp_path):
    _db(tmp_path / "nss")
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tuniqueids=no\n\n"
                    + _conn("good", "\tleftcert=present\n")
                    + _conn("gone", "\tleftcert=absent\n")
                    + _conn("peergone", "\tleftcert=present\n\trightcert=nothere\n")
                    + _conn("nofile", f"\tleftcert={tmp_path}/none.pem\n"))
    sec = tmp_path / "ipsec.secrets"
    sec.write_text("")
    sec.chmod(0o600)
    p = make_pluto()
    p.start("--nofork", "--use-none", "--logfile", str(tmp_path / "log"), "--config",
            str(conf), "--secretsfile", str(sec), "--nssdir", str(tmp_path / "nss"))
    p.wait_ready()
    r = p.whack("--status", "--json")
    names = {c["name"] for c in json.loads(r.stdout)["connections"]}
    assert names == {"good"}, r.stdout
    log = (tmp_path / "log").read_text()
    assert "left certificate 'absent' not found in the NSS database" in log
    assert "right certificate 'nothere' not found in the NSS database" in log
    assert f"leftcert={tmp_path}/none.pem: no such certificate file" in log
