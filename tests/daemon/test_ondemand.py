"""On-demand tunnels between two of our daemons on the userspace plane (issue 16).

west 192.0.2.1 (198.51.100.0/24, ``auto=route``) <-veth-> east 192.0.2.2 (203.0.113.0/24):
the first ping brings the tunnel up; with ``negotiationshunt=hold`` (the default)
no ping is lost while it negotiates.  ``ipsec down`` leaves the trap, the next
ping brings it up again; ``ipsec unroute``, ``ipsec delete`` and SIGTERM leave
nothing behind.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest
from plutoproc import NetNS, Pluto, run_main, wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401 - the fixture

pytestmark = pytest.mark.netns

USERSPACE = CONF + "\tencapsulation=yes\n"
TABLE = "4500"  # the userspace plane's routing table (kernel/userspace/routes.py)


def _addrs(w_ns: NetNS, e_ns: NetNS) -> None:
    for ns, addr in ((w_ns, "198.51.100.1/32"), (e_ns, "203.0.113.1/32")):
        ns.run("ip", "addr", "add", addr, "dev", "lo")


def ping(ns: NetNS, count: int = 5) -> tuple[int, int, str]:
    """(transmitted, received, output) of ``count`` pings west -> east's subnet."""
    r = ns.run("ping", "-c", str(count), "-i", "0.3", "-W", "5", "-I", "198.51.100.1",
               "203.0.113.1", check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1)), int(m.group(2)), r.stdout


def routes_in_plane(ns: NetNS) -> str:
    """What the userspace plane installed: its table's routes and its rules."""
    table = ns.run("ip", "route", "show", "table", TABLE, check=False).stdout
    rules = "\n".join(line for line in ns.run("ip", "rule", "show").stdout.splitlines()
                      if f"lookup {TABLE}" in line)
    return table + rules


