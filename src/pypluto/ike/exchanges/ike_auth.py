"""IKE_AUTH with PSK and the first Child SA (RFC 7296 §1.2, §2.15, §2.16; RFC 6023).

Initiator: ``AuthTask`` sends IDi, AUTH, [IDr], [INITIAL_CONTACT] and the
Child SA offer; its ``on_response`` verifies the responder's AUTH.
Responder: ``respond`` picks the connection by the peer's ID, verifies AUTH
with the PSK from the SecretStore, answers AUTHENTICATION_FAILED (and deletes
the state, CVE-2024-2357) or IDr, AUTH and the Child SA (or an error notify for
the Child SA only: NO_PROPOSAL_CHOSEN, TS_UNACCEPTABLE).
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from pypluto.config import ids
from pypluto.config.model import Connection, Identity
from pypluto.crypto import auth as cauth
from pypluto.ike import codec
from pypluto.ike import sa as S
from pypluto.ike.actions import Action, ConnectionEvent, Endpoint, EventKind, FailReason, Log
from pypluto.ike.exchanges import child as childmod
from pypluto.ike.sa import IKESA
from pypluto.wire.constants import NotifyType as N

if TYPE_CHECKING:
    from pypluto.ike.engine import Engine

PT = codec.PT
EXCH_AUTH = 35
AUTH_PSK = 2
_ID_NAMES = {1: "IPV4_ADDR", 2: "FQDN", 3: "USER_FQDN", 5: "IPV6_ADDR", 9: "DER_ASN1_DN",
             11: "KEY_ID", 13: "NULL"}


def identity_from_wire(id_type: int, data: bytes) -> Identity:
    """An Identity for what the peer sent, with Libreswan's text form."""
    text: str
    try:
        if id_type == 1 and len(data) == 4:
            text = str(ipaddress.IPv4Address(data))
        elif id_type == 5 and len(data) == 16:
            text = str(ipaddress.IPv6Address(data))
        elif id_type == 2:
            text = "@" + data.decode("utf-8", "replace")
        elif id_type == 3:
            text = data.decode("utf-8", "replace")
        elif id_type == 11:
            text = "@#0x" + data.hex()
        else:
            text = f"@~{data.hex()}"
    except ValueError:
        text = data.hex()
    return Identity(id_type, data, text, null=id_type == 13)


def id_desc(i: Identity) -> str:
    return f"{_ID_NAMES.get(i.id_type, str(i.id_type))} '{i.text}'"


def local_identity(ike: IKESA, conn: Connection) -> Identity:
    if conn.local.id is not None and not conn.local.id.any:
        return conn.local.id
    return ids.id_from_address(conn.local.host_addr or ike.local.addr)


def _remote_pattern(conn: Connection) -> Identity | None:
    if conn.remote.id is not None:
        return conn.remote.id
    if conn.remote.host_addr is not None:
        return ids.id_from_address(conn.remote.host_addr)
    return None  # %any


def _psk(eng: Engine, ike: IKESA, local_id: Identity, remote_id: Identity) -> bytes | None:
    try:
        return eng.secrets.psk_for(local_id, remote_id, ike.local.addr, ike.remote.addr)
    except Exception:  # a broken store must not kill the exchange
        return None


def _auth_data(ike: IKESA, psk: bytes, id_body: bytes, initiator_side: bool) -> bytes:
    """AUTH for one side (§2.15): prf(prf(PSK, pad), <SignedOctets>)."""
    prf = ike.chosen.prf  # type: ignore[union-attr]
    if initiator_side:
        octets = cauth.signed_octets(prf, ike.sk_pi, ike.init_request, ike.nr, id_body)
    else:
        octets = cauth.signed_octets(prf, ike.sk_pr, ike.init_response, ike.ni, id_body)
    return cauth.psk_auth(prf, psk, octets)


