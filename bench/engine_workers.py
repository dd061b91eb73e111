"""Multi-core prototype (docs/multicore.md): N responder engine processes behind one UDP
port, each owning a slice of the IKE SPI space, with kernel socket steering.

The responder side is N worker processes, each with its own ``Engine`` whose
``settings.spi_slice = (i, N)`` makes every IKE SPI it allocates end in an octet
``v`` with ``v % N == i``.  Their N UDP sockets share 127.0.0.1:PORT with
``SO_REUSEPORT``; a classic BPF program attached with ``SO_ATTACH_REUSEPORT_CBPF``
picks the socket for each datagram from the IKE header (RFC 7296 §3.1), at the
UDP payload:

* the sender is the original initiator (flag I, octet 19 & 0x08): our SPI is the
  responder SPI, last octet 15; when it is zero (an IKE_SA_INIT request, §2.6),
  the initiator's SPI, last octet 7, spreads new SAs over the workers;
* otherwise we are the original initiator and our SPI is SPIi: octet 7;

and returns that octet modulo N, the index of the socket in the reuseport group
(the order in which the sockets were bound).  Every datagram of an IKE SA thus
reaches the worker that holds it; a worker counts the messages it gets for an
IKE SA it does not know ("misrouted"), which must stay 0.

The initiators are G generator processes (one ``Engine`` each, with K
connections, childless PSK IKE SAs with ``aes_gcm256-sha2_256-dh31`` unless
``--child``), keeping C exchanges in flight each.  Reported: SAs established,
the wall time, each worker's CPU (``time.process_time``: user + system, socket
calls included) per IKE SA, the misrouted count, and the growth of the workers'
resident set (VmRSS) per IKE SA held (``-n 10000 --workers 1``: the responder's
RSS per childless IKE SA at 10,000, sockets and all, no daemon around it).

``python -m bench.engine_workers [--workers 1,2] [-n 2000] [--gens 1] [-c 16] [--child]``;
``run()`` gives ``make bench``'s rows (1 against 2 workers, see its docstring).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import multiprocessing as mp
import os
import select
import socket
import statistics
import struct
import sys
import time
from typing import Any

from pypluto.config.ids import parse_id
from pypluto.config.model import Connection, End
from pypluto.config.proposals import parse_proposals
from pypluto.ike.actions import ConnectionEvent, Endpoint, EventKind, Log, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

LO = ipaddress.ip_address("127.0.0.1")
IKE = "aes_gcm256-sha2_256-dh31"
SO_ATTACH_REUSEPORT_CBPF = 51  # include/uapi/asm-generic/socket.h
SO_REUSEPORT = getattr(socket, "SO_REUSEPORT", 15)

# classic BPF opcodes (include/uapi/linux/filter.h)
_LD_W_ABS, _LD_B_ABS = 0x20, 0x30
_JEQ_K, _JSET_K, _JA = 0x15, 0x45, 0x05
_MOD_K, _RET_A = 0x94, 0x16


class _Store:
    def psk_for(self, *a: object) -> bytes:
        return b"benchmark pre-shared key"


def steering_program(n: int, offset: int = 0) -> bytes:
    """The ``struct sock_fprog`` instructions that pick worker ``SPI octet % n``.

    ``offset`` is where the IKE header starts in the UDP payload: 0 on port 500,
    4 on port 4500 (the non-ESP marker, RFC 3948 §2.2; an ESP packet there starts
    with its SPI, whose octet 3 the same slice rule could steer).
    """
    o = offset
    ins = [
        (_LD_B_ABS, 0, 0, o + 19),  # 0: flags
        (_JSET_K, 0, 6, 0x08),      # 1: I set: we respond -> 2, else -> 8 (SPIi)
        (_LD_W_ABS, 0, 0, o + 8),   # 2: SPIr, first word
        (_JEQ_K, 0, 2, 0),          # 3: nonzero -> 6
        (_LD_W_ABS, 0, 0, o + 12),  # 4: SPIr, second word
        (_JEQ_K, 2, 0, 0),          # 5: zero (IKE_SA_INIT request) -> 8, else -> 6
        (_LD_B_ABS, 0, 0, o + 15),  # 6: last octet of SPIr
        (_JA, 0, 0, 1),             # 7: -> 9
        (_LD_B_ABS, 0, 0, o + 7),   # 8: last octet of SPIi
        (_MOD_K, 0, 0, n),          # 9
        (_RET_A, 0, 0, 0),          # 10: the socket's index in the group
    ]
    return b"".join(struct.pack("HBBI", c, jt, jf, k) for c, jt, jf, k in ins)


def open_group(n: int, port: int = 0) -> list[socket.socket]:
    """N UDP sockets on 127.0.0.1:port with SO_REUSEPORT and the steering program."""
    socks: list[socket.socket] = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((str(LO), port))
        port = s.getsockname()[1]
        socks.append(s)
    if n > 1:
        prog = steering_program(n)
        buf = bytearray(prog)
        import ctypes

        cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
        fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(cbuf))
        socks[0].setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    return socks


def _end(addr: object, ident: str | None, subnet: str) -> End:
    return End(host=str(addr), host_addr=addr, id=parse_id(ident) if ident else None,  # type: ignore[arg-type]
               subnets=[ipaddress.ip_network(subnet)])


def _worker(i: int, n: int, sock: socket.socket, child: bool, out: Any, stop: Any) -> None:
    settings = EngineSettings(ddos_mode="unlimited", ddos_ike_threshold=10**9,
                              halfopen_per_addr=0, uniqueids=False)
    if n > 1:
        settings.spi_slice = (i, n)
    eng = Engine(settings, _Store(), local_addrs=[LO])
    rc = Connection(name="c", left=_end(LO, None, "198.51.100.0/24"),
                    right=_end(LO, "@east", "203.0.113.0/24"), authby="secret", auto="add",
                    local_is_left=False)
    rc.left.host_addr = None
    rc.left.host = "%any"
    rc.ike = parse_proposals(IKE, "IKE")
    eng.add_connection(rc)
    port = sock.getsockname()[1]
    local = Endpoint(LO, port)
    recv = misrouted = 0
    rss0 = _rss()
    sock.setblocking(False)
    cpu0 = time.process_time()
    while not stop.is_set():
        r, _, _ = select.select([sock], [], [], 0.05)
        if not r:
            eng.handle_timer(time.monotonic())
            continue
        while True:
            try:
                data, (a, p) = sock.recvfrom(65535)
            except BlockingIOError:
                break
            recv += 1
            for act in eng.receive(data, local, Endpoint(ipaddress.ip_address(a), p),
                                   time.monotonic()):
                if isinstance(act, SendPacket):
                    sock.sendto(act.data, (str(act.remote.addr), act.remote.port))
                elif isinstance(act, Log) and "unknown IKE SA" in act.message:
                    misrouted += 1
    cpu = time.process_time() - cpu0
    est = sum(1 for s in eng.by_serial.values() if s.established)
    out.put({"worker": i, "cpu_s": cpu, "established": est, "received": recv,
             "misrouted": misrouted, "rss_growth": _rss() - rss0})


def _rss() -> int:
    """This process's resident set (VmRSS), bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _generator(g: int, k: int, c: int, port: int, child: bool, out: Any) -> None:
    eng = Engine(EngineSettings(uniqueids=False), _Store(), local_addrs=[LO])
    for j in range(k):
        conn = Connection(name=f"c{j}", left=_end(LO, f"@g{g}w{j}.west", "198.51.100.0/24"),
                          right=_end(LO, "@east", "203.0.113.0/24"), authby="secret",
                          auto="add", local_is_left=True)
        conn.right.ikeport = port
        conn.ike = parse_proposals(IKE, "IKE")
        if not child:
            conn.raw["childless"] = "yes"
        eng.add_connection(conn)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((str(LO), 0))
    sock.setblocking(False)
    local = Endpoint(LO, 4500)
    started = done = 0

    def do(acts: list[Any]) -> None:
        nonlocal done
        for a in acts:
            if isinstance(a, SendPacket):
                sock.sendto(a.data, (str(a.remote.addr), a.remote.port))
            elif isinstance(a, ConnectionEvent) and a.kind is EventKind.IKE_ESTABLISHED:
                done += 1

    t0 = time.monotonic()
    while done < k:
        while started < k and started - done < c:
            do(eng.initiate(f"c{started}", time.monotonic()))
            started += 1
        r, _, _ = select.select([sock], [], [], 0.05)
        if not r:
            do(eng.handle_timer(time.monotonic()))
            if time.monotonic() - t0 > 300:
                break
            continue
        while True:
            try:
                data, (a, p) = sock.recvfrom(65535)
            except BlockingIOError:
                break
            do(eng.receive(data, local, Endpoint(ipaddress.ip_address(a), p),
                           time.monotonic()))
    out.put({"generator": g, "done": done, "wall_s": time.monotonic() - t0})


