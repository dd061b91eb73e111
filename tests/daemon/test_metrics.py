"""daemon/metrics.py: the exposition text (checked by prometheus_client's parsers) and its server."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as prom_parse

from pypluto.daemon import metrics
from pypluto.ike.actions import ConnectionEvent, EventKind, FailReason
from pypluto.ike.status import ChildSAStatus, EngineStatus, IKESAStatus
from pypluto.kernel.base import SAStats


def snapshot() -> dict:
    """The shape of Daemon.snapshot(): two IKE SAs, one with a Child SA that moved bytes."""
    child = ChildSAStatus(serial=2, conn='we"st\\1', state="STATE_V2_ESTABLISHED_CHILD_SA",
                          parent_serial=1, spi_in=0xC0FFEE01, spi_out=0x11,
                          in_bytes=840, out_bytes=1260, in_packets=10, out_packets=15)
    ike1 = IKESAStatus(serial=1, conn='we"st\\1', state="STATE_V2_ESTABLISHED_IKE_SA",
                       role="initiator", spi_i=1, spi_r=2, local="192.0.2.1:500",
                       remote="192.0.2.2:500", children=[child])
    ike2 = IKESAStatus(serial=3, conn="other", state="STATE_V2_PARENT_R1", role="responder",
                       spi_i=3, spi_r=4, local="192.0.2.1:500", remote="198.51.100.7:500")
    eng = EngineStatus(ike_sas=[ike1, ike2], half_open=1, busy=True)
    return {"pluto": {"version": "0.1.0", "backend": "userspace", "uptime": 12.5,
                      "listening": True, "unoriented": ["far"]},
            "now": 100.0, "engine": dataclasses.asdict(eng)}


def counters() -> metrics.Counters:
    c = metrics.Counters()
    c.record_event(ConnectionEvent(EventKind.IKE_ESTABLISHED, "west", 1))
    c.record_event(ConnectionEvent(EventKind.CHILD_ESTABLISHED, "west", 2))
    c.record_event(ConnectionEvent(EventKind.IKE_ESTABLISHED, "west", 5, "rekey"))
    c.record_event(ConnectionEvent(EventKind.CHILD_ESTABLISHED, "west", 6, "rekey"))
    c.record_event(ConnectionEvent(EventKind.FAILED, "west", 7, "no proposal",
                                   FailReason.PROPOSAL))
    c.record_event(ConnectionEvent(EventKind.PEER_DEAD, "west", 8))
    c.record_event(ConnectionEvent(EventKind.INTERNAL_ERROR, "west", 9))
    for data in (b"m1", b"m2", b"m1", b"m1"):
        c.record_send(data)
    c.sa_stats = lambda spi: SAStats(bytes=840, packets=10, replay_drops=3,
                                     integrity_failures=2) if spi == 0xC0FFEE01 else None
    return c


def samples(families) -> dict:
    out = {}
    for fam in families:
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("om", [True, False])
def test_render_parses_and_has_the_numbers(om: bool) -> None:
    text = metrics.render(snapshot(), counters(), openmetrics=om)
    assert text.endswith("# EOF\n") == om
    s = samples((om_parse if om else prom_parse)(text))
    conn = 'we"st\\1'  # escaped in the text, restored by the parser
    assert s[("pluto_ike_sas", (("state", "STATE_V2_ESTABLISHED_IKE_SA"),))] == 1
    assert s[("pluto_ike_sas", (("state", "STATE_V2_PARENT_R1"),))] == 1
    assert s[("pluto_child_sas", (("state", "STATE_V2_ESTABLISHED_CHILD_SA"),))] == 1
    assert s[("pluto_ike_sas_half_open", ())] == 1
    assert s[("pluto_cookies_required", ())] == 1
    assert s[("pluto_connections", (("oriented", "no"),))] == 1
    assert s[("pluto_ike_sa_established_total", ())] == 1
    assert s[("pluto_child_sa_established_total", ())] == 1
    assert s[("pluto_ike_sa_rekeys_total", ())] == 1
    assert s[("pluto_child_sa_rekeys_total", ())] == 1
    assert s[("pluto_ike_retransmits_total", ())] == 2
    assert s[("pluto_sa_failures_total", (("reason", "proposal"),))] == 1
    assert s[("pluto_sa_failures_total", (("reason", "timeout"),))] == 1
    assert s[("pluto_sa_failures_total", (("reason", "internal"),))] == 1
    assert s[("pluto_sa_failures_total", (("reason", "authentication"),))] == 0
    key = (("conn", conn), ("direction", "in"), ("serial", "2"))
    assert s[("pluto_child_sa_bytes_total", key)] == 840
    assert s[("pluto_child_sa_packets_total", key)] == 10
    out = (("conn", conn), ("direction", "out"), ("serial", "2"))
    assert s[("pluto_child_sa_bytes_total", out)] == 1260
    assert s[("pluto_child_sa_dropped_packets_total",
              (("conn", conn), ("reason", "replay"), ("serial", "2")))] == 3
    assert s[("pluto_child_sa_dropped_packets_total",
              (("conn", conn), ("reason", "integrity"), ("serial", "2")))] == 2
    # a backend without a selector counter gets no selector series (never a fake 0)
    assert not any(k[0] == "pluto_child_sa_dropped_packets_total" and ("reason", "selector")
                   in k[1] for k in s)
    assert s[("pluto_info", (("backend", "userspace"), ("version", "0.1.0")))] == 1


def test_json_counters_are_the_same_numbers() -> None:
    c = counters()
    d = c.as_dict()
    assert d["retransmits"] == 2 and d["ike_rekeys"] == 1 and d["failures"]["proposal"] == 1
    s = samples(om_parse(metrics.render(snapshot(), c)))
    for reason, n in d["failures"].items():
        assert s[("pluto_sa_failures_total", (("reason", reason),))] == n


def test_empty_snapshot_and_no_counters_still_valid() -> None:
    text = metrics.render({"pluto": {}, "engine": {}})
    s = samples(om_parse(text))
    assert s[("pluto_ike_sas_half_open", ())] == 0
    assert s[("pluto_ike_retransmits_total", ())] == 0


def test_retransmit_memory_is_bounded() -> None:
    c = metrics.Counters(recent_sends=2)
    for d in (b"a", b"b", b"c", b"a"):  # "a" was forgotten: not a retransmission
        c.record_send(d)
    assert c.retransmits == 0
    assert c.record_send(b"a") and c.retransmits == 1


@pytest.mark.parametrize("value, want", [
    ("9090", ("127.0.0.1", 9090)), ("localhost:9100", ("127.0.0.1", 9100)),
    ("192.0.2.1:9090", ("192.0.2.1", 9090)), ("[2001:db8::1]:9090", ("2001:db8::1", 9090)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
])
def test_parse_listen(value, want) -> None:
    assert metrics.parse_listen(value) == want


@pytest.mark.parametrize("value", ["", "0", "70000", "host.example:90", "2001:db8::1:90",
                                   "[::1]", "x:y"])
def test_parse_listen_rejects(value) -> None:
    with pytest.raises(ValueError, match="metrics-listen="):
        metrics.parse_listen(value)


def test_http_server_on_localhost() -> None:
    async def main() -> None:
        calls = []

        def collect():
            calls.append(1)
            return snapshot(), counters()

        srv = metrics.MetricsServer(collect, "127.0.0.1", 0)
        host, port = await srv.start()
        url = f"http://{host}:{port}/metrics"
        loop = asyncio.get_running_loop()

        def get(path="/metrics", accept=None, method="GET"):
            req = urllib.request.Request(f"http://{host}:{port}{path}", method=method)
            if accept:
                req.add_header("Accept", accept)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.headers["Content-Type"], r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.headers["Content-Type"], ""

        st, ct, body = await loop.run_in_executor(
            None, lambda: get(accept="application/openmetrics-text; version=1.0.0"))
        assert st == 200 and ct == metrics.OPENMETRICS_TYPE and body.endswith("# EOF\n")
        assert samples(om_parse(body))[("pluto_ike_retransmits_total", ())] == 2
        st, ct, body = await loop.run_in_executor(None, get)
        assert st == 200 and ct == metrics.PROMETHEUS_TYPE and "# EOF" not in body
        assert samples(prom_parse(body))[("pluto_ike_sas_half_open", ())] == 1
        assert (await loop.run_in_executor(None, lambda: get("/nope")))[0] == 404
        assert (await loop.run_in_executor(None, lambda: get(method="POST")))[0] == 405
        st, _, body = await loop.run_in_executor(None, lambda: get(method="HEAD"))
        assert st == 200 and body == ""

        def garbage() -> bytes:
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(b"NONSENSE\r\n\r\n")
                return s.recv(100)

        assert (await loop.run_in_executor(None, garbage)).startswith(b"HTTP/1.1 400")
        assert srv.scrapes == len(calls) == 3  # GET, GET, HEAD: only /metrics collects
        await srv.close()
        with pytest.raises(OSError):
            await loop.run_in_executor(None, lambda: urllib.request.urlopen(url, timeout=5))

    asyncio.run(main())


def test_http_server_bounds_idle_and_non_reading_clients(monkeypatch) -> None:
    """metrics-listen= may face a hostile network: connections beyond MAX_CLIENTS are
    closed at once, a client that never sends its request is dropped after the timeout,
    and one that never reads a large answer is cut off after the timeout too, while a
    scrape from someone else still works."""
    monkeypatch.setattr(metrics.MetricsServer, "MAX_CLIENTS", 4)
    big = "x" * (32 * 1024 * 1024)  # far more than the socket buffers hold
    monkeypatch.setattr(metrics, "render", lambda *a, **kw: big)

    async def until(cond, what: str, limit: float = 10.0) -> None:  # noqa: ANN001
        end = asyncio.get_running_loop().time() + limit
        while not cond():
            assert asyncio.get_running_loop().time() < end, what
            await asyncio.sleep(0.05)

    async def main() -> None:
        srv = metrics.MetricsServer(lambda: (snapshot(), counters()), "127.0.0.1", 0,
                                    timeout=1.0)
        host, port = await srv.start()
        loop = asyncio.get_running_loop()
        idle = [socket.create_connection((host, port)) for _ in range(4)]
        await until(lambda: srv._clients == 4, "four idle clients served")
        extra = socket.create_connection((host, port))
        extra.settimeout(5)
        await until(lambda: srv.refused == 1, "the fifth closed at once")
        assert await loop.run_in_executor(None, lambda: extra.recv(10)) == b""
        await until(lambda: srv._clients == 0, "the idle four time out and go")
        hog = socket.create_connection((host, port))
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # and never reads
        await until(lambda: srv.scrapes == 1, "its answer rendered")
        await until(lambda: srv._clients == 0, "cut off after the timeout, answer dropped")

        def scrape() -> int:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
                return len(r.read())

        assert await loop.run_in_executor(None, scrape) == len(big)
        for s in [*idle, extra, hog]:
            s.close()
        await srv.close()

    asyncio.run(main())
