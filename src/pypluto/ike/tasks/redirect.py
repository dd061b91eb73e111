"""Redirect (RFC 5685): a gateway sends its clients to another gateway.

- Client (``accept-redirect=yes``): REDIRECT_SUPPORTED in IKE_SA_INIT (§4); a REDIRECT
  in the IKE_SA_INIT answer (whose nonce data must be our Ni, §4) or in an
  INFORMATIONAL of an established IKE SA (§5) sends it to the new gateway, if
  ``accept-redirect-to=`` (when set) lists it; the new IKE_SA_INIT carries
  REDIRECTED_FROM (§5).  A redirect to anywhere else is refused with a log line.
- Gateway: ``global-redirect=yes`` (or ``auto`` while the DoS defence is busy)
  with ``global-redirect-to=`` answers IKE_SA_INIT requests that carry
  REDIRECT_SUPPORTED (or REDIRECTED_FROM) with REDIRECT only (no state, §4);
  ``Engine.redirect`` (``ipsec redirect --name/--peer-ip --to``) sends REDIRECT
  to established clients that said they support it (§5).
- Redirect during IKE_AUTH (§6), Libreswan's per-conn ``send-redirect=yes`` (or
  ``auto``: while the DoS defence is busy) with ``redirect-to=``: once the client is
  authenticated (so a redirect can be decided by its ID, the conn it matched), the
  gateway answers IDr, AUTH and REDIRECT, with no Child SA and no lease; the client
  verifies AUTH first, then deletes the IKE SA (INFORMATIONAL DELETE) and starts
  again at the new gateway.  A client that never deletes it is dropped by the
  gateway after ``AUTH_REDIRECT_GRACE`` seconds.

The gateway identity (§10) is an IPv4 or IPv6 address (GW Ident Type 1 or 2) or an
FQDN (type 3).  A gateway sends a name as it was configured (``redirect-to=``,
``global-redirect-to=``, ``ipsec redirect --to``), as Libreswan does.  A client
resolves a received name off the event loop: a ``Compute(io=True)`` job calling
``EngineSettings.resolver`` (the daemon's ``getaddrinfo``; sans-I/O, the engine
never resolves), then follows the redirect to the first address of the current
peer's family (else the first one), after the same ``accept-redirect-to=`` and
loop checks as an address.  A name that does not resolve (or no resolver) fails
the redirect with a log line; the client then acts as on any refused redirect.
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Callable, Sequence
from functools import partial
from ipaddress import IPv4Address, IPv6Address

from pypluto.config.gateways import Gateway, parse_gateway
from pypluto.config.model import Connection
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.params import IPAddress
from pypluto.wire.payloads import Payload

INFO = ExchangeType.INFORMATIONAL
GW_IPV4, GW_IPV6, GW_FQDN = 1, 2, 3

# seconds a gateway keeps an IKE SA it redirected in IKE_AUTH, waiting for the client's
# Delete (§6 leaves the deletion to the client)
AUTH_REDIRECT_GRACE = 10.0

# RFC 5685 §7 (redirect loops), as Libreswan: at most this many redirects of one
# connection within LOOP_PERIOD seconds are followed
MAX_REDIRECTS = 5
LOOP_PERIOD = 300.0
# conn id -> (the conn, when it was redirected); the weak reference tells a reused id
_HISTORY: dict[int, tuple[weakref.ref[Connection], list[float]]] = {}

# conn id -> the gateway that redirected us, for the next IKE_SA_INIT (REDIRECTED_FROM)
_FROM: dict[int, IPAddress] = {}
# conn id -> (the conn, the peer address it had before a redirect not yet answered)
_HOME: dict[int, tuple[weakref.ref[Connection], IPAddress]] = {}


def encode_gw(gw: Gateway, nonce: bytes = b"") -> bytes:
    """GW Ident Type, length, identity, [nonce data] (§8, §9, §10)."""
    if isinstance(gw, str):
        raw = gw.encode("ascii")
        return bytes([GW_FQDN, len(raw)]) + raw + nonce
    t = GW_IPV4 if gw.version == 4 else GW_IPV6
    return bytes([t, len(gw.packed)]) + gw.packed + nonce


def decode_gw(data: bytes) -> tuple[Gateway, bytes] | None:
    """(gateway address, or an FQDN as text; nonce data), or None if malformed."""
    if len(data) < 2 or len(data) < 2 + data[1]:
        return None
    t, n = data[0], data[1]
    ident, rest = data[2:2 + n], data[2 + n:]
    if t == GW_IPV4 and n == 4:
        return ipaddress.IPv4Address(ident), rest
    if t == GW_IPV6 and n == 16:
        return ipaddress.IPv6Address(ident), rest
    if t == GW_FQDN and n:
        try:
            name = parse_gateway(ident.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            return None
        return (name, rest) if isinstance(name, str) else None  # an address as text: no
    return None


def _accepts(conn: Connection) -> bool:
    return conn.raw.get("accept-redirect", "no").lower() in ("yes", "true", "on", "y", "1")


def _allowed(conn: Connection, target: IPAddress, name: str | None = None) -> bool:
    """``accept-redirect-to=`` (addresses, networks or names) lets us go to ``target``
    (the address ``name`` resolved to, when the gateway named itself)."""
    allowed = conn.raw.get("accept-redirect-to", "").replace(",", " ").split()
    if not allowed or any(a.lower() == "%any" for a in allowed):  # ipsec.conf(5): any
        return True
    for a in allowed:
        if name is not None and a.rstrip(".").lower() == name.lower():
            return True
        try:
            if target in ipaddress.ip_network(a, strict=False):
                return True
        except ValueError:
            continue
    return False


# ------------------------------------------------------------------ client
def init_notifies(conn: Connection) -> list[Payload]:
    """REDIRECT_SUPPORTED (and REDIRECTED_FROM after a redirect) for IKE_SA_INIT."""
    if not _accepts(conn):
        return []
    out: list[Payload] = [codec.notify(N.REDIRECT_SUPPORTED)]
    frm = _FROM.get(id(conn))  # again in a COOKIE / INVALID_KE retry (RFC 7296 §2.6)
    if frm is not None:
        out.append(codec.notify(N.REDIRECTED_FROM, encode_gw(frm)))
    return out


def arrived(conn: Connection) -> None:
    """The new gateway answered IKE_SA_INIT: no more REDIRECTED_FROM for ``conn``."""
    _FROM.pop(id(conn), None)
    _HOME.pop(id(conn), None)


def unreachable(conn: Connection) -> IPAddress | None:
    """The gateway we were redirected to never answered IKE_SA_INIT: point ``conn``
    back at the gateway it had before (as Libreswan, whose revival then goes there
    again) instead of retrying a dead one for ever.  The address gone back to, or None
    (``conn`` was not redirected)."""
    ref, home = _HOME.pop(id(conn), (None, None))
    if ref is None or ref() is not conn or home is None:  # not redirected (a reused id)
        return None
    _FROM.pop(id(conn), None)
    conn.remote.host_addr = home
    return home


# what the caller does once the redirect is followed / when it fails after all
Then = Callable[[float], list[Action]]


def follow(ctx: IKEContext, ike: IKESA, data: bytes, nonce: bytes | None, now: float,
           acts: list[Action], go: Then, refused: Then | None = None) -> bool:
    """The peer redirects us: go to the new gateway if we may.

    False: the REDIRECT is not followed (logged); the caller goes on as without it.
    True: handled.  To an address, ``go(now)`` has run (its actions are in ``acts``).
    To a name, a ``Compute(io=True)`` resolving it is in ``acts``; when the address
    comes back, and passes ``accept-redirect-to=``, ``go`` runs, else (no address,
    not allowed) ``refused`` does (a failed redirect is logged either way).
    """
    target = _check(ctx, ike, data, nonce, now, acts)
    if target is None:
        ctx.stats.event("redirect.failed")
        return False
    if not isinstance(target, str):
        _going(ctx, ike, target, None, acts)
        acts += go(now)
        return True
    resolver = getattr(ctx.settings, "resolver", None)
    if resolver is None:
        ctx.log(acts, f"ignoring a REDIRECT to the name {target!r}: no resolver to look "
                "it up", ike, level="warning")
        ctx.stats.event("redirect.failed")
        return False
    ctx.log(acts, f"redirected to new gateway {target}: resolving the name", ike)
    family = ike.remote.addr.version
    ike.redirected = True  # until the name fails: no second REDIRECT meanwhile

    def resolved(result: object, t: float) -> list[Action]:
        out: list[Action] = []

        def failed(why: str) -> list[Action]:  # the client stays, free to be redirected
            ctx.log(out, f"redirect to {why}", ike, level="warning")
            ctx.stats.event("redirect.failed")
            ike.redirected = False
            return out + (refused(t) if refused is not None else [])

        addrs = [a for a in result if isinstance(a, IPv4Address | IPv6Address)] \
            if isinstance(result, list | tuple) else []
        if not addrs:
            why = f"{type(result).__name__}: {result}" if isinstance(result, BaseException) \
                else "no address"
            return failed(f"{target} failed: the name does not resolve ({why})")
        addr = next((a for a in addrs if a.version == family), addrs[0])
        bad = _unusable(ctx, ike, addr)
        if bad:
            return failed(f"{target} ({addr}) failed: {bad}")
        if not _allowed(ike.conn, addr, target):
            return failed(f"{target} ({addr}) failed: not in accept-redirect-to=")
        _going(ctx, ike, addr, target, out)
        return out + go(t)

    acts += ctx.compute(ike, partial(resolver, target), resolved, now, io=True)
    return True


def _check(ctx: IKEContext, ike: IKESA, data: bytes, nonce: bytes | None, now: float,
           acts: list[Action]) -> Gateway | None:
    """The REDIRECT's gateway, if we may follow it (names: before resolving)."""
    conn = ike.conn
    got = decode_gw(data)
    if got is None:
        ctx.log(acts, "ignoring a malformed REDIRECT", ike, level="warning")
        return None
    target, rest = got
    if nonce is not None and rest != nonce:
        ctx.log(acts, "ignoring a REDIRECT whose nonce data is not our Ni", ike,
                level="warning")
        return None
    if nonce is None and rest:  # §8: Nonce Data only in an IKE_SA_INIT answer
        ctx.log(acts, "ignoring a malformed REDIRECT (data after the GW identity)", ike,
                level="warning")
        return None
    if not _accepts(conn):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: accept-redirect=no", ike,
                level="warning")
        return None
    bad = _unusable(ctx, ike, target) if not isinstance(target, str) else ""
    if bad:
        ctx.log(acts, f"ignoring a REDIRECT to {target}: {bad}", ike, level="warning")
        return None
    if not isinstance(target, str) and not _allowed(conn, target):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: not in accept-redirect-to=", ike,
                level="warning")
        return None
    if _loop(conn, now):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: redirect loop ({MAX_REDIRECTS} "
                f"redirects within {LOOP_PERIOD:.0f} s, RFC 5685 §7)", ike, level="warning")
        return None
    return target


