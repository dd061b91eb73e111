"""AH packet processing (RFC 4302), free of sockets and devices.

One :class:`OutboundAH` turns an IP packet into a whole outer IP packet
carrying an Authentication Header; one :class:`InboundAH` checks such a packet
and returns what it protects, with the anti-replay window of RFC 4302 §3.4.3
and extended sequence numbers (RFC 4302 §2.5.1, RFC 4303 Appendix A).

Unlike ESP, AH covers the IP header it travels in: the ICV (RFC 4302 §3.3.3)
is computed over

* the IP header with its mutable fields zeroed (§3.3.3.1, Appendix A): for
  IPv4 the DSCP/ECN byte, flags and fragment offset, TTL and checksum, and the
  mutable options (everything except End, NOP, Security, Extended Security,
  CIPSO, Router Alert and SDB); a loose or strict source route is zeroed and
  the destination replaced by its final hop (A.1, "mutable but predictable").
  For IPv6 the traffic class, flow label and hop limit, and the data of every
  hop-by-hop / destination option whose type has the "may change en route"
  bit (0x20) set;
* the AH header with the ICV field zeroed (padding kept as sent, §3.3.3.2.1:
  Linux sends uninitialised padding and covers it as sent);
* the payload;
* with ESN, the high 32 bits of the sequence number appended at the end
  (§2.5.1, §3.3.3.3.1), never sent.

Tunnel mode (§3.1.2) builds a fresh outer header from the SA's addresses;
transport mode (§3.1.1) inserts AH after the IPv4 header (with its options)
or after the IPv6 base and hop-by-hop headers.  The AH header is padded to a
multiple of 4 bytes for IPv4 and 8 for IPv6 (§2.6, §3.3.3.2.1); on input an
IPv4 AH padded to 8 bytes is accepted too (Linux without XFRM_STATE_ALIGN4).

Packets are whole IP packets on both sides: :meth:`OutboundAH.encap` returns
what a header-including raw socket (``IPPROTO_RAW``) sends, and
:meth:`InboundAH.decap` takes what an IPv4 raw socket of protocol 51 receives.
IPv6 raw sockets deliver no IPv6 header: :func:`ipv6_header` rebuilds the one
the ICV needs from the addresses and the length.  An IPv4 packet is given a
non-zero Identification before its ICV is computed: Linux fills in a zero ID
of a header-including raw packet, and the ID is covered by the ICV.

Not done: IPv6 routing headers (the predictable rearrangement of A.2) and
fragments before AH: such packets are dropped and counted as malformed.

Integrity algorithms are those of :func:`pypluto.crypto.ciphers.make_integ`:
HMAC-SHA1-96 (RFC 2404), HMAC-SHA2-256-128 / 384-192 / 512-256 (RFC 4868),
AES-XCBC-MAC-96 (RFC 3566), AES-CMAC-96 (RFC 4494), HMAC-MD5-96 (RFC 2403).

Bad input never raises: :meth:`InboundAH.decap` returns None and counts why.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable

from pypluto.crypto import ciphers
from pypluto.crypto.errors import CryptoError
from pypluto.iana import Integ
from pypluto.kernel.base import BackendError
from pypluto.kernel.esp import inner_length
from pypluto.kernel.seqnum import infer_seq
from pypluto.params import IPAddress, SAExpire, SAParams, SAStats

__all__ = [
    "IPPROTO_AH",
    "InboundAH",
    "OutboundAH",
    "ah_spi",
    "icv_input",
    "ipv6_header",
    "make_sa",
]

IPPROTO_AH = 51
NH_IPV4 = 4
NH_IPV6 = 41
NH_NONE = 59
_HBH, _ROUTING, _FRAGMENT, _DSTOPTS = 0, 43, 44, 60

SEQ_SOFT_FRACTION = 15 / 16  # as for ESP: "rekey soon" when this much of the space is used

_AH = struct.Struct("!BBHII")  # next header, payload len, reserved, SPI, seq (RFC 4302 §2)
_I = struct.Struct("!I")
_H = struct.Struct("!H")

# IPv4 options that do not change in transit (RFC 4302 Appendix A.1 "immutable"):
# End of List, NOP, Security, Extended Security, Commercial Security (CIPSO),
# Router Alert, Sender Directed Multi-Destination Delivery.
_V4_IMMUTABLE_OPTS = frozenset({0, 1, 130, 133, 134, 148, 149})
_V4_SOURCE_ROUTES = frozenset({131, 137})  # LSRR, SSRR: mutable but predictable


class MalformedPacket(ValueError):
    """A packet whose headers cannot be parsed for AH (counted, never raised out)."""


# ---------------------------------------------------------------------------
# header helpers
# ---------------------------------------------------------------------------


def _checksum(hdr: bytes | bytearray) -> int:
    """The IPv4 header checksum (RFC 791)."""
    s: int = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _set_checksum(hdr: bytearray) -> None:
    hdr[10:12] = b"\0\0"
    hdr[10:12] = _H.pack(_checksum(hdr))


def ipv6_header(src: IPAddress, dst: IPAddress, payload_len: int,
                next_header: int = IPPROTO_AH, hop_limit: int = 64) -> bytes:
    """An IPv6 base header (RFC 8200 §3): what an IPv6 raw socket strips off inbound AH.

    Traffic class, flow label and hop limit are zeroed in the ICV anyway
    (RFC 4302 §3.3.3.1.2.1), so only the addresses, length and next header matter.
    """
    return struct.pack("!IHBB16s16s", 6 << 28, payload_len, next_header, hop_limit,
                       src.packed, dst.packed)


def _zero_v4_options(hdr: bytearray) -> None:
    """Zero mutable IPv4 options in place (RFC 4302 Appendix A.1).

    A loose/strict source route is zeroed whole and its last address becomes
    the destination, the value the packet has on arrival.
    """
    i, end = 20, len(hdr)
    while i < end:
        t = hdr[i]
        if t == 0:  # End of Option List: the rest is padding
            return
        if t == 1:
            i += 1
            continue
        if i + 1 >= end or hdr[i + 1] < 2 or i + hdr[i + 1] > end:
            raise MalformedPacket("bad IPv4 option")
        n = hdr[i + 1]
        if t in _V4_IMMUTABLE_OPTS:
            i += n
            continue
        if t in _V4_SOURCE_ROUTES:
            if n < 7:
                raise MalformedPacket("bad IPv4 source route option")
            hdr[16:20] = hdr[i + n - 4:i + n]
        hdr[i:i + n] = bytes(n)
        i += n


def _zero_v6_options(ext: bytearray) -> None:
    """Zero the data of mutable options in a hop-by-hop / destination options header.

    RFC 8200 §4.2: the third-highest bit of an option type (0x20) says the
    option data may change en route; RFC 4302 §3.3.3.1.2.2 zeroes that data.
    """
    i, end = 2, len(ext)
    while i < end:
        t = ext[i]
        if t == 0:  # Pad1
            i += 1
            continue
        if i + 1 >= end or i + 2 + ext[i + 1] > end:
            raise MalformedPacket("bad IPv6 option")
        n = ext[i + 1]
        if t & 0x20:
            ext[i + 2:i + 2 + n] = bytes(n)
        i += 2 + n


def _find_ah(pkt: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(offset of the AH header, offset of the byte holding AH's protocol number).

    IPv4: right after the header (with options).  IPv6: after the base header
    and any hop-by-hop / destination options headers; a routing or fragment
    header before AH is not supported (MalformedPacket).
    """
    n = len(pkt)
    if n < 20:
        raise MalformedPacket("short IP packet")
    v = pkt[0] >> 4
    if v == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if ihl < 20 or n < ihl + 12:
            raise MalformedPacket("short IPv4 packet")
        if pkt[9] != IPPROTO_AH:
            raise MalformedPacket("not an AH packet")
        return ihl, 9
    if v != 6 or n < 52:
        raise MalformedPacket("not an IPv4/IPv6 AH packet")
    nh_at, nh, off = 6, pkt[6], 40
    while nh != IPPROTO_AH:
        if nh not in (_HBH, _DSTOPTS) or off + 8 > n:
            raise MalformedPacket(f"IPv6 header {nh} before AH is not supported")
        nh_at, nh = off, pkt[off]
        off += (pkt[off + 1] + 1) * 8
    if off + 12 > n:
        raise MalformedPacket("short IPv6 AH packet")
    return off, nh_at


