"""Pure parts of the rows added for issues 13 and 14: the audit-trail verdict of
``bench/ike_setup.py`` and the certificate configs and rows of ``bench/cert_setup.py``."""

from __future__ import annotations

import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import cert_setup, ike_setup, run  # noqa: E402
from pypluto.config.parser import parse_config_text  # noqa: E402


def _r(logged: int, gen: int, rate: float) -> dict[str, object]:
    return {"established_logged": logged, "established_generator": gen, "rate": rate}


KINDS = ("pypluto", "strongswan", "libreswan")


def test_audit_row_met_only_when_every_sa_is_logged_at_the_rate() -> None:
    ok = {"pypluto": [_r(2000, 2000, 1600.0), _r(2000, 2000, 1550.0)],
          "strongswan": [_r(2000, 2000, 1700.0)]}
    row = ike_setup.audit_row(ok, KINDS, "childless")
    assert row["pypluto"] == "4000 of 4000" and row["strongswan"] == "2000 of 2000"
    assert row["libreswan"] is None
    assert "met (every run at >= 1,500/s)" in row["note"]
    short = {"pypluto": [_r(2000, 2000, 1600.0), _r(64, 2000, 1500.0)]}
    assert "MISSED" in ike_setup.audit_row(short, KINDS, "childless")["note"]
    slow = {"pypluto": [_r(2000, 2000, 1600.0), _r(2000, 2000, 400.0)]}
    note = ike_setup.audit_row(slow, KINDS, "childless")["note"]
    assert "400/s" in note and "not proven" in note and "met (" not in note


def test_audit_row_names_the_generators_own_limit() -> None:
    busy = {"generator_cpu_ms_per_sa": 0.72, "driver_cpu_ms_per_sa": 0.08,
            "generator_core_busy": 0.99}
    res = {"pypluto": [_r(2000, 2000, 1240.0) | busy],
           "strongswan": [_r(2000, 2000, 1250.0) | busy | {"generator_core_busy": 0.97}]}
    note = ike_setup.audit_row(res, KINDS, "childless")["note"]
    assert "not proven" in note
    assert "97%-99% busy at 0.80-0.80 ms per SA" in note and "at most ~1250 IKE SAs/s" in note
    # runs without the generator's figures (older results) add nothing
    assert "generator's core" not in ike_setup.audit_row(
        {"pypluto": [_r(2000, 2000, 1240.0)]}, KINDS, "childless")["note"]


def test_ike_setup_rows_carry_the_audit_row() -> None:
    res = {"pypluto": [_r(100, 100, 900.0) | {"cpu_ms_per_sa": 1.0}]}
    metrics = [r["metric"] for r in ike_setup.rows(res, 100, 32)]
    assert "'established' log lines / generator's establishments, childless" in metrics


def test_cert_responder_conf_is_valid_for_our_parser() -> None:
    for key, (_, authby) in cert_setup.KEYS.items():
        pki = cert_setup.BenchPKI(key)
        cfg = parse_config_text(cert_setup._ipsec_conf_cert(pki))
        conn = cfg.conns["resp"]
        assert conn.left.cert == "resp" and authby in cert_setup._ipsec_conf_cert(pki)
        assert pki.gen.cert.issuer == pki.root.cert.subject == pki.resp.cert.issuer


def test_cert_rows_and_registration() -> None:
    res = {"pypluto/p256": [{"cpu_ms_per_sa": 2.0, "rate": 100.0}],
           "strongswan/rsa2048": [{"error": "boom"}]}
    rows = cert_setup.rows(res, 500, 32)
    assert [r["metric"] for r in rows] == [
        "responder CPU per IKE SA, ECDSA P-256 certificates", "setup rate, ECDSA P-256 "
        "certificates", "responder CPU per IKE SA, RSA-2048 certificates",
        "setup rate, RSA-2048 certificates"]
    assert rows[0]["pypluto"] == 2.0 and "errors: strongswan: boom" in rows[2]["note"]
    assert "bench.cert_setup" in run.BENCHMARKS
