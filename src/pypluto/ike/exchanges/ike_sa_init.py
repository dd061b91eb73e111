"""IKE_SA_INIT (RFC 7296 §1.2, §2.6 cookies, §2.10 nonces, §2.23 NAT detection).

Initiator: ``initiate`` sends the request, ``on_response`` handles COOKIE,
INVALID_KE_PAYLOAD, errors, or derives the keys and starts IKE_AUTH (floating
to port 4500 when a NAT was detected or ``encapsulation=yes``).
Responder: ``respond`` is stateless until the request is acceptable (cookies,
proposal, KE group), then creates a half-open IKE SA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from pypluto.crypto import dh, keys
from pypluto.crypto.errors import CryptoError
from pypluto.crypto.sk import SKProtector
from pypluto.ike import codec, proposals
from pypluto.ike import sa as S
from pypluto.ike.actions import (
    Action,
    ConnectionEvent,
    Endpoint,
    EventKind,
    FailReason,
    Log,
    SendPacket,
)
from pypluto.ike.sa import IKESA, Outstanding
from pypluto.wire.constants import NotifyType as N
from pypluto.wire.errors import WireError

if TYPE_CHECKING:
    from pypluto.config.model import Connection
    from pypluto.ike.engine import Engine

PT = codec.PT
EXCH_INIT = 34
PROTO_IKE = 1
NONCE_SIZE = 32
# RFC 7427 §4: SHA2-256, SHA2-384, SHA2-512, Identity
SIGHASH_DATA = bytes.fromhex("0002000300040005")


class InitTask:
    """The IKE_SA_INIT request in flight (message ID 0, resent as is)."""

    exchange = EXCH_INIT

    def on_timeout(self, eng: Engine, ike: IKESA, now: float) -> list[Action]:
        return fail(eng, ike, now, "no response to IKE_SA_INIT (retransmit timeout)",
                    FailReason.TIMEOUT, retry=True)


def _natd(eng: Engine, ike: IKESA, spi_r: bytes, fake: bool) -> list:
    src = codec.natd_hash(ike.spi_i, spi_r, ike.local.addr, ike.local.port)
    if fake:  # encapsulation=yes: make the peer see a NAT (as Libreswan does)
        src = codec.natd_hash(ike.spi_i, spi_r, ike.local.addr, 0)
    dst = codec.natd_hash(ike.spi_i, spi_r, ike.remote.addr, ike.remote.port)
    return [codec.notify(N.NAT_DETECTION_SOURCE_IP, src),
            codec.notify(N.NAT_DETECTION_DESTINATION_IP, dst)]


def _capabilities(eng: Engine, conn: Connection, peer: dict | None = None) -> list:
    out = []
    if conn.fragmentation != "no" and (peer is None or N.IKEV2_FRAGMENTATION_SUPPORTED in peer):
        out.append(codec.notify(N.IKEV2_FRAGMENTATION_SUPPORTED))
    if peer is None or N.SIGNATURE_HASH_ALGORITHMS in peer:
        out.append(codec.notify(N.SIGNATURE_HASH_ALGORITHMS, SIGHASH_DATA))
    if peer is None or N.CHILDLESS_IKEV2_SUPPORTED in peer:
        out.append(codec.notify(N.CHILDLESS_IKEV2_SUPPORTED))
    for v in eng.settings.vendorids:
        out.append(codec.vendor(v))
    return out


def initiate(eng: Engine, conn: Connection, now: float, tries: int = 1,
             reauth_of: IKESA | None = None) -> list[Action]:
    acts: list[Action] = []
    assert conn.local.host_addr is not None and conn.remote.host_addr is not None
    port = conn.remote.ikeport or 500
    lport = 500 if port == 500 else 4500
    ike = IKESA(serial=eng.new_serial(), conn=conn, initiator=True, spi_i=eng.alloc_ike_spi(),
                spi_r=bytes(8), local=Endpoint(conn.local.host_addr, lport),
                remote=Endpoint(conn.remote.host_addr, port), state=S.PARENT_I1)
    ike.tries = tries
    ike.reauth_of = reauth_of
    specs = proposals.ike_specs(conn.ike)
    ike.ke_group = proposals.first_group(specs)
    ike.ni = eng.rng(NONCE_SIZE)
    eng.register(ike)
    what = f"initiating IKEv2 connection to replace #{reauth_of.serial} (reauth)" \
        if reauth_of is not None else "initiating IKEv2 connection"
    eng.log(acts, what + (f" (attempt {tries})" if tries > 1 else ""), ike)
    acts += _send(eng, ike, now)
    return acts


def _send(eng: Engine, ike: IKESA, now: float) -> list[Action]:
    """Make our KE value (``Engine.compute``: inline or offloaded) and send IKE_SA_INIT."""
    group = ike.ke_group

    def then(result: object, t: float) -> list[Action]:
        if ike.state != S.PARENT_I1 or ike.outstanding is not None:
            return []  # the IKE SA moved on while the job ran
        return _send_with(eng, ike, result, t)

    return eng.compute(ike, lambda: dh.initiator_ke(group), then, now)


def _send_with(eng: Engine, ike: IKESA, priv: object, now: float) -> list[Action]:
    conn = ike.conn
    specs = proposals.ike_specs(conn.ike)
    if isinstance(priv, BaseException):
        acts: list[Action] = [Log(f"cannot initiate: KE group {ike.ke_group}: {priv}",
                                  level="error", conn=conn.name, serial=ike.serial)]
        return acts + eng.drop_ike(ike, now, "", EventKind.FAILED, FailReason.LOCAL)
    ike.ke_priv = priv
    sent = proposals.build_proposals(specs, PROTO_IKE, b"", ike=True, ke_override=ike.ke_group)
    ike.pending_child = sent  # the proposals, to check the answer
    payloads = []
    if ike.cookie:
        payloads.append(codec.notify(N.COOKIE, ike.cookie))
    payloads += [codec.sa(sent), codec.ke(ike.ke_group, ike.ke_priv.public),
                 codec.nonce(ike.ni)]
    payloads += _natd(eng, ike, bytes(8), conn.encapsulation == "yes")
    payloads += _capabilities(eng, conn)
    data = codec.encode(ike.spi_i, ike.spi_r, EXCH_INIT, True, False, 0, payloads)[0]
    ike.init_request = data
    interval = max(conn.retransmit_interval, 0.01)
    ike.outstanding = Outstanding(0, [data], InitTask(), now + interval, interval,
                                  now + conn.retransmit_timeout)
    ike.next_out = 1
    eng.schedule(ike)
    return [SendPacket(data, ike.local, ike.remote)]


def fail(eng: Engine, ike: IKESA, now: float, why: str, reason: FailReason,
         retry: bool = False) -> list[Action]:
    """The IKE SA could not be established: remove it; retry per keyingtries/auto=start."""
    acts: list[Action] = [Log(f"IKE SA establishment failed: {why}", level="warning",
                              conn=ike.conn.name, serial=ike.serial)]
    acts += eng.drop_ike(ike, now, "", None)
    acts.append(ConnectionEvent(EventKind.FAILED, ike.conn.name, ike.serial, why, reason))
    conn = ike.conn
    if retry and ike.initiator and conn.name in eng.connections and \
            (conn.keyingtries == 0 or ike.tries < conn.keyingtries) and \
            conn.auto in ("start", "up", "route", "ondemand"):
        acts += initiate(eng, conn, now, ike.tries + 1)
    return acts


def reason_for_notify(ntype: int) -> FailReason:
    """The ``FailReason`` of an error notify the peer answered with (RFC 7296 §3.10.1)."""
    if ntype == N.AUTHENTICATION_FAILED:
        return FailReason.AUTHENTICATION
    if ntype in (N.NO_PROPOSAL_CHOSEN, N.INVALID_KE_PAYLOAD):
        return FailReason.PROPOSAL
    if ntype == N.TS_UNACCEPTABLE:
        return FailReason.TRAFFIC_SELECTORS
    return FailReason.PEER_NOTIFY


def _notifies(payloads: list) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for p in payloads:
        if p.payload_type == PT.NOTIFY:
            out.setdefault(int(p.notify_type), p)
    return out


def _natd_check(payloads: list, spi_i: bytes, spi_r: bytes, local: Endpoint,
                remote: Endpoint) -> tuple[bool, bool, bool]:
    """(seen, we are behind a NAT, the peer is behind a NAT) per §2.23."""
    srcs = [p.data for p in payloads if p.payload_type == PT.NOTIFY
            and p.notify_type == N.NAT_DETECTION_SOURCE_IP]
    dsts = [p.data for p in payloads if p.payload_type == PT.NOTIFY
            and p.notify_type == N.NAT_DETECTION_DESTINATION_IP]
    if not srcs or not dsts:
        return False, False, False
    mine = codec.natd_hash(spi_i, spi_r, local.addr, local.port)
    theirs = codec.natd_hash(spi_i, spi_r, remote.addr, remote.port)
    return True, mine not in dsts, theirs not in srcs


def _protectors(eng: Engine, ike: IKESA, k: Any) -> None:
    c = ike.chosen
    assert c is not None
    prot_i = SKProtector(c.encr, c.encr_bits, c.integ or None, k.sk_ei, k.sk_ai, rng=eng.rng)
    prot_r = SKProtector(c.encr, c.encr_bits, c.integ or None, k.sk_er, k.sk_ar, rng=eng.rng)
    ike.prot_out, ike.prot_in = (prot_i, prot_r) if ike.initiator else (prot_r, prot_i)
    ike.sk_d, ike.sk_pi, ike.sk_pr = k.sk_d, k.sk_pi, k.sk_pr


# ---------------------------------------------------------------- initiator: response
def on_response(eng: Engine, ike: IKESA, data: bytes, hdr: Any, local: Endpoint,
                remote: Endpoint, now: float) -> list[Action]:
    acts: list[Action] = []
    if eng.is_computing(ike):
        return [Log("ignoring IKE_SA_INIT response: the previous one is being computed",
                    level="debug", conn=ike.conn.name, serial=ike.serial)]
    try:
        msg = codec.parse(data)
    except WireError as e:
        return [Log(f"dropping malformed IKE_SA_INIT response: {e}", level="debug",
                    conn=ike.conn.name, serial=ike.serial)]
    pl = msg.payloads
    ns = _notifies(pl)
    conn = ike.conn
    if N.COOKIE in ns and not ike.cookie_retried:
        cookie = ns[N.COOKIE].data
        if not 1 <= len(cookie) <= 64:
            return []
        ike.cookie = cookie
        ike.cookie_retried = True
        eng.log(acts, "received COOKIE; resending IKE_SA_INIT with the cookie", ike)
        ike.outstanding = None
        return acts + _send(eng, ike, now)
    if N.INVALID_KE_PAYLOAD in ns:
        d = ns[N.INVALID_KE_PAYLOAD].data
        group = int.from_bytes(d[:2], "big") if len(d) >= 2 else 0
        groups = {int(g) for s in proposals.ike_specs(conn.ike) for g in s.ke}
        if group in groups and group != ike.ke_group and ike.invalid_ke_retries < 2:
            ike.invalid_ke_retries += 1
            eng.log(acts, f"received INVALID_KE_PAYLOAD; retrying with "
                    f"{codec_ke_name(group)}", ike)
            ike.ke_group = group
            ike.outstanding = None
            return acts + _send(eng, ike, now)
        return acts + fail(eng, ike, now, f"INVALID_KE_PAYLOAD asks for unacceptable group "
                           f"{group}", FailReason.PROPOSAL)
    errors = [t for t in ns if t < 16384]
    if errors:
        name = N(errors[0]).name if errors[0] in N._value2member_map_ else str(errors[0])
        return acts + fail(eng, ike, now, f"peer answered {name}",
                           reason_for_notify(errors[0]))
    sa_p = next((p for p in pl if p.payload_type == PT.SA), None)
    ke_p = next((p for p in pl if p.payload_type == PT.KE), None)
    nr_p = next((p for p in pl if p.payload_type == PT.NONCE), None)
    if sa_p is None or ke_p is None or nr_p is None or hdr.spi_r == bytes(8):
        return acts + fail(eng, ike, now, "IKE_SA_INIT response lacks SA, KE or Nonce",
                           FailReason.PROPOSAL)
    chosen = proposals.check_answer(codec.sa_tuples(sa_p), ike.pending_child, ike=True)
    if chosen is None or chosen.ke != ike.ke_group or ke_p.group != ike.ke_group:
        return acts + fail(eng, ike, now, "IKE_SA_INIT response has an unacceptable proposal",
                           FailReason.PROPOSAL)
    priv, peer_ke = ike.ke_priv, bytes(ke_p.data)

    def then(result: object, t: float) -> list[Action]:
        if ike.state != S.PARENT_I1 or ike.ke_priv is not priv:
            return []  # the exchange moved on while the job ran
        return _init_keyed(eng, ike, data, hdr, pl, ns, chosen, nr_p.data, result, t)

    return acts + eng.compute(ike, lambda: priv.finish(peer_ke), then, now)


def _init_keyed(eng: Engine, ike: IKESA, data: bytes, hdr: Any, pl: list, ns: dict,
                chosen: Any, nr: bytes, shared: object, now: float) -> list[Action]:
    """Initiator: derive the IKE SA keys (§2.14) and send IKE_AUTH (§1.2)."""
    from pypluto.ike.exchanges import ike_auth

    acts: list[Action] = []
    conn = ike.conn
    if isinstance(shared, BaseException):
        return fail(eng, ike, now, f"key exchange failed: {shared}", FailReason.PROPOSAL)
    try:
        ike.chosen = chosen
        ike.nr = nr
        ike.spi_r = hdr.spi_r
        seed = keys.skeyseed(chosen.prf, ike.ni, ike.nr, shared)  # type: ignore[arg-type]
        k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                                 seed, ike.ni, ike.nr, ike.spi_i, ike.spi_r)
        _protectors(eng, ike, k)
    except CryptoError as e:
        return acts + fail(eng, ike, now, f"key exchange failed: {e}", FailReason.PROPOSAL)
    ike.ke_priv = None
    ike.pending_child = None
    ike.init_response = data
    ike.outstanding = None
    seen, nat_l, nat_r = _natd_check(pl, ike.spi_i, ike.spi_r, ike.local, ike.remote)
    ike.nat_local, ike.nat_remote = nat_l, nat_r
    ike.frag_ok = N.IKEV2_FRAGMENTATION_SUPPORTED in ns and conn.fragmentation != "no"
    ike.last_recv = now
    if (seen and (nat_l or nat_r)) or conn.encapsulation == "yes":
        if nat_l or nat_r:
            eng.log(acts, "NAT detected: " + ("we are" if nat_l else "peer is")
                    + " behind a NAT; switching to port 4500", ike, level="info")
        if ike.local.port == 500:
            ike.local = Endpoint(ike.local.addr, 4500)
        if ike.remote.port == 500:
            ike.remote = Endpoint(ike.remote.addr, 4500)
    if nat_l and conn.nat_keepalive and eng.settings.keep_alive > 0:
        ike.next_keepalive = now + eng.settings.keep_alive
    ike.state = S.PARENT_I2
    eng.log(acts, f"sent IKE_AUTH request to {ike.remote} (IKE SA "
            f"{chosen.encr_name()}{'-' + chosen.integ_name() if chosen.integ else ''}-"
            f"{chosen.prf_name()}-{chosen.ke_name()})", ike)
    task = ike_auth.AuthTask()
    payloads = task.build(eng, ike, now, acts)
    if payloads is None:
        return acts + fail(eng, ike, now, "cannot build IKE_AUTH", FailReason.LOCAL)
    acts += eng.send_request(ike, task, task.exchange, payloads, now)
    return acts


def codec_ke_name(group: int) -> str:
    from pypluto.crypto import registry as reg
    return reg.transform_name(reg.TransformType.KE, group)


# ---------------------------------------------------------------- responder
def find_connections(eng: Engine, local: Endpoint, remote: Endpoint) -> list[Connection]:
    """Candidate connections for a new IKE SA, exact remote address first."""
    exact, wild = [], []
    for conn in eng.connections.values():
        if conn.local_is_left is None or conn.keyexchange not in ("ikev2", "ike"):
            continue
        if conn.authby == "never" or conn.type in ("passthrough", "drop", "reject"):
            continue
        la = conn.local.host_addr
        if la is not None and la != local.addr:
            continue
        ra = conn.remote.host_addr
        if ra is not None and ra == remote.addr:
            exact.append(conn)
        elif ra is None and conn.remote.is_any:
            wild.append(conn)
    return exact + wild


def _stateless(eng: Engine, hdr: Any, local: Endpoint, remote: Endpoint, payloads: list
               ) -> list[Action]:
    data = codec.encode(hdr.spi_i, bytes(8), EXCH_INIT, False, True, 0, payloads)[0]
    return [SendPacket(data, local, remote)]


def respond(eng: Engine, data: bytes, hdr: Any, local: Endpoint, remote: Endpoint,
            now: float) -> list[Action]:
    acts: list[Action] = []
    key = (hdr.spi_i, remote.addr, remote.port)
    old = eng.halfopen.get(key)
    if old is not None:
        if old.init_request == data and old.last_response is not None \
                and old.last_response[0] == 0:
            return [SendPacket(p, local, remote) for p in old.last_response[1]]
        if old.init_request == data and eng.is_computing(old):
            return [Log(f"ignoring retransmitted IKE_SA_INIT from {remote} (its key exchange "
                        "is being computed)", level="debug", conn=old.conn.name,
                        serial=old.serial)]
        return [Log(f"dropping IKE_SA_INIT for an IKE SA that exists (from {remote})",
                    level="debug")]
    if hdr.message_id != 0:
        return [Log("dropping IKE_SA_INIT request with message ID != 0", level="debug")]
    try:
        msg = codec.parse(data)
    except WireError as e:
        acts.append(Log(f"malformed IKE_SA_INIT from {remote}: {e}", level="warning"))
        return acts + _stateless(eng, hdr, local, remote, [codec.notify(e.notify)])
    pl = msg.payloads
    ns = _notifies(pl)
    conns = find_connections(eng, local, remote)
    if not conns:
        return [Log(f"no connection found for IKE_SA_INIT from {remote} to {local}; "
                    "dropping", level="warning")]
    sa_p = [p for p in pl if p.payload_type == PT.SA]
    ke_p = [p for p in pl if p.payload_type == PT.KE]
    ni_p = [p for p in pl if p.payload_type == PT.NONCE]
    if len(sa_p) != 1 or len(ke_p) != 1 or len(ni_p) != 1:
        acts.append(Log(f"IKE_SA_INIT from {remote} lacks SA, KE or Ni (or repeats one); "
                        "answering INVALID_SYNTAX", level="warning"))
        return acts + _stateless(eng, hdr, local, remote, [codec.notify(N.INVALID_SYNTAX)])
    ni = ni_p[0].data
    # §2.6 cookies when busy
    if eng.busy():
        if eng.cookie_rotate_at is None:
            eng.cookie_rotate_at = now + eng.settings.cookie_secret_lifetime
        got = ns.get(N.COOKIE)
        ok = got is not None and got.data in (
            codec.cookie_value(eng.cookie_secret, eng.cookie_version, ni, remote.addr,
                               hdr.spi_i),
            codec.cookie_value(eng.cookie_prev, (eng.cookie_version - 1) & 0xFF, ni,
                               remote.addr, hdr.spi_i))
        if not ok:
            cookie = codec.cookie_value(eng.cookie_secret, eng.cookie_version, ni, remote.addr,
                                        hdr.spi_i)
            acts.append(Log(f"busy: demanding a COOKIE from {remote}", level="debug"))
            return acts + _stateless(eng, hdr, local, remote, [codec.notify(N.COOKIE, cookie)])
    if eng.n_halfopen >= eng.settings.max_halfopen_ike:
        return [Log("too many half-open IKE SAs; dropping IKE_SA_INIT", level="warning")]
    peer_props = codec.sa_tuples(sa_p[0])
    chosen = None
    conn = conns[0]
    for c in conns:
        chosen = proposals.choose(peer_props, proposals.ike_specs(c.ike), PROTO_IKE, ike=True)
        if chosen is not None:
            conn = c
            break
    if chosen is None:
        acts.append(Log(f"no proposal acceptable for IKE_SA_INIT from {remote}; answering "
                        "NO_PROPOSAL_CHOSEN", level="warning", conn=conn.name))
        return acts + _stateless(eng, hdr, local, remote, [codec.notify(N.NO_PROPOSAL_CHOSEN)])
    ke = ke_p[0]
    if ke.group != chosen.ke:
        acts.append(Log(f"KE payload group {ke.group} but {chosen.ke_name()} chosen; answering "
                        "INVALID_KE_PAYLOAD", level="info", conn=conn.name))
        return acts + _stateless(eng, hdr, local, remote, [codec.notify(
            N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
    from pypluto.crypto import registry as reg
    alg = reg.get(reg.TransformType.KE, chosen.ke)
    if alg is not None and alg.ke_size and len(ke.data) != alg.ke_size:
        acts.append(Log(f"KE payload of {len(ke.data)} bytes for {chosen.ke_name()}; answering "
                        "INVALID_SYNTAX", level="warning", conn=conn.name))
        return acts + _stateless(eng, hdr, local, remote, [codec.notify(N.INVALID_SYNTAX)])
    return acts + _respond_computing(eng, data, hdr, local, remote, now, conn, conns,
                                     chosen, ni, ns, pl, key, bytes(ke.data))


def _new_responder(eng: Engine, conn: Connection, chosen: Any, hdr: Any, local: Endpoint,
                   remote: Endpoint, ni: bytes, now: float) -> IKESA:
    ike = IKESA(serial=eng.new_serial(), conn=conn, initiator=False, spi_i=hdr.spi_i,
                spi_r=eng.alloc_ike_spi(), local=local, remote=remote, state=S.PARENT_R1)
    ike.chosen = chosen
    ike.ke_group = chosen.ke
    ike.ni = ni
    ike.nr = eng.rng(NONCE_SIZE)
    return ike


def _register_halfopen(eng: Engine, ike: IKESA, key: tuple, now: float) -> None:
    eng.register(ike)
    eng.halfopen[key] = ike
    ike.halfopen_key = key
    ike.halfopen_deadline = now + eng.settings.half_open_timeout
    eng.n_halfopen += 1


def _respond_computing(eng: Engine, data: bytes, hdr: Any, local: Endpoint, remote: Endpoint,
                       now: float, conn: Connection, conns: list, chosen: Any, ni: bytes,
                       ns: dict, pl: list, key: tuple, peer_ke: bytes) -> list[Action]:
    """The responder's KE computation (``Engine.compute``); the half-open IKE SA waits for it.

    The SA is registered at once so that a retransmitted request is recognised
    (and ignored) while the job runs, and counts as half-open (RFC 7296 §2.6).
    """
    ike = _new_responder(eng, conn, chosen, hdr, local, remote, ni, now)
    ike.init_request = data
    _register_halfopen(eng, ike, key, now)
    eng.schedule(ike)  # the half-open timeout runs while the job does
    group = chosen.ke

    def job() -> tuple[bytes, bytes]:
        return dh.responder_ke(group, peer_ke)

    def then(result: object, t: float) -> list[Action]:
        if isinstance(result, BaseException):
            what = "bad KE value" if isinstance(result, CryptoError) else \
                f"key exchange failed ({type(result).__name__})"
            acts: list[Action] = [Log(f"{what} from {remote}: {result}; answering "
                                      "INVALID_KE_PAYLOAD", level="warning", conn=conn.name,
                                      serial=ike.serial)]
            acts += eng.drop_ike(ike, t, "", None)
            return acts + _stateless(eng, hdr, local, remote, [codec.notify(
                N.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))])
        ke_data, shared = cast(tuple[bytes, bytes], result)
        return _respond_keyed(eng, ike, data, local, remote, t, conns, ns, pl, key, ke_data,
                              shared)

    return eng.compute(ike, job, then, now)


def _respond_keyed(eng: Engine, ike: IKESA, data: bytes, local: Endpoint, remote: Endpoint,
                   now: float, conns: list, ns: dict, pl: list, key: tuple, ke_data: bytes,
                   shared: bytes) -> list[Action]:
    """Derive the keys (§2.14) and answer IKE_SA_INIT; register the half-open IKE SA."""
    acts: list[Action] = []
    conn = ike.conn
    chosen = ike.chosen
    assert chosen is not None
    try:
        seed = keys.skeyseed(chosen.prf, ike.ni, ike.nr, shared)
        k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                                 seed, ike.ni, ike.nr, ike.spi_i, ike.spi_r)
        _protectors(eng, ike, k)
    except CryptoError as e:
        return [Log(f"key derivation failed: {e}", level="error", conn=conn.name)] + \
            eng.drop_ike(ike, now, "", None)
    seen, nat_l, nat_r = _natd_check(pl, ike.spi_i, bytes(8), local, remote)
    ike.nat_local, ike.nat_remote = nat_l, nat_r
    ike.frag_ok = N.IKEV2_FRAGMENTATION_SUPPORTED in ns and conn.fragmentation != "no"
    ike.init_request = data
    ike.cands = conns
    payloads = [codec.sa([proposals.chosen_proposal(chosen, PROTO_IKE, b"", ike=True)]),
                codec.ke(chosen.ke, ke_data), codec.nonce(ike.nr)]
    if seen:
        payloads += _natd(eng, ike, ike.spi_r, conn.encapsulation == "yes")
    payloads += _capabilities(eng, conn, ns)
    out = codec.encode(ike.spi_i, ike.spi_r, EXCH_INIT, False, True, 0, payloads)
    ike.init_response = out[0]
    ike.last_response = (0, out)
    ike.next_in = 1
    ike.last_recv = now
    eng.schedule(ike)
    nat = ""
    if nat_l or nat_r:
        nat = "; NAT detected (" + ("local" if nat_l else "remote") + ")"
    eng.log(acts, f"responding to IKE_SA_INIT from {remote} with {chosen.encr_name()}"
            f"{'-' + chosen.integ_name() if chosen.integ else ''}-{chosen.prf_name()}-"
            f"{chosen.ke_name()}{nat}", ike)
    acts += [SendPacket(p, local, remote) for p in out]
    return acts
