"""Red team, round 26: on-demand conns (auto=route) and their acquires under hostile traffic.

Engine (ike/traps.py, the acquire glue of ike/engine.py) and the userspace plane's
trap code (kernel/userspace/traps.py: the hold queue, selectors' trap lookup), no
namespaces.  What earlier rounds left out:

* an on-demand negotiation that ends without a FAILED event of its own (``ipsec down``
  while it negotiates; its Child SA queued on another conn's IKE SA that fails; an
  internal error) must not leave its negotiation shunt behind: a passthrough one on
  the flow's /32 outranks the conn's own policy, so that flow would stay in the clear
  even once the tunnel is up (and the conn looked "busy" for another minute);
* ``down`` / ``delete`` of a conn whose acquire's Child SA waits on another conn's IKE
  SA: that Child SA must never come up afterwards;
* the hold queue: packets of a trap nobody sends to any more must not keep the
  total full for every other trap (only their own next packet expired them);
* the acquire's packet is offered first only inside the conn's protocol and ports;
* floods over a wide selector from many sources to many destinations: one acquire,
  one negotiation, one shunt, one IKE SA for many conns to the same peer.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from pypluto.ike import traps as trapmod
from pypluto.ike.actions import AddPolicy, ConnectionEvent, DelPolicy, EventKind, SendPacket
from pypluto.ike.sa import IKEState
from pypluto.ike.settings import EngineSettings
from pypluto.kernel.userspace import traps as uptraps
from pypluto.kernel.userspace.selectors import OutboundPolicies
from pypluto.kernel.userspace.traps import HoldQueue, acquire_for
from pypluto.params import PolicyParams, SAAcquire, TrafficSelector

from .harness import Net, make_conn
from .test_traps import _acq, _routed, kernel

B_KW = {"leftsubnet": "198.51.100.0/25", "rightsubnet": "10.0.0.0/24"}


def _shunts(net: Net) -> list[tuple[str, str, str]]:
    return [(str(p.src), str(p.dst), p.action) for p in net.west.policies
            if p.action != "ipsec"]


def _ev(reqid: int, src: str, dst: str, net: Net, proto: int = 0, sport: int = 0,
        dport: int = 0) -> SAAcquire:
    def sel(a: str, port: int) -> TrafficSelector:
        n = ipaddress.ip_network(a)
        return TrafficSelector(n, proto, port, port) if port else TrafficSelector(n, proto)
    return SAAcquire(reqid=reqid, src=sel(src, sport), dst=sel(dst, dport),
                     local=net.west.addr, remote=net.east.addr)  # type: ignore[arg-type]


def _with_b(kw: dict) -> tuple[Net, int, int]:
    """west-east and "b" (other subnets, same peers and IDs), both routed on west."""
    net = Net(west_kw=kw)
    net.apply(net.west, net.west.engine.add_connection(make_conn("b", local_left=True,
                                                                 **B_KW, **kw)))
    net.apply(net.east, net.east.engine.add_connection(make_conn("b", local_left=False,
                                                                 **B_KW)))
    ra = _routed(net)
    acts = net.west.engine.route("b", net.now)
    net.apply(net.west, acts)
    rb = next(a.policy.reqid for a in acts if isinstance(a, AddPolicy))
    return net, ra, rb


def _b_queued(kw: dict) -> tuple[Net, int, int]:
    """Acquires for west-east, then for "b": b's Child SA waits on west-east's IKE SA."""
    net, ra, rb = _with_b(kw)
    net.apply(net.west, net.west.engine.acquire(_acq(net, ra), net.now))
    acts = net.west.engine.acquire(_ev(rb, "198.51.100.2/32", "10.0.0.1/32", net), net.now)
    net.apply(net.west, acts)
    assert not [a for a in acts if isinstance(a, SendPacket)]  # no second IKE SA
    assert any("queue Child SA" in a.message for a in acts if hasattr(a, "message"))
    return net, ra, rb


# --- the end of an on-demand negotiation ---------------------------------------------


def test_down_while_an_acquire_negotiates_gives_the_flow_back_to_the_trap() -> None:
    """``ipsec down`` of a routed conn while its acquire's IKE SA negotiates (Libreswan 5.2:
    TEARDOWN_IKE in ROUTED_NEGOTIATION, "restoring ondemand"): the passthrough shunt on
    the packet's flow goes with the negotiation, the trap alone is left, and the next
    acquire negotiates at once.  Before: the pass shunt stayed for ever (the flow in
    the clear, even after a later Child SA: the /32 outranks the conn's policy) and
    acquires were ignored for retransmit_timeout + 1 s."""
    net = Net(west_kw={"negotiationshunt": "passthrough", "auto": "route"})
    reqid = _routed(net)
    traps = kernel(net.west)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", "pass")]
    net.apply(net.west, net.west.engine.terminate("west-east", net.now + 1))
    assert _shunts(net) == [] and kernel(net.west) == traps
    t = net.west.engine.traps
    assert (t.bare, t.flows, t.pending) == ({}, {}, {})
    assert any("negotiation ended; the trap is back" in m for m in net.west.logs())
    net.cut = False
    acts = net.west.engine.acquire(_acq(net, reqid, "203.0.113.5"), net.now + 2)
    assert any(isinstance(a, SendPacket) for a in acts)
    net.apply(net.west, acts)
    net.run()
    assert len(net.children(net.west)) == 1
    assert _shunts(net) == [] and t.bare == {} and t.flows == {}


@pytest.mark.parametrize("failure", ["none", "drop"])
def test_child_queued_on_another_conns_ike_sa_that_fails(failure: str) -> None:
    """b's acquire queues its Child SA on west-east's IKE SA still in IKE_SA_INIT (as
    Libreswan 5.2's find_viable_parent_for_connection: no IKE flood to the peer); that
    IKE SA fails, its FAILED event names west-east only.  b's negotiation failed too:
    its negotiation shunt goes, its failureshunt= comes (none: the trap), and the next
    acquire of b negotiates at once.  Before: b's passthrough shunt stayed for ever."""
    kw = {"negotiationshunt": "passthrough", "failureshunt": failure, "auto": "route"}
    net, ra, rb = _with_b(kw)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, ra), net.now))
    net.apply(net.west, net.west.engine.acquire(
        _ev(rb, "198.51.100.2/32", "10.0.0.1/32", net), net.now))
    assert len([s for s in _shunts(net) if s[2] == "pass"]) == 2
    net.advance(200)  # the retransmits run out
    assert [e.conn for e in net.west.events if e.kind is EventKind.FAILED] == ["west-east"]
    t = net.west.engine.traps
    assert t.flows == {} and t.pending == {}
    want = [] if failure == "none" else [
        ("198.51.100.1/32", "203.0.113.1/32", "drop"), ("198.51.100.2/32", "10.0.0.1/32", "drop")]
    assert sorted(_shunts(net)) == want
    assert all(b.why == "failureshunt" for b in t.bare.values())
    net.cut = False
    acts = net.west.engine.acquire(_ev(rb, "198.51.100.3/32", "10.0.0.9/32", net), net.now)
    assert any(isinstance(a, SendPacket) for a in acts)  # not "busy"
    net.apply(net.west, acts)
    net.run()
    assert [c.conn for c in net.children(net.west)] == ["b"]
    assert not [s for s in _shunts(net) if s[2] == "pass"]


