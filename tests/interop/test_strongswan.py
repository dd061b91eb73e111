"""pypluto (userspace ESP plane) against strongSwan 5.9.8 and 6.0.1 with kernel-libipsec.

strongSwan's kernel-libipsec forces ESP-in-UDP on port 4500 by faking NAT
detection, so every case here also exercises NAT-T (RFC 7296 §2.23, RFC 3948).
Cases (issue 7): 1 traffic with the proposal matrix, 2 rekey under traffic,
3 liveness (RFC 7296 §2.4), 4 delete from either side (§1.4.1); each against
every strongSwan of ``trixie.STRONGSWAN_PEERS`` (5.9.8 on the host, 6.0.1 from
the Debian 13 chroot; on a Debian 13 host only the native 6.0.1).  6.0.1 also
gets the ML-KEM proposals (issue 19) when its ml plugin is built.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import signal
import subprocess
from collections.abc import Callable

import pytest
from lab import EAST_INNER, EAST_SUBNET, WEST_INNER, WEST_SUBNET, Lab, LabError, parse_ping, require
from peers import (
    MLKEM_PROPOSALS,
    PROPOSALS,
    Proposal,
    Pypluto,
    StrongSwan,
    east_strongswan,
    have_strongswan,
    west_pypluto,
)
from trixie import ML_PLUGIN, STRONGSWAN_PEERS, PeerSpec

pytestmark = [pytest.mark.netns, pytest.mark.interop, pytest.mark.timeout(180)]
ROLES = ["initiator", "responder"]
PEER_IDS = [p.label.replace(" ", "") for p in STRONGSWAN_PEERS]
# (peer, proposal): the whole proposal set for every peer; ML-KEM only for the
# chroot's 6.0.1, which has the ml plugin install.sh builds (Debian's own has none)
TRAFFIC = [pytest.param(peer, prop, id=f"{peer.label.replace(' ', '')}-{prop.name}")
           for peer in STRONGSWAN_PEERS
           for prop in PROPOSALS + (MLKEM_PROPOSALS if peer.chroot else [])]


def _up(lab: Lab, peer: PeerSpec, proposal: Proposal, role: str, *, auto: str = "add",
        extra: str = "", dpd_delay: int = 30) -> tuple[Pypluto, StrongSwan]:
    """Start both daemons and bring the tunnel up with pypluto in ``role``."""
    if peer.chroot:
        require(peer.available(), peer.install_hint)
    else:
        require(have_strongswan() and peer.available(), peer.install_hint)
    if proposal in MLKEM_PROPOSALS:
        require(ML_PLUGIN.exists(), f"strongSwan's ml plugin {ML_PLUGIN} (install.sh builds it)")
    them = east_strongswan(lab, proposal, dpd_delay=dpd_delay, make=peer.strongswan)
    us = west_pypluto(lab, proposal, auto=auto, extra=extra)
    if role == "initiator":
        if auto != "start":
            out = us.initiate()
            assert us.child_established(), f"whack --initiate: {out}"
    else:
        r = them.initiate(check=False)
        assert r.returncode == 0, f"swanctl --initiate failed: {r.stdout[-2000:]}"
    lab.wait_for(lambda: them.established() and us.child_established()
                 and us.routes_to(EAST_SUBNET) and _east_route(lab), 20,
                 "IKE and Child SA, and the routes into the tunnel, on both ends")
    return us, them


def _east_route(lab: Lab) -> bool:
    """kernel-libipsec's route to our subnet (table 220) is installed after the SA."""
    r = lab.run(lab.east, ["ip", "route", "show", "table", "220"], check=False)
    return WEST_SUBNET in r.stdout


def _child_spis(them: StrongSwan) -> set[str]:
    return {c.spi_in for ike in them.list_sas() for c in ike.children if c.state == "INSTALLED"}


def _ping_both(lab: Lab) -> None:
    # Our side reports ESTABLISHED when its SAs are in; strongSwan may still be
    # adding its route via ipsec0 (table 220).  Wait for the first echo, then count.
    lab.wait_for(lambda: lab.ping(lab.west, EAST_INNER, count=1, timeout=1,
                                  src=WEST_INNER)[1] == 1, 10, "a first echo through the tunnel")
    assert lab.ping(lab.west, EAST_INNER, count=3, src=WEST_INNER) == (3, 3), "west -> east"
    assert lab.ping(lab.east, WEST_INNER, count=3, src=EAST_INNER) == (3, 3), "east -> west"


