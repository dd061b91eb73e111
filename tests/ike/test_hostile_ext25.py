"""A hostile peer against three optional extensions, engine level: REDIRECT (RFC 5685),
PPK (RFC 8784) and NULL authentication (RFC 7619).

What tests/ike/test_hostile_extensions.py and the feature tests already cover is not
repeated here; these are the remaining lies and edge cases.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from pypluto.config.ids import parse_id
from pypluto.config.parser import parse_config_text
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike import identity as idm
from pypluto.ike import ppk as ppkmod
from pypluto.ike.actions import AddPolicy, DelPolicy, Log, SendPacket
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import ike_auth
from pypluto.ike.tasks import redirect as redmod
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import EAST, PSK, WEST, Net, make_conn
from .test_hostile_extensions import (
    _deliver,
    _ike,
    _internal_errors,
    _pop,
    _RawRedirect,
    _rewrite,
    _warned,
)
from .test_ppk import PPK_A, PPK_B, PPKStore, _ppks, ppk_net
from .test_redirect import GW_B, Net3
from .test_redirect_ikeauth import _gateway_a

INIT = ExchangeType.IKE_SA_INIT
AUTH = ExchangeType.IKE_AUTH
NULL = {"authby": "null", "leftid": None, "rightid": None}
Payloads = list[wp.Payload]


def _sent_to(net: Net3, addr: object) -> int:
    """How many packets west sent to ``addr``."""
    return sum(1 for a in net.west.actions if isinstance(a, SendPacket)
               and a.remote.addr == addr)


def _stay_on_a(net: Net3) -> None:
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert not net.established(net.b) and not net.b.actions[1:]
    assert _sent_to(net, GW_B) == 0
    assert not _internal_errors(net)


# ================================================================== REDIRECT config
@pytest.mark.parametrize("accept_to", ["%any", "%ANY", "198.51.100.7, %any"])
def test_accept_redirect_to_any_accepts_every_gateway(accept_to: str) -> None:
    """Libreswan 5.2's ipsec.conf(5): ``accept-redirect-to=%any`` means the same as
    leaving it unset, any gateway.  pypluto took ``%any`` for a name that matched
    nothing and refused every redirect."""
    net = Net3(accept_to=accept_to)
    net.up()
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert not _warned(net.west, "not in accept-redirect-to="), net.west.logs()
    assert net.west.engine.connections["west-east"].remote.host_addr == GW_B
    assert net.established(net.b) and net.children(net.b)
    assert not net.established(net.east)


# ================================================================== REDIRECT wire lies
@pytest.mark.parametrize("tail", [b"\x00", b"\x00\x01", b"n" * 32])
def test_informational_redirect_with_data_after_the_gateway_is_ignored(tail: bytes
                                                                      ) -> None:
    """RFC 5685 §8: Nonce Data is only in the REDIRECT of an IKE_SA_INIT answer.  A §5
    REDIRECT with bytes after a valid GW identity is malformed (Libreswan 5.2 refuses
    it too: "unexpected extra bytes"): answered, not followed."""
    net = Net3()
    net.up()
    raw = redmod.encode_gw(GW_B) + tail
    net.apply(net.east, net.east.engine.queue(_ike(net.east), _RawRedirect(raw), net.now))
    net.run()
    assert _warned(net.west, "ignoring a malformed REDIRECT (data after the GW identity)")
    assert len(net.established(net.west)) == 1 and net.children(net.west)
    assert net.established(net.east) and net.children(net.east)
    _stay_on_a(net)


def test_ike_auth_redirect_with_data_after_the_gateway_is_ignored(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same in the REDIRECT of an IKE_AUTH answer (§6): the client does not go."""
    real = redmod.encode_gw
    monkeypatch.setattr(redmod, "encode_gw", lambda gw, nonce=b"": real(gw, nonce) + b"x")
    net = Net3()
    _gateway_a(net)
    net.up()
    assert _warned(net.west, "ignoring a malformed REDIRECT (data after the GW identity)")
    _stay_on_a(net)


