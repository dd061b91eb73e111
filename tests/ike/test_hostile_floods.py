"""Red team: floods against the responder (RFC 7296 §2.4, §2.6; RFC 8019; RFC 7383 §2.6).

Every flood must leave the engine's state bounded (counted in its tables: by_serial,
ike_sas, halfopen, the per-source counts, fragment buffers, response caches) and a
legitimate peer must still get through; whatever a flood created is freed again.
"""

from __future__ import annotations

import ipaddress
import random

import pytest

from pypluto.config.ids import parse_id
from pypluto.iana import ExchangeType
from pypluto.ike import engine as engine_mod
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.ike.engine import CLOSED_MAX, Engine
from pypluto.ike.sa import IKEState
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks.ike_delete import delete_ike

from .harness import EAST, PSK, WEST, Net, Side, Store, make_conn
from .test_dos import IKE, Flood, _cookie_of, _fragment, _half_open_pair, _with_cookie

LOCAL = Endpoint(EAST, 500)


def _sends(acts: list) -> list[bytes]:
    return [a.data for a in acts if isinstance(a, SendPacket)]


def _tables(eng: Engine) -> dict[str, int]:
    """The size of every per-SA table of the engine (each must go back to 0)."""
    return {
        "ike_sas": len(eng.ike_sas), "by_serial": len(eng.by_serial),
        "halfopen": len(eng.halfopen), "n_halfopen": eng.n_halfopen,
        "children_in": len(eng.children_in), "children_out": len(eng.children_out),
        "by_conn": len(eng.by_conn), "by_peer": len(eng.by_peer),
        "by_reqid": len(eng.by_reqid), "policy_owner": len(eng.policy_owner),
        "computing": len(eng.computing), "computing_serials": len(eng.computing_serials),
        "per_addr": len(eng.dos.per_addr), "frag_bytes": eng.tm.frag_bytes,
        "leases": sum(n for *_x, n in eng.leases.summary()) if eng.leases.summary() else 0,
    }


def _empty(eng: Engine) -> None:
    t = _tables(eng)
    assert not any(t.values()), t


def _deliver(net: Net, data: bytes, src: Endpoint | None = None) -> list:
    acts = net.east.engine.receive(data, Endpoint(EAST, 500), src or Endpoint(WEST, 500),
                                   net.now)
    net.apply(net.east, acts)
    return acts


# ------------------------------------------------------------------ IKE_SA_INIT floods
def test_spoofed_init_flood_is_bounded_a_real_peer_gets_in_and_all_is_freed() -> None:
    """2,000 IKE_SA_INIT from spoofed addresses (none returns a COOKIE): the half-open
    count stops near ddos-ike-threshold, the legitimate peer gets in with a COOKIE, and
    every half-open SA of the flood expires, leaving the tables as before."""
    net = Net(east_settings=EngineSettings(ddos_ike_threshold=40, max_halfopen_ike=100,
                                           ddos_init_rate=0),
              east_kw={"left": "%any", "ike": IKE}, west_kw={"ike": IKE})
    east = net.east.engine
    fl = Flood()
    rng = random.Random(7)
    for i in range(2000):
        addr = ipaddress.ip_address(f"10.{(i >> 8) & 255}.{i & 255}.{rng.randrange(1, 250)}")
        src = Endpoint(addr, rng.randrange(1024, 65535))
        east.receive(fl.request(net.now), LOCAL, src, net.now)
        assert east.n_halfopen <= 40
    assert len(east.by_serial) == len(east.ike_sas) == len(east.halfopen) == 40
    assert east.busy() and east.status(net.now).dos.cookies_sent == 1960
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert east.status(net.now).dos.cookies_accepted == 1
    net.advance(east.settings.half_open_timeout + 5)
    assert len(east.by_serial) == 1 and east.n_halfopen == 0 and not east.dos.per_addr
    assert not east.busy()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    _empty(east)
    _empty(net.west.engine)


def test_retransmitted_init_flood_makes_one_sa() -> None:
    """The same IKE_SA_INIT 500 times: one half-open SA, each copy answered with the
    same cached response; the same SPIi with other content or from other ports never
    replaces it, and the other ports are bounded by the per-source quota."""
    eng = Net(east_settings=EngineSettings(halfopen_per_addr=8)).east.engine
    fl = Flood()
    req = fl.request(1.0)
    src = Endpoint(WEST, 500)
    first = _sends(eng.receive(req, LOCAL, src, 1.0))
    assert len(first) == 1
    for _ in range(500):
        assert _sends(eng.receive(req, LOCAL, src, 1.0)) == first
    assert eng.n_halfopen == 1 and len(eng.by_serial) == 1
    ike = next(iter(eng.by_serial.values()))
    # same SPIi, other content (another nonce): an IKE SA exists for it, dropped
    other = bytearray(req)
    other[-1] ^= 0xFF
    assert _sends(eng.receive(bytes(other), LOCAL, src, 1.0)) == []
    assert eng.by_serial == {ike.serial: ike} and ike.init_request == req
    # same SPIi from 200 other ports: at most the per-source quota gets state
    for port in range(2000, 2200):
        eng.receive(req, LOCAL, Endpoint(WEST, port), 1.0)
    assert eng.n_halfopen == 8 and eng.dos.addr_count(WEST.packed) == 8


