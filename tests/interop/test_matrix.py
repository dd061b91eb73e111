"""The interop matrix writer (tests/interop/interop_matrix.py): stamps, stale cells, stand-ins.

No namespaces or peers: these check the file ``docs/interop-matrix.md`` is
written from, on a temporary copy.
"""

from __future__ import annotations

import pathlib
import subprocess

from interop_matrix import COLUMNS, read_rows, render, source_commit, write_matrix
from testsupport import REPO

A = ("strongSwan 6.0.1", "traffic", "initiator", "defaults")
B = ("Libreswan 5.2", "ike-sa", "responder", "defaults")
C = ("Libreswan 4.10", "ike-sa", "initiator", "defaults")

OLD_FORMAT = """# Interoperability matrix

Last update: 2026-11-28 01:59 UTC, kernel 6.18.

| peer | case | pypluto role | proposal | result | detail |
|---|---|---|---|---|---|
| Libreswan 4.10 | ike-sa | initiator | defaults | pass | IKE SA only |
| pypluto | traffic | both | defaults | FAIL | boom |
"""


def _write(path: pathlib.Path, results: dict, *, commit: str, date: str,
           environ: dict | None = None) -> str:
    return write_matrix(results, path, environ=environ or {}, seconds=75, commit=commit,
                        date=date)


def test_pass_stamps_commit_and_date_and_unrun_cells_go_stale(tmp_path: pathlib.Path) -> None:
    m = tmp_path / "matrix.md"
    _write(m, {A: ("pass", "ESP x"), B: ("pass", "")}, commit="aaa1111", date="D1")
    rows = read_rows(m.read_text())
    assert (rows[A].result, rows[A].commit, rows[A].date, rows[A].stale) == \
        ("pass", "aaa1111", "D1", False)
    # second run: A fails, B is not run, C passes
    _write(m, {A: ("FAIL", "no route"), C: ("pass", "")}, commit="bbb2222-dirty", date="D2")
    text = m.read_text()
    rows = read_rows(text)
    assert rows[A].result == "FAIL" and not rows[A].stale
    assert (rows[A].commit, rows[A].date) == ("aaa1111", "D1")  # its last pass, not this run
    assert rows[B].stale and (rows[B].commit, rows[B].date) == ("aaa1111", "D1")
    assert (rows[C].commit, rows[C].date, rows[C].stale) == ("bbb2222-dirty", "D2", False)
    line_b = next(ln for ln in text.splitlines() if ln.startswith("| Libreswan 5.2 | ike-sa"))
    assert "stale (last run: pass)" in line_b and "| pass |" not in line_b
    assert "Latest run: D2, commit bbb2222-dirty" in text and "2 cells in 1m15s" in text
    assert "1 pass, 1 FAIL; 1 stale" in text


def test_skipped_cells_are_not_a_run(tmp_path: pathlib.Path) -> None:
    m = tmp_path / "matrix.md"
    _write(m, {A: ("pass", "")}, commit="aaa1111", date="D1")
    assert _write(m, {A: ("skip", "missing: peer")}, commit="c", date="D2") == ""
    rows = read_rows(m.read_text())
    assert rows[A].result == "pass" and not rows[A].stale  # file untouched: nothing ran
    _write(m, {A: ("skip", "missing: peer"), B: ("pass", "")}, commit="ccc3333", date="D3")
    rows = read_rows(m.read_text())
    assert rows[A].stale and rows[A].commit == "aaa1111"


def test_stand_in_and_opt_out_never_write(tmp_path: pathlib.Path) -> None:
    m = tmp_path / "matrix.md"
    note = _write(m, {A: ("pass", "")}, commit="x", date="D", environ={"INTEROP_STANDIN":
                                                                        "strongswan"})
    assert "INTEROP_STANDIN" in note and not m.exists()
    note = _write(m, {A: ("pass", "")}, commit="x", date="D", environ={"INTEROP_MATRIX": "0"})
    assert note and not m.exists()


def test_old_format_migrates_as_stale_with_unknown_commit(tmp_path: pathlib.Path) -> None:
    m = tmp_path / "matrix.md"
    m.write_text(OLD_FORMAT)
    _write(m, {A: ("pass", "")}, commit="ddd4444", date="D4")
    rows = read_rows(m.read_text())
    old = rows[C]
    assert old.stale and (old.commit, old.date) == ("unknown", "2026-11-28 01:59 UTC")
    failed = rows[("pypluto", "traffic", "both", "defaults")]
    assert failed.stale and failed.result == "FAIL" and failed.commit == "-"


def test_render_round_trips() -> None:
    rows = read_rows(OLD_FORMAT)
    text = render(rows, commit="e", date="D", kernel="k", seconds=1)
    assert read_rows(text) == rows
    header = "| " + " | ".join(COLUMNS) + " |"
    assert header in text


def test_source_commit_is_head_with_dirty_flag() -> None:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    got = source_commit()
    assert got in (head, f"{head}-dirty")
    dirty = subprocess.run(["git", "-C", str(REPO), "diff", "--quiet", "HEAD", "--", ".",
                            ":(exclude)docs/interop-matrix.md"]).returncode != 0
    assert got.endswith("-dirty") is dirty
