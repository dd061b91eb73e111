"""Road warriors against a hostile peer: the Configuration Payload and address-pool
leases (RFC 7296 §2.19, §3.15; ``rightaddresspool=``, ``leftmodecfgserver=``,
``leftmodecfgclient=``).

East is the gateway (``left=%any``, ``leftid=%any``, an address pool, the split
subnet 203.0.113.0/24); west holds the clients (``west-east`` as @west.example and
``c1``, ``c2``... as @c1.example...), all from 192.0.2.1.  A hostile client bends
its IKE_AUTH request (re-protected with its own keys, the AUTH payload does not cover
the CP or the selectors); a hostile gateway bends its IKE_AUTH answer.  The RFC
answer or silence is expected, never an exception; a lie must not move state: no
address leased twice, none leaked, no Child SA for an address that is not the
peer's, and both ends agree on what exists.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

import pytest

from pypluto.crypto import dh
from pypluto.iana import CFGType, CPAttr, ProtocolID
from pypluto.iana import NotifyType as N
from pypluto.iana import PayloadType as PT
from pypluto.ike import codec
from pypluto.ike import pool as poolmod
from pypluto.ike import ts as tsmod
from pypluto.ike.actions import SendPacket
from pypluto.ike.engine import Engine
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import config_payload as cpmod
from pypluto.wire import payloads as wp

from .harness import PSK, WEST, Net, Store, make_conn

POOL = "198.51.100.10-198.51.100.11"
V4 = ipaddress.ip_address
NET = ipaddress.ip_network
Payloads = list[wp.Payload]


# ------------------------------------------------------------------ helpers
def _client(net: Net, name: str) -> None:
    """Another road warrior on west: conn ``name`` with the ID @name.example."""
    c = make_conn(name, local_left=True, leftid=f"@{name}.example", leftsubnet=None)
    c.left.modecfgclient = True
    net.apply(net.west, net.west.engine.add_connection(c))


def rw_net(pool: str = POOL, clients: int = 0, **east_raw: str) -> Net:
    net = Net(west_kw={"leftsubnet": None},
              east_kw={"leftsubnet": None, "left": "%any", "leftid": "%any"})
    net.west.engine.connections["west-east"].left.modecfgclient = True
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool = pool
    ec.right.modecfgserver = True
    ec.raw.update(east_raw)
    for i in range(1, clients + 1):
        _client(net, f"c{i}")
    return net


def _up(net: Net, name: str) -> None:
    net.apply(net.west, net.west.engine.initiate(name, net.now))
    net.run()


def _east_sas(net: Net) -> list[IKESA]:
    return list(net.east.engine.by_serial.values())


def _east_of(net: Net, ident: str) -> IKESA:
    (e,) = [i for i in _east_sas(net) if str(i.remote_id) == ident and i.established]
    return e


def _west_of(net: Net, name: str) -> IKESA:
    (w,) = [i for i in net.west.engine.by_serial.values()
            if i.conn.name == name and i.established]
    return w


def _in_use(net: Net) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    return {a: who for _, a, who in net.east.engine.leases.in_use()}


def _east_child_ts(net: Net) -> list[tuple[str, list[str]]]:
    """(peer ID, remote selectors) of every established Child SA on east."""
    ids = {i.serial: str(i.remote_id) for i in _east_sas(net)}
    return [(ids[i.serial], c.remote_ts) for i in net.east.engine.status(net.now).ike_sas
            for c in i.children if c.state == "STATE_V2_ESTABLISHED_CHILD_SA"]


def _no_internal_error(net: Net) -> None:
    assert not [m for m in net.west.logs() + net.east.logs() if "internal error" in m]


def _east_policies_for(net: Net, addr: str) -> list[object]:
    return [p for p in net.east.policies if str(p.dst) == addr]


def _hostile_auth_request(net: Net, mutate: Callable[[Payloads], Payloads],
                          name: str = "west-east") -> tuple[IKESA, IKESA, Payloads | None]:
    """West's IKE_AUTH request for ``name``, decrypted, bent by ``mutate`` and
    re-protected with west's keys, goes to east; east's answer is returned decrypted
    (and delivered to west, which reacts as it does)."""
    net.apply(net.west, net.west.engine.initiate(name, net.now))
    net.step()  # INIT request
    net.step()  # INIT response: west sends IKE_AUTH
    frm, pkt = net.queue.pop(0)
    assert frm is net.west and not net.queue
    (w,) = [i for i in net.west.engine.by_serial.values() if i.conn.name == name
            and not i.established]
    (e,) = [i for i in _east_sas(net) if i.spi_i == w.spi_i]
    msg = codec.parse(pkt.data)
    assert isinstance(msg.sk, wp.SKPayload)
    payloads = codec.decrypt(msg.sk, e.prot_in)
    answer: Payloads | None = None
    for d in net.west.engine.encode(w, 35, False, msg.message_id, mutate(payloads)):
        acts = net.east.engine.receive(d, pkt.remote, pkt.local, net.now)
        net.apply(net.east, acts)
        for a in acts:
            if isinstance(a, SendPacket):
                m = codec.parse(a.data)
                if m.response and isinstance(m.sk, wp.SKPayload):
                    answer = codec.decrypt(m.sk, w.prot_in)
    net.run()
    return w, e, answer


def _with_cp(*cps: wp.Payload) -> Callable[[Payloads], Payloads]:
    """Replace the request's CP payload by ``cps`` (in its place)."""
    def mutate(payloads: Payloads) -> Payloads:
        out: Payloads = []
        for p in payloads:
            if isinstance(p, wp.CPPayload):
                out += cps
            else:
                out.append(p)
        return out
    return mutate


