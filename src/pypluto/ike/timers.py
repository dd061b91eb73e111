"""Time-driven work of one established IKE SA besides retransmits (``task_manager``):
half-open expiry, rekey and replace (RFC 7296 §2.8), liveness (§2.4) and NAT
keepalives (RFC 3948 §2.3)."""

from __future__ import annotations

from pypluto.ike.actions import Action, Log, SendKeepalive
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildState
from pypluto.ike.tasks import child_rekey, ike_followup, ike_rekey
from pypluto.ike.tasks.child_delete import delete_children
from pypluto.ike.tasks.ike_delete import delete_ike
from pypluto.ike.tasks.liveness import Liveness


def service(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    acts: list[Action] = []
    conn = ike.conn
    if ike.halfopen_deadline is not None and now >= ike.halfopen_deadline:
        acts.append(Log("half-open IKE SA expired", level="info", conn=conn.name,
                        serial=ike.serial))
        return acts + ctx.drop_ike(ike, now, "", None)
    if ike.next_keepalive is not None and now >= ike.next_keepalive:
        ike.next_keepalive = now + max(ctx.settings.keep_alive, 1.0)
        acts.append(SendKeepalive(ike.local, ike.remote))
    if not ike.established:
        return acts
    acts += ike_followup.expire(ctx, ike, now)  # RFC 9370 §2.2.3
    if ike.expire_at is not None and now >= ike.expire_at:
        ike.expire_at = None
        ctx.log(acts, "IKE SA expired (ikelifetime)", ike)
        restart = ike.initiator and conn.auto in ("start", "up") and not ike.replaced
        acts += delete_ike(ctx, ike, now)
        if restart and conn.name in ctx.connections:
            acts += ctx.initiate_ike(conn, now)
        return acts
    if ike.rekey_at is not None and now >= ike.rekey_at:
        ike.rekey_at = None
        if conn.reauth and ike.initiator and not ike.replaced and conn.name in ctx.connections:
            ike.replaced = True  # a fresh IKE SA takes over, then this one is deleted
            acts += ctx.initiate_ike(conn, now, reauth_of=ike)
        elif not ike.rekeying and not ike.replaced and conn.rekey:
            acts += ike_rekey.start_rekey(ctx, ike, now)
    for c in list(ike.children):
        if c.state is not ChildState.ESTABLISHED:
            continue
        if c.expire_at is not None and now >= c.expire_at:
            c.expire_at = None
            ctx.log(acts, "Child SA expired (salifetime)", c)
            acts += delete_children(ctx, ike, [c], now)
            continue
        if c.rekey_at is not None and now >= c.rekey_at and not c.rekeying:
            c.rekey_at = None
            if not c.replaced:
                acts += child_rekey.start_rekey(ctx, ike, c, now)
    if ike.next_liveness is not None and now >= ike.next_liveness:
        ike.next_liveness = now + conn.dpddelay if conn.dpddelay > 0 else None
        if ike.outstanding is None and not ike.tasks and now - ike.last_recv >= conn.dpddelay:
            acts += ctx.queue(ike, Liveness(), now)
    return acts
