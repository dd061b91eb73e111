"""Whacks waiting for the outcome of ``--initiate``, and the exit code each outcome gives.

``whack --initiate`` (ipsec-pluto(8), ipsec-whack(8)) streams the connection's
log lines and exits with pluto's result code: 0 once the wanted SA is up, 51
(``RC_NORETRANSMISSION``) when the peer never answered, 52
(``RC_INTERNAL_ERROR``) at once on an internal error, 56 (``RC_FATAL``) for any
other failure.  The code is chosen from the event's ``EventKind`` and
``FailReason`` (``ike.actions``), never from its human-readable ``detail``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pypluto.control.protocol import (
    RC_FATAL,
    RC_INTERNAL_ERROR,
    RC_NORETRANSMISSION,
    RC_SUCCESS,
)
from pypluto.ike.actions import ConnectionEvent, EventKind, FailReason
from pypluto.textsafe import LINE_LIMIT, escape

FAILURES = frozenset({EventKind.FAILED, EventKind.PEER_DEAD, EventKind.INTERNAL_ERROR})


def failure_rc(ev: ConnectionEvent) -> int:
    """The whack exit code of a failure event (FAILED / PEER_DEAD / INTERNAL_ERROR)."""
    if ev.kind == EventKind.INTERNAL_ERROR or ev.reason == FailReason.INTERNAL:
        return RC_INTERNAL_ERROR
    if ev.kind == EventKind.PEER_DEAD or ev.reason == FailReason.TIMEOUT:
        return RC_NORETRANSMISSION
    return RC_FATAL


@dataclass
class Waiter:
    """A whack waiting for the outcome of --initiate."""

    conn: str
    emit: Callable[[str], None]
    future: asyncio.Future[int]
    want: frozenset[EventKind] = frozenset({EventKind.CHILD_ESTABLISHED})
    seen: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        return not self.future.done()


class Waiters:
    """The whacks currently waiting, by connection name."""

    def __init__(self) -> None:
        self._list: list[Waiter] = []
        # the same list, read by the driver for every log line and event: "is anyone
        # waiting?" without a call of ``__len__`` (issue 18); never reassigned
        self.waiting = self._list

    def __iter__(self) -> Iterator[Waiter]:
        return iter(list(self._list))

    def __len__(self) -> int:
        return len(self._list)

    def add(self, w: Waiter) -> None:
        self._list.append(w)

    def remove(self, w: Waiter) -> None:
        if w in self._list:
            self._list.remove(w)

    def _pending(self, conn: str) -> list[Waiter]:
        return [w for w in self._list if w.conn == conn and w.pending]

    def on_log(self, conn: str, line: str) -> None:
        """A non-debug log line of ``conn``: the waiting whacks see it."""
        for w in self._pending(conn):
            w.seen.append(line)
            w.emit(line)

    def on_event(self, ev: ConnectionEvent) -> None:
        """Answer the whacks this event settles."""
        for w in self._pending(ev.conn):
            if ev.kind in w.want:
                w.future.set_result(RC_SUCCESS)
            elif ev.kind in FAILURES:
                if ev.detail and not any(ev.detail in ln for ln in w.seen):
                    w.emit(escape(f'"{ev.conn}" #{ev.serial}: {ev.detail}', LINE_LIMIT))
                w.future.set_result(failure_rc(ev))

    def fail(self, conns: Iterable[str], rc: int, line: str) -> int:
        """Answer every whack waiting on one of ``conns`` with ``rc``; returns how many."""
        names = set(conns)
        n = 0
        for w in list(self._list):
            if w.conn in names and w.pending:
                w.emit(f'"{w.conn}": {line}')
                w.future.set_result(rc)
                n += 1
        return n

    def fail_all(self, rc: int) -> None:
        """Shutdown: nobody is left waiting."""
        for w in self._list:
            if w.pending:
                w.future.set_result(rc)
