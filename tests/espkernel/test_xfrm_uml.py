"""The XFRM backend for real, inside a kernel with ESP (User-Mode Linux).

One UML boot (``tools/run-in-esp-kernel.sh``) runs ``guest_xfrm.py``, which
does all guest-side work in one process and prints a ``CHECK name: OK`` line
per check.  Here we assert every expected check passed.  Missing UML or kmod
fails in CI (``require``) and skips elsewhere.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import REPO, is_root, require

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

RUNNER = REPO / "tools" / "run-in-esp-kernel.sh"
GUEST = REPO / "tests" / "espkernel" / "guest_xfrm.py"

EXPECTED = [
    "allocspi",
    "gcm-esn-kernel-view",
    "ping-ipv4-tunnel-gcm-esn",
    "get_sa_stats-counters",
    "ip-s-xfrm-state-counters",
    "counters-rise",
    "policy-blocks-without-sa",
    "del_sa-del_policy",
    "cbc-sha256-trunc-128",
    "lifetimes",
    "ping-ipv4-tunnel-cbc-sha256",
    "cbc-counters",
    "chacha-kernel-view",
    "ping-ipv6-tunnel-chacha20poly1305",
    "ipv6-counters",
    "ping-ipv4-in-ipv6-tunnel",
    "transport-kernel-view",
    "ping-ipv4-transport",
    "transport-counters",
    "natt-kernel-view",
    "ping-ipv4-esp-in-udp",
    "natt-counters",
    "natt-esp-consumed-by-kernel",
    "expire-events",
    "hard-expired-sa-gone",
    "bad-sa-clear-errors",
    "add_sa-twice-updates",
    "crash-child-installed",
    "crash-leftovers-found",
    "flush_own-leaves-foreign-only",
]


def uml_available() -> bool:
    return (
        os.path.exists("/usr/bin/linux.uml")
        and os.path.isdir("/usr/lib/uml/modules")
        and (shutil.which("modprobe") is not None or os.path.exists("/usr/sbin/modprobe"))
    )


def test_xfrm_backend_in_esp_kernel() -> None:
    require(is_root(), "root (the UML guest runs as root on the host's files)")
    require(uml_available(), "user-mode-linux and kmod (apt-get install user-mode-linux kmod)")
    started = time.monotonic()
    res = subprocess.run(
        [str(RUNNER), sys.executable, str(GUEST)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PPESPK_TIMEOUT": "240"},
    )
    took = time.monotonic() - started
    out = res.stdout + res.stderr
    print(out)
    print(f"UML run took {took:.1f}s")
    assert res.returncode != 125, f"the ESP kernel did not run the guest:\n{out[-3000:]}"
    passed = set(re.findall(r"CHECK (\S+): OK", out))
    failed = re.findall(r"CHECK (\S+): FAILED", out)
    assert not failed, f"failed in the ESP kernel: {failed}\n{out[-4000:]}"
    missing = [c for c in EXPECTED if c not in passed]
    assert not missing, f"checks that did not run: {missing}\n{out[-4000:]}"
    assert res.returncode == 0 and "ALL XFRM GUEST CHECKS PASSED" in out, out[-4000:]
