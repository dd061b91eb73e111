"""IKE SA and Child SA state (RFC 7296 §2.1-2.3, §2.8).

Plain ``__slots__`` dataclasses: one IKE SA costs a few hundred bytes plus its
keys; nothing per SA is cached beyond the last response (§2.1 retransmissions)
and, until IKE_AUTH completes, the IKE_SA_INIT messages that AUTH signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from pypluto.config.model import Connection, Identity
from pypluto.crypto.dh import KeyExchange
from pypluto.crypto.keys import ChildKeys
from pypluto.crypto.sk import SKProtector
from pypluto.ike.actions import Endpoint
from pypluto.ike.addke import IntState, Pending
from pypluto.ike.codec import Proposals
from pypluto.ike.pool import Lease
from pypluto.ike.proposals import Chosen
from pypluto.ike.ts import TS
from pypluto.params import IPAddress, Mode, SAParams


class QueuedTask(Protocol):
    """A task as an IKE SA keeps it (queued or in flight); the interface that the task
    manager drives is ``ike.tasks.base.Task`` (kept apart so that this module does not
    depend on the tasks)."""

    @property
    def exchange(self) -> int: ...


class InternalError(RuntimeError):
    """A broken engine invariant (e.g. an illegal state transition): a bug, never input."""


class IKEState(StrEnum):
    """IKE SA states; the values are Libreswan's state names (``whack --status``)."""

    INIT_I = "STATE_V2_PARENT_I1"  # IKE_SA_INIT sent
    AUTH_I = "STATE_V2_PARENT_I2"  # IKE_AUTH sent
    INIT_R = "STATE_V2_PARENT_R1"  # IKE_SA_INIT answered, waiting for IKE_AUTH
    ESTABLISHED = "STATE_V2_ESTABLISHED_IKE_SA"
    DELETING = "STATE_V2_IKE_SA_DELETE"


class ChildState(StrEnum):
    """Child SA states; the values are Libreswan's state names."""

    AUTH_I = "STATE_V2_IKE_AUTH_CHILD_I0"  # offered in our IKE_AUTH request
    NEW_I = "STATE_V2_NEW_CHILD_I1"  # reserved SPI: offered (or being accepted)
    REKEY_I = "STATE_V2_REKEY_CHILD_I1"  # offered as the rekey of an existing Child SA
    ESTABLISHED = "STATE_V2_ESTABLISHED_CHILD_SA"
    DELETING = "STATE_V2_CHILD_SA_DELETE"


# The allowed transitions, in one table each (h11's style).  Writing the current state
# again is always allowed; anything else raises ``InternalError``.
IKE_TRANSITIONS: dict[IKEState, frozenset[IKEState]] = {
    IKEState.INIT_I: frozenset({IKEState.AUTH_I, IKEState.DELETING}),
    IKEState.AUTH_I: frozenset({IKEState.ESTABLISHED, IKEState.DELETING}),
    IKEState.INIT_R: frozenset({IKEState.ESTABLISHED, IKEState.DELETING}),
    IKEState.ESTABLISHED: frozenset({IKEState.DELETING}),
    IKEState.DELETING: frozenset(),
}
CHILD_TRANSITIONS: dict[ChildState, frozenset[ChildState]] = {
    ChildState.NEW_I: frozenset({ChildState.AUTH_I, ChildState.REKEY_I, ChildState.ESTABLISHED,
                                 ChildState.DELETING}),
    ChildState.AUTH_I: frozenset({ChildState.ESTABLISHED, ChildState.DELETING}),
    ChildState.REKEY_I: frozenset({ChildState.ESTABLISHED, ChildState.DELETING}),
    ChildState.ESTABLISHED: frozenset({ChildState.DELETING}),
    ChildState.DELETING: frozenset(),
}


@dataclass(slots=True)
class Reassembly:
    """SKF fragments of one message being collected (RFC 7383 §2.6)."""

    msgid: int
    response: bool
    total: int
    parts: dict[int, bytes] = field(default_factory=dict)
    first: int = 0  # the first inner payload type (from fragment 1)
    src: bytes = b""  # the sender's per-source bucket (TaskManager.frag_by_src)
    exchange: int = 0  # every fragment of one message has its header's exchange type


