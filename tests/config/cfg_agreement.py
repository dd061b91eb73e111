"""Compare our resolved connections with Libreswan 4.10's ``readwriteconf`` output.

Used by ``test_cfg_agreement.py`` and ``test_cfg_differences.py``.  For each conn that Libreswan printed, the fields
left/right, left/right subnet(s), left/right id, authby (as written), ike, esp,
auto and type must agree with what our parser resolved.
"""

from __future__ import annotations

import ipaddress
import os
import re

from pypluto.config.parser import ConfigFile, load_config

FIELDS = ("left", "right", "leftsubnet", "rightsubnet", "leftsubnets", "rightsubnets",
          "leftid", "rightid", "authby", "ike", "esp", "auto", "type")


def read_rwc(path: str) -> tuple[int, dict[str, dict[str, list[str]]], str]:
    """(exit status, conns -> key -> values in order, stderr) of a .readwriteconf.out."""
    conns: dict[str, dict[str, list[str]]] = {}
    status = -1
    cur: dict[str, list[str]] | None = None
    section = "head"
    stderr: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh.read().splitlines():
            if line.startswith("# exit status:"):
                status = int(line.split(":")[1])
                continue
            if line.startswith("# ---- stdout"):
                section = "out"
                continue
            if line.startswith("# ---- stderr"):
                section = "err"
                continue
            if section == "err":
                stderr.append(line)
                continue
            if section != "out":
                continue
            if line.startswith("conn "):
                cur = {}
                conns[line[5:].strip()] = cur  # a later duplicate replaces, as in pluto
                continue
            if line.startswith("config "):
                cur = None
                continue
            m = re.match(r"^\t([A-Za-z0-9_\-]+)=(.*)$", line)
            if m and cur is not None:
                cur.setdefault(m.group(1), []).append(m.group(2))
    return status, conns, "\n".join(stderr)


def _unq(v: str) -> str:
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] == '"' else v


def _host_eq(ours: str | None, theirs: str) -> bool:
    theirs = _unq(theirs)
    if ours is None:
        return theirs == ""
    try:
        return ipaddress.ip_address(ours) == ipaddress.ip_address(theirs)
    except ValueError:
        return ours.lower() == theirs.lower()


