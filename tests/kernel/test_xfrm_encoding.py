"""XFRM netlink encoding against the Linux UAPI byte layouts (x86_64 / 64-bit little endian).

Offsets are those of ``<linux/xfrm.h>``; the sizes are what ``sizeof`` gives
on x86_64 (``xfrm_usersa_info`` 224, ``xfrm_userpolicy_info`` 168, ...).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st
from testsupport import require

from pypluto.kernel.base import BackendError, PolicyParams, SAParams, TrafficSelector
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.algorithms import kernel_algorithms
from pypluto.kernel.xfrm.backend import (
    REQID_BASE,
    KernelPolicy,
    KernelSA,
    decode_acquire,
    decode_expire,
    default_priority,
    encode_policy,
    encode_sa,
    kernel_reqid,
    policy_selector,
)
from pypluto.kernel.xfrm.netlink import XfrmError, XfrmSocket


@pytest.fixture(autouse=True, scope="module")
def _little_endian_64_bit() -> None:
    """The struct layouts are checked for 64-bit little-endian machines (fails in CI elsewhere)."""
    require(sys.byteorder == "little" and struct.calcsize("P") == 8,
            "a 64-bit little-endian machine (the XFRM layouts checked here)")


ip = ipaddress.ip_address
net = ipaddress.ip_network
A, B = ip("192.0.2.1"), ip("192.0.2.2")


def ts(n: str, proto: int = 0, p0: int = 0, p1: int = 65535) -> TrafficSelector:
    return TrafficSelector(net(n), proto, p0, p1)


def test_struct_sizes_match_x86_64_uapi() -> None:
    assert S.SELECTOR_SIZE == 56
    assert S.ID_SIZE == 24
    assert S.USERSA_INFO_SIZE == 224
    assert S.USERPOLICY_INFO_SIZE == 168
    assert S.USERPOLICY_ID_SIZE == 64
    assert S.USER_TMPL_SIZE == 64
    assert S.USERSA_ID_SIZE == 24
    assert S.USERSPI_INFO_SIZE == 232
    assert S.ENCAP_TMPL_SIZE == 24
    assert len(S.UserSAInfo().pack()) == 224
    assert len(S.UserPolicyInfo().pack()) == 168
    assert len(S.UserTmpl().pack()) == 64
    assert len(S.pack_encap(4500, 4500)) == 24
    assert len(S.pack_usersa_id(A, 1, 50)) == 24


def test_selector_field_offsets() -> None:
    sel = S.Selector(
        family=socket.AF_INET, daddr=ip("203.0.113.0"), saddr=ip("198.51.100.0"),
        prefixlen_d=24, prefixlen_s=25, proto=6, dport=443, dport_mask=0xFFFF,
        sport=0x1234, sport_mask=0xFF00, ifindex=7, user=9,
    )  # fmt: skip
    raw = sel.pack()
    assert raw[0:4] == bytes([203, 0, 113, 0]) and raw[4:16] == bytes(12)
    assert raw[16:20] == bytes([198, 51, 100, 0])
    assert raw[32:34] == b"\x01\xbb"  # dport, network order
    assert raw[34:36] == b"\xff\xff"
    assert raw[36:38] == b"\x12\x34"
    assert raw[38:40] == b"\xff\x00"
    assert raw[40:42] == struct.pack("<H", socket.AF_INET)
    assert (raw[42], raw[43], raw[44]) == (24, 25, 6)
    assert raw[45:48] == bytes(3)
    assert raw[48:52] == struct.pack("<i", 7)
    assert raw[52:56] == struct.pack("<I", 9)
    assert S.Selector.unpack(raw) == sel


def test_usersa_info_offsets() -> None:
    info = S.UserSAInfo(
        daddr=B, spi=0x01020304, proto=50, saddr=A, reqid=0x50500001,
        family=socket.AF_INET, mode=1, replay_window=32, flags=S.XFRM_STATE_ESN, seq=5,
        lft=S.LifetimeCfg(soft_byte_limit=1000),
    )  # fmt: skip
    raw = info.pack()
    assert raw[56:60] == B.packed  # id.daddr
    assert raw[72:76] == b"\x01\x02\x03\x04"  # id.spi, network order
    assert raw[76] == 50  # id.proto
    assert raw[80:84] == A.packed  # saddr
    assert struct.unpack_from("<Q", raw, 96)[0] == 1000  # lft.soft_byte_limit
    assert struct.unpack_from("<Q", raw, 104)[0] == S.XFRM_INF  # lft.hard_byte_limit
    assert raw[160:192] == bytes(32)  # curlft
    assert struct.unpack_from("<IIHBBB", raw, 204) == (5, 0x50500001, 2, 1, 32, 128)
    assert raw[217:224] == bytes(7)
    assert S.UserSAInfo.unpack(raw) == info


def test_userpolicy_and_tmpl_offsets() -> None:
    pol = S.UserPolicyInfo(priority=0x11223344, index=0x55, dir=S.XFRM_POLICY_FWD, action=1)
    raw = pol.pack()
    assert struct.unpack_from("<IIBBBB", raw, 152) == (0x11223344, 0x55, 2, 1, 0, 0)
    assert raw[164:168] == bytes(4)
    tmpl = S.UserTmpl(daddr=B, proto=50, family=socket.AF_INET, saddr=A, reqid=7, mode=1)
    traw = tmpl.pack()
    assert traw[0:4] == B.packed and traw[20] == 50
    assert struct.unpack_from("<H", traw, 24)[0] == socket.AF_INET
    assert traw[28:32] == A.packed
    assert struct.unpack_from("<IBBB", traw, 44) == (7, 1, 0, 0)
    assert struct.unpack_from("<III", traw, 52) == (0xFFFFFFFF,) * 3
    assert S.UserTmpl.unpack(traw) == tmpl
    pid = S.pack_userpolicy_id(S.Selector(), S.XFRM_POLICY_OUT, index=0x99)
    assert len(pid) == 64 and struct.unpack_from("<IB", pid, 56) == (0x99, 1)


def test_usersa_id_encap_algo_esn_layouts() -> None:
    six = ip("2001:db8::2")
    raw = S.pack_usersa_id(six, 0xC0FFEE01, 50)
    assert raw[0:16] == six.packed and raw[16:20] == b"\xc0\xff\xee\x01"
    assert struct.unpack_from("<HB", raw, 20) == (socket.AF_INET6, 50)
    enc = S.pack_encap(4500, 4501)
    assert enc[0:2] == struct.pack("<H", 2) and enc[2:6] == b"\x11\x94\x11\x95"
    aead = S.pack_algo_trunc("rfc4106(gcm(aes))", bytes(range(20)), 128)
    assert aead[:17] == b"rfc4106(gcm(aes))" and aead[17:64] == bytes(47)
    assert struct.unpack_from("<II", aead, 64) == (160, 128) and aead[72:] == bytes(range(20))
    esn = S.pack_replay_esn(128)
    assert struct.unpack_from("<6I", esn) == (4, 0, 0, 0, 0, 128) and len(esn) == 24 + 16
    assert S.nlattr(1, b"abcde") == struct.pack("<HH", 9, 1) + b"abcde" + bytes(3)


def sa(**kw: object) -> SAParams:
    base: dict[str, object] = dict(
        src=A, dst=B, spi=0x1001, direction="out", reqid=3, encr_id=20,
        encr_key_bits=128, encr_key=bytes(20),
    )  # fmt: skip
    base.update(kw)
    return SAParams(**base)  # type: ignore[arg-type]


def test_encode_sa_aead_esn_encap_lifetimes() -> None:
    body = encode_sa(
        sa(esn=True, replay_window=128, encap_sport=4500, encap_dport=4501, hard_bytes=10**9,
           soft_seconds=2.5),
        kernel_reqid(3),
    )  # fmt: skip
    k = KernelSA.decode(body)
    assert (k.src, k.dst, k.spi, k.proto, k.reqid) == (A, B, 0x1001, 50, REQID_BASE + 3)
    assert k.aead == ("rfc4106(gcm(aes))", 160, 128)
    assert k.crypt is None and k.auth_trunc is None
    assert k.flags & S.XFRM_STATE_ESN and k.info.replay_window == 0
    assert k.replay_esn == (4, 0, 0, 0, 0, 128)
    assert k.encap == (S.UDP_ENCAP_ESPINUDP, 4500, 4501)
    assert k.info.lft.hard_byte_limit == 10**9 and k.info.lft.soft_byte_limit == S.XFRM_INF
    assert k.info.lft.soft_add_expires_seconds == 3
    assert k.mode == S.XFRM_MODE_TUNNEL and k.info.sel.family == socket.AF_INET


def test_encode_sa_cbc_sha2_256_truncates_to_128_bits() -> None:
    """RFC 4868 §2.3: HMAC-SHA2-256 is truncated to 128 bits, not the kernel's default 96."""
    body = encode_sa(
        sa(encr_id=12, encr_key_bits=256, encr_key=bytes(32), integ_id=12, integ_key=bytes(32)),
        kernel_reqid(3),
    )
    attrs = S.parse_attrs(body, S.USERSA_INFO_SIZE)
    assert S.XFRMA_ALG_AUTH not in attrs
    assert S.unpack_algo_trunc(attrs[S.XFRMA_ALG_AUTH_TRUNC][0]) == ("hmac(sha256)", 256, 128)
    assert S.unpack_algo(attrs[S.XFRMA_ALG_CRYPT][0]) == ("cbc(aes)", 256)
    # the default replay window of 128 needs the bitmap attribute without ESN
    k = KernelSA.decode(body)
    assert not k.flags & S.XFRM_STATE_ESN and k.replay_esn is not None and k.replay_esn[5] == 128


