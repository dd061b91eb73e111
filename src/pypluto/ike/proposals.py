"""SA payloads <-> ``ProposalSpec``, and the choice of a proposal (RFC 7296 §2.7, §3.3).

The initiator turns its ``ike=`` / ``esp=`` list (or Libreswan's defaults) into
SA payload proposals; the responder picks by its own preference, as Libreswan 5.2
and strongSwan do (RFC 7296 §2.7 leaves the order to the responder): its earliest
proposal that one of the peer's accepts (the peer's earliest such proposal), and in
it its earliest transform of each type, and answers with exactly that.  The one
exception is the key exchange group: a choice that keeps the group of the peer's KE
payload comes first, so that an acceptable KE costs no INVALID_KE_PAYLOAD round trip
(the outcome Libreswan's ikev2-invalid-ke-09-preference-ecp describes).

A Child SA is ESP or, with ``phase2=ah``, AH (RFC 4302): an AH proposal carries
INTEG and ESN (optionally KE) and never ENCR (RFC 7296 §3.3.3).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

from pypluto.config.model import AlgSpec, ProposalSpec
from pypluto.crypto import registry as reg
from pypluto.crypto.registry import Encr, Integ, Prf, TransformType
from pypluto.iana import ProtocolID
from pypluto.ike import addke as _addke

KE = reg.KE

# Libreswan's IKEv2 defaults (ike=, esp= unset): AEAD first, then CBC+HMAC.
_DEF_GROUPS = (KE.CURVE25519, KE.ECP256, KE.ECP384, KE.ECP521, KE.MODP2048, KE.MODP3072,
               KE.MODP4096, KE.MODP8192)
DEFAULT_IKE: tuple[ProposalSpec, ...] = (
    ProposalSpec(encr=(AlgSpec(Encr.AES_GCM_16, 256), AlgSpec(Encr.AES_GCM_16, 128)),
                 prf=(Prf.HMAC_SHA2_512, Prf.HMAC_SHA2_256), integ=(), ke=_DEF_GROUPS),
    ProposalSpec(encr=(AlgSpec(Encr.AES_CBC, 256), AlgSpec(Encr.AES_CBC, 128)),
                 prf=(Prf.HMAC_SHA2_512, Prf.HMAC_SHA2_256),
                 integ=(Integ.HMAC_SHA2_512_256, Integ.HMAC_SHA2_256_128), ke=_DEF_GROUPS),
)
DEFAULT_ESP: tuple[ProposalSpec, ...] = (
    ProposalSpec(encr=(AlgSpec(Encr.AES_GCM_16, 256), AlgSpec(Encr.AES_GCM_16, 128))),
    ProposalSpec(encr=(AlgSpec(Encr.AES_CBC, 256), AlgSpec(Encr.AES_CBC, 128)),
                 integ=(Integ.HMAC_SHA2_512_256, Integ.HMAC_SHA2_256_128)),
)
# Libreswan 5.2's ``ah=`` default (``algparse -v2 ah``): HMAC_SHA2_512_256, HMAC_SHA2_256_128
DEFAULT_AH: tuple[ProposalSpec, ...] = (
    ProposalSpec(encr=(), integ=(Integ.HMAC_SHA2_512_256,)),
    ProposalSpec(encr=(), integ=(Integ.HMAC_SHA2_256_128,)),
)


@dataclass(slots=True)
class Chosen:
    """The one transform of each type that was agreed (a single-proposal SA payload)."""

    encr: int = 0
    encr_bits: int | None = None
    prf: int = 0
    integ: int = 0
    ke: int = 0
    esn: bool = False
    spi: bytes = b""  # the peer's SPI from the chosen proposal
    number: int = 1
    addke: tuple[int, ...] = ()  # RFC 9370: the method of ADDKE1.. (0 = NONE)

    @property
    def aead(self) -> bool:
        alg = reg.get(TransformType.ENCR, self.encr)
        return bool(alg and alg.aead)

    def encr_name(self) -> str:
        if not self.encr:
            return ""  # AH: no encryption
        return reg.transform_name(TransformType.ENCR, self.encr, self.encr_bits)

    def integ_name(self) -> str:
        return "" if not self.integ else reg.transform_name(TransformType.INTEG, self.integ)

    def prf_name(self) -> str:
        return reg.transform_name(TransformType.PRF, self.prf) if self.prf else ""

    def ke_name(self) -> str:
        return (reg.transform_name(TransformType.KE, self.ke) if self.ke else "") + \
            _addke.names(self.addke)


def _encr_bits(spec: AlgSpec) -> Sequence[int | None]:
    alg = reg.get(TransformType.ENCR, spec.id)
    if spec.key_bits:
        return [spec.key_bits]
    if alg is not None and alg.key_bits:
        # a bare "aes" stands for every strength, strongest first
        return [b for b in sorted(alg.key_bits, reverse=True) if b != 192]
    return [None]


def _esn_ids(spec: ProposalSpec, esn: str) -> tuple[int, ...]:
    if spec.esn:
        return spec.esn
    return {"yes": (1,), "no": (0,)}.get(esn, (1, 0))


try:  # Libreswan's defaults as the config layer knows them (single source of truth)
    from pypluto.config import defaults as _cfg_defaults

    DEFAULT_IKE = tuple(_cfg_defaults.DEFAULT_IKE)
    DEFAULT_ESP = tuple(_cfg_defaults.DEFAULT_ESP)
    DEFAULT_AH = tuple(_cfg_defaults.DEFAULT_AH)
except Exception:  # pragma: no cover - keep the built-in table
    pass


def ike_specs(configured: list[ProposalSpec] | None) -> tuple[ProposalSpec, ...]:
    return tuple(configured) if configured else DEFAULT_IKE


def esp_specs(configured: list[ProposalSpec] | None) -> tuple[ProposalSpec, ...]:
    return tuple(configured) if configured else DEFAULT_ESP


def ah_specs(configured: list[ProposalSpec] | None) -> tuple[ProposalSpec, ...]:
    return tuple(configured) if configured else DEFAULT_AH


def child_protocol(phase2: str) -> ProtocolID:
    """The Child SA's IPsec protocol: AH for ``phase2=ah``, else ESP (RFC 7296 §3.3.1)."""
    return ProtocolID.AH if phase2 == "ah" else ProtocolID.ESP


