"""Revocation state: CRLs fetched from CRL distribution points and the OCSP cache.

Libreswan's semantics (``ipsec.conf(5)`` ``config setup``):

* ``crlcheckinterval=`` (``--crlcheckinterval``): 0 (the default) disables CRL
  fetching.  Otherwise a peer certificate with an HTTP cRLDistributionPoint whose
  issuer has no current CRL (from the NSS db, ``<ipsecdir>/crls`` or fetched) makes
  pypluto fetch it, and every ``crlcheckinterval`` the fetched CRLs that have passed
  (or come near) their nextUpdate, or whose fetch failed, are fetched again.  Unlike
  Libreswan, which fetches in the background and lets the exchange go on, the
  IKE_AUTH exchange waits for the fetch (bounded by ``curl-timeout``), so the first
  connection of a revoked peer already fails.  ``ipsec fetchcrls`` (``whack
  --fetchcrls``) fetches every known distribution point at once.
* ``ocsp-enable=yes``: the peer's end-entity certificate is checked with OCSP (RFC
  6960) at ``ocsp-uri=`` if set (NSS's default responder), else at the responder of
  its authorityInfoAccess; ``ocsp-timeout=`` bounds a request; ``ocsp-method=get``
  (the default; POST when the request would make a URL over 255 octets, RFC 5019
  §5, and after a failed GET, as NSS does) or ``post``.  ``revoked`` always fails;
  an unreachable responder, a bad or ``unknown`` answer fail only with
  ``ocsp-strict=yes``.  Answers are cached by CertID, at most ``ocsp-cache-size``
  of them (0: none reused, the cache disabled), each for its nextUpdate clamped to
  [``ocsp-cache-min-age``, ``ocsp-cache-max-age``]; failures are not cached; ``ipsec
  purgeocsp`` empties the cache.  ``ocsp-trustname=`` names a certificate (NSS
  nickname or file) trusted to sign responses, as NSS's default responder needs.

No I/O here: :meth:`Revocation.plan` says what to fetch (pure), :meth:`Revocation.run`
does the fetching through the injected ``fetcher`` (the daemon's HTTP client, run on
a thread, never on the event loop) and returns results that :meth:`Revocation.apply`
stores; the engine asks :meth:`Revocation.ocsp_status` and :meth:`Revocation.crls`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography import x509

from pypluto.crypto import revocation as rv

Fetcher = Callable[[str, bytes | None, str | None, float], bytes]
CertID = tuple[bytes, bytes, int]


@dataclass
class RevocationPolicy:
    """The ``config setup`` revocation keywords with Libreswan's defaults."""

    crlcheckinterval: float = 0.0
    crl_timeout: float = 5.0  # curl-timeout=
    curl_iface: str = ""  # curl-iface=: CRL and OCSP requests leave through it
    ocsp_enable: bool = False
    ocsp_strict: bool = False
    ocsp_uri: str = ""
    ocsp_timeout: float = 2.0
    ocsp_trustname: str = ""
    ocsp_cache_size: int = 1000
    ocsp_cache_min_age: float = 3600.0
    ocsp_cache_max_age: float = 86400.0
    ocsp_method: str = "get"
    ocsp_nonce: bool = False


@dataclass
class CRLJob:
    urls: list[str]
    issuer: x509.Certificate


@dataclass
class OCSPJob:
    key: CertID
    url: str
    cert: x509.Certificate
    issuer: x509.Certificate
    nonce: bytes | None = None


Job = CRLJob | OCSPJob


@dataclass
class Fetched:
    """A CRL distribution point: the CRL last fetched from it, or why that failed."""

    url: str
    issuer: x509.Certificate
    crl: x509.CertificateRevocationList | None = None
    fetched_at: float = 0.0
    error: str = ""


@dataclass
class OCSPEntry:
    status: str  # good | revoked | unknown | error
    expires: float
    detail: str = ""
    url: str = ""
    fetched_at: float = 0.0


@dataclass
class Result:
    job: Job
    data: bytes | None = None
    url: str = ""
    error: str = ""


