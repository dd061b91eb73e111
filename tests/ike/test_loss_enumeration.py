"""Every packet of every IKEv2 exchange lost, duplicated or overtaken, one at a time.

A deterministic companion of ``test_chaos.py``: for each scenario (establishment,
CREATE_CHILD_SA, Child SA and IKE SA rekeys both ways, deletes, liveness, the
§2.8.1 / §2.8.2 rekey collisions, a rekey crossing a delete) the packets sent
from the moment the scenario starts are numbered 0, 1, 2 ... and for each index
``k`` one fault hits packet ``k`` only:

- ``drop``: packet ``k`` is lost once (its retransmission, a later packet, is not);
- ``dup``: packet ``k`` arrives twice;
- ``swap``: packet ``k`` arrives right after packet ``k + 1`` (for the last packet of
  an exchange that is the retransmission of the request, or the cached answer).

Then the clock runs, in steps, long past ``retransmit-timeout`` (RFC 7296 §2.1:
retransmissions repair one loss; a retransmitted request is answered from the
cached response; §2.3 window of one) and both ends must agree: the same
established IKE SAs (by SPI pair), the same Child SAs (by SPI pair, mirrored),
each end's kernel SAs and policies exactly those of its established Child SAs,
nothing half-done (no exchange in flight or queued, no reserved SPI, no SA
being deleted), no internal error, a bounded number of packets, and the
scenario's outcome (after a rekey exactly one successor; §2.8.1 / §2.8.2: one
SA survives a collision).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from pypluto.iana import ExchangeType
from pypluto.ike.actions import Action, ConnectionEvent, EventKind, Log, SendPacket
from pypluto.ike.sa import ChildState, IKEState
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.ike.tasks.child_delete import delete_children
from pypluto.ike.tasks.ike_delete import delete_ike
from pypluto.ike.tasks.liveness import Liveness, send_probe
from pypluto.wire import message as wm

from .harness import Net, Side, make_conn

SETTLE_STEPS = 40  # x STEP seconds: past retransmit-timeout (60 s), a TEMPORARY_FAILURE
STEP = 5.0  # retry (10 s) and a second full retransmission cycle


class FaultNet(Net):
    """A ``Net`` that numbers the packets sent once ``counting`` and hits packet ``k``."""

    def __init__(self, **kw: object) -> None:
        self.counting = False
        self.index = 0
        self.k = -1
        self.fault = ""
        self.held: tuple[Side, SendPacket] | None = None
        super().__init__(**kw)  # type: ignore[arg-type]

    def apply(self, side: Side, acts: list[Action]) -> None:
        for a in acts:
            if not (self.counting and isinstance(a, SendPacket)):
                super().apply(side, [a])
                continue
            i = self.index
            self.index += 1
            if i != self.k:
                super().apply(side, [a])
                if self.held is not None and i == self.k + 1:  # k arrives after k + 1
                    self.queue.append(self.held)
                    self.held = None
                continue
            if self.fault == "dup":
                self.dup = True
                super().apply(side, [a])
                self.dup = False
            else:  # drop, or hold for swap: sent (counted) but not on the wire yet
                self.cut = True
                super().apply(side, [a])
                self.cut = False
                if self.fault == "swap":
                    self.held = (side, a)

    def settle(self) -> None:
        self.run(limit=500)
        for _ in range(SETTLE_STEPS):
            self.advance(STEP)
        if self.held is not None:  # nothing came after it: deliver it late, and settle
            self.queue.append(self.held)
            self.held = None
            self.run(limit=500)
            for _ in range(SETTLE_STEPS):
                self.advance(STEP)


# ------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    setup: Callable[[FaultNet], None]  # before counting (establish, ...)
    start: Callable[[FaultNet], None]  # the exchange(s) under test
    outcome: Callable[[FaultNet, dict], None]  # checks of the end state
    net_kw: tuple = ()


def _ike(side: Side):  # noqa: ANN202
    sas = [i for i in side.engine.by_serial.values() if i.established]
    assert len(sas) == 1, [i.serial for i in sas]
    return sas[0]


def _on(net: FaultNet, side: Side, work: Callable[..., list[Action]]) -> None:
    eng = side.engine
    ike = _ike(side)
    net.apply(side, eng.guarded(ike, net.now, "test", lambda: work(eng, ike)))


def _up(net: FaultNet) -> None:
    net.up()
    net.advance(1)


def _snapshot(net: FaultNet) -> dict:
    return {
        "ike": {(i.spi_i, i.spi_r) for i in net.established(net.west)},
        "child": {(c.spi_in, c.spi_out) for c in net.children(net.west)},
    }


def _counts(n_ike: int, n_child: int, *, new_ike: bool = False, new_child: bool = False
            ) -> Callable[[FaultNet, dict], None]:
    def check(net: FaultNet, before: dict) -> None:
        ike = {(i.spi_i, i.spi_r) for i in net.established(net.west)}
        child = {(c.spi_in, c.spi_out) for c in net.children(net.west)}
        assert len(ike) == n_ike, (ike, before)
        assert len(child) == n_child, (child, before)
        if new_ike:  # exactly one successor, not the old IKE SA
            assert not ike & before["ike"], (ike, before)
        elif n_ike and before.get("ike"):
            assert ike == before["ike"]
        if new_child:
            assert not child & before["child"], (child, before)
    return check


def _rekey_child(who: str) -> Callable[[FaultNet], None]:
    def start(net: FaultNet) -> None:
        side = getattr(net, who)
        net.apply(side, side.engine.rekey_child("west-east", net.now))
    return start


def _rekey_ike(who: str) -> Callable[[FaultNet], None]:
    def start(net: FaultNet) -> None:
        side = getattr(net, who)
        net.apply(side, side.engine.rekey_ike("west-east", net.now))
    return start


def _both(*starts: Callable[[FaultNet], None]) -> Callable[[FaultNet], None]:
    def start(net: FaultNet) -> None:
        for s in starts:
            s(net)
    return start


def _delete_child(who: str) -> Callable[[FaultNet], None]:
    def start(net: FaultNet) -> None:
        side = getattr(net, who)
        _on(net, side, lambda eng, ike: delete_children(eng, ike, list(ike.children), net.now))
    return start


def _delete_ike(who: str) -> Callable[[FaultNet], None]:
    def start(net: FaultNet) -> None:
        side = getattr(net, who)
        _on(net, side, lambda eng, ike: delete_ike(eng, ike, net.now))
    return start


def _second_conn(net: FaultNet) -> None:
    _up(net)
    for side, left in ((net.west, True), (net.east, False)):
        net.apply(side, side.engine.add_connection(make_conn(
            "second", local_left=left, leftsubnet="198.51.100.128/25",
            rightsubnet="203.0.113.128/25")))


def _new_child(net: FaultNet) -> None:
    conn = net.west.engine.connections["second"]
    _on(net, net.west, lambda eng, ike: eng.queue(ike, ChildCreate(conn), net.now))


def _probe(net: FaultNet) -> None:
    _on(net, net.west, lambda eng, ike: eng.queue(ike, Liveness(), net.now))


def _fast_probe(net: FaultNet) -> None:
    def work(eng, ike) -> list[Action]:  # noqa: ANN001
        acts = send_probe(eng, ike, net.now)
        eng.schedule(ike)
        return acts
    _on(net, net.west, work)


def _no_child_left(net: FaultNet, before: dict) -> None:
    """A rekey crossing a delete of the same SA: the delete wins, nothing of it is left."""
    assert len(net.established(net.west)) <= 1
    assert not net.children(net.west) and not net.children(net.east)


def _nothing(net: FaultNet, before: dict) -> None:
    assert not net.west.engine.by_serial and not net.east.engine.by_serial


SCENARIOS: dict[str, Scenario] = {
    "a-establish": Scenario(lambda net: None, _up, _counts(1, 1)),
    "b-create-child": Scenario(_second_conn, _new_child, _counts(1, 2)),
    "c-rekey-child-west": Scenario(_up, _rekey_child("west"), _counts(1, 1, new_child=True)),
    "c-rekey-child-east": Scenario(_up, _rekey_child("east"), _counts(1, 1, new_child=True)),
    "d-rekey-ike-west": Scenario(_up, _rekey_ike("west"), _counts(1, 1, new_ike=True)),
    "d-rekey-ike-east": Scenario(_up, _rekey_ike("east"), _counts(1, 1, new_ike=True)),
    "e-delete-child": Scenario(_up, _delete_child("west"), _counts(1, 0)),
    "e-delete-child-east": Scenario(_up, _delete_child("east"), _counts(1, 0)),
    "f-delete-ike": Scenario(_up, _delete_ike("west"), _nothing),
    "f-delete-ike-east": Scenario(_up, _delete_ike("east"), _nothing),
    "g-liveness": Scenario(_up, _probe, _counts(1, 1)),
    "g-liveness-fast": Scenario(_up, _fast_probe, _counts(1, 1)),
    "h-rekey-child-both": Scenario(_up, _both(_rekey_child("west"), _rekey_child("east")),
                                   _counts(1, 1, new_child=True)),
    "i-rekey-ike-both": Scenario(_up, _both(_rekey_ike("west"), _rekey_ike("east")),
                                 _counts(1, 1, new_ike=True)),
    "h-rekey-child-both-seed2": Scenario(
        _up, _both(_rekey_child("west"), _rekey_child("east")), _counts(1, 1, new_child=True),
        (("seed", 2),)),
    "i-rekey-ike-both-seed7": Scenario(
        _up, _both(_rekey_ike("west"), _rekey_ike("east")), _counts(1, 1, new_ike=True),
        (("seed", 7),)),
    "i-rekey-ike-vs-rekey-child": Scenario(
        _up, _both(_rekey_ike("west"), _rekey_child("east")),
        _counts(1, 1, new_ike=True, new_child=True)),
    "j-rekey-child-vs-delete-child": Scenario(
        _up, _both(_rekey_child("west"), _delete_child("east")), _no_child_left),
    "j-rekey-ike-vs-delete-ike": Scenario(
        _up, _both(_rekey_ike("west"), _delete_ike("east")), _nothing),
    "j-rekey-child-vs-delete-ike": Scenario(
        _up, _both(_rekey_child("west"), _delete_ike("east")), _nothing),
    "j-rekey-ike-vs-delete-child": Scenario(
        _up, _both(_rekey_ike("west"), _delete_child("east")), _counts(1, 0, new_ike=True)),
    "j-rekey-child-east-vs-delete-child-west": Scenario(
        _up, _both(_rekey_child("east"), _delete_child("west")), _no_child_left),
    "j-rekey-ike-east-vs-delete-ike-west": Scenario(
        _up, _both(_rekey_ike("east"), _delete_ike("west")), _nothing),
    "k-delete-child-both": Scenario(
        _up, _both(_delete_child("west"), _delete_child("east")), _counts(1, 0)),
    "k-delete-ike-both": Scenario(_up, _both(_delete_ike("west"), _delete_ike("east")), _nothing),
}


def _run(name: str, k: int = -1, fault: str = "") -> tuple[FaultNet, dict]:
    sc = SCENARIOS[name]
    net = FaultNet(**dict(sc.net_kw))
    sc.setup(net)
    before = _snapshot(net)
    net.sent.clear()
    net.k, net.fault, net.counting = k, fault, True
    sc.start(net)
    net.settle()
    return net, before


def _baseline_packets() -> dict[str, int]:
    """How many packets each scenario sends without a fault (the indices to hit)."""
    out = {}
    for name in SCENARIOS:
        net, _ = _run(name)
        out[name] = net.index
    return out


BASELINE = _baseline_packets()
CASES = [(name, k, fault) for name, n in BASELINE.items() for k in range(n)
         for fault in ("drop", "dup", "swap")]


# ------------------------------------------------------------------ the checks
def _no_internal_error(net: FaultNet) -> None:
    for side in (net.west, net.east):
        for a in side.actions:
            if isinstance(a, Log):
                assert "internal error" not in a.message, (side.name, a.message)
            if isinstance(a, ConnectionEvent):
                assert a.kind is not EventKind.INTERNAL_ERROR, (side.name, a)


def _tables_are(side: Side, children: list) -> None:
    """One end's SA tables, kernel SAs and policies are its IKE SAs and ``children``."""
    eng = side.engine
    assert set(eng.ike_sas) == {i.local_spi for i in eng.by_serial.values()}, side.name
    assert set(eng.children_in) == {c.spi_in for c in children}, side.name
    assert set(eng.children_out) == {c.spi_out for c in children}, side.name
    kernel = {(sa.spi, sa.direction) for sa in side.kernel_sas.values()}
    want = {(c.spi_in, "in") for c in children} | {(c.spi_out, "out") for c in children}
    assert kernel == want, (side.name, kernel, want)
    assert {p.reqid for p in side.policies} == {c.reqid for c in children}, side.name


