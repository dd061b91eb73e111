"""IKE_SA_INIT (RFC 7296 §1.2, §2.6 cookies, §2.10 nonces, §2.23 NAT detection).

Initiator: ``initiate`` makes the IKE SA and its KE value (``IKEContext.compute``),
then queues ``IKEInit``, which the task manager sends as message 0.  Its
``on_response`` handles COOKIE, INVALID_KE_PAYLOAD, errors, or derives the keys
and queues ``IKEAuth`` (floating to port 4500 when a NAT was detected or
``encapsulation=yes``).
Responder: ``respond_new`` is stateless until the request is acceptable (cookies and
half-open limits first, from the header and first payload alone: ``ike/cookies.py``;
then proposal, KE group), then creates a half-open IKE SA.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from pypluto._version import __version__
from pypluto.config.model import Connection
from pypluto.crypto import dh, keys
from pypluto.crypto import registry as reg
from pypluto.crypto.errors import CryptoError
from pypluto.iana import ExchangeType, ProtocolID
from pypluto.iana import NotifyType as N
from pypluto.ike import auth_sig, codec, ppk, proposals
from pypluto.ike.actions import Action, Endpoint, EventKind, FailReason, Log, SendPacket
from pypluto.ike.codec import IKEHeader, Payload
from pypluto.ike.context import HalfOpenKey, IKEContext
from pypluto.ike.cookies import cookie_in, cookie_reply
from pypluto.ike.proposals import Chosen
from pypluto.ike.sa import IKESA, IKEState
from pypluto.ike.tasks import ike_intermediate, redirect
from pypluto.ike.tasks.base import Inbound, Task
from pypluto.ike.tasks.common import NONCE_SIZE, fail, install_keys, reason_for_notify
from pypluto.wire import payloads as wp
from pypluto.wire.errors import WireError

EXCH_INIT = ExchangeType.IKE_SA_INIT
_NO_SPI = bytes(8)  # the responder SPI of an IKE_SA_INIT request (§3.1)
# RFC 7427 §4: SHA2-256, SHA2-384, SHA2-512, Identity
SIGHASH_DATA = bytes.fromhex("0002000300040005")
Notifies = dict[int, wp.NotifyPayload]


class IKEInit(Task):
    """The IKE_SA_INIT request (message ID 0, resent as is) and its answer."""

    exchange = EXCH_INIT

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        conn = ike.conn
        assert ike.ke_priv is not None
        sent = proposals.build_proposals(proposals.ike_specs(conn.ike), ProtocolID.IKE, b"",
                                         ike=True, ke_override=ike.ke_group)
        ike.sent_proposals = sent  # to check the answer
        payloads: list[Payload] = []
        if ike.cookie:
            payloads.append(codec.notify(N.COOKIE, ike.cookie))
        payloads += [codec.sa(sent), codec.ke(ike.ke_group, ike.ke_priv.public),
                     codec.nonce(ike.ni)]
        payloads += _natd(ike, bytes(8), conn.encapsulation == "yes")
        payloads += _capabilities(ctx, conn)
        payloads += ike_intermediate.init_notify(conn)  # RFC 9242 IKE_INT_SUP
        payloads += ppk.init_request(conn)  # RFC 8784 USE_PPK
        payloads += redirect.init_notifies(conn)  # RFC 5685 REDIRECT_SUPPORTED
        return payloads

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        acts: list[Action] = []
        home = redirect.unreachable(ike.conn)  # a dead redirect target: back home
        if home is not None:
            ctx.log(acts, f"redirect target {ike.remote.addr} does not answer: back to "
                    f"gateway {home}", ike, level="warning")
        return acts + fail(ctx, ike, now, "no response to IKE_SA_INIT (retransmit timeout)",
                           FailReason.TIMEOUT, retry=True)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        if ctx.is_computing(ike):
            return [Log("ignoring IKE_SA_INIT response: the previous one is being computed",
                        level="debug", conn=ike.conn.name, serial=ike.serial)]
        pl = msg.payloads
        ns = _notifies(pl)
        conn = ike.conn
        if N.REDIRECT in ns and redirect.follow(  # RFC 5685 §4
                ctx, ike, bytes(ns[N.REDIRECT].data), ike.ni, now, acts,
                lambda t: ctx.drop_ike(ike, t, "redirected", None) +
                redirect.restart(ctx, conn, t, ike.reauth_of),
                lambda t: fail(ctx, ike, t, "redirect not followed", FailReason.PEER_NOTIFY)):
            return acts
        if N.COOKIE in ns and not ike.cookie_retried:
            cookie = ns[N.COOKIE].data
            if not 1 <= len(cookie) <= 64:  # §2.6; the request is no longer in flight
                return acts + fail(ctx, ike, now, f"IKE_SA_INIT response carries a COOKIE "
                                   f"of {len(cookie)} bytes (1 to 64 allowed)",
                                   FailReason.PEER_NOTIFY)
            ike.cookie = cookie
            ike.cookie_retried = True
            ctx.log(acts, "received COOKIE; resending IKE_SA_INIT with the cookie", ike)
            ctx.restart_window(ike)
            return acts + _send(ctx, ike, now)
        if N.INVALID_KE_PAYLOAD in ns:
            d = ns[N.INVALID_KE_PAYLOAD].data
            group = int.from_bytes(d[:2], "big") if len(d) >= 2 else 0
            ctx.stats.invalid_ke_payload("recv", ike.ke_group, group)
            groups = {int(g) for s in proposals.ike_specs(conn.ike) for g in s.ke}
            if group in groups and group != ike.ke_group and ike.invalid_ke_retries < 2:
                ike.invalid_ke_retries += 1
                ctx.log(acts, f"received INVALID_KE_PAYLOAD; retrying with "
                        f"{reg.transform_name(reg.TransformType.KE, group)}", ike)
                ike.ke_group = group
                ctx.restart_window(ike)
                return acts + _send(ctx, ike, now)
            return acts + fail(ctx, ike, now, f"INVALID_KE_PAYLOAD asks for unacceptable "
                               f"group {group}", FailReason.PROPOSAL)
        errors = [t for t in ns if t < 16384]
        if errors:
            name = N(errors[0]).name if errors[0] in N._value2member_map_ else str(errors[0])
            return acts + fail(ctx, ike, now, f"peer answered {name}",
                               reason_for_notify(errors[0]))
        sa_p = codec.first(pl, wp.SAPayload)
        ke_p = codec.first(pl, wp.KEPayload)
        nr_p = codec.first(pl, wp.NoncePayload)
        if sa_p is None or ke_p is None or nr_p is None or msg.spi_r == bytes(8):
            return acts + fail(ctx, ike, now, "IKE_SA_INIT response lacks SA, KE or Nonce",
                               FailReason.PROPOSAL)
        assert ike.sent_proposals is not None
        chosen = proposals.check_answer(codec.sa_tuples(sa_p), ike.sent_proposals, ike=True)
        if chosen is None or chosen.ke != ike.ke_group or ke_p.group != ike.ke_group:
            return acts + fail(ctx, ike, now, "IKE_SA_INIT response has an unacceptable "
                               "proposal", FailReason.PROPOSAL)
        priv, peer_ke, nr = ike.ke_priv, bytes(ke_p.data), bytes(nr_p.data)
        assert priv is not None

        def then(result: object, t: float) -> list[Action]:
            if ike.state is not IKEState.INIT_I or ike.ke_priv is not priv:
                return []  # the exchange moved on while the job ran
            return _init_keyed(ctx, ike, msg, ns, chosen, nr, result, t)

        return acts + ctx.compute(ike, lambda: priv.finish(peer_ke), then, now)


def _natd(ike: IKESA, spi_r: bytes, fake: bool, local_b: bytes | None = None,
          remote_b: bytes | None = None) -> list[Payload]:
    """NAT_DETECTION_SOURCE_IP and _DESTINATION_IP (§2.23) for ``ike.local`` and
    ``ike.remote``; ``local_b``/``remote_b``: their ``codec.endpoint_bytes`` if known."""
    src, dst = _natd_hashes(ike, spi_r, fake, local_b, remote_b)
    return [codec.notify(N.NAT_DETECTION_SOURCE_IP, src),
            codec.notify(N.NAT_DETECTION_DESTINATION_IP, dst)]


def _natd_hashes(ike: IKESA, spi_r: bytes, fake: bool, local_b: bytes | None = None,
                 remote_b: bytes | None = None) -> tuple[bytes, bytes]:
    """The data of ``_natd``'s two notifies (source, destination)."""
    spi_i = ike.spi_i
    if fake:  # encapsulation=yes: make the peer see a NAT (as Libreswan does)
        src = codec.natd_hash(spi_i, spi_r, ike.local.addr, 0)
    else:
        if local_b is None:
            local_b = codec.endpoint_bytes(ike.local.addr, ike.local.port)
        src = codec.natd_of(spi_i, spi_r, local_b)
    if remote_b is None:
        remote_b = codec.endpoint_bytes(ike.remote.addr, ike.remote.port)
    dst = codec.natd_of(spi_i, spi_r, remote_b)
    return src, dst


