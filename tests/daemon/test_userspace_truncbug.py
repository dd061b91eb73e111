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

import re
import subprocess
from pathlib import Path

import pytest
from plutoproc import wait_for
from test_userspace_capture import BASE, _stop_capture, child_sas, pair  # noqa: F401

pytestmark = pytest.mark.netns

SUBNETS = "\tleftsubnet=198.51.100.0/24\n\trightsubnet=203.0.113.0/24\n"


def _esp_lengths(pcap: Path, src: str) -> list[int]:
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "ip proto 50"],
                         capture_output=True, text=True, check=True).stdout
    return [int(m.group(1)) for ln in out.splitlines() if f" {src} > " in ln
            for m in [re.search(r"length (\d+)", ln)] if m]


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
    start, spawn, w_ns, e_ns, vw = pair
    conf = BASE + SUBNETS + f"\tesp={esp}\n"
    east = start("east", e_ns, conf + ("\tsha2-truncbug=yes\n" if east_bug else ""))
    west = start("west", w_ns, conf + ("\tsha2-truncbug=yes\n" if west_bug else ""))
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    assert len(child_sas(west)) == 1

    pcap = tmp_path / "west.pcap"
    dump = spawn(w_ns, "tcpdump", "--immediate-mode", "-i", vw, "-U", "-n", "-s", "0",
                 "-w", str(pcap))
    assert dump.stderr is not None
    assert "listening on" in dump.stderr.readline().decode()
    ping = w_ns.run("ping", "-c", "3", "-i", "0.2", "-W", "1", "-s", "56",
                    "-I", "198.51.100.1", "203.0.113.1", check=False)
    if length is None:
        assert ping.returncode != 0, ping.stdout
        wait_for(lambda: len(_esp_lengths(pcap, "192.0.2.1")) >= 3, 10, "west's 3 pings")
        _stop_capture(dump, pcap)
        assert _esp_lengths(pcap, "192.0.2.2") == []  # east answered none
        assert child_sas(east)[0]["integrity_failures"] >= 3, child_sas(east)
        assert set(_esp_lengths(pcap, "192.0.2.1")) == {132}
        return
    assert ping.returncode == 0, ping.stdout + ping.stderr + west.log() + east.log()
    wait_for(lambda: len(_esp_lengths(pcap, "192.0.2.2")) >= 3, 10, "east's 3 answers")
    _stop_capture(dump, pcap)
    out, back = _esp_lengths(pcap, "192.0.2.1"), _esp_lengths(pcap, "192.0.2.2")
    assert set(out) == {length} and set(back) == {length}, (out, back)
    assert child_sas(east)[0]["integrity_failures"] == 0
