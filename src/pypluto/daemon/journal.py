"""Structured log entries for systemd-journald (its native protocol, systemd.journal-fields(7)).

When pluto logs to syslog (its default, as Libreswan's ``ipsec.service`` runs it)
and journald's socket exists, every line goes to the journal as one datagram
with fields beside the text, so an operator can filter without parsing:

* ``MESSAGE`` (the line exactly as syslog would get it), ``PRIORITY``,
  ``SYSLOG_IDENTIFIER=pluto``, ``SYSLOG_FACILITY=10`` (authpriv, as Libreswan),
  ``SYSLOG_PID``;
* ``PLUTO_CONN`` (the connection name), ``PLUTO_SERIAL`` (the IKE/Child SA
  serial, ``#N``'s number), ``PLUTO_PEER`` (the peer's address and port) when
  the line is about them.

The datagram format is journald's: ``NAME=value\\n`` per field, or, for a value
with a newline in it, ``NAME\\n`` + its length as 64-bit little-endian + the
value + ``\\n``.  Values come from the logger after escaping
(:mod:`pypluto.textsafe`), so a peer cannot add a field.  A send that fails
(journald gone, socket buffer full) returns False and the caller falls back to
syslog for that line: nothing is lost silently.
"""

from __future__ import annotations

import os
import socket
import struct

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_NAME_OK = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def encode(fields: dict[str, str]) -> bytes:
    """One journal entry in the native protocol (field names: A-Z, 0-9, _)."""
    out = bytearray()
    for name, value in fields.items():
        if not name or not set(name) <= _NAME_OK or name[0].isdigit():
            raise ValueError(f"bad journal field name {name!r}")
        data = value.encode("utf-8", "backslashreplace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


def decode(entry: bytes) -> dict[str, str]:
    """The inverse of :func:`encode` (for tests and tools)."""
    fields: dict[str, str] = {}
    i = 0
    while i < len(entry):
        nl = entry.index(b"\n", i)
        line = entry[i:nl]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode("utf-8", "replace")
            i = nl + 1
        else:
            (n,) = struct.unpack_from("<Q", entry, nl + 1)
            start = nl + 9
            fields[line.decode()] = entry[start:start + n].decode("utf-8", "replace")
            i = start + n + 1
    return fields


class Journal:
    """A connected datagram socket to journald; ``None`` from :meth:`open` when absent."""

    def __init__(self, sock: socket.socket, ident: str) -> None:
        self.sock = sock
        self.ident = ident
        self.pid = str(os.getpid())

    @classmethod
    def open(cls, ident: str = "pluto", path: str = JOURNAL_SOCKET) -> Journal | None:
        if not os.path.exists(path):
            return None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(path)
        except OSError:
            s.close()
            return None
        s.setblocking(False)  # a stalled journald must never stall the event loop
        return cls(s, ident)

    def send(self, message: str, priority: int, extra: dict[str, str]) -> bool:
        fields = {"MESSAGE": message, "PRIORITY": str(priority), "SYSLOG_FACILITY": "10",
                  "SYSLOG_IDENTIFIER": self.ident, "SYSLOG_PID": self.pid, **extra}
        try:
            self.sock.send(encode(fields))
        except OSError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()
