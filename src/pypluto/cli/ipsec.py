"""The `ipsec` command: Libreswan's front end to pluto, whack and the config tools.

``ipsec start`` runs pluto with ``--config`` (default /etc/ipsec.conf) and waits
until it answers on its control socket; ``ipsec stop`` is ``whack --shutdown``;
the connection and status sub-commands map onto whack; ``checkconfig``,
``addconn`` and ``readwriteconf`` are the config tools.

The command names and aliases are Libreswan 5.2's (programs/ipsec/ipsec.in).
A Libreswan command pypluto cannot do yet fails with "not supported by pypluto"
and a non-zero status (``UNSUPPORTED``), never a silent no-op.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from pypluto import VERSION_BANNER
from pypluto.cli import nsscmd
from pypluto.control.client import ControlError, call, ctl_path
from pypluto.control.protocol import RC_ROUTE, RC_SUCCESS, RC_WHACK_PROBLEM
from pypluto.textsafe import guard

DEFAULT_CONFIG = "/etc/ipsec.conf"

USAGE = """\
Usage: ipsec <command> [arguments]
  pluto [options]              run the IKE daemon (see pluto --help)
  whack [options]              talk to the running daemon (see whack --help)
  start [pluto options]        start pluto with --config /etc/ipsec.conf
  start [--asynchronous] <conn>  add the connection, then bring it up
  stop                         shut pluto down (deletes every SA)
  restart [pluto options]      stop, then start
  add <conn>...                load connections from the config file; a loaded
                               connection of that name is replaced (its SAs deleted)
  replace <conn>...            the same as add
  delete <conn>                delete a connection and its SAs
  up [--asynchronous] <conn>   initiate a connection and wait for the result
  down <conn>                  delete a connection's SAs, keep the connection
  status | briefstatus | trafficstatus | showstates | globalstatus
         | connectionstatus | shuntstatus  [--json]
  trafficstatus | connectionstatus | showstates <conn>   that connection only
  listen                       rescan interfaces and reload secrets
  rereadsecrets                reload the secrets file(s)
  rereadall | rereadcerts      reload the secrets; cached certificates and CRLs are
                               read again from the NSS database on their next use
  initnss | checknss [--nssdir D]   create the NSS database (certutil -N --empty-password)
  import FILE.p12 [--nssdir D] a certificate with its key into the database (pk12util -i)
  listcerts | listcacerts [--nssdir D] [--json]   our certificates / the trusted CAs
  newhostkey [--keytype rsa|ecdsa] [--bits N]     a raw key in the database (certutil -G)
  showhostkey --list | --left|--right [--ckaid X] its public key (leftrsasigkey=0s...)
  listpubkeys [--json]         the public keys pluto's conns use (whack --listpubkeys)
  checkpubkeys [--json]        only those that expire soon or have (whack --checkpubkeys)
  certutil | pk12util | crlutil [args]            NSS's tool on --nssdir
  checkconfig                  check the config file (ipsec addconn --checkconfig)
  addconn [options]            Libreswan's addconn
  readwriteconf [options]      the resolved configuration, canonical form
  version                      show the version
  loadtest [options]           initiate many IKE SAs against a responder (--help)
  auto --add|--replace|--delete|--up|--down|--route|--unroute|--status|
       --rereadsecrets|--rereadall|--listen  NAME   Libreswan 4 spelling (deprecated)
  route NAME                   install the trap policies (traffic brings it up)
  unroute NAME                 remove the trap policies
  ondemand NAME                add (from the config file) and route
  fetchcrls | crls             fetch the CRLs of the distribution points seen now
  listcrls [--json]            the CRLs: NSS db, <ipsecdir>/crls and fetched
  purgeocsp                    empty the OCSP cache
  redirect NAME|--peer-ip A --redirect-to GW [--dry-run]
                               RFC 5685: send established clients to gateway GW
Not supported by pypluto (exit 33): listall, briefconnectionstatus,
  fipsstatus, modutil, vfychain, checknflog, stopnflog, sniff, reload, directory,
  letsencrypt, unbound, setup, rsasigkey, ecdsasigkey, algparse, showroute and the
  _helper programs; the options --remote-host, --dry-run, --utc, --verbose
