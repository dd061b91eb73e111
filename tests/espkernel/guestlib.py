"""What every ESP-kernel guest shares: runs INSIDE the User-Mode-Linux kernel.

The ``guest_*.py`` scripts are started by ``tests/espkernel/test_*_uml.py``
through ``tools/run-in-esp-kernel.sh`` (one process per boot: process creation
is slow under UML).  This module is their common ground:

* the lab: two network namespaces joined by a veth pair (:func:`setup_lab`),
  RFC 5737/3849 documentation addresses, the plain routes between the subnets;
* the report: ``CHECK <name>: OK|FAILED`` lines (:func:`check`) and the
  scenario loop with its summary line and exit status (:func:`run_guest`);
* an IKE daemon in a namespace, ours or Libreswan 4.10 (:class:`Daemon`);
* the clean-up after a scenario, also when it failed (:func:`cleaned_up`);
* what is left in a namespace: XFRM states and policies of any owner
  (:func:`xfrm_left`), or of ours, devices and routes (:func:`leftovers`),
  which the ``...-nothing-left...`` checks require to be empty.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src"))

from pypluto.kernel.xfrm import XfrmBackend  # noqa: E402

ip = ipaddress.ip_address
net = ipaddress.ip_network

T0 = time.monotonic()
PID = os.getpid()
LEFT, RIGHT = f"ppxl{PID}", f"ppxr{PID}"
L4, R4 = ip("192.0.2.1"), ip("192.0.2.2")
L6, R6 = ip("2001:db8::1"), ip("2001:db8::2")
LNET4, RNET4 = net("198.51.100.0/24"), net("203.0.113.0/24")
LIN4, RIN4 = "198.51.100.1", "203.0.113.1"
LNET6, RNET6 = net("2001:db8:1::/64"), net("2001:db8:2::/64")
LIN6, RIN6 = "2001:db8:1::1", "2001:db8:2::1"
LIBRESWAN = "/usr/libexec/ipsec/pluto"

FAILED: list[str] = []
CHILDREN: list[subprocess.Popen[bytes]] = []


# --- report --------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {msg}", flush=True)


def check(name: str, ok: bool, detail: str = "") -> None:
    log(f"CHECK {name}: {'OK' if ok else 'FAILED'}{' (' + detail + ')' if detail else ''}")
    if not ok:
        FAILED.append(name)


# --- commands ------------------------------------------------------------------------------
def sh(argv: list[str], check_rc: bool = True, input_text: str | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, input=input_text)
    if check_rc and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res.stdout + res.stderr


def ip_batch(ns: str | None, lines: list[str]) -> None:
    """Many ``ip`` commands in one process (``ip -batch``)."""
    argv = ["ip"] + (["-n", ns] if ns else []) + ["-batch", "-"]
    sh(argv, input_text="\n".join(lines) + "\n")


def ping(ns: str, src: str, dst: str, count: int = 3, wait: int = 2) -> bool:
    v6 = ":" in dst
    argv = ["ip", "netns", "exec", ns, "ping"] + (["-6"] if v6 else [])
    argv += ["-c", str(count), "-i", "0.2", "-W", str(wait), "-I", src, dst]
    res = subprocess.run(argv, capture_output=True, text=True)
    m = re.search(r"(\d+) received", res.stdout)
    return res.returncode == 0 and m is not None and int(m.group(1)) == count


FIRST = 5  # pings sent on a trap's first trigger


def first_pings(ns: str, src: str, dst: str) -> tuple[int, list[int]]:
    """Answers to the first FIRST pings (one every 0.5 s, 3 s wait each) and the
    sequence numbers that were answered."""
    res = subprocess.run(["ip", "netns", "exec", ns, "ping", "-c", str(FIRST), "-i", "0.5",
                          "-W", "3", "-I", src, dst], capture_output=True, text=True)
    m = re.search(r"(\d+) received", res.stdout)
    seqs = sorted(int(x) for x in re.findall(r"icmp_seq=(\d+)", res.stdout))
    return (int(m.group(1)) if m else -1), seqs


def wait_for(pred: Callable[[], object], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.2)


def waited(pred: Callable[[], object], timeout: float, what: str) -> bool:
    """:func:`wait_for` that answers False instead of raising on the timeout."""
    try:
        wait_for(pred, timeout, what)
        return True
    except TimeoutError:
        return False


# --- the lab -------------------------------------------------------------------------------
def setup_lab() -> None:
    ip_batch(
        None,
        [
            f"netns add {LEFT}",
            f"netns add {RIGHT}",
            f"link add vl{PID} type veth peer name vr{PID}",
            f"link set vl{PID} netns {LEFT}",
            f"link set vr{PID} netns {RIGHT}",
        ],
    )
    for ns, dev, outer4, outer6, inner4, inner6, peer_net4, peer_net6, via4, via6 in (
        (LEFT, f"vl{PID}", L4, L6, LIN4, LIN6, RNET4, RNET6, R4, R6),
        (RIGHT, f"vr{PID}", R4, R6, RIN4, RIN6, LNET4, LNET6, L4, L6),
    ):
        ip_batch(
            ns,
            [
                "link set lo up",
                f"addr add {outer4}/24 dev {dev}",
                f"addr add {outer6}/64 dev {dev} nodad",
                f"link set {dev} up",
                "link add inner0 type dummy",
                f"addr add {inner4}/24 dev inner0",
                f"addr add {inner6}/64 dev inner0 nodad",
                "link set inner0 up",
                f"route add {peer_net4} via {via4} src {inner4}",
                f"route add {peer_net6} via {via6} src {inner6}",
            ],
        )


def teardown_lab() -> None:
    for p in CHILDREN:
        if p.poll() is None:
            p.kill()
            p.wait()
    for ns in (LEFT, RIGHT):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def lab_routes(add: bool) -> None:
    """The lab's plain routes to the other side's subnets, IPv4 and IPv6 (out while a
    route-based VPN's device carries them)."""
    verb = "add" if add else "del"
    for ns, peer4, peer6, via4, via6, in4, in6 in (
            (LEFT, RNET4, RNET6, R4, R6, LIN4, LIN6),
            (RIGHT, LNET4, LNET6, L4, L6, RIN4, RIN6)):
        sh(["ip", "-n", ns, "route", verb, str(peer4), "via", str(via4), "src", in4],
           check_rc=False)
        sh(["ip", "-n", ns, "-6", "route", verb, str(peer6), "via", str(via6), "src", in6],
           check_rc=False)


def restore_lab_routes(namespaces: Sequence[str] = (LEFT, RIGHT)) -> None:
    """The lab's IPv4 route to the other side's subnet back in each namespace (after
    daemons that route it themselves, with leftsourceip=)."""
    for ns in namespaces:
        peer, via, src = (RNET4, R4, LIN4) if ns == LEFT else (LNET4, L4, RIN4)
        ip_batch(ns, [f"route replace {peer} via {via} src {src}"])


def larval_drop(ns: str) -> str:
    """net.core.xfrm_larval_drop of a namespace (1: a trap drops, 0: the kernel queues)."""
    return sh(["ip", "netns", "exec", ns, "cat", "/proc/sys/net/core/xfrm_larval_drop"]).strip()


def warm_crypto() -> None:
    """Instantiate the kernel's rfc4106(gcm(aes)) once before the scenarios.

    The first SA of an algorithm makes the kernel build the crypto instance (in UML
    with module requests that take about a second); without this, that second
    would fall into the first scenario's negotiation and count as pings lost."""
    spi = "0x0badcafe"
    key = "0x" + "11" * 36
    sh(["ip", "-n", LEFT, "xfrm", "state", "add", "src", str(L4), "dst", str(R4),
          "proto", "esp", "spi", spi, "mode", "tunnel", "aead", "rfc4106(gcm(aes))", key,
          "128"])
    sh(["ip", "-n", LEFT, "xfrm", "state", "delete", "src", str(L4), "dst", str(R4),
          "proto", "esp", "spi", spi])


# --- what the kernel holds -------------------------------------------------------------------
def ip_s_packets(ns: str, spi: int) -> int:
    """Packets of one SA as ``ip -s xfrm state`` prints them."""
    text = sh(["ip", "-n", ns, "-s", "xfrm", "state"])
    blocks = re.split(r"\n(?=src )", text)
    for b in blocks:
        if f"spi {spi:#010x}" in b:
            m = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\), (\d+)\(packets\)", b)
            if m:
                return int(m.group(2))
    return -1