def test_replayed_and_transplanted_cookies() -> None:
    """While busy: a valid COOKIE replayed 300 times makes one half-open SA; the same
    COOKIE with another SPIi, from another port or another address is refused."""
    eng = Net(east_settings=EngineSettings(force_busy=True)).east.engine
    fl = Flood()
    req = fl.request(1.0)
    src = Endpoint(WEST, 500)
    cookie = _cookie_of(eng.receive(req, LOCAL, src, 1.0))
    assert cookie is not None and not eng.by_serial
    good = _with_cookie(req, cookie)
    answer = _sends(eng.receive(good, LOCAL, src, 1.0))
    assert len(answer) == 1 and _cookie_of([SendPacket(answer[0], LOCAL, src)]) is None
    for _ in range(300):
        assert _sends(eng.receive(good, LOCAL, src, 1.0)) == answer
    assert eng.n_halfopen == 1
    rejected = eng.status(1.0).dos.cookies_rejected
    for data, frm in ((_with_cookie(fl.request(1.0), cookie), src),  # another SPIi
                      (good, Endpoint(WEST, 4500)),  # another port
                      (good, Endpoint(ipaddress.ip_address("192.0.2.77"), 500))):
        assert _cookie_of(eng.receive(data, LOCAL, frm, 1.0)) is not None
    assert eng.n_halfopen == 1 and eng.status(1.0).dos.cookies_rejected == rejected + 3


# ------------------------------------------------------------------ IKE_AUTH floods
def test_auth_flood_with_random_spis_or_bad_icv_changes_nothing() -> None:
    net = Net()
    wi, ei = _half_open_pair(net)
    east = net.east.engine
    before = (_tables(east), ei.state, ei.next_in, ei.last_response, ei.halfopen_deadline)
    good = _fragment(wi, 1, 1, 64)  # an authentic IKE_AUTH fragment, to tamper with
    rng = random.Random(3)
    for i in range(300):
        data = bytearray(good)
        if i % 3 == 0:  # random SPIs
            data[0:16] = rng.randbytes(16)
        elif i % 3 == 1:  # the right SPIs, a bad ICV
            data[-1 - i % 16] ^= 0x5A
        else:  # the right SPIs, garbage body
            data[40:] = rng.randbytes(len(data) - 40)
        assert _sends(_deliver(net, bytes(data))) == []
    assert (_tables(east), ei.state, ei.next_in, ei.last_response,
            ei.halfopen_deadline) == before
    # west's real IKE_AUTH (held back so far) still completes the exchange
    net.apply(net.west, net.west.engine.handle_timer(net.now + 0.6))
    net.run()
    assert net.established(net.west) and net.established(net.east)


# ------------------------------------------------------------------ RFC 7383 floods
def test_fragment_floods_stay_within_the_caps() -> None:
    """Fragments with huge Total Fragments, many message IDs and every fragment
    number: nothing over the caps is held, nothing but the expected message ID is."""
    net = Net()
    wi, ei = _half_open_pair(net)
    tm = net.east.engine.tm
    for total in (65, 1000, 65535):  # beyond MAX_FRAGMENTS: dropped unread
        _deliver(net, _fragment(wi, 1, total, 100))
    assert tm.frag_bytes == 0 and tm.frag_dropped == 3 and ei.fragments is None
    for msgid in (0, 2, 3, 7, 1000, 2**31, 2**32 - 1):  # not the message ID expected
        data = bytearray(_fragment(wi, 1, 4, 100))
        data[20:24] = msgid.to_bytes(4, "big")
        _deliver(net, bytes(data))
    assert tm.frag_bytes == 0 and ei.fragments is None
    for num in (0, 5, 64, 65535):  # fragment numbers outside 1..Total
        _deliver(net, _fragment(wi, num, 4, 100))
    assert tm.frag_bytes == 0 and ei.fragments is None
    for num in range(1, 64):  # 63 of 64, 2,000 bytes each: held up to 64 KiB only
        for _ in range(3):  # each one three times: kept once
            _deliver(net, _fragment(wi, num, 64, 2000))
    assert tm.frag_bytes <= net.east.engine.settings.max_reassembled
    assert ei.fragments is not None and len(ei.fragments.parts) == 32
    assert tm.frag_bytes == sum(map(len, ei.fragments.parts.values()))


