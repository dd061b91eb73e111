"""Issue 12, protocol engine: a conn gets exactly what it allows.

Selector hijack behind a claimed NAT (RFC 7296 §2.23, §2.23.1), ``pfs=`` both
ways, a Child SA we refuse is deleted (§1.3, §2.9), a refused rekey is followed by
a new IKE SA, ``authby``/``leftauth``/``rightauth`` in both roles.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

import pytest

from pypluto.iana import AuthMethod
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import EventKind
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import ike_auth
from pypluto.ike.tasks.child_create import ChildCreate

from .harness import NAT_PUBLIC, Net, check_pair, make_conn

H2H = {"leftsubnet": None, "rightsubnet": None}
EAST_H2H = dict(H2H, left="%any")
HIJACK = ipaddress.ip_network("192.0.2.200/32")


def _west_ike(net: Net) -> IKESA:
    return next(i for i in net.west.engine.by_serial.values() if i.established)


def _logs(side) -> str:  # noqa: ANN001
    return "\n".join(side.logs())


# ------------------------------------------------------------------ selector hijack
@pytest.mark.parametrize("nat", [True, False])
def test_claimed_nat_cannot_hijack_a_foreign_address(nat: bool) -> None:
    """West claims a NAT (a real one, or encapsulation=yes: a NAT hash that cannot
    match) and asks for TSi=192.0.2.200/32 on east's host-to-host conn: east
    answers TS_UNACCEPTABLE and installs nothing for 192.0.2.200."""
    west = dict(H2H, leftsubnet=str(HIJACK), encapsulation="yes")
    net = Net(nat=nat, west_kw=west, east_kw=EAST_H2H)
    net.up()
    assert net.established(net.east)
    assert not net.children(net.east) and not net.children(net.west)
    assert not net.east.kernel_sas and not net.east.policies
    assert "192.0.2.200" not in repr(net.east.policies) + repr(net.east.kernel_sas)
    assert "TS_UNACCEPTABLE" in _logs(net.west)


def test_claimed_inner_address_needs_virtual_private() -> None:
    """The same claim is granted when virtual-private= allows it (Libreswan's rule),
    and still refused when it names another range or excludes the address."""
    west = dict(H2H, leftsubnet=str(HIJACK))
    ok = Net(nat=True, west_kw=west, east_kw=EAST_H2H,
             east_settings=EngineSettings(virtual_private="%v4:192.0.2.192/26"))
    ok.up()
    ch = ok.children(ok.east)
    assert ch and ch[0].remote_ts == ["192.0.2.200/32"]
    no = Net(nat=True, west_kw=west, east_kw=EAST_H2H,
             east_settings=EngineSettings(virtual_private="%v4:10.0.0.0/8,%v4:!192.0.2.0/24"))
    no.up()
    assert not no.children(no.east) and not no.east.policies


def test_transport_behind_nat_installs_the_outer_address() -> None:
    """§2.23.1: in transport mode behind a NAT, the SA is for the peer's real
    (outer) address whatever TSi says."""
    west = dict(H2H, leftsubnet=str(HIJACK), type="transport")
    east = dict(EAST_H2H, type="transport")
    net = Net(nat=True, west_kw=west, east_kw=east)
    net.up()
    ch = net.children(net.east)
    assert ch and ch[0].remote_ts == [f"{NAT_PUBLIC}/32"]
    assert "192.0.2.200" not in repr(net.east.policies)
    assert net.children(net.west)


# ------------------------------------------------------------------ pfs=
def _rekey(net: Net) -> None:
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()


@pytest.mark.parametrize("west_pfs,east_pfs", [(False, True), (True, False)])
def test_pfs_mismatch_rekey_refused_then_replaced(west_pfs: bool, east_pfs: bool) -> None:
    """pfs=yes refuses a rekey without KE, pfs=no one with KE (NO_PROPOSAL_CHOSEN);
    the initiator then replaces the IKE SA and its Child SA (make-before-break)."""
    net = Net(west_kw={"pfs": west_pfs}, east_kw={"pfs": east_pfs})
    net.up()
    old_ike = net.established(net.west)[0].serial
    old_spi = net.children(net.west)[0].spi_in
    _rekey(net)
    elog = _logs(net.east)
    if east_pfs:
        assert "refused: pfs=yes and the request has no KE payload" in elog
    else:
        assert "refused: pfs=no and the request carries a KE payload" in elog
    assert "the peer refused to rekey Child SA" in _logs(net.west)
    net.advance(5)
    w, e = net.established(net.west), net.established(net.east)
    assert len(w) == 1 and len(e) == 1 and w[0].serial != old_ike
    cw = net.children(net.west)
    assert len(cw) == 1 and cw[0].spi_in != old_spi and len(net.children(net.east)) == 1
    assert len(net.west.kernel_sas) == 2 and len(net.east.kernel_sas) == 2
    check_pair(net)


def test_ms_dh_downgrade_lets_a_child_sa_go_without_pfs(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """ms-dh-downgrade=yes (ipsec.conf(5): Windows rekeys without the DH it agreed to).
    As responder, a pfs=yes conn accepts a rekey without KE instead of answering
    NO_PROPOSAL_CHOSEN: the Child SA is rekeyed in place (same IKE SA, no
    re-authentication), without a KE group, and the log says so.  As initiator, it
    offers each proposal again with KE NONE after the PFS ones, as Libreswan does; a
    pfs=yes peer still picks PFS.  A peer that picks a KE NONE copy (strongSwan 5.9.8
    without PFS) is in tests/interop/test_strongswan.py.  Without the key:
    test_pfs_mismatch_rekey_refused_then_replaced."""
    from pypluto.iana import TransformType
    from pypluto.ike import child as childmod

    net = Net(west_kw={"pfs": False}, east_kw={"ms_dh_downgrade": True})
    net.up()
    old_ike = net.established(net.west)[0].serial
    old_spi = net.children(net.west)[0].spi_in
    _rekey(net)
    assert net.established(net.west)[0].serial == old_ike, _logs(net.west)
    cw, ce = net.children(net.west), net.children(net.east)
    assert len(cw) == 1 and len(ce) == 1 and cw[0].spi_in != old_spi
    assert not ce[0].ke and not cw[0].ke
    assert "rekey without KE accepted: no PFS for this Child SA (ms-dh-downgrade=yes)" \
        in _logs(net.east)
    assert "refused" not in _logs(net.east) + _logs(net.west)
    check_pair(net)

    offers: list[list] = []  # type: ignore[type-arg]
    build = childmod.proposals.build_proposals

    def recorded(*a: object, **kw: object) -> list:  # type: ignore[type-arg]
        out = build(*a, **kw)  # type: ignore[arg-type]
        offers.append(out)
        return out

    monkeypatch.setattr(childmod.proposals, "build_proposals", recorded)
    both = Net(west_kw={"ms_dh_downgrade": True, "esp": "aes_gcm256,aes256-sha2_256"},
               east_kw={"ms_dh_downgrade": True})
    both.up()
    _rekey(both)
    ch = both.children(both.east)
    assert len(ch) == 1 and ch[0].ke  # the PFS proposals come first and win
    kes = [[i for t, i, _ in ts if t == TransformType.KE] for _n, _p, _s, ts in offers[-1]]
    nums = [n for n, _p, _s, _ts in offers[-1]]
    assert nums == [1, 2, 3, 4] and kes[0] and kes[1] and 0 not in kes[0] + kes[1], kes
    assert kes[2:] == [[0], [0]], kes


def test_pfs_new_child_without_ke_refused() -> None:
    """A new Child SA (no REKEY_SA) without KE on a pfs=yes conn: NO_PROPOSAL_CHOSEN."""
    net = Net(west_kw={"pfs": False}, east_kw={"pfs": True})
    net.up()
    ikesa = _west_ike(net)
    net.apply(net.west, net.west.engine.queue(ikesa, ChildCreate(ikesa.conn), net.now))
    net.run()
    assert "refused: pfs=yes and the request has no KE payload" in _logs(net.east)
    assert "peer answered NO_PROPOSAL_CHOSEN" in _logs(net.west)
    assert len(net.children(net.east)) == 1


def test_pfs_yes_both_rekeys_with_ke() -> None:
    """pfs=yes on both ends: the rekey carries KE and is accepted (no replacement)."""
    net = Net()
    net.up()
    old_ike = net.established(net.west)[0].serial
    _rekey(net)
    assert net.established(net.west)[0].serial == old_ike
    ch = net.children(net.east)
    assert len(ch) == 1 and ch[0].ke  # a KE group was used for the rekey
    check_pair(net)


@pytest.mark.parametrize("west_pfs,east_pfs", [(False, True), (True, False)])
def test_refused_rekeys_never_end_the_tunnel(west_pfs: bool, east_pfs: bool) -> None:
    """Whichever side's PFS differs and whichever side rekeys (short lifetimes on
    both; only east rekeys when west has rekey=no), a Child SA is always up."""
    for west_rekey in (True, False):
        kw = {"salifetime": 30.0, "rekeymargin": 10.0}
        net = Net(west_kw=dict(kw, pfs=west_pfs, rekey=west_rekey),
                  east_kw=dict(kw, pfs=east_pfs))
        net.up()
        for _ in range(60):  # 180 s: six lifetimes
            net.advance(3)
            assert net.children(net.west) and net.children(net.east), \
                "\n".join(net.west.logs()[-20:] + net.east.logs()[-20:])
        assert "Child SA expired" not in _logs(net.west) + _logs(net.east)
        assert "refused" in _logs(net.west) + _logs(net.east)


# ------------------------------------------------------------------ refused Child SA
def test_refused_child_in_ike_auth_is_deleted_on_the_peer() -> None:
    """East narrows (narrowing=yes) to a /25; west (narrowing=no) refuses the
    answer and sends a Delete for east's SA, so east keeps nothing."""
    net = Net(east_kw={"rightsubnet": "203.0.113.0/25", "narrowing": True})
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert not net.children(net.west)
    assert "Child SA failed" in _logs(net.west)
    assert not net.children(net.east) and not net.east.kernel_sas
    assert not net.east.policies
    assert any(e.kind is EventKind.FAILED for e in net.west.events)


