"""auto=keep revival of a template instance through a NAT, with real peers (Libreswan
5.2's auto-keep-01-revival-through-nat-down-ikev2 and auto-keep-02-...-cleanfail).

East (pypluto) has ``conn road-east`` with ``left=%any`` and ``auto=keep``: kept up
once road brought it up.  Road (strongSwan 5.9.8 or pypluto) sits behind the lab's
MASQUERADE router (``test_roadwarrior._nat_client``), which here maps UDP to ports
40000-40999, so road's port 4500 is *not* the NAT's 4500 (Libreswan's test uses
``leftikeport=6666`` for the same reason)::

    road 198.51.100.2/25 -- 198.51.100.1 [west: NAT] 192.0.2.1:40xxx -- 192.0.2.2 east
                                                                        203.0.113.0/24

* ``down``: road takes the conn down with a Delete of its IKE SA and keeps it loaded;
  east initiates again at once to the NAT's mapping of road's port 4500 (from its own
  4500), road answers as responder, and the tunnel carries pings both ways again.
* ``gone``: road unloads its conn (pypluto ``ipsec auto --delete``; strongSwan
  ``--load-conns`` without it, then the Delete); east's one revival attempt fails
  (strongSwan answers NO_PROPOSAL_CHOSEN, pypluto drops it: retransmit timeout) and
  nothing is left: no IKE/Child SA, no route into the tunnel, no instance, no retry.
* two roads behind the one NAT address, one leaving: its instance alone is revived;
  two roads on their own addresses, both leaving: each revived Child SA carries its
  own road's traffic.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from lab import EAST_INNER, EAST_OUTER, EAST_SUBNET, Lab, require
from peers import PROPOSALS, PSK, Pypluto, StrongSwan, have_strongswan, swanctl_conf
from test_nat_many_clients import KEEPALIVE, Client, _nat_with_clients
from test_roadwarrior import CLIENT, NAT_OUT, _nat_client

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]

CONN = "road-east"
NAT_PORTS = (40000, 40999)  # the NAT's UDP source ports (never road's own 500/4500)
REVIVING = "connection is supposed to remain up; initiating it again"


def _conf(left: str, leftid: str, leftsubnet: str, auto: str) -> str:
    """ipsec.conf with conn road-east, road on the left (``leftsubnet``: whole lines);
    east's (auto=keep) gives a revival up after 2 s of retransmissions."""
    timeout = "\tretransmit-timeout=2s\n" if auto == "keep" else ""
    return f"""\
config setup
\tplutodebug=none

conn {CONN}
\tleft={left}
\tleftid={leftid}
{leftsubnet}\tright={EAST_OUTER}
\trightid=@east
\trightsubnet={EAST_SUBNET}
\tauthby=secret
{timeout}\tauto={auto}
"""


EAST_CONF = _conf("%any", "@road", f"\tleftsubnet={CLIENT}/32\n", "keep")
ROAD_CONF = _conf("%defaultroute", "@road", f"\tleftsubnet={CLIENT}/32\n", "add")

SECRETS = f'@road @east : PSK "{PSK}"\n'


class _Road:
    """Road's daemon, whichever it is: up, down (Delete, conn kept), gone (conn too)."""

    def __init__(self, lab: Lab, ns: str, kind: str) -> None:
        self.kind = kind
        self.sw: StrongSwan | None = None
        self.us: Pypluto | None = None
        if kind == "strongswan":
            self.sw = StrongSwan(lab, ns, "strongswan-road").start()
            self.sw.load(swanctl_conf(conn=CONN, local=CLIENT, remote=EAST_OUTER,
                                      local_id="road", remote_id="east",
                                      local_ts=f"{CLIENT}/32", remote_ts=EAST_SUBNET,
                                      proposal=PROPOSALS[0]))
        else:
            self.us = Pypluto(lab, ns, "pypluto-road").start(ROAD_CONF, secrets=SECRETS)

    def up(self) -> str:
        if self.sw is not None:
            r = self.sw.initiate(check=False)
            return r.stdout[-2000:] + r.stderr[-500:]
        assert self.us is not None
        return self.us.initiate(CONN)

    def established(self) -> bool:
        if self.sw is not None:
            return self.sw.established() is not None
        assert self.us is not None
        return self.us.child_established()

    def no_sas(self) -> bool:
        if self.sw is not None:
            return not self.sw.list_sas()
        assert self.us is not None
        return not self.us.sas()

    def down(self) -> None:
        if self.sw is not None:
            self.sw.terminate_ike(CONN)
            return
        assert self.us is not None
        r = self.us.down(CONN)
        assert r.returncode == 0, r.stdout + r.stderr

    def gone(self) -> None:
        """The conn goes, and its IKE SA with a Delete.  strongSwan unloads it first:
        east's revival answers the Delete at once and must find nothing to talk to."""
        if self.sw is not None:
            # swanctl 5.9.8 has no --unload-conn: --load-conns unloads what a file lacks
            assert self.sw.swanctl_file is not None
            empty = self.sw.swanctl_file.with_name("gone.conf")
            empty.write_text("connections {\n}\n")
            self.sw.swanctl("--load-conns", "--file", empty)
            self.sw.terminate_ike(CONN)
            return
        assert self.us is not None
        r = self.us.whack("--name", CONN, "--delete")
        assert r.returncode == 0, r.stdout + r.stderr


