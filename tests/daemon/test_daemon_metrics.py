"""The metrics endpoint (config setup metrics-listen=) during a tunnel with traffic.

Its counters must be the numbers ``whack --trafficstatus --json`` shows.
"""

from __future__ import annotations

import json
import re

import pytest
from plutoproc import wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.netns

SCRAPE = """
import sys, urllib.request
print(urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=5).read().decode())
"""


def _scrape(ns, port: int) -> dict[tuple[str, str], float]:  # type: ignore[no-untyped-def]
    import sys
    r = ns.run(sys.executable, "-c", SCRAPE, str(port))
    out: dict[tuple[str, str], float] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"^(\w+)(\{[^}]*\})? (\S+)$", line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def test_metrics_scrape_matches_trafficstatus(pair):  # noqa: F811
    start, w_ns, e_ns = pair
    for ns, addr in ((w_ns, "198.51.100.1/32"), (e_ns, "203.0.113.1/32")):
        ns.run("ip", "addr", "add", addr, "dev", "lo")
        ns.run("ip", "link", "set", "lo", "up")
    conf = CONF + "\tencapsulation=yes\n"
    port = 9801
    west_conf = f"config setup\n\tmetrics-listen=127.0.0.1:{port}\n\n" + conf
    start("east", e_ns, "add", "--use-userspace", conf_text=conf)
    west = start("west", w_ns, "add", "--use-userspace", conf_text=west_conf)
    assert f"metrics: serving http://127.0.0.1:{port}/metrics" in west.log()
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    ping = w_ns.run("ping", "-c", "5", "-i", "0.2", "-W", "2", "-I", "198.51.100.1",
                    "203.0.113.1", check=False)
    assert ping.returncode == 0, ping.stdout + west.log()
    wait_for(lambda: child_sas(west)[0]["out_packets"] >= 5, 10, "out counter")
    m = _scrape(w_ns, port)
    ch = child_sas(west)[0]
    lbl = f'{{conn="west-east",serial="{ch["serial"]}",direction="out"}}'
    # the trafficstatus read comes after the scrape: counters only grow
    assert 5 <= m[("pluto_child_sa_packets_total", lbl)] <= ch["out_packets"]
    assert 0 < m[("pluto_child_sa_bytes_total", lbl)] <= ch["out_bytes"]
    assert m[("pluto_ike_sa_established_total", "")] == 1
    assert m[("pluto_child_sa_established_total", "")] == 1
    status = json.loads(west.whack("--status", "--json").stdout)
    assert status["counters"]["ike_established"] == 1
    assert status["counters"]["child_established"] == 1
    assert ("pluto_ike_sas", '{state="ESTABLISHED_IKE_SA"}') in m or any(
        k[0] == "pluto_ike_sas" for k in m)


def test_bad_metrics_listen_is_refused_with_file_line(tmp_path):
    from pypluto.daemon.options import OptionError, parse_args
    conf = tmp_path / "ipsec.conf"
    conf.write_text("config setup\n\tmetrics-listen=127.0.0.1:notaport\n")
    with pytest.raises(OptionError, match=r"ipsec.conf:2: metrics-listen=127.0.0.1:notaport"):
        parse_args(["--config", str(conf), "--nofork"])
