"""MOBIKE on the XFRM plane (RFC 4555 §3.5, issue 15): ``moved_sa_body`` turns the
kernel's copy of an SA (a GETSA reply) into the NEWSA of the same SA at new outer
addresses, keeping keys, replay state and lifetimes.  The kernel side is exercised in
the ESP kernel (``tests/espkernel``, scenario ``mobike``)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pypluto.iana import Encr, Integ
from pypluto.kernel.base import BackendError, SAParams
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import KernelSA, encode_sa, moved_sa_body

A, B, C = (ipaddress.ip_address(a) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.11"))
V6 = ipaddress.ip_address("2001:db8::1")
REPLAY = struct.pack("=3I", 1234, 1200, 0xFFFF0000)  # struct xfrm_replay_state


def _getsa_reply(*, encap: bool = False, protocol: str = "esp") -> bytes:
    """What the kernel answers to GETSA for an SA we added: our NEWSA body with its
    current counters, plus the attributes a dump adds."""
    if protocol == "ah":
        sa = SAParams(A, B, 0x1001, "out", protocol="ah", integ_id=Integ.HMAC_SHA2_256_128,
                      integ_key=bytes(32), replay_window=32)
    else:
        sa = SAParams(A, B, 0x1001, "out", encr_id=Encr.AES_CBC, encr_key_bits=128,
                      encr_key=bytes(16), integ_id=Integ.HMAC_SHA2_256_128,
                      integ_key=bytes(range(32)), replay_window=32,
                      encap_sport=4500 if encap else None,
                      encap_dport=4500 if encap else None)
    body = encode_sa(sa, 0x4000_0001)
    info = S.UserSAInfo.unpack(body)
    info.curlft = S.LifetimeCur(bytes=5000, packets=40, add_time=1_700_000_000,
                                use_time=1_700_000_100)
    attrs = body[S.USERSA_INFO_SIZE:]
    extra = S.nlattr(S.XFRMA_ALG_AUTH, S.pack_algo("hmac(sha256)", bytes(range(32))))
    extra += S.nlattr(S.XFRMA_REPLAY_VAL, REPLAY) + S.nlattr(S.XFRMA_LASTUSED, bytes(8))
    return info.pack() + attrs + extra


def test_moved_sa_keeps_keys_replay_state_and_lifetimes() -> None:
    old = _getsa_reply()
    new = moved_sa_body(old, A, C, None)
    info = S.UserSAInfo.unpack(new)
    assert (info.saddr, info.daddr, info.spi, info.reqid) == (A, C, 0x1001, 0x4000_0001)
    attrs = S.parse_attrs(new, S.USERSA_INFO_SIZE)
    before = S.parse_attrs(old, S.USERSA_INFO_SIZE)
    for kept in (S.XFRMA_ALG_CRYPT, S.XFRMA_ALG_AUTH_TRUNC):
        assert attrs[kept] == before[kept]  # the same keys
    assert attrs[S.XFRMA_REPLAY_VAL] == [REPLAY]  # the sequence numbers go on (RFC 4303)
    assert S.LifetimeCur.unpack(attrs[S.XFRMA_LTIME_VAL][0]) == S.UserSAInfo.unpack(old).curlft
    # the untruncated copy goes (AUTH_TRUNC says it all); LASTUSED is not the kernel's to take
    assert S.XFRMA_ALG_AUTH not in attrs and S.XFRMA_LASTUSED not in attrs
    assert S.XFRMA_ENCAP not in attrs
    assert KernelSA.decode(new).auth_trunc == KernelSA.decode(old).auth_trunc


def test_moved_sa_gets_the_new_nat_ports() -> None:
    new = moved_sa_body(_getsa_reply(encap=True), A, B, (4500, 28227))
    assert KernelSA.decode(new).encap == (S.UDP_ENCAP_ESPINUDP, 4500, 28227)
    plain = moved_sa_body(_getsa_reply(encap=True), A, B, None)  # out from behind the NAT
    assert KernelSA.decode(plain).encap is None


def test_esn_window_stays_in_its_attribute() -> None:
    sa = SAParams(A, B, 0x1001, "in", encr_id=Encr.AES_GCM_16, encr_key_bits=256,
                  encr_key=bytes(36), esn=True, replay_window=128)
    new = moved_sa_body(encode_sa(sa, 0x4000_0001), C, B, None)
    info = S.UserSAInfo.unpack(new)
    assert info.replay_window == 0 and info.flags & S.XFRM_STATE_ESN
    assert S.XFRMA_REPLAY_ESN_VAL in S.parse_attrs(new, S.USERSA_INFO_SIZE)


def test_refused_moves() -> None:
    with pytest.raises(BackendError, match="address family"):
        moved_sa_body(_getsa_reply(), V6, V6, None)
    with pytest.raises(BackendError, match="ESP only"):
        moved_sa_body(_getsa_reply(protocol="ah"), A, C, (4500, 4500))
