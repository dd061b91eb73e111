"""The package version: the installed distribution's metadata, else ``git describe``.

``pyproject.toml`` holds the one version number; ``pip install`` (wheel or
editable) records it in the distribution metadata, which is read here.  Run
from a source tree that was never installed (``PYTHONPATH=src``), the version
is ``0.0.0+g<commit>`` from ``git describe --always``, or ``0.0.0+unknown``.
"""

from __future__ import annotations

import os
import re
import subprocess
from importlib import metadata

DIST_NAME = "pypluto"


def _from_git(here: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", here, "describe", "--tags", "--long", "--always"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    desc = out.stdout.strip()
    if out.returncode != 0 or not desc:
        return None
    return from_describe(desc)


def from_describe(desc: str) -> str:
    """The version for ``git describe --tags --long --always`` output.

    With a tag it is ``TAG-N-gHASH`` (``--long``: also when N is 0), so a commit
    whose abbreviated hash is all digits is never taken for a version number.
    """
    m = re.fullmatch(r"v?(\d+(?:\.\d+)*)-(\d+)-g([0-9a-f]+)", desc)
    if m is None:  # no tag: describe --always printed the abbreviated commit
        return "0.0.0+g" + desc
    return m.group(1) + (f"+g{m.group(3)}" if m.group(2) != "0" else "")


def get_version() -> str:
    """The version string (PEP 440)."""
    try:
        return metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        pass
    return _from_git(os.path.dirname(os.path.abspath(__file__))) or "0.0.0+unknown"


__version__ = get_version()
