"""Reliability, NAT-T, delete, liveness, rekeys, cookies (RFC 7296 §2.1-2.8, §2.23)."""

from __future__ import annotations

from pypluto.ike.actions import SendPacket
from pypluto.ike.settings import EngineSettings

from .harness import NAT_PUBLIC, Net, check_pair


def test_nat_detected_and_floated() -> None:
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    w, e = net.established(net.west), net.established(net.east)
    assert w and e, net.west.logs() + net.east.logs()
    assert w[0].nat_detected_local and not w[0].nat_detected_remote
    assert e[0].nat_detected_remote and not e[0].nat_detected_local
    assert w[0].local.endswith(":4500") and w[0].remote.endswith(":4500")
    assert e[0].remote.startswith(str(NAT_PUBLIC))
    for side in (net.west, net.east):
        for sa in side.kernel_sas.values():
            assert sa.encapsulated
    wsa = [s for s in net.west.kernel_sas.values() if s.direction == "out"][0]
    assert (wsa.encap_sport, wsa.encap_dport) == (4500, 4500)
    esa = [s for s in net.east.kernel_sas.values() if s.direction == "out"][0]
    assert esa.encap_sport == 4500 and esa.encap_dport == 40001  # the NAT's mapping of 4500
    assert esa.dst == NAT_PUBLIC
    # west keeps the NAT mapping alive
    net.advance(45)
    assert net.west.keepalives == 2 and net.east.keepalives == 0


def test_encapsulation_no_sends_plain_esp_through_a_nat() -> None:
    """encapsulation=no: the NAT is detected (IKE moves to port 4500) but the Child SAs
    are plain ESP, as the operator asked; auto (the other tests) encapsulates."""
    net = Net(nat=True, east_kw={"left": "%any", "encapsulation": "no"},
              west_kw={"encapsulation": "no"})
    net.up()
    w, e = net.established(net.west), net.established(net.east)
    assert w and e and w[0].nat_detected_local and e[0].nat_detected_remote
    for side in (net.west, net.east):
        assert side.kernel_sas and not any(s.encapsulated for s in side.kernel_sas.values())


def test_encapsulation_yes_without_nat() -> None:
    net = Net(west_kw={"encapsulation": "yes"})
    net.up()
    e = net.established(net.east)[0]
    assert e.local.endswith(":4500") and e.remote.endswith(":4500")
    for side in (net.west, net.east):
        assert all(s.encapsulated and s.encap_dport == 4500 for s in side.kernel_sas.values())
    check_pair(net)


def test_lost_first_packets_are_retransmitted() -> None:
    net = Net()
    net.drop_next = 1  # IKE_SA_INIT request lost
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.run()
    assert not net.established(net.west)
    net.advance(0.6)  # retransmit-interval 0.5s
    assert net.established(net.west) and net.children(net.east)


def test_lost_responses_answered_from_cache() -> None:
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT request delivered
    net.queue.clear()  # its response is lost
    net.advance(0.6)  # retransmit; east answers from its cache
    assert len(net.east.engine.by_serial) == 1
    net.run()
    assert net.established(net.west) and net.established(net.east)
    # now lose the IKE_AUTH response twice
    net2 = Net()
    net2.apply(net2.west, net2.west.engine.initiate("west-east", net2.now))
    net2.step()
    net2.step()  # INIT response, west sends IKE_AUTH
    net2.step()  # IKE_AUTH delivered; east established, answers
    net2.queue.clear()
    net2.advance(0.6)
    net2.queue.clear()
    net2.advance(1.1)
    assert net2.established(net2.west)
    assert len(net2.children(net2.east)) == 1  # no second Child SA from the retransmits
    check_pair(net2)


def test_duplicated_and_reordered() -> None:
    net = Net()
    net.dup = True
    net.up()
    assert len(net.established(net.west)) == 1 and len(net.established(net.east)) == 1
    assert len(net.children(net.east)) == 1
    net.dup = False
    net.reorder = True
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.apply(net.east, net.east.engine.terminate("nonexistent", net.now))
    net.run()
    assert len(net.children(net.west)) == 1


