"""The `ipsec` command: Libreswan's front end to pluto, whack and the config tools.

``ipsec start`` runs pluto with ``--config`` (default /etc/ipsec.conf) and waits
until it answers on its control socket; ``ipsec stop`` is ``whack --shutdown``;
the connection and status sub-commands map onto whack; ``checkconfig``,
``addconn`` and ``readwriteconf`` are the config tools.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from pypluto import __version__
from pypluto.control.client import ControlError, call, ctl_path
from pypluto.control.protocol import RC_SUCCESS, RC_WHACK_PROBLEM

DEFAULT_CONFIG = "/etc/ipsec.conf"

USAGE = """\
Usage: ipsec <command> [arguments]
  pluto [options]              run the IKE daemon (see pluto --help)
  whack [options]              talk to the running daemon (see whack --help)
  start [pluto options]        start pluto with --config /etc/ipsec.conf
  stop                         shut pluto down (deletes every SA)
  restart [pluto options]      stop, then start
  add <conn>...                load connections from the config file
  delete <conn>                delete a connection and its SAs
  up <conn>                    initiate a connection and wait for the result
  down <conn>                  delete a connection's SAs, keep the connection
  status | briefstatus | trafficstatus | showstates | globalstatus  [--json]
  listen                       rescan interfaces and reload secrets
  rereadsecrets                reload the secrets file(s)
  checkconfig                  check the config file (ipsec addconn --checkconfig)
  addconn [options]            Libreswan's addconn
  readwriteconf [options]      the resolved configuration, canonical form
  version                      show the version
  loadtest [options]           initiate many IKE SAs against a responder (--help)
  auto --add|--delete|--up|--down|--status NAME   Libreswan 4 spelling of the above
Common options (before the arguments): --rundir <dir>, --ctlsocket <file>,
  --config <file>
"""

STATUS_CMDS = ("status", "briefstatus", "trafficstatus", "showstates", "globalstatus",
               "connectionstatus")


def _common(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Strip --rundir/--ctlsocket/--config (with their value) from ``args``."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        key = a[2:].split("=", 1)[0] if a.startswith("--") else ""
        if key in ("rundir", "ctlsocket", "config"):
            if "=" in a:
                opts[key] = a.split("=", 1)[1]
            elif i + 1 < len(args):
                opts[key] = args[i + 1]
                i += 1
            else:
                raise ValueError(f"{a} needs a value")
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


def cmd_stop(opts: dict[str, str]) -> int:
    path = ctl_path(opts.get("rundir"), opts.get("ctlsocket"))
    if not _running(path):
        print("pluto is not running", file=sys.stderr)
        return 0
    rc = _whack(_whack_args(opts) + ["--shutdown"])
    pidfile = os.path.join(opts.get("rundir", "/run/pluto"), "pluto.pid")
    deadline = time.monotonic() + 15
    while os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    return rc


def cmd_add(opts: dict[str, str], names: list[str]) -> int:
    if not names:
        print("ipsec add: connection name required", file=sys.stderr)
        return RC_WHACK_PROBLEM
    path = ctl_path(opts.get("rundir"), opts.get("ctlsocket"))
    args: dict[str, object] = {"names": names}
    if "config" in opts:  # else pluto's own --config (or /etc/ipsec.conf)
        args["config"] = os.path.abspath(opts["config"])
    try:
        reply = call(path, "add", args,
                     on_output=lambda s: print(s, flush=True))
    except ControlError as e:
        print(f"ipsec add: {e}", file=sys.stderr)
        return e.rc
    if reply.error:
        print(reply.error)
    return reply.rc


def _config_tool(name: str, argv: list[str]) -> int:
    try:
        from pypluto.config import commands
    except ImportError:
        print(f"ipsec {name}: the configuration tools are not available", file=sys.stderr)
        return 1
    fn: Callable[[list[str]], int] = getattr(commands, f"{name}_main")
    return int(fn(argv) or 0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("--help", "-h", "help"):
        print(USAGE, end="")
        return 0 if args else 1
    cmd, rest_args = args[0], args[1:]
    if cmd in ("--version", "version"):
        print(f"Libreswan-compatible pypluto {__version__}")
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
        print(f"ipsec {cmd}: {e}", file=sys.stderr)
        return 1
    w = _whack_args(opts)
    if cmd == "checkconfig":
        return _config_tool("addconn", ["--config", opts.get("config", DEFAULT_CONFIG),
                                        "--checkconfig", *rest])
    if cmd == "start":
        return cmd_start(opts, rest)
    if cmd == "stop":
        return cmd_stop(opts)
    if cmd == "restart":
        cmd_stop(opts)
        return cmd_start(opts, rest)
    if cmd in STATUS_CMDS:
        return _whack(w + [f"--{cmd}", *rest])
    if cmd in ("listen", "rereadsecrets"):
        return _whack(w + [f"--{cmd}"])
    if cmd == "add":
        return cmd_add(opts, rest)
    if cmd in ("delete", "up", "down"):
        if len(rest) != 1:
            print(f"ipsec {cmd}: exactly one connection name required", file=sys.stderr)
            return RC_WHACK_PROBLEM
        action = {"delete": "--delete", "up": "--initiate", "down": "--down"}[cmd]
        return _whack(w + ["--name", rest[0], action])
    if cmd == "auto":  # Libreswan 4's "ipsec auto --up NAME" spelling
        mapping = {"--add": "add", "--delete": "delete", "--up": "up", "--down": "down",
                   "--status": "status", "--rereadsecrets": "rereadsecrets",
                   "--listen": "listen"}
        ops = [a for a in rest if a in mapping]
        names = [a for a in rest if a not in mapping]
        if len(ops) != 1:
            print("ipsec auto: exactly one of " + ", ".join(mapping) + " is required",
                  file=sys.stderr)
            return RC_WHACK_PROBLEM
        extra = [f"--{k}={v}" for k, v in opts.items()]
        return main([mapping[ops[0]], *extra, *names])
    print(f"ipsec: unknown command \"{cmd}\"; try 'ipsec --help'", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
