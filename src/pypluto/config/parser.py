"""``ipsec.conf`` reader: syntax, includes, ``%default``, ``also=``, typed values.

Syntax (ipsec.conf(5)):

- a section starts at column 0: ``config setup`` or ``conn NAME``; its
  ``key=value`` lines are indented (any white space);
- ``include PATTERN`` at column 0 reads the files matching the glob, relative to
  the including file, up to 10 levels deep; ``version 2.0`` is accepted;
- ``#`` starts a comment (outside double quotes); values may be double-quoted;
- blank lines do not end a section.

Errors are of two kinds, as in Libreswan: a *file* error (syntax, unknown key, a
malformed typed value) makes the whole file invalid (``addconn --checkconfig``
fails); a *connection* error (an address, ID, proposal or combination that does
not make sense, a duplicate key, an ``also=`` loop) drops that connection only
and is reported ``while loading 'NAME'``.  Every diagnostic carries file:line.
"""

from __future__ import annotations

import errno
import glob
import ipaddress
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from pypluto.config import keywords
from pypluto.config.addresspool import parse_pool
from pypluto.config.gateways import parse_gateways
from pypluto.config.ids import IdError, parse_id
from pypluto.config.keywords import KeyDef
from pypluto.config.model import AutoMode, Connection, ConnType, End, Origin, SetupConfig
from pypluto.config.proposals import ProposalError, dh_name, parse_proposals, proposal_dh
from pypluto.config.values import (
    UNIQUE_MARK,
    check_percent,
    check_unsigned,
    is_host_keyword,
    parse_addresses,
    parse_bignum,
    parse_binary,
    parse_bool,
    parse_curl_iface,
    parse_duration,
    parse_host,
    parse_int,
    parse_interface_ip,
    parse_ipsec_interface,
    parse_mark,
    parse_ocsp_uri,
    parse_percent,
    parse_protoport,
    parse_subnet,
    parse_subnets,
)
from pypluto.params import IPAddress, IPNetwork

MAX_INCLUDE_DEPTH = 10
MAX_INCLUDED_FILES = 1000  # a glob include of itself would otherwise fan out n^10 times
MAX_ALSO_DEPTH = 32
MAX_FILE_BYTES = 128 * 1024 * 1024
"""The largest ipsec.conf (or included file) read: 100,000 conns of 1.3 KB each, three
times a fully written conn (addresses, IDs, subnets, proposals, lifetimes: ~400 bytes),
fit; a file named by mistake (a log, an image) or grown without bound is refused
before its text is held several times over in memory."""


@dataclass
class Diagnostic:
    """One problem found while reading a config file."""

    file: str
    line: int
    message: str
    severity: Literal["error", "warning"] = "error"
    conn: str | None = None  # set for connection-level problems (the conn is dropped)
    # a key (or value) that Libreswan accepts and pypluto does not support: the conn
    # is refused; in config setup pluto refuses to start (issue 12 item 7)
    unsupported: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        prefix = "" if self.severity == "error" else "warning: "
        if self.unsupported:
            tail = f" (conn '{self.conn}' is not loaded)" if self.conn else ""
            return f"{where}{self.message}{tail}"
        ctx = f"while loading '{self.conn}': " if self.conn else ""
        return f"{where}{prefix}{ctx}{self.message}"


@dataclass
class Section:
    """A section as written: its keys in order, each with value and origin."""

    kind: Literal["setup", "conn"]
    name: str
    origin: Origin
    items: list[tuple[str, str, Origin]] = field(default_factory=list)


@dataclass
class ConfigFile:
    """The result of reading a config file: typed objects plus diagnostics."""

    path: str
    setup: SetupConfig = field(default_factory=SetupConfig)
    conns: dict[str, Connection] = field(default_factory=dict)  # loaded conns, file order
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)  # every conn section as written
    resolved: dict[str, dict[str, tuple[str, Origin]]] = field(default_factory=dict)
    also_chain: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, list[Diagnostic]] = field(default_factory=dict)  # conns not loaded
    # what was read: ("file", path) and ("glob", pattern) in order; see inputs_signature()
    inputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def file_errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error" and d.conn is None]

    @property
    def ok(self) -> bool:
        """True when the file loads (connection-level errors drop only that conn)."""
        return not self.file_errors

    @property
    def unsupported(self) -> list[Diagnostic]:
        """Keys or values that pypluto refuses as not supported (conns not loaded, or
        ``config setup`` keys that stop pluto from starting)."""
        return [d for d in self.diagnostics if d.unsupported]

    def conns_for(self, name: str) -> list[Connection]:
        """The loaded conns that ``ipsec add/up/down NAME`` acts on: NAME itself, or
        the ``NAME/LxR`` pairs that its leftsubnets=/rightsubnets= expanded into
        (Libreswan looks NAME up as their connalias), or the conns with connalias=NAME;
        empty when NAME is not loaded."""
        if name in self.conns:
            return [self.conns[name]]
        return [c for c in self.conns.values() if c.answers_to(name)]

    @property
    def conn_names(self) -> list[str]:
        """Every conn section name (loaded or not), file order, without %default."""
        seen: list[str] = []
        for s in self.sections:
            if s.kind == "conn" and s.name != "%default" and s.name not in seen:
                seen.append(s.name)
        return seen


# --------------------------------------------------------------------------------------
# lexing

_KEY_RE = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.\-+]*)\s*=\s*(.*)$")


class _Reader:
    def __init__(self, root_dir: str | None) -> None:
        self.root_dir = root_dir
        self.diags: list[Diagnostic] = []
        self.sections: list[Section] = []
        self.current: Section | None = None
        self.files_read = 0
        self.inputs: list[tuple[str, str]] = []

    def sections_origin(self, name: str) -> Origin | None:
        for s in self.sections:
            if s.kind == "conn" and s.name == name:
                return s.origin
        return None

    def err(self, file: str, line: int, msg: str, unsupported: bool = False) -> None:
        self.diags.append(Diagnostic(file, line, msg, "error", unsupported=unsupported))

    def warn(self, file: str, line: int, msg: str) -> None:
        self.diags.append(Diagnostic(file, line, msg, "warning"))

    def _resolve_include(self, pattern: str, including: str) -> str:
        if os.path.isabs(pattern):
            if self.root_dir:
                return os.path.join(self.root_dir, pattern.lstrip("/"))
            return pattern
        base = os.path.dirname(including) or "."
        return os.path.join(base, pattern)

    def read_file(self, path: str, depth: int, shown: str | None = None) -> None:
        shown = shown or path
        data = read_config_bytes(path)
        self.read_text(decode_utf8(data, shown, self.diags), shown, depth, path)

    def read_text(self, text: str, filename: str, depth: int = 0,
                  real_path: str | None = None) -> None:
        real_path = real_path or filename
        for lineno, raw in enumerate(text.splitlines(), 1):
            if "\x00" in raw:
                self.err(filename, lineno, "syntax error: NUL byte")
                continue
            line = _strip_comment(raw)
            if line is None:
                self.err(filename, lineno, "syntax error: unterminated quoted string")
                continue
            if not line.strip():
                continue
            indented = line[0] in " \t"
            stripped = line.strip()
            if not indented:
                self._top_level(stripped, filename, lineno, depth, real_path)
                continue
            if self.current is None:
                self.err(filename, lineno,
                         f"syntax error: '{_first_word(stripped)}' is not inside a section")
                continue
            self._key_line(stripped, filename, lineno)

    def _top_level(self, stripped: str, filename: str, lineno: int, depth: int,
                   real_path: str) -> None:
        words = stripped.split()
        head = words[0]
        origin = Origin(filename, lineno)
        if head == "config":
            if len(words) != 2 or words[1] != "setup":
                self.err(filename, lineno, f"syntax error: expected 'config setup', got "
                         f"'{stripped}'")
                self.current = None
                return
            self.current = Section("setup", "setup", origin)
            self.sections.append(self.current)
        elif head == "conn":
            if len(words) != 2:
                self.err(filename, lineno, "syntax error: 'conn' needs exactly one name")
                self.current = None
                return
            name = words[1]
            if not re.match(r"^[^\s\"#]+$", name):
                self.err(filename, lineno, f"syntax error: invalid connection name '{name}'")
                self.current = None
                return
            self.current = Section("conn", name, origin)
            self.sections.append(self.current)
        elif head == "include":
            self.current = None
            if len(words) != 2:
                self.err(filename, lineno, "syntax error: 'include' needs one file name")
                return
            self._include(_unquote(words[1]), filename, lineno, depth, real_path)
            self.current = None  # keys after an include do not continue the included section
        elif head == "version":
            self.current = None
            if len(words) != 2 or words[1] not in ("2", "2.0"):
                self.err(filename, lineno, f"syntax error: unsupported '{stripped}'")
        else:
            self.err(filename, lineno, f"syntax error [{head}]: a key must be indented, "
                     "a section starts with 'conn' or 'config setup'")
            self.current = None

    def _include(self, pattern: str, filename: str, lineno: int, depth: int,
                 real_path: str) -> None:
        if depth + 1 > MAX_INCLUDE_DEPTH:
            self.err(filename, lineno,
                     f"include '{pattern}': nested too deep (more than {MAX_INCLUDE_DEPTH})")
            return
        target = self._resolve_include(pattern, real_path)
        self.inputs.append(("glob", target))
        try:
            matches = sorted(glob.glob(target))
        except (OSError, ValueError, re.error):
            matches = []
        if not matches:
            self.warn(filename, lineno, f"could not open include filename: '{pattern}'")
            return
        for match in matches:
            if os.path.isdir(match):
                if not glob.has_magic(pattern):  # named itself, not one match of many
                    self.warn(filename, lineno, f"could not open include filename: "
                              f"'{pattern}' (Is a directory)")
                continue
            self.files_read += 1
            if self.files_read > MAX_INCLUDED_FILES:
                self.err(filename, lineno, f"include '{pattern}': more than "
                         f"{MAX_INCLUDED_FILES} files included in total")
                return
            shown = match
            if self.root_dir and os.path.isabs(pattern):
                shown = "/" + os.path.relpath(match, self.root_dir)
            self.inputs.append(("file", match))
            try:
                self.read_file(match, depth + 1, shown)
            except ConfigFileRefused as exc:
                self.err(filename, lineno, f"cannot open include filename: '{pattern}' "
                         f"({shown}: {exc})")
            except OSError as exc:
                self.warn(filename, lineno, f"could not open include filename: '{pattern}' "
                          f"({exc.strerror})")
            except RecursionError:
                self.err(filename, lineno, f"include '{pattern}': nested too deep")

    def _key_line(self, stripped: str, filename: str, lineno: int) -> None:
        hit = _LINE_MEMO.get(stripped)  # "also=site3", "auto=add": written 1,000s of times
        if hit is not None:
            assert self.current is not None
            self.current.items.append((hit[0], hit[1], Origin(filename, lineno)))
            return
        if _X_COMMENT_RE.match(stripped):  # Libreswan 5.2: X-/x_ keys are comments
            self.warn(filename, lineno, f"X- style comment ignored: {stripped}")
            return
        m = _KEY_RE.match(stripped)
        if not m:
            self.err(filename, lineno, f"syntax error [{_first_word(stripped)}]: "
                     "expected key=value")
            return
        key, rest = m.group(1), m.group(2)
        value, tail = _take_value(rest)
        if value is None:
            self.err(filename, lineno, f"syntax error: unterminated quote in '{key}='")
            return
        if tail.strip():
            self.err(filename, lineno, f"syntax error [{_first_word(tail.strip())}]: "
                     f"unexpected text after {key}={value}")
            return
        assert self.current is not None
        _memo_put(_LINE_MEMO, stripped, (key, value))
        self.current.items.append((key, value, Origin(filename, lineno)))


