"""Rekey collisions while additional key exchanges run (RFC 9370 §2.2.2 with RFC 7296
§2.8.1, §2.8.2, §2.25) and the responder's bounded wait for IKE_FOLLOWUP_KE (§2.2.3).

Two engines back to back (``harness.Net``), the clock driven by the test.
"""

from __future__ import annotations

import pytest

from pypluto.iana import ExchangeType
from pypluto.ike.actions import Log
from pypluto.ike.tasks import ike_followup as fu
from pypluto.ike.tasks.common import RETRY_DELAY
from pypluto.wire import message as wm

from .harness import Net, Side, check_pair

HYBRID = "aes_gcm256-sha2_384-dh31;addke1=mlkem768"
KW = {"ike": HYBRID, "esp": "aes_gcm256-dh31;addke1=mlkem768"}
KW2 = {"ike": "aes256-sha2_256-dh19;addke1=mlkem768;addke2=mlkem1024",
       "esp": "aes_gcm256-dh19;addke1=mlkem1024;addke2=dh31"}
LOST = "rekey collision lost"
WON = "rekey collision won"


def _start(net: Net, side: Side, what: str) -> None:
    fn = side.engine.rekey_ike if what == "ike" else side.engine.rekey_child
    net.apply(side, fn("west-east", net.now))


def _followups_sent(net: Net, who: str) -> int:
    """IKE_FOLLOWUP_KE requests (not datagrams: they may be fragmented)."""
    hdrs = [wm.peek_header(d) for w, d in net.sent if w == who]
    return len({(h.spi_i, h.message_id) for h in hdrs
                if h.exchange == ExchangeType.IKE_FOLLOWUP_KE and not h.response})


def _logs(side: Side, text: str) -> list[str]:
    return [m for m in side.logs() if text in m]


def _warnings(side: Side) -> list[str]:
    return [a.message for a in side.actions if isinstance(a, Log) and a.level == "warning"]


def _ike(side: Side):  # noqa: ANN202 - the one IKE SA of a side
    sas = list(side.engine.by_serial.values())
    assert len(sas) == 1, [i.serial for i in sas]
    return sas[0]


def _settled(net: Net) -> None:
    """One IKE SA and one Child SA each, the same on both ends, and nothing held back:
    no pending IKE_FOLLOWUP_KE state, no reserved SPI without its SA."""
    w, e = net.established(net.west), net.established(net.east)
    assert len(w) == 1 and len(e) == 1, (net.west.logs(), net.east.logs())
    assert (w[0].spi_i, w[0].spi_r) == (e[0].spi_i, e[0].spi_r)
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    check_pair(net)
    for side in (net.west, net.east):
        eng = side.engine
        ike = _ike(side)
        assert ike.followup is None
        assert set(eng.children_in) == {c.spi_in for c in ike.children}
        assert set(eng.children_out) == {c.spi_out for c in ike.children}
        assert set(eng.ike_sas) == {ike.local_spi}
        assert not ike.tasks and ike.outstanding is None


# ------------------------------------------------------------------ both start at once
@pytest.mark.parametrize("kw", [KW, KW2], ids=["one-addke", "two-addke"])
@pytest.mark.parametrize("what", ["ike", "child"])
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_simultaneous_rekey_with_followup_ke(what: str, kw: dict, seed: int) -> None:
    """Both ends rekey the same SA at once: both CREATE_CHILD_SA answers choose
    additional exchanges; the exchange with the lowest nonce loses, its initiator sends
    no IKE_FOLLOWUP_KE, its SA is never made; the winner's replaces the old SA."""
    net = Net(west_kw=kw, east_kw=kw, seed=seed)
    net.up()
    old_ike = _ike(net.west).serial, _ike(net.east).serial
    old_spis = set(net.west.kernel_sas)
    net.sent.clear()
    _start(net, net.west, what)
    _start(net, net.east, what)
    net.run()
    lost = [s for s in (net.west, net.east) if _logs(s, LOST)]
    won = [s for s in (net.west, net.east) if _logs(s, WON)]
    assert len(lost) == 1 and len(won) == 1 and lost != won, \
        (net.west.logs(), net.east.logs())
    loser, winner = lost[0], won[0]
    assert len(_logs(loser, LOST)) == 1 and len(_logs(winner, WON)) == 1
    assert _followups_sent(net, loser.name) == 0
    assert _followups_sent(net, winner.name) == kw["ike" if what == "ike" else "esp"] \
        .count("addke")
    assert not _warnings(net.west) and not _warnings(net.east)
    _settled(net)
    if what == "ike":
        assert (_ike(net.west).serial, _ike(net.east).serial) != old_ike
        # the winner initiated the surviving IKE SA (its SPIi is the winner's)
        assert _ike(winner).initiator and not _ike(loser).initiator
    else:
        assert not set(net.west.kernel_sas) & old_spis
    # nothing is left to happen later: no retry, no timer firing a stale state
    net.advance(3 * fu.wait_for(_ike(net.west)))
    _settled(net)
    assert not _warnings(net.west) and not _warnings(net.east)
    # the surviving IKE SA works: a Child SA rekey and a delete go through it
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.run()
    _settled(net)
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert not net.west.engine.by_serial and not net.east.engine.by_serial


