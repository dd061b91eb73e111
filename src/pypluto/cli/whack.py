"""The `whack` command line: Libreswan's option names, output and exit codes.

whack sends one request per action to pluto's control socket (protocol in
docs/control-protocol.md) and prints what pluto answers.  Its exit status is
the return code of the last failing request (Libreswan's ``rc_type``: 0 OK,
21 unknown connection, 24 not listening, 33 whack-detected problem, ...).
``--json`` (beyond Libreswan) prints the status commands as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn

from pypluto import __version__
from pypluto.control.client import ControlError, call, ctl_path
from pypluto.control.protocol import RC_SUCCESS, RC_WHACK_PROBLEM

STATUS = ["status", "globalstatus", "showstates", "trafficstatus", "briefstatus",
          "connectionstatus"]
NAMED = ["delete", "route", "unroute", "initiate", "down", "rekey-ike", "rekey-child"]
GLOBAL = ["listen", "unlisten", "rereadsecrets", "listpsks"]

USAGE = """\
Usage: whack [--ctlsocket <file>] [--rundir <dir>] <command> [--json]
commands:
  --name <connection_name> --initiate [--asynchronous] | --down | --delete
                           | --route | --unroute | --rekey-ike | --rekey-child
  --status | --globalstatus | --showstates | --trafficstatus | --briefstatus
  --connectionstatus        (add --json for a JSON object; see docs/control-protocol.md)
  --listen | --unlisten | --rereadsecrets | --listpsks (names only, never keys)
  --debug <class> | --no-debug <class> | --debug help
  --shutdown
  --help | --version
exit status: 0 success, 21 unknown connection, 24 pluto not listening,
  25 cannot route, 33 whack problem (bad arguments, pluto not running),
  50 bad request, 51 no answer from peer, 56 negotiation failed
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def build_parser() -> _Parser:
    p = _Parser(prog="whack", add_help=False, allow_abbrev=False)
    a = p.add_argument
    a("--help", action="store_true")
    a("--version", action="store_true")
    a("--ctlsocket")
    a("--rundir")
    a("--name")
    a("--json", action="store_true")
    a("--asynchronous", action="store_true")
    a("--timeout", type=float, default=0.0)
    for c in STATUS + GLOBAL + ["shutdown"]:
        a(f"--{c}", action="store_true")
    a("--initiate", action="store_true")
    a("--down", "--terminate", dest="down", action="store_true")
    a("--delete", action="store_true")
    a("--route", action="store_true")
    a("--unroute", action="store_true")
    a("--rekey-ike", action="store_true")
    a("--rekey-child", "--rekey-ipsec", dest="rekey_child", action="store_true")
    a("--debug", action="append", default=[])
    a("--no-debug", action="append", default=[])
    return p


def _say(line: str) -> None:
    print(line, flush=True)


def _problem(msg: str) -> int:
    print(f"whack: {msg}", file=sys.stderr)
    return RC_WHACK_PROBLEM


def send(path: str, command: str, args: dict[str, Any], as_json: bool = False,
         timeout: float | None = None) -> int:
    """One request; prints pluto's output (or its JSON) and returns the rc."""
    try:
        reply = call(path, command, args, on_output=_say, timeout=timeout)
    except ControlError as e:
        print(f"whack: {e}", file=sys.stderr)
        return e.rc
    if as_json and reply.data is not None:
        print(json.dumps(reply.data, indent=2, sort_keys=True))
    if reply.error:
        print(reply.error, flush=True)
    return reply.rc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        ns, rest = build_parser().parse_known_args(args)
        if rest:
            raise ValueError(f"unrecognized option '{rest[0]}'" if rest[0].startswith("-")
                             else f"unexpected argument '{rest[0]}'")
    except ValueError as e:
        return _problem(f"{e}; try --help")
    if ns.help:
        print(USAGE, end="")
        return RC_SUCCESS
    if ns.version:
        print(f"whack (pypluto) {__version__}")
        return RC_SUCCESS
    path = ctl_path(ns.rundir, ns.ctlsocket)

    named = [c for c in NAMED if getattr(ns, c.replace("-", "_"))]
    status = [c for c in STATUS if getattr(ns, c)]
    glob = [c for c in GLOBAL if getattr(ns, c)]
    debug = list(ns.debug) + [f"no-{d}" for d in ns.no_debug]
    if not (named or status or glob or debug or ns.shutdown):
        return _problem("no action specified; try --help")
    if named and not ns.name:
        return _problem(f"--{named[0]} requires --name <connection_name>")
    if ns.json and not status:
        return _problem("--json only applies to the status commands")
    if ns.json and len(status) > 1:
        return _problem("--json takes exactly one status command")
    if "initiate" in named and "down" in named:
        return _problem("--initiate and --down conflict")

    rc = RC_SUCCESS

    def note(r: int) -> None:
        nonlocal rc
        if r != RC_SUCCESS:
            rc = r

    if debug:
        note(send(path, "debug", {"specs": debug}))
    for c in glob:
        note(send(path, c, {}))
    order = ["delete", "unroute", "route", "down", "initiate", "rekey-ike", "rekey-child"]
    for c in order:
        if c in named:
            a: dict[str, Any] = {"name": ns.name}
            if c == "initiate":
                a["async"] = ns.asynchronous
                if ns.timeout:
                    a["timeout"] = ns.timeout
            note(send(path, c, a))
    for c in status:
        note(send(path, c, {"json": ns.json}, as_json=ns.json))
    if ns.shutdown:
        note(send(path, "shutdown", {}))
    return rc


if __name__ == "__main__":
    sys.exit(main())
