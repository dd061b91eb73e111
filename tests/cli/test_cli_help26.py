"""``ipsec CMD --help`` (and ``-h``) for the commands that take a connection name: the
command's usage on stdout and exit 0, as Libreswan 5.2's ipsec does; nothing is sent to
pluto.  Before: 'unknown option "--help"', exit 33."""

from __future__ import annotations

import pytest
from test_cli_command_audit import NOWHERE, ipsec


@pytest.mark.parametrize("cmd", ["add", "replace", "ondemand", "redirect", "delete", "down",
                                 "terminate", "route", "unroute", "up", "initiate", "stop"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_exits_0(cmd: str, flag: str) -> None:
    r = ipsec(cmd, flag, "--ctlsocket", NOWHERE) if cmd != "stop" else ipsec(cmd, flag)
    assert (r.returncode, r.stderr) == (0, ""), (r.returncode, r.stdout, r.stderr)
    shown = {"terminate": "down", "initiate": "up"}.get(cmd, cmd)
    assert r.stdout.startswith(f"usage: ipsec {shown} "), r.stdout
    assert "Pluto is not running" not in r.stdout + r.stderr  # nothing was sent


def test_help_after_a_name_still_only_prints_the_usage() -> None:
    r = ipsec("up", "west-east", "--help", "--ctlsocket", NOWHERE)
    assert r.returncode == 0 and r.stdout.startswith("usage: ipsec up "), r
    r = ipsec("up", "west-east", "--frob", "--ctlsocket", NOWHERE)  # others: refused as before
    assert r.returncode == 33 and 'unknown option "--frob"' in r.stderr, r