def ah_spi(packet: bytes | bytearray | memoryview) -> int | None:
    """The SPI of the AH header in a whole IP packet, or None if there is none."""
    try:
        off, _ = _find_ah(packet)
    except MalformedPacket:
        return None
    return int(_I.unpack_from(packet, off + 4)[0])


def _zeroed_headers(pkt: bytes | bytearray | memoryview, ah_off: int) -> bytearray:
    """The IP header(s) before AH with every mutable field zeroed (RFC 4302 §3.3.3.1)."""
    hdr = bytearray(pkt[:ah_off])
    if hdr[0] >> 4 == 4:
        hdr[1] = 0  # DSCP, ECN
        hdr[6:12] = bytes(6)  # flags, fragment offset, TTL... keep the protocol
        hdr[9] = IPPROTO_AH
        if ah_off > 20:
            _zero_v4_options(hdr)
        return hdr
    hdr[0] = 0x60  # version kept; traffic class and flow label zeroed
    hdr[1:4] = b"\0\0\0"
    hdr[7] = 0  # hop limit
    off, nh = 40, hdr[6]
    while off < ah_off:
        ln = (hdr[off + 1] + 1) * 8
        if nh in (_HBH, _DSTOPTS):
            ext = bytearray(hdr[off:off + ln])
            _zero_v6_options(ext)
            hdr[off:off + ln] = ext
        nh = hdr[off]
        off += ln
    return hdr


