"""Helpers for the crypto known-answer tests: vector loading and a KAT counter.

A test that checks vectors takes the ``pytestconfig`` fixture and calls
``count(pytestconfig, n, kind, expected=N)``: ``n`` must be exactly ``N``, the
number of vectors the current data files give (a loose bound such as ``n > 100``
would let a truncated file or a silently skipped group pass).  The total is
printed in pytest's terminal summary as ``crypto KAT vectors checked: N``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from testsupport import shared_path  # tests/conftest.py

KAT_COUNTS: dict[str, int] = {}


class _Reporter:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if KAT_COUNTS:
            total = sum(KAT_COUNTS.values())
            detail = ", ".join(f"{k}={v}" for k, v in sorted(KAT_COUNTS.items()))
            terminalreporter.write_line(f"crypto KAT vectors checked: {total} ({detail})")


def count(config: pytest.Config, n: int, kind: str, *, expected: int) -> None:
    """Record ``n`` checked known-answer vectors of ``kind`` (pass the ``pytestconfig`` fixture).

    Fails unless ``n == expected``: vector counts are pinned exactly.
    """
    assert n == expected, f"{kind}: {n} vectors checked, the data gives exactly {expected}"
    pm = config.pluginmanager
    if not pm.has_plugin("pypluto-crypto-kat"):
        pm.register(_Reporter(), "pypluto-crypto-kat")
    KAT_COUNTS[kind] = KAT_COUNTS.get(kind, 0) + n


def load_vectors(*parts: str) -> Any:
    """A JSON file under ../shared/vectors/crypto (skips outside CI when absent)."""
    return json.loads(shared_path("vectors", "crypto", *parts).read_text())


def h(s: str) -> bytes:
    return bytes.fromhex(s)
