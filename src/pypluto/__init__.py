"""pypluto: Libreswan's IKE daemon, pluto, re-built in Python."""

from pypluto._version import __version__

VERSION_STRING = f"pypluto {__version__} (Libreswan-compatible pluto in Python)"

LIBRESWAN_COMPAT = "5.2"
"""The Libreswan release whose interface (ipsec.conf, whack, updown, status) we follow."""

VERSION_BANNER = f"pypluto {__version__} (Libreswan {LIBRESWAN_COMPAT} compatible)"
"""``ipsec --version`` / ``whack --version``: our name and version first (never a claim
to be Libreswan's binary), then the Libreswan release we follow, written so that a
script that reads the major number after the first "Libreswan" (NetworkManager-libreswan
does, to choose its ipsec.conf syntax) finds it (tests/daemon/test_status_facts25.py)."""

__all__ = ["LIBRESWAN_COMPAT", "VERSION_BANNER", "VERSION_STRING", "__version__"]
