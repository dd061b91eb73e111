"""Guest side of the AH tests: runs INSIDE the User-Mode-Linux kernel (ah4/ah6 loaded).

For each scenario, hand-keyed AH SAs (RFC 4302) and policies go into two
network namespaces joined by a veth pair (through our ``XfrmBackend``, or
through ``ip xfrm`` where the kernel must start near the ESN wrap).  Then:

* pings pass through the kernel's AH, ``ip -s xfrm state`` counters rise;
* tcpdump on the veth captures the packets: IP protocol 51, ``AH(spi=...)``;
* every AH packet the kernel sent is verified and unwrapped by our own
  ``pypluto.kernel.ah.InboundAH`` (a known-answer test with the kernel as the
  independent implementation);
* an AH packet built by our ``OutboundAH`` is put on the wire (AF_PACKET on
  the left veth, so the left kernel does not touch it): the right kernel
  accepts it (its SA counter rises by one) and answers the ping inside, and
  the answer verifies with our code too; the same packet with one ICV bit
  flipped raises the kernel's integrity-failure counter instead.

Prints ``CHECK <name>: OK`` per check; exit status 0 only if all passed.
Started by ``tests/espkernel/test_ah_uml.py`` through ``tools/run-in-esp-kernel.sh``.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import guestlib as G  # the lab, check(), the scenario loop (also puts src/ on sys.path)
from guestlib import check, ping, sh

from pypluto.iana import Integ
from pypluto.kernel import ah
from pypluto.kernel.base import PolicyParams, SAParams, TrafficSelector
from pypluto.kernel.xfrm import XfrmBackend
from pypluto.kernel.xfrm.netlink import run_in_netns

KEYLEN = {Integ.HMAC_SHA1_96: 20, Integ.HMAC_SHA2_256_128: 32, Integ.HMAC_SHA2_384_192: 48,
          Integ.HMAC_SHA2_512_256: 64, Integ.AES_XCBC_96: 16, Integ.AES_CMAC_96: 16}
KERNEL_NAME = {Integ.HMAC_SHA1_96: ("hmac(sha1)", 96), Integ.HMAC_SHA2_256_128: ("hmac(sha256)", 128),
               Integ.HMAC_SHA2_384_192: ("hmac(sha384)", 192),
               Integ.HMAC_SHA2_512_256: ("hmac(sha512)", 256),
               Integ.AES_XCBC_96: ("xcbc(aes)", 96), Integ.AES_CMAC_96: ("cmac(aes)", 96)}
PINGS = 3
ECHO_ID = 0xA451
ESN_HI = 5  # the wrap scenario starts its counters at (5 << 32) + 0xfffffffd


@dataclass
class Case:
    name: str
    fam: int
    mode: str
    integ: int
    esn: bool = False
    via_ip: bool = False  # installed with `ip xfrm` (sequence numbers near the ESN wrap)
    align8: bool = False  # via_ip without "align4": Linux's default 64-bit IPv4 AH padding


CASES = [
    Case("v4-tunnel-sha1", 4, "tunnel", Integ.HMAC_SHA1_96),
    Case("v4-transport-sha256-esn", 4, "transport", Integ.HMAC_SHA2_256_128, esn=True),
    Case("v4-tunnel-xcbc", 4, "tunnel", Integ.AES_XCBC_96),
    Case("v4-tunnel-cmac", 4, "tunnel", Integ.AES_CMAC_96),
    Case("v6-tunnel-sha512", 6, "tunnel", Integ.HMAC_SHA2_512_256),
    Case("v6-transport-sha384", 6, "transport", Integ.HMAC_SHA2_384_192),
    Case("v6-tunnel-sha256-esn", 6, "tunnel", Integ.HMAC_SHA2_256_128, esn=True),
    Case("v4-tunnel-sha256-esn-wrap", 4, "tunnel", Integ.HMAC_SHA2_256_128, esn=True,
         via_ip=True),
    # the kernel pads IPv4 AH to 8 bytes with whatever is in memory: we must still verify
    # it; the kernel then takes only 8-aligned AH, so our RFC-sized packets are not sent
    Case("v4-tunnel-sha256-esn-align8", 4, "tunnel", Integ.HMAC_SHA2_256_128, esn=True,
         via_ip=True, align8=True),
]


# --- packets -------------------------------------------------------------------------------
def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def echo_request(src: str, dst: str, seq: int) -> bytes:
    """An ICMP / ICMPv6 echo request from ``src`` to ``dst`` (a whole IP packet)."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    body = b"pypluto-ah-" + bytes(range(21))
    if s.version == 4:
        icmp = struct.pack("!BBHHH", 8, 0, 0, ECHO_ID, seq) + body
        icmp = icmp[:2] + struct.pack("!H", _csum(icmp)) + icmp[4:]
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0x5151, 0x4000, 64, 1, 0,
                        s.packed, d.packed)
        return h[:10] + struct.pack("!H", _csum(h)) + h[12:] + icmp
    icmp = struct.pack("!BBHHH", 128, 0, 0, ECHO_ID, seq) + body
    pseudo = s.packed + d.packed + struct.pack("!I3xB", len(icmp), 58)
    icmp = icmp[:2] + struct.pack("!H", _csum(pseudo + icmp)) + icmp[4:]
    return struct.pack("!IHBB16s16s", 6 << 28, len(icmp), 58, 64, s.packed, d.packed) + icmp


