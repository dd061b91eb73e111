"""A hostile peer against the IKEv2 extensions: REDIRECT (RFC 5685), IKE_INTERMEDIATE
with additional key exchanges (RFC 9242, RFC 9370) and PPK (RFC 8784).

The engine answers as the RFCs say or stays silent; a lie never changes state (a
redirect to nowhere is not followed, a key exchange that did not happen is not
counted, an empty NO_PPK_AUTH is not a no-PPK AUTH), and nothing raises.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest

from pypluto.crypto import dh
from pypluto.iana import ExchangeType
from pypluto.iana import NotifyType as N
from pypluto.iana import TransformType as TT
from pypluto.ike import codec
from pypluto.ike import ppk as ppkmod
from pypluto.ike.actions import EventKind, SendPacket
from pypluto.ike.sa import IKESA
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import ike_auth, ike_init
from pypluto.ike.tasks import redirect as redmod
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp

from .harness import EAST, PSK, WEST, Net, check_pair
from .test_offload import OffloadNet
from .test_ppk import PPK_A, PPKStore, _ppks, ppk_net
from .test_redirect import GW_B, Net3, _init_notifies
from .test_redirect_fqdn import _hosts
from .test_redirect_ikeauth import _gateway_a

INT = ExchangeType.IKE_INTERMEDIATE
AUTH = ExchangeType.IKE_AUTH
# two additional key exchanges with classic groups: small messages, no fragments
HY = "aes256-sha2_256-dh19;addke1=dh20;addke2=dh21"
Payloads = list[wp.Payload]


# ------------------------------------------------------------------ helpers
def _internal_errors(net: Net) -> list[str]:
    sides = [net.west, net.east] + ([net.b] if isinstance(net, Net3) else [])
    return [m for s in sides for m in s.logs() if "internal error" in m]


def _ike(side) -> IKESA:  # noqa: ANN001
    return next(iter(side.engine.by_serial.values()))


def _pop(net: Net, frm) -> SendPacket:  # noqa: ANN001
    side, pkt = net.queue.pop(0)
    assert side is frm
    return pkt


def _deliver(net: Net, to, frm_pkt: SendPacket, data: list[bytes]) -> list:  # noqa: ANN001
    acts: list = []
    for d in data:
        a = to.engine.receive(d, frm_pkt.remote, frm_pkt.local, net.now)
        net.apply(to, a)
        acts += a
    return acts


def _rewrite(net: Net, pkt: SendPacket, frm, to, mutate: Callable[[Payloads], Payloads],
             msgid: int | None = None) -> list[bytes]:  # noqa: ANN001
    """``pkt`` (sent by ``frm``) decrypted with ``to``'s keys, its payloads rewritten and
    protected again with ``frm``'s: what a hostile ``frm`` could have sent."""
    msg = wm.parse_message(pkt.data)
    assert isinstance(msg.sk, wp.SKPayload)
    payloads = codec.decrypt(msg.sk, _ike(to).prot_in)
    return frm.engine.encode(_ike(frm), msg.exchange, msg.response,
                             msg.message_id if msgid is None else msgid, mutate(payloads))


def _exchanges(net: Net, who: str) -> list[tuple[int, int, bool]]:
    out = []
    for w, d in net.sent:
        if w == who:
            h = wm.peek_header(d)
            out.append((h.exchange, h.message_id, h.response))
    return out


def _warned(side, text: str) -> bool:  # noqa: ANN001
    return any(text in m for m in side.logs())


# ================================================================== REDIRECT
UNUSABLE = [
    ("0.0.0.0", "not a unicast address"),
    ("224.0.0.1", "not a unicast address"),
    ("255.255.255.255", "not a unicast address"),
    ("127.0.0.1", "a loopback address"),
    (str(WEST), "one of our own addresses"),
    ("2001:db8::9", "not an IPv4 address like ours"),
    ("::", "not an IPv4 address like ours"),
]


@pytest.mark.parametrize("to,why", UNUSABLE)
def test_informational_redirect_to_an_unusable_gateway_is_not_followed(to: str, why: str
                                                                      ) -> None:
    """§5 REDIRECT to the unspecified, a multicast or broadcast address, loopback, our own
    address or another family: the client stays on A and its conn is not repointed."""
    net = Net3()
    net.up()
    net.apply(net.east, net.east.engine.redirect(ipaddress.ip_address(to), net.now,
                                                 name="west-east"))
    net.run()
    net.advance(30)
    assert _warned(net.west, f"ignoring a REDIRECT to {ipaddress.ip_address(to)}: {why}")
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert len(net.established(net.west)) == 1 and net.established(net.east)
    assert net.children(net.west)
    assert not _internal_errors(net)


