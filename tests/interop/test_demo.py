"""`make demo` keeps working: tools/demo.py end to end (two pyplutos, tunnel, traffic)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest
from lab import have_netns, list_netns, require

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(300)]
DEMO = pathlib.Path(__file__).resolve().parents[2] / "tools" / "demo.py"


def test_demo_runs_and_cleans_up() -> None:
    require(have_netns(), "root and `ip netns`")
    r = subprocess.run([sys.executable, str(DEMO), "--plane", "userspace"], capture_output=True,
                       text=True, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert out.count("... matches") == 2, out  # 1 MiB each way, SHA-256 checked
    assert "3 received, 0% packet loss" in out
    for side in ("west", "east"):
        assert f"ipsec status on {side}" in out and f"ipsec trafficstatus on {side}" in out
    assert "ESTABLISHED_CHILD_SA (established Child SA)" in out and "inBytes=" in out
    m = re.search(r"creating network namespaces (\S+) and (\S+),", out)
    assert m, out
    assert not {m.group(1), m.group(2)} & set(list_netns()), "demo left its namespaces"