def _cps(payloads: Payloads | None) -> list[wp.CPPayload]:
    assert payloads is not None, "no answer"
    return [p for p in payloads if isinstance(p, wp.CPPayload)]


def _notifies(payloads: Payloads | None) -> list[int]:
    assert payloads is not None, "no answer"
    return [int(p.notify_type) for p in payloads if isinstance(p, wp.NotifyPayload)]


def _req(*attrs: wp.CPAttribute, cfg: int = CFGType.CFG_REQUEST) -> wp.CPPayload:
    return wp.CPPayload(cfg, list(attrs))


def _a4(value: bytes = b"") -> wp.CPAttribute:
    return wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, value)


def _nothing_half_done(net: Net) -> None:
    """Both ends agree: every Child SA of one end has its mirror at the other, and
    every lease belongs to a live IKE SA of east."""
    wspis = {(c.spi_in, c.spi_out) for i in net.west.engine.by_serial.values()
             for c in i.children}
    espis = {(c.spi_out, c.spi_in) for i in _east_sas(net) for c in i.children}
    assert wspis == espis, (wspis, espis)
    held = {le.addr for i in _east_sas(net) for le in i.leases if not le.released}
    assert held == {a for _, a, _ in net.east.engine.leases.in_use()}


# ================================================================== hostile client: the CP
@pytest.mark.parametrize("cfg", [CFGType.CFG_REPLY, CFGType.CFG_SET, CFGType.CFG_ACK, 0, 200])
def test_cp_of_another_type_than_cfg_request_leases_nothing(cfg: int) -> None:
    """§3.15: only a CFG_REQUEST is answered (with a CFG_REPLY).  A client that sends
    CFG_SET/CFG_ACK/CFG_REPLY (or a reserved type) in its IKE_AUTH request gets no
    address and no CFG_REPLY; west's client then refuses its Child SA and tells east,
    which keeps no Child SA of its own (nothing half-done)."""
    net = rw_net()
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(_a4(), cfg=cfg)))
    assert e.established and not _cps(answer)
    assert _in_use(net) == {} and e.leases == () and e.remote_vips == ()
    assert any("only CFG_REQUEST is answered" in m for m in net.east.logs())
    assert not net.children(net.west) and not net.children(net.east)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    _nothing_half_done(net)
    _no_internal_error(net)


def test_several_cp_payloads_get_one_address() -> None:
    """Two CFG_REQUESTs in one request: the first is answered, one address leased."""
    net = rw_net(POOL)
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(_a4()), _req(_a4(), _a4())))
    (reply,) = _cps(answer)
    addrs = [a for a in reply.attributes if int(a.attr_type) == CPAttr.INTERNAL_IP4_ADDRESS]
    assert [bytes(a.value) for a in addrs] == [V4("198.51.100.10").packed]
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
    assert [str(x) for x in e.remote_vips] == ["198.51.100.10"]
    _nothing_half_done(net)


def test_thousands_of_attributes_lease_one_address() -> None:
    """A CFG_REQUEST of 6,000 attributes (address requests, unknown and reserved
    types, DNS requests): one address, one DNS answer, the rest ignored, no crash."""
    many = [_a4(V4("198.51.100.11").packed)] + [
        wp.CPAttribute(t, b"x" * (i % 7)) for i in range(1500)
        for t in (CPAttr.INTERNAL_IP4_ADDRESS, 0x7FFF, 0, CPAttr.INTERNAL_IP4_DNS)]
    net = rw_net(modecfgdns="192.0.2.53")
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(*many)))
    (reply,) = _cps(answer)
    got = [(int(a.attr_type), bytes(a.value)) for a in reply.attributes]
    assert got == [(CPAttr.INTERNAL_IP4_ADDRESS, V4("198.51.100.11").packed),
                   (CPAttr.INTERNAL_IP4_DNS, V4("192.0.2.53").packed),
                   (CPAttr.INTERNAL_IP4_SUBNET, V4("203.0.113.0").packed
                    + V4("255.255.255.0").packed)]
    assert _in_use(net) == {V4("198.51.100.11"): "@west.example"}
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]


@pytest.mark.parametrize("attrs,v4,v6", [
    # a 5-octet IPv4 value that begins with another address: no hint, the first free one
    ([_a4(V4("198.51.100.11").packed + b"\x00")], "198.51.100.10", None),
    ([_a4(b"\xc6\x33\x64")], "198.51.100.10", None),  # 3 octets
    # IPv6 without its prefix-length octet (16), odd (15), too long (18): a request
    ([wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, ipaddress.ip_address("2001:db8:1::5").packed)],
     None, "2001:db8:1::1"),
    ([wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, b"\x20" * 15)], None, "2001:db8:1::1"),
    ([wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, b"\x20" * 18)], None, "2001:db8:1::1"),
])
def test_address_attributes_of_the_wrong_length(attrs: list[wp.CPAttribute], v4: str | None,
                                                 v6: str | None) -> None:
    net = rw_net("198.51.100.10-198.51.100.11,2001:db8:1::/126")
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(*attrs)))
    (reply,) = _cps(answer)
    got = {int(a.attr_type): bytes(a.value) for a in reply.attributes
           if int(a.attr_type) in (CPAttr.INTERNAL_IP4_ADDRESS, CPAttr.INTERNAL_IP6_ADDRESS)}
    want = {}
    if v4:
        want[CPAttr.INTERNAL_IP4_ADDRESS] = V4(v4).packed
    if v6:
        want[CPAttr.INTERNAL_IP6_ADDRESS] = ipaddress.ip_address(v6).packed + b"\x80"
    assert got == want
    assert len(e.leases) == len(want) and len(_in_use(net)) == len(want)
    _no_internal_error(net)


