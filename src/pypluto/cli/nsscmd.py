"""``ipsec initnss | checknss | import | listcerts | listcacerts | newhostkey |
showhostkey | certutil | pk12util | crlutil`` on the NSS database (``--nssdir``, default ``/var/lib/ipsec/nss``), as
Libreswan's ``ipsec`` script does them: through NSS's own tools (``libnss3-tools``).

``listcerts`` / ``listcacerts`` read the database directly (pypluto loads
certificates from it on use, so the database is what pluto will use); ``--json``
prints the same as a JSON list.  ``newhostkey`` makes a key-only entry (``certutil
-G``); ``showhostkey`` prints its public key as ``leftrsasigkey=0s...`` (RFC 3110) or
``leftpubkey=0s...`` (DER SubjectPublicKeyInfo), read from a certificate request NSS
signs with the key (``certutil -R -k CKAID``): NSS's tools cannot print a bare public key.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pypluto.config.expiry import CA_CERT_WARNING_INTERVAL, PUBKEY_WARNING_INTERVAL, check_expiry
from pypluto.config.nss import NSSDB, NSSError

DEFAULT_NSSDIR = "/var/lib/ipsec/nss"
COMMANDS = ("initnss", "checknss", "import", "listcerts", "listcacerts", "certutil",
            "pk12util", "crlutil", "newhostkey", "showhostkey")


def rfc3110(key: rsa.RSAPublicKey) -> bytes:
    """An RSA public key in RFC 3110 §2 form (``leftrsasigkey=0s...``)."""
    n = key.public_numbers()
    e = n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")
    head = bytes([len(e)]) if len(e) < 256 else b"\0" + len(e).to_bytes(2, "big")
    return head + e + n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")


def _keys(db: NSSDB) -> list[tuple[str, str]]:
    """(key type, CKAID) of every private key (``certutil -K``)."""
    text = db._run(_tool("certutil") or "certutil", "-K", "-d", db.spec).decode(
        "utf-8", "replace")
    return [(m.group(1), m.group(2)) for m in
            re.finditer(r"^<\s*\d+>\s+(\w+)\s+([0-9a-fA-F]{40})", text, re.MULTILINE)]


def _public_key(db: NSSDB, ckaid: str) -> object:
    """The public key of a key-only entry: from a CSR NSS signs with it (certutil -R)."""
    with tempfile.TemporaryDirectory(prefix="pypluto-nss-") as tmp:
        noise = os.path.join(tmp, "noise")
        with open(noise, "wb") as f:
            f.write(os.urandom(64))
        out = os.path.join(tmp, "req.pem")
        db._run(_tool("certutil") or "certutil", "-R", "-d", db.spec, "-k", ckaid, "-s",
                "CN=showhostkey", "-a", "-z", noise, "-o", out)
        with open(out, "rb") as f:
            data = f.read()
    return x509.load_pem_x509_csr(data[data.index(b"-----BEGIN"):]).public_key()


def _hostkey(cmd: str, db: NSSDB, rest: list[str]) -> int:
    if cmd == "newhostkey":
        kind, bits = "rsa", "3072"
        for i, a in enumerate(rest):
            if a == "--keytype" and i + 1 < len(rest):
                kind = rest[i + 1]
            elif a == "--bits" and i + 1 < len(rest):
                bits = rest[i + 1]
        if not db.exists() and main("initnss", ["--nssdir", db.directory]):
            return 1
        with tempfile.TemporaryDirectory(prefix="pypluto-nss-") as tmp:
            noise = os.path.join(tmp, "noise")
            with open(noise, "wb") as f:
                f.write(os.urandom(64))
            args = ["-k", "rsa", "-g", bits] if kind == "rsa" else \
                ["-k", "ec", "-q", {"256": "nistp256", "384": "nistp384"}.get(bits, "nistp256")]
            print(f"Generated {kind} key in the NSS database {db.directory}")
            db._run(_tool("certutil") or "certutil", "-G", "-d", db.spec, *args, "-z", noise)
        return 0
    keys = _keys(db)
    if "--list" in rest:
        for i, (kind, ck) in enumerate(keys, 1):
            pub = _public_key(db, ck)
            kid = base64.b64encode(rfc3110(pub))[:9].decode() if isinstance(
                pub, rsa.RSAPublicKey) else ""
            print(f"< {i}> {kind.upper()} keyid: {kid} ckaid: {ck}")
        return 0
    side = "left" if "--left" in rest else "right" if "--right" in rest else ""
    if not side:
        print("usage: ipsec showhostkey [--nssdir DIR] --list | --left|--right --ckaid CKAID",
              file=sys.stderr)
        return 1
    want = rest[rest.index("--ckaid") + 1].lower() if "--ckaid" in rest and \
        rest.index("--ckaid") + 1 < len(rest) else (keys[0][1] if len(keys) == 1 else "")
    if not any(ck == want for _k, ck in keys):
        print("ipsec showhostkey: no (or more than one) key; name it with --ckaid",
              file=sys.stderr)
        return 1
    pub = _public_key(db, want)
    if isinstance(pub, rsa.RSAPublicKey):
        blob = base64.b64encode(rfc3110(pub)).decode()
        print(f"\t# rsakey {blob[:9]}")
        print(f"\t{side}rsasigkey=0s{blob}")
    else:
        der = pub.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        print(f"\t# ecdsakey ckaid {want}")
        print(f"\t{side}pubkey=0s{base64.b64encode(der).decode()}")
    return 0


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
    if cmd in ("newhostkey", "showhostkey"):
        try:
            return _hostkey(cmd, db, rest)
        except (NSSError, ValueError) as e:
            print(f"ipsec {cmd}: {e}", file=sys.stderr)
            return 1
    if cmd in ("certutil", "pk12util", "crlutil"):
        tool = _tool(cmd)
        if tool is None:
            return 1
        return subprocess.run([tool, "-d", spec, *rest]).returncode
    try:
        entries = db.entries()
        rows = []
        for ent in entries:
            if (cmd == "listcacerts") != ent.is_ca or (cmd == "listcerts" and not ent.has_key):
                continue
            c = db.certificate(ent.nickname)
            rows.append({"nickname": ent.nickname, "trust": ent.trust,
                         "subject": c.subject.rfc4514_string(),
                         "issuer": c.issuer.rfc4514_string(),
                         "serial": f"{c.serial_number:x}",
                         "not_before": c.not_valid_before_utc.isoformat(),
                         "not_after": c.not_valid_after_utc.isoformat(),
                         "key": type(c.public_key()).__name__.replace("_", ""),
                         # Libreswan's windows: 14 days for ours, 30 for a CA (issue 14)
                         "expiry": check_expiry(c.not_valid_after_utc, time.time(),
                                                CA_CERT_WARNING_INTERVAL if ent.is_ca
                                                else PUBKEY_WARNING_INTERVAL)})
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
        if r["expiry"]:
            print(f"       {r['expiry']}")
    return 0
