"""The XFRM backend for real, inside a kernel with ESP (User-Mode Linux).

UML boots (``tools/run-in-esp-kernel.sh``) run ``guest_xfrm.py``, which does a
boot's guest-side work in one process and prints a ``CHECK name: OK`` line per
check; each boot runs one group of its scenarios (our backend with hand-keyed SAs,
two of our daemons, ours against Libreswan 4.10, on-demand, Libreswan 5.2), and
the boots run side by side.  Each test here asserts its group of checks.  Missing
UML or kmod fails in CI (``require``) and skips elsewhere.
"""

from __future__ import annotations

import os
import re

import pytest
from testsupport import require, shared_path
from umlboot import GuestRun, boot, require_libreswan, require_uml, uml_fixture

pytestmark = [pytest.mark.espkernel, pytest.mark.slow]

EXPECTED = [
    "allocspi",
    "gcm-esn-kernel-view",
    "ping-ipv4-tunnel-gcm-esn",
    "get_sa_stats-counters",
    "ip-s-xfrm-state-counters",
    "counters-rise",
    "policy-blocks-without-sa",
    "del_sa-del_policy",
    "cbc-sha256-trunc-128",
    "lifetimes",
    "ping-ipv4-tunnel-cbc-sha256",
    "cbc-counters",
    "chacha-kernel-view",
    "ping-ipv6-tunnel-chacha20poly1305",
    "ipv6-counters",
    "ping-ipv4-in-ipv6-tunnel",
    "transport-kernel-view",
    "ping-ipv4-transport",
    "transport-counters",
    "ah-kernel-view",
    "ping-ipv4-ah-tunnel",
    "ah-counters",
    "natt-kernel-view",
    "ping-ipv4-esp-in-udp",
    "natt-counters",
    "natt-esp-consumed-by-kernel",
    "expire-events",
    "hard-expired-sa-gone",
    "acquire-event",
    "acquire-larval-state-flushed",
    "bad-sa-clear-errors",
    "add_sa-twice-updates",
    "crash-child-installed",
    "crash-leftovers-found",
    "flush_own-leaves-foreign-only",
    "selectors-tunnel-udp-5353-passes",
    "selectors-tunnel-others-dropped",
    "selectors-transport-udp-5353-passes",
    "selectors-transport-others-dropped",
    "shunt-policies-are-ours",
    "shunt-passthrough-ping-both-ways",
    "shunt-drop-blocks",
    "shunt-trap-rest-of-24-blocked",
    "shunt-restart-flush-removes-them",
]


PAIR = [
    "pair-child-sa-installed",
    "pair-ping",
    "pair-sourceip-route",
    "pair-ip-s-xfrm-counters",
    "pair-rekey-child",
    "pair-ping-after-rekey",
    "pair-trafficstatus",
    "pair-peer-trafficstatus",
    "pair-sha2_256-truncation-128",
    "pair-ping-sha2_256",
    "pair-probe-picks-xfrm",
    "pair-natt-encap",
    "pair-ping-esp-in-udp",
    "pair-natt-counters",
    "pair-transport-mode",
    "pair-ping-host-to-host",
    "pair-host-counters",
    "pair-host-delete-exchange",
    "pair-ipv6-chacha-sas",
    "pair-ping-ipv6",
    "pair-restart-removes-crash-leftovers",
    "pair-orderly-shutdown",
    "pair-nothing-left-after-shutdown",
]

PAIR_AH = [
    "pair-ah-kernel-sas",
    "pair-ah-policies",
    "pair-ah-ping",
    "pair-ah-counters",
    "pair-ah-rekey",
    "pair-ah-ping-after-rekey",
    "pair-ah-trafficstatus",
    "pair-ah-delete",
]

LIBRESWAN_AH = [c.replace("pair-", "libreswan-") for c in PAIR_AH] + [
    "libreswan-ah-responder",
    "libreswan-ah-responder-ping",
]

