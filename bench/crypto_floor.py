"""The floor: the crypto calls alone of one childless responder IKE SA (issue 18).

What a responder must compute for one PSK IKE SA with
``aes256gcm16-prfsha256-x25519`` (RFC 7296), called straight on
``cryptography`` from this process, nothing else (no parsing, no state):

* ``x25519``: key pair generation, public key bytes, the exchange with the
  initiator's public value (section 1.2, RFC 7748);
* ``prf+``: SKEYSEED = prf(Ni | Nr, g^ir), then prf+(SKEYSEED, Ni | Nr | SPIi |
  SPIr) for the 7 keys, SK_d, SK_ai, SK_ar, SK_ei, SK_er, SK_pi, SK_pr
  (section 2.14; with AES-GCM SK_a* are empty, SK_e* are 32 + 4 salt bytes):
  HMAC-SHA-256, 1 + 6 blocks;
* ``aes-gcm``: the two AEAD contexts (SK_ei, SK_er), then two messages each
  way: the IKE_AUTH request and one INFORMATIONAL request (the first liveness
  probe or the delete) decrypted, their two responses encrypted (RFC 5282);
  sizes 300 and 80 bytes of plaintext;
* ``hmac-auth``: the AUTH payloads (section 2.15): for the peer's AUTH and
  ours, prf(SK_px, ID) and prf(prf(PSK, "Key Pad for IKEv2"), octets | Ni/Nr |
  that), 3 HMACs each.

Each part is timed with process time over ``BENCH_FLOOR_N`` (default 5,000)
repetitions, after a warm-up; the total is what the daemon's "responder CPU
per IKE SA, childless" row is compared to (``summary.md`` prints the ratio).

Run alone: ``.venv/bin/python -m bench.crypto_floor [N]``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_PAD = b"Key Pad for IKEv2"
SHA256 = hashes.SHA256()


def prf(key: bytes, data: bytes) -> bytes:
    h = hmac.HMAC(key, SHA256)
    h.update(data)
    return h.finalize()


def prf_plus(key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 section 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    out, t, i = b"", b"", 1
    while len(out) < length:
        t = prf(key, t + seed + bytes([i]))
        out += t
        i += 1
    return out[:length]


class Floor:
    """Fixed inputs of one exchange; each method is one part of the responder's crypto."""

    def __init__(self) -> None:
        self.peer_pub = X25519PrivateKey.generate().public_key()
        self.ni, self.nr = os.urandom(32), os.urandom(32)
        self.spis = os.urandom(16)
        self.psk = b"bench-psk-0123456789abcdefghijklmnopqrstuv"
        self.shared = b""
        self.keys = b""
        self.msgs = [os.urandom(300), os.urandom(80)]
        self.init_req, self.init_resp = os.urandom(400), os.urandom(300)

    def x25519(self) -> None:
        priv = X25519PrivateKey.generate()
        priv.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.shared = priv.exchange(self.peer_pub)

    def prf_keys(self) -> None:
        skeyseed = prf(self.ni + self.nr, self.shared)
        # SK_d 32, SK_ai/SK_ar 0 (AEAD), SK_ei/SK_er 36, SK_pi/SK_pr 32
        self.keys = prf_plus(skeyseed, self.ni + self.nr + self.spis, 32 + 36 + 36 + 32 + 32)

    def prepare(self) -> None:
        """What the initiator sent: its two messages under SK_ei (not timed)."""
        k, aad = self.keys, self.spis + bytes(12)
        ctx = AESGCM(k[32:64])
        self.cts = [ctx.encrypt(k[64:68] + seq.to_bytes(8, "big"), m, aad)
                    for seq, m in enumerate(self.msgs)]

    def aead(self) -> None:
        k, aad = self.keys, self.spis + bytes(12)
        ctx_i, ctx_r = AESGCM(k[32:64]), AESGCM(k[68:100])
        salt_i, salt_r = k[64:68], k[100:104]
        for seq, ct in enumerate(self.cts):
            iv = seq.to_bytes(8, "big")
            plain = ctx_i.decrypt(salt_i + iv, ct, aad)
            ctx_r.encrypt(salt_r + iv, plain, aad)

    def auth(self) -> None:
        sk_pi, sk_pr = self.keys[104:136], self.keys[136:168]
        pad = prf(self.psk, KEY_PAD)
        for sk, octets, nonce in ((sk_pi, self.init_req, self.nr), (sk_pr, self.init_resp,
                                                                     self.ni)):
            maced = prf(sk, b"\x02\x00\x00\x00resp.example")
            prf(pad, octets + nonce + maced)


def _timed(fn: Callable[[], None], n: int) -> float:
    """Process time per call, microseconds."""
    for _ in range(min(200, n)):
        fn()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - t0) * 1e6 / n


def measure(n: int) -> dict[str, float]:
    f = Floor()
    f.x25519()
    f.prf_keys()
    parts = {"x25519": _timed(f.x25519, n), "prf+": _timed(f.prf_keys, n)}
    f.prepare()  # with the keys as they now are
    parts["aes-gcm"] = _timed(f.aead, n)
    parts["hmac-auth"] = _timed(f.auth, n)
    parts["total"] = sum(parts.values())
    return parts


def run(n: int | None = None) -> dict[str, Any]:
    n = n or int(os.environ.get("BENCH_FLOOR_N", "5000"))
    parts = measure(n)
    rows = [{"metric": "crypto floor per childless responder IKE SA",
             "pypluto": round(parts["total"], 1), "strongswan": None, "libreswan": None,
             "unit": "us",
             "note": f"cryptography calls alone, process time, n={n}: "
                     + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "total")
                     + " us (bench/crypto_floor.py says what each part holds)"}]
    return {"name": "crypto_floor", "command": "make bench BENCH=crypto_floor",
            "sizes": {"n": n}, "results": parts, "rows": rows}


if __name__ == "__main__":
    out = run(int(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(out["results"])
