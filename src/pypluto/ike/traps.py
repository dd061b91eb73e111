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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pypluto.config.model import Connection
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import Action, AddPolicy, DelPolicy, Log
from pypluto.ike.status import ShuntStatus
from pypluto.params import PolicyParams, SAAcquire, TrafficSelector

PolicyKey = tuple[str, str, str, int]
ShuntAction = Literal["pass", "drop", "reject"]
SHUNT_ACTION: dict[str, ShuntAction] = {
    "passthrough": "pass", "drop": "drop", "reject": "reject"}
SHUNT_NAMES: dict[str, str] = {"pass": "%pass", "drop": "%drop", "reject": "%reject"}
MAX_BARE_SHUNTS = 4096  # bare shunts over all conns; more acquires are not shunted


@dataclass
class BareShunt:
    """A shunt for one packet flow, not a conn's (Libreswan's "bare shunt").

    ``negotiationshunt=passthrough|drop`` puts one on the acquire's flow while its conn
    negotiates (``hold`` needs none: the data plane holds the packets); a failed
    negotiation replaces it with ``failureshunt=`` for ``shuntlifetime`` (then the
    trap catches the flow again).  Its policy is more specific than the trap's
    (the packet's own addresses), so it wins on both planes.
    """

    conn: str
    src: TrafficSelector
    dst: TrafficSelector
    action: ShuntAction
    why: Literal["negotiationshunt", "failureshunt"]
    policies: list[PolicyParams]
    expires: float | None = None  # failure shunts: when the trap takes the flow back

    @property
    def key(self) -> tuple[str, str]:
        return str(self.src), str(self.dst)


def policy_key(p: PolicyParams) -> PolicyKey:
    return (str(p.src), str(p.dst), p.direction, p.reqid)


def trap_policies(conn: Connection, reqid: int) -> list[PolicyParams]:
    """The outbound policies of ``conn`` as its Child SA would install them (no SA yet)."""
    loc, rem = conn.local, conn.remote
    la, ra = loc.host_addr, rem.host_addr
    template = la is not None and ra is None and bool(rem.subnets)
    if la is not None and template:  # a shunt, or a %any template with rightsubnet=
        ra = ipaddress.ip_address("::" if la.version == 6 else "0.0.0.0")  # peer unknown
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
    sips = loc.sourceip if action == "ipsec" and not template else []
    # mtu= / metric= ride on the route of an IPsec policy (a shunt's traffic keeps its path)
    mtu = getattr(conn, "mtu", None) if action == "ipsec" else None
    metric = getattr(conn, "metric", None) if action == "ipsec" else None
    nexthop = loc.nexthop_addr if action == "ipsec" else None  # leftnexthop= (the route's)
    prio = getattr(conn, "priority", 0) or 0  # priority= (a shunt's too, as Libreswan)
    out: list[PolicyParams] = []
    for lt in lts:
        for rt in rts:
            if lt.version != rt.version:
                continue
            # leftsourceip= holds one address per family: the policy's
            src_ip = next((a for a in sips if a.version == lt.version), None)
            for lk in tsmod.to_kernel(lt):
                for rk in tsmod.to_kernel(rt):
                    out.append(PolicyParams(lk, rk, "out", reqid=reqid, tmpl_src=la,
                                            tmpl_dst=ra, mode=mode, protocol=proto,
                                            source_ip=src_ip, conn_name=conn.name,
                                            action=action, mtu=mtu, metric=metric,
                                            nexthop=nexthop, priority=prio))
                    if action == "ipsec":
                        continue
                    # a shunt holds both ways (RFC 4301 §4.4.1: BYPASS/DISCARD entries)
                    for d in ("in", "fwd"):
                        out.append(PolicyParams(rk, lk, d, reqid=reqid, tmpl_src=ra,
                                                tmpl_dst=la, mode=mode, protocol=proto,
                                                conn_name=conn.name, action=action,
                                                priority=prio))
    return out


