"""ML-KEM-768/1024 known answers (FIPS 203) for ``crypto/dh.py``'s KEM code.

Independent of our own round trips: Project Wycheproof's ML-KEM vectors,
a verbatim subset in ``vectors/wycheproof_mlkem_subset.json`` (``../shared``
has no ML-KEM vectors; the file names its source commit and selection).

* Key generation from the seed (FIPS 203 §7.1 ML-KEM.KeyGen_internal with
  seed = d‖z): ``KemInitiator(group, seed=...)`` must give exactly the
  vector's encapsulation key ``ek`` (the IKE KE data an initiator sends,
  draft-ietf-ipsecme-ikev2-mlkem §2).
* Decapsulation (§7.3): ``finish(c)`` must give the vector's ``K``, also for
  the implicit-rejection vectors (random and bit-flipped ciphertexts, where K
  is J(z‖c)); a ciphertext of the wrong length is an ``InvalidKeyExchange``.
  A wrong-length seed is refused.
* Encapsulation with fixed randomness is not offered by ``cryptography``, so
  only the invalid encapsulation keys of the encaps sets are used: the
  responder must refuse each (§7.2 type and modulus checks), with
  ``InvalidKeyExchange``.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from crypto_kat import count, h
from testsupport import require

from pypluto.crypto import dh
from pypluto.crypto.errors import InvalidKeyExchange
from pypluto.crypto.registry import KE

VECTORS = pathlib.Path(__file__).resolve().parent / "vectors" / "wycheproof_mlkem_subset.json"
GROUPS = {"ML-KEM-768": KE.ML_KEM_768, "ML-KEM-1024": KE.ML_KEM_1024}
# (decapsulation cases, invalid encapsulation keys) per parameter set, pinned
PINNED = {"ML-KEM-768": (24, 6), "ML-KEM-1024": (24, 6)}


def _data() -> dict[str, Any]:
    return json.loads(VECTORS.read_text())


@pytest.mark.parametrize("param_set", list(GROUPS))
def test_mlkem_keygen_and_decaps_kat(pytestconfig: pytest.Config, param_set: str) -> None:
    group = GROUPS[param_set]
    require(dh.supported(group), f"{param_set} in the installed cryptography")
    tests = _data()["decaps"][param_set]
    n = valid = rejected = 0
    for t in tests:
        seed, c = h(t["seed"]), h(t["c"])
        if "ek" not in t:  # "Private key too short/long": the seed has the wrong length
            assert t["result"] == "invalid" and len(seed) != 64, t["tcId"]
            with pytest.raises(ValueError):
                dh.KemInitiator(group, seed=seed)
            n += 1
            continue
        ke = dh.KemInitiator(group, seed=seed)
        assert ke.public == h(t["ek"]), f"{param_set} tcId {t['tcId']}: keygen from seed"
        if t["result"] == "valid":
            assert ke.finish(c) == h(t["K"]), f"{param_set} tcId {t['tcId']}: decaps"
            valid += 1
        else:  # "Ciphertext too short/long"
            with pytest.raises(InvalidKeyExchange):
                ke.finish(c)
            rejected += 1
        n += 1
    assert (valid, rejected) == (18, 4), (valid, rejected)
    count(pytestconfig, n, f"wycheproof_{param_set.lower().replace('-', '')}_decaps",
          expected=PINNED[param_set][0])


@pytest.mark.parametrize("param_set", list(GROUPS))
def test_mlkem_invalid_encapsulation_keys(pytestconfig: pytest.Config, param_set: str) -> None:
    group = GROUPS[param_set]
    require(dh.supported(group), f"{param_set} in the installed cryptography")
    n = 0
    for t in _data()["encaps_invalid"][param_set]:
        assert t["result"] == "invalid"
        with pytest.raises(InvalidKeyExchange):
            dh.responder_ke(group, h(t["ek"]))
        n += 1
    count(pytestconfig, n, f"wycheproof_{param_set.lower().replace('-', '')}_bad_ek",
          expected=PINNED[param_set][1])


def test_vector_file_is_the_recorded_subset() -> None:
    """The file still holds what its header says (source commit, both parameter sets)."""
    d = _data()
    assert d["source"]["commit"] == "fca0d3ba9f1286c3af57801ace39c633e29a88f1"
    assert set(d["decaps"]) == set(d["encaps_invalid"]) == set(GROUPS)
    ids = [t["tcId"] for t in d["decaps"]["ML-KEM-768"]]
    assert len(ids) == len(set(ids))
