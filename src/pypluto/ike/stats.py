"""What the engine has done since start: the counters behind ``total.*``.

``whack --globalstatus`` prints Libreswan 5.2's ``total.*`` lines (events since
the daemon started, never reset); the metrics endpoint exports the same numbers.
The engine feeds one :class:`EngineStats` as things happen (sans-I/O: plain
counters, no clock, no I/O):

* IKE and Child SAs started (an SA created), established, finished (gone after
  being established) and failed (gone without being established);
* the algorithms of every established IKE SA and Child SA (transform IDs of
  RFC 7296 §3.3.2 / IANA "Transform Type" registries);
* every Notify payload sent and received (RFC 7296 §3.10), by type;
* INVALID_KE_PAYLOAD (§1.2) sent and received, by the group used and the group
  suggested;
* liveness probes (§1.4) sent, answered to us, and answered by us.

Counting a message's notifies walks its payload list once (a few attribute
reads per message); nothing is allocated per message beyond the counter entry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pypluto.wire.payloads import NotifyPayload, Payload, SerializedRun

_PROTO_EVENTS = {"esp": "ipsec.esp", "ah": "ipsec.ah"}  # no string built per Child SA


class EngineStats:
    """Monotonic counters; :meth:`as_dict` is their ``--json`` / snapshot form."""

    __slots__ = ("events", "ike_encr", "ike_integ", "ike_group", "child_encr", "child_integ",
                 "notify_sent", "notify_recv", "invalid_ke")

    def __init__(self) -> None:
        self.events: Counter[str] = Counter()  # "ike.started", "child.established", ...
        self.ike_encr: Counter[int] = Counter()
        self.ike_integ: Counter[int] = Counter()
        self.ike_group: Counter[int] = Counter()
        self.child_encr: Counter[int] = Counter()
        self.child_integ: Counter[int] = Counter()
        self.notify_sent: Counter[int] = Counter()
        self.notify_recv: Counter[int] = Counter()
        # ("sent"|"recv", "using"|"suggesting", group) -> count
        self.invalid_ke: Counter[tuple[str, str, int]] = Counter()

    # ---------------------------------------------------------------- feeding
    def event(self, name: str) -> None:
        self.events[name] += 1

    def sent(self, payloads: Iterable[Payload]) -> None:
        _notifies(self.notify_sent, payloads)

    def received(self, payloads: Iterable[Payload]) -> None:
        _notifies(self.notify_recv, payloads)

    def ike_established(self, encr: int, integ: int, ke: int) -> None:
        self.events["ike.established"] += 1
        self.ike_encr[encr] += 1
        if integ:
            self.ike_integ[integ] += 1
        self.ike_group[ke] += 1

    def child_established(self, protocol: str, encr: int, integ: int, esn: bool,
                          encap: bool) -> None:
        ev = self.events
        ev["child.established"] += 1
        ev[_PROTO_EVENTS.get(protocol) or f"ipsec.{protocol}"] += 1
        if esn:
            ev["ipsec.esn"] += 1
        ev["ipsec.encap" if encap else "ipsec.non_encap"] += 1
        if encr:
            self.child_encr[encr] += 1
        self.child_integ[integ] += 1  # 0: NONE (AEAD)

    def invalid_ke_payload(self, direction: str, using: int, suggesting: int) -> None:
        self.invalid_ke[(direction, "using", using)] += 1
        self.invalid_ke[(direction, "suggesting", suggesting)] += 1

    # ---------------------------------------------------------------- reading
    def as_dict(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "ike_encr": dict(self.ike_encr),
            "ike_integ": dict(self.ike_integ),
            "ike_group": dict(self.ike_group),
            "child_encr": dict(self.child_encr),
            "child_integ": dict(self.child_integ),
            "notify_sent": dict(self.notify_sent),
            "notify_recv": dict(self.notify_recv),
            "invalid_ke": [[d, role, g, n] for (d, role, g), n in sorted(self.invalid_ke.items())],
        }


def _notifies(counter: Counter[int], payloads: Iterable[Payload]) -> None:
    for p in payloads:
        if type(p) is NotifyPayload:
            counter[int(p.notify_type)] += 1
        elif type(p) is SerializedRun:
            # a run of our own payloads (the IKE_SA_INIT answer): its notifies listed
            for t in p.notifies:
                counter[t] += 1