# send-vendorid=yes without myvendorid= / --vendorid: Libreswan sends OE-Libreswan-VERSION
DEFAULT_VENDORID = f"OE-pypluto-{__version__}".encode()
# fake-strongswan=yes: strongSwan's unversioned Vendor ID, the MD5 hash of "strongSwan"
# (strongSwan turns some private extensions on when it sees it; a constant, not crypto)
STRONGSWAN_VENDORID = bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb")


def _offers_sighash(conn: Connection) -> bool:
    """Our SIGNATURE_HASH_ALGORITHMS (RFC 7427) goes out unless ``authby=`` allows
    RSA PKCS#1 v1.5 SHA-1 and no SHA-2 signature (``authby=rsa-sha1``): Libreswan 5.2
    sends it only with a SHA-2 hash policy, and without it the peer signs with AUTH
    method 1, the only one such a conn accepts (``auth_sig.peer_scheme_refusal``)."""
    words = set(conn.authby.split(","))
    return "rsa-sha1" not in words or bool(words - {"rsa-sha1", "secret", "null"})


def _capabilities(ctx: IKEContext, conn: Connection, peer: Notifies | None = None
                  ) -> list[Payload]:
    # every input read here is in the key of _capability_run (the template cache)
    out: list[Payload] = []
    if conn.fragmentation != "no" and (peer is None or N.IKEV2_FRAGMENTATION_SUPPORTED in peer):
        out.append(codec.notify(N.IKEV2_FRAGMENTATION_SUPPORTED))
    if (peer is None or N.SIGNATURE_HASH_ALGORITHMS in peer) and _offers_sighash(conn):
        out.append(codec.notify(N.SIGNATURE_HASH_ALGORITHMS, SIGHASH_DATA))
    if peer is None or N.CHILDLESS_IKEV2_SUPPORTED in peer:
        out.append(codec.notify(N.CHILDLESS_IKEV2_SUPPORTED))
    if conn.send_vendorid:  # send-vendorid=yes: myvendorid= / --vendorid, else ours
        for v in ctx.settings.vendorids or [DEFAULT_VENDORID]:
            out.append(codec.vendor(v))
    if conn.fake_strongswan:
        out.append(codec.vendor(STRONGSWAN_VENDORID))
    return out


