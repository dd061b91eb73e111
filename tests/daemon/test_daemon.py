"""Real pluto processes: start-up as ipsec-pluto(8) says, signals, logging, options.

Each daemon runs in its own network namespace (loopback only) with its own
--rundir, and the none backend unless a test says otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess

import pytest
from plutoproc import PY, alive, wait_for

pytestmark = pytest.mark.netns

CONF = """\
config setup
\tuniqueids=no
\tkeep-alive=33

conn %default
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@west

conn c-add
\tright=192.0.2.77
\trightid=@east
\tauto=add

conn c-route
\tright=192.0.2.78
\tauto=route

conn c-ignore
\tright=192.0.2.79
\tauto=ignore

conn c-bad
\tright=192.0.2.80
\tike=frobnicate-sha2
\tauto=add
"""

SECRETS = '@west @east : PSK "a-very-secret-psk-value-0123456789"\n'


def write_conf(tmp_path, conf=CONF, secrets=SECRETS):
    c = tmp_path / "ipsec.conf"
    c.write_text(conf)
    s = tmp_path / "ipsec.secrets"
    s.write_text(secrets)
    s.chmod(0o600)
    return str(c), str(s)


def test_nofork_lock_socket_and_sigterm(make_pluto, tmp_path):
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    assert p.out.read_text().splitlines()[0] == "Pluto initialized"
    assert int(p.pidfile.read_text()) == proc.pid
    mode = stat.S_IMODE(os.stat(p.ctl).st_mode)
    assert stat.S_ISSOCK(os.stat(p.ctl).st_mode) and mode == 0o600
    # a second pluto on the same rundir: lock file exists -> exit 10
    q = subprocess.run(p.argv("--nofork", "--use-none", "--stderrlog"), capture_output=True,
                       text=True, timeout=60)
    assert q.returncode == 10, q.stderr
    assert "lock file" in q.stderr and "already exists" in q.stderr
    assert p.ready()  # the first one is unaffected
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not p.pidfile.exists() and not os.path.exists(p.ctl)
    text = log.read_text()
    assert "SIGTERM received: shutting down" in text and "shutting down" in text


def test_fork_parent_exits_zero_pidfile_names_child(make_pluto):
    """Also: with no --use-* option the kernel is probed and the choice logged."""
    p = make_pluto()
    proc = p.start("--logfile", str(p.dir / "log"))
    assert proc.wait(timeout=60) == 0
    wait_for(p.ready, 30, "forked pluto")
    child = int(p.pidfile.read_text())
    p.pids.add(child)
    assert child != proc.pid and alive(child)
    assert "Pluto initialized" not in p.out.read_text()
    r = p.whack("--shutdown")
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: not alive(child), 30, "pluto to exit")
    assert not p.pidfile.exists()
    log = (p.dir / "log").read_text()
    assert "using the XFRM kernel backend" in log or "using the userspace ESP backend" in log


def test_use_xfrm(make_pluto):
    p = make_pluto()
    proc = p.start("--nofork", "--use-xfrm", "--logfile", str(p.dir / "log"))
    p.wait_ready()
    assert "using kernel interface: xfrm" in p.whack("--status").stdout
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_leftover_lockfile_of_a_dead_pid_is_removed(make_pluto):
    """A lock file naming a PID that is no running pluto is stale: removed, pluto starts."""
    p = make_pluto()
    p.rundir.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    p.pidfile.write_text(f"{dead.pid}\n")
    (p.rundir / "pluto.ctl").write_text("stale")
    proc = p.start("--nofork", "--use-none", "--stderrlog")
    p.wait_ready()
    assert int(p.pidfile.read_text()) == proc.pid
    assert f"removed stale lock file \"{p.pidfile}\" (PID {dead.pid} is not a running " \
        "pluto)" in p.err.read_text()


def test_fresh_empty_lockfile_exit_10(make_pluto):
    """An empty lock file just created: another pluto is starting; refuse with 10."""
    p = make_pluto()
    p.rundir.mkdir(parents=True)
    p.pidfile.write_text("")
    proc = p.start("--nofork", "--use-none", "--stderrlog")
    assert proc.wait(timeout=60) == 10
    assert "already exists: it is empty: another pluto is starting" in p.err.read_text()
    assert p.pidfile.read_text() == ""  # not ours to remove


def test_sighup_hint_log_options_and_masking(make_pluto):
    p = make_pluto()
    log = p.dir / "log"
    log.write_text("OLD CONTENT\n")
    proc = p.start("--nofork", "--use-none", "--logfile", str(log), "--log-no-time",
                   "--log-no-append", "--log-no-ip")
    p.wait_ready()
    os.kill(proc.pid, signal.SIGHUP)
    wait_for(lambda: "ipsec listen" in log.read_text(), 20, "SIGHUP hint")
    assert p.ready()  # SIGHUP does not stop pluto
    text = log.read_text()
    assert "OLD CONTENT" not in text  # --log-no-append
    first = text.splitlines()[0]
    assert first.startswith("Starting Pluto")  # --log-no-time: no timestamp prefix
    assert "adding UDP interface lo <ip address>:500" in text  # --log-no-ip
    assert "127.0.0.1" not in text
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_stderrlog_time_append_and_debug_lines(make_pluto):
    p = make_pluto()
    proc = p.start("--nofork", "--use-none", "--stderrlog", "--debug", "base",
                   "--debug", "whackwatch")
    p.wait_ready()
    p.whack("--status")
    assert p.whack("--debug", "cpu-usage").returncode == 0
    p.ns.run(PY, "-c", "import socket; socket.socket(2, 2).sendto(b'x' * 40, "
             "('127.0.0.1', 500))")  # a junk datagram: one engine call
    wait_for(lambda: "cpu-usage: packet from 127.0.0.1:" in p.err.read_text(), 20,
             "cpu-usage debug line")
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    lines = p.err.read_text().splitlines()
    start = next(ln for ln in lines if "Starting Pluto" in ln)
    # timestamp like "Nov 28 00:43:46.847538: "
    assert start.split(": ", 1)[1].startswith("Starting Pluto") and start[3] == " "
    debug = [ln.split(": ", 1)[1] for ln in lines if ": | " in ln]
    assert any("whack request status" in d for d in debug)
    # --debug cpu-usage added at run time: CPU time of the engine calls
    assert all(d.startswith("| ") for d in debug)


def test_config_setup_conns_secrets_and_cli_wins(make_pluto, tmp_path):
    conf, secrets = write_conf(tmp_path)
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log), "--config", conf,
                   "--secretsfile", str(tmp_path / "ipsec.secre*"), "--keep-alive", "44",
                   "--uniqueids", "--vendorid", "pypluto-test-vid", "--virtual-private",
                   "%v4:10.0.0.0/8,%v4:!10.1.0.0/16", "--force-busy",
                   "--crlcheckinterval", "0", "--secctx-attr-type", "32001", "--nhelpers", "0")
    p.wait_ready()
    r = p.whack("--status")
    assert r.returncode == 0
    out = r.stdout
    assert '"c-add": 127.0.0.1[@west]...192.0.2.77[@east]' in out
    # auto=route loads and routes (issue 16); auto=ignore does not load
    assert '"c-route": 127.0.0.1[@west]...192.0.2.78; routed-ondemand' in out
    assert '"c-ignore"' not in out
    # command line wins over config setup (keep-alive=33, uniqueids=no in the file)
    assert "uniqueids=yes" in out and "keep-alive=44s" in out and "force-busy=yes" in out
    assert "virtual-private=%v4:10.0.0.0/8,%v4:!10.1.0.0/16" in out
    assert "secctx-attr-type=32001" in out and "helpers=0 (inline)" in out
    text = log.read_text()
    assert "auto=route is not supported" not in text
    assert "\"c-route\": route: trap policies installed" in text
    # a broken conn is reported with file:line and skipped; the others load
    assert f"{conf}:25: while loading 'c-bad'" in text and '"c-bad"' not in out
    assert f'loading secrets from "{secrets}"' in text
    assert "a-very-secret-psk-value" not in text
    r = p.whack("--listpsks")
    assert r.returncode == 0 and "@west @east" in r.stdout
    assert "a-very-secret" not in r.stdout
    r = p.whack("--status", "--json")
    import json

    data = json.loads(r.stdout)
    assert data["schema"] == "pypluto-status/1"
    assert data["pluto"]["vendorid"] == "pypluto-test-vid"
    assert {c["name"] for c in data["connections"]} == {"c-add", "c-route"}
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_sd_notify_ready(make_pluto, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(sock_path)
    s.settimeout(60)
    try:
        p = make_pluto()
        env = dict(os.environ, NOTIFY_SOCKET=sock_path)
        proc = p.start("--nofork", "--use-none", "--stderrlog", env=env)
        msg = s.recv(4096).decode()
        assert "READY=1" in msg.splitlines() and f"MAINPID={proc.pid}" in msg
        os.kill(proc.pid, signal.SIGTERM)
        assert "STOPPING=1" in s.recv(4096).decode()
        assert proc.wait(timeout=30) == 0
    finally:
        s.close()


def test_listen_address_only_and_leak_detective(make_pluto, netns):
    netns.run("ip", "addr", "add", "192.0.2.10/24", "dev", "lo")
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log), "--listen", "192.0.2.10",
                   "--leak-detective", "--efence-protect", "--seedbits", "64",
                   "--coredir", str(p.dir / "core"))
    p.wait_ready()
    r = p.whack("--status")
    ifaces = [ln for ln in r.stdout.splitlines() if ln.startswith("interface ")]
    assert ifaces == ["interface lo 192.0.2.10:UDP/4500 (NAT)", "interface lo 192.0.2.10:UDP/500"]
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    text = log.read_text()
    assert "leak detective:" in text and "bytes still allocated at shutdown" in text
    assert "seeded 8 bytes into the RNG" in text
    assert "efence-protect enabled" in text


def test_unoriented_conn_oriented_by_listen(make_pluto, netns, tmp_path):
    conf = tmp_path / "far.conf"
    conf.write_text("conn far\n\tauthby=secret\n\tleft=192.0.2.50\n\tright=192.0.2.51\n"
                    "\tauto=add\n")
    p = make_pluto()
    proc = p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config",
                   str(conf))
    p.wait_ready()
    assert '"far": unoriented; neither end is a local address;' in p.whack("--status").stdout
    r = p.whack("--name", "far", "--initiate")
    assert r.returncode == 22 and "not oriented" in r.stdout
    netns.run("ip", "addr", "add", "192.0.2.51/32", "dev", "lo")
    assert p.whack("--listen").returncode == 0
    st = p.whack("--status").stdout
    conn_lines = st.split("Connection list:", 1)[1]  # (the header shows the config path)
    assert "unoriented" not in conn_lines and '"far": 192.0.2.51...192.0.2.50;' in st
    assert "interface lo 192.0.2.51:UDP/500" in st
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_packet_flood_is_rate_limited(make_pluto, netns):
    p = make_pluto()
    log = p.dir / "log"
    proc = p.start("--nofork", "--use-none", "--logfile", str(log))
    p.wait_ready()
    before = len(log.read_text().splitlines())
    # 2000 truncated IKE_SA_INIT requests (28-byte header, claims an SA payload)
    netns.run(PY, "-c", "import os, socket\ns = socket.socket(2, 2)\nfor i in range(2000):\n"
              "    s.sendto(os.urandom(8) + bytes(8) + bytes([33, 0x20, 34, 8]) + bytes(4)"
              " + (28).to_bytes(4, 'big'), ('127.0.0.1', 500))\n")
    wait_for(lambda: "rate limited log exceeded" in log.read_text(), 20, "the rate limiter")
    # once the flood is over, the count of what was suppressed is logged
    wait_for(lambda: re.search(r"rate limited log: \d+ messages suppressed", log.read_text()),
             20, "the suppressed count")
    assert p.whack("--briefstatus").returncode == 0  # still answering
    lines = log.read_text().splitlines()[before:]
    assert len(lines) < 400, len(lines)  # not one line per packet
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_ike_socket_bufsize_sizes_the_ike_sockets(make_pluto, netns, tmp_path):
    """config setup ike-socket-bufsize= (ipsec.conf(5)): both buffers of every IKE
    socket get that size, past rmem_max / wmem_max (the FORCE options; the kernel
    doubles it, ss(8) shows the doubled value); without it the send buffer is the
    kernel's default."""
    import re

    sizes = {}
    for case, setup in (("set", "\tike-socket-bufsize=300000\n"), ("unset", "")):
        conf, secrets = write_conf(tmp_path, "config setup\n" + setup + "\n")
        p = make_pluto(f"buf-{case}")
        p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config", conf,
                "--secretsfile", secrets)
        p.wait_ready()
        out = netns.run("ss", "-uamn", "sport = :500").stdout
        sizes[case] = [(int(r), int(t)) for r, t in re.findall(r"rb(\d+),t\d+,tb(\d+)", out)]
        assert sizes[case], out
        p.stop()
    assert all(s == (600000, 600000) for s in sizes["set"]), sizes
    wmem = int(open("/proc/sys/net/core/wmem_default").read())
    assert all(t != 600000 and t <= 2 * max(wmem, 212992) for _r, t in sizes["unset"]), sizes


