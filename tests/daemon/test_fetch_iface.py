"""``config setup curl-iface=``: CRL and OCSP requests leave through the interface or
from the address it names (Libreswan hands it to curl's ``CURLOPT_INTERFACE``).

Two namespaces joined by two veth pairs: ``nic1`` (192.0.2.1 - .2) and ``nic2``
(198.51.100.1 - .2).  The server answers on 203.0.113.1, which the client reaches by
``nic1`` (metric 10) and by ``nic2`` (metric 20); it records each client's address.
By default a fetch leaves by ``nic1``; ``curl-iface=nic2`` (or ``if!nic2``, or the
address of ``nic2``, or ``host!`` it) makes it leave from ``nic2``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from plutoproc import NetNS, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from revocation_server import clients  # noqa: E402

from pypluto.config.parser import parse_config_text  # noqa: E402
from pypluto.config.values import parse_curl_iface  # noqa: E402

pytestmark = pytest.mark.netns
SERVER = Path(__file__).resolve().parent.parent / "revocation_server.py"
REPO_SRC = Path(__file__).resolve().parents[2] / "src"

FETCH = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from pypluto.daemon.fetch import http_fetch
    try:
        body = http_fetch(sys.argv[1], None, None, 3, sys.argv[2] or None)
        print("ok", len(body))
    except OSError as e:
        print("error", e)
""")


@pytest.fixture
def two_links(tmp_path: Path) -> Iterator[tuple[NetNS, Path]]:
    client, server = NetNS(), NetNS()
    srv = None
    try:
        for dev, c, s in (("nic1", "192.0.2.1", "192.0.2.2"),
                          ("nic2", "198.51.100.1", "198.51.100.2")):
            subprocess.run(["ip", "-n", client.name, "link", "add", dev, "type", "veth",
                            "peer", "name", dev, "netns", server.name], check=True)
            client.run("ip", "addr", "add", f"{c}/24", "dev", dev)
            server.run("ip", "addr", "add", f"{s}/24", "dev", dev)
            client.run("ip", "link", "set", dev, "up")
            server.run("ip", "link", "set", dev, "up")
        server.run("ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
        client.run("ip", "route", "add", "203.0.113.1/32", "via", "192.0.2.2", "dev", "nic1",
                   "metric", "10")
        client.run("ip", "route", "add", "203.0.113.1/32", "via", "198.51.100.2", "dev", "nic2",
                   "metric", "20")
        www = tmp_path / "www"
        www.mkdir()
        (www / "test.crl").write_bytes(b"x" * 100)
        srv = subprocess.Popen(["ip", "netns", "exec", server.name, sys.executable,
                                str(SERVER), str(www), "203.0.113.1", "8080"],
                               stdout=subprocess.PIPE, text=True)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        wait_for(lambda: client.run("ping", "-c", "1", "-W", "1", "203.0.113.1",
                                    check=False).returncode == 0, 10, "the server's address")
        yield client, www
    finally:
        if srv is not None:
            srv.kill()
            srv.wait()
        client.delete()
        server.delete()


def _fetch(client: NetNS, iface: str) -> str:
    return client.run(sys.executable, "-c", FETCH, "http://203.0.113.1:8080/crl/test.crl",
                      iface, str(REPO_SRC)).stdout.strip()


@pytest.mark.parametrize(("iface", "source"), [
    ("", "192.0.2.1"), ("nic2", "198.51.100.1"), ("if!nic2", "198.51.100.1"),
    ("198.51.100.1", "198.51.100.1"), ("host!198.51.100.1", "198.51.100.1"),
    ("nic1", "192.0.2.1")])
def test_the_fetch_leaves_where_curl_iface_says(two_links: tuple[NetNS, Path], iface: str,
                                                source: str) -> None:
    client, www = two_links
    assert _fetch(client, iface) == "ok 100"
    assert clients(www, "crl") == [source]


@pytest.mark.parametrize(("iface", "why"), [
    ("nosuch0", "curl-iface=nosuch0: No such device"),
    ("192.0.2.99", "curl-iface=192.0.2.99: Cannot assign requested address"),
    ("lo", ""),  # bound to lo there is no way to the server
])
def test_a_curl_iface_that_cannot_carry_the_fetch_fails_it(two_links: tuple[NetNS, Path],
                                                           iface: str, why: str) -> None:
    client, www = two_links
    out = _fetch(client, iface)
    assert out.startswith("error") and why in out, out
    assert clients(www, "crl") == []  # nothing reached the server another way


@pytest.mark.parametrize("bad", ["ifhost!eth0!192.0.2.1", "host!server.example",
                                 "eth0/1", "a" * 16])
def test_a_bad_curl_iface_is_refused_with_file_and_line(bad: str) -> None:
    with pytest.raises(ValueError, match="curl-iface="):
        parse_curl_iface(bad)
    cfg = parse_config_text(f"config setup\n\tcurl-iface={bad}\n", "/etc/ipsec.conf")
    msgs = [str(d) for d in cfg.diagnostics]
    assert any(m.startswith("/etc/ipsec.conf:2:") and "curl-iface=" in m for m in msgs), msgs
