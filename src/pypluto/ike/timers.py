"""Time-driven work of one established IKE SA besides retransmits (``task_manager``):
half-open expiry, rekey and replace (RFC 7296 §2.8), liveness (§2.4) and NAT
keepalives (RFC 3948 §2.3).

The deadlines of every IKE SA live in the engine's one heap (``Engine.schedule``:
one entry per distinct deadline, with the bucket of the SAs due then; stale
entries skipped when popped), and the daemon keeps one timer handle for the
heap's first deadline: no per-SA timer objects.  Liveness deadlines are rounded up to ``pacing.SLOT`` so that the
~3,300 checks a second of 100,000 SAs at ``dpddelay=30`` are 128 timer calls
(small bursts: see ``pacing.SLOT``).
"""

from __future__ import annotations

from pypluto.ike.actions import Action, Log, SendKeepalive
from pypluto.ike.context import IKEContext, meant_up
from pypluto.ike.pacing import slot
from pypluto.ike.sa import IKESA, ChildState
from pypluto.ike.tasks import child_rekey, ike_followup, ike_rekey
from pypluto.ike.tasks.child_delete import delete_children
from pypluto.ike.tasks.ike_delete import delete_ike
from pypluto.ike.tasks.liveness import send_probe


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
        ctx.log(acts, "deleting the replaced IKE SA" if ike.replaced else
                "IKE SA expired (ikelifetime)", ike)
        restart = (ike.initiator or conn.auto == "keep") and meant_up(ctx, conn) \
            and conn.remote.host_addr is not None and not ike.replaced
        acts += delete_ike(ctx, ike, now)
        if restart and conn.name in ctx.connections:
            acts += ctx.initiate_ike(conn, now)
        return acts
    if ike.rekey_at is not None and now >= ike.rekey_at:
        ike.rekey_at = None
        # reauth=yes re-authenticates, never rekeys: also as the IKE SA's responder, to
        # a peer whose address the conn names (Libreswan 5.2 replaces the IKE SA in
        # either role); with a peer at %any it waits for the peer's, else the SA expires
        if conn.reauth and (ike.initiator or conn.remote.host_addr is not None) and \
                not ike.replaced and conn.name in ctx.connections:
            ike.replaced = True  # a fresh IKE SA takes over, then this one is deleted
            acts += ctx.initiate_ike(conn, now, reauth_of=ike)
        elif not ike.rekeying and not ike.replaced and conn.rekey and not conn.reauth:
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
        acts += _liveness(ctx, ike, now)
    return acts


def _liveness(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """The liveness deadline passed (RFC 7296 §2.4).

    A check is only needed when nothing was received from the peer for
    ``dpddelay``: an SA that heard from it (a request, a response, its own probe,
    or ESP on an inbound SA: ``Engine.sa_counters``) is re-armed at
    ``last_recv + dpddelay``; one with an exchange in flight waits
    for that exchange (its answer or its timeout tells); otherwise an empty
    INFORMATIONAL goes out by the fast path (``liveness.send_probe``), and its
    answer re-arms the SA (``liveness.fast_receive``).  Deadlines are rounded up
    to ``pacing.SLOT`` so that many SAs share one timer call, and at most
    ``pacing.PROBES_PER_SLOT`` probes leave per slot (``pacing.ProbePacer``).
    """
    dpd = ike.conn.dpddelay
    if dpd <= 0:
        ike.next_liveness = None
        return []
    if now - ike.last_recv < dpd:
        ike.next_liveness = slot(ike.last_recv + dpd)
        return []
    ike.next_liveness = slot(now + dpd)
    if ike.outstanding is not None or ike.tasks:
        return []
    if not ctx.probes.allow(now):  # this slot's share has left: the next slot
        ike.next_liveness = ctx.probes.later()
        return []
    return send_probe(ctx, ike, now)
