"""Issue 13 item 4: the audit trail is never rate limited; floods of lines that
unauthenticated input provokes still are.

The classification lives in the logger (``is_audit`` / ``is_flood``), so the
daemon keeps calling ``log(..., rate_limited=True)`` for everything a packet
causes; these tests drive that very path (``Daemon._ike_in`` -> engine ->
``_on_log`` -> ``PlutoLogger.log``) and check the real engine's messages.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path
from typing import Any

import pytest
from inproc import ScriptedEngine, make_env
from inproc import start as _start
from testsupport import REPO

from pypluto.daemon import logger as lg
from pypluto.daemon.logger import PlutoLogger, is_audit, is_flood
from pypluto.ike.actions import ConnectionEvent, Endpoint, Log

sys.path.insert(0, str(REPO / "tests"))
from ike.harness import Net  # noqa: E402

LO = ipaddress.ip_address("127.0.0.1")
N_SAS = 3000


class FloodEngine(ScriptedEngine):
    """Each datagram: b"ok" = one established IKE SA, anything else = junk to drop."""

    def __init__(self, settings: Any, secrets: Any, *, local_addrs: Any = ()) -> None:
        super().__init__(settings, secrets, local_addrs=local_addrs)
        self.n = 0

    def receive(self, data: bytes, local: Endpoint, remote: Endpoint, now: float) -> list:
        if data != b"ok":
            return [Log(f"malformed IKE_SA_INIT from {remote}: bad", level="warning"),
                    Log("dropping it", level="debug", remote=remote)]
        self.n += 1
        return [
            Log(f"established IKE SA; authenticated peer using authby=secret and FQDN "
                f"'@peer{self.n}'", conn="rw", serial=self.n),
            Log(f"established Child SA; IPsec tunnel [10.0.0.{self.n % 250}/32] {{ESP}}",
                conn="rw", serial=self.n + 100000),
            ConnectionEvent("ike-established", "rw", self.n),
        ]

    def handle_timer(self, now: float) -> list:
        return []


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    return make_env(tmp_path, nhelpers=0)


def test_every_establishment_logged_under_load_junk_still_limited(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    now = [5000.0]  # one frozen rate-limit window: all of it arrives "at once"
    monkeypatch.setattr(lg.time, "monotonic", lambda: now[0])

    async def main() -> None:
        d, eng, _peer = await _start(env, FloodEngine)
        try:
            remote = Endpoint(ipaddress.ip_address("192.0.2.7"), 500)
            local = Endpoint(LO, env["opts"].ikeport)
            for i in range(N_SAS):
                d._ike_in(b"ok", local, remote)  # the packet path: rate_limited=True
                d._ike_in(b"junk%d" % i, local, remote)
        finally:
            await d.shutdown(finish=False)
            env["log"].close()

    asyncio.run(main())
    lines = (env["tmp"] / "log").read_text().splitlines()
    est_ike = [ln for ln in lines if "established IKE SA" in ln]
    assert len(est_ike) == N_SAS
    assert {ln.rsplit("'@peer", 1)[1] for ln in est_ike} == {f"{i}'" for i in
                                                              range(1, N_SAS + 1)}
    assert sum("established Child SA" in ln for ln in lines) == N_SAS
    audit = [ln for ln in lines if ln.startswith("AUDIT: op=start type=IKE_SA")]
    assert len(audit) == N_SAS
    junk = [ln for ln in lines if "malformed IKE_SA_INIT" in ln]
    assert len(junk) == 100  # PlutoLogger's default limit per window
    assert any("rate limited log exceeded" in ln for ln in lines)


def test_audit_lines_do_not_use_up_the_limit(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lg.time, "monotonic", lambda: 10.0)
    log = PlutoLogger(logfile=str(tmp_path / "l"), logtime=False, rate_limit=3)
    for i in range(50):
        log.log(f"deleting IKE SA (#{i})", conn="c", serial=i, rate_limited=True)
        log.audit_event(f"op=destroy type=IKE_SA conn=\"c\" serial={i} res=success")
    for i in range(5):
        log.log(f"no connection found for IKE_SA_INIT from 192.0.2.{i}:500", rate_limited=True)
    log.log("half-open IKE SA expired", conn="c", serial=7)  # flood class: limited anyway
    log.close()
    lines = (tmp_path / "l").read_text().splitlines()
    assert sum("deleting IKE SA" in ln for ln in lines) == 50
    assert sum(ln.startswith("AUDIT: op=destroy") for ln in lines) == 50
    assert sum("no connection found" in ln for ln in lines) == 3
    assert not any("half-open IKE SA expired" in ln for ln in lines)


def test_a_peer_id_cannot_make_a_junk_line_look_like_audit() -> None:
    """Matching is anchored at the start of the engine's message, never inside peer text."""
    assert not is_audit("malformed IKE_SA_INIT from 192.0.2.1:500: established IKE SA")
    assert not is_audit("dropping packet: ID 'x; established Child SA'")
    assert is_audit("established IKE SA; authenticated peer using authby=secret and FQDN "
                    "'@x'")


