"""The daemon's typed engine interface (``daemon.engine_api.EngineAPI``).

The real ``Engine`` and every stand-in the daemon tests use implement it; the
typed assignments below are what ``mypy`` checks (``mypy tests/daemon/test_engine_api.py``),
and ``isinstance`` against the runtime-checkable protocol checks that every
member exists.  ``engine_api.py`` itself proves under ``mypy src`` that ``Engine``
satisfies the signatures.
"""

from __future__ import annotations

from inproc import OffloadingEngine, ScriptedEngine

from pypluto.daemon.engine_api import EngineAPI
from pypluto.daemon.secrets import SecretsProxy
from pypluto.ike.engine import Engine
from pypluto.ike.settings import EngineSettings


def test_engine_and_stubs_implement_engine_api() -> None:
    real: EngineAPI = Engine(EngineSettings(), SecretsProxy())
    scripted: EngineAPI = ScriptedEngine(EngineSettings(), SecretsProxy())
    offloading: EngineAPI = OffloadingEngine(EngineSettings(), SecretsProxy())
    for e in (real, scripted, offloading):
        assert isinstance(e, EngineAPI), type(e).__name__


def test_a_stub_missing_a_member_is_not_an_engine_api() -> None:
    class Partial:
        local_addrs: set[object] = set()

        def receive(self, *a: object) -> list[object]:
            return []

    assert not isinstance(Partial(), EngineAPI)
