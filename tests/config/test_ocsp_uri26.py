"""``ocsp-uri=`` is refused at load where every OCSP request would fail: pypluto fetches
over HTTP(S) only (daemon/fetch.py), so another scheme, a URL without a host or with a
port that is no number is ``file:line: ... is not supported`` / not a URL.  Before: it
loaded, and each certificate check then failed (with ocsp-strict=yes every peer)."""

from __future__ import annotations

import pytest

from pypluto.config.parser import parse_config_text


@pytest.mark.parametrize(("uri", "why"), [
    ("ldap://ocsp.example/", "a responder URL other than http:// or https:// is not "
                             "supported by pypluto"),
    ("file:///etc/ocsp", "is not supported by pypluto"),
    ("http:///ocsp", "the URL names no host"),
    ("http://ocsp.example:port/", "not a URL"),
])
def test_an_ocsp_uri_no_request_could_use_is_refused(uri: str, why: str) -> None:
    cfg = parse_config_text(f"config setup\n\tocsp-enable=yes\n\tocsp-uri={uri}\n", "f")
    errors = [str(d) for d in cfg.diagnostics if d.severity == "error"]
    assert any(e.startswith(f"f:3: ocsp-uri={uri}: ") and why in e for e in errors), errors


@pytest.mark.parametrize("uri", ["http://ocsp.example:8080/", "https://[2001:db8::1]/o",
                                 "HTTP://OCSP.EXAMPLE/"])
def test_http_and_https_responders_load(uri: str) -> None:
    cfg = parse_config_text(f"config setup\n\tocsp-uri={uri}\n", "f")
    assert not cfg.diagnostics and cfg.setup.ocsp_uri == uri
