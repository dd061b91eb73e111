"""Target (b): decrypted payload chains inside an IKE SA (RFC 7296 §1.2-1.4, §3.14).

A back-to-back pair from ``tests/ike/harness.py`` is brought to a known state
once (templates); each input deep-copies a template, encrypts its payload chain
with the IKE SA's real keys (so it passes the integrity check and reaches the
exchange handlers), delivers it, lets the pair answer each other, and checks:

* no exception escaped (the engine logs "internal error" when one does);
* the engines' SA tables are consistent (``check_tables``);
* no message storm.

Input layout: byte 0 = mode (mod ``len(MODES)``), byte 1 = the chain's first
payload type (the SK payload's Next Payload); for fragment modes byte 2 says how
the chain is cut into SKF fragments (RFC 7383: bits 0-1 = fragments sent - 1,
bits 2-3 = extra fragments declared but never sent, bits 4-5 = order); the
rest = the plaintext chain (padding is added by the protector).
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pypluto.ike.actions import ConnectionEvent, Log
from pypluto.ike.sa import ChildState
from pypluto.wire.message import Message, serialize_payloads
from pypluto.wire.payloads import SKFPayload, SKPayload

from . import Finding

REPO = Path(__file__).resolve().parents[2]
CONN = "west-east"

# mode -> (template, sender, exchange, response, in SKF fragments)
MODES: tuple[tuple[str, str, int, bool, bool], ...] = (
    ("r1", "west", 35, False, False),        # 0 IKE_AUTH request to the responder (R1)
    ("est", "west", 36, False, False),       # 1 CREATE_CHILD_SA request to the responder
    ("est", "west", 37, False, False),       # 2 INFORMATIONAL request to the responder
    ("rekey", "east", 36, True, False),      # 3 CREATE_CHILD_SA response to a Child rekey
    ("r1", "east", 35, True, False),         # 4 IKE_AUTH response to the initiator
    ("est", "east", 37, False, False),       # 5 INFORMATIONAL request from the responder
    ("est", "east", 36, False, False),       # 6 CREATE_CHILD_SA request from the responder
    ("rekey_ike", "east", 36, True, False),  # 7 CREATE_CHILD_SA response to an IKE rekey
    ("dpd", "east", 37, True, False),        # 8 INFORMATIONAL response to a liveness check
    ("r1", "west", 35, False, True),         # 9 IKE_AUTH request in SKF fragments
    ("est", "west", 37, False, True),        # 10 INFORMATIONAL request in SKF fragments
    ("rekey", "east", 36, True, True),       # 11 CREATE_CHILD_SA response in fragments
)
FRAG_MODES = tuple(i for i, m in enumerate(MODES) if m[4])


def _harness() -> Any:
    mod = sys.modules.get("pypluto_fuzz_harness")
    if mod is None:
        spec = importlib.util.spec_from_file_location(
            "pypluto_fuzz_harness", REPO / "tests" / "ike" / "harness.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules["pypluto_fuzz_harness"] = mod
        spec.loader.exec_module(mod)
    return mod


def _ike(side: Any) -> Any:
    return next(iter(side.engine.by_serial.values()))


_TEMPLATES: dict[str, Any] = {}


def templates() -> dict[str, Any]:
    """The pair in each starting state (built once; every input gets a deep copy)."""
    if _TEMPLATES:
        return _TEMPLATES
    h = _harness()
    net = h.Net()
    net.apply(net.west, net.west.engine.initiate(CONN, net.now))
    net.step()  # IKE_SA_INIT request -> east (R1)
    net.step()  # response -> west, which sends IKE_AUTH (kept in flight, not delivered)
    net.queue.clear()
    _TEMPLATES["r1"] = net
    net = h.Net()
    net.up()
    assert net.established(net.west) and net.established(net.east)
    _TEMPLATES["est"] = net
    net = h.Net(west_kw={"dpddelay": 5, "dpdtimeout": 60})
    net.up()
    net.cut = True  # the liveness probe stays in flight
    net.advance(6)
    net.cut = False
    net.queue.clear()
    assert _ike(net.west).outstanding is not None
    _TEMPLATES["dpd"] = net
    for name, call in (("rekey", "rekey_child"), ("rekey_ike", "rekey_ike")):
        n = copy.deepcopy(_TEMPLATES["est"])
        n.apply(n.west, getattr(n.west.engine, call)(CONN, n.now))
        n.queue.clear()  # west waits for the response to its request
        assert _ike(n.west).outstanding is not None, name
        _TEMPLATES[name] = n
    return _TEMPLATES


def encrypt(ike: Any, exchange: int, response: bool, msgid: int, first: int,
            plaintext: bytes) -> bytes:
    """An SK message carrying ``plaintext`` as its inner chain, sent by ``ike``."""
    prot = ike.prot_out
    body_len = prot.body_length(len(plaintext))
    msg = Message(ike.spi_i, ike.spi_r, exchange, ike.initiator, response, msgid,
                  [SKPayload(first, bytes(body_len))])
    raw = msg.serialize()
    aad = raw[: len(raw) - body_len]
    return aad + prot.encrypt(aad, plaintext)


def encrypt_fragments(ike: Any, exchange: int, response: bool, msgid: int, first: int,
                      plaintext: bytes, how: int) -> list[bytes]:
    """SKF fragments (RFC 7383 §2.5) of ``plaintext`` as ``how`` says (see the module doc)."""
    sent = 1 + (how & 3)
    total = sent + ((how >> 2) & 3)
    step = max(1, -(-len(plaintext) // sent))
    chunks = [plaintext[i * step:(i + 1) * step] for i in range(sent)]
    prot = ike.prot_out
    out = []
    for i, chunk in enumerate(chunks, 1):
        body_len = prot.body_length(len(chunk))
        skf = SKFPayload(first if i == 1 else 0, i, total, bytes(body_len))
        raw = Message(ike.spi_i, ike.spi_r, exchange, ike.initiator, response, msgid,
                      [skf]).serialize()
        aad = raw[: len(raw) - body_len]
        out.append(aad + prot.encrypt(aad, chunk))
    order = (how >> 4) & 3
    if order == 1:
        out.reverse()
    elif order == 2 and len(out) > 1:
        out = out[1:] + out[:1]
    elif order == 3:
        out = out + out[:1]  # a duplicate of the first fragment
    return out


def check_tables(eng: Any, where: str) -> None:
    """The engine's indexes agree with each other (every SA reachable, none stale)."""
    for serial, ike in eng.by_serial.items():
        if ike.serial != serial:
            raise Finding(f"{where}: by_serial[{serial}] holds #{ike.serial}")
        if eng.ike_sas.get(ike.local_spi) is not ike:
            raise Finding(f"{where}: IKE SA #{serial} not indexed by its SPI")
        if eng.by_conn.get(ike.conn.name, {}).get(serial) is not ike:
            raise Finding(f"{where}: IKE SA #{serial} missing from by_conn[{ike.conn.name}]")
        for c in ike.children:
            if c.state == ChildState.ESTABLISHED and eng.children_in.get(c.spi_in) is not c:
                raise Finding(f"{where}: established Child SA #{c.serial} of #{serial} "
                              f"not indexed by its SPI {c.spi_in:#x}")
    live = {id(i) for i in eng.by_serial.values()}
    for spi, ike in eng.ike_sas.items():
        if id(ike) not in live:
            raise Finding(f"{where}: stale IKE SA #{ike.serial} under SPI {spi.hex()}")
    for name, d in eng.by_conn.items():
        for serial, ike in d.items():
            if eng.by_serial.get(serial) is not ike:
                raise Finding(f"{where}: stale IKE SA #{serial} in by_conn[{name}]")
    for key, d in eng.by_peer.items():
        for serial, ike in d.items():
            if eng.by_serial.get(serial) is not ike:
                raise Finding(f"{where}: stale IKE SA #{serial} in by_peer[{key}]")
    for spi, c in eng.children_in.items():
        p = c.parent
        if p is None or id(p) not in live:
            raise Finding(f"{where}: Child SA #{c.serial} (SPI {spi:#x}) has no live parent")
    n = sum(1 for i in eng.by_serial.values() if i.halfopen_deadline is not None)
    if eng.n_halfopen != n:
        raise Finding(f"{where}: n_halfopen {eng.n_halfopen}, {n} half-open IKE SAs")
    for key, ike in eng.halfopen.items():
        if id(ike) not in live:
            raise Finding(f"{where}: stale half-open entry {key}")


