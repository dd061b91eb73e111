"""Bare shunts of on-demand conns (issue 16): negotiationshunt= and failureshunt=.

An acquire puts ``negotiationshunt=passthrough|drop`` on the packet's flow while the
conn negotiates (``hold`` needs no policy: the planes hold the packets); the Child
SA removes it.  A failed negotiation (the peer never answers, or refuses) puts
``failureshunt=`` on the flow for ``shuntlifetime``; the conn does not retry by
itself (Libreswan 5.2 ignores keyingtries= and revives only auto=start|up conns);
when the shunt expires the trap catches the flow again and the next acquire
negotiates.
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.ike.actions import AddPolicy, DelPolicy, Log, SendPacket
from pypluto.ike.settings import EngineSettings
from pypluto.ike.traps import MAX_BARE_SHUNTS, policy_key
from pypluto.params import SAAcquire, TrafficSelector

from .harness import Net
from .test_traps import _acq, _routed, kernel


def _shunts(net: Net) -> list[tuple[str, str, str]]:
    """The bare shunt policies west's kernel would hold: (src, dst, action)."""
    return [(str(p.src), str(p.dst), p.action) for p in net.west.policies
            if p.action != "ipsec"]


@pytest.mark.parametrize("shunt,action", [("passthrough", "pass"), ("drop", "drop")])
def test_negotiationshunt_on_the_flow_until_the_child_sa(shunt: str, action: str) -> None:
    net = Net(west_kw={"negotiationshunt": shunt, "auto": "route"})
    reqid = _routed(net)
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    net.apply(net.west, acts)
    adds = [a.policy for a in acts if isinstance(a, AddPolicy)]
    assert len(adds) == 1 and adds[0].action == action and adds[0].direction == "out"
    assert [str(n) for n in (adds[0].src.network, adds[0].dst.network)] == \
        ["198.51.100.1/32", "203.0.113.1/32"]
    assert len(net.west.engine.traps.bare) == 1
    net.run()
    assert len(net.children(net.west)) == 1
    assert _shunts(net) == [] and net.west.engine.traps.bare == {}


def test_hold_needs_no_shunt_policy() -> None:
    net = Net(west_kw={"auto": "route"})  # negotiationshunt=hold (the default)
    reqid = _routed(net)
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    assert not [a for a in acts if isinstance(a, AddPolicy)]
    assert net.west.engine.traps.bare == {}


@pytest.mark.parametrize("failure", ["passthrough", "drop", "reject"])
def test_failureshunt_after_a_peer_that_never_answers(failure: str) -> None:
    settings = EngineSettings(shunt_lifetime=300.0)
    net = Net(west_kw={"negotiationshunt": "drop", "failureshunt": failure, "auto": "route"},
              west_settings=settings)
    reqid = _routed(net)
    traps = kernel(net.west)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", "drop")]
    sent = len(net.sent)
    net.advance(120)  # the retransmits run out (60 s): no retry, the failure shunt
    assert not net.established(net.west) and not net.west.engine.ike_of("west-east")
    want = {"passthrough": "pass"}.get(failure, failure)
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", want)]
    assert any("failureshunt=" + failure in m for m in net.west.logs())
    bare = list(net.west.engine.traps.bare.values())
    assert bare[0].why == "failureshunt" and bare[0].expires is not None
    sent_after_fail = len(net.sent)
    net.advance(100)  # nothing is retried while the shunt stands
    assert len(net.sent) == sent_after_fail > sent
    net.advance(200)  # shuntlifetime (300 s) over: the trap alone again
    assert _shunts(net) == [] and kernel(net.west) == traps
    assert any("expired; the trap is back" in m for m in net.west.logs())
    net.cut = False
    acts = net.west.engine.acquire(_acq(net, reqid), net.now)
    assert any(isinstance(a, SendPacket) for a in acts)
    net.apply(net.west, acts)
    net.run()
    assert len(net.children(net.west)) == 1


def test_failureshunt_none_gives_the_flow_back_to_the_trap() -> None:
    net = Net(west_kw={"negotiationshunt": "passthrough", "auto": "route"})
    reqid = _routed(net)
    traps = kernel(net.west)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", "pass")]
    net.advance(120)
    assert _shunts(net) == [] and kernel(net.west) == traps
    assert any("failureshunt=none" in m for m in net.west.logs())
    # keyingtries (ignored by Libreswan 5.2): an on-demand conn does not retry by itself
    sent = len(net.sent)
    net.advance(600)
    assert len(net.sent) == sent and not net.west.engine.ike_of("west-east")
    # the next acquire negotiates at once
    assert any(isinstance(a, SendPacket)
               for a in net.west.engine.acquire(_acq(net, reqid), net.now))


