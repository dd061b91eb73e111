"""A Child SA for a subset of several selectors (RFC 7296 §2.9), as Libreswan 5.2's
ikev2-selectors-44in4-rw-ike-mismatch-01 (the responder has one more) and -02 (the
initiator has one more).

With ``narrowing=no`` (the default) each end lists whole selectors; the responder
answers those of its own the initiator proposed, the initiator accepts an answer made
of whole selectors it proposed (a subset), never one it did not propose or narrowed.
The end whose selector was left out installs block policies for it (Libreswan's
"accepted selectors [...](block)" and its ``action block`` kernel policy), so that no
selector of the conn goes out in cleartext because the peer did not take it.  We block
inbound (and forwarded) cleartext for it too (RFC 4301 §4.4.1 DISCARD), where Libreswan
leaves an IPsec inbound policy: either way nothing unprotected gets through.
"""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.config.model import bump_generation
from pypluto.iana import PayloadType as PT
from pypluto.ike import codec
from pypluto.ike import ts as T
from pypluto.ike.actions import AddPolicy, DelPolicy
from pypluto.ike.sa import ChildState
from pypluto.ike.traps import policy_key
from pypluto.ike.ts import TS

from .harness import Net
from .test_hostile_establishment import _hostile_auth_reply, _replace, _west_failed_clean
from .test_libreswan_outcomes import WNET, _children, conn, make_net

S = [f"203.0.113.{n}/26" for n in (0, 64, 128, 192)]
TWO, THREE = ",".join(S[:2]), ",".join(S[:3])


def _t(net: str) -> TS:
    return T.from_network(ipaddress.ip_network(net))


def _kinds(side) -> set[tuple[str, str, str, str]]:  # noqa: ANN001
    """(src, dst, direction, action) of the policies installed on ``side``."""
    return {(str(p.src.network), str(p.dst.network), p.direction, p.action)
            for p in side.policies}


def _ipsec(local: str, remotes: list[str]) -> set[tuple[str, str, str, str]]:
    out = set()
    for r in remotes:
        out |= {(local, r, "out", "ipsec"), (r, local, "in", "ipsec"),
                (r, local, "fwd", "ipsec")}
    return out


def _blocked(local: str, remote: str) -> set[tuple[str, str, str, str]]:
    return {(local, remote, "out", "drop"), (remote, local, "in", "drop"),
            (remote, local, "fwd", "drop")}


def _up(west: str, east: str, **kw: str) -> Net:
    net = make_net({"rightsubnet": west, **kw}, {"rightsubnet": east, **kw})
    net.up()
    net.advance(120)
    return net


def _child_ts(net: Net) -> tuple[tuple[list[str], list[str]], tuple[list[str], list[str]]]:
    (w,), (e,) = _children(net.west, net), _children(net.east, net)
    return (w.local_ts, w.remote_ts), (e.local_ts, e.remote_ts)


# ------------------------------------------------------------------ both roles
def test_responder_answers_the_common_selectors_and_blocks_its_extra_one() -> None:
    """-01: west (initiator) proposes two, east has three: east answers the two; east's
    third one is blocked on east (it never goes out in cleartext), west blocks nothing."""
    net = _up(TWO, THREE)
    assert _child_ts(net) == (([WNET], S[:2]), (S[:2], [WNET]))
    assert _kinds(net.west) == _ipsec(WNET, S[:2])
    assert _kinds(net.east) == _ipsec(S[0], [WNET]) | _ipsec(S[1], [WNET]) \
        | _blocked(S[2], WNET)
    assert any("left out of the Child SA are blocked" in m and f"{S[2]}==={WNET}" in m
               for m in net.east.logs()), net.east.logs()


