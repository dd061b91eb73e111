"""daemon/powerup.py: algorithm self-tests before first use, failing closed."""

from __future__ import annotations

from pypluto.config.parser import parse_config_text
from pypluto.crypto import selftest
from pypluto.daemon.powerup import PowerUpSelfTest


def _conn(ike: str):  # type: ignore[no-untyped-def]
    text = ("conn c\n\tauthby=secret\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"
            f"\tike={ike}\n\tesp=aes_gcm256\n")
    cfg = parse_config_text(text, "t.conf")
    return cfg.conns["c"]


def test_defaults_checked_once_and_fast_groups_only() -> None:
    p = PowerUpSelfTest()
    first = p.check([], defaults=True)
    assert first.ok and first.checked > 0
    assert p.check([], defaults=True).checked == 0  # nothing new to check


def test_a_conn_brings_its_own_algorithms() -> None:
    p = PowerUpSelfTest()
    p.check([], defaults=True)
    needed = {a.iana_name for a in p.needed([_conn("aes256-sha2_512-modp6144")])}
    assert any("6144" in n for n in needed)


def test_a_corrupted_vector_fails_closed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    kats = selftest.default_kats()
    bad = {t: {i: dict(v) for i, v in d.items()} for t, d in kats.items()}
    for t in bad:
        for v in bad[t].values():
            for k in v:
                if k not in ("source",) and all(ch in "0123456789abcdef" for ch in v[k]) \
                        and len(v[k]) >= 2:
                    v[k] = ("00" if v[k][:2] != "00" else "11") + v[k][2:]
                    break
    monkeypatch.setattr(selftest, "default_kats", lambda: bad)
    p = PowerUpSelfTest()
    report = p.check([], defaults=True)
    assert not report.ok and p.passed == set()
    assert all(line.startswith("FATAL: algorithm self-test failed") for line in report.log_lines())
