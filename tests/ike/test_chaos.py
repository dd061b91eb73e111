"""Random sequences of whack commands, timer runs and lossy delivery on a pair of engines.

Invariants checked after every run: no internal error was logged; each side's
kernel view (the AddSA/DelSA/AddPolicy/DelPolicy it was told) matches its own
status (every installed SA belongs to a live Child SA, every live Child SA has
its inbound SA); and after a clean ``terminate`` everything is gone on both sides.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pypluto.ike.actions import Log

from .harness import Net

OPS = st.lists(st.tuples(
    st.sampled_from(["up", "down", "rekey_child", "rekey_ike", "advance", "lose", "dup",
                     "reorder", "deliver"]),
    st.sampled_from(["west", "east"]),
    st.integers(0, 3)), min_size=1, max_size=14)


def _kernel_matches_status(net: Net) -> None:
    for side in (net.west, net.east):
        eng = side.engine
        live_in = {c.spi_in for i in eng.by_serial.values() for c in i.children
                   if c.state == "STATE_V2_ESTABLISHED_CHILD_SA"}
        installed_in = {spi for (dst, spi), sa in side.kernel_sas.items() if sa.direction == "in"}
        assert live_in <= installed_in, (side.name, live_in, installed_in)
        known = {c.spi_in for i in eng.by_serial.values() for c in i.children} | \
            {c.spi_out for i in eng.by_serial.values() for c in i.children}
        for (_dst, spi) in side.kernel_sas:
            assert spi in known, f"{side.name}: kernel SA {spi:#x} without a Child SA"
        reqids = {c.reqid for i in eng.by_serial.values() for c in i.children}
        for p in side.policies:
            assert p.reqid in reqids, f"{side.name}: policy for dead reqid {p.reqid}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=st.integers(0, 1000))
def test_chaos(ops: list, seed: int) -> None:
    net = Net(seed=seed, west_kw={"dpddelay": 15.0, "auto": "start"}, east_kw={"dpddelay": 20.0})
    net.up()
    for op, who, n in ops:
        side = net.west if who == "west" else net.east
        eng = side.engine
        if op == "up":
            net.apply(side, eng.initiate("west-east", net.now))
        elif op == "down":
            net.apply(side, eng.terminate("west-east", net.now))
        elif op == "rekey_child":
            net.apply(side, eng.rekey_child("west-east", net.now))
        elif op == "rekey_ike":
            net.apply(side, eng.rekey_ike("west-east", net.now))
        elif op == "advance":
            net.advance([0.7, 3, 30, 400][n])
        elif op == "lose":
            net.drop_next = n
        elif op == "dup":
            net.dup = not net.dup
        elif op == "reorder":
            net.reorder = not net.reorder
        elif op == "deliver":
            for _ in range(n + 1):
                net.step()
    net.dup = net.reorder = False
    net.drop_next = 0
    net.run(limit=2000)
    net.advance(200)
    for side in (net.west, net.east):
        for a in side.actions:
            if isinstance(a, Log):
                assert "internal error" not in a.message, a.message
    _kernel_matches_status(net)
    # a clean teardown from west leaves nothing anywhere
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.apply(net.east, net.east.engine.terminate("west-east", net.now))
    net.run(limit=2000)
    for side in (net.west, net.east):
        eng = side.engine
        assert not eng.by_serial and not eng.children_in and not eng.children_out
        assert not side.kernel_sas, (side.name, side.kernel_sas)
        assert not side.policies, side.name
