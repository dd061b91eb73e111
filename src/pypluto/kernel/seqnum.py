"""Extended Sequence Numbers: the receiver's inference of the high 32 bits
(RFC 4303 §2.2.1 and Appendix A2.2), shared by ESP and AH (RFC 4302 §2.5.1)."""

from __future__ import annotations


def infer_seq(top: int, window: int, lo: int) -> int:
    """The full 64-bit sequence number for the low 32 bits ``lo`` received, given the
    highest authenticated number ``top`` and the replay window size (> 0).

    Case A (the window lies within one 2**32 subspace): a ``lo`` below the window's
    bottom belongs to the next subspace.  Case B (the window spans two): a ``lo`` at
    or above the bottom belongs to the previous one.  A wrong guess fails the ICV.
    Neither goes outside 64 bits: there is no subspace before the first or after the
    last (a sender never goes past 2**64 - 1, RFC 4303 §3.3.3), so the result always
    packs into the 32-bit high half of the ICV/AAD input.
    """
    th = top & 0xFFFFFFFF
    hi = top >> 32
    tl = (th - window + 1) & 0xFFFFFFFF
    if th >= window - 1:  # Case A
        if lo < tl and hi < 0xFFFFFFFF:  # no subspace after the last (2**64 - 1 is the end)
            hi += 1
    elif lo >= tl and hi > 0:  # Case B
        hi -= 1
    return (hi << 32) | lo
