"""Two plutos with a NAT between them: float to 4500 with the non-ESP marker, and NAT-T
keepalives every --keep-alive seconds (RFC 3948 §2.2, §2.3; RFC 7296 §2.23).

west 198.51.100.2 --- 198.51.100.1 [nat, MASQUERADE] 192.0.2.1 --- 192.0.2.2 east
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
from plutoproc import NetNS, root_conftest, sh, wait_for

pytestmark = pytest.mark.netns

WEST = "conn rw\n\tauthby=secret\n\tleft=198.51.100.2\n\tleftid=@west\n\tright=192.0.2.2\n" \
       "\trightid=@east\n\tauto=add\n"
# east grants west's inner address (its TSi behind the NAT) only because
# virtual-private= allows it (Libreswan's rule; without it: TS_UNACCEPTABLE, issue 12)
EAST = "config setup\n\tvirtual-private=%v4:198.51.100.0/24\n\n" \
       "conn rw\n\tauthby=secret\n\tleft=%any\n\tleftid=@west\n\tright=192.0.2.2\n" \
       "\trightid=@east\n\tauto=add\n"


def test_nat_traversal_and_keepalives(make_pluto, netns, tmp_path):
    root_conftest().require(shutil.which("iptables") is not None, "iptables for the NAT namespace")
    west_ns, nat, east_ns = netns, NetNS(), NetNS()
    pid = os.getpid()
    a, b, c, d = (f"pp{x}{pid}"[:15] for x in "abcd")
    try:
        sh("ip", "link", "add", a, "netns", west_ns.name, "type", "veth", "peer", "name", b,
           "netns", nat.name)
        sh("ip", "link", "add", c, "netns", nat.name, "type", "veth", "peer", "name", d,
           "netns", east_ns.name)
        for ns, dev, addr in ((west_ns, a, "198.51.100.2/24"), (nat, b, "198.51.100.1/24"),
                              (nat, c, "192.0.2.1/24"), (east_ns, d, "192.0.2.2/24")):
            ns.run("ip", "addr", "add", addr, "dev", dev)
            ns.run("ip", "link", "set", dev, "up")
        west_ns.run("ip", "route", "add", "default", "via", "198.51.100.1")
        nat.run("sysctl", "-qw", "net.ipv4.ip_forward=1")
        nat.run("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", c, "-j", "MASQUERADE")
        secrets = tmp_path / "ipsec.secrets"
        secrets.write_text('@west @east : PSK "nat-test-psk-0123456789abcdef01234"\n')
        secrets.chmod(0o600)
        plutos = {}
        for side, ns, conf, extra in (("east", east_ns, EAST, ("--debug", "tmi")),
                                      ("west", west_ns, WEST, ("--keep-alive", "1"))):
            (tmp_path / f"{side}.conf").write_text(conf)
            p = make_pluto(side, ns)
            p.start("--nofork", "--use-none", "--logfile", str(p.dir / "log"), "--config",
                    str(tmp_path / f"{side}.conf"), "--secretsfile", str(secrets), *extra)
            p.wait_ready()
            plutos[side] = p
        west, east = plutos["west"], plutos["east"]
        r = west.whack("--name", "rw", "--initiate")
        assert r.returncode == 0, r.stdout + west.log()
        assert "NAT detected" in r.stdout
        ike = json.loads(east.whack("--showstates", "--json").stdout)["ike_sas"][0]
        assert ike["remote"] == "192.0.2.1:4500" and ike["local"] == "192.0.2.2:4500"
        assert ike["nat_detected_remote"] and ike["children"][0]["encapsulated"]
        # east logs (debug class tmi) the one-byte keepalives west sends every second
        log = east.dir / "log"
        wait_for(lambda: log.read_text().count("| NAT-T keepalive from 192.0.2.1:4500") >= 2,
                 20, "two NAT-T keepalives")
    finally:
        nat.delete()
        east_ns.delete()
