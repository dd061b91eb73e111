"""Red team of the userspace ESP/AH packet code (round 26): RFC 4303, RFC 4302, RFC 4301 §5.

Only what tests/kernel/test_esp.py, test_esp_hostile.py, test_plane_redteam24.py,
test_seqnum.py and test_ah.py do not cover already; their helpers (hand-keyed SAs,
:func:`seal` with the real keys, the AH pair and an independent MAC) are imported.
Pure unit tests on InboundSA/OutboundSA/InboundAH/OutboundAH objects: no daemon,
no namespaces, no sockets.
"""

from __future__ import annotations

import random
import struct

import pytest
from test_ah import ALGS as AH_ALGS
from test_ah import ICMP, INNER4, mac, v6
from test_ah import pair as ah_pair
from test_esp_hostile import (
    ALG_IDS,
    ALGS,
    PATH_IDS,
    PATHS,
    SPI,
    Decap,
    framed,
    inbound,
    ipv4,
    ipv6,
    outbound,
    seal,
    trailer,
)

from pypluto.iana import Integ
from pypluto.kernel import ah, esp
from pypluto.kernel.seqnum import infer_seq
from pypluto.params import SAExpire

WRAP = 1 << 32
LAST = (1 << 64) - 1  # the last ESN a sender may use (RFC 4303 §3.3.3)

# the three kinds of ESP transform object: AES-GCM-16 (fast path), AES-CBC + HMAC
# (encrypt-then-MAC), AES-CCM (shared AEAD)
KINDS = [ALGS[0], ALGS[2], ALGS[3]]
KIND_IDS = ["gcm", "cbc", "ccm"]


# --- ESN inference (RFC 4303 Appendix A2.2) -------------------------------------------


@pytest.mark.parametrize("window", [1, 32, 64, 4096])
def test_esn_inference_finds_the_true_number_near_every_boundary(window: int) -> None:
    """For a top T and window W, every number the sender can have used that is in the
    window [T-W+1, T] or ahead of it by less than 2**32 - W is inferred exactly from
    its low 32 bits, for tops around 0, around each 2**32 boundary, and in the last
    subspace; and the result never leaves 64 bits (before the fix a top in the last
    subspace inferred a high half of 2**32 for any low number below the window, which
    no struct packs: decap raised)."""
    rnd = random.Random(window)
    tops = [window, window + 5, WRAP - 1, WRAP, WRAP + 1, WRAP + window - 2,
            WRAP + window - 1, 7 * WRAP + 3, LAST - WRAP, LAST - window, LAST - 1, LAST]
    for top in tops:
        cands = {max(1, top - window + 1), top, top + 1}
        cands |= {top - d for d in range(min(window, top)) if d < 3 or window - d < 3}
        cands |= {top + rnd.randrange(1, WRAP - window) for _ in range(40)}
        cands |= {top + WRAP - window - 1, top + WRAP - window - 2}
        for seq in sorted(cands):
            if not 0 < seq <= LAST:
                continue
            assert infer_seq(top, window, seq & 0xFFFFFFFF) == seq, (hex(top), hex(seq))
        for lo in (0, 1, 2, (top - window) & 0xFFFFFFFF, 0xFFFFFFFF, rnd.randrange(WRAP)):
            assert 0 <= infer_seq(top, window, lo) <= LAST, (hex(top), lo)


