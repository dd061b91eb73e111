"""The IKE_SA_INIT reply templates (issue 18) give the bytes the payload makers give."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

from pypluto.config.model import Connection
from pypluto.iana import NotifyType as N
from pypluto.ike.proposals import Chosen
from pypluto.ike.settings import EngineSettings
from pypluto.ike.tasks import ike_init
from pypluto.wire import message as wm
from pypluto.wire import payloads as wp


def _chain(payloads: list[wp.Payload]) -> bytes:
    return wm.serialize_payloads(payloads)[1]


def test_capability_answer_matches_capabilities_for_every_input() -> None:
    caps = (N.IKEV2_FRAGMENTATION_SUPPORTED, N.SIGNATURE_HASH_ALGORITHMS,
            N.CHILDLESS_IKEV2_SUPPORTED)
    for frag, vids, send in itertools.product(("yes", "no"), ([], [b"vid-one", b"vid-two"]),
                                              (False, True)):
        ctx = SimpleNamespace(settings=EngineSettings(vendorids=list(vids)))
        conn = Connection(name="t", fragmentation=frag, send_vendorid=send)
        for mask in range(8):
            peer = {int(t): wp.NotifyPayload(0, b"", t, b"") for i, t in enumerate(caps)
                    if mask & (1 << i)}
            want = _chain(ike_init._capabilities(ctx, conn, peer))  # type: ignore[arg-type]
            for _ in range(2):  # the first call fills the cache, the second reads it
                got = ike_init._capability_answer(ctx, conn, peer)  # type: ignore[arg-type]
                assert _chain(got) == want


def test_sa_answer_matches_the_proposal_it_stands_for() -> None:
    for c in (Chosen(encr=20, encr_bits=256, prf=5, ke=31, number=1),
              Chosen(encr=12, encr_bits=128, prf=2, integ=12, ke=14, number=3),
              Chosen(encr=20, encr_bits=256, prf=5, ke=31, number=1, addke=(35,)),
              Chosen(encr=20, encr_bits=256, prf=5, ke=31, number=1, addke=(0, 36))):
        want = _chain([ike_init.codec.sa([ike_init.proposals.chosen_proposal(
            c, ike_init.ProtocolID.IKE, b"", ike=True)])])
        assert _chain([ike_init._sa_answer(c)]) == want
        assert _chain([ike_init._sa_answer(c)]) == want
        parsed = wm.parse_payloads(33, want)  # parses back
        assert isinstance(parsed[0], wp.SAPayload)
        assert parsed[0].proposals[0].number == c.number


def test_answer_head_is_what_sa_ke_and_nonce_serialize_to() -> None:
    from pypluto.ike import codec
    for c, ke_len in ((Chosen(encr=20, encr_bits=256, prf=5, ke=31, number=1), 32),
                      (Chosen(encr=12, encr_bits=128, prf=2, integ=12, ke=14, number=2), 256)):
        ke_data, nonce = bytes(range(256))[:ke_len], b"n" * 32
        sa = codec.sa([ike_init.proposals.chosen_proposal(c, ike_init.ProtocolID.IKE, b"",
                                                          ike=True)])
        for tail in ([], [codec.notify(N.NAT_DETECTION_SOURCE_IP, b"s" * 20)]):
            want = _chain([sa, codec.ke(c.ke, ke_data), codec.nonce(nonce), *tail])
            head = codec.init_answer_head(ike_init._sa_template(c)[1], c.ke, ke_data, nonce)
            assert _chain([head, *tail]) == want


def test_natd_of_is_natd_hash() -> None:
    import ipaddress

    from pypluto.ike import codec
    for addr in (ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("2001:db8::1")):
        for port in (500, 4500, 0):
            assert codec.natd_of(b"i" * 8, b"r" * 8, codec.endpoint_bytes(addr, port)) == \
                codec.natd_hash(b"i" * 8, b"r" * 8, addr, port)


def test_whole_init_answer_run_is_what_its_payloads_serialize_to() -> None:
    """``_init_answer`` (one run) gives the bytes, and the sent-notify counts, of
    [SA, KE, Nr, N(NAT-D source), N(NAT-D destination), capability notifies] built as
    payloads, for every capability input, with and without the NAT-D pair."""
    from collections import Counter

    from pypluto.ike import codec
    from pypluto.ike.stats import _notifies
    caps = (N.IKEV2_FRAGMENTATION_SUPPORTED, N.SIGNATURE_HASH_ALGORITHMS,
            N.CHILDLESS_IKEV2_SUPPORTED)
    c = Chosen(encr=20, encr_bits=256, prf=5, ke=31, number=1)
    ke_data, nonce = bytes(range(32)), b"n" * 32
    natd = (b"s" * 20, b"d" * 20)
    for frag, vids, send in itertools.product(("yes", "no"), ([], [b"vid-one"], [b"a", b"b"]),
                                              (False, True)):
        ctx = SimpleNamespace(settings=EngineSettings(vendorids=list(vids)))
        conn = Connection(name="t", fragmentation=frag, send_vendorid=send)
        for mask in range(8):
            peer = {int(t): wp.NotifyPayload(0, b"", t, b"") for i, t in enumerate(caps)
                    if mask & (1 << i)}
            for nd in (None, natd):
                want_p: list[wp.Payload] = [
                    codec.sa([ike_init.proposals.chosen_proposal(
                        c, ike_init.ProtocolID.IKE, b"", ike=True)]),
                    codec.ke(c.ke, ke_data), codec.nonce(nonce)]
                if nd is not None:
                    want_p += [codec.notify(N.NAT_DETECTION_SOURCE_IP, nd[0]),
                               codec.notify(N.NAT_DETECTION_DESTINATION_IP, nd[1])]
                want_p += ike_init._capabilities(ctx, conn, peer)  # type: ignore[arg-type]
                run = ike_init._init_answer(
                    ike_init._sa_template(c)[1], c.ke, ke_data, nonce, nd,
                    ike_init._capability_run(ctx, conn, peer))  # type: ignore[arg-type]
                assert _chain([run]) == _chain(want_p)
                # and with something after it (the run's last Next Payload is patched)
                tail = [codec.notify(N.USE_PPK)]
                assert _chain([run, *tail]) == _chain(want_p + tail)
                want_n: Counter[int] = Counter()
                got_n: Counter[int] = Counter()
                _notifies(want_n, want_p)
                _notifies(got_n, [run])
                assert got_n == want_n
                assert all(type(k) is int for k in got_n)


def test_idr_auth_run_is_what_the_two_payloads_serialize_to() -> None:
    from pypluto.iana import PayloadType as PT
    from pypluto.ike import codec
    for body in (b"\x02\x00\x00\x00east", b"\x01\x00\x00\x00\xc0\x00\x02\x02"):
        for method, data in ((2, b"m" * 32), (13, b"n" * 64), (2, b"x")):
            want = [wp.UnknownPayload(PT.IDr, body), codec.auth(method, data)]
            run = codec.idr_auth(body, method, data)
            assert _chain([run]) == _chain(want)
            tail = [codec.notify(N.MOBIKE_SUPPORTED)]  # what may follow it
            assert _chain([run, *tail]) == _chain(want + tail)
            parsed = wm.parse_payloads(PT.IDr, _chain([run]))
            assert [type(p) for p in parsed] == [wp.IDPayload, wp.AuthPayload]


def test_answer_with_extra_notifies_counts_what_it_sends() -> None:
    """An IKE_SA_INIT answer with IKE_INT_SUP (not the one-run answer) sends the
    capability template as a run too: the sent-notify counters match its bytes."""
    from collections import Counter

    from pypluto.iana import ExchangeType

    from .harness import Net
    ike = "aes_gcm256-sha2_384-dh31;addke1=mlkem768"
    net = Net(west_kw={"ike": ike}, east_kw={"ike": ike})
    net.up()
    assert net.established(net.east)
    init = [d for who, d in net.sent if who == "east"
            and wm.peek_header(d).exchange == ExchangeType.IKE_SA_INIT]
    assert len(init) == 1
    types = Counter(int(p.notify_type) for p in wm.parse_message(init[0]).payloads
                    if isinstance(p, wp.NotifyPayload))
    assert N.INTERMEDIATE_EXCHANGE_SUPPORTED in types
    assert N.SIGNATURE_HASH_ALGORITHMS in types and N.CHILDLESS_IKEV2_SUPPORTED in types
    sent = net.east.engine.stats.notify_sent
    for t, n in types.items():
        assert sent[t] == n, N(t).name
