"""Kernel policies of the Child SAs of one conn narrowed to different selectors.

With ``narrowing=yes`` a peer may bring up several Child SAs of the same conn, each
narrowed to other selectors (RFC 7296 §2.9).  Each must carry its own traffic: its own
outbound/inbound/forward policies, whose template names a reqid that finds its own SA
pair.  Libreswan 5.2 gives a narrowed Child SA of a template its own instance
(``spd_instantiate`` in ikev2_ts.c: its own spd, so its own policies and reqid); for a
permanent conn it overwrites the conn's one spd, so the newer Child SA takes the route
and the older one's traffic goes unrouted.  Here every Child SA with other selectors
gets a reqid (and policies) of its own instead, and deleting one never removes nor
orphans another's.  Child SAs with the SAME selectors (a duplicate, a rekey) share one
reqid and one set of policies, as before: the survivor keeps them.

Engine level: east answers CREATE_CHILD_SA requests that west's keys protect; the
harness records east's AddPolicy / DelPolicy / AddSA.
"""

from __future__ import annotations

import ipaddress

from pypluto.iana import NotifyType as N
from pypluto.iana import ProtocolID
from pypluto.ike import codec
from pypluto.ike import ts as T
from pypluto.ike.actions import AddPolicy, AddSA, DelPolicy, Updown
from pypluto.ike.sa import IKESA, ChildSA, ChildState
from pypluto.ike.ts import TS

from .harness import Net
from .test_hostile_established import _answer, _child_request, _notify_types, _request, _setup
from .test_libreswan_outcomes import HOST, conn

# west's conn proposes A; east's (narrowing=yes) allows 10.0.0.0/9 === 10.128.0.0/9
A = ("10.0.1.0/24", "10.128.1.0/24")  # (west's side, east's side)
B = ("10.0.2.0/24", "10.128.2.0/24")
C = ("10.0.3.0/24", "10.128.3.0/24")


def _t(net: str) -> TS:
    return T.from_network(ipaddress.ip_network(net))


def _net() -> tuple[Net, IKESA, IKESA]:
    wide = {"narrowing": True, "leftsubnet": "10.0.0.0/9", "rightsubnet": "10.128.0.0/9"}
    return _setup(west_kw={"narrowing": True, "leftsubnet": A[0], "rightsubnet": A[1]},
                  east_kw=wide)


def _east_child(e: IKESA, spi: bytes) -> ChildSA:
    """East's Child SA whose outbound SPI (west's inbound one) is ``spi``."""
    (c,) = [c for c in e.children if c.spi_out == int.from_bytes(spi, "big")]
    return c


def _new(net: Net, w: IKESA, e: IKESA, sel: tuple[str, str], spi: bytes,
         extra: list | None = None) -> tuple[ChildSA, list]:
    acts = _request(net, w, 36, _child_request(w, spi, tsi=[_t(sel[0])], tsr=[_t(sel[1])],
                                               extra=extra or []))
    assert _notify_types(_answer(w, acts)) == []
    c = _east_child(e, spi)
    assert c.state is ChildState.ESTABLISHED
    return c, acts


def _delete(net: Net, w: IKESA, spi: bytes) -> list:
    acts = _request(net, w, 37, [codec.delete(ProtocolID.ESP, [spi])])
    assert _answer(w, acts) is not None
    return acts


def _out(net: Net, sel: tuple[str, str]) -> list:
    """East's installed outbound policies for east's side === west's side of ``sel``."""
    return [p for p in net.east.policies if p.direction == "out"
            and str(p.src.network) == sel[1] and str(p.dst.network) == sel[0]]


def _all_ways(net: Net, sel: tuple[str, str]) -> set[str]:
    return {p.direction for p in net.east.policies
            if {str(p.src.network), str(p.dst.network)} == {sel[0], sel[1]}}


def _sa_reqids(acts: list) -> set[int]:
    return {a.sa.reqid for a in acts if isinstance(a, AddSA)}


