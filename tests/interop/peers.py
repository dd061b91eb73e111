"""Drivers for the IKE daemons of the interop lab: strongSwan, Libreswan and pypluto.

Each driver runs one daemon in one namespace of a :class:`lab.Lab`, with all of
its files (configuration, control socket, NSS db, logs) in its own directory
under the lab's workdir, so parallel runs never share anything.  Every daemon
is started through :meth:`lab.Lab.spawn`, so teardown stops only our PIDs.

Facts used here (from the peers' documentation and the interop README):

* strongSwan 5.9.8 without kernel ESP does ESP itself with the kernel-libipsec
  plugin, which must be loaded before kernel-netlink; the kdf, hmac and sha2
  plugins must be loaded for IKE key derivation on Debian 12; each instance
  needs its own vici socket.  kernel-libipsec always UDP-encapsulates ESP
  (it fakes NAT detection), so the peer sees ESP-in-UDP on port 4500
  (RFC 3948) and must float to 4500 (RFC 7296 §2.23).
* Libreswan 4.10 needs its own NSS db, rundir, ipsecdir and dumpdir, and runs
  /usr/libexec/ipsec/addconn at start; without kernel ESP its Child SA install
  fails, so only its IKE SA can be checked on these machines.
* strongSwan 6.0.1 and Libreswan 5.2 (Debian 13 chroots) subclass these drivers
  in ``trixie.py``, which also says which peers a host runs.
* pypluto follows Libreswan's command line (``pluto --nofork --stderrlog
  --rundir D --config F --secretsfile S``, ``whack --rundir D ...``).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab import EAST_OUTER, EAST_SUBNET, WEST_OUTER, WEST_SUBNET, Lab, LabError, Spawned

PSK = "interop-lab-psk-0123456789abcdefghij"  # 36 bytes: >= 32 for PRF HMAC_SHA2_512
WEST_ID = "west.example"
EAST_ID = "east.example"

CHARON = "/usr/sbin/charon-systemd"
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"
LIBRESWAN_DIR = pathlib.Path("/usr/libexec/ipsec")
VENV_BIN = pathlib.Path(sys.executable).parent


def have_strongswan() -> bool:
    return os.access(CHARON, os.X_OK) and os.access(SWANCTL, os.X_OK)


def have_libreswan() -> bool:
    return os.access(LIBRESWAN_DIR / "pluto", os.X_OK) and shutil.which("certutil") is not None


def pypluto_bin(name: str) -> str:
    """The venv's console script (``pluto``, ``whack``), else the one on PATH."""
    p = VENV_BIN / name
    return str(p) if p.exists() else (shutil.which(name) or name)


# --------------------------------------------------------------- proposals
@dataclass(frozen=True)
class Proposal:
    """One row of the proposal matrix, in both peers' syntaxes.

    ``ike``/``esp`` are Libreswan ``ike=``/``esp=`` strings (None: defaults);
    ``ss_ike``/``ss_esp`` the strongSwan ``proposals``/``esp_proposals`` that
    accept exactly that (RFC 7296 §3.3 transforms).
    """

    name: str
    ike: str | None
    esp: str | None
    ss_ike: str
    ss_esp: str
    pfs: bool = False  # a Child rekey must carry KE (RFC 7296 §1.3.3)


_SS_DEFAULT_IKE = ("aes256gcm16-aes128gcm16-prfsha512-prfsha256-x25519-ecp256-modp2048, "
                   "aes256-aes128-sha512-sha256-x25519-ecp256-modp2048")
_SS_DEFAULT_ESP = ("aes256gcm16-aes128gcm16, aes256-aes128-sha512-sha256, "
                   "aes256gcm16-aes128gcm16-x25519-ecp256-modp2048, "
                   "aes256-aes128-sha512-sha256-x25519-ecp256-modp2048")