@pytest.mark.parametrize(
    ("encr", "bits", "keylen", "integ", "ikey", "want"),
    [
        (20, 256, 36, 0, 0, ("aead", "rfc4106(gcm(aes))", 128)),
        (18, 128, 20, 0, 0, ("aead", "rfc4106(gcm(aes))", 64)),
        (28, None, 36, 0, 0, ("aead", "rfc7539esp(chacha20,poly1305)", 128)),
        (16, 128, 19, 0, 0, ("aead", "rfc4309(ccm(aes))", 128)),
        (13, 128, 20, 2, 20, ("auth", "hmac(sha1)", 96)),
        (12, 128, 16, 13, 48, ("auth", "hmac(sha384)", 192)),
        (12, 128, 16, 14, 64, ("auth", "hmac(sha512)", 256)),
        (11, None, 0, 12, 32, ("auth", "hmac(sha256)", 128)),
    ],
)
def test_kernel_algorithm_names(encr, bits, keylen, integ, ikey, want) -> None:  # type: ignore[no-untyped-def]
    algs = kernel_algorithms(encr, bits, bytes(keylen), integ, bytes(ikey))
    kind, name, n = want
    assert (algs.aead if kind == "aead" else algs.auth) == (name, n)


@pytest.mark.parametrize(
    "bad",
    [
        dict(encr_key=bytes(19)),  # GCM-128 needs 20 bytes
        dict(encr_id=99),
        dict(integ_id=12, integ_key=bytes(32)),  # AEAD with integrity
        dict(encr_id=12, encr_key_bits=128, encr_key=bytes(16), integ_id=12, integ_key=bytes(5)),
        dict(encr_id=11, encr_key_bits=None, encr_key=b""),  # NULL without integrity
        dict(dst=ip("2001:db8::2")),
        dict(spi=0),
        dict(spi=255),
        dict(replay_window=5000),
        dict(protocol="ipcomp"),
        dict(reqid=1 << 21),
    ],
)
def test_encode_sa_rejects_bad_input_clearly(bad: dict[str, object]) -> None:
    with pytest.raises(BackendError, match="XFRM"):
        encode_sa(sa(**bad), kernel_reqid(int(bad.get("reqid", 3))))  # type: ignore[call-overload]


