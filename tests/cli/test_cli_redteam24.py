"""Red-team pass on the operator interface: ``whack`` and ``ipsec`` against one running
pluto (tests/cli/conftest.py's module daemon), for what the other CLI tests leave out:
each verb on an unknown name, shunt-only and not-loaded conns, missing option values,
hostile names on every verb (C1 controls, bidi marks, quotes, UTF-8), many clients at
once against the real daemon, a hung half-sent request, an amplifying request, and the
JSON status against the text one."""

from __future__ import annotations

import json
import socket
import struct
import threading
from pathlib import Path

import pytest
from plutoproc import Pluto, run_main, wait_for

from pypluto.control.client import ControlError, call
from pypluto.control.protocol import (
    PROTOCOL_NAME,
    RC_BADWHACKMESSAGE,
    RC_INITSHUNT,
    RC_SUCCESS,
    RC_UNKNOWN_NAME,
    RC_WHACK_PROBLEM,
    VERSION,
)

pytestmark = pytest.mark.netns

EXTRA = """\
conn %default
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@west

conn rt-pass
\tright=192.0.2.90
\tleftsubnet=127.0.0.1/32
\trightsubnet=192.0.2.90/32
\ttype=passthrough
\tauthby=never
\tauto=ignore

conn rt-drop
\tright=192.0.2.91
\tleftsubnet=127.0.0.1/32
\trightsubnet=192.0.2.91/32
\ttype=drop
\tauthby=never
\tauto=ignore

conn tünnel-ü
\tright=192.0.2.92
\trightid=@east
\tauto=ignore
"""

HOSTILE = [
    "\x1b[2J\x1b]0;pwn\x07",  # ESC: clear screen, set the terminal title
    "a\nb",  # a second, forged line
    "cr\rover",  # carriage return: overwrite the line
    "\x9b31mred",  # C1 CSI (one code point) that some terminals obey
    "\u202eevil",  # bidi override: shows the rest reversed
    'q"uo\'te',  # quotes
    "nul\x00byte",
    "\udcff",  # lone surrogate (an undecodable argv byte)
    "x" * 70_000,  # long
]


def whack(daemon: Pluto, *args: str):  # noqa: ANN201
    return daemon.whack(*args)


def ipsec(*args: str):  # noqa: ANN201
    return run_main("pypluto.cli.ipsec", list(args))


def visible(text: str) -> bool:
    """Nothing a terminal would obey: every character printable, or a line end."""
    return all(ch == "\n" or ch.isprintable() for ch in text)


