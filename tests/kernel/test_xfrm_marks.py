"""mark= / mark-in= / mark-out= (ipsec.conf(5), issue 12): XFRMA_MARK on SAs and policies.

Encoding against ``<linux/xfrm.h>`` (``struct xfrm_mark`` = two u32, attribute 21),
the config values, what the engine hands the backend (inbound SA and in/fwd
policies: mark-in; outbound SA and out policy: mark-out; ``-1``: a unique mark from
1001 per instance, kept across rekeys), and the backend's lookups naming the mark
(the kernel finds a marked SA or policy only with it).  Marked policies in a real
network namespace (the host kernel has XFRM policies but no ESP); the SAs and the
traffic are proven in the ESP kernel (tests/espkernel/test_mark_uml.py).
"""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from ike.harness import Net  # tests/ is on sys.path (tests/conftest.py)
from testsupport import is_root, require

from pypluto.config.parser import ConnError, build_connection
from pypluto.config.values import UNIQUE_MARK, parse_mark
from pypluto.ike.actions import AddPolicy, Updown
from pypluto.kernel.base import BackendError, KernelBackend, refuse_marks
from pypluto.kernel.xfrm import structs as S
from pypluto.kernel.xfrm.backend import (
    KernelPolicy,
    KernelSA,
    XfrmBackend,
    encode_policy,
    encode_sa,
    encode_shunt,
)
from pypluto.params import PolicyParams, SAParams, TrafficSelector

ip = ipaddress.ip_address
net = ipaddress.ip_network
A, B = ip("192.0.2.1"), ip("192.0.2.2")
LTS = TrafficSelector(net("198.51.100.0/24"))
RTS = TrafficSelector(net("203.0.113.0/24"))
FULL = 0xFFFFFFFF


@pytest.fixture(autouse=True, scope="module")
def _little_endian_64_bit() -> None:
    require(sys.byteorder == "little" and struct.calcsize("P") == 8,
            "a 64-bit little-endian machine (the XFRM layouts checked here)")


def _sa(mark: tuple[int, int] | None, direction: str = "out") -> SAParams:
    return SAParams(src=A, dst=B, spi=0x1234, direction=direction,  # type: ignore[arg-type]
                    encr_id=20, encr_key_bits=128, encr_key=bytes(20), local_ts=[LTS],
                    remote_ts=[RTS], mark=mark)


# --- values ---------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "want"), [
    ("5", (5, FULL)), ("0x10/0xff", (0x10, 0xFF)), ("7/0xffffffff", (7, FULL)),
    ("-1", (UNIQUE_MARK, FULL)), ("-1/0xffff", (UNIQUE_MARK, 0xFFFF)),
    ("0", None), ("0/0xff", None), (" 4294967295 ", (FULL, FULL)),
])
def test_parse_mark_values(text: str, want: tuple[int, int] | None) -> None:
    assert parse_mark(text) == want


@pytest.mark.parametrize("text", ["abc", "5/", "0x100/0xff", "4294967296", "-2", "1/2/3"])
def test_parse_mark_refuses_bad_values(text: str) -> None:
    with pytest.raises(ValueError, match="mark="):
        parse_mark(text)


def test_conn_marks_mark_in_and_mark_out_override_mark() -> None:
    base = {"left": "192.0.2.1", "right": "192.0.2.2", "authby": "secret"}
    c = build_connection("c", {**base, "mark": "7"})
    assert (c.mark_in, c.mark_out) == ((7, FULL), (7, FULL))
    c = build_connection("c", {**base, "mark": "7/0xff", "mark-out": "0x20"})
    assert (c.mark_in, c.mark_out) == ((7, 0xFF), (0x20, FULL))
    c = build_connection("c", {**base, "mark-in": "3"})
    assert (c.mark_in, c.mark_out) == ((3, FULL), None)
    c = build_connection("c", base)
    assert (c.mark_in, c.mark_out) == (None, None)
    with pytest.raises(ConnError) as exc:
        build_connection("c", {**base, "mark-in": "0x100/0xff"})
    assert exc.value.key == "mark-in" and not exc.value.unsupported


