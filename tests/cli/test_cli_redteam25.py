"""Red-team pass 25 on the operator's command line: ``pluto`` start-up (lock file,
control socket, option values), ``whack`` with no pluto, ``ipsec`` option handling, and
``whack --shutdown`` / ``ipsec auto --up`` / ``ipsec up --asynchronous`` against real
daemons.

What the other CLI tests (test_pluto_option_audit, test_daemon_args, test_cli_*) leave
out: a control socket a live pluto still answers on (its lock file removed, or naming
some other process), a lock file with a PID no pid_t holds, Libreswan's words when no
pluto runs and when pluto shuts down, ``ipsec`` / ``whack`` options given twice or
empty, ``ipsec stop`` of a pluto that does not stop, abbreviations getopt_long would
take, and option values int() or ip_address() take but strtol() / Libreswan's address
parser do not.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from plutoproc import PY, NetNS, Pluto, run_main, sh, wait_for

from pypluto.control.client import _connect_failed
from pypluto.control.protocol import encode_frame, output_frame, read_frame_blocking, result_frame
from pypluto.daemon import lockfile
from pypluto.daemon.options import EXIT_LOCKED, OptionError, parse_args


def whack(*args: str):  # noqa: ANN201
    return run_main("pypluto.cli.whack", list(args))


def ipsec(*args: str):  # noqa: ANN201
    return run_main("pypluto.cli.ipsec", list(args))


def _listener(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(4)
    return s


# ------------------------------------------------------- lock file and control socket


def test_lock_file_with_a_pid_no_pid_t_holds_is_stale(tmp_path: Path) -> None:
    """Before: os.kill() raised OverflowError, and pluto died with a traceback at
    start-up on a lock file holding "99999999999999999999999" (garbage after a crash)."""
    pidfile = tmp_path / "pluto.pid"
    for text in ("99999999999999999999999", str(1 << 63), str(1 << 40)):
        pidfile.write_text(text + "\n")
        state = lockfile.examine(str(pidfile))
        assert state.stale and "is not a running pluto" in state.reason, (text, state)
    assert not lockfile.pid_is_pluto(1 << 70)
    st = lockfile.remove_stale(str(pidfile), str(tmp_path / "pluto.ctl"))
    assert st.stale and not pidfile.exists()


def test_stale_lock_but_a_live_control_socket_is_not_removed(tmp_path: Path) -> None:
    """A lock file naming no pluto is stale, but a control socket some process still
    accepts connections on belongs to a running pluto (its lock file was overwritten):
    before, both were unlinked and the new pluto took the socket over."""
    pidfile, ctl = tmp_path / "pluto.pid", tmp_path / "pluto.ctl"
    pidfile.write_text("1\n")  # init: no pluto
    live = _listener(ctl)
    try:
        assert lockfile.ctl_in_use(str(ctl))
        st = lockfile.remove_stale(str(pidfile), str(ctl))
        assert not st.stale and "answers: another pluto is using it" in st.reason
        assert pidfile.exists() and ctl.exists()
    finally:
        live.close()
    # nobody listening any more (a crash leftover): stale, both removed
    assert not lockfile.ctl_in_use(str(ctl))
    st = lockfile.remove_stale(str(pidfile), str(ctl))
    assert st.stale and not pidfile.exists() and not ctl.exists()
    # not a socket at all, or nothing there
    ctl.write_text("stale")
    assert not lockfile.ctl_in_use(str(ctl))
    assert not lockfile.ctl_in_use(str(tmp_path / "missing"))


def test_a_busy_control_socket_counts_as_in_use(tmp_path: Path) -> None:
    """A pluto too busy to accept (its backlog full: EAGAIN) still owns its socket."""
    ctl = tmp_path / "pluto.ctl"
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(ctl))
    busy.listen(0)
    queued = []
    try:
        for _ in range(4):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(str(ctl))
            except BlockingIOError:
                c.close()
                break
            queued.append(c)
        assert lockfile.ctl_in_use(str(ctl))
    finally:
        for c in queued:
            c.close()
        busy.close()


def test_open_ctl_refuses_a_socket_someone_answers_on(tmp_path: Path) -> None:
    from pypluto.cli import pluto

    ctl = tmp_path / "pluto.ctl"
    live = _listener(ctl)
    try:
        with pytest.raises(FileExistsError):
            pluto._open_ctl(str(ctl))
        # still the old listener's: a client reaches it
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(str(ctl))
        c.close()
    finally:
        live.close()
    s = pluto._open_ctl(str(ctl))  # the leftover of a dead one is replaced
    s.close()


# ------------------------------------------------------------------- option values


@pytest.mark.parametrize("args, needle", [
    (["--listen", "fe80::1%lo"], 'is not an IP address'),
    (["--listen", "::1%1"], 'is not an IP address'),
    (["--nhelpers", "1_0"], '"1_0" is not a number'),
    (["--keep-alive", "\u0663"], "is not a number"),  # ARABIC-INDIC DIGIT THREE
    (["--seedbits", "\uff18"], "is not a number"),  # FULLWIDTH DIGIT EIGHT
    (["--ikeport", "5_00"], "is not a number"),
])
def test_values_python_takes_but_libreswan_does_not(args, needle) -> None:  # noqa: ANN001
    """Before: ip_address() took the scope ("fe80::1%lo" then matched no local address:
    pluto started listening nowhere) and int() took "1_0" as 10 and non-ASCII digits."""
    with pytest.raises(OptionError, match=re.escape(needle)):
        parse_args(args)


def test_number_forms_that_stay_accepted() -> None:
    for args, attr, want in ((["--nhelpers", "0x10"], "nhelpers", 16),
                             (["--nhelpers", "-1"], "nhelpers", -1),
                             (["--keep-alive", "+30"], "keep_alive", 30),
                             (["--listen", "::1"], "listen", "::1")):
        kind, o = parse_args(args)
        assert getattr(o, attr) == want, args


@pytest.mark.parametrize("prog, argv, line", [
    ("pluto", ["--nofor"],
     "pluto: unrecognized option '--nofor' (options are not abbreviated: --nofork?)"),
    ("pluto", ["--rund=/x"],
     "pluto: unrecognized option '--rund=/x' (options are not abbreviated: --rundir?)"),
    ("pluto", ["--frob"], "pluto: unrecognized option '--frob'"),
    ("whack", ["--trafficstat"], "whack: unrecognized option '--trafficstat' (options are "
     "not abbreviated: --trafficstatus?); try --help"),
    ("whack", ["--stat"], "whack: unrecognized option '--stat' (options are not "
     "abbreviated: --statestatus or --status?); try --help"),
])
def test_abbreviations_getopt_long_would_take_are_refused_with_a_hint(
        prog: str, argv: list[str], line: str) -> None:
    """Libreswan's pluto and whack (getopt_long) take an unambiguous abbreviation; pypluto
    refuses it (exit 1 / 33, nothing started or sent) and names the option meant."""
    head = ["--rundir", "/dev/null/ppd"] if prog == "pluto" else []
    r = run_main(f"pypluto.cli.{prog}", [*head, *argv])
    assert r.returncode == (1 if prog == "pluto" else 33)
    assert r.stderr.splitlines()[0] == line


def test_config_that_is_a_directory_names_the_file(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """Before: "pluto: [Errno 21] Is a directory", naming no file."""
    from pypluto.cli import pluto

    assert pluto.main(["--rundir", "/dev/null/x", "--config", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f'pluto: --config "{tmp_path}": Is a directory'


# ----------------------------------------------------------------- whack, no pluto


def test_whack_without_pluto_says_so_as_libreswan(tmp_path: Path) -> None:
    """Libreswan 5.2 (lib/libwhack/send.c, e.g. testing/pluto/addresspool-*/nic.console.txt):
    ``Pluto is not running (no "/run/pluto/pluto.ctl"): No such file or directory
    (errno 2)`` and exit 33 (RC_WHACK_PROBLEM)."""
    missing = tmp_path / "run"
    r = whack("--rundir", str(missing), "--status")
    assert r.returncode == 33 and r.stdout == ""
    assert r.stderr == (f'whack: Pluto is not running (no "{missing}/pluto.ctl"): '
                        "No such file or directory (errno 2)\n")
    r = ipsec("add", "--ctlsocket", str(tmp_path / "foo"), "c")
    assert r.returncode == 33
    assert r.stderr == (f'ipsec add: Pluto is not running (no "{tmp_path}/foo"): '
                        "No such file or directory (errno 2)\n")
    for verb in ("status", "briefstatus", "showstates", "trafficstatus",
                 "connectionstatus", "traffic", "rereadsecrets", "rereadall"):
        r = ipsec(verb, "--rundir", str(missing))
        assert r.returncode == 33 and "Pluto is not running (no " in r.stderr, (verb, r)
    # a socket file nobody listens on (pluto killed): connect's own error
    dead = tmp_path / "dead.ctl"
    _listener(dead).close()
    r = whack("--ctlsocket", str(dead), "--status")
    assert r.returncode == 33 and "(111 Connection refused); is pluto running?" in r.stderr
    # a path no sockaddr_un holds (108 bytes): said, not a traceback
    long = str(tmp_path / ("x" * 120))
    r = whack("--ctlsocket", long, "--status")
    assert r.returncode == 33 and "AF_UNIX path too long" in r.stderr


def test_no_right_to_the_socket_is_libreswans_words() -> None:
    """EACCES (a non-root whack): Libreswan's "no right to communicate with pluto"."""
    e = OSError(errno.EACCES, os.strerror(errno.EACCES))
    assert _connect_failed("/run/pluto/pluto.ctl", e) == (
        'no right to communicate with pluto (access("/run/pluto/pluto.ctl")): '
        "Permission denied (errno 13)")