def test_collision_winner_follows_the_nonces() -> None:
    """Over a few seeds each end wins sometimes: the outcome is the nonces' (§2.8.1)."""
    winners = set()
    for seed in (1, 2, 3, 4):
        net = Net(west_kw=KW, east_kw=KW, seed=seed)
        net.up()
        _start(net, net.west, "child")
        _start(net, net.east, "child")
        net.run()
        winners |= {s.name for s in (net.west, net.east) if _logs(s, WON)}
    assert winners == {"west", "east"}


@pytest.mark.parametrize("first", ["west", "east"])
@pytest.mark.parametrize("seed", [1, 2])
def test_simultaneous_ike_and_child_rekey_with_followup_ke(first: str, seed: int) -> None:
    """One end rekeys the IKE SA, the other the Child SA, at once (RFC 7296 §2.25.2):
    the IKE SA rekey is refused with TEMPORARY_FAILURE while the Child SA rekey runs
    its IKE_FOLLOWUP_KE; it is retried afterwards and moves the new Child SA."""
    net = Net(west_kw=KW, east_kw=KW, seed=seed)
    net.up()
    ike_side = getattr(net, first)
    child_side = net.other(ike_side)
    old_ike = _ike(net.west).serial
    old_spis = set(net.west.kernel_sas)
    net.sent.clear()
    _start(net, ike_side, "ike")
    _start(net, child_side, "child")
    net.run()
    assert _logs(ike_side, "IKE SA rekey refused: TEMPORARY_FAILURE")
    assert _followups_sent(net, child_side.name) == 1
    assert not set(net.west.kernel_sas) & old_spis  # the Child SA rekey went through
    _settled(net)
    net.advance(RETRY_DELAY + 1)  # the IKE SA rekey again, now unopposed
    _settled(net)
    assert _ike(net.west).serial != old_ike
    assert _followups_sent(net, ike_side.name) == 1
    assert not _warnings(net.west) and not _warnings(net.east)


# ------------------------------------------------------------------ TEMPORARY_FAILURE
@pytest.mark.parametrize("ours,theirs", [("child", "child"), ("ike", "ike"),
                                         ("ike", "child"), ("child", "ike")])
def test_rekey_during_followup_gets_temporary_failure(ours: str, theirs: str) -> None:
    """The peer's CREATE_CHILD_SA arrives after our CREATE_CHILD_SA answer, while our
    IKE_FOLLOWUP_KE runs: TEMPORARY_FAILURE (RFC 9370 §2.2.2, RFC 7296 §2.25); ours
    completes, the peer's is retried later (and finds nothing left to do, or works)."""
    net = Net(west_kw=KW, east_kw=KW)
    net.up()
    old_ike = _ike(net.west).serial
    old_spis = set(net.west.kernel_sas)
    _start(net, net.west, ours)
    net.step()  # west's CREATE_CHILD_SA reaches east, which answers and waits
    assert _ike(net.east).followup is not None
    net.step()  # the answer reaches west, which sends IKE_FOLLOWUP_KE
    assert fu.in_progress(_ike(net.west)) is not None
    _start(net, net.east, theirs)  # east starts before west's IKE_FOLLOWUP_KE arrives
    net.run()
    deferred = _logs(net.west, "answering TEMPORARY_FAILURE")
    assert len(deferred) == 1 and "IKE_FOLLOWUP_KE" in deferred[0], net.west.logs()
    assert _logs(net.east, "TEMPORARY_FAILURE")
    _settled(net)
    if ours == "ike":
        assert _ike(net.west).serial != old_ike
    else:
        assert not set(net.west.kernel_sas) & old_spis
    net.advance(RETRY_DELAY + 1)
    _settled(net)
    assert not _warnings(net.west) and not _warnings(net.east)