def ipsec(p: Pluto, cmd: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_main("pypluto.cli.ipsec", [cmd, "--rundir", str(p.rundir), *args])


def connection(p: Pluto) -> dict:
    data = json.loads(p.whack("--status", "--json").stdout)
    return next(c for c in data["connections"] if c["name"] == "west-east")


def test_route_first_ping_brings_it_up_without_loss(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    east = start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    west = start("west", w_ns, "route", "--use-userspace", conf_text=USERSPACE)
    assert not child_sas(west)
    assert "routed-ondemand" in west.whack("--status").stdout
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    sent, got, out = ping(w_ns)
    assert (sent, got) == (5, 5), out + west.log() + east.log()
    assert len(child_sas(west)) == 1 and len(child_sas(east)) == 1
    assert "initiating on demand: acquire for 198.51.100.1" in west.log()
    # down: the SAs go, the trap stays; the next ping brings it up again, again lossless
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert "routed-ondemand" in west.whack("--status").stdout
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    sent, got, out = ping(w_ns, 3)
    assert (sent, got) == (3, 3), out + west.log()
    wait_for(lambda: len(child_sas(west)) == 1, 10, "the second on-demand Child SA")
    # unroute: the trap goes, the SA stays up; down then leaves nothing
    r = ipsec(west, "unroute", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert routes_in_plane(w_ns) == ""
    assert "unrouted" in west.whack("--status").stdout
    sent, got, _out = ping(w_ns, 1)
    assert got == 0 and not child_sas(west)  # nothing captures it any more
    # ipsec route puts the trap back
    r = ipsec(west, "route", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    sent, got, out = ping(w_ns, 3)
    assert got == 3, out + west.log()
    # delete: SAs, trap, routes and rules all go
    r = ipsec(west, "delete", "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert routes_in_plane(w_ns) == ""
    assert not child_sas(west)


def test_sigterm_of_a_routed_conn_leaves_nothing(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    west = start("west", w_ns, "ondemand", "--use-userspace", conf_text=USERSPACE)
    assert "203.0.113.0/24" in routes_in_plane(w_ns)
    assert ping(w_ns, 2)[1] == 2
    assert west.proc is not None
    west.proc.send_signal(signal.SIGTERM)
    assert west.proc.wait(30) == 0
    assert routes_in_plane(w_ns) == ""
    assert "ipsec" not in w_ns.run("ip", "-o", "link").stdout


def test_ipsec_ondemand_adds_and_routes_and_bad_routes_refused(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    start("east", e_ns, "add", "--use-userspace", conf_text=USERSPACE)
    conf = USERSPACE.replace("auto={auto}", "auto=ignore") + (
        "\nconn anyone\n\tauthby=secret\n\tleft=192.0.2.1\n\tright=%any\n\tauto=add\n")
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    r = ipsec(west, "ondemand", "--config", str(west.dir.parent / "west.conf"), "west-east")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "routed-ondemand" in west.whack("--status").stdout
    assert ping(w_ns, 3)[1] == 3
    r = west.whack("--name", "anyone", "--route")
    assert r.returncode == 25 and "without a peer address" in r.stdout + r.stderr


SHUNTS = """
conn pass
\tleft=192.0.2.1
\tleftsubnet=198.51.100.0/24
\tright=192.0.2.2
\trightsubnet=203.0.113.5/32
\ttype=passthrough
\tauthby=never
\tauto=route

conn block
\tleft=192.0.2.1
\tleftsubnet=198.51.100.0/24
\tright=192.0.2.2
\trightsubnet=203.0.113.6/32
\ttype=drop
\tauto=route

conn rej
\tleft=192.0.2.1
\tleftsubnet=198.51.100.0/24
\tright=192.0.2.2
\trightsubnet=203.0.113.7/32
\ttype=reject
\tleftauth=never
\trightauth=never
\tauto=route
"""


def _tcp(ns: NetNS, src: str, dst: str, port: int, server_ns: NetNS) -> bool:
    """One TCP connection ``src`` -> ``dst``:``port`` with a line each way."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", server_ns.name, sys.executable, "-c",
         "import socket,sys;s=socket.socket();s.setsockopt(1,2,1);"
         f"s.bind(('{dst}',{port}));s.listen();print('ready',flush=True);"
         "c,_=s.accept();c.sendall(c.recv(100)+b'!');c.close()"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        r = ns.run(sys.executable, "-c",
                   "import socket;s=socket.create_connection("
                   f"('{dst}',{port}),timeout=5,source_address=('{src}',0));"
                   "s.sendall(b'hi');print(s.recv(100).decode())", check=False)
        return r.returncode == 0 and r.stdout.strip() == "hi!"
    finally:
        server.kill()
        server.wait()


def test_shunts_inside_a_routed_subnet(pair):  # noqa: F811
    """A passthrough /32 inside the tunnels' /24 goes in the clear both ways (ping and TCP);
    a drop /32 is discarded, a reject /32 answered with ICMP unreachable; the rest of
    the /24 still brings the tunnel up.  Shunts never negotiate anything (two of them
    say so with authby=never / leftauth=never, as Libreswan's baseconfigs write it)."""
    start, w_ns, e_ns = pair
    _addrs(w_ns, e_ns)
    for a in ("203.0.113.5", "203.0.113.6", "203.0.113.7"):
        e_ns.run("ip", "addr", "add", f"{a}/32", "dev", "lo")
    # the clear path (what passthrough traffic takes): plain routes via the veth
    w_ns.run("ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.2")
    e_ns.run("ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1")
    conf = USERSPACE + SHUNTS
    east = start("east", e_ns, "route", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "route", "--use-userspace", conf_text=conf)
    for p in (west, east):
        st = p.whack("--status").stdout
        assert '"pass":' in st and '"block":' in st and '"rej":' in st, st
    # passthrough, west -> east and east -> west, ping and TCP: in the clear, no SA
    sent, got = ping_from(w_ns, "198.51.100.1", "203.0.113.5")
    assert got == sent == 3, west.log()
    sent, got = ping_from(e_ns, "203.0.113.5", "198.51.100.1")
    assert got == sent == 3, east.log()
    assert _tcp(w_ns, "198.51.100.1", "203.0.113.5", 7001, e_ns)
    assert _tcp(e_ns, "203.0.113.5", "198.51.100.1", 7002, w_ns)
    assert not child_sas(west) and not child_sas(east)
    # drop: nothing answers, nothing is negotiated
    sent, got = ping_from(w_ns, "198.51.100.1", "203.0.113.6", count=2)
    assert got == 0 and not child_sas(west)
    # reject: ICMP administratively prohibited at once
    r = w_ns.run("ping", "-c", "1", "-W", "2", "-I", "198.51.100.1", "203.0.113.7",
                 check=False)
    assert r.returncode != 0 and "Packet filtered" in r.stdout, r.stdout + r.stderr  # code 13
    assert not child_sas(west)
    # the rest of the /24 still traps and goes through the tunnel, none lost
    sent, got, out = ping(w_ns)
    assert (sent, got) == (5, 5), out + west.log()
    assert len(child_sas(west)) == 1
    # SIGTERM: no rule, no route left (shunts included)
    for p in (west, east):
        assert p.proc is not None
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(30) == 0
    for ns in (w_ns, e_ns):
        rules = ns.run("ip", "rule", "show").stdout
        assert not re.search(r"^449[89]:|^4500:", rules, re.M), rules
        assert routes_in_plane(ns) == ""


def ping_from(ns: NetNS, src: str, dst: str, count: int = 3) -> tuple[int, int]:
    r = ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I", src, dst, check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    assert m, r.stdout + r.stderr
    return int(m.group(1)), int(m.group(2))


HOST = """\
conn west-east
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\ttype=transport
\tencapsulation=yes
\tauto={auto}
"""


def test_transport_host_to_host_trap(pair):  # noqa: F811
    """A host-to-host transport-mode trap: the first ping to the peer itself brings it up
    (IKE and ESP bypass the trap on their marked sockets), none lost."""
    start, w_ns, e_ns = pair
    east = start("east", e_ns, "add", "--use-userspace", conf_text=HOST)
    west = start("west", w_ns, "route", "--use-userspace", conf_text=HOST)
    r = w_ns.run("ping", "-c", "5", "-i", "0.3", "-W", "5", "192.0.2.2", check=False)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", r.stdout)
    assert m and m.groups() == ("5", "5"), r.stdout + west.log() + east.log()
    ws = json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"][0]["children"]
    assert len(ws) == 1 and ws[0]["mode"] == "transport", ws
    assert child_sas(east)[0]["in_packets"] >= 5
