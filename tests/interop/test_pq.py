"""Hybrid (post-quantum) IKE SAs against strongSwan 6.0.1 (issue 17): RFC 9242
IKE_INTERMEDIATE carrying RFC 9370 additional key exchanges, with IKE
fragmentation (RFC 7383) over a path MTU of 1,280 bytes, and traffic through
the tunnel.  strongSwan 6.0.1 runs from the Debian 13 chroot (``trixie.py``);
ML-KEM needs its ml plugin.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, Lab, require
from peers import Proposal, Pypluto, StrongSwan, east_strongswan, west_pypluto
from trixie import ML_PLUGIN, STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
PEERS = [p for p in STRONGSWAN_PEERS if p.chroot]  # 6.0.1: the one with ML-KEM
MTU = 1280

# (proposal, strongSwan's IKE algorithm line must contain these)
HYBRID: list[tuple[Proposal, tuple[str, ...]]] = [
    (Proposal("x25519+addke1=mlkem768", "aes_gcm256-sha2_384-dh31;addke1=mlkem768",
              "aes_gcm256", "aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16"),
     ("CURVE_25519", "KE1_ML_KEM_768")),
    (Proposal("ecp384+addke1=mlkem1024", "aes_gcm256-sha2_384-dh20;addke1=mlkem1024",
              "aes_gcm256", "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024", "aes256gcm16"),
     ("ECP_384", "KE1_ML_KEM_1024")),
    (Proposal("x25519+addke1=mlkem768+addke2=mlkem1024",
              "aes_gcm256-sha2_384-dh31;addke1=mlkem768;addke2=ml_kem_1024", "aes_gcm256",
              "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024", "aes256gcm16"),
     ("CURVE_25519", "KE1_ML_KEM_768", "KE2_ML_KEM_1024")),
    (Proposal("ss-spelling x25519-ke1_mlkem768-ke2_ecp384",
              "aes_gcm256-sha2_384-x25519-ke1_mlkem768-ke2_ecp384", "aes_gcm256",
              "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_ecp384", "aes256gcm16"),
     ("CURVE_25519", "KE1_ML_KEM_768", "KE2_ECP_384")),
]


def _set_mtu(lab: Lab, mtu: int) -> None:
    """The path MTU between the peers: both ends of the veth pair (tests/lab.py)."""
    lab.run(lab.west, ["ip", "link", "set", "dev", "west", "mtu", str(mtu)])
    lab.run(lab.east, ["ip", "link", "set", "dev", "east", "mtu", str(mtu)])


def _ike_algs(them: StrongSwan) -> str:
    text = them.swanctl("--list-sas", check=False).stdout
    m = re.search(r"^\s+((?:AES|CHACHA|3DES|CAMELLIA)\S*/\S+)\s*$", text, re.M)
    return m.group(1) if m else text[-400:]


def _up(lab: Lab, peer: PeerSpec, proposal: Proposal, role: str) -> tuple[Pypluto, StrongSwan]:
    require(peer.available(), peer.install_hint)
    require(ML_PLUGIN.exists(), f"strongSwan's ml plugin {ML_PLUGIN} (install.sh builds it)")
    _set_mtu(lab, MTU)
    them = east_strongswan(lab, proposal, make=peer.strongswan)
    us = west_pypluto(lab, proposal, extra="fragmentation=yes")
    if role == "initiator":
        out = us.initiate()
        assert us.child_established(), f"whack --initiate: {out}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established()
                 and us.routes_to(EAST_SUBNET), 20, "IKE and Child SA on both ends")
    return us, them


def _ping(lab: Lab) -> None:
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 10, "a first echo through the tunnel")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3), "west -> east"
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3), "east -> west"


def _fragments(them: StrongSwan) -> int:
    text = them.log.read_text(errors="replace") if them.log.exists() else ""
    return len(re.findall(r"received fragment #\d+ of \d+|splitting IKE message", text))


@pytest.mark.parametrize("role", ["initiator", "responder"])
@pytest.mark.parametrize("proposal,expect", HYBRID, ids=[p.name for p, _ in HYBRID])
@pytest.mark.parametrize("peer", PEERS, ids=[p.label.replace(" ", "") for p in PEERS])
def test_hybrid_mlkem_traffic(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                              proposal: Proposal, expect: tuple[str, ...], role: str) -> None:
    """IKE_SA_INIT's (EC)DH plus ML-KEM (and more) in IKE_INTERMEDIATE, then ping."""
    cell(peer=peer.label, case="hybrid-mtu1280", role=role, proposal=proposal.name)
    us, them = _up(lab, peer, proposal, role)
    ike = _ike_algs(them)
    for e in expect:
        assert e in ike, ike
    _ping(lab)
    frags = _fragments(them)
    if "1024" in proposal.name:  # a 1,568-byte key or ciphertext cannot go whole
        assert frags, "no RFC 7383 fragments in strongSwan's log"
    cell(note=f"IKE {ike}; path MTU {MTU}; {frags} fragment log lines at strongSwan")