def _to_auth_answer(net: Net3) -> SendPacket:
    """IKE_SA_INIT there and back, IKE_AUTH to A; A's IKE_AUTH answer off the wire."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    for _ in range(3):
        net.step()
    pkt = _pop(net, net.east)
    assert wm.peek_header(pkt.data).exchange == AUTH
    return pkt


@pytest.mark.parametrize("lie", ["auth", "idr"])
def test_ike_auth_redirect_is_acted_on_only_after_auth_verifies(lie: str) -> None:
    """RFC 5685 §6: the client follows a REDIRECT in IKE_AUTH only once the gateway's
    AUTH verified.  An answer with REDIRECT and a forged AUTH (or an IDr that is not the
    gateway) fails the IKE SA and leaves the connection where it was."""
    net = Net3()
    _gateway_a(net)
    pkt = _to_auth_answer(net)

    def mut(p: Payloads) -> Payloads:
        assert codec.has_notify(p, N.REDIRECT)
        out: Payloads = []
        for x in p:
            if lie == "auth" and isinstance(x, wp.AuthPayload):
                x = codec.auth(int(x.method), bytes(len(x.data)))
            elif lie == "idr" and isinstance(x, wp.IDPayload):
                x = codec.ident(x.payload_type, parse_id("@mallory.example"))
            out.append(x)
        return out

    _deliver(net, net.west, pkt, _rewrite(net, pkt, net.east, net.west, mut))
    net.run()
    assert not net.established(net.west)
    assert not any("redirected by" in m for m in net.west.logs()), net.west.logs()
    _stay_on_a(net)


def test_ike_auth_redirect_to_a_client_that_never_sent_redirect_supported() -> None:
    """A gateway adds REDIRECT to a normal IKE_AUTH answer (Child SA and all) although
    the client (accept-redirect=no) never said it supports it: ignored, the client
    keeps its IKE SA and Child SA on A."""
    net = Net3(accept="no")
    pkt = _to_auth_answer(net)

    def mut(p: Payloads) -> Payloads:
        return p + [codec.notify(N.REDIRECT, redmod.encode_gw(GW_B))]

    _deliver(net, net.west, pkt, _rewrite(net, pkt, net.east, net.west, mut))
    net.run()
    assert _warned(net.west, f"ignoring a REDIRECT to {GW_B}: accept-redirect=no")
    assert net.established(net.west) and net.children(net.west) and net.children(net.east)
    _stay_on_a(net)


def test_redirect_in_the_clients_requests_moves_no_gateway(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Only the original initiator is ever redirected: REDIRECT in the client's
    IKE_SA_INIT request and in its IKE_AUTH request changes
    nothing on a gateway whose conn has accept-redirect=yes."""
    real_init = redmod.init_notifies

    def init_notifies(conn):  # noqa: ANN001, ANN202
        return real_init(conn) + [codec.notify(N.REDIRECT, redmod.encode_gw(GW_B))]

    monkeypatch.setattr(redmod, "init_notifies", init_notifies)
    net = Net3()
    net.east.engine.connections["west-east"].raw["accept-redirect"] = "yes"
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    pkt = _pop(net, net.west)
    assert wm.peek_header(pkt.data).exchange == AUTH

    def mut(p: Payloads) -> Payloads:
        return p + [codec.notify(N.REDIRECT, redmod.encode_gw(GW_B))]

    _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, mut))
    net.run()
    assert net.established(net.east) and net.children(net.east) and net.children(net.west)
    assert net.east.engine.connections["west-east"].remote.host_addr == WEST
    assert not net.b.actions[1:] and not _internal_errors(net)


