"""Linux XFRM backend (``--use-xfrm``): our own NETLINK_XFRM encoding, no third-party library."""

from .backend import REQID_BASE, REQID_SPAN, KernelPolicy, KernelSA, XfrmBackend
from .netlink import XfrmError

__all__ = ["REQID_BASE", "REQID_SPAN", "KernelPolicy", "KernelSA", "XfrmBackend", "XfrmError"]
