"""Engine benchmark: CPU per liveness exchange (RFC 7296 §2.4) of an idle IKE SA, the
work behind issue 18's "100,000 IKE SAs held with dpddelay=30".

One responder engine (``dpddelay=30``, the side that probes, as in ``bench/ike_hold``)
and ``N`` initiator engines in one process, no sockets: the ``N`` childless IKE SAs
are set up, then the clock is moved on as the daemon's one timer would move it (from
``next_timer`` to ``next_timer``) for ``ROUNDS`` liveness periods; every probe the
responder sends is answered by its peer engine and the answer fed back to the
responder at the same time.  Measured: the responder's process time in
``handle_timer``, ``next_timer`` and ``receive`` (the engine's part of a probe
exchange: timer, build + protect + send the request, read + check the answer,
rescheduling), divided by the probes answered.  The daemon's part (event loop,
sockets, actions) is not in it: ``bench/ike_hold`` measures the whole.

``python -m bench.liveness_cost [N] [ROUNDS] [--profile FILE]``.
"""

from __future__ import annotations

import cProfile
import gc
import ipaddress
import sys
import time

from bench.engine_setup import EAST, _conn, _Store
from pypluto.config.ids import parse_id
from pypluto.config.model import IPAddress
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

DPD = 30.0


_EPS: dict[tuple[IPAddress, int], Endpoint] = {}


def _ep(addr: IPAddress, port: int) -> Endpoint:
    """One Endpoint object per address and port, as the daemon's sockets hand them over
    (``daemon/sockets.py``: ``_remote`` and ``IKEInterface.local`` are cached)."""
    ep = _EPS.get((addr, port))
    if ep is None:
        ep = _EPS[(addr, port)] = Endpoint(addr, port)
    return ep


def setup(n: int) -> tuple[Engine, dict[IPAddress, tuple[Engine, IPAddress]], float]:
    """``n`` childless IKE SAs, the responder with liveness; (east, peers by address, now)."""
    settings = EngineSettings(ddos_mode="unlimited", ddos_ike_threshold=10**9,
                              uniqueids=False)
    east = Engine(settings, _Store(), local_addrs=[EAST])
    rc = _conn("c", "%any", False, None)
    rc.left.host_addr = None
    rc.left.host = "%any"
    rc.left.id = None
    rc.dpddelay, rc.dpdtimeout, rc.dpdaction = DPD, 3 * DPD, "clear"
    east.add_connection(rc)
    peers: dict[IPAddress, tuple[Engine, IPAddress]] = {}
    now = 1000.0
    for i in range(n):
        addr = ipaddress.ip_address(f"10.{i // 250}.{i % 250}.1")
        w = Engine(EngineSettings(), _Store(), local_addrs=[addr])
        c = _conn("c", addr, True, None, childless=True)
        c.left.id = parse_id(f"@w{i}.west")
        w.add_connection(c)
        peers[addr] = (w, addr)
        pending = [a for a in w.initiate("c", now) if isinstance(a, SendPacket)]
        while pending:
            nxt = []
            for p in pending:
                for a in east.receive(p.data, _ep(EAST, p.remote.port),
                                      _ep(addr, p.local.port), now):
                    if isinstance(a, SendPacket):
                        nxt += [b for b in w.receive(a.data, Endpoint(addr, a.remote.port),
                                                     Endpoint(EAST, a.local.port), now)
                                if isinstance(b, SendPacket)]
            pending = nxt
        now += 0.0005  # setups spread over time, as in the daemon
    est = sum(1 for i in east.by_serial.values() if i.established)
    assert est == n, f"only {est}/{n} established"
    return east, peers, now


def hold(east: Engine, peers: dict[IPAddress, tuple[Engine, IPAddress]], start: float,
         rounds: int, prof: cProfile.Profile | None = None) -> dict[str, float]:
    """Run the responder's timer for ``rounds`` liveness periods; CPU per probe."""
    end = start + rounds * DPD + DPD
    cpu = 0.0
    probes = answered = 0
    pt = time.process_time
    gc.collect()
    while True:
        t0 = pt()
        if prof:
            prof.enable()
        when = east.next_timer()
        if when is None or when > end:
            break
        acts = east.handle_timer(when)
        if prof:
            prof.disable()
        cpu += pt() - t0
        for a in acts:
            if type(a) is not SendPacket:
                continue
            probes += 1
            w, addr = peers[a.remote.addr]
            for b in w.receive(a.data, _ep(addr, a.remote.port), _ep(EAST, a.local.port),
                               when):
                if type(b) is SendPacket:
                    t0 = pt()
                    if prof:
                        prof.enable()
                    east.receive(b.data, _ep(EAST, b.remote.port),
                                 _ep(addr, b.local.port), when)
                    east.next_timer()  # the daemon re-reads its deadline after each call
                    if prof:
                        prof.disable()
                    cpu += pt() - t0
                    answered += 1
    est = sum(1 for i in east.by_serial.values() if i.established)
    assert est == len(peers), f"deaths: {len(peers) - est}"
    return {"us_per_probe": cpu / max(answered, 1) * 1e6, "probes": probes,
            "answered": answered, "sent_per_sa": probes / len(peers), "end": end}


def measure(n: int = 2000, rounds: int = 3) -> dict[str, float]:
    east, peers, now = setup(n)
    return hold(east, peers, now, rounds)


if __name__ == "__main__":
    argv = sys.argv[1:]
    prof_out = None
    if "--profile" in argv:
        i = argv.index("--profile")
        prof_out = argv[i + 1]
        del argv[i:i + 2]
    args = argv
    n = int(args[0]) if args else 2000
    rounds = int(args[1]) if len(args) > 1 else 3
    if prof_out:
        import pstats
        out = prof_out
        east, peers, now = setup(n)
        p = cProfile.Profile(time.process_time)
        print(hold(east, peers, now, rounds, p))
        p.dump_stats(out)
        pstats.Stats(out).sort_stats("tottime").print_stats(25)
    else:
        east, peers, now = setup(n)
        for _ in range(3):
            r = hold(east, peers, now, rounds)
            now = r.pop("end")
            print(r)
