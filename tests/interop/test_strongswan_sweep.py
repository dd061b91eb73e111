"""Libreswan 5.2's ``interop-ikev2-strongswan-*`` tests, replayed with pypluto against
the real strongSwan 5.9.8 (charon-systemd, kernel-libipsec) of the interop lab.

Each case names the Libreswan test dir whose setting it carries over (pypluto in
Libreswan's place; the strongSwan side restated as swanctl.conf).  Only the settings
that no other interop test here covers are replayed (see docs/interop-matrix.md and
the sweep report): an initial KE guess refused with INVALID_KE_PAYLOAD (RFC 7296
§1.2) in both roles, ESN (RFC 4303 §2.2.1), AES-XCBC as PRF and integrity
(RFC 3566, RFC 4434), AES-CCM with PFS (RFC 4309), NULL encryption (RFC 2410),
transport/tunnel mode mismatches (RFC 7296 §1.3.1), a second Child SA on the same
IKE SA (§1.3.1) deleted alone by the peer, and a strongSwan reauthentication
(RFC 7296 §2.8.3).

kernel-libipsec always fakes NAT, so every Child SA here is ESP-in-UDP.  Its limits
shape some cases: no ESN ("IPsec SA: ESN not supported"), no AES-GMAC, and no
host-to-host SA covering the IKE peer unless ``allow_peer_ts`` (see PEER_TS).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import peers
import pytest
from lab import (
    EAST_INNER,
    EAST_OUTER,
    EAST_SUBNET,
    WEST_INNER,
    WEST_OUTER,
    WEST_SUBNET,
    Lab,
    require,
)
from peers import (
    EAST_ID,
    IPSEC_SECRETS,
    PSK,
    WEST_ID,
    Pypluto,
    StrongSwan,
    have_strongswan,
    psk_ends,
)

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(120)]
PEER = "strongSwan 5.9.8"
# kernel-libipsec refuses a host-to-host Child SA ("conflicts with IKE traffic")
# unless told that the remote TS may be the IKE peer itself (allow_peer_ts); its
# route into the TUN device (table 220) would then swallow its IKE messages to us,
# so _host_to_host() puts a rule for our address ahead of table 220 (no traffic is
# sent through these host-to-host SAs)
PEER_TS = "plugins {\nkernel-libipsec {\nallow_peer_ts = yes\n}\n}"
EAST_INNER2 = "203.0.113.129"  # behind the second Child SA (15-child-sa-responder)
SS_DEFAULT_ESP = peers._SS_DEFAULT_ESP


# ------------------------------------------------------------------ helpers
def _child(name: str, *, local_ts: str = EAST_SUBNET, remote_ts: str = WEST_SUBNET,
           esp: str = SS_DEFAULT_ESP, extra: str = "") -> str:
    lines = "".join(f"\n                {ln.strip()}" for ln in extra.splitlines() if ln.strip())
    return f"""\
            {name} {{
                local_ts = {local_ts}
                remote_ts = {remote_ts}
                esp_proposals = {esp}{lines}
            }}"""


def _swanctl(ike: str, children: list[str], conn_extra: str = "") -> str:
    """strongSwan (east) conn ``east-west``, PSK, with the given Child sections."""
    lines = "".join(f"\n        {ln.strip()}" for ln in conn_extra.splitlines() if ln.strip())
    body = "\n".join(children)
    return f"""\
connections {{
    east-west {{
        version = 2
        local_addrs = {EAST_OUTER}
        remote_addrs = {WEST_OUTER}
        proposals = {ike}{lines}
{psk_ends(EAST_ID, WEST_ID)}
        children {{
{body}
        }}
    }}
}}
secrets {{
    ike-lab {{
        id-a = {EAST_ID}
        id-b = {WEST_ID}
        secret = "{PSK}"
    }}
}}
"""


def _conn(name: str = "west-east", *, subnets: tuple[str, str] | None = (WEST_SUBNET, EAST_SUBNET),
          extra: str = "") -> str:
    """A pypluto (west) conn in Libreswan syntax; ``subnets=None``: host to host."""
    nets = ""
    if subnets is not None:
        nets = (f"\n\tleftsubnet={subnets[0]}\n\tleftsourceip={WEST_INNER}"
                f"\n\trightsubnet={subnets[1]}")
    lines = "".join(f"\n\t{ln.strip()}" for ln in extra.splitlines() if ln.strip())
    return f"""