def test_ike_sa_init_redirect_to_our_own_address_is_not_followed() -> None:
    """§4 REDIRECT (the nonce is right) pointing back at the client: not followed; the
    answer is then just an answer without SA, KE and Nr: the attempt fails."""
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[WEST]))
    net.up()
    assert _warned(net.west, f"ignoring a REDIRECT to {WEST}: one of our own addresses")
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert any(e.kind is EventKind.FAILED for e in net.west.events)
    # nothing was ever sent to our own address
    assert all(wm.peek_header(d).message_id == 0 for w, d in net.sent if w == "west")
    assert [w for w, _ in net.sent].count("west") == 1
    assert not net.west.engine.by_serial and not _internal_errors(net)


@pytest.mark.parametrize("addrs", [[ipaddress.ip_address("0.0.0.0")],
                                   [ipaddress.ip_address("2001:db8::3")],
                                   [WEST]])
def test_name_resolving_to_an_unusable_address_is_not_followed(addrs: list) -> None:
    """A name (GW Ident Type 3) whose only address is unusable: the redirect fails once
    resolved, the client stays where it is."""
    net = Net3(client_settings=_hosts({"gw.example": addrs}))
    net.up()
    net.apply(net.east, net.east.engine.redirect("gw.example", net.now, name="west-east"))
    net.run()
    assert _warned(net.west, f"redirect to gw.example ({addrs[0]}) failed")
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert len(net.established(net.west)) == 1 and net.children(net.west)
    assert not _internal_errors(net)


class _RawRedirect(redmod.Redirected):
    """Gateway A sends REDIRECT with whatever GW identity bytes it likes."""

    def __init__(self, raw: bytes) -> None:
        super().__init__(None)
        self.raw = raw

    def build(self, ctx, ike, now, acts):  # noqa: ANN001, ANN201
        return [codec.notify(N.REDIRECT, self.raw)]


@pytest.mark.parametrize("raw", [
    b"", b"\x01", b"\x01\x03\xc0\x00\x02", b"\x01\x05\xc0\x00\x02\x03\x00",
    b"\x01\x09\xc0\x00\x02\x03", b"\x02\x04\xc0\x00\x02\x03", b"\x09\x04\xc0\x00\x02\x03",
    b"\x03\x00", b"\x03\x00" + b"a" * 256, b"\x03\xff" + b"a" * 255,
    b"\x03\x04\xff\xfe\xfd\xfc", b"\x03\x07a..b.cd",
])
def test_informational_redirect_with_a_bad_gateway_identity_is_ignored(raw: bytes) -> None:
    """Bad GW Ident type or length, an FQDN of 0 or 255 octets or not a host name: the
    client answers, logs, and stays on gateway A with its Child SA."""
    net = Net3(client_settings=_hosts({}))
    net.up()
    net.apply(net.east, net.east.engine.queue(_ike(net.east), _RawRedirect(raw), net.now))
    net.run()
    assert net.established(net.east) and len(net.established(net.west)) == 1
    assert net.children(net.west) and net.children(net.east)
    assert net.west.engine.connections["west-east"].remote.host_addr == EAST
    assert not net.established(net.b)
    assert any("REDIRECT" in m or "redirect to" in m for m in net.west.logs())
    assert not _internal_errors(net)


def test_redirect_to_a_client_that_never_allowed_it_is_ignored() -> None:
    """accept-redirect=no (no REDIRECT_SUPPORTED sent): a REDIRECT from the authenticated
    gateway in an INFORMATIONAL is answered and ignored."""
    net = Net3(accept="no")
    net.up()
    net.apply(net.east, net.east.engine.queue(_ike(net.east), redmod.Redirected(GW_B),
                                              net.now))
    net.run()
    assert _warned(net.west, f"ignoring a REDIRECT to {GW_B}: accept-redirect=no")
    assert net.established(net.east) and net.children(net.west)
    assert not net.established(net.b)
    assert not _internal_errors(net)


