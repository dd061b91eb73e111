"""Fixtures for real pluto daemons in private network namespaces (root only)."""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator

import pytest
from plutoproc import NetNS, Pluto, root_conftest

_root = root_conftest()


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
