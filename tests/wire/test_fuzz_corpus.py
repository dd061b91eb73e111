"""Libreswan's fuzzer packets (../shared/vectors/fuzz/libreswan): WireError or success only.

The ten IKEv2 packets of ikev2-15-fuzzer (CVE-2013-6467 "buster" mutations) and
the IKEv1 CVE packets; every one must either parse (and then round-trip) or
raise a WireError -- for IKEv1, InvalidMajorVersion (RFC 7296 §2.5).
"""

from __future__ import annotations

import json

import pytest
from testsupport import shared_path

from pypluto.wire import InvalidMajorVersion, WireError, parse_message


def test_libreswan_fuzz_packets() -> None:
    base = shared_path("vectors", "fuzz", "libreswan")
    files = sorted(base.glob("*.hex"))
    assert len(files) == 14
    outcome: dict[str, str] = {}
    for f in files:
        raw = bytes.fromhex("".join(f.read_text().split()))
        try:
            msg = parse_message(raw)
        except InvalidMajorVersion as e:
            assert f.name.startswith("ikev1_"), f.name
            assert e.major in (0, 1)
            outcome[f.name] = "InvalidMajorVersion"
            continue
        except WireError as e:
            outcome[f.name] = f"{type(e).__name__}: {e}"
            continue
        assert msg.serialize() == raw, f.name
        outcome[f.name] = "parsed: " + ",".join(type(p).__name__ for p in msg.payloads)
    print()
    for name, what in outcome.items():
        print(f"  {name}: {what}")
    v2 = [n for n in outcome if n.startswith("ikev2-")]
    assert len(v2) == 10
    # at least half of the buster mutations are malformed and must be refused
    assert sum(not outcome[n].startswith("parsed") for n in v2) >= 5
    index = base / "index.json"
    if index.exists():
        json.loads(index.read_text())  # the annotations are readable


def test_authip_packet() -> None:
    """A Windows AuthIP packet (IKEv1-style header, version 1.0) is refused by version."""
    (raw,) = shared_path("vectors", "fuzz", "libreswan").glob("*.raw")
    with pytest.raises(InvalidMajorVersion):
        parse_message(raw.read_bytes())
