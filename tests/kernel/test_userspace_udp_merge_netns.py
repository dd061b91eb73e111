"""Decrypted UDP datagrams (and the IPv4 fragments of one, joined) written to the TUN
device as one GSO_UDP_L4 super-packet
(kernel/userspace/offload.coalesce): the receiving socket gets the same datagrams,
one by one, with valid checksums.  Checked in a namespace of its own with a real
TUN device (IFF_VNET_HDR), as the plane writes them.
"""

from __future__ import annotations

import textwrap

import pytest
from testsupport import probe_in_netns

pytestmark = pytest.mark.netns

PROBE = textwrap.dedent("""
    import os, socket, struct, subprocess
    from pypluto.kernel.userspace import offload
    from pypluto.kernel.userspace.tun import open_tun

    fd, name, vnet = open_tun("ppu0", True)
    assert vnet
    for args in (["link", "set", "lo", "up"], ["link", "set", name, "mtu", "1400", "up"],
                 ["addr", "add", "198.51.100.1/24", "dev", name]):
        subprocess.run(["ip", *args], check=True)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("198.51.100.1", 5201))
    rx.setblocking(False)

    def csum(b):
        if len(b) % 2:
            b += b"\\0"
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        while s >> 16:
            s = (s >> 16) + (s & 0xFFFF)
        return ~s & 0xFFFF

    def udp(payload, ident, frag=0x4000):
        ulen = 8 + len(payload)
        src, dst = socket.inet_aton("198.51.100.2"), socket.inet_aton("198.51.100.1")
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, ident, frag, 64, 17, 0,
                        src, dst)
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        u = struct.pack("!HHHH", 4000, 5201, ulen, 0)
        c = csum(src + dst + struct.pack("!BBH", 0, 17, ulen) + u + payload) or 0xFFFF
        return h + u[:6] + struct.pack("!H", c) + payload

    def write_and_read(iov):
        os.writev(fd, iov)
        got = []
        while True:
            try:
                got.append(rx.recv(2000))
            except BlockingIOError:
                return got

    sent = [bytes([i]) * 100 for i in range(20)] + [b"last"]
    pkts = [udp(p, 100 + i) for i, p in enumerate(sent)]
    out = offload.coalesce(pkts)
    assert len(out) == 1 and out[0][0][1] == offload.GSO_UDP_L4, out
    got = write_and_read(out[0])
    assert got == sent, got

    # 1400-byte datagrams cut in two by a 1400-byte MTU: joined, merged, one write
    big = [bytes([i]) * 1400 for i in range(4)]
    frags = []
    for i, payload in enumerate(big):
        d = udp(payload, 300 + i, 0)
        for off, part, mf in ((0, d[20:1396], 0x2000), (1376, d[1396:], 0)):
            h = bytearray(d[:20])
            h[2:4] = struct.pack("!H", 20 + len(part))
            h[6:8] = struct.pack("!H", mf | off // 8)
            h[10:12] = b"\\0\\0"
            h[10:12] = struct.pack("!H", csum(bytes(h)))
            frags.append(bytes(h) + part)
    out = offload.coalesce(frags)
    assert len(out) == 1 and out[0][0][1] == offload.GSO_UDP_L4, out
    got = write_and_read(out[0])
    assert got == big, [len(g) for g in got]
    print("ok")
""")


def test_merged_udp_datagrams_reach_the_socket_one_by_one() -> None:
    probe_in_netns("ppu", PROBE)
