"""The newest peers: strongSwan 6.0.1 and Libreswan 5.2, and which build of each peer runs.

On a Debian 12 host both come from the Debian 13 (trixie) chroots that
``../shared/interop/trixie/install.sh`` builds (``tools/install-deps.sh`` runs
it).  Each daemon runs inside its chroot, in a lab namespace and in a private
mount namespace of its own, through the shared ``chroot-exec.sh``: every step
of that launcher execs, so the PID :meth:`lab.Lab.spawn` records is the
daemon's own and teardown signals only it.  The daemon's directory under the
lab's workdir is bind-mounted at ``/run/lab`` inside the chroot, so its
configuration, control socket, NSS db and log are the same files on the host.
The peers' own control tools (6.0.1's ``swanctl``, 5.2's ``whack``: the whack
protocol is version-specific) run inside the daemon's namespaces with
``nsenter -t PID -m -n -r -w``.

On a Debian 13 host 6.0.1 and 5.2 are the native packages and the plain
:class:`peers.StrongSwan` / :class:`peers.Libreswan` drivers run them; 5.9.8
and 4.10 are then not part of the matrix.

Facts used (the trixie README's pitfalls): Debian's 6.0.1 has no ML-KEM
unless install.sh built the ``ml`` plugin; 5.2 without kernel ESP answers a
Child SA it cannot install with TEMPORARY_FAILURE and keeps the IKE SA, and a
synchronous ``whack --initiate`` then blocks for 60 s, so 5.2 is initiated
with ``--asynchronous`` and polled.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
import shutil
import subprocess
from dataclasses import dataclass

from lab import Lab, LabError
from peers import IPSEC_SECRETS, LIBRESWAN_DIR, Libreswan, StrongSwan, have_libreswan
from testsupport import SHARED

TRIXIE = SHARED / "interop" / "trixie"
CHROOT_EXEC = TRIXIE / "chroot-exec.sh"
INSIDE = "/run/lab"  # the daemon's directory, as seen inside its chroot


def _root(var: str, name: str) -> pathlib.Path:
    return pathlib.Path(os.environ.get(var) or
                        pathlib.Path(os.environ.get("TRIXIE_ROOT") or "/opt") / name)


SW_ROOT = _root("TRIXIE_SW_ROOT", "trixie-sw")
LS_ROOT = _root("TRIXIE_LS_ROOT", "trixie-ls")
ML_PLUGIN = SW_ROOT / "usr/lib/ipsec/plugins/libstrongswan-ml.so"


def os_release(path: str = "/etc/os-release") -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        text = pathlib.Path(path).read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip().strip('"')
    return out


HOST_IS_TRIXIE = os_release().get("VERSION_CODENAME") == "trixie"


# ------------------------------------------------------------ chroot daemons
def _nsenter(pid: int, *argv: object) -> list[str]:
    """Run ``argv`` in the namespaces, root and cwd of ``pid`` (README pitfall 14: -r -w bare)."""
    return ["nsenter", "-t", str(pid), "-m", "-n", "-r", "-w", "--", *[str(a) for a in argv]]


class ChrootStrongSwan(StrongSwan):
    """strongSwan 6.0.1 (charon-systemd, kernel-libipsec) from the trixie chroot."""

    def __init__(self, lab: Lab, ns: str, name: str = "strongswan6",
                 root: pathlib.Path = SW_ROOT) -> None:
        super().__init__(lab, ns, name)
        self.root = root

    @property
    def uri(self) -> str:
        return f"unix://{INSIDE}/charon.vici"

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": f"{INSIDE}/strongswan.conf"}

    def _inside(self, arg: object) -> str:
        """A host path under our directory, as the chroot sees it."""
        s = str(arg)
        return INSIDE + s[len(str(self.dir)):] if s.startswith(str(self.dir)) else s

    def render_conf(self) -> str:
        """The shared template (../shared/interop/trixie/strongswan/strongswan.conf) for us.

        As its header says: the vici socket and the log under /run/lab, and the
        ``ml`` plugin (ML-KEM) only when install.sh built it.
        """
        ml = "ml" if ML_PLUGIN.exists() else ""
        lines = []
        for line in (TRIXIE / "strongswan" / "strongswan.conf").read_text().splitlines():
            if not line.lstrip().startswith("#"):
                line = (line.replace("@VICI_SOCKET@", self.uri)
                        .replace("@LOGFILE@", f"{INSIDE}/charon.log")
                        .replace(" @ML@", f" {ml}" if ml else ""))
            lines.append(line)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 30) -> ChrootStrongSwan:
        self.conf.write_text(self.render_conf())
        self.vici.unlink(missing_ok=True)
        self.lab.add_log(f"{self.name} charon.log", self.log)
        self.proc = self.lab.spawn(
            None, [CHROOT_EXEC, self.root, self.ns, self.dir, "/usr/sbin/charon-systemd"],
            self.dir / "stdout.log", self.env, name=f"{self.name}-charon")
        self.lab.wait_for(self.vici.exists, timeout, f"{self.name} vici socket")
        if self.swanctl_file is not None:  # a restart: load the same config again
            self.swanctl("--load-all", "--file", self.swanctl_file)
        return self

    def swanctl(self, *args: object, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if self.proc is None:
            raise LabError(f"{self.name}: charon is not running")
        words = ["swanctl", *[self._inside(a) for a in args]]
        if "--uri" not in words:
            words[2:2] = ["--uri", self.uri]
        return self.lab.run(None, _nsenter(self.proc.pid, *words), check=check,
                            timeout=timeout, env=self.env)


class ChrootLibreswan(Libreswan):
    """Libreswan 5.2 pluto from the trixie chroot, driven by its own whack."""

    def __init__(self, lab: Lab, ns: str, name: str = "libreswan5",
                 root: pathlib.Path = LS_ROOT) -> None:
        super().__init__(lab, ns, name)
        self.root = root

    def start(self, conf: str, secrets: str = IPSEC_SECRETS,
              timeout: float = 30) -> ChrootLibreswan:
        for sub in ("nss", "run", "ipsec.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "ipsec.conf").write_text(conf)
        (self.dir / "ipsec.secrets").write_text(secrets)
        (self.dir / "ipsec.secrets").chmod(0o600)
        if not (self.dir / "nss" / "cert9.db").exists():
            self.lab.run(None, [CHROOT_EXEC, self.root, "-", self.dir, "ipsec", "initnss",
                                "--nssdir", f"{INSIDE}/nss"])
        self.proc = self.lab.spawn(
            None,
            [CHROOT_EXEC, self.root, self.ns, self.dir, "/usr/libexec/ipsec/pluto",
             "--config", f"{INSIDE}/ipsec.conf", "--secretsfile", f"{INSIDE}/ipsec.secrets",
             "--rundir", f"{INSIDE}/run", "--nssdir", f"{INSIDE}/nss",
             "--ipsecdir", f"{INSIDE}/ipsec.d", "--dumpdir", INSIDE, "--nofork", "--stderrlog"],
            self.log, name=f"{self.name}-pluto")
        # 5.2 never prints "Pluto initialized"; its addconn run ends with the secrets
        self.lab.wait_for(lambda: "loading secrets from" in self.log.read_text(errors="replace"),
                          timeout, f"{self.name} ready")
        return self

    def whack(self, *args: object, check: bool = False,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if self.proc is None:
            raise LabError(f"{self.name}: pluto is not running")
        return self.lab.run(None, _nsenter(self.proc.pid, "/usr/libexec/ipsec/whack",
                                           "--ctlsocket", f"{INSIDE}/run/pluto.ctl", *args),
                            check=check, timeout=timeout)


# ----------------------------------------------------------- which peers run
@functools.cache
def native_strongswan_version() -> str:
    """The host's charon-systemd package version (``5.9.8``), or ``""``."""
    if not shutil.which("dpkg-query"):
        return ""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "charon-systemd"],
                       capture_output=True, text=True, check=False)
    m = re.match(r"(\d+\.\d+\.\d+)", r.stdout) if r.returncode == 0 else None
    return m.group(1) if m else ""