conn {name}
\tauthby=secret
\tleft={WEST_OUTER}
\tleftid=@{WEST_ID}
\tright={EAST_OUTER}
\trightid=@{EAST_ID}{nets}
\tauto=add{lines}
"""


def _start(lab: Lab, monkeypatch: pytest.MonkeyPatch, swanctl: str, conns: str,
           plugins: str = "", charon_extra: str = "") -> tuple[Pypluto, StrongSwan]:
    """strongSwan in east (with extra crypto ``plugins``), pypluto in west."""
    require(have_strongswan(), "strongSwan 5.9.8 (charon-systemd, swanctl) on the host")
    if plugins:  # loaded ahead of kernel-libipsec, which also uses them for ESP
        monkeypatch.setattr(peers, "_STRONGSWAN_CONF", peers._STRONGSWAN_CONF.replace(
            "{ipsec_plugin}", plugins + " {ipsec_plugin}"))
    them = StrongSwan(lab, lab.east, "strongswan-east", charon_extra=charon_extra).start()
    them.load(swanctl)
    us = Pypluto(lab, lab.west, "pypluto-west").start(
        "config setup\n\tplutodebug=none\n" + conns, IPSEC_SECRETS)
    return us, them


def _host_to_host(lab: Lab) -> None:
    lab.run(lab.east, ["ip", "rule", "add", "to", WEST_OUTER, "lookup", "main",
                       "priority", "100"])


def _east_route(lab: Lab, subnet: str = WEST_SUBNET) -> bool:
    r = lab.run(lab.east, ["ip", "route", "show", "table", "220"], check=False)
    return subnet in r.stdout


def _wait_up(lab: Lab, us: Pypluto, them: StrongSwan, dst: str = EAST_INNER) -> None:
    lab.wait_for(lambda: them.established() is not None and us.child_established()
                 and _east_route(lab), 20, "IKE and Child SA on both ends, routes in")
    _ping(lab, dst)


def _ping(lab: Lab, dst: str = EAST_INNER) -> None:
    lab.wait_for(lambda: lab.ping(lab.west, dst, count=1, timeout=1, src=WEST_INNER)[1] == 1,
                 10, f"a first echo from {dst} through the tunnel")
    assert lab.ping(lab.west, dst, count=3, src=WEST_INNER) == (3, 3), f"west -> {dst}"
    assert lab.ping(lab.east, WEST_INNER, count=3, src=dst) == (3, 3), f"{dst} -> west"


def _ike_algs(them: StrongSwan) -> str:
    text = them.swanctl("--list-sas", check=False).stdout
    m = re.search(r"^\s+((?:AES|CHACHA|3DES|CAMELLIA)\S*/\S+)\s*$", text, re.M)
    return m.group(1) if m else text[-400:]


def _bring_up(us: Pypluto, them: StrongSwan, role: str, conn: str = "west-east",
              child: str = "net") -> None:
    if role == "initiator":
        out = us.initiate(conn)
        assert "established" in out.lower() or us.child_established(), out
    else:
        r = them.initiate(child, check=False)
        assert r.returncode == 0, r.stdout[-2000:]


def _log(path: pathlib.Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


# ------------------------------------------------- KE mismatch (25, 26)
@pytest.mark.parametrize("role", ["initiator", "responder"])
def test_ke_mismatch_invalid_ke_retry(lab: Lab, cell: Callable[..., None],
                                      monkeypatch: pytest.MonkeyPatch, role: str) -> None:
    """interop-ikev2-strongswan-25-ke-mismatch-initiator / -26-ke-mismatch-responder:
    the initiator's first KE is MODP1536, the responder accepts only MODP2048 and
    answers INVALID_KE_PAYLOAD (RFC 7296 §1.2, §3.4); the retry with MODP2048 brings
    the tunnel up."""
    cell(peer=PEER, case="ke-mismatch", role=role, proposal="modp1536-then-modp2048")
    if role == "initiator":  # 25: we guess MODP1536 first; strongSwan wants MODP2048 only
        ss_ike, ours = "aes128-sha1-modp2048", "aes128-sha1;modp1536,aes128-sha1;modp2048"
    else:  # 26: strongSwan guesses MODP1536 first; we accept MODP2048 only
        ss_ike, ours = "aes128-sha1-modp1536, aes128-sha1-modp2048", "aes128-sha1;modp2048"
    us, them = _start(lab, monkeypatch, _swanctl(ss_ike, [_child("net")]),
                      _conn(extra=f"ike={ours}"))
    _bring_up(us, them, role)
    _wait_up(lab, us, them)
    assert "MODP_2048" in _ike_algs(them), _ike_algs(them)
    if role == "initiator":
        assert "received INVALID_KE_PAYLOAD" in _log(us.log), _log(us.log)[-2000:]
    else:
        text = _log(them.log)
        assert "parsed IKE_SA_INIT response 0 [ N(INVAL_KE) ]" in text, text[-3000:]
        assert "didn't accept DH group MODP_1536, it requested MODP_2048" in text, text[-3000:]
    cell(note=f"IKE {_ike_algs(them)} after INVALID_KE_PAYLOAD")


# ------------------------------------------ ESP/IKE algorithms (30, 20, 09)
@dataclass(frozen=True)
class Algs:
    name: str
    origin: str  # Libreswan test dir
    role: str
    ss_ike: str
    ss_esp: str
    ours: str  # ike=/esp=/esn= lines
    want_ike: str  # substrings of strongSwan's IKE SA algorithms
    want_esp: str  # substrings of strongSwan's Child SA algorithms
    plugins: str = ""
    pfs_rekey: bool = False  # the initial Child SA has no KE (§1.2): rekey to see the group


ALGS = [
    # AES-XCBC as IKE PRF and integrity and as ESP integrity (RFC 3566, RFC 4434)
    Algs("aes_xcbc", "interop-ikev2-strongswan-aes_xcbc / -20-psk-aes_xcbc", "initiator",
         "aes128-aesxcbc-modp2048", "aes128-aesxcbc",
         "ike=aes128-aes_xcbc;modp2048\nesp=aes128-aes_xcbc",
         "AES_XCBC_96/PRF_AES128_XCBC", "AES_CBC-128/AES_XCBC_96", plugins="xcbc"),
    # AES-CCM-16 with PFS MODP2048 (RFC 4309; 3DES-SHA1 IKE)
    Algs("aes_ccm-pfs", "interop-ikev2-strongswan-09-psk-aes-ccm", "initiator",
         "3des-sha1-modp2048", "aes128ccm16-modp2048",
         "ike=3des-sha1;modp2048\nesp=aes_ccm_c-128-null;modp2048\npfs=yes",
         "3DES_CBC/HMAC_SHA1_96", "AES_CCM_16-128", pfs_rekey=True),
    # ESP with NULL encryption (RFC 2410) and HMAC-SHA1-96 (01-esp-algo-responder's
    # esp=null-sha1; its null_auth_aes_gmac is beyond kernel-libipsec: "unsupported
    # AEAD algorithm NULL_AES_GMAC")
    Algs("esp-null-sha1", "interop-ikev2-strongswan-01-esp-algo-responder", "initiator",
         "aes128-sha1-modp2048", "null-sha1",
         "ike=aes128-sha1;modp2048\nesp=null-sha1",
         "AES_CBC-128/HMAC_SHA1_96", "NULL/HMAC_SHA1_96"),
]


@pytest.mark.parametrize("algs", ALGS, ids=[a.name for a in ALGS])
def test_algorithms(lab: Lab, cell: Callable[..., None], monkeypatch: pytest.MonkeyPatch,
                    algs: Algs) -> None:
    """The algorithm settings of the dirs in ``algs.origin``: negotiated as configured,
    and the ESP-in-UDP tunnel carries pings both ways."""
    cell(peer=PEER, case="algorithms", role=algs.role, proposal=algs.name)
    us, them = _start(lab, monkeypatch,
                      _swanctl(algs.ss_ike, [_child("net", esp=algs.ss_esp)]),
                      _conn(extra=algs.ours), plugins=algs.plugins)
    _bring_up(us, them, algs.role)
    _wait_up(lab, us, them)
    ike = _ike_algs(them)
    for want in algs.want_ike.split("/"):
        assert want in ike, ike
    child = them.installed_child()
    assert child is not None and child.mode == "TUNNEL-in-UDP", child
    assert child.algs.startswith(algs.want_esp.split("/")[0]), child.algs
    for want in algs.want_esp.split("/"):
        assert want in child.algs, child.algs
    if algs.pfs_rekey:  # RFC 7296 §1.3.3: the rekey carries KE of the ESP proposal's group
        before = child.spi_in
        us.rekey_child()

        def rekeyed() -> bool:
            c = them.installed_child()
            return c is not None and c.spi_in != before

        lab.wait_for(rekeyed, 20, "Child SA rekeyed by us")
        child = them.installed_child()
        assert child is not None, "no Child SA after the rekey"
        assert "MODP_2048" in child.algs, child.algs
        _ping(lab)
    cell(note=f"IKE {ike}; ESP {child.algs}")


# ------------------------------------------------------------ ESN (30-esn)
def test_esn_selected_libipsec_cannot_install(lab: Lab, cell: Callable[..., None],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-30-esn (+ 06-aes192 for IKE): strongSwan proposes
    ESP with ESN only; our ``esn=yes`` conn selects EXT_SEQ (RFC 7296 §3.3.2, RFC 4303
    §2.2.1).  strongSwan 5.9.8's kernel-libipsec has no ESN ("IPsec SA: ESN not
    supported"), so strongSwan deletes the Child SA it cannot install; we answer that
    Delete and keep the AES-192 IKE SA, with no Child SA left (RFC 7296 §1.4.1)."""
    cell(peer=PEER, case="esn", role="responder", proposal="aes192-sha1 / aes128-sha1-esn")
    ss = _swanctl("aes192-sha1-modp2048", [_child("net", esp="aes128-sha1-esn")])
    us, them = _start(lab, monkeypatch, ss, _conn(
        extra="ike=aes192-sha1;modp2048\nesp=aes128-sha1\nesn=yes"))
    r = them.initiate(check=False)
    assert r.returncode != 0, r.stdout[-2000:]
    text = _log(them.log)
    assert "selected proposal: ESP:AES_CBC_128/HMAC_SHA1_96/EXT_SEQ" in text, text[-3000:]
    assert "IPsec SA: ESN not supported" in text, text[-3000:]
    assert "parsed INFORMATIONAL response 2 [ D ]" in text, text[-3000:]
    assert "AES_CBC-192/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048" in _ike_algs(them)
    lab.wait_for(lambda: us.ike_established() and not us.child_spis(), 10,
                 "our IKE SA kept, the ESN Child SA deleted")
    cell(note="EXT_SEQ selected; kernel-libipsec has no ESN, strongSwan deleted the Child SA")


