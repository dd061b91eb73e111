"""A CRL server and OCSP responder for the revocation tests, on ``http.server``.

``GET /crl/<file>`` answers the file from the directory (DER CRLs); ``GET /ocsp/<b64>``
and ``POST /ocsp`` answer OCSP requests (RFC 6960, Appendix A.1) with a response
built by ``cryptography``'s ``OCSPResponseBuilder``, signed by the issuing CA (or by
a delegated responder: ``responder.crt``/``responder.key`` in the directory), the
status of each serial read from ``status.json`` on every request (``{"<serial>":
"good"|"revoked"|"unknown"}``, missing: good).  Every request is appended to
``requests.log``.  In-process (``serve(directory)`` on a thread) for engine tests, or
``python tests/revocation_server.py DIR ADDR PORT`` inside a network namespace.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509 import ocsp


def _load(d: Path, stem: str) -> tuple[x509.Certificate, object] | None:
    c, k = d / f"{stem}.crt", d / f"{stem}.key"
    if not c.exists():
        return None
    return (x509.load_pem_x509_certificate(c.read_bytes()),
            serialization.load_pem_private_key(k.read_bytes(), None))


def answer(d: Path, der: bytes) -> bytes:
    """The OCSP response for one DER request."""
    try:
        req = ocsp.load_der_ocsp_request(der)
    except ValueError:
        return ocsp.OCSPResponseBuilder.build_unsuccessful(
            ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(serialization.Encoding.DER)
    ca = _load(d, "issuer")
    assert ca is not None
    ca_cert, ca_key = ca
    signer = _load(d, "responder") or ca
    status = json.loads((d / "status.json").read_text()) if (d / "status.json").exists() \
        else {}
    st = status.get(str(req.serial_number), "good")
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    # a stand-in certificate carrying the serial (the builder wants a certificate)
    dummy = (x509.CertificateBuilder().subject_name(ca_cert.subject)
             .issuer_name(ca_cert.subject).public_key(ca_cert.public_key())
             .serial_number(req.serial_number).not_valid_before(now)
             .not_valid_after(now + datetime.timedelta(days=1))
             .sign(ca_key, None if isinstance(ca_key, ed25519.Ed25519PrivateKey)  # type: ignore[arg-type]
                   else hashes.SHA256()))
    cs = {"good": ocsp.OCSPCertStatus.GOOD, "revoked": ocsp.OCSPCertStatus.REVOKED,
          "unknown": ocsp.OCSPCertStatus.UNKNOWN}[st]
    b = ocsp.OCSPResponseBuilder().add_response(
        cert=dummy, issuer=ca_cert, algorithm=hashes.SHA1(), cert_status=cs,  # noqa: S303
        this_update=now - datetime.timedelta(minutes=1),
        next_update=now + datetime.timedelta(hours=1),
        revocation_time=now - datetime.timedelta(days=1) if st == "revoked" else None,
        revocation_reason=x509.ReasonFlags.key_compromise if st == "revoked" else None)
    scert, skey = signer
    b = b.responder_id(ocsp.OCSPResponderEncoding.HASH, scert)  # type: ignore[arg-type]
    if signer is not ca:
        b = b.certificates([scert])  # type: ignore[list-item]
    try:
        nonce = req.extensions.get_extension_for_class(x509.OCSPNonce).value
        b = b.add_extension(nonce, critical=False)
    except x509.ExtensionNotFound:
        pass
    resp = b.sign(skey, hashes.SHA256())  # type: ignore[arg-type]
    return resp.public_bytes(serialization.Encoding.DER)


def handler(d: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def _send(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _note(self) -> None:
            with open(d / "requests.log", "a") as f:
                f.write(f"{self.command} {self.path.split('/')[1]} {self.client_address[0]}\n")

        def do_GET(self) -> None:  # noqa: N802
            self._note()
            parts = self.path.split("/", 2)
            if len(parts) == 3 and parts[1] == "crl" and (d / parts[2]).is_file() \
                    and "/" not in parts[2]:
                self._send((d / parts[2]).read_bytes(), "application/pkix-crl")
            elif len(parts) == 3 and parts[1] == "ocsp":
                der = base64.b64decode(urllib.parse.unquote(parts[2]))
                self._send(answer(d, der), "application/ocsp-response")
            else:
                self.send_error(404)

        def do_POST(self) -> None:  # noqa: N802
            self._note()
            n = int(self.headers.get("Content-Length", "0"))
            der = self.rfile.read(n)
            self._send(answer(d, der), "application/ocsp-response")

    return H


def serve(d: Path, addr: str = "127.0.0.1", port: int = 0
          ) -> tuple[http.server.ThreadingHTTPServer, int]:
    """Serve ``d`` on a daemon thread; (server, port).  ``server.shutdown()`` stops it."""
    srv = http.server.ThreadingHTTPServer((addr, port), handler(d))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def served(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A fixture body: serve a new ``tmp_path/www``; yields (directory, port), then stops."""
    d = tmp_path / "www"
    d.mkdir()
    srv, port = serve(d)
    yield d, port
    srv.shutdown()
    srv.server_close()


def requests(d: Path, kind: str) -> int:
    """How many requests of ``kind`` ("crl" or "ocsp") the server got."""
    p = d / "requests.log"
    return sum(1 for line in p.read_text().splitlines() if line.split()[1] == kind) \
        if p.exists() else 0


def clients(d: Path, kind: str) -> list[str]:
    """The client address of each request of ``kind``, in order."""
    p = d / "requests.log"
    return [line.split()[2] for line in p.read_text().splitlines()
            if line.split()[1] == kind] if p.exists() else []


if __name__ == "__main__":
    srv = http.server.ThreadingHTTPServer((sys.argv[2], int(sys.argv[3])),
                                          handler(Path(sys.argv[1])))
    print("ready", flush=True)
    srv.serve_forever()