_LINE_MEMO: dict[str, tuple[str, str]] = {}  # a well-formed key line -> (key, value)
_X_COMMENT_RE = re.compile(r'[Xx][-_][^"= \t]+')


class ConfigFileRefused(Exception):
    """A config file that is not read: not a regular file, or too large."""


_FILE_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _check_regular(mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
    if not stat.S_ISREG(mode):
        kind = next((k for test, k in _FILE_KINDS if test(mode)), "not a file")
        raise ConfigFileRefused(f"not a regular file ({kind})")


def read_config_bytes(path: str, limit: int | None = None) -> bytes:
    """The bytes of a config file, never blocking and never more than ``limit`` (default
    ``MAX_FILE_BYTES``): a FIFO, device or socket (``include /dev/zero``, a FIFO nobody
    writes to) or a file over the limit raises ``ConfigFileRefused``; at most limit+1
    bytes are read.  Missing, unreadable or a directory: ``OSError`` as ``open``."""
    limit = MAX_FILE_BYTES if limit is None else limit
    _check_regular(os.stat(path).st_mode)  # a socket cannot be opened, a FIFO would block
    # O_NONBLOCK: should the path become a FIFO after the stat, open does not wait for a
    # writer; fstat then sees what was opened
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check_regular(os.fstat(fd).st_mode)
        chunks: list[bytes] = []
        n = 0
        while n <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - n))
            if not chunk:
                break
            chunks.append(chunk)
            n += len(chunk)
    finally:
        os.close(fd)
    if n > limit:
        raise ConfigFileRefused(f"file too large: more than {limit} bytes")
    return b"".join(chunks)


def decode_utf8(data: bytes, filename: str, diags: list[Diagnostic]) -> str:
    """``data`` as UTF-8 text; bytes that are not UTF-8 become U+FFFD, and a warning
    names the line of the first one (a value read from it is not the file's bytes)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        diags.append(Diagnostic(filename, line, "not valid UTF-8: bytes that are not UTF-8 "
                                "are read as U+FFFD, a value holding them is not what the "
                                "file says", "warning"))
        return data.decode("utf-8", errors="replace")


def _first_word(text: str) -> str:
    return text.split()[0] if text.split() else text


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def _strip_comment(line: str) -> str | None:
    """Remove a ``#`` comment outside quotes; None if a quote is left open."""
    if "#" not in line and '"' not in line:
        return line.rstrip("\r\n")
    quoted = False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == "#" and not quoted and (i == 0 or line[i - 1] in " \t="):
            return line[:i]
    if quoted:
        return None
    return line.rstrip("\r\n")


def _take_value(rest: str) -> tuple[str | None, str]:
    rest = rest.strip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            return None, ""
        return rest[1:end], rest[end + 1:]
    if rest.startswith("{"):
        end = rest.find("}", 1)
        if end < 0:
            return None, ""
        return rest[: end + 1], rest[end + 1:]
    parts = rest.split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


# --------------------------------------------------------------------------------------
# key checking

def _check_value(kd: KeyDef, key: str, value: str) -> None:
    """Syntax-check a typed value; raises ValueError (a file-level error)."""
    if value == "":
        return
    kind = kd.kind
    if kind == "bool":
        parse_bool(value, key)
    elif kind == "enum":
        if value.lower() not in kd.values:
            raise ValueError(f"keyword {key}, invalid value: {value}")
    elif kind == "time":
        parse_duration(value, key)
    elif kind == "ms":
        parse_duration(value, key, bare_unit=0.001)
    elif kind == "percent":
        check_percent(value, key)
    elif kind == "int":  # Libreswan's kt_unsigned; ranges are checked where it is used
        check_unsigned(value, key)
    elif kind == "bignum":  # ranges are checked where the value is used
        if key in _BINARY_KEYS:
            parse_binary(value, key, _BINARY_KEYS[key])
        elif key == "nhelpers":  # Libreswan's kt_unsigned, and -1: CPUs - 1 (pluto(8))
            if value.strip() != "-1":
                check_unsigned(value, key)
        else:
            parse_bignum(value, key)


_BINARY_KEYS = {"ipsec-max-bytes": True, "ipsec-max-packets": False}
"""Libreswan 5.2's kt_byte / kt_binary keys: (key, whose multipliers end in B)."""


def _validate_sections(reader: _Reader, enforce: bool = True) -> None:
    for sec in reader.sections:
        seen: dict[str, Origin] = {}
        for key, value, origin in sec.items:
            if sec.kind == "setup":
                kd = keywords.lookup_setup(key)
                if kd is None:  # Libreswan 5.2's words: a fatal syntax error
                    reader.err(origin.file, origin.line, f"unrecognized keyword '{key}'")
                    continue
                canon = kd.alias or kd.name
            else:
                found = keywords.lookup_conn(key)
                if found is None:
                    reader.err(origin.file, origin.line, f"unrecognized keyword '{key}'")
                    continue
                kd, _side, canon = found
            if kd.support == "obsolete":
                reader.warn(origin.file, origin.line,
                            f"{key}={value}: obsolete keyword ignored: {kd.note}")
                continue
            try:
                _check_value(kd, key, value)
            except ValueError as exc:
                reader.err(origin.file, origin.line, str(exc))
                continue
            if enforce and sec.kind == "setup" and value != "":
                why = keywords.unsupported_reason(kd, value)
                if why is not None:
                    reader.err(origin.file, origin.line,
                               unsupported_message(key, value, kd, why), unsupported=True)
            if canon in seen and canon != "also":
                prev = seen[canon]
                reader.diags.append(Diagnostic(
                    origin.file, origin.line,
                    f"duplicate key '{key}' in {'config setup' if sec.kind == 'setup' else 'conn ' + sec.name} (first set at {prev})",
                    "error" if sec.kind == "conn" else "warning",
                    conn=sec.name if sec.kind == "conn" else None))
            seen.setdefault(canon, origin)


def _canonical_items(sec: Section) -> list[tuple[str, str, Origin]]:
    out = []
    for key, value, origin in sec.items:
        if sec.kind == "setup":
            kd = keywords.lookup_setup(key)
            if kd is None or kd.support == "obsolete":
                continue
            out.append((kd.alias or kd.name, value, origin))
        else:
            found = keywords.lookup_conn(key)
            if found is None or found[0].support == "obsolete":
                continue
            if found[1] == "both":
                out.append(("left" + found[2][4:], value, origin))
                out.append(("right" + found[2][4:], value, origin))
                continue
            out.append((found[2], value, origin))
    return out


# --------------------------------------------------------------------------------------
# resolution: %default and also=

def _resolve_conns(reader: _Reader, cfg: ConfigFile) -> None:
    """Apply ``also=`` (depth first, the conn's own keys win) and then ``%default``.

    A conn name defined twice: ``also=`` finds the first definition (as Libreswan's
    lookup does) and the later definition is the one that is loaded (it replaces the
    earlier one, as adding a conn of the same name does in pluto).
    """
    own: list[dict[str, tuple[str, Origin]]] = []
    alsos: list[list[tuple[str, Origin]]] = []
    names: list[str] = []
    first: dict[str, int] = {}
    defaults: dict[str, tuple[str, Origin]] = {}
    for sec in reader.sections:
        if sec.kind != "conn":
            continue
        if sec.name == "%default":
            # ipsec.conf(5): several %default sections may set a key, the last value is
            # used (Libreswan 5.2 loads them in order over one another); within one
            # section the first one counts (a duplicate key is reported)
            these: dict[str, tuple[str, Origin]] = {}
            for key, value, origin in _canonical_items(sec):
                if key == "also":  # ignored (addconn-38-keyword-in-wrong-section)
                    reader.warn(origin.file, origin.line,
                                f"invalid 'conn %default' keyword ignored: also={value}")
                else:
                    these.setdefault(key, (value, origin))
            defaults.update(these)
            continue
        if sec.name in first:
            reader.warn(sec.origin.file, sec.origin.line,
                        f"conn '{sec.name}' is defined again (first at "
                        f"{reader.sections_origin(sec.name)}); the later definition "
                        "replaces it when loaded")
        else:
            first[sec.name] = len(own)
        d: dict[str, tuple[str, Origin]] = {}
        al: list[tuple[str, Origin]] = []
        for key, value, origin in _canonical_items(sec):
            if key == "also":
                al.extend((v, origin) for v in value.split())
                continue
            d.setdefault(key, (value, origin))  # a duplicate is reported; first one wins
        own.append(d)
        alsos.append(al)
        names.append(sec.name)

    cache: dict[int, tuple[dict[str, tuple[str, Origin]], list[str]]] = {}
    no_skips: frozenset[int] = frozenset()

    def expand(idx: int, stack: list[int]
               ) -> tuple[dict[str, tuple[str, Origin]], list[str], frozenset[int]]:
        """The keys of section ``idx`` with its also= sections, the also= chain, and the
        sections on ``stack`` that were not inserted again (a loop)."""
        if idx in cache:
            return (*cache[idx], no_skips)
        result = dict(own[idx])
        chain: list[str] = []
        skipped = no_skips
        for target, origin in alsos[idx]:
            tidx = first.get(target)
            if tidx is None:
                raise _AlsoError(origin, f"also={target}: no conn named '{target}'")
            if tidx in stack or tidx == idx:
                # ipsec.conf(5): "duplicate insertions of the same section are ignored"
                # (Libreswan 5.2's confread.c visits each section once): a loop is not an
                # error, the section already being inserted is not inserted again
                skipped = skipped | {tidx}
                continue
            if len(stack) > MAX_ALSO_DEPTH:
                raise _AlsoError(origin, "also= nested too deep")
            sub, subchain, subskipped = expand(tidx, stack + [idx])
            skipped = skipped | subskipped
            chain.append(target)
            chain.extend(subchain)
            for key, val in sub.items():
                result.setdefault(key, val)
        skipped = skipped - {idx}
        if not skipped:  # else the keys depend on where the loop was entered: not kept
            cache[idx] = (result, chain)
        return result, chain, skipped

    last: dict[str, int] = {}
    for idx, name in enumerate(names):
        last[name] = idx
    for name, idx in last.items():
        try:
            resolved, chain, _skipped = expand(idx, [])
        except _AlsoError as exc:
            diag = Diagnostic(exc.origin.file, exc.origin.line, exc.msg, "error", conn=name)
            reader.diags.append(diag)
            cfg.failed.setdefault(name, []).append(diag)
            continue
        resolved = dict(resolved)
        # %default fills what is still unset
        for key, val in defaults.items():
            resolved.setdefault(key, val)
        cfg.resolved[name] = resolved
        cfg.also_chain[name] = [n for n in dict.fromkeys(chain) if n != name]  # a loop


class _AlsoError(Exception):
    def __init__(self, origin: Origin, msg: str) -> None:
        super().__init__(msg)
        self.origin = origin
        self.msg = msg


# --------------------------------------------------------------------------------------
# typed objects

VTI_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")  # IFNAMSIZ - 1, no '/' or spaces


