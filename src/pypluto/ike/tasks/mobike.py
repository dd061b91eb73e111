"""MOBIKE (RFC 4555): a road warrior moves and its SAs follow, without a new Child SA.

- IKE_AUTH: both ends send MOBIKE_SUPPORTED (§3.1) when ``mobike=yes``; ``ike.mobike``
  is set when both did.  With MOBIKE the §2.23 "answer where the request came
  from" rule of RFC 7296 no longer moves the IKE SA (§3.8): only
  UPDATE_SA_ADDRESSES does.
- Responder (``MobikeUpdate.respond``): an INFORMATIONAL with UPDATE_SA_ADDRESSES
  is answered with fresh NAT_DETECTION_*_IP notifies (§3.5) from and to the
  addresses it came from.  If they differ from the IKE SA's, a return
  routability check (§3.5, §5.2.1) goes to the new address first: an
  INFORMATIONAL with COOKIE2 (``ReturnRoutability``).  Only when the peer echoes
  the COOKIE2 from there do the IKE SA and its Child SAs move (``MoveSA`` actions:
  the data plane keeps keys, sequence numbers and replay windows).  A check that
  fails (no answer) leaves everything on the old addresses; a wrong or missing COOKIE2
  in the answer closes the IKE SA (§3.7).
- ``Cookie2Echo.respond``: the peer's own check of us: the COOKIE2 comes back (§3.6).
- Initiator (the moving client): ``start_update`` after our address changed
  (``Engine.local_address_changed``) sends UPDATE_SA_ADDRESSES from the new
  address and moves the SAs when the answer arrives (§3.5).  The roles are the
  client's and the gateway's (``first_initiator``), kept over IKE SA rekeys
  whoever made them (the I flag is not: RFC 7296 §2.18).
- A copy of the update just answered, from another (local, remote) pair (someone on
  the path sent it first from an address of its own, or the real one comes late):
  the task manager hands it back here (``replayed``): answered from there and
  checked too, so the address that answers its check wins.  A check that got no
  answer gives its message ID to the next request: the peer never saw it.
- §3.9: NO_NATS_ALLOWED that does not match the IP and UDP headers (or cannot:
  a body of the wrong length) gets UNEXPECTED_NAT_DETECTED and nothing else.  We
  never send NO_NATS_ALLOWED (neither do Libreswan and strongSwan).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.ike import codec
from pypluto.ike.actions import Action, AddPolicy, Endpoint, MoveSA
from pypluto.ike.child import encap_for
from pypluto.ike.context import IKEContext
from pypluto.ike.sa import IKESA, ChildState
from pypluto.ike.tasks.base import Inbound, Request, Task
from pypluto.wire import payloads as wp
from pypluto.wire.payloads import Payload

INFO = ExchangeType.INFORMATIONAL


def supported_notify(conn_mobike: bool) -> list[Payload]:
    """MOBIKE_SUPPORTED for IKE_AUTH (§3.1), when ``mobike=yes``."""
    return [codec.notify(N.MOBIKE_SUPPORTED)] if conn_mobike else []


def negotiated(ike: IKESA, payloads: Sequence[Payload]) -> None:
    """Both ends said MOBIKE_SUPPORTED: the IKE SA uses MOBIKE.  As responder only on a
    conn whose peer is ``%any`` (Libreswan 5.2 enables it "only ... [for a] %any
    connection"; ipsec.conf(5): only a server lets its clients migrate): a conn that
    names its peer's address does not let the peer move elsewhere."""
    ike.mobike = ike.conn.mobike and codec.has_notify(payloads, N.MOBIKE_SUPPORTED) and \
        (ike.initiator or ike.conn.remote.host_addr is None)


def _natd(ike: IKESA, local: Endpoint, remote: Endpoint) -> list[Payload]:
    """NAT_DETECTION_*_IP for the addresses in use now (§3.5).  With
    ``encapsulation=yes`` the source hash is made not to match, as in IKE_SA_INIT, so
    that the peer keeps ESP in UDP after the move (it would drop it on seeing no NAT)."""
    port = 0 if ike.conn.encapsulation == "yes" else local.port
    return [codec.notify(N.NAT_DETECTION_SOURCE_IP,
                         codec.natd_hash(ike.spi_i, ike.spi_r, local.addr, port)),
            codec.notify(N.NAT_DETECTION_DESTINATION_IP,
                         codec.natd_hash(ike.spi_i, ike.spi_r, remote.addr, remote.port))]


def _nat_flags(ike: IKESA, payloads: Sequence[Payload], local: Endpoint, remote: Endpoint
               ) -> tuple[bool, bool] | None:
    """(we are behind a NAT, the peer is) from the peer's NAT_DETECTION notifies."""
    ns = codec.notifies(payloads)
    srcs = [bytes(p.data) for p in ns if p.notify_type == N.NAT_DETECTION_SOURCE_IP]
    dsts = [bytes(p.data) for p in ns if p.notify_type == N.NAT_DETECTION_DESTINATION_IP]
    if not srcs or not dsts:
        return None
    peer = codec.natd_hash(ike.spi_i, ike.spi_r, remote.addr, remote.port)
    me = codec.natd_hash(ike.spi_i, ike.spi_r, local.addr, local.port)
    return me not in dsts, peer not in srcs


def _cookie2_echo(payloads: Sequence[Payload]) -> list[Payload]:
    """A request's COOKIE2 goes back unchanged in the response (§3.6); one that is
    not 8 to 64 octets long, as §3.6 requires, is ignored (not echoed)."""
    for p in codec.notifies(payloads):
        if p.notify_type == N.COOKIE2 and 8 <= len(p.data) <= 64:
            return [codec.notify(N.COOKIE2, bytes(p.data))]
    return []


def _nats_match(data: bytes, local: Endpoint, remote: Endpoint) -> bool:
    """Whether a NO_NATS_ALLOWED body names the addresses and ports the request really
    came with (§3.9, §4.2.6): the sender's address, ours, the sender's port, ours
    (12 octets for IPv4, 36 for IPv6).  A body of another length names nothing, and
    so matches nothing."""
    n = len(remote.addr.packed)
    if len(data) != 2 * n + 4 or local.addr.version != remote.addr.version:
        return False
    return data == remote.addr.packed + local.addr.packed + \
        remote.port.to_bytes(2, "big") + local.port.to_bytes(2, "big")


def unexpected_nat(payloads: Sequence[Payload], local: Endpoint, remote: Endpoint) -> bool:
    """§3.9: the request carries NO_NATS_ALLOWED and (one of) its contents do not match
    the addresses in the IP header: it gets UNEXPECTED_NAT_DETECTED, and nothing in it
    is acted on (the notify's contents are only logged, never used)."""
    for p in codec.notifies(payloads):
        if p.notify_type == N.NO_NATS_ALLOWED and not _nats_match(bytes(p.data), local,
                                                                  remote):
            return True
    return False


# a replayed UPDATE_SA_ADDRESSES (``TaskManager``: a copy of the one just answered,
# from another address) queues a return routability check of its source only while
# fewer than this many are waiting: someone with one captured update and many source
# addresses cannot grow the queue without bound
MAX_QUEUED_CHECKS = 4


def _checks(ike: IKESA) -> list[ReturnRoutability]:
    """``ike``'s return routability checks, the one in flight first, then those queued."""
    o = ike.outstanding
    checks = [o.task] if o is not None and isinstance(o.task, ReturnRoutability) else []
    return checks + [t for t in ike.tasks if isinstance(t, ReturnRoutability)]


def _checking(ike: IKESA, local: Endpoint, remote: Endpoint) -> bool:
    """A return routability check of (local, remote) is in flight or queued."""
    return any((t.local, t.remote) == (local, remote) for t in _checks(ike))


def follow(ctx: IKEContext, ike: IKESA, acts: list[Action]) -> int:
    """Bring every installed Child SA of ``ike`` to the IKE SA's current endpoints.

    RFC 4555 §3.5: the Child SAs move with the IKE SA, keeping keys, sequence
    numbers and replay windows.  Each SA is named by the addresses it is installed
    under *now* (``c.local_addr`` / ``c.remote_addr``, kept in step with every move),
    which may already be the new ones: a Child SA created (e.g. the peer's rekey)
    while the return routability check was in flight was installed on the
    addresses being checked.  An outbound SA still held back (``pending_out``: the
    responder of a Child SA rekey waits for the old SA's Delete, RFC 7296 §2.8) is
    not in the data plane yet; its parameters are rewritten, so that it is
    installed on the new addresses instead of being moved.  The policies of the
    Child SAs that own them are installed again with the new template addresses.
    Returns how many Child SAs changed.
    """
    local, remote = ike.local, ike.remote
    encap = encap_for(ike)
    lp, rp = encap if encap is not None else (None, None)
    moved = 0
    for c in ike.children:
        if c.state is not ChildState.ESTABLISHED:
            continue
        if (c.local_addr, c.remote_addr, c.encap) == (local.addr, remote.addr, encap):
            continue
        moved += 1
        was_l, was_r = c.local_addr, c.remote_addr
        c.local_addr, c.remote_addr, c.encap = local.addr, remote.addr, encap
        acts.append(MoveSA(dst=was_l, spi=c.spi_in, new_src=remote.addr, new_dst=local.addr,
                           encap_sport=rp, encap_dport=lp, serial=c.serial,
                           conn_name=c.conn.name, protocol=c.protocol))
        if c.pending_out is not None:
            c.pending_out = dataclasses.replace(c.pending_out, src=local.addr, dst=remote.addr,
                                                encap_sport=lp, encap_dport=rp)
        else:
            acts.append(MoveSA(dst=was_r, spi=c.spi_out, new_src=local.addr,
                               new_dst=remote.addr, encap_sport=lp, encap_dport=rp,
                               serial=c.serial, conn_name=c.conn.name, protocol=c.protocol))
        if c.owns_policy and (was_l, was_r) != (local.addr, remote.addr):
            acts += [AddPolicy(p) for p in ctx.policies(c)]  # new template addresses
    return moved


def move_sas(ctx: IKEContext, ike: IKESA, local: Endpoint, remote: Endpoint,
             nat: tuple[bool, bool] | None, acts: list[Action]) -> None:
    """The IKE SA and every Child SA go to the new addresses (no new Child SA, §3.5)."""
    old_l, old_r = ike.local, ike.remote
    ike.local, ike.remote = local, remote
    if nat is not None:
        ike.nat_local, ike.nat_remote = nat
    moved = follow(ctx, ike, acts)
    n = sum(1 for c in ike.children if c.state is ChildState.ESTABLISHED)
    # a Child SA the peer created while the update (or the check) was in flight was
    # installed on the new addresses already: it is counted apart, not as moved
    there = f" ({n - moved} already on the new addresses)" if n > moved else ""
    ctx.log(acts, f"MOBIKE: IKE SA and {moved} Child SA(s) moved from "
            f"{old_l}<=>{old_r} to {local}<=>{remote}{there}", ike)
    ctx.schedule(ike)


class ReturnRoutability(Task):
    """INFORMATIONAL with COOKIE2 to the peer's new address (RFC 4555 §3.5, §3.6)."""

    exchange = INFO

    def __init__(self, local: Endpoint, remote: Endpoint, nat: tuple[bool, bool] | None
                 ) -> None:
        self.local, self.remote, self.nat = local, remote, nat
        self.cookie = b""
        self.old: tuple[Endpoint, Endpoint] | None = None
        self.msgid = -1

    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        self.cookie = ctx.rng(16)
        self.msgid = ike.next_out  # the message ID the task manager gives this request
        self.old = (ike.local, ike.remote)
        ike.local, ike.remote = self.local, self.remote  # the request goes there
        ctx.log(acts, f"MOBIKE: checking return routability of {self.remote}", ike)
        return [codec.notify(N.COOKIE2, self.cookie)]

    def _revert(self, ctx: IKEContext, ike: IKESA, acts: list[Action]) -> None:
        """Back to the addresses in use before the check.  A Child SA created while the
        check was in flight (a rekey by the peer) was installed on the addresses being
        checked: it follows the IKE SA back."""
        if self.old is not None:
            ike.local, ike.remote = self.old
            self.old = None
            follow(ctx, ike, acts)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        echo = next((bytes(p.data) for p in codec.notifies(msg.payloads)
                     if p.notify_type == N.COOKIE2), None)
        if echo != self.cookie:
            # §3.7: "If the values do not match, the IKE_SA MUST be closed" (an
            # authenticated answer: only the peer can have sent it; strongSwan closes too)
            from pypluto.ike.tasks.ike_delete import delete_ike
            self._revert(ctx, ike, acts)
            ctx.log(acts, f"MOBIKE: {self.remote} failed the return routability check "
                    "(COOKIE2 not echoed); closing the IKE SA (RFC 4555 §3.7)", ike,
                    level="warning")
            return acts + delete_ike(ctx, ike, now)
        if self.old is not None:
            ike.local, ike.remote = self.old
            self.old = None
        move_sas(ctx, ike, self.local, self.remote, self.nat, acts)
        return acts

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        acts: list[Action] = []
        self._revert(ctx, ike, acts)
        if ike.next_out == self.msgid + 1:
            # the peer never saw this request (it was not where the check went: the
            # update came from someone else): it still expects this message ID
            # (RFC 7296 §2.3), and would drop every later request of ours, so the next
            # one takes it (had the peer seen it after all, it answers the next one
            # with its cached answer to this check, and both ends are in step again)
            ike.next_out = self.msgid
        ctx.log(acts, f"MOBIKE: {self.remote} failed the return routability check (no "
                "answer); staying on the old addresses", ike, level="warning")
        return acts

    def abandon(self, ctx: IKEContext, ike: IKESA) -> None:
        if self.old is not None:  # the IKE SA is going away: its Child SAs with it
            ike.local, ike.remote = self.old
            self.old = None

    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        return codec.has_notify(payloads, N.COOKIE2) and not codec.has_notify(
            payloads, N.UPDATE_SA_ADDRESSES)

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float) -> list[Action]:
        """The peer checks us: echo its COOKIE2 (§3.6)."""
        return ctx.send_response(ike, INFO, req.msgid, _cookie2_echo(req.payloads),
                                 req.local, req.remote)


