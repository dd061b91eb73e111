"""IKE_AUTH with 4096-bit RSA certificates over an IPv6 path with MTU 1280 (issue 14).

RFC 7383 §2.5.1: on IPv6 a fragmented IKE message must fit the minimum IPv6 MTU
of 1280 bytes *as an IP datagram*, so the IKE message itself may be at most
1280 - 40 (IPv6) - 8 (UDP) - 4 (non-ESP marker on port 4500) bytes.  A root, an
intermediate and an end entity with 4096-bit RSA keys push each IKE_AUTH message
well beyond that, so both directions must come as SKF fragments.

Topology (IPv6 only between the peers; documentation prefix 2001:db8::/32)::

    west (pypluto)                router                         east
    2001:db8:1::1 inner           forwards, no IPv4               2001:db8:2::1 inner
    "west" 2001:db8:a::1/64 ---- "rw" 2001:db8:a::fe   "re" 2001:db8:b::fe/64 ---- "east" 2001:db8:b::2
             MTU 1500                  MTU 1500        MTU 1280                        MTU 1280

The 1280-byte link sits behind a router, so the west end does not know the path
MTU from its own interface: an oversized datagram from west is dropped by the
router (ICMPv6 Packet Too Big, RFC 8201) rather than fragmented at the source.
The lab first shows that a 1281-byte datagram with "do not fragment" does not
cross while a 1280-byte one does, then captures both router links with tcpdump
during the exchange: every IPv6 packet is at most 1280 bytes, none carries a
Fragment header, no Packet Too Big is sent, and IKE_AUTH comes as at least two
SKF fragments each way.  Peers: strongSwan 5.9.8 and 6.0.1 (the trixie chroot, when
the host has it; ``trixie.STRONGSWAN_PEERS``) in both roles, and pypluto.
"""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12
from lab import Lab, Spawned, require
from peers import PROPOSALS, Pypluto, have_strongswan
from pki import PKI, Issued
from trixie import STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(240)]

W6, E6 = "2001:db8:a::1", "2001:db8:b::2"  # outer addresses, the only ones on the path
RW6, RE6 = "2001:db8:a::fe", "2001:db8:b::fe"  # the router's
W_NET, E_NET = "2001:db8:a::/64", "2001:db8:b::/64"
W_IN, E_IN = "2001:db8:1::1", "2001:db8:2::1"  # inner (dummy inner0) addresses
W_SUB, E_SUB = "2001:db8:1::/64", "2001:db8:2::/64"
PATH_MTU = 1280
KEY = "rsa4096"
PROPOSAL = PROPOSALS[0]
EXCH_IKE_AUTH, PT_SKF = 35, 53


@dataclass
class Path6:
    """The routed IPv6 lab: the router namespace and its two tcpdumps."""

    lab: Lab
    router: str
    dumps: dict[str, tuple[Spawned, Path]] = field(default_factory=dict)

    def capture(self) -> None:
        """tcpdump on both router links (-U: each packet written as it is seen;
        --immediate-mode: handed over as it arrives, not when the capture ring's
        block fills or times out, which a fast exchange ended before: "22 packets
        received by filter", "0 packets captured")."""
        for dev in ("rw", "re"):
            pcap = self.lab.workdir / f"router-{dev}.pcap"
            sp = self.lab.spawn(self.router, ["tcpdump", "-i", dev, "-U", "--immediate-mode",
                                              "-n", "-s", "0", "-w", pcap], self.lab.workdir / f"tcpdump-{dev}.log",
                                name=f"tcpdump-{dev}")
            self.dumps[dev] = (sp, pcap)
        for dev, (sp, _) in self.dumps.items():
            self.lab.wait_for(lambda sp=sp: "listening on" in sp.logfile.read_text(
                errors="replace"), 10, f"tcpdump on {dev}")

    def packets(self) -> dict[str, list[bytes]]:
        """Stop the captures; the IPv6 packets (Ethernet stripped) of each link."""
        out = {}
        for dev, (sp, pcap) in self.dumps.items():
            self.lab.stop(sp)
            out[dev] = list(_ipv6_packets(pcap.read_bytes()))
        return out


