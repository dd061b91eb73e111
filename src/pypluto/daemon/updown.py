"""Updown scripts: ``leftupdown=`` run as Libreswan runs its ``_updown``.

Libreswan calls the conn's updown command at each routing step of a Child SA
with the step in ``PLUTO_VERB`` and the SA's facts in ``PLUTO_*`` environment
variables (ipsec__updown(8); the names and formats are Libreswan 5.2's, see
``updown_env``).  The verbs are ``prepare``, ``route``, ``up`` when a Child SA
comes up and ``down``, ``unroute`` when it goes (a rekey runs nothing); for a
routed on-demand conn ``prepare``, ``route`` when it is routed (no Child SA:
``PLUTO_SA_TYPE=none``), ``prepare``, ``up`` / ``down`` with each Child SA and
``unroute`` when it is unrouted, as 5.2 runs them; each with the
suffix ``-host`` when our end of the SA is this host alone and ``-client``
when it is a subnet behind us; Libreswan 5.2 adds ``-v6`` when that address
(ours for ``-host``, the subnet's for ``-client``) is IPv6 (``up-client-v6``).

As in Libreswan 5.2, a failing ``route`` or ``up`` makes the Child SA fail
(the daemon deletes it); a failing ``prepare`` (5.2 only logs it, then goes
on with ``route``), ``down`` or ``unroute`` is logged and nothing else; a
failing ``route`` of an on-demand conn unroutes it again.  Unlike Libreswan
the script has a time limit (a hung script must not hold the daemon's routing
forever): on timeout it is killed and counts as failed.

The values reach the script only through its environment, never spliced into
the command line, so a peer's ID cannot inject shell syntax; the command
itself is the operator's and runs under ``/bin/sh -c`` as in Libreswan, so it
may carry arguments (a quoted path may hold spaces).  ``%disabled`` (or an
empty value) runs nothing, and so does Libreswan's default ``ipsec _updown``
written out: what it does (routes, policies) the daemon does itself.

When a MOBIKE client's address goes away, ``down`` and ``unroute`` (the latter
with ``PLUTO_MOBIKE_EVENT=yes``) run for its SAs, and ``route``, ``up`` with the
new addresses once the peer answered the update (Libreswan 5.2's suspend and
resume); the SAs stay, and a failure there fails nothing.
"""

from __future__ import annotations

import asyncio
import os
import shlex
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


#: verbs whose failure makes the Child SA fail (Libreswan 5.2: the install is undone;
#: a failing prepare is only logged there, and route runs after it all the same)
FATAL_VERBS = frozenset({Verb.ROUTE, Verb.UP})
#: the order of the verbs when a Child SA comes up / goes down
UP_VERBS = (Verb.PREPARE, Verb.ROUTE, Verb.UP)
DOWN_VERBS = (Verb.DOWN, Verb.UNROUTE)


def verb_name(verb: Verb, child: UpdownChild) -> str:
    """``up-client``, ``down-host-v6`` ... as Libreswan 5.2 spells PLUTO_VERB: ``-host``
    (``-host-v6`` for an IPv6 host address) when our end is this host alone, else
    ``-client`` (``-client-v6`` for an IPv6 subnet)."""
    if child.is_host:
        return f"{verb.value}-host" + ("-v6" if child.me.version == 6 else "")
    return f"{verb.value}-client" + ("-v6" if child.my_client.version == 6 else "")


def _mask(net: IPNetwork) -> str:
    return str(net.netmask)


def _peer_text(value: str) -> str:
    """A peer-chosen text (its ID, its CA's name) as the script sees it: unchanged
    unless it holds a control or invisible character, then escaped as in the log
    (``pypluto.textsafe``).  A NUL cannot be passed in an environment at all, and a
    newline or an escape sequence has no business in a script's variables."""
    return value if is_clean(value, 0) else escape(value, 0)


def _spi(spi: int) -> str:
    return f"0x{spi:x}"  # Libreswan 5.2: 0x%x, no zero padding


def _family(version: int) -> str:
    return "ipv6" if version == 6 else "ipv4"


