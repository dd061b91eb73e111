"""pluto's command line (the options of ipsec-pluto(8)), merged with ``config setup``.

Every option of the man page is in ``OPTIONS``: it works (the named test proves it),
or it is refused with a clear error until pypluto has the feature (issue 12: never
"kept and shown only").  Values given on the command line win over ``config setup``
of ``--config``.  A bad argument is a clear one-line error and exit status 1 (the
man page's "something was wrong").
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import sys
from dataclasses import dataclass, field

from pypluto import VERSION_BANNER
from pypluto.config.virtual_private import VirtualPrivate
from pypluto.daemon.logger import debug_help, parse_debug_specs
from pypluto.daemon.metrics import parse_listen

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_LOCKED = 10

DEFAULT_RUNDIR = "/run/pluto"
DEFAULT_SECCTX_ATTR_TYPE = 32001  # Libreswan's default (a private-use value)
DEFAULT_IPSECDIR = "/etc/ipsec.d"
DEFAULT_NSSDIRS = ("/var/lib/ipsec/nss", "/etc/ipsec.d")  # 5.x default, and 3.x/4.x's
MAX_DURATION = 10 * 365 * 86400  # seconds; config/values.parse_duration's bound
# the ranges of the numeric options; config setup's nhelpers=, seedbits= and keep-alive=
# are held to the same ones (_setup_int)
NHELPERS_RANGE = (-1, 1000)
SEEDBITS_RANGE = (0, 1 << 20)
KEEP_ALIVE_RANGE = (1, 86400)
# bytes of --vendorid / myvendorid=: the VID rides in every IKE_SA_INIT, which is never
# fragmented (RFC 7383 §2.5); with it the message stays within the 3000 bytes RFC 7296
# §2 asks implementations to handle (beyond 65531 bytes it cannot even be encoded)
MAX_VENDORID = 1024

_T_D = "tests/daemon/test_daemon.py::"
_T_DIP = "tests/daemon/test_daemon_inprocess.py::"
_T_AUD = "tests/daemon/test_pluto_option_audit.py::"

# every option of ipsec-pluto(8): ("works", test that proves it) or
# ("default-only", why other values are refused) or ("refused", why)
OPTIONS: dict[str, tuple[str, str]] = {
    "--help": ("works", "tests/daemon/test_daemon_args.py::test_help_version_debug_help"),
    "--version": ("works", "tests/daemon/test_daemon_args.py::test_help_version_debug_help"),
    "--nofork": ("works", _T_D + "test_nofork_lock_socket_and_sigterm"),
    "--rundir": ("works", _T_D + "test_nofork_lock_socket_and_sigterm"),
    "--leak-detective": ("works", _T_D + "test_listen_address_only_and_leak_detective"),
    "--efence-protect": ("works", _T_AUD
                         + "test_efence_protect_fault_handler_writes_into_coredir"),
    "--stderrlog": ("works", _T_D + "test_stderrlog_time_append_and_debug_lines"),
    "--logfile": ("works", _T_D + "test_sighup_hint_log_options_and_masking"),
    "--log-no-time": ("works", _T_D + "test_sighup_hint_log_options_and_masking"),
    "--log-no-append": ("works", _T_D + "test_sighup_hint_log_options_and_masking"),
    "--log-no-ip": ("works", _T_D + "test_sighup_hint_log_options_and_masking"),
    "--log-no-audit": ("works", "tests/daemon/test_daemon_pair.py::"
                       "test_psk_tunnel_initiate_status_down"),
    "--config": ("works", _T_D + "test_config_setup_conns_secrets_and_cli_wins"),
    "--secretsfile": ("works", _T_D + "test_config_setup_conns_secrets_and_cli_wins"),
    "--ipsecdir": ("works", "tests/daemon/test_nss_password.py::"
                   "test_nsspassword_file_in_ipsecdir_opens_the_database"),
    "--nssdir": ("works", "tests/daemon/test_nss_password.py::"
                 "test_nsspassword_file_in_ipsecdir_opens_the_database"),
    "--coredir": ("works", _T_AUD + "test_coredir_apart_from_rundir_gets_the_crash_reports"),
    "--vendorid": ("works", _T_D + "test_config_setup_conns_secrets_and_cli_wins"),
    "--uniqueids": ("works", _T_DIP + "test_command_line_reaches_engine_settings"),
    "--virtual-private": ("works", _T_DIP + "test_command_line_reaches_engine_settings"),
    "--keep-alive": ("works", _T_AUD + "test_keep_alive_is_the_nat_keepalive_interval"),
    "--force-busy": ("works", "tests/ike/test_lifecycle.py::test_cookie_round_trip"),
    "--crl-strict": ("works", _T_AUD + "test_crl_strict_reaches_the_certificate_store"),
    "--crlcheckinterval": ("works", _T_AUD + "test_crlcheckinterval_runs_the_refresh_loop"),
    "--listen": ("works", _T_D + "test_listen_address_only_and_leak_detective"),
    "--nhelpers": ("works", "tests/daemon/test_offload.py::test_no_helpers_means_inline"),
    "--seedbits": ("works", _T_D + "test_listen_address_only_and_leak_detective"),
    "--statsbin": ("works", "tests/daemon/test_daemon_pair.py::"
                   "test_auto_start_statsbin_and_shutdown_deletes"),
    "--secctx-attr-type": ("default-only", "labeled IPsec is not implemented by pypluto"),
    "--use-xfrm": ("works", _T_D + "test_use_xfrm"),
    "--use-bsdkame": ("refused", "the BSD KAME IPsec stack is not available on Linux"),
    "--debug": ("works", _T_D + "test_stderrlog_time_append_and_debug_lines"),
}


def _not_supported(option: str, value: str | None = None) -> OptionError:
    what = option if value is None else f"{option} {value}"
    return OptionError(f"{what} is not supported by pypluto ({OPTIONS[option][1]})")


class OptionError(Exception):
    """A bad command-line argument; the message is shown as ``pluto: <msg>``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise OptionError(message)


