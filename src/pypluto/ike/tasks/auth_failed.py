"""Telling the responder that it failed authentication (RFC 7296 §2.21.2).

When the initiator cannot authenticate the responder (its AUTH, certificate or ID in
the IKE_AUTH response), the responder has already established its IKE SA and Child
SA.  §2.21.2 lets the initiator say so in a separate INFORMATIONAL exchange ("an
exception for the general rule of not starting new exchanges based on errors in
responses"); strongSwan does, once, without waiting for the answer, and so do we
(``send``).  The responder that receives it deletes the IKE SA with its Child SAs,
where it would otherwise keep a tunnel to a peer that has given up on it until
liveness or a rekey notices (``respond``).

Only the peer that holds the IKE SA's keys can send it: the message is protected
like any other INFORMATIONAL.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action, EventKind, FailReason, Log
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.wire.payloads import Payload


class AuthFailedNotice(Task):
    """INFORMATIONAL with N(AUTHENTICATION_FAILED): sent once (``send``), answered."""

    exchange = ExchangeType.INFORMATIONAL

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        return [codec.notify(N.AUTHENTICATION_FAILED)]

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        return []

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return []

    @staticmethod
    def send(ctx: IKEContext, ike: IKESA) -> list[Action]:
        """The notice, outside the window and never retransmitted: the caller drops the
        IKE SA right after (as strongSwan does)."""
        acts: list[Action] = []
        ctx.log(acts, "sending INFORMATIONAL with AUTHENTICATION_FAILED (RFC 7296 "
                "§2.21.2)", ike, level="debug")
        return acts + ctx.send_now(ike, ExchangeType.INFORMATIONAL,
                                   [codec.notify(N.AUTHENTICATION_FAILED)])

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return codec.has_notify(payloads, N.AUTHENTICATION_FAILED)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        why = "the peer could not authenticate us (INFORMATIONAL with AUTHENTICATION_FAILED)"
        acts: list[Action] = [Log(f"{why}; deleting IKE SA", level="warning",
                                  conn=ike.conn.name, serial=ike.serial)]
        acts += ctx.send_response(ike, cls.exchange, req.msgid, [])
        return acts + ctx.drop_ike(ike, now, "", EventKind.FAILED, FailReason.AUTHENTICATION)
