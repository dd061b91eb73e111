"""IKE_FOLLOWUP_KE (RFC 9370 §2.2.3): the additional key exchanges of a CREATE_CHILD_SA.

The CREATE_CHILD_SA answer that chose ADDKE transforms carries
ADDITIONAL_KEY_EXCHANGE with an opaque link; the initiator then runs one
IKE_FOLLOWUP_KE per remaining key exchange on the same IKE SA, each request
echoing the last link (KEi(n), N(ADDITIONAL_KEY_EXCHANGE)), each answer but
the last carrying a new one.  Only after the last one is the new SA made,
from SK(0) | Ni | Nr | SK(1) | ... (``addke.rekey_material``).

``FollowupKE`` is the initiator's task (its ``done`` / ``failed`` callbacks
belong to the CREATE_CHILD_SA task that queued it); the responder keeps an
``addke.Pending`` on the IKE SA, answered by ``FollowupKE.respond``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, cast

from pypluto.crypto import dh, keys
from pypluto.crypto import registry as reg
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import addke, codec
from pypluto.ike.actions import Action, Log
from pypluto.ike.codec import Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildSA
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


class FollowupKE(Task):
    """One IKE_FOLLOWUP_KE exchange (initiator); the responder side answers them."""

    exchange = EXCH_FOLLOWUP

    def __init__(self, todo: list[int], link: bytes, shared: list[bytes], done: Done,
                 failed: Failed, release: Callable[[], None] = lambda: None) -> None:
        self.todo, self.link, self.shared = todo, link, shared
        self.done, self.failed, self.release = done, failed, release
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
                               f"answer: {e}", now)
        rest = self.todo[1:]
        if not rest:
            return self.done(ctx, ike, self.shared, now)
        link = link_of(msg.payloads)
        if link is None:
            return self.failed(ctx, ike, "IKE_FOLLOWUP_KE answer lacks "
                               "ADDITIONAL_KEY_EXCHANGE although more exchanges follow", now)
        return ctx.queue(ike, FollowupKE(rest, link, self.shared, self.done, self.failed,
                                         self.release), now, front=True)

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
            acts: list[Action] = [Log("IKE_FOLLOWUP_KE for no pending exchange; answering "
                                      "STATE_NOT_FOUND", level="warning", conn=ike.conn.name,
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
            out.append(codec.notify(ADD_KE, pend.link))
            return answer(out)
        ike.followup = None
        acts = pend.finish(ctx, ike, pend.shared, now)
        return acts + answer(out)


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

    return ctx.queue(ike, FollowupKE(todo, link, [shared], done, failed,
                                     lambda: task.abandon(ctx, ike)), now, front=True)


Install = Callable[[IKEContext, IKESA, ChildSA, "ChildSA | None", float], list[Action]]


def hold_child(ctx: IKEContext, ike: IKESA, c: ChildSA, old: ChildSA | None, shared: bytes,
               ni: bytes, nr: bytes, out: list[Payload], msgid: int, install: Install
               ) -> list[Action]:
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
                                 finish,
                                 drop=lambda: ctx.release_child(c))
    return ctx.send_response(ike, ExchangeType.CREATE_CHILD_SA, msgid,
                             out + [codec.notify(ADD_KE, link)])
