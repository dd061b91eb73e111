"""The task manager: the message window of each IKE SA in one place (RFC 7296 §2.1-2.3).

Per IKE SA: one request in flight (window size 1, §2.3), retransmitted with
``retransmit-interval`` doubling until ``retransmit-timeout`` (§2.1; a liveness
check stops at ``dpdtimeout``); queued tasks start when the window is free; requests
from the peer are processed in message-ID order, a retransmitted request is
answered from the cached response, and SKF fragments are reassembled (RFC 7383).
IKE_SA_INIT goes through here too (message ID 0, sent in the clear).

The SA's window fields live on ``IKESA`` (``next_out``, ``outstanding``, ``next_in``,
``last_response``, ``tasks``, ``fragments``); only this module writes them, besides
``restart_window`` (COOKIE / INVALID_KE retries of IKE_SA_INIT) and a responder
moving ``next_in`` on while its key exchange is computed.
"""

from __future__ import annotations

from typing import cast

from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType, NotifyType, ProtocolID
from pypluto.iana import PayloadType as PT
from pypluto.ike import codec
from pypluto.ike.actions import Action, Endpoint, EventKind, FailReason, Log, SendPacket
from pypluto.ike.codec import IKEHeader, Payload
from pypluto.ike.context import IKEContext
from pypluto.ike.cookies import packed_key
from pypluto.ike.sa import IKESA, IKEState, Outstanding, QueuedTask, Reassembly
from pypluto.ike.tasks import responder_for
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp
from pypluto.wire.errors import EncodeError, UnsupportedCriticalPayload, WireError

EXCH_INIT = ExchangeType.IKE_SA_INIT
EXCH_AUTH = ExchangeType.IKE_AUTH
EXCH_INT = ExchangeType.IKE_INTERMEDIATE  # RFC 9242: between IKE_SA_INIT and IKE_AUTH
MAX_FRAGMENTS = 64
# one source (IPv4 address, IPv6 /64: ike/cookies.py) holds at most this share of
# max_fragment_buffer: IKE_SA_INIT gives anyone keys, and with them one address could
# fill the buffer with fragments of IKE_AUTHs it never finishes, locking out every
# other peer's fragmented IKE_AUTH until its half-open SAs expire
FRAG_SOURCE_SHARE = 8


def _task(t: QueuedTask) -> Task:
    """Only ``Task`` instances are ever queued (``IKESA`` types them loosely, to stay
    independent of ``ike.tasks``)."""
    return cast(Task, t)


def _dbg(msg: str, remote: Endpoint) -> list[Action]:
    return [Log(msg, level="debug", remote=remote)]