# Reply templates (issue 18): the parts of our IKE_SA_INIT answer that depend only on
# the chosen transforms or on the connection and the peer's capabilities, serialized
# once.  Both key spaces are small (transform combinations, capability sets); the caps
# only guard against a pathological configuration.
_TEMPLATE_CAP = 4096
# the SA payload as a run of its own, and with its generic header naming KE next
_SA_ANSWERS: dict[tuple[int, int | None, int, int, int, int, tuple[int, ...]],
                  tuple[wp.SerializedRun, bytes]] = {}
_CAP_ANSWERS: dict[tuple[bool, bool, bool, bool, tuple[bytes, ...] | None, bool, bool],
                   wp.SerializedRun | None] = {}


def _sa_template(chosen: Chosen) -> tuple[wp.SerializedRun, bytes]:
    """Our single-proposal SA payload for ``chosen`` (§3.3.6), serialized once: as a
    run, and as the head of the answer (generic header naming KE next, §3.2)."""
    # every field chosen_proposal reads (RFC 9370 ADDKE transforms included)
    key = (chosen.encr, chosen.encr_bits, chosen.prf, chosen.integ, chosen.ke, chosen.number,
           tuple(chosen.addke))
    t = _SA_ANSWERS.get(key)
    if t is None:
        sa = codec.sa([proposals.chosen_proposal(chosen, ProtocolID.IKE, b"", ike=True)])
        run = wp.SerializedRun.of([(sa.payload_type, sa.serialize())])
        t = (run, run.with_next(codec.PT.KE))
        if len(_SA_ANSWERS) < _TEMPLATE_CAP:
            _SA_ANSWERS[key] = t
    return t


def _sa_answer(chosen: Chosen) -> Payload:
    """Our single-proposal SA payload for ``chosen`` (§3.3.6), serialized once."""
    return _sa_template(chosen)[0]


def _capability_run(ctx: IKEContext, conn: Connection, peer: Notifies
                    ) -> wp.SerializedRun | None:
    """``_capabilities`` of a response as one ``SerializedRun`` made once per input set
    (None when it is empty): its last Next Payload 0 and ``notifies`` the types of its
    notifies."""
    key = (conn.fragmentation != "no", N.IKEV2_FRAGMENTATION_SUPPORTED in peer,
           N.SIGNATURE_HASH_ALGORITHMS in peer, N.CHILDLESS_IKEV2_SUPPORTED in peer,
           tuple(ctx.settings.vendorids) if conn.send_vendorid else None,
           conn.fake_strongswan, _offers_sighash(conn))
    try:
        return _CAP_ANSWERS[key]
    except KeyError:
        pass
    caps = _capabilities(ctx, conn, peer)
    run = None
    if caps:
        run = wp.SerializedRun.of([(p.payload_type, p.serialize()) for p in caps])
        run.notifies = tuple(int(p.notify_type) for p in caps
                             if isinstance(p, wp.NotifyPayload))
    if len(_CAP_ANSWERS) < _TEMPLATE_CAP:
        _CAP_ANSWERS[key] = run
    return run


