"""Selector hijack through the daemon (issue 12; RFC 7296 §2.9, §2.23).

The attacker is a pypluto daemon whose IKE_AUTH is hand-shaped by its conn: it
fakes NAT detection (``encapsulation=yes`` sends a NAT_DETECTION_SOURCE_IP hash
that cannot match) and asks for TSi=192.0.2.200/32, an address that is not its
own.  The responder, a real ``pluto`` with a host-to-host conn on the userspace
plane, must refuse the Child SA (TS_UNACCEPTABLE) and route nothing for
192.0.2.200 into its tunnel.

attacker 192.0.2.1 (claims 192.0.2.200) <-veth-> east 192.0.2.2
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator

import pytest
from plutoproc import NetNS, Pluto, sh, wait_for

pytestmark = pytest.mark.netns
_n = itertools.count(1)

ATTACKER = """\
conn h2h
\tauthby=secret
\tleft=192.0.2.1
\tleftid=@west
\tleftsubnet=192.0.2.200/32
\tright=192.0.2.2
\trightid=@east
\tencapsulation=yes
\tauto=add
"""
EAST = """\
conn h2h
\tauthby=secret
\tleft={left}
\tleftid=@west
\tright=192.0.2.2
\trightid=@east
\tauto=add
"""
SECRETS = '@west @east : PSK "hijack-test-psk-0123456789abcdef012"\n'


@pytest.fixture
def two(tmp_path, make_pluto, netns) -> Iterator:  # noqa: ANN001
    east_ns = NetNS()
    n = next(_n)
    vw, ve = f"hjw{os.getpid()}{n}"[:15], f"hje{os.getpid()}{n}"[:15]
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

        def start(side: str, ns: NetNS, conf_text: str, *extra: str) -> Pluto:
            conf = tmp_path / f"{side}.conf"
            conf.write_text(conf_text)
            p = make_pluto(side, ns)
            p.start("--nofork", "--logfile", str(p.dir / "log"), "--config", str(conf),
                    "--secretsfile", str(secrets), *extra)
            p.wait_ready()
            return p

        yield start, netns, east_ns
    finally:
        east_ns.delete()


def _child_sas(p: Pluto) -> list[dict]:
    return json.loads(p.whack("--trafficstatus", "--json").stdout)["child_sas"]


@pytest.mark.parametrize("left", ["192.0.2.1", "%any"])
def test_faked_nat_and_foreign_tsi_get_no_child_sa(two, left: str) -> None:  # noqa: ANN001
    start, w_ns, e_ns = two
    east = start("east", e_ns, EAST.format(left=left), "--use-userspace")
    attacker = start("west", w_ns, ATTACKER, "--use-none")
    r = attacker.whack("--name", "h2h", "--initiate")
    out = r.stdout + attacker.log()
    assert "TS_UNACCEPTABLE" in out, out
    # the IKE SA itself is up (the PSK is right); only the Child SA is refused
    wait_for(lambda: "ESTABLISHED_IKE_SA" in east.whack("--status").stdout, 10,
             "east's IKE SA")
    ike = json.loads(east.whack("--showstates", "--json").stdout)["ike_sas"][0]
    assert ike["nat_detected_remote"]  # the faked NAT detection was believed
    elog = east.log()
    assert "192.0.2.200/32" in elog and "do not match" in elog
    assert not _child_sas(east) and not _child_sas(attacker)
    routes = e_ns.run("ip", "route", "show", "table", "all").stdout
    rules = e_ns.run("ip", "rule", "show").stdout
    assert "192.0.2.200" not in routes + rules, routes + rules
    get = e_ns.run("ip", "route", "get", "192.0.2.200").stdout
    assert "pluto" not in get, get  # still reached directly on the LAN, not via the tunnel
