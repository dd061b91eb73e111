"""leftsubnets=: Libreswan's NAME/LxR pairs, and whack commands on NAME act on all of them."""

from __future__ import annotations

import pytest
from plutoproc import wait_for
from test_daemon_pair import CONF, child_sas, pair  # noqa: F401  (fixture)

pytestmark = pytest.mark.netns

SUBNETS = CONF.replace("\tleftsubnet=198.51.100.0/24\n",
                       "\tleftsubnets={{198.51.100.0/25 198.51.100.128/25}}\n")


def test_whack_on_the_name_acts_on_every_subnet_pair(pair):  # noqa: F811
    start, _w, _e = pair
    east = start("east", _e, "add", "--use-none", conf_text=SUBNETS)
    west = start("west", _w, "add", "--use-none", conf_text=SUBNETS)
    status = west.whack("--status").stdout
    assert '"west-east/1x0"' in status and '"west-east/2x0"' in status, status
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    got = sorted((c["conn"]) for c in child_sas(west))
    assert got == ["west-east/1x0", "west-east/2x0"], got
    assert len(child_sas(east)) == 2
    r = west.whack("--name", "west-east", "--terminate")
    assert r.returncode == 0, r.stdout
    # whack returns once the Deletes are sent; the second one waits on the shared IKE SA
    # for the first one's answer (one exchange at a time), so its Child SA goes a moment later
    wait_for(lambda: child_sas(west) == [], 10, "every Child SA gone")
    r = west.whack("--name", "no-such", "--initiate")
    assert r.returncode != 0 and 'no connection or alias named "no-such"' in r.stdout + r.stderr


ALIASED = CONF.replace("conn west-east\n", "conn west-east\n\tconnalias=\"franklin both\"\n") + (
    "\nconn other\n\tauthby=secret\n\tleft=192.0.2.1\n\tleftid=@west\n"
    "\tleftsubnet=198.51.100.0/24\n\tright=192.0.2.2\n\trightid=@east\n"
    "\trightsubnet=192.0.2.128/25\n\tconnalias=both\n\tauto={auto}\n")


def test_whack_on_a_connalias_acts_on_its_conns(pair):  # noqa: F811
    """connalias= (ipsec.conf(5)): more names for the conn; a whack command on one acts
    on every conn that has it.  --initiate of a conn that is up answers at once."""
    start, _w, _e = pair
    east = start("east", _e, "add", "--use-none", conf_text=ALIASED)
    west = start("west", _w, "add", "--use-none", conf_text=ALIASED)
    r = west.whack("--name", "franklin", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert [c["conn"] for c in child_sas(west)] == ["west-east"]
    r = west.whack("--name", "both", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert sorted(c["conn"] for c in child_sas(west)) == ["other", "west-east"]
    assert len(child_sas(east)) == 2
    assert "connection is already up" in r.stdout  # west-east: at once, nothing to wait for
    r = west.whack("--name", "both", "--terminate")
    assert r.returncode == 0, r.stdout
    # whack returns once the Deletes are sent; the second one waits on the shared IKE SA
    # for the first one's answer (one exchange at a time), so its Child SA goes a moment later
    wait_for(lambda: child_sas(west) == [], 10, "every Child SA gone")