def esp_spis(ns: str) -> list[str]:
    """The SPIs of ``ip xfrm state`` (proto esp) in a namespace, sorted."""
    out = sh(["ip", "-n", ns, "xfrm", "state"])
    return sorted(re.findall(r"proto esp spi (0x[0-9a-f]+)", out))


def policy_blocks(ns: str) -> list[str]:
    """``ip xfrm policy`` of a namespace, one block per policy."""
    pol = sh(["ip", "-n", ns, "xfrm", "policy"])
    return [b for b in re.split(r"(?m)^(?=src )", pol) if b.startswith("src ")]


def xfrm_left(ns: str, *, sockets: bool = True,
              theirs: re.Pattern[str] | None = None) -> tuple[int, list[str]]:
    """(XFRM states, policies, one line each) of any owner left in a namespace.

    ``sockets=False`` leaves out the per-socket bypass policies (``socket in|out``),
    which live and die with a running daemon's IKE sockets; ``theirs`` matches
    policies that are a peer's own and not of the conn under test."""
    states = sh(["ip", "-n", ns, "xfrm", "state"]).count("proto ")
    pols = [" ".join(b.split()) for b in policy_blocks(ns) if sockets or "\tsocket " not in b]
    return states, [p for p in pols if theirs is None or not theirs.match(p)]


