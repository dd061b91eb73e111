"""DoS defence of the responder: cookies by load, per-source limits, bounded reassembly.

RFC 7296 §2.6 (cookies), RFC 8019 §4 (half-open limits), RFC 7383 §2.6 (fragments).
"""

from __future__ import annotations

import ipaddress
import random
import tracemalloc

from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Endpoint, Log, SendPacket
from pypluto.ike.cookies import cookie_in
from pypluto.ike.engine import Engine
from pypluto.ike.sa import IKEState
from pypluto.ike.settings import EngineSettings
from pypluto.wire import payloads as wp

from .harness import EAST, WEST, Net, Store, make_conn

IKE = "aes_gcm256-sha2_256-dh31"  # x25519: cheap key exchanges for many requests


def _responder(**settings: object) -> Engine:
    eng = Engine(EngineSettings(**settings), Store(b"k" * 32),  # type: ignore[arg-type]
                 rng=random.Random(5).randbytes, local_addrs=[EAST])
    eng.add_connection(make_conn("any", local_left=False, left="%any", leftid=None,
                                 ike=IKE))
    return eng


class Flood:
    """Makes valid IKE_SA_INIT requests from many source addresses (one engine each SPI)."""

    def __init__(self) -> None:
        self.west = Engine(EngineSettings(), Store(b"k" * 32),
                           rng=random.Random(9).randbytes, local_addrs=[WEST])
        self.conn = make_conn(local_left=True, ike=IKE)
        self.west.add_connection(self.conn)
        self.template: bytes | None = None
        self.rng = random.Random(3)

    def request(self, now: float) -> bytes:
        """A fresh IKE_SA_INIT (random SPIi) built on one real request."""
        if self.template is None:
            acts = self.west.initiate_ike(self.conn, now)
            self.template = next(a.data for a in acts if isinstance(a, SendPacket))
        return self.rng.randbytes(8) + self.template[8:]

    def source(self, i: int) -> Endpoint:
        return Endpoint(ipaddress.ip_address(f"198.51.{100 + (i >> 8) % 2}.{i % 256}"), 500)


def _cookie_of(acts: list) -> bytes | None:
    for a in acts:
        if isinstance(a, SendPacket):
            msg = codec.parse(a.data)
            for p in codec.notifies(msg.payloads):
                if p.notify_type == N.COOKIE:
                    return bytes(p.data)
    return None


def _with_cookie(req: bytes, cookie: bytes) -> bytes:
    msg = codec.parse(req)
    msg.payloads.insert(0, codec.notify(N.COOKIE, cookie))
    return codec.encode(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, True, False, 0,
                        msg.payloads)[0]


LOCAL = Endpoint(EAST, 500)


def test_rate_turns_cookies_on_and_off_again() -> None:
    eng = _responder(ddos_init_rate=50.0, ddos_hold=5.0)
    fl = Flood()
    now = 100.0
    assert not eng.status(now).dos.busy
    cookies = 0
    logs: list[str] = []
    for i in range(300):  # 200 new IKE_SA_INIT per second, each from another address
        now += 0.005
        acts = eng.receive(fl.request(now), LOCAL, fl.source(i), now)
        cookies += _cookie_of(acts) is not None
        logs += [a.message for a in acts if isinstance(a, Log) and a.level == "warning"]
    dos = eng.status(now).dos
    assert dos.busy and dos.reason == "rate" and dos.init_rate > 50
    # cookies came on after ~60 requests: the rest cost no key exchange and no state
    assert eng.n_halfopen < 80 and cookies == dos.cookies_sent > 200
    assert len([m for m in logs if m.startswith("DDoS: demanding COOKIEs")]) == 1
    # hysteresis: still busy while the hold runs, off once the pressure has ended
    acts = _advance(eng, now, 3.0)
    assert eng.status(now + 3.0).dos.busy
    acts = _advance(eng, now + 3.0, 4.0)
    assert not eng.status(now + 7.0).dos.busy
    assert any("pressure ended" in a.message for a in acts if isinstance(a, Log))


def _advance(eng: Engine, now: float, seconds: float) -> list:
    acts: list = []
    end = now + seconds
    while True:
        t = eng.next_timer()
        if t is None or t > end:
            return acts
        acts += eng.handle_timer(max(t, now))
        now = max(t, now)


