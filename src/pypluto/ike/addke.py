"""Additional key exchanges (RFC 9370) and the IKE_INTERMEDIATE bookkeeping (RFC 9242).

Pure helpers, no I/O:

- proposals: the ADDKE1..7 transforms (types 6..12) of one ``ProposalSpec``
  (``transforms``), the responder's choice among the peer's (``match``) and the
  initiator's check of the answer (``check``) (RFC 9370 §2.2.1, §3.2);
- ``IntState``: one IKE SA's IKE_INTERMEDIATE progress and IntAuth chain;
- ``int_auth_chunk`` / ``fold``: IntAuth_*_A | IntAuth_*_P and the chain
  IntAuth_n = prf(SK_p(n), IntAuth_(n-1) | A | P) (RFC 9242 §3.3.2);
- ``auth_suffix``: IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, appended to both
  sides' signed octets (RFC 9242 §3.3.2);
- ``update_keys``: SKEYSEED(n) = prf(SK_d(n-1), SK(n) | Ni | Nr) and the new
  SK_* (RFC 9370 §2.2.2).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pypluto.config.model import ProposalSpec
from pypluto.crypto import keys
from pypluto.crypto import registry as reg
from pypluto.crypto.dh import KeyExchange
from pypluto.crypto.prf import get_prf
from pypluto.iana import PayloadType, TransformType
from pypluto.wire import message as wm
from pypluto.wire.payloads import Payload

ADDKE1 = int(TransformType.ADDKE1)
ADDKE7 = int(TransformType.ADDKE7)
SLOTS = ADDKE7 - ADDKE1 + 1
NONE = 0
_KE = int(TransformType.KE)
_FLAG_INITIATOR = 0x08
_FLAG_RESPONSE = 0x20
_IKE_HEADER = 28
_GENERIC = 4

TransformList = list[tuple[int, int, int | None]]


def is_addke(ttype: int) -> bool:
    return ADDKE1 <= ttype <= ADDKE7


def transforms(spec: ProposalSpec) -> TransformList:
    """The ADDKE transforms of one proposal, in slot order (RFC 9370 §3.2)."""
    out: TransformList = []
    for i, alts in enumerate(spec.addke[:SLOTS]):
        for tid in alts:
            out.append((ADDKE1 + i, int(tid), None))
    return out


def match(by_type: dict[int, list[tuple[int, int | None]]], spec: ProposalSpec,
          used: Sequence[int] = ()) -> tuple[int, ...] | None:
    """The responder's choice of each ADDKE type, or None when the proposal does not fit.

    RFC 9370 §2.2.1: a type the peer proposes only with real methods must be one we
    accept; a type we require (no NONE among our alternatives) must be proposed; NONE
    (0) means that exchange does not take place.  Trailing NONEs are dropped.  The
    choice never repeats a method, neither one of ``used`` (the KE transform chosen)
    nor an earlier type's: each type takes our first alternative not yet taken, with
    no backtracking (strongSwan's and Libreswan 5.4's choice,
    ikev2-intermediate-05-addke-duplicate).
    """
    taken = {g for g in used if g != NONE}
    out: list[int] = []
    for i in range(SLOTS):
        peer = [tid for tid, _ in by_type.get(ADDKE1 + i, [])]
        ours = tuple(spec.addke[i]) if i < len(spec.addke) else ()
        if not peer:
            if ours and NONE not in ours:
                return None
            out.append(NONE)
            continue
        if not ours:
            if NONE in peer:
                out.append(NONE)
                continue
            return None
        got = next((t for t in ours if t in peer and t not in taken and  # our order
                    (t == NONE or reg.get(TransformType.KE, t) is not None)), None)
        if got is None:
            return None
        if got != NONE:
            taken.add(got)
        out.append(got)
    while out and out[-1] == NONE:
        out.pop()
    return tuple(out)


def check(answer: Sequence[tuple[int, int, int | None]], offered: TransformList
          ) -> tuple[int, ...] | None:
    """The initiator's reading of the ADDKE types of the responder's single proposal.

    Every ADDKE type we offered without NONE must be answered; an absent type counts
    as NONE; a method chosen twice (KE transform included) fails the exchange
    (RFC 9370 §2.2.1).  Returns the chosen IDs per slot, or None.
    """
    methods = [i for t, i, _ in answer if (t == _KE or is_addke(t)) and i != NONE]
    if len(methods) != len(set(methods)):
        return None
    got: dict[int, int] = {}
    for t, i, _ in answer:
        if is_addke(t):
            if t in got:
                return None
            got[t] = i
    out: list[int] = []
    for k in range(SLOTS):
        t = ADDKE1 + k
        mine = [i for tt, i, _ in offered if tt == t]
        if not mine:
            if got.get(t, NONE) != NONE:
                return None
            out.append(NONE)
            continue
        v = got.get(t, NONE)
        if v not in mine and not (v == NONE and NONE in mine):
            return None
        out.append(v)
    while out and out[-1] == NONE:
        out.pop()
    return tuple(out)


def groups(chosen_addke: Sequence[int]) -> list[int]:
    """The additional exchanges that take place, in order (NONE skipped)."""
    return [g for g in chosen_addke if g != NONE]


def names(chosen_addke: Sequence[int]) -> str:
    """``-KE1_ML_KEM_768-...`` for logs (strongSwan's spelling of the types)."""
    return "".join(f"-KE{i}_{reg.transform_name(TransformType.KE, g)}"
                   for i, g in enumerate(chosen_addke, 1) if g != NONE)


@dataclass(slots=True)
class IntState:
    """One IKE SA's IKE_INTERMEDIATE exchanges (RFC 9242) while it is being set up."""

    supported: bool = False  # both sent IKE_INT_SUP (§3.1)
    exchanges: int = 0  # IKE_INTERMEDIATE exchanges completed
    done: int = 0  # additional key exchanges completed
    int_auth_i: bytes = b""  # IntAuth_iN (§3.3.2)
    int_auth_r: bytes = b""
    priv: KeyExchange | None = field(default=None, repr=False)


def int_auth_chunk(spi_i: bytes, spi_r: bytes, exchange: int, from_initiator: bool,
                   response: bool, msgid: int, payloads: Sequence[Payload]) -> bytes:
    """IntAuth_*_A | IntAuth_*_P of one IKE_INTERMEDIATE message (RFC 9242 §3.3.2).

    The IKE header and the SK generic header with their lengths computed as if the
    message were neither encrypted (no IV, padding, ICV) nor fragmented, then the
    inner payloads in plaintext (absent when there are none).
    """
    first, plain = wm.serialize_payloads(list(payloads)) if payloads else (0, b"")
    flags = (_FLAG_INITIATOR if from_initiator else 0) | (_FLAG_RESPONSE if response else 0)
    total = _IKE_HEADER + _GENERIC + len(plain)
    header = spi_i + spi_r + struct.pack(">BBBBII", int(PayloadType.SK), 0x20, exchange,
                                         flags, msgid, total)
    sk = struct.pack(">BBH", first, 0, _GENERIC + len(plain))
    return header + sk + plain


def fold(prf_id: int, sk_p: bytes, previous: bytes, chunk: bytes) -> bytes:
    """IntAuth_n = prf(SK_p(n), IntAuth_(n-1) | A | P) (RFC 9242 §3.3.2)."""
    return get_prf(prf_id).compute(sk_p, previous + chunk)


def auth_suffix(st: IntState | None, auth_msgid: int) -> bytes:
    """IntAuth = IntAuth_iN | IntAuth_rN | IKE_AUTH_MID, or nothing without IKE_INTERMEDIATE."""
    if st is None or st.exchanges == 0:
        return b""
    return st.int_auth_i + st.int_auth_r + auth_msgid.to_bytes(4, "big")


def update_keys(prf_id: int, encr: int, encr_bits: int | None, integ: int | None,
                sk_d: bytes, shared: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes
                ) -> keys.IKEKeys:
    """The IKE SA keys after one more key exchange (RFC 9370 §2.2.2)."""
    seed = keys.rekey_skeyseed(prf_id, sk_d, shared, ni, nr)
    return keys.derive_ike_keys(prf_id, encr, encr_bits, integ, seed, ni, nr, spi_i, spi_r)


def pending(st: IntState | None, chosen_addke: Sequence[int]) -> bool:
    """Some negotiated additional key exchange has not taken place (IKE_AUTH too early)."""
    return len(groups(chosen_addke)) > (st.done if st is not None else 0)


# (ctx: IKEContext, ike: IKESA, shared, now) -> actions; typed loosely: sa.py imports this
Finish = Callable[[Any, Any, list[bytes], float], list[Any]]


@dataclass(slots=True)
class Pending:
    """Responder: a CREATE_CHILD_SA waiting for its IKE_FOLLOWUP_KE exchanges (RFC 9370 §2.2.3).

    ``link`` is the ADDITIONAL_KEY_EXCHANGE data the next request must echo; ``todo``
    the groups still to run; ``shared`` SK(0), SK(1)...; ``finish(ctx, ike, shared,
    now)`` completes the CREATE_CHILD_SA once the last exchange is done; ``drop()``
    releases what it holds (the new Child SA's reserved SPI).

    For rekey collisions (RFC 9370 §2.2.2, RFC 7296 §2.8.1/§2.8.2): ``target`` is the
    SA the peer is rekeying (the old ``ChildSA``, or the ``IKESA`` itself; None for a
    new Child SA) and ``nonce_min`` min(Ni, Nr) of the peer's CREATE_CHILD_SA.
    ``expires``: the state is kept only until then (§2.2.3); ``what`` names it in logs.
    """

    link: bytes
    todo: list[int]
    shared: list[bytes] = field(repr=False)  # key exchange secrets: never in a repr
    finish: Finish = field(repr=False)
    drop: Callable[[], None] = field(default=lambda: None, repr=False)
    target: Any = field(default=None, repr=False)
    nonce_min: bytes = field(default=b"", repr=False)
    expires: float | None = None
    what: str = "CREATE_CHILD_SA"


def rekey_material(shared: Sequence[bytes], ni: bytes, nr: bytes) -> bytes:
    """SK(0) | Ni | Nr | SK(1) | ... | SK(n): the input of a rekey's SKEYSEED (IKE SA) and
    KEYMAT (Child SA) with additional key exchanges (RFC 9370 §2.2.4)."""
    return shared[0] + ni + nr + b"".join(shared[1:])