# ------------------------------------------------------------------ bounded wait (§2.2.3)
@pytest.mark.parametrize("what,name", [("child", "Child SA rekey"), ("ike", "IKE SA rekey")])
def test_missing_followup_times_out(what: str, name: str) -> None:
    """West's IKE_FOLLOWUP_KE does not come: east drops the pending state after
    ``wait_for`` (one log line) and releases what it reserved; when west's request
    finally gets through it is answered STATE_NOT_FOUND, west gives up that rekey and
    a later one works."""
    # west retransmits for longer than east waits, so its request outlives east's state
    net = Net(west_kw={**KW, "retransmit_timeout": 1000.0}, east_kw=KW)
    net.up()
    e = net.east.engine
    east = _ike(net.east)
    children_in, ike_sas = set(e.children_in), set(e.ike_sas)
    kernel = dict(net.east.kernel_sas)
    old_spis = set(net.west.kernel_sas)
    wait = fu.wait_for(east)
    _start(net, net.west, what)
    net.step()  # east answers with ADDITIONAL_KEY_EXCHANGE and waits
    pend = east.followup
    assert pend is not None and pend.expires == net.now + wait
    if what == "child":
        assert len(e.children_in) == len(children_in) + 1  # the new Child SA's SPI
    net.step()  # west gets the answer and sends IKE_FOLLOWUP_KE...
    net.cut = True  # ...which is lost, and so are its retransmits for a while
    net.queue.clear()
    net.advance(wait - 1)
    assert east.followup is pend and not _logs(net.east, "no IKE_FOLLOWUP_KE")
    net.advance(1)
    assert east.followup is None
    dropped = _logs(net.east, "no IKE_FOLLOWUP_KE")
    assert dropped == [f"no IKE_FOLLOWUP_KE within {wait:g}s: dropping the pending "
                       f"{name} (RFC 9370 §2.2.3)"], net.east.logs()
    assert _warnings(net.east) == dropped
    # nothing leaked, nothing changed: the old SAs carry on
    assert set(e.children_in) == children_in and set(e.ike_sas) == ike_sas
    assert net.east.kernel_sas == kernel
    assert e.by_serial == {east.serial: east} and east.established
    assert len(east.children) == 1 and not east.children[0].replaced
    # west's next retransmit gets through: STATE_NOT_FOUND, west abandons that rekey
    net.cut = False
    net.advance(wait)
    assert _logs(net.east, "IKE_FOLLOWUP_KE for no pending exchange; answering "
                 "STATE_NOT_FOUND")
    w = _warnings(net.west)
    assert len(w) == 1 and "peer answered IKE_FOLLOWUP_KE with STATE_NOT_FOUND" in w[0], w
    _settled(net)  # west retried RETRY_DELAY later: a fresh rekey went through
    if what == "child":
        assert not set(net.west.kernel_sas) & old_spis
    else:
        assert _ike(net.east) is not east


def test_followup_timer_rearms_between_exchanges() -> None:
    """Two additional exchanges: each IKE_FOLLOWUP_KE answered moves the deadline on."""
    net = Net(west_kw=KW2, east_kw=KW2)
    net.up()
    east = _ike(net.east)
    _start(net, net.west, "child")
    net.step()
    first = east.followup
    assert first is not None and len(first.todo) == 2
    deadline = first.expires
    net.now += 5
    while len(first.todo) == 2:  # west sends the first IKE_FOLLOWUP_KE (fragmented),
        assert net.step()  # east answers it with a new link and waits for the second
    assert east.followup is first and len(first.todo) == 1
    assert first.expires == net.now + fu.wait_for(east) and first.expires > deadline
    net.run()
    _settled(net)


def test_followup_with_wrong_link_is_state_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """An IKE_FOLLOWUP_KE whose ADDITIONAL_KEY_EXCHANGE data is not the one answered:
    STATE_NOT_FOUND (RFC 9370 §2.2.3); the initiator gives up this rekey and retries,
    the stale state goes, nothing leaks."""
    net = Net(west_kw=KW, east_kw=KW)
    net.up()
    real = fu.FollowupKE.build

    def wrong(self: fu.FollowupKE, *a: object, **k: object):  # noqa: ANN202
        self.link = bytes(b ^ 0xFF for b in self.link)
        return real(self, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(fu.FollowupKE, "build", wrong)
    old_spis = set(net.west.kernel_sas)
    _start(net, net.west, "child")
    net.run()
    e = _logs(net.east, "answering STATE_NOT_FOUND")
    assert e == ["IKE_FOLLOWUP_KE with unknown ADDITIONAL_KEY_EXCHANGE data; answering "
                 "STATE_NOT_FOUND"], net.east.logs()
    w = _warnings(net.west)
    assert len(w) == 1 and "STATE_NOT_FOUND" in w[0], w
    assert set(net.west.kernel_sas) == old_spis  # the old Child SA stays
    monkeypatch.setattr(fu.FollowupKE, "build", real)
    net.advance(RETRY_DELAY + 1)  # west rekeys again; east replaces the stale state
    _settled(net)
    assert not set(net.west.kernel_sas) & old_spis
    net.advance(3 * fu.wait_for(_ike(net.east)))
    _settled(net)
    assert not _logs(net.east, "no IKE_FOLLOWUP_KE")


# ------------------------------------------------------------------ offloaded (--nhelpers)
@pytest.mark.parametrize("what", ["ike", "child"])
@pytest.mark.parametrize("order", [0, -1])
def test_simultaneous_rekey_with_offloaded_jobs(what: str, order: int) -> None:
    """Both rekey at once while every responder job runs late: an answer can reach its
    initiator before that end's own responder job has made its pending state, so no
    collision is seen there and its IKE_FOLLOWUP_KE starts; the late job then finds it
    running and answers TEMPORARY_FAILURE (§2.2.2).  Either way one SA survives."""
    from .test_offload import OffloadNet

    net = OffloadNet(immediate=False, west_kw=KW, east_kw=KW)
    net.immediate = True
    net.up()
    net.immediate = False
    _start(net, net.west, what)
    _start(net, net.east, what)
    for _ in range(60):
        net.run()
        if not net.jobs:
            break
        side, job = net.jobs.pop(order)
        net.finish(side, job)
    net.run()
    net.immediate = True
    net.advance(RETRY_DELAY + 1)
    _settled(net)
    assert not _warnings(net.west) and not _warnings(net.east)