def _errors(acts: list) -> list[str]:
    """Every sign of an exception the engine caught: its log line or INTERNAL_ERROR event."""
    out = [a.message for a in acts if isinstance(a, Log) and "internal error" in a.message]
    out += [f"INTERNAL_ERROR event: {a.detail}" for a in acts
            if isinstance(a, ConnectionEvent) and a.kind == "internal-error"]
    return out


def settle_and_check(net: Any, to: Any, frm: Any, n0: int, label: str) -> None:
    """Let the pair answer each other and run 31 s of timers, then check: no message
    storm, no internal error (of ``to`` since its action ``n0``, of ``frm`` at all),
    consistent SA tables on both ends."""
    try:
        net.run(limit=60)
        net.advance(31)  # retransmits, half-open expiry, liveness
    except AssertionError as e:
        raise Finding(f"{label}: {e}") from None
    errs = _errors(to.actions[n0:]) + _errors(frm.actions)
    if errs:
        raise Finding(f"{label}: {errs[0]}")
    check_tables(net.west.engine, "west")
    check_tables(net.east.engine, "east")


def one_input(data: bytes) -> None:
    """Deliver one encrypted payload chain and check the pair afterwards."""
    if len(data) < 2:
        return
    tpl, sender, exchange, response, frag = MODES[data[0] % len(MODES)]
    first, plaintext = data[1], data[2:]
    how = 0
    if frag:
        if len(data) < 3:
            return
        how, plaintext = data[2], data[3:]
    net = copy.deepcopy(templates()[tpl])
    frm = net.west if sender == "west" else net.east
    to = net.other(frm)
    s_ike, r_ike = _ike(frm), _ike(to)
    if response:
        o = r_ike.outstanding
        msgid = o.msgid if o is not None else 0
    else:
        msgid = r_ike.next_in
    if frag:
        pkts = encrypt_fragments(s_ike, exchange, response, msgid, first, plaintext, how)
    else:
        pkts = [encrypt(s_ike, exchange, response, msgid, first, plaintext)]
    n0 = len(to.actions)
    for pkt in pkts:
        net.apply(to, to.engine.receive(pkt, r_ike.local, r_ike.remote, net.now))
    settle_and_check(net, to, frm, n0, f"mode {data[0] % len(MODES)}")


