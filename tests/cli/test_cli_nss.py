"""``ipsec initnss | import | listcerts | listcacerts | certutil`` on an NSS database
(issue 14), through NSS's own tools."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from pki import PKI
from testsupport import require

from pypluto.cli import ipsec


def test_initnss_import_and_list(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    require(shutil.which("certutil") is not None and shutil.which("pk12util") is not None,
            "libnss3-tools (certutil, pk12util)")
    nss = tmp_path / "nss"
    assert ipsec.main(["initnss", "--nssdir", str(nss)]) == 0
    assert (nss / "cert9.db").exists()
    assert ipsec.main(["initnss", "--nssdir", str(nss)]) == 42  # already there
    assert ipsec.main(["checknss", "--nssdir", str(nss)]) == 0
    pki = PKI.build()
    me = pki.ee("west")
    p12 = tmp_path / "west.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        b"west", me.key, me.cert, me.chain, BestAvailableEncryption(b"pw")))  # type: ignore[arg-type]
    # ipsec import asks for the PKCS#12 password; pk12util reads it from -W here
    r = subprocess.run(["pk12util", "-i", str(p12), "-d", f"sql:{nss}", "-W", "pw"],
                       capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    (tmp_path / "root.pem").write_bytes(pki.root.cert_pem())
    assert ipsec.main(["certutil", "--nssdir", str(nss), "-A", "-n", "root", "-t", "CT,,",
                       "-i", str(tmp_path / "root.pem")]) == 0
    capsys.readouterr()
    assert ipsec.main(["listcerts", "--nssdir", str(nss), "--json"]) == 0
    certs = json.loads(capsys.readouterr().out)
    assert [c["nickname"] for c in certs] == ["west"]
    assert certs[0]["subject"] == "CN=west,O=pypluto test,C=CH"
    assert ipsec.main(["listcacerts", "--nssdir", str(nss)]) == 0
    out = capsys.readouterr().out
    assert "List of X.509 CA Certificates:" in out and "root [CT,,]" in out
    assert "CN=pypluto test root" in out and "west" not in out


def test_newhostkey_and_showhostkey(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """A key-only NSS entry (certutil -G) and its RFC 3110 public key, whose CKAID is
    what certutil -K shows (SHA-1 of the modulus, as NSS computes it)."""
    import base64
    import hashlib
    import re

    require(shutil.which("certutil") is not None, "libnss3-tools (certutil)")
    nss = str(tmp_path / "nss")
    assert ipsec.main(["newhostkey", "--nssdir", nss, "--bits", "2048"]) == 0
    capsys.readouterr()
    assert ipsec.main(["showhostkey", "--nssdir", nss, "--list"]) == 0
    listing = capsys.readouterr().out
    m = re.search(r"< 1> RSA keyid: (\S+) ckaid: ([0-9a-f]{40})", listing)
    assert m, listing
    assert ipsec.main(["showhostkey", "--nssdir", nss, "--left", "--ckaid", m.group(2)]) == 0
    out = capsys.readouterr().out
    blob = base64.b64decode(re.search(r"leftrsasigkey=0s(\S+)", out).group(1))  # type: ignore[union-attr]
    elen = blob[0]
    modulus = blob[1 + elen:]
    assert int.from_bytes(blob[1:1 + elen], "big") == 65537 and len(modulus) == 256
    assert hashlib.sha1(modulus).hexdigest() == m.group(2)  # noqa: S324 - NSS's CKAID
    assert ipsec.main(["showhostkey", "--nssdir", nss, "--right"]) == 0  # the only key
    assert "rightrsasigkey=0s" in capsys.readouterr().out
