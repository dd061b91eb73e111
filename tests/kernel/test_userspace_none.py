"""The recording backend (kernel/none.py) used by --use-none and the daemon's tests."""

from __future__ import annotations

import ipaddress

from pypluto.kernel.base import KernelBackend, PolicyParams, SAParams, SAStats, TrafficSelector
from pypluto.kernel.none import NoneBackend

A = ipaddress.ip_address
TS1 = TrafficSelector(ipaddress.ip_network("198.51.100.0/24"))
TS2 = TrafficSelector(ipaddress.ip_network("203.0.113.0/24"))


def test_records_and_forgets() -> None:
    be = NoneBackend()
    assert isinstance(be, KernelBackend) and be.name == "none"
    sa = SAParams(src=A("192.0.2.1"), dst=A("192.0.2.2"), spi=0x1234, direction="out",
                  encr_key=b"TOPSECRETKEY")
    pol = PolicyParams(src=TS1, dst=TS2, direction="out", reqid=1, tmpl_src=A("192.0.2.1"),
                       tmpl_dst=A("192.0.2.2"))
    be.add_sa(sa)
    be.add_policy(pol)
    assert be.get_sa_stats(A("192.0.2.2"), 0x1234) == SAStats()
    assert be.get_sa_stats(A("192.0.2.2"), 0x9999) is None
    assert [c[0] for c in be.calls] == ["add_sa", "add_policy", "get_sa_stats", "get_sa_stats"]
    assert "TOPSECRET" not in repr(be.calls)
    be.del_policy(pol)
    be.del_policy(pol)  # unknown policies are ignored
    be.del_sa(A("192.0.2.2"), 0x1234)
    be.del_sa(A("192.0.2.2"), 0x1234)
    assert not be.sas and not be.policies
    be.add_sa(sa)
    be.handle_esp(b"\x00\x00\x12\x34rest", ("192.0.2.1", 4500), ("192.0.2.2", 4500))
    assert be.esp_received == [(b"\x00\x00\x12\x34rest", ("192.0.2.1", 4500),
                                ("192.0.2.2", 4500))]
    be.flush_own()
    assert not be.sas
    be.close()
    assert be.closed and be.calls[-1] == ("close", None)
    assert be.attach_nat_socket(None, ("0.0.0.0", 4500), lambda d, a: None) is False  # type: ignore[arg-type]
