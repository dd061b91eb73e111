"""The fuzz targets: name -> module with ``one_input(data)`` and ``seeds()``."""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = ("wire", "ike_sk", "ike_plain", "esp", "config")


class Finding(AssertionError):
    """pypluto broke a property the target checks (not a crash of the harness)."""


def load(name: str) -> ModuleType:
    """The target module ``fuzz.targets.<name>``."""
    if name not in TARGETS:
        raise KeyError(f"unknown fuzz target {name!r}; known: {', '.join(TARGETS)}")
    return importlib.import_module(f"fuzz.targets.{name}")
