"""The keywords of ``ipsec.conf`` (Libreswan 5.2's set) and what pypluto does with each.

Every keyword of Libreswan 5.2's ``config setup`` and ``conn`` sections (the table
in its ``lib/libipsecconf/keywords.c``) is here, with its aliases, and nothing else:
a key that Libreswan 5.2 does not know is a syntax error (``unrecognized keyword``),
as it is there (``leftfirewall=`` for instance).

Each key has a value kind that ``values.py`` validates:

- ``str``: any text; ``bool``: yes/no (also true/false, on/off, y/n, 1/0);
- ``int``: a decimal number (Libreswan's kt_unsigned); ``bignum``: a decimal or 0x
  number, ``ipsec-max-bytes=`` / ``ipsec-max-packets=`` as Libreswan's ttobinary
  (``KiB`` / ``Ki`` multipliers); ``time``: a duration (bare = seconds, or with
  ``us``/``ms``/``s``/``m``/``h``/``d``/``w``); ``ms``: a duration whose bare number means ms;
- ``percent``: an integer followed by ``%``; ``enum``: one of ``values``;
- ``list``: words separated by white space or commas (plutodebug=);
- ``proposal:IKE|ESP|AH``; ``addr``; ``subnet`` / ``subnets``; ``id``; ``protoport``;
  ``addrs`` (sourceip=); ``authby``.

and a *support* verdict (issue 12 item 7: enforce or refuse, never ignore):

- ``works``: pypluto does what Libreswan's documentation says; ``test`` names the
  test that proves the effect;
- ``partial``: the values in ``ok`` work (proven by ``test``); any other value
  refuses the conn (``file:line: KEY=VALUE is not supported by pypluto``);
- ``obsolete``: Libreswan 5.2 itself warns and does not use the key; pypluto warns
  the same way, and ``note`` says what Libreswan does instead (the behaviour that
  pypluto has too);
- ``refused``: any value refuses the conn (``file:line: KEY is not supported by
  pypluto``); in ``config setup`` pluto refuses to start.

``alias`` points at the canonical name, so the typed objects see one name only;
an alias has the support of its canonical key.

``python -m pypluto.config.keywords --markdown`` prints the table of
``docs/config.md``.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from typing import Literal

Support = Literal["works", "partial", "obsolete", "refused"]


@dataclass(frozen=True)
class KeyDef:
    name: str
    kind: str
    values: tuple[str, ...] = ()
    alias: str | None = None  # canonical name when this is an alias
    support: Support = "refused"
    test: str = ""  # works / partial: the test that proves the effect
    ok: tuple[str, ...] = ()  # partial: the values that work (lower case)
    note: str = ""  # obsolete: what Libreswan does instead; refused: why


@dataclass(frozen=True)
class _S:
    support: Support
    test: str = ""
    ok: tuple[str, ...] = ()
    note: str = ""


def W(test: str) -> _S:
    """Works; ``test`` proves it."""
    return _S("works", test)


def P(ok: str, test: str = "", note: str = "") -> _S:
    """Works for the values ``ok`` (``|``-separated); other values are refused."""
    return _S("partial", test or T_DEFAULT_ONLY, tuple(ok.split("|")), note)


def O(note: str) -> _S:  # noqa: E743 - the name reads as the table's column
    """Obsolete in Libreswan 5.2: a warning saying what happens instead."""
    return _S("obsolete", note=note)


def R(note: str) -> _S:
    """Not supported by pypluto: the conn (or pluto's start) is refused."""
    return _S("refused", note=note)


# tests that prove the effects
T_EST = "tests/ike/test_establish.py::"
T_LIFE = "tests/ike/test_lifecycle.py::"
T_UNITS = "tests/ike/test_units.py::"
T_HOSTILE = "tests/ike/test_hostile.py::"
T_DOS = "tests/ike/test_dos.py::"
T_CFG = "tests/config/test_cfg_parser_basic.py::"
T_REG = "tests/config/test_cfg_registry.py::"
T_DU = "tests/daemon/test_daemon_units.py::"
T_D = "tests/daemon/test_daemon.py::"
T_DA = "tests/daemon/test_daemon_args.py::"
T_DIP = "tests/daemon/test_daemon_inprocess.py::"
T_ESP = "tests/kernel/test_esp.py::"
T_PPK = "tests/ike/test_ppk.py::"
T_CERT = "tests/ike/test_certs.py::"
T_NSS = "tests/config/test_nss.py::"
T_RAW = "tests/ike/test_rawkeys.py::"
T_REV = "tests/ike/test_revocation.py::"  # CRL fetching, OCSP (issue 14)
T_REVLAB = "tests/interop/test_revocation_lab.py::"
T_AH = "tests/ike/test_ah.py::"
T_RW = "tests/ike/test_roadwarrior.py::"
T_RED = "tests/ike/test_redirect.py::"
T_REDA = "tests/ike/test_redirect_ikeauth.py::"
T_RWC = "tests/config/test_cfg_roadwarrior.py::"
T_ODS = "tests/daemon/test_ondemand_shunts.py::"
# mark= / mark-in= / mark-out=: two conns with the same selectors and different marks
# coexist in the ESP kernel and marked traffic takes its own SA
T_MARK = "tests/espkernel/test_mark_uml.py::test_marked_conns_coexist_and_carry_their_traffic"
# vti-interface= and friends: a VTI device between two daemons in the ESP kernel
T_VTI = "tests/espkernel/test_vti_uml.py::"
# ipsec-interface= / interface-ip= / ipsec-interface-managed=: a TUN device ipsecN per
# number on the userspace plane (--use-userspace); --use-xfrm / --use-none refuse the
# conn (pypluto manages no XFRM interfaces and the ESP test kernel lacks them)
T_XIF = "tests/daemon/test_ipsec_interface.py::"
T_XIF_PAIR = T_XIF + "test_route_based_pair_shares_ipsec1_and_cleans_up"
# a partial key whose only working value is the default (what pypluto always does):
# this test loads each such value and checks every other value refuses the conn
T_EFF = "tests/config/test_cfg_effects.py::"
T_MTU = "tests/daemon/test_userspace_mtu.py::"
T_TFC = "tests/daemon/test_userspace_tfc.py::"
T_DSCP = "tests/kernel/test_xfrm_sa_flags.py::"
T_DEFAULT_ONLY = T_REG + "test_partial_keys_accept_their_values_and_refuse_others"
# config setup keys become pluto options (whose effects the daemon tests prove)
T_SETUP = T_DA + "test_config_setup_keys_reach_the_options"

_IKEV1 = "IKEv1 only; pypluto speaks IKEv2 only"
_V1_CP = ("IKEv1 XAUTH / ModeConfig; pypluto speaks IKEv2 only (its configuration "
          "payloads are IKEv2's CP, RFC 7296 §3.15)")
_NO = "not implemented by pypluto"
# IKEv1-only keys that Libreswan 5.2 loads on an IKEv2 conn and ignores there (every conn
# pypluto loads is IKEv2): the conn loads, as in 5.2; ikepad= with 5.2's warning
# (testing/pluto/addconn-47-ikepad), the others silently (programs/pluto/connections.c
# stores them for IKEv1 only)
T_V1 = "tests/config/test_ikev1_keys24.py::"
_V1_IGNORED = "IKEv1 only: Libreswan 5.2 loads it on an IKEv2 conn and ignores it"


def _table(rows: list[tuple]) -> dict[str, KeyDef]:  # type: ignore[type-arg]
    out: dict[str, KeyDef] = {}
    for row in rows:
        name, kind = row[0], row[1]
        values: tuple[str, ...] = ()
        alias: str | None = None
        sup = _S("refused", note=_NO)
        for extra in row[2:]:
            if isinstance(extra, _S):
                sup = extra
            elif extra.startswith("="):
                alias = extra[1:]
            else:
                values = tuple(extra.split("|"))
        out[name] = KeyDef(name, kind, values, alias, sup.support, sup.test, sup.ok, sup.note)
    # an alias has the support of its canonical key
    for name, kd in list(out.items()):
        if kd.alias:
            c = out[kd.alias]
            out[name] = KeyDef(name, kd.kind, kd.values, kd.alias, c.support, c.test, c.ok,
                               c.note)
    return out


_YN = "yes|no|true|false|on|off|y|n"
_NO_VALUES = "no|false|off|n|0"
_NO_DNSSEC = ("pypluto validates no DNSSEC: host names in left=/right= go to the system's "
              "resolver (getaddrinfo)")
_YES_VALUES = "yes|true|on|y|1"

#: config setup keys that are pypluto's own (not in Libreswan 5.2's keywords.c)
SETUP_ADDITIONS = frozenset({"metrics-listen"})

SETUP_KEYS: dict[str, KeyDef] = _table([
    ("ikev1-policy", "enum", "accept|reject|drop",
     P("drop|reject", "tests/config/test_cfg_keyword_audit.py::"
                      "test_ikev1_policy_reject_answers_and_drop_is_silent",
       "accept needs IKEv1, which pypluto does not speak")),
    ("curl-iface", "str", W("tests/interop/test_revocation_lab.py::"
                            "test_curl_iface_chooses_where_the_fetches_come_from")),
    ("curl-timeout", "time", W(T_REV + "test_crl_strict_with_an_unreachable_cdp_fails_closed")),
    ("myvendorid", "str", W(T_D + "test_config_setup_conns_secrets_and_cli_wins")),
    ("syslog", "str", O("Libreswan 5.2 accepts syslog= and never uses it (logging goes "
                        "to syslog unless logfile= is set)")),
    ("plutodebug", "list", W(T_SETUP)),
    ("debug", "list", "=plutodebug"),
    ("logfile", "str", W(T_DU + "test_logger_rate_limit_and_debug_prefix")),
    ("plutostderrlog", "str", "=logfile"),
    ("logtime", "bool", W(T_DU + "test_logger_rate_limit_and_debug_prefix")),
    ("logappend", "bool", W(T_SETUP)),
    ("logip", "bool", W(T_SETUP)),
    ("audit-log", "bool", W(T_SETUP)),
    ("dnssec-enable", "bool", P(_NO_VALUES, note=_NO_DNSSEC)),
    ("dnssec-rootkey-file", "str", R(_NO_DNSSEC)),
    ("dnssec-anchors", "str", R(_NO_DNSSEC)),
    ("dumpdir", "str", W(T_SETUP)),
    ("ipsecdir", "str", W("tests/daemon/test_nss_password.py::"
                          "test_nsspassword_file_in_ipsecdir_opens_the_database")),
    ("nssdir", "str", W(T_NSS + "test_nss_database_credentials_and_trust")),
    ("secretsfile", "str", W(T_D + "test_config_setup_conns_secrets_and_cli_wins")),
    ("metrics-listen", "str", W("tests/daemon/test_daemon_metrics.py::"
                                "test_metrics_scrape_matches_trafficstatus")),
    ("statsbin", "str", W("tests/daemon/test_daemon_pair.py::"
                          "test_auto_start_statsbin_and_shutdown_deletes")),
    ("uniqueids", "bool", W(T_LIFE + "test_uniqueids_replaces_old_ike_sa")),
    ("shuntlifetime", "time", W(T_ODS + "test_shunts_of_a_trap_whose_peer_never_answers")),
    ("global-redirect", "str", P("no|yes|auto", T_RED + "test_redirect_in_ike_sa_init_lands_on_gateway_b",
                                 "redirect in IKE_SA_INIT (RFC 5685 §4)")),
    ("global-redirect-to", "str", W(T_RED + "test_redirect_in_ike_sa_init_lands_on_gateway_b")),
    ("crl-strict", "bool", W(T_CERT + "test_crl_strict_without_a_crl_refuses")),
    ("crlcheckinterval", "time", W(T_REVLAB + "test_crlcheckinterval_refetches_and_fetchcrls")),
    ("ocsp-strict", "bool", W(T_REVLAB + "test_ocsp_between_pypluto_daemons")),
    ("ocsp-enable", "bool", W(T_REVLAB + "test_ocsp_between_pypluto_daemons")),
    ("ocsp-uri", "str", W(T_REV + "test_ocsp_uri_overrides_the_aia_and_a_delegated_responder_signs")),
    ("ocsp-timeout", "time", W(T_REV + "test_ocsp_unreachable_responder")),
    ("ocsp-trustname", "str", W(T_REV + "test_ocsp_trustname_signs_for_the_default_responder")),
    ("ocsp-cache-size", "int", W(T_REV + "test_ocsp_cache_size_and_ages")),
    ("ocsp-cache-min-age", "time", W(T_REV + "test_ocsp_cache_size_and_ages")),
    ("ocsp-cache-max-age", "time", W(T_REV + "test_ocsp_cache_size_and_ages")),
    ("ocsp-method", "enum", "get|post", W(T_REV + "test_ocsp_good_is_up")),
    ("ddos-mode", "enum", "auto|busy|unlimited", W(T_DOS + "test_modes_busy_and_unlimited")),
    ("seccomp", "enum", "enabled|disabled|tolerant",
     P("disabled", note="seccomp filtering " + _NO)),
    ("ddos-ike-threshold", "int",
     W(T_DOS + "test_half_open_count_threshold_with_hysteresis")),
    ("max-halfopen-ike", "int", W(T_DOS + "test_max_halfopen_ike_drops_new_requests")),
    ("ike-socket-bufsize", "int", W(T_D + "test_ike_socket_bufsize_sizes_the_ike_sockets")),
    ("ike-socket-errqueue", "bool", P(_YES_VALUES, note="the error queue is always read")),
    ("nflog-all", "int", W("tests/daemon/test_userspace_nflog.py::"
                           "test_nflog_copies_the_cleartext_to_the_group")),
    ("xfrmlifetime", "int", W("tests/kernel/test_xfrm_netns.py::"
                              "test_xfrmlifetime_sets_the_acquire_lifetime")),
    ("virtual-private", "str", W(T_LIFE + "test_host_to_host_behind_nat_and_virtual_private")),
    ("virtual_private", "str", "=virtual-private"),
    ("seedbits", "int", W(T_SETUP)),
    ("keep-alive", "time", W(T_DIP + "test_command_line_reaches_engine_settings")),
    ("listen-tcp", "bool", P(_NO_VALUES, note="IKE over TCP (RFC 8229) " + _NO)),
    ("listen-udp", "bool", P(_YES_VALUES, note="IKE is always on UDP")),
    ("listen", "str", W(T_D + "test_listen_address_only_and_leak_detective")),
    ("protostack", "str", P("xfrm|netkey|userspace|none", T_SETUP,
                            "the BSD stacks are not available")),
    ("nhelpers", "bignum", W("tests/daemon/test_offload.py::test_no_helpers_means_inline")),
    ("drop-oppo-null", "bool", P(_NO_VALUES, note="opportunistic IPsec " + _NO)),
    ("interfaces", "str", O("Libreswan 5.2 ignores interfaces= and listens on every "
                            "interface (use listen= to restrict)")),
    ("ipsec-interface-managed", "bool",
     W(T_XIF + "test_unmanaged_ipsec_interface_is_the_operators_device")),
    ("ikev1-secctx-attr-type", "str", O("Libreswan 5.2 ignores it (labeled IPsec is "
                                        "IKEv2's sec-label=)")),
    ("secctx-attr-type", "str", O("Libreswan 5.2 ignores it (labeled IPsec is IKEv2's "
                                  "sec-label=)")),
])

# keys written as left<KEY> / right<KEY>; "" is left= / right= itself
SIDE_KEYS: dict[str, KeyDef] = _table([
    ("", "addr", W(T_CFG + "test_basic_file_resolves_default_and_also")),
    ("subnet", "subnet", W(T_EST + "test_ts_unacceptable")),
    ("subnets", "subnets", W(T_REG + "test_subnets_expand_into_one_conn_per_pair")),
    ("sourceip", "addrs", W("tests/kernel/test_xfrm_netns.py::"
                            "test_source_ip_route_added_marked_and_removed")),
    # the peer's end: IKE goes to that port; this host's end (a socket of the conn's own)
    # refuses the oriented conn (daemon/registry.local_ikeport_refusal)
    ("ikeport", "int", W(T_EFF + "test_peer_ikeport_is_where_ike_goes")),
    ("interface-ip", "str", W(T_XIF_PAIR)),
    ("vti", "str", W(T_VTI + "test_vti_pair_routes_traffic_through_the_device")),
    # the gateway of the routes pypluto adds with kernel IPsec (the userspace plane routes
    # into its TUN device, where a gateway has no place) and PLUTO_NEXT_HOP (docs/config.md)
    ("nexthop", "str", W("tests/kernel/test_xfrm_netns.py::"
                         "test_nexthop_is_the_gateway_of_the_route")),
    ("updown", "str", W("tests/daemon/test_daemon_updown.py::test_updown_verbs_and_environment")),
    ("id", "id", W(T_EST + "test_default_ids_are_addresses")),
    ("rsasigkey", "str", P("%cert|0s*|0x*", T_RAW + "test_raw_rsa_keys_from_nss_both_roles",
                           "keys from DNS (%dns, %dnsondemand) " + _NO)),
    ("ecdsakey", "str", P("%cert|0s*|0x*", T_RAW + "test_raw_ecdsa_keys_in_ecdsakey",
                          "keys from DNS (%dns, %dnsondemand) " + _NO)),
    ("pubkey", "str", P("%cert|0s*|0x*", T_RAW + "test_raw_rsa_keys_from_nss_both_roles",
                        "keys from DNS (%dns, %dnsondemand) " + _NO)),
    ("cert", "str", W(T_CERT + "test_certificates_through_an_intermediate")),
    ("ckaid", "str", W(T_RAW + "test_raw_rsa_keys_from_nss_both_roles")),
    ("sendcert", "enum", "never|sendifasked|alwayssend|always",
     W(T_CERT + "test_sendcert_never_without_rightcert_fails")),
    ("ca", "str", W(T_CERT + "test_rightca_restricts_the_issuer")),
    ("xauthserver", "bool", P(_NO_VALUES, note=_V1_CP)),
    ("xauthclient", "bool", P(_NO_VALUES, note=_V1_CP)),
    ("modecfgserver", "bool", W(T_RW + "test_client_gets_an_address_dns_and_the_selectors_follow")),
    ("modecfgclient", "bool", W(T_RW + "test_client_gets_an_address_dns_and_the_selectors_follow")),
    ("username", "str", R(_V1_CP)),
    ("xauthusername", "str", "=username"),
    ("addresspool", "str", W(T_RW + "test_lease_kept_for_the_id_across_reconnects_and_freed_on_delete")),
    ("auth", "enum", "never|secret|rsasig|rsa|ecdsa|null|eaponly",
     P("secret|rsasig|rsa|ecdsa|null|never", T_CERT + "test_asymmetric_psk_one_way_cert_the_other",
       "eaponly " + _NO + "; never only in a shunt conn")),
    ("cat", "bool", P(_NO_VALUES, note="client address translation " + _NO)),
    ("protoport", "protoport", W("tests/daemon/test_userspace_capture.py::"
                                 "test_protoport_selects_what_is_encrypted")),
    ("autheap", "enum", "none|tls", P("none", note="EAP " + _NO)),
    ("groundhog", "str", P(_NO_VALUES, note="a Libreswan test-suite knob")),
])

CONN_KEYS: dict[str, KeyDef] = _table([
    # keep: tests/ike/test_lifecycle.py::test_auto_keep_revives_once_the_peer_brought_it_up
    ("auto", "enum", "ignore|add|start|up|route|ondemand|keep",
     W("tests/daemon/test_ondemand.py::test_route_first_ping_brings_it_up_without_loss")),
    ("also", "str", W(T_CFG + "test_basic_file_resolves_default_and_also")),
    ("ike", "proposal:IKE", W(T_EST + "test_configured_proposals")),
    ("hostaddrfamily", "enum", "ipv4|ipv6|v4|inet|v6|inet6",
     W("tests/daemon/test_resolver.py::test_hostaddrfamily_picks_the_family")),
    ("clientaddrfamily", "enum", "ipv4|ipv6|v4|inet|v6|inet6",
     W("tests/config/test_cfg_registry.py::test_address_family_keys")),
    ("type", "enum", "tunnel|transport|passthrough|pass|drop|reject",
     W("tests/daemon/test_ondemand.py::test_shunts_inside_a_routed_subnet")),
    # every value works; never only in a shunt conn (parser._never_refusal)
    ("authby", "authby", W(T_CERT + "test_certificates_through_an_intermediate")),
    ("keyexchange", "enum", "ike|ikev1|ikev2",
     P("ike|ikev2", T_EST + "test_default_proposals_establish", _IKEV1)),
    ("ikev2", "enum", "never|propose|permit|insist|yes|no|true|false|on|off|y|n|always",
     P("propose|insist|yes|true|on|y|always", T_EST + "test_default_proposals_establish",
       _IKEV1)),
    ("ppk", "enum", "never|permit|propose|insist|yes|no|true|false|on|off|y|n|always",
     W(T_PPK + "test_ppk_mode_pairs")),
    ("ppk-ids", "str", W(T_PPK + "test_ppk_ids_pick_the_ppk")),
    ("intermediate", "bool", W("tests/ike/test_intermediate.py::"
                               "test_intermediate_yes_runs_one_empty_exchange")),
    ("esn", "enum", "yes|no|either|true|false|on|off|y|n",
     W(T_UNITS + "test_esp_esn_and_pfs")),
    ("decap-dscp", "bool", W(T_DSCP + "test_dscp_and_pmtu_flags_reach_the_xfrm_sas")),
    ("encap-dscp", "bool", W(T_DSCP + "test_dscp_and_pmtu_flags_reach_the_xfrm_sas")),
    ("nopmtudisc", "bool", W(T_DSCP + "test_dscp_and_pmtu_flags_reach_the_xfrm_sas")),
    ("fragmentation", "enum", "yes|no|force|never|insist|true|false|on|off|y|n",
     W(T_LIFE + "test_fragmentation_round_trip")),
    ("mobike", "bool", W("tests/ike/test_mobike.py::"
                         "test_client_moves_sas_follow_without_a_new_child_sa")),
    ("narrowing", "bool", W(T_EST + "test_narrowing")),
    ("pam-authorize", "bool", P(_NO_VALUES, note=_NO)),
    ("send-redirect", "enum", "yes|no|auto|true|false|on|off|y|n",
     W(T_REDA + "test_redirect_in_ike_auth_lands_on_gateway_b")),
    ("redirect-to", "str", W(T_REDA + "test_redirect_in_ike_auth_lands_on_gateway_b")),
    ("accept-redirect", "bool", W(T_RED + "test_redirect_of_an_established_sa_lands_on_gateway_b")),
    ("accept-redirect-to", "str", W(T_RED + "test_redirect_outside_accept_redirect_to_is_refused")),
    ("pfs", "bool", W(T_UNITS + "test_esp_esn_and_pfs")),
    ("session-resumption", "bool", P(_NO_VALUES, note="RFC 5723 " + _NO)),
    ("nat-keepalive", "bool", W(T_EFF + "test_nat_keepalive_yes_and_no")),
    ("initial-contact", "bool", W("tests/daemon/test_daemon_ops.py::"
                                  "test_initial_contact_default_is_no")),
    ("cisco-unity", "bool", P(_NO_VALUES, note=_NO)),
    ("send-no-esp-tfc", "bool", W(T_TFC + "test_tfc_pads_our_esp_until_the_peer_says_no")),
    ("iptfs", "bool", P(_NO_VALUES, note="IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-fragmentation", "bool", R("IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-packet-size", "bignum", R("IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-max-queue-size", "bignum", R("IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-reorder-window", "bignum", R("IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-init-delay", "time", R("IP-TFS (RFC 9347) " + _NO)),
    ("iptfs-drop-time", "time", R("IP-TFS (RFC 9347) " + _NO)),
    ("fake-strongswan", "bool",
     W(T_EFF + "test_fake_strongswan_sends_strongswans_vendor_id")),
    ("send-vendorid", "bool", W(T_EFF + "test_send_vendorid_sends_our_vendor_id")),
    ("sha2-truncbug", "bool",
     W("tests/daemon/test_userspace_truncbug.py::test_sha2_truncbug_cuts_the_esp_icv_to_96_bits")),
    ("ms-dh-downgrade", "bool",
     W("tests/ike/test_enforce.py::test_ms_dh_downgrade_lets_a_child_sa_go_without_pfs")),
    ("pfs-rekey-workaround", "bool", P(_NO_VALUES, note=_NO)),
    ("require-id-on-certificate", "bool",
     W(T_CERT + "test_require_id_on_certificate_no_accepts_an_id_the_cert_lacks")),
    # Libreswan 5.2 spells this entry "dns-match-id," (a stray comma), so the
    # documented key is unusable there; pypluto accepts the documented spelling
    ("dns-match-id", "bool", P(_NO_VALUES, note="pypluto does not look the peer's ID up "
                                                "in DNS")),
    ("ipsec-max-bytes", "bignum", W(T_EFF + "test_ipsec_max_bytes_and_packets_are_the_hard_limits")),
    ("ipsec-lifetime", "time", W(T_LIFE + "test_rekey_child_by_lifetime")),
    ("keylife", "time", "=ipsec-lifetime"),
    ("lifetime", "time", "=ipsec-lifetime"),
    ("salifetime", "time", "=ipsec-lifetime"),
    ("ipsec-max-packets", "bignum", W(T_EFF + "test_ipsec_max_bytes_and_packets_are_the_hard_limits")),
    ("retransmit-timeout", "time", W(T_EFF + "test_retransmit_interval_and_timeout")),
    ("retransmit-interval", "ms", W(T_EFF + "test_retransmit_interval_and_timeout")),
    ("ikepad", "enum", "yes|no|auto|true|false|on|off|y|n",
     _S("works", T_V1 + "test_ikepad_is_ignored_with_libreswans_warning",
        note=_V1_IGNORED + " with a warning (IKEv2 connection ignores ikepad=...)")),
    ("nat-ikev1-method", "enum", "drafts|rfc|both|none",
     _S("works", T_V1 + "test_ikev1_only_keys_load_silently", note=_V1_IGNORED)),
    ("policy-label", "str", "=sec-label"),
    ("sec-label", "str", R("labeled IPsec " + _NO)),
    ("remote-peer-type", "enum", "cisco", R(_V1_CP)),
    ("remote_peer_type", "enum", "cisco", "=remote-peer-type"),
    ("nm-configured", "bool", P(_NO_VALUES, note="NetworkManager integration " + _NO)),
    ("xauthby", "enum", "file|pam|alwaysok",
     _S("works", T_V1 + "test_ikev1_only_keys_load_silently", note=_V1_IGNORED)),
    ("xauthfail", "enum", "hard|soft",
     _S("works", T_V1 + "test_ikev1_only_keys_load_silently", note=_V1_IGNORED)),
    # IKEv2 has one way: the client asks in its IKE_AUTH (CFG_REQUEST, RFC 7296 §3.15);
    # Libreswan 5.2 reads the key for IKEv1 only and loads it on IKEv2 conns
    ("modecfgpull", "bool", W("tests/ike/test_libreswan_pools.py::"
                              "test_modecfgpull_yes_is_the_ikev2_client_request")),
    ("modecfgdns", "str", W(T_RW + "test_client_gets_an_address_dns_and_the_selectors_follow")),
    ("modecfgdomains", "str", W(T_RW + "test_modecfgdomains_and_split_subnets_reach_the_cfg_reply")),
    ("modecfgbanner", "str", R("IKEv2 has no banner attribute (RFC 7296 §3.15.1); the "
                               "banner is IKEv1 ModeConfig, which pypluto does not speak")),
    ("ignore-peer-dns", "bool", W("tests/ike/test_roadwarrior.py::"
                                  "test_ignore_peer_dns_drops_the_gateways_dns_and_domains")),
    # XFRMA_MARK on the SAs and policies (--use-xfrm); other planes refuse the conn
    ("mark", "str", W(T_MARK)),
    ("mark-in", "str", W(T_MARK)),
    ("mark-out", "str", W(T_MARK)),
    # a VTI device (ip_vti / ip6_vti) keyed by the marks (--use-xfrm; daemon/vti.py)
    ("vti-interface", "str", W(T_VTI + "test_vti_pair_routes_traffic_through_the_device")),
    ("vti-routing", "bool", W(T_VTI + "test_vti_routing_no_adds_no_route")),
    ("vti-shared", "bool", W(T_VTI + "test_vti_shared_device_outlives_one_conn")),
    ("ipsec-interface", "str", _S("works", T_XIF_PAIR, note="`0` is refused (pypluto "
                                  "numbers its ipsecN devices from 1; Libreswan 5.2 makes "
                                  "ipsec0 with if_id 16384)")),
    ("nic-offload", "enum", "yes|no|auto|packet|crypto", P("no", note="NIC offload " + _NO)),
    ("encapsulation", "enum", "auto|yes|no|true|false|on|off|y|n",
     W(T_LIFE + "test_encapsulation_yes_without_nat")),
    ("overlapip", "bool", P(_NO_VALUES, note=_NO)),
    ("reauth", "bool", W(T_LIFE + "test_reauth_make_before_break")),
    ("rekey", "bool", W(T_LIFE + "test_child_expires_without_rekey")),
    ("rekeymargin", "time", W(T_LIFE + "test_rekey_child_by_lifetime")),
    ("rekeyfuzz", "percent", W(T_LIFE + "test_rekey_ike_by_lifetime")),
    ("keyingtries", "str", O("Libreswan 5.2 warns 'keyingtries=N ignored': an up "
                             "connection (auto=start|up) tries until it is taken down "
                             "(keyingtries=%forever behaves the same); an on-demand one "
                             "(auto=route|ondemand) does not retry: it goes back to its "
                             "trap (with failureshunt= on the flow for shuntlifetime=) and "
                             "the next packet tries again")),
    ("replay-window", "int", W(T_EFF + "test_replay_window_reaches_the_sas")),
    ("ikelifetime", "time", W(T_LIFE + "test_rekey_ike_by_lifetime")),
    ("failureshunt", "enum", "none|passthrough|drop|hold|reject",
     P("none|passthrough|drop|reject", T_ODS + "test_shunts_of_a_trap_whose_peer_never_answers",
       "a bare shunt on the acquire's flow for shuntlifetime=, both planes; hold is "
       "refused (XFRM has no hold action)")),
    ("negotiationshunt", "enum", "passthrough|drop|hold",
     W(T_ODS + "test_shunts_of_a_trap_whose_peer_never_answers")),
    ("enable-tcp", "enum", "no|yes|fallback", P("no", note="IKE over TCP (RFC 8229) " + _NO)),
    ("tcp-remoteport", "int", R("IKE over TCP (RFC 8229) " + _NO)),
    ("connalias", "str", W("tests/daemon/test_daemon_subnets.py::"
                           "test_whack_on_a_connalias_acts_on_its_conns")),
    ("esp", "proposal:ESP", W(T_EST + "test_configured_proposals")),
    ("ah", "proposal:AH", W(T_AH + "test_ah_configured_integ")),
    ("phase2alg", "proposal:ESP", "=esp"),
    ("phase2", "enum", "esp|ah|default", W(T_AH + "test_ah_child_sa_in_ike_auth")),
    ("compress", "bool", P(_NO_VALUES, note="IPComp (RFC 3173) " + _NO)),
    ("metric", "int", W(T_MTU + "test_mtu_and_metric_ride_on_the_tunnel_route")),
    ("dpddelay", "time", W(T_LIFE + "test_dead_peer_detected_by_liveness")),
    ("ikev1-dpdtimeout", "time", O("IKEv2 ignores dpdtimeout= (Libreswan 5.2 warns the "
                                   "same): use dpddelay= and retransmit-timeout=")),
    ("dpdtimeout", "time", "=ikev1-dpdtimeout"),
    ("dpdaction", "str", O("Libreswan 5.2 ignores dpdaction=: after a liveness failure "
                           "a conn with auto=start is restarted and the others are "
                           "deleted (dpdaction=restart on an auto=add conn no longer "
                           "restarts it)")),
    ("sendca", "enum", "none|issuer|all", W(T_CERT + "test_sendca_chooses_the_ca_certificates")),
    ("mtu", "int", W(T_MTU + "test_mtu_and_metric_ride_on_the_tunnel_route")),
    ("priority", "int", W(T_EFF + "test_priority_orders_the_policies_on_both_planes")),
    ("tfc", "int", W(T_TFC + "test_tfc_pads_our_esp_until_the_peer_says_no")),
    ("reqid", "int", W(T_EFF + "test_reqid_is_the_child_sas_reqid")),
    ("nflog", "int", W("tests/daemon/test_userspace_nflog.py::"
                       "test_nflog_copies_the_cleartext_to_the_group")),
    ("aggressive", "bool", P(_NO_VALUES, note=_IKEV1)),
    ("aggrmode", "bool", "=aggressive"),
    ("debug", "list", W(T_D + "test_per_connection_debugging")),
    ("plutodebug", "list", "=debug"),
])


def lookup_setup(key: str) -> KeyDef | None:
    return SETUP_KEYS.get(key.lower())


@functools.lru_cache(maxsize=2048)
def lookup_conn(key: str) -> tuple[KeyDef, str | None, str] | None:
    """(definition, side or None, canonical key as written with the side prefix)."""
    low = key.lower()
    kd = CONN_KEYS.get(low)
    if kd is not None:
        return kd, None, kd.alias or kd.name
    for side in ("left", "right"):
        if low.startswith(side):
            rest = low[len(side):]
            sk = SIDE_KEYS.get(rest)
            if sk is not None:
                return sk, side, side + (sk.alias or sk.name)
    if low in BOTH_SIDES:
        sk = SIDE_KEYS[low]
        return sk, "both", "both" + (sk.alias or sk.name)
    return None


# end keys that may be written without left/right: they set both ends
BOTH_SIDES = {"protoport", "sendcert", "updown", "ikeport", "cat", "autheap"}


def unsupported_reason(kd: KeyDef, value: str) -> str | None:
    """Why ``KEY=value`` is refused (None when pypluto supports it).

    The message names the key only for a refused key, and key=value for a value
    that a partial key does not support (issue 12 item 7).
    """
    if kd.support == "refused":
        return kd.note or _NO
    if kd.support == "partial" and not _value_ok(kd, value):
        return kd.note or _NO
    return None


def _value_ok(kd: KeyDef, value: str) -> bool:
    from pypluto.config.values import parse_bool, parse_duration

    low = value.strip().lower()
    if low in kd.ok:
        return True
    if any(v.endswith("*") and low.startswith(v[:-1]) for v in kd.ok):  # prefixes: 0s*
        return True
    try:
        if kd.kind == "bool":
            return parse_bool(low, kd.name) in {parse_bool(v) for v in kd.ok}
        if kd.kind == "time":
            return parse_duration(low, kd.name) in {parse_duration(v) for v in kd.ok}
        if kd.kind in ("int", "bignum"):
            return int(low, 0) in {int(v, 0) for v in kd.ok}
    except ValueError:
        return False
    return False


# --------------------------------------------------------------------------------------
# the table of docs/config.md

def _rows(title: str, table: dict[str, KeyDef], prefix: str = "") -> list[str]:
    out = [f"### {title}", "", "| key | support | values that work | proof / note |",
           "|---|---|---|---|"]
    for name in sorted(table):
        kd = table[name]
        key = f"`{prefix}{name}`" if name or prefix else "`left` / `right`"
        if kd.alias:
            out.append(f"| {key} | alias of `{prefix}{kd.alias}` | | |")
            continue
        ok = ", ".join(f"`{v}`" for v in kd.ok) if kd.support == "partial" else (
            "all" if kd.support == "works" else "")
        if kd.support == "works":
            what = f"`{kd.test}`" + (f"; {kd.note}" if kd.note else "")
        elif kd.support == "partial":
            what = f"`{kd.test}`" + (f"; other values: {kd.note}" if kd.note else "")
        else:
            what = kd.note
        label = {"works": "works", "partial": "some values", "obsolete": "obsolete (warning)",
                 "refused": "not supported"}[kd.support]
        out.append(f"| {key} | {label} | {ok} | {what} |")
    return out + [""]


def markdown_table() -> str:
    """The keyword table of docs/config.md (generated; a test compares the two)."""
    lines = ["<!-- generated by: python -m pypluto.config.keywords --markdown -->", ""]
    lines += _rows("config setup", SETUP_KEYS)
    lines += _rows("conn", CONN_KEYS)
    lines += _rows("conn: left / right end keys (shown as left; right is the same)",
                   SIDE_KEYS, "left")
    lines.append("<!-- end of generated table -->")
    return "\n".join(lines) + "\n"


def write_docs(path: str) -> None:
    """Replace the generated table in ``path`` (docs/config.md) with the current one."""
    begin = "<!-- generated by: python -m pypluto.config.keywords --markdown -->"
    end = "<!-- end of generated table -->\n"
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    i, j = doc.index(begin), doc.index(end) + len(end)
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc[:i] + markdown_table() + doc[j:])


def main(argv: list[str]) -> int:
    if argv == ["--markdown"]:
        sys.stdout.write(markdown_table())
        return 0
    if len(argv) == 2 and argv[0] == "--write":
        write_docs(argv[1])
        return 0
    print("usage: python -m pypluto.config.keywords --markdown | --write docs/config.md",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
