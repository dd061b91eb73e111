"""IKE_AUTH with PSK and the first Child SA (RFC 7296 §1.2, §2.15, §2.16; RFC 6023).

Initiator: ``IKEAuth.build`` sends IDi, AUTH, [IDr], [INITIAL_CONTACT] and the
Child SA offer; ``on_response`` verifies the responder's AUTH.
Responder: ``IKEAuth.respond`` picks the connection by the peer's ID, verifies AUTH
with the PSK from the SecretStore, answers AUTHENTICATION_FAILED (and deletes the
state, CVE-2024-2357) or IDr, AUTH and the Child SA (or an error notify for the
Child SA only: NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from pypluto.config import ids
from pypluto.config.model import Connection, End, Identity
from pypluto.crypto import auth as cauth
from pypluto.iana import AuthMethod, ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.ike import addke, auth_sig, codec, ppk
from pypluto.ike import child as childmod
from pypluto.ike.actions import Action, ConnectionEvent, EventKind, FailReason, Log
from pypluto.ike.codec import Payload, Proposals
from pypluto.ike.context import IKEContext
from pypluto.ike.identity import (
    id_desc,
    identity_from_wire,
    local_identity,
    local_null,
    remote_null,
    remote_pattern,
    wire_id_problem,
)
from pypluto.ike.sa import IKESA, ChildSA, ChildState, IKEState
from pypluto.ike.tasks import config_payload as cpmod
from pypluto.ike.tasks import mobike, redirect
from pypluto.ike.tasks.auth_failed import AuthFailedNotice
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.ike.tasks.child_delete import delete_spi_unknown
from pypluto.ike.tasks.common import fail, nname, reason_for_notify, set_ike_timers
from pypluto.ike.tasks.ike_delete import delete_ike, send_delete_now
from pypluto.params import IPAddress
from pypluto.wire import payloads as wp

AUTH_PSK = AuthMethod.SHARED_KEY_MIC
_CHILD_TYPES = frozenset((int(PT.SA), int(PT.TSi), int(PT.TSr)))  # a Child SA is asked for
AUTH_NULL = AuthMethod.NULL_AUTH


def _method(conn: Connection) -> int:
    """Our AUTH method when we do not sign: PSK, or NULL authentication (RFC 7619 §2.1)."""
    return AUTH_NULL if local_null(conn) else AUTH_PSK


def _peer_method(conn: Connection) -> int:
    """The peer's AUTH method when it does not sign: PSK or NULL."""
    return AUTH_NULL if remote_null(conn) else AUTH_PSK


def _null_key(ike: IKESA, initiator_side: bool) -> bytes:
    """RFC 7619 §2.1: NULL auth is the shared-key MIC keyed with the sender's SK_p."""
    return ike.sk_pi if initiator_side else ike.sk_pr


def _psk(ctx: IKEContext, ike: IKESA, local_id: Identity, remote_id: Identity | None
         ) -> bytes | None:
    try:
        return ctx.secrets.psk_for(local_id, remote_id, ike.local.addr, ike.remote.addr)
    except Exception:  # a broken store must not kill the exchange
        return None


def _psk_ids(local_id: Identity, conn: Connection) -> str:
    """The pair of IDs a PSK was looked up by, for the "no PSK found" line."""
    remote = remote_pattern(conn)
    return f"IDs '{local_id}' and '{remote if remote is not None else '%any'}'"


@functools.lru_cache(maxsize=256)
def _auth_words(value: str) -> frozenset[str]:
    """The words of an ``authby=`` / ``leftauth=`` value (a few distinct strings)."""
    return frozenset(w for w in re.split(r"[\s,|]+", value.lower()) if w)


def auth_method(conn: Connection, local: bool) -> str:
    """The method one side authenticates with: ``leftauth=``/``rightauth=``, else
    ``authby=`` (Libreswan's asymmetric authentication); "" when it is neither PSK nor
    NULL (RFC 7619), the methods pypluto has (the config layer refuses the others)."""
    if not local:
        # the peer's side reads only rightauth= and authby=: answered once per pair of
        # values (issue 18); ours also depends on the certificate and key settings
        end = conn.remote
        key = (end.auth, conn.authby)
        got = _REMOTE_METHODS.get(key)
        if got is None:
            got = _auth_method(conn, end, False)
            if len(_REMOTE_METHODS) < _AUTH_MEMO_CAP:
                _REMOTE_METHODS[key] = got
        return got
    return _auth_method(conn, conn.local, True)


# answers of auth_method(conn, local=False) and _peer_may_use by (rightauth=, authby=
# [, AUTH method]): a few distinct configurations; the cap guards against a pathological one
_AUTH_MEMO_CAP = 256
_REMOTE_METHODS: dict[tuple[str | None, str | None], str] = {}
_PEER_MAY_USE: dict[tuple[str | None, str | None, int], bool] = {}


