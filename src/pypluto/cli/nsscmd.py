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
        opts = _options(cmd, rest, {"--keytype", "--bits", "--curve"}, set())
        if isinstance(opts, int):
            return opts
        kind = opts.get("--keytype", "rsa")
        if kind not in ("rsa", "ecdsa"):
            print(f"ipsec newhostkey: --keytype {kind}: rsa or ecdsa", file=sys.stderr)
            return 1
        if "--curve" in opts and ("--bits" in opts or kind != "ecdsa"):
            print("ipsec newhostkey: --curve needs --keytype ecdsa and excludes --bits",
                  file=sys.stderr)
            return 1
        bits = CURVES.get(opts["--curve"].lower(), "") if "--curve" in opts else \
            opts.get("--bits", "3072" if kind == "rsa" else "256")
        if kind == "ecdsa" and bits not in ("256", "384") or \
                kind == "rsa" and not (bits.isdigit() and 2048 <= int(bits) <= 16384):
            what = f"--curve {opts['--curve']}" if "--curve" in opts else f"--bits {bits}"
            print(f"ipsec newhostkey: {what} is not supported: " + (
                  "P-256 or P-384 (--curve secp256r1|secp384r1, or --bits 256|384)"
                  if kind == "ecdsa" else "an RSA key of 2048 to 16384 bits"), file=sys.stderr)
            return 1
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
        if len(rest) != 1:
            return _bad(cmd, next(a for a in rest if a != "--list"))
        for i, k in enumerate(keys, 1):
            kid = k.keyid or "<missing-pubkey>"
            print(f"<{i:2d}> {k.kind.upper() if k.kind == 'rsa' else 'ECDSA'} keyid: {kid} "
                  f"ckaid: {k.ckaid}")
        return 0
    opts = _options(cmd, rest, {"--ckaid"}, {"--left", "--right", "--pubkey"})
    if isinstance(opts, int):
        return opts
    if "--left" in opts and "--right" in opts:
        print("ipsec showhostkey: --left and --right conflict", file=sys.stderr)
        return 1
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


# ``newhostkey --curve``: the curves a raw ECDSA key of pypluto may use
CURVES = {"secp256r1": "256", "nistp256": "256", "p256": "256", "p-256": "256",
          "prime256v1": "256", "secp384r1": "384", "nistp384": "384", "p384": "384",
          "p-384": "384"}

# Libreswan 5.2's options of these commands that pypluto does not implement
NOT_SUPPORTED = {"--seeddev", "--hostname", "--ipseckey", "--gateway", "--dump", "--rsaid",
                 "--precedence", "--settrusts", "--configdir", "--utc", "--dry-run", "--version",
                 "--verbose", "--debug", "--quiet"}


def _bad(cmd: str, arg: str) -> int:
    if arg in NOT_SUPPORTED:
        print(f"ipsec {cmd}: {arg} is not supported by pypluto", file=sys.stderr)
    else:
        print(f"ipsec {cmd}: unexpected argument \"{arg}\"", file=sys.stderr)
    return 1


def _options(cmd: str, rest: list[str], valued: set[str], flags: set[str]
             ) -> dict[str, str] | int:
    """``rest`` as options: each of ``valued`` takes the next argument, ``flags`` none;
    anything else, a missing value or an option given twice is refused (exit 1)."""
    out: dict[str, str] = {}
    i = 0
    while i < len(rest):
        a = rest[i]
        if a not in valued and a not in flags:
            return _bad(cmd, a)
        if a in out:
            print(f"ipsec {cmd}: {a} given twice", file=sys.stderr)
            return 1
        if a in valued:
            if i + 1 >= len(rest):
                print(f"ipsec {cmd}: {a} needs a value", file=sys.stderr)
                return 1
            out[a] = rest[i + 1]
            i += 1
        else:
            out[a] = ""
        i += 1
    return out


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
    if js and cmd not in ("listcerts", "listcacerts"):
        return _bad(cmd, "--json")
    if rest and cmd in ("initnss", "checknss", "listcerts", "listcacerts"):
        return _bad(cmd, rest[0])
    if cmd in ("certutil", "pk12util", "crlutil") and ("-d" in rest or "--dry-run" in rest):
        # Libreswan's ipsec refuses them too: the database is --nssdir's
        print(f"ipsec {cmd}: -d is not accepted: the database is --nssdir {nssdir}"
              if "-d" in rest else f"ipsec {cmd}: --dry-run is not supported",
              file=sys.stderr)
        return 2
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
