"""Bare shunts of an on-demand conn on the userspace plane (issue 16), and shuntstatus.

west 192.0.2.1 (198.51.100.0/24, ``auto=route``) <-veth-> east 192.0.2.2 (203.0.113.0/24),
where east runs no IKE daemon at all: the peer never answers.  East answers pings
in the clear, so what the shunts do is visible:

* ``negotiationshunt=passthrough``: while west negotiates, the pinged flow goes in
  the clear (the first packet, caught by the trap before the shunt was there, waits
  in the hold queue);
* ``failureshunt=drop`` after the retransmits run out (``retransmit-timeout=10s``):
  the flow is dropped for ``shuntlifetime=`` (config setup), and nothing is
  retried meanwhile (Libreswan 5.2 revives only auto=start|up conns);
* then the trap takes the flow back: the next ping negotiates again;
* ``ipsec shuntstatus`` (and ``--json``) list them in Libreswan's "Bare Shunt list".
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest
from plutoproc import NetNS, wait_for
from test_daemon_pair import child_sas, pair  # noqa: F401 - the fixture
from test_ondemand import USERSPACE, ipsec, routes_in_plane

pytestmark = pytest.mark.netns

LIFETIME = 8  # shuntlifetime=, seconds
CONF = f"config setup\n\tshuntlifetime={LIFETIME}s\n\n" + USERSPACE + (
    "\tnegotiationshunt=passthrough\n\tfailureshunt=drop\n\tretransmit-timeout=10s\n")


def pings(ns: NetNS, count: int) -> int:
    r = ns.run("ping", "-c", str(count), "-i", "0.3", "-W", "1", "-I", "198.51.100.1",
               "203.0.113.1", check=False)
    m = re.search(r"(\d+) received", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1))


def shunts(p) -> list[dict]:  # noqa: ANN001
    r = p.whack("--shuntstatus", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    data = json.loads(r.stdout)
    assert data["command"] == "shuntstatus"
    return data["shunts"]


def test_shunts_of_a_trap_whose_peer_never_answers(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    w_ns.run("ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
    e_ns.run("ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
    # the clear path a passthrough shunt takes (east has no IPsec at all)
    w_ns.run("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
    e_ns.run("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
    west = start("west", w_ns, "route", "--use-userspace", conf_text=CONF)
    assert "routed-ondemand" in west.whack("--status").stdout
    r = ipsec(west, "shuntstatus")
    assert r.returncode == 0 and r.stdout.splitlines() == ["", "Bare Shunt list:", ""], \
        r.stdout + r.stderr
    # negotiation: the flow passes in the clear while west tries
    got = pings(w_ns, 4)
    assert got >= 3, west.log()
    sh = shunts(west)
    assert [(s["src"], s["dst"], s["protocol"], s["action"], s["why"]) for s in sh] == \
        [("198.51.100.1/32", "203.0.113.1/32", 1, "pass", "negotiationshunt")], sh
    line = ipsec(west, "shuntstatus").stdout.splitlines()[3]
    assert line == ('198.51.100.1/32 -1-> 203.0.113.1/32 => %pass 0    "west-east" '
                    "negotiationshunt"), line
    # the retransmits run out: the failure shunt drops the flow, no retry
    wait_for(lambda: any(s["why"] == "failureshunt" for s in shunts(west)), 30,
             "the failure shunt")
    failed_at = time.monotonic()
    sh = shunts(west)
    assert [(s["action"], s["why"]) for s in sh] == [("drop", "failureshunt")], sh
    assert 0 < sh[0]["expires_in"] <= LIFETIME
    assert "failureshunt=drop" in west.log()
    assert re.search(r"=> %drop 0 {4}\"west-east\" failureshunt \(expires in [\d.]+s\)$",
                     ipsec(west, "shuntstatus").stdout, re.M)
    inits = west.log().count("initiating on demand")
    assert pings(w_ns, 2) == 0
    assert "routed-ondemand" in west.whack("--status").stdout
    # shuntlifetime over: the trap again, and the next ping negotiates again
    wait_for(lambda: not shunts(west), LIFETIME + 10, "the failure shunt to expire")
    assert time.monotonic() - failed_at >= LIFETIME - 2
    assert "expired; the trap is back" in west.log()
    assert west.log().count("initiating on demand") == inits  # nothing in between
    pings(w_ns, 2)
    wait_for(lambda: west.log().count("initiating on demand") == inits + 1, 10,
             "a new acquire after the shunt expired")
    # unroute removes the trap and every bare shunt with it
    r = ipsec(west, "unroute", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not shunts(west)
    assert routes_in_plane(w_ns) == ""
    rules = w_ns.run("ip", "rule", "show").stdout
    assert not re.search(r"^449[89]:", rules, re.M), rules


STORM = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.1", 0))
t0 = time.monotonic()
for i in range(10_000):  # 10,000 distinct flows at the trap (254 hosts x ports)
    s.sendto(b"x", (f"203.0.113.{1 + i % 254}", 1024 + i // 254))
print(f"{time.monotonic() - t0:.2f}", flush=True)
"""