def test_ike_sa_init_redirect_without_redirect_supported_or_with_a_wrong_nonce() -> None:
    """An IKE_SA_INIT answer that is only a REDIRECT: not followed when we did not send
    REDIRECT_SUPPORTED, nor when its nonce data is not our Ni (§4)."""
    for accept, nonce_ok, why in (("no", True, "accept-redirect=no"),
                                  ("yes", False, "nonce data is not our Ni")):
        net = Net3(accept=accept)
        net.apply(net.west, net.west.engine.initiate("west-east", net.now))
        pkt = _pop(net, net.west)
        ni = _ike(net.west).ni if nonce_ok else b"\x00" * 32
        answer = codec.encode(wm.peek_header(pkt.data).spi_i, bytes(8), 34, False, True, 0,
                              [codec.notify(N.REDIRECT, redmod.encode_gw(GW_B, ni))])
        _deliver(net, net.west, SendPacket(answer, pkt.remote, pkt.local), answer)
        net.run()
        assert _warned(net.west, why), net.west.logs()
        assert net.west.engine.connections["west-east"].remote.host_addr == EAST
        assert not net.established(net.b) and not net.b.actions[1:]
        assert any(e.kind is EventKind.FAILED for e in net.west.events)
        assert not _internal_errors(net)


def test_redirect_loop_in_ike_sa_init_stops() -> None:
    """A sends the client to B and B back to A in IKE_SA_INIT (global-redirect on both):
    ``MAX_REDIRECTS`` redirects are followed, then the client gives up (§7)."""
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]))
    net.b.engine.settings = EngineSettings(global_redirect="yes", global_redirect_to=[EAST])
    net.up()
    followed = [m for m in net.west.logs() if "redirected by" in m]
    assert len(followed) == redmod.MAX_REDIRECTS
    assert _warned(net.west, "redirect loop")
    assert not net.west.engine.by_serial and not net.queue
    assert not _internal_errors(net)


def test_redirect_from_the_client_to_the_gateway_is_ignored() -> None:
    """Only a client follows a REDIRECT: the gateway (the IKE SA's responder) answers
    it and stays, whatever its own accept-redirect=."""
    net = Net3()
    net.east.engine.connections["west-east"].raw["accept-redirect"] = "yes"
    net.up()
    net.apply(net.west, net.west.engine.queue(_ike(net.west), redmod.Redirected(GW_B),
                                              net.now))
    net.run()
    assert net.east.engine.connections["west-east"].remote.host_addr == WEST
    assert net.established(net.east) and net.children(net.east) and net.children(net.west)
    assert not net.established(net.b) and not _internal_errors(net)


@pytest.mark.parametrize("how", ["child", "ike_rekey"])
def test_client_ignoring_a_redirect_in_ike_auth_gets_no_child_sa(how: str) -> None:
    """Gateway A redirects in IKE_AUTH (§6); the client does not leave and asks for a
    Child SA, or rekeys the IKE SA to shed the grace timer: A answers NO_ADDITIONAL_SAS,
    installs nothing and drops the IKE SA after ``AUTH_REDIRECT_GRACE``."""
    net = Net3(accept_to="198.51.100.0/24")  # the client does not follow (to B)
    _gateway_a(net)
    net.up()
    assert net.established(net.east) and not net.east.kernel_sas
    if how == "child":
        net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    else:
        net.apply(net.west, net.west.engine.rekey_ike("west-east", net.now))
    net.run()
    assert _warned(net.east, "refusing CREATE_CHILD_SA on a redirected IKE SA")
    assert not net.east.kernel_sas and not net.east.policies and not net.children(net.east)
    assert len(net.established(net.east)) == 1
    net.advance(redmod.AUTH_REDIRECT_GRACE + 60)
    assert not net.established(net.east) and not net.east.kernel_sas
    assert not _internal_errors(net)


def test_second_redirect_while_leaving_is_not_followed() -> None:
    """Gateway A sends REDIRECT to B, then (on the IKE SA the client is deleting) one to
    C: the second is not followed, so the client does not end up with a tunnel to B
    while its conn points at C, nor race two IKE SAs."""
    gw_c = ipaddress.ip_address("192.0.2.4")
    net = Net3()
    net.up()
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.apply(net.east, net.east.engine.redirect(gw_c, net.now, name="west-east"))
    net.run()
    net.advance(300)
    assert _warned(net.west, "ignoring a REDIRECT: this IKE SA is being redirected already")
    assert net.west.engine.connections["west-east"].remote.host_addr == GW_B
    ikes = net.west.engine.status(net.now).ike_sas
    assert [i.remote for i in ikes] == [f"{GW_B}:500"] and net.children(net.west)
    assert net.established(net.b) and not net.established(net.east)
    assert not _internal_errors(net)


