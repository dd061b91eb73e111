"""What a pluto killed without a chance to clean up (``kill -9``) leaves in the kernel.

Called once the lock file was found stale (``daemon/lockfile.py``), before the
new run picks its kernel backend, so the leftovers go whichever backend the
new run uses:

* the userspace plane's routing tables and rules (``kernel/userspace/routes.py``:
  ``4500: lookup 4500``, the selective ``4499`` rules into table 70036, the
  ``4498: fwmark 0x4500`` bypass of its own sockets), both families;
* the XFRM states and policies whose reqid lies in our range (the XFRM
  backend's own ``flush_own``), when the kernel has XFRM;
* the userspace plane's inbound cleartext filter (``kernel/userspace/inbound_filter.py``:
  the raw-table chain ``PLUTO-CLR-pluto0`` and its jump), both families: left
  behind, it would keep dropping cleartext for a run that no longer protects it;
* the NFLOG rules of ``nflog=`` and ``nflog-all=`` (``daemon/nflog.py``): in the
  filter table's OUTPUT and INPUT chains, ``-j NFLOG`` matching the plane's TUN device
  or an IPsec policy (``-m policy --pol ipsec``), both families.  Left behind, the
  next run's ``nflog-all=`` added its rules again beside them and removed only its
  own at exit: every packet was logged twice, then once forever;
* the TUN device is not persistent (``kernel/userspace/tun.py``): the kernel
  removed it with the process, nothing to do.

Every step is best effort: a missing ``ip`` or XFRM is not an error.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable

from pypluto.kernel.userspace import iproute
from pypluto.kernel.userspace.backend import DEFAULT_IFNAME
from pypluto.kernel.userspace.backend import DEFAULT_RULE_PRIORITY as USERSPACE_RULE_PRIORITY
from pypluto.kernel.userspace.backend import DEFAULT_TABLE as USERSPACE_TABLE
from pypluto.kernel.userspace.inbound_filter import chain_name, remove_chain
from pypluto.kernel.userspace.routes import Routes


def _rules(version: int) -> list[dict[str, object]]:
    try:
        r = subprocess.run([iproute.IP, "-j", iproute.fam(version), "rule", "show"],
                           capture_output=True, text=True, timeout=10, check=False)
        return list(json.loads(r.stdout or "[]"))
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def remove_userspace_leftovers(table: int = USERSPACE_TABLE,
                               priority: int = USERSPACE_RULE_PRIORITY) -> list[str]:
    """Flush our routing tables and delete our rules; returns what was removed.

    The plane's own ``Routes.remove_all`` knows every table and rule it may add
    (the generic rule, the selective one for port-limited policies, the bypass
    for its own marked sockets); this only counts what was there first.
    """
    routes = Routes(DEFAULT_IFNAME, table, priority)
    removed: list[str] = []
    for v in (4, 6):
        n = sum(len(iproute.routes_in_table(v, t)) for t in (table, routes.sel_table))
        if n:
            removed.append(f"{n} IPv{v} route(s) in tables {table}/{routes.sel_table}")
        rules = [r for r in _rules(v) if r.get("priority") in
                 (priority, priority - 1, priority - 2)]
        if rules:
            removed.append(f"{len(rules)} IPv{v} rule(s) at priorities "
                           f"{priority - 2}-{priority}")
    if removed:
        routes.remove_all()
    chain = chain_name(DEFAULT_IFNAME)
    removed += [f"the IPv{v} inbound cleartext filter {chain}" for v in (4, 6)
                if remove_chain(chain, v)]
    return removed


def _nflog_rule_is_ours(args: list[str]) -> bool:
    """A rule (``iptables -S`` words after ``-A CHAIN``) as ``daemon/nflog.py`` adds them."""
    if "NFLOG" not in args or args[args.index("NFLOG") - 1] != "-j":
        return False
    dev = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "-i")]
    return dev == [DEFAULT_IFNAME] or ("policy" in args and "--pol" in args[:-1]
                                       and args[args.index("--pol") + 1] == "ipsec")


def remove_nflog_leftovers() -> list[str]:
    """The NFLOG rules of ``nflog=`` / ``nflog-all=`` a killed run left; what was removed."""
    removed: list[str] = []
    for version, name in ((4, "iptables"), (6, "ip6tables")):
        tool = shutil.which(name)
        if tool is None:
            continue
        n = 0
        for chain in ("OUTPUT", "INPUT"):
            try:
                r = subprocess.run([tool, "-w", "-S", chain], capture_output=True, text=True,
                                   timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                continue
            for line in r.stdout.splitlines():
                try:
                    words = shlex.split(line)
                except ValueError:
                    continue
                if words[:2] != ["-A", chain] or not _nflog_rule_is_ours(words[2:]):
                    continue
                with contextlib.suppress(OSError, subprocess.SubprocessError):
                    d = subprocess.run([tool, "-w", "-D", chain, *words[2:]],
                                       capture_output=True, timeout=10, check=False)
                    n += d.returncode == 0
        if n:
            removed.append(f"{n} IPv{version} NFLOG rule(s)")
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
    removed = remove_userspace_leftovers() + remove_xfrm_leftovers() + \
        remove_nflog_leftovers()
    for what in removed:
        log(f"removed leftover of a pluto that did not exit cleanly: {what}")
    return removed


__all__ = ["USERSPACE_RULE_PRIORITY", "USERSPACE_TABLE", "remove_crash_leftovers",
           "remove_nflog_leftovers", "remove_userspace_leftovers", "remove_xfrm_leftovers"]
