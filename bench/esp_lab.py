"""Two network namespaces joined by a veth pair, for the userspace ESP plane's tests and bench.

west: 192.0.2.1 on the veth, protects 198.51.100.0/24 (198.51.100.1 on lo)
east: 192.0.2.2 on the veth, protects 203.0.113.0/24 (203.0.113.1 on lo)

Names carry the PID so parallel runs never collide; everything is removed on
exit, also after a failure.  Only processes started here are killed, by PID.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

WEST_OUTER, EAST_OUTER = "192.0.2.1", "192.0.2.2"
WEST_NET, EAST_NET = "198.51.100.0/24", "203.0.113.0/24"
WEST_HOST, EAST_HOST = "198.51.100.1", "203.0.113.1"
PYTHON = sys.executable


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r


class Lab:
    """Context manager owning two namespaces and the processes started in them."""

    def __init__(self, tag: str = "") -> None:
        pid = os.getpid()
        self.west = f"ppw{pid}{tag}"
        self.east = f"ppe{pid}{tag}"
        self.procs: list[subprocess.Popen[str]] = []
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"ppesp{pid}"))

    def __enter__(self) -> Lab:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> None:
        w, e = self.west, self.east
        sh("ip", "netns", "add", w)
        sh("ip", "netns", "add", e)
        vw, ve = f"v{w}"[:15], f"v{e}"[:15]
        sh("ip", "-n", w, "link", "add", vw, "type", "veth", "peer", "name", ve, "netns", e)
        for ns, dev, outer, host in ((w, vw, WEST_OUTER, WEST_HOST),
                                     (e, ve, EAST_OUTER, EAST_HOST)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{outer}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "addr", "add", f"{host}/32", "dev", "lo")

    def exec(self, ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *cmd, check=check)

    def spawn(self, ns: str, *cmd: str, **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], text=True, **kw)
        self.procs.append(p)
        return p

    def plane(self, ns: str, cfg: dict[str, Any]) -> Plane:
        path = self.tmp / f"{ns}.json"
        path.write_text(json.dumps(cfg))
        os.chmod(path, 0o600)
        p = self.spawn(ns, PYTHON, "-m", "pypluto.kernel.userspace.handkey", str(path),
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert p.stdout is not None
        line = p.stdout.readline().strip()
        if line != "ready":
            p.kill()
            raise RuntimeError(f"handkey in {ns} did not start: {line!r}")
        return Plane(p)

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=5)
                except (subprocess.TimeoutExpired, OSError):
                    p.kill()
                    p.wait(timeout=5)
        for ns in (self.west, self.east):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


class Plane:
    """A running ``handkey`` process."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def ask(self, cmd: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.ask("stats")))

    def close(self) -> None:
        try:
            self.ask("close")
            self.proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()


def handkeyed(encr_id: int = 20, encr_key_len: int = 36, integ_id: int = 0,
              integ_key_len: int = 0, *, ifname_tag: str = "", mode: str = "tunnel",
              esn: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """Matching west/east handkey configs with random keys (SPI 0x1001 west->east, 0x2002 back)."""
    k1, k2 = os.urandom(encr_key_len).hex(), os.urandom(encr_key_len).hex()
    i1, i2 = os.urandom(integ_key_len).hex(), os.urandom(integ_key_len).hex()
    pid = os.getpid()

    def sa(src: str, dst: str, spi: int, direction: str, key: str, ikey: str,
           lts: str, rts: str) -> dict[str, Any]:
        return dict(src=src, dst=dst, spi=spi, direction=direction, encr_id=encr_id,
                    encr_key=key, integ_id=integ_id, integ_key=ikey, reqid=1, mode=mode,
                    esn=esn, encap_sport=4500, encap_dport=4500, local_ts=[lts],
                    remote_ts=[rts])

    def pol(src: str, dst: str, direction: str, ts: str, td: str) -> dict[str, Any]:
        return dict(src=src, dst=dst, direction=direction, reqid=1, tmpl_src=ts, tmpl_dst=td)

    west = dict(
        ifname=f"ppt{pid}w{ifname_tag}"[:15], table=4500, local=WEST_OUTER, port=4500,
        sas=[sa(WEST_OUTER, EAST_OUTER, 0x1001, "out", k1, i1, WEST_NET, EAST_NET),
             sa(EAST_OUTER, WEST_OUTER, 0x2002, "in", k2, i2, WEST_NET, EAST_NET)],
        policies=[pol(WEST_NET, EAST_NET, "out", WEST_OUTER, EAST_OUTER),
                  pol(EAST_NET, WEST_NET, "in", EAST_OUTER, WEST_OUTER)])
    east = dict(
        ifname=f"ppt{pid}e{ifname_tag}"[:15], table=4500, local=EAST_OUTER, port=4500,
        sas=[sa(WEST_OUTER, EAST_OUTER, 0x1001, "in", k1, i1, EAST_NET, WEST_NET),
             sa(EAST_OUTER, WEST_OUTER, 0x2002, "out", k2, i2, EAST_NET, WEST_NET)],
        policies=[pol(EAST_NET, WEST_NET, "out", EAST_OUTER, WEST_OUTER),
                  pol(WEST_NET, EAST_NET, "in", WEST_OUTER, EAST_OUTER)])
    return west, east


def wait_for(pred: Any, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False
