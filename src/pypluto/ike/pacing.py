"""Pacing of liveness probes (RFC 7296 §2.4 checks, ``ike/tasks/liveness.py``; issue 18).

At 100,000 IKE SAs with ``dpddelay=30`` the daemon sends ~3,300 probes a second.
Their deadlines are rounded up to :data:`SLOT` so that one timer call serves a
batch, and :class:`ProbePacer` keeps a batch small enough for the peer's UDP
receive buffer.  No dependency on the rest of the engine (``ike/context.py``
names the pacer, ``ike/timers.py`` asks it).
"""

from __future__ import annotations

import math

# deadlines of liveness checks are rounded up to a multiple of this (seconds, a power
# of two so that the rounding is exact): 100,000 SAs at dpddelay=30 make ~26 probes
# per slot, one timer call each 7.8 ms instead of one per SA.  Not coarser: a slot's
# probes leave back to back, and ~100 small datagrams at once can fill a peer's
# default UDP receive buffer (212,992 bytes).  (On the loaded build machine the
# bench generator dropped probes with 1/32 s and with 1/128 s slots alike: its
# receiving thread did not get the CPU; see bench/README.md.)
SLOT = 1 / 128

# at most this many probes leave per SLOT (6,144 a second: 184,000 SAs at dpddelay=30);
# the rest of a slot's SAs get seats in the following slots (ProbePacer)
PROBES_PER_SLOT = 48


def slot(t: float) -> float:
    """``t`` rounded up to the next :data:`SLOT` boundary."""
    return math.ceil(t / SLOT) * SLOT


class ProbePacer:
    """At most :data:`PROBES_PER_SLOT` probes per :data:`SLOT`; the others are booked
    into the following slots, :data:`PROBES_PER_SLOT` to a slot.

    Without it, SAs whose deadlines pile up stay together for good: a timer call
    that runs late (the loop was busy setting SAs up) sends every probe that came
    due meanwhile at once, their answers re-arm them all for the same slot, and
    their retransmits (0.5 s, 1.5 s, 3.5 s ... later) leave together too.  The
    bench generator (100,000 SAs) saw bursts of 150 probes in 2 ms where 26 per
    slot were due; a burst larger than the peer's UDP receive buffer (~270 small
    datagrams at Linux's default) loses its tail every time it is resent, and an SA
    in that tail is declared dead although the peer answers every probe it gets.

    A refused SA gets a seat in a later slot (:meth:`later`), so a pile of any size
    costs one more timer visit per SA (not one per slot it waits: pushing the whole
    pile one slot on made every slot walk it), and each SA is then re-armed from its
    own answer.  An SA due in a slot that bookings already filled is booked again.
    """

    __slots__ = ("slot_at", "sent", "booked_at", "booked")

    def __init__(self) -> None:
        self.slot_at = -1.0  # the slot being sent in, and the probes sent in it
        self.sent = 0
        self.booked_at = -1.0  # the last slot seats were handed out in, and how many
        self.booked = 0

    def allow(self, now: float) -> bool:
        """May a probe leave at ``now``?  Counts it if so."""
        s = slot(now)
        if s != self.slot_at:
            self.slot_at, self.sent = s, 0
        if self.sent >= PROBES_PER_SLOT:
            return False
        self.sent += 1
        return True

    def later(self) -> float:
        """A seat for a probe refused now: the first later slot with one free."""
        first = self.slot_at + SLOT
        if self.booked_at < first:
            self.booked_at, self.booked = first, 0
        elif self.booked >= PROBES_PER_SLOT:
            self.booked_at += SLOT
            self.booked = 0
        self.booked += 1
        return self.booked_at
