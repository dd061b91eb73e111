"""The responder's denial-of-service defence (RFC 7296 §2.6, RFC 8019 §4), sans I/O.

``DoSGuard`` decides when a new IKE_SA_INIT must carry a COOKIE, and makes and
checks cookies without any state per request:

* **busy** (COOKIEs demanded) when ``ddos-mode=busy`` (or ``--force-busy``), or,
  with ``ddos-mode=auto``, when either
  - the half-open count reaches ``ddos-ike-threshold`` (Libreswan's rule, same
    default 25,000); it ends when the count falls under 3/4 of it; or
  - the *rate* of new IKE_SA_INIT requests reaches ``ddos_init_rate`` per second
    (default 100: about 4 % of the ~2,400 key exchanges per second one core of
    this machine does alone.  Under a flood the responder shares its two cores
    with the sender and the kernel's packet work and processes only ~1,000
    requests/s before cookies are on (measured in ``tests/interop/flood.py``),
    so a threshold near its capacity would never be crossed; every half-open SA
    made before cookies are on queues a key exchange in front of the legitimate
    peers' ones.  With 100/s and τ = 0.25 s, cookies are on after ~25-100
    requests).  The rate is an exponentially weighted
    count (time constant 0.25 s, so a flood is seen within ~0.1 s); busy ends when it falls under half the
    threshold and none was above it for ``ddos_hold`` seconds (hysteresis).
  ``ddos-mode=unlimited`` never demands cookies.
* **per source** (RFC 8019 §4): a source address (IPv4 /32, IPv6 /64) with
  ``halfopen_per_addr`` half-open SAs must return a COOKIE even when the
  daemon is not busy; at twice that, its new requests are dropped.  A spoofer
  can therefore hold at most half of a victim's quota: the victim's own
  cookie-bearing requests still get in.
* **the cookie** is ``<version> | HMAC-SHA256(secret, SPIi | IPi | port)[:16]``
  (§2.6 leaves the format to the responder; Ni is left out so that the check
  needs only the IKE header and the first payload, which §2.6 requires the
  COOKIE to be).  The secret rotates every ``cookie_secret_lifetime`` seconds
  while cookies are in use; the previous one stays valid.
"""

from __future__ import annotations

import hmac
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pypluto.iana import ExchangeType, PayloadType
from pypluto.iana import NotifyType as N
from pypluto.ike.settings import EngineSettings
from pypluto.ike.status import DoSStatus
from pypluto.params import IPAddress

RATE_TAU = 0.25  # seconds: time constant of the IKE_SA_INIT rate meter
_HDR = struct.Struct("!8s8sBBBBII")  # RFC 7296 §3.1
_NOTIFY = struct.Struct("!BBHBBH")  # generic header (§3.2) + notify head (§3.10)
COOKIE_LEN = 17


@dataclass
class DoSCounters:
    """What the defence did since start (``whack --status`` / ``--globalstatus``)."""

    cookies_sent: int = 0  # COOKIE demanded (stateless answers)
    cookies_accepted: int = 0  # requests with a valid COOKIE
    cookies_rejected: int = 0  # requests with a COOKIE that did not verify
    dropped_halfopen_full: int = 0  # max-halfopen-ike reached
    dropped_per_addr: int = 0  # a source at twice its half-open quota
    busy_periods: int = 0  # times busy mode was entered


def addr_key(addr: IPAddress) -> bytes:
    """The per-source bucket: an IPv4 address, or an IPv6 /64 (RFC 8019 §4)."""
    return packed_key(addr.packed)


def packed_key(packed: bytes) -> bytes:
    """``addr_key`` of the address whose packed octets are ``packed`` (4 or 16)."""
    return packed if len(packed) == 4 else packed[:8]