def _settled_side(side: Side) -> None:
    """Nothing half-done on one end, and its kernel view is its established Child SAs."""
    eng = side.engine
    children = []
    for ike in eng.by_serial.values():
        assert ike.state is IKEState.ESTABLISHED, (side.name, ike.serial, ike.state)
        assert ike.outstanding is None and not ike.tasks, (side.name, ike.serial)
        assert not ike.replaced and not ike.rekeying and not ike.peer_rekeys, \
            (side.name, ike.serial)
        assert ike.followup is None
        for c in ike.children:
            assert c.state is ChildState.ESTABLISHED, (side.name, c.serial, c.state)
            assert not c.replaced and not c.rekeying and not c.peer_rekeys, \
                (side.name, c.serial)
            children.append(c)
    _tables_are(side, children)
    assert eng.n_halfopen == 0 and not eng.computing, side.name
    assert all(i.serial in eng.by_serial for i in eng.halfopen.values()), side.name


def _agree(net: FaultNet) -> None:
    w_ike = {(i.spi_i, i.spi_r) for i in net.established(net.west)}
    e_ike = {(i.spi_i, i.spi_r) for i in net.established(net.east)}
    assert w_ike == e_ike, (w_ike, e_ike)
    w_child = {(c.spi_in, c.spi_out) for c in net.children(net.west)}
    e_child = {(c.spi_out, c.spi_in) for c in net.children(net.east)}
    assert w_child == e_child, (w_child, e_child)