@pytest.mark.parametrize("alg", KINDS, ids=KIND_IDS)
def test_esn_window_in_the_last_subspace_never_raises(alg: tuple[int, int, int, int]) -> None:
    """An ESN SA whose window is in the last 2**32 subspace (a peer holding the keys
    pushed it there; RFC 4303 §3.3.3 makes 2**64 - 1 its last number): anyone's packet
    whose low bits are below the window is a clean replay drop on decap and
    decap_batch, never an exception out of the data plane; the last genuine numbers
    up to 2**64 - 1 are still accepted."""
    out, inb = outbound(alg, esn=True, window=64), inbound(alg, esn=True, window=64)
    p = framed(out, ipv4())
    inb.top, inb.bitmap = LAST - 100, 1
    assert inb.decap(seal(out, LAST - 50, p)) is not None and inb.top == LAST - 50
    junk = struct.pack("!II", SPI, 5) + bytes(range(80))
    low_genuine_looking = seal(out, 7, p)  # sealed for 7, arrives far too late
    assert inb.decap(junk) is None
    assert inb.decap_batch([memoryview(junk), memoryview(low_genuine_looking)]) == []
    assert inb.stats.replay_drops == 3 and inb.stats.integrity_failures == 0
    assert inb.decap(seal(out, LAST, p)) is not None and inb.top == LAST
    assert inb.decap_batch([memoryview(seal(out, LAST - 1, p))]) != []
    assert inb.decap(junk) is None and inb.stats.replay_drops == 4


def test_ah_esn_window_in_the_last_subspace_is_a_replay_drop() -> None:
    """As for ESP: AH with a window in the last subspace counts a packet with low bits
    below the window as a replay (before the fix: malformed, from the struct error)."""
    out, inb = ah_pair(esn=True, window=64)
    out.seq = LAST - 51
    inb.top, inb.bitmap = LAST - 100, 1
    w = out.encap(INNER4)
    assert w is not None and inb.decap(w) == INNER4 and inb.top == LAST - 50
    fresh, _ = ah_pair(esn=True, window=64)
    stale = fresh.encap(INNER4)  # seq 1 with another key
    assert stale is not None and inb.decap(stale) is None
    assert inb.stats.replay_drops == 1 and inb.malformed == 0


# --- the replay window of every configured size, across 2**32 (RFC 4303 §3.4.3, A2) -----


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("window", [32, 64, 4096])
def test_esn_window_straddling_two_subspaces_for_configured_sizes(window: int,
                                                                  path: Decap) -> None:
    """Top just past 2**32 with the window reaching back into the previous subspace
    (Appendix A2.2 Case B): the oldest number of the old subspace inside the window is
    accepted once; the one just left of it is inferred as the next subspace (it cannot
    be told apart), fails the ICV and moves nothing; a duplicate of the top is a
    replay; a jump far ahead slides the whole window, after which Case A places a low
    number in the next subspace."""
    out, inb = outbound(esn=True, window=window), inbound(esn=True, window=window)
    p = framed(out, ipv4())
    top = WRAP + 3
    inb.top, inb.bitmap = WRAP - 2 * window, 1
    assert path(inb, seal(out, top, p)) is not None and inb.top == top
    edge = top - window + 1  # below 2**32: the previous subspace
    assert edge < WRAP
    assert path(inb, seal(out, edge, p)) is not None
    assert path(inb, seal(out, edge, p)) is None and inb.stats.replay_drops == 1
    state = (inb.top, inb.bitmap)
    assert path(inb, seal(out, edge - 1, p)) is None
    assert inb.stats.integrity_failures == 1 and (inb.top, inb.bitmap) == state
    assert path(inb, seal(out, top, p)) is None and inb.stats.replay_drops == 2
    far = 2 * WRAP - window + 3  # the highest Case B places in this subspace: a slide
    assert path(inb, seal(out, far, p)) is not None and inb.top == far and inb.bitmap == 1
    assert path(inb, seal(out, top, p)) is None  # now inferred in subspace 2: ICV fails
    assert inb.stats.integrity_failures == 2 and inb.top == far
    nxt = 2 * WRAP + 10  # Case A: a low number below the window is the next subspace
    assert path(inb, seal(out, nxt, p)) is not None and inb.top == nxt


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", KINDS, ids=KIND_IDS)
def test_replay_window_zero_is_off(alg: tuple[int, int, int, int], path: Decap) -> None:
    """replay-window=0 turns the check off (RFC 4303 §3.4.3: the receiver may disable
    it): duplicates, old numbers and zero are delivered and counted; the top still
    follows the highest number.  (ESN with no window is refused by the configuration,
    as Libreswan forces esn=no: the high bits need a window.)"""
    out, inb = outbound(alg, window=0), inbound(alg, window=0)
    p = framed(out, ipv4())
    for s in (1000, 1000, 3, 999, 0, 1000):
        assert path(inb, seal(out, s, p)) is not None, s
    assert inb.top == 1000 and inb.stats.replay_drops == 0 and inb.stats.packets == 6


