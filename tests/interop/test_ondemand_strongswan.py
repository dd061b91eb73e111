"""On-demand tunnels against strongSwan (kernel-libipsec) (issue 16).

- ``ondemand-initiator``: pypluto's conn is ``auto=route``; the first ping from
  west's subnet hits the trap on the userspace plane, is held
  (``negotiationshunt=hold``) and brings the tunnel up: no ping may be lost.

strongSwan's own ``start_action = trap`` cannot be a case here: its
kernel-libipsec (the only data plane it has on this host, whose kernel lacks
ESP) raises no acquire for a trap policy (charon logs "could not find an
outbound IPsec SA for reqid {1}, dropping packet"; upstream strongSwan PR #147).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, Lab, require
from peers import PROPOSALS, east_strongswan, have_strongswan, west_pypluto
from trixie import STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
PEER_IDS = [p.label.replace(" ", "") for p in STRONGSWAN_PEERS]


def _require(peer: PeerSpec) -> None:
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)


@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_pypluto_trap_first_ping_no_loss(lab: Lab, cell: Callable[..., None],
                                         peer: PeerSpec) -> None:
    cell(peer=peer.label, case="ondemand-trap", role="initiator", proposal="defaults")
    _require(peer)
    them = east_strongswan(lab, PROPOSALS[0], make=peer.strongswan)
    us = west_pypluto(lab, PROPOSALS[0], auto="route")
    assert not us.child_established() and them.established() is None
    assert us.routes_to(EAST_SUBNET), "the trap's route into the TUN"
    assert "routed-ondemand" in us.status()
    sent, got = lab.ping(lab.west, EAST_INNER, count=5, interval=0.3, timeout=5,
                         src=WEST_INNER)
    assert (sent, got) == (5, 5), f"{got}/{sent} pings answered through the on-demand tunnel"
    assert us.child_established() and them.established() is not None
    cell(note="auto=route: 5/5 pings, none lost while negotiating (hold)")
    # down keeps the trap: traffic brings it up again
    assert us.down().returncode == 0
    lab.wait_for(lambda: them.established() is None, 20, "strongSwan to see the delete")
    sent, got = lab.ping(lab.west, EAST_INNER, count=3, interval=0.3, timeout=5,
                         src=WEST_INNER)
    assert (sent, got) == (3, 3)
