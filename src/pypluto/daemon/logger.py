"""pluto's logging: syslog (facility authpriv), stderr or a file, in pluto's line style.

Under systemd the syslog lines go to journald's native socket instead, each
with ``PLUTO_CONN`` / ``PLUTO_SERIAL`` / ``PLUTO_PEER`` fields
(:mod:`pypluto.daemon.journal`); the text is the same.

Lines look like pluto's: ``"conn" #3: message`` for a state, ``"conn": message``
for a connection, ``packet from 192.0.2.1:500: message`` for input without a
state; debug lines start with ``| ``.  ``--log-no-ip`` masks every address,
``--log-no-time`` drops the timestamp of file/stderr lines, and floods of
network-triggered messages are rate limited.

File and stderr lines logged on the event loop's thread are written together
at the end of the loop's turn (``defer_writes``: one write and flush per turn,
not per line); other threads, and everything once the loop is gone, write at
once.  Nothing is dropped by it: a line waits at most for the turn it was
logged in.  Audit records go to the kernel through one kept NETLINK_AUDIT socket.

Two guarantees hold at this sink whoever the caller is (issue 13):

* **one event, one line**: every line is written through
  :func:`pypluto.textsafe.escape`, so a peer's ID with a newline, ESC or NUL in it
  shows up escaped (``\\n``, ``\\x1b``, ``\\x00``) and bounded, and can never
  start a forged line;
* **the audit trail is never dropped**: establishment, deletion,
  authentication-failure and rekey lines (:func:`is_audit`) and Linux audit
  records bypass the rate limiter even when the caller asks for rate limiting;
  only the other lines of a rate-limited call (what unauthenticated input
  provokes) and the lines of :func:`is_flood` are limited.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import socket
import struct
import sys
import syslog
import threading
import time
import warnings
from collections.abc import Callable
from typing import TextIO

from pypluto.daemon.journal import JOURNAL_SOCKET, Journal
from pypluto.textsafe import LINE_LIMIT, escape

# Libreswan's debug classes (``--debug help``) and what they cover here.
DEBUG_CLASSES: dict[str, str] = {
    "base": "general debugging: state machine, packets, timers",
    "cpu-usage": "CPU time of every engine call (packet, timer, whack request)",
    "crypt": "cryptographic computations (never the keys unless 'private' too)",
    "tmi": "too much information: every timer and buffer",
    "private": "sensitive material (keys, nonces); never enabled by 'all'",
    "whackwatch": "control-socket requests and replies",
    "add-prefix": "prefix debug lines with the connection/state",
    "routing": "policies, routes and SAs handed to the kernel backend",
    "kernel": "kernel backend operations (pypluto)",
    "control": "control protocol frames (pypluto)",
}
ALL_EXCLUDES = {"private"}

MASK = "<ip address>"
_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])"
_IPV6 = r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])"
_ADDR_RE = re.compile(f"{_IPV4}|{_IPV6}")


def mask_addresses(text: str) -> str:
    """Replace every IPv4/IPv6 address in ``text`` by ``<ip address>`` (``--log-no-ip``)."""

    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        try:
            ipaddress.ip_address(s.split("%", 1)[0])
        except ValueError:
            return s  # a clock (12:30:45) or a version number, not an address
        return MASK

    return _ADDR_RE.sub(repl, text)


def parse_debug_specs(specs: list[str], current: set[str]) -> set[str]:
    """Apply ``--debug X`` / ``--no-debug X`` style specs to ``current``.

    Each spec is ``all``, ``none``, ``CLASS``, ``no-CLASS`` or ``-CLASS``
    (comma- or space-separated lists allowed).  Raises ValueError naming an
    unknown class.
    """
    result = set(current)
    for spec in specs:
        for word in re.split(r"[,\s]+", spec.strip()):
            if not word:
                continue
            neg = False
            if word.startswith("no-") and word[3:] in DEBUG_CLASSES | {"all": ""}:
                neg, word = True, word[3:]
            elif word.startswith("-"):
                neg, word = True, word[1:]
            if word == "none":
                result.clear()
            elif word == "all":
                if neg:
                    result.clear()
                else:
                    result |= set(DEBUG_CLASSES) - ALL_EXCLUDES
            elif word in DEBUG_CLASSES:
                if neg:
                    result.discard(word)
                else:
                    result.add(word)
            else:
                raise ValueError(
                    f'unrecognized debug option "{word}" (use --debug help for the list)'
                )
    return result


def debug_help() -> str:
    lines = ["debug options (at least one is required):"]
    for name, what in DEBUG_CLASSES.items():
        lines.append(f"  {name:<12} {what}")
    lines.append("  all          every class except 'private'")
    lines.append("  none         no debugging")
    lines.append("prefix a class with 'no-' to disable it")
    return "\n".join(lines)


# The audit trail (issue 13 item 4): lines that record who got in, who was refused,
# what was rekeyed and what was deleted.  Matched at the start of the engine's
# message (peer-supplied text never comes first), so they cannot be forged by a
# peer's ID to escape the limiter.  Keep in step with the engine's messages:
# tests/daemon/test_logging_audit.py drives the engine through every kind.
_AUDIT_RE = re.compile(
    "|".join((
        # establishment (RFC 7296 §1.2, §1.3)
        r"established (?:IKE|Child) SA",
        r"IKE SA established but the Child SA",
        r"rekeyed IKE SA #\d+: established",
        r"(?:IKE|Child) SA #\d+ rekeyed by peer",
        r"new IKE SA #\d+ replaces",
        # authentication failure (RFC 7296 §2.15, §2.21.2)
        r"IKE_AUTH from \S+ rejected: ",
        r"IKE SA authentication request rejected by peer",
        r"IKE SA establishment failed: ",
        r"no PSK found for this connection",
        r"Child SA failed: ",
        # rekey (RFC 7296 §1.3.2, §1.3.3, §2.8)
        r"initiating rekey of ",
        r"rekey collision: ",
        r"IKE SA rekey (?:refused|failed|answer|collision)",
        r"CREATE_CHILD_SA (?:failed|refused): ",
        r"Child SA reached its (?:soft|hard|traffic) ",
        r"peer answered TEMPORARY_FAILURE; retrying rekey",
        # deletion and expiry (RFC 7296 §1.4.1, §2.4)
        r"deleting (?:IKE|Child) SA",
        r"received Delete SA payload",
        r"sending Delete for ",
        r"sent INFORMATIONAL request to delete",
        r"(?:IKE|Child) SA expired",
        r"peer no longer has the Child SA",
        r"restarting connection",
    ))
)
# the one audit line whose telling words are not at its start: tried only when they
# are in the line (a backtracking scan of 80 characters for every other line)
_DEAD_WORDS = "; peer is not responding, declaring it dead"
_DEAD_RE = re.compile(r"[^\n]{0,80}" + re.escape(_DEAD_WORDS))
# Lines that only unauthenticated input can cause in numbers: limited even when
# the caller did not ask (the expiry of flooded half-open SAs runs from a timer).


def is_audit(message: str) -> bool:
    """Whether an engine message belongs to the audit trail (never rate limited)."""
    return _AUDIT_RE.match(message) is not None or (
        _DEAD_WORDS in message and _DEAD_RE.match(message) is not None)


_AUDIT_TAG = "AUDIT: "
_FLOOD_PREFIX = "half-open IKE SA expired"  # _FLOOD_RE's text, for a cheap test per line


def is_flood(message: str) -> bool:
    """Whether a message is rate limited whatever the caller says."""
    return message.startswith(_FLOOD_PREFIX)


class RateLimiter:
    """At most ``limit`` lines per ``window`` seconds; then one notice and silence."""

    def __init__(self, limit: int = 100, window: float = 1.0) -> None:
        self.limit = limit
        self.window = window
        self.start = 0.0
        self.count = 0
        self.suppressed = 0

    def allow(self, now: float) -> tuple[bool, str | None]:
        """Whether to log now, plus an optional notice line to log first."""
        notice = None
        if now - self.start >= self.window:
            if self.suppressed:
                notice = f"rate limited log: {self.suppressed} messages suppressed"
            self.start, self.count, self.suppressed = now, 0, 0
        self.count += 1
        if self.count <= self.limit:
            return True, notice
        if self.count == self.limit + 1:
            return False, (
                f"rate limited log exceeded: more than {self.limit} messages "
                f"in {self.window:g}s; suppressing"
            )
        self.suppressed += 1
        return False, notice


def _close_window(rl: RateLimiter, now: float) -> str | None:
    """End the current window if it is over; the summary of what was suppressed."""
    if now - rl.start < rl.window:
        return None
    notice = f"rate limited log: {rl.suppressed} messages suppressed" if rl.suppressed else None
    rl.start, rl.count, rl.suppressed = now, 0, 0
    return notice


class PlutoLogger:
    """Where pluto's lines go, and in what shape."""

    def __init__(
        self,
        *,
        stderr: bool = False,
        logfile: str | None = None,
        logtime: bool = True,
        logappend: bool = True,
        logip: bool = True,
        audit: bool = True,
        debug: set[str] | None = None,
        rate_limit: int = 100,
        ident: str = "pluto",
        journal_socket: str = JOURNAL_SOCKET,
    ) -> None:
        self.logtime = logtime
        self.logip = logip
        self.audit = audit
        self.debug: set[str] = set(debug or ())
        # per-connection debugging (conn debug=, whack --name NAME --debug): the classes
        # logged for that conn's lines on top of the global set; empty when nobody has any
        self.conn_debug: dict[str, set[str]] = {}
        self.limiter = RateLimiter(rate_limit)
        self.capture: Callable[[str], None] | None = None  # a whack that sees the lines
        self._lock = threading.RLock()
        self._stream: TextIO | None = None
        # file/stderr lines written by the event loop's thread wait in ``_buf`` for the
        # end of the loop's turn (``defer_writes``): one write and one flush per turn
        self._buf: list[str] = []
        self._defer: Callable[[Callable[[], None]], object] | None = None
        self._defer_thread: int | None = None
        self._flush_pending = False
        self._held = 0  # inside ``held()`` (the loop's thread): written at its end
        self._held_thread: int | None = None  # the thread inside ``hold()``
        # kernel audit records of the held batch: sent together at its end, one
        # netlink datagram (several nlmsgs, RFC 3549 §2.3.2) instead of one per record
        self._audit_buf: list[bytes] = []
        self._stamp_sec = -1  # the second of the cached "%b %e %H:%M:%S" stamp
        self._stamp_head = ""
        self._syslog = False
        self._journal: Journal | None = None
        self.destination = "syslog"
        if logfile:
            # Opening may raise OSError; the caller reports it and exits 1.
            self._stream = open(logfile, "a" if logappend else "w", encoding="utf-8")  # noqa: SIM115
            self.destination = logfile
        elif stderr:
            self._stream = sys.stderr
            self.destination = "stderr"
        else:
            syslog.openlog(ident, syslog.LOG_PID, syslog.LOG_AUTHPRIV)
            self._syslog = True
            # under systemd: the same lines, with fields (daemon/journal.py)
            self._journal = Journal.open(ident, journal_socket)
            if self._journal is not None:
                self.destination = "journal"

    # --- formatting -----------------------------------------------------------
    @staticmethod
    def prefix(conn: str | None, serial: int | None, remote: object | None) -> str:
        if conn is not None and serial:
            return f'"{conn}" #{serial}: '
        if conn is not None:
            return f'"{conn}": '
        if serial:
            return f"#{serial}: "
        if remote is not None:
            return f"packet from {remote}: "
        return ""

    def debugging(self, cls: str = "base", conn: str | None = None) -> bool:
        if cls in self.debug or (cls not in DEBUG_CLASSES and "base" in self.debug):
            return True
        if conn is None or not self.conn_debug:
            return False
        cd = self.conn_debug.get(conn)
        return cd is not None and (cls in cd or (cls not in DEBUG_CLASSES and "base" in cd))

    @property
    def any_debug(self) -> bool:
        """Some debugging is on (global or for some conn): debug lines may be wanted."""
        return bool(self.debug or self.conn_debug)

    def set_conn_debug(self, conn: str, classes: set[str]) -> None:
        """``conn``'s own debug classes (an empty set: none of its own)."""
        with self._lock:
            if classes:
                self.conn_debug = {**self.conn_debug, conn: set(classes)}
            elif conn in self.conn_debug:
                self.conn_debug = {k: v for k, v in self.conn_debug.items() if k != conn}

    def log(
        self,
        message: str,
        level: str = "info",
        *,
        conn: str | None = None,
        serial: int | None = None,
        remote: object | None = None,
        debug_class: str = "base",
        rate_limited: bool = False,
    ) -> None:
        """One event: one line, escaped (:mod:`pypluto.textsafe`), unless suppressed.

        ``rate_limited`` marks lines provoked by network input; audit lines
        (:func:`is_audit`) are written anyway and do not count against the limit.
        """
        if level == "debug" and not self.debugging(debug_class, conn):
            return
        # is_flood / is_audit inline (issue 18: every line of every IKE SA comes here)
        if message.startswith(_FLOOD_PREFIX) or (
                rate_limited and (level == "debug" or (
                    _AUDIT_RE.match(message) is None and not (
                        _DEAD_WORDS in message and _DEAD_RE.match(message) is not None)))):
            ok, notice = self.limiter.allow(time.monotonic())
            if notice:
                self._emit(notice, "warning")
            if not ok:
                return
        # the prefix (``prefix``) inline
        if conn is not None:
            text = f'"{conn}" #{serial}: {message}' if serial else f'"{conn}": {message}'
        elif serial:
            text = f"#{serial}: {message}"
        elif remote is not None:
            text = f"packet from {remote}: {message}"
        else:
            text = message
        if level == "debug":
            text = "| " + text
        elif level == "error":
            text = "ERROR: " + text if not text.startswith("ERROR") else text
        fields: dict[str, str] | None = None
        if self._journal is not None:
            fields = {}
            if conn is not None:
                fields["PLUTO_CONN"] = escape(conn, LINE_LIMIT)
            if serial:
                fields["PLUTO_SERIAL"] = str(serial)
            if remote is not None and self.logip:
                fields["PLUTO_PEER"] = escape(str(remote), LINE_LIMIT)
        self._write_line(escape(text, LINE_LIMIT), level, fields)  # ``_emit`` inline

    def _emit(self, text: str, level: str, fields: dict[str, str] | None = None) -> None:
        """Write one line: escaped and bounded here, so no caller can bypass it."""
        self._write_line(escape(text, LINE_LIMIT), level, fields)

    def _write_line(self, line: str, level: str, fields: dict[str, str] | None = None) -> None:
        """Write one line that ``escape`` already made safe (``_emit``, ``audit_event``)."""
        if not self.logip:
            line = mask_addresses(line)
        with self._lock:
            if self._syslog:
                prio = {
                    "debug": syslog.LOG_DEBUG,
                    "error": syslog.LOG_ERR,
                }.get(level, syslog.LOG_WARNING)
                if self._journal is None or not self._journal.send(line, prio, fields or {}):
                    syslog.syslog(prio, line)
            elif self._stream is not None:
                if self.logtime:
                    t = time.time()
                    sec = int(t)
                    if sec != self._stamp_sec:  # strftime once a second, not per line
                        self._stamp_head = time.strftime("%b %e %H:%M:%S", time.localtime(t))
                        self._stamp_sec = sec
                    out = f"{self._stamp_head}.{int((t % 1) * 1e6):06d}: {line}\n"
                else:
                    out = line + "\n"
                self._buf.append(out)
                if self._defer is None or threading.get_ident() != self._defer_thread:
                    self._write_buffered()
                elif not self._flush_pending and not self._held:
                    self._flush_pending = True
                    try:
                        self._defer(self.flush)
                    except RuntimeError:  # the loop is closed: write through again
                        self._defer = None
                        self._write_buffered()
            if self.capture is not None and level != "debug":
                self.capture(line)

    # --- buffered writes (file / stderr) -----------------------------------------
    def defer_writes(self, call_soon: Callable[[Callable[[], None]], object] | None) -> None:
        """Buffer the lines the calling thread (the event loop's) writes to a file or
        stderr until ``call_soon(flush)`` runs: one write per turn of the loop instead
        of one per line.  Lines stay in order; every line is written, and none waits
        longer than the turn of the loop it was logged in.  ``None``: write each line
        at once again (what is buffered is written now)."""
        with self._lock:
            self._write_buffered()
            self._defer = call_soon
            self._defer_thread = threading.get_ident() if call_soon is not None else None

    def hold(self) -> None:
        """A batch of work on the loop's thread begins (a socket's datagrams, issue 18):
        its lines are written together when it ends (``release``), with no extra turn
        of the loop for ``flush``.  Pairs with ``release`` in a ``finally``."""
        if not self._held:
            self._held_thread = threading.get_ident()
        self._held += 1

    def release(self) -> None:
        """The batch ends: what it logged is written now (one write, as per turn)."""
        self._held -= 1
        if not self._held:
            self._held_thread = None
            if self._audit_buf:
                self._send_audit()
            if self._buf:
                with self._lock:
                    self._write_buffered()

    def _send_audit(self) -> None:
        """The held batch's kernel audit records, in order, in one netlink datagram."""
        batch, self._audit_buf = self._audit_buf, []
        _AUDIT.send_many(batch)

    def flush(self) -> None:
        """Write the buffered lines (the end of a turn of the event loop)."""
        if self._audit_buf and self._held_thread is None:
            self._send_audit()
        with self._lock:
            self._write_buffered()

    def _write_buffered(self) -> None:
        self._flush_pending = False
        if not self._buf:
            return
        data = "".join(self._buf)
        self._buf.clear()
        if self._stream is None:
            return
        try:
            self._stream.write(data)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def flush_rate_limit(self) -> bool:
        """Log how many lines were suppressed once the window is over.

        Returns True while lines are still being suppressed (call again later).
        """
        notice = _close_window(self.limiter, time.monotonic())
        if notice:
            self._emit(notice, "warning")
        return self.limiter.suppressed > 0 or self.limiter.count > self.limiter.limit

    def audit_event(self, record: str) -> None:
        """A Linux-audit style record (``--log-no-audit`` turns these off).

        Sent to the kernel audit subsystem when it accepts it, and always logged
        as an ``AUDIT:`` line so that it is visible without auditd.
        """
        if not self.audit:
            return
        safe = escape(record, LINE_LIMIT)
        # never rate limited; inside a held batch of the loop's thread (a socket's
        # datagrams) sent with the batch's other records when it ends (``release``)
        if self._held and self._held_thread == threading.get_ident():
            self._audit_buf.append(audit_message(safe))
        else:
            send_kernel_audit(safe)
        if safe is record and len(record) <= LINE_LIMIT - len(_AUDIT_TAG):
            # plain text (escape gave it back as it was): "AUDIT: " + it is plain too,
            # so it is not escaped a second time (issue 18)
            self._write_line(_AUDIT_TAG + record, "info")
        else:
            self._emit(_AUDIT_TAG + record, "info")

    def reopen(self) -> bool:
        """Reopen ``--logfile`` by name (logrotate moved it); False if it is not a file.

        On failure the old stream stays in use and OSError propagates.
        """
        if self._stream is None or self._stream is sys.stderr or self.destination == "stderr":
            return False
        new = open(self.destination, "a", encoding="utf-8")  # noqa: SIM115
        with self._lock:
            self._write_buffered()  # what was logged before goes to the old file
            old, self._stream = self._stream, new
        try:
            old.close()
        except OSError:
            pass
        return True

    def close(self) -> None:
        if self._audit_buf:
            self._send_audit()
        with self._lock:
            self._write_buffered()
            self._defer = None
            if self._stream is not None and self._stream is not sys.stderr:
                try:
                    self._stream.close()
                except OSError:
                    pass
            self._stream = None
            if self._syslog:
                syslog.closelog()
                self._syslog = False
            if self._journal is not None:
                self._journal.close()
                self._journal = None