def test_refused_child_in_create_child_sa_is_deleted_on_the_peer() -> None:
    """The same for a Child SA of a second conn over CREATE_CHILD_SA."""
    net = Net()
    net.up()
    wc = make_conn("second", local_left=True, leftsubnet="198.51.100.0/24",
                   rightsubnet="192.0.2.128/25")
    ec = make_conn("second", local_left=False, leftsubnet="198.51.100.0/24",
                   rightsubnet="192.0.2.128/26", narrowing=True)
    net.apply(net.west, net.west.engine.add_connection(wc))
    net.apply(net.east, net.east.engine.add_connection(ec))
    ikesa = _west_ike(net)
    before = len(net.east.kernel_sas)
    net.apply(net.west, net.west.engine.queue(ikesa, ChildCreate(wc), net.now))
    net.run()
    assert "CREATE_CHILD_SA failed" in _logs(net.west)
    assert len(net.east.kernel_sas) == before == 2
    assert [c.conn for c in net.children(net.east)] == ["west-east"]


# ------------------------------------------------------------------ authby
@contextlib.contextmanager
def _west_auth_method(net: Net, method: int) -> Iterator[None]:
    """West (only) sends AUTH with ``method`` (a hand-built IKE_AUTH)."""
    real = codec.auth
    engine = net.west.engine
    orig = engine.receive

    def receive(*a, **k):  # noqa: ANN002, ANN003, ANN202
        ike_auth.codec.auth = lambda _m, data: real(method, data)  # type: ignore[assignment]
        try:
            return orig(*a, **k)
        finally:
            ike_auth.codec.auth = real  # type: ignore[assignment]

    engine.receive = receive  # type: ignore[method-assign]
    try:
        yield
    finally:
        engine.receive = orig  # type: ignore[method-assign]
        ike_auth.codec.auth = real  # type: ignore[assignment]


