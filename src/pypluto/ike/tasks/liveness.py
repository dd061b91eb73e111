"""Liveness check: an empty INFORMATIONAL request (RFC 7296 §2.4; Libreswan's DPD).

The responder side also answers any INFORMATIONAL request that no other task claims
(no Delete payload) with an empty response; unknown status notifies are ignored.

**Fast path** (issue 18: 100,000 IKE SAs held with ``dpddelay=30``).  An idle IKE
SA costs one empty INFORMATIONAL exchange per ``dpddelay``, so at that scale the
daemon does little else.  Both messages of that exchange are therefore built and
read here without the generic codec: :func:`empty_informational` writes the fixed
28-byte IKE header, an SK generic header with Next Payload 0 and protects the
empty plaintext (§3.14: just the Pad Length octet); :func:`fast_receive` accepts
exactly that shape (SK first and alone, Next Payload 0, the exact length, the
SA's own addresses, the message ID the window expects) and otherwise returns
None so that the task manager handles the message as before, log lines and
errors included.  The bytes are the ones the codec would write (tests prove it
by reading them with the codec).

The schedule (``ike/timers.py``) follows §2.4: "liveness checks are only needed
when nothing was received from the peer for the interval", so a probe goes out
only for an SA that heard nothing for ``dpddelay``; deadlines are rounded up to
:data:`pacing.SLOT` so that the engine's one timer fires for a batch of SAs.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType
from pypluto.ike.actions import Action, Endpoint, EventKind, FailReason, Log, SendPacket
from pypluto.ike.codec import IKEHeader
from pypluto.ike.context import IKEContext, meant_up
from pypluto.ike.pacing import slot
from pypluto.ike.sa import IKESA, Outstanding
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.common import waiting_conns
from pypluto.wire.payloads import Payload

_INFO = int(ExchangeType.INFORMATIONAL)
_SK = 46  # PayloadType.SK
_HDR = struct.Struct(">8s8sBBBBII")  # RFC 7296 §3.1
_SKHDR = struct.Struct(">BBH")  # §3.2 generic payload header of the SK payload
_F_INITIATOR, _F_RESPONSE = 0x08, 0x20


def peer_dead(ctx: IKEContext, ike: IKESA, now: float, why: str) -> list[Action]:
    """The peer stopped answering (§2.4): remove everything; restart if configured.

    Every conn meant to be up that had a Child SA on the dead IKE SA (or one queued
    for it) is revived, not
    only the IKE SA's own (Libreswan 5.2 revives each connection of the dead SAs):
    the first gets a new IKE SA, the others a Child SA queued on it (as ``whack --up``
    of a conn whose IKE SA is negotiating), or an IKE SA of their own when none was
    started.  Before, the Child SAs of the other conns sharing the IKE SA were lost."""
    acts: list[Action] = [Log(f"{why}; peer is not responding, declaring it dead",
                              level="warning", conn=ike.conn.name, serial=ike.serial)]
    conn = ike.conn
    others = list({c.name: c for c in [*(ch.conn for ch in ike.children),
                                       *waiting_conns(ctx, ike)]
                   if c.name != conn.name}.values())
    acts += ctx.drop_ike(ike, now, "peer dead", EventKind.PEER_DEAD, FailReason.TIMEOUT)
    new: IKESA | None = None
    if conn.name in ctx.connections and (conn.dpdaction == "restart" or
                                         meant_up(ctx, conn)) \
            and conn.remote.host_addr is not None and not ctx.ike_of(conn.name):
        ctx.log(acts, "restarting connection", ike)
        acts += ctx.initiate_ike(conn, now)
        new = next((i for i in ctx.ike_of(conn.name) if not i.established), None)
    for other in others:
        if ctx.connections.get(other.name) is not other or not meant_up(ctx, other) or \
                other.remote.host_addr is None or ctx.ike_of(other.name):
            continue
        acts.append(Log("connection is supposed to remain up; initiating it again",
                        conn=other.name, serial=ike.serial))
        if new is not None and ctx.is_live(new):
            acts += ctx.create_child(new, other, now)
        else:
            acts += ctx.initiate_ike(other, now)
            new = next((i for i in ctx.ike_of(other.name) if not i.established), None)
    return acts


class Liveness(Task):
    """An empty INFORMATIONAL request; no answer within dpdtimeout means the peer is dead."""

    exchange = ExchangeType.INFORMATIONAL
    liveness = True

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        ctx.log(acts, "sending liveness probe", ike, level="debug")
        ctx.stats.events["dpd.sent"] += 1
        return []

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        ctx.stats.events["dpd.recv"] += 1
        return []

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        return peer_dead(ctx, ike, now, "liveness probe timed out")

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True  # the last INFORMATIONAL responder: anything without a Delete

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        acts: list[Action] = []
        if not req.payloads:
            ctx.log(acts, "answering liveness probe", ike, level="debug")
            ctx.stats.events["dpd.replied"] += 1
        return acts + ctx.send_response(ike, cls.exchange, req.msgid, [])


# the task of every probe sent by ``send_probe``: Liveness keeps no state of its own
_PROBE = Liveness()


def empty_informational(ike: IKESA, response: bool, msgid: int) -> bytes:
    """An INFORMATIONAL message with an empty SK payload (§1.4, §3.14), protected
    with ``ike.prot_out``: what the codec writes for an empty payload list."""
    prot = ike.prot_out
    assert prot is not None
    body = prot.iv_size + prot.block_size + prot.icv_size  # prot.body_length(0)
    flags = (_F_INITIATOR if ike.initiator else 0) | (_F_RESPONSE if response else 0)
    aad = _HDR.pack(ike.spi_i, ike.spi_r, _SK, 0x20, _INFO, flags, msgid, 32 + body) + \
        _SKHDR.pack(0, 0, 4 + body)
    return aad + prot.encrypt(aad, b"")


def send_probe(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Send a liveness probe now: the window must be free and nothing queued.

    What ``ctx.queue(ike, Liveness(), now)`` does, without the codec.  The caller
    (``timers.service``, run from the engine's timer) reschedules the SA after it.
    """
    if ike.next_out > 0xFFFFFFFF:  # RFC 7296 §2.2: no message ID left; the general
        return ctx.queue(ike, Liveness(), now)  # path closes the IKE SA, as a local error
    acts: list[Action] = []
    ctx.log(acts, "sending liveness probe", ike, level="debug")
    ctx.stats.events["dpd.sent"] += 1
    msgid = ike.next_out
    ike.next_out += 1
    pkt = empty_informational(ike, False, msgid)
    conn = ike.conn
    interval = max(conn.retransmit_interval, 0.01)
    timeout = conn.retransmit_timeout
    if conn.dpdtimeout > 0:
        timeout = min(timeout, conn.dpdtimeout)
    ike.outstanding = Outstanding(msgid, [pkt], _PROBE, now + interval, interval,
                                  now + timeout)
    acts.append(SendPacket(pkt, ike.local, ike.remote))
    return acts


