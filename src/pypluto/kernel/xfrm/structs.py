"""NETLINK_XFRM message encoding and decoding with ``struct`` (Linux ``<linux/xfrm.h>``).

Layouts are those of the Linux UAPI on a 64-bit little-endian machine (x86_64,
aarch64): native byte order and alignment, except fields the header declares
``__be16`` / ``__be32`` (ports and SPIs), which are network order.  The sizes
are checked by the unit tests (``xfrm_usersa_info`` = 224 bytes,
``xfrm_userpolicy_info`` = 168, ``xfrm_user_tmpl`` = 64, ...).

The XFRM netlink family carries the IPsec SAD and SPD of RFC 4301 §4.4; the
ESP features it encodes are those of RFC 4303 (ESN §2.2.1, anti-replay §3.4.3)
and RFC 3948 (UDP encapsulation).
"""

from __future__ import annotations

import builtins
import ipaddress
import socket
import struct
from dataclasses import dataclass, field

from ..base import BackendError

# --- netlink (linux/netlink.h) ----------------------------------------------
NETLINK_XFRM = 6
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11

NLM_F_REQUEST = 0x01
NLM_F_MULTI = 0x02
NLM_F_ACK = 0x04
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_ACK_TLVS = 0x200  # in NLMSG_ERROR replies: extended-ack attributes follow

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3

NLMSGERR_ATTR_MSG = 1

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLATTR = struct.Struct("=HH")  # len, type
NLA_TYPE_MASK = 0x3FFF

# --- message types (enum in linux/xfrm.h, XFRM_MSG_BASE = 0x10) ---------------
XFRM_MSG_NEWSA = 0x10
XFRM_MSG_DELSA = 0x11
XFRM_MSG_GETSA = 0x12
XFRM_MSG_NEWPOLICY = 0x13
XFRM_MSG_DELPOLICY = 0x14
XFRM_MSG_GETPOLICY = 0x15
XFRM_MSG_ALLOCSPI = 0x16
XFRM_MSG_ACQUIRE = 0x17
XFRM_MSG_EXPIRE = 0x18
XFRM_MSG_UPDPOLICY = 0x19
XFRM_MSG_UPDSA = 0x1A
XFRM_MSG_POLEXPIRE = 0x1B
XFRM_MSG_FLUSHSA = 0x1C
XFRM_MSG_FLUSHPOLICY = 0x1D

MSG_NAMES = {
    XFRM_MSG_NEWSA: "NEWSA",
    XFRM_MSG_DELSA: "DELSA",
    XFRM_MSG_GETSA: "GETSA",
    XFRM_MSG_NEWPOLICY: "NEWPOLICY",
    XFRM_MSG_DELPOLICY: "DELPOLICY",
    XFRM_MSG_GETPOLICY: "GETPOLICY",
    XFRM_MSG_ALLOCSPI: "ALLOCSPI",
    XFRM_MSG_UPDPOLICY: "UPDPOLICY",
    XFRM_MSG_UPDSA: "UPDSA",
    XFRM_MSG_FLUSHSA: "FLUSHSA",
    XFRM_MSG_FLUSHPOLICY: "FLUSHPOLICY",
}

# --- attributes (enum xfrm_attr_type_t) --------------------------------------
XFRMA_ALG_AUTH = 1
XFRMA_ALG_CRYPT = 2
XFRMA_ALG_COMP = 3
XFRMA_ENCAP = 4
XFRMA_TMPL = 5
XFRMA_SA = 6
XFRMA_POLICY = 7
XFRMA_LTIME_VAL = 9
XFRMA_REPLAY_VAL = 10
XFRMA_SRCADDR = 13
XFRMA_LASTUSED = 15
XFRMA_POLICY_TYPE = 16
XFRMA_ALG_AEAD = 18
XFRMA_ALG_AUTH_TRUNC = 20
XFRMA_MARK = 21
XFRMA_REPLAY_ESN_VAL = 23
XFRMA_SA_EXTRA_FLAGS = 24
XFRMA_PROTO = 25
XFRMA_IF_ID = 31

