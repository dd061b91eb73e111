"""What the sans-I/O engine asks the outside world to do.

``Engine.receive`` / ``Engine.handle_timer`` / ``Engine.initiate`` ... return a
list of these.  The daemon carries them out in order; tests inspect them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pypluto.params import IPAddress, PolicyParams, SAParams, UpdownChild


@dataclass(frozen=True)
class Endpoint:
    """An (address, UDP port) pair."""

    addr: IPAddress
    port: int

    def __str__(self) -> str:
        if self.addr.version == 6:
            return f"[{self.addr}]:{self.port}"
        return f"{self.addr}:{self.port}"


@dataclass
class SendPacket:
    """Send one IKE datagram.

    ``data`` is the IKE message itself; when ``local.port`` is not 500 the
    daemon sends it from its NAT-T socket and prepends the 4-byte non-ESP
    marker (RFC 3948 §2.2).
    """

    data: bytes = field(repr=False)
    local: Endpoint
    remote: Endpoint


@dataclass
class SendKeepalive:
    """A NAT-T keepalive (the single byte 0xFF, RFC 3948 §2.3) from local to remote."""

    local: Endpoint
    remote: Endpoint


@dataclass
class AddSA:
    sa: SAParams


@dataclass
class DelSA:
    """Remove one SA.  ``rekeyed``: an inbound SA whose Child SA has a successor (it
    was rekeyed, RFC 7296 §2.8): a plane that reads packets on its own threads may
    keep decrypting with it for a few seconds, for the packets the peer sent on it
    before it switched (see ``KernelBackend.retire_sa``)."""

    dst: IPAddress
    spi: int
    protocol: str = "esp"
    conn_name: str = ""
    serial: int = 0
    rekeyed: bool = False


@dataclass
class MoveSA:
    """MOBIKE (RFC 4555 §3.5): the SA (``dst``, ``spi``) now runs between new outer
    addresses / ESP-in-UDP ports; keys, sequence numbers and replay window stay."""

    dst: IPAddress
    spi: int
    new_src: IPAddress
    new_dst: IPAddress
    encap_sport: int | None = None
    encap_dport: int | None = None
    conn_name: str = ""
    serial: int = 0
    protocol: str = "esp"


@dataclass
class AddPolicy:
    policy: PolicyParams


@dataclass
class DelPolicy:
    policy: PolicyParams


class Log:
    """One log line in pluto's style.

    ``level`` is "info", "warning", "error" or "debug" (debug lines get the
    ``| `` prefix from the daemon's logger); ``conn`` and ``serial`` produce the
    ``"conn" #N: `` prefix; ``debug_class`` names the ``--debug`` class.

    ``message`` is either given as a string or made on first reading from a
    zero-argument callable (``Log.lazy``): the engine then formats no text that
    nobody reads (a debug line with debugging off, a line the limiter drops;
    issue 18).  The attributes, constructor, equality and ``repr`` are those the
    dataclass this was had.
    """

    __slots__ = ("_message", "_make", "level", "conn", "serial", "remote", "debug_class",
                 "traceback")
    __match_args__ = ("message", "level", "conn", "serial", "remote", "debug_class", "traceback")
    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __init__(self, message: str, level: str = "info", conn: str | None = None,
                 serial: int | None = None, remote: Endpoint | None = None,
                 debug_class: str = "base", traceback: str = "") -> None:
        self._message: str | None = message
        self._make: Callable[[], str] | None = None
        self.level = level
        self.conn = conn
        self.serial = serial
        self.remote = remote
        self.debug_class = debug_class
        # an internal error's formatted traceback: for the crash report, not the log line
        self.traceback = traceback

    @classmethod
    def lazy(cls, make: Callable[[], str], level: str = "info", conn: str | None = None,
             serial: int | None = None, remote: Endpoint | None = None,
             debug_class: str = "base") -> Log:
        """A line whose text ``make()`` formats when ``message`` is first read."""
        log = cls("", level, conn, serial, remote, debug_class)
        log._message = None
        log._make = make
        return log

    def made(self) -> str | None:
        """The text if it is already there (given, or made by an earlier read), else
        None: a reader that only looks for eagerly built lines (the retransmission
        line) formats nothing by asking."""
        return self._message

    @property
    def message(self) -> str:
        m = self._message
        if m is None:
            make = self._make
            assert make is not None
            m = self._message = make()
            self._make = None
        return m

    @message.setter
    def message(self, value: str) -> None:
        self._message = value
        self._make = None

    def _key(self) -> tuple[object, ...]:
        return (self.message, self.level, self.conn, self.serial, self.remote,
                self.debug_class, self.traceback)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Log)
        return self._key() == other._key()

    def __repr__(self) -> str:
        return (f"Log(message={self.message!r}, level={self.level!r}, conn={self.conn!r}, "
                f"serial={self.serial!r}, remote={self.remote!r}, "
                f"debug_class={self.debug_class!r})")


class EventKind(StrEnum):
    """What a ``ConnectionEvent`` reports (the values are the old strings)."""

    IKE_ESTABLISHED = "ike-established"
    CHILD_ESTABLISHED = "child-established"
    IKE_DELETED = "ike-deleted"
    CHILD_DELETED = "child-deleted"
    FAILED = "failed"
    PEER_DEAD = "peer-dead"
    # an exception inside the engine: the SA was torn down, whack fails at once
    INTERNAL_ERROR = "internal-error"


class FailReason(StrEnum):
    """Why a FAILED / PEER_DEAD / INTERNAL_ERROR event happened (whack's exit code)."""

    NONE = ""
    TIMEOUT = "timeout"  # retransmits exhausted: no answer (whack rc 30)
    AUTHENTICATION = "authentication"
    PROPOSAL = "proposal"
    TRAFFIC_SELECTORS = "traffic-selectors"
    PEER_NOTIFY = "peer-notify"  # the peer answered with an error notify
    LOCAL = "local"  # our own configuration or secrets cannot do it
    INTERNAL = "internal"


@dataclass
class ConnectionEvent:
    """A state change that the daemon may report (whack waits on these).

    ``kind`` is an ``EventKind``; ``reason`` says why a failure happened, so the
    daemon never has to read ``detail`` (which is for humans).
    """

    kind: EventKind
    conn: str
    serial: int
    detail: str = ""
    reason: FailReason = FailReason.NONE


@dataclass
class Compute:
    """Run ``job`` (an expensive key-exchange computation) and hand its result back.

    Only emitted when ``EngineSettings.offload_crypto`` is set.  The daemon runs
    ``job()`` wherever it likes (a helper thread or process) and then calls
    ``Engine.resume(token, result, now)`` on its event loop, where ``result``
    is the return value or, when the job raised, the exception instance.  A
    result for an IKE SA that is gone by then is dropped by the engine.
    """

    job: Callable[[], object] = field(repr=False)
    token: int
    # a blocking fetch (CRL / OCSP over HTTP, issue 14): always run on a thread, even
    # with --nhelpers=0, never on the event loop; emitted whatever offload_crypto says
    io: bool = False


@dataclass
class Updown:
    """Run the conn's ``leftupdown=`` command for one selector pair of a Child SA.

    ``up``: the verbs prepare, route, up, when the Child SA is the first to carry
    the conn's traffic (a rekey does not run them again, as in Libreswan);
    otherwise down, unroute, when the last Child SA of that traffic goes.  Emitted
    before the CHILD_ESTABLISHED event (the daemon holds that event back until the
    script succeeds) and before the DelSAs (so the byte counts can still be read).
    When an ``up`` run fails the daemon calls ``Engine.fail_child``.

    ``verbs``: the steps to run, when not all of them (Libreswan 5.2 on a routed,
    on-demand conn: ``prepare``, ``route`` when it is routed, ``prepare``, ``up``
    when its Child SA comes up, ``down`` when that goes, ``unroute`` when it is
    unrouted).  A run for the route itself has no Child SA: ``child.serial`` 0.
    """

    up: bool
    script: str
    child: UpdownChild
    verbs: tuple[str, ...] = ()
    # a MOBIKE move (Libreswan 5.2's suspend / resume): the SAs, a VTI device and the
    # NFLOG rules stay; the script alone runs, and its failure fails nothing
    mobike: bool = False


Action = (
    SendPacket | SendKeepalive | AddSA | DelSA | AddPolicy | DelPolicy | Log | ConnectionEvent
    | Compute | Updown | MoveSA
)
