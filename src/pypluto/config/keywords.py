"""The keys of ``config setup`` and ``conn`` sections (Libreswan 5.x), with aliases.

Each key has a value kind that ``values.py`` validates:

- ``str``: any text; ``bool``: yes/no (also true/false, on/off, 1/0);
- ``int``: a decimal or 0x number; ``time``: a duration (bare = seconds, or with
  ``s``/``m``/``h``/``d``; ``ms`` for the *-interval keys);
- ``ms``: a duration whose bare number means milliseconds;
- ``percent``: ``N%`` (or a bare number); ``enum``: one of ``values``;
- ``list``: words separated by white space or commas (plutodebug=);
- ``proposal:IKE|ESP|AH``; ``addr``: an end's host (``left=``);
- ``subnet`` / ``subnets``; ``id``; ``protoport``; ``addrs`` (sourceip=);
- ``obsolete``: accepted with a warning and ignored;
- ``cmdline``: only valid on pluto's command line (warned about and ignored here).

``alias`` points at the canonical name, so the typed objects see one name only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class KeyDef:
    name: str
    kind: str
    values: tuple[str, ...] = ()
    alias: str | None = None  # canonical name when this is an alias


_YN = ("yes", "no")


def _table(rows: list[tuple[str, ...]]) -> dict[str, KeyDef]:
    out: dict[str, KeyDef] = {}
    for row in rows:
        name, kind = row[0], row[1]
        values: tuple[str, ...] = ()
        alias: str | None = None
        for extra in row[2:]:
            if extra.startswith("="):
                alias = extra[1:]
            else:
                values = tuple(extra.split("|"))
        out[name] = KeyDef(name, kind, values, alias)
    return out


SETUP_KEYS: dict[str, KeyDef] = _table([
    ("logfile", "str"),
    ("logtime", "bool"),
    ("logappend", "bool"),
    ("logip", "bool"),
    ("audit-log", "bool"),
    ("plutodebug", "list"),
    ("dumpdir", "str"),
    ("ipsecdir", "str"),
    ("nssdir", "str"),
    ("secretsfile", "str"),
    ("statsbin", "str"),
    ("uniqueids", "bool"),
    ("shuntlifetime", "time"),
    ("expire-shunt-interval", "time"),
    ("crl-strict", "bool"),
    ("crlcheckinterval", "time"),
    ("ocsp-strict", "bool"),
    ("ocsp-enable", "bool"),
    ("ocsp-uri", "str"),
    ("ocsp-timeout", "time"),
    ("ocsp-trustname", "str"),
    ("ocsp-cache-size", "int"),
    ("ocsp-cache-min-age", "time"),
    ("ocsp-cache-max-age", "time"),
    ("ocsp-method", "enum", "get|post"),
    ("crl-timeout", "time"),
    ("curl-timeout", "time", "=crl-timeout"),
    ("seccomp", "enum", "enabled|disabled|tolerant"),
    ("expire-lifetime", "time"),
    ("xfrmlifetime", "time", "=expire-lifetime"),
    ("dns-resolver", "str"),
    ("ddos-mode", "enum", "auto|busy|unlimited"),
    ("ddos-ike-threshold", "int"),
    ("max-halfopen-ike", "int"),
    ("seedbits", "int"),
    ("keep-alive", "time"),
    ("listen", "str"),
    ("listen-tcp", "bool"),
    ("listen-udp", "bool"),
    ("protostack", "enum", "xfrm|netkey|native|auto|bsd|kame|bsdkame|none|klips|mast"),
    ("nhelpers", "bignum"),
    ("drop-oppo-null", "bool"),
    ("virtual-private", "str"),
    ("myvendorid", "str"),
    ("ipsec-interface-managed", "bool"),
    ("global-redirect", "enum", "yes|no|auto"),
    ("global-redirect-to", "str"),
    ("ikev1-policy", "enum", "accept|reject|drop"),
    ("dnssec-enable", "bool"),
    ("dnssec-rootkey-file", "str"),
    ("dnssec-anchors", "str"),
    ("nflog-all", "int"),
    ("ike-socket-bufsize", "int"),
    ("ike-socket-errqueue", "bool"),
    # obsolete: warn and ignore (Libreswan keeps them so old files still load)
    ("interfaces", "obsolete"),
    ("oe", "obsolete"),
    ("nat_traversal", "obsolete"),
    ("klipsdebug", "obsolete"),
    ("plutofork", "obsolete"),
    ("force_keepalive", "obsolete"),
    ("disable_port_floating", "obsolete"),
    ("hidetos", "obsolete"),
    ("overridemtu", "obsolete"),
    ("fragicmp", "obsolete"),
    ("perpeerlog", "obsolete"),
    ("perpeerlogdir", "obsolete"),
    ("plutorestartoncrash", "obsolete"),
    ("curl-iface", "str"),
    ("curl_iface", "obsolete"),
    ("myid", "obsolete"),
    ("force-busy", "obsolete"),
    ("force_busy", "obsolete"),
    ("curl_timeout", "obsolete"),
    # obsolete in 5.x (were keys or aliases in 4.x): warned about and ignored
    ("syslog", "obsolete"),
    ("plutostderrlog", "obsolete"),
    ("plutostderrlogtime", "obsolete"),
    ("virtual_private", "obsolete"),
    ("ikev1-secctx-attr-type", "obsolete"),
    ("secctx-attr-type", "obsolete"),
    ("secctx_attr_type", "obsolete"),
    ("crl_strict", "obsolete"),
    ("strictcrlpolicy", "obsolete"),
    ("ocsp_strict", "obsolete"),
    ("ocsp_enable", "obsolete"),
    ("ocsp_uri", "obsolete"),
    ("ocsp_timeout", "obsolete"),
    ("ocsp_trust_name", "obsolete"),
    ("ddos-ike-treshold", "obsolete"),
    ("ikeport", "obsolete"),
    ("nat-ikeport", "obsolete"),
    ("nat_ikeport", "obsolete"),
    ("keep_alive", "obsolete"),
    ("log-audit", "obsolete"),
    ("nflog-all-obsolete", "obsolete"),
    # only valid on pluto's command line
    ("rundir", "cmdline"),
    ("logstderr", "cmdline"),
])

# keys written as left<KEY> / right<KEY>; "" is left= / right= itself
SIDE_KEYS: dict[str, KeyDef] = _table([
    ("", "addr"),
    ("id", "id"),
    ("cert", "str"),
    ("ckaid", "str"),
    ("ca", "str"),
    ("sendcert", "enum", "never|sendifasked|alwayssend|always|ifasked|yes|no"),
    ("subnet", "subnet"),
    ("subnets", "subnets"),
    ("sourceip", "addrs"),
    ("nexthop", "str"),
    ("updown", "str"),
    ("protoport", "protoport"),
    ("rsasigkey", "str"),
    ("rsasigkey2", "obsolete"),
    ("ecdsakey", "str"),
    ("eddsakey", "str"),
    ("pubkey", "str"),
    ("auth", "enum", "psk|secret|rsasig|rsa|ecdsa|null|eaponly|never|eddsa"),
    ("autheap", "enum", "none|tls"),
    ("xauthserver", "bool"),
    ("xauthclient", "bool"),
    ("username", "str"),
    ("xauthusername", "str", "=username"),
    ("xauthname", "obsolete"),
    ("modecfgserver", "bool"),
    ("modecfgclient", "bool"),
    ("addresspool", "str"),
    ("ikeport", "int"),
    ("vti", "str"),
    ("interface-ip", "str"),
    ("cat", "bool"),
    ("groundhog", "bool"),
    ("firewall", "obsolete"),
    ("eddsakey", "obsolete"),
])

CONN_KEYS: dict[str, KeyDef] = _table([
    ("also", "str"),
    ("auto", "enum", "ignore|add|start|up|route|ondemand|keep"),
    ("type", "enum", "tunnel|transport|passthrough|pass|drop|reject"),
    ("authby", "authby"),
    ("keyexchange", "enum", "ike|ikev1|ikev2"),
    ("ikev2", "enum", "yes|no|never|permit|propose|insist|always"),
    ("ike", "proposal:IKE"),
    ("esp", "proposal:ESP"),
    ("ah", "proposal:AH"),
    ("phase2alg", "proposal:ESP", "=esp"),
    ("phase2", "enum", "esp|ah|ah+esp|default"),
    ("pfs", "bool"),
    ("pfsgroup", "obsolete"),
    ("compress", "bool"),
    ("ipsec-lifetime", "time"),
    ("salifetime", "time", "=ipsec-lifetime"),
    ("lifetime", "time", "=ipsec-lifetime"),
    ("keylife", "time", "=ipsec-lifetime"),
    ("ikelifetime", "time"),
    ("rekeymargin", "time"),
    ("rekeyfuzz", "percent"),
    ("rekey", "bool"),
    ("reauth", "bool"),
    ("keyingtries", "obsolete"),
    ("retransmit-interval", "ms"),
    ("retransmit-timeout", "time"),
    ("replay-window", "int"),
    ("ipsec-max-bytes", "bignum"),
    ("ipsec-max-packets", "bignum"),
    ("dpddelay", "time"),
    ("ikev1-dpdtimeout", "time"),
    ("dpdtimeout", "time", "=ikev1-dpdtimeout"),
    ("dpdaction", "obsolete"),
    ("fragmentation", "enum", "yes|no|never|force|insist"),
    ("ike_frag", "obsolete"),
    ("mobike", "bool"),
    ("narrowing", "bool"),
    ("encapsulation", "enum", "auto|yes|no"),
    ("forceencaps", "obsolete"),
    ("nat-keepalive", "bool"),
    ("initial-contact", "bool"),
    ("send-vendorid", "bool"),
    ("fake-strongswan", "bool"),
    ("mark", "str"),
    ("mark-in", "str"),
    ("mark-out", "str"),
    ("reqid", "int"),
    ("ppk", "enum", "yes|no|never|permit|propose|insist|always"),
    ("ppk-ids", "str"),
    ("esn", "enum", "yes|no|either"),
    ("nic-offload", "enum", "yes|no|auto|packet|crypto"),
    ("sareftrack", "obsolete"),
    ("decap-dscp", "bool"),
    ("encap-dscp", "bool"),
    ("nopmtudisc", "bool"),
    ("ipsec-interface", "str"),
    ("vti-interface", "str"),
    ("vti-routing", "bool"),
    ("vti-shared", "bool"),
    ("ikepad", "enum", "yes|no|auto"),
    ("aggressive", "bool"),
    ("aggrmode", "bool", "=aggressive"),
    ("xauthby", "enum", "file|pam|alwaysok"),
    ("xauthfail", "enum", "hard|soft"),
    ("modecfgpull", "bool"),
    ("modecfgdns", "str"),
    ("modecfgdns1", "obsolete"),
    ("modecfgdns2", "obsolete"),
    ("modecfgdomains", "str"),
    ("modecfgdomain", "obsolete"),
    ("modecfgbanner", "str"),
    ("modecfgwins1", "obsolete"),
    ("modecfgwins2", "obsolete"),
    ("cisco-unity", "bool"),
    ("cisco-split", "bool"),
    ("remote-peer-type", "enum", "cisco|ietf"),
    ("remote_peer_type", "enum", "cisco|ietf", "=remote-peer-type"),
    ("nm-configured", "bool"),
    ("nm_configured", "obsolete"),
    ("sha2-truncbug", "bool"),
    ("sha2_truncbug", "obsolete"),
    ("ms-dh-downgrade", "bool"),
    ("require-id-on-certificate", "bool"),
    ("ignore-peer-dns", "bool"),
    ("sec-label", "str"),
    ("policy-label", "str", "=sec-label"),
    ("labeled-ipsec", "obsolete"),
    ("metric", "int"),
    ("mtu", "int"),
    ("priority", "int"),
    ("tfc", "int"),
    ("iptfs", "bool"),
    ("iptfs-fragmentation", "bool"),
    ("iptfs-packet-size", "int"),
    ("iptfs-max-queue-size", "int"),
    ("iptfs-reorder-window", "int"),
    ("iptfs-init-delay", "time"),
    ("iptfs-drop-time", "time"),
    ("nflog-group", "int"),
    ("nflog", "int", "=nflog-group"),
    ("overlapip", "bool"),
    ("pam-authorize", "bool"),
    ("accept-redirect", "enum", "yes|no"),
    ("accept-redirect-to", "str"),
    ("redirect-to", "str"),
    ("send-redirect", "enum", "yes|no|auto"),
    ("enable-tcp", "enum", "no|yes|fallback"),
    ("tcp-remoteport", "int"),
    ("reject-simultaneous-ike-auth", "bool"),
    ("session-resumption", "bool"),
    ("send-esp-tfc-padding-not-supported", "bool"),
    ("send-no-esp-tfc", "bool", "=send-esp-tfc-padding-not-supported"),
    ("connalias", "str"),
    ("failureshunt", "enum", "none|passthrough|drop|hold|reject"),
    ("negotiationshunt", "enum", "passthrough|drop|hold"),
    ("hostaddrfamily", "enum", "ipv4|ipv6"),
    ("clientaddrfamily", "obsolete"),
    ("connaddrfamily", "obsolete"),
    ("intermediate", "bool"),
    ("ike-sa-init-full-transcript-auth", "bool"),
    ("debug", "list"),
    ("sendca", "enum", "none|issuer|all"),
    ("nat-ikev1-method", "enum", "drafts|rfc|both|none"),
    ("dns-match-id", "bool"),
    ("retransmit", "obsolete"),
    ("share-lease", "bool"),
    ("pfs-rekey-workaround", "bool"),
    ("postquantum-preshared-keys", "obsolete"),
    ("salifetime-soft", "obsolete"),
    ("ike-version", "obsolete"),
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
