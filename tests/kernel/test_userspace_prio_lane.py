"""The sparse-traffic lane of the userspace plane (kernel/userspace/backend.py, workers.py).

A ping (or DNS) read from the TUN device's sparse queue is encrypted at once, so
its ESP sequence number is above those of the bulk packets already encrypted and
waiting in the send writer.  Sent ahead of them, it must not push any of them
out of the peer's replay window (RFC 4303 §3.4.3); on receive, decrypted ICMP
goes to the TUN device before the bulk packets of the same drain, which is legal
because every RFC 4303 check has already been made, in arrival order.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import threading
import time
from types import SimpleNamespace
from typing import Any

from pypluto.iana import Encr
from pypluto.kernel import esp
from pypluto.kernel.userspace import offload
from pypluto.kernel.userspace.backend import (
    _OVERTAKE_MAX,
    PlaneCounters,
    UserspaceBackend,
    icmp_first,
)
from pypluto.kernel.userspace.workers import Writer
from pypluto.params import SAParams


def _ipv4(proto: int, size: int = 60) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, proto, 0,
                      bytes([198, 51, 100, 1]), bytes([203, 0, 113, 1]))
    return hdr + bytes(size - 20)


def _ipv6(nh: int, size: int = 80) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, size - 40, nh, 64,
                       bytes(15) + b"\x01", bytes(15) + b"\x02") + bytes(size - 40)


def test_icmp_first_writes_icmp_and_icmpv6_now_and_keeps_the_order_of_the_rest() -> None:
    ping4, ping6 = _ipv4(1), _ipv6(58)
    tcp_a, tcp_b, udp, tcp6 = _ipv4(6, 1400), _ipv4(6, 1300), _ipv4(17), _ipv6(6)
    written: list[bytes] = []
    rest = icmp_first([tcp_a, ping4, tcp_b, udp, ping6, tcp6], written.append)
    assert written == [ping4, ping6]
    assert rest == [tcp_a, tcp_b, udp, tcp6]


def test_icmp_first_leaves_a_drain_without_icmp_as_it_is() -> None:
    pkts = [_ipv4(6), _ipv4(17), _ipv6(17), b"\x45\x00"]  # the runt is not ICMP
    written: list[bytes] = []
    assert icmp_first(pkts, written.append) is pkts
    assert written == []


def test_backlog_counts_the_packets_queued_or_in_progress() -> None:
    release = threading.Event()
    started = threading.Event()

    def fn(item: int) -> None:
        started.set()
        release.wait(10)

    w = Writer(fn, "test-backlog")
    try:
        assert w.backlog == 0
        assert w.put(1, 64)
        assert started.wait(10)
        assert w.put(2, 3)
        assert w.backlog == 67
        release.set()
        w.stop()  # runs what is queued, then the thread ends
        assert w.backlog == 0
    finally:
        release.set()
        w.stop()


def test_a_writer_with_limit_one_holds_one_batch_and_then_makes_the_reader_wait() -> None:
    release = threading.Event()
    w = Writer(lambda item: release.wait(10), "test-limit-one", limit=1)
    w.WAIT = 0.05
    try:
        assert w.put(1, 64)
        assert not w.put(2, 64)  # no room while the first is in progress: dropped
        assert w.backlog == 64
    finally:
        release.set()
        w.stop()


class _Q:
    def __init__(self, backlog: int) -> None:
        self.backlog = backlog


def _send_prio(backlog: int | None, n: int) -> str:
    """Which way _send_prio sends ``n`` packets with the send writer's ``backlog``."""
    how: list[str] = []
    stub: Any = SimpleNamespace(
        _txq=None if backlog is None else _Q(backlog),
        _send_many=lambda ent, wires: how.append("now"),
        _queue_send=lambda ent, wires: how.append("queued"))
    UserspaceBackend._send_prio(stub, None, [b"x"] * n)  # type: ignore[arg-type]
    assert len(how) == 1
    return how[0]


def test_a_sparse_packet_overtakes_fewer_packets_than_the_minimum_replay_window() -> None:
    assert _OVERTAKE_MAX == 32  # RFC 4303 §3.4.3: a receiver supports at least 32
    assert _send_prio(None, 1) == "now"  # no writer thread: nothing to overtake
    assert _send_prio(0, 5) == "now"
    assert _send_prio(31, 1) == "now"  # 31 behind the newest: inside any window
    assert _send_prio(32, 1) == "queued"
    assert _send_prio(30, 3) == "queued"  # its own packets count too
    assert _send_prio(512, 1) == "queued"


def _pair(window: int) -> tuple[esp.OutboundSA, esp.InboundSA]:
    kw: dict[str, Any] = dict(src=ipaddress.ip_address("192.0.2.1"),
                              dst=ipaddress.ip_address("192.0.2.2"), spi=0x1234,
                              encr_id=int(Encr.AES_GCM_16), encr_key_bits=256,
                              encr_key=os.urandom(36), esn=True, replay_window=window)
    out, inb = esp.make_sa(SAParams(direction="out", **kw)), \
        esp.make_sa(SAParams(direction="in", **kw))
    assert isinstance(out, esp.OutboundSA) and isinstance(inb, esp.InboundSA)
    return out, inb


def _delivered(overtaken: int) -> tuple[int, int]:
    """``overtaken`` bulk packets encrypted first, then a ping sent ahead of them to a
    receiver with the minimum window: (bulk packets it accepts, packets it drops)."""
    out, inb = _pair(32)
    bulk = out.encap_batch([_ipv4(6, 1400)] * overtaken)
    ping = out.encap_batch([_ipv4(1)])
    got = inb.decap_batch([memoryview(w) for w in ping + bulk])
    st = inb.stats
    return len(got) - 1, st.replay_drops + st.integrity_failures


