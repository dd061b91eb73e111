"""The algorithm registry: IANA IKEv2 transform IDs, Libreswan's and strongSwan's names.

Algorithms are data (DESIGN.md rule 4).  ``ike=`` / ``esp=`` parsing, proposal
matching, the SK payload, ESP in the userspace data plane and the XFRM backend
all read this one table.

IDs are from the IANA "Internet Key Exchange Version 2 (IKEv2) Parameters"
registry (RFC 7296 §3.3.2, RFC 9370 for the additional key exchanges, and
draft-ietf-ipsecme-ikev2-mlkem for ML-KEM).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pypluto.iana import ESN, KE, Encr, Integ, Prf, TransformType

__all__ = [
    "ALGORITHMS",
    "ESN",
    "KE",
    "Algorithm",
    "Encr",
    "Integ",
    "Prf",
    "TransformType",
    "algorithms",
    "get",
    "lookup",
    "transform_name",
]


@dataclass(frozen=True)
class Algorithm:
    """One transform.  Sizes are in bytes unless the name says bits."""

    type: TransformType
    id: int
    iana_name: str
    names: tuple[str, ...]  # Libreswan names first; lower case; first is canonical
    strongswan: str = ""  # strongSwan's keyword (for log lines), without key size
    key_bits: tuple[int, ...] = ()  # ENCR: allowed key lengths; () = fixed size
    default_key_bits: int | None = None  # ENCR: Libreswan's default when none given
    aead: bool = False
    icv_size: int = 0  # ENCR (AEAD) and INTEG: ICV bytes on the wire
    block_size: int = 1  # ENCR: padding unit
    iv_size: int = 0  # ENCR: explicit IV bytes on the wire
    salt_size: int = 0  # ENCR (GCM/CCM/CTR/ChaCha): key material bytes after the key
    key_size: int = 0  # PRF/INTEG: preferred key bytes; ENCR with fixed keys: key bytes
    output_size: int = 0  # PRF: output bytes; INTEG: untruncated MAC bytes
    hash_name: str = ""  # PRF/INTEG: hashlib / cryptography hash name
    ke_kind: str = ""  # KE: "modp", "ecp", "ecx", "kem"
    ke_size: int = 0  # KE: public value bytes in the KE payload (initiator side)
    ke_response_size: int = 0  # KE: responder's KE data bytes when it differs (ML-KEM ciphertext)
    ike_ok: bool = True  # usable for the IKE SA (NULL encryption is ESP only)
    esp_ok: bool = True
    insecure: bool = False  # accepted only when explicitly configured
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return self.names[0]

    def ke_data_size(self, responder: bool) -> int:
        """KE payload data bytes sent by the initiator or the responder (FIPS 203 for ML-KEM)."""
        return (self.ke_response_size or self.ke_size) if responder else self.ke_size

    def key_material_bytes(self, key_bits: int | None = None) -> int:
        """Bytes of keying material to take from prf+ (RFC 7296 §2.13/2.17)."""
        if self.type == TransformType.ENCR:
            if self.key_bits:
                bits = key_bits or self.default_key_bits or self.key_bits[0]
                return bits // 8 + self.salt_size
            return self.key_size + self.salt_size
        return self.key_size


# Table-row builders: the transform type is fixed, every other field is checked by mypy.
_e = functools.partial(Algorithm, TransformType.ENCR)
_p = functools.partial(Algorithm, TransformType.PRF)
_i = functools.partial(Algorithm, TransformType.INTEG)
_k = functools.partial(Algorithm, TransformType.KE)


_AES_BITS = (128, 192, 256)

ALGORITHMS: tuple[Algorithm, ...] = (
    # --- ENCR -------------------------------------------------------------
    _e(Encr.TRIPLE_DES, "3DES", ("3des", "3des_cbc"), strongswan="3des",
       key_size=24, block_size=8, iv_size=8, insecure=True),
    _e(Encr.NULL, "NULL", ("null", "null_cbc"), strongswan="null",
       block_size=4, ike_ok=False, insecure=True),
    _e(Encr.AES_CBC, "AES_CBC", ("aes", "aes_cbc"), strongswan="aes",
       key_bits=_AES_BITS, default_key_bits=128, block_size=16, iv_size=16),
    _e(Encr.AES_CTR, "AES_CTR", ("aes_ctr", "aesctr"), strongswan="aesctr",
       key_bits=_AES_BITS, default_key_bits=128, block_size=4, iv_size=8, salt_size=4),
    _e(Encr.AES_CCM_8, "AES_CCM_8", ("aes_ccm_8", "aes_ccm_a", "aes_ccm8"),
       strongswan="aesccm8", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=8, block_size=4, iv_size=8, salt_size=3),
    _e(Encr.AES_CCM_12, "AES_CCM_12", ("aes_ccm_12", "aes_ccm_b", "aes_ccm12"),
       strongswan="aesccm12", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=12, block_size=4, iv_size=8, salt_size=3),
    _e(Encr.AES_CCM_16, "AES_CCM_16", ("aes_ccm_16", "aes_ccm_c", "aes_ccm16", "aes_ccm"),
       strongswan="aesccm16", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=16, block_size=4, iv_size=8, salt_size=3),
    _e(Encr.AES_GCM_8, "AES_GCM_8", ("aes_gcm_8", "aes_gcm_a", "aes_gcm8"),
       strongswan="aesgcm8", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=8, block_size=4, iv_size=8, salt_size=4),
    _e(Encr.AES_GCM_12, "AES_GCM_12", ("aes_gcm_12", "aes_gcm_b", "aes_gcm12"),
       strongswan="aesgcm12", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=12, block_size=4, iv_size=8, salt_size=4),
    _e(Encr.AES_GCM_16, "AES_GCM_16", ("aes_gcm_16", "aes_gcm_c", "aes_gcm16", "aes_gcm"),
       strongswan="aesgcm16", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=16, block_size=4, iv_size=8, salt_size=4),
    _e(Encr.NULL_AUTH_AES_GMAC, "NULL_AUTH_AES_GMAC", ("aes_gmac", "null_auth_aes_gmac"),
       strongswan="aesgmac", key_bits=_AES_BITS, default_key_bits=128, aead=True,
       icv_size=16, block_size=4, iv_size=8, salt_size=4, ike_ok=False),
    _e(Encr.CAMELLIA_CBC, "CAMELLIA_CBC", ("camellia", "camellia_cbc"), strongswan="camellia",
       key_bits=_AES_BITS, default_key_bits=128, block_size=16, iv_size=16),
    _e(Encr.CHACHA20_POLY1305, "CHACHA20_POLY1305", ("chacha20_poly1305", "chacha20poly1305"),
       strongswan="chacha20poly1305", key_size=32, aead=True, icv_size=16, block_size=4,
       iv_size=8, salt_size=4),
    # --- PRF --------------------------------------------------------------
    _p(Prf.HMAC_MD5, "PRF_HMAC_MD5", ("md5",), strongswan="prfmd5", key_size=16,
       output_size=16, hash_name="md5", insecure=True),
    _p(Prf.HMAC_SHA1, "PRF_HMAC_SHA1", ("sha1", "sha"), strongswan="prfsha1", key_size=20,
       output_size=20, hash_name="sha1"),
    _p(Prf.AES128_XCBC, "PRF_AES128_XCBC", ("aes_xcbc", "aes128_xcbc"),
       strongswan="prfaesxcbc", key_size=16, output_size=16),
    _p(Prf.HMAC_SHA2_256, "PRF_HMAC_SHA2_256", ("sha2_256", "sha256", "sha2"),
       strongswan="prfsha256", key_size=32, output_size=32, hash_name="sha256"),
    _p(Prf.HMAC_SHA2_384, "PRF_HMAC_SHA2_384", ("sha2_384", "sha384"),
       strongswan="prfsha384", key_size=48, output_size=48, hash_name="sha384"),
    _p(Prf.HMAC_SHA2_512, "PRF_HMAC_SHA2_512", ("sha2_512", "sha512"),
       strongswan="prfsha512", key_size=64, output_size=64, hash_name="sha512"),
    _p(Prf.AES128_CMAC, "PRF_AES128_CMAC", ("aes_cmac", "aes128_cmac"),
       strongswan="prfcmac", key_size=16, output_size=16),
    # --- INTEG ------------------------------------------------------------
    _i(Integ.NONE, "NONE", ("none", "null"), strongswan="", esp_ok=True),
    _i(Integ.HMAC_MD5_96, "AUTH_HMAC_MD5_96", ("md5", "hmac_md5", "md5_96"), strongswan="md5",
       key_size=16, icv_size=12, output_size=16, hash_name="md5", insecure=True),
    _i(Integ.HMAC_SHA1_96, "AUTH_HMAC_SHA1_96", ("sha1", "sha", "sha1_96", "hmac_sha1"),
       strongswan="sha1", key_size=20, icv_size=12, output_size=20, hash_name="sha1"),
    _i(Integ.AES_XCBC_96, "AUTH_AES_XCBC_96", ("aes_xcbc", "aes128_xcbc", "aes128_xcbc_96"),
       strongswan="aesxcbc", key_size=16, icv_size=12, output_size=16),
    _i(Integ.AES_CMAC_96, "AUTH_AES_CMAC_96", ("aes_cmac", "aes128_cmac"),
       strongswan="aescmac", key_size=16, icv_size=12, output_size=16),
    _i(Integ.HMAC_SHA2_256_128, "AUTH_HMAC_SHA2_256_128",
       ("sha2_256", "sha256", "sha2", "sha2_256_128", "hmac_sha2_256"),
       strongswan="sha256", key_size=32, icv_size=16, output_size=32, hash_name="sha256"),
    _i(Integ.HMAC_SHA2_384_192, "AUTH_HMAC_SHA2_384_192",
       ("sha2_384", "sha384", "sha2_384_192", "hmac_sha2_384"),
       strongswan="sha384", key_size=48, icv_size=24, output_size=48, hash_name="sha384"),
    _i(Integ.HMAC_SHA2_512_256, "AUTH_HMAC_SHA2_512_256",
       ("sha2_512", "sha512", "sha2_512_256", "hmac_sha2_512"),
       strongswan="sha512", key_size=64, icv_size=32, output_size=64, hash_name="sha512"),
    # --- KE -----------------------------------------------------------------
    _k(KE.NONE, "NONE", ("none", "null", "dh0"), strongswan=""),
    _k(KE.MODP768, "MODP768", ("modp768", "dh1"), strongswan="modp768", ke_kind="modp",
       ke_size=96, insecure=True),
    _k(KE.MODP1024, "MODP1024", ("modp1024", "dh2"), strongswan="modp1024", ke_kind="modp",
       ke_size=128, insecure=True),
    _k(KE.MODP1536, "MODP1536", ("modp1536", "dh5"), strongswan="modp1536", ke_kind="modp",
       ke_size=192),
    _k(KE.MODP2048, "MODP2048", ("modp2048", "dh14"), strongswan="modp2048", ke_kind="modp",
       ke_size=256),
    _k(KE.MODP3072, "MODP3072", ("modp3072", "dh15"), strongswan="modp3072", ke_kind="modp",
       ke_size=384),
    _k(KE.MODP4096, "MODP4096", ("modp4096", "dh16"), strongswan="modp4096", ke_kind="modp",
       ke_size=512),
    _k(KE.MODP6144, "MODP6144", ("modp6144", "dh17"), strongswan="modp6144", ke_kind="modp",
       ke_size=768),
    _k(KE.MODP8192, "MODP8192", ("modp8192", "dh18"), strongswan="modp8192", ke_kind="modp",
       ke_size=1024),
    _k(KE.ECP256, "ECP_256", ("ecp256", "dh19", "ecp_256"), strongswan="ecp256",
       ke_kind="ecp", ke_size=64),
    _k(KE.ECP384, "ECP_384", ("ecp384", "dh20", "ecp_384"), strongswan="ecp384",
       ke_kind="ecp", ke_size=96),
    _k(KE.ECP521, "ECP_521", ("ecp521", "dh21", "ecp_521"), strongswan="ecp521",
       ke_kind="ecp", ke_size=132),
    _k(KE.MODP1024_S160, "MODP1024_S160", ("dh22", "modp1024s160"),
       strongswan="modp1024s160", ke_kind="modp", ke_size=128, insecure=True),
    _k(KE.MODP2048_S224, "MODP2048_S224", ("dh23", "modp2048s224"),
       strongswan="modp2048s224", ke_kind="modp", ke_size=256, insecure=True),
    _k(KE.MODP2048_S256, "MODP2048_S256", ("dh24", "modp2048s256"),
       strongswan="modp2048s256", ke_kind="modp", ke_size=256, insecure=True),
    _k(KE.CURVE25519, "CURVE25519", ("dh31", "curve25519", "x25519"), strongswan="x25519",
       ke_kind="ecx", ke_size=32),
    _k(KE.CURVE448, "CURVE448", ("dh32", "curve448", "x448"), strongswan="x448",
       ke_kind="ecx", ke_size=56),
    _k(KE.ML_KEM_512, "ML_KEM_512", ("mlkem512", "ml_kem_512"), strongswan="mlkem512",
       ke_kind="kem", ke_size=800, ke_response_size=768),
    _k(KE.ML_KEM_768, "ML_KEM_768", ("mlkem768", "ml_kem_768"), strongswan="mlkem768",
       ke_kind="kem", ke_size=1184, ke_response_size=1088),
    _k(KE.ML_KEM_1024, "ML_KEM_1024", ("mlkem1024", "ml_kem_1024"), strongswan="mlkem1024",
       ke_kind="kem", ke_size=1568, ke_response_size=1568),
    # --- ESN ----------------------------------------------------------------
    Algorithm(TransformType.ESN, ESN.NO, "NO_ESN", ("noesn", "no"), strongswan="noesn"),
    Algorithm(TransformType.ESN, ESN.YES, "ESN", ("esn", "yes"), strongswan="esn"),
)

_BY_ID: dict[tuple[int, int], Algorithm] = {(int(a.type), int(a.id)): a for a in ALGORITHMS}
_BY_NAME: dict[tuple[int, str], Algorithm] = {}
for _a in ALGORITHMS:
    for _n in _a.names:
        _BY_NAME.setdefault((int(_a.type), _n), _a)


def _base_type(ttype: int) -> int:
    """ADDKE1..7 use the KE table (RFC 9370)."""
    return int(TransformType.KE) if ttype >= TransformType.ADDKE1 else int(ttype)


def get(ttype: int, transform_id: int) -> Algorithm | None:
    """The algorithm for an IANA (transform type, transform ID), or None if unknown."""
    # IntEnum members hash and compare as their ints: no conversion needed (hot path).
    return _BY_ID.get((ttype if ttype < TransformType.ADDKE1 else 4, transform_id))


def lookup(ttype: int, name: str) -> Algorithm | None:
    """The algorithm for a Libreswan name (case-insensitive, no key size), or None."""
    return _BY_NAME.get((_base_type(ttype), name.lower()))


def algorithms(ttype: int) -> list[Algorithm]:
    """Every algorithm of one transform type, in table order."""
    base = _base_type(ttype)
    return [a for a in ALGORITHMS if int(a.type) == base]


def transform_name(ttype: int, transform_id: int, key_bits: int | None = None) -> str:
    """A log name in Libreswan's style, e.g. ``AES_GCM_16_256`` or ``PRF_HMAC_SHA2_256``."""
    alg = get(ttype, transform_id)
    if alg is None:
        return f"{TransformType(_base_type(ttype)).name}_{transform_id}?"
    if key_bits:
        return f"{alg.iana_name}_{key_bits}"
    return alg.iana_name
