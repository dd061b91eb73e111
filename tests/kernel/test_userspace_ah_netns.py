"""AH (RFC 4302) on the userspace plane: two namespaces, hand-keyed AH SAs, pings and TCP.

The packets leave as IP protocol 51 (tcpdump on the veth), the counters rise,
and AH through UDP encapsulation is refused with a clear error.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from testsupport import REPO

sys.path.insert(0, str(REPO))
from bench import esp_lab  # noqa: E402
from bench.esp_lab import EAST_HOST, Lab  # noqa: E402
from pypluto.crypto.registry import Integ  # noqa: E402

pytestmark = pytest.mark.netns


def ah_configs(integ: int, key_len: int, mode: str = "tunnel") -> tuple[dict, dict]:  # type: ignore[type-arg]
    west, east = esp_lab.handkeyed(0, 0, integ, key_len, mode=mode)
    for cfg in (west, east):
        for sa in cfg["sas"]:
            sa.update(protocol="ah", encap_sport=None, encap_dport=None)
    return west, east


@pytest.mark.parametrize("integ, key_len", [(Integ.HMAC_SHA2_256_128, 32),
                                            (Integ.HMAC_SHA1_96, 20)])
def test_ah_tunnel_through_the_userspace_plane(lab: Lab, integ: int, key_len: int) -> None:
    west_cfg, east_cfg = ah_configs(integ, key_len)
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    dump = None
    if shutil.which("tcpdump"):
        dump = subprocess.Popen(["ip", "netns", "exec", lab.east, "tcpdump", "--immediate-mode", "-i", "any",
                                 "-n", "-l", "ip proto 51"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert dump.stderr is not None
        dump.stderr.readline()
    ping = lab.exec(lab.west, "ping", "-c", "3", "-i", "0.2", "-W", "2", EAST_HOST, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    st = east.stats()
    assert st["sas"][str(0x1001)]["packets"] >= 3 and st["sas"][str(0x2002)]["packets"] >= 3
    assert st["sas"][str(0x1001)]["integrity_failures"] == 0
    assert st["plane"]["udp_datagrams"] == 0
    if dump is not None:
        dump.terminate()
        out, _ = dump.communicate(timeout=10)
        assert "AH(spi=0x00001001" in out and "AH(spi=0x00002002" in out, out
    west.close()
    east.close()


def test_ah_with_udp_encapsulation_is_refused_clearly() -> None:
    import ipaddress

    from pypluto.kernel.base import BackendError, SAParams
    from pypluto.kernel.userspace.sa_table import SATable

    sa = SAParams(ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"), 0x1001,
                  "out", protocol="ah", integ_id=Integ.HMAC_SHA2_256_128, integ_key=bytes(32),
                  encap_sport=4500, encap_dport=4500)
    with pytest.raises(BackendError, match="ESP only"):
        SATable().add(sa, None, None)


def test_ah_transport_host_to_host_on_the_userspace_plane(lab: Lab) -> None:
    """Host-to-host transport mode: traffic to the peer's own address is captured, carried
    in AH (our raw socket's mark keeps the AH packets themselves out of the capture)."""
    from bench.esp_lab import EAST_OUTER, WEST_OUTER

    west_cfg, east_cfg = ah_configs(Integ.HMAC_SHA2_256_128, 32, mode="transport")
    for cfg, me, peer in ((west_cfg, WEST_OUTER, EAST_OUTER), (east_cfg, EAST_OUTER, WEST_OUTER)):
        for sa in cfg["sas"]:
            sa["local_ts"], sa["remote_ts"] = [f"{me}/32"], [f"{peer}/32"]
        for p in cfg["policies"]:
            p["src"], p["dst"] = ((f"{me}/32", f"{peer}/32") if p["direction"] == "out"
                                  else (f"{peer}/32", f"{me}/32"))
    west = lab.plane(lab.west, west_cfg)
    east = lab.plane(lab.east, east_cfg)
    ping = lab.exec(lab.west, "ping", "-c", "3", "-i", "0.2", "-W", "2", EAST_OUTER, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    st = east.stats()
    assert st["sas"][str(0x1001)]["packets"] >= 3 and st["sas"][str(0x2002)]["packets"] >= 3
    west.close()
    east.close()