# ------------------------------------------------------------------ ipsec options


@pytest.mark.parametrize("argv, why", [
    (["status", "--rundir", "/a", "--rundir", "/b"], "duplicated option --rundir"),
    (["up", "--config=/a", "--config", "/b", "c"], "duplicated option --config"),
    (["trafficstatus", "--ctlsocket", "/a", "--ctlsocket=/b"], "duplicated option --ctlsocket"),
    (["auto", "--up", "--rundir", "/a", "--rundir", "/b", "c"], "duplicated option --rundir"),
    (["--rundir", "/a", "down", "--rundir", "/b", "c"], "duplicated option --rundir"),
])
def test_ipsec_common_option_given_twice_is_refused(argv: list[str], why: str) -> None:
    """Before: the last one silently won (whack itself refuses a duplicated option)."""
    r = ipsec(*argv)
    assert r.returncode != 0 and why in r.stderr, r
    assert "Pluto is not running" not in r.stderr and "is pluto running" not in r.stderr


@pytest.mark.parametrize("argv", [
    ["whack", "--rundir", "", "--status"],
    ["whack", "--ctlsocket=", "--rundir", "/nonexistent", "--status"],
    ["ipsec", "add", "--rundir=", "c"],
    ["ipsec", "add", "--ctlsocket", "", "c"],
    ["ipsec", "up", "--config", "", "c"],
    ["ipsec", "auto", "--up", "--rundir", "", "c"],
    ["ipsec", "trafficstatus", "--rundir="],
])
def test_empty_socket_or_rundir_is_refused(argv: list[str]) -> None:
    """Before: ``--rundir ""`` and ``--ctlsocket ""`` quietly meant the default
    (/run/pluto/pluto.ctl), another pluto than the one asked for."""
    r = run_main(f"pypluto.cli.{argv[0]}", argv[1:])
    assert r.returncode != 0 and "needs a value, not an empty string" in r.stderr, r
    assert "/run/pluto" not in r.stderr and "/nonexistent" not in r.stderr