# Child rekeys carry PFS (pypluto's pfs=yes default: the IKE SA's group), so
# strongSwan's ESP proposal names it
REKEY = [
    Proposal("x25519+addke1=mlkem768+addke2=mlkem1024",
             "aes_gcm256-sha2_384-dh31;addke1=mlkem768;addke2=ml_kem_1024", "aes_gcm256",
             "aes256gcm16-prfsha384-x25519-ke1_mlkem768-ke2_mlkem1024", "aes256gcm16-x25519",
             pfs=True),
    Proposal("x25519+addke1=mlkem768", "aes_gcm256-sha2_384-dh31;addke1=mlkem768",
             "aes_gcm256", "aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16-x25519",
             pfs=True),
]


@pytest.mark.parametrize("by", ["pypluto", "strongswan"])
@pytest.mark.parametrize("proposal", REKEY, ids=[p.name for p in REKEY])
@pytest.mark.parametrize("peer", PEERS, ids=[p.label.replace(" ", "") for p in PEERS])
def test_ike_rekey_with_followup_ke(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                    proposal: Proposal, by: str) -> None:
    """IKE SA rekey whose CREATE_CHILD_SA is followed by IKE_FOLLOWUP_KE (RFC 9370 §2.2.3)."""
    cell(peer=peer.label, case=f"ike-rekey-addke-by-{by}", role="initiator",
         proposal=proposal.name)
    us, them = _up(lab, peer, proposal, "initiator")
    before = them.established()
    assert before is not None
    if by == "pypluto":
        us.rekey_ike()
    else:
        them.rekey(ike="east-west")

    def rekeyed() -> bool:
        ike = them.established()
        return ike is not None and ike.uid != before.uid and len(them.list_sas()) == 1

    lab.wait_for(rekeyed, 20, f"IKE SA rekeyed by {by}, old one deleted")
    lab.wait_for(lambda: len(us.ike_spis()) == 1, 20, "the old IKE SA deleted on our side")
    ike = _ike_algs(them)
    assert "KE1_ML_KEM_768" in ike, ike
    log = them.log.read_text(errors="replace")
    assert "IKE_FOLLOWUP_KE" in log, log[-2000:]
    _ping(lab)
    # the new IKE SA carries a Child rekey
    spis = {c.spi_in for s in them.list_sas() for c in s.children}
    us.rekey_child()
    lab.wait_for(lambda: {c.spi_in for s in them.list_sas() for c in s.children
                          if c.state == "INSTALLED"} - spis != set(), 20, "Child SA rekeyed")
    _ping(lab)
    cell(note=f"IKE {ike} after the rekey by {by}")


CHILD_PFS = [
    Proposal("esp-pfs x25519+addke1=mlkem768",
             "aes_gcm256-sha2_384-dh31;addke1=mlkem768", "aes_gcm256-dh31;addke1=mlkem768",
             "aes256gcm16-prfsha384-x25519-ke1_mlkem768", "aes256gcm16-x25519-ke1_mlkem768",
             pfs=True),
    Proposal("esp-pfs ecp384+addke1=mlkem1024+addke2=x25519",
             "aes_gcm256-sha2_384-dh20;addke1=mlkem1024",
             "aes_gcm256-dh20;addke1=mlkem1024;addke2=dh31",
             "aes256gcm16-prfsha384-ecp384-ke1_mlkem1024",
             "aes256gcm16-ecp384-ke1_mlkem1024-ke2_x25519", pfs=True),
]


@pytest.mark.parametrize("by", ["pypluto", "strongswan"])
@pytest.mark.parametrize("proposal", CHILD_PFS, ids=[p.name for p in CHILD_PFS])
@pytest.mark.parametrize("peer", PEERS, ids=[p.label.replace(" ", "") for p in PEERS])
def test_child_rekey_pfs_with_followup_ke(lab: Lab, cell: Callable[..., None], peer: PeerSpec,
                                          proposal: Proposal, by: str) -> None:
    """Child SA rekey with PFS and additional key exchanges (RFC 9370 §2.2.3)."""
    cell(peer=peer.label, case=f"child-rekey-pfs-addke-by-{by}", role="initiator",
         proposal=proposal.name)
    us, them = _up(lab, peer, proposal, "initiator")
    spis = {c.spi_in for s in them.list_sas() for c in s.children}
    if by == "pypluto":
        us.rekey_child()
    else:
        them.rekey(child="net")

    def replaced() -> bool:
        now = {c.spi_in for s in them.list_sas() for c in s.children if c.state == "INSTALLED"}
        return bool(now) and not now & spis

    lab.wait_for(replaced, 20, f"Child SA rekeyed with PFS+ADDKE by {by}")
    child = them.installed_child()
    assert child is not None
    assert "KE1_ML_KEM" in child.algs, child.algs
    lab.wait_for(lambda: len(us.child_spis()) == 1, 20, "the old Child SA deleted on our side")
    _ping(lab)
    cell(note=f"ESP {child.algs} after the rekey by {by}")
