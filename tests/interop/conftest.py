"""Interop fixtures: the network lab (tests/lab.py), its failure-log hook, and the matrix.

Every interop test records its cell (peer, case, pypluto's role, proposal) with
the ``cell`` fixture; at the end of the session the results are merged into
``docs/interop-matrix.md`` (cells not run this time keep their last result).
The file is only written when at least one cell ran (passed or failed).
"""

from __future__ import annotations

import datetime
import os
import pathlib
import platform
from collections.abc import Callable
from typing import Any

import pytest
from lab import lab, pytest_runtest_makereport  # noqa: F401  (fixture, hook)

# pytest replaces sys.modules["conftest"] with each conftest.py it imports, so a
# test module collected after this one that still does ``from conftest import``
# gets this module: re-export the helpers (new code: ``from testsupport import``).
from testsupport import IN_CI, REPO, SHARED, is_root, require, shared_path  # noqa: F401,E402

MATRIX = pathlib.Path(__file__).resolve().parents[2] / "docs" / "interop-matrix.md"
COLUMNS = ("peer", "case", "pypluto role", "proposal", "result", "detail")
LIMITS = [
    "## What the peers cannot do here",
    "",
    "* Libreswan 4.10 has only the kernel XFRM data plane; on a kernel without ESP",
    "  (`CONFIG_INET_ESP` off) its Child SA install fails with ENOSYS. As responder it",
    "  answers TS_UNACCEPTABLE and keeps the IKE SA; as initiator it drops its IKE SA",
    "  without a Delete and retries. Full tunnels with Libreswan run inside the ESP",
    "  kernel (case 6, `tests/espkernel/`, with pypluto's `--use-xfrm`).",
    "* strongSwan 5.9.8's kernel-libipsec always UDP-encapsulates ESP (it fakes NAT",
    "  detection; raw ESP arrived in 5.9.11), so plain ESP (protocol 50) and",
    "  `start_action = trap` cannot be exercised against it; host-to-host tunnels need",
    "  extra fwmark settings and are not run.",
    "* pypluto against pypluto with `--use-xfrm` needs kernel ESP: it runs inside the",
    "  User-Mode-Linux ESP kernel in `tests/espkernel/test_xfrm_uml.py`; `make demo`",
    "  (tools/demo.py) picks `--use-xfrm` there and was run through",
    "  `tools/run-in-esp-kernel.sh` as well.",
    "",
]
_results: dict[tuple[str, str, str, str], tuple[str, str]] = {}


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
            _results[key] = ("FAIL", "; ".join(x for x in (_reason(report), note) if x))
    elif report.when == "teardown" and report.failed:
        _results[key] = ("FAIL", f"teardown: {_reason(report)}")


def _read_rows() -> dict[tuple[str, str, str, str], tuple[str, str]]:
    rows: dict[tuple[str, str, str, str], tuple[str, str]] = {}
    if not MATRIX.exists():
        return rows
    for line in MATRIX.read_text().splitlines():
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cols) == len(COLUMNS) and line.startswith("|") and cols[0] not in ("peer", "---"):
            rows[(cols[0], cols[1], cols[2], cols[3])] = (cols[4], cols[5])
    return rows


def _clean(s: str, limit: int = 160) -> str:
    s = " ".join(s.replace("|", "/").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def pytest_sessionfinish(session: pytest.Session) -> None:
    ran = {k: v for k, v in _results.items() if v[0] != "skip"}
    if not ran or os.environ.get("INTEROP_MATRIX", "1") == "0":
        return
    rows = _read_rows()
    rows.update(ran)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Interoperability matrix",
        "",
        "Written by the interop suite (`tests/interop/`, run by `make test`) at the end of each",
        "run; cells not run in the latest run keep their previous result.",
        f"Last update: {stamp}, kernel {platform.release()}.",
        "",
        "Peers: strongSwan 5.9.8 (`charon-systemd`, kernel-libipsec: ESP-in-UDP in user space),",
        "Libreswan 4.10 (`pluto`, kernel XFRM only: without kernel ESP its Child SA install",
        "fails, so against it only the IKE SA is checked), and pypluto itself. pypluto runs",
        "with its userspace data plane (`--use-userspace`).",
        "",
        "Cases: `traffic` = IKE+Child SA, ping both ways, 1 MiB TCP both ways checked by",
        "SHA-256; `rekey-*` = rekey under a 0.2 s ping, no loss allowed; `liveness` = peer",
        "killed, SAs and routes removed, re-established when it returns; `delete-by-*` =",
        "nothing left on our side; `ike-sa` = IKE SA established on both ends.",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for key in sorted(rows):
        result, detail = rows[key]
        out.append("| " + " | ".join([*key, result, _clean(detail)]) + " |")
    passed = sum(1 for r, _ in rows.values() if r == "pass")
    out += ["", f"{passed} of {len(rows)} cells pass.", "", *LIMITS]
    MATRIX.parent.mkdir(parents=True, exist_ok=True)
    MATRIX.write_text("\n".join(out))
