#!/usr/bin/env python3
"""`make demo`: two pyplutos in two network namespaces bring up a PSK tunnel and carry traffic.

What it does, step by step (it says so as it goes):

1. checks that it runs as root with ``ip`` and ``ping`` available;
2. picks the data plane: kernel XFRM (``--use-xfrm``) when the kernel can hold
   an ESP SA, else pypluto's userspace ESP plane (``--use-userspace``, ESP in
   UDP over a TUN device);
3. creates two namespaces joined by a veth pair (RFC 5737 addresses only)::

       west 198.51.100.1 --- 192.0.2.1 <== veth ==> 192.0.2.2 --- 203.0.113.1 east

4. writes one ipsec.conf (Libreswan syntax, PSK, subnet to subnet) used by both
   daemons, and an ipsec.secrets with a fresh random PSK;
5. starts ``pluto`` in each namespace and ``whack --initiate``s from west
   (IKE_SA_INIT + IKE_AUTH, RFC 7296 §1.2);
6. pings through the tunnel and sends 1 MiB over TCP each way, checked by SHA-256;
7. prints ``ipsec status`` and ``ipsec trafficstatus`` of both sides;
8. shuts both daemons down and deletes everything it created (even on failure;
   the logs are then kept and their path printed).

Only processes it started are stopped (by PID) and only its own namespaces
are deleted.  Exit status 0 when every step worked.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable

VENV_BIN = pathlib.Path(sys.executable).parent
WEST_OUTER, EAST_OUTER = "192.0.2.1", "192.0.2.2"
WEST_INNER, EAST_INNER = "198.51.100.1", "203.0.113.1"
NBYTES = 1 << 20


def say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def detail(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}", flush=True)


class DemoError(Exception):
    pass


def tool(name: str) -> str:
    p = VENV_BIN / name
    if p.exists():
        return str(p)
    found = shutil.which(name)
    if not found:
        raise DemoError(f"'{name}' not found (run `make install` first)")
    return found


def run(argv: list[str], ns: str | None = None, check: bool = True, timeout: float = 60,
        input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    full = (["ip", "netns", "exec", ns] if ns else []) + argv
    r = subprocess.run(full, capture_output=True, timeout=timeout, input=input,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise DemoError(f"`{' '.join(full)}` failed (exit {r.returncode}): "
                        f"{(r.stderr or r.stdout).decode(errors='replace').strip()}")
    return r


def wait_for(pred: Callable[[], bool], timeout: float, what: str,
             alive: Callable[[], bool] = lambda: True) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if not alive():
            raise DemoError(f"a daemon exited while waiting for {what}")
        if time.monotonic() > end:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def choose_plane(forced: str | None) -> str:
    if forced:
        return forced
    try:
        from pypluto.kernel.probe import probe_kernel_esp

        ok, why = probe_kernel_esp()
    except Exception as e:  # the probe is best effort; userspace always works
        ok, why = False, f"probe unavailable ({e})"
    plane = "xfrm" if ok else "userspace"
    say(f"data plane: {plane} ({why})")
    return plane


CONF = """\
# written by tools/demo.py: one file for both ends; each pluto finds which end
# it is by its local addresses (as Libreswan's pluto does)
config setup
\tplutodebug=none

conn west-east
\tauthby=secret
\tleft={west}
\tleftid=@west.example
\tleftsubnet=198.51.100.0/24
\tleftsourceip={west_inner}
\tright={east}
\trightid=@east.example
\trightsubnet=203.0.113.0/24
\trightsourceip={east_inner}
\tauto=add
"""

RECEIVER = r"""
import hashlib, socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1); s.settimeout(60)
print("ready", flush=True)
c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
while b := c.recv(65536):
    h.update(b); n += len(b)
print(h.hexdigest(), n, flush=True)
"""

SENDER = r"""
import socket, sys
data = sys.stdin.buffer.read()
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60,
                             source_address=(sys.argv[3], 0))