def test_fragments_of_an_sa_being_deleted_are_freed_with_it() -> None:
    """Fragments buffered for an IKE SA while its Delete is in flight go when it goes."""
    net = Net(west_kw={"fragmentation": "yes"}, east_kw={"fragmentation": "yes"})
    net.up()
    west, east = net.west.engine, net.east.engine
    wi = next(iter(west.by_serial.values()))
    ei = next(iter(east.by_serial.values()))
    net.apply(net.east, delete_ike(east, ei, net.now))  # east's Delete, not delivered
    assert ei.state is IKEState.DELETING
    net.queue.clear()
    # west sends fragments of request 0 (the next it would send) for the closing SA
    wi.next_out = ei.next_in
    for num in (1, 2):
        pkt = _fragment_of(wi, ei.next_in, num, 5, 1000)
        _deliver(net, pkt)
    assert east.tm.frag_bytes == 2000 and ei.fragments is not None
    net.advance(ei.conn.retransmit_timeout + 5)  # the Delete times out: SA dropped
    assert ei.serial not in east.by_serial
    assert east.tm.frag_bytes == 0 and ei.fragments is None
    for num in (3, 4, 5):  # the rest arrives for an SA that is gone
        _deliver(net, _fragment_of(wi, ei.next_in, num, 5, 1000))
    assert east.tm.frag_bytes == 0
    _empty(east)


def _fragment_of(wi, msgid: int, number: int, total: int, size: int) -> bytes:  # noqa: ANN001
    """``_fragment`` of an INFORMATIONAL request with message ID ``msgid``."""
    data = bytearray(_fragment(wi, number, total, size))
    data[18] = ExchangeType.INFORMATIONAL
    data[20:24] = msgid.to_bytes(4, "big")
    # the header is the AAD: encrypt again with the new one
    prot = wi.prot_out
    aad = bytes(data[:36])
    return aad + prot.encrypt(aad, b"\x00" * size)


# ------------------------------------------------------------------ established SA
def test_informational_flood_outside_the_window_is_dropped_unanswered() -> None:
    """1,000 authentic INFORMATIONAL requests and responses with message IDs far ahead
    of or behind the window: no answer, no state; the window still works after."""
    net = Net()
    net.up()
    west, east = net.west.engine, net.east.engine
    wi = next(iter(west.by_serial.values()))
    ei = next(iter(east.by_serial.values()))
    before = (ei.next_in, ei.next_out, ei.last_response, ei.outstanding, _tables(east))
    rng = random.Random(11)
    for i in range(1000):
        msgid = rng.choice((rng.randrange(ei.next_in + 1, 2**32),
                            rng.randrange(0, max(1, ei.next_in - 1))))
        if ei.last_response is not None and msgid == ei.last_response[0]:
            continue
        pkt = west.tm.encode(wi, ExchangeType.INFORMATIONAL, bool(i % 2), msgid, [])[0]
        assert _sends(_deliver(net, pkt)) == []
    assert (ei.next_in, ei.next_out, ei.last_response, ei.outstanding,
            _tables(east)) == before
    # liveness from west is still answered
    net.apply(net.west, west.tm.queue(wi, _liveness(), net.now))
    net.run()
    assert ei.next_in == before[0] + 1 and wi.outstanding is None


def _liveness():  # noqa: ANN202
    from pypluto.ike.tasks.liveness import Liveness
    return Liveness()