def test_peer_gone_initiator_gives_up() -> None:
    net = Net()
    net.cut = True
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.advance(61)
    assert not net.west.engine.by_serial
    assert [e.kind for e in net.west.events] == ["failed"]
    sends = [a for a in net.west.actions if isinstance(a, SendPacket)]
    assert 5 <= len(sends) <= 9  # 0.5, 1, 2, 4, 8, 16, 32 doubling


def test_half_open_expires() -> None:
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.cut = True
    net.queue.clear()
    assert net.east.engine.n_halfopen == 1
    net.advance(31)
    assert net.east.engine.n_halfopen == 0 and not net.east.engine.by_serial


def test_delete_from_initiator() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    for side in (net.west, net.east):
        assert not side.engine.by_serial and not side.kernel_sas and not side.policies
    assert "ike-deleted" in [e.kind for e in net.east.events]


def test_delete_from_responder() -> None:
    net = Net()
    net.up()
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    for side in (net.west, net.east):
        assert not side.engine.by_serial and not side.kernel_sas and not side.policies


def test_shutdown_sends_delete() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.shutdown(net.now))
    net.run()
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert not net.east.engine.by_serial and not net.east.kernel_sas


def test_dead_peer_detected_by_liveness() -> None:
    kw = {"dpddelay": 10.0, "dpdtimeout": 30.0}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.advance(25)  # liveness exchanges succeed
    assert net.established(net.west)
    net.cut = True
    net.advance(60)
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert "peer-dead" in [e.kind for e in net.west.events]


def test_dpdaction_restart() -> None:
    kw = {"dpddelay": 10.0, "dpdtimeout": 20.0}
    net = Net(west_kw=dict(kw, dpdaction="restart"), east_kw=kw)
    net.up()
    net.cut = True
    net.advance(35)
    assert "peer-dead" in [e.kind for e in net.west.events]
    net.cut = False
    net.advance(100)
    assert len(net.established(net.west)) == 1 and net.children(net.west)


def test_auto_keep_revives_once_the_peer_brought_it_up() -> None:
    """auto=keep (ipsec.conf(5): "an add plus an attempt to keep the connection up once
    the remote peer brought it up"): east never starts it; once west brought it up and
    then went silent, east declares west dead and initiates it again itself; after
    whack --down it is an add conn again (a dead peer is not revived)."""
    kw = {"dpddelay": 10.0, "dpdtimeout": 20.0}
    for auto, revived in (("keep", True), ("add", False)):
        net = Net(west_kw=kw, east_kw=dict(kw, auto=auto))
        net.advance(30)
        assert not net.east.engine.by_serial  # keep does not initiate by itself
        net.up()
        net.cut = True
        net.advance(35)
        assert "peer-dead" in [e.kind for e in net.east.events]
        assert not net.established(net.east)
        ours = [i for i in net.east.engine.by_serial.values() if i.initiator]
        assert bool(ours) == revived, auto
        net.cut = False
        net.advance(100)
        if revived:  # east initiated this one
            assert [i.role for i in net.established(net.east)] == ["initiator"]
            assert net.children(net.east)
        else:
            assert not net.established(net.east)
    net = Net(west_kw=kw, east_kw=dict(kw, auto="keep"))
    net.up()
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    net.cut = True  # west's own liveness would bring nothing back either
    net.advance(100)
    assert not net.east.engine.by_serial


def test_rekey_child_by_lifetime() -> None:
    kw = {"salifetime": 600.0, "rekeymargin": 60.0, "rekeyfuzz": 0.0}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = net.children(net.west)[0].spi_in
    net.advance(545)
    ch = net.children(net.west)
    assert len(ch) == 1 and ch[0].spi_in != old
    assert len(net.children(net.east)) == 1
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    assert len(net.west.policies) == 3
    check_pair(net)


def test_rekey_child_with_pfs() -> None:
    kw = {"esp": "aes_gcm256-dh19"}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    ch = net.children(net.east)
    assert len(ch) == 1 and ch[0].ke == "ECP_256"
    check_pair(net)


