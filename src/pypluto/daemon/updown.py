"""Updown scripts: ``leftupdown=`` run as Libreswan runs its ``_updown``.

Libreswan calls the conn's updown command at each routing step of a Child SA
with the step in ``PLUTO_VERB`` and the SA's facts in ``PLUTO_*`` environment
variables (ipsec__updown(8); the list below follows the variables Libreswan
4.10's ``_updown.xfrm`` reads).  The verbs are ``prepare``, ``route``, ``up``
when a Child SA comes up and ``down``, ``unroute`` when it goes, each with the
suffix ``-host`` when our end of the SA is this host alone and ``-client``
when it is a subnet behind us.

As in Libreswan, a failing ``prepare``, ``route`` or ``up`` makes the Child
SA fail (the daemon deletes it); a failing ``down`` or ``unroute`` is logged
and nothing else.  Unlike Libreswan the script has a time limit (a hung
script must not hold the daemon's routing forever): on timeout it is killed
and counts as failed.

The values reach the script only through its environment, never spliced into
the command line, so a peer's ID cannot inject shell syntax; the command
itself is the operator's and runs under ``/bin/sh -c`` as in Libreswan, so it
may carry arguments.  ``%disabled`` (or an empty value) runs nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from pypluto.params import IPNetwork, UpdownChild
from pypluto.textsafe import escape, is_clean

__all__ = ["UpdownChild", "Verb", "run_updown", "updown_env", "verb_name"]

DEFAULT_TIMEOUT = 30.0  # seconds; a script that takes longer is killed and fails
MAX_OUTPUT_LINES = 200  # per run; the rest is counted, not logged


class Verb(StrEnum):
    PREPARE = "prepare"
    ROUTE = "route"
    UP = "up"
    DOWN = "down"
    UNROUTE = "unroute"


#: verbs whose failure makes the Child SA fail (Libreswan: the install is undone)
FATAL_VERBS = frozenset({Verb.PREPARE, Verb.ROUTE, Verb.UP})
#: the order of the verbs when a Child SA comes up / goes down
UP_VERBS = (Verb.PREPARE, Verb.ROUTE, Verb.UP)
DOWN_VERBS = (Verb.DOWN, Verb.UNROUTE)


def verb_name(verb: Verb, child: UpdownChild) -> str:
    """``up-client``, ``down-host`` ... as Libreswan spells PLUTO_VERB."""
    return f"{verb.value}-{'host' if child.is_host else 'client'}"


def _mask(net: IPNetwork) -> str:
    return str(net.netmask)


def _peer_text(value: str) -> str:
    """A peer-chosen text (its ID, its CA's name) as the script sees it: unchanged
    unless it holds a control or invisible character, then escaped as in the log
    (``pypluto.textsafe``).  A NUL cannot be passed in an environment at all, and a
    newline or an escape sequence has no business in a script's variables."""
    return value if is_clean(value, 0) else escape(value, 0)


def updown_env(verb: Verb, child: UpdownChild) -> dict[str, str]:
    """The ``PLUTO_*`` variables for one run (without the inherited environment)."""
    family = "ipv6" if child.me.version == 6 else "ipv4"
    env = {
        "PLUTO_VERSION": "2.0",
        "PLUTO_VERB": verb_name(verb, child),
        "PLUTO_CONNECTION": child.conn,
        "PLUTO_CONNECTION_TYPE": child.mode,
        "PLUTO_CONN_KIND": "CK_PERMANENT",
        "PLUTO_CONN_ADDRFAMILY": family,
        "PLUTO_CONN_POLICY": child.policy,
        "PLUTO_SERIAL": str(child.serial),
        "PLUTO_INTERFACE": child.interface,
        "PLUTO_NEXT_HOP": str(child.nexthop if child.nexthop is not None else child.peer),
        "PLUTO_ME": str(child.me),
        "PLUTO_MY_ID": child.my_id,
        "PLUTO_MY_CLIENT": str(child.my_client),
        "PLUTO_MY_CLIENT_NET": str(child.my_client.network_address),
        "PLUTO_MY_CLIENT_MASK": _mask(child.my_client),
        "PLUTO_MY_PORT": str(child.my_port),
        "PLUTO_MY_PROTOCOL": str(child.my_protocol),
        "PLUTO_PEER": str(child.peer),
        "PLUTO_PEER_ID": _peer_text(child.peer_id),
        "PLUTO_PEER_CLIENT": str(child.peer_client),
        "PLUTO_PEER_CLIENT_NET": str(child.peer_client.network_address),
        "PLUTO_PEER_CLIENT_MASK": _mask(child.peer_client),
        "PLUTO_PEER_PORT": str(child.peer_port),
        "PLUTO_PEER_PROTOCOL": str(child.peer_protocol),
        "PLUTO_PEER_CA": _peer_text(child.peer_ca),
        "PLUTO_SA_REQID": str(child.reqid),
        "PLUTO_REQID": str(child.reqid),
        "PLUTO_SA_TYPE": child.sa_type,
        "PLUTO_STACK": child.stack,
        "PLUTO_ADDTIME": str(int(child.add_time)),
        "PLUTO_INBYTES": str(child.inbytes),
        "PLUTO_OUTBYTES": str(child.outbytes),
        "PLUTO_IS_PEER_CISCO": "0",
        "PLUTO_NM_CONFIGURED": "0",
        "SPI_IN": f"0x{child.spi_in:08x}",
        "SPI_OUT": f"0x{child.spi_out:08x}",
    }
    if child.my_sourceip is not None:
        env["PLUTO_MY_SOURCEIP"] = str(child.my_sourceip)
    if child.mtu is not None:  # mtu= / metric= as Libreswan passes them to its _updown
        env["PLUTO_MTU"] = str(child.mtu)
    if child.metric is not None:
        env["PLUTO_METRIC"] = str(child.metric)
    if child.nflog:  # nflog=: the group, as Libreswan passes it (its updown adds the rules)
        env["NFLOG"] = str(child.nflog)
    if child.peer_dns:  # a road warrior's DNS servers from the gateway (RFC 7296 §3.15)
        env["PLUTO_PEER_DNS_INFO"] = " ".join(str(a) for a in child.peer_dns)
    if child.peer_domains:  # its INTERNAL_DNS_DOMAINs (RFC 8598), as Libreswan passes them
        env["PLUTO_PEER_DOMAIN_INFO"] = " ".join(child.peer_domains)
    # ipsec-interface=N (route-based): the device, and "yes" as Libreswan says for an
    # XFRM interface with an if_id; NULL / empty otherwise, as Libreswan
    env["PLUTO_VIRT_INTERFACE"] = child.virt_interface or "NULL"
    env["PLUTO_XFRMI_ROUTE"] = "yes" if child.virt_interface else ""
    if child.mark_in:
        env["PLUTO_MARK_IN"] = child.mark_in
    if child.mark_out:
        env["PLUTO_MARK_OUT"] = child.mark_out
    if child.vti_iface:  # the device exists already (daemon/vti.py made it)
        env["VTI_IFACE"] = child.vti_iface
        env["VTI_ROUTING"] = "yes" if child.vti_routing else "no"
        env["VTI_SHARED"] = "yes" if child.vti_shared else "no"
        if child.vti_ip:
            env["VTI_IP"] = child.vti_ip
    return env


def script_enabled(script: str | None) -> bool:
    """False for an unset updown, an empty one or ``%disabled`` (Libreswan's "no script")."""
    return bool(script and script.strip() and script.strip().lower() != "%disabled")


def script_problem(script: str) -> str | None:
    """Why the script cannot run (missing, not executable), or None.

    Only the first word is checked, and only when it is a path: the command
    runs under ``/bin/sh -c`` and may be a shell builtin or carry arguments.
    """
    first = script.strip().split()[0]
    if "/" not in first:
        return None
    if not os.path.exists(first):
        return f"updown script {first!r} does not exist"
    if not os.access(first, os.X_OK) or os.path.isdir(first):
        return f"updown script {first!r} is not executable"
    return None


@dataclass
class UpdownResult:
    ok: bool
    verb: str
    returncode: int | None  # None: killed (timeout) or never started
    output: list[str]
    error: str = ""  # why it failed, in words


async def run_updown(
    script: str,
    verb: Verb,
    child: UpdownChild,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    base_env: Mapping[str, str] | None = None,
) -> UpdownResult:
    """Run the updown command for ``verb``; never raises for a failing script."""
    name = verb_name(verb, child)
    env = dict(os.environ if base_env is None else base_env)
    env.update(updown_env(verb, child))
    problem = script_problem(script)
    if problem:
        return UpdownResult(False, name, None, [], problem)
    try:
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", script, env=env,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
    except (OSError, ValueError) as e:  # ValueError: a NUL in the command or a value
        return UpdownResult(False, name, None, [], "cannot run updown script: "
                            f"{e.strerror if isinstance(e, OSError) else e}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        _kill_group(proc.pid)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 5.0)
        except TimeoutError:
            out = b""
        return UpdownResult(False, name, None, _lines(out),
                            f"updown script timed out after {timeout:g}s and was killed")
    lines = _lines(out)
    if proc.returncode != 0:
        return UpdownResult(False, name, proc.returncode, lines,
                            f"updown script exited with status {proc.returncode}")
    return UpdownResult(True, name, 0, lines)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _lines(out: bytes | None) -> list[str]:
    text = (out or b"").decode("utf-8", "replace").splitlines()
    if len(text) > MAX_OUTPUT_LINES:
        extra = len(text) - MAX_OUTPUT_LINES
        text = text[:MAX_OUTPUT_LINES] + [f"... ({extra} more lines not logged)"]
    return text


def log_result(res: UpdownResult, log: Callable[[str, str], None]) -> None:
    """Log a run as pluto does: the output lines, then the verdict when it failed."""
    for ln in res.output:
        log(f"{res.verb}: {ln}", "info")
    if not res.ok:
        fatal = res.verb.split("-")[0] in {v.value for v in FATAL_VERBS}
        log(f"{res.verb} failed: {res.error}" + ("; the Child SA fails" if fatal else ""),
            "error" if fatal else "warning")
