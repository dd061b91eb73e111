"""Transport mode, host to host, with a trap (``auto=route``), in a kernel with ESP (UML).

The userspace plane has ``tests/daemon/test_ondemand.py::test_transport_host_to_host_trap``;
this is the XFRM plane (issue 16).  One UML boot (``tools/run-in-esp-kernel.sh``)
runs ``guest_trtrap.py``: our ``pluto --use-xfrm`` west, ``type=transport``, no
subnets, ``auto=route``; the east end ``auto=add``, first a second pypluto, then
Libreswan 4.10.  Missing UML, kmod or Libreswan fails in CI (``require``) and
skips elsewhere.
"""

from __future__ import annotations

import re

import pytest
from umlboot import GuestRun, boot, require_libreswan, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CHECKS = [
    "trap-policy-no-sa",
    "first-ping-acquire-brings-tunnel-up",
    "ip-xfrm-state-shows-transport-sas",
    "policies-transport-templates",
    "later-pings-pass",
    "reverse-pings-pass",
    "unroute-delete-leaves-nothing",
    "nothing-left-after-sigterm",
]
PRESENT = ["trtrap-libreswan-present"]  # the guest found Libreswan


@uml_fixture("guest", expect=43)
def guest() -> GuestRun:
    """One UML boot for both east ends (about 30 s)."""
    require_libreswan()
    return boot("guest_trtrap.py", timeout=280)


def test_transport_host_to_host_trap_xfrm(guest: GuestRun) -> None:
    """pypluto both ends: west ``auto=route`` installs only a transport-mode trap
    policy (no SA); the first ping raises the kernel's ACQUIRE, we initiate, both ends
    show the same two transport-mode ESP SAs, later pings pass both ways;
    ``--unroute`` + ``--delete`` leave no policy or state, SIGTERM leaves nothing."""
    print(f"UML run took {guest.seconds:.1f}s")
    print("\n".join(re.findall(r"trtrap-\S+: first trigger.*", guest.output)))
    guest.assert_checks(tagged("trtrap-pp", CHECKS), "trtrap-pp", PRESENT)


def test_transport_host_to_host_trap_toward_libreswan(guest: GuestRun) -> None:
    """The same with Libreswan 4.10 as the ``auto=add`` east end."""
    guest.assert_checks(tagged("trtrap-ls", CHECKS), "trtrap-ls", PRESENT)