# ------------------------------------------------------------------ case 1
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("peer", "proposal"), TRAFFIC)
def test_traffic(lab: Lab, cell: Callable[..., None], peer: PeerSpec, proposal: Proposal,
                 role: str) -> None:
    """Ping and 1 MiB TCP each way through the tunnel, checked by SHA-256."""
    cell(peer=peer.label, case="traffic", role=role, proposal=proposal.name)
    try:
        us, them = _up(lab, peer, proposal, role)
    except (AssertionError, LabError):
        if "addke" in proposal.name:
            cell(note=_addke_evidence(lab))
        raise
    child = them.installed_child()
    assert child is not None
    cell(note=f"ESP {child.algs}")
    if proposal in MLKEM_PROPOSALS:
        ike = _ike_algs(them)
        assert "ML_KEM_768" in ike, ike
        if "addke" in proposal.name:  # RFC 9370: x25519 in IKE_SA_INIT, ML-KEM-768 after it
            assert "CURVE_25519" in ike and "KE1_ML_KEM_768" in ike, ike
        cell(note=f"IKE {ike}; ESP {child.algs}")
    assert child.mode == "TUNNEL-in-UDP", child  # kernel-libipsec: always ESP in UDP/4500
    _ping_both(lab)
    sent, got, n = lab.transfer(lab.west, lab.east, EAST_INNER, src=WEST_INNER, port=5001)
    assert (got, n) == (sent, 1 << 20), "west -> east transfer"
    sent, got, n = lab.transfer(lab.east, lab.west, WEST_INNER, src=EAST_INNER, port=5002)
    assert (got, n) == (sent, 1 << 20), "east -> west transfer"
    ins, outs = us.traffic()
    assert ins > 1 << 20 and outs > 1 << 20, us.trafficstatus()
    if proposal.pfs:
        # RFC 7296 §1.3.3: a Child SA rekey with PFS carries KE; strongSwan's
        # esp_proposals here all require the group, so a rekey without KE fails.
        for who in ("pypluto", "strongSwan"):
            before = _child_spis(them)
            if who == "pypluto":
                us.rekey_child()
            else:
                them.rekey(child="net")

            def replaced(before: set[str] = before) -> bool:
                now = _child_spis(them)
                return bool(now) and not now & before

            lab.wait_for(replaced, 20, f"Child SA rekeyed with PFS by {who}")
            child = them.installed_child()
            assert child is not None
            algs = child.algs
            assert "ECP_256" in algs, f"rekey by {who}: {algs}"
            _ping_both(lab)
        cell(note=f"ESP {algs} after PFS rekeys by both ends")


def _addke_evidence(lab: Lab) -> str:
    """What strongSwan received, when an RFC 9370 (ADDKE) case fails: the proposals line."""
    log = lab.workdir / "strongswan-east" / "charon.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    got = re.findall(r"received proposals: (\S+)", text)
    if got and not any("KE1_" in g for g in got):
        return (f"pypluto proposed no ADDKE1 transform (strongSwan received {got[0]}): "
                "addke1= is parsed but not sent (no RFC 9370 in pypluto's IKE engine)")
    ours = lab.workdir / "pypluto-west" / "pluto.log"
    if "answering NO_PROPOSAL_CHOSEN" in (ours.read_text(errors="replace")
                                          if ours.exists() else ""):
        return ("pypluto answered NO_PROPOSAL_CHOSEN to strongSwan's KE1_ML_KEM_768 proposal "
                "although its conn has addke1=mlkem768 (no RFC 9370 in pypluto's IKE engine)")
    return "RFC 9370 additional key exchange (IKE_INTERMEDIATE) case"


def _ike_algs(them: StrongSwan) -> str:
    """The IKE SA's algorithms from ``swanctl --list-sas`` (the line after the SPIs)."""
    text = them.swanctl("--list-sas", check=False).stdout
    m = re.search(r"^\s+((?:AES|CHACHA|3DES|CAMELLIA)\S*/\S+)\s*$", text, re.M)
    return m.group(1) if m else text[-400:]


