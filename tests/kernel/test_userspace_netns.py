"""The userspace plane for real: two namespaces, hand-keyed SAs, traffic through the TUN devices."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
from testsupport import REPO

sys.path.insert(0, str(REPO))
from bench import esp_lab  # noqa: E402
from bench.esp_lab import EAST_HOST, EAST_OUTER, WEST_HOST, WEST_OUTER, Lab  # noqa: E402
from pypluto.crypto.registry import Encr, Integ  # noqa: E402

pytestmark = pytest.mark.netns


def _no_leftovers(lab: Lab, ns: str, ifname: str) -> None:
    links = lab.exec(ns, "ip", "-o", "link").stdout
    assert ifname not in links
    assert lab.exec(ns, "ip", "route", "show", "table", "4500").stdout.strip() == ""
    rules = lab.exec(ns, "ip", "rule").stdout
    assert "lookup 4500" not in rules and "fwmark 0x4500" not in rules
    assert "lookup 70036" not in rules
    assert ifname not in lab.exec(ns, "ip", "route", "show", "table", "all").stdout


RECEIVER = textwrap.dedent("""
    import hashlib, socket, sys
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], 5001)); s.listen(1); print("listening", flush=True)
    c, _ = s.accept(); h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(65536)
        if not b: break
        h.update(b); n += len(b)
    print(n, h.hexdigest(), flush=True)
