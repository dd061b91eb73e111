"""``tfc=`` and ``send-no-esp-tfc=`` between two daemons on the userspace plane, on the wire.

West has ``tfc=1000``: its tunnel-mode ESP packets carry each inner packet padded
to 1,000 bytes (TFC padding, RFC 4303 §2.7), so a ping's ESP packets from west are
all over 1,000 bytes while east's answers (no ``tfc=``) stay small, and east cuts
the padding (the pings are answered).  With ``send-no-esp-tfc=yes`` on east, east
tells west not to pad (ESP_TFC_PADDING_NOT_SUPPORTED) and west's packets stay small.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

from pathlib import Path

import pytest
from plutoproc import wait_for
from test_userspace_capture import (  # noqa: F401
    BASE,
    SUBNETS,
    _stop_capture,
    esp_lengths,
    pair,
    ping_east,
    up_and_capturing,
)

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("east_says_no", [False, True], ids=["padded", "peer-says-no"])
def test_tfc_pads_our_esp_until_the_peer_says_no(pair, tmp_path: Path,  # noqa: F811
                                                 east_says_no: bool) -> None:
    west, east, dump, pcap = up_and_capturing(
        pair, tmp_path, BASE + SUBNETS + "\ttfc=1000\n",
        BASE + SUBNETS + ("\tsend-no-esp-tfc=yes\n" if east_says_no else ""))
    ping = ping_east(pair[2])
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    wait_for(lambda: len(esp_lengths(pcap, "192.0.2.2")) >= 3, 10, "east's 3 answers")
    _stop_capture(dump, pcap)

    out, back = esp_lengths(pcap, "192.0.2.1"), esp_lengths(pcap, "192.0.2.2")
    assert len(out) >= 3 and len(back) >= 3, (out, back)
    assert all(n < 200 for n in back), back  # 84-byte pings in ESP, east pads nothing
    if east_says_no:
        assert all(n < 200 for n in out), out
    else:  # SPI, sequence number, IV, 1,000 bytes, trailer, ICV
        assert all(n >= 1000 for n in out), out
