"""Libreswan 5.x defaults: the proposals used when ``ike=`` / ``esp=`` are not set.

IKE (IKEv2, FIPS off): AES_GCM_16_256, AES_GCM_16_128, CHACHA20_POLY1305,
AES_CBC_256, AES_CBC_128; PRFs HMAC_SHA2_512 + HMAC_SHA2_256 (INTEG derived from
the PRF for the CBC proposals); KE DH19 DH20 DH21 DH31 MODP4096 MODP3072 MODP2048
MODP8192 (RFC 7296 §3.3: one proposal per cipher, alternatives inside it).

ESP: the same five ciphers; INTEG HMAC_SHA2_512_256 + HMAC_SHA2_256_128 for CBC;
no KE (PFS uses the IKE SA's group, RFC 7296 §1.3.1).
"""

from __future__ import annotations

from typing import Literal

from pypluto.config.model import Connection, ProposalSpec
from pypluto.config.proposals import parse_proposals

_CIPHERS = "aes_gcm_16_256,aes_gcm_16_128,chacha20_poly1305,aes_256,aes_128"

DEFAULT_IKE: list[ProposalSpec] = parse_proposals(_CIPHERS, "IKE")
DEFAULT_ESP: list[ProposalSpec] = parse_proposals(_CIPHERS, "ESP")
DEFAULT_AH: list[ProposalSpec] = parse_proposals("sha2_512,sha2_256", "AH")


def proposals_for(conn: Connection, which: Literal["ike", "esp", "ah"]) -> list[ProposalSpec]:
    """The proposals a connection offers: its own ``ike=``/``esp=``/``ah=`` or the defaults."""
    if which == "ike":
        return list(conn.ike) if conn.ike else list(DEFAULT_IKE)
    if which == "esp":
        return list(conn.esp) if conn.esp else list(DEFAULT_ESP)
    if which == "ah":
        return list(conn.ah) if conn.ah else list(DEFAULT_AH)
    raise ValueError(f"unknown proposal kind {which!r}")