""")


def _tcp_transfer(lab: Lab, host: str, size: int) -> None:
    """``size`` random bytes from west to ``host`` in east over TCP, checked by SHA-256."""
    recv = lab.spawn(lab.east, sys.executable, "-c", RECEIVER, host, stdout=subprocess.PIPE)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    data = os.urandom(size)
    sender = textwrap.dedent(f"""
        import socket, sys
        data = sys.stdin.buffer.read()
        s = socket.create_connection(("{host}", 5001), timeout=30)
        s.sendall(data); s.close()
    """)
    r = subprocess.run(["ip", "netns", "exec", lab.west, sys.executable, "-c", sender],
                       input=data, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    n, digest = recv.stdout.readline().split()
    assert int(n) == len(data) and digest == hashlib.sha256(data).hexdigest()
    recv.wait(timeout=10)


@pytest.mark.parametrize(
    "alg",
    [(Encr.AES_GCM_16, 36, 0, 0), (Encr.AES_CBC, 16, Integ.HMAC_SHA2_256_128, 32)],
    ids=["aes_gcm256", "aes_cbc-sha2_256"],
)
def test_ping_and_tcp_through_the_tunnel(lab: Lab, alg: tuple[int, int, int, int]) -> None:
    west_cfg, east_cfg = esp_lab.handkeyed(*alg)
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    routes = lab.exec(lab.west, "ip", "route", "show", "table", "4500").stdout
    assert f"203.0.113.0/24 dev {west_cfg['ifname']}" in routes and "src 198.51.100.1" in routes
    rules = lab.exec(lab.west, "ip", "rule").stdout
    assert "fwmark 0x4500 lookup main" in rules  # our own IKE/ESP packets are never captured

    ping = lab.exec(lab.west, "ping", "-c", "3", "-i", "0.2", "-W", "2", EAST_HOST, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    _tcp_transfer(lab, EAST_HOST, 1 << 20)

    ws, es = west.stats(), east.stats()
    out_w, in_e = ws["sas"][str(0x1001)], es["sas"][str(0x1001)]
    assert out_w["packets"] >= 3 + (1 << 20) // 1400 and out_w["bytes"] > 1 << 20
    assert in_e["packets"] >= out_w["packets"] * 0.99  # nothing dropped but maybe in flight
    assert in_e["integrity_failures"] == 0 and in_e["replay_drops"] == 0
    assert es["sas"][str(0x2002)]["packets"] > 0 and ws["sas"][str(0x2002)]["packets"] > 0

    # the peer's own address is never captured: plain traffic to it still works
    before = west.stats()["sas"][str(0x1001)]["packets"]
    lab.exec(lab.west, "ping", "-c", "4", "-i", "0.2", "-W", "2", EAST_OUTER)
    assert west.stats()["sas"][str(0x1001)]["packets"] - before < 4  # (a late TCP ACK or so)

    assert west.ask("flush") == "ok"
    assert lab.exec(lab.west, "ip", "route", "show", "table", "4500").stdout.strip() == ""
    west.close()
    east.close()
    _no_leftovers(lab, lab.west, west_cfg["ifname"])
    _no_leftovers(lab, lab.east, east_cfg["ifname"])


def test_bad_datagrams_on_4500_are_counted_and_dropped(lab: Lab) -> None:
    west_cfg, east_cfg = esp_lab.handkeyed()
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    blast = textwrap.dedent(f"""
        import os, socket, struct
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{EAST_OUTER}", 4501))
        to = ("{WEST_OUTER}", 4500)
        s.sendto(b"\\xff", to)                                 # NAT keepalive
        s.sendto(b"\\x00\\x00\\x00\\x00" + b"IKE!" * 10, to)    # non-ESP marker: IKE
        s.sendto(struct.pack("!II", 0xdead, 1) + os.urandom(60), to)   # unknown SPI
        for i in range(20):                                    # known SPI, forged
            s.sendto(struct.pack("!II", 0x2002, i + 1) + os.urandom(40 + i), to)
        s.sendto(b"\\x00\\x00\\x20", to)                         # runt
    """)
    lab.exec(lab.east, sys.executable, "-c", blast)
    assert esp_lab.wait_for(lambda: west.stats()["plane"]["malformed"] >= 1)
    st = west.stats()
    assert st["plane"]["keepalives"] == 1
    assert st["ike"] == 1 and st["plane"]["ike_delivered"] == 1
    assert st["plane"]["unknown_spi"] == 1
    assert st["sas"][str(0x2002)]["integrity_failures"] == 20
    assert st["sas"][str(0x2002)]["packets"] == 0
    # and the plane still works afterwards
    ping = lab.exec(lab.west, "ping", "-c", "2", "-i", "0.2", "-W", "2", EAST_HOST, check=False)
    assert ping.returncode == 0
    assert west.stats()["sas"][str(0x2002)]["packets"] == 2
    west.close()
    east.close()
    _no_leftovers(lab, lab.west, west_cfg["ifname"])


def test_ipv6_inner_over_ipv4_outer(lab: Lab) -> None:
    """IPv6 selectors through an IPv4 ESP-in-UDP tunnel (RFC 4303 §3.1.2, next header 41)."""
    w6, e6 = "2001:db8:1::1", "2001:db8:2::1"
    lab.exec(lab.west, "ip", "-6", "addr", "add", f"{w6}/128", "dev", "lo")
    lab.exec(lab.east, "ip", "-6", "addr", "add", f"{e6}/128", "dev", "lo")
    west_cfg, east_cfg = esp_lab.handkeyed(Encr.CHACHA20_POLY1305, 36)
    for cfg, (lnet, rnet) in ((west_cfg, ("2001:db8:1::/48", "2001:db8:2::/48")),
                              (east_cfg, ("2001:db8:2::/48", "2001:db8:1::/48"))):
        for sa in cfg["sas"]:
            sa["local_ts"], sa["remote_ts"] = [lnet], [rnet]
        for p in cfg["policies"]:
            if p["direction"] == "out":
                p["src"], p["dst"] = lnet, rnet
            else:
                p["src"], p["dst"] = rnet, lnet
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    ping = lab.exec(lab.west, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", e6, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert east.stats()["sas"][str(0x1001)]["packets"] >= 2
    _tcp_transfer(lab, e6, 1 << 20)  # TCP segmentation / coalescing with IPv6 headers
    west.close()
    east.close()
    assert lab.exec(lab.west, "ip", "-6", "route", "show", "table", "4500").stdout.strip() == ""


def test_plain_esp_without_udp_encapsulation(lab: Lab) -> None:
    """SAs without encap ports use IP protocol 50 on a raw socket (RFC 4303 §2)."""
    west_cfg, east_cfg = esp_lab.handkeyed()
    for cfg in (west_cfg, east_cfg):
        for sa in cfg["sas"]:
            sa["encap_sport"] = sa["encap_dport"] = None
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    ping = lab.exec(lab.west, "ping", "-c", "2", "-i", "0.2", "-W", "2", EAST_HOST, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    st = east.stats()
    assert st["sas"][str(0x1001)]["packets"] >= 2
    assert st["plane"]["udp_datagrams"] == 0  # nothing came over UDP
    west.close()
    east.close()
    _no_leftovers(lab, lab.west, west_cfg["ifname"])


def test_del_policy_and_del_sa_remove_routes_and_state(lab: Lab) -> None:
    west_cfg, east_cfg = esp_lab.handkeyed()
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    assert lab.exec(lab.west, "ping", "-c", "1", "-W", "2", EAST_HOST, check=False).returncode == 0
    assert east.ask("del-sas") == "ok"  # east forgets its SAs: west's ESP now has unknown SPIs
    lab.exec(lab.west, "ping", "-c", "2", "-i", "0.2", "-W", "1", EAST_HOST, check=False)
    assert esp_lab.wait_for(lambda: east.stats()["plane"]["unknown_spi"] >= 2)
    assert east.stats()["sas"][str(0x1001)] is None
    assert west.ask("del-policies") == "ok"
    assert lab.exec(lab.west, "ip", "route", "show", "table", "4500").stdout.strip() == ""
    rules = lab.exec(lab.west, "ip", "rule").stdout  # the last policy took its rules along
    assert "lookup 4500" not in rules and "fwmark 0x4500" not in rules, rules
    assert west.stats()["sas"][str(0x1001)]["packets"] >= 3
    west.close()
    east.close()
    _no_leftovers(lab, lab.west, west_cfg["ifname"])
    _no_leftovers(lab, lab.east, east_cfg["ifname"])


CLOSED_SOCKET = textwrap.dedent("""
    import socket, sys, time
    from pypluto.kernel.userspace import UserspaceBackend
    be = UserspaceBackend(sys.argv[1], table=4501, rule_priority=4501)
    got = []
    socks = []
    for port in (4500, 4501):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port)); s.setblocking(False); socks.append(s)
        be.attach_nat_socket(s, ("127.0.0.1", port), lambda d, a: got.append(d))
    socks[0].close()                       # the daemon closes one without telling us
    end = time.monotonic() + 10
    while be.attached_sockets != 1 and time.monotonic() < end:
        time.sleep(0.05)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"\\0\\0\\0\\0ike", ("127.0.0.1", 4501))
    while not got and time.monotonic() < end:
        time.sleep(0.05)
    print(be.attached_sockets, got)
    be.flush_own(); be.close()