@pytest.mark.parametrize("how", ["down", "delete"])
def test_down_or_delete_of_a_conn_queued_on_another_conns_ike_sa(how: str) -> None:
    """b's acquire queued its Child SA on west-east's negotiating IKE SA; ``down b`` or
    ``delete b`` then: that Child SA never comes up (Libreswan deletes the conn's
    larval Child SA with it), b's negotiation shunt goes; west-east comes up alone.
    Before: b's Child SA (of a deleted conn, too) was negotiated once the IKE SA was
    up, with its policies installed."""
    net, ra, rb = _b_queued({"negotiationshunt": "passthrough", "auto": "route"})
    eng = net.west.engine
    acts = eng.terminate("b", net.now) if how == "down" else \
        eng.delete_connection("b", net.now)
    net.apply(net.west, acts)
    assert ("198.51.100.2/32", "10.0.0.1/32", "pass") not in _shunts(net)
    assert "b" not in eng.traps.flows and "b" not in eng.traps.pending
    net.run()
    assert [c.conn for c in net.children(net.west)] == ["west-east"]
    # no Child SA policy of b (in/fwd); after down b's trap (one out policy) alone
    assert [p.direction for p in net.west.policies if p.conn_name == "b"] == \
        (["out"] if how == "down" else [])
    assert {sa.reqid for sa in net.west.kernel_sas.values()} == {ra} and _shunts(net) == []
    if how == "down":  # b is still routed: its trap is there, its next acquire negotiates
        assert eng.routed("b")
        acts = eng.acquire(_ev(rb, "198.51.100.2/32", "10.0.0.1/32", net), net.now)
        net.apply(net.west, acts)
        net.run()
        assert sorted(c.conn for c in net.children(net.west)) == ["b", "west-east"]


