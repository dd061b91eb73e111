"""Red team 26: the daemon's lifecycle under stress (signals during start-up, what a
killed or stopped pluto leaves behind).

* A SIGTERM that arrives while pluto is still starting (here: blocked reading a
  secrets file that is a FIFO, after ``nflog-all=`` put its iptables rules in) is
  handled once start-up is done, with the usual clean shutdown: exit 0, the NFLOG
  rules gone.  Before, a Python-level handler raised ``SystemExit`` wherever start-up
  was: the rules stayed, and since the lock file was removed on the way out, the next
  start had no stale lock to trigger its leftovers pass.  Libreswan handles signals
  in its event loop, so a SIGTERM during start-up is processed once the loop runs.
* A SIGHUP in the same window no longer kills pluto (the default action of SIGHUP,
  before the loop's handler was installed at the end of start-up).
* Two SIGTERMs in a row with three IKE SAs (IPv4 subnets, IPv4 hosts, IPv6 hosts)
  up on the userspace plane: exit 0, the peer deletes every SA because of our
  Deletes, and nothing of the plane stays (rules, tables, raw-table chain, TUN
  device, lock file, control socket).  ``ipsec stop`` of a pluto whose peer has
  gone silent is not held up by the unanswered Deletes.
* A whack client (``ipsec status``, a second ``ipsec stop``) that connects while a
  SIGTERM's shutdown is still running (here: waiting for a slow ``unroute`` updown
  script) no longer ends the daemon there and then: before, any client finishing
  during the shutdown resolved the exit future, the loop stopped, the shutdown
  task was cancelled, and the plane's routes, rules and chain and the NFLOG rules
  stayed behind (with the lock file removed, so no leftovers pass either).
* A closed log pipe (``--stderrlog`` into a reader that went away) and whack clients
  that hang up before their answer (during the run and during ``whack --shutdown``)
  neither stop nor crash pluto; its exit is still 0 and leaves nothing.
* ``kill -9`` of a pluto with ``nflog-all=``: the restart's leftovers pass
  (daemon/leftovers.py) now removes the NFLOG rules too.  Before, they stayed and the
  new run added its own beside them (every packet logged twice); its clean exit then
  removed one copy and the other stayed for good.

Namespaces and processes are the test's own (tests/daemon/plutoproc.py) and go even
when a test fails; addresses are from the documentation ranges.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from pathlib import Path

import pytest
from plutoproc import NetNS, Pluto, alive, wait_for
from test_userspace_capture import _plane_leftovers, pair  # noqa: F401 - the fixture

from pypluto.cli import ipsec

pytestmark = pytest.mark.netns


def _nflog(ns: NetNS, tool: str = "iptables") -> list[str]:
    return [ln for ln in ns.run(tool, "-S", check=False).stdout.splitlines()
            if "NFLOG" in ln]


def _unblock(fifo: Path, p: Pluto) -> None:
    """Open the FIFO for writing (once pluto has it open for reading), then close it:
    pluto reads an empty secrets file."""
    assert p.proc is not None
    end = time.monotonic() + 30
    while time.monotonic() < end and p.proc.poll() is None:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            if e.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
            time.sleep(0.02)
            continue
        os.close(fd)
        return


@pytest.mark.parametrize("signals", [(signal.SIGHUP, signal.SIGTERM), (signal.SIGTERM,),
                                     (signal.SIGINT, signal.SIGTERM)])
def test_signals_during_startup_are_handled_after_it(make_pluto, tmp_path: Path,
                                                     signals: tuple[int, ...]) -> None:
    """SIGHUP / SIGINT / SIGTERM while start-up is blocked (secrets file is a FIFO,
    nflog-all= rules already in): pluto survives a SIGHUP, finishes start-up, then shuts
    down cleanly: exit 0, NFLOG rules removed, lock file and control socket gone."""
    p = make_pluto("west")
    ns = p.ns
    fifo = tmp_path / "secrets.fifo"
    os.mkfifo(fifo, 0o600)
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tnflog-all=7\n")
    before4, before6 = _nflog(ns), _nflog(ns, "ip6tables")
    p.start("--nofork", "--use-userspace", "--logfile", str(p.dir / "log"),
            "--config", str(conf), "--secretsfile", str(fifo))
    assert p.proc is not None
    try:
        wait_for(lambda: len(_nflog(ns)) == len(before4) + 2
                 and len(_nflog(ns, "ip6tables")) == len(before6) + 2, 30,
                 "the nflog-all rules")
        for sig in signals:
            p.proc.send_signal(sig)
        _unblock(fifo, p)
        rc = p.proc.wait(30)
    finally:
        with contextlib.suppress(OSError):  # never leave pluto blocked on the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    log = p.log()
    assert rc == 0, log
    assert "SIGTERM received: shutting down" in log
    assert ("Pluto ignores SIGHUP" in log) == (signal.SIGHUP in signals)
    assert "pluto exiting with status 0" in log
    assert _nflog(ns) == before4 and _nflog(ns, "ip6tables") == before6
    assert not p.pidfile.exists() and not os.path.exists(p.ctl)
    assert not alive(p.proc.pid)


def test_sigkill_with_nflog_all_then_restart_removes_the_rules(make_pluto,
                                                              tmp_path: Path) -> None:
    """kill -9 of a pluto with nflog-all=7 leaves its 2+2 NFLOG rules; the restart (same
    rundir: stale lock) removes them before adding its own, so there are 2+2 again, not
    4+4, and its clean exit leaves iptables as before."""
    p = make_pluto("west")
    ns = p.ns
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text("")
    secrets.chmod(0o600)
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tnflog-all=7\n")
    # an operator's own NFLOG rule (another device) is not ours: it stays
    ns.run("iptables", "-A", "OUTPUT", "-o", "lo", "-j", "NFLOG", "--nflog-group", "9")
    before4, before6 = _nflog(ns), _nflog(ns, "ip6tables")
    assert len(before4) == 1
    args = ("--nofork", "--use-userspace", "--config", str(conf), "--secretsfile", str(secrets))
    proc = p.start(*args, "--logfile", str(p.dir / "log"))
    p.wait_ready()
    mine4 = [r for r in _nflog(ns) if r not in before4]
    assert len(mine4) == 2 and all("all-ipsec" in r and "-j NFLOG" in r for r in mine4)
    assert len(_nflog(ns, "ip6tables")) == len(before6) + 2
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert len(_nflog(ns)) == len(before4) + 2  # what kill -9 leaves
    assert p.pidfile.exists()
    proc = p.start(*args, "--logfile", str(p.dir / "log2"))
    p.wait_ready()
    log2 = (p.dir / "log2").read_text()
    assert "removed leftover of a pluto that did not exit cleanly: 2 IPv4 NFLOG rule(s)" \
        in log2, log2
    assert "removed leftover of a pluto that did not exit cleanly: 2 IPv6 NFLOG rule(s)" \
        in log2, log2
    assert sorted(_nflog(ns)) == sorted(before4 + mine4)
    assert len(_nflog(ns, "ip6tables")) == len(before6) + 2
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert _nflog(ns) == before4 and _nflog(ns, "ip6tables") == before6


THREE = """\
conn sub
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tleftsubnet=198.51.100.0/24
\trightsubnet=203.0.113.0/24
\tauto=add