def child_specs(esp: list[ProposalSpec] | None, ah: list[ProposalSpec] | None, phase2: str
                ) -> tuple[tuple[ProposalSpec, ...], ProtocolID]:
    """(the Child SA proposals a conn offers and accepts, their protocol)."""
    if phase2 == "ah":
        return ah_specs(ah), ProtocolID.AH
    return esp_specs(esp), ProtocolID.ESP


def first_group(specs: tuple[ProposalSpec, ...]) -> int:
    """The group of the initiator's KE payload: the first one proposed."""
    for s in specs:
        if s.ke:
            return int(s.ke[0])
    return 0


def build_proposals(
    specs: tuple[ProposalSpec, ...],
    protocol: int,
    spi: bytes,
    *,
    ike: bool,
    esn: str = "either",
    ke_override: int | None = None,
    pfs_group: int | None = None,
    ke_none_too: bool = False,
) -> list[tuple[int, int, bytes, list[tuple[int, int, int | None]]]]:
    """Proposals as (number, protocol, spi, [(type, id, key_bits)]).

    ``ke_override`` moves that group to the front (after INVALID_KE_PAYLOAD, §1.2);
    ``pfs_group`` adds a KE transform to ESP proposals (CREATE_CHILD_SA with PFS);
    ``ke_none_too`` (with it, ``ms-dh-downgrade=yes``) offers every proposal a second
    time, after all of them, with KE NONE in place of the groups (§3.3.2: D-H ID 0).
    """
    out = []
    for num, spec in enumerate(specs, 1):
        ts: list[tuple[int, int, int | None]] = []
        for e in spec.encr:
            for bits in _encr_bits(e):
                ts.append((TransformType.ENCR, int(e.id), bits))
        if ike:
            for p in spec.prf:
                ts.append((TransformType.PRF, int(p), None))
        # all([]) is True: a proposal without ENCR (AH) is not AEAD and keeps its INTEG
        aead = bool(spec.encr) and all((reg.get(TransformType.ENCR, e.id) or _NOALG).aead for e in spec.encr)
        if not aead:
            for i in spec.integ:
                ts.append((TransformType.INTEG, int(i), None))
        if ike:
            groups = list(spec.ke)
            if ke_override is not None and ke_override in groups:
                groups.remove(ke_override)
                groups.insert(0, ke_override)
            for g in groups:
                ts.append((TransformType.KE, int(g), None))
            ts += _addke.transforms(spec)  # RFC 9370 ADDKE1..7
        else:
            if pfs_group:
                groups = [g for g in spec.ke] or [pfs_group]
                if pfs_group in groups:
                    groups.remove(pfs_group)
                groups.insert(0, pfs_group)
                for g in groups:
                    ts.append((TransformType.KE, int(g), None))
                ts += _addke.transforms(spec)  # RFC 9370: IKE_FOLLOWUP_KE after the answer
            for e_id in _esn_ids(spec, esn):
                ts.append((TransformType.ESN, int(e_id), None))
        out.append((num, protocol, spi, ts))
    if ke_none_too and pfs_group and not ike:
        base = len(out)
        for num, proto, spi_, ts in list(out):
            plain = [t for t in ts if t[0] != TransformType.KE and not _addke.is_addke(t[0])]
            plain.append((TransformType.KE, 0, None))
            out.append((base + num, proto, spi_, plain))
    return out