def _setup(lab: Lab, kind: str) -> tuple[str, Pypluto, _Road]:
    if kind == "strongswan":
        require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    road_ns = _nat_client(lab)
    # UDP leaves the NAT from other ports than road's: east must use the mapping's port
    lab.run(lab.west, ["iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-o", "west", "-p",
                       "udp", "-j", "MASQUERADE", "--to-ports", f"{NAT_PORTS[0]}-{NAT_PORTS[1]}"])
    east = Pypluto(lab, lab.east, "pypluto-east").start(EAST_CONF, secrets=SECRETS)
    road = _Road(lab, road_ns, kind)
    out = road.up()
    assert road.established(), out
    lab.wait_for(lambda: _established(east), 10, "east's Child SA")
    return road_ns, east, road


def _established(east: Pypluto) -> list[dict[str, Any]]:
    return [s for s in east.sas() if "ESTABLISHED" in s["state"]
            and any("ESTABLISHED" in c.get("state", "") for c in s.get("children", []))]


def _mapped_port(remote: str) -> int:
    host, port = remote.rsplit(":", 1)
    assert host == NAT_OUT, remote
    assert NAT_PORTS[0] <= int(port) <= NAT_PORTS[1], remote
    return int(port)


def _initiations(east: Pypluto) -> int:
    return len(re.findall(r"initiating IKEv2 connection", east.log.read_text()))


def _tunnel_passes(lab: Lab, road_ns: str) -> None:
    lab.wait_for(lambda: lab.ping(lab.east, CLIENT, count=1, timeout=1, src=EAST_INNER)[1] == 1,
                 10, "a first echo from east's subnet to road")
    assert lab.ping(lab.east, CLIENT, count=3, src=EAST_INNER) == (3, 3)
    assert lab.ping(road_ns, EAST_INNER, count=3, src=CLIENT) == (3, 3)


KINDS = [("strongswan", "strongSwan 5.9.8"), ("pypluto", "pypluto")]


@pytest.mark.parametrize(("kind", "peer"), KINDS, ids=[k for k, _ in KINDS])
def test_keep_revives_through_the_nat_mapping(lab: Lab, cell: Callable[..., None],
                                              kind: str, peer: str) -> None:
    """auto-keep-01: road's Delete makes east initiate again, to the NAT's public
    address and the mapped port of road's 4500; the new IKE SA is east's (initiator),
    still instance [1] of the template, and carries traffic both ways."""
    cell(peer=peer, case="auto-keep-revival-through-nat", role="both", proposal="defaults")
    road_ns, east, road = _setup(lab, kind)
    (first,) = _established(east)
    port = _mapped_port(first["remote"])
    assert first["nat_detected_remote"]
    _tunnel_passes(lab, road_ns)
    assert _initiations(east) == 0
    road.down()
    lab.wait_for(lambda: REVIVING in east.log.read_text(), 15, "east's revival")
    revived = lab.wait_for(lambda: [s for s in _established(east)
                                    if s["serial"] != first["serial"]], 20,
                           "east's revived IKE SA and Child SA")
    assert len(_established(east)) == 1, east.sas()
    (ike,) = revived
    # to the same mapping (RFC 7296 §2.23: the port the peer's packets came from)
    assert ike["remote"] == f"{NAT_OUT}:{port}", ike
    assert ike["local"] == f"{EAST_OUTER}:4500", ike
    assert _initiations(east) == 1
    lab.wait_for(road.established, 10, "road's Child SA as responder")
    _tunnel_passes(lab, road_ns)
    status = east.status()
    assert f'"{CONN}"[1] {NAT_OUT}' in status, status[-3000:]
    assert f'"{CONN}"[2]' not in status, status[-3000:]
    assert "internal error" not in east.log.read_text()
    cell(note=f"east revived through {NAT_OUT}:{port} (road's 4500 behind MASQUERADE), "
              "tunnel passes pings both ways again")


