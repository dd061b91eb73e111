"""Postquantum Preshared Keys (RFC 8784), two engines back to back, both roles."""

from __future__ import annotations

import pytest

from pypluto.config.secrets import parse_secrets_text
from pypluto.iana import NotifyType as N
from pypluto.ike import ppk as ppkmod
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import PSK, Net, Store, check_pair

PPK_A = "narodnifrontlimannovisadsrbija-0123"  # 35 bytes
PPK_B = "another postquantum preshared key, 32+"


class PPKStore(Store):
    """The harness's PSK store plus PPKS records from ipsec.secrets text."""

    def __init__(self, psk: bytes | None, text: str) -> None:
        super().__init__(psk)
        self.real = parse_secrets_text(text)
        assert self.real.ok, self.real.diagnostics

    def ppk_for(self, ppk_id: bytes) -> bytes | None:
        return self.real.ppk_for(ppk_id)

    def ppk_for_ids(self, local, remote):  # noqa: ANN001, ANN201
        return self.real.ppk_for_ids(local, remote)


def _ppks(*records: tuple[str, str]) -> str:
    return "".join(f'@west.example @east.example : PPKS "{i}" "{v}"\n' for i, v in records)


def ppk_net(west: str, east: str, *, west_ppks: str = _ppks(("A", PPK_A)),
            east_ppks: str = _ppks(("A", PPK_A)), west_ids: list[bytes] | None = None,
            east_ids: list[bytes] | None = None) -> Net:
    net = Net(west_kw={"ppk": west, "ppk_ids": west_ids or []},
              east_kw={"ppk": east, "ppk_ids": east_ids or []})
    net.west.engine.secrets = PPKStore(PSK, west_ppks)
    net.east.engine.secrets = PPKStore(PSK, east_ppks)
    net.up()
    return net


def _sent_notifies(net: Net, side: str) -> set[int]:
    """Notify types in the clear (IKE_SA_INIT) messages that ``side`` sent."""
    out: set[int] = set()
    for who, data in net.sent:
        if who != side:
            continue
        msg = wm.parse_message(data)
        out |= {p.notify_type for p in msg.payloads if isinstance(p, wp.NotifyPayload)}
    return out


def _used(net: Net, side: str, ppk_id: str = "A") -> bool:
    return any(f"IKE SA keys mixed with PPK '{ppk_id}'" in m
               for m in getattr(net, side).logs())


# west ppk=, east ppk=, established?, PPK used?
PAIRS = [
    ("propose", "propose", True, True),
    ("permit", "propose", True, True),
    ("propose", "permit", True, True),
    ("insist", "insist", True, True),
    ("propose", "insist", True, True),
    ("insist", "propose", True, True),
    ("permit", "insist", True, True),
    ("propose", "no", True, False),
    ("no", "propose", True, False),
    ("no", "no", True, False),
    ("insist", "no", False, False),
    ("no", "insist", False, False),
]


@pytest.mark.parametrize("west,east,up,used", PAIRS)
def test_ppk_mode_pairs(west: str, east: str, up: bool, used: bool) -> None:
    net = ppk_net(west, east)
    assert bool(net.established(net.west)) is up, net.west.logs() + net.east.logs()
    assert bool(net.established(net.east)) is up, net.east.logs()
    assert _used(net, "west") is used and _used(net, "east") is used, \
        net.west.logs() + net.east.logs()
    assert (N.USE_PPK in _sent_notifies(net, "west")) is (west != "no")
    if up:
        check_pair(net)  # both ends derived the same Child SA keys from SK_d
    for side in (net.west, net.east):
        assert all(PPK_A not in m for m in side.logs())


def test_insist_initiator_vs_peer_without_ppk_fails_clearly() -> None:
    net = ppk_net("insist", "no")
    assert [e.kind for e in net.west.events] == ["failed"]
    assert net.west.events[0].reason == "authentication"
    assert any("connection has ppk=insist but the peer does not support PPK" in m
               for m in net.west.logs()), net.west.logs()
    assert not net.west.kernel_sas and not net.east.kernel_sas


def test_insist_responder_vs_peer_without_ppk_answers_authentication_failed() -> None:
    net = ppk_net("no", "insist")
    assert any("rejected: connection has ppk=insist but the peer did not propose a PPK "
               "(no USE_PPK); answering AUTHENTICATION_FAILED" in m
               for m in net.east.logs()), net.east.logs()
    assert any("AUTHENTICATION_FAILED" in m for m in net.west.logs())
    assert not net.west.engine.by_serial and not net.east.engine.by_serial


def test_ppk_mismatch_fails_both_roles() -> None:
    net = ppk_net("propose", "propose", east_ppks=_ppks(("A", PPK_B)))
    assert not net.established(net.west) and not net.established(net.east)
    assert any("PPK mismatch?" in m for m in net.east.logs()), net.east.logs()
    assert any("AUTHENTICATION_FAILED" in m for m in net.west.logs())
    assert not net.west.kernel_sas and not net.east.kernel_sas


