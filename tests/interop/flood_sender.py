"""Spoofed IKE_SA_INIT flood for ``flood.py`` (issue 13), run as root in the sender's namespace.

``python flood_sender.py N DST TEMPLATE_HEX SEED`` builds N IPv4/UDP datagrams
to DST:500, each the template IKE_SA_INIT with a random SPIi, from a random
source address in 198.51.100.128/26 or 203.0.113.128/26 (RFC 5737 blocks, away
from the lab's tunnels) and a random port, then sends them over one raw socket
(``IPPROTO_RAW``: the IP header is ours) as fast as this one process can.

Once the datagrams are built it prints ``ready`` and waits for a line on stdin;
after the first 5 % of them (at most 1,000) it prints ``flooding``, so that the
driver starts the legitimate initiators while the flood is under way, however
long the building took on a busy machine.  Then it prints one
JSON line: ``{"sent": N, "seconds": T, "t_start": T0, "t_end": T1}`` (``T0``,
``T1``: ``time.monotonic()``, the same clock in every process of the machine).
"""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import time


def packets(n: int, dst: str, template: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    d = socket.inet_aton(dst)
    out = []
    for _ in range(n):
        src = bytes((198, 51, 100, 128 + rng.randrange(64))) if rng.random() < 0.5 else \
            bytes((203, 0, 113, 128 + rng.randrange(64)))
        ike = rng.randbytes(8) + template[8:]
        udp_len = 8 + len(ike)
        udp = struct.pack("!HHHH", rng.randrange(1024, 65535), 500, udp_len, 0) + ike
        # version/IHL, TOS, total length, id, frag, TTL, UDP, checksum (the kernel fills it)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, rng.randrange(65536), 0,
                         64, 17, 0, src, d)
        out.append(ip + udp)
    return out


def main(argv: list[str]) -> int:
    n, dst, template, seed = int(argv[1]), argv[2], bytes.fromhex(argv[3]), int(argv[4])
    pkts = packets(n, dst, template, seed)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    target = (dst, 0)
    sent = 0
    print("ready", flush=True)
    sys.stdin.readline()
    t0 = time.monotonic()
    lead = min(1000, n // 20)  # then the driver starts the legitimate initiators
    for p in pkts:
        if sent == lead:
            print("flooding", flush=True)
        while True:
            try:
                s.sendto(p, target)
                sent += 1
                break
            except BlockingIOError:
                continue
            except OSError:  # e.g. ENOBUFS: the veth queue is full; try again
                time.sleep(0)
    t1 = time.monotonic()
    print(json.dumps({"sent": sent, "seconds": round(t1 - t0, 4), "t_start": t0,
                      "t_end": t1}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
