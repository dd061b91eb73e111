"""The IKE_SA_INIT log line's transform names, made once per transform set (issue 18)."""

from __future__ import annotations

from pypluto.iana import Encr
from pypluto.ike.proposals import Chosen
from pypluto.ike.tasks import ike_init


def test_alg_names_are_the_chosen_transforms_names() -> None:
    sets = [Chosen(encr=Encr.AES_GCM_16, encr_bits=256, prf=5, ke=31),
            Chosen(encr=Encr.AES_CBC, encr_bits=128, prf=5, integ=12, ke=14),
            Chosen(encr=Encr.CHACHA20_POLY1305, prf=7, ke=19, addke=(35,))]
    want = ["AES_GCM_16_256-PRF_HMAC_SHA2_256-CURVE25519",
            "AES_CBC_128-AUTH_HMAC_SHA2_256_128-PRF_HMAC_SHA2_256-MODP2048",
            "CHACHA20_POLY1305-PRF_HMAC_SHA2_512-ECP_256-KE1_ML_KEM_512"]
    for c, w in zip(sets, want, strict=True):
        assert ike_init._alg_names(c) == w
        assert ike_init._alg_names(c) == w  # from the memo: the same text
    # a set that differs in one transform only gets its own text
    assert ike_init._alg_names(Chosen(encr=Encr.AES_GCM_16, encr_bits=128, prf=5, ke=31)) \
        == "AES_GCM_16_128-PRF_HMAC_SHA2_256-CURVE25519"