def test_a_name_that_fails_leaves_the_client_free_to_be_redirected() -> None:
    """A REDIRECT to a name that does not resolve is not followed; a later REDIRECT to
    an address still is."""
    net = Net3(client_settings=_hosts({}))
    net.up()
    net.apply(net.east, net.east.engine.redirect("nowhere.example", net.now,
                                                 name="west-east"))
    net.run()
    assert _warned(net.west, "redirect to nowhere.example failed")
    assert net.established(net.east) and net.children(net.west)
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert net.established(net.b) and net.children(net.b) and not net.established(net.east)


def test_redirected_from_is_kept_in_a_cookie_retry() -> None:
    """Gateway B demands a COOKIE from the redirected client: the retried IKE_SA_INIT
    carries REDIRECTED_FROM again (RFC 5685 §5; RFC 7296 §2.6: the same payloads), and
    once B answered, a later IKE_SA_INIT of the conn no longer does."""
    net = Net3(a_settings=EngineSettings(global_redirect="yes", global_redirect_to=[GW_B]))
    net.b.engine.settings.force_busy = True
    net.up()
    assert net.established(net.b) and net.children(net.b)
    sent = _init_notifies(net, "west")
    assert len(sent) == 3 and N.COOKIE in sent[2]
    assert [N.REDIRECTED_FROM in n for n in sent] == [False, True, True]
    conn = net.west.engine.connections["west-east"]
    net.apply(net.west, net.west.engine.initiate_ike(conn, net.now))
    assert N.REDIRECTED_FROM not in _init_notifies(net, "west")[-1]


@pytest.mark.parametrize("who", ["west", "east"])
def test_redirect_still_works_after_an_ike_sa_rekey(who: str) -> None:
    """An IKE SA rekey (by the client or by the gateway, which then holds the I flag,
    RFC 7296 §2.18) keeps the roles of RFC 5685: the gateway still knows the client
    supports REDIRECT, the client still follows it (and the gateway never does)."""
    net = Net3()
    net.up()
    side = getattr(net, who)
    net.apply(side, side.engine.rekey_ike("west-east", net.now))
    net.run()
    assert _ike(net.east).serial != 2 and len(net.established(net.east)) == 1
    net.apply(net.east, net.east.engine.redirect(GW_B, net.now, name="west-east"))
    net.run()
    assert net.established(net.b) and net.children(net.b), net.east.logs()
    assert not net.established(net.east) and len(net.established(net.west)) == 1
    assert not _internal_errors(net)


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x04\x00\x00\x00\x00",
                                  redmod.encode_gw(GW_B), b"\x03\x03a.b" + b"n" * 32,
                                  b"\xff" * 300])
def test_redirected_from_lies_change_nothing(monkeypatch: pytest.MonkeyPatch, data: bytes
                                             ) -> None:
    """A client claims to come from some gateway (REDIRECTED_FROM, §5), true, false or
    malformed: the gateway answers as always and the IKE SA comes up."""
    monkeypatch.setattr(ike_init.redirect, "init_notifies", lambda conn: [
        codec.notify(N.REDIRECT_SUPPORTED), codec.notify(N.REDIRECTED_FROM, data)])
    net = Net()
    net.up()
    assert net.established(net.west) and net.established(net.east)
    assert net.children(net.east) and _ike(net.east).redirect_ok
    assert not _internal_errors(net)


# ================================================================== IKE_INTERMEDIATE
def _to_first_intermediate(net: Net) -> SendPacket:
    """IKE_SA_INIT there and back; west's first IKE_INTERMEDIATE (or IKE_AUTH) request,
    taken off the wire."""
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    net.step()
    return _pop(net, net.west)


def test_second_intermediate_while_the_first_is_computed_is_dropped() -> None:
    """Offloaded crypto: a hostile initiator sends IKE_INTERMEDIATE 2, again with the
    first exchange's group, before our answer to 1: it is dropped, so the second
    additional key exchange (ECP_521) still has to happen with its own group."""
    net = OffloadNet(immediate=True, west_kw={"ike": HY}, east_kw={"ike": HY})
    pkt = _to_first_intermediate(net)
    assert wm.peek_header(pkt.data).exchange == INT
    net.immediate = False
    _deliver(net, net.east, pkt, [pkt.data])
    assert len(net.jobs) == 1  # east's ECP_384 job is out
    st = _ike(net.east).intermediate
    assert st is not None and st.done == 0
    acts = _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east,
                                                  lambda p: p, msgid=2))
    assert len(net.jobs) == 1 and not [a for a in acts if isinstance(a, SendPacket)]
    net.immediate = True
    while net.jobs:
        side, job = net.jobs.pop(0)
        net.finish(side, job)
    assert st.done == 1 and st.exchanges == 1
    net.queue.insert(0, (net.east, next(a for a in net.east.actions[::-1]
                                        if isinstance(a, SendPacket))))
    net.queue = net.queue[:1]  # east's answer to 1 (once)
    net.run()
    assert net.established(net.west) and net.established(net.east), net.east.logs()
    assert _warned(net.east, "additional key exchange 2 done")
    assert not _internal_errors(net)


