"""ESN inference of RFC 4303 Appendix A2.2, shared by ESP and AH."""

from __future__ import annotations

from pypluto.kernel.seqnum import infer_seq

W = 64


def test_case_a_window_within_one_subspace() -> None:
    top = (3 << 32) | 1000  # bottom of the window: 937
    assert infer_seq(top, W, 1000) == top
    assert infer_seq(top, W, 937) == (3 << 32) | 937  # the window's bottom: this subspace
    assert infer_seq(top, W, 2000) == (3 << 32) | 2000  # ahead: this subspace
    assert infer_seq(top, W, 936) == (4 << 32) | 936  # below the window: the next one


def test_case_b_window_spans_two_subspaces() -> None:
    top = (5 << 32) | 10  # the window reaches back into subspace 4
    assert infer_seq(top, W, 5) == (5 << 32) | 5
    assert infer_seq(top, W, 0xFFFFFFF0) == (4 << 32) | 0xFFFFFFF0  # at/above the bottom
    assert infer_seq(0 | 10, W, 0xFFFFFFF0) == 0xFFFFFFF0  # no subspace below 0

