"""On-demand in the engine (ike/traps.py): route, acquire, revert to the trap, unroute.

Issue 16: the first acquire starts the negotiation; an ACQUIRE storm costs no
exchange; acquires no routed conn covers are counted and logged at most once a
second; when the Child SA goes the trap stays; a peer that never answers lets a
later acquire try again.
"""

from __future__ import annotations

import ipaddress

from pypluto.ike import traps as traps_mod
from pypluto.ike.actions import AddPolicy, DelPolicy, Log, SendPacket
from pypluto.ike.traps import PolicyKey, policy_key
from pypluto.params import SAAcquire, TrafficSelector

from .harness import Net, Side


def _acq(net: Net, reqid: int, dst: str = "203.0.113.1") -> SAAcquire:
    return SAAcquire(reqid=reqid, src=TrafficSelector(ipaddress.ip_network("198.51.100.1/32")),
                     dst=TrafficSelector(ipaddress.ip_network(f"{dst}/32")),
                     local=net.west.addr, remote=net.east.addr)  # type: ignore[arg-type]


def kernel(side: Side) -> set[PolicyKey]:
    """The policies a kernel would hold after the side's actions (same key: replaced)."""
    held: set[PolicyKey] = set()
    for a in side.actions:
        if isinstance(a, AddPolicy):
            held.add(policy_key(a.policy))
        elif isinstance(a, DelPolicy):
            held.discard(policy_key(a.policy))
    return held


def _routed(net: Net) -> int:
    acts = net.west.engine.route("west-east", net.now)
    net.apply(net.west, acts)
    pols = [a.policy for a in acts if isinstance(a, AddPolicy)]
    assert pols and all(p.direction == "out" and p.action == "ipsec" for p in pols)
    return pols[0].reqid


def test_acquire_brings_it_up_and_a_storm_costs_nothing() -> None:
    net = Net()
    reqid = _routed(net)
    assert net.west.engine.routed("west-east")
    traps = kernel(net.west)
    assert len(traps) == 1
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    assert any(isinstance(a, SendPacket) for a in acts)  # IKE_SA_INIT
    net.apply(net.west, acts)
    # 10,000 more while it negotiates: no packet, no log line each
    storm = [a for _ in range(10_000)
             for a in net.west.engine.acquire(_acq(net, reqid), net.now)]
    assert storm == []
    net.run()
    assert len(net.children(net.west)) == 1
    # RFC 7296 §2.9: the packet was offered first in TSi/TSr; the answer (east's
    # configured subnets, no narrowing) is accepted and the Child SA covers the /24s
    ike = net.west.engine.ike_of("west-east")[0]
    assert ike.acquired_ts is not None
    assert [str(t) for t in ike.acquired_ts] == [str(t) for t in traps_mod.packet_ts(
        _acq(net, reqid), ike.conn) or ()]
    child = ike.children[0]
    assert [str(n) for t in child.local_ts for n in t.networks()] == ["198.51.100.0/24"]
    # and while it is up
    assert net.west.engine.acquire(_acq(net, reqid), net.now) == []
    # the Child SA goes: its policies go, the trap is (re)installed, nothing lost
    acts = net.west.engine.terminate("west-east", net.now)
    net.apply(net.west, acts)
    assert kernel(net.west) == traps
    assert not [a for a in acts if isinstance(a, DelPolicy) and a.policy.direction == "out"]
    # a later acquire negotiates again
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    assert any(isinstance(a, SendPacket) for a in acts)
    net.apply(net.west, acts)
    net.run()
    assert len(net.children(net.west)) == 1
    # unroute while up: the SA keeps its policies; down then removes everything
    net.apply(net.west, net.west.engine.unroute("west-east", net.now))
    assert not net.west.engine.routed("west-east")
    assert len(kernel(net.west)) == 3  # out, in, fwd of the Child SA
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    assert kernel(net.west) == set()


def test_uncovered_acquires_are_counted_and_rate_limited() -> None:
    net = Net()
    _routed(net)
    logs = []
    for i in range(1000):
        logs += [a for a in net.west.engine.acquire(_acq(net, 999_999), net.now + i / 1000)
                 if isinstance(a, Log)]
    assert len(logs) == 1 and "no routed connection covers it" in logs[0].message
    assert net.west.engine.traps.ignored == 1000
    later = net.west.engine.acquire(_acq(net, 999_999), net.now + 2)
    assert len(later) == 1 and "(1000 ignored since the last report)" in later[0].message


def test_peer_never_answers_then_a_later_acquire_retries() -> None:
    net = Net()
    reqid = _routed(net)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    assert net.west.engine.acquire(_acq(net, reqid), net.now + 1) == []
    net.advance(200)  # retransmits run out: the IKE SA is gone, the trap stays
    assert not net.established(net.west)
    assert net.west.engine.routed("west-east") and len(kernel(net.west)) == 1
    net.cut = False
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    assert any(isinstance(a, SendPacket) for a in acts)
    net.apply(net.west, acts)
    net.run()
    assert len(net.children(net.west)) == 1


def test_delete_and_shutdown_remove_the_trap() -> None:
    net = Net()
    _routed(net)
    acts = net.west.engine.delete_connection("west-east", net.now)
    net.apply(net.west, acts)
    assert kernel(net.west) == set()
    net2 = Net()
    _routed(net2)
    net2.apply(net2.west, net2.west.engine.shutdown(net2.now))
    assert kernel(net2.west) == set()