def test_rekey_ike_moves_children() -> None:
    net = Net()
    net.up()
    spi = net.children(net.west)[0].spi_in
    old = net.established(net.west)[0].serial
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    for side in (net.west, net.east):
        ikes = net.established(side)
        assert len(ikes) == 1 and ikes[0].serial != old or side is net.east
        assert len(ikes[0].children) == 1 and ikes[0].children[0].spi_in in (spi, ikes[0]
                                                                               .children[0].spi_in)
    assert net.children(net.west)[0].spi_in == spi
    # the new IKE SA works: delete over it
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    assert not net.west.engine.by_serial and not net.east.engine.by_serial


def test_rekey_ike_by_lifetime() -> None:
    kw = {"ikelifetime": 3600.0, "rekeymargin": 540.0, "rekeyfuzz": 0.0}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.advance(3100)
    assert len(net.established(net.west)) == 1 and len(net.established(net.east)) == 1
    assert net.established(net.west)[0].serial != 1
    assert net.children(net.west) and net.children(net.east)


def test_simultaneous_child_rekey() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(5)
    w, e = net.children(net.west), net.children(net.east)
    assert len(w) == 1 and len(e) == 1, (net.west.logs(), net.east.logs())
    assert w[0].spi_in == e[0].spi_out
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    check_pair(net)


def test_simultaneous_ike_rekey() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.run()
    net.advance(5)
    w, e = net.established(net.west), net.established(net.east)
    assert len(w) == 1 and len(e) == 1, (net.west.logs(), net.east.logs())
    assert w[0].spi_i == e[0].spi_i and w[0].spi_r == e[0].spi_r
    assert len(w[0].children) == 1 and len(e[0].children) == 1
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert not net.east.engine.by_serial


def test_cookie_round_trip() -> None:
    net = Net(east_settings=EngineSettings(force_busy=True))
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert any("COOKIE" in m for m in net.west.logs())
    assert net.east.engine.status(net.now).busy


def test_cookie_threshold() -> None:
    net = Net(east_settings=EngineSettings(ddos_ike_threshold=0))
    net.up()
    assert net.established(net.east)
    assert any("COOKIE" in m for m in net.west.logs())


def test_uniqueids_replaces_old_ike_sa() -> None:
    net = Net()
    net.up()
    first = net.established(net.east)[0].serial
    # west "reboots": a fresh engine with the same connection
    import random

    from pypluto.ike.engine import Engine

    from .harness import WEST, Store, make_conn
    net.west.engine = Engine(EngineSettings(), Store(b"very secret shared key for tests"),
                             rng=random.Random(7).randbytes, local_addrs=[WEST])
    # the rebooted west says INITIAL_CONTACT (initial-contact=yes; the default is no,
    # as Libreswan's): east drops the old IKE SA and its Child SA at once (RFC 7296 §2.4)
    net.west.engine.add_connection(make_conn(local_left=True, initial_contact=True))
    net.up()
    e = net.established(net.east)
    assert len(e) == 1 and e[0].serial != first
    assert len(net.children(net.east)) == 1


def test_status_states() -> None:
    net = Net()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    st = net.west.engine.status(net.now)
    assert st.ike_sas[0].state == "STATE_V2_PARENT_I1"
    net.step()
    assert net.east.engine.status(net.now).ike_sas[0].state == "STATE_V2_PARENT_R1"
    assert net.east.engine.status(net.now).half_open == 1
    net.run()
    st = net.west.engine.status(net.now)
    assert st.ike_sas[0].state == "STATE_V2_ESTABLISHED_IKE_SA"
    assert st.ike_sas[0].children[0].state == "STATE_V2_ESTABLISHED_CHILD_SA"
    assert st.connections[0].name == "west-east" and st.connections[0].routed


