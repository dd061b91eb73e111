"""The responder's precomputed answer parts (issue 18) give the bytes the generic
builders give: the Child SA's SA payload (RFC 7296 §3.3.6, our SPI written into the
template), TSi/TSr (§3.13), our IDr body (§3.5), the kernel selectors of a TS, and the
peer-method answers that are memoised by the values they read."""

from __future__ import annotations

import ipaddress

import pytest

from pypluto.config.ids import parse_id
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import child, codec, proposals
from pypluto.ike import ts as T
from pypluto.ike.tasks import ike_auth
from pypluto.ike.tasks.ike_auth import AUTH_NULL, AUTH_PSK
from pypluto.params import TrafficSelector

from .harness import make_conn

CHOSEN = [
    (proposals.Chosen(encr=20, encr_bits=256, esn=False, spi=b"\1\2\3\4"), ProtocolID.ESP),
    (proposals.Chosen(encr=12, encr_bits=128, integ=12, esn=True, number=3, spi=b"abcd"),
     ProtocolID.ESP),
    (proposals.Chosen(encr=20, encr_bits=128, ke=19, number=2, spi=b"wxyz"), ProtocolID.ESP),
    (proposals.Chosen(integ=12, esn=False, spi=b"\0\0\1\0"), ProtocolID.AH),
    (proposals.Chosen(encr=20, encr_bits=256, ke=31, addke=(0, 35), spi=b"1234"),
     ProtocolID.ESP),
]


@pytest.mark.parametrize(("chosen", "proto"), CHOSEN)
def test_sa_answer_is_the_generic_single_proposal(chosen: proposals.Chosen, proto: int
                                                  ) -> None:
    for spi in (b"\x11\x22\x33\x44", b"\xfe\xdc\xba\x98"):  # the second from the template
        want = codec.sa([proposals.chosen_proposal(chosen, proto, spi, ike=False)]).serialize()
        got = child._sa_answer(chosen, proto, spi)
        assert got.payload_type == PT.SA
        assert got.serialize() == want


def _ts(net: str, proto: int = 0, port: int = 0) -> T.TS:
    return T.from_network(ipaddress.ip_network(net), (proto, port))


TS_LISTS = [
    [_ts("203.0.113.0/24")],
    [_ts("198.51.100.7/32", 6, 443), _ts("2001:db8::/64")],
    [T.TS(4, 17, 500, 4500, int(ipaddress.ip_address("192.0.2.3")),
          int(ipaddress.ip_address("192.0.2.77")))],
]


@pytest.mark.parametrize("tss", TS_LISTS)
@pytest.mark.parametrize("ptype", [PT.TSi, PT.TSr])
def test_ts_answer_is_the_generic_payload(ptype: int, tss: list[T.TS]) -> None:
    for _ in range(2):  # built, then from the memo
        got = child._ts_answer(ptype, tss)
        assert got.payload_type == ptype
        assert got.serialize() == codec.ts_payload(ptype, tss).serialize()


@pytest.mark.parametrize("text", ["@east.example", "192.0.2.2", "2001:db8::2",
                                  "east@example.com", "C=CH, O=Test, CN=east"])
def test_idr_body_is_the_generic_id_payload_body(text: str) -> None:
    ident = parse_id(text)
    for _ in range(2):
        assert ike_auth._idr_body(ident) == codec.id_body(codec.ident(PT.IDr, ident))


def test_kernel_selectors_of_a_range_and_fresh_lists() -> None:
    t = T.TS(4, 6, 80, 80, int(ipaddress.ip_address("192.0.2.3")),
             int(ipaddress.ip_address("192.0.2.9")))  # not one CIDR block
    want = [TrafficSelector(n, 6, 80, 80) for n in ipaddress.summarize_address_range(
        ipaddress.ip_address("192.0.2.3"), ipaddress.ip_address("192.0.2.9"))]
    first = T.to_kernel(t)
    assert first == want and len(first) == 3
    first.clear()  # a caller's list is its own: the memo is not changed through it
    assert T.to_kernel(t) == want
    nets = t.networks()
    nets.pop()
    assert len(t.networks()) == 3
    assert str(t) == "192.0.2.3-192.0.2.9/6/80"


def test_peer_method_answers_follow_the_conn_values() -> None:
    conn = make_conn(local_left=False)
    assert ike_auth.auth_method(conn, local=False) == "secret"
    assert ike_auth._peer_may_use(conn, AUTH_PSK)
    assert not ike_auth._peer_may_use(conn, AUTH_NULL)
    conn.authby = "null"  # changed after the first answers: the memo is keyed by the values
    assert ike_auth.auth_method(conn, local=False) == "null"
    assert ike_auth._peer_may_use(conn, AUTH_NULL)
    assert not ike_auth._peer_may_use(conn, AUTH_PSK)
    conn.authby = "secret"
    conn.remote.auth = "rsasig"
    assert ike_auth.auth_method(conn, local=False) == "sig"
    assert not ike_auth._peer_may_use(conn, AUTH_PSK)
