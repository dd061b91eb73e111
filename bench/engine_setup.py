"""Engine benchmark: responder CPU and memory per IKE SA (IKE_SA_INIT + IKE_AUTH with
PSK and one Child SA), two engines in one process, no sockets.

``python -m bench.engine_setup [N]``; ``run()`` is used by ``bench/run.py``.
"""

from __future__ import annotations

import ipaddress
import sys
import time
import tracemalloc

from pypluto.config.ids import parse_id
from pypluto.config.model import Connection, End
from pypluto.config.proposals import parse_proposals
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

EAST = ipaddress.ip_address("192.0.2.2")


class _Store:
    def psk_for(self, *a: object) -> bytes:
        return b"benchmark pre-shared key"


def _conn(name: str, west: object, local_left: bool, ike: str | None) -> Connection:
    c = Connection(
        name=name,
        left=End(host=str(west), host_addr=west, id=parse_id(f"@{name}.west"),  # type: ignore[arg-type]
                 subnets=[ipaddress.ip_network("198.51.100.0/24")]),
        right=End(host=str(EAST), host_addr=EAST, id=parse_id("@east"),
                  subnets=[ipaddress.ip_network("203.0.113.0/24")]),
        authby="secret", auto="add", local_is_left=local_left)
    if ike:
        c.ike = parse_proposals(ike, "IKE")
    return c


def measure(n: int = 300, ike: str | None = None, trace: bool = False) -> dict[str, float]:
    settings = EngineSettings(ddos_ike_threshold=10**9, uniqueids=False)
    east = Engine(settings, _Store(), local_addrs=[EAST])
    wests = []
    for i in range(n):
        addr = ipaddress.ip_address(f"10.{i // 250}.{i % 250}.1")
        w = Engine(EngineSettings(), _Store(), local_addrs=[addr])
        c = _conn("c", addr, True, ike)
        c.left.id = parse_id(f"@w{i}.west")
        w.add_connection(c)
        wests.append((w, addr))
    # east: one %any connection serves all
    rc = _conn("c", "%any", False, ike)
    rc.left.host_addr = None
    rc.left.host = "%any"
    rc.left.id = None
    east.add_connection(rc)
    now = 1000.0
    cpu = 0.0
    if trace:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if trace else 0
    for w, addr in wests:
        pending = [a for a in w.initiate("c", now) if isinstance(a, SendPacket)]
        while pending:
            nxt = []
            for p in pending:
                t0 = time.process_time()
                out = east.receive(p.data, Endpoint(EAST, p.remote.port),
                                   Endpoint(addr, p.local.port), now)
                cpu += time.process_time() - t0
                for a in out:
                    if isinstance(a, SendPacket):
                        nxt += [b for b in w.receive(a.data, Endpoint(addr, a.remote.port),
                                                     Endpoint(EAST, a.local.port), now)
                                if isinstance(b, SendPacket)]
            pending = nxt
    mem = 0
    if trace:
        mem = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
    est = sum(1 for i in east.by_serial.values() if i.established and i.children)
    assert est == n, f"only {est}/{n} established"
    return {"cpu_ms": cpu / n * 1000, "mem_bytes": mem / n, "n": n}


def run() -> dict:
    rows = []
    for label, ike in (("default (AES_GCM_16_256, DH19)", None),
                       ("aes_gcm256-sha2_512-dh31", "aes_gcm256-sha2_512-dh31"),
                       ("aes256-sha2_256-modp2048", "aes256-sha2_256-modp2048")):
        r = measure(200 if "modp" not in label else 60, ike)
        m = measure(50, ike, trace=True)
        rows.append({"metric": f"responder CPU per IKE SA+Child, {label}",
                     "pypluto": round(r["cpu_ms"], 3), "unit": "ms",
                     "note": f"n={r['n']}, process time in Engine.receive"})
        rows.append({"metric": f"responder memory per IKE SA+Child, {label}",
                     "pypluto": round(m["mem_bytes"]), "unit": "bytes",
                     "note": "tracemalloc, n=50, includes protector objects"})
    return {"name": "engine_setup", "rows": rows, "command": "python -m bench.engine_setup"}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for ike in (None, "aes_gcm256-sha2_512-dh31"):
        print(ike or "default", measure(n, ike), measure(50, ike, trace=True)["mem_bytes"])
