"""Interop fixtures: the network lab (tests/lab.py) and its failure-log hook."""

from __future__ import annotations

from lab import lab, pytest_runtest_makereport  # noqa: F401  (fixture and hook)
