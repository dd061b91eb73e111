"""Deleting an IKE SA: INFORMATIONAL with a Delete payload for protocol IKE (RFC 7296 §1.4.1).

Deleting the IKE SA deletes its Child SAs with it, on both ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pypluto.config.model import Connection
from pypluto.iana import ExchangeType, ProtocolID
from pypluto.ike import codec
from pypluto.ike.actions import Action, EventKind
from pypluto.ike.context import IKEContext, meant_up
from pypluto.ike.sa import IKESA, IKEState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.child_delete import ChildDelete, hand_over
from pypluto.params import IPNetwork
from pypluto.wire import payloads as wp
from pypluto.wire.payloads import Payload


class IKEDelete(Task):
    exchange = ExchangeType.INFORMATIONAL

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        ctx.log(acts, "sending Delete for the IKE SA", ike)
        ike.to(IKEState.DELETING)
        return [codec.delete(ProtocolID.IKE, [])]

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        return ctx.drop_ike(ike, now, "deleted")

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return ctx.drop_ike(ike, now, "no answer to Delete")

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return any(isinstance(p, wp.DeletePayload) and p.protocol_id == ProtocolID.IKE
                   for p in payloads)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        acts: list[Action] = []
        ctx.log(acts, "received Delete SA payload: deleting IKE SA", ike)
        acts += ctx.send_response(ike, cls.exchange, req.msgid, [])
        # only an IKE SA made by a rekey (``nonce_min`` set) can be in a peer_rekeys list,
        # and peers_of() is every IKE SA of this conn and peer ID (uniqueids=no: maybe
        # thousands, once per Delete)
        for old in ctx.peers_of(ike) if ike.nonce_min else ():
            o = old.outstanding
            if ike in old.peer_rekeys and old.rekeying and o is not None and \
                    o.task.exchange == ExchangeType.CREATE_CHILD_SA:
                # §2.8.2: the peer found the IKE SA it made by rekeying ``old`` redundant
                # and deletes it before the answer to our own rekey of ``old`` came:
                # the Child SAs are not the peer's to delete, they go back to ``old``
                # and on to the IKE SA our rekey makes
                old.peer_rekeys = [p for p in old.peer_rekeys if p is not ike]
                old.children.extend(ike.children)
                for c in ike.children:
                    c.parent = old
                ike.children = []
                if ike.leases:  # what ike_rekey.move_children moved with them
                    old.leases = [*old.leases, *ike.leases]
                ike.leases = ()
                for a in ("remote_vips", "local_vips", "dns", "domains"):
                    setattr(old, a, getattr(old, a) or getattr(ike, a))
                    setattr(ike, a, ())
                hand_over(ctx, ike, old)  # their Child SA exchanges, the one in flight too
        ctx.remember_closed(ike, req.msgid, req.remote, now)  # a resent Delete (§2.1)
        nets = [n for c in ike.children for t in c.remote_ts for n in t.networks()]
        acts += ctx.drop_ike(ike, now, "deleted by peer")
        conn = ike.conn
        if not meant_up(ctx, conn) or conn.name not in ctx.connections:
            return acts
        # (the same peer's other IKE SAs, by ID: peers behind one NAT share an address)
        mine = [o for o in ctx.peers_of(ike) if o is not ike]
        if conn.remote.host_addr is not None:
            # (an instance revived below is a copy bound to its peer: the template's
            # other peers do not stop its revival)
            template = ctx.connections[conn.name].remote.host_addr is None
            if not (mine if template else ctx.ike_of(conn.name)):
                # as Libreswan's revival: a conn meant to be up (auto=start) whose last
                # IKE SA the peer deleted is initiated again (not one a rekey replaced)
                ctx.log(acts, "connection is supposed to remain up; initiating it again", ike)
                acts += ctx.initiate_ike(conn, now)
        elif ctx.connections[conn.name] is conn and ike.established_at is not None and \
                ike.remote_id is not None and not conn.remote.addresspool and not mine:
            # an instance of a template (right=%any) kept up (auto=keep once its peer
            # brought it up): Libreswan 5.2 revives it towards the peer's last address
            # and port, through a NAT's mapping while it lasts (auto-keep-01); one try
            # only (common.fail retries a conn that can be initiated, not an instance)
            ctx.log(acts, "connection is supposed to remain up; initiating it again", ike)
            acts += ctx.initiate_ike(_instance(conn, ike, nets), now)
        return acts


def _instance(conn: Connection, ike: IKESA, nets: list[IPNetwork]) -> Connection:
    """The template ``conn`` bound to the peer of ``ike``: its last address and port,
    the ID it authenticated with, and (when the template names no remote subnet and
    the peer was behind a NAT) the selectors its Child SAs had."""
    remote = conn.remote
    subnets = remote.subnets or (nets if ike.nat_remote else [])
    bound = dataclasses.replace(remote, host=str(ike.remote.addr), host_addr=ike.remote.addr,
                                ikeport=ike.remote.port, id=ike.remote_id,
                                subnets=list(subnets))
    if conn.local_is_left:
        return dataclasses.replace(conn, right=bound)
    return dataclasses.replace(conn, left=bound)


def delete_ike(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Delete an IKE SA: with a Delete request when established, else locally."""
    if not ctx.is_live(ike):
        return []
    if not ike.established:
        return ctx.drop_ike(ike, now, "deleted", EventKind.IKE_DELETED)
    if any(isinstance(t, IKEDelete) for t in ike.tasks) or \
            (ike.outstanding and isinstance(ike.outstanding.task, IKEDelete)):
        return []
    # nothing else matters now (queued tasks hold no reservations), but for the Deletes
    # of Child SAs (a rekey replaced them): they wait behind the Delete of the IKE SA,
    # which deletes the Child SAs with it, unless the Child SAs move on first (our
    # rekey of the IKE SA in flight completes, or the peer rekeys it): then the Deletes
    # go with them (``ike_rekey.move_children``) and the peer drops the old Child SAs
    ike.tasks[:] = [t for t in ike.tasks if isinstance(t, ChildDelete)]
    return ctx.queue(ike, IKEDelete(), now, front=True)


def send_delete_now(ctx: IKEContext, ike: IKESA) -> list[Action]:
    """Fire-and-forget Delete of the IKE SA (whack --down, shutdown), outside the window."""
    return ctx.send_now(ike, ExchangeType.INFORMATIONAL, [codec.delete(ProtocolID.IKE, [])])