def test_packet_storm_at_a_trap_is_bounded_and_pluto_answers(pair):  # noqa: F811
    """Bad input (issue 16): 10,000 packets of distinct flows hit a trap whose peer never
    answers.  The plane raises at most one acquire per trap per second and holds at
    most 64 packets; the engine starts one negotiation; whack answers meanwhile."""
    start, w_ns, _e_ns = pair
    w_ns.run("ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
    west = start("west", w_ns, "route", "--use-userspace", conf_text=CONF)
    storm = subprocess.Popen(["ip", "netns", "exec", w_ns.name, sys.executable, "-c", STORM],
                             stdout=subprocess.PIPE, text=True)
    try:
        answers = 0
        while storm.poll() is None:
            r = west.whack("--status")
            assert r.returncode == 0 and '"west-east"' in r.stdout, r.stdout + r.stderr
            answers += 1
        took = float(storm.stdout.read().strip()) if storm.stdout else -1.0
    finally:
        if storm.poll() is None:
            storm.kill()
        storm.wait()
    assert storm.returncode == 0
    assert answers >= 1
    print(f"storm: 10,000 packets in {took}s, whack answered {answers} times meanwhile")
    r = west.whack("--globalstatus")
    assert r.returncode == 0
    log = west.log()
    n = log.count("initiating on demand")
    # one per second of storm at most (the plane's rate limit), and one negotiation
    assert 1 <= n <= int(took) + 2, (n, took)
    print(f"storm: {n} acquire(s) reached the engine, 1 IKE_SA_INIT")
    assert log.count("initiating IKEv2 connection") == 1, log[-3000:]
    assert "Traceback" not in log and "internal error" not in log
    sh = shunts(west)
    assert len(sh) == 1 and sh[0]["why"] == "negotiationshunt", sh


TEMPLATE = """\
conn west-east
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tleftsubnet=198.51.100.0/24
\tright=%any
\trightid=@east
\trightsubnet=203.0.113.0/24
\tencapsulation=yes
\tauto={auto}
"""


def test_routed_any_template_keeps_the_subnet_until_its_peer_connects(pair):  # noqa: F811
    """right=%any with rightsubnet= and auto=route (issue 16 item 5, as far as Libreswan
    goes: it routes such a template, and initiates for opportunistic ones only): the
    trap keeps the subnet's traffic from leaking in the clear (a clear route exists),
    an acquire is logged (nobody to initiate to); when east connects its Child SA
    replaces the trap and pings pass; when east goes, the trap is back."""
    start, w_ns, e_ns = pair
    w_ns.run("ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
    e_ns.run("ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
    w_ns.run("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
    e_ns.run("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
    west = start("west", w_ns, "route", "--use-userspace", conf_text=TEMPLATE)
    assert "routed-ondemand" in west.whack("--status").stdout
    assert pings(w_ns, 2) == 0  # held by the trap, never in the clear
    wait_for(lambda: "template is unknown" in west.log(), 10, "the acquire's log line")
    east = start("east", e_ns, "start", "--use-userspace", conf_text=USERSPACE)
    # both ends: west (the responder) lists its Child SA when it answers, east installs
    # its own only when that answer arrives, so a ping sent in between was lost
    wait_for(lambda: len(child_sas(west)) == 1 and len(child_sas(east)) == 1, 30,
             "east's tunnel at both ends")
    assert pings(w_ns, 3) == 3, west.log() + east.log()
    assert child_sas(west)[0]["out_packets"] >= 3
    assert east.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(west), 20, "west to see the delete")
    assert "routed-ondemand" in west.whack("--status").stdout
    assert pings(w_ns, 2) == 0  # the trap again, no leak
