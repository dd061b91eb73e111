"""leftupdown= against strongSwan 5.9.8 with traffic, both roles (issue 12, item 6).

The script runs on our side as Libreswan runs ``_updown``: prepare, route, up when
the tunnel comes up (not again on a rekey), down and unroute when it goes, with
the PLUTO_* environment of the negotiated Child SA.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from lab import EAST_SUBNET, WEST_SUBNET, Lab
from peers import PROPOSALS
from test_strongswan import _ping_both, _up
from trixie import STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
HOST_PEER = [p for p in STRONGSWAN_PEERS if not p.chroot][:1] or STRONGSWAN_PEERS[:1]

SCRIPT = """#!/bin/sh
echo "$PLUTO_VERB $PLUTO_CONNECTION $PLUTO_MY_CLIENT $PLUTO_PEER_CLIENT $PLUTO_PEER_ID \
$PLUTO_SA_TYPE $PLUTO_STACK $PLUTO_INBYTES $PLUTO_OUTBYTES" >> {log}
"""


def _calls(log, n: int, timeout: float = 15.0) -> list[list[str]]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    lines: list[list[str]] = []
    while time.monotonic() < deadline:
        lines = [ln.split() for ln in log.read_text().splitlines()] if log.exists() else []
        if len(lines) >= n:
            break
        time.sleep(0.1)
    return lines


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("peer", HOST_PEER, ids=[p.label.replace(" ", "") for p in HOST_PEER])
def test_updown_runs_with_traffic(lab: Lab, cell: Callable[..., None], tmp_path, peer: PeerSpec,
                                  role: str) -> None:  # type: ignore[no-untyped-def]
    cell(peer=peer.label, case="updown", role=role, proposal="defaults")
    log = tmp_path / "updown.calls"
    script = tmp_path / "updown.sh"
    script.write_text(SCRIPT.format(log=log))
    script.chmod(0o755)
    us, them = _up(lab, peer, PROPOSALS[0], role, extra=f"\tleftupdown={script}\n")
    calls = _calls(log, 3)
    assert [c[0] for c in calls[:3]] == ["prepare-client", "route-client", "up-client"], calls
    verb, conn, mine, theirs, peer_id, sa_type, stack = calls[2][:7]
    assert (mine, theirs, sa_type, stack) == (WEST_SUBNET, EAST_SUBNET, "ESP", "userspace")
    assert peer_id.startswith("@") or peer_id, calls[2]
    _ping_both(lab)
    us.rekey_child()
    time.sleep(2)
    _ping_both(lab)
    assert len(_calls(log, 3, timeout=0.5)) == 3  # a rekey runs nothing
    r = us.down()
    assert r.returncode == 0, r.stdout + r.stderr
    calls = _calls(log, 5)
    assert [c[0] for c in calls[3:5]] == ["down-client", "unroute-client"], calls
    inbytes, outbytes = int(calls[3][7]), int(calls[3][8])
    assert inbytes > 0 and outbytes > 0, calls[3]  # the counters of the SA going down
    cell(note=f"verbs {' '.join(c[0] for c in calls)}; down saw {inbytes}/{outbytes} bytes")
