"""OpenMetrics / Prometheus text endpoint for pluto (opt-in: ``metrics-listen=``).

What it exposes comes from two places, so wiring it into the daemon is one call:

* the status snapshot the daemon already builds for ``whack --status --json``
  (``Daemon.snapshot()``: SAs by state, half-open count, cookie mode, per-Child
  SA bytes and packets), and
* a :class:`Counters` object the daemon feeds as things happen (establishments,
  failures by reason, rekeys, retransmissions, per-SA drops).

``render(snapshot, counters)`` returns the exposition text;
:class:`MetricsServer` serves it over HTTP on the daemon's own asyncio loop
(the snapshot is taken on the loop thread, as for whack; no locks, no threads).
The format is OpenMetrics 1.0 (``application/openmetrics-text``, ending in
``# EOF``) when the scraper asks for it, else Prometheus text format 0.0.4.

Why no ``prometheus_client``: its registry model wants long-lived metric
objects updated in place, while pluto already has one consistent snapshot per
scrape; rendering that snapshot is ~150 lines and keeps the daemon's only
runtime dependency ``cryptography``.  The tests parse the output with
``prometheus_client``'s own parsers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

OPENMETRICS_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_HOST = "127.0.0.1"

# ike/actions.py FailReason values (kept as strings: no import of the engine here)
FAIL_REASONS = ("timeout", "authentication", "proposal", "traffic-selectors", "peer-notify",
                "local", "internal")
# SAStats attribute -> drop reason label (kernel/base.py SAStats; "selector" once a
# backend counts packets dropped because they do not match the SA's selectors)
DROP_FIELDS = (("replay_drops", "replay"), ("integrity_failures", "integrity"),
               ("selector_drops", "selector"), ("malformed", "malformed"))
DROP_KEYS = tuple(attr for attr, _label in DROP_FIELDS)
"""The per-SA drop counters of ``SAStats`` (status JSON, ``total.ipsec.drops.*``)."""


@dataclass
class Counters:
    """Monotonic event counters the daemon feeds; ``as_dict()`` is their ``--json`` form.

    ``record_event`` takes the engine's ``ConnectionEvent`` (``kind``, ``detail``,
    ``reason``); ``record_send`` takes every IKE datagram the daemon sends and
    counts a byte-identical re-send as a retransmission (RFC 7296 §2.1: a
    retransmitted message is the same message).  ``sa_stats`` (set by the daemon)
    maps an inbound SPI to the backend's ``SAStats`` for the drop counters.
    """

    ike_established: int = 0
    child_established: int = 0
    ike_rekeys: int = 0
    child_rekeys: int = 0
    retransmits: int = 0
    ike_bytes_in: int = 0  # IKE datagrams received / sent (total.ike.traffic.*)
    ike_bytes_out: int = 0
    # bytes of Child SAs already deleted, by "esp.in", "ah.out", ... (the live ones are
    # in the snapshot); total.ipsec.*.traffic.* adds both
    ipsec_bytes_gone: Counter[str] = field(default_factory=Counter)
    # drops of Child SAs already deleted, by SAStats attribute ("replay_drops", ...)
    ipsec_drops_gone: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    sa_stats: Callable[[int], Any] | None = None
    recent_sends: int = 4096  # how many datagram digests to remember
    _sent: OrderedDict[bytes, None] = field(default_factory=OrderedDict, repr=False)

    def record_event(self, ev: Any) -> None:
        """Count one ConnectionEvent (ike/actions.py)."""
        kind = str(getattr(ev, "kind", ""))
        detail = str(getattr(ev, "detail", "") or "")
        if kind == "ike-established":
            if detail == "rekey":
                self.ike_rekeys += 1
            else:
                self.ike_established += 1
        elif kind == "child-established":
            if detail == "rekey":
                self.child_rekeys += 1
            else:
                self.child_established += 1
        elif kind in ("failed", "peer-dead", "internal-error"):
            reason = str(getattr(ev, "reason", "") or "")
            if not reason:
                reason = {"peer-dead": "timeout", "internal-error": "internal"}.get(kind, "other")
            self.failures[reason] += 1

    def record_send(self, data: bytes) -> bool:
        """Note one sent IKE datagram; True (and counted) when it is a retransmission."""
        digest = hashlib.blake2b(data, digest_size=16).digest()
        if digest in self._sent:
            self._sent.move_to_end(digest)
            self.retransmits += 1
            return True
        self._sent[digest] = None
        while len(self._sent) > self.recent_sends:
            self._sent.popitem(last=False)
        return False

    def drops(self, spi_in: int) -> dict[str, int]:
        """Per-reason dropped inbound packets of one Child SA (only what the backend counts)."""
        if self.sa_stats is None:
            return {}
        try:
            st = self.sa_stats(spi_in)
        except Exception:  # noqa: BLE001 - a scrape must not fail on one SA
            return {}
        if st is None:
            return {}
        return {label: int(getattr(st, attr)) for attr, label in DROP_FIELDS
                if isinstance(getattr(st, attr, None), int)}

    def as_dict(self) -> dict[str, Any]:
        """The counters for ``whack --status --json`` (same numbers as the endpoint)."""
        return {
            "ike_established": self.ike_established,
            "child_established": self.child_established,
            "ike_rekeys": self.ike_rekeys,
            "child_rekeys": self.child_rekeys,
            "retransmits": self.retransmits,
            "ike_bytes_in": self.ike_bytes_in,
            "ike_bytes_out": self.ike_bytes_out,
            "ipsec_bytes_gone": dict(self.ipsec_bytes_gone),
            "ipsec_drops_gone": dict(self.ipsec_drops_gone),
            "failures": {r: self.failures.get(r, 0) for r in (*FAIL_REASONS, *sorted(
                set(self.failures) - set(FAIL_REASONS)))},
        }


# --------------------------------------------------------------------------- rendering


def _esc(value: object) -> str:
    """A label value, escaped as both text formats require (\\, ", newline)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: dict[str, object]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


class _Family:
    def __init__(self, name: str, mtype: str, help_: str) -> None:
        self.name, self.type, self.help = name, mtype, help_
        self.samples: list[tuple[dict[str, object], float]] = []

    def add(self, value: float, **labels: object) -> _Family:
        self.samples.append((labels, value))
        return self

    def lines(self, openmetrics: bool) -> Iterable[str]:
        suffix = "_total" if self.type == "counter" else ""
        # OpenMetrics names the family ("x"), samples "x_total"; text 0.0.4 names the sample
        fam = self.name if openmetrics else self.name + suffix
        yield f"# HELP {fam} {self.help}"
        yield f"# TYPE {fam} {self.type}"
        for labels, value in self.samples:
            yield f"{self.name}{suffix}{_labels(labels)} {_num(value)}"


def families(snapshot: dict[str, Any], counters: Counters | None = None) -> list[_Family]:
    """The metric families for one snapshot (``Daemon.snapshot()``) and the counters."""
    c = counters or Counters()
    pl = snapshot.get("pluto", {})
    eng = snapshot.get("engine", {})
    ikes = eng.get("ike_sas", [])
    out: list[_Family] = []
    out.append(_Family("pluto_info", "gauge", "pypluto version and kernel backend.")
               .add(1, version=pl.get("version", ""), backend=pl.get("backend", "")))
    out.append(_Family("pluto_uptime_seconds", "gauge", "Seconds since pluto started.")
               .add(float(pl.get("uptime", 0.0))))
    out.append(_Family("pluto_listening", "gauge",
                       "1 when pluto listens for IKE (whack --listen), else 0.")
               .add(bool(pl.get("listening", False))))
    conns = _Family("pluto_connections", "gauge", "Loaded connections by orientation.")
    conns.add(len(eng.get("connections", [])), oriented="yes")
    conns.add(len(pl.get("unoriented", [])), oriented="no")
    out.append(conns)

    ike_states: Counter[str] = Counter(i.get("state", "") for i in ikes)
    child_states: Counter[str] = Counter(ch.get("state", "") for i in ikes
                                         for ch in i.get("children", []))
    f = _Family("pluto_ike_sas", "gauge", "IKE SAs by state.")
    for st, n in sorted(ike_states.items()):
        f.add(n, state=st)
    out.append(f)
    f = _Family("pluto_child_sas", "gauge", "Child (IPsec) SAs by state.")
    for st, n in sorted(child_states.items()):
        f.add(n, state=st)
    out.append(f)
    out.append(_Family("pluto_ike_sas_half_open", "gauge",
                       "Half-open IKE SAs (IKE_SA_INIT answered, IKE_AUTH not yet done).")
               .add(int(eng.get("half_open", 0))))
    out.append(_Family("pluto_cookies_required", "gauge",
                       "1 when pluto demands COOKIEs (RFC 7296 §2.6 DoS mode), else 0.")
               .add(bool(eng.get("busy", False))))

    out.append(_Family("pluto_ike_sa_established", "counter",
                       "IKE SAs established (rekeys not included).").add(c.ike_established))
    out.append(_Family("pluto_child_sa_established", "counter",
                       "Child SAs established (rekeys not included).").add(c.child_established))
    out.append(_Family("pluto_ike_sa_rekeys", "counter", "IKE SA rekeys completed.")
               .add(c.ike_rekeys))
    out.append(_Family("pluto_child_sa_rekeys", "counter", "Child SA rekeys completed.")
               .add(c.child_rekeys))
    out.append(_Family("pluto_ike_retransmits", "counter",
                       "IKE messages sent again (byte-identical retransmissions).")
               .add(c.retransmits))
    f = _Family("pluto_sa_failures", "counter", "Failed negotiations and dead peers by reason.")
    for reason, n in c.as_dict()["failures"].items():
        f.add(n, reason=reason)
    out.append(f)

    by = _Family("pluto_child_sa_bytes", "counter",
                 "Bytes through each established Child SA (ESP payload, as ip xfrm).")
    pk = _Family("pluto_child_sa_packets", "counter", "Packets through each Child SA.")
    dr = _Family("pluto_child_sa_dropped_packets", "counter",
                 "Inbound packets of each Child SA dropped, by reason.")
    for ike in ikes:
        for ch in ike.get("children", []):
            base = {"conn": ch.get("conn", ""), "serial": ch.get("serial", 0)}
            by.add(int(ch.get("in_bytes", 0)), **base, direction="in")
            by.add(int(ch.get("out_bytes", 0)), **base, direction="out")
            pk.add(int(ch.get("in_packets", 0)), **base, direction="in")
            pk.add(int(ch.get("out_packets", 0)), **base, direction="out")
            for reason, n in c.drops(int(ch.get("spi_in", 0))).items():
                dr.add(n, **base, reason=reason)
    out += [by, pk, dr]
    return out


def render(snapshot: dict[str, Any], counters: Counters | None = None, *,
           openmetrics: bool = True) -> str:
    """The exposition text (OpenMetrics 1.0, or Prometheus 0.0.4 when not ``openmetrics``)."""
    lines: list[str] = []
    for fam in families(snapshot, counters):
        lines.extend(fam.lines(openmetrics))
    if openmetrics:
        lines.append("# EOF")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- listen address


def parse_listen(value: str) -> tuple[str, int]:
    """``metrics-listen=`` value -> (host, port).

    ``9090`` listens on localhost (the default address); ``192.0.2.1:9090``,
    ``[2001:db8::1]:9090`` and ``0.0.0.0:9090`` name the address.  Raises
    ``ValueError`` with a message for the config error.
    """
    v = value.strip()
    host = DEFAULT_HOST
    port_s = v
    if v.startswith("["):
        end = v.find("]")
        if end < 0 or not v[end + 1:].startswith(":"):
            raise ValueError(f'metrics-listen="{value}": expected [address]:port')
        host, port_s = v[1:end], v[end + 2:]
    elif ":" in v:
        if v.count(":") > 1:
            raise ValueError(f'metrics-listen="{value}": write an IPv6 address as [address]:port')
        host, port_s = v.rsplit(":", 1)
        if host == "localhost":
            host = DEFAULT_HOST
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f'metrics-listen="{value}": "{host}" is not an IP address') from None
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f'metrics-listen="{value}": port must be 1-65535')
    return host, int(port_s)


