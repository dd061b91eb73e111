"""PPK (RFC 8784) against strongSwan (``ppk_id``, ``ppk_required``) and Libreswan.

strongSwan (5.9.8 on the host, 6.0.1 from the Debian 13 chroot): a tunnel with
traffic in both roles and both sides insisting on the PPK (``swanctl --list-sas``
shows ``/PPK``), a PPK mismatch, ``ppk=insist`` against a peer without any PPK
(fails, with one clear line in our log), and ``ppk=permit`` falling back to the
normal keys with NO_PPK_AUTH when the peer does not know our PPK_ID.
Libreswan 4.10 and 5.2: the IKE SA (their Child SA cannot be installed on this
kernel, see test_libreswan.py) with the PPK in both roles, and a PPK mismatch.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, Lab, require
from peers import (
    EAST_ID,
    EAST_OUTER,
    IPSEC_SECRETS,
    PROPOSALS,
    WEST_ID,
    WEST_OUTER,
    WEST_SUBNET,
    Libreswan,
    Pypluto,
    StrongSwan,
    have_strongswan,
    ipsec_conf,
    swanctl_conf,
)
from trixie import LIBRESWAN_PEERS, STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(150)]
ROLES = ["initiator", "responder"]
DEFAULTS = PROPOSALS[0]
PPK_ID = "pypluto-lab-ppk"
PPK = "postquantum-preshared-key-for-the-interop-lab-0123456789"  # 56 bytes
OTHER = "a-different-postquantum-preshared-key-0123456789abcdef"
SS_IDS = [p.label.replace(" ", "") for p in STRONGSWAN_PEERS]
LS_IDS = [p.label.replace(" ", "") for p in LIBRESWAN_PEERS]


def _log(us: Pypluto) -> str:
    return us.log.read_text(errors="replace")


def _pypluto(lab: Lab, ppk: str, ppk_value: str | None, ppk_id: str = PPK_ID,
             ids: bool = True) -> Pypluto:
    extra = f"ppk={ppk}" + (f"\nppk-ids={ppk_id}" if ids else "")
    secrets = IPSEC_SECRETS
    if ppk_value is not None:
        secrets += f'@{WEST_ID} @{EAST_ID} : PPKS "{ppk_id}" "{ppk_value}"\n'
    return Pypluto(lab, lab.west, "pypluto-west", "--use-userspace").start(
        ipsec_conf(proposal=DEFAULTS, extra=extra), secrets=secrets)


# ------------------------------------------------------------------ strongSwan
def _strongswan(lab: Lab, peer: PeerSpec, *, ppk_id: str | None, required: bool,
                secret: tuple[str, str] | None) -> StrongSwan:
    """strongSwan in east with ``ppk_id``/``ppk_required`` and a ``secrets.ppk`` entry."""
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)
    conf = swanctl_conf(conn="east-west", local=EAST_OUTER, remote=WEST_OUTER,
                        local_id=EAST_ID, remote_id=WEST_ID, local_ts=EAST_SUBNET,
                        remote_ts=WEST_SUBNET, proposal=DEFAULTS)
    opts = ""
    if ppk_id is not None:
        opts += f"\n        ppk_id = {ppk_id}"
    opts += f"\n        ppk_required = {'yes' if required else 'no'}"
    conf = conf.replace("        version = 2", "        version = 2" + opts, 1)
    if secret is not None:
        conf = conf.replace("secrets {", f'secrets {{\n    ppk-lab {{\n        id = {secret[0]}'
                            f'\n        secret = "{secret[1]}"\n    }}', 1)
    east = peer.strongswan(lab, lab.east, "strongswan-east").start()
    east.load(conf)
    return east


def _ss_text(them: StrongSwan) -> str:
    return them.swanctl("--list-sas", check=False).stdout


def _east_route(lab: Lab) -> bool:
    r = lab.run(lab.east, ["ip", "route", "show", "table", "220"], check=False)
    return WEST_SUBNET in r.stdout


def _bring_up(lab: Lab, us: Pypluto, them: StrongSwan, role: str) -> None:
    if role == "initiator":
        out = us.initiate()
        assert us.child_established(), f"whack --initiate: {out}\n{_log(us)[-3000:]}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established()
                 and us.routes_to(EAST_SUBNET) and _east_route(lab), 20,
                 "IKE and Child SA, and the routes into the tunnel, on both ends")


def _ping_both(lab: Lab) -> None:
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 10, "a first echo through the tunnel")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3), "west -> east"
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3), "east -> west"


def _fail_attempt(lab: Lab, us: Pypluto, them: StrongSwan | Libreswan, role: str) -> None:
    """One attempt that must fail: we initiate (whack returns) or the peer does."""
    if role == "initiator":
        us.initiate(timeout=30)
    elif isinstance(them, StrongSwan):
        r = them.initiate(check=False, timeout=10)
        assert r.returncode != 0, r.stdout[-2000:]
    else:
        them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=SS_IDS)
def test_ppk_traffic_strongswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                role: str) -> None:
    """Both insist: the IKE SA keys are mixed with the PPK; ping both ways."""
    cell(peer=peer.label, case="ppk", role=role, proposal=DEFAULTS.name)
    them = _strongswan(lab, peer, ppk_id=PPK_ID, required=True, secret=(PPK_ID, PPK))
    us = _pypluto(lab, "insist", PPK)
    _bring_up(lab, us, them, role)
    text = _ss_text(them)
    assert "/PPK" in text, text
    assert f"IKE SA keys mixed with PPK '{PPK_ID}'" in _log(us)
    _ping_both(lab)
    ins, outs = us.traffic()
    assert ins > 0 and outs > 0, us.trafficstatus()
    cell(note=f"ppk=insist / ppk_required: IKE SA {text.split('/PPK')[0].split()[-1]}/PPK")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=SS_IDS)
def test_ppk_mismatch_strongswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                 role: str) -> None:
    """Same PPK_ID, different PPKs: AUTHENTICATION_FAILED, no SA on either side."""
    cell(peer=peer.label, case="ppk-mismatch", role=role, proposal=DEFAULTS.name)
    them = _strongswan(lab, peer, ppk_id=PPK_ID, required=True, secret=(PPK_ID, OTHER))
    us = _pypluto(lab, "insist", PPK)
    _fail_attempt(lab, us, them, role)
    if role == "initiator":
        lab.wait_for(lambda: "AUTHENTICATION_FAILED" in _log(us), 20, "our failure line")
    else:
        lab.wait_for(lambda: "(PPK mismatch?); answering AUTHENTICATION_FAILED" in _log(us),
                     20, "our rejection line")
    assert not us.ike_established() and them.established() is None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=SS_IDS)
def test_ppk_insist_vs_strongswan_without_ppk(lab: Lab, cell: Callable[..., None],
                                              peer: PeerSpec, role: str) -> None:
    """ppk=insist against a peer with no PPK at all fails with one clear line."""
    cell(peer=peer.label, case="ppk-insist-vs-none", role=role, proposal=DEFAULTS.name)
    them = _strongswan(lab, peer, ppk_id=None, required=False, secret=None)
    us = _pypluto(lab, "insist", PPK)
    _fail_attempt(lab, us, them, role)
    want = ("connection has ppk=insist but the peer does not support PPK" if role ==
            "initiator" else "rejected: connection has ppk=insist but the peer did not "
            "propose a PPK (no USE_PPK); answering AUTHENTICATION_FAILED")
    lab.wait_for(lambda: want in _log(us), 20, f"our log line: {want}")
    assert sum(want in ln for ln in _log(us).splitlines()) == 1
    assert not us.ike_established() and them.established() is None


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=SS_IDS)
def test_ppk_permit_falls_back_strongswan(lab: Lab, cell: Callable[..., None],
                                          peer: PeerSpec, role: str) -> None:
    """ppk=permit, the peer lacks the initiator's PPK_ID: NO_PPK_AUTH, normal keys."""
    cell(peer=peer.label, case="ppk-fallback", role=role, proposal=DEFAULTS.name)
    if role == "initiator":  # strongSwan holds a PPK, but not ours
        them = _strongswan(lab, peer, ppk_id=None, required=False,
                           secret=("some-other-ppk", OTHER))
        us = _pypluto(lab, "permit", PPK)
        want = f"peer has no PPK '{PPK_ID}'; continuing without PPK (NO_PPK_AUTH)"
    else:  # strongSwan proposes a PPK_ID that we do not have
        them = _strongswan(lab, peer, ppk_id="some-other-ppk", required=False,
                           secret=("some-other-ppk", OTHER))
        us = _pypluto(lab, "permit", PPK, ids=False)
        want = ("no PPK for PPK_ID 'some-other-ppk' in ipsec.secrets; continuing without "
                "PPK (NO_PPK_AUTH)")
    _bring_up(lab, us, them, role)
    assert want in _log(us), _log(us)[-3000:]
    assert "/PPK" not in _ss_text(them)
    _ping_both(lab)