def fast_receive(ctx: IKEContext, ike: IKESA, data: bytes, hdr: IKEHeader,
                 local: Endpoint, remote: Endpoint, now: float) -> list[Action] | None:
    """An empty INFORMATIONAL for an established ``ike``: the answer to our probe, or
    the peer's probe (answered).  None: not that shape, the task manager takes it.

    ``data`` has passed the engine's checks (version, length, SA lookup, I flag).
    Retransmitted requests, other addresses (NAT, MOBIKE), fragments, non-empty
    or undecryptable messages all go the general way.
    """
    prot = ike.prot_in
    if prot is None or not ike.established or hdr.next_payload != _SK or \
            hdr.spi_i != ike.spi_i or hdr.spi_r != ike.spi_r or \
            len(data) != 32 + prot.iv_size + prot.block_size + prot.icv_size or data[28] != 0 or \
            int.from_bytes(data[30:32], "big") != len(data) - 28 or \
            (remote is not ike.remote and remote != ike.remote) or \
            (local is not ike.local and local != ike.local):
        return None
    msgid = hdr.message_id
    if hdr.response:
        o = ike.outstanding
        if o is None or o.msgid != msgid or not isinstance(o.task, Liveness):
            return None
    elif msgid != ike.next_in or ike.answer_to is not None or ctx.is_computing(ike):
        return None
    try:
        if prot.decrypt(data[:32], data[32:]):
            return None  # padding only is what we accept here
    except CryptoError:
        return None  # dropped, and logged, by the general path
    ctx.verified = True
    ike.last_recv = now
    dpd = ike.conn.dpddelay
    acts: list[Action]
    if hdr.response:
        ike.outstanding = None
        ctx.stats.events["dpd.recv"] += 1
        if dpd > 0:
            ike.next_liveness = slot(now + dpd)
        if ike.tasks:
            return ctx.kick(ike, now)  # queued work starts; the SA is rescheduled
        ctx.schedule(ike)  # what kick does with nothing queued
        return []
    # the peer's probe: §2.4 counts it as news from the peer (timers.service)
    acts = []
    ctx.log(acts, "answering liveness probe", ike, level="debug")
    ctx.stats.events["dpd.replied"] += 1
    pkt = empty_informational(ike, True, msgid)
    ike.last_response = (msgid, [pkt])
    ike.next_in = msgid + 1
    acts.append(SendPacket(pkt, local, remote))
    if ike.tasks and ike.outstanding is None:
        acts += ctx.kick(ike, now)
    return acts
