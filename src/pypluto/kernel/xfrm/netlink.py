"""A small synchronous NETLINK_XFRM client: request/ack, get, dump; optional network namespace.

Every request carries NLM_F_ACK and a fresh sequence number; replies with
other sequence numbers (stale answers of an earlier, timed-out request) are
ignored.  NETLINK_EXT_ACK is switched on so the kernel's own explanation
("Requested AEAD algorithm not found") reaches the error message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

from ..base import BackendError
from . import structs as S

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
_RECV_SIZE = 1 << 16


class XfrmError(BackendError):
    """The kernel refused an XFRM request.  ``errno`` is positive; ``extack`` the kernel's text."""

    def __init__(self, what: str, err: int, extack: str = "", hint: str = "") -> None:
        self.what = what
        self.errno = err
        self.extack = extack
        reason = os.strerror(err) if err else "error"
        text = f"{what}: {reason} (errno {err})"
        if extack:
            text += f": {extack}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def run_in_netns(netns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a short-lived thread that has entered network namespace ``netns``.

    ``netns`` is a name under /run/netns or a path (e.g. /proc/PID/ns/net).
    Sockets created by ``fn`` stay in that namespace for their whole life;
    the calling thread's namespace is never touched.
    """
    path = netns if "/" in netns else f"/run/netns/{netns}"
    result: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            failure.append(BackendError(f"cannot open network namespace {path}: {e.strerror}"))
            return
        try:
            if _libc().setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                failure.append(
                    BackendError(f"cannot enter network namespace {path}: {os.strerror(err)}")
                )
                return
            result.append(fn())
        except BaseException as e:  # handed to the caller's thread
            failure.append(e)
        finally:
            os.close(fd)

    t = threading.Thread(target=target, name=f"netns-{os.path.basename(path)}")
    t.start()
    t.join()
    if failure:
        raise failure[0]
    return result[0]


class XfrmSocket:
    """One netlink socket, NETLINK_XFRM by default (thread-safe: one request at a time)."""

    def __init__(
        self,
        netns: str | None = None,
        timeout: float = 5.0,
        groups: int = 0,
        protocol: int = S.NETLINK_XFRM,
        label: str = "XFRM",
    ) -> None:
        self.label = label

        def make() -> socket.socket:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, protocol)

        try:
            self._sock = run_in_netns(netns, make) if netns else make()
        except OSError as e:
            raise BackendError(f"cannot open a {label} netlink socket: {e.strerror}") from e
        self._sock.settimeout(timeout)
        try:
            self._sock.bind((0, groups))
        except OSError as e:
            self._sock.close()
            raise BackendError(f"cannot bind the {label} netlink socket: {e.strerror}") from e
        self._cap_ack = False
        try:
            self._sock.setsockopt(S.SOL_NETLINK, S.NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(S.SOL_NETLINK, S.NETLINK_CAP_ACK, 1)
            self._cap_ack = True
        except OSError:
            pass  # old kernels: plain errno only
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._seq = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self._sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    def _error_of(self, body: bytes, flags: int) -> tuple[int, str]:
        """(positive errno, extended-ack text) of an NLMSG_ERROR body."""
        if len(body) < 4 + S.NLMSGHDR.size:
            raise XfrmError("XFRM: short NLMSG_ERROR from the kernel", errno_mod.EPROTO)
        (err,) = struct.unpack_from("=i", body)
        extack = ""
        if flags & S.NLM_F_ACK_TLVS:
            # The echoed request: its header only with NETLINK_CAP_ACK (or for an ack).
            (orig_len,) = struct.unpack_from("=I", body, 4)
            echoed = S.NLMSGHDR.size if (self._cap_ack or err == 0) else S.align4(orig_len)
            try:
                attrs = S.parse_attrs(body, 4 + echoed)
            except S.XfrmDecodeError:
                attrs = {}
            msg = attrs.get(S.NLMSGERR_ATTR_MSG)
            if msg:
                extack = msg[0].rstrip(b"\0").decode("utf-8", "replace")
        return -err, extack

    def request(
        self, msg_type: int, body: bytes, flags: int = 0, what: str = ""
    ) -> list[tuple[int, bytes]]:
        """Send one request; return the (type, body) replies that came before the ack.

        Raises XfrmError when the kernel answers with an error.
        """
        what = what or S.MSG_NAMES.get(msg_type, str(msg_type))
        with self._lock:
            seq = self._next_seq()
            self._send(S.nlmsg(msg_type, S.NLM_F_REQUEST | S.NLM_F_ACK | flags, seq, body), what)
            replies: list[tuple[int, bytes]] = []
            while True:
                for mtype, mflags, mseq, _pid, mbody in self._recv(what):
                    if mseq != seq:
                        continue
                    if mtype == S.NLMSG_ERROR:
                        err, extack = self._error_of(mbody, mflags)
                        if err:
                            raise XfrmError(f"{self.label} {what}", err, extack)
                        return replies
                    if mtype == S.NLMSG_DONE:
                        return replies
                    replies.append((mtype, mbody))

    def dump(self, msg_type: int, body: bytes = b"", what: str = "") -> list[tuple[int, bytes]]:
        """A dump request (NLM_F_DUMP); every (type, body) until NLMSG_DONE."""
        what = what or S.MSG_NAMES.get(msg_type, str(msg_type)) + " dump"
        with self._lock:
            seq = self._next_seq()
            self._send(S.nlmsg(msg_type, S.NLM_F_REQUEST | S.NLM_F_DUMP, seq, body), what)
            replies: list[tuple[int, bytes]] = []
            while True:
                for mtype, mflags, mseq, _pid, mbody in self._recv(what):
                    if mseq != seq:
                        continue
                    if mtype == S.NLMSG_DONE:
                        return replies
                    if mtype == S.NLMSG_ERROR:
                        err, extack = self._error_of(mbody, mflags)
                        if err:
                            raise XfrmError(f"{self.label} {what}", err, extack)
                        return replies
                    replies.append((mtype, mbody))

    def receive_events(self, timeout: float) -> list[tuple[int, bytes]]:
        """Multicast messages (for a socket bound to groups); [] when ``timeout`` passes."""
        self._sock.settimeout(timeout)
        try:
            data = self._sock.recv(_RECV_SIZE)
        except (TimeoutError, BlockingIOError):
            return []
        except OSError as e:
            if e.errno == errno_mod.ENOBUFS:  # overrun: events were lost, keep going
                return []
            raise
        try:
            return [(m[0], m[4]) for m in S.split_messages(data)]
        except S.XfrmDecodeError:
            return []

    def _send(self, data: bytes, what: str) -> None:
        try:
            self._sock.send(data)
        except OSError as e:
            raise XfrmError(f"{self.label} {what}: send", e.errno or errno_mod.EIO) from e

    def _recv(self, what: str) -> list[tuple[int, int, int, int, bytes]]:
        try:
            data = self._sock.recv(_RECV_SIZE)
        except TimeoutError as e:
            raise XfrmError(
                f"{self.label} {what}: no answer from the kernel", errno_mod.ETIMEDOUT
            ) from e
        except OSError as e:
            raise XfrmError(f"{self.label} {what}: receive", e.errno or errno_mod.EIO) from e
        try:
            return S.split_messages(data)
        except S.XfrmDecodeError as e:
            raise BackendError(f"{self.label} {what}: malformed answer from the kernel: {e}") from e
