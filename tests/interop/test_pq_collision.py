"""Rekey collisions with additional key exchanges against strongSwan 6.0.1 (issue 17,
RFC 9370 §2.2.2 with RFC 7296 §2.8.1/§2.8.2): both ends rekey the same SA and both
CREATE_CHILD_SA requests cross, so both answers choose ML-KEM follow-ups and each end
settles the collision from the four nonces.

The crossing is made, not hoped for: while west's (pypluto's) UDP output is dropped,
strongSwan's rekey request reaches pypluto, which answers (the answer is lost) and
starts its own rekey (lost too); then the drop ends.  pypluto's retransmitted
request reaches strongSwan, whose own rekey is still unanswered; strongSwan's
retransmit gets pypluto's cached answer.  Both ends hold the other's pending state
when their own answer arrives: one must log "collision lost" and stop before
IKE_FOLLOWUP_KE, the other "collision won" (strongSwan, when it lost, may instead
"abort active rekeying" if pypluto's Delete of the old SA overtakes its answer);
one new SA remains on both ends and traffic flows.  Which end wins is the nonces'.
"""

from __future__ import annotations

import pathlib
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from lab import Lab
from peers import Pypluto, StrongSwan
from test_pq import CHILD_PFS, PEERS, REKEY, _ping, _up
from trixie import PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]


@contextmanager
def _west_silent(lab: Lab) -> Iterator[None]:
    """Drop every UDP datagram west sends (IKE on 500/4500 and ESP-in-UDP) meanwhile."""
    rule = ["OUTPUT", "-p", "udp", "-j", "DROP"]
    lab.run(lab.west, ["iptables", "-A", *rule])
    try:
        yield
    finally:
        lab.run(lab.west, ["iptables", "-D", *rule], check=False)


def _text(path: pathlib.Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _verdicts(us: Pypluto, them: StrongSwan, kind: str) -> tuple[list[str], list[str]]:
    """pypluto's "rekey collision lost|won" lines, and strongSwan's: its own "lost|won",
    or "abort" when pypluto's Delete of the old SA came before strongSwan's answer
    ("... abort active rekeying": it lost without seeing the nonces)."""
    ours = re.findall(r"rekey collision (lost|won)", _text(us.log))
    text = _text(them.log)
    theirs = re.findall(rf"{kind} rekey collision (lost|won)", text)
    theirs += ["abort"] * len(re.findall(r"abort active rekeying", text))
    return ours, theirs


SENT = "generating CREATE_CHILD_SA request"


def _cross(lab: Lab, us: Pypluto, them: StrongSwan, start_them: Callable[[], object],
           start_us: Callable[[], object]) -> None:
    """Both rekeys in flight at once (see the module docstring)."""
    with _west_silent(lab):
        n = _text(them.log).count(SENT)
        start_them()
        lab.wait_for(lambda: _text(them.log).count(SENT) > n, 10, "strongSwan's rekey sent")
        time.sleep(0.3)  # its request reaches pypluto, whose answer is dropped
        start_us()
        time.sleep(0.3)


def _settle(lab: Lab, us: Pypluto, them: StrongSwan, kind: str) -> tuple[str, str]:
    lab.wait_for(lambda: all(_verdicts(us, them, kind)), 40,
                 "both ends settled the collision")
    ours, theirs = _verdicts(us, them, kind)
    assert len(ours) == 1 and len(theirs) == 1, (ours, theirs)
    assert (ours[0], theirs[0]) in {("lost", "won"), ("won", "lost"), ("won", "abort")}, \
        (ours, theirs)
    return ours[0], theirs[0]


@pytest.mark.parametrize("peer", PEERS, ids=[p.label.replace(" ", "") for p in PEERS])
def test_simultaneous_child_rekey_with_followup_ke(lab: Lab, cell: Callable[..., None],
                                                   peer: PeerSpec) -> None:
    proposal = CHILD_PFS[0]
    cell(peer=peer.label, case="child-rekey-collision-addke", role="both",
         proposal=proposal.name)
    us, them = _up(lab, peer, proposal, "initiator")
    before = {c.spi_in for s in them.list_sas() for c in s.children}
    ours_before = us.child_spis()
    _cross(lab, us, them, lambda: them.rekey(child="net"), us.rekey_child)
    ours, _ = _settle(lab, us, them, "CHILD_SA")

    def one_new() -> bool:
        now = {c.spi_in for s in them.list_sas() for c in s.children if c.state == "INSTALLED"}
        mine = us.child_spis()
        return len(now) == 1 and not now & before and len(mine) == 1 \
            and not mine & ours_before

    lab.wait_for(one_new, 30, "one new Child SA on both ends, the old one deleted")
    child = them.installed_child()
    assert child is not None and "KE1_ML_KEM_768" in child.algs, child
    _ping(lab)
    cell(note=f"pypluto {ours} the collision; ESP {child.algs}")


@pytest.mark.parametrize("peer", PEERS, ids=[p.label.replace(" ", "") for p in PEERS])
def test_simultaneous_ike_rekey_with_followup_ke(lab: Lab, cell: Callable[..., None],
                                                 peer: PeerSpec) -> None:
    proposal = REKEY[1]
    cell(peer=peer.label, case="ike-rekey-collision-addke", role="both",
         proposal=proposal.name)
    us, them = _up(lab, peer, proposal, "initiator")
    before = them.established()
    assert before is not None
    ours_before = us.ike_spis()
    _cross(lab, us, them, lambda: them.rekey(ike="east-west"), us.rekey_ike)
    ours, _ = _settle(lab, us, them, "IKE_SA")

    def one_new() -> bool:
        sas = them.list_sas()
        mine = us.ike_spis()
        return len(sas) == 1 and sas[0].state == "ESTABLISHED" and sas[0].uid != before.uid \
            and len(mine) == 1 and not mine & ours_before

    lab.wait_for(one_new, 30, "one new IKE SA on both ends, the old one deleted")
    assert them.installed_child() is not None
    _ping(lab)
    # the surviving IKE SA works: a Child SA rekey over it
    spis = {c.spi_in for s in them.list_sas() for c in s.children}
    us.rekey_child()
    lab.wait_for(lambda: {c.spi_in for s in them.list_sas() for c in s.children
                          if c.state == "INSTALLED"} - spis != set(), 20, "Child SA rekeyed")
    _ping(lab)
    cell(note=f"pypluto {ours} the collision")
