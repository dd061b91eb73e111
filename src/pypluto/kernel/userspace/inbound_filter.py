"""Drop inbound cleartext that an inbound policy says must arrive protected (RFC 4301 §5.2).

With XFRM the kernel checks every packet it delivers or forwards against the
"in"/"fwd" policies: cleartext whose addresses match a protecting policy is
discarded (RFC 4301 §5.2 step 3, §4.4.1).  The userspace plane sees only what
comes out of its TUN devices, so a packet sent in the clear from an address
inside a conn's remote selector straight to a protected local address would be
delivered as if it came through the tunnel.  This module has the kernel drop
those packets with netfilter, as the XFRM policy check would:

* one chain per plane in the ``raw`` table, named after its TUN device
  (``PLUTO-CLR-pluto0``), jumped to once from ``PREROUTING``, per family
  (``iptables-restore`` / ``ip6tables-restore``);
* first RETURN for the plane's own devices (its TUN device, the ``ipsecN``
  devices of route-based conns) and ``lo``, for ESP (50), AH (51), IKE and
  NAT-T (UDP to 500, 4500 and the daemon's own IKE ports) addressed to this
  host (``-m addrtype --dst-type LOCAL``) and, for IPv6, neighbour
  solicitations and advertisements (Libreswan's ND bypass): the tunnel's own
  transport is never dropped, also when the selectors are the peers' own
  addresses (host-to-host, transport mode); so are UDP fragments after the first
  one to this host (no ports: the first fragment, which has them, decides).
  ESP, AH or UDP to port 500/4500
  that the host would forward is not ours: as with XFRM, where only the IKE
  sockets' own traffic bypasses the policies and the "fwd" check drops a
  forwarded packet without IPsec, it meets the policy rules below.  (Local
  rather than the IKE sockets' exact addresses: the daemon may listen on the
  wildcard address, and a local address nobody listens on answers with an ICMP
  error, as it would without the filter);
* then, in the plane's SPD order (:class:`.selectors.OutboundPolicies`' key),
  a DROP for each protecting (``ipsec``, ``drop``, ``reject``) inbound policy's
  selectors (source = the remote selector, destination = the local one,
  protocol, TCP/UDP/SCTP/DCCP ports, the policy's mark) and a RETURN for each
  ``pass`` one.  ICMP (ICMPv6 for IPv6) selectors carry type ‖ code as a 16-bit
  "port" (type in the upper byte, RFC 4301 §4.4.1.1, RFC 7296 §3.13.1;
  ``leftprotoport=icmp/2048`` is echo request, type 8 code 0), and a message
  must lie in both ends' ranges (:func:`.selectors.flow_of`): the rule matches
  exactly that intersection, one ``--icmp-type T`` per whole type and
  ``T/C`` per code of a type partly inside (``u32`` for IPv4 type 255, which the
  icmp match reads as "any").  Ports of other protocols are not narrowed.
* route-based conns (``ipsec-interface=N``) get no rule.  Their decrypted
  traffic comes out of the plane's ``ipsecN`` TUN device, so a DROP on other
  devices could be written, but it would not do what their SPD says: the
  operator decides by routing what goes through ``ipsecN``, and their selectors
  are most often ``0.0.0.0/0`` / ``::/0`` on both ends, so a DROP for them would
  discard every cleartext packet the host receives on any other device (all but
  IKE and ESP), which no route-based setup means.  Their policies form the SPD
  of that device (RFC 4301 §4.4.1 lets an implementation keep one SPD per
  interface); XFRM does the same: an ``if_id`` policy never matches a packet
  without IPsec from a physical device (its lookup uses if_id 0).  Cleartext
  spoofing a source that the operator routes into ``ipsecN`` is what strict
  reverse-path filtering (``rp_filter=1``, ``-m rpfilter``) on the physical
  devices drops, and is the operator's to enable, as with XFRM interfaces.

The chain is rewritten whole in one ``iptables-restore --noflush`` transaction
(10,000 rules: about 0.25 s) by a thread of its own, so that installing many
policies costs one rewrite per burst, not a process per policy; the rules follow
a policy change within that time.  Where iptables is missing or refuses, one
error says that the gap stays open.  A chain left by a plane that was killed is
removed when a plane with the same TUN device starts (and by
``daemon/leftovers.py``).  Control-plane only: nothing here is per packet.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable

from pypluto.params import PolicyParams, TrafficSelector

log = logging.getLogger("pypluto.kernel.userspace")

IKE_PORTS = (500, 4500)
_PORT_PROTOS = {6: "tcp", 17: "udp", 132: "sctp", 33: "dccp"}
_ICMP = {4: 1, 6: 58}  # the ICMP of each family: its type and code narrow the rule
_GAP = "inbound cleartext from protected subnets is not filtered"


def chain_name(tun: str) -> str:
    """The plane's chain (iptables chain names are at most 28 characters)."""
    return f"PLUTO-CLR-{tun}"[:28]


def _tool(version: int, what: str) -> str | None:
    return shutil.which(f"{'ip6' if version == 6 else 'ip'}tables{what}")


