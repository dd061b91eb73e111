"""On-demand tunnels: trap policies and the acquires they raise (``auto=route``/``ondemand``).

A *routed* connection has an outbound policy installed before any SA exists: the
same policy its Child SA would install (RFC 4301 §4.4.1: selectors, the ESP
template, the reqid), so that when the first packet matches it the data plane
reports an ``SAAcquire`` (XFRM_MSG_ACQUIRE, or a packet on the TUN) and the engine
negotiates.  When the Child SA goes away the trap stays (the conn reverts to
"routed"); ``unroute`` removes it.

Bounded work: an acquire for a conn that is up or already negotiating costs one
dict lookup; acquires no routed conn covers are counted and logged at most once a
second.  Sans-I/O like the rest of ``ike/``: the engine calls these functions and
returns their actions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from pypluto.config.model import Connection
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import Action, AddPolicy, DelPolicy, Log
from pypluto.params import PolicyParams, SAAcquire, TrafficSelector

PolicyKey = tuple[str, str, str, int]
SHUNT_ACTION: dict[str, Literal["pass", "drop", "reject"]] = {
    "passthrough": "pass", "drop": "drop", "reject": "reject"}


def policy_key(p: PolicyParams) -> PolicyKey:
    return (str(p.src), str(p.dst), p.direction, p.reqid)


def trap_policies(conn: Connection, reqid: int) -> list[PolicyParams]:
    """The outbound policies of ``conn`` as its Child SA would install them (no SA yet)."""
    loc, rem = conn.local, conn.remote
    la, ra = loc.host_addr, rem.host_addr
    if is_shunt(conn) and la is not None and ra is None and rem.subnets:
        ra = ipaddress.ip_address("::" if la.version == 6 else "0.0.0.0")  # no SA to reach
    if la is None or ra is None:
        return []
    if loc.subnets:
        lts = [tsmod.from_network(n, loc.protoport) for n in loc.subnets]
    else:
        lts = [tsmod.from_addr(la, loc.protoport)]
    if rem.subnets:
        rts = [tsmod.from_network(n, rem.protoport) for n in rem.subnets]
    else:
        rts = [tsmod.from_addr(ra, rem.protoport)]
    mode: Literal["tunnel", "transport"] = "transport" if conn.type == "transport" \
        else "tunnel"
    proto: Literal["esp", "ah"] = "ah" if getattr(conn, "phase2", "esp") == "ah" else "esp"
    action: Literal["ipsec", "pass", "drop", "reject"] = SHUNT_ACTION.get(conn.type, "ipsec")
    src_ip = loc.sourceip[0] if loc.sourceip and action == "ipsec" else None
    out: list[PolicyParams] = []
    for lt in lts:
        for rt in rts:
            if lt.version != rt.version:
                continue
            for lk in tsmod.to_kernel(lt):
                for rk in tsmod.to_kernel(rt):
                    out.append(PolicyParams(lk, rk, "out", reqid=reqid, tmpl_src=la,
                                            tmpl_dst=ra, mode=mode, protocol=proto,
                                            source_ip=src_ip, conn_name=conn.name,
                                            action=action))
                    if action == "ipsec":
                        continue
                    # a shunt holds both ways (RFC 4301 §4.4.1: BYPASS/DISCARD entries)
                    for d in ("in", "fwd"):
                        out.append(PolicyParams(rk, lk, d, reqid=reqid, tmpl_src=ra,
                                                tmpl_dst=la, mode=mode, protocol=proto,
                                                conn_name=conn.name, action=action))
    return out


def packet_ts(ev: SAAcquire, conn: Connection) -> tuple[tsmod.TS, tsmod.TS] | None:
    """The acquire's packet as (TSi, TSr) (RFC 7296 §2.9), if the conn's selectors hold it.

    None when the packet is not a single host pair inside the configured
    selectors (then the configured ones alone are offered).
    """
    pols = trap_policies(conn, 0)
    ok = any(p.src.network.version == ev.src.network.version
             and ev.src.network.subnet_of(p.src.network)  # type: ignore[arg-type]
             and ev.dst.network.subnet_of(p.dst.network)  # type: ignore[arg-type]
             and p.src.protocol in (0, ev.src.protocol) for p in pols)
    if not ok or ev.src.network.num_addresses != 1 or ev.dst.network.num_addresses != 1:
        return None

    def one(t: TrafficSelector) -> tsmod.TS:
        ts = tsmod.from_network(t.network)
        return tsmod.TS(ts.version, t.protocol, t.port_start, t.port_end, ts.start, ts.end)

    return one(ev.src), one(ev.dst)


def is_shunt(conn: Connection) -> bool:
    """type=passthrough|drop|reject (or authby=never): policies only, never negotiated."""
    return conn.type in SHUNT_ACTION or getattr(conn, "authby", "") == "never"


@dataclass
class Traps:
    """The routed connections of one engine and the acquires they have seen."""

    routed: dict[str, list[PolicyParams]] = field(default_factory=dict)
    by_reqid: dict[int, str] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # conn -> when we initiated
    ignored: int = 0  # acquires no routed conn covers (counted)
    _ignored_logged: int = 0
    _last_log: float = float("-inf")
    acquires: int = 0

    def route(self, conn: Connection, reqid: int) -> tuple[list[Action], str | None]:
        """Install the trap policies of ``conn``: (actions, None) or ([], why not)."""
        if conn.name in self.routed:
            return [], None
        if conn.remote.host_addr is None and not (is_shunt(conn) and conn.remote.subnets):
            return [], "cannot route a connection without a peer address (right=%any)"
        pols = trap_policies(conn, reqid)
        if not pols:
            return [], "no traffic selectors to route"
        self.routed[conn.name] = pols
        acts: list[Action] = [AddPolicy(p) for p in pols]
        if is_shunt(conn):
            what = {"pass": "passthrough", "drop": "drop", "reject": "reject"}[pols[0].action]
            acts.append(Log(f"route: {what} shunt policies installed", conn=conn.name))
        else:
            self.by_reqid[reqid] = conn.name
            acts.append(Log(f"route: trap policies installed for {len(pols)} selector "
                            "pair(s)", conn=conn.name))
        return acts, None

    def unroute(self, name: str, owned: set[PolicyKey]) -> list[Action]:
        """Remove the trap policies of ``name`` except those an up Child SA now owns."""
        pols = self.routed.pop(name, None)
        self.pending.pop(name, None)
        if pols is None:
            return []
        for r, n in list(self.by_reqid.items()):
            if n == name:
                del self.by_reqid[r]
        acts: list[Action] = [DelPolicy(p) for p in pols if policy_key(p) not in owned]
        acts.append(Log("unroute: trap policies removed", conn=name))
        return acts

    def on_child_gone(self, name: str, dels: list[PolicyParams]) -> list[Action]:
        """A Child SA's policies are going: keep (re-install) the traps of a routed conn."""
        pols = self.routed.get(name)
        if pols is None:
            return [DelPolicy(p) for p in dels]
        self.pending.pop(name, None)
        keep = {policy_key(p) for p in pols}
        acts: list[Action] = [AddPolicy(p) for p in pols]  # replaces the SA's own policy
        acts += [DelPolicy(p) for p in dels if policy_key(p) not in keep]
        return acts

    def lookup(self, ev: SAAcquire, now: float) -> tuple[str | None, list[Action]]:
        """The routed conn an acquire is for, or (None, a rate-limited log line)."""
        self.acquires += 1
        name = self.by_reqid.get(ev.reqid)
        if name is not None:
            return name, []
        self.ignored += 1
        if now - self._last_log < 1.0:
            return None, []
        n = self.ignored - self._ignored_logged
        self._ignored_logged = self.ignored
        self._last_log = now
        return None, [Log(f"acquire for {ev.src}->{ev.dst} (reqid {ev.reqid}) ignored: no "
                          f"routed connection covers it ({n} ignored since the last report)",
                          level="warning")]

    def busy(self, name: str, now: float, patience: float) -> bool:
        """True while a negotiation started by an earlier acquire may still succeed."""
        t = self.pending.get(name)
        return t is not None and now - t < patience