def _vti_keys(conn: Connection, get: Callable[[str], str | None],
              b: Callable[[str, bool], bool]) -> None:
    """``vti-interface=``, ``vti-routing=``, ``vti-shared=`` and ``leftvti=`` (ipsec.conf(5)).

    A VTI device takes its input and output keys from the conn's marks, so the conn
    needs ``mark=`` (or both ``mark-in=`` and ``mark-out=``) with a fixed value: the
    kernel looks the SAs and policies up with the device's key as the packet mark.
    """
    name = get("vti-interface")
    conn.vti_routing = b("vti-routing", True)
    conn.vti_shared = b("vti-shared", False)
    for end, side in ((conn.left, "leftvti"), (conn.right, "rightvti")):
        if end.vti_ip is not None:
            try:
                ipaddress.ip_interface(end.vti_ip.strip())
            except ValueError:
                raise ConnError(side, f"{side}={end.vti_ip}: not an ADDRESS/PREFIX") from None
    if name is None:
        for end, side in ((conn.left, "leftvti"), (conn.right, "rightvti")):
            if end.vti_ip is not None:
                raise ConnError(side, f"{side}= needs vti-interface=")
        return
    name = name.strip()
    if not VTI_NAME.match(name):
        raise ConnError("vti-interface", f"vti-interface={name}: not a network device name "
                        "(1 to 15 letters, digits, '_', '.', '-')")
    for key, mark in (("mark-in", conn.mark_in), ("mark-out", conn.mark_out)):
        if mark is None:
            raise ConnError("vti-interface", f"vti-interface={name} needs mark= (the VTI "
                            f"device's keys are the marks; {key} is unset)")
        if mark[0] == UNIQUE_MARK:
            raise ConnError("vti-interface", f"vti-interface={name} needs a fixed mark: "
                            f"{key}=-1 (a unique mark per instance) cannot be a device key")
    conn.vti_interface = name


class ConnError(ValueError):
    """A connection-level problem, with the key whose value caused it."""

    def __init__(self, key: str | None, msg: str, unsupported: bool = False) -> None:
        super().__init__(msg)
        self.key = key
        self.unsupported = unsupported


def unsupported_message(key: str, value: str, kd: KeyDef, why: str) -> str:
    """``KEY is not supported by pypluto`` for a refused key, ``KEY=VALUE ...`` for a
    value that a partial key does not support; ``why`` follows in parentheses."""
    what = key if kd.support == "refused" else f"{key}={value}"
    return f"{what} is not supported by pypluto ({why})"


def _check_null_auth(keys: dict[str, str]) -> None:
    """authby=null (RFC 7619) as Libreswan: an end that authenticates with it (its
    ``leftauth=`` unset or null) has the ID ID_NULL; the other may sign
    (``rightauth=rsasig``: asymmetric, checked in ``_check_asymmetric_null``)."""
    for side in ("left", "right"):
        if (keys.get(side + "auth") or "null").strip().lower() != "null":
            continue
        k = side + "id"
        v = (keys.get(k) or "").strip()
        if v and v.lower() != "%null":
            raise ConnError(k, f"{k}={v} is not supported by pypluto with authby=null (NULL "
                            "authentication, RFC 7619, uses ID_NULL: leave it unset or write "
                            "%null)", True)


def _check_asymmetric_null(keys: dict[str, str], authby: str) -> None:
    """``leftauth=null`` / ``rightauth=null`` (RFC 7619 NULL authentication of one side,
    the other signing): that side's ID is ID_NULL (§2.2), so its ``id=`` is unset or
    ``%null``; PSK and NULL do not mix (Libreswan's pluto refuses it too: a PSK MIC
    against an unauthenticated peer proves nothing)."""
    methods = {s: (keys.get(s + "auth") or authby).strip().lower() for s in ("left", "right")}
    if "null" not in methods.values():
        return
    for side, m in methods.items():
        v = (keys.get(side + "id") or "").strip()
        if m == "null" and v and v.lower() != "%null":
            raise ConnError(side + "id", f"{side}id={v} is not supported by pypluto with "
                            f"{side}auth=null (NULL authentication, RFC 7619, uses ID_NULL: "
                            "leave it unset or write %null)", True)
    if any(set(re.split(r"[\s,]+", m)) & {"secret", "psk"} for m in methods.values()):
        raise ConnError("leftauth", f"leftauth={methods['left']} with rightauth="
                        f"{methods['right']} is not supported by pypluto (PSK and NULL "
                        "authentication do not mix, as in Libreswan's pluto)", True)


_SUPPORT_MEMO: dict[tuple[str, str], str | None] = {}


def _support_refusal(key: str, value: str) -> str | None:
    """The refusal of ``key=value`` (``unsupported_message``), None when supported."""
    found = keywords.lookup_conn(key)
    if found is None or value == "":
        return None
    kd = found[0]
    if kd.support == "works":
        if len(_SUPPORTED_KEYS) < _MEMO_MAX:
            _SUPPORTED_KEYS.add(key)
        return None
    memo_key = (key, value)
    if memo_key in _SUPPORT_MEMO:
        return _SUPPORT_MEMO[memo_key]
    reason = keywords.unsupported_reason(kd, value)
    why = None if reason is None else unsupported_message(key, value, kd, reason)
    _memo_put(_SUPPORT_MEMO, memo_key, why)
    return why


_SUPPORTED_KEYS: set[str] = set()  # keys whose every value is supported (memo)


_SHUNT_TYPES = frozenset({"passthrough", "pass", "drop", "reject"})
_NEVER_KEYS = ("authby", "leftauth", "rightauth")


def _never_refusal(key: str, value: str, keys: dict[str, str]) -> str | None:
    """``authby=never`` (``leftauth=`` / ``rightauth=never``): "negotiation is never to
    be attempted or accepted" (ipsec.conf(5)).  A shunt conn (type=passthrough, drop or
    reject) is exactly that here, so it is accepted there; a tunnel or transport conn
    that never negotiates has no meaning of its own in pypluto and is refused."""
    typ = (keys.get("type") or "tunnel").strip().lower()
    if typ in _SHUNT_TYPES:
        return None
    return (f"{key}={value} is not supported by pypluto with type={typ} (a conn that is "
            "never negotiated is written type=passthrough, drop or reject)")


# keys a never-negotiate (shunt) conn ignores, with a warning (addconn-31-pfs,
# addconn-32-compress, addconn-34-encap-proto, addconn-35-encapsulation)
_SHUNT_IGNORED = ("pfs", "compress", "phase2", "encapsulation")
_IKEV2_YES = frozenset({"yes", "true", "on", "y", "always", "insist", "propose"})
_IKEV2_NO = frozenset({"no", "false", "off", "n", "never"})


def _ikev2_overridden(keys: dict[str, str]) -> bool:
    """``keyexchange=ikev2`` wins over an old ``ikev2=no`` (addconn-27-keyexchange)."""
    return ((keys.get("keyexchange") or "").strip().lower() == "ikev2"
            and (keys.get("ikev2") or "").strip().lower() in _IKEV2_NO)


def _ignored_with_warning(key: str, keys: dict[str, str]) -> bool:
    """A key the conn ignores (``_lifetime_warnings`` says so), whatever its value."""
    if key in _SHUNT_IGNORED:
        return (keys.get("type") or "").strip().lower() in _SHUNT_TYPES
    return key == "ikev2" and _ikev2_overridden(keys)


def _check_supported(keys: dict[str, str], conn: Connection | None = None) -> None:
    """Refuse a conn that uses a key or value pypluto does not support (issue 12)."""
    for key, value in keys.items():
        if key in _NEVER_KEYS and value.strip().lower() == "never":
            why = _never_refusal(key, value.strip(), keys)
            if why is not None:
                raise ConnError(key, why, True)
            continue
        if key in _SUPPORTED_KEYS or _ignored_with_warning(key, keys):
            continue
        why = _support_refusal(key, value)
        if why is not None:
            raise ConnError(key, why, True)
    if conn is not None:
        _check_host_keywords(conn)
    authby = (keys.get("authby") or "").strip().lower()
    if authby == "null":
        _check_null_auth(keys)
    elif "leftauth" in keys or "rightauth" in keys:
        _check_asymmetric_null(keys, authby)


_HOSTS_SUPPORTED = frozenset({"%any", "%any6", "%defaultroute", "%defaultroute6"})
_HOSTS_OPPORTUNISTIC = frozenset({"%opportunistic", "%oppo", "%opportunisticgroup",
                                  "%oppogroup", "%group", "%oe"})


def _check_host_keywords(conn: Connection) -> None:
    """``left=`` / ``right=`` ``%`` words other than %any, %any6, %defaultroute and
    %defaultroute6: opportunistic and policy-group conns (%opportunistic, %group, ...)
    and an interface's address (``%ppp0``) are not implemented; such a host would
    otherwise be left unresolved (or act as %any), so the conn is refused."""
    for end, side in ((conn.left, "left"), (conn.right, "right")):
        host = (end.host or "").lower()
        if not host.startswith("%") or host in _HOSTS_SUPPORTED:
            continue
        why = ("opportunistic IPsec and policy-group conns are not implemented by pypluto"
               if host in _HOSTS_OPPORTUNISTIC else
               "pypluto takes no address from an interface name or another %word: "
               "write an address, a host name, %any, %any6, %defaultroute or "
               "%defaultroute6")
        raise ConnError(side, f"{side}={end.host} is not supported by pypluto ({why})", True)


# auto= / type= values (keywords.py checks the spelling) and what they mean here.
_AUTO: dict[str, AutoMode] = {
    "ignore": "ignore", "add": "add", "start": "start", "up": "start",
    "route": "ondemand", "ondemand": "ondemand", "keep": "keep",
}
_CONN_TYPE: dict[str, ConnType] = {
    "tunnel": "tunnel", "transport": "transport", "passthrough": "passthrough",
    "pass": "passthrough", "drop": "drop", "reject": "reject",
}

_AUTHBY_WORDS = {
    "secret", "rsasig", "rsa", "ecdsa", "null", "never", "rsa-sha1", "rsa-sha2",
    "rsa-sha2_256", "rsa-sha2_384", "rsa-sha2_512", "ecdsa-sha2", "ecdsa-sha2_256",
    "ecdsa-sha2_384", "ecdsa-sha2_512", "eddsa", "psk", "secret|rsasig",
}


def parse_authby(value: str) -> list[str]:
    words = [w for w in re.split(r"[\s,]+", value.strip().lower()) if w]
    if not words:
        raise ConnError("authby", "connection authby= value is empty")
    if "ecdsa-sha1" in words:
        raise ConnError("authby", "authby=ecdsa cannot use sha1, only sha2")
    for w in words:
        if w not in _AUTHBY_WORDS:
            raise ConnError("authby", f"connection authby={value} value is unknown")
    if "never" in words and len(words) > 1:
        raise ConnError("authby", f"authby={value}: never cannot be combined with other "
                        "authentication methods")
    if "null" in words and len(words) > 1:
        # ipsec.conf(5): null cannot be combined; Libreswan's pluto loads it for
        # opportunistic conns, which pypluto does not implement (it would drop the null)
        raise ConnError("authby", f"authby={value} is not supported by pypluto (null "
                        "cannot be combined with other authentication methods)", True)
    return words


def _valid_pubkey(value: str) -> bool:
    """A raw public key as ipsec.conf(5) writes it (RFC 3110 format in base64/hex)."""
    low = value.lower()
    if low in ("%cert", "%dns", "%dnsondemand", "%none"):
        return True
    # the key itself is decoded when it is used (Libreswan too only checks the form here)
    return low.startswith(("0s", "0x")) and len(value) > 2


