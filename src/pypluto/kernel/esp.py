"""ESP packet processing (RFC 4303), free of sockets and devices.

One :class:`OutboundSA` turns an IP packet into an ESP packet (the bytes that
follow the UDP header in ESP-in-UDP, RFC 3948 §2.2); one :class:`InboundSA`
does the reverse, with the anti-replay window of RFC 4303 §3.4.3 and the
extended sequence numbers of RFC 4303 §2.2.1 / Appendix A.

Tunnel mode (RFC 4303 §3.1.2) carries the whole inner packet, next header 4
(IPv4) or 41 (IPv6).  Transport mode (§3.1.1) carries the upper-layer payload;
the receiver rebuilds an IP header from the SA's addresses (no extension
headers, no NAT checksum fix-up of RFC 3948 §3.1.2).

Algorithms: AES-GCM with 8/12/16-byte ICV (RFC 4106), ChaCha20-Poly1305
(RFC 7634), AES-CCM (RFC 4309), AES-GMAC (RFC 4543), AES-CBC (RFC 3602),
AES-CTR (RFC 3686), NULL encryption (RFC 2410) with HMAC-SHA1-96 (RFC 2404),
HMAC-SHA2-256/384/512 (RFC 4868), AES-XCBC-96 (RFC 3566) or AES-CMAC-96
(RFC 4494).  Whether a weak algorithm may be used is the configuration's
decision; the plane carries what was negotiated.

Bad input never raises: :meth:`InboundSA.decap` returns None and counts why.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag

from pypluto.crypto import ciphers, registry
from pypluto.crypto.errors import CryptoError
from pypluto.iana import Encr, Integ
from pypluto.kernel.base import BackendError
from pypluto.kernel.seqnum import infer_seq
from pypluto.params import SAExpire, SAParams, SAStats

__all__ = [
    "InboundSA",
    "OutboundSA",
    "SEQ_SOFT_FRACTION",
    "make_sa",
    "next_header_of",
]

NH_IPV4 = 4  # IANA protocol numbers used as ESP next header (RFC 4303 §2.7)
NH_IPV6 = 41
NH_NONE = 59  # "no next header": a dummy packet (RFC 4303 §2.6), dropped

SEQ_SOFT_FRACTION = 15 / 16  # signal "rekey soon" when this much of the space is used

_HDR = struct.Struct("!II")  # SPI, low 32 bits of the sequence number (RFC 4303 §2.1, §2.2)
_ESN_AAD = struct.Struct("!III")  # SPI, high and low 32 bits (RFC 4106 §5, RFC 7634 §2.1)
_Q = struct.Struct("!Q")
_now = time.monotonic
_I = struct.Struct("!I")


def inner_length(plain: bytes, v: int) -> int:
    """The length of the inner IP packet at the start of ``plain`` by its own header
    (IPv4 total length, IPv6 40 + payload length).  A tunnel-mode sender may put TFC
    padding after it (RFC 4303 §2.7); the receiver cuts the packet there.

    -1 when there is no such header: shorter than one, or (IPv4) a header length
    below 20 bytes or beyond the total length (RFC 791 §3.1), which no checked
    packet has (the selector check's verdicts are cached by addresses)."""
    if v == 4:
        if len(plain) < 20:
            return -1
        tl = plain[2] << 8 | plain[3]
        return tl if 20 <= (plain[0] & 0x0F) * 4 <= tl else -1
    return 40 + (plain[4] << 8 | plain[5]) if len(plain) >= 40 else -1


# ---------------------------------------------------------------------------
# transforms: seal/open one ESP payload
# ---------------------------------------------------------------------------


class _Transform(Protocol):
    iv_size: int
    icv_size: int
    block: int

    def seal(self, seq: int, aad: bytes, icv_tail: bytes, payload: bytes) -> bytes: ...

    def open(self, aad: bytes, icv_tail: bytes, body: memoryview) -> bytes | None: ...


class _AEAD:
    """AES-GCM-16 (RFC 4106) and ChaCha20-Poly1305 (RFC 7634).

    Nonce = 4-byte salt ‖ 8-byte IV; the IV is the 64-bit sequence number,
    unique per key as RFC 4106 §3.1 and RFC 7634 §2 require.  AAD is SPI ‖
    sequence number, 32 or 64 bits (RFC 4106 §5, RFC 7634 §2.1).

    The cipher object (the same kind as the IKE SK payload's; its OpenSSL
    contexts take about 2.5 KB) is built on the first packet, so an idle SA
    holds only its key (the SAParams' own bytes, not a copy).
    """

    __slots__ = ("_encr_id", "_key", "_salt", "icv_size", "_raw")
    iv_size = 8
    block = 4

    def __init__(self, encr_id: int, key_with_salt: bytes, icv_size: int,
                 salt_size: int = 4) -> None:
        self._encr_id = encr_id
        self._key = key_with_salt
        self._salt = key_with_salt[len(key_with_salt) - salt_size:]
        self.icv_size = icv_size
        self._raw: tuple[ciphers.AeadFn, ciphers.AeadFn] | None = None

    def raw(self) -> tuple[ciphers.AeadFn, ciphers.AeadFn]:
        """cryptography's bound (encrypt, decrypt) taking the full nonce, built on first use."""
        r = self._raw
        if r is None:
            r = self._raw = ciphers.make_aead(self._encr_id, self._key).raw
        return r

    @property
    def encrypt(self) -> ciphers.AeadFn:
        return self.raw()[0]

    @property
    def decrypt(self) -> ciphers.AeadFn:
        return self.raw()[1]

    def seal(self, seq: int, aad: bytes, icv_tail: bytes, payload: bytes) -> bytes:
        iv = _Q.pack(seq)
        return iv + (self._raw or self.raw())[0](self._salt + iv, payload, aad)

    def open(self, aad: bytes, icv_tail: bytes, body: memoryview) -> bytes | None:
        try:
            return (self._raw or self.raw())[1](self._salt + body[:8], body[8:], aad)
        except (InvalidTag, ValueError):
            return None


class _SharedAEAD:
    """Any other AEAD from :mod:`pypluto.crypto.ciphers`: AES-GCM with 8/12-byte ICV
    (RFC 4106 §6), AES-CCM (RFC 4309), AES-GMAC (RFC 4543).  IV = sequence number.

    ENCR_NULL_AUTH_AES_GMAC authenticates the IV too: its AAD is SPI ‖ sequence
    number ‖ IV, then the payload (RFC 4543 §3.3, as Linux's rfc4543 template)."""

    __slots__ = ("_aead", "icv_size", "_iv_in_aad")
    iv_size = 8
    block = 4

    def __init__(self, aead: ciphers.Aead) -> None:
        self._aead = aead
        self.icv_size = aead.icv_size
        self._iv_in_aad = aead.encr_id == Encr.NULL_AUTH_AES_GMAC

    def seal(self, seq: int, aad: bytes, icv_tail: bytes, payload: bytes) -> bytes:
        iv = _Q.pack(seq)
        return iv + self._aead.seal(iv, payload, aad + iv if self._iv_in_aad else aad)

    def open(self, aad: bytes, icv_tail: bytes, body: memoryview) -> bytes | None:
        iv = bytes(body[:8])
        try:
            return self._aead.open(iv, bytes(body[8:]), aad + iv if self._iv_in_aad else aad)
        except CryptoError:
            return None


class _EncThenMAC:
    """A cipher plus an integrity transform from :mod:`pypluto.crypto.ciphers`
    (RFC 4303 §3.3.2: ICV over SPI ‖ seq ‖ IV ‖ ciphertext).

    With ESN the high 32 bits of the sequence number are appended to the
    authenticated data but not sent (RFC 4303 §2.2.1).
    """

    __slots__ = ("_c", "_integ", "_cbc", "icv_size", "iv_size", "block")

    def __init__(self, cipher: ciphers.BlockCipher, integ: ciphers.Integ) -> None:
        self._c = cipher
        self._integ = integ
        self._cbc = cipher.iv_size == cipher.block_size and cipher.block_size > 1
        self.icv_size = integ.icv_size
        self.iv_size = cipher.iv_size
        self.block = max(4, cipher.block_size)

    def seal(self, seq: int, aad: bytes, icv_tail: bytes, payload: bytes) -> bytes:
        if self._cbc:
            iv = os.urandom(self.iv_size)  # RFC 3602 §2.3: unpredictable
        elif self.iv_size:
            iv = _Q.pack(seq)  # RFC 3686 §3.1: unique per key
        else:
            iv = b""
        body = iv + self._c.encrypt(iv, payload)
        return body + self._integ.mac(aad + body + icv_tail)

    def open(self, aad: bytes, icv_tail: bytes, body: memoryview) -> bytes | None:
        n = self.icv_size
        data = bytes(body)
        if len(data) < n + self.iv_size:
            return None
        if not self._integ.verify(aad + data[:-n] + icv_tail, data[-n:]):
            return None
        ivn = self.iv_size
        try:
            return self._c.decrypt(data[:ivn], data[ivn:-n])
        except CryptoError:
            return None


_AEAD_BUILDABLE: set[tuple[int, int]] = set()
"""(ENCR ID, key‖salt length) of the fast-path AEADs that cryptography has built here."""


def _make_transform(sa: SAParams) -> _Transform:
    """The transform for the SA's negotiated ENCR/INTEG IDs (registry.Encr / Integ).

    Every transform comes from :mod:`pypluto.crypto.ciphers`, the objects that
    also protect the IKE SK payload; for AES-GCM-16 and ChaCha20-Poly1305 the
    per-packet fast path calls the cipher's bound ``raw`` seal/open directly.
    """
    enc = registry.get(registry.TransformType.ENCR, sa.encr_id)
    if enc is None:
        raise BackendError(f"unknown ESP encryption transform {sa.encr_id}")
    key = sa.encr_key
    salt_n = enc.salt_size
    if enc.key_bits:
        bits = sa.encr_key_bits or (len(key) - salt_n) * 8
        if bits not in enc.key_bits or len(key) != bits // 8 + salt_n:
            raise BackendError(f"{enc.iana_name}: bad key length {len(key)} bytes")
    elif len(key) != enc.key_size + salt_n:
        raise BackendError(f"{enc.iana_name}: bad key length {len(key)} bytes")
    try:
        if enc.aead:
            if sa.integ_id not in (0,):
                raise BackendError("an AEAD cipher takes no integrity transform")
            if sa.encr_id in (Encr.AES_GCM_16, Encr.CHACHA20_POLY1305):
                # built once per (transform, key length) to refuse what cryptography
                # cannot do, not on the first packet; then dropped until that packet
                # (see _AEAD).  Whether it can depends on the transform and the key's
                # length, never on the key's bytes: a second SA of the same kind does
                # not build (and free) the OpenSSL context again (issue 18)
                kind = (sa.encr_id, len(key))
                if kind not in _AEAD_BUILDABLE:
                    ciphers.make_aead(sa.encr_id, key)
                    _AEAD_BUILDABLE.add(kind)
                return _AEAD(sa.encr_id, key, enc.icv_size, salt_n)
            return _SharedAEAD(ciphers.make_aead(sa.encr_id, key))
        integ = registry.get(registry.TransformType.INTEG, sa.integ_id)
        if integ is None or sa.integ_id == Integ.NONE:
            raise BackendError(f"ESP integrity transform {sa.integ_id} is not supported")
        return _EncThenMAC(ciphers.make_cipher(sa.encr_id, key),
                           ciphers.make_integ(sa.integ_id, sa.integ_key, sa.integ_trunc_bits))
    except CryptoError as e:  # UnsupportedAlgorithm is a CryptoError too
        raise BackendError(f"ESP transform: {e}") from None


def _trailers(block: int) -> dict[int, list[bytes]]:
    """Padding ‖ pad length ‖ next header for every pad length (RFC 4303 §2.4-2.6).

    Padding bytes are 1, 2, 3, ... as §2.4 prescribes by default.
    """
    out: dict[int, list[bytes]] = {}
    for nh in range(256):
        out[nh] = [bytes(range(1, p + 1)) + bytes((p, nh)) for p in range(block)]
    return out


_PADS = [bytes(range(1, p + 1)) for p in range(256)]
_TRAILERS: dict[int, dict[int, list[bytes]]] = {}


def next_header_of(packet: bytes | memoryview) -> int:
    """ESP next header for a tunnel-mode inner packet: 4 for IPv4, 41 for IPv6, 0 if neither."""
    if not packet:
        return 0
    v = packet[0] >> 4
    return NH_IPV4 if v == 4 else NH_IPV6 if v == 6 else 0


def _checksum(hdr: bytes) -> int:
    """The IPv4 header checksum (RFC 791)."""
    s = sum(struct.unpack(f"!{len(hdr) // 2}H", hdr))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


_INF = 1 << 62  # "no limit" (one shared int, not one per SA)
_SEQ_MAX = {False: (1 << 32) - 1, True: (1 << 64) - 1}  # by ESN (RFC 4303 §2.2.1)
_SEQ_SOFT = {esn: int(m * SEQ_SOFT_FRACTION) for esn, m in _SEQ_MAX.items()}


class _SABase:
    # slots, not a dict: 10,000 IKE+Child pairs hold 20,000 of these (issue 18)
    __slots__ = ("params", "spi", "spi_bytes", "esn", "tunnel", "t", "stats", "malformed",
                 "on_expire", "dead", "created", "_soft_b", "_hard_b", "_soft_p", "_hard_p",
                 "_soft_fired", "_lim_b", "_lim_p", "_salt")

    @property
    def policy_drops(self) -> int:
        """Inner packets outside the SA's selectors (``stats.selector_drops``)."""
        return self.stats.selector_drops or 0

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None) -> None:
        self.params = sa
        self.spi = sa.spi
        self.spi_bytes = _I.pack(sa.spi)
        self.esn = sa.esn
        self.tunnel = sa.mode == "tunnel"
        self.t = _make_transform(sa)
        self.stats = SAStats(selector_drops=0)  # counted here (RFC 4301 §5.2 step 4)
        self.malformed = 0  # short, bad padding, wrong inner protocol
        self.on_expire = on_expire
        self.dead = False  # hard limit reached: the SA carries nothing more
        self.created = time.monotonic()
        inf = _INF
        self._soft_b = sa.soft_bytes or inf
        self._hard_b = sa.hard_bytes or inf
        self._soft_p = sa.soft_packets or inf
        self._hard_p = sa.hard_packets or inf
        self._soft_fired = False
        self._lim_b = min(self._soft_b, self._hard_b)
        self._lim_p = min(self._soft_p, self._hard_p)

    def _fire(self, hard: bool, reason: str) -> None:
        if hard:
            self.dead = True
        if self.on_expire is not None:
            p = self.params
            try:
                self.on_expire(SAExpire(p.dst, p.spi, p.protocol, hard, reason))  # type: ignore[arg-type]
            except Exception:  # noqa: BLE001 - the data plane never dies for a callback
                pass

    def _limits(self) -> None:
        """Called when a byte or packet counter reached the next limit (RFC 4301 §4.4.2.1)."""
        s = self.stats
        if s.bytes >= self._hard_b or s.packets >= self._hard_p:
            if not self.dead:
                self._fire(True, "bytes" if s.bytes >= self._hard_b else "packets")
            self._lim_b = self._lim_p = _INF
            return
        if not self._soft_fired:
            self._soft_fired = True
            self._fire(False, "bytes" if s.bytes >= self._soft_b else "packets")
        self._lim_b, self._lim_p = self._hard_b, self._hard_p


