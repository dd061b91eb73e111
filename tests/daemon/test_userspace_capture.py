"""Protected means encrypted on the userspace plane (issue 12, item 0), proven on the wire.

Two of our daemons with ``--use-userspace`` in two namespaces; ``tcpdump -w``
records west's link while ping, a TCP payload and a UDP payload, each holding
a marker string, cross the Child SA.  For a subnet-to-subnet tunnel, a
host-to-host tunnel (the selectors are the two hosts themselves) and
``type=transport``: the traffic arrives, the capture holds ESP and never the
marker, and ``whack --trafficstatus`` counts the bytes.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from plutoproc import NetNS, Pluto, sh, wait_for
from testsupport import require

pytestmark = pytest.mark.netns
_n = itertools.count(1)

BASE = """\
conn west-east
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tauto=add
"""
SECRETS = '@west @east : PSK "capture-test-psk-0123456789abcdef012"\n'
MARKER = b"PYPLUTO-CLEARTEXT-MARKER-7f3a"

CONNS = {
    # name: (extra ipsec.conf lines, west's source, east's address for the traffic)
    "subnet-tunnel": ("\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"
                      "\tencapsulation=yes\n", "198.51.100.1", "203.0.113.1"),
    "host-to-host-tunnel": ("", "192.0.2.1", "192.0.2.2"),
    "host-to-host-tunnel-udp-encap": ("\tencapsulation=yes\n", "192.0.2.1", "192.0.2.2"),
    "transport": ("\ttype=transport\n", "192.0.2.1", "192.0.2.2"),
    "host-to-host-tunnel-ipv6": ("", "2001:db8::1", "2001:db8::2"),
    "transport-ipv6": ("\ttype=transport\n", "2001:db8::1", "2001:db8::2"),
}

SERVER = textwrap.dedent("""
    import socket, sys
    host = sys.argv[1]
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    t = socket.socket(fam); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((host, 7001)); t.listen(1)
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((host, 7002))
    print("ready", flush=True)
    t.settimeout(30); u.settimeout(30)
    c, _ = t.accept(); data = b""
    while True:
        b = c.recv(4096)
        if not b: break
        data += b
    print("tcp", data.decode(errors="replace"), flush=True)
    d, _ = u.recvfrom(4096)
    print("udp", d.decode(errors="replace"), flush=True)
""")

CLIENT = textwrap.dedent("""
    import socket, sys, time
    src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3].encode()
    s = socket.create_connection((dst, 7001), timeout=20, source_address=(src, 0))
    s.sendall(b"tcp:" + marker); s.close()
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((src, 0))
    for _ in range(3):  # the server reads the first; UDP may need a retry
        u.sendto(b"udp:" + marker, (dst, 7002)); time.sleep(0.3)
""")


@pytest.fixture
def pair(tmp_path: Path, make_pluto, netns: NetNS) -> Iterator:
    require(shutil.which("tcpdump") is not None, "tcpdump")
    require(os.path.exists("/dev/net/tun"), "/dev/net/tun")
    east_ns = NetNS()
    n = next(_n)
    vw, ve = f"pcw{os.getpid()}{n}"[:15], f"pce{os.getpid()}{n}"[:15]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        sh("ip", "link", "add", vw, "netns", netns.name, "type", "veth", "peer", "name", ve,
           "netns", east_ns.name)
        netns.run("ip", "addr", "add", "192.0.2.1/24", "dev", vw)
        netns.run("ip", "link", "set", vw, "up")
        east_ns.run("ip", "addr", "add", "192.0.2.2/24", "dev", ve)
        east_ns.run("ip", "link", "set", ve, "up")
        netns.run("ip", "addr", "add", "198.51.100.1/32", "dev", "lo")
        east_ns.run("ip", "addr", "add", "203.0.113.1/32", "dev", "lo")
        netns.run("ip", "-6", "addr", "add", "2001:db8::1/64", "dev", vw, "nodad")
        east_ns.run("ip", "-6", "addr", "add", "2001:db8::2/64", "dev", ve, "nodad")
        secrets = tmp_path / "ipsec.secrets"
        secrets.write_text(SECRETS)
        secrets.chmod(0o600)

        def start(side: str, ns: NetNS, conf_text: str) -> Pluto:
            conf = tmp_path / f"{side}.conf"
            conf.write_text(conf_text)
            p = make_pluto(side, ns)
            p.start("--nofork", "--logfile", str(p.dir / "log"), "--config", str(conf),
                    "--secretsfile", str(secrets), "--use-userspace")
            p.wait_ready()
            return p

        def spawn(ns: NetNS, *args: str) -> subprocess.Popen[bytes]:
            p = subprocess.Popen(["ip", "netns", "exec", ns.name, *args],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            procs.append(p)
            return p

        yield start, spawn, netns, east_ns, vw
    finally:
        for p in procs:  # only what this test started, by PID
            if p.poll() is None:
                p.kill()
                p.wait(10)
        east_ns.delete()


SUBNETS = "\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"


def esp_lengths(pcap: Path, src: str) -> list[int]:
    """The ESP lengths tcpdump reports for plain ESP packets from ``src``."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "ip proto 50"],
                         capture_output=True, text=True, check=True).stdout
    return [int(m.group(1)) for ln in out.splitlines() if f" {src} > " in ln
            for m in [re.search(r"length (\d+)", ln)] if m]