def test_delete_connection_and_sa_counters() -> None:
    kw = {"ipsec_max_bytes": 1000}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = net.children(net.west)[0]
    net.apply(net.west, net.west.engine.sa_counters(old.spi_in, 900, 5, net.now))
    net.run()
    assert net.children(net.west)[0].spi_in != old.spi_in
    net.apply(net.west, net.west.engine.delete_connection("west-east", net.now))
    net.run()
    assert not net.west.engine.connections and not net.east.engine.by_serial


def test_fragmentation_round_trip() -> None:
    """RFC 7383: messages above the fragment size go out as SKF fragments."""
    st = {"west_settings": EngineSettings(fragment_size=160),
          "east_settings": EngineSettings(fragment_size=160)}
    net = Net(**st)
    net.up()
    assert net.established(net.west) and net.children(net.east)
    from pypluto.wire.message import parse_message
    skf = [d for _, d in net.sent if parse_message(d).payloads[-1].payload_type == 53]
    assert len(skf) >= 4
    check_pair(net)


def test_fragments_lost_and_retransmitted() -> None:
    st = {"west_settings": EngineSettings(fragment_size=160),
          "east_settings": EngineSettings(fragment_size=160)}
    net = Net(**st)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()  # west now sends the IKE_AUTH fragments
    net.queue.pop(1)  # lose the second fragment
    net.run()
    assert not net.established(net.east)
    net.advance(0.6)
    assert net.established(net.west) and net.children(net.east)


def test_sa_counters_by_outbound_spi() -> None:
    kw = {"ipsec_max_packets": 100}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = net.children(net.west)[0]
    net.apply(net.west, net.west.engine.sa_counters(old.spi_out, 0, 10, net.now))
    assert net.children(net.west)[0].spi_in == old.spi_in  # below the limit
    net.apply(net.west, net.west.engine.sa_counters(old.spi_out, 0, 90, net.now))
    net.run()
    assert net.children(net.west)[0].spi_in != old.spi_in


def test_no_state_left_after_nat_delete() -> None:
    net = Net(nat=True, east_kw={"left": "%any"})
    net.up()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    e = net.east.engine
    assert not e.by_serial and not e.ike_sas and not e.halfopen and not e.children_in
    assert not e.children_out and not e.by_reqid and not e.policy_owner and not e.by_conn


def test_ipv6_with_nat_detection() -> None:
    kw = {"left": "2001:db8::1", "right": "2001:db8::2", "leftsubnet": "2001:db8:1::/64",
          "rightsubnet": "2001:db8:2::/64", "leftid": None, "rightid": None}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    w = net.established(net.west)
    assert w and w[0].remote == "[2001:db8::2]:500" and not w[0].nat_detected_local
    c = net.children(net.east)
    assert c and c[0].local_ts == ["2001:db8:2::/64"]
    assert net.established(net.east)[0].remote_id == "2001:db8::1"
    check_pair(net)


def test_liveness_from_responder_only() -> None:
    net = Net(east_kw={"dpddelay": 5.0})
    net.up()
    net.advance(30)
    assert net.established(net.west) and net.established(net.east)
    assert net.established(net.east)[0].msgid_next_request >= 5  # probes were answered
    net.cut = True
    net.advance(90)
    assert not net.east.engine.by_serial and "peer-dead" in [e.kind for e in net.east.events]
    assert net.established(net.west)  # west has no liveness: it does not notice


def test_child_expires_without_rekey() -> None:
    kw = {"salifetime": 100.0, "rekey": False}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.advance(101)
    assert not net.children(net.west) and not net.children(net.east)
    assert net.established(net.west) and not net.west.kernel_sas and not net.west.policies


def test_delete_child_only_from_peer() -> None:
    net = Net()
    net.up()
    ike = next(iter(net.east.engine.by_serial.values()))
    from pypluto.ike.tasks.child_delete import delete_children
    net.apply(net.east, delete_children(net.east.engine, ike, list(ike.children), net.now))
    net.run()
    assert not net.children(net.west) and not net.children(net.east)
    assert net.established(net.west) and net.established(net.east)
    assert not net.west.kernel_sas and not net.west.policies and not net.east.policies