def _check(net: FaultNet, name: str, before: dict) -> None:
    _no_internal_error(net)
    for side in (net.west, net.east):
        _settled_side(side)
    _agree(net)
    SCENARIOS[name].outcome(net, before)
    # no storm: one loss costs a few retransmissions (0.5 s doubling up to 60 s)
    assert net.index <= 2 * BASELINE[name] + 16, (net.index, BASELINE[name])


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_baseline(name: str) -> None:
    net, before = _run(name)
    _check(net, name, before)
    assert net.index == BASELINE[name]


@pytest.mark.parametrize(("name", "k", "fault"), CASES,
                         ids=[f"{n}-p{k}-{f}" for n, k, f in CASES])
def test_one_fault(name: str, k: int, fault: str) -> None:
    net, before = _run(name, k, fault)
    _check(net, name, before)


@pytest.mark.parametrize(("name", "seed", "loser"), [
    ("h-rekey-child-both", 1, "west"), ("h-rekey-child-both-seed2", 2, "east"),
    ("i-rekey-ike-both", 1, "east"), ("i-rekey-ike-both-seed7", 7, "west")])
def test_collision_scenarios_cover_both_winners(name: str, seed: int, loser: str) -> None:
    """The collision scenarios run with seeds whose nonces make each end lose once."""
    assert dict(SCENARIOS[name].net_kw).get("seed", 1) == seed
    net, _ = _run(name)
    side = getattr(net, loser)
    assert any(m.endswith("is redundant") or m.endswith("is redundant, deleting it")
               for m in side.logs()), side.logs()


