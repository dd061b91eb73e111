"""The userspace plane's SA table under MOBIKE (RFC 4555 §3.5): ``SATable.move`` re-keys
an SA under its new destination and keeps its ESP state (issue 15)."""

from __future__ import annotations

import dataclasses
import ipaddress

from pypluto.iana import Encr, Integ
from pypluto.kernel import esp
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.params import IPAddress, PolicyParams, SAParams, TrafficSelector

GW = ipaddress.ip_address("192.0.2.2")
NAT = ipaddress.ip_address("192.0.2.1")  # the client's first NAT mapping ...
NAT2 = ipaddress.ip_address("198.51.100.7")  # ... and the address it moves to
NAT3 = ipaddress.ip_address("203.0.113.5")
KEY = bytes(range(36))  # AES-GCM-16-256 key and salt
REQID = 7
INNER = bytes.fromhex("4500001c0000400040010000cb007101c6336464") + bytes(8)


def _sa(src: IPAddress, dst: IPAddress, spi: int, direction: str, *, dport: int = 4500,
        protocol: str = "esp") -> SAParams:
    if protocol == "ah":
        return SAParams(src, dst, spi, direction, protocol="ah", reqid=REQID,  # type: ignore[arg-type]
                        integ_id=Integ.HMAC_SHA2_256_128, integ_key=bytes(32))
    return SAParams(src, dst, spi, direction, reqid=REQID, encr_id=Encr.AES_GCM_16,  # type: ignore[arg-type]
                    encr_key_bits=256, encr_key=KEY, encap_sport=4500 if direction == "out"
                    else dport, encap_dport=dport if direction == "out" else 4500)


def _policy(tmpl_dst: IPAddress, reqid: int = REQID) -> PolicyParams:
    sel = TrafficSelector(ipaddress.ip_network("203.0.113.0/24"))
    return PolicyParams(sel, sel, "out", reqid, GW, tmpl_dst)


def test_moved_twice_each_move_names_the_sa_where_the_previous_one_put_it() -> None:
    """The gateway's pair of SAs follows the client A -> B -> C; keys, sequence numbers,
    replay window and counters are the same state all along."""
    gw = SATable()
    out = gw.add(_sa(GW, NAT, 0x1001, "out", dport=4500), None, None)
    inb = gw.add(_sa(NAT, GW, 0x2002, "in", dport=4500), None, None)
    peer_in = esp.make_sa(_sa(GW, NAT, 0x1001, "in"))  # the client's half of 0x1001
    assert isinstance(out, esp.OutboundSA) and isinstance(peer_in, esp.InboundSA)
    first = out.encap(INNER)
    assert first is not None and peer_in.decap(first) == INNER
    for new, port in ((NAT2, 40001), (NAT3, 40002)):
        was = out.params.dst
        assert gw.move(was, 0x1001, GW, new, 4500, port)
        assert gw.move(GW, 0x2002, new, GW, port, 4500)  # inbound: our address stays
        assert gw.get(was, 0x1001) is None and gw.get(new, 0x1001) is out
        assert gw.get(GW, 0x2002) is inb and gw.by_spi[0x2002] is inb
        assert (out.params.dst, out.params.encap_dport) == (new, port)
        assert (inb.params.src, inb.params.encap_sport) == (new, port)
        assert gw.outbound_for(_policy(new)) is out
        assert gw.outbound_for(_policy(new, reqid=0)) is out  # by tunnel end, too
        assert gw.outbound_for(_policy(was, reqid=0)) is None
        pkt = out.encap(INNER)
        assert pkt is not None and peer_in.decap(pkt) == INNER  # same keys, next seq
    assert out.seq == 3 and gw.stats(NAT3, 0x1001).packets == 3  # type: ignore[union-attr]
    assert peer_in.decap(first) is None  # the window moved with it: still a replay
    assert len(gw) == 2
    assert gw.remove(NAT3, 0x1001) is out and gw.remove(GW, 0x2002) is inb
    assert len(gw) == 0 and not gw.by_spi


def test_an_sa_that_is_not_installed_is_not_moved() -> None:
    """The issue-15 symptom at the table: a rekey's outbound SA held back (RFC 7296 §2.8)
    is not in the table; moving it fails and changes nothing (the engine now rewrites
    the held SA instead of asking for a move)."""
    gw = SATable()
    gw.add(_sa(NAT, GW, 0x2002, "in"), None, None)
    assert not gw.move(NAT, 0x3003, GW, NAT2, 4500, 40001)
    assert not gw.move(NAT2, 0x2002, NAT2, GW, 40001, 4500)  # wrong destination
    assert len(gw) == 1 and gw.get(GW, 0x2002) is not None


def test_port_only_move_keeps_the_key() -> None:
    """A new NAT mapping on the same public address: only the ports change."""
    gw = SATable()
    out = gw.add(_sa(GW, NAT, 0x1001, "out"), None, None)
    assert gw.move(NAT, 0x1001, GW, NAT, 4500, 28227)
    assert gw.get(NAT, 0x1001) is out and out.params.encap_dport == 28227
    assert gw.outbound_for(_policy(NAT, reqid=0)) is out


def test_another_sa_to_the_old_address_keeps_serving_it() -> None:
    """Two outbound SAs to one address (two clients behind one NAT): moving one leaves
    the other as the SA of that tunnel end."""
    gw = SATable()
    a = gw.add(dataclasses.replace(_sa(GW, NAT, 0x1001, "out"), reqid=1), None, None)
    b = gw.add(dataclasses.replace(_sa(GW, NAT, 0x1002, "out"), reqid=2), None, None)
    assert gw.move(NAT, 0x1002, GW, NAT2, 4500, 40001)
    assert gw.outbound_for(_policy(NAT, reqid=0)) is a
    assert gw.outbound_for(_policy(NAT2, reqid=0)) is b
    assert gw.outbound_for(_policy(NAT, reqid=2)) is b


def test_ah_outbound_sa_moves_with_its_index() -> None:
    """AH (no NAT, RFC 4302): the outbound SA's tunnel-end index follows it too."""
    gw = SATable()
    out = gw.add(_sa(GW, NAT, 0x1001, "out", protocol="ah"), None, None)
    assert gw.move(NAT, 0x1001, GW, NAT2, None, None)
    assert gw.outbound_for(_policy(NAT2, reqid=0)) is out
    assert gw.outbound_for(_policy(NAT, reqid=0)) is None