class _Once(argparse.Action):
    """An option with a value: given twice (or with an alias, --coredir / --dumpdir) it
    is refused (Libreswan's "duplicated flag") instead of the last one silently winning
    (``--listen A --listen B`` would otherwise listen on B alone)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        old = getattr(namespace, self.dest, None)
        if old is not None:
            raise OptionError(f'duplicated option {option_string} "{values}": '
                              f'{" / ".join(self.option_strings)} was already given '
                              f'("{old}"); give it once')
        setattr(namespace, self.dest, values)


USAGE = """\
Usage: pluto [--help] [--version]
             [--nofork] [--rundir path] [--leak-detective] [--efence-protect]
             [--stderrlog] [--logfile filename] [--log-no-time] [--log-no-append]
             [--log-no-ip] [--log-no-audit]
             [--config filename] [--secretsfile secrets-file] [--ipsecdir dirname]
             [--nssdir dirname] [--coredir dirname]
             [--vendorid VID] [--uniqueids] [--virtual-private network_list]
             [--keep-alive delay_sec] [--force-busy] [--crl-strict]
             [--crlcheckinterval seconds] [--listen ipaddr] [--nhelpers number]
             [--seedbits numbits] [--statsbin filename] [--secctx-attr-type number]
             [--use-xfrm] [--use-userspace] [--use-none] [--use-bsdkame]
             [--debug class] [--no-debug class]
