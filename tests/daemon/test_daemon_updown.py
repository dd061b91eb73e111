"""leftupdown= through two real daemons: verbs, environment, and a failing script.

west 192.0.2.1 (198.51.100.0/24) <-veth-> east 192.0.2.2 (203.0.113.0/24), --use-none:
the script runs as Libreswan runs ``_updown`` (prepare, route, up; down, unroute).
"""

from __future__ import annotations

import os
import time

import pytest
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.netns

SCRIPT = """#!/bin/sh
echo "$PLUTO_VERB $PLUTO_CONNECTION $PLUTO_MY_CLIENT $PLUTO_PEER_CLIENT $PLUTO_PEER_ID \
$PLUTO_SA_REQID $PLUTO_SA_TYPE $PLUTO_STACK" >> {log}
echo "updown says $PLUTO_VERB"
exit {rc}
"""


def _script(tmp_path, name: str, rc: str = "0") -> tuple[str, str]:
    log = tmp_path / f"{name}.calls"
    path = tmp_path / f"{name}.sh"
    path.write_text(SCRIPT.format(log=log, rc=rc))
    path.chmod(0o755)
    return str(path), str(log)


def _conf(script: str) -> str:
    return CONF.replace("\tauto={auto}\n", f"\tleftupdown={script}\n\tauto={{auto}}\n")


def _calls(log: str, n: int, timeout: float = 10.0) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(log):
            lines = [ln.split() for ln in open(log).read().splitlines()]
            if len(lines) >= n:
                return lines
        time.sleep(0.05)
    return [ln.split() for ln in open(log).read().splitlines()] if os.path.exists(log) else []


def test_updown_verbs_and_environment(pair, tmp_path):  # noqa: F811
    start, _w, _e = pair
    script, log = _script(tmp_path, "west")
    east = start("east", _e, "add", "--use-none")
    west = start("west", _w, "add", "--use-none", conf_text=_conf(script))
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    calls = _calls(log, 3)
    assert [c[0] for c in calls] == ["prepare-client", "route-client", "up-client"]
    verb, conn, mine, peer, peer_id, reqid, sa_type, stack = calls[2]
    assert (conn, mine, peer, peer_id, sa_type, stack) == (
        "west-east", "198.51.100.0/24", "203.0.113.0/24", "@east", "ESP", "none")
    assert int(reqid) > 0
    assert "up-client: updown says up-client" in west.log()
    # a rekey does not run the script again (Libreswan: rekeys need no re-UP)
    assert west.whack("--name", "west-east", "--rekey-child").returncode == 0
    time.sleep(1.0)
    assert len(_calls(log, 3)) == 3
    assert west.whack("--name", "west-east", "--terminate").returncode == 0
    calls = _calls(log, 5)
    assert [c[0] for c in calls[3:]] == ["down-client", "unroute-client"]
    assert east.whack("--status").returncode == 0


def test_failing_up_script_fails_the_child_sa(pair, tmp_path):  # noqa: F811
    start, _w, _e = pair
    script, log = _script(tmp_path, "west", rc="1")
    east = start("east", _e, "add", "--use-none")
    west = start("west", _w, "add", "--use-none", conf_text=_conf(script))
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode != 0, r.stdout
    text = west.log()
    # Libreswan 5.2: a failing prepare is logged and route runs; route's failure is fatal
    assert "prepare-client failed: updown script exited with status 1" in text
    assert "route-client failed: updown script exited with status 1" in text
    assert "Child SA failed" in text
    # the Child SA is gone on both sides: we sent a Delete
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (child_sas(west) or child_sas(east)):
        time.sleep(0.1)
    assert child_sas(west) == [] and child_sas(east) == []
    assert [c[0] for c in _calls(log, 2)] == ["prepare-client", "route-client"]


def test_missing_script_is_a_clear_failure_and_other_conns_live(pair, tmp_path):  # noqa: F811
    start, _w, _e = pair
    missing = str(tmp_path / "no-such-updown.sh")
    conf = _conf(missing) + CONF.replace("conn west-east", "conn other").replace(
        "198.51.100.0/24", "198.51.100.128/25").replace("203.0.113.0/24", "203.0.113.128/25")
    east_conf = CONF + CONF.replace("conn west-east", "conn other").replace(
        "198.51.100.0/24", "198.51.100.128/25").replace("203.0.113.0/24", "203.0.113.128/25")
    start("east", _e, "add", "--use-none", conf_text=east_conf)
    west = start("west", _w, "add", "--use-none", conf_text=conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode != 0
    assert "does not exist" in west.log()
    r = west.whack("--name", "other", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
