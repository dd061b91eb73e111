"""The N of ``"conn"[N]`` of a template's instances never goes backwards.

Libreswan 5.2 (programs/pluto/connections.c) gives each instance of a template
(``right=%any``) the template's ``next_instance_serial`` when it is instantiated and
bumps the counter; the instance keeps its number until it is deleted.  So when the
peer shown as ``[1]`` leaves, the peer shown as ``[2]`` stays ``[2]`` and the next
peer is ``[3]``; an IKE SA rekey keeps the instance (and its number).

East is the gateway (a template); west holds the road warriors c1, c2, c3 (IDs
@cN.example, all from 192.0.2.1: peers differ by ID).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pypluto.control import format as fmt
from tests.ike.harness import Net
from tests.ike.test_hostile_roadwarrior import _up, rw_net

POOL = "198.51.100.10-198.51.100.13"


def _snap(net: Net) -> dict[str, Any]:
    eng = dataclasses.asdict(net.east.engine.status(net.now))
    return {"pluto": {}, "now": net.now, "wallclock": 1000.0, "engine": eng}


def _numbers(net: Net) -> dict[str, tuple[int, int | None]]:
    """peer ID -> (IKE SA serial, the instance number ``status()`` gives it)."""
    return {s.remote_id: (s.serial, s.instance)
            for s in net.east.engine.status(net.now).ike_sas
            if s.state == "STATE_V2_ESTABLISHED_IKE_SA"}


def _traffic(net: Net) -> dict[str, str]:
    """peer ID -> the connection as ``ipsec trafficstatus`` names it."""
    return {r["remote_id"]: f'{r["conn"]}[{r["instance"]}]'
            for r in fmt.traffic_rows(_snap(net))}


def test_instance_numbers_stay_with_their_peer() -> None:
    net = rw_net(pool=POOL, clients=3)
    _up(net, "c1")
    _up(net, "c2")
    assert {k: v[1] for k, v in _numbers(net).items()} == \
        {"@c1.example": 1, "@c2.example": 2}
    assert _traffic(net) == {"@c1.example": "west-east[1]", "@c2.example": "west-east[2]"}
    # [1] leaves: [2] stays [2] (it was shown as [1] from then on)
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    assert {k: v[1] for k, v in _numbers(net).items()} == {"@c2.example": 2}
    assert _traffic(net) == {"@c2.example": "west-east[2]"}
    lines = fmt.render("trafficstatus", _snap(net))
    assert len(lines) == 1 and '"west-east"[2] 192.0.2.1, type=ESP' in lines[0]
    # a new peer gets the next number, not the freed [1]
    _up(net, "c3")
    assert {k: v[1] for k, v in _numbers(net).items()} == \
        {"@c2.example": 2, "@c3.example": 3}
    # an IKE SA rekey of [2]: a new IKE SA, the same instance
    old = _numbers(net)["@c2.example"][0]
    net.apply(net.west, net.west.engine.rekey_ike("c2", net.now))
    net.run()
    serial, n = _numbers(net)["@c2.example"]
    assert serial != old and n == 2
    assert _traffic(net) == {"@c2.example": "west-east[2]", "@c3.example": "west-east[3]"}
    states = fmt.render("showstates", _snap(net))
    assert any(ln.startswith(f'#{serial}: "west-east"[2] 192.0.2.1:500 ESTABLISHED_IKE_SA')
               for ln in states)
    # the peer that left comes back: a new number
    _up(net, "c1")
    assert _numbers(net)["@c1.example"][1] == 4
    # memory follows the live instances: all gone, nothing kept but the counter
    for name in ("c1", "c2", "c3"):
        net.apply(net.west, net.west.engine.terminate(name, net.now))
    net.run()
    assert not net.east.engine.by_serial
    net.east.engine.status(net.now)  # the numbers are kept up to date when read
    assert net.east.engine._instances == {} and net.east.engine._instance_of == {}


def test_a_conn_that_is_not_a_template_has_no_instance() -> None:
    net = rw_net(pool=POOL, clients=1)
    _up(net, "c1")
    assert [s.instance for s in net.west.engine.status(net.now).ike_sas] == [None]
    assert net.west.engine._instances == {}


def test_older_snapshot_without_the_field_is_still_numbered() -> None:
    """A snapshot without ``instance`` (an older daemon): the computed numbering."""
    net = rw_net(pool=POOL, clients=2)
    _up(net, "c1")
    _up(net, "c2")
    snap = _snap(net)
    for s in snap["engine"]["ike_sas"]:
        del s["instance"]
    assert sorted(fmt.instance_numbers(snap).values()) == [1, 2]


def test_a_template_added_again_counts_from_one() -> None:
    """Libreswan 5.2 starts a template's counter at 1 when the template is added."""
    net = rw_net(pool=POOL, clients=2)
    _up(net, "c1")
    _up(net, "c2")
    eng = net.east.engine
    conn = eng.connections["west-east"]
    net.apply(net.east, eng.delete_connection("west-east", net.now))
    net.run()
    assert not eng.by_serial
    net.apply(net.east, eng.add_connection(conn))
    _up(net, "c2")
    assert {k: v[1] for k, v in _numbers(net).items()} == {"@c2.example": 1}
