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
    for frag, vids in itertools.product(("yes", "no"), ([], [b"vid-one", b"vid-two"])):
        ctx = SimpleNamespace(settings=EngineSettings(vendorids=list(vids)))
        conn = Connection(name="t", fragmentation=frag)
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