@functools.cache
def native_libreswan_version() -> str:
    """``pluto --version`` of /usr/libexec/ipsec/pluto (``4.10``), or ``""``."""
    if not have_libreswan():
        return ""
    try:
        r = subprocess.run([str(LIBRESWAN_DIR / "pluto"), "--version"], capture_output=True,
                           text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    m = re.search(r"Libreswan (\d+\.\d+)", r.stdout + r.stderr)
    return m.group(1) if m else ""


@dataclass(frozen=True)
class PeerSpec:
    """One peer of the matrix: its label, how it is run, and what installs it."""

    label: str          # matrix column "peer", e.g. "strongSwan 6.0.1"
    family: str         # "strongswan" | "libreswan"
    version: str        # "6.0.1"
    chroot: bool        # runs from the trixie chroot
    install_hint: str

    def available(self) -> bool:
        if self.chroot:
            root = SW_ROOT if self.family == "strongswan" else LS_ROOT
            prog = "usr/sbin/charon-systemd" if self.family == "strongswan" \
                else "usr/libexec/ipsec/pluto"
            return CHROOT_EXEC.exists() and os.access(root / prog, os.X_OK) \
                and shutil.which("nsenter") is not None
        if self.family == "strongswan":
            return native_strongswan_version() == self.version
        return native_libreswan_version() == self.version

    def strongswan(self, lab: Lab, ns: str, name: str) -> StrongSwan:
        return ChrootStrongSwan(lab, ns, name) if self.chroot else StrongSwan(lab, ns, name)

    def libreswan(self, lab: Lab, ns: str, name: str) -> Libreswan:
        return ChrootLibreswan(lab, ns, name) if self.chroot else Libreswan(lab, ns, name)

    @property
    def modern(self) -> bool:
        """Libreswan 5.x: asynchronous initiate, TEMPORARY_FAILURE for a failed Child."""
        return self.family == "libreswan" and not self.version.startswith("4.")

    def __str__(self) -> str:
        return self.label


_TRIXIE_HINT = ("../shared/interop/trixie/install.sh (run by tools/install-deps.sh, "
                "`make deps`)")
SS598 = PeerSpec("strongSwan 5.9.8", "strongswan", "5.9.8", False,
                 "strongSwan 5.9.8 charon-systemd and swanctl (tools/install-deps.sh)")
SS601 = PeerSpec("strongSwan 6.0.1", "strongswan", "6.0.1", not HOST_IS_TRIXIE,
                 f"strongSwan 6.0.1 ({_TRIXIE_HINT})")
LS410 = PeerSpec("Libreswan 4.10", "libreswan", "4.10", False,
                 "Libreswan 4.10 pluto (tools/install-libreswan.sh)")
LS52 = PeerSpec("Libreswan 5.2", "libreswan", "5.2", not HOST_IS_TRIXIE,
                f"Libreswan 5.2 ({_TRIXIE_HINT})")

# On Debian 13 the old releases are not installed and not part of the matrix.
STRONGSWAN_PEERS = [SS601] if HOST_IS_TRIXIE else [SS598, SS601]
LIBRESWAN_PEERS = [LS52] if HOST_IS_TRIXIE else [LS410, LS52]