def test_initiator_accepts_a_subset_and_blocks_what_was_left_out() -> None:
    """-02: west proposes three, east answers two (a subset of whole selectors west
    proposed): west accepts it and blocks 198.51.100.0/24 -> 203.0.113.128/26 (Libreswan:
    ``192.0.30.0/24(block)``, ``dir out action block``); the Child SA does not carry it."""
    net = _up(THREE, TWO)
    assert _child_ts(net) == (([WNET], S[:2]), (S[:2], [WNET]))
    assert _kinds(net.west) == _ipsec(WNET, S[:2]) | _blocked(WNET, S[2])
    assert _kinds(net.east) == _ipsec(S[0], [WNET]) | _ipsec(S[1], [WNET])
    # no policy sends the left-out selector's traffic anywhere but to the bin
    assert not [p for p in net.west.policies if S[2] in (str(p.src.network),
                                                          str(p.dst.network))
                and p.action != "drop"]
    assert any(f"{WNET}==={S[2]}" in m for m in net.west.logs() if "blocked" in m)


def test_no_common_selector_is_still_refused() -> None:
    """Several selectors each, none in common: TS_UNACCEPTABLE, nothing installed."""
    net = _up(TWO, ",".join(S[2:]))
    assert not _children(net.west, net) and not _children(net.east, net)
    assert any("TS_UNACCEPTABLE" in m for m in net.west.logs()), net.west.logs()
    assert not net.west.policies and not net.east.policies


def test_narrowing_no_single_selector_mismatch_is_still_refused() -> None:
    """One selector each, the responder's a part of the initiator's: narrowing=no
    neither narrows nor takes a subset of a selector (Libreswan's ikev2-allow-narrow-01)."""
    net = _up("203.0.113.0/24", S[0])
    assert not _children(net.west, net) and not _children(net.east, net)
    assert not net.west.policies and not net.east.policies
    assert T.fit([_t("203.0.113.0/24")], [_t(S[0])], False) is None
    assert not T.answer_ok([_t(S[0])], [_t("203.0.113.0/24")], [_t("203.0.113.0/24")],
                           False)


@pytest.mark.parametrize("wide_first", [True, False])
def test_responder_prefers_a_conn_that_takes_all_of_its_selectors(wide_first: bool) -> None:
    """East has two conns for west: one with three selectors (it would answer two and
    block its third) and one with exactly the two west proposes.  Whichever was added
    first, east picks the one that leaves nothing out."""
    order = [THREE, TWO] if wide_first else [TWO, THREE]
    net = make_net({"rightsubnet": TWO}, {"rightsubnet": order[0]})
    net.east.engine.add_connection(conn({"rightsubnet": order[1]}, False, name="other"))
    bump_generation()
    net.up()
    net.advance(120)
    (e,) = _children(net.east, net)
    assert e.conn == ("other" if wide_first else "west-east")
    assert _child_ts(net) == (([WNET], S[:2]), (S[:2], [WNET]))
    assert not [p for p in net.east.policies if p.action == "drop"]


def test_second_child_goes_to_the_conn_answering_all_proposed() -> None:
    """CREATE_CHILD_SA (§2.9): west's second conn proposes two selectors; east's IKE SA
    conn has only the first of them (it would answer a subset), another east conn has
    both: that one answers, and west blocks nothing."""
    net = make_net({"rightsubnet": S[0]}, {"rightsubnet": S[0]})
    net.west.engine.add_connection(conn({"rightsubnet": TWO}, True, name="second"))
    net.east.engine.add_connection(conn({"rightsubnet": TWO}, False, name="second"))
    bump_generation()
    net.up()
    net.advance(5)
    net.apply(net.west, net.west.engine.initiate("second", net.now))
    net.run()
    net.advance(5)
    w = {c.conn: (c.local_ts, c.remote_ts) for c in _children(net.west, net)}
    e = {c.conn for c in _children(net.east, net)}
    assert w == {"west-east": ([WNET], [S[0]]), "second": ([WNET], S[:2])}, net.west.logs()
    assert e == {"west-east", "second"}
    assert not [p for p in net.west.policies + net.east.policies if p.action == "drop"]