def _run(args: list[str], stdin: str | None = None) -> tuple[bool, str]:
    try:
        r = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60,
                           check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    return r.returncode == 0, r.stderr.strip()


def _ports(ts: TrafficSelector) -> str | None:
    if (ts.port_start, ts.port_end) == (0, 65535):
        return None
    return str(ts.port_start) if ts.port_start == ts.port_end else \
        f"{ts.port_start}:{ts.port_end}"


def _icmp_types(lo: int, hi: int) -> list[str]:
    """The ``--icmp-type`` values that make up the type ‖ code range [lo, hi] (RFC 4301
    §4.4.1.1, RFC 7296 §3.13.1: type in the upper, code in the lower 8 bits): ``T``
    for a whole type, ``T/C`` for each code of a type only partly in the range."""
    out: list[str] = []
    v = lo
    while v <= hi:
        if v & 0xFF == 0 and v | 0xFF <= hi:
            out.append(str(v >> 8))
            v += 0x100
        else:
            out.append(f"{v >> 8}/{v & 0xFF}")
            v += 1
    return out


def _icmp_matches(version: int, lo: int, hi: int) -> list[list[str]]:
    """Match arguments for ICMP (IPv4) or ICMPv6 messages whose type ‖ code is in
    [lo, hi], one list per rule.  IPv4 type 255 goes to ``u32`` (unfragmented or first
    fragment, header length from IHL): the icmp match reads type 255 as "any type"."""
    if version == 6:
        return [["-m", "icmp6", "--icmpv6-type", t] for t in _icmp_types(lo, hi)]
    got = [["-m", "icmp", "--icmp-type", t] for t in _icmp_types(lo, min(hi, 0xFEFF))]
    if hi >= 0xFF00:
        got.append(["-m", "u32", "--u32",
                    f"4&0x1FFF=0&&0>>22&0x3C@0>>16={max(lo, 0xFF00):#x}:{hi:#x}"])
    return got


def policy_rules(p: PolicyParams, chain: str) -> list[str]:
    """The ``-A`` lines for one inbound policy (none for outbound and route-based ones)."""
    if p.direction not in ("in", "fwd") or p.if_id is not None:
        return []
    args = ["-A", chain, "-s", str(p.src.network), "-d", str(p.dst.network)]
    proto = p.src.protocol or p.dst.protocol
    matches: list[list[str]] = [[]]
    if proto:
        args += ["-p", str(proto)]
        name = _PORT_PROTOS.get(proto)
        if name is not None:
            sport, dport = _ports(p.src), _ports(p.dst)
            if sport or dport:
                args += ["-m", name]
            if sport:
                args += ["--sport", sport]
            if dport:
                args += ["--dport", dport]
        elif proto == _ICMP[p.src.network.version]:
            # a packet's type ‖ code must lie in both selectors' port ranges
            # (selectors.flow_of, ts_match): their intersection, exactly
            lo = max(p.src.port_start, p.dst.port_start)
            hi = min(p.src.port_end, p.dst.port_end)
            if lo > hi:
                return []  # no ICMP message matches the policy
            if (lo, hi) != (0, 65535):
                matches = _icmp_matches(p.src.network.version, lo, hi)
    tail = []
    if p.mark is not None:
        tail += ["-m", "mark", "--mark", f"{p.mark[0]:#x}/{p.mark[1]:#x}"]
    tail += ["-j", "RETURN" if p.action == "pass" else "DROP"]
    return [" ".join(args + m + tail) for m in matches]


def _order(p: PolicyParams) -> tuple[bool, int, int, int, bool, bool]:
    # the plane's SPD order (selectors.OutboundPolicies), source and destination swapped:
    # inbound, the local selector is the destination
    return (not p.priority, p.priority, -p.dst.network.prefixlen, -p.src.network.prefixlen,
            p.src.protocol == 0 and p.dst.protocol == 0, p.action == "ipsec")


def chain_rules(chain: str, version: int, policies: Iterable[PolicyParams],
                ifaces: Iterable[str], ike_ports: Iterable[int]) -> list[str]:
    """Every line of the chain for one family; empty when no policy protects anything."""
    pols = sorted((p for p in policies if p.src.network.version == version
                   and p.dst.network.version == version), key=_order)
    # "in" and "fwd" with the same selectors: one rule (a dict keeps the order)
    body = list(dict.fromkeys(line for p in pols for line in policy_rules(p, chain)))
    if not any(line.endswith("-j DROP") for line in body):
        return []
    head = [f"-A {chain} -i {i} -j RETURN" for i in ["lo", *ifaces]]
    # the tunnel's own transport, to this host only: a forwarded packet is no IKE or ESP
    # of ours, and XFRM's "fwd" policy check drops it too
    local = "-m addrtype --dst-type LOCAL"
    head += [f"-A {chain} -p esp {local} -j RETURN", f"-A {chain} -p ah {local} -j RETURN"]
    head += [f"-A {chain} -p udp {local} -m udp --dport {port} -j RETURN"
             for port in sorted({*IKE_PORTS, *ike_ports})]
    # fragments after the first carry no ports: the first one, with them, decides (a
    # datagram without its first fragment never reassembles).  Without this, an
    # all-protocol policy dropped the rest of every large ESP-in-UDP packet (transport
    # mode encrypts whole datagrams).  IPv6: a Fragment header right after the fixed
    # header, offset not 0, next header UDP
    head.append(f"-A {chain} -p udp {local} -f -j RETURN" if version == 4 else
                f"-A {chain} -p udp {local} -m u32 --u32 "
                "4&0xFF00=0x2C00&&40&0xFF000000=0x11000000&&40&0xFFF8=0x8:0xFFF8 -j RETURN")
    if version == 6:
        head += [f"-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j RETURN"
                 for t in (135, 136)]
    return head + body


