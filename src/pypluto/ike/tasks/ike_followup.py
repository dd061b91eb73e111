"""IKE_FOLLOWUP_KE (RFC 9370 §2.2.3): the additional key exchanges of a CREATE_CHILD_SA.

The CREATE_CHILD_SA answer that chose ADDKE transforms carries
ADDITIONAL_KEY_EXCHANGE with an opaque link; the initiator then runs one
IKE_FOLLOWUP_KE per remaining key exchange on the same IKE SA, each request
echoing the last link (KEi(n), N(ADDITIONAL_KEY_EXCHANGE)), each answer but
the last carrying a new one.  Only after the last one is the new SA made,
from SK(0) | Ni | Nr | SK(1) | ... (``addke.rekey_material``).

``FollowupKE`` is the initiator's task (its ``done`` / ``failed`` callbacks
belong to the CREATE_CHILD_SA task that queued it); the responder keeps an
``addke.Pending`` on the IKE SA, answered by ``FollowupKE.respond``, for a bounded
time only (``wait_for``, ``expire``; §2.2.3).

Rekey collisions (RFC 9370 §2.2.2 with RFC 7296 §2.8.1, §2.8.2, §2.25): the SA is
made only after the last IKE_FOLLOWUP_KE, so a collision is settled when a
CREATE_CHILD_SA answer arrives (``collision``): the exchange with the lowest of the
four nonces loses; its initiator stops before any IKE_FOLLOWUP_KE (its SA is never
made), the winner drops the state it held for the peer's exchange and carries on.
Once our IKE_FOLLOWUP_KE exchanges have started, a colliding request is answered
TEMPORARY_FAILURE (``busy``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

from pypluto.crypto import dh, keys
from pypluto.crypto import registry as reg
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType, ProtocolID
from pypluto.iana import NotifyType as N
from pypluto.ike import addke, codec
from pypluto.ike.actions import Action, EventKind, Log
from pypluto.ike.codec import Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildSA, ChildState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.common import RETRY_DELAY, nname
from pypluto.wire import payloads as wp

EXCH_FOLLOWUP = ExchangeType.IKE_FOLLOWUP_KE
ADD_KE = N.ADDITIONAL_KEY_EXCHANGE
LINK_SIZE = 8

Done = Callable[[IKEContext, IKESA, list[bytes], float], list[Action]]
Failed = Callable[[IKEContext, IKESA, str, float], list[Action]]


def link_of(payloads: Sequence[Payload]) -> bytes | None:
    """The ADDITIONAL_KEY_EXCHANGE notify's data, if present (RFC 9370 §3.1)."""
    for p in codec.notifies(payloads):
        if p.notify_type == ADD_KE:
            return bytes(p.data)
    return None


def _gname(group: int) -> str:
    return reg.transform_name(reg.TransformType.KE, group)


def kem_broken(ctx: IKEContext, ike: IKESA, group: int, now: float) -> list[Action]:
    """A malformed ML-KEM ciphertext in a CREATE_CHILD_SA or IKE_FOLLOWUP_KE answer: the
    initiator MUST delete the IKE SA, with a Delete for the peer
    (draft-ietf-ipsecme-ikev2-mlkem §2.2, Recipient Tests): sent once, outside the
    window, as at shutdown.  Nothing for other groups."""
    alg = reg.get(reg.TransformType.KE, group)
    if alg is None or alg.ke_kind != "kem" or not ctx.is_live(ike):
        return []
    acts: list[Action] = []
    ctx.log(acts, f"malformed {_gname(group)} ciphertext from the peer: deleting the IKE SA "
            "(draft-ietf-ipsecme-ikev2-mlkem)", ike, level="warning")
    acts += ctx.send_now(ike, ExchangeType.INFORMATIONAL, [codec.delete(ProtocolID.IKE, [])])
    return acts + ctx.drop_ike(ike, now, "deleted", EventKind.IKE_DELETED)


def wait_for(ike: IKESA) -> float:
    """How long a responder keeps a CREATE_CHILD_SA waiting for IKE_FOLLOWUP_KE (§2.2.3).

    Twice ``retransmit-timeout``: the peer may need all its retransmits to get our
    answer, then all of them again for its IKE_FOLLOWUP_KE request.
    """
    return 2 * max(ike.conn.retransmit_timeout, 1.0)