LIBRESWAN_PPK = [f"libreswan-ppk-{role}-{what}" for role in ("initiator", "responder")
                 for what in ("child-sa", "ping", "updown-up", "updown-down")]

LIBRESWAN_TRUNCBUG = [f"libreswan-truncbug-{case}-{what}" for case in ("both", "libreswan-only")
                      for what in ("child-sa", "kernels", "ping")]

LIBRESWAN = [
    "libreswan-child-sa-installed",
    "libreswan-ping",
    "libreswan-sourceip-route",
    "libreswan-ip-s-xfrm-counters",
    "libreswan-trafficstatus",
    "libreswan-peer-trafficstatus",
    "libreswan-sha2_256-truncation-128",
    "libreswan-ping-sha2_256",
    "libreswan-natt-encap",
    "libreswan-ping-esp-in-udp",
    "libreswan-natt-counters",
    "libreswan-transport-mode",
    "libreswan-ping-host-to-host",
    "libreswan-host-counters",
    "libreswan-host-delete-exchange",
    "libreswan-ipv6-chacha-sas",
    "libreswan-ping-ipv6",
    "libreswan-responder-child-sa",
    "libreswan-esn-agrees",
    "libreswan-responder-ping",
    "libreswan-orderly-shutdown",
    "libreswan-nothing-left-after-shutdown",
]

ONDEMAND = [
    "ondemand-trap-policy",
    "ondemand-trap-route",
    "ondemand-our-acquire-initiates",
    "ondemand-hold-no-ping-lost",
    "ondemand-ping-after-acquire",
    "ondemand-down-keeps-trap",
    "ondemand-libreswan-acquire-initiates",
    "ondemand-ping-after-libreswan-acquire",
    "ondemand-nothing-left-after-unroute",
    "ondemand-nothing-left-after-shutdown",
    "ondemand-larval-drop-restored",
]

ONDEMAND_SHUNTS = [
    "ondemand-xfrm-negotiationshunt-pass",
    "ondemand-xfrm-failureshunt-drop",
    "ondemand-xfrm-shunt-expires-trap-back",
    "ondemand-xfrm-shunts-nothing-left",
]

ONDEMAND_TEMPLATE = [
    "ondemand-template-trap-no-leak",
    "ondemand-template-peer-connects-ping",
    "ondemand-template-trap-back",
    "ondemand-template-nothing-left",
]

MOBIKE = [
    "mobike-move-ping-before",
    "mobike-move-old-path-broken",
    "mobike-move-same-spis-new-addresses",
    "mobike-move-policy-templates",
    "mobike-move-ping-after",
    "mobike-move-sequence-numbers-go-on",
    "mobike-pair-child-sa",
    "mobike-pair-ping-before",
    "mobike-pair-update-and-check",
    "mobike-pair-same-spis",
    "mobike-pair-sas-on-new-address",
    "mobike-pair-policy-templates",
    "mobike-pair-ping-after-move",
    "mobike-pair-no-new-child-sa",
] + [f"mobike-natt-{c}" for c in ("child-sa", "ping-before", "update-and-check", "same-spis",
                                  "sas-on-new-address", "policy-templates", "ping-after-move",
                                  "no-new-child-sa")]


LIBRESWAN52 = [c.replace("libreswan-", "libreswan52-") for c in LIBRESWAN]
LIBRESWAN_CERT = [f"libreswan-cert-{role}-{what}" for role in ("initiator", "responder")
                  for what in ("child-sa", "ping")] + ["libreswan-cert-orderly-shutdown"]


HANDKEYED = ("gcm_esn", "cbc_sha256", "chacha_ipv6", "ipv4_in_ipv6", "transport", "ah", "natt",
             "expire", "acquire", "errors", "flush_and_crash", "selectors",
             "shunts")  # fmt: skip
PAIRS = ("pypluto_pair", "pypluto_ah", "mobike_move", "mobike_pair")
LIBRESWAN_SCENARIOS = ("libreswan", "libreswan_ah", "libreswan_ppk", "libreswan_cert",
                       "libreswan_truncbug")
