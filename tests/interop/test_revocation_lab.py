"""Revocation between two pypluto daemons in the lab's namespaces (issue 14): a CRL
server and an OCSP responder (tests/revocation_server.py, ``cryptography``'s OCSP
builder behind ``http.server``) run in the west namespace on 192.0.2.1:8080; the
east daemon (responder) fetches from there, on a worker thread.

* a CRL fetched from west's cRLDistributionPoint names west: AUTHENTICATION_FAILED
  and one log line naming the reason; ``ipsec listcrls --json`` shows it;
  ``crlcheckinterval`` fetches it again before its nextUpdate; ``whack --fetchcrls``
  fetches at once (and a CRL without west lets it in);
* OCSP: good -> up, and a second IKE SA is answered from the cache (no request);
  ``purgeocsp`` empties it; revoked -> refused; an unreachable responder refuses with
  ``ocsp-strict=yes`` and lets the peer in without.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import AuthorityInformationAccessOID
from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab
from peers import Pypluto, pypluto_bin
from pki import PKI, Issued, make_crl
from revocation_server import clients, requests

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]
PORT = 8080
BASE = f"http://{WEST_OUTER}:{PORT}"
SERVER = Path(__file__).resolve().parent.parent / "revocation_server.py"


def _exts(base: str) -> list[x509.ExtensionType]:
    return [x509.CRLDistributionPoints([x509.DistributionPoint(
                [x509.UniformResourceIdentifier(f"{base}/crl/inter.crl")], None, None, None)]),
            x509.AuthorityInformationAccess([x509.AccessDescription(
                AuthorityInformationAccessOID.OCSP,
                x509.UniformResourceIdentifier(f"{base}/ocsp"))])]


def _files(d: Path, me: Issued, pki: PKI) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    crt, _ = me.write(d, me.cn)
    crt.write_bytes(me.cert_pem() + pki.inter.cert.public_bytes(serialization.Encoding.PEM))
    (d / "root.pem").write_bytes(pki.root.cert_pem())
    return crt


def _conf(me: Issued, peer: Issued, crt: Path, left: str, right: str, lsub: str, rsub: str,
          setup: str = "") -> str:
    return f"""\
