"""The secrets the engine holds: a proxy whose store ``--rereadsecrets`` swaps.

The engine keeps one reference for its whole life; ``whack --rereadsecrets``
and ``--listen`` (ipsec-pluto(8)) reload ``--secretsfile`` (a glob) into a new
store behind the same proxy, so no engine state has to be rebuilt.  Secrets
never reach a log: only the kind and the indices of each record are logged.
"""

from __future__ import annotations

import glob
import os
from typing import Any

from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.resolver import resolve_host
from pypluto.params import IPAddress


def _ipv4_addresses(name: str) -> list[IPAddress]:
    """A bare host name index of ipsec.secrets: its IPv4 addresses, looked up when the
    file is (re)loaded, as Libreswan's ``atoid`` does (blocking, as there)."""
    return [a for a in resolve_host(name) if a.version == 4]


class EmptySecrets:
    """No secrets loaded (yet)."""

    secrets: list[Any] = []

    def psk_for(self, local: Any, remote: Any, local_addr: Any, remote_addr: Any) -> bytes | None:
        return None


class SecretsProxy:
    """What the engine holds: forwards to the current store, swapped by --rereadsecrets."""

    def __init__(self) -> None:
        self.store: Any = EmptySecrets()
        self.certs: Any = None  # config.certs.CertStore, set by the server (issue 14)
        self.files: list[str] = []

    def psk_for(self, local: Any, remote: Any, local_addr: Any, remote_addr: Any) -> bytes | None:
        result: bytes | None = self.store.psk_for(local, remote, local_addr, remote_addr)
        return result

    def __getattr__(self, name: str) -> Any:  # other lookups the engine may add
        return getattr(self.store, name)

    def records(self) -> list[Any]:
        for attr in ("secrets", "records", "entries"):
            v = getattr(self.store, attr, None)
            if isinstance(v, list):
                return v
        return []

    def load(self, pattern: str, log: PlutoLogger) -> int:
        """(Re)load ``pattern`` (a file or a glob); returns the number of files read.

        A file that does not parse leaves the previous store in place (bad input
        loses nothing); the parser's message names file:line.
        """
        files = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        files = [f for f in files if os.path.exists(f)]
        log.log("forgetting secrets")
        if not files:
            log.log(f'no secrets filename matched "{pattern}"', "warning")
            self.store, self.files = EmptySecrets(), []
            return 0
        try:
            from pypluto.config.secrets import load_secrets
        except ImportError:
            log.log("secrets parser unavailable in this build", "error")
            return 0
        for f in files:
            log.log(f'loading secrets from "{f}"')
        try:
            store = load_secrets(pattern, _ipv4_addresses)
        except Exception as e:  # noqa: BLE001 - the parser names file:line
            log.log(f"{e}", "error")
            return 0
        if hasattr(store, "files") and store.files:
            files = list(store.files)
        for d in getattr(store, "diagnostics", []) or []:
            log.log(str(d), "error" if getattr(d, "severity", "") == "error" else "warning")
        self.store, self.files = store, files
        for rec in self.records():
            kind = getattr(rec, "kind", "PSK")
            ids = " ".join(str(i) for i in getattr(rec, "indices", [])) or "%any"
            log.log(f"loaded {kind} secret for {ids}", "debug")
        return len(files)