def has_dev(ns: str, name: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", "dev", name],
                          capture_output=True).returncode == 0


def dev_text(ns: str, name: str) -> str:
    return sh(["ip", "-n", ns, "-d", "addr", "show", "dev", name], check_rc=False)


def dev_counts(ns: str, name: str) -> tuple[int, int]:
    """(tx, rx) packets of a device in a namespace (``ip -s link show``)."""
    out = sh(["ip", "-n", ns, "-s", "link", "show", "dev", name], check_rc=False)
    nums = re.findall(r"^\s+(\d+)\s+(\d+)\s+\d+\s+\d+", out, re.MULTILINE)
    if len(nums) < 2:
        return -1, -1
    return int(nums[1][1]), int(nums[0][1])


def routes(ns: str, dst: object, v6: bool = False) -> str:
    """``ip route show DST`` in a namespace ("" when there is none)."""
    return sh(["ip", "-n", ns] + (["-6"] if v6 else []) + ["route", "show", str(dst)],
              check_rc=False).strip()


def leftovers(be: XfrmBackend, *, devices: Sequence[str] = (), to: Sequence[object] = (),
              words: Sequence[str] = ()) -> list[str]:
    """What is left in ``be``'s namespace, as readable lines; empty when nothing is:
    our SAs and policies, the ``devices``, routes to the subnets ``to``, and ``words``
    anywhere in ``ip xfrm state`` and ``ip xfrm policy``."""
    ns = be.netns
    assert ns is not None
    out = [f"{len(sas)} SAs, {len(pols)} policies of ours"
           for sas, pols in [(be.list_sas(), be.list_policies())] if sas or pols]
    out += [f"device {d}: {dev_text(ns, d).strip()[:200]}" for d in devices if has_dev(ns, d)]
    out += [f"route {r!r}" for dst in to
            if (r := routes(ns, dst, v6=ipaddress.ip_network(str(dst)).version == 6))]
    if words:
        text = sh(["ip", "-n", ns, "xfrm", "state"]) + sh(["ip", "-n", ns, "xfrm", "policy"])
        for w in words:
            if w in text:
                out.append(f"{w!r} in ip xfrm: {re.findall(re.escape(w) + r'[^ ]* [^ ]+', text)[:4]}")
    return out


def have_libreswan(check_name: str) -> bool:
    """Libreswan 4.10 is there; else ``CHECK check_name: FAILED`` and False."""
    if os.access(LIBRESWAN, os.X_OK):
        return True
    check(check_name, False, f"{LIBRESWAN} missing")
    return False


# --- daemons -------------------------------------------------------------------------------
VENV_BIN = os.path.dirname(sys.executable)
PSK = "pypluto-espkernel-psk-0123456789abcdef"


class Stoppable(Protocol):
    """A daemon as :func:`cleaned_up` sees it."""

    name: str

    def tail(self, n: int = 25) -> str: ...
    def stop(self) -> bool: ...
    def kill(self) -> None: ...


