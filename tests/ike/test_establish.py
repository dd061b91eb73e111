"""IKE_SA_INIT + IKE_AUTH + first Child SA, back to back (RFC 7296 §1.2)."""

from __future__ import annotations

import pytest

from pypluto.ike.actions import AddSA, Log, SendPacket

from .harness import Net, check_pair


def test_default_proposals_establish() -> None:
    net = Net()
    net.up()
    for side in (net.west, net.east):
        assert len(net.established(side)) == 1, side.logs()
        assert len(net.children(side)) == 1, side.logs()
        assert len(side.kernel_sas) == 2
        assert len(side.policies) == 3  # out, in, fwd
    check_pair(net)
    w = net.established(net.west)[0]
    assert w.encr == "AES_GCM_16_256" and w.prf == "PRF_HMAC_SHA2_512" and w.ke == "ECP_256"
    c = net.children(net.west)[0]
    assert c.local_ts == ["198.51.100.0/24"] and c.remote_ts == ["203.0.113.0/24"]
    assert not c.encapsulated
    logs = net.west.logs()
    assert any("initiating IKEv2 connection" in m for m in logs)
    assert any("established IKE SA; authenticated peer using authby=secret and FQDN "
               "'@east.example'" in m for m in logs), logs
    assert any(m.startswith("established Child SA; IPsec tunnel [198.51.100.0/24==="
                            "203.0.113.0/24] {ESP=>0x") for m in logs), logs
    assert net.east.events[0].kind == "ike-established"
    # nothing secret in the logs
    for side in (net.west, net.east):
        for a in side.actions:
            if isinstance(a, AddSA):
                key = a.sa.encr_key.hex()
                assert all(key not in m for m in side.logs())
            assert not isinstance(a, Log) or "very secret" not in a.message


@pytest.mark.parametrize("ike,esp,encr,child_encr", [
    ("aes_gcm256-sha2_512-dh31", None, "AES_GCM_16_256", "AES_GCM_16"),
    ("aes256-sha2_256-modp2048", "aes128-sha1-modp2048", "AES_CBC_256", "AES_CBC"),
    ("chacha20poly1305-sha2_512-dh20", "chacha20poly1305", "CHACHA20_POLY1305", "CHACHA"),
    ("aes128-sha1-modp2048", "aes128-sha1", "AES_CBC_128", "AES_CBC"),
])
def test_configured_proposals(ike: str, esp: str | None, encr: str, child_encr: str) -> None:
    kw = {"ike": ike, "esp": esp}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs()
    assert net.established(net.west)[0].encr == encr
    ch = net.children(net.east)
    assert len(ch) == 1 and ch[0].encr.startswith(child_encr)
    check_pair(net)


def test_psk_mismatch() -> None:
    net = Net(east_psk=b"another key entirely")
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    assert any("AUTHENTICATION_FAILED" in m for m in net.west.logs())
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert [e.kind for e in net.west.events] == ["failed"]


def test_initiator_that_rejects_the_responder_tells_it() -> None:
    """East accepts west and establishes, but answers with an ID west does not expect:
    west gives up and says so in an INFORMATIONAL with AUTHENTICATION_FAILED (RFC 7296
    §2.21.2, as strongSwan), so east removes its IKE SA and Child SA instead of keeping
    a tunnel to nobody; east answers the INFORMATIONAL, and nothing more is sent."""
    net = Net(east_kw={"rightid": "@mallory.example"})  # east (right) calls itself mallory
    net.up()
    assert any("does not match the expected" in m for m in net.west.logs())
    assert any("could not authenticate us" in m for m in net.east.logs())
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert [e.kind for e in net.east.events if e.kind != "child-established"][-1] == "failed"
    informational = [d for who, d in net.sent if d[18] == 37]
    assert [who for who, _ in net.sent].count("west") == 3  # INIT, AUTH, the notice
    assert len(informational) == 2  # the notice and east's empty answer


def test_missing_psk_on_responder_deletes_state() -> None:
    net = Net(east_psk=None)
    net.up()
    assert not net.east.engine.by_serial and net.east.engine.n_halfopen == 0
    assert not net.west.engine.by_serial


def test_proposal_mismatch() -> None:
    net = Net(west_kw={"ike": "aes128-sha1-modp2048"}, east_kw={"ike": "aes_gcm256-sha2_512-dh31"})
    net.up()
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    assert any("NO_PROPOSAL_CHOSEN" in m for m in net.west.logs())


