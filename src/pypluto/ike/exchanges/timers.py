"""Time-driven work of one IKE SA: retransmits (§2.1), half-open expiry, rekey and
replace (§2.8), liveness (§2.4) and NAT keepalives (RFC 3948 §2.3)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pypluto.ike import sa as S
from pypluto.ike.actions import Action, Log, SendKeepalive, SendPacket
from pypluto.ike.sa import IKESA

if TYPE_CHECKING:
    from pypluto.ike.engine import Engine


def service(eng: Engine, ike: IKESA, now: float) -> list[Action]:
    from pypluto.ike.exchanges import create_child_sa, ike_sa_init, informational

    acts: list[Action] = []
    conn = ike.conn
    o = ike.outstanding
    if o is not None:
        if now >= o.deadline:
            ike.outstanding = None
            acts += o.task.on_timeout(eng, ike, now)
            if ike.serial not in eng.by_serial:
                return acts
            acts += eng.kick(ike, now)
        elif now >= o.next_retransmit:
            o.tries += 1
            o.interval *= 2
            o.next_retransmit = now + o.interval
            acts.append(Log(f"retransmitting request (message ID {o.msgid}, try {o.tries})",
                            level="debug", conn=conn.name, serial=ike.serial))
            acts += [SendPacket(p, ike.local, ike.remote) for p in o.packets]
    if ike.halfopen_deadline is not None and now >= ike.halfopen_deadline:
        acts.append(Log("half-open IKE SA expired", level="info", conn=conn.name,
                        serial=ike.serial))
        return acts + eng.drop_ike(ike, now, "", None)
    if ike.next_keepalive is not None and now >= ike.next_keepalive:
        ike.next_keepalive = now + max(eng.settings.keep_alive, 1.0)
        acts.append(SendKeepalive(ike.local, ike.remote))
    if not ike.established:
        return acts
    if ike.expire_at is not None and now >= ike.expire_at:
        ike.expire_at = None
        eng.log(acts, "IKE SA expired (ikelifetime)", ike)
        restart = ike.initiator and conn.auto in ("start", "up") and not ike.replaced
        acts += informational.delete_ike(eng, ike, now)
        if restart and conn.name in eng.connections:
            acts += ike_sa_init.initiate(eng, conn, now)
        return acts
    if ike.rekey_at is not None and now >= ike.rekey_at:
        ike.rekey_at = None
        if conn.reauth and ike.initiator and not ike.replaced and conn.name in eng.connections:
            ike.replaced = True  # a fresh IKE SA takes over, then this one is deleted
            acts += ike_sa_init.initiate(eng, conn, now, reauth_of=ike)
        elif not ike.rekeying and not ike.replaced and conn.rekey:
            ike.rekeying = True
            acts += eng.queue(ike, create_child_sa.RekeyIKETask(), now)
    for c in list(ike.children):
        if c.expire_at is not None and now >= c.expire_at and c.state == S.ESTABLISHED_CHILD:
            c.expire_at = None
            eng.log(acts, "Child SA expired (salifetime)", c)
            acts += informational.delete_children(eng, ike, [c], now)
            continue
        if c.state != S.ESTABLISHED_CHILD:
            continue
        if c.rekey_at is not None and now >= c.rekey_at and not c.rekeying:
            c.rekey_at = None
            if not c.replaced and c.state == S.ESTABLISHED_CHILD:
                c.rekeying = True
                acts += eng.queue(ike, create_child_sa.RekeyChildTask(c), now)
    if ike.next_liveness is not None and now >= ike.next_liveness:
        ike.next_liveness = now + conn.dpddelay if conn.dpddelay > 0 else None
        if ike.outstanding is None and not ike.tasks and now - ike.last_recv >= conn.dpddelay:
            acts += eng.queue(ike, informational.LivenessTask(), now)
    return acts