def test_each_narrowed_child_sa_has_its_own_policies_and_reqid() -> None:
    """A second Child SA narrowed to B (the first has A) gets policies for B in all three
    directions, naming a reqid of its own that its SAs carry (before the fix it took
    over A's policies: nothing routed B into its SA)."""
    net, w, e = _net()
    (a,) = e.children
    assert _all_ways(net, A) == {"out", "in", "fwd"}
    b, acts = _new(net, w, e, B, b"\x22\x22\x22\x22")
    assert b.reqid != a.reqid
    assert _sa_reqids(acts) == {b.reqid}
    assert _all_ways(net, B) == {"out", "in", "fwd"}
    (pb,) = _out(net, B)
    assert pb.reqid == b.reqid and pb.action == "ipsec"
    (pa,) = _out(net, A)  # A's stay, with A's reqid
    assert pa.reqid == a.reqid
    assert not any(isinstance(x, DelPolicy) for x in acts)
    assert a.owns_policy and b.owns_policy
    assert e.children[0].state is ChildState.ESTABLISHED


def test_deleting_the_first_keeps_the_second_and_leaves_nothing_behind() -> None:
    """Deleting A's Child SA removes A's policies only; then deleting B's removes B's:
    no policy is left naming a reqid no SA has (before the fix A's policies outlived
    every SA, owned by B, and were never deleted)."""
    net, w, e = _net()
    (a,) = e.children
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    assert a.state is not ChildState.ESTABLISHED
    assert _all_ways(net, A) == set()
    assert _all_ways(net, B) == {"out", "in", "fwd"}
    _delete(net, w, b"\x22\x22\x22\x22")
    assert net.east.policies == []


def test_deleting_the_second_keeps_the_first() -> None:
    """Deleting B's Child SA first: A's policies stay, B's go (before the fix B's were
    never installed)."""
    net, w, e = _net()
    (a,) = e.children
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    assert _all_ways(net, B) == {"out", "in", "fwd"}
    acts = _delete(net, w, b"\x22\x22\x22\x22")
    assert b.state is not ChildState.ESTABLISHED
    assert _all_ways(net, B) == set() and _all_ways(net, A) == {"out", "in", "fwd"}
    assert not any(isinstance(x, DelPolicy) and str(x.policy.dst.network) == A[0]
                   for x in acts)
    assert a.owns_policy
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    assert net.east.policies == []


def test_duplicate_child_sa_with_the_same_selectors_shares_the_policies() -> None:
    """A second Child SA with A's very selectors is a duplicate: it shares A's reqid and
    policies (one policy per selector in the kernel); whichever goes first, the other
    keeps them, and the last one takes them away (this was right before the fix too:
    kept as a guard)."""
    for first in (0, 1):
        net, w, e = _net()
        (a,) = e.children
        d, acts = _new(net, w, e, A, b"\x44\x44\x44\x44")
        assert d.reqid == a.reqid and _sa_reqids(acts) == {a.reqid}
        assert not any(isinstance(x, AddPolicy) for x in acts)
        spis = [w.children[0].spi_in.to_bytes(4, "big"), b"\x44\x44\x44\x44"]
        _delete(net, w, spis[first])
        (pa,) = _out(net, A)
        assert pa.reqid == a.reqid
        _delete(net, w, spis[1 - first])
        assert net.east.policies == []


def test_three_selectors_and_a_duplicate_of_the_narrowed_one() -> None:
    """A, B, C and a second Child SA with B's selectors: three reqids, the duplicate
    shares B's; the kernel holds one set of policies per selector pair."""
    net, w, e = _net()
    (a,) = e.children
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    c, _ = _new(net, w, e, C, b"\x33\x33\x33\x33")
    b2, acts = _new(net, w, e, B, b"\x55\x55\x55\x55")
    assert len({a.reqid, b.reqid, c.reqid}) == 3 and b2.reqid == b.reqid
    assert not any(isinstance(x, AddPolicy) for x in acts)
    for sel, ch in ((A, a), (B, b), (C, c)):
        (p,) = _out(net, sel)
        assert p.reqid == ch.reqid
    _delete(net, w, b"\x22\x22\x22\x22")  # b2 keeps B's policies
    (p,) = _out(net, B)
    assert p.reqid == b2.reqid and b2.owns_policy
    for spi in (b"\x55\x55\x55\x55", b"\x33\x33\x33\x33"):
        _delete(net, w, spi)
    assert {(str(p.src.network), str(p.dst.network)) for p in net.east.policies} \
        == {(A[1], A[0]), (A[0], A[1])}


