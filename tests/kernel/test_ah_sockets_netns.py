"""AH packets of ``kernel/ah.py`` over real raw sockets between two namespaces.

No kernel IPsec is involved: west builds AH packets with ``OutboundAH`` and
sends them header-included (``AHSockets``); east reads IP protocol 51 from a
raw socket and checks them with ``InboundAH``.  This proves what the
userspace plane relies on: the kernel sends our IPv4 header as built (the
Identification and length the ICV covers), and an IPv6 AH packet received
without its header verifies once the header is rebuilt from IPV6_PKTINFO.
tcpdump on east's veth shows protocol 51 on the wire.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import select
import shutil
import struct
import subprocess

import pytest
from lab import EAST_INNER, EAST_OUTER, WEST_INNER, WEST_OUTER, Lab, lab  # noqa: F401

from pypluto.iana import Integ
from pypluto.kernel import ah
from pypluto.kernel.ah_sockets import AHSockets
from pypluto.kernel.xfrm.netlink import run_in_netns
from pypluto.params import SAParams

pytestmark = pytest.mark.netns

ip = ipaddress.ip_address
W6, E6 = "2001:db8:a::1", "2001:db8:a::2"


def icmp_echo(src: str, dst: str) -> bytes:
    body = bytes([8, 0, 0, 0, 0x12, 0x34, 0, 1]) + b"ah over raw sockets"
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 0, 0x4000, 64, 1, 0,
                    ip(src).packed, ip(dst).packed)
    return h + body


def udp6(src: str, dst: str) -> bytes:
    body = struct.pack("!HHHH", 5353, 5353, 8 + 5, 0) + b"hello"
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), 17, 64, ip(src).packed,
                       ip(dst).packed) + body


def sa(src: str, dst: str, direction: str, mode: str, key: bytes) -> SAParams:
    return SAParams(ip(src), ip(dst), 0x4242, direction, protocol="ah", mode=mode,  # type: ignore[arg-type]
                    integ_id=Integ.HMAC_SHA2_256_128, integ_key=key, replay_window=64)


def receive(s: AHSockets, want: int) -> list[bytes]:
    out: list[bytes] = []
    buf = memoryview(bytearray(70000))
    while len(out) < want:
        r, _, _ = select.select([s], [], [], 10)
        if not r:
            break
        got = s.recv_into(buf)
        if got is not None:
            out.append(bytes(got))
    return out


def _captured(pcap: pathlib.Path) -> str:
    """tcpdump's reading of the capture so far ("" before the file exists)."""
    if not pcap.exists():
        return ""
    return subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True,
                          text=True).stdout


@pytest.mark.parametrize("fam, mode", [(4, "tunnel"), (4, "transport"), (6, "tunnel"),
                                       (6, "transport")])
def test_ah_packets_cross_raw_sockets_and_verify(lab: Lab, fam: int, mode: str) -> None:  # noqa: F811
    if fam == 6:
        for ns, a in ((lab.west, W6), (lab.east, E6)):
            lab.run(ns, ["ip", "addr", "add", f"{a}/64", "dev",
                         "west" if ns == lab.west else "east", "nodad"])
        wo, eo = W6, E6
        inner = udp6("2001:db8:1::1", "2001:db8:2::1") if mode == "tunnel" else udp6(wo, eo)
    else:
        wo, eo = WEST_OUTER, EAST_OUTER
        inner = icmp_echo(WEST_INNER, EAST_INNER) if mode == "tunnel" else icmp_echo(wo, eo)
    key = os.urandom(32)
    out = ah.make_sa(sa(wo, eo, "out", mode, key))
    inb = ah.make_sa(sa(wo, eo, "in", mode, key))
    assert isinstance(out, ah.OutboundAH) and isinstance(inb, ah.InboundAH)
    tx = run_in_netns(lab.west, lambda: AHSockets(fam, mark=0x4500))
    rx = run_in_netns(lab.east, lambda: AHSockets(fam))
    pcap = lab.workdir / "ah.pcap"
    dump = None
    if shutil.which("tcpdump"):
        dump = subprocess.Popen(["ip", "netns", "exec", lab.east, "tcpdump", "--immediate-mode", "-i", "east", "-n",
                                 "-U", "-w", str(pcap), "ip proto 51 or ip6 proto 51"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert dump.stderr is not None
        dump.stderr.readline()  # "listening on": capturing from here
    try:
        wires = [out.encap(inner) for _ in range(3)]
        for w in wires:
            assert w is not None
            tx.send(w, eo)
        got = receive(rx, 3)
        assert len(got) == 3
        for g, w in zip(got, wires, strict=True):
            if fam == 4:  # the kernel sent our header: same ID, length and addresses
                assert g[2:6] == w[2:6] and g[12:20] == w[12:20] and g[9] == 51
            got_inner = inb.decap(g)
            if mode == "tunnel":
                assert got_inner == inner
            else:  # our own header back (IPv4: with the ID AH gave it), AH removed
                hl = 20 if fam == 4 else 40
                assert got_inner is not None and got_inner[hl:] == inner[hl:]
                addrs = slice(12, 20) if fam == 4 else slice(8, 40)
                assert got_inner[addrs] == inner[addrs]
        assert inb.stats.packets == 3 and inb.stats.integrity_failures == 0
        tampered = bytearray(wires[0] or b"")
        tampered[-1] ^= 1
        struct.pack_into("!I", tampered, (20 if fam == 4 else 40) + 8, 99)
        tx.send(bytes(tampered), eo)
        (g,) = receive(rx, 1)
        assert inb.decap(g) is None and inb.stats.integrity_failures == 1
    finally:
        tx.close()
        rx.close()
        if dump is not None:
            # every packet written (-U writes each as it comes, but the first bytes of
            # the file are no proof that the fourth packet is in it yet)
            lab.wait_for(lambda: _captured(pcap).count("AH(spi=0x00004242") >= 4, 10,
                         "tcpdump wrote the 4 packets")
            dump.terminate()
            dump.wait(timeout=10)
    if dump is not None:
        text = _captured(pcap)
        assert text.count("AH(spi=0x00004242") == 4, text