def test_sa_repr_and_errors_never_show_keys() -> None:
    secret = bytes.fromhex("5ec2e7" * 8)
    s = sa(encr_key=secret[:20])
    assert secret[:20].hex() not in repr(s)
    with pytest.raises(BackendError) as ei:
        encode_sa(sa(encr_key=secret), 1)
    assert secret.hex() not in str(ei.value)


def test_reqid_range_marks_our_objects() -> None:
    assert kernel_reqid(0) == REQID_BASE
    assert kernel_reqid(16388) == REQID_BASE + 16388
    assert kernel_reqid(REQID_BASE + 5) == REQID_BASE + 5
    assert kernel_reqid(1, instance=2) == REQID_BASE + 2 * (1 << 20) + 1
    with pytest.raises(BackendError):
        kernel_reqid(0x40000000)


def test_policy_encoding_and_selectors() -> None:
    pol = PolicyParams(
        ts("198.51.100.0/24", 6, 1024, 2047), ts("203.0.113.7/32", 6, 443, 443), "fwd", 4, B, A
    )
    k = KernelPolicy.decode(encode_policy(pol, kernel_reqid(4)))
    sel = k.info.sel
    assert (str(sel.src_net), str(sel.dst_net), sel.proto) == (
        "198.51.100.0/24", "203.0.113.7/32", 6,
    )  # fmt: skip
    assert (sel.sport, sel.sport_mask, sel.dport, sel.dport_mask) == (1024, 0xFC00, 443, 0xFFFF)
    assert k.direction == "fwd" and k.info.priority == default_priority(sel, "fwd")
    assert len(k.tmpls) == 1
    t = k.tmpls[0]
    assert (t.saddr, t.daddr, t.reqid, t.mode, t.proto) == (B, A, REQID_BASE + 4, 1, 50)
    wide = policy_selector(ts("198.51.100.0/24"), ts("203.0.113.0/24"))
    assert default_priority(sel) < default_priority(wide)  # narrower wins