class FollowupKE(Task):
    """One IKE_FOLLOWUP_KE exchange (initiator); the responder side answers them.

    ``target`` is what the exchanges rekey: the IKE SA itself, the old Child SA, or
    None for a new Child SA (collision checks, ``busy``).
    """

    exchange = EXCH_FOLLOWUP

    def __init__(self, todo: list[int], link: bytes, shared: list[bytes], done: Done,
                 failed: Failed, release: Callable[[], None] = lambda: None,
                 target: IKESA | ChildSA | None = None) -> None:
        self.todo, self.link, self.shared = todo, link, shared
        self.done, self.failed, self.release = done, failed, release
        self.target = target
        self.priv: dh.KeyExchange | None = None

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        group = self.todo[0]
        try:
            self.priv = dh.initiator_ke(group)
        except CryptoError as e:
            acts += self.failed(ctx, ike, f"cannot make a {_gname(group)} key: {e}", now)
            return None
        ctx.log(acts, f"sending IKE_FOLLOWUP_KE with additional key exchange "
                f"{len(self.shared)} ({_gname(group)})", ike, level="debug")
        return [codec.ke(group, self.priv.public), codec.notify(ADD_KE, self.link)]

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:
        self.release()

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        from pypluto.ike.tasks.liveness import peer_dead
        self.release()
        return peer_dead(ctx, ike, now, "no answer to IKE_FOLLOWUP_KE")

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        group = self.todo[0]
        errs = [p.notify_type for p in codec.errors(msg.payloads)]
        if errs:
            return self.failed(ctx, ike, f"peer answered IKE_FOLLOWUP_KE with "
                               f"{nname(errs[0])}", now)
        kes = [p for p in msg.payloads if isinstance(p, wp.KEPayload)]
        if len(kes) != 1 or kes[0].group != group or self.priv is None:
            return self.failed(ctx, ike, f"IKE_FOLLOWUP_KE answer lacks the {_gname(group)} "
                               "KE payload", now)
        try:
            self.shared.append(self.priv.finish(bytes(kes[0].data)))
        except CryptoError as e:
            return self.failed(ctx, ike, f"bad {_gname(group)} value in IKE_FOLLOWUP_KE "
                               f"answer: {e}", now) + kem_broken(ctx, ike, group, now)
        rest = self.todo[1:]
        if not rest:
            return self.done(ctx, ike, self.shared, now)
        link = link_of(msg.payloads)
        if link is None:
            return self.failed(ctx, ike, "IKE_FOLLOWUP_KE answer lacks "
                               "ADDITIONAL_KEY_EXCHANGE although more exchanges follow", now)
        return ctx.queue(ike, FollowupKE(rest, link, self.shared, self.done, self.failed,
                                         self.release, self.target), now, front=True)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        pend = ike.followup
        link = link_of(req.payloads)
        kes = [p for p in req.payloads if isinstance(p, wp.KEPayload)]

        def answer(out: list[Payload]) -> list[Action]:
            return ctx.send_response(ike, EXCH_FOLLOWUP, req.msgid, out)

        if pend is None or link is None or link != pend.link:
            # §2.2.3: unknown (or expired) link data; a pending exchange, if any, stays
            why = "for no pending exchange" if pend is None else \
                "with unknown ADDITIONAL_KEY_EXCHANGE data"
            acts: list[Action] = [Log(f"IKE_FOLLOWUP_KE {why}; answering STATE_NOT_FOUND",
                                      level="warning", conn=ike.conn.name,
                                      serial=ike.serial)]
            return acts + answer([codec.notify(N.STATE_NOT_FOUND)])
        group = pend.todo[0]

        def refuse(why: str) -> list[Action]:
            ike.followup = None
            pend.drop()
            acts: list[Action] = [Log(f"IKE_FOLLOWUP_KE rejected: {why}; answering "
                                      "INVALID_SYNTAX", level="warning", conn=ike.conn.name,
                                      serial=ike.serial)]
            return acts + answer([codec.notify(N.INVALID_SYNTAX)])

        if len(kes) != 1 or kes[0].group != group:
            return refuse(f"additional key exchange needs {_gname(group)}")
        peer_ke = bytes(kes[0].data)
        ike.next_in = req.msgid + 1  # a retransmit while the job runs is dropped (§2.1)

        def then(result: object, t: float) -> list[Action]:
            if ike.followup is not pend or not ike.established:
                return []
            if isinstance(result, BaseException):
                return refuse(f"bad {_gname(group)} value: {result}")
            return cls._answered(ctx, ike, req, pend, group,
                                 cast(tuple[bytes, bytes], result), t)

        return ctx.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)

    @staticmethod
    def _answered(ctx: IKEContext, ike: IKESA, req: Request, pend: addke.Pending, group: int,
                  result: tuple[bytes, bytes], now: float) -> list[Action]:
        """Responder: one more secret; answer, and complete after the last (§2.2.3)."""
        ct, shared = result

        def answer(out: list[Payload]) -> list[Action]:
            return ctx.send_response(ike, EXCH_FOLLOWUP, req.msgid, out)

        pend.shared.append(shared)
        pend.todo = pend.todo[1:]
        out: list[Payload] = [codec.ke(group, ct)]
        if pend.todo:
            pend.link = ctx.rng(LINK_SIZE)
            pend.expires = now + wait_for(ike)
            out.append(codec.notify(ADD_KE, pend.link))
            return answer(out)
        ike.followup = None
        acts = pend.finish(ctx, ike, pend.shared, now)
        return acts + answer(out)


