"""Liveness (RFC 7296 §2.4) and what follows a dead peer, engine level, against
Libreswan 5.2 (ipsec.conf(5) dpddelay=, dpdtimeout=, retransmit-*; testing/pluto/
ikev2-liveness-*) and a hostile peer.  Fake time only (``harness.Net``)."""

from __future__ import annotations

import struct

import pytest

from pypluto.iana import ExchangeType
from pypluto.ike import codec
from pypluto.ike.actions import Log, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import liveness
from pypluto.wire import payloads as wp

from .harness import Net, Side

INFO = int(ExchangeType.INFORMATIONAL)
CHILD = int(ExchangeType.CREATE_CHILD_SA)


def _ike(side: Side) -> IKESA:
    (ike,) = side.engine.by_serial.values()
    return ike


def _ev(side: Side, name: str) -> int:
    return side.engine.stats.events[name]


def _no_internal_error(net: Net) -> None:
    for side in (net.west, net.east):
        assert not [m for m in side.logs() if "internal error" in m]


def _probe_in_flight(**east_kw: object) -> tuple[Net, IKESA, IKESA]:
    """East (dpddelay 5) probes into a cut network: its probe is outstanding."""
    net = Net(east_kw={"dpddelay": 5.0, **east_kw})
    net.up()
    net.cut = True
    net.advance(5.5)
    e, w = _ike(net.east), _ike(net.west)
    assert e.outstanding is not None and isinstance(e.outstanding.task, liveness.Liveness)
    return net, e, w


def _feed(net: Net, data: bytes) -> list:
    e = _ike(net.east)
    acts = net.east.engine.receive(data, e.local, e.remote, net.now)
    net.apply(net.east, acts)
    return acts


def _dies_on_schedule(net: Net, e: IKESA, recv: int = 0) -> None:
    """The probe in flight was not taken: east declares west dead at its deadline."""
    o = e.outstanding
    assert o is not None and _ev(net.east, "dpd.recv") == recv
    net.advance(o.deadline - net.now + 1)
    assert "peer-dead" in [x.kind for x in net.east.events]
    assert not net.east.engine.by_serial
    _no_internal_error(net)


# ----------------------------------------------------- inbound ESP counts as news
def _inbound_spi(side: Side) -> int:
    (spi,) = [s for s, c in side.engine.children_in.items() if c.parent is not None]
    return spi


def test_inbound_esp_traffic_holds_the_probe_back() -> None:
    """§2.4: "Receipt of a fresh cryptographically protected message on an IKE SA or
    any of its Child SAs ensures liveness", and a check is needed only when nothing
    came in; Libreswan 5.2 skips the probe after recent inbound IPsec traffic
    (ikev2-liveness-11-silent: dpddelay=3 with a ping every second sends no probe).
    The daemon feeds the SA counters to the engine (``Engine.sa_counters``, every 10
    s, both planes): packets that came in on the inbound SA are such news.  Before,
    only IKE messages counted, and an SA carrying traffic was probed every dpddelay."""
    net = Net(east_kw={"dpddelay": 10.0})
    net.up()
    spi = _inbound_spi(net.east)
    packets = 0
    for _ in range(12):  # two minutes of the peer's traffic, fed every 5 s
        net.advance(5)
        packets += 3
        net.apply(net.east, net.east.engine.sa_counters(spi, 100 * packets, packets, net.now))
    assert _ev(net.east, "dpd.sent") == 0
    assert net.established(net.east)
    net.advance(5)
    assert _ev(net.east, "dpd.sent") == 0  # 5 s after the last traffic
    net.advance(6)  # dpddelay after the last traffic: now the check goes out
    assert _ev(net.east, "dpd.sent") == 1 and _ev(net.east, "dpd.recv") == 1
    # the same count again is no news (nothing came in since): probes go on
    net.apply(net.east, net.east.engine.sa_counters(spi, 100 * packets, packets, net.now))
    net.advance(30)
    assert _ev(net.east, "dpd.sent") >= 3


def test_outbound_esp_traffic_is_no_news() -> None:
    """Our own outbound packets prove nothing about the peer (§2.4: "If there has only
    been outgoing traffic on all of the SAs ... it is essential to confirm liveness");
    nor does an inbound SPI that is also the SPI of an outbound SA of ours (the peer
    picks those: the counter could be the outbound one's)."""
    net = Net(east_kw={"dpddelay": 10.0})
    net.up()
    e = _ike(net.east)
    (c,) = e.children
    for k in range(1, 7):
        net.advance(5)
        net.apply(net.east, net.east.engine.sa_counters(c.spi_out, 100 * k, k, net.now))
    assert _ev(net.east, "dpd.sent") >= 2
    sent = _ev(net.east, "dpd.sent")
    net.east.engine.children_out[c.spi_in] = c  # an outbound SA with the same SPI
    try:
        for k in range(1, 7):
            net.advance(5)
            net.apply(net.east, net.east.engine.sa_counters(c.spi_in, 100 * k, k, net.now))
    finally:
        del net.east.engine.children_out[c.spi_in]
    assert _ev(net.east, "dpd.sent") >= sent + 2


