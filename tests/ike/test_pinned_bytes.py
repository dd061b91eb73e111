"""The bytes on the wire and the log text of whole exchanges, pinned (issue 18).

The CPU work on the responder's hot path (reply templates, memoised checks, fewer
lookups) must not change one octet that either side sends, nor one log line.  With a
seeded rng (``harness.Net``) and X25519 keys drawn from a fixed sequence, every
exchange below is deterministic; its datagrams and Log texts are hashed, and the
hashes were taken from main before that work (a7e76b0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric import x25519

from pypluto.ike.actions import Log

from .harness import Net

IKE = "aes_gcm256-sha2_256-x25519"


@pytest.fixture
def fixed_x25519(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every X25519 key the engines make comes from one fixed sequence."""
    n = [0]

    def generate(cls: type) -> x25519.X25519PrivateKey:
        n[0] += 1
        return x25519.X25519PrivateKey.from_private_bytes(
            hashlib.sha256(b"pinned-x25519-%d" % n[0]).digest())

    monkeypatch.setattr(x25519.X25519PrivateKey, "generate", classmethod(generate))
    yield


def _digest(net: Net) -> tuple[str, str]:
    wire = hashlib.sha256()
    for who, data in net.sent:
        wire.update(who.encode() + len(data).to_bytes(4, "big") + data)
    logs = hashlib.sha256()
    for side in (net.west, net.east):
        for a in side.actions:
            if isinstance(a, Log):
                logs.update(f"{side.name}|{a.level}|{a.conn}|{a.serial}|{a.message}\n".encode())
    return wire.hexdigest()[:32], logs.hexdigest()[:32]


def _run(childless: bool = False, **kw: object) -> Net:
    net = Net(**kw)  # type: ignore[arg-type]
    if childless:
        net.west.engine.connections["west-east"].raw["childless"] = "yes"
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.run()
    return net


def test_childless_exchange_is_pinned(fixed_x25519: None) -> None:
    net = _run(True, west_kw={"ike": IKE}, east_kw={"ike": IKE})
    assert any(e.kind.name == "IKE_ESTABLISHED" for e in net.east.events)
    assert _digest(net) == ("b9975ed151b2d0287e1c3251b2758093",
                            "7c978edc3bb04c12d59ebdb3ca2f3e5d")


def test_child_exchange_is_pinned(fixed_x25519: None) -> None:
    net = _run(west_kw={"ike": IKE}, east_kw={"ike": IKE})
    assert net.east.kernel_sas
    assert _digest(net) == ("9ad0370075ec3471e1551d6a9496d5f4",
                            "589b5bffca795d6eb3c8b80990c1deb6")


def test_nat_exchange_is_pinned(fixed_x25519: None) -> None:
    net = _run(west_kw={"ike": IKE}, east_kw={"ike": IKE, "left": "%any"}, nat=True)
    assert net.east.kernel_sas
    assert any("NAT detected" in m for m in net.east.logs())
    assert _digest(net) == ("c8a24b2b222a139eb5073c7d4ffcd299",
                            "5ea4d3c0ef0f650ca10fe110114a054d")
