"""The whack <-> pluto control protocol (ours, versioned; see docs/control-protocol.md).

Every message is one *frame*: a 4-byte big-endian length followed by that many
bytes of UTF-8 JSON holding one object.  The client sends exactly one request
frame; the server answers with zero or more ``output`` frames (lines for the
user) and exactly one ``result`` frame, then closes the connection.

Every frame carries ``"proto": PROTOCOL_NAME`` and ``"version": VERSION``.  A
peer speaking another version gets a clear error instead of a misunderstanding.
"""

from __future__ import annotations

import json
import socket
import struct
from dataclasses import dataclass, field
from typing import Any

from pypluto.textsafe import guard

PROTOCOL_NAME = "pypluto-control"
VERSION = 1
MAX_FRAME = 64 * 1024 * 1024  # the JSON status of tens of thousands of SAs fits
# a request (whack -> pluto) is much smaller: the largest is ``ipsec add NAME...``, whose
# names come from one command line, which Linux caps at a quarter of RLIMIT_STACK and
# at most 6 MiB; a longer request is refused before its body is read (a whack could
# make pluto buffer 64 MiB per connection)
MAX_REQUEST = 16 * 1024 * 1024

# Return codes, shared with Libreswan's whack (its ``enum rc_type``): they become
# whack's exit status.
RC_SUCCESS = 0
RC_DUPNAME = 20  # attempt to reuse a connection name
RC_UNKNOWN_NAME = 21  # connection name unknown
RC_ORIENT = 22  # cannot orient connection: neither end is us
RC_DEAF = 24  # need --listen before --initiate
RC_ROUTE = 25  # cannot route
RC_NOPEERIP = 29  # cannot initiate when peer IP is unknown
RC_INITSHUNT = 30  # cannot initiate a shunt-only connection
RC_WHACK_PROBLEM = 33  # whack-detected problem (bad arguments, no pluto)
RC_BADWHACKMESSAGE = 50  # pluto could not understand the request
RC_NORETRANSMISSION = 51  # the peer did not answer
RC_INTERNAL_ERROR = 52
RC_FATAL = 56  # negotiation failed

COMMANDS = frozenset(
    {
        "ping",
        "status",
        "globalstatus",
        "showstates",
        "trafficstatus",
        "briefstatus",
        "connectionstatus",
        "shuntstatus",
        "initiate",
        "down",
        "delete",
        "add",
        "route",
        "unroute",
        "rekey-ike",
        "rekey-child",
        "listen",
        "unlisten",
        "rereadsecrets",
        "listpsks",
        "listpubkeys",
        "reopenlogs",
        "shutdown",
        "debug",
        "redirect",
        "fetchcrls",
        "listcrls",
        "purgeocsp",
    }
)


class ProtocolError(Exception):
    """A frame that is not a valid message of this protocol (the text says why)."""


@dataclass
class Request:
    command: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_obj(self) -> dict[str, Any]:
        return {
            "proto": PROTOCOL_NAME,
            "version": VERSION,
            "type": "request",
            "command": self.command,
            "args": self.args,
        }


def encode_frame(obj: dict[str, Any]) -> bytes:
    """One frame: length (4 bytes, network order) + compact JSON."""
    body = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return struct.pack("!I", len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse one frame body and check protocol name and version."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"malformed control message: {e}") from None
    except RecursionError:  # "[[[[..." nested deeper than the interpreter's stack
        raise ProtocolError("malformed control message: JSON nested too deep") from None
    if not isinstance(obj, dict):
        raise ProtocolError("malformed control message: not a JSON object")
    if obj.get("proto") != PROTOCOL_NAME:
        raise ProtocolError(
            "not a pypluto control message (is this Libreswan's whack talking to pypluto?)"
        )
    ver = obj.get("version")
    if ver != VERSION:
        raise ProtocolError(
            f"control protocol version mismatch: peer speaks version {ver!r}, "
            f"this side speaks version {VERSION}; use whack and pluto of the same release"
        )
    return obj


def parse_request(obj: dict[str, Any]) -> Request:
    if obj.get("type") != "request":
        raise ProtocolError("expected a request")
    cmd = obj.get("command")
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        raise ProtocolError(f"unknown command {cmd!r}")
    args = obj.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError("request args must be an object")
    return Request(cmd, args)


def output_frame(text: str) -> dict[str, Any]:
    # a catch-all: any line a peer's text reached is escaped before whack prints it
    return {"proto": PROTOCOL_NAME, "version": VERSION, "type": "output", "text": guard(text)}


def result_frame(rc: int, data: Any = None, error: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"proto": PROTOCOL_NAME, "version": VERSION, "type": "result", "rc": rc}
    if data is not None:
        obj["data"] = data
    if error is not None:
        obj["error"] = guard(error)  # one visible line: it may echo a name whack was sent
    return obj


# --- blocking helpers (used by the whack client) ------------------------------


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("pluto closed the control connection")
        buf += chunk
    return bytes(buf)


def read_frame_blocking(sock: socket.socket) -> dict[str, Any]:
    (n,) = struct.unpack("!I", _recv_exact(sock, 4))
    if n > MAX_FRAME:
        raise ProtocolError(f"frame of {n} bytes exceeds {MAX_FRAME}")
    return decode_body(_recv_exact(sock, n))
