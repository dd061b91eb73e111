"""Run the userspace plane with hand-keyed SAs (tests, benchmarks, debugging).

    python -m pypluto.kernel.userspace.handkey CONFIG.json

CONFIG (JSON)::

    {"ifname": "ppt123", "table": 4500, "local": "192.0.2.1", "port": 4500,
     "sas": [{"src": .., "dst": .., "spi": 4096, "direction": "out", "encr_id": 20,
              "encr_key": "<hex>", "integ_id": 0, "integ_key": "", "mode": "tunnel",
              "esn": false, "replay_window": 128, "encap_sport": 4500, "encap_dport": 4500,
              "reqid": 1, "local_ts": ["198.51.100.0/24/udp/5353"], "remote_ts": [...]}],
     "policies": [{"src": "198.51.100.0/24", "dst": "203.0.113.0/24", "direction": "out",
                   "reqid": 1, "tmpl_src": .., "tmpl_dst": .., "source_ip": null}]}

It binds a UDP socket at local:port, prints ``ready`` and then answers lines
on stdin: ``stats`` (one JSON line: SA counters and plane counters),
``del-policies`` / ``del-sas`` (del_policy / del_sa for each configured one),
``flush`` (flush_own), ``close`` (close and exit).  Like manual keying with
``ip xfrm state``: no IKE, so no secrets are logged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import sys
from typing import Any

from pypluto.kernel.userspace.backend import UserspaceBackend
from pypluto.params import PolicyParams, SAParams, TrafficSelector


def _ts(s: str) -> TrafficSelector:
    """``NET``, ``NET/PROTO`` or ``NET/PROTO/PORT[-PORT]`` (as Libreswan's subnet/proto/port;
    for ICMP the port is type << 8 | code, RFC 4301 §4.4.1.1)."""
    parts = s.split("/")
    net = "/".join(parts[:2]) if len(parts) >= 2 else parts[0]
    proto, lo, hi = 0, 0, 65535
    if len(parts) >= 3:
        named = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58}.get(parts[2])
        proto = int(parts[2]) if named is None else named
    if len(parts) >= 4:
        a, _, b = parts[3].partition("-")
        lo, hi = int(a), int(b or a)
    return TrafficSelector(ipaddress.ip_network(net, strict=False), proto, lo, hi)


def sa_from(d: dict[str, Any]) -> SAParams:
    kw = dict(d)
    kw["src"] = ipaddress.ip_address(kw["src"])
    kw["dst"] = ipaddress.ip_address(kw["dst"])
    kw["encr_key"] = bytes.fromhex(kw.get("encr_key", ""))
    kw["integ_key"] = bytes.fromhex(kw.get("integ_key", ""))
    kw["local_ts"] = [_ts(x) for x in kw.get("local_ts", [])]
    kw["remote_ts"] = [_ts(x) for x in kw.get("remote_ts", [])]
    return SAParams(**kw)


def policy_from(d: dict[str, Any]) -> PolicyParams:
    kw = dict(d)
    kw["src"] = _ts(kw["src"])
    kw["dst"] = _ts(kw["dst"])
    kw["tmpl_src"] = ipaddress.ip_address(kw["tmpl_src"])
    kw["tmpl_dst"] = ipaddress.ip_address(kw["tmpl_dst"])
    if kw.get("source_ip"):
        kw["source_ip"] = ipaddress.ip_address(kw["source_ip"])
    return PolicyParams(**kw)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0]) as f:
        cfg = json.load(f)
    local = cfg["local"]
    fam = socket.AF_INET6 if ":" in local else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    sock.bind((local, cfg.get("port", 4500)))
    sock.setblocking(False)
    ike: list[int] = []
    be = UserspaceBackend(cfg.get("ifname", "pluto0"), table=cfg.get("table", 4500),
                          rule_priority=cfg.get("table", 4500),
                          threads=cfg.get("threads", "split"),
                          offload=cfg.get("offload", True),
                          udp_gso=cfg.get("udp_gso"),
                          writer_threads=cfg.get("writer_threads", True))
    try:
        be.attach_nat_socket(sock, (local, cfg.get("port", 4500)),
                             lambda data, addr: ike.append(len(data)))
        for s in cfg.get("sas", []):
            be.add_sa(sa_from(s))
        for p in cfg.get("policies", []):
            be.add_policy(policy_from(p))
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = line.strip()
            if cmd == "stats":
                out: dict[str, Any] = {"plane": dataclasses.asdict(be.counters),
                                       "ike": len(ike), "sas": {}}
                for s in cfg.get("sas", []):
                    st = be.get_sa_stats(ipaddress.ip_address(s["dst"]), s["spi"])
                    out["sas"][str(s["spi"])] = None if st is None else dataclasses.asdict(st)
                print(json.dumps(out), flush=True)
            elif cmd == "del-policies":
                for p in cfg.get("policies", []):
                    be.del_policy(policy_from(p))
                print("ok", flush=True)
            elif cmd == "del-sas":
                for sa in cfg.get("sas", []):
                    be.del_sa(ipaddress.ip_address(sa["dst"]), sa["spi"])
                print("ok", flush=True)
            elif cmd == "flush":
                be.flush_own()
                print("ok", flush=True)
            elif cmd == "close":
                break
    finally:
        be.flush_own()
        be.close()
        sock.close()
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
