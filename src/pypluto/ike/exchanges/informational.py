"""INFORMATIONAL: Delete, liveness, notifies (RFC 7296 §1.4, §2.4, §3.11).

Initiator tasks: ``DeleteIKETask``, ``DeleteChildTask``, ``LivenessTask``.
Responder: ``respond`` answers Delete payloads with the matching inbound SPIs,
an empty request with an empty response, and ignores unknown status notifies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pypluto.ike import codec
from pypluto.ike import sa as S
from pypluto.ike.actions import Action, EventKind, FailReason, Log, SendPacket
from pypluto.ike.sa import IKESA, ChildSA

if TYPE_CHECKING:
    from pypluto.ike.engine import Engine

PT = codec.PT
EXCH_INFO = 37
PROTO_IKE, PROTO_AH, PROTO_ESP = 1, 2, 3


def peer_dead(eng: Engine, ike: IKESA, now: float, why: str) -> list[Action]:
    """The peer stopped answering (§2.4): remove everything; restart if configured."""
    from pypluto.ike.exchanges import ike_sa_init
    acts: list[Action] = [Log(f"{why}; peer is not responding, declaring it dead",
                              level="warning", conn=ike.conn.name, serial=ike.serial)]
    acts += eng.drop_ike(ike, now, "peer dead", EventKind.PEER_DEAD, FailReason.TIMEOUT)
    conn = ike.conn
    if conn.name in eng.connections and (conn.dpdaction == "restart" or
                                         conn.auto in ("start", "up")) \
            and conn.remote.host_addr is not None \
            and not eng.ike_of(conn.name):
        eng.log(acts, "restarting connection", ike)
        acts += ike_sa_init.initiate(eng, conn, now)
    return acts


class LivenessTask:
    """An empty INFORMATIONAL request (§2.4 liveness check, Libreswan's DPD)."""

    exchange = EXCH_INFO
    liveness = True

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        eng.log(acts, "sending liveness probe", ike, level="debug")
        return []

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        return []

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        return peer_dead(eng, ike, now, "liveness probe timed out")


class DeleteIKETask:
    exchange = EXCH_INFO

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        eng.log(acts, "sending Delete for the IKE SA", ike)
        ike.state = S.IKE_DELETING
        return [codec.delete(PROTO_IKE, [])]

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        return eng.drop_ike(ike, now, "deleted")

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        return eng.drop_ike(ike, now, "no answer to Delete")


class DeleteChildTask:
    exchange = EXCH_INFO

    def __init__(self, children: list[ChildSA]) -> None:
        self.children = children

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        live = [c for c in self.children if c in ike.children]
        if not live:
            return None
        self.children = live
        for c in live:
            c.state = S.CHILD_DELETING
        spis = [c.spi_in.to_bytes(4, "big") for c in live]
        return [codec.delete(PROTO_ESP, spis)]

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        for c in self.children:
            acts += eng.remove_child(c, now)
        return acts

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        return peer_dead(eng, ike, now, "no answer to Delete of a Child SA")


def delete_ike(eng: Engine, ike: IKESA, now: float) -> list[Action]:
    """Delete an IKE SA: with a Delete request when established, else locally."""
    if ike.serial not in eng.by_serial:
        return []
    if not ike.established:
        return eng.drop_ike(ike, now, "deleted", EventKind.IKE_DELETED)
    if any(isinstance(t, DeleteIKETask) for t in ike.tasks) or \
            (ike.outstanding and isinstance(ike.outstanding.task, DeleteIKETask)):
        return []
    ike.tasks.clear()  # nothing else matters now
    return eng.queue(ike, DeleteIKETask(), now)


def delete_children(eng: Engine, ike: IKESA, children: list[ChildSA], now: float
                    ) -> list[Action]:
    if not ike.established:
        acts: list[Action] = []
        for c in children:
            acts += eng.remove_child(c, now)
        return acts
    return eng.queue(ike, DeleteChildTask(children), now)


def delete_spi_unknown(eng: Engine, ike: IKESA, c: ChildSA, now: float) -> list[Action]:
    """We refused the peer's answer for a Child SA it installed: tell it to delete (§1.4.1)."""
    if not c.spi_out:
        return []
    c.state = S.CHILD_DELETING

    class _T(DeleteChildTask):
        def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list:
            return [codec.delete(PROTO_ESP, [c.spi_in.to_bytes(4, "big")])]

        def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                        ) -> list[Action]:
            return []

    return eng.queue(ike, _T([c]), now)


def send_delete_now(eng: Engine, ike: IKESA, now: float) -> list[Action]:
    """Fire-and-forget Delete of the IKE SA (daemon shutdown), outside the window."""
    try:
        msgid = ike.next_out
        ike.next_out += 1
        packets = eng.encode(ike, EXCH_INFO, False, msgid, [codec.delete(PROTO_IKE, [])])
    except Exception:  # pragma: no cover - best effort at exit
        return []
    return [SendPacket(p, ike.local, ike.remote) for p in packets]


def respond(eng: Engine, ike: IKESA, msgid: int, payloads: list, now: float) -> list[Action]:
    acts: list[Action] = []
    out: list = []
    deletes = [p for p in payloads if p.payload_type == PT.DELETE]
    for d in deletes:
        if d.protocol_id == PROTO_IKE:
            eng.log(acts, "received Delete SA payload: deleting IKE SA", ike)
            acts += eng.send_response(ike, EXCH_INFO, msgid, [])
            acts += eng.drop_ike(ike, now, "deleted by peer")
            return acts
    gone: list[ChildSA] = []
    for d in deletes:
        if d.protocol_id not in (PROTO_ESP, PROTO_AH):
            continue
        mine = []
        for spi in d.spis:
            if len(spi) != 4:
                continue
            val = int.from_bytes(spi, "big")
            c = next((c for c in ike.children if c.spi_out == val), None)
            if c is None:
                continue
            gone.append(c)
            if c.state != S.CHILD_DELETING:  # our own Delete crossed theirs (§1.4.1)
                mine.append(c.spi_in.to_bytes(4, "big"))
        if mine:
            out.append(codec.delete(d.protocol_id, mine))
    for c in gone:
        eng.log(acts, "received Delete SA payload: deleting Child SA", c)
        acts += eng.remove_child(c, now)
        # a queued rekey of it is pointless now
        c.rekeying = True
    if not deletes and not payloads:
        eng.log(acts, "answering liveness probe", ike, level="debug")
    acts += eng.send_response(ike, EXCH_INFO, msgid, out)
    return acts