_MEMO_MAX = 4096
"""Entries per parse memo below; a full memo is emptied (a start-up with 10,000 conns
repeats the same few key=value pairs and end definitions, issue 18)."""

_END_MEMO: dict[tuple[str, tuple[tuple[str, str], ...]], End] = {}


def _memo_put(memo: dict, key: object, value: object) -> None:  # type: ignore[type-arg]
    if len(memo) >= _MEMO_MAX:
        memo.clear()
    memo[key] = value


def _copy_end(tmpl: End) -> End:
    """A fresh End equal to ``tmpl``: its lists and dict are new, the immutable values
    (addresses, networks, identities, strings) are shared."""
    end = End.__new__(End)
    d = end.__dict__
    d.update(tmpl.__dict__)
    d["subnets"] = list(tmpl.subnets)
    d["sourceip"] = list(tmpl.sourceip)
    d["raw"] = dict(tmpl.raw)
    return end


def _end(raw: dict[str, str], side: str) -> End:
    """The ``left*`` or ``right*`` end of a conn from its keys without the side prefix.

    Ends written the same way (a ``left=`` shared through ``also=`` by thousands of
    conns) are parsed once: a parsed end is kept as a template and copied.
    """
    memo_key = (side, tuple(raw.items()))
    tmpl = _END_MEMO.get(memo_key)
    if tmpl is None:
        tmpl = _parse_end(raw, side)
        _memo_put(_END_MEMO, memo_key, tmpl)  # errors raise above: never kept
    return _copy_end(tmpl)


_END_STRINGS = (("cert", "cert"), ("ca", "ca"), ("sendcert", "sendcert"),
                ("updown", "updown"), ("vti", "vti_ip"), ("username", "xauthusername"),
                ("addresspool", "addresspool"))
"""End keys kept as written: (key without the side, End attribute)."""


_SELECTOR_RE = re.compile(r"^([^/\s,{}]+/\d+)[/:]([^\s,{}]*)$")
"""A subnet= item in Libreswan 5.2's selector form: ADDRESS/PREFIX/PROTOCOL[/PORT]
(or ADDRESS/PREFIX:PROTOCOL[/PORT], ttoselector_num)."""
_SELECTOR_RE_ANY = re.compile(r"[^/\s,{}]+/\d+[/:]")


def _selector_protoport(value: str, side: str, protoport: str | None
                        ) -> tuple[str, tuple[int, int]]:
    """``leftsubnet=1.0.0.1/32/tcp/22``: the subnets without their protocol and port, and
    that protocol and port, which is what ``leftsubnet=1.0.0.1/32`` with
    ``leftprotoport=tcp/22`` means (Libreswan 5.2 shows both as 1.0.0.1/32/TCP/22,
    addconn-15-sourceip).  Every selector of the end must name the same protocol and
    port (one ``protoport`` per end here); with ``protoport=`` too, Libreswan reads the
    subnet the old way and refuses it."""
    items = [w for w in re.split(r"[\s,{}]+", value) if w]
    nets, pps = [], set()
    for item in items:
        m = _SELECTOR_RE.match(item)
        if m is None:
            nets.append(item)
            pps.add((0, 0))
            continue
        if protoport is not None:
            raise ConnError(side + "subnet", f"{side}subnet={value} invalid, a protocol and "
                            f"port in the subnet cannot be combined with {side}protoport=")
        try:
            pps.add(parse_protoport(m.group(2).rstrip("/")))
        except ValueError as exc:
            raise ConnError(side + "subnet", f"{side}subnet={value} invalid, {exc}") from None
        nets.append(m.group(1))
    if len(pps) > 1:
        raise ConnError(side + "subnet", f"{side}subnet={value} is not supported by pypluto "
                        "(selectors of one end with different protocols or ports: "
                        f"{side}protoport= is one per end)", True)
    return ",".join(nets), pps.pop()


def _parse_end(raw: dict[str, str], side: str) -> End:
    end = End()
    end.raw = dict(raw)
    # only the keys that are set (and not empty) are looked at: an end usually has 2-4
    present = {k: v for k, v in raw.items() if v != ""}
    get = present.get

    host = get("")
    if host is not None:
        try:
            end.host, end.host_addr = parse_host(host)
        except ValueError as exc:
            raise ConnError(side, f"{side}={host}: {exc}") from None
    idv = get("id")
    if idv is not None and _legacy_dn_commas(idv):
        idv = idv.replace(",,", "\\,")  # a comma in a DN value, written the old way
    if idv is not None:
        try:
            end.id = parse_id(idv)
        except IdError as exc:
            raise ConnError(side + "id", f"{side}id={idv}: {exc}") from None
    sub = get("subnet")
    if sub is not None and sub.lower().startswith(("vhost:", "vnet:")):
        sub = None  # IKEv1 only (checked in _semantic_checks); kept in end.raw
    if sub is not None and _SELECTOR_RE_ANY.search(sub):
        sub, end.protoport = _selector_protoport(sub, side, get("protoport"))
    subs = get("subnets")
    try:
        if sub is not None:
            multi = "," in sub or " " in sub or "{" in sub
            end.subnets.extend(parse_subnets(sub) if multi else [parse_subnet(sub)])
        if subs is not None:
            for n in parse_subnets(subs):
                if n not in end.subnets:
                    end.subnets.append(n)
    except ValueError as exc:
        raise ConnError(side + "subnet", str(exc)) from None
    if end.host_addr is not None and len(end.subnets) == 1:
        only = end.subnets[0]
        if only.num_addresses == 1 and only.network_address == end.host_addr:
            end.subnets = []  # subnet = the host itself: host-to-host, as Libreswan
    if len(present) <= 3 and all(k in ("", "id", "subnet") for k in present):
        if end.host in ("%defaultroute", "%defaultroute6"):
            end.nexthop = "%defaultroute"  # Libreswan: the route's gateway
        return end  # the usual end: nothing else is set
    pp = get("protoport")
    if pp is not None:
        try:
            end.protoport = parse_protoport(pp)
        except ValueError as exc:
            raise ConnError(side + "protoport", f"{side}protoport={pp}: {exc}") from None
    sip = get("sourceip")
    if sip is not None:
        try:
            end.sourceip = parse_addresses(sip)
        except ValueError as exc:
            raise ConnError(side + "sourceip", f"{side}sourceip={sip}: {exc}") from None
    nh = get("nexthop")
    if nh is not None:
        if not nh.startswith("%"):
            try:
                nh_addr = ipaddress.ip_address(nh)
            except ValueError:
                raise ConnError(side + "nexthop", f"{side}nexthop={nh} is not an address") \
                    from None
            if end.host_addr is not None and end.host_addr.version != nh_addr.version:
                raise ConnError(side + "nexthop", f"{side}nexthop={nh} and {side}={host} "
                                "are of different address families")
        end.nexthop = nh
    elif end.host in ("%defaultroute", "%defaultroute6"):
        end.nexthop = "%defaultroute"  # Libreswan: the route's gateway
    end.auth = (get("auth") or "").lower() or None
    for key, attr in _END_STRINGS:
        value = get(key)
        if value is not None:
            setattr(end, attr, value)
    ikeport = get("ikeport")
    if ikeport is not None:
        end.ikeport = parse_int(ikeport, side + "ikeport", 1, 65535)
    ifip = get("interface-ip")
    if ifip is not None:
        try:
            end.interface_ip = parse_interface_ip(ifip, side + "interface-ip")
        except ValueError as exc:
            raise ConnError(side + "interface-ip", str(exc)) from None
    for flag in ("modecfgserver", "modecfgclient", "xauthserver", "xauthclient"):
        fv = get(flag)
        if fv is not None:
            setattr(end, flag, parse_bool(fv, side + flag))
    for keykey in ("rsasigkey", "ecdsakey", "pubkey"):
        kv = get(keykey)
        if kv is not None and not _valid_pubkey(kv):
            raise ConnError(side + keykey, f"invalid {side}{keykey}={kv}: expected %cert, "
                            "%dns, %dnsondemand, 0s<base64> or 0x<hex>")
    ckaid = get("ckaid")
    if ckaid is not None and not re.match(r"^[0-9a-fA-F]+$", ckaid):
        raise ConnError(side + "ckaid", f"invalid {side}ckaid: unknown character in input")
    return end


def build_connection(name: str, keys: dict[str, str],
                     origins: dict[str, Origin] | None = None, *,
                     enforce_support: bool = True) -> Connection:
    """Build a typed Connection from resolved keys (canonical names, as written values).

    Raises ``ConnError`` (a ValueError) with ``.key`` set when a value is invalid, and
    with ``.unsupported`` set too when pypluto does not support a key or value
    (``enforce_support=False`` skips that check: only the agreement tests, which
    compare the parse with Libreswan's, use it).
    Used by the parser and by the daemon when ``whack`` adds a connection.
    """
    # one pass: the canonical keys, and the same split into conn-wide keys and each end's
    canon: dict[str, str] = {}
    parts: tuple[dict[str, str], dict[str, str], dict[str, str]] = ({}, {}, {})
    key_info = _KEY_INFO.get
    for k, v in keys.items():
        info = key_info(k) or _key_info(k)
        if info[1] is not None and v != "" and (k, v) not in _CANON_MEMO:
            _check_kv(k, v, info)
        targets = info[0]
        if len(targets) == 1:
            ck, part, sub = targets[0]
            canon[ck] = v
            parts[part][sub] = v
        else:  # () for an obsolete key; left and right for an end key without a side
            for ck, part, sub in targets:
                if ck not in canon:
                    canon[ck] = v
                    parts[part][sub] = v
    keys = canon
    general, left, right = parts
    memo_key = tuple(general.items())
    memo = _CONN_MEMO.get(memo_key)
    if memo is None:
        memo = _conn_fields(general)
        _memo_put(_CONN_MEMO, memo_key, memo)  # errors raise above: never kept
    fields, mutable = memo
    conn = Connection.__new__(Connection)  # the fields of __init__, without its cost
    d = conn.__dict__
    d.update(fields)
    for attr, copy in mutable:
        d[attr] = copy(d[attr])
    # raw is the canonical dict built above (not the caller's): no copy needed
    d.update(name=name, origin=None, origins=dict(origins or {}), raw=keys, also=[],
             connalias=None, local_is_left=None, uniqueids=None)
    for side, end_keys in (("left", left), ("right", right)):
        if end_keys.get("interface-ip") and conn.ipsec_interface is None:
            raise ConnError(side + "interface-ip", f"{side}interface-ip= needs "
                            "ipsec-interface= (the address goes on the ipsecN device)")
    conn.left = _end(left, "left")
    conn.right = _end(right, "right")
    if (conn.left.addresspool is not None or conn.right.addresspool is not None) and \
            not keys.get("narrowing"):
        conn.narrowing = True  # Libreswan 5.2: an address pool implies narrowing=yes

    def get(k: str) -> str | None:
        v = keys.get(k)
        return v if v not in (None, "") else None

    def b(k: str, default: bool) -> bool:
        v = get(k)
        return default if v is None else parse_bool(v, k)

    if conn.left.vti_ip is not None or conn.right.vti_ip is not None or \
            "vti-interface" in keys or "vti-routing" in keys or "vti-shared" in keys:
        _vti_keys(conn, get, b)  # without them the class defaults stand
    if conn.mtu is not None or conn.metric is not None:
        _route_keys(conn)
    if "hostaddrfamily" in keys or "clientaddrfamily" in keys:
        _family_keys(conn, get)
    _semantic_checks(conn)
    if enforce_support:  # after the syntax checks: a bad value is reported as such
        _check_supported(keys, conn)
    return conn


