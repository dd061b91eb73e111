"""The lock file ``RUNDIR/pluto.pid``: is the pluto that wrote it still running?

ipsec-pluto(8): pluto refuses to start (exit 10) while another pluto holds the
lock.  A lock file left behind by a pluto that died without cleaning up
(``kill -9``, a power cut) names a PID that is no longer running, or that the
kernel has since given to some other program; as Libreswan does, such a lock
is *stale*: it is removed, with the control socket next to it, and pluto
starts.

A PID counts as a running pluto when ``/proc/PID`` exists, is not a zombie,
and its command line names pluto (``pluto``, ``ipsec pluto`` or our
``python -m pypluto.cli.pluto``).  A lock file that is still empty is being
written by a pluto that is starting right now (the parent writes the PID after
the fork), unless it is older than ``EMPTY_GRACE`` seconds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import time
from dataclasses import dataclass

EMPTY_GRACE = 10.0
"""Seconds an empty lock file counts as "a pluto is starting"."""


@dataclass(frozen=True)
class LockState:
    """What the lock file says: ``stale`` means it may be removed."""

    stale: bool
    pid: int | None
    reason: str


def _cmdline(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1].startswith(("Z", "X"))
    except (OSError, IndexError):
        return True


def is_pluto(argv: list[str]) -> bool:
    """Whether a command line is a pluto's (ours or Libreswan's)."""
    for a in argv[:4]:
        base = os.path.basename(a)
        if base == "pluto" or a == "pypluto.cli.pluto" or a.endswith("/pypluto/cli/pluto.py"):
            return True
    return False


def pid_is_pluto(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process running pluto."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: no pid_t can hold it
        return False
    except PermissionError:
        pass  # alive, someone else's
    argv = _cmdline(pid)
    if argv is None or _zombie(pid):
        return False
    return is_pluto(argv)


def examine(pidfile: str, now: float | None = None) -> LockState:
    """Read an existing lock file and decide whether it is stale."""
    try:
        st = os.stat(pidfile)
        with open(pidfile, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except FileNotFoundError:
        return LockState(True, None, "it is gone")
    except OSError as e:
        return LockState(False, None, f"cannot read it: {e.strerror}")
    if not text:
        age = (time.time() if now is None else now) - st.st_mtime
        if age < EMPTY_GRACE:
            return LockState(False, None, "it is empty: another pluto is starting")
        return LockState(True, None, "it is empty")
    try:
        pid = int(text.split()[0])
    except ValueError:
        return LockState(True, None, "it does not hold a PID")
    if pid == os.getpid():
        return LockState(False, pid, "it is our own")
    if pid_is_pluto(pid):
        return LockState(False, pid, f"pluto PID {pid} is running")
    return LockState(True, pid, f"PID {pid} is not a running pluto")


def ctl_in_use(ctlsocket: str) -> bool:
    """Whether a process accepts connections on the control socket ``ctlsocket``.

    Libreswan unlinks pluto.ctl unconditionally before binding its own (it trusts
    the lock file); a socket that still answers belongs to a live pluto whose lock
    file was removed or overwritten, and taking it over would leave that pluto
    running with no way for whack to reach it, so the new pluto refuses instead.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(ctlsocket).st_mode):
            return False
    except OSError:
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(2.0)
        s.connect(ctlsocket)
    except (TimeoutError, BlockingIOError):
        return True  # its backlog is full (EAGAIN): someone listens, busy
    except OSError:
        return False  # ECONNREFUSED: nobody listens (a crash leftover); or too long
    finally:
        s.close()
    return True


def remove_stale(pidfile: str, ctlsocket: str) -> LockState:
    """If the lock is stale, remove it and the control socket; returns what was found."""
    state = examine(pidfile)
    if state.stale and ctl_in_use(ctlsocket):
        return LockState(False, state.pid, f'{state.reason}, but control socket "{ctlsocket}" '
                         "answers: another pluto is using it")
    if state.stale:
        for path in (pidfile, ctlsocket):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return state


__all__ = ["EMPTY_GRACE", "LockState", "ctl_in_use", "examine", "is_pluto", "pid_is_pluto",
           "remove_stale"]