# ------------------------------------------------------------------ collisions, expiry
def in_progress(ike: IKESA) -> FollowupKE | None:
    """Our IKE_FOLLOWUP_KE exchange in flight or queued, if any."""
    o = ike.outstanding
    if o is not None and isinstance(o.task, FollowupKE):
        return o.task
    return next((t for t in ike.tasks if isinstance(t, FollowupKE)), None)


def busy(ike: IKESA, old: ChildSA | None, ike_rekey: bool = False) -> str | None:
    """Why a CREATE_CHILD_SA request must be answered TEMPORARY_FAILURE, if it must.

    The request rekeys the IKE SA (``ike_rekey``), rekeys the Child SA ``old``, or
    makes a new Child SA.  Our IKE_FOLLOWUP_KE exchanges have started: for the same SA
    (RFC 9370 §2.2.2: the collision was not seen while CREATE_CHILD_SA ran, ours
    completes and the peer retries), for the IKE SA while a Child SA request comes, or
    for any Child SA while the IKE SA rekey comes (RFC 7296 §2.25.2).
    """
    f = in_progress(ike)
    if f is None:
        return None
    if f.target is ike:
        return "our rekey of the IKE SA is doing IKE_FOLLOWUP_KE exchanges"
    if ike_rekey:
        return "our Child SA exchange is doing IKE_FOLLOWUP_KE exchanges"
    if old is not None and f.target is old:
        return "our rekey of this Child SA is doing IKE_FOLLOWUP_KE exchanges"
    return None


def collision(ctx: IKEContext, ike: IKESA, target: IKESA | ChildSA, mine: bytes,
              completed: Sequence[IKESA] | Sequence[ChildSA], obj: IKESA | ChildSA,
              acts: list[Action]) -> bool:
    """Settle a rekey collision when our CREATE_CHILD_SA answer chose additional key
    exchanges (RFC 9370 §2.2.2, RFC 7296 §2.8.1/§2.8.2); True when we lost.

    ``mine`` is min(Ni, Nr) of our exchange.  The peer's rekey of ``target`` is either
    waiting for its IKE_FOLLOWUP_KE (``ike.followup``) or complete (``completed``, a
    single-exchange rekey).  The exchange holding the lowest nonce loses: if it is ours
    we stop (our SA is never made; the peer's replaces ``target``); if it is the
    peer's, the state held for it goes now: the peer stops before any IKE_FOLLOWUP_KE.
    """
    pend = ike.followup
    if pend is not None and pend.target is target:
        if mine < pend.nonce_min:
            ctx.log(acts, "rekey collision lost: aborting our rekey before IKE_FOLLOWUP_KE; "
                    "the peer's replaces it (RFC 9370 §2.2.2)", obj)
            return True
        ike.followup = None
        pend.drop()
        ctx.log(acts, "rekey collision won: continuing with IKE_FOLLOWUP_KE; dropped the "
                "peer's incomplete rekey (RFC 9370 §2.2.2)", obj)
        return False
    if completed and mine < completed[-1].nonce_min:
        ctx.log(acts, "rekey collision lost: aborting our rekey before IKE_FOLLOWUP_KE; "
                f"the peer's #{completed[-1].serial} replaces it (RFC 7296 §2.8)", obj)
        return True
    return False


