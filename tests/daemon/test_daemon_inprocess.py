"""The daemon's event loop in this process: a scripted engine, the none backend, real UDP.

These pin what the daemon does with datagrams and actions, independently of the
real engine: the non-ESP marker on the NAT-T port (RFC 3948 §2.2), keepalives
(§2.3), ESP handed to the backend, actions executed in order, the timer, whack
requests, and a crash report for an engine that raises.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest
from inproc import ScriptedEngine, make_env, recv, until
from inproc import start as _start
from testsupport import require

from pypluto.config.model import Connection, End
from pypluto.control.client import call
from pypluto.control.protocol import RC_DEAF, RC_SUCCESS, RC_UNKNOWN_NAME
from pypluto.daemon.server import Daemon
from pypluto.ike.actions import (
    AddSA,
    ConnectionEvent,
    Endpoint,
    Log,
    SendKeepalive,
    SendPacket,
)
from pypluto.ike.status import ChildSAStatus, ConnectionStatus, EngineStatus, IKESAStatus
from pypluto.kernel.base import SAParams, SAStats

LO = ipaddress.ip_address("127.0.0.1")



@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=0)


def conn(name: str = "c1") -> Connection:
    c = Connection(name=name, left=End(host="127.0.0.1", host_addr=LO),
                   right=End(host="192.0.2.9", host_addr=ipaddress.ip_address("192.0.2.9")),
                   authby="secret", auto="add")
    return c


async def start(env: dict[str, Any]) -> tuple[Daemon, ScriptedEngine, socket.socket]:
    return await _start(env, ScriptedEngine)




def log_text(env: dict[str, Any]) -> str:
    return (env["tmp"] / "log").read_text()


def test_datagrams_markers_keepalives_and_esp(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        o = env["opts"]
        pport = peer.getsockname()[1]
        remote = Endpoint(LO, pport)
        # IKE on 500: handed to the engine as is; the reply goes out unchanged.
        eng.replies[b"IKE-REQ"] = [SendPacket(b"IKE-RESP", Endpoint(LO, o.ikeport), remote)]
        peer.sendto(b"IKE-REQ", ("127.0.0.1", o.ikeport))
        assert await recv(peer) == b"IKE-RESP"
        assert eng.received[-1] == (b"IKE-REQ", Endpoint(LO, o.ikeport), remote)
        # IKE on 4500: marker stripped before the engine, added on the way out.
        eng.replies[b"NATT-REQ"] = [SendPacket(b"NATT-RESP", Endpoint(LO, o.natikeport), remote),
                                    SendKeepalive(Endpoint(LO, o.natikeport), remote)]
        peer.sendto(b"\0\0\0\0NATT-REQ", ("127.0.0.1", o.natikeport))
        assert await recv(peer) == b"\0\0\0\0NATT-RESP"
        assert await recv(peer) == b"\xff"  # keepalive: one byte, no marker
        assert eng.received[-1][0] == b"NATT-REQ"
        n = len(eng.received)
        # A keepalive and a runt are dropped; ESP (non-zero SPI) goes to the backend.
        peer.sendto(b"\xff", ("127.0.0.1", o.natikeport))
        peer.sendto(b"\0\0", ("127.0.0.1", o.natikeport))
        peer.sendto(b"\x00\x00\x10\x01ESPDATA", ("127.0.0.1", o.natikeport))
        backend: Any = d.backend
        await until(lambda: backend.esp_received)
        assert backend.esp_received[0][0] == b"\x00\x00\x10\x01ESPDATA"
        assert backend.esp_received[0][2] == ("127.0.0.1", pport)
        assert len(eng.received) == n
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_actions_timer_and_shutdown(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        sa = SAParams(src=ipaddress.ip_address("192.0.2.9"), dst=LO, spi=0x1234, direction="in",
                      encr_key=b"k" * 20, conn_name="c1", serial=2)
        eng.replies[b"X"] = [AddSA(sa), Log("established Child SA", conn="c1", serial=2)]
        eng.timer = asyncio.get_running_loop().time() + 0.05
        peer.sendto(b"X", ("127.0.0.1", env["opts"].ikeport))
        backend: Any = d.backend
        await until(lambda: ("127.0.0.1", 0x1234, "esp") in backend.sas)
        await until(lambda: eng.timer_fired == 1)
        await d.shutdown()
        assert eng.shutdown_called
        methods = [m for m, _ in backend.calls]
        # engine's DelSA runs before the backend is flushed and closed
        assert methods.index("del_sa") < methods.index("flush_own", 1) < methods.index("close")
        text = log_text(env)
        assert '"c1" #2: established Child SA' in text
        assert '"c1" #1: timer fired' in text
        assert "k" * 20 not in text
        peer.close()

    asyncio.run(body())


def test_engine_exception_writes_crash_report_and_daemon_survives(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        eng.raise_on = b"BOOM"
        peer.sendto(b"BOOM", ("127.0.0.1", env["opts"].ikeport))
        await until(lambda: any(p.name.startswith("pluto-crash-") for p in env["tmp"].iterdir()))
        report = next(p for p in env["tmp"].iterdir() if p.name.startswith("pluto-crash-"))
        assert "scripted engine failure" in report.read_text()
        assert oct(report.stat().st_mode & 0o777) == "0o600"
        eng.replies[b"OK"] = []
        peer.sendto(b"OK", ("127.0.0.1", env["opts"].ikeport))
        await until(lambda: any(r[0] == b"OK" for r in eng.received))
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_whack_requests_in_process(env: dict[str, Any]) -> None:
    async def body() -> None:
        d, eng, peer = await start(env)
        loop = asyncio.get_running_loop()
        path = str(env["tmp"] / "pluto.ctl")
        assert d.registry.add(conn("c1")) == RC_SUCCESS
        assert eng.conns["c1"].local_is_left is True

        async def whack(cmd: str, **args: Any) -> Any:
            out: list[str] = []
            r = await loop.run_in_executor(None, lambda: call(path, cmd, args,
                                                              on_output=out.append))
            return r, out

        r, _ = await whack("initiate", name="nope")
        assert r.rc == RC_UNKNOWN_NAME and 'no connection or alias named "nope"' in r.error
        # --initiate waits for the outcome and streams the conn's log lines
        eng.on_initiate = [Log("initiating IKEv2 connection", conn="c1", serial=1)]

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            d.driver.execute([Log("established Child SA", conn="c1", serial=2),
                        ConnectionEvent("child-established", "c1", 2)])

        t = asyncio.ensure_future(finish_later())
        r, out = await whack("initiate", name="c1")
        await t
        assert r.rc == RC_SUCCESS
        assert out == ['"c1" #1: initiating IKEv2 connection', '"c1" #2: established Child SA']
        # a failure ends the wait with a non-zero rc
        loop.call_later(0.2, d.driver.execute, [ConnectionEvent("failed", "c1", 3, "AUTHENTICATION_FAILED")])
        r, out = await whack("initiate", name="c1")
        assert r.rc == 56 and any("AUTHENTICATION_FAILED" in x for x in out)
        # not listening: RC_DEAF, until --listen
        r, _ = await whack("unlisten")
        assert r.rc == 0 and not d.interfaces
        r, _ = await whack("initiate", name="c1")
        assert r.rc == RC_DEAF
        r, _ = await whack("listen")
        assert r.rc == 0 and len(d.interfaces) == 2
        # status with traffic counters merged from the backend
        eng.status_obj = EngineStatus(
            connections=[ConnectionStatus("c1", "127.0.0.1", "192.0.2.9", "127.0.0.1",
                                          "@east", [], [], "secret", "tunnel", "add",
                                          ike_serials=[1], child_serials=[2])],
            ike_sas=[IKESAStatus(1, "c1", "STATE_V2_ESTABLISHED_IKE_SA", "initiator", 1, 2,
                                 "127.0.0.1:500", "192.0.2.9:500", remote_id="@east",
                                 children=[ChildSAStatus(2, "c1", "STATE_V2_ESTABLISHED_CHILD_SA",
                                                         1, 0x1234, 0xabcd)])])
        sa = SAParams(src=ipaddress.ip_address("192.0.2.9"), dst=LO, spi=0x1234, direction="in")
        d.driver.execute([AddSA(sa)])
        backend: Any = d.backend
        backend.stats[("127.0.0.1", 0x1234, "esp")] = SAStats(bytes=840, packets=10)
        r, out = await whack("trafficstatus")
        assert r.rc == 0 and len(out) == 1
        assert out[0].startswith('#2: "c1", type=ESP, add_time=')
        assert "inBytes=840, outBytes=0, maxBytes=2^63B, id='@east'" in out[0]
        r, out = await whack("trafficstatus", json=True)
        assert r.data["schema"] == "pypluto-status/1"
        assert r.data["child_sas"][0]["in_bytes"] == 840
        r, out = await whack("status")
        assert "using kernel interface: none" in out
        assert any(x.startswith("#2: \"c1\" esp.abcd@192.0.2.9 esp.1234@127.0.0.1") for x in out)
        assert "IPsec SAs: total(1), authenticated(1), anonymous(0)" in out
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_unhandled_loop_error_crash_report_and_exit_1(env: dict[str, Any]) -> None:
    async def body() -> int:
        d, eng, peer = await start(env)
        peer.close()

        def boom() -> None:
            raise ValueError("unexpected failure in a callback")

        assert d.loop is not None
        d.loop.call_soon(boom)
        rc = await asyncio.wait_for(d.wait(), 10)
        assert eng.shutdown_called
        return rc

    assert asyncio.run(body()) == 1
    reports = [p for p in env["tmp"].iterdir() if p.name.startswith("pluto-crash-")]
    assert len(reports) == 1 and "unexpected failure in a callback" in reports[0].read_text()
    assert "crash report written to" in log_text(env)


def test_command_line_reaches_engine_settings(env: dict[str, Any]) -> None:
    o = env["opts"]
    o.vendorid, o.force_busy, o.keep_alive, o.uniqueids = "my-vid", True, 7, False
    o.virtual_private = "%v4:10.0.0.0/8"

    async def body() -> None:
        d, eng, peer = await start(env)
        s = eng.settings
        assert s.vendorids == [b"my-vid"] and s.force_busy and s.keep_alive == 7.0
        assert s.uniqueids is False and s.virtual_private == "%v4:10.0.0.0/8"
        assert (s.listen_port, s.natt_port) == (o.ikeport, o.natikeport)
        c = conn("c2")
        assert d.registry.add(c) == RC_SUCCESS and eng.conns["c2"].uniqueids is False
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_ipv6_datagrams(env: dict[str, Any]) -> None:
    require(socket.has_ipv6, "IPv6 sockets (socket.has_ipv6)")
    env["opts"].listen = "::1"

    async def body() -> None:
        d, eng, peer4 = await start(env)
        peer4.close()
        assert [str(i.addr) for i in d.interfaces] == ["::1", "::1"]
        o = env["opts"]
        peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        peer.bind(("::1", 0))
        peer.setblocking(False)
        remote = Endpoint(ipaddress.ip_address("::1"), peer.getsockname()[1])
        local = Endpoint(ipaddress.ip_address("::1"), o.natikeport)
        eng.replies[b"V6"] = [SendPacket(b"V6-RESP", local, remote)]
        peer.sendto(b"\0\0\0\0V6", ("::1", o.natikeport))
        assert await recv(peer) == b"\0\0\0\0V6-RESP"
        assert eng.received[-1] == (b"V6", local, remote)
        await d.shutdown()
        peer.close()

    asyncio.run(body())


def test_control_socket_survives_garbage(env: dict[str, Any]) -> None:
    """Random frames, wrong types and truncated requests get an answer or a close, never a
    crash; pluto still answers afterwards."""
    import json
    import random
    import struct

    from pypluto.control.protocol import PROTOCOL_NAME, VERSION

    rnd = random.Random(5)
    base = {"proto": PROTOCOL_NAME, "version": VERSION, "type": "request"}
    bodies: list[bytes] = [rnd.randbytes(rnd.randrange(0, 64)) for _ in range(20)]
    for cmd in ("initiate", "debug", "add", "status", "down", "nonsense"):
        for args in ({"name": 5}, {"name": ["x"]}, {"specs": "base"}, {"specs": [1]},
                     {"config": 3, "names": "x"}, {"json": "yes"}, [], None, {"name": ""}):
            bodies.append(json.dumps({**base, "command": cmd, "args": args}).encode())
    bodies.append(json.dumps({**base, "type": "result"}).encode())

    async def body() -> None:
        d, eng, peer = await start(env)
        peer.close()
        path = str(env["tmp"] / "pluto.ctl")
        for b in bodies:
            r, w = await asyncio.open_unix_connection(path)
            w.write(struct.pack("!I", len(b)) + b)
            await w.drain()
            data = await asyncio.wait_for(r.read(), 10)
            kinds = []
            while data:
                (n,) = struct.unpack("!I", data[:4])
                kinds.append(json.loads(data[4 : 4 + n])["type"])
                data = data[4 + n :]
            assert kinds == [] or kinds[-1] == "result"
            w.close()
        # a length beyond the limit: refused with rc 50 before reading the body
        from pypluto.control.protocol import MAX_FRAME

        r, w = await asyncio.open_unix_connection(path)
        w.write(struct.pack("!I", MAX_FRAME + 1))
        await w.drain()
        data = await asyncio.wait_for(r.read(), 10)
        reply = json.loads(data[4:])
        assert reply["rc"] == 50 and "too large" in reply["error"]
        w.close()
        # truncated frame, then hang up
        r, w = await asyncio.open_unix_connection(path)
        w.write(struct.pack("!I", 100) + b"{")
        w.close()
        loop = asyncio.get_running_loop()
        reply = await loop.run_in_executor(None, lambda: call(path, "ping", {}))
        assert reply.rc == 0
        assert not any(p.name.startswith("pluto-crash") for p in env["tmp"].iterdir())
        await d.shutdown()

    asyncio.run(body())