def _capability_answer(ctx: IKEContext, conn: Connection, peer: Notifies) -> list[Payload]:
    """``_capability_run`` as a payload list (empty, or the run)."""
    run = _capability_run(ctx, conn, peer)
    return [] if run is None else [run]


def initiate(ctx: IKEContext, conn: Connection, now: float, tries: int = 1,
             reauth_of: IKESA | None = None) -> list[Action]:
    """A new IKE SA for ``conn``: make its KE value, then send IKE_SA_INIT."""
    acts: list[Action] = []
    assert conn.local.host_addr is not None and conn.remote.host_addr is not None
    # our end's ikeport= can only be the NAT-T port (daemon/registry): IKE starts there,
    # to the peer's 4500 unless its ikeport= says otherwise (RFC 7296 §2.23)
    port = conn.remote.ikeport or (4500 if conn.local.ikeport is not None else 500)
    lport = 500 if port == 500 else 4500
    ike = IKESA(serial=ctx.new_serial(), conn=conn, initiator=True, spi_i=ctx.alloc_ike_spi(),
                spi_r=bytes(8), local=Endpoint(conn.local.host_addr, lport),
                remote=Endpoint(conn.remote.host_addr, port), state=IKEState.INIT_I)
    ike.first_initiator = True  # RFC 5685: the client role, kept over IKE SA rekeys
    ike.tries = tries
    ike.reauth_of = reauth_of
    specs = proposals.ike_specs(conn.ike)
    ike.ke_group = proposals.first_group(specs)
    ike.ni = ctx.rng(NONCE_SIZE)
    ctx.register(ike)
    what = f"initiating IKEv2 connection to replace #{reauth_of.serial} (reauth)" \
        if reauth_of is not None else "initiating IKEv2 connection"
    ctx.log(acts, what + (f" (attempt {tries})" if tries > 1 else ""), ike)
    acts += _send(ctx, ike, now)
    return acts


def _send(ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
    """Make our KE value (``IKEContext.compute``: inline or offloaded), then send."""
    group = ike.ke_group

    def then(result: object, t: float) -> list[Action]:
        if ike.state is not IKEState.INIT_I or ike.outstanding is not None:
            return []  # the IKE SA moved on while the job ran
        if isinstance(result, BaseException):
            acts: list[Action] = [Log(f"cannot initiate: KE group {ike.ke_group}: {result}",
                                      level="error", conn=ike.conn.name, serial=ike.serial)]
            return acts + ctx.drop_ike(ike, t, "", EventKind.FAILED, FailReason.LOCAL)
        ike.ke_priv = cast(dh.KeyExchange, result)
        return ctx.queue(ike, IKEInit(), t, front=True)

    return ctx.compute(ike, lambda: dh.initiator_ke(group), then, now)


def _notifies(payloads: Sequence[Payload]) -> Notifies:
    """The first Notify payload of each type, by type (a plain loop, issue 18)."""
    out: Notifies = {}
    notify = wp.NotifyPayload
    for p in payloads:
        if isinstance(p, notify):
            t = p.notify_type
            if t not in out:
                out[int(t)] = p
    return out


def _natd_check(payloads: Sequence[Payload], spi_i: bytes, spi_r: bytes, local: Endpoint,
                remote: Endpoint, local_b: bytes | None = None, remote_b: bytes | None = None
                ) -> tuple[bool, bool, bool]:
    """(seen, we are behind a NAT, the peer is behind a NAT) per §2.23.

    ``local_b``/``remote_b``: ``codec.endpoint_bytes`` of ``local``/``remote`` if known.
    """
    srcs: list[bytes] = []
    dsts: list[bytes] = []
    notify = wp.NotifyPayload
    for p in payloads:
        if isinstance(p, notify):
            t = p.notify_type
            if t == N.NAT_DETECTION_SOURCE_IP:
                srcs.append(p.data)
            elif t == N.NAT_DETECTION_DESTINATION_IP:
                dsts.append(p.data)
    if not srcs or not dsts:
        return False, False, False
    if local_b is None:
        local_b = codec.endpoint_bytes(local.addr, local.port)
    if remote_b is None:
        remote_b = codec.endpoint_bytes(remote.addr, remote.port)
    mine = codec.natd_of(spi_i, spi_r, local_b)
    theirs = codec.natd_of(spi_i, spi_r, remote_b)
    return True, mine not in dsts, theirs not in srcs


def _init_keyed(ctx: IKEContext, ike: IKESA, msg: Inbound, ns: Notifies, chosen: Chosen,
                nr: bytes, shared: object, now: float) -> list[Action]:
    """Initiator: derive the IKE SA keys (§2.14) and queue IKE_AUTH (§1.2)."""
    acts: list[Action] = []
    conn = ike.conn
    if isinstance(shared, BaseException):
        return fail(ctx, ike, now, f"key exchange failed: {shared}", FailReason.PROPOSAL)
    try:
        ike.chosen = chosen
        ike.nr = nr
        ike.spi_r = msg.spi_r
        seed = keys.skeyseed(chosen.prf, ike.ni, ike.nr, cast(bytes, shared))
        k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                                 seed, ike.ni, ike.nr, ike.spi_i, ike.spi_r)
        install_keys(ctx, ike, k)
    except CryptoError as e:
        return acts + fail(ctx, ike, now, f"key exchange failed: {e}", FailReason.PROPOSAL)
    ike.ke_priv = None
    ike.sent_proposals = None
    ike.init_response = msg.data
    redirect.arrived(conn)  # RFC 5685 §5: REDIRECTED_FROM went in every try until now
    why = ppk.init_answer(ike, msg.payloads)  # RFC 8784 USE_PPK
    if why is not None:
        return acts + fail(ctx, ike, now, why, FailReason.AUTHENTICATION)
    seen, nat_l, nat_r = _natd_check(msg.payloads, ike.spi_i, ike.spi_r, ike.local, ike.remote)
    ike.nat_local, ike.nat_remote = nat_l, nat_r
    ike.frag_ok = N.IKEV2_FRAGMENTATION_SUPPORTED in ns and conn.fragmentation != "no"
    ike.last_recv = now
    if (seen and (nat_l or nat_r)) or conn.encapsulation == "yes":
        if nat_l or nat_r:
            ctx.log(acts, "NAT detected: " + ("we are" if nat_l else "peer is")
                    + " behind a NAT; switching to port 4500", ike, level="info")
        if ike.local.port == 500:
            ike.local = Endpoint(ike.local.addr, 4500)
        if ike.remote.port == 500:
            ike.remote = Endpoint(ike.remote.addr, 4500)
    if nat_l and conn.nat_keepalive and ctx.settings.keep_alive > 0:
        ike.next_keepalive = now + ctx.settings.keep_alive
    why = ike_intermediate.init_answered(ike, list(ns))  # RFC 9242 / RFC 9370
    if why:
        return acts + fail(ctx, ike, now, why, FailReason.PROPOSAL)
    ike.to(IKEState.AUTH_I)
    ctx.log(acts, f"sent IKE_AUTH request to {ike.remote} (IKE SA "
            f"{chosen.encr_name()}{'-' + chosen.integ_name() if chosen.integ else ''}-"
            f"{chosen.prf_name()}-{chosen.ke_name()})", ike)
    return acts + ike_intermediate.queue_next(ctx, ike, now)  # IKE_INTERMEDIATE, IKE_AUTH