@pytest.mark.parametrize("argv, why", [
    (["--name", "a", "--initiate", "--timeout", "0", "--timeout", "5"],
     "duplicated option --timeout"),
    (["--name", "a", "--down", "--timeout", "0"], "--timeout only applies to --initiate"),
    (["--name", "a", "--initiate", "--asynchronous", "--timeout=0"],
     "conflicts with --asynchronous"),
])
def test_whack_timeout_zero_is_an_option_given(argv: list[str], why: str) -> None:
    """Before: --timeout 0 was the default value, so a second --timeout silently won and
    ``--down --timeout 0`` / ``--asynchronous --timeout 0`` passed unnoticed."""
    r = whack("--rundir", "/nonexistent", *argv)
    assert r.returncode == 33 and why in r.stderr, r
    assert "Pluto is not running" not in r.stderr


@pytest.mark.parametrize("verb", ["start", "restart"])
def test_ipsec_start_refuses_ctlsocket(verb: str, tmp_path: Path) -> None:
    """pluto has no --ctlsocket (its socket is RUNDIR/pluto.ctl): before, ``ipsec start
    --ctlsocket X`` started pluto, waited on X for 30 s, said it failed and left that
    pluto running."""
    run = tmp_path / "run"
    r = ipsec(verb, "--rundir", str(run), "--ctlsocket", str(tmp_path / "x.ctl"),
              "--config", str(tmp_path / "none.conf"))
    assert r.returncode == 33 and "--ctlsocket does not apply" in r.stderr, r
    assert not run.exists()


