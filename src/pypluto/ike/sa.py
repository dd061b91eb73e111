"""IKE SA and Child SA state (RFC 7296 §2.1-2.3, §2.8).

Plain ``__slots__`` dataclasses: one IKE SA costs a few hundred bytes plus its
keys; nothing per SA is cached beyond the last response (§2.1 retransmissions)
and, until IKE_AUTH completes, the IKE_SA_INIT messages that AUTH signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pypluto.config.model import Connection, Identity
from pypluto.ike.actions import Endpoint
from pypluto.ike.proposals import Chosen
from pypluto.ike.ts import TS

# Libreswan state names
PARENT_I1 = "STATE_V2_PARENT_I1"  # IKE_SA_INIT sent
PARENT_I2 = "STATE_V2_PARENT_I2"  # IKE_AUTH sent
PARENT_R1 = "STATE_V2_PARENT_R1"  # IKE_SA_INIT answered, waiting for IKE_AUTH
ESTABLISHED_IKE = "STATE_V2_ESTABLISHED_IKE_SA"
IKE_DELETING = "STATE_V2_IKE_SA_DELETE"
ESTABLISHED_CHILD = "STATE_V2_ESTABLISHED_CHILD_SA"
NEW_CHILD_I1 = "STATE_V2_NEW_CHILD_I1"
REKEY_CHILD_I1 = "STATE_V2_REKEY_CHILD_I1"
CHILD_DELETING = "STATE_V2_CHILD_SA_DELETE"
IKE_AUTH_CHILD_I0 = "STATE_V2_IKE_AUTH_CHILD_I0"


@dataclass(slots=True)
class Outstanding:
    """The one request in flight (window size 1, §2.3) and its retransmit schedule."""

    msgid: int
    packets: list[bytes]
    task: Any
    next_retransmit: float
    interval: float
    deadline: float
    tries: int = 1


@dataclass(slots=True, eq=False)
class ChildSA:
    serial: int
    conn: Connection
    parent: IKESA | None
    state: str
    initiator: bool  # we initiated the exchange that created this Child SA
    spi_in: int = 0
    spi_out: int = 0
    protocol: str = "esp"
    mode: str = "tunnel"
    chosen: Chosen | None = None
    local_ts: list[TS] = field(default_factory=list)
    remote_ts: list[TS] = field(default_factory=list)
    reqid: int = 0
    encap: tuple[int, int] | None = None  # (local port, remote port) of ESP-in-UDP
    local_addr: Any = None
    remote_addr: Any = None
    established_at: float = 0.0
    rekey_at: float | None = None
    expire_at: float | None = None
    rekeying: bool = False  # a rekey of this Child SA is queued or in flight
    replaced: bool = False  # a new Child SA took over; only deletion remains
    owns_policy: bool = False
    rekey_of: ChildSA | None = None  # the Child SA this one replaces
    peer_rekeys: list = field(default_factory=list)  # Child SAs the peer made to replace us
    nonce_min: bytes = b""  # min(Ni, Nr) of the creating exchange (§2.8.1 collisions)
    keys: Any = field(default=None, repr=False)  # ChildKeys until installed
    pending_out: Any = field(default=None, repr=False)  # outbound SAParams held back (rekey)


@dataclass(slots=True, eq=False)
class IKESA:
    serial: int
    conn: Connection
    initiator: bool  # original initiator (the I flag, §3.1)
    spi_i: bytes
    spi_r: bytes
    local: Endpoint
    remote: Endpoint
    state: str
    chosen: Chosen | None = None
    ni: bytes = b""
    nr: bytes = b""
    ke_priv: Any = None  # initiator's pending key exchange
    ke_group: int = 0
    sk_d: bytes = b""
    sk_pi: bytes = b""
    sk_pr: bytes = b""
    prot_out: Any = None
    prot_in: Any = None
    init_request: bytes = b""  # IKE_SA_INIT messages, needed for AUTH (§2.15)
    init_response: bytes = b""
    cookie: bytes = b""
    local_id: Identity | None = None
    remote_id: Identity | None = None
    # message IDs (§2.3)
    next_out: int = 0
    outstanding: Outstanding | None = None
    next_in: int = 0
    last_response: tuple[int, list[bytes]] | None = None
    tasks: list = field(default_factory=list)  # queued exchanges (a list: SAs are many)
    children: list[ChildSA] = field(default_factory=list)
    # NAT-T (§2.23)
    nat_local: bool = False
    nat_remote: bool = False
    # peer capabilities
    frag_ok: bool = False
    fragments: dict | None = None
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
    replaced: bool = False
    pending_child: Any = None  # the first Child SA's parameters during IKE_AUTH
    invalid_ke_retries: int = 0
    tries: int = 1
    cookie_retried: bool = False
    reauth_of: IKESA | None = None  # reauth=yes: the IKE SA this one replaces
    halfopen_key: tuple | None = None  # responder: (SPIi, addr, port) of IKE_SA_INIT
    cands: list = field(default_factory=list)  # responder: connections matching the addresses
    peer_rekeys: list = field(default_factory=list)  # new IKE SAs the peer made from this one
    nonce_min: bytes = b""  # min(Ni, Nr) of the rekey exchange (§2.8.1 collisions)

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.initiator else self.spi_r

    @property
    def established(self) -> bool:
        return self.established_at is not None and self.state != IKE_DELETING
