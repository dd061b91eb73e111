"""Libreswan 5.2's ``total.*`` lines of ``whack --globalstatus``, from our counters.

The keys, and their order, are Libreswan 5.2's (``tests/daemon/
test_status_libreswan52.py`` compares them with 5.2's own output); the values
come from the engine's :class:`pypluto.ike.stats.EngineStats` (snapshot key
``totals``) and the daemon's counters (snapshot key ``counters``: IKE bytes,
bytes of deleted Child SAs).  Counters of what pypluto does not have (IKEv1,
IPComp, TFC, PAM, IKE over TCP) are printed as Libreswan prints them on a
daemon that never used them: 0, which is what they are here.

Left out: Libreswan's ``total.total.pluto.stf.*`` lines, which count the
results of its internal state-transition functions; pypluto has no such
functions and no honest number to put there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pypluto.iana import NotifyType

# IKEv2 transform names as Libreswan prints them, by IANA transform ID (RFC 7296 §3.3.2)
IKE_ENCR = ((3, "3DES"), (4, "RC5"), (5, "IDEA"), (6, "CAST"), (7, "BLOWFISH"), (8, "3IDEA"),
            (9, "DES_IV32"), (11, "NULL"), (12, "AES_CBC"), (13, "AES_CTR"), (14, "AES_CCM_8"),
            (15, "AES_CCM_12"), (16, "AES_CCM_16"), (18, "AES_GCM_8"), (19, "AES_GCM_12"),
            (20, "AES_GCM_16"), (21, "NULL_AUTH_AES_GMAC"), (23, "CAMELLIA_CBC"),
            (24, "CAMELLIA_CTR"), (25, "CAMELLIA_CCM_8"), (26, "CAMELLIA_CCM_12"),
            (27, "CAMELLIA_CCM_16"), (28, "CHACHA20_POLY1305"))
IKE_INTEG = ((1, "HMAC_MD5_96"), (2, "HMAC_SHA1_96"), (3, "DES_MAC"), (4, "KPDK_MD5"),
             (5, "AES_XCBC_96"), (6, "HMAC_MD5_128"), (7, "HMAC_SHA1_160"), (8, "AES_CMAC_96"),
             (9, "AES_128_GMAC"), (10, "AES_192_GMAC"), (11, "AES_256_GMAC"),
             (12, "HMAC_SHA2_256_128"), (13, "HMAC_SHA2_384_192"), (14, "HMAC_SHA2_512_256"))
GROUPS = ((0, "NONE"), (5, "MODP1536"), (14, "MODP2048"), (15, "MODP3072"), (16, "MODP4096"),
          (17, "MODP6144"), (18, "MODP8192"), (19, "DH19"), (20, "DH20"), (21, "DH21"),
          (31, "DH31"))
ESP_ENCR = ((16, "AES_CCM_16"), (15, "AES_CCM_12"), (14, "AES_CCM_8"), (3, "3DES_CBC"),
            (24, "CAMELLIA_CTR"), (23, "CAMELLIA_CBC"), (20, "AES_GCM_16"), (19, "AES_GCM_12"),
            (18, "AES_GCM_8"), (13, "AES_CTR"), (12, "AES_CBC"), (21, "NULL_AUTH_AES_GMAC"),
            (11, "NULL"), (28, "CHACHA20_POLY1305"))
ESP_INTEG = ((1, "HMAC_MD5_96"), (2, "HMAC_SHA1_96"), (14, "HMAC_SHA2_512_256"),
             (13, "HMAC_SHA2_384_192"), (12, "HMAC_SHA2_256_128"), (5, "AES_XCBC_96"),
             (8, "AES_CMAC_96"), (0, "NONE"))

# IKEv1 (never negotiated by pypluto): the names only, all 0
V1_ENCR = "3DES_CBC CAMELLIA_CTR CAMELLIA_CBC AES_CTR AES_CBC".split()
V1_INTEG = "HMAC_MD5_96 HMAC_SHA1_96 HMAC_SHA2_512_256 HMAC_SHA2_384_192 HMAC_SHA2_256_128".split()
V1_GROUP = [n for _, n in GROUPS[1:]]
V1_IPSEC_ENCR = ("AES_CCM_16 AES_CCM_12 AES_CCM_8 3DES_CBC CAMELLIA_CBC AES_GCM_16 AES_GCM_12 "
                 "AES_GCM_8 AES_CTR AES_CBC NULL_AUTH_AES_GMAC NULL").split()
V1_IPSEC_INTEG = ("HMAC_MD5_96 HMAC_SHA1_96 HMAC_SHA2_512_256 HMAC_SHA2_384_192 "
                  "HMAC_SHA2_256_128 AES_XCBC_96 NONE").split()
V1_NOTIFY_ERRORS = (
    "INVALID_PAYLOAD_TYPE DOI_NOT_SUPPORTED SITUATION_NOT_SUPPORTED INVALID_COOKIE "
    "INVALID_MAJOR_VERSION INVALID_MINOR_VERSION INVALID_EXCHANGE_TYPE INVALID_FLAGS "
    "INVALID_MESSAGE_ID INVALID_PROTOCOL_ID INVALID_SPI INVALID_TRANSFORM_ID "
    "ATTRIBUTES_NOT_SUPPORTED NO_PROPOSAL_CHOSEN BAD_PROPOSAL_SYNTAX PAYLOAD_MALFORMED "
    "INVALID_KEY_INFORMATION INVALID_ID_INFORMATION INVALID_CERT_ENCODING INVALID_CERTIFICATE "
    "CERT_TYPE_UNSUPPORTED INVALID_CERT_AUTHORITY INVALID_HASH_INFORMATION "
    "AUTHENTICATION_FAILED INVALID_SIGNATURE ADDRESS_NOTIFICATION NOTIFY_SA_LIFETIME "
    "CERTIFICATE_UNAVAILABLE UNSUPPORTED_EXCHANGE_TYPE UNEQUAL_PAYLOAD_LENGTHS").split()

# IKEv2 notify types Libreswan counts by name (RFC 7296 §3.10.1 and later RFCs); the
# rest go to "other"
V2_NOTIFY_ERRORS = (
    "UNSUPPORTED_CRITICAL_PAYLOAD INVALID_IKE_SPI INVALID_MAJOR_VERSION INVALID_SYNTAX "
    "INVALID_MESSAGE_ID INVALID_SPI NO_PROPOSAL_CHOSEN INVALID_KE_PAYLOAD "
    "AUTHENTICATION_FAILED SINGLE_PAIR_REQUIRED NO_ADDITIONAL_SAS INTERNAL_ADDRESS_FAILURE "
    "FAILED_CP_REQUIRED TS_UNACCEPTABLE INVALID_SELECTORS UNACCEPTABLE_ADDRESSES "
    "UNEXPECTED_NAT_DETECTED USE_ASSIGNED_HoA TEMPORARY_FAILURE CHILD_SA_NOT_FOUND "
    "INVALID_GROUP_ID AUTHORIZATION_FAILED STATE_NOT_FOUND").split()
V2_NOTIFY_STATUS = (
    "INITIAL_CONTACT SET_WINDOW_SIZE ADDITIONAL_TS_POSSIBLE IPCOMP_SUPPORTED "
    "NAT_DETECTION_SOURCE_IP NAT_DETECTION_DESTINATION_IP COOKIE USE_TRANSPORT_MODE "
    "HTTP_CERT_LOOKUP_SUPPORTED REKEY_SA ESP_TFC_PADDING_NOT_SUPPORTED NON_FIRST_FRAGMENTS_ALSO "
    "MOBIKE_SUPPORTED ADDITIONAL_IP4_ADDRESS ADDITIONAL_IP6_ADDRESS NO_ADDITIONAL_ADDRESSES "
    "UPDATE_SA_ADDRESSES COOKIE2 NO_NATS_ALLOWED AUTH_LIFETIME MULTIPLE_AUTH_SUPPORTED "
    "ANOTHER_AUTH_FOLLOWS REDIRECT_SUPPORTED REDIRECT REDIRECTED_FROM TICKET_LT_OPAQUE "
    "TICKET_REQUEST TICKET_ACK TICKET_NACK TICKET_OPAQUE LINK_ID USE_WESP_MODE ROHC_SUPPORTED "
    "EAP_ONLY_AUTHENTICATION CHILDLESS_IKEV2_SUPPORTED QUICK_CRASH_DETECTION "
    "IKEV2_MESSAGE_ID_SYNC_SUPPORTED IPSEC_REPLAY_COUNTER_SYNC_SUPPORTED IKEV2_MESSAGE_ID_SYNC "
    "IPSEC_REPLAY_COUNTER_SYNC SECURE_PASSWORD_METHODS PSK_PERSIST PSK_CONFIRM ERX_SUPPORTED "
    "IFOM_CAPABILITY SENDER_REQUEST_ID IKEV2_FRAGMENTATION_SUPPORTED SIGNATURE_HASH_ALGORITHMS "
    "CLONE_IKE_SA_SUPPORTED CLONE_IKE_SA PUZZLE USE_PPK PPK_IDENTITY NO_PPK_AUTH "
    "INTERMEDIATE_EXCHANGE_SUPPORTED IP4_ALLOWED IP6_ALLOWED ADDITIONAL_KEY_EXCHANGE "
    "USE_AGGFRAG").split()


def _ids(counts: dict[Any, int]) -> dict[int, int]:
    """JSON turns int keys into strings; take them back."""
    return {int(k): int(v) for k, v in counts.items()}


def _by_id(prefix: str, table: Iterable[tuple[int, str]], counts: dict[int, int]) -> list[str]:
    return [f"{prefix}.{name}={counts.get(i, 0)}" for i, name in table]


def _zeros(prefix: str, names: Iterable[str]) -> list[str]:
    return [f"{prefix}.{n}=0" for n in names]


def _notifies(prefix: str, counts: dict[int, int], names: list[str], errors: bool) -> list[str]:
    ids = [int(NotifyType[n]) for n in names]
    out = [f"{prefix}.{n}={counts.get(i, 0)}" for n, i in zip(names, ids, strict=True)]
    known = set(ids)
    other = sum(v for k, v in counts.items() if k not in known and (k < 16384) == errors)
    return out + [f"{prefix}.other={other}"]


def total_lines(snap: dict[str, Any]) -> list[str]:
    """Libreswan 5.2's ``total.*`` lines (without its ``total.total.pluto.stf.*``)."""
    t = snap.get("totals") or {}
    c = snap.get("counters") or {}
    ev: dict[str, int] = t.get("events", {})
    e = ev.get
    gone: dict[str, int] = c.get("ipsec_bytes_gone", {})
    live: dict[str, int] = {}
    for ike in snap["engine"]["ike_sas"]:
        for ch in ike["children"]:
            proto = ch.get("protocol", "esp")
            live[f"{proto}.in"] = live.get(f"{proto}.in", 0) + int(ch["in_bytes"])
            live[f"{proto}.out"] = live.get(f"{proto}.out", 0) + int(ch["out_bytes"])

    def traffic(proto: str, d: str) -> int:
        return gone.get(f"{proto}.{d}", 0) + live.get(f"{proto}.{d}", 0)

    n_esp, n_ah = e("ipsec.esp", 0), e("ipsec.ah", 0)
    cookies_fast = int((snap["engine"].get("dos") or {}).get("cookies_sent", 0))
    sent = _ids(t.get("notify_sent", {}))
    sent[int(NotifyType.COOKIE)] = sent.get(int(NotifyType.COOKIE), 0) + cookies_fast
    recv = _ids(t.get("notify_recv", {}))
    ike_est = e("ike.established", 0)
    lines = [
        f"total.ipsec.type.all={n_esp + n_ah}",
        f"total.ipsec.type.esp={n_esp}",
        f"total.ipsec.type.ah={n_ah}",
        "total.ipsec.type.ipcomp=0",
        f"total.ipsec.type.esn={e('ipsec.esn', 0)}",
        "total.ipsec.type.tfc=0",
        f"total.ipsec.type.encap={e('ipsec.encap', 0)}",
        f"total.ipsec.type.non_encap={e('ipsec.non_encap', 0)}",
        f"total.ipsec.traffic.in={traffic('esp', 'in') + traffic('ah', 'in')}",
        f"total.ipsec.traffic.out={traffic('esp', 'out') + traffic('ah', 'out')}",
        f"total.ipsec.esp.traffic.in={traffic('esp', 'in')}",
        f"total.ipsec.esp.traffic.out={traffic('esp', 'out')}",
        f"total.ipsec.ah.traffic.in={traffic('ah', 'in')}",
        f"total.ipsec.ah.traffic.out={traffic('ah', 'out')}",
        "total.ipsec.ipcomp.traffic.in=0",
        "total.ipsec.ipcomp.traffic.out=0",
        f"total.ike.ikev2.established={ike_est}",
        f"total.ike.ikev2.failed={e('ike.failed', 0)}",
        f"total.ike.ikev2.completed={e('ike.finished', 0)}",
        f"total.ike.ikev2.redirect.completed={e('redirect.completed', 0)}",
        f"total.ike.ikev2.redirect.failed={e('redirect.failed', 0)}",
        "total.ike.ikev1.established=0",
        "total.ike.ikev1.failed=0",
        "total.ike.ikev1.completed=0",
        *_zeros("total.ikev1.isakmp", ("started", "established", "finished")),
        *_zeros("total.ikev1.ipsec", ("started", "established", "finished")),
        f"total.ikev2.ike.started={e('ike.started', 0)}",
        f"total.ikev2.ike.established={ike_est}",
        f"total.ikev2.ike.finished={e('ike.finished', 0)}",
        f"total.ikev2.child.started={e('child.started', 0)}",
        f"total.ikev2.child.established={e('child.established', 0)}",
        f"total.ikev2.child.finished={e('child.finished', 0)}",
        f"total.ike.dpd.sent={e('dpd.sent', 0)}",
        f"total.ike.dpd.recv={e('dpd.recv', 0)}",
        f"total.ike.dpd.replied={e('dpd.replied', 0)}",
        f"total.ike.traffic.in={int(c.get('ike_bytes_in', 0))}",
        f"total.ike.traffic.out={int(c.get('ike_bytes_out', 0))}",
        *_zeros("total.pamauth", ("started", "stopped", "aborted")),
        *_zeros("total.iketcp.client", ("started", "stopped", "aborted")),
        *_zeros("total.iketcp.server", ("started", "stopped", "aborted")),
        *_zeros("total.ikev1.encr", V1_ENCR),
        *_zeros("total.ikev1.integ", V1_INTEG),
        *_zeros("total.ikev1.group", V1_GROUP),
        *_by_id("total.ikev2.encr", IKE_ENCR, _ids(t.get("ike_encr", {}))),
        *_by_id("total.ikev2.integ", IKE_INTEG, _ids(t.get("ike_integ", {}))),
        *_by_id("total.ikev2.group", GROUPS, _ids(t.get("ike_group", {}))),
    ]
    ike_ = {(d, role, int(g)): int(n) for d, role, g, n in t.get("invalid_ke", [])}
    for d in ("recv", "sent"):
        for role in ("using", "suggesting"):
            lines += [f"total.ikev2.{d}.invalidke.{role}.{name}={ike_.get((d, role, g), 0)}"
                      for g, name in GROUPS]
    lines += [
        *_zeros("total.ikev1.ipsec.encr", V1_IPSEC_ENCR),
        *_zeros("total.ikev1.ipsec.integ", V1_IPSEC_INTEG),
        *_by_id("total.ikev2.ipsec.encr", ESP_ENCR, _ids(t.get("child_encr", {}))),
        *_by_id("total.ikev2.ipsec.integ", ESP_INTEG, _ids(t.get("child_integ", {}))),
        *_zeros("total.ikev1.sent.notifies.error", V1_NOTIFY_ERRORS),
        *_zeros("total.ikev1.recv.notifies.error", V1_NOTIFY_ERRORS),
        *_notifies("total.ikev2.sent.notifies.error", sent, V2_NOTIFY_ERRORS, True),
        *_notifies("total.ikev2.recv.notifies.error", recv, V2_NOTIFY_ERRORS, True),
        *_notifies("total.ikev2.sent.notifies.status", sent, V2_NOTIFY_STATUS, False),
        *_notifies("total.ikev2.recv.notifies.status", recv, V2_NOTIFY_STATUS, False),
    ]
    return lines