@pytest.mark.parametrize("verb", ["start", "restart"])
def test_ipsec_start_refuses_nofork(verb: str, tmp_path: Path) -> None:
    """Before: ``ipsec start --nofork`` ran pluto in the foreground inside ipsec start
    (which never returned while it ran), then said the start had failed."""
    run = tmp_path / "run"
    r = ipsec(verb, "--rundir", str(run), "--nofork", "--config", str(tmp_path / "none.conf"))
    assert r.returncode == 33 and "--nofork does not apply" in r.stderr, r
    assert not run.exists()


class _StuckPluto:
    """A control socket that answers ``ping`` and ``shutdown`` (0) but never stops:
    a pluto hung in its shutdown, with its lock file next to the socket."""

    def __init__(self, rundir: Path) -> None:
        rundir.mkdir()
        (rundir / "pluto.pid").write_text("1\n")
        self.path = rundir / "pluto.ctl"
        self.sock = _listener(self.path)
        self.seen: list[str] = []
        self.stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.05)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            c.settimeout(5)
            with c:
                try:
                    req = read_frame_blocking(c)
                except (EOFError, OSError, ValueError):
                    continue
                self.seen.append(str(req.get("command")))
                if req.get("command") == "shutdown":
                    c.sendall(encode_frame(output_frame("Pluto is shutting down")))
                c.sendall(encode_frame(result_frame(0)))

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.sock.close()


def test_ipsec_stop_says_when_pluto_does_not_stop(tmp_path: Path) -> None:
    """Before: ``ipsec stop`` exited 0 after 15 s with that pluto still running, and
    with ``--ctlsocket`` alone it waited on /run/pluto/pluto.pid (another pluto's)."""
    from pypluto.cli import ipsec as ipsec_mod

    stuck = _StuckPluto(tmp_path / "run")
    try:
        for opts in ({"rundir": str(tmp_path / "run")}, {"ctlsocket": str(stuck.path)}):
            rc = ipsec_mod.cmd_stop(opts, wait=0.2)
            assert rc == 1, opts
        assert stuck.seen.count("shutdown") == 2
    finally:
        stuck.close()
    r = ipsec("stop", "--rundir", str(tmp_path / "run"))  # nobody answers now
    assert r.returncode == 0 and "pluto is not running" in r.stderr


# --------------------------------------------------------- real daemons (netns, root)


def _pluto_argv(ns: NetNS, rundir: Path, *extra: str) -> list[str]:
    return ["ip", "netns", "exec", ns.name, PY, "-m", "pypluto.cli.pluto", "--rundir",
            str(rundir), "--nofork", "--use-none", "--stderrlog", *extra]


