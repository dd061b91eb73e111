"""Engine-wide settings: ``config setup`` plus the pluto command line.

The daemon builds one :class:`EngineSettings` from ``SetupConfig`` and its
options (``--force-busy``, ``--keep-alive``, ``--vendorid`` ...) and hands it to
``Engine``.  Per-connection values (lifetimes, DPD, proposals) stay on
``Connection``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pypluto.config.gateways import Gateway, parse_gateways
from pypluto.config.model import SetupConfig
from pypluto.config.values import parse_duration
from pypluto.params import IPAddress


@dataclass
class EngineSettings:
    """Knobs of the whole engine (not of one connection)."""

    uniqueids: bool = True  # a new IKE SA for the same peer ID replaces the old one
    force_busy: bool = False  # --force-busy: always demand COOKIEs (RFC 7296 §2.6)
    ddos_mode: str = "auto"  # auto | busy | unlimited
    ddos_ike_threshold: int = 25000  # half-open IKE SAs before cookies are demanded
    max_halfopen_ike: int = 50000  # above this, new IKE_SA_INIT requests are dropped
    # auto mode also demands cookies above this many new IKE_SA_INIT/s (0: never by
    # rate); ~4 % of the key exchanges one core does here (ike/cookies.py)
    ddos_init_rate: float = 100.0
    ddos_hold: float = 5.0  # seconds the rate must stay low before cookies stop
    halfopen_per_addr: int = 64  # half-open SAs of one source before it needs a cookie
    # RFC 7383 reassembly bounds (task_manager.py): one message, every SA together
    max_reassembled: int = 65536  # bytes of one reassembled message
    max_fragment_buffer: int = 4 * 1024 * 1024  # bytes buffered over all IKE SAs
    keep_alive: float = 20.0  # NAT-T keepalive interval, seconds (RFC 3948 §2.3)
    vendorids: list[bytes] = field(default_factory=list)  # extra VID payloads we send
    virtual_private: str | None = None
    half_open_timeout: float = 30.0  # a responder half-open IKE SA expires after this
    fragment_size: int = 1280  # RFC 7383: fragment our messages above this (IPv4)
    cookie_secret_lifetime: float = 60.0  # rotate the cookie secret this often
    listen_port: int = 500
    # multi-core (docs/multicore.md): this engine is worker ``index`` of ``count`` and
    # allocates only IKE SPIs whose last octet is ``index`` modulo ``count``, the octet
    # the socket-steering program reads; (0, 1) is the single-process daemon
    spi_slice: tuple[int, int] = (0, 1)
    natt_port: int = 4500
    # RFC 5685: config setup global-redirect= (no | yes | auto) and global-redirect-to=
    global_redirect: str = "no"
    global_redirect_to: list[Gateway] = field(default_factory=list)
    # RFC 5685 §10: a client resolves a gateway named by FQDN with this (run by the
    # daemon off the event loop, as a Compute(io=True) job); None: names not followed
    resolver: Callable[[str], list[IPAddress]] | None = None
    # hand key-exchange computations out as ``Compute`` actions (the daemon's --nhelpers);
    # False: compute inline, as before
    offload_crypto: bool = False
    # config setup shuntlifetime=: how long a failure shunt (failureshunt=) stays
    shunt_lifetime: float = 900.0
    # config setup ikev1-policy=reject: an IKEv1 message is answered with an
    # INVALID_MAJOR_VERSION notification (ipsec.conf(5)); False: dropped silently (drop)
    ikev1_reject: bool = False

    @classmethod
    def from_setup(cls, setup: SetupConfig, **overrides: object) -> EngineSettings:
        """Settings from ``config setup``; keyword overrides win (command line)."""
        s = cls(
            uniqueids=setup.uniqueids,
            ddos_mode=setup.ddos_mode,
            ddos_ike_threshold=setup.ddos_ike_threshold,
            max_halfopen_ike=setup.max_halfopen_ike,
            keep_alive=float(setup.keep_alive),
            virtual_private=setup.virtual_private,
        )
        s.ikev1_reject = setup.raw.get("ikev1-policy", "drop").strip().lower() == "reject"
        sl = setup.raw.get("shuntlifetime")
        if sl:
            s.shunt_lifetime = parse_duration(sl, "shuntlifetime")
        gr = setup.raw.get("global-redirect", "no").lower()
        s.global_redirect = {"true": "yes", "on": "yes", "y": "yes", "false": "no",
                             "off": "no", "n": "no"}.get(gr, gr)
        s.global_redirect_to = parse_redirect_to(setup.raw.get("global-redirect-to", ""))
        if setup.ddos_mode == "busy":
            s.force_busy = True
        if setup.myvendorid:
            s.vendorids.append(setup.myvendorid.encode())
        for k, v in overrides.items():
            if not hasattr(s, k):
                raise TypeError(f"unknown engine setting {k!r}")
            setattr(s, k, v)
        return s


def parse_redirect_to(value: str) -> list[Gateway]:
    """``global-redirect-to=``: addresses or host names separated by commas or spaces
    (ValueError if bad)."""
    return parse_gateways(value)
