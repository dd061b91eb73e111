"""IKE_INTERMEDIATE (RFC 9242) carrying additional key exchanges (RFC 9370 §2.2.2).

Between IKE_SA_INIT and IKE_AUTH, with its own message IDs (1, 2, ...):

- IKE_SA_INIT: both sides send IKE_INTERMEDIATE_EXCHANGE_SUPPORTED (IKE_INT_SUP,
  §3.1) when they want it; ``init_notify`` (initiator), ``answer_notify`` and
  ``acceptable`` (responder), ``init_answered`` (initiator) are the hooks.
- One IKE_INTERMEDIATE exchange per negotiated ADDKE type, in type order: the
  request carries the initiator's KE payload, the answer the responder's; both
  sides then update SKEYSEED and every SK_* (RFC 9370 §2.2.2).
- Every IKE_INTERMEDIATE message is folded into the IntAuth chain (RFC 9242
  §3.3.2), which IKE_AUTH appends to the signed octets (``addke.auth_suffix``).

The messages go through the task manager like any request: retransmits, cached
answers and RFC 7383 fragmentation (an ML-KEM-1024 key is 1,568 bytes).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

from pypluto.config.model import Connection
from pypluto.crypto import dh
from pypluto.crypto import registry as reg
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import addke, codec
from pypluto.ike.actions import Action, EventKind, FailReason, Log
from pypluto.ike.codec import Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.proposals import Chosen, ike_specs
from pypluto.ike.sa import IKESA, IKEState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.common import fail, install_keys, nname, reason_for_notify
from pypluto.ike.tasks.ike_auth import IKEAuth
from pypluto.wire import payloads as wp

EXCH_INT = ExchangeType.IKE_INTERMEDIATE
INT_SUP = N.INTERMEDIATE_EXCHANGE_SUPPORTED


_YES = ("yes", "y", "true", "on", "1")


def forced(conn: Connection) -> bool:
    """``intermediate=yes`` (Libreswan): one IKE_INTERMEDIATE even without ADDKE."""
    return conn.raw.get("intermediate", "").strip().lower() in _YES


def wants_intermediate(conn: Connection) -> bool:
    """The conn proposes additional key exchanges (or says intermediate=yes)."""
    return forced(conn) or any(s.addke for s in ike_specs(conn.ike))


def init_notify(conn: Connection) -> list[Payload]:
    """Initiator's IKE_SA_INIT request: IKE_INT_SUP when ADDKE is proposed (RFC 9242 §3.1)."""
    return [codec.notify(INT_SUP)] if wants_intermediate(conn) else []


def acceptable(chosen: Chosen | None, peer_notifies: Collection[int]) -> Chosen | None:
    """Responder: ADDKE needs the peer's IKE_INT_SUP (RFC 9370 §2.2.1); else no choice."""
    if chosen is not None and addke.groups(chosen.addke) and INT_SUP not in peer_notifies:
        return None
    return chosen


def answer_notify(ike: IKESA, peer_notifies: Collection[int]) -> list[Payload]:
    """Responder's IKE_SA_INIT answer: IKE_INT_SUP back when the peer sent it."""
    if INT_SUP not in peer_notifies:
        return []
    ike.intermediate = addke.IntState(supported=True)
    return [codec.notify(INT_SUP)]


def init_answered(ike: IKESA, peer_notifies: Sequence[int]) -> str:
    """Initiator, IKE_SA_INIT answered: '' or why the answer cannot be used."""
    assert ike.chosen is not None
    if INT_SUP in peer_notifies and wants_intermediate(ike.conn):
        ike.intermediate = addke.IntState(supported=True)
    if addke.groups(ike.chosen.addke) and ike.intermediate is None:
        return "peer chose additional key exchanges without IKE_INTERMEDIATE support"
    return ""


