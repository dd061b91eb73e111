"""XFRM shunt policies (type=passthrough|drop|reject, issue 16): encoding only.

The kernel side (pings through and blocked, a restart's flush) runs in the ESP
kernel: tests/espkernel (guest scenario ``shunts``).
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.kernel.base import BackendError
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import (
    default_priority,
    encode_policy,
    encode_shunt,
    policy_selector,
)
from pypluto.params import PolicyParams, TrafficSelector

A = TrafficSelector(ipaddress.ip_network("198.51.100.0/24"))
B = TrafficSelector(ipaddress.ip_network("203.0.113.5/32"))
L, R = ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2")


@pytest.mark.parametrize(("action", "xfrm"), [("pass", S.XFRM_POLICY_ALLOW),
                                              ("drop", S.XFRM_POLICY_BLOCK),
                                              ("reject", S.XFRM_POLICY_BLOCK)])
def test_shunt_has_no_template_our_index_and_a_better_priority(action: str, xfrm: int) -> None:
    pol = PolicyParams(A, B, "out", 9, L, R, action=action)  # type: ignore[arg-type]
    index = 0x50500000 + (1 << 3) + S.POLICY_DIRS["out"]
    body = encode_shunt(pol, index)
    assert len(body) == S.USERPOLICY_INFO_SIZE  # no XFRMA_TMPL
    info = S.UserPolicyInfo.unpack(body)
    assert info.action == xfrm and info.index == index and info.index & 3 == info.dir
    assert info.priority == default_priority(policy_selector(A, B)) - 1
    with pytest.raises(BackendError):
        encode_policy(pol, 9)
