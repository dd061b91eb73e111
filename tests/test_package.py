"""The package imports; its registry answers; the tests import no conftest."""

from __future__ import annotations

import pathlib

import pypluto
from pypluto.crypto import registry

# The import rules of DESIGN.md are checked in tests/test_layers.py.


def test_version() -> None:
    assert pypluto.__version__.count(".") == 2


def test_registry_lookups() -> None:
    aes = registry.lookup(registry.TransformType.ENCR, "aes_gcm_16")
    assert aes is not None and aes.id == 20 and aes.aead and aes.icv_size == 16
    assert registry.get(registry.TransformType.KE, 31).name == "dh31"
    assert registry.get(registry.TransformType.ADDKE1, 36).iana_name == "ML_KEM_768"
    assert registry.get(registry.TransformType.PRF, 99) is None


def test_tests_do_not_import_conftest() -> None:
    """Several conftest.py files exist; `from conftest import` picks whichever loaded first."""
    tests = pathlib.Path(__file__).resolve().parent
    offenders = [
        str(p.relative_to(tests))
        for p in tests.rglob("*.py")
        if p.name not in ("conftest.py", "test_package.py")
        and "from conftest import" in p.read_text()
    ]
    assert not offenders, f"use 'from testsupport import ...' in {offenders}"