@dataclass
class Revocation:
    """Fetched CRLs and the OCSP cache (see the module doc)."""

    policy: RevocationPolicy = field(default_factory=RevocationPolicy)
    fetcher: Fetcher | None = None
    trusted: list[x509.Certificate] = field(default_factory=list)  # ocsp-trustname=
    fetched: dict[str, Fetched] = field(default_factory=dict)
    ocsp_cache: OrderedDict[CertID, OCSPEntry] = field(default_factory=OrderedDict)
    requests: int = 0  # OCSP requests sent
    crl_fetches: int = 0
    cache_hits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # ------------------------------------------------------------------ planning (pure)
    def plan(self, chain: Sequence[x509.Certificate],
             have_crl: Callable[[x509.Name], bool], now: float,
             rng: Callable[[int], bytes] = os.urandom) -> list[Job]:
        """What to fetch before ``chain`` (leaf first, anchor last) can be judged.

        ``have_crl(issuer)`` tells whether a current CRL from that issuer is loaded
        from elsewhere (the NSS db, files).
        """
        jobs: list[Job] = []
        p = self.policy
        for cert, issuer in zip(chain, chain[1:], strict=False):
            urls = rv.cdp_urls(cert)
            for u in urls:  # known for ipsec fetchcrls even when fetching is off
                self.fetched.setdefault(u, Fetched(u, issuer))
            if p.crlcheckinterval <= 0 or not urls or have_crl(issuer.subject):
                continue
            if any(self._current(self.fetched[u], now) for u in urls):
                continue
            jobs.append(CRLJob(urls, issuer))
        if p.ocsp_enable and len(chain) >= 2:
            leaf, issuer = chain[0], chain[1]
            key = rv.cert_id(leaf, issuer)
            e = self.ocsp_cache.get(key)
            # ocsp-cache-size=0: "the cache is disabled" (ipsec.conf(5)): every
            # authentication asks; the answer is kept only until it has been judged
            if e is not None and e.status != "error" and e.expires > now \
                    and p.ocsp_cache_size > 0:
                return jobs
            urls = [p.ocsp_uri] if p.ocsp_uri else rv.ocsp_urls(leaf)
            if urls:
                jobs.append(OCSPJob(key, urls[0], leaf, issuer,
                                    rng(16) if p.ocsp_nonce else None))
        return jobs

    def note(self, chain: Sequence[x509.Certificate]) -> None:
        """Remember the chain's distribution points (for ``ipsec fetchcrls``)."""
        for cert, issuer in zip(chain, chain[1:], strict=False):
            for u in rv.cdp_urls(cert):
                self.fetched.setdefault(u, Fetched(u, issuer))

    @staticmethod
    def _current(f: Fetched, now: float) -> bool:
        if f.crl is None:
            return False
        nxt = f.crl.next_update_utc
        return nxt is None or nxt.timestamp() >= now

    def due(self, now: float) -> list[Job]:
        """The periodic check (``crlcheckinterval``): CRLs that failed, are missing,
        or reach their nextUpdate before the next check."""
        horizon = now + max(self.policy.crlcheckinterval, 0.0)
        out: list[Job] = []
        for f in list(self.fetched.values()):
            nxt = f.crl.next_update_utc if f.crl is not None else None
            if f.crl is None or f.error or (nxt is not None and nxt.timestamp() <= horizon):
                out.append(CRLJob([f.url], f.issuer))
        return out

    def all_crl_jobs(self) -> list[Job]:
        """``ipsec fetchcrls``: every distribution point seen."""
        return [CRLJob([f.url], f.issuer) for f in list(self.fetched.values())]

    # ------------------------------------------------------------------ fetching (thread)
    def run(self, jobs: Sequence[Job]) -> list[Result]:
        """Fetch ``jobs`` (blocking: call on a thread).  Never raises."""
        out: list[Result] = []
        for j in jobs:
            if isinstance(j, CRLJob):
                out.append(self._run_crl(j))
            else:
                out.append(self._run_ocsp(j))
        return out

    def _get(self, url: str, body: bytes | None, ctype: str | None, timeout: float) -> bytes:
        if self.fetcher is None:
            raise OSError("no fetcher configured")
        return self.fetcher(url, body, ctype, timeout)

    def _run_crl(self, j: CRLJob) -> Result:
        errs = []
        for u in j.urls:
            try:
                return Result(j, self._get(u, None, None, self.policy.crl_timeout), u)
            except Exception as e:  # noqa: BLE001 - reported in the result
                errs.append(f"{rv.show_url(u)}: {_text(e)}")
        return Result(j, None, j.urls[0] if j.urls else "", "; ".join(errs))

    def _run_ocsp(self, j: OCSPJob) -> Result:
        try:
            req = rv.ocsp_request(j.cert, j.issuer, j.nonce)
            get = rv.get_url(j.url, req)
            data = None
            if self.policy.ocsp_method == "get" and len(get) <= 255:
                # ocsp-method=get: "post is attempted only as fallback in case of
                # failure" (ipsec.conf(5), NSS's behaviour)
                with contextlib.suppress(Exception):
                    data = self._get(get, None, None, self.policy.ocsp_timeout)
            if data is None:
                data = self._get(j.url, req, "application/ocsp-request",
                                 self.policy.ocsp_timeout)
            return Result(j, data, j.url)
        except Exception as e:  # noqa: BLE001 - reported in the result
            return Result(j, None, j.url, _text(e))

    # ------------------------------------------------------------------ results (loop)
    def apply(self, results: Sequence[Result], now: float, crl_strict: bool = False
              ) -> list[tuple[str, str]]:
        """Store fetched results; the (level, line) to log.  A failure that will refuse
        the peer (strict) is logged at debug level: the refusal's one line names it."""
        logs: list[tuple[str, str]] = []
        crl_bad = "debug" if crl_strict else "warning"
        ocsp_bad = "debug" if self.policy.ocsp_strict else "warning"
        when = datetime.datetime.fromtimestamp(now, datetime.UTC)
        for r in results:
            if isinstance(r.job, CRLJob):
                self.crl_fetches += 1
                for u in r.job.urls:
                    f = self.fetched.setdefault(u, Fetched(u, r.job.issuer))
                    show = rv.show_url(u)
                    if u != r.url and r.data is not None:
                        continue
                    if r.data is None:
                        f.error = f"fetching the CRL failed: {r.error}"
                        logs.append((crl_bad, f"CRL distribution point {show}: {f.error}"))
                        continue
                    try:
                        crl = rv.crl_for(r.data, r.job.issuer)
                        this = crl.last_update_utc
                        if this > when + rv.CLOCK_SKEW:
                            raise ValueError(f"CRL thisUpdate {this:%Y-%m-%d %H:%M:%S} UTC "
                                             "is in the future")
                        held = f.crl.last_update_utc if f.crl is not None else None
                        if held is not None and this < held:
                            # an older CRL (a replay, a stale mirror) would drop the
                            # revocations the held one lists: keep it (NSS refuses an
                            # older CRL too)
                            logs.append(("warning", f"CRL from {show} ignored: its "
                                         f"thisUpdate {this:%Y-%m-%d %H:%M:%S} UTC is older "
                                         f"than the one held ({held:%Y-%m-%d %H:%M:%S} UTC)"))
                            continue
                        f.crl = crl
                        f.error = ""
                        f.fetched_at = now
                        n = len(list(f.crl))
                        logs.append(("info", f"fetched CRL from {show}: issuer "
                                     f"'{f.crl.issuer.rfc4514_string()}', {n} revoked"))
                    except ValueError as e:  # its text may quote the CRL's (any) issuer
                        f.error = _text(e)
                        logs.append((crl_bad, f"CRL from {show} rejected: {f.error}"))
            else:
                self.requests += 1
                j = r.job
                url = rv.show_url(r.url)
                if r.data is None:
                    self._put(j.key, OCSPEntry("error", now, f"OCSP request to {url} "
                                               f"failed: {r.error}", url, now))
                    logs.append((ocsp_bad, f"OCSP request to {url} failed: {r.error}"))
                    continue
                try:
                    ans = rv.ocsp_check(r.data, j.cert, j.issuer, when,
                                        self.trusted, j.nonce)
                except rv.OCSPError as e:
                    self._put(j.key, OCSPEntry("error", now, f"{e} ({url})", url, now))
                    logs.append((ocsp_bad, f"OCSP response from {url} rejected: {e}"))
                    continue
                p = self.policy
                nxt = ans.next_update.timestamp() if ans.next_update else now
                expires = min(max(nxt, now + p.ocsp_cache_min_age), now + p.ocsp_cache_max_age)
                detail = ""
                if ans.status == "revoked" and ans.revoked_at is not None:
                    detail = f"since {ans.revoked_at:%Y-%m-%d %H:%M:%S} UTC" + \
                        (f", {ans.reason}" if ans.reason else "")
                self._put(j.key, OCSPEntry(ans.status, expires, detail, url, now))
                logs.append(("info", f"OCSP: certificate serial {j.cert.serial_number:#x} is "
                             f"{ans.status} (responder {url})"))
        return logs

    def _put(self, key: CertID, e: OCSPEntry) -> None:
        with self._lock:
            self.ocsp_cache[key] = e
            self.ocsp_cache.move_to_end(key)
            while len(self.ocsp_cache) > max(self.policy.ocsp_cache_size, 1):
                self.ocsp_cache.popitem(last=False)

    # ------------------------------------------------------------------ judging (pure)
    def crls(self) -> list[x509.CertificateRevocationList]:
        return [f.crl for f in list(self.fetched.values()) if f.crl is not None]

    def crl_error(self, issuer: x509.Name) -> str:
        """Why no CRL of ``issuer`` could be fetched (for crl-strict's log line)."""
        errs = [f.error for f in self.fetched.values() if f.issuer.subject == issuer and f.error]
        return errs[0] if errs else ""

    def ocsp_status(self, chain: Sequence[x509.Certificate], now: float) -> str | None:
        """Why OCSP refuses the chain's leaf, or None (see the module doc)."""
        p = self.policy
        if not p.ocsp_enable or len(chain) < 2:
            return None
        leaf, issuer = chain[0], chain[1]
        key = rv.cert_id(leaf, issuer)
        e = self.ocsp_cache.get(key)
        who = f"certificate serial {leaf.serial_number:#x} '{leaf.subject.rfc4514_string()}'"
        if e is None:
            if not p.ocsp_uri and not rv.ocsp_urls(leaf):
                return f"{who} names no OCSP responder (ocsp-strict=yes)" \
                    if p.ocsp_strict else None
            return f"no OCSP answer for {who} (ocsp-strict=yes)" if p.ocsp_strict else None
        with self._lock:
            if key in self.ocsp_cache:
                self.ocsp_cache.move_to_end(key)
        if e.status == "revoked":
            return f"{who} is revoked (OCSP, {e.url}" + (f", {e.detail}" if e.detail else "") \
                + ")"
        if e.status == "good":
            return None
        if e.status == "unknown":
            return f"OCSP responder {e.url} does not know {who} (ocsp-strict=yes)" \
                if p.ocsp_strict else None
        return f"{e.detail} (ocsp-strict=yes)" if p.ocsp_strict else None

    def hit(self, chain: Sequence[x509.Certificate], now: float) -> bool:
        """Is the leaf's OCSP answer in the cache (counts a hit)?"""
        if len(chain) < 2:
            return False
        e = self.ocsp_cache.get(rv.cert_id(chain[0], chain[1]))
        ok = e is not None and e.status != "error" and e.expires > now \
            and self.policy.ocsp_cache_size > 0
        if ok:
            self.cache_hits += 1
        return ok

    def listing(self) -> list[dict[str, object]]:
        """The fetched CRLs for ``ipsec listcrls``: one dict per distribution point."""
        out: list[dict[str, object]] = []
        for f in list(self.fetched.values()):
            c = f.crl
            out.append({
                "source": "fetched", "url": rv.show_url(f.url),
                "issuer": (c.issuer if c is not None else f.issuer.subject).rfc4514_string(),
                "this_update": c.last_update_utc.isoformat() if c is not None else None,
                "next_update": c.next_update_utc.isoformat()
                if c is not None and c.next_update_utc is not None else None,
                "revoked": sorted(f"{e.serial_number:#x}" for e in c) if c is not None else [],
                "fetched_at": f.fetched_at or None, "error": f.error})
        return out

    def purge_ocsp(self) -> int:
        with self._lock:
            n = len(self.ocsp_cache)
            self.ocsp_cache.clear()
        return n


def _text(e: BaseException) -> str:
    s = str(e) or type(e).__name__
    return s if len(s) < 200 else s[:200] + "..."