def _no_east(net: Net) -> None:
    eng = net.east.engine
    assert not eng.by_serial and eng.n_halfopen == 0 and not net.east.kernel_sas


@pytest.mark.parametrize("what,why", [
    ("wrong_group", "additional key exchange 1 needs ECP_384, got group 21"),
    ("no_ke", "additional key exchange 1 needs ECP_384, got no KE payload"),
    ("two_kes", "additional key exchange 1 needs ECP_384"),
])
def test_intermediate_with_a_bad_ke_answers_invalid_syntax(what: str, why: str) -> None:
    net = Net(west_kw={"ike": HY}, east_kw={"ike": HY})
    pkt = _to_first_intermediate(net)

    def mut(p: Payloads) -> Payloads:
        ke = next(x for x in p if isinstance(x, wp.KEPayload))
        if what == "wrong_group":
            return [codec.ke(21, dh.initiator_ke(21).public) if x is ke else x for x in p]
        if what == "no_ke":
            return [x for x in p if x is not ke]
        return p + [wp.KEPayload(ke.group, ke.data)]

    _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, mut))
    net.run()
    assert _warned(net.east, why) and _warned(net.east, "answering INVALID_SYNTAX")
    assert _warned(net.west, "peer answered IKE_INTERMEDIATE with INVALID_SYNTAX")
    _no_east(net)
    assert not net.west.engine.by_serial and not _internal_errors(net)


@pytest.mark.parametrize("ke", [False, True])
def test_intermediate_when_none_was_negotiated(ke: bool) -> None:
    """No IKE_INT_SUP in IKE_SA_INIT: an IKE_INTERMEDIATE request is refused."""
    net = Net()
    pkt = _to_first_intermediate(net)
    assert wm.peek_header(pkt.data).exchange == AUTH
    wi = _ike(net.west)
    payloads: Payloads = [codec.ke(19, dh.initiator_ke(19).public)] if ke else []
    _deliver(net, net.east, pkt, net.west.engine.encode(wi, INT, False, 1, payloads))
    assert _warned(net.east, "IKE_INT_SUP was not negotiated")
    _no_east(net)
    assert not _internal_errors(net)


def test_more_intermediates_than_additional_key_exchanges() -> None:
    """After every ADDKE: a further IKE_INTERMEDIATE with a KE payload is refused."""
    net = Net(west_kw={"ike": "aes256-sha2_256-dh19;addke1=dh20"},
              east_kw={"ike": "aes256-sha2_256-dh19;addke1=dh20"})
    pkt = _to_first_intermediate(net)
    net.queue.insert(0, (net.west, pkt))
    net.step()
    net.step()  # the answer: west updates its keys and sends IKE_AUTH, taken off the wire
    auth = _pop(net, net.west)
    assert wm.peek_header(auth.data).message_id == 2
    ke = codec.ke(20, dh.initiator_ke(20).public)
    _deliver(net, net.east, auth, net.west.engine.encode(_ike(net.west), INT, False, 2, [ke]))
    assert _warned(net.east, "KE payload after every additional key exchange was done")
    _no_east(net)
    assert not _internal_errors(net)


def test_replayed_intermediate_after_the_next_one_changes_nothing() -> None:
    """IKE_INTERMEDIATE 1 again after 2 was answered: an old message ID, dropped; the
    exchange count and the keys stay, and the IKE SA comes up."""
    net = Net(west_kw={"ike": HY}, east_kw={"ike": HY})
    pkt1 = _to_first_intermediate(net)
    net.queue.insert(0, (net.west, pkt1))
    for _ in range(3):  # 1 to east, its answer to west, 2 to east
        net.step()
    ei = _ike(net.east)
    st = ei.intermediate
    assert st is not None and st.done == 2
    keys = (ei.sk_d, ei.sk_pi, ei.sk_pr)
    acts = _deliver(net, net.east, pkt1, [pkt1.data])
    assert not [a for a in acts if isinstance(a, SendPacket)]
    assert st.done == 2 and st.exchanges == 2 and (ei.sk_d, ei.sk_pi, ei.sk_pr) == keys
    net.run()
    assert net.established(net.west) and net.established(net.east)
    assert not _internal_errors(net)


