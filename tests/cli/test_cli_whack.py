"""whack against a real pluto: Libreswan's options, output formats and exit codes."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
from plutoproc import PY, sh

from pypluto.control.protocol import PROTOCOL_NAME, VERSION, encode_frame

pytestmark = pytest.mark.netns


def test_status_family(daemon):
    r = daemon.whack("--status")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    assert lines[0] == "using kernel interface: none"
    assert "interface lo 127.0.0.1:UDP/500" in lines and \
        "interface lo 127.0.0.1:UDP/4500 (NAT)" in lines
    assert '"c-add": 127.0.0.1[@west]...192.0.2.77[@east]; unrouted; my_ip=unset; ' \
           "their_ip=unset;" in lines
    assert "Total IPsec connections: loaded 3, active 0" in lines
    r = daemon.whack("--briefstatus")
    assert r.returncode == 0 and r.stdout.splitlines() == [  # Libreswan 5.2's three lines
        "State Information: DDoS cookies not required, Accepting new IKE connections",
        "IKE SAs: total(0), half-open(0), open(0), authenticated(0), anonymous(0)",
        "IPsec SAs: total(0), authenticated(0), anonymous(0)",
    ]
    r = daemon.whack("--globalstatus")
    values = dict(ln.split("=", 1) for ln in r.stdout.splitlines())
    assert values["current.states.all"] == "0" and values["current.connections.loaded"] == "3"
    r = daemon.whack("--connectionstatus")
    assert r.returncode == 0 and '"c-route":' in r.stdout and "IKE SAs" not in r.stdout
    for cmd in ("--showstates", "--trafficstatus"):
        r = daemon.whack(cmd)
        assert r.returncode == 0 and r.stdout == ""


@pytest.mark.parametrize("cmd, key", [
    ("--status", "pluto"), ("--briefstatus", "summary"), ("--globalstatus", "values"),
    ("--showstates", "ike_sas"), ("--trafficstatus", "child_sas"),
    ("--connectionstatus", "connections"),
])
def test_json(daemon, cmd, key):
    r = daemon.whack(cmd, "--json")
    assert r.returncode == 0
    data = json.loads(r.stdout)
    assert data["schema"] == "pypluto-status/1" and data["command"] == cmd[2:]
    assert key in data


def test_named_commands_and_exit_codes(daemon):
    r = daemon.whack("--name", "nosuch", "--initiate")
    assert r.returncode == 21 and 'no connection or alias named "nosuch"' in r.stdout
    for cmd in ("--down", "--delete", "--rekey-ike", "--rekey-child", "--route",
                "--unroute"):
        assert daemon.whack("--name", "nosuch", cmd).returncode == 21
    r = daemon.whack("--initiate")
    assert r.returncode == 33 and "requires --name" in r.stderr
    r = daemon.whack("--name", "c-anyone", "--initiate")
    assert r.returncode == 29 and "without knowing peer IP address" in r.stdout
    # --route installs the trap (issue 16), --unroute removes it; a %any peer cannot be routed
    assert daemon.whack("--name", "c-route", "--route").returncode == 0
    assert "routed-ondemand" in daemon.whack("--status").stdout
    assert daemon.whack("--name", "c-route", "--unroute").returncode == 0
    assert "routed-ondemand" not in daemon.whack("--status").stdout
    r = daemon.whack("--name", "c-anyone", "--route")
    assert r.returncode == 25 and "without a peer address" in r.stdout
    assert daemon.whack("--name", "c-add", "--down").returncode == 0
    assert daemon.whack("--name", "c-add", "--rekey-ike").returncode == 0
    assert daemon.whack("--name", "c-add", "--rekey-ipsec").returncode == 0


def test_listen_unlisten_initiate_deaf(daemon):
    assert daemon.whack("--unlisten").returncode == 0
    r = daemon.whack("--status")
    assert "interface lo" not in r.stdout
    r = daemon.whack("--name", "c-add", "--initiate")
    assert r.returncode == 24 and "need --listen" in r.stdout
    r = daemon.whack("--listen")
    assert r.returncode == 0
    assert "adding UDP interface lo 127.0.0.1:500" in r.stdout
    assert "listening for IKE messages" in r.stdout and "loading secrets from" in r.stdout
    assert "interface lo 127.0.0.1:UDP/500" in daemon.whack("--status").stdout


def test_secrets_commands(daemon):
    r = daemon.whack("--listpsks")
    assert r.returncode == 0 and "PSK @west @east" in r.stdout
    assert "cli-test-secret" not in r.stdout
    secrets = daemon.conf.parent / "ipsec.secrets"
    secrets.write_text('@west @east : PSK "cli-test-secret-psk-0123456789abcdef"\n'
                       '@west @north : PSK "another-secret-for-north-0123456789"\n')
    assert daemon.whack("--rereadsecrets").returncode == 0
    r = daemon.whack("--listpsks")
    assert "PSK @west @north" in r.stdout and "another-secret" not in r.stdout
    assert "another-secret" not in (daemon.dir / "log").read_text()


def test_debug(daemon):
    assert daemon.whack("--debug", "base").returncode == 0
    r = daemon.whack("--debug", "help")
    assert r.returncode == 0 and "cpu-usage" in r.stdout and "private" in r.stdout
    r = daemon.whack("--debug", "nonsense")
    assert r.returncode == 33 and "nonsense" in r.stdout
    assert daemon.whack("--no-debug", "base").returncode == 0
    assert "debugging: base" in (daemon.dir / "log").read_text()


def test_whack_usage_errors(daemon, tmp_path):
    r = sh(PY, "-m", "pypluto.cli.whack", "--rundir", str(daemon.rundir), check=False)
    assert r.returncode == 33 and "no action specified" in r.stderr
    r = sh(PY, "-m", "pypluto.cli.whack", "--frob", check=False)
    assert r.returncode == 33 and "unrecognized option '--frob'" in r.stderr
    r = sh(PY, "-m", "pypluto.cli.whack", "--listen", "--json", check=False)
    assert r.returncode == 33 and "--json" in r.stderr
    r = sh(PY, "-m", "pypluto.cli.whack", "--ctlsocket", str(tmp_path / "none.ctl"),
           "--status", check=False)
    assert r.returncode == 33 and "Pluto is not running (no " in r.stderr
    r = sh(PY, "-m", "pypluto.cli.whack", "--help", check=False)
    assert r.returncode == 0 and "--trafficstatus" in r.stdout
    r = sh(PY, "-m", "pypluto.cli.whack", "--version", check=False)
    assert r.returncode == 0 and "pypluto" in r.stdout


def test_other_protocol_version_gets_clear_error(daemon):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(daemon.ctl)
    s.sendall(encode_frame({"proto": PROTOCOL_NAME, "version": VERSION + 1, "type": "request",
                            "command": "status", "args": {}}))
    n = struct.unpack("!I", s.recv(4))[0]
    body = b""
    while len(body) < n:
        body += s.recv(n - len(body))
    s.close()
    reply = json.loads(body)
    assert reply["type"] == "result" and reply["rc"] == 50
    assert f"peer speaks version {VERSION + 1}" in reply["error"]
    # garbage (e.g. Libreswan's binary whack message) gets an answer, not a crash
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(daemon.ctl)
    s.sendall(struct.pack("!I", 8) + b"\x01\x02\x03\x04\x05\x06\x07\x08")
    assert b"malformed control message" in s.recv(4096)
    s.close()
    assert daemon.ready()


def test_whack_against_newer_pluto(tmp_path):
    """whack talking to a pluto of another protocol version says so, exit 33."""
    path = str(tmp_path / "fake.ctl")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def serve() -> None:
        c, _ = srv.accept()
        c.recv(65536)
        c.sendall(encode_frame({"proto": PROTOCOL_NAME, "version": 99, "type": "result",
                                "rc": 0}))
        c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    r = sh(PY, "-m", "pypluto.cli.whack", "--ctlsocket", path, "--status", check=False)
    t.join(10)
    srv.close()
    assert r.returncode == 33
    assert "version mismatch" in r.stderr and "peer speaks version 99" in r.stderr
