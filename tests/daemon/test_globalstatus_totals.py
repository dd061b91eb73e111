"""``whack --globalstatus``'s ``total.*`` counters through a real tunnel (issue 19).

A pypluto pair with traffic: establishments, algorithms, IKE bytes and ESP bytes
are counted, and the bytes of a Child SA stay in the totals after it is gone.
"""

from __future__ import annotations

import json

import pytest
from plutoproc import wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.netns


def _totals(pluto) -> dict[str, int]:  # type: ignore[no-untyped-def]
    r = pluto.whack("--globalstatus", "--json")
    assert r.returncode == 0, r.stdout
    values: dict[str, int] = json.loads(r.stdout)["values"]
    text = pluto.whack("--globalstatus").stdout.splitlines()
    # the text and the --json carry the same numbers (up to traffic between the reads)
    assert sorted(ln.split("=", 1)[0] for ln in text) == sorted(values)
    return values


def test_totals_count_a_tunnel_with_traffic(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    for ns, addr in ((w_ns, "198.51.100.1/32"), (e_ns, "203.0.113.1/32")):
        ns.run("ip", "addr", "add", addr, "dev", "lo")
        ns.run("ip", "link", "set", "lo", "up")
    conf = CONF + "\tencapsulation=yes\n"
    start("east", e_ns, "add", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "add", "--use-userspace", conf_text=conf)
    before = _totals(west)
    assert before["total.ikev2.ike.started"] == 0 and before["total.ike.traffic.out"] == 0
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    ping = w_ns.run("ping", "-c", "5", "-i", "0.2", "-W", "2", "-I", "198.51.100.1",
                    "203.0.113.1", check=False)
    assert ping.returncode == 0, ping.stdout + west.log()
    wait_for(lambda: child_sas(west)[0]["out_packets"] >= 5, 10, "out counter")
    ch = child_sas(west)[0]
    v = _totals(west)
    assert v["total.ikev2.ike.started"] == 1 and v["total.ikev2.ike.established"] == 1
    assert v["total.ike.ikev2.established"] == 1 and v["total.ike.ikev2.failed"] == 0
    assert v["total.ikev2.child.established"] == 1 and v["total.ipsec.type.esp"] == 1
    assert v["total.ipsec.type.encap"] == 1  # encapsulation=yes
    assert v["total.ikev2.encr.AES_GCM_16"] + v["total.ikev2.encr.AES_CBC"] + \
        v["total.ikev2.encr.CHACHA20_POLY1305"] == 1
    assert v["total.ike.traffic.in"] > 0 and v["total.ike.traffic.out"] > 0
    assert v["total.ikev2.sent.notifies.status.NAT_DETECTION_SOURCE_IP"] >= 1
    assert v["total.ikev2.recv.notifies.status.NAT_DETECTION_SOURCE_IP"] >= 1
    # read after the trafficstatus: the totals can only be larger
    assert v["total.ipsec.esp.traffic.out"] >= ch["out_bytes"] > 0
    assert v["total.ipsec.traffic.in"] >= ch["in_bytes"] > 0
    r = west.whack("--name", "west-east", "--terminate")
    assert r.returncode == 0, r.stdout
    wait_for(lambda: not child_sas(west), 10, "Child SA gone")
    after = _totals(west)
    assert after["total.ikev2.child.finished"] == 1
    assert after["total.ikev2.ike.finished"] == 1 and after["total.ike.ikev2.completed"] == 1
    # the deleted SA's bytes stay counted
    assert after["total.ipsec.esp.traffic.out"] >= ch["out_bytes"]
    assert after["total.ipsec.esp.traffic.in"] >= ch["in_bytes"]