def _nets(text: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    items = [x for x in re.split(r"[\s,{}]+", _unq(text)) if x]
    out = []
    for x in items:
        if x.lower() in ("%any", "%any4"):
            x = "0.0.0.0/0"
        elif x.lower() == "%any6":
            x = "::/0"
        out.append(ipaddress.ip_network(x, strict=False))
    return out


def _last(vals: dict[str, list[str]], key: str) -> str | None:
    got = [v for v in vals.get(key, []) if v != ""]
    return got[-1] if got else None


def compare_conn(cfg: ConfigFile, name: str, vals: dict[str, list[str]]) -> list[str]:
    """Differences between our conn ``name`` and Libreswan's printed values."""
    diffs: list[str] = []
    conn = cfg.conns[name]
    for side, end in (("left", conn.left), ("right", conn.right)):
        theirs = _last(vals, side)
        if theirs is None:
            if end.host is not None:
                diffs.append(f"{name}: {side}={end.host} but Libreswan has none")
        elif not _host_eq(end.host, theirs):
            diffs.append(f"{name}: {side}={end.host} vs {theirs}")
        want: list = []
        for key in (side + "subnet", side + "subnets"):
            v = _last(vals, key)
            if v is not None:
                for n in _nets(v):
                    if n not in want:
                        want.append(n)
        if want != end.subnets:
            diffs.append(f"{name}: {side}subnet(s) {end.subnets} vs {want}")
        tid = _last(vals, side + "id")
        ours = None if end.id is None else str(end.id)
        if (tid is None) != (ours is None) or (tid is not None and _unq(tid) != ours):
            diffs.append(f"{name}: {side}id={ours} vs {tid}")
    written = [v for v in vals.get("authby", []) if v and v != "none" and v != v.upper()]
    ours_a = conn.raw.get("authby") or None
    if (written[0] if written else None) != (ours_a.lower() if ours_a else None):
        diffs.append(f"{name}: authby={ours_a} vs {written}")
    for key in ("ike", "esp"):
        theirs_p = _last(vals, key)
        ours_p = conn.raw.get(key) or None
        if key == "esp" and ours_p is None:
            ours_p = conn.raw.get("ah") or None  # 4.10 prints ah= as esp= (one field)
        if (theirs_p or None) != ours_p:
            diffs.append(f"{name}: {key}={ours_p} vs {theirs_p}")
    auto = _last(vals, "auto") or "ignore"
    auto = {"route": "ondemand", "up": "start"}.get(auto, auto)
    if auto != conn.auto:
        diffs.append(f"{name}: auto={conn.auto} vs {auto}")
    typ = _last(vals, "type") or "tunnel"
    typ = {"pass": "passthrough"}.get(typ, typ)
    if typ != conn.type:
        diffs.append(f"{name}: type={conn.type} vs {typ}")
    return diffs


_CACHE: dict[tuple[str, str, bool], ConfigFile] = {}


def load_cached(base: str, rel: str, enforce: bool = False) -> ConfigFile:
    """load_config of ``rel`` as Libreswan's harness ran it (cwd = base), memoised.

    ``enforce=False`` (the default here) compares the parse: conns with keys that
    pypluto does not support are loaded; ``enforce=True`` is what pluto and
    ``addconn`` do (those conns are refused as not supported)."""
    key = (base, rel, enforce)
    if key not in _CACHE:
        cwd = os.getcwd()
        os.chdir(base)
        try:
            _CACHE[key] = load_config(rel, root_dir=os.path.join(base, "rootdir"),
                                      enforce_support=enforce)
        finally:
            os.chdir(cwd)
    return _CACHE[key]


def parses(cfg: ConfigFile) -> bool:
    """The file loads as far as Libreswan's parser is concerned: no file error other
    than a ``config setup`` key that pypluto refuses as not supported."""
    return not [d for d in cfg.file_errors if not d.unsupported]


def refused_as_unsupported(cfg: ConfigFile, name: str) -> bool:
    """The conn is not loaded only because pypluto does not support one of its keys."""
    return name in cfg.failed and any(d.unsupported for d in cfg.failed[name])


def compare_file(base: str, rel: str, stats: dict[str, int] | None = None) -> list[str]:
    """Every difference for one config file (empty list = full agreement).

    Conns that Libreswan loads and pypluto refuses as not supported (issue 12) are
    not differences; they are counted in ``stats["unsupported"]``.  A conn with
    ``leftsubnets=``/``rightsubnets=`` is loaded as its ``NAME/LxR`` pairs (counted in
    ``stats["expanded"]``)."""
    stats = stats if stats is not None else {}
    cfg = load_cached(base, rel)
    _status, conns, stderr = read_rwc(os.path.join(base, rel + ".readwriteconf.out"))
    diffs: list[str] = []
    addconn_err = ""
    try:
        with open(os.path.join(base, rel + ".addconn.out"), encoding="utf-8",
                  errors="replace") as fh:
            addconn_err = fh.read()
    except OSError:
        pass
    for name, vals in conns.items():
        if name in cfg.conns:
            diffs.extend(compare_conn(cfg, name, vals))
        elif any(c.connalias == name for c in cfg.conns.values()):
            stats["expanded"] = stats.get("expanded", 0) + 1
        elif refused_as_unsupported(cfg, name):
            stats["unsupported"] = stats.get("unsupported", 0) + 1
        elif name in cfg.failed:
            if f"while loading '{name}'" not in stderr + addconn_err:
                diffs.append(f"{name}: we reject it ({cfg.failed[name][0]}), Libreswan loads it")
        else:
            diffs.append(f"{name}: missing from our result")
    for name, conn in cfg.conns.items():
        if name not in conns and conn.connalias not in conns:
            diffs.append(f"{name}: we have it, Libreswan does not")
    return diffs