def test_rekey_of_the_narrowed_child_sa_keeps_its_reqid_and_policies() -> None:
    """A rekey (REKEY_SA, §2.9.2: same selectors) of B's Child SA: the successor has B's
    reqid and takes B's policies over (no new ones); deleting the old one after the
    rekey keeps them; A's are untouched throughout."""
    net, w, e = _net()
    (a,) = e.children
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    rekey = [codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, b"\x22\x22\x22\x22")]
    b1, acts = _new(net, w, e, B, b"\x66\x66\x66\x66", extra=rekey)
    assert b1.reqid == b.reqid and _sa_reqids(acts) == {b.reqid}
    assert not any(isinstance(x, (AddPolicy, DelPolicy)) for x in acts)
    _delete(net, w, b"\x22\x22\x22\x22")
    (p,) = _out(net, B)
    assert p.reqid == b1.reqid and b1.owns_policy
    (p,) = _out(net, A)
    assert p.reqid == a.reqid
    # a rekey of A's Child SA keeps A's reqid
    spi_a = w.children[0].spi_in.to_bytes(4, "big")
    a1, acts = _new(net, w, e, A, b"\x77\x77\x77\x77",
                    extra=[codec.notify(N.REKEY_SA, b"", ProtocolID.ESP, spi_a)])
    assert a1.reqid == a.reqid and _sa_reqids(acts) == {a.reqid}
    _delete(net, w, spi_a)
    for spi in (b"\x66\x66\x66\x66", b"\x77\x77\x77\x77"):
        _delete(net, w, spi)
    assert net.east.policies == []


def test_the_ike_sa_going_removes_every_child_sas_policies() -> None:
    """Deleting the IKE SA takes each Child SA's policies with it."""
    net, w, e = _net()
    _new(net, w, e, B, b"\x22\x22\x22\x22")
    _new(net, w, e, C, b"\x33\x33\x33\x33")
    _request(net, w, 37, [codec.delete(ProtocolID.IKE, [])])
    assert net.east.policies == []
    assert not net.east.kernel_sas


# ================================================================== with a routed conn's traps
def _kernel(net: Net) -> dict[tuple[str, str, str], tuple[int, str]]:
    """What east's kernel holds: one policy per (src, dst, direction), the last added
    replacing the one before (as XFRM's update); (reqid, action) of each."""
    held: dict[tuple[str, str, str], tuple[int, str]] = {}
    for a in net.east.actions:
        if isinstance(a, (AddPolicy, DelPolicy)):
            k = (str(a.policy.src), str(a.policy.dst), a.policy.direction)
            if isinstance(a, AddPolicy):
                held[k] = (a.policy.reqid, a.policy.action)
            else:
                held.pop(k, None)
    return held


def _routed_net() -> tuple[Net, IKESA, IKESA, dict]:
    wide = {"narrowing": True, "leftsubnet": "10.0.0.0/9", "rightsubnet": "10.128.0.0/9"}
    net = Net(west_kw={"narrowing": True, "leftsubnet": A[0], "rightsubnet": A[1]},
              east_kw=wide)
    net.apply(net.east, net.east.engine.route("west-east", net.now))
    traps = _kernel(net)
    assert traps and {d for (_, _, d) in traps} == {"out"}
    net.up()
    (w,) = net.west.engine.by_serial.values()
    (e,) = net.east.engine.by_serial.values()
    assert len(e.children) == 1
    return net, w, e, traps


def test_routed_conn_narrowed_child_sa_going_leaves_the_trap_and_the_other() -> None:
    """East's conn is routed (auto=route: a trap for 10.128.0.0/9 === 10.0.0.0/9 with
    the conn's reqid); A's Child SA holds that reqid, B's gets its own.  B going takes
    B's policies away and re-adds no trap over A's; A going brings the trap back
    alone (before the fix the trap was re-added at once and A's policies were
    orphaned)."""
    net, w, e, traps = _routed_net()
    (a,) = e.children
    trap_reqid = next(iter(traps.values()))[0]
    assert a.reqid == trap_reqid
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    assert b.reqid != trap_reqid
    held = _kernel(net)
    assert held[("10.128.2.0/24", "10.0.2.0/24", "out")] == (b.reqid, "ipsec")
    acts = _delete(net, w, b"\x22\x22\x22\x22")
    assert not any(isinstance(x, AddPolicy) for x in acts)
    held = _kernel(net)
    assert not [k for k in held if "10.0.2.0/24" in k]
    assert held[("10.128.1.0/24", "10.0.1.0/24", "out")] == (a.reqid, "ipsec")
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    assert _kernel(net) == traps