_FAMILY = {"ipv4": 4, "v4": 4, "inet": 4, "ipv6": 6, "v6": 6, "inet6": 6}


def _family_keys(conn: Connection, get: Callable[[str], str | None]) -> None:
    """``hostaddrfamily=``: the family of both hosts (a name resolves to an address of it,
    ``%defaultroute`` takes that family's default route); ``clientaddrfamily=``: the
    family of the subnets (Libreswan 5 reads it from the subnets, 5.3 drops the key).
    An address written in the other family refuses the conn."""
    ends = (("left", conn.left), ("right", conn.right))
    for key in ("hostaddrfamily", "clientaddrfamily"):
        v = get(key)
        if v is None:
            continue
        fam = _FAMILY.get(v.lower())
        if fam is None:  # pragma: no cover - keywords.py checks the spelling first
            raise ConnError(key, f"{key}={v} is not ipv4 or ipv6")
        found: list[tuple[str, IPAddress | IPNetwork]] = [
            (s, e.host_addr) for s, e in ends if e.host_addr is not None
        ] if key == "hostaddrfamily" else [(s + "subnet", n) for s, e in ends for n in e.subnets]
        for where, a in found:
            if a.version != fam:
                raise ConnError(key, f"{key}={v} but {where}={a} is IPv{a.version}")


def _route_keys(conn: Connection) -> None:
    """``mtu=`` / ``metric=``: the routes pypluto installs for the remote selectors carry
    them.  With ``ipsec-interface=`` or ``vti-interface=`` the operator (or the VTI
    routing) owns those routes, so the keys are refused there rather than ignored."""
    for key, val in (("mtu", conn.mtu), ("metric", conn.metric)):
        if val is None:
            continue
        for other, on in (("ipsec-interface", conn.ipsec_interface is not None),
                          ("vti-interface", conn.vti_interface is not None),
                          (f"type={conn.type}", conn.type not in ("tunnel", "transport"))):
            if on:
                raise ConnError(key, f"{key}= with {other}{'' if '=' in other else '='} is not "
                                "supported by pypluto (the daemon installs no route of its "
                                "own for that traffic)", True)
    if conn.mtu is not None and conn.mtu < 1280:
        # the routes are for the remote selectors: the subnets, else the host itself
        inner = [n.version for e in (conn.left, conn.right) for n in e.subnets] or \
            [e.host_addr.version for e in (conn.left, conn.right) if e.host_addr is not None]
        if 6 in inner:
            raise ConnError("mtu", f"mtu={conn.mtu}: an IPv6 link needs at least 1280 "
                            "(RFC 8200 §5)")


_CONN_MEMO: dict[tuple[tuple[str, str], ...],
                 tuple[dict[str, object], tuple[tuple[str, type], ...]]] = {}
_KV_CHECKED = ("bool", "enum", "time", "ms", "percent", "int", "bignum")  # _check_value
_CANON_MEMO: dict[tuple[str, str], bool] = {}  # values that passed _check_value
_Target = tuple[str, int, str]  # canonical key; 0 conn-wide, 1 left, 2 right; key in its part
_KEY_INFO: dict[str, tuple[tuple[_Target, ...], KeyDef | None, str]] = {}


def _target(ck: str) -> _Target:
    if ck.startswith("left"):
        return ck, 1, ck[4:]
    if ck.startswith("right"):
        return ck, 2, ck[5:]
    return ck, 0, ck


def _key_info(k: str) -> tuple[tuple[_Target, ...], KeyDef | None, str]:
    """(where the value goes, the definition when the value needs ``_check_value``, the
    canonical key) of key ``k`` as written; no targets for an obsolete key, left and
    right for an end key written without a side.  Raises ``ConnError`` for an unknown
    key."""
    info = _KEY_INFO.get(k)
    if info is None:
        found = keywords.lookup_conn(k)
        if found is None:
            raise ConnError(k, f"unknown key '{k}'")
        kd, side, ck = found
        if kd.support == "obsolete":
            info = ((), None, ck)
        else:
            cks = ("left" + ck[4:], "right" + ck[4:]) if side == "both" else (ck,)
            info = (tuple(_target(c) for c in cks),
                    kd if kd.kind in _KV_CHECKED else None, ck)
        _memo_put(_KEY_INFO, k, info)
    return info


def _check_kv(k: str, v: str, info: tuple[tuple[_Target, ...], KeyDef | None, str]) -> None:
    """``_check_value`` of ``k=v``, remembered when it passes; raises ``ConnError``."""
    kd = info[1]
    assert kd is not None
    try:
        _check_value(kd, k, v)
    except ValueError as exc:
        raise ConnError(info[2], str(exc)) from None
    _memo_put(_CANON_MEMO, (k, v), True)


def _yes_no(value: str) -> str:
    """An enum value with Libreswan's spellings of yes and no (true/on/y, false/off/n)
    as ``yes`` / ``no``: the engine compares with those two words only (esn=,
    encapsulation=, fragmentation=)."""
    low = value.strip().lower()
    if low in ("yes", "true", "on", "y"):
        return "yes"
    if low in ("no", "false", "off", "n"):
        return "no"
    return low


_SKIPPED_FIELDS = ("name", "left", "right", "origin", "origins", "raw", "also", "connalias",
                   "local_is_left", "uniqueids")
"""Connection fields that ``_conn_fields`` does not set (the rest it takes from the keys
or from the class's defaults)."""


