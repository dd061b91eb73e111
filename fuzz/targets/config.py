"""Target (d): the configuration parsers (``pypluto.config``): ipsec.conf and ipsec.secrets.

Byte 0 chooses the parser (even: ipsec.conf, odd: ipsec.secrets); the rest is
decoded as UTF-8 with replacement, as ``load_config`` does.  Property: bad
text becomes diagnostics, never an exception ("bad input gets a clear error"):
``parse_config_text`` / ``parse_secrets_text`` must not raise, and every
diagnostic names a line.  Includes are resolved under an empty root, so an
``include`` of an absolute path finds nothing on this machine.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from pypluto.config.parser import parse_config_text
from pypluto.config.secrets import parse_secrets_text

from . import Finding
from .vectors import config_files

_ROOT = tempfile.mkdtemp(prefix="pypluto-fuzz-root-")


def one_input(data: bytes) -> None:
    """Parse one file's text; any exception is a finding."""
    if not data:
        return
    text = data[1:].decode("utf-8", errors="replace")
    which = "secrets" if data[0] & 1 else "conf"
    try:
        if which == "conf":
            cfg = parse_config_text(text, f"{_ROOT}/ipsec.conf", root_dir=_ROOT)
            diags = cfg.diagnostics
        else:
            diags = parse_secrets_text(text, f"{_ROOT}/ipsec.secrets").diagnostics
    except Exception as e:  # noqa: BLE001 - that is the finding
        raise Finding(f"{which} parser raised {type(e).__name__}: {e}") from e
    for d in diags:
        if not isinstance(getattr(d, "line", 0), int):
            raise Finding(f"{which}: diagnostic without a line number: {d!r}")


def seeds() -> Iterator[bytes]:
    """Libreswan's v4.10 and newer test configs, examples and secrets files."""
    for raw in config_files((".conf",)):
        yield b"\x00" + raw
    for raw in config_files((".secrets",)):
        yield b"\x01" + raw
    yield b"\x01: PSK \"secret\"\n@west @east : PSK 0sc2VjcmV0\n"