def _unusable(ctx: IKEContext, ike: IKESA, addr: IPAddress) -> str:
    """Why ``addr`` cannot be a gateway for this IKE SA ('' if it can): no unicast
    address of the family the connection's local end has, or one of our own."""
    if addr.version != ike.local.addr.version:
        return f"not an IPv{ike.local.addr.version} address like ours"
    if addr.is_unspecified or addr.is_multicast or \
            addr == ipaddress.IPv4Address("255.255.255.255"):
        return "not a unicast address"
    if addr.is_loopback and not ike.remote.addr.is_loopback:
        return "a loopback address"
    if addr == ike.local.addr or addr in getattr(ctx, "local_addrs", ()):
        return "one of our own addresses"
    return ""


def _going(ctx: IKEContext, ike: IKESA, addr: IPAddress, name: str | None,
           acts: list[Action]) -> None:
    """Point the connection at the new gateway (as Libreswan), remember where from."""
    conn = ike.conn
    old = ike.remote.addr
    shown = f"{name} ({addr})" if name is not None else str(addr)
    ctx.log(acts, f"redirected by {old} to new gateway {shown}", ike)
    conn.remote.host_addr = addr
    _FROM[id(conn)] = old
    ref, _home = _HOME.get(id(conn), (None, None))
    if ref is None or ref() is not conn:
        _HOME[id(conn)] = (weakref.ref(conn), old)
    ike.redirected = True  # it is to go: a further REDIRECT is not followed
    ctx.stats.event("redirect.completed")


