"""Interop fixtures: the network lab (tests/lab.py), its failure-log hook, and the matrix.

Every interop test records its cell (peer, case, pypluto's role, proposal) with
the ``cell`` fixture; at the end of the session the results are merged into
``docs/interop-matrix.md``:

* a cell run in this session (passed or failed) gets its result; a pass also
  stamps the cell with the commit (``git rev-parse --short HEAD``, ``-dirty``
  when tracked files other than the matrix differ from it) and the UTC date:
  the commit and date columns always say when the cell *last passed*;
* every other cell (not collected, deselected, skipped) is marked ``stale``
  and keeps the commit and date of its last pass, so an old pass never reads
  as a fresh one;
* the file is only written when at least one cell ran, never when
  ``INTEROP_STANDIN`` puts a stand-in behind pypluto's interface (that run
  says nothing about pypluto), nor with ``INTEROP_MATRIX=0``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from interop_matrix import MATRIX, Key, write_matrix  # noqa: E402
from lab import lab, pytest_runtest_makereport  # noqa: F401  (fixture, hook)

# pytest replaces sys.modules["conftest"] with each conftest.py it imports, so a
# test module collected after this one that still does ``from conftest import``
# gets this module: re-export the helpers (new code: ``from testsupport import``).
from testsupport import IN_CI, REPO, SHARED, is_root, require, shared_path  # noqa: F401,E402

_results: dict[Key, tuple[str, str]] = {}
_started = time.monotonic()


@pytest.fixture
def cell(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``cell(peer=, case=, role=, proposal=)`` names this test's matrix cell;
    ``cell(note=...)`` adds a remark shown in the detail column."""

    def record(**kw: str) -> None:
        props = dict(request.node.user_properties)
        current = dict(props.get("interop_cell", {}))
        current.update(kw)
        request.node.user_properties[:] = [
            (k, v) for k, v in request.node.user_properties if k != "interop_cell"
        ] + [("interop_cell", current)]

    return record


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    text = report.longreprtext or ""
    lines = [ln[2:].strip() for ln in text.splitlines() if ln.startswith("E ")]
    return lines[0] if lines else (text.strip().splitlines() or [""])[-1]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    props: dict[str, Any] = dict(report.user_properties)
    c = props.get("interop_cell")
    if not c:
        return
    key = (c.get("peer", "?"), c.get("case", "?"), c.get("role", "-"), c.get("proposal", "-"))
    note = c.get("note", "")
    if report.when == "call" or (report.when == "setup" and not report.passed):
        if report.passed:
            _results[key] = ("pass", note)
        elif report.skipped:
            _results[key] = ("skip", _reason(report))
        else:
            _results[key] = ("FAIL", "; ".join(x for x in (note, _reason(report)) if x))
    elif report.when == "teardown" and report.failed:
        _results[key] = ("FAIL", f"teardown: {_reason(report)}")


def pytest_sessionfinish(session: pytest.Session) -> None:
    note = write_matrix(_results, MATRIX, environ=os.environ,
                        seconds=time.monotonic() - _started)
    if note:
        print(f"\ninterop: {note}")