def icv_input(packet: bytes | bytearray | memoryview, icv_size: int,
              esn_hi: int | None = None) -> bytes:
    """The bytes the ICV of a whole AH packet is computed over (RFC 4302 §3.3.3).

    Mutable IP header fields zeroed, the ICV (``icv_size`` bytes, not the
    alignment padding) zeroed, and with ESN the high-order 32 bits of the
    sequence number appended (§2.5.1).  Raises MalformedPacket.
    """
    ah_off, _ = _find_ah(packet)
    end = ah_off + 12 + icv_size
    if len(packet) < end:
        raise MalformedPacket("short AH header")
    parts = [bytes(_zeroed_headers(packet, ah_off)), bytes(packet[ah_off:ah_off + 12]),
             bytes(icv_size), bytes(packet[end:])]
    if esn_hi is not None:
        parts.append(_I.pack(esn_hi))
    return b"".join(parts)


# ---------------------------------------------------------------------------
# SA state
# ---------------------------------------------------------------------------


def _make_integ(sa: SAParams) -> ciphers.Integ:
    if sa.encr_id:
        raise BackendError("AH takes no encryption transform (RFC 4302 §1)")
    if not sa.integ_id or sa.integ_id == Integ.NONE:
        raise BackendError("AH needs an integrity transform (RFC 4302 §3.2)")
    try:
        return ciphers.make_integ(sa.integ_id, sa.integ_key)
    except CryptoError as e:  # UnsupportedAlgorithm is a CryptoError too
        raise BackendError(f"AH transform: {e}") from None