# --- enums ----------------------------------------------------------------------
XFRM_MODE_TRANSPORT = 0
XFRM_MODE_TUNNEL = 1

XFRM_POLICY_IN = 0
XFRM_POLICY_OUT = 1
XFRM_POLICY_FWD = 2
POLICY_DIRS = {"in": XFRM_POLICY_IN, "out": XFRM_POLICY_OUT, "fwd": XFRM_POLICY_FWD}
POLICY_DIR_NAMES = {v: k for k, v in POLICY_DIRS.items()}

XFRM_POLICY_ALLOW = 0
XFRM_POLICY_BLOCK = 1
XFRM_POLICY_TYPE_MAIN = 0

XFRM_SHARE_ANY = 0

XFRM_STATE_NOECN = 1
XFRM_STATE_DECAP_DSCP = 2
XFRM_STATE_NOPMTUDISC = 4
XFRM_STATE_WILDRECV = 8
XFRM_STATE_ICMP = 16
XFRM_STATE_AF_UNSPEC = 32
XFRM_STATE_ALIGN4 = 64
XFRM_STATE_ESN = 128
XFRM_SA_XFLAG_DONT_ENCAP_DSCP = 1  # in XFRMA_SA_EXTRA_FLAGS

XFRM_INF = 0xFFFFFFFFFFFFFFFF

IPPROTO_ESP = 50
IPPROTO_AH = 51
PROTOCOLS = {"esp": IPPROTO_ESP, "ah": IPPROTO_AH}

# UDP encapsulation (linux/udp.h): setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
SOL_UDP = 17
UDP_ENCAP = 100
UDP_ENCAP_ESPINUDP = 2  # RFC 3948: non-ESP marker for IKE, ESP otherwise

# Per-socket policy (linux/in.h, linux/in6.h): lets IKE bypass the SPD.
IP_XFRM_POLICY = 17
IPV6_XFRM_POLICY = 35

XFRMNLGRP_ACQUIRE = 1
XFRMNLGRP_EXPIRE = 2

XFRMA_REPLAY_ESN_MAX = 4096  # bits: the largest bitmap the kernel accepts

# --- struct layouts ------------------------------------------------------------
_ADDR = 16  # xfrm_address_t
_SEL_HEAD = struct.Struct("=16s16s")
_SEL_PORTS = struct.Struct("!HHHH")
_SEL_TAIL = struct.Struct("=HBBBxxxiI")
SELECTOR_SIZE = _SEL_HEAD.size + _SEL_PORTS.size + _SEL_TAIL.size  # 56
_ID = struct.Struct("!16sIBxxx")  # daddr is raw bytes, so "!" only affects the SPI
ID_SIZE = _ID.size  # 24
_LFT_CFG = struct.Struct("=8Q")  # 64
_LFT_CUR = struct.Struct("=4Q")  # 32
_STATS = struct.Struct("=3I")  # 12
_SA_TAIL = struct.Struct("=IIHBBB7x")  # seq reqid family mode replay_window flags + pad
USERSA_INFO_SIZE = (
    SELECTOR_SIZE + ID_SIZE + _ADDR + _LFT_CFG.size + _LFT_CUR.size + _STATS.size + _SA_TAIL.size
)  # 224
_POL_TAIL = struct.Struct("=IIBBBB4x")  # priority index dir action flags share + pad
USERPOLICY_INFO_SIZE = SELECTOR_SIZE + _LFT_CFG.size + _LFT_CUR.size + _POL_TAIL.size  # 168
_POL_ID_TAIL = struct.Struct("=IBxxx")
USERPOLICY_ID_SIZE = SELECTOR_SIZE + _POL_ID_TAIL.size  # 64
_TMPL_TAIL = struct.Struct("=Hxx16sIBBBxIII")
USER_TMPL_SIZE = ID_SIZE + _TMPL_TAIL.size  # 64
_SA_ID = struct.Struct("!16sI")
_SA_ID_TAIL = struct.Struct("=HBx")
USERSA_ID_SIZE = _SA_ID.size + _SA_ID_TAIL.size  # 24
_SPI_RANGE = struct.Struct("=II")
USERSPI_INFO_SIZE = USERSA_INFO_SIZE + _SPI_RANGE.size  # 232
_ALGO = struct.Struct("=64sI")  # xfrm_algo (68) + key
_ALGO_TRUNC = struct.Struct("=64sII")  # xfrm_algo_auth / xfrm_algo_aead (72) + key
_ENCAP = struct.Struct("=H")
_ENCAP_PORTS = struct.Struct("!HH")
ENCAP_TMPL_SIZE = 2 + 4 + 2 + _ADDR  # 24 (2 bytes of padding before encap_oa)
_REPLAY_ESN = struct.Struct("=6I")  # bmp_len oseq seq oseq_hi seq_hi replay_window
_MARK = struct.Struct("=II")
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class XfrmDecodeError(BackendError, ValueError):
    """A kernel message was shorter or stranger than its type says."""


