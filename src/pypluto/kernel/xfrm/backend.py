"""The Linux XFRM kernel backend (``--use-xfrm``): SAs and policies over NETLINK_XFRM.

What we install is marked by its **reqid**: every SA and every policy
template this backend creates carries a reqid in ``[reqid_lo, reqid_hi)``
(by default 0x50500000 + 2**20 * instance).  The engine's own reqid is
mapped into that range (``kernel_reqid``).  The reqid lives in the kernel's
SAD/SPD, so it survives a crash of the daemon: at start the daemon calls
``flush_own()``, which dumps the SAD and SPD and removes every SA and policy
whose reqid is ours, and nothing else (not Libreswan's 16384+ reqids, not
strongSwan's small ones, not hand-made states with reqid 0).  An
XFRMA_MARK cannot serve as the tag: marks take part in lookup and would stop
policies from matching unmarked traffic.

RFC 4301 §4.4 (SPD/SAD), RFC 4303 (ESP: ESN §2.2.1, anti-replay §3.4.3),
RFC 3948 (UDP encapsulation), RFC 4868 (HMAC-SHA2 truncation).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pypluto.params import (
    IPAddress,
    IPNetwork,
    PolicyParams,
    SAAcquire,
    SAExpire,
    SAParams,
    SAStats,
    TrafficSelector,
)

from ..base import BackendError, KernelBackend
from . import structs as S
from .algorithms import kernel_algorithms, kernel_auth
from .hold import set_acq_expires, set_larval_drop
from .netlink import XfrmError, XfrmSocket
from .routes import RouteManager
from .xfrmi import XfrmInterfaces

REQID_BASE = 0x50500000  # "PP"
REQID_SPAN = 1 << 20
MAX_INSTANCES = 16
_GONE = (errno.ENOENT, errno.ESRCH)


def kernel_reqid(reqid: int, instance: int = 0) -> int:
    """The kernel reqid for the engine's ``reqid``: inside this daemon's range."""
    lo = REQID_BASE + instance * REQID_SPAN
    if lo <= reqid < lo + REQID_SPAN:
        return reqid
    if 0 <= reqid < REQID_SPAN:
        return lo + reqid
    raise BackendError(f"XFRM: reqid {reqid} is outside 0..{REQID_SPAN - 1}")


def _port_mask(start: int, end: int, what: str) -> tuple[int, int]:
    """A port range as the kernel's (port, mask); only aligned power-of-two blocks fit."""
    if (start, end) == (0, 65535):
        return 0, 0
    if start == end:
        return start, 0xFFFF
    size = end - start + 1
    if start < end and size & (size - 1) == 0 and start % size == 0:
        return start, (~(size - 1)) & 0xFFFF
    raise BackendError(
        f"XFRM: {what} port range {start}-{end} cannot be expressed as a kernel selector"
    )


def policy_selector(src: TrafficSelector, dst: TrafficSelector) -> S.Selector:
    """The ``xfrm_selector`` for traffic from ``src`` to ``dst`` (RFC 4301 §4.4.1.1)."""
    if src.network.version != dst.network.version:
        raise BackendError(f"XFRM: selector {src} -> {dst} mixes IPv4 and IPv6")
    proto = dst.protocol or src.protocol
    if src.protocol and dst.protocol and src.protocol != dst.protocol:
        raise BackendError(f"XFRM: selector {src} -> {dst} has two protocols")
    sel = S.Selector(
        family=socket.AF_INET if src.network.version == 4 else socket.AF_INET6,
        saddr=src.network.network_address,
        daddr=dst.network.network_address,
        prefixlen_s=src.network.prefixlen,
        prefixlen_d=dst.network.prefixlen,
        proto=proto,
    )
    if proto in (1, 58):
        # ICMP: type in the upper, code in the lower byte of the IKE port field;
        # the kernel keeps the type in sport and the code in dport.
        ts = src if (src.port_start, src.port_end) != (0, 65535) else dst
        if ts is src and (dst.port_start, dst.port_end) not in ((0, 65535), (
                src.port_start, src.port_end)):  # one type/code field: never drop one
            raise BackendError(f"XFRM: ICMP selector {src} -> {dst} has two types/codes")
        if (ts.port_start, ts.port_end) != (0, 65535):
            t0, t1 = ts.port_start >> 8, ts.port_end >> 8
            c0, c1 = ts.port_start & 0xFF, ts.port_end & 0xFF
            if t0 != t1:
                raise BackendError(f"XFRM: ICMP selector {ts} spans several types")
            sel.sport, sel.sport_mask = t0, 0xFFFF
            if (c0, c1) != (0, 255):
                if c0 != c1:
                    raise BackendError(f"XFRM: ICMP selector {ts} spans several codes")
                sel.dport, sel.dport_mask = c0, 0xFFFF
    elif proto in _PORT_PROTOCOLS:
        sel.sport, sel.sport_mask = _port_mask(src.port_start, src.port_end, "source")
        sel.dport, sel.dport_mask = _port_mask(dst.port_start, dst.port_end, "destination")
    elif any((ts.port_start, ts.port_end) != (0, 65535) for ts in (src, dst)):
        # protocol 0 would drop the ports (a wider policy); for GRE the kernel reads
        # them as key halves, for the others they never match (RFC 7296 §3.13.1: a
        # protocol without ports has the whole range)
        raise BackendError(f"XFRM: selector {src} -> {dst} has ports but protocol "
                           f"{proto} has none")
    return sel


# the protocols whose ports the kernel matches as ports (TCP, DCCP, UDP, SCTP, UDP-Lite)
_PORT_PROTOCOLS = frozenset((6, 17, 33, 132, 136))


def default_priority(sel: S.Selector, direction: str = "out") -> int:
    """Lower is preferred, in Libreswan 5.2's order (its ``spd_priority()`` for a
    static conn, the same number): fewer wildcard ports, then a protocol, then the
    longer local prefix, then the longer remote prefix.  Local and remote, not source
    and destination: the out, in and fwd policies of one selector pair rank alike.
    The lowest bit is 1: a shunt takes the value one lower (see ``encode_shunt``)."""
    local, remote = sel.prefixlen_s, sel.prefixlen_d
    if direction != "out":
        local, remote = remote, local
    prio = (1 << 2) | ((sel.sport_mask == 0) + (sel.dport_mask == 0))
    prio = (prio << 1) | (sel.proto == 0)
    prio = (prio << 8) | (128 - local)
    prio = (prio << 8) | (128 - remote)
    return (prio << 1) | 1


def _lifetimes(sa: SAParams) -> S.LifetimeCfg:
    def lim(v: int | None) -> int:
        return S.XFRM_INF if v is None else int(v)

    def secs(v: float | None) -> int:
        return 0 if v is None else max(1, math.ceil(v))

    return S.LifetimeCfg(
        soft_byte_limit=lim(sa.soft_bytes),
        hard_byte_limit=lim(sa.hard_bytes),
        soft_packet_limit=lim(sa.soft_packets),
        hard_packet_limit=lim(sa.hard_packets),
        soft_add_expires_seconds=secs(sa.soft_seconds),
        hard_add_expires_seconds=secs(sa.hard_seconds),
    )


