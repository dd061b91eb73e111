"""Child SA negotiation shared by IKE_AUTH and CREATE_CHILD_SA (RFC 7296 §1.3, §2.9, §2.17).

``offer`` builds the initiator's SA/TSi/TSr payloads; ``accept`` is the
responder's choice (proposal, selectors, mode) and ``finish`` the initiator's
check of the answer.  Both end in a ``ChildSA`` and its keys, which the engine
installs.

With ``phase2=ah`` the Child SA is AH (RFC 4302): the SA payload carries AH
proposals (no ENCR, §3.3.3) and the keys are the two integrity keys (§2.17).
AH cannot traverse a NAT (RFC 3948 covers ESP only), so an AH Child SA is
refused when a NAT is detected or ``encapsulation=yes``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pypluto.config import ids
from pypluto.config.model import Connection, Identity
from pypluto.config.values import UNIQUE_MARK
from pypluto.config.virtual_private import VirtualPrivate
from pypluto.crypto import keys
from pypluto.crypto.errors import CryptoError
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.iana import ProtocolID
from pypluto.ike import auth_sig, codec, proposals
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import FailReason
from pypluto.ike.codec import Payload, Proposals
from pypluto.ike.conn_index import negotiable
from pypluto.ike.context import IKEContext
from pypluto.ike.identity import local_identity, remote_null, remote_pattern
from pypluto.ike.sa import IKESA, ChildSA, ChildState
from pypluto.ike.ts import TS
from pypluto.wire import payloads as wp

PROTO_ESP = ProtocolID.ESP


def configured_ts(ike: IKESA, conn: Connection) -> tuple[list[TS], list[TS]]:
    """(local, remote) selectors of a connection; an end without subnets is its host."""
    loc, rem = conn.local, conn.remote
    if loc.subnets:
        lts = [tsmod.from_network(n, loc.protoport) for n in loc.subnets]
    else:
        lts = [tsmod.from_addr(loc.host_addr or ike.local.addr, loc.protoport)]
    if ike.remote_vips and not rem.subnets:  # a road warrior's leased address (§3.15)
        rts = [tsmod.from_addr(a, rem.protoport) for a in ike.remote_vips]
    elif rem.subnets:
        rts = [tsmod.from_network(n, rem.protoport) for n in rem.subnets]
    else:
        rts = [tsmod.from_addr(rem.host_addr or ike.remote.addr, rem.protoport)]
    return lts, rts


def encap_for(ike: IKESA) -> tuple[int, int] | None:
    """ESP-in-UDP ports when a NAT was detected or ``encapsulation=yes`` (RFC 3948);
    never with ``encapsulation=no`` (ipsec.conf(5): plain ESP even through a NAT)."""
    if ike.conn.encapsulation == "no":
        return None
    if ike.conn.encapsulation == "yes":
        return (ike.local.port, ike.remote.port)
    # a NAT the peer's NAT_DETECTION claims, though it never left port 500 (§2.23: it
    # floats to 4500 when it sees one): it saw none, and sends plain ESP; ESP in UDP
    # on the IKE port is no RFC 3948 encapsulation at all
    if (ike.nat_local or ike.nat_remote) and (ike.local.port, ike.remote.port) != (500, 500):
        return (ike.local.port, ike.remote.port)
    return None


def ah_nat_refusal(ike: IKESA, conn: Connection) -> str:
    """Why an AH Child SA cannot be made on this IKE SA, or "" (RFC 3948 is ESP only)."""
    if conn.phase2 != "ah":
        return ""
    if conn.encapsulation == "yes":  # (it also fakes NAT detection, RFC 7296 §2.23)
        return "phase2=ah cannot be combined with encapsulation=yes (RFC 3948 is ESP only)"
    if ike.nat_local or ike.nat_remote:
        return "phase2=ah cannot traverse the NAT detected on this IKE SA (RFC 3948 is ESP only)"
    return ""


def _proto_name(protocol: int) -> str:
    return "AH" if protocol == ProtocolID.AH else "ESP"


def new_child(ctx: IKEContext, ike: IKESA, conn: Connection, initiator: bool) -> ChildSA:
    """A Child SA with a reserved inbound SPI, not installed yet."""
    c = ChildSA(serial=ctx.new_serial(), conn=conn, parent=ike, state=ChildState.NEW_I,
                initiator=initiator, local_addr=ike.local.addr, remote_addr=ike.remote.addr)
    ctx.reserve_child_spi(c)
    # one reqid per peer of a %any template, unless the template fixes the peer's subnet
    # (only one peer can own it: its policies replace the template's trap, ike/traps.py);
    # the registered conn decides: an instance ike_delete revives is a copy bound to its
    # peer, and two such copies must not share the template's one reqid
    reg = ctx.connections.get(conn.name, conn)
    c.reqid = ctx.reqid_for(conn, None if reg.remote.host_addr is not None
                            or reg.remote.subnets else ike.remote_id or ike.remote.addr)
    c.mode = "transport" if conn.type == "transport" else "tunnel"
    c.protocol = "ah" if conn.phase2 == "ah" else "esp"
    return c


def offer(ike: IKESA, c: ChildSA, pfs_group: int | None = None,
          ts: tuple[list[TS], list[TS]] | None = None) -> tuple[list[Payload], Proposals]:
    """(payloads SA, TSi, TSr [, USE_TRANSPORT_MODE], the proposals sent)."""
    conn = c.conn
    specs, proto = proposals.child_specs(conn.esp, conn.ah, conn.phase2)
    sent = proposals.build_proposals(specs, proto, c.spi_in.to_bytes(4, "big"), ike=False,
                                     esn=conn.esn, pfs_group=pfs_group,
                                     ke_none_too=conn.ms_dh_downgrade)
    lts, rts = ts if ts is not None else configured_ts(ike, conn)
    if ts is None and ike.acquired_ts is not None and conn is ike.conn:
        # RFC 7296 §2.9: the packet that hit the trap goes first (ike/traps.py)
        pi, pr = ike.acquired_ts
        if (pi, pr) != (lts[0], rts[0]):
            lts, rts = [pi, *lts], [pr, *rts]
    c.local_ts, c.remote_ts = lts, rts
    out: list[Payload] = [codec.sa(sent), codec.ts_payload(PT.TSi, lts),
                          codec.ts_payload(PT.TSr, rts)]
    if c.mode == "transport":
        out.insert(0, codec.notify(N.USE_TRANSPORT_MODE))
    if conn.send_no_esp_tfc:
        out.append(codec.notify(N.ESP_TFC_PADDING_NOT_SUPPORTED))
    return out, sent


def _ts_pair(payloads: Sequence[Payload]) -> tuple[wp.TSPayload | None, wp.TSPayload | None]:
    return (codec.first(payloads, wp.TSPayload, PT.TSi),
            codec.first(payloads, wp.TSPayload, PT.TSr))


def _nat_inner(ctx: IKEContext, ike: IKESA, conn: Connection, tsi: list[TS],
               rconf: list[TS]) -> list[TS]:
    """A host-to-host peer behind a NAT may name its inner address in TSi (§2.23).

    A conn never grants a selector outside its own configuration: the claimed
    inner address is accepted only when the peer is behind a NAT *and*
    ``virtual-private=`` allows it (Libreswan's ``vhost:``/``vnet:`` rule).  With
    ``virtual-private=`` unset, or the address outside it, our own view (the
    peer's outer address) holds, so a faked NAT detection cannot claim someone
    else's address (selector hijack, issue 12).
    """
    if conn.remote.subnets or not ike.nat_remote or not ctx.settings.virtual_private \
            or ike.remote_vips or conn.remote.addresspool or conn.local.modecfgserver:
        # a road warrior's inner address is the one leased from the pool (§3.15), never
        # one it claims: else it could name the address leased to another client
        return rconf
    hint = next((t for t in tsi if t.start == t.end), None)
    if hint is None:
        return rconf
    try:
        vp = VirtualPrivate.parse(ctx.settings.virtual_private)
    except ValueError:  # the daemon refuses a bad list at start; be safe anyway
        return rconf
    if not vp.allows(ipaddress.ip_network(hint.start_addr())):
        return rconf
    return [hint]


def _nat_transport(ike: IKESA, conn: Connection, transport: bool) -> bool:
    """Transport mode with the peer behind a NAT (RFC 7296 §2.23.1).

    The selectors the peer sends name its inner address; the SA is installed for
    its real (outer) address whatever TSi says.
    """
    return transport and conn.type == "transport" and ike.nat_remote and \
        not conn.remote.subnets


def _leasing(ike: IKESA, conn: Connection, payloads: Sequence[Payload]) -> bool:
    """Does the peer ask us for its inner address (§3.15)?  It offers TSi for the whole
    space, not knowing its address, and we narrow it, whatever narrowing= says."""
    return bool(ike.remote_vips or conn.remote.addresspool or conn.local.modecfgserver
                or any(p.payload_type == PT.CP for p in payloads))


def ts_fits(ctx: IKEContext, ike: IKESA, conn: Connection, payloads: Sequence[Payload]
            ) -> bool:
    """Would ``conn``'s selectors answer this request (to pick among connections)?"""
    return ts_fit_grade(ctx, ike, conn, payloads) > 0


FIT_NONE, FIT_SOME, FIT_PART, FIT_ALL = 0, 1, 2, 3


def ts_fit_grade(ctx: IKEContext, ike: IKESA, conn: Connection, payloads: Sequence[Payload]
                 ) -> int:
    """How ``conn``'s selectors answer this request, to pick the best of several conns:
    FIT_NONE (not at all), FIT_SOME (leaving some of its own selectors out, which it
    then blocks), FIT_PART (all of its own, but not every proposed one: a subset, §2.9)
    or FIT_ALL."""
    tsi_p, tsr_p = _ts_pair(payloads)
    if tsi_p is None or tsr_p is None:
        return FIT_ALL
    tsi, tsr = codec.ts_list(tsi_p), codec.ts_list(tsr_p)
    if not tsi or not tsr or max(len(tsi), len(tsr)) > tsmod.MAX_SELECTORS:
        return FIT_NONE
    lconf, rconf = configured_ts(ike, conn)
    if _nat_transport(ike, conn, codec.has_notify(payloads, N.USE_TRANSPORT_MODE)):
        return FIT_ALL if tsmod.narrow(tsr, lconf, conn.narrowing) is not None else FIT_NONE
    rconf = _nat_inner(ctx, ike, conn, tsi, rconf)
    fit_i = tsmod.narrow if _leasing(ike, conn, payloads) else tsmod.fit  # a lease narrows TSi
    ans_i, ans_r = fit_i(tsi, rconf, conn.narrowing), tsmod.fit(tsr, lconf, conn.narrowing)
    if ans_i is None or ans_r is None or not tsmod.pairs(ans_r, ans_i):
        return FIT_NONE
    if tsmod.left_out(ans_r, ans_i, lconf, rconf):
        return FIT_SOME
    if tsmod.left_out(ans_r, ans_i, tsr, tsi):
        return FIT_PART
    return FIT_ALL


def _mark_key(conn: Connection) -> tuple[object, ...] | None:
    """What separates a conn's kernel policies from another's with the same selectors
    (XFRM marks, ipsec-interface=); None when each instance has its own (mark=-1)."""
    marks = (conn.mark_in, conn.mark_out)
    if any(m is not None and m[0] == UNIQUE_MARK for m in marks):
        return None
    return (*marks, conn.ipsec_interface)


def steals(ctx: IKEContext, conn: Connection, reqid: int, local: list[TS], remote: list[TS],
           conf_local: list[TS], conf_remote: list[TS]) -> str:
    """Why a Child SA of ``conn`` with selectors ``local`` === ``remote`` would take the
    traffic of another conn's established Child SA, or "".

    A pair the peer chose (narrowed from ours, not one of our configured pairs) that
    equals a pair of another Child SA's (the kernel keeps one policy per selector: the
    new one would replace it) or lies inside one (the narrower policy wins) would send
    that Child SA's traffic to this peer; Libreswan refuses the equal case ("cannot
    install kernel policy ...; in use by").  Child SAs sharing the reqid share their
    policies by design, and so do those narrowed from it, the same peer's, with reqids
    of their own (``Engine.install_child``); separate marks or interfaces keep
    policies apart.
    """
    chosen = [(lt, rt) for lt in local for rt in remote if lt.version == rt.version
              and not (lt in conf_local and rt in conf_remote)]
    mine = _mark_key(conn)
    if not chosen or mine is None:
        return ""
    for o in ctx.policy_owner.values():
        if reqid in (o.reqid, o.narrowed_from) or o.state is not ChildState.ESTABLISHED or \
                _mark_key(o.conn) != mine:
            continue
        for lt, rt in chosen:
            for olt in o.local_ts:
                for ort in o.remote_ts:
                    if tsmod.contains(olt, lt) and tsmod.contains(ort, rt):
                        return (f"traffic selectors {lt}==={rt} lie inside {olt}==={ort} of "
                                f"Child SA #{o.serial} (\"{o.conn.name}\")")
    return ""


def other_connections(ctx: IKEContext, ike: IKESA) -> list[Connection]:
    """Connections that may share this IKE SA: same addresses, the peer's ID matches,
    and the IKE_AUTH that authenticated it would have done for them too: our ID is the
    same (Libreswan's compare_connection_id), and so is what the peer had to show
    (``rightauth=``/``authby=``, ``rightca=``, a pinned ``rightcert=`` or raw key) —
    else a peer that authenticated with a PSK, or NULL, could take the Child SAs of a
    conn that asks for a certificate (§2.9 conn switching).  A shunt conn
    (``type=passthrough|drop|reject``, ``authby=never``) is never negotiated."""
    out = []
    base = ike.conn
    own = _our_id(ctx, ike, base)
    for conn in ctx.connections.values():
        if conn is base or not negotiable(conn):  # never a shunt (type=drop...) conn
            continue
        if conn.local.host_addr not in (None, ike.local.addr):
            continue
        if conn.remote.host_addr not in (None, ike.remote.addr):
            continue
        if not ids.id_matches(remote_pattern(conn), ike.remote_id):
            continue
        if _peer_auth_key(conn) != _peer_auth_key(base):
            continue
        mine = _our_id(ctx, ike, conn)
        if (mine.id_type, mine.data) == (own.id_type, own.data):
            out.append(conn)
    return out


def _our_id(ctx: IKEContext, ike: IKESA, conn: Connection) -> Identity:
    return auth_sig.local_id(ctx, conn) or local_identity(ike, conn)


def _peer_auth_key(conn: Connection) -> tuple[object, ...]:
    """What a conn asks of the peer's authentication (compared, not interpreted)."""
    end = conn.remote
    words = frozenset(w.strip().lower() for w in
                      (end.auth or conn.authby or "").replace("|", ",").split(",") if w.strip())
    return (words, remote_null(conn), end.ca, end.cert,
            tuple(end.raw.get(k) for k in ("rsasigkey", "ecdsakey", "pubkey")))


def ke_groups(ike: IKESA, conn: Connection) -> set[int]:
    """The KE groups a Child SA of ``conn`` may use (what ``respond_child`` and ``accept`` take):
    the ``esp=``/``ah=`` groups, else (no group written) the IKE SA's; none with
    ``pfs=no``.  An INVALID_KE_PAYLOAD asking for another group is refused, not followed:
    the peer does not choose a group we never offered (RFC 7296 §1.3, §2.7)."""
    if not conn.pfs:
        return set()
    specs = proposals.child_specs(conn.esp, conn.ah, conn.phase2)[0]
    return {int(g) for s in specs for g in s.ke} or {ike.ke_group}


def peer_spi_refusal(ctx: IKEContext | None, ike: IKESA, spi: bytes, proto: int) -> str:
    """Why the peer's 4-byte AH/ESP SPI (our outbound SA's) is refused, or "".

    RFC 4303 §2.1 / RFC 4302 §2.4: SPI 0 is never sent on the wire and 1..255 are
    reserved by IANA (we never allocate them either).  An SPI that another SA of ours
    already has would collide with it in the data plane or in the SPI indexes
    (``IKEContext.spi_in_use``).
    """
    val = int.from_bytes(spi, "big")
    pname = _proto_name(proto)
    if val < 256:
        return f"the peer's {pname} SPI {val:#x} is reserved (RFC 4303 §2.1)"
    if ctx is not None and ctx.spi_in_use(val):
        return f"the peer's {pname} SPI {val:#010x} is already in use by another SA"
    return ""


def accept(ctx: IKEContext, ike: IKESA, conn: Connection, payloads: Sequence[Payload],
           ni: bytes, nr: bytes, ke_group: int | None, shared: bytes | None,
           old: ChildSA | None = None, create_child: bool = False
           ) -> tuple[ChildSA | None, list[Payload], str, FailReason]:
    """Responder: (Child SA or None, payloads for the answer, why and reason on failure).

    ``create_child`` (CREATE_CHILD_SA, §1.3): ``pfs=`` is enforced both ways, as
    Libreswan does: with ``pfs=yes`` a request without KE is refused, with
    ``pfs=no`` a request with KE (a PFS we did not offer) is refused, both with
    NO_PROPOSAL_CHOSEN.  IKE_AUTH has no KE (§1.2), so it is not checked there.
    """
    sa_p = codec.first(payloads, wp.SAPayload)
    tsi_p, tsr_p = _ts_pair(payloads)
    if sa_p is None:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], "no SA payload", FailReason.PROPOSAL
    if tsi_p is None or tsr_p is None:
        return None, [codec.notify(N.TS_UNACCEPTABLE)], "no TS payloads", FailReason.TRAFFIC_SELECTORS
    tsi, tsr = codec.ts_list(tsi_p), codec.ts_list(tsr_p)
    if not tsi or not tsr:
        return None, [codec.notify(N.TS_UNACCEPTABLE)], "malformed or empty traffic selectors", FailReason.TRAFFIC_SELECTORS
    if max(len(tsi), len(tsr)) > tsmod.MAX_SELECTORS:
        return None, [codec.notify(N.TS_UNACCEPTABLE)], \
            f"more than {tsmod.MAX_SELECTORS} traffic selectors", FailReason.TRAFFIC_SELECTORS
    if codec.ts_labeled(tsi_p) or codec.ts_labeled(tsr_p):
        # labeled IPsec (RFC 9478): ignoring the label would install a wider SA than
        # asked for (§2.9 lets a responder narrow, never widen); Libreswan without a
        # label answers TS_UNACCEPTABLE too (ikev2-labeled-ipsec-04-no-label-on-responder)
        return None, [codec.notify(N.TS_UNACCEPTABLE)], \
            "security labels (TS_SECLABEL) are not supported", FailReason.TRAFFIC_SELECTORS
    if create_child and conn.pfs and ke_group is None and not conn.ms_dh_downgrade:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], \
            "pfs=yes and the request has no KE payload", FailReason.PROPOSAL
    if create_child and not conn.pfs and ke_group is not None:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], \
            "pfs=no and the request carries a KE payload", FailReason.PROPOSAL
    specs, proto = proposals.child_specs(conn.esp, conn.ah, conn.phase2)
    pname = _proto_name(proto)
    nat_refused = ah_nat_refusal(ike, conn)
    if nat_refused:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], nat_refused, FailReason.PROPOSAL
    pfs = None
    if ke_group is not None:
        pfs = ike.ke_group
    chosen = proposals.choose(codec.sa_tuples(sa_p), specs, proto, ike=False,
                              esn=conn.esn, pfs_group=pfs, prefer_ke=ke_group)
    if chosen is None and ke_group is not None:
        # the peer may offer several groups: accept any of ours
        for g in sorted(ke_groups(ike, conn)):
            chosen = proposals.choose(codec.sa_tuples(sa_p), specs, proto, ike=False,
                                      esn=conn.esn, pfs_group=g, prefer_ke=ke_group)
            if chosen is not None:
                break
    if chosen is None:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], f"no acceptable {pname} proposal", FailReason.PROPOSAL
    if len(chosen.spi) != 4:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], f"bad {pname} SPI size", FailReason.PROPOSAL
    why_spi = peer_spi_refusal(ctx, ike, chosen.spi, proto)
    if why_spi:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], why_spi, FailReason.PROPOSAL
    if ke_group is not None and chosen.ke != ke_group:
        return None, [codec.notify(N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))], \
            "KE group does not match the proposal", FailReason.PROPOSAL
    want_transport = codec.has_notify(payloads, N.USE_TRANSPORT_MODE)
    if conn.type == "transport" and not want_transport:
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], "transport mode required", FailReason.PROPOSAL
    lconf, rconf = configured_ts(ike, conn)
    if old is None and not ike.remote_vips and not conn.remote.subnets and \
            (conn.remote.addresspool or conn.local.modecfgserver):
        # a road warrior's Child SA is for its leased address (§3.15), and this IKE SA
        # has none (INTERNAL_ADDRESS_FAILURE, FAILED_CP_REQUIRED or a childless IKE_AUTH
        # without CP): not one for its outer address (test_hostile_cp26)
        return None, [codec.notify(N.TS_UNACCEPTABLE)], \
            "no address was leased to the peer", FailReason.TRAFFIC_SELECTORS
    if old is not None:
        lconf, rconf = old.local_ts, old.remote_ts
    # (a rekey too: the peer names its inner address again, the SA keeps the outer one)
    nat_transport = _nat_transport(ike, conn, want_transport)
    if old is None and not nat_transport:
        rconf = _nat_inner(ctx, ike, conn, tsi, rconf)
    narrowing = conn.narrowing
    # narrowing=no: exactly our selectors (ts.fit); a road warrior's lease (§3.15) and
    # the NAT'd transport peer (below) are narrowed from whatever the peer offers
    fit_i = tsmod.narrow if (_leasing(ike, conn, payloads) or nat_transport) else tsmod.fit
    fit_r = tsmod.fit
    if old is not None:
        # §2.9.2: a rekey keeps the Child SA's selectors; the request must cover them (a
        # peer may propose its original wider ones) and we answer exactly them, never a
        # narrower part (Libreswan's verify_rekey_child_request_ts)
        fit_i = fit_r = tsmod.narrow
        narrowing = False
    ans_i = installed_i = fit_i(tsi, rconf, narrowing)
    if nat_transport:
        # §2.23.1: the peer's TSi names its inner address; we answer with it (the
        # peer checks its own selectors) but install the SA for its outer address
        # only, and only with the protocol/ports our conn allows
        r = rconf[0]
        hint = next((t for t in tsi if t.start == t.end and t.version == r.version
                     and tsmod.contains(t._replace(start=r.start, end=r.end), r)), None)
        if hint is not None:
            ans_i = [hint._replace(proto=r.proto, sport=r.sport, eport=r.eport)]
            installed_i = list(rconf)
    ans_r = fit_r(tsr, lconf, narrowing)
    if ans_i is None or ans_r is None or installed_i is None or \
            not tsmod.pairs(ans_r, installed_i) or \
            tsmod.too_many(ans_r, installed_i, lconf, rconf):
        return None, [codec.notify(N.TS_UNACCEPTABLE)], (
            f"traffic selectors {tsmod.fmt(tsi)}==={tsmod.fmt(tsr)} do not match "
            f"{tsmod.fmt(rconf)}==={tsmod.fmt(lconf)}"), FailReason.TRAFFIC_SELECTORS
    c = new_child(ctx, ike, conn, initiator=False)
    stolen = steals(ctx, conn, c.reqid, ans_r, installed_i, lconf, rconf) if old is None else ""
    if stolen:
        ctx.release_child(c)
        return None, [codec.notify(N.TS_UNACCEPTABLE)], stolen, FailReason.TRAFFIC_SELECTORS
    c.chosen = chosen
    c.spi_out = int.from_bytes(chosen.spi, "big")
    c.local_ts, c.remote_ts = ans_r, installed_i
    # narrowing=no: the configured selectors the initiator did not propose (a subset
    # of whole ones, §2.9) are blocked, as Libreswan's END_EQUALS_TS; a rekey keeps the
    # old Child SA's (its selectors are the subset)
    if old is not None:
        c.blocked = old.blocked
    elif not narrowing:
        c.blocked = tsmod.left_out(ans_r, installed_i, lconf, rconf)
    c.mode = "transport" if (want_transport and conn.type == "transport") else "tunnel"
    c.peer_no_tfc = codec.has_notify(payloads, N.ESP_TFC_PADDING_NOT_SUPPORTED)
    c.encap = encap_for(ike)
    c.nonce_min = min(ni, nr)
    assert ike.chosen is not None
    try:
        c.keys = keys.derive_child_keys(ike.chosen.prf, ike.sk_d, ni, nr, chosen.encr,
                                        chosen.encr_bits, chosen.integ or None, shared)
    except CryptoError as e:
        ctx.release_child(c)
        return None, [codec.notify(N.NO_PROPOSAL_CHOSEN)], f"key derivation failed: {e}", FailReason.LOCAL
    out: list[Payload] = [_sa_answer(chosen, proto, c.spi_in.to_bytes(4, "big"))]
    tail: list[Payload] = [_ts_answer(PT.TSi, ans_i), _ts_answer(PT.TSr, ans_r)]
    if c.mode == "transport":
        tail.insert(0, codec.notify(N.USE_TRANSPORT_MODE))
    if conn.send_no_esp_tfc:
        tail.append(codec.notify(N.ESP_TFC_PADDING_NOT_SUPPORTED))
    return c, out + tail, "", FailReason.NONE