def _conn_fields(keys: dict[str, str]) -> tuple[dict[str, object], tuple[tuple[str, type], ...]]:
    """The Connection fields set by the conn-wide keys (every key but ``left*`` /
    ``right*``): every field but ``_SKIPPED_FIELDS`` (from the keys or the class's
    defaults), and which of them are lists or dicts (copied for each conn).  Raises
    ``ConnError``.

    ``build_connection`` keeps one per distinct set of conn-wide keys: thousands of conns
    inheriting the same ``ike=``, lifetimes and ``auto=`` share the parse.
    """
    conn = Connection(name="")

    def get(k: str) -> str | None:
        v = keys.get(k)
        return v if v not in (None, "") else None

    def b(k: str, default: bool) -> bool:
        v = get(k)
        return default if v is None else parse_bool(v, k)

    def t(k: str, default: float, bare: float = 1.0) -> float:
        v = get(k)
        return default if v is None else parse_duration(v, k, bare_unit=bare)

    # versions: keyexchange=ikev1|ikev2 (5.x) or ike + ikev2= (4.x)
    kx = (get("keyexchange") or "").lower()
    ikev2 = (get("ikev2") or "").lower()
    if kx == "ikev1" or (kx in ("", "ike") and ikev2 in ("no", "never")):
        conn.keyexchange = "ikev1"
    else:
        conn.keyexchange = "ikev2"
    if kx == "ikev1" and ikev2 in ("yes", "insist", "always", "propose"):
        raise ConnError("ikev2", "keyexchange=ikev1 conflicts with ikev2=yes")

    authby = get("authby")
    if authby is not None:
        words = parse_authby(authby)
        conn.authby = ",".join(words)
        if conn.keyexchange == "ikev1" and not set(words) <= {"rsasig", "secret", "never",
                                                               "rsa", "secret|rsasig"}:
            raise ConnError("authby",
                            "ikev1 connection must use authby= of rsasig, secret or never")
    auto = (get("auto") or "ignore").lower()
    if auto not in _AUTO:  # pragma: no cover - keywords.py refuses other values first
        raise ConnError("auto", f"auto={auto} is not supported")
    conn.auto = _AUTO[auto]
    typ = (get("type") or "tunnel").lower()
    if typ not in _CONN_TYPE:  # pragma: no cover - keywords.py refuses other values first
        raise ConnError("type", f"type={typ} is not supported")
    conn.type = _CONN_TYPE[typ]
    for attr, proto in (("ike", "IKE"), ("esp", "ESP"), ("ah", "AH")):
        pv = get(attr)
        if pv is not None:
            try:
                setattr(conn, attr, parse_proposals(pv, proto))
            except ProposalError as exc:
                raise ConnError(attr, f"{attr}={pv}: {exc}") from None
    conn.phase2 = (get("phase2") or "esp").lower().replace("default", "esp")
    # Libreswan keeps one Child SA proposal string (esp=, ah= and phase2alg= are the same
    # setting) and parses it as phase2= says: the other protocol's key is never used
    unused = "ah" if conn.phase2 != "ah" else "esp"
    if get(unused) is not None and conn.type in ("tunnel", "transport"):
        raise ConnError(unused, f"{unused}={get(unused)} needs phase2={unused} (this conn "
                        f"negotiates {conn.phase2.upper()}, which {unused}= does not set)")
    conn.pfs = b("pfs", True)
    _pfs_vs_dh(conn, get(conn.phase2 if conn.phase2 == "ah" else "esp"))
    conn.ms_dh_downgrade = b("ms-dh-downgrade", False)
    conn.esn = _yes_no(get("esn") or "either")
    conn.compress = b("compress", False)
    # ipsec.conf(5): the maximum of both is 24h; Libreswan uses 24h for a longer value
    # (with a warning, see _lifetime_warnings)
    conn.ikelifetime = min(t("ikelifetime", 8 * 3600.0), LIFETIME_MAXIMUM)
    conn.salifetime = min(t("ipsec-lifetime", 8 * 3600.0), LIFETIME_MAXIMUM)
    negotiates = conn.type in ("tunnel", "transport")  # Libreswan skips the rest else
    for key, life in (("ikelifetime", conn.ikelifetime), ("ipsec-lifetime", conn.salifetime)):
        if life <= 0 and negotiates:  # the SA would expire at once, and be made again
            raise ConnError(key, f"{key}={get(key)} is not supported by pypluto (an SA that "
                            "expires at once; Libreswan raises it to rekeymargin + "
                            "rekeyfuzz)", True)
    conn.rekeymargin = t("rekeymargin", 9 * 60.0)
    fuzz = get("rekeyfuzz")
    conn.rekeyfuzz = 100.0 if fuzz is None else parse_percent(fuzz, "rekeyfuzz")
    if conn.type in ("tunnel", "transport"):
        _rekey_bounds(conn, get("rekeymargin") is not None, t("ikelifetime", 8 * 3600.0))
    conn.rekey = b("rekey", True)
    conn.reauth = b("reauth", False)
    conn.retransmit_interval = t("retransmit-interval", 0.5, bare=0.001)
    conn.retransmit_timeout = t("retransmit-timeout", 60.0)
    conn.negotiationshunt = (get("negotiationshunt") or "hold").lower()
    conn.failureshunt = (get("failureshunt") or "none").lower()
    rw = get("replay-window")
    conn.replay_window = 128 if rw is None else parse_int(rw, "replay-window", 0, 2**32 - 1)
    # Libreswan 5.2 refuses a window above its kernel interface's limit, 2^32 - 8 for
    # XFRM, whatever the type; no SA is installed with more than REPLAY_WINDOW_MAXIMUM
    rw_max = REPLAY_WINDOW_MAXIMUM if conn.type in ("tunnel", "transport") else 2**32 - 8
    if conn.replay_window > rw_max:
        raise ConnError("replay-window", f"replay-window={conn.replay_window} exceeds the "
                        f"kernel interface limit of {rw_max}")
    if conn.replay_window == 0:
        # Libreswan: no replay window, no ESN (ipsec.conf(5) esn=, replay-window=)
        if conn.esn == "yes" and negotiates:
            raise ConnError("esn", f"esn={get('esn')} with replay-window=0 is not supported "
                            "by pypluto (ESN needs a replay window; Libreswan forces esn=no)",
                            True)
        conn.esn = "no"
    mb = get("ipsec-max-bytes")
    conn.ipsec_max_bytes = None if mb is None else parse_binary(mb, "ipsec-max-bytes", True)
    mp = get("ipsec-max-packets")
    conn.ipsec_max_packets = None if mp is None else parse_binary(mp, "ipsec-max-packets")
    if (conn.ipsec_max_bytes or 0) > SA_MAX_OPERATIONS:  # warned in _lifetime_warnings
        conn.ipsec_max_bytes = SA_MAX_OPERATIONS
    if (conn.ipsec_max_packets or 0) > SA_MAX_OPERATIONS:
        conn.ipsec_max_packets = SA_MAX_OPERATIONS
    for key, limit in (("ipsec-max-bytes", conn.ipsec_max_bytes),
                       ("ipsec-max-packets", conn.ipsec_max_packets)):
        if limit == 0:  # not "unlimited": Libreswan 5.2 hands XFRM a hard limit of 0
            raise ConnError(key, f"{key}={get(key)} is not supported by pypluto (a hard "
                            "limit of 0: Libreswan installs it, and the kernel expires the "
                            "SA at its first packet; leave it unset for no limit)", True)
    conn.dpddelay = t("dpddelay", 0.0)
    conn.dpdtimeout = t("ikev1-dpdtimeout", 0.0)
    frag = _yes_no(get("fragmentation") or "yes")
    conn.fragmentation = {"never": "no", "insist": "force"}.get(frag, frag)
    conn.mobike = b("mobike", False)
    conn.narrowing = b("narrowing", False)
    conn.encapsulation = _yes_no(get("encapsulation") or "auto")
    conn.nat_keepalive = b("nat-keepalive", True)
    conn.initial_contact = b("initial-contact", False)  # Libreswan 5.2: no
    conn.send_vendorid = b("send-vendorid", False)
    conn.fake_strongswan = b("fake-strongswan", False)
    conn.mark = get("mark")
    # mark-in= / mark-out= override mark= for their direction (ipsec.conf(5))
    mi, mo = get("mark-in"), get("mark-out")
    marks: dict[str, tuple[int, int] | None] = {}
    for mkey, mval in (("mark", conn.mark), ("mark-in", mi), ("mark-out", mo)):
        try:
            marks[mkey] = None if mval is None else parse_mark(mval, mkey)
        except ValueError as exc:
            raise ConnError(mkey, str(exc)) from None
    conn.mark_in = marks["mark"] if mi is None else marks["mark-in"]
    conn.mark_out = marks["mark"] if mo is None else marks["mark-out"]
    if conn.mark is None and (mi or mo):
        conn.mark = f"{mi or 'unset'}, {mo or 'unset'}"
    try:
        conn.ipsec_interface = parse_ipsec_interface(get("ipsec-interface"))
    except ValueError as exc:
        raise ConnError("ipsec-interface", str(exc)) from None
    rq = get("reqid")
    conn.reqid = None if rq is None else parse_int(rq, "reqid", 1, 2**32 - 1)
    mtu, metric = get("mtu"), get("metric")
    # an IPv4 host takes 68 bytes (RFC 791); IPv6 needs 1280, checked in _route_keys
    conn.mtu = None if mtu is None else parse_int(mtu, "mtu", 68, 65535)
    nfl = get("nflog")
    conn.nflog = 0 if nfl is None else parse_int(nfl, "nflog", 0, 65535)
    conn.metric = None if metric is None else parse_int(metric, "metric", 0, 2**32 - 1)
    conn.aliases = (get("connalias") or "").replace(",", " ").split()
    conn.debug = get("debug") or ""
    prio = get("priority")
    conn.priority = 0 if prio is None else parse_int(prio, "priority", 0, 2**32 - 1)
    hf = get("hostaddrfamily")
    conn.hostaddrfamily = None if hf is None else _FAMILY.get(hf.lower())
    tfc = get("tfc")
    conn.tfc = 0 if tfc is None else parse_int(tfc, "tfc", 0, 2**64 - 1)
    if conn.tfc and conn.type in ("tunnel", "transport"):  # Libreswan 5.2's order
        if conn.type == "transport":
            raise ConnError("tfc", "connection with type=transport cannot specify tfc=")
        if conn.phase2 == "ah":
            raise ConnError("tfc", "connection with encap_proto=ah cannot specify tfc=")
        if conn.tfc > 2**32 - 1:
            raise ConnError("tfc", f"tfc={conn.tfc} exceeds upper bound of {2**32 - 1}")
    conn.send_no_esp_tfc = b("send-no-esp-tfc", False)
    conn.encap_dscp = b("encap-dscp", True)
    conn.decap_dscp = b("decap-dscp", False)
    conn.nopmtudisc = b("nopmtudisc", False)
    conn.sha2_truncbug = b("sha2-truncbug", False)
    conn.ignore_peer_dns = b("ignore-peer-dns", False)
    sca = get("sendca")
    conn.sendca = None if sca is None else sca.lower()
    conn.require_id_on_certificate = b("require-id-on-certificate", True)
    ppk = (get("ppk") or "no").lower()
    conn.ppk = {"never": "no", "permit": "permit", "propose": "propose", "yes": "propose",
                "true": "propose", "on": "propose", "y": "propose", "false": "no", "off": "no",
                "n": "no", "insist": "insist", "always": "insist"}.get(ppk, ppk)
    conn.ppk_ids = _ppk_ids(get("ppk-ids"))
    fields = {k: v for k, v in conn.__dict__.items() if k not in _SKIPPED_FIELDS}
    mutable = tuple((k, type(v)) for k, v in fields.items() if isinstance(v, (list, dict, set)))
    return fields, mutable


LIFETIME_MAXIMUM = 86400.0
"""ikelifetime= / ipsec-lifetime=: Libreswan's maximum (24h, ipsec.conf(5))."""

REPLAY_WINDOW_MAXIMUM = 4096
"""replay-window=: the largest window either plane installs (Linux XFRM's replay bitmap,
XFRMA_REPLAY_ESN_MAX bytes of it: 4096 packets; the userspace plane's is the same,
kernel/userspace/backend.REPLAY_WINDOW_MAX)."""

_INT_MAX = 2**31 - 1


def _rekey_bounds(conn: Connection, margin_set: bool, ikelifetime: float) -> None:
    """Libreswan 5.2's limits on rekeymargin= and rekeyfuzz= (connections.c, for a conn
    that negotiates): the largest margin, ``rekeymargin * (100 + rekeyfuzz) / 100``, must
    fit in the maximum lifetime (24h), or the conn is refused; numbers that overflow its
    ints are refused too.  (A lifetime shorter than that margin is kept, the engine
    rekeying at half of it: daemon/registry.lifetime_notes.)  ``ikelifetime`` is the
    lifetime as written (or the default), which Libreswan's message shows."""
    margin, fuzz = int(conn.rekeymargin), int(conn.rekeyfuzz)
    if margin_set and margin > _INT_MAX // (100 + fuzz):
        raise ConnError("rekeymargin", f"rekeymargin={margin} is so large it causes overflow")
    if fuzz > _INT_MAX - 100:
        raise ConnError("rekeyfuzz", f"rekeyfuzz={fuzz}% is so large it causes overflow")
    smallest = conn.rekeymargin * (100 + fuzz) / 100
    if smallest > LIFETIME_MAXIMUM:
        key = "rekeymargin" if margin_set else "rekeyfuzz"
        raise ConnError(key, f"ikelifetime={int(ikelifetime)} must be greater than "
                        f"rekeymargin={margin}s + rekeyfuzz={fuzz}% yet less than the maximum "
                        f"allowed {int(smallest)}")


def _pfs_vs_dh(conn: Connection, text: str | None) -> None:
    """Libreswan 5.2's PFS-vs-DH rule for the Child SA's ``esp=``/``ah=``
    (``proposals_pfs_vs_dh_check``, lib/libswan/proposals.c): with ``pfs=no`` every
    DH is dropped (with a warning, ``_lifetime_warnings``); with ``pfs=yes`` either all
    or no proposals name a DH, and at most one group (the first of each proposal;
    Libreswan's "more than one" rule).  All of them ``none``: the Child SAs go without PFS,
    as Libreswan proposes them.  ``none`` beside a group (Libreswan offers those
    proposals without KE, the others with it), or inside one proposal
    (``dh19+none``), is refused: our proposals share one PFS group.  Raises
    ``ConnError``."""
    if text is None or conn.type not in ("tunnel", "transport"):
        return  # Libreswan ignores esp= of a type=passthrough/drop/reject conn
    key = "ah" if conn.phase2 == "ah" else "esp"
    dhs = proposal_dh(text, key.upper())
    if all(d is None for d in dhs):
        return
    if not conn.pfs:
        setattr(conn, key, [replace(p, ke=()) for p in getattr(conn, key) or ()])
        return
    if None in dhs:
        raise ConnError(key, f"{key}={text}: either all or no {key.upper()} proposals "
                        "should specify DH")
    groups = list(dict.fromkeys(d for d in dhs if d))
    if len(groups) > 1:
        two = f"({dh_name(groups[0])}, {dh_name(groups[1])})"
        raise ConnError(key, f"{key}={text}: more than one IKEv1 {key.upper()} DH algorithm "
                        f"{two} is not allowed in quick mode" if conn.keyexchange == "ikev1"
                        else f"{key}={text}: more than one IKEv2 {key.upper()} DH algorithm "
                        f"{two} requires unimplemented CHILD_SA INVALID_KE")
    if (0 in dhs and groups) or any(0 in p.ke for p in getattr(conn, key) or ()):
        raise ConnError(key, f"{key}={text}: proposals with DH NONE beside proposals with a "
                        "DH group are not supported by pypluto (each Child SA uses one PFS "
                        "group; write pfs=no, or a group in every proposal)", True)
    if not groups:  # every proposal says none: no PFS, whatever pfs= says
        conn.pfs = False


SA_MAX_OPERATIONS = 2**63
"""ipsec-max-bytes= / ipsec-max-packets=: Libreswan's maximum (larger values are capped,
with a warning)."""


def _legacy_dn_commas(idv: str) -> bool:
    """``leftid="CN=x, OU=a,, b"``: Libreswan 5.2's addconn reads ``,,`` in a DN as an
    escaped comma (``\\,``), with a warning (ikev2-x509-39-OU-comma)."""
    return not idv.startswith("@") and ",," in idv and "=" in idv