def check_mark(mark: tuple[int, int] | None, what: str) -> None:
    """A mark the kernel can match: 32-bit value and mask, no value bit outside the mask."""
    if mark is None:
        return
    v, m = mark
    if not (0 <= v <= 0xFFFFFFFF and 0 <= m <= 0xFFFFFFFF) or v & ~m:
        raise BackendError(f"XFRM: {what} mark {v:#x}/{m:#x} is not a 32-bit value "
                           "inside its mask")


def _narrow_inbound(sel: S.Selector, sa: SAParams) -> None:
    """Protocol and ports of an inbound SA's one selector pair, on the SA itself.

    After decryption the kernel matches every SA of the packet's path against its
    selector (``LINUX_MIB_XFRMINSTATEMISMATCH``) before the inbound policy
    check; a transport-mode packet that matches no inbound policy is otherwise
    accepted, so without this a transport SA negotiated for ``udp/5353`` would
    deliver TCP (RFC 4301 §5.2 step 4 asks for the drop).  Addresses stay
    wildcards (NAT-T transport: the peer's selector is not its outer address).
    """
    if len(sa.local_ts) != 1 or len(sa.remote_ts) != 1:
        return  # several pairs: one kernel selector cannot say it; the policies do
    remote, local = sa.remote_ts[0], sa.local_ts[0]
    if not (remote.protocol or local.protocol):
        return
    narrow = policy_selector(remote, local)
    sel.proto = narrow.proto
    sel.sport, sel.sport_mask = narrow.sport, narrow.sport_mask
    sel.dport, sel.dport_mask = narrow.dport, narrow.dport_mask


def encode_sa(sa: SAParams, reqid: int) -> bytes:
    """The body of an XFRM_MSG_NEWSA / UPDSA for ``sa`` with kernel reqid ``reqid``."""
    if sa.protocol not in S.PROTOCOLS:
        raise BackendError(f"XFRM: unknown IPsec protocol {sa.protocol!r}")
    if sa.src.version != sa.dst.version:
        raise BackendError(f"XFRM: SA {sa.src} -> {sa.dst} mixes IPv4 and IPv6")
    if not 256 <= sa.spi <= 0xFFFFFFFF:
        raise BackendError(f"XFRM: invalid SPI {sa.spi:#x} (RFC 4303 §2.1: 256 and above)")
    family = S.family_of(sa.dst)
    mode = S.XFRM_MODE_TUNNEL if sa.mode == "tunnel" else S.XFRM_MODE_TRANSPORT
    flags = 0
    # The SA's own selector matches any traffic of its family: the policies decide
    # what goes into the SA (a narrower SA selector would break NAT-T transport mode,
    # where the peer's traffic selector is not the address its packets come from).
    sel = S.Selector(family=family)
    inner = {ts.network.version for ts in (*sa.local_ts, *sa.remote_ts)}
    if mode == S.XFRM_MODE_TUNNEL and inner and inner != {sa.dst.version}:
        sel.family = 0  # IPv4 in IPv6 or the reverse: selector family AF_UNSPEC
        flags |= S.XFRM_STATE_AF_UNSPEC
    elif sa.direction == "in":
        _narrow_inbound(sel, sa)
    attrs: list[bytes] = []
    # decap-dscp=yes / nopmtudisc=yes / encap-dscp=no (ipsec.conf(5)), as Libreswan sets
    # them on both SAs of the pair
    if sa.decap_dscp:
        flags |= S.XFRM_STATE_DECAP_DSCP
    if sa.nopmtudisc:
        flags |= S.XFRM_STATE_NOPMTUDISC
    if not sa.encap_dscp:
        attrs.append(S.nlattr(S.XFRMA_SA_EXTRA_FLAGS,
                              struct.pack("=I", S.XFRM_SA_XFLAG_DONT_ENCAP_DSCP)))
    if sa.protocol == "ah":
        # RFC 4302: integrity only, with the negotiated truncation (RFC 4868 §2.3)
        if sa.encr_id or sa.encr_key:
            raise BackendError("XFRM: AH takes no encryption transform (RFC 4302)")
        if sa.encapsulated:
            raise BackendError("XFRM: UDP encapsulation is for ESP only (RFC 3948)")
        name, bits = kernel_auth(sa.integ_id, sa.integ_key)
        attrs.append(S.nlattr(S.XFRMA_ALG_AUTH_TRUNC, S.pack_algo_trunc(name, sa.integ_key, bits)))
        if family == socket.AF_INET:
            # RFC 4302 §3.3.3.2.1: pad IPv4 AH to 32 bits; without this flag Linux
            # pads to 64 (HMAC-SHA2-256-128 gets 4 bytes too many) and drops
            # RFC-sized AH from peers that are not Linux.
            flags |= S.XFRM_STATE_ALIGN4
    else:
        algs = kernel_algorithms(
            sa.encr_id, sa.encr_key_bits, sa.encr_key, sa.integ_id, sa.integ_key
        )
        if algs.aead:
            name, icv = algs.aead
            attrs.append(S.nlattr(S.XFRMA_ALG_AEAD, S.pack_algo_trunc(name, sa.encr_key, icv)))
        else:
            assert algs.crypt is not None
            attrs.append(S.nlattr(S.XFRMA_ALG_CRYPT, S.pack_algo(algs.crypt, sa.encr_key)))
            if algs.auth:
                name, bits = algs.auth
                if sa.integ_trunc_bits:  # sha2-truncbug=yes (Libreswan: hmac(sha256) at 96)
                    bits = sa.integ_trunc_bits
                attrs.append(
                    S.nlattr(S.XFRMA_ALG_AUTH_TRUNC, S.pack_algo_trunc(name, sa.integ_key, bits))
                )
    window = sa.replay_window
    if window < 0 or window > S.XFRMA_REPLAY_ESN_MAX:
        raise BackendError(
            f"XFRM: replay window {window} outside 0..{S.XFRMA_REPLAY_ESN_MAX} packets"
        )
    legacy_window = 0
    if sa.esn:
        flags |= S.XFRM_STATE_ESN
        # The kernel insists on a window of at least one packet with ESN.
        attrs.append(S.nlattr(S.XFRMA_REPLAY_ESN_VAL, S.pack_replay_esn(window or 32)))
    elif window > 32:
        attrs.append(S.nlattr(S.XFRMA_REPLAY_ESN_VAL, S.pack_replay_esn(window)))
    else:
        legacy_window = window
    if sa.encapsulated:
        if sa.protocol != "esp":
            raise BackendError("XFRM: UDP encapsulation is for ESP only (RFC 3948)")
        attrs.append(
            S.nlattr(S.XFRMA_ENCAP, S.pack_encap(sa.encap_sport or 4500, sa.encap_dport or 4500))
        )
    check_mark(sa.mark, "SA")
    attrs.append(S.mark_attr(sa.mark))  # mark= / mark-in= / mark-out= (ipsec.conf(5))
    attrs.append(_if_id_attr(sa.if_id))  # ipsec-interface=N: the SA of device ipsecN
    if sa.tfc_pad and sa.direction == "out":  # tfc=: the kernel pads up to the path MTU
        attrs.append(S.nlattr(_XFRMA_TFCPAD, struct.pack("=I", sa.tfc_pad)))
    info = S.UserSAInfo(
        sel=sel,
        daddr=sa.dst,
        spi=sa.spi,
        proto=S.PROTOCOLS[sa.protocol],
        saddr=sa.src,
        lft=_lifetimes(sa),
        reqid=reqid,
        family=family,
        mode=mode,
        replay_window=legacy_window,
        flags=flags,
    )
    return info.pack() + b"".join(attrs)


