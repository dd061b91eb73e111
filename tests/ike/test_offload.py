"""Offloaded key exchange: ``Compute`` actions and ``Engine.resume`` (the daemon's --nhelpers).

The back-to-back harness plays the helper pool: it runs each job at once, or
holds the jobs and runs them late, out of order, or after the IKE SA is gone.
The IKE_SA_INIT key exchange is RFC 7296 §1.2 / §2.14.
"""

from __future__ import annotations

import random

from pypluto.ike import codec
from pypluto.ike.actions import Action, Compute, Log, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings

from .harness import EAST, WEST, Net, Side, Store, check_pair, make_conn


class OffloadNet(Net):
    """A ``Net`` whose engines offload; Compute jobs run at once or wait in ``jobs``."""

    def __init__(self, immediate: bool = True, **kw: object) -> None:
        self.immediate = immediate
        self.jobs: list[tuple[Side, Compute]] = []
        self.computes = 0
        super().__init__(west_settings=EngineSettings(offload_crypto=True),
                         east_settings=EngineSettings(offload_crypto=True), **kw)  # type: ignore[arg-type]

    def apply(self, side: Side, acts: list[Action]) -> None:
        for a in acts:
            if isinstance(a, Compute):
                self.computes += 1
                side.actions.append(a)
                if self.immediate:
                    self.finish(side, a)
                else:
                    self.jobs.append((side, a))
        super().apply(side, [a for a in acts if not isinstance(a, Compute)])

    def finish(self, side: Side, job: Compute, result: object = None) -> list[Action]:
        if result is None:
            try:
                result = job.job()
            except Exception as e:  # noqa: BLE001 - handed to the engine like the daemon does
                result = e
        acts = side.engine.resume(job.token, result, self.now)
        self.apply(side, acts)
        return acts

    def pending(self, side: Side) -> list[Compute]:
        return [c for s, c in self.jobs if s is side]

    def take(self, side: Side) -> Compute:
        for i, (s, c) in enumerate(self.jobs):
            if s is side:
                del self.jobs[i]
                return c
        raise AssertionError(f"no job pending on {side.name}")