# --- sequence number exhaustion and soft expiry (RFC 4303 §3.3.3, RFC 4302 §3.3.2) -------


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("alg", KINDS, ids=KIND_IDS)
@pytest.mark.parametrize("esn", [False, True])
def test_soft_sequence_expiry_is_reported_once(alg: tuple[int, int, int, int], mode: str,
                                               esn: bool) -> None:
    """The "rekey soon" event for the sequence number fires once, on the packet that
    takes the soft number: packets refused there (not IP, a transport-mode fragment
    kept for its datagram) do not take it, so before the fix each of them reported the
    soft expiry again.  The hard limit: the last number is sent, the next is refused,
    reported once, and nothing more goes out."""
    events: list[SAExpire] = []
    out = outbound(alg, esn=esn, mode=mode)
    out.on_expire = events.append
    out.seq = out.seq_soft - 1
    assert out.encap(b"") is None and out.encap(b"\x10" * 40) is None
    if mode == "transport":  # a first fragment waits for the rest of its datagram
        assert out.encap(ipv4(l4=b"f" * 16, frag=0x2000)) is None
    assert events == [] and out.seq == out.seq_soft - 1
    assert out.encap(ipv4()) is not None and out.seq == out.seq_soft
    assert out.encap_batch([b"", ipv4(), ipv4()]) != []
    assert [(e.hard, e.reason) for e in events] == [(False, "seq")]
    out.seq = out.seq_max - 2
    got = out.encap_batch([ipv4(), b"\x10" * 30, ipv4(), ipv4(), ipv4()])
    assert len(got) == 2 and out.seq == out.seq_max and out.dead
    assert struct.unpack_from("!I", got[-1], 4)[0] == out.seq_max & 0xFFFFFFFF
    assert out.encap(ipv4()) is None and out.seq_exhausted == 1
    assert [(e.hard, e.reason) for e in events] == [(False, "seq"), (True, "seq")]


def test_ah_soft_sequence_expiry_is_reported_once() -> None:
    """As for ESP: AH reports the soft sequence expiry once, on the packet taking it."""
    events: list[SAExpire] = []
    out, _ = ah_pair(mode="transport")
    out.on_expire = events.append
    out.seq = out.seq_soft - 1
    assert out.encap(b"") is None and out.encap(v6("2001:db8::1", "2001:db8::2", 17, b"x")) is None
    frag = bytearray(INNER4)
    frag[6] |= 0x20  # MF: transport mode takes whole datagrams only
    assert out.encap(bytes(frag)) is None and events == []
    assert out.encap(INNER4) is not None and out.encap(INNER4) is not None
    assert [(e.hard, e.reason) for e in events] == [(False, "seq")]


# --- lifetimes count authenticated, delivered packets only (RFC 4301 §4.4.2.1) ----------


@pytest.mark.parametrize("alg", KINDS, ids=KIND_IDS)
def test_lifetimes_count_only_delivered_packets_and_fire_once(
        alg: tuple[int, int, int, int]) -> None:
    """Forgeries, replays, authenticated packets with a lying trailer and dummy packets
    do not count against the byte/packet lifetimes; soft and hard each fire once, also
    when a batch crosses both; after the hard limit nothing is delivered."""
    events: list[SAExpire] = []
    out = outbound(alg)
    inb = inbound(alg, soft_packets=3, hard_packets=6)
    inb.on_expire = events.append
    p = framed(out, ipv4())
    assert inb.decap(seal(out, 1, p)) is not None
    forged = bytearray(seal(out, 2, p))
    forged[-1] ^= 0x80
    junk = [bytes(forged), seal(out, 1, p), seal(out, 3, bytes(out.t.block - 2) + b"\xc8\x04"),
            seal(out, 4, framed(out, b"tfc-dummy", 59))]
    for w in junk * 3:
        assert inb.decap(w) is None
    assert inb.decap_batch([memoryview(w) for w in junk]) == []
    assert inb.stats.packets == 1 and events == []
    batch = [memoryview(seal(out, s, p)) for s in range(5, 12)]
    assert len(inb.decap_batch(batch)) == 5  # 2..6: the sixth hits the hard limit
    assert [(e.hard, e.reason) for e in events] == [(False, "packets"), (True, "packets")]
    assert inb.dead and inb.stats.packets == 6
    assert inb.decap(seal(out, 20, p)) is None and len(events) == 2