class TaskManager:
    """Queues, sends, retransmits and receives the messages of every IKE SA."""

    def __init__(self, ctx: IKEContext) -> None:
        self.ctx = ctx
        self.frag_bytes = 0  # SKF plaintext held now, every IKE SA together (RFC 7383)
        self.frag_dropped = 0  # fragments dropped over a reassembly cap
        self.frag_by_src: dict[bytes, int] = {}  # frag_bytes by source (FRAG_SOURCE_SHARE)
        # MOBIKE (RFC 4555 §3.5): the IKE SAs whose last answer was to UPDATE_SA_ADDRESSES:
        # (its message ID, the (local, remote) pair the answer went to)
        self.updates: dict[IKESA, tuple[int, tuple[Endpoint, Endpoint]]] = {}

    # ------------------------------------------------------------------ sending
    def queue(self, ike: IKESA, task: QueuedTask, now: float, front: bool = False) -> list[Action]:
        if front:
            ike.tasks.insert(0, task)
        else:
            ike.tasks.append(task)
        return self.kick(ike, now)

    def kick(self, ike: IKESA, now: float) -> list[Action]:
        """Start the next queued exchange when the window is free (§2.3)."""
        acts: list[Action] = []
        ctx = self.ctx
        while ike.outstanding is None and ike.tasks and ctx.is_live(ike):
            if not ike.established and ike.tasks[0].exchange not in (EXCH_INIT, EXCH_INT, EXCH_AUTH):
                break
            task = _task(ike.tasks.pop(0))
            payloads = task.build(ctx, ike, now, acts)
            if payloads is None:
                continue
            try:
                acts += self.send_request(ike, task, payloads, now)
            except EncodeError as e:  # what we would send cannot be written (a huge ID)
                task.abandon(ctx, ike)
                acts.append(Log(f"cannot send {ExchangeType(task.exchange).name}: {e}",
                                level="error",
                                conn=ike.conn.name, serial=ike.serial))
                acts += ctx.drop_ike(ike, now, "", EventKind.FAILED, FailReason.LOCAL)
                return acts
        ctx.schedule(ike)
        return acts

    def encode(self, ike: IKESA, exchange: int, response: bool, msgid: int,
               payloads: list[Payload]) -> list[bytes]:
        prot = ike.prot_out if exchange != EXCH_INIT else None
        frag = None
        if prot is not None and ike.frag_ok and ike.conn.fragmentation != "no":
            v4 = ike.remote.addr.version == 4
            # RFC 7383 §2.5.1: the datagram (IP + UDP + non-ESP marker) must fit the path
            frag = (self.ctx.settings.fragment_size if v4 else 1280) - (28 if v4 else 48) \
                - (4 if ike.remote.port != 500 else 0)
        self.ctx.stats.sent(payloads)
        return codec.encode(ike.spi_i, ike.spi_r, exchange, ike.initiator, response, msgid,
                            payloads, prot, frag)

    def send_request(self, ike: IKESA, task: Task, payloads: list[Payload], now: float
                     ) -> list[Action]:
        msgid = ike.next_out
        ike.next_out += 1
        packets = self.encode(ike, task.exchange, False, msgid, payloads)
        if task.exchange == EXCH_INIT:
            ike.init_request = packets[0]  # AUTH signs it (§2.15)
        conn = ike.conn
        interval = max(conn.retransmit_interval, 0.01)
        timeout = conn.retransmit_timeout
        if task.liveness and conn.dpdtimeout > 0:
            timeout = min(timeout, conn.dpdtimeout)
        ike.outstanding = Outstanding(msgid, packets, task, now + interval, interval,
                                      now + timeout)
        self.ctx.schedule(ike)
        return [SendPacket(p, ike.local, ike.remote) for p in packets]

    def send_response(self, ike: IKESA, exchange: int, msgid: int, payloads: list[Payload],
                      local: Endpoint | None = None, remote: Endpoint | None = None
                      ) -> list[Action]:
        packets = self.encode(ike, exchange, True, msgid, payloads)
        ike.last_response = (msgid, packets)
        ike.next_in = msgid + 1
        if ike.answer_to is not None:  # MOBIKE: back where the request came from
            local, remote = local or ike.answer_to[0], remote or ike.answer_to[1]
        return [SendPacket(p, local or ike.local, remote or ike.remote) for p in packets]

    def send_now(self, ike: IKESA, exchange: int, payloads: list[Payload]) -> list[Action]:
        """A request outside the window, never retransmitted (Delete at shutdown)."""
        try:
            msgid = ike.next_out
            ike.next_out += 1
            packets = self.encode(ike, exchange, False, msgid, payloads)
        except Exception:  # pragma: no cover - best effort at exit
            return []
        return [SendPacket(p, ike.local, ike.remote) for p in packets]

    @staticmethod
    def restart_window(ike: IKESA) -> None:
        """IKE_SA_INIT is sent again from message ID 0 (COOKIE, INVALID_KE_PAYLOAD, §2.6)."""
        ike.outstanding = None
        ike.next_out = 0

    def abandon(self, ike: IKESA) -> None:
        """The IKE SA goes away: its tasks release what they reserved."""
        o = ike.outstanding
        if o is not None:
            _task(o.task).abandon(self.ctx, ike)
        for t in ike.tasks:
            _task(t).abandon(self.ctx, ike)
        ike.outstanding = None
        ike.tasks.clear()
        self.updates.pop(ike, None)
        self._release(ike)

    # ------------------------------------------------------------------ time
    def retransmit(self, ike: IKESA, now: float) -> list[Action]:
        """Resend the request in flight, or give up on it (§2.1)."""
        o = ike.outstanding
        if o is None:
            return []
        acts: list[Action] = []
        if now >= o.deadline:
            ike.outstanding = None
            acts += _task(o.task).on_timeout(self.ctx, ike, now)
            if self.ctx.is_live(ike):
                acts += self.kick(ike, now)
        elif now >= o.next_retransmit:
            o.tries += 1
            o.interval *= 2
            o.next_retransmit = now + o.interval
            # built eagerly, never Log.lazy: the daemon reads it with Log.made()
            acts.append(Log(f"retransmitting request (message ID {o.msgid}, try {o.tries})",
                            level="debug", conn=ike.conn.name, serial=ike.serial))
            acts += [SendPacket(p, ike.local, ike.remote) for p in o.packets]
        return acts

    # ------------------------------------------------------------------ receiving
    def on_message(self, ike: IKESA, data: bytes, hdr: IKEHeader, local: Endpoint,
                   remote: Endpoint, now: float) -> list[Action]:
        """A message for ``ike``: window checks, decryption, then the task (§2.1-2.3)."""
        ctx = self.ctx
        if hdr.exchange == EXCH_INIT:
            return self._init_response(ike, data, hdr, now)
        if hdr.spi_i != ike.spi_i or hdr.spi_r != ike.spi_r:
            return _dbg("dropping message with mismatched SPIs", remote)
        if ike.prot_in is None:
            return _dbg("dropping encrypted message: no keys yet", remote)  # CVE-2019-12312
        if hdr.response:
            o = ike.outstanding
            if o is None or hdr.message_id != o.msgid:
                return _dbg(f"dropping unexpected response, message ID {hdr.message_id}",
                            remote)
        else:
            if ike.last_response is not None and hdr.message_id == ike.last_response[0]:
                # §2.1: a retransmitted request is answered with the same response
                if hdr.next_payload == PT.SKF and not _is_first_fragment(data):
                    return []  # RFC 7383 §2.6.1: answer the first fragment only
                upd = self.updates.get(ike)
                if upd is not None and upd[0] == hdr.message_id and upd[1] != (local, remote):
                    again = self._update_again(ike, data, hdr, local, remote, now)
                    if again is not None:
                        return again
                return [SendPacket(p, local, remote) for p in ike.last_response[1]]
            if hdr.message_id != ike.next_in:
                return _dbg(f"dropping request with message ID {hdr.message_id}, expected "
                            f"{ike.next_in}", remote)
            if not ike.established and (hdr.exchange not in (EXCH_AUTH, EXCH_INT) or
                                        ike.state is not IKEState.INIT_R) and \
                    not _closing(ike):
                # CVE-2014-2338: nothing but IKE_AUTH (and IKE_INTERMEDIATE, RFC 9242,
                # before it) before authentication, and not
                # even its fragments are kept (RFC 7383 §2.6)
                return _dbg(f"dropping exchange {hdr.exchange} before IKE_AUTH completed",
                            remote)
        critical: UnsupportedCriticalPayload | None = None
        try:
            msg = codec.parse(data, hdr)
        except UnsupportedCriticalPayload as e:
            # RFC 7296 §2.5: the answer to a request MUST be UNSUPPORTED_CRITICAL_PAYLOAD;
            # given (below) once the ICV shows the request is the peer's
            if hdr.response:
                return _dbg(f"dropping malformed message from {remote}: {e}", remote)
            critical = e
            try:
                msg = wm.parse_message(data, hdr, keep_critical=True)
            except WireError as e2:
                return _dbg(f"dropping malformed message from {remote}: {e2}", remote)
        except WireError as e:
            return _dbg(f"dropping malformed message from {remote}: {e}", remote)
        sk = msg.sk
        if sk is None or msg.payloads[-1] is not sk:
            return _dbg("dropping message without SK payload", remote)
        payloads: list[Payload] | None
        try:
            if isinstance(sk, wp.SKFPayload):
                if not ike.frag_ok:  # RFC 7383 §2.3 never negotiated (or fragmentation=no)
                    return _dbg("dropping fragment: IKE fragmentation was not negotiated",
                                remote)
                payloads = self._reassemble(ike, msg, sk)
                if payloads is None:
                    return []
            else:
                payloads = codec.decrypt(sk, ike.prot_in)
            if critical is not None:
                raise critical
        except CryptoError:
            return _dbg(f"dropping message from {remote}: integrity check failed", remote)
        except WireError as e:
            # authenticated but malformed inner chain (§2.21.2)
            ctx.verified = True
            acts: list[Action] = [Log(f"malformed encrypted payloads: {e}", level="warning",
                                      conn=ike.conn.name, serial=ike.serial)]
            if not hdr.response:
                n = codec.notify(e.notify, int(e.payload_type).to_bytes(1, "big")
                                 if isinstance(e, UnsupportedCriticalPayload) else b"")
                acts += self.send_response(ike, hdr.exchange, hdr.message_id, [n], local,
                                           remote)
                if ike.state is IKEState.INIT_R:
                    acts += ctx.drop_ike(ike, now, "", None)
            return acts
        ctx.verified = True
        ctx.stats.received(payloads)
        ike.last_recv = now
        if ike.established and ike.conn.dpddelay > 0:
            ike.next_liveness = now + ike.conn.dpddelay
        if hdr.response:
            o = ike.outstanding
            assert o is not None
            if hdr.exchange != o.task.exchange:
                return _dbg("dropping response of the wrong exchange type", remote)
            ike.outstanding = None
            acts = _task(o.task).on_response(ctx, ike, Inbound(payloads), now)
            if ctx.is_live(ike):
                acts += self.kick(ike, now)
            return acts
        if ctx.is_computing(ike) and (ike.last_response is None or
                                      ike.last_response[0] != hdr.message_id - 1) and \
                not (hdr.exchange == ExchangeType.INFORMATIONAL and _deletes_ike(payloads)):
            # §2.3 window of 1: our answer to the previous request is still being
            # computed (``next_in`` moved on); answering this one first would send
            # ``next_in`` back when that answer goes, and a retransmit of this one would
            # then be processed again.  An INFORMATIONAL Delete of the IKE SA (a peer
            # shutting down sends it outside the window) is still taken; a Delete
            # payload in another exchange (which has none, §1.3) opens nothing.
            return _dbg(f"dropping request with message ID {hdr.message_id}: the answer "
                        "to the previous one is being computed", remote)
        # a request: answer where it came from (§2.23, §3.1)
        if (ike.remote != remote or ike.local != local) and not ike.mobike:
            # with MOBIKE only UPDATE_SA_ADDRESSES moves the IKE SA (RFC 4555 §3.8)
            if not ike.established:  # the float to port 4500 before IKE_AUTH's answer
                # (§2.23: the float changes ports; only the end facing the peer's
                # NAT may follow the peer to another address)
                if ike.nat_remote or ((ike.nat_local or local.port != 500)
                                      and remote.addr == ike.remote.addr):
                    ike.remote, ike.local = remote, local
            elif ike.nat_remote and (local.port != 500 or ike.local.port == 500):
                # §2.23: only the end facing the peer's NAT follows a new mapping (a
                # host behind a NAT, or with no NAT at all, does not: one rewritten
                # packet would take the SA away); the Child SAs follow with it.  A
                # new mapping is the peer's: a request to our port 500 after the
                # float (where no ESP in UDP exists) is only answered
                moved = self._follow_nat(ike, local, remote)
                acts = self._request(ike, hdr.exchange, hdr.message_id, payloads, local,
                                     remote, now)
                return moved + acts
        if not ike.mobike and ike.remote == remote and ike.local == local:
            return self._request(ike, hdr.exchange, hdr.message_id, payloads, local, remote, now)
        # RFC 4555 §3.8 (and §2.23 for a host that does not follow): answer there,
        # move nothing
        ike.answer_to = (local, remote)
        try:
            acts = self._request(ike, hdr.exchange, hdr.message_id, payloads, local, remote,
                                 now)
        finally:
            ike.answer_to = None
        if ike.mobike:
            if hdr.exchange == ExchangeType.INFORMATIONAL and \
                    codec.has_notify(payloads, NotifyType.UPDATE_SA_ADDRESSES):
                self.updates[ike] = (hdr.message_id, (local, remote))
            else:
                self.updates.pop(ike, None)
        return acts

    def _update_again(self, ike: IKESA, data: bytes, hdr: IKEHeader, local: Endpoint,
                      remote: Endpoint, now: float) -> list[Action] | None:
        """The UPDATE_SA_ADDRESSES just answered comes again, from another (local,
        remote) pair: a copy someone on the path sent first from an address of its
        choice, and now the real one (or the other way round).  Authenticated (an
        identical copy decrypts), it is answered as an update from there (NAT-D for
        that pair, RFC 4555 §3.5) and that pair gets a return routability check too:
        the address that answers its check is where the SAs go, never one unchecked.
        None (the cached answer goes back, as before) for anything else."""
        from pypluto.ike.tasks.mobike import MobikeUpdate
        try:
            sk = codec.parse(data, hdr).sk
            if not isinstance(sk, wp.SKPayload) or ike.prot_in is None:
                return None
            payloads = codec.decrypt(sk, ike.prot_in)
        except (WireError, CryptoError):
            return None
        if not ike.established or not codec.has_notify(payloads,
                                                       NotifyType.UPDATE_SA_ADDRESSES):
            return None
        self.ctx.verified = True
        self.updates[ike] = (hdr.message_id, (local, remote))
        ike.answer_to = (local, remote)
        try:
            acts = MobikeUpdate.respond(self.ctx, ike, Request(hdr.message_id, payloads,
                                                               local, remote), now,
                                        replayed=True)
        finally:
            ike.answer_to = None
        if self.ctx.is_live(ike):
            acts += self.kick(ike, now)
        return acts

    def _follow_nat(self, ike: IKESA, local: Endpoint, remote: Endpoint) -> list[Action]:
        """The peer's NAT mapping changed (an authenticated request from elsewhere):
        the IKE SA and its Child SAs' ESP-in-UDP ports go there (RFC 7296 §2.23,
        RFC 3948), else the peer's ESP would go on to the mapping the NAT dropped."""
        from pypluto.ike.tasks.mobike import follow
        acts: list[Action] = []
        old = ike.remote
        ike.remote, ike.local = remote, local
        n = follow(self.ctx, ike, acts)
        self.ctx.log(acts, f"NAT-T: the peer's address is now {remote} (was {old}); "
                     f"{n} Child SA(s) follow", ike)
        return acts

    def _init_response(self, ike: IKESA, data: bytes, hdr: IKEHeader, now: float
                       ) -> list[Action]:
        """The answer to our IKE_SA_INIT (in the clear, message ID 0)."""
        o = ike.outstanding
        if not hdr.response or o is None or o.task.exchange != EXCH_INIT or \
                hdr.message_id != o.msgid:
            return []
        try:
            msg = codec.parse(data, hdr)
        except WireError as e:
            return [Log(f"dropping malformed IKE_SA_INIT response: {e}", level="debug",
                        conn=ike.conn.name, serial=ike.serial)]
        self.ctx.stats.received(msg.payloads)
        ike.outstanding = None
        acts = _task(o.task).on_response(self.ctx, ike, Inbound(msg.payloads, data, hdr.spi_r),
                                         now)
        if self.ctx.is_live(ike):
            acts += self.kick(ike, now)
        return acts

    def _request(self, ike: IKESA, exchange: int, msgid: int, payloads: list[Payload],
                 local: Endpoint, remote: Endpoint, now: float) -> list[Action]:
        if exchange in (EXCH_AUTH, EXCH_INT):
            if ike.state is not IKEState.INIT_R:
                return _dbg(f"dropping unexpected {ExchangeType(exchange).name} request", remote)
        elif not ike.established and not _closing(ike):
            # CVE-2014-2338 / -2019-12312: nothing but IKE_AUTH before authentication
            return _dbg(f"dropping exchange {exchange} before IKE_AUTH completed", remote)
        cls = responder_for(exchange, payloads)
        if cls is None:
            return _dbg(f"dropping request of unsupported exchange type {exchange}", remote)
        acts = cls.respond(self.ctx, ike, Request(msgid, payloads, local, remote), now)
        if self.ctx.is_live(ike):
            acts += self.kick(ike, now)
        return acts

    def _release(self, ike: IKESA) -> None:
        """Forget the fragments buffered for ``ike`` (and their bytes in the global count)."""
        st = ike.fragments
        if st is not None:
            n = sum(len(p) for p in st.parts.values())
            self.frag_bytes -= n
            left = self.frag_by_src.get(st.src, 0) - n
            if left > 0:
                self.frag_by_src[st.src] = left
            else:
                self.frag_by_src.pop(st.src, None)
            ike.fragments = None

    def _reassemble(self, ike: IKESA, msg: wm.Message, skf: wp.SKFPayload
                    ) -> list[Payload] | None:
        """Collect SKF fragments (RFC 7383 §2.6); each is authenticated on its own.

        Bounded: at most ``MAX_FRAGMENTS`` fragments, ``max_reassembled`` bytes for
        one message (64 KiB by default, more than an IKE_AUTH with a 4096-bit RSA
        certificate chain; strongSwan caps at 10,000) and ``max_fragment_buffer``
        bytes over every IKE SA.  Only the message ID the window expects is ever
        collected (checked before this is called), so an SA holds one set at most.
        A fragment over a cap is dropped, and counted.  The fragments held are
        discarded (a new message, or more Total Fragments) only once the new
        fragment's ICV is good: a forged one never evicts authentic ones (§2.6).
        """
        settings = self.ctx.settings
        total = skf.total_fragments
        if not 1 <= total <= MAX_FRAGMENTS:
            self.frag_dropped += 1
            return None
        old = ike.fragments
        st = old
        if st is None or st.msgid != msg.message_id or st.response != msg.response or \
                total > st.total:  # §2.6: a new set with more fragments replaces the old
            st = Reassembly(msg.message_id, msg.response, total,
                            src=packed_key(ike.remote.addr.packed), exchange=msg.exchange)
        elif total < st.total or msg.exchange != st.exchange:
            # the fragments of one message share its header (§2.5): one of the same
            # message ID but another exchange type is not part of it (and never
            # evicts those held)
            return None
        if not 1 <= skf.fragment_number <= total or skf.fragment_number in st.parts:
            return None
        held = sum(len(p) for p in st.parts.values())
        freed = sum(len(p) for p in old.parts.values()) if old is not None and \
            st is not old else 0
        size = len(skf.body)  # the plaintext is shorter: checked before decrypting
        by_src = self.frag_by_src.get(st.src, 0) - (freed if old is not None and
                                                    old.src == st.src else 0)
        if held + size > settings.max_reassembled or \
                self.frag_bytes - freed + size > settings.max_fragment_buffer or \
                by_src + size > max(settings.max_reassembled,
                                    settings.max_fragment_buffer // FRAG_SOURCE_SHARE):
            self.frag_dropped += 1
            return None
        assert ike.prot_in is not None
        plain = codec.decrypt_fragment(skf, ike.prot_in)  # CryptoError propagates: dropped
        if st is not old:
            self._release(ike)
        ike.fragments = st
        st.parts[skf.fragment_number] = plain
        self.frag_bytes += len(plain)
        self.frag_by_src[st.src] = self.frag_by_src.get(st.src, 0) + len(plain)
        if skf.fragment_number == 1:
            st.first = skf.first_inner
        if len(st.parts) < total:
            return None
        data = b"".join(st.parts[i] for i in range(1, total + 1))
        self._release(ike)
        return codec.parse_inner(st.first, data)


def _closing(ike: IKESA) -> bool:
    """Our Delete of the established ``ike`` is in flight: the peer's requests are still
    answered (§2.25.2: a Delete crossing ours is answered as usual, and ours forgotten;
    anything else gets what the tasks answer a closing IKE SA)."""
    return ike.state is IKEState.DELETING and ike.established_at is not None


def _deletes_ike(payloads: list[Payload]) -> bool:
    return any(isinstance(p, wp.DeletePayload) and p.protocol_id == ProtocolID.IKE
               for p in payloads)


def _is_first_fragment(data: bytes) -> bool:
    try:
        m = codec.parse(data)
    except WireError:
        return False
    sk = m.sk
    return isinstance(sk, wp.SKFPayload) and sk.fragment_number == 1
