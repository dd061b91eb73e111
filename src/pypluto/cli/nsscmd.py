"""``ipsec initnss | checknss | import | listcerts | listcacerts | certutil | pk12util |
crlutil`` on the NSS database (``--nssdir``, default ``/var/lib/ipsec/nss``), as
Libreswan's ``ipsec`` script does them: through NSS's own tools (``libnss3-tools``).

``listcerts`` / ``listcacerts`` read the database directly (pypluto loads
certificates from it on use, so the database is what pluto will use); ``--json``
prints the same as a JSON list.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from pypluto.config.nss import NSSDB, NSSError

DEFAULT_NSSDIR = "/var/lib/ipsec/nss"
COMMANDS = ("initnss", "checknss", "import", "listcerts", "listcacerts", "certutil",
            "pk12util", "crlutil")


def _split(args: list[str]) -> tuple[str, bool, list[str]]:
    nssdir, js, rest = os.environ.get("IPSEC_NSSDIR", DEFAULT_NSSDIR), False, []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--nssdir" and i + 1 < len(args):
            nssdir = args[i + 1]
            i += 1
        elif a.startswith("--nssdir="):
            nssdir = a.split("=", 1)[1]
        elif a == "--json":
            js = True
        else:
            rest.append(a)
        i += 1
    return nssdir, js, rest


def _tool(name: str) -> str | None:
    path = shutil.which(name)
    if path is None:
        print(f"ipsec: {name} not found (install libnss3-tools)", file=sys.stderr)
    return path


def main(cmd: str, args: list[str]) -> int:
    nssdir, js, rest = _split(args)
    db = NSSDB(nssdir)
    spec = db.spec
    if cmd == "initnss":
        if db.exists():
            print(f"NSS database already initialized - aborted\n(in {nssdir})",
                  file=sys.stderr)
            return 42
        tool = _tool("certutil")
        if tool is None:
            return 1
        os.makedirs(nssdir, mode=0o700, exist_ok=True)
        print(f"Initializing NSS database in {nssdir}")
        return subprocess.run([tool, "-N", "-d", spec, "--empty-password"]).returncode
    if cmd == "checknss":
        if not db.exists():
            return main("initnss", args)
        return 0
    if cmd == "import":
        if len(rest) != 1:
            print("usage: ipsec import [--nssdir DIR] FILE.p12", file=sys.stderr)
            return 1
        tool = _tool("pk12util")
        if tool is None:
            return 1
        if not db.exists() and main("initnss", ["--nssdir", nssdir]):
            return 1
        return subprocess.run([tool, "-i", rest[0], "-d", spec]).returncode
    if cmd in ("certutil", "pk12util", "crlutil"):
        tool = _tool(cmd)
        if tool is None:
            return 1
        return subprocess.run([tool, "-d", spec, *rest]).returncode
    try:
        entries = db.entries()
        rows = []
        for e in entries:
            if (cmd == "listcacerts") != e.is_ca or (cmd == "listcerts" and not e.has_key):
                continue
            c = db.certificate(e.nickname)
            rows.append({"nickname": e.nickname, "trust": e.trust,
                         "subject": c.subject.rfc4514_string(),
                         "issuer": c.issuer.rfc4514_string(),
                         "serial": f"{c.serial_number:x}",
                         "not_before": c.not_valid_before_utc.isoformat(),
                         "not_after": c.not_valid_after_utc.isoformat(),
                         "key": type(c.public_key()).__name__.replace("_", "")})
    except (NSSError, ValueError) as e:
        print(f"ipsec {cmd}: {e}", file=sys.stderr)
        return 1
    if js:
        print(json.dumps(rows, indent=1))
        return 0
    title = "List of X.509 End Certificates:" if cmd == "listcerts" else \
        "List of X.509 CA Certificates:"
    print(title)
    print()
    for r in rows:
        print(f"{r['nickname']} [{r['trust']}]")
        print(f"       subject: '{r['subject']}'")
        print(f"       issuer:  '{r['issuer']}'")
        print(f"       serial:  {r['serial']}")
        print(f"       validity: not before {r['not_before']} not after {r['not_after']}")
    return 0