def test_child_sa_waiting_long_on_another_conns_ike_sa_is_asked_for_once() -> None:
    """b (retransmit-timeout=10s) queued its Child SA on west-east's IKE SA, which keeps
    retransmitting its IKE_SA_INIT (retransmit-timeout=120s).  Acquires of b after
    b's own patience (11 s) see that its Child SA still waits there: nothing more is
    queued, and one Child SA of b comes up.  Before: each later acquire queued another
    one (three Child SAs of b with the same selectors)."""
    net = Net(west_kw={"auto": "route", "retransmit_timeout": 120.0})
    net.apply(net.west, net.west.engine.add_connection(make_conn(
        "b", local_left=True, auto="route", retransmit_timeout=10.0, **B_KW)))
    net.apply(net.east, net.east.engine.add_connection(make_conn("b", local_left=False,
                                                                 **B_KW)))
    ra = _routed(net)
    acts = net.west.engine.route("b", net.now)
    net.apply(net.west, acts)
    rb = next(a.policy.reqid for a in acts if isinstance(a, AddPolicy))
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, ra), net.now))
    for k, wait in ((2, 0), (3, 12), (4, 20)):
        net.advance(wait)
        net.apply(net.west, net.west.engine.acquire(
            _ev(rb, f"198.51.100.{k}/32", "10.0.0.1/32", net), net.now))
    (ike,) = net.west.engine.ike_of("west-east")
    assert [getattr(t, "conn", None) and t.conn.name for t in ike.tasks] == ["b"]
    net.cut = False
    net.advance(90)
    assert sorted(c.conn for c in net.children(net.west)) == ["b", "west-east"]


def test_internal_error_of_the_acquires_ike_sa_installs_the_failureshunt() -> None:
    """An internal error tears the acquire's IKE SA down with INTERNAL_ERROR (no FAILED):
    the negotiation failed all the same, so failureshunt= replaces the negotiation
    shunt.  Before: the drop shunt on the flow stayed with no expiry."""
    net = Net(west_kw={"negotiationshunt": "passthrough", "failureshunt": "drop",
                       "auto": "route"}, west_settings=EngineSettings(shunt_lifetime=60.0))
    reqid = _routed(net)
    net.cut = True
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    ike = net.west.engine.ike_of("west-east")[0]
    assert ike.state is IKEState.INIT_I

    def boom() -> list:
        raise RuntimeError("test")
    acts = net.west.engine.guarded(ike, net.now, "in a test", boom)
    net.apply(net.west, acts)
    assert any(isinstance(a, ConnectionEvent) and a.kind is EventKind.INTERNAL_ERROR
               for a in acts)
    assert _shunts(net) == [("198.51.100.1/32", "203.0.113.1/32", "drop")]
    (b,) = net.west.engine.traps.bare.values()
    assert b.why == "failureshunt" and b.expires == net.now + 60.0
    net.advance(61)
    assert _shunts(net) == [] and net.west.engine.traps.bare == {}


def test_a_missed_end_never_leaves_two_negotiation_shunts() -> None:
    """Traps alone: a second negotiation of a conn whose first never reported its end
    replaces the first's negotiation shunt instead of leaving it behind."""
    net = Net(west_kw={"negotiationshunt": "passthrough", "auto": "route"})
    reqid = _routed(net)
    conn = net.west.engine.connections["west-east"]
    t = net.west.engine.traps
    first = t.negotiating(conn, _acq(net, reqid, "203.0.113.1"), net.now)
    second = t.negotiating(conn, _acq(net, reqid, "203.0.113.2"), net.now + 100)
    assert [a.policy for a in second if isinstance(a, DelPolicy)] == \
        [a.policy for a in first if isinstance(a, AddPolicy)]
    assert [k[1] for k in t.bare] == ["203.0.113.2/32"]
    assert t.established("west-east") and t.bare == {}