def test_routed_conn_narrowed_child_sa_on_the_traps_selectors_gives_the_trap_back() -> None:
    """A's Child SA holds the conn's reqid; a second one asks for the conn's full
    selectors (those of the trap): it gets its own reqid and its policy replaces the
    trap in the kernel; when it goes, the trap comes back, A's policies stay."""
    net, w, e, traps = _routed_net()
    (a,) = e.children
    full = ("10.0.0.0/9", "10.128.0.0/9")
    f, _ = _new(net, w, e, full, b"\x22\x22\x22\x22")
    assert f.reqid != a.reqid
    assert _kernel(net)[("10.128.0.0/9", "10.0.0.0/9", "out")] == (f.reqid, "ipsec")
    _delete(net, w, b"\x22\x22\x22\x22")
    held = _kernel(net)
    assert held[("10.128.0.0/9", "10.0.0.0/9", "out")] == traps[("10.128.0.0/9", "10.0.0.0/9",
                                                                 "out")]
    assert held[("10.128.1.0/24", "10.0.1.0/24", "out")] == (a.reqid, "ipsec")
    assert ("10.0.0.0/9", "10.128.0.0/9", "in") not in held
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    assert _kernel(net) == traps


def test_routed_conn_first_child_sa_going_leaves_the_narrowed_one_on_the_traps_selectors(
) -> None:
    """As above, A's Child SA (the conn's reqid) going first: the traps come back,
    except the one the narrowed Child SA's policy holds (re-adding it would send that
    Child SA's traffic to the trap again); then that one going gives the trap back."""
    net, w, e, traps = _routed_net()
    full = ("10.0.0.0/9", "10.128.0.0/9")
    f, _ = _new(net, w, e, full, b"\x22\x22\x22\x22")
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    held = _kernel(net)
    assert held[("10.128.0.0/9", "10.0.0.0/9", "out")] == (f.reqid, "ipsec")
    assert not [k for k in held if "10.0.1.0/24" in k]
    _delete(net, w, b"\x22\x22\x22\x22")
    assert _kernel(net) == traps


def test_unroute_keeps_the_policy_a_narrowed_child_sa_holds() -> None:
    """whack --unroute while a narrowed Child SA's policy holds the trap's selectors:
    the trap goes, that policy stays (a DelPolicy of the trap would have deleted it:
    the kernel names a policy by its selectors)."""
    net, w, e, traps = _routed_net()
    (a,) = e.children
    full = ("10.0.0.0/9", "10.128.0.0/9")
    f, _ = _new(net, w, e, full, b"\x22\x22\x22\x22")
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    acts = net.east.engine.unroute("west-east", net.now)
    net.apply(net.east, acts)
    assert not any(isinstance(x, DelPolicy) for x in acts)
    assert _kernel(net)[("10.128.0.0/9", "10.0.0.0/9", "out")] == (f.reqid, "ipsec")
    _delete(net, w, b"\x22\x22\x22\x22")
    assert _kernel(net) == {}


def test_unroute_while_a_narrowed_child_sa_is_up_runs_no_unroute() -> None:
    """A routed conn with a leftupdown= script: A's Child SA (the conn's reqid) gone,
    B's (narrowed, its own reqid) up: the conn is still up, so --unroute runs no
    ``unroute`` of the conn's route now (that comes with B's ``down``; before the fix
    the conn counted as down once its own reqid had no Child SA)."""
    net, w, e, traps = _routed_net()
    net.east.engine.connections["west-east"].local.updown = "/usr/local/bin/np25-updown"
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    acts = net.east.engine.unroute("west-east", net.now)
    assert not [x for x in acts if isinstance(x, Updown) and "unroute" in x.verbs]
    acts = _delete(net, w, b"\x22\x22\x22\x22")
    assert [x for x in acts if isinstance(x, Updown) and not x.up]  # B's down