def test_truncated_cp_payload_is_refused_without_a_lease() -> None:
    """A CP whose attribute claims more octets than there are: the request is
    malformed; east answers with an error (or nothing), leases nothing, keeps nothing."""
    bad = wp.UnknownPayload(PT.CP, bytes([1, 0, 0, 0]) + bytes([0, 1, 0, 40]) + b"\x01\x02")
    net = rw_net()
    _w, _e, answer = _hostile_auth_request(net, _with_cp(bad))
    assert answer is None or not _cps(answer)
    assert _in_use(net) == {} and not net.east.kernel_sas
    _no_internal_error(net)


# ================================================================== hostile client: hints
@pytest.mark.parametrize("hint,why", [
    ("198.51.100.10", "taken"),  # c1's address, in use
    ("192.0.2.2", "outside the pool"),  # the gateway's own IKE address
    ("203.0.113.1", "outside the pool"),  # inside the gateway's protected subnet
    ("0.0.0.0", "outside the pool"),
    ("255.255.255.255", "outside the pool"),
])
def test_asking_for_an_address_that_is_not_ours_to_take(hint: str, why: str) -> None:
    net = rw_net("198.51.100.10-198.51.100.12", clients=1)
    _up(net, "c1")
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    _w, e, answer = _hostile_auth_request(net, _with_cp(_req(_a4(V4(hint).packed))))
    (reply,) = _cps(answer)
    (addr,) = [V4(bytes(a.value)) for a in reply.attributes
               if int(a.attr_type) == CPAttr.INTERNAL_IP4_ADDRESS]
    assert addr == V4("198.51.100.11")
    assert any(f"asked for {hint}, which is {why}" in m for m in net.east.logs())
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example",
                            V4("198.51.100.11"): "@west.example"}
    # c1 is untouched
    assert [str(x) for x in _east_of(net, "@c1.example").remote_vips] == ["198.51.100.10"]
    assert e.remote_vips == [V4("198.51.100.11")]


def test_asking_for_the_lingering_address_of_another_id() -> None:
    """c1 went; its address stays bound to its ID (it gets it back when it returns).
    Another client naming it gets a fresh one."""
    net = rw_net("198.51.100.10-198.51.100.12", clients=1)
    _up(net, "c1")
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    assert _in_use(net) == {}
    _hostile_auth_request(net, _with_cp(_req(_a4(V4("198.51.100.10").packed))))
    assert _in_use(net) == {V4("198.51.100.11"): "@west.example"}
    _up(net, "c1")
    assert _in_use(net)[V4("198.51.100.10")] == "@c1.example"


# ================================================================== hostile client: selectors
@pytest.mark.parametrize("tsi,answer", [
    ("198.51.100.10/32", N.TS_UNACCEPTABLE),  # c1's address only
    ("192.0.2.1/32", N.TS_UNACCEPTABLE),  # its outer address
    ("198.51.100.0/24", None),  # wider than its address: narrowed to it
    ("0.0.0.0/0", None),
])
def test_selectors_other_than_the_leased_address(tsi: str, answer: int | None) -> None:
    """A client that got 198.51.100.11 never gets a Child SA for another address:
    TSi naming only another client's (or its outer) address is TS_UNACCEPTABLE, a
    wider one is narrowed to its own address; c1's Child SA and policies stay."""
    net = rw_net(clients=1)
    _up(net, "c1")  # c1: 198.51.100.10

    def mutate(payloads: Payloads) -> Payloads:
        ts = tsmod.from_network(NET(tsi))
        return [codec.ts_payload(PT.TSi, [ts]) if p.payload_type == PT.TSi else p
                for p in payloads]

    _w, e, out = _hostile_auth_request(net, mutate)
    assert e.established and [str(x) for x in e.remote_vips] == ["198.51.100.11"]
    got = _east_child_ts(net)
    if answer is not None:
        assert answer in _notifies(out)
        assert got == [("@c1.example", ["198.51.100.10/32"])]
    else:
        assert sorted(got) == [("@c1.example", ["198.51.100.10/32"]),
                               ("@west.example", ["198.51.100.11/32"])]
    assert _east_policies_for(net, "198.51.100.10/32")  # c1's outbound policy
    _nothing_half_done(net)
    _no_internal_error(net)


# ================================================================== pool exhaustion
def test_one_client_too_many_is_refused_cleanly_and_takes_nothing() -> None:
    """Two addresses, three clients: the third gets INTERNAL_ADDRESS_FAILURE (§3.15.4),
    its IKE SA stands without a Child SA on both ends; the first two keep their
    addresses and Child SAs; when the third goes, nothing is released; when c1 goes,
    the third, back, gets c1's address (the one released longest ago)."""
    net = rw_net(clients=2)
    _up(net, "west-east")
    _up(net, "c1")
    before = _in_use(net)
    assert before == {V4("198.51.100.10"): "@west.example", V4("198.51.100.11"): "@c1.example"}
    _up(net, "c2")
    assert _in_use(net) == before
    e2 = _east_of(net, "@c2.example")
    assert e2.leases == () and e2.children == [] and e2.remote_vips == ()
    assert any("INTERNAL_ADDRESS_FAILURE" in m for m in net.west.logs())
    assert sorted(_east_child_ts(net)) == [("@c1.example", ["198.51.100.11/32"]),
                                           ("@west.example", ["198.51.100.10/32"])]
    _nothing_half_done(net)
    net.apply(net.west, net.west.engine.terminate("c2", net.now))
    net.run()
    assert _in_use(net) == before
    assert net.east.engine.leases.summary() == [(POOL, 2, 2, 0)]
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    _up(net, "c2")
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example",
                            V4("198.51.100.11"): "@c2.example"}
    assert net.east.engine.leases.summary() == [(POOL, 2, 2, 0)]
    _nothing_half_done(net)


