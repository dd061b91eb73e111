"""``ipsec.secrets`` reader and PSK lookup (Libreswan's ipsec.secrets(5)).

A record is ``INDICES : KIND VALUE`` where INDICES are zero or more IDs (addresses,
``@fqdn``, ``user@fqdn``, ``%any``, ``%any6``, quoted DNs or quoted IPv6
addresses; a bare host name is resolved to its IPv4 address when pluto loads the
file, as Libreswan's ``atoid`` does) and KIND is ``PSK``, ``XAUTH``, ``PPKS``;
``RSA``, ``ECDSA``, ``PIN`` and ``PPKF`` are recognised and ignored with a warning (keys live in NSS).  A record
continues on lines that start with white space.  Values: ``"text"``, ``0x`` hex
(``_`` allowed), ``0s`` base64, ``0t`` text.  ``include GLOB`` reads more files
(relative to the including file).

Lookup is by the two IDs only, scored as Libreswan 5.2's ``lsw_find_secret_by_id``
(lib/libswan/secrets.c): each index naming our ID or the peer's sets a bit, a wildcard
index (``%any``, ``0.0.0.0``, ``::``; a record with no index counts as ``%any``) sets
the "any" bit, and a record whose only index names us also matches "any peer".  The
accepted scores, best first: ours and the peer's; ours and a wildcard; only ours (one
index); the peer's and a wildcard; wildcards only.  A record naming only the peer, or
naming us among other IDs that do not match, is no PSK; equal scores: the first
record wins.  An index equals an ID as ``same_id`` says: a DN index exactly (in
order, ``*`` is no wildcard there).  Addresses count only as IDs (an unset
``leftid=``/``rightid=`` is the host's address): there is no fallback from IDs to
addresses.  Secrets never appear
in any repr, log or message.
"""

from __future__ import annotations

import base64
import binascii
import glob
import ipaddress
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from pypluto.config.ids import (
    ID_DER_ASN1_DN,
    ID_FQDN,
    ID_IPV4_ADDR,
    ID_IPV6_ADDR,
    IdError,
    dn_attributes,
    id_from_address,
    id_matches,
    parse_id,
)
from pypluto.config.model import Identity, Origin, Secret
from pypluto.config.parser import (
    ConfigFileRefused,
    Diagnostic,
    read_config_bytes,
)
from pypluto.params import IPAddress

Resolver = Callable[[str], list[IPAddress]]  # a host name's addresses (daemon/resolver)
WEAK_PSK_BYTES = 14  # below 112 bits a PSK is weak (NIST SP 800-131A / Libreswan FIPS rule)
WEAK_PPK_BYTES = 32  # RFC 8784 §6: a PPK should have at least 256 bits of entropy
MAX_DEPTH = 10
MAX_FILES = 1000  # bound for include globs that fan out
_KINDS = {"PSK", "XAUTH", "PPKS", "RSA", "ECDSA", "PIN", "PPKF", "EAP"}

_MATCH_DEFAULT = 1
_MATCH_ANY = 2
_MATCH_HIM = 4
_MATCH_ME = 8
# the scores lsw_find_secret_by_id accepts for a symmetric secret (PSK, PPK)
_ACCEPTED = frozenset((_MATCH_ME | _MATCH_HIM, _MATCH_ME | _MATCH_ANY,
                       _MATCH_ME | _MATCH_DEFAULT, _MATCH_HIM | _MATCH_ANY, _MATCH_ANY))


def _wildcard(idx: Identity) -> bool:
    """Libreswan ``id_is_any``: ``%any`` or an unspecified address."""
    if idx.any:
        return True
    return idx.id_type in (ID_IPV4_ADDR, ID_IPV6_ADDR) and not any(idx.data)


def _same_id(idx: Identity, want: Identity | None) -> bool:
    """Libreswan ``same_id``: an ID_NONE (``%any``) ID matches every index; otherwise
    ``id_eq``: the kinds agree and the values are equal.  A DN index is compared with
    ``same_dn`` (lib/libswan/x509dn.c), exactly: the same attributes in the same order,
    and a ``*`` value is a literal ``*``, not a wildcard (``match_dn``'s wildcards are
    for ``rightid=``, never for ipsec.secrets)."""
    if want is None:
        return False
    if want.any:
        return True
    if idx.fromcert:
        return False
    if idx.id_type == ID_DER_ASN1_DN and want.id_type == ID_DER_ASN1_DN:
        return _same_dn(idx.data, want.data)
    return id_matches(idx, want)  # id_eq: kinds must agree


