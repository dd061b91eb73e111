"""``tfc=`` and ``send-no-esp-tfc=`` between two daemons on the userspace plane, on the wire.

West has ``tfc=1000``: its tunnel-mode ESP packets carry each inner packet padded
to 1,000 bytes (TFC padding, RFC 4303 §2.7), so a ping's ESP packets from west are
all over 1,000 bytes while east's answers (no ``tfc=``) stay small, and east cuts
the padding (the pings are answered).  With ``send-no-esp-tfc=yes`` on east, east
tells west not to pad (ESP_TFC_PADDING_NOT_SUPPORTED) and west's packets stay small.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from plutoproc import wait_for
from test_userspace_capture import BASE, _stop_capture, child_sas, pair  # noqa: F401

pytestmark = pytest.mark.netns

SUBNETS = "\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"


def _esp_lengths(pcap: Path, src: str) -> list[int]:
    """The ESP lengths tcpdump reports for packets from ``src``."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "ip proto 50"],
                         capture_output=True, text=True, check=True).stdout
    return [int(m.group(1)) for ln in out.splitlines() if f" {src} > " in ln
            for m in [re.search(r"length (\d+)", ln)] if m]


@pytest.mark.parametrize("east_says_no", [False, True], ids=["padded", "peer-says-no"])
def test_tfc_pads_our_esp_until_the_peer_says_no(pair, tmp_path: Path,  # noqa: F811
                                                 east_says_no: bool) -> None:
    start, spawn, w_ns, e_ns, vw = pair
    east = start("east", e_ns, BASE + SUBNETS
                 + ("\tsend-no-esp-tfc=yes\n" if east_says_no else ""))
    west = start("west", w_ns, BASE + SUBNETS + "\ttfc=1000\n")
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1

    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0",
                 "-w", str(pcap))
    assert dump.stderr is not None
    assert "listening on" in dump.stderr.readline().decode()
    ping = w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "56",
                    "-I", "198.51.100.1", "203.0.113.1", check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    wait_for(lambda: len(_esp_lengths(pcap, "192.0.2.2")) >= 3, 10, "east's 3 answers")
    _stop_capture(dump, pcap)

    out, back = _esp_lengths(pcap, "192.0.2.1"), _esp_lengths(pcap, "192.0.2.2")
    assert len(out) >= 3 and len(back) >= 3, (out, back)
    assert all(n < 200 for n in back), back  # 84-byte pings in ESP, east pads nothing
    if east_says_no:
        assert all(n < 200 for n in out), out
    else:  # SPI, sequence number, IV, 1,000 bytes, trailer, ICV
        assert all(n >= 1000 for n in out), out
