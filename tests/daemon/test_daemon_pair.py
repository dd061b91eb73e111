"""Two of our daemons in two namespaces bring up a PSK tunnel, driven by whack.

west 192.0.2.1 (protects 198.51.100.0/24) <-veth-> east 192.0.2.2 (203.0.113.0/24)
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil

import pytest
from plutoproc import NetNS, Pluto, sh, wait_for

pytestmark = pytest.mark.netns
_n = itertools.count(1)

CONF = """\
conn west-east
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tleftsubnet=198.51.100.0/24
\tright=192.0.2.2
\trightid=@east
\trightsubnet=203.0.113.0/24
\tauto={auto}
"""
SECRETS = '@west @east : PSK "pair-test-psk-0123456789abcdef0123"\n'


@pytest.fixture
def pair(tmp_path, make_pluto, netns):
    east_ns = NetNS()
    n = next(_n)
    vw, ve = f"ppw{os.getpid()}{n}"[:15], f"ppe{os.getpid()}{n}"[:15]
    try:
        sh("ip", "link", "add", vw, "netns", netns.name, "type", "veth", "peer", "name", ve,
           "netns", east_ns.name)
        netns.run("ip", "addr", "add", "192.0.2.1/24", "dev", vw)
        netns.run("ip", "link", "set", vw, "up")
        east_ns.run("ip", "addr", "add", "192.0.2.2/24", "dev", ve)
        east_ns.run("ip", "link", "set", ve, "up")
        secrets = tmp_path / "ipsec.secrets"
        secrets.write_text(SECRETS)
        secrets.chmod(0o600)

        def start(side: str, ns: NetNS, auto: str, *extra: str, conf_text: str = CONF,
                  psk: str | None = None) -> Pluto:
            conf = tmp_path / f"{side}.conf"
            conf.write_text(conf_text.format(auto=auto))
            sec = secrets
            if psk is not None:
                sec = tmp_path / f"{side}.secrets"
                sec.write_text(f'@west @east : PSK "{psk}"\n')
                sec.chmod(0o600)
            p = make_pluto(side, ns)
            p.start("--nofork", "--logfile", str(p.dir / "log"), "--config", str(conf),
                    "--secretsfile", str(sec), *extra)
            p.wait_ready()
            return p

        yield start, netns, east_ns
    finally:
        east_ns.delete()  # deleting a namespace removes its veth end (and the peer)


def child_sas(p: Pluto) -> list[dict]:
    data = json.loads(p.whack("--trafficstatus", "--json").stdout)
    return data["child_sas"]


def userspace_udp_tunnel(pair) -> tuple[Pluto, Pluto]:  # type: ignore[no-untyped-def]
    """West and east on the userspace plane with ESP in UDP (encapsulation=yes), and
    west-east initiated by west: (west, east)."""
    start, w_ns, e_ns = pair
    conf = CONF + "\tencapsulation=yes\n"
    east = start("east", e_ns, "add", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    return west, east


def test_psk_tunnel_initiate_status_down(pair):
    start, _w, _e = pair
    east = start("east", _e, "add", "--use-none")
    west = start("west", _w, "add", "--use-none", "--log-no-audit")
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert '"west-east" #1: initiating IKEv2 connection' in r.stdout
    # audit records: on by default (east), off with --log-no-audit (west)
    wait_for(lambda: "AUDIT: op=start type=IPSEC_SA" in (east.dir / "log").read_text(), 10,
             "east's audit record")
    assert "AUDIT:" not in (west.dir / "log").read_text()
    assert re.search(r'"west-east" #\d+: established Child SA', r.stdout)
    for p, peer_id in ((west, "@east"), (east, "@west")):
        st = p.whack("--status").stdout
        assert "ESTABLISHED_IKE_SA" in st and "ESTABLISHED_CHILD_SA" in st
        assert "IPsec SAs: total(1), authenticated(1), anonymous(0)" in st
        assert re.search(r"Total IPsec connections: loaded 1, active 1", st)
        tr = p.whack("--trafficstatus").stdout.splitlines()
        assert len(tr) == 1
        assert re.fullmatch(rf"#\d+: \"west-east\", type=ESP, add_time=\d+, inBytes=0, "
                            rf"outBytes=0, maxBytes=2\^63B, id='{peer_id}'", tr[0]), tr[0]
    w, e = child_sas(west)[0], child_sas(east)[0]
    ws = json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"][0]["children"][0]
    es = json.loads(east.whack("--showstates", "--json").stdout)["ike_sas"][0]["children"][0]
    assert ws["spi_in"] == es["spi_out"] and ws["spi_out"] == es["spi_in"]
    assert w["conn"] == e["conn"] == "west-east"
    # --rekey-child / --rekey-ike: new SAs with new serials replace the old ones
    first_child = w["serial"]
    assert west.whack("--name", "west-east", "--rekey-child").returncode == 0
    wait_for(lambda: [c["serial"] for c in child_sas(west)] not in ([], [first_child]), 20,
             "a rekeyed Child SA")
    wait_for(lambda: len(child_sas(west)) == 1, 20, "the old Child SA to go")
    def ike_serials() -> set[int]:
        data = json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"]
        return {i["serial"] for i in data if "ESTABLISHED" in i["state"]}

    old_ike = ike_serials()
    assert west.whack("--name", "west-east", "--rekey-ike").returncode == 0
    wait_for(lambda: ike_serials() and ike_serials().isdisjoint(old_ike), 20,
             "a rekeyed IKE SA to replace the old one")
    # --down deletes the SAs on both ends but keeps the connection
    assert west.whack("--name", "west-east", "--down").returncode == 0
    wait_for(lambda: not child_sas(east), 20, "east to see the delete")
    assert not child_sas(west)
    assert '"west-east":' in west.whack("--status").stdout


def test_auto_start_statsbin_and_shutdown_deletes(pair, tmp_path):
    start, _w, _e = pair
    events = tmp_path / "events"
    statsbin = tmp_path / "statsbin.sh"
    statsbin.write_text(f'#!/bin/sh\necho "$PLUTO_EVENT $PLUTO_CONNECTION" >> {events}\n')
    statsbin.chmod(0o755)
    east = start("east", _e, "add", "--use-none")
    west = start("west", _w, "start", "--use-none", "--statsbin", str(statsbin))
    wait_for(lambda: child_sas(east) and child_sas(west), 30, "auto=start tunnel")
    wait_for(lambda: events.exists() and "child-established west-east" in events.read_text(),
             20, "statsbin to run")
    import signal

    assert west.proc is not None
    west.proc.send_signal(signal.SIGTERM)  # orderly shutdown: SAs deleted first
    assert west.proc.wait(30) == 0
    wait_for(lambda: not child_sas(east), 20, "east to see west's deletes")
    log = (west.dir / "log").read_text()
    assert "deleting Child SA" in log and "pluto exiting with status 0" in log


def test_userspace_plane_ping(pair):
    start, w_ns, e_ns = pair
    for ns, addr in ((w_ns, "198.51.100.1/32"), (e_ns, "203.0.113.1/32")):
        ns.run("ip", "addr", "add", addr, "dev", "lo")
    conf = CONF + "\tencapsulation=yes\n"  # ESP-in-UDP on the daemon's 4500 socket
    east = start("east", e_ns, "add", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    # unlisten/listen keeps the backend's ESP-in-UDP socket alive
    assert west.whack("--unlisten").returncode == 0
    assert "interface " not in west.whack("--status").stdout
    assert west.whack("--listen").returncode == 0
    assert "192.0.2.1:UDP/4500 (NAT)" in west.whack("--status").stdout
    ping = w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", "198.51.100.1",
                    "203.0.113.1", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    wait_for(lambda: child_sas(west)[0]["out_bytes"] > 0, 10, "out counter")
    w = child_sas(west)[0]
    e = child_sas(east)[0]
    assert w["out_packets"] >= 3 and e["in_packets"] >= 3
    assert "using kernel interface: userspace" in west.whack("--status").stdout
    ike = json.loads(west.whack("--showstates", "--json").stdout)["ike_sas"][0]
    assert ike["children"][0]["encapsulated"] and ike["local"].endswith(":4500")


def test_initiate_failures_exit_codes(pair):
    """PSK mismatch: rc 56 (negotiation failed); no peer: rc 51 (no retransmission)."""
    start, _w, _e = pair
    conf = CONF + """\tretransmit-timeout=3s