def test_acquire_racing_unroute_and_for_an_unrouted_conn() -> None:
    """An acquire already negotiating when the conn is unrouted: its shunt goes with the
    trap, the negotiation may still finish (as a plain tunnel: no trap comes back when
    its Child SA goes); an acquire naming the old reqid afterwards is ignored (counted)."""
    net = Net(west_kw={"negotiationshunt": "drop", "auto": "route"})
    reqid = _routed(net)
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    net.apply(net.west, net.west.engine.unroute("west-east", net.now))
    assert _shunts(net) == [] and net.west.engine.traps.flows == {}
    ignored = net.west.engine.traps.ignored
    assert not [a for a in net.west.engine.acquire(_acq(net, reqid), net.now)
                if isinstance(a, SendPacket)]
    assert net.west.engine.traps.ignored == ignored + 1
    net.run()
    assert len(net.children(net.west)) == 1 and net.west.engine.traps.bare == {}
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    assert kernel(net.west) == set()


# --- floods ----------------------------------------------------------------------------


def test_wide_selector_flood_costs_one_negotiation_and_one_shunt() -> None:
    """rightsubnet=0.0.0.0/0, acquires from 250 sources to 40 destinations each (as the
    XFRM plane raises one per flow): one IKE_SA_INIT, one negotiation shunt (the first
    flow's), nothing else until it ends; the packet offered first is the first flow."""
    net = Net(west_kw={"negotiationshunt": "drop", "auto": "route",
                       "rightsubnet": "0.0.0.0/0"},
              east_kw={"rightsubnet": "0.0.0.0/0"})
    reqid = _routed(net)
    acts = []
    for s in range(1, 251):
        for d in range(40):
            acts += net.west.engine.acquire(
                _ev(reqid, f"198.51.100.{s}/32", f"203.0.{113 + d % 3}.{d}/32", net), net.now)
    net.apply(net.west, acts)
    assert sum(isinstance(a, SendPacket) for a in acts) == 1
    assert [k for k in net.west.engine.traps.bare] == [("198.51.100.1/32", "203.0.113.0/32")]
    assert net.west.engine.traps.acquires == 10_000
    net.run()
    assert len(net.children(net.west)) == 1 and _shunts(net) == []
    ike = net.west.engine.ike_of("west-east")[0]
    assert [str(x) for x in ike.acquired_ts or ()] == [str(x) for x in trapmod.packet_ts(
        _ev(reqid, "198.51.100.1/32", "203.0.113.0/32", net), ike.conn) or ()]


def test_many_routed_conns_to_one_peer_make_one_ike_sa() -> None:
    """Twenty routed conns to the same peer, acquires for all of them at once and again:
    one IKE_SA_INIT, the other conns' Child SAs wait on it (Libreswan 5.2 likewise)."""
    net = Net(west_kw={"auto": "route"})
    reqids = {"west-east": _routed(net)}
    for i in range(20):
        sub = {"leftsubnet": "198.51.100.0/24", "rightsubnet": f"10.{i}.0.0/16"}
        net.apply(net.west, net.west.engine.add_connection(
            make_conn(f"c{i}", local_left=True, auto="route", **sub)))
        net.apply(net.east, net.east.engine.add_connection(
            make_conn(f"c{i}", local_left=False, **sub)))
        acts = net.west.engine.route(f"c{i}", net.now)
        net.apply(net.west, acts)
        reqids[f"c{i}"] = next(a.policy.reqid for a in acts if isinstance(a, AddPolicy))
    sent = len(net.sent)
    for k in range(1, 4):
        for n, r in reqids.items():
            dst = f"203.0.113.{k}/32" if n == "west-east" else f"10.{n[1:]}.0.{k}/32"
            net.apply(net.west, net.west.engine.acquire(
                _ev(r, f"198.51.100.{k}/32", dst, net), net.now + k))
    assert len(net.sent) - sent == 1
    net.run(limit=2000)
    assert len(net.established(net.west)) == 1 and len(net.children(net.west)) == 21
    assert net.west.engine.traps.flows == {} and net.west.engine.traps.pending == {}


# --- the acquire's packet and the conn's protocol/ports ---------------------------------


