"""The status snapshot whack's ``--status`` family renders (``control/format.py``).

One JSON-able dict: the daemon's own settings and interfaces (``pluto``), the
engine's ``EngineStatus`` with the kernel backend's traffic counters merged
into each Child SA (``engine``), and the clocks the renderer needs.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

from pypluto import __version__
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import HelperPool
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.registry import Registry
from pypluto.daemon.sockets import UDPSockets
from pypluto.ike.status import EngineStatus


def snapshot(*, opts: PlutoOptions, log: PlutoLogger, driver: EngineDriver,
             sockets: UDPSockets, registry: Registry, helpers: HelperPool | None,
             started_wall: float, started_mono: float) -> dict[str, Any]:
    """Everything ``whack --status`` / ``--trafficstatus`` / ... show, as of now."""
    now = driver.now()
    st = EngineStatus()
    if driver.engine is not None:
        try:
            st = driver.engine.status(now)
        except Exception as e:  # noqa: BLE001
            driver.internal_error(e, "status")
            st = EngineStatus()
    for ike in st.ike_sas:
        for ch in ike.children:
            driver.merge_counters(ch)
    for c in st.connections:
        c.routed = c.routed or c.name in registry.routed
    backend = driver.backend
    return {
        "pluto": {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(now - started_mono, 3),
            "started": started_wall,
            "backend": backend.name if backend else "none",
            "listening": sockets.listening,
            "helpers": helpers.count if helpers else 0,
            "helper_kind": helpers.kind if helpers else "inline",
            "debug": sorted(log.debug),
            "uniqueids": opts.uniqueids,
            "force_busy": opts.force_busy,
            "keep_alive": opts.keep_alive,
            "virtual_private": opts.virtual_private,
            "crl_strict": opts.crl_strict,
            "crlcheckinterval": opts.crlcheckinterval,
            "secctx_attr_type": opts.secctx_attr_type,
            "vendorid": opts.vendorid,
            "ipsecdir": opts.ipsecdir,
            "nssdir": opts.nssdir,
            "secretsfile": opts.secretsfile,
            "interfaces": [
                {"ifname": i.ifname, "addr": str(i.addr), "port": i.port, "natt": i.natt}
                for i in sockets.interfaces
            ],
            "unoriented": sorted(registry.unoriented),
        },
        "now": now,
        "wallclock": time.time(),
        "engine": dataclasses.asdict(st),
        "counters": driver.counters.as_dict(),
    }
