"""Raw RSA keys against Libreswan (issue 14): the IKE SA (the kernel here has no ESP,
see test_libreswan.py), both roles, with ``leftrsasigkey=``/``rightrsasigkey=`` in
RFC 3110 form in one ipsec.conf both daemons read.  Each side's private key is a
key-only entry of its own NSS database made by ``certutil -G`` (what ``ipsec
newhostkey`` does); Libreswan finds its key by the CKAID of its ``leftrsasigkey=``, and
so do we.  Our database has a password, given in ``<ipsecdir>/nsspassword`` as
Libreswan reads it.  A wrong ``rightrsasigkey=`` on our side gives
AUTHENTICATION_FAILED with one log line."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab, require
from peers import Libreswan, Pypluto, have_libreswan
from trixie import LIBRESWAN_PEERS, PeerSpec

from pypluto.config.hostkeys import HostKeys
from pypluto.crypto import rawkey

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]

PW = "west-db-Secret"


def _keydb(d: Path, password: str | None = None, kind: str = "rsa") -> str:
    """A database with one RSA-2048 key; the key as ``0s<RFC 3110 base64>``
    (``kind="ec"``: one P-256 key, as ``0s<base64 of the point>``, ``leftecdsakey=``)."""
    d.mkdir(parents=True, exist_ok=True)
    pwa = ["--empty-password"]
    if password is not None:
        (d.parent / "pwfile").write_text(password + "\n")
        pwa = ["-f", str(d.parent / "pwfile")]
    noise = d.parent / "noise"
    noise.write_bytes(os.urandom(64))
    if not (d / "cert9.db").exists():
        subprocess.run(["certutil", "-N", "-d", f"sql:{d}", *pwa], check=True,
                       capture_output=True, timeout=60)
    gen = [] if password is None else pwa
    key = ["-k", "rsa", "-g", "2048"] if kind == "rsa" else ["-k", "ec", "-q", "nistp256"]
    subprocess.run(["certutil", "-G", "-d", f"sql:{d}", *key, "-z",
                    str(noise), *gen], check=True, capture_output=True, timeout=60)
    pub = HostKeys(str(d), password).public_keys()[0].public
    if kind == "ec":
        return "0s" + base64.b64encode(rawkey.ecdsa_point(pub)).decode()  # type: ignore[arg-type]
    return "0s" + base64.b64encode(rawkey.rfc3110_encode(pub)).decode()  # type: ignore[arg-type]


def _conf(west_key: str, east_key: str, kind: str = "rsa") -> str:
    authby, key = ("rsasig", "rsasigkey") if kind == "rsa" else ("ecdsa", "ecdsakey")
    return f"""\
config setup
\tplutodebug=none