class DoSGuard:
    """Cookies and half-open limits of one engine (RFC 7296 §2.6, RFC 8019)."""

    def __init__(self, settings: EngineSettings, rng: Callable[[int], bytes]) -> None:
        self.settings = settings
        self.rng = rng
        self.secret = rng(32)
        self.prev = self.secret
        self.version = 0
        self.rotate_at: float | None = None
        self.level = 0.0  # exponentially weighted count of new IKE_SA_INITs
        self.level_at = 0.0
        self.rate_busy = False
        self.over_at = -math.inf  # last time the rate was above the threshold
        self.count_busy = False
        self.check_at: float | None = None  # while busy by load: when to look again
        self.per_addr: dict[bytes, int] = {}
        self.counters = DoSCounters()

    # ------------------------------------------------------------------ load
    def rate(self, now: float) -> float:
        """New IKE_SA_INIT requests per second (exponentially weighted, τ = 0.25 s)."""
        dt = now - self.level_at
        return self.level * math.exp(-dt / RATE_TAU) / RATE_TAU if dt > 0 else \
            self.level / RATE_TAU

    def note_request(self, now: float) -> None:
        """A new IKE_SA_INIT request that costs a key exchange, or would if not busy
        (retransmits of known ones and requests refused before the key exchange do
        not count: a flood of malformed requests costs nothing and is only logged)."""
        self.level = self.rate(now) * RATE_TAU + 1.0
        self.level_at = max(now, self.level_at)

    def update(self, n_halfopen: int, now: float) -> str | None:
        """Re-evaluate busy mode; a log line when it changes."""
        st = self.settings
        was = self.busy_now()
        r = self.rate(now)
        limit = st.ddos_init_rate
        if limit > 0 and r >= limit:
            self.over_at = now
            self.rate_busy = True
        elif self.rate_busy and r < limit / 2 and now - self.over_at >= st.ddos_hold:
            self.rate_busy = False
        t = st.ddos_ike_threshold
        if n_halfopen >= t:
            self.count_busy = True
        elif n_halfopen < t * 3 // 4:
            self.count_busy = False
        busy = self.busy_now()
        self.check_at = now + 1.0 if (self.rate_busy or self.count_busy) else None
        if busy == was or st.ddos_mode != "auto" or st.force_busy:
            return None
        if busy:
            self.counters.busy_periods += 1
            return (f"DDoS: demanding COOKIEs from new peers ({r:.0f} IKE_SA_INIT/s, "
                    f"{n_halfopen} half-open IKE SAs; thresholds {limit:g}/s, {t})")
        return (f"DDoS: pressure ended ({r:.0f} IKE_SA_INIT/s, {n_halfopen} half-open "
                "IKE SAs); no longer demanding COOKIEs")

    def busy_now(self) -> bool:
        """Demand cookies from every new peer (RFC 7296 §2.6)?"""
        st = self.settings
        if st.force_busy or st.ddos_mode == "busy":
            return True
        if st.ddos_mode == "unlimited":
            return False
        return self.rate_busy or self.count_busy

    def reason(self) -> str:
        st = self.settings
        if st.force_busy or st.ddos_mode == "busy":
            return "forced"
        if st.ddos_mode == "unlimited":
            return ""
        return ",".join(w for w, on in (("rate", self.rate_busy),
                                        ("half-open", self.count_busy)) if on)

    # ------------------------------------------------------------------ per source
    def addr_count(self, packed: bytes) -> int:
        """Half-open SAs in the bucket of the address whose packed octets are ``packed``."""
        return self.per_addr.get(packed_key(packed), 0)

    def halfopen_added(self, packed: bytes) -> None:
        """One more half-open SA from the address whose packed octets are ``packed``."""
        k = packed_key(packed)
        self.per_addr[k] = self.per_addr.get(k, 0) + 1

    def halfopen_ended(self, packed: bytes) -> None:
        k = packed_key(packed)
        n = self.per_addr.get(k, 0) - 1
        if n > 0:
            self.per_addr[k] = n
        else:
            self.per_addr.pop(k, None)

    # ------------------------------------------------------------------ cookies
    @staticmethod
    def _mac(secret: bytes, version: int, spi_i: bytes, packed: bytes, port: int) -> bytes:
        mac = hmac.digest(secret, spi_i + packed + port.to_bytes(2, "big"), "sha256")
        return bytes((version & 0xFF,)) + mac[:16]

    def make(self, spi_i: bytes, addr: IPAddress, port: int, now: float) -> bytes:
        return self._make(spi_i, addr.packed, port, now)

    def _make(self, spi_i: bytes, packed: bytes, port: int, now: float) -> bytes:
        if self.rotate_at is None:
            self.rotate_at = now + self.settings.cookie_secret_lifetime
        return self._mac(self.secret, self.version, spi_i, packed, port)

    def check(self, cookie: bytes, spi_i: bytes, addr: IPAddress, port: int) -> bool:
        """Is ``cookie`` one we made (with the current or the previous secret)?"""
        return self._check(cookie, spi_i, addr.packed, port)

    def _check(self, cookie: bytes, spi_i: bytes, packed: bytes, port: int) -> bool:
        if len(cookie) != COOKIE_LEN:
            return False
        if cookie[0] == self.version & 0xFF:
            secret, version = self.secret, self.version
        elif cookie[0] == (self.version - 1) & 0xFF:
            secret, version = self.prev, self.version - 1
        else:
            return False
        return hmac.compare_digest(cookie, self._mac(secret, version, spi_i, packed, port))

    def stateless_reply(self, data: bytes, packed_addr: bytes, port: int, now: float
                        ) -> bytes | None:
        """The daemon's pre-filter when busy: the COOKIE answer to a new IKE_SA_INIT
        without a valid cookie, straight from the datagram (§2.6), or None (the engine
        handles it: not busy, not such a request, or a valid cookie).

        Reads the header and the first payload only, keeps nothing, and counts the
        request in the rate meter as the engine would.  A retransmission of a request
        whose half-open SA exists gets a COOKIE too (its initiator starts over).
        """
        if len(data) < 28 or data[18] != ExchangeType.IKE_SA_INIT or data[19] & 0x20 or \
                data[17] & 0xF0 != 0x20 or data[8:16] != bytes(8) or data[20:24] != bytes(4) \
                or int.from_bytes(data[24:28], "big") != len(data) or not self.busy_now():
            return None
        spi_i = data[:8]
        got = cookie_in(data)
        if got is not None and self._check(got, spi_i, packed_addr, port):
            return None
        self.note_request(now)
        c = self.counters
        if got is not None:
            c.cookies_rejected += 1
        c.cookies_sent += 1
        return cookie_reply(spi_i, self._make(spi_i, packed_addr, port, now))

    def rotate(self, now: float) -> None:
        """Timer: a new secret; the old one is honoured one more period."""
        if self.rotate_at is not None and now >= self.rotate_at:
            self.prev = self.secret
            self.secret = self.rng(32)
            self.version = (self.version + 1) & 0xFF
            self.rotate_at = None


