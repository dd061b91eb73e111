"""Shared test helpers (import as `from testsupport import ...`): where ../shared is, what CI demands."""

from __future__ import annotations

import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() == "true"


def shared_path(*parts: str) -> pathlib.Path:
    """A path under ../shared; skips the test when ../shared is absent outside CI.

    In CI (CI=true) a missing ../shared is a failure, not a skip.
    """
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if IN_CI:
            pytest.fail(f"{path} is missing in CI")
        pytest.skip(f"{path} is absent (outside CI)")
    return path


def require(condition: bool, what: str) -> None:
    """Fail in CI, skip elsewhere, when a prerequisite (root, a peer daemon) is missing."""
    if not condition:
        if IN_CI:
            pytest.fail(f"missing in CI: {what}")
        pytest.skip(f"missing: {what}")


def is_root() -> bool:
    return os.geteuid() == 0