# ---------------------------------------------------------------- responder
def find_connections(ctx: IKEContext, local: Endpoint, remote: Endpoint) -> list[Connection]:
    """Candidate connections for a new IKE SA, exact remote address first: the oriented
    IKEv2 conns that negotiate, local address ``local`` or unset, remote address
    ``remote`` (exact) or unset with a %any remote (wild), each group in load order.
    Indexed by remote address (``ike/conn_index.py``), not a scan of every conn."""
    return ctx.candidate_connections(local.addr, remote.addr)


def _stateless(ctx: IKEContext, hdr: IKEHeader, local: Endpoint, remote: Endpoint,
               payloads: list[Payload]) -> list[Action]:
    ctx.stats.sent(payloads)
    data = codec.encode(hdr.spi_i, bytes(8), EXCH_INIT, False, True, 0, payloads)[0]
    return [SendPacket(data, local, remote)]


def _dos_gate(ctx: IKEContext, data: bytes, hdr: IKEHeader, local: Endpoint,
              remote: Endpoint, now: float, remote_packed: bytes
              ) -> tuple[list[Action], bool]:
    """Cookies and half-open limits before any parsing (RFC 7296 §2.6, RFC 8019 §4).

    Looks at the IKE header and the first payload only; when a COOKIE is needed
    and missing, the answer is built without parsing and nothing is kept.
    Returns the actions so far and whether to go on with the request.
    """
    acts: list[Action] = []
    dos = ctx.dos
    if dos.busy_now():  # counted here: none of them gets as far as a key exchange
        dos.note_request(now)
    change = dos.update(ctx.n_halfopen, now)
    if change is not None:
        acts.append(Log(change, level="warning"))
    per = ctx.settings.halfopen_per_addr
    n_src = dos.addr_count(remote_packed) if per > 0 else 0
    if per > 0 and n_src >= 2 * per:
        dos.counters.dropped_per_addr += 1
        return acts, False
    if dos.busy_now() or (per > 0 and n_src >= per):
        got = cookie_in(data)
        if got is None or not dos.check(got, hdr.spi_i, remote.addr, remote.port):
            if got is not None:
                dos.counters.cookies_rejected += 1
            dos.counters.cookies_sent += 1
            cookie = dos.make(hdr.spi_i, remote.addr, remote.port, now)
            return acts + [SendPacket(cookie_reply(hdr.spi_i, cookie), local, remote)], False
        dos.counters.cookies_accepted += 1
    if ctx.halfopen_full():
        dos.counters.dropped_halfopen_full += 1
        if dos.counters.dropped_halfopen_full == 1:
            acts.append(Log(f"max-halfopen-ike ({ctx.settings.max_halfopen_ike}) reached; "
                            "dropping new IKE_SA_INIT requests", level="warning"))
        return acts, False
    return acts, True


