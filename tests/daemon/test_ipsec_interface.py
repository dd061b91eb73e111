"""Route-based VPNs on the userspace plane: ``ipsec-interface=N`` is a TUN device ``ipsecN``.

Two of our daemons with ``--use-userspace`` in two namespaces (the ``pair`` of
test_userspace_capture).  Two conns share ``ipsec-interface=1``: pypluto makes
``ipsec1`` when the first Child SA is installed, puts ``interface-ip=`` on it and
installs no route; the operator routes the remote subnet onto ``ipsec1``.  Ping,
TCP and UDP pass, the wire carries only ESP, iptables counters and a DROP rule on
``ipsec1`` act on the tunnel's traffic (firewalling on the device works), and the
device goes with the last Child SA (down, delete, SIGTERM).  Bad values are
refused with file:line; the planes without ipsec-interface support refuse the conn.

west 192.0.2.1 (198.51.100.0/24) <-veth-> east 192.0.2.2 (203.0.113.0/24)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from plutoproc import NetNS, wait_for
from test_userspace_capture import (  # noqa: F401  (pair is a fixture)
    CLIENT,
    MARKER,
    SERVER,
    _plane_leftovers,
    _stop_capture,
    child_sas,
    pair,
)

from pypluto.config.parser import parse_config_text

pytestmark = pytest.mark.netns

CONF = """\
conn %default
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tauto=add
\tipsec-interface=yes
\tleftinterface-ip=198.51.100.9/32
\trightinterface-ip=203.0.113.9/32

conn a
\tleftsubnet=198.51.100.0/25
\trightsubnet=203.0.113.0/25
\tleftsourceip=198.51.100.77
\trightsourceip=203.0.113.77

