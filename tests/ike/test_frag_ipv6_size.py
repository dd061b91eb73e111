"""RFC 7383 §2.5.1 on IPv6: fragments of a 4096-bit RSA IKE_AUTH fit the 1280-byte
minimum IPv6 MTU as whole datagrams (40-byte IPv6 and 8-byte UDP headers, plus the
4-byte non-ESP marker on port 4500), in both directions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pki import PKI

from pypluto.iana import PayloadType as PT
from pypluto.ike.actions import SendPacket
from pypluto.wire import message as wm

from .harness import check_pair
from .test_certs import cert_net

IPV6_MIN_MTU = 1280  # RFC 8200 §5
V6 = {"left": "2001:db8::1", "right": "2001:db8::2", "leftsubnet": "2001:db8:1::/64",
      "rightsubnet": "2001:db8:2::/64"}
EXCH_IKE_AUTH = 35


@pytest.mark.parametrize("encapsulation", ["no", "yes"])
def test_rsa4096_ike_auth_fragments_fit_ipv6_minimum_mtu(tmp_path: Path,
                                                         encapsulation: str) -> None:
    pki = PKI.build("rsa4096")
    kw = {**V6, "encapsulation": encapsulation}
    net = cert_net(tmp_path, pki.ee("west", "rsa4096"), pki.ee("east", "rsa4096"), pki,
                   west_kw=kw, east_kw=kw)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.west.logs() + \
        net.east.logs()
    marker = 4 if encapsulation == "yes" else 0
    bound = IPV6_MIN_MTU - 40 - 8 - marker  # the largest IKE message on this path
    for side in (net.west, net.east):
        sent = [a for a in side.actions if isinstance(a, SendPacket)]
        assert sent and all(a.remote.addr.version == 6 for a in sent)
        skf = []
        for a in sent:
            assert len(a.data) <= bound, (side.name, len(a.data), bound)
            msg = wm.parse_message(a.data)
            if msg.exchange == EXCH_IKE_AUTH and msg.payloads[-1].payload_type == PT.SKF:
                assert a.remote.port == (4500 if marker else 500)
                skf.append(len(a.data))
        # each IKE_AUTH (request from west, response from east) is several fragments,
        # and they use the room the path gives (not a smaller IPv4-style size)
        assert len(skf) >= 2 and max(skf) > bound - 16, (side.name, skf, bound)
    check_pair(net)
