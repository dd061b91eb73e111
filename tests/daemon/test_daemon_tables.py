"""The daemon's dispatch tables are complete: every engine action has a handler, every
documented whack command a handler (and nothing undocumented is served)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pypluto.control import format as fmt
from pypluto.daemon.control import CONN_COMMANDS, GLOBAL_COMMANDS
from pypluto.daemon.driver import HANDLERS
from pypluto.ike.actions import Action

DOC = Path(__file__).resolve().parents[2] / "docs" / "control-protocol.md"


def test_every_action_type_has_a_handler() -> None:
    assert set(HANDLERS) == set(typing.get_args(Action))


def test_command_tables_match_the_protocol_document() -> None:
    table = DOC.read_text().split("## Commands", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            documented |= set(re.findall(r"`([a-z-]+)`", first_cell))
    served = set(GLOBAL_COMMANDS) | set(CONN_COMMANDS) | set(fmt.STATUS_COMMANDS)
    assert documented == served
    assert not set(GLOBAL_COMMANDS) & set(CONN_COMMANDS)
