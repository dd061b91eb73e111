"""Postquantum Preshared Keys in IKE_SA_INIT and IKE_AUTH (RFC 8784).

``ppk=`` of a conn (Libreswan's ipsec.conf(5)): ``no`` (never) neither proposes nor
accepts a PPK; ``permit`` and ``propose`` (Libreswan 5.2 treats them alike, as its
documentation says: "we allow the use of PPK") propose one and fall back to the
normal keys with NO_PPK_AUTH when the peer has no PPK; ``insist`` proposes one and
fails without it (no NO_PPK_AUTH is sent, none is accepted).

The exchange (RFC 8784 §3):

- IKE_SA_INIT: both sides announce USE_PPK (empty notify).  The responder answers
  USE_PPK when the initiator sent it and one of the candidate conns allows a PPK.
  An initiator with ``ppk=insist`` whose peer does not answer USE_PPK fails.
- IKE_AUTH request: the initiator picks its PPK (the first of ``ppk-ids=`` that
  ``ipsec.secrets`` holds, else the PPKS record that matches the conn's IDs), mixes
  it into SK_d, SK_pi and SK_pr (``crypto.keys.apply_ppk``: SK' = prf+(PPK, SK)),
  sends PPK_IDENTITY (type PPK_ID_FIXED, then the PPK_ID) and, unless it insists,
  NO_PPK_AUTH: the AUTH data computed with the unmixed SK_pi.
- The responder looks the PPK_ID up, restricted to its ``ppk-ids=`` when set (a
  conn gets exactly what it allows; Libreswan 5.2's responder takes any PPKS record
  with that PPK_ID).
  Found: it mixes the PPK, verifies AUTH and answers PPK_IDENTITY (empty).  Not
  found: with ``ppk=insist`` AUTHENTICATION_FAILED, else it verifies NO_PPK_AUTH
  with the unmixed keys and answers without PPK_IDENTITY.
- The initiator keeps the mixed keys when the response carries PPK_IDENTITY, else
  goes back to the unmixed ones (or fails with ``ppk=insist``).

PPK_IDENTITY_KEY and USE_PPK_INT (PPK in IKE_INTERMEDIATE, RFC 9867 / Libreswan
5.2's draft numbers) need IKE_INTERMEDIATE; pypluto announces neither, so peers
use the RFC 8784 exchange.  A PPK never reaches a log; PPK_IDs do (they are names).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pypluto.config.model import Connection, Identity
from pypluto.crypto.keys import IKEKeys, apply_ppk
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action
from pypluto.ike.codec import Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.wire import payloads as wp

PPK_ID_OPAQUE = 1  # RFC 8784 §3 PPK_ID types
PPK_ID_FIXED = 2
PPK_ID_MAXLEN = 64  # Libreswan's limit on a received PPK_ID


def allows(conn: Connection) -> bool:
    """``ppk=permit|propose|insist``: we propose and accept a PPK."""
    return conn.ppk in ("permit", "propose", "insist")


def insists(conn: Connection) -> bool:
    return conn.ppk == "insist"


def id_desc(ppk_id: bytes) -> str:
    """A PPK_ID for a log line: text when printable, else hex."""
    try:
        text = ppk_id.decode("ascii")
        if text.isprintable():
            return f"'{text}'"
    except UnicodeDecodeError:
        pass
    return "0x" + ppk_id.hex()


def _first(payloads: Sequence[Payload], ntype: int) -> wp.NotifyPayload | None:
    for p in codec.notifies(payloads):
        if p.notify_type == ntype:
            return p
    return None


def _lookup_id(ctx: IKEContext, ppk_id: bytes) -> bytes | None:
    find = getattr(ctx.secrets, "ppk_for", None)
    if find is None:
        return None
    try:
        value = find(ppk_id)
    except Exception:  # a broken store must not kill the exchange
        return None
    return value if isinstance(value, bytes) and value else None


def find_ppk(ctx: IKEContext, conn: Connection, local: Identity | None,
             remote: Identity | None) -> tuple[bytes, bytes] | None:
    """The initiator's (PPK_ID, PPK): the first of ``ppk-ids=`` that the secrets hold,
    or without ``ppk-ids=`` the PPKS record that best matches the IDs (ipsec.conf(5))."""
    if conn.ppk_ids:
        for ppk_id in conn.ppk_ids:
            value = _lookup_id(ctx, ppk_id)
            if value is not None:
                return ppk_id, value
        return None
    find = getattr(ctx.secrets, "ppk_for_ids", None)
    if find is None:
        return None
    try:
        found = find(local, remote)
    except Exception:
        return None
    if not found or not found[0] or not found[1]:
        return None
    return bytes(found[0]), bytes(found[1])


def _mix(ike: IKESA, ppk: bytes) -> None:
    """SK_d, SK_pi, SK_pr := prf+(PPK, SK_x) (RFC 8784 §3); the old ones are kept."""
    assert ike.chosen is not None
    ike.ppk.no_ppk = (ike.sk_d, ike.sk_pi, ike.sk_pr)
    k = apply_ppk(ike.chosen.prf, ppk, IKEKeys(ike.sk_d, b"", b"", b"", b"", ike.sk_pi,
                                               ike.sk_pr))
    ike.sk_d, ike.sk_pi, ike.sk_pr = k.sk_d, k.sk_pi, k.sk_pr
    ike.ppk.used = True


def _unmix(ike: IKESA) -> None:
    if ike.ppk.no_ppk is not None:
        ike.sk_d, ike.sk_pi, ike.sk_pr = ike.ppk.no_ppk
    ike.ppk.no_ppk = None
    ike.ppk.used = False
    ike.ppk.ppk_id = b""


# ------------------------------------------------------------------ IKE_SA_INIT
def init_request(conn: Connection) -> list[Payload]:
    """USE_PPK in our IKE_SA_INIT request when the conn allows a PPK (§3)."""
    return [codec.notify(N.USE_PPK)] if allows(conn) else []


def init_response(ike: IKESA, conns: Sequence[Connection], payloads: Sequence[Payload]
                  ) -> list[Payload]:
    """Responder: USE_PPK back when the peer sent it and a candidate conn allows a PPK.

    Whether the conn that IKE_AUTH picks insists is checked there (the peer's ID
    chooses the conn), so that it can answer AUTHENTICATION_FAILED.
    """
    ike.ppk.negotiated = codec.has_notify(payloads, N.USE_PPK) and any(
        allows(c) for c in (conns or [ike.conn]))
    return [codec.notify(N.USE_PPK)] if ike.ppk.negotiated else []


def init_answer(ike: IKESA, payloads: Sequence[Payload]) -> str | None:
    """Initiator: note USE_PPK in the answer; the reason to fail when we insist (§3)."""
    ike.ppk.negotiated = allows(ike.conn) and codec.has_notify(payloads, N.USE_PPK)
    if insists(ike.conn) and not ike.ppk.negotiated:
        return "connection has ppk=insist but the peer does not support PPK (no USE_PPK " \
            "in its IKE_SA_INIT response)"
    return None


# ------------------------------------------------------------------ IKE_AUTH
def initiator_mix(ctx: IKEContext, ike: IKESA, acts: list[Action], local: Identity | None,
                  remote: Identity | None, no_ppk_auth: Callable[[], bytes]
                  ) -> list[Payload] | str:
    """Initiator, before AUTH is computed: mix the PPK into the keys.

    Returns the notifies to add (PPK_IDENTITY, NO_PPK_AUTH), or the reason to fail
    (``ppk=insist`` without a PPK).  ``no_ppk_auth`` computes our AUTH data with the
    keys as they are (called before the mix).
    """
    conn = ike.conn
    if not ike.ppk.negotiated:
        return []
    found = find_ppk(ctx, conn, local, remote)
    if found is None:
        where = "ppk-ids=" + ",".join(i.decode(errors="replace") for i in conn.ppk_ids) \
            if conn.ppk_ids else "the connection's IDs"
        if insists(conn):
            return f"connection has ppk=insist but ipsec.secrets has no PPK for {where}"
        ctx.log(acts, f"no PPK in ipsec.secrets for {where}; continuing without PPK", ike,
                level="warning")
        ike.ppk.negotiated = False
        return []
    ppk_id, value = found
    out: list[Payload] = [codec.notify(N.PPK_IDENTITY, bytes([PPK_ID_FIXED]) + ppk_id)]
    if not insists(conn):
        out.append(codec.notify(N.NO_PPK_AUTH, no_ppk_auth()))
    _mix(ike, value)
    ike.ppk.ppk_id = ppk_id
    ctx.log(acts, f"proposing PPK {id_desc(ppk_id)} (RFC 8784)"
            + ("" if insists(conn) else " with NO_PPK_AUTH"), ike, level="debug")
    return out


def initiator_confirm(ctx: IKEContext, ike: IKESA, acts: list[Action],
                      payloads: Sequence[Payload]) -> str | None:
    """Initiator, before the responder's AUTH is verified: keep the mixed keys when the
    peer confirmed the PPK (PPK_IDENTITY), else go back to the unmixed ones (§3).
    Returns the reason to fail, if any."""
    confirmed = _first(payloads, N.PPK_IDENTITY) is not None
    if not ike.ppk.used:
        if confirmed:
            return "peer answered PPK_IDENTITY but no PPK was proposed"
        return None
    if confirmed:
        ctx.log(acts, f"IKE SA keys mixed with PPK {id_desc(ike.ppk.ppk_id)} (RFC 8784)",
                ike)
        ike.ppk.no_ppk = None
        return None
    if insists(ike.conn):
        return "connection has ppk=insist but the peer did not use the PPK (no " \
            "PPK_IDENTITY in its IKE_AUTH response)"
    ctx.log(acts, f"peer has no PPK {id_desc(ike.ppk.ppk_id)}; continuing without PPK "
            "(NO_PPK_AUTH)", ike, level="warning")
    _unmix(ike)
    return None


def responder_mix(ctx: IKEContext, ike: IKESA, conn: Connection, acts: list[Action],
                  payloads: Sequence[Payload]) -> tuple[str | None, bytes | None]:
    """Responder, before the initiator's AUTH is verified (§3).

    Returns (the reason to answer AUTHENTICATION_FAILED, the AUTH data to verify
    instead of the AUTH payload's: NO_PPK_AUTH when falling back).  When the PPK is
    found it is mixed into the keys here.
    """
    if not ike.ppk.negotiated:
        if insists(conn):
            return ("connection has ppk=insist but the peer did not propose a PPK (no "
                    "USE_PPK)", None)
        return None, None
    pid = _first(payloads, N.PPK_IDENTITY)
    nauth = _first(payloads, N.NO_PPK_AUTH)
    if pid is None:  # the initiator had no PPK and went on without
        if insists(conn):
            return "connection has ppk=insist but the peer sent no PPK_IDENTITY", None
        return None, None
    data = bytes(pid.data)
    ppk_id = data[1:]
    value: bytes | None = None
    if not data or data[0] != PPK_ID_FIXED or not ppk_id or len(ppk_id) > PPK_ID_MAXLEN:
        why = f"unusable PPK_IDENTITY ({len(data)} bytes, type {data[0] if data else '-'})"
    elif not allows(conn):
        why = "connection has ppk=never"
    elif conn.ppk_ids and ppk_id not in conn.ppk_ids:
        why = f"PPK_ID {id_desc(ppk_id)} is not in ppk-ids="
    else:
        value = _lookup_id(ctx, ppk_id)
        why = f"no PPK for PPK_ID {id_desc(ppk_id)} in ipsec.secrets"
    if value is not None:
        _mix(ike, value)
        ike.ppk.no_ppk = None
        ike.ppk.ppk_id = ppk_id
        ctx.log(acts, f"IKE SA keys mixed with PPK {id_desc(ppk_id)} (RFC 8784)", ike)
        return None, None
    if insists(conn):
        return f"connection has ppk=insist and {why}", None
    if nauth is None:
        return f"{why} and the peer sent no NO_PPK_AUTH (it insists on a PPK)", None
    if not nauth.data:  # no AUTH data: never verify the AUTH payload in its place
        return f"{why} and the peer's NO_PPK_AUTH is empty", None
    ctx.log(acts, f"{why}; continuing without PPK (NO_PPK_AUTH)", ike, level="warning")
    return None, bytes(nauth.data)


def responder_notifies(ike: IKESA) -> list[Payload]:
    """PPK_IDENTITY (empty) in our IKE_AUTH response when the PPK was used (§3)."""
    return [codec.notify(N.PPK_IDENTITY)] if ike.ppk.used else []