# --- encoding ---------------------------------------------------------------------------
def test_sa_carries_xfrma_mark() -> None:
    body = encode_sa(_sa((0x2A, 0xFF)), 0x50500001)
    attrs = S.parse_attrs(body, S.USERSA_INFO_SIZE)
    assert attrs[S.XFRMA_MARK] == [struct.pack("=II", 0x2A, 0xFF)]
    assert KernelSA.decode(body).mark == (0x2A, 0xFF)
    unmarked = encode_sa(_sa(None), 0x50500001)
    assert S.XFRMA_MARK not in S.parse_attrs(unmarked, S.USERSA_INFO_SIZE)
    assert KernelSA.decode(unmarked).mark is None
    assert len(body) == len(unmarked) + 12  # nlattr header 4 + xfrm_mark 8


def test_policy_and_shunt_carry_xfrma_mark() -> None:
    pol = PolicyParams(LTS, RTS, "out", 1, A, B, mark=(1, FULL))
    body = encode_policy(pol, 0x50500001)
    attrs = S.parse_attrs(body, S.USERPOLICY_INFO_SIZE)
    assert attrs[S.XFRMA_MARK] == [struct.pack("=II", 1, FULL)]
    assert len(attrs[S.XFRMA_TMPL]) == 1
    decoded = KernelPolicy.decode(body)
    assert decoded.mark == (1, FULL) and "mark 0x1/0xffffffff" in str(decoded)
    shunt = PolicyParams(LTS, RTS, "in", 1, B, A, action="pass", mark=(9, 0xF))
    sbody = encode_shunt(shunt, 0x50500008)
    assert KernelPolicy.decode(sbody).mark == (9, 0xF)
    plain = encode_policy(PolicyParams(LTS, RTS, "out", 1, A, B), 0x50500001)
    assert KernelPolicy.decode(plain).mark is None


@pytest.mark.parametrize("mark", [(0x100, 0xFF), (-1, FULL), (1, 1 << 32)])
def test_impossible_marks_are_refused_not_truncated(mark: tuple[int, int]) -> None:
    with pytest.raises(BackendError, match="mark"):
        encode_sa(_sa(mark), 0x50500001)
    with pytest.raises(BackendError, match="mark"):
        encode_policy(PolicyParams(LTS, RTS, "out", 1, A, B, mark=mark), 0x50500001)


# --- what the engine asks for -------------------------------------------------------------
def _marked_net(**kw: object) -> Net:
    n = Net(west_kw=kw, east_kw=kw)
    n.up()
    return n


def test_engine_puts_mark_in_on_inbound_and_mark_out_on_outbound() -> None:
    n = _marked_net(mark_in=(1, FULL), mark_out=(2, 0xFF))
    sas = list(n.west.kernel_sas.values())
    assert {(sa.direction, sa.mark) for sa in sas} == {("in", (1, FULL)), ("out", (2, 0xFF))}
    dirs = {(p.direction, p.mark) for p in n.west.policies}
    assert dirs == {("out", (2, 0xFF)), ("in", (1, FULL)), ("fwd", (1, FULL))}


def test_engine_unique_mark_per_instance_and_stable_across_rekey() -> None:
    n = _marked_net(mark_in=(UNIQUE_MARK, FULL), mark_out=(UNIQUE_MARK, FULL))
    marks = {sa.mark for sa in n.west.kernel_sas.values()}
    assert marks == {(1001, FULL)}  # "Global marks start at 1001", same both ways
    assert {p.mark for p in n.west.policies} == {(1001, FULL)}
    before = {sa.spi for sa in n.west.kernel_sas.values()}
    n.apply(n.west, n.west.engine.rekey_child("west-east", n.now))
    n.run()
    after = {sa.spi: sa.mark for sa in n.west.kernel_sas.values()}
    assert set(after) - before and set(after.values()) == {(1001, FULL)}
    eng = n.west.engine
    conn = eng.connections["west-east"]
    assert eng.xfrm_marks(conn, ip("192.0.2.99")) == ((1002, FULL), (1002, FULL))
    assert eng.xfrm_marks(conn, n.east.addr) == ((1001, FULL), (1001, FULL))  # type: ignore[arg-type]