# Answer templates (issue 18): a connection answers every peer with the same proposal
# and, mostly, the same selectors; those payload bodies are serialized once.  The key
# spaces are small (transform combinations, configured selectors); the cap only
# guards against a road-warrior gateway with a selector per peer.
_TEMPLATE_CAP = 256
_SA_ANSWERS: dict[tuple[int, int | None, int, int, bool, int, tuple[int, ...], int], bytes] = {}
_TS_ANSWERS: dict[tuple[int, tuple[TS, ...]], Payload] = {}


def _sa_answer(chosen: proposals.Chosen, proto: int, spi: bytes) -> Payload:
    """Our single-proposal SA payload (§3.3.6) with our 4-byte SPI ``spi``: the body
    is the template of ``chosen`` with the SPI written in (proposal header, SPI, §3.3.1)."""
    # every field chosen_proposal reads for a Child SA (RFC 9370 ADDKE included)
    key = (chosen.encr, chosen.encr_bits, chosen.integ, chosen.ke, chosen.esn, chosen.number,
           tuple(chosen.addke), int(proto))
    body = _SA_ANSWERS.get(key)
    if body is None:
        body = codec.sa([proposals.chosen_proposal(chosen, proto, bytes(4), ike=False)]
                        ).serialize()
        if len(_SA_ANSWERS) < _TEMPLATE_CAP:
            _SA_ANSWERS[key] = body
    return wp.UnknownPayload(PT.SA, body[:8] + spi + body[12:])


