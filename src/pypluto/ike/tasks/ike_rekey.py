"""CREATE_CHILD_SA rekeying the IKE SA (RFC 7296 §1.3.2, §2.18; collisions §2.8.2).

New SPIs and a new KE; SKEYSEED comes from the old SK_d.  The Child SAs and the
queued Child SA work move to the new IKE SA, then the old one is deleted.  When
both ends rekeyed, the new IKE SA made with the lowest nonce is redundant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from pypluto.crypto import dh, keys
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType, ProtocolID
from pypluto.iana import NotifyType as N
from pypluto.ike import addke, codec, proposals
from pypluto.ike.actions import Action, ConnectionEvent, EventKind
from pypluto.ike.codec import Payload, Proposals
from pypluto.ike.context import IKEContext
from pypluto.ike.proposals import Chosen
from pypluto.ike.sa import IKESA, IKEState
from pypluto.ike.tasks import mobike
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.child_create import ChildCreate, precheck
from pypluto.ike.tasks.child_delete import ChildDelete, hand_over
from pypluto.ike.tasks.common import (
    NONCE_SIZE,
    RETRY_DELAY,
    install_keys,
    nname,
    set_ike_timers,
)
from pypluto.ike.tasks.ike_delete import delete_ike
from pypluto.ike.tasks.ike_followup import (
    ADD_KE,
    LINK_SIZE,
    FollowupKE,
    collision,
    kem_broken,
    link_of,
    lost_retry,
    wait_for,
)
from pypluto.ike.tasks.ike_followup import busy as followup_busy
from pypluto.ike.tasks.liveness import peer_dead
from pypluto.wire import payloads as wp

EXCH_CHILD = ExchangeType.CREATE_CHILD_SA


def move_children(src: IKESA, dst: IKESA) -> None:
    """Children and their queued work go to the new IKE SA (§2.18)."""
    for c in src.children:
        c.parent = dst
        c.rekeying = False
    dst.children.extend(src.children)
    src.children = []
    # the Configuration Payload's leases and addresses belong to the session (§2.18)
    if src.leases:
        dst.leases = [*dst.leases, *src.leases]
    src.leases = ()
    for a in ("remote_vips", "local_vips", "dns", "domains"):
        setattr(dst, a, getattr(dst, a) or getattr(src, a))
        # the old IKE SA no longer holds the lease: left with the address, it would
        # still make Child SAs for it once the lease is free for another client
        setattr(src, a, ())
    keep = []
    for t in src.tasks:
        if isinstance(t, (ChildCreate, ChildDelete)):
            if isinstance(t, ChildCreate) and t.old is not None:
                t.old.rekeying = True
            dst.tasks.append(t)
        else:
            keep.append(t)
    src.tasks.clear()
    src.tasks.extend(keep)


def _new_ike(ctx: IKEContext, old: IKESA, initiator: bool, spi_i: bytes, spi_r: bytes,
             chosen: Chosen, ni: bytes, nr: bytes, shared: bytes, now: float,
             more: Sequence[bytes] = ()) -> IKESA:
    """The new IKE SA; ``more`` are the secrets of RFC 9370's IKE_FOLLOWUP_KE exchanges."""
    assert old.chosen is not None
    local, remote = mobike.settled(old)  # not where a MOBIKE check in flight points
    new = IKESA(serial=ctx.new_serial(), conn=old.conn, initiator=initiator, spi_i=spi_i,
                spi_r=spi_r, local=local, remote=remote, state=IKEState.ESTABLISHED)
    if more:  # RFC 9370 §2.2.4: prf(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n))
        seed = keys.rekey_skeyseed(old.chosen.prf, old.sk_d, b"", b"",
                                   addke.rekey_material([shared, *more], ni, nr))
    else:
        seed = keys.rekey_skeyseed(old.chosen.prf, old.sk_d, shared, ni, nr)
    k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                             seed, ni, nr, spi_i, spi_r)
    new.chosen = chosen
    new.ke_group = chosen.ke
    new.ni, new.nr = ni, nr
    install_keys(ctx, new, k)
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.peer_ca = old.peer_ca  # PLUTO_PEER_CA of the updown runs after the rekey
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.frag_ok = old.frag_ok
    new.mobike = old.mobike  # RFC 4555: negotiated in IKE_AUTH, not again in a rekey
    new.redirect_ok, new.first_initiator = old.redirect_ok, old.first_initiator  # RFC 5685
    mobike.carry_check(old, new)
    new.next_keepalive = old.next_keepalive
    new.established_at = now
    new.last_recv = now
    new.nonce_min = min(ni, nr)
    ctx.register(new)
    ctx.index_peer(new)
    set_ike_timers(ctx, new, now)
    return new


