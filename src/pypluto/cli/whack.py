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
import math
import sys
from typing import Any, NoReturn

from pypluto import VERSION_BANNER
from pypluto.control.client import ControlError, call, ctl_path
from pypluto.control.format import NAMED_STATUS
from pypluto.control.protocol import RC_SUCCESS, RC_WHACK_PROBLEM
from pypluto.textsafe import guard

STATUS = ["status", "globalstatus", "showstates", "trafficstatus", "briefstatus",
          "connectionstatus", "shuntstatus"]
NAMED = ["delete", "route", "unroute", "initiate", "down", "rekey-ike", "rekey-child"]
GLOBAL = ["listen", "unlisten", "rereadsecrets", "listpsks", "listpubkeys", "checkpubkeys",
          "reopenlogs", "fetchcrls", "listcrls", "purgeocsp"]

USAGE = """\
Usage: whack [--ctlsocket <file>] [--rundir <dir>] <command> [--json]
commands:
  --name <connection_name> --initiate [--asynchronous] | --down | --delete
                           | --route | --unroute | --rekey-ike | --rekey-child
  --status | --globalstatus | --showstates | --trafficstatus | --briefstatus
  --connectionstatus | --shuntstatus
                           (add --json for a JSON object; see docs/control-protocol.md)
  --name <connection_name> --trafficstatus | --connectionstatus | --showstates
                           only that connection (and its SAs)
  --listen | --unlisten | --rereadsecrets | --listpsks (names only, never keys)
  --listpubkeys [--json]   the public keys the conns use (raw keys, our certificates)
  --checkpubkeys [--json]  only those that expire within 14 days or have expired
  --fetchcrls | --listcrls [--json] | --purgeocsp   (CRLs fetched, OCSP cache)
  --redirect-to <gateway> --name <connection_name> | --peer-ip <address>
                           (RFC 5685: send established clients to another gateway)
  --debug <class> | --no-debug <class> | --debug help
  --shutdown
  --help | --version
Libreswan's spellings --ctlbase, --terminate, --ondemand, --statestatus, --rereadall and
--rereadcerts are accepted; any other Libreswan option pypluto does not implement, an
option given twice or an option that does not apply to the command is refused (33).
exit status (Libreswan's whack rc_type):
   0 success
  21 unknown connection name
  22 cannot orient the connection: neither end is a local address
  24 pluto is not listening (needs --listen before --initiate)
  25 cannot route (no peer address, or the trap policies could not go in)
  29 cannot initiate: the peer's IP address is unknown (right=%any)
  30 cannot initiate a shunt-only connection (type=passthrough|drop|reject)
  33 whack-detected problem (bad arguments, pluto not running)
  50 pluto could not understand the request
  51 no answer from the peer (retransmits exhausted)
  52 internal error in pluto
  56 negotiation failed (fatal error)
 141 stdout closed by its reader (as a C tool killed by SIGPIPE)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


# Libreswan 5.2's other spellings of our options (whack.c): the same action
ALIAS_OPTS = {"showstates": ("--statestatus",),
              # pluto's --rereadsecrets also drops its cached certificates and CRLs
              "rereadsecrets": ("--rereadall", "--rereadcerts")}

STATUS_HELP = {
    "status": "the full status: interfaces, connections, SAs (Libreswan's layout)",
    "globalstatus": "global counters as key=value lines",
    "showstates": "one line per IKE and Child SA",
    "trafficstatus": "bytes in/out of each established Child SA",
    "briefstatus": "the totals: IKE and IPsec SAs, DDoS cookies (JSON: connections too)",
    "connectionstatus": "the connection list only",
    "shuntstatus": "the bare shunts (on-demand negotiation and failure shunts)",
    "listen": "rescan the interfaces, reload the secrets, load conns that now orient",
    "unlisten": "stop listening for IKE (existing SAs stay)",
    "rereadsecrets": "reload the secrets file(s); cached certificates and CRLs are read "
                     "again on their next use",
    "listpsks": "which IDs have a pre-shared key (never the key itself)",
    "listpubkeys": "the public keys the conns use (raw keys, our certificates); --json",
    "checkpubkeys": "those of them that expire within 14 days or have expired; --json",
    "reopenlogs": "reopen the --logfile by name (logrotate; SIGHUP does the same)",
    "fetchcrls": "fetch the CRLs of every known distribution point now",
    "listcrls": "the CRLs: NSS db, <ipsecdir>/crls, fetched (with --json: one object)",
    "purgeocsp": "empty the OCSP cache",
    "shutdown": "delete every SA (telling the peers) and stop pluto",
}


class _Once(argparse.Action):
    """An option with a value given twice: refused (Libreswan's "duplicated flag"),
    never the last one silently winning."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if getattr(namespace, self.dest) not in (None, self.default):
            parser.error(f"duplicated option {option_string}")
        setattr(namespace, self.dest, values)


# Libreswan 5.2 whack options (programs/whack/whack.c) that pypluto does not implement:
# refused with this note instead of the generic "unrecognized option"
LIBRESWAN_ONLY = frozenset({
    "label", "remote-host", "connalias", "keyid", "addkey", "pubkeyrsa", "deleteid",
    "deletestate", "deleteuser", "crash", "ike-socket-bufsize", "ike-socket-errqueue-toggle",
    "global-redirect", "global-redirect-to", "ddos-busy", "ddos-unlimited", "ddos-auto",
    "ddns", "rereadcrls", "clearstats", "addresspoolstatus", "briefconnectionstatus",
    "fipsstatus", "processstatus", "seccomp-crashtest", "leave-state", "username",
    "xauthuser", "xauthname", "xauthpass", "oppohere", "oppothere", "oppoproto", "opposport",
    "oppodport", "delete-ike", "delete-child", "down-ike", "down-child", "suspend",
    "session-resumption", "utc", "listcerts", "listcacerts", "listevents", "listall",
    "debug-none", "debug-all", "impair", "no-impair", "magic",
    # the connection description options: pypluto adds conns with 'ipsec add NAME'
    "host", "id", "cert", "ckaid", "ca", "to", "subnet", "client", "authby", "ikev2",
})


def build_parser() -> _Parser:
    p = _Parser(prog="whack", add_help=False, allow_abbrev=False)
    a = p.add_argument
    a("--help", action="store_true", help="this text, with the exit status list")
    a("--version", action="store_true", help="the version")
    a("--ctlsocket", action=_Once, metavar="file",
      help="pluto's control socket (default RUNDIR/pluto.ctl)")
    a("--rundir", "--ctlbase", dest="rundir", action=_Once, metavar="dir",
      help="pluto's run directory (default /run/pluto)")
    a("--name", action=_Once, metavar="connection_name",
      help="the connection the action applies to (also filters --trafficstatus, "
           "--connectionstatus and --showstates)")
    a("--json", action="store_true",
      help="print a status command's answer as one JSON object (docs/control-protocol.md)")
    a("--asynchronous", action="store_true",
      help="with --initiate: return once the exchange started, without waiting")
    a("--timeout", type=float, action=_Once, metavar="seconds",
      help="with --initiate: give up waiting after this long (default: retransmit-timeout + 5)")
    for c in STATUS + GLOBAL + ["shutdown"]:
        a(f"--{c}", *ALIAS_OPTS.get(c, ()), action="store_true", help=STATUS_HELP[c])
    a("--initiate", action="store_true",
      help="bring the connection up and wait for the Child SA (or the failure)")
    a("--down", "--terminate", dest="down", action="store_true",
      help="delete the connection's SAs, keep the connection")
    a("--delete", action="store_true", help="delete the connection and its SAs")
    a("--route", "--ondemand", dest="route", action="store_true", help="install the connection's trap policies (auto=route): the first packet starts it")
    a("--unroute", action="store_true", help="undo --route")
    a("--rekey-ike", action="store_true", help="rekey the connection's IKE SA now")
    a("--rekey-child", "--rekey-ipsec", dest="rekey_child", action="store_true",
      help="rekey the connection's Child SA now")
    a("--redirect-to", action=_Once, metavar="gateway",
      help="RFC 5685: redirect the established clients of --name or --peer-ip there")
    a("--peer-ip", action=_Once, metavar="address", help="the client to redirect (with --redirect-to)")
    a("--debug", action="append", default=[], metavar="class",
      help='enable a debug class ("--debug help" lists them)')
    a("--no-debug", action="append", default=[], metavar="class",
      help="disable a debug class")
    return p


def _say(line: str) -> None:
    print(line, flush=True)


def _problem(msg: str) -> int:
    # msg may echo an argument (a stray one, a bad value): one visible line, escaped
    print(f"whack: {guard(msg)}", file=sys.stderr)
    return RC_WHACK_PROBLEM


def send(path: str, command: str, args: dict[str, Any], as_json: bool = False,
         timeout: float | None = None) -> int:
    """One request; prints pluto's output (or its JSON) and returns the rc."""
    try:
        reply = call(path, command, args, on_output=_say, timeout=timeout)
    except ControlError as e:
        print(f"whack: {guard(str(e))}", file=sys.stderr)  # it may echo --ctlsocket's path
        return e.rc
    if as_json and reply.data is not None:
        print(json.dumps(reply.data, indent=2, sort_keys=True))
    if reply.error:
        print(reply.error, flush=True)
    return reply.rc


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        parser = build_parser()
        ns, rest = parser.parse_known_args(args)
        if rest:
            opt = rest[0][2:].split("=", 1)[0] if rest[0].startswith("--") else ""
            if opt in LIBRESWAN_ONLY:
                raise ValueError(f"--{opt} (a Libreswan whack option) is not supported by "
                                 "pypluto")
            # Libreswan's getopt_long() takes "--trafficstat"; we say what it abbreviates
            full = sorted(o for o in parser._option_string_actions
                          if opt and o.startswith(f"--{opt}"))
            hint = f" (options are not abbreviated: {' or '.join(full)}?)" if full else ""
            raise ValueError(f"unrecognized option '{rest[0]}'{hint}" if rest[0].startswith("-")
                             else f"unexpected argument '{rest[0]}'")
    except ValueError as e:
        return _problem(f"{e}; try --help")
    if ns.help:
        print(USAGE, end="")
        return RC_SUCCESS
    if ns.version:
        print(VERSION_BANNER)  # Libreswan's whack prints the same line as ipsec
        return RC_SUCCESS
    for opt, value in (("--rundir", ns.rundir), ("--ctlsocket", ns.ctlsocket)):
        if value == "":  # ctl_path() would quietly use the default instead
            return _problem(f"{opt} needs a value, not an empty string")
    path = ctl_path(ns.rundir, ns.ctlsocket)

    named = [c for c in NAMED if getattr(ns, c.replace("-", "_"))]
    status = [c for c in STATUS if getattr(ns, c)]
    glob = [c for c in GLOBAL if getattr(ns, c)]
    debug = list(ns.debug) + [f"no-{d}" for d in ns.no_debug]
    if ns.name == "":  # not "requires --name" or pluto's "does not take --name"
        return _problem("--name needs a connection name, not an empty string")
    if ns.redirect_to is not None:
        if not (ns.name or ns.peer_ip):
            return _problem("--redirect-to requires --name or --peer-ip")
        if named or status or glob or debug or ns.shutdown or ns.json or ns.asynchronous \
                or ns.timeout is not None:
            return _problem("--redirect-to cannot be combined with other commands")
        return send(path, "redirect", {"to": ns.redirect_to, "name": ns.name,
                                       "peer": ns.peer_ip})
    if ns.peer_ip is not None:
        return _problem("--peer-ip only applies to --redirect-to")
    if not (named or status or glob or debug or ns.shutdown):
        return _problem("no action specified; try --help")
    if named and not ns.name:
        return _problem(f"--{named[0]} requires --name <connection_name>")
    if ns.name is not None and not (named or debug or set(status) & NAMED_STATUS):
        return _problem("no reason for --name: it applies to the connection commands, "
                        "--debug, --redirect-to, --trafficstatus, --connectionstatus and "
                        "--showstates")
    given_timeout = ns.timeout is not None  # "--timeout 0" too: never silently dropped
    if ns.timeout is None:
        ns.timeout = 0.0
    if (ns.asynchronous or given_timeout) and "initiate" not in named:
        return _problem(f"--{'asynchronous' if ns.asynchronous else 'timeout'} only "
                        "applies to --initiate")
    if ns.asynchronous and given_timeout:
        return _problem("--timeout is a limit on waiting: it conflicts with --asynchronous")
    if not math.isfinite(ns.timeout) or ns.timeout < 0:
        return _problem(f"--timeout must be a number of seconds >= 0, not {ns.timeout:g}")
    if "route" in named and "unroute" in named:
        return _problem("--route and --unroute conflict")
    json_globals = [c for c in glob if c in ("listcrls", "listpubkeys", "checkpubkeys")]
    if ns.json and not status and not json_globals:
        return _problem("--json only applies to the status commands, --listcrls and "
                        "--listpubkeys")
    if ns.json and len(status) + len(json_globals) > 1:
        return _problem("--json takes exactly one status command")
    if "initiate" in named and "down" in named:
        return _problem("--initiate and --down conflict")

    rc = RC_SUCCESS

    def note(r: int) -> None:
        nonlocal rc
        if r != RC_SUCCESS:
            rc = r

    if debug:
        note(send(path, "debug", {"specs": debug, **({"name": ns.name} if ns.name else {})}))
    for c in glob:
        if c in ("listpubkeys", "checkpubkeys"):
            note(send(path, "listpubkeys", {"json": ns.json, "expiring": c == "checkpubkeys"},
                      as_json=ns.json))
        elif c == "listcrls":
            note(send(path, c, {"json": ns.json}, as_json=ns.json))
        else:
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
        sa: dict[str, Any] = {"json": ns.json}
        if ns.name is not None and c in NAMED_STATUS:  # that conn only (Libreswan 5.2)
            sa["name"] = ns.name
        note(send(path, c, sa, as_json=ns.json))
    if ns.shutdown:
        note(send(path, "shutdown", {}))
    return rc


if __name__ == "__main__":
    from pypluto.cli.entry import whack

    whack()
