"""Follow-ups of this session's rekey and Delete red teams.

* A Child SA Delete that reaches the old IKE SA after we answered the peer's IKE SA
  rekey (a peer with a window over 1 sends it behind the rekey, §2.18): the Child SA
  has moved to the new IKE SA; it is found there, deleted, and named in the answer.
  Before: an empty Delete answer, the Child SA kept by us and dropped by the peer.
* The SPIs a CREATE_CHILD_SA in flight remembers as deleted by the peer (§2.25) are
  bounded: a Delete holds up to ~16,000 unknown SPIs and a peer may send many before
  our request times out."""

from __future__ import annotations

from pypluto.iana import ProtocolID
from pypluto.ike import codec
from pypluto.ike.tasks import child_create
from pypluto.wire import payloads as wp

from .harness import check_pair
from .test_hostile_established import _answer, _request, _setup
from .test_hostile_rekey26 import _peer_rekeyed

INFO = 37


def test_a_child_sa_delete_on_the_ike_sa_the_peer_rekeyed_finds_the_moved_child() -> None:
    net, w, e = _setup()
    wc = w.children[0]
    held = _peer_rekeyed(net, w)
    (new,) = e.peer_rekeys
    (ec,) = new.children
    assert ec.spi_out == wc.spi_in
    acts = _request(net, w, INFO, [codec.delete(ProtocolID.ESP, [wc.spi_in.to_bytes(4, "big")])])
    net.queue.clear()  # the answer goes to west's old IKE SA, which sent no such request
    (d,) = [p for p in _answer(w, acts) or [] if isinstance(p, wp.DeletePayload)]
    assert d.spis == [ec.spi_in.to_bytes(4, "big")]  # ours of the pair, §1.4.1
    assert not new.children and not e.children
    assert ec.spi_in not in net.east.engine.children_in
    # west gets the answer to its IKE SA rekey; its own Child SA is the one it deleted
    net.apply(net.west, net.west.engine.receive(bytes(held.data), held.remote, held.local,
                                                net.now))
    net.run()
    assert e.serial not in net.east.engine.by_serial


def test_the_spis_remembered_while_a_create_child_sa_is_in_flight_are_bounded() -> None:
    net, w, e = _setup()
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.queue.clear()  # our request stays in flight
    task = e.outstanding.task if e.outstanding is not None else None
    assert isinstance(task, child_create.ChildCreate)
    for start in range(0, 3 * 16000, 16000):
        spis = [(start + i + 1).to_bytes(4, "big") for i in range(16000)]
        _request(net, w, INFO, [codec.delete(ProtocolID.ESP, spis)])
        net.queue.clear()
    assert len(task.gone) == child_create._GONE_MAX
    check_pair(net)
