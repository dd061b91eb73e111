"""Crypto cost of an IKE SA, and helper offload (``--nhelpers``): threads or processes?

First the CPU time of the crypto of one responder IKE SA (PSK), per proposal.
Then, for the helper pool:

For each key exchange the daemon off-loads (X25519, ECP-256, MODP-2048:
keygen + derive against a peer value, i.e. one responder IKE_SA_INIT), and
for 0 (inline), 1 and 2 workers of each pool kind, this measures:

* ``jobs/s``: throughput with a queue of jobs;
* ``latency``: one job submitted and awaited, repeatedly (the IPC cost);
* ``jobs/s, loop busy`` and ``loop %``: the same queue while the main thread
  (the event loop) spins in pure Python, and how much of its solo speed it
  keeps meanwhile;
* ``daemon CPU us/job``: CPU time of the daemon process (all its threads, not
  the worker processes) per job: the job itself for inline/threads, the
  pickling and pipe traffic for a process pool.  This one is load-independent.

Facts from ``cryptography`` (PRs 14370, 15164, 15359): EC key generation,
ECDH, ECDSA and RSA release the GIL; X25519/X448, finite-field DH and ML-KEM
do not, so threads cannot run those in parallel with the event loop.
  A thread pool only helps if ``cryptography`` releases the GIL in its C calls.

Run: ``.venv/bin/python -m bench.crypto_helpers`` (prints a table), or via
``make bench``.  Figures depend on the machine and its load; run on an idle box.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import sys
import threading
import time
from typing import Any

from pypluto.crypto import dh
from pypluto.crypto.registry import KE

GROUPS = {"x25519": KE.CURVE25519, "ecp256": KE.ECP256, "modp2048": KE.MODP2048}


def job(group: int, peer: bytes) -> bytes:
    """One responder key exchange: fresh key pair, then the shared secret."""
    return dh.responder_ke(group, peer)[1]


def _spin(stop: threading.Event | None, seconds: float) -> int:
    """Pure-Python work units done until ``stop`` is set (or ``seconds`` pass)."""
    n = 0
    end = time.perf_counter() + seconds
    while True:
        for _ in range(200):
            n += 1
        if (stop is not None and stop.is_set()) or time.perf_counter() > end:
            return n


def _make_pool(kind: str, workers: int) -> cf.Executor | None:
    if workers == 0:
        return None
    if kind == "threads":
        return cf.ThreadPoolExecutor(max_workers=workers)
    return cf.ProcessPoolExecutor(max_workers=workers)


def _measure(kind: str, workers: int, group: int, peer: bytes, njobs: int) -> dict[str, float]:
    pool = _make_pool(kind, workers)
    try:
        if pool is not None:  # warm the workers (process start-up is not per job)
            list(pool.map(job, [group] * workers * 2, [peer] * workers * 2))
        # latency: one at a time
        reps = max(5, njobs // 4)
        t0 = time.perf_counter()
        for _ in range(reps):
            if pool is None:
                job(group, peer)
            else:
                pool.submit(job, group, peer).result()
        latency = (time.perf_counter() - t0) / reps
        # throughput with an idle main thread (an event loop blocked in select())
        t0 = time.perf_counter()
        c0 = time.process_time()
        if pool is None:
            for _ in range(njobs):
                job(group, peer)
        else:
            cf.wait([pool.submit(job, group, peer) for _ in range(njobs)])
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        # the same jobs while the main thread keeps spinning: the event loop's share
        loop_pct = 0.0  # inline: the loop does the crypto itself
        busy_rate = 0.0
        if pool is not None:
            baseline_rate = _spin(None, 0.2) / 0.2
            stop = threading.Event()
            t1 = time.perf_counter()
            futs = [pool.submit(job, group, peer) for _ in range(njobs)]
            waiter = threading.Thread(target=lambda: (cf.wait(futs), stop.set()))
            waiter.start()
            spun = _spin(stop, 120.0)
            busy = time.perf_counter() - t1
            waiter.join()
            loop_pct = 100.0 * (spun / busy) / baseline_rate if baseline_rate else 0.0
            busy_rate = njobs / busy
        return {
            "jobs_per_s": njobs / elapsed,
            "latency_ms": latency * 1e3,
            "loop_pct": loop_pct,
            "busy_jobs_per_s": busy_rate,
            "daemon_cpu_us": cpu / njobs * 1e6,
        }
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def ike_sa_crypto(group: int, encr: int, bits: int | None, integ: int | None,
                  prf: int) -> None:
    """The crypto of one responder IKE SA with PSK: KE, SKEYSEED, keys, two SKProtectors,
    IKE_AUTH decrypt + encrypt (~300-byte payloads), both AUTH values, Child SA keys."""
    from pypluto.crypto import auth, keys
    from pypluto.crypto.sk import SKProtector

    peer, body, aad = _IKE_INPUT[(group, encr, integ)]
    ni, nr = b"\x11" * 32, os.urandom(32)
    _, shared = dh.responder_ke(group, peer)
    seed = keys.skeyseed(prf, ni, nr, shared)
    k = keys.derive_ike_keys(prf, encr, bits, integ, seed, ni, nr, b"i" * 8, b"r" * 8)
    rx = SKProtector(encr, bits, integ, k.sk_ei, k.sk_ai)
    tx = SKProtector(encr, bits, integ, k.sk_er, k.sk_ar)
    try:
        rx.decrypt(aad, body)
    except Exception:  # noqa: BLE001 - random body: the failure path costs the same
        pass
    so_i = auth.signed_octets(prf, k.sk_pi, b"m" * 300, nr, b"\x02\0\0\0peer.example")
    auth.psk_verify(prf, b"secret", so_i, b"\0" * 32)
    so_r = auth.signed_octets(prf, k.sk_pr, b"m" * 300, ni, b"\x02\0\0\0self.example")
    auth.psk_auth(prf, b"secret", so_r)
    keys.derive_child_keys(prf, k.sk_d, ni, nr, encr, bits, integ)
    tx.encrypt(aad, b"p" * 300)


_IKE_INPUT: dict[tuple[int, int, int | None], tuple[bytes, bytes, bytes]] = {}

IKE_CASES = [
    ("x25519 aes_gcm256 sha256", KE.CURVE25519, 20, 256, None, 5),
    ("x25519 aes256-sha256", KE.CURVE25519, 12, 256, 12, 5),
    ("ecp256 aes_gcm256 sha256", KE.ECP256, 20, 256, None, 5),
    ("modp2048 aes256-sha256", KE.MODP2048, 12, 256, 12, 5),
]


def measure_ike_sa(n: int = 300) -> list[tuple[str, float]]:
    """CPU microseconds (process time, min of 3 runs) of ``ike_sa_crypto`` per IKE SA."""
    out = []
    for name, group, encr, bits, integ, prf in IKE_CASES:
        _IKE_INPUT[(group, encr, integ)] = (dh.initiator_ke(group).public, os.urandom(340),
                                            os.urandom(32))
        best = float("inf")
        for _ in range(3):
            c0 = time.process_time()
            for _ in range(n):
                ike_sa_crypto(group, encr, bits, integ, prf)
            best = min(best, (time.process_time() - c0) / n * 1e6)
        out.append((name, best))
    return out


CONFIGS = [("inline", 0), ("threads", 1), ("threads", 2), ("processes", 1), ("processes", 2)]


def measure_all(njobs: dict[str, int] | None = None) -> list[dict[str, Any]]:
    njobs = njobs or {"x25519": 2000, "ecp256": 1000, "modp2048": 300}
    rows = []
    for gname, group in GROUPS.items():
        peer = dh.initiator_ke(group).public
        for kind, workers in CONFIGS:
            r = _measure(kind, workers, group, peer, njobs[gname])
            rows.append({"group": gname, "pool": kind, "workers": workers, **r})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    out = [f"{'group':9} {'pool':10} {'n':>2} {'jobs/s':>8} {'latency ms':>11} "
           f"{'jobs/s, loop busy':>18} {'loop %':>7} {'daemon CPU us/job':>18}"]
    for r in rows:
        out.append(
            f"{r['group']:9} {r['pool']:10} {r['workers']:>2} {r['jobs_per_s']:>8.0f} "
            f"{r['latency_ms']:>11.3f} {r['busy_jobs_per_s']:>18.0f} {r['loop_pct']:>7.0f} "
            f"{r['daemon_cpu_us']:>18.0f}"
        )
    return "\n".join(out)


def run() -> dict[str, Any]:
    """Entry point for ``bench.run``."""
    ike = measure_ike_sa()
    for name, us in ike:
        print(f"IKE SA crypto, {name}: {us:.0f} us CPU")
    rows = measure_all()
    print(_table(rows))
    out = [{"metric": f"IKE SA crypto CPU, {name}", "pypluto": us, "unit": "us",
            "note": "responder, PSK: KE + keys + SK both ways + AUTH + child keys"}
           for name, us in ike]
    for r in rows:
        tag = f"{r['group']} {r['pool']}×{r['workers']}"
        loop = ("inline: the event loop does the work" if r["workers"] == 0 else
                f"event loop keeps {r['loop_pct']:.0f}% of its speed")
        out.append({"metric": f"{tag} throughput", "pypluto": r["jobs_per_s"], "unit": "jobs/s",
                    "note": f"latency {r['latency_ms']:.3f} ms, daemon CPU "
                            f"{r['daemon_cpu_us']:.0f} us/job, {loop}"})
    return {"name": "crypto_helpers", "rows": out,
            "command": ".venv/bin/python -m bench.crypto_helpers",
            "cpus": os.cpu_count()}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    for name, us in measure_ike_sa(100 if quick else 300):
        print(f"IKE SA crypto, {name}: {us:.0f} us CPU")
    rows = measure_all({"x25519": 300, "ecp256": 200, "modp2048": 60} if quick else None)
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
    print(_table(rows))