class MobikeUpdate(Task):
    """UPDATE_SA_ADDRESSES (§3.5): the initiator says where it is now; we answer NAT-D."""

    exchange = INFO

    def __init__(self, local: Endpoint | None = None) -> None:
        self.local = local  # our new address (initiator)
        self.old: tuple[Endpoint, Endpoint] | None = None

    # ------------------------------------------------------------ initiator
    def build(self, ctx: IKEContext, ike: IKESA, now: float, acts: list[Action]
              ) -> list[Payload] | None:
        if self.local is None or not ike.mobike:
            return None
        self.old = (ike.local, ike.remote)
        remote = Endpoint(ike.remote.addr, ike.remote.port)
        ike.local = Endpoint(self.local.addr, self.local.port)
        ctx.log(acts, f"MOBIKE: our address is now {ike.local.addr}; sending "
                "UPDATE_SA_ADDRESSES", ike)
        return [codec.notify(N.UPDATE_SA_ADDRESSES)] + _natd(ike, ike.local, remote)

    def on_response(self, ctx: IKEContext, ike: IKESA, msg: Inbound, now: float
                    ) -> list[Action]:
        acts: list[Action] = []
        local, remote = ike.local, ike.remote
        if self.old is not None:
            ike.local, ike.remote = self.old
        errs = codec.errors(msg.payloads)
        if errs:
            ctx.log(acts, f"MOBIKE: the peer refused the update ({errs[0].notify_type})",
                    ike, level="warning")
            follow(ctx, ike, acts)  # a Child SA made meanwhile goes back with the IKE SA
            return acts + ctx.mobike_moved(ike)  # the updown's route, up (Libreswan 5.2)
        move_sas(ctx, ike, local, remote, _nat_flags(ike, msg.payloads, local, remote), acts)
        return acts + ctx.mobike_moved(ike)

    def on_timeout(self, ctx: IKEContext, ike: IKESA, now: float) -> list[Action]:
        from pypluto.ike.tasks.liveness import peer_dead
        if self.old is not None:
            ike.local, ike.remote = self.old
        return peer_dead(ctx, ike, now, "no answer to UPDATE_SA_ADDRESSES")

    # ------------------------------------------------------------ responder
    @classmethod
    def matches(cls, payloads: Sequence[Payload]) -> bool:
        # also an INFORMATIONAL of MOBIKE notifies only, with NAT_DETECTION (§3.8: a
        # MOBIKE client's DPD, strongSwan's, to see its NAT mapping change) or with
        # NO_NATS_ALLOWED (§3.9: one that lists addresses)
        if codec.has_notify(payloads, N.UPDATE_SA_ADDRESSES):
            return True
        if not payloads:  # (a plain DPD)
            return False
        asks = False
        for p in payloads:
            if not isinstance(p, wp.NotifyPayload) or p.notify_type not in _MOBIKE_INFO:
                return False
            asks = asks or p.notify_type in _ASKS
        return asks

    @classmethod
    def respond(cls, ctx: IKEContext, ike: IKESA, req: Request, now: float,
                replayed: bool = False) -> list[Action]:
        """``replayed``: a copy of the update just answered, from another (local,
        remote) pair (``TaskManager``); it is answered and checked as an update from
        there, within ``MAX_QUEUED_CHECKS``."""
        acts: list[Action] = []
        if unexpected_nat(req.payloads, req.local, req.remote):
            ctx.log(acts, f"MOBIKE: NO_NATS_ALLOWED does not match {req.remote}=>"
                    f"{req.local}; answering UNEXPECTED_NAT_DETECTED", ike, level="warning")
            return acts + ctx.send_response(ike, INFO, req.msgid,
                                            [codec.notify(N.UNEXPECTED_NAT_DETECTED)],
                                            req.local, req.remote)
        if not codec.has_notify(req.payloads, N.UPDATE_SA_ADDRESSES):
            # §3.8: NAT_DETECTION in any INFORMATIONAL request is answered with ours
            # for the addresses it came with; nothing else is done
            natd = ike.mobike and codec.has_notify(req.payloads, N.NAT_DETECTION_SOURCE_IP)
            out = _natd(ike, req.local, req.remote) if natd else []
            return acts + ctx.send_response(ike, INFO, req.msgid,
                                            out + _cookie2_echo(req.payloads), req.local,
                                            req.remote)
        if not ike.mobike:
            ctx.log(acts, "ignoring UPDATE_SA_ADDRESSES: MOBIKE was not negotiated", ike,
                    level="warning")
            return acts + ctx.send_response(ike, INFO, req.msgid, [], req.local, req.remote)
        if ike.first_initiator:
            # §3.5: only the initiator of the IKE SA moves it: the client, which sent
            # the first IKE_SA_INIT, whichever end rekeyed the IKE SA since (the I flag
            # goes to the rekeyer, RFC 7296 §2.18); the gateway answers
            ctx.log(acts, "ignoring UPDATE_SA_ADDRESSES from the original responder", ike,
                    level="warning")
            return acts + ctx.send_response(ike, INFO, req.msgid, [], req.local, req.remote)
        nat = _nat_flags(ike, req.payloads, req.local, req.remote)
        out = _natd(ike, req.local, req.remote) + _cookie2_echo(req.payloads)  # §3.5, §3.6
        acts += ctx.send_response(ike, INFO, req.msgid, out, req.local, req.remote)
        if _checking(ike, req.local, req.remote):  # (the IKE SA points there meanwhile)
            ctx.log(acts, f"MOBIKE: UPDATE_SA_ADDRESSES from {req.remote} again; its "
                    "return routability check is under way", ike)
            return acts
        if (req.local, req.remote) == (ike.local, ike.remote):
            if nat is not None:
                ike.nat_local, ike.nat_remote = nat
            ctx.log(acts, "MOBIKE: UPDATE_SA_ADDRESSES from the current address", ike)
            return acts
        if req.local.port == 500 != ike.local.port:
            # RFC 4555 §3.3 / RFC 7296 §2.23: once on port 4500, all IKE and ESP of the
            # SA stay there; one sent to our port 500 was redirected on the path (ESP
            # in UDP on port 500 does not exist): answered, nothing checked or moved
            ctx.log(acts, f"MOBIKE: not moving to our port 500 (the IKE SA uses "
                    f"{ike.local.port}); UPDATE_SA_ADDRESSES from {req.remote} ignored", ike,
                    level="warning")
            return acts
        if replayed and sum(isinstance(t, ReturnRoutability) for t in ike.tasks) >= \
                MAX_QUEUED_CHECKS:
            ctx.log(acts, f"MOBIKE: not checking {req.remote} too: {MAX_QUEUED_CHECKS} "
                    "return routability checks are waiting", ike, level="warning")
            return acts
        ctx.log(acts, f"MOBIKE: peer moved from {ike.remote} to {req.remote}", ike)
        acts += ctx.queue(ike, ReturnRoutability(req.local, req.remote, nat), now, front=True)
        return acts