class _AHBase:
    """What both directions of one AH SA share: the key, counters and lifetimes."""

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None) -> None:
        self.params = sa
        self.spi = sa.spi
        self.esn = sa.esn
        self.tunnel = sa.mode == "tunnel"
        self.v4 = sa.dst.version == 4
        self.integ = _make_integ(sa)
        self.icv_size = self.integ.icv_size
        align = 4 if self.v4 else 8  # RFC 4302 §2.6, §3.3.3.2.1
        self.ah_len = (12 + self.icv_size + align - 1) // align * align
        # Accepted on input: also 64-bit alignment over IPv4, which Linux sends
        # for an XFRM SA without XFRM_STATE_ALIGN4 (its default).
        self.ah_lens = {self.ah_len, (12 + self.icv_size + 7) // 8 * 8}
        self.stats = SAStats(selector_drops=0)  # counted here (RFC 4301 §5.2 step 4)
        self.malformed = 0  # unparsable, wrong next header, outside what AH can carry
        self.on_expire = on_expire
        self.dead = False
        self.created = time.monotonic()
        inf = 1 << 62
        self._soft_b = sa.soft_bytes or inf
        self._hard_b = sa.hard_bytes or inf
        self._soft_p = sa.soft_packets or inf
        self._hard_p = sa.hard_packets or inf
        self._soft_fired = False

    @property
    def policy_drops(self) -> int:
        """Inner packets outside the SA's selectors (``stats.selector_drops``)."""
        return self.stats.selector_drops or 0

    def _fire(self, hard: bool, reason: str) -> None:
        if hard:
            self.dead = True
        if self.on_expire is not None:
            p = self.params
            try:
                self.on_expire(SAExpire(p.dst, p.spi, "ah", hard, reason))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the data plane never dies for a callback
                pass

    def _count(self, n: int) -> None:
        """Account one packet of ``n`` bytes; fire soft/hard expiry (RFC 4301 §4.4.2.1)."""
        st = self.stats
        st.bytes += n
        st.packets += 1
        st.last_used = time.monotonic()
        if st.bytes >= self._hard_b or st.packets >= self._hard_p:
            if not self.dead:
                self._fire(True, "bytes" if st.bytes >= self._hard_b else "packets")
        elif not self._soft_fired and (st.bytes >= self._soft_b or st.packets >= self._soft_p):
            self._soft_fired = True
            self._fire(False, "bytes" if st.bytes >= self._soft_b else "packets")


class OutboundAH(_AHBase):
    """The sending half of one AH SA (RFC 4302 §3.3)."""

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None) -> None:
        super().__init__(sa, on_expire)
        self.seq = 0  # last sequence number sent; the first packet carries 1 (§3.3.2)
        self.seq_max = (1 << 64) - 1 if sa.esn else (1 << 32) - 1
        self.seq_soft = int(self.seq_max * SEQ_SOFT_FRACTION)
        self.seq_exhausted = 0
        self._src = sa.src.packed
        self._dst = sa.dst.packed
        self._ip_id = int.from_bytes(os.urandom(2), "big")

    def _next_id(self) -> int:
        self._ip_id = (self._ip_id % 0xFFFF) + 1  # never 0
        return self._ip_id

    def _headers(self, packet: bytes | memoryview) -> tuple[bytearray, bytes | memoryview, int]:
        """(IP header(s) with AH as next protocol, payload after AH, AH's next header)."""
        n = len(packet)
        v = packet[0] >> 4
        if self.tunnel:
            nh = NH_IPV4 if v == 4 else NH_IPV6 if v == 6 else 0
            if not nh:
                raise MalformedPacket("not an IP packet")
            tos = packet[1] if v == 4 else ((packet[0] & 0x0F) << 4 | packet[1] >> 4)
            if self.v4:
                hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + self.ah_len + n,
                                            self._next_id(), 0, 64, IPPROTO_AH, 0,
                                            self._src, self._dst))
                _set_checksum(hdr)
            else:
                hdr = bytearray(ipv6_header(self.params.src, self.params.dst, self.ah_len + n))
                hdr[0] = 0x60 | tos >> 4
                hdr[1] = (tos & 0x0F) << 4
            return hdr, packet, nh
        # transport mode (RFC 4302 §3.1.1): AH goes inside the packet's own header
        if v == 4 and self.v4:
            ihl = (packet[0] & 0x0F) * 4
            if ihl < 20 or n < ihl or _H.unpack_from(packet, 2)[0] != n:
                raise MalformedPacket("bad IPv4 header")
            if _H.unpack_from(packet, 6)[0] & 0x3FFF:  # MF or an offset: a fragment
                raise MalformedPacket("AH transport mode needs whole datagrams")
            hdr = bytearray(packet[:ihl])
            nh = hdr[9]
            hdr[9] = IPPROTO_AH
            hdr[2:4] = _H.pack(n + self.ah_len)
            if hdr[4:6] == b"\0\0":
                hdr[4:6] = _H.pack(self._next_id())
            _set_checksum(hdr)
            return hdr, packet[ihl:], nh
        if v == 6 and not self.v4 and n >= 40:
            off, nh_at = 40, 6
            if packet[6] == _HBH:  # hop-by-hop must stay first (RFC 8200 §4.1)
                if n < 48:
                    raise MalformedPacket("short IPv6 hop-by-hop header")
                nh_at, off = 40, 40 + (packet[41] + 1) * 8
            if off > n or packet[nh_at] in (_ROUTING, _FRAGMENT):
                raise MalformedPacket("IPv6 routing/fragment header: not supported with AH")
            hdr = bytearray(packet[:off])
            nh = hdr[nh_at]
            hdr[nh_at] = IPPROTO_AH
            hdr[4:6] = _H.pack(n - 40 + self.ah_len)
            return hdr, packet[off:], nh
        raise MalformedPacket("packet family differs from the SA's")

    def encap(self, packet: bytes | memoryview) -> bytes | None:
        """The whole outer IP packet (header ‖ AH ‖ payload) for one IP packet.

        Returns None (and counts) when the packet cannot be sent: the SA is
        dead, the sequence number space is exhausted (RFC 4302 §3.3.2), or the
        packet is not something AH can carry.
        """
        if self.dead:
            return None
        seq = self.seq + 1
        if seq > self.seq_max:
            self.seq_exhausted += 1
            self._fire(True, "seq")
            return None
        if not len(packet):
            self.malformed += 1
            return None
        try:
            hdr, payload, nh = self._headers(packet)
            ah = bytearray(_AH.pack(nh, self.ah_len // 4 - 2, 0, self.spi, seq & 0xFFFFFFFF))
            ah += bytes(self.ah_len - 12)  # ICV and zero padding (§3.3.3.2.1)
            whole = bytearray(hdr)
            whole += ah
            whole += payload
            # a broken IPv4 option or IPv6 option header (a raw packet from this host)
            # has no ICV input: refused before it takes a sequence number
            data = icv_input(whole, self.icv_size, seq >> 32 if self.esn else None)
        except (MalformedPacket, IndexError, struct.error):
            self.malformed += 1
            return None
        self.seq = seq
        if seq == self.seq_soft:  # once: on the packet that takes this number
            self._fire(False, "seq")
        icv = self.integ.mac(data)
        at = len(hdr) + 12
        whole[at:at + self.icv_size] = icv
        self._count(len(packet))
        return bytes(whole)


    def encap_batch(self, packets: list[bytes]) -> list[bytes]:
        """:meth:`encap` for several packets (the segments of one TCP super-packet)."""
        return [w for w in map(self.encap, packets) if w is not None]


class InboundAH(_AHBase):
    """The receiving half of one AH SA with its anti-replay window (RFC 4302 §3.4)."""

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None) -> None:
        super().__init__(sa, on_expire)
        self.window = max(0, sa.replay_window)
        self.top = 0  # highest authenticated sequence number (64-bit with ESN)
        self.bitmap = 0  # bit i set: top - i was received
        self._wmask = (1 << self.window) - 1 if self.window else 0
        self._infer_w = self.window or 64
        self.selector_check: Callable[[bytes], bool] | None = None

    def _infer(self, lo: int) -> int:
        """The full sequence number for the low 32 bits received (RFC 4303 Appendix A2.2)."""
        return infer_seq(self.top, self._infer_w, lo)

    def _replayed(self, seq: int) -> bool:
        w = self.window
        if not w:
            return False
        if seq == 0:
            return True
        if seq <= self.top:
            d = self.top - seq
            return d >= w or bool((self.bitmap >> d) & 1)
        return False

    def _accept(self, seq: int) -> None:
        """Advance the window after the ICV verified (RFC 4302 §3.4.3)."""
        top, w = self.top, self.window
        if seq > top:
            if w:
                d = seq - top
                self.bitmap = ((self.bitmap << d) | 1) & self._wmask if d < w else 1
            self.top = seq
        elif w:
            self.bitmap |= 1 << (top - seq)

    def decap(self, packet: bytes | bytearray | memoryview) -> bytes | None:
        """What one whole AH packet protects, or None when it is dropped.

        Tunnel mode: the inner IP packet.  Transport mode: the packet with AH
        removed.  Order of checks (RFC 4302 §3.4): parse and SPI, replay
        (§3.4.3), ICV (§3.4.4), window update, next header, selectors
        (RFC 4301 §5.2 step 4).
        """
        st = self.stats
        if self.dead:
            self.malformed += 1
            return None
        try:
            ah_off, nh_at = _find_ah(packet)
            nh, plen, _res, spi, lo = _AH.unpack_from(packet, ah_off)
            ah_len = (plen + 2) * 4
            if spi != self.spi or ah_len not in self.ah_lens or len(packet) < ah_off + ah_len:
                raise MalformedPacket("AH length or SPI does not match the SA")
            if (packet[0] >> 4 == 4) != self.v4:
                raise MalformedPacket("wrong IP version for the SA")
            if self.v4 and (packet[6] & 0x3F or packet[7]):
                # MF or an offset: a fragment, discarded (RFC 4302 §3.4.1; these
                # fields are zeroed in the ICV, anyone on the path can set them)
                raise MalformedPacket("IPv4 fragment offered to AH")
            seq = self._infer(lo) if self.esn else lo
            if self._replayed(seq):
                st.replay_drops += 1
                return None
            data = icv_input(packet, self.icv_size, seq >> 32 if self.esn else None)
        except (MalformedPacket, IndexError, struct.error):
            self.malformed += 1
            return None
        icv = bytes(packet[ah_off + 12:ah_off + 12 + self.icv_size])
        if not self.integ.verify(data, icv):
            st.integrity_failures += 1
            return None
        self._accept(seq)
        body = bytes(packet[ah_off + ah_len:])
        if nh == NH_NONE:  # a dummy packet: nothing to deliver
            return None
        if self.tunnel:
            v = 4 if nh == NH_IPV4 else 6
            # the inner packet is all that follows AH: its own header must say so
            # (RFC 4302 §3.1.2; RFC 791 §3.1 header and total length)
            if nh not in (NH_IPV4, NH_IPV6) or not body or body[0] >> 4 != v \
                    or inner_length(body, v) != len(body):
                self.malformed += 1
                return None
            inner = body
        else:
            inner = self._strip(packet, ah_off, nh_at, nh, body)
        chk = self.selector_check
        if chk is not None and not chk(inner):
            st.selector_drops = (st.selector_drops or 0) + 1
            return None
        self._count(len(inner))
        return inner

    def _strip(self, packet: bytes | bytearray | memoryview, ah_off: int, nh_at: int,
               nh: int, body: bytes) -> bytes:
        """Transport mode: the packet without its AH header (RFC 4302 §3.1.1)."""
        hdr = bytearray(packet[:ah_off])
        hdr[nh_at] = nh
        if self.v4:
            hdr[2:4] = _H.pack(len(hdr) + len(body))
            _set_checksum(hdr)
        else:
            hdr[4:6] = _H.pack(len(hdr) - 40 + len(body))
        return bytes(hdr) + body


def make_sa(sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None
            ) -> InboundAH | OutboundAH:
    """The processing state for one AH SAParams (BackendError for what we cannot do)."""
    if sa.protocol != "ah":
        raise BackendError(f"not an AH SA: protocol {sa.protocol!r}")
    if not 256 <= sa.spi < (1 << 32):  # SPIs 1-255 are reserved (RFC 4302 §2.4)
        raise BackendError(f"invalid SPI {sa.spi:#x}")
    if sa.encapsulated:
        raise BackendError("AH cannot be UDP-encapsulated (RFC 3948 is for ESP only)")
    if sa.src.version != sa.dst.version:
        raise BackendError(f"AH SA {sa.src} -> {sa.dst} mixes IPv4 and IPv6")
    if sa.direction == "in":
        return InboundAH(sa, on_expire)
    return OutboundAH(sa, on_expire)
