"""Libreswan 5.2's ipsec commands: replace, rereadall, aliases, auto, and the ones we refuse."""

from __future__ import annotations

import pytest
from plutoproc import run_main

pytestmark = pytest.mark.netns


def ipsec(*args: str):
    return run_main("pypluto.cli.ipsec", list(args))


def test_add_of_a_loaded_conn_says_it_replaces(daemon):
    rd, conf = str(daemon.rundir), str(daemon.conf)
    r = ipsec("add", "--rundir", rd, "--config", conf, "c-later")
    assert r.returncode == 0, r.stderr
    assert "replacing" not in r.stdout  # first add: nothing to replace
    r = ipsec("add", "--rundir", rd, "--config", conf, "c-later")
    assert r.returncode == 0
    assert r.stdout.splitlines() == [  # pluto's own lines; no SAs, so nothing terminated
        '"c-later": replacing connection',
        '"c-later": added IKEv2 connection',
    ]
    r = ipsec("replace", "--rundir", rd, "--config", conf, "c-later")
    assert r.returncode == 0 and '"c-later": replacing connection' in r.stdout
    r = ipsec("auto", "--rundir", rd, "--config", conf, "--replace", "c-later")
    assert r.returncode == 0 and '"c-later": replacing connection' in r.stdout
    assert "WARNING: ipsec auto has been deprecated" in r.stderr
    # a conn missing from the file replaces nothing and the loaded one stays
    r = ipsec("replace", "--rundir", rd, "--config", conf, "c-nosuch")
    assert r.returncode == 21 and "replacing" not in r.stdout
    assert ipsec("--delete", "--rundir", rd, "c-later").returncode == 0
    assert '"c-later":' not in ipsec("status", "--rundir", rd).stdout


def test_rereads_and_aliases(daemon):
    rd = str(daemon.rundir)
    for cmd in ("rereadall", "--rereadall", "secrets", "--rereadsecrets"):
        r = ipsec(cmd, "--rundir", rd)
        assert r.returncode == 0 and "loading secrets from" in r.stdout, (cmd, r)
    r = ipsec("auto", "--rundir", rd, "--rereadall")
    assert r.returncode == 0 and "loading secrets from" in r.stdout
    assert ipsec("traffic", "--rundir", rd).returncode == 0
    assert "Connection list:" in ipsec("--status", "--rundir", rd).stdout
    r = ipsec("--statestatus", "--rundir", rd)
    assert r.returncode == 0 and r.stdout == ""
    r = ipsec("terminate", "--rundir", rd, "c-add")
    assert r.returncode == 0 and '"c-add": terminating SAs' in r.stdout
    assert ipsec("initiate", "--rundir", rd, "nosuch").returncode == 21


def test_on_demand_commands_route_and_unroute(daemon):
    """route / unroute / ondemand reach pluto (issue 16; the traffic side is in
    tests/daemon/test_ondemand.py); ``auto --route`` is the Libreswan 4 spelling."""
    rd, conf = str(daemon.rundir), str(daemon.conf)
    r = ipsec("route", "--rundir", rd, "c-route")
    assert r.returncode == 0, r.stdout + r.stderr
    assert '"c-route"' in ipsec("status", "--rundir", rd).stdout
    assert "routed-ondemand" in ipsec("status", "--rundir", rd).stdout
    r = ipsec("unroute", "--rundir", rd, "c-route")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "routed-ondemand" not in ipsec("status", "--rundir", rd).stdout
    r = ipsec("auto", "--rundir", rd, "--route", "c-route")
    assert r.returncode == 0 and "routed-ondemand" in ipsec("status", "--rundir", rd).stdout
    r = ipsec("ondemand", "--rundir", rd, "--config", conf, "c-route")  # add + route
    assert r.returncode == 0, r.stdout + r.stderr
    assert "routed-ondemand" in ipsec("status", "--rundir", rd).stdout
    assert ipsec("unroute", "--rundir", rd, "c-route").returncode == 0
    r = ipsec("route", "--rundir", rd, "c-anyone")  # right=%any: nothing to trap
    assert r.returncode == 25 and "without a peer address" in r.stdout + r.stderr


def test_start_name_is_add_then_up(daemon):
    rd, conf = str(daemon.rundir), str(daemon.conf)
    # c-anyone (right=%any) adds, then up fails as whack --initiate does for it
    ipsec("delete", "--rundir", rd, "c-anyone")
    assert '"c-anyone":' not in ipsec("status", "--rundir", rd).stdout
    r = ipsec("start", "--rundir", rd, "--config", conf, "c-anyone")
    up = ipsec("up", "--rundir", rd, "c-anyone")
    assert r.returncode == up.returncode != 0, r.stdout + up.stdout
    assert '"c-anyone":' in ipsec("status", "--rundir", rd).stdout


@pytest.mark.parametrize("cmd", ["listall",
                                 "fipsstatus",
                                 "reload", "briefconnectionstatus", "checknflog"])
def test_unsupported_libreswan_commands_fail_clearly(cmd):
    r = ipsec(cmd)
    assert r.returncode == 33
    assert r.stderr.startswith(f"ipsec {cmd}: not supported by pypluto: ")
    assert r.stdout == ""
