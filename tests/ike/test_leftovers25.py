"""Three gaps the round-25 red team left, engine level: Child SA work queued on an IKE
SA that is deleted while its Child SAs live on elsewhere (RFC 7296 §2.8, §2.18),
a new Child SA refused TEMPORARY_FAILURE on the redundant IKE SA of a rekey collision
(§2.8.2, §2.25), and a redirected reauthentication (RFC 5685) leaving the old IKE SA.
"""

from __future__ import annotations

import pytest

from pypluto.iana import ExchangeType
from pypluto.ike.actions import ConnectionEvent, EventKind
from pypluto.ike.tasks.child_delete import ChildDelete
from pypluto.ike.tasks.ike_rekey import IKERekey
from pypluto.ike.tasks.liveness import Liveness

from .harness import make_conn
from .test_hostile_ext25 import _reauth_redirected
from .test_loss_redteam25 import (
    KNet,
    _faulty_net,
    _heal_and_check,
    _ike,
    _logs,
    _queued,
    _settled,
    _teardown,
)
from .test_redirect import GW_B

CHILD, INFO = ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL


# ------------------------------------------------------------------ redirected reauth
@pytest.mark.parametrize("where", ["ike_auth", "ike_sa_init"])
def test_a_redirected_reauthentication_deletes_the_old_ike_sa(where: str) -> None:
    """reauth=yes: the new IKE SA of the reauthentication is redirected from gateway A
    to B (in IKE_AUTH, RFC 5685 §6, or IKE_SA_INIT, §4).  The redirect forgot that
    the IKE SA it starts at B replaces the one at A: that one lingered until it
    expired (rekeying its Child SA meanwhile, a second tunnel to A).  Now it is
    deleted once B's IKE SA is up, as a reauthentication without redirect does."""
    net = _reauth_redirected(where)
    (old,) = net.established(net.west)
    ikelifetime = old.expire_at
    assert old.rekey_at is not None and ikelifetime is not None
    net.advance(old.rekey_at - net.now + 1)  # the reauthentication starts, to A first
    net.run()
    assert net.established(net.b) and net.children(net.b)
    assert old.serial not in net.west.engine.by_serial, net.west.logs()
    assert not net.established(net.east) and not net.children(net.east)
    ikes = net.west.engine.status(net.now).ike_sas
    assert [i.remote for i in ikes] == [f"{GW_B}:500"]
    assert {(s.src, s.dst) for s in net.west.kernel_sas.values()} == {
        (net.west.addr, GW_B), (GW_B, net.west.addr)}
    net.advance(ikelifetime - net.now - 1)  # up to when A's IKE SA would have expired
    assert not any(i.remote.addr != GW_B for i in net.west.engine.by_serial.values())
    assert not [m for m in net.east.logs() if "rekey" in m.lower()], net.east.logs()


# ------------------------------------------------------------------ queued Child SA Delete
def _rekeyed_child_delete_queued_behind(net: KNet, then: str) -> None:
    """West rekeys the Child SA with ``then`` queued behind (an IKE SA rekey, or a
    liveness check); the rekey completes, so the Delete of the old Child SA is queued
    behind ``then``, which is now in flight."""
    w = net.west.engine
    net.apply(net.west, w.rekey_child("west-east", net.now))
    ike = _ike(net.west)
    if then == "rekey_ike":
        net.apply(net.west, w.rekey_ike("west-east", net.now))
    else:
        net.apply(net.west, w.guarded(ike, net.now, "test",
                                      lambda: w.queue(ike, Liveness(), net.now)))
    net.step()  # east answers the Child SA rekey, holding back its new outbound SA
    net.step()  # west installs the new Child SA; the old one's Delete waits behind
    assert ike.outstanding is not None and ike.outstanding.task.exchange == \
        (CHILD if then == "rekey_ike" else INFO)
    assert [type(t).__name__ for t in ike.tasks] == ["ChildDelete"]


def _expire(net: KNet, side_name: str = "west") -> None:
    """The IKE SA reaches its ikelifetime now (as when its rekey came late)."""
    side = getattr(net, side_name)
    ike = _ike(side)
    ike.expire_at = net.now
    side.engine.schedule(ike)
    net.apply(side, side.engine.handle_timer(net.now))


@pytest.mark.parametrize("lost", [False, True], ids=["in-order", "rekey-answer-lost-once"])
def test_ike_sa_expiring_while_its_rekey_is_in_flight_keeps_the_queued_child_delete(
        lost: bool) -> None:
    """§2.8, §2.18: west's IKE SA reaches its lifetime while its rekey is in flight,
    with the Delete of a Child SA its Child SA rekey replaced queued behind.  Deleting
    the IKE SA cleared that queue; the rekey then completed, the Child SAs moved to
    the new IKE SA, and the old Child SA's Delete was never sent: east kept the old
    Child SA and held back the new one's outbound SA until the old one expired.  Now
    the Delete waits behind the IKE SA's Delete and moves with the Child SAs."""
    net = KNet()
    net.up()
    _rekeyed_child_delete_queued_behind(net, "rekey_ike")
    _expire(net)
    if lost:  # the answer to the IKE SA rekey is lost once: west retransmits
        net.step()
        assert _queued(net)[0][:3] == ("east", CHILD, True)
        net.queue.pop(0)
    net.settle()
    assert _logs(net.west, "IKE SA expired")
    _settled(net)
    assert len(net.children(net.west)) == 1 and len(net.established(net.west)) == 1
    _teardown(net)


