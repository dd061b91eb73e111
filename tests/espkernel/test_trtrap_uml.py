"""Transport mode, host to host, with a trap (``auto=route``), in a kernel with ESP (UML).

The userspace plane has ``tests/daemon/test_ondemand.py::test_transport_host_to_host_trap``;
this is the XFRM plane (issue 16).  One UML boot (``tools/run-in-esp-kernel.sh``)
runs ``guest_trtrap.py``: our ``pluto --use-xfrm`` west, ``type=transport``, no
subnets, ``auto=route``; the east end ``auto=add``, first a second pypluto, then
Libreswan 4.10.  Missing UML, kmod or Libreswan fails in CI (``require``) and
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
GUEST = REPO / "tests" / "espkernel" / "guest_trtrap.py"

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


@dataclass
class GuestRun:
    rc: int
    output: str
    seconds: float

    def assert_checks(self, tag: str) -> None:
        assert self.rc != 125, f"the ESP kernel did not run the guest:\n{self.output[-3000:]}"
        expected = [f"{tag}-{c}" for c in CHECKS]
        passed = set(re.findall(r"CHECK (\S+): OK", self.output))
        failed = [f for f in re.findall(r"CHECK (\S+): FAILED", self.output)
                  if f in expected or f == tag or f == "trtrap-libreswan-present"]
        assert not failed, f"failed in the ESP kernel: {failed}\n{self.output[-5000:]}"
        missing = [c for c in expected if c not in passed]
        assert not missing, f"checks that did not run: {missing}\n{self.output[-5000:]}"


def uml_available() -> bool:
    return (os.path.exists("/usr/bin/linux.uml") and os.path.isdir("/usr/lib/uml/modules")
            and (shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe")))


@pytest.fixture(scope="module")
def guest() -> GuestRun:
    """One UML boot for both east ends (about 30 s)."""
    require(is_root(), "root (the UML guest runs as root on the host's files)")
    require(uml_available(), "user-mode-linux and kmod (apt-get install user-mode-linux kmod)")
    require(os.access("/usr/libexec/ipsec/pluto", os.X_OK),
            "Libreswan 4.10 (apt-get install libreswan)")
    started = time.monotonic()
    res = subprocess.run([str(RUNNER), sys.executable, str(GUEST)], capture_output=True,
                         text=True, timeout=300, cwd=REPO,
                         env={**os.environ, "PPESPK_TIMEOUT": "280"})
    return GuestRun(res.returncode, res.stdout + res.stderr, time.monotonic() - started)


def test_transport_host_to_host_trap_xfrm(guest: GuestRun) -> None:
    """pypluto both ends: west ``auto=route`` installs only a transport-mode trap
    policy (no SA); the first ping raises the kernel's ACQUIRE, we initiate, both ends
    show the same two transport-mode ESP SAs, later pings pass both ways;
    ``--unroute`` + ``--delete`` leave no policy or state, SIGTERM leaves nothing."""
    print(f"UML run took {guest.seconds:.1f}s")
    print("\n".join(re.findall(r"trtrap-\S+: first trigger.*", guest.output)))
    guest.assert_checks("trtrap-pp")


def test_transport_host_to_host_trap_toward_libreswan(guest: GuestRun) -> None:
    """The same with Libreswan 4.10 as the ``auto=add`` east end."""
    guest.assert_checks("trtrap-ls")