@pytest.mark.parametrize("method", [AuthMethod.RSA_SIG,
                                    AuthMethod(14)])
def test_non_psk_auth_method_against_psk_conn(method: int) -> None:
    net = Net()
    with _west_auth_method(net, int(method)):
        net.up()
    assert not net.established(net.east) and not net.established(net.west)
    assert f"AUTH method {int(method)}" in _logs(net.east)
    assert "AUTHENTICATION_FAILED" in _logs(net.west)


def test_asymmetric_auth_responder_requires_its_peers_method() -> None:
    """East: authby=secret but rightauth=rsasig (the peer must sign): a PSK AUTH from
    west is refused with AUTHENTICATION_FAILED."""
    net = Net(east_kw={})
    east_conn = net.east.engine.connections["west-east"]
    east_conn.left.auth = "rsasig"  # east's remote end is left
    net.up()
    assert not net.established(net.east) and not net.established(net.west)
    assert "AUTHENTICATION_FAILED" in _logs(net.west)


def test_asymmetric_auth_initiator_uses_its_own_method() -> None:
    """West: leftauth=rsasig: it must not authenticate with the PSK."""
    net = Net()
    net.west.engine.connections["west-east"].left.auth = "rsasig"
    net.up()
    assert not net.established(net.east) and not net.established(net.west)
    assert "leftauth=rsasig" in _logs(net.west) or "rsasig" in _logs(net.west)
    assert not [s for s, _ in net.sent if s == "west"][1:]  # no IKE_AUTH was sent


def test_asymmetric_auth_initiator_checks_the_responders_method() -> None:
    """West: rightauth=rsasig: a PSK AUTH from east is not accepted."""
    net = Net()
    net.west.engine.connections["west-east"].right.auth = "rsasig"
    net.up()
    assert not net.established(net.west)


def test_psk_both_sides_explicit_auth() -> None:
    """leftauth=secret rightauth=secret: works as authby=secret."""
    net = Net()
    for side in (net.west, net.east):
        c = side.engine.connections["west-east"]
        c.left.auth = c.right.auth = "secret"
    net.up()
    assert net.children(net.west) and net.children(net.east)
    assert N.AUTHENTICATION_FAILED  # the enum exists (used in logs above)