conn b
\tleftsubnet=198.51.100.128/25
\trightsubnet=203.0.113.128/25
\tencapsulation=yes
"""


def has_link(ns: NetNS, name: str) -> bool:
    return ns.run("ip", "link", "show", "dev", name, check=False).returncode == 0


def _counter(ns: NetNS, chain: str) -> int:
    """Packets counted by the first rule of ``chain`` (iptables -v -x)."""
    out = ns.run("iptables", "-w", "-v", "-x", "-n", "-L", chain).stdout.splitlines()
    return int(out[2].split()[0])


def _ping(ns: NetNS, src: str, dst: str, count: int = 3) -> subprocess.CompletedProcess[str]:
    return ns.run("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-I", src, "-p",
                  MARKER[:16].hex(), dst, check=False)


def test_route_based_pair_shares_ipsec1_and_cleans_up(pair, tmp_path: Path) -> None:  # noqa: F811
    start, spawn, w_ns, e_ns, vw = pair
    w_ns.run("ip", "addr", "add", "198.51.100.129/32", "dev", "lo")
    e_ns.run("ip", "addr", "add", "203.0.113.129/32", "dev", "lo")
    east = start("east", e_ns, CONF)
    west = start("west", w_ns, CONF)
    assert not has_link(w_ns, "ipsec1") and not has_link(e_ns, "ipsec1")
    for conn in ("a", "b"):
        r = west.whack("--name", conn, "--initiate")
        assert r.returncode == 0, r.stdout + west.log()
    # ipsec1 on both ends, up, with the local end's interface-ip (and sourceip: no
    # route of ours carries it, so the device does)
    for ns, ips in ((w_ns, ("198.51.100.9/32", "198.51.100.77/32")),
                    (e_ns, ("203.0.113.9/32", "203.0.113.77/32"))):
        assert has_link(ns, "ipsec1")
        addrs = ns.run("ip", "-o", "addr", "show", "dev", "ipsec1").stdout
        assert all(f" {ip} " in addrs for ip in ips), addrs
    # route-based: pypluto routes nothing (no table 4500, no rule, no route to the peers)
    assert _plane_leftovers(w_ns) == "" and _plane_leftovers(e_ns) == ""
    for ns, far in ((w_ns, "203.0.113.1"), (e_ns, "198.51.100.1")):
        ours = [ln for ln in ns.run("ip", "-4", "route", "show", "table", "all").stdout
                .splitlines() if "ipsec1" in ln and "proto kernel" not in ln]
        assert ours == [], ours  # only the kernel's own routes (of the interface-ip)
        got = ns.run("ip", "route", "get", far, check=False)  # unreachable until routed
        assert got.returncode != 0 or "ipsec1" not in got.stdout, got.stdout
    # ... so the operator routes onto ipsec1, and firewalls on it
    w_ns.run("ip", "route", "add", "203.0.113.0/24", "dev", "ipsec1")
    e_ns.run("ip", "route", "add", "198.51.100.0/24", "dev", "ipsec1")
    w_ns.run("iptables", "-w", "-A", "OUTPUT", "-o", "ipsec1", "-p", "icmp")
    w_ns.run("iptables", "-w", "-A", "INPUT", "-i", "ipsec1", "-p", "icmp")

    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0", "-w", str(pcap))
    assert dump.stderr is not None
    assert "listening on" in dump.stderr.readline().decode()
    server = spawn(e_ns, sys.executable, "-c", SERVER, "203.0.113.1")
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    for src, dst in (("198.51.100.1", "203.0.113.1"), ("198.51.100.129", "203.0.113.129"),
                     ("198.51.100.9", "203.0.113.9"), ("198.51.100.77", "203.0.113.77")):
        ping = _ping(w_ns, src, dst)
        assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    client = w_ns.run(sys.executable, "-c", CLIENT, "198.51.100.1", "203.0.113.1",
                      MARKER.decode(), check=False)
    assert client.returncode == 0, client.stderr
    out, _err = server.communicate(timeout=30)
    assert b"tcp tcp:" + MARKER in out and b"udp udp:" + MARKER in out, out
    _stop_capture(dump, pcap)
    raw = pcap.read_bytes()
    assert MARKER not in raw and MARKER[:16] not in raw, "cleartext on the wire"
    esp = subprocess.run(["tcpdump", "-r", str(pcap), "-n",
                          "ip proto 50 or (udp port 4500 and udp[8:4] != 0)"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(esp) >= 18, "\n".join(esp)
    clear = subprocess.run(["tcpdump", "-r", str(pcap), "-n",
                            "icmp or tcp port 7001 or udp port 7002"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert clear == "", clear
    # the tunnel's packets crossed ipsec1: 9 echo requests out, 9 replies in
    assert _counter(w_ns, "OUTPUT") >= 9 and _counter(w_ns, "INPUT") >= 9
    # both conns carried traffic
    by_conn = {c["conn"]: c for c in child_sas(west)}
    assert by_conn["a"]["out_packets"] >= 6 and by_conn["b"]["out_packets"] >= 3, by_conn
    # a DROP rule on ipsec1 stops the tunnel's traffic; removing it lets it pass again
    e_ns.run("iptables", "-w", "-I", "INPUT", "-i", "ipsec1", "-p", "icmp", "-j", "DROP")
    assert _ping(w_ns, "198.51.100.1", "203.0.113.1", 2).returncode != 0
    e_ns.run("iptables", "-w", "-D", "INPUT", "-i", "ipsec1", "-p", "icmp", "-j", "DROP")
    assert _ping(w_ns, "198.51.100.1", "203.0.113.1", 2).returncode == 0

    # shared: b goes (its Child SA, in a's IKE SA), ipsec1 stays for a; a goes (delete),
    # ipsec1 goes on both ends
    assert west.whack("--name", "b", "--down").returncode == 0
    wait_for(lambda: [c["conn"] for c in child_sas(east)] == ["a"], 20,
             f"east to see b's delete: {child_sas(east)} {child_sas(west)}")
    assert has_link(w_ns, "ipsec1") and has_link(e_ns, "ipsec1")
    assert _ping(w_ns, "198.51.100.1", "203.0.113.1", 2).returncode == 0
    assert west.whack("--name", "a", "--delete").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see a's delete")
    wait_for(lambda: not has_link(w_ns, "ipsec1") and not has_link(e_ns, "ipsec1"), 10,
             "ipsec1 to go with the last Child SA")
    # again, then SIGTERM: nothing left (device, routes, rules) on either end
    assert west.whack("--name", "b", "--initiate").returncode == 0
    assert has_link(w_ns, "ipsec1") and has_link(e_ns, "ipsec1")
    assert west.proc is not None
    west.proc.send_signal(signal.SIGTERM)
    assert west.proc.wait(30) == 0
    wait_for(lambda: not child_sas(east), 20, "east to see west's deletes")
    wait_for(lambda: not has_link(e_ns, "ipsec1"), 10, "east's ipsec1 to go")
    assert not has_link(w_ns, "ipsec1")
    assert _plane_leftovers(w_ns) == "" and _plane_leftovers(e_ns) == ""
    east.stop()


def test_unmanaged_ipsec_interface_is_the_operators_device(pair, tmp_path: Path  # noqa: F811
                                                           ) -> None:
    """ipsec-interface-managed=no: pypluto attaches to the operator's (persistent) TUN
    device ipsec1 and leaves it there, without the address it added; with no device
    the Child SA is refused with the reason.  The updown script is told the device
    (PLUTO_VIRT_INTERFACE, PLUTO_XFRMI_ROUTE=yes, as Libreswan's)."""
    start, _spawn, w_ns, e_ns, _vw = pair
    events = tmp_path / "updown.log"
    script = tmp_path / "updown.sh"
    script.write_text("#!/bin/sh\necho \"$PLUTO_VERB $PLUTO_CONNECTION $PLUTO_VIRT_INTERFACE "
                      f"$PLUTO_XFRMI_ROUTE\" >> {events}\n")
    script.chmod(0o755)
    conf = CONF.replace("\tipsec-interface=yes\n", f"\tipsec-interface=yes\n\tupdown={script}\n")
    unmanaged = "config setup\n\tipsec-interface-managed=no\n\n" + conf
    east = start("east", e_ns, conf)
    west = start("west", w_ns, unmanaged)
    r = west.whack("--name", "a", "--initiate")
    assert r.returncode != 0, r.stdout
    assert "ipsec-interface-managed=no: the device ipsec1 does not exist" in \
        r.stdout + west.log()
    wait_for(lambda: not child_sas(west) and not child_sas(east), 20, "the refused Child SA")
    w_ns.run("ip", "tuntap", "add", "dev", "ipsec1", "mode", "tun")
    w_ns.run("ip", "link", "set", "ipsec1", "up")
    r = west.whack("--name", "a", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert " 198.51.100.9/32 " in w_ns.run("ip", "-o", "addr", "show", "dev", "ipsec1").stdout
    w_ns.run("ip", "route", "add", "203.0.113.0/25", "dev", "ipsec1")
    e_ns.run("ip", "route", "add", "198.51.100.0/25", "dev", "ipsec1")
    assert _ping(w_ns, "198.51.100.1", "203.0.113.1").returncode == 0, west.log()
    wait_for(lambda: events.exists() and "up-client a ipsec1 yes" in events.read_text(), 10,
             "updown to see ipsec1")
    assert west.whack("--name", "a", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert has_link(w_ns, "ipsec1"), "the operator's device must stay"
    assert "198.51.100.9" not in w_ns.run("ip", "-o", "addr", "show", "dev", "ipsec1").stdout
    wait_for(lambda: not has_link(e_ns, "ipsec1"), 10, "east's managed ipsec1 to go")
    west.stop()
    east.stop()
    assert has_link(w_ns, "ipsec1")
    w_ns.run("ip", "tuntap", "del", "dev", "ipsec1", "mode", "tun")


@pytest.mark.parametrize("plane", ["--use-none", "--use-xfrm"])
def test_other_planes_refuse_ipsec_interface_conns(make_pluto, tmp_path: Path,
                                                   plane: str) -> None:
    conf = tmp_path / "ipsec.conf"
    conf.write_text("conn plain\n\tauthby=secret\n\tleft=127.0.0.1\n\tleftid=@west\n"
                    "\tright=192.0.2.77\n\trightid=@east\n\tauto=add\n\n"
                    "conn routed\n\talso=plain\n\tipsec-interface=1\n")
    secrets = tmp_path / "ipsec.secrets"
    secrets.write_text('@west @east : PSK "xif-test-psk-0123456789abcdef0123"\n')
    secrets.chmod(0o600)
    p = make_pluto()
    log = p.dir / "log"
    p.start("--nofork", plane, "--logfile", str(log), "--config", str(conf),
            "--secretsfile", str(secrets))
    p.wait_ready()
    status = p.whack("--status").stdout
    if plane == "--use-xfrm" and kernel_has_xfrm_interfaces():
        # the XFRM plane makes XFRM interfaces where the kernel has them
        # (tests/espkernel/test_xfrmi_uml.py proves the traffic)
        assert '"routed":' in status
        p.stop()
        return
    assert '"plain":' in status and '"routed"' not in status
    if plane == "--use-xfrm":  # probed at start: `ip link add ... type xfrm` fails here
        assert ('"routed": ipsec-interface=1: the kernel has no XFRM interfaces (ip link add '
                "type xfrm: ") in log.read_text()
        assert "use the userspace data plane (--use-userspace): connection refused" \
            in log.read_text()
    else:
        assert ('"routed": ipsec-interface= needs the userspace data plane (--use-userspace), '
                "which gives each ipsecN its own TUN device; the none data plane has no "
                "XFRM interface support in pypluto") in log.read_text()
    assert p.whack("--name", "routed", "--initiate").returncode != 0
    p.stop()


def kernel_has_xfrm_interfaces() -> bool:
    """This kernel makes ``type xfrm`` links (tried in a throw-away namespace)."""
    ns = f"ppxfrmiprobe{os.getpid()}"
    if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
        return False
    try:
        return subprocess.run(["ip", "-n", ns, "link", "add", "x1", "type", "xfrm", "if_id",
                               "1"], capture_output=True).returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.mark.parametrize(("body", "line", "message"), [
    ("\tipsec-interface=0\n", 5, "ipsec-interface=0: the number must be from 1"),
    ("\tipsec-interface=abc\n", 5, "ipsec-interface=abc: expected yes, no or a number"),
    ("\tleftinterface-ip=198.51.100.9/32\n", 5,
     "leftinterface-ip= needs ipsec-interface="),
    ("\tipsec-interface=2\n\trightinterface-ip=203.0.113.9\n", 6,
     "rightinterface-ip=203.0.113.9: expected ADDRESS/PREFIX"),
])
def test_bad_values_are_refused_with_file_and_line(body: str, line: int, message: str) -> None:
    cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"
                            + body, "ipsec.conf")
    assert "c" not in cfg.conns
    got = [str(d) for d in cfg.diagnostics]
    assert any(d.startswith(f"ipsec.conf:{line}:") and message in d for d in got), got


def test_yes_is_ipsec1_and_no_is_none() -> None:
    base = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"
    for value, want in (("yes", 1), ("1", 1), ("42", 42), ("no", None)):
        cfg = parse_config_text(base + f"\tipsec-interface={value}\n", "f")
        assert cfg.conns["c"].ipsec_interface == want, value
