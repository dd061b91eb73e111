"""What a pluto killed without a chance to clean up (``kill -9``) leaves in the kernel.

Called once the lock file was found stale (``daemon/lockfile.py``), before the
new run picks its kernel backend, so the leftovers go whichever backend the
new run uses:

* the userspace plane's routing table (``DEFAULT_TABLE``, its routes and throw
  routes) and the rule that looks it up (``4500: from all lookup 4500``), both
  families (``kernel/userspace/iproute.py``);
* the XFRM states and policies whose reqid lies in our range (the XFRM
  backend's own ``flush_own``), when the kernel has XFRM;
* the TUN device is not persistent (``kernel/userspace/tun.py``): the kernel
  removed it with the process, nothing to do.

Every step is best effort: a missing ``ip`` or XFRM is not an error.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable

from pypluto.kernel.userspace import iproute
from pypluto.kernel.userspace.backend import DEFAULT_RULE_PRIORITY as USERSPACE_RULE_PRIORITY
from pypluto.kernel.userspace.backend import DEFAULT_TABLE as USERSPACE_TABLE


def _rules(version: int) -> list[dict[str, object]]:
    try:
        r = subprocess.run([iproute.IP, "-j", iproute.fam(version), "rule", "show"],
                           capture_output=True, text=True, timeout=10, check=False)
        return list(json.loads(r.stdout or "[]"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def remove_userspace_leftovers(table: int = USERSPACE_TABLE,
                               priority: int = USERSPACE_RULE_PRIORITY) -> list[str]:
    """Flush our routing table and delete our lookup rules; returns what was removed."""
    removed: list[str] = []
    for v in (4, 6):
        fam = iproute.fam(v)
        routes = iproute.routes_in_table(v, table)
        if routes:
            iproute.ip(fam, "route", "flush", "table", str(table), check=False)
            removed.append(f"{len(routes)} IPv{v} route(s) in table {table}")
        n = sum(1 for r in _rules(v)
                if str(r.get("table")) == str(table) and r.get("priority") == priority)
        for _ in range(n):
            iproute.ip(fam, "rule", "del", "priority", str(priority), "table", str(table),
                       check=False)
        if n:
            removed.append(f"IPv{v} rule '{priority}: lookup {table}'")
    return removed


def remove_xfrm_leftovers() -> list[str]:
    """Our XFRM states and policies (reqid range of instance 0); nothing without XFRM."""
    try:
        from pypluto.kernel.xfrm.backend import XfrmBackend
    except ImportError:
        return []
    try:
        xb = XfrmBackend()
    except Exception:  # noqa: BLE001 - no XFRM in this kernel
        return []
    removed: list[str] = []
    try:
        n_pol, n_sa = len(xb.list_policies()), len(xb.list_sas())
        if n_pol or n_sa:
            xb.flush_own()
            removed.append(f"{n_sa} XFRM state(s) and {n_pol} XFRM policy(ies)")
    except Exception:  # noqa: BLE001 - best effort
        pass
    finally:
        with contextlib.suppress(Exception):
            xb.close()
    return removed


def remove_crash_leftovers(log: Callable[[str], None]) -> list[str]:
    """Remove everything a killed pluto installed; logs and returns what was found."""
    removed = remove_userspace_leftovers() + remove_xfrm_leftovers()
    for what in removed:
        log(f"removed leftover of a pluto that did not exit cleanly: {what}")
    return removed


__all__ = ["USERSPACE_RULE_PRIORITY", "USERSPACE_TABLE", "remove_crash_leftovers",
           "remove_userspace_leftovers", "remove_xfrm_leftovers"]
