"""Certificate authentication against Libreswan 4.10 and 5.2 (issue 14): the IKE SA (the
machines' kernel has no ESP, so Libreswan cannot install a Child SA, see
test_libreswan.py), both roles, RSA and ECDSA P-256 through an intermediate CA.
Both daemons read the same ipsec.conf and each has its own NSS database in
Libreswan's layout, made the same way (``certutil -N --empty-password``,
``pk12util -i`` of its own PKCS#12, ``certutil -A -t CT,,`` of the root CA, and the
peer's certificate without a key, which Libreswan wants for the other end's
``leftcert=``/``rightcert=``)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab, require
from peers import Libreswan, Pypluto, have_libreswan
from pki import PKI, Issued
from trixie import LIBRESWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]


def _nssdb(d: Path, me: Issued, nick: str, peer: Issued, peer_nick: str, pki: PKI) -> None:
    def run(*argv: str) -> None:
        subprocess.run(list(argv), check=True, capture_output=True, timeout=60)
    d.mkdir(parents=True, exist_ok=True)
    if not (d / "cert9.db").exists():
        run("certutil", "-N", "-d", f"sql:{d}", "--empty-password")
    p12 = d.parent / f"{nick}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        nick.encode(), me.key, me.cert, me.chain, BestAvailableEncryption(b"pw")))  # type: ignore[arg-type]
    run("pk12util", "-i", str(p12), "-d", f"sql:{d}", "-W", "pw")
    for name, pem, trust in (("labroot", pki.root.cert_pem(), "CT,,"),
                             (peer_nick, peer.cert_pem(), ",,")):
        f = d.parent / f"{name}.pem"
        f.write_bytes(pem)
        run("certutil", "-A", "-d", f"sql:{d}", "-n", name, "-t", trust, "-i", str(f))


def _conf(authby: str, west: Issued, east: Issued) -> str:
    return f"""\
config setup
\tplutodebug=none

conn west-east
\tauthby={authby}
\tleft={WEST_OUTER}
\tleftid="{west.dn}"
\tleftcert=west
\tleftsubnet={WEST_SUBNET}
\tright={EAST_OUTER}
\trightid="{east.dn}"
\trightcert=east
\trightsubnet={EAST_SUBNET}
\tauto=add
"""


def _established_in_log(them: Libreswan) -> bool:
    text = them.log.read_text(errors="replace")
    return any("established IKE SA" in ln for ln in text.splitlines() if "| " not in ln[:40])


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize(("key", "authby"), [("rsa2048", "rsasig"), ("p256", "ecdsa")])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in LIBRESWAN_PEERS])
def test_cert_ike_sa_with_libreswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                    key: str, authby: str, role: str) -> None:
    cell(peer=peer.label, case="certificates", role=role, proposal=f"{key}-{authby}")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    pki = PKI.build(key)
    west, east = pki.ee("west", key), pki.ee("east", key)
    conf = _conf(authby, west, east)
    them = peer.libreswan(lab, lab.east, "libreswan-east")
    _nssdb(them.dir / "nss", east, "east", west, "west", pki)
    them.start(conf)
    ours = lab.workdir / "pypluto-nss" / "nss"
    _nssdb(ours, west, "west", east, "east", pki)
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(ours)]
    us.start(conf)
    if role == "initiator":
        us.initiate()
        lab.wait_for(us.ike_established, 20, "our IKE SA")
        lab.wait_for(lambda: _established_in_log(them), 20, "Libreswan's IKE SA")
    else:
        if peer.modern:  # 5.x: never the synchronous initiate
            them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
        else:
            them.initiate()
        lab.wait_for(us.ike_established, 20, "our IKE SA")
        lab.wait_for(lambda: _established_in_log(them), 20, "Libreswan's IKE SA")
    text = them.log.read_text(errors="replace")
    line = next(ln for ln in text.splitlines() if "established IKE SA" in ln)
    assert "CN=west" in line, line  # Libreswan authenticated our certificate
    ours_text = us.log.read_text(errors="replace")
    assert "authenticated peer using digital signature" in ours_text, ours_text[-2000:]
    cell(note=line.split("established IKE SA;")[-1].strip()[:160])
    them.stop()
