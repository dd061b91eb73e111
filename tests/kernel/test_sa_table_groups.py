"""The userspace plane's outbound indexes after removals (issue 18).

When the SA that serves a reqid or a peer address goes, the newest remaining
outbound SA of that reqid / address takes over.  The table keeps the members of
each group so that it no longer scans every SA for the heir (that scan made the
removal of N Child SAs to one peer, newest first, quadratic).  These tests hold
the table to the scan's answers: a model replays every operation with the scan.
"""

from __future__ import annotations

import ipaddress
import random

from pypluto.iana import Encr
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.params import IPAddress, PolicyParams, SAParams, TrafficSelector

GW = ipaddress.ip_address("192.0.2.2")
PEERS = [ipaddress.ip_address(a) for a in ("192.0.2.1", "198.51.100.7", "203.0.113.5")]
KEY = bytes(range(36))
SEL = TrafficSelector(ipaddress.ip_network("203.0.113.0/24"))


def _out(dst: IPAddress, spi: int, reqid: int) -> SAParams:
    return SAParams(GW, dst, spi, "out", reqid=reqid, encr_id=Encr.AES_GCM_16,  # type: ignore[arg-type]
                    encr_key_bits=256, encr_key=KEY)


class _ScanModel:
    """The table's outbound indexes as the scan kept them: (dst, spi) -> (reqid, dst)
    in table order, and the SA each index serves."""

    def __init__(self) -> None:
        self.sas: dict[tuple[str, int], tuple[int, str]] = {}
        self.by_reqid: dict[int, tuple[str, int]] = {}
        self.by_peer: dict[str, tuple[str, int]] = {}

    def add(self, dst: str, spi: int, reqid: int) -> None:
        self.sas[(dst, spi)] = (reqid, dst)
        if reqid:
            self.by_reqid[reqid] = (dst, spi)
        self.by_peer[dst] = (dst, spi)

    def remove(self, dst: str, spi: int) -> None:
        key = (dst, spi)
        reqid, _ = self.sas.pop(key)
        if self.by_reqid.get(reqid) == key:
            del self.by_reqid[reqid]
            for k, (r, _d) in self.sas.items():
                if r == reqid:
                    self.by_reqid[reqid] = k
        if self.by_peer.get(dst) == key:
            del self.by_peer[dst]
            for k, (_r, d) in self.sas.items():
                if d == dst:
                    self.by_peer[dst] = k

    def move(self, dst: str, spi: int, new_dst: str) -> None:
        key, new_key = (dst, spi), (new_dst, spi)
        reqid, _ = self.sas[key]
        if new_key != key:
            del self.sas[key]
            self.sas[new_key] = (reqid, new_dst)
            if self.by_reqid.get(reqid) == key:
                self.by_reqid[reqid] = new_key
        if self.by_peer.get(dst) == key:
            del self.by_peer[dst]
            for k, (_r, d) in self.sas.items():
                if d == dst and k != new_key:
                    self.by_peer[dst] = k
        self.by_peer[new_dst] = new_key


def _served(table: SATable, *, reqid: int = 0, peer: IPAddress = GW) -> tuple[str, int] | None:
    osa = table.outbound_for(PolicyParams(SEL, SEL, "out", reqid, GW, peer))
    return None if osa is None else (str(osa.params.dst), osa.params.spi)


def _check(table: SATable, model: _ScanModel) -> None:
    for reqid in range(1, 6):
        assert _served(table, reqid=reqid) == model.by_reqid.get(reqid), reqid
    for peer in PEERS:
        assert _served(table, peer=peer) == model.by_peer.get(str(peer)), peer


def test_random_adds_updates_removals_and_moves_serve_what_the_scan_served() -> None:
    rng = random.Random(18)
    table, model = SATable(), _ScanModel()
    for _step in range(3000):
        op = rng.random()
        if op < 0.45 or not model.sas:  # a new SA, or an update of one in place
            if model.sas and rng.random() < 0.2:
                dst, spi = rng.choice(list(model.sas))
                reqid = model.sas[(dst, spi)][0]
            else:
                dst, spi = str(rng.choice(PEERS)), rng.randrange(0x100, 0x200)
                if (dst, spi) in model.sas:
                    reqid = model.sas[(dst, spi)][0]
                else:
                    reqid = rng.randrange(0, 6)
            table.add(_out(ipaddress.ip_address(dst), spi, reqid), None, None)
            model.add(dst, spi, reqid)
        elif op < 0.85:
            dst, spi = rng.choice(list(model.sas))
            assert table.remove(ipaddress.ip_address(dst), spi) is not None
            model.remove(dst, spi)
        else:  # MOBIKE: to another address, or to the same one (new ports only)
            dst, spi = rng.choice(list(model.sas))
            new_dst = str(rng.choice(PEERS))
            if (new_dst, spi) in model.sas and new_dst != dst:
                continue  # the table keeps one SA per (destination, SPI)
            assert table.move(ipaddress.ip_address(dst), spi, GW,
                              ipaddress.ip_address(new_dst), 4500, 4500)
            model.move(dst, spi, new_dst)
        _check(table, model)
    assert len(table) == len(model.sas)


def test_removing_child_sas_newest_first_hands_each_index_to_the_next_older() -> None:
    table = SATable()
    peer = PEERS[0]
    for spi in range(0x101, 0x165):
        table.add(_out(peer, spi, 1), None, None)
    for spi in range(0x164, 0x101, -1):
        table.remove(peer, spi)
        assert _served(table, reqid=1) == (str(peer), spi - 1)
        assert _served(table, peer=peer) == (str(peer), spi - 1)
    table.remove(peer, 0x101)
    assert _served(table, reqid=1) is None and _served(table, peer=peer) is None
