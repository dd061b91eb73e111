"""``ipsec redirect`` (Libreswan 5.2's ipsec-redirect(8)) becomes ``whack --redirect-to``
(RFC 5685 §5: REDIRECT to established clients); bad arguments fail clearly."""

from __future__ import annotations

import pytest

from pypluto.cli import ipsec


@pytest.fixture
def whacked(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []
    monkeypatch.setattr(ipsec, "_whack", lambda argv: calls.append(argv) or 0)
    return calls


@pytest.mark.parametrize("args, want", [
    (["rw", "--redirect-to", "192.0.2.3"], ["--redirect-to", "192.0.2.3", "--name", "rw"]),
    (["--redirect-to=192.0.2.3", "--peer-ip", "192.0.2.1"],
     ["--redirect-to", "192.0.2.3", "--peer-ip", "192.0.2.1"]),
    (["--rundir", "/r", "rw", "--redirect-to", "2001:db8::3"],
     ["--rundir", "/r", "--redirect-to", "2001:db8::3", "--name", "rw"]),
])
def test_redirect_maps_to_whack(whacked: list[list[str]], args: list[str],
                                want: list[str]) -> None:
    assert ipsec.main(["redirect", *args]) == 0
    assert whacked == [want]


def test_dry_run_prints_the_whack_command(whacked: list[list[str]],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert ipsec.main(["redirect", "rw", "--redirect-to", "192.0.2.3", "--dry-run"]) == 0
    assert capsys.readouterr().out == "ipsec whack --redirect-to 192.0.2.3 --name rw\n"
    assert whacked == []


@pytest.mark.parametrize("args, err", [
    (["rw"], "--redirect-to ADDRESS is required"),
    (["--redirect-to", "192.0.2.3"], "one connection name or --peer-ip"),
    (["rw", "--redirect-to", "192.0.2.3,192.0.2.4"], "one gateway address at a time"),
    (["rw", "--redirect-to"], "--redirect-to needs a value"),
    (["rw", "--redirect-to", "192.0.2.3", "--bogus"], "unknown option --bogus"),
])
def test_bad_arguments_fail_clearly(whacked: list[list[str]],
                                    capsys: pytest.CaptureFixture[str], args: list[str],
                                    err: str) -> None:
    assert ipsec.main(["redirect", *args]) == 33
    assert err in capsys.readouterr().err
    assert whacked == []