def test_child_rekey_then_ike_rekey_queued() -> None:
    """Work queued on an IKE SA that gets rekeyed continues on the new IKE SA."""
    net = Net()
    net.up()
    old_spi = net.children(net.west)[0].spi_in
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    net.advance(2)
    w = net.established(net.west)
    assert len(w) == 1 and len(w[0].children) == 1 and w[0].children[0].spi_in != old_spi
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    check_pair(net)


def test_host_to_host_behind_nat_and_virtual_private() -> None:
    kw = {"leftsubnet": None, "rightsubnet": None}
    east = dict(kw, left="%any", leftid="@west.example")
    # virtual-private unset: a claimed inner address is never granted (issue 12)
    net = Net(nat=True, west_kw=kw, east_kw=east)
    net.up()
    assert net.established(net.east) and not net.children(net.east)
    net1 = Net(nat=True, west_kw=kw, east_kw=east,
               east_settings=EngineSettings(virtual_private="%v4:192.0.2.0/24"))
    net1.up()
    c = net1.children(net1.east)
    assert c and c[0].remote_ts == ["192.0.2.1/32"]  # west's inner address, allowed
    # virtual-private excludes it: TS_UNACCEPTABLE
    net2 = Net(nat=True, west_kw=kw, east_kw=east,
               east_settings=EngineSettings(virtual_private="%v4:10.0.0.0/8"))
    net2.up()
    assert net2.established(net2.east) and not net2.children(net2.east)
    net3 = Net(nat=True, west_kw=kw, east_kw=east,
               east_settings=EngineSettings(virtual_private="%v4:192.0.2.0/24,%v4:!10.0.0.0/8"))
    net3.up()
    assert net3.children(net3.east)


def test_ike_rekey_interrupted_by_delete_leaves_nothing() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.queue.clear()  # the rekey request is lost; east deletes everything meanwhile
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run()
    assert not net.west.engine.by_serial and not net.west.engine.ike_sas
    net.advance(70)
    assert not net.west.engine.ike_sas and not net.east.engine.ike_sas


def test_rekey_responder_holds_outbound_until_old_deleted() -> None:
    net = Net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.step()  # rekey request reaches east
    east_out = [s for s in net.east.kernel_sas.values() if s.direction == "out"]
    assert len(east_out) == 1  # only the old outbound SA so far
    assert len(net.east.kernel_sas) == 3  # old pair + new inbound
    net.run()
    east_out = [s for s in net.east.kernel_sas.values() if s.direction == "out"]
    assert len(east_out) == 1 and len(net.east.kernel_sas) == 2
    check_pair(net)


def test_reauth_make_before_break() -> None:
    kw = {"ikelifetime": 3600.0, "rekeymargin": 540.0, "rekeyfuzz": 0.0, "reauth": True}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old_child = net.children(net.west)[0].spi_in
    net.advance(3100)
    w, e = net.established(net.west), net.established(net.east)
    assert len(w) == 1 and len(e) == 1 and w[0].serial != 1
    assert w[0].children and w[0].children[0].spi_in != old_child
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    assert len(net.west.policies) == 3 and len(net.east.policies) == 3
    assert any("reauth" in m for m in net.west.logs())
    check_pair(net)


def test_kernel_expire_events() -> None:
    from pypluto.kernel.base import SAExpire
    net = Net()
    net.up()
    c = net.children(net.west)[0]
    ev = SAExpire(dst=net.west.addr, spi=c.spi_in, protocol="esp", hard=False, reason="seq")
    net.apply(net.west, net.west.engine.sa_expired(ev, net.now))
    net.run()
    c2 = net.children(net.west)[0]
    assert c2.spi_in != c.spi_in
    ev = SAExpire(dst=net.east.addr, spi=c2.spi_out, protocol="esp", hard=True, reason="bytes")
    net.apply(net.west, net.west.engine.sa_expired(ev, net.now))
    net.run()
    assert not net.children(net.west) and not net.children(net.east)
    assert net.established(net.west)


