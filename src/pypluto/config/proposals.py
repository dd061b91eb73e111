"""``ike=`` / ``esp=`` / ``ah=`` proposal strings in Libreswan's grammar.

    proposals := proposal { "," proposal }
    proposal  := algs { "-" algs } { ";" ke-or-addke }
    algs      := ALG { "+" ALG }
    ke-or-addke := algs | "addke" N "=" algs

For ``ike=``: ``ENCR[-PRF][-KE]`` or ``ENCR-INTEG-PRF[-KE]``; an omitted PRF takes
Libreswan's default PRFs, an omitted INTEG (non-AEAD) is derived from each PRF, an
omitted KE takes the default groups.  For ``esp=``: ``ENCR[-INTEG][-KE]``; an
omitted INTEG (non-AEAD) takes the default integrity algorithms; a KE is the PFS
group (none = use the IKE SA's group).  For ``ah=``: ``INTEG[-KE]``.

Key lengths are written as a suffix (``aes256``, ``aes_gcm_16_256``,
``aes_gcm256``) or as a separate numeric token (``aes-128-sha1``).  An encryption
algorithm with variable key size and no length expands to 256 then 128 in ``ike=``
and to 128 then 256 in ``esp=`` (what Libreswan 5.2 proposes: ikev2_proposals.c orders
IKE high to low, ESP low to high).  The transform IDs are RFC 7296 §3.3.2 / RFC 9370.
"""

from __future__ import annotations

import functools
import re

from pypluto.config.model import AlgSpec, ProposalSpec
from pypluto.crypto import registry
from pypluto.iana import TransformType


class ProposalError(ValueError):
    """An ike=/esp=/ah= string that does not parse."""


# Libreswan names the registry does not carry (integ "_96"/"_128" forms, hmac_ prefixes).
_EXTRA: dict[tuple[int, str], str] = {
    (TransformType.INTEG, "sha1_96"): "sha1",
    (TransformType.INTEG, "hmac_sha1"): "sha1",
    (TransformType.INTEG, "hmac_md5"): "md5",
    (TransformType.INTEG, "md5_96"): "md5",
    (TransformType.INTEG, "hmac_md5_96"): "md5",
    (TransformType.INTEG, "hmac_sha1_96"): "sha1",
    (TransformType.INTEG, "sha2_256_128"): "sha2_256",
    (TransformType.INTEG, "hmac_sha2_256"): "sha2_256",
    (TransformType.INTEG, "hmac_sha2_256_128"): "sha2_256",
    (TransformType.INTEG, "sha2_384_192"): "sha2_384",
    (TransformType.INTEG, "hmac_sha2_384"): "sha2_384",
    (TransformType.INTEG, "sha2_512_256"): "sha2_512",
    (TransformType.INTEG, "hmac_sha2_512"): "sha2_512",
    (TransformType.INTEG, "aes_xcbc_96"): "aes_xcbc",
    (TransformType.INTEG, "aes128_xcbc_96"): "aes_xcbc",
    (TransformType.INTEG, "aes_cmac_96"): "aes_cmac",
    (TransformType.INTEG, "null"): "none",
    (TransformType.KE, "null"): "none",
    (TransformType.KE, "dh0"): "none",
    (TransformType.KE, "ml_kem768"): "mlkem768",
    (TransformType.KE, "ml_kem512"): "mlkem512",
    (TransformType.KE, "ml_kem1024"): "mlkem1024",
    (TransformType.ENCR, "aes_gcm_c"): "aes_gcm_16",
    (TransformType.ENCR, "aes_ccm_c"): "aes_ccm_16",
    (TransformType.ENCR, "3des_cbc"): "3des",
    (TransformType.ENCR, "aes_cbc"): "aes",
    (TransformType.ENCR, "aesgcm16"): "aes_gcm_16",
    (TransformType.ENCR, "aesgcm12"): "aes_gcm_12",
    (TransformType.ENCR, "aesgcm8"): "aes_gcm_8",
}