def encode_shunt(pol: PolicyParams, index: int) -> bytes:
    """A shunt (type=passthrough|drop|reject): no template; ALLOW, or BLOCK (XFRM has no
    reject: the packet is dropped, as Libreswan's %reject).  One better than a tunnel's
    priority for the same selectors; ``index`` marks it as ours (see ``shunt_index``)."""
    if pol.direction not in S.POLICY_DIRS:
        raise BackendError(f"XFRM: unknown policy direction {pol.direction!r}")
    sel = policy_selector(pol.src, pol.dst)
    check_mark(pol.mark, "policy")
    return S.UserPolicyInfo(
        sel=sel,
        priority=pol.priority or default_priority(sel, pol.direction) - 1,
        index=index,
        dir=S.POLICY_DIRS[pol.direction],
        action=S.XFRM_POLICY_ALLOW if pol.action == "pass" else S.XFRM_POLICY_BLOCK,
    ).pack() + S.mark_attr(pol.mark) + _if_id_attr(pol.if_id)  # as its tunnel's (and GETPOLICY)


def encode_policy(pol: PolicyParams, reqid: int) -> bytes:
    """The body of an XFRM_MSG_NEWPOLICY / UPDPOLICY for ``pol`` (one ESP/AH template)."""
    if pol.action != "ipsec":
        raise BackendError(f"XFRM: a {pol.action} shunt has no template (encode_shunt)")
    if pol.direction not in S.POLICY_DIRS:
        raise BackendError(f"XFRM: unknown policy direction {pol.direction!r}")
    if pol.protocol not in S.PROTOCOLS:
        raise BackendError(f"XFRM: unknown IPsec protocol {pol.protocol!r}")
    if pol.tmpl_src.version != pol.tmpl_dst.version:
        raise BackendError(f"XFRM: template {pol.tmpl_src} -> {pol.tmpl_dst} mixes families")
    sel = policy_selector(pol.src, pol.dst)
    info = S.UserPolicyInfo(
        sel=sel,
        priority=pol.priority or default_priority(sel, pol.direction),
        dir=S.POLICY_DIRS[pol.direction],
        action=S.XFRM_POLICY_ALLOW,
    )
    tmpl = S.UserTmpl(
        daddr=pol.tmpl_dst,
        proto=S.PROTOCOLS[pol.protocol],
        family=S.family_of(pol.tmpl_dst),
        saddr=pol.tmpl_src,
        reqid=reqid,
        mode=S.XFRM_MODE_TUNNEL if pol.mode == "tunnel" else S.XFRM_MODE_TRANSPORT,
    )
    check_mark(pol.mark, "policy")
    # the policy matches only packets whose skb->mark fits (out: mark-out, in/fwd:
    # mark-in); its template then finds the SA with the same mark
    return (info.pack() + S.nlattr(S.XFRMA_TMPL, tmpl.pack()) + S.mark_attr(pol.mark)
            + _if_id_attr(pol.if_id))  # ipsec-interface=N: matched on device ipsecN only


def _if_id_attr(if_id: int | None) -> bytes:
    try:
        return S.if_id_attr(if_id)
    except ValueError as e:
        raise BackendError(f"XFRM: ipsec-interface: {e}") from None


def bypass_policy(family: int, direction: int) -> bytes:
    """A per-socket "allow, no IPsec" policy (IP_XFRM_POLICY): IKE never goes into ESP."""
    return S.UserPolicyInfo(
        sel=S.Selector(family=family), dir=direction, action=S.XFRM_POLICY_ALLOW
    ).pack()


# --- MOBIKE: an SA re-added under new addresses (RFC 4555 §3.5) ---------------------------
_XFRMA_TFCPAD, _XFRMA_SET_MARK, _XFRMA_SET_MARK_MASK = 22, 32, 33
# What a GETSA reply carries that NEWSA takes back unchanged: the keys, the replay state
# (sequence numbers and window), flags, marks.  XFRMA_ALG_AUTH (the untruncated copy of
# the integrity algorithm) only when there is no AUTH_TRUNC; the encapsulation is new;
# LASTUSED, offload, care-of address and security context are not carried over.
_MOVE_KEEP = (
    S.XFRMA_ALG_AEAD, S.XFRMA_ALG_CRYPT, S.XFRMA_ALG_AUTH_TRUNC, S.XFRMA_ALG_COMP,
    S.XFRMA_REPLAY_VAL, S.XFRMA_REPLAY_ESN_VAL, S.XFRMA_SA_EXTRA_FLAGS, S.XFRMA_MARK,
    S.XFRMA_IF_ID, _XFRMA_TFCPAD, _XFRMA_SET_MARK, _XFRMA_SET_MARK_MASK,
)  # fmt: skip


def moved_sa_body(
    body: bytes, new_src: IPAddress, new_dst: IPAddress, encap: tuple[int, int] | None
) -> bytes:
    """The NEWSA body of the SA in ``body`` (a GETSA reply) at new outer addresses and
    ESP-in-UDP ports (``encap``: source, destination; None for plain ESP).

    Keys, replay state (RFC 4303 §3.3.3: the sender's sequence number must go on, the
    receiver's window too), flags, marks and lifetimes (limits, and the current bytes,
    packets and add time through XFRMA_LTIME_VAL) stay those of the kernel's SA.
    """
    info = S.UserSAInfo.unpack(body)
    if new_src.version != new_dst.version or S.family_of(new_dst) != info.family:
        raise BackendError(
            f"XFRM: cannot move SA {info.spi:#010x} to {new_src} -> {new_dst} "
            "(the address family of an SA cannot change)"
        )
    if encap is not None and info.proto != S.PROTOCOLS["esp"]:
        raise BackendError("XFRM: UDP encapsulation is for ESP only (RFC 3948)")
    attrs = S.parse_attrs(body, S.USERSA_INFO_SIZE)
    info.saddr, info.daddr = new_src, new_dst
    if S.XFRMA_REPLAY_ESN_VAL in attrs:
        info.replay_window = 0  # the window is in the attribute (as add_sa sends it)
    keep = list(_MOVE_KEEP)
    if S.XFRMA_ALG_AUTH_TRUNC not in attrs:
        keep.append(S.XFRMA_ALG_AUTH)
    out = [S.nlattr(t, v) for t in keep for v in attrs.get(t, [])]
    out.append(S.nlattr(S.XFRMA_LTIME_VAL, info.curlft.pack()))
    if encap is not None:
        out.append(S.nlattr(S.XFRMA_ENCAP, S.pack_encap(*encap)))
    return info.pack() + b"".join(out)


