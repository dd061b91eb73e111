"""mark= / mark-in= / mark-out= for real, inside a kernel with ESP (User-Mode Linux).

One UML boot (``tools/run-in-esp-kernel.sh``) runs ``guest_mark.py``: two conns with
the same selectors and different marks, between two of our daemons and between
ours and Libreswan 4.10 (issue 12 item 6; issue 16 "mark= conns coexist"), and a
marked auto=route trap.  Missing UML or kmod fails in CI (``require``) and skips
elsewhere.
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
GUEST = REPO / "tests" / "espkernel" / "guest_mark.py"

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


@dataclass
class GuestRun:
    rc: int
    output: str
    seconds: float

    def assert_checks(self, tag: str, checks: list[str] = CHECKS) -> None:
        assert self.rc != 125, f"the ESP kernel did not run the guest:\n{self.output[-3000:]}"
        expected = [f"{tag}-{c}" for c in checks]
        passed = set(re.findall(r"CHECK (\S+): OK", self.output))
        failed = [f for f in re.findall(r"CHECK (\S+): FAILED", self.output)
                  if f in expected or f == tag]
        assert not failed, f"failed in the ESP kernel: {failed}\n{self.output[-5000:]}"
        missing = [c for c in expected if c not in passed]
        assert not missing, f"checks that did not run: {missing}\n{self.output[-5000:]}"


def uml_available() -> bool:
    return (os.path.exists("/usr/bin/linux.uml") and os.path.isdir("/usr/lib/uml/modules")
            and (shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe")))


@pytest.fixture(scope="module")
def guest() -> GuestRun:
    """One UML boot for every scenario (process creation is slow in UML)."""
    require(is_root(), "root (the UML guest runs as root on the host's files)")
    require(uml_available(), "user-mode-linux and kmod (apt-get install user-mode-linux kmod)")
    require(shutil.which("iptables-legacy") is not None,
            "iptables-legacy (package iptables): marks inbound ESP in the guest")
    started = time.monotonic()
    res = subprocess.run([str(RUNNER), sys.executable, str(GUEST)], capture_output=True,
                         text=True, timeout=400, cwd=REPO,
                         env={**os.environ, "PPESPK_TIMEOUT": "380"})
    return GuestRun(res.returncode, res.stdout + res.stderr, time.monotonic() - started)


def test_marked_conns_coexist_and_carry_their_traffic(guest: GuestRun) -> None:
    """Two of our daemons (--use-xfrm): conn A (mark=1) and conn B (mark-in=0x22,
    mark-out=0x21) with the same selectors are both up; the kernel holds both SA pairs
    and policy sets with their marks; ``ping -m 1`` counts on A's SAs only, ``ping -m
    0x21`` on B's only, unmarked traffic on neither; ``--trafficstatus`` counts both;
    B's rekey keeps its marks and deletes the old (marked) SAs; A's down leaves B
    working; the shutdown leaves no SA, policy or mark."""
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks("mark-pair")


def test_marked_conns_against_libreswan(guest: GuestRun) -> None:
    """The same against Libreswan 4.10 (``mark=1/0xffffffff``, ``mark=2/0xffffffff``):
    both Child SAs, marked traffic through the SA of its mark, both ways."""
    require(os.access("/usr/libexec/ipsec/pluto", os.X_OK),
            "Libreswan 4.10 (tools/install-libreswan.sh)")
    require(shutil.which("certutil") is not None, "certutil (libnss3-tools)")
    guest.assert_checks("mark-libreswan")


def test_marked_trap_acquires_only_for_marked_traffic(guest: GuestRun) -> None:
    """auto=route with mark=1 (issue 16): the trap policy is marked, an unmarked ping
    raises no ACQUIRE, a ``ping -m 1`` does and brings up a marked Child SA that then
    carries marked traffic; down keeps the marked trap; shutdown leaves nothing."""
    guest.assert_checks("mark-route", ROUTE)