# --- the trailer and the next header (RFC 4303 §2.4-2.7) --------------------------------


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
def test_mixed_families_in_a_tunnel_and_dummies_in_transport_mode(
        alg: tuple[int, int, int, int], path: Decap) -> None:
    """Tunnel mode carries an IPv6 packet in an IPv4 SA (and the reverse, RFC 4301
    §5.1.2.1); a dummy (next header 59, §2.6) is dropped silently in both modes, not
    malformed, not delivered, and not counted as traffic; an empty transport payload
    is delivered as what it says (an IP header alone, as XFRM does)."""
    out, inb = outbound(alg), inbound(alg)
    p6 = ipv6()
    assert path(inb, seal(out, 1, framed(out, p6, 41))) == p6
    tout, tin = outbound(alg, mode="transport"), inbound(alg, mode="transport")
    for s, plain in enumerate([framed(tout, b"", 59), framed(tout, b"x" * 40, 59),
                               b"\x01\x02\x02\x3b" * (tout.t.block // 4)], 1):
        assert path(tin, seal(tout, s, plain)) is None
    assert tin.malformed == 0 and tin.stats.packets == 0 and tin.top == 3
    got = path(tin, seal(tout, 4, framed(tout, b"", 17)))
    assert got is not None and len(got) == 20 and got[9] == 17
    assert struct.unpack_from("!H", got, 2)[0] == 20


# --- fuzz: nothing raises, every drop has one counted reason ----------------------------


def _drops(inb: esp.InboundSA) -> int:
    s = inb.stats
    return inb.malformed + s.replay_drops + s.integrity_failures + (s.selector_drops or 0)


@pytest.mark.parametrize("esn", [False, True], ids=["seq32", "esn"])
@pytest.mark.parametrize("alg", ALGS, ids=ALG_IDS)
def test_mutations_of_a_valid_packet_are_clean_counted_drops(
        alg: tuple[int, int, int, int], esn: bool) -> None:
    """A seeded loop of random mutations (byte flips, cuts, extensions, splices, a
    changed sequence number) of valid packets, through decap and decap_batch: never
    raises, never delivers, every packet is counted under exactly one reason, and the
    window does not move (RFC 4303 §3.4.3: integrity first).  (The SPI is left alone:
    the SA is found by it, RFC 4303 §3.4.2, so an InboundSA only sees its own; the ESN
    fast path authenticates the SA's SPI rather than re-reading it.)"""
    rnd = random.Random(hash((alg, esn)) & 0xFFFF)
    mode = "transport" if alg[0] % 2 else "tunnel"
    out = outbound(alg, esn=esn, mode=mode)
    inb = inbound(alg, esn=esn, mode=mode, window=64)
    base = [seal(out, s, framed(out, ipv4(l4=bytes(rnd.randrange(256) for _ in range(n))),
                                4 if mode == "tunnel" else 17))
            for s, n in ((WRAP + 100 if esn else 100, 10), (90, 0), (101, 300))]
    if esn:
        inb.top, inb.bitmap = WRAP + 99, 1
    else:
        inb.top, inb.bitmap = 99, 1
    state = (inb.top, inb.bitmap)
    muts: list[bytes] = []
    for _ in range(300):
        w = bytearray(rnd.choice(base))
        k = rnd.randrange(5)
        if k == 0:
            for _ in range(rnd.randrange(1, 4)):
                w[rnd.randrange(len(w))] ^= 1 << rnd.randrange(8)
        elif k == 1:
            del w[rnd.randrange(len(w)):]
        elif k == 2:
            w += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        elif k == 3:
            other = rnd.choice(base)
            at = rnd.randrange(8, min(len(w), len(other)))
            w[at:] = other[at:]
        else:
            struct.pack_into("!I", w, 4, rnd.choice([0, 1, 99, 101, 0xFFFFFFFF,
                                                     rnd.randrange(WRAP)]))
        if bytes(w) not in base:
            muts.append(bytes(w))
    for i, m in enumerate(muts):
        before = _drops(inb)
        assert inb.decap(m) is None, i
        assert _drops(inb) == before + 1, i
    before = _drops(inb)
    assert inb.decap_batch([memoryview(m) for m in muts]) == []
    assert _drops(inb) == before + len(muts)
    assert (inb.top, inb.bitmap) == state and inb.stats.packets == 0


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("mode", ["tunnel", "transport"])
@pytest.mark.parametrize("alg", KINDS + [ALGS[4]], ids=KIND_IDS + ["chacha"])
def test_authenticated_garbage_plaintexts_are_delivered_well_formed_or_counted(
        alg: tuple[int, int, int, int], mode: str, path: Decap) -> None:
    """A peer holding the keys seals random plaintexts: random bytes, random pad
    lengths and contents, any next header, inner packets with lying lengths.  Never
    raises; what is delivered is a well-formed packet of the family the next header
    names whose own length is exactly what is delivered; everything else is counted
    as malformed, except dummies (next header 59), which are silent."""
    rnd = random.Random(len(mode) * 1000 + alg[0])
    out, inb = outbound(alg, mode=mode), inbound(alg, mode=mode)
    delivered = 0
    for seq in range(1, 301):
        k = rnd.randrange(4)
        if k == 0:
            plain = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 70)))
        else:
            inner = ipv4(l4=bytes(rnd.randrange(6, 60))) if k < 3 else ipv6()
            if rnd.random() < 0.5:
                cut = rnd.randrange(len(inner) + 1)
                inner = inner[:cut] + bytes(rnd.randrange(0, 30))
            nh = rnd.choice([4, 41, 59, 17, 6, 0, 255])
            plain = inner + trailer(len(inner), out.t.block, nh)
            if rnd.random() < 0.3:
                padl = rnd.randrange(256)
                plain = plain[:-2] + bytes((padl, plain[-1]))
        ln = len(plain)
        if ln % out.t.block:  # the cipher needs whole blocks: pad the front
            plain = bytes(out.t.block - ln % out.t.block) + plain
        nh = plain[-1] if plain else -1
        malformed = inb.malformed
        got = path(inb, seal(out, seq, plain))
        if got is None:
            assert inb.malformed == malformed + 1 or nh == 59, plain.hex()
            continue
        delivered += 1
        v = got[0] >> 4
        assert esp.inner_length(got, v) == len(got), got.hex()
        if mode == "tunnel":
            assert (v, nh) in ((4, 4), (6, 41))
        else:
            assert v == 4 and got[9] == nh
    assert delivered + inb.malformed <= 300
    assert inb.stats.packets == delivered and inb.stats.integrity_failures == 0