def _same_dn(a: bytes, b: bytes) -> bool:
    """Two DER DNs equal RDN by RDN, in order, values compared without case."""
    if a == b:
        return True
    pa, pb = dn_attributes(a), dn_attributes(b)
    if pa is None or pb is None or len(pa) != len(pb):
        return False
    return all(oa == ob and va.lower() == vb.lower()
               for (oa, va), (ob, vb) in zip(pa, pb, strict=True))


def _dn_has_star(idx: Identity) -> bool:
    return idx.id_type == ID_DER_ASN1_DN and not idx.fromcert and \
        any(v == "*" for _o, v in dn_attributes(idx.data) or [])


class SecretsPermissionError(PermissionError):
    """A secrets file that others can write: refused."""


@dataclass
class SecretStore:
    """Every usable record of the secrets files, plus diagnostics."""

    secrets: list[Secret] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"SecretStore({len(self.secrets)} secrets from {len(self.files)} files)"

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.diagnostics)

    def _best(self, kind: str, local: Identity | None, remote: Identity | None) -> Secret | None:
        """Libreswan 5.2 ``lsw_find_secret_by_id`` (lib/libswan/secrets.c) for a
        symmetric secret: the best-scoring record, the first one on a tie."""
        best: Secret | None = None
        best_match = 0
        for sec in self.secrets:
            if sec.kind != kind:
                continue
            match = 0
            if not sec.indices:
                match = _MATCH_ANY  # Libreswan stores two ID_NONE (wildcard) indices
            for idx in sec.indices:
                if _wildcard(idx):
                    match |= _MATCH_ANY
                    continue
                if _same_id(idx, local):
                    match |= _MATCH_ME
                if _same_id(idx, remote):
                    match |= _MATCH_HIM
            if match == _MATCH_ME and len(sec.indices) == 1:
                match |= _MATCH_DEFAULT  # only our ID named: any peer
            if match in _ACCEPTED and match > best_match:  # a tie: the first wins
                best, best_match = sec, match
        return best

    def psk_for(self, local: Identity | None, remote: Identity | None,
                local_addr: IPAddress | None = None,
                remote_addr: IPAddress | None = None) -> bytes | None:
        """The pre-shared key for this pair of IDs, or None (Libreswan 5.2
        ``get_connection_psk``).  Only IDs are looked up: an address-indexed record
        matches only when an ID is that address.  ``local`` None is our host address
        (an unset ``leftid=``); ``remote`` None (no peer ID: a ``right=%any``
        template without ``rightid=``) is ``%ANYADDR``, so only a wildcard index
        matches the peer, as in ``lsw_get_secret`` (programs/pluto/keys.c).
        ``remote_addr`` is not used: no fallback from IDs to addresses."""
        del remote_addr
        if local is None and local_addr is not None:
            local = id_from_address(local_addr)
        if remote is None:
            v6 = local_addr is not None and local_addr.version == 6
            remote = id_from_address(ipaddress.ip_address("::" if v6 else "0.0.0.0"))
        sec = self._best("PSK", local, remote)
        return sec.value if sec is not None else None

    def xauth_for(self, username: str) -> bytes | None:
        """The XAUTH password of a user (index ``@user`` or ``user``)."""
        for sec in self.secrets:
            if sec.kind == "XAUTH":
                for idx in sec.indices:
                    if idx.text.lstrip("@") == username:
                        return sec.value
        return None

    def ppks(self) -> list[tuple[bytes, bytes]]:
        """(PPK_ID, PPK) pairs (RFC 8784), in file order."""
        return [(s.ppk_id or b"", s.value) for s in self.secrets if s.kind == "PPKS"]

    def ppk_for(self, ppk_id: bytes) -> bytes | None:
        """The PPK whose PPK_ID is ``ppk_id`` (the first such record), or None."""
        for s in self.secrets:
            if s.kind == "PPKS" and s.ppk_id == ppk_id:
                return s.value
        return None

    def ppk_for_ids(self, local: Identity | None, remote: Identity | None
                    ) -> tuple[bytes, bytes] | None:
        """(PPK_ID, PPK) of the PPKS record that best matches this pair of IDs (the
        most-specific rule of PSKs; a conn without ``ppk-ids=`` uses it), or None."""
        sec = self._best("PPKS", local, remote)
        if sec is None or sec.ppk_id is None:
            return None
        return sec.ppk_id, sec.value

    def list_psks(self) -> list[str]:
        """One line per PSK: its indices only (never the secret)."""
        out = []
        for s in self.secrets:
            if s.kind == "PSK":
                names = " ".join(str(i) for i in s.indices) or "%any"
                out.append(f"{names} : PSK")
        return out


