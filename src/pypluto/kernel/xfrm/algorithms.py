"""IANA ESP transform IDs -> Linux crypto API names for XFRM.

AEAD transforms go in XFRMA_ALG_AEAD with their ICV length; the others in
XFRMA_ALG_CRYPT plus XFRMA_ALG_AUTH_TRUNC with the *negotiated* truncation
(RFC 4868 §2.3: HMAC-SHA2-256 is truncated to 128 bits, -384 to 192, -512 to
256; XFRMA_ALG_AUTH would give the kernel's 96-bit default and break interop).
"""

from __future__ import annotations

from dataclasses import dataclass

from pypluto.iana import Encr, Integ, TransformType

from ...crypto import registry
from ..base import BackendError

# Encr ID -> (kernel AEAD name, ICV bits).  RFC 4106 (GCM), RFC 4309 (CCM),
# RFC 4543 (GMAC), RFC 7634 (ChaCha20-Poly1305; the kernel calls it rfc7539esp).
AEAD_NAMES: dict[int, tuple[str, int]] = {
    Encr.AES_GCM_8: ("rfc4106(gcm(aes))", 64),
    Encr.AES_GCM_12: ("rfc4106(gcm(aes))", 96),
    Encr.AES_GCM_16: ("rfc4106(gcm(aes))", 128),
    Encr.AES_CCM_8: ("rfc4309(ccm(aes))", 64),
    Encr.AES_CCM_12: ("rfc4309(ccm(aes))", 96),
    Encr.AES_CCM_16: ("rfc4309(ccm(aes))", 128),
    Encr.NULL_AUTH_AES_GMAC: ("rfc4543(gcm(aes))", 128),
    Encr.CHACHA20_POLY1305: ("rfc7539esp(chacha20,poly1305)", 128),
}

# Encr ID -> kernel cipher name (RFC 3602 CBC, RFC 3686 CTR with its nonce in the key).
CRYPT_NAMES: dict[int, str] = {
    Encr.AES_CBC: "cbc(aes)",
    Encr.AES_CTR: "rfc3686(ctr(aes))",
    Encr.TRIPLE_DES: "cbc(des3_ede)",
    Encr.NULL: "ecb(cipher_null)",
    Encr.CAMELLIA_CBC: "cbc(camellia)",
}

# Integ ID -> kernel hash name; the truncation comes from the registry's ICV size.
AUTH_NAMES: dict[int, str] = {
    Integ.HMAC_MD5_96: "hmac(md5)",
    Integ.HMAC_SHA1_96: "hmac(sha1)",
    Integ.AES_XCBC_96: "xcbc(aes)",
    Integ.AES_CMAC_96: "cmac(aes)",
    Integ.HMAC_SHA2_256_128: "hmac(sha256)",
    Integ.HMAC_SHA2_384_192: "hmac(sha384)",
    Integ.HMAC_SHA2_512_256: "hmac(sha512)",
}


@dataclass(frozen=True)
class KernelAlgs:
    """What goes into the SA's algorithm attributes (keys never in repr)."""

    aead: tuple[str, int] | None = None  # (name, icv bits)
    crypt: str | None = None
    auth: tuple[str, int] | None = None  # (name, truncation bits)


def kernel_algorithms(
    encr_id: int, encr_key_bits: int | None, encr_key: bytes, integ_id: int, integ_key: bytes
) -> KernelAlgs:
    """Map negotiated transforms to kernel names, checking key lengths; BackendError if not."""
    encr = registry.get(TransformType.ENCR, encr_id)
    if encr is None:
        raise BackendError(f"XFRM: unknown ESP encryption transform {encr_id}")
    want = encr.key_material_bytes(encr_key_bits)
    if len(encr_key) != want:
        raise BackendError(
            f"XFRM: {encr.iana_name} needs {want} bytes of key material, got {len(encr_key)}"
        )
    if encr_id in AEAD_NAMES:
        if integ_id not in (0, Integ.NONE):
            raise BackendError(f"XFRM: AEAD {encr.iana_name} takes no integrity transform")
        return KernelAlgs(aead=AEAD_NAMES[encr_id])
    if encr_id not in CRYPT_NAMES:
        raise BackendError(f"XFRM: {encr.iana_name} is not supported by the XFRM backend")
    auth = None
    if integ_id not in (0, Integ.NONE):
        auth = kernel_auth(integ_id, integ_key)
    elif encr_id == Encr.NULL:
        raise BackendError("XFRM: NULL encryption needs an integrity transform")
    return KernelAlgs(crypt=CRYPT_NAMES[encr_id], auth=auth)


def kernel_auth(integ_id: int, integ_key: bytes) -> tuple[str, int]:
    """(kernel name, truncation bits) of an integrity transform, checking the key length."""
    integ = registry.get(TransformType.INTEG, integ_id)
    if integ is None or integ_id not in AUTH_NAMES:
        raise BackendError(f"XFRM: integrity transform {integ_id} is not supported")
    if len(integ_key) != integ.key_size:
        raise BackendError(
            f"XFRM: {integ.iana_name} needs a {integ.key_size}-byte key, got {len(integ_key)}"
        )
    return AUTH_NAMES[integ_id], integ.icv_size * 8