class _NoAlg:
    aead = False


_NOALG = _NoAlg()


@functools.lru_cache(maxsize=256)
def _accept_lists(spec: ProposalSpec, ike: bool, esn: str, pfs_group: int | None
                  ) -> tuple[list[tuple[int, int | None]], dict[int, list[int]]]:
    """(ENCR (id, key bits) pairs, the accepted IDs of every other transform type)."""
    encr = [(int(e.id), b) for e in spec.encr for b in _encr_bits(e)]
    acc: dict[int, list[int]] = {}
    if ike:
        acc[TransformType.PRF] = [int(p) for p in spec.prf]
        acc[TransformType.KE] = [int(g) for g in spec.ke]
    else:
        acc[TransformType.ESN] = list(_esn_ids(spec, esn))
        if pfs_group is not None:
            acc[TransformType.KE] = [int(g) for g in spec.ke] or [pfs_group]
    acc[TransformType.INTEG] = [int(i) for i in spec.integ]
    return encr, acc


# choose() is a pure function of the peer's proposals (SPIs aside) and our specs: its
# answers for recent inputs are kept (issue 18), as (the specs they were for, the index
# of the chosen peer proposal and the Chosen without SPI and number) or None.  The key
# holds the specs by identity (a tuple of frozen specs hashes slowly); a hit is used only
# when the stored specs are equal (identical, in practice) to the caller's.
_CHOICES_MAX = 1024
_Peer = list[tuple[int, int, bytes, list[tuple[int, int, int | None]]]]
_CHOICES: dict[tuple[object, ...],
               tuple[tuple[ProposalSpec, ...], tuple[int, Chosen] | None]] = {}


def choose(
    peer: _Peer,
    specs: tuple[ProposalSpec, ...],
    protocol: int,
    *,
    ike: bool,
    esn: str = "either",
    pfs_group: int | None = None,
    prefer_ke: int | None = None,
) -> Chosen | None:
    """Pick by our preference among the peer's proposals (RFC 7296 §2.7, §3.3.6).

    ``pfs_group`` (CREATE_CHILD_SA): None means the request carries no KE payload, so a
    KE transform must be absent or NONE; otherwise it is the IKE SA's group, used when
    ``esp=`` names none.  ``prefer_ke``: the group of the peer's KE payload; a choice
    with that group wins over our order, and without one the caller answers
    INVALID_KE_PAYLOAD with the group chosen.  Unknown transform types or IDs never match.
    """
    key = (tuple([(num, proto, len(spi), tuple(ts)) for num, proto, spi, ts in peer]),
           tuple([id(sp) for sp in specs]), protocol, ike, esn, pfs_group, prefer_ke)
    hit = _CHOICES.get(key)
    if hit is None or hit[0] != specs:
        hit = (specs, _choose(peer, specs, protocol, ike=ike, esn=esn, pfs_group=pfs_group,
                              prefer_ke=prefer_ke))
        if len(_CHOICES) >= _CHOICES_MAX:
            _CHOICES.pop(next(iter(_CHOICES)))  # oldest first: a bounded FIFO
        _CHOICES[key] = hit
    found = hit[1]
    if found is None:
        return None
    i, t = found
    num, _, spi, _ = peer[i]
    return Chosen(t.encr, t.encr_bits, t.prf, t.integ, t.ke, t.esn, spi, num, t.addke)


