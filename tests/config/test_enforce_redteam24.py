"""Red team 24, "enforce or refuse, never ignore": ipsec.conf values checked against
what Libreswan 5.2's ipsec.conf(5) says they do, at the engine (two engines back to
back, ``tests/ike/harness.py``).

authby= signature words (ipsec.conf(5) authby=, Libreswan 5.2's confread.c):
``rsa-sha1`` is RSA PKCS#1 v1.5 with SHA-1 only, ``rsa-sha2`` / ``rsa-sha2_NNN`` is
RSASSA-PSS only, ``rsasig`` / ``rsa`` both.  A peer whose signature verifies with its
key but is of another kind than the conn names is refused (Libreswan:
"authentication failed: peer authentication requires policy ...").  An ``authby=rsa-sha1``
conn sends no SIGNATURE_HASH_ALGORITHMS.  ``leftauth=rsasig|ecdsa`` keeps the
``authby=`` words of its kind, and is an error beside an authby= of the other kind only.

``esp=...;dhN``: the only PFS groups of CREATE_CHILD_SA (the IKE SA's group only when
esp= names none); INVALID_KE_PAYLOAD names a group the peer offered (RFC 7296 §1.3).

``rekey=no`` beats ``reauth=yes`` (Libreswan 5.2 ikev2_parent.c): the IKE SA expires;
``reauth=yes`` never rekeys the IKE SA in place, as responder either.

``mobike=yes``: as responder only on a conn whose peer is %any (Libreswan 5.2).

Checked and already right (no test here, see the existing ones): replay-window=0 forces
esn=no; esn= mismatch refuses the Child SA; encapsulation=no|yes; fragmentation=no sends
no IKEV2_FRAGMENTATION_SUPPORTED; type=transport vs tunnel; phase2=ah vs esp; ike= / esp=
strict at the responder; ikelifetime= / ipsec-lifetime= clamped to 24h with Libreswan's
warning; dpdtimeout= not used on IKEv2 conns; ikev2=no|never, compress=yes refused
(nat-ikev1-method= loads and is ignored, as in Libreswan 5.2: tests/config/test_ikev1_keys24.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ike.test_rawkeys import raw_net  # tests/ is on sys.path (tests/conftest.py)

from pypluto.config.parser import parse_config_text
from pypluto.crypto import sigs
from pypluto.ike import auth_sig

# ------------------------------------------------------------------ authby= RSA kinds
_PKCS1_SHA256 = (sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_SHA2_256, False)
_PSS_SHA256 = (sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_SHA2_256, True)


@pytest.fixture
def west_signs_as(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """West (whose conn says ``authby=rsasig``, and only west) signs with the scheme put
    in ``box["scheme"]``: (AUTH method, RFC 7427 hash, PSS)."""
    box: dict = {}
    real = auth_sig._method

    def method(key: object, words: list[str], hashes: set[int]) -> tuple[int, int, bool]:
        if words == ["rsasig"] and box.get("scheme"):
            return box["scheme"]  # type: ignore[no-any-return]
        return real(key, words, hashes)

    monkeypatch.setattr(auth_sig, "_method", method)
    yield box


@pytest.mark.parametrize(("east_authby", "scheme", "ok"), [
    ("rsa-sha2", _PKCS1_SHA256, False),  # rsa-sha2 is RSASSA-PSS only
    ("rsa-sha2_256", _PKCS1_SHA256, False),
    ("rsa-sha2", _PSS_SHA256, True),
    ("rsa-sha1", _PSS_SHA256, False),  # rsa-sha1 is PKCS#1 v1.5 SHA-1 only
    ("rsa-sha1", _PKCS1_SHA256, False),
    ("rsasig", _PKCS1_SHA256, True),  # rsasig: PSS or PKCS#1 v1.5
    ("rsasig", _PSS_SHA256, True),
    # RFC 8247 §3.2.1: no SHA-1 in RFC 7427 signatures, whatever authby= says
    ("rsasig", (sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_SHA1, False), False),
    ("rsa-sha1", (sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_SHA1, False), False),
    ("rsasig", (sigs.AUTH_RSA, sigs.HASH_SHA1, False), True),  # AUTH method 1
])
def test_rsa_authby_words_limit_the_peers_signature_kind(
        tmp_path: Path, west_signs_as: dict, east_authby: str,
        scheme: tuple[int, int, bool], ok: bool) -> None:
    """East (the responder) with ``authby=EAST_AUTHBY``; west signs its AUTH with a valid
    RFC 7427 signature of the given kind.  Before the fix ``rsa-sha2`` took a PKCS#1
    v1.5 signature and ``rsa-sha1`` took any SHA-2 one."""
    net = raw_net(tmp_path, authby="rsasig")
    net.east.engine.connections["west-east"].authby = east_authby
    west_signs_as["scheme"] = scheme
    net.up()
    elog = "\n".join(net.east.logs())
    if ok:
        assert net.established(net.east) and net.established(net.west), elog
    else:
        assert not net.established(net.east) and not net.established(net.west), elog
        why = "SHA-1 in an RFC 7427 signature" if scheme[:2] == (
            sigs.AUTH_DIGITAL_SIGNATURE, sigs.HASH_SHA1) else f"authby={east_authby}"
        assert why in elog, elog
        assert "AUTHENTICATION_FAILED" in "\n".join(net.west.logs())


# ------------------------------------------------------------------ leftauth= within authby=
_PKCS1_SHA1 = (sigs.AUTH_RSA, sigs.HASH_SHA1, False)
_CONN = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n"


@pytest.mark.parametrize(("scheme", "ok"), [(_PKCS1_SHA1, False), (_PKCS1_SHA256, False),
                                            (_PSS_SHA256, True)])
def test_rightauth_rsasig_keeps_authby_rsa_sha2(tmp_path: Path, west_signs_as: dict,
                                                scheme: tuple[int, int, bool], ok: bool
                                                ) -> None:
    """``authby=rsa-sha2`` with ``leftauth=rsasig`` / ``rightauth=rsasig``: Libreswan 5.2
    keeps the authby= words of the end's kind (connections.c masks authby= with the
    end's auth), so the peer must still sign with RSASSA-PSS and SHA-2.  Before: the end's
    ``rsasig`` replaced authby= and a PKCS#1 v1.5 SHA-1 signature (AUTH method 1) was
    accepted."""
    cfg = parse_config_text(_CONN + "\tauthby=rsa-sha2\n\tleftauth=rsasig\n"
                            "\trightauth=rsasig\n", "f")
    parsed = cfg.conns["c"]
    net = raw_net(tmp_path, authby="rsasig")
    east = net.east.engine.connections["west-east"]
    east.authby, east.left.auth, east.right.auth = \
        parsed.authby, parsed.left.auth, parsed.right.auth
    west_signs_as["scheme"] = scheme
    net.up()
    elog = "\n".join(net.east.logs())
    assert bool(net.established(net.east)) is ok, elog
    assert bool(net.established(net.west)) is ok
    if not ok:
        assert "AUTHENTICATION_FAILED" in "\n".join(net.west.logs())


@pytest.mark.parametrize(("body", "line", "why"), [
    ("\tauthby=ecdsa\n\tleftauth=rsasig\n\trightauth=rsasig\n", 5,
     "leftauth=rsasig expects authby=rsasig"),
    ("\tauthby=rsa-sha2_256\n\tleftauth=rsasig\n\trightauth=ecdsa\n", 6,
     "rightauth=ecdsa expects authby=ecdsa"),
])
def test_end_auth_of_a_kind_authby_excludes_is_refused(body: str, line: int,
                                                       why: str) -> None:
    """An end's signature kind that authby= does not allow at all: Libreswan 5.2 refuses
    the conn with these words; so do we (before: the end's auth won, authby= ignored)."""
    cfg = parse_config_text(_CONN + body, "f")
    assert "c" not in cfg.conns
    (d,) = cfg.failed["c"]
    assert (d.line, why in str(d)) == (line, True), str(d)


def test_authby_rsa_sha1_gets_pkcs1_v15_from_an_rsasig_peer(tmp_path: Path) -> None:
    """ikev2-digsig-05-rsasig-rsa1 with raw keys: east ``authby=rsa-sha1`` sends no
    SIGNATURE_HASH_ALGORITHMS (Libreswan 5.2 sends it only with a SHA-2 hash policy), so
    west (``authby=rsasig``) signs with AUTH method 1, which east accepts; both ways
    PKCS#1 v1.5 SHA-1.  West, with SHA-2 allowed, still announces its hashes."""
    from ike.test_rawkeys import _types

    from pypluto.iana import NotifyType
    from pypluto.iana import PayloadType as PT
    from pypluto.wire import message as wm

    net = raw_net(tmp_path, authby="rsasig")
    net.east.engine.connections["west-east"].authby = "rsa-sha1"
    net.up()
    assert net.established(net.east) and net.established(net.west), net.east.logs()
    for side in (net.west, net.east):
        assert any("RSA PKCS#1 v1.5 SHA-1" in m for m in side.logs()), side.logs()
    inits = [(s, wm.parse_message(d)) for s, d in net.sent[:2]]
    sighash = {s: any(getattr(p, "notify_type", None) == NotifyType.SIGNATURE_HASH_ALGORITHMS
                      for p in m.payloads) for s, m in inits}
    assert sighash == {"west": True, "east": False}
    assert PT.SA in _types(net.sent[0][1])


# ------------------------------------------------------------------ esp=...;dhN (PFS group)
def _rekey_child(w: dict, e: dict):  # noqa: ANN202
    from ike.test_libreswan_outcomes import _children, make_net

    net = make_net(w, e)
    net.up()
    assert _children(net.west, net)
    w0, e0 = len(net.west.logs()), len(net.east.logs())
    net.apply(net.west, net.west.engine.rekey_child("west-east", net.now))
    net.run()
    return net, net.west.logs()[w0:], net.east.logs()[e0:], _children


@pytest.mark.parametrize("east_esp", ["aes-sha2;dh19", "aes-sha2"])
def test_esp_dh_group_is_the_only_pfs_group(east_esp: str) -> None:
    """West ``esp=aes-sha2;dh14`` (PFS with MODP2048 only); east wants DH19 (written, or
    the IKE SA's group when its esp= names none).  The rekey fails: east answers
    NO_PROPOSAL_CHOSEN (west offered no group of its, RFC 7296 §1.3: INVALID_KE_PAYLOAD
    names a group of the proposals) and west never rekeys with DH19.  Before: east asked
    for DH19 with INVALID_KE_PAYLOAD and west followed it (the IKE SA's group counted as
    allowed), so the Child SA was keyed with a group esp= does not allow."""
    net, wlog, elog, children = _rekey_child({"esp": "aes-sha2;dh14"}, {"esp": east_esp})
    assert "peer asks for KE group 19; retrying" not in wlog, wlog
    assert any("offers no KE group of ours (19); answering NO_PROPOSAL_CHOSEN" in m
               for m in elog), elog
    assert "CREATE_CHILD_SA failed: peer answered NO_PROPOSAL_CHOSEN" in wlog, wlog
    net.advance(30)
    assert all(c.ke != "ECP_256" for s in (net.west, net.east) for c in children(s, net))


def test_invalid_ke_names_an_offered_group_in_our_order() -> None:
    """West ``esp=aes-sha2;dh14+dh19+dh20`` sends KE 14; east ``esp=aes-sha2;dh20+dh19``
    answers INVALID_KE_PAYLOAD naming DH20, its first choice among the groups west
    offered (before: the lowest group number it allowed, DH19); west retries with it."""
    net, wlog, _elog, children = _rekey_child({"esp": "aes-sha2;dh14+dh19+dh20"},
                                              {"esp": "aes-sha2;dh20+dh19"})
    assert "peer asks for KE group 20; retrying" in wlog, wlog
    cw, ce = children(net.west, net), children(net.east, net)
    assert [c.ke for c in cw] == [c.ke for c in ce] == ["ECP_384"]


def test_invalid_ke_for_the_ike_group_is_not_followed_when_esp_names_groups() -> None:
    """East ``esp=aes128-sha2_256;dh14`` rekeys its Child SA; the peer answers
    INVALID_KE_PAYLOAD asking for DH19 (the IKE SA's group, which esp= does not name).
    East does not retry with it (RFC 7296 §1.3: the responder picks from our
    proposals).  Before: the IKE SA's group always counted as a PFS group of the conn,
    and east rekeyed with DH19.  (The IKE SA's group is the PFS group only when esp=
    names none: test_pfs_yes_both_rekeys_with_ke.)"""
    from ike.test_hostile_established import _east_request, _respond, _setup

    from pypluto.iana import NotifyType as N
    from pypluto.ike import codec
    from pypluto.ike.actions import Log

    net, w, _e = _setup(west_kw={"esp": "aes128-sha2_256;dh14"},
                        east_kw={"esp": "aes128-sha2_256;dh14"})
    assert w.ke_group == 19
    msgid, _ = _east_request(net, w, net.east.engine.rekey_child("west-east", net.now))
    acts = _respond(net, w, msgid, [codec.notify(N.INVALID_KE_PAYLOAD, (19).to_bytes(2, "big"))])
    logs = [a.message for a in acts if isinstance(a, Log)]
    assert not any("peer asks for KE group 19" in m for m in logs), logs
    assert any("CREATE_CHILD_SA failed: peer answered INVALID_KE_PAYLOAD" in m for m in logs)


# ------------------------------------------------------------------ rekey=no with reauth=yes
def test_rekey_no_wins_over_reauth_yes() -> None:
    """``rekey=no`` with ``reauth=yes``: Libreswan 5.2 schedules the IKE SA's expiry
    ("policy doesn't allow re-key", ikev2_parent.c) and ipsec.conf(5) says rekey=no
    keeps pluto from requesting renegotiation, so the IKE SA is neither rekeyed nor
    re-authenticated: it expires.  Before: reauth=yes alone scheduled a
    re-authentication.  Control: reauth=yes (rekey=yes) does re-authenticate."""
    from ike.test_libreswan_outcomes import _ike, make_net

    kw = {"ikelifetime": "120s", "ipsec-lifetime": "100s", "rekeymargin": "30s",
          "rekeyfuzz": "0%"}
    for west, reauths in (({"rekey": "no", "reauth": "yes"}, False),
                          ({"reauth": "yes"}, True)):
        net = make_net({**kw, **west}, {**kw, "rekey": "no"})
        net.up()
        net.advance(200)
        wlog = net.west.logs()
        assert any("(reauth)" in m for m in wlog) is reauths, wlog
        assert ("IKE SA expired (ikelifetime)" in wlog) is not reauths, wlog
        assert bool(_ike(net.west, net)) is reauths


# ------------------------------------------------------------------ mobike=yes
@pytest.mark.parametrize(("east_peer", "moves"), [("%any", True), ("192.0.2.1", False)])
def test_mobike_as_responder_only_for_a_peer_at_any_address(east_peer: str,
                                                             moves: bool) -> None:
    """mobike=yes on both ends.  Libreswan 5.2 enables MOBIKE as responder only on a conn
    whose peer is %any ("not responding with v2N_MOBIKE_SUPPORTED, that end is not
    %any"; ipsec.conf(5): only a server lets its clients migrate); a conn that names its
    peer's address (left=192.0.2.1) keeps the SAs on that address.  Before: east agreed
    to MOBIKE and followed west to a new address."""
    from ike.harness import Net
    from ike.test_mobike import NEW_WEST, _moves

    net = Net(west_kw={"mobike": True}, east_kw={"mobike": True, "left": east_peer})
    net.up()
    assert net.children(net.west) and net.children(net.east)
    (wi,) = [i for i in net.west.engine.by_serial.values() if i.established]
    (ei,) = [i for i in net.east.engine.by_serial.values() if i.established]
    assert (wi.mobike, ei.mobike) == (moves, moves)
    refusal = "not responding with v2N_MOBIKE_SUPPORTED, that end is not %any"
    assert any(refusal in m for m in net.east.logs()) is not moves, net.east.logs()
    net.apply(net.west, net.west.engine.local_address_changed(wi.local.addr, NEW_WEST,
                                                              net.now))
    net.run()
    assert bool(_moves(net.east)) is moves
    assert (ei.remote.addr == NEW_WEST) is moves


@pytest.mark.parametrize(("east_peer", "reauths"), [(None, True), ("%any", False)])
def test_reauth_yes_never_rekeys_the_ike_sa_as_responder(east_peer: str | None,
                                                         reauths: bool) -> None:
    """East (the IKE SA's responder) has ``reauth=yes``; west (``rekey=no``) renews
    nothing.  At east's rekey time it re-authenticates with a new IKE SA to west (whose
    address its conn names), as Libreswan 5.2 replaces an IKE SA with reauth=yes in
    either role; with west at %any it cannot, and the IKE SA is left to expire.  It is
    never rekeyed with CREATE_CHILD_SA, which would keep the old authentication.
    Before: east, as responder, rekeyed the IKE SA in place."""
    from ike.test_libreswan_outcomes import _ike, make_net

    kw = {"ikelifetime": "120s", "ipsec-lifetime": "100s", "rekeymargin": "30s",
          "rekeyfuzz": "0%"}
    east = {**kw, "reauth": "yes", **({"left": east_peer} if east_peer else {})}
    net = make_net({**kw, "rekey": "no"}, east)
    net.up()
    net.advance(110)
    elog = net.east.logs()
    assert "initiating rekey of the IKE SA" not in elog, elog
    assert any("to replace #1 (reauth)" in m for m in elog) is reauths, elog
    assert [i.serial != 1 for i in _ike(net.east, net)] == [reauths]
