"""CREATE_CHILD_SA rekeying a Child SA (RFC 7296 §1.3.3, §2.8; collisions §2.8.1).

The new Child SA carries REKEY_SA with the old inbound SPI.  When both ends rekeyed
the same SA, the new SA made with the lowest of the four nonces is redundant and is
deleted by the end that initiated it; the other initiator deletes the old SA.  A
rekey request for an SA that we already replaced is answered TEMPORARY_FAILURE
(§2.25).  The responder side is ``child_create.respond_child``.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action
from pypluto.ike.codec import Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildSA
from pypluto.ike.tasks.base import Request
from pypluto.ike.tasks.child_create import ChildCreate, respond_child


class ChildRekey(ChildCreate):
    """Rekey ``old``: a new Child SA with its selectors, then ``old`` is deleted."""

    def __init__(self, old: ChildSA, group: int | None = None) -> None:
        super().__init__(old.conn, old, group)

    def retry_with(self, group: int | None) -> ChildCreate:
        assert self.old is not None
        return ChildRekey(self.old, group)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return codec.has_notify(payloads, N.REKEY_SA)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        return respond_child(ctx, ike, req, now)


def start_rekey(ctx: IKEContext, ike: IKESA, c: ChildSA, now: float) -> list[Action]:
    """Queue the rekey of ``c`` (it is marked so that it is not queued twice)."""
    c.rekeying = True
    return ctx.queue(ike, ChildRekey(c), now)
