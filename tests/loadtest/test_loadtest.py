"""``ipsec loadtest`` (pypluto.loadtest): argument errors, and real IKE SAs against our
daemon in a two-namespace lab (RFC 7296 §1.2; childless per RFC 6023)."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from pypluto import loadtest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "interop")]

from lab import EAST_OUTER, WEST_OUTER, Lab, have_netns  # noqa: E402
from peers import Pypluto  # noqa: E402
from testsupport import require  # noqa: E402

PSK = "loadtest-psk-0123456789abcdefghijklmnop"
CONF = f"""\
config setup
\tuniqueids=no
conn resp
\tauthby=secret
\tleft={EAST_OUTER}
\tleftid=@resp.example
\tleftsubnet=203.0.113.0/24
\tright=%any
\trightid=@gen.example
\trightsubnet=198.51.100.0/24
\tike=aes_gcm256-sha2_256-dh31
\tesp=aes_gcm256
\trekey=no
\tauto=add
"""
SECRETS = f'@resp.example @gen.example : PSK "{PSK}"\n'


def test_missing_psk_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PLUTO_LOADTEST_PSK", raising=False)
    rc = loadtest.main(["--local", "192.0.2.1", "--remote", "192.0.2.2"])
    assert rc == 2
    assert "no PSK" in capsys.readouterr().err


@pytest.mark.parametrize("args, why", [
    (["--local", "192.0.2.1", "--remote", "not-an-address"], "does not appear"),
    (["--local", "192.0.2.1", "--remote", "2001:db8::1"], "address family"),
    (["--local", "192.0.2.1", "--remote", "192.0.2.2", "--ike", "nonsense-xyz"], "Error"),
    (["--local", "192.0.2.1", "--remote", "192.0.2.2", "-c", "0"], "-c >= 1"),
])
def test_bad_arguments_exit_2_without_the_psk(args: list[str], why: str,
                                              capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLUTO_LOADTEST_PSK", PSK)
    rc = loadtest.main(args)
    err = capsys.readouterr().err
    assert rc == 2
    assert why in err
    assert PSK not in err


def test_options_repr_hides_the_psk() -> None:
    o = loadtest.Options(local="192.0.2.1", remote="192.0.2.2", psk=PSK.encode())
    assert PSK not in repr(o) and PSK not in repr(loadtest._Secrets(PSK.encode()))


def test_connection_is_childless_unless_asked() -> None:
    o = loadtest.Options(local="192.0.2.1", remote="192.0.2.2", psk=b"x",
                         local_id="@gen.example")
    assert loadtest.build_connection(o).raw["childless"] == "yes"
    o.child = True
    c = loadtest.build_connection(o)
    assert c.raw["childless"] == "no" and str(c.local.host_addr) == "192.0.2.1"


@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.parametrize("child", [False, True], ids=["childless", "ike+child"])
def test_loadtest_against_pypluto(child: bool) -> None:
    require(have_netns(), "root and `ip netns`")
    with Lab(prefix="lt") as lab:
        resp = Pypluto(lab, lab.east, "lt-resp").start(CONF, SECRETS)
        psk = lab.workdir / "psk"
        psk.write_text(PSK + "\n")
        argv = [sys.executable, "-m", "pypluto.loadtest", "--local", WEST_OUTER,
                "--remote", EAST_OUTER, "--psk-file", psk, "--local-id", "@gen.example",
                "--remote-id", "@resp.example", "--ike", "aes_gcm256-sha2_256-dh31",
                "-n", "6", "-c", "3", "--json"] + (["--child"] if child else [])
        r = lab.run(lab.west, argv, check=False, timeout=90,
                    env={"PYTHONPATH": os.pathsep.join(sys.path)})
        assert r.returncode == 0, r.stderr + r.stdout
        out = json.loads(r.stdout)
        assert (out["established"], out["failures"], out["unfinished"]) == (6, 0, 0)
        assert PSK not in r.stdout + r.stderr
        sas = resp.sas()
        assert sum("ESTABLISHED" in s["state"] for s in sas) == 6
        children = sum(len(s.get("children", [])) for s in sas)
        assert children == (6 if child else 0)


@pytest.mark.netns
@pytest.mark.timeout(60)
def test_wrong_psk_fails_every_sa() -> None:
    require(have_netns(), "root and `ip netns`")
    with Lab(prefix="lt") as lab:
        Pypluto(lab, lab.east, "lt-resp").start(CONF, SECRETS)
        psk = lab.workdir / "psk"
        psk.write_text("a-different-psk-0123456789abcdefghij\n")
        r = lab.run(lab.west, [sys.executable, "-m", "pypluto.loadtest", "--local", WEST_OUTER,
                               "--remote", EAST_OUTER, "--psk-file", psk, "--local-id",
                               "@gen.example", "--remote-id", "@resp.example", "--ike",
                               "aes_gcm256-sha2_256-dh31", "-n", "2", "-c", "2", "--json",
                               "--timeout", "40"], check=False, timeout=60)
        assert r.returncode == 1
        out = json.loads(r.stdout)
        assert out["established"] == 0 and out["failures"] + out["unfinished"] == 2
