"""Tell ``umlboot`` which UML boots the selected tests need, so that they can run ahead."""

from __future__ import annotations

import pytest
import umlboot


def pytest_collection_finish(session: pytest.Session) -> None:
    umlboot.want((item.module.__name__, name) for item in session.items
                  if getattr(item, "module", None) is not None
                  for name in getattr(item, "fixturenames", ()))


def pytest_sessionfinish(session: pytest.Session) -> None:
    umlboot.stop_ahead()
