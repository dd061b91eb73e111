"""The few DER (X.690) reads pypluto needs: one TLV at a time, strictly bounded."""

from __future__ import annotations


def read_tlv(data: bytes, off: int) -> tuple[int, bytes, int]:
    """(tag, value, next offset) of the TLV at ``off``; ValueError when malformed.

    Definite lengths of up to 4 length bytes only (X.690 §8.1.3); a value
    that runs past the end of ``data`` is an error, never a short read.
    """
    if off + 2 > len(data):
        raise ValueError("short DER")
    tag, n = data[off], data[off + 1]
    off += 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or off + k > len(data):
            raise ValueError("bad DER length")
        n = int.from_bytes(data[off : off + k], "big")
        off += k
    if off + n > len(data):
        raise ValueError("DER value overruns")
    return tag, data[off : off + n], off + n
