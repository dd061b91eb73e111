"""pypluto against Libreswan 4.10 and 5.2 on a kernel without ESP (issue 7 case 5, issue 19).

Libreswan only has the kernel XFRM data plane, and these machines' kernel has
no ESP, so Libreswan's Child SA install fails ("Function not implemented").
4.10 as responder answers TS_UNACCEPTABLE and keeps the IKE SA; 5.2 answers
TEMPORARY_FAILURE and keeps it; as initiator both drop or revive their IKE SA
after the failed install.  So only the IKE SA (IKE_SA_INIT + IKE_AUTH with
PSK, RFC 7296 §1.2 and §2.15) is asserted here, in both roles and with the
whole proposal matrix.  (A childless IKE SA, RFC 6023, cannot be asked for:
neither Libreswan 4.10/5.2 nor pypluto accepts a ``childless=`` keyword.)
Both daemons read the same ipsec.conf and orient themselves by their local
addresses.  Libreswan 5.2 runs from the Debian 13 chroot (tests/interop/trixie.py)
and is initiated with ``--asynchronous`` (a synchronous initiate blocks for
60 s on the failed Child SA).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import Lab, require
from peers import (
    PROPOSAL_IDS,
    PROPOSALS,
    Libreswan,
    Proposal,
    Pypluto,
    ipsec_conf,
    west_pypluto,
)
from trixie import LIBRESWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]
PEER_IDS = [p.label.replace(" ", "") for p in LIBRESWAN_PEERS]


def _established_in_log(them: Libreswan) -> bool:
    """Libreswan logged an established IKE SA (its ``| `` debug lines left out)."""
    text = them.log.read_text(errors="replace")
    return any("established IKE SA" in ln for ln in text.splitlines() if "| " not in ln[:40])


def _start(lab: Lab, peer: PeerSpec, proposal: Proposal) -> tuple[Libreswan, Pypluto]:
    require(peer.available(), peer.install_hint)
    them = peer.libreswan(lab, lab.east, "libreswan-east").start(ipsec_conf(proposal=proposal))
    us = west_pypluto(lab, proposal)
    return them, us


def _them_initiate(lab: Lab, peer: PeerSpec, them: Libreswan) -> str:
    if peer.modern:  # 5.x: never the synchronous initiate (README pitfall 8)
        r = them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
        assert r.returncode == 0, r.stdout + r.stderr
        lab.wait_for(lambda: _established_in_log(them), 20, "Libreswan's IKE SA")
        return r.stdout
    out = them.initiate()
    assert "established IKE SA" in out, out
    return out


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("proposal", PROPOSALS, ids=PROPOSAL_IDS)
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=PEER_IDS)
def test_ike_sa(lab: Lab, cell: Callable[..., None], peer: PeerSpec, proposal: Proposal,
                role: str) -> None:
    cell(peer=peer.label, case="ike-sa", role=role, proposal=proposal.name)
    them, us = _start(lab, peer, proposal)
    if role == "initiator":
        out = us.initiate()
        lab.wait_for(us.ike_established, 20, f"our IKE SA (whack --initiate said: {out[-300:]})")
    else:
        _them_initiate(lab, peer, them)
        lab.wait_for(us.ike_established, 20, "our IKE SA")
        cell(note=f"IKE SA only: Libreswan's Child SA install fails (no kernel ESP), "
                  f"it then {'revives' if peer.modern else 'drops'} its IKE SA")
        them.stop()  # it would keep retrying its Child SA
        return
    lab.wait_for(lambda: "ESTABLISHED_IKE_SA" in them.showstates(), 20,
                 "Libreswan's IKE SA")
    # Libreswan's Child SA cannot be installed without kernel ESP; our IKE SA
    # must survive its TS_UNACCEPTABLE (4.10) / TEMPORARY_FAILURE (5.2) answer.
    answer = "TEMPORARY_FAILURE" if peer.modern else "TS_UNACCEPTABLE"
    lab.wait_for(lambda: f"peer answered {answer}" in us.log.read_text(errors="replace"), 20,
                 f"our log: the Child SA refused with {answer}")
    assert us.ike_established()
    cell(note=f"IKE SA only: Libreswan cannot install a Child SA without kernel ESP "
              f"(answers {answer})")
