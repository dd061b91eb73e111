"""journald fields (daemon/journal.py): PLUTO_CONN, PLUTO_SERIAL, PLUTO_PEER (issue 19)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest
from plutoproc import NetNS, Pluto, root_conftest, wait_for
from test_daemon_pair import CONF, pair  # noqa: F401  (fixture)
from testsupport import require

from pypluto.daemon.journal import decode, encode
from pypluto.daemon.logger import PlutoLogger

_root = root_conftest()


def _server(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(5)
    return s


def test_encode_decode_round_trip_with_newlines() -> None:
    f = {"MESSAGE": "one\ntwo", "PLUTO_CONN": "a=b", "PRIORITY": "4"}
    raw = encode(f)
    assert b"MESSAGE\n" in raw and b"PLUTO_CONN=a=b\n" in raw
    assert decode(raw) == f
    with pytest.raises(ValueError):
        encode({"bad-name": "x"})


def test_syslog_lines_go_to_the_journal_with_fields(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    srv = _server(sock)
    log = PlutoLogger(journal_socket=str(sock))
    try:
        assert log.destination == "journal"
        log.log("established IKE SA; authenticated peer", conn="west-east", serial=3,
                remote="192.0.2.2:500")
        got = decode(srv.recv(65536))
        assert got["MESSAGE"] == '"west-east" #3: established IKE SA; authenticated peer'
        assert got["PLUTO_CONN"] == "west-east" and got["PLUTO_SERIAL"] == "3"
        assert got["PLUTO_PEER"] == "192.0.2.2:500"
        assert got["SYSLOG_IDENTIFIER"] == "pluto" and got["SYSLOG_FACILITY"] == "10"
        assert got["SYSLOG_PID"] == str(os.getpid()) and got["PRIORITY"] == "4"
        # a peer-chosen string cannot add a field or a line
        log.log("x", conn="evil\nPLUTO_SERIAL=99", serial=4)
        got = decode(srv.recv(65536))
        assert got["PLUTO_SERIAL"] == "4" and "\n" not in got["PLUTO_CONN"]
        assert "\n" not in got["MESSAGE"]
        log.log("bad thing", level="error")
        got = decode(srv.recv(65536))
        assert got["PRIORITY"] == "3" and "PLUTO_CONN" not in got
    finally:
        log.close()
        srv.close()


def test_no_address_in_the_fields_with_log_no_ip(tmp_path: Path) -> None:
    sock = tmp_path / "socket"
    srv = _server(sock)
    log = PlutoLogger(journal_socket=str(sock), logip=False)
    try:
        log.log("packet", conn="c", serial=1, remote="192.0.2.2:500")
        got = decode(srv.recv(65536))
        assert "PLUTO_PEER" not in got and "192.0.2.2" not in got["MESSAGE"]
    finally:
        log.close()
        srv.close()


def test_without_journald_pluto_uses_syslog(tmp_path: Path) -> None:
    log = PlutoLogger(journal_socket=str(tmp_path / "absent"))
    try:
        assert log.destination == "syslog"
        log.log("a line", conn="c", serial=1)  # no exception, goes to syslog(3)
    finally:
        log.close()


class _JournaledPluto(Pluto):
    """pluto with its own /run/systemd (a private mount namespace): journald is our socket."""

    def __init__(self, ns: NetNS, tmp: Path, name: str, run_systemd: Path) -> None:
        super().__init__(ns, tmp, name)
        self.run_systemd = run_systemd

    def argv(self, *args: str) -> list[str]:
        inner = super().argv(*args)[4:]  # without "ip netns exec NS"
        return ["ip", "netns", "exec", self.ns.name, "unshare", "-m", "sh", "-c",
                f'mount --bind "{self.run_systemd}" /run/systemd && exec "$@"', "sh", *inner]


@pytest.mark.netns
def test_daemon_under_systemd_writes_fields_per_sa(pair, tmp_path: Path) -> None:  # noqa: F811
    """A pypluto pair; west logs as under systemd (no --logfile): its journal entries
    carry the conn, the SA serial and the peer."""
    require(_root.is_root(), "root for network namespaces")
    require(Path("/run/systemd").is_dir(), "/run/systemd to bind over")
    start, w_ns, e_ns = pair
    start("east", e_ns, "add", "--use-none")
    run_systemd = tmp_path / "run-systemd"
    (run_systemd / "journal").mkdir(parents=True)
    srv = _server(run_systemd / "journal" / "socket")
    conf = tmp_path / "west-journal.conf"
    conf.write_text(CONF.format(auto="add"))
    west = _JournaledPluto(w_ns, tmp_path, "west-j", run_systemd)
    entries: list[dict[str, str]] = []
    stop = threading.Event()

    def reader() -> None:  # as journald: read every datagram as it comes
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                entries.append(decode(srv.recv(65536)))
            except TimeoutError:
                continue

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        west.start("--nofork", "--use-none", "--config", str(conf), "--secretsfile",
                   str(tmp_path / "ipsec.secrets"))
        west.wait_ready()
        r = west.whack("--name", "west-east", "--initiate")
        assert r.returncode == 0, r.stdout + west.log()
        wait_for(lambda: any("established Child SA" in e["MESSAGE"] for e in list(entries)),
                 15, "an 'established Child SA' journal entry")
        ike = next(e for e in entries if "established IKE SA" in e["MESSAGE"])
        child = next(e for e in entries if "established Child SA" in e["MESSAGE"])
        for e in (ike, child):
            assert e["PLUTO_CONN"] == "west-east"
            assert e["PLUTO_PEER"] == "192.0.2.2:500"
            assert e["SYSLOG_IDENTIFIER"] == "pluto"
            assert e["MESSAGE"].startswith(f'"west-east" #{e["PLUTO_SERIAL"]}: ')
        assert ike["PLUTO_SERIAL"] != child["PLUTO_SERIAL"]
        # nothing went to stderr: the journal took the lines
        assert "established" not in west.err.read_text()
    finally:
        west.stop()
        stop.set()
        t.join()
        srv.close()
