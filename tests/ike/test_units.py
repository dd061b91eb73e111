"""Unit tests of proposals (RFC 7296 §2.7, §3.3) and traffic selectors (§2.9)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from pypluto.config.proposals import parse_proposals
from pypluto.ike import proposals as P
from pypluto.ike import ts as T

addr = st.integers(0, 2**32 - 1)


@given(a=addr, b=addr)
def test_networks_cover_the_range_exactly(a: int, b: int) -> None:
    lo, hi = min(a, b), max(a, b)
    t = T.TS(4, 0, 0, 65535, lo, hi)
    want = list(ipaddress.summarize_address_range(ipaddress.IPv4Address(lo),
                                                   ipaddress.IPv4Address(hi)))
    assert t.networks() == want


@given(a=addr, b=addr, c=addr, d=addr)
def test_intersection_is_inside_both(a: int, b: int, c: int, d: int) -> None:
    x = T.TS(4, 0, 0, 65535, min(a, b), max(a, b))
    y = T.TS(4, 6, 80, 80, min(c, d), max(c, d))
    i = T.intersect(x, y)
    if i is None:
        assert max(x.start, y.start) > min(x.end, y.end)
    else:
        assert T.contains(x, i) and T.contains(y, i) and i.proto == 6


def test_narrow_rules() -> None:
    net = T.from_network(ipaddress.ip_network("10.0.0.0/16"))
    sub = T.from_network(ipaddress.ip_network("10.0.1.0/24"))
    other = T.from_network(ipaddress.ip_network("192.0.2.0/24"))
    assert T.narrow([net], [sub], False) == [sub]  # peer covers ours: answer ours
    assert T.narrow([sub], [net], False) is None  # narrower than ours: only with narrowing
    assert T.narrow([sub], [net], True) == [sub]
    assert T.narrow([other], [net], True) is None
    assert T.answer_ok([sub], [net], [net], True) and not T.answer_ok([sub], [net], [net], False)


def _peer(spec: str, proto: str) -> list:
    specs = tuple(parse_proposals(spec, proto))
    return P.build_proposals(specs, 1 if proto == "IKE" else 3, b"", ike=proto == "IKE")


def test_choose_first_acceptable_peer_proposal() -> None:
    peer = _peer("aes128-sha1-modp2048,aes_gcm256-sha2_256-dh19", "IKE")
    mine = tuple(parse_proposals("aes_gcm256-sha2_512+sha2_256-dh19+dh31", "IKE"))
    c = P.choose(peer, mine, 1, ike=True)
    assert c is not None and c.number == 2 and (c.encr, c.encr_bits, c.prf, c.ke) == \
        (20, 256, 5, 19)
    ans = P.chosen_proposal(c, 1, b"", ike=True)
    assert P.check_answer([ans], peer, ike=True) is not None
    # an answer that adds a transform we never offered is refused
    bad = (ans[0], ans[1], ans[2], [*ans[3][:-1], (4, 31, None)])
    assert P.check_answer([bad], peer, ike=True) is None


def test_no_dh_and_unknown_transforms() -> None:
    peer = [(1, 1, b"", [(1, 20, 256), (2, 5, None)])]
    assert P.choose(peer, P.DEFAULT_IKE, 1, ike=True) is None  # CVE-2016-5391
    peer = [(1, 1, b"", [(1, 20, 256), (2, 5, None), (4, 19, None), (6, 35, None)])]
    assert P.choose(peer, P.DEFAULT_IKE, 1, ike=True) is None  # RFC 9370 ADDKE unsupported
    peer = [(1, 1, b"", [(1, 12, None), (2, 5, None), (3, 12, None), (4, 19, None)])]
    assert P.choose(peer, P.DEFAULT_IKE, 1, ike=True) is None  # AES without key length


def test_esp_esn_and_pfs() -> None:
    peer = P.build_proposals(tuple(parse_proposals("aes_gcm256-dh19", "ESP")), 3, b"abcd",
                             ike=False, pfs_group=19)
    assert any(t == (4, 19, None) for t in peer[0][3])
    mine = tuple(parse_proposals("aes_gcm256", "ESP"))
    assert P.choose(peer, mine, 3, ike=False, pfs_group=None) is not None
    c = P.choose(peer, mine, 3, ike=False, pfs_group=19)
    assert c is not None and c.ke == 19
    only_esn = [(1, 3, b"abcd", [(1, 20, 256), (5, 1, None)])]
    assert P.choose(only_esn, mine, 3, ike=False, esn="no") is None
    assert P.choose(only_esn, mine, 3, ike=False, esn="either").esn is True
