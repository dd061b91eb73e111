"""vti-interface= for real, inside a kernel with ESP and ip_vti (User-Mode Linux).

One UML boot (``tools/run-in-esp-kernel.sh`` with ``PPESPK_MODULES=ip_vti ip6_vti``)
runs ``guest_vti.py``: a VTI conn between two of our daemons, a device shared by two
conns with ``vti-routing=no``, and a VTI conn against Libreswan 4.10 (issue 16,
route-based VPNs).  Missing UML or kmod fails in CI (``require``) and skips elsewhere.
"""

from __future__ import annotations

import pytest
from umlboot import GuestRun, boot, require_libreswan, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

PAIR = [
    "no-device-before-up",
    "device-made-with-keys-and-address",
    "peer-subnet-routed-onto-device",
    "peer-device-has-its-own-end-address",
    "sas-and-policies-carry-the-mark",
    "ping-through-the-device",
    "rekey-keeps-the-device-and-traffic",
    "down-removes-device-and-route",
    "up-again-passes-traffic",
    "nothing-left-after-shutdown",
]

CRASH = [
    "crash-leaves-the-device-marked-ours",
    "restart-replaces-the-leftover-device",
]

SHARED = [
    "one-device-remote-any",
    "vti-routing-no-adds-no-route",
    "both-conns-carry-traffic-on-one-device",
    "device-outlives-the-first-conn",
    "last-conn-delete-removes-the-device",
]


@uml_fixture("guest", expect=73)
def guest() -> GuestRun:
    """One UML boot for every scenario (process creation is slow in UML)."""
    return boot("guest_vti.py", timeout=480, modules="ip_vti ip6_vti")


def test_vti_pair_routes_traffic_through_the_device(guest: GuestRun) -> None:
    """Two of our daemons (--use-xfrm), ``vti-interface=vti5``, ``mark=5``,
    ``leftvti=``/``rightvti=``: each makes ``vti5`` (local/remote = the IKE
    addresses, ikey/okey 5) with its own end's address and routes the peer's subnet
    onto it; the SAs and policies carry mark 5; a plain ping (no firewall mark) is
    counted on the device and on both SAs; a rekey keeps the device and its
    traffic; ``--down`` removes device and route on both ends; after a new
    ``--initiate``, SIGTERM leaves no device, route, SA or policy."""
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks(tagged("vti-pair", PAIR), "vti-pair")


def test_vti_device_left_by_a_crash_is_replaced(guest: GuestRun) -> None:
    """SIGKILL of west leaves ``vti5`` with our alias (``pypluto-vti``); a new west
    removes and remakes it when the conn comes up (its log says so), traffic flows,
    and its SIGTERM then leaves nothing (the pair's last check)."""
    guest.assert_checks(tagged("vti-pair", CRASH), "vti-pair")


def test_vti_routing_no_adds_no_route(guest: GuestRun) -> None:
    """``vti-routing=no``: the device is made and carries traffic once the operator
    routes onto it, but the daemon adds no route (IPv4 and IPv6 subnets)."""
    guest.assert_checks(tagged("vti-shared", SHARED[:3]), "vti-shared")


def test_vti_shared_device_outlives_one_conn(guest: GuestRun) -> None:
    """``vti-shared=yes``: two conns (IPv4 and IPv6 subnets over IPv4) share one
    device whose remote is any; the first conn's down leaves it working for the
    other; deleting the last conn (``--delete``) removes it."""
    guest.assert_checks(tagged("vti-shared", SHARED), "vti-shared")


def test_vti_against_libreswan(guest: GuestRun) -> None:
    """The pair test against Libreswan 4.10, whose _updown makes east's device (its
    route is added by the test: 4.10's _updown misreads this iproute2's ``ip tun
    show`` and adds none, so east uses vti-routing=no, vti-shared=yes); here the
    shutdown is ``whack --shutdown``."""
    require_libreswan("certutil")
    guest.assert_checks(tagged("vti-libreswan", PAIR), "vti-libreswan")