ONDEMAND_SCENARIOS = ("ondemand", "ondemand_shunts", "ondemand_template")


# One UML boot per group of guest scenarios (process creation is slow in UML, and the
# boots run side by side: umlboot.uml_fixture).  Libreswan 5.2 has a boot of its own.
@uml_fixture("guest", expect=90)
def guest() -> GuestRun:
    """The hand-keyed scenarios: our backend alone, no daemon."""
    return boot("guest_xfrm.py", *HANDKEYED, timeout=300)


@uml_fixture("guest_pairs", expect=60)
def guest_pairs() -> GuestRun:
    """Two of our daemons: the pair, AH, MOBIKE."""
    return boot("guest_xfrm.py", *PAIRS, timeout=300)


@uml_fixture("guest_ls", expect=90)
def guest_ls() -> GuestRun:
    """Against Libreswan 4.10."""
    return boot("guest_xfrm.py", *LIBRESWAN_SCENARIOS, timeout=300)


@uml_fixture("guest_od", expect=60)
def guest_od() -> GuestRun:
    """auto=route (ACQUIRE), the shunts, the routed template."""
    return boot("guest_xfrm.py", *ONDEMAND_SCENARIOS, timeout=300)


def test_xfrm_backend_in_esp_kernel(guest: GuestRun) -> None:
    """Hand-keyed SAs and policies from our backend carry pings through kernel ESP."""
    print(f"UML run took {guest.seconds:.1f}s")
    print("\n".join(re.findall(r"scenario \S+ took [\d.]+s", guest.output)))
    for sc in HANDKEYED:
        guest.assert_checks(EXPECTED, sc)


def test_two_pypluto_daemons_with_xfrm(guest_pairs: GuestRun) -> None:
    """Two ``pluto --use-xfrm`` bring up a tunnel, ping through it, leave nothing behind."""
    guest_pairs.assert_checks(PAIR, "pypluto_pair")


def test_two_pypluto_daemons_negotiate_ah_with_xfrm(guest_pairs: GuestRun) -> None:
    """phase2=ah (issue 12): two ``pluto --use-xfrm`` negotiate an AH Child SA; the
    kernels hold AH SAs (HMAC-SHA2-256-128, no cipher) and AH policies, ping passes,
    the rekey and the delete keep it AH."""
    guest_pairs.assert_checks(PAIR_AH, "pypluto_ah")


def test_pypluto_against_libreswan_with_xfrm(guest_ls: GuestRun) -> None:
    """Ours (--use-xfrm) against Libreswan 4.10, both roles, GCM and CBC+HMAC-SHA2-256-128."""
    require_libreswan("certutil")
    guest_ls.assert_checks(LIBRESWAN, "libreswan")


def test_pypluto_against_libreswan_ah_with_xfrm(guest_ls: GuestRun) -> None:
    """phase2=ah against Libreswan 4.10 (issue 12): AH Child SA both roles, AH SAs in
    both kernels, ping each way, our rekey and delete."""
    require_libreswan("certutil")
    guest_ls.assert_checks(LIBRESWAN_AH, "libreswan_ah")


def test_pypluto_against_libreswan_ppk_and_updown_with_xfrm(guest_ls: GuestRun) -> None:
    """ppk=insist and leftupdown= against Libreswan 4.10 (issue 12), full tunnel in the
    ESP kernel, both roles: Libreswan logs the PPK, ping passes, our updown script runs."""
    require_libreswan()
    guest_ls.assert_checks(LIBRESWAN_PPK, "libreswan_ppk")


def test_sha2_truncbug_against_libreswan_with_xfrm(guest_ls: GuestRun) -> None:
    """sha2-truncbug=yes against Libreswan 4.10's (ESP, HMAC-SHA2-256): 96-bit truncation
    in both kernels and pings pass; on Libreswan's end only, no ping passes."""
    require_libreswan("certutil")
    guest_ls.assert_checks(LIBRESWAN_TRUNCBUG, "libreswan_truncbug")


