"""Deleting Child SAs: INFORMATIONAL with Delete payloads of inbound SPIs (RFC 7296 §1.4.1).

The responder deletes the Child SAs whose outbound SPI is named and answers with the
matching inbound SPIs; when our own Delete crossed the peer's, it names none.
"""

from __future__ import annotations

from collections.abc import Sequence

from pypluto.iana import ExchangeType, ProtocolID
from pypluto.ike import codec
from pypluto.ike.actions import Action
from pypluto.ike.context import IKEContext, meant_up
from pypluto.ike.sa import IKESA, ChildSA, ChildState, IKEState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.liveness import peer_dead
from pypluto.wire import payloads as wp
from pypluto.wire.payloads import Payload


def _proto_id(c: ChildSA) -> ProtocolID:
    return ProtocolID.AH if c.protocol == "ah" else ProtocolID.ESP


def _deletes(children: list[ChildSA]) -> list[Payload]:
    """One Delete payload per protocol, naming our inbound SPIs (RFC 7296 §3.11)."""
    out: list[Payload] = []
    for proto in (ProtocolID.ESP, ProtocolID.AH):
        spis = [c.spi_in.to_bytes(4, "big") for c in children if _proto_id(c) == proto]
        if spis:
            out.append(codec.delete(proto, spis))
    return out


class ChildDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def __init__(self, children: list[ChildSA]) -> None:
        self.children = children

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        live = [c for c in self.children if c in ike.children]
        if not live:
            return None
        self.children = live
        for c in live:
            c.to(ChildState.DELETING)
        return _deletes(live)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        for c in self.children:
            acts += ctx.remove_child(c, now)
        return acts

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return peer_dead(ctx, ike, now, "no answer to Delete of a Child SA")

    def restart(self, ctx: IKEContext, ike: IKESA) -> ChildDelete:
        return type(self)(self.children)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return any(isinstance(p, wp.DeletePayload) for p in payloads)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        acts: list[Action] = []
        out: list[Payload] = []
        gone: dict[ChildSA, None] = {}  # in order; a set for the SPIs named again
        # ours by (protocol, outbound SPI): one look-up per SPI named, however many
        # Child SAs (a Delete of 16,000 unknown SPIs once scanned them all for each)
        ours: dict[tuple[int, int], ChildSA] = {(_proto_id(c), c.spi_out): c
                                                for c in ike.children}
        theirs: dict[tuple[int, int], ChildSA] | None = None  # (§2.8.2 below)
        for d in req.payloads:
            if not isinstance(d, wp.DeletePayload) or \
                    d.protocol_id not in (ProtocolID.ESP, ProtocolID.AH):
                continue
            mine = []
            for spi in d.spis:
                if len(spi) != 4:
                    continue
                val = int.from_bytes(spi, "big")
                c = ours.get((d.protocol_id, val))
                if c is None and (ike.state is IKEState.DELETING and ike.nonce_min
                                  or ike.peer_rekeys):
                    # §2.8.2: our redundant IKE SA of a rekey collision, its Child SAs
                    # gone to the surviving one of the same peer; the peer had not seen
                    # the collision yet when it sent this (unanswered, it would keep
                    # the Child SA half-deleted, or drop it while we keep it).  So too
                    # an IKE SA the peer rekeyed (§2.18), its Delete sent before our
                    # answer reached it (a window > 1)
                    if theirs is None:
                        theirs = {(_proto_id(x), x.spi_out): x for p in ctx.peers_of(ike)
                                  if p is not ike for x in p.children}
                    c = theirs.get((d.protocol_id, val))
                o = ike.outstanding
                if c is None and o is not None and isinstance(o.task, Task):
                    o.task.peer_deletes(val)  # our CREATE_CHILD_SA in flight makes it?
                if c is None or c in gone:  # an SPI named twice is answered once
                    continue
                gone[c] = None
                if c.state is not ChildState.DELETING:  # our Delete crossed theirs (§1.4.1)
                    mine.append(c.spi_in.to_bytes(4, "big"))
            # one Delete payload answers each, naming none when nothing of ours went
            # or our own Delete crossed it: Libreswan 5.2 treats an answer to its
            # Child SA Delete without one as fatal and drops the whole IKE SA
            out.append(codec.delete(d.protocol_id, mine))
        for c in gone:
            ctx.log(acts, "received Delete SA payload: deleting Child SA", c)
            acts += ctx.remove_child(c, now)
            c.rekeying = True  # a queued rekey of it is pointless now
        acts += ctx.send_response(ike, cls.exchange, req.msgid, out)
        return acts + revive_children(ctx, ike, list(gone), now)


class UnknownChildDelete(ChildDelete):
    """We refused the peer's answer for a Child SA it installed: tell it to delete (§1.4.1)."""

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        return _deletes(self.children)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        return []


def delete_children(ctx: IKEContext, ike: IKESA, children: list[ChildSA], now: float
                    ) -> list[Action]:
    """Delete Child SAs: with a Delete request when the IKE SA is up, else locally."""
    if not ike.established:
        acts: list[Action] = []
        for c in children:
            acts += ctx.remove_child(c, now)
        return acts
    return ctx.queue(ike, ChildDelete(children), now)


def revive_children(ctx: IKEContext, ike: IKESA, gone: list[ChildSA], now: float
                    ) -> list[Action]:
    """Libreswan's revival of a Child SA: a conn meant to stay up (``meant_up``) whose
    Child SA went without a successor (the peer deleted it, or it reached its hard
    limit) gets a new Child SA on the same IKE SA, unless another one of it is up."""
    acts: list[Action] = []
    if not ike.established or ike.replaced or not ctx.is_live(ike):
        return acts
    done: set[str] = set()
    for c in gone:
        conn = c.conn
        if c.replaced or conn.name in done or ctx.connections.get(conn.name) is not conn \
                or not meant_up(ctx, conn):
            continue
        if any(o is not c and o.conn.name == conn.name and not o.replaced and
               o.state is ChildState.ESTABLISHED for o in ike.children):
            continue  # a successor (the peer rekeyed it) or another Child SA of it
        done.add(conn.name)
        ctx.log(acts, "connection is supposed to remain up; initiating a new Child SA", c)
        acts += ctx.create_child(ike, conn, now)
    return acts


def hand_over(ctx: IKEContext, src: IKESA, dst: IKESA) -> None:
    """§2.8.2: ``src`` is a redundant IKE SA (the peer's, of a rekey collision) whose
    Child SAs went to ``dst``; its Child SA exchanges go with them, the one in flight
    too: it starts again on ``dst``.  At the peer, ``src`` is the redundant IKE SA it
    made, without Child SAs once it saw the collision and about to go, so the
    request in flight there did nothing (or, a Delete, what its restart does again)
    and is forgotten.  Left on ``src``, its answer (or ``src``'s Delete, which
    abandons it) never reached the Child SAs: one stayed half-deleted for ever, or
    its rekey was lost."""
    o = src.outstanding
    if o is not None and isinstance(o.task, Task):
        again = o.task.restart(ctx, src)
        if again is not None:
            src.outstanding = None
            dst.tasks.append(again)
    for t in list(src.tasks):
        again = t.restart(ctx, src) if isinstance(t, Task) else None
        if again is not None:
            src.tasks.remove(t)
            dst.tasks.append(again)


def delete_spi_unknown(ctx: IKEContext, ike: IKESA, c: ChildSA, now: float) -> list[Action]:
    if not c.spi_out:
        return []
    c.to(ChildState.DELETING)
    return ctx.queue(ike, UnknownChildDelete([c]), now)