def test_esp_mismatch_keeps_ike_sa() -> None:
    net = Net(west_kw={"esp": "aes128-sha1"}, east_kw={"esp": "aes_gcm256"})
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert not net.children(net.west) and not net.children(net.east)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert any("NO_PROPOSAL_CHOSEN" in m for m in net.west.logs())


def test_invalid_ke_retry() -> None:
    # west proposes dh19 first; east only accepts dh31 among the west's groups
    net = Net(west_kw={"ike": "aes_gcm256-sha2_512-dh19+dh31"},
              east_kw={"ike": "aes_gcm256-sha2_512-dh31"})
    net.up()
    assert net.established(net.west)[0].ke == "CURVE25519"
    assert any("INVALID_KE_PAYLOAD" in m for m in net.west.logs())
    assert net.east.engine.n_halfopen == 0


def test_ts_unacceptable() -> None:
    net = Net(east_kw={"rightsubnet": "192.0.2.128/25"})
    net.up()
    assert net.established(net.west) and not net.children(net.west)
    assert any("TS_UNACCEPTABLE" in m for m in net.west.logs())


def test_narrowing() -> None:
    net = Net(west_kw={"narrowing": True}, east_kw={"narrowing": True,
                                                      "rightsubnet": "203.0.113.0/25"})
    net.up()
    c = net.children(net.west)
    assert c and c[0].remote_ts == ["203.0.113.0/25"]


def test_transport_mode_host_to_host() -> None:
    kw = {"type": "transport", "leftsubnet": None, "rightsubnet": None}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    c = net.children(net.west)
    assert c and c[0].mode == "transport" and c[0].local_ts == ["192.0.2.1/32"]
    assert len(net.west.policies) == 2


def test_childless() -> None:
    net = Net(west_kw={"raw": {"childless": "yes"}})
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert not net.children(net.west) and not net.children(net.east)
    # a Child SA can follow with CREATE_CHILD_SA
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.run()
    assert net.children(net.west) and net.children(net.east)
    check_pair(net)


def test_default_ids_are_addresses() -> None:
    kw = {"leftid": None, "rightid": None}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.east)[0].remote_id == "192.0.2.1"


def test_every_packet_reparses_identically() -> None:
    from pypluto.wire.message import parse_message
    net = Net()
    net.up()
    for _, data in net.sent:
        assert parse_message(data).serialize() == data


def test_no_send_without_connection() -> None:
    net = Net()
    acts = net.west.engine.initiate("nope", net.now)
    assert not [a for a in acts if isinstance(a, SendPacket)]


SECOND = {"leftsubnet": "198.51.100.0/25", "rightsubnet": "192.0.2.128/25"}


def _second_conn_up(net: Net, **kw: object) -> None:
    """Both ends add a second conn ``west-east-2`` (``SECOND``'s subnets and ``kw``), the
    first is brought up, then west initiates the second on the same IKE SA."""
    from .harness import make_conn
    for side, left in ((net.west, True), (net.east, False)):
        net.apply(side, side.engine.add_connection(
            make_conn("west-east-2", local_left=left, **SECOND, **kw)))
    net.up()
    net.apply(net.west, net.west.engine.initiate("west-east-2", net.now))
    net.run()
    assert len(net.established(net.west)) == 1 and len(net.established(net.east)) == 1
    assert sorted(c.conn for c in net.children(net.east)) == ["west-east", "west-east-2"], \
        net.east.logs()


def test_second_connection_shares_the_ike_sa() -> None:
    from .harness import make_conn
    net = Net()
    _second_conn_up(net)
    ch = net.children(net.east)
    assert len({c.reqid for c in ch}) == 2
    assert len(net.east.policies) == 6
    check_pair(net)
    # the responder picks the connection by traffic selectors in IKE_AUTH, too
    net2 = Net()
    net2.apply(net2.east, net2.east.engine.add_connection(
        make_conn("west-east-2", local_left=False, **SECOND)))
    net2.west.engine.connections["west-east"] = make_conn(local_left=True, **SECOND)
    net2.up()
    assert [c.conn for c in net2.children(net2.east)] == ["west-east-2"]


@pytest.mark.parametrize("pfs", [(False, True), (True, False)])
def test_second_connection_with_other_pfs_shares_the_ike_sa(pfs: tuple[bool, bool]) -> None:
    """A CREATE_CHILD_SA for a second conn of the same peer is judged by that conn's
    pfs= (a KE payload, or none), not by the pfs= of the conn the IKE SA was made for."""
    first, second = pfs
    net = Net(west_kw={"pfs": first}, east_kw={"pfs": first})
    _second_conn_up(net, pfs=second)
    check_pair(net)