def _auth_method(conn: Connection, end: End, local: bool) -> str:
    words = _auth_words(end.auth or conn.authby or "")
    if words == {"null"}:
        return "null"
    if auth_sig.local_sig(conn) if local else auth_sig.remote_sig(conn):
        return "sig"  # certificates (ike/auth_sig.py)
    return "secret" if words & {"secret", "psk"} else ""


def _peer_may_use(conn: Connection, method: int) -> bool:
    """The peer's AUTH method is one its end allows (``rightauth=``, else ``authby=``);
    it reads only those two values and ``method``: answered once per triple (issue 18)."""
    end = conn.remote
    key = (end.auth, conn.authby, method)
    got = _PEER_MAY_USE.get(key)
    if got is None:
        got = _peer_may_use_uncached(conn, method)
        if len(_PEER_MAY_USE) < _AUTH_MEMO_CAP:
            _PEER_MAY_USE[key] = got
    return got


def _peer_may_use_uncached(conn: Connection, method: int) -> bool:
    end = conn.remote
    words = _auth_words(end.auth or conn.authby or "")
    if method in auth_sig.SIG_METHODS:
        return auth_sig.remote_sig(conn)
    if remote_null(conn):
        return method == AUTH_NULL
    return method == AUTH_PSK and bool(words & {"secret", "psk"})


def _peer_id_fits(conn: Connection, peer_id: Identity, method: int | None) -> bool:
    """The peer's ID satisfies ``rightid=``.  Wildcards (a DN's ``*``, another RDN order)
    only when a certificate is to vouch for it: a peer authenticated by PSK, NULL or a
    raw key must show exactly that ID, as Libreswan 5.2's ``update_peer_id`` requires
    (``same_id`` unless a verified certificate; RFC 4945 §3.1 leaves this to policy)."""
    pattern = remote_pattern(conn)
    if pattern is None or pattern.id_type != ids.ID_DER_ASN1_DN or (
            method in auth_sig.SIG_METHODS and auth_sig.remote_raw(conn) is None):
        return ids.id_matches(pattern, peer_id)  # the same as id_same but for a DN
    return ids.id_same(pattern, peer_id)


def _no_ppk_auth(ctx: IKEContext, ike: IKESA, conn: Connection, sig: bool, psk: bytes,
                 id_body: bytes, msgid: int) -> bytes:
    """NO_PPK_AUTH data (RFC 8784 §3): our AUTH data with the unmixed SK_pi, by the same
    method as the AUTH payload (a signature with certificates)."""
    if not sig:
        return _auth_data(ike, psk, id_body, True, msgid)
    signed = auth_sig.sign(ctx, ike, conn, _octets(ike, id_body, True, msgid), [])
    if isinstance(signed, str):
        return b""
    auth = signed[-1]
    assert isinstance(auth, wp.AuthPayload)
    return bytes(auth.data)


def _octets(ike: IKESA, id_body: bytes, initiator_side: bool, msgid: int) -> bytes:
    """<SignedOctets> of one side (§2.15), with RFC 9242 §3.3.2's IntAuth appended."""
    assert ike.chosen is not None
    prf = ike.chosen.prf
    if initiator_side:
        octets = cauth.signed_octets(prf, ike.sk_pi, ike.init_request, ike.nr, id_body)
    else:
        octets = cauth.signed_octets(prf, ike.sk_pr, ike.init_response, ike.ni, id_body)
    return octets + addke.auth_suffix(ike.intermediate, msgid)


def _auth_data(ike: IKESA, psk: bytes, id_body: bytes, initiator_side: bool, msgid: int,
               padded: bytes | None = None) -> bytes:
    """AUTH for one side (§2.15): prf(prf(PSK, pad), <SignedOctets>); ``padded`` is
    prf(PSK, pad) when the caller has it."""
    assert ike.chosen is not None
    return cauth.psk_auth(ike.chosen.prf, psk, _octets(ike, id_body, initiator_side, msgid),
                          padded)