@dataclass(slots=True)
class Outstanding:
    """The one request in flight (window size 1, §2.3) and its retransmit schedule."""

    msgid: int
    packets: list[bytes]
    task: QueuedTask
    next_retransmit: float
    interval: float
    deadline: float
    tries: int = 1


@dataclass(slots=True, eq=False)
class ChildSA:
    serial: int
    conn: Connection
    parent: IKESA | None
    state: ChildState
    initiator: bool  # we initiated the exchange that created this Child SA
    local_addr: IPAddress  # the SA's outer addresses
    remote_addr: IPAddress
    spi_in: int = 0
    spi_out: int = 0
    protocol: Literal["esp", "ah"] = "esp"
    mode: Mode = "tunnel"
    chosen: Chosen | None = None
    local_ts: list[TS] = field(default_factory=list)
    remote_ts: list[TS] = field(default_factory=list)
    # configured (local, remote) selector pairs the peer left out (ts.left_out): block
    # policies of this Child SA's, so that they never go out in cleartext
    blocked: tuple[tuple[TS, TS], ...] = ()
    reqid: int = 0
    # the conn's reqid when this Child SA, narrowed to other selectors than the Child SA
    # holding that reqid's policies, got one of its own (``Engine.install_child``), or 0
    narrowed_from: int = 0
    encap: tuple[int, int] | None = None  # (local port, remote port) of ESP-in-UDP
    established_at: float = 0.0
    rekey_at: float | None = None
    expire_at: float | None = None
    rekeying: bool = False  # a rekey of this Child SA is queued or in flight
    replaced: bool = False  # a new Child SA took over; only deletion remains
    owns_policy: bool = False
    rekey_of: ChildSA | None = None  # the Child SA this one replaces
    # the peer's replacements: the shared empty tuple until one comes (as IKESA's, issue 18)
    peer_rekeys: list[ChildSA] | tuple[()] = ()
    nonce_min: bytes = b""  # min(Ni, Nr) of the creating exchange (§2.8.1 collisions)
    peer_no_tfc: bool = False  # the peer sent ESP_TFC_PADDING_NOT_SUPPORTED (§3.10.1)
    # the inbound SA's packet count as last fed (``Engine.sa_counters``): more means
    # the peer's ESP came in, news from it for liveness (RFC 7296 §2.4)
    in_packets: int = 0
    keys: ChildKeys | None = field(default=None, repr=False)  # until installed
    pending_out: SAParams | None = field(default=None, repr=False)  # held back (rekey)

    def to(self, state: ChildState) -> None:
        """Change state along ``CHILD_TRANSITIONS`` (an illegal change is a bug)."""
        if state is not self.state and state not in CHILD_TRANSITIONS[self.state]:
            raise InternalError(f"Child SA #{self.serial}: illegal transition "
                                f"{self.state.name} -> {state.name}")
        self.state = state


@dataclass(slots=True)
class PPKState:
    """RFC 8784 bookkeeping of one IKE SA (``ike/ppk.py`` keeps it)."""

    negotiated: bool = False  # USE_PPK went both ways in IKE_SA_INIT
    used: bool = False  # SK_d, SK_pi and SK_pr are mixed with the PPK
    ppk_id: bytes = b""
    # initiator: SK_d, SK_pi, SK_pr without the PPK, for a peer that answers without it
    no_ppk: tuple[bytes, bytes, bytes] | None = field(default=None, repr=False)