# ------------------------------------------------------------------ the bugs found
def _packet(net: FaultNet, i: int) -> tuple[str, int, bool, int]:
    """(sender, exchange, response, message ID) of the scenario's packet ``i``."""
    who, data = net.sent[i]
    h = wm.peek_header(data)
    return who, int(h.exchange), h.response, h.message_id


def test_peer_deletes_its_redundant_ike_sa_before_our_rekey_is_answered() -> None:
    """§2.8.2: both ends rekey the IKE SA; east's answer to west's rekey is lost.
    East (lowest nonce) deletes its redundant new IKE SA at once; west gets that
    Delete before its own rekey is answered (by the retransmission).  The Child SA
    west had moved to the redundant IKE SA must not die with it: it goes back to the
    old IKE SA and on to west's new one.  West ended with no Child SA while east kept
    it."""
    net, before = _run("i-rekey-ike-both", 2, "drop")
    assert _packet(net, 2) == ("east", ExchangeType.CREATE_CHILD_SA, True, 2)
    _check(net, "i-rekey-ike-both", before)
    assert len(net.children(net.west)) == 1 and len(net.west.kernel_sas) == 2


def test_winner_deletes_the_redundant_ike_sa_the_loser_forgot() -> None:
    """§2.8.2 / §2.25.2: both ends rekey the IKE SA; west's answer to east's rekey is
    lost.  West wins and deletes the old IKE SA; east gets that Delete before its
    answer and forgets its own rekey, so it never deletes the redundant IKE SA it
    made on west.  West kept that IKE SA, unknown to east, for ever."""
    net, before = _run("i-rekey-ike-both", 3, "drop")
    assert _packet(net, 3) == ("west", ExchangeType.CREATE_CHILD_SA, True, 0)
    _check(net, "i-rekey-ike-both", before)
    assert len(net.west.engine.by_serial) == 1 and len(net.east.engine.by_serial) == 1
    assert any("no answer to Delete" in m for m in net.west.logs())