conn west-nowhere
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tright=192.0.2.3
\trightid=@east
\tretransmit-timeout=3s
\tauto=add
"""
    start("east", _e, "add", "--use-none", conf_text=conf, psk="east-psk-0123456789abcdef0123456")
    west = start("west", _w, "add", "--use-none", conf_text=conf,
                 psk="west-psk-0123456789abcdef0123456")
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 56, r.stdout
    assert "AUTHENTICATION_FAILED" in r.stdout and "established" not in r.stdout
    r = west.whack("--name", "west-nowhere", "--initiate")
    assert r.returncode == 51, r.stdout
    assert "retransmit" in r.stdout


def test_a_peer_written_as_a_host_name(pair):
    """right=NAME is resolved when the conn is loaded (getaddrinfo: here the namespace's
    own /etc/netns/NAME/hosts) and the tunnel comes up to that address; a name that does
    not resolve is said at load, is never a wildcard for responding, and ``ipsec up``
    tries it again and says why it cannot start."""
    start, w_ns, e_ns = pair
    etc = f"/etc/netns/{w_ns.name}"
    os.makedirs(etc, exist_ok=True)
    try:
        with open(f"{etc}/hosts", "w", encoding="ascii") as fh:
            fh.write("127.0.0.1 localhost\n2001:db8::2 east.pypluto.test\n"
                     "192.0.2.2 east.pypluto.test\n")
        named = CONF.replace("right=192.0.2.2", "right=east.pypluto.test") + \
            CONF.replace("west-east", "lost").replace("right=192.0.2.2",
                                                      "right=nowhere.pypluto.invalid")
        east = start("east", e_ns, "add", "--use-none")
        west = start("west", w_ns, "add", "--use-none", conf_text=named)
        log = west.log()
        # an address of left='s family, though the name has an IPv6 one first
        assert '"west-east": right=east.pypluto.test is 192.0.2.2' in log, log
        assert '"lost": right=nowhere.pypluto.invalid does not resolve' in log, log
        r = west.whack("--name", "west-east", "--initiate")
        assert r.returncode == 0 and re.search(r"established Child SA", r.stdout), r.stdout
        assert child_sas(east) and child_sas(east)[0]["conn"] == "west-east"
        r = west.whack("--name", "lost", "--initiate")
        assert r.returncode != 0
        assert "the peer's host name nowhere.pypluto.invalid does not resolve" in r.stdout, \
            r.stdout
        assert west.log().count("right=nowhere.pypluto.invalid does not resolve") == 2
    finally:
        shutil.rmtree(etc, ignore_errors=True)
