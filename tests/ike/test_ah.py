"""AH Child SAs negotiated by the engine (``phase2=ah``; RFC 4302, RFC 7296 §3.3.3).

Back to back: an AH Child SA in IKE_AUTH (both roles), its rekey and delete (REKEY_SA
and Delete name protocol AH), an ESP/AH mismatch, and AH refused across a NAT
(RFC 3948 encapsulates ESP only).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pypluto.config.proposals import parse_proposals
from pypluto.crypto.registry import Integ
from pypluto.iana import ProtocolID
from pypluto.ike import child as childmod
from pypluto.ike import codec, proposals
from pypluto.ike.actions import Action, EventKind, Updown
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildSA
from pypluto.ike.tasks.child_create import ChildCreate
from pypluto.ike.tasks.child_delete import ChildDelete, _deletes
from pypluto.wire.payloads import Payload

from .harness import Net, check_pair

AH = {"phase2": "ah"}


def _logs(side) -> str:  # noqa: ANN001
    return "\n".join(side.logs())


def _ike(side) -> IKESA:  # noqa: ANN001
    return next(i for i in side.engine.by_serial.values() if i.established)


def _child(side) -> ChildSA:  # noqa: ANN001
    return _ike(side).children[0]


def _assert_ah_pair(net: Net, integ: int = Integ.HMAC_SHA2_512_256, key_len: int = 64) -> None:
    for side in (net.west, net.east):
        sas = list(side.kernel_sas.values())
        assert len(sas) == 2
        for sa in sas:
            assert sa.protocol == "ah"
            assert sa.encr_id == 0 and sa.encr_key == b""
            assert sa.integ_id == integ and len(sa.integ_key) == key_len
        assert {p.protocol for p in side.policies} == {"ah"}
    check_pair(net)


def test_default_ah_proposals_are_libreswans() -> None:
    """Libreswan 5.2 ``algparse -v2 ah``: HMAC_SHA2_512_256, HMAC_SHA2_256_128; no ENCR."""
    specs = proposals.ah_specs(None)
    assert [s.integ for s in specs] == [(Integ.HMAC_SHA2_512_256,), (Integ.HMAC_SHA2_256_128,)]
    sent = proposals.build_proposals(specs, ProtocolID.AH, b"\0\0\0\1", ike=False)
    for _, proto, _, ts in sent:
        assert proto == ProtocolID.AH
        types = [t for t, _, _ in ts]
        assert 1 not in types and 3 in types and 5 in types  # no ENCR; INTEG, ESN


def test_ah_proposal_with_encr_or_without_integ_is_refused() -> None:
    """§3.3.3: an AH proposal has no ENCR transform and needs a real INTEG."""
    specs = proposals.ah_specs(None)
    bad_encr = [(1, ProtocolID.AH, b"\0\0\0\1", [(1, 12, 128), (3, 14, None), (5, 0, None)])]
    no_integ = [(1, ProtocolID.AH, b"\0\0\0\1", [(5, 0, None)])]
    integ_none = [(1, ProtocolID.AH, b"\0\0\0\1", [(3, 0, None), (5, 0, None)])]
    good = [(1, ProtocolID.AH, b"\0\0\0\1", [(3, 12, None), (5, 0, None)])]
    for peer in (bad_encr, no_integ, integ_none):
        assert proposals.choose(peer, specs, ProtocolID.AH, ike=False) is None
    c = proposals.choose(good, specs, ProtocolID.AH, ike=False)
    assert c is not None and c.encr == 0 and c.integ == 12 and not c.esn
    ans = proposals.chosen_proposal(c, ProtocolID.AH, b"\0\0\0\2", ike=False)
    assert [t for t, _, _ in ans[3]] == [3, 5]
    # an ESP offer is not an AH answer, and vice versa
    assert proposals.choose(good, proposals.esp_specs(None), ProtocolID.ESP, ike=False) is None


def test_ah_child_sa_in_ike_auth() -> None:
    """Initiator (west) and responder (east) agree on an AH Child SA: AH SAs and
    policies on both ends, integrity keys only (§2.17), status says AH."""
    net = Net(west_kw=AH, east_kw=AH)
    net.up()
    assert net.children(net.west) and net.children(net.east)
    _assert_ah_pair(net)
    for side in (net.west, net.east):
        ch = net.children(side)[0]
        assert ch.protocol == "ah" and ch.encr == "" and ch.integ == "AUTH_HMAC_SHA2_512_256"
        assert "{AH=>0x" in _logs(side) and "xfrm=AUTH_HMAC_SHA2_512_256" in _logs(side)


def test_ah_configured_integ() -> None:
    """``ah=sha2_256`` on both ends: HMAC_SHA2_256_128 with 32-byte keys."""
    kw = dict(AH, ah=parse_proposals("sha2_256", "AH"))
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    _assert_ah_pair(net, Integ.HMAC_SHA2_256_128, 32)


@pytest.mark.parametrize("rekeyer", ["west", "east"])
@pytest.mark.parametrize("pfs", [True, False])
def test_ah_child_rekey(rekeyer: str, pfs: bool) -> None:
    """Either end rekeys the AH Child SA (REKEY_SA with Protocol ID AH, §1.3.3): new
    SPIs, still AH, the old SAs gone."""
    kw = dict(AH, pfs=pfs)
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = {s.spi for s in net.west.kernel_sas.values()}
    side = getattr(net, rekeyer)
    net.apply(side, side.engine.rekey_child("west-east", net.now))
    net.run()
    assert "refused" not in _logs(net.east) + _logs(net.west)
    assert len(net.children(net.west)) == 1 and len(net.children(net.east)) == 1
    assert not old & {s.spi for s in net.west.kernel_sas.values()}
    _assert_ah_pair(net)
    assert bool(net.children(net.west)[0].ke) == pfs


def test_rekey_sa_names_protocol_ah(monkeypatch: pytest.MonkeyPatch) -> None:
    """The REKEY_SA notify carries Protocol ID AH; a REKEY_SA naming the AH SPI as ESP
    is answered CHILD_SA_NOT_FOUND (the SPI is matched with its protocol)."""
    net = Net(west_kw=AH, east_kw=AH)
    net.up()
    seen: list[int] = []
    real = codec.notify

    def spy(ntype, data=b"", proto=0, spi=b""):  # noqa: ANN001, ANN202
        if int(ntype) == 16393:  # REKEY_SA
            seen.append(int(proto))
        return real(ntype, data, proto, spi)

    monkeypatch.setattr(codec, "notify", spy)
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert seen == [ProtocolID.AH]
    _assert_ah_pair(net)
    # now lie about the protocol: east must not find an ESP SA with that SPI
    seen.clear()

    def liar(ntype, data=b"", proto=0, spi=b""):  # noqa: ANN001, ANN202
        if int(ntype) == 16393:
            proto = ProtocolID.ESP
        return real(ntype, data, proto, spi)

    monkeypatch.setattr(codec, "notify", liar)
    before = {s.spi for s in net.east.kernel_sas.values()}
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    assert {s.spi for s in net.east.kernel_sas.values()} == before
    assert "peer no longer has the Child SA" in _logs(net.west)  # CHILD_SA_NOT_FOUND


class _DeleteAs(ChildDelete):
    """A Child SA Delete that names our SPI under another protocol."""

    proto = ProtocolID.ESP

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        return [codec.delete(self.proto, [c.spi_in.to_bytes(4, "big") for c in self.children])]

    def on_response(self, ctx: IKEContext, ike: IKESA, msg, now: float  # noqa: ANN001
                    ) -> list[Action]:
        return []


def test_ah_child_delete() -> None:
    """Delete names protocol AH; the responder deletes the AH SA and answers with its
    own SPI; a Delete naming the AH SPI as ESP deletes nothing (§3.11)."""
    net = Net(west_kw=AH, east_kw=AH)
    net.up()
    ike, c = _ike(net.west), _child(net.west)
    net.apply(net.west, net.west.engine.queue(ike, _DeleteAs([c]), net.now))
    net.run()
    assert len(net.children(net.east)) == 1 and len(net.east.kernel_sas) == 2
    assert [int(p.protocol_id) for p in _deletes([c])] == [ProtocolID.AH]
    net.apply(net.west, net.west.engine.queue(ike, ChildDelete([c]), net.now))
    net.run()
    assert not net.children(net.east) and not net.children(net.west)
    assert not net.east.kernel_sas and not net.west.kernel_sas
    assert "received Delete SA payload" in _logs(net.east)
    assert "deleting Child SA; AH SPIs" in _logs(net.west)


@pytest.mark.parametrize("west,east", [("esp", "ah"), ("ah", "esp")])
def test_esp_ah_mismatch(west: str, east: str) -> None:
    """One end asks for ESP, the other for AH: NO_PROPOSAL_CHOSEN, no Child SA."""
    net = Net(west_kw={"phase2": west}, east_kw={"phase2": east})
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert not net.children(net.west) and not net.children(net.east)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert f"no acceptable {east.upper()} proposal" in _logs(net.east)
    assert "NO_PROPOSAL_CHOSEN" in _logs(net.west)


@pytest.mark.parametrize("nat,encap", [(True, "auto"), (False, "yes")])
def test_ah_refused_across_nat_initiator(nat: bool, encap: str) -> None:
    """West behind a NAT (or encapsulation=yes): no IKE_AUTH with an AH Child SA is
    sent; the failure says why."""
    kw = dict(AH, encapsulation=encap)
    net = Net(nat=nat, west_kw=kw, east_kw=dict(AH, left="%any"))
    net.up()
    assert not net.children(net.west) and not net.children(net.east)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert "cannot" in _logs(net.west) and "RFC 3948 is ESP only" in _logs(net.west)
    fails = [e for e in net.west.events if e.kind is EventKind.FAILED]
    assert fails and "phase2=ah" in fails[0].detail


def test_ah_refused_across_nat_responder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that asks for AH behind a NAT anyway gets NO_PROPOSAL_CHOSEN."""
    real: Callable[[IKESA, object], str] = childmod.ah_nat_refusal
    monkeypatch.setattr(childmod, "ah_nat_refusal",
                        lambda ike, conn: "" if ike.initiator else real(ike, conn))
    net = Net(nat=True, west_kw=AH, east_kw=dict(AH, left="%any"))
    net.up()
    assert net.established(net.east)
    assert not net.children(net.west) and not net.children(net.east)
    assert not net.east.kernel_sas
    assert "phase2=ah cannot traverse the NAT" in _logs(net.east)
    assert "NO_PROPOSAL_CHOSEN" in _logs(net.west)


def test_ah_new_child_refused_across_nat_initiator() -> None:
    """CREATE_CHILD_SA for an AH conn on an IKE SA behind a NAT: not sent, a clear line."""
    net = Net(nat=True, east_kw={"left": "%any"})  # ESP conn comes up through the NAT
    net.up()
    ike = _ike(net.west)
    ike.conn.phase2 = "ah"
    n = len(net.sent)
    net.apply(net.west, net.west.engine.queue(ike, ChildCreate(ike.conn), net.now))
    net.run()
    assert len(net.sent) == n
    assert "Child SA failed: phase2=ah cannot traverse the NAT" in _logs(net.west)


def test_ah_updown_says_ah() -> None:
    """The updown facts of an AH Child SA: PLUTO_SA_TYPE=AH and an AUTHENTICATE policy."""
    net = Net(west_kw=AH, east_kw=AH)
    net.west.engine.connections["west-east"].local.updown = "/bin/true"
    net.up()
    ups = [a for a in net.west.actions if isinstance(a, Updown)]
    assert ups and all(u.child.sa_type == "AH" for u in ups)
    assert all("AUTHENTICATE" in u.child.policy and "ENCRYPT" not in u.child.policy
               for u in ups)
