"""The status snapshot whack's ``--status`` family renders (``control/format.py``).

One JSON-able dict: the daemon's own settings and interfaces (``pluto``), the
engine's ``EngineStatus`` with the kernel backend's traffic counters merged
into each Child SA (``engine``), and the clocks the renderer needs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import sys
import time
from typing import Any

from pypluto import __version__
from pypluto.config.addresspool import pool_blocks
from pypluto.config.model import Connection, End
from pypluto.config.values import parse_duration
from pypluto.crypto import registry
from pypluto.daemon.driver import EngineDriver
from pypluto.daemon.helpers import HelperPool
from pypluto.daemon.logger import PlutoLogger
from pypluto.daemon.options import PlutoOptions
from pypluto.daemon.registry import Registry
from pypluto.daemon.sockets import UDPSockets
from pypluto.iana import TransformType
from pypluto.ike.status import EngineStatus
from pypluto.kernel.xfrm import algorithms as xfrm_algs

ID_TYPES = {0: "%none", 1: "ID_IPV4_ADDR", 2: "ID_FQDN", 3: "ID_USER_FQDN",
            5: "ID_IPV6_ADDR", 9: "ID_DER_ASN1_DN", 11: "ID_KEY_ID", 13: "ID_NULL"}
"""RFC 7296 §3.5 ID Type numbers as Libreswan's status names them (no ID: ``%none``,
as 5.2's consoles show ``their idtype: %none; their id=(none)``)."""


def _id(end: End) -> tuple[str, str]:
    """(idtype, id text) of one end; no ``id=`` means the end's address (ID_IPV4/6_ADDR)."""
    ident = end.id
    if ident is None:
        addr = end.host_addr
        if addr is None:
            return "%none", "(none)"
        return ("ID_IPV4_ADDR" if addr.version == 4 else "ID_IPV6_ADDR"), str(addr)
    if ident.any:
        return "%none", "(none)"
    if ident.null:
        return "ID_NULL", "ID_NULL"
    return ID_TYPES.get(ident.id_type, f"ID_{ident.id_type}"), ident.text


def _prefix(end: End) -> int:
    """The selector's prefix length for ``conn_prio`` (the host itself: /32 or /128; a
    pool that is one CIDR block: its prefix, as Libreswan 5.2)."""
    if end.subnets:
        return min(n.prefixlen for n in end.subnets)
    addr = end.host_addr
    pool = _pool_text(end.addresspool)
    if pool and "-" not in pool and "," not in pool:
        return int(pool.split("/")[1])
    if addr is None:  # %any: no selector yet
        return 0
    return 128 if addr is not None and addr.version == 6 else 32


def _pool_text(pool: str | None) -> str | None:
    """An ``addresspool=`` as Libreswan 5.2's status shows it: each range, as a CIDR
    block when it is one (``198.51.100.20/30``), else ``FIRST-LAST``."""
    if not pool:
        return None
    try:
        blocks = pool_blocks(pool)
    except ValueError:  # refused at load
        return pool
    out = []
    for lo, hi in blocks:
        nets = list(ipaddress.summarize_address_range(lo, hi))  # type: ignore[arg-type]
        out.append(str(nets[0]) if len(nets) == 1 else f"{lo}-{hi}")
    return ",".join(out)


_SENDCERT = {"never": "+S-C", "sendifasked": "+S?C"}


def _end_flags(end: End, server: bool, client: bool) -> str:
    """The options Libreswan 5.2 (``jam_end_id``) shows after an end's ID: ``MS`` (mode
    config server), ``+MC`` (client), ``+XS``/``+XC`` (XAUTH), then the sendcert=
    policy (``+S=C``: always, its default); nothing when none of these is set."""
    xs, xc = end.xauthserver, end.xauthclient
    sendcert = (end.sendcert or "always").lower()
    if not (server or client or xs or xc or sendcert not in ("always", "alwayssend")):
        return ""
    return ("MS" if server else "") + ("+MC" if client else "") + ("+XS" if xs else "") + \
        ("+XC" if xc else "") + _SENDCERT.get(sendcert, "+S=C")


def _combo(server: bool, client: bool) -> str:
    return "BOTH!?!" if server and client else "server" if server else \
        "client" if client else "none"


def _words(v: str | None) -> list[str]:
    return [w for w in re.split(r"[\s,]+", v or "") if w]


