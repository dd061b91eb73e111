"""The connection registry: which conns are loaded, oriented, routed.

A connection is *oriented* when one of its ends is a local address
(ipsec.conf(5) ``left`` / ``right``); one that is not yet is kept unoriented, as
pluto does, and loaded into the engine once ``whack --listen`` finds one of its
addresses.  ``auto=add`` / ``start`` / ``up`` / ``route`` / ``ondemand`` /
``keep`` conns are loaded at start-up; ``start`` and ``up`` are initiated once
the daemon listens.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from pypluto.config.addresspool import parse_pool, pool_blocks
from pypluto.config.model import Connection, IPAddress
from pypluto.config.values import parse_bool
from pypluto.control.protocol import RC_FATAL, RC_SUCCESS
from pypluto.daemon.defaultroute import needs_routes, resolve, resolve_nexthop
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.resolver import resolve_host, resolve_ids, resolve_names

LOADED_AUTO = ("add", "start", "up", "route", "ondemand", "keep")
"""``auto=`` values that load the conn at start-up (or on ``ipsec add --autoall``)."""

STARTED_AUTO = ("start", "up")
"""``auto=`` values that also initiate it."""


def config_conns(result: object) -> list[Connection]:
    """The connections of a parsed configuration (``ConfigFile`` or a stand-in)."""
    if result is None:
        return []
    conns = getattr(result, "connections", None)
    if conns is None:
        conns = getattr(result, "conns", None)
    if isinstance(conns, dict):
        return list(conns.values())
    return list(conns or [])


def lifetime_notes(conn: Connection) -> list[str]:
    """What the engine makes of a lifetime too short for rekeymargin + rekeyfuzz.

    The engine rekeys at ``max(lifetime - margin, lifetime / 2)`` (margin with
    its fuzz, ``ike/``): when the margin reaches half the lifetime it is in
    effect shortened to half the lifetime.  Libreswan says so when the conn is
    added (its wording: ``ipsec-lifetime=300 must be greater than rekeymargin=...``);
    we state what we do instead.
    """
    if not conn.rekey and not conn.reauth:
        return []
    out = []
    fuzzed = conn.rekeymargin * (1 + conn.rekeyfuzz / 100.0)
    for key, life, applies in (("ikelifetime", conn.ikelifetime, True),
                               ("ipsec-lifetime", conn.salifetime, conn.rekey)):
        if applies and life > 0 and fuzzed > life / 2:
            out.append(f"{key}={life:g}s must be greater than rekeymargin={conn.rekeymargin:g}s"
                       f" + rekeyfuzz={conn.rekeyfuzz:g}%; reducing rekeymargin to "
                       f"{life / 2:g} seconds (rekeying at half the lifetime)")
    return out


def _at(conn: Connection, key: str, why: str) -> str:
    """A refusal: ``why`` after the ``file:line`` of ``key`` when the conn has one."""
    origin = conn.origins.get(key)
    return f"{origin}: {why}" if origin else why


def local_ikeport_refusal(conn: Connection, natikeport: int = 4500) -> str | None:
    """``leftikeport=`` on the end that is this host: "the UDP IKE port to listen on"
    (ipsec.conf(5)), a socket of the conn's own that pypluto does not open (it listens on
    --ikeport and --natikeport only), so the oriented conn is refused rather than run on
    the usual ports.  The peer's end (``rightikeport=``) works: IKE goes to that port.
    Our own --natikeport is a port we listen on: IKE then starts there, to the peer's
    4500 unless ``rightikeport=`` says otherwise (RFC 7296 §2.23; Libreswan 5.2's
    ikev2-ikeport-4500-initiator-*)."""
    port = conn.local.ikeport
    if port is None or port == natikeport:
        return None
    key = ("left" if conn.local_is_left else "right") + "ikeport"
    # (ikeport= without a side sets both ends' keys)
    return _at(conn, key, f"{key}={port} is not supported by pypluto (a port of its own "
               "for the local end: pypluto listens on its --ikeport and --natikeport only)")


_SIGNATURE_KIND = {"rsasig": "rsasig", "rsa": "rsasig", "ecdsa": "ecdsa"}


def end_auth_refusal(conn: Connection) -> str | None:
    """Each end's authentication as Libreswan 5.2's pluto checks it when the conn is
    added (its words), end by end, left first:

    * ``leftauth=rsasig|ecdsa`` keeps of ``authby=`` only the words of its kind;
      ``authby=secret|null`` has none (the file stage, as readwriteconf, loads it);
    * ``leftid=%fromcert`` on an end that authenticates with a PSK or NULL: no
      certificate to take the ID from (as ours it would be an empty DN, as the peer's
      it would match any DN)."""
    shared_only = conn.type in ("tunnel", "transport") and \
        set(conn.authby.split(",")) <= {"secret", "psk", "null"}
    for side, end in (("left", conn.left), ("right", conn.right)):
        kind = _SIGNATURE_KIND.get(end.auth or "")
        if kind and shared_only:
            return _at(conn, side + "auth", f"{side}auth={end.auth} expects authby={kind}")
        methods = {end.auth} if end.auth else set(conn.authby.split(","))
        if end.id is not None and end.id.fromcert and methods <= {"secret", "psk", "null"}:
            return _at(conn, side + "id",
                       "ID cannot be specified as %fromcert if PSK or AUTH-NULL is used")
    return None


def modecfg_refusal(conn: Connection) -> str | None:
    """The mode-config combinations Libreswan's pluto refuses to add (with these
    words): server and client on one end, a server end with a pool of its own, a client
    whose peer end has the pool (a pool and a subnet on one end: config/parser.py)."""
    for side, end, oside, other in (("left", conn.left, "right", conn.right),
                                    ("right", conn.right, "left", conn.left)):
        checks = (
            (end.modecfgserver and end.modecfgclient, side + "modecfgclient",
             f"both {side}modecfgserver=yes and {side}modecfgclient=yes defined"),
            (bool(end.modecfgserver and end.addresspool), side + "addresspool",
             f"{side}modecfgserver=yes does not expect {side}addresspool="),
            (bool(end.modecfgclient and other.addresspool), oside + "addresspool",
             f"{side}modecfgclient=yes does not expect {oside}addresspool="),
        )
        for bad, key, why in checks:
            if bad:
                return _at(conn, key, why)
    return None


def sourceip_refusal(conn: Connection) -> str | None:
    """``leftsourceip=`` as Libreswan's pluto checks it when the conn is added (its
    words): one address per family, each inside ``leftsubnet=`` (else equal to ``left=``):
    packets from a source address outside the conn's selectors match no IPsec policy
    and would leave in the clear.  (The pairs of ``leftsubnets=`` are not checked, as in
    Libreswan.)"""
    for side, end in (("left", conn.left), ("right", conn.right)):
        if not end.sourceip:
            continue
        head = _at(conn, side + "sourceip", f"{side}sourceip={end.raw.get('sourceip', '')} "
                   "invalid, ")
        seen: dict[int, IPAddress] = {}
        for a in end.sourceip:
            if a.is_unspecified:
                return head + "must be a valid address"
            if a.version in seen:
                return head + (f"multiple IPv{a.version} addresses ({seen[a.version]} and {a})"
                               " specified")
            seen[a.version] = a
            if end.subnets:
                if conn.connalias is None and not any(
                        a.version == n.version and a in n for n in end.subnets):
                    return head + (f"address {a} is not within {side}subnet="
                                   f"{end.raw.get('subnet', '')}")
            elif end.host_addr is not None:
                if a != end.host_addr:
                    return head + (f"address {a} does not match {side}={end.host_addr} and "
                                   f"{side}subnet= was not specified")
            else:
                return head + f"{side}subnet= unspecified and {side} IP address unknown"
    return None


def selector_refusal(conn: Connection) -> str | None:
    """More refusals of Libreswan 5.2's pluto when a conn is added (its words), checked
    whether or not the conn is oriented: ``left=`` unset; ``leftsubnet=`` written empty;
    ``leftauth=`` without ``rightauth=``; ``narrowing=no`` with an address pool (the pool's lease
    narrows the selector); and the two ends' selectors (each end's subnets, else its
    pool, else its host address) not of the same address families: no traffic selector
    pair could be built from them (addconn-12-family, addconn-14-addresspool)."""
    ends = (("left", conn.left), ("right", conn.right))
    for side, end in ends:
        if not end.host:  # never oriented, never negotiated (addconn-43-x-comment)
            why = f"{side}= is not set"
            return f"{conn.origin}: {why}" if conn.origin else why
        if end.raw.get("subnet") == "":
            return _at(conn, side + "subnet", f"{side}subnet= invalid, empty field")
    if bool(conn.left.auth) != bool(conn.right.auth):
        return _at(conn, "leftauth" if conn.left.auth else "rightauth",
                  "leftauth= and rightauth= must both be set or both be unset")
    if conn.raw.get("narrowing") and not parse_bool(conn.raw["narrowing"], "narrowing"):
        for side, end in ends:
            if end.addresspool is not None:
                return _at(conn, "narrowing", f"narrowing=no conflicts with {side}addresspool="
                          f"{end.addresspool}")
    used: list[tuple[set[int], str, str]] = []
    for _side, end in ends:
        if end.subnets:
            used.append(({n.version for n in end.subnets}, "subnet", end.raw.get("subnet", "")))
        elif end.addresspool is not None:
            used.append(({lo.version for lo, _hi in parse_pool(end.addresspool)},
                         "addresspool", end.addresspool))
        elif end.host_addr is not None:
            used.append(({end.host_addr.version}, "", end.raw.get("", str(end.host_addr))))
        else:
            return None  # the family is known once the host resolves
    (lfam, lkey, lval), (rfam, rkey, rval) = used
    if lfam != rfam:
        return _at(conn, "left" + lkey, f"address family of left{lkey}={lval} conflicts with "
                  f"right{rkey}={rval}")
    return None


def _range_text(lo: IPAddress, hi: IPAddress) -> str:
    """A pool range as Libreswan prints it: a CIDR block when it is one, else lo-hi."""
    nets = list(ipaddress.summarize_address_range(lo, hi))  # type: ignore[type-var]
    return str(nets[0]) if len(nets) == 1 else f"{lo}-{hi}"


def pool_refusal(conn: Connection, loaded: Iterable[Connection]) -> str | None:
    """Libreswan 5.2 (addresspool.c) keeps one pool per range for every conn: a conn
    whose ``addresspool=`` range overlaps a loaded conn's range without being equal to
    it is refused (two conns naming one range share its leases; ``ike/pool.py``)."""
    mine = [(side, end) for side, end in (("left", conn.left), ("right", conn.right))
            if end.addresspool]
    if not mine:
        return None
    others = [(lo, hi) for c in loaded if c.name != conn.name
              for end in (c.left, c.right) if end.addresspool
              for lo, hi in _pool_ranges(end.addresspool)]
    for side, end in mine:
        assert end.addresspool is not None
        for lo, hi in _pool_ranges(end.addresspool):
            for lo2, hi2 in others:
                if lo.version != lo2.version or (lo, hi) == (lo2, hi2):
                    continue
                if int(lo) <= int(hi2) and int(lo2) <= int(hi):
                    why = (f"{side}addresspool={end.addresspool} invalid, range inexactly "
                           f"overlaps existing address pool {_range_text(lo2, hi2)}")
                    return _at(conn, side + "addresspool", why)
    return None


def _pool_ranges(spec: str) -> list[tuple[IPAddress, IPAddress]]:
    try:
        return pool_blocks(spec)
    except ValueError:  # refused when the file was read
        return []


class Registry:
    """The daemon's connections, kept in step with the engine through the driver."""

    def __init__(self, log: PlutoLogger, driver: EngineDriver, uniqueids: bool,
                 initiate: Callable[[str], int]) -> None:
        self.log = log
        self.driver = driver
        self.uniqueids = uniqueids
        self.initiate = initiate
        self.natikeport = 4500  # the daemon's --natikeport (server.py sets it)
        self.conns: dict[str, Connection] = {}
        self.unoriented: dict[str, Connection] = {}
        self.routed: set[str] = set()
        self.local_addrs: set[IPAddress] = set()
        # a check every added conn must pass (the algorithm self-test): None, or why not
        self.admit: Callable[[Connection], str | None] = lambda conn: None
        # oriented, about to load: why it cannot (its certificates), or None
        self.loaded: Callable[[Connection], str | None] = lambda conn: None
        self.serials: dict[str, int] = {}  # "conn serial: $N" of --status, in load order
        self.up: set[str] = set()  # initiated (ipsec up, auto=start): "+UP" in the policy
        self.resolver: Callable[[str], list[IPAddress]] = resolve_host  # tests replace it
        self._next_serial = 1
        driver.route_failed = self._route_failed

    def __contains__(self, name: object) -> bool:
        return name in self.conns or name in self.unoriented

    def load(self, result: object) -> None:
        """Start-up: the diagnostics of the parsed config, then its loadable conns."""
        for d in getattr(result, "diagnostics", []) or []:
            self.log.log(str(d), "warning" if getattr(d, "severity", "") == "warning"
                         else "error")
        for conn in config_conns(result):
            if conn.auto in LOADED_AUTO:
                self.add(conn)
                if conn.auto in ("route", "ondemand") and conn.name in self.conns:
                    self.route(conn.name)

    def auto_start(self) -> None:
        for conn in list(self.conns.values()):
            if conn.auto in STARTED_AUTO:
                self.initiate(conn.name)

    def pending_dns(self) -> list[str]:
        """The host names of loaded conns whose peer's address is not known yet (its
        name did not resolve), for :meth:`retry_pending_dns`."""
        names: list[str] = []
        for conn in self.conns.values():
            host = conn.remote.host
            if conn.remote.host_addr is None and host and not host.startswith("%") and \
                    host not in names:
                names.append(host)
        return names

    def retry_pending_dns(self, resolver: Callable[[str], list[IPAddress]] | None = None
                          ) -> list[str]:
        """Libreswan's pending-DDNS event (once a minute): each loaded conn whose peer's
        host name did not resolve is looked up again (``resolver``: the answers fetched
        off the loop, ``resolver.lookup_names``); one that now has an address and is
        ``auto=start`` is initiated (ikev2-ddns-01/-02).  The names initiated."""
        started: list[str] = []
        for conn in list(self.conns.values()):
            host = conn.remote.host
            if conn.remote.host_addr is not None or not host or host.startswith("%"):
                continue
            for note, level in resolve_names(conn, resolver or self.resolver):
                if level != "error":  # the failure was said when it was loaded
                    self.log.log(note, level, conn=conn.name)
            if conn.remote.host_addr is not None and conn.auto in STARTED_AUTO:
                self.initiate(conn.name)
                started.append(conn.name)
        return started

    def add(self, conn: Connection, emit: Callable[[str], None] | None = None,
            resolver: Callable[[str], list[IPAddress]] | None = None) -> int:
        """Orient and load one connection (replacing one of that name); returns a whack rc.

        ``resolver``: the host names' addresses, looked up already (``ipsec add``:
        :func:`.resolver.lookup_names` on a worker thread); unset: ``self.resolver``,
        which blocks (start-up, ``ipsec listen``).

        A connection neither of whose ends is a local address is kept *unoriented*
        (as pluto does) and loaded once ``--listen`` finds one of its addresses.
        """
        refused = self.admit(conn) or selector_refusal(conn) or end_auth_refusal(conn)
        if refused:
            self.log.log(refused, "error", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {refused}')
            return RC_FATAL
        if conn.name in self.conns:
            self._replace(conn.name, emit)
        self.unoriented.pop(conn.name, None)
        for note, level in resolve_names(conn, resolver or self.resolver):  # host names
            self.log.log(note, level, conn=conn.name)
            if emit and level == "error":
                emit(f'"{conn.name}": {note}')
        refused = resolve_ids(conn, resolver or self.resolver)  # leftid=host.example
        if refused:
            self.log.log(refused, "error", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {refused}')
            return RC_FATAL
        if "uniqueids" not in conn.raw:  # a config setup value: the command line wins
            conn.uniqueids = self.uniqueids
        if not conn.orient(self.local_addrs) and needs_routes(conn):
            for note in resolve(conn):  # %defaultroute, %any + nexthop (ipsec.conf(5))
                self.log.log(note, conn=conn.name)
            conn.orient(self.local_addrs)
        if conn.local_is_left is not None:
            nh_note = resolve_nexthop(conn.local)  # leftnexthop=%defaultroute
            if nh_note:
                self.log.log(nh_note, conn=conn.name)
        if conn.local_is_left is None:
            self.unoriented[conn.name] = conn
            msg = ("neither end is a local address: connection kept unoriented until "
                   '"ipsec listen" finds one')
            self.log.log(msg, "warning", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {msg}')
            return RC_SUCCESS
        refused = local_ikeport_refusal(conn, self.natikeport) or \
            modecfg_refusal(conn) or sourceip_refusal(conn) or \
            pool_refusal(conn, self.conns.values()) or self.loaded(conn)
        if refused:
            self.log.log(refused, "error", conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {refused}')
            return RC_FATAL
        self.conns[conn.name] = conn
        self.serials[conn.name] = self._next_serial
        self._next_serial += 1
        for line in lifetime_notes(conn):
            self.log.log(line, conn=conn.name)
            if emit:
                emit(f'"{conn.name}": {line}')
        self.driver.run(lambda e: e.add_connection(conn), where=f"adding {conn.name}")
        version = "IKEv1" if conn.keyexchange == "ikev1" else "IKEv2"
        if emit:  # the engine logs the same line itself
            emit(f'"{conn.name}": added {version} connection')
        return RC_SUCCESS

    def _replace(self, name: str, emit: Callable[[str], None] | None) -> None:
        """``ipsec add`` of a loaded conn: say so, delete it and its SAs, telling whack how.

        As Libreswan 5.2's addconn: a conn with SAs prints ``terminating SAs using
        this connection`` and the deletion of each (the peer is told, RFC 7296
        §1.4.1) before ``added``; we also say ``replacing connection`` first.
        """
        ike, child = self.live_sas(name)
        lines = ["replacing connection"]
        if ike or child:
            lines.append("terminating SAs using this connection")
        for line in lines:
            self.log.log(line, conn=name)
            if emit:
                emit(f'"{name}": {line}')
        saved = self.log.capture
        if emit is not None and (ike or child):
            self.log.capture = emit  # the engine's "deleting ..." lines reach whack
        try:
            self.delete(name)
        finally:
            self.log.capture = saved

    def live_sas(self, name: str) -> tuple[list[int], list[int]]:
        """The serials of the IKE and Child SAs of conn ``name`` (engine status)."""
        engine = self.driver.engine
        if engine is None:
            return [], []
        try:
            st = engine.status(self.driver.now())
        except Exception:  # noqa: BLE001 - the status is only for the message
            return [], []
        for c in st.connections:
            if c.name == name:
                return sorted(c.ike_serials), sorted(c.child_serials)
        return [], []

    def orient_pending(self, local_addrs: Iterable[IPAddress]) -> None:
        """After an interface rescan: load the unoriented conns that now orient."""
        self.local_addrs = set(local_addrs)
        for name, conn in list(self.unoriented.items()):
            if conn.orient(self.local_addrs):
                self.log.log("connection oriented after --listen", conn=name)
                self.add(conn)
                if conn.auto in STARTED_AUTO:
                    self.initiate(name)
                elif conn.auto in ("route", "ondemand"):
                    self.route(name)

    def route(self, name: str) -> bool:
        """Install the trap policies of a loaded conn (auto=route, ``whack --route``)."""
        now = self.driver.now()
        self.driver.run(lambda e: e.route(name, now), where=f"routing {name}", conn=name)
        engine = self.driver.engine
        ok = engine is not None and engine.routed(name)
        if ok:
            self.routed.add(name)
        return ok

    def unroute(self, name: str) -> None:
        now = self.driver.now()
        self.driver.run(lambda e: e.unroute(name, now), where=f"unrouting {name}", conn=name)
        self.routed.discard(name)

    def _route_failed(self, name: str) -> None:
        """The conn's updown ``route`` step failed: unrouted again, without its
        ``unroute`` step (Libreswan 5.2 undoes the route's policies alone)."""
        now = self.driver.now()
        self.driver.run(lambda e: e.unroute(name, now, updown=False),
                        where=f"unrouting {name}", conn=name)
        self.routed.discard(name)

    def delete(self, name: str) -> None:
        if self.unoriented.pop(name, None) is not None:
            return
        now = self.driver.now()
        self.driver.run(lambda e: e.delete_connection(name, now), where=f"deleting {name}")
        self.conns.pop(name, None)
        self.routed.discard(name)
        self.up.discard(name)

    def retransmit_interval(self, name: str) -> float | None:
        conn = self.conns.get(name)
        return conn.retransmit_interval if conn is not None else None

    def conns_with_peer(self, addr: IPAddress) -> list[str]:
        """The loaded connections whose remote end is at ``addr``."""
        out = []
        for name, conn in self.conns.items():
            try:
                if conn.remote.host_addr == addr:
                    out.append(name)
            except ValueError:  # not oriented after all
                continue
        return out
