"""Per-SA state made lighter for issue 18, with the behaviour it must keep.

- ``Connection``'s six fields the connection index reads, and ``End.host``/``host_addr``,
  move ``generation()`` on when assigned (a descriptor with ``__set__`` only); other
  fields do not, and reads give the value as a plain attribute would.
- An IKE SA's (and Child SA's) rarely used lists start as the shared empty tuple and
  become lists when something is added.
- The half-open key holds the packed peer address; the per-source DoS count reads
  the same bucket from the address or its packed octets (RFC 8019 §4).
"""

from __future__ import annotations

import copy
import ipaddress

import pytest

from pypluto.config.model import Connection, End, generation
from pypluto.ike.cookies import DoSGuard, addr_key, packed_key
from pypluto.ike.settings import EngineSettings

from .harness import Net

WATCHED_CONN = {"left": End(), "right": End(), "local_is_left": True,
                "keyexchange": "ikev1", "authby": "secret", "type": "transport"}


@pytest.mark.parametrize("name", sorted(WATCHED_CONN))
def test_each_watched_connection_field_moves_the_generation(name: str) -> None:
    c = Connection(name="c")
    g = generation()
    setattr(c, name, WATCHED_CONN[name])
    assert generation() == g + 1
    assert getattr(c, name) is WATCHED_CONN[name]
    assert c.__dict__[name] is WATCHED_CONN[name]  # kept in the instance dict


@pytest.mark.parametrize("name", ["host", "host_addr"])
def test_each_watched_end_field_moves_the_generation(name: str) -> None:
    e = End()
    g = generation()
    setattr(e, name, "192.0.2.1")
    assert generation() == g + 1 and getattr(e, name) == "192.0.2.1"


def test_other_fields_do_not_move_the_generation() -> None:
    c = Connection(name="c")
    g = generation()
    c.auto = "add"
    c.dpddelay = 30.0
    c.left.nexthop = "192.0.2.254"
    assert generation() == g
    assert (c.auto, c.dpddelay, c.left.nexthop) == ("add", 30.0, "192.0.2.254")


def test_defaults_copies_and_equality_are_those_of_plain_fields() -> None:
    c = Connection(name="c")
    assert (c.keyexchange, c.authby, c.type, c.local_is_left) == ("ikev2", "rsasig,ecdsa",
                                                                 "tunnel", None)
    d = copy.deepcopy(c)
    assert d == c and d.left == c.left and d.left is not c.left
    d.authby = "secret"
    assert d != c


def test_rare_lists_start_empty_and_grow() -> None:
    net = Net()
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert net.children(net.west) and net.children(net.east)
    for eng in (net.west.engine, net.east.engine):
        ike = next(iter(eng.by_serial.values()))
        assert ike.children
        for name in ("cands", "peer_rekeys", "leases", "remote_vips", "local_vips", "dns"):
            v = getattr(ike, name)
            assert len(v) == 0 and not v and list(v) == []
        for child in ike.children:
            assert len(child.peer_rekeys) == 0


def test_per_source_count_from_packed_octets() -> None:
    dos = DoSGuard(EngineSettings(), lambda n: bytes(n))
    v4 = ipaddress.ip_address("198.51.100.7")
    v6 = ipaddress.ip_address("2001:db8:1:2::5")
    v6_same_64 = ipaddress.ip_address("2001:db8:1:2::99")
    for a in (v4, v6):
        assert packed_key(a.packed) == addr_key(a)
    dos.halfopen_added(v4.packed)
    dos.halfopen_added(v6.packed)
    dos.halfopen_added(v6_same_64.packed)
    assert dos.addr_count(v4.packed) == 1
    assert dos.addr_count(v6.packed) == dos.addr_count(v6_same_64.packed) == 2  # one /64
    dos.halfopen_ended(v6.packed)
    dos.halfopen_ended(v4.packed)
    assert dos.addr_count(v4.packed) == 0 and dos.addr_count(v6.packed) == 1
    assert v4.packed[:4] not in dos.per_addr
