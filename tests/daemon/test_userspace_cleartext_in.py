"""Inbound cleartext that a protecting policy covers is discarded on the userspace plane.

RFC 4301 §5.2 step 3 / §4.4.1: a packet that arrives in the clear but matches an
inbound policy that says PROTECT (or DISCARD) is dropped.  With XFRM the kernel's
"in"/"fwd" policy check does it; the userspace plane never sees cleartext from the
physical interface, so :mod:`pypluto.kernel.userspace.inbound_filter` has netfilter
drop it.  Two of our daemons with ``--use-userspace`` (the lab of
test_userspace_capture.py); cleartext is injected on west's veth with an
``AF_PACKET`` socket (no routing: exactly what an on-path attacker puts on the
wire), with a source inside east's remote selector, to a UDP listener in east:

* subnet-to-subnet: the tunnel carries UDP, the injected datagram is not
  delivered (and counts in east's DROP rule); once the Child SA is gone it is
  delivered again (no policy, as with XFRM); the daemon's stop leaves no chain;
* host-to-host (plain ESP, ESP-in-UDP, IPv6): cleartext from the peer's own
  address is dropped while IKE (a rekey) and ESP/ESP-in-UDP still work;
* a daemon killed with SIGKILL leaves its chain; the next start removes it.

west 192.0.2.1 (198.51.100.1) <-veth-> east 192.0.2.2 (203.0.113.1)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from plutoproc import PY, Pluto, wait_for
from test_userspace_capture import BASE, SUBNETS, child_sas, pair  # noqa: F401

from pypluto.kernel.userspace import inbound_filter
from pypluto.kernel.userspace.inbound_filter import InboundFilter, chain_rules
from pypluto.params import PolicyParams, TrafficSelector

CHAIN = "PLUTO-CLR-pluto0"
PORT = 7010

LISTEN = textwrap.dedent("""
    import socket, sys
    fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((sys.argv[1], int(sys.argv[2])))
    u.settimeout(30)
    print("ready", flush=True)
    while True:
        d, a = u.recvfrom(4096)
        print(d.decode(errors="replace"), a[0], flush=True)
""")

# one UDP datagram as an Ethernet frame on a device: argv ifname dst-mac src dst port payload
INJECT = textwrap.dedent("""
    import ipaddress, socket, struct, sys
    ifname, dmac, src, dst, port, payload = sys.argv[1:7]
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    data = payload.encode()
    def csum(b):
        if len(b) % 2: b += b"\\0"
        t = sum(struct.unpack(f"!{len(b)//2}H", b))
        while t >> 16: t = (t & 0xffff) + (t >> 16)
        return ~t & 0xffff
    ulen = 8 + len(data)
    udp = struct.pack("!HHHH", 40001, int(port), ulen, 0) + data
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", ulen, 17)
    c = csum(pseudo + udp) or 0xffff
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    if s.version == 4:
        h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0, 64, 17, 0, s.packed, d.packed)
        h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
        etype = 0x0800
    else:
        h = struct.pack("!IHBB16s16s", 6 << 28, ulen, 17, 64, s.packed, d.packed)
        etype = 0x86DD
    smac = open(f"/sys/class/net/{ifname}/address").read().strip()
    frame = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex(smac.replace(":", "")) \\
        + struct.pack("!H", etype) + h + udp
    p = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    p.bind((ifname, 0)); p.send(frame)
""")

# a datagram sent the ordinary way (through the tunnel when a policy covers it)
SEND = textwrap.dedent("""
    import socket, sys
    src, dst, port, payload = sys.argv[1:5]
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    u = socket.socket(fam, socket.SOCK_DGRAM); u.bind((src, 0))
    u.sendto(payload.encode(), (dst, int(port)))