def test_xfrmlifetime_reaches_the_kernel_and_goes_back(make_pluto, netns, tmp_path):
    """config setup xfrmlifetime= with --use-xfrm: the daemon sets its namespace's
    net.core.xfrm_acq_expires at start (logged, as Libreswan does), puts the old value
    back at exit, and --status shows it in Libreswan 5.2's header line."""
    def acq() -> str:
        return netns.run("cat", "/proc/sys/net/core/xfrm_acq_expires").stdout.strip()

    before = acq()
    conf, secrets = write_conf(tmp_path, "config setup\n\txfrmlifetime=11\n\n")
    p = make_pluto("acq")
    p.start("--nofork", "--use-xfrm", "--logfile", str(p.dir / "log"), "--config", conf,
            "--secretsfile", secrets)
    p.wait_ready()
    assert acq() == "11"
    log = (p.dir / "log").read_text()
    assert f"xfrmlifetime=11: net.core.xfrm_acq_expires was {before}, now 11" in log, log
    assert ", xfrmlifetime=11s" in p.whack("--status").stdout
    p.stop()
    assert acq() == before


DEBUG_CONF = """\
conn %default
\tauthby=secret
\tleft=127.0.0.1
\tleftid=@west
\trightid=@east
\tauto=add

conn c-dbg
\tright=192.0.2.81
\tdebug=all

conn c-quiet
\tright=192.0.2.82

conn c-typo
\tright=192.0.2.83
\tplutodebug=bse
"""


