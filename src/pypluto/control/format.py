"""Status output in Libreswan's text formats, and the documented JSON views.

The daemon builds one *snapshot* (a JSON-able dict: ``pluto`` facts, ``now``,
``wallclock`` and ``engine`` = ``dataclasses.asdict(EngineStatus)`` with the
backend's traffic counters merged in).  ``render`` turns it into the lines of
``whack --status`` / ``--trafficstatus`` / ... ; ``json_view`` into the
``--json`` objects described in docs/control-protocol.md.

Text output never carries a peer's bytes raw (issue 13): every field that a
peer can choose (IDs, connection instance names) goes through
:func:`pypluto.textsafe.escape`, and :func:`render` passes each line through
:func:`pypluto.textsafe.guard`, which escapes a whole line should a raw control
or bidi character still be in it.  JSON views keep the exact values (JSON
escapes control characters itself).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from pypluto.control.libreswan_header import header_lines as libreswan_header_lines
from pypluto.control.libreswan_totals import total_lines
from pypluto.textsafe import escape, guard, sanitized

STATUS_COMMANDS = frozenset(
    {"status", "globalstatus", "showstates", "trafficstatus", "briefstatus", "connectionstatus",
     "shuntstatus"}
)
JSON_SCHEMA = "pypluto-status/1"

_STORIES = {
    "ESTABLISHED_IKE_SA": "established IKE SA",
    "ESTABLISHED_CHILD_SA": "established Child SA",
    "PARENT_I0": "waiting for KE to finish",
    "PARENT_I1": "sent IKE_SA_INIT request",
    "PARENT_I2": "sent IKE_AUTH request",
    "PARENT_R0": "processing IKE_SA_INIT request",
    "PARENT_R1": "sent IKE_SA_INIT response, waiting for IKE_AUTH request",
    "IKE_SA_DELETE": "deleting IKE SA",
    "CHILD_SA_DELETE": "deleting Child SA",
    "REKEY_CHILD_I0": "STATE_V2_REKEY_CHILD_I0",
    "REKEY_CHILD_I1": "sent CREATE_CHILD_SA request to rekey IPsec SA",
    "REKEY_IKE_I1": "sent CREATE_CHILD_SA request to rekey IKE SA",
    "NEW_CHILD_I1": "sent CREATE_CHILD_SA request for new IPsec SA",
    # Libreswan 5.2's names (``shown_state``) of the states that have no name above
    "IKE_SA_INIT_I": "sent IKE_SA_INIT request",
    "IKE_AUTH_I": "sent IKE_AUTH request",
    "IKE_SA_INIT_R": "sent IKE_SA_INIT response, waiting for IKE_INTERMEDIATE or IKE_AUTH "
                     "request",
    "NEW_CHILD_I0": "STATE_V2_NEW_CHILD_I0",
    "REKEY_IKE_R0": "STATE_V2_REKEY_IKE_R0",
}


def short_state(state: str) -> str:
    for p in ("STATE_V2_", "STATE_"):
        if state.startswith(p):
            return state[len(p):]
    return state


def story(state: str) -> str:
    s = short_state(state)
    return _STORIES.get(s, s.lower().replace("_", " "))


def shown_state(state: str) -> str:
    """A state as Libreswan 5.2's status lines name it, with its story:
    ``ESTABLISHED_IKE_SA (established IKE SA)``, ``IKE_SA_INIT_I (sent IKE_SA_INIT
    request)`` (4.10 printed ``STATE_V2_ESTABLISHED_IKE_SA``).  An SA we are deleting
    keeps its own name (``IKE_SA_DELETE``): Libreswan has no such state to show."""
    if state in ("STATE_V2_IKE_SA_DELETE", "STATE_V2_CHILD_SA_DELETE"):
        name = short_state(state)
    else:
        name = OUR_TO_LIBRESWAN_STATE.get(state) or short_state(state)
    return f"{name} ({_STORIES.get(name) or story(state)})"


def humber(n: int) -> str:
    """Byte counts as Libreswan 5.2's ``--showstates`` prints them (``jam_readable_humber``):
    0B, 840B, 12KB, 3MB; MB is its largest unit (5 GiB is 5120MB)."""
    for unit in ("B", "KB"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}MB"


def _port(endpoint: str) -> str:
    return endpoint.rsplit(":", 1)[1] if ":" in endpoint else "500"


def _addr(endpoint: str) -> str:
    a = endpoint.rsplit(":", 1)[0] if endpoint.count(":") == 1 or endpoint.startswith("[") \
        else endpoint
    return a.strip("[]")


def _in(now: float, t: float | None) -> int | None:
    return None if t is None else max(0, int(round(t - now)))


# --- summaries -----------------------------------------------------------------


def summary(snap: dict[str, Any]) -> dict[str, Any]:
    eng = snap["engine"]
    conns = eng["connections"]
    ike = eng["ike_sas"]
    auth = [s for s in ike if "ESTABLISHED" in s["state"]]
    half = eng.get("half_open", 0) or sum(
        1 for s in ike if short_state(s["state"]) in ("PARENT_I0", "PARENT_I1", "PARENT_R0")
    )
    anon_names = {c["name"] for c in conns if c.get("authby") == "null"}
    children = [c for s in ike for c in s["children"]]
    # Libreswan 5.2 (show_connection_statuses): every connection, each instance of a
    # template one, is loaded; active are those in routing state routed-tunnel (an
    # established Child SA)
    blocks = conn_blocks(snap)
    return {
        "connections": {
            "loaded": len(blocks),
            "routed": sum(1 for c in blocks if c.get("routed")),
            "active": sum(1 for c in blocks if c["owners"].get("established_child")),
        },
        "ike_sas": {
            "total": len(ike),
            "half_open": half,
            "open": max(0, len(ike) - len(auth) - half),
            "authenticated": sum(1 for s in auth if s["conn"] not in anon_names),
            "anonymous": sum(1 for s in auth if s["conn"] in anon_names),
        },
        "ipsec_sas": {
            "total": len(children),
            "authenticated": sum(1 for c in children if c["conn"] not in anon_names),
            "anonymous": sum(1 for c in children if c["conn"] in anon_names),
        },
        "ddos_cookies_required": bool(eng.get("busy")),
    }


def _summary_lines(snap: dict[str, Any]) -> list[str]:
    s = summary(snap)
    c, i, p = s["connections"], s["ike_sas"], s["ipsec_sas"]
    # Libreswan 5.2's words (show_brief_status): "REQUIRED", "NOT ACCEPTING"
    cookies = "REQUIRED" if s["ddos_cookies_required"] else "not required"
    dos = snap["engine"].get("dos") or {}
    full = bool(dos.get("max_halfopen_ike")) and \
        dos.get("half_open", 0) >= dos.get("max_halfopen_ike", 0)
    accepting = "NOT ACCEPTING" if full else "Accepting"
    return [
        f"Total IPsec connections: loaded {c['loaded']}, active {c['active']}",
        "",
        f"State Information: DDoS cookies {cookies}, {accepting} new IKE connections",
        f"IKE SAs: total({i['total']}), half-open({i['half_open']}), open({i['open']}), "
        f"authenticated({i['authenticated']}), anonymous({i['anonymous']})",
        f"IPsec SAs: total({p['total']}), authenticated({p['authenticated']}), "
        f"anonymous({p['anonymous']})",
    ]


# --- connections ---------------------------------------------------------------


def _end(subnets: list[str], host: str, ident: str, local: bool, pool: bool = False,
         flags: str = "") -> str:
    """One end of a connection's first line; ``pool``: the selectors are addresses of
    a pool, in braces as Libreswan 5.2's ``jam_end_client`` shows them; ``flags``: the
    end's options after its ID (``MS+S=C``, ``jam_end_id``)."""
    ident = sanitized(ident)  # as Libreswan 5.2 (jam_sanitized_bytes): a DN's \, stays
    shown = [ident] if ident and ident != host else []
    host_id = f"{host}[{','.join(shown + [flags] if flags else shown)}]" \
        if shown or flags else host
    nets = [n for n in subnets if n.split("/")[0] != host]
    if not nets:
        return host_id
    net = ",".join(nets)
    if pool:
        net = "{" + net + "}"
    return f"{net}==={host_id}" if local else f"{host_id}==={net}"