"""

HELP_NOTES = """
Options (ipsec-pluto(8); the command line wins over "config setup" of --config;
an option with a value is given at most once; --stderrlog and --logfile exclude
each other):
  --help, --version        this text; the version
  --nofork                 no daemon fork; print "Pluto initialized" when ready
  --rundir path            pluto.pid (lock) and pluto.ctl (whack socket); /run/pluto
  --leak-detective         log a tracemalloc allocation report at shutdown
  --efence-protect         Python's fault handler (into --coredir) and asyncio
                           debug mode: the nearest Python equivalent of guard pages
  --stderrlog | --logfile f   log to stderr / a file instead of syslog (authpriv)
  --log-no-time, --log-no-append, --log-no-ip, --log-no-audit
                           no timestamps; truncate the file; mask IP addresses;
                           no audit records (AUDIT: lines and Linux audit)
  --config f               load "config setup" and the conns (auto=add/start/...)
  --secretsfile glob       PSKs (default /etc/ipsec.secrets; every match is read)
  --ipsecdir d             default /etc/ipsec.d: nsspassword (the NSS database's
                           password), cacerts/ and crls/ (extra PEM/DER CAs, CRLs)
  --nssdir d               the NSS database of certificates, CAs and keys
                           (default /var/lib/ipsec/nss), read with certutil/pk12util
  --coredir d              crash reports of unhandled errors go here (default: rundir)
  --vendorid VID           send VID as an extra Vendor ID payload
  --uniqueids              a new IKE SA for a peer ID replaces the older ones
  --virtual-private list   %v4:NET,%v6:NET,%v4:!NET: the subnets a peer behind NAT
                           may claim (its own private address) without rightsubnet=
  --keep-alive secs        NAT-T keepalive interval (default 20)
  --force-busy             always demand COOKIEs (RFC 7296 section 2.6)
  --crl-strict             a peer certificate needs a current CRL from its issuer
  --crlcheckinterval secs  fetch CRLs from distribution points, refresh them
                           every secs (0, the default: no fetching)
  --listen ipaddr          only this address (default: every local address)
  --nhelpers n             crypto helper threads; -1 = CPUs-1, 0 = inline
  --seedbits n             read n bits from /dev/random and mix them into the pool
  --statsbin f             run f on every SA event (PLUTO_EVENT, PLUTO_CONNECTION)
  --secctx-attr-type n     only the default 32001: labeled IPsec is not supported
  --use-xfrm | --use-userspace | --use-none
                           kernel XFRM, our ESP-over-TUN plane, or nothing;
                           without one the kernel is probed (XFRM if it carries
                           ESP, else userspace); --use-bsdkame is BSD only
  --debug class, --no-debug class
                           debug classes ("--debug help" lists them); debug
                           lines start with "| "
  --ikeport p, --natikeport p   IKE ports (default 500/4500; for tests)
