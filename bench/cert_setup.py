"""Responder CPU per IKE SA with certificates (issue 14): ECDSA P-256 and RSA-2048,
pypluto vs strongSwan 5.9.8 vs Libreswan 4.10 in the same run.

The method is ``bench/ike_setup.py``'s, and so is the code (imported, not copied):
its strongSwan generator in the west namespace driven asynchronously over vici
(``Generator``, ``C`` in flight, ``reuse_ikesa = no``, ``childless = force``),
the responder in the east namespace pinned to CPU 1, the establishments counted
from the responder's own log and its utime+stime over the window
(``measure``).  Only the authentication differs: ``auth = pubkey`` both ways
instead of PSK, same IKE proposal (``aes256gcm16-prfsha256-x25519``).

The PKI (``tests/pki.py``, ``cryptography``): one root CA of the key's kind
(P-256 or RSA-2048) that signs the generator's and the responder's end-entity
certificates directly (no intermediate: one signature to verify per chain).
Every peer sends its certificate (``send_cert = always``, Libreswan's and
pypluto's default ``sendcert``) and trusts the root:

* strongSwan (generator and responder): ``swanctl`` ``x509/``, ``x509ca/``,
  ``private/`` files, plugins ``x509 pem pkcs1 pkcs8 pubkey constraints``;
* Libreswan 4.10: its NSS db made as ``ipsec import`` would (``certutil -N
  --empty-password``, ``pk12util -i`` of its PKCS#12, ``certutil -A -t CT,,`` of
  the root), ``leftcert=<nickname>``;
* pypluto: the same NSS db layout, ``--nssdir``, ``leftcert=<nickname>``
  (``authby=ecdsa`` / ``authby=rsasig`` as Libreswan).

The responder signs with what its ``authby`` and the generator's
SIGNATURE_HASH_ALGORITHMS give (RFC 7427): ECDSA with SHA-256 everywhere; for
RSA, pypluto and Libreswan sign RSASSA-PSS, strongSwan PKCS#1 v1.5; the
generator signs PKCS#1 v1.5 (strongSwan's default).

Sizes: ``BENCH_CERT_N`` (IKE SAs per run, 500), ``BENCH_C`` (32),
``BENCH_CERT_RUNS`` (alternating runs per responder and key, 2).

Run alone: ``.venv/bin/python -m bench.cert_setup [N] [C]``.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
from typing import Any

from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

from bench.ike_setup import (
    _CHARON_CONF,
    CHARON,
    EAST_OUTER,
    LS_PROPOSAL,
    RESP_CPU,
    SS_PROPOSAL,
    UNLIMITED,
    WEST_OUTER,
    Generator,
    Lab,
    Libreswan,
    Responder,
    _load_swanctl,
    _Pluto,
    _try,
    env_int,
    kinds_available,
    measure,
    median_of,
    pin,
    spread,
)

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from pki import Issued, make_ca, make_ee  # noqa: E402

# key kind (tests/pki.py) -> (label, Libreswan/pypluto authby=)
KEYS = {"p256": ("ECDSA P-256", "ecdsa"), "rsa2048": ("RSA-2048", "rsasig")}
# what charon needs beyond ike_setup's list to read and check certificates
CERT_PLUGINS = "x509 pem pkcs1 pkcs8 pubkey constraints"
NSS_PW = b"bench"


class BenchPKI:
    """A root CA of one key kind and the two end entities it signs."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.root = make_ca("pypluto bench root", key)
        self.gen = make_ee("gen", self.root, key)
        self.resp = make_ee("resp", self.root, key)


def _swanctl_gen_cert(pki: BenchPKI) -> str:
    return f"""\
connections {{
    load {{
        version = 2
        local_addrs = {WEST_OUTER}
        remote_addrs = {EAST_OUTER}
        proposals = {SS_PROPOSAL}
        childless = force
        mobike = no
        unique = never
        rekey_time = 0
        send_cert = always
        local {{
            auth = pubkey
            certs = gen.crt
            id = "{pki.gen.dn}"
        }}
        remote {{
            auth = pubkey
            id = "{pki.resp.dn}"
        }}
    }}
}}
"""


