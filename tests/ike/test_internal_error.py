"""A bug inside a task: caught in one place, logged with its traceback, the IKE SA torn
down with its Child SAs (kernel SAs and policies deleted) and an INTERNAL_ERROR event, so
that ``whack --initiate`` is answered at once."""

from __future__ import annotations

import pytest

from pypluto.ike.actions import ConnectionEvent, EventKind, FailReason, Log

from .harness import Net, Side


def _boom(*args: object, **kw: object) -> list:
    raise RuntimeError("injected fault")


def _internal(side: Side) -> list[ConnectionEvent]:
    return [e for e in side.events if e.kind == EventKind.INTERNAL_ERROR]


def _tracebacks(side: Side) -> list[str]:
    return [a.message + "\n" + a.traceback for a in side.actions
            if isinstance(a, Log) and a.level == "error"
            and "Traceback (most recent call last)" in a.traceback and "\n" not in a.message]


def test_fault_in_responder_task_tears_down_ike_sa(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    net.up()
    assert net.east.kernel_sas and net.east.policies
    from pypluto.ike.tasks import child_rekey
    monkeypatch.setattr(child_rekey.ChildRekey, "respond", classmethod(_boom))
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    tbs = _tracebacks(net.east)
    assert len(tbs) == 1 and "injected fault" in tbs[0] and "RuntimeError" in tbs[0]
    ev = _internal(net.east)
    assert len(ev) == 1 and ev[0].reason == FailReason.INTERNAL and ev[0].conn == "west-east"
    eng = net.east.engine
    assert not eng.by_serial and not eng.ike_sas and not eng.children_in
    assert not eng.children_out and not eng.by_reqid and not eng.policy_owner
    assert not net.east.kernel_sas and not net.east.policies  # DelSA / DelPolicy emitted
    assert eng.next_timer() is None or not eng.handle_timer(eng.next_timer() or 0.0)


def test_fault_in_initiator_task_fails_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    from pypluto.ike.tasks import ike_auth
    monkeypatch.setattr(ike_auth.IKEAuth, "on_response", _boom)
    net.up()
    ev = _internal(net.west)
    assert len(ev) == 1 and ev[0].reason == FailReason.INTERNAL
    assert not [e for e in net.west.events if e.kind == EventKind.IKE_ESTABLISHED]
    assert len(_tracebacks(net.west)) == 1
    eng = net.west.engine
    assert not eng.by_serial and not eng.ike_sas and not eng.children_in
    assert not net.west.kernel_sas and not net.west.policies


def test_failure_events_carry_a_reason() -> None:
    net = Net(east_psk=b"another key entirely")
    net.up()
    failed = [e for e in net.west.events if e.kind == EventKind.FAILED]
    assert failed and all(e.reason == FailReason.AUTHENTICATION for e in failed)
    net = Net()
    net.cut = True
    net.up()
    net.advance(200)
    failed = [e for e in net.west.events if e.kind == EventKind.FAILED]
    assert failed and failed[0].reason == FailReason.TIMEOUT


def test_fault_after_the_key_exchange_releases_the_half_open_sa(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    from pypluto.ike.tasks import ike_init
    monkeypatch.setattr(ike_init, "_respond_keyed", _boom)
    net.up()
    ev = _internal(net.east)
    assert len(ev) == 1 and ev[0].reason == FailReason.INTERNAL
    eng = net.east.engine
    assert eng.n_halfopen == 0 and not eng.by_serial and not eng.halfopen and not eng.ike_sas
    assert not net.established(net.west)


def test_fault_before_the_integrity_check_keeps_the_established_sa(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug hit by a message whose ICV has not been checked yet (anyone who has seen
    the SPIs can send one): the message is dropped with the traceback logged, the IKE SA
    and its Child SA stay, no INTERNAL_ERROR event; the next real exchange works."""
    net = Net()
    net.up()
    from pypluto.ike import codec
    real_parse = codec.parse
    monkeypatch.setattr(codec, "parse", _boom)  # before decryption, in the task manager
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    tbs = _tracebacks(net.east)
    assert tbs and all("not yet authenticated" in t and "IKE SA kept" in t for t in tbs), tbs
    assert not _internal(net.east)
    assert net.established(net.east) and net.children(net.east)
    monkeypatch.setattr(codec, "parse", real_parse)
    net.advance(40)  # west retransmits its rekey request, which now goes through
    assert net.established(net.east) and net.children(net.east)
    assert not _internal(net.east) and not _internal(net.west)


def test_fault_after_the_integrity_check_still_tears_down(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Past decryption a bug may have changed the SA's state: torn down as before."""
    net = Net()
    net.up()
    from pypluto.ike import stats
    monkeypatch.setattr(stats.EngineStats, "received", _boom)  # right after decryption
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(_internal(net.east)) == 1
    assert not net.east.engine.by_serial
