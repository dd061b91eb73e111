"""IKE SA and Child SA key derivation (RFC 7296 §2.13, §2.14, §2.17, §2.18).

All functions are pure: bytes in, bytes out.  Key material never appears in
a ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pypluto.iana import TransformType

from . import registry
from .errors import UnsupportedAlgorithm
from .prf import PRF, get_prf


def _prf(prf: PRF | int) -> PRF:
    return prf if isinstance(prf, PRF) else get_prf(prf)


def skeyseed(prf: PRF | int, ni: bytes, nr: bytes, shared: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) (RFC 7296 §2.14).

    For AES-XCBC-PRF-128 and AES-CMAC-PRF-128 only the first 64 bits of Ni
    and of Nr are used, so the PRF key is exactly 128 bits (§2.14, 2nd para).
    """
    p = _prf(prf)
    key = ni[:8] + nr[:8] if p.is_aes else ni + nr
    return p.compute(key, shared)


def rekey_skeyseed(prf: PRF | int, old_sk_d: bytes, shared: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED of a rekeyed IKE SA = prf(SK_d (old), g^ir (new) | Ni | Nr) (§2.18).

    ``prf`` is the PRF of the *old* IKE SA; ``ni``/``nr`` are the nonces of
    the CREATE_CHILD_SA exchange.  The same form updates the keys after each
    additional key exchange (RFC 9370 §2.2.2: SKEYSEED(n) = prf(SK_d(n-1),
    SK(n) | Ni | Nr)); with several key exchanges in one rekey (§2.2.4)
    ``shared`` is the concatenation of all their secrets, in order.
    """
    return _prf(prf).compute(old_sk_d, shared + ni + nr)


def _hide(v: bytes) -> str:
    return f"<{len(v)} bytes>"


@dataclass(frozen=True, slots=True)
class IKEKeys:
    """The seven IKE SA keys (RFC 7296 §2.14), in prf+ order."""

    sk_d: bytes = field(repr=False)
    sk_ai: bytes = field(repr=False)
    sk_ar: bytes = field(repr=False)
    sk_ei: bytes = field(repr=False)
    sk_er: bytes = field(repr=False)
    sk_pi: bytes = field(repr=False)
    sk_pr: bytes = field(repr=False)

    def __repr__(self) -> str:
        return "IKEKeys(" + ", ".join(
            f"{n}={_hide(getattr(self, n))}"
            for n in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")
        ) + ")"


@dataclass(frozen=True, slots=True)
class ChildKeys:
    """Child SA keys (RFC 7296 §2.17).

    ``encr_i``/``integ_i`` protect initiator→responder traffic, ``encr_r``/
    ``integ_r`` responder→initiator.  Encryption keys include any salt
    (GCM/CCM/CTR/ChaCha20) at the end.
    """

    encr_i: bytes = field(repr=False)
    integ_i: bytes = field(repr=False)
    encr_r: bytes = field(repr=False)
    integ_r: bytes = field(repr=False)

    def __repr__(self) -> str:
        return (
            f"ChildKeys(encr_i={_hide(self.encr_i)}, integ_i={_hide(self.integ_i)}, "
            f"encr_r={_hide(self.encr_r)}, integ_r={_hide(self.integ_r)})"
        )


_KEY_BYTES: dict[tuple[int, int | None], int] = {}


def encr_key_bytes(encr_id: int, encr_key_bits: int | None) -> int:
    """Keying-material bytes for an ENCR transform, salt included (RFC 7296 §2.14; 5282 §7)."""
    n = _KEY_BYTES.get((encr_id, encr_key_bits))
    if n is None:
        n = _KEY_BYTES[(encr_id, encr_key_bits)] = _encr_key_bytes(encr_id, encr_key_bits)
    return n


def _encr_key_bytes(encr_id: int, encr_key_bits: int | None) -> int:
    alg = registry.get(TransformType.ENCR, encr_id)
    if alg is None:
        raise UnsupportedAlgorithm(f"unknown ENCR transform {encr_id}")
    if alg.key_bits and encr_key_bits and encr_key_bits not in alg.key_bits:
        raise UnsupportedAlgorithm(f"{alg.iana_name} has no {encr_key_bits}-bit key")
    return alg.key_material_bytes(encr_key_bits)


def integ_key_bytes(integ_id: int | None) -> int:
    """Key bytes for an INTEG transform; 0 for none (AEAD)."""
    if not integ_id:
        return 0
    alg = registry.get(TransformType.INTEG, integ_id)
    if alg is None:
        raise UnsupportedAlgorithm(f"unknown INTEG transform {integ_id}")
    return alg.key_size


def derive_ike_keys(
    prf_id: int,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    skeyseed: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IKEKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni|Nr|SPIi|SPIr).

    RFC 7296 §2.14: SK_d, SK_pi and SK_pr are the PRF's preferred key size;
    SK_a* are the integrity key size (none with an AEAD, RFC 5282 §7); SK_e*
    are the encryption key plus salt.
    """
    p = get_prf(prf_id)
    layout = _IKE_LAYOUTS.get((prf_id, encr_id, encr_key_bits, integ_id))
    if layout is None:
        layout = _ike_layout(p, encr_id, encr_key_bits, integ_id)
        if len(_IKE_LAYOUTS) < 256:
            _IKE_LAYOUTS[(prf_id, encr_id, encr_key_bits, integ_id)] = layout
    d, ai, ar, ei, er, pi, total = layout
    km = p.plus(skeyseed, b"".join((ni, nr, spi_i, spi_r)), total)
    return IKEKeys(km[:d], km[d:ai], km[ai:ar], km[ar:ei], km[ei:er], km[er:pi], km[pi:total])


# (PRF, ENCR, key bits, INTEG) -> the end offset of each IKE SA key in the prf+ output
_IKE_LAYOUTS: dict[tuple[int, int, int | None, int | None], tuple[int, ...]] = {}


def _ike_layout(p: PRF, encr_id: int, encr_key_bits: int | None, integ_id: int | None
                ) -> tuple[int, ...]:
    dk = p.key_size
    ak = integ_key_bytes(integ_id)
    ek = encr_key_bytes(encr_id, encr_key_bits)
    ends = []
    o = 0
    for n in (dk, ak, ak, ek, ek, dk, dk):
        o += n
        ends.append(o)
    return tuple(ends)


def derive_child_keys(
    prf_id: int,
    sk_d: bytes,
    ni: bytes,
    nr: bytes,
    encr_id: int,
    encr_key_bits: int | None,
    integ_id: int | None,
    shared: bytes | None = None,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir (new) | Ni | Nr) with a KE (§2.17).

    With additional key exchanges (RFC 9370 §2.2.4) pass ``shared`` =
    g^ir (new) | SK(1) | ... | SK(n).

    Keys for initiator→responder come first; within a direction the
    encryption key precedes the integrity key.  AH (``encr_id`` 0) takes only
    the two integrity keys.
    """
    p = get_prf(prf_id)
    ek = encr_key_bytes(encr_id, encr_key_bits) if encr_id else 0
    ak = integ_key_bytes(integ_id)
    seed = ni + nr if shared is None else shared + ni + nr
    km = p.plus(sk_d, seed, 2 * (ek + ak))
    return ChildKeys(km[:ek], km[ek : ek + ak], km[ek + ak : 2 * ek + ak], km[2 * ek + ak :])


def apply_ppk(prf_id: int, ppk: bytes, ike: IKEKeys) -> IKEKeys:
    """Mix a Postquantum Preshared Key into SK_d, SK_pi and SK_pr (RFC 8784 §3).

    SK_d' = prf+(PPK, SK_d), SK_pi' = prf+(PPK, SK_pi), SK_pr' = prf+(PPK, SK_pr),
    each as long as the key it replaces; SK_a*/SK_e* are unchanged.
    """
    p = get_prf(prf_id)
    return IKEKeys(
        p.plus(ppk, ike.sk_d, len(ike.sk_d)),
        ike.sk_ai,
        ike.sk_ar,
        ike.sk_ei,
        ike.sk_er,
        p.plus(ppk, ike.sk_pi, len(ike.sk_pi)),
        p.plus(ppk, ike.sk_pr, len(ike.sk_pr)),
    )