class AuthTask:
    """The initiator's IKE_AUTH request (message ID 1)."""

    exchange = EXCH_AUTH

    def __init__(self) -> None:
        self.child: Any = None
        self.sent: list = []

    def build(self, eng: Engine, ike: IKESA, now: float, acts: list[Action]) -> list | None:
        conn = ike.conn
        local_id = local_identity(ike, conn)
        ike.local_id = local_id
        remote_pat = conn.remote.id
        psk = _psk(eng, ike, local_id, remote_pat or _remote_pattern(conn) or local_id)
        if psk is None:
            acts.append(Log("no PSK found for this connection; cannot authenticate",
                            level="error", conn=conn.name, serial=ike.serial))
            return None
        idi = codec.ident(PT.IDi, local_id)
        payloads: list = [idi]
        if remote_pat is not None and not remote_pat.any and remote_pat.data:
            payloads.append(codec.ident(PT.IDr, remote_pat))
        payloads.append(codec.auth(AUTH_PSK, _auth_data(ike, psk, codec.id_body(idi), True)))
        if conn.initial_contact and ike.reauth_of is None:
            payloads.append(codec.notify(N.INITIAL_CONTACT))
        childless = conn.raw.get("childless", "").lower() in ("yes", "require") or \
            conn.type in ("passthrough",)
        if not childless:
            self.child = childmod.new_child(eng, ike, conn, initiator=True)
            self.child.state = S.IKE_AUTH_CHILD_I0
            child_payloads, self.sent = childmod.offer(ike, self.child)
            payloads += child_payloads
        return payloads

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        from pypluto.ike.exchanges import ike_sa_init
        if self.child is not None:
            childmod.release(eng, self.child)
        return ike_sa_init.fail(eng, ike, now, "no response to IKE_AUTH (retransmit timeout)",
                                FailReason.TIMEOUT, retry=True)

    def on_response(self, eng: Engine, ike: IKESA, payloads: list, now: float
                    ) -> list[Action]:
        from pypluto.ike.exchanges import ike_sa_init
        acts: list[Action] = []
        conn = ike.conn
        if self.child is not None:
            childmod.release(eng, self.child)
        if childmod.has_notify(payloads, N.AUTHENTICATION_FAILED):
            acts.append(Log("IKE SA authentication request rejected by peer: "
                            "AUTHENTICATION_FAILED", level="warning", conn=conn.name,
                            serial=ike.serial))
            return acts + ike_sa_init.fail(eng, ike, now, "AUTHENTICATION_FAILED",
                                           FailReason.AUTHENTICATION)
        idr_p = next((p for p in payloads if p.payload_type == PT.IDr), None)
        auth_p = next((p for p in payloads if p.payload_type == PT.AUTH), None)
        if idr_p is None or auth_p is None:
            errs = [p.notify_type for p in payloads if p.payload_type == PT.NOTIFY
                    and p.notify_type < 16384]
            why = f"peer answered {_nname(errs[0])}" if errs else "IKE_AUTH response lacks " \
                "IDr or AUTH"
            reason = ike_sa_init.reason_for_notify(errs[0]) if errs else \
                FailReason.AUTHENTICATION
            return acts + ike_sa_init.fail(eng, ike, now, why, reason)
        peer_id = identity_from_wire(int(idr_p.id_type), bytes(idr_p.data))
        pattern = _remote_pattern(conn)
        if not ids.id_matches(pattern, peer_id):
            return acts + ike_sa_init.fail(eng, ike, now, f"peer ID {id_desc(peer_id)} does "
                                           f"not match the expected '{pattern}'",
                                           FailReason.AUTHENTICATION)
        psk = _psk(eng, ike, ike.local_id, peer_id)  # type: ignore[arg-type]
        if psk is None or int(auth_p.method) != AUTH_PSK or not cauth.psk_verify(
                ike.chosen.prf, psk,  # type: ignore[union-attr]
                cauth.signed_octets(ike.chosen.prf, ike.sk_pr,  # type: ignore[union-attr]
                                    ike.init_response, ike.ni, codec.id_body(idr_p)),
                bytes(auth_p.data)):
            return acts + ike_sa_init.fail(eng, ike, now, "authentication of the peer failed "
                                           "(PSK mismatch?)", FailReason.AUTHENTICATION)
        ike.remote_id = peer_id
        acts += established(eng, ike, now)
        old = ike.reauth_of
        ike.reauth_of = None
        if old is not None and old.serial in eng.by_serial:  # make-before-break
            from pypluto.ike.exchanges import informational
            acts += informational.delete_ike(eng, old, now)
        if self.child is not None:
            err = [p.notify_type for p in payloads if p.payload_type == PT.NOTIFY
                   and p.notify_type < 16384]
            if err:
                eng.log(acts, f"IKE SA established but the Child SA failed: peer answered "
                        f"{_nname(err[0])}", self.child, level="warning")
                acts.append(ConnectionEvent(EventKind.FAILED, conn.name, self.child.serial,
                                            _nname(err[0]),
                                            ike_sa_init.reason_for_notify(err[0])))
                return acts
            why, reason = childmod.finish(eng, ike, self.child, self.sent, payloads, ike.ni,
                                          ike.nr, None, None)
            if why:
                eng.log(acts, f"Child SA failed: {why}", self.child, level="warning")
                acts.append(ConnectionEvent(EventKind.FAILED, conn.name, self.child.serial, why,
                                            reason))
                from pypluto.ike.exchanges import informational
                acts += informational.delete_spi_unknown(eng, ike, self.child, now)
                return acts
            acts += eng.install_child(self.child, self.child.keys, now)
        return acts


