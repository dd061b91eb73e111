"""The receive path: header checks, SA lookup, message-ID windows, SK/SKF (RFC 7296 §2.1-2.3).

Malformed or unexpected input is dropped (logged at debug level) unless RFC 7296
§2.21 asks for an answer; an SK payload whose ICV fails is dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pypluto.crypto.errors import CryptoError
from pypluto.ike import codec
from pypluto.ike import sa as S
from pypluto.ike.actions import Action, Endpoint, Log, SendPacket
from pypluto.wire import payloads as wp
from pypluto.wire.errors import UnsupportedCriticalPayload, WireError

if TYPE_CHECKING:
    from pypluto.ike.engine import Engine
    from pypluto.ike.sa import IKESA

PT = codec.PT
EXCH_INIT, EXCH_AUTH, EXCH_CHILD, EXCH_INFO = 34, 35, 36, 37
MAX_FRAGMENTS = 64


def _dbg(msg: str, remote: Endpoint) -> list[Action]:
    return [Log(msg, level="debug", remote=remote)]


def receive(eng: Engine, data: bytes, local: Endpoint, remote: Endpoint, now: float
            ) -> list[Action]:
    from pypluto.ike.exchanges import ike_sa_init

    try:
        hdr = codec.peek(data)
    except WireError as e:
        return _dbg(f"dropping malformed packet from {remote}: {e}", remote)
    if hdr.major_version != 2:
        return _dbg(f"dropping IKEv{hdr.major_version} packet from {remote}", remote)
    if hdr.length != len(data):
        return _dbg(f"dropping packet from {remote}: length {hdr.length} != {len(data)}",
                    remote)
    if hdr.exchange == EXCH_INIT and not hdr.response:
        if hdr.spi_r == bytes(8) and hdr.initiator:
            return ike_sa_init.respond(eng, data, hdr, local, remote, now)
        return _dbg("dropping IKE_SA_INIT request with a responder SPI", remote)
    our_spi = hdr.spi_r if hdr.initiator else hdr.spi_i
    ike = eng.ike_sas.get(our_spi)
    if ike is None:
        return _dbg(f"dropping {'response' if hdr.response else 'request'} for unknown "
                    f"IKE SA from {remote}", remote)
    if hdr.initiator == ike.initiator:
        return _dbg("dropping message with the wrong I flag", remote)
    return eng.guarded(ike, now, f"while processing a message from {remote}",
                       lambda: _on_sa(eng, ike, data, hdr, local, remote, now))


def _on_sa(eng: Engine, ike: IKESA, data: bytes, hdr: Any, local: Endpoint, remote: Endpoint,
           now: float) -> list[Action]:
    """A message for one of our IKE SAs (message-ID window, decryption, then the task)."""
    from pypluto.ike.exchanges import ike_sa_init

    if hdr.exchange == EXCH_INIT:
        if ike.state == S.PARENT_I1 and hdr.response and ike.outstanding is not None \
                and hdr.message_id == 0:
            return ike_sa_init.on_response(eng, ike, data, hdr, local, remote, now)
        return []
    if hdr.spi_i != ike.spi_i or hdr.spi_r != ike.spi_r:
        return _dbg("dropping message with mismatched SPIs", remote)
    if ike.prot_in is None:
        return _dbg("dropping encrypted message: no keys yet", remote)  # CVE-2019-12312
    if hdr.response:
        o = ike.outstanding
        if o is None or hdr.message_id != o.msgid:
            return _dbg(f"dropping unexpected response, message ID {hdr.message_id}", remote)
    else:
        if ike.last_response is not None and hdr.message_id == ike.last_response[0]:
            # §2.1: a retransmitted request is answered with the same response
            if hdr.next_payload == PT.SKF and not _is_first_fragment(data):
                return []  # RFC 7383 §2.6.1: answer the first fragment only
            return [SendPacket(p, local, remote) for p in ike.last_response[1]]
        if hdr.message_id != ike.next_in:
            return _dbg(f"dropping request with message ID {hdr.message_id}, expected "
                        f"{ike.next_in}", remote)
    try:
        msg = codec.parse(data)
    except WireError as e:
        return _dbg(f"dropping malformed message from {remote}: {e}", remote)
    sk = msg.sk
    if sk is None or msg.payloads[-1] is not sk:
        return _dbg("dropping message without SK payload", remote)
    try:
        if isinstance(sk, wp.SKFPayload):
            payloads = _reassemble(eng, ike, msg, sk)
            if payloads is None:
                return []
        else:
            payloads = codec.decrypt(sk, ike.prot_in)
    except CryptoError:
        return _dbg(f"dropping message from {remote}: integrity check failed", remote)
    except WireError as e:
        # authenticated but malformed inner chain (§2.21.2)
        acts: list[Action] = [Log(f"malformed encrypted payloads: {e}", level="warning",
                                  conn=ike.conn.name, serial=ike.serial)]
        if not hdr.response:
            n = codec.notify(e.notify, int(getattr(e, "payload_type", 0)).to_bytes(1, "big")
                             if isinstance(e, UnsupportedCriticalPayload) else b"")
            acts += eng.send_response(ike, hdr.exchange, hdr.message_id, [n], local, remote)
            if ike.state == S.PARENT_R1:
                acts += eng.drop_ike(ike, now, "", None)
        return acts
    ike.last_recv = now
    if ike.established and ike.conn.dpddelay > 0:
        ike.next_liveness = now + ike.conn.dpddelay
    if hdr.response:
        o = ike.outstanding
        assert o is not None
        if hdr.exchange != o.task.exchange:
            return _dbg("dropping response of the wrong exchange type", remote)
        ike.outstanding = None
        acts = o.task.on_response(eng, ike, payloads, now)
        if ike.serial in eng.by_serial:
            acts += eng.kick(ike, now)
        return acts
    # a request: answer where it came from (§2.23, §3.1)
    if ike.remote != remote or ike.local != local:
        if ike.nat_remote or ike.nat_local or local.port != 500:
            ike.remote, ike.local = remote, local
    return _request(eng, ike, hdr.exchange, hdr.message_id, payloads, local, remote, now)


def _request(eng: Engine, ike: IKESA, exchange: int, msgid: int, payloads: list,
             local: Endpoint, remote: Endpoint, now: float) -> list[Action]:
    from pypluto.ike.exchanges import create_child_sa, ike_auth, informational

    if exchange == EXCH_AUTH:
        if ike.state != S.PARENT_R1:
            return _dbg("dropping unexpected IKE_AUTH request", remote)
        acts = ike_auth.respond(eng, ike, msgid, payloads, local, remote, now)
    elif not ike.established:
        # CVE-2014-2338 / -2019-12312: nothing but IKE_AUTH before authentication
        return _dbg(f"dropping exchange {exchange} before IKE_AUTH completed", remote)
    elif exchange == EXCH_CHILD:
        acts = create_child_sa.respond(eng, ike, msgid, payloads, now)
    elif exchange == EXCH_INFO:
        acts = informational.respond(eng, ike, msgid, payloads, now)
    else:
        return _dbg(f"dropping request of unsupported exchange type {exchange}", remote)
    if ike.serial in eng.by_serial:
        acts += eng.kick(ike, now)
    return acts


def _is_first_fragment(data: bytes) -> bool:
    try:
        m = codec.parse(data)
    except WireError:
        return False
    sk = m.sk
    return isinstance(sk, wp.SKFPayload) and sk.fragment_number == 1


def _reassemble(eng: Engine, ike: IKESA, msg: Any, skf: Any) -> list | None:
    """Collect SKF fragments (RFC 7383 §2.6); each is authenticated on its own."""
    total = skf.total_fragments
    if total > MAX_FRAGMENTS:
        return None
    st = ike.fragments
    if st is None or st["msgid"] != msg.message_id or st["response"] != msg.response:
        st = {"msgid": msg.message_id, "response": msg.response, "total": total,
              "parts": {}, "first": None}
    if st["total"] != total:
        if total > st["total"]:  # §2.6.2: a new set with more fragments replaces the old
            st = {"msgid": msg.message_id, "response": msg.response, "total": total,
                  "parts": {}, "first": None}
        else:
            return None
    if skf.fragment_number in st["parts"]:
        return None
    plain = codec.decrypt_fragment(skf, ike.prot_in)  # CryptoError propagates: dropped
    ike.fragments = st
    st["parts"][skf.fragment_number] = plain
    if skf.fragment_number == 1:
        st["first"] = skf.first_inner
    if len(st["parts"]) < total:
        return None
    data = b"".join(st["parts"][i] for i in range(1, total + 1))
    first = st["first"]
    ike.fragments = None
    return codec.parse_inner(first, data)