config setup
\tplutodebug=none
{setup}
conn west-east
\tauthby=ecdsa
\tleft={left}
\tleftid="{me.dn}"
\tleftcert={crt}
\tleftsendcert=always
\tleftsubnet={lsub}
\tright={right}
\trightid="{peer.dn}"
\trightca={crt.parent / 'root.pem'}
\trightsubnet={rsub}
\tauto=add
"""


def _publish(d: Path, pki: PKI, revoked: list[Issued], status: dict[str, str],
             next_update: datetime.datetime | None = None) -> None:
    kw = {"next_update": next_update} if next_update else {}
    (d / "inter.crl").write_bytes(make_crl(pki.inter, revoked, **kw).public_bytes(  # type: ignore[arg-type]
        serialization.Encoding.DER))
    pki.inter.write(d, "issuer")
    (d / "status.json").write_text(json.dumps(status))


def _pair(lab: Lab, east_setup: str, west_base: str = BASE
          ) -> tuple[Pypluto, Pypluto, PKI, Issued, Path]:
    pki = PKI.build()
    west = pki.ee("west", extensions=_exts(west_base))
    east = pki.ee("east")
    www = lab.workdir / "www"
    www.mkdir()
    _publish(www, pki, [], {})
    lab.spawn(lab.west, [sys.executable, SERVER, www, WEST_OUTER, PORT], "www.log",
              name="revocation-server")
    lab.wait_for(lambda: "ready" in (lab.workdir / "www.log").read_text(), 20, "the server")
    wcrt = _files(lab.workdir / "west-certs", west, pki)
    ecrt = _files(lab.workdir / "east-certs", east, pki)
    us_e = Pypluto(lab, lab.east, "pypluto-east")
    us_e.start(_conf(east, west, ecrt, EAST_OUTER, WEST_OUTER, EAST_SUBNET, WEST_SUBNET,
                     east_setup))
    us_w = Pypluto(lab, lab.west, "pypluto-west")
    us_w.start(_conf(west, east, wcrt, WEST_OUTER, EAST_OUTER, WEST_SUBNET, EAST_SUBNET))
    return us_w, us_e, pki, west, www


def _lines(p: Pypluto, text: str) -> list[str]:
    return [ln for ln in p.log.read_text(errors="replace").splitlines() if text in ln]


def test_crlcheckinterval_refetches_and_fetchcrls(lab: Lab) -> None:
    us_w, us_e, pki, west, www = _pair(lab, "\tcrlcheckinterval=2\n\tcurl-timeout=3\n")
    # the CRL west's certificate points to names west
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=4)
    _publish(www, pki, [west], {}, next_update=soon)
    us_w.initiate()
    lab.wait_for(lambda: _lines(us_e, "is revoked"), 20, "east's refusal")
    lines = _lines(us_e, "is revoked")
    assert len(lines) == 1 and "AUTHENTICATION_FAILED" in lines[0], lines
    assert "CN=west" in lines[0]
    assert not us_w.ike_established() and not us_e.ike_established()
    assert requests(www, "crl") == 1
    r = lab.run(lab.east, [pypluto_bin("ipsec"), "listcrls", "--rundir", us_e.run_dir,
                           "--json"])
    rows = json.loads(r.stdout)["crls"]
    assert [(x["url"], x["revoked"]) for x in rows] == [
        (f"{BASE}/crl/inter.crl", [f"{west.cert.serial_number:#x}"])]
    text = us_e.whack("--listcrls", check=True).stdout
    assert "List of CRLs:" in text and f"{BASE}/crl/inter.crl" in text
    # crlcheckinterval=2: the CRL reaches its nextUpdate, so it is fetched again
    lab.wait_for(lambda: requests(www, "crl") >= 2, 20, "the periodic CRL refresh")
    # a new CRL without west: ipsec fetchcrls (whack --fetchcrls) takes it at once
    _publish(www, pki, [], {})
    n = requests(www, "crl")
    out = us_e.whack("--fetchcrls", check=True)
    assert requests(www, "crl") > n and "fetched CRL from" in out.stdout
    assert "established" in us_w.initiate() or us_w.child_established()
    lab.wait_for(us_e.child_established, 20, "the Child SA on east")


@pytest.mark.parametrize("case", ["good", "revoked", "strict-unreachable",
                                  "nonstrict-unreachable"])
def test_ocsp_between_pypluto_daemons(lab: Lab, case: str) -> None:
    strict = "no" if case == "nonstrict-unreachable" else "yes"
    base = f"http://{WEST_OUTER}:{PORT + 1}" if "unreachable" in case else BASE
    us_w, us_e, pki, west, www = _pair(
        lab, f"\tocsp-enable=yes\n\tocsp-strict={strict}\n\tocsp-timeout=3\n", base)
    _publish(www, pki, [], {str(west.cert.serial_number):
                            "revoked" if case == "revoked" else "good"})
    out = us_w.initiate()
    if case in ("good", "nonstrict-unreachable"):
        assert us_w.child_established(), out
        lab.wait_for(us_e.child_established, 20, "the Child SA on east")
        if case == "nonstrict-unreachable":
            assert len(_lines(us_e, "OCSP request to")) == 1
            return
        assert requests(www, "ocsp") == 1 and len(_lines(us_e, "is good")) == 1
        # a second IKE SA: the answer comes from the cache, no request is made
        us_w.down()
        lab.wait_for(lambda: not us_e.ike_established(), 20, "the IKE SA gone on east")
        us_w.initiate()
        assert us_w.child_established()
        assert requests(www, "ocsp") == 1
        purged = us_e.whack("--purgeocsp", check=True).stdout
        assert "purged 1 OCSP cache entry" in purged
        us_w.down()
        lab.wait_for(lambda: not us_e.ike_established(), 20, "the IKE SA gone on east")
        us_w.initiate()
        assert us_w.child_established() and requests(www, "ocsp") == 2
        return
    want = "is revoked (OCSP" if case == "revoked" else "ocsp-strict=yes"
    lab.wait_for(lambda: _lines(us_e, want), 20, "east's refusal")
    lines = _lines(us_e, want)
    assert len(lines) == 1 and "AUTHENTICATION_FAILED" in lines[0], lines
    assert not us_w.ike_established()
    if case == "strict-unreachable":
        assert re.search(r"OCSP request to http://192\.0\.2\.1:8081/ocsp failed", lines[0])


def test_curl_iface_chooses_where_the_fetches_come_from(lab: Lab) -> None:
    """``config setup curl-iface=ADDRESS`` (Libreswan: curl's ``CURLOPT_INTERFACE``):
    east's CRL fetch and OCSP request come from that address of east's, not from the
    one the route would pick (192.0.2.2), and both are used (the CRL is logged,
    ``ocsp-strict=yes`` lets west in on the good answer only)."""
    lab.run(lab.east, ["ip", "addr", "add", "192.0.2.12/24", "dev", "east"])
    us_w, us_e, pki, west, www = _pair(
        lab, "\tcurl-iface=192.0.2.12\n\tcrlcheckinterval=600\n"
             "\tocsp-enable=yes\n"
             "\tocsp-strict=yes\n\tcurl-timeout=3\n\tocsp-timeout=3\n")
    _publish(www, pki, [], {str(west.cert.serial_number): "good"})
    us_w.initiate()
    lab.wait_for(us_e.child_established, 20, "the Child SA on east")
    assert clients(www, "crl") == ["192.0.2.12"]
    assert clients(www, "ocsp") == ["192.0.2.12"]
    assert _lines(us_e, "fetched CRL from") and _lines(us_e, "is good")
