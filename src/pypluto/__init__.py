"""pypluto: Libreswan's IKE daemon, pluto, re-built in Python."""

__version__ = "0.1.0"
VERSION_STRING = f"pypluto {__version__} (Libreswan-compatible pluto in Python)"