""")


def test_closed_daemon_socket_is_dropped(lab: Lab) -> None:
    """A socket the daemon closes stops being polled; the others keep working."""
    r = lab.exec(lab.west, sys.executable, "-c", CLOSED_SOCKET, f"ppc{os.getpid()}")
    assert r.stdout.strip() == "1 [b'ike']", r.stdout + r.stderr


UDP_LISTEN = textwrap.dedent("""
    import socket, sys
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((sys.argv[1], int(sys.argv[2]))); u.settimeout(30)
    print("ready", flush=True)
    d, _ = u.recvfrom(4096)
    print(d.decode(), flush=True)
""")

SEND_OTHERS = textwrap.dedent("""
    import socket, sys
    src, dst = sys.argv[1], sys.argv[2]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0))
    u.sendto(b"to-9999", (dst, 9999)); u.sendto(b"to-9999", (dst, 9999))
    t = socket.socket(); t.bind((src, 0)); t.settimeout(1)
    try:
        t.connect((dst, 22))
        print("tcp-connected")
    except OSError:
        print("tcp-refused-or-timeout")
    u.sendto(b"to-5353", (dst, 5353))
""")


def test_inbound_esp_outside_the_selectors_is_dropped_and_counted(lab: Lab) -> None:
    """Issue 12 item 1, the port check with hand-keyed ESP: west's SA is for
    198.51.100.0/24/udp/5353 (RFC 4301 §5.2 step 4).  East, a peer that encrypts
    correctly whatever it likes, sends ICMP, TCP to port 22 and UDP to 9999: all
    dropped by west and counted per SA; UDP to 5353 passes."""
    west_cfg, east_cfg = esp_lab.handkeyed()
    for sa in west_cfg["sas"]:  # west negotiated only udp/5353 on its side
        sa["local_ts"] = ["198.51.100.0/24/udp/5353"]
        sa["remote_ts"] = ["203.0.113.0/24/udp"]
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)  # east's selectors: any protocol, any port
    listener = lab.spawn(lab.west, sys.executable, "-c", UDP_LISTEN, WEST_HOST, "5353",
                         stdout=subprocess.PIPE)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"

    ping = lab.exec(lab.east, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", EAST_HOST,
                    WEST_HOST, check=False)
    assert ping.returncode != 0  # the echo requests never reach west's stack
    r = lab.exec(lab.east, sys.executable, "-c", SEND_OTHERS, EAST_HOST, WEST_HOST)
    assert "tcp-connected" not in r.stdout
    assert listener.stdout.readline().strip() == "to-5353"
    listener.wait(timeout=10)

    sent = east.stats()["sas"][str(0x2002)]
    got = west.stats()["sas"][str(0x2002)]
    # 2 echo requests + 2 UDP to 9999 + at least one TCP SYN to 22, all authentic ESP
    assert got["selector_drops"] >= 5
    assert got["integrity_failures"] == 0 and got["replay_drops"] == 0
    assert got["packets"] == 1  # the one datagram to 5353
    assert sent["packets"] == got["packets"] + got["selector_drops"]
    west.close()
    east.close()
    _no_leftovers(lab, lab.west, west_cfg["ifname"])


START_AND_CLOSE = textwrap.dedent("""
    import sys
    from pypluto.kernel.userspace import UserspaceBackend
    be = UserspaceBackend(sys.argv[1])
    print("started", flush=True)
    be.flush_own(); be.close()