class IKEAuth(Task):
    """IKE_AUTH (message ID 1): authentication and the first Child SA."""

    exchange = ExchangeType.IKE_AUTH

    def __init__(self) -> None:
        self.child: ChildSA | None = None
        self.sent: Proposals = []
        self.msgid = 1  # IKE_AUTH_MID (RFC 9242 §3.3.2): set when built
        self.fetched = False  # revocation data fetched for the response (issue 14)

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        conn = ike.conn
        if not auth_method(conn, local=True):
            mine = conn.local.auth or conn.authby
            acts += fail(ctx, ike, now, f"cannot authenticate with {mine}: not supported",
                         FailReason.LOCAL)
            return None
        local_id = auth_sig.local_id(ctx, conn) or local_identity(ike, conn)
        ike.local_id = local_id
        remote_pat = conn.remote.id
        sig = auth_sig.local_sig(conn)  # certificates: CERT + signature AUTH
        psk = b"" if sig else _null_key(ike, True) if local_null(conn) else \
            _psk(ctx, ike, local_id, remote_pattern(conn))  # None: %ANYADDR (keys.c)
        if psk is None:
            acts.append(Log(f"no PSK found for this connection ({_psk_ids(local_id, conn)}); "
                            "cannot authenticate", level="error", conn=conn.name,
                            serial=ike.serial))
            acts += fail(ctx, ike, now, "cannot build IKE_AUTH", FailReason.LOCAL)
            return None
        idi = codec.ident(PT.IDi, local_id)
        payloads: list[Payload] = [idi]
        payloads += auth_sig.certreq(ctx, conn)
        if remote_pat is not None and not remote_pat.any and (remote_pat.data or
                                                               remote_pat.null):
            # rightid=%null: an ID_NULL IDr ("me Tarzan, you Jane"), as Libreswan 5.2
            # sends, by which its responder lets an AUTH_NULL conn take our ID_NULL
            payloads.append(codec.ident(PT.IDr, remote_pat))
        self.msgid = ike.next_out  # the task manager sends it with this message ID
        ppk_notes = ppk.initiator_mix(  # RFC 8784: before AUTH, which the PPK changes
            ctx, ike, acts, local_id, remote_pat,
            lambda: _no_ppk_auth(ctx, ike, conn, sig, psk, codec.id_body(idi), self.msgid))
        if isinstance(ppk_notes, str):
            acts += fail(ctx, ike, now, ppk_notes, FailReason.AUTHENTICATION)
            return None
        if sig:
            signed = auth_sig.sign(ctx, ike, conn,
                                   _octets(ike, codec.id_body(idi), True, self.msgid), [])
            if isinstance(signed, str):
                acts.append(Log(f"cannot authenticate with {conn.local.auth or conn.authby}: "
                                f"{signed}", level="error", conn=conn.name, serial=ike.serial))
                acts += fail(ctx, ike, now, "cannot build IKE_AUTH", FailReason.LOCAL)
                return None
            payloads[1:1] = signed[:-1]  # CERT payloads right after IDi
            payloads.append(signed[-1])
        else:
            key = _null_key(ike, True) if local_null(conn) else psk  # after any PPK mix
            payloads.append(codec.auth(_method(conn), _auth_data(
                ike, key, codec.id_body(idi), True, self.msgid)))
        payloads += ppk_notes
        if conn.initial_contact and ike.reauth_of is None:
            payloads.append(codec.notify(N.INITIAL_CONTACT))
        payloads += mobike.supported_notify(conn.mobike)  # RFC 4555 §3.1
        childless = conn.raw.get("childless", "").lower() in ("yes", "require") or \
            conn.type in ("passthrough",)
        if not childless:
            ah_nat = childmod.ah_nat_refusal(ike, conn)
            if ah_nat:  # AH cannot traverse a NAT: no Child SA to offer (RFC 3948)
                acts += fail(ctx, ike, now, ah_nat, FailReason.PROPOSAL)
                return None
            self.child = childmod.new_child(ctx, ike, conn, initiator=True)
            self.child.to(ChildState.AUTH_I)
            ts = None
            if cpmod.is_client(conn):  # RFC 7296 §2.19: ask for an address
                payloads.append(cpmod.request(ike, conn))
                ts = (cpmod.any_ts(ike, conn), childmod.configured_ts(ike, conn)[1])
            child_payloads, self.sent = childmod.offer(ike, self.child, ts=ts)
            payloads += child_payloads
        return payloads

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:
        if self.child is not None:
            ctx.release_child(self.child)

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        self.abandon(ctx, ike)
        return fail(ctx, ike, now, "no response to IKE_AUTH (retransmit timeout)",
                    FailReason.TIMEOUT, retry=True)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        payloads = msg.payloads
        conn = ike.conn
        auth_first = codec.first(payloads, wp.AuthPayload)
        if not self.fetched and auth_first is not None and \
                int(auth_first.method) in auth_sig.SIG_METHODS:
            need = auth_sig.revocation_jobs(ctx, payloads, [conn])  # CRL / OCSP first
            if need is not None:
                self.fetched = True
                return auth_sig.fetch_then(ctx, ike, need[0], need[1],
                                           lambda t: self._resumed(ctx, ike, msg, t), now)
        self.abandon(ctx, ike)
        if codec.has_notify(payloads, N.AUTHENTICATION_FAILED):
            acts.append(Log("IKE SA authentication request rejected by peer: "
                            "AUTHENTICATION_FAILED", level="warning", conn=conn.name,
                            serial=ike.serial))
            return acts + fail(ctx, ike, now, "AUTHENTICATION_FAILED",
                               FailReason.AUTHENTICATION)
        idr_p = codec.first(payloads, wp.IDPayload, PT.IDr)
        auth_p = codec.first(payloads, wp.AuthPayload)
        if idr_p is None or auth_p is None:
            errs = [p.notify_type for p in codec.errors(payloads)]
            why = f"peer answered {nname(errs[0])}" if errs else "IKE_AUTH response lacks " \
                "IDr or AUTH"
            reason = reason_for_notify(errs[0]) if errs else FailReason.AUTHENTICATION
            return acts + fail(ctx, ike, now, why, reason)
        bad = wire_id_problem(int(idr_p.id_type), bytes(idr_p.data))
        if bad is not None:
            return acts + _responder_rejected(ctx, ike, now, f"IDr payload invalid: {bad}")
        peer_id = identity_from_wire(int(idr_p.id_type), bytes(idr_p.data))
        pattern = remote_pattern(conn)
        if not _peer_id_fits(conn, peer_id, int(auth_p.method)) and not \
                auth_sig.cert_carries(payloads, pattern, int(auth_p.method)):
            return acts + _responder_rejected(ctx, ike, now, f"peer ID {id_desc(peer_id)} "
                                              f"does not match the expected '{pattern}'")
        assert ike.local_id is not None and ike.chosen is not None
        why_ppk = ppk.initiator_confirm(ctx, ike, acts, payloads)  # RFC 8784
        if why_ppk is not None:
            return acts + _responder_rejected(ctx, ike, now, why_ppk)
        prf = ike.chosen.prf
        method = int(auth_p.method)
        if not auth_method(conn, local=False) or not _peer_may_use(conn, method):
            return acts + _responder_rejected(ctx, ike, now, f"the peer authenticated with "
                                              f"AUTH method {method}; the connection requires "
                                              f"{conn.remote.auth or conn.authby}")
        if method in auth_sig.SIG_METHODS:
            why_sig = auth_sig.verify(ctx, ike, conn, peer_id, payloads, method,
                                      bytes(auth_p.data),
                                      _octets(ike, codec.id_body(idr_p), False, self.msgid),
                                      now)
            if why_sig is not None:
                return acts + _responder_rejected(ctx, ike, now, why_sig)
        else:
            psk = _null_key(ike, False) if remote_null(conn) else \
                _psk(ctx, ike, ike.local_id, peer_id)
            if not psk or method != _peer_method(conn) or not cauth.psk_verify(
                    prf, psk, _octets(ike, codec.id_body(idr_p), False, self.msgid),
                    bytes(auth_p.data)):
                return acts + _responder_rejected(ctx, ike, now, "authentication of the peer "
                                                  "failed (PSK mismatch?)")
        ike.remote_id = peer_id
        mobike.negotiated(ike, payloads)
        acts += established(ctx, ike, now, auth_sig.describe(method, bytes(auth_p.data)))
        red = next((bytes(p.data) for p in codec.notifies(payloads)
                    if p.notify_type == N.REDIRECT), None)
        if red is not None:
            # RFC 5685 §6: the gateway is authenticated; delete this IKE SA, go there (a
            # redirect that fails once the name is resolved deletes it too: no Child SA)
            def go(t: float, restart: bool = True) -> list[Action]:
                replaces, ike.reauth_of = ike.reauth_of, None
                ike.ni = ike.nr = b""
                return delete_ike(ctx, ike, t) + (redirect.restart(ctx, conn, t, replaces)
                                                  if restart else [])

            if redirect.follow(ctx, ike, red, None, now, acts, go,
                               lambda t: go(t, restart=False)):
                return acts
        old = ike.reauth_of
        ike.reauth_of = None
        acts += self._finish_child(ctx, ike, payloads, now)
        ike.ni = ike.nr = b""  # used: AUTH and the first Child SA's KEYMAT (issue 18)
        if old is not None and ctx.is_live(old):  # make-before-break: new Child SA first
            acts += delete_ike(ctx, old, now)
        return acts

    def _resumed(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                 ) -> list[Action]:
        """``on_response`` again once the revocation data is in; then the next task."""
        acts = self.on_response(ctx, ike, msg, now)
        return acts + ctx.kick(ike, now) if ctx.is_live(ike) else acts

    def _finish_child(self, ctx: IKEContext, ike: IKESA, payloads: Sequence[Payload],
                      now: float) -> list[Action]:
        acts: list[Action] = []
        conn = ike.conn
        child = self.child
        if child is not None:
            err = [p.notify_type for p in codec.errors(payloads)]
            if err:
                ctx.log(acts, f"IKE SA established but the Child SA failed: peer answered "
                        f"{nname(err[0])}", child, level="warning")
                # a road warrior without an address failed as a whole: name its IKE SA
                acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial
                                            if cpmod.is_client(conn) else child.serial,
                                            nname(err[0]), reason_for_notify(err[0])))
                return acts
            no_cp = cpmod.take_reply(ctx, ike, payloads, acts) if cpmod.is_client(conn) \
                else None
            if no_cp:
                ctx.log(acts, f"Child SA failed: {no_cp}", child, level="warning")
                # the gateway installed the Child SA it answered with: its SPI, so that
                # the Delete below reaches it (§1.4.1), as childmod.finish would note it
                sa_p = codec.first(payloads, wp.SAPayload)
                answered = codec.sa_tuples(sa_p) if sa_p is not None else []
                if len(answered) == 1 and len(answered[0][2]) == 4:
                    child.spi_out = int.from_bytes(answered[0][2], "big")
                # the road warrior as a whole failed: the event names its IKE SA
                acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial, no_cp,
                                            FailReason.PEER_NOTIFY))
                acts += delete_spi_unknown(ctx, ike, child, now)
                return acts
            why, reason = childmod.finish(ike, child, self.sent, payloads, ike.ni, ike.nr,
                                          None, None)
            if not why and child.chosen is not None:  # reserved or colliding SPI (§2.1)
                why = childmod.peer_spi_refusal(ctx, ike, child.chosen.spi, self.sent[0][1])
                reason = FailReason.PROPOSAL if why else reason
            if not why:  # narrowed into another Child SA's selectors
                why = childmod.answer_steals(ctx, ike, child)
                reason = FailReason.TRAFFIC_SELECTORS if why else reason
            if why:
                ctx.log(acts, f"Child SA failed: {why}", child, level="warning")
                acts.append(ConnectionEvent(EventKind.FAILED, conn.name, child.serial, why,
                                            reason))
                acts += delete_spi_unknown(ctx, ike, child, now)
                return acts
            acts += ctx.install_child(child, child.keys, now)
        return acts

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return True

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        return _respond(ctx, ike, req, now)


