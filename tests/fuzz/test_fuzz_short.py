"""Short runs of the fuzz targets (issue 13 item 6): the long, coverage-guided runs are
``make fuzz`` (atheris); here every target replays its seeds, its regression
reproducers (``fuzz/regressions/<target>/``) and a fixed number of deterministic
mutations of its seeds, so ``make test`` catches a regression in a few seconds."""

from __future__ import annotations

import random
import sys

import pytest
from testsupport import REPO, shared_path

sys.path.insert(0, str(REPO))

from fuzz.targets import TARGETS, Finding, load  # noqa: E402

# mutations per target: a few seconds each on this machine
ROUNDS = {"wire": 20000, "ike_sk": 300, "ike_plain": 1000, "esp": 6000, "config": 3000}
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)


def mutate(rng: random.Random, data: bytes, others: list[bytes]) -> bytes:
    """One to four byte-level mutations (flip, set, insert, delete, splice, duplicate)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[i % len(b)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i % len(b)] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:
            del b[i:i + rng.randint(1, 8)]
        elif op == 4 and others:
            o = rng.choice(others)
            j = rng.randrange(len(o) + 1)
            b = b[:i] + o[j:j + rng.randint(1, 64)]
        elif op == 5 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randint(1, 16)]
    return bytes(b)


def _seeds(name: str) -> list[bytes]:
    seeds = list(load(name).seeds())
    assert seeds, f"{name}: no seeds"
    return seeds


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_regressions(name: str) -> None:
    if name in ("wire", "config"):
        shared_path("vectors")  # their seeds come from ../shared/vectors
    target = load(name)
    for seed in _seeds(name):
        target.one_input(seed)
    for f in sorted((REPO / "fuzz" / "regressions" / name).glob("*")):
        if f.is_file() and not f.name.endswith(".md"):
            target.one_input(f.read_bytes())


@pytest.mark.parametrize("name", TARGETS)
def test_short_mutation_run(name: str) -> None:
    target = load(name)
    seeds = _seeds(name)
    rng = random.Random(f"pypluto-fuzz-{name}")
    for n in range(ROUNDS[name]):
        data = mutate(rng, rng.choice(seeds), seeds)
        try:
            target.one_input(data)
        except Exception as e:
            raise AssertionError(f"{name} round {n}: input {data.hex()}") from e


# ----------------------------------------------------------- the targets can fail
def test_ike_sk_seeds_reach_the_exchange_handlers() -> None:
    """Each mode's seeds get past decryption (and reassembly): the receiver acts on them."""
    import copy

    from fuzz.targets import ike_sk
    from pypluto.ike.actions import Log, SendPacket
    reached = set()
    for seed in ike_sk.seeds():
        mode = seed[0]
        tpl, sender, exchange, response, frag = ike_sk.MODES[mode]
        net = copy.deepcopy(ike_sk.templates()[tpl])
        frm = net.west if sender == "west" else net.east
        to = net.other(frm)
        s, r = ike_sk._ike(frm), ike_sk._ike(to)
        msgid = r.outstanding.msgid if response else r.next_in
        if frag:
            pkts = ike_sk.encrypt_fragments(s, exchange, response, msgid, seed[1], seed[3:],
                                            seed[2])
        else:
            pkts = [ike_sk.encrypt(s, exchange, response, msgid, seed[1], seed[2:])]
        o0 = r.outstanding
        acts = [a for p in pkts for a in to.engine.receive(p, r.local, r.remote, net.now)]
        logs = " ".join(a.message for a in acts if isinstance(a, Log))
        if any(w in logs for w in ("integrity", "malformed", "dropping")):
            continue
        if (not response and any(isinstance(a, SendPacket) for a in acts)) or \
                (response and r.outstanding is not o0):
            reached.add(mode)
    assert reached == set(range(len(ike_sk.MODES)))


def test_ike_sk_detects_an_escaping_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    from fuzz.targets import ike_sk
    from pypluto.ike.tasks import liveness
    from pypluto.ike.tasks.liveness import Liveness

    def boom(*a: object, **k: object) -> None:
        raise KeyError("planted")

    # an empty INFORMATIONAL takes the liveness fast path; anything else the task
    monkeypatch.setattr(liveness, "fast_receive", boom)
    monkeypatch.setattr(Liveness, "respond", classmethod(boom))
    with pytest.raises(Finding, match="internal error"):
        ike_sk.one_input(bytes([2, 0]))  # an empty INFORMATIONAL request: a liveness check


def test_ike_sk_detects_inconsistent_tables() -> None:
    from fuzz.targets import ike_sk
    net = ike_sk.templates()["est"]
    import copy
    eng = copy.deepcopy(net).east.engine
    ike = next(iter(eng.by_serial.values()))
    del eng.ike_sas[ike.local_spi]
    with pytest.raises(Finding, match="not indexed"):
        ike_sk.check_tables(eng, "east")



def test_ike_plain_seeds_reach_the_engines() -> None:
    """The target's own messages get real answers: east answers the IKE_SA_INIT
    request when fresh (and with a COOKIE when busy), west answers the response with
    its IKE_AUTH request, and each state holds the SAs it says it holds."""
    import copy

    from fuzz.targets import ike_plain
    from pypluto.ike.actions import Endpoint, SendPacket
    t = ike_plain.templates()
    assert [len(t[s].east.engine.by_serial) for s in ike_plain.STATES] == [0, 0, 1, 1, 0]
    for state, to, data in (("fresh", "east", t["init_request"]),
                            ("busy", "east", t["init_request"]),
                            ("i1", "west", t["init_response"])):
        net = copy.deepcopy(t[state])
        side = getattr(net, to)
        other = net.other(side)
        acts = side.engine.receive(data, Endpoint(side.addr, 500), Endpoint(other.addr, 500),
                                   net.now)
        sent = [a.data for a in acts if isinstance(a, SendPacket)]
        assert sent, (state, acts)
        if state == "busy":
            assert len(sent[0]) < 100  # the COOKIE notify alone (RFC 7296 §2.6)
            assert side.engine.n_halfopen == 0
            again = ike_plain.with_cookie(data, sent[0])
            assert again is not None
            acts = side.engine.receive(again, Endpoint(side.addr, 500),
                                       Endpoint(other.addr, 500), net.now)
            assert side.engine.n_halfopen == 1  # past the COOKIE: answered, half-open
            assert [a for a in acts if isinstance(a, SendPacket)][0].data[16] == 33  # SA


def test_ike_plain_detects_an_escaping_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    """The reproducer of the fast-path bug it found raises a Finding again when the
    fast path raises (as it did before its fix)."""
    from fuzz.targets import ike_plain
    from pypluto.ike.tasks import liveness

    def boom(*a: object, **k: object) -> None:
        raise IndexError("planted")

    monkeypatch.setattr(liveness, "fast_receive", boom)
    data = (REPO / "fuzz" / "regressions" / "ike_plain" /
            "liveness-fast-path-short-sk-header").read_bytes()
    with pytest.raises(Finding, match="internal error"):
        ike_plain.one_input(data)


def test_esp_detects_a_raising_decap(monkeypatch: pytest.MonkeyPatch) -> None:
    from fuzz.targets import esp
    from pypluto.kernel import esp as kesp
    seed = next(esp.seeds())

    def boom(self: object, data: object) -> None:
        raise IndexError("planted")

    monkeypatch.setattr(kesp.InboundSA, "_decap", boom)
    with pytest.raises(Finding, match="planted"):
        esp.one_input(bytes([2]) + seed[1:])  # profile 2 has no fast path