def test_peer_rekeying_an_expiring_ike_sa_takes_the_queued_child_delete_along() -> None:
    """§2.18: as above, but a liveness check is in flight and east rekeys the IKE SA
    before west's Delete of it starts: answering the rekey moves the Child SAs and
    their queued work to east's new IKE SA, and the cleared queue had lost the old
    Child SA's Delete (east kept it, and held back the new one's outbound SA)."""
    net = KNet()
    net.up()
    _rekeyed_child_delete_queued_behind(net, "probe")
    _expire(net)
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    assert [q[:3] for q in _queued(net)] == [("west", INFO, False), ("east", CHILD, False)]
    net.queue.reverse()  # east's rekey reaches west before the liveness answer
    net.settle()
    _settled(net)
    assert len(net.children(net.west)) == 1 and len(net.established(net.west)) == 1
    _teardown(net)


def test_ike_sa_expiring_mid_rekey_under_jitter_loss_and_duplicates() -> None:
    """The same on the lossy network of test_loss_redteam25 (0-3 s per packet, 20 %
    lost, 10 % twice): a Child SA rekey, an IKE SA rekey just behind it, and the IKE
    SA's lifetime running out while that rekey is in flight; afterwards both ends
    agree, with no Child SA left behind or held back."""
    hit = 0
    for seed in range(40):
        rnd, net = _faulty_net(seed)
        w = net.west.engine
        net.apply(net.west, w.rekey_child("west-east", net.now))
        net.until(net.now + rnd.choice([0.0, 0.5, 1.5]))
        net.apply(net.west, w.rekey_ike("west-east", net.now))
        for _ in range(40):  # the IKE SA expires once its rekey is in flight
            ike = next((i for i in w.by_serial.values() if i.outstanding is not None
                        and isinstance(i.outstanding.task, IKERekey)), None)
            if ike is not None:
                hit += any(isinstance(t, ChildDelete) for t in ike.tasks)
                ike.expire_at = net.now
                w.schedule(ike)
                break
            net.until(net.now + 0.25)
        _heal_and_check(net, seed)
    assert hit >= 3  # seeds where a Child SA's Delete waited behind that rekey


# ------------------------------------------------------------------ TEMPORARY_FAILURE
def _failed(side, conn: str) -> list[ConnectionEvent]:  # noqa: ANN001 - a harness Side
    return [a for a in side.actions if isinstance(a, ConnectionEvent)
            and a.kind is EventKind.FAILED and a.conn == conn]


@pytest.mark.parametrize("then", ["delete-first", "answer-first"])
@pytest.mark.parametrize(("seed", "who"), [(1, "west"), (7, "east")])
def test_new_child_sa_refused_on_the_redundant_ike_sa_is_retried_on_the_survivor(
        seed: int, who: str, then: str) -> None:
    """§2.8.2, §2.25: both ends rekey the IKE SA; the winner (``who``: these seeds give
    it the highest nonce) answered the peer's rekey, and ``ipsec up`` of another conn
    asks for a new Child SA (not a rekey): it goes on the peer's new IKE SA (the IKE
    SA being rekeyed is not shared).  The peer saw the collision first (the answer to the winner's
    rekey is late), found that IKE SA redundant, began deleting it and answered the
    Child SA TEMPORARY_FAILURE, which reached the winner before the collision was
    resolved there: the Child SA failed (a FAILED event, the conn down).  Now it waits
    for the rekey in flight and starts again on the IKE SA that survives, whether the
    peer's Delete of the redundant IKE SA (``delete-first``) or the answer to the
    rekey (``answer-first``) comes next."""
    net = KNet(seed=seed)
    for side, left in ((net.west, True), (net.east, False)):
        net.apply(side, side.engine.add_connection(make_conn(
            "second", local_left=left, leftsubnet="198.51.100.128/25",
            rightsubnet="203.0.113.128/25")))
    net.up()
    a = getattr(net, who)
    b = net.other(a)
    net.apply(a, a.engine.rekey_ike("west-east", net.now))
    net.apply(b, b.engine.rekey_ike("west-east", net.now))
    net.step()  # a's rekey reaches b, which answers
    net.step()  # b's rekey reaches a, which answers
    net.apply(a, a.engine.initiate("second", net.now))  # on b's new IKE SA, at once
    assert [q[:3] for q in _queued(net)] == [(b.name, CHILD, True), (a.name, CHILD, True),
                                             (a.name, CHILD, False)]
    late = net.queue.pop(0)  # b's answer to a's rekey comes last
    net.step()  # b gets its answer: b's new IKE SA is redundant, b deletes it
    assert _logs(b, "is redundant")
    net.step()  # a's Child SA reaches b on that IKE SA: TEMPORARY_FAILURE
    assert [q[:3] for q in _queued(net)] == [(b.name, INFO, False), (b.name, CHILD, True)]
    net.queue.reverse()
    net.step()  # a gets TEMPORARY_FAILURE before it knows of the collision
    if then == "answer-first":
        net.queue.insert(0, late)
    else:
        net.queue.append(late)
    net.settle()
    assert not _failed(a, "second"), a.logs()
    _settled(net)
    assert sorted(c.conn for c in net.children(a)) == ["second", "west-east"]
    _teardown(net)
