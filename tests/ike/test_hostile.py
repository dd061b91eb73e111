"""Hostile input (CVE-REGRESSIONS.md, libreswan fuzzer packets): the right notify or
silence, no state left behind, no exception out of ``Engine.receive``."""

from __future__ import annotations

import json

import pytest
from testsupport import shared_path

from pypluto.ike import codec
from pypluto.ike.actions import Endpoint, SendPacket
from pypluto.wire import payloads as wp
from pypluto.wire.constants import NotifyType as N
from pypluto.wire.message import parse_message

from .harness import EAST, WEST, Net

W500, E500 = Endpoint(WEST, 500), Endpoint(EAST, 500)


def _answers(acts: list) -> list[int]:
    """Notify types in the (unencrypted) answers among ``acts``."""
    out = []
    for a in acts:
        if isinstance(a, SendPacket):
            m = parse_message(a.data)
            out += [p.notify_type for p in m.payloads if p.payload_type == 41]
    return out


def _no_state(net: Net) -> None:
    eng = net.east.engine
    assert not eng.by_serial and not eng.ike_sas and eng.n_halfopen == 0 and not eng.halfopen


def _fuzz_files() -> list[str]:
    return [f"ikev2-15-fuzzer_pkt{i:02d}.hex" for i in range(10)] + [
        "ikev1_cve-2009-0790_pkt0.hex", "ikev1_cve-2015-3204_pkt0.hex",
        "ikev1_cve-2015-3204_pkt1.hex", "ikev1_cve-2022-23094_pkt0.hex", "authip-rogue.raw"]


@pytest.mark.parametrize("name", _fuzz_files())
def test_libreswan_fuzzer_packets(name: str) -> None:
    path = shared_path("vectors", "fuzz", "libreswan", name)
    raw = path.read_bytes()
    data = raw if name.endswith(".raw") else bytes.fromhex(raw.decode().strip())
    net = Net()
    acts = net.east.engine.receive(data, E500, W500, net.now)
    for t in _answers(acts):
        assert t in (N.INVALID_SYNTAX, N.NO_PROPOSAL_CHOSEN, N.INVALID_KE_PAYLOAD,
                     N.UNSUPPORTED_CRITICAL_PAYLOAD), t
    _no_state(net)
    assert not any("internal error" in m.message for m in acts if hasattr(m, "message"))


def test_fuzzer_index_covers_our_list() -> None:
    idx = json.loads(shared_path("vectors", "fuzz", "libreswan", "index.json").read_text())
    assert {e["file"] for e in idx} <= set(_fuzz_files())


@pytest.mark.parametrize("n", [0, 1, 4, 27, 28])
def test_short_datagrams(n: int) -> None:
    net = Net()
    assert net.east.engine.receive(bytes(n), E500, W500, net.now) is not None
    _no_state(net)


def _init_request(net: Net, mutate=None) -> bytes:  # noqa: ANN001
    """West's real IKE_SA_INIT request, optionally with its payload list mutated."""
    acts = net.west.engine.initiate("west-east", net.now)
    data = [a for a in acts if isinstance(a, SendPacket)][0].data
    if mutate is None:
        return data
    m = parse_message(data)
    mutate(m)
    return m.serialize()


def test_bad_major_version_and_ikev1() -> None:
    net = Net()
    data = bytearray(_init_request(net))
    data[17] = 0x10  # IKEv1
    assert not [a for a in net.east.engine.receive(bytes(data), E500, W500, net.now)
                if isinstance(a, SendPacket)]
    data[17] = 0x30
    net.east.engine.receive(bytes(data), E500, W500, net.now)
    _no_state(net)


def _ke(m) -> wp.KEPayload:  # noqa: ANN001
    return next(p for p in m.payloads if p.payload_type == 34)


@pytest.mark.parametrize("value", ["zero", "one"])
def test_degenerate_ke_values(value: str) -> None:
    net = Net(west_kw={"ike": "aes256-sha2_256-modp2048"},
              east_kw={"ike": "aes256-sha2_256-modp2048"})

    def mut(m) -> None:  # noqa: ANN001
        ke = _ke(m)
        ke.data = bytes(255) + (b"\x00" if value == "zero" else b"\x01")
    acts = net.east.engine.receive(_init_request(net, mut), E500, W500, net.now)
    assert _answers(acts) in ([N.INVALID_KE_PAYLOAD], [N.INVALID_SYNTAX])
    _no_state(net)


def test_ke_wrong_length() -> None:
    net = Net()

    def mut(m) -> None:  # noqa: ANN001
        _ke(m).data = _ke(m).data + b"\x00" * 7
    acts = net.east.engine.receive(_init_request(net, mut), E500, W500, net.now)
    assert _answers(acts) == [N.INVALID_SYNTAX]
    _no_state(net)