s.sendall(data); s.shutdown(socket.SHUT_WR); s.recv(1)
"""


class Demo:
    def __init__(self, plane: str, keep: bool) -> None:
        tag = f"{os.getpid()}"
        self.west, self.east = f"ppdemow{tag}", f"ppdemoe{tag}"
        self.plane = plane
        self.keep = keep
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="pypluto-demo-"))
        self.dir.chmod(0o755)
        self.namespaces: list[str] = []
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}

    # ---------------------------------------------------------------- lab
    def make_namespaces(self) -> None:
        say(f"creating network namespaces {self.west} and {self.east}, joined by a veth pair")
        existing = run(["ip", "netns", "list"]).stdout.decode()
        for ns in (self.west, self.east):
            if any(line.split()[0] == ns for line in existing.splitlines() if line.strip()):
                raise DemoError(f"namespace {ns} exists already; not touching it")
        for ns in (self.west, self.east):
            run(["ip", "netns", "add", ns])
            self.namespaces.append(ns)
            run(["ip", "link", "set", "lo", "up"], ns)
        run(["ip", "link", "add", "west", "netns", self.west, "type", "veth",
             "peer", "name", "east", "netns", self.east])
        for ns, dev, outer, inner in ((self.west, "west", WEST_OUTER, WEST_INNER),
                                      (self.east, "east", EAST_OUTER, EAST_INNER)):
            run(["ip", "addr", "add", f"{outer}/24", "dev", dev], ns)
            run(["ip", "link", "set", dev, "up"], ns)
            # the protected subnet's host address: a dummy interface if the
            # kernel has one, else a /32 on lo
            if run(["ip", "link", "add", "inner0", "type", "dummy"], ns, check=False).returncode:
                run(["ip", "addr", "add", f"{inner}/32", "dev", "lo"], ns)
            else:
                run(["ip", "addr", "add", f"{inner}/24", "dev", "inner0"], ns)
                run(["ip", "link", "set", "inner0", "up"], ns)
        detail(f"west: {WEST_OUTER} (outer), {WEST_INNER} protecting 198.51.100.0/24")
        detail(f"east: {EAST_OUTER} (outer), {EAST_INNER} protecting 203.0.113.0/24")
        wait_for(lambda: run(["ping", "-c1", "-W1", EAST_OUTER], self.west,
                             check=False).returncode == 0, 10, "the veth link")

    # ------------------------------------------------------------ daemons
    def start_daemons(self) -> None:
        conf = self.dir / "ipsec.conf"
        conf.write_text(CONF.format(west=WEST_OUTER, east=EAST_OUTER, west_inner=WEST_INNER,
                                    east_inner=EAST_INNER))
        secrets_file = self.dir / "ipsec.secrets"
        secrets_file.touch(mode=0o600)
        psk = secrets.token_urlsafe(32)  # never printed
        secrets_file.write_text(f'@west.example @east.example : PSK "{psk}"\n')
        say(f"wrote {conf} (PSK, subnet to subnet) and {secrets_file} (a fresh random PSK)")
        for side, ns in (("west", self.west), ("east", self.east)):
            rundir = self.dir / side
            rundir.mkdir()
            argv = [tool("pluto"), "--nofork", "--stderrlog", "--rundir", str(rundir),
                    "--config", str(conf), "--secretsfile", str(secrets_file),
                    f"--use-{self.plane}"]
            say(f"starting pluto in {ns}: {' '.join(argv[1:])}")
            with open(self.dir / f"{side}.log", "wb") as log:
                self.daemons[side] = subprocess.Popen(
                    ["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        for side in ("west", "east"):
            ctl = self.dir / side / "pluto.ctl"
            wait_for(lambda c=ctl, s=side: c.exists()  # type: ignore[misc]
                     and self.ipsec(s, "briefstatus", check=False).returncode == 0,
                     30, f"{side} pluto's control socket", self.all_alive)
        detail("both daemons are up (logs: " + ", ".join(
            str(self.dir / f"{s}.log") for s in ("west", "east")) + ")")

    def all_alive(self) -> bool:
        return all(p.poll() is None for p in self.daemons.values())

    def ipsec(self, side: str, *args: str, check: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        ns = self.west if side == "west" else self.east
        # ipsec COMMAND [--rundir D] [arguments]
        return run([tool("ipsec"), args[0], "--rundir", str(self.dir / side), *args[1:]], ns,
                   check=check, timeout=timeout)

    def whack(self, side: str, *args: str, check: bool = True,
              timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        ns = self.west if side == "west" else self.east
        return run([tool("whack"), "--rundir", str(self.dir / side), *args], ns, check=check,
                   timeout=timeout)

    def child_up(self, side: str) -> bool:
        r = self.whack(side, "--trafficstatus", check=False)
        return b"inBytes=" in r.stdout

    def routes_up(self) -> bool:
        return all(subnet in run(["ip", "route", "show", "table", "all"], ns).stdout.decode()
                   for ns, subnet in ((self.west, "203.0.113.0/24"),
                                      (self.east, "198.51.100.0/24")))

    # ------------------------------------------------------------ tunnel
    def bring_up(self) -> None:
        say("west initiates the tunnel: whack --name west-east --initiate")
        r = self.whack("west", "--name", "west-east", "--initiate", check=False, timeout=60)
        detail(r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace"))
        wait_for(lambda: self.child_up("west") and self.child_up("east") and self.routes_up(),
                 30, "the Child SA and its routes on both ends", self.all_alive)
        say("tunnel established on both ends")

    def ping(self) -> None:
        for ns, src, dst in ((self.west, WEST_INNER, EAST_INNER),
                             (self.east, EAST_INNER, WEST_INNER)):
            say(f"ping {dst} from {src}, through the tunnel")
            r = run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-I", src, dst], ns,
                    check=False, timeout=30)
            detail(r.stdout.decode(errors="replace").strip().splitlines()[-2])
            if r.returncode != 0:
                raise DemoError(f"ping {src} -> {dst} failed:\n{r.stdout.decode()}")

    def transfer(self) -> None:
        for (sns, src), (rns, dst), port in (((self.west, WEST_INNER), (self.east, EAST_INNER),
                                              5001),
                                             ((self.east, EAST_INNER), (self.west, WEST_INNER),
                                              5002)):
            say(f"sending {NBYTES >> 20} MiB of random data over TCP {src} -> {dst}:{port}")
            recv = subprocess.Popen(["ip", "netns", "exec", rns, sys.executable, "-c", RECEIVER,
                                     dst, str(port)], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                assert recv.stdout is not None
                if recv.stdout.readline().strip() != b"ready":
                    raise DemoError("the TCP receiver did not start")
                data = os.urandom(NBYTES)
                t0 = time.monotonic()
                run([sys.executable, "-c", SENDER, dst, str(port), src], sns, input=data,
                    timeout=120)
                out = recv.stdout.readline().decode().split()
                dt = time.monotonic() - t0
                recv.wait(30)
            finally:
                if recv.poll() is None:
                    os.killpg(recv.pid, signal.SIGKILL)
                    recv.wait()
            sent = hashlib.sha256(data).hexdigest()
            if len(out) != 2 or out[0] != sent or int(out[1]) != NBYTES:
                raise DemoError(f"transfer corrupted: sent {sent}, received {out}")
            detail(f"received {out[1]} bytes, SHA-256 {sent[:16]}... matches "
                   f"({NBYTES * 8 / dt / 1e6:.1f} Mbit/s)")

    def show_status(self) -> None:
        for side in ("west", "east"):
            for cmd in ("status", "trafficstatus"):
                say(f"ipsec {cmd} on {side}")
                r = self.ipsec(side, cmd, check=False)
                detail((r.stdout + r.stderr).decode(errors="replace") or "(nothing)")

    # ----------------------------------------------------------- cleanup
    def cleanup(self, failed: bool) -> None:
        say("cleaning up: stopping both daemons and deleting the namespaces")
        for side, proc in self.daemons.items():
            if proc.poll() is None:
                self.ipsec(side, "stop", check=False, timeout=15)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        for ns in self.namespaces:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if failed or self.keep:
            say(f"logs and configuration kept in {self.dir}")
            if failed:
                for side in ("west", "east"):
                    log = self.dir / f"{side}.log"
                    if log.exists():
                        print(f"---- {side} pluto log (last 25 lines)")
                        detail("\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=textwrap.dedent(__doc__.split("\n\n", 1)[1]))
    ap.add_argument("--plane", choices=["userspace", "xfrm"],
                    help="force a data plane (default: xfrm if the kernel has ESP)")
    ap.add_argument("--keep", action="store_true", help="keep logs and configuration")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo: must run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    for t in ("ip", "ping"):
        if not shutil.which(t):
            print(f"demo: '{t}' is missing (apt-get install iproute2 iputils-ping)",
                  file=sys.stderr)
            return 2
    say("pypluto demo: two IKEv2 daemons, a PSK tunnel, traffic through it")
    plane = choose_plane(args.plane)
    demo = Demo(plane, args.keep)
    failed = True
    try:
        demo.make_namespaces()
        demo.start_daemons()
        demo.bring_up()
        demo.ping()
        demo.transfer()
        demo.show_status()
        failed = False
    except (DemoError, subprocess.TimeoutExpired) as e:
        print(f"demo: FAILED: {e}", file=sys.stderr)
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr)
    finally:
        demo.cleanup(failed)
    say("demo " + ("FAILED" if failed else "finished: everything worked and was removed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
