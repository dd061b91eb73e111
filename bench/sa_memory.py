"""Memory of the userspace plane's SA state per IKE+Child pair, without a daemon (issue 18).

Installs ``N`` (10,000) pairs of ESP SAs (AES-GCM-16 256, tunnel mode, one
selector pair each: the ``bench/ike_hold.py`` pairs) in a
:class:`~pypluto.kernel.userspace.sa_table.SATable` with the inbound selector
check the plane gives each inbound SA, and reports the growth of VmRSS and of
what tracemalloc sees, per pair.  The SAParams are made as the engine makes
them (fresh selector objects per Child SA).  No TUN device, no root.

``python -m bench.sa_memory [N] [--trace]``
"""

from __future__ import annotations

import gc
import ipaddress
import os
import sys
import tracemalloc

from pypluto.iana import Encr
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.kernel.userspace.selectors import inbound_check
from pypluto.params import SAParams, TrafficSelector


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def params(i: int, direction: str) -> SAParams:
    us, peer = ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("192.0.2.1")
    lts = [TrafficSelector(ipaddress.ip_network("203.0.113.0/24"))]
    rts = [TrafficSelector(ipaddress.ip_network("198.51.100.0/24"))]
    src, dst = (peer, us) if direction == "in" else (us, peer)
    return SAParams(src=src, dst=dst, spi=0x10000 + 2 * i + (direction == "in"),
                    direction=direction,  # type: ignore[arg-type]
                    reqid=16384 + i, encr_id=Encr.AES_GCM_16, encr_key_bits=256,
                    encr_key=os.urandom(36), encap_sport=4500, encap_dport=4500,
                    local_ts=lts, remote_ts=rts, conn_name="resp", serial=i)


def measure(n: int = 10000, trace: bool = False) -> dict[str, float]:
    table = SATable()
    pending = [(params(i, "in"), params(i, "out")) for i in range(n)]
    gc.collect()
    if trace:
        tracemalloc.start()
    r0, t0 = rss_kib(), tracemalloc.get_traced_memory()[0]
    for sin, sout in pending:
        table.add(sin, None, inbound_check(sin))
        table.add(sout, None, None)
    del pending  # the engine's copies are gone after install
    gc.collect()
    out = {"rss_b_per_pair": (rss_kib() - r0) * 1024 / n}
    if trace:
        out["traced_b_per_pair"] = (tracemalloc.get_traced_memory()[0] - t0) / n
        snap = tracemalloc.take_snapshot()
        for s in snap.statistics("lineno")[:15]:
            print(f"{s.size / n:8.0f} B {s.count / n:5.2f}  {s.traceback}")
    return out


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    print(measure(int(args[0]) if args else 10000, "--trace" in sys.argv))
