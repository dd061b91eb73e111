"""Choosing the kernel backend: ``--use-xfrm``, ``--use-userspace``, ``--use-none``, or a probe.

With no choice on the command line the daemon asks the kernel: can an ESP SA
be added in a scratch network namespace?  If yes, kernel IPsec (XFRM, like
Libreswan's default); if not (no ``esp4``, not root, no XFRM netlink), the
userspace ESP plane.  The probe runs in a child process that unshares its
network namespace, so nothing is ever added to the daemon's own namespace.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import subprocess
import sys
from typing import NamedTuple

from .base import BackendError, KernelBackend

KINDS = ("xfrm", "userspace", "none")

# Runs in a child: unshare the network namespace, add one AES-GCM ESP SA with
# our own encoder, report.  Exit 0 = kernel ESP works; 1 = refused; 2 = no netns.
_PROBE = r"""
import ctypes, ctypes.util, ipaddress, os, sys
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
if libc.unshare(0x40000000) != 0:
    print("cannot unshare a network namespace: " + os.strerror(ctypes.get_errno()))
    sys.exit(2)
from pypluto.kernel.base import BackendError
from pypluto.params import SAParams
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import encode_sa
from pypluto.kernel.xfrm.netlink import XfrmSocket
sa = SAParams(src=ipaddress.ip_address("192.0.2.1"), dst=ipaddress.ip_address("192.0.2.2"),
              spi=0x1000, direction="out", encr_id=20, encr_key_bits=128, encr_key=bytes(20))
try:
    XfrmSocket().request(S.XFRM_MSG_NEWSA, encode_sa(sa, 0))
except BackendError as e:
    print(str(e))
    sys.exit(1)
print("an ESP SA (rfc4106(gcm(aes))) was added in a scratch network namespace")
"""


class BackendChoice(NamedTuple):
    """The backend in use and the log line that says why."""

    backend: KernelBackend
    message: str


def probe_kernel_esp(timeout: float = 20.0) -> tuple[bool, str]:
    """(True, why) if the kernel can hold an ESP SA; (False, why not) otherwise."""
    src = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    try:
        res = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"probe failed: {e}"
    text = (res.stdout.strip() or res.stderr.strip() or "no output").splitlines()[-1]
    return res.returncode == 0, text


def _find_backend_class(module: str, name: str) -> type[KernelBackend]:
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise BackendError(f"the {name} backend is not available: {e}") from e
    for obj in vars(mod).values():
        if (
            isinstance(obj, type)
            and issubclass(obj, KernelBackend)
            and obj is not KernelBackend
            and getattr(obj, "name", None) == name
        ):
            return obj
    raise BackendError(f"the {name} backend is not available: no backend class in {module}")


def make_backend(kind: str) -> KernelBackend:
    """A new backend of ``kind`` ("xfrm", "userspace" or "none")."""
    if kind == "xfrm":
        from .xfrm import XfrmBackend

        return XfrmBackend()
    if kind == "userspace":
        return _find_backend_class("pypluto.kernel.userspace", "userspace")()
    if kind == "none":
        return _find_backend_class("pypluto.kernel.none", "none")()
    raise BackendError(f"unknown kernel backend {kind!r} (choose one of {', '.join(KINDS)})")


def choose_backend(kind: str | None) -> BackendChoice:
    """The backend for ``kind``, or (None) the probe's pick; with a log line saying which.

    Use as ``backend, message = choose_backend(args.kind)``.
    """
    if kind is not None:
        backend = make_backend(kind)
        return BackendChoice(backend, f"using the {backend.name} kernel backend (--use-{kind})")
    ok, why = probe_kernel_esp()
    if ok:
        backend = make_backend("xfrm")
        return BackendChoice(backend, f"using the XFRM kernel backend: {why}")
    backend = make_backend("userspace")
    return BackendChoice(
        backend, f"using the userspace ESP backend: kernel ESP is not usable here ({why})"
    )