PROPOSALS: list[Proposal] = [
    Proposal("defaults", None, None, _SS_DEFAULT_IKE, _SS_DEFAULT_ESP),
    Proposal("aes_gcm256-sha2_512-dh31", "aes_gcm256-sha2_512-dh31", "aes_gcm256",
             "aes256gcm16-prfsha512-x25519", "aes256gcm16"),
    Proposal("aes256-sha2_256-modp2048", "aes256-sha2_256-modp2048", "aes256-sha2_256",
             "aes256-sha256-modp2048", "aes256-sha256"),
    Proposal("chacha20poly1305-sha2_512-dh20", "chacha20poly1305-sha2_512-dh20",
             "chacha20poly1305", "chacha20poly1305-prfsha512-ecp384", "chacha20poly1305"),
    Proposal("aes128-sha1-modp2048", "aes128-sha1-modp2048", "aes128-sha1",
             "aes128-sha1-modp2048", "aes128-sha1"),
    Proposal("esp-pfs-dh19", "aes256-sha2_256-dh19", "aes256-sha2_256-dh19",
             "aes256-sha256-ecp256", "aes256-sha256-ecp256", pfs=True),
]
PROPOSAL_IDS = [p.name for p in PROPOSALS]

# ML-KEM (FIPS 203; draft-ietf-ipsecme-ikev2-mlkem, RFC 9370): only strongSwan
# 6.0.1 with the ml plugin that ../shared/interop/trixie/install.sh builds has it.
MLKEM_PROPOSALS: list[Proposal] = [
    Proposal("mlkem768", "aes_gcm256-sha2_384-mlkem768", "aes_gcm256",
             "aes256gcm16-prfsha384-mlkem768", "aes256gcm16"),
    Proposal("x25519+addke1=mlkem768", "aes_gcm256-sha2_384-dh31;addke1=mlkem768", "aes_gcm256",
             "aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16"),
]


# ------------------------------------------------------------- strongSwan
_STRONGSWAN_CONF = """\
# rendered by tests/interop/peers.py for one charon-systemd instance
charon {{
    # explicit plugin list (/etc/strongswan.d is ignored).  kernel-libipsec
    # registers "kernel-ipsec" first, so ESP is done in user space over TUN;
    # kernel-netlink then only handles addresses and routes.  kdf/hmac/sha2
    # are needed for IKE key derivation with Debian 12's OpenSSL 3.
    load_modular = no{charon_extra}
    load = random nonce openssl kdf hmac sha2 pem pkcs1 pkcs8 x509 pubkey revocation \
constraints {ipsec_plugin} kernel-netlink socket-default vici
    filelog {{
        charonlog {{
            path = {log}
            time_format = %T
            append = yes
            flush_line = yes
            default = 1
            ike = 2
            knl = 2
            cfg = 2
        }}
    }}
    plugins {{
        vici {{
            socket = {uri}
        }}
    }}
}}
charon-systemd {{
    journal {{
        default = -1
    }}
}}
swanctl {{
    socket = {uri}
}}
"""


def psk_ends(local_id: str, remote_id: str) -> str:
    """The ``local`` and ``remote`` sections of a swanctl.conf PSK connection
    (indented for a connection's body; no newline at the end)."""
    return f"""\
        local {{
            auth = psk
            id = {local_id}
        }}
        remote {{
            auth = psk
            id = {remote_id}
        }}"""


def swanctl_conf(*, conn: str, local: str, remote: str, local_id: str, remote_id: str,
                 local_ts: str, remote_ts: str, proposal: Proposal, dpd_delay: int = 30,
                 start_action: str = "none", dpd_action: str = "clear",
                 rekey_time: str | None = None) -> str:
    """A swanctl.conf with one PSK connection and one Child SA named ``net``."""
    rekey = f"\n                rekey_time = {rekey_time}" if rekey_time else ""
    return f"""\
connections {{
    {conn} {{
        version = 2
        local_addrs = {local}
        remote_addrs = {remote}
        proposals = {proposal.ss_ike}
        dpd_delay = {dpd_delay}s
{psk_ends(local_id, remote_id)}
        children {{
            net {{
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = {proposal.ss_esp}
                start_action = {start_action}
                dpd_action = {dpd_action}{rekey}
            }}
        }}
    }}
}}
secrets {{
    ike-lab {{
        id-a = {local_id}
        id-b = {remote_id}
        secret = "{PSK}"
    }}
}}
"""