class Daemon:
    """One IKE daemon (ours or Libreswan's) in a namespace, logging to a file."""

    def __init__(
        self, kind: str, ns: str, workdir: str, name: str, backend: str | None = "--use-xfrm",
        *, conf: str,
    ) -> None:
        self.kind, self.ns, self.name, self.backend = kind, ns, name, backend
        self.extra: list[str] = []  # more pluto arguments (e.g. --nssdir)
        self.dir = os.path.join(workdir, name)
        self.run = os.path.join(self.dir, "run")
        os.makedirs(self.run, exist_ok=True)
        self.logpath = os.path.join(self.dir, "pluto.log")
        self.proc: subprocess.Popen[bytes] | None = None
        with open(os.path.join(self.dir, "ipsec.conf"), "w") as f:
            f.write(conf)
        self.write_secrets(f'@west.example @east.example : PSK "{PSK}"\n')

    def write_secrets(self, text: str) -> None:
        sec = os.path.join(self.dir, "ipsec.secrets")
        with open(sec, "w") as f:
            f.write(text)
        os.chmod(sec, 0o600)

    def start(self) -> None:
        conf, sec = os.path.join(self.dir, "ipsec.conf"), os.path.join(self.dir, "ipsec.secrets")
        env = dict(os.environ)
        if self.kind == "pypluto":
            argv = [os.path.join(VENV_BIN, "pluto")]
            extra = ([self.backend] if self.backend else []) + self.extra
            ready = ": Pluto initialized"  # the log line, not the early stdout line
        else:
            nss = os.path.join(self.dir, "nss")
            os.makedirs(nss, exist_ok=True)
            if not os.path.exists(os.path.join(nss, "cert9.db")):
                sh(["certutil", "-N", "-d", f"sql:{nss}", "--empty-password"])
            # (config first: "config setup" would reset the directories given before it)
            argv = [LIBRESWAN]
            extra = ["--nssdir", nss, "--ipsecdir", self.dir, "--dumpdir", self.dir]
            sbin = os.path.realpath(os.path.join(os.path.realpath(os.path.dirname(LIBRESWAN)),
                                                 "..", "..", "sbin"))  # fmt: skip
            env["PATH"] = f"{sbin}:{env.get('PATH', '/usr/sbin:/usr/bin')}"
            ready = "loading secrets from"
        argv += ["--config", conf, "--secretsfile", sec, "--rundir", self.run, *extra,
                 "--nofork", "--stderrlog"]  # fmt: skip
        with open(self.logpath, "wb") as log_f:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv], stdin=subprocess.DEVNULL,
                stdout=log_f, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )  # fmt: skip
        CHILDREN.append(self.proc)
        proc = self.proc
        wait_for(lambda: ready in self.log() or proc.poll() is not None, 60, f"{self.name} ready")
        if proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited during start ({proc.returncode})")

    def log(self) -> str:
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def whack(self, *args: str, timeout: float = 60) -> str:
        if self.kind == "pypluto":
            argv = [os.path.join(VENV_BIN, "whack"), "--rundir", self.run, *args]
        else:
            argv = [os.path.join(os.path.dirname(LIBRESWAN), "whack"), "--ctlsocket",
                    os.path.join(self.run, "pluto.ctl"), *args]  # fmt: skip
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "whack timed out"
        return res.stdout + res.stderr

    def stop(self) -> bool:
        """Orderly shutdown (whack --shutdown); True if it exited by itself."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc is not None
        self.whack("--shutdown", timeout=20)
        return self._exits(20)

    def sigterm(self) -> bool:
        """SIGTERM to the daemon's own PID (``ip netns exec`` execs it); True if it exited."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self._exits(30)

    def _exits(self, timeout: float) -> bool:
        """True if the process exits within ``timeout`` s; else it is killed: False."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self) -> None:
        """SIGKILL, if it still runs (a crash: it cleans nothing up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self, n: int = 25) -> str:
        return "\n".join(self.log().splitlines()[-n:])


def tagged_conn(name: str, tag: str, extra: str, lnet: object = None,
                rnet: object = None) -> str:
    """One PSK conn between the lab's subnets (others with ``lnet``/``rnet``) whose IDs
    carry ``tag`` (``@west-TAG``/``@east-TAG``); both ends write the same (left=west:
    the daemons orient themselves by address)."""
    return (f"conn {name}\n\tauthby=secret\n\tleft={L4}\n\tleftid=@west-{tag}\n"
            f"\tleftsubnet={lnet or LNET4}\n\tright={R4}\n\trightid=@east-{tag}\n"
            f"\trightsubnet={rnet or RNET4}\n\tike=aes_gcm256-sha2_256-dh19\n"
            f"\tesp=aes_gcm256\n{extra}\tauto=add\n\n")