# ------------------------------------------------------------------ churn
def test_create_delete_loop_leaves_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that brings an IKE SA up and deletes it 15 times, each time with another
    identity (a road-warrior template: right=%any, no rightid): every table of both
    engines is back to empty, and the reqids of peer instances (one per peer ID) do not
    pile up with the churn (they did: one entry per peer ID ever seen)."""
    monkeypatch.setattr(engine_mod, "REQID_SWEEP", 4)
    net = Net(east_kw={"left": "%any", "leftid": None, "leftsubnet": None},
              west_kw={"leftsubnet": None})
    west, east = net.west.engine, net.east.engine
    sizes = []
    reqids = set()
    for i in range(15):
        wc = west.connections["west-east"]
        wc.left.id = parse_id(f"@peer{i}.example")
        net.up()
        assert net.established(net.east), i
        reqids.update(c.reqid for c in east.children_in.values())
        net.apply(net.west, west.terminate("west-east", net.now))
        net.run()
        net.advance(1.0)
        _empty(east)
        _empty(west)
        sizes.append(len(east._reqids))
    assert len(reqids) == 15  # one per peer instance, as before
    assert max(sizes) <= 5, sizes
    assert len(east.closed) <= CLOSED_MAX


def test_reqid_sweep_keeps_the_reqids_in_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep forgets only instances no Child SA holds: a peer that stays up keeps
    its reqid while others churn, and asks for the same one again."""
    monkeypatch.setattr(engine_mod, "REQID_SWEEP", 2)
    net = Net(east_kw={"left": "%any", "leftid": None, "leftsubnet": None},
              west_kw={"leftsubnet": None})
    east = net.east.engine
    net.up()
    child = next(iter(east.children_in.values()))
    conn = child.conn
    keep = child.reqid
    for i in range(10):  # other peers' instances, never used by a Child SA
        east.reqid_for(conn, f"@other{i}.example")
    assert len(east._reqids) <= 4
    assert east.reqid_for(conn, child.parent.remote_id) == keep


def test_one_source_cannot_take_the_whole_fragment_buffer() -> None:
    """An attacker at one address opens 20 half-open SAs (IKE_SA_INIT gives it keys, no
    authentication) and parks 63 KiB of IKE_AUTH fragments in each: it gets at most its
    share (1/8) of max_fragment_buffer, and a real peer's fragmented IKE_AUTH from another
    address still fits (before, the attacker filled the whole buffer and every other
    peer's fragments were dropped until its half-open SAs expired)."""
    net = Net(west_kw={"fragmentation": "yes"},
              east_kw={"fragmentation": "yes", "left": "%any"},
              west_settings=EngineSettings(fragment_size=300),
              east_settings=EngineSettings(max_fragment_buffer=999_200))
    east = net.east.engine
    attacker = ipaddress.ip_address("198.51.100.66")
    src = Endpoint(attacker, 500)
    for k in range(20):
        eng = Engine(EngineSettings(), Store(PSK), rng=random.Random(50 + k).randbytes,
                     local_addrs=[attacker])
        conn = make_conn(local_left=True, left=attacker)
        eng.add_connection(conn)
        init = _sends(eng.initiate(conn.name, net.now))[0]
        resp = _sends(east.receive(init, LOCAL, src, net.now))[0]
        eng.receive(resp, src, LOCAL, net.now)  # its IKE_AUTH is never sent on
        wi = next(iter(eng.by_serial.values()))
        for num in range(1, 64):
            east.receive(_fragment(wi, num, 64, 1000), LOCAL, src, net.now)
    held = east.tm.frag_bytes
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert 64 * 1024 < held <= 999_200 // 8 and east.tm.frag_dropped > 0
    assert any(name == "west" and d[16] == 53 for name, d in net.sent)  # it was fragmented
    assert east.tm.frag_bytes == held  # the attacker's parts are still there, no more
    net.advance(east.settings.half_open_timeout + 1)
    assert east.tm.frag_bytes == 0 and not east.tm.frag_by_src


def test_unique_marks_do_not_pile_up_with_peer_addresses(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """mark=-1 on a road-warrior template: one mark per peer address; peers from 12
    addresses come and go, and the table keeps only those in use (it kept one per
    address ever seen).  A peer that stays keeps its mark."""
    monkeypatch.setattr(engine_mod, "REQID_SWEEP", 2)
    m = (-1, 0xFFFFFFFF)
    net = Net(east_kw={"left": "%any", "leftid": None, "leftsubnet": None,
                       "mark_in": m, "mark_out": m}, west_kw={"leftsubnet": None})
    east = net.east.engine
    net.up()  # this one stays up
    stay = next(iter(east.children_in.values()))
    mark = east.xfrm_marks(stay.conn, stay.remote_addr)
    assert mark[0] is not None and mark[0][0] >= 1001
    sizes = []
    for i in range(12):
        addr = ipaddress.ip_address(f"198.18.0.{i + 1}")
        eng = Engine(EngineSettings(), Store(PSK), rng=random.Random(i).randbytes,
                     local_addrs=[addr])
        net.west = Side("west", eng, addr)
        net.apply(net.west, eng.add_connection(make_conn(
            local_left=True, left=addr, leftsubnet=None, leftid=f"@peer{i}.example")))
        net.up()
        assert len(net.established(net.east)) == 2, i
        net.apply(net.west, eng.terminate("west-east", net.now))
        net.run()
        sizes.append(len(east.unique_marks))
    assert max(sizes) <= 4, sizes
    assert east.xfrm_marks(stay.conn, stay.remote_addr) == mark