_ALG_NAMES: dict[tuple[int, int | None, int, int, int, tuple[int, ...]], str] = {}


def _alg_names(chosen: Chosen) -> str:
    """``ENCR[-INTEG]-PRF-KE`` of the IKE SA's log line, e.g.
    ``AES_GCM_16_256-PRF_HMAC_SHA2_256-CURVE25519``: built once per transform set (the
    registry's names do not change), not per IKE SA (issue 18)."""
    key = (chosen.encr, chosen.encr_bits, chosen.integ, chosen.prf, chosen.ke,
           tuple(chosen.addke))
    text = _ALG_NAMES.get(key)
    if text is None:
        text = (f"{chosen.encr_name()}{'-' + chosen.integ_name() if chosen.integ else ''}-"
                f"{chosen.prf_name()}-{chosen.ke_name()}")
        if len(_ALG_NAMES) < _TEMPLATE_CAP:
            _ALG_NAMES[key] = text
    return text


def respond_new(ctx: IKEContext, data: bytes, hdr: IKEHeader, local: Endpoint,
                remote: Endpoint, now: float) -> list[Action]:
    """An IKE_SA_INIT request: no state until it is acceptable (§2.6 cookies)."""
    acts: list[Action] = []
    key: HalfOpenKey = (hdr.spi_i, remote.addr.packed, remote.port)
    old = ctx.find_halfopen(key)
    if old is not None:
        if old.init_request == data and old.last_response is not None \
                and old.last_response[0] == 0:
            return [SendPacket(p, local, remote) for p in old.last_response[1]]
        if old.init_request == data and ctx.is_computing(old):
            return [Log(f"ignoring retransmitted IKE_SA_INIT from {remote} (its key exchange "
                        "is being computed)", level="debug", conn=old.conn.name,
                        serial=old.serial)]
        return [Log(f"dropping IKE_SA_INIT for an IKE SA that exists (from {remote})",
                    level="debug")]
    if hdr.message_id != 0:
        return [Log("dropping IKE_SA_INIT request with message ID != 0", level="debug")]
    acts, go_on = _dos_gate(ctx, data, hdr, local, remote, now, key[1])
    if not go_on:
        return acts
    try:
        msg = codec.parse(data, hdr)
    except WireError as e:
        acts.append(Log(f"malformed IKE_SA_INIT from {remote}: {e}", level="warning"))
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(e.notify)])
    pl = msg.payloads
    ctx.stats.received(pl)
    ns = _notifies(pl)
    conns = find_connections(ctx, local, remote)
    if not conns:
        return [Log(f"no connection found for IKE_SA_INIT from {remote} to {local}; "
                    "dropping", level="warning")]
    sa_p: list[wp.SAPayload] = []
    ke_p: list[wp.KEPayload] = []
    ni_p: list[wp.NoncePayload] = []
    for p in pl:  # one pass over the payloads (issue 18)
        if isinstance(p, wp.SAPayload):
            sa_p.append(p)
        elif isinstance(p, wp.KEPayload):
            ke_p.append(p)
        elif isinstance(p, wp.NoncePayload):
            ni_p.append(p)
    if len(sa_p) != 1 or len(ke_p) != 1 or len(ni_p) != 1:
        acts.append(Log(f"IKE_SA_INIT from {remote} lacks SA, KE or Ni (or repeats one); "
                        "answering INVALID_SYNTAX", level="warning"))
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(N.INVALID_SYNTAX)])
    ni = bytes(ni_p[0].data)
    busy = ctx.dos.busy_now()  # nothing below changes it before note_request
    to = redirect.init_target(ctx, pl, busy)  # RFC 5685 §4
    if to is not None:
        acts.append(Log(f"redirecting IKE_SA_INIT from {remote} to {to} (global-redirect)",
                        level="info"))
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(
            N.REDIRECT, redirect.encode_gw(to, ni))])
    peer_props = codec.sa_tuples(sa_p[0])
    chosen = None
    conn = conns[0]
    for c in conns:
        chosen = proposals.choose(peer_props, proposals.ike_specs(c.ike), ProtocolID.IKE,
                                  ike=True, prefer_ke=ke_p[0].group)
        chosen = ike_intermediate.acceptable(chosen, ns)  # RFC 9370 needs IKE_INT_SUP
        if chosen is not None:
            conn = c
            break
    if chosen is None:
        acts.append(Log(f"no proposal acceptable for IKE_SA_INIT from {remote}; answering "
                        "NO_PROPOSAL_CHOSEN", level="warning", conn=conn.name))
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(N.NO_PROPOSAL_CHOSEN)])
    ke = ke_p[0]
    if ke.group != chosen.ke:
        acts.append(Log(f"KE payload group {ke.group} but {chosen.ke_name()} chosen; answering "
                        "INVALID_KE_PAYLOAD", level="info", conn=conn.name))
        ctx.stats.invalid_ke_payload("sent", ke.group, chosen.ke)
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(
            N.INVALID_KE_PAYLOAD, chosen.ke.to_bytes(2, "big"))])
    alg = reg.get(reg.TransformType.KE, chosen.ke)
    if alg is not None and alg.ke_size and len(ke.data) != alg.ke_size:
        acts.append(Log(f"KE payload of {len(ke.data)} bytes for {chosen.ke_name()}; answering "
                        "INVALID_SYNTAX", level="warning", conn=conn.name))
        return acts + _stateless(ctx, hdr, local, remote, [codec.notify(N.INVALID_SYNTAX)])
    if not busy:  # the rate that matters: requests that cost a key exchange
        ctx.dos.note_request(now)
    return acts + _respond_computing(ctx, data, hdr, local, remote, now, conn, conns, chosen,
                                     ni, ns, pl, key, bytes(ke.data))