def connection_lines(snap: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for name in snap["pluto"].get("unoriented", []):
        lines.append(f'"{escape(name)}": unoriented; neither end is a local address;')
    for c in conn_blocks(snap):
        n = _label(c)
        left = _end(c["local_subnets"], c["local"], c["local_id"], True)
        right = _end(c["remote_subnets"], c["remote"] or "%any", c["remote_id"], False,
                     pool=bool(c.get("lease")))
        routing = "established" if c.get("child_serials") else (
            "routed" if c.get("routed") else "unrouted")
        lines.append(f"{n}: {left}...{right}; {routing}; my_ip=unset; their_ip=unset;")
        lines.append(f"{n}:   host: oriented; local: {c['local']}; remote: "
                     f"{c['remote'] or '%any'};")
        lines.append(f"{n}:   auto: {c['auto']}; type: {c['type']}; authby: {c['authby']};")
        lines.append(f"{n}:   IKE algorithms: {c.get('ike') or 'default'}")
        lines.append(f"{n}:   ESP algorithms: {c.get('esp') or 'default'}")
        auth = _auth_policy(c["authby"])
        lines.append(f"{n}:   policy: IKEv2+{auth}+ENCRYPT+{c['type'].upper()};")
        if c.get("ike_serials") or c.get("child_serials"):
            ike = max(c["ike_serials"]) if c.get("ike_serials") else 0
            ch = max(c["child_serials"]) if c.get("child_serials") else 0
            lines.append(f"{n}:   newest IKE SA: #{ike}; newest IPsec SA: #{ch};")
    return lines


def libreswan_connection_lines(snap: dict[str, Any]) -> list[str]:
    """The "Connection list" of ``--status``: each conn in Libreswan 5.2's layout
    (:func:`libreswan_conn_lines`) when the daemon gave its ``conn_details``, else
    the short form of :func:`connection_lines`."""
    details = snap["pluto"].get("conn_details")
    if not details:
        return connection_lines(snap)
    lines = connection_lines({"pluto": snap["pluto"], "engine": {"connections": []}})
    for c in conn_blocks(snap):
        d = details.get(c["name"])
        if d is not None:
            lines += libreswan_conn_lines(c, d)
        else:
            lines += connection_lines({"pluto": {}, "engine": {"connections": [c]}})
    return lines


def _routing(c: dict[str, Any]) -> str:
    return "established" if c.get("child_serials") else (
        "routed" if c.get("routed") else "unrouted")


_POLICY_WORDS = {"secret": "PSK", "psk": "PSK", "null": "AUTH_NULL", "rsasig": "RSASIG",
                 "ecdsa": "ECDSA"}


def _auth_policy(authby: str) -> str:
    """``authby=`` as the policy bits of Libreswan's status (``rsasig,ecdsa`` ->
    ``RSASIG+ECDSA``)."""
    return "+".join(_POLICY_WORDS.get(w, w.upper()) for w in authby.split(",") if w)


def _newest_lines(n: str, c: dict[str, Any]) -> list[str]:
    if not (c.get("ike_serials") or c.get("child_serials")):
        return []
    ike = max(c["ike_serials"]) if c.get("ike_serials") else 0
    ch = max(c["child_serials"]) if c.get("child_serials") else 0
    return [f"{n}:   newest IKE SA: #{ike}; newest IPsec SA: #{ch};"]


def _secs(v: float) -> str:
    return f"{int(v)}s" if float(v).is_integer() else f"{int(v * 1000)}ms"


def _ms_or_s(v: float) -> str:
    """Libreswan prints retransmit-interval in ms."""
    return f"{round(v * 1000)}ms"


def _max(v: int | None, unit: str) -> str:
    return f"{humber_max(v)}{unit}"


def humber_max(v: int | None) -> str:
    """``ipsec-max-bytes=`` / ``ipsec-max-packets=`` as Libreswan 5.2 prints them
    (``jam_humber_uintmax``): ``2^63`` for none (its default), else in the largest binary
    unit the value is strictly above (``2048`` -> ``2Ki``, ``1024`` -> ``1024``, ``1536``
    -> ``1Ki``: truncated)."""
    if v is None or v >= 2**63:
        return "2^63"
    for shift, suffix in ((60, "Ei"), (50, "Pi"), (40, "Ti"), (30, "Gi"), (20, "Mi"),
                          (10, "Ki")):
        if v > 1 << shift:
            return f"{v >> shift}{suffix}"
    return str(v)


def max_bytes(snap: dict[str, Any], conn: str) -> int | None:
    """The conn's ``ipsec-max-bytes=`` (the daemon's ``conn_details``; None: not set)."""
    d = (snap["pluto"].get("conn_details") or {}).get(conn) or {}
    v = d.get("ipsec_max_bytes")
    return v if isinstance(v, int) else None


def conn_policy(c: dict[str, Any], d: dict[str, Any]) -> str:
    """Libreswan 5.2's policy string (``whack --status``) for what the conn has."""
    bits = ["IKEv2", _auth_policy(c["authby"])]
    if c["type"] in ("tunnel", "transport"):
        bits.append("ENCRYPT")
        bits.append(c["type"].upper())
        if d["compress"]:
            bits.append("COMPRESS")
        if d["pfs"]:
            bits.append("PFS")
    else:
        bits.append({"passthrough": "PASS", "drop": "DROP", "reject": "REJECT"}[c["type"]])
    if not d["rekey"]:
        bits.append("DONT_REKEY")
    if d["reauth"]:
        bits.append("REAUTH")
    if d["up"]:
        bits.append("UP")
    if d.get("modecfg_pull"):
        bits.append("MODECFG_PULL")
    if d.get("narrowing"):
        bits.append("IKEV2_ALLOW_NARROWING")
    frag = {"yes": "IKE_FRAG_ALLOW", "force": "IKE_FRAG_ALLOW+IKE_FRAG_FORCE"}.get(
        d["fragmentation"])
    if frag:
        bits.append(frag)
    if d["mobike"]:
        bits.append("MOBIKE")
    if d["esn"] in ("no", "either"):
        bits.append("ESN_NO")
    if d["esn"] in ("yes", "either"):
        bits.append("ESN_YES")
    return "+".join(bits)


def libreswan_conn_lines(c: dict[str, Any], d: dict[str, Any]) -> list[str]:
    """One connection's block of ``whack --status`` in Libreswan 5.2's layout.

    ``c`` is the engine's ``ConnectionStatus``, ``d`` the daemon's
    ``conn_details`` (daemon/status.py).  Constant fields are those of features
    we do not have (XAUTH, mode config, labels, IPTFS, TCP, VTI, NFLOG, offload):
    Libreswan shows the same values for a conn that does not use them.
    """
    n = _label(c)
    if c.get("instance") is not None:
        d = _instance_details(c, d)
    our_nets, their_nets = c["local_subnets"], c["remote_subnets"]
    if not our_nets and d.get("our_pool"):
        our_nets = [d["our_pool"]]
    if not their_nets and d.get("their_pool"):  # a template: the pool it leases from
        their_nets = [d["their_pool"]]
    left = _end(our_nets, c["local"], c["local_id"], True,
                pool=bool(d.get("our_pool")), flags=d.get("our_flags", ""))
    if d.get("nexthop"):
        left += f"---{d['nexthop']}"
    right = _end(their_nets, c["remote"] or "%any", c["remote_id"], False,
                 pool=bool(c.get("lease") or d.get("their_pool")),
                 flags=d.get("their_flags", ""))
    yn = {True: "yes", False: "no"}
    ka = f"{d['keep_alive']}s" if d["nat_keepalive"] else "no"
    routing = "routed-tunnel" if c.get("child_serials") else (
        "routed-ondemand" if c.get("routed") else "unrouted")
    owners = c.get("owners") or {}
    their_ip = c["lease"][0].split("/")[0] if c.get("lease") else "unset"
    routing_line = f"{n}:   routing: {routing};"
    if routing == "routed-tunnel" and owners.get("established_child"):
        routing_line += f" owner: Child SA #{owners['established_child']};"
    routing_line += _owner_text(owners, "ike", "IKE SA") + \
        _owner_text(owners, "child", "Child SA")
    serial = f"${d['serial']}"
    if c.get("instance") is not None:  # ours: the instance has no serial of its own
        serial = f"${d['serial']}[{c['instance']}], instantiated from: ${d['serial']}"
    lines = [
        f"{n}: {left}...{right}; {routing}; my_ip=unset; their_ip={their_ip};",
        f"{n}:   host: oriented; local: {c['local']}; remote: {c['remote'] or '%any'};"
        + _owner_text(owners, "ike", "IKE SA"),
        f"{n}:   my_updown={d['updown']};",
        f"{n}:   xauth us:none, xauth them:none,  my_username=[any]; their_username=[any]",
        f"{n}:   our auth:{d['our_auth']}, their auth:{d['their_auth']}, our autheap:none, "
        "their autheap:none;",
        f"{n}:   modecfg info: us:{d.get('modecfg_us', 'none')}, them:"
        f"{d.get('modecfg_them', 'none')}, modecfg policy:"
        f"{'pull' if d.get('modecfg_pull') else 'push'}, dns:"
        f"{', '.join(d.get('modecfg_dns') or []) or 'unset'}, domains:"
        f"{','.join(d.get('modecfg_domains') or []) or 'unset'}, cat:unset;",
        f"{n}:   sec_label:unset;",
        f"{n}:   ike_life: {_secs(d['ike_life'])}; ipsec_life: {_secs(d['ipsec_life'])}; "
        f"ipsec_max_bytes: {_max(d['ipsec_max_bytes'], 'B')}; "
        f"ipsec_max_packets: {_max(d['ipsec_max_packets'], '')}; "
        f"replay_window: {d['replay_window']}; rekey_margin: {_secs(d['rekey_margin'])}; "
        f"rekey_fuzz: {d['rekey_fuzz']:g}%;",
        f"{n}:   iptfs: no; fragmentation: yes; packet-size: 0; "  # IPTFS's, not IKE's
        "max-queue-size: 0; drop-time: 0; init-delay: 0; reorder-window: 0;",
        f"{n}:   retransmit-interval: {_ms_or_s(d['retransmit_interval'])}; "
        f"retransmit-timeout: {_secs(d['retransmit_timeout'])}; iketcp:no; "
        "iketcp-port:4500;",
        f"{n}:   initial-contact:{yn[d['initial_contact']]}; cisco-unity:no; "
        f"fake-strongswan:{yn[d.get('fake_strongswan', False)]}; "
        f"send-vendorid:{yn[d['send_vendorid']]}; send-no-esp-tfc:"
        f"{yn[d.get('send_no_esp_tfc', False)]};",
        f"{n}:   policy: {conn_policy(c, d)};",
        f"{n}:   v2-auth-hash-policy: none;",
        f"{n}:   conn_prio: {','.join(str(x) for x in d['conn_prio'])}; interface: "
        f"{d['interface'] or 'unset'}; metric: 0; mtu: unset; sa_prio:auto; sa_tfc:none;",
        f"{n}:   nflog-group: {d.get('nflog') or 'unset'}; mark: {d['mark'] or 'unset'}; "
        "vti-iface:unset; "
        "vti-routing:no; vti-shared:no; nic-offload:no;",
        f"{n}:   our idtype: {d['our_idtype']}; our id={d['our_id']}; their idtype: "
        f"{d['their_idtype']}; their id={d['their_id']}",  # jam_id: raw (config's IDs)
        f"{n}:   liveness: {'active' if d['dpddelay'] > 0 else 'passive'}; "
        f"dpddelay:{_secs(d['dpddelay'])}; retransmit-timeout:{_secs(d['retransmit_timeout'])}",
        f"{n}:   nat-traversal: encapsulation:{d['encapsulation']}; keepalive:{ka}",
        routing_line,
    ]
    lines += _newest_lines(n, c)
    lines.append(f"{n}:   conn serial: {serial};")
    if c.get("ike") and c["ike"] != "default":
        lines.append(f"{n}:   IKE algorithms: {c['ike']}")
    if owners.get("ike_newest"):
        lines.append(f"{n}:   IKEv2 algorithm newest: {owners['ike_newest']}")
    if c.get("esp") and c["esp"] != "default":
        lines.append(f"{n}:   ESP algorithms: {c['esp']}")
    if owners.get("child_newest"):  # 5.2 (IKEv2): PFS or not, as configured
        lines.append(f"{n}:   {owners['child_newest']}; pfsgroup="
                     f"{'<Phase1>' if d.get('pfs') else '<N/A>'}")
    return lines


_LS_ENCR = {"3DES": "3DES_CBC_192", "CHACHA20_POLY1305": "CHACHA20_POLY1305_256",
            "NULL": "NULL_000"}
_LS_KE = {"ECP_256": "DH19", "ECP_384": "DH20", "ECP_521": "DH21", "CURVE25519": "DH31",
          "CURVE448": "DH32"}
_LS_PRF = {"AES128_XCBC": "AES_XCBC", "AES128_CMAC": "AES_CMAC"}


def _ike_newest(s: dict[str, Any]) -> str:
    """Libreswan 5.2's ``IKEv2 algorithm newest:`` of an IKE SA (crypto.c): its cipher
    with key size, PRF, the integrity only when not AEAD and not the PRF's own hash,
    and the group, by Libreswan's names (``AES_GCM_16_256-HMAC_SHA2_512-DH19``)."""
    prf = s.get("prf", "").removeprefix("PRF_")
    prf = _LS_PRF.get(prf, prf)
    integ = s.get("integ", "").removeprefix("AUTH_")
    parts = [_LS_ENCR.get(s.get("encr", ""), s.get("encr", "")), prf]
    if integ and integ != "NONE" and integ.rsplit("_", 1)[0] != prf:
        parts.append(integ)
    parts.append(_LS_KE.get(s.get("ke", ""), s.get("ke", "")))
    return "-".join(p for p in parts if p)


def _child_newest(ch: dict[str, Any]) -> str:
    """``ESP algorithm newest: AES_CBC_128-HMAC_SHA1_96`` (``AES_GCM_16_256-NONE``) or
    ``AH algorithm newest: HMAC_SHA2_256_128`` of a Child SA (plutoalg.c)."""
    integ = ch.get("integ", "").removeprefix("AUTH_") or "NONE"
    if ch.get("protocol", "esp") == "ah":
        return f"AH algorithm newest: {integ}"
    return f"ESP algorithm newest: {_LS_ENCR.get(ch['encr'], ch['encr'])}-{integ}"


# --- instances and leases ------------------------------------------------------


def instance_numbers(snap: dict[str, Any]) -> dict[tuple[str, int], int]:
    """``(conn, IKE SA serial) -> N`` for the SAs of a template (``right=%any``): Libreswan
    5.2 names such an SA's connection ``"conn"[N] PEER`` (``jam_connection``), N counting
    the template's instances, one per peer (address and ID).

    The engine's number (``instance`` of the IKE SA: given when the status is first read
    while the peer has an IKE SA, kept while it has one, never reused) where the
    snapshot has it; else (an
    older snapshot) numbered from 1 per template in the order the peers' first SAs were
    made (their lowest serial).  An SA of a conn that is not a template is not in the map.
    """
    templates = {c["name"] for c in snap["engine"]["connections"] if c["remote"] == "%any"}
    first: dict[tuple[str, str, str], int] = {}
    of_sa: dict[tuple[str, int], tuple[str, str, str]] = {}
    for s in snap["engine"]["ike_sas"]:
        peer = (_addr(s["remote"]), s.get("remote_id", ""))
        for conn, serial in [(s["conn"], s["serial"])] + [
                (ch["conn"], ch["serial"]) for ch in s["children"]]:
            if conn in templates:
                key = (conn, *peer)
                first[key] = min(first.get(key, serial), serial)
                of_sa[(conn, s["serial"])] = key
    numbers: dict[tuple[str, str, str], int] = {}
    count: dict[str, int] = {}
    for key in sorted(first, key=lambda k: first[k]):
        count[key[0]] = numbers[key] = count.get(key[0], 0) + 1
    out = {sa: numbers[key] for sa, key in of_sa.items()}
    for s in snap["engine"]["ike_sas"]:
        if "instance" in s:  # the engine's stable number
            if s["instance"] is None:
                out.pop((s["conn"], s["serial"]), None)
            else:
                out[(s["conn"], s["serial"])] = s["instance"]
    return out


def conn_text(conn: str, instance: int | None, peer: str) -> str:
    """A connection as Libreswan's state lines name it: ``"conn"``, or ``"conn"[N] PEER``
    for an instance of a template."""
    return f'"{escape(conn)}"' if instance is None else f'"{escape(conn)}"[{instance}] {peer}'


def child_leases(snap: dict[str, Any]) -> dict[tuple[str, int], list[str]]:
    """``(conn, IKE SA serial) -> ["ADDR/32", "ADDR/128"]``: the pool addresses the
    gateway leased to the peer of that IKE SA's conn, or the client was given by it
    (RFC 7296 §3.15), IPv4 first, as Libreswan 5.2's ``--trafficstatus`` shows them
    (``lease=``)."""
    out: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for le in snap["engine"].get("leases", []):
        v6 = ":" in le["address"]
        out.setdefault((le["conn"], le["ike_serial"]), []).append(
            (int(v6), f"{le['address']}/{128 if v6 else 32}"))
    # the client's side: the addresses the gateway gave this IKE SA (Libreswan 5.2's
    # north/road trafficstatus: "lease=192.0.2.101/32")
    for s in snap["engine"]["ike_sas"]:
        for a in s.get("local_vips", []):
            v6 = ":" in a
            out.setdefault((s["conn"], s["serial"]), []).append(
                (int(v6), f"{a}/{128 if v6 else 32}"))
    return {k: [a for _, a in sorted(v)] for k, v in out.items()}


def _with_instances(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The engine's IKE SAs for ``--json``, each SA (IKE and Child) with ``instance``:
    its N of ``"conn"[N]`` (None: not an instance of a template)."""
    inst = instance_numbers(snap)
    return [{**s, "instance": inst.get((s["conn"], s["serial"])),
             "children": [{**ch, "instance": inst.get((ch["conn"], s["serial"]))}
                          for ch in s["children"]]}
            for s in snap["engine"]["ike_sas"]]


def _label(c: dict[str, Any]) -> str:
    """A connection's block as Libreswan 5.2 names it (``jam_connection_short``):
    ``"conn"``, or ``"conn"[N]`` for an instance of a template (no peer address)."""
    n = f'"{escape(c["name"])}"'
    return n if c.get("instance") is None else f"{n}[{c['instance']}]"


ID_TYPE_NAMES = {0: "%none", 1: "ID_IPV4_ADDR", 2: "ID_FQDN", 3: "ID_USER_FQDN",
                 5: "ID_IPV6_ADDR", 9: "ID_DER_ASN1_DN", 11: "ID_KEY_ID", 13: "ID_NULL"}
"""RFC 7296 §3.5 ID Type numbers as Libreswan's status names them."""


def _instance_details(c: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    """The template's ``conn_details`` as its instance ``c`` has them: the peer's ID
    (``their idtype``/``their id``, a peer's bytes sanitized) and Libreswan 5.2's
    ``conn_prio`` of an instance (the remote selector's prefix, then 1)."""
    out = dict(d)
    t = c.get("remote_id_type")
    if t is not None:
        out["their_idtype"] = ID_TYPE_NAMES.get(t, f"ID_{t}")
        out["their_id"] = "ID_NULL" if t == 13 else sanitized(c["remote_id"])
    prio = list(d.get("conn_prio") or [0, 0, 0])
    nets = [int(x.split("/")[1]) for x in c["remote_subnets"] if "/" in x]
    prio[1:] = [min(nets) if nets else (128 if ":" in c["remote"] else 32), 1]
    out["conn_prio"] = prio
    return out


def _owner_text(owners: dict[str, Any], kind: str, what: str) -> str:
    """Libreswan 5.2's ``jam_connection_owners``: `` negotiating IKE SA: #N;`` (when it
    is not the established one) and `` established IKE SA: #M;``."""
    neg, est = owners.get(f"negotiating_{kind}"), owners.get(f"established_{kind}")
    out = f" negotiating {what}: #{neg};" if neg is not None and neg != est else ""
    return out + (f" established {what}: #{est};" if est is not None else "")


def _owners(ike: list[int], children: list[int], state: dict[int, str]) -> dict[str, Any]:
    """The newest established and the newest negotiating IKE and Child SA of a
    connection (serials; None: none)."""
    out: dict[str, Any] = {}
    for kind, serials in (("ike", ike), ("child", children)):
        est = [x for x in serials if "ESTABLISHED" in state.get(x, "")]
        neg = [x for x in serials if x in state and "ESTABLISHED" not in state[x]
               and "DELETE" not in state[x]]
        out[f"established_{kind}"] = max(est) if est else None
        out[f"negotiating_{kind}"] = max(neg) if neg else None
    return out


def conn_blocks(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The connections as ``--status`` / ``--connectionstatus`` list them: the engine's
    ``ConnectionStatus`` dicts, each template (``right=%any``) followed by its instances
    in the order of N, as Libreswan 5.2 does (``"rw"`` unrouted with no SA, then
    ``"rw"[1]``, ``"rw"[2]``: each its peer's address and ID, its selectors (a client's
    lease as the remote one, ``lease``), its SAs and routing).  Each dict also has
    ``owners`` (:func:`_owners`); an instance has ``instance`` and ``remote_id_type``."""
    eng = snap["engine"]
    ike_sas = eng.get("ike_sas", [])
    state = {s["serial"]: s["state"] for s in ike_sas}
    state.update({ch["serial"]: ch["state"] for s in ike_sas for ch in s["children"]})
    sas = {s["serial"]: s for s in ike_sas}
    sas.update({ch["serial"]: ch for s in ike_sas for ch in s["children"]})

    def owners(ike: list[int], children: list[int]) -> dict[str, Any]:
        o = _owners(ike, children, state)
        if o["established_ike"] is not None:
            o["ike_newest"] = _ike_newest(sas[o["established_ike"]])
        if o["established_child"] is not None:
            o["child_newest"] = _child_newest(sas[o["established_child"]])
        return o

    inst = instance_numbers(snap) if ike_sas else {}
    leases = child_leases(snap) if ike_sas else {}
    groups: dict[str, dict[int, dict[str, Any]]] = {}
    for s in ike_sas:  # in serial order: the last IKE SA seen is an instance's newest
        for name in dict.fromkeys([s["conn"], *(ch["conn"] for ch in s["children"])]):
            n = inst.get((name, s["serial"]))
            if n is None:
                continue
            g = groups.setdefault(name, {}).setdefault(
                n, {"ikes": [], "children": [], "lease": [], "sa": s})
            if s["conn"] == name:
                g["ikes"].append(s)
                g["sa"] = s
            g["children"] += [ch for ch in s["children"] if ch["conn"] == name]
            g["lease"] += [a for a in leases.get((name, s["serial"]), [])
                           if a not in g["lease"]]
    out: list[dict[str, Any]] = []
    for c in eng["connections"]:
        mine = groups.get(c["name"])
        if not mine:
            out.append({**c, "owners": owners(c.get("ike_serials", []),
                                              c.get("child_serials", []))})
            continue
        taken = {s["serial"] for g in mine.values() for s in g["ikes"]} | \
            {ch["serial"] for g in mine.values() for ch in g["children"]}
        ike = [x for x in c.get("ike_serials", []) if x not in taken]
        chs = [x for x in c.get("child_serials", []) if x not in taken]
        # the template itself: its instances' SAs and routes are theirs
        out.append({**c, "ike_serials": ike, "child_serials": chs, "routed": bool(chs),
                    "owners": owners(ike, chs)})
        for n in sorted(mine):
            g = mine[n]
            s = g["sa"]
            est = [ch for ch in g["children"] if "ESTABLISHED" in ch["state"]]
            remote_nets = g["lease"] or list(dict.fromkeys(
                t for ch in (est or g["children"]) for t in ch.get("remote_ts", []))) \
                or c["remote_subnets"]  # none negotiated yet: the template's
            ike = [x["serial"] for x in g["ikes"]]
            chs = [ch["serial"] for ch in g["children"]]
            out.append({**c, "instance": n, "remote": _addr(s["remote"]),
                        # no ID yet (IKE_SA_INIT): the template's, none for %any
                        "remote_id": s.get("remote_id") or (
                            c["remote_id"] if c["remote_id"] != "%any" else ""),
                        "remote_id_type": s.get("remote_id_type") if s.get("remote_id")
                        else None,
                        "remote_subnets": remote_nets, "lease": g["lease"],
                        "routed": bool(est), "ike_serials": ike, "child_serials": chs,
                        "owners": owners(ike, chs)})
    return out


def _instance_views(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """``--json``: the instances of templates (:func:`conn_blocks`), each its template's
    ``name``, its ``instance`` N, peer, selectors, SAs and ``lease``."""
    return [b for b in conn_blocks(snap) if b.get("instance") is not None]


# --- states --------------------------------------------------------------------


def state_lines(snap: dict[str, Any], traffic: bool = True) -> list[str]:
    now = snap["now"]
    lines: list[str] = []
    inst = instance_numbers(snap)

    def name(conn: str, s: dict[str, Any]) -> str:
        return conn_text(conn, inst.get((conn, s["serial"])), _addr(s["remote"]))

    # "newest" is per connection instance (Libreswan: the instance's newest SAs)
    newest_ike: dict[str, int] = {}
    newest_child: dict[str, int] = {}
    for s in snap["engine"]["ike_sas"]:
        n = name(s["conn"], s)
        newest_ike[n] = max(newest_ike.get(n, 0), s["serial"])
        for ch in s["children"]:
            n = name(ch["conn"], s)
            newest_child[n] = max(newest_child.get(n, 0), ch["serial"])
    entries: list[tuple[int, list[str]]] = []
    for s in snap["engine"]["ike_sas"]:
        parts = [f'#{s["serial"]}: {name(s["conn"], s)}:{_port(s["remote"])} '
                 f'{shown_state(s["state"])};']
        parts += _timers(now, s.get("rekey_at"), s.get("expire_at"))
        if newest_ike.get(name(s["conn"], s)) == s["serial"]:
            parts.append("newest;")
        parts.append("idle;")
        entries.append((s["serial"], [" ".join(parts)]))
        for ch in s["children"]:
            chn = name(ch["conn"], s)
            p = [f'#{ch["serial"]}: {chn}:{_port(s["remote"])} '
                 f'{shown_state(ch["state"])};']
            p += _timers(now, ch.get("rekey_at"), ch.get("expire_at"))
            if newest_child.get(chn) == ch["serial"]:
                p.append("newest; eroute owner;")
            p.append(f"IKE SA #{s['serial']}; idle;")
            block = [" ".join(p)]
            if traffic:
                proto = ch.get("protocol", "esp")
                r, lo = _addr(s["remote"]), _addr(s["local"])
                mode = "tun" if ch.get("mode", "tunnel") == "tunnel" else "trans"
                pre = proto.upper()
                block.append(
                    f'#{ch["serial"]}: {chn} {proto}.{ch["spi_out"]:x}@{r} '
                    f'{proto}.{ch["spi_in"]:x}@{lo} {mode}.0@{r} {mode}.0@{lo} Traffic: '
                    f'{pre}in={humber(ch["in_bytes"])} {pre}out={humber(ch["out_bytes"])} '
                    f'{pre}max={humber_max(max_bytes(snap, ch["conn"]))}B'
                )
                drops = " ".join(
                    f"{label}={ch.get(key, 0)}" for key, label in (
                        ("replay_drops", "replay"), ("integrity_failures", "integrity"),
                        ("selector_drops", "selector"))
                    if ch.get(key, 0) is not None)  # None: the backend does not count it
                block.append(f'#{ch["serial"]}: {chn} dropped: {drops}')
            entries.append((ch["serial"], block))
    for _serial, block in sorted(entries, key=lambda e: e[0]):
        lines.extend(block)
    return lines


def _timers(now: float, rekey: float | None, expire: float | None) -> list[str]:
    out = []
    r, e = _in(now, rekey), _in(now, expire)
    if r is not None:
        out.append(f"REKEY in {r}s;")
    if e is not None:
        out.append(f"REPLACE in {e}s;")
    return out


def traffic_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    now, wall = snap["now"], snap["wallclock"]
    inst, leases = instance_numbers(snap), child_leases(snap)
    for s in snap["engine"]["ike_sas"]:
        for ch in s["children"]:
            if "ESTABLISHED" not in ch["state"]:
                continue
            key = (ch["conn"], s["serial"])
            added = int(wall - (now - (ch.get("established_at") or now)))
            rows.append({
                "serial": ch["serial"],
                "conn": ch["conn"],
                "type": ch.get("protocol", "esp").upper(),
                "add_time": added,
                "in_bytes": ch["in_bytes"],
                "out_bytes": ch["out_bytes"],
                "in_packets": ch["in_packets"],
                "out_packets": ch["out_packets"],
                # inbound packets dropped: replay, integrity, outside the selectors
                "replay_drops": ch.get("replay_drops", 0),
                "integrity_failures": ch.get("integrity_failures", 0),
                "selector_drops": ch.get("selector_drops", 0),
                "malformed": ch.get("malformed", 0),  # after its SPI matched
                "max_bytes": max_bytes(snap, ch["conn"]),  # None: 2^63 (not set)
                "remote_id": s.get("remote_id", ""),
                "remote_id_type": s.get("remote_id_type", 0),  # RFC 7296 §3.5 (13: ID_NULL)
                "ike_serial": s["serial"],
                # "conn"[instance] peer: the N of a template's instance (None: not one)
                "instance": inst.get(key),
                "peer": _addr(s["remote"]),
                # the pool addresses the peer got from us (CIDR, IPv4 first)
                "lease": leases.get(key, []) if key[0] == s["conn"] else [],
            })
    rows.sort(key=lambda r: r["serial"])
    return rows


def _shown_id(row: dict[str, Any]) -> str:
    """A peer's ID as Libreswan 5.2's ``jam_id_bytes`` names it: ID_NULL (RFC 7619) is
    ``ID_NULL`` (testing/pluto/*null*: ``id='ID_NULL'``), not its config spelling."""
    return "ID_NULL" if row.get("remote_id_type") == 13 else row["remote_id"]


def traffic_lines(snap: dict[str, Any]) -> list[str]:
    """``--trafficstatus`` as Libreswan 5.2 prints it (whack_trafficstatus.c): an
    instance named ``"conn"[N] PEER``, and ``, lease=A/32[,B/128]`` for a Child SA whose
    peer got addresses from our pool."""
    lines = []
    for r in traffic_rows(snap):
        line = (f'#{r["serial"]}: {conn_text(r["conn"], r["instance"], r["peer"])}, '
                f'type={r["type"]}, add_time={r["add_time"]}, '
                f'inBytes={r["in_bytes"]}, outBytes={r["out_bytes"]}, '
                f'maxBytes={humber_max(r["max_bytes"])}B, ')  # ipsec-max-bytes=0 is refused
        # the ID as Libreswan shows it, but a ' in octal (\47): it would end the field
        line += f"id='{sanitized(_shown_id(r), extra=chr(39))}'"
        if r["lease"]:
            line += f", lease={','.join(r['lease'])}"
        lines.append(line)
    return lines


def global_values(snap: dict[str, Any]) -> dict[str, int]:
    s = summary(snap)
    eng = snap["engine"]
    v: dict[str, int] = {
        "current.states.all": s["ike_sas"]["total"] + s["ipsec_sas"]["total"],
        "current.states.ikev1.total": 0,
        "current.states.ikev2.total": s["ike_sas"]["total"] + s["ipsec_sas"]["total"],
        "current.states.iketype.anonymous": s["ike_sas"]["anonymous"],
        "current.states.iketype.authenticated": s["ike_sas"]["authenticated"],
        "current.states.iketype.halfopen": s["ike_sas"]["half_open"],
        "current.states.iketype.open": s["ike_sas"]["open"],
        "current.states.ipsectype.anonymous": s["ipsec_sas"]["anonymous"],
        "current.states.ipsectype.authenticated": s["ipsec_sas"]["authenticated"],
        "current.connections.loaded": s["connections"]["loaded"],
        "current.connections.routed": s["connections"]["routed"],
        "current.connections.active": s["connections"]["active"],
        "current.ddos.busy": int(s["ddos_cookies_required"]),
    }
    dos = eng.get("dos") or {}
    for key, field in (("current.ddos.init_rate", "init_rate"),
                       ("current.ddos.halfopen_threshold", "ddos_ike_threshold"),
                       ("current.ddos.max_halfopen", "max_halfopen_ike"),
                       ("total.ddos.cookies_sent", "cookies_sent"),
                       ("total.ddos.cookies_accepted", "cookies_accepted"),
                       ("total.ddos.cookies_rejected", "cookies_rejected"),
                       ("total.ddos.dropped_halfopen_full", "dropped_halfopen_full"),
                       ("total.ddos.dropped_per_addr", "dropped_per_addr"),
                       ("current.ike.fragment_bytes", "fragment_bytes"),
                       ("total.ike.fragments_dropped", "fragments_dropped")):
        if field in dos:
            v[key] = int(dos[field])
    counts: dict[str, int] = {}
    for ike in eng["ike_sas"]:
        counts[ike["state"]] = counts.get(ike["state"], 0) + 1
        for ch in ike["children"]:
            counts[ch["state"]] = counts.get(ch["state"], 0) + 1
    for st, n in sorted(counts.items()):
        v[f"current.states.enumerate.{st}"] = n
    in_b = sum(c["in_bytes"] for i in eng["ike_sas"] for c in i["children"])
    out_b = sum(c["out_bytes"] for i in eng["ike_sas"] for c in i["children"])
    v["current.traffic.ipsec.in_bytes"] = in_b
    v["current.traffic.ipsec.out_bytes"] = out_b
    v.update(drop_values(snap))
    v["pluto.uptime_seconds"] = int(snap["pluto"]["uptime"])
    return v


PLANE_DROPS = (("no_policy", "no_policy"), ("shunted", "shunted"),
               ("unknown_spi", "unknown_spi"), ("hold_dropped", "hold_overflow"))
"""The data plane's global drops (``snap["plane"]``) -> ``total.ipsec.drops.*`` key."""
SA_DROPS = (("replay_drops", "replay"), ("integrity_failures", "integrity"),
            ("selector_drops", "selector"), ("malformed", "malformed"))
"""A Child SA's drops (status ``children``) -> ``total.ipsec.drops.*`` key."""
PLANE_EVENTS = (("keepalives", "total.ipsec.keepalives.recv"),
                ("send_errors", "total.ipsec.errors.send"),
                ("tun_write_errors", "total.ipsec.errors.tun_write"),
                ("held", "total.ipsec.held"))
"""Other data plane counters (``snap["plane"]``) -> their ``--globalstatus`` key."""


def drop_values(snap: dict[str, Any]) -> dict[str, int]:
    """Inbound packets dropped since start, by reason: ``total.ipsec.drops.REASON``.

    Libreswan 5.2 prints no drop counters (XFRM keeps them in ``/proc/net/xfrm_stat``,
    which its ``--globalstatus`` does not read): these are ours, in its ``total.*``
    style.  A Child SA's drops are those of the live SAs plus those already deleted
    (``counters.ipsec_drops_gone``); a reason no SA counts (XFRM's selector and
    malformed counts are per namespace) is left out, never a fake 0.  The plane's
    own (an unknown SPI, a runt, ...) come only with a plane that counts them.
    """
    gone = (snap.get("counters") or {}).get("ipsec_drops_gone") or {}
    plane = snap.get("plane") or {}
    v: dict[str, int] = {}
    for attr, key in SA_DROPS:
        vals = [c.get(attr) for i in snap["engine"]["ike_sas"] for c in i["children"]]
        counted = [x for x in vals if isinstance(x, int)]
        if counted or attr in gone or attr in plane:
            v[f"total.ipsec.drops.{key}"] = sum(counted) + int(gone.get(attr, 0)) + \
                int(plane.get(attr, 0))  # plane "malformed": too short for an SPI
    for attr, key in PLANE_DROPS:
        if attr in plane:
            v[f"total.ipsec.drops.{key}"] = int(plane[attr])
    for attr, key in PLANE_EVENTS:
        if attr in plane:
            v[key] = int(plane[attr])
    return v


LIBRESWAN_STATES = (
    "STATE_MAIN_R0 STATE_MAIN_I1 STATE_MAIN_R1 STATE_MAIN_I2 STATE_MAIN_R2 STATE_MAIN_I3 "
    "STATE_MAIN_R3 STATE_MAIN_I4 STATE_AGGR_R0 STATE_AGGR_I1 STATE_AGGR_R1 STATE_AGGR_I2 "
    "STATE_AGGR_R2 STATE_QUICK_R0 STATE_QUICK_I1 STATE_QUICK_R1 STATE_QUICK_I2 "
    "STATE_QUICK_R2 STATE_INFO STATE_INFO_PROTECTED STATE_XAUTH_R0 STATE_XAUTH_R1 "
    "STATE_MODE_CFG_SERVER_WAITING_FOR_ACK STATE_MODE_CFG_CLIENT_RESPONDING "
    "STATE_MODE_CFG_R0 STATE_MODE_CFG_R1 STATE_MODE_CFG_R2 STATE_MODE_CFG_I1 STATE_XAUTH_I0 "
    "STATE_XAUTH_I1 UNSECURED_R IKE_SA_INIT_I0 IKE_SA_INIT_I IKE_SA_INIT_R IKE_SA_INIT_IR "
    "IKE_INTERMEDIATE_I IKE_INTERMEDIATE_R IKE_INTERMEDIATE_IR IKE_SESSION_RESUME_I0 "
    "IKE_SESSION_RESUME_I IKE_SESSION_RESUME_R0 IKE_SESSION_RESUME_R IKE_SESSION_RESUME_IR "
    "IKE_AUTH_EAP_R IKE_AUTH_I NEW_CHILD_I0 NEW_CHILD_R0 NEW_CHILD_I1 REKEY_IKE_I0 "
    "REKEY_IKE_I1 REKEY_CHILD_I0 REKEY_CHILD_I1 REKEY_IKE_R0 REKEY_CHILD_R0 "
    "ESTABLISHED_IKE_SA ESTABLISHED_CHILD_SA ZOMBIE"
).split()
"""Libreswan 5.2's ``current.states.enumerate.*`` keys, in its order (IKEv1 ones stay 0)."""

OUR_TO_LIBRESWAN_STATE = {
    "STATE_V2_PARENT_I1": "IKE_SA_INIT_I",
    "STATE_V2_PARENT_I2": "IKE_AUTH_I",
    "STATE_V2_PARENT_R1": "IKE_SA_INIT_R",
    "STATE_V2_ESTABLISHED_IKE_SA": "ESTABLISHED_IKE_SA",
    "STATE_V2_IKE_SA_DELETE": "ZOMBIE",
    "STATE_V2_REKEY_IKE_I1": "REKEY_IKE_I1",
    "STATE_V2_REKEY_IKE_R0": "REKEY_IKE_R0",
    "STATE_V2_ESTABLISHED_CHILD_SA": "ESTABLISHED_CHILD_SA",
    "STATE_V2_NEW_CHILD_I1": "NEW_CHILD_I1",
    "STATE_V2_REKEY_CHILD_I1": "REKEY_CHILD_I1",
    "STATE_V2_CHILD_SA_DELETE": "ZOMBIE",
    "STATE_V2_IKE_AUTH_CHILD_I0": "NEW_CHILD_I0",
}
"""Our engine's state names (``ike/sa.py``) as Libreswan 5.2 counts them."""


def libreswan_global_lines(snap: dict[str, Any]) -> list[str]:
    """``whack --globalstatus``: Libreswan 5.2's lines first, in its order and with its
    keys (``config.setup.*``, ``current.*``, then the ``total.*`` counters of
    ``control/libreswan_totals.py``), then ours that it lacks (connections, DoS
    defence, traffic, uptime).
    """
    s = summary(snap)
    eng = snap["engine"]
    n_ike = s["ike_sas"]["total"]
    n_child = s["ipsec_sas"]["total"]
    counts = dict.fromkeys(LIBRESWAN_STATES, 0)
    for ike in eng["ike_sas"]:
        for st in [ike["state"]] + [ch["state"] for ch in ike["children"]]:
            key = OUR_TO_LIBRESWAN_STATE.get(st, st)
            counts[key] = counts.get(key, 0) + 1
    dos = eng.get("dos") or {}
    lines = [
        f"config.setup.ike.ddos_threshold={dos.get('ddos_ike_threshold', 0)}",
        f"config.setup.ike.max_halfopen={dos.get('max_halfopen_ike', 0)}",
        f"current.states.all={n_ike + n_child}",
        f"current.states.ipsec={n_child}",
        f"current.states.ike={n_ike}",
        f"current.states.shunts={len(eng.get('shunts', []))}",
        f"current.states.iketype.anonymous={s['ike_sas']['anonymous']}",
        f"current.states.iketype.authenticated={s['ike_sas']['authenticated']}",
        f"current.states.iketype.halfopen={s['ike_sas']['half_open']}",
        f"current.states.iketype.open={s['ike_sas']['open']}",
    ]
    lines += [f"current.states.enumerate.{k}={v}" for k, v in counts.items()]
    lines += total_lines(snap)
    shown = {ln.split("=", 1)[0] for ln in lines}
    lines += [f"{k}={v}" for k, v in global_values(snap).items()
              if k not in shown and not k.startswith("current.states.enumerate.")]
    return lines


def header_lines(snap: dict[str, Any]) -> list[str]:
    """Libreswan 5.2's head of ``--status`` (control/libreswan_header.py), then ours."""
    p = snap["pluto"]
    lines = libreswan_header_lines(snap)
    lines += [
        f"pluto version={p['version']}, pid={p['pid']}, uptime={int(p['uptime'])}s, "
        f"helpers={p['helpers']} ({p['helper_kind']})",
        f"uniqueids={'yes' if p['uniqueids'] else 'no'}, force-busy="
        f"{'yes' if p['force_busy'] else 'no'}, keep-alive={p['keep_alive']}s, "
        f"virtual-private={p['virtual_private'] or '<none>'}",
        f"crl-strict={'yes' if p['crl_strict'] else 'no'}, "
        f"crlcheckinterval={p['crlcheckinterval']:g}s, secctx-attr-type="
        f"{p['secctx_attr_type']}, debug={','.join(p['debug']) or 'none'}",
        *_ddos_lines(snap),
        "",
    ]
    return lines


def _ddos_lines(snap: dict[str, Any]) -> list[str]:
    """The DoS defence (ike/cookies.py): mode, pressure, thresholds, counters."""
    d = snap["engine"].get("dos")
    if not d:
        return []
    why = f" ({d['reason']})" if d.get("busy") and d.get("reason") else ""
    return [
        f"DDoS: mode={d['mode']}, cookies {'required' + why if d['busy'] else 'not required'}"
        f"; half-open {d['half_open']} (threshold {d['ddos_ike_threshold']}, max "
        f"{d['max_halfopen_ike']}), new IKE_SA_INIT {d['init_rate']:.0f}/s (threshold "
        f"{d['init_rate_threshold']:.0f}/s), per source {d['halfopen_per_addr']}",
        f"DDoS: cookies sent/accepted/rejected {d['cookies_sent']}/{d['cookies_accepted']}/"
        f"{d['cookies_rejected']}; dropped: half-open full {d['dropped_halfopen_full']}, "
        f"per source {d['dropped_per_addr']}; fragments buffered {d['fragment_bytes']} "
        f"bytes, dropped {d['fragments_dropped']} (caps {d['max_reassembled']}/"
        f"{d['max_fragment_buffer']})",
    ]


def shunt_lines(snap: dict[str, Any]) -> list[str]:
    """Libreswan's "Bare Shunt list": one line per negotiation or failure shunt.

    ``SRC -PROTO-> DST => %ACTION 0    WHY`` as Libreswan 5.2 prints it (the 0 is
    the policy priority Libreswan shows; ours are the kernel's defaults); WHY is the
    conn's name and which shunt it is.
    """
    lines = ["", "Bare Shunt list:", ""]
    for b in snap["engine"].get("shunts", []):
        left = f" (expires in {b['expires_in']:g}s)" if b.get("expires_in") is not None else ""
        lines.append(guard(f"{b['src']} -{b['protocol']}-> {b['dst']} => %{b['action']} 0"
                           f"    \"{escape(b['conn'])}\" {b['why']}{left}"))
    return lines


def lease_lines(snap: dict[str, Any]) -> list[str]:
    """Address pools and their leases (road-warrior gateways); nothing without pools."""
    eng = snap["engine"]
    pools, leases = eng.get("pools", []), eng.get("leases", [])
    if not pools:
        return []
    lines = ["Address pool list:", ""]
    for p in pools:
        lines.append(f"pool {p['pool']}: {p['size']} addresses, {p['in_use']} in use, "
                     f"{p['lingering']} lingering")
    for le in leases:
        lines.append(f"lease {le['address']} from {le['pool']} to "
                     f"{sanitized(le['client_id'], extra=chr(34))} "
                     f"\"{le['conn']}\" #{le['ike_serial']}")
    return lines + [""]


NAMED_STATUS = frozenset({"trafficstatus", "connectionstatus", "showstates"})
"""The status commands that take ``--name`` (Libreswan 5.2's whack): that conn only."""


def only_conns(snap: dict[str, Any], names: set[str]) -> dict[str, Any]:
    """``snap`` cut down to the connections ``names`` and their SAs (``whack --name N
    --trafficstatus | --connectionstatus | --showstates``); ``snap`` is not changed."""
    eng = snap["engine"]
    ike_sas = []
    for s in eng["ike_sas"]:
        children = [ch for ch in s["children"] if ch["conn"] in names]
        if s["conn"] in names or children:
            ike_sas.append({**s, "children": children})
    pluto = {**snap["pluto"],
             "unoriented": [n for n in snap["pluto"].get("unoriented", []) if n in names]}
    return {**snap, "pluto": pluto,
            "engine": {**eng, "ike_sas": ike_sas,
                       "connections": [c for c in eng["connections"] if c["name"] in names]}}


def render(cmd: str, snap: dict[str, Any]) -> list[str]:
    """The text lines of a status command; every line is safe to print (see the
    module docstring)."""
    return [guard(line) for line in _render(cmd, snap)]


def _render(cmd: str, snap: dict[str, Any]) -> list[str]:
    if cmd == "status":
        lines = header_lines(snap)
        lines.append("Connection list:")
        lines.append("")
        lines += libreswan_connection_lines(snap)
        lines.append("")
        lines += _summary_lines(snap)
        lines.append("")
        lines += state_lines(snap)
        lines += shunt_lines(snap)
        lines += lease_lines(snap)
        return lines
    if cmd == "connectionstatus":
        return libreswan_connection_lines(snap) + [""] + _summary_lines(snap)[:1]
    if cmd == "briefstatus":  # Libreswan's show_brief_status: no connection totals
        return _summary_lines(snap)[2:]
    if cmd == "showstates":
        return state_lines(snap)
    if cmd == "trafficstatus":
        return traffic_lines(snap)
    if cmd == "globalstatus":
        return libreswan_global_lines(snap)
    if cmd == "shuntstatus":
        return shunt_lines(snap)
    raise ValueError(cmd)


def json_view(cmd: str, snap: dict[str, Any]) -> dict[str, Any]:
    """The ``--json`` object of a status command (schema in docs/control-protocol.md)."""
    out: dict[str, Any] = {"schema": JSON_SCHEMA, "command": cmd}
    eng = snap["engine"]
    if cmd == "status":
        out.update(pluto=snap["pluto"], now=snap["now"], connections=eng["connections"],
                   instances=_instance_views(snap), ike_sas=_with_instances(snap),
                   summary=summary(snap),
                   counters=snap.get("counters", {}), plane=snap.get("plane", {}),
                   dos=eng.get("dos"), leases=eng.get("leases", []), pools=eng.get("pools", []))
    elif cmd == "connectionstatus":
        out.update(connections=eng["connections"], instances=_instance_views(snap),
                   summary=summary(snap))
    elif cmd == "briefstatus":
        out.update(summary=summary(snap))
    elif cmd == "showstates":
        out.update(ike_sas=_with_instances(snap))
    elif cmd == "trafficstatus":
        out.update(child_sas=traffic_rows(snap))
    elif cmd == "shuntstatus":
        out.update(shunts=eng.get("shunts", []))
    elif cmd == "globalstatus":
        out.update(values={k: int(v) for k, v in
                           (ln.split("=", 1) for ln in libreswan_global_lines(snap))},
                   counters=snap.get("counters", {}), plane=snap.get("plane", {}),
                   dos=eng.get("dos"))
    return out


class SecretRecord(Protocol):
    """What ``--listpsks`` reads of an ``ipsec.secrets`` record (``config.model.Secret``)."""

    @property
    def kind(self) -> str: ...

    @property
    def indices(self) -> Sequence[object]: ...

    @property
    def origin(self) -> object | None: ...


def render_psks(records: Iterable[SecretRecord], files: Iterable[str] = ()) -> list[str]:
    """``--listpsks``: which IDs have a pre-shared key; never the key itself."""
    src = ", ".join(files)
    lines = [f"List of Pre-shared Keys{f' (from {src})' if src else ''}", ""]
    n = 0
    for r in records:
        if r.kind != "PSK":
            continue
        n += 1
        ids = " ".join(escape(str(i)) for i in r.indices) or "%any"
        origin = r.origin
        where = f"  ({origin})" if origin else ""
        lines.append(f"{n:5d}: PSK {ids}{where}")
    if n == 0:
        lines.append("    (none)")
    return [guard(line) for line in lines]