def _nname(t: int) -> str:
    try:
        return N(t).name
    except ValueError:
        return str(t)


def established(eng: Engine, ike: IKESA, now: float) -> list[Action]:
    """Common end of IKE_AUTH for both roles: timers, logs, uniqueids."""
    acts: list[Action] = []
    conn = ike.conn
    ike.state = S.ESTABLISHED_IKE
    ike.established_at = now
    ike.init_request = ike.init_response = b""
    ike.sk_pi = ike.sk_pr = b""
    ike.cands = []
    if ike.halfopen_deadline is not None:
        ike.halfopen_deadline = None
        eng.n_halfopen -= 1
    set_ike_timers(eng, ike, now)
    eng.index_peer(ike)
    c = ike.chosen
    assert c is not None and ike.remote_id is not None
    eng.log(acts, f"established IKE SA; authenticated peer using authby=secret and "
            f"{id_desc(ike.remote_id)}", ike)
    eng.log(acts, f"IKE SA {c.encr_name()}{'-' + c.integ_name() if c.integ else ''}-"
            f"{c.prf_name()}-{c.ke_name()} {ike.local}<=>{ike.remote}", ike, level="debug")
    acts.append(ConnectionEvent(EventKind.IKE_ESTABLISHED, conn.name, ike.serial))
    return acts


def set_ike_timers(eng: Engine, ike: IKESA, now: float) -> None:
    conn = ike.conn
    life = conn.ikelifetime
    ike.expire_at = now + life
    if conn.rekey or conn.reauth:
        margin = conn.rekeymargin
        if ike.initiator:
            margin *= 1 + conn.rekeyfuzz / 100.0 * eng.fuzz.random()
        else:
            margin /= 2
        ike.rekey_at = now + max(life - margin, life / 2)
    else:
        ike.rekey_at = None
    if conn.dpddelay > 0:
        ike.next_liveness = now + conn.dpddelay
    if ike.nat_local and conn.nat_keepalive and eng.settings.keep_alive > 0 \
            and ike.next_keepalive is None:
        ike.next_keepalive = now + eng.settings.keep_alive
    eng.schedule(ike)


# ---------------------------------------------------------------- responder
def _pick_connection(eng: Engine, ike: IKESA, peer_id: Identity, idr: Identity | None,
                     payloads: list) -> Connection | None:
    cands = ike.cands or [ike.conn]
    best: tuple[int, Connection] | None = None
    for conn in cands:
        if conn.name not in eng.connections:
            continue
        if not ids.id_matches(_remote_pattern(conn), peer_id):
            continue
        score = ids.id_wildcards(_remote_pattern(conn))
        if idr is not None and not ids.id_matches(local_identity(ike, conn), idr):
            score += 100
        if not childmod.ts_fits(eng, ike, conn, payloads):
            score += 50
        if best is None or score < best[0]:
            best = (score, conn)
    return best[1] if best else None


