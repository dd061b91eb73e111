"""sendmmsg/recvmmsg batches (kernel/userspace/mmsg.py) and the sparse-traffic test of tun.py."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from testsupport import udp_pair

from pypluto.kernel.userspace import mmsg
from pypluto.kernel.userspace.tun import is_sparse


def test_the_c_library_has_both_calls() -> None:
    assert mmsg.AVAILABLE  # glibc and musl on Linux do; without them the plane sends one by one


def test_one_sendmmsg_delivers_every_datagram_in_order_and_recvmmsg_returns_them() -> None:
    tx, rx = udp_pair()
    try:
        wires = [bytes([i]) * (100 + i) for i in range(40)]
        assert mmsg.Batch().send(tx.fileno(), mmsg.sockaddr(rx.getsockname()), wires) == 40
        got = [bytes(v) for v in mmsg.Batch().recv(rx.fileno(), 64)]
        assert got == wires
        assert mmsg.Batch().recv(rx.fileno(), 64) == []  # nothing left: no block, no error
    finally:
        tx.close()
        rx.close()


def test_recv_takes_at_most_count_and_leaves_the_rest() -> None:
    tx, rx = udp_pair()
    try:
        b = mmsg.Batch()
        assert b.send(tx.fileno(), mmsg.sockaddr(rx.getsockname()),
                      [b"a", b"bb", b"ccc"]) == 3
        assert [bytes(v) for v in b.recv(rx.fileno(), 2)] == [b"a", b"bb"]
        assert [bytes(v) for v in b.recv(rx.fileno(), 2)] == [b"ccc"]
    finally:
        tx.close()
        rx.close()


def test_recv_payloads_skips_each_ipv4_header_by_its_ihl_and_sends_then_receive_again() -> None:
    """recv_payloads (IPv4 raw sockets: datagrams begin with the IP header) starts each
    view after the header its IHL field gives; a datagram shorter than that is empty.
    A batch that sent (iovecs moved off their slots) receives into its slots again."""
    tx, rx = udp_pair()
    try:
        b = mmsg.Batch()
        dgrams = [b"\x45" + bytes(19) + b"esp-one", b"\x46" + bytes(23) + b"esp-two",
                  b"\x4f" + b"short", b""]
        assert b.send(tx.fileno(), mmsg.sockaddr(rx.getsockname()), dgrams) == 4
        assert [bytes(v) for v in b.recv_payloads(rx.fileno(), 64)] == [
            b"esp-one", b"esp-two", b"", b""]
        big = [bytes([i]) * (2000 + i) for i in range(3)]
        assert b.send(tx.fileno(), mmsg.sockaddr(rx.getsockname()), big) == 3
        assert [bytes(v) for v in b.recv(rx.fileno(), 64)] == big
        assert b.recv_payloads(rx.fileno(), 64) == []
    finally:
        tx.close()
        rx.close()


def test_datagrams_larger_than_a_slot_arrive_whole_between_small_ones() -> None:
    """A datagram over a slot (9,216 bytes) continues in the slot's overflow area and
    arrives whole, up to the largest UDP payload; the small ones around it keep their
    slots, and sending between two receives leaves both working (plain ESP in transport
    mode: whole datagrams, RFC 4303 §3.3.4; before, one over a slot was cut)."""
    tx, rx = udp_pair()
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        b = mmsg.Batch()
        to = rx.getsockname()
        wires = [b"s1", bytes(range(256)) * 80, b"s2", b"\x07" * 65507, b"\x45" + bytes(19) + b"x"]
        for w in wires:
            tx.sendto(w, to)
        got = [bytes(v) for v in b.recv(rx.fileno(), 64)]
        assert [len(g) for g in got] == [len(w) for w in wires] and got == wires
        assert b.send(tx.fileno(), mmsg.sockaddr(to), [b"a", b"bb"]) == 2
        tx.sendto(b"\x45" + bytes(19) + b"y" * 30000, to)
        got = [bytes(v) for v in b.recv_payloads(rx.fileno(), 64)]
        assert got == [b"", b"", b"y" * 30000]  # "a", "bb": shorter than their IHL
    finally:
        tx.close()
        rx.close()


def test_a_batch_is_per_thread_and_reused_within_one() -> None:
    mine = mmsg.batch()
    assert mmsg.batch() is mine
    other: list[mmsg.Batch] = []
    t = threading.Thread(target=lambda: other.append(mmsg.batch()))
    t.start()
    t.join()
    assert other and other[0] is not mine


def test_send_on_a_closed_descriptor_raises_oserror() -> None:
    tx, rx = udp_pair()
    name = mmsg.sockaddr(rx.getsockname())
    fd = tx.fileno()
    tx.close()
    rx.close()
    with pytest.raises(OSError):
        mmsg.Batch().send(fd, name, [b"x"])


def test_sockaddr_layouts() -> None:
    v4 = mmsg.sockaddr(("192.0.2.7", 4500))
    assert len(v4) == 16
    assert struct.unpack_from("=H", v4)[0] == socket.AF_INET
    assert v4[2:8] == struct.pack("!H", 4500) + bytes([192, 0, 2, 7])
    v6 = mmsg.sockaddr(("2001:db8::1", 0))
    assert len(v6) == 28
    assert struct.unpack_from("=H", v6)[0] == socket.AF_INET6
    assert v6[8:24] == socket.inet_pton(socket.AF_INET6, "2001:db8::1")


def _ip4(proto: int, size: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 0, 0, 64, proto, 0,
                       bytes(4), bytes(4)) + bytes(size - 20)


def _ip6(nh: int, size: int) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, size - 40, nh, 64, bytes(16),
                       bytes(16)) + bytes(size - 40)


def test_sparse_traffic_is_icmp_and_small_udp_only() -> None:
    assert is_sparse(_ip4(1, 84))  # ping
    assert is_sparse(_ip6(58, 104))  # ping6
    assert is_sparse(_ip4(17, 76))  # a DNS query
    assert not is_sparse(_ip4(17, 1400))  # bulk UDP
    assert not is_sparse(_ip4(6, 52))  # a TCP ACK stays with its flow's data
    assert not is_sparse(_ip6(6, 1400))
    assert not is_sparse(b"\x45" + bytes(10))  # too short to tell
