"""A snapshot of the engine's state, for ``whack --status`` and ``--json``.

The engine fills these in ``Engine.status()``; ``control/`` formats them in
Libreswan's text style or as JSON (``dataclasses.asdict``).  Counters of
traffic come from the kernel backend and are merged by the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChildSAStatus:
    serial: int
    conn: str
    state: str  # e.g. "STATE_V2_ESTABLISHED_CHILD_SA", "STATE_V2_REKEY_CHILD_I1"
    parent_serial: int
    spi_in: int  # our inbound SPI (the one the peer sends to)
    spi_out: int  # the peer's inbound SPI
    protocol: str = "esp"
    mode: str = "tunnel"
    encapsulated: bool = False
    encr: str = ""  # e.g. "AES_GCM_16_256"
    integ: str = ""  # "" for AEAD
    ke: str = ""  # PFS group or ""
    esn: bool = False
    local_ts: list[str] = field(default_factory=list)
    remote_ts: list[str] = field(default_factory=list)
    established_at: float = 0.0  # engine clock
    rekey_at: float | None = None
    expire_at: float | None = None
    in_bytes: int = 0  # filled by the daemon from the backend
    out_bytes: int = 0
    in_packets: int = 0
    out_packets: int = 0
    reqid: int = 0


@dataclass
class IKESAStatus:
    serial: int
    conn: str
    state: str  # e.g. "STATE_V2_ESTABLISHED_IKE_SA", "STATE_V2_PARENT_I1"
    role: str  # "initiator" | "responder" (original role of this IKE SA)
    spi_i: int
    spi_r: int
    local: str  # "192.0.2.1:500"
    remote: str
    local_id: str = ""
    remote_id: str = ""
    # RFC 7296 §3.5 ID Type of remote_id (13: ID_NULL, shown "ID_NULL" as Libreswan; 0: none)
    remote_id_type: int = 0
    encr: str = ""
    integ: str = ""
    prf: str = ""
    ke: str = ""
    nat_detected_local: bool = False  # we are behind a NAT
    nat_detected_remote: bool = False  # the peer is behind a NAT
    established_at: float | None = None
    rekey_at: float | None = None
    expire_at: float | None = None
    last_liveness: float | None = None
    msgid_next_request: int = 0
    msgid_last_received: int = -1
    children: list[ChildSAStatus] = field(default_factory=list)
    # the addresses the gateway gave us (CFG_REPLY, RFC 7296 §3.15): a client's "lease="
    local_vips: list[str] = field(default_factory=list)
    # the N of "conn"[N] of an IKE SA of a template (right=%any): the engine's, kept while
    # the peer has an IKE SA, never reused (Engine._refresh_instances; None: not one)
    instance: int | None = None


@dataclass
class ConnectionStatus:
    name: str
    local: str  # "192.0.2.1"
    remote: str
    local_id: str
    remote_id: str
    local_subnets: list[str]
    remote_subnets: list[str]
    authby: str
    type: str
    auto: str
    routed: bool = False
    ike_serials: list[int] = field(default_factory=list)
    child_serials: list[int] = field(default_factory=list)
    ike: str = ""  # configured proposals as written, or "default"
    esp: str = ""


@dataclass
class LeaseStatus:
    """One address of a pool held by a road warrior's IKE SA (RFC 7296 §3.15)."""

    pool: str  # the addresspool= value
    address: str
    client_id: str
    conn: str
    ike_serial: int


@dataclass
class PoolStatus:
    pool: str  # one family's range of an addresspool= value
    size: int
    in_use: int
    lingering: int  # released, kept for their client ID until needed


@dataclass
class DoSStatus:
    """The DoS defence (RFC 7296 §2.6, RFC 8019; ``ike/cookies.py``) and RFC 7383 bounds."""

    mode: str = "auto"  # ddos-mode= (busy when --force-busy)
    busy: bool = False  # COOKIEs demanded from every new peer
    reason: str = ""  # "rate", "half-open", "rate,half-open", "forced" or ""
    half_open: int = 0
    ddos_ike_threshold: int = 0
    max_halfopen_ike: int = 0
    init_rate: float = 0.0  # new IKE_SA_INIT requests per second (weighted, τ 0.25 s)
    init_rate_threshold: float = 0.0
    halfopen_per_addr: int = 0  # per source: cookies from here, drops at twice this
    sources_halfopen: int = 0  # source addresses (/64 for IPv6) with half-open SAs
    cookies_sent: int = 0
    cookies_accepted: int = 0
    cookies_rejected: int = 0
    dropped_halfopen_full: int = 0
    dropped_per_addr: int = 0
    busy_periods: int = 0
    fragment_bytes: int = 0  # SKF plaintext buffered now, every IKE SA
    fragments_dropped: int = 0  # over a reassembly cap
    max_reassembled: int = 0
    max_fragment_buffer: int = 0


@dataclass
class ShuntStatus:
    """A bare shunt (ike/traps.py): one flow's negotiation or failure shunt."""

    conn: str
    src: str  # the flow's traffic selectors (host addresses of the acquire's packet)
    dst: str
    protocol: int
    action: str  # pass | drop | reject
    why: str  # negotiationshunt | failureshunt
    expires_in: float | None = None  # seconds (failure shunts)


@dataclass
class EngineStatus:
    connections: list[ConnectionStatus] = field(default_factory=list)
    shunts: list[ShuntStatus] = field(default_factory=list)
    ike_sas: list[IKESAStatus] = field(default_factory=list)
    leases: list[LeaseStatus] = field(default_factory=list)
    pools: list[PoolStatus] = field(default_factory=list)
    half_open: int = 0
    busy: bool = False  # cookies demanded
    dos: DoSStatus = field(default_factory=DoSStatus)