def test_narrowed_inside_the_first_is_the_same_peers_and_accepted() -> None:
    """The first Child SA has the conn's full selectors; a second narrowed inside them
    (the same peer's) is accepted with its own reqid and policies, the more specific
    ones; deleting either leaves the other's in place."""
    full = ("10.0.0.0/9", "10.128.0.0/9")
    wide = {"narrowing": True, "leftsubnet": full[0], "rightsubnet": full[1]}
    net, w, e = _setup(west_kw=wide, east_kw=wide)
    (a,) = e.children
    b, _ = _new(net, w, e, B, b"\x22\x22\x22\x22")
    assert b.reqid != a.reqid
    (pb,) = _out(net, B)
    assert pb.reqid == b.reqid
    _delete(net, w, w.children[0].spi_in.to_bytes(4, "big"))
    assert _all_ways(net, full) == set() and _all_ways(net, B) == {"out", "in", "fwd"}
    _delete(net, w, b"\x22\x22\x22\x22")
    assert net.east.policies == []


def _two_ports() -> tuple[Net, IKESA]:
    east = {**HOST, "leftprotoport": "6/0", "rightprotoport": "6/0", "narrowing": "yes"}
    net = Net()
    net.west.engine.delete_connection("west-east", net.now)
    net.east.engine.delete_connection("west-east", net.now)
    for port in (7, 333):
        net.west.engine.add_connection(conn({**HOST, "leftprotoport": "6/0",
                                             "rightprotoport": f"6/{port}"}, True,
                                            f"west-east-{port}"))
    net.east.engine.add_connection(conn(east, False))
    for port in (7, 333):
        net.apply(net.west, net.west.engine.initiate(f"west-east-{port}", net.now))
        net.run()
    (e,) = net.east.engine.by_serial.values()
    return net, e


def test_libreswan_allow_narrow_08_two_conns_onto_one_narrowing_conn() -> None:
    """Libreswan 5.2 testing/pluto/ikev2-allow-narrow-08-2conns (no expected output
    there, "Work In Progress"; its description: the responder accepts two narrowed
    Child SAs as separate Child SAs under one IKE SA, and port 7 still works after 333
    came up).  East: one host-to-host conn, tcp/0 both ends, narrowing=yes; west: two
    conns, rightprotoport=6/7 and 6/333, up one after the other on one IKE SA.  East
    holds both Child SAs of its one conn, each with its own reqid and policies (before
    the fix the 333 one took the port-7 policies over and had none of its own)."""
    net, e = _two_ports()
    kids = {c.local_ts[0].sport: c for c in e.children}
    assert set(kids) == {7, 333} and all(c.conn.name == "west-east" for c in kids.values())
    assert kids[7].reqid != kids[333].reqid
    for port, c in kids.items():
        (p,) = [p for p in net.east.policies if p.direction == "out"
                and p.src.port_start == port]
        assert p.reqid == c.reqid and c.owns_policy
        sas = [s for s in net.east.kernel_sas.values() if s.serial == c.serial]
        assert len(sas) == 2 and {s.reqid for s in sas} == {c.reqid}
    # port 7's Child SA going leaves 333's
    net.apply(net.west, net.west.engine.terminate("west-east-7", net.now))
    net.run()
    assert kids[7].state is not ChildState.ESTABLISHED
    assert {p.src.port_start for p in net.east.policies if p.direction == "out"} == {333}


def test_rekeys_of_both_narrowed_child_sas_by_either_end_keep_their_reqids() -> None:
    """The two Child SAs of east's one conn (ports 7 and 333) rekeyed by the timers,
    several times over (whichever end rekeys first): each successor keeps its
    predecessor's reqid and policies; the kernel never holds a policy whose reqid no
    established Child SA has, nor one established Child SA without its policies."""
    net, e = _two_ports()
    first = {c.local_ts[0].sport: c.reqid for c in e.children}
    serials = {c.serial for c in e.children}
    for _ in range(3):
        net.advance(3 * 3600.0)
        eng = net.east.engine
        live = [c for i in eng.by_serial.values() for c in i.children
                if c.state is ChildState.ESTABLISHED and not c.replaced]
        assert {c.local_ts[0].sport: c.reqid for c in live} == first
        outs = {p.src.port_start: p.reqid for p in net.east.policies if p.direction == "out"}
        assert outs == first
        assert len(net.east.policies) == len(first) * 3  # out, in, fwd (tunnel mode)
    assert not serials & {c.serial for i in net.east.engine.by_serial.values()
                          for c in i.children}  # all were rekeyed