def up_and_capturing(pair: tuple, tmp_path: Path, west_conf: str,  # type: ignore[type-arg]
                     east_conf: str) -> tuple[Pluto, Pluto, subprocess.Popen[bytes], Path]:
    """Both daemons of ``pair`` with these confs, west's Child SA up, and tcpdump
    writing west's veth to a pcap: (west, east, tcpdump, pcap)."""
    start, spawn, w_ns, e_ns, vw = pair
    east = start("east", e_ns, east_conf)
    west = start("west", w_ns, west_conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1
    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0",
                 "-w", str(pcap))
    assert dump.stderr is not None
    assert "listening on" in dump.stderr.readline().decode()
    return west, east, dump, pcap


def ping_east(w_ns: NetNS, wait: int = 2) -> subprocess.CompletedProcess[str]:
    """Three 84-byte pings from west's inner address to east's."""
    return w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", str(wait), "-s", "56",
                    "-I", "198.51.100.1", "203.0.113.1", check=False)


def _stop_capture(dump: subprocess.Popen[bytes], pcap: Path, min_bytes: int = 1000) -> None:
    """Let tcpdump write what it has seen (-U: per packet), then stop it (SIGINT).
    ``min_bytes``: the capture is that large first (a caller that has already counted
    its packets in it passes less: three lone ESP packets make about 600 bytes)."""
    wait_for(lambda: pcap.exists() and pcap.stat().st_size > min_bytes, 10,
             "packets in the capture")
    dump.send_signal(signal.SIGINT)
    dump.wait(10)


def child_sas(p: Pluto) -> list[dict]:
    return json.loads(p.whack("--trafficstatus", "--json").stdout)["child_sas"]


def _plane_leftovers(ns: NetNS) -> str:
    """Rules and tables of the plane still present (empty when it cleaned up)."""
    rules = [ln for ln in ns.run("ip", "rule").stdout.splitlines()
             if "lookup 4500" in ln or "0x4500" in ln or "lookup 70036" in ln]
    routes = ns.run("ip", "route", "show", "table", "4500", check=False).stdout.strip()
    sel = ns.run("ip", "route", "show", "table", "70036", check=False).stdout.strip()
    return "\n".join(rules + [routes, sel]).strip()