def _lifetime_warnings(conn: Connection) -> list[tuple[str, str]]:
    """(key, warning) for each lifetime written above ``LIFETIME_MAXIMUM``, for
    fragmentation=force and ikepad= (IKEv1's), for each DH of esp=/ah= with pfs=no, for an ID
    written with legacy ``,,``, for the keys a shunt conn ignores, for the old
    ``ikev2=``, for mark-in=/mark-out= beside mark= and for a subnet= with host bits, in
    Libreswan's words: what the conn uses instead."""
    out = []
    for side in ("left", "right"):
        idv = conn.raw.get(side + "id", "")
        if _legacy_dn_commas(idv):
            out.append((side + "id", f"changing legacy ',,' to '\\,' in {side}id={idv}"))
    key = "ah" if conn.phase2 == "ah" else "esp"
    text = conn.raw.get(key, "").strip()
    if text and not conn.pfs and conn.type in ("tunnel", "transport") and \
            parse_bool(conn.raw.get("pfs", "yes"), "pfs") is False:
        for dh in proposal_dh(text, key.upper()):
            if dh == 0:
                out.append((key, f"ignoring redundant {key.upper()} DH algorithm NONE as PFS "
                            "policy is disabled"))
            elif dh is not None:
                out.append((key, f"ignoring {key.upper()} DH algorithm {dh_name(dh)} as PFS "
                            "policy is disabled"))
    if conn.type in _SHUNT_TYPES:
        for key in _SHUNT_IGNORED:
            word = conn.raw.get(key, "").strip().lower()
            if word:
                if key in ("pfs", "compress"):
                    word = "yes" if parse_bool(word, key) else "no"
                out.append((key, f"{key}={word} ignored for never-negotiate connection"))
        # Libreswan 5.2's own words for these two (connections.c)
        if conn.raw.get("esn", "").strip():
            out.append(("esn", f"ignoring esn={_yes_no(conn.raw['esn'])} as connection is "
                        "never-negotiate"))
        if conn.raw.get("fragmentation", "").strip():
            out.append(("fragmentation", "never-negotiate connection ignores "
                        f"fragmentation={conn.fragmentation}"))
    v2 = conn.raw.get("ikev2", "").strip().lower()
    if _ikev2_overridden(conn.raw):
        out.append(("ikev2", "ignoring ikev2=no which conflicts with keyexchange=IKEv2"))
    elif v2 in _IKEV2_YES and conn.raw.get("keyexchange", "").strip().lower() != "ikev1":
        out.append(("ikev2", "ikev2=yes has been replaced by keyexchange=ikev2"))
    frag = conn.raw.get("fragmentation", "").strip().lower()
    if frag in ("force", "insist") and conn.type not in _SHUNT_TYPES:
        out.append(("fragmentation", f"IKEv1 only fragmentation={frag} ignored; using "
                    "fragmentation=yes"))
    pad = conn.raw.get("ikepad", "").strip()
    if pad:  # IKEv1's padding workaround: Libreswan 5.2 warns for any value (addconn-47)
        out.append(("ikepad", f"IKEv2 connection ignores ikepad={_yes_no(pad)}"))
    for key, what in (("ipsec-max-bytes", "bytes"), ("ipsec-max-packets", "packets")):
        v = conn.raw.get(key)
        if v and parse_binary(v, key, _BINARY_KEYS[key]) > SA_MAX_OPERATIONS:
            out.append((key, f"IPsec max {what} limited to the maximum allowed 2^63"))
    for key in ("ikelifetime", "ipsec-lifetime"):
        v = conn.raw.get(key)
        if v and parse_duration(v, key) > LIFETIME_MAXIMUM:
            out.append((key, f"{key}={parse_duration(v, key):.0f} seconds exceeds maximum of "
                        f"{LIFETIME_MAXIMUM:.0f} seconds, setting to the maximum allowed"))
    mark = conn.raw.get("mark", "").strip()
    for key in ("mark-in", "mark-out") if mark else ():
        v = conn.raw.get(key, "").strip()
        if v:  # Libreswan 5.2's warning (connections.c)
            out.append((key, f"{key}={v} overrides mark={mark}"))
    for side in ("left", "right"):
        out.extend((side + "subnet", f"zeroing non-zero address identifier {host} in "
                    f"{side}subnet={conn.raw[side + 'subnet']}")
                   for host in _subnet_host_bits(conn.raw.get(side + "subnet", "")))
    return out


def _subnet_host_bits(value: str) -> list[str]:
    """The addresses of ``subnet=`` items written with host bits set (``10.0.0.1/8``):
    the subnet is their network (Libreswan 5.2 zeroes them and says so when the conn
    is added: "zeroing non-zero address identifier ...")."""
    out = []
    for item in (w for w in re.split(r"[\s,{}]+", value) if "/" in w):
        m = _SELECTOR_RE.match(item)
        try:
            iface = ipaddress.ip_interface(m.group(1) if m else item)
        except ValueError:
            continue  # %any, vhost:, short IPv4 forms: not an address with host bits
        if iface.ip != iface.network.network_address:
            out.append(str(iface.ip))
    return out


def _subnet_pairs(name: str, keys: dict[str, str], origin: Origin,
                  reader: _Reader) -> list[tuple[str, dict[str, str]]]:
    """``leftsubnets=`` / ``rightsubnets=``: one conn per (left, right) subnet pair, as
    Libreswan 5.2 adds them (``whack_add.c``, described in ipsec.conf(5)).

    Each end's list is its ``subnet=`` (number 0) followed by its ``subnets=``
    (numbered from 1); an end with neither uses its host (number 0).  The conns are
    named ``NAME/LxR`` and made left-major (``/1x1``, ``/1x2``, ``/2x1``...); a pair of
    different address families is skipped with a warning.  Each pair is a normal conn
    whose ``connalias`` is NAME, so that ``ipsec up NAME`` can bring them all up.
    Without any ``subnets=`` the conn is returned as it is.
    """
    if not keys.get("leftsubnets") and not keys.get("rightsubnets"):
        return [(name, keys)]
    for many_side in ("left", "right"):  # Libreswan 5.2 (whack_add.c): no pairs of those
        many_v = keys.get(many_side + "subnets")
        for side in ("left", "right") if many_v else ():
            multi = keys.get(side + "subnet") or ""
            if "," in multi:
                raise ConnError(side + "subnet", f'multi-selector {side}subnet="{multi}" '
                                f'combined with {many_side}subnets="{many_v}"')
    ends: list[tuple[int, list[str]]] = []
    for side in ("left", "right"):
        sub = keys.get(side + "subnet") or ""
        try:
            many = [str(n) for n in parse_subnets(keys.get(side + "subnets") or "")] \
                if keys.get(side + "subnets") else []
        except ValueError as exc:
            raise ConnError(side + "subnets", f"{side}subnets={keys[side + 'subnets']} "
                            f"invalid, {exc}") from None
        items = ([sub] if sub else []) + many
        ends.append((0 if sub or not many else 1, items))
    out: list[tuple[str, dict[str, str]]] = []
    (lstart, lefts), (rstart, rights) = ends
    for li, lnet in enumerate(lefts or [""]):
        for ri, rnet in enumerate(rights or [""]):
            pkeys = {k: v for k, v in keys.items() if k not in ("leftsubnets", "rightsubnets")}
            for side, net in (("left", lnet), ("right", rnet)):
                if net:
                    pkeys[side + "subnet"] = net
            if lnet and rnet and ipaddress.ip_network(lnet, strict=False).version != \
                    ipaddress.ip_network(rnet, strict=False).version:
                reader.warn(origin.file, origin.line, f'"{name}": warning: skipping '
                            f"mismatched leftsubnets={lnet} rightsubnets={rnet}")
                continue
            out.append((f"{name}/{lstart + li}x{rstart + ri}", pkeys))
    return out


PPK_ID_MAXLEN = 64  # bytes; Libreswan's PPK_ID_MAXLEN (a longer PPK_ID is refused on the wire)


def _ppk_ids(value: str | None) -> list[bytes]:
    """``ppk-ids=``: PPK_IDs separated by commas or white space (ipsec.conf(5); RFC 8784 §3).

    An empty list or a PPK_ID longer than 64 bytes refuses the conn.
    """
    if value is None:
        return []
    out = [w.encode() for w in re.split(r"[\s,]+", value.strip()) if w]
    if not out:
        raise ConnError("ppk-ids", f'ppk-ids="{value}" names no PPK_ID')
    for w in out:
        if len(w) > PPK_ID_MAXLEN:
            raise ConnError("ppk-ids", f"ppk-ids= PPK_ID '{w[:16].decode(errors='replace')}...' "
                            f"is longer than {PPK_ID_MAXLEN} bytes")
    return out


_RSA_WORDS = frozenset({"rsasig", "rsa", "rsa-sha1", "rsa-sha2", "rsa-sha2_256", "rsa-sha2_384",
                        "rsa-sha2_512"})
_AUTH_FAMILY = {"rsasig": _RSA_WORDS, "rsa": _RSA_WORDS,
                "ecdsa": frozenset({"ecdsa", "ecdsa-sha2", "ecdsa-sha2_256", "ecdsa-sha2_384",
                                    "ecdsa-sha2_512"})}
"""The ``authby=`` words each signature ``leftauth=`` / ``rightauth=`` keeps."""


def _semantic_checks(conn: Connection) -> None:
    transport = conn.type == "transport"
    sha1 = "sha1" in conn.authby
    for end, side in ((conn.left, "left"), (conn.right, "right")):
        if transport and end.host_addr is not None:
            version = end.host_addr.version
            for net in end.subnets:
                if net.version != version:
                    raise ConnError(side + "subnet",
                                    f"{side}subnet family does not match {side}= in transport")
        if sha1 and end.auth == "ecdsa":
            raise ConnError(side + "auth", "authby=ecdsa cannot use sha1, only sha2")
        if end.auth in _AUTH_FAMILY and conn.type in ("tunnel", "transport") and \
                conn.keyexchange == "ikev2":
            # Libreswan 5.2 (connections.c): leftauth=rsasig|ecdsa keeps only those
            # authby= words of its kind (authby=rsa-sha2 with leftauth=rsasig is PSS only);
            # an authby= of signatures of the other kind only is its error.  (Libreswan
            # refuses authby=secret|null with it too; pypluto lets leftauth= decide there)
            words = conn.authby.split(",")
            kept = [w for w in words if w in _AUTH_FAMILY[end.auth]]
            if kept:
                end.auth = ",".join(kept)
            elif all(w in _RSA_WORDS or w in _AUTH_FAMILY["ecdsa"] for w in words):
                want = "ecdsa" if end.auth == "ecdsa" else "rsasig"
                raise ConnError(side + "auth", f"{side}auth={end.auth} expects authby={want}")
    if conn.keyexchange == "ikev2":
        for end, side in ((conn.left, "left"), (conn.right, "right")):
            raw_sub = end.raw.get("subnet", "")
            if raw_sub[:1] in ("v", "V") and raw_sub.lower().startswith(("vhost:", "vnet:")):
                raise ConnError(side + "subnet", "The vnet: and vhost: keywords are only "
                                "valid for IKEv1 connections")
    left, right = conn.left.host_addr, conn.right.host_addr
    if left is not None and right is not None and left.version != right.version:
        raise ConnError("left", "left= and right= are of different address families")
    _roadwarrior_checks(conn)