# ------------------------------------------------- the real engine's messages
_AUDIT_WORDS = ("established", "deleting", "Delete", "rekey", "authentication", "rejected",
                "failed", "expired", "declaring it dead")


def _engine_lines(net: Net) -> list[str]:
    return [a.message for s in (net.west, net.east) for a in s.actions
            if isinstance(a, Log) and a.level != "debug"]


def _classified(lines: list[str]) -> None:
    missing = [m for m in lines if any(w in m for w in _AUDIT_WORDS) and not is_audit(m)
               and not is_flood(m)]
    assert not missing, f"audit-worthy engine lines the logger would rate limit: {missing}"


def test_real_engine_life_cycle_lines_are_audit() -> None:
    net = Net(west_kw={"dpddelay": 5, "dpdtimeout": 15})
    net.up()
    for side, call in ((net.west, "rekey_child"), (net.east, "rekey_child"),
                       (net.west, "rekey_ike"), (net.east, "rekey_ike")):
        net.apply(side, getattr(side.engine, call)("west-east", net.now))
        net.run()
    net.apply(net.west, net.west.engine.terminate("west-east", net.now))
    net.run()
    lines = _engine_lines(net)
    for needle in ("established IKE SA", "established Child SA", "rekeyed by peer",
                   "initiating rekey", "deleting IKE SA", "deleting Child SA"):
        hits = [m for m in lines if needle in m]
        assert hits and all(is_audit(m) for m in hits), (needle, hits)
    _classified(lines)


def test_real_engine_auth_failure_and_peer_death_are_audit() -> None:
    net = Net(east_psk=b"another key entirely, not west's")
    net.up()
    net.advance(60)
    lines = _engine_lines(net)
    fails = [m for m in lines if "rejected" in m or "failed" in m]
    assert fails and all(is_audit(m) for m in fails), fails
    _classified(lines)
    net = Net(west_kw={"dpddelay": 2, "dpdtimeout": 6})
    net.up()
    net.cut = True
    net.advance(120)
    lines = _engine_lines(net)
    assert any("declaring it dead" in m for m in lines)
    _classified(lines)


def test_unauthenticated_init_flood_lines_are_not_audit() -> None:
    from pypluto.ike.actions import SendPacket
    net = Net()
    acts = net.west.engine.initiate("west-east", net.now)
    init = next(a for a in acts if isinstance(a, SendPacket)).data
    resp = net.east.engine.receive(init, Endpoint(net.east.addr, 500),
                                   Endpoint(net.west.addr, 500), net.now)
    junk = net.east.engine.receive(init[:40], Endpoint(net.east.addr, 500),
                                   Endpoint(net.west.addr, 500), net.now)
    expired = net.east.engine.handle_timer(net.now + 3600)
    msgs = [a.message for a in resp + junk + expired if isinstance(a, Log)]
    assert msgs and not any(is_audit(m) for m in msgs), msgs
