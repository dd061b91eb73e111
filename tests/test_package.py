"""The package imports and its layers keep the import rules of DESIGN.md."""

from __future__ import annotations

import ast
import pathlib

import pypluto
from pypluto.crypto import registry

SRC = pathlib.Path(pypluto.__file__).parent

# layer -> layers it may import
BOTTOM = {"iana", "params"}  # the bottom-layer modules every layer may import
ALLOWED = {
    "wire": {"wire", "crypto"} | BOTTOM,
    "crypto": {"crypto"} | BOTTOM,
    "config": {"config", "crypto", "wire"} | BOTTOM,
    "ike": {"ike", "wire", "crypto", "config", "kernel.base"} | BOTTOM,
    "kernel": {"kernel", "crypto"} | BOTTOM,
}


def test_version() -> None:
    assert pypluto.__version__.count(".") == 2


def test_registry_lookups() -> None:
    aes = registry.lookup(registry.TransformType.ENCR, "aes_gcm_16")
    assert aes is not None and aes.id == 20 and aes.aead and aes.icv_size == 16
    assert registry.get(registry.TransformType.KE, 31).name == "dh31"
    assert registry.get(registry.TransformType.ADDKE1, 36).iana_name == "ML_KEM_768"
    assert registry.get(registry.TransformType.PRF, 99) is None


def test_import_rules() -> None:
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pypluto."):
                    target = node.module.split(".")[1]
                    if target not in allowed and ".".join(node.module.split(".")[1:3]) not in allowed:
                        bad.append(f"{path.relative_to(SRC)} imports pypluto.{target}")
    assert not bad, bad


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
