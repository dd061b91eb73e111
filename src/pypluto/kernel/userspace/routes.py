"""What the userspace plane asks the host's routing to send into its TUN device.

Every outbound policy makes the traffic it covers take the TUN device, with
policy routing (``ip rule``), and nothing else:

* a policy for any protocol and port gets a route to its remote selector in
  the plane's table ``T`` (one rule, priority ``P``, looks it up for every
  packet); the route carries the preferred source address (``leftsourceip``,
  else the first of our addresses inside the local selector) and the conn's
  ``mtu=`` and ``metric=`` (the first policy of a destination sets them);
  without ``mtu=``, the MTU of the path less the outbound ESP SA's overhead
  (:func:`pypluto.kernel.esp.inner_mtu`; set again when a later SA needs another);
* a policy limited to a protocol or ports gets a rule at priority ``P-1``
  with the selector's ``to``/``ipproto``/``sport``/``dport`` pointing at a
  second table ``T+0x10000`` that holds its route, so other traffic to the
  same addresses keeps its usual path (as with an XFRM policy that does not
  match it).  ICMP type/code selectors are routed by protocol and the plane's
  own lookup checks type and code (the kernel's rule ports do not carry them
  for every kind of ICMP socket);
* such a policy (of another protocol than ICMP) also gets rules at ``P-1`` that take
  the ICMP errors to its remote selector (IPv4 types 3, 11 and 12, ICMPv6 types 1
  to 4: :func:`error_rules`) into the TUN device: an error about a packet of the
  tunnel (a port unreachable for a datagram that came through the SA) carries a
  quote of it and goes through the SA of the quoted flow (RFC 4301 §6.2, as XFRM's
  ``icmp_route_lookup``), not by its own header in the clear; the plane sends an
  error that no policy covers in the clear itself (``UserspaceBackend._send_clear``);
* a passthrough shunt (``type=passthrough``) gets a rule at ``P-2`` with its
  source, destination (and protocol/ports) pointing at the main table: its
  traffic takes the host's usual path even inside a tunnel's wider selectors
  (the rule comes before the tunnels' rules, as Libreswan gives a shunt priority);
* the plane's own packets (IKE on the daemon's sockets, ESP on UDP or raw
  sockets) carry a socket mark, and a rule at priority ``P-2`` sends marked
  packets to the main table.  So a selector may cover the peer's own address
  (host-to-host tunnels, transport mode, 0.0.0.0/0) and everything to the
  peer is encrypted except the IKE and ESP packets themselves (the role of
  Libreswan's per-socket IPsec bypass policy with XFRM).

Everything is reference-counted; :meth:`Routes.remove_all` deletes our rules
and both tables whoever made them (leftovers of a crashed run at start, and
everything at shutdown).  Control-plane only: nothing here is per packet.
"""

from __future__ import annotations

import ipaddress

from pypluto.kernel.base import BackendError
from pypluto.kernel.userspace import iproute
from pypluto.kernel.userspace.selectors import is_any_ports, is_any_proto_ports
from pypluto.params import IPAddress, PolicyParams, TrafficSelector

SELECTIVE_TABLE_OFFSET = 0x10000
DEFAULT_MARK = 0x4500
SO_MARK = 36  # socket.SO_MARK (Linux), absent from some Python builds

_ICMP = (1, 58)
_Rule = tuple[int, str, tuple[str, ...]]  # family, destination, selector arguments


def rule_selector(policy: PolicyParams) -> tuple[str, ...]:
    """``ip rule`` selector arguments for a protocol/port-limited outbound policy."""
    src, dst = policy.src, policy.dst
    if src.protocol and dst.protocol and src.protocol != dst.protocol:
        raise BackendError(f"userspace: selector {src} -> {dst} has two protocols")
    proto = dst.protocol or src.protocol
    if not proto:  # ports without a protocol: no rule can say it
        raise BackendError(f"userspace: selector {src} -> {dst} has ports but no protocol")
    args = ["ipproto", str(proto)]
    if proto not in _ICMP:
        for ts, kw in ((src, "sport"), (dst, "dport")):
            if not is_any_ports(ts):
                args += [kw, _range(ts)]
    return tuple(args)


