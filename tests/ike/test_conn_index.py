"""The responder's indexed connection lookup (``ike/conn_index.py``, issue 18) gives
exactly the list the linear scan over every conn gave, in the same order, for every
request address, over random conn sets and random mutations of what it reads (adds,
deletes, replacements, orientation, host addresses, IKE version, authby, type)."""

from __future__ import annotations

import copy
import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.conn_lookup import scan_connections  # the linear scan the index replaced
from pypluto.config.model import Connection, End
from pypluto.ike.actions import Endpoint
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks.ike_init import find_connections

A = ipaddress.ip_address
LOCALS = [A("192.0.2.1"), A("192.0.2.2")]
REMOTES = [A("198.51.100.1"), A("198.51.100.2"), A("203.0.113.9"), A("2001:db8::1")]
ADDRS = LOCALS + REMOTES
HOSTS_NO_ADDR = ["%any", "%any6", "%opportunistic", "%group", None, "%defaultroute",
                 "gw.example"]


class _Secrets:
    def psk_for(self, *a: object) -> bytes:
        return b"k"


def _end(rng: random.Random) -> End:
    if rng.random() < 0.6:
        addr = rng.choice(ADDRS)
        return End(host=str(addr), host_addr=addr)
    return End(host=rng.choice(HOSTS_NO_ADDR), host_addr=None)


def _conn(rng: random.Random, name: str) -> Connection:
    c = Connection(name=name, left=_end(rng), right=_end(rng), authby="secret",
                   local_is_left=rng.choice([True, True, False, False, None]))
    _tweak(rng, c)
    return c


def _tweak(rng: random.Random, c: Connection) -> None:
    r = rng.random()
    if r < 0.1:
        c.keyexchange = rng.choice(["ikev1", "ike", "ikev2"])
    elif r < 0.2:
        c.authby = rng.choice(["never", "secret", "null"])
    elif r < 0.3:
        c.type = rng.choice(["passthrough", "drop", "reject", "tunnel", "transport"])


def _mutate(rng: random.Random, eng: Engine, names: list[str], spare: list[Connection],
            now: float) -> None:
    conns = eng.connections
    live = list(conns)
    op = rng.randrange(12)
    victim = conns[rng.choice(live)] if live else None
    if op <= 2 or victim is None:  # add a new conn, or replace one by name
        name = rng.choice(names)
        # a conn built before the index was (nothing assigned since), or a new one
        new = spare.pop() if spare and rng.random() < 0.5 else _conn(rng, name)
        if rng.random() < 0.5:
            eng.add_connection(new)
        else:
            conns[new.name] = new
    elif op == 3:
        eng.delete_connection(victim.name, now)
    elif op == 4:
        del conns[victim.name]
    elif op == 5:
        victim.local_is_left = rng.choice([True, False, None])
    elif op == 6:
        victim.orient({rng.choice(ADDRS)})
    elif op == 7:  # an end's address resolved, changed (redirect, MOBIKE) or lost
        end = rng.choice([victim.left, victim.right])
        addr = rng.choice(ADDRS + [None])
        end.host_addr = addr
        if rng.random() < 0.5:
            end.host = str(addr) if addr is not None else rng.choice(HOSTS_NO_ADDR)
    elif op == 8:
        end = rng.choice([victim.left, victim.right])
        end.host = rng.choice(HOSTS_NO_ADDR + ["198.51.100.1"])
    elif op == 9:  # a whole new end
        if rng.random() < 0.5:
            victim.left = _end(rng)
        else:
            victim.right = _end(rng)
    elif op == 10:
        _tweak(rng, victim)
    else:  # a conn of another engine (or a parsed one) changes: harmless
        other = copy.deepcopy(victim)
        other.right.host_addr = rng.choice(ADDRS)


def _same(eng: Engine) -> None:
    for la in LOCALS + [A("192.0.2.77")]:
        for ra in ADDRS + [A("203.0.113.200")]:
            local, remote = Endpoint(la, 500), Endpoint(ra, 500)
            want = scan_connections(eng, local, remote)
            got = find_connections(eng, local, remote)
            assert [id(c) for c in got] == [id(c) for c in want], (la, ra)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 30), st.integers(1, 40))
def test_index_equals_scan_over_random_mutations(seed: int, n_conns: int, steps: int) -> None:
    rng = random.Random(seed)
    names = [f"c{i}" for i in range(n_conns + 5)]
    eng = Engine(EngineSettings(), _Secrets(), local_addrs=[])
    for i in range(n_conns):
        eng.add_connection(_conn(rng, names[i]))
    spare = [_conn(rng, rng.choice(names)) for _ in range(10)]
    _same(eng)
    for step in range(steps):
        for _ in range(rng.randint(1, 3)):
            _mutate(rng, eng, names, spare, 1000.0 + step)
        _same(eng)


def test_index_follows_an_address_change_after_it_was_built() -> None:
    """A conn whose peer address changes after the index was built (redirect,
    re-resolution) is found at its new address only."""
    eng = Engine(EngineSettings(), _Secrets(), local_addrs=[LOCALS[0]])
    old, new = REMOTES[0], REMOTES[1]
    eng.add_connection(Connection(name="a", left=End(host=str(LOCALS[0]), host_addr=LOCALS[0]),
                                  right=End(host=str(old), host_addr=old), authby="secret"))
    here = Endpoint(LOCALS[0], 500)
    conn = eng.connections["a"]
    assert find_connections(eng, here, Endpoint(old, 500)) == [conn]
    assert find_connections(eng, here, Endpoint(new, 500)) == []
    conn.remote.host_addr = new
    assert find_connections(eng, here, Endpoint(old, 500)) == []
    assert find_connections(eng, here, Endpoint(new, 500)) == [conn]


def test_index_is_built_once_while_nothing_changes() -> None:
    """Many lookups with nothing changed between them build the index once (no scan
    per IKE_SA_INIT); a change then builds it once more."""
    eng = Engine(EngineSettings(), _Secrets(), local_addrs=[LOCALS[0]])
    for i in range(50):
        peer = A(f"198.51.100.{i + 1}")
        eng.add_connection(Connection(name=f"c{i}", authby="secret",
                                      left=End(host=str(LOCALS[0]), host_addr=LOCALS[0]),
                                      right=End(host=str(peer), host_addr=peer)))
    here = Endpoint(LOCALS[0], 500)
    index = eng._conn_index
    before = index.builds
    for i in range(50):
        got = find_connections(eng, here, Endpoint(A(f"198.51.100.{i + 1}"), 500))
        assert [c.name for c in got] == [f"c{i}"]
    assert index.builds == before + 1
    eng.delete_connection("c7", 1000.0)
    assert find_connections(eng, here, Endpoint(A("198.51.100.8"), 500)) == []
    assert index.builds == before + 2
