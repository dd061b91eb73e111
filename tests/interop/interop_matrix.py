"""``docs/interop-matrix.md``: reading, merging and writing the interop matrix.

Pure functions, used by ``tests/interop/conftest.py`` at the end of a session
and tested in ``test_matrix.py``.  See the conftest's docstring for the rules
(per-cell commit and date of the last pass, stale cells, no stand-in writes).
"""

from __future__ import annotations

import datetime
import pathlib
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from testsupport import REPO

MATRIX = pathlib.Path(__file__).resolve().parents[2] / "docs" / "interop-matrix.md"
COLUMNS = ("peer", "case", "pypluto role", "proposal", "result", "last pass: commit",
           "last pass: date", "detail")
OLD_COLUMNS = 6  # before per-cell stamps: peer, case, role, proposal, result, detail
LIMITS = [
    "## What the peers cannot do here",
    "",
    "* Libreswan 4.10 and 5.2 have only the kernel XFRM data plane; on a kernel without",
    "  ESP (`CONFIG_INET_ESP` off) their Child SA install fails with ENOSYS. As responder",
    "  4.10 answers TS_UNACCEPTABLE and 5.2 TEMPORARY_FAILURE, and both keep the IKE SA;",
    "  as initiator 4.10 drops its IKE SA without a Delete and retries, 5.2 revives the",
    "  connection. So against them only the IKE SA is checked here. Full tunnels with",
    "  Libreswan run inside the ESP kernel (case 6, `tests/espkernel/`, with pypluto's",
    "  `--use-xfrm`). A childless IKE SA (RFC 6023) cannot be requested: neither",
    "  Libreswan release nor pypluto has a `childless=` keyword.",
    "* strongSwan's kernel-libipsec always UDP-encapsulates ESP (5.9.8 and, with the",
    "  template in `../shared/interop/trixie`, 6.0.1: `TUNNEL-in-UDP`), so plain ESP",
    "  (protocol 50) and `start_action = trap` cannot be exercised against it (its",
    "  libipsec raises no acquire); both run against strongSwan 5.9.8 with its",
    "  kernel-netlink plugin inside the ESP kernel (`tests/espkernel/test_swtrap_uml.py`);",
    "  host-to-host tunnels need extra fwmark settings and are not run.",
    "* Debian 13's strongSwan 6.0.1 has no ML-KEM; `../shared/interop/trixie/install.sh`",
    "  builds its `ml` plugin from the same source package. The ML-KEM cells need it.",
    "* Libreswan 5.2 and strongSwan 6.0.1 run from Debian 13 chroots on this Debian 12",
    "  host (`tests/interop/trixie.py`); on a Debian 13 host they are the native",
    "  packages and the 4.10/5.9.8 rows are not run (they then show as stale).",
    "* pypluto against pypluto with `--use-xfrm` needs kernel ESP: it runs inside the",
    "  User-Mode-Linux ESP kernel in `tests/espkernel/test_xfrm_uml.py`.",
    "",
]
Key = tuple[str, str, str, str]


@dataclass
class Row:
    """One matrix cell: the latest result and the stamp of the latest pass."""

    result: str          # "pass" | "FAIL" (of the run that last ran the cell)
    detail: str
    commit: str = "-"    # of the last pass ("-": never passed)
    date: str = "-"
    stale: bool = False  # not run in the latest run


def source_commit(repo: pathlib.Path = REPO) -> str:
    """``git rev-parse --short HEAD``, plus ``-dirty`` when a tracked file other than
    the matrix itself differs from HEAD; ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=30, check=True)
        status = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
             ".", f":(exclude){MATRIX.relative_to(repo)}"],
            capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def read_rows(text: str) -> dict[Key, Row]:
    """The cells of a matrix file (this format, or the older one without stamps)."""
    rows: dict[Key, Row] = {}
    old_stamp = "-"
    for line in text.splitlines():
        if line.startswith("Last update: "):  # the old format's single file-wide stamp
            old_stamp = line.removeprefix("Last update: ").split(",")[0].strip()
        if not line.startswith("|"):
            continue
        cols = [c.strip() for c in line.strip().strip("|").split("|")]
        if cols[0] in ("peer", "---", "") or cols[0].startswith("---"):
            continue
        key = (cols[0], cols[1], cols[2], cols[3])
        if len(cols) == len(COLUMNS):
            result = cols[4]
            stale = result.startswith("stale")
            if stale:  # "stale (last run: pass)"
                result = result.rsplit(":", 1)[-1].strip(" )")
            rows[key] = Row(result, cols[7], cols[5], cols[6], stale)
        elif len(cols) == OLD_COLUMNS:
            passed = cols[4] == "pass"
            rows[key] = Row(cols[4], cols[5], "unknown" if passed else "-",
                            old_stamp if passed else "-", True)
    return rows


def merge(old: dict[Key, Row], ran: dict[Key, tuple[str, str]], commit: str,
          date: str) -> dict[Key, Row]:
    """This run's cells over the old ones; every old cell not run becomes stale."""
    rows = {k: Row(r.result, r.detail, r.commit, r.date, True) for k, r in old.items()}
    for key, (result, detail) in ran.items():
        prev = rows.get(key)
        if result == "pass":
            rows[key] = Row("pass", detail, commit, date)
        else:  # keep the stamp of the last pass
            rows[key] = Row(result, detail, prev.commit if prev else "-",
                            prev.date if prev else "-")
    return rows


