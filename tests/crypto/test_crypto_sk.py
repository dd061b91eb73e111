"""SK payload protection (RFC 7296 §3.14, RFC 5282, RFC 7634 Appendix B)."""

from __future__ import annotations

import itertools

import pytest
from crypto_kat import count, h, load_vectors

from pypluto.crypto.errors import CryptoError, IntegrityError, UnsupportedAlgorithm
from pypluto.crypto.keys import encr_key_bytes, integ_key_bytes
from pypluto.crypto.registry import Encr, Integ
from pypluto.crypto.sk import SKProtector

AEADS = [(Encr.AES_GCM_8, 128), (Encr.AES_GCM_12, 192), (Encr.AES_GCM_16, 256),
         (Encr.AES_CCM_8, 128), (Encr.AES_CCM_12, 192), (Encr.AES_CCM_16, 256),
         (Encr.CHACHA20_POLY1305, None)]
PLAIN = [(Encr.AES_CBC, 128), (Encr.AES_CBC, 256), (Encr.AES_CTR, 192),
         (Encr.TRIPLE_DES, None), (Encr.CAMELLIA_CBC, 256)]
INTEGS = [Integ.HMAC_SHA1_96, Integ.HMAC_SHA2_256_128, Integ.HMAC_SHA2_384_192,
          Integ.HMAC_SHA2_512_256, Integ.AES_XCBC_96, Integ.AES_CMAC_96, Integ.HMAC_MD5_96]
COMBOS = [(e, b, None) for e, b in AEADS] + [
    (e, b, i) for (e, b), i in itertools.product(PLAIN, INTEGS)]


def _pair(encr: int, bits: int | None, integ: int | None) -> tuple[SKProtector, SKProtector]:
    ek = bytes(range(encr_key_bytes(encr, bits)))
    ak = bytes(range(50, 50 + integ_key_bytes(integ)))
    return SKProtector(encr, bits, integ, ek, ak), SKProtector(encr, bits, integ, ek, ak)


def test_rfc7634_appendix_b_ikev2_sk_payload(pytestconfig: pytest.Config) -> None:
    """The IKEv2 example of RFC 7634 Appendix B, through SKProtector."""
    v = {x["name"]: x for x in load_vectors("chacha20poly1305_rfc7539_rfc7634.json")["vectors"]}[
        "chacha20poly1305_4"]
    sk = SKProtector(Encr.CHACHA20_POLY1305, None, None, h(v["key"] + v["salt"]))
    plain = h(v["plain"])
    assert plain[-1] == 0  # Pad Length 0: no padding for AEAD in IKEv2
    inner = plain[:-1]
    body = sk.encrypt(h(v["aad"]), inner, iv=h(v["iv"]))
    assert body == h(v["iv"]) + h(v["cipher_and_icv"])
    assert sk.body_length(len(inner)) == len(body)
    assert sk.decrypt(h(v["aad"]), body) == inner
    # the AAD is the IKE header + SK generic header: changing it must fail
    bad_aad = bytearray(h(v["aad"]))
    bad_aad[-1] ^= 1
    with pytest.raises(IntegrityError):
        sk.decrypt(bytes(bad_aad), body)
    count(pytestconfig, 1, "rfc7634_sk_payload", expected=1)