# ------------------------------------------------------------------ hostile answers
def _answer_tsr(tss: list[str]):  # noqa: ANN202
    def mut(pl: list) -> list:
        return _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, [_t(t) for t in tss]))
    return mut


def _refused(net: Net) -> None:
    assert net.established(net.west)
    assert not net.children(net.west)
    _west_failed_clean(net)
    assert any("Child SA failed" in m and "are not acceptable" in m
               for m in net.west.logs()), net.west.logs()


def test_answer_with_a_selector_never_proposed_is_refused() -> None:
    """A responder answering a selector west never proposed next to two it did
    (§2.9: the answer is a subset of the proposal): refused, nothing installed."""
    net = make_net({"rightsubnet": THREE}, {"rightsubnet": THREE})
    _hostile_auth_reply(net, _answer_tsr([S[0], S[1], S[3]]))
    _refused(net)


def test_answer_narrowing_one_of_the_selectors_is_refused() -> None:
    """narrowing=no: a part of a proposed selector is not a whole one (not a subset of
    whole selectors), even next to a whole one."""
    net = make_net({"rightsubnet": THREE}, {"rightsubnet": THREE})
    _hostile_auth_reply(net, _answer_tsr([S[0], "203.0.113.64/27"]))
    _refused(net)


L6, R6 = "2001:db8:1::/64", "2001:db8:2::/64"


def test_answer_pairing_no_family_is_refused() -> None:
    """A dual-stack conn; the answer takes west's IPv4 selector in TSi and its IPv6 one
    in TSr, each a subset of the proposal, but together no (local, remote) pair of one
    family: a Child SA carrying nothing (and blocking everything) is refused."""
    dual = {"leftsubnet": f"{WNET},{L6}", "rightsubnet": f"{S[0]},{R6}"}
    net = make_net(dual, dual)

    def mut(pl: list) -> list:
        pl = _replace(pl, PT.TSi, codec.ts_payload(PT.TSi, [_t(WNET)]))
        return _replace(pl, PT.TSr, codec.ts_payload(PT.TSr, [_t(R6)]))
    _hostile_auth_reply(net, mut)
    _refused(net)
    assert not T.pairs([_t(WNET)], [_t(R6)])
    assert T.pairs([_t(WNET)], [_t(R6), _t(S[0])])


def test_request_pairing_no_family_is_refused_by_the_responder() -> None:
    """East is dual-stack; west proposes its IPv4 subnet against an IPv6 one of east's.
    Each is one of east's, but together they pair nothing: TS_UNACCEPTABLE, not a Child
    SA that carries nothing and blocks the rest."""
    net = make_net({"rightsubnet": R6},
                   {"leftsubnet": f"{WNET},{L6}", "rightsubnet": f"{S[0]},{R6}"})
    net.up()
    net.advance(120)
    assert not _children(net.west, net) and not _children(net.east, net)
    assert any("peer answered TS_UNACCEPTABLE" in m for m in net.west.logs()), net.west.logs()
    assert not net.east.policies and not net.east.kernel_sas


def test_dual_stack_peer_taking_one_family_blocks_the_other() -> None:
    """West has both families, east only IPv4: the Child SA is IPv4, and west blocks
    its IPv6 pair rather than leave it to go out in cleartext."""
    net = make_net({"leftsubnet": f"{WNET},{L6}", "rightsubnet": f"{S[0]},{R6}"},
                   {"rightsubnet": S[0]})
    net.up()
    net.advance(120)
    assert _child_ts(net) == (([WNET], [S[0]]), ([S[0]], [WNET]))
    assert _kinds(net.west) == _ipsec(WNET, [S[0]]) | _blocked(L6, R6)


def test_honest_subset_answer_through_the_hostile_path_is_accepted() -> None:
    """The same path with an honest subset (control for the two refusals above)."""
    net = make_net({"rightsubnet": THREE}, {"rightsubnet": THREE})
    _hostile_auth_reply(net, _answer_tsr([S[1]]))
    (w,) = net.children(net.west)
    assert (w.local_ts, w.remote_ts) == ([WNET], [S[1]])
    assert _kinds(net.west) == _ipsec(WNET, [S[1]]) | _blocked(WNET, S[0]) \
        | _blocked(WNET, S[2])