def _clean(s: str, limit: int = 240) -> str:
    s = " ".join(s.replace("|", "/").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render(rows: dict[Key, Row], *, commit: str, date: str, kernel: str,
           seconds: float) -> str:
    run = [r for r in rows.values() if not r.stale]
    passed = sum(1 for r in run if r.result == "pass")
    out = [
        "# Interoperability matrix",
        "",
        "Written by the interop suite (`tests/interop/`, run by `make test`) at the end of each",
        "run. `result` is the outcome in the latest run; a cell that was not run in the",
        "latest run is `stale` and shows its last outcome. The commit and date columns say",
        "when the cell last passed (`-dirty`: with uncommitted changes to tracked files;",
        "`unknown`: passed before cells were stamped). A run with a stand-in peer",
        "(`INTEROP_STANDIN`) never writes this file.",
        "",
        f"Latest run: {date}, commit {commit}, kernel {kernel}, {len(run)} cells in "
        f"{int(seconds) // 60}m{int(seconds) % 60:02d}s: {passed} pass, "
        f"{len(run) - passed} FAIL; {len(rows) - len(run)} stale.",
        "",
        "Peers: strongSwan 5.9.8 (host) and 6.0.1 (Debian 13 chroot), both `charon-systemd`",
        "with kernel-libipsec (ESP-in-UDP in user space); Libreswan 4.10 (host) and 5.2",
        "(Debian 13 chroot), `pluto` with kernel XFRM only: without kernel ESP their Child SA",
        "install fails, so against them only the IKE SA is checked; and pypluto itself.",
        "pypluto runs with its userspace data plane (`--use-userspace`).",
        "",
        "Cases: `traffic` = IKE+Child SA, ping both ways, 1 MiB TCP both ways checked by",
        "SHA-256; `rekey-*` = rekey under a 0.2 s ping, no loss allowed; `liveness` = peer",
        "killed, SAs and routes removed, re-established when it returns; `delete-by-*` =",
        "nothing left on our side; `ike-sa` = IKE SA established on both ends.",
        "",
        "| peer | cells | pass | FAIL | stale |",
        "|---|---|---|---|---|",
    ]
    for peer in sorted({k[0] for k in rows}):
        cells = [r for k, r in rows.items() if k[0] == peer]
        fresh = [r for r in cells if not r.stale]
        out.append(f"| {peer} | {len(cells)} | {sum(r.result == 'pass' for r in fresh)} | "
                   f"{sum(r.result != 'pass' for r in fresh)} | {len(cells) - len(fresh)} |")
    out += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for key in sorted(rows):
        r = rows[key]
        result = f"stale (last run: {r.result})" if r.stale else r.result
        out.append("| " + " | ".join([*key, result, r.commit, r.date, _clean(r.detail)]) + " |")
    out += ["", *LIMITS]
    return "\n".join(out)


def write_matrix(results: Mapping[Key, tuple[str, str]], path: pathlib.Path = MATRIX, *,
                 environ: Mapping[str, str], seconds: float, commit: str | None = None,
                 date: str | None = None) -> str:
    """Merge one session's cell results into ``path``; returns why nothing was written, or "".

    ``results`` maps a cell to ("pass" | "FAIL" | "skip", detail); skipped cells
    count as not run.  Nothing is written when no cell ran, with
    ``INTEROP_MATRIX=0``, or when ``INTEROP_STANDIN`` is set.
    """
    ran = {k: v for k, v in results.items() if v[0] != "skip"}
    if not ran:
        return ""
    if environ.get("INTEROP_MATRIX", "1") == "0":
        return f"INTEROP_MATRIX=0: {path.name} not written"
    if environ.get("INTEROP_STANDIN"):
        return f"INTEROP_STANDIN is set (a stand-in peer ran): {path.name} not written"
    old = read_rows(path.read_text()) if path.exists() else {}
    commit = commit or source_commit()
    date = date or datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = merge(old, ran, commit, date)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(rows, commit=commit, date=date, kernel=platform.release(),
                           seconds=seconds))
    return ""
