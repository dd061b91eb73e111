"""A refused rekey never ends the tunnel (issue 12), against strongSwan 5.9.8.

pypluto's ``salifetime=30s`` makes it rekey the Child SA every ~15 s.  When the
two ends' PFS settings differ, strongSwan answers the rekey NO_PROPOSAL_CHOSEN;
pypluto then replaces the IKE SA and its Child SA (make-before-break
re-authentication, RFC 7296 §2.8) instead of letting the Child SA expire:

* ``pfs-yes-vs-default``: pypluto ``pfs=yes`` (the default) offers KE, strongSwan's
  default ESP proposals have none;
* ``pfs-no-vs-modp2048``: strongSwan ``esp_proposals = aes128gcm16-modp2048`` wants
  KE, pypluto ``pfs=no`` sends none.

A ping every 0.2 s for 90 s must lose nothing, in both roles of the first IKE SA.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, Lab, parse_ping, require
from peers import Proposal, Pypluto, StrongSwan, east_strongswan, have_strongswan, west_pypluto

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(240)]

CASES = {
    "pfs-yes-vs-default": (Proposal("ss-default", None, None, "default", "default"), ""),
    "pfs-no-vs-modp2048": (Proposal("ss-modp2048", None, None, "default",
                                    "aes128gcm16-modp2048"), "pfs=no"),
}
SECONDS = 45  # covers the first refused rekey and its replacement (salifetime=30s)
INTERVAL = 0.2


def _up(lab: Lab, proposal: Proposal, extra: str, role: str) -> tuple[Pypluto, StrongSwan]:
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    them = east_strongswan(lab, proposal)
    us = west_pypluto(lab, None, extra=f"salifetime=30s\n{extra}")
    if role == "initiator":
        out = us.initiate()
        assert us.child_established(), f"whack --initiate: {out}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established()
                 and us.routes_to(EAST_SUBNET), 20, "IKE and Child SA on both ends")
    return us, them


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("case", list(CASES))
def test_pfs_mismatch_no_ping_lost(lab: Lab, cell: Callable[..., None], case: str,
                                   role: str) -> None:
    cell(peer="strongSwan 5.9.8", case=f"refused-rekey-{case}", role=role, proposal=case)
    proposal, extra = CASES[case]
    us, them = _up(lab, proposal, extra, role)
    count = int(SECONDS / INTERVAL)
    log = lab.workdir / "ping.log"
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 15, "first ping through the tunnel")
    ping_start = time.strftime("%H:%M:%S")
    ping = lab.spawn(lab.west, ["ping", "-n", "-i", str(INTERVAL), "-c", str(count), "-W", "2",
                                "-I", WEST_INNER, EAST_INNER], log, name="ping",
                     expect_alive=False)
    assert ping.proc is not None
    ping.proc.wait(SECONDS + 60)
    sent, received = parse_ping(log.read_text())
    text = us.log.read_text()
    # the scenario really happened: strongSwan refused at least one of our rekeys,
    # and each refusal was followed by a replacement IKE SA
    assert "the peer refused to rekey Child SA" in text, text[-3000:]
    assert "NO_PROPOSAL_CHOSEN" in text
    assert "Child SA expired" not in text
    seen = {int(m) for m in re.findall(r"icmp_seq=(\d+) ttl", log.read_text())}
    lost = sorted(set(range(1, count + 1)) - seen)
    assert sent == count and received == sent, f"lost icmp_seq {lost} of {sent}; " \
        f"ping started at {ping_start}; pypluto log:\n{text[-4000:]}"
    assert us.child_established() and them.established()


@pytest.mark.parametrize("who", ["strongswan-rekeys", "pypluto-rekeys"])
def test_ms_dh_downgrade_rekeys_in_place(lab: Lab, cell: Callable[..., None], who: str) -> None:
    """``ms-dh-downgrade=yes`` on our pfs=yes conn against strongSwan's default ESP
    proposals (no KE): strongSwan's rekey without KE is accepted, and our rekey offers
    each proposal again with KE NONE, which strongSwan picks.  Either way the Child SA
    is rekeyed in place: the same IKE SA on both ends, new Child SA SPIs, no
    re-authentication, and pings pass.  (Without the key: the cases above.)"""
    cell(peer="strongSwan 5.9.8", case="ms-dh-downgrade",
         role="responder" if who == "strongswan-rekeys" else "initiator",
         proposal="ss-default")
    us, them = _up(lab, CASES["pfs-yes-vs-default"][0], "ms-dh-downgrade=yes", "initiator")
    before = them.established()
    assert before is not None
    old_child = before.children[0].spi_in
    if who == "strongswan-rekeys":
        them.rekey(child="net")
        want = "without KE accepted: no PFS for this Child SA (ms-dh-downgrade=yes)"
    else:
        us.rekey_child()
        want = "the peer chose no PFS for this Child SA (ms-dh-downgrade=yes)"

    def rekeyed() -> bool:
        ike = them.established()
        return ike is not None and len(ike.children) == 1 and \
            ike.children[0].spi_in != old_child and ike.children[0].state == "INSTALLED"

    lab.wait_for(rekeyed, 20, f"Child SA rekeyed by {who}")
    after = them.established()
    assert after is not None and (after.spi_i, after.spi_r) == (before.spi_i, before.spi_r)
    text = us.log.read_text()
    assert want in text, text[-3000:]
    assert "refused" not in text and "re-authentication" not in text, text[-3000:]
    lab.wait_for(lambda: us.child_established() and len(us.child_spis()) == 1, 20,
                 "one Child SA on our side")
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 15, "a ping after the rekey")
    cell(note=f"rekeyed by {who.split('-')[0]} without KE; same IKE SA")