def cookie_in(data: bytes) -> bytes | None:
    """The COOKIE of an IKE_SA_INIT request if it is the first payload (§2.6), else None.

    Reads the IKE header and the first payload's 8 bytes of header only.
    """
    if len(data) < _HDR.size + _NOTIFY.size or data[16] != PayloadType.NOTIFY:
        return None
    _nxt, _crit, plen, _proto, spi_size, ntype = _NOTIFY.unpack_from(data, _HDR.size)
    if ntype != N.COOKIE or spi_size != 0 or plen < _NOTIFY.size:
        return None
    end = _HDR.size + plen
    if end > len(data):
        return None
    return data[_HDR.size + _NOTIFY.size:end]


def cookie_reply(spi_i: bytes, cookie: bytes) -> bytes:
    """The stateless IKE_SA_INIT answer ``HDR(SPIi, 0), N(COOKIE)`` (§2.6), built directly."""
    plen = _NOTIFY.size + len(cookie)
    hdr = _HDR.pack(spi_i, bytes(8), PayloadType.NOTIFY, 0x20, ExchangeType.IKE_SA_INIT,
                    0x20, 0, _HDR.size + plen)
    return hdr + _NOTIFY.pack(0, 0, plen, 0, 0, N.COOKIE) + cookie


class _FragmentCounters(Protocol):
    frag_bytes: int
    frag_dropped: int


def dos_status(guard: DoSGuard, n_halfopen: int, tm: _FragmentCounters, now: float
               ) -> DoSStatus:
    """The ``dos`` part of ``EngineStatus`` (``whack --status``, ``--globalstatus``)."""
    st = guard.settings
    c = guard.counters
    return DoSStatus(
        mode="busy" if st.force_busy else st.ddos_mode, busy=guard.busy_now(),
        reason=guard.reason(), half_open=n_halfopen, ddos_ike_threshold=st.ddos_ike_threshold,
        max_halfopen_ike=st.max_halfopen_ike, init_rate=round(guard.rate(now), 1),
        init_rate_threshold=st.ddos_init_rate, halfopen_per_addr=st.halfopen_per_addr,
        sources_halfopen=len(guard.per_addr), cookies_sent=c.cookies_sent,
        cookies_accepted=c.cookies_accepted, cookies_rejected=c.cookies_rejected,
        dropped_halfopen_full=c.dropped_halfopen_full, dropped_per_addr=c.dropped_per_addr,
        busy_periods=c.busy_periods, fragment_bytes=tm.frag_bytes,
        fragments_dropped=tm.frag_dropped, max_reassembled=st.max_reassembled,
        max_fragment_buffer=st.max_fragment_buffer)
