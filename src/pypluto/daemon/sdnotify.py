"""systemd's watchdog for pluto (``WatchdogSec=`` in the unit, ``Type=notify``).

systemd starts the service with ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) in its
environment when the unit has ``WatchdogSec=``; the service must then send
``WATCHDOG=1`` on ``$NOTIFY_SOCKET`` more often than that, or systemd kills and
(with ``Restart=on-failure``) restarts it — sd_watchdog_enabled(3),
sd_notify(3).  :func:`watchdog_loop` runs on the daemon's asyncio loop, so a
wedged loop (the thing worth restarting for) stops the pings; it pings at half
the interval, as sd_watchdog_enabled(3) advises.

``READY=1`` / ``STOPPING=1`` are sent by ``daemon.helpers.sd_notify`` already;
:func:`notify` here is the same datagram with the abstract-socket rule.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping


def notify(state: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"WATCHDOG=1"``) to ``$NOTIFY_SOCKET``; False when unset or failing."""
    env = os.environ if environ is None else environ
    path = env.get("NOTIFY_SOCKET", "")
    if not path or path[0] not in "/@":
        return False
    addr = "\0" + path[1:] if path.startswith("@") else path  # "@": abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), addr)
        return True
    except OSError:
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None,
                      pid: int | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None when no watchdog is asked for.

    As sd_watchdog_enabled(3): ``WATCHDOG_PID``, when set, must be our PID (a
    child process must not ping for its parent); a missing, zero or malformed
    ``WATCHDOG_USEC`` means no watchdog.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid and (not wpid.isdigit() or int(wpid) != (os.getpid() if pid is None else pid)):
        return None
    if not env.get("NOTIFY_SOCKET"):
        return None
    return int(usec) / 2e6


async def watchdog_loop(interval: float | None = None,
                        send: Callable[[str], bool] = notify) -> None:
    """Ping systemd every ``interval`` seconds until cancelled (returns at once without one).

    Start it once pluto has sent ``READY=1``:
    ``self._spawn(sdnotify.watchdog_loop())`` in ``Daemon.start``.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None:
        return
    while True:
        send("WATCHDOG=1")
        await asyncio.sleep(interval)


__all__ = ["notify", "watchdog_interval", "watchdog_loop"]