def _loop(conn: Connection, now: float) -> bool:
    """Record a redirect of ``conn``; True when it is one too many (§7)."""
    ref, times = _HISTORY.get(id(conn), (None, []))
    if ref is None or ref() is not conn:
        times = []
        _HISTORY[id(conn)] = (weakref.ref(conn), times)
    times[:] = [t for t in times if now - t < LOOP_PERIOD]
    if len(times) >= MAX_REDIRECTS:
        return True
    times.append(now)
    for k in [k for k, (r, _) in _HISTORY.items() if r() is None]:
        del _HISTORY[k]  # conns gone
    return False


def restart(ctx: IKEContext, conn: Connection, now: float,
            reauth_of: IKESA | None = None) -> list[Action]:
    """A new IKE SA at the gateway ``conn`` now names; a redirected reauthentication
    (``reauth_of``: the IKE SA it replaces, still up at the old gateway) stays one, so
    that the old IKE SA is deleted once the new one is up (as without a redirect)."""
    if reauth_of is not None and not ctx.is_live(reauth_of):
        reauth_of = None
    return ctx.initiate_ike(conn, now, reauth_of=reauth_of)


class Redirected(Task):
    """An established IKE SA receives REDIRECT in an INFORMATIONAL (§5)."""

    exchange = INFO

    def __init__(self, to: Gateway | None = None) -> None:
        self.to = to

    # gateway: send it
    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        if self.to is None:
            return None
        ctx.log(acts, f"redirecting the peer to {self.to}", ike)
        return [codec.notify(N.REDIRECT, encode_gw(self.to))]

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        return []

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        from pypluto.ike.tasks.liveness import peer_dead
        return peer_dead(ctx, ike, now, "no answer to REDIRECT")

    # client: follow it
    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return codec.has_notify(payloads, N.REDIRECT)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        from pypluto.ike.tasks.ike_delete import delete_ike
        acts: list[Action] = []
        data = next(bytes(p.data) for p in codec.notifies(req.payloads)
                    if p.notify_type == N.REDIRECT)
        acts += ctx.send_response(ike, INFO, req.msgid, [], req.local, req.remote)
        if not ike.first_initiator:  # only the client follows (whoever rekeyed the SA)
            return acts
        if ike.redirected:  # a REDIRECT is followed already (or its name being resolved)
            ctx.log(acts, "ignoring a REDIRECT: this IKE SA is being redirected already", ike,
                    level="warning")
            return acts

        def go(t: float) -> list[Action]:  # §5: delete the old IKE SA, then go
            return delete_ike(ctx, ike, t) + restart(ctx, ike.conn, t)

        follow(ctx, ike, data, None, now, acts, go)  # a failure: we stay where we are
        return acts