class OutboundSA(_SABase):
    """The sending half of one ESP SA (RFC 4303 §3.1-3.3)."""

    __slots__ = ("seq", "seq_max", "seq_soft", "seq_exhausted", "_tr", "_mask", "_fast",
                 "_aead_encrypt", "_tr4", "_tr6", "tfc", "_frags")

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None) -> None:
        super().__init__(sa, on_expire)
        self.seq = 0  # last sequence number sent; the first packet carries 1 (§3.3.3)
        self.seq_max = _SEQ_MAX[bool(sa.esn)]
        self.seq_soft = _SEQ_SOFT[bool(sa.esn)]
        self.seq_exhausted = 0  # packets refused because the counter would cycle
        blk = self.t.block
        if blk not in _TRAILERS:
            _TRAILERS[blk] = _trailers(blk)
        self._tr = _TRAILERS[blk]
        self._mask = blk - 1  # blocks are powers of two
        self._fast = False
        # tfc=: inner packets shorter than this get TFC padding up to it (RFC 4303 §2.7;
        # tunnel mode only: the receiver finds the end by the inner IP header)
        self.tfc = sa.tfc_pad if self.tunnel else 0
        # transport mode: IPv4 datagrams being put together from their fragments (_whole)
        self._frags: dict[bytes, list[bytes | int]] | None = None
        t = self.t
        if isinstance(t, _AEAD) and self.tunnel and not self.tfc:  # 32/64-bit sequence numbers
            self._aead_encrypt = self._first_encrypt  # the cipher comes with the first packet
            self._salt = t._salt
            self._tr4 = self._tr[NH_IPV4]
            self._tr6 = self._tr[NH_IPV6]
            self.__class__ = _AeadOutboundSA  # encap = _encap_aead
            self._fast = True

    def _first_encrypt(self, nonce: bytes, data: ciphers.BytesLike,
                       aad: ciphers.BytesLike | None) -> bytes:
        """The fast path's first packet: build the cipher (see :class:`_AEAD`), keep its
        bound encrypt for the next ones."""
        enc = self._aead_encrypt = self.t.encrypt  # type: ignore[attr-defined]
        return enc(nonce, data, aad)

    def _encap_aead(self, packet: bytes) -> bytes | None:
        """:meth:`encap` for AES-GCM-16 / ChaCha20-Poly1305, tunnel mode.

        With ESN the AAD is SPI ‖ high ‖ low 32 bits of the sequence number, of
        which only SPI ‖ low go on the wire (RFC 4106 §5, RFC 7634 §2.1)."""
        seq = self.seq + 1
        if seq >= self.seq_soft or self.dead:
            return self._encap(packet)
        n = len(packet)
        if n == 0:
            self.malformed += 1
            return None
        v = packet[0] >> 4
        if v == 4:
            tr = self._tr4
        elif v == 6:
            tr = self._tr6
        else:
            self.malformed += 1
            return None
        self.seq = seq
        if self.esn:
            hdr = _HDR.pack(self.spi, seq & 0xFFFFFFFF)
            aad = _ESN_AAD.pack(self.spi, seq >> 32, seq & 0xFFFFFFFF)
        else:
            hdr = aad = _HDR.pack(self.spi, seq)
        iv = _Q.pack(seq)
        body = self._aead_encrypt(self._salt + iv, packet + tr[(-(n + 2)) & 3], aad)
        st = self.stats
        st.bytes += n
        st.packets += 1
        st.last_used = _now()
        if st.bytes >= self._lim_b or st.packets >= self._lim_p:
            self._limits()
        return hdr + iv + body

    def encap_batch(self, packets: list[bytes]) -> list[bytes]:
        """:meth:`encap` for several packets (a TUN drain's run for one SA, or the
        segments of one TCP super-packet).

        On the AES-GCM-16 / ChaCha20-Poly1305 tunnel fast path the counters are
        updated once per batch; near any limit it falls back to :meth:`encap`.
        With ESN the AAD is SPI ‖ high ‖ low 32 bits, only SPI ‖ low on the wire
        (RFC 4303 §2.2.1, RFC 4106 §5, RFC 7634 §2.1).
        """
        n = len(packets)
        st = self.stats
        if (not self._fast or self.dead
                or self.seq + n >= self.seq_soft or st.packets + n >= self._lim_p
                or st.bytes + 65536 * n >= self._lim_b):
            return [w for w in map(self.encap, packets) if w is not None]
        seq = self.seq
        spi = self.spi
        hpack = _HDR.pack
        apack = _ESN_AAD.pack
        qpack = _Q.pack
        enc = self._aead_encrypt
        salt = self._salt
        tr4, tr6 = self._tr4, self._tr6
        esn = self.esn
        out: list[bytes] = []
        append = out.append
        nbytes = 0
        for p in packets:
            ln = len(p)
            v = p[0] >> 4 if ln else 0
            if v == 4:
                tr = tr4
            elif v == 6:
                tr = tr6
            else:
                self.malformed += 1
                continue
            seq += 1
            lo = seq & 0xFFFFFFFF
            hdr = hpack(spi, lo)
            iv = qpack(seq)
            append(hdr + iv + enc(salt + iv, p + tr[(-(ln + 2)) & 3],
                                  apack(spi, seq >> 32, lo) if esn else hdr))
            nbytes += ln
        self.seq = seq
        st.bytes += nbytes
        st.packets += len(out)
        st.last_used = _now()
        return out

    def encap(self, packet: bytes | memoryview) -> bytes | None:
        """The ESP packet (SPI ‖ seq ‖ IV ‖ ciphertext ‖ ICV) for one IP packet.

        Returns None (and counts) when the packet cannot be sent: the SA is
        dead, the sequence number space is exhausted (RFC 4303 §3.3.3), or
        the packet is not IPv4/IPv6.
        """
        return self._encap(packet)

    def _encap(self, packet: bytes | memoryview) -> bytes | None:
        """The ESP packet (SPI ‖ seq ‖ IV ‖ ciphertext ‖ ICV) for one IP packet.

        Returns None (and counts) when the packet cannot be sent: the SA is
        dead, the sequence number space is exhausted (RFC 4303 §3.3.3), or
        the packet is not IPv4/IPv6.
        """
        if self.dead:
            return None
        seq = self.seq + 1
        if seq > self.seq_max:
            self.seq_exhausted += 1
            if not self.dead:
                self._fire(True, "seq")
            return None
        n = len(packet)
        if n == 0:
            self.malformed += 1
            return None
        v = packet[0] >> 4
        if self.tunnel:
            nh = NH_IPV4 if v == 4 else NH_IPV6 if v == 6 else 0
            payload = packet
            if n < self.tfc:
                payload = bytes(packet) + bytes(self.tfc - n)
        else:
            if v == 4 and n >= 20 and (packet[6] & 0x3F or packet[7]):
                whole = self._whole(packet)
                if whole is None:
                    return None
                packet, n = whole, len(whole)
            payload, nh = _strip_ip(packet)
        if not nh:
            self.malformed += 1
            return None
        self.seq = seq
        if seq == self.seq_soft:  # once: on the packet that takes this number
            self._fire(False, "seq")
        plen = len(payload)
        trailer = self._tr[nh][(-(plen + 2)) & self._mask]
        lo = seq & 0xFFFFFFFF
        hdr = _HDR.pack(self.spi, lo)
        if self.esn:
            hi = _I.pack(seq >> 32)
            t = self.t
            if isinstance(t, _EncThenMAC):
                body = t.seal(seq, hdr, hi, bytes(payload) + trailer)
            else:  # AEAD: AAD = SPI ‖ 64-bit ESN (RFC 4106 §5, RFC 7634 §2.1)
                body = t.seal(seq, self.spi_bytes + hi + hdr[4:], b"", bytes(payload) + trailer)
        else:
            body = self.t.seal(seq, hdr, b"", bytes(payload) + trailer)
        st = self.stats
        st.bytes += n
        st.packets += 1
        st.last_used = _now()
        if st.bytes >= self._lim_b or st.packets >= self._lim_p:
            self._limits()
        return hdr + body

    def _whole(self, frag: bytes | memoryview) -> bytes | None:
        """Transport mode applies ESP to whole IP datagrams only (RFC 4303 §3.3.4): the
        kernel cut an IPv4 datagram larger than the route's MTU before the TUN device,
        and ESP of each fragment would lose the fragment fields with the IP header (the
        receiver took each piece for a whole datagram).  The fragments of a datagram
        are kept until the last one and the datagram is returned whole (its ESP packet
        is fragmented on the way out instead, as XFRM does); None while incomplete.
        The local kernel sends them in order: one out of order (a gap, an overlap, a
        datagram without its first fragment) drops the datagram, counted as malformed.
        At most ``_FRAG_PENDING`` datagrams are kept."""
        ihl = (frag[0] & 0x0F) * 4
        if ihl < 20 or len(frag) < ihl:
            self.malformed += 1
            return None
        key = bytes(frag[4:6]) + bytes(frag[9:10]) + bytes(frag[12:20])
        off = ((frag[6] & 0x1F) << 8 | frag[7]) * 8
        pending = self._frags
        if pending is None:
            pending = self._frags = {}
        if off == 0:
            if key not in pending and len(pending) >= _FRAG_PENDING:
                self.malformed += 1
                pending.pop(next(iter(pending)))
            pending[key] = [bytes(frag), len(frag) - ihl]
            return None
        got = pending.get(key)
        if got is None or got[1] != off or off + len(frag) > 65535:  # RFC 791 §3.1
            pending.pop(key, None)
            self.malformed += 1
            return None
        got.append(bytes(frag[ihl:]))
        got[1] = off + len(frag) - ihl  # type: ignore[operator]
        if frag[6] & 0x20:  # more fragments
            return None
        del pending[key]
        return b"".join(p for p in got if isinstance(p, bytes))