def test_a_legitimate_peer_gets_in_during_a_flood() -> None:
    net = Net(east_settings=EngineSettings(ddos_init_rate=50.0))
    fl = Flood()
    for i in range(200):  # east's conn names west's address: the flood claims it too
        net.now += 0.002
        net.east.engine.receive(fl.request(net.now), LOCAL, Endpoint(WEST, 2000 + i), net.now)
    assert net.east.engine.busy()
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert any("COOKIE" in m for m in net.west.logs())
    assert net.east.engine.status(net.now).dos.cookies_accepted >= 1


def test_half_open_count_threshold_with_hysteresis() -> None:
    eng = _responder(ddos_ike_threshold=8, ddos_init_rate=0)
    fl = Flood()
    now = 100.0
    for i in range(8):
        assert _cookie_of(eng.receive(fl.request(now), LOCAL, fl.source(i), now)) is None
        now += 1.0
    assert eng.n_halfopen == 8
    assert _cookie_of(eng.receive(fl.request(now), LOCAL, fl.source(50), now)) is not None
    st = eng.status(now).dos
    assert st.busy and st.reason == "half-open" and st.ddos_ike_threshold == 8
    # the first ones expire one by one (30 s each): busy until fewer than 6 remain
    half = eng.settings.half_open_timeout
    _advance(eng, now, half - 8 + 1.5)  # two expired: 6 left
    assert eng.n_halfopen == 6 and eng.busy()
    _advance(eng, now + half - 8 + 1.5, 1.9)  # 4 or 5 left, and the 1 s check has run
    assert eng.n_halfopen in (4, 5) and not eng.busy()


def test_per_source_quota_asks_cookies_then_drops() -> None:
    eng = _responder(halfopen_per_addr=4)
    fl = Flood()
    src = Endpoint(ipaddress.ip_address("203.0.113.7"), 500)
    now = 100.0
    for _ in range(4):
        assert _cookie_of(eng.receive(fl.request(now), LOCAL, src, now)) is None
    assert eng.n_halfopen == 4 and not eng.busy()
    # over the quota: this source must prove its address (another source need not)
    req = fl.request(now)
    cookie = _cookie_of(eng.receive(req, LOCAL, src, now))
    assert cookie is not None and eng.n_halfopen == 4
    other = Endpoint(ipaddress.ip_address("203.0.113.8"), 500)
    assert _cookie_of(eng.receive(fl.request(now), LOCAL, other, now)) is None
    eng.receive(_with_cookie(req, cookie), LOCAL, src, now)
    assert eng.n_halfopen == 6
    for _ in range(3):  # cookie-bearing requests up to twice the quota
        req = fl.request(now)
        c = _cookie_of(eng.receive(req, LOCAL, src, now))
        assert c is not None
        eng.receive(_with_cookie(req, c), LOCAL, src, now)
    assert eng.dos.addr_count(src.addr.packed) == 8
    acts = eng.receive(fl.request(now), LOCAL, src, now)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert eng.status(now).dos.dropped_per_addr == 1


def test_modes_busy_and_unlimited() -> None:
    fl = Flood()
    busy = _responder(ddos_mode="busy")
    assert _cookie_of(busy.receive(fl.request(1.0), LOCAL, fl.source(1), 1.0)) is not None
    assert busy.status(1.0).dos.reason == "forced" and busy.n_halfopen == 0
    unl = _responder(ddos_mode="unlimited", ddos_init_rate=5.0, ddos_ike_threshold=1)
    now = 1.0
    for i in range(40):
        now += 0.01
        assert _cookie_of(unl.receive(fl.request(now), LOCAL, fl.source(i), now)) is None
    assert unl.n_halfopen == 40 and not unl.busy()


def test_max_halfopen_ike_drops_new_requests() -> None:
    eng = _responder(max_halfopen_ike=3, ddos_init_rate=0)
    fl = Flood()
    for i in range(5):
        eng.receive(fl.request(1.0), LOCAL, fl.source(i), 1.0)
    st = eng.status(1.0).dos
    assert eng.n_halfopen == 3 and st.dropped_halfopen_full == 2 and st.max_halfopen_ike == 3


