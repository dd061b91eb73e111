"""The engine's event counters (ike/stats.py) behind ``--globalstatus``'s ``total.*`` lines."""

from __future__ import annotations

from pypluto.control.libreswan_totals import total_lines
from pypluto.iana import NotifyType as N

from .harness import Net


def _values(engine, counters: dict | None = None) -> dict[str, int]:  # noqa: ANN001
    snap = {"engine": {"ike_sas": [], "dos": {}}, "totals": engine.stats.as_dict(),
            "counters": counters or {}}
    return {k: int(v) for k, v in (ln.split("=", 1) for ln in total_lines(snap))}


def test_lifecycle_algorithms_and_notifies_are_counted() -> None:
    net = Net(west_kw={"ike": "aes_gcm256-sha2_512-dh19+dh31"},
              east_kw={"ike": "aes_gcm256-sha2_512-dh31"})
    net.up()
    assert net.established(net.west) and net.children(net.west)
    w, e = _values(net.west.engine), _values(net.east.engine)
    for v in (w, e):
        assert v["total.ikev2.ike.established"] == 1
        assert v["total.ike.ikev2.established"] == 1
        assert v["total.ikev2.child.established"] == 1
        assert v["total.ikev2.child.started"] == 1
        assert v["total.ikev2.encr.AES_GCM_16"] == 1
        assert v["total.ikev2.group.DH31"] == 1
        assert v["total.ikev2.ipsec.encr.AES_GCM_16"] == 1
        assert v["total.ikev2.ipsec.integ.NONE"] == 1  # AEAD
        assert v["total.ipsec.type.esp"] == 1 and v["total.ipsec.type.all"] == 1
        assert v["total.ipsec.type.non_encap"] == 1
        assert v["total.ikev2.ike.finished"] == 0
    # west's IKE SA retried with DH31 after east's INVALID_KE_PAYLOAD (RFC 7296 §1.2)
    assert w["total.ikev2.recv.invalidke.using.DH19"] == 1
    assert w["total.ikev2.recv.invalidke.suggesting.DH31"] == 1
    assert e["total.ikev2.sent.invalidke.using.DH19"] == 1
    assert e["total.ikev2.sent.invalidke.suggesting.DH31"] == 1
    assert e["total.ikev2.sent.notifies.error.INVALID_KE_PAYLOAD"] == 1
    assert w["total.ikev2.recv.notifies.error.INVALID_KE_PAYLOAD"] == 1
    # NAT detection: west sent it twice (first try and retry) and east read both
    assert w["total.ikev2.sent.notifies.status.NAT_DETECTION_SOURCE_IP"] == 2
    assert e["total.ikev2.recv.notifies.status.NAT_DETECTION_SOURCE_IP"] == 2
    assert e["total.ikev2.sent.notifies.status.NAT_DETECTION_SOURCE_IP"] == 1
    assert w["total.ikev2.recv.notifies.status.NAT_DETECTION_SOURCE_IP"] == 1
    # the counters the engine keeps are the ones the lines print
    st = net.east.engine.stats
    assert st.notify_sent[int(N.INVALID_KE_PAYLOAD)] == 1


def test_liveness_and_delete_are_counted() -> None:
    kw = {"dpddelay": 10.0, "dpdtimeout": 30.0}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.advance(25)
    w, e = _values(net.west.engine), _values(net.east.engine)
    probes_w, probes_e = w["total.ike.dpd.sent"], e["total.ike.dpd.sent"]
    assert probes_w >= 1 and probes_e >= 1
    assert w["total.ike.dpd.recv"] == probes_w  # every probe answered
    assert e["total.ike.dpd.replied"] == probes_w
    assert w["total.ike.dpd.replied"] == probes_e
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    for eng in (net.west.engine, net.east.engine):
        v = _values(eng)
        assert v["total.ikev2.ike.finished"] == 1 and v["total.ike.ikev2.completed"] == 1
        assert v["total.ikev2.child.finished"] == 1
        assert v["total.ike.ikev2.failed"] == 0


def test_failed_ike_sa_is_counted_as_failed() -> None:
    net = Net(east_psk=b"a different key entirely, 32 bytes")
    net.up()
    assert not net.established(net.west)
    assert _values(net.west.engine)["total.ike.ikev2.failed"] == 1
    v = _values(net.east.engine)
    assert v["total.ike.ikev2.failed"] == 1 and v["total.ikev2.ike.established"] == 0
    assert v["total.ikev2.sent.notifies.error.AUTHENTICATION_FAILED"] == 1


def test_unknown_notify_types_go_to_other() -> None:
    net = Net()
    net.up()
    st = net.west.engine.stats
    st.notify_recv[40000] += 2  # a private-use status type
    st.notify_recv[8200] += 1  # a private-use error type
    v = _values(net.west.engine)
    assert v["total.ikev2.recv.notifies.status.other"] == 2
    assert v["total.ikev2.recv.notifies.error.other"] == 1


def test_deleted_child_bytes_stay_in_the_totals() -> None:
    net = Net()
    net.up()
    counters = {"ipsec_bytes_gone": {"esp.in": 1000, "esp.out": 2000}, "ike_bytes_in": 7,
                "ike_bytes_out": 9}
    v = _values(net.west.engine, counters)
    assert v["total.ipsec.esp.traffic.in"] == 1000 and v["total.ipsec.traffic.out"] == 2000
    assert v["total.ike.traffic.in"] == 7 and v["total.ike.traffic.out"] == 9


def test_every_notify_sent_is_counted_as_the_peer_receives_it() -> None:
    """The responder's IKE_SA_INIT capability notifies are written from a serialized
    template (issue 18): they are counted as sent all the same, each as the initiator
    counts it received (IKEV2_FRAGMENTATION_SUPPORTED, SIGNATURE_HASH_ALGORITHMS, ...)."""
    net = Net()
    net.up()
    assert net.established(net.west)
    sent, recv = net.east.engine.stats.notify_sent, net.west.engine.stats.notify_recv
    for ntype in (N.IKEV2_FRAGMENTATION_SUPPORTED, N.SIGNATURE_HASH_ALGORITHMS,
                  N.NAT_DETECTION_SOURCE_IP):
        assert recv[int(ntype)] >= 1
    assert dict(sent) == dict(recv)
    assert dict(net.west.engine.stats.notify_sent) == dict(net.east.engine.stats.notify_recv)