def measure(workers: int, n: int = 2000, gens: int = 1, c: int = 16,
            child: bool = False) -> dict[str, Any]:
    """One run: ``workers`` responder processes, ``gens`` generators, n IKE SAs."""
    ctx = mp.get_context("fork")
    socks = open_group(workers)
    port = socks[0].getsockname()[1]
    wq, gq, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    wp = [ctx.Process(target=_worker, args=(i, workers, s, child, wq, stop))
          for i, s in enumerate(socks)]
    for p in wp:
        p.start()
    for s in socks:
        s.close()
    per = n // gens
    t0 = time.monotonic()
    gp = [ctx.Process(target=_generator, args=(g, per, c, port, child, gq))
          for g in range(gens)]
    for p in gp:
        p.start()
    gres = [gq.get(timeout=600) for _ in gp]
    wall = time.monotonic() - t0
    stop.set()
    wres = sorted((wq.get(timeout=60) for _ in wp), key=lambda r: r["worker"])
    for p in gp + wp:
        p.join(10)
    est = sum(r["established"] for r in wres)
    cpu = sum(r["cpu_s"] for r in wres)
    return {
        "workers": workers, "gens": gens, "n": per * gens, "child": child,
        "established": est, "generator_done": sum(r["done"] for r in gres),
        "wall_s": round(wall, 3), "rate_per_s": round(est / wall, 1) if wall else 0,
        "responder_cpu_ms_per_sa": round(cpu / est * 1000, 3) if est else None,
        "rss_per_sa": round(sum(r["rss_growth"] for r in wres) / est) if est else None,
        "per_worker": [{"established": r["established"], "misrouted": r["misrouted"],
                        "cpu_ms_per_sa": round(r["cpu_s"] / r["established"] * 1000, 3)
                        if r["established"] else None} for r in wres],
        "misrouted": sum(r["misrouted"] for r in wres),
        "loadavg": os.getloadavg(),
    }