_FRAG_PENDING = 16  # IPv4 datagrams a transport-mode SA puts together at once (_whole)


def _strip_ip(packet: bytes | memoryview) -> tuple[bytes | memoryview, int]:
    """Transport mode: the upper-layer payload and its protocol (RFC 4303 §3.1.1)."""
    v = packet[0] >> 4
    if v == 4 and len(packet) >= 20:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or len(packet) < ihl:
            return packet, 0
        return packet[ihl:], packet[9]
    if v == 6 and len(packet) >= 40:
        return packet[40:], packet[6]
    return packet, 0


class InboundSA(_SABase):
    """The receiving half of one ESP SA with its anti-replay window (RFC 4303 §3.4)."""

    __slots__ = ("window", "top", "bitmap", "_wmask", "_infer_w", "_min_len", "_v4",
                 "_src_b", "_dst_b", "selector_check", "_aead_decrypt")

    def __init__(self, sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None) -> None:
        super().__init__(sa, on_expire)
        self.window = max(0, sa.replay_window)
        self.top = 0  # highest sequence number authenticated so far (64-bit with ESN)
        self.bitmap = 0  # bit i set: top - i was received
        self._wmask = (1 << self.window) - 1 if self.window else 0
        # ESN needs a window to infer the high bits even with replay checks off
        self._infer_w = self.window or 64
        t = self.t
        self._min_len = 8 + t.iv_size + t.icv_size + (t.block if t.block > 4 else 4)
        src, dst = sa.src, sa.dst
        self._v4 = src.version == 4
        self._src_b = src.packed
        self._dst_b = dst.packed
        self.selector_check: Callable[[bytes], bool] | None = None
        if isinstance(t, _AEAD) and self.tunnel and self.window:  # with or without ESN
            self._aead_decrypt = self._first_decrypt  # the cipher comes with the first packet
            self._salt = t._salt
            self.__class__ = _AeadInboundSA  # decap = _decap_aead

    def _first_decrypt(self, nonce: bytes | memoryview, data: ciphers.BytesLike,
                       aad: ciphers.BytesLike | None) -> bytes:
        """The fast path's first packet: build the cipher (see :class:`_AEAD`), keep its
        bound decrypt for the next ones."""
        dec = self._aead_decrypt = self.t.decrypt  # type: ignore[attr-defined]
        return dec(nonce, data, aad)  # type: ignore[arg-type]

    def _decap_aead(self, data: bytes | memoryview) -> bytes | None:
        """:meth:`decap` for AES-GCM-16 / ChaCha20-Poly1305, tunnel mode, with a replay
        window; with ESN the high bits are inferred (RFC 4303 Appendix A2.2) and
        authenticated as SPI ‖ high ‖ low (RFC 4106 §5)."""
        mv = memoryview(data)
        n = len(mv)
        if n < self._min_len or self.dead:
            return self._decap(data)
        lo = _I.unpack_from(mv, 4)[0]
        if self.esn:
            seq = self._infer(lo)
            aad: bytes | memoryview = _ESN_AAD.pack(self.spi, seq >> 32, lo)
        else:
            seq = lo
            aad = mv[:8]
        top = self.top
        st = self.stats
        if seq <= top:
            d = top - seq
            if seq == 0 or d >= self.window or (self.bitmap >> d) & 1:
                st.replay_drops += 1
                return None
        try:
            plain = self._aead_decrypt(self._salt + mv[8:16], mv[16:], aad)
        except (InvalidTag, ValueError):
            st.integrity_failures += 1
            return None
        if seq > top:
            d = seq - top
            self.bitmap = ((self.bitmap << d) | 1) & self._wmask if d < self.window else 1
            self.top = seq
        else:
            self.bitmap |= 1 << (top - seq)
        ln = len(plain)
        pad = plain[-2] if ln >= 2 else 255
        end = ln - 2 - pad
        if end < 0 or plain[end:ln - 2] != _PADS[pad]:
            self.malformed += 1
            return None
        nh = plain[-1]
        if nh == NH_NONE:  # dummy packet (RFC 4303 §2.6)
            return None
        v = plain[0] >> 4 if end else 0
        if not ((nh == NH_IPV4 and v == 4) or (nh == NH_IPV6 and v == 6)):
            self.malformed += 1
            return None
        tl = inner_length(plain, v)
        if tl != end:  # TFC padding after the packet (RFC 4303 §2.7), or a lie
            if not 20 <= tl < end:
                self.malformed += 1
                return None
            end = tl
        inner = plain[:end]
        chk = self.selector_check
        if chk is not None and not chk(inner):
            st.selector_drops = (st.selector_drops or 0) + 1
            return None
        st.bytes += end
        st.packets += 1
        st.last_used = _now()
        if st.bytes >= self._lim_b or st.packets >= self._lim_p:
            self._limits()
        return inner

    def decap_batch(self, datas: list[memoryview]) -> list[bytes]:
        """:meth:`decap` for several ESP packets of this SA (one receive batch); the
        inner packets that pass, in order.

        On the AES-GCM-16 / ChaCha20-Poly1305 tunnel fast path the window and the
        counters live in locals for the batch; every check of :meth:`_decap_aead`
        is made per packet in the same order (length, replay, ICV, window update,
        padding, next header, selectors: RFC 4303 §3.4).  Near a byte or packet
        limit, when dead, or off the fast path, it is :meth:`decap` per packet.
        """
        n = len(datas)
        st = self.stats
        if (self.__class__ is not _AeadInboundSA or self.dead
                or st.packets + n >= self._lim_p or st.bytes + 65536 * n >= self._lim_b):
            return [x for x in map(self.decap, datas) if x is not None]
        out: list[bytes] = []
        append = out.append
        unpack = _I.unpack_from
        apack = _ESN_AAD.pack
        infer = infer_seq
        dec = self._aead_decrypt
        salt = self._salt
        spi = self.spi
        esn = self.esn
        w = self.window
        wmask = self._wmask
        min_len = self._min_len
        chk = self.selector_check
        pads = _PADS
        ilen = inner_length
        top, bitmap = self.top, self.bitmap
        nbytes = replay = bad = malformed = sel = 0
        for mv in datas:
            if len(mv) < min_len:
                malformed += 1
                continue
            lo = unpack(mv, 4)[0]
            if esn:  # RFC 4303 Appendix A2.2, from the window in locals
                seq = infer(top, w, lo)
                aad: bytes | memoryview = apack(spi, seq >> 32, lo)
            else:
                seq = lo
                aad = mv[:8]
            if seq <= top:
                d = top - seq
                if seq == 0 or d >= w or (bitmap >> d) & 1:
                    replay += 1
                    continue
            try:
                plain = dec(salt + mv[8:16], mv[16:], aad)
            except (InvalidTag, ValueError):
                bad += 1
                continue
            if seq > top:
                d = seq - top
                bitmap = ((bitmap << d) | 1) & wmask if d < w else 1
                top = seq
            else:
                bitmap |= 1 << (top - seq)
            ln = len(plain)
            pad = plain[-2] if ln >= 2 else 255
            end = ln - 2 - pad
            if end < 0 or plain[end:ln - 2] != pads[pad]:
                malformed += 1
                continue
            nh = plain[-1]
            if nh == NH_NONE:  # dummy packet (RFC 4303 §2.6)
                continue
            v = plain[0] >> 4 if end else 0
            if not ((nh == NH_IPV4 and v == 4) or (nh == NH_IPV6 and v == 6)):
                malformed += 1
                continue
            tl = ilen(plain, v)
            if tl != end:  # TFC padding after the packet (RFC 4303 §2.7), or a lie
                if not 20 <= tl < end:
                    malformed += 1
                    continue
                end = tl
            inner = plain[:end]
            if chk is not None and not chk(inner):
                sel += 1
                continue
            nbytes += end
            append(inner)
        self.top, self.bitmap = top, bitmap
        if malformed:
            self.malformed += malformed
        if replay:
            st.replay_drops += replay
        if bad:
            st.integrity_failures += bad
        if sel:
            st.selector_drops = (st.selector_drops or 0) + sel
        if out:
            st.bytes += nbytes
            st.packets += len(out)
            st.last_used = _now()
        return out

    def _infer(self, lo: int) -> int:
        """The full sequence number for the low 32 bits received (RFC 4303 Appendix A2.2)."""
        return infer_seq(self.top, self._infer_w, lo)

    def decap(self, data: bytes | memoryview) -> bytes | None:
        """The inner IP packet of one ESP packet (SPI first), or None when dropped."""
        return self._decap(data)

    def _decap(self, data: bytes | memoryview) -> bytes | None:
        """The inner IP packet of one ESP packet (SPI first), or None when dropped.

        Order of checks follows RFC 4303 §3.4: length, replay (§3.4.3),
        integrity (§3.4.4), then the window update, decryption, padding and
        next header (§3.4.4.1), and the inner selectors (RFC 4301 §5.2 step 4;
        in transport mode on the rebuilt packet, so protocol and ports are checked
        there too).
        """
        st = self.stats
        mv = memoryview(data)
        n = len(mv)
        if n < self._min_len or self.dead:
            self.malformed += 1
            return None
        lo = _I.unpack_from(mv, 4)[0]
        if self.esn:
            seq = self._infer(lo)
        else:
            seq = lo
        w = self.window
        if w:
            if seq == 0:
                st.replay_drops += 1
                return None
            top = self.top
            if seq <= top:
                d = top - seq
                if d >= w or (self.bitmap >> d) & 1:
                    st.replay_drops += 1
                    return None
        t = self.t
        if self.esn:
            hi = _I.pack(seq >> 32)
            if isinstance(t, _EncThenMAC):
                plain = t.open(bytes(mv[:8]), hi, mv[8:])
            else:
                plain = t.open(bytes(mv[:4]) + hi + bytes(mv[4:8]), b"", mv[8:])
        else:
            plain = t.open(bytes(mv[:8]), b"", mv[8:])
        if plain is None:
            st.integrity_failures += 1
            return None
        # authenticated: advance the window (§3.4.3)
        if w:
            top = self.top
            if seq > top:
                d = seq - top
                self.bitmap = ((self.bitmap << d) | 1) & self._wmask if d < w else 1
                self.top = seq
            else:
                self.bitmap |= 1 << (top - seq)
        elif seq > self.top:
            self.top = seq
        ln = len(plain)
        if ln < 2:
            self.malformed += 1
            return None
        pad = plain[-2]
        nh = plain[-1]
        end = ln - 2 - pad
        if end < 0 or plain[end:ln - 2] != _PADS[pad]:  # §2.4 default padding
            self.malformed += 1
            return None
        if nh == NH_NONE:  # dummy packet (§2.6): discard silently
            return None
        if self.tunnel:
            if nh != NH_IPV4 and nh != NH_IPV6:
                self.malformed += 1
                return None
            inner = plain[:end] if end != ln else plain
            v = 4 if nh == NH_IPV4 else 6
            if not inner or (inner[0] >> 4) != v:
                self.malformed += 1
                return None
            tl = inner_length(inner, v)
            if tl != end:  # TFC padding after the packet (RFC 4303 §2.7), or a lie
                if not 20 <= tl < end:
                    self.malformed += 1
                    return None
                inner = inner[:tl]
        else:
            inner = self._rebuild(plain[:end], nh)
        chk = self.selector_check
        if chk is not None and not chk(inner):
            st.selector_drops = (st.selector_drops or 0) + 1
            return None
        st.bytes += len(inner)
        st.packets += 1
        st.last_used = _now()
        if st.bytes >= self._lim_b or st.packets >= self._lim_p:
            self._limits()
        return inner

    def _rebuild(self, payload: bytes, nh: int) -> bytes:
        """Transport mode: an IP header from the SA's addresses (RFC 4303 §3.1.1)."""
        n = len(payload)
        if self._v4:
            h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + n, 0, 0x4000, 64, nh, 0,
                            self._src_b, self._dst_b)
            return h[:10] + struct.pack("!H", _checksum(h)) + h[12:] + payload
        h6 = struct.pack("!IHBB16s16s", 6 << 28, n, nh, 64, self._src_b, self._dst_b)
        return h6 + payload