@pytest.fixture(scope="module")
def extra_conf(daemon: Pluto, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("rt") / "extra.conf"
    path.write_text(EXTRA)
    return str(path)


def test_every_verb_on_an_unknown_name_is_21(daemon: Pluto, extra_conf: str) -> None:
    """Libreswan's RC_UNKNOWN_NAME for every verb, with the name in the message; whack
    and ipsec agree."""
    for cmd in ("--initiate", "--down", "--terminate", "--delete", "--route", "--ondemand",
                "--unroute", "--rekey-ike", "--rekey-child", "--rekey-ipsec",
                "--trafficstatus", "--connectionstatus", "--showstates"):
        r = whack(daemon, "--name", "nosuch", cmd)
        assert r.returncode == RC_UNKNOWN_NAME, (cmd, r)
        assert r.stdout == 'no connection or alias named "nosuch"\n', (cmd, r.stdout)
    r = whack(daemon, "--name", "nosuch", "--debug", "base")
    assert r.returncode == RC_UNKNOWN_NAME and 'no connection named "nosuch"' in r.stdout
    rd = str(daemon.rundir)
    for verb in ("up", "down", "delete", "route", "unroute", "trafficstatus",
                 "connectionstatus", "showstates", "initiate", "terminate"):
        r = ipsec(verb, "--rundir", rd, "nosuch")
        assert r.returncode == RC_UNKNOWN_NAME, (verb, r)
        assert 'no connection or alias named "nosuch"' in r.stdout, (verb, r.stdout)
    for verb in ("add", "replace", "ondemand", "start"):
        r = ipsec(verb, "--rundir", rd, "--config", extra_conf, "nosuch")
        assert r.returncode == RC_UNKNOWN_NAME, (verb, r)
        assert f'conn "nosuch" not found in "{extra_conf}"' in r.stdout, (verb, r.stdout)
    assert daemon.ready()


def test_up_of_a_conn_that_is_not_loaded_or_shunt_only(daemon: Pluto, extra_conf: str) -> None:
    """auto=ignore: not loaded, so unknown (21) until added; type=passthrough|drop: loaded,
    but Libreswan's RC_INITSHUNT (30) "cannot initiate a shunt-only connection"."""
    rd = str(daemon.rundir)
    assert ipsec("up", "--rundir", rd, "c-later").returncode == RC_UNKNOWN_NAME
    try:
        for name in ("rt-pass", "rt-drop"):
            assert ipsec("up", "--rundir", rd, name).returncode == RC_UNKNOWN_NAME
            r = ipsec("add", "--rundir", rd, "--config", extra_conf, name)
            assert r.returncode == 0, r
            r = ipsec("up", "--rundir", rd, name)
            assert r.returncode == RC_INITSHUNT, (name, r)
            assert f'"{name}": cannot initiate a shunt-only connection' in r.stdout
            r = whack(daemon, "--name", name, "--initiate", "--asynchronous")
            assert r.returncode == RC_INITSHUNT
            # a second add replaces it (Libreswan 5.2), the exit status stays 0
            r = ipsec("add", "--rundir", rd, "--config", extra_conf, name)
            assert r.returncode == 0 and f'"{name}": replacing connection' in r.stdout
        assert not any('"rt-' in ln for ln in whack(daemon, "--showstates").stdout.splitlines())
    finally:
        for name in ("rt-pass", "rt-drop"):
            ipsec("delete", "--rundir", rd, name)
    assert '"rt-pass"' not in whack(daemon, "--status").stdout


def test_down_and_rekey_of_a_conn_that_is_not_up(daemon: Pluto) -> None:
    """Not an error (0), as in Libreswan; nothing is created by it."""
    before = whack(daemon, "--briefstatus").stdout
    r = ipsec("down", "--rundir", str(daemon.rundir), "c-add")
    assert r.returncode == 0 and r.stdout == '"c-add": terminating SAs using this connection\n'
    r = whack(daemon, "--name", "c-add", "--down")
    assert r.returncode == 0
    assert whack(daemon, "--briefstatus").stdout == before


def test_utf8_conn_name_works_and_is_shown_as_is(daemon: Pluto, extra_conf: str) -> None:
    """A printable UTF-8 name is a name like any other: shown unescaped."""
    rd = str(daemon.rundir)
    r = ipsec("add", "--rundir", rd, "--config", extra_conf, "tünnel-ü")
    try:
        assert r.returncode == 0 and '"tünnel-ü": added IKEv2 connection' in r.stdout, r
        assert '"tünnel-ü": 127.0.0.1[@west]...192.0.2.92[@east]' in \
            whack(daemon, "--connectionstatus").stdout
        r = whack(daemon, "--name", "tünnel-ü", "--connectionstatus", "--json")
        assert [c["name"] for c in json.loads(r.stdout)["connections"]] == ["tünnel-ü"]
        assert whack(daemon, "--name", "tünnel-ü", "--down").returncode == 0
    finally:
        assert ipsec("delete", "--rundir", rd, "tünnel-ü").returncode == 0
    assert '"tünnel-ü"' not in whack(daemon, "--status").stdout


def test_deletestate_and_other_unimplemented_options_are_refused(daemon: Pluto) -> None:
    """``--deletestate N`` (numeric or not, or without its N), ``--impair``,
    ``--ddos-busy``: refused by whack (33) before anything reaches pluto."""
    for argv in (["--deletestate", "1"], ["--deletestate", "abc"], ["--deletestate"],
                 ["--impair", "none"], ["--ddos-busy"], ["--ddos-mode", "busy"],
                 ["--deletestate=7"]):
        r = whack(daemon, *argv)
        assert r.returncode == RC_WHACK_PROBLEM, (argv, r)
        assert r.stdout == "" and r.stderr.count("\n") == 1, (argv, r)
        assert "Traceback" not in r.stderr


@pytest.mark.parametrize("argv", [
    ["--status", "--ctlsocket"], ["--status", "--rundir"], ["--status", "--ctlbase"],
    ["--debug"], ["--no-debug"], ["--redirect-to"], ["--redirect-to", "192.0.2.1", "--peer-ip"],
    ["--name", "c-add", "--initiate", "--timeout"], ["--name"], ["--name", "--initiate"],
    ["--timeout", "--name", "c-add", "--initiate"],
])
def test_whack_option_without_its_value(daemon: Pluto, argv: list[str]) -> None:
    """One line naming the option, 33; never the next option taken as the value."""
    r = whack(daemon, *argv)
    assert r.returncode == RC_WHACK_PROBLEM, r
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "expected one argument" in r.stderr


@pytest.mark.parametrize("argv", [
    ["up"], ["down"], ["delete"], ["route"], ["unroute"], ["add"], ["replace"],
    ["status", "--rundir"], ["up", "c-add", "--ctlsocket"], ["add", "c-add", "--config"],
])
def test_ipsec_command_without_its_value(daemon: Pluto, argv: list[str]) -> None:
    """A missing name: 33 (whack's usage error); a missing value of a common option
    (--rundir, --ctlsocket, --config, shared with the NSS commands): 1, as those.
    Libreswan's ipsec script exits 2 for both; pypluto keeps whack's codes."""
    value = any(a.startswith("--") for a in argv)
    r = ipsec(*argv) if value else ipsec(*argv, "--rundir", str(daemon.rundir))
    assert r.returncode == (1 if value else RC_WHACK_PROBLEM), r
    if value:
        assert f"{argv[-1]} needs a value" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_hostile_names_on_every_verb(daemon: Pluto, extra_conf: str) -> None:
    """Every verb given a hostile name: an answer on visible lines (escaped), the right
    exit status, no crash; pluto keeps answering."""
    rd = str(daemon.rundir)
    for name in HOSTILE:
        for cmd in (["--initiate"], ["--down"], ["--delete"], ["--route"], ["--unroute"],
                    ["--rekey-ike"], ["--rekey-child"], ["--trafficstatus"],
                    ["--connectionstatus"], ["--showstates"], ["--debug", "base"],
                    ["--trafficstatus", "--json"]):
            r = whack(daemon, "--name", name, *cmd)
            assert r.returncode == RC_UNKNOWN_NAME, (name[:20], cmd, r.returncode, r.stderr)
            assert visible(r.stdout) and visible(r.stderr), (name[:20], cmd, r)
            assert r.stdout.count("\n") == 1 and len(r.stdout) < 4096
        r = whack(daemon, "--redirect-to", "192.0.2.9", "--name", name)
        assert r.returncode == RC_UNKNOWN_NAME and visible(r.stdout), (name[:20], r)
        for verb in ("up", "down", "delete", "route", "unroute", "trafficstatus"):
            r = ipsec(verb, "--rundir", rd, name)
            assert r.returncode == RC_UNKNOWN_NAME, (verb, name[:20], r)
            assert visible(r.stdout) and visible(r.stderr), (verb, name[:20], r)
        for verb in ("add", "replace", "ondemand"):
            r = ipsec(verb, "--rundir", rd, "--config", extra_conf, name)
            assert r.returncode == RC_UNKNOWN_NAME, (verb, name[:20], r)
            assert visible(r.stdout) and visible(r.stderr), (verb, name[:20], r)
    assert daemon.ready()
    assert whack(daemon, "--connectionstatus").stdout.splitlines()[-1].startswith(
        "Total IPsec connections: loaded 3,")


def test_hostile_arguments_are_not_echoed_raw_by_the_clients(daemon: Pluto) -> None:
    """whack's and ipsec's own complaints about an argument echo it escaped: an unknown
    command, option or stray argument holding ESC or a newline is one visible line."""
    evil = "\x1b]0;pwn\x07\nforged"
    for r in (whack(daemon, evil), whack(daemon, "--" + evil), ipsec(evil),
              ipsec("up", "--rundir", str(daemon.rundir), "--" + evil),
              whack(daemon, "--name", "c-add", "--initiate", "--timeout", evil),
              whack(daemon, "--ctlsocket", f"/nonexistent/{evil}", "--status")):
        assert r.returncode != 0, r
        assert visible(r.stderr) and r.stderr.count("\n") == 1, r
        assert "\\x1b" in r.stderr


def test_many_whack_clients_at_once(daemon: Pluto) -> None:
    """50 threads doing status, briefstatus, trafficstatus and up/down at once against
    the real daemon: every one gets its answer, pluto stays up and consistent."""
    ctl = daemon.ctl
    results: list[tuple[str, int]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        try:
            for j in range(4):
                kind = (i + j) % 4
                if kind == 0:
                    r = call(ctl, "status", {}, timeout=60)
                elif kind == 1:
                    r = call(ctl, "briefstatus", {"json": True}, timeout=60)
                elif kind == 2:
                    r = call(ctl, "initiate", {"name": "c-add", "async": True}, timeout=60)
                else:
                    r = call(ctl, "down", {"name": "c-add"}, timeout=60)
                with lock:
                    results.append((("status", "brief", "up", "down")[kind], r.rc))
        except (ControlError, OSError) as e:
            with lock:
                errors.append(f"{i}: {e}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(results) == 200
    assert all(rc == RC_SUCCESS for _k, rc in results), results
    assert daemon.ready()
    assert whack(daemon, "--name", "c-add", "--down").returncode == 0
    wait_for(lambda: whack(daemon, "--showstates").stdout == "", 10, "no states left")
    assert daemon.proc is not None and daemon.proc.poll() is None


def _raw(ctl: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(ctl)
    return s


def _answer(s: socket.socket) -> dict:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    frames = []
    while data:
        (n,) = struct.unpack("!I", data[:4])
        frames.append(json.loads(data[4:4 + n]))
        data = data[4 + n:]
    return frames[-1]


def test_a_hung_half_request_does_not_block_others(daemon: Pluto) -> None:
    """Clients that send half a frame and hang (header only, or part of the body):
    whack commands from others are answered meanwhile."""
    hung = []
    try:
        for partial in (b"\x00\x00", struct.pack("!I", 100) + b'{"proto":'):
            s = _raw(daemon.ctl)
            s.sendall(partial)
            hung.append(s)
        for _ in range(5):
            r = whack(daemon, "--briefstatus")
            assert r.returncode == 0 and r.stdout.startswith("State Information: ")
        assert whack(daemon, "--name", "c-add", "--down").returncode == 0
    finally:
        for s in hung:
            s.close()
    assert daemon.ready()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # the peak resident size
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_huge_requests_are_refused_without_memory_blow_up(daemon: Pluto) -> None:
    """A declared length beyond the cap is refused unread; a request under the cap whose
    JSON is millions of tiny containers (``[[],[],...]``: 3 bytes each, ~60 bytes each
    once parsed) is refused before it is parsed, not turned into ~400 MB."""
    pid = int(daemon.pidfile.read_text())
    before = _rss_kb(pid)
    s = _raw(daemon.ctl)
    s.sendall(struct.pack("!I", 200 * 1024 * 1024))
    reply = _answer(s)
    s.close()
    assert reply["rc"] == RC_BADWHACKMESSAGE and "too large" in reply["error"]
    n = 4 * 1024 * 1024
    head = json.dumps({"proto": PROTOCOL_NAME, "version": VERSION, "type": "request",
                       "command": "ping", "args": {"x": []}}).encode()
    body = head.replace(b"[]", b"[" + b"[]," * n + b"[]]")
    s = _raw(daemon.ctl)
    s.sendall(struct.pack("!I", len(body)) + body)
    reply = _answer(s)
    s.close()
    assert reply["rc"] == RC_BADWHACKMESSAGE, reply
    assert "too many" in reply["error"], reply
    grew_mb = (_rss_kb(pid) - before) / 1024
    assert grew_mb < 100, f"pluto grew {grew_mb:.0f} MB"
    assert daemon.ready()
    # the largest real request, an ``ipsec add`` of many long names, still goes through
    r = call(daemon.ctl, "add", {"names": ["n" * 100] * 20_000, "config": "/nonexistent"},
             timeout=60)
    assert r.rc != RC_BADWHACKMESSAGE


def test_json_status_states_the_same_facts_as_the_text(daemon: Pluto) -> None:
    """With a half-open IKE SA in flight: --briefstatus and its JSON give the same
    totals, --connectionstatus and its JSON the same conns, --showstates and its JSON
    the same SA serials."""
    assert whack(daemon, "--name", "c-add", "--initiate", "--asynchronous").returncode == 0
    try:
        wait_for(lambda: '"c-add"' in whack(daemon, "--showstates").stdout, 10, "the state")
        text = whack(daemon, "--briefstatus").stdout
        data = json.loads(whack(daemon, "--briefstatus", "--json").stdout)
        flat = json.dumps(data["summary"])
        assert "Total IPsec connections: loaded 3, active 0" in \
            whack(daemon, "--connectionstatus").stdout
        assert "IKE SAs: total(1), half-open(1), open(0), authenticated(0), anonymous(0)" \
            in text, text
        summ = data["summary"]
        assert summ["connections"]["loaded"] == 3 and summ["connections"]["active"] == 0, flat
        assert {k: summ["ike_sas"][k] for k in ("total", "half_open", "open",
                                                 "authenticated", "anonymous")} == \
            {"total": 1, "half_open": 1, "open": 0, "authenticated": 0, "anonymous": 0}, flat
        values = json.loads(whack(daemon, "--globalstatus", "--json").stdout)["values"]
        text_values = dict(ln.split("=", 1) for ln in
                           whack(daemon, "--globalstatus").stdout.splitlines())
        assert {k: str(v) for k, v in values.items()} == text_values
        assert values["current.states.iketype.halfopen"] == 1
        names = [ln.split('"')[1] for ln in whack(daemon, "--connectionstatus").stdout
                 .splitlines() if ln.startswith('"') and '":' in ln]
        jnames = [c["name"] for c in
                  json.loads(whack(daemon, "--connectionstatus", "--json").stdout)
                  ["connections"]]
        assert sorted(set(names)) == sorted(jnames), (names, jnames)
        states = whack(daemon, "--showstates").stdout
        jstates = json.loads(whack(daemon, "--showstates", "--json").stdout)["ike_sas"]
        assert len(jstates) == 1
        serial = jstates[0]["serial"]
        assert f'#{serial}: "c-add":500 IKE_SA_INIT_I (sent IKE_SA_INIT request)' in states, (serial, states)
    finally:
        whack(daemon, "--name", "c-add", "--down")


@pytest.mark.parametrize("how", ["down", "delete", "replace"])
def test_pending_initiate_is_answered_when_another_whack_ends_it(daemon: Pluto,
                                                                 how: str) -> None:
    """``ipsec up c-add`` waits (the peer never answers); another operator runs ``ipsec
    down|delete|add c-add``: the waiting whack is answered at once with 56 and why.
    Before: it waited for its whole time limit (65 s by default; 10 s here), then said
    "no outcome" (51)."""
    rd, conf = str(daemon.rundir), str(daemon.conf)
    got: dict[str, object] = {}
    lines: list[str] = []

    def up() -> None:
        r = call(daemon.ctl, "initiate", {"name": "c-add", "timeout": 10},
                 on_output=lines.append, timeout=60)
        got["rc"], got["error"] = r.rc, r.error

    t = threading.Thread(target=up)
    t.start()
    try:
        wait_for(lambda: any("initiating IKEv2 connection" in ln for ln in lines), 10,
                 "the initiate to start")
        verb = {"down": "down", "delete": "delete", "replace": "add"}[how]
        r = ipsec(verb, "--rundir", rd, "--config", conf, "c-add") if how == "replace" \
            else ipsec(verb, "--rundir", rd, "c-add")
        assert r.returncode == 0, r
    finally:
        t.join(60)
        if how == "delete":
            assert ipsec("add", "--rundir", rd, "--config", conf, "c-add").returncode == 0
        whack(daemon, "--name", "c-add", "--down")
    assert got.get("rc") == 56, (got, lines)
    assert any('"c-add": initiate abandoned: the connection was' in ln for ln in lines), lines
    assert daemon.ready()


def test_add_from_a_fifo_or_device_is_refused_without_freezing_pluto(daemon: Pluto,
                                                                     tmp_path: Path) -> None:
    """pluto reads ``ipsec add --config FILE`` itself (Libreswan's addconn reads it in
    the client): FILE a FIFO (or /dev/zero) used to block pluto's event loop, IKE and
    every whack included, until someone wrote to the FIFO.  Now refused (33) at once."""
    import contextlib
    import os

    fifo = tmp_path / "fifo.conf"
    os.mkfifo(fifo)
    try:
        for path in (str(fifo), "/dev/zero", str(tmp_path)):
            try:
                r = call(daemon.ctl, "add", {"config": path, "names": ["c-add"]}, timeout=10)
            except ControlError as e:
                raise AssertionError(f"{path}: {e}") from None
            assert r.rc == RC_WHACK_PROBLEM, (path, r)
            assert r.error == f'add: "{path}" is not a regular file', (path, r)
            assert daemon.ready()
    finally:  # a pluto blocked reading the FIFO: let it go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    r = ipsec("add", "--rundir", str(daemon.rundir), "--config", str(fifo), "c-add")
    assert r.returncode == RC_WHACK_PROBLEM and "is not a regular file" in r.stdout
    assert '"c-add":' in whack(daemon, "--connectionstatus").stdout  # untouched


@pytest.mark.parametrize("argv", [
    ["whack", "--name", "", "--trafficstatus"], ["whack", "--name", "", "--initiate"],
    ["whack", "--name=", "--connectionstatus"], ["whack", "--redirect-to", "192.0.2.9",
                                                 "--name", ""],
    ["ipsec", "trafficstatus", ""], ["ipsec", "up", ""], ["ipsec", "down", ""],
])
def test_an_empty_name_is_refused_as_empty(daemon: Pluto, argv: list[str]) -> None:
    """Before: ``--name "" --trafficstatus`` reached pluto and came back 50 "--trafficstatus
    does not take --name" (it does), ``--initiate`` said "requires --name" (it had one)."""
    rd = str(daemon.rundir)
    r = whack(daemon, *argv[1:]) if argv[0] == "whack" else ipsec(*argv[1:], "--rundir", rd)
    assert r.returncode == RC_WHACK_PROBLEM, r
    assert r.stderr == "whack: --name needs a connection name, not an empty string\n", r
    assert r.stdout == ""
