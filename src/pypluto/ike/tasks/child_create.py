"""CREATE_CHILD_SA for a new Child SA (RFC 7296 §1.3.1, §2.17; PFS §1.3.3).

``ChildCreate`` is both roles; ``ChildRekey`` (``child_rekey.py``) extends it with
the REKEY_SA notify.  The responder code here serves both: ``respond_child``
accepts (or refuses) the Child SA, with the peer's KE computed by
``IKEContext.compute``.  New inbound SAs are installed before old ones are
deleted, so no traffic is lost.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import cast

from pypluto.config.model import Connection
from pypluto.crypto import dh
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType, ProtocolID, TransformType
from pypluto.iana import NotifyType as N
from pypluto.ike import addke, codec, proposals
from pypluto.ike import child as childmod
from pypluto.ike.actions import Action, ConnectionEvent, EventKind, FailReason, Log
from pypluto.ike.codec import Payload, Proposals
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildSA, ChildState, IKEState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.child_delete import delete_children, delete_spi_unknown
from pypluto.ike.tasks.common import NONCE_SIZE, RETRY_DELAY, nname, reason_for_notify
from pypluto.ike.tasks.ike_followup import busy as followup_busy
from pypluto.ike.tasks.ike_followup import child_followup, hold_child, kem_broken, link_of
from pypluto.ike.tasks.liveness import peer_dead
from pypluto.wire import payloads as wp

EXCH_CHILD = ExchangeType.CREATE_CHILD_SA


def _pfs_group(ike: IKESA, conn: Connection) -> int | None:
    if not conn.pfs:
        return None
    for s in proposals.child_specs(conn.esp, conn.ah, conn.phase2)[0]:
        if s.ke:
            return int(s.ke[0])
    return ike.ke_group


def _proto_id(c: ChildSA) -> ProtocolID:
    """The Protocol ID naming a Child SA in REKEY_SA and Delete (RFC 7296 §3.10, §3.11)."""
    return ProtocolID.AH if c.protocol == "ah" else ProtocolID.ESP


class ChildCreate(Task):
    """A new Child SA on an established IKE SA (``old`` is set by ``ChildRekey``)."""

    exchange = EXCH_CHILD

    def __init__(self, conn: Connection, old: ChildSA | None = None,
                 group: int | None = None) -> None:
        self.conn = conn
        self.old = old
        self.group = group
        self.child: ChildSA | None = None
        self.sent: Proposals = []
        self.ni = b""
        self.ke: dh.KeyExchange | None = None
        self.gone: set[int] = set()  # SPIs the peer deleted while this was in flight

    def retry_with(self, group: int | None) -> ChildCreate:
        """The same request with another KE group (after INVALID_KE_PAYLOAD, §1.3)."""
        return ChildCreate(self.conn, None, group)

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        old = self.old
        if old is not None and (old not in ike.children or old.replaced or old.peer_rekeys
                                or old.state is not ChildState.ESTABLISHED):
            old.rekeying = False
            return None
        conn = self.conn
        ah_nat = childmod.ah_nat_refusal(ike, conn)
        if ah_nat:  # AH cannot traverse a NAT (RFC 3948 is ESP only)
            if old is not None:
                old.rekeying = False
            acts.append(Log(f"Child SA failed: {ah_nat}", level="warning", conn=conn.name,
                            serial=ike.serial))
            acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial, ah_nat,
                                        FailReason.PROPOSAL))
            return None
        c = childmod.new_child(ctx, ike, conn, initiator=True)
        c.to(ChildState.REKEY_I if old else ChildState.NEW_I)
        c.rekey_of = old
        self.child = c
        self.ni = ctx.rng(NONCE_SIZE)
        group = self.group if self.group is not None else _pfs_group(ike, conn)
        self.group = group
        ts = (old.local_ts, old.remote_ts) if old is not None else None
        if old is not None:
            c.mode = old.mode
        cp, self.sent = childmod.offer(ike, c, group, ts)
        payloads: list[Payload] = []
        if old is not None:
            payloads.append(codec.notify(N.REKEY_SA, b"", _proto_id(old),
                                         old.spi_in.to_bytes(4, "big")))
        sa_p = cp[-3]
        payloads += cp[:-3]  # USE_TRANSPORT_MODE
        payloads += [sa_p, codec.nonce(self.ni)]
        if group:
            try:
                self.ke = dh.initiator_ke(group)
            except CryptoError as e:
                acts.append(Log(f"cannot create KE for PFS group {group}: {e}", level="error",
                                conn=conn.name, serial=ike.serial))
                ctx.release_child(c)
                return None
            payloads.append(codec.ke(group, self.ke.public))
        payloads += cp[-2:]
        ctx.log(acts, f"initiating rekey of Child SA #{old.serial}" if old else
                f"initiating Child SA using IKE SA #{ike.serial}", c)
        return payloads

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:
        if self.child is not None:
            ctx.release_child(self.child)
        if self.old is not None:
            self.old.rekeying = False

    def peer_deletes(self, spi: int) -> bool:
        if self.child is None:
            return False
        if len(self.gone) < _GONE_MAX:  # an honest peer names a few; a Delete may hold
            self.gone.add(spi)  # 16,000 unknown SPIs, many Deletes until our timeout
        return True

    def restart(self, ctx: IKEContext, ike: IKESA) -> ChildCreate:
        self.abandon(ctx, ike)
        if self.old is not None:
            self.old.rekeying = True
        return self.retry_with(self.group)

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        self.abandon(ctx, ike)
        return peer_dead(ctx, ike, now, "no answer to CREATE_CHILD_SA")

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        payloads = msg.payloads
        c, old = self.child, self.old
        assert c is not None
        errs = codec.errors(payloads)
        if errs:
            self.abandon(ctx, ike)
            t = int(errs[0].notify_type)
            if t == N.INVALID_KE_PAYLOAD and len(errs[0].data) >= 2:
                g = int.from_bytes(errs[0].data[:2], "big")
                if g != self.group and dh.supported(g) and g in childmod.ke_groups(ike, self.conn):
                    ctx.log(acts, f"peer asks for KE group {g}; retrying", c)
                    if old is not None:
                        old.rekeying = True
                    return acts + ctx.queue(ike, self.retry_with(g), now, front=True)
            if t == N.TEMPORARY_FAILURE and old is not None:
                old.rekey_at = now + RETRY_DELAY
                ctx.log(acts, "peer answered TEMPORARY_FAILURE; retrying rekey later", c)
                return acts
            rekeyed = _rekey_in_flight(ctx, ike) if t == N.TEMPORARY_FAILURE else None
            if rekeyed is not None and old is None:
                # §2.8.2: ``ike`` is the peer's new IKE SA of a rekey collision, which
                # the peer found redundant first; it waits behind our rekey in flight,
                # whose outcome takes it to the IKE SA that survives (move_children)
                ctx.log(acts, "peer answered TEMPORARY_FAILURE during an IKE SA rekey "
                        f"collision; retrying once IKE SA #{rekeyed.serial}'s rekey is "
                        "settled", c)
                rekeyed.tasks.append(self.retry_with(self.group))
                return acts
            if t == N.CHILD_SA_NOT_FOUND and old is not None:
                ctx.log(acts, "peer no longer has the Child SA; removing it", old)
                return acts + ctx.remove_child(old, now)
            ctx.log(acts, f"CREATE_CHILD_SA failed: peer answered {nname(t)}", c,
                    level="warning")
            acts.append(ConnectionEvent(EventKind.FAILED, c.conn.name, c.serial, nname(t),
                                        reason_for_notify(t)))
            if old is not None:
                acts += replace_refused(ctx, ike, old, nname(t), now)
            return acts
        nr_p = codec.first(payloads, wp.NoncePayload)
        ke_p = codec.first(payloads, wp.KEPayload)
        shared = None
        why = ""
        broken = False  # a malformed KE value (draft-ietf-ipsecme-ikev2-mlkem §2.2)
        if nr_p is None:
            why = "no Nonce in the answer"
        elif ke_p is None and self.ke is not None and self.conn.ms_dh_downgrade:
            # ms-dh-downgrade=yes: the peer may pick one of our proposals with KE NONE
            # (``finish`` checks that it did); this Child SA has no PFS
            self.ke = None
            ctx.log(acts, "the peer chose no PFS for this Child SA (ms-dh-downgrade=yes)", c)
        elif bool(ke_p) != bool(self.ke):
            why = "KE payload missing or unexpected"
        elif ke_p is not None and self.ke is not None:
            if ke_p.group != self.group:
                why = "KE group of the answer differs"
            else:
                try:
                    shared = self.ke.finish(ke_p.data)
                except CryptoError as e:
                    why, broken = f"bad KE: {e}", True
        if not why:
            assert nr_p is not None
            why, _ = childmod.finish(ike, c, self.sent, payloads, self.ni, bytes(nr_p.data),
                                     shared, self.group if self.ke else None)
            if not why and c.chosen is not None:  # reserved or colliding SPI (RFC 4303 §2.1)
                why = childmod.peer_spi_refusal(ctx, ike, c.chosen.spi, _proto_id(c))
            if not why and old is not None and (sorted(c.local_ts) != sorted(old.local_ts) or
                                                sorted(c.remote_ts) != sorted(old.remote_ts)):
                # RFC 7296 §2.9.2: a rekey keeps the traffic selectors; a narrowed (or
                # widened) answer would silently change what the tunnel carries
                why = "the answer changes the rekeyed Child SA's traffic selectors"
            if not why and old is None:  # narrowed into another Child SA's selectors
                why = childmod.answer_steals(ctx, ike, c)
        if not why and c.spi_out in self.gone:
            # §1.4.1: the peer deleted this Child SA (its Delete overtook this answer and
            # was answered without it: we did not know its SPI yet); installed, it
            # would be ours alone
            self.abandon(ctx, ike)
            ctx.log(acts, "the peer deleted the Child SA before its answer came; not "
                    "installing it", c)
            if old is not None and old in ike.children and \
                    old.state is ChildState.ESTABLISHED and not old.replaced:
                old.rekey_at = now + RETRY_DELAY
            return acts
        if not why and c.chosen is not None and addke.groups(c.chosen.addke):
            link = link_of(payloads)  # RFC 9370 §2.2.3: IKE_FOLLOWUP_KE before installing
            if link is None:
                why = "additional key exchanges chosen without ADDITIONAL_KEY_EXCHANGE"
            else:
                assert nr_p is not None and shared is not None
                return acts + child_followup(ctx, ike, self, c, link, shared, self.ni,
                                             bytes(nr_p.data), now)
        if why:
            self.abandon(ctx, ike)
            ctx.log(acts, f"CREATE_CHILD_SA failed: {why}", c, level="warning")
            if not broken:  # else the IKE SA goes, and the peer's Child SA with it
                if not c.spi_out:  # refused before ``finish`` took the answer's SPI
                    c.spi_out = _answered_spi(payloads)
                acts += delete_spi_unknown(ctx, ike, c, now)
            if old is not None:
                acts += replace_refused(ctx, ike, old, why, now)
            return acts + (kem_broken(ctx, ike, self.group or 0, now) if broken else [])
        return acts + self.complete(ctx, ike, now)

    def complete(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        """Install the negotiated Child SA (after any IKE_FOLLOWUP_KE), retire the old one."""
        acts: list[Action] = []
        c, old = self.child, self.old
        assert c is not None
        acts += ctx.install_child(c, c.keys, now, replaces=old)
        c.keys = None
        c.rekey_of = None  # no chains of references to old SAs
        if old is None:
            return acts
        old.rekeying = False
        old.rekey_at = None
        if old.peer_rekeys:  # §2.8.1 collision
            other = old.peer_rekeys[-1]
            if c.nonce_min < other.nonce_min:
                ctx.log(acts, f"rekey collision: Child SA #{c.serial} is redundant, "
                        "deleting it", c)
                c.rekey_at = None
                return acts + delete_children(ctx, ike, [c], now)
            ctx.log(acts, f"rekey collision: Child SA #{c.serial} wins over #{other.serial}",
                    c)
        old.replaced = True
        return acts + delete_children(ctx, ike, [old], now)

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True  # the last CREATE_CHILD_SA responder

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        return respond_child(ctx, ike, req, now)


_GONE_MAX = 1024
"""The most SPIs a CREATE_CHILD_SA in flight remembers as deleted by the peer (§2.25)."""


def _answered_spi(payloads: Sequence[Payload]) -> int:
    """The SPI of the Child SA a successful answer made on the peer (its one proposal's
    4-octet SPI), or 0: refused for its Nonce or KE, it is deleted there too (§1.4.1)."""
    sa_p = codec.first(payloads, wp.SAPayload)
    if sa_p is None or len(sa_p.proposals) != 1 or len(sa_p.proposals[0].spi) != 4:
        return 0
    return int.from_bytes(sa_p.proposals[0].spi, "big")


def _rekey_in_flight(ctx: IKEContext, ike: IKESA) -> IKESA | None:
    """The IKE SA whose rekey by us is in flight while the peer rekeyed it into
    ``ike`` (an IKE SA rekey collision not settled yet, §2.8.2), or None."""
    if not ike.nonce_min:  # only an IKE SA made by a rekey is in a peer_rekeys list
        return None
    for old in ctx.peers_of(ike):
        o = old.outstanding
        if ike in old.peer_rekeys and old.rekeying and o is not None and \
                o.task.exchange == EXCH_CHILD:
            return old
    return None


def replace_refused(ctx: IKEContext, ike: IKESA, old: ChildSA, why: str, now: float
                    ) -> list[Action]:
    """The peer refused to rekey ``old``: never let it expire silently (issue 12).

    A second identical CREATE_CHILD_SA would be refused again (typically ``pfs=yes``
    offers KE and the peer's ESP proposals have none), so, as Libreswan replaces a
    Child SA it cannot rekey, a fresh IKE SA is negotiated (RFC 7296 §2.8
    re-authentication, make-before-break): its IKE_AUTH carries the Child SA, whose
    keys come from the new IKE SA's fresh Diffie-Hellman, so PFS still holds; the
    old IKE SA is deleted once the new one is up.
    """
    acts: list[Action] = []
    conn = old.conn
    old.rekey_at = None  # the same request would be refused again
    if conn.name not in ctx.connections:
        return acts
    if conn.remote.host_addr is None:
        ctx.log(acts, f"the peer refused to rekey Child SA #{old.serial} ({why}) and its "
                "address is not configured (%any): the Child SA will expire at the end of "
                "its lifetime unless the peer replaces it", old, level="error")
        return acts
    if ike.replaced:  # a replacement IKE SA is already on its way
        return acts
    if conn is ike.conn:
        ctx.log(acts, f"the peer refused to rekey Child SA #{old.serial} ({why}): "
                f"replacing IKE SA #{ike.serial} and its Child SA with a new IKE SA "
                "(re-authentication, make-before-break) before it expires", old,
                level="warning")
        ike.replaced = True
        ike.rekey_at = None
        return acts + ctx.initiate_ike(conn, now, reauth_of=ike)
    ctx.log(acts, f"the peer refused to rekey Child SA #{old.serial} ({why}): "
            "negotiating a new IKE SA with a new Child SA for it", old, level="warning")
    return acts + ctx.initiate_ike(conn, now)


def precheck(ctx: IKEContext, ike: IKESA, req: Request
             ) -> tuple[wp.SAPayload, bytes] | list[Action]:
    """(SA payload, Ni) of a CREATE_CHILD_SA request, or the error answer already sent."""
    sa_p = codec.first(req.payloads, wp.SAPayload)
    ni_p = codec.first(req.payloads, wp.NoncePayload)
    if sa_p is None or ni_p is None:
        return ctx.send_response(ike, EXCH_CHILD, req.msgid, [codec.notify(N.INVALID_SYNTAX)])
    if ike.state is IKEState.DELETING:
        return ctx.send_response(ike, EXCH_CHILD, req.msgid,
                                 [codec.notify(N.TEMPORARY_FAILURE)])
    if ike.peer_rekeys:
        # §2.18: the peer rekeyed this IKE SA and its Child SAs are on the new one; it
        # only deletes this one now.  A Child SA made here would die with it, a second
        # IKE SA rekey would fork the session, and CHILD_SA_NOT_FOUND to a REKEY_SA
        # (its Child SA moved) would make the peer drop a live Child SA (§2.25):
        # TEMPORARY_FAILURE, as §2.25.2 answers a request racing an IKE SA rekey
        busy: list[Action] = []
        ctx.log(busy, "CREATE_CHILD_SA on an IKE SA the peer has rekeyed to IKE SA "
                f"#{ike.peer_rekeys[-1].serial}; answering TEMPORARY_FAILURE", ike,
                level="warning")
        return busy + ctx.send_response(ike, EXCH_CHILD, req.msgid,
                                        [codec.notify(N.TEMPORARY_FAILURE)])
    if ike.redirected:  # RFC 5685: this IKE SA was redirected elsewhere; it is to go
        acts: list[Action] = []
        ctx.log(acts, "refusing CREATE_CHILD_SA on a redirected IKE SA (RFC 5685); "
                "answering NO_ADDITIONAL_SAS", ike, level="warning")
        return acts + ctx.send_response(ike, EXCH_CHILD, req.msgid,
                                        [codec.notify(N.NO_ADDITIONAL_SAS)])
    return sa_p, bytes(ni_p.data)


def respond_child(ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
    """A new Child SA, or the rekey of one (REKEY_SA, §1.3.3); TEMPORARY_FAILURE (§2.25)."""
    checked = precheck(ctx, ike, req)
    if isinstance(checked, list):
        return checked
    _, ni = checked
    payloads, msgid = req.payloads, req.msgid

    def answer(out: list[Payload]) -> list[Action]:
        return ctx.send_response(ike, EXCH_CHILD, msgid, out)

    ke_p = codec.first(payloads, wp.KEPayload)
    nr = ctx.rng(NONCE_SIZE)
    rekey = next((p for p in codec.notifies(payloads) if p.notify_type == N.REKEY_SA), None)
    old = None
    conn = ike.conn
    if rekey is not None:
        if rekey.protocol_id not in (ProtocolID.ESP, ProtocolID.AH) or len(rekey.spi) != 4:
            return answer([codec.notify(N.CHILD_SA_NOT_FOUND)])  # CVE-2023-38710
        val = int.from_bytes(rekey.spi, "big")
        old = next((c for c in ike.children if c.spi_out == val
                    and _proto_id(c) == rekey.protocol_id), None)
        if old is not None and old.state is ChildState.DELETING:
            return answer([codec.notify(N.TEMPORARY_FAILURE)])  # §2.25.1: we close it
        flight = ike.outstanding
        if old is None and flight is not None and isinstance(flight.task, ChildCreate):
            # §2.25: the Child SA may be the one our exchange in flight makes: the peer
            # answered it (its SPI is in that answer, still on its way) and rekeys it
            # at once.  CHILD_SA_NOT_FOUND would make the peer drop the Child SA that
            # we install when the answer comes; it tries again later
            return _temporary_failure(ctx, ike, None, "rekey of a Child SA not known yet, "
                                      "our CREATE_CHILD_SA exchange is in flight", answer)
        if old is None or old.state is not ChildState.ESTABLISHED:
            return answer([codec.notify(N.CHILD_SA_NOT_FOUND, b"", int(rekey.protocol_id),
                                        bytes(rekey.spi))])
        if old.replaced:
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
        conn = old.conn
    elif (grade := childmod.ts_fit_grade(ctx, ike, conn, payloads)) < childmod.FIT_ALL:
        # a new Child SA of another conn of the same peer (§2.9): that conn's pfs= and
        # esp= judge the KE payload, not those of the conn the IKE SA was made for; the
        # best fit first (ts_fit_grade: one answering a mere subset comes after)
        for o in childmod.other_connections(ctx, ike):
            g = childmod.ts_fit_grade(ctx, ike, o, payloads)
            if g > grade:
                conn, grade = o, g
                if g == childmod.FIT_ALL:
                    break
    why_busy = followup_busy(ike, old)
    if why_busy:  # RFC 9370 §2.2.2, RFC 7296 §2.25
        return _temporary_failure(ctx, ike, old, why_busy, answer)
    if ke_p is not None and not conn.pfs and _offers_ke_none(payloads):
        # pfs=no, and the peer offers KE NONE beside its group (its ms-dh-downgrade=yes):
        # we pick a proposal without PFS and ignore its KE payload, as Libreswan does
        # (ikev2-child-01-pfs-no-downgrade-no); no need to refuse what it offered
        ke_p = None
        payloads = _only_proposals(payloads, _ke_none)  # those without PFS
    if (ke_p is None) == conn.pfs and not (ke_p is None and conn.ms_dh_downgrade):
        # pfs= enforced both ways, as Libreswan does; ms-dh-downgrade=yes lets a
        # CREATE_CHILD_SA without KE through (Libreswan offers and accepts KE NONE)
        why = "pfs=yes and the request has no KE payload" if conn.pfs else \
            "pfs=no and the request carries a KE payload"
        refused: list[Action] = []
        ctx.log(refused, f"CREATE_CHILD_SA {'rekey ' if old else ''}refused: {why}; "
                "answering NO_PROPOSAL_CHOSEN", old or ike, level="warning")
        return refused + answer([codec.notify(N.NO_PROPOSAL_CHOSEN)])
    if ke_p is None:
        # no KE payload: only a proposal without a group, or with KE NONE, can be taken
        # (one that names only groups needs the KE that is not there, RFC 7296 §1.3.1)
        payloads = _only_proposals(payloads, _needs_no_ke)
        downgrade: list[Action] = []
        if conn.pfs:  # ms-dh-downgrade=yes (above)
            ctx.log(downgrade, f"CREATE_CHILD_SA {'rekey ' if old else ''}without KE accepted: "
                    "no PFS for this Child SA (ms-dh-downgrade=yes)", old or ike)
        return downgrade + _respond_child_keyed(ctx, ike, msgid, payloads, conn, old, ni, nr,
                                                None, None, None, now)
    group = int(ke_p.group)
    allowed = childmod.ke_groups(ike, conn)
    if group not in allowed:
        # §1.3: INVALID_KE_PAYLOAD names a group of the peer's proposals that we accept;
        # none of them: NO_PROPOSAL_CHOSEN (a group it never offered cannot be asked for)
        sa_p = codec.first(payloads, wp.SAPayload)
        offered = {int(t.id) for p in (sa_p.proposals if sa_p else ()) for t in p.transforms
                   if t.type == TransformType.KE}
        prefs = [int(g) for sp in proposals.child_specs(conn.esp, conn.ah, conn.phase2)[0]
                 for g in sp.ke] + sorted(allowed)  # esp= order: our preference first
        pick = next((g for g in prefs if g in allowed and g in offered), None)
        if pick is None:
            refused = []
            ctx.log(refused, f"CREATE_CHILD_SA {'rekey ' if old else ''}refused: the peer "
                    f"offers no KE group of ours ({', '.join(map(str, sorted(allowed)))}); "
                    "answering NO_PROPOSAL_CHOSEN", old or ike, level="warning")
            return refused + answer([codec.notify(N.NO_PROPOSAL_CHOSEN)])
        return answer([codec.notify(N.INVALID_KE_PAYLOAD, pick.to_bytes(2, "big"))])
    # ``next_in`` moves on at once, so a retransmit of the request while an offloaded
    # job runs is dropped rather than processed twice (§2.1); the peer's next
    # retransmit after the answer gets the cached response.
    ike.next_in = msgid + 1
    peer_ke = bytes(ke_p.data)

    def then(result: object, t: float) -> list[Action]:
        if isinstance(result, BaseException):
            return answer([codec.notify(N.INVALID_SYNTAX)])
        if ike.state is IKEState.DELETING or (old is not None and (
                old.state is not ChildState.ESTABLISHED or old.replaced)):
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
        why_busy = followup_busy(ike, old)  # ours may have started meanwhile
        if why_busy:
            return _temporary_failure(ctx, ike, old, why_busy, answer)
        ke_out, shared = cast(tuple[bytes, bytes], result)
        return _respond_child_keyed(ctx, ike, msgid, payloads, conn, old, ni, nr, group, ke_out,
                                    shared, t)

    return ctx.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)


def _ke_none(p: wp.Proposal) -> bool:
    return any(t.type == TransformType.KE and t.id == 0
               for t in p.transforms)


def _offers_ke_none(payloads: Sequence[Payload]) -> bool:
    """Does the request's SA payload offer a proposal with KE NONE (no PFS)?"""
    sa_p = codec.first(payloads, wp.SAPayload)
    return sa_p is not None and any(_ke_none(p) for p in sa_p.proposals)


def _only_proposals(payloads: list[Payload], keep: Callable[[wp.Proposal], bool]
                    ) -> list[Payload]:
    """The request with only the proposals of its SA payload that ``keep`` takes (the
    payloads themselves when it takes them all)."""
    sa_p = codec.first(payloads, wp.SAPayload)
    if sa_p is None or all(keep(p) for p in sa_p.proposals):
        return payloads
    new = wp.SAPayload(proposals=[p for p in sa_p.proposals if keep(p)])
    return [new if p is sa_p else p for p in payloads]


def _needs_no_ke(p: wp.Proposal) -> bool:
    """No KE transform, or KE NONE among them: a proposal a request without KE can take."""
    return _ke_none(p) or not any(t.type == TransformType.KE for t in p.transforms)


def _temporary_failure(ctx: IKEContext, ike: IKESA, old: ChildSA | None, why: str,
                       answer: Callable[[list[Payload]], list[Action]]) -> list[Action]:
    acts: list[Action] = []
    ctx.log(acts, f"CREATE_CHILD_SA {'rekey ' if old else ''}deferred: {why}; answering "
            "TEMPORARY_FAILURE", old or ike)
    return acts + answer([codec.notify(N.TEMPORARY_FAILURE)])


def _respond_child_keyed(ctx: IKEContext, ike: IKESA, msgid: int, payloads: list[Payload],
                         conn: Connection, old: ChildSA | None, ni: bytes, nr: bytes,
                         group: int | None, ke_out: bytes | None, shared: bytes | None,
                         now: float) -> list[Action]:
    """Accept (or refuse) the new Child SA and answer (§1.3.1, §2.17 keys)."""
    acts: list[Action] = []

    def answer(out: list[Payload]) -> list[Action]:
        return acts + ctx.send_response(ike, EXCH_CHILD, msgid, out)

    c, cp, why, _ = childmod.accept(ctx, ike, conn, payloads, ni, nr, group, shared, old,
                                    create_child=True)
    if c is None and old is None and not childmod.ts_fits(ctx, ike, conn, payloads):
        for other in childmod.other_connections(ctx, ike):  # another conn, same peer
            if childmod.ts_fits(ctx, ike, other, payloads):
                c, cp, why, _ = childmod.accept(ctx, ike, other, payloads, ni, nr, group,
                                                shared, None, create_child=True)
                break
    if c is None:
        acts.append(Log(f"CREATE_CHILD_SA refused: {why}", level="warning", conn=conn.name,
                        serial=ike.serial))
        return answer(cp)
    c.rekey_of = old
    out: list[Payload] = [cp[0], codec.nonce(nr)]
    if ke_out is not None and group is not None:
        out.append(codec.ke(group, ke_out))
    out += cp[1:]
    if c.chosen is not None and addke.groups(c.chosen.addke):  # RFC 9370 §2.2.3
        assert shared is not None
        return acts + hold_child(ctx, ike, c, old, shared, ni, nr, out, msgid,
                                 _install_answered, now)
    acts += _install_answered(ctx, ike, c, old, now)
    return answer(out)


def _install_answered(ctx: IKEContext, ike: IKESA, c: ChildSA, old: ChildSA | None,
                      now: float) -> list[Action]:
    """Responder: install the accepted Child SA (after any IKE_FOLLOWUP_KE)."""
    acts = ctx.install_child(c, c.keys, now, replaces=old, defer_out=old is not None)
    c.keys = None
    c.rekey_of = None
    if old is not None:
        old.peer_rekeys = [*old.peer_rekeys, c]
        old.rekey_at = None  # the peer deletes it
        ctx.log(acts, f"Child SA #{old.serial} rekeyed by peer", c)
    return acts