def _swanctl_resp_cert(pki: BenchPKI) -> str:
    return f"""\
connections {{
    resp {{
        version = 2
        local_addrs = {EAST_OUTER}
        proposals = {SS_PROPOSAL}
        childless = allow
        mobike = no
        unique = never
        rekey_time = 0
        send_cert = always
        local {{
            auth = pubkey
            certs = resp.crt
            id = "{pki.resp.dn}"
        }}
        remote {{
            auth = pubkey
            id = "{pki.gen.dn}"
        }}
    }}
}}
"""


def _creds(me: Issued, stem: str, pki: BenchPKI) -> dict[str, bytes]:
    return {f"x509/{stem}.crt": me.cert_pem(), "x509ca/root.crt": pki.root.cert_pem(),
            f"private/{stem}.key": me.key_pem()}


def _ipsec_conf_cert(pki: BenchPKI) -> str:
    """The responder's conn for both plutos (Libreswan's syntax)."""
    authby = KEYS[pki.key][1]
    return f"""\
config setup
\tuniqueids=no
{UNLIMITED}
conn resp
\tauthby={authby}
\tleft={EAST_OUTER}
\tleftid="{pki.resp.dn}"
\tleftcert=resp
\tright=%any
\trightid="{pki.gen.dn}"
\tike={LS_PROPOSAL}
\trekey=no
\tauto=add
"""


def make_nssdb(d: pathlib.Path, me: Issued, nick: str, pki: BenchPKI) -> None:
    """A Libreswan-layout NSS db: our key and certificate (PKCS#12), the root trusted."""
    def run(*argv: str) -> None:
        subprocess.run(list(argv), check=True, capture_output=True, timeout=60)

    d.mkdir(parents=True, exist_ok=True)
    run("certutil", "-N", "-d", f"sql:{d}", "--empty-password")
    p12 = d.parent / f"{nick}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        nick.encode(), me.key, me.cert, None,  # type: ignore[arg-type]
        BestAvailableEncryption(NSS_PW)))
    run("pk12util", "-i", str(p12), "-d", f"sql:{d}", "-W", NSS_PW.decode())
    root = d.parent / "root.pem"
    root.write_bytes(pki.root.cert_pem())
    run("certutil", "-A", "-d", f"sql:{d}", "-n", "benchroot", "-t", "CT,,", "-i", str(root))


def start_cert_responder(lab: Lab, kind: str, pki: BenchPKI) -> Responder:
    """The responder under test with its certificate, pinned to ``RESP_CPU``."""
    if kind == "strongswan":
        d = lab.workdir / "resp-strongswan"
        d.mkdir(parents=True, exist_ok=True)
        vici_path = d / "charon.vici"
        conf = d / "strongswan.conf"
        conf.write_text(_CHARON_CONF.format(ipsec_plugin=CERT_PLUGINS, log=d / "charon.log",
                                            vici=vici_path, level=0))
        sp = lab.spawn(lab.east, [CHARON], d / "stdout.log", {"STRONGSWAN_CONF": str(conf)},
                       name="resp-strongswan")
        lab.wait_for(vici_path.exists, 30, "responder vici socket")
        _load_swanctl(lab, d, conf, _swanctl_resp_cert(pki), _creds(pki.resp, "resp", pki))
        pin(sp.pid, RESP_CPU)
        return Responder(lab, kind, sp.pid, vici_path, d / "charon.log")
    if kind == "libreswan":
        ls = Libreswan(lab, lab.east, name="resp-libreswan")
        make_nssdb(ls.dir / "nss", pki.resp, "resp", pki)  # start() keeps an existing db
        ls.start(_ipsec_conf_cert(pki), "")
        assert ls.proc is not None
        pin(ls.proc.pid, RESP_CPU)
        return Responder(lab, kind, ls.proc.pid, ls, ls.log)
    if kind == "pypluto":
        nss = lab.workdir / "resp-pypluto-nss" / "nss"
        make_nssdb(nss, pki.resp, "resp", pki)
        pp = _Pluto(lab, lab.east, "resp-pypluto", ["--nssdir", str(nss)])
        pp.start(_ipsec_conf_cert(pki), "")
        assert pp.proc is not None
        pin(pp.proc.pid, RESP_CPU)
        return Responder(lab, kind, pp.proc.pid, pp, pp.log)
    raise ValueError(kind)