Common options (before or after the command): --rundir <dir>, --ctlsocket <file>,
  --config <file>; an option a command does not take is refused (exit 33)
"""

# Libreswan 5.2's aliases (ipsec.in) -> our command name.
ALIASES = {
    "--add": "add", "--replace": "replace", "--delete": "delete", "--down": "down",
    "terminate": "down", "--up": "up", "initiate": "up", "--initiate": "up",
    "--status": "status", "--briefstatus": "briefstatus", "--globalstatus": "globalstatus",
    "--connectionstatus": "connectionstatus", "--showstates": "showstates",
    "--statestatus": "showstates", "--trafficstatus": "trafficstatus",
    "traffic": "trafficstatus", "--listen": "listen", "--ready": "listen",
    "--rereadsecrets": "rereadsecrets", "secrets": "rereadsecrets",
    "--rereadall": "rereadall", "--route": "route", "--unroute": "unroute",
    "--ondemand": "ondemand", "--start": "start", "--stop": "stop", "--restart": "restart",
    "--shuntstatus": "shuntstatus", "--rereadgroups": "listen", "--rereadcerts": "rereadcerts",
    "--checkpubkeys": "checkpubkeys", "--listpubkeys": "listpubkeys",
    "--fetchcrls": "fetchcrls", "--listcrls": "listcrls", "--purgeocsp": "purgeocsp",
    "--listcerts": "listcerts", "--listcacerts": "listcacerts", "--import": "import",
    "--checknss": "checknss", "--initnss": "initnss", "--versioncode": "version",
    "--listall": "listall", "--briefconnectionstatus": "briefconnectionstatus",
    "--fipsstatus": "fipsstatus", "--checknflog": "checknflog", "nflog": "checknflog",
    "--stopnflog": "stopnflog", "--directory": "directory", "--sniff": "sniff",
    "--unbound": "unbound",
}

# Libreswan's options that may come before the command ("ipsec --rundir DIR status"):
# moved after it; those with a value take the next argument
LEADING_OPTIONS = {"--rundir": True, "--ctlsocket": True, "--config": True,
                   "--asynchronous": False, "--remote-host": True, "--dry-run": False,
                   "-n": False, "--utc": False}

# On-demand (trap) routing: passed to pluto as whack --route/--unroute (ike/traps.py).
ON_DEMAND_SUPPORTED = True
ON_DEMAND = ("route", "unroute", "ondemand")

# Libreswan 5.2 commands pypluto cannot do: the reason printed with the error.
UNSUPPORTED: dict[str, str] = {
    **{c: "use NSS's own tool on the database" for c in ("modutil", "vfychain")},
    "listall": "use 'ipsec listcerts' and 'ipsec listcacerts'",
    "briefconnectionstatus": "use 'ipsec connectionstatus'",
    "fipsstatus": "pypluto has no FIPS mode",
    "fips": "pypluto has no FIPS mode",
    "checknflog": "NFLOG groups are not implemented",
    "stopnflog": "NFLOG groups are not implemented",
    "reload": "Libreswan 5.2 has no 'ipsec reload'; use 'ipsec rereadall' for the secrets "
              "and 'ipsec add NAME' (or 'ipsec replace NAME') for a changed connection",
    "directory": "pypluto has no helper program directory",
    "letsencrypt": "not implemented",
    "sniff": "NFLOG groups are not implemented",
    "unbound": "not implemented",
    # Libreswan's helper programs that "ipsec NAME" runs from its libexec directory
    **{c: "use 'ipsec newhostkey'" for c in ("rsasigkey", "ecdsasigkey")},
    **{c: "not implemented" for c in ("algparse", "showroute", "cavp", "_import_crl",
                                      "_unbound-hook", "_plutorun", "_stackmanager")},
    "setup": "use 'ipsec start', 'ipsec stop' or 'ipsec restart'",
    "_updown": "pypluto runs the leftupdown= script itself",
}

# Libreswan 5.2 options of its ipsec commands that pypluto does not implement: the reason
NOT_IMPLEMENTED_OPTIONS = {
    "--remote-host": "pypluto cannot override the peer address of a loaded connection",
    "--dry-run": "there is no dry run of this command",
    "-n": "there is no dry run of this command",
    "--utc": "pypluto prints times as they are",
    "--verbose": "there is no verbose mode of this command",
    "--checkconfig": "use 'ipsec checkconfig'",
}
UNSUPPORTED_RC = RC_WHACK_PROBLEM

STATUS_CMDS = ("status", "briefstatus", "trafficstatus", "showstates", "globalstatus",
               "connectionstatus", "shuntstatus")


def _common(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Strip --rundir/--ctlsocket/--config (with their value) from ``args``."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key in ("rundir", "ctlsocket", "config"):
            if key in opts:  # never the last one silently winning (whack refuses it too)
                raise ValueError(f"duplicated option --{key}")
            if "=" in a:
                opts[key] = a.split("=", 1)[1]
            elif i + 1 < len(args):
                opts[key] = args[i + 1]
                i += 1
            else:
                raise ValueError(f"{a} needs a value")
            if not opts[key]:  # "" would quietly mean the default socket / config file
                raise ValueError(f"--{key} needs a value, not an empty string")
        else:
            rest.append(a)
        i += 1
    return opts, rest


def _whack_args(opts: dict[str, str]) -> list[str]:
    out: list[str] = []
    if "rundir" in opts:
        out += ["--rundir", opts["rundir"]]
    if "ctlsocket" in opts:
        out += ["--ctlsocket", opts["ctlsocket"]]
    return out


def _whack(argv: list[str]) -> int:
    from pypluto.cli import whack

    return whack.main(argv)


_COMMON_USAGE = "[--config FILE] [--ctlsocket PATH | --rundir DIR]"
_USAGE = {
    "add": f"ipsec add NAME... {_COMMON_USAGE}",
    "replace": f"ipsec replace NAME... {_COMMON_USAGE}",
    "start": f"ipsec start [--asynchronous] NAME {_COMMON_USAGE}   (add, then up)\n"
             "       ipsec start [--rundir DIR]   (start pluto)",
    "ondemand": f"ipsec ondemand NAME {_COMMON_USAGE}   (add, then route)",
    "up": "ipsec up [--asynchronous] NAME [--ctlsocket PATH | --rundir DIR]",
    "redirect": "ipsec redirect [NAME] --redirect-to ADDRESS[,ADDRESS...] "
                "[--ctlsocket PATH | --rundir DIR]",
    "stop": "ipsec stop [--rundir DIR]",
    **{c: f"ipsec {c} NAME [--ctlsocket PATH | --rundir DIR]"
       for c in ("delete", "down", "route", "unroute")},
}


def _usage(cmd: str) -> int:
    """``ipsec CMD --help``: the command's usage on stdout, exit 0 (as Libreswan 5.2's
    ipsec does for its commands that take a connection name)."""
    print("usage: " + _USAGE.get(cmd, f"ipsec {cmd} [arguments]"))
    return RC_SUCCESS


def _bad_option(cmd: str, opt: str) -> int:
    if opt in ("--help", "-h"):
        return _usage(cmd)
    why = NOT_IMPLEMENTED_OPTIONS.get(opt.split("=", 1)[0])
    if why:
        print(f"ipsec {cmd}: {opt.split('=', 1)[0]} is not supported by pypluto: {why}",
              file=sys.stderr)
    else:
        print(guard(f"ipsec {cmd}: unknown option \"{opt}\""), file=sys.stderr)
    return RC_WHACK_PROBLEM


def _to_whack(rest: list[str]) -> list[str]:
    """A whack sub-command's arguments as Libreswan's ipsec passes them: a bare word is
    the connection name (``ipsec trafficstatus NAME``), the rest goes to whack, which
    refuses what does not apply."""
    out: list[str] = []
    for a in rest:
        out += [a] if a.startswith("-") else ["--name", a]
    return out


def _conn_command(cmd: str, rest: list[str], *, asynchronous: bool = False
                  ) -> tuple[str, list[str]] | int:
    """One connection name (and, for ``up``/``start``, ``--asynchronous``): the name
    and the extra whack options, or the exit status of a refusal."""
    names: list[str] = []
    extra: list[str] = []
    for a in rest:
        if a == "--asynchronous" and asynchronous:
            extra = ["--asynchronous"]
        elif a.startswith("-"):
            return _bad_option(cmd, a)
        else:
            names.append(a)
    if len(names) != 1:
        print(f"ipsec {cmd}: exactly one connection name required", file=sys.stderr)
        return RC_WHACK_PROBLEM
    return names[0], extra


def _hoist(args: list[str]) -> list[str]:
    """``ipsec --rundir DIR status`` -> ``ipsec status --rundir DIR`` (Libreswan takes
    its common options before the command too)."""
    lead: list[str] = []
    i = 0
    while i < len(args):
        key = args[i].split("=", 1)[0]
        if key not in LEADING_OPTIONS:
            break
        if LEADING_OPTIONS[key] and "=" not in args[i]:
            lead += args[i:i + 2]
            i += 2
        else:
            lead.append(args[i])
            i += 1
    if not lead or i >= len(args):
        return args
    return [args[i], *lead, *args[i + 1:]]


def _running(path: str) -> bool:
    try:
        return call(path, "ping", {}, timeout=2.0).rc == RC_SUCCESS
    except ControlError:
        return False


def cmd_start(opts: dict[str, str], rest: list[str], *, wait: float = 30.0) -> int:
    path = ctl_path(opts.get("rundir"), opts.get("ctlsocket"))
    if _running(path):
        print("pluto is already running", file=sys.stderr)
        return 1
    conf = opts.get("config", DEFAULT_CONFIG)
    argv = [sys.executable, "-m", "pypluto.cli.pluto", "--config", conf]
    if "rundir" in opts:
        argv += ["--rundir", opts["rundir"]]
    argv += rest
    rc = subprocess.call(argv)
    if rc != 0:
        return rc
    pidfile = os.path.join(opts.get("rundir", "/run/pluto"), "pluto.pid")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if _running(path):
            return 0
        if not os.path.exists(pidfile):  # the daemon gave up and removed its lock
            print("pluto exited during start-up; see its log", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"pluto did not answer on {path} within {wait:g}s", file=sys.stderr)
    return 1


def cmd_stop(opts: dict[str, str], *, wait: float = 15.0) -> int:
    path = ctl_path(opts.get("rundir"), opts.get("ctlsocket"))
    if not _running(path):
        print("pluto is not running", file=sys.stderr)
        return 0
    rc = _whack(_whack_args(opts) + ["--shutdown"])
    # the lock file is next to the socket (--ctlsocket alone: not /run/pluto's)
    pidfile = os.path.join(os.path.dirname(path), "pluto.pid")
    deadline = time.monotonic() + wait
    while os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    if rc == RC_SUCCESS and os.path.exists(pidfile) and _running(path):
        # never "stopped" (exit 0) while that pluto still runs
        print(f"pluto did not stop within {wait:g}s; it still answers on {path}",
              file=sys.stderr)
        return 1
    return rc


def cmd_add(opts: dict[str, str], names: list[str], verb: str = "add") -> int:
    """``ipsec add`` / ``ipsec replace``: (re)load conns from the config file.

    As Libreswan's addconn, a conn that is already loaded is replaced: its SAs
    are deleted first.  pluto only replaces it once the new definition is found
    and parsed, so a conn missing from the file leaves the loaded one alone;
    pluto's lines say which conns were replaced and which SAs went.
    """
    for n in names:
        if n.startswith("-"):  # never sent to pluto as a connection name
            return _bad_option(verb, n)
    if not names:
        print(f"ipsec {verb}: connection name required", file=sys.stderr)
        return RC_WHACK_PROBLEM
    path = ctl_path(opts.get("rundir"), opts.get("ctlsocket"))
    args: dict[str, object] = {"names": names}
    if "config" in opts:  # else pluto's own --config (or /etc/ipsec.conf)
        args["config"] = os.path.abspath(opts["config"])

    def out(line: str) -> None:  # pluto says "replacing connection" itself (daemon/registry.py)
        print(line, flush=True)

    try:
        reply = call(path, "add", args, on_output=out)
    except ControlError as e:
        print(guard(f"ipsec {verb}: {e}"), file=sys.stderr)
        return e.rc
    if reply.error:
        print(reply.error)
    return reply.rc


def cmd_redirect(w: list[str], rest: list[str]) -> int:
    """Libreswan 5.2's ``ipsec redirect [NAME] --redirect-to ADDR [--peer-ip ADDR]
    [--dry-run]`` (ipsec-redirect(8)): ``whack --redirect-to``, which sends RFC 5685
    REDIRECT to the established clients of NAME (or at ``--peer-ip``)."""
    names: list[str] = []
    opts: dict[str, str] = {}
    dry = False
    i = 0
    while i < len(rest):
        a = rest[i]
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key in ("redirect-to", "to", "peer-ip"):
            if "=" in a:
                opts[key] = a.split("=", 1)[1]
            elif i + 1 < len(rest):
                opts[key] = rest[i + 1]
                i += 1
            else:
                print(f"ipsec redirect: {a} needs a value", file=sys.stderr)
                return RC_WHACK_PROBLEM
        elif key == "dry-run":
            dry = True
        elif a in ("--help", "-h"):
            return _usage("redirect")
        elif key:
            print(guard(f"ipsec redirect: unknown option {a}"), file=sys.stderr)
            return RC_WHACK_PROBLEM
        else:
            names.append(a)
        i += 1
    to = opts.get("redirect-to") or opts.get("to")
    if not to:
        print("ipsec redirect: --redirect-to ADDRESS is required", file=sys.stderr)
        return RC_WHACK_PROBLEM
    targets = [t for t in to.replace(",", " ").split() if t]
    if len(targets) != 1:
        print("ipsec redirect: pypluto redirects to one gateway address at a time "
              f"(--redirect-to {to})", file=sys.stderr)
        return RC_WHACK_PROBLEM
    if len(names) > 1 or not (names or "peer-ip" in opts):
        print("ipsec redirect: one connection name or --peer-ip ADDRESS is required",
              file=sys.stderr)
        return RC_WHACK_PROBLEM
    argv = w + ["--redirect-to", targets[0]]
    if names:
        argv += ["--name", names[0]]
    if "peer-ip" in opts:
        argv += ["--peer-ip", opts["peer-ip"]]
    if dry:
        print("ipsec whack " + " ".join(argv))
        return 0
    return _whack(argv)


def cmd_unsupported(cmd: str) -> int:
    if cmd in ON_DEMAND:
        print(f"ipsec {cmd}: not supported by pypluto: on-demand (trap) routing is not "
              "implemented yet; use 'ipsec up NAME' to bring a connection up",
              file=sys.stderr)
        return RC_ROUTE
    print(f"ipsec {cmd}: not supported by pypluto: {UNSUPPORTED[cmd]}", file=sys.stderr)
    return UNSUPPORTED_RC


def _config_tool(name: str, argv: list[str]) -> int:
    try:
        from pypluto.config import commands
    except ImportError:
        print(f"ipsec {name}: the configuration tools are not available", file=sys.stderr)
        return 1
    fn: Callable[[list[str]], int] = getattr(commands, f"{name}_main")
    return int(fn(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    args = _hoist(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("--help", "-h", "help"):
        print(USAGE, end="")
        return 0 if args else 1
    cmd, rest_args = args[0], args[1:]
    cmd = ALIASES.get(cmd, cmd)
    if cmd in ("--version", "version"):
        print(VERSION_BANNER)
        return 0
    if cmd == "pluto":
        from pypluto.cli import pluto

        return pluto.main(rest_args)
    if cmd == "whack":
        return _whack(rest_args)
    if cmd == "addconn":
        return _config_tool("addconn", rest_args)
    if cmd == "readwriteconf":
        return _config_tool("readwriteconf", rest_args)
    if cmd == "loadtest":
        from pypluto import loadtest

        return loadtest.main(rest_args)
    try:
        opts, rest = _common(rest_args)
    except ValueError as e:
        print(guard(f"ipsec {cmd}: {e}"), file=sys.stderr)
        return 1
    w = _whack_args(opts)
    if cmd == "checkconfig":
        return _config_tool("addconn", ["--config", opts.get("config", DEFAULT_CONFIG),
                                        "--checkconfig", *rest])
    if cmd in nsscmd.COMMANDS:  # the NSS database (issue 14)
        return nsscmd.main(cmd, rest)
    if cmd in UNSUPPORTED or (cmd in ON_DEMAND and not ON_DEMAND_SUPPORTED):
        return cmd_unsupported(cmd)
    if cmd == "start" and rest and (not rest[0].startswith("-") or
                                    rest[0] == "--asynchronous"):
        # Libreswan 5.2: "ipsec start [--asynchronous] NAME" is add + up
        got = _conn_command(cmd, rest, asynchronous=True)
        if isinstance(got, int):
            return got
        name, extra = got
        rc = cmd_add(opts, [name], "start")
        return rc or _whack(w + [*extra, "--name", name, "--initiate"])
    if cmd in ("start", "restart") and "ctlsocket" in opts:
        # pluto has no --ctlsocket: it listens on RUNDIR/pluto.ctl, so start would wait
        # on another path, report a failure and leave the new pluto running
        print(f"ipsec {cmd}: --ctlsocket does not apply: pluto's control socket is "
              "RUNDIR/pluto.ctl; use --rundir", file=sys.stderr)
        return RC_WHACK_PROBLEM
    if cmd in ("start", "restart") and "--nofork" in rest:
        # start would block in the foreground pluto, then report a failed start (and
        # restart would stop the running pluto first)
        print(f"ipsec {cmd}: --nofork does not apply: start runs pluto as a daemon; use "
              "'ipsec pluto --nofork' for a foreground pluto", file=sys.stderr)
        return RC_WHACK_PROBLEM
    if cmd == "start":
        return cmd_start(opts, rest)
    if cmd == "stop":
        if rest:  # Libreswan's "ipsec stop" takes no argument
            return _bad_option(cmd, rest[0])
        return cmd_stop(opts)
    if cmd == "restart":
        cmd_stop(opts)
        return cmd_start(opts, rest)
    if cmd in STATUS_CMDS or cmd in ("listen", "rereadsecrets", "listpubkeys",
                                     "checkpubkeys", "listcrls", "purgeocsp"):
        # a NAME becomes --name NAME, as Libreswan's ipsec passes it; whack refuses it
        # (and any option, --json aside) where it does not apply
        return _whack(w + [f"--{cmd}", *_to_whack(rest)])
    if cmd in ("fetchcrls", "crls"):  # revocation (issue 14)
        return _whack(w + ["--fetchcrls", *_to_whack(rest)])
    if cmd in ("rereadall", "rereadcerts"):
        # pluto's --rereadsecrets also drops its cached certificates and CRLs, which are
        # read again from the NSS database on their next use
        return _whack(w + ["--rereadsecrets", *_to_whack(rest)])
    if cmd in ("add", "replace"):
        return cmd_add(opts, rest, cmd)
    if cmd in ("delete", "up", "down", "route", "unroute", "ondemand"):
        got = _conn_command(cmd, rest, asynchronous=cmd == "up")
        if isinstance(got, int):
            return got
        name, extra = got
        if cmd == "ondemand":  # add, then route (Libreswan 5.2 ipsec-ondemand(8))
            return (cmd_add(opts, [name], "ondemand")
                    or _whack(w + ["--name", name, "--route"]))
        action = {"delete": "--delete", "up": "--initiate", "down": "--down",
                  "route": "--route", "unroute": "--unroute"}[cmd]
        return _whack(w + [*extra, "--name", name, action])
    if cmd == "redirect":
        return cmd_redirect(w, rest)
    if cmd == "auto":  # Libreswan 4's "ipsec auto --up NAME" spelling (deprecated in 5.0)
        mapping = {"--add": "add", "--replace": "replace", "--delete": "delete",
                   "--up": "up", "--down": "down", "--route": "route", "--unroute": "unroute",
                   "--ondemand": "ondemand", "--status": "status",
                   "--rereadsecrets": "rereadsecrets", "--rereadall": "rereadall",
                   "--listen": "listen", "--ready": "listen"}
        ops = [a for a in rest if a in mapping]
        names = [a for a in rest if a not in mapping]
        if len(ops) != 1:
            print("ipsec auto: exactly one of " + ", ".join(mapping) + " is required",
                  file=sys.stderr)
            return RC_WHACK_PROBLEM
        print("WARNING: ipsec auto has been deprecated", file=sys.stderr)
        extra = [f"--{k}={v}" for k, v in opts.items()]
        return main([mapping[ops[0]], *extra, *names])
    print(guard(f"ipsec: unknown command \"{cmd}\"; try 'ipsec --help'"), file=sys.stderr)
    return 1


if __name__ == "__main__":
    from pypluto.cli.entry import ipsec

    ipsec()