# --- AH: fragments, extension headers (RFC 4302 §3.4.1, §3.3.3.1.2) ---------------------


@pytest.mark.parametrize("mode", ["tunnel", "transport"])
def test_ah_ipv4_fragment_is_discarded(mode: str) -> None:
    """RFC 4302 §3.4.1: a packet offered to AH that looks like a fragment (More
    Fragments set or a non-zero offset) MUST be discarded.  These fields are zeroed in
    the ICV, so anyone on the path can set them on a genuine packet: before the fix it
    verified and was delivered (in transport mode with MF still set, as a fragment).
    Dropped, counted as malformed, the window untouched; the packet as sent is still
    accepted."""
    out, inb = ah_pair(mode=mode)
    w = out.encap(INNER4)
    assert w is not None
    for b6, b7 in ((0x20, 0), (0, 1), (0x01, 0), (0x3F, 0xFF), (0x60, 0)):
        bad = bytearray(w)
        bad[6] = (bad[6] & 0x40) | b6
        bad[7] = b7
        assert inb.decap(bytes(bad)) is None, (b6, b7)
    assert inb.malformed == 5 and inb.top == 0 and inb.stats.integrity_failures == 0
    df = bytearray(w)
    df[6] ^= 0x40  # DF alone is no fragment (and is zeroed in the ICV)
    got = inb.decap(bytes(df))
    assert got is not None and inb.top == 1


