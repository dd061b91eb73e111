"""The userspace ESP data plane: a TUN device, routes, and ESP-in-UDP (RFC 3948).

Packets the host routes into the TUN device (each remote traffic selector is
routed there, with a source address inside the local selector) are matched
against the outbound policies, encapsulated by the policy's SA
(:mod:`pypluto.kernel.esp`) and sent from the daemon's port-4500 socket to the
peer.  ESP datagrams arriving on that socket are looked up by SPI, checked,
decrypted and written to the TUN device; IKE datagrams (non-ESP marker,
RFC 3948 §2.2) are handed back to the daemon and NAT keepalives (a single
0xFF byte, RFC 3948 §2.3) are dropped.  SAs without UDP encapsulation use a
raw IP protocol 50 socket.

Performance (measured on the 2-core build machine, see bench/esp_throughput.py):

* Two threads carry packets, one per direction (``threads="split"``), each
  blocking in ``poll`` and then draining its descriptor in batches.
  cryptography's AEAD calls hold the GIL (two threads sealing 1400-byte
  packets reach 569k/s together, one alone 583k/s), so more threads would not
  add crypto throughput; ``threads="single"`` serves both directions from one.
* TUN offload (IFF_VNET_HDR; no TSO since the kernel segments and sums in C
  for less CPU than :mod:`.offload` in Python, see :func:`.tun.open_tun`):
  MSS-sized packets read back to back for one peer leave in one ``sendmsg`` with
  UDP_SEGMENT (UDP GSO); UDP_GRO on the socket returns many ESP datagrams per
  read; in-order TCP segments are merged again before the TUN write.  On
  the wire every datagram is an ordinary RFC 3948 ESP-in-UDP packet, so
  peers without any of this (strongSwan's kernel-libipsec) interoperate.
  Together these took TCP through the plane from about 100 to 270-450 Mbit/s
  on the shared machine (strongSwan's kernel-libipsec in the same runs:
  130-200 Mbit/s), at 28 us of plane CPU per packet against its 68 us.
* Outbound flows are cached by address pair (by addresses, protocol and ports
  for port-limited policies); inbound SAs are a dict by SPI;
  receive buffers are preallocated and read with ``recv*_into``.
* Two pyplutos without a NAT negotiate plain ESP (IP protocol 50, raw socket,
  no GSO/GRO) and ESN: the AES-GCM/ChaCha20 fast paths take ESN too, and the
  inner packets of one raw-socket drain go to the TUN writer together (TCP
  segments merged), which halved the CPU per TCP packet of a negotiated pair
  (bench/esp_daemons.py).  The writer queues are short and block the reader
  when full, so that packets wait in the kernel's queues, which TCP sees.
* Plain ESP has no GSO/GRO: the raw socket sends and receives batches with
  ``sendmmsg``/``recvmmsg`` (:mod:`.mmsg`).  Its receive queue has room for
  bursts (:mod:`.rxqueue`: four times the system default, back to the default
  when more than that stays queued for 20 ms).  The peer sends up to 64 packets
  per call, and a default-sized queue (about 90 full-sized packets) dropped
  half of a UDP flood and one TCP segment in seven while the receiving thread
  waited for a CPU; with the room, UDP 1,400-byte datagrams received rose by
  60-80% and TCP by 30-50%, CPU per TCP packet fell by a third
  (bench/esp_daemons.py, medians of alternating runs on the loaded 2-core
  machine), at the cost of a longer ping under TCP load (medians 4.1 to 5.9 ms
  and 4.0 to 7.2 ms in two sets of runs; ping loss fell from about 5% to 1.5%).
* Decrypted UDP datagrams of one flow (same addresses, ports, TOS, TTL, one
  payload size) go to the TUN device as one GSO_UDP_L4 super-packet
  (:func:`.offload.coalesce`); the kernel cuts it again into the same datagrams
  for the receiving socket, so one write carries up to 64 of them where each
  cost a write before (a kernel that refuses such writes gets them one by one).
  IPv4 fragments of one datagram that arrive next to each other, complete and
  in order (a 1,400-byte UDP datagram over the 1,400-byte MTU is two), are
  joined first (:func:`.offload.reassemble`, RFC 791 §3.2), so those merge too.
* Runs of packets for one SA are encrypted and decrypted per batch
  (``encap_batch`` on a TUN drain, ``decap_batch`` on a receive batch: the
  replay window and the counters in locals, every RFC 4303 §3.4 check per
  packet).  On the UDP 64-byte row of bench/esp_daemons.py these took the CPU
  per packet of both daemons from about 28 to about 24 us on the shared machine.
* The TUN device has a second queue for sparse traffic (ICMP, small UDP;
  :func:`.tun.attach_queue`), read beside the bulk queue, so a ping does not
  wait behind a TCP flow's queue in the device.  Its packets are sent at once
  only while that overtakes fewer than 32 packets (the minimum replay window,
  RFC 4303 §3.4.3) already encrypted and waiting in the send writer, else
  behind them (:meth:`UserspaceBackend._send_prio`); the send writer holds one
  batch.  Sent ahead of up to 512 queued TCP segments, each ping had cost the
  flow about ten segments at the peer (ESN: integrity failures).  On receive,
  decrypted ICMP goes to the TUN device before the bulk packets of its drain
  (:func:`icmp_first`), not behind the TUN writer's queue: ping under TCP load
  3.6-3.9 ms before, 2.5-2.8 ms after, both still with the overtaking.
  The sparse queue is polled first and looked at inside every bulk drain
  before a run is encrypted (:meth:`UserspaceBackend._sparse_first`), so a ping
  takes sequence numbers below the run's and overtakes nothing: packets
  captured in the ping row showed 2.5 ms at the median (mean 4.3) between the
  sender's TUN device and the wire, most of the round trip (the receiving end's
  raw socket queue 0.7 ms, the way back 0.5 ms); the row went from 6.9 to
  4.5 ms (medians of 4 alternating runs on the loaded machine).  While sparse
  packets keep coming, bulk runs are at most 31 packets, so the ping never
  waits for the writer's batch either: 6.4 to 2.2 ms against main.

* A negotiated pair with ``encapsulation=yes`` (ESP-in-UDP, UDP GSO on the veth,
  GRO on the socket) looked twice as costly as plain ESP on the UDP rows of
  bench/esp_daemons.py (CPU per RECEIVED datagram).  Per datagram the pair carried
  it is cheaper: 11.5-12.8 us for both daemons at 64 bytes against 17.3-20.9 us
  plain, 40-42 against 45-47 us at 1,400 bytes (the receiving namespace's
  Udp:RcvbufErrors added to what iperf3 received).  It carries more than the
  receiving iperf3 reads: 30-70 thousand 64-byte datagrams a second were dropped
  at iperf3's full socket buffer (1-2 thousand with plain ESP), after both daemons
  had paid for them.  The GRO path also decrypted datagram by datagram; runs for
  one SPI now go through ``decap_batch`` (:meth:`UserspaceBackend._gro_batch`):
  the receiving daemon's CPU per carried 64-byte datagram went from 6.0-6.4 to
  5.4-5.9 us and iperf3 received 30-39 instead of 18-27 thousand/s (4 runs each,
  alternating with main).
* Where the UDP rows of bench/esp_daemons.py lose datagrams (plain ESP pair, 64-byte
  datagrams, 2-core machine shared with other benchmarks): the sending iperf3 writes
  300-900 thousand/s into the TUN device and most are dropped at its queue
  (tx_dropped) while the plane reads 50-150 thousand/s, one ``read`` each; the
  threads of both daemons were runnable but waiting for a CPU about as long as they
  ran (/proc schedstat), so CPU per packet anywhere in the pair is what counts.  At
  lower load the receiver drops too: 20-50 thousand/s at the raw socket and 5-30
  thousand/s at iperf3's socket.  Per packet, user time: sender TUN thread about 2 us
  (read loop 0.6, encap_batch 1.1 of which AES-GCM 0.5), send writer 0.4 (was 0.6
  before :meth:`mmsg.Batch.send` filled its iovecs in C), receiver 2.1-2.4 plus the
  TUN writer 0.6.  Tried and not kept (alternating runs against main or HEAD, load
  3-5): no writer threads (``writer_threads=False``: the sender's CPU per packet fell
  by about 1.3 us, but TCP 4 streams 436/352/419 against 747/502/435 Mbit/s and UDP
  1,400 bytes 10.3/18.5/21.8 against 28.0/26.3/19.7 thousand/s); TUN writes run by
  the receiving thread whenever its writer is idle (TCP 1 stream 628/525/603/541
  against 715/713/676/765 Mbit/s, UDP 1,400 19.0-24.1 against 21.3-30.8 thousand/s,
  UDP 64 no change); a send writer holding 4 batches instead of 1 (UDP 64
  59.3/52.5 against 44.8/65.8 thousand/s: no visible change).

The plane is four parts: the SA table (:mod:`.sa_table`), the policy lookup
(:mod:`.selectors`, pure functions), the routes and rules that capture the
protected traffic (:mod:`.routes`) and the packet threads (:mod:`.workers`);
this module joins them and holds the per-packet paths.  The control-plane
methods (``add_sa`` ...) run in the daemon's thread; the packet threads only
read dictionaries that those methods replace or update atomically.  Limits (SAExpire) are reported from the packet threads through
``on_expire``.  Time-based lifetimes are left to the daemon's timers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from pypluto.kernel import ah, esp
from pypluto.kernel.ah_sockets import AHSockets
from pypluto.kernel.base import BackendError, KernelBackend
from pypluto.kernel.userspace import iproute, mmsg, offload
from pypluto.kernel.userspace.inbound_filter import InboundFilter
from pypluto.kernel.userspace.offload import SOL_UDP, UDP_GRO
from pypluto.kernel.userspace.routes import DEFAULT_MARK, SO_MARK, Routes
from pypluto.kernel.userspace.rxqueue import RxQueue
from pypluto.kernel.userspace.sa_table import SATable
from pypluto.kernel.userspace.selectors import (
    ICMP_OR_EXT,
    OutboundPolicies,
    addr_key,
    frag_key,
    icmp_error_quote,
    inbound_check,
    is_any_proto_ports,
    port_key,
)
from pypluto.kernel.userspace.traps import HoldQueue, icmp_unreachable
from pypluto.kernel.userspace.tun import attach_queue, is_sparse, open_tun
from pypluto.kernel.userspace.workers import Worker, Writer
from pypluto.kernel.userspace.xifaces import IpsecInterface, IpsecInterfaces
from pypluto.params import (
    IPAddress,
    PolicyParams,
    SAExpire,
    SAParams,
    SAStats,
)

log = logging.getLogger("pypluto.kernel.userspace")

DEFAULT_IFNAME = "pluto0"
DEFAULT_TABLE = 4500
DEFAULT_RULE_PRIORITY = 4500
DEFAULT_MTU = 1400  # room for IPv4+UDP+ESP+IV+pad+ICV (about 70 bytes) inside 1500
IPPROTO_ESP = 50
_FLOW_CACHE_MAX = 65536
# bytes per TUN read, without the virtio_net_hdr: room for any MTU up to 16 KiB (jumbo
# frames too).  A read that fills it may have cut a packet (the TUN device truncates
# to the buffer): that packet is dropped and later reads take 64 KiB (see _tun_cut).
# A 64 KiB read buffer cost about 0.4 us per packet more than a 16 KiB one: each
# read allocates the whole size and shrinks it (measured on a datagram socket:
# 0.97 against 0.59 us per read).
_TUN_READ = 16384
_PATH_MTU_TTL = 60.0  # seconds a path MTU to a peer is reused (UserspaceBackend._path_mtu)
IP_MTU = 14  # getsockopt on a connected socket: the path MTU (Linux, ip(7) / ipv6(7))
IPV6_MTU = 24
_TUN_READ_MAX = 65536
# seconds an inbound SA still decrypts after its Child SA was rekeyed (retire_sa), as
# strongSwan's charon.delete_rekeyed_delay (5 s by default)
RETIRE_GRACE = 5.0
# the largest inbound replay window (RFC 4303 §3.4.3, a bitmap of that many bits): the
# XFRM backend's limit too (the kernel's XFRMA_REPLAY_ESN_VAL bitmap), see check_protectable
REPLAY_WINDOW_MAX = 4096
_SPI = struct.Struct("!I")

Deliver = Callable[[bytes, tuple[str, int]], None]
Sender = Callable[[bytes, tuple[str, int]], int]
# outbound SA, its send function, the peer's (address, port), the socket, UDP GSO usable
_Flow = tuple[esp.OutboundSA | ah.OutboundAH, Sender, tuple[str, int], socket.socket, bool]
UDP_SEGMENT = 103  # UDP GSO: one sendmsg, many datagrams of one size (Linux 4.18)
_GSO_BYTES = 65000  # below the 65507-byte UDP limit
_GSO_SEGS = 64
_U16 = struct.Struct("=H")
# packets a sparse-queue send may overtake plus its own: the minimum replay window a
# receiver must support (RFC 4303 §3.4.3), see UserspaceBackend._send_prio
_OVERTAKE_MAX = 32
# batches the send writer holds (queued or in progress): one, so that a ping waits behind
# at most one batch and overtakes none beyond the peer's replay window (_send_prio); 8
# gave a ping under TCP load of 8.7-10.7 ms, 2 gave 4.9-7.2, 1 gave 5.1-5.7 at no less
# TCP throughput (bench/esp_daemons.py, alternating runs on the loaded 2-core machine)
_SEND_LIMIT = 1
# while sparse traffic flows (a sparse packet read in the last _SPARSE_HOLD seconds), a
# bulk drain encrypts and queues runs of at most this many packets, so that the send
# writer never holds more and a sparse packet can leave at once inside the peer's window
# (UserspaceBackend._sparse_first); else runs of up to _GSO_SEGS
_RUN_SHORT = _OVERTAKE_MAX - 1
_SPARSE_HOLD = 0.1
_INLINE_MAX = 2  # batches this small are written by the reading thread when its writer is idle


_ICMP_PROTOS = frozenset((1, 58))


def _icmp_error(pkt: bytes) -> bool:
    """An ICMP or ICMPv6 error read from the TUN device: its SA is the one of the packet it
    quotes (RFC 4301 §6.2, :meth:`OutboundPolicies.lookup`), whatever its addresses, so
    the flow caches do not serve it.  One protocol test for any other packet (an IPv6
    packet with extension headers is walked: an error may hide behind them)."""
    return pkt[9 if pkt[0] < 0x60 else 6] in ICMP_OR_EXT and icmp_error_quote(pkt)[0]


def icmp_first(pkts: list[bytes], write: Callable[[bytes], None]) -> list[bytes]:
    """Write the ICMP and ICMPv6 packets of ``pkts`` (decrypted inner packets) with
    ``write`` now; return the others, in their order, for the writer thread.

    A ping (or an ICMP error) that arrives in one receive batch with bulk TCP
    segments would otherwise wait behind up to ``Writer.LIMIT`` queued batches of
    merged TCP writes.  The packets were decrypted and passed every RFC 4303 §3.4
    check (replay window included) in their arrival order; only their hand-off to
    the TUN device changes, and an ICMP message is a flow of its own, so no flow
    sees its packets reordered (an ICMP error about a TCP flow overtaking that
    flow's segments is harmless: RFC 1122 §4.2.3.9 makes such errors advisory).
    """
    icmp = [len(p) > 9 and p[9 if p[0] < 0x60 else 6] in _ICMP_PROTOS for p in pkts]
    if not any(icmp):
        return pkts
    rest = []
    for p, first in zip(pkts, icmp, strict=True):
        if first:
            write(p)
        else:
            rest.append(p)
    return rest


@dataclass
class PlaneCounters:
    """Packets the plane dropped before any SA saw them, and other global events."""

    no_policy: int = 0  # TUN packet matching no outbound policy / no SA
    shunted: int = 0  # TUN packets a drop/reject shunt discarded
    clear_errors: int = 0  # ICMP errors about no protected flow, sent in the clear
    unknown_spi: int = 0  # ESP for an SPI we do not have (RFC 4303 §3.4.2)
    malformed: int = 0  # datagram too short to be ESP
    keepalives: int = 0  # NAT keepalives received (RFC 3948 §2.3)
    send_errors: int = 0
    tun_write_errors: int = 0
    ike_delivered: int = 0
    tun_reads: int = 0  # read() calls on the TUN device that returned a packet
    tun_segments: int = 0  # packets those reads carried (more with TCP segmentation offload)
    udp_reads: int = 0  # receive calls on the ESP-in-UDP sockets
    udp_datagrams: int = 0  # datagrams they carried (more with UDP GRO)
    tun_writes: int = 0  # merged writes to the TUN device (TCP receive offload)
    tun_oversize: int = 0  # TUN packets cut by a read buffer below the device MTU (it then grows)


class UserspaceBackend(KernelBackend):
    """ESP over TUN, like strongSwan's kernel-libipsec (``--use-userspace``)."""

    _tun_read = _TUN_READ  # bytes per TUN / ipsecN read; _tun_cut raises it per plane
    _reaper: threading.Timer | None = None  # drops retired SAs (retire_sa)

    name = "userspace"
    _sparse_until = 0.0  # monotonic time until which bulk runs stay short (_RUN_SHORT)
    supports_ipsec_interface = True  # ipsec-interface=N: a TUN device ipsecN (.xifaces)
    # netfilter drop of cleartext matching an inbound policy (.inbound_filter); with
    # routes not managed (an object built for tests) there is none
    _clear: InboundFilter | None = None
    _ike_ports: frozenset[int] = frozenset()  # local ports of the daemon's IKE sockets
    # marked raw sockets (IPPROTO_RAW) by IP version: ICMP errors that the capture rules
    # took into the TUN device and no policy covers leave by them (_send_clear)
    _clear_out: Mapping[int, socket.socket] = {}

    def __init__(self, ifname: str = DEFAULT_IFNAME, *, table: int = DEFAULT_TABLE,
                 rule_priority: int = DEFAULT_RULE_PRIORITY, mtu: int = DEFAULT_MTU,
                 manage_routes: bool = True, threads: str = "split",
                 offload: bool = True, udp_gso: bool | None = None,
                 writer_threads: bool = True, mark: int = DEFAULT_MARK) -> None:
        self.table = table
        self.rule_priority = rule_priority
        self.manage_routes = manage_routes
        self.mark = mark
        self.counters = PlaneCounters()
        self._lock = threading.RLock()
        self._stop = False
        self._sas = SATable()
        self._policies: dict[tuple[str, str, str, int], PolicyParams] = {}
        self._out = OutboundPolicies()
        self._flow: dict[bytes, _Flow] = {}
        self.holds = HoldQueue()  # packets caught by trap policies (auto=route)
        self._pflow: dict[bytes, _Flow] = {}  # by addresses, protocol and ports (port_key)
        self._socks: list[tuple[tuple[str, int], socket.socket, Deliver]] = []
        self._raw: dict[int, socket.socket] = {}
        self._clear_out = {}
        self._rxq: dict[int, RxQueue] = {}  # id(raw socket) -> its receive-queue limit
        self._ah: dict[int, AHSockets] = {}  # AH (IP protocol 51) by IP version
        self._routes = Routes(ifname, table, rule_priority, mark)
        self._pmtu: dict[tuple[str, str], tuple[int, float]] = {}  # (src, dst) -> (MTU, when)
        # ipsec-interface=N conns: their own TUN device ipsecN each (.xifaces); inbound
        # SPIs of their SAs -> the device their decrypted packets come out of
        self.mtu = mtu  # of the TUN device (and the ipsecN devices)
        self._xifs = IpsecInterfaces(mtu=mtu)
        self._xin: dict[int, IpsecInterface] = {}
        if manage_routes:
            self._routes.remove_all()  # leftovers of an earlier, crashed run
        self._tun_fd, self.ifname, self.offload = open_tun(ifname, offload, multi_queue=True)
        # a second queue for sparse traffic (ping, DNS): see tun.attach_queue
        prio = attach_queue(self.ifname, self.offload)
        self._tun_prio = self._tun_fd if prio is None else prio
        self._routes.ifname = self.ifname
        # UDP GSO/GRO on the ESP-in-UDP sockets, by default along with TUN offload
        self._gso = offload if udp_gso is None else udp_gso
        # decrypted UDP datagrams of one flow go to the TUN device merged (offload.coalesce)
        self._uso = offload
        try:
            iproute.ip("link", "set", "dev", self.ifname, "mtu", str(mtu), "up")
        except BackendError:
            self._close_tun()
            raise
        _rp_filter_off(self.ifname)
        if manage_routes:  # after the TUN device is ours: its name keys the chain
            self._clear = InboundFilter(self.ifname, self._clear_state)
        self._workers: list[Worker] = []
        if threads == "split":  # one thread per direction
            self._workers = [Worker(self, tun=True, net=False), Worker(self, tun=False, net=True)]
        elif threads == "single":  # one thread for both: no GIL hand-offs between them
            self._workers = [Worker(self, tun=True, net=True)]
        else:
            self._close_tun()
            raise BackendError(f"threads must be 'single' or 'split', not {threads!r}")
        # Writers: the batches of a super-packet leave through sendmsg / writev in threads
        # of their own, so the kernel's share of the work (UDP GSO, the veth, TCP receive)
        # runs without the GIL while the reading thread encrypts the next batch.
        self._txq: Writer | None = None
        self._tunq: Writer | None = None
        if offload and writer_threads:
            self._txq = Writer(lambda item: self._send_many(*item), "esp-send", _SEND_LIMIT)
            self._tunq = Writer(self._to_tun_many_now, "esp-tunw")
        for w in self._workers:
            w.start()
        log.info("userspace ESP plane on TUN device %s (table %d, %s threads)", self.ifname,
                 table, threads)

    # --- what the packet threads ask (workers.PacketSource) ----------------------------

    @property
    def stopping(self) -> bool:
        return self._stop

    def poll_handlers(self, tun: bool, net: bool, batch: int
                      ) -> dict[int, Callable[[], None]]:
        """Descriptor -> drain function, for a worker's poll set."""
        h: dict[int, Callable[[], None]] = {}
        if tun:
            # the sparse queue first: a worker handles the ready descriptors in this order
            # (poll reports them in the order they were registered), so a ping that
            # arrived during a bulk drain is not left behind the next one as well
            if self._tun_prio != self._tun_fd:
                h[self._tun_prio] = lambda: self._drain_tun(batch, True)
            h[self._tun_fd] = lambda: self._drain_tun(batch)
            with self._lock:
                xifs = list(self._xifs.by_id.values())
            for x in xifs:
                h[x.fd] = lambda x=x: self._drain_xif(x, batch)  # type: ignore[misc]
        if net:
            with self._lock:  # forget sockets the daemon closed
                self._socks = [x for x in self._socks if x[1].fileno() >= 0]
                socks = list(self._socks)
                raws = list(self._raw.items())
                ahs = list(self._ah.values())
            for _local, sock, deliver in socks:
                mv = memoryview(bytearray(65536))
                h[sock.fileno()] = (lambda s=sock, d=deliver, m=mv:  # type: ignore[misc]
                                    self._drain_udp(s, d, m, batch))
            for version, raw in raws:
                mv = memoryview(bytearray(65536))
                rq = self._rxq.get(id(raw))
                if rq is None or rq.sock is not raw:
                    rq = self._rxq[id(raw)] = RxQueue(raw)
                h[raw.fileno()] = (lambda r=raw, v=version, m=mv, q=rq:  # type: ignore[misc]
                                   self._drain_raw(r, v, m, batch, q))
            for ahs_ in ahs:
                mv = memoryview(bytearray(65536 + 40))
                h[ahs_.fileno()] = (lambda a=ahs_, m=mv:  # type: ignore[misc]
                                    self._drain_ah(a, m, batch))
        return h

    # --- packet paths ----------------------------------------------------------------

    def _drain_tun(self, batch: int, prio: bool = False) -> None:
        """Outbound: TUN -> policy -> ESP -> UDP (RFC 4303 §3.1, RFC 3948 §2.1).

        ``prio``: the sparse-traffic queue (tun.attach_queue), whose packets are
        sent by this thread at once instead of queueing behind bulk batches."""
        fd = self._tun_prio if prio else self._tun_fd
        if self.offload:
            self._drain_tun_offload(batch, fd, prio)
            return
        read = os.read
        c = self.counters
        size = self._tun_read
        for _ in range(batch):
            try:
                pkt = read(fd, size)
            except OSError:
                return
            if len(pkt) < 20:
                continue
            if len(pkt) >= size:
                size = self._tun_cut()
                continue
            key = pkt[12:20] if pkt[0] >> 4 == 4 else pkt[8:40]
            ent = self._flow.get(key)
            if ent is None or _icmp_error(pkt):
                ent = self._resolve(pkt, key)
                if ent is None:
                    c.no_policy += 1
                    continue
            wire = ent[0].encap(pkt)
            if wire is None:
                continue
            try:
                ent[1](wire, ent[2])
            except BlockingIOError:
                self._send_slow(ent[1], wire, ent[2])
            except OSError:
                c.send_errors += 1

    def _drain_tun_offload(self, batch: int, fd: int, prio: bool) -> None:
        """The same with a virtio_net_hdr on each read: TCP super-packets are segmented
        here, and the ESP packets for one peer leave together in UDP GSO sends (those
        of one super-packet, and single packets read back to back).

        The inner packets of a run for one flow entry are encrypted together
        (:meth:`esp.OutboundSA.encap_batch`: the SA's counters once per run).

        A bulk drain looks at the sparse queue before it encrypts each run
        (:meth:`_sparse_first`), so a ping read meanwhile gets its sequence numbers
        before the run's and leaves ahead of it, overtaking nothing."""
        read = os.read
        c = self.counters
        hlen = offload.VNET_HDR_LEN
        size = self._tun_read + hlen
        send = self._send_prio if prio else self._queue_send
        peek = not prio and self._tun_prio != fd
        run_max = _RUN_SHORT if peek and time.monotonic() < self._sparse_until else _GSO_SEGS
        unpack = offload.VNET_HDR.unpack_from
        pend: list[bytes] = []
        pend_ent: _Flow | None = None
        reads = segments = 0
        try:
            for _ in range(batch):
                try:
                    data = read(fd, size)
                except OSError:
                    return
                if len(data) < hlen + 20:
                    continue
                if len(data) >= size:
                    size = self._tun_cut() + hlen
                    continue
                reads += 1
                if data[1] & 0x7F or data[0] & offload.F_NEEDS_CSUM:
                    flags, gso_type, _hl, gso_size, cstart, coff = unpack(data)
                    if gso_type & 0x7F:
                        segs = offload.segment_tcp(data[hlen:], gso_size)
                    else:
                        segs = [offload.finish_partial(data[hlen:], cstart, coff)]
                    if not segs:
                        continue
                    pkt = segs[0]
                else:
                    pkt = data[hlen:]
                    segs = None
                segments += 1 if segs is None else len(segs)
                key = pkt[12:20] if pkt[0] >> 4 == 4 else pkt[8:40]
                ent = self._flow.get(key)
                if ent is None or _icmp_error(pkt):
                    ent = self._resolve(pkt, key)
                    if ent is None:
                        c.no_policy += 1 if segs is None else len(segs)
                        continue
                if ent is not pend_ent or len(pend) >= run_max:
                    if pend_ent is not None:
                        if peek:
                            self._sparse_first(batch)
                        send(pend_ent, pend_ent[0].encap_batch(pend))
                    pend_ent, pend = ent, []
                if segs is None:
                    pend.append(pkt)
                else:
                    pend += segs
        finally:
            c.tun_reads += reads
            c.tun_segments += segments
            if prio and reads and fd != self._tun_fd:
                self._sparse_until = time.monotonic() + _SPARSE_HOLD
            if pend_ent is not None and pend:
                if peek:
                    self._sparse_first(batch)
                wires = pend_ent[0].encap_batch(pend)
                if wires:
                    send(pend_ent, wires)

    def _tun_cut(self) -> int:
        """A TUN (or ipsecN) read filled its buffer: the packet may be cut, so it is
        dropped (counted in ``tun_oversize``) and reads take the largest size from
        now on (an MTU above 16 KiB).  Returns the new size."""
        self.counters.tun_oversize += 1
        if self._tun_read < _TUN_READ_MAX:
            self._tun_read = _TUN_READ_MAX
            log.info("TUN read buffer raised to %d bytes: a packet filled the %d-byte one"
                     " (MTU above it) and was dropped", _TUN_READ_MAX, _TUN_READ)
        return self._tun_read

    def _sparse_first(self, batch: int) -> None:
        """Drain the sparse queue (ping, DNS) in the middle of a bulk drain, before its
        next run is encrypted.

        Without this a ping that reached the device while a bulk drain ran waited for
        the rest of it and for the send writer's batches (the ping row of
        bench/esp_daemons.py: about 2.5 ms at the median from the sender's TUN device
        to the wire, most of the round trip).  The sparse packets are encrypted here
        before the bulk run, so their sequence numbers are lower and they go to the
        send writer first (:meth:`_send_prio`): no packet of the SA overtakes another
        (RFC 4303 §3.3.3 sequence numbers, §3.4.3 the peer's replay window).  The
        cost is one read that finds the queue empty per run of up to 64 packets.

        While sparse packets keep coming (one in the last ``_SPARSE_HOLD`` seconds)
        the bulk runs are at most ``_RUN_SHORT`` (31) packets, so the send writer
        (one batch, ``_SEND_LIMIT``) holds fewer than the minimum replay window and
        the sparse packet leaves at once instead of after the writer's batch: ping
        under TCP load 4.1-4.8 ms with runs of 64, 2.2-2.6 ms with runs of 31, TCP
        not lower (3 alternating runs each).  Short runs always cost UDP 1,400-byte
        datagrams about a quarter of their rate (more hand-offs to the writer), hence
        only while sparse traffic flows.
        """
        self._drain_tun_offload(batch, self._tun_prio, True)

    def _send_prio(self, ent: _Flow, wires: list[bytes]) -> None:
        """Send the ESP packets of a sparse-queue drain (ping, DNS): at once, ahead of
        the send writer's queue, when that overtakes too few packets to leave the
        peer's replay window, else behind the queue.

        The packets in the writer's queue were encrypted earlier and carry lower
        sequence numbers.  A receiver drops a packet more than its window behind the
        highest it has seen (RFC 4303 §3.4.3; with ESN it infers the next 2^32
        block for it and fails the ICV, Appendix A2.2), and we do not know the
        peer's window, only its minimum: 32 (§3.4.3).  So the newest packet sent
        here may be at most ``_OVERTAKE_MAX`` - 1 ahead of the oldest it overtakes.
        Sending a ping ahead of up to 512 queued TCP segments cost the TCP flow
        about ten segments per ping (integrity failures at the peer) under the
        ping-under-load row of bench/esp_daemons.py.
        """
        q = self._txq
        if q is None or q.backlog + len(wires) <= _OVERTAKE_MAX:
            self._send_many(ent, wires)
        else:
            self._queue_send(ent, wires)

    def _queue_send(self, ent: _Flow, wires: list[bytes]) -> None:
        q = self._txq
        n = len(wires)
        if q is None:
            self._send_many(ent, wires)
        elif not (q.run_or_put((ent, wires), n) if n <= _INLINE_MAX
                  else q.put((ent, wires), n)):
            self.counters.send_errors += n

    def _send_many(self, ent: _Flow, wires: list[bytes]) -> None:
        if ent[4] and len(wires) > 1:
            self._send_gso(ent, wires)
            return
        if len(wires) > 1 and mmsg.AVAILABLE:
            self._send_mmsg(ent, wires)
            return
        for w in wires:
            try:
                ent[1](w, ent[2])
            except BlockingIOError:
                self._send_slow(ent[1], w, ent[2])
            except OSError:
                self.counters.send_errors += 1

    def _send_gso(self, ent: _Flow, wires: list[bytes]) -> None:
        """Send equal-sized ESP packets (the last may be shorter) with UDP_SEGMENT.

        Packets of alternating sizes (an inner IPv4 datagram over the TUN MTU is two
        fragments, so a 1,400-byte UDP flood is a full-sized and a small ESP packet in
        turn) leave as pairs, one ``sendmsg`` each.  Tried and not kept: such short
        runs sent together by ``sendmmsg``: UDP 1,400-byte datagrams received were no
        higher (bench/esp_daemons.py with encapsulation=yes, medians of 3 runs against
        main in the same minutes: 13.2 against 11.7, then 15.3 / 13.5 against 17.1 /
        16.5 thousand/s); a likely cause, not verified: sent one by one, a pair no
        longer reaches the receiving socket as one GSO packet, which its UDP GRO
        returned in one read."""
        sock, addr = ent[3], ent[2]
        i, n = 0, len(wires)
        while i < n:
            size = len(wires[i])
            k = min(_GSO_SEGS, max(1, _GSO_BYTES // size))
            j = i + 1
            while j < n and j - i < k and len(wires[j]) == size:
                j += 1
            if j < n and j - i < k and len(wires[j]) < size:
                j += 1  # a shorter last datagram may end the batch
            chunk = wires[i:j]
            try:
                if len(chunk) == 1:
                    sock.sendto(chunk[0], addr)
                else:
                    sock.sendmsg([b"".join(chunk)],
                                 [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))], 0, addr)
            except BlockingIOError:
                for w in chunk:
                    self._send_slow(ent[1], w, addr)
            except OSError:
                self._gso = False  # not supported here: plain sends from now on
                self._invalidate()
                for w in chunk:
                    try:
                        sock.sendto(w, addr)
                    except OSError:
                        self.counters.send_errors += 1
            i = j

    def _send_mmsg(self, ent: _Flow, wires: list[bytes]) -> None:
        """Several datagrams per sendmmsg (plain ESP on the raw socket has no UDP GSO)."""
        b = mmsg.batch()
        fd = ent[3].fileno()
        name = mmsg.sockaddr(ent[2])
        i, n = 0, len(wires)
        while i < n:
            chunk = wires[i:i + mmsg.SLOTS]
            if max(map(len, chunk)) > mmsg.SLOT:
                k = 0
            else:
                try:
                    k = b.send(fd, name, chunk)
                except BlockingIOError:
                    k = 0
                except OSError:
                    self.counters.send_errors += len(chunk)
                    k = len(chunk)
            if k <= 0:  # the socket buffer is full, or a packet too big for a slot
                self._send_slow(ent[1], wires[i], ent[2])
                k = 1
            i += k

    def _send_slow(self, send: Sender, wire: bytes, addr: tuple[str, int]) -> None:
        """The socket buffer is full: wait briefly for room, then try once more."""
        try:
            sock = getattr(send, "__self__", None)
            if isinstance(sock, socket.socket):
                select.select([], [sock], [], 0.05)
            send(wire, addr)
        except OSError:
            self.counters.send_errors += 1

    def _drain_udp(self, sock: socket.socket, deliver: Deliver | None, mv: memoryview,
                   batch: int) -> None:
        """Inbound: UDP 4500 -> IKE to the daemon, ESP by SPI -> TUN (RFC 3948 §2.2-2.3).

        With UDP GRO one read may return several datagrams of one size back to
        back (the control message says the size); their inner TCP segments are
        merged again before they go to the TUN device.
        """
        gro = self._gso
        recv = sock.recvmsg_into if gro else None
        recvfrom = sock.recvfrom_into
        one = self._udp_datagram
        bufs = [mv]
        c = self.counters
        out: list[bytes] = []  # inner packets of this drain: to the TUN device together
        try:
            for _ in range(batch):
                try:
                    if recv is not None:
                        n, anc, _fl, addr = recv(bufs, 64)
                        c.udp_reads += 1
                        seg = offload.gro_size(anc)
                        if seg and n > seg:
                            c.udp_datagrams += (n + seg - 1) // seg
                            self._gro_batch(mv, n, seg, addr, deliver, out)
                            continue
                    else:
                        n, addr = recvfrom(mv)
                        c.udp_reads += 1
                except BlockingIOError:
                    return
                except OSError:
                    if sock.fileno() < 0:  # the daemon closed it: stop polling its old fd
                        self.detach_nat_socket(sock)
                    return
                c.udp_datagrams += 1
                p = one(mv[:n], addr, deliver)
                if p is not None:
                    out.append(p)
        finally:
            if out:
                if self._tunq is None and len(out) == 1:
                    self._to_tun(out[0])
                else:
                    self._to_tun_many(out)  # keeps the order of queued writes

    def _gro_batch(self, mv: memoryview, n: int, seg: int, addr: tuple[str, int],
                   deliver: Deliver | None, out: list[bytes]) -> None:
        """The datagrams of one UDP GRO read (``seg`` bytes each, the last may be
        shorter): runs of ESP for one SPI are decrypted together
        (:meth:`esp.InboundSA.decap_batch`, as on the raw-socket path), anything
        else (IKE, a keepalive, a runt) goes through :meth:`_udp_datagram`.

        Decrypting datagram by datagram (:meth:`esp.InboundSA.decap` each, with
        a slice and a lookup per datagram) cost the receiving daemon more Python per
        packet on this path than on plain ESP.  Every RFC 4303 §3.4 check is still
        made per packet, in arrival order; ``mv`` is reused by the next read, so each
        run is decrypted before this returns.
        """
        by_spi = self._sas.by_spi
        unpack = _SPI.unpack_from
        run: list[memoryview] = []
        run_spi = -1
        run_sa = None
        for off in range(0, n, seg):
            end = off + seg if off + seg < n else n
            spi = unpack(mv, off)[0] if end - off >= 8 else 0
            if spi and spi == run_spi:
                run.append(mv[off:end])
                continue
            if run:
                self._decap_run(run_sa, run_spi, run, out)
                run = []
            run_spi = -1
            run_sa = by_spi.get(spi) if spi else None
            if run_sa is not None:
                run_spi = spi
                run.append(mv[off:end])
                continue
            x = self._udp_datagram(mv[off:end], addr, deliver)  # IKE, keepalive, unknown SPI
            if x is not None:
                out.append(x)
        if run:
            self._decap_run(run_sa, run_spi, run, out)

    def _to_tun(self, inner: bytes) -> None:
        fd = self._tun_prio if is_sparse(inner) else self._tun_fd
        try:
            if self.offload:
                os.writev(fd, (offload.HDR_DATA_VALID, inner))
            else:
                os.write(fd, inner)
        except OSError:
            self.counters.tun_write_errors += 1

    def _to_tun_many(self, pkts: list[bytes]) -> None:
        """The inner packets of one receive drain to the TUN device, in order, through the
        writer thread; ICMP/ICMPv6 among them first, by this thread (see :func:`icmp_first`)."""
        q = self._tunq
        if q is None:
            self._to_tun_many_now(pkts)
            return
        pkts = icmp_first(pkts, self._to_tun)
        if not pkts:
            return
        if not (q.run_or_put(pkts) if len(pkts) <= _INLINE_MAX else q.put(pkts)):
            self.counters.tun_write_errors += len(pkts)

    def _to_tun_many_now(self, pkts: list[bytes]) -> None:
        if not self.offload or len(pkts) < 2:
            for p in pkts:
                self._to_tun(p)
            return
        fd, fd_prio = self._tun_fd, self._tun_prio
        writev = os.writev
        c = self.counters
        for vh, p in offload.coalesce(pkts, self._uso):
            uso = vh[1] == offload.GSO_UDP_L4
            # a merged UDP run goes where its datagrams would (small ones: the sparse queue)
            sparse = (offload.VNET_HDR.unpack(vh)[3] <= 228) if uso else is_sparse(p)
            try:
                writev(fd_prio if sparse else fd, (vh, p))
                c.tun_writes += 1
            except OSError:
                if not uso:
                    c.tun_write_errors += 1
                    continue
                # a kernel without UDP segmentation on TUN writes: datagram by datagram
                log.info("TUN device %s refuses UDP GSO writes; merging UDP is off",
                         self.ifname)
                self._uso = False
                self._to_tun_many_now(offload.split_udp(vh, p))

    def _udp_datagram(self, d: memoryview, addr: tuple[str, int],
                      deliver: Deliver | None) -> bytes | None:
        """One datagram: a keepalive, IKE (handed to the daemon) or ESP (returns the inner packet)."""
        n = len(d)
        c = self.counters
        if n < 8:
            if n == 1 and d[0] == 0xFF:
                c.keepalives += 1
            elif n > 4 and not any(d[:4]) and deliver is not None:
                self._deliver(deliver, bytes(d[4:n]), addr)
            else:
                c.malformed += 1
            return None
        spi = _SPI.unpack_from(d, 0)[0]
        if spi == 0:
            if deliver is not None:
                self._deliver(deliver, bytes(d[4:n]), addr)
            return None
        isa = self._sas.by_spi.get(spi)
        if isa is None:
            c.unknown_spi += 1
            return None
        if self._xin and spi in self._xin:  # an ipsec-interface SA: out of its ipsecN
            self._to_xif(spi, isa.decap(d))
            return None
        return isa.decap(d)

    def _deliver(self, deliver: Deliver, data: bytes, addr: tuple[str, int]) -> None:
        self.counters.ike_delivered += 1
        try:
            deliver(data, (addr[0], addr[1]))
        except Exception:  # noqa: BLE001 - the daemon's bug must not stop ESP
            log.exception("deliver_ike failed")

    def _drain_raw(self, sock: socket.socket, version: int, mv: memoryview, batch: int,
                   rq: RxQueue | None = None) -> None:
        """Inbound plain ESP (IP protocol 50); IPv4 raw sockets include the IP header.

        Runs of datagrams for one SPI are decrypted together
        (:meth:`esp.InboundSA.decap_batch`: the replay window and counters in locals);
        the inner packets of one drain go to the TUN device together (the writer
        thread, in-order TCP segments and UDP datagrams merged), as on the
        ESP-in-UDP path.  ``rq`` learns after the drain whether the queue was emptied
        (:mod:`.rxqueue`: burst room without a standing queue).
        """
        by_spi = self._sas.by_spi
        c = self.counters
        unpack = _SPI.unpack_from
        out: list[bytes] = []
        run: list[memoryview] = []
        run_spi = -1
        run_sa = None
        got = 0
        try:
            if mmsg.AVAILABLE:  # one recvmmsg; IPv4: the views begin after the IP header
                b = mmsg.batch()
                fd = sock.fileno()
                datas = b.recv_payloads(fd, batch) if version == 4 else b.recv(fd, batch)
            else:
                # copies: each recv reuses mv
                datas = [memoryview(bytes(d))
                         for d in self._raw_datagrams(sock, mv, batch, version)]
            got = len(datas)
            for d in datas:
                if len(d) < 8:
                    c.malformed += 1
                    continue
                spi = unpack(d, 0)[0]
                if spi != run_spi:
                    if run:
                        self._decap_run(run_sa, run_spi, run, out)
                        run = []
                    run_sa = by_spi.get(spi)
                    run_spi = spi
                if run_sa is None:
                    c.unknown_spi += 1
                    continue
                run.append(d)
            if run:
                self._decap_run(run_sa, run_spi, run, out)
        finally:
            if out:
                self._to_tun_many(out)
            if rq is not None:
                rq.drained(got < batch)

    def _decap_run(self, isa: esp.InboundSA | None, spi: int, run: list[memoryview],
                   out: list[bytes]) -> None:
        """Decrypt ``run`` (ESP packets for ``spi``) into ``out``, or out of its ipsecN."""
        if isa is None:
            return
        inner = isa.decap_batch(run)
        if self._xin and spi in self._xin:
            for p in inner:
                self._to_xif(spi, p)
        else:
            out += inner

    @staticmethod
    def _raw_datagrams(sock: socket.socket, mv: memoryview, batch: int, version: int
                       ) -> Iterator[memoryview]:
        """Up to ``batch`` datagrams waiting on ``sock``, one recv each into ``mv`` (a C
        library without recvmmsg); IPv4: after the IP header.  Each view is used before
        the next is read."""
        recv = sock.recv_into
        for _ in range(batch):
            try:
                n = recv(mv)
            except OSError:
                return
            off = (mv[0] & 0x0F) * 4 if version == 4 and n else 0
            yield mv[off:n] if off <= n else mv[:0]

    def _esp_in(self, data: memoryview | bytes) -> None:
        if len(data) < 8:
            self.counters.malformed += 1
            return
        spi = _SPI.unpack_from(data, 0)[0]
        isa = self._sas.by_spi.get(spi)
        if isa is None:
            self.counters.unknown_spi += 1
            return
        inner = isa.decap(data)
        if inner is not None:
            if self._xin and spi in self._xin:
                self._to_xif(spi, inner)
            else:
                self._to_tun(inner)

    def _drain_ah(self, socks: AHSockets, mv: memoryview, batch: int) -> None:
        """Inbound AH (IP protocol 51, RFC 4302 §3.4): whole IP packets, by SPI -> TUN."""
        for _ in range(batch):
            pkt = socks.recv_into(mv)
            if pkt is None:
                return
            spi = ah.ah_spi(pkt)
            isa = self._sas.ah_by_spi.get(spi) if spi is not None else None
            if isa is None:
                if spi is None:
                    self.counters.malformed += 1
                else:
                    self.counters.unknown_spi += 1
                continue
            inner = isa.decap(pkt)
            if inner is not None:
                if self._xin and spi in self._xin:
                    self._to_xif(spi, inner)
                else:
                    self._to_tun(inner)

    # --- ipsec-interface devices (route-based conns, .xifaces) -------------------------

    def _to_xif(self, spi: int, inner: bytes | None) -> None:
        """A decrypted packet of an ipsec-interface SA: out of its ipsecN device."""
        x = self._xin.get(spi)
        if inner is None or x is None or x.closed:
            return
        try:
            os.write(x.fd, inner)
        except OSError:
            self.counters.tun_write_errors += 1

    def _drain_xif(self, x: IpsecInterface, batch: int) -> None:
        """Outbound on ipsecN: only the policies of that ipsec-interface encrypt
        (RFC 4301 §5.1 with the device as part of the lookup); the rest is dropped."""
        c = self.counters
        for _ in range(batch):
            if x.closed:
                return
            size = self._tun_read
            try:
                pkt = os.read(x.fd, size)
            except OSError:
                return
            if len(pkt) < 20:
                continue
            if len(pkt) >= size:
                self._tun_cut()
                continue
            key = addr_key(pkt)
            ent = x.flow.get(key)
            if ent is None or _icmp_error(pkt):
                ent = self._resolve(pkt, key, x)
                if ent is None:
                    c.no_policy += 1
                    continue
            wire = ent[0].encap(pkt)  # type: ignore[index]
            if wire is None:
                continue
            try:
                ent[1](wire, ent[2])  # type: ignore[index]
            except BlockingIOError:
                self._send_slow(ent[1], wire, ent[2])  # type: ignore[index]
            except OSError:
                c.send_errors += 1

    def _xif_add(self, if_id: int | None, if_ip: str | None, user: object,
                 what: str, source_ip: IPAddress | None = None) -> IpsecInterface | None:
        if if_id is None:
            return None
        source = None
        if source_ip is not None and source_ip not in iproute.local_addresses():
            source = f"{source_ip}/{source_ip.max_prefixlen}"
        x, created = self._xifs.acquire(if_id, [a for a in (if_ip, source) if a], user)
        if created:
            self._kick()
            self._clear_filter()
        log.debug("| %s holds %s", what, x.name)
        return x

    def _xif_release(self, user: object) -> None:
        gone = self._xifs.release(user)
        if gone is not None:
            self._xin = {k: v for k, v in self._xin.items() if v is not gone}
            self._kick()
            self._clear_filter()

    def _xif_policies(self) -> None:
        """Rebuild the outbound lookup of each ipsecN from its policies."""
        for x in self._xifs.by_id.values():
            x.out = OutboundPolicies(p for p in self._policies.values() if p.if_id == x.if_id)
            x.flow, x.pflow = {}, {}

    def _clear_filter(self) -> None:
        """Have netfilter drop cleartext that the inbound policies protect (RFC 4301 §5.2)."""
        if self._clear is not None:
            self._clear.update()

    def _clear_state(self) -> tuple[list[PolicyParams], list[str], list[int]]:
        """What the filter's thread writes: inbound policies, our devices, IKE ports."""
        with self._lock:
            return ([p for p in self._policies.values() if p.direction != "out"],
                    [self.ifname, *self.ipsec_interfaces], sorted(self._ike_ports))

    def _ike_port(self, sock: socket.socket) -> None:
        """IKE and NAT-T to the daemon's own ports pass the filter."""
        try:
            port = int(sock.getsockname()[1])
        except (OSError, IndexError, TypeError, ValueError):
            return
        with self._lock:
            if port not in self._ike_ports:
                self._ike_ports = self._ike_ports | {port}
                self._clear_filter()

    @property
    def managed_interfaces(self) -> bool:
        """config setup ipsec-interface-managed= (no: the operator makes the devices)."""
        return self._xifs.managed

    @managed_interfaces.setter
    def managed_interfaces(self, value: bool) -> None:
        self._xifs.managed = value

    @property
    def ipsec_interfaces(self) -> list[str]:
        """The ipsecN devices in use (for status and tests)."""
        return sorted(x.name for x in self._xifs.by_id.values())

    # --- outbound lookup -------------------------------------------------------------

    def _resolve(self, pkt: bytes, key: bytes, x: IpsecInterface | None = None
                 ) -> _Flow | None:
        """Slow path: the outbound policy and SA for a packet (RFC 4301 §5.1 SPD lookup);
        ``x``: the packet came in on that ipsecN device, whose policies alone apply."""
        if x is None:
            flow = self._flow  # a cache invalidated meanwhile must not receive this entry
            pflow = self._pflow
            out = self._out
        else:
            flow, pflow, out = x.flow, x.pflow, x.out  # type: ignore[assignment]
        error = _icmp_error(pkt)  # never cached: its SA is the quoted packet's (RFC 4301 §6.2)
        pk = None if error else port_key(pkt)
        if pk is not None:
            hit = pflow.get(pk)
            if hit is not None:
                return hit
        # a fragment (the kernel cuts a datagram at the route's MTU before the TUN device):
        # the others follow the first one's SA, whose policy may need its ports (RFC 4301
        # §7.3); in pflow under a key of its own length (frag_key)
        fk = None if pk is not None or error else frag_key(pkt)
        if fk is not None and not fk[1]:
            hit = pflow.get(fk[0])
            if hit is not None:
                return hit
        found = out.lookup(pkt)
        if found is None:
            if error and x is None:
                self._send_clear(pkt, out)
            return None
        pol, by_address = found
        if pol.action != "ipsec":  # a drop/reject shunt (pass never reaches the TUN)
            self._shunted(pkt, pol)
            return None
        osa = self._sas.outbound_for(pol)
        if osa is None:
            if not error:  # RFC 4301 §6.2: no SA is negotiated for an ICMP error
                self._trapped(pkt, pol)
            return None
        ent = self._sender_for(osa)
        if ent is None:
            return None
        if by_address:
            if len(flow) >= _FLOW_CACHE_MAX:
                flow.clear()
            flow[key] = ent
        elif pk is not None or (fk is not None and fk[1]):
            # a port-limited policy: cached per flow, not per address pair (a first
            # fragment: for the datagram's other fragments)
            if len(pflow) >= _FLOW_CACHE_MAX:
                pflow.clear()
            pflow[pk if pk is not None else fk[0]] = ent  # type: ignore[index]
        return ent

    def _send_clear(self, pkt: bytes, out: OutboundPolicies) -> None:
        """An ICMP error in the TUN device whose quote matches no policy (RFC 4301 §6.2):
        the rules for port-limited policies capture every error towards their remote
        selectors (:func:`.routes.error_rules`), so one that no policy covers by its
        own header either leaves in the clear by the host's routing, as with XFRM
        (``icmp_route_lookup``: no policy for the quote's flow, none for its own);
        one that a policy covers stays dropped (the quote names no SA of the tunnel)."""
        sock = self._clear_out.get(pkt[0] >> 4)
        if sock is None or out.covers(pkt):
            return
        dst = socket.inet_ntop(socket.AF_INET if pkt[0] >> 4 == 4 else socket.AF_INET6,
                               pkt[16:20] if pkt[0] >> 4 == 4 else pkt[24:40])
        try:
            sock.sendto(pkt, (dst, 0))
        except OSError:
            self.counters.send_errors += 1
            return
        self.counters.clear_errors += 1
        self.counters.no_policy -= 1  # the drain counts the None of _resolve as a drop

    def _ensure_clear_out(self, version: int) -> None:
        """The raw socket of :meth:`_send_clear` (marked: the host's routing, not ours)."""
        if version in self._clear_out:
            return
        s = self._open_raw(version, socket.IPPROTO_RAW, "IP")  # header included
        self._clear_out = {**self._clear_out, version: s}

    def _trapped(self, pkt: bytes, pol: PolicyParams) -> None:
        """A packet on a policy without an SA (a trap): hold it and raise an acquire."""
        ev = self.holds.trap(bytes(pkt), pol)
        cb = self.on_acquire
        if ev is not None and cb is not None:
            try:
                cb(ev)
            except Exception as e:  # noqa: BLE001 - the daemon's bug must not stop the plane
                log.warning("acquire callback failed: %r", e)

    def _shunted(self, pkt: bytes, pol: PolicyParams) -> None:
        """type=drop: discard; type=reject: discard and answer ICMP unreachable."""
        self.counters.shunted += 1
        if pol.action == "reject":
            err = icmp_unreachable(bytes(pkt))
            if err is not None:
                self._to_tun(err)

    def _release_held(self, reqid: int) -> None:
        """The outbound SA of ``reqid`` is in: send what its trap held, in order."""
        x = next((self._xifs.by_id.get(p.if_id) for p in self._policies.values()
                  if p.reqid == reqid and p.direction == "out" and p.if_id is not None), None)
        for pkt in self.holds.release(reqid):
            ent = self._resolve(pkt, addr_key(pkt), x)
            if ent is None:
                continue
            w = ent[0].encap(pkt)
            if w is not None:
                self._queue_send(ent, [w])

    def _sender_for(self, osa: esp.OutboundSA | ah.OutboundAH) -> _Flow | None:
        p = osa.params
        if isinstance(osa, ah.OutboundAH):  # whole IP packets, header included
            socks = self._ah.get(p.dst.version)
            if socks is None:
                return None
            return (osa, socks.tx.sendto, (str(p.dst), 0), socks.tx, False)
        if p.encap_dport is None:
            raw = self._raw.get(p.dst.version)
            if raw is None:
                return None
            return (osa, raw.sendto, (str(p.dst), 0), raw, False)
        fam = socket.AF_INET6 if p.dst.version == 6 else socket.AF_INET
        best = None
        for local, sock, _deliver in self._socks:
            if sock.family != fam:
                continue
            if p.encap_sport is not None and local[1] != p.encap_sport:
                continue
            if local[0] in ("", "0.0.0.0", "::", str(p.src)):
                best = sock
                if local[0] == str(p.src):
                    break
        if best is None:
            return None
        return (osa, best.sendto, (str(p.dst), p.encap_dport), best, self._gso)

    def _invalidate(self) -> None:
        self._flow = {}
        self._pflow = {}
        for x in self._xifs.by_id.values():
            x.flow, x.pflow = {}, {}

    def _kick(self) -> None:
        """Have every worker rebuild its poll set (sockets were added, or we stop)."""
        for w in self._workers:
            w.kick()

    def _expire(self, ev: SAExpire) -> None:
        cb = self.on_expire
        if cb is not None:
            cb(ev)

    # --- KernelBackend -------------------------------------------------------------------

    def _mark(self, sock: socket.socket) -> None:
        """Our own IKE and ESP packets bypass the capture rules (see :mod:`.routes`)."""
        if not self.manage_routes:
            return
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
        except OSError as e:
            raise BackendError(f"cannot mark socket (SO_MARK): {e.strerror}") from None

    def prepare_ike_socket(self, sock: socket.socket) -> None:
        """IKE on this socket is never captured into the TUN device (the socket mark)."""
        self._mark(sock)
        self._ike_port(sock)

    def attach_nat_socket(self, sock: socket.socket, local: tuple[str, int],
                          deliver_ike: Callable[[bytes, tuple[str, int]], None]) -> bool:
        """Own the reads of the daemon's UDP socket at ``local`` (RFC 3948)."""
        self._mark(sock)
        self._ike_port(sock)
        with self._lock:
            self._socks.append(((local[0], local[1]), sock, deliver_ike))
            self._invalidate()
            if self._gso:
                try:  # datagrams of one flow arrive coalesced (split again in _drain_udp)
                    sock.setsockopt(SOL_UDP, UDP_GRO, 1)
                except OSError:
                    self._gso = False
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:  # bursts of ESP must not overflow the daemon's default buffer
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                    break
                except OSError:
                    continue
            self._kick()
        return True

    def detach_nat_socket(self, sock: socket.socket) -> None:
        """Stop reading ``sock`` (call before closing it; a closed one is noticed anyway)."""
        with self._lock:
            self._socks = [x for x in self._socks if x[1] is not sock]
            self._invalidate()
            self._kick()

    @property
    def attached_sockets(self) -> int:
        """How many daemon sockets the plane reads (for tests)."""
        return len(self._socks)

    def handle_esp(self, data: bytes, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self._esp_in(data)

    def _open_raw(self, version: int, proto: int, what: str) -> socket.socket:
        """A marked, non-blocking raw socket of IP ``version`` for ``proto``."""
        fam = socket.AF_INET6 if version == 6 else socket.AF_INET
        try:
            s = socket.socket(fam, socket.SOCK_RAW, proto)
        except OSError as e:
            raise BackendError(f"cannot open a raw {what} socket: {e.strerror}") from None
        try:
            self._mark(s)
        except BackendError:
            s.close()
            raise
        s.setblocking(False)
        return s

    def _ensure_raw(self, version: int) -> None:
        if version in self._raw:
            return
        self._raw[version] = self._open_raw(version, IPPROTO_ESP, "ESP")
        self._kick()

    def _ensure_ah(self, version: int) -> None:
        if version in self._ah:
            return
        self._ah[version] = AHSockets(version, self.mark if self.manage_routes else None)
        self._kick()

    def add_sa(self, sa: SAParams) -> None:
        if sa.tfc_pad > self.mtu:  # tfc=: padded up to the MTU at most (as XFRM does)
            sa = dataclasses.replace(sa, tfc_pad=self.mtu)
        with self._lock:
            check_protectable(sa)
            if sa.if_id is not None and sa.mode != "tunnel":
                raise BackendError(f"ipsec-interface={sa.if_id}: the userspace plane carries "
                                   "tunnel-mode SAs only on an ipsecN device")
            if sa.if_id is not None:  # an ipsecN SA (its key and name built only then)
                x = self._xif_add(sa.if_id, sa.if_ip, ("sa", str(sa.dst), sa.spi),
                                  f"SA {sa.spi:08x}")
                if x is not None and sa.direction == "in":
                    self._xin = {**self._xin, sa.spi: x}
            if sa.protocol == "ah":
                self._ensure_ah(sa.dst.version)
            elif sa.encap_dport is None and sa.direction == "out":
                self._ensure_raw(sa.dst.version)
            elif sa.encap_dport is None:
                self._ensure_raw(sa.src.version)
            self._sas.add(sa, self._expire,
                          inbound_check(sa) if sa.direction == "in" else None)
            self._invalidate()
            log.debug("| add %s SA %08x %s->%s", sa.direction, sa.spi, sa.src, sa.dst)
            if sa.direction == "out":
                self._retune(sa)
            if sa.direction == "out" and len(self.holds):
                self._release_held(sa.reqid)

    def _path_mtu(self, src: IPAddress, dst: IPAddress) -> int | None:
        """The MTU of the host's path from ``src`` to the peer ``dst`` (the route's, else its
        device's; a learnt PMTU too): a datagram socket connected there answers
        ``IP_MTU``.  It carries the plane's mark, so the lookup takes the way our ESP
        packets take, not our own TUN routes.  Kept ``_PATH_MTU_TTL`` seconds."""
        key = (str(src), str(dst))
        now = time.monotonic()
        hit = self._pmtu.get(key)
        if hit is not None and now - hit[1] < _PATH_MTU_TTL:
            return hit[0]
        v6 = dst.version == 6
        try:
            with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET,
                               socket.SOCK_DGRAM) as s:
                if self.manage_routes:
                    s.setsockopt(socket.SOL_SOCKET, SO_MARK, self.mark)
                s.bind((str(src), 0))
                s.connect((str(dst), 4500))
                mtu = s.getsockopt(socket.IPPROTO_IPV6 if v6 else socket.IPPROTO_IP,
                                   IPV6_MTU if v6 else IP_MTU)
        except OSError as e:
            log.debug("| path MTU %s -> %s: %s", src, dst, e)
            return None
        if len(self._pmtu) > 4096:
            self._pmtu.clear()
        self._pmtu[key] = (mtu, now)
        return mtu

    def _auto_mtu(self, sa: SAParams) -> int | None:
        """The route MTU for the traffic of an outbound ESP SA without ``mtu=``: the
        path's MTU less the SA's overhead (:func:`esp.inner_mtu`), as XFRM sizes it, so
        an inner packet that fits leaves in one ESP packet (strongSwan's kernel-libipsec
        and our plane before used a fixed 1,400).  None: the device's MTU stays (AH, an
        unknown path, or less than IPv4's 576)."""
        osa = self._sas.get(sa.dst, sa.spi)
        if not isinstance(osa, esp.OutboundSA):
            return None
        path = self._path_mtu(sa.src, sa.dst)
        if path is None:
            return None
        mtu = esp.inner_mtu(osa, path)
        if any(ts.network.version == 6 for ts in sa.remote_ts):
            mtu = max(mtu, 1280)  # IPv6's minimum (RFC 8200 §5): the outer packet fragments
        return mtu if mtu >= 576 else None

    def _retune(self, sa: SAParams) -> None:
        """The routes of an outbound SA's traffic get :meth:`_auto_mtu` (a new SA, a
        MOBIKE move); an SA of an XFRM interface (``if_id``) routes nothing of ours."""
        if sa.if_id is None and self.manage_routes:
            mtu = self._auto_mtu(sa)
            if mtu is not None:
                self._routes.retune(sa.reqid, mtu)

    def _policy_mtu(self, policy: PolicyParams) -> int | None:
        """:meth:`_auto_mtu` of the outbound SA of an IPsec policy (None before its SA
        exists: a trap's route gets it from :meth:`add_sa`)."""
        if policy.mtu is not None or policy.action != "ipsec" or policy.protocol != "esp":
            return None
        osa = self._sas.outbound_for(policy)
        if not isinstance(osa, esp.OutboundSA) or osa.params.reqid != policy.reqid:
            return None
        return self._auto_mtu(osa.params)

    def move_sa(self, dst: IPAddress, spi: int, new_src: IPAddress, new_dst: IPAddress,
                encap_sport: int | None, encap_dport: int | None,
                protocol: str = "esp") -> None:
        """MOBIKE (RFC 4555): same keys, sequence number and replay window, new outer
        addresses and ports; the flow cache is dropped so packets take the new way."""
        with self._lock:
            if not self._sas.move(dst, spi, new_src, new_dst, encap_sport, encap_dport):
                raise BackendError(f"move_sa: no SA {spi:08x}@{dst}")
            if protocol == "ah":
                self._ensure_ah(new_dst.version)
            elif encap_dport is None:
                self._ensure_raw(new_dst.version)
            self._invalidate()
            log.debug("| move SA %08x to %s->%s", spi, new_src, new_dst)
            moved = self._sas.get(new_dst, spi)
            if isinstance(moved, esp.OutboundSA):  # another path, maybe UDP now
                self._retune(moved.params)

    def del_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        with self._lock:
            if self._sas.remove(dst, spi) is not None:
                self._invalidate()
            if spi in self._xin:
                self._xin = {k: v for k, v in self._xin.items() if k != spi}
            self._xif_release(("sa", str(dst), spi))

    def retire_sa(self, dst: IPAddress, spi: int, protocol: str = "esp") -> None:
        """An inbound SA whose Child SA was rekeyed: gone from the table, the status and
        the counters now, but the packet threads decrypt with it for ``RETIRE_GRACE``
        more seconds.

        The peer switches to the new SA when it has the CREATE_CHILD_SA answer, and
        packets it sent on the old one just before may still wait in this plane's
        socket queues when its Delete has been handled: the kernel would have
        decrypted them as they came.  Seen in tests/daemon/test_userspace_ah.py: a
        ping sent on the old AH SA 0.7 ms before the Delete was dropped as an unknown
        SPI.  An SA delivered through an ipsec-interface goes at once (:meth:`del_sa`).
        """
        with self._lock:
            st = self._sas.get(dst, spi)
            if (st is not None and st.params.direction == "in" and st.params.if_id is None
                    and spi not in self._xin and not self._stop):
                self._sas.retire(dst, spi, time.monotonic() + RETIRE_GRACE)
                self._invalidate()
                log.debug("| retire in SA %08x (rekeyed): %.0f s more", spi, RETIRE_GRACE)
                if self._reaper is None:
                    self._arm_reaper(RETIRE_GRACE)
                return
        self.del_sa(dst, spi, protocol)

    def _arm_reaper(self, delay: float) -> None:
        t = self._reaper = threading.Timer(delay + 0.05, self._reap)
        t.daemon = True
        t.name = "esp-reaper"
        t.start()

    def _reap(self) -> None:
        with self._lock:
            self._reaper = None
            nxt = self._sas.reap(time.monotonic())
            if nxt is not None and not self._stop:
                self._arm_reaper(max(0.0, nxt - time.monotonic()))

    def get_sa_stats(self, dst: IPAddress, spi: int, protocol: str = "esp") -> SAStats | None:
        """Bytes, packets and the drop counters: replay, integrity, selector (RFC 4301 §5.2)."""
        return self._sas.stats(dst, spi)

    def plane_counters(self) -> dict[str, int]:
        """:class:`PlaneCounters` and the trap policies' held packets (:mod:`.traps`)."""
        out = {k: int(v) for k, v in dataclasses.asdict(self.counters).items()}
        out.update(held=self.holds.held, hold_dropped=self.holds.dropped)
        return out

    def sa_traffic(self, index: Mapping[int, tuple[IPAddress, str, str]]
                   ) -> Iterator[tuple[int, int, int]]:
        """The counters of the SAs that carried traffic, read in place (``SATable.traffic``)."""
        return self._sas.traffic(index)

    def sa_state(self, dst: IPAddress, spi: int
                 ) -> esp.InboundSA | esp.OutboundSA | ah.InboundAH | ah.OutboundAH | None:
        """The live ESP or AH state of one SA (for status and tests)."""
        return self._sas.get(dst, spi)

    @staticmethod
    def _pkey(p: PolicyParams) -> tuple[str, str, str, int]:
        return (str(p.src), str(p.dst), p.direction, p.reqid)

    def add_policy(self, policy: PolicyParams) -> None:
        """Install one policy; an outbound one also captures its traffic (:mod:`.routes`).

        Raises BackendError when the traffic cannot be captured: the policy is
        then not installed, so nothing is reported as protected that is not.
        """
        with self._lock:
            key = self._pkey(policy)
            fresh = key not in self._policies
            if policy.if_id is not None:  # route-based: the operator routes onto ipsecN
                self._xif_add(policy.if_id, policy.if_ip, ("pol", key), "policy",
                              policy.source_ip if policy.direction == "out" else None)
            elif policy.direction == "out" and fresh and self.manage_routes:
                if policy.action != "pass" and not (is_any_proto_ports(policy.src)
                                                    and is_any_proto_ports(policy.dst)):
                    self._ensure_clear_out(policy.dst.network.version)  # error_rules
                self._routes.add(policy, self._policy_mtu(policy))
            self._policies[key] = policy
            if policy.direction == "out":
                self._out = OutboundPolicies(p for p in self._policies.values()
                                             if p.if_id is None)
                self._xif_policies()
            else:
                self._clear_filter()
            self._invalidate()

    def del_policy(self, policy: PolicyParams) -> None:
        with self._lock:
            old = self._policies.pop(self._pkey(policy), None)
            if old is None:
                return
            if old.if_id is not None:
                self._xif_release(("pol", self._pkey(old)))
            if old.direction == "out":
                self._out = OutboundPolicies(p for p in self._policies.values()
                                             if p.if_id is None)
                self._xif_policies()
                if self.manage_routes and old.if_id is None:
                    self._routes.delete(old)
                if not any(p.reqid == old.reqid and p.direction == "out"
                           for p in self._policies.values()):
                    self.holds.forget(old.reqid)
            else:
                self._clear_filter()
            self._invalidate()

    def set_acquire_lifetime(self, seconds: int) -> str:
        """xfrmlifetime=: how long a trap holds its packets while negotiating (the kernel's
        larval state lives as long on XFRM); a new acquire is still raised at most once
        a second per trap."""
        self.holds.hold_seconds = float(seconds)
        return f"xfrmlifetime={seconds}: packets caught by a trap are held {seconds} s"

    def flush_own(self) -> None:
        """Remove every SA, policy, route, rule and address this plane installed."""
        with self._lock:
            if self.manage_routes:
                self._routes.remove_all()
            self._sas.clear()
            self._policies.clear()
            self.holds.clear()
            self._out = OutboundPolicies()
            self._xin = {}
            if self._xifs.close_all():
                self._kick()
            self._clear_filter()
            self._invalidate()

    def close(self) -> None:
        """Stop the packet threads and remove the TUN device (and anything still installed)."""
        if self._stop:
            return
        if self._policies or self._routes.installed or self._xifs.by_id:
            self.flush_own()
        self._stop = True
        with self._lock:
            if self._reaper is not None:
                self._reaper.cancel()
                self._reaper = None
        if self._clear is not None:
            self._clear.close()  # removes its chains
        for w in self._workers:
            w.stop()
        for q in (self._txq, self._tunq):
            if q is not None:
                q.stop()
        for s in self._raw.values():
            s.close()
        self._raw.clear()
        for s in self._clear_out.values():
            s.close()
        self._clear_out = {}
        self._rxq.clear()
        for a in self._ah.values():
            a.close()
        self._ah.clear()
        self._close_tun()

    def _close_tun(self) -> None:
        if self._tun_prio != self._tun_fd:
            os.close(self._tun_prio)
        os.close(self._tun_fd)


def check_protectable(sa: SAParams) -> None:
    """Refuse (BackendError) an SA whose traffic this plane cannot protect as negotiated.

    AH (RFC 4302) is carried on raw IP protocol 51 sockets; :func:`ah.make_sa`
    refuses it with UDP encapsulation (RFC 3948 is ESP only).  Transport mode across a NAT would
    need the checksum and address fix-ups of RFC 3948 §3.1.2 (the selectors
    are then other addresses than the outer ones), which the plane does not
    do: such an SA is refused rather than carried with packets the receiver
    would drop or deliver with the wrong addresses.

    A replay window above ``REPLAY_WINDOW_MAX`` packets is refused (either direction,
    as the XFRM backend refuses it): the inbound window is a bitmap of that many bits,
    shifted by the packets that move it (replay-window=4294967295 made a 512 MiB
    integer per SA).
    """
    if sa.replay_window > REPLAY_WINDOW_MAX:
        raise BackendError(f"userspace ESP plane: replay window {sa.replay_window} outside "
                           f"0..{REPLAY_WINDOW_MAX} packets")
    if sa.mode != "transport":
        return
    me, peer = (sa.dst, sa.src) if sa.direction == "in" else (sa.src, sa.dst)
    for ts in sa.local_ts:
        if me not in ts.network:
            raise BackendError(
                f"userspace ESP plane: transport-mode selector {ts} does not hold our "
                f"address {me} (transport mode through a NAT, RFC 3948 §3.1.2, is not "
                "supported)")
    for ts in sa.remote_ts:
        if peer not in ts.network:
            raise BackendError(
                f"userspace ESP plane: transport-mode selector {ts} does not hold the "
                f"peer's address {peer} (transport mode through a NAT, RFC 3948 §3.1.2, "
                "is not supported)")


def _rp_filter_off(ifname: str) -> None:
    """Decrypted packets from a peer routed elsewhere must pass reverse-path filtering.

    Host-to-host and transport-mode packets arrive on the TUN device from the
    peer's own address, whose route for what the capture rules do not select (the
    non-first fragments of a datagram and ICMP errors have no ports) is the normal
    interface.  The TUN device has no IPv4 address, and for such a device Linux's
    loose mode (RFC 3704 §2.2, value 2) drops them as strict mode does (the "no
    address" last resort of its source validation: a 3,000-byte UDP datagram on a
    udp/5353 SA was lost, TcpExtIPReversePathFilter), so the device gets 0, as
    Libreswan's updown gives a VTI device: the SA's selector check (RFC 4301 §5.2
    step 4) is what rejects spoofed inner sources here.  The kernel applies the larger
    of this and net.ipv4.conf.all.rp_filter.
    """
    try:
        with open(f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter", "w") as f:
            f.write("0")
    except OSError:
        log.warning("cannot set rp_filter on %s; decrypted host-to-host packets may be "
                    "dropped by reverse-path filtering", ifname)