conn west-east
\tauthby={authby}
\tleft={WEST_OUTER}
\tleftid=@west
\tleft{key}={west_key}
\tleftsubnet={WEST_SUBNET}
\tright={EAST_OUTER}
\trightid=@east
\tright{key}={east_key}
\trightsubnet={EAST_SUBNET}
\tauto=add
"""


def _established_in_log(them: Libreswan) -> bool:
    text = them.log.read_text(errors="replace")
    return any("established IKE SA" in ln for ln in text.splitlines() if "| " not in ln[:40])


def _bring_up(us: Pypluto, them: Libreswan, peer: PeerSpec, role: str) -> tuple[str, str]:
    """One IKE SA, started by us or by Libreswan; (Libreswan's "established IKE SA"
    line, our log)."""
    if role == "initiator":
        us.initiate()
    elif peer.modern:  # 5.x: never the synchronous initiate
        them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
    else:
        them.initiate()
    us.lab.wait_for(us.ike_established, 20, "our IKE SA")
    us.lab.wait_for(lambda: _established_in_log(them), 20, "Libreswan's IKE SA")
    text = them.log.read_text(errors="replace")
    line = next(ln for ln in text.splitlines() if "established IKE SA" in ln)
    return line, us.log.read_text(errors="replace")


def _pair(lab: Lab, peer: PeerSpec, *, wrong: bool = False, kind: str = "rsa"
          ) -> tuple[Pypluto, Libreswan]:
    them = peer.libreswan(lab, lab.east, "libreswan-east")
    east_key = _keydb(them.dir / "nss", kind=kind)
    ours = lab.workdir / "pypluto-raw" / "nss"
    west_key = _keydb(ours, PW, kind)
    ipsecdir = lab.workdir / "pypluto-raw" / "ipsec.d"
    ipsecdir.mkdir(parents=True, exist_ok=True)
    (ipsecdir / "nsspassword").write_text(f"NSS Certificate DB:{PW}\n")
    them.start(_conf(west_key, east_key, kind))
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(ours), "--ipsecdir", str(ipsecdir)]
    mallory = _keydb(lab.workdir / "mallory" / "nss", kind=kind) if wrong else east_key
    us.start(_conf(west_key, mallory, kind))
    return us, them


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in LIBRESWAN_PEERS])
def test_raw_rsa_keys_with_libreswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                     role: str) -> None:
    cell(peer=peer.label, case="raw RSA keys", role=role, proposal="rsasigkey-rsasig")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    us, them = _pair(lab, peer)
    line, ours_text = _bring_up(us, them, peer, role)
    assert "authenticated peer using digital signature RSASSA-PSS" in ours_text, \
        ours_text[-2000:]
    assert PW not in ours_text
    cell(note=line.split("established IKE SA;")[-1].strip()[:160])
    them.stop()


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in LIBRESWAN_PEERS])
def test_raw_ecdsa_keys_with_libreswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                       role: str) -> None:
    """``leftecdsakey=``/``rightecdsakey=`` (the raw P-256 point, as Libreswan's
    showhostkey prints it) and ``authby=ecdsa``: both sign with ECDSA."""
    cell(peer=peer.label, case="raw ECDSA keys", role=role, proposal="ecdsakey-ecdsa")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    us, them = _pair(lab, peer, kind="ec")
    line, ours_text = _bring_up(us, them, peer, role)
    assert "authenticated peer using digital signature ECDSA" in ours_text, \
        ours_text[-2000:]
    assert "ECDSA" in line, line
    cell(note=line.split("established IKE SA;")[-1].strip()[:160])
    them.stop()


def test_wrong_raw_key_from_libreswan_fails_with_one_line(lab: Lab,
                                                           cell: Callable[..., None]) -> None:
    peer = LIBRESWAN_PEERS[0]
    cell(peer=peer.label, case="raw RSA keys", role="responder", proposal="wrong-rsasigkey")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    us, them = _pair(lab, peer, wrong=True)
    them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
    lab.wait_for(lambda: "wrong raw key?" in us.log.read_text(errors="replace"), 20,
                 "our AUTHENTICATION_FAILED")
    text = us.log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if "wrong raw key?" in ln]
    first = [ln for ln in text.splitlines() if '"west-east" #1:' in ln and "rejected" in ln]
    # one line per attempt (Libreswan tries again with a new IKE SA)
    assert len(first) == 1 and "AUTHENTICATION_FAILED" in first[0], lines
    assert not us.ike_established()
    cell(note=lines[0][-160:])
    them.stop()


@pytest.mark.parametrize("peer", LIBRESWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in LIBRESWAN_PEERS])
def test_libreswan_with_a_raw_key_we_do_not_expect(lab: Lab, cell: Callable[..., None],
                                                   peer: PeerSpec) -> None:
    """We initiate; Libreswan verifies us and establishes its end; its AUTH does not
    verify with the key we have for it: one line here, and our INFORMATIONAL with
    AUTHENTICATION_FAILED (RFC 7296 §2.21.2) reaches Libreswan, which decrypts it and
    answers it as a liveness probe (4.10 and 5.2 keep their IKE SA: the RFC makes the
    notice a MAY and says nothing of what the responder does; strongSwan deletes)."""
    cell(peer=peer.label, case="raw RSA keys", role="initiator", proposal="wrong-rsasigkey")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    us, them = _pair(lab, peer, wrong=True)
    them.whack("--debug", "all")  # its parse of our notice is a debug line
    us.initiate()
    lab.wait_for(lambda: "wrong raw key?" in us.log.read_text(errors="replace"), 20,
                 "our refusal")
    lab.wait_for(lambda: "AUTHENTICATION_FAILED" in them.log.read_text(errors="replace"), 20,
                 "Libreswan parses our INFORMATIONAL with AUTHENTICATION_FAILED")
    text = us.log.read_text(errors="replace")
    lines = [ln for ln in text.splitlines() if "wrong raw key?" in ln]
    assert len(lines) == 1 and "IKE SA establishment failed" in lines[0], lines
    assert not us.ike_established()
    theirs = them.log.read_text(errors="replace")
    assert "ASSERTION FAILED" not in theirs and "EXPECTATION FAILED" not in theirs
    assert "ESTABLISHED_IKE_SA" in them.showstates()  # alive, and (as said) keeping it
    cell(note=lines[0][-160:])
    them.stop()


def _null_conf(west_key: str, east_key: str, null_side: str) -> str:
    """One side NULL-authenticated (RFC 7619, ID_NULL), the other signing with its raw
    RSA key: Libreswan's asymmetric ``leftauth=null`` / ``rightauth=rsasig``."""
    west = ("\tleftauth=null\n\tleftid=%null\n" if null_side == "west" else
            f"\tleftauth=rsasig\n\tleftid=@west\n\tleftrsasigkey={west_key}\n")
    east = ("\trightauth=null\n\trightid=%null\n" if null_side == "east" else
            f"\trightauth=rsasig\n\trightid=@east\n\trightrsasigkey={east_key}\n")
    return f"""\
config setup
\tplutodebug=none

conn west-east
\tleft={WEST_OUTER}
{west}\tleftsubnet={WEST_SUBNET}
\tright={EAST_OUTER}
{east}\trightsubnet={EAST_SUBNET}
\tauto=add
"""


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("null_side", ["west", "east"])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in LIBRESWAN_PEERS])
def test_asymmetric_null_auth_with_libreswan(lab: Lab, cell: Callable[..., None],
                                             peer: PeerSpec, null_side: str, role: str
                                             ) -> None:
    """RFC 7619 NULL authentication of one side, an RSA signature from the other (the
    opportunistic "anonymous client, authenticated server" case), either of us the
    anonymous one: the IKE SA comes up, each end names the other's method."""
    cell(peer=peer.label, case="asymmetric-null-auth", role=role,
         proposal=f"null-{'pypluto' if null_side == 'west' else 'libreswan'}")
    require(have_libreswan() or peer.chroot, "certutil (libnss3-tools)")
    require(peer.available(), peer.install_hint)
    them = peer.libreswan(lab, lab.east, "libreswan-east")
    east_key = _keydb(them.dir / "nss")
    ours = lab.workdir / "pypluto-raw" / "nss"
    west_key = _keydb(ours)
    conf = _null_conf(west_key, east_key, null_side)
    them.start(conf)
    us = Pypluto(lab, lab.west, "pypluto-west")
    us.extra_args = ["--nssdir", str(ours)]
    us.start(conf)
    line, ours_text = _bring_up(us, them, peer, role)
    if null_side == "west":  # we sent ID_NULL and a NULL MIC, Libreswan signed
        # RSASSA-PSS (RFC 7427) as initiator; 4.10 as initiator signs with PKCS#1 v1.5 SHA-1
        want = (r"authenticated peer using (digital signature RSASSA-PSS \(RFC 7427\)"
                r"|authby=rsasig \(RSA PKCS#1 v1.5 SHA-1\)) and FQDN '@east'")
        assert re.search(want, ours_text), ours_text[-2000:]
        assert "NULL" in line or "null" in line, line
    else:
        assert "authenticated peer using authby=null and NULL '%null'" in ours_text, \
            ours_text[-2000:]
    cell(note=line.split("established IKE SA;")[-1].strip()[:160])
    them.stop()
