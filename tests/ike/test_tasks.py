"""The task registry (which task answers which request) and the SA state tables."""

from __future__ import annotations

import pytest

from pypluto.iana import ExchangeType, NotifyType, ProtocolID
from pypluto.ike import codec
from pypluto.ike.sa import (
    CHILD_TRANSITIONS,
    IKE_TRANSITIONS,
    ChildState,
    IKEState,
    InternalError,
)
from pypluto.ike.tasks import (
    ChildCreate,
    ChildDelete,
    ChildRekey,
    FollowupKE,
    IKEAuth,
    IKEDelete,
    IKEIntermediate,
    IKERekey,
    Liveness,
    responder_for,
)

from .harness import Net

INFO, CHILD = ExchangeType.INFORMATIONAL, ExchangeType.CREATE_CHILD_SA


def test_responder_registry() -> None:
    assert responder_for(ExchangeType.IKE_AUTH, []) is IKEAuth
    assert responder_for(INFO, []) is Liveness
    assert responder_for(INFO, [codec.delete(ProtocolID.IKE, [])]) is IKEDelete
    assert responder_for(INFO, [codec.delete(ProtocolID.ESP, [b"abcd"])]) is ChildDelete
    ike_sa = codec.sa([(1, ProtocolID.IKE, b"x" * 8, [(1, 20, 256), (2, 5, None),
                                                       (4, 19, None)])])
    esp_sa = codec.sa([(1, ProtocolID.ESP, b"abcd", [(1, 20, 256), (5, 0, None)])])
    assert responder_for(CHILD, [ike_sa, codec.nonce(b"n" * 32)]) is IKERekey
    rekey = codec.notify(NotifyType.REKEY_SA, b"", ProtocolID.ESP, b"abcd")
    assert responder_for(CHILD, [rekey, esp_sa]) is ChildRekey
    assert responder_for(CHILD, [esp_sa]) is ChildCreate
    assert responder_for(ExchangeType.IKE_INTERMEDIATE, []) is IKEIntermediate
    assert responder_for(ExchangeType.IKE_FOLLOWUP_KE, []) is FollowupKE


def test_state_tables_are_complete_and_deleting_is_terminal() -> None:
    assert set(IKE_TRANSITIONS) == set(IKEState)
    assert set(CHILD_TRANSITIONS) == set(ChildState)
    assert not IKE_TRANSITIONS[IKEState.DELETING]
    assert not CHILD_TRANSITIONS[ChildState.DELETING]
    assert all(IKEState.DELETING in v for k, v in IKE_TRANSITIONS.items()
               if k is not IKEState.DELETING)


def test_illegal_transitions_raise() -> None:
    net = Net()
    net.up()
    ike = net.west.engine.ike_of("west-east")[0]
    child = ike.children[0]
    assert ike.state is IKEState.ESTABLISHED and child.state is ChildState.ESTABLISHED
    with pytest.raises(InternalError):
        ike.to(IKEState.AUTH_I)
    with pytest.raises(InternalError):
        child.to(ChildState.REKEY_I)
    ike.to(IKEState.ESTABLISHED)  # writing the same state is allowed
    child.to(ChildState.DELETING)
    with pytest.raises(InternalError):
        child.to(ChildState.ESTABLISHED)


def test_illegal_transition_in_an_exchange_is_an_internal_error() -> None:
    """A task that breaks the state table tears its IKE SA down like any other bug."""
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT to east
    net.step()  # its answer to west, which sends IKE_AUTH
    ike = net.west.engine.ike_of("west-east")[0]
    assert ike.outstanding is not None
    task = ike.outstanding.task
    assert isinstance(task, IKEAuth) and task.child is not None
    task.child.state = ChildState.DELETING  # corrupt: installing it is now illegal
    net.run()
    ev = [e for e in net.west.events if e.kind == "internal-error"]
    assert len(ev) == 1 and ev[0].reason == "internal"
    assert any("InternalError" in m and "DELETING -> ESTABLISHED" in m
               for m in net.west.logs())
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert not net.west.engine.children_in and not net.west.policies
