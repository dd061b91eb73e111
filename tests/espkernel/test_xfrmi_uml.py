"""ipsec-interface= on the XFRM plane for real: XFRM interfaces in the ESP kernel (UML).

Debian's UML kernel is built without CONFIG_XFRM_INTERFACE, so the first use builds
``xfrm_interface.ko`` for it (``tools/build-uml-xfrmi.sh``: the exact linux-source the
kernel came from, about one to two minutes, cached under /var/cache/pypluto/uml).
One UML boot then runs ``guest_xfrmi.py``: it loads the module, and two of our
daemons, then ours against Libreswan 4.10, bring up ``ipsec-interface=1`` conns
and ping through traffic routed onto ``ipsec1`` (issue 16, route-based VPNs).
Missing UML, kmod or a module that cannot be built fails in CI (``require``) and
skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from testsupport import REPO, require
from umlboot import GuestRun, boot, require_libreswan, require_uml, tagged, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

BUILD = REPO / "tools" / "build-uml-xfrmi.sh"

PAIR = [
    "no-device-before-up",
    "device-made-with-if-id-and-address",
    "peer-device-has-its-own-end-address",
    "sas-and-policies-carry-the-if-id",
    "no-route-from-the-daemon",
    "unrouted-traffic-does-not-pass",
    "ping-routed-onto-ipsec1",
    "second-conn-shares-the-device",
    "device-outlives-the-first-conn",
    "last-conn-delete-removes-the-device",
    "up-again-passes-traffic",
    "nothing-left-after-sigterm",
    "peer-clean-after-sigterm",
    "restart-after-crash-removes-the-device",
]
MODULE = ["xfrmi-module-loads"]  # the guest loaded xfrm_interface.ko

LIBRESWAN = [
    "both-ends-have-ipsec1",
    "ping-routed-onto-ipsec1",
    "down-removes-our-device",
    "up-again-passes-traffic",
    "nothing-left-after-sigterm",
]


def build_module() -> tuple[str | None, str]:
    """(path of xfrm_interface.ko, or None; the builder's output)."""
    res = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900, cwd=REPO)
    path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    ok = res.returncode == 0 and path.endswith(".ko") and os.path.exists(path)
    return (path if ok else None), res.stdout + res.stderr


@uml_fixture("guest", expect=60)
def guest() -> GuestRun:
    """Build (first use) and load the module, then one UML boot for every scenario."""
    require_uml()  # before the build
    ko, out = build_module()
    require(ko is not None, f"xfrm_interface.ko for the UML kernel "
            f"(tools/build-uml-xfrmi.sh failed: {out.strip()[-800:]})")
    assert ko is not None
    return boot("guest_xfrmi.py", ko, timeout=480)


def test_ipsec_interface_pair_routes_traffic_onto_ipsec1(guest: GuestRun) -> None:
    """Two of our daemons (--use-xfrm), conns ``xa`` (IPv4 subnets) and ``xb`` (IPv6
    subnets over IPv4) with ``ipsec-interface=1`` and ``left/rightinterface-ip=``:
    each end makes ``ipsec1`` (``type xfrm if_id 1``, its own end's address, our alias
    tag) when the first Child SA comes; SAs and policies carry ``if_id 0x1``; no route
    from the daemon and no traffic before the operator routes onto ``ipsec1``; then a
    ping passes and ``ip -s link show ipsec1`` counts it on both ends (and the SAs
    do); ``xb`` shares the device, which outlives ``xa``'s down and goes (on both
    ends) with ``xb``'s delete; up again, SIGTERM leaves no device, SA or policy;
    after a SIGKILL the device is left, and the next start removes it."""
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks(tagged("xfrmi-pair", PAIR), "xfrmi-pair", MODULE)


def test_ipsec_interface_against_libreswan(guest: GuestRun) -> None:
    """West (ours) against Libreswan 4.10 (``ipsec-interface=1`` on both ends;
    Libreswan makes its own ``ipsec1``): a ping routed onto ``ipsec1`` is counted on
    both devices; ``--down`` removes our device; up again passes traffic; SIGTERM
    leaves nothing of ours."""
    require_libreswan("certutil")
    guest.assert_checks(tagged("xfrmi-libreswan", LIBRESWAN), "xfrmi-libreswan", MODULE)
