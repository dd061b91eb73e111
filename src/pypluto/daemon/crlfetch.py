"""The daemon's side of revocation (``config/revocation.py``): the HTTP fetcher, the
``crlcheckinterval`` refresh, and the whack commands ``fetchcrls``, ``listcrls`` and
``purgeocsp``.

Fetches run on the event loop's default thread pool (``run_in_executor``), each
bounded by ``curl-timeout=`` / ``ocsp-timeout=``; their results are stored on the
loop.  The refresh: every ``crlcheckinterval`` seconds the fetched CRLs that failed or
reach their nextUpdate before the next check are fetched again (Libreswan's
``crlcheckinterval``; 0 disables it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any

from pypluto.config.certs import CertStore, CredentialError
from pypluto.config.revocation import Job, RevocationPolicy
from pypluto.crypto import revocation as rv
from pypluto.crypto import x509 as px
from pypluto.daemon.fetch import http_fetch

LogFn = Callable[..., None]


def policy_from(crlcheckinterval: float, values: dict[str, object]) -> RevocationPolicy:
    """The policy from ``--crlcheckinterval`` and the ``config setup`` keys."""
    p = RevocationPolicy(crlcheckinterval=crlcheckinterval)
    m = {"curl_timeout": "crl_timeout"}
    for k, v in values.items():
        attr = m.get(k, k)
        if hasattr(p, attr) and v is not None:
            setattr(p, attr, v)
    return p


class CRLFetcher:
    """Revocation fetching for one daemon (see the module doc)."""

    def __init__(self, store: CertStore, policy: RevocationPolicy, log: LogFn) -> None:
        self.store = store
        self.log = log
        rev = store.revocation
        rev.policy = policy
        iface = policy.curl_iface or None
        rev.fetcher = http_fetch if iface is None else \
            functools.partial(http_fetch, iface=iface)
        self._task: asyncio.Task[None] | None = None
        if policy.ocsp_trustname:
            try:
                rev.trusted = [store.peer_cert(policy.ocsp_trustname)]
            except CredentialError as e:
                log(f"ocsp-trustname={policy.ocsp_trustname}: {e}", "warning")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        p = self.store.revocation.policy
        if p.crlcheckinterval > 0:
            self._task = loop.create_task(self._refresh_loop())
            self.log(f"CRL fetching on: refreshing every {p.crlcheckinterval:g}s")
        if p.ocsp_enable:
            self.log(f"OCSP on: {'strict' if p.ocsp_strict else 'not strict'}, "
                     f"timeout {p.ocsp_timeout:g}s, method {p.ocsp_method}"
                     + (f", responder {rv.show_url(p.ocsp_uri)}" if p.ocsp_uri else ""))

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _refresh_loop(self) -> None:
        interval = self.store.revocation.policy.crlcheckinterval
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(Exception):
                await self.fetch(self.store.revocation.due(self.store.clock()))

    async def fetch(self, jobs: Sequence[Job]) -> list[str]:
        """Run ``jobs`` on a thread; store the results; the log lines (also logged)."""
        if not jobs:
            return []
        rev = self.store.revocation
        loop = asyncio.get_running_loop()
        results = await loop.run_in_executor(None, rev.run, list(jobs))
        logged = rev.apply(results, self.store.clock(), self.store.crl_strict)
        for level, line in logged:
            self.log(line, level)
        return [line for _, line in logged]

    async def fetch_all(self) -> list[str]:
        """``ipsec fetchcrls``: every distribution point seen, now."""
        return await self.fetch(self.store.revocation.all_crl_jobs())

    def listing(self) -> list[dict[str, Any]]:
        """``ipsec listcrls``: the CRLs of the NSS db and files, then the fetched ones."""
        out: list[dict[str, Any]] = []
        try:
            loaded = self.store.crls()
        except Exception:  # noqa: BLE001 - a broken db lists nothing
            loaded = []
        for c in loaded:
            if isinstance(c, px.CheckedCRL):
                out.append({"source": "nss", "url": None, "issuer": c.issuer.rfc4514_string(),
                            "this_update": None,
                            "next_update": c.next_update.isoformat() if c.next_update else None,
                            "revoked": sorted(f"{s:#x}" for s in c.serials),
                            "fetched_at": None, "error": ""})
            else:
                nxt = c.next_update_utc
                out.append({"source": "file", "url": None, "issuer": c.issuer.rfc4514_string(),
                            "this_update": c.last_update_utc.isoformat(),
                            "next_update": nxt.isoformat() if nxt else None,
                            "revoked": sorted(f"{e.serial_number:#x}" for e in c),
                            "fetched_at": None, "error": ""})
        out += self.store.revocation.listing()
        return out


def render_crls(rows: list[dict[str, Any]]) -> list[str]:
    """The text of ``ipsec listcrls`` (Libreswan's "List of CRLs" layout, roughly)."""
    lines = ["", "List of CRLs:", ""]
    for r in rows:
        where = r["url"] or r["source"]
        lines.append(f"Issuer: {r['issuer']}")
        lines.append(f"  source: {where}")
        if r.get("this_update"):
            lines.append(f"  updated: {r['this_update']}")
        lines.append(f"  nextupdate: {r['next_update'] or 'none'}")
        lines.append(f"  revoked certs: {len(r['revoked'])}")
        for s in r["revoked"]:
            lines.append(f"    serial: {s}")
        if r.get("error"):
            lines.append(f"  fetch error: {r['error']}")
    return lines