""")


class Lab:
    """The pair fixture plus the listener, injection and rule inspection."""

    def __init__(self, lab: tuple) -> None:  # type: ignore[type-arg]
        self.start, self.spawn, self.w_ns, self.e_ns, self.vw = lab
        ve = "pce" + self.vw[3:]
        self.east_mac = self.e_ns.run("cat", f"/sys/class/net/{ve}/address").stdout.strip()
        self.listener: subprocess.Popen[bytes] | None = None

    def listen(self, host: str) -> None:
        self.listener = self.spawn(self.e_ns, PY, "-c", LISTEN, host, str(PORT))
        assert self.listener.stdout is not None
        assert self.listener.stdout.readline().decode().strip() == "ready"

    def inject(self, src: str, dst: str, payload: str) -> None:
        self.w_ns.run(PY, "-c", INJECT, self.vw, self.east_mac, src, dst, str(PORT), payload)

    def send(self, src: str, dst: str, payload: str) -> None:
        self.w_ns.run(PY, "-c", SEND, src, dst, str(PORT), payload)

    def received_until(self, last: str) -> list[str]:
        """What the listener printed up to and including the datagram ``last``."""
        assert self.listener is not None and self.listener.stdout is not None
        got: list[str] = []
        while True:
            line = self.listener.stdout.readline().decode()
            assert line, f"listener ended; received {got}"
            got.append(line.split()[0])
            if got[-1] == last:
                return got

    def chain(self, version: int = 4) -> str:
        """east's raw table lines of the plane's chain (with counters)."""
        tool = "ip6tables-save" if version == 6 else "iptables-save"
        out = self.e_ns.run(tool, "-c", "-t", "raw").stdout
        return "\n".join(ln for ln in out.splitlines() if CHAIN in ln)

    def drops(self, version: int = 4) -> int:
        n = 0
        for ln in self.chain(version).splitlines():
            if ln.endswith("-j DROP"):
                n += int(ln.split(":")[0].lstrip("["))
        return n


def _up(lab: Lab, conf: str) -> tuple[Pluto, Pluto]:
    east = lab.start("east", lab.e_ns, conf)
    west = lab.start("west", lab.w_ns, conf)
    r = west.whack("--name", "west-east", "--initiate")
    assert r.returncode == 0, r.stdout + west.log()
    return west, east


def _cleartext_dropped(lab: Lab, src: str, spoof: str, dst: str, version: int = 4) -> None:
    """``spoof`` -> ``dst`` in the clear is not delivered; ``src`` -> ``dst`` through the
    tunnel is (the listener reads it after the injected datagram would have come)."""
    # the rules follow a policy change from a thread of the plane: wait for them (without
    # the filter there are none, and the assertion below shows the delivery)
    with contextlib.suppress(AssertionError):
        wait_for(lambda: "-j DROP" in lab.chain(version), 10, "east's drop rule")
    lab.inject(spoof, dst, "CLEAR1")
    lab.send(src, dst, "TUNNEL1")
    assert lab.received_until("TUNNEL1") == ["TUNNEL1"]
    # the datagram sent after it arrived, so the injected one went through the chain
    assert lab.drops(version) == 1, lab.chain(version)


@pytest.mark.netns
def test_subnet_cleartext_dropped_then_passes_after_delete(pair, tmp_path: Path  # noqa: F811
                                                            ) -> None:
    lab = Lab(pair)
    west, east = _up(lab, BASE + SUBNETS)
    lab.listen("203.0.113.1")
    _cleartext_dropped(lab, "198.51.100.1", "198.51.100.7", "203.0.113.1")
    # the tunnel's own transport passed the chain: plain ESP between the outer addresses
    # is outside the selectors here, so this only shows the exemptions are in place
    assert "-p esp -m addrtype --dst-type LOCAL -j RETURN" in lab.chain()
    assert "--dport 500 -j RETURN" in lab.chain()
    assert child_sas(east)[0]["in_bytes"] > 0

    # the Child SA goes: no inbound policy, cleartext is delivered (as with XFRM)
    r = west.whack("--name", "west-east", "--down")
    assert r.returncode == 0, r.stdout + west.log()
    wait_for(lambda: child_sas(east) == [], 10, "east to delete the Child SA")
    wait_for(lambda: "-j DROP" not in lab.chain(), 10, "east's drop rule removed")
    lab.inject("198.51.100.7", "203.0.113.1", "CLEAR2")
    assert lab.received_until("CLEAR2") == ["CLEAR2"]

    east.stop()
    assert lab.chain() == "" and lab.chain(6) == ""


HOST_CONNS = {
    # name: (extra ipsec.conf lines, west's address, east's address)
    "plain-esp": ("", "192.0.2.1", "192.0.2.2"),
    "esp-in-udp": ("\tencapsulation=yes\n", "192.0.2.1", "192.0.2.2"),
    "transport-ipv6": ("\ttype=transport\n", "2001:db8::1", "2001:db8::2"),
}


@pytest.mark.netns
@pytest.mark.parametrize("kind", list(HOST_CONNS))
def test_host_to_host_cleartext_dropped_ike_and_esp_pass(pair, kind: str  # noqa: F811
                                                         ) -> None:
    lab = Lab(pair)
    extra, w_addr, e_addr = HOST_CONNS[kind]
    conf = BASE + extra
    version = 6 if ":" in w_addr else 4
    if version == 6:
        conf = conf.replace("left=192.0.2.1", f"left={w_addr}").replace(
            "right=192.0.2.2", f"right={e_addr}")
    west, east = _up(lab, conf)
    lab.listen(e_addr)
    # the peer's own address in the clear: dropped; the same through the SA: delivered
    _cleartext_dropped(lab, w_addr, w_addr, e_addr, version)
    # IKE still reaches east (a rekey), and the new SA carries traffic
    r = west.whack("--name", "west-east", "--rekey-child")
    assert r.returncode == 0, r.stdout + west.log() + east.log()
    lab.send(w_addr, e_addr, "TUNNEL2")
    assert lab.received_until("TUNNEL2") == ["TUNNEL2"]
    assert lab.drops(version) == 1
    ping = lab.w_ns.run("ping", "-c", "2", "-i", "0.2", "-W", "2", e_addr, check=False)
    assert ping.returncode == 0, ping.stdout + east.log()


@pytest.mark.netns
def test_killed_daemon_chain_removed_at_next_start(pair, tmp_path: Path  # noqa: F811
                                                   ) -> None:
    lab = Lab(pair)
    west, east = _up(lab, BASE + SUBNETS)
    wait_for(lambda: "-j DROP" in lab.chain(), 10, "east's drop rule")
    assert east.proc is not None
    for pid in east.pids:  # kill -9: no chance to clean up
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    east.proc.wait(10)
    assert "-j DROP" in lab.chain()  # what the killed daemon left
    # a plane on the same TUN device (another rundir: no stale lock, no leftovers pass)
    east2 = lab.start("east2", lab.e_ns, BASE + SUBNETS)
    assert "-j DROP" not in lab.chain(), east2.log()
    lab.listen("203.0.113.1")
    lab.inject("198.51.100.7", "203.0.113.1", "CLEAR3")
    assert lab.received_until("CLEAR3") == ["CLEAR3"]
    east2.stop()

    # the leftovers pass of a restart after a stale lock (daemon/leftovers.py), for a
    # chain as a killed plane leaves it (both families)
    for tool in ("iptables", "ip6tables"):
        lab.e_ns.run(tool, "-t", "raw", "-N", CHAIN)
        lab.e_ns.run(tool, "-t", "raw", "-A", CHAIN, "-j", "DROP")
        lab.e_ns.run(tool, "-t", "raw", "-I", "PREROUTING", "-j", CHAIN)
    r = lab.e_ns.run(PY, "-c", "from pypluto.daemon.leftovers import "
                     "remove_userspace_leftovers as r; print(r())")
    assert f"the IPv4 inbound cleartext filter {CHAIN}" in r.stdout, r.stdout
    assert f"the IPv6 inbound cleartext filter {CHAIN}" in r.stdout, r.stdout
    assert lab.chain() == "" and lab.chain(6) == ""


# --- the rules themselves (no namespace) ---------------------------------------------------

def _ts(net: str, proto: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    return TrafficSelector(ipaddress.ip_network(net), proto, *ports)


def _pol(src: TrafficSelector, dst: TrafficSelector, direction: str = "in",
         **kw: object) -> PolicyParams:
    return PolicyParams(src, dst, direction, 7, ipaddress.ip_address("192.0.2.2"),  # type: ignore[arg-type]
                        ipaddress.ip_address("192.0.2.1"), **kw)  # type: ignore[arg-type]


def test_chain_rules_exempt_transport_and_follow_spd_order() -> None:
    pols = [
        _pol(_ts("10.1.0.0/16"), _ts("10.2.0.0/16")),
        _pol(_ts("10.1.0.0/16"), _ts("10.2.0.0/16"), "fwd"),  # same rule once
        _pol(_ts("10.1.0.0/16"), _ts("10.2.3.0/24"), action="pass"),  # more specific first
        _pol(_ts("10.1.0.0/16", 6, (80, 80)), _ts("10.2.0.0/16", 6, (1000, 2000)),
             action="drop"),
        _pol(_ts("10.1.0.0/16"), _ts("10.2.0.0/16"), "out"),  # outbound: nothing
        _pol(_ts("10.9.0.0/16"), _ts("10.2.0.0/16"), if_id=3),  # route-based: nothing
        _pol(_ts("10.8.0.0/16"), _ts("10.2.0.0/16"), mark=(5, 0xff)),
    ]
    rules = chain_rules("C", 4, pols, ["pluto0", "ipsec3"], [4501])
    assert rules[:9] == [
        "-A C -i lo -j RETURN", "-A C -i pluto0 -j RETURN", "-A C -i ipsec3 -j RETURN",
        "-A C -p esp -m addrtype --dst-type LOCAL -j RETURN",
        "-A C -p ah -m addrtype --dst-type LOCAL -j RETURN",
        "-A C -p udp -m addrtype --dst-type LOCAL -m udp --dport 500 -j RETURN",
        "-A C -p udp -m addrtype --dst-type LOCAL -m udp --dport 4500 -j RETURN",
        "-A C -p udp -m addrtype --dst-type LOCAL -m udp --dport 4501 -j RETURN",
        # non-first fragments (no ports; test_userspace_jumbo26.py)
        "-A C -p udp -m addrtype --dst-type LOCAL -f -j RETURN"]
    # the SPD order: longer local prefix, then port-specific, before the rest
    assert rules[9:] == [
        "-A C -s 10.1.0.0/16 -d 10.2.3.0/24 -j RETURN",
        "-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -p 6 -m tcp --sport 80 --dport 1000:2000 -j DROP",
        "-A C -s 10.1.0.0/16 -d 10.2.0.0/16 -j DROP",
        "-A C -s 10.8.0.0/16 -d 10.2.0.0/16 -m mark --mark 0x5/0xff -j DROP"], rules
    assert chain_rules("C", 6, pols, ["pluto0"], []) == []  # no IPv6 policy
    assert chain_rules("C", 4, [pols[2]], ["pluto0"], []) == []  # only a pass: no chain
    v6 = chain_rules("C", 6, [_pol(_ts("2001:db8::1/128"), _ts("2001:db8::2/128"))],
                     ["pluto0"], [])
    assert "-A C -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN" in v6  # ND
    assert v6[-1] == "-A C -s 2001:db8::1/128 -d 2001:db8::2/128 -j DROP"


def test_missing_iptables_logs_the_gap_once(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(inbound_filter, "_tool", lambda version, what: None)
    pols: list[PolicyParams] = []
    f = InboundFilter("pluto0", lambda: (pols, ["pluto0"], []))
    try:
        caplog.set_level(logging.ERROR, "pypluto.kernel.userspace")
        for net in ("10.2.0.0/16", "10.3.0.0/16"):
            pols.append(_pol(_ts("10.1.0.0/16"), _ts(net)))
            f.update()
            assert f.sync()
        gap = [r.getMessage() for r in caplog.records
               if "inbound cleartext from protected subnets is not filtered" in r.getMessage()]
        assert gap == ["inbound cleartext from protected subnets is not filtered (IPv4): "
                       "iptables-restore not found"], gap
    finally:
        f.close()

