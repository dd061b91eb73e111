"""Lifecycle outcomes checked against Libreswan 5.2's own tests: rekeys, crossing
initiations, and what ``ipsec down`` / ``ipsec delete`` of one end does to both.

Each row names a ``testing/pluto/<dir>`` of Libreswan v5.2 (TESTLIST ``good``); the
expected outcome (which SAs exist on each end, what moved to which IKE SA, which
Child SA survives) is read from that test's ``*.console.txt``.  The settings are
restated as ipsec.conf keys parsed by our config parser and run through two engines
back to back (``harness.Net``) with the harness's addresses: west 192.0.2.1 /
198.51.100.0/24, east 192.0.2.2 / 203.0.113.0/24.  The whack commands are the
engine calls ``daemon/control.py`` makes: ``ipsec up`` is ``Engine.initiate``,
``ipsec down`` ``Engine.terminate``, ``ipsec delete`` ``Engine.delete_connection``,
``whack --rekey-ike`` / ``--rekey-child`` ``Engine.rekey_ike`` / ``rekey_child``.

Not covered here: the IKEv1 ones of these families (delete-sa-01/02/05/06/08/09,
ikev1-delete-sa-04, whack-down-*-ikev1, whack-delete-*-ikev1); those that need a
whack option ``cli/whack.py`` refuses as Libreswan-only (whack-delete-child-01-async
and whack-delete-ike-01-async: --delete-child / --delete-ike; whack-deleteid-01-psk-ikev2:
--deleteid; whack-deleteuser-01: --deleteuser); the ``wip`` ones of TESTLIST.
crossing-streams-03-* and -04 are started with other commands, said in each row.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from pypluto.config.model import bump_generation
from pypluto.config.parser import parse_config_text
from pypluto.ike.actions import Log, SendPacket
from pypluto.ike.traps import policy_key
from pypluto.wire import message as wm

from .harness import Net, Side, check_pair
from .test_libreswan_outcomes import BASE, ENET, WNET, add_all, conn
from .test_traps import kernel

E1, E2 = "203.0.113.0/25", "203.0.113.128/25"


def add_conns(side: Side, keys: dict[str, str | None], left: bool,
              name: str = "c") -> list[str]:
    """The names of the conns ``add_all`` added."""
    return list(add_all(side, keys, left, name).conns)


def empty_net(**kw: object) -> Net:
    """A Net with no conn loaded."""
    net = Net(**kw)  # type: ignore[arg-type]
    net.west.engine.delete_connection("west-east", net.now)
    net.east.engine.delete_connection("west-east", net.now)
    return net


def ikes(net: Net, side: Side) -> list:
    return [i for i in side.engine.status(net.now).ike_sas
            if i.state == "STATE_V2_ESTABLISHED_IKE_SA"]


def children(net: Net, side: Side) -> dict[str, list]:
    """conn name -> its established Child SAs on that end."""
    out: dict[str, list] = {}
    for i in side.engine.status(net.now).ike_sas:
        for c in i.children:
            if c.state == "STATE_V2_ESTABLISHED_CHILD_SA":
                out.setdefault(c.conn, []).append(c)
    return out


def no_internal_error(net: Net) -> None:
    logs = net.west.logs() + net.east.logs()
    assert not [m for m in logs if "internal error" in m], logs


def up(net: Net, *names: str, side: Side | None = None) -> None:
    side = side or net.west
    for n in names:
        net.apply(side, side.engine.initiate(n, net.now))
        net.run()


def down(net: Net, name: str, side: Side | None = None) -> None:
    side = side or net.west
    net.apply(side, side.engine.terminate(name, net.now))
    net.run()


def delete(net: Net, name: str, side: Side | None = None) -> None:
    side = side or net.west
    net.apply(side, side.engine.delete_connection(name, net.now))
    net.run()


def state(net: Net, side: Side) -> list[tuple[str, list[str]]]:
    """Each established IKE SA as (its conn, sorted conns of its Child SAs)."""
    return sorted((i.conn, sorted(c.conn for c in i.children
                                  if c.state == "STATE_V2_ESTABLISHED_CHILD_SA"))
                  for i in ikes(net, side))


def n_sas(side: Side) -> int:
    return len(side.kernel_sas)


# ================================================================== ipsec down / delete
def cuckoo_net(cuckold_child: bool = True) -> tuple[Net, list[str]]:
    """whack-down-* / whack-delete-*: east has one conn with rightsubnets= (two conns);
    west has west-cuckold (IKE SA owner) and west-cuckoo(-1/-2), sharing its IKE SA."""
    net = empty_net()
    east = add_conns(net.east, {"rightsubnet": None, "rightsubnets": f"{E1},{E2}"}, False)
    wconn = [("cuckold", {"rightsubnet": E1 if cuckold_child else None}),
             ("cuckoo", {"rightsubnet": E2}), ("cuckoo-1", {"rightsubnet": E1}),
             ("cuckoo-2", {"rightsubnet": E2})]
    for name, keys in wconn:
        net.west.engine.add_connection(conn(keys, True, name))
    bump_generation()
    return net, east


def test_whack_down_01_child_1then2() -> None:
    """whack-down-01-child-1then2-ikev2: down of the IKE SA's own conn while another
    conn's Child SA shares it deletes only its Child SA ("IKE SA #1 is shared with
    west-cuckoo"); down of the other deletes that Child SA; the IKE SA, now unused,
    goes with the third down of its conn."""
    net, _ = cuckoo_net()
    up(net, "cuckold", "cuckoo")
    assert state(net, net.west) == [("cuckold", ["cuckold", "cuckoo"])]
    down(net, "cuckold")
    assert state(net, net.west) == [("cuckold", ["cuckoo"])]
    assert state(net, net.east) == [("c/0x1", ["c/0x2"])]
    assert n_sas(net.west) == n_sas(net.east) == 2
    check_pair(net)
    down(net, "cuckoo")
    assert state(net, net.west) == [("cuckold", [])] and state(net, net.east) == [("c/0x1", [])]
    assert n_sas(net.west) == n_sas(net.east) == 0
    down(net, "cuckold")
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    no_internal_error(net)


def test_whack_down_02_child_2then1() -> None:
    """whack-down-02-child-2then1-ikev2: down of the sharing conn deletes its Child SA;
    down of the owner then deletes the IKE SA "and Child SA #2" at once."""
    net, _ = cuckoo_net()
    up(net, "cuckold", "cuckoo")
    down(net, "cuckoo")
    assert state(net, net.west) == [("cuckold", ["cuckold"])]
    assert state(net, net.east) == [("c/0x1", ["c/0x1"])]
    check_pair(net)
    down(net, "cuckold")
    for side in (net.west, net.east):
        assert not side.engine.by_serial and not side.kernel_sas and not side.policies
    no_internal_error(net)


def test_whack_down_03_child_1then2then0() -> None:
    """whack-down-03-child-1then2then0-ikev2: the owner's own Child SA is refused
    (TS_UNACCEPTABLE: west-cuckold asks for east's host only), its IKE SA stays and
    carries cuckoo-1 and cuckoo-2; down of those two leaves the IKE SA up; down of
    the owner deletes it."""
    net, _ = cuckoo_net(cuckold_child=False)
    up(net, "cuckold")
    assert any("TS_UNACCEPTABLE" in m for m in net.west.logs())
    up(net, "cuckoo-1", "cuckoo-2")
    assert state(net, net.west) == [("cuckold", ["cuckoo-1", "cuckoo-2"])]
    down(net, "cuckoo-1")
    down(net, "cuckoo-2")
    assert state(net, net.west) == [("cuckold", [])] and state(net, net.east) == [("c/0x1", [])]
    assert n_sas(net.west) == n_sas(net.east) == 0
    down(net, "cuckold")
    assert not net.west.engine.by_serial and not net.east.engine.by_serial
    no_internal_error(net)


@pytest.mark.parametrize("order", [("cuckold", "cuckoo"), ("cuckoo", "cuckold")],
                         ids=["whack-delete-01-child-1then2-ikev2",
                              "whack-delete-01-child-2then1-ikev2"])
def test_whack_delete_01(order: tuple[str, str]) -> None:
    """whack-delete-01-child-*-ikev2: unlike down, deleting the IKE SA's conn deletes
    its IKE SA with every Child SA on it (west-cuckoo's too: "deleting IKE SA ... and
    sending notification"); deleting west-cuckoo first takes only its Child SA."""
    net, _ = cuckoo_net()
    up(net, "cuckold", "cuckoo")
    delete(net, order[0])
    if order[0] == "cuckold":
        for side in (net.west, net.east):
            assert not side.engine.by_serial and not side.kernel_sas and not side.policies
        assert "cuckold" not in net.west.engine.connections
    else:
        assert state(net, net.west) == [("cuckold", ["cuckold"])]
        assert state(net, net.east) == [("c/0x1", ["c/0x1"])]
        check_pair(net)
    delete(net, order[1])
    for side in (net.west, net.east):
        assert not side.engine.by_serial and not side.kernel_sas and not side.policies
    assert not {"cuckold", "cuckoo"} & set(net.west.engine.connections)
    no_internal_error(net)


def test_whack_delete_03_up_revival() -> None:
    """whack-delete-03-up-revival-ikev2: ipsec up with no answer (east is not there)
    times out; ipsec delete then leaves nothing behind: no IKE SA, no retry later."""
    net = empty_net()
    net.west.engine.add_connection(conn({"retransmit-timeout": "5s"}, True, "west"))
    bump_generation()
    net.cut = True
    up(net, "west")
    net.advance(10)
    assert not ikes(net, net.west)
    delete(net, "west")
    net.advance(120)
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert "west" not in net.west.engine.connections
    no_internal_error(net)


# ================================================================== IKE SA rekey
def ike_spis(net: Net, side: Side) -> list[tuple[str, str]]:
    return [(i.spi_i, i.spi_r) for i in ikes(net, side)]


def child_spis(net: Net, side: Side) -> dict[str, list[int]]:
    return {n: sorted(c.spi_in for c in cs) for n, cs in children(net, side).items()}


def settled(net: Net, conns: Iterable[str], east_conns: Iterable[str] | None = None) -> None:
    """One IKE SA each end (the same one), one Child SA per conn on it, the kernel
    SAs of exactly those, both ends agreeing."""
    conns = sorted(conns)
    w, e = ikes(net, net.west), ikes(net, net.east)
    assert len(w) == 1 and len(e) == 1, (state(net, net.west), state(net, net.east))
    assert (w[0].spi_i, w[0].spi_r) == (e[0].spi_i, e[0].spi_r)
    assert sorted(c.conn for c in w[0].children) == conns
    assert sorted(c.conn for c in e[0].children) == sorted(east_conns or conns)
    assert all(len(cs) == 1 for cs in children(net, net.west).values())
    assert n_sas(net.west) == n_sas(net.east) == 2 * len(conns)
    check_pair(net)
    no_internal_error(net)


def test_ike_rekey_01_by_whack_keeps_the_child() -> None:
    """ikev2-ike-rekey-01: whack --rekey-ike twice: each time a new IKE SA (#3, then
    #4) and the same Child SA (#2) moved onto it (RFC 7296 §1.3.2)."""
    net = Net()
    net.up()
    child = child_spis(net, net.west)
    seen = [ike_spis(net, net.west)]
    for _ in range(2):
        net.advance(13)
        net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
        net.run()
        settled(net, ["west-east"])
        assert ike_spis(net, net.west) not in seen
        seen.append(ike_spis(net, net.west))
        assert child_spis(net, net.west) == child
        assert [i.role for i in ikes(net, net.west)] == ["initiator"]


LIFE2 = {"rekeymargin": "5s", "rekeyfuzz": "0%"}


def test_ike_rekey_02_child_then_ike_by_lifetime() -> None:
    """ikev2-ike-rekey-02: west salifetime=50s, ikelifetime=70s, rekeymargin=5s,
    rekeyfuzz=0%: after 50s the Child SA was rekeyed (#3) on the same IKE SA (#1);
    after 100s the IKE SA was rekeyed (#4) and the Child SA again (#5, on #4)."""
    net = empty_net()
    net.west.engine.add_connection(conn({**LIFE2, "ikelifetime": "70s",
                                         "salifetime": "50s"}, True))
    net.east.engine.add_connection(conn(LIFE2, False))
    bump_generation()
    up(net, "west-east")
    ike0, child0 = ike_spis(net, net.west), child_spis(net, net.west)
    net.advance(50)
    settled(net, ["west-east"])
    assert ike_spis(net, net.west) == ike0
    child1 = child_spis(net, net.west)
    assert child1 != child0
    net.advance(50)
    settled(net, ["west-east"])
    assert ike_spis(net, net.west) != ike0
    assert child_spis(net, net.west) not in (child0, child1)


THREE = [("a", WNET, ENET), ("b", "198.51.100.128/25", "203.0.113.128/25"),
         ("c", "198.51.99.0/24", "203.0.112.0/24")]


def three_net(west: dict, east: dict) -> Net:
    """ikev2-ike-rekey-03/04/05, ikev2-child-rekey-02: three conns between the same
    two hosts, brought up by west one after the other: one IKE SA carries them all."""
    net = empty_net()
    for name, wsub, esub in THREE:
        sub = {"leftsubnet": wsub, "rightsubnet": esub}
        net.west.engine.add_connection(conn({**sub, **west}, True, name))
        net.east.engine.add_connection(conn({**sub, **east}, False, name))
    bump_generation()
    up(net, "a", "b", "c")
    settled(net, "abc")
    return net


def test_ike_rekey_03_three_children_by_lifetime() -> None:
    """ikev2-ike-rekey-03: west ikelifetime=59s, salifetime=29s, rekeymargin=6s,
    rekeyfuzz=0%, pfs=no on both: the three Child SAs are rekeyed at 23s (checked at
    30s, same IKE SA), again at 46s, and the IKE SA at 53s (checked at 60s) with the
    three Child SAs moved onto the new one."""
    common = {"rekeyfuzz": "0%", "pfs": "no"}
    net = three_net({**common, "ikelifetime": "59s", "salifetime": "29s",
                     "rekeymargin": "6s"}, common)
    ike0, ch0 = ike_spis(net, net.west), child_spis(net, net.west)
    net.advance(30)
    settled(net, "abc")
    ch1 = child_spis(net, net.west)
    assert ike_spis(net, net.west) == ike0
    assert all(ch1[n] != ch0[n] for n in "abc")
    net.advance(30)
    settled(net, "abc")
    assert ike_spis(net, net.west) != ike0
    ch2 = child_spis(net, net.west)
    assert all(ch2[n] != ch1[n] for n in "abc")
    assert all(c.ke == "" for cs in children(net, net.west).values() for c in cs)


def test_ike_rekey_04_three_children_with_dpd() -> None:
    """ikev2-ike-rekey-04: as -03 with dpddelay=3 on west, ikelifetime=50s,
    salifetime=30s: Child SAs #5-#7 at 30s, the IKE SA (#8) at 50s, Child SAs again
    (#12-#14 on #8) at 80s; the liveness checks never get in the way."""
    net = three_net({"rekeyfuzz": "0%", "ikelifetime": "50s", "salifetime": "30s",
                     "rekeymargin": "6s", "dpddelay": "3"}, {"rekeyfuzz": "0%"})
    ike0, ch0 = ike_spis(net, net.west), child_spis(net, net.west)
    net.advance(30)
    settled(net, "abc")
    ch1 = child_spis(net, net.west)
    assert ike_spis(net, net.west) == ike0 and all(ch1[n] != ch0[n] for n in "abc")
    net.advance(20)
    settled(net, "abc")
    ike1 = ike_spis(net, net.west)
    assert ike1 != ike0
    ch2 = child_spis(net, net.west)
    net.advance(30)
    settled(net, "abc")
    assert all(child_spis(net, net.west)[n] not in (ch1[n], ch2[n]) for n in "abc")
    assert not [m for m in net.west.logs() if "peer-dead" in m or "dead" in m]


def test_ike_rekey_05_from_both_ends() -> None:
    """ikev2-ike-rekey-05: uniqueids=no, east ikelifetime=2m rekeymargin=10s, west
    ikelifetime=3m rekeymargin=90s, salifetime=5m (conn b on east 150s): both ends
    rekey by their own timers; after three minutes one IKE SA still carries the three
    Child SAs on both ends, the same ones."""
    east = {"ikelifetime": "2m", "rekeymargin": "10s", "salifetime": "5m", "rekeyfuzz": "0%"}
    net = empty_net()
    for name, wsub, esub in THREE:
        sub = {"leftsubnet": wsub, "rightsubnet": esub}
        net.west.engine.add_connection(conn({**sub, "ikelifetime": "3m",
                                             "rekeymargin": "90s", "salifetime": "5m",
                                             "rekeyfuzz": "0%"}, True, name))
        e = {**east, "salifetime": "150s"} if name == "b" else east
        net.east.engine.add_connection(conn({**sub, **e}, False, name))
    bump_generation()
    up(net, "a", "b", "c")
    ike0, ch0 = ike_spis(net, net.west), child_spis(net, net.west)
    net.advance(180)
    settled(net, "abc")
    assert ike_spis(net, net.west) != ike0
    assert child_spis(net, net.west)["b"] != ch0["b"]  # east's 150s salifetime
    net.advance(180)
    settled(net, "abc")
    ch2 = child_spis(net, net.west)
    assert all(ch2[n] != ch0[n] for n in "abc")  # the 5m ones too, by now


# ================================================================== Child SA rekey
def requests(net: Net, who: str, exchange: str = "CREATE_CHILD_SA") -> int:
    """Requests (not datagrams) of that exchange ``who`` sent."""
    hdrs = [wm.peek_header(d) for w, d in net.sent if w == who]
    return len({(h.spi_i, h.message_id) for h in hdrs
                if getattr(h.exchange, "name", h.exchange) == exchange and not h.response})


def test_child_rekey_by_whack_with_pfs() -> None:
    """ikev2-child-rekey: whack --rekey-child twice: each time a new Child SA (#3, #4)
    on the same IKE SA (#1), made with PFS (the rekeyed xfrm ends "-DH19": pfs=yes,
    the IKE SA's group, RFC 7296 §1.3.3); the first one, from IKE_AUTH, has none."""
    net = Net()
    net.up()
    ike0 = ike_spis(net, net.west)
    (first,) = children(net, net.west)["west-east"]
    assert first.ke == ""
    seen = [child_spis(net, net.west)]
    for _ in range(2):
        net.advance(10)
        net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
        net.run()
        net.advance(2)
        settled(net, ["west-east"])
        assert ike_spis(net, net.west) == ike0
        assert child_spis(net, net.west) not in seen
        seen.append(child_spis(net, net.west))
        (c,) = children(net, net.west)["west-east"]
        (e,) = children(net, net.east)["west-east"]
        assert c.ke == e.ke == "ECP_256"


def test_child_rekey_00_shared_ike_sa() -> None:
    """ikev2-child-rekey-00: three conns on one IKE SA (host-host, subnet-host,
    subnet-subnet; east's are listed in another order and found by selectors).
    --rekey-ike of the owner moves all three; --rekey-ike of another conn finds no IKE
    SA of its own and does nothing ("connection does not have an established IKE
    SA"); --rekey-child of each then uses the new IKE SA (CREATE_CHILD_SA, no
    IKE_SA_INIT)."""
    net = empty_net()
    host = {"leftsubnet": None, "rightsubnet": None}
    west = {"rekey": host, "rekey1": {"rightsubnet": None},
            "rekey2": {}}
    east = {"rekey": {}, "rekey1": {"rightsubnet": None}, "rekey2": host}
    for name, keys in west.items():
        net.west.engine.add_connection(conn(keys, True, name))
    for name, keys in east.items():
        net.east.engine.add_connection(conn(keys, False, name))
    bump_generation()
    up(net, "rekey", "rekey1", "rekey2")
    assert state(net, net.west) == [("rekey", ["rekey", "rekey1", "rekey2"])]
    assert state(net, net.east) == [("rekey2", ["rekey", "rekey1", "rekey2"])]
    ike0, ch0 = ike_spis(net, net.west), child_spis(net, net.west)
    net.advance(3)
    net.apply(net.west, net.west.engine.rekey_ike("rekey", net.now))
    net.run()
    ike1 = ike_spis(net, net.west)
    assert ike1 != ike0 and child_spis(net, net.west) == ch0
    before = list(net.sent)
    assert net.west.engine.rekey_ike("rekey2", net.now) == []
    for name in ("rekey1", "rekey", "rekey2"):
        net.apply(net.west, net.west.engine.rekey_child(name, net.now))
        net.run()
    settled(net, ["rekey", "rekey1", "rekey2"])
    assert ike_spis(net, net.west) == ike1
    ch1 = child_spis(net, net.west)
    assert all(ch1[n] != ch0[n] for n in ch0)
    new = [wm.peek_header(d) for _, d in net.sent[len(before):]]
    assert {getattr(h.exchange, "name", "") for h in new} == {"CREATE_CHILD_SA",
                                                              "INFORMATIONAL"}


def test_child_rekey_01_by_the_responder() -> None:
    """ikev2-child-rekey-01: east, the IKE SA responder, has salifetime=30s,
    rekeymargin=5s, rekeyfuzz=0%: east rekeys the Child SA (first between 25 and 35s,
    again by 60s); west, with the defaults, never does."""
    net = empty_net()
    net.west.engine.add_connection(conn({}, True))
    net.east.engine.add_connection(conn({"salifetime": "30s", "rekeymargin": "5s",
                                         "rekeyfuzz": "0%"}, False))
    bump_generation()
    up(net, "west-east")
    ch0 = child_spis(net, net.west)
    net.advance(24)
    assert child_spis(net, net.west) == ch0 and requests(net, "east") == 0
    net.advance(11)
    settled(net, ["west-east"])
    ch1 = child_spis(net, net.west)
    assert ch1 != ch0 and requests(net, "east") == 1
    net.advance(25)
    settled(net, ["west-east"])
    assert child_spis(net, net.west) not in (ch0, ch1)
    assert requests(net, "east") == 2 and requests(net, "west") == 0


def test_child_rekey_02_three_children_by_lifetime() -> None:
    """ikev2-child-rekey-02: three conns on one IKE SA, west salifetime=29s,
    rekeymargin=6s, rekeyfuzz=0%, pfs=no: west rekeys all three (#5-#7), the old
    ones are deleted, then again (#8-#10); the IKE SA stays."""
    common = {"pfs": "no"}
    net = three_net({**common, "salifetime": "29s", "rekeymargin": "6s",
                     "rekeyfuzz": "0%"}, common)
    ike0 = ike_spis(net, net.west)
    seen = [child_spis(net, net.west)]
    for _ in range(2):
        net.advance(24)
        settled(net, "abc")
        ch = child_spis(net, net.west)
        assert all(ch[n] != s[n] for s in seen for n in "abc")
        seen.append(ch)
    assert ike_spis(net, net.west) == ike0
    assert requests(net, "west") == 6 + 2 and requests(net, "east") == 0


def test_child_rekey_06_lost_answer_ends_the_ike_sa() -> None:
    """ikev2-child-rekey-06-deadlock: retransmit-timeout=15s; the first
    --rekey-child works (#2 -> #3); the answer to the second (message ID 4) is
    dropped on its way to west: after 15s west gives up the IKE SA ("15 second timeout
    exceeded"), deleting the IKE SA, the Child SA and the larval one, with nothing
    half-made left in its kernel."""
    net = empty_net()
    host = {"leftsubnet": None, "rightsubnet": None, "retransmit-timeout": "15s"}
    net.west.engine.add_connection(conn(host, True))
    net.east.engine.add_connection(conn(host, False))
    bump_generation()
    up(net, "west-east")
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    settled(net, ["west-east"])
    dropped: list[str] = []
    apply = net.apply

    def firewall(side: Side, acts: list) -> None:  # west's iptables rule: ID 4 in
        keep = []
        for a in acts:
            h = wm.peek_header(a.data) if isinstance(a, SendPacket) else None
            if side is net.east and h is not None and h.message_id == 4:
                dropped.append(getattr(h.exchange, "name", str(h.exchange)))
                continue
            keep.append(a)
        apply(side, keep)

    net.apply = firewall  # type: ignore[method-assign]
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert dropped == ["CREATE_CHILD_SA"]
    net.advance(14)
    assert net.west.engine.by_serial
    net.advance(2)  # the retransmits' answers were dropped as well
    assert set(dropped) == {"CREATE_CHILD_SA"} and len(dropped) > 1
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert not net.west.policies
    no_internal_error(net)


def test_child_rekey_07_four_at_once() -> None:
    """ikev2-child-rekey-07-deadlock: leftsubnets= of four /32s, one IKE SA with
    four Child SAs, pfs=no; four --rekey-child --async at once: the rekeys and the
    Deletes of the old Child SAs queue behind each other (one exchange at a time,
    window 1), all four are replaced and the old ones gone."""
    net = empty_net()
    subs = ",".join(f"198.51.100.{n}/32" for n in (254, 253, 252, 251))
    keys = {"leftsubnet": None, "leftsubnets": subs, "rightsubnet": "203.0.113.254/32",
            "pfs": "no"}
    names = add_conns(net.west, keys, True, "west-east")
    assert add_conns(net.east, keys, False, "west-east") == names and len(names) == 4
    bump_generation()
    up(net, *names)
    settled(net, names)
    ch0 = child_spis(net, net.west)
    for n in names:
        net.apply(net.west, net.west.engine.rekey_child(n, net.now))
    net.run()
    net.advance(5)
    settled(net, names)
    ch1 = child_spis(net, net.west)
    assert all(ch1[n] != ch0[n] for n in names)


# ================================================================== crossing streams
def test_crossing_streams_21_second_child() -> None:
    """crossing-streams-21-second-child-crypto-ikev2: cuckold's IKE SA is up; both
    ends then ask for cuckoo's Child SA on it at the same time (west's answer and
    east's request cross): both CREATE_CHILD_SA exchanges succeed, each end has two
    Child SAs of cuckoo (#3 west's, #4 east's) besides cuckold's."""
    net = empty_net()
    for name, sub in (("cuckold", E1), ("cuckoo", E2)):
        net.west.engine.add_connection(conn({"rightsubnet": sub}, True, name))
        net.east.engine.add_connection(conn({"rightsubnet": sub}, False, name))
    bump_generation()
    up(net, "cuckold")
    net.apply(net.west, net.west.engine.initiate("cuckoo", net.now))
    net.apply(net.east, net.east.engine.initiate("cuckoo", net.now))
    net.run()
    net.advance(30)
    for side in (net.west, net.east):
        assert state(net, side) == [("cuckold", ["cuckold", "cuckoo", "cuckoo"])]
        assert n_sas(side) == 6
    assert requests(net, "west") == requests(net, "east") == 1
    check_pair(net)
    no_internal_error(net)


def _west_takes(net: Net, kind: str) -> None:
    """Deliver what west sent (east answers at once), then let west process the first
    held message of east of that kind: "E" east's request, "W" the answer to west's."""
    while True:
        for_east = [(f, p) for f, p in net.queue if f is net.west]
        if not for_east:
            break
        net.queue = [q for q in net.queue if q[0] is not net.west]
        for _f, p in for_east:
            net.apply(net.east, net.east.engine.receive(bytes(p.data), p.remote, p.local,
                                                        net.now))
    held = [(f, p) for f, p in net.queue if f is net.east]
    pick = next(q for q in held if wm.peek_header(q[1].data).response == (kind == "W"))
    net.queue.remove(pick)
    net.apply(net.west, net.west.engine.receive(bytes(pick[1].data), pick[1].remote,
                                                pick[1].local, net.now))


@pytest.mark.parametrize("name", ["ewwew", "ewwwe", "wewew", "wewwe"],
                         ids=lambda n: f"crossing-streams-11-{n}-ikev2-permanent")
def test_crossing_streams_11_permanent(name: str) -> None:
    """crossing-streams-11-*-ikev2-permanent: both ends ipsec up the same conn at once;
    the letters are the order west deals with things (e: east's IKE_SA_INIT /
    IKE_AUTH request, w: its own IKE SA / Child SA).  Whatever the order, both IKE
    SAs and both Child SAs stay up on both ends (no duplicate is deleted), and the
    Child SA each end established last owns its policies (Libreswan's "eroute
    owner")."""
    net = make_pair()
    first, second = (net.east, net.west) if name[0] == "e" else (net.west, net.east)
    net.apply(first, first.engine.initiate("west-east", net.now))
    if name[0] == "e":
        _west_takes(net, "E")
    net.apply(second, second.engine.initiate("west-east", net.now))
    # west's inbound: E1 (INIT request), W1 (INIT answer), then the two IKE_AUTH
    order = ["W", "E", "W"] if name[0] == "e" else ["E", "W", "E", "W"]
    if name in ("ewwwe", "wewwe"):
        order = order[:-2] + ["W", "E"]
    for kind in order:
        _west_takes(net, kind)
    net.run()
    net.advance(30)
    for side in (net.west, net.east):
        ss = [i for i in side.engine.status(net.now).ike_sas]
        assert sorted(i.role for i in ss) == ["initiator", "responder"], ss
        assert all(i.state == "STATE_V2_ESTABLISHED_IKE_SA" for i in ss)
        assert [len(i.children) for i in ss] == [1, 1]
        assert n_sas(side) == 4
    check_pair(net)
    # west's policy owner: its own Child SA if the IKE_AUTH answer came last, else east's
    owner = [c for c in net.west.engine.policy_owner.values()]
    assert len(owner) == 1
    assert owner[0].parent.initiator == (order[-1] == "W")
    no_internal_error(net)


def make_pair() -> Net:
    net = empty_net()
    net.west.engine.add_connection(conn({}, True))
    net.east.engine.add_connection(conn({}, False))
    bump_generation()
    return net


# ================================================================== a peer's Delete
def test_ikev2_delete_sa_04_auto_start_revives() -> None:
    """ikev2-delete-sa-04: east has auto=start (it brought the conn up), west auto=add;
    west deletes the conn ("use delete, not down - because east has auto=start"): its
    Delete reaches east, which deletes the IKE SA and Child SA and, the conn being
    meant to stay up, initiates it again ("connection is supposed to remain up;
    revival attempt 1"); west, without the conn, never answers, so east is left
    retrying its IKE_SA_INIT."""
    net = empty_net()
    net.west.engine.add_connection(conn({}, True))
    ec = conn({}, False)
    ec.auto = "start"
    net.east.engine.add_connection(ec)
    bump_generation()
    up(net, "west-east", side=net.east)
    assert state(net, net.west) == state(net, net.east) == [("west-east", ["west-east"])]
    delete(net, "west-east")
    assert not net.west.engine.by_serial and not net.west.kernel_sas
    assert not net.east.kernel_sas and not ikes(net, net.east)
    assert any("supposed to remain up" in m for m in net.east.logs())
    net.advance(5)
    (again,) = net.east.engine.status(net.now).ike_sas
    assert (again.role, again.state) == ("initiator", "STATE_V2_PARENT_I1")
    assert not net.west.engine.by_serial
    no_internal_error(net)


@pytest.mark.parametrize("auto", ["start", "add"])
def test_peer_down_revives_only_a_conn_meant_up(auto: str) -> None:
    """The other half of ikev2-delete-sa-04: west's ipsec down while east's conn is
    auto=start brings it back up at once (east initiates, west answers: Libreswan's
    reason for "use delete, not down"); with auto=add east leaves it down.  An IKE SA
    the peer deletes after rekeying it is no reason to revive anything."""
    net = empty_net()
    net.west.engine.add_connection(conn({}, True))
    ec = conn({}, False)
    ec.auto = auto
    net.east.engine.add_connection(ec)
    bump_generation()
    up(net, "west-east", side=net.east)
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    net.advance(5)
    assert state(net, net.east) == [("west-east", ["west-east"])]
    assert not any("supposed to remain up" in m for m in net.east.logs())
    down(net, "west-east")
    net.advance(5)
    if auto == "start":
        assert [i.role for i in ikes(net, net.east)] == ["initiator"]
        assert state(net, net.west) == state(net, net.east) == [("west-east", ["west-east"])]
        check_pair(net)
    else:
        assert not net.east.engine.by_serial and not net.west.engine.by_serial
    no_internal_error(net)


# ================================================================== on demand, peer restarts
@pytest.mark.parametrize("during", ["ike-sa-init", "ike-auth"])
def test_crossing_streams_20_peer_restarts_ondemand(during: str) -> None:
    """crossing-streams-20-peer-restarts-ondemand-*: west's conn is routed; a packet
    starts the negotiation; east gets west's IKE_SA_INIT (or, the first exchange done,
    its IKE_AUTH) and restarts with no state, then initiates the conn itself.  West
    answers: the Child SA east made owns west's policies (the trap and the negotiation
    are replaced by the tunnel), and stays so when west's own stranded attempt gives
    up later."""
    import random

    from pypluto.ike.engine import Engine
    from pypluto.ike.settings import EngineSettings

    from .harness import EAST, PSK, Store, make_conn
    from .test_traps import _acq, _routed

    net = Net()
    reqid = _routed(net)
    net.apply(net.west, net.west.engine.acquire(_acq(net, reqid), net.now))
    net.step()  # IKE_SA_INIT reaches east
    if during == "ike-auth":
        net.step()  # its answer reaches west, which sends IKE_AUTH
        net.step()  # IKE_AUTH reaches east (and is answered)
    net.queue.clear()  # east goes down before its answer leaves
    net.east.engine = Engine(EngineSettings(), Store(PSK), rng=random.Random(9).randbytes,
                             local_addrs=[EAST])
    net.east.engine.add_connection(make_conn(local_left=False))
    net.east.kernel_sas.clear()
    up(net, "west-east", side=net.east)
    (child,) = children(net, net.west)["west-east"]
    owner = net.west.engine.policy_owner[reqid]
    assert owner.spi_in == child.spi_in and not owner.parent.initiator  # east's
    want = kernel(net.west)
    assert want == {policy_key(p) for p in net.west.engine.policies(owner)}
    assert n_sas(net.west) == 2
    net.advance(120)  # west's own attempt has long given up
    assert len(children(net, net.west)["west-east"]) == 1
    assert kernel(net.west) == want and n_sas(net.west) == 2
    check_pair(net)
    no_internal_error(net)


def test_crossing_streams_23_conswitch_ike_sa_init() -> None:
    """crossing-streams-23-conswitch-ike-sa-init-ikev2: two conns a and b that can share
    an IKE SA, retransmit-timeout=10s.  West's "a" IKE_SA_INIT is lost; east brings up
    "b", which west answers.  At its next retransmit west drops its own negotiation
    ("dropping negotiation as superseded by established IKE SA #2") and asks for a's
    Child SA on that IKE SA instead (CREATE_CHILD_SA, with PFS): one IKE SA carries
    both."""
    net = empty_net()
    for name, left, right in (("a", "198.51.100.253/32", E1), ("b", "198.51.100.254/32", E2)):
        keys = {"leftsubnet": left, "rightsubnet": right, "retransmit-timeout": "10s"}
        net.west.engine.add_connection(conn(keys, True, name))
        net.east.engine.add_connection(conn(keys, False, name))
    bump_generation()
    net.apply(net.west, net.west.engine.initiate("a", net.now))
    net.queue.clear()  # blocked
    up(net, "b", side=net.east)
    assert state(net, net.west) == state(net, net.east) == [("b", ["b"])]
    net.advance(30)
    assert state(net, net.west) == state(net, net.east) == [("b", ["a", "b"])]
    assert len(net.west.engine.by_serial) == len(net.east.engine.by_serial) == 1
    assert any("dropping negotiation as superseded by established IKE SA" in m
               for m in net.west.logs())
    (a,) = children(net, net.west)["a"]
    assert a.ke == "ECP_256"
    assert requests(net, "west", "IKE_SA_INIT") == 1
    check_pair(net)
    no_internal_error(net)


# ================================================================== asymmetric auth
@pytest.fixture(scope="module")
def nss(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """west's and east's NSS database (one RSA key each, as ``ipsec newhostkey``):
    name -> (database directory, its public key as ``rsasigkey=0s...``)."""
    from .test_rawkeys import new_db, pubkey_of, rsasigkey

    out = {}
    for who in ("west", "east"):
        d = tmp_path_factory.mktemp(who) / "nss"
        new_db(d)
        out[who] = (str(d), rsasigkey(pubkey_of(d)))
    return out


def asym_net(nss: dict[str, tuple[str, str]], west: dict, east: dict) -> Net:
    """ikev2-asymmetric-*: each end's conn text; ``%west`` / ``%east`` stand for that
    end's raw public key; each end signs with the key in its own NSS database."""
    from pypluto.config.certs import CertStore

    from .harness import PSK, Store

    net = empty_net()
    for side, keys, left in ((net.west, west, True), (net.east, east, False)):
        keys = {k: (nss[v[1:]][1] if isinstance(v, str) and v in ("%west", "%east") else v)
                for k, v in keys.items()}
        net.apply(side, side.engine.add_connection(conn(keys, left)))
        store = Store(PSK)
        store.certs = CertStore(nssdir=nss[side.name][0])  # type: ignore[attr-defined]
        side.engine.secrets = store
    bump_generation()
    return net


W_NULL = {"leftauth": "null", "leftid": "%null"}
E_NULL = {"rightauth": "null", "rightid": "%null"}
W_RSA = {"leftauth": "rsasig", "leftrsasigkey": "%west"}
E_RSA = {"rightauth": "rsasig", "rightrsasigkey": "%east"}
W_PSK, E_PSK = {"leftauth": "secret"}, {"rightauth": "secret"}


@pytest.mark.parametrize(("keys", "west_saw", "east_saw"), [
    pytest.param({**W_NULL, **E_RSA}, "RSASSA-PSS", "NULL",
                 id="ikev2-asymmetric-04-null-rsaraw"),
    pytest.param({**W_PSK, **E_RSA}, "RSASSA-PSS", "secret",
                 id="ikev2-asymmetric-07-psk-rsaraw"),
    pytest.param({**W_RSA, **E_NULL}, "NULL", "RSASSA-PSS",
                 id="ikev2-asymmetric-09-rsaraw-null"),
    pytest.param({**W_RSA, **E_PSK}, "secret", "RSASSA-PSS",
                 id="ikev2-asymmetric-10-rsaraw-psk"),
    pytest.param({**W_RSA, **E_RSA}, "RSASSA-PSS", "RSASSA-PSS",
                 id="ikev2-asymmetric-15-rsaraw-rsaraw"),
])
def test_asymmetric_auth(nss: dict, keys: dict, west_saw: str, east_saw: str) -> None:
    """ikev2-asymmetric-*: the same conn on both ends, each end authenticating its own
    way (leftauth= / rightauth=; raw RSA keys as rsasigkey=): the IKE SA and Child SA
    come up, each end verified the other's method (Libreswan: "authenticated peer
    using ... RSASSA-PSS", "authby=null and ID_NULL", "authby=secret")."""
    keys = {"authby": None, **keys}
    net = asym_net(nss, keys, keys)
    up(net, "west-east")
    settled(net, ["west-east"])
    for side, saw in ((net.west, west_saw), (net.east, east_saw)):
        est = [m for m in side.logs() if "authenticated peer" in m]
        assert len(est) == 1 and saw.lower() in est[0].lower(), (side.name, est)
    (w,), (e,) = ikes(net, net.west), ikes(net, net.east)
    assert (w.local_id, w.remote_id) == (e.remote_id, e.local_id)
    assert (w.local_id == "%null") == ("leftid" in keys)
    assert (w.remote_id == "%null") == ("rightid" in keys)


def _refused_at_add(keys: dict[str, str | None]) -> str:
    d = {**BASE, **keys}
    text = "conn c\n" + "".join(f"\t{k}={v}\n" for k, v in d.items() if v is not None)
    cfg = parse_config_text(text, "f")
    assert "c" not in cfg.conns
    return " ".join(str(x) for x in cfg.diagnostics)


@pytest.mark.parametrize(("west", "east", "east_literal", "refuser"), [
    # west: leftauth=null, rightauth=rsasig (rightid=@east); east: authby=null
    pytest.param({"authby": None, **W_NULL, **E_RSA}, {"authby": "null", "leftid": "%null",
                                                        "rightid": "%null"},
                 {"authby": "null", "leftid": "%null", "rightid": "@east"}, "west",
                 id="ikev2-asymmetric-16-auth-mismatch"),
    # west: leftauth=rsasig, rightauth=null; east: authby=null for both
    pytest.param({"authby": None, **W_RSA, **E_NULL}, {"authby": "null", "leftid": "%null",
                                                        "rightid": "%null"},
                 {"authby": "null", "leftid": "@west", "rightid": "%null"}, "east",
                 id="ikev2-asymmetric-17-auth-mismatch-reverse"),
])
def test_asymmetric_auth_mismatch(nss: dict, west: dict, east: dict, east_literal: dict,
                                  refuser: str) -> None:
    """ikev2-asymmetric-16/17: one end wants the other to sign (rsasig), the other end
    does NULL authentication.  Libreswan loads east's conn as written (authby=null with
    an FQDN ID for one end); we refuse that at add time, on purpose (NULL
    authentication goes with ID_NULL, RFC 7619 §3: an FQDN the peer cannot prove says
    nothing), so east's NULL ends are written %null here.  The outcome is Libreswan's:
    16, west (the initiator) refuses east's NULL AUTH (Libreswan: "peer attempted
    NULL authentication but we want rsasig"; we: its ID_NULL is not the '@east'
    expected) and says so with AUTHENTICATION_FAILED; 17, east answers it to
    west's signature; no IKE SA, no Child SA on either end."""
    why = _refused_at_add(east_literal)
    assert "authby=null" in why and "ID_NULL" in why, why
    net = asym_net(nss, west, east)
    up(net, "west-east")
    net.advance(30)
    for side in (net.west, net.east):
        assert not ikes(net, side) and not side.kernel_sas, (side.name, side.logs())
    if refuser == "east":
        assert any("AUTHENTICATION_FAILED" in m for m in net.west.logs()), net.west.logs()
        assert any("rejected" in m for m in net.east.logs()), net.east.logs()
    else:  # west refuses east's ID_NULL and tells it so; east then deletes its half
        assert any("peer ID NULL" in m and "does not match the expected '@east'" in m
                   for m in net.west.logs()), net.west.logs()
        assert any("could not authenticate us" in m for m in net.east.logs())
    no_internal_error(net)


@pytest.fixture(scope="module")
def pki_files(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An RSA PKI (root, intermediate) with a certificate for west and for east:
    name -> (its Issued, the directory of its certificate and key, the certificate's
    file); "root" -> the root certificate (both ends' trust anchor)."""
    from pki import PKI

    pki = PKI.build("rsa2048")
    out: dict = {"root": pki.root.cert}
    for who in ("west", "east"):
        ee = pki.ee(who, "rsa2048")
        d = tmp_path_factory.mktemp(who + "-x509")
        ee.write(d, who)
        (d / f"{who}.crt").write_bytes(ee.cert_pem() + b"".join(
            c.cert_pem() for c in [pki.inter]))
        out[who] = (ee, str(d), str(d / f"{who}.crt"))
    return out


W_CERT = {"leftauth": "rsasig", "leftcert": "%west-cert"}
E_CERT = {"rightauth": "rsasig", "rightcert": "%east-cert"}


@pytest.mark.parametrize(("keys", "west_saw", "east_saw"), [
    pytest.param({**W_PSK, **E_CERT}, "RSASSA-PSS", "secret",
                 id="ikev2-asymmetric-08-psk-rsacert"),
    pytest.param({**W_RSA, **E_CERT}, "RSASSA-PSS", "RSASSA-PSS",
                 id="ikev2-asymmetric-11-rsaraw-rsacert"),
    pytest.param({**W_CERT, **E_NULL}, "NULL", "RSASSA-PSS",
                 id="ikev2-asymmetric-12-rsacert-null"),
    pytest.param({**W_CERT, **E_PSK}, "secret", "RSASSA-PSS",
                 id="ikev2-asymmetric-13-rsacert-psk"),
    pytest.param({**W_CERT, **E_RSA}, "RSASSA-PSS", "RSASSA-PSS",
                 id="ikev2-asymmetric-14-rsacert-rsaraw"),
])
def test_asymmetric_auth_with_certificates(nss: dict, pki_files: dict, keys: dict,
                                           west_saw: str, east_saw: str) -> None:
    """ikev2-asymmetric-* with an X.509 end (leftcert= / rightcert=, its ID %fromcert,
    i.e. the certificate's subject DN): as the raw-key rows, both come up and each end
    verified the other's own method; the certificate's end is known by its DN."""
    from pypluto.config.certs import CertStore
    from pypluto.config.ids import parse_id

    keys = {"authby": None, **keys}
    plain = {k: v for k, v in keys.items() if v not in ("%west-cert", "%east-cert")}
    net = asym_net(nss, plain, plain)
    for side in (net.west, net.east):
        store = CertStore(nssdir=nss[side.name][0], ipsecdir=pki_files[side.name][1])
        store.extra_anchors.append(pki_files["root"])
        side.engine.secrets.certs = store  # type: ignore[attr-defined]
        c = side.engine.connections["west-east"]
        for who, end in (("west", c.left), ("east", c.right)):
            if f"%{who}-cert" in keys.values():
                end.id = parse_id(pki_files[who][0].dn)
                if side.name == who:
                    end.cert = pki_files[who][2]
    bump_generation()
    up(net, "west-east")
    assert ikes(net, net.west), (net.west.logs(), net.east.logs())
    settled(net, ["west-east"])
    for side, saw in ((net.west, west_saw), (net.east, east_saw)):
        est = [m for m in side.logs() if "authenticated peer" in m]
        assert len(est) == 1 and saw.lower() in est[0].lower(), (side.name, est)
    (w,) = ikes(net, net.west)
    for who, got in (("west", w.local_id), ("east", w.remote_id)):
        if f"%{who}-cert" in keys.values():
            assert got == pki_files[who][0].dn, (got, pki_files[who][0].dn)


@pytest.mark.parametrize("name", ["ikev2-asymmetric-03-null-rsacert",
                                  "ikev2-asymmetric-02-orienting"])
def test_asymmetric_null_with_id_none(nss: dict, name: str) -> None:
    """ikev2-asymmetric-03-null-rsacert / -02-orienting: west authenticates with NULL
    and says leftid=%none; Libreswan loads it and west's ID becomes its address
    (ID_IPV4_ADDR 192.1.2.45).  We refuse that conn at add time on purpose
    (config/parser.py: NULL authentication goes with ID_NULL, RFC 7619 §3; an address
    ID the peer cannot verify would only mislead it).  Written as we take it (leftid
    unset: ID_NULL) the outcome is Libreswan's: up, east authenticated by RSASSA-PSS
    with its raw key.  (02's other half, a conn oriented once its address appears
    at ``ipsec whack --listen``, is tests/daemon/test_daemon.py's
    test_unoriented_conn_oriented_by_listen.)"""
    literal = {"authby": None, "leftauth": "null", "leftid": "%none", **E_RSA,
               "rightrsasigkey": nss["east"][1]}
    why = _refused_at_add(literal)
    assert "leftid=%none" in why and "ID_NULL" in why, why
    keys = {"authby": None, "leftauth": "null", "leftid": None, **E_RSA}
    net = asym_net(nss, keys, keys)
    up(net, "west-east")
    settled(net, ["west-east"])
    (w,) = ikes(net, net.west)
    assert w.local_id == "%null"
    assert any("authenticated peer" in m and "RSASSA-PSS" in m for m in net.west.logs())


# ================================================================== crossing Deletes
@pytest.mark.parametrize(("west_cmd", "east_cmd", "left"), [
    # crossing-streams-03-ikev2-delete-child: both delete the same Child SA
    (("down", "cuckoo"), ("down", "c/0x2"), ["cuckold"]),
    # crossing-streams-03-ikev2-delete-ike: both delete the IKE SA
    (("delete", "cuckold"), ("delete", "c/0x1"), None),
    # crossing-streams-03-ikev2-delete-ike-vs-child: west the IKE SA, east a Child SA
    (("delete", "cuckold"), ("down", "c/0x2"), None),
    # crossing-streams-03-ikev2-delete-child-vs-ike: west a Child SA, east the IKE SA
    (("down", "cuckoo"), ("delete", "c/0x1"), None),
], ids=["delete-child", "delete-ike", "delete-ike-vs-child", "delete-child-vs-ike"])
def test_crossing_streams_03_deletes(west_cmd: tuple[str, str], east_cmd: tuple[str, str],
                                     left: list[str] | None) -> None:
    """crossing-streams-03-ikev2-*: both ends send a Delete at the same time and each
    gets the other's before its answer (RFC 7296 §1.4.1: a Delete for an SA we are
    deleting ourselves is answered, with no Delete payload for it).  Libreswan's tests
    start them with whack --delete-ike / --delete-child, which we do not have; here
    ipsec down of a conn whose Child SA shares another conn's IKE SA deletes only that
    Child SA, and ipsec delete of the IKE SA's own conn deletes the IKE SA.  Whatever
    crosses, both ends agree: what was deleted is gone on both, the rest stays up.
    (Libreswan then revives the conns, "supposed to remain up" from ipsec up; ours
    were brought up by hand with auto=add and stay down: only auto=start / keep conns
    are revived, the rule of tests/ike/test_lifecycle.py.)"""
    net, _ = cuckoo_net()
    up(net, "cuckold", "cuckoo")
    for side, (cmd, name) in ((net.west, west_cmd), (net.east, east_cmd)):
        fn = side.engine.terminate if cmd == "down" else side.engine.delete_connection
        net.apply(side, fn(name, net.now))
    net.run()
    net.advance(60)
    if left is None:
        for side in (net.west, net.east):
            assert not side.engine.by_serial and not side.kernel_sas and not side.policies
    else:
        assert state(net, net.west) == [("cuckold", left)]
        assert state(net, net.east) == [("c/0x1", ["c/0x1"])]
        assert n_sas(net.west) == n_sas(net.east) == 2
        check_pair(net)
    for side in (net.west, net.east):
        assert not [a for a in side.actions if isinstance(a, Log) and a.level == "warning"]
    no_internal_error(net)


def test_crossing_streams_04_child_up_while_ike_down() -> None:
    """crossing-streams-04-ikev2-initiator-child-up-ike-down: west-cuckoo is to get
    its Child SA on west-cuckold's IKE SA, but its CREATE_CHILD_SA is still waiting
    (Libreswan: its crypto stalled; here: the window is busy with a rekey) when that
    IKE SA is taken down (Libreswan: whack --down-ike; here: ipsec down west-cuckold,
    which, with no Child SA of another conn on it yet, deletes the IKE SA).  cuckoo's
    request is not lost: it comes up with an IKE SA of its own ("#4: initiator
    established IKE SA", "#5: ... Child SA using #4"), nothing else is left."""
    net, _ = cuckoo_net()
    up(net, "cuckold")
    net.apply(net.west, net.west.engine.rekey_child("cuckold", net.now))
    net.apply(net.west, net.west.engine.initiate("cuckoo", net.now))  # waits its turn
    down(net, "cuckold")
    net.advance(60)
    assert state(net, net.west) == [("cuckoo", ["cuckoo"])]
    assert state(net, net.east) == [("c/0x2", ["c/0x2"])]
    assert [e.kind.value for e in net.west.events if e.conn == "cuckoo"] == \
        ["ike-established", "child-established"]
    assert n_sas(net.west) == n_sas(net.east) == 2
    check_pair(net)
    no_internal_error(net)