_DEFAULT_PRFS = (int(registry.Prf.HMAC_SHA2_512), int(registry.Prf.HMAC_SHA2_256))
_DEFAULT_INTEG = (
    int(registry.Integ.HMAC_SHA2_512_256),
    int(registry.Integ.HMAC_SHA2_256_128),
)
DEFAULT_KE = tuple(
    int(k)
    for k in (
        registry.KE.ECP256,
        registry.KE.ECP384,
        registry.KE.ECP521,
        registry.KE.CURVE25519,
        registry.KE.MODP4096,
        registry.KE.MODP3072,
        registry.KE.MODP2048,
        registry.KE.MODP8192,
    )
)
# PRF id -> the integrity algorithm of the same hash (Libreswan derives INTEG from PRF).
_PRF_TO_INTEG = {
    int(registry.Prf.HMAC_MD5): int(registry.Integ.HMAC_MD5_96),
    int(registry.Prf.HMAC_SHA1): int(registry.Integ.HMAC_SHA1_96),
    int(registry.Prf.AES128_XCBC): int(registry.Integ.AES_XCBC_96),
    int(registry.Prf.HMAC_SHA2_256): int(registry.Integ.HMAC_SHA2_256_128),
    int(registry.Prf.HMAC_SHA2_384): int(registry.Integ.HMAC_SHA2_384_192),
    int(registry.Prf.HMAC_SHA2_512): int(registry.Integ.HMAC_SHA2_512_256),
    int(registry.Prf.AES128_CMAC): int(registry.Integ.AES_CMAC_96),
}
_SUFFIX_BITS = re.compile(r"^(.*?)[_-]?(\d+)$")


def _lookup(ttype: int, name: str) -> registry.Algorithm | None:
    name = name.lower()
    alg = registry.lookup(ttype, name)
    if alg is None and (int(ttype), name) in _EXTRA:
        alg = registry.lookup(ttype, _EXTRA[(int(ttype), name)])
    return alg


def _encr(name: str, proto: str) -> list[AlgSpec]:
    """One ENCR token with an optional key-length suffix."""
    alg = _lookup(TransformType.ENCR, name)
    bits: int | None = None
    if alg is None:
        m = _SUFFIX_BITS.match(name)
        if m and m.group(1):
            alg = _lookup(TransformType.ENCR, m.group(1))
            bits = int(m.group(2))
    if alg is None:
        raise ProposalError(f"{proto} encryption algorithm '{name}' is not recognized")
    if proto == "IKE" and not alg.ike_ok:
        raise ProposalError(f"IKE encryption algorithm '{name}' is not supported")
    return _with_bits(alg, bits, name, proto)


def _with_bits(alg: registry.Algorithm, bits: int | None, name: str, proto: str = "IKE"
               ) -> list[AlgSpec]:
    if bits is not None:
        if alg.key_bits:
            if bits not in alg.key_bits:
                raise ProposalError(
                    f"wrong encryption key length {bits} for '{name}' "
                    f"(valid: {', '.join(map(str, alg.key_bits))})"
                )
            return [AlgSpec(int(alg.id), bits)]
        fixed = (alg.key_size or 0) * 8
        if fixed and bits != fixed:
            raise ProposalError(f"'{name}' does not take a key length of {bits}")
        return [AlgSpec(int(alg.id), None)]
    if alg.key_bits:
        big = max(alg.key_bits)
        default = alg.default_key_bits or min(alg.key_bits)
        if default == big:
            return [AlgSpec(int(alg.id), big)]
        pair = [AlgSpec(int(alg.id), big), AlgSpec(int(alg.id), default)]
        return pair if proto == "IKE" else pair[::-1]  # ESP: the smaller key first
    return [AlgSpec(int(alg.id), None)]


# Key exchange groups that Libreswan 5.2 does not build (USE_DH2, USE_DH22..24 are off
# by default; MODP768 is gone): an ike=/esp=/ah= naming one does not load there, and
# does not here (the crypto layer keeps them for tests and for refusing peers).
_NOT_IN_LIBRESWAN = frozenset(int(k) for k in (
    registry.KE.MODP768, registry.KE.MODP1024, registry.KE.MODP1024_S160,
    registry.KE.MODP2048_S224, registry.KE.MODP2048_S256))


def _ids(ttype: int, token: str, what: str, proto: str) -> tuple[int, ...]:
    out: list[int] = []
    for name in token.split("+"):
        name = name.strip()
        if not name:
            raise ProposalError(f"{proto} proposal has an empty {what} algorithm")
        alg = _lookup(ttype, name)
        if alg is None:
            raise ProposalError(f"{proto} {what} algorithm '{name}' is not recognized")
        if ttype == TransformType.KE and int(alg.id) in _NOT_IN_LIBRESWAN:
            raise ProposalError(f"{proto} {what} algorithm '{name}' is not supported (a weak "
                                "group that Libreswan 5.2 does not build)")
        if int(alg.id) not in out:
            out.append(int(alg.id))
    return tuple(out)


def _is(ttype: int, token: str) -> bool:
    return all(_lookup(ttype, n.strip()) is not None for n in token.split("+") if n.strip())


