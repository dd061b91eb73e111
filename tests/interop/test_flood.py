"""Issue 13's "Done when": a spoofed IKE_SA_INIT flood while legitimate peers connect.

20,000 spoofed IKE_SA_INIT (as fast as one process sends over a raw socket) while
strongSwan 5.9.8 and a pypluto initiator connect to the pypluto responder,
5 runs.  The scenario is ``flood.py``; ``bench/flood.py`` reports the same
figures with the times.  The initiators start once 5 % of the flood has been
sent (``flood_sender.py`` builds its datagrams first, waits for the go and says
when), so what is asserted does not depend on how busy the machine is:

* the responder demanded COOKIEs in every run (its defence switched on by itself,
  RFC 7296 §2.6), and the legitimate initiators went through that COOKIE round
  (at least one of them in some run: one whose IKE_SA_INIT is read before the
  flood's first datagrams is served at once; the bench gives each run's);
* both legitimate initiators got their IKE SA up in every run (the time they
  took, issue 13's "under 1 s", is a benchmark figure: ``make bench``, never
  asserted here);
* the responder's RSS grew by under 20 MiB during each flood and is back within
  5 MiB of its first baseline 60 s after the last flood;
* no ping through strongSwan's established tunnel was lost during the floods.
"""

from __future__ import annotations

import math

import pytest
from flood import run_flood
from lab import Lab, require
from peers import have_strongswan

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.interop,
              pytest.mark.timeout(900)]

RUNS = 5


def test_flood_does_not_keep_legitimate_peers_out(lab: Lab) -> None:
    require(have_strongswan(), "strongSwan charon-systemd and swanctl (tools/install-deps.sh)")
    fig = run_flood(lab, runs=RUNS)
    print(f"\nflood figures: {fig.as_dict()}")
    assert len(fig.strongswan_up) == len(fig.pypluto_up) == RUNS
    assert all(c > 0 for c in fig.cookies_sent), fig.cookies_sent  # defence on by itself
    # a legitimate peer went through the COOKIE round the flood switched on, and got up:
    # not asserted per peer and run (one whose IKE_SA_INIT reaches the responder before
    # the flood's first datagrams have been read is served at once, without a COOKIE)
    assert any(fig.strongswan_cookied + fig.pypluto_cookied), \
        (fig.strongswan_cookied, fig.pypluto_cookied)
    assert all(math.isfinite(t) for t in fig.strongswan_up), fig.strongswan_up  # up
    assert all(math.isfinite(t) for t in fig.pypluto_up), fig.pypluto_up
    assert max(fig.rss_peak_growth_kib) < 20 * 1024, fig.rss_peak_growth_kib
    assert fig.after_seconds >= 60
    assert abs(fig.rss_after_kib - fig.rss_base_kib) < 5 * 1024, \
        (fig.rss_base_kib, fig.rss_after_kib)
    assert fig.pings_sent > 0 and fig.pings_lost == 0, (fig.pings_sent, fig.pings_lost)