"""


def build_parser() -> _Parser:
    p = _Parser(prog="pluto", usage=USAGE, add_help=False, allow_abbrev=False)
    a = p.add_argument
    a("--help", action="store_true")
    a("--version", action="store_true")
    a("--nofork", action="store_true")
    a("--rundir", metavar="path", action=_Once)
    a("--leak-detective", action="store_true")
    a("--efence-protect", action="store_true")
    a("--stderrlog", action="store_true")
    a("--logfile", metavar="filename", action=_Once)
    a("--log-no-time", action="store_true")
    a("--log-no-append", action="store_true")
    a("--log-no-ip", action="store_true")
    a("--log-no-audit", action="store_true")
    a("--config", metavar="filename", action=_Once)
    a("--secretsfile", metavar="secrets-file", action=_Once)
    a("--ipsecdir", metavar="dirname", action=_Once)
    a("--nssdir", metavar="dirname", action=_Once)
    a("--coredir", "--dumpdir", dest="coredir", metavar="dirname", action=_Once)
    a("--vendorid", metavar="VID", action=_Once)
    a("--uniqueids", action="store_true")
    a("--virtual-private", metavar="network_list", action=_Once)
    a("--keep-alive", metavar="delay_sec", action=_Once)
    a("--force-busy", action="store_true")
    a("--crl-strict", action="store_true")
    a("--crlcheckinterval", metavar="seconds", action=_Once)
    a("--listen", metavar="ipaddr", action=_Once)
    a("--nhelpers", metavar="number", action=_Once)
    a("--seedbits", metavar="numbits", action=_Once)
    a("--statsbin", metavar="filename", action=_Once)
    a("--secctx-attr-type", metavar="number", action=_Once)
    a("--use-xfrm", "--use-netkey", dest="use_xfrm", action="store_true")
    a("--use-bsdkame", action="store_true")
    a("--use-userspace", action="store_true")
    a("--use-none", action="store_true")
    a("--debug", action="append", default=[], metavar="class")
    a("--no-debug", action="append", default=[], metavar="class")
    a("--ikeport", metavar="port", action=_Once)
    a("--natikeport", metavar="port", action=_Once)
    return p


@dataclass
class PlutoOptions:
    """The resolved configuration of one pluto run."""

    nofork: bool = False
    rundir: str = DEFAULT_RUNDIR
    leak_detective: bool = False
    efence_protect: bool = False
    stderrlog: bool = False
    logfile: str | None = None
    logtime: bool = True
    logappend: bool = True
    logip: bool = True
    audit: bool = True
    config: str | None = None
    secretsfile: str = "/etc/ipsec.secrets"
    ipsecdir: str = "/etc/ipsec.d"
    nssdir: str = "/var/lib/ipsec/nss"
    coredir: str = DEFAULT_RUNDIR
    vendorid: str | None = None
    ike_socket_bufsize: int | None = None  # config setup ike-socket-bufsize= (bytes)
    uniqueids: bool = True
    virtual_private: str | None = None
    keep_alive: int = 20
    force_busy: bool = False
    crl_strict: bool = False
    crlcheckinterval: float = 0.0
    # config setup curl-timeout= and ocsp-*= (config/revocation.py's RevocationPolicy)
    revocation: dict[str, object] = field(default_factory=dict)
    listen: str | None = None
    nhelpers: int = -1
    seedbits: int = 0
    statsbin: str | None = None
    metrics_listen: tuple[str, int] | None = None  # config setup metrics-listen= (addition)
    secctx_attr_type: int = DEFAULT_SECCTX_ATTR_TYPE
    backend: str | None = None  # xfrm | userspace | none | None = probe
    debug: set[str] = field(default_factory=set)
    ikeport: int = 500
    natikeport: int = 4500
    setup: object | None = None  # the SetupConfig of --config, if any
    config_result: object | None = None  # whatever load_config returned

    @property
    def pidfile(self) -> str:
        return os.path.join(self.rundir, "pluto.pid")

    @property
    def ctlsocket(self) -> str:
        return os.path.join(self.rundir, "pluto.ctl")


def _int(name: str, value: str, lo: int, hi: int) -> int:
    try:
        # int() also takes "1_0" and other scripts' digits ("٣"): not numbers to strtol()
        if not value.isascii() or "_" in value:
            raise ValueError(value)
        v = int(value, 0)
    except ValueError:
        raise OptionError(f'{name} "{value}" is not a number') from None
    if not lo <= v <= hi:
        raise OptionError(f'{name} "{value}" must be between {lo} and {hi}')
    return v


def _duration(name: str, value: str) -> float:
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    v = value.strip()
    unit = 1
    if v and v[-1] in mult:
        unit, v = mult[v[-1]], v[:-1]
    try:
        f = float(v)
    except ValueError:
        raise OptionError(f'{name} "{value}" is not a duration (e.g. 300, 5m, 1h)') from None
    if f < 0:
        raise OptionError(f'{name} "{value}" must not be negative')
    # float() takes "nan" and "inf": nan > 0 is False (fetching silently off), inf a
    # timer that never fires; config setup's durations stop at ten years too
    if math.isnan(f):
        raise OptionError(f'{name} "{value}" is not a duration (e.g. 300, 5m, 1h)')
    if f * unit > MAX_DURATION:
        raise OptionError(f'{name} "{value}" is too large (at most ten years)')
    return f * unit


def parse_args(argv: list[str]) -> tuple[str, PlutoOptions | str]:
    """Parse argv.  Returns ("run", options), ("help", text) or ("version", text).

    Raises OptionError for any bad argument.
    """
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    if rest:
        what = "unrecognized option" if rest[0].startswith("-") else "unexpected argument"
        # Libreswan's getopt_long() takes an unambiguous abbreviation ("--nofor"); we
        # refuse it, and say which option was probably meant
        stem = rest[0].split("=", 1)[0]
        full = sorted(o for o in parser._option_string_actions
                      if stem.startswith("--") and o.startswith(stem))
        hint = f" (options are not abbreviated: {' or '.join(full)}?)" if full else ""
        raise OptionError(f"{what} '{rest[0]}'{hint}")
    if ns.help:
        return "help", USAGE + HELP_NOTES
    if ns.version:
        return "version", f"{VERSION_BANNER}, IKEv2 only"
    if any(d.strip() == "help" for d in ns.debug):
        return "help", debug_help()

    for opt, given in (("--logfile", ns.logfile), ("--config", ns.config),
                       ("--virtual-private", ns.virtual_private)):
        if given is not None and not given.strip():
            # "" would silently mean syslog / no config file / no virtual-private
            raise OptionError(f"{opt} needs a value")
    for opt, specs in (("--debug", ns.debug), ("--no-debug", ns.no_debug)):
        if any(not d.strip() for d in specs):
            raise OptionError(f"{opt} needs a debug class (--debug help lists them)")
    if ns.stderrlog and ns.logfile is not None:
        # ipsec-pluto(8): --stderrlog logs to stderr "instead of a log file"; both on
        # one command line is a contradiction, not a choice for us to make silently
        raise OptionError("--stderrlog and --logfile conflict: log to standard error or "
                          "to a file, not both")

    o = PlutoOptions()
    setup = None
    if ns.config:
        setup, result = load_setup(ns.config)
        o.config = ns.config
        o.setup = setup
        o.config_result = result
        _apply_setup(o, setup)

    if ns.rundir is not None:
        if not ns.rundir:
            raise OptionError("--rundir needs a directory")
        o.rundir = ns.rundir
        raw = getattr(setup, "raw", {}) or {}
        if ns.coredir is None and "dumpdir" not in raw and "coredir" not in raw:
            o.coredir = ns.rundir  # the default core dir is the run dir
    o.nofork = ns.nofork
    o.leak_detective = ns.leak_detective
    o.efence_protect = ns.efence_protect
    if ns.stderrlog:
        o.stderrlog = True
        o.logfile = None
    if ns.logfile is not None:
        o.logfile = ns.logfile
        o.stderrlog = False
    if ns.log_no_time:
        o.logtime = False
    if ns.log_no_append:
        o.logappend = False
    if ns.log_no_ip:
        o.logip = False
    if ns.log_no_audit:
        o.audit = False
    for attr in ("secretsfile", "ipsecdir", "nssdir", "coredir", "statsbin", "vendorid"):
        v = getattr(ns, attr)
        if v is not None:
            if not v:
                raise OptionError(f"--{attr} needs a value")
            setattr(o, attr, v)
    if ns.uniqueids:
        o.uniqueids = True
    if ns.virtual_private is not None:
        o.virtual_private = ns.virtual_private
    if o.virtual_private:
        try:
            VirtualPrivate.parse(o.virtual_private)
        except ValueError as e:
            raise OptionError(f"--virtual-private: {e}") from None
    if ns.keep_alive is not None:
        o.keep_alive = _int("--keep-alive", ns.keep_alive, *KEEP_ALIVE_RANGE)
    if ns.force_busy:
        o.force_busy = True
    if ns.crl_strict:
        o.crl_strict = True
    if ns.crlcheckinterval is not None:
        o.crlcheckinterval = _duration("--crlcheckinterval", ns.crlcheckinterval)
    if ns.listen is not None:
        o.listen = ns.listen
    if o.listen is not None:
        try:
            # "fe80::1%eth0": ip_address() takes the scope, which then matches no local
            # address (pluto would start, listening nowhere)
            if "%" in o.listen:
                raise ValueError(o.listen)
            ipaddress.ip_address(o.listen)
        except ValueError:
            raise OptionError(f'--listen "{o.listen}" is not an IP address') from None
    if ns.nhelpers is not None:
        o.nhelpers = _int("--nhelpers", ns.nhelpers, *NHELPERS_RANGE)
    if ns.seedbits is not None:
        o.seedbits = _int("--seedbits", ns.seedbits, *SEEDBITS_RANGE)
    if o.vendorid is not None:
        where = None if ns.vendorid is not None else \
            (getattr(setup, "origins", {}) or {}).get("myvendorid")
        _check_vendorid("--vendorid" if ns.vendorid is not None else
                        f"{where}: myvendorid" if where else "myvendorid", o.vendorid)
    if ns.secctx_attr_type is not None:
        o.secctx_attr_type = _int("--secctx-attr-type", ns.secctx_attr_type, 1, 65535)
        if o.secctx_attr_type != DEFAULT_SECCTX_ATTR_TYPE:
            raise _not_supported("--secctx-attr-type", ns.secctx_attr_type)
    if ns.ipsecdir is not None:
        o.ipsecdir = os.path.normpath(ns.ipsecdir)  # nsspassword, cacerts/, crls/
    if ns.nssdir is not None:
        o.nssdir = os.path.normpath(ns.nssdir)
    if ns.ikeport is not None:
        o.ikeport = _int("--ikeport", ns.ikeport, 1, 65535)
    if ns.natikeport is not None:
        o.natikeport = _int("--natikeport", ns.natikeport, 1, 65535)
    if o.ikeport == o.natikeport:
        raise OptionError("--ikeport and --natikeport must differ")

    chosen = [n for n, f in (("xfrm", ns.use_xfrm), ("userspace", ns.use_userspace),
                             ("none", ns.use_none), ("bsdkame", ns.use_bsdkame)) if f]
    if len(chosen) > 1:
        raise OptionError("only one of --use-xfrm, --use-userspace, --use-none, --use-bsdkame")
    if chosen == ["bsdkame"]:
        raise OptionError("--use-bsdkame is not supported by pypluto (the BSD KAME IPsec "
                          f"stack is not available on {sys.platform}; use --use-xfrm or "
                          "--use-userspace)")
    if chosen:
        o.backend = chosen[0]

    try:
        o.debug = parse_debug_specs(list(ns.debug), o.debug)
        o.debug = parse_debug_specs([f"no-{d}" for d in ns.no_debug], o.debug)
    except ValueError as e:
        raise OptionError(str(e)) from None
    return "run", o


def _check_vendorid(name: str, vid: str) -> None:
    """The Vendor ID goes out as UTF-8 in every IKE_SA_INIT of a send-vendorid=yes conn,
    a message that is never fragmented (RFC 7383 §2.5): bytes that are no text (argv
    of a non-UTF-8 locale) and lengths beyond a payload are refused here, not when the
    first connection starts."""
    try:
        n = len(vid.encode())
    except UnicodeEncodeError:
        raise OptionError(f"{name}: the Vendor ID is not valid UTF-8 text") from None
    if n > MAX_VENDORID:
        raise OptionError(f"{name}: the Vendor ID is {n} bytes; at most {MAX_VENDORID}")


def load_setup(path: str) -> tuple[object, object]:
    """Load ``config setup`` (and the conns) of ``path``; OptionError when it fails."""
    if not os.path.exists(path):
        raise OptionError(f'--config "{path}": no such file')
    try:
        from pypluto.config.parser import load_config
    except ImportError:
        raise OptionError("configuration parser is not available in this build") from None
    try:
        result = load_config(path)
    except OSError as e:  # a directory, unreadable: "[Errno 21] Is a directory" named no file
        what = f'"{e.filename}": ' if e.filename and e.filename != path else ""
        raise OptionError(f'--config "{path}": {what}{e.strerror or e}') from None
    except Exception as e:  # noqa: BLE001 - the parser's errors name file:line
        raise OptionError(f"{e}") from None
    errors = getattr(result, "file_errors", None)
    if errors is None:
        errors = getattr(result, "errors", None)
    if errors:
        raise OptionError("; ".join(str(x) for x in errors))
    setup = getattr(result, "setup", None)
    if setup is None:
        from pypluto.config.model import SetupConfig

        setup = SetupConfig()
    return setup, result


_REVOCATION_KEYS = ("curl_timeout", "curl_iface", "ocsp_enable", "ocsp_strict", "ocsp_uri",
                    "ocsp_timeout", "ocsp_trustname", "ocsp_cache_size", "ocsp_cache_min_age",
                    "ocsp_cache_max_age", "ocsp_method")


def _setup_int(s: object, key: str, value: int, limits: tuple[int, int]) -> int:
    """A number of ``config setup`` held to its command-line option's range: the parser
    takes nhelpers= up to 2^64-1 (a pool of up to that many threads), seedbits= up to 2^31-1
    (256 MiB read from /dev/random) and keep-alive=0 or 500ms (no keep-alives at all)."""
    lo, hi = limits
    if lo <= value <= hi:
        return value
    raw = (getattr(s, "raw", {}) or {}).get(key, value)
    where = (getattr(s, "origins", {}) or {}).get(key)
    unit = " seconds" if key == "keep-alive" else ""
    msg = f"{key}={raw}: must be between {lo} and {hi}{unit} (as --{key})"
    raise OptionError(f"{where}: {msg}" if where else msg)


def _apply_setup(o: PlutoOptions, s: object) -> None:
    """Copy ``config setup`` values into the options (the command line is applied after)."""
    g = getattr
    if g(s, "logfile", None):
        o.logfile = s.logfile  # type: ignore[attr-defined]
    o.logtime = g(s, "logtime", True)
    o.logappend = g(s, "logappend", True)
    o.logip = g(s, "logip", True)
    o.audit = g(s, "audit_log", True)
    o.uniqueids = g(s, "uniqueids", True)
    o.listen = g(s, "listen", None)
    o.nhelpers = _setup_int(s, "nhelpers", g(s, "nhelpers", -1), NHELPERS_RANGE)
    o.keep_alive = _setup_int(s, "keep-alive", int(g(s, "keep_alive", 20)), KEEP_ALIVE_RANGE)
    o.virtual_private = g(s, "virtual_private", None)
    o.vendorid = g(s, "myvendorid", None)
    o.ike_socket_bufsize = g(s, "ike_socket_bufsize", None)
    o.crl_strict = g(s, "crl_strict", False)
    o.crlcheckinterval = float(g(s, "crlcheckinterval", 0.0))
    o.revocation = {k: g(s, k) for k in _REVOCATION_KEYS if hasattr(s, k)}
    o.ipsecdir = g(s, "ipsecdir", o.ipsecdir)
    o.nssdir = g(s, "nssdir", o.nssdir)
    o.secretsfile = g(s, "secretsfile", o.secretsfile)
    o.coredir = g(s, "dumpdir", o.coredir)
    listen = g(s, "metrics_listen", None)
    if listen:
        try:
            o.metrics_listen = parse_listen(listen)
        except ValueError as e:
            where = g(s, "origins", {}).get("metrics-listen")
            raise OptionError(f"{where}: metrics-listen={listen}: {e}" if where
                              else f"metrics-listen={listen}: {e}") from None
    o.rundir = g(s, "rundir", o.rundir)
    o.seedbits = _setup_int(s, "seedbits", g(s, "seedbits", 0), SEEDBITS_RANGE)
    o.statsbin = g(s, "statsbin", None)
    if g(s, "secctx_attr_type", None):
        o.secctx_attr_type = s.secctx_attr_type  # type: ignore[attr-defined]
    if g(s, "ddos_mode", "auto") == "busy":
        o.force_busy = True
    proto = g(s, "protostack", None)
    if proto in ("xfrm", "netkey"):
        o.backend = "xfrm"
    elif proto in ("userspace", "none"):
        o.backend = proto
    try:
        o.debug = parse_debug_specs(list(g(s, "plutodebug", []) or []), set())
    except ValueError as e:
        raise OptionError(f"plutodebug: {e}") from None