@pytest.mark.netns
def test_second_pluto_never_takes_a_live_plutos_control_socket(daemon: Pluto,
                                                                tmp_path: Path) -> None:
    """The running pluto's lock file removed (or overwritten with the PID of some
    other process): a second pluto with the same --rundir must not unlink and re-bind
    pluto.ctl - the first one would run on with no way for whack to reach it.  It
    exits 10 (the lock status of ipsec-pluto(8)) and the first one still answers.

    Libreswan 5.2 unlinks pluto.ctl unconditionally (server.c, "preventative
    medicine"), trusting the lock file alone; pypluto checks that nobody answers."""
    secrets = tmp_path / "none.secrets"
    pidfile = daemon.pidfile
    saved = pidfile.read_text()
    ns = NetNS()
    other = subprocess.Popen(["sleep", "60"])  # a live process that is no pluto
    try:
        for lock in (None, f"{other.pid}\n"):
            if lock is None:
                pidfile.unlink()
            else:
                pidfile.write_text(lock)
            r = subprocess.run(_pluto_argv(ns, daemon.rundir, "--secretsfile", str(secrets)),
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == EXIT_LOCKED, (lock, r)
            assert "Pluto initialized" not in r.stdout
            assert "another pluto" in r.stderr and "Traceback" not in r.stderr, r.stderr
            if lock is None:
                assert f'control socket "{daemon.ctl}" is in use' in r.stderr
                assert not pidfile.exists()  # its own lock file went again
            else:
                assert pidfile.read_text() == lock  # left alone
            assert daemon.ready() and os.path.exists(daemon.ctl)
            r2 = daemon.whack("--briefstatus")
            assert r2.returncode == 0 and "IKE SAs: total(" in r2.stdout
    finally:
        pidfile.write_text(saved)
        other.kill()
        other.wait()
        ns.delete()


# the pair: whack --shutdown with a tunnel up, ipsec auto --up of a conn that fails

PAIR_CONF = """\
conn %default
\tauthby=secret
\tleftid=@west
\trightid=@east
\tretransmit-timeout=3s

conn rt25
\tleft={me}
\tright={peer}
\tauto=add

conn rt25-nobody
\tleft={me}
\tright=192.0.2.99
\tauto=add
"""


@pytest.mark.netns
def test_shutdown_with_a_tunnel_up_deletes_and_failed_up_exit_status(
        daemon: Pluto, tmp_path: Path) -> None:
    """``ipsec auto --up`` (Libreswan 4's spelling) of a conn whose peer never answers:
    not 0 (whack's rc of the failure); then ``ipsec stop`` (whack --shutdown) while an
    IKE SA and a Child SA are up: "Pluto is shutting down" (before: "shutting down"),
    exit 0, pluto gone, and the peer told (its SAs go away because of our Delete, not a
    timeout)."""
    del daemon  # only for the module's netns/root requirement
    wns, ens = NetNS(), NetNS()
    vw, ve = f"r25w{os.getpid()}"[:15], f"r25e{os.getpid()}"[:15]
    plutos: list[Pluto] = []
    try:
        sh("ip", "link", "add", vw, "netns", wns.name, "type", "veth", "peer", "name", ve,
           "netns", ens.name)
        for ns, dev, addr in ((wns, vw, "192.0.2.1/24"), (ens, ve, "192.0.2.2/24")):
            ns.run("ip", "addr", "add", addr, "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        secrets = tmp_path / "ipsec.secrets"
        secrets.write_text('@west @east : PSK "redteam25-psk-0123456789abcdef0123"\n')
        secrets.chmod(0o600)
        for side, ns, me, peer in (("west", wns, "192.0.2.1", "192.0.2.2"),
                                   ("east", ens, "192.0.2.2", "192.0.2.1")):
            conf = tmp_path / f"{side}.conf"
            text = PAIR_CONF.format(me=me, peer=peer)
            if side == "east":
                text = text.replace("@west", "@tmp").replace("@east", "@west") \
                           .replace("@tmp", "@east")
            conf.write_text(text)
            p = Pluto(ns, tmp_path, side)
            plutos.append(p)
            p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config",
                    str(conf), "--secretsfile", str(secrets))
        west, east = plutos
        west.wait_ready()
        east.wait_ready()
        rd = str(west.rundir)

        r = ipsec("auto", "--up", "--rundir", rd, "rt25-nobody")
        assert r.returncode == 51, r  # no answer from the peer (whack --help's list)
        assert "no response to IKE_SA_INIT (retransmit timeout)" in r.stdout
        assert "ipsec auto has been deprecated" in r.stderr
        assert json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"] == []

        r = ipsec("auto", "--up", "--rundir", rd, "rt25")
        assert r.returncode == 0, r.stdout + west.log()
        assert re.search(r'"rt25" #\d+: established Child SA', r.stdout)
        tr = east.whack("--trafficstatus").stdout
        assert '"rt25"' in tr

        west_pid = west.proc.pid if west.proc is not None else -1
        r = ipsec("stop", "--rundir", rd)
        # Libreswan 5.2 (whack_shutdown.c; e.g. testing/pluto/*/west.console.txt)
        assert r.returncode == 0 and r.stdout == "Pluto is shutting down\n", r
        assert west.proc is not None and west.proc.wait(30) == 0
        assert not west.pidfile.exists() and not os.path.exists(west.ctl)
        log = (west.dir / "log").read_text()
        assert "deleting Child SA" in log or "deleting IKE SA" in log, log
        # the Delete reached east: its SAs are gone long before any liveness timeout
        wait_for(lambda: json.loads(east.whack("--showstates", "--json").stdout)
                 ["ike_sas"] == [], 20, "east to act on west's Delete")
        assert east.whack("--trafficstatus").stdout == ""
        assert west_pid > 0
        r = whack("--rundir", rd, "--status")
        assert r.returncode == 33 and "Pluto is not running (no " in r.stderr
    finally:
        for p in plutos:
            p.stop()
        ens.delete()
        wns.delete()


@pytest.mark.netns
def test_asynchronous_up_says_it_is_initiating(daemon: Pluto) -> None:
    """Libreswan 5.2 ``ipsec up --asynchronous NAME`` prints the "initiating" line of
    the exchange it started (testing/pluto/*/west.console.txt), then returns; before,
    pypluto printed nothing at all."""
    rd = str(daemon.rundir)
    try:
        for argv in (["up", "--asynchronous"], ["auto", "--asynchronous", "--up"]):
            r = ipsec(*argv, "--rundir", rd, "c-add")
            assert r.returncode == 0, r
            assert re.fullmatch(r'"c-add" #\d+: initiating IKEv2 connection[^\n]*\n', r.stdout), r
            daemon.whack("--name", "c-add", "--down")
    finally:
        daemon.whack("--name", "c-add", "--down")


@pytest.mark.netns
def test_nofork_with_stdout_closed_by_its_reader_keeps_running(daemon: Pluto,
                                                              tmp_path: Path) -> None:
    """``pluto --nofork | head -0``: before, printing "Pluto initialized" raised
    BrokenPipeError - a traceback, and a pluto dead after its lock file and control
    socket were made (both left behind).  Now it runs on, and stops cleanly."""
    del daemon  # only for the module's netns/root requirement
    ns = NetNS()
    rundir = tmp_path / "run"
    r_end, w_end = os.pipe()
    os.close(r_end)  # the reader is gone before pluto writes
    err = tmp_path / "stderr"
    proc = None
    try:
        with open(err, "wb") as e:
            proc = subprocess.Popen(_pluto_argv(ns, rundir, "--secretsfile",
                                                str(tmp_path / "none.secrets")),
                                    stdout=w_end, stderr=e, stdin=subprocess.DEVNULL)
        os.close(w_end)
        w_end = -1
        ctl = str(rundir / "pluto.ctl")

        def up() -> bool:
            assert proc is not None
            if proc.poll() is not None:
                raise AssertionError(f"pluto exited {proc.returncode}: {err.read_text()}")
            return whack("--ctlsocket", ctl, "--briefstatus").returncode == 0

        wait_for(up, 30, "pluto to answer")
        assert "Pluto initialized" in err.read_text()  # --stderrlog: it got that far
        r = whack("--ctlsocket", ctl, "--shutdown")
        assert r.returncode == 0 and r.stdout == "Pluto is shutting down\n"
        assert proc.wait(30) == 0
        text = err.read_text()
        assert "Traceback" not in text and "Exception ignored" not in text, text
        assert not (rundir / "pluto.pid").exists() and not os.path.exists(ctl)
    finally:
        if w_end >= 0:
            os.close(w_end)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        ns.delete()
