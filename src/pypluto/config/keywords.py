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
- ``obsolete``: accepted with a warning and ignored.

``alias`` points at the canonical name, so the typed objects see one name only.
"""

from __future__ import annotations

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
    ("plutostderrlog", "str", "=logfile"),
    ("logtime", "bool"),
    ("plutostderrlogtime", "bool", "=logtime"),
    ("logappend", "bool"),
    ("logip", "bool"),
    ("log-audit", "bool", "=audit-log"),
    ("audit-log", "bool"),
    ("logstderr", "bool"),
    ("plutodebug", "list"),
    ("syslog", "str"),
    ("dumpdir", "str"),
    ("rundir", "str"),
    ("ipsecdir", "str"),
    ("nssdir", "str"),
    ("secretsfile", "str"),
    ("statsbin", "str"),
    ("uniqueids", "bool"),
    ("shuntlifetime", "time"),
    ("expire-shunt-interval", "time"),
    ("crl-strict", "bool"),
    ("crl_strict", "bool", "=crl-strict"),
    ("strictcrlpolicy", "bool", "=crl-strict"),
    ("crlcheckinterval", "time"),
    ("ocsp-strict", "bool"),
    ("ocsp_strict", "bool", "=ocsp-strict"),
    ("ocsp-enable", "bool"),
    ("ocsp_enable", "bool", "=ocsp-enable"),
    ("ocsp-uri", "str"),
    ("ocsp_uri", "str", "=ocsp-uri"),
    ("ocsp-timeout", "time"),
    ("ocsp_timeout", "time", "=ocsp-timeout"),
    ("ocsp-trustname", "str"),
    ("ocsp_trust_name", "str", "=ocsp-trustname"),
    ("ocsp-cache-size", "int"),
    ("ocsp-cache-min-age", "time"),
    ("ocsp-cache-max-age", "time"),
    ("ocsp-method", "enum", "get|post"),
    ("curl-timeout", "time"),
    ("ddos-mode", "enum", "auto|busy|unlimited"),
    ("ddos-ike-threshold", "int"),
    ("ddos-ike-treshold", "int", "=ddos-ike-threshold"),
    ("max-halfopen-ike", "int"),
    ("ikeport", "int"),
    ("nat-ikeport", "int"),
    ("nat_ikeport", "int", "=nat-ikeport"),
    ("seedbits", "int"),
    ("keep-alive", "time"),
    ("keep_alive", "time", "=keep-alive"),
    ("listen", "str"),
    ("listen-tcp", "bool"),
    ("listen-udp", "bool"),
    ("protostack", "enum", "xfrm|netkey|native|auto|bsd|kame|bsdkame|none|klips|mast"),
    ("nhelpers", "bignum"),
    ("drop-oppo-null", "bool"),
    ("virtual-private", "str"),
    ("virtual_private", "str", "=virtual-private"),
    ("myvendorid", "str"),
    ("ipsec-interface-managed", "bool"),
    ("global-redirect", "enum", "yes|no|auto"),
    ("global-redirect-to", "str"),
    ("ikev1-policy", "enum", "accept|reject|drop"),
    ("dnssec-enable", "bool"),
    ("dnssec-rootkey-file", "str"),
    ("dnssec-anchors", "str"),
    ("nflog-all", "int"),
    ("xfrmlifetime", "int"),
    ("secctx-attr-type", "int"),
    ("secctx_attr_type", "int", "=secctx-attr-type"),
    ("ike-socket-bufsize", "int"),
    ("ike-socket-errqueue", "bool"),
    ("debug", "list", "=plutodebug"),
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
    ("curl-iface", "obsolete"),
    ("curl_iface", "obsolete"),
    ("myid", "obsolete"),
    ("force-busy", "obsolete"),
    ("force_busy", "obsolete"),
    ("curl_timeout", "obsolete"),
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
    ("rsapubkey", "str", "=rsasigkey"),
    ("ecdsakey", "str"),
    ("eddsakey", "str"),
    ("pubkey", "str"),
    ("auth", "enum", "psk|secret|rsasig|rsa|ecdsa|null|eaponly|never|eddsa"),
    ("autheap", "enum", "none|tls"),
    ("xauthserver", "bool"),
    ("xauthclient", "bool"),
    ("xauthusername", "str"),
    ("username", "str", "=xauthusername"),
    ("xauthname", "str", "=xauthusername"),
    ("modecfgserver", "bool"),
    ("modecfgclient", "bool"),
    ("addresspool", "str"),
    ("ikeport", "int"),
    ("vti", "str"),
    ("interface-ip", "str"),
    ("cat", "bool"),
    ("groundhog", "str"),
    ("sendca", "enum", "none|issuer|all"),
    ("firewall", "obsolete"),
    ("responderonly", "bool"),
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
    ("salifetime", "time"),
    ("ipsec-lifetime", "time", "=salifetime"),
    ("lifetime", "time", "=salifetime"),
    ("keylife", "time", "=salifetime"),
    ("ikelifetime", "time"),
    ("ike-lifetime", "time", "=ikelifetime"),
    ("rekeymargin", "time"),
    ("rekey-margin", "time", "=rekeymargin"),
    ("margintime", "time", "=rekeymargin"),
    ("rekeyfuzz", "percent"),
    ("rekey-fuzz", "percent", "=rekeyfuzz"),
    ("rekey", "bool"),
    ("reauth", "bool"),
    ("keyingtries", "keyingtries"),
    ("retransmit-interval", "ms"),
    ("retransmit-timeout", "time"),
    ("replay-window", "int"),
    ("ipsec-max-bytes", "bignum"),
    ("ipsec-max-packets", "bignum"),
    ("dpddelay", "time"),
    ("dpdtimeout", "time"),
    ("dpdaction", "enum", "hold|clear|restart|restart_by_peer"),
    ("fragmentation", "enum", "yes|no|never|force|insist"),
    ("ike_frag", "enum", "yes|no|never|force|insist", "=fragmentation"),
    ("mobike", "bool"),
    ("narrowing", "bool"),
    ("encapsulation", "enum", "auto|yes|no"),
    ("forceencaps", "bool"),
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
    ("modecfgdns1", "str", "=modecfgdns"),
    ("modecfgdns2", "obsolete"),
    ("modecfgdomains", "str"),
    ("modecfgdomain", "str", "=modecfgdomains"),
    ("modecfgbanner", "str"),
    ("modecfgwins1", "obsolete"),
    ("modecfgwins2", "obsolete"),
    ("cisco-unity", "bool"),
    ("cisco-split", "bool"),
    ("remote-peer-type", "enum", "cisco|ietf"),
    ("remote_peer_type", "enum", "cisco|ietf", "=remote-peer-type"),
    ("nm-configured", "bool"),
    ("nm_configured", "bool", "=nm-configured"),
    ("sha2-truncbug", "bool"),
    ("sha2_truncbug", "bool", "=sha2-truncbug"),
    ("ms-dh-downgrade", "bool"),
    ("require-id-on-certificate", "bool"),
    ("dns-match-id", "bool"),
    ("ignore-peer-dns", "bool"),
    ("policy-label", "str"),
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
    ("send-no-esp-tfc", "bool"),
    ("send-esp-tfc-padding-not-supported", "bool", "=send-no-esp-tfc"),
    ("connalias", "str"),
    ("failureshunt", "enum", "none|passthrough|drop|hold|reject"),
    ("negotiationshunt", "enum", "passthrough|drop|hold"),
    ("hostaddrfamily", "enum", "ipv4|ipv6"),
    ("clientaddrfamily", "enum", "ipv4|ipv6"),
    ("connaddrfamily", "obsolete"),
    ("intermediate", "bool"),
    ("ike-sa-init-full-transcript-auth", "bool"),
    ("debug", "list"),
    ("sendca", "enum", "none|issuer|all"),
    ("nat-ikev1-method", "enum", "drafts|rfc|both|none"),
    ("retransmit", "obsolete"),
    ("share-lease", "bool"),
    ("pfs-rekey-workaround", "bool"),
    ("sec-label", "str", "=policy-label"),
    ("interface-ip", "str"),
    ("postquantum-preshared-keys", "obsolete"),
    ("salifetime-soft", "obsolete"),
    ("ike-version", "obsolete"),
    ("dpd-delay", "time", "=dpddelay"),
    ("dpd-timeout", "time", "=dpdtimeout"),
])


def lookup_setup(key: str) -> KeyDef | None:
    return SETUP_KEYS.get(key.lower())


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