def test_policy_selector_icmp_and_bad_ranges() -> None:
    icmp = policy_selector(ts("192.0.2.0/24", 1, 0x0800, 0x08FF), ts("192.0.2.0/24", 1))
    assert (icmp.sport, icmp.sport_mask, icmp.dport_mask) == (8, 0xFFFF, 0)
    with pytest.raises(BackendError, match="cannot be expressed"):
        policy_selector(ts("192.0.2.0/24", 17, 1000, 1002), ts("192.0.2.0/24", 17))
    with pytest.raises(BackendError, match="mixes"):
        policy_selector(ts("192.0.2.0/24"), ts("2001:db8::/64"))
    with pytest.raises(BackendError, match="direction"):
        encode_policy(PolicyParams(ts("192.0.2.0/24"), ts("192.0.2.0/24"), "sideways", 1, A, B), 1)  # type: ignore[arg-type]


def test_parse_rejects_truncated_messages() -> None:
    with pytest.raises(S.XfrmDecodeError):
        S.parse_attrs(struct.pack("<HH", 200, 1) + bytes(4))
    with pytest.raises(S.XfrmDecodeError):
        S.split_messages(struct.pack("<IHHII", 100, 16, 0, 1, 0))
    with pytest.raises(S.XfrmDecodeError):
        S.UserSAInfo.unpack(bytes(100))
    with pytest.raises(S.XfrmDecodeError):
        KernelSA.decode(S.UserSAInfo().pack() + struct.pack("<HH", 3, 1))


def test_error_message_carries_kernel_extack() -> None:
    sock = XfrmSocket.__new__(XfrmSocket)
    sock._cap_ack = True
    text = b"Requested AEAD algorithm not found\0"
    body = (
        struct.pack("<i", -38)
        + S.NLMSGHDR.pack(300, S.XFRM_MSG_NEWSA, 5, 1, 0)
        + S.nlattr(S.NLMSGERR_ATTR_MSG, text)
    )
    err, extack = sock._error_of(body, S.NLM_F_ACK_TLVS)
    assert (err, extack) == (38, "Requested AEAD algorithm not found")
    e = XfrmError("XFRM NEWSA", err, extack, "hint")
    assert "Function not implemented" in str(e) and "AEAD algorithm not found" in str(e)


addr4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))


