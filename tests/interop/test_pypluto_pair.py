"""pypluto against pypluto, both with the userspace ESP plane (issue 7, case 7).

Both daemons read the same ipsec.conf and orient themselves by their local
addresses (as Libreswan's pluto does); west initiates, so every run exercises
both the initiator and the responder half of every exchange.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import EAST_INNER, WEST_INNER, Lab, parse_ping
from peers import PROPOSAL_IDS, PROPOSALS, Proposal, Pypluto, ipsec_conf

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
PEER = "pypluto"


def _pair(lab: Lab, proposal: Proposal) -> tuple[Pypluto, Pypluto]:
    conf = ipsec_conf(proposal=proposal)
    west = Pypluto(lab, lab.west, "pypluto-west").start(conf)
    east = Pypluto(lab, lab.east, "pypluto-east").start(conf)
    out = west.initiate()
    lab.wait_for(lambda: west.child_established() and east.child_established(), 20,
                 f"Child SA on both ends (whack --initiate said: {out[-300:]})")
    return west, east


@pytest.mark.parametrize("proposal", PROPOSALS, ids=PROPOSAL_IDS)
def test_traffic(lab: Lab, cell: Callable[..., None], proposal: Proposal) -> None:
    cell(peer=PEER, case="traffic", role="both", proposal=proposal.name)
    west, east = _pair(lab, proposal)
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3)
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3)
    sent, got, n = lab.transfer(lab.west, lab.east, EAST_INNER, src=WEST_INNER, port=5001)
    assert (got, n) == (sent, 1 << 20)
    sent, got, n = lab.transfer(lab.east, lab.west, WEST_INNER, src=EAST_INNER, port=5002)
    assert (got, n) == (sent, 1 << 20)
    w_in, w_out = west.traffic()
    e_in, e_out = east.traffic()
    assert min(w_in, w_out, e_in, e_out) > 1 << 20, (west.trafficstatus(), east.trafficstatus())


@pytest.mark.parametrize("what", ["child", "ike"])
def test_rekey_under_ping(lab: Lab, cell: Callable[..., None], what: str) -> None:
    cell(peer=PEER, case=f"rekey-{what}", role="both", proposal="defaults")
    west, east = _pair(lab, PROPOSALS[0])
    child_before, ike_before = east.child_spis(), east.ike_spis()
    assert child_before and ike_before
    log = lab.workdir / "ping.log"
    ping = lab.spawn(lab.west, ["ping", "-n", "-i", "0.2", "-c", "30", "-W", "2",
                                "-I", WEST_INNER, EAST_INNER], log, name="ping")
    ping.expect_alive = False
    lab.wait_for(lambda: log.read_text().count("bytes from") >= 5, 15, "pings flowing")
    (west.rekey_child if what == "child" else west.rekey_ike)()

    def rekeyed() -> bool:
        children, ikes = east.child_spis(), east.ike_spis()
        if what == "ike":
            return len(ikes) == 1 and not ikes & ike_before and len(children) == 1
        return len(children) == 1 and not children & child_before

    lab.wait_for(rekeyed, 20, f"{what} SA rekeyed and the old one deleted")
    lab.wait_for(lambda: len(west.child_spis()) == 1 and len(west.ike_spis()) == 1, 20,
                 "one IKE and one Child SA left on the rekey initiator")
    ping.proc.wait(30)
    sent, received = parse_ping(log.read_text())
    assert sent == 30 and received == sent, log.read_text()[-800:]


@pytest.mark.parametrize("by", ["initiator", "responder"])
def test_delete(lab: Lab, cell: Callable[..., None], by: str) -> None:
    """``whack --down`` on either end: the Delete (RFC 7296 §1.4.1) clears both ends."""
    cell(peer=PEER, case=f"delete-by-{by}", role="both", proposal="defaults")
    west, east = _pair(lab, PROPOSALS[0])
    r = (west if by == "initiator" else east).down()
    assert r.returncode == 0, r.stdout + r.stderr
    lab.wait_for(lambda: not west.sas() and not east.sas()
                 and "ESTABLISHED" not in west.showstates()
                 and "ESTABLISHED" not in east.showstates()
                 and not west.routes_to("203.0.113.0/24")
                 and not east.routes_to("198.51.100.0/24"), 15, "nothing left on either end")


def test_none_backend_negotiates(lab: Lab, cell: Callable[..., None]) -> None:
    """``--use-none`` (no data plane): IKE and Child SAs still negotiate on both ends.

    The XFRM backend pair runs inside the ESP kernel
    (tests/espkernel/test_xfrm_uml.py::test_two_pypluto_daemons_with_xfrm)."""
    cell(peer=PEER, case="negotiate (--use-none)", role="both", proposal="defaults")
    conf = ipsec_conf(proposal=PROPOSALS[0])
    west = Pypluto(lab, lab.west, "pypluto-west", "--use-none").start(conf)
    east = Pypluto(lab, lab.east, "pypluto-east", "--use-none").start(conf)
    out = west.initiate()
    lab.wait_for(lambda: len(west.child_spis()) == 1 and len(east.child_spis()) == 1, 20,
                 f"Child SA on both ends (whack --initiate said: {out[-300:]})")
    assert west.child_spis() != east.child_spis()  # each end chose its own inbound SPI
    assert not west.routes_to("203.0.113.0/24")  # no data plane, no routes
