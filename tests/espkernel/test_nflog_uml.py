"""nflog= for real on the XFRM plane, inside a kernel with ESP (UML).

One UML boot runs ``guest_nflog.py``: two of our daemons with ``--use-xfrm``, west
with ``nflog=5``: Libreswan's NFLOG rules (``-m policy --pol ipsec``), a ping's
cleartext on ``nflog:5`` both ways, the rules gone after ``--down``.  Missing UML
fails in CI (``require``) and skips elsewhere.
"""

from __future__ import annotations

import pytest
from umlboot import GuestRun, boot, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

CHECKS = ["nflog-child-sa-up", "nflog-rules-are-libreswans", "nflog-cleartext-both-ways",
          "nflog-rules-gone-after-down"]
MODULES = "ip_tables iptable_filter xt_policy xt_NFLOG nfnetlink_log"


@uml_fixture("guest", expect=21)
def guest() -> GuestRun:
    return boot("guest_nflog.py", timeout=240, modules=MODULES)


def test_nflog_rules_and_cleartext_on_xfrm(guest: GuestRun) -> None:
    print(f"UML run took {guest.seconds:.1f}s")
    guest.assert_checks(CHECKS, "nflog")
