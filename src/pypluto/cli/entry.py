"""Console-script entry points: the C tools' behaviour on a closed pipe.

``whack --status | head -1``: when the reader goes away, a C tool is killed by
SIGPIPE without a word.  Python ignores SIGPIPE and raises ``BrokenPipeError``
instead, which would end in a traceback.  ``guarded`` catches it, points
stdout at /dev/null (so the interpreter's final flush cannot raise again) and
exits with 141 (128 + SIGPIPE), the status a shell reports for a C tool killed
by SIGPIPE.  The daemon itself keeps SIGPIPE ignored: a peer closing a socket
must never kill pluto.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

EXIT_BROKEN_PIPE = 128 + int(signal.SIGPIPE)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout already closed or not a real file
        pass


def guarded(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run ``main(argv)``; a reader that closed our stdout ends it quietly (exit 141)."""
    try:
        rc = main(argv)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def whack() -> None:
    """The ``whack`` console script."""
    from pypluto.cli import whack as mod

    sys.exit(guarded(mod.main))


def ipsec() -> None:
    """The ``ipsec`` console script (and ``python -m pypluto``)."""
    from pypluto.cli import ipsec as mod

    sys.exit(guarded(mod.main))


def pluto() -> None:
    """The ``pluto`` console script (``pluto --help | head -1`` is quiet too)."""
    from pypluto.cli import pluto as mod

    sys.exit(guarded(mod.main))