def test_per_connection_debugging(make_pluto, tmp_path):
    """debug= (plutodebug= in a conn) and ``whack --name NAME --debug``: debug lines
    of that conn only, with global debugging off; an unknown class refuses the conn."""
    import time

    conf, secrets = write_conf(tmp_path, DEBUG_CONF)
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", "--use-none", "--logfile", str(log), "--config", conf,
            "--secretsfile", secrets)
    p.wait_ready()

    def debug_lines(conn: str) -> list[str]:
        return [ln for ln in log.read_text().splitlines() if f'| "{conn}"' in ln]

    assert '"c-typo": debug=bse: unrecognized debug option "bse"' in log.read_text()
    assert '"c-typo"' not in p.whack("--status").stdout
    for c in ("c-dbg", "c-quiet"):
        p.whack("--name", c, "--initiate", "--asynchronous")
    time.sleep(1.5)  # the IKE_SA_INIT requests go out (nobody answers)
    assert debug_lines("c-dbg"), log.read_text()[-2000:]
    assert debug_lines("c-quiet") == [] and "| " not in "".join(
        ln for ln in log.read_text().splitlines() if "c-dbg" not in ln)
    r = p.whack("--name", "c-quiet", "--debug", "all")
    assert r.returncode == 0, r.stdout
    p.whack("--name", "c-quiet", "--down")
    p.whack("--name", "c-quiet", "--initiate", "--asynchronous")
    time.sleep(1.5)
    assert debug_lines("c-quiet"), log.read_text()[-2000:]
    r = p.whack("--name", "nope", "--debug", "all")
    assert r.returncode != 0 and 'no connection named "nope"' in r.stdout + r.stderr