def _choose(peer: _Peer, specs: tuple[ProposalSpec, ...], protocol: int, *, ike: bool,
            esn: str, pfs_group: int | None, prefer_ke: int | None
            ) -> tuple[int, Chosen] | None:
    """``choose``, computed: (index of the peer proposal, Chosen without SPI and number).

    Our proposals outside, the peer's inside: the first pair that matches is our
    earliest acceptable proposal, and the peer's earliest proposal for it (Libreswan's
    ikev2_process_proposals picks the same pair).  With ``prefer_ke`` a first pass
    takes only that KE group."""
    parsed: list[tuple[int, dict[int, list[tuple[int, int | None]]]]] = []
    for i, (_num, proto, _spi, transforms) in enumerate(peer):
        if proto != protocol:
            continue
        by_type: dict[int, list[tuple[int, int | None]]] = {}
        unknown = False
        for ttype, tid, bits in transforms:
            if ttype < 1 or ttype > _addke.ADDKE7:
                unknown = True  # beyond RFC 9370's ADDKE7: not supported
                break
            by_type.setdefault(ttype, []).append((tid, bits))
        if not unknown:
            parsed.append((i, by_type))
    ah = protocol == ProtocolID.AH
    for want_ke in ((prefer_ke, None) if prefer_ke is not None else (None,)):
        for spec in specs:
            for i, by_type in parsed:
                c = _match(by_type, spec, ike, esn, pfs_group, ah, want_ke)
                if c is not None:
                    return i, c
    return None


def _ours_first(ours: Sequence[int], peer: list[tuple[int, int | None]], kind: int,
                want: int | None = None) -> int | None:
    """Our earliest transform ID of this type that the peer offers and we implement
    (only ``want`` when it is given)."""
    offered = {tid for tid, _ in peer}
    return next((t for t in ours if t in offered and (want is None or t == want)
                 and reg.get(kind, t)), None)


def _match(by_type: dict[int, list[tuple[int, int | None]]], spec: ProposalSpec, ike: bool,
           esn: str, pfs_group: int | None, ah: bool = False, want_ke: int | None = None
           ) -> Chosen | None:
    """One peer proposal against one of ours: our earliest transform of each type."""
    acc_encr, acc = _accept_lists(spec, ike, esn, pfs_group)
    c = Chosen()
    if ah:
        return _match_ah(by_type, spec, acc, c, pfs_group, want_ke)
    # ENCR: mandatory
    offered = set()
    for tid, bits in by_type.get(TransformType.ENCR, []):
        alg = reg.get(TransformType.ENCR, tid)
        if alg is None or (ike and not alg.ike_ok):
            continue
        if alg.key_bits and bits is None:
            continue  # RFC 7296 §3.3.5: AES needs the Key Length attribute
        if not alg.key_bits and bits is not None:
            continue
        offered.add((tid, bits))
    # (an ID without key lengths is (id, None) on both sides)
    pick = next(((aid, abits) for aid, abits in acc_encr if (aid, abits) in offered), None)
    if pick is None:
        return None
    c.encr, c.encr_bits = pick
    aead = c.aead
    # INTEG
    integs = by_type.get(TransformType.INTEG, [])
    if aead:
        if any(tid != Integ.NONE for tid, _ in integs) and not any(
                tid == Integ.NONE for tid, _ in integs):
            return None
        c.integ = 0
    else:
        got = _ours_first([i for i in acc[TransformType.INTEG] if i != Integ.NONE], integs,
                          TransformType.INTEG)
        if got is None:
            return None
        c.integ = got
    if ike:
        got = _ours_first(acc[TransformType.PRF], by_type.get(TransformType.PRF, []),
                          TransformType.PRF)
        if got is None:
            return None
        c.prf = got
        got = _ours_first([g for g in acc[TransformType.KE] if g != 0],
                          by_type.get(TransformType.KE, []), TransformType.KE, want_ke)
        if got is None:
            return None  # CVE-2016-5391: no D-H transform → NO_PROPOSAL_CHOSEN
        c.ke = got
        if TransformType.ESN in by_type:
            return None
        chosen_addke = _addke.match(by_type, spec, (c.ke,))  # RFC 9370 §2.2.1
        if chosen_addke is None:
            return None
        c.addke = chosen_addke
    else:
        if pfs_group is None:
            c.ke = 0  # IKE_AUTH (§1.2) or no KE payload: KE transforms are ignored
        else:
            got = _child_ke(acc, by_type, want_ke)
            if got is None:
                return None
            c.ke = got
            chosen_addke = _addke.match(by_type, spec, (c.ke,))  # RFC 9370 §2.2.3
            if chosen_addke is None:
                return None
            c.addke = chosen_addke
        got = _pick_esn(by_type, acc)
        if got is None:
            return None
        c.esn = bool(got)
    return c


def _child_ke(acc: dict[int, list[int]], by_type: dict[int, list[tuple[int, int | None]]],
              want_ke: int | None) -> int | None:
    """A Child SA's KE transform (CREATE_CHILD_SA with KE): our earliest group the
    peer offers (NONE included, for ``ms-dh-downgrade``'s proposals without KE)."""
    offered = {tid for tid, _ in by_type.get(TransformType.KE, [])}
    return next((g for g in acc[TransformType.KE] if g in offered
                 and (want_ke is None or g == want_ke)), None)


