"""Redirect during IKE_AUTH (RFC 5685 §6), Libreswan's ``send-redirect=`` and
``redirect-to=``: gateway A authenticates the client, answers IDr, AUTH and REDIRECT
with no Child SA, and the client deletes that IKE SA and lands on gateway B."""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.config.parser import parse_config_text
from pypluto.iana import NotifyType as N
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import redirect as redmod
from pypluto.wire import message as wm

from .test_redirect import GW_B, Net3

IKE_AUTH = 35


def _gateway_a(net: Net3, send: str = "yes", to: str = str(GW_B)) -> None:
    ec = net.east.engine.connections["west-east"]
    ec.raw["send-redirect"] = send
    ec.raw["redirect-to"] = to


def _auth_responses(net: Net3) -> int:
    """How many IKE_AUTH responses gateway A sent."""
    n = 0
    for name, data in net.sent:
        m = wm.parse_message(data)
        if name == "east" and m.exchange == IKE_AUTH and m.response:
            n += 1
    return n


def test_redirect_in_ike_auth_lands_on_gateway_b() -> None:
    net = Net3()
    _gateway_a(net)
    net.up()
    # the client authenticated A, was sent on, deleted the A IKE SA and landed on B
    assert net.established(net.b) and net.children(net.b)
    assert not net.established(net.east) and not net.children(net.east)
    assert len(net.established(net.west)) == 1 and len(net.children(net.west)) == 1
    assert _auth_responses(net) == 1  # A answered IKE_AUTH (not IKE_SA_INIT)
    east = net.east.logs()
    assert any("redirecting FQDN '@west.example' at 192.0.2.1:500 to 192.0.2.3 in IKE_AUTH "
               "(send-redirect=yes)" in m for m in east)
    assert any("established IKE SA" in m for m in east)  # A authenticated the client
    assert not net.east.kernel_sas  # no Child SA was installed on A
    west = net.west.logs()
    assert any("redirected by 192.0.2.2 to new gateway 192.0.2.3" in m for m in west)
    # the IKE_SA_INIT to B names A (REDIRECTED_FROM)
    inits = []
    for name, data in net.sent:
        m = wm.parse_message(data)
        if name == "west" and m.exchange == 34 and not m.response:
            inits.append({int(p.notify_type) for p in m.payloads if hasattr(p, "notify_type")})
    assert N.REDIRECTED_FROM not in inits[0] and N.REDIRECTED_FROM in inits[-1]


def test_redirect_in_ike_auth_needs_redirect_supported() -> None:
    net = Net3(accept="no")
    _gateway_a(net)
    net.up()
    # no REDIRECT_SUPPORTED from the client: A establishes it as usual
    assert net.established(net.east) and net.children(net.east)
    assert not net.established(net.b)
    assert not any("in IKE_AUTH" in m for m in net.east.logs())


def test_send_redirect_auto_redirects_only_while_busy() -> None:
    net = Net3()
    _gateway_a(net, send="auto")
    net.up()
    assert net.established(net.east) and not net.established(net.b)


def test_client_refuses_a_target_outside_accept_redirect_to() -> None:
    net = Net3(accept_to="198.51.100.0/24")
    _gateway_a(net)
    net.up()
    assert not net.established(net.b)
    assert any("not in accept-redirect-to=" in m for m in net.west.logs())
    assert not net.children(net.west)  # A refused the Child SA; no tunnel anywhere


def test_gateway_drops_a_redirected_sa_the_client_never_deletes() -> None:
    net = Net3()
    _gateway_a(net)
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    # deliver IKE_SA_INIT and IKE_AUTH, then lose everything the client sends
    for _ in range(4):
        net.step()
    net.cut = True
    net.run()
    assert net.established(net.east)
    net.now += redmod.AUTH_REDIRECT_GRACE + 1
    net.apply(net.east, net.east.engine.handle_timer(net.now))
    assert not net.established(net.east)


def test_send_redirect_targets_spread_and_auth_target_rules() -> None:
    net = Net3()
    ec = net.east.engine.connections["west-east"]
    ec.raw["redirect-to"] = "192.0.2.3, 192.0.2.4"
    ec.raw["send-redirect"] = "yes"
    assert redmod.conn_targets(ec) == [GW_B, ipaddress.ip_address("192.0.2.4")]

    class FakeIKE:
        redirect_ok = True
        serial = 3
    assert redmod.auth_target(FakeIKE(), ec, busy=False) == ipaddress.ip_address("192.0.2.4")  # type: ignore[arg-type]
    FakeIKE.redirect_ok = False
    assert redmod.auth_target(FakeIKE(), ec, busy=False) is None  # type: ignore[arg-type]
    FakeIKE.redirect_ok = True
    ec.raw["send-redirect"] = "auto"
    assert redmod.auth_target(FakeIKE(), ec, busy=False) is None  # type: ignore[arg-type]
    assert redmod.auth_target(FakeIKE(), ec, busy=True) is not None  # type: ignore[arg-type]


CONN = """\
conn rw
\tauthby=secret
\tleft=192.0.2.2
\tright=%any
\tauto=add
"""


@pytest.mark.parametrize("extra, err", [
    ("\tsend-redirect=yes\n", "send-redirect=yes requires redirect-to="),
    ("\tsend-redirect=yes\n\tredirect-to=vpn_b.example\n",
     "'vpn_b.example' is neither an IP address nor a host name"),
    ("\tsend-redirect=yes\n\tredirect-to=192.0.2.3,-b.example\n",
     "'-b.example' is neither an IP address nor a host name"),
])
def test_bad_redirect_config_refuses_the_conn_with_file_and_line(extra: str, err: str
                                                                 ) -> None:
    cfg = parse_config_text(CONN + extra, "f")
    assert "rw" not in cfg.conns
    d = cfg.failed["rw"][0]
    assert err in str(d) and d.line >= 6, str(d)


def test_good_redirect_config_loads() -> None:
    cfg = parse_config_text(CONN + "\tsend-redirect=yes\n\tredirect-to=192.0.2.3\n", "f")
    assert redmod.send_mode(cfg.conns["rw"]) == "yes"
    assert redmod.conn_targets(cfg.conns["rw"]) == [GW_B]
    # RFC 5685 §10: a gateway may be named (sent as an FQDN, GW Ident Type 3)
    cfg = parse_config_text(CONN + "\tsend-redirect=yes\n"
                            "\tredirect-to=gw-b.example.,192.0.2.3\n", "f")
    assert redmod.conn_targets(cfg.conns["rw"]) == ["gw-b.example", GW_B]


def test_redirect_settings_do_not_leak_between_engines() -> None:
    net = Net3(a_settings=EngineSettings())
    net.up()
    assert net.established(net.east) and not net.established(net.b)


def test_redirect_loop_between_two_gateways_stops() -> None:
    """A sends the client to B and B back to A, in IKE_AUTH: the client follows
    ``MAX_REDIRECTS`` redirects, then stays (RFC 5685 §7) instead of looping forever."""
    net = Net3()
    _gateway_a(net)
    bc = net.b.engine.connections["west-east"]
    bc.raw["send-redirect"] = "yes"
    bc.raw["redirect-to"] = "192.0.2.2"
    net.up()
    west = net.west.logs()
    followed = [m for m in west if "redirected by" in m]
    assert len(followed) == redmod.MAX_REDIRECTS, followed
    assert any("redirect loop (5 redirects within 300 s" in m for m in west)
    # the client kept the last IKE SA (authenticated, no Child SA) and sent nothing more
    assert len(net.established(net.west)) == 1 and not net.children(net.west)