def _parse_one(text: str, proto: str, dh_out: list[int | None] | None = None) -> ProposalSpec:
    parts = [p.strip() for p in text.split(";")]
    head = parts[0]
    if not head:
        raise ProposalError(f"{proto} proposal '{text}' is empty")
    ke: tuple[int, ...] = ()
    addke: dict[int, tuple[int, ...]] = {}
    for extra in parts[1:]:
        if not extra:
            raise ProposalError(f"{proto} proposal '{text}' has an empty ';' field")
        m = re.match(r"^addke(\d+)\s*=\s*(.*)$", extra, re.IGNORECASE)
        if m:
            n = int(m.group(1))
            if not 1 <= n <= 7:
                raise ProposalError(f"{proto} proposal: addke{n} is out of range 1..7")
            addke[n] = _ids(TransformType.KE, m.group(2), "additional key exchange", proto)
            continue
        if ke:
            raise ProposalError(f"{proto} proposal '{text}' has more than one KE field")
        ke = _ids(TransformType.KE, extra, "key exchange", proto)
    tokens = [t.strip() for t in head.split("-")]
    if any(not t for t in tokens):
        raise ProposalError(f"{proto} proposal '{text}' has an empty '-' field")
    tokens = _strongswan_addke(tokens, addke, proto)
    encr: list[AlgSpec] = []
    integ: tuple[int, ...] = ()
    prf: tuple[int, ...] = ()
    if proto != "AH":
        first = tokens.pop(0)
        for name in first.split("+"):
            encr.extend(_encr(name.strip(), proto))
        if tokens and tokens[0].isdigit():  # "aes-128-sha1": separate key length
            bits = int(tokens.pop(0))
            rebuilt: list[AlgSpec] = []
            for spec in encr:
                alg = registry.get(TransformType.ENCR, spec.id)
                assert alg is not None
                for s in _with_bits(alg, bits, first, proto):
                    if s not in rebuilt:
                        rebuilt.append(s)
            encr = rebuilt
        dedup: list[AlgSpec] = []
        for s in encr:
            if s not in dedup:
                dedup.append(s)
        encr = dedup
    # trailing KE in the '-' form
    if tokens and not ke and _is(TransformType.KE, tokens[-1]) and (
        proto == "AH" or len(tokens) > 1 or not _is(TransformType.INTEG, tokens[-1])
    ):
        if not (proto == "IKE" and len(tokens) == 1 and _is(TransformType.PRF, tokens[-1])):
            ke = _ids(TransformType.KE, tokens.pop(), "key exchange", proto)
    if dh_out is not None:  # the DH field as written: None unset, 0 'none', else a group
        dh_out.append(ke[0] if ke else None)
    aead = bool(encr) and all(
        (registry.get(TransformType.ENCR, s.id) or registry.ALGORITHMS[0]).aead for s in encr
    )
    if bool(encr) and aead != any(
        (registry.get(TransformType.ENCR, s.id) or registry.ALGORITHMS[0]).aead for s in encr
    ):
        raise ProposalError(f"{proto} proposal '{text}' mixes AEAD and non-AEAD encryption")
    if proto == "IKE":
        if len(tokens) > 2:
            raise ProposalError(f"IKE proposal '{text}' has too many algorithms")
        if len(tokens) == 2:
            integ = _ids(TransformType.INTEG, tokens[0], "integrity", proto)
            prf = _ids(TransformType.PRF, tokens[1], "PRF", proto)
        elif len(tokens) == 1:
            prf = _ids(TransformType.PRF, tokens[0], "PRF", proto)
        if not prf:
            prf = _DEFAULT_PRFS
        if aead:
            if integ and integ != (0,):
                raise ProposalError(
                    f"IKE proposal '{text}': AEAD encryption cannot have an integrity algorithm"
                )
            integ = ()
        elif not integ:
            integ = tuple(_PRF_TO_INTEG[p] for p in prf if p in _PRF_TO_INTEG)
        if integ == (0,) and not aead:
            raise ProposalError(f"IKE proposal '{text}': non-AEAD encryption needs integrity")
        if not ke:
            ke = DEFAULT_KE
        if 0 in ke:
            raise ProposalError("IKE Key Exchange algorithm 'NONE' not permitted")
    else:
        if len(tokens) > 1:
            raise ProposalError(f"{proto} proposal '{text}' has too many algorithms")
        if tokens:
            integ = _ids(TransformType.INTEG, tokens[0], "integrity", proto)
        if proto == "AH":
            if not integ:
                raise ProposalError(f"AH proposal '{text}' needs an integrity algorithm")
            if integ == (0,):
                raise ProposalError("AH integrity algorithm 'none' not permitted")
        elif aead:
            if integ and integ != (0,):
                raise ProposalError(
                    f"ESP proposal '{text}': AEAD encryption cannot have an integrity algorithm"
                )
            integ = ()
        elif not integ:
            integ = _DEFAULT_INTEG
        elif 0 in integ:
            raise ProposalError(f"{proto} proposal '{text}': non-AEAD encryption requires an "
                                "integrity algorithm other than 'none' (RFC 8221 §2)")
        if ke == (0,):
            ke = ()
    addke_t: tuple[tuple[int, ...], ...] = ()
    if addke:
        top = max(addke)
        addke_t = tuple(addke.get(i, (0,)) for i in range(1, top + 1))
    return ProposalSpec(encr=tuple(encr), prf=prf if proto == "IKE" else (), integ=integ,
                        ke=ke, addke=addke_t)