def established(ctx: IKEContext, ike: IKESA, now: float, how: str = "") -> list[Action]:
    """Common end of IKE_AUTH for both roles: timers, logs, uniqueids."""
    acts: list[Action] = []
    conn = ike.conn
    ike.to(IKEState.ESTABLISHED)
    ike.established_at = now
    if conn.auto == "keep":
        ctx.kept_up.add(conn.name)  # ipsec.conf(5): kept up once the peer brought it up
    ike.init_request = ike.init_response = b""
    ike.sk_pi = ike.sk_pr = b""
    ike.intermediate = None
    ike.cands = ()
    ctx.end_halfopen(ike)
    set_ike_timers(ctx, ike, now)
    ctx.index_peer(ike)
    c = ike.chosen
    assert c is not None and ike.remote_id is not None
    if not how or how == "authby=secret":
        how = "authby=" + ("null" if remote_null(conn) else "secret")
    # formatted when read (issue 18): only values that no longer change are captured
    peer, local, remote = ike.remote_id, ike.local, ike.remote
    ctx.log(acts, lambda: f"established IKE SA; authenticated peer using {how} and "
            f"{id_desc(peer)}", ike)
    ctx.log(acts, lambda: f"IKE SA {c.encr_name()}{'-' + c.integ_name() if c.integ else ''}-"
            f"{c.prf_name()}-{c.ke_name()} {local}<=>{remote}", ike, level="debug")
    ctx.stats.ike_established(c.encr, c.integ, c.ke)
    acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, conn.name, ike.serial))
    return acts


