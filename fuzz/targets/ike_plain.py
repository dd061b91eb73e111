"""Target (e): whole unencrypted datagrams into the engines (RFC 7296 §2, §3.1).

The ``wire`` target stops at the codec and ``ike_sk`` starts inside the SK
payload; this one feeds what an attacker on the path can send without any key:
IKE_SA_INIT requests and responses, and any other message in the clear, to an
engine in one of five states, from the peer's address or one that lies about
NAT (another address, port 4500).  After delivery the pair answers each other
and 31 s of timers run (retransmits, half-open expiry, liveness).  Checks:

* no exception escaped (the engine logs "internal error" when one does);
* the engines' SA tables are consistent (``ike_sk.check_tables``);
* no message storm; at most one half-open IKE SA per datagram.

Input layout: byte 0 = state (mod ``len(STATES)``), byte 1 = flags, the rest =
the datagram.  Flags: bit 0 = write the state's own IKE SPIs into the header
(so a mutated message reaches that SA), bit 1 = it arrives on port 4500,
bit 2 = from another address (203.0.113.9: a NAT, or a liar), bit 3 = deliver
to west instead of east, bit 4 = set the header's Length to the datagram's,
bit 5 = when the receiver answers with a COOKIE (RFC 7296 §2.6), send the
datagram again with that COOKIE as its first payload, as a real initiator
does (so the "busy" state's IKE_SA_INIT handling past the COOKIE is reached).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.cookies import cookie_in
from pypluto.ike.settings import EngineSettings

from . import Finding
from .ike_sk import CONN, _harness, _ike, harness_messages, settle_and_check
from .ike_sk import templates as sk_templates
from .vectors import fuzz_packets, openswan_frames

# state -> how the pair is set up (templates())
STATES = ("fresh", "i1", "r1", "est", "busy")
_TEMPLATES: dict[str, Any] = {}


def templates() -> dict[str, Any]:
    """The pair in each state (built once; every input gets a deep copy):
    fresh: nothing yet; i1: west's IKE_SA_INIT request in flight (west waits for
    the response); r1: east answered it (half-open, waiting for IKE_AUTH); est:
    established; busy: nothing yet, east demands COOKIEs (``force_busy``)."""
    if _TEMPLATES:
        return _TEMPLATES
    h = _harness()
    _TEMPLATES["fresh"] = h.Net()
    net = h.Net()
    net.apply(net.west, net.west.engine.initiate(CONN, net.now))
    _TEMPLATES["init_request"] = bytes(net.queue[0][1].data)
    net.queue.clear()
    _TEMPLATES["i1"] = net
    net = h.Net()
    net.apply(net.west, net.west.engine.initiate(CONN, net.now))
    net.step()  # IKE_SA_INIT request -> east, which answers (R1)
    _TEMPLATES["init_response"] = bytes(net.queue[0][1].data)
    net.queue.clear()
    _TEMPLATES["r1"] = net
    _TEMPLATES["est"] = sk_templates()["est"]  # shared with ike_sk (inputs get copies)
    _TEMPLATES["busy"] = h.Net(east_settings=EngineSettings(force_busy=True))
    return _TEMPLATES


def _spis(net: Any) -> tuple[bytes, bytes] | None:
    """The IKE SPIs (initiator's, responder's) of the state's first IKE SA, if any."""
    for side in (net.west, net.east):
        if side.engine.by_serial:
            ike = _ike(side)
            return ike.spi_i, ike.spi_r
    return None


def with_cookie(pkt: bytes, answer: bytes) -> bytes | None:
    """``pkt`` with the COOKIE of ``answer`` (a COOKIE reply) put first (§2.6)."""
    cookie = cookie_in(answer)
    if cookie is None or len(pkt) < 28:
        return None
    n = (8 + len(cookie)).to_bytes(2, "big")
    notify = bytes([pkt[16], 0]) + n + b"\x00\x00\x40\x06" + cookie  # N(COOKIE), 16390
    out = bytearray(pkt[:28] + notify + pkt[28:])
    out[16] = 41  # the first payload is now the Notify
    out[24:28] = len(out).to_bytes(4, "big")
    return bytes(out)


def one_input(data: bytes) -> None:
    """Deliver one datagram in the clear and check the pair afterwards."""
    if len(data) < 2:
        return
    state, flags, pkt = STATES[data[0] % len(STATES)], data[1], bytearray(data[2:])
    net = copy.deepcopy(templates()[state])
    spis = _spis(net)
    if flags & 1 and spis is not None and len(pkt) >= 16:
        pkt[0:16] = spis[0] + spis[1]
    if flags & 16 and len(pkt) >= 28:
        pkt[24:28] = len(pkt).to_bytes(4, "big")
    to = net.west if flags & 8 else net.east
    frm = net.other(to)
    h = _harness()
    port = 4500 if flags & 2 else 500
    src = Endpoint(h.NAT_PUBLIC if flags & 4 else frm.addr, port)
    dst = Endpoint(to.addr, port)
    n0 = len(to.actions)
    halfopen0 = to.engine.n_halfopen
    acts = to.engine.receive(bytes(pkt), dst, src, net.now)
    net.apply(to, acts)
    if flags & 32:
        again = next((with_cookie(bytes(pkt), a.data) for a in acts
                      if isinstance(a, SendPacket) and cookie_in(a.data) is not None), None)
        if again is not None:
            net.queue.clear()
            net.apply(to, to.engine.receive(again, dst, src, net.now))
    if to.engine.n_halfopen > halfopen0 + 1:
        raise Finding(f"{state}: one datagram made {to.engine.n_halfopen - halfopen0} "
                      "half-open IKE SAs")
    # an answer to the lying address is not delivered (no one is there)
    net.queue = [(s, p) for s, p in net.queue
                 if not (isinstance(p, SendPacket) and p.remote.addr == h.NAT_PUBLIC)]
    settle_and_check(net, to, frm, n0, state)


# ------------------------------------------------------------------ seeds
def seeds() -> Iterator[bytes]:
    """The pair's own IKE_SA_INIT request and response, every datagram of a
    back-to-back life cycle, the Openswan captures and the Libreswan fuzzer
    packets, each in the states and with the flags where it means something."""
    t = templates()
    req, resp = t["init_request"], t["init_response"]
    for state in range(len(STATES)):
        for flags in (0x00, 0x02, 0x04, 0x06):
            yield bytes([state, flags]) + req
        yield bytes([state, 0x19]) + resp  # to west, with the state's SPIs
        yield bytes([state, 0x01]) + req
    yield bytes([4, 0x20]) + req  # busy: the COOKIE round, then a half-open SA
    for _name, pkt in harness_messages():
        for state in (1, 2, 3):
            yield bytes([state, 0x11]) + pkt
            yield bytes([state, 0x19]) + pkt
    for fr in openswan_frames():
        if fr.get("ike_hex"):
            yield bytes([0, 0]) + bytes.fromhex(fr["ike_hex"])
    for pkt in fuzz_packets():
        yield bytes([0, 0]) + pkt
        yield bytes([4, 0]) + pkt
