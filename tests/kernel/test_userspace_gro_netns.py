"""ESP-in-UDP batches on the userspace plane (RFC 3948), in two namespaces.

Receive: one UDP GRO read holding ESP of one SA, a replayed copy, IKE (non-ESP
marker), an unknown SPI, a forged ICV and a NAT keepalive; the ESP runs are
decrypted together (``UserspaceBackend._gro_batch``), and every datagram must
still get its own RFC 4303 §3.4 / RFC 3948 §2.2-2.3 treatment, in arrival order.

Send: 2,000-byte UDP datagrams over the route's MTU (1,438 here: the path's
1,500 less the UDP-encapsulated SA's overhead) are two IPv4 fragments each, so the ESP packets alternate between two sizes, which one UDP GSO
send cannot carry together (they leave in pairs, ``UserspaceBackend._send_gso``),
and arrive at the peer's GRO socket in pairs; they must arrive complete and in
order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from testsupport import REPO

sys.path.insert(0, str(REPO))
from bench import esp_lab  # noqa: E402
from bench.esp_lab import EAST_HOST, EAST_OUTER, WEST_HOST, WEST_OUTER, Lab  # noqa: E402

pytestmark = pytest.mark.netns


RECEIVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    s.bind((sys.argv[1], 5001)); s.settimeout(10)
    print("listening", flush=True)
    got = []
    try:
        while len(got) < int(sys.argv[2]):
            got.append(s.recv(65536))
    except OSError:
        pass
    print(" ".join(g[:8].decode() for g in got), flush=True)
""")

# In east: ESP for SPI 0x2002 (east -> west) built with east's outbound SA, sent as
# ONE UDP GSO datagram train (UDP_SEGMENT), which west's UDP_GRO socket reads at once.
SENDER = textwrap.dedent("""
    import json, os, socket, struct, sys
    from pypluto.kernel import esp
    from pypluto.kernel.userspace.handkey import sa_from

    osa = esp.make_sa(sa_from(json.loads(sys.argv[1])))

    def csum(b):
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16:
            s = (s >> 16) + (s & 0xFFFF)
        return ~s & 0xFFFF

    def inner(i):
        payload = b"pkt%05d" % i + bytes(24)
        src, dst = socket.inet_aton(sys.argv[2]), socket.inet_aton(sys.argv[3])
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), i, 0x4000, 64, 17, 0,
                        src, dst)
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        return h + struct.pack("!HHHH", 4000, 5001, 8 + len(payload), 0) + payload

    w = [osa.encap(inner(i)) for i in range(1, 6)]
    size = len(w[0])
    assert all(len(x) == size for x in w)
    train = [w[0], w[1], w[2], w[2],                      # ... a replayed copy
             b"\\0\\0\\0\\0" + b"I" * (size - 4),             # IKE (non-ESP marker)
             struct.pack("!II", 0xdead, 7) + os.urandom(size - 8),   # unknown SPI
             w[3],
             struct.pack("!II", 0x2002, 100) + os.urandom(size - 8),  # forged ICV
             w[4],
             b"\\xff"]                                      # NAT keepalive, shorter: last
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((sys.argv[4], 4501))
    s.sendmsg([b"".join(train)], [(socket.SOL_UDP, 103, struct.pack("=H", size))], 0,
              (sys.argv[5], 4500))
    print("sent", flush=True)
""")


def test_one_gro_read_gets_every_check_in_arrival_order(lab: Lab) -> None:
    west_cfg, east_cfg = esp_lab.handkeyed()
    west = lab.plane(lab.west, west_cfg)
    recv = lab.spawn(lab.west, sys.executable, "-c", RECEIVER, WEST_HOST, "5",
                     stdout=subprocess.PIPE)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    out_sa = next(s for s in east_cfg["sas"] if s["direction"] == "out")
    r = lab.exec(lab.east, sys.executable, "-c", SENDER, json.dumps(out_sa), EAST_HOST,
                 WEST_HOST, EAST_OUTER, WEST_OUTER)
    assert r.stdout.strip() == "sent"
    assert recv.stdout.readline().split() == [f"pkt{i:05d}" for i in range(1, 6)]
    recv.wait(timeout=10)
    assert esp_lab.wait_for(lambda: west.stats()["plane"]["keepalives"] >= 1)
    st = west.stats()
    plane, sa = st["plane"], st["sas"][str(0x2002)]
    # one read carried the train (UDP GRO), so the batch path was taken
    assert plane["udp_datagrams"] - plane["udp_reads"] >= 9, plane
    assert sa["packets"] == 5
    assert sa["replay_drops"] == 1
    assert sa["integrity_failures"] == 1
    assert st["ike"] == 1 and plane["ike_delivered"] == 1
    assert plane["unknown_spi"] == 1
    assert plane["keepalives"] == 1
    west.close()


def test_fragmented_datagrams_leave_complete_and_in_order(lab: Lab) -> None:
    west_cfg, east_cfg = esp_lab.handkeyed()
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    n = 40
    recv = lab.spawn(lab.east, sys.executable, "-c", RECEIVER, EAST_HOST, str(n),
                     stdout=subprocess.PIPE)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "listening"
    blast = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{WEST_HOST}", 0))
        for i in range({n}):
            s.sendto(b"pkt%05d" % i + bytes(1992), ("{EAST_HOST}", 5001))
    """)
    lab.exec(lab.west, sys.executable, "-c", blast)
    assert recv.stdout.readline().split() == [f"pkt{i:05d}" for i in range(n)]
    recv.wait(timeout=10)
    ws, es = west.stats(), east.stats()
    assert ws["sas"][str(0x1001)]["packets"] == 2 * n  # two fragments per datagram
    assert es["sas"][str(0x1001)]["packets"] == 2 * n
    assert es["sas"][str(0x1001)]["integrity_failures"] == 0
    assert es["sas"][str(0x1001)]["replay_drops"] == 0
    west.close()
    east.close()
