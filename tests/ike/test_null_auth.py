"""NULL authentication (RFC 7619): authby=null, ID_NULL on both ends."""

from __future__ import annotations

from pypluto.ike.actions import Log

from .harness import Net, check_pair

NULL = {"authby": "null", "leftid": None, "rightid": None}


def _warnings(side) -> list[str]:  # noqa: ANN001
    return [a.message for a in side.actions if isinstance(a, Log) and a.level == "warning"]


def test_null_auth_establishes_without_secrets() -> None:
    net = Net(west_kw=NULL, east_kw=NULL, west_psk=None, east_psk=None)
    net.up()
    for side in (net.west, net.east):
        assert len(net.established(side)) == 1, side.logs()
        assert len(net.children(side)) == 1, side.logs()
        assert any("authenticated peer using authby=null and NULL '%null'" in m
                   for m in side.logs()), side.logs()
    check_pair(net)
    assert not net.west.engine.secrets.asked and not net.east.engine.secrets.asked


def test_null_auth_with_hybrid_key_exchange() -> None:
    kw = dict(NULL, ike="aes_gcm256-sha2_384-dh31;addke1=mlkem768")
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs()


def test_null_initiator_psk_responder_fails() -> None:
    net = Net(west_kw=NULL)
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    e = _warnings(net.east)
    assert len(e) == 1 and "answering AUTHENTICATION_FAILED" in e[0], e


def test_psk_initiator_null_responder_fails() -> None:
    net = Net(east_kw=NULL)
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    assert any("AUTHENTICATION_FAILED" in m for m in _warnings(net.west))


def test_psk_conn_with_any_peer_id_refuses_id_null() -> None:
    """rightid=%any never matches ID_NULL (RFC 7619 §2.2): a PSK conn stays PSK-only."""
    net = Net(west_kw=NULL, east_kw={"leftid": "%any"})
    net.up()
    assert not net.established(net.east)


def test_null_peers_do_not_replace_each_other() -> None:
    """uniqueids does not apply to ID_NULL: a second NULL-auth IKE SA leaves the first."""
    net = Net(west_kw=NULL, east_kw=NULL)
    net.up()
    ike = net.west.engine.initiate_ike(net.west.engine.connections["west-east"], net.now)
    net.apply(net.west, ike)
    net.run()
    assert len(net.established(net.east)) == 2, net.east.logs()
