"""pypluto against Libreswan 4.10 on a kernel without ESP (issue 7, case 5).

Libreswan only has the kernel XFRM data plane, and these machines' kernel has
no ESP, so Libreswan's Child SA install fails ("Function not implemented"):
as responder it answers TS_UNACCEPTABLE and keeps the IKE SA, as initiator it
drops its IKE SA without a Delete and retries.  So only the IKE SA
(IKE_SA_INIT + IKE_AUTH with PSK, RFC 7296 §1.2 and §2.15) is asserted here,
in both roles and with the whole proposal matrix.  Both daemons read the same
ipsec.conf and orient themselves by their local addresses.
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
    have_libreswan,
    ipsec_conf,
    west_pypluto,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]
PEER = "Libreswan 4.10"


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("proposal", PROPOSALS, ids=PROPOSAL_IDS)
def test_ike_sa(lab: Lab, cell: Callable[..., None], proposal: Proposal, role: str) -> None:
    cell(peer=PEER, case="ike-sa", role=role, proposal=proposal.name)
    require(have_libreswan(), "Libreswan 4.10 pluto (tools/install-libreswan.sh)")
    them = Libreswan(lab, lab.east, "libreswan-east").start(ipsec_conf(proposal=proposal))
    us = west_pypluto(lab, proposal)
    if role == "initiator":
        out = us.initiate()
        lab.wait_for(us.ike_established, 20, f"our IKE SA (whack --initiate said: {out[-300:]})")
    else:
        out = them.initiate()
        assert "established IKE SA" in out, out
        lab.wait_for(us.ike_established, 20, "our IKE SA")
        cell(note="IKE SA only: Libreswan's Child SA install fails (no kernel ESP), "
                  "it then drops its IKE SA without a Delete and retries")
        them.stop()  # it would keep retrying its Child SA
        return
    lab.wait_for(lambda: "ESTABLISHED_IKE_SA" in them.showstates(), 20,
                 "Libreswan's IKE SA")
    # Libreswan's Child SA cannot be installed without kernel ESP; our IKE SA
    # must survive its TS_UNACCEPTABLE answer.
    assert us.ike_established()
    cell(note="IKE SA only: Libreswan cannot install a Child SA without kernel ESP")