def test_rekeyed_inbound_sa_is_deleted_as_rekeyed_and_a_plain_delete_is_not() -> None:
    """DelSA.rekeyed tells the plane an inbound SA had a successor (it may keep decrypting
    briefly, KernelBackend.retire_sa); outbound SAs and a plain delete never say so."""
    from pypluto.ike.actions import DelSA

    net = Net()
    net.up()
    old = {s.name: (net.children(s)[0].spi_in, net.children(s)[0].spi_out)
           for s in (net.west, net.east)}
    for side in (net.west, net.east):
        side.actions.clear()
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    for side in (net.west, net.east):  # initiator (replaced) and responder (peer_rekeys)
        dels = {a.spi: a.rekeyed for a in side.actions if isinstance(a, DelSA)}
        spi_in, spi_out = old[side.name]
        assert dels == {spi_in: True, spi_out: False}, (side.name, dels)
        side.actions.clear()
    ike = next(iter(net.east.engine.by_serial.values()))
    from pypluto.ike.tasks.child_delete import delete_children
    net.apply(net.east, delete_children(net.east.engine, ike, list(ike.children), net.now))
    net.run()
    for side in (net.west, net.east):
        dels = [a for a in side.actions if isinstance(a, DelSA)]
        assert len(dels) == 2 and not any(a.rekeyed for a in dels)


def test_a_resent_delete_is_answered_after_the_ike_sa_is_gone() -> None:
    """RFC 7296 §2.1: the responder remembers its answer until the next request, and
    after a Delete of the IKE SA none comes.  West deletes the IKE SA; east answers,
    deletes its side, and that answer is lost; west's resent Delete is answered again
    from what east kept, so west ends with "deleted", not "no answer to Delete" after
    its retransmissions (strongSwan holds its side that long in DELETING: found with
    tests/interop/test_lossy_network.py).  Never more: the same request from another
    address, another message ID, past CLOSED_RESENDS answers or CLOSED_KEEP_S gets
    nothing."""
    from pypluto.ike.actions import Endpoint
    from pypluto.ike.engine import CLOSED_KEEP_S, CLOSED_RESENDS

    def lose_the_answer_to_delete(net: Net) -> SendPacket:
        """West rekeys the IKE SA, then deletes the old one (a request it resends);
        east's answer to that Delete is lost.  Returns west's Delete request."""
        net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
        while not net.east.engine.closed:
            assert net.step()
        frm, answer = net.queue.pop()  # east's answer: lost
        assert frm is net.east and not net.queue
        assert len(net.east.engine.by_serial) == 1  # the new IKE SA only
        return [a for a in net.west.actions if isinstance(a, SendPacket)][-1]

    net = Net()
    net.up()
    req = lose_the_answer_to_delete(net)
    net.advance(1.0)  # west resends; east answers from what it kept
    assert len(net.west.engine.by_serial) == 1
    assert "deleting IKE SA (deleted)" in " ".join(net.west.logs()), net.west.logs()
    assert "no answer to Delete" not in " ".join(net.west.logs())
    check_pair(net)
    east_eng = net.east.engine
    local, remote = req.remote, req.local  # as east sees it

    def answers(data: bytes, frm: Endpoint, now: float) -> int:
        return sum(isinstance(a, SendPacket) for a in east_eng.receive(data, local, frm, now))

    other = Endpoint(NAT_PUBLIC, remote.port)
    assert answers(req.data, other, net.now) == 0  # another address
    msgid = int.from_bytes(req.data[20:24], "big")
    bumped = req.data[:20] + (msgid + 1).to_bytes(4, "big") + req.data[24:]
    assert answers(bumped, remote, net.now) == 0  # another message ID
    got = [answers(req.data, remote, net.now) for _ in range(CLOSED_RESENDS + 2)]
    assert got == [1] * (CLOSED_RESENDS - 1) + [0, 0, 0], got  # one was used above
    net2 = Net()
    net2.up()
    req2 = lose_the_answer_to_delete(net2)
    late = net2.now + CLOSED_KEEP_S
    assert not [a for a in net2.east.engine.receive(req2.data, req2.remote, req2.local, late)
                if isinstance(a, SendPacket)]
    assert not net2.east.engine.closed  # and forgotten