# ---------------------------------------------------------------- responder
# Our IDr payload bodies (§3.5), serialized once per local identity (issue 18); a
# handful of identities, the cap only guards against a pathological configuration.
_IDR_CAP = 256
_IDR_BODIES: dict[tuple[int, bytes], bytes] = {}


def _idr_body(local_id: Identity) -> bytes:
    """The body of our IDr payload: what ``codec.id_body`` of ``codec.ident`` gives."""
    key = (local_id.id_type, local_id.data)
    body = _IDR_BODIES.get(key)
    if body is None:
        body = codec.id_body(codec.ident(PT.IDr, local_id))
        if len(_IDR_BODIES) < _IDR_CAP:
            _IDR_BODIES[key] = body
    return body


def _pick_connection(ctx: IKEContext, ike: IKESA, peer_id: Identity, idr: Identity | None,
                     payloads: Sequence[Payload], method: int | None = None
                     ) -> Connection | None:
    """The responder's conn for this IKE_AUTH among the IKE SA's candidates: the peer's
    ID must match; then the best fit by ID wildcards, IDr, selectors, CA and (as
    Libreswan 5.2 passes the AUTH payload's method to its choice) a conn whose peer may
    use ``method``, so that a PSK peer is not held to an rsasig conn of the same ID."""
    cands = ike.cands or [ike.conn]
    if len(cands) == 1:
        # one candidate: no other can score better, so its score is not computed (the
        # selector fit was 1/10 of a Child SA's IKE_AUTH, issue 18)
        conn = cands[0]
        if conn.name in ctx.connections and _peer_id_fits(conn, peer_id, method):
            return conn
        return None
    best: tuple[int, Connection] | None = None
    for conn in cands:
        if conn.name not in ctx.connections:
            continue
        if not _peer_id_fits(conn, peer_id, method):
            continue
        score = ids.id_wildcards(remote_pattern(conn))
        if idr is not None and _tarzan(ctx, ike, conn, idr) is None:
            score += 100
        # a conn answering a subset of the selectors (§2.9) is a worse fit, one that
        # would leave some of its own out (blocked) worse still
        score += (50, 25, 10, 0)[childmod.ts_fit_grade(ctx, ike, conn, payloads)]
        if not auth_sig.cert_under_ca(ctx, conn, payloads):  # rightca= cannot fit
            score += 200
        if method is not None and not (auth_method(conn, local=False)
                                       and _peer_may_use(conn, method)):
            score += 400  # it would answer AUTHENTICATION_FAILED
        if best is None or score < best[0]:
            best = (score, conn)
    return best[1] if best else None