# --- decoded kernel objects ------------------------------------------------------------
@dataclass
class KernelSA:
    """One SA as the kernel reports it (keys are not kept)."""

    src: IPAddress | None
    dst: IPAddress | None
    spi: int
    proto: int
    reqid: int
    mode: int
    flags: int
    info: S.UserSAInfo
    aead: tuple[str, int, int] | None = None
    crypt: tuple[str, int] | None = None
    auth_trunc: tuple[str, int, int] | None = None
    encap: tuple[int, int, int] | None = None
    replay_esn: tuple[int, int, int, int, int, int] | None = None
    lastused: int | None = None
    mark: tuple[int, int] | None = None

    @classmethod
    def decode(cls, body: bytes) -> KernelSA:
        """An SA from a NEWSA body (dump or GETSA reply); XfrmDecodeError if malformed."""
        try:
            return cls._decode(body)
        except (struct.error, UnicodeError, ValueError) as e:
            if isinstance(e, S.XfrmDecodeError):
                raise
            raise S.XfrmDecodeError(f"malformed SA from the kernel: {e}") from e

    @classmethod
    def _decode(cls, body: bytes) -> KernelSA:
        info = S.UserSAInfo.unpack(body)
        attrs = S.parse_attrs(body, S.USERSA_INFO_SIZE)
        sa = cls(
            info.saddr, info.daddr, info.spi, info.proto, info.reqid, info.mode, info.flags, info
        )
        if S.XFRMA_ALG_AEAD in attrs:
            sa.aead = S.unpack_algo_trunc(attrs[S.XFRMA_ALG_AEAD][0])
        if S.XFRMA_ALG_CRYPT in attrs:
            sa.crypt = S.unpack_algo(attrs[S.XFRMA_ALG_CRYPT][0])
        if S.XFRMA_ALG_AUTH_TRUNC in attrs:
            sa.auth_trunc = S.unpack_algo_trunc(attrs[S.XFRMA_ALG_AUTH_TRUNC][0])
        if S.XFRMA_ENCAP in attrs:
            sa.encap = S.unpack_encap(attrs[S.XFRMA_ENCAP][0])
        if S.XFRMA_REPLAY_ESN_VAL in attrs:
            sa.replay_esn = S.unpack_replay_esn(attrs[S.XFRMA_REPLAY_ESN_VAL][0])
        if S.XFRMA_LASTUSED in attrs:
            sa.lastused = S.unpack_u64(attrs[S.XFRMA_LASTUSED][0])
        if S.XFRMA_MARK in attrs:
            sa.mark = S.unpack_mark(attrs[S.XFRMA_MARK][0])
        return sa

    def __str__(self) -> str:
        return (
            f"{self.src}->{self.dst} spi {self.spi:#010x} proto {self.proto} reqid {self.reqid:#x}"
        )


@dataclass
class KernelPolicy:
    info: S.UserPolicyInfo
    tmpls: list[S.UserTmpl] = field(default_factory=list)
    mark: tuple[int, int] | None = None  # XFRMA_MARK: lookups and deletes must name it
    if_id: int | None = None  # XFRMA_IF_ID: lookups and deletes must name it too

    @classmethod
    def decode(cls, body: bytes) -> KernelPolicy:
        """A policy from a NEWPOLICY body; XfrmDecodeError if malformed."""
        try:
            return cls._decode(body)
        except (struct.error, ValueError) as e:
            if isinstance(e, S.XfrmDecodeError):
                raise
            raise S.XfrmDecodeError(f"malformed policy from the kernel: {e}") from e

    @classmethod
    def _decode(cls, body: bytes) -> KernelPolicy:
        info = S.UserPolicyInfo.unpack(body)
        attrs = S.parse_attrs(body, S.USERPOLICY_INFO_SIZE)
        tmpls = [t for raw in attrs.get(S.XFRMA_TMPL, []) for t in S.unpack_tmpls(raw)]
        mark = S.unpack_mark(attrs[S.XFRMA_MARK][0]) if S.XFRMA_MARK in attrs else None
        if_id = S.unpack_if_id(attrs[S.XFRMA_IF_ID][0]) if S.XFRMA_IF_ID in attrs else None
        return cls(info, tmpls, mark, if_id or None)

    @property
    def direction(self) -> str:
        return S.POLICY_DIR_NAMES.get(self.info.dir, f"dir{self.info.dir}")

    def __str__(self) -> str:
        sel = self.info.sel
        reqids = ",".join(f"{t.reqid:#x}" for t in self.tmpls)
        mark = f" mark {self.mark[0]:#x}/{self.mark[1]:#x}" if self.mark else ""
        if self.if_id:
            mark += f" if_id {self.if_id:#x}"
        return f"{sel.src_net} -> {sel.dst_net} {self.direction} reqid {reqids or '-'}{mark}"


