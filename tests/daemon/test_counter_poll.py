"""The 10-second feed of SA counters to the engine (ipsec-max-bytes/-packets).

The driver hands the backend its SA table (SPI -> destination, protocol,
direction); the backend answers with the counters of the SAs that carried
traffic.  The userspace plane reads them in place (``SATable.traffic``), every
other plane asks ``get_sa_stats`` per SA (``KernelBackend.sa_traffic``): both
answer what the per-SA loop of the driver answered before (issue 18).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import CrashReports
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.waiters import Waiters
from pypluto.iana import Encr
from pypluto.kernel.base import KernelBackend
from pypluto.kernel.none import NoneBackend
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.params import IPAddress, SAParams, SAStats

GW = ipaddress.ip_address("192.0.2.2")
PEER = ipaddress.ip_address("192.0.2.1")
OTHER = ipaddress.ip_address("198.51.100.7")
KEY = bytes(range(36))


def _sa(src: IPAddress, dst: IPAddress, spi: int, direction: str) -> SAParams:
    return SAParams(src, dst, spi, direction, encr_id=Encr.AES_GCM_16,  # type: ignore[arg-type]
                    encr_key_bits=256, encr_key=KEY, replay_window=32)


def test_sa_table_traffic_only_sas_with_traffic_and_of_the_index() -> None:
    t = SATable()
    t.add(_sa(PEER, GW, 0x1001, "in"), None, None)
    t.add(_sa(GW, PEER, 0x2001, "out"), None, None)
    t.add(_sa(GW, PEER, 0x2002, "out"), None, None)  # no traffic
    t.add(_sa(GW, OTHER, 0x2003, "out"), None, None)  # traffic, but not in the index
    t.add(_sa(GW, OTHER, 0x2001, "out"), None, None)  # same SPI, other destination
    for dst, spi, b, p in ((GW, 0x1001, 100, 2), (PEER, 0x2001, 0, 1), (OTHER, 0x2003, 5, 1),
                           (OTHER, 0x2001, 7, 1)):
        st = t.get(dst, spi)
        assert st is not None
        st.stats.bytes, st.stats.packets = b, p
    index = {0x1001: (GW, "esp", "in"), 0x2001: (PEER, "esp", "out"),
             0x2002: (PEER, "esp", "out")}
    assert sorted(t.traffic(index)) == [(0x1001, 100, 2), (0x2001, 0, 1)]


class _Stats(NoneBackend):
    """NoneBackend with counters set by the test; one SA's lookup fails."""

    def __init__(self, stats: dict[int, SAStats | None], broken: int = 0) -> None:
        super().__init__()
        self.by_spi = stats
        self.broken = broken

    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        if spi == self.broken:
            raise OSError("gone")
        return self.by_spi.get(spi)


def test_default_sa_traffic_asks_each_sa_and_skips_idle_and_failing() -> None:
    be = _Stats({1: SAStats(bytes=10, packets=1), 2: SAStats(), 3: None,
                 4: SAStats(packets=3)}, broken=5)
    index = {s: (PEER, "esp", "out") for s in (1, 2, 3, 4, 5)}
    assert list(KernelBackend.sa_traffic(be, index)) == [(1, 10, 1), (4, 0, 3)]


class _Engine:
    def __init__(self) -> None:
        self.fed: list[tuple[int, int, int]] = []

    def sa_counters(self, spi: int, nbytes: int, packets: int, now: float) -> list[Any]:
        self.fed.append((spi, nbytes, packets))
        return []

    def next_timer(self) -> None:
        return None


def _driver(tmp_path: Any, backend: KernelBackend) -> tuple[EngineDriver, _Engine]:
    log = PlutoLogger(logfile=str(tmp_path / "pluto.log"))
    drv = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(), None)  # type: ignore[arg-type]
    eng = _Engine()
    drv.engine = eng  # type: ignore[assignment]
    drv.backend = backend
    return drv, eng


def test_poll_feeds_the_sas_with_traffic(tmp_path: Any) -> None:
    be = _Stats({1: SAStats(bytes=10, packets=1), 2: SAStats(), 4: SAStats(packets=3)})
    drv, eng = _driver(tmp_path, be)
    drv.sa_index = {s: (PEER, "esp", "out") for s in (1, 2, 4)}
    drv.poll_counters()
    assert eng.fed == [(1, 10, 1), (4, 0, 3)]


def test_poll_skips_an_sa_deleted_by_an_earlier_feed(tmp_path: Any) -> None:
    be = _Stats({1: SAStats(bytes=10, packets=1), 2: SAStats(bytes=5, packets=1)})
    drv, eng = _driver(tmp_path, be)
    drv.sa_index = {1: (PEER, "esp", "out"), 2: (PEER, "esp", "out")}

    def feed(spi: int, nbytes: int, packets: int, now: float) -> list[Any]:
        eng.fed.append((spi, nbytes, packets))
        drv.sa_index.pop(2, None)  # the first feed's rekey deleted SA 2
        return []

    eng.sa_counters = feed  # type: ignore[method-assign]
    drv.poll_counters()
    assert eng.fed == [(1, 10, 1)]


def test_poll_without_sas_asks_nothing(tmp_path: Any) -> None:
    be = _Stats({})
    drv, eng = _driver(tmp_path, be)
    drv.poll_counters()
    assert eng.fed == [] and not [c for c in be.calls if c[0] == "get_sa_stats"]