def _tarzan(ctx: IKEContext, ike: IKESA, conn: Connection, idr: Identity
            ) -> Identity | None:
    """The ID we answer with when the initiator's IDr names us ("you Tarzan, me Jane",
    RFC 7296 §3.5), None when it names someone else.  As in Libreswan 5.2, it names us
    when it is our ID, a name our certificate carries, or a name our ``leftid=@*.domain``
    covers (ikev2-x509-20-multicert-rightid-san-wildcard).  A wildcard ID is not sent as
    such: the named identity is, when our certificate carries it (RFC 4945 §3.1)."""
    own = auth_sig.local_id(ctx, conn) or local_identity(ike, conn)
    wild = own.id_type == idr.id_type == ids.ID_FQDN and own.data.startswith(b"*") and \
        idr.data.rstrip(b".").lower().endswith(own.data[1:].rstrip(b".").lower())
    if not wild and ids.id_matches(own, idr):
        return own
    if auth_sig.local_cert_carries(ctx, conn, idr):
        return idr if wild else own
    return None


def _responder_rejected(ctx: IKEContext, ike: IKESA, now: float, why: str) -> list[Action]:
    """We, the initiator, could not authenticate the responder, which has established its
    end already: tell it (RFC 7296 §2.21.2, ``AuthFailedNotice``), then give up."""
    return AuthFailedNotice.send(ctx, ike) + fail(ctx, ike, now, why,
                                                  FailReason.AUTHENTICATION)


