"""The userspace ESP data plane over a TUN device (``--use-userspace``)."""

from pypluto.kernel.userspace.backend import PlaneCounters, UserspaceBackend

__all__ = ["PlaneCounters", "UserspaceBackend"]
