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
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from testsupport import REPO, is_root, require

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

RUNNER = REPO / "tools" / "run-in-esp-kernel.sh"
BUILD = REPO / "tools" / "build-uml-xfrmi.sh"
GUEST = REPO / "tests" / "espkernel" / "guest_xfrmi.py"

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

LIBRESWAN = [
    "both-ends-have-ipsec1",
    "ping-routed-onto-ipsec1",
    "down-removes-our-device",
    "up-again-passes-traffic",
    "nothing-left-after-sigterm",
]


@dataclass
class GuestRun:
    rc: int
    output: str
    seconds: float

    def assert_checks(self, tag: str, checks: list[str]) -> None:
        assert self.rc != 125, f"the ESP kernel did not run the guest:\n{self.output[-3000:]}"
        expected = [f"{tag}-{c}" for c in checks]
        passed = set(re.findall(r"CHECK (\S+): OK", self.output))
        failed = [f for f in re.findall(r"CHECK (\S+): FAILED", self.output)
                  if f in expected or f in (tag, "xfrmi-module-loads")]
        assert not failed, f"failed in the ESP kernel: {failed}\n{self.output[-5000:]}"
        missing = [c for c in expected if c not in passed]
        assert not missing, f"checks that did not run: {missing}\n{self.output[-5000:]}"


def uml_available() -> bool:
    return (os.path.exists("/usr/bin/linux.uml") and os.path.isdir("/usr/lib/uml/modules")
            and (shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe")))


def build_module() -> tuple[str | None, str]:
    """(path of xfrm_interface.ko, or None; the builder's output)."""
    res = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=900, cwd=REPO)
    path = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else ""
    ok = res.returncode == 0 and path.endswith(".ko") and os.path.exists(path)
    return (path if ok else None), res.stdout + res.stderr


@pytest.fixture(scope="module")
def guest() -> GuestRun:
    """Build (first use) and load the module, then one UML boot for every scenario."""
    require(is_root(), "root (the UML guest runs as root on the host's files)")
    require(uml_available(), "user-mode-linux and kmod (apt-get install user-mode-linux kmod)")
    ko, out = build_module()
    require(ko is not None, f"xfrm_interface.ko for the UML kernel "
            f"(tools/build-uml-xfrmi.sh failed: {out.strip()[-800:]})")
    assert ko is not None
    started = time.monotonic()
    res = subprocess.run([str(RUNNER), sys.executable, str(GUEST), ko], capture_output=True,
                         text=True, timeout=500, cwd=REPO,
                         env={**os.environ, "PPESPK_TIMEOUT": "480"})
    return GuestRun(res.returncode, res.stdout + res.stderr, time.monotonic() - started)


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
    guest.assert_checks("xfrmi-pair", PAIR)


def test_ipsec_interface_against_libreswan(guest: GuestRun) -> None:
    """West (ours) against Libreswan 4.10 (``ipsec-interface=1`` on both ends;
    Libreswan makes its own ``ipsec1``): a ping routed onto ``ipsec1`` is counted on
    both devices; ``--down`` removes our device; up again passes traffic; SIGTERM
    leaves nothing of ours."""
    require(os.access("/usr/libexec/ipsec/pluto", os.X_OK),
            "Libreswan 4.10 (tools/install-libreswan.sh)")
    require(shutil.which("certutil") is not None, "certutil (libnss3-tools)")
    guest.assert_checks("xfrmi-libreswan", LIBRESWAN)