def test_cookie_check_is_stateless_and_secret_rotates() -> None:
    eng = _responder(force_busy=True, cookie_secret_lifetime=10.0)
    fl = Flood()
    src = fl.source(1)
    req = fl.request(1.0)
    acts = eng.receive(req, LOCAL, src, 1.0)
    cookie = _cookie_of(acts)
    assert cookie is not None and not eng.by_serial and not eng.ike_sas
    # the answer is HDR(SPIi, 0) N(COOKIE): an IKE_SA_INIT response
    hdr = codec.peek(next(a.data for a in acts if isinstance(a, SendPacket)))
    assert hdr.response and not hdr.initiator and hdr.spi_i == req[:8] and \
        hdr.spi_r == bytes(8) and hdr.exchange == ExchangeType.IKE_SA_INIT
    # a wrong cookie, another source or another SPI: asked again, counted
    bad = bytearray(cookie)
    bad[5] ^= 1
    assert _cookie_of(eng.receive(_with_cookie(req, bytes(bad)), LOCAL, src, 1.0))
    assert _cookie_of(eng.receive(_with_cookie(req, cookie), LOCAL, fl.source(2), 1.0))
    assert eng.status(1.0).dos.cookies_rejected == 2 and not eng.by_serial
    # the secret rotates while cookies are in use; the previous one is still honoured
    _advance(eng, 1.0, 11.0)
    assert eng.dos.version == 1
    assert _cookie_of(eng.receive(_with_cookie(req, cookie), LOCAL, src, 12.0)) is None
    assert eng.n_halfopen == 1
    _advance(eng, 12.0, 11.0)
    req2 = fl.request(25.0)
    eng.receive(req2, LOCAL, src, 25.0)  # rotates again at the next use
    _advance(eng, 25.0, 11.0)
    assert eng.dos.version == 2
    old = _with_cookie(req2[:8] + req[8:], cookie)
    assert _cookie_of(eng.receive(old, LOCAL, src, 37.0)) is not None


def test_cookie_must_be_the_first_payload() -> None:
    assert cookie_in(b"\x00" * 20) is None
    req = Flood().request(1.0)
    msg = codec.parse(req)
    msg.payloads.append(codec.notify(N.COOKIE, b"x" * 17))
    late = codec.encode(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, True, False, 0,
                        msg.payloads)[0]
    assert cookie_in(late) is None
    assert cookie_in(_with_cookie(req, b"y" * 17)) == b"y" * 17