class XfrmBackend(KernelBackend):
    """Kernel IPsec via NETLINK_XFRM; see the module docstring for the reqid marking."""

    name = "xfrm"
    supports_marks = True  # XFRMA_MARK on SAs and policies

    def __init__(
        self,
        *,
        netns: str | None = None,
        instance: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if not 0 <= instance < MAX_INSTANCES:
            raise BackendError(f"XFRM: instance {instance} outside 0..{MAX_INSTANCES - 1}")
        self.instance = instance
        self.reqid_lo = REQID_BASE + instance * REQID_SPAN
        self.reqid_hi = self.reqid_lo + REQID_SPAN
        self.netns = netns
        self._log = log or (lambda _msg: None)
        self._nl = XfrmSocket(netns)
        self._lock = threading.Lock()
        self._allocated: set[tuple[IPAddress, int, int]] = set()
        self._sas: set[tuple[IPAddress, int, int]] = set()
        # the XFRMA_MARK of each SA we installed: GETSA / DELSA find a marked SA only
        # when they name its mark
        self._sa_marks: dict[tuple[IPAddress, int, int], tuple[int, int]] = {}
        try:
            self._routes = RouteManager(netns, self._log)
        except BackendError:
            self._nl.close()
            raise
        # the routes an outbound policy made (two for a /0: its halves)
        self._routed: dict[tuple[str, str, str, tuple[int, int] | None],
                           list[IPNetwork]] = {}
        # shunt policies' indexes
        self._shunt_index: dict[tuple[str, str, str, tuple[int, int] | None], int] = {}
        self._shunt_n = 0
        self._larval_drop_was: str | None = None  # net.core.xfrm_larval_drop before us
        self._acq_expires_was: str | None = None  # net.core.xfrm_acq_expires before us
        self._events: XfrmSocket | None = None
        self._events_thread: threading.Thread | None = None
        self._stop = threading.Event()
        # ipsec-interface=N: the XFRM interfaces ipsecN (xfrmi.py), held by SA / policy keys
        self._xfrmi = XfrmInterfaces(netns, instance, self._log)

    # --- ipsec-interface (XFRM interfaces) -----------------------------------------
    @property
    def supports_ipsec_interface(self) -> bool:  # type: ignore[override]
        """The kernel makes XFRM interfaces (probed once: ``ip link add type xfrm``)."""
        return not self._xfrmi.unsupported_reason()

    @property
    def ipsec_interface_refusal(self) -> str:
        """Why ipsec-interface= conns are refused on this kernel ("" = they are not)."""
        return self._xfrmi.unsupported_reason()

    @property
    def managed_interfaces(self) -> bool:
        """config setup ipsec-interface-managed= (no: the operator makes the devices)."""
        return self._xfrmi.managed

    @managed_interfaces.setter
    def managed_interfaces(self, value: bool) -> None:
        self._xfrmi.managed = value

    @property
    def ipsec_interfaces(self) -> list[str]:
        """The ipsecN devices in use (for status and tests)."""
        return sorted(d.name for d in self._xfrmi.by_id.values())

    # --- marking --------------------------------------------------------------
    def kernel_reqid(self, reqid: int) -> int:
        return kernel_reqid(reqid, self.instance)

    def is_own_reqid(self, reqid: int) -> bool:
        return self.reqid_lo <= reqid < self.reqid_hi

    # --- SAs -------------------------------------------------------------------
    def alloc_spi(
        self,
        src: IPAddress,
        dst: IPAddress,
        protocol: str = "esp",
        reqid: int = 0,
        spi_min: int = 0x100,
        spi_max: int = 0xFFFFFFFF,
    ) -> int:
        """XFRM_MSG_ALLOCSPI: the kernel picks an unused inbound SPI (a larval SA)."""
        if protocol not in S.PROTOCOLS:
            raise BackendError(f"XFRM: unknown IPsec protocol {protocol!r}")
        info = S.UserSAInfo(
            sel=S.Selector(family=S.family_of(dst)),
            daddr=dst,
            proto=S.PROTOCOLS[protocol],
            saddr=src,
            reqid=self.kernel_reqid(reqid),
            family=S.family_of(dst),
        )
        replies = self._nl.request(S.XFRM_MSG_ALLOCSPI, S.pack_userspi_info(info, spi_min, spi_max))
        for mtype, body in replies:
            if mtype == S.XFRM_MSG_NEWSA:
                spi = S.UserSAInfo.unpack(body).spi
                with self._lock:
                    self._allocated.add((dst, spi, S.PROTOCOLS[protocol]))
                return spi
        raise BackendError("XFRM ALLOCSPI: the kernel returned no SA")

    def _spi_for_larval(self, sa: KernelSA) -> int:
        for mtype, body in self._nl.request(
            S.XFRM_MSG_ALLOCSPI, S.pack_userspi_info(sa.info, 0x100, 0xFFFFFFFF)
        ):
            if mtype == S.XFRM_MSG_NEWSA:
                return S.UserSAInfo.unpack(body).spi
        raise BackendError("XFRM ALLOCSPI: the kernel returned no SA")

    def add_sa(self, sa: SAParams) -> None:
        reqid = self.kernel_reqid(sa.reqid)
        body = encode_sa(sa, reqid)
        key = (sa.dst, sa.spi, S.PROTOCOLS[sa.protocol])
        if sa.if_id is not None:  # its device first: traffic of the SA lands there
            self._xfrmi.acquire(sa.if_id, ("sa", key), local=sa.src if sa.direction == "out"
                                else sa.dst, if_ip=sa.if_ip)
        try:
            self._add_sa(sa, reqid, body, key)
        except BaseException:
            if sa.if_id is not None:
                self._xfrmi.release(("sa", key))
            raise

    def _add_sa(self, sa: SAParams, reqid: int, body: bytes,
                key: tuple[IPAddress, int, int]) -> None:
        with self._lock:
            update = key in self._allocated or key in self._sas
        what = f"{sa.protocol.upper()} SA {sa.src}->{sa.dst} spi {sa.spi:#010x}"
        try:
            if update:
                try:
                    self._nl.request(S.XFRM_MSG_UPDSA, body, what=f"UPDSA {what}")
                except XfrmError as e:
                    if e.errno not in _GONE:  # the larval SA expired: add it anew
                        raise
                    self._nl.request(S.XFRM_MSG_NEWSA, body, what=f"NEWSA {what}")
            else:
                self._nl.request(S.XFRM_MSG_NEWSA, body, what=f"NEWSA {what}")
        except XfrmError as e:
            raise XfrmError(e.what, e.errno, e.extack, _hint(e)) from e
        with self._lock:
            self._allocated.discard(key)
            self._sas.add(key)
            if sa.mark is not None:
                self._sa_marks[key] = sa.mark
            else:
                self._sa_marks.pop(key, None)
        mark = f" mark {sa.mark[0]:#x}/{sa.mark[1]:#x}" if sa.mark else ""
        if sa.if_id is not None:
            mark += f" if_id {sa.if_id}"
        self._log(f"| xfrm: added {what} reqid {reqid:#x}{mark}")

    def _mark_of(self, dst: IPAddress, spi: int, proto: int) -> tuple[int, int] | None:
        with self._lock:
            return self._sa_marks.get((dst, spi, proto))

    def get_sa(self, dst: IPAddress, spi: int, protocol: str = "esp",
               mark: tuple[int, int] | None = None) -> KernelSA | None:
        """The kernel's view of one SA (XFRM_MSG_GETSA), or None if there is none.

        ``mark``: the SA's XFRMA_MARK; by default the one we installed it with."""
        proto = S.PROTOCOLS[protocol]
        if mark is None:
            mark = self._mark_of(dst, spi, proto)
        try:
            replies = self._nl.request(
                S.XFRM_MSG_GETSA, S.pack_usersa_id(dst, spi, proto) + S.mark_attr(mark)
            )
        except XfrmError as e:
            if e.errno in _GONE:
                return None
            raise
        for mtype, body in replies:
            if mtype == S.XFRM_MSG_NEWSA:
                return KernelSA.decode(body)
        return None

    def del_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        proto = S.PROTOCOLS.get(protocol)
        if proto is None:
            raise BackendError(f"XFRM: unknown IPsec protocol {protocol!r}")
        self._xfrmi.release(("sa", (dst, spi, proto)))  # its ipsecN, if it has one
        cur = self.get_sa(dst, spi, protocol)
        if cur is None or not self.is_own_reqid(cur.reqid):
            with self._lock:
                self._sas.discard((dst, spi, proto))
                self._sa_marks.pop((dst, spi, proto), None)
            return  # unknown, or not ours: leave it alone
        self._delete_sa(dst, spi, proto, cur.mark)

    def _delete_sa(self, dst: IPAddress, spi: int, proto: int,
                   mark: tuple[int, int] | None = None) -> None:
        try:
            self._nl.request(S.XFRM_MSG_DELSA,
                             S.pack_usersa_id(dst, spi, proto) + S.mark_attr(mark))
        except XfrmError as e:
            if e.errno not in _GONE:
                raise
        with self._lock:
            self._sas.discard((dst, spi, proto))
            self._allocated.discard((dst, spi, proto))
            self._sa_marks.pop((dst, spi, proto), None)
        self._xfrmi.release(("sa", (dst, spi, proto)))
        self._log(f"| xfrm: deleted SA {dst} spi {spi:#010x} proto {proto}")

    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        sa = self.get_sa(dst, spi, protocol)
        if sa is None:
            return None
        last = sa.lastused or sa.info.curlft.use_time or None
        last_used = None
        if last:  # the kernel's wall clock -> our monotonic clock
            last_used = time.monotonic() - max(0.0, time.time() - last)
        return SAStats(
            bytes=sa.info.curlft.bytes,
            packets=sa.info.curlft.packets,
            last_used=last_used,
            replay_drops=sa.info.replay,
            integrity_failures=sa.info.integrity_failed,
        )

    def list_sas(self, own_only: bool = True) -> list[KernelSA]:
        """Every SA in the kernel (XFRM_MSG_GETSA dump); by default only ours."""
        out = []
        for mtype, body in self._nl.dump(S.XFRM_MSG_GETSA):
            if mtype != S.XFRM_MSG_NEWSA:
                continue
            sa = KernelSA.decode(body)
            if not own_only or self.is_own_reqid(sa.reqid):
                out.append(sa)
        return out

    def move_sa(
        self,
        dst: IPAddress,
        spi: int,
        new_src: IPAddress,
        new_dst: IPAddress,
        encap_sport: int | None,
        encap_dport: int | None,
        protocol: str = "esp",
    ) -> None:
        """MOBIKE (RFC 4555 §3.5): the SA (``dst``, ``spi``) at new outer addresses and
        ESP-in-UDP ports, with its keys, sequence numbers and replay window.

        The kernel names an SA by (destination, SPI, protocol), and XFRM_MSG_UPDSA
        changes only an SA's encapsulation and lifetimes, not its addresses (and
        XFRM_MSG_MIGRATE needs CONFIG_XFRM_MIGRATE).  So the kernel's own copy of the
        SA (GETSA) is added again at the new addresses (NEWSA, ``moved_sa_body``) and
        the old one deleted: new first when the destination changes (no gap), old
        first when only the source or the ports change (same name: a gap of one
        netlink round trip).  The policies' templates are the engine's to update
        (``AddPolicy`` again: UPDPOLICY).
        """
        proto = S.PROTOCOLS.get(protocol)
        if proto is None:
            raise BackendError(f"XFRM: unknown IPsec protocol {protocol!r}")
        body = None
        mark = self._mark_of(dst, spi, proto)  # a marked SA is found only by its mark
        sa_id = S.pack_usersa_id(dst, spi, proto) + S.mark_attr(mark)
        try:
            for mtype, reply in self._nl.request(S.XFRM_MSG_GETSA, sa_id):
                if mtype == S.XFRM_MSG_NEWSA:
                    body = reply
        except XfrmError as e:
            if e.errno not in _GONE:
                raise
        if body is None:
            raise BackendError(f"move_sa: no SA {spi:08x}@{dst}")
        cur = S.UserSAInfo.unpack(body)
        if not self.is_own_reqid(cur.reqid):
            raise BackendError(f"move_sa: SA {spi:08x}@{dst} is not ours (reqid {cur.reqid:#x})")
        encap = (encap_sport or 4500, encap_dport) if encap_dport is not None else None
        new = moved_sa_body(body, new_src, new_dst, encap)
        what = f"{protocol.upper()} SA {new_src}->{new_dst} spi {spi:#010x}"
        old_key, new_key = (dst, spi, proto), (new_dst, spi, proto)
        try:
            if new_dst == dst:
                self._nl.request(S.XFRM_MSG_DELSA, sa_id)
                try:
                    self._nl.request(S.XFRM_MSG_NEWSA, new, what=f"NEWSA {what}")
                except XfrmError:  # put the SA back where it was: nothing is lost
                    info = KernelSA.decode(body)
                    was = (info.encap[1], info.encap[2]) if info.encap else None
                    self._nl.request(S.XFRM_MSG_NEWSA, moved_sa_body(body, cur.saddr or dst,
                                                                     dst, was))
                    raise
            else:
                self._nl.request(S.XFRM_MSG_NEWSA, new, what=f"NEWSA {what}")
                self._nl.request(S.XFRM_MSG_DELSA, sa_id)
        except XfrmError as e:
            raise XfrmError(e.what, e.errno, e.extack, _hint(e)) from e
        with self._lock:
            self._sas.discard(old_key)
            self._sas.add(new_key)
            if mark is not None:
                self._sa_marks.pop(old_key, None)
                self._sa_marks[new_key] = mark
        self._xfrmi.rename(("sa", old_key), ("sa", new_key))  # its ipsecN (XFRMA_IF_ID kept)
        self._log(f"| xfrm: moved SA {spi:#010x} from {cur.saddr}->{dst} to {what}")

    # --- policies --------------------------------------------------------------
    def is_own_policy(self, pol: KernelPolicy) -> bool:
        """Ours: a template with our reqid, or a shunt (no template) with our index."""
        if pol.tmpls:
            return any(self.is_own_reqid(t.reqid) for t in pol.tmpls)
        return self.reqid_lo <= pol.info.index < self.reqid_hi

    def _add_shunt(self, policy: PolicyParams) -> None:
        """A shunt policy; its index (chosen here, ``index & 3 == dir`` as the kernel
        wants) is in this daemon's reqid range, so ``flush_own`` finds it after a crash."""
        key = _policy_key(policy)
        index = self._shunt_index.get(key)
        if index is None:
            self._shunt_n += 1
            index = self.reqid_lo + (self._shunt_n << 3) + S.POLICY_DIRS[policy.direction]
            self._shunt_index[key] = index
        body = encode_shunt(policy, index)
        what = f"{policy.action} shunt {policy.src} -> {policy.dst} {policy.direction}"
        try:
            self._nl.request(S.XFRM_MSG_NEWPOLICY, body, what=f"NEWPOLICY {what}")
        except XfrmError as e:
            if e.errno != errno.EEXIST:
                raise
            cur = self._get_policy(policy)
            if cur is not None and not self.is_own_policy(cur):
                raise BackendError(
                    f"XFRM: {what} is already installed by someone else ({cur})"
                ) from e
            if cur is not None and cur.info.index != index:
                # UPDPOLICY keeps the old policy's index (a tunnel's is the kernel's,
                # not ours: del_policy and flush_own would never find the shunt again),
                # so the tunnel's policy goes first and the shunt is added anew
                self._delete_policy(cur)
                self._nl.request(S.XFRM_MSG_NEWPOLICY, body, what=f"NEWPOLICY {what}")
            else:
                self._nl.request(S.XFRM_MSG_UPDPOLICY, body, what=f"UPDPOLICY {what}")
        self._log(f"| xfrm: added {what} index {index:#x}")

    def add_policy(self, policy: PolicyParams) -> None:
        if policy.action != "ipsec":
            self._add_shunt(policy)
            return
        reqid = self.kernel_reqid(policy.reqid)
        body = encode_policy(policy, reqid)
        what = f"policy {policy.src} -> {policy.dst} {policy.direction}"
        if policy.if_id is not None:  # route-based: the device, no route (the operator's)
            xkey = ("pol", _xfrmi_policy_key(policy))
            self._xfrmi.acquire(policy.if_id, xkey, local=policy.tmpl_src
                                if policy.direction == "out" else policy.tmpl_dst,
                                if_ip=policy.if_ip, source_ip=policy.source_ip)
            try:
                self._add_ipsec_policy(policy, body, what, reqid)
            except BaseException:
                self._xfrmi.release(xkey)
                raise
            return
        self._add_ipsec_policy(policy, body, what, reqid)
        key = _policy_key(policy)
        source = policy.source_ip if policy.mode == "tunnel" else None
        if (
            policy.direction == "out"
            and (source is not None or policy.mtu is not None or policy.metric is not None)
            and key not in self._routed
        ):
            routed: list[IPNetwork] = []
            try:
                nets = _route_halves(policy.dst.network)
                for net in nets:
                    if self._routes.add(net, source, policy.tmpl_dst, policy.mtu,
                                        policy.metric, half=len(nets) == 2,
                                        nexthop=policy.nexthop):
                        routed.append(net)
            except BackendError as e:  # the SAs still work; say why the route is missing
                self._log(f"xfrm: no route for {policy.dst} src {source}: {e}")
            if routed:
                self._routed[key] = routed

    def _add_ipsec_policy(self, policy: PolicyParams, body: bytes, what: str,
                          reqid: int) -> None:
        try:
            self._nl.request(S.XFRM_MSG_NEWPOLICY, body, what=f"NEWPOLICY {what}")
        except XfrmError as e:
            if e.errno != errno.EEXIST:
                raise
            cur = self._get_policy(policy)
            if cur is not None and not self.is_own_policy(cur):  # our shunt: replaced
                raise BackendError(
                    f"XFRM: {what} is already installed by someone else ({cur})"
                ) from e
            self._nl.request(S.XFRM_MSG_UPDPOLICY, body, what=f"UPDPOLICY {what}")
        if_id = f" if_id {policy.if_id}" if policy.if_id is not None else ""
        self._log(f"| xfrm: added {what} reqid {reqid:#x}{if_id}")
        if policy.direction == "out":
            self._hold_while_negotiating()

    def set_acquire_lifetime(self, seconds: int) -> str:
        """xfrmlifetime=: ``net.core.xfrm_acq_expires`` in our namespace, as Libreswan
        sets it from this key: how long a larval (ACQ) state lives; put back at close."""
        old = set_acq_expires(self.netns, str(seconds))
        if old is None:
            raise BackendError("xfrmlifetime=: cannot set net.core.xfrm_acq_expires")
        if self._acq_expires_was is None:
            self._acq_expires_was = old
        return f"xfrmlifetime={seconds}: net.core.xfrm_acq_expires was {old}, now {seconds}"

    def _hold_while_negotiating(self) -> None:
        """negotiationshunt=hold: packets on a trap wait in the kernel (see ``hold``)."""
        if self._larval_drop_was is not None:
            return
        old = set_larval_drop(self.netns, "0")
        self._larval_drop_was = old if old is not None else ""
        if old is None:
            self._log("xfrm: cannot set net.core.xfrm_larval_drop=0: packets that hit a trap "
                      "are dropped until its SA is in")
        elif old != "0":
            self._log("xfrm: net.core.xfrm_larval_drop=0: packets that hit a trap are held "
                      "until its SA is in (negotiationshunt=hold)")

    def _get_policy(self, policy: PolicyParams) -> KernelPolicy | None:
        sel = policy_selector(policy.src, policy.dst)
        try:
            replies = self._nl.request(
                S.XFRM_MSG_GETPOLICY,
                S.pack_userpolicy_id(sel, S.POLICY_DIRS[policy.direction])
                + S.mark_attr(policy.mark) + _if_id_attr(policy.if_id),
            )
        except XfrmError as e:
            if e.errno in _GONE:
                return None
            raise
        for mtype, body in replies:
            if mtype == S.XFRM_MSG_NEWPOLICY:
                return KernelPolicy.decode(body)
        return None

    def del_policy(self, policy: PolicyParams) -> None:
        if policy.direction not in S.POLICY_DIRS:
            raise BackendError(f"XFRM: unknown policy direction {policy.direction!r}")
        if policy.if_id is not None:
            self._xfrmi.release(("pol", _xfrmi_policy_key(policy)))
        for dst in self._routed.pop(_policy_key(policy), []):
            try:
                self._routes.remove(dst)
            except BackendError as e:
                self._log(f"xfrm: cannot remove the route for {dst}: {e}")
        cur = self._get_policy(policy)
        if cur is None or not self.is_own_policy(cur):
            return
        if policy.action != "ipsec" and cur.tmpls:
            return  # a tunnel's policy took the shunt's selectors meanwhile
        if policy.action == "ipsec" and (not cur.tmpls or all(
                t.reqid != self.kernel_reqid(policy.reqid) for t in cur.tmpls)):
            return  # a shunt or another tunnel took them: theirs now, never a leak
        self._shunt_index.pop(_policy_key(policy), None)
        self._delete_policy(cur)

    def _delete_policy(self, pol: KernelPolicy) -> None:
        try:
            self._nl.request(
                S.XFRM_MSG_DELPOLICY,
                S.pack_userpolicy_id(S.Selector(), pol.info.dir, pol.info.index)
                + S.mark_attr(pol.mark) + S.if_id_attr(pol.if_id),
            )
        except XfrmError as e:
            if e.errno not in _GONE:
                raise
        self._log(f"| xfrm: deleted policy {pol}")

    def list_policies(self, own_only: bool = True) -> list[KernelPolicy]:
        """Every policy in the kernel's SPD (XFRM_MSG_GETPOLICY dump); by default only ours."""
        out = []
        for mtype, body in self._nl.dump(S.XFRM_MSG_GETPOLICY):
            if mtype != S.XFRM_MSG_NEWPOLICY:
                continue
            pol = KernelPolicy.decode(body)
            if not own_only or self.is_own_policy(pol):
                out.append(pol)
        return out

    # --- lifecycle ---------------------------------------------------------------
    def flush_own(self) -> None:
        """Remove every policy and SA whose reqid is ours, also those of a crashed run."""
        pols = self.list_policies()
        for pol in pols:
            self._delete_policy(pol)
        sas = self.list_sas()
        for sa in sas:
            if sa.dst is None:
                continue
            spi = sa.spi
            if spi == 0:
                # A larval SA the kernel made for an ACQUIRE has no SPI, and DELSA finds
                # SAs by SPI: give it one first (ALLOCSPI finds it by its sequence number).
                try:
                    spi = self._spi_for_larval(sa)
                except BackendError as e:
                    self._log(f"xfrm: cannot remove the larval SA {sa}: {e}")
                    continue
            self._delete_sa(sa.dst, spi, sa.proto, sa.mark)
        with self._lock:
            self._sas.clear()
            self._allocated.clear()
            self._sa_marks.clear()
        routes = self._routes.flush_own()
        self._routed.clear()
        self._shunt_index.clear()
        devices = self._xfrmi.flush_own()
        if pols or sas or routes:
            self._log(
                f"xfrm: removed {len(sas)} SAs, {len(pols)} policies and {routes} routes of ours"
            )
        if devices:
            self._log(f"xfrm: removed {devices} XFRM interfaces of ours")

    def prepare_ike_socket(self, sock: socket.socket) -> None:
        """Exempt an IKE socket from the SPD (per-socket bypass policies, both directions)."""
        if sock.family == socket.AF_INET:
            level, opt = socket.IPPROTO_IP, S.IP_XFRM_POLICY
        elif sock.family == socket.AF_INET6:
            level, opt = socket.IPPROTO_IPV6, S.IPV6_XFRM_POLICY
        else:
            return
        for direction in (S.XFRM_POLICY_IN, S.XFRM_POLICY_OUT):
            try:
                sock.setsockopt(level, opt, bypass_policy(sock.family, direction))
            except OSError as e:
                raise BackendError(
                    f"XFRM: cannot set a bypass policy on the IKE socket: {e}"
                ) from e

    def attach_nat_socket(
        self,
        sock: socket.socket,
        local: tuple[str, int],
        deliver_ike: Callable[[bytes, tuple[str, int]], None],
    ) -> bool:
        """Make the kernel decapsulate ESP-in-UDP arriving on ``sock`` (RFC 3948).

        With UDP_ENCAP_ESPINUDP the kernel takes every datagram that does not
        start with the 4-byte non-ESP marker; IKE still reaches the daemon.
        Returns False: the daemon keeps reading the socket.
        """
        try:
            sock.setsockopt(S.SOL_UDP, S.UDP_ENCAP, S.UDP_ENCAP_ESPINUDP)
        except OSError as e:
            raise BackendError(
                f"XFRM: cannot set UDP_ENCAP_ESPINUDP on the socket at {local}: {e}"
            ) from e
        self.prepare_ike_socket(sock)
        return False

    # --- expiry (RFC 4301 §4.4.2.1 lifetimes) --------------------------------------
    def set_expire_callback(self, callback: Callable[[SAExpire], None] | None) -> None:
        """Deliver the kernel's soft/hard expire events of our SAs to ``callback``.

        A thread listens on the XFRM multicast groups; the callback runs in
        that thread.  Hard expiry means the kernel already removed the SA.
        """
        self.on_expire = callback
        if callback is not None:
            self._start_events()

    def set_acquire_callback(self, callback: Callable[[SAAcquire], None] | None) -> None:
        """Deliver ACQUIREs (traffic hit one of our policies that has no SA) to ``callback``."""
        self.on_acquire = callback
        if callback is not None:
            self._start_events()

    def _start_events(self) -> None:
        if self._events_thread is not None:
            return
        groups = (1 << (S.XFRMNLGRP_EXPIRE - 1)) | (1 << (S.XFRMNLGRP_ACQUIRE - 1))
        self._events = XfrmSocket(self.netns, groups=groups)
        self._events_thread = threading.Thread(
            target=self._event_loop, name="xfrm-events", daemon=True
        )
        self._events_thread.start()

    def _event_loop(self) -> None:
        assert self._events is not None
        while not self._stop.is_set():
            try:
                events = self._events.receive_events(0.5)
            except OSError:
                return
            for mtype, body in events:
                try:
                    if mtype == S.XFRM_MSG_EXPIRE and self.on_expire is not None:
                        expire = self.decode_expire(body)
                        if expire is not None:
                            self.on_expire(expire)
                    elif mtype == S.XFRM_MSG_ACQUIRE and self.on_acquire is not None:
                        acquire = decode_acquire(body, self.reqid_lo, self.reqid_hi)
                        if acquire is not None:
                            self.on_acquire(acquire)
                except S.XfrmDecodeError:
                    continue
                except Exception as e:  # the daemon's bug must not kill the listener
                    self._log(f"xfrm: event callback failed: {e!r}")

    def decode_expire(self, body: bytes) -> SAExpire | None:
        """An XFRM_MSG_EXPIRE as an SAExpire, or None when the SA is not ours."""
        expire = decode_expire(body, self.is_own_reqid)
        if expire is not None and expire.hard:
            key = (expire.dst, expire.spi, S.PROTOCOLS[expire.protocol])
            with self._lock:
                self._sas.discard(key)
            self._xfrmi.release(("sa", key))
        return expire

    def close(self) -> None:
        self._stop.set()
        if self._events_thread is not None:
            self._events_thread.join(timeout=2)
            self._events_thread = None
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._larval_drop_was not in (None, "", "0"):
            try:
                set_larval_drop(self.netns, self._larval_drop_was or "1")
            except BackendError as e:  # the namespace is gone: nothing to restore
                self._log(f"xfrm: cannot restore net.core.xfrm_larval_drop: {e}")
        self._larval_drop_was = None
        if self._acq_expires_was is not None:
            try:
                set_acq_expires(self.netns, self._acq_expires_was)
            except BackendError as e:  # the namespace is gone: nothing to restore
                self._log(f"xfrm: cannot restore net.core.xfrm_acq_expires: {e}")
            self._acq_expires_was = None
        self._xfrmi.close_all()
        self._routes.close()
        self._nl.close()


def _route_halves(net: IPNetwork) -> list[IPNetwork]:
    """``0.0.0.0/0`` as ``0.0.0.0/1`` and ``128.0.0.0/1`` (``::/0`` likewise): routes that
    are more specific than the default route without replacing it (as Libreswan's updown)."""
    return list(net.subnets(1)) if net.prefixlen == 0 else [net]


def _policy_key(p: PolicyParams) -> tuple[str, str, str, tuple[int, int] | None]:
    """Policies with the same selectors and different marks are different policies."""
    return str(p.src), str(p.dst), p.direction, p.mark


def _xfrmi_policy_key(p: PolicyParams) -> tuple[object, ...]:
    """A policy as a holder of its ipsecN device (the if_id makes it another policy)."""
    return (*_policy_key(p), p.if_id)


def decode_expire(body: bytes, is_own: Callable[[int], bool]) -> SAExpire | None:
    """An XFRM_MSG_EXPIRE body as an SAExpire (None if ``is_own(reqid)`` is false).

    The reason is the limit the counters reached (bytes, then packets), else
    the add-time lifetime ("seconds").
    """
    try:
        info, hard = S.unpack_user_expire(body)
    except struct.error as e:
        raise S.XfrmDecodeError(f"malformed expire message: {e}") from e
    if not is_own(info.reqid) or info.daddr is None:
        return None
    lft, cur = info.lft, info.curlft
    if hard:
        byte_lim, pkt_lim = lft.hard_byte_limit, lft.hard_packet_limit
    else:
        byte_lim, pkt_lim = lft.soft_byte_limit, lft.soft_packet_limit
    reason: Literal["bytes", "packets", "seconds"] = "seconds"
    if cur.bytes >= byte_lim:
        reason = "bytes"
    elif cur.packets >= pkt_lim:
        reason = "packets"
    proto = "ah" if info.proto == S.IPPROTO_AH else "esp"
    return SAExpire(info.daddr, info.spi, proto, hard, reason)


def _ts(net_addr: IPAddress | None, plen: int, proto: int, port: int, mask: int) -> TrafficSelector:
    assert net_addr is not None
    network = ipaddress.ip_network(f"{net_addr}/{plen}", strict=False)
    if not proto or not mask or proto in (1, 58):  # ICMP type/code: the protocol is enough
        return TrafficSelector(network, proto)
    return TrafficSelector(network, proto, port & mask, port | (~mask & 0xFFFF))


def decode_acquire(body: bytes, reqid_lo: int, reqid_hi: int) -> SAAcquire | None:
    """An XFRM_MSG_ACQUIRE as an SAAcquire for one of our policies, else None."""
    try:
        acq = S.UserAcquire.unpack(body)
        attrs = S.parse_attrs(body, S.USER_ACQUIRE_SIZE)
        tmpls = [t for raw in attrs.get(S.XFRMA_TMPL, []) for t in S.unpack_tmpls(raw)]
    except struct.error as e:
        raise S.XfrmDecodeError(f"malformed acquire message: {e}") from e
    own = [t for t in tmpls if reqid_lo <= t.reqid < reqid_hi]
    sel = acq.sel
    if not own or sel.saddr is None or sel.daddr is None:
        return None
    t = own[0]
    local, remote = t.saddr or acq.saddr, t.daddr or acq.daddr
    if local is None or remote is None:
        return None
    return SAAcquire(
        reqid=t.reqid - reqid_lo,
        src=_ts(sel.saddr, sel.prefixlen_s, sel.proto, sel.sport, sel.sport_mask),
        dst=_ts(sel.daddr, sel.prefixlen_d, sel.proto, sel.dport, sel.dport_mask),
        local=local,
        remote=remote,
    )


def _hint(e: XfrmError) -> str:
    """A hint for the errors a kernel without ESP (or without the algorithm) gives."""
    if e.errno in (errno.ENOSYS, errno.ENOENT, errno.EPROTONOSUPPORT) or "not found" in e.extack:
        return "kernel ESP (esp4/esp6) or this algorithm is missing; try --use-userspace"
    return ""


__all__ = [
    "REQID_BASE",
    "REQID_SPAN",
    "KernelPolicy",
    "KernelSA",
    "XfrmBackend",
    "XfrmError",
    "bypass_policy",
    "encode_policy",
    "encode_sa",
    "kernel_reqid",
    "policy_selector",
]
