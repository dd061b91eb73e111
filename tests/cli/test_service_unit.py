"""contrib/pluto.service.in: the unit's Exec* lines run as written (no systemctl).

``make service`` renders the unit as an install does (the paths `make install`
created); the test then runs ExecStartPre, ExecStart (with a fake systemd
NOTIFY_SOCKET and WATCHDOG_USEC), ExecReload and ExecStop exactly as the
unit's command lines say, in a network namespace, with a temp config.
"""

from __future__ import annotations

import os
import pathlib
import shlex
import socket
import subprocess
import sys

import pytest
from plutoproc import NetNS, alive, wait_for

from pypluto.control.client import ControlError, call

pytestmark = pytest.mark.netns

REPO = pathlib.Path(__file__).resolve().parents[2]
BINDIR = pathlib.Path(sys.executable).parent  # the .venv/bin `make install` made


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """systemd.syntax(7), the part units use here: [Section], Key=value, repeated keys."""
    sections: dict[str, dict[str, list[str]]] = {}
    cur: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            cur = sections.setdefault(line[1:-1], {})
            continue
        assert cur is not None and "=" in line, raw
        k, v = line.split("=", 1)
        cur.setdefault(k.strip(), []).append(v.strip())
    return sections


def render(tmp: pathlib.Path, conf: pathlib.Path, rundir: pathlib.Path) -> pathlib.Path:
    out = tmp / "pluto.service"
    subprocess.run(["make", "-s", "-C", str(REPO), "service", f"BINDIR={BINDIR}",
                    f"IPSEC_CONF={conf}", f"RUNDIR={rundir}", f"SERVICE_OUT={out}"],
                   check=True, capture_output=True, text=True, timeout=60)
    return out


def test_default_render_uses_the_paths_make_install_creates(tmp_path) -> None:
    out = tmp_path / "default.service"
    subprocess.run(["make", "-s", "-C", str(REPO), "service", f"SERVICE_OUT={out}"],
                   check=True, capture_output=True, timeout=60)
    svc = parse_unit(out.read_text())["Service"]
    for key in ("ExecStartPre", "ExecStart", "ExecReload", "ExecStop"):
        for line in svc[key]:
            prog = shlex.split(line)[0]
            assert prog == str(REPO / ".venv" / "bin" / os.path.basename(prog)), line
            assert os.access(prog, os.X_OK), f"{prog} does not exist: run make install"
    assert svc["Type"] == ["notify"] and svc["WatchdogSec"] == ["200"]
    assert "@" not in out.read_text().replace("man:", "")


def test_exec_lines_as_written(tmp_path) -> None:
    rundir = tmp_path / "run"
    conf = tmp_path / "ipsec.conf"
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text('@a @b : PSK "unit-test-secret-0123456789abcdef"\n')
    secrets.chmod(0o600)
    conf.write_text(f"config setup\n\tprotostack=none\n\tsecretsfile={secrets}\n"
                    f"\tlogfile={tmp_path / 'pluto.log'}\n\n"
                    "conn unit\n\tleft=127.0.0.1\n\tleftid=@a\n\tright=192.0.2.9\n"
                    "\trightid=@b\n\tauthby=secret\n\tauto=add\n")
    svc = parse_unit(render(tmp_path, conf, rundir).read_text())["Service"]
    assert svc["Type"] == ["notify"]
    ns = NetNS()
    notify_path = str(tmp_path / "notify")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(notify_path)
    nsock.settimeout(60)
    proc = None
    rundir.mkdir()  # systemd's RuntimeDirectory=
    try:
        def run(line: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["ip", "netns", "exec", ns.name, *shlex.split(line)],
                                  capture_output=True, text=True, timeout=120, check=False)

        for line in svc["ExecStartPre"]:
            r = run(line)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
        (start,) = svc["ExecStart"]
        env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="2000000")
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *shlex.split(start)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        msg = nsock.recv(4096).decode()  # Type=notify: start-up is done when READY=1 arrives
        assert "READY=1" in msg.split("\n"), msg
        ctl = str(rundir / "pluto.ctl")
        assert call(ctl, "ping", {}, timeout=10).rc == 0
        pid = int((rundir / "pluto.pid").read_text())
        for line in svc["ExecReload"]:
            r = run(line)
            assert r.returncode == 0 and "loading secrets from" in r.stdout, (line, r)
        for line in svc["ExecStop"]:
            r = run(line)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
        assert proc.wait(timeout=60) == 0
        wait_for(lambda: not alive(pid), 30, "pluto to exit")
        assert not (rundir / "pluto.pid").exists() and not (rundir / "pluto.ctl").exists()
        with pytest.raises(ControlError):
            call(ctl, "ping", {}, timeout=5)
        # a config that fails the check fails ExecStartPre, so systemd never runs ExecStart
        conf.write_text("conn broken\n\tleft=127.0.0.1\n\tfrobnicate=yes\n")
        r = run(svc["ExecStartPre"][0])
        assert r.returncode != 0 and f"{conf}:3" in r.stdout + r.stderr
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        nsock.close()
        ns.delete()


def test_exec_start_pings_the_watchdog(tmp_path) -> None:
    rundir = tmp_path / "run"
    rundir.mkdir()
    conf = tmp_path / "ipsec.conf"
    conf.write_text(f"config setup\n\tprotostack=none\n\tsecretsfile={tmp_path / 'none'}\n"
                    f"\tlogfile={tmp_path / 'pluto.log'}\n")
    svc = parse_unit(render(tmp_path, conf, rundir).read_text())["Service"]
    ns = NetNS()
    notify_path = str(tmp_path / "notify")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(notify_path)
    nsock.settimeout(20)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="200000")
    proc = subprocess.Popen(["ip", "netns", "exec", ns.name, *shlex.split(svc["ExecStart"][0])],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen: list[str] = []
        while "WATCHDOG=1" not in seen:
            seen += nsock.recv(4096).decode().split("\n")  # socket.timeout fails the test
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        nsock.close()
        ns.delete()