def test_acquired_packet_is_offered_only_inside_the_conns_protoport() -> None:
    """RFC 7296 §2.9: the packet's selectors go first only when the conn's own selectors
    (rightprotoport=udp/53 here) hold them; else the configured ones alone are offered.
    Before: a udp/54 (or tcp/53) packet was offered as the first TSr."""
    net = Net(west_kw={"auto": "route"})
    conn = net.west.engine.connections["west-east"]
    conn.remote.protoport = (17, 53)
    src, dst = "198.51.100.1/32", "203.0.113.1/32"
    inside = trapmod.packet_ts(_ev(5, src, dst, net, 17, 4000, 53), conn)
    assert inside is not None and (inside[1].proto, inside[1].sport, inside[1].eport) == \
        (17, 53, 53)
    assert trapmod.packet_ts(_ev(5, src, dst, net, 17, 4000, 54), conn) is None
    assert trapmod.packet_ts(_ev(5, src, dst, net, 6, 4000, 53), conn) is None
    assert trapmod.packet_ts(_ev(5, src, dst, net), conn) is None  # any protocol: wider


# --- the userspace plane's trap code ------------------------------------------------------

TRAP = PolicyParams(TrafficSelector(ipaddress.ip_network("198.51.100.0/24")),
                    TrafficSelector(ipaddress.ip_network("0.0.0.0/0")), "out", reqid=7,
                    tmpl_src=ipaddress.ip_address("192.0.2.1"),
                    tmpl_dst=ipaddress.ip_address("192.0.2.2"))


def _udp(src: str, dst: str, ident: int = 0, sport: int = 4000, dport: int = 53,
         proto: int = 17) -> bytes:
    l4 = struct.pack("!HHHH", sport, dport, 8, 0)
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, ident & 0xFFFF, 0, 64, proto, 0,
                       ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed) + l4


def _pol(reqid: int) -> PolicyParams:
    return PolicyParams(TRAP.src, TRAP.dst, "out", reqid=reqid, tmpl_src=TRAP.tmpl_src,
                        tmpl_dst=TRAP.tmpl_dst)


