"""``ipsec trafficstatus`` / ``showstates`` for a road warrior's instance, as Libreswan 5.2
prints them (programs/pluto/whack_trafficstatus.c, whack_showstates.c, jam_connection):

- an SA of a template (``right=%any``) is named ``"conn"[N] PEER`` (the instance's serial
  and the peer's address), ``"conn"[N] PEER:PORT`` in a state line; a conn that is not a
  template keeps ``"conn"`` (testing/pluto/addresspool-4in4-ikev2/east.console.txt:
  ``#2: "east"[2] 192.1.2.45, type=ESP, ..., id='@west', lease=192.3.1.0/32``);
- a Child SA whose peer got addresses from our pool ends with ``, lease=A/32`` (IPv4
  first, then ``B/128``; addresspool-46in4-ikev2: ``lease=192.3.1.0/32,2001:db8:0:3:1::/128``);
- "newest" is per instance.

The JSON views carry the same facts (``instance``, ``peer``, ``lease``).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from pypluto.control import format as fmt
from tests.ike.harness import Net, Side
from tests.ike.test_roadwarrior import rw_net

ADD_TIME = 1234567890


def _snap(net: Net, side: Side) -> dict[str, Any]:
    eng = dataclasses.asdict(side.engine.status(net.now))
    est = eng["ike_sas"][0]["children"][0]["established_at"]
    # wallclock such that add_time is Libreswan's test value
    return {"pluto": {}, "now": net.now, "wallclock": ADD_TIME + net.now - est, "engine": eng}


def _rw() -> tuple[Net, dict[str, Any], dict[str, Any]]:
    net = rw_net()
    net.up()
    assert net.children(net.east) and net.children(net.west)
    return net, _snap(net, net.east), _snap(net, net.west)


def test_trafficstatus_names_the_instance_and_shows_the_lease() -> None:
    _net, east, west = _rw()
    assert fmt.render("trafficstatus", east) == [
        f"#2: \"west-east\"[1] 192.0.2.1, type=ESP, add_time={ADD_TIME}, inBytes=0, "
        "outBytes=0, maxBytes=2^63B, id='@west.example', lease=198.51.100.10/32"]
    # west's conn is not a template: named as before; the address the gateway gave it
    # is its lease (Libreswan 5.2's north-east / road-east clients: "lease=ADDR/32")
    assert fmt.render("trafficstatus", west) == [
        f"#2: \"west-east\", type=ESP, add_time={ADD_TIME}, inBytes=0, outBytes=0, "
        "maxBytes=2^63B, id='@east.example', lease=198.51.100.10/32"]
    assert fmt.traffic_rows(west)[0]["lease"] == ["198.51.100.10/32"]


def test_showstates_names_the_instance_with_the_peer_and_port() -> None:
    _net, east, west = _rw()
    lines = fmt.render("showstates", east)
    assert lines[0].startswith('#1: "west-east"[1] 192.0.2.1:500 ESTABLISHED_IKE_SA '
                               "(established IKE SA);")
    assert lines[0].endswith(" newest; idle;")
    assert lines[1].startswith('#2: "west-east"[1] 192.0.2.1:500 ESTABLISHED_CHILD_SA')
    assert lines[1].endswith(" newest; eroute owner; IKE SA #1; idle;")
    assert lines[2].startswith('#2: "west-east"[1] 192.0.2.1 esp.')
    assert lines[3] == '#2: "west-east"[1] 192.0.2.1 dropped: replay=0 integrity=0 selector=0'
    # --status shows the same state lines (format.state_lines)
    assert fmt.state_lines(east) == lines
    # not a template: unchanged
    assert fmt.render("showstates", west)[0].startswith(
        '#1: "west-east":500 ESTABLISHED_IKE_SA')


def test_json_views_carry_instance_peer_and_lease() -> None:
    _net, east, west = _rw()
    (row,) = fmt.json_view("trafficstatus", east)["child_sas"]
    assert (row["conn"], row["instance"], row["peer"], row["lease"], row["remote_id"]) == \
        ("west-east", 1, "192.0.2.1", ["198.51.100.10/32"], "@west.example")
    (row,) = fmt.json_view("trafficstatus", west)["child_sas"]
    assert (row["conn"], row["instance"], row["peer"], row["lease"]) == \
        ("west-east", None, "192.0.2.2", ["198.51.100.10/32"])
    for cmd in ("showstates", "status"):
        (ike,) = fmt.json_view(cmd, east)["ike_sas"]
        assert ike["conn"] == "west-east" and ike["instance"] == 1
        assert [c["instance"] for c in ike["children"]] == [1]
        (ike,) = fmt.json_view(cmd, west)["ike_sas"]
        assert ike["instance"] is None and ike["children"][0]["instance"] is None
    # the snapshot is not changed (the IKE SA's "instance" is the engine's own field)
    assert "instance" not in east["engine"]["ike_sas"][0]["children"][0]


def test_a_second_peer_is_the_next_instance_each_with_its_newest_and_leases() -> None:
    """A second road warrior (its SAs copied from the first, another address (IPv6: as
    Libreswan, no brackets, then ``:PORT`` in a state line), ID and serials) is ``[2]``; both instances' SAs are "newest" (Libreswan: per instance); a
    dual-stack lease lists IPv4 first."""
    _net, east, _west = _rw()
    eng = east["engine"]
    other = copy.deepcopy(eng["ike_sas"][0])
    other.update(serial=3, remote="[2001:db8:1:2::45]:4500", remote_id="@other.example",
                 instance=2)  # the engine's number for the second peer
    other["children"][0].update(serial=4, parent_serial=3)
    eng["ike_sas"].append(other)
    eng["leases"] += [
        {"pool": "2001:db8::/120", "address": "2001:db8::5", "client_id": "@other.example",
         "conn": "west-east", "ike_serial": 3},
        {"pool": "198.51.100.10-198.51.100.12", "address": "198.51.100.11",
         "client_id": "@other.example", "conn": "west-east", "ike_serial": 3}]
    traffic = fmt.render("trafficstatus", east)
    assert traffic[0].startswith('#2: "west-east"[1] 192.0.2.1, ')
    assert traffic[0].endswith(", lease=198.51.100.10/32")
    assert traffic[1] == (
        f"#4: \"west-east\"[2] 2001:db8:1:2::45, type=ESP, add_time={ADD_TIME}, inBytes=0, "
        "outBytes=0, maxBytes=2^63B, id='@other.example', "
        "lease=198.51.100.11/32,2001:db8::5/128")
    states = [ln for ln in fmt.render("showstates", east) if " ESTABLISHED_" in ln]
    assert [ln.split(" ESTABLISHED_")[0] for ln in states] == [
        '#1: "west-east"[1] 192.0.2.1:500', '#2: "west-east"[1] 192.0.2.1:500',
        '#3: "west-east"[2] 2001:db8:1:2::45:4500', '#4: "west-east"[2] 2001:db8:1:2::45:4500']
    assert all(" newest;" in ln for ln in states)
    assert fmt.instance_numbers(east) == {("west-east", 1): 1, ("west-east", 3): 2}
