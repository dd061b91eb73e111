"""Make untrusted text safe for a log line or whack output (issue 13 item 3).

One function, :func:`escape`, used at every sink (the daemon's logger, whack
status output): whatever a peer put in an ID, a notify or a vendor ID, the
result is one line of visible characters of bounded length.

* ``\\`` becomes ``\\\\`` first, so an escape sequence in the input cannot pass
  for one of ours;
* newline, CR and tab become ``\\n``, ``\\r``, ``\\t``; every other C0 control
  and DEL becomes ``\\xHH`` (NUL is ``\\x00``, ESC is ``\\x1b``);
* C1 controls (U+0080-U+009F, NEL among them), Unicode format characters (bidi overrides and isolates U+202A-U+202E,
  U+2066-U+2069, marks, zero-width characters), line and paragraph separators,
  surrogates and private-use characters become ``\\uHHHH`` (``\\UHHHHHHHH``
  above the BMP), so no "Trojan Source" reordering reaches a terminal;
* bytes are decoded as UTF-8; a byte that is not valid UTF-8 becomes ``\\xHH``
  (``HH`` >= 80, which no character produces: the escaping is injective);
* the result is at most ``limit`` characters plus a visible
  ``...[N chars]`` mark telling how long the (escaped) text was; an escape
  sequence is never cut in half.

:func:`sanitized` is the other form, for the IDs of status output that Libreswan 5.2
prints with ``jam_sanitized_bytes`` (octal escapes, printable ASCII as is): the
result is one line of printable ASCII too.

This module is the bottom layer: it imports nothing of pypluto, so ``ike/``,
``control/`` and ``daemon/`` may all use it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

__all__ = ["DEFAULT_LIMIT", "ID_LIMIT", "LINE_LIMIT", "escape", "guard", "is_clean",
           "sanitized"]

DEFAULT_LIMIT = 256  # one peer-supplied field (an ID, a notify's data)
LINE_LIMIT = 2048  # one whole log or whack line
ID_LIMIT = 512  # an ID in status output (Libreswan's id_buf)

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# categories escaped outside ASCII: controls, format (bidi, zero-width),
# line/paragraph separators, surrogates (undecodable bytes), private use
_UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co"))


def _escape_char(ch: str, from_bytes: bool = False) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    cp = ord(ch)
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x7F:
        return ch
    if from_bytes and 0xDC80 <= cp <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{cp - 0xDC00:02x}"
    if cp <= 0x9F:  # C1 controls, U+0085 NEL among them
        return f"\\u{cp:04x}"
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"
    return ch


def _is_plain(s: str) -> bool:
    """Printable ASCII without backslash: nothing to escape."""
    return s.isascii() and s.isprintable() and "\\" not in s


def escape(value: str | bytes | bytearray | memoryview | object,
           limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one safe, visible, bounded line (see the module docstring).

    Anything that is not text or bytes is converted with ``str()`` first.
    ``limit`` bounds the escaped text (not counting the truncation mark);
    ``limit <= 0`` means no bound.
    """
    if type(value) is str and value.isascii() and value.isprintable() and "\\" not in value:
        # the common case first (issue 18: ~7 calls per IKE SA): plain printable ASCII,
        # the checks of ``_is_plain`` without its call and the isinstance tests below
        if limit <= 0 or len(value) <= limit:
            return value
        return f"{value[:limit]}...[{len(value)} chars]"
    from_bytes = isinstance(value, bytes | bytearray | memoryview)
    if from_bytes:
        s = bytes(value).decode("utf-8", errors="surrogateescape")  # type: ignore[arg-type]
    elif isinstance(value, str):
        s = value
    else:
        s = str(value)
    if _is_plain(s):
        if limit <= 0 or len(s) <= limit:
            return s
        return f"{s[:limit]}...[{len(s)} chars]"
    return _bounded((_escape_char(ch, from_bytes) for ch in s), limit)


def _bounded(pieces: Iterable[str], limit: int) -> str:
    """The escaped ``pieces`` joined, at most ``limit`` characters (``<= 0``: no bound)
    and then the ``...[N chars]`` mark; an escape is never cut in half."""
    parts: list[str] = []
    n = 0
    cut = False
    for e in pieces:
        if not cut and limit > 0 and n + len(e) > limit:
            cut = True
        if not cut:
            parts.append(e)
        n += len(e)
    out = "".join(parts)
    return f"{out}...[{n} chars]" if cut else out


def is_clean(s: str, limit: int = LINE_LIMIT) -> bool:
    """True when ``s`` holds no character :func:`escape` would rewrite except
    backslashes, and is within ``limit``: nothing in it can break or disguise a line."""
    if limit > 0 and len(s) > limit:
        return False
    if s.isascii():
        return s.isprintable()
    return all(ch == "\\" or _escape_char(ch) == ch for ch in s)


def guard(line: str, limit: int = LINE_LIMIT) -> str:
    """A last line of defence for output assembled from already escaped fields:
    ``line`` unchanged when :func:`is_clean`, else the whole line escaped.

    Use :func:`escape` on each untrusted field; ``guard`` at the sink catches a
    field someone forgot, without escaping the backslashes of escaped fields twice.
    """
    return line if is_clean(line, limit) else escape(line, limit)


_C_NAMED = {0: "\\0", 7: "\\a", 8: "\\b", 9: "\\t", 10: "\\n", 11: "\\v", 12: "\\f",
            13: "\\r"}


def sanitized(value: str | bytes, limit: int = ID_LIMIT, extra: str = "") -> str:
    """``value`` as Libreswan 5.2 shows an ID in status output (``jam_sanitized_bytes``).

    The bytes (text: its UTF-8) are taken one by one: printable ASCII (0x20-0x7E) as
    is, backslash included (a DN's ``\\,`` shows as Libreswan shows it); NUL, BEL,
    BS, TAB, LF, VT, FF and CR as ``\\0 \\a \\b \\t \\n \\v \\f \\r``; every other byte
    (ESC, DEL, each byte of a non-ASCII character) in octal, ``\\ooo`` when a digit
    follows, else the shortest ``\\o``.  The result is one line of printable ASCII.

    ``extra`` lists printable characters to write in octal too (ours: the ``'`` that
    closes trafficstatus's ``id='...'``, so a peer's ID cannot end the field early and
    add a fake one).  The result is at most ``limit`` characters plus a visible
    ``...[N chars]`` mark, an escape never cut in half (as :func:`escape`).
    """
    if type(value) is str and value.isascii() and value.isprintable() and \
            not any(c in value for c in extra) and (limit <= 0 or len(value) <= limit):
        return value  # the common case: nothing to write otherwise
    if isinstance(value, bytes):
        raw = value
    else:
        try:  # an undecodable byte kept as a surrogate (surrogateescape): that byte
            raw = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # another lone surrogate
            raw = value.encode("utf-8", "surrogatepass")
    def octal(i: int, b: int) -> str:
        if 0x20 <= b <= 0x7E and chr(b) not in extra:
            return chr(b)
        if b in _C_NAMED and chr(b) not in extra:
            return _C_NAMED[b]
        if i + 1 < len(raw) and 0x30 <= raw[i + 1] <= 0x39:
            return f"\\{b:03o}"
        return f"\\{b:o}"

    return _bounded((octal(i, b) for i, b in enumerate(raw)), limit)