class _AeadOutboundSA(OutboundSA):
    """An OutboundSA on the AES-GCM-16 / ChaCha20-Poly1305 tunnel fast path."""

    __slots__ = ()
    encap = OutboundSA._encap_aead  # type: ignore[assignment]


class _AeadInboundSA(InboundSA):
    """An InboundSA on the AES-GCM-16 / ChaCha20-Poly1305 tunnel fast path."""

    __slots__ = ()
    decap = InboundSA._decap_aead


def inner_mtu(osa: OutboundSA, path_mtu: int) -> int:
    """The largest inner IP packet one ESP packet of ``osa`` carries within ``path_mtu``
    bytes (the path to the peer), as XFRM sizes its route for an SA.

    The outer packet is the outer IP header (tunnel mode; minimal: 20 or 40 bytes),
    UDP (RFC 3948, when encapsulated), SPI and sequence number, the IV, the payload
    and its trailer rounded up to the cipher's block (RFC 4303 §2.4: at least the two
    bytes of pad length and next header), and the ICV.  In transport mode the inner
    packet's own header stays in front (taken as minimal) and only the rest is
    padded."""
    p = osa.params
    t = osa.t
    hdr = 20 if p.dst.version == 4 else 40
    budget = path_mtu - (8 if p.encap_dport is not None else 0) - 8 - t.iv_size - t.icv_size
    blk = max(4, t.block)
    if osa.tunnel:
        return (budget - hdr) // blk * blk - 2
    return hdr + (budget - hdr) // blk * blk - 2


def make_sa(sa: SAParams, on_expire: Callable[[SAExpire], None] | None = None
            ) -> InboundSA | OutboundSA:
    """The processing state for one SAParams (raises BackendError for what we cannot do)."""
    if sa.protocol != "esp":
        raise BackendError("the userspace data plane does ESP only, not AH")
    if not 0 < sa.spi < (1 << 32) or sa.spi < 256:  # SPIs 1-255 are reserved (§2.1)
        raise BackendError(f"invalid SPI {sa.spi:#x}")
    if sa.direction == "in":
        return InboundSA(sa, on_expire)
    return OutboundSA(sa, on_expire)