def queue_next(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Queue the next IKE_INTERMEDIATE, or IKE_AUTH once every ADDKE is done."""
    assert ike.chosen is not None
    todo = addke.groups(ike.chosen.addke)
    st = ike.intermediate
    done = st.done if st is not None else 0
    if done < len(todo):
        return ctx.queue(ike, IKEIntermediate(todo[done]), now, front=True)
    if st is not None and st.exchanges == 0 and forced(ike.conn):  # an empty one
        return ctx.queue(ike, IKEIntermediate(0), now, front=True)
    return ctx.queue(ike, IKEAuth(), now, front=True)


def _update(ctx: IKEContext, ike: IKESA, shared: bytes) -> None:
    c = ike.chosen
    assert c is not None
    install_keys(ctx, ike, addke.update_keys(c.prf, c.encr, c.encr_bits, c.integ or None,
                                             ike.sk_d, shared, ike.ni, ike.nr, ike.spi_i,
                                             ike.spi_r))


def _gname(group: int) -> str:
    return reg.transform_name(reg.TransformType.KE, group)


class IKEIntermediate(Task):
    """One IKE_INTERMEDIATE exchange with the key exchange of one ADDKE type (group 0:
    an empty exchange, for ``intermediate=yes``)."""

    exchange = EXCH_INT

    def __init__(self, group: int) -> None:
        self.group = group
        self.priv: dh.KeyExchange | None = None
        self.msgid = 0
        self.int_auth_i = b""

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        st, c = ike.intermediate, ike.chosen
        assert st is not None and c is not None
        payloads: list[Payload] = []
        if self.group:
            try:
                self.priv = dh.initiator_ke(self.group)
            except CryptoError as e:
                acts += fail(ctx, ike, now, f"cannot make a {_gname(self.group)} key: {e}",
                             FailReason.LOCAL)
                return None
            payloads.append(codec.ke(self.group, self.priv.public))
        self.msgid = ike.next_out  # the task manager sends it with this message ID
        chunk = addke.int_auth_chunk(ike.spi_i, ike.spi_r, EXCH_INT, True, False, self.msgid,
                                     payloads)
        self.int_auth_i = addke.fold(c.prf, ike.sk_pi, st.int_auth_i, chunk)
        ctx.log(acts, f"sending IKE_INTERMEDIATE request with additional key exchange "
                f"{st.done + 1} ({_gname(self.group)})" if self.group else
                "sending an empty IKE_INTERMEDIATE request (intermediate=yes)", ike,
                level="debug")
        return payloads

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return fail(ctx, ike, now, "no response to IKE_INTERMEDIATE (retransmit timeout)",
                    FailReason.TIMEOUT, retry=True)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        st, c = ike.intermediate, ike.chosen
        assert st is not None and c is not None
        errs = [p.notify_type for p in codec.errors(msg.payloads)]
        if errs:
            return fail(ctx, ike, now, f"peer answered IKE_INTERMEDIATE with {nname(errs[0])}",
                        reason_for_notify(errs[0]))
        kes = [p for p in msg.payloads if isinstance(p, wp.KEPayload)]
        chunk = addke.int_auth_chunk(ike.spi_i, ike.spi_r, EXCH_INT, False, True, self.msgid,
                                     msg.payloads)
        if self.priv is None:  # the empty exchange of intermediate=yes
            st.int_auth_r = addke.fold(c.prf, ike.sk_pr, st.int_auth_r, chunk)
            st.int_auth_i = self.int_auth_i
            st.exchanges += 1
            return queue_next(ctx, ike, now)
        if len(kes) != 1 or kes[0].group != self.group:
            return fail(ctx, ike, now, f"IKE_INTERMEDIATE response lacks the "
                        f"{_gname(self.group)} KE payload", FailReason.PROPOSAL)
        try:
            shared = self.priv.finish(bytes(kes[0].data))
        except CryptoError as e:
            return fail(ctx, ike, now, f"bad {_gname(self.group)} value in IKE_INTERMEDIATE "
                        f"response: {e}", FailReason.PROPOSAL)
        st.int_auth_r = addke.fold(c.prf, ike.sk_pr, st.int_auth_r, chunk)
        st.int_auth_i = self.int_auth_i
        self.priv = None
        _update(ctx, ike, shared)
        st.exchanges += 1
        st.done += 1
        acts: list[Action] = []
        ctx.log(acts, f"additional key exchange {st.done} ({_gname(self.group)}) done; "
                "IKE SA keys updated (RFC 9370)", ike, level="debug")
        return acts + queue_next(ctx, ike, now)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        st, c = ike.intermediate, ike.chosen
        assert c is not None

        def refuse(why: str) -> list[Action]:
            acts: list[Action] = [Log(f"IKE_INTERMEDIATE from {req.remote} rejected: {why}; "
                                      "answering INVALID_SYNTAX", level="warning",
                                      conn=ike.conn.name, serial=ike.serial)]
            acts += ctx.send_response(ike, EXCH_INT, req.msgid,
                                      [codec.notify(N.INVALID_SYNTAX)], req.local, req.remote)
            return acts + ctx.drop_ike(ike, now, "", EventKind.FAILED, FailReason.PROPOSAL)

        if st is None or not st.supported:
            return refuse("IKE_INT_SUP was not negotiated (RFC 9242 §3.1)")
        if ctx.is_computing(ike):  # the next request before our answer (window of 1, §2.3)
            return [Log(f"dropping IKE_INTERMEDIATE request {req.msgid} from {req.remote}: "
                        "the previous one is still being computed", level="debug",
                        conn=ike.conn.name, serial=ike.serial)]
        todo = addke.groups(c.addke)
        kes = [p for p in req.payloads if isinstance(p, wp.KEPayload)]
        if st.done >= len(todo):
            if kes:
                return refuse("KE payload after every additional key exchange was done")
            return _answer(ctx, ike, req, st, [], None)
        group = todo[st.done]
        if len(kes) != 1 or kes[0].group != group:
            got = f"group {kes[0].group}" if kes else "no KE payload"
            return refuse(f"additional key exchange {st.done + 1} needs "
                          f"{_gname(group)}, got {got}")
        peer_ke = bytes(kes[0].data)
        ike.next_in = req.msgid + 1  # a retransmit while the job runs is dropped (§2.1)

        def then(result: object, t: float) -> list[Action]:
            if ike.state is not IKEState.INIT_R or ike.intermediate is not st:
                return []
            if isinstance(result, BaseException):
                return refuse(f"bad {_gname(group)} value: {result}")
            ct, shared = cast(tuple[bytes, bytes], result)
            return _answer(ctx, ike, req, st, [codec.ke(group, ct)], shared)

        return ctx.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)


def _answer(ctx: IKEContext, ike: IKESA, req: Request, st: addke.IntState, out: list[Payload],
            shared: bytes | None) -> list[Action]:
    """Responder: fold both messages into IntAuth, answer, then update the keys."""
    c = ike.chosen
    assert c is not None
    chunk_i = addke.int_auth_chunk(ike.spi_i, ike.spi_r, EXCH_INT, True, False, req.msgid,
                                   req.payloads)
    chunk_r = addke.int_auth_chunk(ike.spi_i, ike.spi_r, EXCH_INT, False, True, req.msgid, out)
    st.int_auth_i = addke.fold(c.prf, ike.sk_pi, st.int_auth_i, chunk_i)
    st.int_auth_r = addke.fold(c.prf, ike.sk_pr, st.int_auth_r, chunk_r)
    acts = ctx.send_response(ike, EXCH_INT, req.msgid, out, req.local, req.remote)
    st.exchanges += 1
    if shared is not None:  # the answer went out with the old keys (RFC 9370 §2.2.2)
        _update(ctx, ike, shared)
        st.done += 1
        ctx.log(acts, f"additional key exchange {st.done} done; IKE SA keys updated "
                "(RFC 9370)", ike, level="debug")
    return acts