def _respond_computing(ctx: IKEContext, data: bytes, hdr: IKEHeader, local: Endpoint,
                       remote: Endpoint, now: float, conn: Connection, conns: list[Connection],
                       chosen: Chosen, ni: bytes, ns: Notifies, pl: list[Payload],
                       key: HalfOpenKey, peer_ke: bytes) -> list[Action]:
    """The responder's KE computation (``IKEContext.compute``); the half-open SA waits.

    The SA is registered at once so that a retransmitted request is recognised
    (and ignored) while the job runs, and counts as half-open (RFC 7296 §2.6).
    """
    ike = IKESA(serial=ctx.new_serial(), conn=conn, initiator=False, spi_i=hdr.spi_i,
                spi_r=ctx.alloc_ike_spi(), local=local, remote=remote, state=IKEState.INIT_R)
    ike.chosen = chosen
    ike.ke_group = chosen.ke
    ike.ni = ni
    ike.nr = ctx.rng(NONCE_SIZE)
    ike.init_request = data
    ctx.register(ike)
    ctx.add_halfopen(ike, key, now)
    ctx.schedule(ike)  # the half-open timeout runs while the job does
    group = chosen.ke

    def job() -> tuple[bytes, bytes]:
        return dh.responder_ke(group, peer_ke)

    def then(result: object, t: float) -> list[Action]:
        if isinstance(result, BaseException):
            what = "bad KE value" if isinstance(result, CryptoError) else \
                f"key exchange failed ({type(result).__name__})"
            # draft-ietf-ipsecme-ikev2-mlkem §2.2: an ML-KEM encapsulation key failing the
            # FIPS 203 §7.2 check gets INVALID_SYNTAX (INVALID_KE_PAYLOAD would name the
            # very group the peer used)
            alg = reg.get(reg.TransformType.KE, group)
            kem = isinstance(result, CryptoError) and alg is not None and alg.ke_kind == "kem"
            acts: list[Action] = [Log(f"{what} from {remote}: {result}; answering "
                                      f"{'INVALID_SYNTAX' if kem else 'INVALID_KE_PAYLOAD'}",
                                      level="warning", conn=conn.name, serial=ike.serial)]
            acts += ctx.drop_ike(ike, t, "", None)
            if kem:
                return acts + _stateless(ctx, hdr, local, remote,
                                         [codec.notify(N.INVALID_SYNTAX)])
            ctx.stats.invalid_ke_payload("sent", group, group)
            return acts + _stateless(ctx, hdr, local, remote, [codec.notify(
                N.INVALID_KE_PAYLOAD, group.to_bytes(2, "big"))])
        ke_data, shared = cast(tuple[bytes, bytes], result)
        return _respond_keyed(ctx, ike, data, local, remote, t, conns, ns, pl, ke_data, shared)

    return ctx.compute(ike, job, then, now)


_NATD_TYPES = (int(N.NAT_DETECTION_SOURCE_IP), int(N.NAT_DETECTION_DESTINATION_IP))
_NATD_LEN = 28  # generic header, Notify header, SHA-1 (§2.23, §3.10)