@pytest.mark.parametrize(("kind", "peer"), KINDS, ids=[k for k, _ in KINDS])
def test_keep_revival_fails_cleanly_when_road_is_gone(lab: Lab, cell: Callable[..., None],
                                                     kind: str, peer: str) -> None:
    """auto-keep-02: road deletes its conn; east's one revival attempt is refused
    (NO_PROPOSAL_CHOSEN) or times out; nothing is left on east (no SA, no route into
    the tunnel, no instance) and it does not try again."""
    cell(peer=peer, case="auto-keep-revival-through-nat-cleanfail", role="both",
         proposal="defaults")
    road_ns, east, road = _setup(lab, kind)
    (first,) = _established(east)
    _mapped_port(first["remote"])
    _tunnel_passes(lab, road_ns)
    assert east.routes_to(CLIENT)
    road.gone()
    lab.wait_for(lambda: REVIVING in east.log.read_text(), 15, "east's revival")
    lab.wait_for(lambda: "IKE SA establishment failed" in east.log.read_text(), 20,
                 "east's revival failing")
    lab.wait_for(lambda: not east.sas(), 10, "east without SAs")
    lab.wait_for(road.no_sas, 10, "road without SAs")
    # a retry would be initiated with the failure (common.fail); a control round trip
    # after it shows the daemon has done all it had to do with that failure
    status = east.status()
    assert _initiations(east) == 1, east.log.read_text()[-3000:]
    assert not east.sas()
    assert not east.routes_to(CLIENT), east.routes_to(CLIENT)
    assert f'"{CONN}"[' not in status, status[-3000:]
    assert lab.ping(lab.east, CLIENT, count=1, timeout=1, src=EAST_INNER)[1] == 0
    assert "internal error" not in east.log.read_text()
    cell(note="road gone: east's one revival attempt failed, nothing left, no retry")


TWO_EAST_CONF = _conf("%any", "%any", "\tleftsubnet=198.51.100.0/24\n\tnarrowing=yes\n", "keep")


def _strongswan_road_up(lab: Lab, road: Client, charon_extra: str = "") -> StrongSwan:
    """A strongSwan road of ``_nat_with_clients`` up with east (its own /32 to east's
    subnet)."""
    sw = StrongSwan(lab, road.ns, "strongswan-road", charon_extra=charon_extra).start()
    sw.load(swanctl_conf(conn=CONN, local=road.addr, remote=EAST_OUTER, local_id=road.ident,
                         remote_id="east", local_ts=f"{road.addr}/32", remote_ts=EAST_SUBNET,
                         proposal=PROPOSALS[0]))
    r = sw.initiate(check=False)
    assert sw.established() is not None, r.stdout[-2000:]
    return sw


def test_keep_revives_one_of_two_roads_behind_one_nat(lab: Lab,
                                                      cell: Callable[..., None]) -> None:
    """Two roads (strongSwan 5.9.8 and pypluto) behind one MASQUERADE address, each an
    instance of the same template (leftsubnet= the roads' LAN, narrowed to each road's
    /32).  The strongSwan road's Delete revives *its* instance, to its own mapping,
    though the pypluto road is still up from the same public address (as Libreswan,
    where every instance is revived on its own; we revived none while another peer of
    the template had an IKE SA from that address), and again when its revived IKE SA
    is deleted in turn (that one, a bound copy, was revived only while the template had
    no IKE SA at all); the other road's IKE SA is left alone throughout.

    IKE only: the two Child SAs of a template with a fixed leftsubnet= share one reqid
    (ike/child.py new_child), so east's userspace plane sends both roads' traffic into
    the newest one; not a revival matter."""
    cell(peer="strongSwan 5.9.8", case="auto-keep-revival-two-roads-one-nat", role="both",
         proposal="defaults")
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    a, b = _nat_with_clients(lab, ["strongswan", "pypluto"])
    east = Pypluto(lab, lab.east, "pypluto-east").start(
        TWO_EAST_CONF, secrets=f'@east %any : PSK "{PSK}"\n')
    sw = _strongswan_road_up(lab, a, charon_extra=f"keep_alive = {KEEPALIVE}s")
    us = Pypluto(lab, b.ns, "pypluto-road").start(
        ROAD_CONF.replace("\tplutodebug=none\n", f"\tkeep-alive={KEEPALIVE}\n")
        .replace("@road", f"@{b.ident}").replace(CLIENT, b.addr),
        secrets=f'@{b.ident} @east : PSK "{PSK}"\n')
    out = us.initiate(CONN)
    assert us.child_established(), out
    sas = lab.wait_for(lambda: len(_established(east)) == 2 and _established(east), 10,
                       "both roads' Child SAs on east")
    by_id = {s["remote_id"]: s for s in sas}
    sa_a, sa_b = by_id[f"@{a.ident}"], by_id[f"@{b.ident}"]
    assert sa_a["remote"].split(":")[0] == sa_b["remote"].split(":")[0] == NAT_OUT
    assert sa_a["remote"] != sa_b["remote"]
    spis_b = us.ike_spis()
    for n in (1, 2):
        last = {s["serial"] for s in _established(east) if s["remote_id"] == f"@{a.ident}"}
        sw.terminate_ike(CONN)
        lab.wait_for(lambda n=n: east.log.read_text().count("received Delete SA payload") == n,
                     10, f"east's Delete {n} from the strongSwan road")
        # the revival is decided with the Delete (ike_delete): a control round trip
        # after it finds it logged
        east.status()
        assert east.log.read_text().count(REVIVING) == n, east.log.read_text()[-3000:]
        revived = lab.wait_for(lambda last=last: [
            s for s in _established(east) if s["remote_id"] == f"@{a.ident}"
            and s["serial"] not in last], 20, f"east's revival {n} of the strongSwan road")
        assert revived[0]["remote"] == sa_a["remote"], revived
        assert _initiations(east) == n, east.log.read_text()[-3000:]
        lab.wait_for(lambda: sw.established() is not None, 10, "the strongSwan road's Child SA")
        # the other road: the same IKE SA throughout
        (still,) = [s for s in _established(east) if s["remote_id"] == f"@{b.ident}"]
        assert still["serial"] == sa_b["serial"]
        assert us.ike_spis() == spis_b
    assert "internal error" not in east.log.read_text()
    cell(note="two roads behind one NAT address: the one that left is revived to its "
              "own mapping, twice; the other is left alone")


