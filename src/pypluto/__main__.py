"""``python -m pypluto``: the same commands as ``ipsec`` (``python -m pypluto status``)."""

from __future__ import annotations

from pypluto.cli.entry import ipsec

if __name__ == "__main__":
    ipsec()
