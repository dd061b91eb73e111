"""pypluto: Libreswan's IKE daemon, pluto, re-built in Python."""

from pypluto._version import __version__

VERSION_STRING = f"pypluto {__version__} (Libreswan-compatible pluto in Python)"

__all__ = ["VERSION_STRING", "__version__"]