def updown_env(verb: Verb, child: UpdownChild) -> dict[str, str]:
    """The ``PLUTO_*`` variables for one run (without the inherited environment).

    The names and value formats are those of Libreswan 5.2's ``fmt_common_shell_out``;
    the variables it always sets are always set here too (empty, ``0`` or ``no``
    when they do not apply), so that a script run with ``set -u`` works unchanged.
    Differences, on purpose:

    - ``SPI_IN`` is the SPI of the inbound SA (the one we chose) and ``SPI_OUT`` the
      peer's, as ipsec__updown(8) documents them; 5.2 passes them swapped.
    - ``PLUTO_USERNAME`` and ``XAUTH_FAILED=1`` are IKEv1 XAUTH's: never set / ``0``.
    - ``PLUTO_VERSION``, ``PLUTO_SERIAL``, ``PLUTO_REQID``, ``PLUTO_MARK_IN`` and
      ``PLUTO_MARK_OUT`` are ours (older Libreswan, or pypluto's own): kept for
      existing scripts.
    """
    env = {
        "PLUTO_VERSION": "2.0",
        "PLUTO_VERB": verb_name(verb, child),
        "PLUTO_CONNECTION": child.conn,
        "PLUTO_CONNECTION_TYPE": child.mode,
        "PLUTO_VIRT_INTERFACE": child.virt_interface or "NULL",
        "PLUTO_INTERFACE": child.interface or "NULL",
        # an XFRM interface with an if_id (ipsec-interface=N, N > 0): "yes", else ""
        "PLUTO_XFRMI_ROUTE": "yes" if child.virt_interface and child.if_id > 0 else "",
        "PLUTO_CONN_KIND": child.conn_kind,
        "PLUTO_CONN_ADDRFAMILY": _family(child.me.version),
        "PLUTO_CLIENT_FAMILY": _family(child.my_client.version),
        "PLUTO_CONN_POLICY": child.policy,
        "PLUTO_SERIAL": str(child.serial),
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
        "XAUTH_FAILED": "0",
        "PLUTO_IS_PEER_CISCO": "0",
        # a road warrior's DNS servers and INTERNAL_DNS_DOMAINs from the gateway
        # (RFC 7296 §3.15, RFC 8598), space separated; "" when none, as Libreswan
        "PLUTO_PEER_DNS_INFO": " ".join(str(a) for a in child.peer_dns),
        "PLUTO_PEER_DOMAIN_INFO": " ".join(child.peer_domains),
        "PLUTO_PEER_BANNER": "",  # IKEv1 mode config only
        "PLUTO_CFG_SERVER": "1" if child.cfg_server else "0",
        "PLUTO_CFG_CLIENT": "1" if child.cfg_client else "0",
        "PLUTO_NM_CONFIGURED": "0",
        # vti-interface= (the device exists already: daemon/vti.py made it); "" / no / no
        # for a conn without one, as Libreswan
        "VTI_IFACE": child.vti_iface,
        "VTI_ROUTING": "yes" if child.vti_iface and child.vti_routing else "no",
        "VTI_SHARED": "yes" if child.vti_iface and child.vti_shared else "no",
        "SPI_IN": _spi(child.spi_in),
        "SPI_OUT": _spi(child.spi_out),
    }
    if child.my_sourceip is not None:
        env["PLUTO_MY_SOURCEIP"] = str(child.my_sourceip)
        # 5.2 sets it with a source IP and a Child SA: "yes" for the unroute of a MOBIKE move
        if child.serial:
            env["PLUTO_MOBIKE_EVENT"] = "yes" if child.mobike_event else ""
    if child.mtu is not None:  # mtu= / metric= as Libreswan passes them to its _updown
        env["PLUTO_MTU"] = str(child.mtu)
    if child.metric is not None:
        env["PLUTO_METRIC"] = str(child.metric)
    if child.nflog:  # nflog=: the group, as Libreswan passes it (its updown adds the rules)
        env["NFLOG"] = str(child.nflog)
    if child.vti_iface and child.vti_ip:
        env["VTI_IP"] = child.vti_ip
    if child.interface_ip:  # leftinterface-ip= (ipsec-interface=)
        env["INTERFACE_IP"] = child.interface_ip
    # mark= / mark-in= / mark-out=: value/mask of the installed marks (CONNMARK_* as
    # Libreswan 5.2, which leaves a zero value out; PLUTO_MARK_* our older names)
    if child.mark_in:
        env["PLUTO_MARK_IN"] = child.mark_in
        if not child.mark_in.startswith("0/"):
            env["CONNMARK_IN"] = child.mark_in
    if child.mark_out:
        env["PLUTO_MARK_OUT"] = child.mark_out
        if not child.mark_out.startswith("0/") and not child.virt_interface:
            env["CONNMARK_OUT"] = child.mark_out
    if child.virt_interface:  # the output mark of an XFRM interface, as Libreswan 5.2
        if child.mark_out and not child.mark_out.startswith("0/"):
            env["PLUTO_XFRMI_FWMARK"] = child.mark_out
        elif child.peer in child.peer_client:
            env["PLUTO_XFRMI_FWMARK"] = f"{child.if_id}/0xffffffff"
        else:
            env["PLUTO_XFRMI_FWMARK"] = ""
    return env


def script_enabled(script: str | None) -> bool:
    """False for an unset updown, an empty one or ``%disabled`` (Libreswan's "no script"),
    and for Libreswan's default ``ipsec _updown`` written out: the daemon does its work."""
    words = (script or "").split()
    return bool(words) and words[0].lower() != "%disabled" and words != ["ipsec", "_updown"]


def script_problem(script: str) -> str | None:
    """Why the script cannot run (missing, not executable), or None.

    Only the first word is checked, and only when it is a path: the command
    runs under ``/bin/sh -c`` and may be a shell builtin or carry arguments.
    """
    try:  # the first word as the shell sees it: a quoted path may hold spaces
        words = shlex.split(script)
    except ValueError:  # unbalanced quotes: /bin/sh will say what is wrong
        return None
    first = words[0] if words else ""
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


def log_result(res: UpdownResult, log: Callable[[str, str], None], sa: bool = True) -> None:
    """Log a run as pluto does: the output lines, then the verdict when it failed.
    ``sa``: the run is for a Child SA (else for routing an on-demand conn)."""
    for ln in res.output:
        log(f"{res.verb}: {ln}", "info")
    if not res.ok:
        fatal = res.verb.split("-")[0] in {v.value for v in FATAL_VERBS}
        what = "; the Child SA fails" if sa else "; the connection is unrouted"
        log(f"{res.verb} failed: {res.error}" + (what if fatal else ""),
            "error" if fatal else "warning")