def respond(eng: Engine, ike: IKESA, msgid: int, payloads: list, local: Endpoint,
            remote: Endpoint, now: float) -> list[Action]:
    acts: list[Action] = []

    def reject(why: str) -> list[Action]:
        acts.append(Log(f"IKE_AUTH from {remote} rejected: {why}; answering "
                        "AUTHENTICATION_FAILED", level="warning", conn=ike.conn.name,
                        serial=ike.serial))
        acts.extend(eng.send_response(ike, EXCH_AUTH, msgid,
                                      [codec.notify(N.AUTHENTICATION_FAILED)], local, remote))
        acts.extend(eng.drop_ike(ike, now, "", EventKind.FAILED, FailReason.AUTHENTICATION))
        return acts

    idi_p = next((p for p in payloads if p.payload_type == PT.IDi), None)
    auth_p = next((p for p in payloads if p.payload_type == PT.AUTH), None)
    idr_p = next((p for p in payloads if p.payload_type == PT.IDr), None)
    if idi_p is None or auth_p is None:
        return reject("IDi or AUTH missing")
    peer_id = identity_from_wire(int(idi_p.id_type), bytes(idi_p.data))
    want = identity_from_wire(int(idr_p.id_type), bytes(idr_p.data)) if idr_p else None
    conn = _pick_connection(eng, ike, peer_id, want, payloads)
    if conn is None:
        return reject(f"no connection matches peer {id_desc(peer_id)}")
    if conn.authby not in ("secret", "psk", "secret|rsasig", "rsasig|secret") and \
            (conn.remote.auth or conn.authby) not in ("secret", "psk"):
        return reject(f"connection requires authby={conn.authby}; only PSK is supported")
    if int(auth_p.method) != AUTH_PSK:
        return reject(f"AUTH method {int(auth_p.method)} is not PSK")
    if conn is not ike.conn:
        eng.rebind(ike, conn)
    local_id = local_identity(ike, conn)
    psk = _psk(eng, ike, local_id, peer_id)
    if psk is None:
        return reject(f"no PSK for {local_id}/{peer_id}")  # CVE-2024-2357
    octets = cauth.signed_octets(ike.chosen.prf, ike.sk_pi,  # type: ignore[union-attr]
                                 ike.init_request, ike.nr, codec.id_body(idi_p))
    if not cauth.psk_verify(ike.chosen.prf, psk, octets, bytes(auth_p.data)):  # type: ignore[union-attr]
        return reject(f"PSK authentication of {id_desc(peer_id)} failed")
    ike.local_id, ike.remote_id = local_id, peer_id
    idr = codec.ident(PT.IDr, local_id)
    out: list = [idr, codec.auth(AUTH_PSK, _auth_data(ike, psk, codec.id_body(idr), False))]
    acts += established(eng, ike, now)
    acts += _uniqueids(eng, ike, now, childmod.has_notify(payloads, N.INITIAL_CONTACT))
    child = None
    has_child = any(p.payload_type in (PT.SA, PT.TSi, PT.TSr) for p in payloads)
    if has_child:
        child, cp, why, reason = childmod.accept(eng, ike, conn, payloads, ike.ni, ike.nr,
                                                 None, None)
        out += cp
        if child is None:
            acts.append(Log(f"IKE SA established but the Child SA is refused: {why}",
                            level="warning", conn=conn.name, serial=ike.serial))
            acts.append(ConnectionEvent(EventKind.FAILED, conn.name, ike.serial, why, reason))
    else:
        eng.log(acts, "peer requested a childless IKE SA (RFC 6023)", ike)
    if child is not None:
        acts += eng.install_child(child, child.keys, now)
    acts += eng.send_response(ike, EXCH_AUTH, msgid, out, local, remote)
    return acts


def _uniqueids(eng: Engine, ike: IKESA, now: float, initial_contact: bool) -> list[Action]:
    """uniqueids / INITIAL_CONTACT (§2.4): older IKE SAs of this peer ID go away."""
    from pypluto.ike.exchanges import informational
    acts: list[Action] = []
    uniq = ike.conn.uniqueids if ike.conn.uniqueids is not None else eng.settings.uniqueids
    if not (uniq or initial_contact):
        return acts
    for other in list(eng.by_peer.get(eng.peer_key(ike), {}).values()):
        if other is ike or other.initiator and other.state in (S.PARENT_I1, S.PARENT_I2):
            continue
        if not other.established or other.remote_id is None:
            continue
        if other.conn.name != ike.conn.name or not ids.id_matches(other.remote_id, ike.remote_id):
            continue
        if other.replaced or other.peer_rekeys:
            continue
        eng.log(acts, f"new IKE SA #{ike.serial} replaces this one "
                f"({'INITIAL_CONTACT' if initial_contact else 'uniqueids'})", other)
        if initial_contact:
            acts += eng.drop_ike(other, now, "replaced")
        else:
            acts += informational.delete_ike(eng, other, now)
    return acts
