"""A route-based pypluto (``ipsec-interface=1``, userspace plane) against strongSwan (issue 16).

strongSwan (kernel-libipsec, policy-based: its own TUN device and routes) is
the east gateway; pypluto's conn has ``ipsec-interface=1`` and
``leftinterface-ip=``.  pypluto makes ``ipsec1`` with the Child SA and routes
nothing; once the operator routes east's subnet onto ``ipsec1``, pings from
west's subnet pass and are counted on the device; after ``ipsec down`` the
device is gone.
"""

from __future__ import annotations

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, Lab, require
from peers import PROPOSALS, east_strongswan, have_strongswan, west_pypluto
from trixie import STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
PEER_IDS = [p.label.replace(" ", "") for p in STRONGSWAN_PEERS]


def _has_ipsec1(lab: Lab) -> bool:
    return lab.run(lab.west, ["ip", "link", "show", "dev", "ipsec1"],
                   check=False).returncode == 0


@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_ping_through_ipsec1_to_strongswan(lab: Lab, peer: PeerSpec) -> None:
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)
    them = east_strongswan(lab, PROPOSALS[0], make=peer.strongswan)
    us = west_pypluto(lab, PROPOSALS[0], extra="ipsec-interface=1\n"
                      "leftinterface-ip=198.51.100.9/32")
    assert not _has_ipsec1(lab)
    out = us.initiate()
    assert us.child_established(), out
    assert them.established() is not None
    assert _has_ipsec1(lab)
    # route-based: pypluto routes nothing to east's subnet; the operator does
    assert us.routes_to(EAST_SUBNET) == []
    lab.run(lab.west, ["ip", "route", "add", EAST_SUBNET, "dev", "ipsec1"])
    lab.run(lab.west, ["iptables", "-w", "-A", "INPUT", "-i", "ipsec1", "-p", "icmp"])
    sent, got = lab.ping(lab.west, EAST_INNER, count=5, interval=0.3, timeout=5,
                         src=WEST_INNER)
    assert (sent, got) == (5, 5), f"{got}/{sent} pings answered through ipsec1"
    rules = lab.run(lab.west, ["iptables", "-w", "-v", "-x", "-n", "-L", "INPUT"]).stdout
    assert int(rules.splitlines()[2].split()[0]) >= 5, rules
    ins, outs = us.traffic()
    assert ins > 0 and outs > 0
    assert us.down().returncode == 0
    lab.wait_for(lambda: not _has_ipsec1(lab), 10, "ipsec1 to go with the Child SA")
    lab.wait_for(lambda: them.established() is None, 20, "strongSwan to see the delete")