def _strongswan_addke(tokens: list[str], addke: dict[int, tuple[int, ...]], proto: str
                      ) -> list[str]:
    """strongSwan's ``keN_ALG`` tokens (``x25519-ke1_mlkem768``) as ``addkeN=ALG`` (RFC 9370).

    Repeated tokens of one N are alternatives, in order (``ke1_mlkem768-ke1_none``).
    """
    rest: list[str] = []
    for tok in tokens:
        m = re.match(r"^ke(\d+)_(.+)$", tok, re.IGNORECASE)
        if m is None:
            rest.append(tok)
            continue
        n = int(m.group(1))
        if not 1 <= n <= 7:
            raise ProposalError(f"{proto} proposal: ke{n} is out of range 1..7")
        ids = _ids(TransformType.KE, m.group(2), "additional key exchange", proto)
        addke[n] = addke.get(n, ()) + tuple(i for i in ids if i not in addke.get(n, ()))
    return rest


def parse_proposals(text: str, proto: str) -> list[ProposalSpec]:
    """Parse an ``ike=`` (proto "IKE"), ``esp=`` ("ESP") or ``ah=`` ("AH") value."""
    return list(_parse_cached(text, proto.upper()))


@functools.lru_cache(maxsize=1024)
def _parse_cached(text: str, proto: str) -> tuple[ProposalSpec, ...]:
    if proto not in ("IKE", "ESP", "AH"):
        raise ValueError(f"unknown protocol {proto!r}")
    value = text.strip()
    if value.endswith("!"):  # strongSwan's strict flag; Libreswan ignores it
        value = value[:-1]
    if not value:
        raise ProposalError(f"{proto} proposal is empty")
    out: list[ProposalSpec] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            raise ProposalError(f"{proto} proposal list '{text}' has an empty element")
        out.append(_parse_one(item, proto))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def proposal_dh(text: str, proto: str) -> tuple[int | None, ...]:
    """The DH field of each proposal of a valid ``esp=``/``ah=`` value, as written: None
    when the proposal names no DH, 0 for ``none``, else its first group.  Parsing
    folds ``none`` into "no KE"; Libreswan's PFS-vs-DH check at ``ipsec add``
    (``proposals_pfs_vs_dh_check``, lib/libswan/proposals.c) tells the two apart."""
    value = text.strip().removesuffix("!")
    out: list[int | None] = []
    for item in value.split(","):
        _parse_one(item.strip(), proto.upper(), out)
    return tuple(out)


_LIBRESWAN_DH = {0: "NONE", 1: "MODP768", 2: "MODP1024", 5: "MODP1536", 14: "MODP2048",
                 15: "MODP3072", 16: "MODP4096", 17: "MODP6144", 18: "MODP8192"}


def dh_name(group: int) -> str:
    """A KE group as Libreswan's messages name it (``DH19``, ``MODP2048``, ``NONE``)."""
    return _LIBRESWAN_DH.get(group, f"DH{group}")


def format_proposal(p: ProposalSpec) -> str:
    """Libreswan-style display: ``AES_GCM_16_256-HMAC_SHA2_512-DH19+DH20``."""
    parts: list[str] = []
    if p.encr:
        parts.append("+".join(registry.transform_name(1, a.id, a.key_bits) for a in p.encr))
    if p.prf:
        parts.append("+".join(registry.transform_name(2, i) for i in p.prf))
    if p.integ:
        parts.append("+".join(registry.transform_name(3, i) for i in p.integ))
    if p.ke:
        parts.append("+".join(registry.transform_name(4, i) for i in p.ke))
    text = "-".join(parts)
    for n, alts in enumerate(p.addke, 1):
        text += f";ADDKE{n}=" + "+".join(registry.transform_name(4, i) for i in alts)
    return text