def _roadwarrior_checks(conn: Connection) -> None:
    """addresspool= ranges and modecfgdns= addresses (RFC 7296 §3.15): bad ones refuse."""
    for end, side in ((conn.left, "left"), (conn.right, "right")):
        if end.addresspool is not None:
            try:
                parse_pool(end.addresspool)
            except ValueError as exc:
                raise ConnError(side + "addresspool",
                                f"{side}addresspool={end.addresspool}: {exc}") from None
            if end.subnets:  # the leased address is that end's selector (Libreswan too)
                raise ConnError(side + "addresspool", f"cannot specify both {side}addresspool= "
                                f"and {side}subnet=")
    dns = conn.raw.get("modecfgdns", "")
    for w in [w for w in re.split(r"[\s,]+", dns) if w] if dns else ():
        try:
            ipaddress.ip_address(w)
        except ValueError:
            raise ConnError("modecfgdns", f"modecfgdns={dns}: {w!r} is not an IP address") \
                from None
    red = conn.raw.get("redirect-to", "")  # RFC 5685 §10 gateway identities
    if red:
        try:
            parse_gateways(red)
        except ValueError as e:
            raise ConnError("redirect-to", f"redirect-to={red}: {e}") from None
    acc = conn.raw.get("accept-redirect-to", "")  # addresses, networks, names, %any
    for w in [w for w in acc.replace(",", " ").split() if w.lower() != "%any"]:
        try:
            ipaddress.ip_network(w, strict=False) if "/" in w else parse_gateways(w)
        except ValueError:
            raise ConnError("accept-redirect-to", f"accept-redirect-to={acc}: {w!r} is "
                            "neither an IP address, a network nor a host name") from None
    send = conn.raw.get("send-redirect", "no").lower()
    if send in ("yes", "true", "on", "y", "auto") and not red.strip():
        raise ConnError("send-redirect", f"send-redirect={send} requires redirect-to=")


def _build_setup(cfg: ConfigFile, reader: _Reader) -> None:
    setup = cfg.setup
    for sec in reader.sections:
        if sec.kind != "setup":
            continue
        for key, value, origin in _canonical_items(sec):
            setup.raw.setdefault(key, value)
            setup.origins.setdefault(key, origin)
    raw = setup.raw

    def get(k: str) -> str | None:
        v = raw.get(k)
        return v if v not in (None, "") else None

    def apply(k: str, fn: Callable[[str], object]) -> None:
        v = get(k)
        if v is None:
            return
        try:
            fn(v)
        except ValueError as exc:
            o = setup.origins[k]
            cfg.diagnostics.append(Diagnostic(o.file, o.line, str(exc)))

    def sbool(attr: str, key: str) -> None:
        apply(key, lambda v: setattr(setup, attr, parse_bool(v, key)))

    apply("logfile", lambda v: setattr(setup, "logfile", v))
    sbool("logtime", "logtime")
    sbool("logappend", "logappend")
    sbool("logip", "logip")
    sbool("audit_log", "audit-log")
    apply("plutodebug", lambda v: setattr(setup, "plutodebug",
                                          [w for w in re.split(r"[\s,]+", v) if w]))
    sbool("uniqueids", "uniqueids")
    apply("listen", lambda v: setattr(setup, "listen", v))
    apply("nhelpers", lambda v: setattr(setup, "nhelpers",
                                        -1 if v.strip() == "-1" else parse_bignum(v, "nhelpers")))
    apply("keep-alive", lambda v: setattr(setup, "keep_alive",
                                          int(parse_duration(v, "keep-alive"))))
    apply("virtual-private", lambda v: setattr(setup, "virtual_private", v))
    apply("myvendorid", lambda v: setattr(setup, "myvendorid", v))
    apply("ike-socket-bufsize", lambda v: setattr(
        setup, "ike_socket_bufsize", parse_int(v, "ike-socket-bufsize", 1024, 2**31 - 1)))
    apply("xfrmlifetime", lambda v: setattr(
        setup, "xfrmlifetime", parse_int(v, "xfrmlifetime", 1, 2**31 - 1)))
    apply("nflog-all", lambda v: setattr(
        setup, "nflog_all", parse_int(v, "nflog-all", 0, 65535) or None))
    sbool("crl_strict", "crl-strict")
    apply("crlcheckinterval", lambda v: setattr(setup, "crlcheckinterval",
                                                parse_duration(v, "crlcheckinterval")))
    # revocation (config/revocation.py, issue 14)
    sbool("ocsp_enable", "ocsp-enable")
    sbool("ocsp_strict", "ocsp-strict")
    def sdur(key: str) -> None:
        apply(key, lambda v: setattr(setup, key.replace("-", "_"), parse_duration(v, key)))

    for rkey in ("curl-timeout", "ocsp-timeout", "ocsp-cache-min-age", "ocsp-cache-max-age"):
        sdur(rkey)
    apply("ocsp-cache-size", lambda v: setattr(setup, "ocsp_cache_size",
                                               parse_bignum(v, "ocsp-cache-size")))
    def curl_iface(v: str) -> None:
        parse_curl_iface(v)  # ValueError: file:line and why
        setup.curl_iface = v.strip()

    apply("curl-iface", curl_iface)
    apply("ocsp-uri", lambda v: setattr(setup, "ocsp_uri", parse_ocsp_uri(v) if v.strip()
                                        else v))
    apply("ocsp-trustname", lambda v: setattr(setup, "ocsp_trustname", v))
    apply("ocsp-method", lambda v: setattr(setup, "ocsp_method", v.lower()))
    def set_str(attr: str) -> Callable[[str], None]:
        return lambda v: setattr(setup, attr, v)

    apply("metrics-listen", lambda v: setattr(setup, "metrics_listen", v))
    for attr in ("ipsecdir", "nssdir", "secretsfile", "dumpdir", "rundir", "statsbin"):
        apply(attr, set_str(attr))
    apply("protostack", lambda v: setattr(setup, "protostack", v))
    sbool("ipsec_interface_managed", "ipsec-interface-managed")
    apply("ddos-mode", lambda v: setattr(setup, "ddos_mode", v.lower()))

    def redirect_to(v: str) -> None:  # RFC 5685 §10 gateway identities
        try:
            parse_gateways(v)
        except ValueError as e:
            raise ValueError(f"global-redirect-to={v}: {e}") from None

    apply("global-redirect-to", redirect_to)
    apply("ddos-ike-threshold", lambda v: setattr(setup, "ddos_ike_threshold",
                                                  parse_int(v, "ddos-ike-threshold")))
    apply("max-halfopen-ike", lambda v: setattr(setup, "max_halfopen_ike",
                                                parse_int(v, "max-halfopen-ike")))
    apply("seedbits", lambda v: setattr(setup, "seedbits", parse_int(v, "seedbits")))
    apply("secctx-attr-type", lambda v: setattr(setup, "secctx_attr_type",
                                                parse_int(v, "secctx-attr-type")))


def _finish(reader: _Reader, path: str, enforce: bool = True) -> ConfigFile:
    cfg = ConfigFile(path=path, inputs=list(reader.inputs))
    cfg.sections = reader.sections
    _validate_sections(reader, enforce)
    _resolve_conns(reader, cfg)
    _build_setup(cfg, reader)
    bad_conns = {d.conn for d in reader.diags if d.conn}
    last_origin = {s.name: s.origin for s in reader.sections if s.kind == "conn"}
    for name, resolved in cfg.resolved.items():
        origin = last_origin[name]
        if name in bad_conns:
            cfg.failed.setdefault(name, []).extend(d for d in reader.diags if d.conn == name)
            continue
        keys = {k: v for k, (v, _o) in resolved.items()}
        origins = {k: o for k, (_v, o) in resolved.items()}
        try:
            built = [(pair, build_connection(pair, pkeys, origins, enforce_support=enforce))
                     for pair, pkeys in _subnet_pairs(name, keys, origin, reader)]
        except (ValueError, IdError, TypeError, KeyError, AttributeError) as exc:
            # TypeError & co. would be our bug; the user still gets file:line, not a
            # traceback, and the other conns load
            if not isinstance(exc, ValueError):
                exc = ConnError(None, f"internal error ({type(exc).__name__}: {exc})")
            key = getattr(exc, "key", None)
            if not key:  # a value parser's "KEY=VALUE: why": the line of KEY
                m = re.match(r"([a-z0-9][a-z0-9_.+-]*)=", str(exc))
                key = m.group(1) if m and m.group(1) in origins else None
            o = origins.get(key, origin) if key else origin
            if key and key not in origins:
                o = next((origins[k] for k in origins if k.startswith(key)), origin)
            diag = Diagnostic(o.file, o.line, str(exc), "error", conn=name,
                              unsupported=bool(getattr(exc, "unsupported", False)))
            if not any(d.severity == "error" and (d.file, d.line) == (o.file, o.line)
                       for d in reader.diags):  # not already reported as a file error
                reader.diags.append(diag)
            cfg.failed.setdefault(name, []).append(diag)
            continue
        for pair, conn in built:
            conn.origin = origin
            conn.also = cfg.also_chain.get(name, [])
            if pair != name:
                conn.connalias = name
            for side, end in (("left", conn.left), ("right", conn.right)):
                if end.host and end.host.startswith("%") and not is_host_keyword(end.host):
                    o = origins.get(side, origin)
                    reader.diags.append(Diagnostic(o.file, o.line, f"{side}={end.host}: "
                                                   "unknown host keyword, treated as "
                                                   "unresolved", "warning", conn=name))
                    break
            if conn.uniqueids is None:
                conn.uniqueids = cfg.setup.uniqueids
            if pair == built[0][0]:  # once per conn section, not per subnets= pair
                for key, msg in _lifetime_warnings(conn):
                    o = origins.get(key, origin)
                    reader.diags.append(Diagnostic(o.file, o.line, msg,
                                                   "warning", conn=name))
            cfg.conns[pair] = conn
    cfg.diagnostics = reader.diags + cfg.diagnostics
    return cfg


def parse_config_text(text: str, filename: str = "<string>", *,
                      root_dir: str | None = None, enforce_support: bool = True) -> ConfigFile:
    """Parse ipsec.conf text (includes are resolved relative to ``filename``)."""
    reader = _Reader(root_dir)
    try:
        reader.read_text(text, filename, 0)
    except RecursionError:
        reader.err(filename, 0, "include nesting too deep")
    return _finish(reader, filename, enforce_support)


def load_config(path: str, *, root_dir: str | None = None,
                enforce_support: bool = True) -> ConfigFile:
    """Read and resolve an ipsec.conf file.

    Raises OSError only when ``path`` itself cannot be read; every other problem
    is a ``Diagnostic`` (``path`` not a regular file, or over ``MAX_FILE_BYTES``, too:
    ``path: not a regular file (a FIFO)``, ``path: file too large: ...``).
    ``root_dir`` prefixes absolute include paths (a chroot for tests, like Libreswan's
    ``--rootdir``).  ``enforce_support=False`` loads conns whose keys pypluto does not
    support (to compare the parse with Libreswan's).
    """
    reader = _Reader(root_dir)
    reader.inputs.append(("file", path))
    try:
        data = read_config_bytes(path)
    except ConfigFileRefused as exc:
        reader.err(path, 0, str(exc))
        return _finish(reader, path, enforce_support)
    try:
        reader.read_text(decode_utf8(data, path, reader.diags), path, 0, path)
    except RecursionError:
        reader.err(path, 0, "include nesting too deep")
    return _finish(reader, path, enforce_support)


def inputs_signature(cfg: ConfigFile) -> tuple[object, ...]:
    """What ``cfg`` was made of, as it is on disk now: every file's (mtime, size, inode)
    and every include glob's matches.  Equal signatures mean that reading the file
    again would give the same result (the daemon reuses a parse for ``ipsec add``)."""
    sig: list[object] = []
    for kind, name in cfg.inputs:
        if kind == "glob":
            try:
                sig.append((name, tuple(sorted(glob.glob(name)))))
            except (OSError, ValueError, re.error):
                sig.append((name, None))
            continue
        try:
            st = os.stat(name)
            sig.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append((name, None))
    return tuple(sig)
