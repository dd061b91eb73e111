"""AUTH payload helpers for shared keys (RFC 7296 §2.15).

The signed octets of one side are::

    RealMessage ‖ NoncePeer ‖ prf(SK_p, RestOfID)

where RealMessage is the side's first message (IKE_SA_INIT) as sent,
NoncePeer the other side's nonce data, SK_p that side's SK_pi / SK_pr, and
RestOfID the ID payload body without its generic header (ID type,
reserved octets, identification data).  For a shared key:

    AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)
"""

from __future__ import annotations

import hmac

from .prf import get_prf

KEY_PAD = b"Key Pad for IKEv2"


def signed_octets(
    prf_id: int,
    sk_p: bytes,
    real_message: bytes,
    peer_nonce: bytes,
    id_payload_body: bytes,
    int_auth: bytes = b"",
) -> bytes:
    """<InitiatorSignedOctets> or <ResponderSignedOctets> (RFC 7296 §2.15).

    ``int_auth`` is appended as RFC 9242 §3.3.2 requires after IKE_INTERMEDIATE
    exchanges (IntAuth, computed by the caller); empty otherwise.
    """
    return real_message + peer_nonce + get_prf(prf_id).compute(sk_p, id_payload_body) + int_auth


def psk_pad(prf_id: int, psk: bytes) -> bytes:
    """prf(Shared Secret, "Key Pad for IKEv2") (RFC 7296 §2.15): the key of both AUTH
    MICs of one exchange, which a responder computes once for both (issue 18)."""
    return get_prf(prf_id).compute(psk, KEY_PAD)


def psk_auth(prf_id: int, psk: bytes, signed: bytes, padded: bytes | None = None) -> bytes:
    """AUTH data for method 2, Shared Key Message Integrity Code (RFC 7296 §2.15);
    ``padded`` is ``psk_pad(prf_id, psk)`` when the caller has it."""
    p = get_prf(prf_id)
    return p.compute(p.compute(psk, KEY_PAD) if padded is None else padded, signed)


def psk_verify(prf_id: int, psk: bytes, signed: bytes, auth_data: bytes,
               padded: bytes | None = None) -> bool:
    """Constant-time check of a peer's PSK AUTH payload data."""
    return hmac.compare_digest(psk_auth(prf_id, psk, signed, padded), auth_data)


def null_auth(prf_id: int, sk_p: bytes, signed: bytes) -> bytes:
    """AUTH data for method 13, NULL Authentication (RFC 7619 §2.1).

    Computed as the shared-key MIC of RFC 7296 §2.15 with the sender's SK_p
    (SK_pi / SK_pr) in place of the shared secret — the same rule as EAP
    without an MSK (RFC 7296 §2.16).
    """
    return psk_auth(prf_id, sk_p, signed)
