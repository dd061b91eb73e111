"""The network-namespace lab itself (tests/lab.py): topology, traffic helpers, cleanup."""

from __future__ import annotations

import os

import pytest
from lab import (
    EAST_INNER,
    EAST_OUTER,
    WEST_INNER,
    Lab,
    LabError,
    have_netns,
    list_netns,
    require,
)

pytestmark = [pytest.mark.netns]


def test_topology_and_cleanup() -> None:
    require(have_netns(), "root and `ip netns`")
    with Lab() as lab:
        assert str(os.getpid()) in lab.west and lab.west != lab.east
        assert {lab.west, lab.east} <= set(list_netns())
        addrs = lab.run(lab.west, ["ip", "-br", "addr"]).stdout
        assert "192.0.2.1/24" in addrs and WEST_INNER in addrs
        assert lab.ping(lab.west, EAST_OUTER, count=2, interval=0.2) == (2, 2)
        # the inner subnets are not routed between the namespaces without a tunnel
        assert lab.ping(lab.west, EAST_INNER, count=1, timeout=1)[1] == 0
        sleeper = lab.spawn(lab.east, ["sleep", "600"], "sleep.log")
        assert sleeper.alive()
        workdir = lab.workdir
    assert not sleeper.alive()
    assert lab.west not in list_netns() and lab.east not in list_netns()
    assert not workdir.exists()


def test_transfer_hash(lab: Lab) -> None:
    sent, got, n = lab.transfer(lab.west, lab.east, EAST_OUTER, nbytes=1 << 20)
    assert n == 1 << 20 and sent == got


def test_wait_for_fails_when_process_dies(lab: Lab) -> None:
    lab.spawn(lab.west, ["sh", "-c", "exit 3"], "short.log")
    with pytest.raises(LabError, match="died"):
        lab.wait_for(lambda: False, 10, "never")
    with pytest.raises(LabError, match="timed out"):
        lab.procs.clear()
        lab.wait_for(lambda: False, 0.2, "never")


def test_failure_keeps_workdir() -> None:
    require(have_netns(), "root and `ip netns`")
    with pytest.raises(RuntimeError), Lab() as lab:
        (lab.workdir / "x.log").write_text("hello\n")
        lab.add_log("x", lab.workdir / "x.log")
        raise RuntimeError("boom")
    assert lab.west not in list_netns()
    assert (lab.workdir / "x.log").exists()
    import shutil
    shutil.rmtree(lab.workdir)