def remove_chain(chain: str, version: int) -> bool:
    """Unhook and delete ``chain`` from the raw table; True when it was there."""
    save = _tool(version, "-save")
    cmd = _tool(version, "")
    if save is None or cmd is None:
        return False
    try:
        r = subprocess.run([save, "-t", "raw"], capture_output=True, text=True, timeout=60,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    if f":{chain} " not in r.stdout:
        return False
    for _ in range(r.stdout.count(f"-A PREROUTING -j {chain}")):
        _run([cmd, "-t", "raw", "-D", "PREROUTING", "-j", chain])
    _run([cmd, "-t", "raw", "-F", chain])
    _run([cmd, "-t", "raw", "-X", chain])
    return True


class InboundFilter:
    """The plane's chain: :meth:`update` says the state changed, a thread writes it.

    ``state`` returns the plane's inbound policies, its own devices and its IKE ports;
    the thread calls it once per rewrite, so a burst of policy changes costs one
    snapshot and one ``iptables-restore`` (a change itself only bumps a counter).
    """

    def __init__(self, tun: str, state: Callable[[], tuple[
            list[PolicyParams], list[str], list[int]]]) -> None:
        self.chain = chain_name(tun)
        self._state = state
        self._cond = threading.Condition()
        self._have: dict[int, list[str]] = {4: [], 6: []}
        self._hooked: set[int] = set()  # families whose chain exists and is jumped to
        self._failed: set[int] = set()  # families that logged the gap (once each)
        self._gen = 0  # changes asked for
        self._done = 0  # generation written
        self._stop = False
        self._thread: threading.Thread | None = None
        for v in (4, 6):  # a plane with this TUN device that was killed (kill -9)
            if remove_chain(self.chain, v):
                log.info("removed the inbound cleartext filter %s (IPv%d) of an earlier run",
                         self.chain, v)

    def update(self) -> None:
        """The state changed: the thread rewrites the chains that differ."""
        with self._cond:
            if self._stop:
                return
            self._gen += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="clear-filter",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def sync(self, timeout: float = 60.0) -> bool:
        """Wait until what :meth:`update` asked for is written (tests, close)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= self._gen or self._stop,
                                       timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or self._done < self._gen)
                if self._stop:
                    return
                gen = self._gen
            try:
                pols, ifaces, ports = self._state()
                want = {v: chain_rules(self.chain, v, pols, ifaces, ports) for v in (4, 6)}
            except Exception:  # noqa: BLE001 - the thread must outlive a bad snapshot
                log.exception("inbound cleartext filter %s: cannot read the policies",
                              self.chain)
                want = self._have
            for v in (4, 6):
                if want[v] != self._have[v]:
                    self._write(v, want[v])
            with self._cond:
                self._done = gen
                self._cond.notify_all()

    def _fail(self, version: int, why: str) -> None:
        if version not in self._failed:
            self._failed.add(version)
            log.error("%s (IPv%d): %s", _GAP, version, why)

    def _write(self, version: int, rules: list[str]) -> None:
        restore, cmd = _tool(version, "-restore"), _tool(version, "")
        if restore is None or cmd is None:
            self._fail(version, f"{'ip6' if version == 6 else 'ip'}tables-restore not found")
            return
        body = "".join(r + "\n" for r in rules)
        text = f"*raw\n:{self.chain} - [0:0]\n{body}COMMIT\n"
        ok, err = _run([restore, "--noflush"], text)  # declaring the chain flushes it
        if not ok:
            self._fail(version, f"iptables-restore: {err}")
            return
        if version not in self._hooked:
            if not _run([cmd, "-t", "raw", "-C", "PREROUTING", "-j", self.chain])[0]:
                ok, err = _run([cmd, "-t", "raw", "-I", "PREROUTING", "1", "-j", self.chain])
                if not ok:
                    self._fail(version, f"cannot hook {self.chain} into PREROUTING: {err}")
                    return
            self._hooked.add(version)
        self._have[version] = rules
        if rules:
            log.debug("| inbound cleartext filter %s (IPv%d): %d rules", self.chain,
                      version, len(rules))

    def close(self) -> None:
        """Stop the thread and remove the chains."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            t = self._thread
        if t is not None:
            t.join(60)
        for v in sorted(self._hooked):
            remove_chain(self.chain, v)
        self._hooked.clear()


__all__ = ["IKE_PORTS", "InboundFilter", "chain_name", "chain_rules", "policy_rules",
           "remove_chain"]