def test_two_revived_roads_keep_their_own_child_sas(lab: Lab,
                                                   cell: Callable[..., None]) -> None:
    """Two roads (strongSwan 5.9.8 and pypluto) on public addresses (no NAT: the lab's
    router only routes), one template without leftsubnet= (each road's own address is
    its selector, so each instance has a reqid of its own).  Both leave and both are
    revived; each revived Child SA must still carry its own road's traffic: the bound
    copies of the template the revival initiates must not share one reqid (ike/child.py
    new_child), or the newer Child SA's policy takes the other road's traffic."""
    cell(peer="strongSwan 5.9.8", case="auto-keep-revival-two-roads", role="both",
         proposal="defaults")
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    a, b = _nat_with_clients(lab, ["strongswan", "pypluto"])
    lab.run(lab.west, ["iptables", "-t", "nat", "-D", "POSTROUTING", "-o", "west", "-j",
                       "MASQUERADE"])
    lab.run(lab.east, ["ip", "route", "add", "198.51.100.0/24", "via", NAT_OUT])
    east = Pypluto(lab, lab.east, "pypluto-east").start(
        TWO_EAST_CONF.replace("\tleftsubnet=198.51.100.0/24\n\tnarrowing=yes\n", ""),
        secrets=f'@east %any : PSK "{PSK}"\n')
    assert "leftsubnet" not in (east.dir / "ipsec.conf").read_text()
    sw = _strongswan_road_up(lab, a)
    us = Pypluto(lab, b.ns, "pypluto-road").start(
        ROAD_CONF.replace("@road", f"@{b.ident}").replace(f"\tleftsubnet={CLIENT}/32\n", ""),
        secrets=f'@{b.ident} @east : PSK "{PSK}"\n')
    out = us.initiate(CONN)
    assert us.child_established(), out
    lab.wait_for(lambda: len(_established(east)) == 2, 10, "both roads' Child SAs on east")
    for c in (a, b):
        lab.wait_for(lambda c=c: lab.ping(lab.east, c.addr, count=1, timeout=1,
                                          src=EAST_INNER)[1] == 1, 10, f"an echo to {c.ident}")
    before = {s["serial"] for s in _established(east)}
    sw.terminate_ike(CONN)
    r = us.down(CONN)
    assert r.returncode == 0, r.stdout + r.stderr
    lab.wait_for(lambda: len([s for s in _established(east) if s["serial"] not in before]) == 2,
                 20, "both roads revived")
    assert _initiations(east) == 2
    lab.wait_for(lambda: sw.established() is not None and us.child_established(), 10,
                 "both roads' Child SAs as responders")
    for c in (a, b):
        lab.wait_for(lambda c=c: lab.ping(lab.east, c.addr, count=1, timeout=1,
                                          src=EAST_INNER)[1] == 1, 10,
                     f"an echo to {c.ident} after the revival")
        assert lab.ping(c.ns, EAST_INNER, count=3, src=c.addr) == (3, 3), c.ident
    cell(note="two roads revived, each revived Child SA carries its own road's traffic")
