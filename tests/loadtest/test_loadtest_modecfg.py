"""``ipsec loadtest --modecfg``: road warriors asking a pypluto gateway for addresses
(RFC 7296 §3.15), one ID per client, all leases freed after ``--down``."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import pytest

from pypluto import loadtest

sys.path[:0] = [str(pathlib.Path(__file__).resolve().parents[1]),
                str(pathlib.Path(__file__).resolve().parents[1] / "interop")]
from lab import EAST_OUTER, WEST_OUTER, Lab, have_netns  # noqa: E402
from peers import Pypluto  # noqa: E402
from testsupport import require  # noqa: E402

PSK = "loadtest-psk-0123456789abcdefghijklmnop"
POOL = "198.51.100.100-198.51.100.109"
CONF = f"""\
config setup
\tuniqueids=yes
conn rw
\tauthby=secret
\tleft={EAST_OUTER}
\tleftid=@resp.example
\tleftsubnet=203.0.113.0/24
\tright=%any
\trightid=%any
\trightaddresspool={POOL}
\tike=aes_gcm256-sha2_256-dh31
\tesp=aes_gcm256
\tauto=add
"""


def test_modecfg_connection_asks_for_an_address() -> None:
    o = loadtest.Options(local="192.0.2.1", remote="192.0.2.2", psk=b"x",
                         local_id="@rw-{n}.example", modecfg=True)
    c = loadtest.build_connection(o.__class__(**{**o.__dict__, "local_id": "@rw.example"}))
    assert c.left.modecfgclient and c.raw["childless"] == "no" and not c.left.subnets
    c1 = loadtest._conn_for(c, o, 7)
    assert c1 is not c and c1.name == "loadtest-7" and str(c1.left.id) == "@rw-7.example"


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_road_warriors_get_unique_addresses_and_free_them() -> None:
    require(have_netns(), "root and `ip netns`")
    with Lab(prefix="lm") as lab:
        gw = Pypluto(lab, lab.east, "lm-gw", "--use-none").start(CONF, f': PSK "{PSK}"\n')
        psk = lab.workdir / "psk"
        psk.write_text(PSK + "\n")
        argv = [sys.executable, "-m", "pypluto.loadtest", "--local", WEST_OUTER,
                "--remote", EAST_OUTER, "--psk-file", psk, "--local-id", "@rw-{n}.example",
                "--remote-id", "@resp.example", "--ike", "aes_gcm256-sha2_256-dh31",
                "--modecfg", "--down", "-n", "12", "-c", "4", "--json"]
        r = lab.run(lab.west, argv, check=False, timeout=90,
                    env={"PYTHONPATH": os.pathsep.join(sys.path)})
        out = json.loads(r.stdout)
        # 10 addresses for 12 clients: 10 get one, 2 fail with INTERNAL_ADDRESS_FAILURE
        assert (out["established"], out["failures"]) == (10, 2), out
        assert out["addresses"] == out["unique_addresses"] == 10
        assert "exhausted" in gw.log.read_text()
        lab.wait_for(lambda: not json.loads(gw.whack("--status", "--json").stdout)["leases"],
                     20, "every lease freed after --down")