# ---------------------------------------------- transport vs tunnel (21-*)
def test_transport_request_answered_in_tunnel_mode_is_refused(
        lab: Lab, cell: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-21-transport-02: we (initiator) want transport mode,
    strongSwan's conn is tunnel-only and answers without USE_TRANSPORT_MODE.  As in
    Libreswan ("policy dictates Transport Mode, but peer requested Tunnel Mode"), the
    Child SA is refused, the IKE SA stays, and strongSwan's Child SA is deleted."""
    cell(peer=PEER, case="transport-vs-tunnel", role="initiator", proposal="21-transport-02")
    ss = _swanctl("aes128-sha1-modp2048",
                  [_child("net", local_ts="dynamic", remote_ts="dynamic",
                          esp="aes128-sha1-modp2048", extra="mode = tunnel")])
    us, them = _start(lab, monkeypatch, ss, _conn(
        subnets=None, extra="type=transport\nike=aes128-sha1;modp2048\nesp=aes128-sha1"),
        charon_extra=PEER_TS)
    _host_to_host(lab)
    out = us.initiate()
    lab.wait_for(us.ike_established, 20, "our IKE SA")
    assert not us.child_established(), us.showstates() + out

    def ss_state() -> bool:
        sas = them.list_sas()
        return len(sas) == 1 and sas[0].state == "ESTABLISHED" and not sas[0].children

    lab.wait_for(ss_state, 15, "strongSwan: IKE SA established, its Child SA deleted")
    text = _log(them.log)
    assert "parsed IKE_AUTH request 1 [ IDi IDr AUTH N(USE_TRANSP) SA TSi TSr ]" in text
    assert "generating IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]" in text, text[-3000:]
    assert "received DELETE for ESP CHILD_SA" in text, text[-3000:]
    cell(note="our Child SA refused (peer gave tunnel mode); IKE SA kept on both ends")


def test_transport_request_to_tunnel_responder_gets_tunnel(
        lab: Lab, cell: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-21-transport-03: strongSwan (initiator) asks for
    transport mode (USE_TRANSPORT_MODE) host to host, our conn is tunnel: we accept the
    Child SA and answer without the notify (RFC 7296 §1.3.1), so it is a tunnel-mode
    SA, and strongSwan goes on with tunnel mode.  (kernel-libipsec then cannot install
    a host-to-host policy that covers its IKE peer, "unable to install IPsec policies
    (SPD)", and deletes the Child SA: we answer the Delete and keep the IKE SA.)"""
    cell(peer=PEER, case="transport-vs-tunnel", role="responder", proposal="21-transport-03")
    ss = _swanctl("aes128-sha1-modp2048",
                  [_child("net", local_ts="dynamic", remote_ts="dynamic",
                          esp="aes128-sha1-modp2048", extra="mode = transport")])
    us, them = _start(lab, monkeypatch, ss, _conn(
        subnets=None, extra="ike=aes128-sha1;modp2048\nesp=aes128-sha1"), charon_extra=PEER_TS)
    _host_to_host(lab)
    _bring_up(us, them, "responder")
    lab.wait_for(lambda: them.established() is not None and us.child_established(), 20,
                 "IKE and Child SA on both ends")
    text = _log(them.log)
    assert re.search(r"IKE_AUTH request 1 \[[^]]*N\(USE_TRANSP\)", text), text[-3000:]
    assert "parsed IKE_AUTH response 1 [ IDr AUTH SA TSi TSr ]" in text, text[-3000:]
    child = them.installed_child()
    assert child is not None and child.mode == "TUNNEL-in-UDP", child
    cell(note="strongSwan asked for transport, both ends installed a tunnel")


def test_tunnel_request_to_transport_responder_is_refused(
        lab: Lab, cell: Callable[..., None], monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-21-transport-04: strongSwan (initiator) asks for tunnel
    mode, our conn is transport-only: we answer the IKE_AUTH with NO_PROPOSAL_CHOSEN
    for the Child SA (RFC 7296 §1.3.1 has no tunnel fallback for a responder that
    requires transport), and the IKE SA stays up on both ends."""
    cell(peer=PEER, case="transport-vs-tunnel", role="responder", proposal="21-transport-04")
    ss = _swanctl("aes128-sha1-modp2048",
                  [_child("net", local_ts="dynamic", remote_ts="dynamic",
                          esp="aes128-sha1-modp2048", extra="mode = tunnel")])
    us, them = _start(lab, monkeypatch, ss, _conn(
        subnets=None, extra="type=transport\nike=aes128-sha1;modp2048\nesp=aes128-sha1"),
        charon_extra=PEER_TS)
    _host_to_host(lab)
    them.initiate(check=False)
    lab.wait_for(lambda: "no CHILD_SA built" in _log(them.log), 20,
                 "strongSwan: NO_PROPOSAL_CHOSEN for the Child SA")
    assert "received NO_PROPOSAL_CHOSEN notify" in _log(them.log)
    sas = them.list_sas()
    assert len(sas) == 1 and sas[0].state == "ESTABLISHED" and not sas[0].children, sas
    assert us.ike_established() and not us.child_established(), us.showstates()
    cell(note="NO_PROPOSAL_CHOSEN in IKE_AUTH; IKE SA kept on both ends")


# ------------------------------------- second Child SA (15-child-sa-responder)
def test_second_child_sa_shares_the_ike_sa(lab: Lab, cell: Callable[..., None],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-15-child-sa-responder: two of our conns to the same
    peer; the second one's Child SA comes by CREATE_CHILD_SA over the first one's IKE
    SA (RFC 7296 §1.3.1): one IKE SA, two Child SAs, each subnet pair reachable."""
    cell(peer=PEER, case="second-child-sa", role="initiator", proposal="defaults")
    hi = "203.0.113.128/25"
    lo = "203.0.113.0/25"
    lab.run(lab.east, ["ip", "addr", "add", f"{EAST_INNER2}/32", "dev", "lo"])
    ss = _swanctl(peers._SS_DEFAULT_IKE, [_child("net", local_ts=lo), _child("net2", local_ts=hi)])
    conns = _conn("west-east", subnets=(WEST_SUBNET, lo)) + _conn("west-east2",
                                                                  subnets=(WEST_SUBNET, hi))
    us, them = _start(lab, monkeypatch, ss, conns)
    _bring_up(us, them, "initiator", "west-east")
    _wait_up(lab, us, them)
    out = us.initiate("west-east2")

    def two_children() -> bool:
        sas = them.list_sas()
        return (len(sas) == 1 and sum(c.state == "INSTALLED" for c in sas[0].children) == 2
                and _east_route(lab))

    lab.wait_for(two_children, 20, f"a second Child SA on strongSwan's one IKE SA ({out})")
    ours = us.sas()
    assert len(ours) == 1 and len(ours[0].get("children", [])) == 2, ours
    _ping(lab, EAST_INNER)
    _ping(lab, EAST_INNER2)
    # interop-ikev2-strongswan-14-delete-sa-shared: strongSwan deletes one of the two
    # Child SAs; the other one and the IKE SA stay (RFC 7296 §1.4.1)
    spis = us.child_spis()
    them.swanctl("--terminate", "--child", "net2", "--timeout", "10")
    lab.wait_for(lambda: len(us.child_spis()) == 1, 15, "the second Child SA deleted on our side")
    assert us.child_spis() < spis and len(us.ike_spis()) == 1, us.showstates()
    assert not us.routes_to(hi), us.routes_to(hi)
    _ping(lab, EAST_INNER)
    cell(note="one IKE SA, two Child SAs (second by CREATE_CHILD_SA), both pass traffic; "
              "strongSwan's Delete of one leaves the other")


# ------------------------------------------------------ reauth (28-reauth)
def test_reauthentication_by_strongswan(lab: Lab, cell: Callable[..., None],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """interop-ikev2-strongswan-28-reauth: strongSwan (initiator) reauthenticates
    (``swanctl --rekey --reauth``: a new IKE SA from IKE_SA_INIT, the old one deleted,
    RFC 7296 §2.8.3); we end with exactly one IKE and one Child SA, the new ones, and
    the tunnel carries traffic."""
    cell(peer=PEER, case="reauth-by-strongswan", role="responder", proposal="defaults")
    us, them = _start(lab, monkeypatch, _swanctl(peers._SS_DEFAULT_IKE, [_child("net")]),
                      _conn())
    _bring_up(us, them, "responder")
    _wait_up(lab, us, them)
    before = them.established()
    assert before is not None
    ours_before = us.ike_spis()
    them.swanctl("--rekey", "--ike", "east-west", "--reauth")

    def reauthed() -> bool:
        ike = them.established()
        return (ike is not None and ike.uid != before.uid and len(them.list_sas()) == 1
                and _east_route(lab))

    lab.wait_for(reauthed, 30, "strongSwan's new IKE SA (reauth), the old one gone")
    lab.wait_for(lambda: len(us.ike_spis()) == 1 and len(us.child_spis()) == 1
                 and not us.ike_spis() & ours_before, 20,
                 "our side: only the new IKE SA and its Child SA")
    _ping(lab)
    cell(note="reauth: new IKE SA by IKE_SA_INIT, old deleted, traffic flows")