def conn_details(conn: Connection, registry: Registry, sockets: UDPSockets,
                 opts: PlutoOptions) -> dict[str, Any]:
    """What Libreswan 5.2's ``--status`` shows per connection, from its configuration.

    Only values that the connection really has (and the engine enforces) are
    given; ``control/format.py`` renders them in Libreswan's layout.
    """
    local, remote = conn.local, conn.remote
    ifname = next((i.ifname for i in sockets.interfaces if i.addr == local.host_addr), None)
    lid, rid = _id(local), _id(remote)
    # an address pool makes our end its mode config server and the peer its client
    our_ms = local.modecfgserver or remote.addresspool is not None
    our_mc = local.modecfgclient or local.addresspool is not None
    their_ms = remote.modecfgserver or local.addresspool is not None
    their_mc = remote.modecfgclient or remote.addresspool is not None
    return {
        "serial": registry.serials.get(conn.name, 0),
        "up": conn.name in registry.up,
        "nexthop": local.nexthop if local.nexthop and not local.nexthop.startswith("%")
        else None,
        "updown": local.updown or "ipsec _updown",
        "our_auth": local.auth or conn.authby,
        "their_auth": remote.auth or conn.authby,
        "ike_life": conn.ikelifetime,
        "ipsec_life": conn.salifetime,
        "ipsec_max_bytes": conn.ipsec_max_bytes,
        "ipsec_max_packets": conn.ipsec_max_packets,
        "replay_window": conn.replay_window,
        "rekey_margin": conn.rekeymargin,
        "rekey_fuzz": conn.rekeyfuzz,
        "rekey": conn.rekey,
        "reauth": conn.reauth,
        "keyingtries": conn.keyingtries,
        "fragmentation": conn.fragmentation,
        "retransmit_interval": conn.retransmit_interval,
        "retransmit_timeout": conn.retransmit_timeout,
        "initial_contact": conn.initial_contact,
        "send_vendorid": conn.send_vendorid,
        "fake_strongswan": conn.fake_strongswan,
        "nflog": conn.nflog,
        "send_no_esp_tfc": conn.send_no_esp_tfc,
        "pfs": conn.pfs,
        "esn": conn.esn,
        "mobike": conn.mobike,
        "compress": conn.compress,
        "type": conn.type,
        "conn_prio": [_prefix(local), _prefix(remote), 0],
        "interface": ifname,
        "mark": conn.mark,
        "our_idtype": lid[0], "our_id": lid[1],
        "their_idtype": rid[0], "their_id": rid[1],
        "dpddelay": conn.dpddelay,
        "encapsulation": conn.encapsulation,
        "nat_keepalive": conn.nat_keepalive,
        "keep_alive": opts.keep_alive,
        "narrowing": conn.narrowing,
        "our_flags": _end_flags(local, our_ms, our_mc),
        "their_flags": _end_flags(remote, their_ms, their_mc),
        "our_pool": _pool_text(local.addresspool),
        "their_pool": _pool_text(remote.addresspool),
        "modecfg_us": _combo(our_ms, our_mc),
        "modecfg_them": _combo(their_ms, their_mc),
        "modecfg_pull": conn.raw.get("modecfgpull", "no").lower() in ("yes", "y", "true",
                                                                    "on", "1"),
        "modecfg_dns": _words(conn.raw.get("modecfgdns")),
        "modecfg_domains": _words(conn.raw.get("modecfgdomains")),
    }


def setup_values(opts: PlutoOptions, log: PlutoLogger) -> dict[str, Any]:
    """What the Libreswan-style head of ``--status`` shows of the options (format.py)."""
    bindir = os.path.dirname(sys.executable)  # where the console scripts are
    setup = opts.setup
    dest = {"stderr": "<stderr>", "syslog": "<syslog>", "journal": "<journal>"}
    raw: dict[str, str] = getattr(setup, "raw", None) or {}
    return {
        "configfile": opts.config,
        "dumpdir": opts.coredir,
        "statsbin": opts.statsbin,
        "sbindir": bindir,
        "libexecdir": bindir,
        "nhelpers": opts.nhelpers,
        "logfile": dest.get(log.destination, log.destination),
        "logappend": opts.logappend,
        "logip": opts.logip,
        "audit": opts.audit,
        "listen": opts.listen,
        "natikeport": opts.natikeport,
        "global_redirect": {"true": "yes", "on": "yes", "y": "yes", "false": "no", "off": "no",
                            "n": "no"}.get(raw.get("global-redirect", "no"),
                                           raw.get("global-redirect", "no")),
        "global_redirect_to": raw.get("global-redirect-to"),
        **{k: getattr(setup, k) for k in (
            "ocsp_enable", "ocsp_strict", "ocsp_uri", "ocsp_timeout", "ocsp_cache_size",
            "ocsp_cache_min_age", "ocsp_cache_max_age", "ocsp_method") if hasattr(setup, k)},
        "ocsp_trust_name": getattr(setup, "ocsp_trustname", None),
        "shuntlifetime": _shuntlifetime(raw),
        # config setup xfrmlifetime= (30 s: the kernel's net.core.xfrm_acq_expires default)
        "xfrmlifetime": getattr(setup, "xfrmlifetime", None) or 30,
        "nflog_all": getattr(setup, "nflog_all", None) or 0,  # config setup nflog-all=
    }