def test_inbound_esp_does_not_answer_a_probe_in_flight() -> None:
    """Once a probe is out it must be answered (IKEv2 sends nothing else meanwhile,
    window of 1: ipsec.conf(5) dpdtimeout=): ESP coming in does not stop its
    retransmit timeout, the peer whose IKE daemon is gone is declared dead."""
    net, e, _w = _probe_in_flight()
    spi = _inbound_spi(net.east)
    for k in range(1, 4):
        net.apply(net.east, net.east.engine.sa_counters(spi, 100 * k, k, net.now))
        net.advance(5)
    _dies_on_schedule(net, e)


# ----------------------------------------------------- hostile answers to a probe
def test_unprotected_response_is_not_an_answer() -> None:
    """An INFORMATIONAL in the clear with the response flag and the probe's message
    ID (empty, or with a notify): no SK payload, no proof of anything (§3.14): dropped,
    and the peer is still declared dead on schedule."""
    net, e, w = _probe_in_flight()
    o = e.outstanding
    assert o is not None
    flags = 0x20 | (0x08 if w.initiator else 0)
    bare = struct.pack(">8s8sBBBBII", e.spi_i, e.spi_r, 0, 0x20, INFO, flags, o.msgid, 28)
    (notify,) = codec.encode(w.spi_i, w.spi_r, INFO, w.initiator, True, o.msgid,
                             [wp.NotifyPayload(protocol_id=0, notify_type=16393, spi=b"",
                                               data=b"")], None)
    last = e.last_recv
    for data in (bare, notify):
        acts = _feed(net, data)
        assert not [a for a in acts if isinstance(a, SendPacket)]
        assert e.outstanding is o and e.last_recv == last
    _dies_on_schedule(net, e)


def test_response_of_another_exchange_type_is_not_the_answer() -> None:
    """The peer's keys, the probe's message ID, but CREATE_CHILD_SA: not the answer to
    an INFORMATIONAL request; the probe stays outstanding (retransmitted)."""
    net, e, w = _probe_in_flight()
    o = e.outstanding
    assert o is not None
    (data,) = codec.encode(w.spi_i, w.spi_r, CHILD, w.initiator, True, o.msgid, [],
                           w.prot_out)
    _feed(net, data)
    assert e.outstanding is o and _ev(net.east, "dpd.recv") == 0
    assert net.established(net.east)


def test_replayed_request_of_the_peer_is_no_news() -> None:
    """West's last probe, captured and sent again by someone on the path, gets the
    cached answer (§2.1) but proves nothing about west now: it must not hold east's
    liveness check back, nor answer east's probe; west (gone) is declared dead."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    w = _ike(net.west)
    msgid = w.next_out
    w.next_out += 1
    probe = liveness.empty_informational(w, False, msgid)
    assert sum(isinstance(a, SendPacket) for a in _feed(net, probe)) == 1
    e = _ike(net.east)
    net.cut = True
    for _ in range(20):  # a replay every 4 s, two minutes long
        net.advance(4)
        if not net.east.engine.by_serial:
            break
        last = e.last_recv
        acts = _feed(net, probe)
        assert e.last_recv == last  # answered from the cache, never decrypted
        assert sum(isinstance(a, SendPacket) for a in acts) == 1
    assert "peer-dead" in [x.kind for x in net.east.events]
    assert not net.east.engine.by_serial
    _no_internal_error(net)


def test_probe_answered_only_when_retransmitted() -> None:
    """A peer (or path) that loses the first copy of every probe: the retransmission
    is answered, the SA lives on; each probe costs one retransmission."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    engine = net.east.engine
    handle = engine.handle_timer

    def lossy(now: float) -> list:
        acts = handle(now)
        if any(isinstance(a, Log) and "sending liveness probe" in a.message for a in acts):
            net.drop_next += 1  # the fresh probe is lost
        return acts

    engine.handle_timer = lossy  # type: ignore[method-assign]
    net.advance(120)
    sent, recv = _ev(net.east, "dpd.sent"), _ev(net.east, "dpd.recv")
    assert sent >= 15 and recv == sent
    assert _ev(net.west, "dpd.replied") == sent  # each answered once (no cached copy)
    assert net.established(net.east) and "peer-dead" not in [x.kind for x in net.east.events]