@pytest.mark.parametrize("how", ["prefix", "longer", "empty"])
def test_ike_sa_init_redirect_nonce_must_be_exactly_ni(how: str) -> None:
    """§4: the nonce data of an IKE_SA_INIT REDIRECT is our Ni, exactly: a prefix of
    it, Ni with more after it, or none at all is a spoofed answer and not followed."""
    net = Net3()
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    pkt = _pop(net, net.west)
    ni = _ike(net.west).ni
    nonce = {"prefix": ni[:-1], "longer": ni + b"\x00", "empty": b""}[how]
    answer = codec.encode(wm.peek_header(pkt.data).spi_i, bytes(8), INIT, False, True, 0,
                          [codec.notify(N.REDIRECT, redmod.encode_gw(GW_B, nonce))])
    _deliver(net, net.west, SendPacket(answer[0], pkt.remote, pkt.local), answer)
    net.run()
    assert _warned(net.west, "nonce data is not our Ni"), net.west.logs()
    _stay_on_a(net)


# ================================================================== PPK
_HASH = {5: hashlib.sha256, 6: hashlib.sha384, 7: hashlib.sha512}


def _prf_plus(prf: int, key: bytes, seed: bytes, n: int) -> bytes:
    """RFC 7296 §2.13 prf+ with HMAC-SHA2, written out here."""
    h = _HASH[prf]
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(key, t + seed + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:n]


def test_ppk_key_derivation_matches_an_independent_computation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8784 §3: SK_d' = prf+(PPK, SK_d), SK_pi' = prf+(PPK, SK_pi), SK_pr' =
    prf+(PPK, SK_pr), each as long as the key it replaces, checked against prf+ computed
    here with hmac; the established IKE SAs keep the mixed SK_d on both ends."""
    seen: list[tuple[int, bytes, bytes, bytes, bytes, bytes, bytes]] = []
    real = ppkmod._mix

    def spy(ike, value):  # noqa: ANN001, ANN202
        before = (ike.sk_d, ike.sk_pi, ike.sk_pr)
        real(ike, value)
        seen.append((ike.chosen.prf, *before, ike.sk_d, ike.sk_pi, ike.sk_pr))

    monkeypatch.setattr(ppkmod, "_mix", spy)
    net = ppk_net("insist", "insist")
    assert net.established(net.west) and net.established(net.east)
    assert len(seen) == 2 and seen[0] == seen[1]  # both ends mixed the same keys
    prf, d, pi, pr, d2, pi2, pr2 = seen[0]
    ppk = PPK_A.encode()
    assert d2 == _prf_plus(prf, ppk, d, len(d)) != d
    assert pi2 == _prf_plus(prf, ppk, pi, len(pi)) != pi
    assert pr2 == _prf_plus(prf, ppk, pr, len(pr)) != pr
    assert _ike(net.west).sk_d == _ike(net.east).sk_d == d2


@pytest.mark.parametrize("ptype", [0, 3, 255])
@pytest.mark.parametrize("east,up", [("propose", True), ("insist", False)])
def test_ppk_identity_of_an_unknown_type(ptype: int, east: str, up: bool) -> None:
    """PPK_IDENTITY whose PPK ID Type is neither PPK_ID_OPAQUE (1) nor PPK_ID_FIXED (2):
    an unusable PPK, so NO_PPK_AUTH with ppk=propose, AUTHENTICATION_FAILED with
    ppk=insist (Libreswan 5.2 also takes FIXED only)."""
    net = Net(west_kw={"ppk": "propose"}, east_kw={"ppk": east})
    net.west.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.east.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    pkt = _pop(net, net.west)

    def mut(p: Payloads) -> Payloads:
        return [codec.notify(N.PPK_IDENTITY, bytes([ptype]) + b"A")
                if isinstance(x, wp.NotifyPayload) and x.notify_type == N.PPK_IDENTITY
                else x for x in p]

    _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, mut))
    net.run()
    assert _warned(net.east, f"unusable PPK_IDENTITY (2 bytes, type {ptype})")
    assert bool(net.established(net.east)) is up and bool(net.established(net.west)) is up
    if up:
        assert not _ike(net.east).ppk.used and not _ike(net.west).ppk.used
    assert not _internal_errors(net)


@pytest.mark.parametrize("who", ["west", "east"])
def test_use_ppk_and_ppk_identity_in_an_ike_sa_rekey_are_ignored(
        who: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 8784 applies to the initial IKE SA only: USE_PPK (and a PPK_IDENTITY) in a
    CREATE_CHILD_SA rekey of the IKE SA change nothing; the new IKE SA derives from the
    mixed SK_d on both ends and carries on."""
    net = ppk_net("insist", "insist")
    side = getattr(net, who)
    other = net.other(side)
    old = _ike(side).sk_d
    net.apply(side, side.engine.rekey_ike("west-east", net.now))
    pkt = _pop(net, side)

    def mut(p: Payloads) -> Payloads:
        return p + [codec.notify(N.USE_PPK),
                    codec.notify(N.PPK_IDENTITY, bytes([ppkmod.PPK_ID_FIXED]) + b"A")]

    _deliver(net, other, pkt, _rewrite(net, pkt, side, other, mut))
    net.run()
    for s in (net.west, net.east):
        assert len(net.established(s)) == 1 and len(net.children(s)) == 1, s.logs()
        new = _ike(s)
        assert new.sk_d != old and not new.ppk.used and not new.ppk.negotiated
    assert _ike(net.west).sk_d == _ike(net.east).sk_d
    assert not _internal_errors(net)


