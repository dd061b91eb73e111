"""Engine benchmark: responder CPU and memory per IKE SA (IKE_SA_INIT + IKE_AUTH with
PSK and one Child SA, or childless with ``childless=True``, RFC 6023), two engines in
one process, no sockets.

The responder runs with ``ddos_mode=unlimited``: every request arrives at the same
engine time, so the request-rate gate (``ddos_init_rate``) would otherwise answer
about half of them with a COOKIE and the figure would include those round trips.

``python -m bench.engine_setup [N]``; ``run()`` is used by ``bench/run.py``.
"""

from __future__ import annotations

import gc
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


def _conn(name: str, west: object, local_left: bool, ike: str | None,
          childless: bool = False) -> Connection:
    c = Connection(
        name=name,
        left=End(host=str(west), host_addr=west, id=parse_id(f"@{name}.west"),  # type: ignore[arg-type]
                 subnets=[ipaddress.ip_network("198.51.100.0/24")]),
        right=End(host=str(EAST), host_addr=EAST, id=parse_id("@east"),
                  subnets=[ipaddress.ip_network("203.0.113.0/24")]),
        authby="secret", auto="add", local_is_left=local_left)
    if ike:
        c.ike = parse_proposals(ike, "IKE")
    if childless:
        c.raw["childless"] = "yes"
    return c


def measure(n: int = 300, ike: str | None = None, trace: bool = False,
            childless: bool = False) -> dict[str, float]:
    settings = EngineSettings(ddos_mode="unlimited", ddos_ike_threshold=10**9,
                              uniqueids=False)
    if trace:
        # the responder's memory alone: traced from before it exists to after the
        # initiators are gone (module-level caches it fills count too)
        gc.collect()
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0] if trace else 0
    east = Engine(settings, _Store(), local_addrs=[EAST])
    wests = []
    for i in range(n):
        addr = ipaddress.ip_address(f"10.{i // 250}.{i % 250}.1")
        w = Engine(EngineSettings(), _Store(), local_addrs=[addr])
        c = _conn("c", addr, True, ike, childless)
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
    est = sum(1 for i in east.by_serial.values()
              if i.established and (childless or i.children))
    assert est == n, f"only {est}/{n} established"
    mem = 0
    if trace:
        del wests, w, pending
        gc.collect()
        mem = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
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
                     "note": "tracemalloc, n=50, the responder engine alone (initiators dropped first)"})
    return {"name": "engine_setup", "rows": rows, "command": "python -m bench.engine_setup"}


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    for ike in (None, "aes_gcm256-sha2_512-dh31"):
        print(ike or "default", measure(n, ike), measure(50, ike, trace=True)["mem_bytes"])