@pytest.mark.parametrize("west,east,up", [("propose", "propose", True),
                                          ("permit", "permit", True),
                                          ("propose", "insist", False),
                                          ("insist", "propose", False)])
def test_responder_without_the_ppk_id(west: str, east: str, up: bool) -> None:
    """PPK_IDENTITY with an id the responder does not know: NO_PPK_AUTH unless someone
    insists (RFC 8784 §3)."""
    net = ppk_net(west, east, east_ppks=_ppks(("other", PPK_B)))
    assert bool(net.established(net.west)) is up and bool(net.established(net.east)) is up
    assert not _used(net, "west") and not _used(net, "east")
    if up:
        check_pair(net)
        assert any("no PPK for PPK_ID 'A' in ipsec.secrets; continuing without PPK "
                   "(NO_PPK_AUTH)" in m for m in net.east.logs()), net.east.logs()
        assert any("peer has no PPK 'A'; continuing without PPK" in m
                   for m in net.west.logs())
    elif east == "insist":
        assert any("connection has ppk=insist and no PPK for PPK_ID 'A'" in m
                   for m in net.east.logs()), net.east.logs()
    else:
        assert any("the peer sent no NO_PPK_AUTH (it insists on a PPK)" in m
                   for m in net.east.logs()), net.east.logs()


@pytest.mark.parametrize("west,up", [("propose", True), ("insist", False)])
def test_initiator_without_a_ppk(west: str, up: bool) -> None:
    net = ppk_net(west, "propose", west_ppks="")
    assert bool(net.established(net.west)) is up and bool(net.established(net.east)) is up
    if up:
        assert any("no PPK in ipsec.secrets for the connection's IDs; continuing without "
                   "PPK" in m for m in net.west.logs()), net.west.logs()
    else:
        assert any("connection has ppk=insist but ipsec.secrets has no PPK for the "
                   "connection's IDs" in m for m in net.west.logs()), net.west.logs()
        assert [e.kind for e in net.west.events] == ["failed"]
        # nothing was sent after IKE_SA_INIT
        assert [w for w, _ in net.sent].count("west") == 1


def test_ppk_ids_pick_the_ppk() -> None:
    both = _ppks(("A", PPK_A), ("B", PPK_B))
    # the first of ppk-ids= that the secrets hold: C is missing, B is used
    net = ppk_net("insist", "insist", west_ppks=both, east_ppks=both,
                  west_ids=[b"C", b"B", b"A"])
    assert net.established(net.west) and _used(net, "west", "B") and _used(net, "east", "B")
    check_pair(net)
    # the responder accepts only PPK_IDs of its ppk-ids=
    net = ppk_net("propose", "insist", west_ppks=both, east_ppks=both, west_ids=[b"A"],
                  east_ids=[b"B"])
    assert not net.established(net.east)
    assert any("PPK_ID 'A' is not in ppk-ids=" in m for m in net.east.logs())
    net = ppk_net("propose", "propose", west_ppks=both, east_ppks=both, west_ids=[b"A"],
                  east_ids=[b"B"])
    assert net.established(net.east) and not _used(net, "east")
    # ppk-ids= naming nothing the secrets hold: as without a PPK
    net = ppk_net("insist", "propose", west_ids=[b"nope"])
    assert not net.established(net.west)
    assert any("ipsec.secrets has no PPK for ppk-ids=nope" in m for m in net.west.logs())


def test_unusable_ppk_identity_falls_back_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PPK_IDENTITY of the OPAQUE type (pypluto sends FIXED only) is an unknown PPK."""
    monkeypatch.setattr(ppkmod, "PPK_ID_FIXED", ppkmod.PPK_ID_OPAQUE)
    net = Net(west_kw={"ppk": "propose"}, east_kw={"ppk": "propose"})
    net.west.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.east.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    # east checks for type 2 (the real value): patch only while west builds
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    while net.queue:
        frm, _ = net.queue[0]
        if frm is net.west and net.west.engine.by_serial and \
                list(net.west.engine.by_serial.values())[0].state.name == "AUTH_I":
            monkeypatch.setattr(ppkmod, "PPK_ID_FIXED", 2)
        net.step()
    assert any("unusable PPK_IDENTITY" in m for m in net.east.logs()), net.east.logs()
    assert net.established(net.west) and net.established(net.east)


def test_rekeys_keep_working_with_the_mixed_sk_d() -> None:
    """A rekeyed IKE SA derives from SK_d, which carries the PPK (RFC 8784 §3): the
    IKE SA rekey and a Child SA rekey after it agree on both sides."""
    net = ppk_net("insist", "insist")
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    net.apply(net.east, net.east.engine.rekey_child("west-east", net.now))
    net.run()
    assert len(net.established(net.west)) == 1 and len(net.established(net.east)) == 1
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    check_pair(net)
    assert not any("AUTHENTICATION_FAILED" in m or "failed" in m.lower()
                   for m in net.west.logs() + net.east.logs()), net.west.logs()