def _reboot_west(net: Net, seed: int, initial_contact: bool) -> None:
    """West loses all its state (a reboot) and comes back with the same ID."""
    eng = Engine(EngineSettings(), Store(PSK), rng=random.Random(seed).randbytes,
                 local_addrs=[WEST])
    net.west.engine = eng
    c = make_conn(local_left=True, leftsubnet=None)
    c.left.modecfgclient = True
    c.initial_contact = initial_contact
    net.apply(net.west, eng.add_connection(c))


@pytest.mark.parametrize("initial_contact", [True, False])
def test_reconnect_with_the_same_id_gets_its_lease_back_and_leaks_none(
        initial_contact: bool) -> None:
    """The client reboots and comes back three times (uniqueids=yes): it gets the same
    address each time; with INITIAL_CONTACT the old IKE SA goes at once, without it
    the old one is deleted (and, unanswered, given up): either way, once the dust
    settles, one IKE SA holds the one address, and the pool counts it once."""
    net = rw_net()
    net.up()
    for k in range(3):
        _reboot_west(net, 50 + k, initial_contact)
        net.up()
        assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
        assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    net.advance(3600)
    (e,) = _east_sas(net)
    assert [str(le.addr) for le in e.leases] == ["198.51.100.10"]
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    assert _east_child_ts(net) == [("@west.example", ["198.51.100.10/32"])]
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)]


class _PerIdStore(Store):
    """A PSK per client ID (east's view); @c1.example's is not west's."""

    def psk_for(self, local, remote, local_addr, remote_addr):  # noqa: ANN001, ANN201
        self.asked.append((local, remote))
        return b"c1's own secret, not west's ones" if "c1" in str(remote) else self.psk


def test_a_client_claiming_the_id_of_another_cannot_take_its_lease() -> None:
    """c1 is up with its address.  West claims to be @c1.example (with INITIAL_CONTACT)
    but cannot prove it: AUTHENTICATION_FAILED; c1's IKE SA, Child SA and lease are
    untouched and nothing is leased to the impostor."""
    net = rw_net(clients=1)
    net.east.engine.secrets = _PerIdStore(PSK)
    net.west.engine.secrets = Store(b"c1's own secret, not west's ones")
    _up(net, "c1")
    c1 = _east_of(net, "@c1.example")
    # the impostor: another host (another engine) behind the same address
    real = net.west.engine
    _reboot_west(net, 7, initial_contact=True)
    net.west.engine.connections["west-east"].left.id = real.connections["c1"].left.id
    net.up()
    assert not net.established(net.west)
    net.west.engine = real
    assert any("AUTHENTICATION_FAILED" in m for m in net.east.logs())
    assert _east_of(net, "@c1.example") is c1 and len(c1.children) == 1
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    _no_internal_error(net)


# ================================================================== lease and IKE SA life
def test_gateway_initiated_ike_rekey_keeps_the_lease() -> None:
    net = rw_net()
    net.up()
    (e,) = _east_sas(net)
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.run()
    (e2,) = _east_sas(net)
    assert e2 is not e and [str(le.addr) for le in e2.leases] == ["198.51.100.10"]
    assert e2.remote_vips == [V4("198.51.100.10")] and e.leases == ()
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    w = _west_of(net, "west-east")
    assert w.local_vips == [V4("198.51.100.10")]
    _nothing_half_done(net)


def test_client_reauth_keeps_the_address_and_leaks_no_lease() -> None:
    """reauth=yes: the client makes a new IKE SA (a new IKE_AUTH, a new CFG_REQUEST)
    before deleting the old one: the same address again (uniqueids), and once the old
    one goes, one lease, held by the new IKE SA, on both ends."""
    net = rw_net()
    wc = net.west.engine.connections["west-east"]
    wc.reauth, wc.ikelifetime, wc.rekeymargin, wc.rekeyfuzz = True, 600.0, 60.0, 0.0
    net.up()
    (e_old,) = _east_sas(net)
    net.advance(700)
    (e,) = _east_sas(net)
    assert e is not e_old and [str(le.addr) for le in e.leases] == ["198.51.100.10"]
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    assert _west_of(net, "west-east").local_vips == [V4("198.51.100.10")]
    assert _east_child_ts(net) == [("@west.example", ["198.51.100.10/32"])]
    _nothing_half_done(net)


def _new_child_on(net: Net, w: IKESA, e: IKESA, tsi: str, extra: Payloads = ()
                  ) -> Payloads | None:
    """West asks east, on the IKE SA ``w``/``e``, for a Child SA for ``tsi`` (with
    ``extra`` payloads first: a REKEY_SA makes it a rekey)."""
    g = w.ke_group
    sa = codec.sa([(1, ProtocolID.ESP, b"\x12\x34\x56\x78",
                    [(1, 20, 256), (4, g, None), (5, 0, None)])])
    payloads = [*extra, sa, codec.nonce(b"n" * 32), codec.ke(g, dh.initiator_ke(g).public),
                codec.ts_payload(PT.TSi, [tsmod.from_network(NET(tsi))]),
                codec.ts_payload(PT.TSr, [tsmod.from_network(NET("203.0.113.0/24"))])]
    out = None
    for d in net.west.engine.encode(w, 36, False, e.next_in, payloads):
        acts = net.east.engine.receive(d, w.remote, w.local, net.now)
        net.apply(net.east, acts)
        for a in acts:
            if isinstance(a, SendPacket):
                m = codec.parse(a.data)
                if m.response and isinstance(m.sk, wp.SKPayload):
                    out = codec.decrypt(m.sk, w.prot_in)
    return out