@pytest.mark.parametrize(("encr", "bits", "integ"), COMBOS)
def test_round_trip_and_tamper(encr: int, bits: int | None, integ: int | None) -> None:
    tx, rx = _pair(encr, bits, integ)
    aad = b"H" * 28 + b"\x29\x00\x01\x00"
    for n in (0, 1, 3, 15, 16, 17, 100):
        pt = bytes(range(n))
        body = tx.encrypt(aad, pt)
        assert len(body) == tx.body_length(n)
        assert rx.decrypt(aad, body) == pt
    body = tx.encrypt(aad, b"inner payloads")
    for pos in (0, len(body) // 2, len(body) - 1):  # IV, ciphertext, ICV
        bad = bytearray(body)
        bad[pos] ^= 0x80
        with pytest.raises(IntegrityError):
            rx.decrypt(aad, bytes(bad))
    with pytest.raises(IntegrityError):
        rx.decrypt(aad[:-1] + b"\x01", body)
    for cut in (0, 1, tx.iv_size + tx.icv_size, len(body) - 1):
        with pytest.raises(IntegrityError):
            rx.decrypt(aad, body[:cut])
    if integ is not None:  # a MAC over the wrong key fails too
        other = SKProtector(encr, bits, integ, bytes(encr_key_bytes(encr, bits)),
                            bytes(integ_key_bytes(integ)))
        with pytest.raises(IntegrityError):
            other.decrypt(aad, body)


def test_cbc_padding_and_bad_pad_length() -> None:
    """§3.14: padding to the block size; a Pad Length beyond the data is an IntegrityError."""
    ek, ak = bytes(16), bytes(32)
    tx = SKProtector(Encr.AES_CBC, 128, Integ.HMAC_SHA2_256_128, ek, ak)
    for n in range(0, 40):
        assert (tx.body_length(n) - 16 - 16) % 16 == 0
        assert tx.body_length(n) - 32 >= n + 1
    # craft a correctly MACed body whose decrypted Pad Length is 255
    from pypluto.crypto.ciphers import make_cbc, make_integ

    iv = bytes(16)
    ct = make_cbc(Encr.AES_CBC, ek).encrypt(iv, b"\x00" * 15 + b"\xff")
    aad = b"A" * 32
    icv = make_integ(Integ.HMAC_SHA2_256_128, ak).mac(aad + iv + ct)
    with pytest.raises(IntegrityError):
        tx.decrypt(aad, iv + ct + icv)
    # ... and a ciphertext that is not a whole number of blocks
    ct2 = ct[:-1]
    icv2 = make_integ(Integ.HMAC_SHA2_256_128, ak).mac(aad + iv + ct2)
    with pytest.raises(IntegrityError):
        tx.decrypt(aad, iv + ct2 + icv2)


def test_aead_ivs_never_repeat_and_cbc_ivs_random() -> None:
    tx, _ = _pair(Encr.AES_GCM_16, 128, None)
    ivs = {tx.encrypt(b"a", b"x")[:8] for _ in range(200)}
    assert len(ivs) == 200
    cbc, _ = _pair(Encr.AES_CBC, 128, Integ.HMAC_SHA1_96)
    assert len({cbc.encrypt(b"a", b"x")[:16] for _ in range(50)}) == 50


def test_construction_errors() -> None:
    with pytest.raises(CryptoError):
        SKProtector(Encr.AES_GCM_16, 128, Integ.HMAC_SHA1_96, bytes(20), bytes(20))
    with pytest.raises(CryptoError):
        SKProtector(Encr.AES_CBC, 128, None, bytes(16))
    with pytest.raises(CryptoError):
        SKProtector(Encr.AES_CBC, 128, Integ.HMAC_SHA1_96, bytes(15), bytes(20))
    with pytest.raises(CryptoError):
        SKProtector(Encr.AES_CBC, 128, Integ.HMAC_SHA1_96, bytes(16), bytes(19))
    with pytest.raises(UnsupportedAlgorithm):
        SKProtector(99, 128, Integ.HMAC_SHA1_96, bytes(16), bytes(20))
    sk, _ = _pair(Encr.AES_GCM_16, 128, None)
    assert "AES_GCM_16" in repr(sk) and bytes(range(16)).hex() not in repr(sk)


def test_aead_ivs_unique_across_threads() -> None:
    import threading

    tx, _ = _pair(Encr.AES_GCM_16, 128, None)
    ivs: list[bytes] = []

    def work() -> None:
        out = [tx.encrypt(b"a", b"x")[:8] for _ in range(300)]
        ivs.extend(out)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ivs) == 1200 and len(set(ivs)) == 1200
