"""Fixtures shared by the userspace plane's namespace tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest
from testsupport import REPO, is_root, require

sys.path.insert(0, str(REPO))
from bench.esp_lab import Lab  # noqa: E402


@pytest.fixture
def lab() -> Iterator[Lab]:
    """Two namespaces joined by a veth, each with a TUN device (``bench/esp_lab.py``);
    removed on exit, also on failure."""
    require(is_root(), "root (network namespaces)")
    require(os.path.exists("/dev/net/tun"), "/dev/net/tun")
    with Lab() as lb:
        yield lb
