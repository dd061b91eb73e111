"""IKE on the NAT-T port without a thread hop (issue 18): kernel steering.

With the userspace plane, the plane's packet thread owns the reads of the
NAT-T socket (port 4500, RFC 3948): ESP-in-UDP is decrypted there, and every
IKE message (non-ESP marker, four zero octets, RFC 3948 §2.2) was handed from
that thread to the event loop: a wake-up of the loop and a GIL switch per
burst, per IKE_AUTH of every peer behind a NAT (or a peer that forces UDP
encapsulation, as strongSwan's kernel-libipsec does).

Here a second socket joins the first one's ``SO_REUSEPORT`` group on the same
address and port, and a classic BPF program of the group
(``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5) chooses the socket of each datagram
by its first four payload octets: zero (IKE) -> the event loop's socket (index
1), anything else -> the plane's socket (index 0).  A datagram shorter than
four octets (a NAT keepalive, a runt) aborts the program, whose result is then
0: the plane's socket, which counts them as before.  The plane still receives
whatever reaches its socket and still hands IKE it finds there to the loop, so
a kernel without the program, or a group that lost a member, only costs the
thread hop again.
"""

from __future__ import annotations

import ctypes
import socket
import struct

from pypluto.kernel.userspace.offload import SOL_UDP, UDP_GRO, gro_size

SO_ATTACH_REUSEPORT_CBPF = 51
GRO_CMSG = socket.CMSG_SPACE(4)  # room for the UDP_GRO control message (an int)

# struct sock_filter {u16 code; u8 jt; u8 jf; u32 k}
_PROGRAM = (
    (0x20, 0, 0, 0),  # BPF_LD|BPF_W|BPF_ABS  A = payload[0:4] (UDP payload: offset 0)
    (0x15, 0, 1, 0),  # BPF_JMP|BPF_JEQ|BPF_K A == 0 ? next : skip one
    (0x06, 0, 0, 1),  # BPF_RET|BPF_K          the IKE socket (index 1)
    (0x06, 0, 0, 0),  # BPF_RET|BPF_K          the plane's socket (index 0)
)
_CODE = b"".join(struct.pack("=HBBI", *i) for i in _PROGRAM)


def attach_program(sock: socket.socket) -> None:
    """Give ``sock``'s reuseport group the IKE/ESP steering program (OSError if refused)."""
    buf = ctypes.create_string_buffer(_CODE, len(_CODE))
    # struct sock_fprog {unsigned short len; struct sock_filter *filter}
    fprog = struct.pack("@HP", len(_PROGRAM), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def gro_enabled(sock: socket.socket) -> bool:
    """Whether ``sock`` receives UDP GRO batches (``UDP_GRO``, Linux 5.0)."""
    try:
        return bool(sock.getsockopt(SOL_UDP, UDP_GRO))
    except OSError:
        return False


def open_ike_socket(plane_sock: socket.socket, addr: str, port: int) -> socket.socket:
    """A socket for the IKE messages of ``plane_sock``'s address and port.

    ``plane_sock`` (already bound, read by the plane) joins a reuseport group
    with the new one, which is bound second (index 1) without ``SO_REUSEADDR``:
    a bind that would not make a group fails instead of taking the port's
    traffic.  The plane's socket receives GRO batches: so does this one, or the
    kernel's GRO lookup, which chooses a group member by hash alone, would turn
    merging off for the flows it hashes here (``read_gro`` splits them).
    Raises OSError; nothing is left open then.
    """
    plane_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s = socket.socket(plane_sock.family, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if plane_sock.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setblocking(False)
        if gro_enabled(plane_sock):
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
        s.bind((addr, port))
        attach_program(plane_sock)
    except OSError:
        s.close()
        raise
    return s


def gro_segments(data: bytes, anc: list[tuple[int, int, bytes]]) -> list[bytes]:
    """The datagrams of one read of a ``UDP_GRO`` socket (the control message
    gives the segment size of a merged batch; the last one may be shorter)."""
    seg = gro_size(anc)
    if not seg or len(data) <= seg:
        return [data]
    return [data[i:i + seg] for i in range(0, len(data), seg)]