def test_busy_flood_keeps_no_memory() -> None:
    """When busy, a request without a valid cookie allocates nothing that stays."""
    eng = _responder(force_busy=True)
    fl = Flood()
    reqs = [(fl.request(1.0), fl.source(i)) for i in range(3000)]
    eng.receive(reqs[0][0], LOCAL, reqs[0][1], 1.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for data, src in reqs[1:]:
        eng.receive(data, LOCAL, src, 1.0)
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert not eng.by_serial and eng.n_halfopen == 0
    assert eng.status(1.0).dos.cookies_sent == 3000
    assert grown < 16 * 1024, grown


# ------------------------------------------------------------------ RFC 7383
def _half_open_pair(net: Net):  # noqa: ANN202
    """west's IKE SA with keys (INIT done) and east's half-open SA, IKE_AUTH not sent."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # IKE_SA_INIT request to east
    frm, pkt = net.queue.pop(0)  # east's answer: deliver it, hold west's IKE_AUTH
    net.apply(net.west, net.west.engine.receive(pkt.data, pkt.remote, pkt.local, net.now))
    net.queue.clear()
    wi = next(iter(net.west.engine.by_serial.values()))
    ei = next(iter(net.east.engine.by_serial.values()))
    assert wi.state is IKEState.AUTH_I and ei.state is IKEState.INIT_R
    return wi, ei


def _fragment(wi, number: int, total: int, size: int) -> bytes:  # noqa: ANN001
    """One SKF fragment of IKE_AUTH message 1 from west, encrypted with its SK_ei."""
    prot = wi.prot_out
    body_len = prot.body_length(size)
    hdr_len = 28 + 8
    skf = wp.SKFPayload(first_inner=35 if number == 1 else 0, fragment_number=number,
                        total_fragments=total, body=b"")
    msg_len = hdr_len + body_len
    import struct
    head = struct.pack("!8s8sBBBBII", wi.spi_i, wi.spi_r, 53, 0x20, 35, 0x08, 1, msg_len)
    gen = struct.pack("!BBHHH", skf.first_inner, 0, 4 + 4 + body_len, number, total)
    aad = head + gen
    return aad + prot.encrypt(aad, b"\x00" * size)


def test_fragment_hoarding_before_auth_is_bounded() -> None:
    """8 half-open SAs, fragments 1-63 of a declared 64 each: held memory stays bounded."""
    nets = [Net(seed=10 + k) for k in range(8)]
    pairs = [_half_open_pair(n) for n in nets]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for net, (wi, _ei) in zip(nets, pairs, strict=True):
        for num in range(1, 64):
            data = _fragment(wi, num, 64, 57000)
            net.apply(net.east, net.east.engine.receive(data, Endpoint(EAST, 500),
                                                        Endpoint(WEST, 500), net.now))
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 2 * 1024 * 1024, grown
    for net, (_wi, ei) in zip(nets, pairs, strict=True):
        tm = net.east.engine.tm
        assert tm.frag_dropped >= 31 and tm.frag_bytes <= 65536  # every other one
        assert ei.fragments is None or sum(map(len, ei.fragments.parts.values())) <= 65536
        st = net.east.engine.status(net.now).dos
        assert st.fragments_dropped == tm.frag_dropped and st.max_reassembled == 65536


def test_fragments_within_caps_still_reassemble_and_release() -> None:
    net = Net(west_kw={"fragmentation": "yes"}, east_kw={"fragmentation": "yes"},
              west_settings=EngineSettings(fragment_size=300))
    net.up()
    assert net.established(net.east) and net.established(net.west)
    assert any(name == "west" and codec.peek(d).next_payload == 53 for name, d in net.sent)
    assert net.east.engine.tm.frag_bytes == 0 and net.east.engine.tm.frag_dropped == 0


def test_global_fragment_cap() -> None:
    nets = [Net(seed=30 + k, east_settings=EngineSettings(max_fragment_buffer=100_000))
            for k in range(1)]
    net = nets[0]
    wi, ei = _half_open_pair(net)
    for num in range(1, 10):
        net.apply(net.east, net.east.engine.receive(_fragment(wi, num, 20, 30000),
                                                    Endpoint(EAST, 500), Endpoint(WEST, 500),
                                                    net.now))
    tm = net.east.engine.tm
    assert tm.frag_dropped >= 1 and tm.frag_bytes <= 65536


def test_expired_half_open_sa_gives_its_fragments_back() -> None:
    net = Net()
    wi, ei = _half_open_pair(net)
    for num in range(1, 4):
        net.apply(net.east, net.east.engine.receive(_fragment(wi, num, 10, 1000),
                                                    Endpoint(EAST, 500), Endpoint(WEST, 500),
                                                    net.now))
    assert net.east.engine.tm.frag_bytes == 3000
    net.west.engine = Engine(EngineSettings(), Store(None), local_addrs=[WEST])  # gone quiet
    net.advance(net.east.engine.settings.half_open_timeout + 1)
    assert net.east.engine.n_halfopen == 0 and net.east.engine.tm.frag_bytes == 0


def test_no_fragments_of_other_exchanges_before_auth() -> None:
    net = Net()
    wi, ei = _half_open_pair(net)
    data = bytearray(_fragment(wi, 1, 4, 1000))
    data[18] = ExchangeType.INFORMATIONAL
    net.apply(net.east, net.east.engine.receive(bytes(data), Endpoint(EAST, 500),
                                                Endpoint(WEST, 500), net.now))
    assert ei.fragments is None and net.east.engine.tm.frag_bytes == 0


def test_config_setup_reaches_the_guard() -> None:
    """ddos-mode=, ddos-ike-threshold=, max-halfopen-ike= from ``config setup``."""
    from pypluto.config.parser import parse_config_text

    text = ("config setup\n\tddos-mode=unlimited\n\tddos-ike-threshold=100\n"
            "\tmax-halfopen-ike=150\n")
    setup = parse_config_text(text).setup
    st = EngineSettings.from_setup(setup)
    assert (st.ddos_mode, st.ddos_ike_threshold, st.max_halfopen_ike) == ("unlimited", 100, 150)
    eng = Engine(st, Store(None))
    dos = eng.status(0.0).dos
    assert (dos.mode, dos.ddos_ike_threshold, dos.max_halfopen_ike, dos.busy) == \
        ("unlimited", 100, 150, False)