def test_the_ike_sa_a_rekey_replaced_cannot_keep_the_address() -> None:
    """West rekeys its IKE SA but never deletes the old one (its Delete is lost), then
    leaves with the new one: the lease is released, and c1 gets the address.  The old
    IKE SA, still up on east, must not speak for that address any more: a Child SA
    for 198.51.100.10 on it would take c1's traffic."""
    net = rw_net("198.51.100.10/32", clients=1)
    net.up()
    w_old = _west_of(net, "west-east")
    (e_old,) = _east_sas(net)
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.step()  # the rekey request
    net.step()  # the answer: west sends its Delete of the old IKE SA ...
    net.queue.clear()  # ... which is lost
    assert e_old.serial in net.east.engine.by_serial
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()  # the new IKE SA is deleted: the lease is free
    assert _in_use(net) == {}
    _up(net, "c1")
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    assert e_old.remote_vips == () and e_old.leases == ()
    out = _new_child_on(net, w_old, e_old, "198.51.100.10/32")
    # refused before its selectors are looked at: the peer rekeyed this IKE SA, so it
    # makes no Child SA at all any more (test_hostile_rekey26)
    assert N.TEMPORARY_FAILURE in _notifies(out)
    assert _east_child_ts(net) == [("@c1.example", ["198.51.100.10/32"])]
    _no_internal_error(net)


def test_lease_released_exactly_once() -> None:
    """The client deletes its IKE SA: the address is released once (the pool counts 0
    in use, 1 lingering); the Delete replayed, a second release of the same lease and
    east's liveness timers running on change nothing."""
    net = rw_net()
    ec = net.east.engine.connections["west-east"]
    ec.dpddelay, ec.dpdtimeout = 5.0, 15.0
    net.up()
    (e,) = _east_sas(net)
    (lease,) = e.leases
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    delete = [p for f, p in net.queue if f is net.west]
    net.run()
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)] and lease.released
    for pkt in delete:  # the Delete again
        net.apply(net.east, net.east.engine.receive(bytes(pkt.data), pkt.remote, pkt.local,
                                                    net.now))
    net.east.engine.leases.release(lease)
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)]
    net.advance(120)
    assert net.east.engine.leases.summary() == [(POOL, 2, 0, 1)]


