"""The UDP sockets of IKE (port 500) and NAT-T (port 4500), and their framing.

* One socket per local address and port: every local address that is not an
  IPv6 link-local one, or only ``--listen`` (ipsec-pluto(8)); a rescan
  (``whack --listen``) opens what is new and closes what is gone.
* On the NAT-T port (RFC 3948 §2.2) an IKE message is preceded by the 4-byte
  non-ESP marker: stripped on receive, added on send.  A lone 0xFF byte is a
  NAT-keepalive (§2.3) and is dropped; anything else is ESP-in-UDP and goes to
  the kernel backend.
* A backend that reads a NAT-T socket itself (the userspace data plane): a
  second socket of the loop joins it on the same address and port, and the
  kernel steers each datagram by its marker (:mod:`.steer`: IKE to the loop's
  socket, ESP and keepalives to the backend's), so that IKE never waits for a
  hand-off from the backend's thread (issue 18).  Without steering, and for IKE
  that still reaches the backend's socket, the backend hands IKE back through a
  thread-safe callback (queued; the loop takes each burst in one turn, like a
  batch of its own sockets).  Such a socket is *parked*, not closed, when its
  address goes away, so the backend's thread keeps a valid socket, and IKE
  arriving on it is dropped.
* Under a flood (issue 13): each socket gets a 4 MiB receive buffer
  (``SO_RCVBUFFORCE`` as root, else ``SO_RCVBUF`` up to ``rmem_max``); a wake-up
  drains up to ``BATCH`` datagrams at once, and messages for existing IKE SAs
  (IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL, responses) are handed to the engine
  before new IKE_SA_INIT requests (one that returns a COOKIE counts as existing),
  which get at most ``INIT_BUDGET`` seconds per
  turn of the loop and wait, at most ``MAX_PENDING_INIT`` of them, for the next
  turn, newest first (adaptive LIFO: under a flood a backlog of stale requests
  never delays a peer's fresh retransmission; the oldest are dropped).
* When the engine is busy, a new IKE_SA_INIT without a valid COOKIE is answered
  right here by the engine's ``DoSGuard.stateless_reply`` (``attach_guard``):
  header and first payload only, one HMAC, nothing kept, so the socket is read
  as fast as a flood arrives.  An IKE_SA_INIT flood therefore never starves the SAs that exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pypluto.config.model import IPAddress
from pypluto.daemon import steer
from pypluto.daemon.interfaces import LocalAddress, local_addresses
from pypluto.daemon.logger import PlutoLogger
from pypluto.ike.actions import Endpoint
from pypluto.kernel.base import KernelBackend

NON_ESP_MARKER = b"\x00\x00\x00\x00"
KEEPALIVE = b"\xff"

RCVBUF = 4 * 1024 * 1024  # bytes of receive buffer asked for each IKE socket
BATCH = 1024  # datagrams read from one socket per wake-up
INIT_BUDGET = 0.02  # seconds of new IKE_SA_INIT processing per turn of the loop
MAX_PENDING_INIT = 2048  # IKE_SA_INIT requests waiting; over that the oldest is dropped
_EXCH_INIT = 34
_FLAG_R = 0x20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

Pending = tuple[bytes, Endpoint, Endpoint]

def _always() -> bool:
    return True


def _nothing() -> None:
    return None


def _cookie_first(data: bytes) -> bool:
    """An IKE_SA_INIT whose first payload is N(COOKIE) (RFC 7296 §2.6): a peer that
    answered our cookie goes with the existing SAs (its cookie is checked at once)."""
    return len(data) >= 36 and data[16] == 41 and data[33] == 0 and \
        data[34:36] == b"\x40\x06"


IKEHandler = Callable[[bytes, Endpoint, Endpoint], None]
"""Where an IKE message (marker already stripped) goes: ``(data, local, remote)``."""


@dataclass
class IKEInterface:
    """One bound UDP socket: an (address, port) of ours."""

    ifname: str
    addr: IPAddress
    port: int
    sock: socket.socket
    natt: bool
    backend_reads: bool = False
    # the backend reads ``sock``; IKE to it is steered to this socket (daemon/steer.py)
    ike_sock: socket.socket | None = None
    ike_gro: bool = False  # ``ike_sock`` receives UDP GRO batches

    @functools.cached_property
    def local(self) -> Endpoint:
        return Endpoint(self.addr, self.port)


_REMOTES: dict[tuple[str, int], Endpoint] = {}
REMOTE_CACHE = 512  # peers' endpoints (and send routes) kept; more and the cache starts over
# (small: after a spoofed flood it is what stays of it, issue 13's RSS within 5 MiB)


def _remote(addr: str, port: int) -> Endpoint:
    """The peer's ``Endpoint`` of a datagram: parsed once per (address, port), not per
    datagram (``ipaddress`` parsing costs more than the rest of the receive path)."""
    key = (addr, port)
    ep = _REMOTES.get(key)
    if ep is None:
        ep = Endpoint(ipaddress.ip_address(addr.split("%")[0]), port)
        if len(_REMOTES) >= REMOTE_CACHE:  # a spoofed flood must not grow it
            _REMOTES.clear()
        _REMOTES[key] = ep
    return ep



class UDPSockets:
    """The IKE and NAT-T sockets of one daemon."""

    def __init__(self, log: PlutoLogger, ikeport: int, natikeport: int,
                 listen: str | None) -> None:
        self.log = log
        self.ikeport = ikeport
        self.natikeport = natikeport
        self.listen = listen
        self.interfaces: list[IKEInterface] = []
        self.parked: dict[tuple[IPAddress, int], IKEInterface] = {}
        self.listening = False
        self.bufsize: int | None = None  # ike-socket-bufsize=: both buffers, else the kernel's
        self.local_addrs: set[IPAddress] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.backend: KernelBackend | None = None
        self.on_ike: IKEHandler = lambda data, local, remote: None
        # around each batch of datagrams handed to ``on_ike`` (the driver's
        # ``batch_begin`` / ``batch_end``: its timer is re-armed once per batch)
        self.batch_begin: Callable[[], None] = _nothing
        self.batch_end: Callable[[], None] = _nothing
        self.closed = False  # shutting down: drop every IKE message
        self._urgent: deque[Pending] = deque()  # messages for existing IKE SAs
        self._inits: deque[Pending] = deque()  # new IKE_SA_INIT requests
        self._reading = False  # inside a batch read: hand over at its end
        self._drain_scheduled = False
        self.init_overflow = 0  # IKE_SA_INIT requests dropped: MAX_PENDING_INIT waiting
        self.rcvbuf = 0  # the receive buffer the kernel granted (the last socket opened)
        # the engine's busy-mode COOKIE answer, straight from a datagram (attach_guard)
        self.prefilter: Callable[[bytes, bytes, int], bytes | None] | None = None
        self._busy: Callable[[], bool] = _always  # the guard's busy_now (attach_guard)
        self.prefiltered = 0  # COOKIE answers sent by the pre-filter
        # ESP merged (UDP GRO) behind an IKE message onto the steered IKE socket: dropped
        self.steered_dropped = 0
        # IKE datagrams a backend's reader thread handed over, waiting for the loop
        self._handed: deque[tuple[bytes, tuple[str, int], tuple[str, int]]] = deque()
        self._handed_lock = threading.Lock()
        self._handed_scheduled = False
        self._handed_local: dict[tuple[str, int], Endpoint] = {}
        # (id(local), id(remote)) -> (local, remote, interface, sockaddr, natt) of
        # ``send``; emptied whenever an interface opens or closes
        self._routes: dict[tuple[int, int], tuple[Endpoint, Endpoint, IKEInterface,
                                                  tuple[str, int], bool]] = {}

    def attach_guard(self, guard: object, clock: Callable[[], float]) -> None:
        """Answer IKE_SA_INIT floods here when the engine is busy (``ike/cookies.py``).

        ``guard`` is the engine's ``DoSGuard`` (``engine.dos``); without one, every
        datagram goes to the engine as before.
        """
        reply = getattr(guard, "stateless_reply", None)
        if reply is None:
            self.prefilter = None
            self._busy = _always
            return
        self.prefilter = lambda data, packed, port: reply(data, packed, port, clock())
        # the guard answers nothing unless busy: asked first, before the sender's
        # address is packed for it (issue 18: every IKE_SA_INIT passes here)
        busy = getattr(guard, "busy_now", None)
        self._busy = busy if callable(busy) else _always

    # ------------------------------------------------------------- interfaces
    def scan(self) -> set[IPAddress]:
        """(Re)open the sockets for the current local addresses; returns those addresses."""
        try:
            found = local_addresses()
        except OSError as e:  # keep what is open: an empty list would close every socket
            self.log.log(f"cannot list local addresses: {e}; keeping the current interfaces",
                         "error")
            return set(self.local_addrs)
        self.local_addrs = {a.addr for a in found}
        wanted: list[LocalAddress] = []
        if self.listen:
            target = ipaddress.ip_address(self.listen)
            wanted = [a for a in found if a.addr == target]
            if not wanted:
                self.log.log(f"--listen {target}: not a local address; not listening", "error")
        else:
            wanted = [a for a in found if not a.link_local]
        have = {(i.addr, i.port) for i in self.interfaces}
        want_keys: set[tuple[IPAddress, int]] = set()
        for la in wanted:
            for port, natt in ((self.ikeport, False), (self.natikeport, True)):
                want_keys.add((la.addr, port))
                if (la.addr, port) in have:
                    continue
                iface = self._open(la, port, natt)
                if iface is not None:
                    self.interfaces.append(iface)
                    self._routes.clear()  # a better match for some sends may be here now
                    self.log.log(f"adding UDP interface {la.ifname} {Endpoint(la.addr, port)}")
        for iface in list(self.interfaces):
            if (iface.addr, iface.port) not in want_keys:
                self.log.log(f"shutting down interface {iface.ifname} {iface.local}")
                self.close(iface)
        self.listening = bool(self.interfaces)
        if self.listening:
            self.log.log("listening for IKE messages")
        return set(self.local_addrs)

    def _open(self, la: LocalAddress, port: int, natt: bool) -> IKEInterface | None:
        parked = self.parked.pop((la.addr, port), None)
        if parked is not None:  # still read by the backend: take it back
            return parked
        fam = socket.AF_INET if la.addr.version == 4 else socket.AF_INET6
        try:  # out of descriptors (hundreds of addresses): this one is not listened on
            s = socket.socket(fam, socket.SOCK_DGRAM)
        except OSError as e:
            self.log.log(f"cannot open UDP interface {la.ifname} {Endpoint(la.addr, port)}: "
                         f"{e.strerror}", "error")
            return None
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setblocking(False)
            self._grow_rcvbuf(s)
            s.bind((str(la.addr), port))
        except OSError as e:
            self.log.log(f"cannot bind UDP interface {la.ifname} {Endpoint(la.addr, port)}: "
                         f"{e.strerror}", "error")
            s.close()
            return None
        iface = IKEInterface(la.ifname, la.addr, port, s, natt)
        assert self.loop is not None and self.backend is not None
        try:
            self.backend.prepare_ike_socket(s)
        except Exception as e:  # noqa: BLE001
            self.log.log(f"backend could not prepare {iface.local}: {e}", "warning")
        if natt:
            local = (str(la.addr), port)

            def deliver(data: bytes, remote: tuple[str, int]) -> None:
                self._deliver_threadsafe(data, local, remote)

            try:
                iface.backend_reads = bool(self.backend.attach_nat_socket(s, local, deliver))
            except Exception as e:  # noqa: BLE001 - a backend failure must not kill us
                self.log.log(f"backend could not attach {local}: {e}", "error")
        if not iface.backend_reads:
            self.loop.add_reader(s.fileno(), self._readable, iface)
        else:
            self._steer(iface)
        return iface

    def _steer(self, iface: IKEInterface) -> None:
        """IKE to a socket the backend reads comes to a socket of the loop instead
        (no hop from the backend's thread, issue 18); without it, as before."""
        assert self.loop is not None
        try:
            s = steer.open_ike_socket(iface.sock, str(iface.addr), iface.port)
        except OSError as e:
            self.log.log(f"IKE on {iface.local} goes through the ESP thread: "
                         f"no reuseport steering ({e.strerror})", "debug")
            return
        self._grow_rcvbuf(s)
        iface.ike_sock, iface.ike_gro = s, steer.gro_enabled(s)
        self.loop.add_reader(s.fileno(), self._readable_ike, iface, s)

    def _grow_rcvbuf(self, s: socket.socket) -> None:
        """A receive buffer that holds a burst of IKE_SA_INIT (issue 13); with
        ike-socket-bufsize= both buffers have that size (as Libreswan: the FORCE options
        pass rmem_max / wmem_max; the kernel doubles the value for its bookkeeping)."""
        sizes = [(SO_RCVBUFFORCE, socket.SO_RCVBUF, self.bufsize or RCVBUF)]
        if self.bufsize:
            sizes.append((SO_SNDBUFFORCE, socket.SO_SNDBUF, self.bufsize))
        for force, plain, size in sizes:
            for opt in (force, plain):  # FORCE passes rmem_max (root)
                try:
                    s.setsockopt(socket.SOL_SOCKET, opt, size)
                    break
                except OSError:
                    continue
        with contextlib.suppress(OSError):
            self.rcvbuf = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def close(self, iface: IKEInterface, final: bool = False) -> None:
        self._routes.clear()
        with contextlib.suppress(ValueError):
            self.interfaces.remove(iface)
        if iface.backend_reads and not final:
            # The backend reads (and sends ESP on) this socket; closing it under its
            # thread would break the data plane.  Park it: IKE from it is dropped.
            self.parked[(iface.addr, iface.port)] = iface
            return
        if self.loop is not None and not iface.backend_reads:
            with contextlib.suppress(Exception):
                self.loop.remove_reader(iface.sock.fileno())
        if iface.ike_sock is not None:
            if self.loop is not None:
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(iface.ike_sock.fileno())
            iface.ike_sock.close()
            iface.ike_sock = None
        iface.sock.close()

    def unlisten(self) -> None:
        for iface in list(self.interfaces):
            self.log.log(f"shutting down interface {iface.ifname} {iface.local}")
            self.close(iface)
        self.listening = False

    def close_all(self) -> None:
        """Daemon exit: close every socket, parked ones too."""
        for iface in list(self.interfaces) + list(self.parked.values()):
            self.close(iface, final=True)
        self.parked.clear()

    # ------------------------------------------------------------- receive
    def _readable(self, iface: IKEInterface) -> None:
        """Drain a batch, then hand it over: existing SAs first (``_drain``).

        The lines the batch logs are written at its end (``PlutoLogger.hold``)."""
        self._reading = True
        recvfrom = iface.sock.recvfrom
        natt = iface.natt
        off = 4 if natt else 0
        log = self.log
        log.hold()
        self.batch_begin()
        try:
            try:
                for _ in range(BATCH):
                    try:
                        data, addr = recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        self.log.log(f"recvfrom on {iface.local} failed: {e.strerror}", "debug")
                        break
                    if self.prefilter is not None and len(data) >= off + 28 and \
                            data[off + 18] == _EXCH_INIT and self._busy() and \
                            self._prefiltered(iface, data, addr):
                        continue
                    if natt:
                        self.datagram(iface, data, addr[0], addr[1])
                    else:  # ``datagram`` of the IKE port, one call less per datagram
                        self._ike_in(data, iface.local, _remote(addr[0], addr[1]))
            finally:
                self._reading = False
            self._drain()
        finally:
            self.batch_end()
            log.release()

    def _readable_ike(self, iface: IKEInterface, sock: socket.socket) -> None:
        """``_readable`` of the socket that IKE to an interface the backend reads is
        steered to (daemon/steer.py): only datagrams with the non-ESP marker come
        here (RFC 3948 §2.2).  With UDP GRO a merged batch comes here by its first
        datagram: the others that are not IKE (ESP of the same flow and size,
        whose SA state the backend's thread owns) are dropped and counted."""
        self._reading = True
        gro = iface.ike_gro
        recvmsg, recvfrom = sock.recvmsg, sock.recvfrom
        log = self.log
        log.hold()
        self.batch_begin()
        try:
            try:
                for _ in range(BATCH):
                    anc: list[tuple[int, int, bytes]] | None = None
                    try:
                        if gro:
                            data, anc, _fl, addr = recvmsg(65535, steer.GRO_CMSG)
                        else:
                            data, addr = recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError as e:
                        log.log(f"recvfrom on {iface.local} failed: {e.strerror}", "debug")
                        break
                    segs = steer.gro_segments(data, anc) if anc else (data,)
                    merged = len(segs) > 1
                    for d in segs:
                        if merged and d[:4] != NON_ESP_MARKER:
                            self.steered_dropped += 1
                            continue
                        if self.prefilter is not None and len(d) >= 32 and \
                                d[22] == _EXCH_INIT and self._busy() and \
                                self._prefiltered(iface, d, addr):
                            continue
                        self.datagram(iface, d, addr[0], addr[1])
            finally:
                self._reading = False
            self._drain()
        finally:
            self.batch_end()
            log.release()

    def _prefiltered(self, iface: IKEInterface, data: bytes, addr: tuple[str, int]) -> bool:
        """Busy: a new IKE_SA_INIT without a valid COOKIE is answered here, nothing kept."""
        off = 4 if iface.natt else 0
        if len(data) < off + 28 or data[off + 18] != _EXCH_INIT or \
                (off and data[:4] != NON_ESP_MARKER):
            return False
        host = addr[0].split("%")[0]
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
        except OSError:
            return False
        assert self.prefilter is not None
        reply = self.prefilter(data[off:] if off else data, packed, addr[1])
        if reply is None:
            return False
        self.prefiltered += 1
        with contextlib.suppress(OSError):
            iface.sock.sendto(NON_ESP_MARKER + reply if off else reply, addr[:2])
        return True

    def datagram(self, iface: IKEInterface, data: bytes, host: str, port: int) -> None:
        """One datagram on ``iface``: keepalive, runt, ESP or IKE (RFC 3948 §2.2, §2.3)."""
        remote = _remote(host, port)
        if iface.natt:
            if data == KEEPALIVE:
                if self.log.debug:
                    self.log.log(f"NAT-T keepalive from {remote}", "debug", debug_class="tmi")
                return
            if len(data) < 4:
                self.log.log(f"dropping {len(data)}-byte runt on {iface.local}", "debug",
                             remote=remote)
                return
            if data[:4] != NON_ESP_MARKER:
                assert self.backend is not None
                try:
                    self.backend.handle_esp(data, (str(iface.addr), iface.port),
                                            (str(remote.addr), remote.port))
                except Exception as e:  # noqa: BLE001
                    self.log.log(f"ESP packet dropped: {e}", "debug", remote=remote)
                return
            data = data[4:]
        self._ike_in(data, iface.local, remote)

    def _deliver_threadsafe(self, data: bytes, local: tuple[str, int],
                            remote: tuple[str, int]) -> None:
        """IKE that a backend's reader thread found on a NAT-T socket (marker stripped).

        Queued for the loop, which takes every datagram queued so far in one turn
        (``_take_handed``): one wake-up of the loop per burst, not per datagram."""
        loop = self.loop
        if loop is None or loop.is_closed():
            return
        with self._handed_lock:
            self._handed.append((bytes(data), local, remote))
            if self._handed_scheduled:
                return
            self._handed_scheduled = True
        try:
            loop.call_soon_threadsafe(self._take_handed)
        except RuntimeError:  # the loop closed meanwhile: the daemon is exiting
            pass

    def _take_handed(self) -> None:
        """The backend's datagrams, as a batch of our own socket's: existing SAs first."""
        with self._handed_lock:
            batch = list(self._handed)
            self._handed.clear()
            self._handed_scheduled = False
        self._reading = True
        log = self.log
        log.hold()  # the batch's lines are written at its end (as in ``_readable``)
        self.batch_begin()
        try:
            try:
                for data, local, remote in batch:
                    loc = self._handed_local.get(local)
                    if loc is None:
                        loc = self._handed_local[local] = Endpoint(
                            ipaddress.ip_address(local[0]), local[1])
                    self._ike_in(data, loc, _remote(remote[0], remote[1]))
            finally:
                self._reading = False
            self._drain()
        finally:
            self.batch_end()
            log.release()

    def _ike_in(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        if self.closed or (self.parked and (local.addr, local.port) in self.parked):
            return
        if len(data) >= 20 and data[18] == _EXCH_INIT and not data[19] & _FLAG_R \
                and not _cookie_first(data):
            if len(self._inits) >= MAX_PENDING_INIT:
                self._inits.popleft()  # the oldest: its sender has retransmitted or gone
                self.init_overflow += 1
            self._inits.append((data, local, remote))
        else:
            self._urgent.append((data, local, remote))
        if not self._reading:
            self._drain()

    def _drain(self) -> None:  # noqa: C901
        """Every message for an existing SA, then new IKE_SA_INITs for ``INIT_BUDGET``."""
        self._drain_scheduled = False
        urgent, inits = self._urgent, self._inits
        while urgent:
            data, local, remote = urgent.popleft()
            if self.closed:
                urgent.clear()
                inits.clear()
                return
            self.on_ike(data, local, remote)  # ``_deliver`` inline: one call less
        if not inits:
            return
        if self.loop is None:  # no loop (unit tests): everything now, in order
            while inits:
                self._deliver(*inits.popleft())
            return
        end = time.monotonic() + INIT_BUDGET
        while inits and not urgent:
            self._deliver(*inits.pop())  # newest first: a backlog never delays a retry
            if time.monotonic() >= end:
                break
        if (inits or urgent) and not self._drain_scheduled and not self.loop.is_closed():
            self._drain_scheduled = True  # after the readers have had their turn
            self.loop.call_soon(self._drain_turn)

    def _drain_turn(self) -> None:
        """``_drain`` in a later turn of the loop, as one batch (lines, timer)."""
        log = self.log
        log.hold()
        self.batch_begin()
        try:
            self._drain()
        finally:
            self.batch_end()
            log.release()

    def _deliver(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        if self.closed:
            self._urgent.clear()
            self._inits.clear()
            return
        self.on_ike(data, local, remote)

    # ------------------------------------------------------------- send
    def send(self, data: bytes, local: Endpoint, remote: Endpoint) -> None:
        """Send an IKE message (or a keepalive) from ``local``; NAT-T adds the marker."""
        # the engine answers with the Endpoint objects a request came with: their
        # socket and sockaddr are looked up once per pair, not per datagram
        key = (id(local), id(remote))
        route = self._routes.get(key)
        if route is not None and route[0] is local and route[1] is remote:
            iface, sockaddr, natt = route[2], route[3], route[4]
        else:
            natt = local.port != self.ikeport
            found = self._find(local, natt)
            if found is None:
                self.log.log(f"no interface for {local} to send {len(data)} bytes to "
                             f"{remote}", "warning", remote=remote, rate_limited=True)
                return
            iface, sockaddr = found, (str(remote.addr), remote.port)
            if len(self._routes) >= REMOTE_CACHE:
                self._routes.clear()
            self._routes[key] = (local, remote, iface, sockaddr, natt)
        payload = (NON_ESP_MARKER + data) if natt and data != KEEPALIVE else data
        try:
            iface.sock.sendto(payload, sockaddr)
        except OSError as e:
            self.log.log(f"sendto {remote} failed: {e.strerror}", "warning",
                         remote=remote, rate_limited=True)

    def send_keepalive(self, local: Endpoint, remote: Endpoint) -> None:
        self.send(KEEPALIVE, local, remote)

    def _find(self, local: Endpoint, natt: bool) -> IKEInterface | None:
        for i in self.interfaces:  # the usual case: the address the request came to
            if i.port == local.port and i.addr == local.addr:
                return i
        same_fam = None
        for i in self.interfaces:
            if i.addr == local.addr and i.port == local.port:
                return i
            if i.natt == natt and i.addr.version == local.addr.version and same_fam is None:
                if not i.addr.is_loopback or local.addr.is_loopback:
                    same_fam = i
        return same_fam
