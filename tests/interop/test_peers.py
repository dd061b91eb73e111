"""The peers themselves: proves the lab before pypluto is put into it.

strongSwan against strongSwan (kernel-libipsec, ESP-in-UDP) carries traffic;
Libreswan against strongSwan reaches the IKE SA (no kernel ESP here, so
Libreswan's Child SA install fails: that is its side, see the interop README).
"""

from __future__ import annotations

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, WEST_SUBNET, Lab, require
from peers import (
    EAST_ID,
    PROPOSALS,
    WEST_ID,
    Libreswan,
    StrongSwan,
    have_libreswan,
    have_strongswan,
    ipsec_conf,
    swanctl_conf,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop]


def _pair(lab: Lab) -> tuple[StrongSwan, StrongSwan]:
    require(have_strongswan(), "strongSwan charon-systemd and swanctl (tools/install-deps.sh)")
    p = PROPOSALS[1]  # aes_gcm256-sha2_512-dh31
    west = StrongSwan(lab, lab.west, "west").start()
    east = StrongSwan(lab, lab.east, "east").start()
    west.load(swanctl_conf(conn="west-east", local="192.0.2.1", remote="192.0.2.2",
                           local_id=WEST_ID, remote_id=EAST_ID, local_ts=WEST_SUBNET,
                           remote_ts=EAST_SUBNET, proposal=p))
    east.load(swanctl_conf(conn="east-west", local="192.0.2.2", remote="192.0.2.1",
                           local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                           remote_ts=WEST_SUBNET, proposal=p))
    return west, east


def test_strongswan_pair_traffic(lab: Lab) -> None:
    west, east = _pair(lab)
    west.initiate()
    lab.wait_for(east.established, 10, "east's IKE and Child SA")
    child = east.installed_child()
    assert child is not None and child.algs.startswith("AES_GCM_16-256")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3)
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3)
    sent, got, n = lab.transfer(lab.east, lab.west, WEST_INNER, src=EAST_INNER)
    assert (got, n) == (sent, 1 << 20)
    child = east.installed_child()
    assert child is not None and child.bytes_out > 1 << 20  # east sent the megabyte
    east.terminate_ike("east-west")
    lab.wait_for(lambda: not west.list_sas(), 10, "west's SAs gone after the Delete")


def test_libreswan_initiates_to_strongswan_ike_sa(lab: Lab) -> None:
    require(have_libreswan(), "Libreswan 4.10 pluto (tools/install-libreswan.sh)")
    require(have_strongswan(), "strongSwan charon-systemd and swanctl (tools/install-deps.sh)")
    p = PROPOSALS[1]
    east = StrongSwan(lab, lab.east, "east").start()
    east.load(swanctl_conf(conn="east-west", local="192.0.2.2", remote="192.0.2.1",
                           local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                           remote_ts=WEST_SUBNET, proposal=p))
    west = Libreswan(lab, lab.west, "west").start(ipsec_conf(proposal=p))
    out = west.initiate(timeout=30)
    assert "established IKE SA" in out, out
    west.stop()  # it would keep reviving the connection (no kernel ESP)


def test_libreswan52_initiates_to_strongswan601_ike_sa(lab: Lab) -> None:
    """The Debian 13 chroots themselves (tests/interop/trixie.py): 5.2 reaches 6.0.1's IKE SA."""
    from trixie import LS52, SS601

    require(SS601.available(), SS601.install_hint)
    require(LS52.available(), LS52.install_hint)
    p = PROPOSALS[1]
    east = SS601.strongswan(lab, lab.east, "east6")
    east.start()
    east.load(swanctl_conf(conn="east-west", local="192.0.2.2", remote="192.0.2.1",
                           local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                           remote_ts=WEST_SUBNET, proposal=p))
    west = LS52.libreswan(lab, lab.west, "west5").start(ipsec_conf(proposal=p))
    r = west.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
    assert r.returncode == 0, r.stdout + r.stderr
    lab.wait_for(lambda: any(i.state == "ESTABLISHED" for i in east.list_sas()), 20,
                 "strongSwan 6.0.1's IKE SA from Libreswan 5.2")
    west.stop()  # it would keep reviving the connection (no kernel ESP)