def _respond(ctx: IKEContext, ike: IKESA, req: Request, now: float,
             fetched: bool = False) -> list[Action]:
    acts: list[Action] = []
    payloads, local, remote = req.payloads, req.local, req.remote

    def reject(why: str) -> list[Action]:
        acts.append(Log(f"IKE_AUTH from {remote} rejected: {why}; answering "
                        "AUTHENTICATION_FAILED", level="warning", conn=ike.conn.name,
                        serial=ike.serial))
        acts.extend(ctx.send_response(ike, IKEAuth.exchange, req.msgid,
                                      [codec.notify(N.AUTHENTICATION_FAILED)], local, remote))
        acts.extend(ctx.drop_ike(ike, now, "", EventKind.FAILED, FailReason.AUTHENTICATION))
        return acts

    if ike.chosen is not None and addke.pending(ike.intermediate, ike.chosen.addke):
        acts.append(Log(f"IKE_AUTH from {remote} rejected: the negotiated additional key "
                        "exchanges (IKE_INTERMEDIATE, RFC 9370) were skipped; answering "
                        "INVALID_SYNTAX", level="warning", conn=ike.conn.name,
                        serial=ike.serial))
        acts.extend(ctx.send_response(ike, IKEAuth.exchange, req.msgid,
                                      [codec.notify(N.INVALID_SYNTAX)], local, remote))
        return acts + ctx.drop_ike(ike, now, "", EventKind.FAILED, FailReason.PROPOSAL)
    # the first IDi, IDr and AUTH (what codec.first gives for each), in one pass
    idi_p: wp.IDPayload | None = None
    idr_p: wp.IDPayload | None = None
    auth_p: wp.AuthPayload | None = None
    for p in payloads:
        if isinstance(p, wp.IDPayload):
            if p.payload_type == PT.IDi:
                if idi_p is None:
                    idi_p = p
            elif p.payload_type == PT.IDr and idr_p is None:
                idr_p = p
        elif auth_p is None and isinstance(p, wp.AuthPayload):
            auth_p = p
    if idi_p is None or auth_p is None:
        return reject("IDi or AUTH missing")
    if not fetched and int(auth_p.method) in auth_sig.SIG_METHODS:
        need = auth_sig.revocation_jobs(ctx, payloads, ike.cands or [ike.conn])
        if need is not None:  # CRL / OCSP fetches first
            ike.next_in = req.msgid + 1  # a retransmit while fetching is dropped (§2.1)
            return auth_sig.fetch_then(ctx, ike, need[0], need[1],
                                       lambda t: _respond(ctx, ike, req, t, fetched=True), now)
    for name, idp in (("IDi", idi_p), ("IDr", idr_p)):
        if idp is not None and (bad := wire_id_problem(int(idp.id_type), bytes(idp.data))):
            return reject(f"{name} payload invalid: {bad}")
    peer_id = identity_from_wire(int(idi_p.id_type), bytes(idi_p.data))
    want = identity_from_wire(int(idr_p.id_type), bytes(idr_p.data)) if idr_p else None
    conn = _pick_connection(ctx, ike, peer_id, want, payloads, int(auth_p.method))
    if conn is None:
        return reject(f"no connection matches peer {id_desc(peer_id)}")
    peer_sig = int(auth_p.method) in auth_sig.SIG_METHODS
    if not auth_method(conn, local=False) or not _peer_may_use(conn, int(auth_p.method)):
        return reject(f"the peer used AUTH method {int(auth_p.method)}; the connection "
                      f"requires {conn.remote.auth or conn.authby} from the peer")
    if conn is not ike.conn:
        ctx.rebind(ike, conn)
    local_id = auth_sig.local_id(ctx, conn) or local_identity(ike, conn)
    if want is not None and (named := _tarzan(ctx, ike, conn, want)) is not None:
        local_id = named
    # each side's method (RFC 7619 asymmetric NULL: leftauth=/rightauth=null on one side)
    peer_null, own_null = remote_null(conn), local_null(conn)
    sig = auth_sig.local_sig(conn)
    psk: bytes | None = b""
    if not (peer_sig or peer_null) or not (sig or own_null):  # a PSK keys a MIC
        psk = _psk(ctx, ike, local_id, peer_id)
        if psk is None:
            return reject(f"no PSK for {local_id}/{peer_id}")  # CVE-2024-2357
    assert ike.chosen is not None
    why_ppk, no_ppk_auth = ppk.responder_mix(ctx, ike, conn, acts, payloads)  # RFC 8784
    if why_ppk is not None:
        return reject(why_ppk)
    prf = ike.chosen.prf
    octets = _octets(ike, codec.id_body(idi_p), True, req.msgid)
    # a PSK that keys both MICs (the peer's and ours): its padded key is computed once
    padded = cauth.psk_pad(prf, psk) if psk and not (peer_null or own_null or peer_sig
                                                     or sig) else None
    if peer_sig:
        why_sig = auth_sig.verify(ctx, ike, conn, peer_id, payloads, int(auth_p.method),
                                  no_ppk_auth or bytes(auth_p.data), octets, now)
        if why_sig is not None:
            return reject(why_sig)
    else:
        # the peer's NULL MIC is keyed with SK_pi after any PPK mix (RFC 8784 changes it)
        key = _null_key(ike, True) if peer_null else psk
        if not key or not cauth.psk_verify(prf, key, octets, no_ppk_auth or
                                           bytes(auth_p.data), padded):
            return reject(f"PSK authentication of {id_desc(peer_id)} failed"
                          + (" (PPK mismatch?)" if ike.ppk.used else ""))
    if mobike.unexpected_nat(payloads, local, remote):  # RFC 4555 §3.9
        acts.append(Log(f"IKE_AUTH from {remote} rejected: NO_NATS_ALLOWED does not match "
                        "the addresses it came with; answering UNEXPECTED_NAT_DETECTED",
                        level="warning", conn=conn.name, serial=ike.serial))
        acts.extend(ctx.send_response(ike, IKEAuth.exchange, req.msgid,
                                      [codec.notify(N.UNEXPECTED_NAT_DETECTED)], local, remote))
        return acts + ctx.drop_ike(ike, now, "", EventKind.FAILED)
    ike.local_id, ike.remote_id = local_id, peer_id
    idr_body = _idr_body(local_id)
    out: list[Payload]
    if sig:
        out = [wp.UnknownPayload(PT.IDr, idr_body)]
        signed = auth_sig.sign(ctx, ike, conn, _octets(ike, idr_body, False, req.msgid),
                               payloads)
        if isinstance(signed, str):
            return reject(f"cannot authenticate ourselves: {signed}")
        out += signed
    else:
        own = _null_key(ike, False) if own_null else psk
        if not own:  # pragma: no cover - a PSK was looked up above for a PSK MIC
            return reject("no key for our AUTH payload")
        # IDr and AUTH written as one run of bytes (issue 18): what
        # [UnknownPayload(IDr, idr_body), codec.auth(...)] serialize to
        out = [codec.idr_auth(idr_body, _method(conn), _auth_data(ike, own, idr_body, False,
                                                                  req.msgid, padded))]
    out += ppk.responder_notifies(ike)  # RFC 8784 PPK_IDENTITY
    mobike.negotiated(ike, payloads)  # RFC 4555 §3.1
    if ike.mobike:
        out += mobike.supported_notify(True)
    elif conn.mobike and codec.has_notify(payloads, N.MOBIKE_SUPPORTED):
        ctx.log(acts, "not responding with v2N_MOBIKE_SUPPORTED, that end is not %any", ike)
    acts += established(ctx, ike, now, auth_sig.describe(int(auth_p.method),
                                                         no_ppk_auth or bytes(auth_p.data)))
    to = redirect.auth_target(ike, conn, ctx.dos.busy_now())  # RFC 5685 §6
    if to is not None:
        return acts + _redirect_in_auth(ctx, ike, req, out, to, now)
    acts += _uniqueids(ctx, ike, now, codec.has_notify(payloads, N.INITIAL_CONTACT))
    child = None
    has_child = False
    for p in payloads:
        if p.payload_type in _CHILD_TYPES:
            has_child = True
            break
    cp_out, cp_ok = cpmod.respond(ctx, ike, conn, payloads, acts)  # RFC 7296 §3.15
    out += cp_out
    if has_child and not cp_ok:  # §3.15.4: the IKE SA stands, the Child SA does not
        why = f"no address for the client ({nname(codec.errors(cp_out)[0].notify_type)})"
        acts.append(Log(f"IKE SA established but the Child SA is refused: {why}",
                        level="warning", conn=conn.name, serial=ike.serial))
        acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial, why,
                                    FailReason.LOCAL))
    elif has_child:
        child, cp, why, reason = childmod.accept(ctx, ike, conn, payloads, ike.ni, ike.nr,
                                                 None, None)
        out += cp
        if child is None:
            acts.append(Log(f"IKE SA established but the Child SA is refused: {why}",
                            level="warning", conn=conn.name, serial=ike.serial))
            acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial, why, reason))
    else:
        ctx.log(acts, "peer requested a childless IKE SA (RFC 6023)", ike)
    if child is not None:
        acts += ctx.install_child(child, child.keys, now)
    acts += ctx.send_response(ike, IKEAuth.exchange, req.msgid, out, local, remote)
    ike.ni = ike.nr = b""  # used: AUTH and the first Child SA's KEYMAT (issue 18)
    return acts