def _pick_esn(by_type: dict[int, list[tuple[int, int | None]]], acc: dict[int, list[int]]
              ) -> int | None:
    """The ESN transform we answer with: the first of ours (``esn=either`` lists yes
    first: "as a responder, if either is received, yes is picked", ipsec.conf(5)) that
    the peer offers; a proposal without ESN transforms means no ESN."""
    offered = {tid for tid, _ in by_type.get(TransformType.ESN, [(0, None)])}
    return next((tid for tid in acc[TransformType.ESN] if tid in offered), None)


def _match_ah(by_type: dict[int, list[tuple[int, int | None]]], spec: ProposalSpec,
              acc: dict[int, list[int]], c: Chosen, pfs_group: int | None,
              want_ke: int | None = None) -> Chosen | None:
    """An AH proposal (RFC 7296 §3.3.3): no ENCR, INTEG required (not NONE), ESN, KE optional."""
    if TransformType.ENCR in by_type or TransformType.PRF in by_type:
        return None
    got = _ours_first([i for i in acc[TransformType.INTEG] if i != Integ.NONE],
                      by_type.get(TransformType.INTEG, []), TransformType.INTEG)
    if got is None:
        return None
    c.integ = got
    if pfs_group is not None:
        got = _child_ke(acc, by_type, want_ke)
        if got is None:
            return None
        c.ke = got
        chosen_addke = _addke.match(by_type, spec, (c.ke,))  # RFC 9370 §2.2.3, as for ESP
        if chosen_addke is None:
            return None
        c.addke = chosen_addke
    got = _pick_esn(by_type, acc)
    if got is None:
        return None
    c.esn = bool(got)
    return c


def chosen_proposal(c: Chosen, protocol: int, spi: bytes, *, ike: bool
                    ) -> tuple[int, int, bytes, list[tuple[int, int, int | None]]]:
    """The responder's single-proposal answer (§3.3.6): number kept, one transform each.

    ``ike_init._sa_answer`` caches the IKE answer by the fields read here: a new
    field read here joins its key."""
    ts: list[tuple[int, int, int | None]] = []
    if c.encr:  # AH has no ENCR transform (§3.3.3)
        ts.append((TransformType.ENCR, c.encr, c.encr_bits))
    if ike:
        ts.append((TransformType.PRF, c.prf, None))
    if c.integ:
        ts.append((TransformType.INTEG, c.integ, None))
    if c.ke:
        ts.append((TransformType.KE, c.ke, None))
    ts += [(_addke.ADDKE1 + i, g, None) for i, g in enumerate(c.addke) if g]
    if not ike:
        ts.append((TransformType.ESN, int(c.esn), None))
    return (c.number, protocol, spi, ts)


def check_answer(
    answer: list[tuple[int, int, bytes, list[tuple[int, int, int | None]]]],
    sent: list[tuple[int, int, bytes, list[tuple[int, int, int | None]]]],
    *,
    ike: bool,
) -> Chosen | None:
    """The initiator's check that the reply is one of its proposals, reduced (§2.7)."""
    if len(answer) != 1:
        return None
    num, proto, spi, ts = answer[0]
    mine = next((p for p in sent if p[0] == num and p[1] == proto), None)
    if mine is None:
        return None
    offered = {(t, i, b) for t, i, b in mine[3]}
    seen: set[int] = set()
    c = Chosen(spi=spi, number=num)
    chosen_addke = _addke.check(ts, mine[3])  # RFC 9370 §2.2.1
    if chosen_addke is None:
        return None
    c.addke = chosen_addke
    for t, i, b in ts:
        if _addke.is_addke(t):
            continue
        if t in seen or (t, i, b) not in offered:
            if not (t == TransformType.INTEG and i == 0):
                return None
        seen.add(t)
        if t == TransformType.ENCR:
            c.encr, c.encr_bits = i, b
        elif t == TransformType.PRF:
            c.prf = i
        elif t == TransformType.INTEG:
            c.integ = i
        elif t == TransformType.KE:
            c.ke = i
        elif t == TransformType.ESN:
            c.esn = bool(i)
    for t, _i, _b in mine[3]:  # §2.7: one transform of each type we offered
        if t not in seen and not _addke.is_addke(t) and (t, 0, None) not in offered and \
                not (t == TransformType.INTEG and c.aead):
            return None
    if proto == ProtocolID.AH and not ike:
        return c if not c.encr and c.integ and not c.prf else None
    if not c.encr or (ike and not c.prf) or (not c.aead and not c.integ):
        return None
    if ike and not c.ke:
        return None
    return c
