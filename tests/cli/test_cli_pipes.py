"""A reader that closes the pipe (``whack --status | head -1``) ends our CLIs quietly.

The write end is handed to the child after the read end was closed, so the
first write fails with EPIPE every time (no race with ``head``).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from plutoproc import PY

from pypluto.cli.entry import EXIT_BROKEN_PIPE


def _run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[bytes]:
    r, w = os.pipe()
    os.close(r)
    try:
        return subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, timeout=60, check=False)
    finally:
        os.close(w)


@pytest.mark.parametrize("module, arg", [("pypluto.cli.whack", "--help"),
                                         ("pypluto.cli.ipsec", "--help"),
                                         ("pypluto", "--help"),
                                         ("pypluto", "version")])
def test_help_into_a_closed_pipe(module, arg):
    res = _run_into_closed_pipe(PY, "-m", module, arg)
    assert res.stderr == b""
    assert res.returncode == EXIT_BROKEN_PIPE == 141


def test_help_into_an_open_pipe_is_unchanged():
    res = subprocess.run([PY, "-m", "pypluto", "--help"], capture_output=True, timeout=60,
                         check=False)
    assert res.returncode == 0 and b"replace <conn>" in res.stdout


@pytest.mark.netns
def test_whack_status_head_1(daemon):
    """The issue's reproducer, with a real shell pipeline as well."""
    res = _run_into_closed_pipe(PY, "-m", "pypluto.cli.whack", "--rundir",
                                str(daemon.rundir), "--status")
    assert res.stderr == b"" and res.returncode == 141
    sh = subprocess.run(["bash", "-o", "pipefail", "-c",
                         f"{PY} -m pypluto.cli.whack --rundir {daemon.rundir} --status "
                         "| head -1"], capture_output=True, text=True, timeout=60,
                        check=False)
    assert sh.stdout == "using kernel interface: none\n"
    assert "Traceback" not in sh.stderr and "BrokenPipe" not in sh.stderr
    assert sh.returncode in (0, 141)  # 0 when whack wrote everything before head exited


def test_whack_help_lists_the_exit_codes():
    from plutoproc import run_main

    out = run_main("pypluto.cli.whack", ["--help"]).stdout
    for code in (0, 21, 22, 24, 25, 29, 30, 33, 50, 51, 52, 56):
        assert f"\n  {code:2d} " in out or f"\n {code:3d} " in out, code
