"""``daemon/resolver.py``: the host-name lookup the engine hands out for a redirect to a
gateway named by FQDN (RFC 5685 §10)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from pypluto.daemon import resolver


def test_resolve_host_returns_addresses_without_duplicates(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.3", 0)),
        (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("fe80::1%eth0", 0, 0, 2)),
        (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.3", 0)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers)
    assert resolver.resolve_host("gw-b.example") == [
        ipaddress.ip_address("192.0.2.3"), ipaddress.ip_address("fe80::1")]


def test_a_name_that_does_not_resolve_raises() -> None:
    with pytest.raises(OSError):
        resolver.resolve_host("no-such-gateway.invalid")  # RFC 6761 §6.4: never resolves


def test_localhost_resolves() -> None:
    assert ipaddress.ip_address("127.0.0.1") in resolver.resolve_host("localhost")


def test_resolve_names_gives_ends_addresses_and_never_makes_a_wildcard() -> None:
    """left=/right= host names (Libreswan's addconn resolves them): an address of the
    other end's family; a name that does not resolve leaves the end without one, and
    such a conn is no candidate for any peer (it is not %any)."""
    from pypluto.config.parser import parse_config_text
    from pypluto.ike.conn_index import ConnIndex

    def fake(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if name == "gw.example.org":
            return [ipaddress.ip_address("2001:db8::7"), ipaddress.ip_address("192.0.2.7")]
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    text = ("conn a\n\tleft=192.0.2.1\n\tright=gw.example.org\n\tauthby=secret\n"
            "conn b\n\tleft=192.0.2.1\n\tright=gone.example.org\n\tauthby=secret\n")
    conns = parse_config_text(text, "f").conns
    a, b = conns["a"], conns["b"]
    assert resolver.resolve_names(a, fake) == [("right=gw.example.org is 192.0.2.7", "info")]
    assert a.right.host_addr == ipaddress.ip_address("192.0.2.7")
    notes = resolver.resolve_names(b, fake)
    assert len(notes) == 1 and notes[0][1] == "error" and \
        notes[0][0].startswith("right=gone.example.org does not resolve")
    assert b.right.host_addr is None and not b.right.is_any
    for c in (a, b):
        c.orient({ipaddress.ip_address("192.0.2.1")})
    index = ConnIndex({"a": a, "b": b})
    me = ipaddress.ip_address("192.0.2.1")
    assert [c.name for c in index.candidates(me, ipaddress.ip_address("192.0.2.7"))] == ["a"]
    assert index.candidates(me, ipaddress.ip_address("192.0.2.99")) == []


def test_hostaddrfamily_picks_the_family(monkeypatch: pytest.MonkeyPatch) -> None:
    """hostaddrfamily=: a name resolves to an address of that family (the first of the
    resolver's otherwise), and %defaultroute takes that family's default route; without
    it, %defaultroute takes the peer's family, as Libreswan's addconn (IPv4 when the
    peer is unknown)."""
    from pypluto.config.parser import parse_config_text
    from pypluto.daemon import defaultroute

    def fake(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        return [ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7")]

    text = "conn c\n\tleft=%defaultroute\n\tright=gw.example.org\n\tauthby=secret\n"
    for hint, want in (("", "192.0.2.7"), ("\thostaddrfamily=ipv6\n", "2001:db8::7")):
        conn = parse_config_text(text + hint, "f").conns["c"]
        resolver.resolve_names(conn, fake)
        assert str(conn.right.host_addr) == want
    routes = {
        ("-4", "route", "show", "default"): [
            {"dst": "default", "gateway": "192.0.2.254", "dev": "eth0", "prefsrc": "192.0.2.1"}],
        ("-6", "route", "show", "default"): [
            {"dst": "default", "gateway": "2001:db8::fe", "dev": "eth0",
             "prefsrc": "2001:db8::1"}],
    }
    monkeypatch.setattr(defaultroute, "_ip_json", lambda *a: routes.get(a, []))
    for conf, want in (
            ("\tright=2001:db8:1::23\n", "2001:db8::1"),  # the peer's family
            ("\tright=192.0.2.23\n", "192.0.2.1"),
            ("\tright=%any\n\thostaddrfamily=ipv6\n", "2001:db8::1"),
            ("\tright=%any\n", "192.0.2.1")):
        conn = parse_config_text("conn c\n\tleft=%defaultroute\n\tauthby=secret\n" + conf,
                                 "f").conns["c"]
        defaultroute.resolve(conn)
        assert str(conn.left.host_addr) == want, conf
        assert conn.left.nexthop_addr is not None and \
            conn.left.nexthop_addr.version == conn.left.host_addr.version


def test_a_slow_name_lookup_stalls_neither_ike_nor_whack(tmp_path: Path) -> None:
    """``ipsec add`` and ``ipsec up`` of a conn with ``right=NAME`` look the name up on a
    worker thread: while the DNS server is slow, IKE datagrams are still answered and
    other whack commands too.  Libreswan's separate addconn process gives the same.
    (With the lookup on the loop's thread, the datagram and ``--status`` wait for it
    and this test fails on their time-outs.)"""
    import asyncio
    import threading

    from inproc import ScriptedEngine, make_env, start

    from pypluto.control.client import call
    from pypluto.control.protocol import RC_NOPEERIP, RC_SUCCESS
    from pypluto.ike.actions import Endpoint, SendPacket

    env = make_env(tmp_path)
    conf = tmp_path / "ipsec.conf"
    conf.write_text("conn named\n\tleft=127.0.0.1\n\tright=gw.example.org\n"
                    "\tauthby=secret\n\tauto=add\n")
    entered, release = threading.Event(), threading.Event()
    answers: list[object] = [socket.gaierror(socket.EAI_AGAIN, "Temporary failure"),
                             [ipaddress.ip_address("192.0.2.7")]]
    looked_up: list[str] = []
    finished: list[str] = []

    def slow(name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        looked_up.append(name)
        entered.set()
        release.wait(5)  # a DNS server that takes its time
        finished.append(name)
        got = answers.pop(0)
        if isinstance(got, BaseException):
            raise got
        return got  # type: ignore[return-value]

    async def body() -> None:
        d, eng, peer = await start(env, ScriptedEngine)
        d.registry.resolver = slow
        loop = asyncio.get_running_loop()
        o = env["opts"]
        path = str(tmp_path / "pluto.ctl")
        remote = Endpoint(ipaddress.ip_address("127.0.0.1"), peer.getsockname()[1])
        eng.replies[b"IKE-REQ"] = [SendPacket(b"IKE-RESP", Endpoint(remote.addr, o.ikeport),
                                              remote)]

        def whack(cmd: str, **args: object) -> asyncio.Future[object]:
            return loop.run_in_executor(None, lambda: call(path, cmd, args, timeout=20))

        async def meanwhile() -> None:
            await asyncio.wait_for(loop.run_in_executor(None, entered.wait, 10), 12)
            peer.sendto(b"IKE-REQ", ("127.0.0.1", o.ikeport))
            assert await asyncio.wait_for(loop.sock_recv(peer, 100), 3) == b"IKE-RESP"
            st = await asyncio.wait_for(whack("status"), 3)
            assert st.rc == RC_SUCCESS  # type: ignore[attr-defined]
            assert len(finished) < len(looked_up), "answered only after the lookup"
            entered.clear()
            release.set()

        # ipsec add: the lookup fails (slowly); the conn loads without an address
        adding = whack("add", config=str(conf), names=["named"])
        await meanwhile()
        r = await adding
        assert r.rc == RC_SUCCESS  # type: ignore[attr-defined]
        assert eng.conns["named"].remote.host_addr is None
        # ipsec up tries the name again (slowly again), now it resolves
        release.clear()
        eng.received.clear()
        up = whack("initiate", name="named", **{"async": True})
        await meanwhile()
        r = await up
        assert r.rc != RC_NOPEERIP, r  # type: ignore[attr-defined]
        assert eng.conns["named"].remote.host_addr == ipaddress.ip_address("192.0.2.7")
        assert eng.initiated == ["named"] and looked_up == ["gw.example.org"] * 2
        await d.shutdown()
        peer.close()

    asyncio.run(body())