def _ts_answer(ptype: int, tss: list[TS]) -> Payload:
    """A TSi/TSr payload of ``tss`` (§3.13), serialized once per selector list; the
    payload is shared, and only ever serialized."""
    key = (ptype, tuple(tss))
    p = _TS_ANSWERS.get(key)
    if p is None:
        p = wp.UnknownPayload(ptype, codec.ts_payload(ptype, tss).serialize())
        if len(_TS_ANSWERS) < _TEMPLATE_CAP:
            _TS_ANSWERS[key] = p
    return p


def finish(ike: IKESA, c: ChildSA, sent: Proposals, payloads: Sequence[Payload], ni: bytes,
           nr: bytes, shared: bytes | None, ke_group: int | None) -> tuple[str, FailReason]:
    """Initiator: check the answer and derive keys: ("", NONE) on success, else why."""
    conn = c.conn
    sa_p = codec.first(payloads, wp.SAPayload)
    tsi_p, tsr_p = _ts_pair(payloads)
    if sa_p is not None:
        # the peer has installed the Child SA it answered with: remember its SPI so
        # that a Child SA we refuse below is deleted on its side too (§1.3, §2.9)
        answered = codec.sa_tuples(sa_p)
        if len(answered) == 1 and len(answered[0][2]) == 4:
            c.spi_out = int.from_bytes(answered[0][2], "big")
    if sa_p is None or tsi_p is None or tsr_p is None:
        return "the answer lacks SA, TSi or TSr", FailReason.PROPOSAL
    chosen = proposals.check_answer(codec.sa_tuples(sa_p), sent, ike=False)
    if chosen is None or len(chosen.spi) != 4:
        pname = _proto_name(sent[0][1]) if sent else "ESP"
        return f"the answer is not one of our {pname} proposals", FailReason.PROPOSAL
    if (ke_group or 0) != (chosen.ke or 0):
        return "the answer's KE group does not match", FailReason.PROPOSAL
    tsi, tsr = codec.ts_list(tsi_p), codec.ts_list(tsr_p)
    if not tsi or not tsr:
        return "malformed traffic selectors in the answer", FailReason.TRAFFIC_SELECTORS
    if max(len(tsi), len(tsr)) > tsmod.MAX_SELECTORS:
        return (f"the answer has more than {tsmod.MAX_SELECTORS} traffic selectors",
                FailReason.TRAFFIC_SELECTORS)
    if codec.ts_labeled(tsi_p) or codec.ts_labeled(tsr_p):  # not a subset of ours (§2.9)
        return ("the answer carries a security label (TS_SECLABEL) we did not ask for",
                FailReason.TRAFFIC_SELECTORS)
    narrowing = conn.narrowing or c.rekey_of is not None
    lconf, rconf = c.local_ts, c.remote_ts
    if ike.acquired_ts is not None and len(lconf) > 1 and len(rconf) > 1 and \
            (lconf[0], rconf[0]) == ike.acquired_ts:  # §2.9: the packet was only a hint
        lconf, rconf = lconf[1:], rconf[1:]
    if ike.local_vips:  # we offered the whole space; the gateway narrows to our address
        narrowing = True
        if not _inside_vips(ike, tsi):
            return (f"traffic selector {tsmod.fmt(tsi)} is not our address "
                    f"{', '.join(str(a) for a in ike.local_vips)}", FailReason.TRAFFIC_SELECTORS)
    if not tsmod.answer_ok(tsi, lconf, lconf, narrowing) or \
            not tsmod.answer_ok(tsr, rconf, rconf, narrowing or (
                not conn.remote.subnets and ike.nat_remote)) or not tsmod.pairs(tsi, tsr) \
            or tsmod.too_many(tsi, tsr, lconf, rconf):
        return (f"traffic selectors {tsmod.fmt(tsi)}==={tsmod.fmt(tsr)} are not acceptable", FailReason.TRAFFIC_SELECTORS)
    transport = codec.has_notify(payloads, N.USE_TRANSPORT_MODE)
    if c.mode == "transport" and not transport:
        return "peer refused transport mode", FailReason.PROPOSAL
    if c.mode != "transport" and transport:  # §1.3.1: only an answer to our request
        return "peer answered USE_TRANSPORT_MODE to a tunnel-mode request", FailReason.PROPOSAL
    c.chosen = chosen
    c.spi_out = int.from_bytes(chosen.spi, "big")
    c.local_ts, c.remote_ts = tsi, tsr
    # narrowing=no: our selectors the responder left out (a subset of whole ones,
    # §2.9) are blocked; a rekey keeps the old Child SA's
    if c.rekey_of is not None:
        c.blocked = c.rekey_of.blocked
    elif not narrowing:
        c.blocked = tsmod.left_out(tsi, tsr, lconf, rconf)
    c.peer_no_tfc = codec.has_notify(payloads, N.ESP_TFC_PADDING_NOT_SUPPORTED)
    c.encap = encap_for(ike)
    c.local_addr, c.remote_addr = ike.local.addr, ike.remote.addr
    c.nonce_min = min(ni, nr)
    assert ike.chosen is not None
    try:
        c.keys = keys.derive_child_keys(ike.chosen.prf, ike.sk_d, ni, nr, chosen.encr,
                                        chosen.encr_bits, chosen.integ or None, shared)
    except CryptoError as e:
        return f"key derivation failed: {e}", FailReason.LOCAL
    return "", FailReason.NONE


def answer_steals(ctx: IKEContext, ike: IKESA, c: ChildSA) -> str:
    """Initiator: ``steals`` for the selectors a new Child SA's answer gave (``finish``)."""
    lconf, rconf = configured_ts(ike, c.conn)
    return steals(ctx, c.conn, c.reqid, c.local_ts, c.remote_ts, lconf, rconf)


def _inside_vips(ike: IKESA, tsi: list[TS]) -> bool:
    """Every selector of ours in the answer lies inside an address we were given."""
    vips = [tsmod.from_addr(a) for a in ike.local_vips]
    return all(any(v.version == t.version and v.start <= t.start and t.end <= v.end
                   for v in vips) for t in tsi)