def test_ah_ipv6_destination_options_before_ah() -> None:
    """RFC 4302 §3.3.3.1.2.2: a destination options header before AH (after the
    hop-by-hop header) is covered, with the data of its "may change" options (type bit
    0x20) zeroed.  The ICV here is computed by hand over hand-zeroed headers: a change
    of mutable option data still verifies, a change of immutable data does not; a
    routing header before AH (not supported) and a chain running past the packet are
    malformed, never raised."""
    integ = Integ.HMAC_SHA2_256_128
    key = bytes(range(AH_ALGS[integ][0]))
    _, inb = ah_pair(integ, fam=6, mode="transport", key=key)
    icvn = AH_ALGS[integ][1]
    hbh = bytes([60, 0, 0x01, 4, 0, 0, 0, 0])  # -> destination options; PadN
    dst = bytes([51, 0, 0x3E, 2, 0xAA, 0xBB, 0x1E, 0])  # -> AH; mutable 0x3E, immutable 0x1E
    ahlen = (12 + icvn + 7) // 8 * 8  # IPv6: 64-bit aligned (RFC 4302 §2.6)
    ahh = struct.pack("!BBHII", 58, ahlen // 4 - 2, 0, 0x1001, 1)
    ext = hbh + dst
    body = ext + ahh + bytes(ahlen - 12) + ICMP
    pkt = bytearray(v6("2001:db8::1", "2001:db8::2", 0, body, hlim=9, flow=0x12345))
    zeroed = bytearray(pkt)
    zeroed[0:4] = b"\x60\0\0\0"  # traffic class, flow label
    zeroed[7] = 0  # hop limit
    zeroed[52:54] = b"\0\0"  # the data of the mutable destination option
    at = 40 + len(ext) + 12
    pkt[at:at + icvn] = mac(integ, key, bytes(zeroed))
    got = inb.decap(bytes(pkt))
    assert got is not None and got[48] == 58 and got.endswith(ICMP)
    assert struct.unpack_from("!H", got, 4)[0] == len(got) - 40 and len(got) == len(pkt) - ahlen
    moved = bytearray(pkt)
    moved[52:54] = b"\x11\x22"  # changed en route: mutable option data, hop limit, flow
    moved[7] = 1
    moved[3] ^= 0x55
    inb.bitmap = inb.top = 0  # the same packet once more
    assert inb.decap(bytes(moved)) is not None
    inb.bitmap = inb.top = 0
    moved[54] = 0x1F  # an immutable option's type
    assert inb.decap(bytes(moved)) is None and inb.stats.integrity_failures == 1
    routed = bytearray(pkt)
    routed[40] = 43  # hop-by-hop -> routing header before AH
    long_chain = bytearray(pkt)
    long_chain[49] = 200  # destination options length past the packet
    for bad in (routed, long_chain, pkt[:60]):
        assert inb.decap(bytes(bad)) is None
    assert inb.malformed == 3 and ah.ah_spi(bytes(long_chain)) is None


# --- ENCR_NULL_AUTH_AES_GMAC (RFC 4543) --------------------------------------------------


@pytest.mark.parametrize("esn", [False, True])
def test_null_auth_aes_gmac_authenticates_the_iv_as_rfc_4543_says(esn: bool) -> None:
    """RFC 4543 §3.3: with ENCR_NULL_AUTH_AES_GMAC the GMAC input (AAD) is SPI ‖
    sequence number (64 bits with ESN) ‖ IV ‖ the cleartext payload with its trailer;
    the payload goes on the wire in the clear.  Linux's rfc4543 template (what a
    Libreswan peer's XFRM uses) and scapy build it so.  The packets here are built with
    cryptography's AES-GCM directly: before the fix the IV was left out of the AAD, so
    nothing we sent verified at such a peer and nothing it sent verified here."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from pypluto.crypto.registry import Encr

    alg = (Encr.NULL_AUTH_AES_GMAC, 20, 0, 0)
    key = bytes(range(7, 27))
    gmac = AESGCM(key[:16])
    salt = key[16:]
    out = outbound(alg, esn=esn, key=key)
    inb = inbound(alg, esn=esn, key=key)
    seq = (3 << 32 | 9) if esn else 9
    out.seq = seq - 1
    inner = ipv4(l4=b"gmac-payload")
    plain = framed(out, inner)
    lo = seq & 0xFFFFFFFF
    hdr = struct.pack("!II", SPI, lo)
    aad = struct.pack("!III", SPI, seq >> 32, lo) if esn else hdr

    def build(iv: bytes) -> bytes:
        return hdr + iv + plain + gmac.encrypt(salt + iv, b"", aad + iv + plain)

    ours = out.encap(inner)
    assert ours == build(struct.pack("!Q", seq))  # our IV is the sequence number
    assert ours[16:16 + len(plain)] == plain  # authenticated, not encrypted
    inb.top, inb.bitmap = seq - 1, 1
    theirs = build(bytes(range(0xA0, 0xA8)))  # any IV the peer chose
    assert inb.decap(theirs) == inner and inb.top == seq
    inb.top, inb.bitmap = seq - 1, 1
    changed_iv = bytearray(theirs)
    changed_iv[8] ^= 1  # the IV is covered
    assert inb.decap(bytes(changed_iv)) is None and inb.stats.integrity_failures == 1
    no_iv = hdr + b"\0" * 8 + plain + gmac.encrypt(salt + bytes(8), b"", aad + plain)
    assert inb.decap(no_iv) is None and inb.stats.integrity_failures == 2


@pytest.mark.parametrize("fam", [4, 6])
def test_ah_outbound_packet_with_broken_options_is_refused_not_raised(fam: int) -> None:
    """Transport-mode AH covers the packet's own IPv4 options / IPv6 hop-by-hop options
    with their mutable data zeroed (RFC 4302 §3.3.3.1); a packet from this host whose
    options cannot be parsed (a raw socket may write one) has no ICV input.  Before
    the fix encap and encap_batch raised MalformedPacket out of the TUN drain, after
    taking a sequence number.  Refused, counted as malformed, no number used; the next
    packet carries 1 and verifies."""
    from test_ah import v4

    out, inb = ah_pair(fam=fam, mode="transport")
    if fam == 4:
        bad = [v4("192.0.2.1", "192.0.2.2", 17, b"x" * 12, options=o)
               for o in (bytes([7, 0, 0, 0]), bytes([7, 40, 0, 0]), bytes([131, 3, 0, 0]))]
        good = v4("192.0.2.1", "192.0.2.2", 17, b"x" * 12, options=bytes([148, 4, 0, 0]))
    else:
        bad = [v6("2001:db8::1", "2001:db8::2", 0, h + ICMP)
               for h in (bytes([58, 0, 0x3E, 9, 0, 0, 0, 0]), bytes([58, 0, 1, 200, 0, 0, 0, 0]))]
        good = v6("2001:db8::1", "2001:db8::2", 0, bytes([58, 0, 0x3E, 2, 1, 2, 1, 0]) + ICMP)
    for p in bad:
        assert out.encap(p) is None
    assert out.encap_batch(bad) == []
    assert out.malformed == 2 * len(bad) and out.seq == 0 and out.stats.packets == 0
    w = out.encap(good)
    assert w is not None and out.seq == 1 and inb.decap(w) == good
