"""The engine's thin adapter over ``pypluto.wire`` and ``pypluto.crypto``.

Everything the exchanges need to build, protect, parse and unprotect messages
goes through here, so the exchange modules stay free of codec details.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import TypeVar

from pypluto.config.model import Identity
from pypluto.crypto.errors import IntegrityError
from pypluto.crypto.sk import SKProtector
from pypluto.iana import PayloadType as PT
from pypluto.ike import ts as tsmod
from pypluto.ike.ts import TS
from pypluto.params import IPAddress
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp
from pypluto.wire.errors import EncodeError, WireError
from pypluto.wire.header import IKEHeader
from pypluto.wire.payloads import Payload

__all__ = ["PT", "WireError", "IntegrityError", "Payload", "IKEHeader"]

Proposal = tuple[int, int, bytes, list[tuple[int, int, int | None]]]
Proposals = list[Proposal]
P = TypeVar("P", bound=Payload)


def peek(data: bytes) -> IKEHeader:
    return wm.peek_header(data)


def parse(data: bytes, hdr: IKEHeader | None = None) -> wm.Message:
    """The message; ``hdr`` is what ``peek`` returned for the same bytes, if known."""
    return wm.parse_message(data, hdr)


def first(payloads: Sequence[Payload], cls: type[P], ptype: int | None = None) -> P | None:
    """The first payload of class ``cls`` (and of ``ptype``, for IDi/IDr and TSi/TSr)."""
    for p in payloads:
        if isinstance(p, cls) and (ptype is None or p.payload_type == ptype):
            return p
    return None


def notifies(payloads: Sequence[Payload]) -> list[wp.NotifyPayload]:
    return [p for p in payloads if isinstance(p, wp.NotifyPayload)]


def errors(payloads: Sequence[Payload]) -> list[wp.NotifyPayload]:
    """Error notifies (types below 16384, RFC 7296 §3.10.1)."""
    return [p for p in payloads if isinstance(p, wp.NotifyPayload) and p.notify_type < 16384]


def has_notify(payloads: Sequence[Payload], ntype: int) -> bool:
    """Whether a notify of ``ntype`` is among ``payloads`` (a plain loop: no generator
    per call on the per-message path, issue 18)."""
    notify = wp.NotifyPayload
    for p in payloads:
        if isinstance(p, notify) and p.notify_type == ntype:
            return True
    return False


def encode(
    spi_i: bytes, spi_r: bytes, exchange: int, initiator: bool, response: bool, msgid: int,
    payloads: Sequence[Payload], prot: SKProtector | None = None, frag_size: int | None = None,
) -> list[bytes]:
    """Serialized message(s): plain, SK-protected, or SKF fragments (RFC 7383)."""
    if prot is None:  # what Message(...).serialize() gives, without the Message object
        return [wm.encode_plain(spi_i, spi_r, exchange, initiator=initiator, response=response,
                                message_id=msgid, payloads=payloads)]
    if frag_size:
        one = wm.encode_sk_message(spi_i=spi_i, spi_r=spi_r, exchange=exchange,
                                   initiator=initiator, response=response, message_id=msgid,
                                   inner=payloads, protector=prot)
        if len(one) <= frag_size:
            return [one]
        return list(wm.encode_skf_messages(spi_i=spi_i, spi_r=spi_r, exchange=exchange,
                                           initiator=initiator, response=response,
                                           message_id=msgid, inner=payloads, protector=prot,
                                           fragment_size=frag_size))
    return [wm.encode_sk_message(spi_i=spi_i, spi_r=spi_r, exchange=exchange,
                                 initiator=initiator, response=response, message_id=msgid,
                                 inner=payloads, protector=prot)]


def decrypt(sk: wp.SKPayload, prot: SKProtector) -> list[Payload]:
    """The inner payloads of an SK payload; IntegrityError or WireError on failure."""
    plain = prot.decrypt(sk.aad, sk.body)
    return wm.parse_payloads(sk.first_inner, plain)


def decrypt_fragment(skf: wp.SKFPayload, prot: SKProtector) -> bytes:
    return prot.decrypt(skf.aad, skf.body)


def parse_inner(first_type: int, plain: bytes) -> list[Payload]:
    return wm.parse_payloads(first_type, plain)


# --- payload makers ------------------------------------------------------------
def sa(proposals: Proposals) -> wp.SAPayload:
    props = []
    for num, proto, spi, ts in proposals:
        props.append(wp.Proposal(number=num, protocol_id=proto, spi=spi,
                                 transforms=[wp.Transform.make(t, i, b) for t, i, b in ts]))
    return wp.SAPayload(proposals=props)


_GENERIC = struct.Struct("!BBH")  # RFC 7296 §3.2
_KE_HEAD = struct.Struct("!BBHHH")  # generic header, DH group, reserved (§3.4)


def init_answer_head(sa_head: bytes, group: int, ke_data: bytes, nonce: bytes
                     ) -> wp.SerializedRun:
    """The SA, KE and Nonce payloads of an IKE_SA_INIT answer as one run (RFC 7296 §1.2):
    the bytes ``sa(...)``, ``ke(group, ke_data)`` and ``nonce(nonce)`` serialize to.

    ``sa_head`` is the SA payload already serialized, generic header included, naming
    KE as its next payload.
    """
    return init_answer(sa_head, group, ke_data, nonce, b"", 0, 0, ())


_NOTIFY_HEAD = struct.Struct("!BBHBBH")  # generic header, protocol, SPI size, type (§3.10)


def notify_bytes(nxt: int, ntype: int, data: bytes) -> bytes:
    """A Notify payload without SPI, generic header (naming ``nxt``) included: the bytes
    the message layer writes for ``notify(ntype, data)`` followed by ``nxt`` (§3.10)."""
    try:
        return _NOTIFY_HEAD.pack(nxt, 0, 8 + len(data), 0, 0, ntype) + data
    except struct.error as e:
        raise EncodeError(f"Notify field out of range: {e}") from None


def init_answer(sa_head: bytes, group: int, ke_data: bytes, nonce: bytes, tail: bytes,
                tail_first: int, tail_last: int, notifies: tuple[int, ...]
                ) -> wp.SerializedRun:
    """The whole IKE_SA_INIT answer as one run (RFC 7296 §1.2): SA, KE and Nonce as
    :func:`init_answer_head` writes them, then ``tail``, payloads already serialized
    whose first type is ``tail_first`` and whose last generic header is at offset
    ``tail_last`` of ``tail`` (``tail`` empty: the Nonce ends the chain).  ``notifies``:
    the Notify types in ``tail``, for the sent-notify counters."""
    ke_len = 8 + len(ke_data)
    n_len = 4 + len(nonce)
    if ke_len > 0xFFFF or n_len > 0xFFFF:
        raise EncodeError("KE or Nonce payload too long")
    try:
        chain = b"".join((sa_head, _KE_HEAD.pack(PT.NONCE, 0, ke_len, group, 0), ke_data,
                          _GENERIC.pack(tail_first if tail else PT.NONE, 0, n_len), nonce,
                          tail))
    except struct.error as e:
        raise EncodeError(f"KE field out of range: {e}") from None
    nonce_at = len(sa_head) + ke_len
    last = nonce_at + n_len + tail_last if tail else nonce_at
    return wp.SerializedRun(PT.SA, chain, last, notifies)


_AUTH_HEAD = struct.Struct("!BBHI")  # generic header, method and 3 reserved octets (§3.8)


def idr_auth(idr_body: bytes, method: int, auth_data: bytes) -> wp.SerializedRun:
    """Our IDr and AUTH payloads as one run (RFC 7296 §3.5, §3.8): the bytes of
    ``UnknownPayload(IDr, idr_body)`` then ``auth(method, auth_data)``."""
    id_len = 4 + len(idr_body)
    auth_len = 8 + len(auth_data)
    if id_len > 0xFFFF or auth_len > 0xFFFF:
        raise EncodeError("IDr or AUTH payload too long")
    try:
        chain = b"".join((_GENERIC.pack(PT.AUTH, 0, id_len), idr_body,
                          _AUTH_HEAD.pack(PT.NONE, 0, auth_len, method << 24), auth_data))
    except struct.error as e:
        raise EncodeError(f"AUTH field out of range: {e}") from None
    return wp.SerializedRun(PT.IDr, chain, id_len)


def sa_tuples(p: wp.SAPayload) -> Proposals:
    """(number, protocol, SPI, [(type, id, key bits)]) per proposal (RFC 7296 §3.3)."""
    return p.proposal_tuples()


def ke(group: int, data: bytes) -> wp.KEPayload:
    return wp.KEPayload(group=group, data=data)


def nonce(data: bytes) -> wp.NoncePayload:
    return wp.NoncePayload(data=data)


def notify(ntype: int, data: bytes = b"", proto: int = 0, spi: bytes = b""
           ) -> wp.NotifyPayload:
    return wp.NotifyPayload(protocol_id=proto, spi=spi, notify_type=ntype, data=data)


def ident(ptype: int, ident: Identity) -> wp.IDPayload:
    return wp.IDPayload(id_type=ident.id_type, data=ident.data, payload_type=ptype)


def id_body(p: wp.IDPayload) -> bytes:
    """The ID payload body (without generic header) that AUTH covers (§2.15)."""
    return p.serialize()


def auth(method: int, data: bytes) -> wp.AuthPayload:
    return wp.AuthPayload(method=method, data=data)


def ts_payload(ptype: int, tss: list[TS]) -> wp.TSPayload:
    sels: list[wp.TrafficSelector | wp.RawTrafficSelector] = [
        wp.TrafficSelector(t.ts_type, t.proto, t.sport, t.eport, t.start_addr(), t.end_addr())
        for t in tss]
    return wp.TSPayload(selectors=sels, payload_type=ptype)


def ts_list(p: wp.TSPayload) -> list[TS] | None:
    """Selectors of a TS payload; None if any is malformed or of an unknown type.

    The answer is kept on the payload for the next call (the responder reads the
    same TS payloads to pick a connection and then to answer; issue 18), as long as
    its selector list is the same list of the same length.
    """
    sels = p.selectors
    memo = p.__dict__.get("_ts_list")
    if memo is not None and memo[0] is sels and memo[1] == len(sels):
        got = memo[2]
        return None if got is None else list(got)
    got = _ts_list(p)
    p.__dict__["_ts_list"] = (sels, len(sels), None if got is None else tuple(got))
    return got


def ts_labeled(p: wp.TSPayload) -> bool:
    """Does the payload carry a selector that is not an address range (an RFC 9478
    TS_SECLABEL or an unknown type), which ``ts_list`` leaves out?"""
    return any(not isinstance(s, wp.TrafficSelector) for s in p.selectors)


def _ts_list(p: wp.TSPayload) -> list[TS] | None:
    out = []
    for s in p.selectors:
        if not isinstance(s, wp.TrafficSelector):
            continue  # e.g. TS_SECLABEL: not ours to use
        t = tsmod.from_range(int(s.ts_type), s.ip_protocol, s.start_port, s.end_port,
                             s.start_addr, s.end_addr)
        if t is None:
            return None
        out.append(t)
    return out


def delete(proto: int, spis: list[bytes]) -> wp.DeletePayload:
    size = 0 if proto == 1 else 4
    return wp.DeletePayload(protocol_id=proto, spi_size=size, spis=spis)


def vendor(data: bytes) -> wp.VendorIDPayload:
    return wp.VendorIDPayload(data=data)


# --- small helpers ---------------------------------------------------------------
def natd_hash(spi_i: bytes, spi_r: bytes, addr: IPAddress, port: int) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | Port) (RFC 7296 §2.23)."""
    return _sha1(spi_i + spi_r + addr.packed + port.to_bytes(2, "big")).digest()


def endpoint_bytes(addr: IPAddress, port: int) -> bytes:
    """IP | Port as NAT detection hashes them (RFC 7296 §2.23)."""
    return addr.packed + port.to_bytes(2, "big")


def natd_of(spi_i: bytes, spi_r: bytes, endpoint: bytes) -> bytes:
    """``natd_hash`` given ``endpoint_bytes`` of the address and port."""
    return _sha1(spi_i + spi_r + endpoint).digest()


_sha1 = hashlib.sha1


def cookie_value(secret: bytes, version: int, ni: bytes, addr: IPAddress, spi_i: bytes
                 ) -> bytes:
    """Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>) (RFC 7296 §2.6)."""
    mac = hmac.new(secret, ni + addr.packed + spi_i, hashlib.sha256)
    return bytes((version & 0xFF,)) + mac.digest()[:16]