def tagged_secrets(tags: Sequence[str], psk: str) -> str:
    """The ipsec.secrets for :func:`tagged_conn`'s conns with these tags."""
    return "".join(f'@west-{t} @east-{t} : PSK "{psk}"\n' for t in tags)


def start_pair(work: str, wconf: str, econf: str, secrets: str,
               east_kind: str = "pypluto") -> tuple[Daemon, Daemon]:
    """Our daemon west and ``east_kind`` east, with these files, started."""
    west = Daemon("pypluto", LEFT, work, "west", conf=wconf)
    east = Daemon(east_kind, RIGHT, work, "east", conf=econf)
    for d in (west, east):
        d.write_secrets(secrets)
    for d in (west, east):
        d.start()
    return west, east


# --- clean-up ------------------------------------------------------------------------------
def flush_xfrm(namespaces: Sequence[str] = (LEFT, RIGHT)) -> None:
    """Every XFRM state and policy in these namespaces, of any owner, gone."""
    for ns in namespaces:
        sh(["ip", "-n", ns, "xfrm", "state", "flush"], check_rc=False)
        sh(["ip", "-n", ns, "xfrm", "policy", "flush"], check_rc=False)


@contextlib.contextmanager
def cleaned_up(daemons: Sequence[Stoppable], work: str | None = None, *,
               orderly: bool = False, namespaces: Sequence[str] = (LEFT, RIGHT),
               devices: Sequence[str] = (), then: Sequence[Callable[[], object]] = (),
               lab_routes_back: bool = False, tail: int = 25) -> Iterator[None]:
    """Run a scenario's body; if it raises, log each daemon's log tail; whatever
    happened, leave the lab as :func:`setup_lab` made it for the next scenario.

    In this order: the daemons stop (``orderly``: each its own way first, e.g.
    ``whack --shutdown``), any still running is killed; in each of ``namespaces``
    the ``devices`` are deleted and every XFRM state and policy is flushed; the
    ``then`` callables run; the lab's IPv4 routes come back
    (``lab_routes_back``); the ``work`` directory is removed."""
    try:
        yield
    except Exception:
        for d in daemons:
            log(f"--- {d.name} log tail:\n{d.tail(tail)}")
        raise
    finally:
        for d in daemons:
            if orderly:
                d.stop()
            d.kill()
        for ns in namespaces:
            for dev in devices:
                sh(["ip", "-n", ns, "link", "del", dev], check_rc=False)
        flush_xfrm(namespaces)
        for fn in then:
            fn()
        if lab_routes_back:
            restore_lab_routes(namespaces)
        if work is not None:
            subprocess.run(["rm", "-rf", work])


# --- the guest's main ------------------------------------------------------------------------
def run_guest(title: str, scenarios: Sequence[tuple[str, Callable[..., None]]], *,
              backends: bool = True, prepare: Callable[[], None] | None = None) -> int:
    """Set the lab up, run each (name, scenario) and tear the lab down; the exit status.

    With ``backends`` each scenario is called with an ``XfrmBackend`` for LEFT and one
    for RIGHT, which flush what is theirs after it; ``prepare`` runs once before the
    first.  A scenario that raises is ``CHECK <name>: FAILED``; the last line is
    ``ALL <title> GUEST CHECKS PASSED`` (status 0) or the failed names (status 1)."""
    log(f"kernel {os.uname().release}; python {sys.version.split()[0]}")
    setup_lab()
    bes: list[XfrmBackend] = []
    try:
        if backends:
            for ns in (LEFT, RIGHT):
                bes.append(XfrmBackend(netns=ns, log=lambda m: None))
        if prepare is not None:
            prepare()
        for name, fn in scenarios:
            t = time.monotonic()
            try:
                fn(*bes)
            except Exception:
                FAILED.append(name)
                log(f"CHECK {name}: FAILED with an exception\n{traceback.format_exc()}")
            log(f"scenario {name} took {time.monotonic() - t:.1f}s")
            for b in bes:
                b.flush_own()
    finally:
        for b in bes:
            b.close()
        teardown_lab()
    if FAILED:
        log(f"FAILED: {', '.join(FAILED)}")
        return 1
    log(f"ALL {title} GUEST CHECKS PASSED")
    return 0