@given(
    spi=st.integers(0, 2**32 - 1), reqid=st.integers(0, 2**32 - 1), d=addr4, s=addr4,
    counters=st.tuples(*[st.integers(0, 2**64 - 1)] * 4), flags=st.integers(0, 255),
    window=st.integers(0, 255),
)  # fmt: skip
def test_usersa_info_round_trip(spi, reqid, d, s, counters, flags, window) -> None:  # type: ignore[no-untyped-def]
    info = S.UserSAInfo(
        daddr=d, spi=spi, saddr=s, reqid=reqid, family=socket.AF_INET, flags=flags,
        replay_window=window, curlft=S.LifetimeCur(*counters),
        sel=S.Selector(family=socket.AF_INET, daddr=d, saddr=s),
    )  # fmt: skip
    assert S.UserSAInfo.unpack(info.pack()) == info


def test_expire_events_decoded_for_our_sas_only() -> None:
    def expire(reqid: int, hard: bool, packets: int, seconds_only: bool = False) -> bytes:
        info = S.UserSAInfo(
            daddr=B, spi=0x2001, saddr=A, reqid=reqid, family=socket.AF_INET,
            lft=S.LifetimeCfg(soft_packet_limit=3, hard_packet_limit=6,
                              soft_byte_limit=10**6, hard_byte_limit=2 * 10**6),
            curlft=S.LifetimeCur(bytes=500, packets=0 if seconds_only else packets),
        )  # fmt: skip
        return info.pack() + bytes([hard]) + bytes(7)

    def own(r: int) -> bool:
        return r == REQID_BASE + 1

    soft = decode_expire(expire(REQID_BASE + 1, False, 3), own)
    assert soft is not None and (soft.dst, soft.spi, soft.protocol) == (B, 0x2001, "esp")
    assert (soft.hard, soft.reason) == (False, "packets")
    hard = decode_expire(expire(REQID_BASE + 1, True, 6), own)
    assert hard is not None and (hard.hard, hard.reason) == (True, "packets")
    timed = decode_expire(expire(REQID_BASE + 1, True, 0, seconds_only=True), own)
    assert timed is not None and timed.reason == "seconds"
    assert decode_expire(expire(16388, True, 6), own) is None
    with pytest.raises(S.XfrmDecodeError):
        decode_expire(bytes(100), own)


@given(st.binary(max_size=600))
def test_decoders_raise_only_decode_errors(data: bytes) -> None:
    """Whatever the kernel (or a fuzzer) hands us: a result or XfrmDecodeError, never a crash."""
    for decode in (S.split_messages, S.parse_attrs, KernelSA.decode, KernelPolicy.decode):
        try:
            decode(data)
        except S.XfrmDecodeError:
            pass
    try:
        decode_expire(data, lambda r: True)
    except S.XfrmDecodeError:
        pass


@given(
    attrs=st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=90)), max_size=6),
    policy=st.booleans(),
)
def test_decoders_survive_odd_attributes(attrs: list[tuple[int, bytes]], policy: bool) -> None:
    """A valid fixed part followed by attributes of any type and any (short) length."""
    head = S.UserPolicyInfo().pack() if policy else S.UserSAInfo().pack()
    body = head + b"".join(S.nlattr(t, p) for t, p in attrs)
    try:
        (KernelPolicy if policy else KernelSA).decode(body)
    except S.XfrmDecodeError:
        pass


def test_short_algorithm_attribute_is_a_decode_error() -> None:
    body = S.UserSAInfo().pack() + S.nlattr(S.XFRMA_ALG_AEAD, b"rfc4106")
    with pytest.raises(S.XfrmDecodeError, match="malformed SA"):
        KernelSA.decode(body)


