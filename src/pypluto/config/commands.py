"""``ipsec addconn`` and ``ipsec readwriteconf``: the config tools, as functions.

``addconn_main(argv)``:
  ``--config F`` (default /etc/ipsec.conf), ``--rootdir D`` (prefix for absolute
  include paths), ``--checkconfig`` (exit 0 when the file loads and every key is
  supported, else print ``F:LINE: message`` for each problem and exit 1), ``--listall``,
  ``--listadd``, ``--listroute`` (= ``--listondemand``), ``--liststart``,
  ``--listignore``, ``--liststack``, ``--autoall`` (print what the daemon does at
  start: ``add NAME`` / ``route NAME`` / ``up NAME``), ``--configsetup`` (the
  ``config setup`` keys as shell ``export`` lines), ``--verbose``.
  Exit 3 when the file cannot be read, as Libreswan.

``readwriteconf_main(argv)``: ``--config F [--rootdir D]``: every conn after
``%default`` and ``also=`` are resolved, in Libreswan's ``readwriteconf`` layout.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, TextIO

from pypluto.config.model import Connection
from pypluto.config.parser import ConfigFile, load_config

DEFAULT_CONFIG = "/etc/ipsec.conf"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ValueError(message)


def _load(path: str, rootdir: str | None, prog: str, err: TextIO) -> ConfigFile | None:
    try:
        return load_config(path, root_dir=rootdir)
    except OSError as exc:
        print(f"{prog}: cannot load config '{path}': {exc.strerror or exc}", file=err)
        return None


def autoall_actions(cfg: ConfigFile) -> list[tuple[str, str]]:
    """(action, conn name) for each loaded conn, in file order: what the daemon does at
    start.  ``add`` for auto=add, ``route`` for auto=ondemand/route, ``up`` for
    auto=start/up (each also implies add); auto=ignore conns are skipped."""
    out: list[tuple[str, str]] = []
    for name, conn in cfg.conns.items():
        if conn.auto == "add" or conn.auto == "keep":
            out.append(("add", name))
        elif conn.auto in ("ondemand", "route"):
            out.append(("route", name))
        elif conn.auto in ("start", "up"):
            out.append(("up", name))
    return out


def _print_diags(cfg: ConfigFile, err: TextIO, errors_only: bool = False) -> None:
    for d in cfg.diagnostics:
        if errors_only and d.severity != "error":
            continue
        print(str(d), file=err)


def addconn_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``ipsec addconn``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    ap = _Parser(prog="addconn", add_help=False)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--rootdir", default=None)
    ap.add_argument("--checkconfig", action="store_true")
    ap.add_argument("--listall", action="store_true")
    ap.add_argument("--listadd", action="store_true")
    ap.add_argument("--listroute", "--listondemand", action="store_true", dest="listroute")
    ap.add_argument("--liststart", action="store_true")
    ap.add_argument("--listignore", action="store_true")
    ap.add_argument("--liststack", action="store_true")
    ap.add_argument("--autoall", action="store_true")
    ap.add_argument("--configsetup", action="store_true")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--ctlsocket", default=None)
    ap.add_argument("--noexport", action="store_true")
    ap.add_argument("names", nargs="*")
    try:
        opts = ap.parse_args(argv)
    except ValueError as exc:
        print(f"addconn: {exc}", file=err)
        return 1
    cfg = _load(opts.config, opts.rootdir, "addconn", err)
    if cfg is None:
        return 3
    if opts.checkconfig:
        # a key or value that pypluto refuses as not supported fails the check too
        # (issue 12): Libreswan would load that conn, pypluto will not
        _print_diags(cfg, err)
        return 0 if cfg.ok and not cfg.unsupported else 1
    if not cfg.ok:
        _print_diags(cfg, err)
        return 1
    if opts.verbose:
        _print_diags(cfg, err)
    if opts.liststack:
        print(cfg.setup.protostack or "xfrm", file=out)
        return 0
    if opts.configsetup:
        for key, value in cfg.setup.raw.items():
            name = key.replace("-", "_")
            print(f"export {name}='{value}'" if not opts.noexport else f"{name}='{value}'",
                  file=out)
        return 0
    lists = {"listall": None, "listadd": ("add", "keep"), "listroute": ("ondemand", "route"),
             "liststart": ("start", "up"), "listignore": ("ignore",)}
    for flag, autos in lists.items():
        if getattr(opts, flag):
            if autos is None:  # every conn section, even one that fails to load (Libreswan)
                names = cfg.conn_names
            else:
                names = [n for n, c in cfg.conns.items() if c.auto in autos]
            print(" ".join(names), file=out)
            return 0
    if opts.autoall:
        for action, name in autoall_actions(cfg):
            print(f"{action} {name}", file=out)
        return 0
    status = 0
    for name in opts.names:
        if name in cfg.conns:
            print(f"add {name}", file=out)
        elif name in cfg.failed:
            for d in cfg.failed[name]:
                print(str(d), file=err)
            status = 1
        else:
            print(f"addconn: conn '{name}' not found in {opts.config}", file=err)
            status = 1
    return status


# --------------------------------------------------------------------------------------
# readwriteconf

_SIDE_ORDER = ("", "id", "nexthop", "subnet", "subnets", "sourceip", "protoport", "cert",
               "ckaid", "ca", "sendcert", "rsasigkey", "ecdsakey", "pubkey", "auth",
               "updown", "addresspool", "modecfgserver", "modecfgclient", "xauthserver",
               "xauthclient", "xauthusername", "ikeport", "vti", "interface-ip", "cat")
_QUOTED = {"id"}
_PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH", 58: "IPV6-ICMP",
                132: "SCTP"}


def _end_value(conn: Connection, side: str, sub: str) -> str | None:
    """The printed value of an end key: typed where Libreswan normalises it."""
    end = conn.left if side == "left" else conn.right
    raw = conn.raw.get(side + sub)
    if sub == "nexthop":
        return end.nexthop
    if sub == "subnet":
        if raw is None or not end.subnets:
            return None  # host-to-host (subnet = the host) or IKEv1 vhost:/vnet:
        return raw if any(c in raw for c in ", {") else str(end.subnets[0])
    if sub == "protoport":
        if raw is None:
            return None
        proto, port = end.protoport
        written = raw.partition("/")[2]
        port_s = "%any" if written.lower() == "%any" else str(port)
        return f"{_PROTO_NAMES.get(proto, str(proto))}/{port_s}"
    return raw


def _fmt(key: str, value: str, quote_ids: bool = False) -> str:
    if quote_ids or any(c.isspace() for c in value) or "#" in value:
        return f'{key}="{value}"'
    return f"{key}={value}"


def dump_conn(conn: Connection, also: list[str] | None = None) -> list[str]:
    """One conn in readwriteconf layout: side keys first, then the others, then the
    typed defaults Libreswan prints (auto, type, compress, pfs, phase2, ...)."""
    lines = [f"conn {conn.name}"]
    if also:
        lines.append("\t#also = " + " ".join(also))
    raw = conn.raw
    done: set[str] = set()
    for side in ("left", "right"):
        keys = [side + k for k in _SIDE_ORDER] + sorted(
            k for k in raw if k.startswith(side) and k[len(side):] not in _SIDE_ORDER)
        for key in keys:
            if key in done:
                continue
            done.add(key)
            sub = key[len(side):]
            value = _end_value(conn, side, sub)
            if value:
                lines.append("\t" + _fmt(key, value, quote_ids=sub in _QUOTED))
    first = [k for k in ("ike", "esp", "ah") if k in raw]
    for key in first + [k for k in raw if k not in first]:
        if key in done or raw[key] == "" or key.startswith(("left", "right")):
            continue
        if key in ("auto", "type"):
            continue
        lines.append("\t" + _fmt(key, raw[key]))
    lines.append(f"\tauto={conn.auto}")
    lines.append(f"\ttype={conn.type}")
    if conn.type in ("tunnel", "transport"):
        lines.append(f"\tcompress={'yes' if conn.compress else 'no'}")
        lines.append(f"\tpfs={'yes' if conn.pfs else 'no'}")
        lines.append(f"\tphase2={conn.phase2}")
        lines.append(f"\tkeyexchange={conn.keyexchange}")
        lines.append(f"\tppk={conn.ppk}")
        lines.append(f"\tesn={conn.esn}")
    return lines


def dump_config(cfg: ConfigFile) -> str:
    lines = ["config setup"]
    for key, value in cfg.setup.raw.items():
        if value != "":
            lines.append("\t" + _fmt(key, value, quote_ids=key == "plutodebug"))
    lines.append("")
    for name, conn in cfg.conns.items():
        lines.extend(dump_conn(conn, cfg.also_chain.get(name)))
    return "\n".join(lines) + "\n"


def readwriteconf_main(argv: list[str], out: TextIO | None = None,
                       err: TextIO | None = None) -> int:
    """``ipsec readwriteconf``; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    ap = _Parser(prog="readwriteconf", add_help=False)
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--rootdir", default=None)
    ap.add_argument("--verbose", "-v", action="store_true")
    try:
        opts = ap.parse_args(argv)
    except ValueError as exc:
        print(f"readwriteconf: {exc}", file=err)
        return 1
    cfg = _load(opts.config, opts.rootdir, "readwriteconf", err)
    if cfg is None:
        return 3
    if not cfg.ok:
        _print_diags(cfg, err)
        return 1
    _print_diags(cfg, err)
    out.write(dump_config(cfg))
    return 0