# --------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    """Split a record into tokens; quoted strings stay one token (with quotes), and a
    ``0t`` text value runs to the end of the record (``PSK 0tsome words``)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == '"' or ch == "'":
            end = text.find(ch, i + 1)
            if end < 0 or "\n" in text[i:end]:  # a quoted string ends on its line (lex.c)
                raise ValueError("unterminated quoted string")
            out.append(text[i:end + 1])
            i = end + 1
            continue
        if ch == "{":
            end = text.find("}", i)
            if end < 0:
                raise ValueError("unterminated '{'")
            out.append(text[i:end + 1])
            i = end + 1
            continue
        if text.startswith("0t", i):  # a 0t token runs to the end of its line (lex.c)
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            out.append(text[i:end].rstrip())
            i = end
            continue
        j = i
        while j < len(text) and not text[j].isspace():
            j += 1
        out.append(text[i:j])
        i = j
    return out


_HEX_PAIRS = re.compile(r"[0-9A-Fa-f]{2}(?:_?[0-9A-Fa-f]{2})*")


def decode_secret(token: str) -> bytes:
    """A secret value: ``"text"``, ``0xHEX`` (``_`` allowed), ``0sBASE64``, ``0tTEXT``."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        return token[1:-1].encode("utf-8", "surrogateescape")
    low = token[:2].lower()
    if low == "0x":
        # ttodata (lib/libswan/ttodata.c): pairs of hex digits, one '_' between pairs
        if token[2:] and not _HEX_PAIRS.fullmatch(token[2:]):
            raise ValueError("bad hex value (pairs of hex digits, a single '_' between "
                             "pairs)")
        return bytes.fromhex(token[2:].replace("_", ""))
    if low == "0s":
        try:
            value = base64.b64decode(token[2:], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("bad base64 value") from None
        if base64.b64encode(value) != token[2:].encode():  # ttodata: non-zero padding
            raise ValueError("bad base64 value (non-zero padding bits)")
        return value
    if low == "0t":
        return token[2:].encode("utf-8", "surrogateescape")
    raise ValueError("a secret must be quoted or start with 0x, 0s or 0t")


def _index(token: str) -> Identity:
    t = token
    if len(t) >= 2 and t[0] == t[-1] == '"':
        t = t[1:-1]
    if t in ("%any6",):
        return Identity(0, b"", "%any6", any=True)
    if not t.strip() or t.strip() == "*":  # Libreswan's atoid refuses them (no such host)
        raise ValueError(f"bad index '{token}' (%any is the index for any ID)")
    try:
        t.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 (_decode keeps them)
        raise ValueError(f"index '{token}' is not valid UTF-8: not supported") from None
    return parse_id(t)


class _Loader:
    def __init__(self, resolve: Resolver | None = None) -> None:
        self.store = SecretStore()
        self.files_read = 0
        self.resolve = resolve

    def host_index(self, name: str) -> Identity:
        """A bare host name index (no ``@``): ipsec.secrets(5) and Libreswan 5.2's
        ``atoid`` resolve it when the file is loaded, to an IPv4 address (IPv6 only
        for a name with ``:``, which is no host name), and the index is that address."""
        if self.resolve is None:
            raise ValueError(f"index '{name}' is a host name, resolved only when pluto "
                             f"loads the secrets (write @{name} for an FQDN ID)")
        try:
            addrs = [a for a in self.resolve(name) if a.version == 4]
        except (OSError, UnicodeError, ValueError):
            addrs = []
        if not addrs:
            raise ValueError(f"index '{name}' does not resolve to an IPv4 address "
                             f"(write @{name} for an FQDN ID)")
        return id_from_address(addrs[0])

    def final_indices(self, indices: list[Identity], path: str, lineno: int
                      ) -> list[Identity]:
        """The indices of a record that is otherwise good: host names resolved (only
        now, so a bad or ignored record costs no lookup); a ``*`` in a DN warned of."""
        out = []
        for ident in indices:
            if ident.id_type == ID_FQDN and not ident.text.startswith("@"):
                ident = self.host_index(ident.text)
            if _dn_has_star(ident):
                self.diag(path, lineno, f"index '{ident.text}': '*' in a DN index is not a "
                          "wildcard: an ipsec.secrets index matches only an equal ID "
                          "(Libreswan 5.2)", "warning")
            out.append(ident)
        return out

    def diag(
        self, file: str, line: int, msg: str, sev: Literal["error", "warning"] = "error"
    ) -> None:
        # an index read from bytes that are not UTF-8 holds surrogates: shown escaped
        msg = msg.encode("utf-8", "backslashreplace").decode("utf-8")
        self.store.diagnostics.append(Diagnostic(file, line, msg, sev))

    def check_perms(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError as exc:
            self.diag(path, 0, f"cannot stat: {exc.strerror}")
            return False
        if st.st_mode & stat.S_IWOTH:
            self.diag(path, 0, "refusing to read secrets from a file that others can write "
                      "(chmod o-w)")
            return False
        if st.st_mode & stat.S_IROTH:
            self.diag(path, 0, "secrets file is readable by others (chmod o-r)", "warning")
        return True

    def load(self, path: str, depth: int) -> None:
        self.files_read += 1
        if self.files_read > MAX_FILES:
            self.diag(path, 0, f"more than {MAX_FILES} secrets files included; skipped")
            return
        if not self.check_perms(path):
            return
        try:  # never a FIFO or device (it would block pluto), never without bound
            data = read_config_bytes(path)
        except ConfigFileRefused as exc:
            self.diag(path, 0, f"cannot read: {exc}")
            return
        except OSError as exc:
            self.diag(path, 0, f"cannot read: {exc.strerror}")
            return
        self.store.files.append(path)
        self.parse(_decode(data, path, self.store.diagnostics), path, depth)

    def parse(self, text: str, path: str, depth: int) -> None:
        records: list[tuple[int, str]] = []
        # lines end at "\n" only (fgets in lex.c): a form feed or U+2028 inside a quoted
        # secret is part of it, where str.splitlines() would cut the line there
        for lineno, raw in enumerate(text.split("\n"), 1):
            line = _strip_comment(raw.rstrip("\r"))
            if not line.strip():
                continue
            if line[0] in " \t" and records:  # tokens stay on their line (0t, quotes)
                records[-1] = (records[-1][0], records[-1][1] + "\n" + line.strip())
                continue
            if line[0] in " \t":
                self.diag(path, lineno, "continuation line without a record")
                continue
            records.append((lineno, line.strip()))
        for lineno, rec in records:
            try:
                self.record(rec, path, lineno, depth)
            except (ValueError, IdError) as exc:
                self.diag(path, lineno, str(exc))

    def record(self, rec: str, path: str, lineno: int, depth: int) -> None:
        if rec[:7].lower() == "include" and (len(rec) == 7 or rec[7].isspace()):
            parts = rec.split()
            if len(parts) != 2:
                raise ValueError("'include' needs one file name")
            if depth + 1 > MAX_DEPTH:
                raise ValueError("include nested too deep")
            pattern = parts[1].strip('"')
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.dirname(path) or ".", pattern)
            matches = sorted(glob.glob(pattern))
            if not matches:
                self.diag(path, lineno, f"no secrets file matches '{parts[1]}'", "warning")
            for m in matches:
                self.load(m, depth + 1)
            return
        toks = _tokens(rec)
        try:
            colon = next(i for i, t in enumerate(toks) if t == ":" or
                         (t.endswith(":") and not t.startswith('"') and t.count(":") == 1))
        except StopIteration:
            raise ValueError("missing ':' in secrets record") from None
        idx_tokens = toks[:colon]
        if toks[colon] != ":":
            idx_tokens = toks[:colon] + [toks[colon][:-1]]
        rest = toks[colon + 1:]
        if not rest:
            raise ValueError("missing secret kind after ':'")
        kind = rest[0].upper()
        if kind not in _KINDS:
            # ": "secret"" (or 'secret') without a kind is an old-style PSK
            if rest[0][:1] in ('"', "'"):
                kind, rest = "PSK", ["PSK"] + rest
            elif rest[0].isascii() and rest[0].isalpha() and rest[0].isupper() and \
                    len(rest[0]) <= 5:  # a kind's form; a lower-case word may be the secret
                raise ValueError(f"unknown secret kind '{rest[0]}'")
            else:  # not echoed: it may be the secret itself, its kind forgotten
                raise ValueError("unknown secret kind (expected PSK, XAUTH or PPKS before "
                                 "the secret)")
        origin = Origin(path, lineno)
        indices = []
        for t in idx_tokens:
            if not t:
                continue
            if ":" in t and not t.startswith('"') and "=" not in t:
                try:
                    ipaddress.IPv6Address(t)
                except ValueError:
                    raise ValueError(f"bad index '{t}'") from None
            indices.append(_index(t))
        if kind == "PIN":  # Libreswan 4+ ignores it too; the db password has its own file
            self.diag(path, lineno, "PIN secret ignored: the NSS database password goes in "
                      "<ipsecdir>/nsspassword as 'NSS Certificate DB:PASSWORD', as Libreswan",
                      "warning")
            return
        if kind in ("RSA", "ECDSA", "PIN", "PPKF", "EAP"):
            self.diag(path, lineno, f"{kind} secret ignored (keys and tokens come from NSS)",
                      "warning")
            return
        if kind == "PPKS":
            if len(rest) != 3:
                raise ValueError('PPKS needs a PPK_ID and a key: PPKS "id" "key"')
            if not (len(rest[1]) >= 2 and rest[1][0] == rest[1][-1] and rest[1][0] in "\"'"):
                raise ValueError('PPKS: the PPK_ID must be in double quotes (or single ones): '
                                 'PPKS "id" KEY')
            ppk_id = rest[1][1:-1].encode("utf-8", "surrogateescape")
            if not ppk_id:
                raise ValueError("PPKS: empty PPK_ID")
            value = decode_secret(rest[2])
            if not value:
                raise ValueError("PPKS: empty PPK")
            if len(value) < WEAK_PPK_BYTES:
                self.diag(path, lineno, f"PPK is weak: {len(value)} bytes, fewer than "
                          f"{WEAK_PPK_BYTES} (RFC 8784 §6 asks for 256 bits)", "warning")
            indices = self.final_indices(indices, path, lineno)
            self.store.secrets.append(Secret("PPKS", indices, value, ppk_id, origin))
            return
        if len(rest) != 2:
            raise ValueError(f"{kind} needs exactly one value")
        value = decode_secret(rest[1])
        if kind == "PSK":
            if not value:
                raise ValueError("empty PSK")
            if len(value) < WEAK_PSK_BYTES:
                self.diag(path, lineno, f"PSK is weak: {len(value)} bytes, fewer than "
                          f"{WEAK_PSK_BYTES}", "warning")
        # every other kind returned above
        simple: Literal["PSK", "XAUTH"] = "PSK" if kind == "PSK" else "XAUTH"
        indices = self.final_indices(indices, path, lineno)
        self.store.secrets.append(Secret(simple, indices, value, None, origin))


def _decode(data: bytes, path: str, diags: list[Diagnostic]) -> str:
    """The file's text; bytes that are not UTF-8 are kept (surrogate escapes), so a
    secret holding them is the file's bytes, as Libreswan reads them (a Latin-1 PSK
    must be the same key on both peers).  A warning names the first such line."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        diags.append(Diagnostic(path, line, "not valid UTF-8: a secret holding such bytes "
                                "is used as written, byte for byte", "warning"))
        return data.decode("utf-8", "surrogateescape")