def test_refused_negotiation_installs_the_failureshunt() -> None:
    """The peer answers but refuses (no PSK): AUTHENTICATION_FAILED is a failure too."""
    net = Net(west_kw={"failureshunt": "drop", "auto": "route"}, east_psk=None)
    reqid = _routed(net)
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    net.run()
    net.advance(5)
    assert not net.established(net.west)
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", "drop")]


def test_unroute_removes_bare_shunts() -> None:
    net = Net(west_kw={"negotiationshunt": "drop", "auto": "route"})
    reqid = _routed(net)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    assert _shunts(net)
    acts = net.west.engine.unroute("west-east", net.now)
    net.apply(net.west, acts)
    assert _shunts(net) == [] and kernel(net.west) == set()
    assert any(isinstance(a, DelPolicy) and a.policy.action == "drop" for a in acts)


def test_bare_shunts_are_bounded() -> None:
    """Each acquire's flow gets one shunt; past MAX_BARE_SHUNTS none are added (counted)."""
    net = Net(west_kw={"failureshunt": "drop", "auto": "route"})
    reqid = _routed(net)
    traps = net.west.engine.traps
    conn = net.west.engine.connections["west-east"]
    for i in range(MAX_BARE_SHUNTS + 10):
        ev = SAAcquire(reqid=reqid, src=TrafficSelector(ipaddress.ip_network(
            "198.51.100.1/32")), dst=TrafficSelector(ipaddress.ip_network(
                ipaddress.ip_address("203.0.113.0") + (i % 256) + (i // 256) * 65536)),
            local=net.west.addr, remote=net.east.addr)  # type: ignore[arg-type]
        traps.flows[conn.name] = ev
        traps.failed(conn, net.now, 60.0)
    assert len(traps.bare) == MAX_BARE_SHUNTS and traps.shunts_refused == 10
    assert len({policy_key(b.policies[0]) for b in traps.bare.values()}) == MAX_BARE_SHUNTS
    assert not [a for a in net.west.logs() if "Traceback" in a]
    acts = traps.expire(net.now + 61)
    assert traps.bare == {} and len([a for a in acts if isinstance(a, DelPolicy)]) == \
        MAX_BARE_SHUNTS
    assert sum(isinstance(a, Log) for a in acts) == MAX_BARE_SHUNTS


def test_any_template_with_a_subnet_routes_and_its_peer_replaces_the_trap() -> None:
    """right=%any with rightsubnet= (Libreswan routes such a template; without the
    subnet it is refused): the trap keeps the subnet's traffic, an acquire cannot
    initiate (logged once a second), the peer that connects gets the trap's reqid and
    its policies replace the trap; when its Child SA goes, the trap is back."""
    net = Net(west_kw={"right": "%any", "auto": "route"})
    acts = net.west.engine.route("west-east", net.now)
    net.apply(net.west, acts)
    pols = [a.policy for a in acts if isinstance(a, AddPolicy)]
    assert len(pols) == 1 and str(pols[0].tmpl_dst) == "0.0.0.0" and pols[0].source_ip is None
    traps = kernel(net.west)
    reqid = pols[0].reqid
    logs = [a for i in range(100)
            for a in net.west.engine.acquire(_acq(net, reqid), net.now + i / 100)]
    assert len(logs) == 1 and isinstance(logs[0], Log) and "template is unknown" in \
        logs[0].message
    net.apply(net.east, net.east.engine.initiate("west-east", net.now))
    net.run()
    kids = net.children(net.west)
    assert len(kids) == 1 and kids[0].reqid == reqid
    held = kernel(net.west)
    assert traps <= held and len(held) == 3  # the trap's key is the Child SA's out policy
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    assert not net.children(net.west) and kernel(net.west) == traps


def test_any_template_without_a_subnet_is_not_routed() -> None:
    net = Net(west_kw={"right": "%any", "rightsubnet": None, "auto": "route"})
    acts = net.west.engine.route("west-east", net.now)
    assert not [a for a in acts if isinstance(a, AddPolicy)]
    assert any("without a peer address" in a.message for a in acts if isinstance(a, Log))