def _redirect_in_auth(ctx: IKEContext, ike: IKESA, req: Request, out: list[Payload],
                      to: IPAddress | str, now: float) -> list[Action]:
    """RFC 5685 §6: answer the authenticated client with IDr, AUTH and REDIRECT only (no
    Child SA, no lease, no uniqueids); the client deletes the IKE SA, or it goes after
    ``AUTH_REDIRECT_GRACE`` seconds."""
    acts: list[Action] = []
    assert ike.remote_id is not None
    ctx.log(acts, f"redirecting {id_desc(ike.remote_id)} at {req.remote} to {to} in "
            f"IKE_AUTH (send-redirect={redirect.send_mode(ike.conn)})", ike)
    out = [codec.notify(N.REDIRECT, redirect.encode_gw(to))] + out
    acts += ctx.send_response(ike, IKEAuth.exchange, req.msgid, out, req.local, req.remote)
    ike.ni = ike.nr = b""
    ike.rekey_at = ike.next_liveness = None
    ike.expire_at = now + redirect.AUTH_REDIRECT_GRACE
    ike.redirected = True  # no Child SA, no rekey: it is to go (child_create.precheck)
    ctx.schedule(ike)
    return acts


def _uniqueids(ctx: IKEContext, ike: IKESA, now: float, initial_contact: bool
               ) -> list[Action]:
    """uniqueids / INITIAL_CONTACT (§2.4): older IKE SAs of this peer ID go away."""
    acts: list[Action] = []
    uniq = ike.conn.uniqueids if ike.conn.uniqueids is not None else ctx.settings.uniqueids
    if not (uniq or initial_contact) or ike.remote_id is None or ike.remote_id.null:
        return acts  # ID_NULL says nothing about who the peer is (RFC 7619 §3)
    if not initial_contact and ike.conn.remote.host_addr is not None:
        # uniqueids replaces what a template (peer %any) made for that ID; a conn
        # with a known peer keeps all its IKE SAs, as both ends initiating at once
        # make two (Libreswan 5.2, crossing-streams-11-*; RFC 7296 §2.4)
        return acts
    for other in ctx.peers_of(ike):
        if other is ike or other.initiator and other.state in (IKEState.INIT_I,
                                                               IKEState.AUTH_I):
            continue
        if not other.established or other.remote_id is None:
            continue
        if other.conn.name != ike.conn.name or not ids.id_matches(other.remote_id, ike.remote_id):
            continue
        if other.replaced or other.peer_rekeys:
            continue
        ctx.log(acts, f"new IKE SA #{ike.serial} replaces this one "
                f"({'INITIAL_CONTACT' if initial_contact else 'uniqueids'})", other)
        if not initial_contact:
            # as pluto: the Delete is sent and the old state goes at once, without
            # waiting for an answer (the peer restarted and may never give one;
            # Libreswan's trafficstatus shows only the new SA, ikev2-27-uniqueid)
            acts += send_delete_now(ctx, other)
        acts += ctx.drop_ike(other, now, "replaced")
    return acts
