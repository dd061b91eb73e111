"""An ACQUIRE storm reaches the engine bounded, and the daemon stays responsive (issue 16).

The backend's acquire callback may run on any thread and at any rate (10,000 XFRM
ACQUIREs in a second): the driver keeps at most ``ACQUIRE_QUEUE`` of them for the
loop, drops and counts the rest, and schedules one drain at a time.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
from pathlib import Path
from typing import Any

from inproc import ScriptedEngine, make_env
from inproc import start as _start

from pypluto.control.client import call
from pypluto.daemon.driver import ACQUIRE_QUEUE
from pypluto.params import SAAcquire, TrafficSelector


def _acq(i: int) -> SAAcquire:
    net = ipaddress.ip_network(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32")
    return SAAcquire(reqid=i, src=TrafficSelector(net), dst=TrafficSelector(net),
                     local=ipaddress.ip_address("192.0.2.1"),
                     remote=ipaddress.ip_address("192.0.2.2"))


def test_acquire_storm_is_bounded_and_pluto_answers(tmp_path: Path) -> None:
    env: dict[str, Any] = make_env(tmp_path, nhelpers=0)

    async def body() -> None:
        d, eng, peer = await _start(env, ScriptedEngine)
        storm = [_acq(i) for i in range(10_000)]
        for ev in storm:  # all before the loop runs again: the queue fills, then drops
            d.driver.on_acquire_threadsafe(ev)
        assert d.driver.acquires_dropped == 10_000 - ACQUIRE_QUEUE
        loop = asyncio.get_running_loop()
        end = loop.time() + 5
        while len(eng.acquired) < ACQUIRE_QUEUE and loop.time() < end:
            await asyncio.sleep(0.01)
        assert eng.acquired == storm[:ACQUIRE_QUEUE]  # in order, the first ones
        # from another thread, while the loop answers whack
        t = threading.Thread(target=lambda: [d.driver.on_acquire_threadsafe(e) for e in storm])
        t.start()
        reply = await loop.run_in_executor(None, lambda: call(str(env["tmp"] / "pluto.ctl"),
                                                              "ping", {}, timeout=5))
        t.join()
        assert reply.rc == 0
        end = loop.time() + 5
        while d.driver._acq and loop.time() < end:
            await asyncio.sleep(0.01)
        assert len(eng.acquired) - ACQUIRE_QUEUE + d.driver.acquires_dropped - \
            (10_000 - ACQUIRE_QUEUE) == 10_000
        await d.shutdown()
        peer.close()

    asyncio.run(body())
