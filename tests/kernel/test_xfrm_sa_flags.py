"""SA flags on the XFRM plane: tfc=, encap-dscp=, decap-dscp=, nopmtudisc=.

tfc=: XFRMA_TFCPAD (22, a u32 in <linux/xfrm.h>) on outbound SAs.
The kernel pads each inner packet of a tunnel-mode ESP SA up to that size, at most
to the path MTU (its esp_output); the engine sets ``tfc_pad`` only on outbound
tunnel-mode ESP SAs whose peer did not send ESP_TFC_PADDING_NOT_SUPPORTED
(tests/config/test_cfg_effects.py).  A MOBIKE move keeps it.

decap-dscp=yes: XFRM_STATE_DECAP_DSCP (2) and nopmtudisc=yes: XFRM_STATE_NOPMTUDISC (4)
in the SA's flags; encap-dscp=no: XFRM_SA_XFLAG_DONT_ENCAP_DSCP (1) in
XFRMA_SA_EXTRA_FLAGS (24).  The kernel's defaults (the keys unset) set none of them.
"""

from __future__ import annotations

import ipaddress
import struct

from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import encode_sa, moved_sa_body
from pypluto.params import SAParams

L, R, C = (ipaddress.ip_address(a) for a in ("192.0.2.1", "192.0.2.2", "192.0.2.3"))
TFCPAD = 22


def sa(direction: str, tfc: int) -> SAParams:
    return SAParams(src=L, dst=R, spi=0x1234, direction=direction,  # type: ignore[arg-type]
                    reqid=1, mode="tunnel", encr_id=20, encr_key=bytes(36),
                    encr_key_bits=256, tfc_pad=tfc)


def tfcpad(body: bytes) -> list[int]:
    return [struct.unpack("=I", raw)[0]
            for raw in S.parse_attrs(body, S.USERSA_INFO_SIZE).get(TFCPAD, [])]


def test_outbound_sa_carries_tfcpad_and_keeps_it_when_moved() -> None:
    body = encode_sa(sa("out", 1000), 0x50500001)
    assert tfcpad(body) == [1000]
    assert tfcpad(moved_sa_body(body, C, R, None)) == [1000]
    assert tfcpad(encode_sa(sa("out", 0), 0x50500001)) == []
    assert tfcpad(encode_sa(sa("in", 1000), 0x50500001)) == []  # padding is the sender's


def _sa_of(conf: str) -> list[SAParams]:
    """The kernel SAs of a Child SA of a conn read from ipsec.conf text (both ends)."""
    from ike.harness import Net

    from pypluto.config.parser import parse_config_text

    cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
                            "\tauthby=secret\n" + conf, "f")
    c = cfg.conns["c"]
    kw = {k: getattr(c, k) for k in ("encap_dscp", "decap_dscp", "nopmtudisc")}
    net = Net(west_kw=kw)
    net.up()
    return list(net.west.kernel_sas.values())


def test_dscp_and_pmtu_flags_reach_the_xfrm_sas() -> None:
    """ipsec.conf text -> engine -> the XFRM message, both SAs of the pair."""
    def flags(body: bytes) -> int:
        return S.UserSAInfo.unpack(body[:S.USERSA_INFO_SIZE]).flags

    def extra(body: bytes) -> list[int]:
        return [struct.unpack("=I", raw)[0] for raw in
                S.parse_attrs(body, S.USERSA_INFO_SIZE).get(S.XFRMA_SA_EXTRA_FLAGS, [])]

    defaults = _sa_of("")
    assert len(defaults) == 2
    for sa_ in defaults:
        body = encode_sa(sa_, 0x50500001)
        assert flags(body) & (S.XFRM_STATE_DECAP_DSCP | S.XFRM_STATE_NOPMTUDISC) == 0
        assert extra(body) == []
    turned = _sa_of("\tencap-dscp=no\n\tdecap-dscp=yes\n\tnopmtudisc=yes\n")
    assert len(turned) == 2
    for sa_ in turned:
        body = encode_sa(sa_, 0x50500001)
        assert flags(body) & S.XFRM_STATE_DECAP_DSCP == 2
        assert flags(body) & S.XFRM_STATE_NOPMTUDISC == 4
        assert extra(body) == [S.XFRM_SA_XFLAG_DONT_ENCAP_DSCP] == [1]


def test_sha2_truncbug_asks_xfrm_for_96_bit_hmac_sha256() -> None:
    """sha2-truncbug=yes: ESP SAs with HMAC-SHA2-256 go to the kernel as
    hmac(sha256) truncated to 96 bits (Libreswan's kernel_xfrm does the same); without
    it 128 (RFC 4868 §2.3); HMAC-SHA2-512 keeps its 256 bits; AH keeps 128 (Libreswan
    applies the bug to ESP only).  The userspace plane's wire lengths are in
    tests/daemon/test_userspace_truncbug.py."""
    from ike.harness import Net

    def auth_bits(esp: str, bug: bool, phase2: str = "esp") -> set[tuple[str, int]]:
        from pypluto.config.proposals import parse_proposals

        kw: dict[str, object] = {"sha2_truncbug": bug}
        if phase2 == "ah":
            kw.update(phase2="ah", ah=parse_proposals(esp, "AH"))
        else:
            kw["esp"] = esp
        net = Net(west_kw=kw, east_kw=kw)
        net.up()
        sas = list(net.west.kernel_sas.values())
        assert len(sas) == 2, net.west.logs()
        out = set()
        for sa_ in sas:
            attrs = S.parse_attrs(encode_sa(sa_, 0x50500001), S.USERSA_INFO_SIZE)
            name, _klen, bits = S.unpack_algo_trunc(attrs[S.XFRMA_ALG_AUTH_TRUNC][0])
            out.add((name, bits))
        return out

    assert auth_bits("aes256-sha2_256", False) == {("hmac(sha256)", 128)}
    assert auth_bits("aes256-sha2_256", True) == {("hmac(sha256)", 96)}
    assert auth_bits("aes256-sha2_512", True) == {("hmac(sha512)", 256)}
    assert auth_bits("sha2_256", True, "ah") == {("hmac(sha256)", 128)}
