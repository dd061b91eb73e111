"""``sha2-truncbug=`` between two daemons on the userspace plane, on the wire.

With ``esp=aes256-sha2_256`` the ESP ICV is HMAC-SHA2-256 cut to 128 bits (RFC
4868 §2.3).  ``sha2-truncbug=yes`` cuts it to 96 bits instead, as Linux did before
2.6.33 and Libreswan does with that key; it is not negotiated, so both ends must
say so.  A ping of 84 bytes inside ESP with AES-CBC is SPI 4 + sequence 4 + IV 16 +
ciphertext 96 (84 + padding 10 + trailer 2) + ICV: 136 bytes on the wire with the
RFC's ICV, 132 with the bug's.  With the bug on one end only, that end's packets
fail the other's ICV check: no ping crosses and the integrity failures are counted.
AES-GCM (no integrity transform) and HMAC-SHA2-512 are not affected.

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
    child_sas,
    esp_lengths,
    pair,
    ping_east,
    up_and_capturing,
)

pytestmark = pytest.mark.netns


@pytest.mark.parametrize(("esp", "west_bug", "east_bug", "length"), [
    ("aes256-sha2_256", False, False, 136),
    ("aes256-sha2_256", True, True, 132),
    ("aes256-sha2_512", True, True, 152),  # ICV 32: SHA2-512 keeps its 256 bits
    ("aes_gcm256", True, True, 120),  # IV 8, ciphertext 88, ICV 16: no integrity transform
    ("aes256-sha2_256", True, False, None),  # one end only: nothing crosses
], ids=["rfc", "truncbug", "sha512-unaffected", "gcm-unaffected", "one-end-only"])
def test_sha2_truncbug_cuts_the_esp_icv_to_96_bits(pair, tmp_path: Path,  # noqa: F811
                                                    esp: str, west_bug: bool, east_bug: bool,
                                                    length: int | None) -> None:
    conf = BASE + SUBNETS + f"\tesp={esp}\n"
    bug = "\tsha2-truncbug=yes\n"
    west, east, dump, pcap = up_and_capturing(
        pair, tmp_path, conf + (bug if west_bug else ""), conf + (bug if east_bug else ""))
    ping = ping_east(pair[2], wait=1)
    if length is None:
        assert ping.returncode != 0, ping.stdout
        wait_for(lambda: len(esp_lengths(pcap, "192.0.2.1")) >= 3, 10, "west's 3 pings")
        _stop_capture(dump, pcap, min_bytes=0)  # (the 3 are in it; nothing else may be)
        assert esp_lengths(pcap, "192.0.2.2") == []  # east answered none
        assert child_sas(east)[0]["integrity_failures"] >= 3, child_sas(east)
        assert set(esp_lengths(pcap, "192.0.2.1")) == {132}
        return
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    wait_for(lambda: len(esp_lengths(pcap, "192.0.2.2")) >= 3, 10, "east's 3 answers")
    _stop_capture(dump, pcap)
    out, back = esp_lengths(pcap, "192.0.2.1"), esp_lengths(pcap, "192.0.2.2")
    assert set(out) == {length} and set(back) == {length}, (out, back)
    assert child_sas(east)[0]["integrity_failures"] == 0