# ------------------------------------------------------------------ gateway
# id(EngineSettings) -> (those settings, how many clients global-redirect= sent on so far)
_TURN: dict[int, tuple[weakref.ref[object], int]] = {}


def init_target(ctx: IKEContext, payloads: Sequence[Payload], busy: bool) -> Gateway | None:
    """Where ``global-redirect=`` sends a new client in IKE_SA_INIT (§4), or None."""
    mode = ctx.settings.global_redirect
    if mode == "no" or not ctx.settings.global_redirect_to:
        return None
    if mode == "auto" and not busy:
        return None
    if not supports(payloads):
        return None
    settings = ctx.settings
    targets = settings.global_redirect_to  # several: in turn, as Libreswan
    ref, n = _TURN.get(id(settings), (None, 0))
    if ref is None or ref() is not settings:  # new settings (or a reused id)
        n = 0
    _TURN[id(settings)] = (weakref.ref(settings), n + 1)
    return targets[n % len(targets)]


def send_mode(conn: Connection) -> str:
    """``send-redirect=``: "yes", "auto" or "no" (Libreswan's spellings of yes/no too)."""
    v = conn.raw.get("send-redirect", "no").lower()
    return {"true": "yes", "on": "yes", "y": "yes", "1": "yes", "false": "no", "off": "no",
            "n": "no", "0": "no"}.get(v, v)


def conn_targets(conn: Connection) -> list[Gateway]:
    """``redirect-to=`` as addresses and names (the config layer refuses anything else)."""
    out: list[Gateway] = []
    for w in conn.raw.get("redirect-to", "").replace(",", " ").split():
        try:
            out.append(parse_gateway(w))
        except ValueError:
            continue
    return out


def auth_target(ike: IKESA, conn: Connection, busy: bool) -> Gateway | None:
    """Where ``send-redirect=``/``redirect-to=`` of the authenticated peer's conn sends it
    in IKE_AUTH (§6), or None: only a client that sent REDIRECT_SUPPORTED is redirected,
    and ``auto`` redirects only while the DoS defence is busy (as Libreswan)."""
    mode = send_mode(conn)
    if mode == "no" or (mode == "auto" and not busy) or not ike.redirect_ok:
        return None
    targets = conn_targets(conn)
    if not targets:
        return None
    return targets[ike.serial % len(targets)]  # several: spread the clients evenly


def supports(payloads: Sequence[Payload]) -> bool:
    """The client supports redirect: REDIRECT_SUPPORTED, or REDIRECTED_FROM (§5), which
    a redirected Libreswan client sends instead (Libreswan and strongSwan gateways take
    either)."""
    return codec.has_notify(payloads, N.REDIRECT_SUPPORTED) or \
        codec.has_notify(payloads, N.REDIRECTED_FROM)