# ------------------------------------------------------------------ seeds
def _recording(net: Any, out: list[tuple[str, int, bool, int, bytes]]) -> None:
    """Record every payload chain either engine encodes (exchange, response, first, chain)."""
    for side in (net.west, net.east):
        eng = getattr(side.engine, "tm", side.engine)  # the task manager encodes, if any
        orig = eng.encode

        def rec(ike: Any, exchange: int, response: bool, msgid: int, payloads: list,
                _orig: Any = orig, _name: str = side.name) -> list[bytes]:
            if exchange != 34:
                first, chain = serialize_payloads(payloads)
                out.append((_name, exchange, response, int(first), chain))
            return _orig(ike, exchange, response, msgid, payloads)

        eng.encode = rec


def harness_exchanges() -> list[tuple[str, int, bool, int, bytes]]:
    """(sender, exchange, response, first payload, chain) of a full life cycle:
    establishment, Child SA rekey, IKE SA rekey, DPD, delete."""
    h = _harness()
    out: list[tuple[str, int, bool, int, bytes]] = []
    net = h.Net(west_kw={"dpddelay": 5, "dpdtimeout": 30})
    _recording(net, out)
    net.up()
    net.apply(net.west, net.west.engine.rekey_child(CONN, net.now))
    net.run()
    net.apply(net.east, net.east.engine.rekey_child(CONN, net.now))
    net.run()
    net.apply(net.west, net.west.engine.rekey_ike(CONN, net.now))
    net.run()
    net.advance(12)
    net.apply(net.west, net.west.engine.terminate(CONN, net.now))
    net.run()
    return out


def harness_messages() -> Iterator[tuple[str, bytes]]:
    """Whole datagrams of a back-to-back life cycle (seeds for the wire target)."""
    h = _harness()
    net = h.Net()
    net.up()
    net.apply(net.west, net.west.engine.rekey_child(CONN, net.now))
    net.run()
    net.apply(net.west, net.west.engine.terminate(CONN, net.now))
    net.run()
    for i, (name, data) in enumerate(net.sent):
        yield f"{name}-{i}", data


def _template_exchanges() -> list[tuple[str, int, bool, int, bytes]]:
    """The request west has in flight in each template and east's answer to it,
    decrypted: these match the templates' keys and nonces, so the response modes
    get as far as a real answer does."""
    from pypluto.ike import codec
    from pypluto.wire.message import parse_message
    out: list[tuple[str, int, bool, int, bytes]] = []
    for name in ("r1", "rekey", "rekey_ike", "dpd"):
        net = copy.deepcopy(templates()[name])
        w, e = _ike(net.west), _ike(net.east)
        req = w.outstanding.packets[0]
        m = parse_message(req)
        first, chain = serialize_payloads(codec.decrypt(m.sk, e.prot_in))
        out.append(("west", m.exchange, False, int(first), chain))
        acts = net.east.engine.receive(req, e.local, e.remote, net.now)
        for a in acts:
            data = getattr(a, "data", None)
            if isinstance(data, bytes):
                m = parse_message(data)
                first, chain = serialize_payloads(codec.decrypt(m.sk, w.prot_in))
                out.append(("east", m.exchange, True, int(first), chain))
    return out


def seeds() -> Iterator[bytes]:
    """Every recorded chain under every mode that matches its exchange and direction,
    plus the decrypted chains of the Openswan captures."""
    from .vectors import openswan_frames
    chains = _template_exchanges() + harness_exchanges()
    for mode, (_tpl, _sender, exchange, response, frag) in enumerate(MODES):
        hows = [0x01, 0x13, 0x36] if frag else [None]
        for _name, ex, resp, first, chain in chains:
            if ex == exchange and resp == response:
                for how in hows:
                    head = bytes([mode, first] if how is None else [mode, first, how])
                    yield head + chain
        yield bytes([mode, 0] if not frag else [mode, 0, 0])  # empty chain
    for fr in openswan_frames():
        sk = fr.get("sk_decryption")
        sk = sk if isinstance(sk, dict) else {}
        if sk.get("inner_payloads_hex") is None or sk.get("inner_first_payload") is None:
            continue
        for mode, (_t, _s, exchange, response, frag) in enumerate(MODES):
            if frag:
                continue
            if fr.get("exchange") == exchange and bool(fr.get("flags", 0) & 0x20) == response:
                yield bytes([mode, sk["inner_first_payload"]]) + bytes.fromhex(
                    sk["inner_payloads_hex"])
