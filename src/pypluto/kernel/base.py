"""The one small interface every kernel backend implements (DESIGN.md rule 6).

The engine decides which SAs and policies exist and hands the daemon
``AddSA`` / ``DelSA`` / ``AddPolicy`` / ``DelPolicy`` actions carrying these
parameter objects; the daemon passes them to the backend chosen on the command
line.  Neither the engine nor the daemon knows which backend is in use.
"""

from __future__ import annotations

import abc
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

Direction = Literal["in", "out", "fwd"]
Mode = Literal["tunnel", "transport"]


class BackendError(Exception):
    """A backend could not do what was asked; the message says why."""


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


@dataclass
class SAParams:
    """One direction of one Child SA (ESP or AH)."""

    src: IPAddress  # outer source (for "in": the peer)
    dst: IPAddress  # outer destination (for "in": us)
    spi: int  # 32-bit SPI of this direction (the receiver's choice)
    direction: Literal["in", "out"]
    protocol: Literal["esp", "ah"] = "esp"
    mode: Mode = "tunnel"
    reqid: int = 0  # groups the two directions and their policies
    encr_id: int = 0  # IANA ENCR transform ID (crypto.registry.Encr)
    encr_key_bits: int | None = None
    encr_key: bytes = field(default=b"", repr=False)  # includes salt for GCM/CTR/ChaCha
    integ_id: int = 0  # IANA INTEG transform ID; 0 for AEAD
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
    conn_name: str = ""


@dataclass
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


class KernelBackend(abc.ABC):
    """What the daemon asks of a data plane.  All methods may raise BackendError."""

    name: str = "none"
    on_expire: Callable[[SAExpire], None] | None = None

    def set_expire_callback(self, callback: Callable[[SAExpire], None] | None) -> None:
        """Have SA limit events delivered to ``callback`` (may be called from any thread)."""
        self.on_expire = callback

    on_acquire: Callable[[SAAcquire], None] | None = None

    def set_acquire_callback(self, callback: Callable[[SAAcquire], None] | None) -> None:
        """Have on-demand requests delivered to ``callback`` (may be called from any thread)."""
        self.on_acquire = callback

    @abc.abstractmethod
    def add_sa(self, sa: SAParams) -> None:
        """Install (or, for an existing SPI/direction, update) one SA."""

    @abc.abstractmethod
    def del_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        """Remove one SA; unknown SAs are ignored."""

    @abc.abstractmethod
    def add_policy(self, policy: PolicyParams) -> None:
        """Install one policy (and, for the userspace plane, its route)."""

    @abc.abstractmethod
    def del_policy(self, policy: PolicyParams) -> None:
        """Remove one policy; unknown policies are ignored."""

    @abc.abstractmethod
    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        """Counters of one SA, or None if the backend does not know it."""

    @abc.abstractmethod
    def flush_own(self) -> None:
        """Remove everything this daemon installed (also leftovers of a crashed run)."""

    # --- ESP-in-UDP (RFC 3948) on the daemon's port-4500 sockets -------------
    def attach_nat_socket(
        self,
        sock: socket.socket,
        local: tuple[str, int],
        deliver_ike: Callable[[bytes, tuple[str, int]], None],
    ) -> bool:
        """Offer the daemon's UDP socket bound to ``local`` (port 4500 or the NAT-T port).

        Return True when the backend reads the socket itself: it then handles
        ESP datagrams inside and passes every IKE datagram (non-ESP marker
        already stripped) with its remote (addr, port) to ``deliver_ike``,
        which is safe to call from any thread.  Return False (the default) when
        the daemon keeps reading the socket and hands ESP datagrams to
        ``handle_esp``.  Backends that send ESP in UDP keep ``sock`` to send.
        """
        return False

    def handle_esp(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        """One ESP-in-UDP datagram (no marker) that arrived on the socket at ``local``."""
        return None

    def prepare_ike_socket(self, sock: socket.socket) -> None:
        """Called for every IKE socket (500, 4500) before use.

        The XFRM backend exempts the socket from IPsec policies (per-socket
        bypass), so IKE to a peer inside a protected range never goes into ESP.
        """
        return None

    def alloc_spi(
        self, src: IPAddress, dst: IPAddress, protocol: str = "esp", reqid: int = 0
    ) -> int | None:
        """An inbound SPI reserved by the data plane, or None: the engine picks one itself."""
        return None

    def close(self) -> None:
        """Release sockets, devices, threads.  Called once at shutdown after flush_own."""
        return None
