"""Redirect (RFC 5685): a gateway sends its clients to another gateway.

- Client (``accept-redirect=yes``): REDIRECT_SUPPORTED in IKE_SA_INIT (§4); a REDIRECT
  in the IKE_SA_INIT answer (whose nonce data must be our Ni, §4) or in an
  INFORMATIONAL of an established IKE SA (§5) sends it to the new gateway, if
  ``accept-redirect-to=`` (when set) lists it; the new IKE_SA_INIT carries
  REDIRECTED_FROM (§5).  A redirect to anywhere else is refused with a log line.
- Gateway: ``global-redirect=yes`` (or ``auto`` while the DoS defence is busy)
  with ``global-redirect-to=`` answers IKE_SA_INIT requests that carry
  REDIRECT_SUPPORTED with REDIRECT only (no state, §4);
  ``Engine.redirect`` (``ipsec redirect --name/--peer-ip --to``) sends REDIRECT
  to established clients that said they support it (§5).
- Redirect during IKE_AUTH (§6), Libreswan's per-conn ``send-redirect=yes`` (or
  ``auto``: while the DoS defence is busy) with ``redirect-to=``: once the client is
  authenticated (so a redirect can be decided by its ID, the conn it matched), the
  gateway answers IDr, AUTH and REDIRECT, with no Child SA and no lease; the client
  verifies AUTH first, then deletes the IKE SA (INFORMATIONAL DELETE) and starts
  again at the new gateway.  A client that never deletes it is dropped by the
  gateway after ``AUTH_REDIRECT_GRACE`` seconds.

The gateway identity is an IPv4 or IPv6 address (GW Ident Type 1 or 2); an FQDN
(type 3) is refused by the client, which never resolves names (sans-I/O).
"""

from __future__ import annotations

import ipaddress
import weakref
from collections.abc import Sequence

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


def encode_gw(addr: IPAddress, nonce: bytes = b"") -> bytes:
    """GW Ident Type, length, identity, [nonce data] (§8, §9)."""
    t = GW_IPV4 if addr.version == 4 else GW_IPV6
    return bytes([t, len(addr.packed)]) + addr.packed + nonce


def decode_gw(data: bytes) -> tuple[IPAddress | str, bytes] | None:
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
        return ident.decode("ascii", "replace"), rest
    return None


def _accepts(conn: Connection) -> bool:
    return conn.raw.get("accept-redirect", "no").lower() in ("yes", "true", "on", "y", "1")


def _allowed(conn: Connection, target: IPAddress) -> bool:
    allowed = conn.raw.get("accept-redirect-to", "").replace(",", " ").split()
    if not allowed:
        return True
    for a in allowed:
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
    frm = _FROM.pop(id(conn), None)
    if frm is not None:
        out.append(codec.notify(N.REDIRECTED_FROM, encode_gw(frm)))
    return out


def follow(ctx: IKEContext, ike: IKESA, data: bytes, nonce: bytes | None, now: float,
           acts: list[Action]) -> bool:
    """The peer redirects us: go to the new gateway if we may (True: handled)."""
    ok = _follow(ctx, ike, data, nonce, now, acts)
    ctx.stats.event("redirect.completed" if ok else "redirect.failed")
    return ok


def _follow(ctx: IKEContext, ike: IKESA, data: bytes, nonce: bytes | None, now: float,
            acts: list[Action]) -> bool:
    conn = ike.conn
    got = decode_gw(data)
    if got is None:
        ctx.log(acts, "ignoring a malformed REDIRECT", ike, level="warning")
        return False
    target, rest = got
    if nonce is not None and rest != nonce:
        ctx.log(acts, "ignoring a REDIRECT whose nonce data is not our Ni", ike,
                level="warning")
        return False
    if not _accepts(conn):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: accept-redirect=no", ike,
                level="warning")
        return False
    if isinstance(target, str):
        ctx.log(acts, f"ignoring a REDIRECT to the name {target!r} (only addresses are "
                "followed)", ike, level="warning")
        return False
    if not _allowed(conn, target):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: not in accept-redirect-to=", ike,
                level="warning")
        return False
    if _loop(conn, now):
        ctx.log(acts, f"ignoring a REDIRECT to {target}: redirect loop ({MAX_REDIRECTS} "
                f"redirects within {LOOP_PERIOD:.0f} s, RFC 5685 §7)", ike, level="warning")
        return False
    old = ike.remote.addr
    ctx.log(acts, f"redirected by {old} to new gateway {target}", ike)
    conn.remote.host_addr = target  # as Libreswan: the connection now points there
    _FROM[id(conn)] = old
    return True


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


def restart(ctx: IKEContext, conn: Connection, now: float) -> list[Action]:
    return ctx.initiate_ike(conn, now)


class Redirected(Task):
    """An established IKE SA receives REDIRECT in an INFORMATIONAL (§5)."""

    exchange = INFO

    def __init__(self, to: IPAddress | None = None) -> None:
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
        if not ike.initiator or not follow(ctx, ike, data, None, now, acts):
            return acts
        acts += delete_ike(ctx, ike, now)  # §5: delete the old IKE SA, then go
        acts += restart(ctx, ike.conn, now)
        return acts


# ------------------------------------------------------------------ gateway
def init_target(ctx: IKEContext, payloads: Sequence[Payload], busy: bool) -> IPAddress | None:
    """Where ``global-redirect=`` sends a new client in IKE_SA_INIT (§4), or None."""
    mode = ctx.settings.global_redirect
    if mode == "no" or not ctx.settings.global_redirect_to:
        return None
    if mode == "auto" and not busy:
        return None
    if not codec.has_notify(payloads, N.REDIRECT_SUPPORTED):
        return None
    return ctx.settings.global_redirect_to[0]


def send_mode(conn: Connection) -> str:
    """``send-redirect=``: "yes", "auto" or "no" (Libreswan's spellings of yes/no too)."""
    v = conn.raw.get("send-redirect", "no").lower()
    return {"true": "yes", "on": "yes", "y": "yes", "1": "yes", "false": "no", "off": "no",
            "n": "no", "0": "no"}.get(v, v)


def conn_targets(conn: Connection) -> list[IPAddress]:
    """``redirect-to=`` as addresses (the config layer refuses anything else)."""
    out: list[IPAddress] = []
    for w in conn.raw.get("redirect-to", "").replace(",", " ").split():
        try:
            out.append(ipaddress.ip_address(w))
        except ValueError:
            continue
    return out


def auth_target(ike: IKESA, conn: Connection, busy: bool) -> IPAddress | None:
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
    return codec.has_notify(payloads, N.REDIRECT_SUPPORTED)
