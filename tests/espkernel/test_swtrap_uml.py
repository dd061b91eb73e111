"""strongSwan 5.9.8's ``start_action = trap`` for real, inside a kernel with ESP (UML).

In the normal interop lab strongSwan runs with kernel-libipsec, which never raises
an ACQUIRE, so its trap cannot be shown there.  One UML boot
(``tools/run-in-esp-kernel.sh``) runs ``guest_swtrap.py``: charon with the
kernel-netlink plugin (kernel ESP) and our ``pluto --use-xfrm``, both directions of
an on-demand tunnel (issue 16).  Missing UML, kmod or strongSwan fails in CI
(``require``) and skips elsewhere.
"""

from __future__ import annotations

import os
import re

import pytest
from testsupport import require
from umlboot import GuestRun, boot, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CHECKS = [
    "trap-policy-no-sa",
    "first-ping-acquire-brings-tunnel-up",
    "ip-xfrm-state-shows-the-sas",
    "strongswan-lists-installed-child",
    "later-pings-pass",
    "reverse-pings-pass",
    "nothing-left-after-shutdown",
]
PRESENT = ["swtrap-strongswan-present"]  # the guest found charon and swanctl


@uml_fixture("guest", expect=34)
def guest() -> GuestRun:
    """One UML boot for both directions (about 25 s)."""
    require(os.access("/usr/sbin/charon-systemd", os.X_OK) and os.access("/usr/sbin/swanctl",
                                                                        os.X_OK),
            "strongSwan 5.9.8 (charon-systemd, swanctl: apt-get install charon-systemd "
            "strongswan-swanctl)")
    require(os.path.exists("/usr/lib/ipsec/plugins/libstrongswan-kernel-netlink.so"),
            "strongSwan's kernel-netlink plugin")
    return boot("guest_swtrap.py", timeout=280)


def test_strongswan_start_action_trap_initiates_on_first_ping(guest: GuestRun) -> None:
    """strongSwan ``start_action = trap`` (kernel-netlink, kernel ESP), we respond
    (auto=add): the first ping from strongSwan's side makes the kernel raise an
    XFRM ACQUIRE to charon, charon initiates, the tunnel comes up (the same two
    ESP SAs in ``ip xfrm state`` on both ends), later pings pass both ways; after
    both daemons stop no state or policy is left."""
    print(f"UML run took {guest.seconds:.1f}s")
    print("\n".join(re.findall(r"swtrap-\S+: first trigger.*", guest.output)))
    guest.assert_checks(tagged("swtrap-ss", CHECKS), "swtrap-ss", PRESENT)


def test_pypluto_auto_route_initiates_toward_strongswan(guest: GuestRun) -> None:
    """We are auto=route (trap), strongSwan 5.9.8 responds in the ESP kernel: the first
    ping raises our ACQUIRE, we initiate, later pings pass; nothing left after."""
    guest.assert_checks(tagged("swtrap-pp", CHECKS), "swtrap-pp", PRESENT)
