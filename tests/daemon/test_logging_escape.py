"""Issue 13 item 3: a peer's IDs never forge, split or colour a log line.

A real daemon (in this process, real engine, loopback UDP) answers a pypluto
initiator (a sans-I/O engine relayed over a UDP socket) whose IDi holds a
newline followed by a forged "established IKE SA" line, ESC, NUL, bidi
overrides and 4 KiB of text.  The daemon's log file must keep one line per
event, with the ID escaped and bounded, and no forged line.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from inproc import make_env
from inproc import start as _start

from pypluto.config.model import Connection, End, Identity
from pypluto.ike.actions import Endpoint, Log, SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings
from pypluto.textsafe import LINE_LIMIT

LO = ipaddress.ip_address("127.0.0.1")
PSK = b"escape-test-psk-0123456789abcdef"
FORGED = "Dec  4 22:00:00.000000: \"admin\" #99: established IKE SA; authenticated peer " \
         "using authby=secret and FQDN '@admin.example'"
# (\x01, not NUL: an FQDN ID holding a NUL is refused, as Libreswan 5.2 unpack_id does)
HOSTILE = ("evil.example\n" + FORGED + "\r\x1b[2J\x1b[31mred\x01nul\u202egnp.exe"
           + "\\n not an escape" + "A" * 4096)


class _Store:
    def psk_for(self, *a: Any) -> bytes:
        return PSK


def _peer_conn() -> Connection:
    hid = Identity(2, HOSTILE.encode(), "@" + HOSTILE)
    return Connection(name="hostile", left=End(host="127.0.0.1", host_addr=LO, id=hid),
                      right=End(host="127.0.0.1", host_addr=LO), authby="secret",
                      auto="add", local_is_left=True)


def _responder_conn() -> Connection:
    return Connection(name="resp", left=End(host="127.0.0.1", host_addr=LO),
                      right=End(host="%any", host_addr=None), authby="secret", auto="add")


class Relay:
    """Carry a sans-I/O engine's datagrams to the daemon's IKE / NAT-T ports and back."""

    def __init__(self, engine: Engine, ikeport: int, natport: int) -> None:
        self.engine, self.ikeport, self.natport = engine, ikeport, natport
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.logs: list[str] = []

    def apply(self, acts: list) -> None:
        for a in acts:
            if isinstance(a, SendPacket):
                if a.remote.port == 4500:
                    self.sock.sendto(b"\0\0\0\0" + a.data, ("127.0.0.1", self.natport))
                else:
                    self.sock.sendto(a.data, ("127.0.0.1", self.ikeport))
            elif isinstance(a, Log):
                self.logs.append(a.message)

    async def pump(self, until: Any, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not until():
            if loop.time() > end:
                raise AssertionError(f"peer did not get there; its log: {self.logs}")
            try:
                data, (_a, port) = await asyncio.wait_for(
                    loop.sock_recvfrom(self.sock, 65535), 0.2)
            except TimeoutError:
                continue
            p = 4500 if port == self.natport else 500
            if p == 4500:
                if data[:4] != b"\0\0\0\0":
                    continue  # keepalive or ESP
                data = data[4:]
            self.apply(self.engine.receive(data, Endpoint(LO, p), Endpoint(LO, p), 1000.0))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    e = make_env(tmp_path, nhelpers=0)
    sec = tmp_path / "ipsec.secrets"
    sec.write_text(f': PSK "{PSK.decode()}"\n')
    sec.chmod(0o600)
    e["opts"].secretsfile = str(sec)
    return e


def test_hostile_ids_stay_on_one_escaped_line(env: dict[str, Any]) -> None:
    async def main() -> None:
        d, eng, _peer = await _start(env, Engine)
        try:
            d.registry.add(_responder_conn())
            peer = Engine(EngineSettings(), _Store(), local_addrs=[LO])
            relay = Relay(peer, env["opts"].ikeport, env["opts"].natikeport)
            relay.apply(peer.add_connection(_peer_conn()))
            relay.apply(peer.initiate("hostile", 1000.0))
            await relay.pump(lambda: any("established IKE SA" in m for m in relay.logs))
            for _ in range(20):  # let the daemon finish writing
                await asyncio.sleep(0.01)
        finally:
            await d.shutdown(finish=False)
            env["log"].close()

    asyncio.run(main())
    lines = (env["tmp"] / "log").read_text().splitlines()
    established = [ln for ln in lines if "established IKE SA" in ln]
    # exactly one establishment, on the daemon's own line, with the ID escaped in it
    assert len(established) == 1, established
    line = established[0]
    assert line.startswith('"resp" #'), line
    assert "FQDN '@evil.example\\n" + FORGED[:20] in line
    assert "\\r\\x1b[2J\\x1b[31mred\\x01nul\\u202egnp.exe" in line
    assert "\\\\n not an escape" in line  # a backslash in the ID cannot fake an escape
    assert len(line) <= LINE_LIMIT + 20 and line.endswith(" chars]")
    # no line the peer wrote: nothing starts with its forged timestamp or "admin"
    assert not any(ln.startswith(("Dec  4 22:00", '"admin"', "A" * 10)) for ln in lines)
    for ln in lines:  # no raw control or bidi character anywhere in the file
        assert ln.isprintable(), repr(ln)