@dataclass
class ChildInfo:
    name: str
    state: str
    spi_in: str
    spi_out: str
    algs: str
    mode: str  # TUNNEL, TUNNEL-in-UDP (ESP in UDP, RFC 3948), TRANSPORT
    bytes_in: int
    bytes_out: int


@dataclass
class IkeInfo:
    name: str
    uid: int
    state: str
    spi_i: str
    spi_r: str
    children: list[ChildInfo]


_IKE_RE = re.compile(r"^(\S+): #(\d+), (\w+), IKEv2, ([0-9a-f]+)_i\*? ([0-9a-f]+)_r", re.M)
_CHILD_RE = re.compile(
    r"^  (\S+): #\d+, reqid \d+, (\w+), ([\w-]+), (?:ESP:)?(\S+)\n(?P<rest>(?:    .*\n?)*)", re.M)


def parse_list_sas(text: str) -> list[IkeInfo]:
    """``swanctl --list-sas`` output as IKE SAs with their Child SAs."""
    blocks = re.split(r"(?m)^(?=\S)", text)
    out = []
    for block in blocks:
        m = _IKE_RE.match(block)
        if not m:
            continue
        children = []
        for c in _CHILD_RE.finditer(block):
            rest = c.group("rest")
            mi = re.search(r"in\s+([0-9a-f]{8})[^,\n]*,\s+(\d+) bytes", rest)
            mo = re.search(r"out\s+([0-9a-f]{8})[^,\n]*,\s+(\d+) bytes", rest)
            children.append(ChildInfo(c.group(1), c.group(2), mi.group(1) if mi else "",
                                      mo.group(1) if mo else "", c.group(4), c.group(3),
                                      int(mi.group(2)) if mi else 0,
                                      int(mo.group(2)) if mo else 0))
        out.append(IkeInfo(m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5),
                           children))
    return out


