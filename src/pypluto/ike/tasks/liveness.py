"""Liveness check: an empty INFORMATIONAL request (RFC 7296 §2.4; Libreswan's DPD).

The responder side also answers any INFORMATIONAL request that no other task claims
(no Delete payload) with an empty response; unknown status notifies are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypluto.iana import ExchangeType
from pypluto.ike.actions import Action, EventKind, FailReason, Log
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.wire.payloads import Payload


def peer_dead(ctx: IKEContext, ike: IKESA, now: float, why: str) -> list[Action]:
    """The peer stopped answering (§2.4): remove everything; restart if configured."""
    acts: list[Action] = [Log(f"{why}; peer is not responding, declaring it dead",
                              level="warning", conn=ike.conn.name, serial=ike.serial)]
    acts += ctx.drop_ike(ike, now, "peer dead", EventKind.PEER_DEAD, FailReason.TIMEOUT)
    conn = ike.conn
    if conn.name in ctx.connections and (conn.dpdaction == "restart" or
                                         conn.auto in ("start", "up")) \
            and conn.remote.host_addr is not None and not ctx.ike_of(conn.name):
        ctx.log(acts, "restarting connection", ike)
        acts += ctx.initiate_ike(conn, now)
    return acts


class Liveness(Task):
    """An empty INFORMATIONAL request; no answer within dpdtimeout means the peer is dead."""

    exchange = ExchangeType.INFORMATIONAL
    liveness = True

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        ctx.log(acts, "sending liveness probe", ike, level="debug")
        ctx.stats.events["dpd.sent"] += 1
        return []

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        ctx.stats.events["dpd.recv"] += 1
        return []

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return peer_dead(ctx, ike, now, "liveness probe timed out")

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True  # the last INFORMATIONAL responder: anything without a Delete

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        acts: list[Action] = []
        if not req.payloads:
            ctx.log(acts, "answering liveness probe", ike, level="debug")
            ctx.stats.events["dpd.replied"] += 1
        return acts + ctx.send_response(ike, cls.exchange, req.msgid, [])
