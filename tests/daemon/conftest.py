"""Fixtures for real pluto daemons in private network namespaces (root only)."""

from __future__ import annotations

import importlib.util
import pathlib
import shutil
from collections.abc import Iterator

import pytest

_spec = importlib.util.spec_from_file_location(
    "_pypluto_tests_conftest", pathlib.Path(__file__).parents[1] / "conftest.py"
)
assert _spec is not None and _spec.loader is not None
_root = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_root)

from plutoproc import NetNS, Pluto  # noqa: E402


@pytest.fixture
def netns() -> Iterator[NetNS]:
    _root.require(_root.is_root() and shutil.which("ip") is not None,
                  "root and iproute2 for network namespaces")
    ns = NetNS()
    try:
        yield ns
    finally:
        ns.delete()


@pytest.fixture
def make_pluto(netns: NetNS, tmp_path: pathlib.Path) -> Iterator:
    started: list[Pluto] = []

    def make(name: str = "pluto", ns: NetNS | None = None) -> Pluto:
        p = Pluto(ns or netns, tmp_path, name)
        started.append(p)
        return p

    try:
        yield make
    finally:
        for p in started:
            p.stop()
