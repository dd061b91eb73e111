"""The parameter types the engine emits and the kernel backends consume.

A bottom-layer module (DESIGN.md "Import rules"): it imports only the standard
library, so ``ike/`` (which asks for SAs by returning actions carrying these
objects), ``kernel/`` (which installs them) and ``daemon/`` (which passes them
along) can all import it without importing each other.

- ``TrafficSelector``: one selector as the kernel sees it (RFC 4301 §4.4.1.1).
- ``SAParams``: one direction of one Child SA (RFC 4301 §4.4.2.1 SAD fields).
- ``PolicyParams``: one SPD entry (RFC 4301 §4.4.1).
- ``SAStats``, ``SAExpire``, ``SAAcquire``: what a backend reports back.
- ``UpdownChild``: the facts of a Child SA that a ``leftupdown=`` script sees.
- ``IPAddress`` / ``IPNetwork``: the one alias of each for the whole package.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

__all__ = [
    "Direction",
    "IPAddress",
    "IPNetwork",
    "Mode",
    "PolicyParams",
    "SAAcquire",
    "SAExpire",
    "SAParams",
    "SAStats",
    "TrafficSelector",
    "UpdownChild",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

Direction = Literal["in", "out", "fwd"]
Mode = Literal["tunnel", "transport"]


@dataclass(frozen=True)
class TrafficSelector:
    """One traffic selector as the kernel sees it (a range may need several)."""

    network: IPNetwork
    protocol: int = 0  # 0 = any
    port_start: int = 0
    port_end: int = 65535

    def __str__(self) -> str:
        s = str(self.network)
        if self.protocol or (self.port_start, self.port_end) != (0, 65535):
            ports = (
                str(self.port_start)
                if self.port_start == self.port_end
                else f"{self.port_start}-{self.port_end}"
            )
            s += f"/{self.protocol}/{ports}"
        return s


@dataclass(slots=True)  # one per installed SA direction: no __dict__ (issue 18)
class SAParams:
    """One direction of one Child SA (ESP or AH)."""

    src: IPAddress  # outer source (for "in": the peer)
    dst: IPAddress  # outer destination (for "in": us)
    spi: int  # 32-bit SPI of this direction (the receiver's choice)
    direction: Literal["in", "out"]
    protocol: Literal["esp", "ah"] = "esp"
    mode: Mode = "tunnel"
    reqid: int = 0  # groups the two directions and their policies
    encr_id: int = 0  # IANA ENCR transform ID (iana.Encr)
    encr_key_bits: int | None = None
    encr_key: bytes = field(default=b"", repr=False)  # includes salt for GCM/CTR/ChaCha
    integ_id: int = 0  # IANA INTEG transform ID (iana.Integ); 0 for AEAD
    integ_key: bytes = field(default=b"", repr=False)
    esn: bool = False
    replay_window: int = 128  # packets; 0 = off
    encap_sport: int | None = None  # UDP encapsulation (RFC 3948): source port
    encap_dport: int | None = None  # ... destination port; None = plain ESP
    local_ts: list[TrafficSelector] = field(default_factory=list)
    remote_ts: list[TrafficSelector] = field(default_factory=list)
    soft_bytes: int | None = None
    hard_bytes: int | None = None
    soft_packets: int | None = None
    hard_packets: int | None = None
    soft_seconds: float | None = None
    hard_seconds: float | None = None
    conn_name: str = ""  # for logs only
    serial: int = 0  # the Child SA's serial number (#N), for logs only
    # mark=/mark-in=/mark-out= (XFRMA_MARK): (value, mask) of this direction, or None
    mark: tuple[int, int] | None = None
    # ipsec-interface=N (route-based VPN): the SA's traffic enters and leaves the
    # device ipsecN; if_ip is the conn's interface-ip= (ADDR/PREFIX) for that device
    if_id: int | None = None
    if_ip: str | None = None
    # tfc= (outbound tunnel-mode ESP): pad each inner packet to this many bytes with
    # TFC padding (RFC 4303 §2.7), at most to the plane's MTU; 0 = none
    tfc_pad: int = 0
    # encap-dscp= / decap-dscp= / nopmtudisc= (XFRM flags; ipsec.conf(5): XFRM only)
    encap_dscp: bool = True
    decap_dscp: bool = False
    nopmtudisc: bool = False
    # sha2-truncbug=: the ICV of HMAC-SHA2-256 cut to 96 bits (the pre-RFC 4868 draft,
    # Linux before 2.6.33); 0 = the transform's own length
    integ_trunc_bits: int = 0

    @property
    def encapsulated(self) -> bool:
        return self.encap_dport is not None


@dataclass
class PolicyParams:
    """One IPsec policy: traffic from ``src`` to ``dst`` uses the SA pair ``reqid``."""

    src: TrafficSelector
    dst: TrafficSelector
    direction: Direction
    reqid: int
    tmpl_src: IPAddress  # outer addresses of the SA (tunnel endpoints)
    tmpl_dst: IPAddress
    mode: Mode = "tunnel"
    protocol: Literal["esp", "ah"] = "esp"
    priority: int = 0  # 0 = backend default
    source_ip: IPAddress | None = None  # preferred source for the route (leftsourceip)
    # mtu= / metric= of the conn: the route of an outbound policy carries them (as
    # Libreswan's updown: ``ip route ... mtu N metric M``); None = the kernel's default
    mtu: int | None = None
    metric: int | None = None
    # leftnexthop= as an address: the route's gateway (Libreswan's updown: ``via
    # PLUTO_NEXT_HOP``); None = the way the kernel reaches the peer
    nexthop: IPAddress | None = None
    conn_name: str = ""
    # "ipsec": use the SA (the template); a shunt (type=passthrough|drop|reject conns):
    # "pass" bypasses IPsec, "drop" discards, "reject" discards with ICMP unreachable
    action: Literal["ipsec", "pass", "drop", "reject"] = "ipsec"
    # mark=/mark-in=/mark-out= (XFRMA_MARK): (value, mask); "out" policies carry the
    # outbound mark, "in"/"fwd" the inbound one; None = no mark
    mark: tuple[int, int] | None = None
    # ipsec-interface=N: the policy belongs to the device ipsecN (route-based: the
    # operator routes onto it, the plane installs no route); if_ip as in SAParams
    if_id: int | None = None
    if_ip: str | None = None


@dataclass(slots=True)  # one per installed SA (issue 18)
class SAStats:
    """Counters of one SA (as in ``ip -s xfrm state``)."""

    bytes: int = 0
    packets: int = 0
    last_used: float | None = None  # backend's clock (time.monotonic) of the last packet
    replay_drops: int = 0
    integrity_failures: int = 0
    # inbound: decrypted packets outside the SA's selectors (RFC 4301 §5.2 step 4);
    # None: the backend does not count them per SA (XFRM counts them per namespace)
    selector_drops: int | None = None
    # inbound: packets of this SA dropped as malformed after its SPI matched (short,
    # bad padding, wrong next header); None: not counted per SA (XFRM)
    malformed: int | None = None


@dataclass(frozen=True)
class SAExpire:
    """An SA reached a limit: the daemon should rekey (soft) or delete it (hard).

    ``reason`` is "bytes" / "packets" (ipsec-max-bytes / ipsec-max-packets,
    RFC 4301 §4.4.2.1), "seq" (sequence number space nearly used up or
    exhausted, RFC 4303 §3.3.3) or "seconds".
    """

    dst: IPAddress
    spi: int
    protocol: str
    hard: bool
    reason: Literal["bytes", "packets", "seq", "seconds"]


@dataclass(frozen=True)
class SAAcquire:
    """Traffic hit an installed policy that has no SA yet (auto=route / ondemand).

    ``reqid`` is the engine's reqid of the policy; ``src``/``dst`` select the
    packet that triggered it (RFC 7296 §2.9: the first traffic selector of
    TSi/TSr may be this packet); ``local``/``remote`` are the outer addresses.
    """

    reqid: int
    src: TrafficSelector
    dst: TrafficSelector
    local: IPAddress
    remote: IPAddress


@dataclass(frozen=True)
class UpdownChild:
    """The facts of one Child SA (one selector pair) that an updown script sees."""

    conn: str
    serial: int
    me: IPAddress
    peer: IPAddress
    my_client: IPNetwork
    peer_client: IPNetwork
    my_id: str = ""
    peer_id: str = ""
    my_protocol: int = 0
    my_port: int = 0
    peer_protocol: int = 0
    peer_port: int = 0
    reqid: int = 0
    sa_type: str = "ESP"  # ESP or AH
    mode: str = "tunnel"  # tunnel or transport
    spi_in: int = 0
    spi_out: int = 0
    interface: str = ""
    nexthop: IPAddress | None = None
    my_sourceip: IPAddress | None = None
    peer_dns: list[IPAddress] = field(default_factory=list)  # from the gateway's CFG_REPLY
    peer_domains: list[str] = field(default_factory=list)  # its INTERNAL_DNS_DOMAINs
    peer_ca: str = ""
    policy: str = ""  # Libreswan's policy string, e.g. PSK+ENCRYPT+TUNNEL+PFS+IKEV2_ALLOW
    stack: str = "xfrm"  # the data plane: xfrm, userspace or none
    add_time: float = field(default_factory=time.time)
    inbytes: int = 0
    outbytes: int = 0
    mark_in: str = ""
    virt_interface: str = ""  # ipsec-interface=N: "ipsecN" (PLUTO_VIRT_INTERFACE)
    mark_out: str = ""
    # vti-interface= (daemon/vti.py makes the device; VTI_* of Libreswan's updown)
    vti_iface: str = ""
    vti_routing: bool = True
    vti_shared: bool = False
    vti_ip: str = ""  # leftvti=
    mtu: int | None = None  # mtu= (PLUTO_MTU)
    nflog: int = 0  # nflog= (daemon/nflog.py; NFLOG of Libreswan's updown)
    metric: int | None = None  # metric= (PLUTO_METRIC)
    conn_kind: str = "CK_PERMANENT"  # PLUTO_CONN_KIND: CK_INSTANCE for a template's peer
    cfg_server: bool = False  # leftmodecfgserver= (PLUTO_CFG_SERVER)
    cfg_client: bool = False  # leftmodecfgclient= (PLUTO_CFG_CLIENT)
    if_id: int = 0  # ipsec-interface=N: the XFRM if_id N (PLUTO_XFRMI_ROUTE / _FWMARK)
    interface_ip: str = ""  # leftinterface-ip= (INTERFACE_IP)
    mobike_event: bool = False  # a MOBIKE move's unroute (PLUTO_MOBIKE_EVENT=yes)

    @property
    def is_host(self) -> bool:
        """Our end of the SA is this host alone (the ``-host`` verbs)."""
        n = self.my_client
        return n.prefixlen == n.max_prefixlen and n.network_address == self.me
