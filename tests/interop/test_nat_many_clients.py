"""Several road warriors behind one masquerading NAT (RFC 7296 §2.23, RFC 3948 §4):
strongSwan 5.9.8 and pypluto clients share the NAT's public address 192.0.2.1 (each
with its own port) and connect to one pypluto gateway with an address pool.

The lab's west namespace becomes the NAT router (iptables MASQUERADE); each client
is a namespace of its own behind it, on its own /30::

    client i 198.51.100.(4i+2)/30 -- 198.51.100.(4i+1) [west: NAT] 192.0.2.1 -- 192.0.2.2
                                                                   gateway, 203.0.113.0/24

Each client gets a different pool address, all ping the gateway's subnet at the same
time, the NAT's UDP mappings outlive a quiet spell longer than the NAT's UDP timeout
(shortened to 5 s in the NAT namespace; the clients send NAT-T keepalives every 2 s),
and one client leaving (Delete) leaves the others' SAs, leases and traffic alone.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from lab import EAST_INNER, EAST_OUTER, Lab, Spawned, parse_ping, require
from peers import EAST_ID, PSK, Pypluto, StrongSwan, have_strongswan
from rwconf import psk_rw_swanctl

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(240)]

NAT_OUT = "192.0.2.1"
POOL = "198.51.100.200-198.51.100.210"
GW_SUBNET = "203.0.113.0/24"
NAT_UDP_TIMEOUT = 5  # seconds, in the NAT namespace only
KEEPALIVE = 2  # seconds, on every client

GATEWAY_CONF = f"""\
config setup
\tuniqueids=yes

conn rw
\tauthby=secret
\tleft={EAST_OUTER}
\tleftid=@{EAST_ID}
\tleftsubnet={GW_SUBNET}
\tleftmodecfgserver=yes
\tright=%any
\trightid=%any
\trightaddresspool={POOL}
\trightmodecfgclient=yes
\tauto=add
"""
GATEWAY_SECRETS = f'@{EAST_ID} %any : PSK "{PSK}"\n'


@dataclass
class Client:
    kind: str  # "strongswan" | "pypluto"
    ns: str
    addr: str
    ident: str
    daemon: StrongSwan | Pypluto | None = None
    lease: str = ""


def _nat_with_clients(lab: Lab, kinds: list[str]) -> list[Client]:
    """West becomes a MASQUERADE router; one namespace per client behind it."""
    require(shutil.which("iptables") is not None, "iptables for the NAT namespace")
    lab.run(lab.west, ["ip", "link", "del", "inner0"], check=False)  # 198.51.100.1/24 there
    lab.run(lab.west, ["ip", "addr", "flush", "dev", "lo"], check=False)
    lab.run(lab.west, ["ip", "link", "set", "lo", "up"])
    out: list[Client] = []
    for i, kind in enumerate(kinds):
        ns = f"ppm{os.getpid()}{lab.west[-3:]}{i}"[:15]
        lab.run(None, ["ip", "netns", "add", ns])
        lab._namespaces.append(ns)  # the lab deletes it with the others
        lab.run(ns, ["ip", "link", "set", "lo", "up"])
        dev = f"lan{i}"
        lab.run(None, ["ip", "link", "add", "lan", "netns", ns, "type", "veth", "peer",
                       "name", dev, "netns", lab.west])
        inside, router = f"198.51.100.{4 * i + 2}", f"198.51.100.{4 * i + 1}"
        lab.run(ns, ["ip", "addr", "add", f"{inside}/30", "dev", "lan"])
        lab.run(lab.west, ["ip", "addr", "add", f"{router}/30", "dev", dev])
        lab.run(ns, ["ip", "link", "set", "lan", "up"])
        lab.run(lab.west, ["ip", "link", "set", dev, "up"])
        lab.run(ns, ["ip", "route", "add", "default", "via", router])
        out.append(Client(kind, ns, inside, f"rw{i + 1}.example"))
    lab.run(lab.west, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for key in ("nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"):
        lab.run(lab.west, ["sysctl", "-qw", f"net.netfilter.{key}={NAT_UDP_TIMEOUT}"])
    lab.run(lab.west, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "west", "-j",
                       "MASQUERADE"])
    for c in out:
        lab.wait_for(lambda c=c: lab.ping(c.ns, EAST_OUTER, count=1, timeout=1)[1] == 1, 10,
                     f"{c.ns} reaches the gateway through the NAT")
    return out


def _pypluto_conf(ident: str) -> str:
    return f"""\
config setup
\tkeep-alive={KEEPALIVE}

