"""AH (RFC 4302) through the Linux kernel, cross-checked with ``pypluto.kernel.ah``.

One UML boot (``tools/run-in-esp-kernel.sh``) runs ``guest_ah.py``: hand-keyed
AH SAs between two namespaces (our XfrmBackend, and ``ip xfrm`` for the ESN
wrap), pings with ``ip -s xfrm state`` counters, a tcpdump capture of
protocol 51, the kernel's AH packets verified by our code and ours accepted
(and a forged ICV refused) by the kernel.  Missing UML or kmod fails in CI
(``require``) and skips elsewhere.
"""

from __future__ import annotations

import re

import pytest
from umlboot import GuestRun, boot, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CASES = [
    ("v4-tunnel-sha1", True),
    ("v4-transport-sha256-esn", True),
    ("v4-tunnel-xcbc", True),
    ("v4-tunnel-cmac", True),
    ("v6-tunnel-sha512", True),
    ("v6-transport-sha384", True),
    ("v6-tunnel-sha256-esn", True),
    ("v4-tunnel-sha256-esn-wrap", False),
]
COMMON = ["ping", "ip-s-xfrm-counters", "capture-proto-51", "kernel-icv-verified-by-pypluto",
          "pypluto-packet-accepted-by-kernel", "bad-icv-rejected-by-kernel"]


def expected() -> list[str]:
    out = []
    for name, ours in CASES:
        out += [f"ah-{name}-{c}" for c in COMMON]
        if ours:
            out.append(f"ah-{name}-kernel-view")
        if name.startswith("v4"):
            out.append(f"ah-{name}-ipv4-ah-32-bit-aligned")
    pre = "ah-v4-tunnel-sha256-esn-align8-"
    out += [pre + c for c in ("ping", "ip-s-xfrm-counters", "capture-proto-51",
                              "kernel-icv-verified-by-pypluto", "linux-pads-ipv4-ah-to-64-bits")]
    return out


@uml_fixture("ah_guest", expect=26)
def ah_guest() -> GuestRun:
    return boot("guest_ah.py", timeout=300)  # (the runner's default)


def test_ah_kernel_and_pypluto_agree(ah_guest: GuestRun) -> None:
    """Hand-keyed AH in the ESP kernel: pings, counters, protocol 51 on the wire, and
    each side's ICV verified by the other (HMAC-SHA1/SHA2, XCBC, CMAC; IPv4/IPv6;
    tunnel/transport; ESN across the 2^32 wrap)."""
    print(f"UML run took {ah_guest.seconds:.1f}s")
    print("\n".join(re.findall(r"scenario \S+ took [\d.]+s", ah_guest.output)))
    want = expected()
    ah_guest.assert_checks(want, "ah")
    assert "ALL AH GUEST CHECKS PASSED" in ah_guest.output and ah_guest.rc == 0, \
        ah_guest.output[-3000:]