conn hosts
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west2
\tright=192.0.2.2
\trightid=@east2
\tauto=add

conn six
\tauthby=secret
\tleft=2001:db8::1
\tleftid=@west6
\tright=2001:db8::2
\trightid=@east6
\tauto=add
"""
THREE_SECRETS = "".join(f'@west{s} @east{s} : PSK "lifecycle26-psk-{s or 0}-0123456789abcdef"\n'
                        for s in ("", "2", "6"))


def _ike_sas(p: Pluto) -> list[dict]:
    import json

    return json.loads(p.whack("--showstates", "--json").stdout)["ike_sas"]


def _clr_chain(ns: NetNS) -> str:
    return "\n".join(ln for tool in ("iptables", "ip6tables")
                     for ln in ns.run(tool, "-t", "raw", "-S", check=False).stdout.splitlines()
                     if "PLUTO-CLR" in ln)


def test_two_sigterms_with_three_ike_sas_up_then_stop_with_a_silent_peer(
        pair, tmp_path: Path) -> None:  # noqa: F811
    start, _spawn, w_ns, e_ns, vw = pair
    (tmp_path / "ipsec.secrets").write_text(THREE_SECRETS)
    east = start("east", e_ns, THREE)
    west = start("west", w_ns, THREE)
    for name in ("sub", "hosts", "six"):
        r = west.whack("--name", name, "--initiate")
        assert r.returncode == 0, r.stdout + west.log()
    assert len(_ike_sas(east)) == 3 and _clr_chain(w_ns)
    assert _plane_leftovers(w_ns) != ""
    assert west.proc is not None
    west.proc.send_signal(signal.SIGTERM)
    west.proc.send_signal(signal.SIGTERM)
    assert west.proc.wait(30) == 0, west.log()
    wlog = (west.dir / "log").read_text()
    assert "pluto exiting with status 0" in wlog and "unhandled error" not in wlog
    # east forgets every SA because west told it (its own timers are far away)
    wait_for(lambda: _ike_sas(east) == [], 20, "east to act on west's Deletes")
    assert _plane_leftovers(w_ns) == "" and _clr_chain(w_ns) == ""
    assert w_ns.run("ip", "link", "show", "pluto0", check=False).returncode != 0
    assert not west.pidfile.exists() and not os.path.exists(west.ctl)

    # west again (same rundir: a clean exit leaves no stale lock, no leftovers pass)
    west = start("west", w_ns, THREE)
    assert "removed stale lock file" not in (west.dir / "log").read_text()
    for name in ("sub", "hosts", "six"):
        r = west.whack("--name", name, "--initiate")
        assert r.returncode == 0, r.stdout + west.log()
    # west goes silent: east's Deletes are never answered
    w_ns.run("ip", "link", "set", vw, "down")
    assert ipsec.cmd_stop({"rundir": str(east.rundir)}) == 0
    assert east.proc is not None and east.proc.wait(30) == 0
    elog = (east.dir / "log").read_text()
    assert elog.count("deleting IKE SA") >= 3 or elog.count("sending notification") >= 3, elog
    assert _plane_leftovers(e_ns) == "" and _clr_chain(e_ns) == ""
    assert not east.pidfile.exists() and not os.path.exists(east.ctl)


SLOW_UNROUTE = """#!/bin/sh
case "$PLUTO_VERB" in
unroute*)
\ttouch {dir}/started
\ti=0
\twhile [ ! -e {dir}/go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
\t;;
esac
exit 0
"""


@pytest.mark.parametrize("client", ["status", "shutdown"])
def test_whack_during_a_slow_shutdown_does_not_cut_it_short(make_pluto, tmp_path: Path,
                                                           client: str) -> None:
    p = make_pluto("west")
    ns = p.ns
    ns.run("ip", "link", "add", "lc26a", "type", "veth", "peer", "name", "lc26b")
    ns.run("ip", "addr", "add", "192.0.2.1/24", "dev", "lc26a")
    for dev in ("lc26a", "lc26b"):
        ns.run("ip", "link", "set", dev, "up")
    script = tmp_path / "updown.sh"
    script.write_text(SLOW_UNROUTE.format(dir=tmp_path))
    script.chmod(0o755)
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"""config setup
\tnflog-all=7

conn routed
\tauthby=secret
\tleft=192.0.2.1
\tright=192.0.2.2
\tleftsubnet=198.51.100.0/24
\trightsubnet=203.0.113.0/24
\tleftupdown={script}
\tauto=route
""")
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text('192.0.2.1 192.0.2.2 : PSK "lifecycle26-psk-routed-0123456789ab"\n')
    secrets.chmod(0o600)
    before4 = _nflog(ns)
    proc = p.start("--nofork", "--use-userspace", "--logfile", str(p.dir / "log"),
                   "--config", str(conf), "--secretsfile", str(secrets))
    p.wait_ready()
    assert "203.0.113.0/24" in ns.run("ip", "route", "show", "table", "4500").stdout
    assert len(_nflog(ns)) == len(before4) + 2
    proc.send_signal(signal.SIGTERM)
    try:
        wait_for((tmp_path / "started").exists, 20, "the unroute script")
        # a whack arrives while the shutdown waits for the script
        if client == "status":
            p.whack("--status")
        else:
            assert ipsec.cmd_stop({"rundir": str(p.rundir)}, wait=0) in (0, 1)
        assert proc.poll() is None, p.log()  # still shutting down
    finally:
        (tmp_path / "go").touch()
    assert proc.wait(30) == 0, p.log()
    assert _nflog(ns) == before4, p.log()
    assert _plane_leftovers(ns) == "" and _clr_chain(ns) == ""
    assert "pluto exiting with status 0" in p.log()


@pytest.mark.parametrize(("rule", "ours"), [
    ("-o pluto0 -j NFLOG --nflog-prefix all-ipsec --nflog-group 7", True),
    ("-i pluto0 -j NFLOG --nflog-prefix all-ipsec --nflog-group 7", True),
    ("-s 198.51.100.0/24 -d 203.0.113.0/24 -o pluto0 -j NFLOG --nflog-prefix west-east "
     "--nflog-group 5", True),
    ("-m policy --dir out --pol ipsec -j NFLOG --nflog-prefix all-ipsec --nflog-group 7", True),
    ("-o eth0 -j NFLOG --nflog-group 9", False),  # an operator's
    ("-j NFLOG --nflog-group 9", False),
    ("-o pluto0 -j ACCEPT", False),
    ("-m policy --dir out --pol none -j NFLOG --nflog-group 7", False),
    ("-o pluto0 -i eth0 -j NFLOG --nflog-group 7", False),
    ('-o pluto0 -j NFLOG --nflog-prefix "a b" --nflog-group 7', True),
    ("-m policy -j NFLOG --pol", False),  # malformed: no crash
])
def test_nflog_leftover_rule_shapes(rule: str, ours: bool) -> None:
    import shlex

    from pypluto.daemon.leftovers import _nflog_rule_is_ours

    assert _nflog_rule_is_ours(shlex.split(rule)) is ours


def _hang_up(ctl: str, command: str) -> None:
    """Send one request and close before the answer."""
    import socket

    from pypluto.control.protocol import Request, encode_frame

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(ctl)
        s.sendall(encode_frame(Request(command, {}).to_obj()))
    finally:
        s.close()


def test_closed_log_pipe_and_clients_that_hang_up(make_pluto, tmp_path: Path) -> None:
    import subprocess

    p = make_pluto("west")
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text("")
    secrets.chmod(0o600)
    proc = subprocess.Popen(p.argv("--nofork", "--use-none", "--stderrlog", "--secretsfile",
                                   str(secrets)), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.proc = proc
    p.pids.add(proc.pid)
    p.wait_ready()
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()  # the log's reader is gone: writes get EPIPE
    for _ in range(3):
        assert p.whack("--listen").returncode == 0  # each logs lines
        _hang_up(p.ctl, "status")
    assert p.ready() and proc.poll() is None
    _hang_up(p.ctl, "shutdown")  # ipsec stop whose whack is killed at once
    assert proc.wait(30) == 0
    assert not p.pidfile.exists() and not os.path.exists(p.ctl)