# ------------------------------------------------------------------ Libreswan
def _libreswan(lab: Lab, peer: PeerSpec, ppk: str, value: str) -> Libreswan:
    require(peer.available(), peer.install_hint)
    # ppk-ids= is a 5.x key (4.10: syntax error); without it Libreswan uses the
    # PPKS record that matches the conn's IDs
    extra = f"ppk={ppk}" + (f"\nppk-ids={PPK_ID}" if peer.modern else "")
    secrets = IPSEC_SECRETS + f'@{WEST_ID} @{EAST_ID} : PPKS "{PPK_ID}" "{value}"\n'
    return peer.libreswan(lab, lab.east, "libreswan-east").start(
        ipsec_conf(proposal=DEFAULTS, extra=extra), secrets=secrets)


def _ls_log(them: Libreswan) -> str:
    return them.log.read_text(errors="replace")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=LS_IDS)
def test_ppk_ike_sa_libreswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                              role: str) -> None:
    """Both insist: the IKE SA comes up with the PPK on both sides."""
    cell(peer=peer.label, case="ppk-ike-sa", role=role, proposal=DEFAULTS.name)
    them = _libreswan(lab, peer, "insist", PPK)
    us = _pypluto(lab, "insist", PPK)
    if role == "initiator":
        out = us.initiate()
        lab.wait_for(us.ike_established, 20, f"our IKE SA (whack said: {out[-300:]})")
    else:
        them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
        lab.wait_for(us.ike_established, 20, "our IKE SA")
    side = "initiator" if role == "responder" else "responder"
    lab.wait_for(lambda: f"PPK AUTH calculated as {side}" in _ls_log(them), 20,
                 f"Libreswan: PPK AUTH calculated as {side}")
    assert f"IKE SA keys mixed with PPK '{PPK_ID}'" in _log(us)
    cell(note="IKE SA only (no kernel ESP for Libreswan); both ppk=insist")
    them.stop()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=LS_IDS)