def test_unknown_ke_group() -> None:
    net = Net()

    def mut(m) -> None:  # noqa: ANN001
        _ke(m).group = 1025
    acts = net.east.engine.receive(_init_request(net, mut), E500, W500, net.now)
    assert _answers(acts) == [N.INVALID_KE_PAYLOAD]
    _no_state(net)


def test_proposal_without_dh() -> None:
    net = Net()

    def mut(m) -> None:  # noqa: ANN001
        sa = next(p for p in m.payloads if p.payload_type == 33)
        for pr in sa.proposals:
            pr.transforms = [t for t in pr.transforms if t.type != 4]
    acts = net.east.engine.receive(_init_request(net, mut), E500, W500, net.now)
    assert _answers(acts) == [N.NO_PROPOSAL_CHOSEN]
    _no_state(net)


def _half_open(net: Net):  # noqa: ANN201
    """West's IKE SA after IKE_SA_INIT (east half-open), IKE_AUTH not yet delivered."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()  # INIT request -> east
    net.step()  # INIT response -> west, which queues IKE_AUTH
    net.queue.clear()
    return next(iter(net.west.engine.by_serial.values()))


def _send_sk(net: Net, ike, exchange: int, payloads: list, msgid: int | None = None) -> list:  # noqa: ANN001
    if msgid is None:
        msgid = ike.next_out
        ike.next_out += 1
    data = net.west.engine.encode(ike, exchange, False, msgid, payloads)[0]
    return net.east.engine.receive(data, ike.remote, ike.local, net.now)


def test_informational_before_auth_is_dropped() -> None:
    net = Net()
    ike = _half_open(net)
    acts = _send_sk(net, ike, 37, [codec.delete(1, [])], msgid=1)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert net.east.engine.n_halfopen == 1  # the half-open SA simply waits (and expires)


def test_create_child_before_auth_is_rejected() -> None:
    net = Net()
    ike = _half_open(net)
    acts = _send_sk(net, ike, 36, [codec.nonce(b"n" * 32)], msgid=1)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert not net.east.engine.children_in


def test_bad_icv_is_dropped_silently() -> None:
    net = Net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    data = bytearray(net.west.engine.encode(ike, 37, False, ike.next_out, [])[0])
    data[-1] ^= 1
    acts = net.east.engine.receive(bytes(data), ike.remote, ike.local, net.now)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    eike = next(iter(net.east.engine.by_serial.values()))
    assert eike.next_in == 2  # message ID window untouched


def test_ts_count_mismatch_in_ike_auth() -> None:
    """CVE-2023-23009: TSi claiming 2 selectors but carrying one."""
    net = Net()
    ike = _half_open(net)
    task = ike.outstanding.task  # the AuthTask west built
    payloads = task.build(net.west.engine, ike, net.now, [])
    for i, p in enumerate(payloads):
        if p.payload_type == 44:
            body = bytearray(p.serialize())
            body[0] = 2
            payloads[i] = wp.UnknownPayload(44, bytes(body))
    acts = _send_sk(net, ike, 35, payloads, msgid=1)
    assert not net.east.engine.children_in
    assert not any("internal error" in getattr(a, "message", "") for a in acts)
    assert [a for a in acts if isinstance(a, SendPacket)]  # an answer (INVALID_SYNTAX)
    _no_state(net)


@pytest.mark.parametrize("proto", [0, 1])
def test_rekey_sa_with_bad_protocol(proto: int) -> None:
    """CVE-2023-38710: REKEY_SA with protocol 0 or 1."""
    net = Net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    spi = b"" if proto == 0 else bytes(8)
    n = wp.NotifyPayload(protocol_id=proto, spi=spi, notify_type=N.REKEY_SA)
    child = ike.children[0]
    sa = codec.sa([(1, 3, b"abcd", [(1, 20, 256), (5, 0, None)])])
    ts_i = codec.ts_payload(44, child.local_ts)
    ts_r = codec.ts_payload(45, child.remote_ts)
    acts = _send_sk(net, ike, 36, [n, sa, codec.nonce(b"x" * 32), ts_i, ts_r])
    assert not any("internal error" in getattr(a, "message", "") for a in acts)
    assert len(net.children(net.east)) == 1


def test_skf_with_many_unknown_outer_payloads() -> None:
    """CVE-2026-12413: SKF fragments carrying many unknown outer payloads."""
    net = Net()
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    junk = [wp.UnknownPayload(200, b"x" * 4) for _ in range(300)]
    skf = wp.SKFPayload(0, 1, 2, b"\x00" * 40)
    from pypluto.wire.message import Message
    m = Message(ike.spi_i, ike.spi_r, 37, True, False, ike.next_out, [*junk, skf])
    acts = net.east.engine.receive(m.serialize(), ike.remote, ike.local, net.now)
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert len(net.established(net.east)) == 1


def test_exceptions_never_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    net = Net()
    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("bug")
    monkeypatch.setattr(codec, "peek", boom)
    acts = net.east.engine.receive(b"x" * 40, E500, W500, net.now)
    assert "internal error" in acts[0].message