def test_pypluto_against_libreswan_certificates_with_xfrm(guest_ls: GuestRun) -> None:
    """Certificates against Libreswan 4.10 with traffic in the ESP kernel (issue 14): RSA-2048
    through an intermediate CA, NSS dbs in Libreswan's layout, both roles, ping."""
    require_libreswan("pk12util")
    guest_ls.assert_checks(LIBRESWAN_CERT, "libreswan_cert")


def test_xfrm_acquire_against_libreswan_both_ways(guest_od: GuestRun) -> None:
    """auto=route on both ends (issue 16): our ACQUIRE makes us initiate, Libreswan's
    makes it initiate and we respond; unroute and shutdown leave nothing of ours."""
    require_libreswan("certutil")
    print("\n".join(re.findall(r"ondemand: .*", guest_od.output)))
    guest_od.assert_checks(ONDEMAND, "ondemand")


def test_xfrm_negotiation_and_failure_shunts(guest_od: GuestRun) -> None:
    """negotiationshunt=passthrough and failureshunt=drop in the kernel (issue 16): an
    ALLOW policy for the pinged flow while negotiating with a peer that never answers,
    a BLOCK policy for shuntlifetime= after, then the trap alone; nothing left."""
    guest_od.assert_checks(ONDEMAND_SHUNTS, "ondemand_shunts")


def test_xfrm_routed_any_template_against_libreswan(guest_od: GuestRun) -> None:
    """A routed right=%any template with rightsubnet= (issue 16): the trap keeps the
    subnet from leaking until Libreswan 4.10 connects; its Child SA replaces the trap,
    which comes back when Libreswan takes it down; nothing left after shutdown."""
    require_libreswan("certutil")
    guest_od.assert_checks(ONDEMAND_TEMPLATE, "ondemand_template")


@uml_fixture("guest52", expect=50)
def guest52() -> GuestRun:
    """Libreswan 5.2 from the Debian 13 chroot, in a boot of its own (about 60 s)."""
    require_uml()
    run_sh = shared_path("interop", "trixie", "libreswan", "run.sh")
    chroot = os.environ.get("TRIXIE_LS_ROOT",
                            os.path.join(os.environ.get("TRIXIE_ROOT", "/opt"), "trixie-ls"))
    require(os.access(os.path.join(chroot, "usr/libexec/ipsec/pluto"), os.X_OK),
            f"Libreswan 5.2 in {chroot} (../shared/interop/trixie/install.sh)")
    return boot("guest_xfrm.py", "libreswan52", timeout=280, env={"PPESPK_LS52_RUN": str(run_sh)})


def test_pypluto_against_libreswan52_with_xfrm(guest52: GuestRun) -> None:
    """Ours (--use-xfrm) against Libreswan 5.2 with traffic in the ESP kernel (issue 19):
    both roles, GCM, CBC+HMAC-SHA2-256-128, ESP in UDP, transport, IPv6 ChaCha20."""
    print(f"UML run took {guest52.seconds:.1f}s")
    guest52.assert_checks(LIBRESWAN52, "libreswan52")


def test_mobike_moves_xfrm_sas_and_policies(guest_pairs: GuestRun) -> None:
    """MOBIKE on the XFRM plane (RFC 4555 §3.5, issue 15): ``move_sa`` by hand (same
    SPIs, the ESN sequence numbers go on), then two ``pluto --use-xfrm`` with mobike=yes:
    the initiator's address changes, both kernels' SAs and policy templates follow, the
    same Child SA carries the ping again; plain ESP and ESP in UDP."""
    print("\n".join(re.findall(r"mobike: .*", guest_pairs.output)))
    guest_pairs.assert_checks(MOBIKE, "mobike_move")
    guest_pairs.assert_checks(MOBIKE, "mobike_pair")