def test_flood_of_peer_probes_each_answered_once() -> None:
    """200 probes from the peer back to back (new message IDs): each is answered
    exactly once; each copy of the last one again from the cache (§2.1)."""
    net = Net()
    net.up()
    e, w = _ike(net.east), _ike(net.west)
    first = e.next_in
    answers = 0
    for _ in range(200):
        msgid = w.next_out
        w.next_out += 1
        acts = _feed(net, liveness.empty_informational(w, False, msgid))
        answers += sum(isinstance(a, SendPacket) for a in acts)
    assert answers == 200 and e.next_in == first + 200
    assert _ev(net.east, "dpd.replied") == 200
    for _ in range(3):
        acts = _feed(net, liveness.empty_informational(w, False, w.next_out - 1))
        assert [a.data for a in acts if isinstance(a, SendPacket)] == e.last_response[1]  # type: ignore[index]
    assert _ev(net.east, "dpd.replied") == 200
    assert net.established(net.east)


# ----------------------------------------------------- liveness and a rekey in flight
def test_no_probe_while_a_rekey_is_outstanding_and_its_timeout_kills() -> None:
    """Window of 1 (§2.3): while east's CREATE_CHILD_SA is unanswered no probe is sent
    (Libreswan 5.2: "request outstanding", the exchange itself is the check); the
    rekey's retransmissions are the liveness check, and their timeout
    (retransmit-timeout) declares the peer dead."""
    net = Net(east_kw={"dpddelay": 5.0, "retransmit_timeout": 20.0})
    net.up()
    net.cut = True
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    e = _ike(net.east)
    o = e.outstanding
    assert o is not None and o.task.exchange == CHILD
    net.advance(19)
    assert _ev(net.east, "dpd.sent") == 0 and net.established(net.east)
    net.advance(2)
    assert "peer-dead" in [x.kind for x in net.east.events]
    assert not net.east.engine.by_serial and _ev(net.east, "dpd.sent") == 0