# ================================================================== hostile gateway
def _hostile_reply(mutate: Callable[[list[wp.CPAttribute]], list[wp.CPAttribute]],
                   monkeypatch: pytest.MonkeyPatch) -> None:
    real = cpmod.respond

    def respond(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        out, ok = real(*a, **kw)
        for p in out:
            if isinstance(p, wp.CPPayload):
                p.attributes = mutate(list(p.attributes))
        return out, ok

    monkeypatch.setattr(cpmod, "respond", respond)


def _client_refused_and_gateway_agrees(net: Net, why: str) -> None:
    """The client refused the Child SA (with ``why``) and said so: the gateway, which
    had installed it, deleted it; nothing stays half-done on either end."""
    assert any(why in m for m in net.west.logs()), net.west.logs()
    assert not net.children(net.west) and not net.west.kernel_sas
    assert not net.children(net.east) and not net.east.kernel_sas
    assert not net.west.policies and not net.east.policies
    _nothing_half_done(net)
    _no_internal_error(net)


def test_cfg_reply_without_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's CFG_REPLY holds DNS and subnets but no address: the client,
    which needs one, refuses the Child SA and deletes it at the gateway too."""
    _hostile_reply(lambda attrs: [a for a in attrs
                                  if int(a.attr_type) != CPAttr.INTERNAL_IP4_ADDRESS],
                   monkeypatch)
    net = rw_net(modecfgdns="192.0.2.53")
    net.up()
    assert net.established(net.west) and net.established(net.east)
    _client_refused_and_gateway_agrees(net, "no usable address")


def test_gateway_without_pool_leaves_no_child_sa_behind() -> None:
    """The conn of the gateway has no pool: it ignores the CP and answers a Child SA
    for the client's outer address; the client, without an address, refuses it, and
    the gateway must not keep its half (it did: the client sent no Delete, not knowing
    the gateway's SPI yet)."""
    net = rw_net()
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool = None
    ec.right.modecfgserver = False
    net.up()
    _client_refused_and_gateway_agrees(net, "no CFG_REPLY")


def test_gateway_lying_about_subnets_and_netmask(monkeypatch: pytest.MonkeyPatch) -> None:
    """INTERNAL_IP4_SUBNET 0.0.0.0/0, INTERNAL_IP4_NETMASK 0.0.0.0 and an IPv6 subnet
    in the CFG_REPLY: the client's selectors stay what its conn allows (its address,
    the gateway's rightsubnet=), its policies too."""
    _hostile_reply(lambda attrs: [*attrs,
                                  wp.CPAttribute(CPAttr.INTERNAL_IP4_SUBNET, bytes(8)),
                                  wp.CPAttribute(CPAttr.INTERNAL_IP4_NETMASK, bytes(4)),
                                  wp.CPAttribute(CPAttr.INTERNAL_IP6_SUBNET, bytes(17)),
                                  wp.CPAttribute(CPAttr.INTERNAL_IP4_SUBNET, b"\x01")],
                   monkeypatch)
    net = rw_net()
    net.up()
    (wc,) = net.children(net.west)
    assert wc.local_ts == ["198.51.100.10/32"] and wc.remote_ts == ["203.0.113.0/24"]
    nets = {(str(p.src), str(p.dst)) for p in net.west.policies}
    assert nets <= {("198.51.100.10/32", "203.0.113.0/24"),
                    ("203.0.113.0/24", "198.51.100.10/32")}, nets


def test_gateway_narrowing_to_another_address_than_it_gave(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The CFG_REPLY says 198.51.100.11 but the selectors say 198.51.100.10: the client
    refuses the Child SA and deletes it at the gateway."""
    _hostile_reply(lambda attrs: [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS,
                                                 V4("198.51.100.11").packed)
                                  if int(a.attr_type) == CPAttr.INTERNAL_IP4_ADDRESS else a
                                  for a in attrs], monkeypatch)
    net = rw_net()
    net.up()
    _client_refused_and_gateway_agrees(net, "is not our address 198.51.100.11")


@pytest.mark.parametrize("seed,k", [(1, 2), (7, 3)])
def test_address_survives_a_rekey_collision_whose_redundant_sa_is_deleted_early(
        seed: int, k: int) -> None:
    """§2.8.2: both ends rekey the IKE SA and one answer is lost (packet ``k``); the end
    that lost the nonce race deletes its redundant IKE SA before the other end's own
    rekey is answered, and the Child SA, the lease and the addresses go back to the
    old IKE SA and on to the winner (west hits this with seed 1, east, the gateway,
    with seed 7).  Both ends keep 198.51.100.10 on the IKE SA that survives."""
    from .test_loss_enumeration import FaultNet
    net = FaultNet(seed=seed, west_kw={"leftsubnet": None},
                   east_kw={"leftsubnet": None, "left": "%any", "leftid": "%any"})
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool, ec.right.modecfgserver = POOL, True
    net.west.engine.connections["west-east"].left.modecfgclient = True
    net.up()
    net.advance(1)
    net.sent.clear()
    net.k, net.fault, net.counting = k, "drop", True
    net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.apply(net.east, net.east.engine.rekey_ike("west-east", net.now))
    net.settle()
    (e,) = _east_sas(net)
    (w,) = net.west.engine.by_serial.values()
    assert e.remote_vips == [V4("198.51.100.10")] and len(e.children) == 1
    assert [str(le.addr) for le in e.leases] == ["198.51.100.10"]
    assert w.local_vips == [V4("198.51.100.10")] and len(w.children) == 1
    assert net.east.engine.leases.summary() == [(POOL, 2, 1, 0)]
    _nothing_half_done(net)
    _no_internal_error(net)


# ================================================================== pools of several conns
def _two_gateway_conns(pool_a: str, pool_b: str) -> Net:
    """East: ``west-east`` for @west.example with ``pool_a``, ``rw-b`` for
    @c1.example with ``pool_b``."""
    from pypluto.config.ids import parse_id
    net = rw_net(pool_a, clients=1)
    net.east.engine.connections["west-east"].left.id = parse_id("@west.example")
    b = make_conn("rw-b", local_left=False, leftsubnet=None, left="%any",
                  leftid="@c1.example")
    b.left.addresspool, b.right.modecfgserver = pool_b, True
    net.apply(net.east, net.east.engine.add_connection(b))
    _up(net, "west-east")
    _up(net, "c1")
    return net


@pytest.mark.parametrize("pool_b", ["198.51.100.9-198.51.100.10", "198.51.100.9 - 198.51.100.10",
                                    "198.51.100.9-198.51.100.10,2001:db8::/126"])
def test_one_range_spelt_two_ways_is_one_pool(pool_b: str) -> None:
    """Two conns whose pools are the same range written differently share it, as
    Libreswan: each address goes to one client (both got 198.51.100.9 before, and each
    gateway Child SA claimed it)."""
    net = _two_gateway_conns("198.51.100.8/30", pool_b)
    assert _in_use(net) == {V4("198.51.100.9"): "@west.example",
                            V4("198.51.100.10"): "@c1.example"}
    assert sorted(_east_child_ts(net)) == [("@c1.example", ["198.51.100.10/32"]),
                                           ("@west.example", ["198.51.100.9/32"])]
    assert net.east.engine.leases.summary() == [("198.51.100.8/30", 2, 2, 0)]


def test_a_pool_inexactly_overlapping_another_gives_no_address() -> None:
    """Pools that overlap without being the same range would lease one address twice
    (Libreswan refuses the second conn: "range inexactly overlaps existing address
    pool"): the second one leases nothing, says why, and the client gets
    INTERNAL_ADDRESS_FAILURE."""
    net = _two_gateway_conns("198.51.100.10-198.51.100.11", "198.51.100.11-198.51.100.12")
    assert _in_use(net) == {V4("198.51.100.10"): "@west.example"}
    assert any("address pool 198.51.100.11-198.51.100.12 inexactly overlaps address pool "
               "198.51.100.10-198.51.100.11 of another connection" in m
               for m in net.east.logs()), net.east.logs()
    assert _east_child_ts(net) == [("@west.example", ["198.51.100.10/32"])]
    assert any("INTERNAL_ADDRESS_FAILURE" in m for m in net.west.logs())
    _nothing_half_done(net)


# ================================================================== no CP at all
@pytest.mark.parametrize("nat", [True, False])
def test_client_skipping_the_cp_cannot_claim_a_leased_address(nat: bool) -> None:
    """A client behind a NAT sends no CP and names c1's leased address as its inner
    address in TSi.  ``virtual-private=`` covers the pool (as it often does: both are
    private ranges), but a road warrior's inner address is the leased one, never a
    claimed one: refused (FAILED_CP_REQUIRED since test_hostile_cp26: no CP, no lease),
    and c1 keeps the only Child SA for its address (the hostile client's policies would
    have replaced c1's)."""
    net = Net(nat=nat, east_settings=EngineSettings(virtual_private="%v4:198.51.100.0/24"),
              west_kw={"leftsubnet": None},
              east_kw={"leftsubnet": None, "left": "%any", "leftid": "%any"})
    ec = net.east.engine.connections["west-east"]
    ec.left.addresspool, ec.right.modecfgserver = POOL, True
    _client(net, "c1")
    _up(net, "c1")
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}

    def mutate(payloads: Payloads) -> Payloads:
        ts = codec.ts_payload(PT.TSi, [tsmod.from_network(NET("198.51.100.10/32"))])
        return [ts if p.payload_type == PT.TSi else p for p in payloads
                if not isinstance(p, wp.CPPayload)]

    _w, e, out = _hostile_auth_request(net, mutate)
    assert e.established and N.FAILED_CP_REQUIRED in _notifies(out)
    assert _east_child_ts(net) == [("@c1.example", ["198.51.100.10/32"])]
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    assert len(_east_policies_for(net, "198.51.100.10/32")) == 1
    _no_internal_error(net)


@pytest.mark.parametrize("ignore_peer_dns", [False, True])
def test_gateway_flooding_the_cfg_reply(monkeypatch: pytest.MonkeyPatch,
                                        ignore_peer_dns: bool) -> None:
    """§3.15.1: "The responder MAY only send up to the number of addresses requested"
    (we ask for one).  A gateway that adds 5,000 more addresses (one IPv6 among them),
    2,000 DNS servers and 100 domains: the client keeps its first address of each
    family, 16 DNS servers and 16 domains (it kept them all, each checked against all
    before it: seconds of CPU and an updown environment of tens of kilobytes; with
    ignore-peer-dns=yes, a log line for each), says so once, and comes up on the
    address it was given."""
    v6 = ipaddress.ip_address("2001:db8:5::1")
    flood = [wp.CPAttribute(CPAttr.INTERNAL_IP4_ADDRESS, ipaddress.IPv4Address(0x0A000000 + i)
                            .packed) for i in range(5000)]
    flood.insert(2500, wp.CPAttribute(CPAttr.INTERNAL_IP6_ADDRESS, v6.packed + b"\x80"))
    flood += [wp.CPAttribute(CPAttr.INTERNAL_IP4_DNS, ipaddress.IPv4Address(0x0B000000 + i)
                             .packed) for i in range(2000)]
    flood += [wp.CPAttribute(CPAttr.INTERNAL_DNS_DOMAIN, f"d{i}.example".encode())
              for i in range(100)]
    _hostile_reply(lambda attrs: [*attrs, *flood], monkeypatch)
    net = rw_net(modecfgdns="192.0.2.53")
    net.west.engine.connections["west-east"].ignore_peer_dns = ignore_peer_dns
    net.up()
    w = _west_of(net, "west-east")
    assert w.local_vips == [V4("198.51.100.10"), v6]
    if ignore_peer_dns:  # each one dropped is logged: no more than 16 of each
        assert w.dns == () and w.domains == ()
        assert len([m for m in net.west.logs() if "(ignore-peer-dns=yes)" in m]) == 32
    else:
        assert len(w.dns) == 16 and w.dns[0] == V4("192.0.2.53")
        assert len(w.domains) == 16
    assert any("ignoring 5000 more address attribute(s)" in m for m in net.west.logs())
    (wc,) = net.children(net.west)
    assert wc.local_ts == ["198.51.100.10/32"]
    assert max(len(m) for m in net.west.logs()) < 1000
    _nothing_half_done(net)


# ================================================================== pool memory
def test_clients_coming_and_going_do_not_grow_the_pool_for_ever() -> None:
    """An IPv6 /64 never runs out of never-used addresses, and each released one was
    remembered for its client's return: 20,000 clients (new IDs, or ID_NULL whose
    lease is the IKE SA's) connecting once each grew the pool's tables by 20,000
    entries.  Past ``LINGERING_MAX`` remembered addresses, the oldest is reused."""
    t = poolmod.LeaseTable()
    spec = "2001:db8::/64"
    for i in range(20000):
        lease = t.acquire(spec, 6, ("sa", i), f"client {i}")
        assert lease is not None
        t.release(lease)
    p = t.pool(spec, 6)
    assert p is not None
    sizes = [len(p.lingering), len(p.by_key), len(p.owner_of), len(p.owner_text)]
    assert max(sizes) <= poolmod.LINGERING_MAX, sizes


def test_a_returning_client_keeps_its_address_below_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the bound at 4: c1 leaves, two other clients come and go, c1 returns and
    gets its address again; after four more, c1's address went to another client and
    c1 gets another one (never one held by a live client)."""
    monkeypatch.setattr(poolmod, "LINGERING_MAX", 4)
    net = rw_net("198.51.100.0/24", clients=8)
    _up(net, "c1")
    mine = next(iter(_in_use(net)))
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    for name in ("c2", "c3"):
        _up(net, name)
        net.apply(net.west, net.west.engine.terminate(name, net.now))
        net.run()
    _up(net, "c1")
    assert _in_use(net) == {mine: "@c1.example"}
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.run()
    for name in ("c4", "c5", "c6", "c7", "c8"):
        _up(net, name)
        net.apply(net.west, net.west.engine.terminate(name, net.now))
        net.run()
    p = net.east.engine.leases.pool("198.51.100.0/24", 4)
    assert p is not None and len(p.lingering) <= 4 and len(p.by_key) <= 4
    _up(net, "west-east")
    _up(net, "c1")
    got = _in_use(net)
    assert len(got) == 2 and set(got.values()) == {"@west.example", "@c1.example"}


def test_a_conn_reloaded_with_a_larger_pool_gives_addresses() -> None:
    """The old range of a reloaded conn, without leases, does not block its new one
    (which overlaps it): clients get addresses from the new range; while a client of
    the old range is up, its address is never given again."""
    net = rw_net(clients=2)
    _up(net, "c1")
    net.east.engine.connections["west-east"].left.addresspool = "198.51.100.10-198.51.100.12"
    _up(net, "c2")  # the old range has c1's lease: the new one gives nothing yet
    assert _in_use(net) == {V4("198.51.100.10"): "@c1.example"}
    net.apply(net.west, net.west.engine.terminate("c1", net.now))
    net.apply(net.west, net.west.engine.terminate("c2", net.now))
    net.run()
    for name in ("west-east", "c1", "c2"):
        _up(net, name)
    assert set(_in_use(net)) == {V4("198.51.100.10"), V4("198.51.100.11"),
                                 V4("198.51.100.12")}
    assert net.east.engine.leases.summary() == [("198.51.100.10-198.51.100.12", 3, 3, 0)]


@pytest.mark.parametrize("rekey", [False, True])
def test_later_child_sas_stay_on_the_leased_address(rekey: bool) -> None:
    """After IKE_AUTH, a client (198.51.100.11) asks in CREATE_CHILD_SA for a new Child
    SA, or the rekey of its own, for c1's address 198.51.100.10: TS_UNACCEPTABLE (or
    the rekey is refused); nothing changes for c1."""
    net = rw_net(clients=1)
    _up(net, "c1")
    _up(net, "west-east")
    w = _west_of(net, "west-east")
    (e,) = [i for i in _east_sas(net) if str(i.remote_id) == "@west.example"]
    extra: Payloads = []
    if rekey:
        extra = [codec.notify(N.REKEY_SA, b"", ProtocolID.ESP,
                              w.children[0].spi_in.to_bytes(4, "big"))]
    out = _new_child_on(net, w, e, "198.51.100.10/32", extra)
    assert N.TS_UNACCEPTABLE in _notifies(out)
    assert sorted(_east_child_ts(net)) == [("@c1.example", ["198.51.100.10/32"]),
                                           ("@west.example", ["198.51.100.11/32"])]
    assert len(_east_policies_for(net, "198.51.100.10/32")) == 1
    _no_internal_error(net)


# ================================================================== hostile local input
_RW_CONF = ("conn rw\n\tauthby=secret\n\tleft=192.0.2.1\n\tleftsubnet=203.0.113.0/24\n"
            "\tright=%any\n\trightid=%any\n\tleftmodecfgserver=yes\n")


@pytest.mark.parametrize("extra,why", [
    # the gateway's Child SAs covered rightsubnet= for every client, not its address:
    # each new client's policies took the traffic of all (and a good client refused)
    ("\trightaddresspool=198.51.100.10-198.51.100.20\n\trightsubnet=198.51.100.0/24\n",
     "cannot specify both rightaddresspool= and rightsubnet="),
    ("\trightsubnets=198.51.100.0/25,198.51.100.128/25\n"
     "\trightaddresspool=198.51.100.10-198.51.100.20\n",
     "cannot specify both rightaddresspool= and rightsubnet="),
    # the first client got 0.0.0.0 (or ::), which no client may take
    ("\trightaddresspool=0.0.0.0-0.0.0.254\n", "starts at address zero"),
    ("\trightaddresspool=0.0.0.0/24\n", "starts at address zero"),
    ("\trightaddresspool=::/120\n", "starts at address zero"),
    ("\trightaddresspool=,198.51.100.0/24\n", "empty field"),
    ("\trightaddresspool=198.51.100.0/24,\n", "empty field"),
], ids=["pool-and-subnet", "pool-and-subnets", "v4-range-at-zero", "v4-cidr-at-zero",
        "v6-cidr-at-zero", "leading-comma", "trailing-comma"])
def test_pool_settings_libreswan_refuses_are_refused(extra: str, why: str) -> None:
    """Libreswan's addconn refuses these (``failed to add connection``); they loaded
    silently, and the first two made the pool's addresses no selector at all."""
    from pypluto.config.parser import parse_config_text
    cfg = parse_config_text(_RW_CONF + extra, "f")
    assert not [c for c in cfg.conns if c.startswith("rw")], extra
    errs = [str(e) for fails in cfg.failed.values() for e in fails]
    assert any(why in e for e in errs), errs


def test_pool_settings_that_load() -> None:
    from pypluto.config.parser import parse_config_text
    cfg = parse_config_text(_RW_CONF + "\trightaddresspool=0.0.0.1-0.0.0.9,2001:db8::/120\n",
                            "f")
    assert cfg.conns["rw"].right.addresspool == "0.0.0.1-0.0.0.9,2001:db8::/120"