# ICMP errors in a rule's dport range: the kernel's flow of an ICMP message carries its
# type and code where a port is (flowi's icmpt overlays dport), as type << 8 | code
_ERROR_PORTS = {4: (("1", "768-1023"), ("1", "2816-3327")),  # 3; 11 and 12
                6: (("58", "256-1279"),)}  # 1 to 4


def error_rules(version: int, sel_args: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """``ip rule`` selector arguments that capture the ICMP errors towards the remote
    selector of a protocol/port-limited policy (none for an ICMP policy, whose own rule
    takes every ICMP message)."""
    if sel_args[1] in ("1", "58"):
        return ()
    return tuple(("ipproto", proto, "dport", types) for proto, types in _ERROR_PORTS[version])


def route_attrs(policy: PolicyParams, auto_mtu: int | None = None) -> list[str]:
    """``mtu N`` / ``metric M`` of the conn (mtu= / metric=) for the policy's route.

    Without ``mtu=``, ``auto_mtu`` (what the path to the peer leaves after the ESP
    SA's overhead, :func:`pypluto.kernel.esp.inner_mtu`); without either, the TUN
    device's own MTU stays the limit."""
    out = []
    mtu = policy.mtu if policy.mtu is not None else auto_mtu
    if mtu is not None:
        out += ["mtu", str(mtu)]
    if policy.metric is not None:
        out += ["metric", str(policy.metric)]
    return out


def _range(ts: TrafficSelector) -> str:
    return str(ts.port_start) if ts.port_start == ts.port_end else \
        f"{ts.port_start}-{ts.port_end}"


def _plen(a: IPAddress) -> str:
    return "32" if a.version == 4 else "128"


class Routes:
    """The rules, routes and TUN addresses of one userspace plane."""

    def __init__(self, ifname: str, table: int, priority: int,
                 mark: int = DEFAULT_MARK) -> None:
        self.ifname = ifname
        self.table = table
        self.sel_table = table + SELECTIVE_TABLE_OFFSET
        self.priority = priority
        self.mark = mark
        self._generic_rules: set[int] = set()  # families with the rule at P (and P-2)
        self._route_refs: dict[tuple[int, int, str, str], int] = {}
        # a route made without mtu=: its policy and the MTU it got from its SA (None:
        # the device's), and those routes by the policy's reqid (Routes.retune)
        self._route_auto: dict[tuple[int, int, str, str],
                               tuple[PolicyParams, int | None]] = {}
        self._auto_by_reqid: dict[int, set[tuple[int, int, str, str]]] = {}
        # the mtu= / metric= a route was made with (one route carries one of each)
        self._route_cfg: dict[tuple[int, int, str, str], tuple[int | None, int | None]] = {}
        self._rule_refs: dict[_Rule, int] = {}
        self._pass_refs: dict[_Rule, int] = {}  # passthrough shunts' rules (priority P-2)
        self._addr_refs: dict[str, int] = {}

    @property
    def installed(self) -> bool:
        return bool(self._generic_rules or self._route_refs or self._rule_refs
                    or self._pass_refs or self._addr_refs)

    # --- rules ----------------------------------------------------------------------

    def _ensure_base(self, version: int) -> None:
        """The generic rule (priority P) and the bypass for our own marked packets (P-2)."""
        if version in self._generic_rules:
            return
        fam = iproute.fam(version)
        if not iproute.rule_exists(version, self.table, self.priority):
            iproute.ip(fam, "rule", "add", "priority", str(self.priority), "table",
                       str(self.table))
        if not _mark_rule_exists(version, self.priority - 2, self.mark):
            iproute.ip(fam, "rule", "add", "priority", str(self.priority - 2), "fwmark",
                       f"{self.mark:#x}", "table", "main")
        self._generic_rules.add(version)

    # --- policies -------------------------------------------------------------------

    def source_for(self, policy: PolicyParams) -> IPAddress | None:
        """leftsourceip, else the first address of ours inside the local selector."""
        if policy.source_ip is not None:
            return policy.source_ip
        net = policy.src.network
        if net.prefixlen == 0:
            return None
        for a in iproute.local_addresses():
            if a.version == net.version and a in net and not a.is_loopback \
                    and not a.is_link_local:
                return a
        return None

    def add(self, policy: PolicyParams, auto_mtu: int | None = None) -> None:
        """Route what ``policy`` covers into the TUN device (raises BackendError, and then
        leaves nothing of this policy behind).  ``auto_mtu``: the route's MTU when the
        conn has no ``mtu=`` (see :func:`route_attrs`)."""
        try:
            self._add(policy, auto_mtu)
        except BackendError:
            self._drop_base_if_unused(policy.dst.network.version)
            raise

    def _route_args(self, policy: PolicyParams, rkey: tuple[int, int, str, str],
                    auto_mtu: int | None) -> list[str]:
        table, _v, net, src = rkey
        args = ["route", "replace", net, "dev", self.ifname, "table", str(table)]
        if src:
            args += ["src", src]
        return args + route_attrs(policy, auto_mtu)

    def retune(self, reqid: int, auto_mtu: int) -> int:
        """Give the routes made without ``mtu=`` for the policies of ``reqid`` the MTU of
        its (new) outbound SA, where they have another one: a route made for a trap
        before its SA existed, or an SA of other algorithms.  Returns how many changed."""
        changed = 0
        for rkey in list(self._auto_by_reqid.get(reqid, ())):
            policy, mtu = self._route_auto[rkey]
            if mtu == auto_mtu:
                continue
            if iproute.ip(iproute.fam(rkey[1]), *self._route_args(policy, rkey, auto_mtu),
                          check=False):
                self._route_auto[rkey] = (policy, auto_mtu)
                changed += 1
        return changed

    def _forget_auto(self, rkey: tuple[int, int, str, str]) -> None:
        ent = self._route_auto.pop(rkey, None)
        if ent is not None:
            keys = self._auto_by_reqid.get(ent[0].reqid)
            if keys is not None:
                keys.discard(rkey)
                if not keys:
                    del self._auto_by_reqid[ent[0].reqid]

    def _add(self, policy: PolicyParams, auto_mtu: int | None = None) -> None:
        net = policy.dst.network
        v = net.version
        if policy.action == "pass":
            self._add_pass(policy)
            return
        selective = not (is_any_proto_ports(policy.src) and is_any_proto_ports(policy.dst))
        sel_args = rule_selector(policy) if selective else ()
        self._ensure_base(v)
        src = self.source_for(policy)
        table = self.sel_table if selective else self.table
        rkey = (table, v, str(net), str(src) if src is not None and src.version == v else "")
        cfg = self._route_cfg.get(rkey)
        if cfg is not None and (policy.mtu, policy.metric) != cfg \
                and (policy.mtu is not None or policy.metric is not None):
            # the route another conn made would carry this conn's packets with the
            # other's mtu= / metric=: refused, never silently ignored
            raise BackendError(
                f"userspace plane: mtu={policy.mtu} metric={policy.metric} of "
                f"{policy.conn_name or 'this policy'} conflict with mtu={cfg[0]} "
                f"metric={cfg[1]} of the route to {net} that another conn installed "
                "(one route carries one mtu= and metric=)")
        if src is not None and policy.source_ip is not None:
            self._add_addr(src)
        if self._route_refs.get(rkey, 0) == 0:
            iproute.ip(iproute.fam(v), *self._route_args(policy, rkey, auto_mtu))
            self._route_cfg[rkey] = (policy.mtu, policy.metric)
            self._forget_auto(rkey)
            if policy.mtu is None and policy.reqid:
                self._route_auto[rkey] = (policy, auto_mtu)
                self._auto_by_reqid.setdefault(policy.reqid, set()).add(rkey)
        self._route_refs[rkey] = self._route_refs.get(rkey, 0) + 1
        if selective:
            key: _Rule = (v, str(net), sel_args)
            if self._rule_refs.get(key, 0) == 0:
                try:
                    iproute.ip(iproute.fam(v), "rule", "add", "priority",
                               str(self.priority - 1), "to", str(net), *sel_args, "table",
                               str(self.sel_table))
                except BackendError:  # undo the route: the policy is not installed
                    self._route_refs[rkey] -= 1
                    if self._route_refs[rkey] <= 0:
                        del self._route_refs[rkey]
                        self._route_cfg.pop(rkey, None)
                        self._forget_auto(rkey)
                        iproute.ip(iproute.fam(v), "route", "del", str(net), "table",
                                   str(table), check=False)
                    if policy.source_ip is not None:
                        self._del_addr(policy.source_ip)
                    raise
            self._rule_refs[key] = self._rule_refs.get(key, 0) + 1
            for eargs in error_rules(v, sel_args):
                ekey: _Rule = (v, str(net), eargs)
                if self._rule_refs.get(ekey, 0) == 0:
                    iproute.ip(iproute.fam(v), "rule", "add", "priority",
                               str(self.priority - 1), "to", str(net), *eargs, "table",
                               str(self.sel_table), check=False)
                self._rule_refs[ekey] = self._rule_refs.get(ekey, 0) + 1

    def _pass_rule(self, policy: PolicyParams) -> _Rule:
        src, dst = policy.src, policy.dst
        args: tuple[str, ...] = ()
        if src.network.prefixlen:
            args += ("from", str(src.network))
        if not (is_any_proto_ports(src) and is_any_proto_ports(dst)):
            args += rule_selector(policy)
        return (dst.network.version, str(dst.network), args)

    def _add_pass(self, policy: PolicyParams) -> None:
        """A passthrough shunt: a rule at ``P-2`` sends what it covers to the main table,
        ahead of the tunnels' rules, so it takes the host's usual path both ways."""
        key = self._pass_rule(policy)
        v, dst, args = key
        self._ensure_base(v)
        if self._pass_refs.get(key, 0) == 0:
            iproute.ip(iproute.fam(v), "rule", "add", "priority", str(self.priority - 2),
                       *args, "to", dst, "table", "main")
        self._pass_refs[key] = self._pass_refs.get(key, 0) + 1

    def delete(self, policy: PolicyParams) -> None:
        """Undo :meth:`add` for ``policy`` (errors are ignored: it may be gone already)."""
        net = policy.dst.network
        v = net.version
        if policy.action == "pass":
            key = self._pass_rule(policy)
            n = self._pass_refs.get(key, 0) - 1
            if n <= 0:
                if self._pass_refs.pop(key, None) is not None:
                    iproute.ip(iproute.fam(v), "rule", "del", "priority",
                               str(self.priority - 2), *key[2], "to", key[1], "table",
                               "main", check=False)
            else:
                self._pass_refs[key] = n
            self._drop_base_if_unused(v)
            return
        selective = not (is_any_proto_ports(policy.src) and is_any_proto_ports(policy.dst))
        if selective:
            try:
                sel_args = rule_selector(policy)
            except BackendError:
                return  # never added
            sel_key: _Rule = (v, str(net), sel_args)
            n = self._rule_refs.get(sel_key, 0) - 1
            if n <= 0:
                if self._rule_refs.pop(sel_key, None) is not None:
                    iproute.ip(iproute.fam(v), "rule", "del", "priority",
                               str(self.priority - 1), "to", str(net), *sel_args, "table",
                               str(self.sel_table), check=False)
            else:
                self._rule_refs[sel_key] = n
            for eargs in error_rules(v, sel_args):
                ekey: _Rule = (v, str(net), eargs)
                n = self._rule_refs.get(ekey, 0) - 1
                if n <= 0:
                    if self._rule_refs.pop(ekey, None) is not None:
                        iproute.ip(iproute.fam(v), "rule", "del", "priority",
                                   str(self.priority - 1), "to", str(net), *eargs,
                                   "table", str(self.sel_table), check=False)
                else:
                    self._rule_refs[ekey] = n
        table = self.sel_table if selective else self.table
        for rkey in [k for k in self._route_refs if k[:3] == (table, v, str(net))]:
            n = self._route_refs[rkey] - 1
            if n <= 0:
                del self._route_refs[rkey]
                self._route_cfg.pop(rkey, None)
                self._forget_auto(rkey)
                if not any(k[:3] == rkey[:3] for k in self._route_refs):
                    iproute.ip(iproute.fam(v), "route", "del", str(net), "table", str(table),
                               check=False)
            else:
                self._route_refs[rkey] = n
            break
        if policy.source_ip is not None:
            self._del_addr(policy.source_ip)
        self._drop_base_if_unused(v)

    def _drop_base_if_unused(self, version: int) -> None:
        """The last policy of a family is gone: its generic and bypass rules go too."""
        if version not in self._generic_rules:
            return
        if any(k[1] == version for k in self._route_refs) or \
                any(k[0] == version for k in self._rule_refs) or \
                any(k[0] == version for k in self._pass_refs):
            return
        fam = iproute.fam(version)
        iproute.ip(fam, "rule", "del", "priority", str(self.priority), "table",
                   str(self.table), check=False)
        iproute.ip(fam, "rule", "del", "priority", str(self.priority - 2), "fwmark",
                   f"{self.mark:#x}", check=False)
        self._generic_rules.discard(version)

    # --- addresses on the TUN device (leftsourceip) -----------------------------------

    def _add_addr(self, a: IPAddress) -> None:
        s = str(a)
        if self._addr_refs.get(s, 0) == 0 and a not in iproute.local_addresses():
            iproute.ip(iproute.fam(a.version), "addr", "add", f"{s}/{_plen(a)}", "dev",
                       self.ifname)
            self._addr_refs[s] = 1
        elif s in self._addr_refs:
            self._addr_refs[s] += 1

    def _del_addr(self, a: IPAddress) -> None:
        s = str(a)
        if s in self._addr_refs:
            self._addr_refs[s] -= 1
            if self._addr_refs[s] <= 0:
                del self._addr_refs[s]
                iproute.ip(iproute.fam(a.version), "addr", "del", f"{s}/{_plen(a)}", "dev",
                           self.ifname, check=False)

    # --- everything -----------------------------------------------------------------

    def remove_all(self) -> None:
        """Our addresses, both tables and every rule of ours (crash leftovers too)."""
        for s in list(self._addr_refs):
            a = ipaddress.ip_address(s)
            iproute.ip(iproute.fam(a.version), "addr", "del", f"{s}/{_plen(a)}", "dev",
                       self.ifname, check=False)
        self._addr_refs.clear()
        self._route_refs.clear()
        self._route_cfg.clear()
        self._route_auto.clear()
        self._auto_by_reqid.clear()
        self._rule_refs.clear()
        self._pass_refs.clear()
        self._generic_rules.clear()
        for v in (4, 6):
            fam = iproute.fam(v)
            for t in (self.table, self.sel_table):
                iproute.ip(fam, "route", "flush", "table", str(t), check=False)
            for _ in range(4096):  # one rule per call
                spec = self._one_of_ours(v)
                if spec is None:
                    break
                if not iproute.ip(fam, "rule", "del", *spec, check=False):
                    break

    def _one_of_ours(self, version: int) -> tuple[str, ...] | None:
        """The ``ip rule del`` arguments of one rule of ours still installed, if any."""
        for r in iproute.rules(version):
            prio = r.get("priority")
            table = str(r.get("table", ""))
            if prio == self.priority and table == str(self.table):
                return ("priority", str(prio), "table", table)
            if prio == self.priority - 1 and table == str(self.sel_table):
                return ("priority", str(prio), "table", table)
            if prio == self.priority - 2 and _mark_of(r) == self.mark:
                return ("priority", str(prio), "fwmark", f"{self.mark:#x}")
            if prio == self.priority - 2 and table == "main" and r.get("fwmark") is None:
                return ("priority", str(prio), "table", "main")  # a passthrough shunt's
        return None


def _mark_of(rule: dict[str, object]) -> int | None:
    m = rule.get("fwmark")
    if m is None:
        return None
    try:
        return int(str(m).split("/")[0], 0)
    except ValueError:
        return None


def _mark_rule_exists(version: int, priority: int, mark: int) -> bool:
    return any(r.get("priority") == priority and _mark_of(r) == mark for r in iproute.rules(version))