def test_updown_sees_the_installed_marks() -> None:
    n = Net(west_kw={"mark_in": (UNIQUE_MARK, FULL), "mark_out": (0x21, 0xFF)})
    n.west.engine.connections["west-east"].local.updown = "/bin/true"
    n.up()
    ups = [a.child for a in n.west.actions if isinstance(a, Updown) and a.up]
    assert ups and {(c.mark_in, c.mark_out) for c in ups} == {("1001/0xffffffff", "33/0x0000ff")}


def test_trap_policies_carry_the_marks_of_the_child() -> None:
    n = Net(west_kw={"mark_in": (5, FULL), "mark_out": (6, FULL)})
    acts = n.west.engine.route("west-east", n.now)
    pols = [a.policy for a in acts if isinstance(a, AddPolicy)]
    assert pols and {(p.direction, p.mark) for p in pols} == {("out", (6, FULL))}


# --- planes without marks refuse ------------------------------------------------------
def test_planes_without_marks_refuse_marked_sas_and_policies() -> None:
    from pypluto.kernel.none import NoneBackend
    from pypluto.kernel.userspace.backend import UserspaceBackend

    assert XfrmBackend.supports_marks
    assert not UserspaceBackend.supports_marks and not NoneBackend.supports_marks

    class Plane(KernelBackend):
        name = "userspace"
        add_sa = del_sa = add_policy = del_policy = get_sa_stats = flush_own = (  # type: ignore[assignment]
            lambda *a, **k: None)

    refuse_marks(Plane(), None, "the SA")  # unmarked: fine
    with pytest.raises(BackendError, match="userspace data plane cannot apply mark="):
        refuse_marks(Plane(), (1, FULL), "the SA")


# --- marked policies in a real namespace (host kernel: policies only) -------------------
def sh(*args: str) -> str:
    res = subprocess.run(args, capture_output=True, text=True, check=True)
    return res.stdout


@pytest.fixture
def backend() -> Iterator[tuple[str, XfrmBackend]]:
    require(is_root() and shutil.which("ip") is not None, "root and iproute2")
    name = f"ppmark{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    b: XfrmBackend | None = None
    try:
        b = XfrmBackend(netns=name)
        yield name, b
    finally:
        if b is not None:
            b.close()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.mark.netns
def test_policies_with_same_selectors_and_different_marks_coexist(
        backend: tuple[str, XfrmBackend]) -> None:
    ns, be = backend
    pa = [PolicyParams(LTS, RTS, "out", 1, A, B, mark=(1, FULL)),
          PolicyParams(RTS, LTS, "in", 1, B, A, mark=(1, FULL))]
    pb = [PolicyParams(LTS, RTS, "out", 2, A, B, mark=(2, FULL)),
          PolicyParams(RTS, LTS, "in", 2, B, A, mark=(2, FULL))]
    for p in pa + pb:
        be.add_policy(p)
    for p in pa + pb:  # a second add of the same marked policy updates it, no EEXIST
        be.add_policy(p)
    text = sh("ip", "-n", ns, "xfrm", "policy")
    assert text.count("mark 0x1/0xffffffff") == 2 and text.count("mark 0x2/0xffffffff") == 2
    own = be.list_policies()
    assert sorted((p.direction, p.mark) for p in own) == [
        ("in", (1, FULL)), ("in", (2, FULL)), ("out", (1, FULL)), ("out", (2, FULL))]
    for p in pa:  # deleting conn A's policies (named by their mark) leaves conn B's
        be.del_policy(p)
    assert sorted((p.direction, p.mark) for p in be.list_policies()) == [
        ("in", (2, FULL)), ("out", (2, FULL))]
    # a restart after a crash: flush_own finds marked policies by their reqid and
    # deletes them naming their mark (a DELPOLICY without it would miss them)
    fresh = XfrmBackend(netns=ns)
    try:
        fresh.flush_own()
    finally:
        fresh.close()
    assert be.list_policies() == [] and "mark" not in sh("ip", "-n", ns, "xfrm", "policy")
