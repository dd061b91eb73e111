"""Target (c): ESP decapsulation (``pypluto.kernel.esp.InboundSA``, RFC 4303 §3.4).

Most random bytes die at the integrity check, so an input is a list of
records, each either a raw packet (tests the checks before integrity) or a
plaintext that the target seals with the SA's real keys (the fuzzer then
controls padding, pad length, next header and the inner packet: the code after
the integrity check).  Properties: ``decap`` never raises; it returns None or
an IP packet of the version the next header names; a sequence number is
accepted at most once while anti-replay is on; counters match what was
returned.

Layout: byte 0 = SA profile (mod ``len(PROFILES)``), then records:
flags(1) ‖ seq(4) ‖ len(2) ‖ bytes(len).  flags bit 0: raw packet (SPI and
sequence number are prepended), else sealed plaintext; bit 1: flip one bit of
the sealed packet; bits 2-3: high 32 bits of an ESN sequence number.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterator

from pypluto.crypto.registry import Encr, Integ
from pypluto.kernel.base import SAParams
from pypluto.kernel.esp import InboundSA, make_sa

from . import Finding

SRC = ipaddress.ip_address("192.0.2.1")
DST = ipaddress.ip_address("192.0.2.2")
SRC6 = ipaddress.ip_address("2001:db8::1")
DST6 = ipaddress.ip_address("2001:db8::2")
SPI = 0x01020304

# (encr, key bytes incl. salt, integ, integ key bytes, mode, esn, window, v6)
PROFILES: tuple[tuple[int, int, int, int, str, bool, int, bool], ...] = (
    (Encr.AES_GCM_16, 36, 0, 0, "tunnel", False, 128, False),  # per-packet fast path
    (Encr.AES_GCM_16, 20, 0, 0, "tunnel", True, 64, False),
    (Encr.AES_CBC, 16, Integ.HMAC_SHA2_256_128, 32, "tunnel", False, 32, False),
    (Encr.CHACHA20_POLY1305, 36, 0, 0, "transport", False, 128, False),
    (Encr.AES_CTR, 20, Integ.HMAC_SHA1_96, 20, "transport", True, 0, True),
    (Encr.AES_GCM_8, 20, 0, 0, "tunnel", False, 16, True),
    (Encr.NULL, 0, Integ.HMAC_SHA2_512_256, 64, "transport", False, 128, False),
    (Encr.AES_CCM_16, 19, 0, 0, "tunnel", True, 0, False),
    (Encr.AES_CBC, 32, Integ.AES_XCBC_96, 16, "transport", True, 256, True),
)

_REC = struct.Struct("!BIH")


def _pair(profile: int) -> tuple[InboundSA, object]:
    encr, klen, integ, ilen, mode, esn, window, v6 = PROFILES[profile]
    key = bytes(range(1, klen + 1))
    ikey = bytes(range(100, 100 + ilen))
    src, dst = (SRC6, DST6) if v6 else (SRC, DST)
    common = dict(src=src, dst=dst, spi=SPI, mode=mode, encr_id=int(encr), encr_key=key,
                  integ_id=int(integ), integ_key=ikey, esn=esn, replay_window=window)
    inb = make_sa(SAParams(direction="in", **common))  # type: ignore[arg-type]
    out = make_sa(SAParams(direction="out", **common))  # type: ignore[arg-type]
    assert isinstance(inb, InboundSA)
    return inb, out.t  # type: ignore[attr-defined]


def _seal(t: object, esn: bool, seq: int, plain: bytes) -> bytes:
    """An ESP packet (SPI first) with ``plain`` as its encrypted payload (RFC 4303 §2)."""
    spi = struct.pack("!I", SPI)
    lo, hi = struct.pack("!I", seq & 0xFFFFFFFF), struct.pack("!I", seq >> 32)
    from pypluto.kernel.esp import _EncThenMAC
    if esn and not isinstance(t, _EncThenMAC):
        body = t.seal(seq, spi + hi + lo, b"", plain)  # type: ignore[attr-defined]
    elif esn:
        body = t.seal(seq, spi + lo, hi, plain)  # type: ignore[attr-defined]
    else:
        body = t.seal(seq, spi + lo, b"", plain)  # type: ignore[attr-defined]
    return spi + lo + body


def one_input(data: bytes) -> None:
    """Decapsulate every record of the input on one SA and check the properties."""
    if not data:
        return
    profile = data[0] % len(PROFILES)
    _e, _k, _i, _il, mode, esn, window, _v6 = PROFILES[profile]
    inb, t = _pair(profile)
    pos, accepted_seqs, returned = 1, set(), 0
    top_before = 0
    while pos + _REC.size <= len(data):
        flags, seq, n = _REC.unpack_from(data, pos)
        pos += _REC.size
        chunk = data[pos:pos + n]
        pos += n
        full = (((flags >> 2) & 3) << 32 | seq) if esn else seq
        if flags & 1:
            pkt = struct.pack("!II", SPI, seq) + chunk
        else:
            try:
                pkt = _seal(t, esn, full, chunk)
            except Exception:  # noqa: BLE001 - the sender refuses (e.g. CBC length): skip
                continue
            if flags & 2 and len(pkt) > 8:
                i = 8 + (seq % (len(pkt) - 8))
                pkt = pkt[:i] + bytes([pkt[i] ^ 0x01]) + pkt[i + 1:]
        try:
            inner = inb.decap(pkt)
        except Exception as e:  # noqa: BLE001 - that is the finding
            raise Finding(f"profile {profile}: decap raised {type(e).__name__}: {e}; "
                          f"packet {pkt.hex()}") from e
        if inb.top < top_before:
            raise Finding(f"profile {profile}: replay window top went back")
        top_before = inb.top
        if inner is None:
            continue
        returned += 1
        if not isinstance(inner, bytes | bytearray | memoryview) or not len(inner):
            raise Finding(f"profile {profile}: decap returned {inner!r}")
        if mode == "tunnel" and inner[0] >> 4 not in (4, 6):
            raise Finding(f"profile {profile}: tunnel mode returned a non-IP packet")
        if window:
            if full in accepted_seqs:
                raise Finding(f"profile {profile}: sequence number {full} accepted twice")
            accepted_seqs.add(full)
    if inb.stats.packets != returned:
        raise Finding(f"profile {profile}: {inb.stats.packets} packets counted, "
                      f"{returned} returned")


def _rec(flags: int, seq: int, body: bytes) -> bytes:
    return _REC.pack(flags, seq, len(body)) + body


def _ip4(payload: bytes = b"hello", proto: int = 17) -> bytes:
    total = 20 + len(payload)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, proto, 0,
                       bytes([198, 51, 100, 1]), bytes([203, 0, 113, 1])) + payload


def _ip6(payload: bytes = b"hello", nh: int = 17) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 64, SRC6.packed,
                       DST6.packed) + payload


def _trailer(inner: bytes, nh: int, block: int = 16) -> bytes:
    n = (-(len(inner) + 2)) % block
    return inner + bytes(range(1, n + 1)) + bytes([n, nh])


def seeds() -> Iterator[bytes]:
    """Well-formed, replayed, dummy (next header 59), bad-padding and raw packets
    for every profile."""
    for p, prof in enumerate(PROFILES):
        mode = prof[4]
        good4 = _trailer(_ip4(), 4) if mode == "tunnel" else _trailer(b"udp-data", 17)
        good6 = _trailer(_ip6(), 41)
        yield bytes([p]) + _rec(0, 1, good4) + _rec(0, 2, good6) + _rec(0, 2, good4)
        yield bytes([p]) + _rec(0, 5, _trailer(b"", 59)) + _rec(2, 6, good4)
        yield bytes([p]) + _rec(0, 7, good4[:-3] + b"\x09\x02\x04") + _rec(1, 8, bytes(40))
        yield bytes([p]) + _rec(4, 0xFFFFFFF0, good4) + _rec(8, 3, good4) + _rec(0, 0, good4)