def expire(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Drop a responder's pending CREATE_CHILD_SA whose IKE_FOLLOWUP_KE did not come
    (RFC 9370 §2.2.3: the state is kept for a limited time only); one log line."""
    pend = ike.followup
    if pend is None or pend.expires is None or now < pend.expires:
        return []
    ike.followup = None
    pend.drop()
    acts: list[Action] = []
    ctx.log(acts, f"no IKE_FOLLOWUP_KE within {wait_for(ike):g}s: dropping the pending "
            f"{pend.what} (RFC 9370 §2.2.3)", ike, level="warning")
    return acts


def lost_retry(ike: IKESA, now: float) -> float:
    """When the loser of a collision rekeys again should the winner's exchanges never
    complete (they clear it when they do)."""
    return now + wait_for(ike) + RETRY_DELAY


# ------------------------------------------------------------------ Child SAs
def _child_keys(ike: IKESA, c: ChildSA, secrets: list[bytes], ni: bytes, nr: bytes) -> None:
    """KEYMAT = prf+(SK_d, SK(0) | Ni | Nr | SK(1) | ... | SK(n)) (RFC 9370 §2.2.4)."""
    assert ike.chosen is not None and c.chosen is not None
    ch = c.chosen
    c.keys = keys.derive_child_keys(ike.chosen.prf, ike.sk_d, b"", b"", ch.encr, ch.encr_bits,
                                    ch.integ or None, addke.rekey_material(secrets, ni, nr))


class _ChildTask(Protocol):
    old: ChildSA | None

    def complete(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]: ...

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None: ...


def child_followup(ctx: IKEContext, ike: IKESA, task: _ChildTask, c: ChildSA, link: bytes,
                   shared: bytes, ni: bytes, nr: bytes, now: float) -> list[Action]:
    """Initiator of a CREATE_CHILD_SA that chose ADDKE: run IKE_FOLLOWUP_KE, then install."""
    assert c.chosen is not None
    todo = addke.groups(c.chosen.addke)
    old = task.old
    if old is not None:
        acts: list[Action] = []
        if collision(ctx, ike, old, min(ni, nr), old.peer_rekeys, c, acts):
            task.abandon(ctx, ike)  # our new Child SA is never made
            if old.state is ChildState.ESTABLISHED and not old.replaced:
                old.rekey_at = lost_retry(ike, now)
            return acts
    else:
        acts = []

    def done(ctx: IKEContext, ike: IKESA, secrets: list[bytes], t: float) -> list[Action]:
        _child_keys(ike, c, secrets, ni, nr)
        return task.complete(ctx, ike, t)

    def failed(ctx: IKEContext, ike: IKESA, why: str, t: float) -> list[Action]:
        task.abandon(ctx, ike)
        acts: list[Action] = []
        ctx.log(acts, f"CREATE_CHILD_SA failed: {why}", c, level="warning")
        if task.old is not None:
            task.old.rekey_at = t + RETRY_DELAY
        return acts

    return acts + ctx.queue(ike, FollowupKE(todo, link, [shared], done, failed,
                                            lambda: task.abandon(ctx, ike), old), now,
                            front=True)


Install = Callable[[IKEContext, IKESA, ChildSA, "ChildSA | None", float], list[Action]]


def hold_child(ctx: IKEContext, ike: IKESA, c: ChildSA, old: ChildSA | None, shared: bytes,
               ni: bytes, nr: bytes, out: list[Payload], msgid: int, install: Install,
               now: float) -> list[Action]:
    """Responder: answer with ADDITIONAL_KEY_EXCHANGE and install ``c`` only after the
    last IKE_FOLLOWUP_KE (RFC 9370 §2.2.3)."""
    assert c.chosen is not None
    link = ctx.rng(LINK_SIZE)

    def finish(ctx: IKEContext, ike: IKESA, secrets: list[bytes], t: float) -> list[Action]:
        _child_keys(ike, c, secrets, ni, nr)
        return install(ctx, ike, c, old, t)

    if ike.followup is not None:
        ike.followup.drop()
    ike.followup = addke.Pending(link, addke.groups(c.chosen.addke), [shared],
                                 finish, drop=lambda: ctx.release_child(c), target=old,
                                 nonce_min=min(ni, nr), expires=now + wait_for(ike),
                                 what="Child SA rekey" if old is not None else "Child SA")
    return ctx.send_response(ike, ExchangeType.CREATE_CHILD_SA, msgid,
                             out + [codec.notify(ADD_KE, link)])
