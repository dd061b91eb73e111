"""The client half of the control protocol: send one request, stream the answer."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pypluto.control.protocol import (
    MAX_REQUEST,
    RC_WHACK_PROBLEM,
    ProtocolError,
    Request,
    encode_frame,
    read_frame_blocking,
)

DEFAULT_RUNDIR = "/run/pluto"


def ctl_path(rundir: str | None = None, ctlsocket: str | None = None) -> str:
    """Libreswan's rule: ``--ctlsocket`` wins, else ``RUNDIR/pluto.ctl``."""
    if ctlsocket:
        return ctlsocket
    return os.path.join(rundir or DEFAULT_RUNDIR, "pluto.ctl")


@dataclass
class Reply:
    rc: int
    data: Any = None
    error: str | None = None


class ControlError(Exception):
    """whack could not talk to pluto (rc is whack's exit status)."""

    def __init__(self, message: str, rc: int = RC_WHACK_PROBLEM) -> None:
        super().__init__(message)
        self.rc = rc


def _connect_failed(path: str, e: OSError) -> str:
    """Libreswan 5.2's words (lib/libwhack/send.c) for a control socket that is not
    there or not ours; the others say which socket and suggest the likely cause."""
    if e.errno == errno.ENOENT:
        return f'Pluto is not running (no "{path}"): {e.strerror} (errno {e.errno})'
    if e.errno in (errno.EACCES, errno.EPERM):
        return (f'no right to communicate with pluto (access("{path}")): {e.strerror} '
                f"(errno {e.errno})")
    why = f"{e.errno} {e.strerror}" if e.errno is not None else str(e)  # path too long
    return f'connect() for "{path}" failed ({why}); is pluto running?'


def call(
    path: str,
    command: str,
    args: dict[str, Any] | None = None,
    *,
    on_output: Callable[[str], None] | None = None,
    timeout: float | None = None,
) -> Reply:
    """Send ``command`` to the pluto listening on ``path``; return its result.

    Every ``output`` line is passed to ``on_output`` as it arrives.
    """
    try:
        request = encode_frame(Request(command, args or {}).to_obj())
    except ProtocolError as e:
        raise ControlError(str(e)) from None
    if len(request) - 4 > MAX_REQUEST:  # pluto would refuse it unread
        raise ControlError(f"request of {len(request) - 4} bytes is too large (at most "
                           f"{MAX_REQUEST}); send it in parts")
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as e:  # pragma: no cover - no unix sockets
        raise ControlError(f"socket() failed: {e.strerror}") from None
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as e:
            raise ControlError(_connect_failed(path, e)) from None
        unsent = None
        try:
            sock.sendall(request)
        except OSError as e:  # pluto answered and closed first (busy): read its answer
            unsent = f"sending to pluto failed: {e.strerror}"
        while True:
            try:
                frame = read_frame_blocking(sock)
            except EOFError:
                raise ControlError(unsent or "pluto closed the connection without an "
                                   "answer") from None
            except TimeoutError:
                raise ControlError("timed out waiting for pluto") from None
            except ProtocolError as e:
                raise ControlError(str(e)) from None
            except OSError as e:
                raise ControlError(f"reading from pluto failed: {e.strerror}") from None
            kind = frame.get("type")
            if kind == "output":
                if on_output is not None:
                    on_output(str(frame.get("text", "")))
            elif kind == "result":
                rc = frame.get("rc")
                if not isinstance(rc, int):
                    raise ControlError("malformed result from pluto")
                return Reply(rc, frame.get("data"), frame.get("error"))
            else:
                raise ControlError(f"unexpected {kind!r} frame from pluto")
    finally:
        sock.close()