# ------------------------------------------------------------------ lifetime of the blocks
def _engine_children(side) -> list:  # noqa: ANN001
    """``side``'s established ChildSA objects."""
    return [c for i in side.engine.by_serial.values() for c in i.children
            if c.state is ChildState.ESTABLISHED]


@pytest.mark.parametrize("west,east,blocker,pair", [
    (THREE, TWO, "west", (WNET, S[2])),  # west blocks: the rekey's initiator (finish)
    (TWO, THREE, "east", (S[2], WNET)),  # east blocks: the rekey's responder (accept)
])
def test_blocks_follow_the_child_sa_through_rekey_and_removal(
        west: str, east: str, blocker: str, pair: tuple[str, str]) -> None:
    """A rekey keeps the Child SA's selectors (§2.9.2) and its blocks; when the Child
    SA goes, its block policies go with it (nothing stale is left)."""
    net = _up(west, east)
    side = getattr(net, blocker)
    before = _kinds(side)
    assert _blocked(*pair) <= before
    (old,) = _engine_children(side)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(30)
    (c,) = _engine_children(side)
    assert c is not old and old.state is ChildState.DELETING  # rekeyed, the old one gone
    assert c.blocked == ((_t(pair[0]), _t(pair[1])),)
    assert _kinds(side) == before
    # the Child SA that now owns the policies goes: its blocks go with it
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert not net.west.policies and not net.east.policies


def _backend_view(side) -> set[tuple[str, str, str, str]]:  # noqa: ANN001
    """``side``'s policies as a backend keeps them: keyed by (selectors, direction,
    reqid), a later AddPolicy replacing the earlier one (XFRM's UPDPOLICY)."""
    table: dict = {}
    for a in side.actions:
        if isinstance(a, AddPolicy):
            table[policy_key(a.policy)] = a.policy
        elif isinstance(a, DelPolicy):
            table.pop(policy_key(a.policy), None)
    return {(str(p.src.network), str(p.dst.network), p.direction, p.action)
            for p in table.values()}


def test_routed_conn_trap_becomes_a_block_and_comes_back() -> None:
    """auto=route on west (three selectors): the trap of the selector east left out is
    replaced by a block while the Child SA is up (Libreswan: the state's block replaces
    the shunt), and the conn's traps are all back when the Child SA goes."""
    net = make_net({"rightsubnet": THREE}, {"rightsubnet": TWO})
    net.apply(net.west, net.west.engine.route("west-east", net.now))
    traps = {(WNET, r, "out", "ipsec") for r in S[:3]}
    assert _backend_view(net.west) == traps
    net.up()
    net.advance(120)
    assert _child_ts(net)[0] == ([WNET], S[:2])
    assert _backend_view(net.west) == _ipsec(WNET, S[:2]) | _blocked(WNET, S[2])
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert _backend_view(net.west) == traps


def test_left_out_units() -> None:
    """``ts.left_out``: the pairs of one family with an end the Child SA does not touch."""
    l4, l6, r6 = _t(WNET), _t("2001:db8:1::/64"), _t("2001:db8:2::/64")
    r = [_t(s) for s in S[:3]]
    assert T.left_out([l4], r[:2], [l4], r) == ((l4, r[2]),)
    assert T.left_out([l4], r, [l4], r) == ()
    # a dual-stack conn whose peer took only IPv4: the IPv6 pair is blocked
    assert T.left_out([l4], r[:1], [l4, l6], [r[0], r6]) == ((l6, r6),)
    assert T.fit([r[0], r[1]], r, False) == r[:2]
    assert T.answer_ok(r[:2], r, r, False) and not T.answer_ok([r[0], r[0]._replace(
        end=r[0].end - 1)], r, r, False)
