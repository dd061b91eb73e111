"""HTTP for revocation data: CRLs from distribution points and OCSP requests (RFC 6960
Appendix A.1), with ``urllib`` from the standard library.

Blocking by design: the daemon calls :func:`http_fetch` only on a worker thread
(``Compute(io=True)`` jobs and the ``crlcheckinterval`` refresh), never on the event
loop.  Bounded: ``timeout`` per request, at most ``MAX_BODY`` octets read, http and
https only, redirects not followed.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

MAX_BODY = 16 * 1024 * 1024  # a large CRL still fits; anything bigger is refused


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a: object, **kw: object) -> None:  # type: ignore[override]
        return None


_OPENER = urllib.request.build_opener(_NoRedirect, urllib.request.ProxyHandler({}))


def http_fetch(url: str, body: bytes | None, content_type: str | None,
               timeout: float) -> bytes:
    """GET ``url`` (or POST ``body``); the response body.  Raises OSError on failure."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise OSError(f"unsupported URL scheme {scheme!r}")
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    if content_type:
        req.add_header("Content-Type", content_type)
    req.add_header("User-Agent", "pypluto")
    try:
        with _OPENER.open(req, timeout=max(timeout, 0.1)) as resp:  # noqa: S310 - scheme checked
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            data = resp.read(MAX_BODY + 1)
    except urllib.error.HTTPError as e:
        raise OSError(f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None
    except TimeoutError:
        raise OSError(f"timed out after {timeout:g}s") from None
    if len(data) > MAX_BODY:
        raise OSError(f"response over {MAX_BODY} octets")
    return data
