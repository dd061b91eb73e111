"""CREATE_CHILD_SA: new Child SA, Child SA rekey, IKE SA rekey (RFC 7296 §1.3, §2.8, §2.18).

Rekey collisions follow §2.8.1 / §2.8.2: when both ends rekeyed the same SA,
the new SA created with the lowest of the four nonces is redundant and is
deleted by the end that initiated it; the other end's initiator deletes the
old SA.  A rekey request for an SA that we already replaced is answered
TEMPORARY_FAILURE (§2.25).  New inbound SAs are installed before old ones are
deleted, so no traffic is lost.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pypluto.crypto import dh, keys
from pypluto.crypto.errors import CryptoError
from pypluto.ike import codec, proposals
from pypluto.ike import sa as S
from pypluto.ike.actions import Action, ConnectionEvent, EventKind, Log
from pypluto.ike.exchanges import child as childmod
from pypluto.ike.exchanges import informational
from pypluto.ike.exchanges.ike_sa_init import reason_for_notify
from pypluto.ike.sa import IKESA, ChildSA
from pypluto.wire.constants import NotifyType as N

if TYPE_CHECKING:
    from pypluto.config.model import Connection
    from pypluto.ike.engine import Engine

PT = codec.PT
EXCH_CHILD = 36
PROTO_IKE, PROTO_AH, PROTO_ESP = 1, 2, 3
NONCE_SIZE = 32
RETRY_DELAY = 10.0


def _first(payloads: list, ptype: int) -> Any:
    return next((p for p in payloads if p.payload_type == ptype), None)


def _errors(payloads: list) -> list[Any]:
    return [p for p in payloads if p.payload_type == PT.NOTIFY and p.notify_type < 16384]


def _nname(t: int) -> str:
    try:
        return N(t).name
    except ValueError:
        return str(t)


def _pfs_group(ike: IKESA, conn: Connection) -> int | None:
    if not conn.pfs:
        return None
    for s in proposals.esp_specs(conn.esp):
        if s.ke:
            return int(s.ke[0])
    return ike.ke_group


class _ChildTaskBase:
    exchange = EXCH_CHILD

    def __init__(self, conn: Connection, old: ChildSA | None = None,
                 group: int | None = None) -> None:
        self.conn = conn
        self.old = old
        self.group = group
        self.child: ChildSA | None = None
        self.sent: list = []
        self.ni = b""
        self.ke: Any = None

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        old = self.old
        if old is not None and (old not in ike.children or old.replaced or old.peer_rekeys
                                or old.state != S.ESTABLISHED_CHILD):
            old.rekeying = False
            return None
        conn = self.conn
        c = childmod.new_child(eng, ike, conn, initiator=True)
        c.state = S.REKEY_CHILD_I1 if old else S.NEW_CHILD_I1
        c.rekey_of = old
        self.child = c
        self.ni = eng.rng(NONCE_SIZE)
        group = self.group if self.group is not None else _pfs_group(ike, conn)
        self.group = group
        ts = (old.local_ts, old.remote_ts) if old is not None else None
        if old is not None:
            c.mode = old.mode
        cp, self.sent = childmod.offer(ike, c, group, ts)
        payloads: list = []
        if old is not None:
            payloads.append(codec.notify(N.REKEY_SA, b"", PROTO_ESP,
                                         old.spi_in.to_bytes(4, "big")))
        sa_p = cp[-3]
        payloads += [n for n in cp[:-3]]  # USE_TRANSPORT_MODE
        payloads += [sa_p, codec.nonce(self.ni)]
        if group:
            try:
                self.ke = dh.initiator_ke(group)
            except CryptoError as e:
                acts.append(Log(f"cannot create KE for PFS group {group}: {e}", level="error",
                                conn=conn.name, serial=ike.serial))
                childmod.release(eng, c)
                return None
            payloads.append(codec.ke(group, self.ke.public))
        payloads += cp[-2:]
        eng.log(acts, f"initiating rekey of Child SA #{old.serial}" if old else
                f"initiating Child SA using IKE SA #{ike.serial}", c)
        return payloads

    def _give_up(self, eng: Engine, ike: IKESA, now: float) -> None:
        if self.child is not None:
            childmod.release(eng, self.child)
        if self.old is not None:
            self.old.rekeying = False

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        self._give_up(eng, ike, now)
        return informational.peer_dead(eng, ike, now, "no answer to CREATE_CHILD_SA")

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        c, old = self.child, self.old
        assert c is not None
        errs = _errors(payloads)
        if errs:
            self._give_up(eng, ike, now)
            t = int(errs[0].notify_type)
            if t == N.INVALID_KE_PAYLOAD and len(errs[0].data) >= 2:
                g = int.from_bytes(errs[0].data[:2], "big")
                if g != self.group and dh.supported(g):
                    eng.log(acts, f"peer asks for KE group {g}; retrying", c)
                    if old is not None:
                        old.rekeying = True
                    return acts + eng.queue(ike, _ChildTaskBase(self.conn, old, g), now, front=True)
            if t == N.TEMPORARY_FAILURE and old is not None:
                old.rekey_at = now + RETRY_DELAY
                eng.log(acts, "peer answered TEMPORARY_FAILURE; retrying rekey later", c)
                return acts
            if t == N.CHILD_SA_NOT_FOUND and old is not None:
                eng.log(acts, "peer no longer has the Child SA; removing it", old)
                return acts + eng.remove_child(old, now)
            eng.log(acts, f"CREATE_CHILD_SA failed: peer answered {_nname(t)}", c,
                    level="warning")
            acts.append(ConnectionEvent(EventKind.FAILED, c.conn.name, c.serial, _nname(t),
                                        reason_for_notify(t)))
            return acts
        nr_p = _first(payloads, PT.NONCE)
        ke_p = _first(payloads, PT.KE)
        shared = None
        why = ""
        if nr_p is None:
            why = "no Nonce in the answer"
        elif bool(ke_p) != bool(self.ke):
            why = "KE payload missing or unexpected"
        elif ke_p is not None:
            if ke_p.group != self.group:
                why = "KE group of the answer differs"
            else:
                try:
                    shared = self.ke.finish(ke_p.data)
                except CryptoError as e:
                    why = f"bad KE: {e}"
        if not why:
            why, _ = childmod.finish(eng, ike, c, self.sent, payloads, self.ni, nr_p.data,
                                     shared, self.group if self.ke else None)
        if why:
            self._give_up(eng, ike, now)
            eng.log(acts, f"CREATE_CHILD_SA failed: {why}", c, level="warning")
            return acts + informational.delete_spi_unknown(eng, ike, c, now)
        acts += eng.install_child(c, c.keys, now, replaces=old)
        c.keys = None
        c.rekey_of = None  # no chains of references to old SAs
        if old is None:
            return acts
        old.rekeying = False
        old.rekey_at = None
        if old.peer_rekeys:  # §2.8.1 collision
            other = old.peer_rekeys[-1]
            if c.nonce_min < other.nonce_min:
                eng.log(acts, f"rekey collision: Child SA #{c.serial} is redundant, deleting it",
                        c)
                c.rekey_at = None
                return acts + informational.delete_children(eng, ike, [c], now)
            eng.log(acts, f"rekey collision: Child SA #{c.serial} wins over #{other.serial}", c)
        old.replaced = True
        return acts + informational.delete_children(eng, ike, [old], now)


class NewChildTask(_ChildTaskBase):
    def __init__(self, conn: Connection, group: int | None = None) -> None:
        super().__init__(conn, None, group)


class RekeyChildTask(_ChildTaskBase):
    def __init__(self, old: ChildSA, group: int | None = None) -> None:
        super().__init__(old.conn, old, group)


def move_children(src: IKESA, dst: IKESA) -> None:
    """Children and their queued work go to the new IKE SA (§2.18)."""
    for c in src.children:
        c.parent = dst
        c.rekeying = False
    dst.children.extend(src.children)
    src.children = []
    keep = []
    for t in src.tasks:
        if isinstance(t, (_ChildTaskBase, informational.DeleteChildTask)):
            if isinstance(t, _ChildTaskBase) and t.old is not None:
                t.old.rekeying = True
            dst.tasks.append(t)
        else:
            keep.append(t)
    src.tasks.clear()
    src.tasks.extend(keep)


def _new_ike(eng: Engine, old: IKESA, initiator: bool, spi_i: bytes, spi_r: bytes,
             chosen: Any, ni: bytes, nr: bytes, shared: bytes, now: float) -> IKESA:
    new = IKESA(serial=eng.new_serial(), conn=old.conn, initiator=initiator, spi_i=spi_i,
                spi_r=spi_r, local=old.local, remote=old.remote, state=S.ESTABLISHED_IKE,
                )
    seed = keys.rekey_skeyseed(old.chosen.prf, old.sk_d, shared, ni, nr)  # type: ignore[union-attr]
    k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                             seed, ni, nr, spi_i, spi_r)
    new.chosen = chosen
    new.ke_group = chosen.ke
    new.ni, new.nr = ni, nr
    from pypluto.ike.exchanges.ike_sa_init import _protectors
    _protectors(eng, new, k)
    new.local_id, new.remote_id = old.local_id, old.remote_id
    new.nat_local, new.nat_remote = old.nat_local, old.nat_remote
    new.frag_ok = old.frag_ok
    new.next_keepalive = old.next_keepalive
    new.established_at = now
    new.last_recv = now
    new.nonce_min = min(ni, nr)
    eng.register(new)
    eng.index_peer(new)
    from pypluto.ike.exchanges.ike_auth import set_ike_timers
    set_ike_timers(eng, new, now)
    return new


class RekeyIKETask:
    """Rekey the IKE SA (§1.3.2, §2.18): new SPIs, new KE, children move over."""

    exchange = EXCH_CHILD

    def __init__(self, group: int | None = None) -> None:
        self.group = group
        self.spi = b""
        self.ni = b""
        self.ke: Any = None
        self.sent: list = []

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        if ike.replaced or ike.peer_rekeys:
            ike.rekeying = False
            return None
        group = self.group or ike.ke_group
        self.group = group
        self.spi = eng.alloc_ike_spi()
        eng.ike_sas[self.spi] = ike  # reserve
        self.ni = eng.rng(NONCE_SIZE)
        try:
            self.ke = dh.initiator_ke(group)
        except CryptoError:
            eng.ike_sas.pop(self.spi, None)
            return None
        self.sent = proposals.build_proposals(proposals.ike_specs(ike.conn.ike), PROTO_IKE,
                                              self.spi, ike=True, ke_override=group)
        ike.state = S.ESTABLISHED_IKE
        eng.log(acts, "initiating rekey of the IKE SA", ike)
        return [codec.sa(self.sent), codec.nonce(self.ni), codec.ke(group, self.ke.public)]

    def _release(self, eng: Engine) -> None:
        if self.spi and eng.ike_sas.get(self.spi) is not None and \
                eng.ike_sas[self.spi].local_spi != self.spi:
            del eng.ike_sas[self.spi]

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        self._release(eng)
        return informational.peer_dead(eng, ike, now, "no answer to the IKE SA rekey")

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        self._release(eng)
        errs = _errors(payloads)
        if errs:
            ike.rekeying = False
            t = int(errs[0].notify_type)
            if t == N.INVALID_KE_PAYLOAD and len(errs[0].data) >= 2:
                g = int.from_bytes(errs[0].data[:2], "big")
                if g != self.group and dh.supported(g):
                    ike.rekeying = True
                    return eng.queue(ike, RekeyIKETask(g), now, front=True)
            ike.rekey_at = now + RETRY_DELAY
            eng.log(acts, f"IKE SA rekey refused: {_nname(t)}; retrying later", ike)
            return acts
        sa_p, nr_p, ke_p = (_first(payloads, PT.SA), _first(payloads, PT.NONCE),
                            _first(payloads, PT.KE))
        chosen = proposals.check_answer(codec.sa_tuples(sa_p), self.sent, ike=True) \
            if sa_p is not None else None
        if chosen is None or nr_p is None or ke_p is None or ke_p.group != self.group \
                or chosen.ke != self.group or len(chosen.spi) != 8:
            ike.rekeying = False
            ike.rekey_at = now + RETRY_DELAY
            eng.log(acts, "IKE SA rekey answer is not acceptable", ike, level="warning")
            return acts
        try:
            shared = self.ke.finish(ke_p.data)
            new = _new_ike(eng, ike, True, self.spi, chosen.spi, chosen, self.ni, nr_p.data,
                           shared, now)
        except CryptoError as e:
            ike.rekeying = False
            eng.log(acts, f"IKE SA rekey failed: {e}", ike, level="warning")
            return acts
        ike.rekeying = False
        eng.log(acts, f"rekeyed IKE SA #{ike.serial}: established IKE SA "
                f"{chosen.encr_name()}-{chosen.prf_name()}-{chosen.ke_name()}", new)
        acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, new.conn.name, new.serial, "rekey"))
        if ike.peer_rekeys:  # §2.8.2 collision
            other = ike.peer_rekeys[-1]
            if new.nonce_min < other.nonce_min:
                eng.log(acts, f"IKE SA rekey collision: #{new.serial} is redundant", new)
                move_children(new, other)
                move_children(ike, other)
                new.rekey_at = None
                return acts + informational.delete_ike(eng, new, now)
            move_children(other, new)
        move_children(ike, new)
        ike.replaced = True
        ike.rekey_at = None
        acts += informational.delete_ike(eng, ike, now)
        return acts + eng.kick(new, now)


# ---------------------------------------------------------------- responder
def respond(eng: Engine, ike: IKESA, msgid: int, payloads: list, now: float) -> list[Action]:
    acts: list[Action] = []

    def answer(out: list) -> list[Action]:
        return acts + eng.send_response(ike, EXCH_CHILD, msgid, out)

    sa_p = _first(payloads, PT.SA)
    ni_p = _first(payloads, PT.NONCE)
    ke_p = _first(payloads, PT.KE)
    if sa_p is None or ni_p is None:
        return answer([codec.notify(N.INVALID_SYNTAX)])
    if ike.state == S.IKE_DELETING:
        return answer([codec.notify(N.TEMPORARY_FAILURE)])
    protos = {int(p.protocol_id) for p in sa_p.proposals}
    nr = eng.rng(NONCE_SIZE)
    ni = bytes(ni_p.data)
    if protos == {PROTO_IKE}:
        return acts + _respond_ike_rekey(eng, ike, msgid, sa_p, ni, nr, ke_p, now)
    rekey = next((p for p in payloads if p.payload_type == PT.NOTIFY
                  and p.notify_type == N.REKEY_SA), None)
    old = None
    conn = ike.conn
    if rekey is not None:
        if rekey.protocol_id not in (PROTO_ESP, PROTO_AH) or len(rekey.spi) != 4:
            return answer([codec.notify(N.CHILD_SA_NOT_FOUND)])  # CVE-2023-38710
        val = int.from_bytes(rekey.spi, "big")
        old = next((c for c in ike.children if c.spi_out == val), None)
        if old is None or old.state != S.ESTABLISHED_CHILD:
            return answer([codec.notify(N.CHILD_SA_NOT_FOUND, b"", int(rekey.protocol_id),
                                        bytes(rekey.spi))])
        if old.replaced:
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
        conn = old.conn
    shared = None
    ke_out = None
    group = None
    if ke_p is not None:
        group = int(ke_p.group)
        specs = proposals.esp_specs(conn.esp)
        allowed = {int(g) for s in specs for g in s.ke} | {ike.ke_group}
        if group not in allowed:
            pick = next(iter(sorted(allowed)), ike.ke_group)
            return answer([codec.notify(N.INVALID_KE_PAYLOAD, pick.to_bytes(2, "big"))])
        return acts + _child_ke(eng, ike, msgid, payloads, conn, old, ni, nr, group,
                                bytes(ke_p.data), now)
    return acts + _respond_child_keyed(eng, ike, msgid, payloads, conn, old, ni, nr, group,
                                       ke_out, shared, now)


def _child_ke(eng: Engine, ike: IKESA, msgid: int, payloads: list, conn: Connection,
                      old: ChildSA | None, ni: bytes, nr: bytes, group: int, peer_ke: bytes,
                      now: float) -> list[Action]:
    """The PFS key exchange of a CREATE_CHILD_SA request (``Engine.compute``; §1.3.1, §1.3.3).

    ``next_in`` moves on at once, so a retransmit of the request while the job
    runs is dropped rather than processed twice (§2.1); the peer's next
    retransmit after the answer gets the cached response.
    """
    ike.next_in = msgid + 1

    def then(result: object, t: float) -> list[Action]:
        if isinstance(result, BaseException):
            return eng.send_response(ike, EXCH_CHILD, msgid, [codec.notify(N.INVALID_SYNTAX)])
        if ike.state == S.IKE_DELETING or (old is not None and (
                old.state != S.ESTABLISHED_CHILD or old.replaced)):
            return eng.send_response(ike, EXCH_CHILD, msgid,
                                     [codec.notify(N.TEMPORARY_FAILURE)])
        ke_out, shared = cast(tuple[bytes, bytes], result)
        return _respond_child_keyed(eng, ike, msgid, payloads, conn, old, ni, nr, group, ke_out,
                                    shared, t)

    return eng.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)


def _respond_child_keyed(eng: Engine, ike: IKESA, msgid: int, payloads: list, conn: Connection,
                         old: ChildSA | None, ni: bytes, nr: bytes, group: int | None,
                         ke_out: bytes | None, shared: bytes | None, now: float
                         ) -> list[Action]:
    """Accept (or refuse) the new Child SA and answer (§1.3.1, §2.17 keys)."""
    acts: list[Action] = []

    def answer(out: list) -> list[Action]:
        return acts + eng.send_response(ike, EXCH_CHILD, msgid, out)

    c, cp, why, _ = childmod.accept(eng, ike, conn, payloads, ni, nr, group, shared, old)
    if c is None and old is None and not childmod.ts_fits(eng, ike, conn, payloads):
        for other in childmod.other_connections(eng, ike):  # another conn, same peer
            if childmod.ts_fits(eng, ike, other, payloads):
                c, cp, why, _ = childmod.accept(eng, ike, other, payloads, ni, nr, group,
                                                shared, None)
                break
    if c is None:
        acts.append(Log(f"CREATE_CHILD_SA refused: {why}", level="warning", conn=conn.name,
                        serial=ike.serial))
        return answer(cp)
    c.rekey_of = old
    out = [cp[0], codec.nonce(nr)]
    if ke_out is not None:
        out.append(codec.ke(group, ke_out))  # type: ignore[arg-type]
    out += cp[1:]
    acts += eng.install_child(c, c.keys, now, replaces=old, defer_out=old is not None)
    c.keys = None
    c.rekey_of = None
    if old is not None:
        old.peer_rekeys.append(c)
        old.rekey_at = None  # the peer deletes it
        eng.log(acts, f"Child SA #{old.serial} rekeyed by peer", c)
        if old.replaced:
            pass
    return answer(out)


def _respond_ike_rekey(eng: Engine, ike: IKESA, msgid: int, sa_p: Any, ni: bytes, nr: bytes,
                       ke_p: Any, now: float) -> list[Action]:
    acts: list[Action] = []

    def answer(out: list) -> list[Action]:
        return acts + eng.send_response(ike, EXCH_CHILD, msgid, out)

    if ike.replaced:
        return answer([codec.notify(N.TEMPORARY_FAILURE)])
    if ike.outstanding is not None and not isinstance(ike.outstanding.task, RekeyIKETask):
        # §2.25: finish our exchange first (e.g. a Child rekey) before moving children
        if isinstance(ike.outstanding.task, _ChildTaskBase):
            return answer([codec.notify(N.TEMPORARY_FAILURE)])
    chosen = proposals.choose(codec.sa_tuples(sa_p), proposals.ike_specs(ike.conn.ike),
                              PROTO_IKE, ike=True)
    if chosen is None or len(chosen.spi) != 8:
        return answer([codec.notify(N.NO_PROPOSAL_CHOSEN)])
    if ke_p is None:
        return answer([codec.notify(N.INVALID_SYNTAX)])
    if ke_p.group != chosen.ke:
        return answer([codec.notify(N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
    ike.next_in = msgid + 1  # a retransmit while the job runs is dropped (§2.1)
    group, peer_ke = chosen.ke, bytes(ke_p.data)

    def then(result: object, t: float) -> list[Action]:
        if isinstance(result, BaseException):
            return eng.send_response(ike, EXCH_CHILD, msgid, [codec.notify(
                N.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))])
        o = ike.outstanding  # §2.25: our own Child SA exchange may have started meanwhile
        if ike.replaced or ike.state == S.IKE_DELETING or \
                (o is not None and isinstance(o.task, _ChildTaskBase)):
            return eng.send_response(ike, EXCH_CHILD, msgid,
                                     [codec.notify(N.TEMPORARY_FAILURE)])
        ke_out, shared = cast(tuple[bytes, bytes], result)
        return _respond_ike_rekey_keyed(eng, ike, msgid, chosen, ni, nr, ke_out, shared, t)

    return acts + eng.compute(ike, lambda: dh.responder_ke(group, peer_ke), then, now)


def _respond_ike_rekey_keyed(eng: Engine, ike: IKESA, msgid: int, chosen: Any, ni: bytes,
                             nr: bytes, ke_out: bytes, shared: bytes, now: float
                             ) -> list[Action]:
    """The new IKE SA from the rekey's keys (§2.18); the children move over."""
    acts: list[Action] = []

    def answer(out: list) -> list[Action]:
        return acts + eng.send_response(ike, EXCH_CHILD, msgid, out)

    try:
        new = _new_ike(eng, ike, False, bytes(chosen.spi), eng.alloc_ike_spi(), chosen, ni, nr,
                       shared, now)
    except CryptoError:
        return answer([codec.notify(N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
    ike.peer_rekeys.append(new)
    move_children(ike, new)
    ike.rekey_at = None
    acts += eng.kick(new, now)
    eng.log(acts, f"IKE SA #{ike.serial} rekeyed by peer: established IKE SA "
            f"{chosen.encr_name()}-{chosen.prf_name()}-{chosen.ke_name()}", new)
    acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, new.conn.name, new.serial, "rekey"))
    out = [codec.sa([proposals.chosen_proposal(chosen, PROTO_IKE, new.spi_r, ike=True)]),
           codec.nonce(nr), codec.ke(chosen.ke, ke_out)]
    return answer(out)