def _ipv6_packets(raw: bytes) -> Iterator[bytes]:
    """The IPv6 packets of a libpcap file with Ethernet framing (tcpdump -w on a veth)."""
    magic = raw[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    (linktype,) = struct.unpack_from(order + "I", raw, 20)
    assert linktype == 1, f"link type {linktype}, expected Ethernet"
    off = 24
    while off + 16 <= len(raw):
        _, _, incl, _ = struct.unpack_from(order + "IIII", raw, off)
        frame = raw[off + 16: off + 16 + incl]
        off += 16 + incl
        if len(frame) > 14 and frame[12:14] == b"\x86\xdd":
            yield frame[14:]


@dataclass
class Ike:
    """One IKE datagram seen on the wire."""

    src: bytes
    exchange: int
    first: int  # next payload of the IKE header
    response: bool
    ip_len: int


def _ike(pkt: bytes) -> Ike | None:
    if len(pkt) < 48 or pkt[6] != 17:  # UDP right after the fixed header only
        return None
    sport, dport = struct.unpack_from("!HH", pkt, 40)
    ike = pkt[48:]
    if 4500 in (sport, dport):
        if ike[:4] != b"\0\0\0\0":
            return None  # ESP in UDP (RFC 3948)
        ike = ike[4:]
    elif 500 not in (sport, dport):
        return None
    if len(ike) < 28:
        return None
    return Ike(pkt[8:24], ike[18], ike[16], bool(ike[19] & 0x20), 40 + (pkt[4] << 8 | pkt[5]))


def _check_wire(packets: dict[str, list[bytes]]) -> dict[str, int]:
    """Every packet fits the path, nothing is IP-fragmented, no Packet Too Big;
    returns the counts of IKE_AUTH SKF requests and responses seen."""
    counts = {"requests": 0, "responses": 0}
    for dev, pkts in packets.items():
        assert pkts, f"nothing captured on {dev}"
        for p in pkts:
            length = 40 + (p[4] << 8 | p[5])
            assert length <= PATH_MTU, f"{dev}: a {length}-byte IPv6 packet"
            assert p[6] != 44, f"{dev}: an IPv6 Fragment header (source fragmentation)"
            assert not (p[6] == 58 and p[40] == 2), f"{dev}: ICMPv6 Packet Too Big"
        if dev == "re":  # the 1280 link: every fragment crossed it once
            for i in filter(None, map(_ike, pkts)):
                if i.exchange == EXCH_IKE_AUTH and i.first == PT_SKF:
                    counts["responses" if i.response else "requests"] += 1
    return counts


@pytest.fixture
def path6(lab: Lab) -> Iterator[Path6]:
    """Replace the lab's IPv4 veth by west - router - east, IPv6 only, MTU 1280 east of
    the router; the router namespace is deleted even when the test fails."""
    router = f"{lab.west}r"
    lab.run(None, ["ip", "netns", "add", router])
    try:
        lab.run(lab.west, ["ip", "link", "del", "west"])  # and its peer, with 192.0.2.x
        lab.run(router, ["ip", "link", "set", "lo", "up"])
        lab.run(router, ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
        for ns, dev, rdev in ((lab.west, "west", "rw"), (lab.east, "east", "re")):
            lab.run(None, ["ip", "link", "add", dev, "netns", ns, "type", "veth", "peer",
                           "name", rdev, "netns", router])
        lab.run(router, ["ip", "link", "set", "re", "mtu", PATH_MTU])
        lab.run(lab.east, ["ip", "link", "set", "east", "mtu", PATH_MTU])
        for ns, dev, addr in ((lab.west, "west", W6), (lab.east, "east", E6),
                              (router, "rw", RW6), (router, "re", RE6)):
            lab.run(ns, ["ip", "-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
            lab.run(ns, ["ip", "link", "set", dev, "up"])
        for ns, addr in ((lab.west, W_IN), (lab.east, E_IN)):
            dev = "inner0" if lab.dummy else "lo"
            lab.run(ns, ["ip", "-6", "addr", "add", f"{addr}/{64 if lab.dummy else 128}",
                         "dev", dev, "nodad"])
        lab.run(lab.west, ["ip", "-6", "route", "add", E_NET, "via", RW6])
        lab.run(lab.east, ["ip", "-6", "route", "add", W_NET, "via", RE6])
        lab.wait_for(lambda: lab.ping(lab.west, E6, count=1, timeout=1)[1] == 1, 20,
                     "west reaches east over the router")
        yield Path6(lab, router)
    finally:
        subprocess.run(["ip", "netns", "del", router], capture_output=True)


def _df_ping(lab: Lab, ns: str, dst: str, size: int) -> int:
    """Echo replies to one ICMPv6 echo of ``size`` bytes on the wire, never fragmented."""
    r = lab.run(ns, ["ping", "-6", "-n", "-c", "1", "-W", "2", "-M", "do", "-s",
                     size - 48, dst], check=False, timeout=15)
    return 1 if r.returncode == 0 and " 0% packet loss" in r.stdout else 0


def _check_path_mtu(lab: Lab) -> None:
    """1280 bytes cross in both directions, 1281 do not (and are not fragmented)."""
    for ns, dst in ((lab.west, E6), (lab.east, W6)):
        assert _df_ping(lab, ns, dst, PATH_MTU) == 1, f"a {PATH_MTU}-byte packet to {dst}"
        assert _df_ping(lab, ns, dst, PATH_MTU + 1) == 0, f"{PATH_MTU + 1} bytes crossed"
    # forget the Packet Too Big west learnt: the IKE datagrams must fit on their own
    lab.run(lab.west, ["ip", "-6", "route", "flush", "cache"])


def _nssdb(d: Path, me: Issued, pki: PKI, nick: str) -> None:
    """A Libreswan-layout NSS db: our key and chain (pk12util), the root trusted CT,,."""
    def run(*argv: str) -> None:
        subprocess.run(list(argv), check=True, capture_output=True, timeout=60)
    d.mkdir(parents=True)
    run("certutil", "-N", "-d", f"sql:{d}", "--empty-password")
    p12 = d.parent / f"{nick}.p12"
    p12.write_bytes(pkcs12.serialize_key_and_certificates(
        nick.encode(), me.key, me.cert, me.chain,  # type: ignore[arg-type]
        BestAvailableEncryption(b"pw")))
    run("pk12util", "-i", str(p12), "-d", f"sql:{d}", "-W", "pw")
    root = d.parent / "root.pem"
    root.write_bytes(pki.root.cert_pem())
    run("certutil", "-A", "-d", f"sql:{d}", "-n", "labroot", "-t", "CT,,", "-i", str(root))


def _conf(me: Issued, peer: Issued, *, me6: str, peer6: str, mysub: str, peersub: str,
          myin: str, peerin: str, nick: str) -> str:
    """pypluto's ipsec.conf, left being this end."""
    return f"""\
config setup
\tplutodebug=none

conn west-east
\tauthby=rsasig
\tleft={me6}
\tleftid="{me.dn}"
\tleftcert={nick}
\tleftsubnet={mysub}
\tleftsourceip={myin}
\tright={peer6}
\trightid="{peer.dn}"
\trightsubnet={peersub}
\trightsourceip={peerin}
\tfragmentation=yes
\tauto=add
"""


def _pypluto(lab: Lab, ns: str, name: str, me: Issued, peer: Issued, pki: PKI, nick: str,
             west: bool) -> Pypluto:
    nss = lab.workdir / f"{name}-nss" / "nss"
    _nssdb(nss, me, pki, nick)
    us = Pypluto(lab, ns, name)
    us.extra_args = ["--nssdir", str(nss)]
    a = (W6, E6, W_SUB, E_SUB, W_IN, E_IN)
    b = a if west else (E6, W6, E_SUB, W_SUB, E_IN, W_IN)
    return us.start(_conf(me, peer, me6=b[0], peer6=b[1], mysub=b[2], peersub=b[3],
                          myin=b[4], peerin=b[5], nick=nick))


def _swanctl(east: Issued, west: Issued) -> str:
    return f"""\
connections {{
    east-west {{
        version = 2
        local_addrs = {E6}
        remote_addrs = {W6}
        proposals = {PROPOSAL.ss_ike}
        fragmentation = yes
        local {{
            auth = pubkey
            certs = east.crt
            id = "{east.dn}"
        }}
        remote {{
            auth = pubkey
            id = "{west.dn}"
        }}
        children {{
            net {{
                local_ts = {E_SUB}
                remote_ts = {W_SUB}
                esp_proposals = {PROPOSAL.ss_esp}
                start_action = none
            }}
        }}
    }}
}}
"""


def _ping6_through(lab: Lab) -> None:
    lab.wait_for(lambda: lab.ping(lab.west, E_IN, count=1, timeout=1, src=W_IN)[1] == 1, 10,
                 "a first echo through the tunnel")
    assert lab.ping(lab.west, E_IN, count=3, src=W_IN) == (3, 3), "west -> east"
    assert lab.ping(lab.east, W_IN, count=3, src=E_IN) == (3, 3), "east -> west"


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS,
                         ids=[p.label.replace(" ", "") for p in STRONGSWAN_PEERS])
def test_rsa4096_fragments_ipv6_mtu1280_strongswan(lab: Lab, path6: Path6,
                                                  cell: Callable[..., None], peer: PeerSpec,
                                                  role: str) -> None:
    cell(peer=peer.label, case="certificates", role=role,
         proposal="rsa4096-fragments-ipv6-mtu1280")
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)
    _check_path_mtu(lab)
    pki = PKI.build(KEY)
    west, east = pki.ee("west", KEY), pki.ee("east", KEY)
    them = peer.strongswan(lab, lab.east, "strongswan-east")
    them.start()
    sdir = them.dir / "swanctl"
    for sub in ("x509", "x509ca", "pkcs8"):
        (sdir / sub).mkdir(parents=True, exist_ok=True)
    (sdir / "x509" / "east.crt").write_bytes(east.cert_pem())
    (sdir / "x509" / "inter.crt").write_bytes(
        pki.inter.cert.public_bytes(serialization.Encoding.PEM))
    (sdir / "x509ca" / "root.crt").write_bytes(pki.root.cert_pem())
    (sdir / "pkcs8" / "east.key").write_bytes(east.key_pem())
    them.load(_swanctl(east, west))
    us = _pypluto(lab, lab.west, "pypluto-west", west, east, pki, "west", west=True)
    path6.capture()
    if role == "initiator":
        out = us.initiate()
        assert us.child_established(), f"whack --initiate: {out}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established(), 30,
                 "IKE and Child SA on both ends")
    log = them.log.read_text(errors="replace")
    assert "sending issuer cert" in log and "reassembled fragmented IKE message" in log \
        and "splitting IKE message" in log, log[-3000:]
    _ping6_through(lab)
    counts = _check_wire(path6.packets())
    assert counts["requests"] >= 2 and counts["responses"] >= 2, counts
    cell(note=f"IKE_AUTH on the 1280 link: {counts['requests']} request and "
              f"{counts['responses']} response fragments, all <= 1280 bytes")


def test_rsa4096_fragments_ipv6_mtu1280_pypluto_pair(lab: Lab, path6: Path6,
                                                    cell: Callable[..., None]) -> None:
    cell(peer="pypluto", case="certificates", role="both",
         proposal="rsa4096-fragments-ipv6-mtu1280")
    _check_path_mtu(lab)
    pki = PKI.build(KEY)
    west, east = pki.ee("west", KEY), pki.ee("east", KEY)
    w = _pypluto(lab, lab.west, "pypluto-west", west, east, pki, "west", west=True)
    e = _pypluto(lab, lab.east, "pypluto-east", east, west, pki, "east", west=False)
    path6.capture()
    out = w.initiate()
    lab.wait_for(lambda: w.child_established() and e.child_established(), 30,
                 f"Child SA on both ends (whack --initiate said: {out[-300:]})")
    _ping6_through(lab)
    counts = _check_wire(path6.packets())
    assert counts["requests"] >= 2 and counts["responses"] >= 2, counts
    cell(note=f"IKE_AUTH on the 1280 link: {counts['requests']} request and "
              f"{counts['responses']} response fragments, all <= 1280 bytes")