def test_quiet_traps_do_not_keep_the_hold_total_full() -> None:
    """16 traps fill the hold total (64 each) and then see no more packets (their
    negotiations failed; their flows now hit failure shunts).  Once those packets are
    older than the hold time, another trap's packets are held again, and the stale
    ones are counted as dropped.  Before: the stale packets counted against the total
    until their own trap saw a packet again: every other trap dropped everything."""
    t = [100.0]
    q = HoldQueue(clock=lambda: t[0])
    per = uptraps.HOLD_PER_REQID
    for r in range(uptraps.HOLD_TOTAL // per):
        for i in range(per):
            q.trap(_udp("198.51.100.1", "203.0.113.1", i), _pol(100 + r))
    assert len(q) == uptraps.HOLD_TOTAL
    q.trap(_udp("198.51.100.9", "203.0.113.9"), _pol(999))  # full: dropped
    assert q.dropped == 1
    t[0] += q.hold_seconds + 1
    ev = q.trap(_udp("198.51.100.9", "203.0.113.9", 1), _pol(999))
    assert ev is not None and ev.reqid == 999
    assert len(q) == 1 and q.dropped == 1 + uptraps.HOLD_TOTAL
    assert [struct.unpack_from("!H", p, 4)[0] for p in q.release(999)] == [1]
    assert len(q) == 0 and q.release(100) == []


def test_a_flood_on_a_full_hold_queue_sweeps_once_per_expiry() -> None:
    """The sweep of stale packets runs only when one can be due: a flood of 20,000 packets
    while the total is full of fresh ones costs one sweep, not one per packet."""
    t = [0.0]
    q = HoldQueue(clock=lambda: t[0])
    calls = []
    real = q._sweep
    q._sweep = lambda now: (calls.append(now), real(now))[1]  # type: ignore[method-assign]
    for r in range(uptraps.HOLD_TOTAL // uptraps.HOLD_PER_REQID):
        for i in range(uptraps.HOLD_PER_REQID):
            q.trap(_udp("198.51.100.1", "203.0.113.1", i), _pol(100 + r))
    t[0] = 1.0
    for i in range(20_000):
        q.trap(_udp("198.51.100.2", f"203.0.113.{i % 250}", i), _pol(999))
    assert len(calls) == 1 and len(q) == uptraps.HOLD_TOTAL
    t[0] = q.hold_seconds + 0.5  # the first ones are due
    q.trap(_udp("198.51.100.2", "203.0.113.1", 7), _pol(999))
    assert len(calls) == 2 and len(q) == 1


def test_wide_trap_flood_from_many_sources_one_acquire_bounded_hold_in_order() -> None:
    """A 0.0.0.0/0 trap, 5,000 packets from 50 sources to 100 destinations within one
    ACQUIRE_INTERVAL: one acquire (the first packet's flow as its selectors), the first
    HOLD_PER_REQID packets held, the rest counted dropped (``hold_overflow``), the held
    ones released oldest first; the next interval raises the next acquire."""
    t = [10.0]
    q = HoldQueue(clock=lambda: t[0])
    out = OutboundPolicies([TRAP])
    evs = []
    n = 0
    for s in range(1, 51):
        for d in range(100):
            pkt = _udp(f"198.51.100.{s}", f"203.0.{113 + d % 2}.{d}", n)
            found = out.lookup(pkt)
            assert found is not None and found[0] is TRAP
            evs.append(q.trap(pkt, found[0]))
            n += 1
    got = [e for e in evs if e is not None]
    assert len(got) == 1 and got[0] == acquire_for(_udp("198.51.100.1", "203.0.113.0"), TRAP)
    assert q.held == uptraps.HOLD_PER_REQID and q.dropped == n - uptraps.HOLD_PER_REQID
    t[0] += uptraps.ACQUIRE_INTERVAL
    assert q.trap(_udp("198.51.100.77", "203.0.113.77", n), TRAP) is not None
    assert [struct.unpack_from("!H", p, 4)[0] for p in q.release(7)] == \
        list(range(uptraps.HOLD_PER_REQID))


def test_port_limited_trap_catches_only_its_flows() -> None:
    """A trap for udp/53 only (rightprotoport=udp/53): a tcp/53 or udp/54 packet matches
    no policy (no acquire, nothing held); a udp/53 one raises the acquire with its
    protocol and ports, which the engine then offers first."""
    pol = PolicyParams(TrafficSelector(ipaddress.ip_network("198.51.100.0/24"), 17),
                       TrafficSelector(ipaddress.ip_network("203.0.113.0/24"), 17, 53, 53),
                       "out", reqid=9, tmpl_src=TRAP.tmpl_src, tmpl_dst=TRAP.tmpl_dst)
    out = OutboundPolicies([pol])
    assert out.lookup(_udp("198.51.100.1", "203.0.113.1", proto=6)) is None
    assert out.lookup(_udp("198.51.100.1", "203.0.113.1", dport=54)) is None
    q = HoldQueue()
    found = out.lookup(_udp("198.51.100.1", "203.0.113.1"))
    assert found is not None
    ev = q.trap(_udp("198.51.100.1", "203.0.113.1"), found[0])
    assert ev is not None and (str(ev.src), str(ev.dst)) == \
        ("198.51.100.1/32/17/4000", "203.0.113.1/32/17/53")
    net = Net(west_kw={"auto": "route"})
    conn = net.west.engine.connections["west-east"]
    conn.remote.protoport = (17, 53)
    conn.local.protoport = (17, 0)
    ts = trapmod.packet_ts(ev, conn)
    assert ts is not None and (ts[1].sport, ts[1].eport) == (53, 53)


def test_held_bytes_are_bounded() -> None:
    """A TUN read may be a 64 KiB GSO packet: 16 traps of 64 such packets each would hold
    some 60 MiB.  The bytes held over all traps stay within HOLD_BYTES (the rest are
    dropped and counted); what leaves the queue gives its room back."""
    q = HoldQueue(clock=lambda: 5.0)
    big = _udp("198.51.100.1", "203.0.113.1") + bytes(60_000)
    for r in range(uptraps.HOLD_TOTAL // uptraps.HOLD_PER_REQID):
        for _ in range(uptraps.HOLD_PER_REQID):
            q.trap(big, _pol(100 + r))
    fit = uptraps.HOLD_BYTES // len(big)
    assert q.held == fit and len(q) == fit and q.dropped == uptraps.HOLD_TOTAL - fit
    out = q.release(100)
    assert len(out) == uptraps.HOLD_PER_REQID and all(p is big for p in out)
    for _ in range(uptraps.HOLD_PER_REQID):
        q.trap(big, _pol(999))
    assert len(q) == fit and len(q.release(999)) == uptraps.HOLD_PER_REQID