def test_ppk_mismatch_libreswan(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                role: str) -> None:
    cell(peer=peer.label, case="ppk-mismatch", role=role, proposal=DEFAULTS.name)
    them = _libreswan(lab, peer, "insist", OTHER)
    us = _pypluto(lab, "insist", PPK)
    _fail_attempt(lab, us, them, role)
    if role == "initiator":
        lab.wait_for(lambda: "AUTHENTICATION_FAILED" in _log(us), 30, "our failure line")
    else:
        lab.wait_for(lambda: "(PPK mismatch?); answering AUTHENTICATION_FAILED" in _log(us),
                     30, "our rejection line")
    assert not us.ike_established()
    them.stop()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=LS_IDS)
def test_ppk_permit_falls_back_libreswan(lab: Lab, cell: Callable[..., None],
                                         peer: PeerSpec, role: str) -> None:
    """The initiator's PPK_ID is unknown to the responder: NO_PPK_AUTH, normal keys."""
    cell(peer=peer.label, case="ppk-fallback", role=role, proposal=DEFAULTS.name)
    require(peer.available(), peer.install_hint)
    # Libreswan holds a PPK under another PPK_ID; pypluto holds ours only
    secrets = IPSEC_SECRETS + f'@{WEST_ID} @{EAST_ID} : PPKS "libreswan-ppk" "{OTHER}"\n'
    them = peer.libreswan(lab, lab.east, "libreswan-east").start(
        ipsec_conf(proposal=DEFAULTS, extra="ppk=propose"), secrets=secrets)
    us = _pypluto(lab, "permit", PPK, ids=False)
    if role == "initiator":
        out = us.initiate()
        lab.wait_for(us.ike_established, 20, f"our IKE SA (whack said: {out[-300:]})")
        want = f"peer has no PPK '{PPK_ID}'; continuing without PPK (NO_PPK_AUTH)"
    else:
        them.whack("--name", "west-east", "--initiate", "--asynchronous", timeout=20)
        lab.wait_for(us.ike_established, 20, "our IKE SA")
        want = ("no PPK for PPK_ID 'libreswan-ppk' in ipsec.secrets; continuing without PPK "
                "(NO_PPK_AUTH)")
    assert want in _log(us), _log(us)[-3000:]
    assert "IKE SA keys mixed with PPK" not in _log(us)
    cell(note="IKE SA only (no kernel ESP for Libreswan); established without the PPK")
    them.stop()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", LIBRESWAN_PEERS, ids=LS_IDS)