def _shuntlifetime(raw: dict[str, str]) -> float:
    """config setup shuntlifetime= as the engine reads it (ike/settings.py), default 900 s."""
    try:
        return parse_duration(raw["shuntlifetime"], "shuntlifetime") \
            if raw.get("shuntlifetime") else 900.0
    except ValueError:  # a bad value refused the config already
        return 900.0


def kernel_algorithm_ids(backend: str) -> tuple[list[int], list[int]]:
    """(ESP encryption IDs, integrity IDs) the running backend can install."""
    if backend == "xfrm":
        encr = [*xfrm_algs.AEAD_NAMES, *xfrm_algs.CRYPT_NAMES]
        return [int(i) for i in encr], [0, *(int(i) for i in xfrm_algs.AUTH_NAMES)]
    if backend == "userspace":
        return ([a.id for a in registry.algorithms(TransformType.ENCR) if a.esp_ok],
                [a.id for a in registry.algorithms(TransformType.INTEG) if a.esp_ok])
    return [], []


def snapshot(*, opts: PlutoOptions, log: PlutoLogger, driver: EngineDriver,
             sockets: UDPSockets, registry: Registry, helpers: HelperPool | None,
             started_wall: float, started_mono: float) -> dict[str, Any]:
    """Everything ``whack --status`` / ``--trafficstatus`` / ... show, as of now."""
    now = driver.now()
    st = EngineStatus()
    if driver.engine is not None:
        try:
            st = driver.engine.status(now)
        except Exception as e:  # noqa: BLE001
            driver.internal_error(e, "status")
            st = EngineStatus()
    for ike in st.ike_sas:
        for ch in ike.children:
            driver.merge_counters(ch)
    for c in st.connections:
        c.routed = c.routed or c.name in registry.routed
    backend = driver.backend
    engine = dataclasses.asdict(st)
    for ike_d in engine.get("ike_sas", []):
        for ch_d in ike_d.get("children", []):
            driver.drop_counters(ch_d)
    return {
        "pluto": {
            "version": __version__,
            "pid": os.getpid(),
            "uptime": round(now - started_mono, 3),
            "started": started_wall,
            "backend": backend.name if backend else "none",
            "listening": sockets.listening,
            "helpers": helpers.count if helpers else 0,
            "helper_kind": helpers.kind if helpers else "inline",
            "debug": sorted(log.debug),
            "uniqueids": opts.uniqueids,
            "force_busy": opts.force_busy,
            "keep_alive": opts.keep_alive,
            "virtual_private": opts.virtual_private,
            "crl_strict": opts.crl_strict,
            "crlcheckinterval": opts.crlcheckinterval,
            "secctx_attr_type": opts.secctx_attr_type,
            "vendorid": opts.vendorid,
            "ipsecdir": opts.ipsecdir,
            "nssdir": opts.nssdir,
            "secretsfile": opts.secretsfile,
            "interfaces": [
                {"ifname": i.ifname, "addr": str(i.addr), "port": i.port, "natt": i.natt}
                for i in sockets.interfaces
            ],
            "setup": setup_values(opts, log),
            "kernel_algorithms": kernel_algorithm_ids(backend.name if backend else "none"),
            "unoriented": sorted(registry.unoriented),
            "conn_details": {name: conn_details(conn, registry, sockets, opts)
                             for name, conn in registry.conns.items()},
        },
        "now": now,
        "wallclock": time.time(),
        "engine": engine,
        "counters": driver.counters.as_dict(),
        "totals": driver.engine.stats.as_dict() if driver.engine is not None else {},
        "plane": _plane_counters(driver),
    }


def _plane_counters(driver: EngineDriver) -> dict[str, int]:
    """The data plane's own counters (``KernelBackend.plane_counters``); {} if none."""
    if driver.backend is None:
        return {}
    try:
        return dict(driver.backend.plane_counters())
    except Exception as e:  # noqa: BLE001 - a status must not fail on the plane
        driver.internal_error(e, "plane counters")
        return {}