def one_run(kind: str, key: str, n: int, concurrency: int) -> dict[str, Any]:
    """One responder, one key kind, one fresh lab and PKI: 20 warm-up SAs, ``n`` measured."""
    pki = BenchPKI(key)
    with Lab(prefix="bc") as lab:
        resp = start_cert_responder(lab, kind, pki)
        gen = Generator(lab, swanctl_text=_swanctl_gen_cert(pki),
                        creds=_creds(pki.gen, "gen", pki), plugins=CERT_PLUGINS)
        gen.start()
        out = measure(resp, gen, n, concurrency)
        out.update(key=key)
        return out


def run(n: int | None = None, concurrency: int | None = None) -> dict[str, Any]:
    n = n or env_int("BENCH_CERT_N", 500)
    c = concurrency or env_int("BENCH_C", 32)
    nruns = env_int("BENCH_CERT_RUNS", 2)
    kinds = kinds_available()
    results: dict[str, list[dict[str, Any]]] = {}
    for i in range(nruns):
        for key in KEYS:
            for kind in kinds:
                results.setdefault(f"{kind}/{key}", []).append(
                    _try(f"{kind} {key} run {i + 1}", one_run, kind, key, n, c))
    return {"name": "cert_setup", "command": "make bench BENCH=cert_setup",
            "sizes": {"n": n, "c": c, "runs": nruns, "keys": list(KEYS),
                      "pinning": {"generator": 0, "responder": RESP_CPU}},
            "results": results, "rows": rows(results, n, c)}


def rows(results: dict[str, list[dict[str, Any]]], n: int, c: int) -> list[dict[str, Any]]:
    """Per key kind: CPU per IKE SA, the rate, and the log count against the generator's."""
    daemons = ("pypluto", "strongswan", "libreswan")
    out: list[dict[str, Any]] = []
    for key, (label, authby) in KEYS.items():
        def col(field: str, key: str = key) -> dict[str, Any]:
            v = {d: median_of(results.get(f"{d}/{key}", []), field) for d in daemons}
            return {d: round(x, 3) if isinstance(x, float) else x for d, x in v.items()}

        def sp(field: str, nd: int = 2, key: str = key) -> str:
            return ", ".join(f"{d}: {spread(results.get(f'{d}/{key}', []), field, nd)}"
                             for d in daemons)

        errs = [f"{d}: {r['error']}" for d in daemons
                for r in results.get(f"{d}/{key}", []) if "error" in r]
        short = [f"{d} logged {r['established_logged']} of {n} (generator saw "
                 f"{r['established_generator']})" for d in daemons
                 for r in results.get(f"{d}/{key}", [])
                 if "established_logged" in r and r["established_logged"] < n]
        nruns = max((len(results.get(f"{d}/{key}", [])) for d in daemons), default=0)
        method = (f"median of {nruns} alternating runs; ike_setup's async vici generator "
                  f"N={n} C={c}, {SS_PROPOSAL}, {label} certificates both ways (one root CA, "
                  f"authby={authby}), responder on CPU {RESP_CPU}; counted from the "
                  "responder's log")
        tail = (("; SHORT COUNTS: " + "; ".join(short)) if short else "") + \
            (("; errors: " + "; ".join(errs)) if errs else "")
        out.append({"metric": f"responder CPU per IKE SA, {label} certificates",
                    **col("cpu_ms_per_sa"), "unit": "ms",
                    "note": method + "; runs: " + sp("cpu_ms_per_sa") + tail})
        out.append({"metric": f"setup rate, {label} certificates", **col("rate"),
                    "unit": "IKE SA/s", "note": "runs: " + sp("rate", 0)})
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:3]]
    result = run(*args)
    for r in result["rows"]:
        print(r)
