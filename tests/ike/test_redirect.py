"""Redirect (RFC 5685) with three engines: the client (west), gateway A (east) and
gateway B; packets go to the engine whose address they are sent to."""

from __future__ import annotations

import ipaddress
import random

from pypluto.iana import NotifyType as N
from pypluto.ike.actions import Action, Compute
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import redirect as redmod
from pypluto.wire import message as wm

from .harness import EAST, WEST, Net, Side, Store, make_conn

GW_B = ipaddress.ip_address("192.0.2.3")


class Net3(Net):
    def __init__(self, *, a_settings: EngineSettings | None = None,
                 accept: str = "yes", accept_to: str = "",
                 client_settings: EngineSettings | None = None) -> None:
        self.jobs: list[Compute] = []  # the Compute jobs run (the daemon: on a thread)
        super().__init__(east_settings=a_settings, west_settings=client_settings)
        wc = self.west.engine.connections["west-east"]
        wc.raw["accept-redirect"] = accept
        if accept_to:
            wc.raw["accept-redirect-to"] = accept_to
        self.b = Side("b", Engine(EngineSettings(), Store(self.east.engine.secrets.psk),
                                  rng=random.Random(7).randbytes, local_addrs=[GW_B]), GW_B)
        self.apply(self.b, self.b.engine.add_connection(
            make_conn(local_left=False, right=GW_B)))
        self.by_addr = {WEST: self.west, EAST: self.east, GW_B: self.b}

    def apply(self, side: Side, acts: list[Action]) -> None:
        """As the daemon's driver: a Compute job runs and its result goes back to the
        engine (an exception instance when the job raised)."""
        super().apply(side, [a for a in acts if not isinstance(a, Compute)])
        for a in acts:
            if isinstance(a, Compute):
                self.jobs.append(a)
                side.actions.append(a)
                try:
                    result: object = a.job()
                except Exception as e:  # noqa: BLE001 - handed over like the daemon does
                    result = e
                self.apply(side, side.engine.resume(a.token, result, self.now))

    def step(self) -> bool:
        if not self.queue:
            return False
        frm, pkt = self.queue.pop(0)
        to = self.by_addr.get(pkt.remote.addr)
        if to is None or self.cut:
            return True
        self.apply(to, to.engine.receive(bytes(pkt.data), pkt.remote, pkt.local, self.now))
        return True


def _init_notifies(net: Net3, who: str) -> list[set[int]]:
    out = []
    for name, data in net.sent:
        if name != who:
            continue
        m = wm.parse_message(data)
        if m.exchange == 34 and not m.response:
            out.append({int(p.notify_type) for p in m.payloads if hasattr(p, "notify_type")})
    return out


def test_redirect_in_ike_sa_init_lands_on_gateway_b() -> None:
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]))
    net.up()
    assert not net.established(net.east) and net.established(net.b)
    assert net.children(net.west) and net.children(net.b)
    (first, second) = _init_notifies(net, "west")
    assert N.REDIRECT_SUPPORTED in first and N.REDIRECTED_FROM in second
    assert any("redirected by 192.0.2.2 to new gateway 192.0.2.3" in m
               for m in net.west.logs())
    assert any("redirecting IKE_SA_INIT from" in m for m in net.east.logs())
    assert not net.east.engine.by_serial  # A kept no state


def test_redirect_of_an_established_sa_lands_on_gateway_b() -> None:
    net = Net3()
    net.up()
    assert net.established(net.east)
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert net.established(net.b) and net.children(net.b)
    assert not net.established(net.east)  # the old IKE SA was deleted
    assert len(net.established(net.west)) == 1


def test_client_without_accept_redirect_ignores_it() -> None:
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]),
               accept="no")
    net.up()
    # no REDIRECT_SUPPORTED: A does not redirect and establishes itself
    assert net.established(net.east) and not net.established(net.b)
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert net.established(net.east)  # REDIRECT is never sent to a client without support
    assert any("no established IKE SA whose peer supports redirect" in m
               for m in net.east.logs())


def test_redirect_outside_accept_redirect_to_is_refused() -> None:
    net = Net3(accept_to="198.51.100.0/24")
    net.up()
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert net.established(net.east) and not net.established(net.b)
    assert any("not in accept-redirect-to=" in m for m in net.west.logs())


def test_gateway_identity_codec() -> None:
    assert redmod.decode_gw(redmod.encode_gw(GW_B, b"n" * 16)) == (GW_B, b"n" * 16)
    v6 = ipaddress.ip_address("2001:db8::1")
    assert redmod.decode_gw(redmod.encode_gw(v6)) == (v6, b"")
    assert redmod.decode_gw(b"\x03\x0bvpn.example") == ("vpn.example", b"")
    for bad in (b"", b"\x01", b"\x01\x05abcd", b"\x09\x04abcd", b"\x02\x04abcd"):
        assert redmod.decode_gw(bad) is None