# --- addresses ------------------------------------------------------------------
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def family_of(addr: Address) -> int:
    return socket.AF_INET if addr.version == 4 else socket.AF_INET6


def pack_addr(addr: Address | None) -> bytes:
    """``xfrm_address_t``: 4 bytes of IPv4 then zeros, or 16 bytes of IPv6."""
    if addr is None:
        return bytes(_ADDR)
    return addr.packed.ljust(_ADDR, b"\0")


def unpack_addr(raw: bytes, family: int) -> Address | None:
    if family == socket.AF_INET:
        return ipaddress.IPv4Address(raw[:4])
    if family == socket.AF_INET6:
        return ipaddress.IPv6Address(raw[:16])
    return None


# --- netlink framing -----------------------------------------------------------------
def align4(n: int) -> int:
    return (n + 3) & ~3


def nlattr(attr_type: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = NLATTR.size + len(payload)
    return NLATTR.pack(length, attr_type) + payload + bytes(align4(length) - length)


def nlmsg(msg_type: int, flags: int, seq: int, body: bytes, pid: int = 0) -> bytes:
    return NLMSGHDR.pack(NLMSGHDR.size + len(body), msg_type, flags, seq, pid) + body


def parse_attrs(data: bytes, offset: int = 0) -> dict[int, list[bytes]]:
    """Attributes from ``offset`` to the end: type (flags masked off) -> payloads."""
    attrs: dict[int, list[bytes]] = {}
    while offset + NLATTR.size <= len(data):
        length, atype = NLATTR.unpack_from(data, offset)
        if length < NLATTR.size or offset + length > len(data):
            raise XfrmDecodeError(f"bad netlink attribute length {length} at {offset}")
        attrs.setdefault(atype & NLA_TYPE_MASK, []).append(
            data[offset + NLATTR.size : offset + length]
        )
        offset += align4(length)
    return attrs


def split_messages(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Split a datagram into (type, flags, seq, pid, body) tuples."""
    out = []
    offset = 0
    while offset + NLMSGHDR.size <= len(data):
        length, mtype, flags, seq, pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise XfrmDecodeError(f"bad netlink message length {length} at {offset}")
        out.append((mtype, flags, seq, pid, data[offset + NLMSGHDR.size : offset + length]))
        offset += align4(length)
    return out


# --- selector, id, lifetimes ------------------------------------------------------------
@dataclass
class Selector:
    """``struct xfrm_selector``: what traffic a policy (or SA) applies to (RFC 4301 §4.4.1.1)."""

    family: int = 0
    daddr: Address | None = None
    saddr: Address | None = None
    prefixlen_d: int = 0
    prefixlen_s: int = 0
    proto: int = 0
    dport: int = 0
    dport_mask: int = 0
    sport: int = 0
    sport_mask: int = 0
    ifindex: int = 0
    user: int = 0

    def pack(self) -> bytes:
        return (
            _SEL_HEAD.pack(pack_addr(self.daddr), pack_addr(self.saddr))
            + _SEL_PORTS.pack(self.dport, self.dport_mask, self.sport, self.sport_mask)
            + _SEL_TAIL.pack(
                self.family,
                self.prefixlen_d,
                self.prefixlen_s,
                self.proto,
                self.ifindex,
                self.user,
            )
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> Selector:
        if len(data) < offset + SELECTOR_SIZE:
            raise XfrmDecodeError("short xfrm_selector")
        d, s = _SEL_HEAD.unpack_from(data, offset)
        dport, dmask, sport, smask = _SEL_PORTS.unpack_from(data, offset + 32)
        fam, pd, ps, proto, ifindex, user = _SEL_TAIL.unpack_from(data, offset + 40)
        return cls(
            fam, unpack_addr(d, fam), unpack_addr(s, fam), pd, ps, proto,
            dport, dmask, sport, smask, ifindex, user,
        )  # fmt: skip

    @property
    def src_net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self.saddr is None:
            return None
        return ipaddress.ip_network(f"{self.saddr}/{self.prefixlen_s}", strict=False)

    @property
    def dst_net(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        if self.daddr is None:
            return None
        return ipaddress.ip_network(f"{self.daddr}/{self.prefixlen_d}", strict=False)


@dataclass
class LifetimeCfg:
    """``struct xfrm_lifetime_cfg``; XFRM_INF means no limit."""

    soft_byte_limit: int = XFRM_INF
    hard_byte_limit: int = XFRM_INF
    soft_packet_limit: int = XFRM_INF
    hard_packet_limit: int = XFRM_INF
    soft_add_expires_seconds: int = 0
    hard_add_expires_seconds: int = 0
    soft_use_expires_seconds: int = 0
    hard_use_expires_seconds: int = 0

    def pack(self) -> bytes:
        return _LFT_CFG.pack(
            self.soft_byte_limit,
            self.hard_byte_limit,
            self.soft_packet_limit,
            self.hard_packet_limit,
            self.soft_add_expires_seconds,
            self.hard_add_expires_seconds,
            self.soft_use_expires_seconds,
            self.hard_use_expires_seconds,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> LifetimeCfg:
        return cls(*_LFT_CFG.unpack_from(data, offset))


@dataclass
class LifetimeCur:
    """``struct xfrm_lifetime_cur``: counters and wall-clock (seconds) times."""

    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0

    def pack(self) -> builtins.bytes:
        return _LFT_CUR.pack(self.bytes, self.packets, self.add_time, self.use_time)

    @classmethod
    def unpack(cls, data: builtins.bytes, offset: int = 0) -> LifetimeCur:
        return cls(*_LFT_CUR.unpack_from(data, offset))


def pack_id(daddr: Address | None, spi: int, proto: int) -> bytes:
    """``struct xfrm_id``: destination, SPI (network order), protocol."""
    return _ID.pack(pack_addr(daddr), spi, proto)


# --- SA ------------------------------------------------------------------------------
@dataclass
class UserSAInfo:
    """``struct xfrm_usersa_info`` (224 bytes), the fixed part of NEWSA/UPDSA/ALLOCSPI."""

    sel: Selector = field(default_factory=Selector)
    daddr: Address | None = None
    spi: int = 0
    proto: int = IPPROTO_ESP
    saddr: Address | None = None
    lft: LifetimeCfg = field(default_factory=LifetimeCfg)
    curlft: LifetimeCur = field(default_factory=LifetimeCur)
    replay_window_stat: int = 0
    replay: int = 0  # stats.replay: packets dropped as replays
    integrity_failed: int = 0
    seq: int = 0
    reqid: int = 0
    family: int = 0
    mode: int = XFRM_MODE_TUNNEL
    replay_window: int = 0
    flags: int = 0

    def pack(self) -> bytes:
        return b"".join(
            (
                self.sel.pack(),
                pack_id(self.daddr, self.spi, self.proto),
                pack_addr(self.saddr),
                self.lft.pack(),
                self.curlft.pack(),
                _STATS.pack(self.replay_window_stat, self.replay, self.integrity_failed),
                _SA_TAIL.pack(
                    self.seq, self.reqid, self.family, self.mode, self.replay_window, self.flags
                ),
            )
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> UserSAInfo:
        if len(data) < offset + USERSA_INFO_SIZE:
            raise XfrmDecodeError(f"short xfrm_usersa_info ({len(data) - offset} bytes)")
        sel = Selector.unpack(data, offset)
        o = offset + SELECTOR_SIZE
        draw, spi, proto = _ID.unpack_from(data, o)
        o += ID_SIZE
        sraw = data[o : o + _ADDR]
        o += _ADDR
        lft = LifetimeCfg.unpack(data, o)
        o += _LFT_CFG.size
        cur = LifetimeCur.unpack(data, o)
        o += _LFT_CUR.size
        rw_stat, replay, integ = _STATS.unpack_from(data, o)
        o += _STATS.size
        seq, reqid, fam, mode, rw, flags = _SA_TAIL.unpack_from(data, o)
        return cls(
            sel, unpack_addr(draw, fam), spi, proto, unpack_addr(sraw, fam), lft, cur,
            rw_stat, replay, integ, seq, reqid, fam, mode, rw, flags,
        )  # fmt: skip


def pack_usersa_id(daddr: Address, spi: int, proto: int) -> bytes:
    """``struct xfrm_usersa_id`` (24 bytes): the key of DELSA / GETSA."""
    return _SA_ID.pack(pack_addr(daddr), spi) + _SA_ID_TAIL.pack(family_of(daddr), proto)


def pack_userspi_info(info: UserSAInfo, spi_min: int, spi_max: int) -> bytes:
    """``struct xfrm_userspi_info`` (232 bytes) for ALLOCSPI."""
    return info.pack() + _SPI_RANGE.pack(spi_min, spi_max)


def _name(name: str) -> bytes:
    raw = name.encode("ascii")
    if len(raw) >= 64:
        raise ValueError(f"algorithm name too long: {name!r}")
    return raw.ljust(64, b"\0")


def pack_algo(name: str, key: bytes) -> bytes:
    """``struct xfrm_algo`` (XFRMA_ALG_CRYPT, XFRMA_ALG_AUTH): name, key bits, key."""
    return _ALGO.pack(_name(name), len(key) * 8) + key


def pack_algo_trunc(name: str, key: bytes, bits: int) -> bytes:
    """``struct xfrm_algo_auth`` / ``xfrm_algo_aead``: name, key bits, ICV/trunc bits, key."""
    return _ALGO_TRUNC.pack(_name(name), len(key) * 8, bits) + key


def unpack_algo_trunc(data: bytes) -> tuple[str, int, int]:
    """(name, key bits, trunc/icv bits) of an xfrm_algo_auth / xfrm_algo_aead."""
    name, key_bits, bits = _ALGO_TRUNC.unpack_from(data)
    return name.rstrip(b"\0").decode("ascii", "replace"), key_bits, bits


def unpack_algo(data: bytes) -> tuple[str, int]:
    name, key_bits = _ALGO.unpack_from(data)
    return name.rstrip(b"\0").decode("ascii", "replace"), key_bits


def pack_encap(sport: int, dport: int, encap_type: int = UDP_ENCAP_ESPINUDP) -> bytes:
    """``struct xfrm_encap_tmpl`` (24 bytes) for ESP-in-UDP (RFC 3948 §2.1)."""
    return _ENCAP.pack(encap_type) + _ENCAP_PORTS.pack(sport, dport) + bytes(2 + _ADDR)


def unpack_encap(data: bytes) -> tuple[int, int, int]:
    """(encap_type, sport, dport)."""
    (etype,) = _ENCAP.unpack_from(data)
    sport, dport = _ENCAP_PORTS.unpack_from(data, 2)
    return etype, sport, dport


def pack_replay_esn(window: int, oseq: int = 0, seq: int = 0) -> bytes:
    """``struct xfrm_replay_state_esn`` with a bitmap of ``window`` bits (RFC 4303 §3.4.3)."""
    bmp_len = (window + 31) // 32
    return _REPLAY_ESN.pack(bmp_len, oseq, seq, 0, 0, window) + bytes(4 * bmp_len)


def unpack_replay_esn(data: bytes) -> tuple[int, int, int, int, int, int]:
    """(bmp_len, oseq, seq, oseq_hi, seq_hi, replay_window)."""
    return _REPLAY_ESN.unpack_from(data)


def pack_mark(value: int, mask: int) -> bytes:
    """``struct xfrm_mark`` (XFRMA_MARK): a packet matches when ``skb->mark & m == v``."""
    return _MARK.pack(value, mask)


def unpack_mark(data: bytes) -> tuple[int, int]:
    """(value, mask) of an XFRMA_MARK."""
    v, m = _MARK.unpack_from(data)
    return v, m


def mark_attr(mark: tuple[int, int] | None) -> bytes:
    """The XFRMA_MARK attribute for ``mark``, or nothing when there is no mark."""
    return b"" if mark is None else nlattr(XFRMA_MARK, pack_mark(*mark))


def unpack_u64(data: bytes) -> int:
    return _U64.unpack_from(data)[0]


def unpack_u32(data: bytes) -> int:
    return _U32.unpack_from(data)[0]


# --- policy ----------------------------------------------------------------------------
@dataclass
class UserPolicyInfo:
    """``struct xfrm_userpolicy_info`` (168 bytes), the fixed part of NEWPOLICY."""

    sel: Selector = field(default_factory=Selector)
    lft: LifetimeCfg = field(default_factory=LifetimeCfg)
    curlft: LifetimeCur = field(default_factory=LifetimeCur)
    priority: int = 0
    index: int = 0
    dir: int = XFRM_POLICY_OUT
    action: int = XFRM_POLICY_ALLOW
    flags: int = 0
    share: int = XFRM_SHARE_ANY

    def pack(self) -> bytes:
        return (
            self.sel.pack()
            + self.lft.pack()
            + self.curlft.pack()
            + _POL_TAIL.pack(
                self.priority, self.index, self.dir, self.action, self.flags, self.share
            )
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> UserPolicyInfo:
        if len(data) < offset + USERPOLICY_INFO_SIZE:
            raise XfrmDecodeError(f"short xfrm_userpolicy_info ({len(data) - offset} bytes)")
        sel = Selector.unpack(data, offset)
        o = offset + SELECTOR_SIZE
        lft = LifetimeCfg.unpack(data, o)
        cur = LifetimeCur.unpack(data, o + _LFT_CFG.size)
        tail = _POL_TAIL.unpack_from(data, o + _LFT_CFG.size + _LFT_CUR.size)
        return cls(sel, lft, cur, *tail)


def pack_userpolicy_id(sel: Selector, direction: int, index: int = 0) -> bytes:
    """``struct xfrm_userpolicy_id`` (64 bytes): the key of DELPOLICY / GETPOLICY."""
    return sel.pack() + _POL_ID_TAIL.pack(index, direction)


@dataclass
class UserTmpl:
    """``struct xfrm_user_tmpl`` (64 bytes): which SA a policy needs (RFC 4301 §4.4.1.2)."""

    daddr: Address | None = None
    spi: int = 0
    proto: int = IPPROTO_ESP
    family: int = 0
    saddr: Address | None = None
    reqid: int = 0
    mode: int = XFRM_MODE_TUNNEL
    share: int = XFRM_SHARE_ANY
    optional: int = 0
    aalgos: int = 0xFFFFFFFF
    ealgos: int = 0xFFFFFFFF
    calgos: int = 0xFFFFFFFF

    def pack(self) -> bytes:
        return pack_id(self.daddr, self.spi, self.proto) + _TMPL_TAIL.pack(
            self.family,
            pack_addr(self.saddr),
            self.reqid,
            self.mode,
            self.share,
            self.optional,
            self.aalgos,
            self.ealgos,
            self.calgos,
        )

    @classmethod
    def unpack(cls, data: bytes, offset: int = 0) -> UserTmpl:
        if len(data) < offset + USER_TMPL_SIZE:
            raise XfrmDecodeError("short xfrm_user_tmpl")
        draw, spi, proto = _ID.unpack_from(data, offset)
        fam, sraw, reqid, mode, share, opt, aa, ea, ca = _TMPL_TAIL.unpack_from(
            data, offset + ID_SIZE
        )
        return cls(
            unpack_addr(draw, fam), spi, proto, fam, unpack_addr(sraw, fam),
            reqid, mode, share, opt, aa, ea, ca,
        )  # fmt: skip


def unpack_tmpls(data: bytes) -> list[UserTmpl]:
    return [UserTmpl.unpack(data, o) for o in range(0, len(data) - USER_TMPL_SIZE + 1, 64)]


def unpack_user_expire(data: bytes) -> tuple[UserSAInfo, bool]:
    """``struct xfrm_user_expire``: the SA (as xfrm_usersa_info) and the hard flag."""
    if len(data) < USERSA_INFO_SIZE + 1:
        raise XfrmDecodeError("short xfrm_user_expire")
    return UserSAInfo.unpack(data), bool(data[USERSA_INFO_SIZE])


_ACQ_TAIL = struct.Struct("=IIII")  # aalgos ealgos calgos seq
USER_ACQUIRE_SIZE = ID_SIZE + _ADDR + SELECTOR_SIZE + USERPOLICY_INFO_SIZE + _ACQ_TAIL.size  # 280


@dataclass
class UserAcquire:
    """``struct xfrm_user_acquire`` (280 bytes): traffic for a policy without an SA."""

    daddr: Address | None
    spi: int
    proto: int
    saddr: Address | None
    sel: Selector
    policy: UserPolicyInfo
    seq: int

    @classmethod
    def unpack(cls, data: bytes) -> UserAcquire:
        if len(data) < USER_ACQUIRE_SIZE:
            raise XfrmDecodeError(f"short xfrm_user_acquire ({len(data)} bytes)")
        draw, spi, proto = _ID.unpack_from(data)
        sraw = data[ID_SIZE : ID_SIZE + _ADDR]
        sel = Selector.unpack(data, ID_SIZE + _ADDR)
        pol = UserPolicyInfo.unpack(data, ID_SIZE + _ADDR + SELECTOR_SIZE)
        seq = _ACQ_TAIL.unpack_from(data, USER_ACQUIRE_SIZE - _ACQ_TAIL.size)[3]
        fam = sel.family or pol.sel.family
        # the outer (template) family may differ from the packet's; the kernel
        # sends the template addresses in the id/saddr with the template's family
        return cls(unpack_addr(draw, fam), spi, proto, unpack_addr(sraw, fam), sel, pol, seq)


def if_id_attr(if_id: int | None) -> bytes:
    """The XFRMA_IF_ID attribute (u32, ipsec-interface=N: the XFRM interface whose SAs
    and policies these are), or nothing when there is none."""
    if if_id is None:
        return b""
    if not 0 < if_id <= 0xFFFFFFFF:
        raise ValueError(f"if_id {if_id} outside 1..4294967295")
    return nlattr(XFRMA_IF_ID, struct.pack("=I", if_id))


def unpack_if_id(data: bytes) -> int:
    """The u32 of an XFRMA_IF_ID."""
    return int(struct.unpack_from("=I", data)[0])