def test_ike_auth_after_only_some_additional_key_exchanges_is_refused() -> None:
    """Two ADDKEs negotiated, IKE_AUTH after the first: INVALID_SYNTAX, the half-open
    IKE SA goes (RFC 9370 §2.2.2: every negotiated exchange takes place)."""
    net = Net(west_kw={"ike": HY}, east_kw={"ike": HY})
    pkt = _to_first_intermediate(net)
    net.queue.insert(0, (net.west, pkt))
    net.step()
    net.step()  # the answer to 1: west updates its keys, sends IKE_INTERMEDIATE 2
    int2 = _pop(net, net.west)
    forged = net.west.engine.encode(_ike(net.west), AUTH, False, 2,
                                    [codec.notify(N.INITIAL_CONTACT)])
    _deliver(net, net.east, int2, forged)
    assert _warned(net.east, "the negotiated additional key exchanges (IKE_INTERMEDIATE, "
                   "RFC 9370) were skipped")
    _no_east(net)
    assert not _internal_errors(net)


def _hostile_init_answer(net: Net, mutate: Callable[[wm.Message], None]) -> None:
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    net.step()
    pkt = _pop(net, net.east)
    m = wm.parse_message(pkt.data)
    mutate(m)
    _deliver(net, net.west, pkt, [m.serialize()])


@pytest.mark.parametrize("what", ["addke_not_offered", "none_for_a_mandatory_addke",
                                  "addke_dropped", "no_int_sup"])
def test_init_answer_with_an_addke_we_did_not_offer_fails(what: str) -> None:
    """RFC 9370 §2.2.1: an ADDKE type we did not offer, NONE (or nothing) for a type we
    offered without NONE: an unacceptable answer, no IKE_INTERMEDIATE, no IKE_AUTH."""
    ike = "aes256-sha2_256-dh19;addke1=dh20"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})

    def mut(m: wm.Message) -> None:
        sa = next(p for p in m.payloads if isinstance(p, wp.SAPayload))
        ts = sa.proposals[0].transforms
        if what == "addke_not_offered":
            ts.append(wp.Transform(TT.ADDKE2, 21))
        elif what == "none_for_a_mandatory_addke":
            next(t for t in ts if t.type == TT.ADDKE1).id = 0
        elif what == "addke_dropped":
            ts.remove(next(t for t in ts if t.type == TT.ADDKE1))
        else:
            m.payloads = [p for p in m.payloads if not (
                isinstance(p, wp.NotifyPayload) and
                p.notify_type == N.INTERMEDIATE_EXCHANGE_SUPPORTED)]

    _hostile_init_answer(net, mut)
    assert _warned(net.west, "peer chose additional key exchanges without IKE_INTERMEDIATE "
                   "support" if what == "no_int_sup" else
                   "IKE_SA_INIT response has an unacceptable proposal")
    assert [e for e, _, _ in _exchanges(net, "west")] == [ExchangeType.IKE_SA_INIT]
    assert not net.west.engine.by_serial and not _internal_errors(net)


def test_auth_covers_the_intermediate_messages() -> None:
    """A hostile responder answers IKE_INTERMEDIATE with one more (status) notify than
    it folds into its IntAuth chain (RFC 9242 §3.3.2): the IKE_AUTH AUTH fails."""
    ike = "aes256-sha2_256-dh19;addke1=dh20"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})
    pkt = _to_first_intermediate(net)
    ei = _ike(net.east)
    old_keys = ei.prot_out  # the answer goes out with the keys before the ADDKE
    _deliver(net, net.east, pkt, [pkt.data])
    ans = _pop(net, net.east)
    assert wm.peek_header(ans.data).exchange == INT
    new_keys, ei.prot_out = ei.prot_out, old_keys
    forged = _rewrite(net, ans, net.east, net.west, lambda p: p + [codec.notify(40000, b"x")])
    ei.prot_out = new_keys
    _deliver(net, net.west, ans, forged)
    net.run()
    assert not net.established(net.west) and not net.established(net.east)
    assert _warned(net.east, "answering AUTHENTICATION_FAILED")
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert not _internal_errors(net)


