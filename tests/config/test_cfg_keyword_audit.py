"""Keyword audit (enforce or refuse, never ignore): keys and values that pypluto accepted
but acted on differently from Libreswan 5.2's ipsec.conf(5), and the effects of accepted
keys that no other test proved.

Each test reads the key from real ``ipsec.conf`` text (the parser), hands the resulting
Connection fields to the sans-I/O engine harness of ``tests/ike`` where the key is a
protocol setting, and checks what ipsec.conf(5) says.  Facts about Libreswan are
restated from its documentation, not copied.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)
from testsupport import RecordingLog

from pypluto.config.parser import parse_config_text
from pypluto.ike.settings import EngineSettings
from pypluto.kernel.base import SAExpire

BASE = "conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n\tauthby=secret\n"


def _cfg(body: str) -> Any:
    cfg = parse_config_text(BASE + body, "f")
    assert "c" in cfg.conns, [str(d) for d in cfg.diagnostics]
    return cfg


def _fields(body: str, *names: str) -> dict[str, Any]:
    conn = _cfg(body).conns["c"]
    return {n: getattr(conn, n) for n in names}


def _sas(side: Any, direction: str) -> list[Any]:
    return [sa for sa in side.kernel_sas.values() if sa.direction == direction]


# --- rekey=no with ipsec-max-bytes= / ipsec-max-packets= ---------------------------------


def test_rekey_no_is_not_overridden_by_the_traffic_limits() -> None:
    """rekey=no "prevents Pluto from requesting renegotiation" (ipsec.conf(5)); with
    ipsec-max-bytes= the SA then lives up to the hard limit and is not rekeyed (Libreswan
    sets no lower soft limit then).  Before: the soft limit (80%) and the polled counters
    rekeyed the Child SA regardless of rekey=no."""
    kw = _fields("\trekey=no\n\tipsec-max-bytes=1000\n\tipsec-max-packets=100\n",
                 "rekey", "ipsec_max_bytes", "ipsec_max_packets")
    assert kw == {"rekey": False, "ipsec_max_bytes": 1000, "ipsec_max_packets": 100}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = net.children(net.west)[0]
    # the kernel gets the hard limits only: no soft expiry to rekey on
    for side in (net.west, net.east):
        sas = list(side.kernel_sas.values())
        assert sas and all(sa.hard_bytes == 1000 and sa.hard_packets == 100 for sa in sas)
        assert all(sa.soft_bytes is None and sa.soft_packets is None for sa in sas)
    # the counters of the userspace plane near the limit: no rekey
    net.apply(net.west, net.west.engine.sa_counters(old.spi_in, 990, 99, net.now))
    net.run()
    # a soft expiry (a kernel that has one anyway, or sequence numbers): no rekey either
    c = net.west.engine.children_in[old.spi_in]
    ev = SAExpire(dst=c.local_addr, spi=c.spi_in, protocol="esp", hard=False, reason="bytes")
    net.apply(net.west, net.west.engine.sa_expired(ev, net.now))
    net.run()
    assert [ch.spi_in for ch in net.children(net.west)] == [old.spi_in]
    assert not any("rekeying" in str(m) for m in net.west.logs())
    # the hard limit still deletes it
    ev = SAExpire(dst=c.local_addr, spi=c.spi_in, protocol="esp", hard=True, reason="bytes")
    net.apply(net.west, net.west.engine.sa_expired(ev, net.now))
    net.run()
    assert not net.children(net.west) and not net.children(net.east)


def test_rekey_yes_rekeys_at_the_soft_limit() -> None:
    """The contrast of the test above: the same limits with rekey=yes (the default)
    rekey the Child SA when the counters pass the soft limit."""
    kw = _fields("\tipsec-max-bytes=1000\n", "rekey", "ipsec_max_bytes")
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    old = net.children(net.west)[0]
    net.apply(net.west, net.west.engine.sa_counters(old.spi_in, 990, 5, net.now))
    net.run()
    assert [ch.spi_in for ch in net.children(net.west)] != [old.spi_in]


# --- the soft limits of ipsec-max-bytes= / ipsec-max-packets= ----------------------------


def test_soft_limits_are_a_quarter_for_the_initiator_and_a_half_for_the_responder() -> None:
    """ipsec.conf(5) ipsec-max-bytes=: "Pluto sets the original initiator's soft limit to
    25% of ipsec-max-bytes (with 12% fuzz) and the original responder's soft limit to 50%
    (with 12% fuzz)", so that the initiator rekeys first.  Small limits get no fuzz.
    Before: both ends used 80%, so both rekeyed at the same count (a collision)."""
    kw = _fields("\tipsec-max-bytes=1000\n\tipsec-max-packets=100\n",
                 "ipsec_max_bytes", "ipsec_max_packets")
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    assert {(sa.soft_bytes, sa.soft_packets) for sa in net.west.kernel_sas.values()} == \
        {(250, 25)}
    assert {(sa.soft_bytes, sa.soft_packets) for sa in net.east.kernel_sas.values()} == \
        {(500, 50)}
    # the counters of the userspace plane use the same limits
    wc, ec = net.children(net.west)[0], net.children(net.east)[0]
    net.apply(net.east, net.east.engine.sa_counters(ec.spi_in, 0, 30, net.now))
    net.run()
    assert [c.spi_in for c in net.children(net.east)] == [ec.spi_in]  # below 50
    net.apply(net.west, net.west.engine.sa_counters(wc.spi_in, 0, 30, net.now))
    net.run()
    assert [c.spi_in for c in net.children(net.west)] != [wc.spi_in]  # past 25: rekeyed


def test_large_soft_limits_carry_fuzz_within_an_eighth_of_half() -> None:
    hard = 2**30
    kw = _fields("\tipsec-max-bytes=1GiB\n", "ipsec_max_bytes")
    assert kw == {"ipsec_max_bytes": hard}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    half, fuzz = hard // 2, hard // 16
    w = {sa.soft_bytes for sa in net.west.kernel_sas.values()}
    e = {sa.soft_bytes for sa in net.east.kernel_sas.values()}
    assert len(w) == 1 and len(e) == 1  # one limit per Child SA (both its SAs)
    assert all(half // 2 <= s <= half // 2 + fuzz + 1 for s in w), w
    assert all(half - fuzz - 1 <= s <= half for s in e), e
    assert max(w) < min(e)


# --- ikelifetime= / ipsec-lifetime= above the maximum ------------------------------------


def test_lifetimes_above_24h_are_capped_with_a_warning() -> None:
    """ipsec.conf(5): ikelifetime= and salifetime= have a maximum of 24h; Libreswan uses
    24h for a longer value ("exceeds maximum of 86400 seconds, setting to the maximum
    allowed").  Before: pypluto kept the keys for up to the 10 years it parsed."""
    cfg = _cfg("\tikelifetime=48h\n\tsalifetime=2d\n")
    conn = cfg.conns["c"]
    assert (conn.ikelifetime, conn.salifetime) == (86400.0, 86400.0)
    warns = [str(d) for d in cfg.diagnostics if d.severity == "warning"]
    assert any(w.startswith("f:5: ") and "ikelifetime=172800 seconds exceeds maximum of "
               "86400 seconds" in w for w in warns), warns
    assert any(w.startswith("f:6: ") and "ipsec-lifetime=172800 seconds exceeds maximum"
               in w for w in warns), warns
    # 24h itself and less: as written, no warning
    cfg = _cfg("\tikelifetime=24h\n\tipsec-lifetime=1h\n")
    assert (cfg.conns["c"].ikelifetime, cfg.conns["c"].salifetime) == (86400.0, 3600.0)
    assert not [d for d in cfg.diagnostics if d.severity == "warning"]
    # the engine: both SAs expire a day after they were made
    kw = {"ikelifetime": conn.ikelifetime, "salifetime": conn.salifetime}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    ike = next(iter(net.west.engine.by_serial.values()))
    assert ike.expire_at == net.now + 86400.0
    assert [c.expire_at for c in ike.children] == [net.now + 86400.0]


def test_zero_lifetimes_are_refused() -> None:
    """ikelifetime=0 / salifetime=0: the SA would expire the moment it is made (and an
    auto=start conn would be made again at once, for ever); Libreswan raises such a
    lifetime to rekeymargin + rekeyfuzz.  Before: pypluto loaded it as written."""
    for body, key in (("\tikelifetime=0\n", "ikelifetime=0"),
                      ("\tsalifetime=0s\n", "ipsec-lifetime=0s"),
                      ("\tkeylife=0\n", "ipsec-lifetime=0")):
        cfg = parse_config_text(BASE + body, "f")
        assert "c" not in cfg.conns
        assert any(str(d).startswith(f"f:5: {key} is not supported by pypluto (an SA that "
                                     "expires at once") for d in cfg.diagnostics), \
            [str(d) for d in cfg.diagnostics]
    # one second is a lifetime (rekeyed at half of it, see daemon/registry.lifetime_notes)
    assert _cfg("\tikelifetime=1s\n").conns["c"].ikelifetime == 1.0


# --- esn=either as a responder ------------------------------------------------------------


def test_esn_either_responder_picks_yes_whatever_the_peers_order() -> None:
    """ipsec.conf(5) esn=: "As a responder, if either is received, yes is picked."
    Before: the responder took the peer's first ESN transform (no, when listed first)."""
    assert _fields("\tesn=either\n", "esn") == {"esn": "either"}
    from pypluto.config.proposals import parse_proposals

    spec = parse_proposals("aes_gcm256", "ESP")[0]
    no_first = [dataclasses.replace(spec, esn=(0, 1))]  # ESN: no, then yes
    for east_esn, want in (("either", True), ("no", False), ("yes", True)):
        net = Net(east_kw={"esn": east_esn, "esp": "aes_gcm256"})
        net.west.engine.connections["west-east"].esp = no_first
        net.up()
        assert {sa.esn for sa in net.west.kernel_sas.values()} == {want}, east_esn
        assert {sa.esn for sa in net.east.kernel_sas.values()} == {want}, east_esn


# --- effects of accepted keys that no other test proved ---------------------------------


def test_fragmentation_force_is_yes_for_ikev2() -> None:
    """fragmentation=force (insist) is IKEv1's; for IKEv2 Libreswan 5.2 uses
    fragmentation=yes (with a warning, which pypluto did not print): RFC 7383 fragments
    once both ends announced them."""
    for value in ("force", "insist"):
        cfg = _cfg(f"\tfragmentation={value}\n")
        assert [str(d) for d in cfg.diagnostics if d.severity == "warning"] == [
            f"f:5: warning: while loading 'c': IKEv1 only fragmentation={value} ignored; "
            "using fragmentation=yes"]
        kw = {"fragmentation": cfg.conns["c"].fragmentation}
        st = EngineSettings(fragment_size=160)
        net = Net(west_kw=kw, east_kw=kw, west_settings=st, east_settings=st)
        net.up()
        assert net.established(net.west) and net.children(net.east)
        from pypluto.wire.message import parse_message
        skf = [d for _, d in net.sent if parse_message(d).payloads[-1].payload_type == 53]
        assert skf, value


def test_dpdtimeout_is_ignored_for_ikev2_as_in_libreswan() -> None:
    """dpdtimeout= is IKEv1's (obsolete for IKEv2: a warning, Libreswan 5.2 warns the
    same): a dead peer is declared after retransmit-timeout=, not after dpdtimeout=."""
    cfg = _cfg("\tdpddelay=10\n\tdpdtimeout=5\n\tretransmit-timeout=40s\n")
    conn = cfg.conns["c"]
    assert any(d.severity == "warning" and "dpdtimeout" in str(d) for d in cfg.diagnostics)
    kw = {"dpddelay": conn.dpddelay, "dpdtimeout": conn.dpdtimeout,
          "retransmit_timeout": conn.retransmit_timeout}
    assert kw == {"dpddelay": 10.0, "dpdtimeout": 0.0, "retransmit_timeout": 40.0}
    net = Net(west_kw=kw, east_kw=kw)
    net.up()
    net.cut = True
    net.advance(10 + 30)  # a probe at 10 s, 30 s of retransmits: still alive
    assert "peer-dead" not in [e.kind for e in net.west.events]
    net.advance(15)  # past 10 + 40 s
    assert "peer-dead" in [e.kind for e in net.west.events]


# --- leftikeport= on the local end --------------------------------------------------------


class _Driver:
    def __init__(self) -> None:
        self.added: list[str] = []

    def now(self) -> float:
        return 0.0

    def run(self, call: Any, **_kw: object) -> None:
        class _E:
            def add_connection(_self, conn: Any) -> list[Any]:  # noqa: N805
                self.added.append(conn.name)
                return []
        call(_E())


def _registry() -> tuple[Any, RecordingLog, _Driver]:
    import ipaddress

    from pypluto.daemon.registry import Registry

    log, drv = RecordingLog(), _Driver()
    reg = Registry(log, drv, True, lambda name: 0)  # type: ignore[arg-type]
    reg.local_addrs = {ipaddress.ip_address("192.0.2.1")}
    return reg, log, drv


def test_local_ikeport_is_refused_and_the_peers_works() -> None:
    """leftikeport= is "the UDP IKE port to listen on or send data to" (ipsec.conf(5)):
    on the peer's end pypluto sends there (test_cfg_effects.py::
    test_peer_ikeport_is_where_ike_goes); on this host's end it would be a socket of the
    conn's own, which pypluto does not open.  Before: the conn loaded and IKE ran on the
    usual ports, the setting silently ignored; now the oriented conn is refused with
    file:line.  (Left is 192.0.2.1, this host.)"""
    from pypluto.control.protocol import RC_FATAL, RC_SUCCESS

    cases = [("\trightikeport=4501\n", RC_SUCCESS, None),
             ("\tleftikeport=4501\n", RC_FATAL, "f:5: leftikeport=4501 is not supported"),
             ("\tikeport=4501\n", RC_FATAL, "f:5: leftikeport=4501 is not supported")]
    for body, rc, why in cases:
        conn = _cfg(body).conns["c"]
        reg, log, drv = _registry()
        out: list[str] = []
        assert reg.add(conn, out.append) == rc, (body, log.lines)
        if why is None:
            assert drv.added == ["c"] and "c" in reg.conns
            continue
        assert drv.added == [] and "c" not in reg.conns
        assert any(level == "error" and m.startswith(why) for level, m in log.lines), log.lines
        assert any(m.startswith(f'"c": {why}') for m in out), out
    # the same conn seen from the other host (right is local): leftikeport= is the peer's
    conn = _cfg("\tleftikeport=4501\n").conns["c"]
    reg, log, drv = _registry()
    import ipaddress
    reg.local_addrs = {ipaddress.ip_address("192.0.2.2")}
    assert reg.add(conn) == RC_SUCCESS and drv.added == ["c"]


# --- config setup ikev1-policy= ------------------------------------------------------------


def _ikev1_request(exchange: int = 2) -> bytes:
    """An ISAKMP header (IKEv1 Main Mode by default) with one empty SA payload."""
    body = bytes([0, 0, 0, 4])
    return (bytes(range(1, 9)) + bytes(8) + bytes([1, 0x10, exchange, 0]) + bytes(4)
            + (28 + len(body)).to_bytes(4, "big") + body)


def test_ikev1_policy_reject_answers_and_drop_is_silent() -> None:
    """ikev1-policy= (ipsec.conf(5)): drop (the default) "will silently drop any received
    IKEv1 packet", reject "will reply with an error".  Before: reject was accepted and
    dropped like drop.  The error is an ISAKMP Informational with INVALID_MAJOR_VERSION
    (RFC 2408 §3.14.1) under the request's cookies; an Informational is never answered,
    so that two rejecting ends do not answer each other forever."""
    from pypluto.ike.actions import Endpoint, SendPacket
    from pypluto.ike.engine import Engine

    def settings(text: str) -> EngineSettings:
        cfg = parse_config_text(f"config setup\n\t{text}\n", "f")
        assert not cfg.errors, [str(d) for d in cfg.diagnostics]
        return EngineSettings.from_setup(cfg.setup)

    assert settings("ikev1-policy=reject").ikev1_reject
    assert not settings("ikev1-policy=drop").ikev1_reject
    assert not settings("uniqueids=yes").ikev1_reject  # drop is the default

    net = Net()
    w, e = net.west.addr, net.east.addr
    local, remote = Endpoint(e, 500), Endpoint(w, 500)
    for st, answered in ((settings("ikev1-policy=drop"), False),
                         (settings("ikev1-policy=reject"), True)):
        eng = Engine(st, net.east.engine.secrets, local_addrs=[e])
        acts = eng.receive(_ikev1_request(), local, remote, net.now)
        sent = [a for a in acts if isinstance(a, SendPacket)]
        assert bool(sent) == answered
        if answered:
            (pkt,) = sent
            assert (pkt.local, pkt.remote) == (local, remote)
            d = pkt.data
            assert d[:8] == bytes(range(1, 9)) and d[8:16] == bytes(8)  # the cookies
            assert (d[16], d[17], d[18]) == (11, 0x10, 5)  # N, IKEv1, Informational
            assert int.from_bytes(d[24:28], "big") == len(d) == 40
            assert int.from_bytes(d[32:36], "big") == 1 and d[36] == 1  # DOI, ISAKMP
            assert int.from_bytes(d[38:40], "big") == 5  # INVALID_MAJOR_VERSION
            # an Informational (our own answer, or a peer's) is not answered
            assert not [a for a in eng.receive(d, local, remote, net.now)
                        if isinstance(a, SendPacket)]
            assert not [a for a in eng.receive(_ikev1_request(5), local, remote, net.now)
                        if isinstance(a, SendPacket)]
            assert not [a for a in eng.receive(_ikev1_request()[:20], local, remote,
                                               net.now) if isinstance(a, SendPacket)]
        assert not eng.by_serial  # no state either way


# --- rightid=%none / %any with a fixed peer; %fromcert with PSK ---------------------------


def test_peer_id_none_or_any_with_a_fixed_peer_is_its_address() -> None:
    """rightid=%none: "one wishes for it to default instead of being explicitly set"
    (ipsec.conf(5) leftid=): the default, the peer's address.  Libreswan turns %any into the same unset
    ID, which becomes the host's address when right= is one.  Before: both were a
    wildcard in pypluto, so a peer at a fixed address could show any ID (with
    certificates: any certificate of the CA, not one for its address).  Only a peer at
    right=%any may show any ID.  (East's remote end is left: leftid= here.)"""
    for value in ("%none", "%any"):
        cfg = _cfg(f"\trightid={value}\n")
        assert cfg.conns["c"].right.id is not None and cfg.conns["c"].right.id.any
        # west shows @west.example: not its address
        net = Net(east_kw={"leftid": value})
        net.up()
        assert not net.established(net.east), value
        assert any("no connection matches peer FQDN '@west.example'" in m
                   for m in net.east.logs()), (value, net.east.logs())
        # west shows its address (leftid unset on west): the default ID matches
        net = Net(west_kw={"leftid": None}, east_kw={"leftid": value})
        net.up()
        assert net.established(net.east) and net.established(net.west), value
    # a peer at %any: any ID
    net = Net(east_kw={"left": "%any", "leftid": "%any"})
    net.up()
    assert net.established(net.east)


def test_fromcert_id_with_psk_or_null_is_refused() -> None:
    """Libreswan 5.2's pluto refuses to add a conn whose PSK or NULL end has
    %fromcert: "ID cannot be specified as %fromcert if PSK or AUTH-NULL is used" (there
    is no certificate to take it from; its parser, like ours, loads the file).  Before:
    pypluto added it; as the peer's ID it matched any DN, as ours it was an empty DN."""
    from pypluto.control.protocol import RC_FATAL, RC_SUCCESS

    why = "ID cannot be specified as %fromcert if PSK or AUTH-NULL is used"
    for body, line in (("\tleftid=%fromcert\n", 5), ("\trightid=%fromcert\n", 5),
                       ("\tleftauth=secret\n\trightauth=rsasig\n\tleftid=%fromcert\n", 7)):
        conn = _cfg(body).conns["c"]  # the file loads (ipsec addconn --checkconfig)
        reg, log, drv = _registry()
        out: list[str] = []
        assert reg.add(conn, out.append) == RC_FATAL and not drv.added
        assert out == [f'"c": f:{line}: {why}'], out
        assert ("error", f"f:{line}: {why}") in log.lines
    for body in ("\tauthby=rsasig\n\trightid=%fromcert\n",
                 "\tleftauth=secret\n\trightauth=rsasig\n\trightid=%fromcert\n"):
        cfg = parse_config_text("conn c\n\tleft=192.0.2.1\n\tright=192.0.2.2\n" + body, "f")
        reg, log, drv = _registry()
        assert reg.add(cfg.conns["c"]) == RC_SUCCESS and drv.added == ["c"], log.lines


# --- addresspool= / modecfgserver= / modecfgclient= combinations -------------------------


def test_pool_and_modecfg_contradictions_are_refused_as_libreswan_does() -> None:
    """Libreswan 5.2's pluto refuses these conns when they are added (its words): an end
    both server and client, a server end with a pool of its own (the pool is the
    client's end), a client whose peer has the pool.  pypluto added them."""
    head = "conn c\n\tleft=192.0.2.1\n\tright=%any\n\tauthby=secret\n"
    from pypluto.control.protocol import RC_FATAL, RC_SUCCESS

    rows = [
        ("\tleftmodecfgserver=yes\n\tleftmodecfgclient=yes\n", 6,
         "both leftmodecfgserver=yes and leftmodecfgclient=yes defined"),
        ("\tleftmodecfgserver=yes\n\tleftaddresspool=10.0.0.1-10.0.0.9\n", 6,
         "leftmodecfgserver=yes does not expect leftaddresspool="),
        ("\tleftmodecfgclient=yes\n\trightaddresspool=10.0.0.1-10.0.0.9\n", 6,
         "leftmodecfgclient=yes does not expect rightaddresspool="),
    ]
    for body, line, why in rows:
        cfg = parse_config_text(head + body, "f")
        conn = cfg.conns["c"]
        reg, log, drv = _registry()
        out: list[str] = []
        assert reg.add(conn, out.append) == RC_FATAL and not drv.added, (body, log.lines)
        assert out == [f'"c": f:{line}: {why}'], out
    # the usual road warrior gateway loads
    cfg = parse_config_text(head + "\tleftmodecfgserver=yes\n\trightmodecfgclient=yes\n"
                            "\trightaddresspool=10.0.0.1-10.0.0.9\n\tleftsubnet=0.0.0.0/0\n",
                            "f")
    reg, log, drv = _registry()
    assert reg.add(cfg.conns["c"]) == RC_SUCCESS and drv.added == ["c"], log.lines


# --- leftsourceip= ------------------------------------------------------------------------


def test_sourceip_outside_the_selectors_is_refused_as_libreswan_does() -> None:
    """Libreswan 5.2's pluto refuses leftsourceip= outside leftsubnet= (or, without one,
    other than left=), a second address of one family, and 0.0.0.0: packets sent from an
    address outside the conn's selectors match no IPsec policy and leave in the clear.
    pypluto added such conns (its route then used that source)."""
    from pypluto.control.protocol import RC_FATAL, RC_SUCCESS

    rows = [
        ("\tleftsubnet=10.0.0.0/24\n\tleftsourceip=10.9.9.9\n", 6,
         "leftsourceip=10.9.9.9 invalid, address 10.9.9.9 is not within "
         "leftsubnet=10.0.0.0/24"),
        ("\tleftsourceip=10.9.9.9\n", 5,
         "leftsourceip=10.9.9.9 invalid, address 10.9.9.9 does not match left=192.0.2.1 "
         "and leftsubnet= was not specified"),
        ("\tleftsubnet=10.0.0.0/24\n\tleftsourceip=10.0.0.1,10.0.0.2\n", 6,
         "leftsourceip=10.0.0.1,10.0.0.2 invalid, multiple IPv4 addresses (10.0.0.1 and "
         "10.0.0.2) specified"),
        ("\tleftsubnet=0.0.0.0/0\n\tleftsourceip=0.0.0.0\n", 6,
         "leftsourceip=0.0.0.0 invalid, must be a valid address"),
        ("\trightsubnet=10.1.0.0/24\n\trightsourceip=10.2.0.1\n", 6,
         "rightsourceip=10.2.0.1 invalid, address 10.2.0.1 is not within "
         "rightsubnet=10.1.0.0/24"),
    ]
    for body, line, why in rows:
        conn = _cfg(body).conns["c"]
        reg, log, drv = _registry()
        out: list[str] = []
        assert reg.add(conn, out.append) == RC_FATAL and not drv.added, (body, log.lines)
        assert out == [f'"c": f:{line}: {why}'], out
    for body in ("\tleftsubnet=10.0.0.0/24\n\tleftsourceip=10.0.0.1\n",
                 "\tleftsourceip=192.0.2.1\n",
                 "\tleftsubnet=10.0.0.0/24,2001:db8::/64\n\tleftsourceip=10.0.0.1,2001:db8::1\n"
                 # both families on both ends, or the selectors' families conflict
                 "\trightsubnet=10.1.0.0/24,2001:db8:1::/64\n"):
        conn = _cfg(body).conns["c"]
        reg, log, drv = _registry()
        assert reg.add(conn) == RC_SUCCESS and drv.added == ["c"], (body, log.lines)


def test_sourceip_of_each_family_goes_on_that_familys_policies() -> None:
    """leftsourceip=10.0.0.1,2001:db8::1 (one address per family, ipsec.conf(5) allows
    both): the IPv4 policies' routes use 10.0.0.1 and the IPv6 ones 2001:db8::1.  Before:
    every policy got the first address, whatever its family (the other was ignored)."""
    import ipaddress

    from pypluto.ike.traps import trap_policies

    conn = _cfg("\tleftsubnet=2001:db8::/64,198.51.100.0/24\n"
                "\tleftsourceip=2001:db8::1,198.51.100.1\n"
                "\trightsubnet=2001:db8:1::/64,203.0.113.0/24\n").conns["c"]
    conn.orient({ipaddress.ip_address("192.0.2.1")})
    want = {4: ipaddress.ip_address("198.51.100.1"), 6: ipaddress.ip_address("2001:db8::1")}
    traps = [p for p in trap_policies(conn, 7) if p.direction == "out"]
    assert {p.src.network.version for p in traps} == {4, 6}
    assert all(p.source_ip == want[p.src.network.version] for p in traps), traps
    # the engine's policies of an established IPv6 Child SA (IPv4 outside)
    kw = {"leftsubnet": "2001:db8::/64", "rightsubnet": "2001:db8:1::/64"}
    net = Net(west_kw=kw, east_kw=kw)
    net.west.engine.connections["west-east"].left.sourceip = [
        ipaddress.ip_address("198.51.100.1"), ipaddress.ip_address("2001:db8::1")]
    net.up()
    assert net.children(net.west)
    outs = [p for p in net.west.policies if p.direction == "out"]
    assert outs and {p.src.network.version for p in outs} == {6}
    assert all(p.source_ip == want[6] for p in outs), outs


# --- leftca= with rightca=%same -------------------------------------------------------------


def test_rightca_same_is_our_leftca_when_it_is_set(tmp_path: Any) -> None:
    """ipsec.conf(5) leftca=: rightca=%same allows "only peers with certificates signed by
    the same CA as the leftca"; leftca= "defaults to the CA that signed the certificate
    specified in leftcert".  Before: %same always meant our certificate's issuers, an
    explicit leftca= was ignored."""
    from ike.test_certs import cert_net
    from pki import PKI

    assert _cfg("\tleftca=%same\n\trightca=%same\n").conns["c"].left.ca == "%same"
    pki = PKI.build()
    inter = "C=CH, O=pypluto test, CN=pypluto test intermediate"
    for leftca, up in ((None, True), (inter, True),
                       ("C=CH, O=pypluto test, CN=some other CA", False)):
        net = cert_net(tmp_path, pki.ee("west"), pki.ee("east"), pki)
        conn = net.east.engine.connections["west-east"]
        conn.remote.ca, conn.local.ca = "%same", leftca
        net.up()
        assert bool(net.established(net.east)) == up, (leftca, net.east.logs())
        if not up:
            assert any("is not issued under rightca='%same'" in m for m in net.east.logs())