# the notifies of an INFORMATIONAL that MobikeUpdate answers without UPDATE_SA_ADDRESSES
# (any other payload or notify, and it is not ours), and those that make it ours
_MOBIKE_INFO = frozenset((N.NAT_DETECTION_SOURCE_IP, N.NAT_DETECTION_DESTINATION_IP,
                          N.COOKIE2, N.NO_NATS_ALLOWED, N.ADDITIONAL_IP4_ADDRESS,
                          N.ADDITIONAL_IP6_ADDRESS, N.NO_ADDITIONAL_ADDRESSES))
_ASKS = frozenset((N.NAT_DETECTION_SOURCE_IP, N.NO_NATS_ALLOWED))


def settled(ike: IKESA) -> tuple[Endpoint, Endpoint]:
    """``ike``'s (local, remote), not the addresses a return routability check in flight
    is trying (``ReturnRoutability.build`` points the IKE SA there until it is done):
    what an IKE SA rekeyed meanwhile must take (a check to an address some on-path
    attacker replayed an update from is not a move)."""
    o = ike.outstanding
    if o is not None and isinstance(o.task, ReturnRoutability) and o.task.old is not None:
        return o.task.old
    return ike.local, ike.remote


def carry_check(old: IKESA, new: IKESA) -> None:
    """``old`` is rekeyed (into ``new``, on ``settled`` addresses) while a return
    routability check is in flight or queued: the check is made on ``new``, which
    moves (with the Child SAs it inherits) only if the peer answers it from there."""
    new.tasks[:0] = [ReturnRoutability(t.local, t.remote, t.nat) for t in _checks(old)]


def start_update(ctx: IKEContext, ike: IKESA, local: Endpoint, now: float) -> list[Action]:
    """Our address changed: tell the peer (§3.5), if MOBIKE was negotiated."""
    if not ike.mobike or not ike.established:
        return []
    return ctx.queue(ike, MobikeUpdate(local), now, front=True)
