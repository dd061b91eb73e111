"""NULL authentication (RFC 7619) against Libreswan 4.10 and 5.2: ``authby=null`` with
``leftid=%null`` / ``rightid=%null`` on both ends, pypluto in both roles; and
``intermediate=yes`` (an empty IKE_INTERMEDIATE, RFC 9242) with PSK.

As in ``test_libreswan.py``, Libreswan's Child SA cannot be installed on these
machines (no kernel ESP), so the IKE SA is what is asserted: IKE_SA_INIT, then
IKE_AUTH with AUTH method 13 and ID_NULL, which only succeeds when both ends
compute the NULL-auth MIC the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import Lab, require
from peers import Libreswan, Proposal, Pypluto, ipsec_conf
from trixie import LIBRESWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]
PEER_IDS = [p.label.replace(" ", "") for p in LIBRESWAN_PEERS]
PROPOSAL = Proposal("aes_gcm256-sha2_512-dh31", "aes_gcm256-sha2_512-dh31", "aes_gcm256",
                    "aes256gcm16-prfsha512-x25519", "aes256gcm16")


def _null_conf(conf: str | None = None) -> str:
    conf = conf or ipsec_conf(proposal=PROPOSAL)
    lines = []
    for ln in conf.splitlines():
        key = ln.strip().split("=", 1)[0]
        if key == "authby":
            ln = "\tauthby=null"
        elif key in ("leftid", "rightid"):
            ln = f"\t{key}=%null"
        lines.append(ln)
    return "\n".join(lines) + "\n"


def _established_in_log(them: Libreswan) -> bool:
    text = them.log.read_text(errors="replace")
    return any("established IKE SA" in ln for ln in text.splitlines() if "| " not in ln[:40])


def _up(lab: Lab, peer: PeerSpec, role: str, conf: str) -> tuple[Libreswan, Pypluto]:
    require(peer.available(), peer.install_hint)
    them = peer.libreswan(lab, lab.east, "libreswan-east").start(conf)
    us = Pypluto(lab, lab.west, "pypluto-west", "--use-userspace").start(conf)
    if role == "initiator":
        out = us.initiate()
        lab.wait_for(us.ike_established, 20, f"our IKE SA (whack --initiate said: {out[-300:]})")
        lab.wait_for(lambda: "ESTABLISHED_IKE_SA" in them.showstates(), 20,
                     "Libreswan's IKE SA")
    else:
        if peer.modern:
            r = them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
            assert r.returncode == 0, r.stdout + r.stderr
            lab.wait_for(lambda: _established_in_log(them), 20, "Libreswan's IKE SA")
        else:
            out = them.initiate()
            assert "established IKE SA" in out, out
        lab.wait_for(us.ike_established, 20, "our IKE SA")
    return them, us


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=PEER_IDS)
def test_null_auth_ike_sa(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                          role: str) -> None:
    cell(peer=peer.label, case="null-auth-ike-sa", role=role, proposal=PROPOSAL.name)
    them, us = _up(lab, peer, role, _null_conf())
    ours = [ln for ln in us.log.read_text(errors="replace").splitlines()
            if "established IKE SA; authenticated peer" in ln]
    assert ours and "authby=null and NULL '%null'" in ours[0], ours
    theirs = [ln for ln in them.log.read_text(errors="replace").splitlines()
              if "established IKE SA" in ln and "| " not in ln[:40]]
    assert theirs and ("NULL" in theirs[0] or "null" in theirs[0]), theirs
    cell(note=f"Libreswan: {theirs[0].split(': ', 1)[-1][:120]}")
    them.stop()


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=PEER_IDS)
def test_intermediate_yes_ike_sa(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                 role: str) -> None:
    """``intermediate=yes`` on both ends: one empty IKE_INTERMEDIATE, IntAuth in AUTH."""
    cell(peer=peer.label, case="intermediate-yes-ike-sa", role=role, proposal=PROPOSAL.name)
    them, us = _up(lab, peer, role, ipsec_conf(proposal=PROPOSAL, extra="intermediate=yes"))
    text = them.log.read_text(errors="replace")
    assert "IKE_INTERMEDIATE" in text.replace("N(INTERMEDIATE_EXCHANGE", ""), text[-1500:]
    cell(note="PSK IKE SA after one empty IKE_INTERMEDIATE")
    them.stop()
