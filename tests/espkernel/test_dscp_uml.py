"""encap-dscp= / decap-dscp= / nopmtudisc= for real, inside a kernel with ESP (UML).

One UML boot runs ``guest_dscp.py``: two of our daemons with ``--use-xfrm``, one conn
with Libreswan's defaults and then with ``encap-dscp=no``, ``decap-dscp=yes``,
``nopmtudisc=yes``: the kernel's SAs carry the flags (``ip xfrm state``) and a
``ping -Q 0xb8`` leaves in ESP packets with the inner TOS by default, 0 with
``encap-dscp=no``.  Missing UML fails in CI (``require``) and skips elsewhere.
"""

from __future__ import annotations

import pytest
from umlboot import GuestRun, boot, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CHECKS = ["child-sa-up", "ip-xfrm-state-flags"]


@uml_fixture("guest", expect=34)
def guest() -> GuestRun:
    return boot("guest_dscp.py", timeout=300)


def test_default_copies_the_inner_dscp_to_the_outer_header(guest: GuestRun) -> None:
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks(tagged("dscp-default", CHECKS + ["outer-tos-0xb8"]), "dscp")


def test_encap_dscp_no_decap_dscp_and_nopmtudisc_reach_the_kernel(guest: GuestRun) -> None:
    guest.assert_checks(tagged("dscp-flags", CHECKS + ["outer-tos-0x0"]), "dscp")