def run() -> dict[str, Any]:
    """``make bench``'s rows: 1 against 2 responder workers, alternating 1, 2, 1, 2, ...

    ``BENCH_WORKERS_RUNS`` (3) runs each of ``BENCH_WORKERS_N`` (2,000) childless IKE
    SAs from ``BENCH_WORKERS_GENS`` (2) generator processes (one generator cannot keep
    two workers busy: docs/multicore.md).  Rows: the wall rate, the responder CPU per
    IKE SA summed over the workers, the split and the misrouted count; each row's note
    lists every run.  On this 2-core machine the generators share the cores with the
    workers, so the rate says little about N cores; the CPU per IKE SA of a worker
    (does it grow with N?) and misrouted = 0 are what the prototype must show.
    """
    n = int(os.environ.get("BENCH_WORKERS_N", "2000"))
    runs = int(os.environ.get("BENCH_WORKERS_RUNS", "3"))
    gens = int(os.environ.get("BENCH_WORKERS_GENS", "2"))
    res: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for _ in range(runs):
        for w in (1, 2):
            res[w].append(measure(w, n, gens=gens, c=16))
    rows = []
    for w, rs in res.items():
        rates = [r["rate_per_s"] for r in rs]
        cpus = [r["responder_cpu_ms_per_sa"] for r in rs if r["responder_cpu_ms_per_sa"]]
        splits = ["/".join(str(x["established"]) for x in r["per_worker"]) for r in rs]
        mis = sum(r["misrouted"] for r in rs)
        rows.append({"metric": f"engine-only responder, {w} worker(s): IKE SAs/s (wall)",
                     "pypluto": statistics.median(rates), "strongswan": None,
                     "libreswan": None, "unit": "/s",
                     "note": f"median of {runs} runs alternating 1 and 2 workers, {n} childless "
                             f"PSK IKE SAs each from {gens} generator processes on the same 2 "
                             f"cores; runs {', '.join(map(str, rates))}"})
        rows.append({"metric": f"engine-only responder, {w} worker(s): CPU per IKE SA",
                     "pypluto": round(statistics.median(cpus), 3) if cpus else None,
                     "strongswan": None, "libreswan": None, "unit": "ms",
                     "note": f"process time of all workers (socket calls included) / IKE SAs; "
                             f"runs {', '.join(map(str, cpus))}; split {', '.join(splits)}; "
                             f"misrouted {mis}"})
    return {"name": "engine_workers", "rows": rows,
            "command": "make bench BENCH=engine_workers",
            "sizes": {"n": n, "runs": runs, "generators": gens}, "results": res}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--gens", type=int, default=1)
    ap.add_argument("-c", type=int, default=16)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--runs", type=int, default=1, help="alternating runs per worker count")
    a = ap.parse_args(argv)
    for _ in range(a.runs):
        for w in (int(x) for x in a.workers.split(",")):
            print(json.dumps(measure(w, a.n, a.gens, a.c, a.child)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
