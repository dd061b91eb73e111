"""The one small interface every kernel backend implements (DESIGN.md rule 6).

The engine decides which SAs and policies exist and hands the daemon
``AddSA`` / ``DelSA`` / ``AddPolicy`` / ``DelPolicy`` actions carrying the
parameter objects of ``pypluto.params``; the daemon passes them to the
backend chosen on the command line.  Neither the engine nor the daemon knows which backend is in use.
"""

from __future__ import annotations

import abc
import socket
from collections.abc import Callable, Iterator, Mapping

from pypluto.params import (
    Direction,
    IPAddress,
    IPNetwork,
    Mode,
    PolicyParams,
    SAAcquire,
    SAExpire,
    SAParams,
    SAStats,
    TrafficSelector,
)

# The parameter types moved to the bottom-layer module pypluto.params; they are
# re-exported here so existing ``from pypluto.kernel.base import SAParams`` keeps working.
__all__ = [
    "BackendError",
    "Direction",
    "IPAddress",
    "IPNetwork",
    "KernelBackend",
    "Mode",
    "PolicyParams",
    "SAAcquire",
    "SAExpire",
    "SAParams",
    "SAStats",
    "TrafficSelector",
    "refuse_marks",
]


class BackendError(Exception):
    """A backend could not do what was asked; the message says why."""


def refuse_marks(backend: KernelBackend, mark: tuple[int, int] | None, what: str) -> None:
    """BackendError when ``backend`` cannot apply the XFRM ``mark`` of ``what``."""
    if mark is not None and not backend.supports_marks:
        raise BackendError(
            f"the {backend.name} data plane cannot apply mark= / mark-in= / mark-out= "
            f"({what} has mark {mark[0]:#x}/{mark[1]:#x}); use --use-xfrm")


class KernelBackend(abc.ABC):
    """What the daemon asks of a data plane.  All methods may raise BackendError."""

    name: str = "none"
    #: the plane installs mark= / mark-in= / mark-out= (XFRMA_MARK); a plane that
    #: cannot must never be handed a marked SA or policy (the daemon refuses it)
    supports_marks: bool = False
    #: the plane gives ipsec-interface= conns their own ipsecN device (route-based
    #: VPNs); a plane that cannot must never be handed such a conn (the daemon refuses it)
    supports_ipsec_interface: bool = False
    on_expire: Callable[[SAExpire], None] | None = None

    def set_expire_callback(self, callback: Callable[[SAExpire], None] | None) -> None:
        """Have SA limit events delivered to ``callback`` (may be called from any thread)."""
        self.on_expire = callback

    on_acquire: Callable[[SAAcquire], None] | None = None

    def set_acquire_lifetime(self, seconds: int) -> str:
        """config setup ``xfrmlifetime=``: how long a trap's acquire lives (and its
        packets are held) before the next packet may ask again; what was done, for the
        log.  A plane without traps has nothing to set."""
        return f"xfrmlifetime={seconds}: the {self.name} data plane has no acquire state"

    def set_acquire_callback(self, callback: Callable[[SAAcquire], None] | None) -> None:
        """Have on-demand requests delivered to ``callback`` (may be called from any thread)."""
        self.on_acquire = callback

    @abc.abstractmethod
    def add_sa(self, sa: SAParams) -> None:
        """Install (or, for an existing SPI/direction, update) one SA."""

    @abc.abstractmethod
    def del_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        """Remove one SA; unknown SAs are ignored."""

    def retire_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        """Remove one inbound SA whose Child SA was rekeyed (RFC 7296 §2.8).

        Here it is :meth:`del_sa`: a kernel decrypts each packet as it arrives.  A
        plane that queues packets for its own threads may go on decrypting with
        it for a short time, but must list and count it as gone at once."""
        self.del_sa(dst, spi, protocol)

    def move_sa(self, dst: IPAddress, spi: int, new_src: IPAddress, new_dst: IPAddress,
                encap_sport: int | None, encap_dport: int | None,
                protocol: str = "esp") -> None:
        """MOBIKE (RFC 4555 §3.5): the SA keeps its keys and counters at new outer
        addresses / ESP-in-UDP ports.  Planes that cannot do it raise BackendError."""
        raise BackendError(f"the {self.name} data plane cannot move SAs (MOBIKE)")

    @abc.abstractmethod
    def add_policy(self, policy: PolicyParams) -> None:
        """Install one policy (and, for the userspace plane, its route)."""

    @abc.abstractmethod
    def del_policy(self, policy: PolicyParams) -> None:
        """Remove one policy; unknown policies are ignored."""

    @abc.abstractmethod
    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        """Counters of one SA, or None if the backend does not know it."""

    def sa_traffic(self, index: Mapping[int, tuple[IPAddress, str, str]]
                   ) -> Iterator[tuple[int, int, int]]:
        """``(spi, bytes, packets)`` of the SAs of ``index`` (SPI -> (destination,
        protocol, direction), the daemon's table) that carried traffic, for the
        periodic feed of counters to the engine (ipsec-max-bytes/-packets).

        This default asks ``get_sa_stats`` of each SA; a plane that holds its SAs'
        counters itself reads them all at once (the userspace plane: issue 18, no
        per-SA lookup and copy every 10 s for SAs that carried nothing)."""
        for spi, (dst, proto, _d) in list(index.items()):
            try:
                st = self.get_sa_stats(dst, spi, proto)
            except Exception:  # noqa: BLE001 - one SA's counters are not worth an error
                continue
            if st is not None and (st.bytes or st.packets):
                yield spi, st.bytes, st.packets

    def plane_counters(self) -> dict[str, int]:
        """Packets the data plane dropped or handled outside any one SA (an unknown SPI,
        a runt, no policy, a shunt, NAT keepalives...), by name, for ``whack
        --globalstatus`` and the status JSON; ``{}``: the backend keeps none (XFRM's
        are the kernel's, in ``/proc/net/xfrm_stat``)."""
        return {}

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