def _init_answer(sa_head: bytes, group: int, ke_data: bytes, nonce: bytes,
                 natd: tuple[bytes, bytes] | None, caps: wp.SerializedRun | None
                 ) -> wp.SerializedRun:
    """Our IKE_SA_INIT answer without CERTREQ, IKE_INT_SUP or USE_PPK as one run: the
    bytes of [SA, KE, Nr, N(NAT_DETECTION_SOURCE_IP), N(NAT_DETECTION_DESTINATION_IP),
    capability notifies] (the NAT-D pair only when ``natd``), RFC 7296 §1.2."""
    if natd is None:
        if caps is None:
            return codec.init_answer(sa_head, group, ke_data, nonce, b"", 0, 0, ())
        return codec.init_answer(sa_head, group, ke_data, nonce, caps.chain,
                                 caps.payload_type, caps.last, caps.notifies)
    src, dst = natd
    s_type, d_type = _NATD_TYPES
    if caps is None:
        tail = codec.notify_bytes(codec.PT.NOTIFY, s_type, src) + codec.notify_bytes(0, d_type, dst)
        return codec.init_answer(sa_head, group, ke_data, nonce, tail, codec.PT.NOTIFY, _NATD_LEN,
                                 _NATD_TYPES)
    tail = b"".join((codec.notify_bytes(codec.PT.NOTIFY, s_type, src),
                     codec.notify_bytes(caps.payload_type, d_type, dst), caps.chain))
    return codec.init_answer(sa_head, group, ke_data, nonce, tail, codec.PT.NOTIFY,
                             2 * _NATD_LEN + caps.last, _NATD_TYPES + caps.notifies)


def _respond_keyed(ctx: IKEContext, ike: IKESA, data: bytes, local: Endpoint, remote: Endpoint,
                   now: float, conns: list[Connection], ns: Notifies, pl: list[Payload],
                   ke_data: bytes, shared: bytes) -> list[Action]:
    """Derive the keys (§2.14) and answer IKE_SA_INIT (the response is cached, §2.1)."""
    acts: list[Action] = []
    conn = ike.conn
    chosen = ike.chosen
    assert chosen is not None
    try:
        seed = keys.skeyseed(chosen.prf, ike.ni, ike.nr, shared)
        k = keys.derive_ike_keys(chosen.prf, chosen.encr, chosen.encr_bits, chosen.integ or None,
                                 seed, ike.ni, ike.nr, ike.spi_i, ike.spi_r)
        install_keys(ctx, ike, k)
    except CryptoError as e:
        return [Log(f"key derivation failed: {e}", level="error", conn=conn.name)] + \
            ctx.drop_ike(ike, now, "", None)
    local_b = codec.endpoint_bytes(local.addr, local.port)
    remote_b = codec.endpoint_bytes(remote.addr, remote.port)
    seen, nat_l, nat_r = _natd_check(pl, ike.spi_i, _NO_SPI, local, remote, local_b, remote_b)
    ike.nat_local, ike.nat_remote = nat_l, nat_r
    ike.frag_ok = N.IKEV2_FRAGMENTATION_SUPPORTED in ns and conn.fragmentation != "no"
    ike.init_request = data
    ike.cands = conns
    ike.redirect_ok = redirect.supports(pl)  # RFC 5685 §6 (REDIRECTED_FROM too)
    natd = _natd_hashes(ike, ike.spi_r, conn.encapsulation == "yes",
                        local_b if ike.local is local or ike.local == local else None,
                        remote_b if ike.remote is remote or ike.remote == remote else None
                        ) if seen else None
    caps = _capability_run(ctx, conn, ns)
    extra = list(auth_sig.certreq(ctx, conn))  # RFC 7296 §3.7: the CAs we trust
    extra += ike_intermediate.answer_notify(ike, ns)  # RFC 9242 IKE_INT_SUP
    extra += ppk.init_response(ike, conns, pl)  # RFC 8784 USE_PPK
    sa_head = _sa_template(chosen)[1]
    payloads: list[Payload]
    if not extra:
        # the usual answer (issue 18): SA (the template), KE, Nr, the NAT-D notifies
        # and the capability notifies (a template) written as one run of bytes
        payloads = [_init_answer(sa_head, chosen.ke, ke_data, ike.nr, natd, caps)]
    else:
        payloads = [codec.init_answer_head(sa_head, chosen.ke, ke_data, ike.nr)]
        if natd is not None:
            payloads += [codec.notify(N.NAT_DETECTION_SOURCE_IP, natd[0]),
                         codec.notify(N.NAT_DETECTION_DESTINATION_IP, natd[1])]
        if caps is not None:
            payloads.append(caps)
        payloads += extra
    acts_send = ctx.send_response(ike, EXCH_INIT, 0, payloads, local, remote)
    ike.init_response = ike.last_response[1][0] if ike.last_response else b""
    ike.last_recv = now
    ctx.schedule(ike)
    nat = ""
    if nat_l or nat_r:
        nat = "; NAT detected (" + ("local" if nat_l else "remote") + ")"
    ctx.log(acts, lambda: f"responding to IKE_SA_INIT from {remote} with "
            f"{_alg_names(chosen)}{nat}", ike)  # formatted when read (issue 18)
    return acts + acts_send