def test_addke_offered_without_int_sup_is_no_proposal_chosen() -> None:
    """RFC 9370 §2.2.1: ADDKE needs IKE_INTERMEDIATE; a request that offers only
    hybrid proposals but no IKE_INT_SUP gets NO_PROPOSAL_CHOSEN, statelessly."""
    ike = "aes256-sha2_256-dh19;addke1=dh20"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})
    net.apply(net.west, net.west.engine.initiate("west-east", net.now))
    pkt = _pop(net, net.west)
    m = wm.parse_message(pkt.data)
    m.payloads = [p for p in m.payloads if not (
        isinstance(p, wp.NotifyPayload) and p.notify_type == N.INTERMEDIATE_EXCHANGE_SUPPORTED)]
    acts = _deliver(net, net.east, pkt, [m.serialize()])
    sent = [a for a in acts if isinstance(a, SendPacket)]
    assert len(sent) == 1
    assert [p.notify_type for p in wm.parse_message(sent[0].data).payloads] == \
        [N.NO_PROPOSAL_CHOSEN]
    _no_east(net)


# ================================================================== PPK

@pytest.mark.parametrize("nauth,why", [
    (b"", "no PPK for PPK_ID 'A' in ipsec.secrets and the peer's NO_PPK_AUTH is empty"),
    (b"\x00" * 32, "PSK authentication of FQDN '@west.example' failed"),
])
def test_no_ppk_auth_lies_are_refused(monkeypatch: pytest.MonkeyPatch, nauth: bytes,
                                      why: str) -> None:
    """The initiator proposes a PPK the responder does not have, with an empty or a
    forged NO_PPK_AUTH and an AUTH payload made without the PPK: the responder verifies
    NO_PPK_AUTH, never the AUTH payload in its place (RFC 8784 §3), and refuses."""
    monkeypatch.setattr(ppkmod, "_mix", lambda ike, value: None)  # AUTH without the PPK
    monkeypatch.setattr(ike_auth, "_no_ppk_auth", lambda *a: nauth)
    net = Net(west_kw={"ppk": "propose"}, east_kw={"ppk": "propose"})
    net.west.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.east.engine.secrets = PPKStore(PSK, _ppks(("other", PPK_A)))
    net.up()
    assert _warned(net.east, why), net.east.logs()
    assert not net.established(net.east) and not net.established(net.west)
    assert not net.east.kernel_sas and not net.west.kernel_sas


@pytest.mark.parametrize("size,east,up,why", [
    (0, "propose", True, "unusable PPK_IDENTITY (1 bytes, type 2)"),
    (0, "insist", False, "unusable PPK_IDENTITY (1 bytes, type 2)"),
    (64, "propose", True, "no PPK for PPK_ID"),
    (65, "propose", True, "unusable PPK_IDENTITY (66 bytes, type 2)"),
    (60000, "propose", True, "unusable PPK_IDENTITY (60001 bytes, type 2)"),
    (60000, "insist", False, "unusable PPK_IDENTITY (60001 bytes, type 2)"),
])
def test_ppk_identity_of_odd_length(size: int, east: str, up: bool, why: str) -> None:
    """A PPK_ID of 0 octets, of 64 (the limit, unknown here), 65 or 60,000: an unknown
    PPK — NO_PPK_AUTH with ppk=propose, AUTHENTICATION_FAILED with ppk=insist; never
    a crash, never the PPK_ID in a log line."""
    net = Net(west_kw={"ppk": "propose", "fragmentation": "no"},
              east_kw={"ppk": east, "fragmentation": "no"})
    net.west.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.east.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    pkt = _to_first_intermediate(net)
    assert wm.peek_header(pkt.data).exchange == AUTH

    def mut(p: Payloads) -> Payloads:
        return [codec.notify(N.PPK_IDENTITY, bytes([ppkmod.PPK_ID_FIXED]) + b"z" * size)
                if isinstance(x, wp.NotifyPayload) and x.notify_type == N.PPK_IDENTITY
                else x for x in p]

    _deliver(net, net.east, pkt, _rewrite(net, pkt, net.west, net.east, mut))
    net.run()
    assert _warned(net.east, why), net.east.logs()
    assert bool(net.established(net.east)) is up and bool(net.established(net.west)) is up
    assert not any("z" * 65 in m for m in net.east.logs())  # a long one never is
    if up:
        assert _warned(net.west, "continuing without PPK (NO_PPK_AUTH)")
    assert not _internal_errors(net)