def test_probe_due_during_a_rekey_waits_for_it() -> None:
    """The rekey is answered late (after retransmissions): the SA is alive; the next
    probe goes dpddelay after that answer, not while the rekey was in flight."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    net.cut = True
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.advance(9)  # 0.5, 1.5, 3.5, 7.5: four retransmissions lost
    assert _ev(net.east, "dpd.sent") == 0
    net.cut = False
    net.advance(7)  # the one at 15.5 gets through and is answered
    assert len(net.children(net.east)) >= 1 and _ev(net.east, "dpd.sent") == 0
    e = _ike(net.east)
    assert e.outstanding is None and e.next_liveness is not None
    assert e.next_liveness >= e.last_recv + 5.0
    net.advance(10)
    assert _ev(net.east, "dpd.sent") >= 1 and _ev(net.east, "dpd.recv") == _ev(net.east,
                                                                               "dpd.sent")
    _no_internal_error(net)


# ----------------------------------------------------- the schedule
def test_probe_retransmission_schedule_and_give_up() -> None:
    """retransmit-interval=0.5 doubling (ipsec.conf(5): "doubled for each attempt"),
    given up after retransmit-timeout=60 in all (ipsec.conf(5): "how long a single
    packet, including retransmits of that packet, may take"); dpdtimeout= plays no
    part for IKEv2 (ipsec.conf(5): "always the same as the retransmit-timeout").
    Libreswan 5.2's code retransmits at 0.5, 1, 2, 4 ... and gives up at the first
    retransmit event past the timeout (64 s here): pypluto follows the documentation
    (the RFC fixes no times, only exponential back-off, §2.4)."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    net.cut = True
    t0 = net.now
    times: list[float] = []
    engine = net.east.engine
    handle = engine.handle_timer

    def record(now: float) -> list:
        acts = handle(now)
        times.extend(now - t0 for a in acts if isinstance(a, SendPacket))
        if any(isinstance(a, Log) and "declaring it dead" in a.message for a in acts):
            times.append(-(now - t0))
        return acts

    engine.handle_timer = record  # type: ignore[method-assign]
    net.advance(100)
    probe = times[0]
    assert [round(t - probe, 3) for t in times[1:-1]] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert -times[-1] - probe == pytest.approx(60.0)


# ----------------------------------------------------- what follows a dead peer
@pytest.mark.parametrize("auto, again", [("add", False), ("start", True), ("route", False)])
def test_after_a_dead_peer(auto: str, again: bool) -> None:
    """Libreswan 5.2 ignores dpdaction= (obsolete): a dead peer's conn is initiated
    again when it is meant to be up (auto=start: "revival"), otherwise it is taken
    down (auto=add: nothing left; auto=route: the trap is back, ikev2-liveness-09)."""
    from .test_traps import kernel

    net = Net(west_kw={"dpddelay": 5.0, "auto": auto})
    if auto == "route":
        net.apply(net.west, net.west.engine.route("west-east", net.now))
        traps = kernel(net.west)
        assert traps
    net.up()
    net.cut = True
    net.advance(70)
    assert "peer-dead" in [x.kind for x in net.west.events]
    ours = list(net.west.engine.by_serial.values())
    assert bool(ours) == again
    assert not net.west.kernel_sas
    if auto == "route":
        assert kernel(net.west) == traps
    if again:
        net.cut = False
        net.queue.clear()
        net.advance(70)
        assert net.established(net.west) and net.children(net.west)
    _no_internal_error(net)


def test_a_dead_roadwarrior_is_not_restarted_by_the_responder() -> None:
    """A responder conn to right=%any (auto=add) cannot initiate: the dead peer's IKE
    SA goes and nothing is started (ikev2-liveness-12: east "clear")."""
    net = Net(east_kw={"dpddelay": 5.0, "right": "%any", "rightsubnet": None},
              west_kw={"rightsubnet": None})
    net.up()
    assert net.established(net.east)
    net.cut = True
    net.advance(70)
    assert "peer-dead" in [x.kind for x in net.east.events]
    assert not net.east.engine.by_serial
    assert not [a for a in net.east.actions[-5:] if isinstance(a, SendPacket)]
    _no_internal_error(net)


# ----------------------------------------------------- time jumps
def _many(n: int, **kw: object) -> Net:
    life = {"ikelifetime": 86400.0, "salifetime": 86400.0}
    net = Net(west_kw={"dpddelay": 10.0, **life}, east_kw={"dpddelay": 10.0, **life, **kw},
              east_settings=EngineSettings(uniqueids=False))
    wconn = net.west.engine.connections["west-east"]
    for _ in range(n):
        net.apply(net.west, net.west.engine.initiate_ike(wconn, net.now))
        net.run(limit=100 * n)
    assert len(net.established(net.east)) == n
    return net


def test_clock_jumps_ten_hours_ahead() -> None:
    """A `now` 10 hours on (a host that slept): every SA is due at once; each gets one
    probe (paced), is answered and stays; no retransmission storm, no crash."""
    n = 60
    net = _many(n)
    net.advance(12)
    sent0 = _ev(net.east, "dpd.sent")
    net.now += 36000.0
    for side in (net.west, net.east):
        acts = side.engine.handle_timer(net.now)
        net.apply(side, acts)
        assert sum(isinstance(a, SendPacket) for a in acts) <= n
    net.run(limit=100 * n)
    net.advance(5)
    assert len(net.established(net.east)) == n and len(net.established(net.west)) == n
    assert _ev(net.east, "dpd.sent") - sent0 <= n
    assert _ev(net.east, "dpd.recv") == _ev(net.east, "dpd.sent")
    _no_internal_error(net)


def test_clock_goes_back() -> None:
    """A `now` 10 hours earlier (engine calls from a clock that went back): nothing
    fires, nothing crashes; messages still go both ways (a probe of the peer is
    answered) and the SAs stay."""
    net = _many(3)
    net.advance(12)
    net.now -= 36000.0
    for side in (net.west, net.east):
        acts = side.engine.handle_timer(net.now)
        assert not [a for a in acts if isinstance(a, SendPacket)]
    w = next(iter(net.west.engine.by_serial.values()))
    peer = net.east.engine.by_serial[next(s for s, i in net.east.engine.by_serial.items()
                                          if i.spi_i == w.spi_i)]
    msgid = w.next_out
    w.next_out += 1
    acts = net.east.engine.receive(liveness.empty_informational(w, False, msgid),
                                   peer.local, peer.remote, net.now)
    assert sum(isinstance(a, SendPacket) for a in acts) == 1
    assert len(net.established(net.east)) == 3
    _no_internal_error(net)


# ----------------------------------------------------- conns sharing the dead IKE SA
def _shared(autos: dict[str, str]) -> Net:
    """ikev2-ike-rekey-04's three conns a, b, c on one IKE SA of west's, with
    dpddelay=5 on west and each conn's auto= as given."""
    from .test_libreswan_lifecycle import state, three_net

    net = three_net({"dpddelay": "5"}, {})
    for name, auto in autos.items():
        net.west.engine.connections[name].auto = auto
    assert state(net, net.west) == [("a", ["a", "b", "c"])]
    return net


@pytest.mark.parametrize("autos, want", [
    ({"a": "start", "b": "start", "c": "start"}, [("a", ["a", "b", "c"])]),
    ({"a": "start", "b": "add", "c": "start"}, [("a", ["a", "c"])]),
    ({"a": "add", "b": "start", "c": "start"}, [("b", ["b", "c"])]),
    ({"a": "add", "b": "add", "c": "add"}, []),
])
def test_dead_peer_revives_every_conn_meant_up_on_the_ike_sa(autos: dict[str, str],
                                                              want: list) -> None:
    """Three conns share one IKE SA (ikev2-ike-rekey-04); the peer goes silent and is
    declared dead.  Libreswan 5.2 revives each connection with +UP whose SA died
    (revival.c, per Child SA), not only the IKE SA's own: every auto=start conn is
    back once the peer answers again, auto=add ones are not.  Before, only the conn
    owning the IKE SA was restarted (and none when it was auto=add): the Child SAs of
    the other conns were gone for good."""
    from .test_libreswan_lifecycle import state

    net = _shared(autos)
    net.cut = True
    net.advance(70)
    assert "peer-dead" in [x.kind for x in net.west.events]
    net.cut = False
    net.advance(120)
    assert state(net, net.west) == want
    _no_internal_error(net)


def test_revival_of_shared_conns_survives_a_failed_attempt() -> None:
    """The peer stays away longer than one attempt (retransmit-timeout): the retried
    IKE SA still brings the other auto=start conns' Child SAs, which waited on the
    failed one (common.fail carries them); before, they were dropped with it."""
    from .test_libreswan_lifecycle import state

    net = _shared({"a": "start", "b": "start", "c": "start"})
    net.cut = True
    net.advance(250)  # dead at ~65 s, then three more attempts of 60 s fail
    assert [i.conn for i in net.west.engine.status(net.now).ike_sas] == ["a"]
    net.cut = False
    net.queue.clear()
    net.advance(120)
    assert state(net, net.west) == [("a", ["a", "b", "c"])]
    _no_internal_error(net)


def test_old_answer_with_the_message_id_rewritten_is_not_taken() -> None:
    """West's genuine answer to east's previous probe, its header's message ID
    rewritten to the probe now in flight: the ICV covers the header (§3.14: the
    IKE header is in the integrity-protected data), so it is dropped; the old answer
    as it was is dropped as an old response (§2.3)."""
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    net.advance(5.5)  # one probe, answered
    answers = [d for who, d in net.sent if who == "west" and d[18] == INFO and d[19] & 0x20]
    assert answers and _ev(net.east, "dpd.recv") == 1
    old = answers[-1]
    net.cut = True
    net.advance(5.5)  # the next probe, unanswered
    e = _ike(net.east)
    o = e.outstanding
    assert o is not None and o.msgid == int.from_bytes(old[20:24], "big") + 1
    forged = old[:20] + o.msgid.to_bytes(4, "big") + old[24:]
    for data in (old, forged):
        _feed(net, data)
        assert e.outstanding is o and _ev(net.east, "dpd.recv") == 1
    _dies_on_schedule(net, e, 1)


def test_dead_peer_revives_a_child_sa_queued_for_a_conn_meant_up() -> None:
    """Conn b (auto=start) asks for its Child SA on a's IKE SA while a probe is in
    flight (window of 1: the request waits, §2.3); the probe times out.  b's Child SA
    comes back with a's revival, as the Child SA of a conn that was up does."""
    from pypluto.config.model import bump_generation

    from .test_libreswan_lifecycle import THREE, empty_net, state, up
    from .test_libreswan_outcomes import conn

    net = empty_net()
    for name, wsub, esub in THREE[:2]:
        sub = {"leftsubnet": wsub, "rightsubnet": esub}
        net.west.engine.add_connection(conn({**sub, "dpddelay": "5"}, True, name))
        net.east.engine.add_connection(conn(sub, False, name))
    bump_generation()
    up(net, "a")
    for name in "ab":
        net.west.engine.connections[name].auto = "start"
    net.cut = True
    net.advance(5.5)
    (ike,) = net.west.engine.by_serial.values()
    assert ike.outstanding is not None
    net.apply(net.west, net.west.engine.initiate("b", net.now))
    assert ike.tasks  # queued behind the probe
    net.advance(65)
    assert "peer-dead" in [x.kind for x in net.west.events]
    net.cut = False
    net.advance(120)
    assert state(net, net.west) == [("a", ["a", "b"])]
    _no_internal_error(net)
