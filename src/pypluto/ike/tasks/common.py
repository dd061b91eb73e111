"""Helpers shared by several tasks: failure of an IKE SA being established, the
``FailReason`` of an error notify, the IKE SA keys and timers (RFC 7296 §2.14, §2.8)."""

from __future__ import annotations

from pypluto.config.model import Connection
from pypluto.crypto.keys import IKEKeys
from pypluto.crypto.sk import SKProtector
from pypluto.iana import NotifyType as N
from pypluto.ike.actions import Action, ConnectionEvent, EventKind, FailReason, Log
from pypluto.ike.context import IKEContext, meant_up
from pypluto.ike.sa import IKESA

NONCE_SIZE = 32
RETRY_DELAY = 10.0  # a refused rekey is tried again after this (§2.25 TEMPORARY_FAILURE)


def nname(t: int) -> str:
    """The name of a notify type, or its number."""
    try:
        return N(t).name
    except ValueError:
        return str(t)


def reason_for_notify(ntype: int) -> FailReason:
    """The ``FailReason`` of an error notify the peer answered with (RFC 7296 §3.10.1)."""
    if ntype == N.AUTHENTICATION_FAILED:
        return FailReason.AUTHENTICATION
    if ntype in (N.NO_PROPOSAL_CHOSEN, N.INVALID_KE_PAYLOAD):
        return FailReason.PROPOSAL
    if ntype == N.TS_UNACCEPTABLE:
        return FailReason.TRAFFIC_SELECTORS
    return FailReason.PEER_NOTIFY


def fail(ctx: IKEContext, ike: IKESA, now: float, why: str, reason: FailReason,
         retry: bool = False) -> list[Action]:
    """The IKE SA could not be established: remove it; retry per keyingtries/auto=start.

    As Libreswan 5.2 (which ignores keyingtries=): only a conn that is meant to be up
    (auto=start|up) tries again; an on-demand conn (auto=route|ondemand) goes back to
    its trap, with its failureshunt= on the packet's flow (ike/traps.py), and the next
    acquire tries again.
    """
    acts: list[Action] = [Log(f"IKE SA establishment failed: {why}", level="warning",
                              conn=ike.conn.name, serial=ike.serial)]
    # the Child SAs of other conns meant to be up that wait for this IKE SA (queued
    # by whack --up or a revival, liveness.peer_dead) wait for the retry in turn
    waiting = waiting_conns(ctx, ike)
    acts += ctx.drop_ike(ike, now, "", None)
    acts.append(ConnectionEvent(EventKind.FAILED, ike.conn.name, ike.serial, why, reason))
    conn = ike.conn
    # (an instance of a template revived towards its last peer is tried once: the
    # registered template itself cannot be initiated; ike_delete's revival)
    if retry and ike.initiator and conn.name in ctx.connections and \
            ctx.connections[conn.name].remote.host_addr is not None and \
            (conn.keyingtries == 0 or ike.tries < conn.keyingtries) and \
            meant_up(ctx, conn):
        acts += ctx.initiate_ike(conn, now, ike.tries + 1)
        new = next((i for i in ctx.ike_of(conn.name) if not i.established), None)
        for w in waiting:
            if new is not None:
                acts += ctx.create_child(new, w, now)
    return acts


def waiting_conns(ctx: IKEContext, ike: IKESA) -> list[Connection]:
    """The other conns meant to be up (registered) whose new Child SA is queued on
    ``ike`` (a ChildCreate: ``conn``, and no ``old``, which a rekey has)."""
    out: list[Connection] = []
    for t in ike.tasks:
        c = getattr(t, "conn", None)
        if isinstance(c, Connection) and getattr(t, "old", 0) is None and \
                c is not ike.conn and ctx.connections.get(c.name) is c and \
                meant_up(ctx, c) and c not in out:
            out.append(c)
    return out


def install_keys(ctx: IKEContext, ike: IKESA, k: IKEKeys) -> None:
    """SK_e/SK_a protectors for both directions, SK_d and SK_p (§2.14)."""
    c = ike.chosen
    assert c is not None
    prot_i = SKProtector(c.encr, c.encr_bits, c.integ or None, k.sk_ei, k.sk_ai, rng=ctx.rng)
    prot_r = SKProtector(c.encr, c.encr_bits, c.integ or None, k.sk_er, k.sk_ar, rng=ctx.rng)
    ike.prot_out, ike.prot_in = (prot_i, prot_r) if ike.initiator else (prot_r, prot_i)
    ike.sk_d, ike.sk_pi, ike.sk_pr = k.sk_d, k.sk_pi, k.sk_pr


def set_ike_timers(ctx: IKEContext, ike: IKESA, now: float) -> None:
    """Expiry, rekey (with fuzz for the initiator, §2.8), liveness and keepalive times."""
    conn = ike.conn
    life = conn.ikelifetime
    ike.expire_at = now + life
    # rekey=no: the IKE SA expires, reauth=yes or not (Libreswan 5.2: "policy doesn't
    # allow re-key"; ipsec.conf(5) rekey=no: pluto requests no renegotiation)
    if conn.rekey:
        margin = conn.rekeymargin
        if ike.initiator:
            margin *= 1 + conn.rekeyfuzz / 100.0 * ctx.fuzz.random()
        else:
            margin /= 2
        ike.rekey_at = now + max(life - margin, life / 2)
    else:
        ike.rekey_at = None
    if conn.dpddelay > 0:
        ike.next_liveness = now + conn.dpddelay
    if ike.nat_local and conn.nat_keepalive and ctx.settings.keep_alive > 0 \
            and ike.next_keepalive is None:
        ike.next_keepalive = now + ctx.settings.keep_alive
    ctx.schedule(ike)