def initiate(net: OffloadNet) -> None:
    """West initiates; its KE keygen job (held) runs, and IKE_SA_INIT reaches east."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    assert not net.queue  # nothing is sent before the KE value exists
    net.finish(net.west, net.take(net.west))
    net.run()


def test_inline_by_default_emits_no_compute() -> None:
    net = Net()
    net.up()
    assert len(net.established(net.east)) == 1
    assert not any(isinstance(a, Compute) for s in (net.west, net.east) for a in s.actions)


def test_immediate_jobs_establish() -> None:
    net = OffloadNet()
    net.up()
    for side in (net.west, net.east):
        assert len(net.established(side)) == 1, side.logs()
        assert len(net.children(side)) == 1, side.logs()
        assert not side.engine.computing and not side.engine.computing_serials
    check_pair(net)
    assert net.computes == 3  # west's keygen, east's responder KE, west's finish


def test_late_jobs_and_retransmits_while_computing() -> None:
    net = OffloadNet(immediate=False)
    initiate(net)
    (east_job,) = net.pending(net.east)
    assert net.east.engine.n_halfopen == 1  # counted as half-open while computing
    assert not any(isinstance(a, SendPacket) for a in net.east.actions)
    # west retransmits IKE_SA_INIT: east ignores it and does not compute twice
    net.advance(2.0)
    assert len(net.pending(net.east)) == 1
    assert any("ignoring retransmitted IKE_SA_INIT" in m for m in net.east.logs())
    assert not any(isinstance(a, SendPacket) for a in net.east.actions)
    net.jobs.clear()
    net.finish(net.east, east_job)
    net.run()
    (west_job,) = net.pending(net.west)
    assert net.west.engine.is_computing(net.west.engine.ike_of("west-east")[0])
    net.jobs.clear()
    net.finish(net.west, west_job)
    net.run()
    for side in (net.west, net.east):
        assert len(net.established(side)) == 1, side.logs()
    check_pair(net)
    assert net.east.engine.n_halfopen == 0


def test_out_of_order_results_reach_their_own_sa() -> None:
    net = OffloadNet(immediate=False)
    west2 = Engine(EngineSettings(), Store(b"x" * 32), rng=random.Random(7).randbytes,
                   local_addrs=[WEST])
    west2.add_connection(make_conn(local_left=True))
    initiate(net)
    first = [a for a in west2.initiate("west-east", net.now) if isinstance(a, SendPacket)]
    net.apply(net.east, net.east.engine.receive(first[0].data, first[0].remote,
                                                first[0].local, net.now))
    jobs = net.pending(net.east)
    assert len(jobs) == 2 and net.east.engine.n_halfopen == 2
    net.jobs.clear()
    for job in reversed(jobs):  # the second request's result comes back first
        net.finish(net.east, job)
    answers = [a for a in net.east.actions if isinstance(a, SendPacket)]
    assert {codec.peek(a.data).spi_i for a in answers} == \
        {net.west.engine.ike_of("west-east")[0].spi_i, west2.ike_of("west-east")[0].spi_i}
    # west2 accepts its answer (and sends IKE_AUTH): the keys match its request
    mine = next(a for a in answers if codec.peek(a.data).spi_i ==
                west2.ike_of("west-east")[0].spi_i)
    got = west2.receive(mine.data, mine.remote, mine.local, net.now)
    assert any(isinstance(a, SendPacket) for a in got), got
    assert west2.ike_of("west-east")[0].state == "STATE_V2_PARENT_I2"
    # and west (offloading) establishes with east
    net.immediate = True
    net.run()
    for job in list(net.jobs):
        net.jobs.remove(job)
        net.finish(*job)
    net.run()
    assert len(net.established(net.west)) == 1, net.west.logs()


def test_result_after_halfopen_expiry_is_dropped() -> None:
    net = OffloadNet(immediate=False)
    initiate(net)
    job = net.take(net.east)
    net.cut = True
    net.advance(net.east.engine.settings.half_open_timeout + 1)
    assert net.east.engine.n_halfopen == 0 and not net.east.engine.by_serial
    acts = net.finish(net.east, job)
    assert not any(isinstance(a, SendPacket) for a in acts)
    assert any("dropping" in a.message for a in acts if isinstance(a, Log))
    assert not net.east.engine.computing


def test_result_after_terminate_is_dropped() -> None:
    net = OffloadNet(immediate=False)
    initiate(net)
    net.finish(net.east, net.take(net.east))
    net.run()
    job = net.take(net.west)
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    assert not net.west.engine.by_serial
    acts = net.finish(net.west, job)
    assert not any(isinstance(a, SendPacket) for a in acts)
    assert not net.west.engine.computing_serials


def test_failing_job_is_a_clean_failure() -> None:
    net = OffloadNet(immediate=False)
    initiate(net)
    acts = net.finish(net.east, net.take(net.east), RuntimeError("helper died"))
    assert any("INVALID_KE_PAYLOAD" in a.message for a in acts if isinstance(a, Log))
    assert net.east.engine.n_halfopen == 0 and not net.east.engine.by_serial
    net.run()  # west gets INVALID_KE_PAYLOAD for its own group: it gives up, cleanly
    net.jobs.clear()
    # the initiator's job failing too
    net2 = OffloadNet(immediate=False)
    initiate(net2)
    net2.finish(net2.east, net2.take(net2.east))
    net2.run()
    acts = net2.finish(net2.west, net2.take(net2.west), ValueError("boom"))
    assert any("key exchange failed: boom" in a.message for a in acts if isinstance(a, Log))
    assert any(e.kind == "failed" for e in net2.west.events)
    assert not net2.west.engine.computing and not net2.west.engine.computing_serials


def test_unknown_token_is_ignored() -> None:
    eng = Engine(EngineSettings(offload_crypto=True), Store(None), local_addrs=[EAST])
    acts = eng.resume(12345, b"", 1.0)
    assert all(isinstance(a, Log) for a in acts)


PFS = {"esp": "aes_gcm256-dh19"}


def test_immediate_jobs_rekey_child_with_pfs_and_ike() -> None:
    net = OffloadNet(west_kw=PFS, east_kw=PFS)
    net.up()
    n = net.computes
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert net.computes == n + 1  # east's PFS key exchange (west's side stays inline)
    ch = net.children(net.east)
    assert len(ch) == 1 and ch[0].ke == "ECP_256"
    check_pair(net)
    old = net.established(net.east)[0].serial
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    assert net.computes == n + 2
    (e,) = net.established(net.east)
    assert e.serial != old and len(e.children) == 1
    (w,) = net.established(net.west)
    assert (w.spi_i, w.spi_r) == (e.spi_i, e.spi_r)


def test_late_child_rekey_job_and_retransmits() -> None:
    net = OffloadNet(west_kw=PFS, east_kw=PFS)
    net.immediate = True
    net.up()
    net.immediate = False
    before = net.children(net.west)[0].spi_in
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    (job,) = net.pending(net.east)
    sent = sum(isinstance(a, SendPacket) for a in net.east.actions)
    net.advance(2.0)  # west retransmits; east drops the copies while computing
    assert len(net.pending(net.east)) == 1
    assert sum(isinstance(a, SendPacket) for a in net.east.actions) == sent
    net.jobs.clear()
    net.finish(net.east, job)
    net.run()
    net.advance(5.0)
    w, e = net.children(net.west), net.children(net.east)
    assert len(w) == 1 and len(e) == 1 and w[0].spi_in != before, net.west.logs()
    assert w[0].spi_in == e[0].spi_out
    check_pair(net)


def test_late_ike_rekey_job_after_the_ike_sa_was_deleted() -> None:
    net = OffloadNet()
    net.immediate = True
    net.up()
    net.immediate = False
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    (job,) = net.pending(net.east)
    # west gives up and deletes everything; east processes the Delete meanwhile
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert not net.east.engine.by_serial
    acts = net.finish(net.east, job)
    assert not any(isinstance(a, SendPacket) for a in acts)
    assert not net.east.engine.by_serial and not net.east.engine.ike_sas


def test_initiator_keygen_job_failing_or_late() -> None:
    net = OffloadNet(immediate=False)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    acts = net.finish(net.west, net.take(net.west), ValueError("no entropy"))
    assert any("cannot initiate: KE group" in a.message for a in acts if isinstance(a, Log))
    assert [e.kind for e in net.west.events] == ["failed"] and not net.west.engine.by_serial
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    job = net.take(net.west)
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    acts = net.finish(net.west, job)
    assert not any(isinstance(a, SendPacket) for a in acts) and not net.queue