class StrongSwan:
    """One charon-systemd (strongSwan 5.9.8) in a lab namespace, driven by swanctl."""

    def __init__(self, lab: Lab, ns: str, name: str = "strongswan",
                 dataplane: str = "libipsec", charon_extra: str = "") -> None:
        self.lab, self.ns, self.name = lab, ns, name
        self.charon_extra = charon_extra
        self.dir = lab.workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "strongswan.conf"
        self.vici = self.dir / "charon.vici"
        self.log = self.dir / "charon.log"
        self.dataplane = dataplane
        self.proc: Spawned | None = None
        self.swanctl_file: pathlib.Path | None = None

    @property
    def uri(self) -> str:
        return f"unix://{self.vici}"

    @property
    def env(self) -> dict[str, str]:
        return {"STRONGSWAN_CONF": str(self.conf)}

    def start(self, timeout: float = 30) -> StrongSwan:
        plugin = "kernel-libipsec" if self.dataplane == "libipsec" else ""
        extra = "".join(f"\n    {ln.strip()}" for ln in self.charon_extra.splitlines())
        self.conf.write_text(_STRONGSWAN_CONF.format(ipsec_plugin=plugin, log=self.log,
                                                     uri=self.uri, charon_extra=extra))
        self.vici.unlink(missing_ok=True)
        self.lab.add_log(f"{self.name} charon.log", self.log)
        self.proc = self.lab.spawn(self.ns, [CHARON], self.dir / "stdout.log", self.env,
                                   name=f"{self.name}-charon")
        self.lab.wait_for(self.vici.exists, timeout, f"{self.name} vici socket")
        if self.swanctl_file is not None:  # a restart: load the same config again
            self.swanctl("--load-all", "--file", self.swanctl_file)
        return self

    def load(self, conf_text: str) -> None:
        sdir = self.dir / "swanctl"
        for sub in ("x509", "x509ca", "x509aa", "x509ac", "x509crl", "x509ocsp", "private",
                    "pubkey", "rsa", "ecdsa", "pkcs8", "pkcs12"):
            (sdir / sub).mkdir(parents=True, exist_ok=True)
        self.swanctl_file = sdir / "swanctl.conf"
        self.swanctl_file.write_text(conf_text)
        self.swanctl("--load-all", "--file", self.swanctl_file)

    def swanctl(self, *args: object, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [SWANCTL, *[str(a) for a in args]]
        if "--uri" not in argv:
            argv[2:2] = ["--uri", self.uri]
        return self.lab.run(None, argv, check=check, timeout=timeout, env=self.env)

    def initiate(self, child: str = "net", timeout: int = 20,
                 check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.swanctl("--initiate", "--child", child, "--timeout", timeout, check=check,
                            timeout=timeout + 10)

    def terminate_ike(self, ike: str, timeout: int = 10) -> None:
        self.swanctl("--terminate", "--ike", ike, "--timeout", timeout, check=False,
                     timeout=timeout + 10)

    def rekey(self, *, child: str | None = None, ike: str | None = None) -> None:
        if child:
            self.swanctl("--rekey", "--child", child)
        if ike:
            self.swanctl("--rekey", "--ike", ike)

    def list_sas(self) -> list[IkeInfo]:
        return parse_list_sas(self.swanctl("--list-sas", check=False).stdout)

    def installed_child(self) -> ChildInfo | None:
        """The first INSTALLED Child SA of an ESTABLISHED IKE SA, else None."""
        ike = self.established()
        return next((c for c in ike.children if c.state == "INSTALLED"), None) if ike else None

    def established(self) -> IkeInfo | None:
        """The first ESTABLISHED IKE SA with an INSTALLED Child SA, else None."""
        for ike in self.list_sas():
            if ike.state == "ESTABLISHED" and any(c.state == "INSTALLED" for c in ike.children):
                return ike
        return None

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): no Delete is sent."""
        if self.proc is not None:
            import signal

            self.lab.stop(self.proc, signal.SIGKILL)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None


# -------------------------------------------------------------- Libreswan
def ipsec_conf(*, conn: str = "west-east", proposal: Proposal | None = None, auto: str = "add",
               extra: str = "", setup: str = "") -> str:
    """A Libreswan-syntax ipsec.conf; one file serves both ends (pluto orients itself)."""
    algs = ""
    if proposal is not None and proposal.ike:
        algs += f"\n\tike={proposal.ike}"
    if proposal is not None and proposal.esp:
        algs += f"\n\tesp={proposal.esp}"
    extra_lines = "".join(f"\n\t{ln.strip()}" for ln in extra.strip().splitlines() if ln.strip())
    setup_lines = "".join(f"\n\t{ln.strip()}" for ln in setup.strip().splitlines() if ln.strip())
    return f"""\
# rendered by tests/interop/peers.py
config setup
\tplutodebug=none{setup_lines}

conn {conn}
\tauthby=secret
\tleft={WEST_OUTER}
\tleftid=@{WEST_ID}
\tleftsubnet={WEST_SUBNET}
\tleftsourceip=198.51.100.1
\tright={EAST_OUTER}
\trightid=@{EAST_ID}
\trightsubnet={EAST_SUBNET}
\trightsourceip=203.0.113.1{algs}
\tauto={auto}{extra_lines}
"""


IPSEC_SECRETS = f'@{WEST_ID} @{EAST_ID} : PSK "{PSK}"\n'


class Libreswan:
    """One Libreswan 4.10 pluto in a lab namespace, driven by its whack."""

    def __init__(self, lab: Lab, ns: str, name: str = "libreswan") -> None:
        self.lab, self.ns, self.name = lab, ns, name
        self.dir = lab.workdir / name
        self.run_dir = self.dir / "run"
        self.log = self.dir / "pluto.log"
        self.proc: Spawned | None = None

    def start(self, conf: str, secrets: str = IPSEC_SECRETS, timeout: float = 30) -> Libreswan:
        for sub in ("nss", "run", "ipsec.d"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "ipsec.conf").write_text(conf)
        (self.dir / "ipsec.secrets").write_text(secrets)
        (self.dir / "ipsec.secrets").chmod(0o600)
        if not (self.dir / "nss" / "cert9.db").exists():
            self.lab.run(None, ["certutil", "-N", "-d", f"sql:{self.dir / 'nss'}",
                                "--empty-password"])
        # the default updown ("ipsec _updown") wants the ipsec front end in PATH
        sbin = (LIBRESWAN_DIR.resolve() / ".." / ".." / "sbin").resolve()
        env = {"PATH": f"{sbin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}"}
        self.proc = self.lab.spawn(
            self.ns,
            [LIBRESWAN_DIR / "pluto", "--config", self.dir / "ipsec.conf",
             "--secretsfile", self.dir / "ipsec.secrets", "--rundir", self.run_dir,
             "--nssdir", self.dir / "nss", "--ipsecdir", self.dir / "ipsec.d",
             "--dumpdir", self.dir, "--nofork", "--stderrlog"],
            self.log, env, name=f"{self.name}-pluto")
        # ready once addconn has added the conns and the secrets are loaded
        self.lab.wait_for(lambda: "loading secrets from" in self.log.read_text(errors="replace"),
                          timeout, f"{self.name} ready")
        return self

    def whack(self, *args: object, check: bool = False,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.lab.run(None, [LIBRESWAN_DIR / "whack", "--ctlsocket",
                                   self.run_dir / "pluto.ctl", *args], check=check,
                            timeout=timeout)

    def initiate(self, conn: str = "west-east", timeout: float = 30) -> str:
        """``whack --initiate``; returns its output (it waits for the exchange to finish)."""
        try:
            r = self.whack("--name", conn, "--initiate", timeout=timeout)
            return r.stdout + r.stderr
        except LabError as e:
            return str(e)

    def showstates(self) -> str:
        return self.whack("--showstates").stdout

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.proc.expect_alive = False
            self.whack("--shutdown", timeout=10)
            try:
                self.proc.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None


# ---------------------------------------------------------------- pypluto
class Pypluto:
    """Our daemon in a lab namespace, with Libreswan's command-line conventions."""

    def __init__(self, lab: Lab, ns: str, name: str = "pypluto",
                 backend: str = "--use-userspace") -> None:
        self.lab, self.ns, self.name, self.backend = lab, ns, name, backend
        self.dir = lab.workdir / name
        self.run_dir = self.dir / "run"
        self.log = self.dir / "pluto.log"
        self.proc: Spawned | None = None
        self.conf_text = ""
        self.secrets_text = IPSEC_SECRETS
        self.extra_args: list[str] = []  # e.g. --nssdir DIR (issue 14)

    @property
    def ctl(self) -> pathlib.Path:
        return self.run_dir / "pluto.ctl"

    def start(self, conf: str | None = None, secrets: str | None = None,
              timeout: float = 30) -> Pypluto:
        if conf is not None:
            self.conf_text = conf
        if secrets is not None:
            self.secrets_text = secrets
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ipsec.conf").write_text(self.conf_text)
        (self.dir / "ipsec.secrets").write_text(self.secrets_text)
        (self.dir / "ipsec.secrets").chmod(0o600)
        self.ctl.unlink(missing_ok=True)
        argv = [pypluto_bin("pluto"), "--nofork", "--stderrlog", "--rundir", self.run_dir,
                "--config", self.dir / "ipsec.conf", "--secretsfile",
                self.dir / "ipsec.secrets"]
        if self.backend:
            argv.append(self.backend)
        argv += self.extra_args
        self.proc = self.lab.spawn(self.ns, argv, self.log, name=f"{self.name}-pluto")
        self.lab.wait_for(lambda: self.ctl.exists()
                          and self.whack("--status").returncode == 0, timeout,
                          f"{self.name} control socket")
        return self

    def whack(self, *args: object, check: bool = False,
              timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.lab.run(self.ns, [pypluto_bin("whack"), "--rundir", self.run_dir, *args],
                            check=check, timeout=timeout)

    def initiate(self, conn: str = "west-east", timeout: float = 30) -> str:
        try:
            r = self.whack("--name", conn, "--initiate", timeout=timeout)
            return r.stdout + r.stderr
        except LabError as e:
            return str(e)

    def down(self, conn: str = "west-east") -> subprocess.CompletedProcess[str]:
        return self.whack("--name", conn, "--down")

    def rekey_ike(self, conn: str = "west-east") -> subprocess.CompletedProcess[str]:
        return self.whack("--name", conn, "--rekey-ike", check=True)

    def rekey_child(self, conn: str = "west-east") -> subprocess.CompletedProcess[str]:
        return self.whack("--name", conn, "--rekey-ipsec", check=True)

    def status(self) -> str:
        return self.whack("--status").stdout

    def showstates(self) -> str:
        r = self.whack("--showstates")
        return r.stdout if r.returncode == 0 else self.status()

    def trafficstatus(self) -> str:
        return self.whack("--trafficstatus").stdout

    def sas(self) -> list[dict[str, Any]]:
        """``whack --showstates --json``: the IKE SAs with their Child SAs."""
        r = self.whack("--showstates", "--json")
        try:
            if r.returncode != 0:
                raise ValueError(f"exit {r.returncode}")
            return list(json.loads(r.stdout)["ike_sas"])
        except (ValueError, KeyError, TypeError) as e:
            raise LabError(f"whack --showstates --json: {e}: {r.stdout[-500:]}"
                           f"{r.stderr[-500:]}") from e

    def child_spis(self) -> set[int]:
        """Our inbound SPIs of the established Child SAs."""
        return {c["spi_in"] for ike in self.sas() for c in ike.get("children", [])
                if "ESTABLISHED" in c.get("state", "")}

    def ike_spis(self) -> set[tuple[int, int]]:
        return {(i["spi_i"], i["spi_r"]) for i in self.sas() if "ESTABLISHED" in i["state"]}

    def ike_established(self) -> bool:
        return "ESTABLISHED_IKE_SA" in self.showstates()

    def child_established(self) -> bool:
        return "ESTABLISHED_CHILD_SA" in self.showstates()

    def traffic(self) -> tuple[int, int]:
        """(inBytes, outBytes) summed over ``whack --trafficstatus``."""
        text = self.trafficstatus()
        ins = sum(int(x) for x in re.findall(r"inBytes=(\d+)", text))
        outs = sum(int(x) for x in re.findall(r"outBytes=(\d+)", text))
        return ins, outs

    def routes_to(self, subnet: str) -> list[str]:
        """Routes for ``subnet`` in any table of our namespace."""
        r = self.lab.run(self.ns, ["ip", "route", "show", "table", "all"], check=False)
        return [ln for ln in r.stdout.splitlines() if ln.startswith(subnet)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.proc.expect_alive = False
            self.whack("--shutdown", timeout=10)
            try:
                self.proc.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.proc is not None:
            self.lab.stop(self.proc)
            self.proc = None


# ------------------------------------------------------------ scenarios
def west_pypluto(lab: Lab, proposal: Proposal | None, *, auto: str = "add", extra: str = "",
                 backend: str = "--use-userspace") -> Pypluto:
    """pypluto in the west namespace with the lab's PSK conn ``west-east``.

    ``INTEROP_STANDIN=strongswan`` (debugging the suite itself, never in CI)
    puts a strongSwan behind the same interface instead, to show that a case
    can pass with a correct peer.
    """
    if os.environ.get("INTEROP_STANDIN") == "strongswan":
        return StrongSwanStandIn(lab, proposal, auto=auto, extra=extra)  # type: ignore[return-value]
    return Pypluto(lab, lab.west, "pypluto-west", backend).start(
        ipsec_conf(proposal=proposal, auto=auto, extra=extra))


def east_strongswan(lab: Lab, proposal: Proposal, *, dpd_delay: int = 30,
                    start_action: str = "none",
                    make: Callable[[Lab, str, str], StrongSwan] = StrongSwan) -> StrongSwan:
    """strongSwan (kernel-libipsec) in the east namespace with conn ``east-west``.

    ``make(lab, ns, name)`` builds the driver (default: the host's charon-systemd;
    ``trixie.PeerSpec.strongswan`` for the version under test)."""
    east = make(lab, lab.east, "strongswan-east").start()
    east.load(swanctl_conf(conn="east-west", local=EAST_OUTER, remote=WEST_OUTER,
                           local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                           remote_ts=WEST_SUBNET, proposal=proposal, dpd_delay=dpd_delay,
                           start_action=start_action))
    return east


class StrongSwanStandIn:
    """strongSwan in the west namespace behind :class:`Pypluto`'s interface (suite debugging)."""

    def __init__(self, lab: Lab, proposal: Proposal | None, *, auto: str, extra: str) -> None:
        self.lab = lab
        keys = dict(ln.strip().split("=", 1) for ln in extra.splitlines() if "=" in ln)
        # about 6 s of retransmits before a peer is declared dead
        self.sw = StrongSwan(lab, lab.west, "standin-west", charon_extra="""
            retransmit_tries = 3
            retransmit_timeout = 1.0
            retransmit_base = 1.4""").start()
        action = keys.get("dpdaction", "restart" if auto == "start" else "clear")
        self.sw.load(swanctl_conf(
            conn="west-east", local=WEST_OUTER, remote=EAST_OUTER, local_id=WEST_ID,
            remote_id=EAST_ID, local_ts=WEST_SUBNET, remote_ts=EAST_SUBNET,
            proposal=proposal or PROPOSALS[0], dpd_delay=int(keys.get("dpddelay", 30)),
            start_action="start" if auto == "start" else "none",
            dpd_action="restart" if action == "restart" else "clear"))
        self.proc = self.sw.proc

    def initiate(self, conn: str = "west-east", timeout: float = 30) -> str:
        return self.sw.initiate(check=False).stdout[-500:]

    def down(self, conn: str = "west-east") -> subprocess.CompletedProcess[str]:
        return self.sw.swanctl("--terminate", "--ike", "west-east", check=False)

    def rekey_ike(self, conn: str = "west-east") -> None:
        self.sw.rekey(ike="west-east")

    def rekey_child(self, conn: str = "west-east") -> None:
        self.sw.rekey(child="net")

    def showstates(self) -> str:
        return "\n".join(f"{i.name} {i.state}" for i in self.sw.list_sas())

    def ike_established(self) -> bool:
        return any(i.state == "ESTABLISHED" for i in self.sw.list_sas())

    def child_established(self) -> bool:
        return self.sw.installed_child() is not None

    def trafficstatus(self) -> str:
        c = self.sw.installed_child()
        return f"inBytes={c.bytes_in}, outBytes={c.bytes_out}" if c else ""

    def traffic(self) -> tuple[int, int]:
        c = self.sw.installed_child()
        return (c.bytes_in, c.bytes_out) if c else (0, 0)

    def routes_to(self, subnet: str) -> list[str]:
        r = self.lab.run(self.lab.west, ["ip", "route", "show", "table", "all"], check=False)
        return [ln for ln in r.stdout.splitlines() if ln.startswith(subnet)]

    def stop(self) -> None:
        self.sw.stop()