def test_ppk_insist_vs_libreswan_without_ppk(lab: Lab, cell: Callable[..., None],
                                             peer: PeerSpec, role: str) -> None:
    """ppk=insist against Libreswan with ppk=no fails with a clear line.

    Libreswan 4.10 answers USE_PPK whenever the initiator sent it (whatever its
    ppk=), then verifies AUTH without the PPK: AUTHENTICATION_FAILED.  5.2 answers
    no USE_PPK and we stop after IKE_SA_INIT."""
    cell(peer=peer.label, case="ppk-insist-vs-none", role=role, proposal=DEFAULTS.name)
    require(peer.available(), peer.install_hint)
    them = peer.libreswan(lab, lab.east, "libreswan-east").start(
        ipsec_conf(proposal=DEFAULTS, extra="ppk=no"))
    us = _pypluto(lab, "insist", PPK)
    _fail_attempt(lab, us, them, role)
    if role == "responder":
        want = ("rejected: connection has ppk=insist but the peer did not propose a PPK (no "
                "USE_PPK); answering AUTHENTICATION_FAILED")
    elif peer.modern:
        want = "connection has ppk=insist but the peer does not support PPK"
    else:
        want = "AUTHENTICATION_FAILED"
    lab.wait_for(lambda: want in _log(us), 30, f"our log line: {want}")
    assert not us.ike_established()
    them.stop()


@pytest.mark.parametrize("peer", STRONGSWAN_PEERS[:1], ids=SS_IDS[:1])
def test_ppk_bad_input_leaves_other_conns_alone(lab: Lab, cell: Callable[..., None],
                                               peer: PeerSpec) -> None:
    """A bad ppk-ids= refuses that conn (file:line), a missing PPK fails that conn with
    one clear line; pluto keeps running and the good conn carries traffic."""
    cell(peer=peer.label, case="ppk-bad-input", role="initiator", proposal=DEFAULTS.name)
    them = _strongswan(lab, peer, ppk_id=PPK_ID, required=True, secret=(PPK_ID, PPK))
    conf = ipsec_conf(proposal=DEFAULTS, extra=f"ppk=insist\nppk-ids={PPK_ID}")
    for name, extra in (("bad-ids", 'ppk-ids=","'), ("no-ppk", "ppk-ids=not-in-secrets")):
        conf += (f"\nconn {name}\n\tauthby=secret\n\tleft={WEST_OUTER}\n\tleftid=@{WEST_ID}\n"
                 f"\tleftsubnet=198.51.100.0/24\n\tright={EAST_OUTER}\n\trightid=@{EAST_ID}\n"
                 f"\trightsubnet={EAST_SUBNET}\n\tppk=insist\n\t{extra}\n\tauto=add\n")
    secrets = IPSEC_SECRETS + f'@{WEST_ID} @{EAST_ID} : PPKS "{PPK_ID}" "{PPK}"\n'
    us = Pypluto(lab, lab.west, "pypluto-west", "--use-userspace").start(conf, secrets=secrets)
    lab.wait_for(lambda: "names no PPK_ID" in _log(us), 10, "the bad ppk-ids= line")
    bad = [ln for ln in _log(us).splitlines() if "names no PPK_ID" in ln]
    assert len(bad) == 1 and "ipsec.conf:" in bad[0], bad
    r = us.whack("--name", "bad-ids", "--initiate", timeout=20)
    assert r.returncode != 0
    us.initiate("no-ppk", timeout=30)
    want = "connection has ppk=insist but ipsec.secrets has no PPK for ppk-ids=not-in-secrets"
    lab.wait_for(lambda: want in _log(us), 20, want)
    assert sum(want in ln for ln in _log(us).splitlines()) == 1
    assert us.proc is not None and us.proc.alive()
    _bring_up(lab, us, them, "initiator")
    assert "/PPK" in _ss_text(them)
    _ping_both(lab)