def _strip_comment(line: str) -> str:
    """``line`` without its comment: a ``#`` that starts a token (at the start of the
    line, after white space or after a quoted string), as Libreswan 5.2's lexer
    (lib/libswan/lex.c); inside a token it is text (``@#0a0b``, a KEY_ID index)."""
    quoted = ""
    for i, ch in enumerate(line):
        if quoted:
            if ch == quoted:
                quoted = ""
        elif ch in "\"'":
            quoted = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace() or line[i - 1] in "\"'"):
            return line[:i]
    return line


def load_secrets(pattern: str, resolve: Resolver | None = None) -> SecretStore:
    """Load every file matching ``pattern`` (a glob, as ``--secretsfile`` allows).

    Never raises for bad content: problems are ``diagnostics``.  A file that others
    can write is refused (error diagnostic, nothing loaded from it).  ``resolve``
    looks up a bare host name index (pluto passes one; without it such a record is
    refused).
    """
    loader = _Loader(resolve)
    matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
    if not matches:
        loader.diag(pattern, 0, "no secrets file matches", "warning")
    for path in matches:
        loader.load(path, 0)
    return loader.store


def parse_secrets_text(text: str, filename: str = "<string>") -> SecretStore:
    """Parse secrets text (no permission check; includes relative to ``filename``)."""
    loader = _Loader()
    loader.parse(text, filename, 0)
    return loader.store

