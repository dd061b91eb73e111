"""Two engines back to back with a fake clock and a seeded rng.

Every datagram an engine emits is carried to the other engine as bytes (the
engines serialize and parse everything); a ``Net`` can drop, duplicate,
reorder packets and play a NAT in front of west.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

from pypluto.config.ids import parse_id
from pypluto.config.model import Connection, End
from pypluto.config.proposals import parse_proposals
from pypluto.ike.actions import (
    Action,
    AddPolicy,
    AddSA,
    ConnectionEvent,
    DelPolicy,
    DelSA,
    Endpoint,
    Log,
    SendKeepalive,
    SendPacket,
)
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

WEST = ipaddress.ip_address("192.0.2.1")
EAST = ipaddress.ip_address("192.0.2.2")
NAT_PUBLIC = ipaddress.ip_address("203.0.113.9")
PSK = b"very secret shared key for tests"


class Store:
    """A SecretStore with one PSK for every pair (or None)."""

    def __init__(self, psk: bytes | None) -> None:
        self.psk = psk
        self.asked: list[tuple] = []

    def psk_for(self, local, remote, local_addr, remote_addr):  # noqa: ANN001
        self.asked.append((local, remote))
        return self.psk


def make_conn(name: str = "west-east", *, local_left: bool, ike: str | None = None,
              esp: str | None = None, leftid: str | None = "@west.example",
              rightid: str | None = "@east.example", leftsubnet: str | None = "198.51.100.0/24",
              rightsubnet: str | None = "203.0.113.0/24", left: object = WEST,
              right: object = EAST, **kw: object) -> Connection:
    def end(addr: object, ident: str | None, subnet: str | None) -> End:
        host_addr = None if addr == "%any" else ipaddress.ip_address(addr)  # type: ignore[arg-type]
        return End(host=str(addr), host_addr=host_addr,
                   id=parse_id(ident) if ident else None,
                   subnets=[ipaddress.ip_network(subnet)] if subnet else [])
    c = Connection(name=name, left=end(left, leftid, leftsubnet),
                   right=end(right, rightid, rightsubnet), authby="secret", auto="add",
                   local_is_left=local_left)
    if ike:
        c.ike = parse_proposals(ike, "IKE")
        c.raw["ike"] = ike
    if esp:
        c.esp = parse_proposals(esp, "ESP")
        c.raw["esp"] = esp
    for k, v in kw.items():
        if not hasattr(c, k):
            raise AttributeError(k)
        setattr(c, k, v)
    return c


@dataclass
class Side:
    name: str
    engine: Engine
    addr: object
    actions: list[Action] = field(default_factory=list)
    kernel_sas: dict = field(default_factory=dict)  # (dst, spi) -> SAParams
    policies: list = field(default_factory=list)
    events: list[ConnectionEvent] = field(default_factory=list)
    keepalives: int = 0

    def logs(self) -> list[str]:
        return [a.message for a in self.actions if isinstance(a, Log)]


class Net:
    def __init__(self, *, west_kw: dict | None = None, east_kw: dict | None = None,
                 west_psk: bytes | None = PSK, east_psk: bytes | None = PSK, seed: int = 1,
                 nat: bool = False, west_settings: EngineSettings | None = None,
                 east_settings: EngineSettings | None = None) -> None:
        self.now = 1000.0
        rw, re_ = random.Random(seed), random.Random(seed + 100)
        self.west = Side("west", Engine(west_settings or EngineSettings(), Store(west_psk),
                                        rng=rw.randbytes, local_addrs=[WEST]), WEST)
        self.east = Side("east", Engine(east_settings or EngineSettings(), Store(east_psk),
                                        rng=re_.randbytes, local_addrs=[EAST]), EAST)
        self.nat = nat
        self.nat_map: dict[Endpoint, Endpoint] = {}
        self.queue: list[tuple[Side, SendPacket]] = []  # in flight
        self.drop_next: int = 0  # drop that many packets
        self.dup = False
        self.reorder = False
        self.cut = False  # drop everything
        self.sent: list[tuple[str, bytes]] = []
        wc = make_conn(local_left=True, **(west_kw or {}))
        ec = make_conn(local_left=False, **(east_kw or {}))
        self.apply(self.west, self.west.engine.add_connection(wc))
        self.apply(self.east, self.east.engine.add_connection(ec))

    def other(self, side: Side) -> Side:
        return self.east if side is self.west else self.west

    def apply(self, side: Side, acts: list[Action]) -> None:
        for a in acts:
            side.actions.append(a)
            if isinstance(a, SendPacket):
                self.sent.append((side.name, a.data))
                if self.cut:
                    continue
                if self.drop_next:
                    self.drop_next -= 1
                    continue
                self.queue.append((side, a))
                if self.dup:
                    self.queue.append((side, a))
            elif isinstance(a, SendKeepalive):
                side.keepalives += 1
            elif isinstance(a, AddSA):
                side.kernel_sas[(a.sa.dst, a.sa.spi)] = a.sa
            elif isinstance(a, DelSA):
                side.kernel_sas.pop((a.dst, a.spi), None)
            elif isinstance(a, AddPolicy):
                side.policies.append(a.policy)
            elif isinstance(a, DelPolicy):
                if a.policy in side.policies:
                    side.policies.remove(a.policy)
            elif isinstance(a, ConnectionEvent):
                side.events.append(a)

    def _translate(self, frm: Side, pkt: SendPacket) -> tuple[Endpoint, Endpoint] | None:
        """(local, remote) as the receiver sees them."""
        src, dst = pkt.local, pkt.remote
        if self.nat:
            if frm is self.west:
                if src not in self.nat_map:
                    port = 40000 + len(self.nat_map)
                    self.nat_map[src] = Endpoint(NAT_PUBLIC, port)
                src = self.nat_map[src]
            else:
                if dst.addr != NAT_PUBLIC:
                    return None
                back = {v: k for k, v in self.nat_map.items()}
                if dst not in back:
                    return None
                dst = back[dst]
        return dst, src

    def step(self) -> bool:
        if not self.queue:
            return False
        if self.reorder and len(self.queue) > 1:
            self.queue.append(self.queue.pop(0))
        frm, pkt = self.queue.pop(0)
        to = self.other(frm)
        t = self._translate(frm, pkt)
        if t is None:
            return True
        local, remote = t
        self.apply(to, to.engine.receive(bytes(pkt.data), local, remote, self.now))
        return True

    def run(self, limit: int = 200) -> None:
        n = 0
        while self.step():
            n += 1
            assert n < limit, "message storm"

    def advance(self, seconds: float, step: float | None = None) -> None:
        """Move the clock, firing timers in order, delivering what they send."""
        end = self.now + seconds
        while True:
            nxt = [t for t in (self.west.engine.next_timer(), self.east.engine.next_timer())
                   if t is not None]
            t = min(nxt) if nxt else None
            if t is None or t > end:
                break
            self.now = max(self.now, t)
            for side in (self.west, self.east):
                nt = side.engine.next_timer()
                if nt is not None and nt <= self.now:
                    self.apply(side, side.engine.handle_timer(self.now))
            self.run()
        self.now = end

    def up(self) -> None:
        self.apply(self.west, self.west.engine.initiate("west-east", self.now))
        self.run()

    def established(self, side: Side) -> list:
        st = side.engine.status(self.now)
        return [i for i in st.ike_sas if i.state == "STATE_V2_ESTABLISHED_IKE_SA"]

    def children(self, side: Side) -> list:
        st = side.engine.status(self.now)
        return [c for i in st.ike_sas for c in i.children
                if c.state == "STATE_V2_ESTABLISHED_CHILD_SA"]


def check_pair(net: Net) -> None:
    """Both ends agree on one Child SA: SPIs, keys and algorithms mirror each other."""
    ws = [s for s in net.west.kernel_sas.values()]
    es = [s for s in net.east.kernel_sas.values()]
    assert ws and es
    for w in ws:
        match = [e for e in es if e.spi == w.spi]
        assert len(match) == 1, f"no peer SA for SPI {w.spi:#x}"
        e = match[0]
        assert {w.direction, e.direction} == {"in", "out"}
        assert w.encr_key == e.encr_key and w.integ_key == e.integ_key
        assert (w.encr_id, w.encr_key_bits, w.integ_id, w.esn) == \
            (e.encr_id, e.encr_key_bits, e.integ_id, e.esn)
        assert w.src == e.src and w.dst == e.dst