def test_the_ppk_never_reaches_a_log_or_the_status() -> None:
    """Every outcome (used, unknown PPK_ID with fallback, ppk=insist failing, different
    PPK values, rekeys), every log level: no PPK value, as text or hex, anywhere."""
    nets = [
        ppk_net("insist", "insist"),
        ppk_net("propose", "propose", east_ppks=_ppks(("other", PPK_B))),
        ppk_net("propose", "insist", east_ppks=_ppks(("other", PPK_B))),
        ppk_net("insist", "insist", east_ppks=_ppks(("A", PPK_B))),
        ppk_net("propose", "propose", west_ids=[b"A"], east_ids=[b"B"],
                west_ppks=_ppks(("A", PPK_A), ("B", PPK_B)),
                east_ppks=_ppks(("A", PPK_A), ("B", PPK_B))),
    ]
    net = nets[0]
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    net.advance(3600 * 9)  # lifetimes, rekeys, expiries: more log lines
    secrets = [s for v in (PPK_A, PPK_B) for s in (v, v.encode().hex(), v[4:20])]
    for n in nets:
        for side in (n.west, n.east):
            text = "\n".join(a.message if isinstance(a.message, str) else a.message()
                             for a in side.actions if isinstance(a, Log))
            text += repr(side.engine.status(n.now))
            for s in secrets:
                assert s not in text, f"{s!r} in {side.name}'s logs"
        assert not _internal_errors(n)