@dataclass(slots=True, eq=False)
class IKESA:
    serial: int
    conn: Connection
    initiator: bool  # original initiator (the I flag, §3.1)
    spi_i: bytes
    spi_r: bytes
    local: Endpoint
    remote: Endpoint
    state: IKEState
    chosen: Chosen | None = None
    ni: bytes = b""
    nr: bytes = b""
    ke_priv: KeyExchange | None = None  # initiator's pending key exchange
    ke_group: int = 0
    # keys: never in a repr (an exception or log line that names the SA must not show them)
    sk_d: bytes = field(default=b"", repr=False)
    sk_pi: bytes = field(default=b"", repr=False)
    sk_pr: bytes = field(default=b"", repr=False)
    prot_out: SKProtector | None = None
    prot_in: SKProtector | None = None
    init_request: bytes = b""  # IKE_SA_INIT messages, needed for AUTH (§2.15)
    init_response: bytes = b""
    cookie: bytes = b""
    local_id: Identity | None = None
    remote_id: Identity | None = None
    # the issuer DN of the peer's verified certificate (PLUTO_PEER_CA); "" without one
    peer_ca: str = ""
    # message IDs (§2.3)
    next_out: int = 0
    outstanding: Outstanding | None = None
    next_in: int = 0
    last_response: tuple[int, list[bytes]] | None = None
    tasks: list[QueuedTask] = field(default_factory=list)  # queued exchanges
    children: list[ChildSA] = field(default_factory=list)
    # NAT-T (§2.23)
    nat_local: bool = False
    nat_remote: bool = False
    # peer capabilities
    frag_ok: bool = False
    fragments: Reassembly | None = None
    # times
    established_at: float | None = None
    rekey_at: float | None = None
    expire_at: float | None = None
    last_recv: float = 0.0
    next_liveness: float | None = None
    next_keepalive: float | None = None
    halfopen_deadline: float | None = None
    heap_at: float | None = None
    # rekey bookkeeping
    rekeying: bool = False
    # RFC 7296 §2.9: the packet an acquire reported, offered first in TSi/TSr (traps)
    acquired_ts: tuple[TS, TS] | None = None
    replaced: bool = False
    sent_proposals: Proposals | None = None  # our IKE_SA_INIT offer, to check the answer
    invalid_ke_retries: int = 0
    tries: int = 1
    cookie_retried: bool = False
    reauth_of: IKESA | None = None  # reauth=yes: the IKE SA this one replaces
    halfopen_key: tuple[bytes, bytes, int] | None = None  # responder: (SPIi, packed addr, port)
    cands: list[Connection] | tuple[()] = ()  # responder: by address
    peer_rekeys: list[IKESA] | tuple[()] = ()  # the peer's new IKE SAs
    nonce_min: bytes = b""  # min(Ni, Nr) of the rekey exchange (§2.8.1 collisions)
    intermediate: IntState | None = None  # RFC 9242/9370 until IKE_AUTH completes
    followup: Pending | None = None  # RFC 9370 IKE_FOLLOWUP_KE awaited (responder)
    ppk: PPKState = field(default_factory=PPKState)  # RFC 8784
    # Configuration Payload (ike/tasks/config_payload.py): gateway's leases and the
    # client's addresses; an IKE SA rekey moves them to the new IKE SA
    # (these lists and cands/peer_rekeys start as the shared empty tuple, a list once
    # something is added: most IKE SAs never have any, and 6 empty lists were 6 objects
    # of 72 bytes per SA for the cyclic GC to walk, issue 18)
    leases: list[Lease] | tuple[()] = ()
    remote_vips: list[IPAddress] | tuple[()] = ()
    local_vips: list[IPAddress] | tuple[()] = ()
    dns: list[IPAddress] | tuple[()] = ()
    domains: list[str] | tuple[()] = ()  # INTERNAL_DNS_DOMAIN (RFC 8598) from the gateway
    mobike: bool = False  # RFC 4555: both ends sent MOBIKE_SUPPORTED
    # RFC 5685: redirected (we sent the client away in IKE_AUTH, or we follow a redirect):
    # it is to go, with no new Child SA and no second redirect
    redirected: bool = False
    answer_to: tuple[Endpoint, Endpoint] | None = None  # MOBIKE: the request's endpoints
    redirect_ok: bool = False  # RFC 5685: the client sent REDIRECT_SUPPORTED
    # we sent the session's first IKE_SA_INIT (``initiator`` is the I flag, which an IKE SA
    # rekey gives to whoever rekeys, §2.18): the redirect client, kept over rekeys
    first_initiator: bool = False

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def established(self) -> bool:
        return self.established_at is not None and self.state is not IKEState.DELETING

    def to(self, state: IKEState) -> None:
        """Change state along ``IKE_TRANSITIONS`` (an illegal change is a bug)."""
        if state is not self.state and state not in IKE_TRANSITIONS[self.state]:
            raise InternalError(f"IKE SA #{self.serial}: illegal transition "
                                f"{self.state.name} -> {state.name}")
        self.state = state
