"""mark= / mark-in= / mark-out= for real, inside a kernel with ESP (User-Mode Linux).

One UML boot (``tools/run-in-esp-kernel.sh``) runs ``guest_mark.py``: two conns with
the same selectors and different marks, between two of our daemons and between
ours and Libreswan 4.10 (issue 12 item 6; issue 16 "mark= conns coexist"), and a
marked auto=route trap.  Missing UML or kmod fails in CI (``require``) and skips
elsewhere.
"""

from __future__ import annotations

import shutil

import pytest
from testsupport import require
from umlboot import GuestRun, boot, require_libreswan, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CHECKS = [
    "both-child-sas-installed",
    "ip-xfrm-state-shows-marks",
    "ip-xfrm-policy-same-selectors-two-marks",
    "peer-kernel-marks",
    "mark-1-traffic-through-conn-a",
    "mark-0x21-traffic-through-conn-b",
    "unmarked-traffic-takes-neither-sa",
    "trafficstatus-counts-marked-sas",
    "rekey-keeps-marks-and-deletes-old-sas",
    "mark-0x21-traffic-after-rekey",
    "down-a-leaves-b",
    "conn-b-still-carries-its-traffic",
    "nothing-left-after-shutdown",
]

ROUTE = [
    "trap-policy-is-marked",
    "unmarked-traffic-raises-no-acquire",
    "marked-traffic-acquires-a-marked-child",
    "ping-after-acquire",
    "down-keeps-the-marked-trap",
    "nothing-left-after-shutdown",
]


@uml_fixture("guest", expect=60)
def guest() -> GuestRun:
    """One UML boot for every scenario (process creation is slow in UML)."""
    require(shutil.which("iptables-legacy") is not None,
            "iptables-legacy (package iptables): marks inbound ESP in the guest")
    return boot("guest_mark.py", timeout=380)


def test_marked_conns_coexist_and_carry_their_traffic(guest: GuestRun) -> None:
    """Two of our daemons (--use-xfrm): conn A (mark=1) and conn B (mark-in=0x22,
    mark-out=0x21) with the same selectors are both up; the kernel holds both SA pairs
    and policy sets with their marks; ``ping -m 1`` counts on A's SAs only, ``ping -m
    0x21`` on B's only, unmarked traffic on neither; ``--trafficstatus`` counts both;
    B's rekey keeps its marks and deletes the old (marked) SAs; A's down leaves B
    working; the shutdown leaves no SA, policy or mark."""
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks(tagged("mark-pair", CHECKS), "mark-pair")


def test_marked_conns_against_libreswan(guest: GuestRun) -> None:
    """The same against Libreswan 4.10 (``mark=1/0xffffffff``, ``mark=2/0xffffffff``):
    both Child SAs, marked traffic through the SA of its mark, both ways."""
    require_libreswan("certutil")
    guest.assert_checks(tagged("mark-libreswan", CHECKS), "mark-libreswan")


def test_marked_trap_acquires_only_for_marked_traffic(guest: GuestRun) -> None:
    """auto=route with mark=1 (issue 16): the trap policy is marked, an unmarked ping
    raises no ACQUIRE, a ``ping -m 1`` does and brings up a marked Child SA that then
    carries marked traffic; down keeps the marked trap; shutdown leaves nothing."""
    guest.assert_checks(tagged("mark-route", ROUTE), "mark-route")