# ================================================================== NULL auth
def test_id_null_with_a_body_is_id_null(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7619 ID_NULL with Identification Data: the data is ignored (as Libreswan
    5.2), the peer is '%null' whatever it wrote there, and the IKE SA comes up."""
    body = idm.Identity(13, b"@root\x00\xff" * 10, "%null", null=True)
    monkeypatch.setattr(ike_auth, "local_identity", lambda ike, conn: body
                        if conn.local_is_left else idm.local_identity(ike, conn))
    net = Net(west_kw=NULL, east_kw=NULL, west_psk=None, east_psk=None)
    net.up()
    assert net.established(net.east) and net.children(net.east)
    assert _ike(net.east).remote_id.null and _ike(net.east).remote_id.text == "%null"
    assert _warned(net.east, "authenticated peer using authby=null and NULL '%null'")
    assert not any("root" in m for m in net.east.logs())


@pytest.mark.parametrize("who", ["initiator", "responder"])
def test_null_auth_method_never_authenticates_a_psk_conn(
        who: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """AUTH method 13 (a MIC keyed with the sender's own SK_p, RFC 7619 §2.1) under a
    real ID on a PSK conn, from either end: refused, never authenticated."""
    left = who == "initiator"
    real = ike_auth.local_null
    monkeypatch.setattr(ike_auth, "local_null",
                        lambda conn: True if conn.local_is_left is left else real(conn))
    net = Net()
    net.up()
    assert not net.established(net.west) and not net.established(net.east)
    victim = net.east if left else net.west
    assert any("AUTH method 13" in m for m in victim.logs()), victim.logs()
    assert not net.west.kernel_sas and not net.east.kernel_sas


def test_null_peer_next_to_a_psk_conn(monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway with a PSK conn and an authby=null conn for the same peer address: an
    ID_NULL peer lands on the null conn, a PSK peer on the PSK conn, and a peer that
    claims the PSK conn's ID but authenticates with NULL gets neither."""
    real = ike_auth.local_null
    for west, conn in (("null", "anon"), ("psk", "west-east"), ("liar", None)):
        if west == "liar":
            monkeypatch.setattr(ike_auth, "local_null",
                                lambda c: True if c.local_is_left else real(c))
        net = Net(west_kw=NULL if west == "null" else {})
        net.apply(net.east, net.east.engine.add_connection(
            make_conn("anon", local_left=False, rightsubnet="10.9.0.0/16", **NULL)))
        net.up()
        monkeypatch.undo()
        got = [i.conn for i in net.east.engine.status(net.now).ike_sas]
        assert got == ([conn] if conn else []), (west, got, net.east.logs())
        if conn is None:
            assert _warned(net.east, "the peer used AUTH method 13")
            assert not net.east.kernel_sas


@pytest.mark.parametrize("ident,method", [("@west.example", 13), (None, 2)])
def test_null_conn_needs_id_null_and_auth_method_null(
        ident: str | None, method: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """authby=null on both ends, but the initiator sends a real ID with the NULL AUTH
    method (the conn's peer is ID_NULL, as Libreswan 5.2), or ID_NULL with a PSK MIC:
    refused with AUTHENTICATION_FAILED."""
    if ident is not None:
        monkeypatch.setattr(ike_auth, "local_identity",
                            lambda ike, conn: parse_id(ident) if conn.local_is_left
                            else idm.local_identity(ike, conn))
    else:
        monkeypatch.setattr(ike_auth, "_method", lambda conn: method)
    net = Net(west_kw=NULL, east_kw=NULL)
    net.up()
    assert not net.established(net.east) and not net.established(net.west)
    assert any("answering AUTHENTICATION_FAILED" in m for m in net.east.logs())
    assert not net.east.kernel_sas


CONN = """\
conn c
\tauthby=secret
\tleft=192.0.2.1
\tright=192.0.2.2
\taccept-redirect=yes
\tauto=add
"""


@pytest.mark.parametrize("value", ["192.0.2.300", "198.51.100.0/33", "-gw.example",
                                   "192.0.2.3,%nonsense"])
def test_bad_accept_redirect_to_refuses_the_conn_with_file_and_line(value: str) -> None:
    """accept-redirect-to= takes addresses and names (ipsec.conf(5)), networks and %any:
    anything else would silently match no gateway, so the conn is refused."""
    cfg = parse_config_text(CONN + f"\taccept-redirect-to={value}\n", "f")
    assert "c" not in cfg.conns
    d = cfg.failed["c"][0]
    assert "is neither an IP address, a network nor a host name" in str(d), str(d)
    assert d.line == 7, str(d)


def test_good_accept_redirect_to_loads() -> None:
    cfg = parse_config_text(CONN + "\taccept-redirect-to=192.0.2.3, 2001:db8::/64, "
                            "gw-b.example., %any\n", "f")
    assert "c" in cfg.conns, cfg.failed


@pytest.mark.parametrize("when", ["ike_sa_init", "informational"])
def test_redirected_from_alone_says_the_client_supports_redirect(
        when: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that was redirected sends REDIRECTED_FROM in its next IKE_SA_INIT
    (RFC 5685 §5); Libreswan 5.2 sends it instead of REDIRECT_SUPPORTED, and both
    Libreswan and strongSwan gateways take either as the client's support.  pypluto's
    gateway required REDIRECT_SUPPORTED, so such a client could never be redirected
    again (global-redirect=, send-redirect=, ipsec redirect)."""
    monkeypatch.setattr(redmod, "init_notifies", lambda conn: [
        codec.notify(N.REDIRECTED_FROM, redmod.encode_gw(GW_B))])
    a = EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]) \
        if when == "ike_sa_init" else None
    net = Net3(a_settings=a)
    net.up()
    if when == "informational":
        assert _ike(net.east).redirect_ok
        net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
        net.run()
    assert net.established(net.b) and net.children(net.b), net.east.logs()
    assert not net.established(net.east)
    assert net.west.engine.connections["west-east"].remote.host_addr == GW_B


def _reauth_redirected(where: str) -> Net3:
    """West up with gateway A (reauth=yes), which redirects a new IKE SA to B in
    IKE_AUTH (``where="ike_auth"``, send-redirect=) or IKE_SA_INIT (global-redirect=)."""
    net = Net3()
    net.west.engine.connections["west-east"].reauth = True
    net.up()
    if where == "ike_auth":
        _gateway_a(net)
    else:
        net.east.engine.settings.global_redirect = "yes"
        net.east.engine.settings.global_redirect_to = [GW_B]
    return net


@pytest.mark.parametrize("where", ["ike_auth", "ike_sa_init"])
def test_a_reauthentication_redirected_moves_the_policies_too(where: str) -> None:
    """reauth=yes: the new IKE SA (make-before-break) is redirected by gateway A to B in
    IKE_AUTH (send-redirect=) or IKE_SA_INIT (global-redirect=).  The old IKE SA at A
    keeps the connection's policies until it goes; the Child SA at B then inherits
    them, and their templates must name B: pypluto kept A's, so the only Child SA was
    B's while outbound traffic was still steered to A (no SA there: dropped)."""
    net = _reauth_redirected(where)
    net.advance(8 * 3600 + 60)  # the reauthentication, then the old IKE SA's expiry
    ikes = net.west.engine.status(net.now).ike_sas
    assert [i.remote for i in ikes] == [f"{GW_B}:500"], net.west.logs()
    assert net.children(net.west) and net.children(net.b) and not net.established(net.east)
    assert {(s.src, s.dst) for s in net.west.kernel_sas.values()} == {(WEST, GW_B),
                                                                      (GW_B, WEST)}
    kernel: dict = {}  # as the kernel keeps them: one per selector and direction, the last
    for a in net.west.actions:
        if isinstance(a, AddPolicy | DelPolicy):
            key = (a.policy.direction, a.policy.src, a.policy.dst)
            if isinstance(a, AddPolicy):
                kernel[key] = a.policy
            else:
                kernel.pop(key, None)
    tmpl = {(p.direction, p.tmpl_src, p.tmpl_dst) for p in kernel.values()}
    assert tmpl == {("out", WEST, GW_B), ("in", GW_B, WEST), ("fwd", GW_B, WEST)}, tmpl
    assert not _internal_errors(net)


def test_a_gateway_redirecting_to_itself_is_followed_only_max_redirects_times() -> None:
    """global-redirect-to= naming the gateway itself (a loop of one): the client follows
    ``MAX_REDIRECTS`` redirects (5, as Libreswan 5.2), then gives up (RFC 5685 §7)."""
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[EAST]))
    net.up()
    assert len([m for m in net.west.logs() if "redirected by" in m]) == redmod.MAX_REDIRECTS
    assert _warned(net.west, "redirect loop")
    assert not net.west.engine.by_serial and not net.queue
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert not _internal_errors(net)