def icmp_of(pkt: bytes) -> tuple[int, int] | None:
    """(type, echo id) of an IP packet carrying ICMP/ICMPv6 directly, else None."""
    if pkt[0] >> 4 == 4 and pkt[9] == 1:
        off = (pkt[0] & 0x0F) * 4
    elif pkt[0] >> 4 == 6 and pkt[6] == 58:
        off = 40
    else:
        return None
    return pkt[off], struct.unpack_from("!H", pkt, off + 4)[0]


def read_pcap(path: str) -> list[bytes]:
    """IP packets of an Ethernet pcap file (libpcap format, either byte order)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    end = "<" if data[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    out, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack_from(end + "I", data, off + 8)[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        if len(frame) > 14 and frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
            out.append(frame[14:])
    return out


class Capture:
    """tcpdump on one interface of a namespace, writing AH packets to a pcap file."""

    def __init__(self, ns: str, dev: str, path: str) -> None:
        self.path = path
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "--immediate-mode", "-i", dev, "-n", "-U", "-w", path,
             "ip proto 51 or ip6 proto 51"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        G.CHILDREN.append(self.p)  # type: ignore[arg-type]
        assert self.p.stderr is not None
        self.p.stderr.readline()  # "listening on ...": capturing from now on

    def packets(self) -> list[bytes]:
        return read_pcap(self.path)

    def wait_for(self, pred: object, timeout: float = 10) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while True:
            pkts = self.packets()
            if pred(pkts) or time.monotonic() > deadline:  # type: ignore[operator]
                return pkts
            time.sleep(0.2)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def mac_of(ns: str, dev: str) -> bytes:
    info = json.loads(sh(["ip", "-n", ns, "-j", "link", "show", dev]))
    return bytes.fromhex(info[0]["address"].replace(":", ""))


# --- SAs -----------------------------------------------------------------------------------
@dataclass
class Pair:
    """The addresses, SPIs and keys of one hand-keyed AH SA pair."""

    case: Case
    lo: ipaddress.IPv4Address | ipaddress.IPv6Address
    ro: ipaddress.IPv4Address | ipaddress.IPv6Address
    spi_lr: int
    spi_rl: int
    key_lr: bytes
    key_rl: bytes
    reqid: int

    def params(self, lr: bool, direction: str) -> SAParams:
        c = self.case
        src, dst = (self.lo, self.ro) if lr else (self.ro, self.lo)
        return SAParams(src, dst, self.spi_lr if lr else self.spi_rl, direction,  # type: ignore[arg-type]
                        protocol="ah", mode=c.mode, reqid=self.reqid,  # type: ignore[arg-type]
                        integ_id=c.integ, integ_key=self.key_lr if lr else self.key_rl,
                        esn=c.esn, replay_window=64)

    def selectors(self) -> tuple[TrafficSelector, TrafficSelector]:
        if self.case.mode == "transport":
            return (TrafficSelector(ipaddress.ip_network(self.lo)),
                    TrafficSelector(ipaddress.ip_network(self.ro)))
        if self.case.fam == 4:
            return TrafficSelector(G.LNET4), TrafficSelector(G.RNET4)
        return TrafficSelector(G.LNET6), TrafficSelector(G.RNET6)


def install_backend(left: XfrmBackend, right: XfrmBackend, p: Pair) -> None:
    for be, is_left in ((left, True), (right, False)):
        be.add_sa(p.params(True, "out" if is_left else "in"))
        be.add_sa(p.params(False, "in" if is_left else "out"))
    lts, rts = p.selectors()
    for be, me, peer, mine, theirs in ((left, p.lo, p.ro, lts, rts), (right, p.ro, p.lo, rts, lts)):
        be.add_policy(PolicyParams(mine, theirs, "out", p.reqid, me, peer, mode=p.case.mode,  # type: ignore[arg-type]
                                   protocol="ah"))
        dirs = ("in", "fwd") if p.case.mode == "tunnel" else ("in",)
        for d in dirs:
            be.add_policy(PolicyParams(theirs, mine, d, p.reqid, peer, me, mode=p.case.mode,  # type: ignore[arg-type]
                                       protocol="ah"))


def install_ip(p: Pair) -> None:
    """Both ends with `ip xfrm`: output counters at (ESN_HI << 32) + 0xfffffffd, so the
    high-order half rolls over during the pings (RFC 4302 §2.5.1)."""
    name, bits = KERNEL_NAME[p.case.integ]
    lts, rts = p.selectors()
    for ns, me, peer, mine, theirs, out_spi, out_key, in_spi, in_key in (
        (G.LEFT, p.lo, p.ro, lts, rts, p.spi_lr, p.key_lr, p.spi_rl, p.key_rl),
        (G.RIGHT, p.ro, p.lo, rts, lts, p.spi_rl, p.key_rl, p.spi_lr, p.key_lr),
    ):
        flags = ["flag", "esn"] + ([] if p.case.align8 else ["align4"])
        common = ["mode", p.case.mode, "reqid", str(p.reqid), *flags, "replay-window", "64"]
        G.ip_batch(ns, [
            " ".join(["xfrm state add src", str(me), "dst", str(peer), "proto ah spi",
                      hex(out_spi), *common, "replay-oseq-hi", str(ESN_HI),
                      "replay-oseq", "0xfffffffd", "auth-trunc", f"'{name}'",
                      "0x" + out_key.hex(), str(bits)]),
            " ".join(["xfrm state add src", str(peer), "dst", str(me), "proto ah spi",
                      hex(in_spi), *common, "replay-seq-hi", str(ESN_HI),
                      "replay-seq", "0xfffffff0", "auth-trunc", f"'{name}'",
                      "0x" + in_key.hex(), str(bits)]),
            f"xfrm policy add src {mine.network} dst {theirs.network} dir out "
            f"tmpl src {me} dst {peer} proto ah reqid {p.reqid} mode {p.case.mode}",
            f"xfrm policy add src {theirs.network} dst {mine.network} dir in "
            f"tmpl src {peer} dst {me} proto ah reqid {p.reqid} mode {p.case.mode}",
            f"xfrm policy add src {theirs.network} dst {mine.network} dir fwd "
            f"tmpl src {peer} dst {me} proto ah reqid {p.reqid} mode {p.case.mode}",
        ])


def kernel_stats(be: XfrmBackend, dst: object, spi: int) -> tuple[int, int]:
    """(packets, integrity failures) of one SA, from the kernel (GETSA)."""
    sa = be.get_sa(dst, spi, "ah")  # type: ignore[arg-type]
    if sa is None:
        return -1, -1
    return sa.info.curlft.packets, sa.info.integrity_failed


# --- one scenario ------------------------------------------------------------------------------
def run_case(left: XfrmBackend, right: XfrmBackend, c: Case, n: int, tmp: str) -> None:
    tag = f"ah-{c.name}"
    lo, ro = (G.L4, G.R4) if c.fam == 4 else (G.L6, G.R6)
    if c.mode == "tunnel":
        src_in, dst_in = (G.LIN4, G.RIN4) if c.fam == 4 else (G.LIN6, G.RIN6)
    else:
        src_in, dst_in = str(lo), str(ro)
    ping(G.LEFT, str(lo), str(ro), count=1)  # neighbours known before the policies
    kl = KEYLEN[c.integ]
    p = Pair(c, lo, ro, 0x7100 + 2 * n + 1, 0x7100 + 2 * n + 2, os.urandom(kl), os.urandom(kl),
             40 + n)
    if c.via_ip:
        install_ip(p)
    else:
        install_backend(left, right, p)
        sa = right.get_sa(ro, p.spi_lr, "ah")
        want = KERNEL_NAME[c.integ]
        check(f"{tag}-kernel-view", sa is not None and sa.proto == 51
              and sa.auth_trunc == (want[0], kl * 8, want[1]) and sa.crypt is None
              and sa.aead is None, f"{sa.auth_trunc if sa else None}")  # fmt: skip
    pcap = os.path.join(tmp, f"{c.name}.pcap")
    cap = Capture(G.LEFT, f"vl{G.PID}", pcap)
    try:
        ok = ping(G.LEFT, src_in, dst_in, count=PINGS)
        check(f"{tag}-ping", ok)
        lr = G.ip_s_packets(G.RIGHT, p.spi_lr)
        rl = G.ip_s_packets(G.LEFT, p.spi_rl)
        check(f"{tag}-ip-s-xfrm-counters", lr >= PINGS and rl >= PINGS,
              f"right in {p.spi_lr:#x}: {lr}, left in {p.spi_rl:#x}: {rl} packets")
        pkts = cap.wait_for(lambda ps: len(ps) >= 2 * PINGS)
        # --- the kernel's packets, verified by our code ---
        in_lr = ah.make_sa(p.params(True, "in"))
        in_rl = ah.make_sa(p.params(False, "in"))
        assert isinstance(in_lr, ah.InboundAH) and isinstance(in_rl, ah.InboundAH)
        if c.via_ip:
            in_lr.top = in_rl.top = (ESN_HI << 32) + 0xFFFFFFF0
        proto_ok = all((q[9] if c.fam == 4 else q[6]) == 51 for q in pkts)
        text = sh(["tcpdump", "-n", "-r", pcap], check_rc=False)
        check(f"{tag}-capture-proto-51",
              len(pkts) >= 2 * PINGS and proto_ok and f"AH(spi={p.spi_lr:#010x}" in text
              and f"AH(spi={p.spi_rl:#010x}" in text,
              f"{len(pkts)} packets; {text.strip().splitlines()[0] if text.strip() else ''}")
        verified = 0
        for q in pkts:
            src = q[12:16] if c.fam == 4 else q[8:24]
            inb = in_lr if src == lo.packed else in_rl
            inner = inb.decap(q)
            if inner is not None and icmp_of(inner) is not None:
                verified += 1
        hi_seen = in_lr.top >> 32
        check(f"{tag}-kernel-icv-verified-by-pypluto",
              verified == len(pkts) and verified >= 2 * PINGS
              and (not c.via_ip or hi_seen == ESN_HI + 1),
              f"{verified}/{len(pkts)} kernel AH packets verified, last seq {in_lr.top:#x}")
        ah_len = (pkts[0][21] + 2) * 4 if c.fam == 4 and pkts else 0
        if c.align8:
            check(f"{tag}-linux-pads-ipv4-ah-to-64-bits", ah_len == 32, f"AH length {ah_len}")
            return
        if c.fam == 4:  # RFC 4302 §3.3.3.2.1: 32-bit alignment (XFRM_STATE_ALIGN4)
            want = (12 + in_lr.icv_size + 3) // 4 * 4
            check(f"{tag}-ipv4-ah-32-bit-aligned", ah_len == want, f"AH length {ah_len}")
        # --- our packets, verified by the kernel ---
        out = ah.make_sa(p.params(True, "out"))
        assert isinstance(out, ah.OutboundAH)
        out.seq = in_lr.top + 3  # past what the kernel has seen: not a replay
        good = out.encap(echo_request(src_in, dst_in, 1))
        bad = bytearray(out.encap(echo_request(src_in, dst_in, 2)) or b"")
        ah_off = 20 if c.fam == 4 else 40  # after the outer (tunnel) or own (transport) header
        bad[ah_off + 12] ^= 0x80  # one ICV bit
        assert good is not None and ah.ah_spi(bad) == p.spi_lr
        eth = mac_of(G.RIGHT, f"vr{G.PID}") + mac_of(G.LEFT, f"vl{G.PID}")
        eth += b"\x08\x00" if c.fam == 4 else b"\x86\xdd"
        before = kernel_stats(right, ro, p.spi_lr)

        def raw() -> socket.socket:
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            s.bind((f"vl{G.PID}", 0))
            return s

        sock = run_in_netns(G.LEFT, raw)
        try:
            sock.send(eth + good)
            spot = _fresh_in(p)
            pkts = cap.wait_for(lambda ps: any(_is_reply(spot, q) for q in ps))
            got_reply = any(_is_reply(spot, q) for q in pkts)
            mid = kernel_stats(right, ro, p.spi_lr)
            check(f"{tag}-pypluto-packet-accepted-by-kernel",
                  mid[0] == before[0] + 1 and mid[1] == before[1] and got_reply,
                  f"right SA packets {before[0]} -> {mid[0]}, integrity failures "
                  f"{before[1]} -> {mid[1]}, kernel's AH reply verified: {got_reply}")
            sock.send(eth + bytes(bad))
            after = mid
            deadline = time.monotonic() + 10
            while after[1] == mid[1] and time.monotonic() < deadline:
                time.sleep(0.2)
                after = kernel_stats(right, ro, p.spi_lr)
            check(f"{tag}-bad-icv-rejected-by-kernel",
                  after[1] == mid[1] + 1 and after[0] == mid[0],
                  f"integrity failures {mid[1]} -> {after[1]}, packets {mid[0]} -> {after[0]}")
        finally:
            sock.close()
    finally:
        cap.stop()
        if c.via_ip:
            G.flush_xfrm()


def _fresh_in(p: Pair) -> ah.InboundAH:
    """An InboundAH for right->left with no replay window: for spotting the echo reply."""
    sa = p.params(False, "in")
    sa.replay_window = 0
    inb = ah.make_sa(sa)
    assert isinstance(inb, ah.InboundAH)
    if p.case.via_ip:
        inb.top = ((ESN_HI + 1) << 32)
    return inb


def _is_reply(inb: ah.InboundAH, q: bytes) -> bool:
    inner = inb.decap(q)
    if inner is None:
        return False
    t = icmp_of(inner)
    return t is not None and t[0] in (0, 129) and t[1] == ECHO_ID


def main() -> int:
    only = set(sys.argv[1:])
    tmp = tempfile.mkdtemp(prefix="ppah-")
    try:
        return G.run_guest("AH", [(f"ah-{c.name}", functools.partial(run_case, c=c, n=n, tmp=tmp))
                                  for n, c in enumerate(CASES) if not only or c.name in only])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