def packet_ts(ev: SAAcquire, conn: Connection) -> tuple[tsmod.TS, tsmod.TS] | None:
    """The acquire's packet as (TSi, TSr) (RFC 7296 §2.9), if the conn's selectors hold it.

    None when the packet is not a single host pair inside the configured
    selectors (then the configured ones alone are offered).
    """
    def within(t: TrafficSelector, p: TrafficSelector) -> bool:  # ports too (protoport=)
        return p.protocol in (0, t.protocol) and \
            p.port_start <= t.port_start <= t.port_end <= p.port_end

    pols = trap_policies(conn, 0)
    ok = any(p.src.network.version == ev.src.network.version
             and ev.src.network.subnet_of(p.src.network)  # type: ignore[arg-type]
             and ev.dst.network.subnet_of(p.dst.network)  # type: ignore[arg-type]
             and within(ev.src, p.src) and within(ev.dst, p.dst) for p in pols)
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
    flows: dict[str, SAAcquire] = field(default_factory=dict)  # conn -> acquire negotiating
    # conn -> serial of the IKE SA its acquire's Child SA waits on (found by the engine
    # when it checks that the negotiation still lives: Engine._acquire_alive)
    carriers: dict[str, int] = field(default_factory=dict)
    bare: dict[tuple[str, str], BareShunt] = field(default_factory=dict)
    shunts_refused: int = 0  # bare shunts not installed (MAX_BARE_SHUNTS reached)
    _template_log: dict[str, float] = field(default_factory=dict)
    _ignored_logged: int = 0
    _last_log: float = float("-inf")
    acquires: int = 0

    def route(self, conn: Connection, reqid: int) -> tuple[list[Action], str | None]:
        """Install the trap policies of ``conn``: (actions, None) or ([], why not)."""
        if conn.name in self.routed:
            return [], None
        if conn.remote.host_addr is None and not conn.remote.subnets:
            # Libreswan routes a %any template only with the peer's subnet (or
            # opportunistic, which pypluto does not have)
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
        self.flows.pop(name, None)
        self.carriers.pop(name, None)
        if pols is None:
            return []
        shunts = self._remove_bare(lambda b: b.conn == name)
        for r, n in list(self.by_reqid.items()):
            if n == name:
                del self.by_reqid[r]
        acts: list[Action] = shunts + [DelPolicy(p) for p in pols if policy_key(p) not in owned]
        acts.append(Log("unroute: trap policies removed", conn=name))
        return acts

    # --- bare shunts (negotiationshunt=, failureshunt=) -------------------------------
    def _add_bare(self, conn: Connection, ev: SAAcquire, action: ShuntAction,
                  why: Literal["negotiationshunt", "failureshunt"],
                  expires: float | None) -> list[Action]:
        """A shunt for the acquire's flow (replacing one that is there), out only: the
        trap is an outbound policy, inbound cleartext was never refused by it."""
        key = (str(ev.src), str(ev.dst))
        old = self.bare.pop(key, None)
        acts: list[Action] = [DelPolicy(p) for p in old.policies] if old else []
        if len(self.bare) >= MAX_BARE_SHUNTS:
            self.shunts_refused += 1
            return acts
        pol = PolicyParams(ev.src, ev.dst, "out", reqid=ev.reqid, tmpl_src=ev.local,
                           tmpl_dst=ev.remote, conn_name=conn.name, action=action)
        self.bare[key] = BareShunt(conn.name, ev.src, ev.dst, action, why, [pol], expires)
        acts.append(AddPolicy(pol))
        return acts

    def _remove_bare(self, which: Callable[[BareShunt], bool]) -> list[Action]:
        acts: list[Action] = []
        for key, b in list(self.bare.items()):
            if which(b):
                del self.bare[key]
                acts += [DelPolicy(p) for p in b.policies]
        return acts

    def _end_negotiation_shunt(self, ev: SAAcquire) -> list[Action]:
        key = (str(ev.src), str(ev.dst))
        b = self.bare.get(key)
        if b is None or b.why != "negotiationshunt":
            return []
        del self.bare[key]
        return [DelPolicy(p) for p in b.policies]

    def negotiating(self, conn: Connection, ev: SAAcquire, now: float) -> list[Action]:
        """An acquire starts a negotiation of ``conn``: its negotiationshunt on the flow."""
        self.pending[conn.name] = now
        self.carriers.pop(conn.name, None)
        # an earlier acquire's negotiation of this conn that never reported its end:
        # its shunt must not outlive it (a passthrough one would leak that flow)
        prev = self.flows.pop(conn.name, None)
        acts = self._end_negotiation_shunt(prev) if prev is not None else []
        self.flows[conn.name] = ev
        action = SHUNT_ACTION.get(conn.negotiationshunt)
        if action is None:  # hold: the data plane holds the packets (no policy)
            return acts
        return acts + self._add_bare(conn, ev, action, "negotiationshunt", None)

    def established(self, name: str) -> list[Action]:
        """The conn's Child SA is in: its negotiation shunt goes (the SA's policy wins)."""
        self.pending.pop(name, None)
        self.carriers.pop(name, None)
        ev = self.flows.pop(name, None)
        return [] if ev is None else self._end_negotiation_shunt(ev)

    def ended(self, name: str) -> list[Action]:
        """The negotiation an acquire started went without failing and without a Child
        SA (its IKE SA was deleted: whack --down): its negotiation shunt goes and the
        trap is back (as Libreswan's "restoring ondemand"); the next acquire negotiates."""
        self.pending.pop(name, None)
        self.carriers.pop(name, None)
        ev = self.flows.pop(name, None)
        if ev is None:
            return []
        return [*self._end_negotiation_shunt(ev),
                Log("on-demand negotiation ended; the trap is back", conn=name)]

    def failed(self, conn: Connection, now: float, lifetime: float) -> list[Action]:
        """A negotiation started by an acquire failed: the failureshunt goes on the flow
        for ``lifetime`` seconds (failureshunt=none: the trap takes it back at once)."""
        self.pending.pop(conn.name, None)
        self.carriers.pop(conn.name, None)
        ev = self.flows.pop(conn.name, None)
        if ev is None or conn.name not in self.routed:
            return []
        acts = self._end_negotiation_shunt(ev)
        action = SHUNT_ACTION.get(conn.failureshunt)
        if action is None:
            acts.append(Log("on-demand negotiation failed; the trap is back (failureshunt=none)",
                            conn=conn.name))
            return acts
        acts += self._add_bare(conn, ev, action, "failureshunt", now + lifetime)
        acts.append(Log(f"on-demand negotiation failed; {SHUNT_NAMES[action]} for "
                        f"{ev.src} -> {ev.dst} for {lifetime:g}s (failureshunt="
                        f"{conn.failureshunt})", conn=conn.name))
        return acts

    def shunt_status(self, now: float) -> list[ShuntStatus]:
        """The bare shunts for ``whack --shuntstatus``, oldest first."""
        return [ShuntStatus(conn=b.conn, src=str(b.src.network), dst=str(b.dst.network),
                            protocol=b.src.protocol, action=b.action, why=b.why,
                            expires_in=None if b.expires is None
                            else max(0.0, round(b.expires - now, 1)))
                for b in self.bare.values()]

    def next_deadline(self) -> float | None:
        if not self.bare:  # the common case: no failure shunt held
            return None
        ts = [b.expires for b in self.bare.values() if b.expires is not None]
        return min(ts) if ts else None

    def expire(self, now: float) -> list[Action]:
        """Failure shunts whose shuntlifetime is over: the traps take their flows back."""
        gone = [b for b in self.bare.values() if b.expires is not None and b.expires <= now]
        acts = self._remove_bare(lambda b: b.expires is not None and b.expires <= now)
        for b in gone:
            acts.append(Log(f"failure shunt {SHUNT_NAMES[b.action]} for {b.src} -> {b.dst} "
                            "expired; the trap is back", conn=b.conn))
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

    def unknown_peer(self, name: str, ev: SAAcquire, now: float) -> list[Action]:
        """An acquire on the trap of a %any template: nobody to initiate to; the trap
        keeps the traffic until the peer connects (logged at most once a second)."""
        if now - self._template_log.get(name, float("-inf")) < 1.0:
            return []
        self._template_log[name] = now
        return [Log(f"acquire for {ev.src}->{ev.dst}: cannot initiate, the peer of this "
                    "%any template is unknown; the trap holds the traffic until it connects",
                    conn=name)]

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
