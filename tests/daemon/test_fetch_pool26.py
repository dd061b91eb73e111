"""CRL / OCSP fetches (the engine's ``Compute(io=True)`` jobs) run on a bounded thread
pool of their own: at most ``FETCH_WORKERS`` at once, never on the loop's default
executor, where the daemon waits for updown scripts and statsbin.  Before: each hanging
fetch took a thread of the default pool (a handful on a small machine), so peers whose
distribution points never answer delayed every updown script behind them."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

from pypluto.daemon import driver as drv_mod
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import CrashReports
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.waiters import Waiters
from pypluto.ike.actions import Compute


def test_fetches_use_a_bounded_pool_of_their_own(tmp_path) -> None:  # noqa: ANN001
    log = PlutoLogger(logfile=str(tmp_path / "pluto.log"))
    drv = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(),  # type: ignore[arg-type]
                       SimpleNamespace(interfaces=[]))
    release = threading.Event()
    lock = threading.Lock()
    running: list[int] = [0]
    peak: list[int] = [0]
    names: set[str] = set()
    resumed: list[int] = []

    def hang() -> object:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            names.add(threading.current_thread().name)
        release.wait(10)
        with lock:
            running[0] -= 1
        return None

    async def main() -> None:
        loop = asyncio.get_running_loop()
        drv.loop = loop
        drv._resume_io = lambda token, fut: resumed.append(token)  # type: ignore[method-assign]
        n = 3 * drv_mod.FETCH_WORKERS
        for token in range(n):
            drv._compute(Compute(hang, token, io=True), False)
        # the default executor still runs at once while every fetch thread hangs
        other = await asyncio.wait_for(loop.run_in_executor(None, lambda: "free"), 5)
        assert other == "free"
        for _ in range(100):
            if running[0] == drv_mod.FETCH_WORKERS:
                break
            await asyncio.sleep(0.02)
        assert running[0] == drv_mod.FETCH_WORKERS  # the rest wait their turn
        release.set()
        for _ in range(250):
            if len(resumed) == n:
                break
            await asyncio.sleep(0.02)
        assert sorted(resumed) == list(range(n))

    asyncio.run(main())
    assert peak[0] == drv_mod.FETCH_WORKERS
    assert names and all(x.startswith("pluto-fetch") for x in names), names
    drv.stop()