def _is_ike_sa(payloads: Sequence[Payload]) -> bool:
    sa_p = codec.first(payloads, wp.SAPayload)
    return sa_p is not None and {int(p.protocol_id) for p in sa_p.proposals} == {ProtocolID.IKE}


class IKERekey(Task):
    """Rekey the IKE SA (§1.3.2, §2.18): new SPIs, new KE, children move over."""

    exchange = EXCH_CHILD

    def __init__(self, group: int | None = None) -> None:
        self.group = group
        self.spi = b""
        self.ni = b""
        self.ke: dh.KeyExchange | None = None
        self.sent: Proposals = []

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        if ike.replaced or ike.peer_rekeys:
            ike.rekeying = False
            return None
        group = self.group or ike.ke_group
        self.group = group
        self.spi = ctx.reserve_ike_spi(ike)
        self.ni = ctx.rng(NONCE_SIZE)
        try:
            self.ke = dh.initiator_ke(group)
        except CryptoError:
            self.abandon(ctx, ike)
            return None
        self.sent = proposals.build_proposals(proposals.ike_specs(ike.conn.ike),
                                              ProtocolID.IKE, self.spi, ike=True,
                                              ke_override=group)
        ctx.log(acts, "initiating rekey of the IKE SA", ike)
        return [codec.sa(self.sent), codec.nonce(self.ni), codec.ke(group, self.ke.public)]

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:
        if self.spi:
            ctx.release_ike_spi(self.spi, ike)

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        self.abandon(ctx, ike)
        return peer_dead(ctx, ike, now, "no answer to the IKE SA rekey")

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        payloads = msg.payloads
        self.abandon(ctx, ike)
        errs = codec.errors(payloads)
        if errs:
            ike.rekeying = False
            t = int(errs[0].notify_type)
            if t == N.INVALID_KE_PAYLOAD and len(errs[0].data) >= 2:
                g = int.from_bytes(errs[0].data[:2], "big")
                groups = {int(k) for s in proposals.ike_specs(ike.conn.ike) for k in s.ke}
                if g != self.group and dh.supported(g) and g in groups:  # §1.2: one of ours
                    ike.rekeying = True
                    return ctx.queue(ike, IKERekey(g), now, front=True)
            ike.rekey_at = now + RETRY_DELAY
            ctx.log(acts, f"IKE SA rekey refused: {nname(t)}; retrying later", ike)
            return acts
        sa_p = codec.first(payloads, wp.SAPayload)
        nr_p = codec.first(payloads, wp.NoncePayload)
        ke_p = codec.first(payloads, wp.KEPayload)
        chosen = proposals.check_answer(codec.sa_tuples(sa_p), self.sent, ike=True) \
            if sa_p is not None else None
        if chosen is None or nr_p is None or ke_p is None or ke_p.group != self.group \
                or chosen.ke != self.group or len(chosen.spi) != 8 or self.ke is None \
                or chosen.spi == bytes(8):  # §3.1: an IKE SPI is never zero
            ike.rekeying = False
            ike.rekey_at = now + RETRY_DELAY
            ctx.log(acts, "IKE SA rekey answer is not acceptable", ike, level="warning")
            return acts
        try:
            shared = self.ke.finish(ke_p.data)
        except CryptoError as e:
            ike.rekeying = False
            ctx.log(acts, f"IKE SA rekey failed: {e}", ike, level="warning")
            return acts + kem_broken(ctx, ike, self.group, now)
        nr = bytes(nr_p.data)
        todo = addke.groups(chosen.addke)
        if todo:  # RFC 9370 §2.2.3: IKE_FOLLOWUP_KE exchanges before the new IKE SA
            link = link_of(payloads)
            if link is None:
                ike.rekeying = False
                ike.rekey_at = now + RETRY_DELAY
                ctx.log(acts, "IKE SA rekey answer chose additional key exchanges but lacks "
                        "ADDITIONAL_KEY_EXCHANGE", ike, level="warning")
                return acts
            pend = ike.followup
            if pend is not None and pend.target is not ike:
                # §2.25.2: the peer's Child SA exchange waits for its IKE_FOLLOWUP_KE on
                # this IKE SA; ours would move the children from under it
                ike.rekeying = False
                ike.rekey_at = now + RETRY_DELAY
                ctx.log(acts, "IKE SA rekey abandoned: the peer's Child SA exchange is "
                        "doing IKE_FOLLOWUP_KE exchanges; retrying later", ike)
                return acts
            if collision(ctx, ike, ike, min(self.ni, nr), ike.peer_rekeys, ike, acts):
                ike.rekeying = False  # RFC 9370 §2.2.2: the peer's new IKE SA takes over
                if not ike.replaced:
                    ike.rekey_at = lost_retry(ike, now)
                return acts
            spi, spi_r, ni = self.spi, chosen.spi, self.ni

            def done(ctx: IKEContext, ike: IKESA, secrets: list[bytes], t: float
                     ) -> list[Action]:
                return self._complete(ctx, ike, spi, spi_r, chosen, ni, nr, secrets[0],
                                      secrets[1:], t)

            def failed(ctx: IKEContext, ike: IKESA, why: str, t: float) -> list[Action]:
                out: list[Action] = []
                ike.rekeying = False
                ike.rekey_at = t + RETRY_DELAY
                ctx.log(out, f"IKE SA rekey failed: {why}", ike, level="warning")
                return out

            return acts + ctx.queue(ike, FollowupKE(todo, link, [shared], done, failed,
                                                    target=ike), now, front=True)
        return acts + self._complete(ctx, ike, self.spi, chosen.spi, chosen, self.ni, nr,
                                     shared, [], now)

    def _complete(self, ctx: IKEContext, ike: IKESA, spi: bytes, spi_r: bytes, chosen: Chosen,
                  ni: bytes, nr: bytes, shared: bytes, more: Sequence[bytes], now: float
                  ) -> list[Action]:
        """The new IKE SA takes over (§2.18), after any IKE_FOLLOWUP_KE (RFC 9370)."""
        acts: list[Action] = []
        try:
            new = _new_ike(ctx, ike, True, spi, spi_r, chosen, ni, nr, shared, now, more)
        except CryptoError as e:
            ike.rekeying = False
            ctx.log(acts, f"IKE SA rekey failed: {e}", ike, level="warning")
            return acts
        ike.rekeying = False
        ctx.log(acts, f"rekeyed IKE SA #{ike.serial}: established IKE SA "
                f"{chosen.encr_name()}-{chosen.prf_name()}-{chosen.ke_name()}", new)
        ctx.stats.ike_established(chosen.encr, chosen.integ, chosen.ke)
        acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, new.conn.name, new.serial,
                                    "rekey"))
        if ike.peer_rekeys:  # §2.8.2 collision
            other = ike.peer_rekeys[-1]
            if new.nonce_min < other.nonce_min:
                ctx.log(acts, f"IKE SA rekey collision: #{new.serial} is redundant", new)
                move_children(new, other)
                move_children(ike, other)
                new.rekey_at = None
                return acts + delete_ike(ctx, new, now)
            move_children(other, new)
            hand_over(ctx, other, new)  # its Child SA exchange in flight
            # the peer deletes ``other``, the IKE SA it made redundant; but if our Delete
            # of ``ike`` reaches it before our answer to its rekey, it forgets that rekey
            # (§2.25.2) and never will: then we delete it, once the peer's
            # retransmissions of its own Delete would be over
            other.replaced = True
            other.rekey_at = None
            deadline = now + ike.conn.retransmit_timeout
            other.expire_at = deadline if other.expire_at is None else \
                min(other.expire_at, deadline)
            ctx.schedule(other)
            ctx.log(acts, f"IKE SA rekey collision: #{other.serial} is redundant, the peer "
                    "deletes it (or we do if it has not)", new)
        move_children(ike, new)
        ike.replaced = True
        ike.rekey_at = None
        acts += delete_ike(ctx, ike, now)
        return acts + ctx.kick(new, now)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return _is_ike_sa(payloads)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        checked = precheck(ctx, ike, req)
        if isinstance(checked, list):
            return checked
        sa_p, ni = checked
        msgid = req.msgid
        nr = ctx.rng(NONCE_SIZE)
        ke_p = codec.first(req.payloads, wp.KEPayload)

        def answer(out: list[Payload]) -> list[Action]:
            return ctx.send_response(ike, EXCH_CHILD, msgid, out)

        if ike.replaced:
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
        why_busy = followup_busy(ike, None, ike_rekey=True)
        if why_busy:  # RFC 9370 §2.2.2, RFC 7296 §2.25.2
            return _busy(ctx, ike, why_busy, answer)
        o = ike.outstanding
        if o is not None and isinstance(o.task, (ChildCreate, ChildDelete)):
            # §2.25: finish our exchange first (e.g. a Child rekey) before moving children;
            # a Delete of a Child SA in flight would be lost with the old IKE SA, and its
            # Child SA left half-deleted on the new one
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
        chosen = proposals.choose(codec.sa_tuples(sa_p), proposals.ike_specs(ike.conn.ike),
                                  ProtocolID.IKE, ike=True,
                                  prefer_ke=None if ke_p is None else ke_p.group)
        if chosen is None or len(chosen.spi) != 8 or chosen.spi == bytes(8):
            # §3.3.1: an IKE SA rekey carries the new 8-byte SPI, never zero (§3.1)
            return answer([codec.notify(N.NO_PROPOSAL_CHOSEN)])
        if ke_p is None:
            return answer([codec.notify(N.INVALID_SYNTAX)])
        if ke_p.group != chosen.ke:
            return answer([codec.notify(N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
        ike.next_in = msgid + 1  # a retransmit while the job runs is dropped (§2.1)
        group, peer_ke = chosen.ke, bytes(ke_p.data)

        def then(result: object, t: float) -> list[Action]:
            if isinstance(result, BaseException):  # a malformed KE value of the right
                return answer([codec.notify(N.INVALID_SYNTAX)])  # group, as CREATE_CHILD_SA
            o = ike.outstanding  # §2.25: our own Child SA exchange may have started meanwhile
            if ike.replaced or ike.state is IKEState.DELETING or \
                    (o is not None and isinstance(o.task, (ChildCreate, ChildDelete))):
                return answer([codec.notify(N.TEMPORARY_FAILURE)])
            why_busy = followup_busy(ike, None, ike_rekey=True)
            if why_busy:
                return _busy(ctx, ike, why_busy, answer)
            ke_out, shared = cast(tuple[bytes, bytes], result)
            todo = addke.groups(chosen.addke)
            if todo:  # RFC 9370 §2.2.3: wait for IKE_FOLLOWUP_KE
                return _respond_followup(ctx, ike, msgid, chosen, ni, nr, ke_out, shared,
                                         todo, t)
            return _respond_keyed(ctx, ike, msgid, chosen, ni, nr, ke_out, shared, t)

        return ctx.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)


def _busy(ctx: IKEContext, ike: IKESA, why: str,
          answer: Callable[[list[Payload]], list[Action]]) -> list[Action]:
    acts: list[Action] = []
    ctx.log(acts, f"IKE SA rekey by peer deferred: {why}; answering TEMPORARY_FAILURE", ike)
    return acts + answer([codec.notify(N.TEMPORARY_FAILURE)])


def _respond_followup(ctx: IKEContext, ike: IKESA, msgid: int, chosen: Chosen, ni: bytes,
                      nr: bytes, ke_out: bytes, shared: bytes, todo: list[int], now: float
                      ) -> list[Action]:
    """Answer with ADDITIONAL_KEY_EXCHANGE; the new IKE SA is made after the last
    IKE_FOLLOWUP_KE (RFC 9370 §2.2.3)."""
    spi_r = ctx.alloc_ike_spi()
    link = ctx.rng(LINK_SIZE)

    def finish(ctx: IKEContext, ike: IKESA, secrets: list[bytes], t: float) -> list[Action]:
        return _respond_keyed(ctx, ike, None, chosen, ni, nr, ke_out, secrets[0], t,
                              spi_r, secrets[1:])

    if ike.followup is not None:  # the peer abandoned an earlier one
        ike.followup.drop()
    ike.followup = addke.Pending(link, list(todo), [shared], finish, target=ike,
                                 nonce_min=min(ni, nr), expires=now + wait_for(ike),
                                 what="IKE SA rekey")
    acts: list[Action] = []
    ctx.log(acts, f"IKE SA rekey by peer: waiting for {len(todo)} IKE_FOLLOWUP_KE "
            "exchange(s) (RFC 9370)", ike, level="debug")
    out: list[Payload] = [
        codec.sa([proposals.chosen_proposal(chosen, ProtocolID.IKE, spi_r, ike=True)]),
        codec.nonce(nr), codec.ke(chosen.ke, ke_out), codec.notify(ADD_KE, link)]
    return acts + ctx.send_response(ike, EXCH_CHILD, msgid, out)


def _respond_keyed(ctx: IKEContext, ike: IKESA, msgid: int | None, chosen: Chosen, ni: bytes,
                   nr: bytes, ke_out: bytes, shared: bytes, now: float,
                   spi_r: bytes | None = None, more: Sequence[bytes] = ()) -> list[Action]:
    """The new IKE SA from the rekey's keys (§2.18); the children move over.

    ``msgid`` None: the CREATE_CHILD_SA was answered already and this completes it
    after the IKE_FOLLOWUP_KE exchanges (``spi_r``, ``more``; RFC 9370 §2.2.3).
    """
    acts: list[Action] = []

    def answer(out: list[Payload]) -> list[Action]:
        if msgid is None:
            return acts
        return acts + ctx.send_response(ike, EXCH_CHILD, msgid, out)

    try:
        new = _new_ike(ctx, ike, False, bytes(chosen.spi), spi_r or ctx.alloc_ike_spi(),
                       chosen, ni, nr, shared, now, more)
    except CryptoError:
        return answer([codec.notify(N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
    ike.peer_rekeys = [*ike.peer_rekeys, new]
    move_children(ike, new)
    ike.rekey_at = None
    acts += ctx.kick(new, now)
    ctx.log(acts, f"IKE SA #{ike.serial} rekeyed by peer: established IKE SA "
            f"{chosen.encr_name()}-{chosen.prf_name()}-{chosen.ke_name()}", new)
    ctx.stats.ike_established(chosen.encr, chosen.integ, chosen.ke)
    acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, new.conn.name, new.serial, "rekey"))
    out: list[Payload] = [
        codec.sa([proposals.chosen_proposal(chosen, ProtocolID.IKE, new.spi_r, ike=True)]),
        codec.nonce(nr), codec.ke(chosen.ke, ke_out)]
    return answer(out)


def start_rekey(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Queue the rekey of ``ike`` (marked so that it is not queued twice)."""
    ike.rekeying = True
    return ctx.queue(ike, IKERekey(), now)