def test_ike_rekey_while_our_child_delete_is_in_flight() -> None:
    """§2.25: east deletes the Child SA while west rekeys the IKE SA; east's Delete is
    lost.  East answered the rekey, the old IKE SA went with its Delete request in
    flight, and east kept the Child SA half-deleted (DELETING, kernel SAs installed)
    on the new IKE SA while west kept it established.  Now east answers
    TEMPORARY_FAILURE until its own exchange is done; the rekey comes later."""
    net, before = _run("j-rekey-ike-vs-delete-child", 1, "drop")
    assert _packet(net, 1) == ("east", ExchangeType.INFORMATIONAL, False, 0)
    _check(net, "j-rekey-ike-vs-delete-child", before)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert any("TEMPORARY_FAILURE" in m for m in net.west.logs())


def test_crossing_deletes_of_the_ike_sa_are_answered() -> None:
    """§2.25.2: both ends delete the IKE SA at once; each answers the other's Delete
    and forgets its own.  Each end dropped the peer's Delete because its IKE SA was
    no longer "established" (it was deleting), and both retransmitted theirs until
    retransmit-timeout: 14 packets and 60 s instead of 4 packets and no wait."""
    net, before = _run("k-delete-ike-both")
    _check(net, "k-delete-ike-both", before)
    info = ExchangeType.INFORMATIONAL
    hdrs = [_packet(net, i) for i in range(len(net.sent))]
    assert sorted(hdrs) == sorted([("west", info, False, 2), ("east", info, False, 0),
                                   ("east", info, True, 2), ("west", info, True, 0)])
    for side in (net.west, net.east):
        assert any("deleting IKE SA (deleted by peer)" in m for m in side.logs())
        assert not any("no answer to Delete" in m for m in side.logs())
