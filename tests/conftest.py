"""Root conftest.  Helpers live in ``testsupport.py``: ``from testsupport import shared_path``.

(Do not write ``from conftest import ...`` in tests: tests/interop has a conftest.py
of its own, and in a full run the two would shadow each other.)
"""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from testsupport import IN_CI, REPO, SHARED, is_root, require, shared_path  # noqa: E402,F401
