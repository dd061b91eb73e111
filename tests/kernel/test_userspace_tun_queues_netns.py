"""The TUN device's second queue (kernel/userspace/tun.py): sparse flows leave by it.

The kernel sends a flow out of the queue whose fd last wrote a packet of that
flow; the plane writes ICMP and small UDP through the second queue, so a ping
waits there and not behind a bulk flow in the first.  Checked in a namespace
of its own with a real multi-queue TUN device.
"""

from __future__ import annotations

import textwrap

import pytest
from testsupport import probe_in_netns

pytestmark = pytest.mark.netns

PROBE = textwrap.dedent("""
    import os, socket, struct, subprocess, time
    from pypluto.kernel.userspace import offload
    from pypluto.kernel.userspace.tun import attach_queue, open_tun

    fd, name, vnet = open_tun("ppq0", True, multi_queue=True)
    fq = attach_queue(name, vnet)
    assert vnet and fq is not None and fq != fd
    for args in (["link", "set", "lo", "up"], ["link", "set", name, "up"],
                 ["addr", "add", "198.51.100.1/24", "dev", name]):
        subprocess.run(["ip", *args], check=True)

    def csum(b):
        s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
        s = (s >> 16) + (s & 0xFFFF)
        return ~(s + (s >> 16)) & 0xFFFF

    def icmp(typ, seq):
        m = struct.pack("!BBHHH", typ, 0, 0, 77, seq) + bytes(16)
        return m[:2] + struct.pack("!H", csum(m)) + m[4:]

    def reply(seq):
        m = icmp(0, seq)
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(m), 1, 0, 64, 1, 0,
                        socket.inet_aton("198.51.100.2"), socket.inet_aton("198.51.100.1"))
        return h[:10] + struct.pack("!H", csum(h)) + h[12:] + m

    def drain():
        got = []
        for q, f in (("bulk", fd), ("sparse", fq)):
            while True:
                try:
                    d = os.read(f, 70000)
                except BlockingIOError:
                    break
                if d[offload.VNET_HDR_LEN + 9] == 1:  # ICMP
                    got.append(q)
        return got

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)

    def ping(seq):
        s.sendto(icmp(8, seq), ("198.51.100.2", 0))
        time.sleep(0.05)
        return drain()

    time.sleep(0.2)
    drain()
    os.writev(fq, (offload.HDR_DATA_VALID, reply(1)))  # as the plane writes a ping reply
    after_sparse = [q for i in range(2, 6) for q in ping(i)]
    os.writev(fd, (offload.HDR_DATA_VALID, reply(6)))
    after_bulk = [q for i in range(7, 11) for q in ping(i)]
    print(after_sparse, after_bulk)
    assert after_sparse == ["sparse"] * 4, after_sparse
    assert after_bulk == ["bulk"] * 4, after_bulk
    print("ok")
""")


def test_a_flow_written_through_the_sparse_queue_leaves_by_it() -> None:
    probe_in_netns("ppq", PROBE)
