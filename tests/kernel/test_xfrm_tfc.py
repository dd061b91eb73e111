"""tfc= on the XFRM plane: XFRMA_TFCPAD (22, a u32 in <linux/xfrm.h>) on outbound SAs.

The kernel pads each inner packet of a tunnel-mode ESP SA up to that size, at most
to the path MTU (its esp_output); the engine sets ``tfc_pad`` only on outbound
tunnel-mode ESP SAs whose peer did not send ESP_TFC_PADDING_NOT_SUPPORTED
(tests/config/test_cfg_effects.py).  A MOBIKE move keeps it.
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