def test_acquire_decoded_for_our_policies_only() -> None:
    """XFRM_MSG_ACQUIRE (struct xfrm_user_acquire, 280 bytes): on-demand negotiation."""
    sel = S.Selector(
        family=socket.AF_INET, saddr=ip("198.51.100.1"), daddr=ip("203.0.113.1"),
        prefixlen_s=32, prefixlen_d=32, proto=6, dport=443, dport_mask=0xFFFF,
    )  # fmt: skip

    def acquire(reqid: int) -> bytes:
        tmpl = S.UserTmpl(daddr=B, family=socket.AF_INET, saddr=A, reqid=reqid)
        head = S.pack_id(B, 0, 50) + S.pack_addr(A) + sel.pack() + S.UserPolicyInfo().pack()
        return head + struct.pack("<IIII", 0, 0, 0, 77) + S.nlattr(S.XFRMA_TMPL, tmpl.pack())

    assert S.USER_ACQUIRE_SIZE == 280 and len(acquire(0)) == 280 + 4 + 64
    acq = decode_acquire(acquire(REQID_BASE + 8), REQID_BASE, REQID_BASE + (1 << 20))
    assert acq is not None
    assert (acq.reqid, acq.local, acq.remote) == (8, A, B)
    assert str(acq.src) == "198.51.100.1/32/6/0-65535" or acq.src.network == net("198.51.100.1/32")
    assert (acq.dst.network, acq.dst.protocol, acq.dst.port_start, acq.dst.port_end) == (
        net("203.0.113.1/32"), 6, 443, 443,
    )  # fmt: skip
    assert decode_acquire(acquire(16388), REQID_BASE, REQID_BASE + (1 << 20)) is None
    with pytest.raises(S.XfrmDecodeError):
        decode_acquire(bytes(100), REQID_BASE, REQID_BASE + 1)


def test_inbound_policies_and_sa_carry_the_selector_protocol_and_ports() -> None:
    """Issue 12 item 1 for XFRM: an SA negotiated for 198.51.100.0/24/udp/5353 (local)
    with 203.0.113.0/24/udp (remote).  The IN and FWD policies (as the engine emits
    them, and as Libreswan installs them) select UDP to port 5353 only, so the kernel
    drops decrypted ICMP, TCP/22 or UDP/9999 (XfrmInNoPols / XfrmInTmplMismatch); the
    inbound SA's own selector says the same, which also covers transport mode
    (a transport packet that matches no IN policy is otherwise accepted)."""
    local, remote = ts("198.51.100.0/24", 17, 5353, 5353), ts("203.0.113.0/24", 17)
    for direction in ("in", "fwd"):
        k = KernelPolicy.decode(encode_policy(
            PolicyParams(remote, local, direction, 7, B, A), kernel_reqid(7)))  # type: ignore[arg-type]
        sel = k.info.sel
        assert k.direction == direction
        assert (str(sel.src_net), str(sel.dst_net), sel.proto) == (
            "203.0.113.0/24", "198.51.100.0/24", 17)
        assert (sel.sport, sel.sport_mask) == (0, 0)  # any source port
        assert (sel.dport, sel.dport_mask) == (5353, 0xFFFF)
        assert (k.tmpls[0].saddr, k.tmpls[0].daddr, k.tmpls[0].reqid) == (
            B, A, REQID_BASE + 7)
    for mode in ("tunnel", "transport"):
        sa = SAParams(src=B, dst=A, spi=0x1234, direction="in", mode=mode,  # type: ignore[arg-type]
                      encr_id=20, encr_key_bits=256, encr_key=bytes(36), local_ts=[local], remote_ts=[remote])
        ksel = KernelSA.decode(encode_sa(sa, kernel_reqid(7))).info.sel
        assert (ksel.proto, ksel.dport, ksel.dport_mask, ksel.sport_mask) == (17, 5353, 0xFFFF, 0)
        assert (ksel.prefixlen_s, ksel.prefixlen_d) == (0, 0)  # addresses: the policies
    icmp = SAParams(src=B, dst=A, spi=0x1234, direction="in", mode="transport", encr_id=20,
                    encr_key_bits=256,
                    encr_key=bytes(36), local_ts=[ts("192.0.2.1/32", 1, 0x0800, 0x0800)],
                    remote_ts=[ts("192.0.2.2/32", 1)])
    ksel = KernelSA.decode(encode_sa(icmp, kernel_reqid(7))).info.sel
    assert (ksel.proto, ksel.sport, ksel.sport_mask, ksel.dport, ksel.dport_mask) == (
        1, 8, 0xFFFF, 0, 0xFFFF)  # echo request: type in sport, code in dport
    # outbound SAs and any-protocol selectors keep the wildcard selector
    out = SAParams(src=A, dst=B, spi=0x1235, direction="out", encr_id=20, encr_key_bits=256, encr_key=bytes(36),
                   local_ts=[local], remote_ts=[remote])
    assert KernelSA.decode(encode_sa(out, kernel_reqid(7))).info.sel.proto == 0
