"""Redirect to a gateway named by FQDN (RFC 5685 §10, GW Ident Type 3).

Gateway A sends the name as configured; the client resolves it with the injected
``EngineSettings.resolver`` as a ``Compute(io=True)`` job (the daemon runs those on a
thread, never on the event loop), then follows the redirect to the address, after the
same ``accept-redirect-to=`` and loop checks as for an address.  A name that does not
resolve fails the redirect with a log line.
"""

from __future__ import annotations

from pypluto.iana import NotifyType as N
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import redirect as redmod
from pypluto.params import IPAddress
from pypluto.wire import message as wm

from .harness import EAST
from .test_redirect import GW_B, Net3
from .test_redirect_ikeauth import _gateway_a

NAME = "gw-b.example"


def _hosts(table: dict[str, list[IPAddress]]) -> EngineSettings:
    """A client whose resolver answers from ``table`` (as /etc/hosts would)."""

    def resolve(name: str) -> list[IPAddress]:
        if name not in table:
            raise OSError(-2, "Name or service not known")
        return table[name]

    return EngineSettings(resolver=resolve)


def _redirect_idents(net: Net3) -> list[bytes]:
    """The gateway identities in the REDIRECT notifies gateway A sent."""
    out = []
    for name, data in net.sent:
        if name != "east":
            continue
        for p in wm.parse_message(data).payloads:
            if getattr(p, "notify_type", None) == N.REDIRECT:
                out.append(bytes(p.data))
    return out


def test_gateway_sends_the_name_as_fqdn() -> None:
    assert redmod.encode_gw(NAME, b"n" * 4) == bytes([3, len(NAME)]) + NAME.encode() + b"nnnn"
    assert redmod.decode_gw(redmod.encode_gw(NAME)) == (NAME, b"")
    # an address written as text in the FQDN type, or no host name at all: malformed
    for bad in (b"\x03\x09192.0.2.3", b"\x03\x05a b c", b"\x03\x02\xff\xfe"):
        assert redmod.decode_gw(bad) is None


def test_redirect_in_ike_sa_init_to_a_name_lands_on_gateway_b() -> None:
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[NAME]),
               client_settings=_hosts({NAME: [GW_B]}))
    net.up()
    assert _redirect_idents(net)[0][:2 + len(NAME)] == bytes([3, len(NAME)]) + NAME.encode()
    assert net.established(net.b) and net.children(net.b)
    assert not net.east.engine.by_serial
    (job,) = net.jobs
    assert job.io  # a blocking lookup: the daemon runs it on a thread, whatever --nhelpers
    west = net.west.logs()
    assert any(f"redirected to new gateway {NAME}: resolving the name" in m for m in west)
    assert any(f"redirected by {EAST} to new gateway {NAME} ({GW_B})" in m for m in west)


def test_redirect_of_an_established_sa_to_a_name_lands_on_gateway_b() -> None:
    net = Net3(client_settings=_hosts({NAME: [GW_B]}))
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.b) and net.children(net.b)
    assert not net.established(net.east)
    assert len(net.established(net.west)) == 1
    assert any(f"redirecting the peer to {NAME}" in m for m in net.east.logs())


def test_redirect_in_ike_auth_to_a_name_lands_on_gateway_b() -> None:
    net = Net3(client_settings=_hosts({NAME: [GW_B]}))
    _gateway_a(net, to=NAME)
    net.up()
    assert net.established(net.b) and net.children(net.b)
    assert not net.established(net.east) and not net.children(net.east)
    assert len(net.established(net.west)) == 1 and len(net.children(net.west)) == 1


def test_a_name_that_does_not_resolve_fails_the_redirect() -> None:
    # an established IKE SA stays where it is
    net = Net3(client_settings=_hosts({}))
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.east) and not net.established(net.b)
    assert any(f"redirect to {NAME} failed: the name does not resolve (OSError: "
               "[Errno -2] Name or service not known)" in m for m in net.west.logs())
    assert net.west.engine.stats.events["redirect.failed"] == 1
    # in IKE_SA_INIT the attempt fails (A answered with REDIRECT only)
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[NAME]),
               client_settings=_hosts({}))
    net.up()
    assert not net.established(net.west) and not net.established(net.b)
    west = net.west.logs()
    assert any(f"redirect to {NAME} failed: the name does not resolve" in m for m in west)
    assert any("IKE SA establishment failed: redirect not followed" in m for m in west)


def test_without_a_resolver_a_name_is_not_followed() -> None:
    net = Net3()  # EngineSettings() has no resolver: the engine never looks names up
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.east) and not net.established(net.b)
    assert not net.jobs
    assert any(f"ignoring a REDIRECT to the name {NAME!r}: no resolver" in m
               for m in net.west.logs())


def test_accept_redirect_to_checks_the_resolved_address_or_the_name() -> None:
    # the address the name resolves to is outside accept-redirect-to=: refused
    net = Net3(accept_to="198.51.100.0/24", client_settings=_hosts({NAME: [GW_B]}))
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.east) and not net.established(net.b)
    assert any(f"redirect to {NAME} ({GW_B}) failed: not in accept-redirect-to=" in m
               for m in net.west.logs())
    # ... listed by name: followed
    net = Net3(accept_to=f"198.51.100.0/24,{NAME.upper()}",
               client_settings=_hosts({NAME: [GW_B]}))
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.b)


def test_the_address_of_the_peers_family_is_chosen() -> None:
    import ipaddress
    v6 = ipaddress.ip_address("2001:db8::3")
    net = Net3(client_settings=_hosts({NAME: [v6, GW_B]}))
    net.up()
    net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
    net.run()
    assert net.established(net.b)  # GW_B (IPv4, as the current peer), not 2001:db8::3


def test_redirect_loop_protection_counts_named_redirects() -> None:
    """RFC 5685 §7: a sixth redirect within the period is not followed, names included."""
    net = Net3(client_settings=_hosts({NAME: [EAST]}))  # the name points back at A
    net.up()
    for _ in range(redmod.MAX_REDIRECTS + 1):
        net.apply(net.east, net.east.engine.redirect(NAME, net.now, name="west-east"))
        net.run()
    west = net.west.logs()
    assert sum(f"redirected by {EAST} to new gateway {NAME}" in m
               for m in west) == redmod.MAX_REDIRECTS
    assert any(f"ignoring a REDIRECT to {NAME}: redirect loop" in m for m in west)
    assert net.established(net.east)