# ------------------------------------------------------------------ case 2
@pytest.mark.parametrize("what", ["child", "ike"])
@pytest.mark.parametrize("by", ["pypluto", "strongswan"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_rekey_under_ping(lab: Lab, cell: Callable[..., None], peer: PeerSpec, role: str,
                          by: str, what: str) -> None:
    """Rekey while a ping runs every 0.2 s: no packet may be lost (RFC 7296 §2.8).

    ``role`` is pypluto's role in the original IKE SA; ``by`` who starts the
    rekey (for an IKE rekey the new SA's initiator is ``by``, §2.18)."""
    cell(peer=peer.label, case=f"rekey-{what}-by-{by}", role=role, proposal="defaults")
    proposal = PROPOSALS[0]
    us, them = _up(lab, peer, proposal, role)
    ike_before = them.established()
    assert ike_before is not None
    spis_before = _child_spis(them)
    our_children_before, our_ike_before = us.child_spis(), us.ike_spis()
    assert len(our_children_before) == 1 and len(our_ike_before) == 1, us.showstates()
    log = lab.workdir / "ping.log"
    ping = lab.spawn(lab.west, ["ping", "-n", "-i", "0.2", "-c", "30", "-W", "2",
                                "-I", WEST_INNER, EAST_INNER], log, name="ping")
    ping.expect_alive = False
    lab.wait_for(lambda: log.read_text().count("bytes from") >= 5, 15, "pings flowing")
    if by == "pypluto":
        (us.rekey_child if what == "child" else us.rekey_ike)()
    else:
        them.rekey(child="net" if what == "child" else None,
                   ike="east-west" if what == "ike" else None)

    def rekeyed() -> bool:
        ike = them.established()
        if ike is None:
            return False
        if what == "ike":
            return ike.uid != ike_before.uid and len(them.list_sas()) == 1
        spis = _child_spis(them)
        return bool(spis) and not spis & spis_before

    lab.wait_for(rekeyed, 20, f"{what} SA rekeyed by {by}, old one deleted")
    # our side too: exactly one IKE SA and one Child SA, the new ones (§2.8)
    lab.wait_for(lambda: len(us.ike_spis()) == 1 and len(us.child_spis()) == 1, 20,
                 f"the old {what} SA deleted on our side")
    if what == "child":
        assert not us.child_spis() & our_children_before
    else:
        assert not us.ike_spis() & our_ike_before
    ping.proc.wait(30)
    sent, received = parse_ping(log.read_text())
    assert sent == 30 and received == sent, log.read_text()[-800:]
    assert us.child_established()


# ------------------------------------------------------------------ case 3
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_liveness(lab: Lab, cell: Callable[..., None], peer: PeerSpec, role: str) -> None:
    """Peer killed: declared dead within dpddelay + timeout, SAs and routes removed
    (RFC 7296 §2.4); with auto=start the tunnel comes back when the peer does."""
    cell(peer=peer.label, case="liveness", role=role, proposal="defaults")
    dpddelay, timeout = 2, 8
    restart = role == "initiator"
    # Libreswan 5 semantics (pypluto's): dpdaction= is obsolete; a dead peer's
    # SAs are always deleted, and an auto=start connection is then restarted.
    extra = f"""dpddelay={dpddelay}
                dpdtimeout={timeout}
                retransmit-timeout={timeout}"""
    us, them = _up(lab, peer, PROPOSALS[0], role, auto="start" if restart else "add",
                   extra=extra)
    _ping_both(lab)
    them.kill()

    def gone() -> bool:
        return not us.child_spis() and not us.routes_to(EAST_SUBNET)

    lab.wait_for(gone, dpddelay + timeout + 5, "peer declared dead, SAs and routes removed")
    assert lab.ping(lab.west, EAST_INNER, count=1, timeout=1, src=WEST_INNER)[1] == 0
    them.start()  # same configuration, fresh daemon
    if restart:
        lab.wait_for(lambda: them.established() and us.child_established(), 60,
                     "auto=start re-established the tunnel")
    else:
        them.initiate()
        lab.wait_for(lambda: us.child_established(), 20, "tunnel up again")
    _ping_both(lab)


# ------------------------------------------------------------------ case 4
@pytest.mark.parametrize("by", ["pypluto", "strongswan"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_delete_leaves_nothing(lab: Lab, cell: Callable[..., None], peer: PeerSpec, role: str,
                               by: str) -> None:
    """``whack --down`` or ``swanctl --terminate``: nothing left on our side (RFC 7296 §1.4.1)."""
    cell(peer=peer.label, case=f"delete-by-{by}", role=role, proposal="defaults")
    us, them = _up(lab, peer, PROPOSALS[0], role)
    _ping_both(lab)
    if by == "pypluto":
        r = us.down()
        assert r.returncode == 0, r.stdout + r.stderr
    else:
        them.terminate_ike("east-west")

    def clean() -> bool:
        return (not us.sas() and "ESTABLISHED" not in us.showstates()
                and not us.routes_to(EAST_SUBNET) and "inBytes" not in us.trafficstatus()
                and not them.list_sas())

    lab.wait_for(clean, 15, "no SAs, routes or traffic entries left on either side")
    assert lab.ping(lab.west, EAST_INNER, count=1, timeout=1, src=WEST_INNER)[1] == 0


# ------------------------------------------------------------------ tfc=
def _esp_udp_lengths(pcap: pathlib.Path, src: str) -> list[int]:
    """UDP lengths of the ESP-in-UDP packets from ``src`` (tcpdump's ``UDP-encap``)."""
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "udp port 4500"],
                         capture_output=True, text=True, check=True).stdout
    return [int(m.group(1)) for ln in out.splitlines()
            if f" {src}.4500 > " in ln and "UDP-encap" in ln
            for m in [re.search(r"length (\d+)", ln)] if m]


@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_tfc_padding_is_cut_by_strongswan(lab: Lab, cell: Callable[..., None],
                                         peer: PeerSpec) -> None:
    """pypluto with ``tfc=1200`` (RFC 4303 §2.7): each of its ESP packets carries an
    inner packet padded to 1,200 bytes (seen on the wire), and strongSwan's
    kernel-libipsec cuts the padding by the inner IP header: pings are answered and
    1 MiB of TCP arrives intact each way."""
    cell(peer=peer.label, case="tfc-padding", role="initiator", proposal="defaults")
    require(shutil.which("tcpdump") is not None, "tcpdump")
    us, them = _up(lab, peer, PROPOSALS[0], "initiator", extra="\ttfc=1200\n")
    pcap = lab.workdir / "west-tfc.pcap"
    dump = lab.spawn(lab.west, ["tcpdump", "-i", "west", "-U", "--immediate-mode", "-n",
                                "-s", "128", "-w", pcap], lab.workdir / "tcpdump-tfc.log",
                     name="tcpdump-tfc")
    lab.wait_for(lambda: "listening on" in dump.logfile.read_text(errors="replace"), 10,
                 "tcpdump on west")
    _ping_both(lab)
    sent, got, n = lab.transfer(lab.west, lab.east, EAST_INNER, src=WEST_INNER, port=5003)
    assert (got, n) == (sent, 1 << 20), "west -> east transfer"
    sent, got, n = lab.transfer(lab.east, lab.west, WEST_INNER, src=EAST_INNER, port=5004)
    assert (got, n) == (sent, 1 << 20), "east -> west transfer"
    lab.wait_for(lambda: pcap.exists() and pcap.stat().st_size > 4096, 10, "packets captured")
    lab.stop(dump, signal.SIGINT)
    ours = _esp_udp_lengths(pcap, "192.0.2.1")
    theirs = _esp_udp_lengths(pcap, "192.0.2.2")
    # (our bulk leaves in UDP GSO super-packets: tcpdump sees fewer, each one segment's
    # UDP header)
    assert len(ours) > 20 and len(theirs) > 20, (len(ours), len(theirs))
    # tcpdump's length: SPI, sequence number, IV, 1,200 bytes at least, trailer, ICV
    small = [x for x in ours if x < 8 + 8 + 1200 + 2 + 16]
    assert not small, f"{len(small)} of our {len(ours)} ESP packets unpadded: {small[:10]}"
    assert min(theirs) < 200, "strongSwan pads nothing (the ACKs it sends are small)"
    cell(note=f"our ESP-in-UDP {min(ours)}-{max(ours)} bytes, strongSwan's "
              f"{min(theirs)}-{max(theirs)}")


@pytest.mark.parametrize("role", ROLES)
def test_fake_strongswan_vendor_id_is_recognised(lab: Lab, cell: Callable[..., None],
                                                 role: str) -> None:
    """``fake-strongswan=yes``: our IKE_SA_INIT (request or answer) carries strongSwan's
    unversioned Vendor ID, and strongSwan 5.9.8 says so in its log ("received strongSwan
    vendor ID"; without the key it does not); the tunnel carries traffic as usual."""
    peer = STRONGSWAN_PEERS[0]
    cell(peer=peer.label, case="fake-strongswan", role=role, proposal="defaults")
    us, them = _up(lab, peer, PROPOSALS[0], role, extra="\tfake-strongswan=yes\n")
    text = them.log.read_text(errors="replace")
    assert "received strongSwan vendor ID" in text, text[-3000:]
    _ping_both(lab)


@pytest.mark.parametrize("peer", STRONGSWAN_PEERS, ids=PEER_IDS)
def test_path_sized_packets_cross_in_one_esp_packet(lab: Lab, cell: Callable[..., None],
                                                   peer: PeerSpec) -> None:
    """Our route into the tunnel gets the path's MTU less the SA's overhead (XFRM's
    sizing; ESP-in-UDP with AES-GCM on a 1,500-byte path: 1,438), not the TUN device's
    1,400.  A DF ping of exactly that size leaves in one ESP packet of 1,500 bytes and
    strongSwan's kernel-libipsec delivers it (its answer comes back fragmented by its
    own 1,400-byte TUN device); one byte more is refused on our host."""
    cell(peer=peer.label, case="path-mtu", role="initiator", proposal=PROPOSALS[1].name)
    require(shutil.which("tcpdump") is not None, "tcpdump")
    _up(lab, peer, PROPOSALS[1], "initiator")
    _ping_both(lab)
    route = lab.run(lab.west, ["ip", "-4", "route", "get", EAST_INNER, "from", WEST_INNER]).stdout
    m = re.search(r"\bmtu (\d+)", route)
    assert m and int(m.group(1)) == 1438, route
    pcap = lab.workdir / "west-pmtu.pcap"
    dump = lab.spawn(lab.west, ["tcpdump", "-i", "west", "-U", "--immediate-mode", "-n",
                                "-s", "128", "-w", pcap, "udp port 4500 and greater 1400"],
                     lab.workdir / "tcpdump-pmtu.log", name="tcpdump-pmtu")
    lab.wait_for(lambda: "listening on" in dump.logfile.read_text(errors="replace"), 10,
                 "tcpdump on west")

    def ping(size: int) -> subprocess.CompletedProcess[str]:
        return lab.run(lab.west, ["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s",
                                  str(size - 28), "-I", WEST_INNER, EAST_INNER], check=False)

    ok = ping(1438)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    big = ping(1439)
    assert big.returncode != 0 and re.search(r"message too long, mtu=1438", big.stdout
                                              + big.stderr, re.I), big.stdout + big.stderr
    lab.wait_for(lambda: pcap.exists() and pcap.stat().st_size > 24, 10, "packets captured")
    lab.stop(dump, signal.SIGINT)
    out = subprocess.run(["tcpdump", "-r", str(pcap), "-n", "-v"], capture_output=True,
                         text=True, check=True).stdout
    # our ESP packet for the 1,438-byte ping: an outer IPv4 packet of exactly 1,500
    ours = re.findall(r"length (\d+)\)\s*\n\s*192\.0\.2\.1\.4500 >", out)
    assert ours == ["1500"], out[-3000:]
    cell(note="route mtu 1438; the 1,438-byte DF ping crossed in one 1,500-byte "
              "ESP-in-UDP packet; 1,439 refused locally")
