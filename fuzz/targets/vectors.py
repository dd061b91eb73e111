"""Seed material read at run time from the shared vectors (never copied into the repo)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

# ../shared/vectors next to the repo (as tests/testsupport.py finds it), or $PYPLUTO_VECTORS
VECTORS = Path(os.environ.get("PYPLUTO_VECTORS")
               or Path(__file__).resolve().parents[3] / "shared" / "vectors")


def openswan_frames() -> Iterator[dict]:
    """Every frame of the Openswan unit-test captures (``pcaps/openswan/*/expected.json``)."""
    base = VECTORS / "pcaps" / "openswan"
    if not base.is_dir():
        return
    for f in sorted(base.glob("*/expected.json")):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        yield from doc.get("frames", [])


def fuzz_packets() -> Iterator[bytes]:
    """The Libreswan fuzzer packets (``fuzz/libreswan/*.hex`` and ``*.raw``)."""
    base = VECTORS / "fuzz" / "libreswan"
    if not base.is_dir():
        return
    for f in sorted(base.iterdir()):
        try:
            if f.suffix == ".hex":
                yield bytes.fromhex("".join(f.read_text().split()))
            elif f.suffix == ".raw":
                yield f.read_bytes()
        except (OSError, ValueError):
            continue


def config_files(suffixes: tuple[str, ...] = (".conf", ".secrets")) -> Iterator[bytes]:
    """Libreswan's test and example configs (``configs/**``), as bytes."""
    base = VECTORS / "configs"
    if not base.is_dir():
        return
    for f in sorted(base.rglob("*")):
        if f.is_file() and f.name.endswith(suffixes):
            try:
                yield f.read_bytes()
            except OSError:
                continue
