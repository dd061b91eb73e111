"""Responder connection lookup with many conns loaded (issue 18, "10,000 conns").

The responder holds N conns that differ by their remote address (each exact); the
initiators each match one of them.  Reports, in process time:

* ``find_ms``: one ``ike_init.find_connections`` call (mean over many calls);
* ``init_ms`` / ``init2_ms``: one childless IKE_SA_INIT request through
  ``Engine.receive`` (responder side only, mean over 200 initiators spread over
  the conns), the first request of each conn and then a second round (a conn's
  first request also fills its per-conn caches).

``python -m bench.conn_lookup [--scan] N...``: ``--scan`` swaps in the linear scan that
the index replaced (``scan_connections``), for an A/B comparison in one tree.
"""

from __future__ import annotations

import ipaddress
import os
import sys
import time
from typing import Any

from pypluto.config.model import Connection
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.context import IKEContext
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import ike_init

from .engine_setup import EAST, _conn, _Store


def scan_connections(ctx: IKEContext, local: Endpoint, remote: Endpoint) -> list[Connection]:
    """The linear scan over every conn (the lookup before the index)."""
    exact, wild = [], []
    for conn in ctx.connections.values():
        if conn.local_is_left is None or conn.keyexchange not in ("ikev2", "ike"):
            continue
        if conn.authby == "never" or conn.type in ("passthrough", "drop", "reject"):
            continue
        la = conn.local.host_addr
        if la is not None and la != local.addr:
            continue
        ra = conn.remote.host_addr
        if ra is not None and ra == remote.addr:
            exact.append(conn)
        elif ra is None and conn.remote.is_any:
            wild.append(conn)
    return exact + wild


def _addr(i: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"10.{i // 250 % 250}.{i % 250}.{1 + i // 62500}")


def measure(n: int, n_init: int = 200, n_find: int = 2000) -> dict[str, float]:
    settings = EngineSettings(ddos_mode="unlimited", ddos_ike_threshold=10**9,
                              uniqueids=False, halfopen_per_addr=0)  # no cookies
    east = Engine(settings, _Store(), local_addrs=[EAST])
    for i in range(n):
        c = _conn(f"c{i}", _addr(i), False, None, True)
        east.add_connection(c)
    # the peers: spread over the conns (the last conn always among them)
    picks = [(k * n) // n_init for k in range(n_init - 1)] + [n - 1]
    local = Endpoint(EAST, 500)
    find = ike_init.find_connections
    find(east, local, Endpoint(_addr(0), 500))  # builds the index (if any) once
    t0 = time.process_time()
    for k in range(n_find):
        got = find(east, local, Endpoint(_addr(picks[k % len(picks)]), 500))
    find_ms = (time.process_time() - t0) / n_find * 1000
    assert len(got) == 1
    reqs = []  # built first: adding the initiators' conns would invalidate the index
    for i in picks + picks:  # twice: the second round meets conns already used once
        addr = _addr(i)
        w = Engine(EngineSettings(), _Store(), local_addrs=[addr])
        w.add_connection(_conn(f"c{i}", addr, True, None, True))
        reqs.append((addr, [a for a in w.initiate(f"c{i}", 1000.0)
                            if isinstance(a, SendPacket)][0].data))
    cpu = [0.0, 0.0]
    for k, (addr, data) in enumerate(reqs):
        t1 = time.process_time()
        out = east.receive(data, Endpoint(EAST, 500), Endpoint(addr, 500), 1000.0)
        cpu[k >= len(picks)] += time.process_time() - t1
        assert any(isinstance(a, SendPacket) for a in out), out
    return {"n": n, "find_ms": find_ms, "init_ms": cpu[0] / len(picks) * 1000,
            "init2_ms": cpu[1] / len(picks) * 1000}


def run() -> dict[str, Any]:
    """``make bench``'s row: the index with 1 and 10,000 conns, and the scan it replaced
    at 10,000 conns in the same run (``find_connections`` swapped, then restored)."""
    big = int(os.environ.get("BENCH_LOOKUP_CONNS", "10000"))
    one, many = measure(1), measure(big)
    indexed = ike_init.find_connections
    ike_init.find_connections = scan_connections  # type: ignore[assignment]
    try:
        scan = measure(big, n_find=200)
    finally:
        ike_init.find_connections = indexed
    rows = [{"metric": f"responder CPU per IKE_SA_INIT with {big:,} conns loaded",
             "pypluto": round(many["init2_ms"], 3), "strongswan": None, "libreswan": None,
             "unit": "ms",
             "note": f"engine only, process time, each conn its own peer address; 1 conn "
                     f"{one['init2_ms']:.3f} ms; the linear scan this index replaced, same "
                     f"run: {scan['init2_ms']:.3f} ms ({scan['find_ms']:.3f} ms per lookup "
                     f"against {many['find_ms']:.4f})"}]
    return {"name": "conn_lookup", "command": "make bench BENCH=conn_lookup",
            "sizes": {"conns": big}, "results": {"1": one, str(big): many, "scan": scan},
            "rows": rows}


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--scan" in args:
        args.remove("--scan")
        ike_init.find_connections = scan_connections  # type: ignore[assignment]
    for n in [int(a) for a in args] or [1, 1000, 10000]:
        r = measure(n)
        print(f"conns={r['n']:>6}  find_connections {r['find_ms']:.4f} ms/call  "
              f"IKE_SA_INIT {r['init_ms']:.3f} ms/request (first per conn), "
              f"{r['init2_ms']:.3f} (conn used before)")
