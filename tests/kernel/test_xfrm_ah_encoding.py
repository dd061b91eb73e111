"""XFRM encoding of AH SAs (RFC 4302): protocol 51, XFRMA_ALG_AUTH_TRUNC only, no cipher.

Layouts as in ``test_xfrm_encoding.py`` (Linux UAPI, 64-bit little endian); the
same SAs are installed in a real kernel by ``tests/espkernel/test_ah_uml.py``.
"""

from __future__ import annotations

import ipaddress
import struct
import sys

import pytest

from pypluto.iana import Integ
from pypluto.kernel.base import BackendError, PolicyParams, SAParams, TrafficSelector
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import KernelPolicy, KernelSA, encode_policy, encode_sa

pytestmark = pytest.mark.skipif(
    sys.byteorder != "little" or struct.calcsize("P") != 8,
    reason="layouts are checked for 64-bit little-endian machines",
)

ip = ipaddress.ip_address
A, B = ip("192.0.2.1"), ip("192.0.2.2")
A6, B6 = ip("2001:db8::1"), ip("2001:db8::2")


def ah_sa(**kw: object) -> SAParams:
    base: dict[str, object] = dict(src=A, dst=B, spi=0x7101, direction="in", protocol="ah",
                                   reqid=4, integ_id=Integ.HMAC_SHA2_256_128,
                                   integ_key=bytes(range(32)))
    base.update(kw)
    return SAParams(**base)  # type: ignore[arg-type]


def test_ah_proto_constant_and_attribute_numbers() -> None:
    assert S.IPPROTO_AH == 51 and S.PROTOCOLS["ah"] == 51
    assert S.XFRMA_ALG_AUTH_TRUNC == 20 and S.XFRMA_ALG_AUTH == 1


@pytest.mark.parametrize("integ, klen, name, bits", [
    (Integ.HMAC_SHA1_96, 20, "hmac(sha1)", 96),
    (Integ.HMAC_SHA2_256_128, 32, "hmac(sha256)", 128),
    (Integ.HMAC_SHA2_384_192, 48, "hmac(sha384)", 192),
    (Integ.HMAC_SHA2_512_256, 64, "hmac(sha512)", 256),
    (Integ.AES_XCBC_96, 16, "xcbc(aes)", 96),
    (Integ.AES_CMAC_96, 16, "cmac(aes)", 96),
])
def test_ah_sa_carries_auth_trunc_only(integ: int, klen: int, name: str, bits: int) -> None:
    key = bytes(range(klen))
    body = encode_sa(ah_sa(integ_id=integ, integ_key=key), 0x123)
    # xfrm_usersa_info: the id's protocol byte sits after daddr (16) and SPI (4)
    assert body[S.SELECTOR_SIZE + 20] == 51
    assert struct.unpack_from("!I", body, S.SELECTOR_SIZE + 16)[0] == 0x7101
    attrs = S.parse_attrs(body, S.USERSA_INFO_SIZE)
    # no CRYPT, AEAD, ENCAP or legacy AUTH (the kernel's 96-bit default truncation)
    assert set(attrs) == {S.XFRMA_ALG_AUTH_TRUNC, S.XFRMA_REPLAY_ESN_VAL}  # window 128 > 32
    raw = attrs[S.XFRMA_ALG_AUTH_TRUNC][0]
    assert S.unpack_algo_trunc(raw) == (name, klen * 8, bits)
    assert raw[72:] == key
    k = KernelSA.decode(body)
    assert (k.proto, k.spi, k.src, k.dst) == (51, 0x7101, A, B)
    assert k.crypt is None and k.aead is None and k.auth_trunc == (name, klen * 8, bits)


def test_ah_sa_esn_transport_ipv6_and_window() -> None:
    k = KernelSA.decode(encode_sa(ah_sa(src=A6, dst=B6, esn=True, mode="transport",
                                        replay_window=256), 7))
    assert k.proto == 51 and k.mode == S.XFRM_MODE_TRANSPORT
    assert k.flags & S.XFRM_STATE_ESN and k.replay_esn is not None and k.replay_esn[5] == 256
    k2 = KernelSA.decode(encode_sa(ah_sa(replay_window=32), 7))
    assert k2.info.replay_window == 32 and not k2.flags & S.XFRM_STATE_ESN


@pytest.mark.parametrize("bad, msg", [
    (dict(encr_id=12, encr_key_bits=128, encr_key=bytes(16)), "no encryption"),
    (dict(encr_key=bytes(16)), "no encryption"),
    (dict(integ_id=0, integ_key=b""), "integrity transform 0"),
    (dict(integ_key=bytes(20)), "32-byte key"),
    (dict(encap_sport=4500, encap_dport=4500), "ESP only"),
    (dict(spi=0x10), "invalid SPI"),
])
def test_ah_sa_refused_clearly(bad: dict[str, object], msg: str) -> None:
    with pytest.raises(BackendError, match=msg):
        encode_sa(ah_sa(**bad), 7)


def test_ah_policy_template_is_protocol_51() -> None:
    pol = PolicyParams(TrafficSelector(ipaddress.ip_network("198.51.100.0/24")),
                       TrafficSelector(ipaddress.ip_network("203.0.113.0/24")),
                       "out", 4, A, B, protocol="ah")
    kp = KernelPolicy.decode(encode_policy(pol, 9))
    assert [t.proto for t in kp.tmpls] == [51]


def test_ipv4_ah_asks_the_kernel_for_32_bit_alignment() -> None:
    """RFC 4302 §3.3.3.2.1: Linux pads IPv4 AH to 64 bits unless XFRM_STATE_ALIGN4."""
    v4 = KernelSA.decode(encode_sa(ah_sa(), 7))
    v6 = KernelSA.decode(encode_sa(ah_sa(src=A6, dst=B6), 7))
    esp = KernelSA.decode(encode_sa(ah_sa(protocol="esp", encr_id=12, encr_key_bits=128,
                                          encr_key=bytes(16)), 7))
    assert v4.flags & S.XFRM_STATE_ALIGN4
    assert not v6.flags & S.XFRM_STATE_ALIGN4 and not esp.flags & S.XFRM_STATE_ALIGN4
