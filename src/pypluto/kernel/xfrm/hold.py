"""``negotiationshunt=hold`` on the XFRM plane: the kernel's own queue for trapped packets.

A trap is an outbound policy whose template has no SA yet.  When a packet hits it
the kernel creates a larval (ACQ) state and sends XFRM_MSG_ACQUIRE; what happens to
the packet is decided by the per-namespace sysctl ``net.core.xfrm_larval_drop``:

* ``1`` (the kernel's default): the packet is dropped (a blackhole route), and so is
  every packet until the SA is installed;
* ``0``: the packet is queued on the policy (``xfrm_policy_queue``: at most 100
  packets, re-looked-up with a back-off from 0.1 s up to 5 s, then purged) and sent
  as soon as the SA exists.

There is no "hold" policy action in XFRM (only ALLOW and BLOCK), so this sysctl is
how a trap holds its packets while negotiating.  We set it to 0 in the daemon's
namespace when the first outbound IPsec policy goes in, and put the old value back
when the backend closes.  (Libreswan 4.10 leaves it at 1, ``ipsec verify`` even asks
for 1, and implements ``%hold`` as a no-op on XFRM: its first packets are dropped.)
"""

from __future__ import annotations

from collections.abc import Callable

from .netlink import run_in_netns

LARVAL_DROP = "/proc/sys/net/core/xfrm_larval_drop"
# config setup xfrmlifetime= (Libreswan 5: expire-lifetime=): how long a larval (ACQ)
# state lives, so how long the kernel waits before it may ACQUIRE that flow again
ACQ_EXPIRES = "/proc/sys/net/core/xfrm_acq_expires"


def _swap(value: str, path: str = LARVAL_DROP) -> str | None:
    """Write ``value`` to the sysctl; the old value, or None if it cannot be set."""
    try:
        with open(path) as f:
            old = f.read().strip()
        if old != value:
            with open(path, "w") as f:
                f.write(value)
        return old
    except OSError:
        return None


def set_acq_expires(netns: str | None, value: str) -> str | None:
    """Set ``net.core.xfrm_acq_expires`` (seconds) in ``netns``; the old value, or None
    when it cannot be set."""
    fn: Callable[[], str | None] = lambda: _swap(value, ACQ_EXPIRES)  # noqa: E731
    return fn() if netns is None else run_in_netns(netns, fn)


def set_larval_drop(netns: str | None, value: str) -> str | None:
    """Set ``net.core.xfrm_larval_drop`` in ``netns`` (ours if None); the old value.

    None when the sysctl is missing or not writable (then the kernel drops the
    packets of a negotiating trap, as before).
    """
    fn: Callable[[], str | None] = lambda: _swap(value)  # noqa: E731
    return fn() if netns is None else run_in_netns(netns, fn)