@pytest.mark.parametrize("kind", list(CONNS))
def test_traffic_is_encrypted_on_the_wire(pair, tmp_path: Path, kind: str) -> None:
    start, spawn, w_ns, e_ns, vw = pair
    extra, src, dst = CONNS[kind]
    conf = BASE + extra
    if ":" in dst:
        conf = conf.replace("left=192.0.2.1", "left=2001:db8::1").replace(
            "right=192.0.2.2", "right=2001:db8::2")
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert "established Child SA" in r.stdout

    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0", "-w", str(pcap))
    assert dump.stderr is not None
    line = dump.stderr.readline().decode()
    assert "listening on" in line, line

    server = spawn(e_ns, sys.executable, "-c", SERVER, dst)
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    ping = w_ns.run("ping", *(["-6"] if ":" in dst else []), "-c", "3", "-i", "0.2", "-W", "2", "-I", src, "-p",
                    MARKER[:16].hex(), dst, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    client = w_ns.run(sys.executable, "-c", CLIENT, src, dst, MARKER.decode(), check=False)
    assert client.returncode == 0, client.stderr
    out, _err = server.communicate(timeout=30)
    assert b"tcp tcp:" + MARKER in out and b"udp udp:" + MARKER in out, out

    _stop_capture(dump, pcap)
    raw = pcap.read_bytes()
    assert MARKER not in raw and MARKER[:16] not in raw, "cleartext marker on the wire"
    esp = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-n",
         "ip proto 50 or ip6 proto 50 or (ip and udp port 4500 and udp[8:4] != 0)"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    # 3 pings each way, the TCP handshake, payload and close, the UDP datagrams
    assert len(esp) >= 12, "\n".join(esp)
    clear = subprocess.run(
        ["tcpdump", "-r", str(pcap), "-n",
         "icmp or (icmp6 and (ip6[40] == 128 or ip6[40] == 129)) or (tcp port 7001) or (udp port 7002)"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert clear == "", clear
    assert "is the peer itself" not in west.log() + east.log()

    wait_for(lambda: child_sas(west) and child_sas(west)[0]["out_bytes"] > 0, 10,
             "west's out counter")
    w, e = child_sas(west)[0], child_sas(east)[0]
    assert w["out_packets"] >= 6 and w["in_packets"] >= 3, w
    assert e["in_packets"] >= 6 and e["out_packets"] >= 3, e
    for row in (w, e):  # the per-SA drop counters are shown (issue 12 item 1)
        assert (row["replay_drops"], row["integrity_failures"], row["selector_drops"]) == \
            (0, 0, 0), row
    assert re.search(r'#\d+: "west-east" dropped: replay=0 integrity=0 selector=0',
                     west.whack("--status").stdout)

    # IKE itself still goes around the TUN device (the socket mark)
    assert west.whack("--name", "west-east", "--rekey-child").returncode == 0
    # deleting the Child SA removes its rules and routes at once (not only at shutdown)
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(west) and not child_sas(east), 20, "the SAs to go")
    assert _plane_leftovers(w_ns) == "" and _plane_leftovers(e_ns) == ""
    west.stop()
    east.stop()
    assert _plane_leftovers(w_ns) == "" and _plane_leftovers(e_ns) == ""


def test_a_policy_the_plane_cannot_install_fails_the_child_sa(pair) -> None:
    """The plane refuses a policy (here its capture rule collides with one already
    there): whack --initiate fails with the reason, no Child SA is reported
    established, and the engine deletes it on both ends."""
    start, _spawn, w_ns, e_ns, _vw = pair
    conf = BASE + "\tleftprotoport=udp\n\trightprotoport=udp/5353\n"
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf)
    # the very rule west's plane will want, put there by someone else
    w_ns.run("ip", "rule", "add", "priority", "4499", "to", "192.0.2.2/32", "ipproto", "17",
             "dport", "5353", "table", "70036")
    try:
        r = west.whack("--name", "west-east", "--initiate")
        assert r.returncode != 0, r.stdout + w_ns.run("ip", "rule").stdout
        assert "Child SA not installed" in r.stdout, r.stdout
        assert "File exists" in r.stdout or "File exists" in west.log()
        assert not re.search(r"established Child SA", r.stdout), r.stdout
        wait_for(lambda: not child_sas(west) and not child_sas(east), 20,
                 "the refused Child SA to be deleted on both ends")
        assert "kernel: AddPolicy failed" in west.log()
    finally:
        w_ns.run("ip", "rule", "del", "priority", "4499", "table", "70036", check=False)
    west.stop()
    east.stop()


UDP_ONLY_SERVER = textwrap.dedent("""
    import socket, sys
    host = sys.argv[1]
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind((host, 7001)); t.listen(1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((host, 5353))
    print("ready", flush=True)
    t.settimeout(30); u.settimeout(30)
    c, _ = t.accept(); data = b""
    while True:
        b = c.recv(4096)
        if not b: break
        data += b
    print("tcp", data.decode(errors="replace"), flush=True)
    d, _ = u.recvfrom(4096)
    print("udp", d.decode(errors="replace"), flush=True)
""")

UDP_ONLY_CLIENT = textwrap.dedent("""
    import socket, sys, time
    src, dst, marker = sys.argv[1], sys.argv[2], sys.argv[3]
    s = socket.create_connection((dst, 7001), timeout=20, source_address=(src, 0))
    s.sendall(b"tcp:clear-by-design"); s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0))
    # once: a second datagram after the server closed would make east answer with an
    # ICMP port unreachable, outside udp/5353 and so in clear, quoting the payload
    u.sendto(b"udp:" + marker.encode(), (dst, 5353))
""")


def test_protoport_selects_what_is_encrypted(pair, tmp_path: Path) -> None:
    """leftprotoport=udp / rightprotoport=udp/5353 host to host: UDP to 5353 goes in
    ESP (the capture rule carries protocol and port), other traffic to the peer keeps
    its usual path, as an XFRM policy for udp/5353 would leave it."""
    start, spawn, w_ns, e_ns, vw = pair
    conf = BASE + "\tleftprotoport=udp\n\trightprotoport=udp/5353\n"
    east = start("east", e_ns, conf)
    west = start("west", w_ns, conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert "192.0.2.2/32/17/5353" in r.stdout
    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0", "-w", str(pcap))
    assert dump.stderr is not None and "listening on" in dump.stderr.readline().decode()
    server = spawn(e_ns, sys.executable, "-c", UDP_ONLY_SERVER, "192.0.2.2")
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    client = w_ns.run(sys.executable, "-c", UDP_ONLY_CLIENT, "192.0.2.1", "192.0.2.2",
                      MARKER.decode(), check=False)
    assert client.returncode == 0, client.stderr
    out, _err = server.communicate(timeout=30)
    assert b"udp udp:" + MARKER in out and b"tcp tcp:clear-by-design" in out, out
    _stop_capture(dump, pcap)
    raw = pcap.read_bytes()
    assert MARKER not in raw  # the protected UDP never in clear
    assert b"clear-by-design" in raw  # TCP is outside the selectors: not captured
    wait_for(lambda: child_sas(west) and child_sas(west)[0]["out_packets"] >= 1, 10,
             "west's out counter")
    assert child_sas(east)[0]["in_packets"] >= 1
    west.stop()
    east.stop()
    assert _plane_leftovers(w_ns) == "" and _plane_leftovers(e_ns) == ""
