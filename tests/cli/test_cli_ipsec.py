"""The ipsec front end: start/stop/restart, add/delete/up/down, status and config tools."""

from __future__ import annotations

import json

import pytest
from plutoproc import PY, NetNS, Pluto, alive, run_main, sh, wait_for

pytestmark = pytest.mark.netns


def ipsec(*args: str, ns: NetNS | None = None):
    if ns is None:  # main() in this process: same code, no interpreter start-up
        return run_main("pypluto.cli.ipsec", list(args))
    return sh("ip", "netns", "exec", ns.name, PY, "-m", "pypluto.cli.ipsec", *args,
              check=False)


def test_version_help_unknown():
    r = ipsec("version")
    assert r.returncode == 0 and "pypluto" in r.stdout
    r = ipsec("--help")
    assert r.returncode == 0 and "trafficstatus" in r.stdout
    assert "pypluto" in ipsec("whack", "--version").stdout
    assert "pypluto" in ipsec("pluto", "--version").stdout
    r = ipsec("frobnicate")
    assert r.returncode == 1 and 'unknown command "frobnicate"' in r.stderr


def test_loadtest_is_an_ipsec_command():
    """``ipsec loadtest`` reaches pypluto.loadtest (an unreadable PSK file is its error 2)."""
    r = ipsec("loadtest", "--local", "192.0.2.1", "--remote", "192.0.2.2",
              "--psk-file", "/nonexistent/psk", "-n", "1")
    assert r.returncode == 2 and r.stderr.startswith("ipsec loadtest:"), r.stderr


def test_status_commands_map_to_whack(daemon):
    rd = str(daemon.rundir)
    r = ipsec("status", "--rundir", rd)
    assert r.returncode == 0 and "Connection list:" in r.stdout
    r = ipsec("briefstatus", "--rundir", rd)
    assert r.stdout.startswith("State Information: DDoS cookies")
    r = ipsec("trafficstatus", "--rundir", rd, "--json")
    assert json.loads(r.stdout)["child_sas"] == []
    for cmd in ("showstates", "globalstatus", "listen", "rereadsecrets"):
        assert ipsec(cmd, "--rundir", rd).returncode == 0, cmd


def test_add_delete_up_down(daemon):
    rd, conf = str(daemon.rundir), str(daemon.conf)
    r = ipsec("add", "--rundir", rd, "c-later")  # pluto's own --config
    assert r.returncode == 0 and '"c-later": added IKEv2 connection' in r.stdout
    r = ipsec("add", "--rundir", rd, "--config", conf, "c-later")  # replaces it
    assert r.returncode == 0 and '"c-later": added IKEv2 connection' in r.stdout
    assert '"c-later":' in ipsec("status", "--rundir", rd).stdout
    r = ipsec("add", "--rundir", rd, "--config", conf, "c-missing")
    assert r.returncode == 21 and 'conn "c-missing" not found' in r.stdout
    assert ipsec("down", "--rundir", rd, "c-later").returncode == 0
    assert ipsec("delete", "--rundir", rd, "c-later").returncode == 0
    assert '"c-later":' not in ipsec("status", "--rundir", rd).stdout
    r = ipsec("up", "--rundir", rd, "c-later")
    assert r.returncode == 21
    r = ipsec("auto", "--rundir", rd, "--config", conf, "--add", "c-later")
    assert r.returncode == 0 and '"c-later": added IKEv2 connection' in r.stdout
    assert ipsec("auto", "--rundir", rd, "--delete", "c-later").returncode == 0


def test_add_sees_an_edited_file(daemon, tmp_path):
    """pluto reuses its parse for repeated adds, but never a stale one."""
    rd = str(daemon.rundir)
    conf = tmp_path / "more.conf"
    conf.write_text("conn m1\n\tleft=127.0.0.1\n\tright=192.0.2.91\n\tauthby=secret\n")
    r = ipsec("add", "--rundir", rd, "--config", str(conf), "m1")
    assert r.returncode == 0 and '"m1": added IKEv2 connection' in r.stdout
    assert ipsec("add", "--rundir", rd, "--config", str(conf), "m2").returncode == 21
    with conf.open("a") as f:  # a conn added to the file after the first add
        f.write("conn m2\n\tleft=127.0.0.1\n\tright=192.0.2.92\n\tauthby=secret\n")
    r = ipsec("add", "--rundir", rd, "--config", str(conf), "m2")
    assert r.returncode == 0 and '"m2": added IKEv2 connection' in r.stdout
    for name in ("m1", "m2"):  # and the same name added twice is a fresh connection
        assert ipsec("delete", "--rundir", rd, name).returncode == 0
    r = ipsec("add", "--rundir", rd, "--config", str(conf), "m1")
    assert r.returncode == 0 and '"m1": added IKEv2 connection' in r.stdout
    assert ipsec("delete", "--rundir", rd, "m1").returncode == 0
    assert ipsec("auto", "--rundir", rd, "--up", "c-later").returncode == 21
    assert ipsec("auto", "--rundir", rd, "c-later").returncode == 33
    r = ipsec("up", "--rundir", rd)
    assert r.returncode == 33


def test_checkconfig_addconn_readwriteconf(daemon, tmp_path):
    conf = str(daemon.conf)
    assert ipsec("checkconfig", "--config", conf).returncode == 0
    bad = tmp_path / "bad.conf"
    bad.write_text("conn x\n\tleft=127.0.0.1\n\tfrobnicate=1\n")
    r = ipsec("checkconfig", "--config", str(bad))
    assert r.returncode != 0 and f"{bad}:3" in (r.stdout + r.stderr)
    r = ipsec("readwriteconf", "--config", conf)
    assert r.returncode == 0 and "c-add" in r.stdout
    r = ipsec("addconn", "--config", conf, "--listall")
    assert r.returncode == 0 and "c-add" in r.stdout


def test_start_stop_restart(tmp_path):
    ns = NetNS()
    p = Pluto(ns, tmp_path)
    try:
        conf = tmp_path / "ipsec.conf"
        conf.write_text("config setup\n\tuniqueids=yes\n")
        rd = str(p.rundir)
        args = ("--rundir", rd, "--config", str(conf), "--use-none", "--logfile",
                str(tmp_path / "log"), "--secretsfile", str(tmp_path / "nosecrets"))
        r = ipsec("start", *args, ns=ns)
        assert r.returncode == 0, r.stderr
        pid = int(p.pidfile.read_text())
        p.pids.add(pid)
        assert alive(pid)
        r = ipsec("start", *args, ns=ns)
        assert r.returncode == 1 and "already running" in r.stderr
        r = ipsec("restart", *args, ns=ns)
        assert r.returncode == 0, r.stderr
        pid2 = int(p.pidfile.read_text())
        p.pids.add(pid2)
        assert pid2 != pid and not alive(pid) and alive(pid2)
        assert ipsec("stop", "--rundir", rd).returncode == 0
        wait_for(lambda: not alive(pid2), 30, "pluto to stop")
        assert not p.pidfile.exists()
        r = ipsec("stop", "--rundir", rd)
        assert r.returncode == 0 and "not running" in r.stderr
        # pluto refusing to start (no such config) makes ipsec start fail too
        r = ipsec("start", "--rundir", rd, "--config", str(tmp_path / "missing.conf"), ns=ns)
        assert r.returncode == 1 and "no such file" in r.stderr
    finally:
        p.stop()
        ns.delete()
