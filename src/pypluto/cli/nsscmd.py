"""``ipsec initnss | checknss | import | listcerts | listcacerts | newhostkey |
showhostkey | certutil | pk12util | crlutil`` on the NSS database (``--nssdir``, default ``/var/lib/ipsec/nss``), as
Libreswan's ``ipsec`` script does them: through NSS's own tools (``libnss3-tools``).

``listcerts`` / ``listcacerts`` read the database directly (pypluto loads
certificates from it on use, so the database is what pluto will use); ``--json``
prints the same as a JSON list.  ``newhostkey`` makes a key-only entry (``certutil
-G``); ``showhostkey`` prints its public key as ``leftrsasigkey=0s...`` (RFC 3110) or
``leftpubkey=0s...`` (DER SubjectPublicKeyInfo, also with ``--pubkey``), read through NSS's
soft token (``config.pkcs11``); ``--ckaid`` takes a prefix.  A database with a password
takes ``--nsspw PW`` (or ``--password``), else the ``nsspassword`` file of
``$IPSEC_CONFDDIR`` (default /etc/ipsec.d), as Libreswan's tools.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pypluto.config.expiry import CA_CERT_WARNING_INTERVAL, PUBKEY_WARNING_INTERVAL, check_expiry
from pypluto.config.hostkeys import HostKeyError, HostKeys, nss_password
from pypluto.config.nss import NSSDB, NSSError
from pypluto.crypto.rawkey import ecdsa_point

DEFAULT_NSSDIR = "/var/lib/ipsec/nss"
COMMANDS = ("initnss", "checknss", "import", "listcerts", "listcacerts", "certutil",
            "pk12util", "crlutil", "newhostkey", "showhostkey")


def rfc3110(key: rsa.RSAPublicKey) -> bytes:
    """An RSA public key in RFC 3110 §2 form (``leftrsasigkey=0s...``)."""
    n = key.public_numbers()
    e = n.e.to_bytes((n.e.bit_length() + 7) // 8, "big")
    head = bytes([len(e)]) if len(e) < 256 else b"\0" + len(e).to_bytes(2, "big")
    return head + e + n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")


def _password(rest: list[str]) -> tuple[str | None, list[str]]:
    """``--nsspw PW`` / ``--password PW`` (Libreswan's tools), else the ``nsspassword``
    file of ``$IPSEC_CONFDDIR`` (default /etc/ipsec.d) as pluto reads it."""
    out, pw = [], None
    i = 0
    while i < len(rest):
        if rest[i] in ("--nsspw", "--password") and i + 1 < len(rest):
            pw = rest[i + 1]
            i += 2
            continue
        out.append(rest[i])
        i += 1
    if pw is None:
        pw, _line = nss_password(os.environ.get("IPSEC_CONFDDIR", "/etc/ipsec.d"))
    return pw, out


def _hostkey(cmd: str, db: NSSDB, rest: list[str]) -> int:
    """``newhostkey`` (``certutil -G``) and ``showhostkey`` (the key's public half read
    through NSS's soft token, ``config.hostkeys``), in Libreswan's output format."""
    password, rest = _password(rest)
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
            pwargs: list[str] = []
            if password:
                pwfile = os.path.join(tmp, "pw")
                fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT, 0o600)
                os.write(fd, password.encode() + b"\n")
                os.close(fd)
                pwargs = ["-f", pwfile]
            args = ["-k", "rsa", "-g", bits] if kind == "rsa" else \
                ["-k", "ec", "-q", {"256": "nistp256", "384": "nistp384"}.get(bits, "nistp256")]
            print(f"Generated {kind} key in the NSS database {db.directory}")
            db._run(_tool("certutil") or "certutil", "-G", "-d", db.spec, *args, "-z", noise,
                    *pwargs)
        return 0
    try:
        keys = HostKeys(db.directory, password).public_keys()
    except HostKeyError as e:
        print(f"ipsec showhostkey: {e}", file=sys.stderr)
        return 1
    if "--list" in rest:
        for i, k in enumerate(keys, 1):
            kid = k.keyid or "<missing-pubkey>"
            print(f"<{i:2d}> {k.kind.upper() if k.kind == 'rsa' else 'ECDSA'} keyid: {kid} "
                  f"ckaid: {k.ckaid}")
        return 0
    side = "left" if "--left" in rest else "right" if "--right" in rest else ""
    if not side:
        print("usage: ipsec showhostkey [--nssdir DIR] [--nsspw PW] --list | "
              "--left|--right [--pubkey] [--ckaid CKAID]", file=sys.stderr)
        return 1
    want = rest[rest.index("--ckaid") + 1].lower() if "--ckaid" in rest and \
        rest.index("--ckaid") + 1 < len(rest) else ""
    match = [k for k in keys if k.ckaid.startswith(want)]  # a prefix, as Libreswan
    if len(match) != 1 or match[0].public is None:
        print("ipsec showhostkey: " + ("no key" if not match else "more than one key" if
              len(match) > 1 else "no public key") + (f" with CKAID {want}" if want else
              "; name it with --ckaid"), file=sys.stderr)
        return 1
    pub = match[0].public
    if isinstance(pub, rsa.RSAPublicKey) and "--pubkey" not in rest:
        blob = base64.b64encode(rfc3110(pub)).decode()
        print(f"\t# rsakey {blob[:9]}")
        print(f"\t{side}rsasigkey=0s{blob}")
    elif isinstance(pub, ec.EllipticCurvePublicKey) and "--pubkey" not in rest:
        # as Libreswan's showhostkey: the IPSECKEY form, the raw point (RFC 8005)
        print(f"\t# {side} keyid: {match[0].keyid}")
        print(f"\t{side}ecdsakey=0s{base64.b64encode(ecdsa_point(pub)).decode()}")
    else:
        der = pub.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)
        print(f"\t# {side} keyid: {match[0].keyid}")
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
