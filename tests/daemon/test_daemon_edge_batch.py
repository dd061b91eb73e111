"""A socket's batch of datagrams as one unit of work (issue 18), behaviour unchanged.

* the kernel audit records logged inside a batch go to NETLINK_AUDIT together
  when it ends: one datagram holding every record as its own netlink message
  (RFC 3549 §2.3.2: header, text, NUL, padded to 4 bytes), in order, the same
  bytes each would have had alone; outside a batch, one datagram per record at once;
* the engine's timer is re-armed once when the batch ends (its next deadline is
  asked for once), and at once for a datagram that arrives outside a batch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path
from typing import Any

import pytest

from pypluto.daemon import logger as lg
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import CrashReports
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.sockets import IKEInterface, UDPSockets
from pypluto.daemon.waiters import Waiters
from pypluto.ike.actions import Endpoint, Log

LO = ipaddress.ip_address("127.0.0.1")


class _FakeAudit:
    """Stands in for the kept NETLINK_AUDIT socket: records each datagram sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> bool:
        self.sent.append(data)
        return True

    send_many = lg._AuditSocket.send_many


def _nlmsgs(datagram: bytes) -> list[tuple[int, bytes]]:
    """(type, text) of every netlink message in a datagram, checking its framing."""
    out = []
    off = 0
    while off < len(datagram):
        length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", datagram, off)
        assert length >= 16 and flags == 0x1
        payload = datagram[off + 16:off + length]
        assert payload.endswith(b"\0")
        out.append((mtype, payload[:-1]))
        off += (length + 3) & ~3  # NLMSG_ALIGN
    assert 0 <= off - len(datagram) < 4  # the last may go unpadded
    return out


@pytest.fixture
def audit(monkeypatch: pytest.MonkeyPatch) -> _FakeAudit:
    fake = _FakeAudit()
    monkeypatch.setattr(lg, "_AUDIT", fake)
    return fake


def test_audit_records_of_a_batch_go_in_one_datagram_at_its_end(
        tmp_path: Path, audit: _FakeAudit) -> None:
    path = tmp_path / "log"
    log = PlutoLogger(logfile=str(path), logtime=False)
    records = [f'op=start type=IKE_SA conn="c" serial={i} res=success' for i in range(1, 4)]
    records.append('op=start conn="c\nx" serial=9 res=failed')  # escaped, as alone
    log.hold()
    for r in records:
        log.audit_event(r)
    assert audit.sent == []  # held with the batch
    log.release()
    assert len(audit.sent) == 1
    want = [lg.audit_message(lg.escape(r, lg.LINE_LIMIT)) for r in records]
    assert [(lg.AUDIT_CRYPTO_IKE_SA, m[16:-1]) for m in want] == _nlmsgs(audit.sent[0])
    # every message is the one a lone send would have made, each padded to 4 bytes
    assert audit.sent[0] == b"".join(m + b"\0" * (-len(m) % 4) for m in want)
    # the AUDIT: lines themselves, in order, as before
    lines = path.read_text().splitlines()
    assert lines[:3] == [f"AUDIT: {r}" for r in records[:3]]
    assert lines[3] == 'AUDIT: op=start conn="c\\nx" serial=9 res=failed'
    # outside a batch: one datagram per record, at once
    log.audit_event(records[0])
    assert audit.sent[1] == want[0] and len(audit.sent) == 2
    log.close()


def test_a_lone_held_record_and_a_large_batch(audit: _FakeAudit) -> None:
    log = PlutoLogger(stderr=True)
    log.hold()
    log.audit_event("op=start type=IKE_SA conn=\"c\" serial=1 res=success")
    log.release()
    assert audit.sent == [lg.audit_message('op=start type=IKE_SA conn="c" serial=1 '
                                           'res=success')]  # no padding: as alone
    audit.sent.clear()
    log.hold()
    big = ["x" * 3000 + str(i) for i in range(40)]  # escape bounds each at LINE_LIMIT
    for r in big:
        log.audit_event(r)
    log.release()
    assert len(audit.sent) > 1  # split under the datagram bound, nothing lost
    assert all(len(d) <= lg._AUDIT_DATAGRAM for d in audit.sent)
    got = [t.decode() for d in audit.sent for _, t in _nlmsgs(d)]
    assert got == [lg.escape(r, lg.LINE_LIMIT) for r in big]


def test_close_sends_what_a_batch_holds(audit: _FakeAudit) -> None:
    log = PlutoLogger(stderr=True)
    log.hold()
    log.audit_event("op=destroy type=IKE_SA conn=\"c\" serial=2 res=success")
    log.close()  # exit inside a batch: the record still goes
    assert [t for d in audit.sent for _, t in _nlmsgs(d)] == \
        [b'op=destroy type=IKE_SA conn="c" serial=2 res=success']


def test_no_audit_records_when_audit_is_off(audit: _FakeAudit) -> None:
    log = PlutoLogger(stderr=True, audit=False)
    log.hold()
    log.audit_event("op=start type=IKE_SA conn=\"c\" serial=1 res=success")
    log.release()
    assert audit.sent == []


class _Engine:
    """Scripted: counts receive and next_timer calls; one deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.asked = 0
        self.received = 0

    def next_timer(self) -> float | None:
        self.asked += 1
        return self.deadline

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint,
                now: float) -> list[Any]:
        self.received += 1
        self.deadline -= 1.0  # each message brings the deadline earlier
        return [Log(f"got {data[:2].decode()}", conn="c", serial=self.received)]


def test_the_timer_is_rearmed_once_per_batch(tmp_path: Path) -> None:
    log = PlutoLogger(logfile=str(tmp_path / "log"), logtime=False)
    s = UDPSockets(log, 0, 0, None)
    d = EngineDriver(log, CrashReports(str(tmp_path), log.log), Waiters(), s)
    loop = asyncio.new_event_loop()  # never run
    d.loop = loop
    eng = _Engine(loop.time() + 100)
    d.engine = eng  # type: ignore[assignment]
    s.on_ike = lambda data, local, remote: d.receive(data, local, remote, d.now())
    s.batch_begin, s.batch_end = d.batch_begin, d.batch_end
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    iface = IKEInterface("lo", LO, rx.getsockname()[1], rx, False)
    try:
        for i in range(3):
            tx.sendto(b"m%d" % i + bytes(30), ("127.0.0.1", iface.port))
        s._readable(iface)
        assert eng.received == 3 and eng.asked == 1  # once, at the batch's end
        assert d._timer is not None and abs(d._timer.when() - eng.deadline) < 1e-6
        # a datagram outside a batch: the timer follows at once, as before
        d.receive(b"m9" + bytes(30), Endpoint(LO, 1), Endpoint(LO, 2), d.now())
        assert eng.asked == 2 and abs(d._timer.when() - eng.deadline) < 1e-6
        # an engine that raises inside a batch: the batch still ends, timer re-armed
        d.batch_begin()
        with pytest.raises(RuntimeError):
            try:
                raise RuntimeError("boom")
            finally:
                d.batch_end()
        assert d._batch == 0
        d.stop()
    finally:
        rx.close()
        tx.close()
        loop.close()
        log.close()
    lines = (tmp_path / "log").read_text().splitlines()
    assert lines == ['"c" #1: got m0', '"c" #2: got m1', '"c" #3: got m2', '"c" #4: got m9']