conn rw
\tauthby=secret
\tleft=%defaultroute
\tleftid=@{ident}
\tleftmodecfgclient=yes
\tright={EAST_OUTER}
\trightid=@{EAST_ID}
\trightsubnet={GW_SUBNET}
\tauto=add
"""


def _connect(lab: Lab, c: Client) -> None:
    if c.kind == "strongswan":
        sw = StrongSwan(lab, c.ns, f"strongswan-{c.ident.split('.')[0]}",
                        charon_extra=f"keep_alive = {KEEPALIVE}s").start()
        c.daemon = sw
        sw.load(psk_rw_swanctl(client_id=c.ident, gateway=EAST_OUTER, subnet=GW_SUBNET,
                                   role="client"))
        r = sw.initiate(check=False)
        assert r.returncode == 0 and "installing new virtual IP" in r.stdout, r.stdout[-2000:]
    else:
        us = Pypluto(lab, c.ns, f"pypluto-{c.ident.split('.')[0]}").start(
            _pypluto_conf(c.ident), secrets=f'@{c.ident} @{EAST_ID} : PSK "{PSK}"\n')
        c.daemon = us
        out = us.initiate("rw")
        assert us.child_established(), out + us.log.read_text()[-3000:]


def _leases(gw: Pypluto) -> dict[str, str]:
    js = json.loads(gw.whack("--status", "--json").stdout)
    return {le["client_id"]: le["address"] for le in js["leases"]}


def _pings_at_once(lab: Lab, clients: list[Client], count: int = 20) -> dict[str, tuple[int, int]]:
    """Every client pings the gateway's subnet from its lease, all at the same time."""
    running: list[tuple[Client, Spawned]] = []
    for c in clients:
        log = lab.workdir / f"ping-{c.ident}-{time.monotonic_ns()}.log"
        p = lab.spawn(c.ns, ["ping", "-n", "-i", "0.2", "-c", count, "-W", "2", "-I", c.lease,
                             EAST_INNER], log, name=f"ping-{c.ident}")
        p.expect_alive = False
        running.append((c, p))
    out = {}
    for c, p in running:
        p.proc.wait(60)
        out[c.ident] = parse_ping(p.logfile.read_text())
    return out


@pytest.mark.parametrize("kinds", [["strongswan", "strongswan", "pypluto"],
                                   ["pypluto", "pypluto"]],
                         ids=["2strongswan+1pypluto", "2pypluto"])
def test_clients_behind_one_nat(lab: Lab, cell: Callable[..., None], kinds: list[str]) -> None:
    peer = "strongSwan 5.9.8" if "strongswan" in kinds else "pypluto"
    cell(peer=peer, case=f"roadwarrior-nat-{len(kinds)}clients", role="responder",
         proposal="defaults")
    if "strongswan" in kinds:
        require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl)")
    clients = _nat_with_clients(lab, kinds)
    gw = Pypluto(lab, lab.east, "pypluto-gw").start(GATEWAY_CONF, secrets=GATEWAY_SECRETS)
    for c in clients:
        _connect(lab, c)
    lab.wait_for(lambda: len(_leases(gw)) == len(clients), 15, "a lease for every client")
    leases = _leases(gw)
    for c in clients:
        c.lease = leases[f"@{c.ident}"]
    assert len({c.lease for c in clients}) == len(clients), leases
    # one IKE SA per client, all from the NAT's one public address, each on its own port
    sas = [s for s in gw.sas() if "ESTABLISHED" in s["state"]]
    assert len(sas) == len(clients), sas
    hosts = {s["remote"].rsplit(":", 1)[0] for s in sas}
    ports = {s["remote"].rsplit(":", 1)[1] for s in sas}
    assert hosts == {NAT_OUT} and len(ports) == len(clients), [s["remote"] for s in sas]
    assert all(s["nat_detected_remote"] for s in sas)
    for c in clients:
        lab.wait_for(lambda c=c: lab.ping(c.ns, EAST_INNER, count=1, timeout=1,
                                          src=c.lease)[1] == 1, 10, f"a first echo from {c.ident}")
    got = _pings_at_once(lab, clients)
    assert all(sent == recv == 20 for sent, recv in got.values()), got
    # quiet for three NAT timeouts: only keepalives keep the mappings; then the gateway
    # reaches every client first (its ESP-in-UDP needs the client's mapping)
    time.sleep(3 * NAT_UDP_TIMEOUT)
    for c in clients:
        assert lab.ping(lab.east, c.lease, count=3, src=EAST_INNER) == (3, 3), c.ident
    # the first client leaves; the others keep their SAs, leases and traffic
    first, rest = clients[0], clients[1:]
    if isinstance(first.daemon, StrongSwan):
        first.daemon.terminate_ike("rw")
    else:
        assert first.daemon is not None
        r = first.daemon.down("rw")
        assert r.returncode == 0, r.stdout + r.stderr
    lab.wait_for(lambda: f"@{first.ident}" not in _leases(gw), 15, "the first client's lease freed")
    assert _leases(gw) == {f"@{c.ident}": c.lease for c in rest}
    assert len([s for s in gw.sas() if "ESTABLISHED" in s["state"]]) == len(rest)
    got = _pings_at_once(lab, rest)
    assert all(sent == recv == 20 for sent, recv in got.values()), got
    for c in rest:
        assert lab.ping(lab.east, c.lease, count=3, src=EAST_INNER) == (3, 3), c.ident
    cell(note=f"{len(clients)} clients ({', '.join(kinds)}) behind one MASQUERADE address: "
              "unique leases, concurrent pings, mappings kept by keepalives, one left")
