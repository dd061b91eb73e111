"""``phase2=ah`` against strongSwan 5.9.8 (``ah_proposals``): the AH Child SA negotiation.

strongSwan's user-space data plane (kernel-libipsec) does ESP only and fakes NAT
detection (AH cannot traverse a NAT), and this host's kernel has no AH
("Protocol not supported"), so only the negotiation is proven here: strongSwan
runs with kernel-netlink alone, selects the AH proposal, then fails to install
it.  Checked in both roles: the proposal strongSwan selects is
AH:HMAC_SHA2_256_128 (no ENCR, RFC 7296 §3.3.3), our Child SA uses its SPI, and
its Delete for protocol AH is matched and answered (§3.11).
"""

from __future__ import annotations

import re

import pytest
from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab, require
from peers import (
    EAST_ID,
    PROPOSALS,
    WEST_ID,
    Pypluto,
    StrongSwan,
    have_strongswan,
    ipsec_conf,
    swanctl_conf,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]
DEFAULTS = PROPOSALS[0]


def _east(lab: Lab) -> StrongSwan:
    east = StrongSwan(lab, lab.east, "strongswan-east-ah", dataplane="kernel").start()
    conf = swanctl_conf(conn="east-west", local=EAST_OUTER, remote=WEST_OUTER,
                        local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                        remote_ts=WEST_SUBNET, proposal=DEFAULTS)
    conf = re.sub(r"esp_proposals = .*", "ah_proposals = sha256", conf)
    east.load(conf)
    return east


def _charon_log(east: StrongSwan) -> str:
    return east.log.read_text(errors="replace") if east.log.exists() else ""


def _ours(us: Pypluto) -> str:
    return us.log.read_text(errors="replace") if us.log.exists() else ""


def test_ah_strongswan_responder_selects_our_ah_proposal(lab: Lab) -> None:
    """We initiate: strongSwan receives our AH proposals (no ENCR), selects
    AH:HMAC_SHA2_256_128/NO_EXT_SEQ and, with no AH in this kernel, answers
    NO_PROPOSAL_CHOSEN, which we report as the Child SA's failure."""
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    east = _east(lab)
    us = Pypluto(lab, lab.west, "pypluto-west-ah").start(
        ipsec_conf(extra="phase2=ah\nah=sha2_256"))
    us.initiate()
    lab.wait_for(lambda: "Child SA failed" in _ours(us), 20, "the Child SA's outcome")
    log = _charon_log(east)
    assert "received proposals: AH:HMAC_SHA2_256_128/EXT_SEQ/NO_EXT_SEQ" in log, log[-3000:]
    assert "selected proposal: AH:HMAC_SHA2_256_128/NO_EXT_SEQ" in log, log[-3000:]
    assert "Protocol not supported" in log  # its SPI/SA for AH: the kernel has no AH
    assert "peer answered NO_PROPOSAL_CHOSEN" in _ours(us)


def test_ah_strongswan_initiator_gets_our_ah_child_sa(lab: Lab) -> None:
    """strongSwan initiates with ah_proposals: we accept an AH Child SA for its SPI;
    its kernel cannot install AH, so it deletes the Child SA with a Delete naming
    protocol AH, which we match (protocol and SPI) and answer."""
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    east = _east(lab)
    us = Pypluto(lab, lab.west, "pypluto-west-ah").start(
        ipsec_conf(extra="phase2=ah\nah=sha2_256"))
    east.initiate(check=False)
    lab.wait_for(lambda: "parsed INFORMATIONAL response" in _charon_log(east), 20,
                 "strongSwan's Delete of the AH Child SA answered")
    log, ours = _charon_log(east), _ours(us)
    spi = re.search(r"got SPI ([0-9a-f]{8})", log)
    assert spi is not None, log[-3000:]
    assert "selected proposal: AH:HMAC_SHA2_256_128/NO_EXT_SEQ" in log, log[-3000:]
    assert f"{{AH=>0x{spi.group(1)} " in ours, ours[-3000:]
    assert "xfrm=AUTH_HMAC_SHA2_256_128" in ours
    assert f"sending DELETE for AH CHILD_SA with SPI {spi.group(1)}" in log, log[-3000:]
    assert "received Delete SA payload: deleting Child SA" in ours
    assert "deleting Child SA; AH SPIs" in ours
    assert "parsed INFORMATIONAL response 2 [ D ]" in log  # our answer names our AH SPI
