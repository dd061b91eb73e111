"""iproute2's ``ip`` for the userspace data plane: run it, read addresses and rules.

What the plane installs with it (its tables, capture rules and the socket-mark
bypass for its own IKE/ESP packets) is described in :mod:`.routes`.
Control-plane only: nothing here is on the per-packet path.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

from pypluto.kernel.base import BackendError
from pypluto.params import IPAddress

IP = shutil.which("ip") or "/usr/sbin/ip"


def ip(*args: str, check: bool = True) -> bool:
    """Run ``ip ARGS``; raise BackendError (or return False when not ``check``) on failure."""
    try:
        r = subprocess.run([IP, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        if check:
            raise BackendError(f"ip {' '.join(args)}: {e}") from None
        return False
    if r.returncode != 0:
        if check:
            raise BackendError(f"ip {' '.join(args)}: {r.stderr.strip()}")
        return False
    return True


def fam(version: int) -> str:
    return "-6" if version == 6 else "-4"


def local_addresses() -> list[IPAddress]:
    """Every address configured on this host (namespace)."""
    try:
        r = subprocess.run([IP, "-j", "addr", "show"], capture_output=True, text=True,
                           timeout=10)
        links = json.loads(r.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    out: list[IPAddress] = []
    for link in links:
        for a in link.get("addr_info", []):
            try:
                out.append(ipaddress.ip_address(a["local"]))
            except (KeyError, ValueError):
                continue
    return out


def rules(version: int) -> list[dict[str, object]]:
    """``ip -j rule show`` for one family (empty if it cannot be read)."""
    try:
        r = subprocess.run([IP, "-j", fam(version), "rule", "show"], capture_output=True,
                           text=True, timeout=10)
        return list(json.loads(r.stdout or "[]"))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []


def rule_exists(version: int, table: int, priority: int) -> bool:
    return any(str(x.get("table")) == str(table) and x.get("priority") == priority
               for x in rules(version))


def routes_in_table(version: int, table: int) -> list[dict[str, object]]:
    try:
        r = subprocess.run([IP, "-j", fam(version), "route", "show", "table", str(table)],
                           capture_output=True, text=True, timeout=10)
        return list(json.loads(r.stdout or "[]"))
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
