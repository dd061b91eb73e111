"""SKProtector against real traffic: the SK payloads of Openswan's unit-test captures.

Each ``expected.json`` gives the keys Openswan printed and, for every SK
message, the inner payloads (integrity checked independently).  AES-CBC-128
with HMAC-SHA1-96 / HMAC-SHA2-256-128, and 3DES with HMAC-MD5-96.
"""

from __future__ import annotations

import json

import pytest
from crypto_kat import count, h
from testsupport import shared_path

from pypluto.crypto.errors import IntegrityError
from pypluto.crypto.registry import Encr, Integ
from pypluto.crypto.sk import SKProtector

_ENCR = {"aes128": (Encr.AES_CBC, 128), "3des192": (Encr.TRIPLE_DES, None)}
_INTEG = {"sha256": Integ.HMAC_SHA2_256_128, "sha1": Integ.HMAC_SHA1_96,
          "md5": Integ.HMAC_MD5_96}


def _sk_split(msg: bytes) -> tuple[bytes, bytes]:
    """(aad, body) of the SK payload: walk the generic headers (RFC 7296 §3.2)."""
    nxt, off = msg[16], 28
    while nxt != 46:
        nxt, plen = msg[off], int.from_bytes(msg[off + 2 : off + 4], "big")
        off += plen
    plen = int.from_bytes(msg[off + 2 : off + 4], "big")
    return msg[: off + 4], msg[off + 4 : off + plen]


def test_openswan_captures_decrypt(pytestconfig: pytest.Config) -> None:
    root = shared_path("vectors", "pcaps", "openswan")
    n = 0
    for f in sorted(root.glob("*/expected.json")):
        d = json.loads(f.read_text())
        for fr in d["frames"]:
            dec = fr.get("sk_decryption")
            if not dec:
                continue
            if not isinstance(dec, dict) or not dec.get("integrity_verified"):
                continue  # e.g. "keys in this test do not decrypt this message"
            msg = h(fr["ike_hex"])
            keyrows = [k for k in d["keys"] if k["role"] == dec["keys_role"]
                       and h(k["spi_i"]) == msg[:8] and h(k["spi_r"]) == msg[8:16]]
            assert keyrows, (f, fr["frame"])
            aad, body = _sk_split(msg)
            inner = h(dec["inner_payloads_hex"])
            # a test may print several key sets for the same SPIs: those that
            # verify must give the recorded plaintext, the rest must fail cleanly
            hits = []
            for k in keyrows:
                encr, bits = _ENCR[k["encr"]]
                sk = SKProtector(encr, bits, _INTEG[k["integ"]], h(k["SK_e"]), h(k["SK_a"]))
                try:
                    hits.append((sk, sk.decrypt(aad, body)))
                except IntegrityError:
                    pass
            assert hits and all(p == inner for _, p in hits), (f.parent.name, fr["pcap"])
            sk = hits[0][0]
            bad = bytearray(body)
            bad[-1] ^= 1
            with pytest.raises(IntegrityError):
                sk.decrypt(aad, bytes(bad))
            # and what we encrypt with the same keys, the peer's way of reading accepts
            again = sk.encrypt(aad, inner)
            assert sk.decrypt(aad, again) == inner
            n += 1
    count(pytestconfig, n, "openswan_sk_messages", expected=23)


def test_wireshark_aes_ccm_12_capture(pytestconfig: pytest.Config) -> None:
    """RFC 5282 AES-CCM-12 SK payloads (Wireshark's ikev2-decrypt-aes128ccm12 capture)."""
    import ast

    path = shared_path("vectors", "pcaps", "wireshark",
                       "ikev2-decrypt-aes128ccm12.subset.expected.json")
    n = 0
    for fr in json.loads(path.read_text())["frames"]:
        if "sk_decryption" not in fr:
            continue
        dec = fr["sk_decryption"]
        if isinstance(dec, str):
            dec = ast.literal_eval(dec)
        msg = h(fr["ike_hex"])
        sk = SKProtector(Encr.AES_CCM_12, 128, None, h(dec["SK_e(key|3-byte salt)"]))
        aad, body = _sk_split(msg)
        plain = h(dec["plaintext_hex"])
        assert sk.decrypt(aad, body) == plain[: len(plain) - 1 - plain[-1]]
        # we pad AEAD the same way (none), so re-encrypting with its IV gives the same bytes
        assert sk.encrypt(aad, plain[:-1], iv=body[:8]) == body
        n += 1
    count(pytestconfig, n, "wireshark_ccm_sk_messages", expected=2)