# --------------------------------------------------------------------------- HTTP server


class MetricsServer:
    """A minimal HTTP/1.1 server for ``GET /metrics`` on the daemon's asyncio loop.

    ``collect()`` returns ``(snapshot, counters)``; it runs on the loop, so it may
    call ``Daemon.snapshot()`` directly.  Anything but GET/HEAD of ``/metrics``
    (or ``/``) gets 404/405; a request line or headers over 8 KiB, or slower
    than ``timeout`` seconds, get the connection closed.  One response per
    connection (``Connection: close``).  A client that does not read its answer is
    cut off after ``timeout`` seconds too, and at most ``MAX_CLIENTS`` connections
    are served at once (more are closed at once), so that a port opened with
    ``metrics-listen=`` cannot be made to hold memory or descriptors without bound.
    """

    MAX_REQUEST = 8192
    MAX_CLIENTS = 64

    def __init__(self, collect: Callable[[], tuple[dict[str, Any], Counters | None]],
                 host: str = DEFAULT_HOST, port: int = 0, timeout: float = 5.0) -> None:
        self.collect = collect
        self.host, self.port, self.timeout = host, port, timeout
        self.scrapes = 0
        self.refused = 0  # connections closed at once: MAX_CLIENTS were being served
        self._clients = 0
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and listen; returns the bound (host, port) (port 0 picks a free one)."""
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True)
        sock = self._server.sockets[0].getsockname()
        self.port = int(sock[1])
        return self.host, self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.MAX_CLIENTS:
            self.refused += 1
            writer.transport.abort()
            return
        self._clients += 1
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.timeout)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    ConnectionError):
                return
            if len(head) > self.MAX_REQUEST:
                return
            status, ctype, body, head_only = self._respond(head.decode("latin-1"))
            hdr = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                   f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
            writer.write(hdr.encode() + (b"" if head_only else body))
            try:
                await asyncio.wait_for(writer.drain(), self.timeout)
            except (TimeoutError, ConnectionError):
                writer.transport.abort()  # it does not read: its buffered answer goes
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self.timeout)

    def _respond(self, head: str) -> tuple[str, str, bytes, bool]:
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return "400 Bad Request", "text/plain", b"bad request\n", False
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"try /metrics\n", method == "HEAD"
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n", False
        accept = ""
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "accept":
                accept = v.lower()
        om = "application/openmetrics-text" in accept
        snapshot, counters = self.collect()
        self.scrapes += 1
        text = render(snapshot, counters, openmetrics=om)
        return ("200 OK", OPENMETRICS_TYPE if om else PROMETHEUS_TYPE, text.encode(),
                method == "HEAD")


__all__ = ["Counters", "MetricsServer", "families", "parse_listen", "render",
           "DEFAULT_HOST", "OPENMETRICS_TYPE", "PROMETHEUS_TYPE"]