AUDIT_CRYPTO_IKE_SA = 2408
AUDIT_CRYPTO_IPSEC_SA = 2409
NETLINK_AUDIT = 9


_AUDIT_RETRY = 10.0  # seconds before opening the audit socket again after a failure


class _AuditSocket:
    """One NETLINK_AUDIT socket kept open (opening and closing one per record cost
    more than the record itself); opened again at most every ``_AUDIT_RETRY``
    seconds after opening failed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.failed_at: float | None = None

    def send(self, data: bytes) -> bool:
        with self.lock:
            if self.sock is None:
                now = time.monotonic()
                if self.failed_at is not None and now - self.failed_at < _AUDIT_RETRY:
                    return False
                try:
                    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_AUDIT)
                except OSError:
                    self.failed_at = now
                    return False
                self.failed_at = None
                # the kernel may answer a refused record with an error message: never
                # read, so keep the queue small and never block on it
                s.setblocking(False)
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                self.sock = s
            try:
                self.sock.sendto(data, (0, 0))
            except OSError:  # refused (no CAP_AUDIT_WRITE, ...): best effort, as before
                return False
            return True

    def send_many(self, messages: list[bytes]) -> None:
        """Several netlink messages (``audit_message``), in order, as few datagrams as
        fit ``_AUDIT_DATAGRAM`` bytes: the kernel handles every nlmsg of a datagram in
        turn (each padded to 4 bytes, RFC 3549 §2.3.2), as it would separate sends."""
        if len(messages) == 1:
            self.send(messages[0])
            return
        chunk: list[bytes] = []
        size = 0
        for m in messages:
            padded = m + b"\0" * (-len(m) % 4)
            if chunk and size + len(padded) > _AUDIT_DATAGRAM:
                self.send(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(padded)
            size += len(padded)
        if chunk:
            self.send(b"".join(chunk))


_AUDIT = _AuditSocket()


_NLMSG_HDR = struct.Struct("=IHHII")
_PID = [os.getpid()]  # the netlink header's pid: one getpid(2) per process, not per record
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


_AUDIT_DATAGRAM = 32 * 1024  # bytes of audit records sent in one datagram at most


def audit_message(record: str, msg_type: int = AUDIT_CRYPTO_IKE_SA) -> bytes:
    """One user record as a netlink message (header, text, NUL) for NETLINK_AUDIT."""
    payload = record.encode()[:8000] + b"\0"
    return _NLMSG_HDR.pack(16 + len(payload), msg_type, 0x1, 1, _PID[0]) + payload


def send_kernel_audit(record: str, msg_type: int = AUDIT_CRYPTO_IKE_SA) -> bool:
    """Best effort: hand one user record to the Linux audit subsystem."""
    return _AUDIT.send(audit_message(record, msg_type))


def capture_warnings(log: PlutoLogger) -> None:
    """Python warnings become escaped debug lines of ``log`` (``plutodebug=base``), not
    raw text on stderr with a line of our source: ``cryptography`` warns about a peer
    certificate's odd names (a country name of 8 letters), which the IKE_AUTH that
    refuses or accepts it reports anyway."""
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        log.log(f"{category.__name__}: {message} ({os.path.basename(filename)}:{lineno})",
                "debug")

    warnings.showwarning = show