""")


def test_leftover_rules_and_routes_of_a_crashed_run_are_removed_at_start(lab: Lab) -> None:
    """What a killed daemon left (the capture rules, the mark bypass, both tables) is gone
    when the next plane starts; rules of others at the same priorities stay."""
    ns = lab.west
    for args in (("rule", "add", "priority", "4500", "table", "4500"),
                 ("rule", "add", "priority", "4499", "to", "192.0.2.2", "ipproto", "17",
                  "dport", "5353", "table", "70036"),
                 ("rule", "add", "priority", "4498", "fwmark", "0x4500", "table", "main"),
                 ("rule", "add", "priority", "4499", "to", "192.0.2.77", "table", "100"),
                 ("route", "add", "203.0.113.0/24", "dev", "lo", "table", "4500"),
                 ("route", "add", "192.0.2.2/32", "dev", "lo", "table", "70036")):
        lab.exec(ns, "ip", *args)
    r = lab.exec(ns, sys.executable, "-c", START_AND_CLOSE, f"ppl{os.getpid()}")
    assert "started" in r.stdout, r.stderr
    rules = lab.exec(ns, "ip", "rule").stdout
    assert "lookup 4500" not in rules and "lookup 70036" not in rules
    assert "fwmark 0x4500" not in rules
    assert "to 192.0.2.77 lookup 100" in rules  # not ours: kept
    for table in ("4500", "70036"):
        assert lab.exec(ns, "ip", "route", "show", "table", table,
                        check=False).stdout.strip() == ""


ROUTE_MTU = textwrap.dedent("""
    import ipaddress, os, subprocess, sys
    from pypluto.kernel.userspace import UserspaceBackend
    from pypluto.params import PolicyParams, SAParams, TrafficSelector
    A, N = ipaddress.ip_address, ipaddress.ip_network
    w, e = A(sys.argv[2]), A(sys.argv[3])
    lts, rts = TrafficSelector(N("198.51.100.0/24")), TrafficSelector(N("203.0.113.0/24"))
    be = UserspaceBackend(sys.argv[1], table=4502, rule_priority=4502)

    def route():
        out = subprocess.run(["ip", "route", "show", "table", "4502"], capture_output=True,
                             text=True).stdout.split()
        return out[out.index("mtu") + 1] if "mtu" in out else "none"

    def sa(spi, encr, klen, integ=0, ilen=0):
        return SAParams(src=w, dst=e, spi=spi, direction="out", encr_id=encr,
                        encr_key=os.urandom(klen), integ_id=integ, integ_key=os.urandom(ilen),
                        reqid=7, local_ts=[lts], remote_ts=[rts])
    try:
        pol = PolicyParams(lts, rts, "out", reqid=7, tmpl_src=w, tmpl_dst=e)
        be.add_policy(pol)                     # a trap: no SA yet, the device's MTU
        seen = [route()]
        be.add_sa(sa(0x3001, 20, 36))          # AES-GCM-16: 1500-20-8-8-16, less 2
        seen.append(route())
        be.move_sa(e, 0x3001, w, e, 4500, 4500)  # MOBIKE to UDP: 8 bytes less
        seen.append(route())
        be.add_sa(sa(0x3002, 12, 32, 14, 64))  # a rekey to AES-CBC / HMAC-SHA2-512
        seen.append(route())
        print(" ".join(seen))
    finally:
        be.flush_own(); be.close()
""")


def test_route_mtu_follows_the_outbound_sa(lab: Lab) -> None:
    """The route into the TUN device carries the path's MTU less the outbound SA's
    overhead: none before the SA (a trap), then AES-GCM over IPv4 (1,446), after a
    MOBIKE move to ESP-in-UDP (1,438), after a rekey to AES-CBC with HMAC-SHA2-512
    ((1500-20-8-16-32) // 16 * 16 - 2 = 1,422)."""
    r = lab.exec(lab.west, sys.executable, "-c", ROUTE_MTU, f"ppm{os.getpid()}", WEST_OUTER,
                 EAST_OUTER)
    assert r.stdout.strip() == "none 1446 1438 1422", r.stdout + r.stderr