def test_overtaking_within_the_window_loses_nothing_and_beyond_it_loses_the_oldest() -> None:
    assert _delivered(_OVERTAKE_MAX - 1) == (_OVERTAKE_MAX - 1, 0)
    # what the lane did before: a ping ahead of 100 queued TCP segments; with ESN the
    # receiver infers the next 2^32 block for the oldest (Appendix A2.2), their ICV fails
    assert _delivered(100) == (_OVERTAKE_MAX - 1, 100 - (_OVERTAKE_MAX - 1))


def _queues() -> tuple[socket.socket, socket.socket, socket.socket, socket.socket]:
    """Two datagram socket pairs standing in for the TUN device's bulk and sparse
    queues: a read on the plane's end returns one packet, as on TUN."""
    bulk_w, bulk_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    prio_w, prio_r = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for s in (bulk_r, prio_r):
        s.setblocking(False)
    return bulk_w, bulk_r, prio_w, prio_r


def _plane(out: esp.OutboundSA, bulk: int, prio: int, sent: list[list[bytes]]) -> Any:
    """Just what the TUN drain touches: one flow entry for 198.51.100.1 -> 203.0.113.1,
    no send writer, and ``_send_many`` recording each send."""
    plane: Any = object.__new__(UserspaceBackend)
    plane.counters = PlaneCounters()
    plane.offload = True
    plane._tun_fd, plane._tun_prio = bulk, prio
    plane._txq = None
    plane._flow = {_ipv4(6)[12:20]: (out, None, ("192.0.2.2", 0), None, False)}
    plane._send_many = lambda ent, wires: sent.append(list(wires))
    return plane


def test_a_bulk_drain_encrypts_and_sends_a_waiting_ping_before_its_run() -> None:
    out, inb = _pair(32)
    bulk_w, bulk_r, prio_w, prio_r = _queues()
    try:
        sent: list[list[bytes]] = []
        plane = _plane(out, bulk_r.fileno(), prio_r.fileno(), sent)
        hdr = bytes(offload.VNET_HDR_LEN)  # no offload flags: one plain packet each
        tcp = [_ipv4(6, 1400 - i) for i in range(3)]
        for p in tcp:
            bulk_w.send(hdr + p)
        ping = _ipv4(1, 84)
        prio_w.send(hdr + ping)
        plane._drain_tun_offload(64, bulk_r.fileno(), False)
        assert [len(b) for b in sent] == [1, 3]  # the ping's send, then the run's
        wires = [w for b in sent for w in b]
        seqs = [struct.unpack_from("!I", w, 4)[0] for w in wires]
        assert seqs == sorted(seqs)  # the ping got the lowest number: nothing overtaken
        got = inb.decap_batch([memoryview(w) for w in wires])
        assert got == [ping, *tcp]
        assert inb.stats.replay_drops == inb.stats.integrity_failures == 0
        # nothing waiting in the sparse queue: the bulk run alone, one empty read more
        sent.clear()
        bulk_w.send(hdr + tcp[0])
        plane._drain_tun_offload(64, bulk_r.fileno(), False)
        assert [len(b) for b in sent] == [1]
        assert inb.decap_batch([memoryview(sent[0][0])]) == [tcp[0]]
    finally:
        for s in (bulk_w, bulk_r, prio_w, prio_r):
            s.close()


def test_a_worker_drains_the_sparse_queue_before_the_bulk_queue() -> None:
    plane: Any = object.__new__(UserspaceBackend)
    plane._tun_fd, plane._tun_prio = 10, 11
    plane._lock = threading.RLock()
    plane._xifs = SimpleNamespace(by_id={})
    # a worker registers the descriptors in this order and poll reports them so
    assert list(plane.poll_handlers(True, False, 64)) == [11, 10]


def test_bulk_runs_stay_inside_the_replay_window_only_while_sparse_traffic_flows() -> None:
    out, inb = _pair(32)
    bulk_w, bulk_r, prio_w, prio_r = _queues()
    try:
        sent: list[list[bytes]] = []
        plane = _plane(out, bulk_r.fileno(), prio_r.fileno(), sent)
        hdr = bytes(offload.VNET_HDR_LEN)
        tcp = [_ipv4(6, 1000 + i) for i in range(40)]

        def drain_bulk() -> list[int]:
            sent.clear()
            for p in tcp:
                bulk_w.send(hdr + p)
            plane._drain_tun_offload(64, bulk_r.fileno(), False)
            return [len(b) for b in sent]

        assert drain_bulk() == [40]  # no sparse traffic seen: one run of up to 64
        prio_w.send(hdr + _ipv4(1, 84))
        plane._drain_tun_offload(64, prio_r.fileno(), True)  # a ping was read
        assert plane._sparse_until > time.monotonic()
        # the writer is then never given more than the minimum window less one
        assert drain_bulk() == [_OVERTAKE_MAX - 1, 40 - (_OVERTAKE_MAX - 1)]
        plane._sparse_until = time.monotonic() - 1  # the sparse traffic stopped
        assert drain_bulk() == [40]
        wires = [w for b in sent for w in b]
        assert inb.decap_batch([memoryview(w) for w in wires]) == tcp
    finally:
        for s in (bulk_w, bulk_r, prio_w, prio_r):
            s.close()