def test_use_ppk_answered_when_not_offered_is_ignored(monkeypatch: pytest.MonkeyPatch
                                                      ) -> None:
    """The responder answers USE_PPK to an initiator with ppk=no: no PPK is used, no
    PPK_IDENTITY sent, the IKE SA comes up with the normal keys."""
    real = ike_init.ppk.init_response
    monkeypatch.setattr(ike_init.ppk, "init_response",
                        lambda ike, conns, pl: real(ike, conns, pl) or
                        [codec.notify(N.USE_PPK)])
    net = ppk_net("no", "propose")
    assert N.USE_PPK in {p.notify_type for w, d in net.sent if w == "east"
                         for p in wm.parse_message(d).payloads
                         if isinstance(p, wp.NotifyPayload)}
    assert net.established(net.west) and net.established(net.east)
    assert not _ike(net.west).ppk.used and not _ike(net.east).ppk.used
    assert not _warned(net.west, "PPK")


def test_ppk_identity_in_the_answer_when_none_was_proposed(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The responder claims it used a PPK (PPK_IDENTITY) that was never proposed: the
    initiator refuses, tells it, and installs nothing."""
    monkeypatch.setattr(ike_auth.ppk, "responder_notifies",
                        lambda ike: [codec.notify(N.PPK_IDENTITY)])
    net = ppk_net("no", "propose")
    assert _warned(net.west, "peer answered PPK_IDENTITY but no PPK was proposed")
    assert not net.established(net.west) and not net.west.kernel_sas
    assert not net.established(net.east) and not net.east.kernel_sas


@pytest.mark.parametrize("west,east", [("insist", "insist"), ("propose", "propose")])
def test_a_different_ppk_value_cannot_interoperate(west: str, east: str) -> None:
    """Same PPK_ID, different PPK: with ppk=insist nothing comes up; with ppk=propose
    neither end falls back (the PPK was found, so NO_PPK_AUTH is not used), so nothing
    comes up either: the PPK really keys AUTH (RFC 8784 §3)."""
    net = ppk_net(west, east, west_ppks=_ppks(("A", PPK_A)),
                  east_ppks=_ppks(("A", PPK_A[::-1])))
    assert not net.established(net.west) and not net.established(net.east)
    assert not net.west.kernel_sas and not net.east.kernel_sas
    assert _warned(net.east, "(PPK mismatch?)")


def test_the_ppk_is_mixed_into_sk_d(monkeypatch: pytest.MonkeyPatch) -> None:
    """SK_d itself carries the PPK on both ends (RFC 8784 §3), not only SK_pi/SK_pr:
    the established IKE SAs keep the mixed SK_d, and the Child SA keys agree."""
    seen: list[tuple[bytes, bytes]] = []
    real = ppkmod.apply_ppk

    def spy(prf, ppk, k):  # noqa: ANN001, ANN202
        out = real(prf, ppk, k)
        seen.append((k.sk_d, out.sk_d))
        return out

    monkeypatch.setattr(ppkmod, "apply_ppk", spy)
    net = ppk_net("insist", "insist")
    assert net.established(net.west) and net.established(net.east)
    (w_in, w_out), (e_in, e_out) = seen
    assert w_in == e_in and w_out == e_out and w_out != w_in
    assert _ike(net.west).sk_d == _ike(net.east).sk_d == w_out
    check_pair(net)


@pytest.mark.parametrize("east_ppks,used", [(_ppks(("A", PPK_A)), True),
                                            (_ppks(("B", PPK_A)), False)])
def test_ppk_with_additional_key_exchanges(east_ppks: str, used: bool) -> None:
    """PPK on top of IKE_INTERMEDIATE: AUTH and NO_PPK_AUTH both carry the IntAuth
    chain; with the PPK, or without it (unknown PPK_ID, ppk=propose), both ends agree."""
    net = Net(west_kw={"ppk": "propose", "ike": HY}, east_kw={"ppk": "propose", "ike": HY})
    net.west.engine.secrets = PPKStore(PSK, _ppks(("A", PPK_A)))
    net.east.engine.secrets = PPKStore(PSK, east_ppks)
    net.up()
    assert net.established(net.west) and net.established(net.east), net.east.logs()
    assert _ike(net.west).ppk.used is used and _ike(net.east).ppk.used is used
    assert _ike(net.west).sk_d == _ike(net.east).sk_d
    check_pair(net)
